//! Context budgeting (CTX-2): the window a turn is measured against, the
//! two checks — the window guard (one warning per model whose window is
//! small) and the per-turn room check (the prompt plus the answer's
//! reserve must fit the window) — and token counts that learn: a model's
//! bytes per token, from the server's own counts of earlier prompts.

use std::collections::HashSet;
use std::sync::Mutex;

use clawgate_catalog::{ContextSource, Registry, Resolved};
use clawgate_store::{Entry, EntryKind};
use clawgate_wire::{estimate_text, ChatRequest, Message, Part};

/// The window a turn is budgeted against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub tokens: u64,
    /// Where the number comes from (`config:contextTokens`, `catalog`, …).
    pub source: &'static str,
    /// The model it belongs to.
    pub reference: String,
    /// The model's own window (`contextWindow` or the catalog's), what the
    /// guard's 20 % is taken of.
    pub native: u64,
}

/// The warning line of the window guard: max(8 000, 20 % of the native
/// window), as OpenClaw's guard has it.
pub const WARN_FLOOR: u64 = 8_000;

/// Models the window guard warned about in this process (bounded: refs
/// come from the config).
static WARNED: Mutex<Option<HashSet<String>>> = Mutex::new(None);
const MAX_WARNED: usize = 4_096;

impl Window {
    /// The effective window of `model` for `agent`: the model's
    /// `contextTokens`, else its `contextWindow` (or the catalog's); what
    /// the server really serves (LOC-3) when it is smaller or nothing was
    /// configured; capped by the agent's own legacy `contextTokens` when
    /// that is smaller.
    pub fn of(
        registry: &Registry,
        runner: &clawgate_router::Runner,
        agent: Option<&str>,
        model: &Resolved,
    ) -> Self {
        let (mut tokens, src) = model.model.effective_context();
        let mut source = src.as_str();
        let native = model.model.context_window.unwrap_or(tokens);
        let served = runner.served_context(&model.model.provider, &model.model.id);
        if let Some(real) = served.filter(|r| *r < tokens || src == ContextSource::Assumed) {
            tokens = real;
            source = "server";
        }
        let agents = &registry.config.agents;
        let cap = agent
            .and_then(|a| agents.entries.get(a))
            .and_then(|a| a.context_tokens)
            .or(agents.defaults.context_tokens);
        if let Some(cap) = cap.filter(|c| *c < tokens) {
            tokens = cap;
            source = "config:agents.contextTokens";
        }
        Self {
            tokens,
            source,
            reference: model.reference().to_string(),
            native: native.max(tokens),
        }
    }

    /// The window guard's line: a window under it works, with a warning.
    pub fn warn_line(&self) -> u64 {
        (self.native / 5).max(WARN_FLOOR)
    }

    /// The window guard (CTX-2): a warning the first time in this process
    /// a model with a window under [`Window::warn_line`] is used, never a
    /// refusal.
    pub fn guard_once(&self) -> Option<String> {
        if self.tokens >= self.warn_line() {
            return None;
        }
        let mut warned = WARNED.lock().unwrap_or_else(|p| p.into_inner());
        let set = warned.get_or_insert_with(HashSet::new);
        if set.contains(&self.reference) {
            return None;
        }
        if set.len() >= MAX_WARNED {
            set.clear();
        }
        set.insert(self.reference.clone());
        Some(format!(
            "context: low context window: {} ctx={} (warn<{}) source={}; the session is kept by compacting often, and local/self-hosted runs work best at {}+ tokens",
            self.reference,
            self.tokens,
            self.warn_line(),
            self.source,
            self.warn_line()
        ))
    }
}

/// Servers (by base URL) that answered no token count: not asked again
/// in this process (bounded: URLs come from the config).
static NO_TOKENIZER: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// Whether `base_url`'s server is known to have no tokenizer endpoint.
pub fn no_tokenizer(base_url: &str) -> bool {
    NO_TOKENIZER
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .is_some_and(|s| s.contains(base_url))
}

