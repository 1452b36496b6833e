//! The response sanitizer through its public API: fake model replies that leak a
//! prompt, a tool schema, routing metadata or reasoning come out clean, ordinary replies
//! come out untouched, and streaming gives exactly the one-shot result.

use std::sync::{Arc, Mutex};

use adiuva_core::chat::plans::PromptTemplateRegistry;
use adiuva_core::chat::sanitizer::{Sanitized, Sanitizer};
use adiuva_core::ports::llm::ToolDefinition;
use serde_json::json;

const SYSTEM_PROMPT: &str = "You are the task agent of Adiuva, a local-first productivity assistant. \
You manage the user's tasks and their comments with the tools you are given. Always call \
list_tasks before updating or deleting so that you act on the right task, and never invent \
task ids. Statuses are todo, in_progress and done; priorities are high, medium and low. \
Due dates are milliseconds since the Unix epoch. Answer in the user's language, briefly, and \
confirm every change you made.";

fn tools() -> Vec<ToolDefinition> {
    vec![
        ToolDefinition {
            name: "list_tasks".into(),
            description:
                "List the user's tasks, optionally filtered by project, status or a search term."
                    .into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "project_id": {"type": "string"},
                    "status": {"type": "string", "enum": ["todo", "in_progress", "done"]},
                    "search": {"type": "string"}
                }
            }),
        },
        ToolDefinition {
            name: "create_task".into(),
            description: "Create a task with a title, description, status, priority and due date."
                .into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "title": {"type": "string", "description": "Short imperative title"},
                    "priority": {"type": "string", "enum": ["high", "medium", "low"]},
                    "due_date": {"type": "integer"}
                },
                "required": ["title"]
            }),
        },
    ]
}

fn sanitizer() -> Sanitizer {
    let templates = PromptTemplateRegistry::with_builtin_templates();
    let mut prompts = templates.texts();
    prompts.push(SYSTEM_PROMPT.to_owned());
    Sanitizer::new(
        prompts,
        &tools(),
        [
            "task_agent",
            "checkpoint_agent",
            "project_agent",
            "note_agent",
        ]
        .into_iter()
        .map(String::from),
    )
}

fn norm_words(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '’'))
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric())
                .flat_map(char::to_lowercase)
                .collect::<String>()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// Fails if `out` shares a run of 8 words with `prompt`.
fn assert_no_8_word_run(out: &str, prompt: &str) {
    let p = norm_words(prompt);
    let o = norm_words(out);
    let grams: std::collections::HashSet<&[String]> = p.windows(8).collect();
    for w in o.windows(8) {
        assert!(!grams.contains(w), "leaked: {}\nin: {out}", w.join(" "));
    }
}

/// Chunkings of `text`: fixed sizes in chars, and every split in two.
fn chunkings(text: &str) -> Vec<Vec<String>> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    for size in [1, 2, 3, 5, 8, 13, 40, 1000] {
        out.push(
            chars
                .chunks(size)
                .map(|c| c.iter().collect::<String>())
                .collect(),
        );
    }
    for i in 0..=chars.len() {
        out.push(vec![
            chars[..i].iter().collect(),
            chars[i..].iter().collect(),
        ]);
    }
    // uneven sizes, deterministic
    let mut seed = 0x2545_f491_u64;
    let mut v = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let n = 1 + (seed % 23) as usize;
        let j = (i + n).min(chars.len());
        v.push(chars[i..j].iter().collect());
        i = j;
    }
    out.push(v);
    out
}

/// Checks that every chunking of `text` streams to exactly `sanitize(text)`, and
/// returns that result.
fn check(s: &Sanitizer, text: &str) -> Sanitized {
    let whole = s.sanitize(text);
    for chunks in chunkings(text) {
        let mut st = s.stream();
        let mut out = String::new();
        for c in &chunks {
            out.push_str(&st.push(c));
        }
        out.push_str(&st.finish());
        assert_eq!(
            out, whole.text,
            "stream differs for chunks {chunks:?}\ninput: {text:?}"
        );
        assert_eq!(st.fired(), whole.fired, "fired differs for {chunks:?}");
    }
    whole
}

