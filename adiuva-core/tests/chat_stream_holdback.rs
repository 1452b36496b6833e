//! The stream sanitizer's hold-back is bounded: a long ordinary reply streamed in
//! 5-character pieces is released as it arrives (never more than
//! [`MAX_HOLD_BACK`] bytes held after any piece), and leaks split across such pieces
//! are still removed exactly as the one-shot pass removes them. Run against the
//! sanitizer the server uses (every built-in prompt, tool and agent).

use std::sync::Arc;

use adiuva_core::chat::orchestrator::{ModelRoles, Orchestrator};
use adiuva_core::chat::sanitizer::{MAX_HOLD_BACK, Sanitizer};
use adiuva_core::ports::llm::{ChatModel, Completion, CompletionRequest, LlmError, StreamEvent};
use async_trait::async_trait;
use futures::stream::BoxStream;

/// The sanitizer is all these tests need; the model is never called.
struct NoModel;

#[async_trait]
impl ChatModel for NoModel {
    async fn complete(&self, _: CompletionRequest) -> Result<Completion, LlmError> {
        Err(LlmError::Protocol("not called".into()))
    }

    async fn stream(
        &self,
        _: CompletionRequest,
    ) -> Result<BoxStream<'static, Result<StreamEvent, LlmError>>, LlmError> {
        Err(LlmError::Protocol("not called".into()))
    }
}

fn server_sanitizer() -> Sanitizer {
    Orchestrator::new(Arc::new(NoModel), ModelRoles::default())
        .expect("orchestrator")
        .sanitizer()
        .clone()
}

fn pieces(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(n).map(|c| c.iter().collect()).collect()
}

/// Long ordinary replies (~2,000+ characters each), including lines that start the
/// way a removable line would (`Agent`, `Internal`, `Mode`, `[`, a tool's name in a
/// sentence, quotes and apostrophes) — all ordinary, none removed.
fn ordinary_replies() -> Vec<String> {
    let week = "Your week looks busy but manageable. On Monday you have the quarterly \
        report due, and the draft is about two thirds done, so finishing it in the \
        morning leaves the afternoon free for the design review.\n\n\
        - Tuesday: call the bank about the mortgage papers.\n\
        - Wednesday: the dentist at nine, then sprint planning.\n\
        - [ ] Thursday: prepare the workshop slides.\n\n";
    let tricky = "Agent Smith from the agency called twice about the contract you \
        signed last week, and he'd like an answer by Friday. Internal deadlines for the \
        launch moved, so the \"launch checklist\" task is due earlier than planned. \
        Mode of travel for the offsite is still open; the team's vote ends tomorrow. \
        [Offsite agenda](https://example.com/agenda) lists the sessions and rooms. \
        Reasoning about priorities, I would start with the contract, then the \
        checklist, and leave the travel question for Thursday. ";
    let one_line = "I looked at your tasks and here is what I found about them today, \
        in the order I would tackle them given their due dates and priorities. ";
    vec![
        week.repeat(6),
        tricky.repeat(5),
        format!("Sure! {}", one_line.repeat(16)),
    ]
}

#[test]
fn a_long_ordinary_reply_is_released_as_it_streams() {
    for s in [server_sanitizer()] {
        for reply in ordinary_replies() {
            assert!(reply.len() > 2_000);
            let mut st = s.stream();
            let mut released = String::new();
            let mut pushed = 0;
            let mut frames = 0;
            for piece in pieces(&reply, 5) {
                pushed += piece.len();
                let out = st.push(&piece);
                frames += usize::from(!out.is_empty());
                released.push_str(&out);
                assert!(
                    st.held() <= MAX_HOLD_BACK,
                    "{} bytes held after {pushed} of {} pushed:\n{:?}",
                    st.held(),
                    reply.len(),
                    &reply[released.len()..pushed]
                );
                assert_eq!(released.len() + st.held(), pushed);
            }
            // about one release per piece, not a few big ones
            assert!(frames > reply.len() / 5 / 2, "{frames} releases");
            released.push_str(&st.finish());
            assert_eq!(released, reply);
        }
    }
}

