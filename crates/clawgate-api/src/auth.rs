//! Gateway auth (SEC-1): bearer token or password, compared in constant
//! time; `x-api-key` is accepted too so Anthropic-style clients work.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use clawgate_config::{AuthMode, Gateway};
use clawgate_core::Secret;

use crate::errors::ApiError;

pub struct GatewayAuth {
    pub mode: AuthMode,
    pub secret: Option<Secret>,
    /// `gateway.http.allowedHosts`: names accepted in `Host`/`Origin`
    /// besides loopback ones when auth is off.
    pub allowed_hosts: Vec<String>,
    failures: Mutex<HashMap<Option<IpAddr>, (u32, Instant)>>,
}

/// Failed attempts from one address allowed per window before further
/// failed attempts get 429 (SEC-1). A valid credential always passes.
pub const MAX_FAILURES: u32 = 10;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at once; when full, expired entries go first, then
/// the whole book (an attacker with many addresses cannot grow memory).
const MAX_TRACKED: usize = 4096;

impl GatewayAuth {
    /// From `gateway.auth`. With no mode written: token when a token is
    /// configured, else none (loopback only, enforced at bind).
    pub fn new(mode: AuthMode, secret: Option<Secret>) -> Self {
        Self {
            mode,
            secret,
            allowed_hosts: Vec::new(),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Also accept these host names (`gateway.http.allowedHosts`).
    pub fn with_allowed_hosts(mut self, hosts: Vec<String>) -> Self {
        self.allowed_hosts = hosts;
        self
    }

    /// Whether the request carries the valid credential (always true when
    /// auth is off).
    pub fn accepts(&self, headers: &axum::http::HeaderMap) -> bool {
        if self.mode == AuthMode::None {
            return true;
        }
        match (credential(headers), &self.secret) {
            (Some(g), Some(s)) => ct_eq(g.as_bytes(), s.expose().as_bytes()),
            _ => false,
        }
    }

    /// Seconds until `ip` may try again, when it failed too often.
    fn blocked(&self, ip: Option<IpAddr>) -> Option<u64> {
        let map = self.failures.lock().ok()?;
        let (count, since) = map.get(&ip)?;
        let elapsed = since.elapsed();
        (*count >= MAX_FAILURES && elapsed < FAILURE_WINDOW)
            .then(|| (FAILURE_WINDOW - elapsed).as_secs().max(1))
    }

    fn failed(&self, ip: Option<IpAddr>) {
        if let Ok(mut map) = self.failures.lock() {
            if map.len() >= MAX_TRACKED && !map.contains_key(&ip) {
                map.retain(|_, (_, since)| since.elapsed() < FAILURE_WINDOW);
                if map.len() >= MAX_TRACKED {
                    map.clear();
                }
            }
            let entry = map.entry(ip).or_insert((0, Instant::now()));
            if entry.1.elapsed() >= FAILURE_WINDOW {
                *entry = (0, Instant::now());
            }
            entry.0 += 1;
        }
    }

    pub fn from_config(g: &Gateway) -> Self {
        let mode = g.auth_mode.unwrap_or(if g.token.is_some() {
            AuthMode::Token
        } else if g.password.is_some() {
            AuthMode::Password
        } else {
            AuthMode::None
        });
        let secret = match mode {
            AuthMode::Token => g.token.as_ref().and_then(|t| t.resolved.clone()),
            AuthMode::Password => g.password.as_ref().and_then(|t| t.resolved.clone()),
            AuthMode::None => None,
        };
        Self::new(mode, secret).with_allowed_hosts(g.allowed_hosts.clone())
    }
}

/// The credential a request carries: `Authorization: Bearer <token>`
/// (the scheme in any case) or `x-api-key`.
pub(crate) fn credential(headers: &axum::http::HeaderMap) -> Option<&str> {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let v = v.trim();
            let (scheme, rest) = v.split_once(char::is_whitespace)?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    bearer
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim)
}

/// Equal length and every byte equal, without an early exit.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    for (x, y) in a.iter().zip(b.iter()) {
        diff |= x ^ y;
    }
    diff == 0
}

/// The refusal for a request without the valid credential (401, or 429
/// after too many failures from its address); `None` lets it pass.
pub fn check(
    auth: &GatewayAuth,
    path: &str,
    headers: &axum::http::HeaderMap,
    ip: Option<IpAddr>,
) -> Option<Response> {
    if auth.mode == AuthMode::None {
        return None;
    }
    // Anthropic clients get errors in their own shape.
    let is_anthropic = path.starts_with("/v1/messages");
    let given = credential(headers);
    // A valid credential always passes: only failed attempts are
    // throttled, so no one can lock the real clients out.
    if auth.accepts(headers) {
        return None;
    }
    let err = if let Some(wait) = auth.blocked(ip) {
        let mut err = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "too many failed authentication attempts; try again later",
        );
        err.retry_after = Some(wait);
        err
    } else {
        auth.failed(ip);
        let msg = if given.is_some() {
            "invalid gateway credential"
        } else {
            "missing gateway credential: send Authorization: Bearer <token>"
        };
        ApiError::new(StatusCode::UNAUTHORIZED, "authentication_error", msg).code("invalid_api_key")
    };
    Some(if is_anthropic {
        crate::errors::AnthropicError(err).into_response()
    } else {
        err.into_response()
    })
}

#[cfg(test)]
mod tests {
    use super::ct_eq;

    #[test]
    fn constant_time_compare() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"abcd"));
        assert!(!ct_eq(b"", b"a"));
        assert!(ct_eq(b"", b""));
    }
}
