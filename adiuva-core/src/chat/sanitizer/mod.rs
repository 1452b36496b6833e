//! The response sanitizer (plan step 9c): every reply passes through it before it
//! reaches a client, so prompts, tool schemas, routing metadata and a model's internal
//! reasoning never leave the server even when a model echoes them.
//!
//! Rules (the names [`Sanitized::fired`] reports):
//! - `prompt_fragment`: a run of 8 or more consecutive words shared with a registered
//!   prompt. Words are compared lowercased with punctuation ignored; every 8-word
//!   shingle of every prompt is kept as a 64-bit hash, and the whole run of matching
//!   words (with the punctuation stuck to it) is removed. Runs at most 7 words apart
//!   are removed as one: that is what a template echoed with its placeholders filled
//!   in looks like.
//! - `tool_schema`: JSON that looks like a tool definition (`"type": "function"`,
//!   `"parameters"` with `"properties"`, a known tool's name with its schema, a known
//!   tool's description or argument schema), a tool name followed by its schema, a
//!   tool listed with its description, a quoted tool description, or 8 words of one.
//! - `routing_metadata`: lines such as `route: task_agent` or
//!   `intent: create_task (confidence: 0.9)`, `{"agent": "task_agent", "confidence": …}`,
//!   `[routing]` blocks and `<routing>` tags.
//! - `internal_reasoning`: `<think>`/`<thinking>`/`<reasoning>`/`<scratchpad>` blocks
//!   (an unterminated one runs to the end of the reply), stray closing tags, and
//!   paragraphs labelled `Chain of thought:` or `Internal reasoning:`.
//!
//! Only what a rule matches is touched: the whitespace where something was removed is
//! joined (a paragraph break stays a paragraph break), and a reply no rule matches comes
//! out byte for byte. Each firing is logged with the rule and the lengths removed,
//! never the removed text.
//!
//! [`StreamSanitizer`] does the same over a stream of chunks and emits text as soon as
//! no later text could change it; its concatenated output equals [`Sanitizer::sanitize`]
//! of the whole reply.

mod detect;

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use detect::{
    GAP, Hit, Knowledge, Rule, SHINGLE, Waiting, detect, line_could_be_special, shingles,
};

use crate::ports::llm::ToolDefinition;

/// A sanitized reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sanitized {
    /// The text to send.
    pub text: String,
    /// Which rules removed something (`prompt_fragment`, `tool_schema`,
    /// `routing_metadata`, `internal_reasoning`), each once, in that order.
    pub fired: Vec<&'static str>,
}

/// Cleans model replies. Cheap to clone (the fingerprints are shared).
#[derive(Clone)]
pub struct Sanitizer {
    k: Arc<Knowledge>,
}

impl std::fmt::Debug for Sanitizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sanitizer")
            .field("prompt_shingles", &self.k.prompt_shingles.len())
            .field("tools", &self.k.tool_names.len())
            .field("agents", &self.k.agent_names.len())
            .finish()
    }
}

impl Sanitizer {
    /// A sanitizer that knows these prompts (every template and system prompt the
    /// server may send a model), these tools and these agent names. Prompts shorter than
    /// 8 words leave no fingerprint.
    pub fn new(
        prompt_texts: impl IntoIterator<Item = String>,
        tools: &[ToolDefinition],
        agent_names: impl IntoIterator<Item = String>,
    ) -> Self {
        let prompt_shingles: HashSet<u64> = prompt_texts
            .into_iter()
            .flat_map(|t| shingles(&t).collect::<Vec<_>>())
            .collect();
        let tool_shingles = tools
            .iter()
            .flat_map(|t| shingles(&t.description).collect::<Vec<_>>())
            .collect();
        let tool_descriptions = tools
            .iter()
            .filter_map(|t| {
                let d = t
                    .description
                    .trim()
                    .trim_end_matches('.')
                    .to_ascii_lowercase();
                // Short descriptions ("List tasks") are ordinary words, not a leak.
                (d.split_whitespace().count() >= 3 && d.len() >= 16)
                    .then(|| (t.name.to_lowercase(), d))
            })
            .collect();
        let tool_parameters = tools
            .iter()
            .map(|t| t.parameters.clone())
            // `{}` also appears in ordinary code and data.
            .filter(|p| {
                p.get("properties")
                    .and_then(|p| p.as_object())
                    .is_some_and(|o| !o.is_empty())
            })
            .collect();
        Self {
            k: Arc::new(Knowledge {
                prompt_shingles,
                tool_shingles,
                tool_names: tools.iter().map(|t| t.name.to_lowercase()).collect(),
                tool_descriptions,
                tool_parameters,
                agent_names: agent_names.into_iter().map(|a| a.to_lowercase()).collect(),
            }),
        }
    }

