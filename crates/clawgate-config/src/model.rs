//! The typed configuration: every key of CFG-2, with OpenClaw's meaning.
//!
//! Values that later checks must point back at (model refs, aliases) are
//! [`Located`]; everything optional stays `Option` so that per-agent entries
//! can override defaults key by key and `merge` can override the catalog
//! field by field.

use std::path::PathBuf;

use clawgate_core::ApiKind;
use indexmap::IndexMap;

use crate::diag::{Loc, Located};
use crate::secret::SecretValue;

/// JSON object used for free-form `params` blocks.
pub type JsonMap = serde_json::Map<String, serde_json::Value>;

/// A fully decoded config file.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// The file this came from; `None` when running on defaults only.
    pub path: Option<PathBuf>,
    pub agents: Agents,
    pub models: Models,
    pub gateway: Gateway,
    pub auth: AuthProfiles,
    /// `secrets.*` (the SecretRef providers), kept for the audit.
    pub secrets: crate::secretref::Secrets,
    /// Files merged in with `$include`, in the order they were read.
    pub includes: Vec<PathBuf>,
}

#[derive(Debug, Clone, Default)]
pub struct Agents {
    pub defaults: AgentSettings,
    /// `agents.entries.<id>`: per-agent overrides, in file order.
    pub entries: IndexMap<String, AgentSettings>,
}

/// `agents.defaults.*` or `agents.entries.<id>.*`.
#[derive(Debug, Clone, Default)]
pub struct AgentSettings {
    pub model: Option<ModelSelection>,
    /// `models.<provider/model>`: alias and params per ref, in file order.
    pub models: IndexMap<String, ModelOptions>,
    /// `modelPolicy.allow`; `None` when not written.
    pub model_policy_allow: Option<Vec<Located<String>>>,
    pub timeout_seconds: Option<u64>,
    pub compaction: Option<Compaction>,
    pub data_policy: Option<DataPolicy>,
    /// Legacy agent-level `contextTokens` (still honoured by OpenClaw).
    pub context_tokens: Option<u64>,
    pub params: JsonMap,
    /// `tools.allow` / `tools.deny` (SEC-4): which client tools a turn of
    /// this agent may pass to the model.
    pub tools: Option<ToolPolicy>,
    /// Where this block starts, for messages about the agent as a whole.
    pub loc: Loc,
}

/// An agent's tool allowlist (SEC-4): names or `*` patterns
/// (`mcp__github__*`), case-insensitive. Deny wins; with `allow` written,
/// only matching tools (and `alsoAllow`) pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolPolicy {
    pub allow: Option<Vec<String>>,
    pub also_allow: Vec<String>,
    pub deny: Vec<String>,
}

impl ToolPolicy {
    pub fn allows(&self, tool: &str) -> bool {
        let any = |list: &[String]| list.iter().any(|p| glob(p, tool));
        if any(&self.deny) {
            return false;
        }
        match &self.allow {
            None => true,
            Some(a) => any(a) || any(&self.also_allow),
        }
    }

    /// The key that keeps `tool` out, for messages.
    pub fn reason(&self, tool: &str) -> &'static str {
        if self.deny.iter().any(|p| glob(p, tool)) {
            "tools.deny"
        } else {
            "tools.allow"
        }
    }
}

/// `*` matches any run of characters; everything else literally, ignoring
/// ASCII case.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p = pattern.as_bytes();
    let t = text.as_bytes();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi].eq_ignore_ascii_case(&t[ti]) {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == b'*')
}

/// `model`: a string (primary only) or `{primary, fallbacks}`.
#[derive(Debug, Clone, Default)]
pub struct ModelSelection {
    pub primary: Option<Located<String>>,
    /// `None` when `fallbacks` was not written (string form, or omitted).
    pub fallbacks: Option<Vec<Located<String>>>,
    /// True when written as a plain string.
    pub string_form: bool,
}

/// `agents.defaults.models.<ref>`.
#[derive(Debug, Clone)]
pub struct ModelOptions {
    /// The key as written (`anthropic/claude-opus-4-5` or `vllm/*`).
    pub key: Located<String>,
    pub alias: Option<Located<String>>,
    pub params: JsonMap,
}

