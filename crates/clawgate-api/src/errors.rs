//! Errors in the OpenAI shape (GW-3): `{"error": {message, type, param,
//! code}}` with the right status, and the mapping from routing failures to
//! 4xx/5xx.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use clawgate_router::{ErrorClass, RunError};
use serde_json::json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    pub code: Option<String>,
    pub param: Option<String>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
            code: None,
            param: None,
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    pub fn param(mut self, p: &str) -> Self {
        self.param = Some(p.to_string());
        self
    }

    pub fn code(mut self, c: &str) -> Self {
        self.code = Some(c.to_string());
        self
    }

    pub fn body(&self) -> serde_json::Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }

    /// Maps a routing failure to a status (GW-3): rate limits 429 with
    /// `Retry-After`, overload 503, timeouts 504, other upstream classes
    /// 502; failures another model would repeat are the client's 400.
    pub fn from_run(e: &RunError) -> Self {
        match e {
            RunError::Surfaced { class, error, .. } => {
                let mut a = Self::bad_request(format!("{e}"));
                a.code = Some(
                    match class {
                        ErrorClass::ContextOverflow => "context_length_exceeded",
                        _ => "upstream_rejected_request",
                    }
                    .to_string(),
                );
                if error.status == Some(413) {
                    a.status = StatusCode::PAYLOAD_TOO_LARGE;
                }
                a
            }
            RunError::Exhausted(x) => {
                // The primary's failure names the problem (its server is
                // down); a fallback's (no key for a hosted model) would
                // send the user hunting for the wrong thing. Every attempt
                // is in the message.
                let last = x.attempts.iter().find_map(|a| a.class);
                let status = match last {
                    Some(ErrorClass::RateLimit) => StatusCode::TOO_MANY_REQUESTS,
                    Some(ErrorClass::Overloaded) => StatusCode::SERVICE_UNAVAILABLE,
                    Some(ErrorClass::Timeout) => StatusCode::GATEWAY_TIMEOUT,
                    None => StatusCode::SERVICE_UNAVAILABLE,
                    _ => StatusCode::BAD_GATEWAY,
                };
                let mut a = Self::new(status, "upstream_error", e.to_string());
                // Never null: every candidate skipped (policy, a disabled
                // credential) is its own code.
                a.code = Some(
                    last.map_or("no_candidate_available", |c| c.as_str())
                        .to_string(),
                );
                a.retry_after = x
                    .soonest_retry
                    .map(|d| (d.as_millis().div_ceil(1000) as u64).max(1));
                a
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(self.body())).into_response();
        if let Some(s) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                r.headers_mut().insert("retry-after", v);
            }
        }
        r
    }
}

/// The same error in the Anthropic shape: `{"type": "error", "error":
/// {"type", "message"}}` with Anthropic's error type names.
pub struct AnthropicError(pub ApiError);

impl From<ApiError> for AnthropicError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl AnthropicError {
    fn kind(&self) -> &'static str {
        match self.0.status.as_u16() {
            400 | 413 | 422 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            429 => "rate_limit_error",
            503 | 529 => "overloaded_error",
            _ => "api_error",
        }
    }

    pub fn body(&self) -> serde_json::Value {
        json!({"type": "error", "error": {"type": self.kind(), "message": self.0.message}})
    }
}

impl IntoResponse for AnthropicError {
    fn into_response(self) -> Response {
        let body = self.body();
        let mut r = (self.0.status, axum::Json(body)).into_response();
        if let Some(s) = self.0.retry_after {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                r.headers_mut().insert("retry-after", v);
            }
        }
        r
    }
}
