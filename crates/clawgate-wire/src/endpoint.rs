//! Where and how to reach one model: protocol, URL, credentials, timeouts
//! and the per-model request shaping of WIRE-6.

use std::time::Duration;

use clawgate_core::net::OutboundPolicy;
use clawgate_core::{ApiKind, Secret};

/// `compat.maxTokensField`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxTokensField {
    MaxTokens,
    MaxCompletionTokens,
}

/// Request shaping for servers with a narrower dialect (WIRE-6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shaping {
    /// `requiresStringContent`: content parts flattened to one string.
    pub string_content: bool,
    /// `strictMessageKeys`: only `role` and `content` per message.
    pub strict_message_keys: bool,
    /// `supportsTools: false` sends no tools at all.
    pub tools: bool,
    /// `None`: `max_completion_tokens` for api.openai.com, `max_tokens`
    /// elsewhere (what local servers understand).
    pub max_tokens_field: Option<MaxTokensField>,
    /// Ask for usage in streams (`stream_options.include_usage`).
    pub usage_in_stream: bool,
}

impl Default for Shaping {
    fn default() -> Self {
        Self {
            string_content: false,
            strict_message_keys: false,
            tools: true,
            max_tokens_field: None,
            usage_in_stream: true,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    pub api: ApiKind,
    /// As configured (`http://127.0.0.1:1234/v1`).
    pub base_url: String,
    pub api_key: Option<Secret>,
    /// Extra headers from the provider config; values may be secrets.
    pub headers: Vec<(String, Secret)>,
    /// Connect + headers + whole body (provider `timeoutSeconds`).
    pub timeout: Duration,
    /// Longest silence allowed between two body chunks.
    pub idle_timeout: Duration,
    pub shaping: Shaping,
    /// The provider's outbound rules (SEC-2); `None`: the endpoint's own
    /// origin is trusted as a configured one.
    pub policy: Option<std::sync::Arc<OutboundPolicy>>,
    /// Set under `dataPolicy: "local-only"` (SEC-6): the key that set it;
    /// public addresses are refused at connect.
    pub local_only: Option<String>,
}

impl Endpoint {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
    pub const DEFAULT_IDLE: Duration = Duration::from_secs(120);

    pub fn new(api: ApiKind, base_url: impl Into<String>) -> Self {
        Self {
            api,
            base_url: base_url.into(),
            api_key: None,
            headers: Vec::new(),
            timeout: Self::DEFAULT_TIMEOUT,
            idle_timeout: Self::DEFAULT_IDLE,
            shaping: Shaping::default(),
            policy: None,
            local_only: None,
        }
    }

    /// The URL a request goes to. Anthropic-style base URLs are written
    /// without `/v1` in OpenClaw configs; the client adds it.
    pub fn url(&self) -> String {
        let base = self.base_url.trim_end_matches('/');
        match self.api {
            ApiKind::OpenAiCompletions => format!("{base}/chat/completions"),
            ApiKind::OpenAiResponses => format!("{base}/responses"),
            ApiKind::AnthropicMessages if base.ends_with("/v1") => format!("{base}/messages"),
            ApiKind::AnthropicMessages => format!("{base}/v1/messages"),
        }
    }

    /// api.openai.com itself: the only place OpenAI-only fields may go.
    pub fn is_native_openai(&self) -> bool {
        self.base_url.contains("://api.openai.com")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_per_protocol() {
        let e = Endpoint::new(ApiKind::OpenAiResponses, "http://127.0.0.1:1234/v1/");
        assert_eq!(e.url(), "http://127.0.0.1:1234/v1/responses");
        let e = Endpoint::new(ApiKind::OpenAiCompletions, "http://h:8000/v1");
        assert_eq!(e.url(), "http://h:8000/v1/chat/completions");
        let e = Endpoint::new(ApiKind::AnthropicMessages, "https://api.anthropic.com");
        assert_eq!(e.url(), "https://api.anthropic.com/v1/messages");
        let e = Endpoint::new(ApiKind::AnthropicMessages, "http://127.0.0.1:8080/v1");
        assert_eq!(e.url(), "http://127.0.0.1:8080/v1/messages");
    }
}