#[derive(Debug, Clone, Default)]
pub struct Compaction {
    /// `default` | `safeguard` | `off` (OpenClaw modes plus an explicit off).
    pub mode: Option<String>,
    pub enabled: Option<bool>,
    pub keep_recent_tokens: Option<u64>,
    /// Tokens kept free for the answer and the next turn (OpenClaw's
    /// `reserveTokens`); `reserveTokensFloor` is its lower bound.
    pub reserve_tokens: Option<u64>,
    pub reserve_tokens_floor: Option<u64>,
    pub model: Option<Located<String>>,
    pub timeout_seconds: Option<u64>,
}

impl Compaction {
    /// Keep-recent budget with the spec default (CTX-3).
    pub fn keep_recent_tokens(&self) -> u64 {
        self.keep_recent_tokens.unwrap_or(20_000)
    }

    /// Whether compaction is switched off.
    pub fn disabled(&self) -> bool {
        self.enabled == Some(false) || self.mode.as_deref() == Some("off")
    }
}

/// SEC-6 data policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DataPolicy {
    LocalOnly,
    #[default]
    AllowHosted,
}

impl DataPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            DataPolicy::LocalOnly => "local-only",
            DataPolicy::AllowHosted => "allow-hosted",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ModelsMode {
    #[default]
    Merge,
    Replace,
}

impl ModelsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelsMode::Merge => "merge",
            ModelsMode::Replace => "replace",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Models {
    pub mode: ModelsMode,
    /// `models.providers`, in file order (the order decides the default
    /// model, REF-3).
    pub providers: IndexMap<String, ProviderConfig>,
}

/// `models.providers.<id>`.
#[derive(Debug, Clone, Default)]
pub struct ProviderConfig {
    pub id: String,
    pub loc: Loc,
    pub base_url: Option<String>,
    pub api_key: Option<SecretValue>,
    pub api: Option<ApiKind>,
    /// Set when `api` names a protocol clawgate does not implement: the
    /// provider is kept out of routing, as OpenClaw skips it at start-up.
    pub unsupported_api: Option<String>,
    pub headers: IndexMap<String, SecretValue>,
    pub timeout_seconds: Option<u64>,
    pub allow_private_network: Option<bool>,
    /// `request.allowSpecialUseAddresses` (a clawgate key): lets the
    /// provider reach cloud metadata, link-local and local-use NAT64
    /// addresses, which the outbound guard otherwise always refuses.
    pub allow_special_use: Option<bool>,
    pub local_service: Option<LocalService>,
    /// `maxConcurrent` (LOC-6, a clawgate key): requests in flight at once;
    /// 0 = no limit. Unset: what the local server can run at once (see
    /// `clawgate-local`), no limit for hosted APIs.
    pub max_concurrent: Option<u32>,
    /// `spillAfterMs` (LOC-6/7): a request that waited this long for a
    /// queue slot or a swap moves to the next candidate of its chain.
    pub spill_after_ms: Option<u64>,
    /// `None` when `models` was not written at all.
    pub models: Option<Vec<ModelConfig>>,
    pub max_tokens: Option<u64>,
    pub context_window: Option<u64>,
    pub context_tokens: Option<u64>,
    pub params: JsonMap,
}

/// `models.providers.<id>.models[]`.
#[derive(Debug, Clone, Default)]
pub struct ModelConfig {
    pub id: String,
    pub loc: Loc,
    pub name: Option<String>,
    pub reasoning: Option<bool>,
    pub input: Option<Vec<Modality>>,
    pub cost: Option<Cost>,
    pub context_window: Option<u64>,
    pub context_tokens: Option<u64>,
    pub max_tokens: Option<u64>,
    pub compat: Compat,
    pub params: JsonMap,
    pub api: Option<ApiKind>,
    pub base_url: Option<String>,
    pub headers: IndexMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modality {
    Text,
    Image,
    Video,
    Audio,
    Document,
}

impl Modality {
    pub fn as_str(self) -> &'static str {
        match self {
            Modality::Text => "text",
            Modality::Image => "image",
            Modality::Video => "video",
            Modality::Audio => "audio",
            Modality::Document => "document",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "text" => Modality::Text,
            "image" => Modality::Image,
            "video" => Modality::Video,
            "audio" => Modality::Audio,
            "document" => Modality::Document,
            _ => return None,
        })
    }
}

/// USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Cost {
    pub input: f64,
    pub output: f64,
    pub cache_read: f64,
    pub cache_write: f64,
}