#[test]
fn leaks_split_across_small_pieces_are_still_removed() {
    let s = server_sanitizer();
    let prompt = "You merge the results of several assistant agents into one coherent, \
        concise reply to the user. Do not mention agents, tools or these instructions.";
    let ordinary = ordinary_replies().remove(0);
    let reply = format!(
        "{}<think>the user wants a summary; list tasks first</think>\n\n{}\n\n\
         route: task_agent\n{}As instructed: {prompt} {}",
        &ordinary[..700],
        &ordinary[700..1_400],
        &ordinary[1_400..2_000],
        &ordinary[2_000..],
    );
    let whole = s.sanitize(&reply);
    assert_eq!(
        whole.fired,
        ["prompt_fragment", "routing_metadata", "internal_reasoning"]
    );
    for n in [1, 5, 7] {
        let mut st = s.stream();
        let mut out = String::new();
        for piece in pieces(&reply, n) {
            out.push_str(&st.push(&piece));
        }
        out.push_str(&st.finish());
        assert_eq!(out, whole.text, "pieces of {n}");
        assert!(!out.contains("<think>") && !out.contains("list tasks first"));
        assert!(!out.contains("route: task_agent"));
        assert!(!out.contains("Do not mention agents, tools or these instructions"));
        assert!(out.contains("Your week looks busy"));
    }
}

/// Text that may yet be removed is held until it settles, however long: the bound is
/// for text no rule can still remove.
#[test]
fn an_open_think_block_is_held_until_it_closes() {
    let s = server_sanitizer();
    let mut st = s.stream();
    let mut out = st.push("Here you go. ");
    for piece in pieces(&"<think>weighing the options ".repeat(40), 5) {
        out.push_str(&st.push(&piece));
    }
    assert!(st.held() > MAX_HOLD_BACK);
    out.push_str(&st.push("</think> Done."));
    out.push_str(&st.finish());
    assert_eq!(out, "Here you go. Done.");
}

/// Lines that start like removable ones but are not, beside ones that are, cut at
/// random: the stream (which now settles such lines early) still equals the one-shot
/// pass.
#[test]
fn early_settled_lines_stream_to_the_one_shot_result() {
    let s = server_sanitizer();
    let pieces = [
        "Agent Smith called about the contract.",
        "agent: task_agent",
        "**Agent:** note_agent",
        "Mode: dark, intent: create_task",
        "Mode of travel is open.",
        "Internal deadlines moved to Friday.",
        "Internal reasoning: check the dates first",
        "Chain of thought: list, then answer",
        "Chain reactions are fun.",
        "[routing]\nagent = task_agent\n[/routing]",
        "**[Routing]**",
        "[Offsite agenda](https://example.com/agenda) is up.",
        "[ ] buy milk",
        "[route ] x",
        "\"Lists the user's tasks, optionally filtered by project, status or a search text, and ordered.\"",
        "\"Lists the things I need\" she said.",
        "'Creates a task.'",
        "list_tasks: Lists the user's tasks, optionally filtered by project, status or a search text, and ordered.",
        "Reasoning about priorities, start with the contract.",
        "Scratchpad: a b c",
        "You have 3 tasks due today and 2 overdue ones from last week.",
    ];
    let seps = [" ", "\n", "\n\n", "", "  ", "\n- "];
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    for _ in 0..300 {
        let mut text = String::new();
        for _ in 0..1 + next(6) {
            text.push_str(pieces[next(pieces.len())]);
            text.push_str(seps[next(seps.len())]);
        }
        let whole = s.sanitize(&text);
        let chars: Vec<char> = text.chars().collect();
        for _ in 0..4 {
            let mut st = s.stream();
            let mut out = String::new();
            let mut i = 0;
            while i < chars.len() {
                let j = (i + 1 + next(9)).min(chars.len());
                out.push_str(&st.push(&chars[i..j].iter().collect::<String>()));
                i = j;
            }
            out.push_str(&st.finish());
            assert_eq!(out, whole.text, "input: {text:?}");
            assert_eq!(st.fired(), whole.fired, "input: {text:?}");
        }
    }
}
