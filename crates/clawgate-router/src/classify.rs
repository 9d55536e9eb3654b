//! Error classes (FO-2): from transport facts first (connect refused, cut
//! streams, timeouts), then status codes, then the provider's error type
//! and message — covering the real texts of LM Studio, llama.cpp, vLLM,
//! Ollama, LiteLLM, OpenAI, Anthropic and OpenRouter.

use clawgate_wire::{WireError, WireErrorKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    Auth,
    AuthPermanent,
    RateLimit,
    Overloaded,
    Billing,
    Timeout,
    /// Connection refused or reset before an answer: the server is down,
    /// not slow (a short cooldown; a local one is re-probed first).
    Unreachable,
    ServerError,
    ContextOverflow,
    Format,
    ModelNotFound,
    /// The outbound guard or the data policy refused the address (SEC-2,
    /// SEC-6): a setting, not a failure; the next candidate is tried and
    /// nothing cools down.
    Blocked,
    Unknown,
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 13] = [
        ErrorClass::Auth,
        ErrorClass::AuthPermanent,
        ErrorClass::RateLimit,
        ErrorClass::Overloaded,
        ErrorClass::Billing,
        ErrorClass::Timeout,
        ErrorClass::Unreachable,
        ErrorClass::ServerError,
        ErrorClass::ContextOverflow,
        ErrorClass::Format,
        ErrorClass::ModelNotFound,
        ErrorClass::Blocked,
        ErrorClass::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Auth => "auth",
            ErrorClass::AuthPermanent => "auth_permanent",
            ErrorClass::RateLimit => "rate_limit",
            ErrorClass::Overloaded => "overloaded",
            ErrorClass::Billing => "billing",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Unreachable => "unreachable",
            ErrorClass::ServerError => "server_error",
            ErrorClass::ContextOverflow => "context_overflow",
            ErrorClass::Format => "format",
            ErrorClass::ModelNotFound => "model_not_found",
            ErrorClass::Blocked => "blocked",
            ErrorClass::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Whether the next candidate should be tried. Context overflow goes to
    /// compaction (CTX-4) and format errors surface: another model would
    /// fail the same way.
    pub fn fails_over(self) -> bool {
        !matches!(self, ErrorClass::ContextOverflow | ErrorClass::Format)
    }

    /// Classes a different credential of the same provider may fix.
    pub fn rotates_credential(self) -> bool {
        matches!(
            self,
            ErrorClass::Auth
                | ErrorClass::AuthPermanent
                | ErrorClass::RateLimit
                | ErrorClass::Billing
        )
    }
}

const OVERFLOW: &[&str] = &[
    "exceed_context_size_error",
    "exceeds the available context size",
    "context_length_exceeded",
    "maximum context length",
    "context length",
    "context window",
    "contextwindowexceedederror",
    "prompt is too long",
    "input is too long",
    "too many tokens",
    "reduce the length",
    "requested more tokens than",
    "n_ctx",
    "context size",
    "prompt too long",
    "exceeds the model's",
];
const OVERLOADED: &[&str] = &[
    "overloaded",
    "loading model",
    "model is loading",
    "model loading",
    "is currently loading",
    "unavailable_error",
    "server is busy",
    "too busy",
    "capacity",
    "no slot available",
];
const BILLING: &[&str] = &[
    "insufficient_quota",
    "insufficient credits",
    "credit balance",
    "credits",
    "billing",
    "payment required",
    "exceeded your current quota",
    "balance is too low",
];
const RATE: &[&str] = &[
    "rate limit",
    "rate_limit",
    "too many requests",
    "throttl",
    "slow down",
];
const AUTH_PERMANENT: &[&str] = &[
    "revoked",
    "deactivated",
    "disabled",
    "account has been suspended",
    "organization has been",
];
const AUTH: &[&str] = &[
    "invalid api key",
    "invalid_api_key",
    "incorrect api key",
    "invalid x-api-key",
    "authentication",
    "unauthorized",
    "no auth credentials",
    "permission",
];
const NOT_FOUND: &[&str] = &[
    "model_not_found",
    "model not found",
    "does not exist",
    "invalid model name",
    "unknown model",
    "no such model",
    "not_found_error",
    "no endpoints found",
];
const CONNECTION: &[&str] = &[
    "connection error",
    "connection refused",
    "econnrefused",
    "connect timeout",
];
/// Texts of a 500 that blame the request, not the server (llama.cpp
/// answers these with 500; another request would succeed).
const REQUEST_SPECIFIC: &[&str] = &[
    "parse error",
    "failed to parse",
    "invalid_request_error",
    "not supported",
    "unsupported",
    "is not supported",
    "invalid request",
    "invalid argument",
    "invalid value",
    "invalid_value",
    "must be",
    "is required",
    "missing field",
    "unknown field",
    "failed to load image",
    "cannot be",
    "grammar",
    "json schema",
];

