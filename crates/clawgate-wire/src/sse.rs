//! An incremental Server-Sent Events parser.
//!
//! Upstream bytes arrive in arbitrary chunks: a frame, a line, a field name
//! or a UTF-8 character may be cut anywhere. The parser buffers only the
//! current incomplete line, accepts LF, CRLF and lone CR line endings,
//! joins multi-line `data:` fields, ignores comment (keep-alive) lines, and
//! tells a cleanly finished stream from one cut mid-frame.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field, when present.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    pub id: Option<String>,
}

impl SseEvent {
    /// The OpenAI-style end-of-stream sentinel.
    pub fn is_done(&self) -> bool {
        self.data == "[DONE]"
    }
}

/// How a stream ended badly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// The connection closed in the middle of a line: the last event is
    /// incomplete and must not be taken as the end of the answer.
    #[error("stream closed mid-frame ({partial_bytes} bytes of an unterminated line)")]
    Truncated { partial_bytes: usize },
}

#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    /// The previous chunk ended on `\r`: a leading `\n` is its pair.
    after_cr: bool,
    started: bool,
    data: String,
    has_data: bool,
    event: Option<String>,
    id: Option<String>,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds a chunk; complete events are appended to `out` in order.
    pub fn push(&mut self, mut chunk: &[u8], out: &mut Vec<SseEvent>) {
        if chunk.is_empty() {
            return;
        }
        if self.after_cr {
            self.after_cr = false;
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
        }
        while let Some(pos) = chunk.iter().position(|b| *b == b'\n' || *b == b'\r') {
            self.line.extend_from_slice(&chunk[..pos]);
            let is_cr = chunk[pos] == b'\r';
            chunk = &chunk[pos + 1..];
            if is_cr {
                match chunk.first() {
                    Some(b'\n') => chunk = &chunk[1..],
                    None => self.after_cr = true,
                    _ => {}
                }
            }
            let line = std::mem::take(&mut self.line);
            self.line(&line, out);
        }
        self.line.extend_from_slice(chunk);
    }

    /// Ends the stream. A last event without its blank line is dispatched;
    /// an unterminated line is an error, except a bare `data: [DONE]`.
    pub fn finish(&mut self) -> Result<Option<SseEvent>, SseError> {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            let text = String::from_utf8_lossy(&line);
            let done = matches!(text.trim_end(), "data: [DONE]" | "data:[DONE]");
            if !done {
                return Err(SseError::Truncated {
                    partial_bytes: line.len(),
                });
            }
            let mut out = Vec::new();
            self.line(&line, &mut out);
        }
        Ok(self.dispatch())
    }

    fn line(&mut self, raw: &[u8], out: &mut Vec<SseEvent>) {
        let mut raw = raw;
        if !self.started {
            self.started = true;
            if let Some(rest) = raw.strip_prefix(b"\xEF\xBB\xBF") {
                raw = rest;
            }
        }
        if raw.is_empty() {
            if let Some(ev) = self.dispatch() {
                out.push(ev);
            }
            return;
        }
        if raw[0] == b':' {
            return; // comment / keep-alive
        }
        let line = String::from_utf8_lossy(raw);
        let (field, value) = match line.find(':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (line.as_ref(), ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.event = Some(value.to_string()),
            "id" if !value.contains('\0') => self.id = Some(value.to_string()),
            _ => {} // `retry` and unknown fields are ignored, as the spec says
        }
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = self.event.take();
        if !self.has_data {
            return None;
        }
        self.has_data = false;
        Some(SseEvent {
            event,
            data: std::mem::take(&mut self.data),
            id: self.id.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_chunks(chunks: &[&[u8]]) -> (Vec<SseEvent>, Result<Option<SseEvent>, SseError>) {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for c in chunks {
            p.push(c, &mut out);
        }
        let end = p.finish();
        (out, end)
    }

    /// Every way of cutting `input` in two gives the same events.
    fn all_splits(input: &[u8]) -> Vec<SseEvent> {
        let (whole, end) = parse_chunks(&[input]);
        let mut whole = whole;
        whole.extend(end.unwrap());
        for i in 0..=input.len() {
            for j in i..=input.len() {
                let (mut got, end) = parse_chunks(&[&input[..i], &input[i..j], &input[j..]]);
                got.extend(end.unwrap());
                assert_eq!(got, whole, "split at {i},{j}");
            }
        }
        whole
    }

    #[test]
    fn lf_crlf_cr_and_multiline_data() {
        let input = "event: response.output_text.delta\r\ndata: {\"a\":1}\r\n\r\n: keep-alive\n\ndata: line1\ndata: line2\n\ndata:x\rdata: y\r\r";
        let evs = all_splits(input.as_bytes());
        assert_eq!(evs.len(), 3);
        assert_eq!(evs[0].event.as_deref(), Some("response.output_text.delta"));
        assert_eq!(evs[0].data, "{\"a\":1}");
        assert_eq!(evs[1].data, "line1\nline2");
        assert_eq!(
            evs[1].event, None,
            "event type does not leak into the next frame"
        );
        assert_eq!(evs[2].data, "x\ny");
    }

    #[test]
    fn utf8_split_inside_a_character() {
        let input = "data: {\"t\":\"héllo 🦀 wörld\"}\n\n".as_bytes();
        let evs = all_splits(input);
        assert_eq!(evs[0].data, "{\"t\":\"héllo 🦀 wörld\"}");
    }

    #[test]
    fn last_frame_without_blank_line_is_kept() {
        let (evs, end) = parse_chunks(&[b"data: one\n\ndata: two\n"]);
        assert_eq!(evs.len(), 1);
        assert_eq!(end.unwrap().unwrap().data, "two");
    }

    #[test]
    fn done_sentinel_even_without_newline() {
        let (evs, end) = parse_chunks(&[b"data: {}\n\ndata: [DONE]"]);
        assert_eq!(evs.len(), 1);
        assert!(end.unwrap().unwrap().is_done());
    }

    #[test]
    fn cut_mid_frame_is_an_error() {
        let (evs, end) = parse_chunks(&[b"data: {\"a\":1}\n\ndata: {\"choices\":[{\"del"]);
        assert_eq!(evs.len(), 1);
        assert_eq!(end, Err(SseError::Truncated { partial_bytes: 23 }));
    }

    #[test]
    fn bom_and_empty_data_and_unknown_fields() {
        let (evs, end) =
            parse_chunks(&[b"\xEF\xBB\xBFdata\nretry: 10\nfoo: bar\n\nevent: ping\n\n"]);
        assert_eq!(evs, vec![SseEvent::default()]);
        assert_eq!(end, Ok(None), "an event line alone dispatches nothing");
    }
}
