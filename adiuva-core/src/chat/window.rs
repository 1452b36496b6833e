//! Fitting prompts to the model's context window: the one home of the rule.
//!
//! A model has a fixed context window: prompt and reply together must fit in it. A
//! provider given more either refuses (OpenAI: 400 `context_length_exceeded`; llama.cpp:
//! 500 "Context size has been exceeded") or silently forgets the start of the prompt. So
//! every chat prompt is fitted *before* the call:
//!
//! - **Budget.** The prompt may use the window minus the reply's `max_tokens` minus the
//!   tool definitions on offer ([`ContextWindow::prompt_budget`]).
//! - **Estimate.** Tokens are estimated without a tokenizer, conservatively:
//!   [`estimate_tokens`] counts one token per 3 bytes of UTF-8 (English prose runs about
//!   4 characters a token, CJK about one 3-byte character a token, JSON with ids about
//!   3), and each message costs [`MESSAGE_OVERHEAD_TOKENS`] more for its role markers.
//!   Overestimating only drops context a little early; underestimating costs a refusal.
//! - **What goes.** A prompt is split into parts that cannot be dropped (the system
//!   prompt, the user's current message, this turn's own tool exchanges) and droppable
//!   items listed in the order they are dropped: the oldest conversation history first,
//!   then the device's context items (the caller decides their order; see
//!   `compose_messages`). [`items_to_drop`] drops from the front of that list until the
//!   rest fits.
//! - **When nothing can go.** If the undroppable parts alone exceed the budget, the chat
//!   is refused before any model call ([`LlmError::PromptTooLong`], HTTP 413
//!   `message_too_long`).

use crate::ports::llm::{LlmError, Message, ToolDefinition};

/// The default context window, in tokens (llama.cpp's `llama-server` defaults to 4,096
/// per slot; most hosted models have far more; 8,192 is a safe floor for small local
/// models and costs hosted ones little, since the device's context is capped anyway).
pub const DEFAULT_CONTEXT_TOKENS: usize = 8192;

/// Tokens counted per message on top of its text (role markers, separators).
pub const MESSAGE_OVERHEAD_TOKENS: usize = 8;

/// The estimated token count of `text`: one per 3 bytes of UTF-8, rounded up.
pub fn estimate_tokens(text: &str) -> usize {
    text.len().div_ceil(3)
}

/// The estimated tokens of one message: its text, its tool calls and the overhead.
pub fn message_tokens(m: &Message) -> usize {
    MESSAGE_OVERHEAD_TOKENS
        + estimate_tokens(&m.content)
        + m.tool_calls
            .iter()
            .map(|c| {
                MESSAGE_OVERHEAD_TOKENS
                    + estimate_tokens(&c.id)
                    + estimate_tokens(&c.name)
                    + estimate_tokens(&c.arguments)
            })
            .sum::<usize>()
}

/// The estimated tokens of a list of messages.
pub fn messages_tokens(messages: &[Message]) -> usize {
    messages.iter().map(message_tokens).sum()
}

/// The estimated tokens of tool definitions as a provider receives them (JSON).
pub fn tools_tokens(tools: &[ToolDefinition]) -> usize {
    tools
        .iter()
        .map(|t| {
            MESSAGE_OVERHEAD_TOKENS
                + estimate_tokens(&t.name)
                + estimate_tokens(&t.description)
                + estimate_tokens(&t.parameters.to_string())
        })
        .sum()
}

/// A model's context window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextWindow {
    /// Its size in tokens (prompt and reply together).
    pub tokens: usize,
}

impl Default for ContextWindow {
    fn default() -> Self {
        Self {
            tokens: DEFAULT_CONTEXT_TOKENS,
        }
    }
}

impl ContextWindow {
    /// Tokens left for the prompt's messages once the reply's `max_tokens` and the
    /// `tools` on offer are set aside.
    pub fn prompt_budget(&self, max_tokens: Option<u32>, tools: &[ToolDefinition]) -> usize {
        let reply = max_tokens.map_or(0, |t| t as usize);
        self.tokens.saturating_sub(reply + tools_tokens(tools))
    }
}

/// The parts that cannot be dropped do not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DoesNotFit {
    /// Estimated tokens of the undroppable parts.
    pub needed: usize,
    /// The budget they had to fit in.
    pub budget: usize,
}

impl From<DoesNotFit> for LlmError {
    fn from(e: DoesNotFit) -> Self {
        LlmError::PromptTooLong {
            needed: e.needed,
            available: e.budget,
        }
    }
}

