//! Reading a streamed chat completion: server-sent events ([`SseParser`]) into chunk
//! payloads, payloads into [`StreamEvent`]s ([`ChunkDecoder`]), driven over the response
//! body by [`StreamState`].

use std::collections::VecDeque;

use adiuva_core::ports::llm::{LlmError, StreamEvent};
use bytes::Bytes;
use futures::StreamExt as _;
use futures::stream::BoxStream;

use super::is_context_length_error;
use super::wire::WireChunk;
use crate::http::{message_of, shorten};

/// Longest SSE line we buffer; a provider that never sends a newline is not speaking SSE.
const MAX_SSE_LINE: usize = 16 * 1024 * 1024;

/// Splits an SSE byte stream into the `data` payloads of its events. Bytes are buffered
/// until a whole line is there, so lines (and UTF-8 characters) split across chunks are
/// put back together; `\n` and `\r\n` line ends are accepted.
#[derive(Default)]
pub(crate) struct SseParser {
    line: Vec<u8>,
    data: String,
    has_data: bool,
}

impl SseParser {
    /// Feeds one network chunk; appends the payloads of events it completes to `out`.
    pub(crate) fn feed(&mut self, mut chunk: &[u8], out: &mut Vec<String>) -> Result<(), LlmError> {
        while let Some(pos) = chunk.iter().position(|b| *b == b'\n') {
            self.line.extend_from_slice(&chunk[..pos]);
            chunk = &chunk[pos + 1..];
            let line = std::mem::take(&mut self.line);
            self.line_done(&line, out);
        }
        self.line.extend_from_slice(chunk);
        if self.line.len() > MAX_SSE_LINE {
            return Err(LlmError::Protocol(
                "the event stream sent an over-long line".into(),
            ));
        }
        Ok(())
    }

    /// The end of the stream: an event not followed by a blank line still counts.
    pub(crate) fn finish(&mut self, out: &mut Vec<String>) {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.line_done(&line, out);
        }
        if self.has_data {
            self.has_data = false;
            out.push(std::mem::take(&mut self.data));
        }
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<String>) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            if self.has_data {
                self.has_data = false;
                out.push(std::mem::take(&mut self.data));
            }
            return;
        }
        if line.starts_with(b":") {
            // A comment (some providers send keep-alives like `: PROCESSING`).
            return;
        }
        let (field, value) = match line.iter().position(|b| *b == b':') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (line, &[][..]),
        };
        if field == b"data" {
            let value = value.strip_prefix(b" ").unwrap_or(value);
            if self.has_data {
                self.data.push('\n');
            }
            self.data.push_str(&String::from_utf8_lossy(value));
            self.has_data = true;
        }
    }
}

/// Turns the payloads of a chat-completion stream into [`StreamEvent`]s.
#[derive(Default)]
pub(super) struct ChunkDecoder {
    /// `[DONE]` arrived, or an error ended the stream.
    done: bool,
    /// A `finish_reason` arrived: a stream closed after it without `[DONE]` is complete
    /// (some local servers omit `[DONE]`).
    finished: bool,
}