pub fn remember_no_tokenizer(base_url: &str) {
    let mut guard = NO_TOKENIZER.lock().unwrap_or_else(|p| p.into_inner());
    let set = guard.get_or_insert_with(HashSet::new);
    if set.len() >= MAX_WARNED {
        set.clear();
    }
    set.insert(base_url.to_string());
}

/// What the answer needs left free in the window (CTX-2): the request's
/// output cap (within the model's `maxTokens`), and
/// `compaction.reserveTokens` / `reserveTokensFloor` when set — capped
/// against the window so a small model is not full from its first token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserve {
    pub tokens: u64,
    /// What decided it, for messages.
    pub why: String,
}

impl Reserve {
    /// `asked`: the request's `max_tokens`; `model_cap`: the model's
    /// `maxTokens`; `configured`: `max(reserveTokens, reserveTokensFloor)`
    /// when either is set.
    pub fn of(
        window: &Window,
        asked: Option<u64>,
        model_cap: u64,
        configured: Option<u64>,
    ) -> Self {
        let answer = asked.unwrap_or(model_cap).min(model_cap);
        // The answer's own cap keeps a quarter of the window at most when
        // the client did not ask for it (a model's default maxTokens of
        // 8 192 would otherwise fill a 4 096 window), half when it did.
        let answer_cap = if asked.is_some() {
            window.tokens / 2
        } else {
            window.tokens / 4
        };
        let answer_part = answer.min(answer_cap);
        let configured_part = configured.map(|c| c.min(window.tokens / 2)).unwrap_or(0);
        let (tokens, why) = if configured_part > answer_part {
            (configured_part, "compaction.reserveTokens".to_string())
        } else if asked.is_some() {
            (answer_part, format!("the request's max_tokens {answer}"))
        } else {
            (
                answer_part,
                format!("{}'s maxTokens {model_cap}", window.reference),
            )
        };
        Self { tokens, why }
    }
}

/// Tokens for text, by a model's learned bytes per token or, until the
/// server has counted a prompt, the byte heuristic.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Tokens {
    /// Learned from the server's counts (CTX-2); `None`: the heuristic.
    pub bytes_per_token: Option<f64>,
}

/// The learned ratio's bounds: no tokenizer makes less than a quarter
/// byte or more than 16 bytes a token; a sample outside is noise.
const RATIO_MIN: f64 = 0.25;
const RATIO_MAX: f64 = 16.0;

impl Tokens {
    pub fn learned(bytes_per_token: Option<f64>) -> Self {
        Self {
            bytes_per_token: bytes_per_token.map(|r| r.clamp(RATIO_MIN, RATIO_MAX)),
        }
    }

    /// Whether the figures are calibrated on the server's counts.
    pub fn calibrated(&self) -> bool {
        self.bytes_per_token.is_some()
    }

    /// Tokens for `n` bytes of ASCII text (a tool's JSON schema).
    fn bytes(&self, n: usize) -> u64 {
        match self.bytes_per_token {
            Some(r) => (n as f64 / r).ceil() as u64,
            None => (n as u64).div_ceil(4),
        }
    }

    pub fn text(&self, s: &str) -> u64 {
        match self.bytes_per_token {
            Some(r) => (s.len() as f64 / r).ceil() as u64,
            None => estimate_text(s),
        }
    }

    /// One stored entry's share of a prompt.
    pub fn entry(&self, e: &Entry) -> u64 {
        match e.kind {
            EntryKind::Notice => 0,
            EntryKind::Image => IMAGE_TOKENS,
            EntryKind::ToolCall => {
                self.text(&e.text) + e.tool_name.as_deref().map_or(0, |n| self.text(n)) + 8
            }
            _ => self.text(&e.text) + PER_MESSAGE,
        }
    }

    /// The messages' share of a prompt.
    pub fn messages(&self, messages: &[Message]) -> u64 {
        messages
            .iter()
            .map(|m| {
                PER_MESSAGE
                    + m.parts
                        .iter()
                        .map(|p| match p {
                            Part::Text(t) | Part::Reasoning(t) => self.text(t),
                            Part::Image { .. } => IMAGE_TOKENS,
                            Part::ToolCall {
                                name, arguments, ..
                            } => self.text(name) + self.text(arguments) + PER_PART,
                            Part::ToolResult { content, .. } => self.text(content) + PER_PART,
                        })
                        .sum::<u64>()
            })
            .sum()
    }