/// `compat.*` flags clawgate implements; others are warned about and ignored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Compat {
    pub requires_string_content: Option<bool>,
    pub strict_message_keys: Option<bool>,
    pub supports_tools: Option<bool>,
    pub supported_reasoning_efforts: Option<Vec<String>>,
    pub reasoning_effort_map: Option<IndexMap<String, String>>,
    pub max_tokens_field: Option<MaxTokensField>,
    pub supports_usage_in_streaming: Option<bool>,
    pub supports_developer_role: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxTokensField {
    MaxTokens,
    MaxCompletionTokens,
}

/// `models.providers.<id>.localService` (LOC-1).
#[derive(Debug, Clone, PartialEq)]
pub struct LocalService {
    pub command: PathBuf,
    pub args: Vec<String>,
    pub cwd: Option<PathBuf>,
    pub env: IndexMap<String, SecretValue>,
    /// Default `{baseUrl}/models`, filled in by [`LocalService::health_url`].
    pub health_url: Option<String>,
    pub ready_timeout_ms: u64,
    /// 0 keeps the server running until clawgate exits.
    pub idle_stop_ms: u64,
    /// `group` (LOC-7, a clawgate key): services of one group never run at
    /// the same time (one GPU, one model at a time).
    pub group: Option<String>,
    /// `warmUp` (LOC-2, a clawgate key): start the service when the gateway
    /// starts instead of on the first request.
    pub warm_up: bool,
}

impl LocalService {
    pub const DEFAULT_READY_TIMEOUT_MS: u64 = 120_000;

    pub fn health_url(&self, base_url: &str) -> String {
        self.health_url
            .clone()
            .unwrap_or_else(|| format!("{}/models", base_url.trim_end_matches('/')))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    #[default]
    Token,
    Password,
    None,
}

impl AuthMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Token => "token",
            AuthMode::Password => "password",
            AuthMode::None => "none",
        }
    }
}

/// `gateway.*`.
#[derive(Debug, Clone)]
pub struct Gateway {
    /// As written: `loopback`, `lan`, or an IP address.
    pub bind: String,
    pub port: u16,
    /// `None` when `gateway.auth.mode` was not written.
    pub auth_mode: Option<AuthMode>,
    pub token: Option<SecretValue>,
    pub password: Option<SecretValue>,
    /// `gateway.http.endpoints.<name>.enabled`.
    pub endpoints: IndexMap<String, bool>,
    /// `gateway.http.allowedHosts`: host names (lower case, no port)
    /// accepted in `Host` and `Origin` besides the loopback names, e.g.
    /// the name a reverse proxy or a LAN client uses.
    pub allowed_hosts: Vec<String>,
}

impl Gateway {
    pub const DEFAULT_PORT: u16 = 18789;
}

impl Default for Gateway {
    fn default() -> Self {
        Self {
            bind: "loopback".to_string(),
            port: Self::DEFAULT_PORT,
            auth_mode: None,
            token: None,
            password: None,
            endpoints: IndexMap::new(),
            allowed_hosts: Vec::new(),
        }
    }
}

/// `auth.profiles` and `auth.order` (several credentials per provider, FO-3).
#[derive(Debug, Clone, Default)]
pub struct AuthProfiles {
    pub profiles: IndexMap<String, AuthProfile>,
    pub order: IndexMap<String, Vec<String>>,
}

#[derive(Debug, Clone)]
pub struct AuthProfile {
    pub id: String,
    pub provider: String,
    pub api_key: Option<SecretValue>,
    pub loc: Loc,
}

#[cfg(test)]
mod tool_policy_tests {
    use super::*;

    #[test]
    fn globs_and_precedence() {
        assert!(glob("read_*", "read_file") && glob("READ_*", "read_file"));
        assert!(glob("*", "") && glob("a*b*c", "aXXbYYc") && glob("mcp__*__get", "mcp__gh__get"));
        assert!(!glob("read_*", "xread_file") && !glob("a*b", "ac") && !glob("abc", "ab"));
        let p = ToolPolicy {
            allow: Some(vec!["read_*".into()]),
            also_allow: vec!["grep".into()],
            deny: vec!["read_secrets".into()],
        };
        assert!(p.allows("read_file") && p.allows("Grep"));
        assert!(!p.allows("read_secrets") && !p.allows("bash"));
        assert_eq!(p.reason("read_secrets"), "tools.deny");
        assert_eq!(p.reason("bash"), "tools.allow");
        let open = ToolPolicy {
            deny: vec!["bash".into()],
            ..ToolPolicy::default()
        };
        assert!(open.allows("anything") && !open.allows("BASH"));
    }
}