#[test]
fn a_verbatim_echo_of_the_system_prompt_is_removed() {
    let s = sanitizer();
    let reply = format!(
        "Sure! My instructions say: \"{SYSTEM_PROMPT}\"\n\nAnyway, you have 3 tasks due today."
    );
    let out = check(&s, &reply);
    assert_no_8_word_run(&out.text, SYSTEM_PROMPT);
    assert_eq!(
        out.text,
        "Sure! My instructions say:\n\nAnyway, you have 3 tasks due today."
    );
    assert_eq!(out.fired, ["prompt_fragment"]);
}

#[test]
fn a_partial_echo_is_removed_and_the_rest_kept() {
    let s = sanitizer();
    let reply = "I checked your list. Always call list_tasks before updating or deleting so \
that you act on the right task — that's why I looked first. Your task \"Send invoice\" is now done.";
    let out = check(&s, reply);
    assert_no_8_word_run(&out.text, SYSTEM_PROMPT);
    assert_eq!(
        out.text,
        "I checked your list. — that's why I looked first. Your task \"Send invoice\" is now done."
    );
    assert_eq!(out.fired, ["prompt_fragment"]);
}

#[test]
fn changed_case_and_punctuation_do_not_hide_an_echo() {
    let s = sanitizer();
    let reply = "ok!! YOU MANAGE THE USER'S TASKS, AND THEIR COMMENTS; with the TOOLS you are \
given... Statuses: todo / in-progress / done. How can I help?";
    let out = check(&s, reply);
    assert_no_8_word_run(&out.text, SYSTEM_PROMPT);
    assert!(out.text.starts_with("ok!!"), "{}", out.text);
    assert!(out.text.ends_with("How can I help?"), "{}", out.text);
    assert_eq!(out.fired, ["prompt_fragment"]);

    // a built-in playbook template, echoed with its placeholders filled in
    let tpl = PromptTemplateRegistry::with_builtin_templates();
    let text = tpl.get("weekly_report.compose").unwrap();
    let echo = text.replace("{input}", "[]").replace("{period_days}", "7");
    let out = check(
        &s,
        &format!("Here is my setup:\n\n{echo}\n\nShall I start?"),
    );
    assert_no_8_word_run(&out.text, text);
    assert_eq!(out.text, "Here is my setup:\n\nShall I start?");
}

#[test]
fn an_echo_split_across_stream_chunks_is_removed() {
    let s = sanitizer();
    let reply = format!("Of course. {SYSTEM_PROMPT} Now, about your tasks: nothing is overdue.");
    // `check` streams every split, including ones inside words of the prompt
    let out = check(&s, &reply);
    assert_eq!(
        out.text,
        "Of course. Now, about your tasks: nothing is overdue."
    );
    let mut st = s.stream();
    let mut streamed = String::new();
    for piece in reply.split_inclusive(' ') {
        streamed.push_str(&st.push(piece));
    }
    streamed.push_str(&st.finish());
    assert_no_8_word_run(&streamed, SYSTEM_PROMPT);
}

#[test]
fn streaming_releases_text_before_the_end() {
    let s = sanitizer();
    let long = "Here is a plan for your week. ".repeat(40);
    let mut st = s.stream();
    let mut released = 0;
    for piece in long.split_inclusive(' ') {
        released += st.push(piece).len();
    }
    assert!(released > long.len() / 2, "only {released} bytes released");
    let rest = st.finish();
    assert_eq!(released + rest.len(), long.len());
}

#[test]
fn echoed_tool_schemas_are_removed() {
    let s = sanitizer();
    let openai = "I can use these tools:\n\n```json\n[{\"type\": \"function\", \"function\": {\"name\": \"list_tasks\", \"parameters\": {\"type\": \"object\", \"properties\": {\"status\": {\"type\": \"string\"}}}}}]\n```\n\nWhat should I do?";
    let out = check(&s, openai);
    assert_eq!(out.text, "I can use these tools:\n\nWhat should I do?");
    assert_eq!(out.fired, ["tool_schema"]);

    let bare = "Tool: {\"name\": \"create_task\", \"description\": \"Makes tasks\", \"parameters\": {\"type\": \"object\", \"properties\": {\"title\": {\"type\": \"string\"}}}} Done.";
    let out = check(&s, bare);
    assert_eq!(out.text, "Tool: Done.");

    let named = "Here you go.\ncreate_task: {\"title\": {\"type\": \"string\"}, \"due_date\": {\"type\": \"integer\"}}\nAnything else?";
    let out = check(&s, named);
    assert_eq!(out.text, "Here you go.\nAnything else?");

    let exact_params = serde_json::to_string(&tools()[1].parameters).unwrap();
    let out = check(&s, &format!("Schema {exact_params} ends here."));
    assert_eq!(out.text, "Schema ends here.");

    let quoted = "The tool is described as \"Create a task with a title, description, status, priority and due date.\" and that is all.";
    let out = check(&s, quoted);
    assert_eq!(out.text, "The tool is described as and that is all.");
    assert_eq!(out.fired, ["tool_schema"]);

    let listing = "My tools:\n- list_tasks: List the user's tasks, optionally filtered by project, status or a search term.\n- `create_task` — Create a task with a title, description, status, priority and due date.\nAsk away!";
    let out = check(&s, listing);
    assert_eq!(out.text, "My tools:\nAsk away!");
}