impl ChunkDecoder {
    pub(super) fn payload(
        &mut self,
        payload: &str,
        out: &mut VecDeque<Result<StreamEvent, LlmError>>,
    ) {
        if self.done {
            return;
        }
        if payload.trim() == "[DONE]" {
            self.done = true;
            return;
        }
        let chunk: WireChunk = match serde_json::from_str(payload) {
            Ok(c) => c,
            Err(e) => {
                self.done = true;
                out.push_back(Err(LlmError::Protocol(format!(
                    "a stream event could not be read: {e}"
                ))));
                return;
            }
        };
        if let Some(error) = chunk.error {
            self.done = true;
            let wrapped = serde_json::json!({ "error": error });
            let message = message_of(&wrapped).unwrap_or_else(|| "(no message)".into());
            let message = format!(
                "the provider ended the stream with an error: {}",
                shorten(message)
            );
            out.push_back(Err(
                if is_context_length_error(wrapped.to_string().as_bytes()) {
                    LlmError::ContextLengthExceeded(message)
                } else {
                    LlmError::Unavailable(message)
                },
            ));
            return;
        }
        let Some(choice) = chunk.choices.into_iter().next() else {
            // Usage-only or keep-alive chunks carry no choice.
            return;
        };
        if choice.finish_reason.is_some() {
            self.finished = true;
        }
        let Some(delta) = choice.delta else { return };
        if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
            out.push_back(Ok(StreamEvent::Text(text)));
        }
        for (position, call) in delta.tool_calls.unwrap_or_default().into_iter().enumerate() {
            let (name, arguments) = match call.function {
                Some(f) => (f.name, f.arguments),
                None => (None, None),
            };
            out.push_back(Ok(StreamEvent::ToolCallDelta {
                index: call.index.unwrap_or(position),
                id: call.id.filter(|s| !s.is_empty()),
                name: name.filter(|s| !s.is_empty()),
                arguments: arguments.unwrap_or_default(),
            }));
        }
    }
}

pub(super) struct StreamState {
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    parser: SseParser,
    decoder: ChunkDecoder,
    pending: VecDeque<Result<StreamEvent, LlmError>>,
    /// Nothing more will be read.
    ended: bool,
    /// For error messages (no key in it).
    base: String,
}

impl StreamState {
    /// Reads `body`, a chat-completion event stream from `base` (named in errors).
    pub(super) fn new(body: BoxStream<'static, reqwest::Result<Bytes>>, base: String) -> Self {
        Self {
            body,
            parser: SseParser::default(),
            decoder: ChunkDecoder::default(),
            pending: VecDeque::new(),
            ended: false,
            base,
        }
    }

    fn absorb(&mut self, payloads: Vec<String>) {
        for p in payloads {
            self.decoder.payload(&p, &mut self.pending);
        }
        if self.decoder.done {
            self.ended = true;
        }
    }

