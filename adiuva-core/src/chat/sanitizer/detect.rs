//! The detection rules. Each finds byte ranges of a text to remove; none edits text.
//!
//! Every rule is written so that its verdict on a piece of text depends only on that
//! text and on a bounded amount of text after it, and it says so: a construct that the
//! text seen so far cannot settle (an open `<think>`, a `{` whose `}` has not arrived,
//! an incomplete line that might be routing metadata) is reported as `unresolved` at
//! the position from which it could still remove text. The stream sanitizer only
//! releases text before that position, which is what makes its output equal the
//! one-shot result.
//!
//! Longer than the ~600-line rule on purpose: every detection rule and its bounded
//! look-ahead (what makes streaming equal one-shot) is in this one file, so that a rule's
//! "unresolved" position can be checked against the others' in one read.

use std::collections::HashSet;

use serde_json::Value;

/// Which rule removed something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Rule {
    PromptFragment,
    ToolSchema,
    RoutingMetadata,
    InternalReasoning,
}

impl Rule {
    pub(crate) const ALL: [Rule; 4] = [
        Rule::PromptFragment,
        Rule::ToolSchema,
        Rule::RoutingMetadata,
        Rule::InternalReasoning,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Rule::PromptFragment => "prompt_fragment",
            Rule::ToolSchema => "tool_schema",
            Rule::RoutingMetadata => "routing_metadata",
            Rule::InternalReasoning => "internal_reasoning",
        }
    }
}

/// A range to remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hit {
    pub start: usize,
    pub end: usize,
    pub rule: Rule,
}

/// A word as the fingerprints see it: alphanumerics, lowercased, apostrophes inside a
/// word dropped (`Adiuva's` = `adiuvas`), everything else a separator.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Token {
    pub start: usize,
    pub end: usize,
    hash: u64,
}

/// What an unsettled construct needs to see before it can settle (a hint that lets the
/// stream skip pointless re-scans; more text of any kind also settles it eventually).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Waiting {
    /// A closing tag (lowercase).
    Text(String),
    /// The bracket that closes one already open (the scan so far).
    Bracket(JsonScan),
    /// Any more text.
    NextChar,
    /// The end of the line.
    LineEnd,
    /// A blank line.
    BlankLine,
    /// A closing code fence.
    Fence,
}

impl Waiting {
    /// Whether `new` may settle the construct; `recent` is `new` with a little of the
    /// text before it (a closing tag may straddle chunks).
    pub fn may_settle(&mut self, recent: &str, new: &str) -> bool {
        match self {
            Waiting::Text(t) => recent.to_ascii_lowercase().contains(t.as_str()),
            Waiting::Bracket(scan) => scan.feed(new.as_bytes()).is_some(),
            Waiting::NextChar => true,
            Waiting::LineEnd => new.contains('\n'),
            Waiting::BlankLine => {
                let mut last_newline = None;
                recent.char_indices().any(|(i, c)| {
                    if c != '\n' {
                        return false;
                    }
                    let blank =
                        last_newline.is_some_and(|j: usize| recent[j + 1..i].trim().is_empty());
                    last_newline = Some(i);
                    blank
                })
            }
            Waiting::Fence => new.contains(['`', '\n']),
        }
    }
}

/// What the rules found in a text.
pub(crate) struct Detection {
    pub hits: Vec<Hit>,
    /// The earliest position from which an unsettled construct could still remove text.
    pub unresolved: Option<usize>,
    /// What would settle that construct.
    pub waiting: Option<Waiting>,
    pub tokens: Vec<Token>,
    /// Tokens known to be whole (the last one may still grow while streaming).
    pub complete_tokens: usize,
}

/// The fingerprint length: a run of this many words shared with a prompt is removed.
pub(crate) const SHINGLE: usize = 8;
/// Matching runs at most this many words apart are removed as one, with the words
/// between.
pub(crate) const GAP: usize = 7;
/// A `{`/`[` whose closing bracket is further than this is not treated as JSON.
const MAX_JSON: usize = 16 * 1024;