#[test]
fn routing_metadata_is_removed_but_not_sentences_about_tasks() {
    let s = sanitizer();
    let reply = "route: task_agent\nintent: create_task (confidence: 0.93)\n\nI've added \"Call the bank\" for tomorrow.";
    let out = check(&s, reply);
    assert_eq!(out.text, "I've added \"Call the bank\" for tomorrow.");
    assert_eq!(out.fired, ["routing_metadata"]);

    let json = "{\"agent\": \"note_agent\", \"confidence\": 0.8}\nYour note is saved.";
    assert_eq!(check(&s, json).text, "Your note is saved.");

    let block = "[routing]\nagent = project_agent\nreason = user asked about projects\n[/routing]\nYou have two active projects.";
    assert_eq!(check(&s, block).text, "You have two active projects.");

    let inline = "Done. **Agent:** checkpoint_agent\nThe milestone is on Friday.";
    // `Agent:` mid-line is prose position; only whole metadata lines go
    assert_eq!(check(&s, inline).text, inline);

    let agent_line = "Done.\n**Agent:** checkpoint_agent\nThe milestone is on Friday.";
    assert_eq!(
        check(&s, agent_line).text,
        "Done.\nThe milestone is on Friday."
    );

    for prose in [
        "I'll route the invoice task to your inbox project.",
        "Intent: Buy a new laptop before the trip",
        "Agent: I've created the task and set it to high priority.",
        "Route: take the A1 north, then the second exit.",
        "Mode: dark",
        "The task agent handles this; your intent was clear.",
    ] {
        let out = check(&s, prose);
        assert_eq!(out.text, prose);
        assert!(out.fired.is_empty(), "{prose}");
    }
}

#[test]
fn internal_reasoning_is_removed() {
    let s = sanitizer();
    let out = check(
        &s,
        "<think>The user wants a task. I should call create_task.</think>\n\nDone! I created \"Buy milk\".",
    );
    assert_eq!(out.text, "Done! I created \"Buy milk\".");
    assert_eq!(out.fired, ["internal_reasoning"]);

    let out = check(
        &s,
        "Sure.<reasoning>\nstep 1\nstep 2\n</reasoning> It's on Monday.",
    );
    assert_eq!(out.text, "Sure. It's on Monday.");

    // cut off mid-thought at the end of a stream
    let out = check(
        &s,
        "Here are your tasks.\n<THINK>hmm, should I also mention the",
    );
    assert_eq!(out.text, "Here are your tasks.");

    let out = check(
        &s,
        "Chain of thought: the user has two overdue tasks,\nso I should list them first.\n\nYou have two overdue tasks.",
    );
    assert_eq!(out.text, "You have two overdue tasks.");

    let out = check(
        &s,
        "**Internal reasoning:** check the calendar.\n\nAll clear today.",
    );
    assert_eq!(out.text, "All clear today.");

    let out = check(&s, "leftover</think>The answer is 4.");
    assert_eq!(out.text, "leftoverThe answer is 4.");
}

#[test]
fn several_rules_fire_together() {
    let s = sanitizer();
    let reply = format!(
        "<think>routing...</think>\nroute: task_agent\n\n{SYSTEM_PROMPT}\n\n```json\n{{\"type\": \"function\", \"name\": \"list_tasks\"}}\n```\n\nYou have no tasks today."
    );
    let out = check(&s, &reply);
    assert_eq!(out.text, "You have no tasks today.");
    assert_eq!(
        out.fired,
        [
            "prompt_fragment",
            "tool_schema",
            "routing_metadata",
            "internal_reasoning"
        ]
    );
}

