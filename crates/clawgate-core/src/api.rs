//! The wire APIs clawgate speaks to model servers (CFG-2 `api`).

use std::fmt;

/// The three wire protocols clawgate implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiKind {
    /// `POST {baseUrl}/chat/completions` (WIRE-1).
    OpenAiCompletions,
    /// `POST {baseUrl}/responses` (WIRE-2).
    OpenAiResponses,
    /// `POST {baseUrl}/messages` (WIRE-3).
    AnthropicMessages,
}

/// What an `api` string in a config means to clawgate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiParse {
    /// A protocol clawgate implements.
    Supported(ApiKind),
    /// A retired OpenClaw spelling that maps onto a supported protocol.
    Legacy { kind: ApiKind, written: String },
    /// A value OpenClaw knows but clawgate does not implement; OpenClaw itself
    /// skips such providers at start-up instead of failing.
    Unsupported(String),
    /// Not an api value at all (a typo, usually).
    Unknown(String),
}

impl ApiKind {
    pub const ALL: [ApiKind; 3] = [
        ApiKind::OpenAiCompletions,
        ApiKind::OpenAiResponses,
        ApiKind::AnthropicMessages,
    ];

    /// The exact config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiKind::OpenAiCompletions => "openai-completions",
            ApiKind::OpenAiResponses => "openai-responses",
            ApiKind::AnthropicMessages => "anthropic-messages",
        }
    }

    /// Classifies an `api` value as written in a config.
    pub fn parse(s: &str) -> ApiParse {
        const OPENCLAW_ONLY: [&str; 7] = [
            "openai-chatgpt-responses",
            "google-generative-ai",
            "google-vertex",
            "github-copilot",
            "bedrock-converse-stream",
            "ollama",
            "azure-openai-responses",
        ];
        if let Some(kind) = Self::ALL.into_iter().find(|k| k.as_str() == s) {
            return ApiParse::Supported(kind);
        }
        if s == "openai" {
            return ApiParse::Legacy {
                kind: ApiKind::OpenAiCompletions,
                written: s.to_string(),
            };
        }
        if OPENCLAW_ONLY.contains(&s) {
            return ApiParse::Unsupported(s.to_string());
        }
        ApiParse::Unknown(s.to_string())
    }
}

impl fmt::Display for ApiKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spelling() {
        for k in ApiKind::ALL {
            assert_eq!(ApiKind::parse(k.as_str()), ApiParse::Supported(k));
        }
        assert!(matches!(
            ApiKind::parse("openai"),
            ApiParse::Legacy {
                kind: ApiKind::OpenAiCompletions,
                ..
            }
        ));
        assert_eq!(
            ApiKind::parse("ollama"),
            ApiParse::Unsupported("ollama".into())
        );
        assert_eq!(
            ApiKind::parse("openai-response"),
            ApiParse::Unknown("openai-response".into())
        );
    }
}