    /// Cleans a whole reply.
    pub fn sanitize(&self, text: &str) -> Sanitized {
        let d = detect(text, true, false, &self.k);
        let ranges = merge(text, d.hits);
        let (out, _) = render(text, &ranges, false, true);
        let fired = log_firings(&ranges);
        Sanitized {
            text: out,
            fired: fired.iter().map(|r| r.name()).collect(),
        }
    }

    /// A stream sanitizer sharing this one's fingerprints.
    pub fn stream(&self) -> StreamSanitizer {
        StreamSanitizer {
            k: self.k.clone(),
            window: String::new(),
            mid_line: false,
            has_content: false,
            finished: false,
            fired: BTreeSet::new(),
            stalled: None,
        }
    }
}

/// Hits merged into ranges, sorted; ranges that touch or are separated only by
/// whitespace become one (so the whitespace between them goes too).
struct Range {
    start: usize,
    end: usize,
    rules: BTreeSet<Rule>,
    /// Sum of the hits' lengths, per rule, for the log.
    lengths: Vec<(Rule, usize)>,
}

fn merge(text: &str, mut hits: Vec<Hit>) -> Vec<Range> {
    hits.sort_by_key(|h| (h.start, h.end));
    let mut out: Vec<Range> = Vec::new();
    for h in hits {
        if let Some(last) = out.last_mut()
            && (h.start <= last.end || text[last.end..h.start].trim().is_empty())
        {
            last.end = last.end.max(h.end);
            last.rules.insert(h.rule);
            last.lengths.push((h.rule, h.end - h.start));
            continue;
        }
        out.push(Range {
            start: h.start,
            end: h.end,
            rules: BTreeSet::from([h.rule]),
            lengths: vec![(h.rule, h.end - h.start)],
        });
    }
    out
}

fn log_firings(ranges: &[Range]) -> BTreeSet<Rule> {
    let mut fired = BTreeSet::new();
    for rule in Rule::ALL {
        let (spans, bytes) = ranges
            .iter()
            .flat_map(|r| r.lengths.iter())
            .filter(|(r, _)| *r == rule)
            .fold((0usize, 0usize), |(n, b), (_, len)| (n + 1, b + len));
        if spans > 0 {
            fired.insert(rule);
            // Lengths only: the removed text is what must not leak, logs included.
            tracing::warn!(
                rule = rule.name(),
                spans,
                removed_bytes = bytes,
                "sanitizer removed content from a model reply"
            );
        }
    }
    fired
}

/// The text without `ranges`. Whitespace around a removed range is replaced by one
/// joiner: nothing at the start or end of the reply, else a paragraph break, a line
/// break (keeping the next line's indentation) or a space, whichever the surrounding
/// whitespace held. `has_content`: kept text came before `text`. Returns the output and
/// whether any kept non-whitespace text has been emitted (including before).
fn render(text: &str, ranges: &[Range], has_content: bool, at_end: bool) -> (String, bool) {
    let mut out = String::with_capacity(text.len());
    let mut has = has_content;
    let mut pos = 0;
    for r in ranges {
        let l = pos.max(text[..r.start].trim_end().len());
        let kept = &text[pos..l];
        out.push_str(kept);
        has |= !kept.trim().is_empty();
        let right = &text[r.end..];
        let rr = r.end + (right.len() - right.trim_start().len());
        let (lws, rws) = (&text[l..r.start], &text[r.end..rr]);
        if has && !(at_end && rr == text.len()) {
            let newlines = lws.matches('\n').count().max(rws.matches('\n').count());
            let indent = rws.rfind('\n').map_or("", |i| &rws[i + 1..]);
            match newlines {
                0 if lws.is_empty() && rws.is_empty() => {}
                0 => out.push(' '),
                1 => {
                    out.push('\n');
                    out.push_str(indent);
                }
                _ => {
                    out.push_str("\n\n");
                    out.push_str(indent);
                }
            }
        }
        pos = rr;
    }
    let kept = &text[pos..];
    out.push_str(kept);
    has |= !kept.trim().is_empty();
    (out, has)
}