#[test]
fn ordinary_replies_come_out_unchanged() {
    let s = sanitizer();
    let replies = [
        "You have **3 tasks** due today:\n\n1. Send the invoice to ACME (high)\n2. Call the bank\n3. Review the draft\n\nWant me to move any of them?",
        "# Weekly summary\n\n- Done: 12 tasks\n- In progress: 4\n\n> Keep going!\n\n| Task | Due |\n|---|---|\n| Call | Mon |",
        "Here is the script:\n\n```rust\nfn main() {\n    let tasks = vec![\"a\", \"b\"];\n    println!(\"{} tasks\", tasks.len());\n}\n```\n\nRun it with `cargo run`.",
        "Your tasks as JSON:\n\n```json\n[{\"title\": \"Buy milk\", \"status\": \"todo\", \"priority\": \"high\", \"due_date\": 1700000000000}, {\"title\": \"Pay rent\", \"description\": \"Transfer to the landlord\", \"status\": \"done\"}]\n```",
        "{\"project\": \"Website\", \"tasks\": [{\"title\": \"Write copy\", \"type\": \"writing\"}], \"properties\": {\"color\": \"blue\"}}",
        "Note: the meeting moved to 3 pm.\nPriority: high\nStatus: in_progress\n\nI updated the task.",
        "I created the task \"Prepare the quarterly report\" in your Work project and set it due on Friday.  Two spaces stay.",
        "The agent of change is you; think about it. <b>Bold</b> and 5 < 6 > 4.",
        "A checklist:\n- [ ] draft\n- [x] review\n\nSee [the docs](https://example.com) for more {details}.",
        "Ünïcode tâsks: café ☕ — done ✅",
        "",
        "   \n\n  ",
    ];
    for r in replies {
        let out = check(&s, r);
        assert_eq!(out.text, r);
        assert!(out.fired.is_empty(), "{r}: {:?}", out.fired);
    }
}

/// The subscriber for this test binary: installed once as the global default, it records
/// every event's fields as text into the buffer of the thread that emitted it, if that
/// thread asked for one. A scoped `with_default` was flaky here: when another test thread
/// registered the sanitizer's callsite first, with no subscriber, the callsite cached
/// "never" and the capture saw nothing (CI, stop 16). A global default is part of every
/// callsite's interest from the start, so no registration order can lose an event.
struct Capture;

thread_local! {
    static CAPTURED: std::cell::RefCell<Option<Arc<Mutex<Vec<String>>>>> =
        const { std::cell::RefCell::new(None) };
}

struct Fields<'a>(&'a mut String);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={:?} ", field.name(), value));
    }
}

impl tracing::Subscriber for Capture {
    fn register_callsite(
        &self,
        _: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::always()
    }
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        CAPTURED.with(|c| {
            if let Some(buffer) = c.borrow().as_ref() {
                let mut s = format!("{} ", event.metadata().level());
                event.record(&mut Fields(&mut s));
                buffer
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(s);
            }
        });
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Runs `f` with every event this thread emits recorded, and returns the records.
fn capture_events(f: impl FnOnce()) -> Vec<String> {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        tracing::subscriber::set_global_default(Capture)
            .expect("no other global subscriber in this test binary");
    });
    let buffer = Arc::new(Mutex::new(Vec::new()));
    CAPTURED.with(|c| *c.borrow_mut() = Some(buffer.clone()));
    f();
    CAPTURED.with(|c| *c.borrow_mut() = None);
    buffer
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

#[test]
fn each_firing_is_logged_with_lengths_and_never_the_text() {
    let s = sanitizer();
    let reply = format!("<think>secret plan</think>ok. {SYSTEM_PROMPT}");
    let events = capture_events(|| {
        s.sanitize(&reply);
        s.sanitize("Nothing to see here.");
    });
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events.iter().all(|e| e.starts_with("WARN")));
    assert!(events[0].contains("prompt_fragment") && events[0].contains("removed_bytes="));
    assert!(events[1].contains("internal_reasoning"));
    for e in events.iter() {
        assert!(
            !e.contains("secret plan") && !e.contains("local-first"),
            "{e}"
        );
    }
}

