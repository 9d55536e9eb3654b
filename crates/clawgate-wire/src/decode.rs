//! What every protocol decoder shares: routing text through the `<think>`
//! splitter, numbering tool calls, and the decoder interface the client
//! drives.

use std::collections::HashMap;

use serde_json::Value;

use crate::error::{WireError, WireErrorKind};
use crate::sse::SseEvent;
use crate::think::{Segment, ThinkSplitter};
use crate::types::{Event, StopReason, Usage};

/// A protocol's response decoder.
pub trait Decoder: Send {
    /// One SSE event of a streamed response.
    fn on_sse(&mut self, ev: &SseEvent, out: &mut Vec<Event>) -> Result<(), WireError>;
    /// The whole body of a non-streamed response.
    fn on_body(&mut self, body: &Value, out: &mut Vec<Event>) -> Result<(), WireError>;
    /// A typed fast path for the raw body; `None` sends it through
    /// [`Decoder::on_body`] (the default, and whenever the types do not
    /// fit).
    fn on_body_bytes(
        &mut self,
        _body: &[u8],
        _out: &mut Vec<Event>,
    ) -> Option<Result<(), WireError>> {
        None
    }
    /// The stream ended; flush, or report a truncated stream.
    fn on_end(&mut self, out: &mut Vec<Event>) -> Result<(), WireError>;
}

/// Shared state: text/reasoning separation, tool-call numbering, usage and
/// the stop reason held until the end.
#[derive(Default)]
pub struct Common {
    think: ThinkSplitter,
    segs: Vec<Segment>,
    tools: HashMap<String, usize>,
    open_tools: Vec<usize>,
    pub usage: Option<Usage>,
    pub stop: Option<StopReason>,
    pub finished: bool,
}

impl Common {
    pub fn text(&mut self, delta: &str, out: &mut Vec<Event>) {
        if delta.is_empty() {
            return;
        }
        self.think.push(delta, &mut self.segs);
        self.drain(out);
    }

    pub fn reasoning(&mut self, delta: &str, out: &mut Vec<Event>) {
        if !delta.is_empty() {
            out.push(Event::ReasoningDelta(delta.to_string()));
        }
    }

    fn drain(&mut self, out: &mut Vec<Event>) {
        for s in self.segs.drain(..) {
            out.push(match s {
                Segment::Text(t) => Event::TextDelta(t),
                Segment::Reasoning(r) => Event::ReasoningDelta(r),
            });
        }
    }

    /// Our index for a server-side tool key, if already started.
    pub fn tool_index(&self, key: &str) -> Option<usize> {
        self.tools.get(key).copied()
    }

    pub fn tool_start(&mut self, key: &str, id: &str, name: &str, out: &mut Vec<Event>) -> usize {
        if let Some(i) = self.tools.get(key) {
            return *i;
        }
        let index = self.tools.len();
        self.tools.insert(key.to_string(), index);
        self.open_tools.push(index);
        out.push(Event::ToolCallStart {
            index,
            id: id.to_string(),
            name: name.to_string(),
        });
        index
    }

    pub fn tool_args(&mut self, index: usize, delta: &str, out: &mut Vec<Event>) {
        if !delta.is_empty() {
            out.push(Event::ToolCallDelta {
                index,
                arguments: delta.to_string(),
            });
        }
    }

    pub fn tool_end(&mut self, index: usize, out: &mut Vec<Event>) {
        if let Some(pos) = self.open_tools.iter().position(|i| *i == index) {
            self.open_tools.remove(pos);
            out.push(Event::ToolCallEnd { index });
        }
    }

    pub fn has_tools(&self) -> bool {
        !self.tools.is_empty()
    }

    /// Closes everything and emits usage and the stop reason.
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        self.think.finish(&mut self.segs);
        self.drain(out);
        for index in std::mem::take(&mut self.open_tools) {
            out.push(Event::ToolCallEnd { index });
        }
        if let Some(u) = self.usage.take() {
            out.push(Event::Usage(u));
        }
        let stop = self.stop.take().unwrap_or(if self.has_tools() {
            StopReason::ToolUse
        } else {
            StopReason::EndTurn
        });
        out.push(Event::Stop(stop));
    }
}

pub fn u64_at(v: &Value, path: &[&str]) -> u64 {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(x) => cur = x,
            None => return 0,
        }
    }
    cur.as_u64().unwrap_or(0)
}

pub fn str_at<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

pub fn parse_json(data: &str) -> Result<Value, WireError> {
    serde_json::from_str(data).map_err(|e| {
        WireError::new(
            WireErrorKind::Malformed,
            format!("invalid JSON in stream: {e}"),
        )
    })
}

/// An `{"error": {...}}` object inside a stream or body.
pub fn stream_error(v: &Value) -> Option<WireError> {
    let err = v.get("error")?;
    if err.is_null() {
        return None;
    }
    let mut e = WireError::new(WireErrorKind::StreamError, "");
    match err {
        Value::String(s) => e.message = s.clone(),
        obj => {
            e.error_type = obj.get("type").and_then(Value::as_str).map(str::to_string);
            e.code = obj.get("code").map(|c| match c {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            });
            e.message = str_at(obj, "message").to_string();
        }
    }
    Some(e)
}
