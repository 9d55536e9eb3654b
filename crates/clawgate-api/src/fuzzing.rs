//! Entry points for the fuzz targets in `fuzz/`: the inbound request
//! parsers of the three HTTP APIs, from the raw body bytes a client sends.
//! Not an API; each must return (an error is fine) for any input.

/// `POST /v1/chat/completions`.
pub fn chat(body: &[u8]) {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        let _ = crate::chat::parse(&v);
    }
}

/// `POST /v1/responses`.
pub fn responses(body: &[u8]) {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        let _ = crate::responses::parse(&v);
    }
}

/// `POST /v1/messages`.
pub fn messages(body: &[u8]) {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        let _ = crate::messages::parse(&v);
    }
}