/// Replies stitched from leaky and ordinary pieces, streamed in random chunks: the
/// stream must always equal the one-shot result.
#[test]
fn streaming_equals_one_shot_on_mixed_replies() {
    let s = sanitizer();
    let pieces: Vec<String> = vec![
        SYSTEM_PROMPT.to_owned(),
        "Always call list_tasks before updating or deleting so that you act".into(),
        "You have 3 tasks due today.".into(),
        "<think>first I list tasks</think>".into(),
        "<thinking>unterminated".into(),
        "route: task_agent".into(),
        "intent: create_task (confidence: 0.9)".into(),
        "{\"agent\": \"note_agent\", \"confidence\": 0.7}".into(),
        "[routing]\nagent = task_agent".into(),
        "```json\n{\"type\": \"function\", \"name\": \"list_tasks\"}\n```".into(),
        "```json\n{\"title\": \"Buy milk\", \"status\": \"todo\"}\n```".into(),
        "create_task: {\"title\": {\"type\": \"string\"}}".into(),
        "\"Create a task with a title, description, status, priority and due date.\"".into(),
        "Chain of thought: check dates\nthen answer".into(),
        "- Call the bank\n- Pay rent".into(),
        "**Done!** Anything else?".into(),
        "Note: moved to Friday.".into(),
        "{ not json".into(),
        "[link](https://x.y) and {\"a\": 1}".into(),
        "Ünïcode ☕ — fine".into(),
        "</think>".into(),
        "route".into(),
        "```".into(),
        "<think>".into(),
        "{".into(),
        "}".into(),
        "\"".into(),
        "```json".into(),
        "intent:".into(),
        "task_agent".into(),
        "[/routing]".into(),
        "Internal reasoning:".into(),
        "list_tasks".into(),
        "{\"type\": \"object\", \"properties\": {\"x\": {\"type\": \"string\"}}}".into(),
        "the user's tasks and their comments with the tools you".into(),
        "are given. Always call list_tasks before updating".into(),
    ];
    let seps = [" ", "\n", "\n\n", "", "  ", "\n  ", "\t", " \n"];
    let mut seed = std::env::var("SANITIZER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x9e37_79b9_7f4a_7c15_u64);
    let mut next = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    for _ in 0..300 {
        let mut text = String::new();
        for _ in 0..1 + next(8) {
            text.push_str(&pieces[next(pieces.len())]);
            text.push_str(seps[next(seps.len())]);
        }
        let whole = s.sanitize(&text);
        let chars: Vec<char> = text.chars().collect();
        for _ in 0..4 {
            let mut st = s.stream();
            let mut out = String::new();
            let mut i = 0;
            while i < chars.len() {
                let step = if next(4) == 0 { next(200) } else { next(12) };
                let j = (i + 1 + step).min(chars.len());
                out.push_str(&st.push(&chars[i..j].iter().collect::<String>()));
                i = j;
            }
            out.push_str(&st.finish());
            assert_eq!(out, whole.text, "input: {text:?}");
            assert_eq!(st.fired(), whole.fired, "input: {text:?}");
        }
    }
}

/// Long reasoning or long JSON held back by the stream must not cost a full re-scan per
/// chunk (the one-shot pass takes well under a millisecond for these).
#[test]
fn long_held_back_blocks_stream_to_the_same_result() {
    let s = sanitizer();
    let line = "I should consider the user's tasks and then decide.\n";
    for text in [
        format!("<think>{}</think>\n\nDone.", line.repeat(400)),
        format!("Chain of thought: {}\n\nDone.", line.repeat(400)),
        format!(
            "```json\n{{\"tasks\": [{}{{}}]}}\n```",
            "{\"title\": \"Buy milk\", \"status\": \"todo\"},\n".repeat(300)
        ),
    ] {
        let mut st = s.stream();
        let chars: Vec<char> = text.chars().collect();
        let mut out = String::new();
        for c in chars.chunks(4) {
            out.push_str(&st.push(&c.iter().collect::<String>()));
        }
        out.push_str(&st.finish());
        // ~5000 small chunks over a long held-back block: the same result as one pass
        // (speed is for benchmarks, not tests).
        assert_eq!(out, s.sanitize(&text).text);
    }
}
