//! The one internal request and the one internal event stream (WIRE-4).
//! Everything above the transports speaks only these types.

use serde_json::{Map, Value};

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
}

/// One piece of a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(String),
    /// An image by URL or `data:` URL.
    Image {
        url: String,
    },
    /// A tool call the assistant made earlier.
    ToolCall {
        id: String,
        name: String,
        arguments: String,
    },
    /// The result of a tool call, sent back by the client.
    ToolResult {
        id: String,
        content: String,
        is_error: bool,
    },
    /// Reasoning the assistant produced earlier (kept apart from text).
    Reasoning(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    pub parts: Vec<Part>,
}

impl Message {
    pub fn user(text: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            parts: vec![Part::Text(text.into())],
        }
    }

    pub fn assistant(text: impl Into<String>) -> Self {
        Self {
            role: Role::Assistant,
            parts: vec![Part::Text(text.into())],
        }
    }

    /// All text parts joined.
    pub fn text(&self) -> String {
        self.parts
            .iter()
            .filter_map(|p| match p {
                Part::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolDef {
    pub name: String,
    pub description: Option<String>,
    /// JSON Schema of the arguments.
    pub parameters: Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    Auto,
    None,
    Required,
    Named(String),
}

/// A model call, independent of the wire protocol.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatRequest {
    /// The upstream model id (no provider prefix).
    pub model: String,
    pub system: Option<String>,
    pub messages: Vec<Message>,
    pub tools: Vec<ToolDef>,
    pub tool_choice: Option<ToolChoice>,
    pub max_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub stop: Vec<String>,
    pub reasoning_effort: Option<String>,
    pub stream: bool,
    /// `params.extra_body`: merged into the body last, winning collisions.
    pub extra_body: Map<String, Value>,
}

/// The byte heuristic for one text (see [`ChatRequest::estimate_tokens`]):
/// one pass counting ASCII bytes and the lead bytes of other characters.
pub fn estimate_text(s: &str) -> u64 {
    let (mut ascii, mut other) = (0u64, 0u64);
    for b in s.bytes() {
        ascii += u64::from(b < 0x80);
        other += u64::from(b >= 0xC0);
    }
    ascii.div_ceil(4) + other
}

impl ChatRequest {
    /// A tokenizer-free estimate of the prompt's size in tokens: about four
    /// bytes of ASCII text per token, one token per other character, a few
    /// tokens of framing per message and tool — the usual rule of thumb
    /// for BPE tokenizers on English text and code, not measured against
    /// one here. Used where no server count exists (`count_tokens`, a
    /// session turn whose server reports no usage).
    pub fn estimate_tokens(&self) -> u64 {
        let text = estimate_text;
        let mut n = self.system.as_deref().map_or(0, |s| text(s) + 4);
        for m in &self.messages {
            n += 4;
            for p in &m.parts {
                n += match p {
                    Part::Text(t) | Part::Reasoning(t) => text(t),
                    // Vision models count a tile-based amount per image;
                    // one common tile size is a fair middle.
                    Part::Image { .. } => 765,
                    Part::ToolCall {
                        name, arguments, ..
                    } => text(name) + text(arguments) + 4,
                    Part::ToolResult { content, .. } => text(content) + 4,
                };
            }
        }
        for t in &self.tools {
            n += 8
                + text(&t.name)
                + t.description.as_deref().map_or(0, text)
                + text(&t.parameters.to_string());
        }
        n
    }
}

/// Token counts reported by the server, in one meaning whatever the
/// protocol: `input` is the whole prompt, cache reads and writes included
/// (OpenAI's `prompt_tokens`; Anthropic's `input_tokens` excludes them, so
/// its decoder adds them and its encoder subtracts them); `output` is
/// everything generated, reasoning included; `reasoning` is the part of
/// `output` spent on reasoning, when the server says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
    pub reasoning: u64,
}

impl Usage {
    /// From Anthropic's counts, whose `input_tokens` excludes the tokens
    /// read from and written to the cache.
    pub fn from_anthropic(
        input_tokens: u64,
        output: u64,
        cache_read: u64,
        cache_write: u64,
    ) -> Self {
        Self {
            input: input_tokens
                .saturating_add(cache_read)
                .saturating_add(cache_write),
            output,
            cache_read,
            cache_write,
            reasoning: 0,
        }
    }

    /// Anthropic's `input_tokens`: the prompt neither read from nor
    /// written to the cache.
    pub fn anthropic_input(&self) -> u64 {
        self.input
            .saturating_sub(self.cache_read.saturating_add(self.cache_write))
    }

    /// Prompt plus output.
    pub fn total(&self) -> u64 {
        self.input.saturating_add(self.output)
    }
}

/// Why generation stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    EndTurn,
    MaxTokens,
    ToolUse,
    StopSequence,
    ContentFilter,
    /// A finish reason the server reported that has no mapping.
    Other(String),
}

impl StopReason {
    pub fn as_str(&self) -> &str {
        match self {
            StopReason::EndTurn => "end_turn",
            StopReason::MaxTokens => "max_tokens",
            StopReason::ToolUse => "tool_use",
            StopReason::StopSequence => "stop_sequence",
            StopReason::ContentFilter => "content_filter",
            StopReason::Other(s) => s,
        }
    }
}

/// The internal event stream: what every transport produces.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    TextDelta(String),
    ReasoningDelta(String),
    ToolCallStart {
        index: usize,
        id: String,
        name: String,
    },
    ToolCallDelta {
        index: usize,
        arguments: String,
    },
    ToolCallEnd {
        index: usize,
    },
    Usage(Usage),
    Stop(StopReason),
}

/// A finished tool call, reassembled from its fragments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// Everything a call produced, aggregated from its events.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Collected {
    pub text: String,
    pub reasoning: String,
    pub tool_calls: Vec<ToolCall>,
    pub usage: Option<Usage>,
    pub stop: Option<StopReason>,
}

impl Collected {
    pub fn apply(&mut self, ev: &Event) {
        match ev {
            Event::TextDelta(t) => self.text.push_str(t),
            Event::ReasoningDelta(r) => self.reasoning.push_str(r),
            Event::ToolCallStart { index, id, name } => {
                while self.tool_calls.len() <= *index {
                    self.tool_calls.push(ToolCall {
                        id: String::new(),
                        name: String::new(),
                        arguments: String::new(),
                    });
                }
                self.tool_calls[*index].id = id.clone();
                self.tool_calls[*index].name = name.clone();
            }
            Event::ToolCallDelta { index, arguments } => {
                if let Some(c) = self.tool_calls.get_mut(*index) {
                    c.arguments.push_str(arguments);
                }
            }
            Event::ToolCallEnd { .. } => {}
            Event::Usage(u) => self.usage = Some(*u),
            Event::Stop(s) => self.stop = Some(s.clone()),
        }
    }
}