const QUOTES: &[char] = &['"', '\'', '`', '“', '”', '‘', '’', '«', '»'];
/// Characters that may decorate the start of a line (bullets, quotes, emphasis, code).
const DECORATION: &[char] = &[' ', '\t', '-', '*', '+', '>', '#', '|', '`', '_'];
const TAGS: &[(&str, Rule)] = &[
    ("think", Rule::InternalReasoning),
    ("thinking", Rule::InternalReasoning),
    ("reasoning", Rule::InternalReasoning),
    ("scratchpad", Rule::InternalReasoning),
    ("routing", Rule::RoutingMetadata),
];
const REASONING_LABELS: &[&str] = &[
    "chain of thought",
    "chain-of-thought",
    "internal reasoning",
    "internal thoughts",
    "internal monologue",
    "hidden reasoning",
    "private reasoning",
    "reasoning trace",
    "scratchpad",
];
const ROUTING_HEADERS: &[&str] = &[
    "routing",
    "route",
    "router",
    "routing metadata",
    "routing_metadata",
    "routing info",
    "orchestrator",
];
/// Keys whose value must name an agent.
const AGENT_KEYS: &[&str] = &[
    "agent",
    "agent_name",
    "selected_agent",
    "target_agent",
    "next_agent",
    "delegate_to",
    "handoff",
];
/// Other keys that make a line routing metadata (value: a lowercase identifier).
const ROUTE_KEYS: &[&str] = &[
    "route",
    "routing",
    "routed_to",
    "route_to",
    "intent",
    "classification",
];
/// Keys that may accompany routing keys but are not routing metadata alone.
const SIDE_KEYS: &[&str] = &["confidence", "score", "mode", "execution_mode"];
const ROUTING_JSON_KEYS: &[&str] = &[
    "agent",
    "agents",
    "agent_name",
    "selected_agent",
    "target_agent",
    "next_agent",
    "route",
    "routing",
    "intent",
    "confidence",
    "reason",
    "reasoning",
    "pipeline",
    "mode",
    "execution_mode",
    "score",
    "scores",
    "classification",
];

/// The sanitizer's knowledge: fingerprints, tools, agents.
pub(crate) struct Knowledge {
    pub prompt_shingles: HashSet<u64>,
    pub tool_shingles: HashSet<u64>,
    /// Lowercase tool names.
    pub tool_names: HashSet<String>,
    /// (lowercase tool name, lowercase trimmed description) for descriptions long
    /// enough to be distinctive.
    pub tool_descriptions: Vec<(String, String)>,
    pub tool_parameters: Vec<Value>,
    /// Lowercase agent names.
    pub agent_names: HashSet<String>,
}

impl Knowledge {
    /// How far past a position the quoted-description rule may still look.
    fn description_lookahead(&self) -> usize {
        self.tool_descriptions
            .iter()
            .map(|(_, d)| d.len() + 8)
            .max()
            .unwrap_or(0)
    }

    /// Where a quoted tool description that more text could complete starts in `text`
    /// (its opening quote), if one may: a quote followed by the beginning of a
    /// description, or by a whole one still waiting for its `.` or closing quote. Only
    /// such a quote holds text back — not every quote or apostrophe of the last
    /// description-length of text.
    pub fn open_quoted_description(&self, text: &str) -> Option<usize> {
        if self.tool_descriptions.is_empty() {
            return None;
        }
        let mut from = text.len().saturating_sub(self.description_lookahead());
        while !text.is_char_boundary(from) {
            from -= 1;
        }
        let lower = text[from..].to_ascii_lowercase();
        lower.char_indices().find_map(|(i, c)| {
            if !QUOTES.contains(&c) {
                return None;
            }
            let rest = &lower[i + c.len_utf8()..];
            self.tool_descriptions
                .iter()
                .any(|(_, d)| {
                    d.starts_with(rest)
                        || rest
                            .strip_prefix(d.as_str())
                            .is_some_and(|r| r.is_empty() || r == ".")
                })
                .then_some(from + i)
        })
    }
}

// ---------------------------------------------------------------------------------
// Words and fingerprints

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn is_apostrophe(c: char) -> bool {
    c == '\'' || c == '’'
}

