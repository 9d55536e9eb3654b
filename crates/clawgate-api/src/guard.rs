//! What a web page can make a loopback service do (SEC-1): with auth off,
//! the gateway answers only requests addressed to a loopback name (or a
//! configured `gateway.http.allowedHosts` name) — DNS rebinding sends a
//! foreign `Host` — refuses a foreign `Origin` (a cross-site request from
//! a browser), and takes only `application/json` bodies on its POST
//! endpoints (a cross-site "simple" request cannot send that type without
//! a preflight, which the gateway never answers).

use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::errors::{AnthropicError, ApiError};

/// The host part of a `Host` value or an origin's authority, lower case,
/// without port or IPv6 brackets.
fn host_name(authority: &str) -> String {
    let a = authority.trim();
    let host = if let Some(rest) = a.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        a.rsplit_once(':').map_or(a, |(h, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                a
            }
        })
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Loopback names: `localhost` (and `*.localhost`, RFC 6761), 127.0.0.0/8,
/// `::1`.
fn is_loopback_name(host: &str) -> bool {
    host == "localhost"
        || host.ends_with(".localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn allowed(host: &str, extra: &[String]) -> bool {
    is_loopback_name(host) || extra.iter().any(|h| h == host)
}

fn refuse(path: &str, status: StatusCode, message: String) -> Response {
    let err = ApiError::new(status, "invalid_request_error", message);
    if path.starts_with("/v1/messages") {
        AnthropicError(err).into_response()
    } else {
        err.into_response()
    }
}

/// The refusal for a request a web page may have sent, when auth is off
/// (`extra`: `gateway.http.allowedHosts`).
pub fn check(method: &Method, path: &str, h: &HeaderMap, extra: &[String]) -> Option<Response> {
    if let Some(host) = h.get(header::HOST) {
        let name = host.to_str().map(host_name).unwrap_or_default();
        if !allowed(&name, extra) {
            return Some(refuse(
                path,
                StatusCode::FORBIDDEN,
                format!("Host {name:?} is not a loopback name: without gateway auth only loopback names (and gateway.http.allowedHosts) are answered"),
            ));
        }
    }
    if let Some(origin) = h.get(header::ORIGIN) {
        let o = origin.to_str().unwrap_or_default();
        let name = o
            .split_once("://")
            .map(|(_, rest)| host_name(rest.split('/').next().unwrap_or_default()))
            .unwrap_or_default();
        if !allowed(&name, extra) {
            return Some(refuse(
                path,
                StatusCode::FORBIDDEN,
                format!("requests from the web origin {o:?} are refused without gateway auth"),
            ));
        }
    }
    if method == Method::POST {
        let json = h
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|t| {
                let t = t.trim();
                t.eq_ignore_ascii_case("application/json")
                    || (t.len() > 5
                        && t[..t.len() - 5]
                            .to_ascii_lowercase()
                            .starts_with("application/")
                        && t.to_ascii_lowercase().ends_with("+json"))
            });
        if !json {
            return Some(refuse(
                path,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the request body as Content-Type: application/json".to_string(),
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names() {
        assert_eq!(host_name("127.0.0.1:18789"), "127.0.0.1");
        assert_eq!(host_name("[::1]:18789"), "::1");
        assert_eq!(host_name("LocalHost"), "localhost");
        assert_eq!(host_name("attacker.example:80"), "attacker.example");
        assert!(allowed("localhost", &[]));
        assert!(allowed("app.localhost", &[]));
        assert!(allowed("127.8.9.10", &[]));
        assert!(allowed("::1", &[]));
        assert!(!allowed("attacker.example", &[]));
        assert!(!allowed("localhost.attacker.example", &[]));
        assert!(!allowed("0.0.0.0", &[]));
        assert!(allowed("gw.lan", &["gw.lan".to_string()]));
    }
}
