//! The mock upstream: an OpenAI-compatible server (chat completions and
//! Responses, streamed or not) inside the bench process, with configurable
//! latency, chunk count and chunk delay, and streams it can hold open.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

#[derive(Clone)]
pub struct Mock {
    pub latency: Duration,
    pub chunks: usize,
    pub delay: Duration,
    /// Streams asked to "hold-open" send one chunk, then wait for this to
    /// change (the open-streams scenario).
    pub release: tokio::sync::watch::Receiver<u64>,
}

/// A streamed body fed by `frames`, one write per frame.
fn sse_body(
    frames: impl FnOnce(tokio::sync::mpsc::Sender<bytes::Bytes>) -> tokio::task::JoinHandle<()>,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(8);
    frames(tx);
    let body =
        axum::body::Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
        }));
    ([("content-type", "text/event-stream")], body).into_response()
}

/// What a request asks of the mock: streamed or not, held open or not.
/// A byte search, not a JSON parse: the mock must stay much cheaper than
/// the systems it serves, or it (not they) sets the throughput (every
/// client here writes compact JSON).
fn ask(body: &[u8]) -> (bool, bool) {
    let has = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    (
        has(b"\"stream\":true") || has(b"\"stream\": true"),
        has(b"hold-open"),
    )
}

/// The non-streamed chat answer, rendered once.
static CHAT_ANSWER: std::sync::LazyLock<bytes::Bytes> = std::sync::LazyLock::new(|| {
    json!({
        "id": "x", "object": "chat.completion", "created": 0, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello world"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    })
    .to_string()
    .into()
});

impl Mock {
    async fn pause(&self, i: usize, hold: bool, release: &mut tokio::sync::watch::Receiver<u64>) {
        if i == 1 && hold {
            let _ = tokio::time::timeout(Duration::from_secs(120), release.changed()).await;
        }
        if i > 0 && !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
    }
}

async fn mock_chat(State(m): State<Mock>, body: bytes::Bytes) -> Response {
    let (stream, hold) = ask(&body);
    if !m.latency.is_zero() {
        tokio::time::sleep(m.latency).await;
    }
    if !stream {
        return ([("content-type", "application/json")], CHAT_ANSWER.clone()).into_response();
    }
    sse_body(move |tx| {
        tokio::spawn(async move {
            let mut release = m.release.clone();
            release.borrow_and_update();
            for i in 0..m.chunks {
                m.pause(i, hold, &mut release).await;
                let f = format!(
                    "data: {}\n\n",
                    json!({"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m",
                           "choices":[{"index":0,"delta":{"content":"tok "},"finish_reason": null}]})
                );
                if tx.send(bytes::Bytes::from(f)).await.is_err() {
                    return;
                }
            }
            let end = format!(
                "data: {}\n\ndata: {}\n\ndata: [DONE]\n\n",
                json!({"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m",
                       "choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}),
                json!({"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m",
                       "choices":[],"usage":{"prompt_tokens":5,"completion_tokens":m.chunks,"total_tokens":5+m.chunks}})
            );
            let _ = tx.send(bytes::Bytes::from(end)).await;
        })
    })
}

async fn mock_responses(State(m): State<Mock>, body: bytes::Bytes) -> Response {
    let (stream, hold) = ask(&body);
    if !m.latency.is_zero() {
        tokio::time::sleep(m.latency).await;
    }
    let usage = json!({"input_tokens": 5, "output_tokens": m.chunks, "total_tokens": 5 + m.chunks});
    let done = move |text: String| {
        json!({"id": "resp_x", "object": "response", "created_at": 0, "status": "completed", "model": "m",
               "output": [{"type": "message", "id": "msg_x", "status": "completed", "role": "assistant",
                           "content": [{"type": "output_text", "text": text, "annotations": []}]}],
               "usage": usage})
    };
    if !stream {
        return axum::Json(done("hello world".into())).into_response();
    }
    let frame = |n: &str, v: Value| format!("event: {n}\ndata: {v}\n\n");
    sse_body(move |tx| {
        tokio::spawn(async move {
            let mut release = m.release.clone();
            release.borrow_and_update();
            let shell = json!({"id": "resp_x", "object": "response", "created_at": 0, "status": "in_progress", "model": "m", "output": []});
            let head = frame(
                "response.created",
                json!({"type": "response.created", "sequence_number": 0, "response": shell}),
            ) + &frame(
                "response.output_item.added",
                json!({"type": "response.output_item.added", "sequence_number": 1, "output_index": 0,
                    "item": {"type": "message", "id": "msg_x", "status": "in_progress", "role": "assistant", "content": []}}),
            );
            if tx.send(bytes::Bytes::from(head)).await.is_err() {
                return;
            }
            for i in 0..m.chunks {
                m.pause(i, hold, &mut release).await;
                let f = frame(
                    "response.output_text.delta",
                    json!({"type": "response.output_text.delta", "sequence_number": i + 2,
                    "item_id": "msg_x", "output_index": 0, "content_index": 0, "delta": "tok "}),
                );
                if tx.send(bytes::Bytes::from(f)).await.is_err() {
                    return;
                }
            }
            let end = frame(
                "response.completed",
                json!({"type": "response.completed", "sequence_number": m.chunks + 2,
                "response": done("tok ".repeat(m.chunks))}),
            );
            let _ = tx.send(bytes::Bytes::from(end)).await;
        })
    })
}

pub async fn start_mock(m: Mock) -> Result<SocketAddr> {
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(mock_chat))
        .route("/v1/responses", axum::routing::post(mock_responses))
        // What the gateway's /ready and introspection ask, like a real server.
        .route(
            "/v1/models",
            axum::routing::get(|| async {
                axum::Json(json!({"object": "list", "data": [{"id": "m", "object": "model"}]}))
            }),
        )
        .with_state(m);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|t| {
        let _ = t.set_nodelay(true);
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}