pub(crate) fn tokenize(text: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    let mut cur: Option<Token> = None;
    while let Some((i, c)) = chars.next() {
        if c.is_alphanumeric() {
            let t = cur.get_or_insert(Token {
                start: i,
                end: i,
                hash: 0xcbf2_9ce4_8422_2325,
            });
            for lc in c.to_lowercase() {
                let mut buf = [0u8; 4];
                for b in lc.encode_utf8(&mut buf).bytes() {
                    t.hash = (t.hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
                }
            }
            t.end = i + c.len_utf8();
        } else if is_apostrophe(c)
            && cur.is_some()
            && chars.peek().is_some_and(|(_, n)| n.is_alphanumeric())
        {
            // inside a word: `don't` is one word
        } else if let Some(t) = cur.take() {
            out.push(t);
        }
    }
    if let Some(t) = cur {
        out.push(t);
    }
    out
}

fn shingle_hash(tokens: &[Token]) -> u64 {
    tokens
        .iter()
        .fold(0x5151_5151_u64, |h, t| splitmix(h ^ splitmix(t.hash)))
}

/// Every 8-word fingerprint of `text`.
pub(crate) fn shingles(text: &str) -> impl Iterator<Item = u64> {
    let tokens = tokenize(text);
    let n = tokens.len();
    (0..(n + 1).saturating_sub(SHINGLE)).map(move |i| shingle_hash(&tokens[i..i + SHINGLE]))
}

fn prev_char(text: &str, i: usize) -> Option<char> {
    text[..i].chars().next_back()
}

fn next_char(text: &str, i: usize) -> Option<char> {
    text[i..].chars().next()
}

fn is_punct(c: char) -> bool {
    !c.is_whitespace() && !c.is_alphanumeric()
}

fn prompt_hits(text: &str, d: &mut Detection, k: &Knowledge) {
    let n = d.complete_tokens;
    if n < SHINGLE || (k.prompt_shingles.is_empty() && k.tool_shingles.is_empty()) {
        return;
    }
    // bit 0: prompt, bit 1: tool description
    let mut covered = vec![0u8; n];
    for i in 0..=n - SHINGLE {
        let h = shingle_hash(&d.tokens[i..i + SHINGLE]);
        let bit = if k.prompt_shingles.contains(&h) {
            1
        } else if k.tool_shingles.contains(&h) {
            2
        } else {
            continue;
        };
        for c in &mut covered[i..i + SHINGLE] {
            *c |= bit;
        }
    }
    let mut i = 0;
    while i < n {
        if covered[i] == 0 {
            i += 1;
            continue;
        }
        let first = i;
        let mut bits = 0;
        loop {
            while i < n && covered[i] != 0 {
                bits |= covered[i];
                i += 1;
            }
            // A filled-in placeholder breaks every shingle around it, so a few words
            // between two matching runs are the template's, or the value put in it.
            let next = (i..n.min(i + GAP + 1)).find(|&j| covered[j] != 0);
            match next {
                Some(j) => i = j,
                None => break,
            }
        }
        // Take punctuation stuck to the run with it (`"You … tasks."`), not the words
        // around it.
        let mut start = d.tokens[first].start;
        while let Some(c) = prev_char(text, start).filter(|c| is_punct(*c)) {
            start -= c.len_utf8();
        }
        let mut end = d.tokens[i - 1].end;
        while let Some(c) = next_char(text, end).filter(|c| is_punct(*c)) {
            end += c.len_utf8();
        }
        for (bit, rule) in [(1, Rule::PromptFragment), (2, Rule::ToolSchema)] {
            if bits & bit != 0 {
                d.hits.push(Hit { start, end, rule });
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Lines

fn line_start(text: &str, i: usize) -> usize {
    text[..i].rfind('\n').map_or(0, |p| p + 1)
}

fn strip_decoration(s: &str) -> &str {
    s.trim_start_matches(DECORATION)
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '-'
}

fn first_word(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !is_word_char(c)).unwrap_or(s.len());
    s.split_at(end)
}

fn is_agentish(v: &str, k: &Knowledge) -> bool {
    let l = v.to_lowercase();
    k.agent_names.contains(&l)
        || (v.ends_with("_agent")
            && v.len() > "_agent".len()
            && v.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'))
}

/// Whether an incomplete line beginning with `prefix` could still turn out to be one
/// that a line rule removes. `false` is a promise: no completion of the line matches.
///
/// It answers `false` as early as the prefix allows — an ordinary line that merely
/// starts with `Agent`, `Mode`, `Internal` or `[` is settled by the characters after
/// that word — because the stream holds an unsettled line back whole, and a paragraph
/// is one line.
pub(crate) fn line_could_be_special(prefix: &str, k: &Knowledge) -> bool {
    let s = strip_decoration(prefix);
    if let Some(body) = s.strip_prefix('[') {
        return could_be_routing_header(body);
    }
    if could_be_reasoning_label(s) {
        return true;
    }
    // the head `is_routing_line` reads its first key from
    let s = s.trim_start_matches(is_routing_sep);
    if s.is_empty() {
        return true;
    }
    let (word, rest) = first_word(s);
    if rest.is_empty() {
        return true;
    }
    let w = word.to_lowercase();
    if k.tool_names.contains(&w) {
        return true;
    }
    let key = AGENT_KEYS.contains(&w.as_str())
        || ROUTE_KEYS.contains(&w.as_str())
        || SIDE_KEYS.contains(&w.as_str());
    // `is_routing_line` needs `:` or `=` after the key (emphasis and spaces between).
    let after = rest.trim_start_matches(['*', '_', ' ']);
    key && (after.is_empty() || after.starts_with([':', '=']))
}

/// Whether a line whose text after `[` starts with `body` may be a `[routing]` header
/// (`is_routing_header`: a known name, then `]` and only emphasis or spaces).
fn could_be_routing_header(body: &str) -> bool {
    let b = body.trim_start().to_lowercase();
    ROUTING_HEADERS.iter().any(|h| {
        if h.starts_with(b.as_str()) {
            return true;
        }
        let Some(after) = b.strip_prefix(h) else {
            return false;
        };
        let after = after.trim_start();
        match after.strip_prefix(']') {
            None => after.is_empty(),
            Some(tail) => tail
                .chars()
                .all(|c| c == '*' || c == '_' || c.is_whitespace()),
        }
    })
}

/// Whether a line starting with `s` (decoration stripped) may be a reasoning label
/// (`is_reasoning_label`).
fn could_be_reasoning_label(s: &str) -> bool {
    let l = s.to_lowercase();
    REASONING_LABELS.iter().any(|label| {
        label.starts_with(l.as_str())
            || l.strip_prefix(label).is_some_and(|rest| {
                let rest = rest.trim_start_matches(['*', '_', ' ', ')']);
                rest.is_empty() || rest.starts_with(':')
            })
    })
}

fn is_routing_sep(c: char) -> bool {
    c.is_whitespace() || ",;|()*`".contains(c)
}

/// `route: task_agent`, `intent=create_task (confidence: 0.92)`, `**Agent:** note_agent`.
fn is_routing_line(s: &str, k: &Knowledge) -> bool {
    let seps = is_routing_sep;
    let mut rest = s.trim_start_matches(seps);
    let mut primary = false;
    while !rest.is_empty() {
        let (key, after) = first_word(rest);
        if key.is_empty() {
            return false;
        }
        let key = key.to_lowercase();
        let after = after.trim_start_matches(['*', '_', ' ']);
        let Some(after) = after.strip_prefix([':', '=']) else {
            return false;
        };
        let after = after.trim_start_matches(['*', '_', ' ', '\t', '"', '\'', '`']);
        let vend = after
            .find(|c: char| !(c.is_alphanumeric() || "_.-/%".contains(c)))
            .unwrap_or(after.len());
        let value = &after[..vend];
        if value.is_empty() {
            return false;
        }
        let lower_ident = value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-/%".contains(c));
        if AGENT_KEYS.contains(&key.as_str()) {
            if !is_agentish(value, k) {
                return false;
            }
            primary = true;
        } else if ROUTE_KEYS.contains(&key.as_str()) {
            if !lower_ident {
                return false;
            }
            primary = true;
        } else if !SIDE_KEYS.contains(&key.as_str()) || !lower_ident {
            return false;
        }
        rest = after[vend..].trim_start_matches(|c: char| seps(c) || c == '"' || c == '\'');
    }
    primary
}

fn is_reasoning_label(s: &str) -> bool {
    let l = s.to_lowercase();
    REASONING_LABELS.iter().any(|label| {
        l.strip_prefix(label).is_some_and(|rest| {
            rest.trim_start_matches(['*', '_', ' ', ')'])
                .starts_with(':')
        })
    })
}

fn is_routing_header(s: &str) -> bool {
    let t = s.trim().trim_matches(['*', '_']).to_lowercase();
    t.strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .is_some_and(|name| ROUTING_HEADERS.contains(&name.trim()))
}

fn is_routing_close(s: &str) -> bool {
    let t = s.trim().to_lowercase();
    t.strip_prefix("[/")
        .and_then(|t| t.strip_suffix(']'))
        .is_some_and(|name| ROUTING_HEADERS.contains(&name.trim()))
}

/// `- create_task: Create a task with a title, …` — a tool listed with its description.
fn is_tool_listing(s: &str, k: &Knowledge) -> bool {
    let (word, rest) = first_word(s);
    let w = word.to_lowercase();
    if !k.tool_names.contains(&w) {
        return false;
    }
    let rest = rest.to_ascii_lowercase();
    k.tool_descriptions
        .iter()
        .any(|(name, desc)| *name == w && rest.contains(desc.as_str()))
}

enum LineKind {
    RoutingLine,
    ToolListing,
    RoutingBlock,
    ReasoningParagraph,
}

fn classify_line(line: &str, k: &Knowledge) -> Option<LineKind> {
    if is_routing_header(line) {
        return Some(LineKind::RoutingBlock);
    }
    let s = strip_decoration(line).trim_end();
    if s.is_empty() {
        return None;
    }
    if is_reasoning_label(s) {
        Some(LineKind::ReasoningParagraph)
    } else if is_routing_line(s, k) {
        Some(LineKind::RoutingLine)
    } else if is_tool_listing(s, k) {
        Some(LineKind::ToolListing)
    } else {
        None
    }
}

struct Line {
    start: usize,
    end: usize,
    complete: bool,
}

fn lines(text: &str, finished: bool) -> Vec<Line> {
    let mut out = Vec::new();
    let mut start = 0;
    loop {
        match text[start..].find('\n') {
            Some(off) => {
                out.push(Line {
                    start,
                    end: start + off,
                    complete: true,
                });
                start += off + 1;
            }
            None => {
                out.push(Line {
                    start,
                    end: text.len(),
                    complete: finished,
                });
                return out;
            }
        }
    }
}

fn note_unresolved(d: &mut Detection, at: usize, what: Waiting) {
    if d.unresolved.is_none_or(|u| at < u) {
        d.unresolved = Some(at);
        d.waiting = Some(what);
    }
}

fn line_hits(text: &str, finished: bool, mid_line: bool, d: &mut Detection, k: &Knowledge) {
    let lines = lines(text, finished);
    let mut i = 0;
    while i < lines.len() {
        let l = &lines[i];
        // A window that starts mid-line holds the tail of a line already judged.
        if i == 0 && mid_line {
            i += 1;
            continue;
        }
        let line = &text[l.start..l.end];
        if !l.complete {
            if line_could_be_special(line, k) {
                note_unresolved(d, l.start, Waiting::LineEnd);
            }
            return;
        }
        match classify_line(line, k) {
            None => {}
            Some(LineKind::RoutingLine) => d.hits.push(Hit {
                start: l.start,
                end: l.end,
                rule: Rule::RoutingMetadata,
            }),
            Some(LineKind::ToolListing) => d.hits.push(Hit {
                start: l.start,
                end: l.end,
                rule: Rule::ToolSchema,
            }),
            Some(kind @ (LineKind::RoutingBlock | LineKind::ReasoningParagraph)) => {
                let block = matches!(kind, LineKind::RoutingBlock);
                let rule = if block {
                    Rule::RoutingMetadata
                } else {
                    Rule::InternalReasoning
                };
                // The block runs to a blank line (or, for `[routing]`, a closing
                // `[/routing]` or the next `[section]`).
                let mut end = l.end;
                let mut j = i + 1;
                let mut settled = false;
                while j < lines.len() {
                    let n = &lines[j];
                    if !n.complete {
                        break;
                    }
                    let s = text[n.start..n.end].trim();
                    if s.is_empty() {
                        settled = true;
                        break;
                    }
                    if block && is_routing_close(s) {
                        end = n.end;
                        j += 1;
                        settled = true;
                        break;
                    }
                    if block && s.starts_with('[') {
                        settled = true;
                        break;
                    }
                    end = n.end;
                    j += 1;
                }
                if !settled && !finished {
                    note_unresolved(d, l.start, Waiting::BlankLine);
                    return;
                }
                if !settled {
                    end = lines[lines.len() - 1].end;
                }
                d.hits.push(Hit {
                    start: l.start,
                    end,
                    rule,
                });
                i = j;
                continue;
            }
        }
        i += 1;
    }
}

// ---------------------------------------------------------------------------------
// Tags

fn tag_hits(text: &str, finished: bool, d: &mut Detection) {
    let lower = text.to_ascii_lowercase();
    let tags: Vec<(String, String, Rule)> = TAGS
        .iter()
        .map(|(name, rule)| (format!("<{name}>"), format!("</{name}>"), *rule))
        .collect();
    let mut i = 0;
    'scan: while let Some(off) = lower[i..].find('<') {
        let p = i + off;
        for (open, close, rule) in &tags {
            if lower[p..].starts_with(open.as_str()) {
                let body = p + open.len();
                match lower[body..].find(close.as_str()) {
                    Some(c) => {
                        let end = body + c + close.len();
                        d.hits.push(Hit {
                            start: p,
                            end,
                            rule: *rule,
                        });
                        i = end;
                    }
                    None if finished => {
                        // A reply cut off inside its reasoning: drop the rest.
                        d.hits.push(Hit {
                            start: p,
                            end: text.len(),
                            rule: *rule,
                        });
                        return;
                    }
                    None => {
                        note_unresolved(d, p, Waiting::Text(close.clone()));
                        return;
                    }
                }
                continue 'scan;
            }
            if lower[p..].starts_with(close.as_str()) {
                // A stray closing tag (the opening one came before the reply).
                d.hits.push(Hit {
                    start: p,
                    end: p + close.len(),
                    rule: *rule,
                });
                i = p + close.len();
                continue 'scan;
            }
        }
        i = p + 1;
    }
}

// ---------------------------------------------------------------------------------
// JSON

enum JsonEnd {
    Found(usize),
    Never,
    /// Not closed yet; the scanner's state at the end of the text.
    Unknown(JsonScan),
}

/// Bracket matching that knows about JSON strings, resumable over more text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct JsonScan {
    depth: usize,
    in_str: bool,
    esc: bool,
}

impl JsonScan {
    /// Reads `bytes`; the offset just past the bracket that closes the first one, if
    /// it is among them.
    fn feed(&mut self, bytes: &[u8]) -> Option<usize> {
        for (i, &b) in bytes.iter().enumerate() {
            if self.in_str {
                if self.esc {
                    self.esc = false;
                } else if b == b'\\' {
                    self.esc = true;
                } else if b == b'"' {
                    self.in_str = false;
                }
                continue;
            }
            match b {
                b'"' => self.in_str = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        return Some(i + 1);
                    }
                }
                _ => {}
            }
        }
        None
    }
}

fn json_end(bytes: &[u8], p: usize, finished: bool) -> JsonEnd {
    let limit = (p + MAX_JSON).min(bytes.len());
    let mut scan = JsonScan::default();
    if let Some(n) = scan.feed(&bytes[p..limit]) {
        return JsonEnd::Found(p + n);
    }
    if finished || bytes.len() >= p + MAX_JSON {
        JsonEnd::Never
    } else {
        JsonEnd::Unknown(scan)
    }
}

fn any_string_is(v: &Value, pred: &dyn Fn(&str) -> bool) -> bool {
    match v {
        Value::String(s) => pred(s),
        Value::Array(a) => a.iter().any(|x| any_string_is(x, pred)),
        Value::Object(o) => o.values().any(|x| any_string_is(x, pred)),
        _ => false,
    }
}

fn has_properties(v: Option<&Value>) -> bool {
    v.and_then(Value::as_object).is_some_and(|o| {
        o.get("properties").is_some_and(Value::is_object) || o.get("type") == Some(&"object".into())
    })
}

fn tool_like(v: &Value, k: &Knowledge) -> bool {
    match v {
        Value::Array(a) => !a.is_empty() && a.iter().all(|x| x.is_object() && tool_like(x, k)),
        Value::Object(o) => {
            if o.get("type").and_then(Value::as_str) == Some("function") {
                return true;
            }
            if o.get("function")
                .and_then(Value::as_object)
                .is_some_and(|f| f.contains_key("name") || f.contains_key("parameters"))
            {
                return true;
            }
            if ["parameters", "input_schema", "inputSchema"]
                .iter()
                .any(|key| has_properties(o.get(*key)))
            {
                return true;
            }
            let named_tool = o
                .get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| k.tool_names.contains(&n.to_lowercase()));
            if named_tool
                && ["description", "parameters", "input_schema", "properties"]
                    .iter()
                    .any(|key| o.contains_key(*key))
            {
                return true;
            }
            if ["tools", "functions"]
                .iter()
                .any(|key| o.get(*key).is_some_and(|t| t.is_array() && tool_like(t, k)))
            {
                return true;
            }
            if k.tool_parameters.iter().any(|p| p == v) {
                return true;
            }
            any_string_is(v, &|s| {
                let s = s.trim().to_ascii_lowercase();
                k.tool_descriptions.iter().any(|(_, d)| *d == s)
            })
        }
        _ => false,
    }
}

