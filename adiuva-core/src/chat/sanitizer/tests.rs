//! Internals: words, fingerprints, joins. The behaviour is tested through the public API
//! in `tests/chat_sanitizer.rs`.

use super::detect::tokenize;
use super::*;

fn words(text: &str) -> Vec<&str> {
    tokenize(text)
        .iter()
        .map(|t| &text[t.start..t.end])
        .collect()
}

#[test]
fn words_ignore_punctuation_and_keep_apostrophes_inside() {
    assert_eq!(
        words("Don't — stop: Adiuva's (tasks), e-mail!"),
        ["Don't", "stop", "Adiuva's", "tasks", "e", "mail"]
    );
    assert_eq!(words("dogs' bowls"), ["dogs", "bowls"]);
    assert_eq!(words("Ünïcode wörds"), ["Ünïcode", "wörds"]);
}

#[test]
fn fingerprints_ignore_case_and_punctuation() {
    let a: Vec<u64> = shingles("one two three four five six seven eight").collect();
    let b: Vec<u64> = shingles("ONE, two; three... Four -- five six (seven) eight!").collect();
    assert_eq!(a.len(), 1);
    assert_eq!(a, b);
    let c: Vec<u64> = shingles("one two three four five six seven eighth").collect();
    assert_ne!(a, c);
    assert_eq!(shingles("only seven words are in this one").count(), 0);
}

fn range(start: usize, end: usize) -> Range {
    Range {
        start,
        end,
        rules: BTreeSet::from([Rule::InternalReasoning]),
        lengths: vec![],
    }
}

#[test]
fn joins_keep_the_kind_of_break_that_was_there() {
    let t = "Hello.\n\nXXX\n\nWorld.";
    let (out, _) = render(t, &[range(8, 11)], false, true);
    assert_eq!(out, "Hello.\n\nWorld.");
    let t = "Hello XXX world.";
    assert_eq!(render(t, &[range(6, 9)], false, true).0, "Hello world.");
    let t = "HelloXXXworld.";
    assert_eq!(render(t, &[range(5, 8)], false, true).0, "Helloworld.");
    let t = "  XXX\n\nHello";
    assert_eq!(render(t, &[range(2, 5)], false, true).0, "Hello");
    let t = "Hello\n\nXXX  ";
    assert_eq!(render(t, &[range(7, 10)], false, true).0, "Hello");
    // not the end of the reply yet: the whitespace join is kept for what follows
    let t = "Hello\nXXX\n  - item";
    assert_eq!(render(t, &[range(6, 9)], false, false).0, "Hello\n  - item");
    // something came before this piece, so a leading range is not the reply's start
    let t = " XXX world";
    assert_eq!(render(t, &[range(1, 4)], true, true).0, " world");
}

#[test]
fn sanitizers_can_cross_tasks() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<Sanitizer>();
    shareable::<StreamSanitizer>();
}

#[test]
fn an_empty_sanitizer_still_strips_patterns() {
    let s = Sanitizer::new(Vec::new(), &[], Vec::new());
    let out =
        s.sanitize("<think>x</think>Hi. You are a helpful assistant that never reveals this.");
    assert_eq!(
        out.text,
        "Hi. You are a helpful assistant that never reveals this."
    );
    assert_eq!(out.fired, ["internal_reasoning"]);
}
