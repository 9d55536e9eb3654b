//! Issue 10 regressions over real sockets: each test is named after what
//! it prevents (usage per protocol, Claude Code's request shape, auth
//! lockout, policy bypass, secret leaks, cross-site requests, unbounded
//! keys, slow clients).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use clawgate_api::{GatewayAuth, ServeOptions};
use clawgate_catalog::load_text;
use clawgate_testkit::{FakeServer, Recorded, Reply};
use serde_json::{json, Value};

mod common;
use common::*;

/// One provider `b` with model `m` on `base` speaking `api`.
fn one_provider(base: &str, api: &str, extra: &str) -> String {
    format!(
        r#"{{ {extra} models: {{ mode: "replace", providers: {{ b: {{ baseUrl: "{base}", api: "{api}", apiKey: "sk-upstream-secret-0123456789", models: [{{ id: "m" }}] }} }} }} }}"#
    )
}

fn wants_stream(r: &Recorded) -> bool {
    serde_json::from_str::<Value>(&r.body_str()).is_ok_and(|v| v["stream"] == true)
}

/// An upstream answer "ok" with a 100-token prompt of which 80 were read
/// from the cache (and, on Anthropic, 5 written to it), 10 output tokens,
/// in `api`'s own usage meaning, streamed or not as asked.
fn cached_usage_answer(api: &str, stream: bool) -> Reply {
    let sse = |frames: Vec<(&str, Value)>| {
        Reply::sse(
            frames
                .into_iter()
                .map(|(e, d)| {
                    if e.is_empty() {
                        format!("data: {d}\n\n")
                    } else {
                        format!("event: {e}\ndata: {d}\n\n")
                    }
                })
                .chain((api == "openai-completions").then(|| "data: [DONE]\n\n".to_string()))
                .collect::<Vec<_>>(),
        )
    };
    match (api, stream) {
        ("openai-completions", false) => Reply::json(
            200,
            &json!({"id": "c1", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110, "prompt_tokens_details": {"cached_tokens": 80}}})
            .to_string(),
        ),
        ("openai-completions", true) => sse(vec![
            ("", json!({"choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": "stop"}]})),
            ("", json!({"choices": [], "usage": {"prompt_tokens": 100, "completion_tokens": 10, "prompt_tokens_details": {"cached_tokens": 80}}})),
        ]),
        ("openai-responses", false) => Reply::json(
            200,
            &json!({"id": "resp_1", "object": "response", "status": "completed",
                    "output": [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "ok"}]}],
                    "usage": {"input_tokens": 100, "output_tokens": 10, "total_tokens": 110, "input_tokens_details": {"cached_tokens": 80}}})
            .to_string(),
        ),
        ("openai-responses", true) => sse(vec![
            ("response.output_text.delta", json!({"type": "response.output_text.delta", "delta": "ok"})),
            ("response.completed", json!({"type": "response.completed", "response": {"status": "completed",
                "usage": {"input_tokens": 100, "output_tokens": 10, "input_tokens_details": {"cached_tokens": 80}}}})),
        ]),
        (_, false) => Reply::json(
            200,
            &json!({"id": "msg_1", "type": "message", "role": "assistant", "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
                    "usage": {"input_tokens": 15, "cache_read_input_tokens": 80, "cache_creation_input_tokens": 5, "output_tokens": 10}})
            .to_string(),
        ),
        (_, true) => sse(vec![
            ("message_start", json!({"type": "message_start", "message": {"id": "msg_1", "usage": {"input_tokens": 15, "cache_read_input_tokens": 80, "cache_creation_input_tokens": 5, "output_tokens": 1}}})),
            ("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})),
            ("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "ok"}})),
            ("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
            ("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 10}})),
            ("message_stop", json!({"type": "message_stop"})),
        ]),
    }
}

/// The usage object of an answer from `path`, streamed or not.
fn usage_of(path: &str, stream: bool, body: &str) -> Value {
    if !stream {
        let v: Value = serde_json::from_str(body).unwrap();
        return v["usage"].clone();
    }
    let mut usage = Value::Null;
    for frame in body.split("\n\n") {
        let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data: ")) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            continue;
        };
        match path {
            "/v1/chat/completions" if !v["usage"].is_null() => usage = v["usage"].clone(),
            "/v1/responses" if v["type"] == "response.completed" => {
                usage = v["response"]["usage"].clone()
            }
            "/v1/messages" if v["type"] == "message_delta" => usage = v["usage"].clone(),
            _ => {}
        }
    }
    usage
}

#[tokio::test]
async fn usage_means_the_same_on_every_protocol_pair() {
    let mut failures = Vec::new();
    for api in [
        "openai-completions",
        "openai-responses",
        "anthropic-messages",
    ] {
        let a = api.to_string();
        let up = FakeServer::start(move |r| cached_usage_answer(&a, wants_stream(r))).await;
        let gw = gateway(&one_provider(&up.base_url(), api, ""), no_auth()).await;
        // Anthropic upstreams report cache writes too; OpenAI ones cannot.
        let write = if api == "anthropic-messages" { 5 } else { 0 };
        for stream in [false, true] {
            for (path, body, want) in [
                (
                    "/v1/chat/completions",
                    json!({"model": "b/m", "stream": stream, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "hi"}]}),
                    json!({"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110, "cached": 80}),
                ),
                (
                    "/v1/responses",
                    json!({"model": "b/m", "stream": stream, "input": "hi"}),
                    json!({"input_tokens": 100, "output_tokens": 10, "total_tokens": 110, "cached": 80}),
                ),
                (
                    "/v1/messages",
                    json!({"model": "b/m", "stream": stream, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}),
                    json!({"input_tokens": 100 - 80 - write, "output_tokens": 10, "cache_read_input_tokens": 80, "cache_creation_input_tokens": write}),
                ),
            ] {
                let r = http().post(gw.url(path)).json(&body).send().await.unwrap();
                let status = r.status();
                let u = usage_of(path, stream, &r.text().await.unwrap());
                let mut got = json!({});
                for k in want.as_object().unwrap().keys() {
                    got[k] = match k.as_str() {
                        "cached" => u["prompt_tokens_details"]["cached_tokens"]
                            .as_u64()
                            .or(u["input_tokens_details"]["cached_tokens"].as_u64())
                            .into(),
                        _ => u[k].clone(),
                    };
                }
                if status != 200 || got != want {
                    failures.push(format!(
                        "{path} (stream {stream}) over {api}: {status} got {got}, want {want}"
                    ));
                }
            }
        }
        // /metrics counts the whole prompt, whatever the protocol.
        let m = metrics(&gw).await;
        let line = |kind: &str| {
            m.lines()
                .find(|l| {
                    l.starts_with("clawgate_tokens_total")
                        && l.contains(&format!("kind=\"{kind}\""))
                })
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|n| n.parse::<u64>().ok())
        };
        if line("input") != Some(600) || line("cache_read") != Some(480) {
            failures.push(format!(
                "/metrics over {api}: input {:?} cache_read {:?}, want 600 and 480",
                line("input"),
                line("cache_read")
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

fn chat_stream(text: &str) -> Reply {
    Reply::sse([
        format!(
            "data: {}\n\n",
            json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": text}}]})
        ),
        format!(
            "data: {}\n\n",
            json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 7, "completion_tokens": 2}})
        ),
        "data: [DONE]\n\n".to_string(),
    ])
}

/// A request Claude Code sent, as recorded in tests/fixtures/claude-code.
fn recorded_claude_code(name: &str) -> (String, Vec<(String, String)>, Value) {
    recorded("claude-code", name)
}

/// A request a real client sent, as recorded in tests/fixtures/<client>.
fn recorded(client: &str, name: &str) -> (String, Vec<(String, String)>, Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(client)
        .join(name);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let headers = v["headers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    (
        v["path"].as_str().unwrap().to_string(),
        headers,
        v["body"].clone(),
    )
}

fn replay(
    gw: &Gw,
    path: &str,
    headers: &[(String, String)],
    body: &Value,
) -> reqwest::RequestBuilder {
    let mut rq = http().post(gw.url(path)).json(body);
    for (k, v) in headers {
        rq = rq.header(k.as_str(), v.as_str());
    }
    rq.header("x-api-key", TOKEN)
}

#[tokio::test]
async fn claude_code_gets_answers_with_system_messages_inside_messages() {
    let up = FakeServer::start(|_| chat_stream("hi there")).await;
    let cfg = one_provider(
        &up.base_url(),
        "openai-completions",
        r#"agents: { defaults: { model: { primary: "b/m" } } },"#,
    );
    let gw = gateway(&cfg, token_auth()).await;
    let (path, headers, mut body) = recorded_claude_code("2.1.332-tool-result-turn.json");
    assert!(headers.iter().any(|(k, _)| k == "anthropic-beta"));
    assert_eq!(body["tools"].as_array().unwrap().len(), 12);
    body["model"] = json!("default");
    // What the issue saw: a system prompt inside `messages` mid-way, and a
    // text document in the last user turn.
    let msgs = body["messages"].as_array_mut().unwrap();
    msgs.insert(
        1,
        json!({"role": "system", "content": [{"type": "text", "text": "MID-CONVERSATION SYSTEM NOTE"}]}),
    );
    msgs.last_mut().unwrap()["content"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "document", "title": "notes.txt", "source": {"type": "text", "media_type": "text/plain", "data": "DOCUMENT BODY"}}));
    let r = replay(&gw, &path, &headers, &body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("\"text_delta\",\"text\":\"hi there\""),
        "{text}"
    );
    assert!(text.contains("event: message_stop"), "{text}");
    let sent: Value = serde_json::from_str(&up.requests()[0].body_str()).unwrap();
    let upstream_msgs = sent["messages"].as_array().unwrap();
    assert_eq!(upstream_msgs[0]["role"], "system");
    let system = upstream_msgs[0]["content"].as_str().unwrap();
    assert!(system.contains("Claude Agent SDK"), "top-level system kept");
    assert!(system.contains("MID-CONVERSATION SYSTEM NOTE"), "folded in");
    assert_eq!(
        upstream_msgs
            .iter()
            .filter(|m| m["role"] == "system")
            .count(),
        1
    );
    assert!(
        sent.to_string().contains("DOCUMENT BODY"),
        "document flattened"
    );
    assert_eq!(sent["tools"].as_array().unwrap().len(), 12);
    assert!(upstream_msgs.iter().any(|m| m["role"] == "tool"));

    // count_tokens: the same body without max_tokens, in Anthropic's shape.
    let mut count = body.clone();
    for k in [
        "max_tokens",
        "stream",
        "metadata",
        "thinking",
        "context_management",
    ] {
        count.as_object_mut().unwrap().remove(k);
    }
    let r = replay(&gw, "/v1/messages/count_tokens?beta=true", &headers, &count)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let n = v["input_tokens"].as_u64().unwrap();
    // ~90 KB of system prompt, tools and messages, mostly English.
    assert!((10_000..40_000).contains(&n), "{n}");
    assert_eq!(v.as_object().unwrap().len(), 1, "{v}");
}