/// A bare argument schema, as it follows a tool's name.
fn schema_like(v: &Value) -> bool {
    let Some(o) = v.as_object() else {
        return false;
    };
    if o.get("properties").is_some_and(Value::is_object) || o.get("type") == Some(&"object".into())
    {
        return true;
    }
    !o.is_empty()
        && o.values().all(|x| {
            x.as_object()
                .is_some_and(|p| p.get("type").is_some_and(Value::is_string))
        })
}

fn routing_like(v: &Value, k: &Knowledge) -> bool {
    let Some(o) = v.as_object() else {
        return false;
    };
    if o.is_empty()
        || !o
            .keys()
            .all(|key| ROUTING_JSON_KEYS.contains(&key.as_str()))
    {
        return false;
    }
    let agentish = |x: &Value| match x {
        Value::String(s) => is_agentish(s, k),
        Value::Array(a) => {
            !a.is_empty()
                && a.iter()
                    .all(|s| s.as_str().is_some_and(|s| is_agentish(s, k)))
        }
        _ => false,
    };
    [
        "agent",
        "agents",
        "agent_name",
        "selected_agent",
        "target_agent",
        "next_agent",
        "route",
        "pipeline",
    ]
    .iter()
    .any(|key| o.get(*key).is_some_and(agentish))
        || o.get("routing").is_some_and(|r| routing_like(r, k))
}

