//! Transport failures, carrying what failover needs (WIRE-7, FO-2): the
//! HTTP status, the provider's error type/code/message, `Retry-After`, the
//! phase that failed, and whether output had already been produced.

use std::time::Duration;

/// Where in the exchange a failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Connect,
    Headers,
    Body,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireErrorKind {
    /// TCP connect refused or reset before a response.
    Connect,
    /// The provider timeout (connect + headers + whole body) ran out.
    Timeout(Phase),
    /// No byte arrived for the idle-stream timeout.
    Idle,
    /// The server answered with an error status.
    Status,
    /// The stream ended mid-frame or without its terminal event.
    Truncated,
    /// The server sent something that is not the protocol.
    Malformed,
    /// An error event inside a 200 stream (Responses `error`, Anthropic
    /// `error`, chat `finish_reason: "error"`).
    StreamError,
    /// The caller went away.
    Cancelled,
    /// The request could not be built (bad URL, bad header).
    Request,
    /// The outbound guard refused the address, or the server redirected
    /// (SEC-2); the data policy refused a public address (SEC-6).
    Blocked,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct WireError {
    pub kind: WireErrorKind,
    pub status: Option<u16>,
    /// The provider's error `type` (`invalid_request_error`,
    /// `exceed_context_size_error`, `overloaded_error`, …).
    pub error_type: Option<String>,
    pub code: Option<String>,
    /// A short message, never containing credentials.
    pub message: String,
    pub retry_after: Option<Duration>,
    /// True when text, reasoning or tool output was already produced.
    pub output_started: bool,
}

impl WireError {
    pub fn new(kind: WireErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            status: None,
            error_type: None,
            code: None,
            message: message.into(),
            retry_after: None,
            output_started: false,
        }
    }

    fn describe(&self) -> String {
        let mut s = match (&self.kind, self.status) {
            (WireErrorKind::Status, Some(st)) => format!("HTTP {st}"),
            (WireErrorKind::Connect, _) => "connection failed".to_string(),
            (WireErrorKind::Timeout(p), _) => format!("timed out ({p:?})").to_lowercase(),
            (WireErrorKind::Idle, _) => "stream idle timeout".to_string(),
            (WireErrorKind::Truncated, _) => "stream cut off".to_string(),
            (WireErrorKind::Malformed, _) => "malformed response".to_string(),
            (WireErrorKind::StreamError, _) => "error in stream".to_string(),
            (WireErrorKind::Cancelled, _) => "cancelled".to_string(),
            (WireErrorKind::Request, _) => "bad request setup".to_string(),
            (WireErrorKind::Blocked, _) => "blocked".to_string(),
            (WireErrorKind::Status, None) => "error status".to_string(),
        };
        if let Some(t) = &self.error_type {
            s.push_str(&format!(" {t}"));
        }
        if !self.message.is_empty() {
            s.push_str(": ");
            s.push_str(&self.message);
        }
        s
    }

    /// Builds a status error from a response body in any of the three
    /// protocols' error shapes (or plain text).
    pub fn from_status(status: u16, body: &[u8], retry_after: Option<Duration>) -> Self {
        let mut e = WireError::new(WireErrorKind::Status, "");
        e.status = Some(status);
        e.retry_after = retry_after;
        let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
        let err = parsed
            .as_ref()
            .map(|v| v.get("error").unwrap_or(v))
            .filter(|v| v.is_object());
        match err {
            Some(obj) => {
                e.error_type = obj.get("type").and_then(|t| t.as_str()).map(str::to_string);
                e.code = obj.get("code").map(|c| match c {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                });
                e.message = obj
                    .get("message")
                    .and_then(|m| m.as_str())
                    .unwrap_or_default()
                    .to_string();
            }
            None => {
                e.message = String::from_utf8_lossy(body).trim().to_string();
            }
        }
        e.message = truncate(&e.message, 500);
        e
    }
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max).collect();
    out.push('…');
    out
}
