//! The gateway over real sockets: an OpenAI-style client (reqwest) in
//! front, fake model servers behind, all on 127.0.0.1 (GW-1..3, SEC-1).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use clawgate_api::{check_auth, AppState, GatewayAuth, ServeOptions};
use clawgate_catalog::load_text;
use clawgate_config::AuthMode;
use clawgate_router::Runner;
use clawgate_testkit::{FakeServer, Reply};
use clawgate_wire::Client;
use serde_json::{json, Value};
use tokio::sync::Notify;

mod common;
use common::*;

fn responses_stream(frames: &[(&str, Value)]) -> Reply {
    Reply::sse(
        frames
            .iter()
            .map(|(n, v)| format!("event: {n}\ndata: {v}\n\n"))
            .collect::<Vec<_>>(),
    )
}

fn lmstudio_answer() -> Reply {
    responses_stream(&[
        (
            "response.reasoning_text.delta",
            json!({"delta": "thinking..."}),
        ),
        ("response.output_text.delta", json!({"delta": "Bonjour"})),
        ("response.output_text.delta", json!({"delta": " !"})),
        (
            "response.completed",
            json!({"response": {"status": "completed", "usage": {"input_tokens": 9, "output_tokens": 3, "output_tokens_details": {"reasoning_tokens": 2}}}}),
        ),
    ])
}

/// The seed hybrid config with the hosted primary on a dead port and LM
/// Studio on `lmstudio`.
async fn start(lmstudio: &str, auth: GatewayAuth) -> Gw {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/configs/seed-hybrid-hosted-primary.json5"),
    )
    .unwrap()
    .replace("http://127.0.0.1:1234/v1", lmstudio)
    .replacen(
        "providers: {",
        "providers: {\n      anthropic: { baseUrl: \"http://127.0.0.1:9\" },",
        1,
    );
    let reg = load_text(Path::new("seed.json5"), &text, &|_| None)
        .unwrap()
        .registry;
    serve_state(AppState::new(reg, runner(), auth), ServeOptions::default()).await
}