/// The start of a `create_task: ` / `` `create_task`( `` prefix ending at `p`, if the line
/// before `p` is exactly a tool name and a separator.
fn tool_name_prefix(text: &str, p: usize, mid_line: bool, k: &Knowledge) -> Option<usize> {
    let ls = line_start(text, p);
    if ls == 0 && mid_line {
        return None;
    }
    let s = strip_decoration(&text[ls..p]);
    let (word, rest) = first_word(s);
    if !k.tool_names.contains(&word.to_lowercase()) {
        return None;
    }
    let rest = rest.trim_start_matches(['`', '*', ' ', '\t']);
    let rest = rest
        .strip_prefix([':', '=', '(', '-', '—', '–'])
        .unwrap_or(rest);
    rest.trim().is_empty().then_some(ls)
}

enum Fence {
    Yes(usize, usize),
    No,
    /// The opener (line starting here) is there; the closer may still come.
    Unknown(usize),
}

/// If `[s, e)` is all a fenced code block holds, the range of the block with its fences.
fn fence_around(text: &str, s: usize, e: usize, finished: bool, mid_line: bool) -> Fence {
    let before = text[..s].trim_end();
    let q = before.len();
    if !text[q..s].contains('\n') {
        return Fence::No;
    }
    let ls = line_start(text, q);
    if ls == 0 && mid_line {
        return Fence::No;
    }
    let opener = text[ls..q].trim_start();
    let Some(lang) = opener.strip_prefix("```") else {
        return Fence::No;
    };
    if !lang
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_+-".contains(c))
    {
        return Fence::No;
    }
    let after = &text[e..];
    let r = e + (after.len() - after.trim_start().len());
    let rest = &text[r..];
    if !text[e..r].contains('\n') {
        // Whitespace (or nothing yet) on the JSON's own line.
        return if rest.is_empty() && !finished {
            Fence::Unknown(ls)
        } else {
            Fence::No
        };
    }
    if rest.len() < 3 {
        return if !finished && "```".starts_with(rest) {
            Fence::Unknown(ls)
        } else {
            Fence::No
        };
    }
    if !rest.starts_with("```") {
        return Fence::No;
    }
    let tail = &rest[3..];
    match tail.find('\n') {
        Some(n) if tail[..n].trim().is_empty() => Fence::Yes(ls, r + 3),
        Some(_) => Fence::No,
        None if tail.trim().is_empty() => {
            if finished {
                Fence::Yes(ls, r + 3)
            } else {
                Fence::Unknown(ls)
            }
        }
        None => Fence::No,
    }
}