    /// A whole request: system prompt, messages and tools.
    pub fn request(&self, r: &ChatRequest) -> u64 {
        let system = r
            .system
            .as_deref()
            .map_or(0, |s| self.text(s) + PER_MESSAGE);
        let tools: u64 = r
            .tools
            .iter()
            .map(|t| {
                PER_TOOL
                    + self.text(&t.name)
                    + t.description.as_deref().map_or(0, |d| self.text(d))
                    + self.bytes(json_len(&t.parameters))
            })
            .sum();
        system + self.messages(&r.messages) + tools
    }
}

/// The length of a JSON value as sent, counted without building the
/// text (a client's tools are measured on every turn).
pub fn json_len(v: &serde_json::Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    match serde_json::to_writer(&mut c, v) {
        Ok(()) => c.0,
        Err(_) => 0,
    }
}

const PER_MESSAGE: u64 = 4;
const PER_PART: u64 = 4;
const PER_TOOL: u64 = 8;
const IMAGE_TOKENS: u64 = 765;

/// The shape of a prompt for calibration: its text bytes and the tokens
/// of its framing (per message, tool and image), which a ratio of text
/// must not absorb.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Shape {
    pub bytes: u64,
    pub framing: u64,
    /// Images in it: a server's count of those is no guide to text.
    pub images: u64,
}

/// Prompts smaller than this teach nothing about a tokenizer (a chat
/// template's fixed tokens would pass for text): a client cannot skew a
/// model's ratio with a run of tiny requests.
pub const MIN_SAMPLE_BYTES: u64 = 256;

/// The text of a prompt as a tokenizer sees it: every text the shape
/// counts, one after the other.
pub fn prompt_text(r: &ChatRequest) -> String {
    let mut out = String::with_capacity(Shape::of(r).bytes as usize);
    if let Some(sys) = &r.system {
        out.push_str(sys);
    }
    for m in &r.messages {
        for p in &m.parts {
            match p {
                Part::Text(t) | Part::Reasoning(t) => out.push_str(t),
                Part::Image { .. } => {}
                Part::ToolCall {
                    name, arguments, ..
                } => {
                    out.push_str(name);
                    out.push_str(arguments);
                }
                Part::ToolResult { content, .. } => out.push_str(content),
            }
        }
    }
    for t in &r.tools {
        out.push_str(&t.name);
        out.push_str(t.description.as_deref().unwrap_or(""));
        out.push_str(&t.parameters.to_string());
    }
    out
}

impl Shape {
    pub fn of(r: &ChatRequest) -> Self {
        let mut s = Shape::default();
        if let Some(sys) = &r.system {
            s.bytes += sys.len() as u64;
            s.framing += PER_MESSAGE;
        }
        for m in &r.messages {
            s.framing += PER_MESSAGE;
            for p in &m.parts {
                match p {
                    Part::Text(t) | Part::Reasoning(t) => s.bytes += t.len() as u64,
                    Part::Image { .. } => {
                        s.framing += IMAGE_TOKENS;
                        s.images += 1;
                    }
                    Part::ToolCall {
                        name, arguments, ..
                    } => {
                        s.bytes += (name.len() + arguments.len()) as u64;
                        s.framing += PER_PART;
                    }
                    Part::ToolResult { content, .. } => {
                        s.bytes += content.len() as u64;
                        s.framing += PER_PART;
                    }
                }
            }
        }
        for t in &r.tools {
            s.framing += PER_TOOL;
            s.bytes += (t.name.len()
                + t.description.as_deref().map_or(0, str::len)
                + json_len(&t.parameters)) as u64;
        }
        s
    }

