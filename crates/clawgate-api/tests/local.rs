//! LOC-2 and LOC-6 at the HTTP surface: a stream whose upstream falls
//! silent carries keep-alives in each protocol's form, and the queue
//! and start waits are reported apart from the gateway's overhead.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use clawgate_api::{AppState, ServeOptions};
use clawgate_catalog::load_text;
use clawgate_testkit::{FakeServer, Reply};
use serde_json::json;

mod common;
use common::*;

/// First chunk, 350 ms of silence, the rest.
fn pausing(api_messages: bool) -> Reply {
    if api_messages {
        Reply::new(200)
            .header("content-type", "text/event-stream")
            .bytes("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":1,\"output_tokens\":0}}}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"one\"}}\n\n")
            .sleep(Duration::from_millis(350))
            .bytes("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" two\"}}\n\nevent: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":2}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")
    } else {
        Reply::new(200)
            .header("content-type", "text/event-stream")
            .bytes("data: {\"choices\":[{\"delta\":{\"content\":\"one\"}}]}\n\n")
            .sleep(Duration::from_millis(350))
            .bytes("data: {\"choices\":[{\"delta\":{\"content\":\" two\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n")
    }
}

async fn gateway_keepalive(config: &str) -> Gw {
    let reg = load_text(Path::new("t.json5"), config, &|_| None)
        .unwrap()
        .registry;
    let state = AppState::new(reg, runner(), no_auth()).with_keepalive(Duration::from_millis(100));
    serve_state(state, ServeOptions::default()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_stream_carries_keepalives_in_each_protocols_form() {
    for (api, path, expected) in [
        (
            "openai-completions",
            "/v1/chat/completions",
            ": keep-alive\n\n",
        ),
        (
            "anthropic-messages",
            "/v1/messages",
            "event: ping\ndata: {\"type\":\"ping\"}\n\n",
        ),
    ] {
        let anthropic = api == "anthropic-messages";
        let up = FakeServer::start(move |_| pausing(anthropic)).await;
        let config = format!(
            r#"{{ models: {{ mode: "replace", providers: {{ b: {{ baseUrl: "{}", api: "{api}", models: [{{ id: "m" }}] }} }} }} }}"#,
            up.base_url()
        );
        let gw = gateway_keepalive(&config).await;
        let body = if anthropic {
            json!({"model": "b/m", "max_tokens": 50, "stream": true, "messages": [{"role": "user", "content": "x"}]})
        } else {
            json!({"model": "b/m", "stream": true, "messages": [{"role": "user", "content": "x"}]})
        };
        let text = http()
            .post(gw.url(path))
            .json(&body)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let one = text.find("one").expect("first chunk");
        let two = text.find(" two").expect("second chunk");
        let ka = text
            .find(expected)
            .unwrap_or_else(|| panic!("{api}: no keep-alive in {text}"));
        assert!(
            one < ka && ka < two,
            "{api}: keep-alive not in the silence: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_wait_is_reported_apart_from_the_overhead() {
    let release = Arc::new(tokio::sync::Notify::new());
    let hold = release.clone();
    let up = FakeServer::start(move |_| {
        Reply::new(200)
            .header("content-type", "text/event-stream")
            .bytes("data: {\"choices\":[{\"delta\":{\"content\":\"one\"}}]}\n\n")
            .wait(hold.clone())
            .bytes("data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n")
    })
    .await;
    let config = format!(
        r#"{{ models: {{ mode: "replace", providers: {{ b: {{ baseUrl: "{}", maxConcurrent: 1, models: [{{ id: "m" }}] }} }} }} }}"#,
        up.base_url()
    );
    let reg = load_text(Path::new("t.json5"), &config, &|_| None)
        .unwrap()
        .registry;
    let client = clawgate_wire::Client::new().unwrap();
    let local = Arc::new(clawgate_local::Supervisor::new(client.clone()));
    let runner = clawgate_router::Runner::new(
        client,
        Arc::new(clawgate_router::clock::TokioClock::default()),
    )
    .with_gate(local.clone());
    let gw = serve_state(
        AppState::with_local(reg, runner, no_auth(), None, Some(local)),
        ServeOptions::default(),
    )
    .await;
    let body =
        json!({"model": "b/m", "stream": true, "messages": [{"role": "user", "content": "x"}]});
    let first = http()
        .post(gw.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    assert!(first.headers().get("x-clawgate-queue-us").is_none());
    let second = tokio::spawn({
        let url = gw.url("/v1/chat/completions");
        let body = body.clone();
        async move { http().post(url).json(&body).send().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m = metrics(&gw).await;
    assert!(
        m.contains("clawgate_queue_waiting{provider=\"b\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("clawgate_queue_in_flight{provider=\"b\"} 1"),
        "{m}"
    );
    let pump = tokio::spawn(async move {
        loop {
            release.notify_waiters();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    assert!(first.text().await.unwrap().contains("[DONE]"));
    let second = second.await.unwrap();
    let queued: u64 = second.headers()["x-clawgate-queue-us"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let overhead: u64 = second.headers()["x-clawgate-overhead-us"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(queued >= 250_000, "queued {queued} µs");
    assert!(
        overhead < queued,
        "the queue wait counted as overhead: {overhead} µs"
    );
    assert!(second.text().await.unwrap().contains("[DONE]"));
    pump.abort();
}

/// A llama.cpp-shaped server whose slots hold `n_ctx` tokens.
fn llama_like(n_ctx: u64) -> impl Fn(&clawgate_testkit::Recorded) -> Reply + Send + Sync + 'static {
    move |r| {
        if r.method == "GET" && r.path == "/v1/models" {
            return Reply::json(
                200,
                &format!(
                    r#"{{"object":"list","data":[{{"id":"m","object":"model","owned_by":"llamacpp","meta":{{"n_ctx":{n_ctx},"n_ctx_train":131072}}}}]}}"#
                ),
            );
        }
        Reply::json(
            200,
            r#"{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"fine"},"finish_reason":"stop"}]}"#,
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_context_the_server_really_serves_is_what_preflight_uses() {
    let up = FakeServer::start(llama_like(16_384)).await;
    let config = format!(
        r#"{{ models: {{ mode: "replace", providers: {{ b: {{ baseUrl: "{}", models: [{{ id: "m", contextWindow: 65536 }}] }} }} }} }}"#,
        up.base_url()
    );
    let reg = Arc::new(
        load_text(Path::new("t.json5"), &config, &|_| None)
            .unwrap()
            .registry,
    );
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn clawgate_store::Store> =
        Arc::new(clawgate_store::SqliteStore::open(&dir.path().join("s.sqlite3")).unwrap());
    let client = clawgate_wire::Client::new().unwrap();
    let local = Arc::new(clawgate_local::Supervisor::new(client.clone()));
    let runner = clawgate_router::Runner::new(
        client,
        Arc::new(clawgate_router::clock::TokioClock::default()),
    )
    .with_gate(local.clone());
    local.learn_all(&reg);
    let state = AppState::with_local((*reg).clone(), runner, no_auth(), Some(store), Some(local));
    for _ in 0..200 {
        if state.runner.served_context("b", "m").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(state.runner.served_context("b", "m"), Some(16_384));
    let gw = serve_state(state, ServeOptions::default()).await;
    // ~10 000 tokens: comfortable in 65 536, past the warning line of 16 384.
    let long = "word ".repeat(8_000);
    let r = http()
        .post(gw.url("/v1/chat/completions"))
        .json(
            &json!({"model": "b/m", "user": "s1", "messages": [{"role": "user", "content": long}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let notice = r.headers()["x-clawgate-context"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(notice.contains("16384-token window (server)"), "{notice}");
    // ~15 000 tokens fit 65 536 but not the real window: refused before
    // anything is sent, in the client's protocol, naming the real size.
    let before = up.requests().len();
    let longer = "word ".repeat(12_000);
    let r = http()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "b/m", "user": "s2", "messages": [{"role": "user", "content": longer}]}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    assert_eq!(
        up.requests().len(),
        before,
        "sent upstream although it cannot fit"
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("context_length_exceeded") && body.contains("16384"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_uses_the_health_probe_a_loading_server_is_not_ready() {
    let loaded = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = loaded.clone();
    let up = FakeServer::start(move |_| {
        if flag.load(std::sync::atomic::Ordering::SeqCst) {
            Reply::json(200, r#"{"object":"list","data":[{"id":"m"}]}"#)
        } else {
            Reply::json(
                503,
                r#"{"error":{"message":"Loading model","type":"unavailable_error","code":503}}"#,
            )
        }
    })
    .await;
    let config = format!(
        r#"{{ models: {{ mode: "replace", providers: {{ b: {{ baseUrl: "{}", models: [{{ id: "m" }}] }} }} }} }}"#,
        up.base_url()
    );
    let gw = gateway(&config, no_auth()).await;
    let r = http().get(gw.url("/ready")).send().await.unwrap();
    assert_eq!(r.status(), 503, "a loading server is not ready");
    loaded.store(true, std::sync::atomic::Ordering::SeqCst);
    let r = http().get(gw.url("/ready")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.requests().last().unwrap().path, "/v1/models");
    // A localService is started on demand: ready although nothing runs.
    let config = format!(
        r#"{{ models: {{ mode: "replace", providers: {{ s: {{ baseUrl: "http://127.0.0.1:{}/v1", localService: {{ command: "/bin/false" }}, models: [{{ id: "m" }}] }} }} }} }}"#,
        clawgate_testkit::free_port()
    );
    let gw = gateway(&config, no_auth()).await;
    let r = http().get(gw.url("/ready")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

/// 503 "Loading model" until `ready_after` has passed, then `answer`.
fn loading_then(
    ready_after: Duration,
    answer: fn() -> Reply,
) -> impl Fn(&clawgate_testkit::Recorded) -> Reply + Send + Sync + 'static {
    let began = std::time::Instant::now();
    move |_| {
        if began.elapsed() < ready_after {
            return Reply::json(
                503,
                r#"{"error":{"message":"Loading model","type":"unavailable_error","code":503}}"#,
            );
        }
        answer()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_routing_commits_the_stream_early_and_keeps_it_alive() {
    // The model loads for 700 ms; keep-alives every 100 ms.
    let up = FakeServer::start(loading_then(Duration::from_millis(700), || pausing(false))).await;
    let config = format!(
        r#"{{ models: {{ mode: "replace", providers: {{ b: {{ baseUrl: "{}", models: [{{ id: "m" }}] }} }} }} }}"#,
        up.base_url()
    );
    let gw = gateway_keepalive(&config).await;
    let t = std::time::Instant::now();
    let mut r = http()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "b/m", "stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        t.elapsed() < Duration::from_millis(600),
        "the head waited for the model: {:?}",
        t.elapsed()
    );
    let first = String::from_utf8_lossy(&r.chunk().await.unwrap().unwrap()).into_owned();
    assert_eq!(first, ": keep-alive\n\n");
    let mut rest = String::new();
    while let Some(c) = r.chunk().await.unwrap() {
        rest.push_str(&String::from_utf8_lossy(&c));
    }
    assert!(
        rest.contains("\"content\":\"one\"") && rest.trim_end().ends_with("data: [DONE]"),
        "{rest}"
    );

    // A model that never loads (timeoutSeconds: 1): the failure arrives as
    // the protocol's error event in the committed stream.
    let never = FakeServer::start(loading_then(Duration::from_secs(3600), || pausing(false))).await;
    for (api, path, body, expect) in [
        (
            "openai-completions",
            "/v1/chat/completions",
            json!({"model": "b/m", "stream": true, "messages": [{"role": "user", "content": "x"}]}),
            "data: {\"error\":",
        ),
        (
            "anthropic-messages",
            "/v1/messages",
            json!({"model": "b/m", "max_tokens": 10, "stream": true, "messages": [{"role": "user", "content": "x"}]}),
            "event: error\ndata: {\"error\":{\"message\":",
        ),
        (
            "openai-responses",
            "/v1/responses",
            json!({"model": "b/m", "stream": true, "input": "x"}),
            "event: error\ndata: {\"code\":",
        ),
    ] {
        let config = format!(
            r#"{{ models: {{ mode: "replace", providers: {{ b: {{ baseUrl: "{}", api: "{api}", timeoutSeconds: 1, models: [{{ id: "m" }}] }} }} }} }}"#,
            never.base_url()
        );
        let gw = gateway_keepalive(&config).await;
        let r = http().post(gw.url(path)).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 200, "{api}");
        let text = r.text().await.unwrap();
        let ka = if api == "anthropic-messages" {
            "event: ping"
        } else {
            ": keep-alive"
        };
        assert!(text.starts_with(ka), "{api}: {text}");
        assert!(text.contains(expect), "{api}: {text}");
        assert!(
            text.contains("Loading model"),
            "{api}: the failure names the cause: {text}"
        );
    }
}