fn json_hits(text: &str, finished: bool, mid_line: bool, d: &mut Detection, k: &Knowledge) {
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(off) = text[i..].find(['{', '[']) {
        let p = i + off;
        i = p + 1;
        let next = text[p + 1..].trim_start().as_bytes().first().copied();
        let candidate = match (bytes[p], next) {
            (_, None) if !finished => {
                note_unresolved(d, line_start(text, p), Waiting::NextChar);
                return;
            }
            (b'{', Some(b'"' | b'}')) | (b'[', Some(b'{')) => true,
            _ => false,
        };
        if !candidate {
            continue;
        }
        let end = match json_end(bytes, p, finished) {
            JsonEnd::Found(e) => e,
            JsonEnd::Never => continue,
            JsonEnd::Unknown(scan) => {
                // A tool name before it on the line would be removed with it.
                note_unresolved(d, line_start(text, p), Waiting::Bracket(scan));
                return;
            }
        };
        let Ok(v) = serde_json::from_str::<Value>(&text[p..end]) else {
            continue;
        };
        let prefix = tool_name_prefix(text, p, mid_line, k);
        let rule = if tool_like(&v, k) || (prefix.is_some() && schema_like(&v)) {
            Rule::ToolSchema
        } else if routing_like(&v, k) {
            Rule::RoutingMetadata
        } else {
            continue;
        };
        let mut start = prefix.unwrap_or(p);
        let mut stop = end;
        if prefix.is_some() && text[stop..].starts_with(')') {
            stop += 1;
        }
        match fence_around(text, start, stop, finished, mid_line) {
            Fence::Yes(s, e) => {
                start = s;
                stop = e;
            }
            Fence::No => {}
            Fence::Unknown(opener) => note_unresolved(d, opener, Waiting::Fence),
        }
        d.hits.push(Hit {
            start,
            end: stop,
            rule,
        });
        i = stop;
    }
}