    /// The text tokens of a server count of this prompt, when the count
    /// says anything about the text (the framing alone does not).
    pub fn text_tokens(&self, counted: u64) -> Option<u64> {
        let text = counted.checked_sub(self.framing)?;
        // Text must be most of what was counted, and there must be
        // enough of it, with no image whose count is a guess.
        let enough = self.bytes >= MIN_SAMPLE_BYTES && self.images == 0;
        (enough && text > 0 && self.framing <= counted / 4).then_some(text)
    }

    /// The bytes per token a server count of this prompt implies.
    pub fn ratio(&self, counted: u64) -> Option<f64> {
        self.text_tokens(counted)
            .map(|t| (self.bytes as f64 / t as f64).clamp(RATIO_MIN, RATIO_MAX))
    }
}

/// A prompt size in tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    pub tokens: u64,
    /// The server's count of an earlier prompt this one starts from, when
    /// there is one.
    pub calibrated_on: Option<u64>,
    /// The figures for text come from the model's learned bytes per token
    /// (otherwise the byte heuristic).
    pub learned: bool,
    /// The text was counted by the server's own tokenizer (the framing
    /// is estimated).
    pub tokenized: bool,
}

impl std::fmt::Display for Estimate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = if self.tokenized {
            "counted by the server's tokenizer, its framing estimated"
        } else if self.learned {
            "estimated with the model's measured bytes per token"
        } else {
            "estimated"
        };
        match self.calibrated_on {
            Some(n) => write!(
                f,
                "about {} tokens (the server counted {n} for the last prompt, the rest is {how})",
                self.tokens
            ),
            None => write!(f, "about {} tokens ({how})", self.tokens),
        }
    }
}