fn has(text: &str, needles: &[&str]) -> bool {
    needles.iter().any(|n| text.contains(n))
}

/// Classifies a transport failure.
pub fn classify(e: &WireError) -> ErrorClass {
    let text = format!(
        "{} {} {}",
        e.error_type.as_deref().unwrap_or_default(),
        e.code.as_deref().unwrap_or_default(),
        e.message
    )
    .to_ascii_lowercase();
    match e.kind {
        WireErrorKind::Connect => return ErrorClass::Unreachable,
        WireErrorKind::Timeout(_) | WireErrorKind::Idle => return ErrorClass::Timeout,
        // The connection closed mid-answer (a killed server): nothing was
        // slow; the server went away.
        WireErrorKind::Truncated => return ErrorClass::Unreachable,
        WireErrorKind::Cancelled | WireErrorKind::Request => return ErrorClass::Unknown,
        WireErrorKind::Malformed => return ErrorClass::ServerError,
        WireErrorKind::Blocked => return ErrorClass::Blocked,
        WireErrorKind::Status | WireErrorKind::StreamError => {}
    }
    // Texts first where they are more specific than the status.
    if has(&text, OVERFLOW) {
        return ErrorClass::ContextOverflow;
    }
    let status = e.status.unwrap_or(0);
    match status {
        401 | 403 => {
            if has(&text, AUTH_PERMANENT) {
                ErrorClass::AuthPermanent
            } else if has(&text, BILLING) {
                ErrorClass::Billing
            } else {
                ErrorClass::Auth
            }
        }
        402 => ErrorClass::Billing,
        429 => {
            if has(&text, BILLING) {
                ErrorClass::Billing
            } else if has(&text, OVERLOADED) && !has(&text, RATE) {
                ErrorClass::Overloaded
            } else {
                ErrorClass::RateLimit
            }
        }
        404 => ErrorClass::ModelNotFound,
        408 | 504 => ErrorClass::Timeout,
        503 | 529 => ErrorClass::Overloaded,
        400 | 409 | 413 | 415 | 422 => {
            if has(&text, NOT_FOUND) {
                ErrorClass::ModelNotFound
            } else if has(&text, BILLING) {
                ErrorClass::Billing
            } else if has(&text, CONNECTION) {
                ErrorClass::Unreachable
            } else {
                ErrorClass::Format
            }
        }
        500..=599 => {
            if has(&text, OVERLOADED) {
                ErrorClass::Overloaded
            } else if has(&text, CONNECTION) {
                // LiteLLM: its upstream is down.
                ErrorClass::Unreachable
            } else if has(&text, NOT_FOUND) {
                ErrorClass::ModelNotFound
            } else if status == 500 && (has(&text, REQUEST_SPECIFIC) || text.contains("parse")) {
                // llama.cpp answers problems of one request (malformed
                // JSON, an image for a text-only model, a bad grammar)
                // with a plain 500: the request's fault, not the server's.
                ErrorClass::Format
            } else {
                ErrorClass::ServerError
            }
        }
        _ => {
            // Errors inside a 200 stream.
            if has(&text, OVERLOADED) {
                ErrorClass::Overloaded
            } else if has(&text, RATE) {
                ErrorClass::RateLimit
            } else if has(&text, BILLING) {
                ErrorClass::Billing
            } else if has(&text, AUTH) {
                ErrorClass::Auth
            } else if e.kind == WireErrorKind::StreamError {
                ErrorClass::ServerError
            } else {
                ErrorClass::Unknown
            }
        }
    }
}