// ---------------------------------------------------------------------------------
// Quoted tool descriptions

fn quoted_description_hits(text: &str, d: &mut Detection, k: &Knowledge) {
    if k.tool_descriptions.is_empty() {
        return;
    }
    let lower = text.to_ascii_lowercase();
    for (_, desc) in &k.tool_descriptions {
        let mut from = 0;
        while let Some(off) = lower[from..].find(desc.as_str()) {
            let a = from + off;
            let b = a + desc.len();
            from = a + 1;
            let Some(open) = prev_char(text, a).filter(|c| QUOTES.contains(c)) else {
                continue;
            };
            let mut e = b;
            if text[e..].starts_with('.') {
                e += 1;
            }
            let Some(close) = next_char(text, e).filter(|c| QUOTES.contains(c)) else {
                continue;
            };
            d.hits.push(Hit {
                start: a - open.len_utf8(),
                end: e + close.len_utf8(),
                rule: Rule::ToolSchema,
            });
        }
    }
}

/// Runs every rule over `text`. `finished`: no more text will come. `mid_line`: the text
/// starts in the middle of a line already judged (a stream window), so its first line
/// is not a line start.
pub(crate) fn detect(text: &str, finished: bool, mid_line: bool, k: &Knowledge) -> Detection {
    let tokens = tokenize(text);
    let mut complete_tokens = tokens.len();
    if !finished
        && let Some(last) = tokens.last()
        && text[last.end..].chars().all(is_apostrophe)
    {
        complete_tokens -= 1;
    }
    let mut d = Detection {
        hits: Vec::new(),
        unresolved: None,
        waiting: None,
        tokens,
        complete_tokens,
    };
    prompt_hits(text, &mut d, k);
    tag_hits(text, finished, &mut d);
    json_hits(text, finished, mid_line, &mut d, k);
    line_hits(text, finished, mid_line, &mut d, k);
    quoted_description_hits(text, &mut d, k);
    d
}