    pub(super) async fn next(mut self) -> Option<(Result<StreamEvent, LlmError>, Self)> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some((event, self));
            }
            if self.ended {
                return None;
            }
            let mut payloads = Vec::new();
            match self.body.next().await {
                Some(Ok(bytes)) => {
                    if let Err(e) = self.parser.feed(&bytes, &mut payloads) {
                        self.pending.push_back(Err(e));
                        self.ended = true;
                        continue;
                    }
                    self.absorb(payloads);
                }
                Some(Err(e)) => {
                    let why = if e.is_timeout() {
                        "the provider went silent".to_owned()
                    } else {
                        // Body errors carry no request headers, hence no key.
                        e.to_string()
                    };
                    self.pending.push_back(Err(LlmError::Unavailable(format!(
                        "the stream from {} broke off: {why}",
                        self.base
                    ))));
                    self.ended = true;
                }
                None => {
                    self.parser.finish(&mut payloads);
                    self.absorb(payloads);
                    if !self.decoder.done && !self.decoder.finished {
                        self.pending.push_back(Err(LlmError::Unavailable(format!(
                            "the stream from {} ended before the reply was complete",
                            self.base
                        ))));
                    }
                    self.ended = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"héllo \"}}]}\n\n\
        : keep-alive\n\n\
        data: {\"choices\":[{\"delta\":{\"content\":\"wörld\"}}]}\r\n\r\n\
        data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c1\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]}}]}\n\n\
        data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"a\\\":1}\"}}]}}]}\n\n\
        data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n\
        data: [DONE]\n\n";

    fn payloads(pieces: &[&[u8]]) -> Vec<String> {
        let mut parser = SseParser::default();
        let mut out = Vec::new();
        for p in pieces {
            parser.feed(p, &mut out).expect("feed");
        }
        parser.finish(&mut out);
        out
    }

    #[test]
    fn sse_payloads_are_the_same_however_the_bytes_are_split() {
        let whole = payloads(&[BODY.as_bytes()]);
        assert_eq!(whole.len(), 6);
        assert_eq!(whole[5], "[DONE]");
        assert!(whole[0].contains("héllo"));
        let bytes = BODY.as_bytes();
        // Every single cut (including inside the two-byte characters and `\r\n`).
        for cut in 0..=bytes.len() {
            assert_eq!(
                payloads(&[&bytes[..cut], &bytes[cut..]]),
                whole,
                "cut at {cut}"
            );
        }
        // Byte by byte.
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(payloads(&singles), whole);
    }

    #[test]
    fn multi_line_data_and_a_missing_final_blank_line() {
        let out = payloads(&[b"event: x\ndata: a\ndata: b\n\ndata:c"]);
        assert_eq!(out, vec!["a\nb".to_owned(), "c".to_owned()]);
    }

    #[test]
    fn chunks_decode_to_events_and_stop_at_done() {
        let mut decoder = ChunkDecoder::default();
        let mut events = VecDeque::new();
        for p in payloads(&[BODY.as_bytes()]) {
            decoder.payload(&p, &mut events);
        }
        decoder.payload(
            "{\"choices\":[{\"delta\":{\"content\":\"late\"}}]}",
            &mut events,
        );
        let events: Vec<StreamEvent> = events.into_iter().map(|e| e.expect("event")).collect();
        assert_eq!(
            events,
            vec![
                StreamEvent::Text("héllo ".into()),
                StreamEvent::Text("wörld".into()),
                StreamEvent::ToolCallDelta {
                    index: 0,
                    id: Some("c1".into()),
                    name: Some("f".into()),
                    arguments: String::new()
                },
                StreamEvent::ToolCallDelta {
                    index: 0,
                    id: None,
                    name: None,
                    arguments: "{\"a\":1}".into()
                },
            ]
        );
        assert!(decoder.done && decoder.finished);
    }

    #[test]
    fn an_error_event_ends_the_stream() {
        let mut decoder = ChunkDecoder::default();
        let mut events = VecDeque::new();
        decoder.payload(
            "{\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}",
            &mut events,
        );
        assert!(decoder.done);
        match events.pop_front() {
            Some(Err(LlmError::Unavailable(m))) => assert!(m.contains("overloaded"), "{m}"),
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }

    fn state_over(pieces: Vec<&'static str>) -> StreamState {
        StreamState {
            body: futures::stream::iter(pieces.into_iter().map(|p| Ok(Bytes::from(p)))).boxed(),
            parser: SseParser::default(),
            decoder: ChunkDecoder::default(),
            pending: VecDeque::new(),
            ended: false,
            base: "http://x/v1".into(),
        }
    }

    async fn drain(state: StreamState) -> Vec<Result<StreamEvent, LlmError>> {
        futures::stream::unfold(state, StreamState::next)
            .collect()
            .await
    }

    #[tokio::test]
    async fn a_stream_cut_off_before_done_ends_with_an_error() {
        let events = drain(state_over(vec![
            "data: {\"choices\":[{\"delta\":{\"content\":\"par",
            "tial\"}}]}\n\n",
        ]))
        .await;
        assert!(matches!(&events[0], Ok(StreamEvent::Text(t)) if t == "partial"));
        assert!(
            matches!(&events[1], Err(LlmError::Unavailable(_))),
            "{events:?}"
        );
        assert_eq!(events.len(), 2);
    }

    #[tokio::test]
    async fn a_stream_with_a_finish_reason_but_no_done_is_complete() {
        let events = drain(state_over(vec![
            "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"},\"finish_reason\":\"stop\"}]}",
        ]))
        .await;
        assert_eq!(events.len(), 1);
        assert!(matches!(&events[0], Ok(StreamEvent::Text(t)) if t == "hi"));
    }

    #[test]
    fn a_context_overflow_inside_a_stream_is_not_unavailable() {
        let mut decoder = ChunkDecoder::default();
        let mut events = VecDeque::new();
        decoder.payload(
            r#"{"error":{"code":500,"message":"Context size has been exceeded.","type":"exceed_context_size_error"}}"#,
            &mut events,
        );
        assert!(matches!(
            events.pop_front(),
            Some(Err(LlmError::ContextLengthExceeded(_)))
        ));
    }
}