/// The most a stream holds back of text no rule can still remove (prose, lists,
/// ordinary code), in bytes: a few words, never the reply.
///
/// What it holds is the last `SHINGLE` (8) words, because a prompt's fingerprint run
/// may start among them and be completed by the next chunk — or, right after removed
/// text, `GAP + SHINGLE` (15) words, because a run within `GAP` words of it is removed
/// together with the words between — plus the word still being written. A `<think>`
/// opening is at most 12 bytes and a quoted tool description is held only from a quote
/// that opens one. Fifteen words of English prose average under 100 bytes; 256 leaves
/// room for long words. Text a rule may still remove — an open `<think>` block, an
/// unclosed JSON object (up to 16 KiB), a `[routing]` block, a line starting like
/// routing metadata or a tool listing — is held until it settles: releasing it would
/// release what the one-shot pass removes.
pub const MAX_HOLD_BACK: usize = 256;

/// Window length from which a stalled stream stops re-scanning on every chunk.
const STALL_AFTER: usize = 2048;

/// Sanitizes a streamed reply chunk by chunk.
///
/// It holds back only what later text could still change — the last few words (a
/// fingerprint may straddle chunks; at most [`MAX_HOLD_BACK`] bytes of ordinary text),
/// an open `<think>` or JSON block, an incomplete line that may turn out to be routing
/// metadata, a quote that may open a tool's description — and releases the rest. The concatenation of everything
/// [`push`](Self::push) and [`finish`](Self::finish) return equals
/// [`Sanitizer::sanitize`] of the whole reply.
#[derive(Debug)]
pub struct StreamSanitizer {
    k: Arc<Knowledge>,
    /// Text received and not yet released. After the first release it starts with
    /// whitespace that follows released, kept text.
    window: String,
    /// The window starts in the middle of a line (whose line rules were settled).
    mid_line: bool,
    has_content: bool,
    finished: bool,
    fired: BTreeSet<Rule>,
    /// Set when a long window could not release anything because of an unsettled
    /// construct: what would settle it, and the window length then. Until such text
    /// arrives (or the window grows by a quarter) a re-scan is skipped, which keeps a
    /// long `<think>` block from costing a full scan per chunk.
    stalled: Option<(Waiting, usize)>,
}

impl std::fmt::Debug for Knowledge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Knowledge { .. }")
    }
}

impl StreamSanitizer {
    /// Takes the next chunk; returns the text that can be released now (maybe empty).
    pub fn push(&mut self, chunk: &str) -> String {
        if self.finished || chunk.is_empty() {
            return String::new();
        }
        let before = self.window.len();
        self.window.push_str(chunk);
        if let Some((waiting, len)) = &mut self.stalled {
            let mut from = before.saturating_sub(16);
            while !self.window.is_char_boundary(from) {
                from -= 1;
            }
            let settles = waiting.may_settle(&self.window[from..], &self.window[before..]);
            if !settles && self.window.len() < *len + *len / 4 {
                return String::new();
            }
        }
        self.release()
    }

    /// Ends the stream: returns the rest, sanitized. Later calls return nothing.
    pub fn finish(&mut self) -> String {
        if self.finished {
            return String::new();
        }
        self.finished = true;
        let window = std::mem::take(&mut self.window);
        let d = detect(&window, true, self.mid_line, &self.k);
        let ranges = merge(&window, d.hits);
        let (out, has) = render(&window, &ranges, self.has_content, true);
        self.has_content = has;
        self.fired.extend(log_firings(&ranges));
        out
    }

