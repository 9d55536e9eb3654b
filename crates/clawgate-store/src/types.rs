//! The values a store keeps and returns.

/// Where a session's model selection came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelSource {
    /// The agent's configured default (and its fallback chain).
    Default,
    /// The user chose it (`/model`, a ref sent by a client): strict.
    User,
    /// Chosen by clawgate (e.g. a compaction model).
    Auto,
}

impl ModelSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelSource::Default => "default",
            ModelSource::User => "user",
            ModelSource::Auto => "auto",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "default" => Some(ModelSource::Default),
            "user" => Some(ModelSource::User),
            "auto" => Some(ModelSource::Auto),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: i64,
    pub key: String,
    pub agent: Option<String>,
    /// The selected model ref, when one was selected.
    pub model: Option<String>,
    pub model_source: ModelSource,
    pub compactions: u32,
    pub turns: u32,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// The last server-reported prompt size and the id of the last entry
    /// that prompt held (what the next turn's estimate starts from).
    pub context: Option<(u64, i64)>,
}

/// What a transcript entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    User,
    /// An image the user sent (`text` holds its URL or `data:` URL).
    Image,
    /// Final answer text.
    Assistant,
    /// Reasoning, kept apart from the answer.
    Reasoning,
    /// A tool call the assistant made (`text` holds the JSON arguments).
    ToolCall,
    /// A tool's result sent back by the client.
    ToolResult,
    /// A fallback or overload notice shown to the user.
    Notice,
    /// A compaction summary; `replaces_through` names the last entry it
    /// stands for.
    Summary,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::User => "user",
            EntryKind::Image => "image",
            EntryKind::Assistant => "assistant",
            EntryKind::Reasoning => "reasoning",
            EntryKind::ToolCall => "tool_call",
            EntryKind::ToolResult => "tool_result",
            EntryKind::Notice => "notice",
            EntryKind::Summary => "summary",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            EntryKind::User,
            EntryKind::Image,
            EntryKind::Assistant,
            EntryKind::Reasoning,
            EntryKind::ToolCall,
            EntryKind::ToolResult,
            EntryKind::Notice,
            EntryKind::Summary,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// A stored entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: i64,
    pub turn: u32,
    pub kind: EntryKind,
    pub text: String,
    pub tool_id: Option<String>,
    pub tool_name: Option<String>,
    pub is_error: bool,
    /// The answer ended with an error after output had started (FO-5).
    pub incomplete: bool,
    pub replaces_through: Option<i64>,
    pub at_ms: i64,
}

/// An entry to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    pub kind: EntryKind,
    pub text: String,
    pub tool_id: Option<String>,
    pub tool_name: Option<String>,
    pub is_error: bool,
    pub incomplete: bool,
    pub replaces_through: Option<i64>,
}

impl NewEntry {
    pub fn new(kind: EntryKind, text: impl Into<String>) -> Self {
        Self {
            kind,
            text: text.into(),
            tool_id: None,
            tool_name: None,
            is_error: false,
            incomplete: false,
            replaces_through: None,
        }
    }
}

/// One model call's usage (CTX-5, FO-8).
#[derive(Debug, Clone, PartialEq)]
pub struct UsageRow {
    pub provider: String,
    pub model: String,
    /// The endpoint host that served it.
    pub host: String,
    pub api: String,
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
    pub reasoning: u64,
    pub cost_usd: f64,
    /// No usage was reported: the counts are estimates.
    pub estimated: bool,
}

/// One turn, committed at once.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnCommit {
    pub session: i64,
    pub entries: Vec<NewEntry>,
    pub usage: Vec<UsageRow>,
    /// `(provider, profile)` to pin for the session (FO-3).
    pub sticky: Option<(String, String)>,
    /// A Responses answer to keep: `(id, response object as JSON)`.
    pub response: Option<(String, String)>,
    /// The server-reported prompt size of this turn's call and how many
    /// leading `entries` that prompt held (the client's new messages).
    pub context: Option<(u64, usize)>,
    /// What this turn's call taught about the served model's tokenizer
    /// (CTX-2): kept per model, so estimates survive restarts.
    pub calibration: Option<Calibration>,
    /// Counts a compaction when the entries include a summary; entries
    /// that are only a summary do not count as a turn.
    pub at_ms: i64,
}

/// One sample of a model's tokenizer: the text bytes of a prompt and the
/// tokens the server counted for them (framing taken off).
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    /// The served model's `provider/model` reference.
    pub model: String,
    pub bytes: u64,
    pub tokens: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Model,
    Session,
    Day,
    Endpoint,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageQuery {
    pub since_ms: i64,
    pub by: GroupBy,
    /// Only the calls recorded under this session key (deleted sessions'
    /// too: what left the machine stays accounted).
    pub session: Option<String>,
    /// Only this live session's calls (a chat's own `/usage`: a key
    /// reused after a delete does not see the old session's rows).
    pub session_id: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UsageTotal {
    /// `provider/model`, the session key, `YYYY-MM-DD` (UTC) or the host.
    pub group: String,
    pub calls: u64,
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
    pub reasoning: u64,
    pub cost_usd: f64,
    pub estimated_calls: u64,
}

/// What the next turn of a session needs, loaded in one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnState {
    pub session: Session,
    /// The last compaction summary first, then what it did not replace.
    pub history: Vec<Entry>,
    /// `(provider, profile)` credential pins.
    pub pins: Vec<(String, String)>,
}