#[tokio::test]
async fn every_messages_error_is_in_anthropic_shape() {
    let up = FakeServer::start(|_| chat_stream("x")).await;
    let gw = gateway(
        &one_provider(&up.base_url(), "openai-completions", ""),
        no_auth(),
    )
    .await;
    let anthropic_error = |v: &Value| v["type"] == "error" && v["error"]["type"].is_string();
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            http().get(gw.url("/v1/messages")),
            405,
            "not an endpoint",
        ),
        (
            http().post(gw.url("/v1/messages/batches")).json(&json!({})),
            404,
            "not an endpoint",
        ),
        (
            http()
                .post(gw.url("/v1/messages/count_tokens"))
                .json(&json!({"model": "b/m"})),
            400,
            "messages",
        ),
        (
            http()
                .post(gw.url("/v1/messages/count_tokens"))
                .json(&json!({"model": "nope/nope", "messages": [{"role": "user", "content": "x"}]})),
            404,
            "does not exist",
        ),
        (
            http().post(gw.url("/v1/messages")).json(&json!({"model": "b/m", "max_tokens": 8,
                "messages": [{"role": "robot", "content": "x"}]})),
            400,
            "must be user, assistant or system, got \"robot\"",
        ),
        (
            http().post(gw.url("/v1/messages")).json(&json!({"model": "b/m", "max_tokens": 8,
                "messages": [{"role": "user", "content": [{"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}}]}]})),
            400,
            "a base64 application/pdf document cannot be sent",
        ),
    ];
    for (rq, status, needle) in cases {
        let r = rq.send().await.unwrap();
        let got = r.status().as_u16();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        let msg = v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            (got == status || (status == 405 && got == 404))
                && anthropic_error(&v)
                && msg.contains(needle)
                && !msg.contains("Some("),
            "{status} {needle}: got {got} {v}"
        );
    }
}

#[tokio::test]
async fn a_valid_credential_is_never_locked_out() {
    let up = FakeServer::start(|_| chat_stream("ok")).await;
    let gw = gateway(
        &one_provider(&up.base_url(), "openai-completions", ""),
        token_auth(),
    )
    .await;
    let chat = json!({"model": "b/m", "messages": [{"role": "user", "content": "x"}]});
    for _ in 0..(clawgate_api::MAX_FAILURES + 5) {
        let r = http()
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth("wrong")
            .json(&chat)
            .send()
            .await
            .unwrap();
        assert!(matches!(r.status().as_u16(), 401 | 429));
    }
    // Failed attempts from this address are throttled now...
    let r = http()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("wrong")
        .json(&chat)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    // ...but the right token passes, in any spelling of the scheme.
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let r = http()
            .post(gw.url("/v1/chat/completions"))
            .header("authorization", format!("{scheme} {TOKEN}"))
            .json(&chat)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{scheme}");
    }
    let r = http()
        .post(gw.url("/v1/messages"))
        .header("x-api-key", TOKEN)
        .json(&json!({"model": "b/m", "max_tokens": 8, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn the_routing_header_cannot_bypass_the_model_policy() {
    let up = FakeServer::start(|_| chat_stream("ok")).await;
    let cfg = format!(
        r#"{{ agents: {{ defaults: {{ model: {{ primary: "b/m" }}, modelPolicy: {{ allow: ["b/m"] }} }} }},
             models: {{ mode: "replace", providers: {{ b: {{ baseUrl: "{0}", api: "openai-completions", models: [{{ id: "m" }}, {{ id: "m3" }}] }} }} }} }}"#,
        up.base_url()
    );
    let gw = gateway(&cfg, no_auth()).await;
    let post = |model: &str, header: Option<&str>| {
        let mut rq = http()
            .post(gw.url("/v1/chat/completions"))
            .json(&json!({"model": model, "messages": [{"role": "user", "content": "x"}]}));
        if let Some(h) = header {
            rq = rq.header("x-clawgate-model", h);
        }
        rq.send()
    };
    assert_eq!(post("b/m3", None).await.unwrap().status(), 403);
    let r = post("default", Some("b/m3")).await.unwrap();
    assert_eq!(r.status(), 403, "the header goes through the same check");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "permission_error");
    assert_eq!(post("default", Some("b/m")).await.unwrap().status(), 200);
    assert_eq!(post("default", None).await.unwrap().status(), 200);
    assert_eq!(up.requests().len(), 2, "nothing reached b/m3");
}

#[tokio::test]
async fn provider_keys_never_leak_through_upstream_error_text() {
    // The upstream quotes the key back, as OpenAI's 401 does.
    let up = FakeServer::start(|r| {
        let key = r.header("authorization").unwrap_or_default().trim_start_matches("Bearer ").to_string();
        if r.body_str().contains("midstream") {
            Reply::sse([
                format!("data: {}\n\n", json!({"choices": [{"index": 0, "delta": {"content": "partial"}}]})),
                format!("data: {}\n\n", json!({"error": {"message": format!("upstream failed for key {key}")}})),
            ])
        } else {
            Reply::json(
                401,
                &json!({"error": {"message": format!("Incorrect API key provided: {key}. You can find your API key at https://example.invalid."), "type": "invalid_request_error", "code": "invalid_api_key"}}).to_string(),
            )
        }
    })
    .await;
    let gw = gateway(
        &one_provider(&up.base_url(), "openai-completions", ""),
        no_auth(),
    )
    .await;
    const KEY: &str = "sk-upstream-secret-0123456789";
    for (path, body) in [
        (
            "/v1/chat/completions",
            json!({"model": "b/m", "messages": [{"role": "user", "content": "x"}]}),
        ),
        ("/v1/responses", json!({"model": "b/m", "input": "x"})),
        (
            "/v1/messages",
            json!({"model": "b/m", "max_tokens": 8, "messages": [{"role": "user", "content": "x"}]}),
        ),
        (
            "/v1/chat/completions",
            json!({"model": "b/m", "stream": true, "messages": [{"role": "user", "content": "midstream"}]}),
        ),
        (
            "/v1/responses",
            json!({"model": "b/m", "stream": true, "input": "midstream"}),
        ),
        (
            "/v1/messages",
            json!({"model": "b/m", "stream": true, "max_tokens": 8, "messages": [{"role": "user", "content": "midstream"}]}),
        ),
    ] {
        let r = http().post(gw.url(path)).json(&body).send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        assert!(
            !text.contains(KEY) && !text.contains("0123456789"),
            "{path}: {text}"
        );
        assert!(!text.contains(&up.base_url()), "no upstream URL: {text}");
        if body["stream"] == true {
            assert!(
                text.contains("upstream failed for key ***"),
                "{path}: {text}"
            );
        } else {
            assert!(status.is_client_error() || status.is_server_error());
            assert!(
                text.contains("Incorrect API key provided: ***"),
                "{path}: {text}"
            );
        }
    }
}

#[tokio::test]
async fn a_web_page_cannot_drive_the_no_auth_loopback_gateway() {
    let up = FakeServer::start(|_| chat_stream("ok")).await;
    let gw = gateway(
        &one_provider(&up.base_url(), "openai-completions", ""),
        no_auth(),
    )
    .await;
    let body = r#"{"model":"b/m","messages":[{"role":"user","content":"x"}]}"#;
    let send = |host: Option<&str>, origin: Option<&str>, ctype: &str| {
        let mut rq = http()
            .post(gw.url("/v1/chat/completions"))
            .header("content-type", ctype)
            .body(body);
        if let Some(h) = host {
            rq = rq.header("host", h);
        }
        if let Some(o) = origin {
            rq = rq.header("origin", o);
        }
        rq.send()
    };
    // DNS rebinding: a foreign Host name.
    let r = send(Some("attacker.example"), None, "application/json")
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.json::<Value>().await.unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("attacker.example"));
    // A cross-site page: foreign Origin, or a "simple" text/plain body.
    assert_eq!(
        send(None, Some("https://attacker.example"), "application/json")
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        send(None, Some("null"), "application/json")
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(send(None, None, "text/plain").await.unwrap().status(), 415);
    assert_eq!(
        send(None, None, "application/x-www-form-urlencoded")
            .await
            .unwrap()
            .status(),
        415
    );
    assert_eq!(up.requests().len(), 0, "nothing reached the model");
    // Loopback names and origins work.
    for (host, origin) in [
        (None, None),
        (Some("localhost:18789"), Some("http://localhost:3000")),
        (Some("[::1]:18789"), None),
    ] {
        let r = send(host, origin, "application/json; charset=utf-8")
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{host:?} {origin:?}");
    }
    // A configured name is accepted.
    let cfg = one_provider(
        &up.base_url(),
        "openai-completions",
        r#"gateway: { http: { allowedHosts: ["gw.home.arpa"] } },"#,
    );
    let reg = load_text(Path::new("t.json5"), &cfg, &|_| None)
        .unwrap()
        .registry;
    let auth = GatewayAuth::from_config(&reg.config.gateway);
    let gw2 = gateway(&cfg, auth).await;
    let r = http()
        .post(gw2.url("/v1/chat/completions"))
        .header("host", "gw.home.arpa:18789")
        .json(&json!({"model":"b/m","messages":[{"role":"user","content":"x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn ready_details_need_the_credential_when_auth_is_on() {
    let up = FakeServer::start(|_| chat_stream("ok")).await;
    let cfg = one_provider(
        &up.base_url(),
        "openai-completions",
        r#"agents: { defaults: { model: { primary: "b/m" } } },"#,
    );
    let gw = gateway(&cfg, token_auth()).await;
    let v: Value = http()
        .get(gw.url("/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v, json!({"ok": true, "status": "ready"}));
    let v: Value = http()
        .get(gw.url("/ready"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["reachable"], "b/m");
    let r = http().get(gw.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 401, "/metrics needs the token too");
}

#[tokio::test]
async fn request_controlled_keys_are_bounded() {
    let up = FakeServer::start(|_| chat_stream("ok")).await;
    let gw = gateway(
        &one_provider(&up.base_url(), "openai-completions", ""),
        no_auth(),
    )
    .await;
    let long = "u".repeat(clawgate_api::MAX_KEY_LEN + 1);
    let ok = "u".repeat(clawgate_api::MAX_KEY_LEN);
    let cases = [
        (
            "/v1/chat/completions",
            json!({"model": "b/m", "user": long, "messages": [{"role": "user", "content": "x"}]}),
            None,
        ),
        (
            "/v1/responses",
            json!({"model": "b/m", "user": long, "input": "x"}),
            None,
        ),
        (
            "/v1/chat/completions",
            json!({"model": "b/m", "messages": [{"role": "user", "content": "x"}]}),
            Some(long.as_str()),
        ),
        (
            "/v1/chat/completions",
            json!({"model": long, "messages": [{"role": "user", "content": "x"}]}),
            None,
        ),
    ];
    for (path, body, header) in cases {
        let mut rq = http().post(gw.url(path)).json(&body);
        if let Some(h) = header {
            rq = rq.header("x-clawgate-session-key", h);
        }
        let r = rq.send().await.unwrap();
        assert_eq!(r.status(), 400, "{path} {header:?}");
        let v: Value = r.json().await.unwrap();
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains("at most 256 bytes"), "{msg}");
        assert!(msg.len() < 200, "the key is not echoed back");
    }
    assert_eq!(up.requests().len(), 0);
    let r = http()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "b/m", "user": ok, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "256 bytes are fine");
    // Anthropic `metadata.user_id` only pins credentials: an over-long one
    // is dropped, the request is answered (Claude Code fills it itself).
    let r = http()
        .post(gw.url("/v1/messages"))
        .json(&json!({"model": "b/m", "max_tokens": 8, "metadata": {"user_id": long}, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn slow_clients_are_cut_off_and_do_not_starve_others() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = FakeServer::start(|_| chat_stream("ok")).await;
    let opts = ServeOptions {
        header_read_timeout: std::time::Duration::from_secs(1),
        ..ServeOptions::default()
    };
    let gw = gateway_with(
        &one_provider(&up.base_url(), "openai-completions", ""),
        no_auth(),
        opts,
    )
    .await;
    // Half-sent requests that never finish their headers.
    let mut slow = Vec::new();
    for _ in 0..300 {
        let mut c = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        c.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            .await
            .unwrap();
        slow.push(c);
    }
    // Normal clients are served meanwhile.
    for _ in 0..20 {
        let r = http()
            .post(gw.url("/v1/chat/completions"))
            .json(&json!({"model": "b/m", "messages": [{"role": "user", "content": "x"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // An idle keep-alive connection after a full request.
    let mut idle = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Every slow and idle connection is closed by the server (EOF or a
    // reset), well before the generous bound here.
    for mut c in slow.into_iter().chain(std::iter::once(idle)) {
        let closed = tokio::time::timeout(std::time::Duration::from_secs(20), async {
            loop {
                match c.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "connection still open");
    }
}

#[tokio::test]
async fn codex_cli_turn_runs_on_a_chat_completions_server() {
    let up = FakeServer::start(|_| chat_stream("hi there")).await;
    let cfg = one_provider(
        &up.base_url(),
        "openai-completions",
        r#"agents: { defaults: { model: { primary: "b/m" } } },"#,
    );
    let gw = gateway(&cfg, token_auth()).await;
    let (path, headers, body) = recorded("codex", "0.171.0-exec-turn.json");
    assert_eq!(body["model"], "default");
    let mut rq = http().post(gw.url(&path)).json(&body).bearer_auth(TOKEN);
    for (k, v) in &headers {
        rq = rq.header(k.as_str(), v.as_str());
    }
    let r = rq.send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains("\"delta\":\"hi there\""), "{text}");
    let completed = text
        .split("\n\n")
        .find(|f| f.contains("event: response.completed"))
        .and_then(|f| f.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .expect("response.completed");
    // What Codex shows as "tokens used": the whole prompt plus output.
    assert_eq!(completed["response"]["usage"]["total_tokens"], 9);
    let sent: Value = serde_json::from_str(&up.requests()[0].body_str()).unwrap();
    let msgs = sent["messages"].as_array().unwrap();
    assert_eq!(msgs[0]["role"], "system");
    assert!(msgs[0]["content"].as_str().unwrap().contains("Codex CLI"));
    assert_eq!(msgs.last().unwrap()["content"], "say hi");
    // Function tools go through; hosted ones (web_search, namespaces)
    // cannot run on a local server and are left out.
    let names: Vec<&str> = sent["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"exec_command"), "{names:?}");
    assert!(!names.iter().any(|n| n.contains("web_search")));
}

#[tokio::test]
async fn an_exhausted_chain_always_has_an_error_code() {
    // Every candidate is skipped before any connection (a local-only data
    // policy and a hosted model): the error still says why, with a code.
    let cfg = r#"{ agents: { defaults: { dataPolicy: "local-only", model: { primary: "h/m" } } },
                   models: { mode: "replace", providers: { h: { baseUrl: "https://api.example.invalid/v1", api: "openai-completions", apiKey: "sk-hosted-secret-0123456789", models: [{ id: "m" }] } } } }"#;
    let gw = gateway(cfg, no_auth()).await;
    for (path, body) in [
        (
            "/v1/chat/completions",
            json!({"model": "default", "messages": [{"role": "user", "content": "x"}]}),
        ),
        ("/v1/responses", json!({"model": "default", "input": "x"})),
    ] {
        let r = http().post(gw.url(path)).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 503, "{path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "no_candidate_available", "{path}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("local-only"),
            "{v}"
        );
    }
}

#[tokio::test]
async fn a_gateway_without_models_names_the_target_it_cannot_serve() {
    let gw = gateway("{}", no_auth()).await;
    let r = http()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "default", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("The model `default` does not exist (no model configured"),
        "{msg}"
    );
}

#[tokio::test]
async fn sec_4_an_agents_tool_allowlist_applies_to_client_tools_on_every_api() {
    let up = FakeServer::start(|r| {
        if wants_stream(r) {
            chat_stream("ok")
        } else {
            Reply::json(
                200,
                &json!({"id": "c", "object": "chat.completion", "model": "m", "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]}).to_string(),
            )
        }
    })
    .await;
    let cfg = one_provider(
        &up.base_url(),
        "openai-completions",
        r#"agents: { defaults: { model: { primary: "b/m" } },
                    entries: { narrow: { tools: { allow: ["read_*", "Grep"], deny: ["read_secrets"], profile: "coding" } } } },"#,
    );
    let gw = gateway(&cfg, no_auth()).await;
    let tool = |name: &str| json!({"type": "function", "function": {"name": name, "parameters": {"type": "object"}}});
    let tools = json!([
        tool("read_file"),
        tool("read_secrets"),
        tool("exec_command"),
        tool("grep")
    ]);
    let sent_tools = |i: usize| -> Vec<String> {
        let v: Value = serde_json::from_str(&up.requests()[i].body_str()).unwrap();
        v["tools"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|t| t["function"]["name"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    // Chat Completions: only the allowed tools reach the model.
    let r = http()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "agent/narrow", "messages": [{"role": "user", "content": "x"}], "tools": tools}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(sent_tools(0), ["read_file", "grep"]);
    // Responses and Messages go through the same check.
    let r = http()
        .post(gw.url("/v1/responses"))
        .json(&json!({"model": "agent/narrow", "input": "x", "tools": [
            {"type": "function", "name": "read_file", "parameters": {"type": "object"}},
            {"type": "function", "name": "exec_command", "parameters": {"type": "object"}}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(sent_tools(1), ["read_file"]);
    let r = http()
        .post(gw.url("/v1/messages"))
        .json(&json!({"model": "agent/narrow", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "tools": [
            {"name": "Bash", "input_schema": {"type": "object"}},
            {"name": "Grep", "input_schema": {"type": "object"}}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(sent_tools(2), ["Grep"]);
    // Forcing a tool the agent may not use: 400 in each protocol's shape.
    let r = http()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "agent/narrow", "messages": [{"role": "user", "content": "x"}], "tools": tools,
                      "tool_choice": {"type": "function", "function": {"name": "read_secrets"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "tool_not_allowed");
    assert_eq!(
        v["error"]["message"],
        "tool \"read_secrets\" is not allowed for agent narrow (agents.entries.narrow.tools.deny)"
    );
    let r = http()
        .post(gw.url("/v1/messages"))
        .json(&json!({"model": "agent/narrow", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
                      "tools": [{"name": "Bash", "input_schema": {"type": "object"}}], "tool_choice": {"type": "tool", "name": "Bash"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("agents.entries.narrow.tools.allow"),
        "{v}"
    );
    assert_eq!(
        up.requests().len(),
        3,
        "refused requests never reach the model"
    );
    // The default agent has no allowlist: everything passes.
    http()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "default", "messages": [{"role": "user", "content": "x"}], "tools": tools}))
        .send()
        .await
        .unwrap();
    assert_eq!(sent_tools(3).len(), 4);
}

#[tokio::test]
async fn an_exhausted_chain_reports_the_primarys_failure_not_the_last_fallbacks() {
    // The README's quick start with LM Studio down and no Anthropic key.
    let port = clawgate_testkit::free_port();
    let cfg = format!(
        r#"{{ agents: {{ defaults: {{ model: {{ primary: "lmstudio/m", fallbacks: ["anthropic/claude-sonnet-4-5"] }} }} }},
             models: {{ mode: "merge", providers: {{
               lmstudio: {{ baseUrl: "http://127.0.0.1:{port}/v1", apiKey: "lmstudio", api: "openai-responses", models: [{{ id: "m" }}] }} }} }} }}"#
    );
    let gw = gateway(&cfg, no_auth()).await;
    let r = http()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "default", "messages": [{"role": "user", "content": "Bonjour"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "unreachable", "{v}");
    // Every attempt is still in the message.
    let m = v["error"]["message"].as_str().unwrap();
    assert!(
        m.contains("lmstudio/m") && m.contains("anthropic/claude-sonnet-4-5"),
        "{m}"
    );
}

#[tokio::test]
async fn connections_past_the_limit_are_closed_and_silent_ones_do_not_hold_on() {
    use tokio::io::AsyncReadExt;
    let up = FakeServer::start(|_| chat_stream("ok")).await;
    let opts = ServeOptions {
        max_connections: 16,
        max_per_peer: 16,
        first_byte_timeout: std::time::Duration::from_millis(300),
        ..ServeOptions::default()
    };
    let gw = gateway_with(
        &one_provider(&up.base_url(), "openai-completions", ""),
        no_auth(),
        opts,
    )
    .await;
    // Sixteen connections that send nothing take every slot...
    let mut idle = Vec::new();
    for _ in 0..16 {
        idle.push(tokio::net::TcpStream::connect(gw.addr).await.unwrap());
    }
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    // ... so a seventeenth is closed at once (not queued, not an
    // accept loop out of descriptors).
    let mut extra = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(std::time::Duration::from_secs(2), extra.read(&mut buf))
        .await
        .expect("closed at once")
        .unwrap_or(0);
    assert_eq!(n, 0);
    // The silent ones are closed after the first-byte timeout, well before
    // the 30 s header timeout, and the gateway answers again.
    for c in &mut idle {
        let n = tokio::time::timeout(std::time::Duration::from_secs(3), c.read(&mut buf))
            .await
            .expect("a silent connection is closed")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }
    let r = http().get(gw.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}