    /// Bytes received and not yet released (what the stream holds back now).
    pub fn held(&self) -> usize {
        self.window.len()
    }

    /// The rules that have removed something so far, in the order of [`Sanitized::fired`].
    pub fn fired(&self) -> Vec<&'static str> {
        self.fired.iter().map(|r| r.name()).collect()
    }

    /// Releases the longest prefix no later text can change.
    fn release(&mut self) -> String {
        let w = &self.window;
        if !w.contains(char::is_whitespace) {
            return String::new();
        }
        let mut d = detect(w, false, self.mid_line, &self.k);
        self.stalled = None;
        let ranges = merge(w, std::mem::take(&mut d.hits));
        let limit = d
            .unresolved
            .unwrap_or(w.len())
            .min(self.k.open_quoted_description(w).unwrap_or(w.len()));
        // A cut point `c`: just after kept non-whitespace, just before whitespace. Then
        // everything before `c` is settled and the text after starts with whitespace
        // that follows kept text, which is exactly how the one-shot pass sees it.
        let mut cut = None;
        let mut prev_ws = true;
        let mut candidates = Vec::new();
        for (i, ch) in w.char_indices() {
            let ws = ch.is_whitespace();
            if ws && !prev_ws && i <= limit {
                candidates.push(i);
            }
            prev_ws = ws;
        }
        for &c in candidates.iter().rev() {
            if self.cut_is_settled(c, &d, &ranges) {
                cut = Some(c);
                break;
            }
        }
        let Some(c) = cut else {
            if self.window.len() > STALL_AFTER {
                self.stalled = d.waiting.map(|w| (w, self.window.len()));
            }
            return String::new();
        };
        let (done, rest): (Vec<Range>, Vec<Range>) = ranges.into_iter().partition(|r| r.end < c);
        debug_assert!(rest.iter().all(|r| r.start >= c));
        let (out, has) = render(&self.window[..c], &done, self.has_content, false);
        self.has_content = has;
        self.fired.extend(log_firings(&done));
        self.window.drain(..c);
        self.mid_line = true;
        out
    }

    fn cut_is_settled(&self, c: usize, d: &detect::Detection, ranges: &[Range]) -> bool {
        let w = &self.window;
        // The character before the cut is kept (so no range crosses it, and whitespace
        // joins before it are already decided).
        let i = ranges.partition_point(|r| r.end < c);
        if ranges.get(i).is_some_and(|r| r.start < c) {
            return false;
        }
        // Whether the first word after the cut is removed together with text before it
        // is settled. A run crossing the cut: every fingerprint holding the word before
        // it is whole once SHINGLE words follow. A gap closed over the cut: only a run
        // ending within GAP words of the first fingerprint still to come can be joined to
        // it; with no removed text that close, SHINGLE words suffice, else GAP + SHINGLE.
        let after = d.tokens.partition_point(|t| t.end <= c);
        if after + SHINGLE > d.complete_tokens {
            return false;
        }
        if after + GAP + SHINGLE > d.complete_tokens {
            let first_unknown = d.complete_tokens + 1 - SHINGLE;
            let joinable_from = d.tokens[first_unknown.saturating_sub(GAP + 1)].start;
            if ranges.iter().any(|r| r.end > joinable_from) {
                return false;
            }
        }
        // Line rules: the cut's line is complete (and was judged) or cannot match.
        let ls = w[..c].rfind('\n').map_or(0, |p| p + 1);
        if ls == 0 && self.mid_line {
            return true;
        }
        let line = &w[ls..c];
        if line.trim_start().starts_with("```") {
            // A fence opener may yet be removed with the JSON it holds.
            return false;
        }
        let complete = w[c..].contains('\n');
        complete || !line_could_be_special(line, &self.k)
    }
}

#[cfg(test)]
mod tests;