#[tokio::test]
async fn gw_1_chat_non_stream_through_fallback_with_provenance() {
    // The model server takes 400 ms: the gateway's own time excludes it.
    const UPSTREAM: Duration = Duration::from_millis(400);
    let lm = FakeServer::start(|_| lmstudio_answer().sleep(UPSTREAM)).await;
    let gw = start(&lm.base_url(), token_auth()).await;
    let sent = std::time::Instant::now();
    let r = http()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(TOKEN)
        .json(&json!({"model": "default", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "salut"}]}))
        .send()
        .await
        .unwrap();
    let elapsed = sent.elapsed();
    assert_eq!(r.status(), 200);
    // PERF-5: the gateway's own time, as a number of microseconds: the
    // answer's time minus the time spent waiting on upstreams, so at most
    // what the client waited less the upstream's 400 ms.
    let overhead: u64 = r.headers()["x-clawgate-overhead-us"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(elapsed > UPSTREAM);
    assert!(
        Duration::from_micros(overhead) <= elapsed - UPSTREAM,
        "overhead {overhead} µs, client waited {elapsed:?} of which {UPSTREAM:?} upstream"
    );
    let served = r.headers()["x-clawgate-served-by"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        served.starts_with("lmstudio/minimax-m2.1-gs32; host=127.0.0.1:"),
        "{served}"
    );
    assert_eq!(
        r.headers()["x-clawgate-fallback"].to_str().unwrap(),
        "answered by lmstudio/minimax-m2.1-gs32 (selected anthropic/claude-sonnet-4-5: unreachable)"
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "default");
    assert_eq!(v["choices"][0]["message"]["content"], "Bonjour !");
    assert_eq!(
        v["choices"][0]["message"]["reasoning_content"],
        "thinking..."
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12, "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 2}})
    );
    // Cross-protocol: the chat request went out as a Responses call.
    let up: Value = serde_json::from_slice(&lm.requests()[0].body).unwrap();
    assert_eq!(lm.requests()[0].path, "/v1/responses");
    // Metrics: the request, the fallback, the failure class, tokens.
    let m = http()
        .get(gw.url("/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "clawgate_requests_total{endpoint=\"/v1/chat/completions\",status=\"200\"} 1",
        "clawgate_fallbacks_total 1",
        "clawgate_upstream_failures_total{class=\"unreachable\"} 1",
        "clawgate_tokens_total{provider=\"lmstudio\",model=\"minimax-m2.1-gs32\",kind=\"output\"} 3",
        "clawgate_answer_duration_seconds_count{provider=\"lmstudio\",model=\"minimax-m2.1-gs32\"} 1",
        "clawgate_overhead_seconds_count{provider=\"lmstudio\",model=\"minimax-m2.1-gs32\"} 1",
    ] {
        assert!(m.lines().any(|l| l == line), "{line} in\n{m}");
    }
    assert_eq!(up["instructions"], "be brief");
    assert_eq!(up["model"], "minimax-m2.1-gs32");
}

#[tokio::test]
async fn gw_1_chat_stream_keeps_reasoning_out_of_content() {
    let lm = FakeServer::start(|_| lmstudio_answer()).await;
    let gw = start(&lm.base_url(), token_auth()).await;
    let r = http()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(TOKEN)
        .json(&json!({"model": "MiniMax Local", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "salut"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let text = r.text().await.unwrap();
    let chunks: Vec<Value> = text
        .split("\n\n")
        .filter_map(|f| f.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(text.trim_end().ends_with("data: [DONE]"));
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    let reasoning: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["reasoning_content"].as_str())
        .collect();
    assert_eq!(content, "Bonjour !");
    assert_eq!(reasoning, "thinking...");
    let finish: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
        .collect();
    assert_eq!(finish, ["stop"]);
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["completion_tokens"], 3);
}

#[tokio::test]
async fn sec_1_auth_missing_wrong_right_and_public_bind_refusal() {
    let lm = FakeServer::start(|_| lmstudio_answer()).await;
    let gw = start(&lm.base_url(), token_auth()).await;
    let body = json!({"model": "default", "messages": [{"role": "user", "content": "x"}]});
    let r = http()
        .post(gw.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "authentication_error");
    let r = http()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("wrong")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http()
        .get(gw.url("/v1/models"))
        .header("x-api-key", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Repeated failures from one address: further failed attempts get 429
    // with Retry-After until the window passes; the right token still
    // passes. Two failures above already count.
    for _ in 2..clawgate_api::MAX_FAILURES {
        let r = http()
            .get(gw.url("/v1/models"))
            .bearer_auth("guess")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let r = http()
        .get(gw.url("/v1/models"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http()
        .get(gw.url("/v1/models"))
        .bearer_auth("guess")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait));
    // /health needs no credential.
    assert_eq!(
        http().get(gw.url("/health")).send().await.unwrap().status(),
        200
    );
    let none = GatewayAuth::new(AuthMode::None, None);
    assert!(check_auth("0.0.0.0:18789".parse().unwrap(), &none).is_err());
    assert!(check_auth("127.0.0.1:18789".parse().unwrap(), &none).is_ok());
    let empty = GatewayAuth::new(AuthMode::Token, None);
    assert!(check_auth("127.0.0.1:18789".parse().unwrap(), &empty).is_err());
}

#[tokio::test]
async fn gw_3_errors_in_openai_shape_with_statuses() {
    let lm = FakeServer::start(|r| {
        if r.body_str().contains("slow down") {
            Reply::json(429, r#"{"error":{"message":"rate limited"}}"#).header("retry-after", "61")
        } else {
            Reply::json(400, r#"{"error":{"message":"request (9000 tokens) exceeds the available context size (1024 tokens)","type":"exceed_context_size_error"}}"#)
        }
    })
    .await;
    let gw = start(&lm.base_url(), GatewayAuth::new(AuthMode::None, None)).await;
    let post = |body: Vec<u8>| {
        http()
            .post(gw.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let r = post(b"{not json".to_vec()).await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["type"],
        "invalid_request_error"
    );
    let r = post(
        serde_json::to_vec(
            &json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "model_not_found");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Valid targets: default, openclaw, Sonnet"),
        "{v}"
    );
    let r = post(serde_json::to_vec(&json!({"model": "default", "temperature": 3, "messages": [{"role": "user", "content": "x"}]})).unwrap()).await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["param"],
        "temperature"
    );
    let r = post(serde_json::to_vec(&json!({"model": "default", "messages": []})).unwrap())
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let big = vec![b' '; clawgate_api::MAX_BODY + 10];
    let r = post(big).await.unwrap();
    assert_eq!(r.status(), 413);
    assert!(r.json::<Value>().await.unwrap()["error"]["message"].is_string());
    // Context overflow from the server: surfaced as 400, not failed over.
    let r = post(serde_json::to_vec(&json!({"model": "lmstudio/minimax-m2.1-gs32", "messages": [{"role": "user", "content": "long"}]})).unwrap()).await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "context_length_exceeded"
    );
    // A rate limit with nothing to fail over to and a Retry-After too long
    // to wait for: 429 with Retry-After.
    let r = post(serde_json::to_vec(&json!({"model": "MiniMax Local", "messages": [{"role": "user", "content": "slow down"}]})).unwrap()).await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "61");
    // Everything down (refused): 502 in the same shape.
    let r = post(
        serde_json::to_vec(
            &json!({"model": "Sonnet", "messages": [{"role": "user", "content": "x"}]}),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "unreachable"
    );
    let r = http().get(gw.url("/v2/nothing")).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn wire_7_client_disconnect_cancels_upstream() {
    let hold = Arc::new(Notify::new());
    let h2 = hold.clone();
    let lm = FakeServer::start(move |_| {
        responses_stream(&[("response.output_text.delta", json!({"delta": "first"}))])
            .wait(h2.clone())
    })
    .await;
    let gw = start(&lm.base_url(), GatewayAuth::new(AuthMode::None, None)).await;
    let mut r = http()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "MiniMax Local", "stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    // The first delta arrives while the upstream still holds the rest.
    let mut seen = String::new();
    while !seen.contains("first") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), r.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(r);
    tokio::time::timeout(Duration::from_secs(10), lm.wait_disconnect())
        .await
        .unwrap();
    assert_eq!(lm.disconnects(), 1);
}

#[tokio::test]
async fn gw_2_models_health_ready() {
    let lm = FakeServer::start(|_| lmstudio_answer()).await;
    let gw = start(&lm.base_url(), GatewayAuth::new(AuthMode::None, None)).await;
    let v: Value = http()
        .get(gw.url("/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    for want in [
        "default",
        "openclaw",
        "Sonnet",
        "MiniMax Local",
        "lmstudio/minimax-m2.1-gs32",
        "anthropic/claude-opus-4-5",
    ] {
        assert!(ids.contains(&want), "{want} in {ids:?}");
    }
    let m: Value = http()
        .get(gw.url("/v1/models/lmstudio/minimax-m2.1-gs32"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(m["owned_by"], "lmstudio");
    assert_eq!(
        http()
            .get(gw.url("/v1/models/nope"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let h: Value = http()
        .get(gw.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h, json!({"ok": true, "status": "live"}));
    let r: Value = http()
        .get(gw.url("/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["default"], "anthropic/claude-sonnet-4-5");
    // The primary's port is dead; the LM Studio fallback answers the probe.
    assert_eq!(r["reachable"], "lmstudio/minimax-m2.1-gs32");
    let dead = start(
        "http://127.0.0.1:9/v1",
        GatewayAuth::new(AuthMode::None, None),
    )
    .await;
    let r = http().get(dead.url("/ready")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "unreachable");
    assert_eq!(v["checked"].as_array().unwrap().len(), 3);
}

/// A streamed answer with reasoning and text, in a backend protocol.
fn backend_stream(api: &str) -> Reply {
    let frames: Vec<String> = match api {
        "openai-completions" => vec![
            format!(
                "data: {}\n\n",
                json!({"choices":[{"delta":{"reasoning_content":"hmm"}}]})
            ),
            format!(
                "data: {}\n\n",
                json!({"choices":[{"delta":{"content":"Hi there"},"finish_reason":"stop"}]})
            ),
            format!(
                "data: {}\n\n",
                json!({"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":2}})
            ),
            "data: [DONE]\n\n".into(),
        ],
        "openai-responses" => vec![
            format!(
                "event: response.reasoning_text.delta\ndata: {}\n\n",
                json!({"delta":"hmm"})
            ),
            format!(
                "event: response.output_text.delta\ndata: {}\n\n",
                json!({"delta":"Hi there"})
            ),
            format!(
                "event: response.completed\ndata: {}\n\n",
                json!({"response":{"status":"completed","usage":{"input_tokens":4,"output_tokens":2}}})
            ),
        ],
        _ => vec![
            format!(
                "event: message_start\ndata: {}\n\n",
                json!({"message":{"usage":{"input_tokens":4}}})
            ),
            format!(
                "event: content_block_start\ndata: {}\n\n",
                json!({"index":0,"content_block":{"type":"thinking","thinking":""}})
            ),
            format!(
                "event: content_block_delta\ndata: {}\n\n",
                json!({"index":0,"delta":{"type":"thinking_delta","thinking":"hmm"}})
            ),
            format!(
                "event: content_block_start\ndata: {}\n\n",
                json!({"index":1,"content_block":{"type":"text","text":""}})
            ),
            format!(
                "event: content_block_delta\ndata: {}\n\n",
                json!({"index":1,"delta":{"type":"text_delta","text":"Hi there"}})
            ),
            format!(
                "event: message_delta\ndata: {}\n\n",
                json!({"delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":2}})
            ),
            format!("event: message_stop\ndata: {}\n\n", json!({})),
        ],
    };
    Reply::sse(frames)
}

/// Text and reasoning of an SSE answer from each inbound protocol.
fn read_inbound(path: &str, body: &str) -> (String, String) {
    let (mut text, mut reasoning) = (String::new(), String::new());
    for frame in body.split("\n\n") {
        let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data: ")) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            continue;
        };
        match path {
            "/v1/chat/completions" => {
                text += v["choices"][0]["delta"]["content"]
                    .as_str()
                    .unwrap_or_default();
                reasoning += v["choices"][0]["delta"]["reasoning_content"]
                    .as_str()
                    .unwrap_or_default();
            }
            "/v1/responses" => match v["type"].as_str() {
                Some("response.output_text.delta") => {
                    text += v["delta"].as_str().unwrap_or_default()
                }
                Some("response.reasoning_text.delta") => {
                    reasoning += v["delta"].as_str().unwrap_or_default()
                }
                _ => {}
            },
            _ => {
                text += v["delta"]["text"].as_str().unwrap_or_default();
                reasoning += v["delta"]["thinking"].as_str().unwrap_or_default();
            }
        }
    }
    (text, reasoning)
}

#[tokio::test]
async fn gw_1_cross_protocol_matrix_streaming() {
    let mut failures = Vec::new();
    for api in [
        "openai-completions",
        "openai-responses",
        "anthropic-messages",
    ] {
        let a = api.to_string();
        let up = FakeServer::start(move |_| backend_stream(&a)).await;
        let text = format!(
            r#"{{ models: {{ mode: "replace", providers: {{ b: {{ baseUrl: "{}", api: "{api}", models: [{{ id: "m" }}] }} }} }} }}"#,
            up.base_url()
        );
        let reg = load_text(Path::new("m.json5"), &text, &|_| None)
            .unwrap()
            .registry;
        let gw = serve_state(
            AppState::new(reg, runner(), no_auth()),
            ServeOptions::default(),
        )
        .await;
        let addr = gw.addr;
        for (path, body) in [
            (
                "/v1/chat/completions",
                json!({"model": "b/m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
            ),
            (
                "/v1/responses",
                json!({"model": "b/m", "stream": true, "input": "hi"}),
            ),
            (
                "/v1/messages",
                json!({"model": "b/m", "stream": true, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}),
            ),
        ] {
            let r = http()
                .post(format!("http://{addr}{path}"))
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status();
            let got = read_inbound(path, &r.text().await.unwrap());
            if status != 200 || got != ("Hi there".to_string(), "hmm".to_string()) {
                failures.push(format!("{path} over {api}: {status} {got:?}"));
            }
        }
        drop(gw);
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[tokio::test]
async fn gw_3_policy_403_and_upstream_502_503() {
    let up = FakeServer::start(|r| {
        if r.body_str().contains("overloaded") {
            Reply::json(
                503,
                r#"{"error":{"message":"Service temporarily overloaded","type":"unavailable_error"}}"#,
            )
        } else {
            Reply::json(500, r#"{"error":{"message":"boom","type":"server_error"}}"#)
        }
    })
    .await;
    let text = format!(
        r#"{{ agents: {{ defaults: {{ modelPolicy: {{ allow: ["b/*"] }} }} }},
             models: {{ providers: {{ b: {{ baseUrl: "{}", models: [{{ id: "m" }}] }} }} }} }}"#,
        up.base_url()
    );
    let reg = load_text(Path::new("p.json5"), &text, &|_| None)
        .unwrap()
        .registry;
    let mut runner = Runner::new(
        Client::new().unwrap(),
        Arc::new(clawgate_router::clock::ManualClock::default()),
    );
    runner.overload.max_retries = 1;
    let gw = serve_state(
        AppState::new(reg, runner, no_auth()),
        ServeOptions::default(),
    )
    .await;
    let addr = gw.addr;
    let post = |model: &str, content: &str| {
        http()
            .post(format!("http://{addr}/v1/chat/completions"))
            .json(&json!({"model": model, "messages": [{"role": "user", "content": content}]}))
            .send()
    };
    let r = post("anthropic/claude-opus-4-5", "x").await.unwrap();
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("agents.defaults.modelPolicy.allow"));
    // Overload first: it sets no cooldown (a 500 would cool the provider).
    let r = post("b/m", "overloaded").await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "overloaded"
    );
    let r = post("b/m", "x").await.unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "server_error"
    );
}

#[tokio::test]
async fn gw_2_routing_header_overrides_agent_backend() {
    let lm = FakeServer::start(|_| lmstudio_answer()).await;
    let gw = start(&lm.base_url(), GatewayAuth::new(AuthMode::None, None)).await;
    let r = http()
        .post(gw.url("/v1/chat/completions"))
        .header("x-clawgate-model", "MiniMax Local")
        .json(&json!({"model": "default", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers().get("x-clawgate-fallback").is_none(),
        "the override is selected, not a fallback"
    );
    assert!(r.headers()["x-clawgate-served-by"]
        .to_str()
        .unwrap()
        .starts_with("lmstudio/minimax-m2.1-gs32"));
    let r = http()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "agent/nobody", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn gw_3_odd_bodies_get_4xx_on_every_endpoint() {
    let lm = FakeServer::start(|_| lmstudio_answer()).await;
    let gw = start(&lm.base_url(), GatewayAuth::new(AuthMode::None, None)).await;
    let bodies = [
        json!([]),
        json!("text"),
        json!({"model": 1}),
        json!({"model": "default", "messages": "x", "input": 5}),
        json!({"model": "default", "max_tokens": -1, "messages": [{"role": "user", "content": {"a": 1}}]}),
        json!({"model": "default", "max_tokens": 8, "messages": [{"role": "robot", "content": "x"}]}),
        json!({"model": "default", "max_tokens": 8, "messages": [{"role": "tool"}], "input": [{"type": "alien"}]}),
        json!({"model": "default", "max_tokens": 8, "messages": [{"role": "user", "content": [{"type": "video"}]}], "input": [{"role": "user", "content": [{"type": "video"}]}]}),
        json!({"model": "default", "max_tokens": 8, "tools": [{"type": "function", "function": {}}, {}], "messages": [{"role": "user", "content": "x"}], "input": "x", "stop": [1, 2]}),
        json!({"model": "", "messages": [], "input": []}),
    ];
    for path in ["/v1/chat/completions", "/v1/responses", "/v1/messages"] {
        for b in &bodies {
            let r = http().post(gw.url(path)).json(b).send().await.unwrap();
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap();
            assert!((400..500).contains(&status), "{path} {b}: {status} {v}");
            let has_error = v.get("error").is_some();
            assert!(has_error, "{path} {b}: {v}");
        }
    }
}

#[tokio::test]
async fn gw_1_responses_items_keep_their_own_text() {
    let up = FakeServer::start(|_| {
        Reply::sse([
            format!("data: {}\n\n", json!({"choices":[{"delta":{"content":"Before. "}}]})),
            format!("data: {}\n\n", json!({"choices":[{"delta":{"tool_calls":[{"index":0,"id":"c1","function":{"name":"f","arguments":"{}"}}]}}]})),
            format!("data: {}\n\n", json!({"choices":[{"delta":{"content":"After."},"finish_reason":"stop"}]})),
            "data: [DONE]\n\n".to_string(),
        ])
    })
    .await;
    let text = format!(
        r#"{{ models: {{ mode: "replace", providers: {{ b: {{ baseUrl: "{}", models: [{{ id: "m" }}] }} }} }} }}"#,
        up.base_url()
    );
    let reg = load_text(Path::new("r.json5"), &text, &|_| None)
        .unwrap()
        .registry;
    let gw = serve_state(
        AppState::new(reg, runner(), no_auth()),
        ServeOptions::default(),
    )
    .await;
    let addr = gw.addr;
    let body = http()
        .post(format!("http://{addr}/v1/responses"))
        .json(&json!({"model": "b/m", "stream": true, "input": "x", "tools": [{"type": "function", "name": "f", "parameters": {}}]}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let done: Vec<String> = body
        .split("\n\n")
        .filter_map(|f| f.lines().find_map(|l| l.strip_prefix("data: ")))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|v| v["type"] == "response.output_text.done")
        .map(|v| v["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(done, ["Before. ", "After."]);
    let completed: Value = body
        .split("\n\n")
        .filter_map(|f| f.lines().find_map(|l| l.strip_prefix("data: ")))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find(|v| v["type"] == "response.completed")
        .unwrap();
    let kinds: Vec<&str> = completed["response"]["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["message", "function_call", "message"]);
}

/// A streamed request to the seed's local model in `path`'s protocol.
fn stream_request(path: &str) -> Value {
    if path == "/v1/responses" {
        json!({"model": "MiniMax Local", "stream": true, "input": "x"})
    } else {
        json!({"model": "MiniMax Local", "stream": true, "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]})
    }
}

/// PERF-3 / issue 6: a chunk from the upstream reaches the client before
/// the upstream sends the next one, on every inbound protocol. The
/// upstream holds the rest of its answer until the client has seen the
/// first delta; a gateway that buffered would never get there.
#[tokio::test]
async fn perf_3_streams_are_not_buffered_on_any_endpoint() {
    for path in ["/v1/chat/completions", "/v1/responses", "/v1/messages"] {
        let release = Arc::new(Notify::new());
        let r2 = release.clone();
        let lm = FakeServer::start(move |_| {
            responses_stream(&[("response.output_text.delta", json!({"delta": "one"}))])
                .wait(r2.clone())
                .bytes(format!(
                    "event: response.output_text.delta\ndata: {}\n\nevent: response.completed\ndata: {}\n\n",
                    json!({"delta": " two"}),
                    json!({"response": {"status": "completed", "usage": {"input_tokens": 1, "output_tokens": 2}}})
                ))
        })
        .await;
        let gw = start(&lm.base_url(), GatewayAuth::new(AuthMode::None, None)).await;
        let body = stream_request(path);
        let mut r = http().post(gw.url(path)).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let mut seen = String::new();
        loop {
            let chunk = tokio::time::timeout(Duration::from_secs(10), r.chunk())
                .await
                .unwrap_or_else(|_| panic!("{path}: first delta held back"))
                .unwrap()
                .unwrap();
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if read_inbound(path, &seen).0 == "one" && seen.ends_with("\n\n") {
                break;
            }
        }
        // Only now does the upstream send the rest.
        release.notify_waiters();
        while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), r.chunk())
            .await
            .unwrap()
            .unwrap()
        {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
        assert_eq!(read_inbound(path, &seen).0, "one two", "{path}: {seen}");
    }
}

/// Many upstream chunks that arrive together are forwarded together, in
/// order, none lost (the gateway writes what is ready in one frame).
#[tokio::test]
async fn perf_3_a_burst_of_chunks_arrives_whole_and_in_order() {
    let mut frames: Vec<(&str, Value)> = Vec::new();
    let words: Vec<String> = (0..500).map(|i| format!("w{i} ")).collect();
    for w in &words {
        frames.push(("response.output_text.delta", json!({ "delta": w })));
    }
    frames.push((
        "response.completed",
        json!({"response": {"status": "completed", "usage": {"input_tokens": 1, "output_tokens": 500}}}),
    ));
    let reply = responses_stream(&frames);
    let lm = FakeServer::start(move |_| reply.clone()).await;
    let gw = start(&lm.base_url(), GatewayAuth::new(AuthMode::None, None)).await;
    for path in ["/v1/chat/completions", "/v1/responses", "/v1/messages"] {
        let body = stream_request(path);
        let r = http().post(gw.url(path)).json(&body).send().await.unwrap();
        let text = r.text().await.unwrap();
        assert_eq!(read_inbound(path, &text).0, words.concat(), "{path}");
    }
}