/// What the server said when it refused a prompt as too long: its count
/// of the prompt and its real window, when it said (llama.cpp:
/// `request (13032 tokens) exceeds the available context size (8192
/// tokens)`; vLLM and others: `… maximum context length is 8192 tokens …
/// your request has 13032 …` style messages keep what can be read).
pub fn overflow_counts(message: &str) -> (Option<u64>, Option<u64>) {
    let number_before = |s: &str, marker: &str| -> Option<u64> {
        let at = s.find(marker)?;
        let head = s[..at].trim_end();
        let digits: String = head
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_digit())
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        digits.parse().ok()
    };
    let number_after = |s: &str, marker: &str| -> Option<u64> {
        let at = s.find(marker)? + marker.len();
        let digits: String = s[at..]
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        digits.parse().ok()
    };
    // llama.cpp.
    if let Some(prompt) = number_after(message, "request (") {
        let ctx = number_after(message, "context size (");
        return (Some(prompt), ctx);
    }
    // vLLM / OpenAI style: "maximum context length is 8192 tokens. However,
    // you requested 13032 tokens" / "your messages resulted in 13032 tokens".
    let ctx = number_after(message, "maximum context length is");
    let prompt = number_before(message, " tokens in the messages")
        .or_else(|| number_after(message, "resulted in"))
        .or_else(|| number_after(message, "you requested"));
    (prompt, ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(tokens: u64) -> Window {
        Window {
            tokens,
            source: "config:contextWindow",
            reference: "p/m".into(),
            native: tokens,
        }
    }

    #[test]
    fn ctx_2_the_window_guard_warns_once_per_model_under_max_8000_or_20_percent() {
        assert_eq!(w(2_048).warn_line(), 8_000);
        assert_eq!(w(200_000).warn_line(), 40_000);
        assert_eq!(w(200_000).guard_once(), None);
        let small = Window {
            reference: "guard-test/small".into(),
            ..w(2_048)
        };
        let first = small.guard_once().expect("a warning");
        assert!(
            first.contains("guard-test/small ctx=2048 (warn<8000) source=config:contextWindow"),
            "{first}"
        );
        assert_eq!(small.guard_once(), None, "once per model");
        // A window cut by contextTokens from a large native one.
        let cut = Window {
            reference: "guard-test/cut".into(),
            tokens: 30_000,
            native: 200_000,
            source: "config:contextTokens",
        };
        assert!(cut.guard_once().unwrap().contains("(warn<40000)"));
    }

    #[test]
    fn ctx_2_the_reserve_is_the_answers_cap_or_the_configured_one_capped_by_the_window() {
        // No max_tokens: the model's maxTokens, at most a quarter.
        assert_eq!(Reserve::of(&w(2_048), None, 8_192, None).tokens, 512);
        assert_eq!(Reserve::of(&w(200_000), None, 8_192, None).tokens, 8_192);
        // The client's cap within maxTokens, at most half the window.
        let r = Reserve::of(&w(16_000), Some(4_000), 8_192, None);
        assert_eq!(r.tokens, 4_000);
        assert!(r.why.contains("max_tokens 4000"), "{}", r.why);
        assert_eq!(
            Reserve::of(&w(16_000), Some(32_000), 8_192, None).tokens,
            8_000
        );
        // reserveTokens / reserveTokensFloor when larger, capped at half.
        let r = Reserve::of(&w(200_000), Some(100), 8_192, Some(20_000));
        assert_eq!(
            (r.tokens, r.why.as_str()),
            (20_000, "compaction.reserveTokens")
        );
        assert_eq!(
            Reserve::of(&w(8_192), Some(100), 8_192, Some(20_000)).tokens,
            4_096
        );
    }

    #[test]
    fn ctx_2_token_counts_follow_the_learned_ratio() {
        let text = "x".repeat(1_000);
        assert_eq!(Tokens::default().text(&text), 250, "the heuristic: 4 bytes");
        assert_eq!(Tokens::learned(Some(1.0)).text(&text), 1_000);
        assert_eq!(Tokens::learned(Some(2.0)).text(&text), 500);
        // Out of bounds: clamped.
        assert_eq!(Tokens::learned(Some(0.01)).text(&text), 4_000);
        let r = ChatRequest {
            system: Some("s".repeat(100)),
            messages: vec![Message::user("u".repeat(900))],
            ..Default::default()
        };
        let shape = Shape::of(&r);
        assert_eq!(
            shape,
            Shape {
                bytes: 1_000,
                framing: 8,
                images: 0
            }
        );
        // A server that counted 1 008 tokens: one byte per token.
        assert_eq!(shape.ratio(1_008), Some(1.0));
        assert_eq!(Tokens::learned(shape.ratio(1_008)).request(&r), 1_008);
        assert_eq!(shape.ratio(5), None, "less than the framing says nothing");
        // Tiny prompts and prompts with images teach nothing.
        let tiny = Shape::of(&ChatRequest {
            messages: vec![Message::user("u".repeat(67))],
            ..Default::default()
        });
        assert_eq!(tiny.ratio(43), None);
        let mut with_image = r.clone();
        with_image.messages[0].parts.push(Part::Image {
            url: "data:image/png;base64,AAAA".into(),
        });
        assert_eq!(Shape::of(&with_image).ratio(2_500), None);
    }

    #[test]
    fn a_schema_is_measured_as_it_is_sent() {
        let v: serde_json::Value = serde_json::json!({"type": "object", "properties": {"path": {"type": "string", "description": "é \" \n"}}});
        assert_eq!(json_len(&v), v.to_string().len());
    }

    #[test]
    fn ctx_4_the_servers_overflow_message_is_read() {
        assert_eq!(
            overflow_counts("request (13032 tokens) exceeds the available context size (8192 tokens), try increasing it"),
            (Some(13_032), Some(8_192))
        );
        assert_eq!(
            overflow_counts("This model's maximum context length is 8192 tokens. However, you requested 9000 tokens (8000 in the messages, 1000 in the completion)."),
            (Some(9_000), Some(8_192))
        );
        assert_eq!(overflow_counts("prompt too long"), (None, None));
    }

    #[test]
    fn an_estimate_says_what_it_is() {
        let e = Estimate {
            tokens: 10,
            calibrated_on: None,
            learned: false,
            tokenized: false,
        };
        assert_eq!(e.to_string(), "about 10 tokens (estimated)");
        let c = Estimate {
            tokens: 900,
            calibrated_on: Some(850),
            learned: true,
            tokenized: false,
        };
        assert!(c.to_string().contains("the server counted 850"));
        assert!(c.to_string().contains("measured bytes per token"));
    }
}
