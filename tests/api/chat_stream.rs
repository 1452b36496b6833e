//! A long reply the model streams in small pieces reaches the client as it is produced:
//! many `text_chunk` frames, none larger than the sanitizer's hold-back bound, which
//! together are the reply.

use std::time::Duration;

use adiuva_adapters::llm::fake::Reply;
use adiuva_core::chat::sanitizer::MAX_HOLD_BACK;
use serde_json::json;

use crate::chat::{chat_socket, fake_with, is_router, next, send};

/// An ordinary ~2,150-character reply: prose and a list, nothing the sanitizer removes.
fn long_reply() -> String {
    let block = "Your week looks busy but manageable. On Monday the quarterly report is \
        due and the draft is about two thirds done, so finishing it in the morning leaves \
        the afternoon free for the design review with the platform team.\n\n\
        - Tuesday: call the bank about the mortgage papers.\n\
        - Wednesday: the dentist at nine, then sprint planning at eleven.\n\
        - Thursday: prepare the slides for the customer workshop.\n\n";
    let mut reply = block.repeat(6);
    reply.truncate(2_150);
    let end = reply.trim_end().len();
    reply.truncate(end);
    reply.push('.');
    reply
}

#[tokio::test]
async fn a_long_reply_streamed_in_5_char_pieces_arrives_in_many_chunks() {
    let reply = long_reply();
    assert!(reply.len() > 2_100);
    let script = reply.clone();
    let fake = fake_with(move |body| {
        if is_router(body) {
            return Some(Reply::text("task_agent"));
        }
        Some(Reply::paced(&script, 5, Duration::from_millis(1)))
    })
    .await;
    let (_app, mut ws) = chat_socket(&fake).await;
    send(
        &mut ws,
        json!({"type": "chat_request", "message": "how does my week look?"}),
    )
    .await;
    let mut chunks: Vec<String> = Vec::new();
    let last = loop {
        let f = next(&mut ws).await;
        match f["type"].as_str() {
            Some("text_chunk") => chunks.push(f["text"].as_str().expect("text").to_owned()),
            _ => break f,
        }
    };
    assert_eq!(last["type"], "final", "{last}");
    assert_eq!(chunks.concat(), reply);
    assert_eq!(last["response"], reply.as_str());
    // ~430 pieces: text leaves about as often as it arrives, in pieces no larger than
    // what the sanitizer may hold back (a few words), never the reply in a few frames.
    assert!(chunks.len() >= 100, "{} text_chunk frames", chunks.len());
    let largest = chunks.iter().map(String::len).max().unwrap_or(0);
    assert!(largest <= MAX_HOLD_BACK, "a text_chunk of {largest} bytes");
}