/// The fitting rule. `fixed` is the cost of what cannot be dropped; `droppable` the
/// costs of the other items **in the order they are dropped** (first dropped first).
/// Returns how many items, from the front, must be dropped for the rest to fit in
/// `budget`; or [`DoesNotFit`] when `fixed` alone exceeds it.
pub fn items_to_drop(
    budget: usize,
    fixed: usize,
    droppable: &[usize],
) -> Result<usize, DoesNotFit> {
    if fixed > budget {
        return Err(DoesNotFit {
            needed: fixed,
            budget,
        });
    }
    let mut total = fixed.saturating_add(droppable.iter().sum::<usize>());
    let mut dropped = 0;
    while total > budget {
        // `fixed <= budget`, so the loop ends before running out of items.
        total -= droppable[dropped];
        dropped += 1;
    }
    Ok(dropped)
}

/// `text` cut to at most about `tokens` estimated tokens (on a character boundary),
/// marked when cut. For tool results, which are this turn's and cannot be dropped.
pub fn clip_to_tokens(text: &str, tokens: usize) -> String {
    if estimate_tokens(text) <= tokens {
        return text.to_owned();
    }
    const MARK: &str = " …[cut: too long for the model's context window]";
    let max_bytes = (tokens * 3).saturating_sub(MARK.len());
    let mut cut = max_bytes.min(text.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{MARK}", &text[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::llm::Role;

    fn msg(content: &str) -> Message {
        Message {
            role: Role::User,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }

    #[test]
    fn estimates_round_up_and_count_bytes() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("a"), 1);
        assert_eq!(estimate_tokens("abc"), 1);
        assert_eq!(estimate_tokens("abcd"), 2);
        // Three bytes per CJK character: one token each.
        assert_eq!(estimate_tokens("日本語"), 3);
        assert_eq!(message_tokens(&msg("abcdef")), MESSAGE_OVERHEAD_TOKENS + 2);
    }

    #[test]
    fn the_budget_sets_aside_the_reply_and_the_tools() {
        let window = ContextWindow { tokens: 1000 };
        assert_eq!(window.prompt_budget(None, &[]), 1000);
        assert_eq!(window.prompt_budget(Some(300), &[]), 700);
        let tool = ToolDefinition {
            name: "abc".into(),
            description: "abcdef".into(),
            parameters: serde_json::json!({}),
        };
        // 8 overhead + 1 name + 2 description + 1 for `{}`.
        assert_eq!(window.prompt_budget(Some(300), &[tool]), 700 - 12);
        assert_eq!(
            ContextWindow { tokens: 10 }.prompt_budget(Some(300), &[]),
            0
        );
    }

    #[test]
    fn nothing_is_dropped_when_everything_fits() {
        assert_eq!(items_to_drop(100, 40, &[10, 20, 30]), Ok(0));
        assert_eq!(items_to_drop(100, 100, &[]), Ok(0));
    }

    #[test]
    fn items_are_dropped_from_the_front_until_the_rest_fits() {
        // 40 + 60 = 100 > 90: dropping the first (10) leaves 90.
        assert_eq!(items_to_drop(90, 40, &[10, 20, 30]), Ok(1));
        // Dropping 10 and 20 leaves 70.
        assert_eq!(items_to_drop(75, 40, &[10, 20, 30]), Ok(2));
        // Only the fixed part fits.
        assert_eq!(items_to_drop(40, 40, &[10, 20, 30]), Ok(3));
        // A large early item goes first even if later ones are small.
        assert_eq!(items_to_drop(50, 40, &[500, 5, 5]), Ok(1));
    }

    #[test]
    fn fixed_parts_that_do_not_fit_are_an_error() {
        assert_eq!(
            items_to_drop(39, 40, &[1]),
            Err(DoesNotFit {
                needed: 40,
                budget: 39
            })
        );
        let e: LlmError = DoesNotFit {
            needed: 40,
            budget: 39,
        }
        .into();
        assert!(matches!(
            e,
            LlmError::PromptTooLong {
                needed: 40,
                available: 39
            }
        ));
    }

    #[test]
    fn clipping_keeps_short_text_and_cuts_long_text_on_a_char_boundary() {
        assert_eq!(clip_to_tokens("short", 100), "short");
        let long = "é".repeat(1000);
        let clipped = clip_to_tokens(&long, 100);
        assert!(clipped.ends_with("context window]"), "{clipped}");
        assert!(estimate_tokens(&clipped) <= 100, "{}", clipped.len());
        assert!(clipped.starts_with("éé"));
    }
}
