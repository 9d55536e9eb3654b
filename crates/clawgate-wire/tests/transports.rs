//! The three transports against in-process upstreams on 127.0.0.1 that
//! replay recorded llama.cpp / LiteLLM traffic and synthetic streams:
//! text, reasoning from every source, tools, usage, errors, stalls, cuts,
//! unbuffered streaming and cancellation (WIRE-1..7).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clawgate_core::{ApiKind, Secret};
use clawgate_testkit::{FakeServer, Reply};
use clawgate_wire::{
    ChatRequest, Client, Endpoint, Event, Message, Part, Role, StopReason, ToolChoice, ToolDef,
    WireErrorKind,
};
use serde_json::{json, Value};
use tokio::sync::Notify;

fn wire(name: &str) -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/wire")
            .join(name),
    )
    .unwrap()
}

fn recorded(name: &str) -> Reply {
    Reply::recorded(&wire(name)).expect("recorded reply")
}

/// `data:` payloads of a recorded SSE body, parsed independently of the
/// code under test.
fn recorded_data(name: &str) -> Vec<Value> {
    String::from_utf8_lossy(&wire(name))
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect()
}

fn request(stream: bool) -> ChatRequest {
    ChatRequest {
        model: "tiny".into(),
        system: Some("be brief".into()),
        messages: vec![Message::user("hello")],
        max_tokens: Some(12),
        stream,
        ..Default::default()
    }
}

fn endpoint(api: ApiKind, server: &FakeServer) -> Endpoint {
    let mut ep = Endpoint::new(api, server.base_url());
    ep.api_key = Some(Secret::new("sk-test-key"));
    ep
}

#[tokio::test]
async fn wire_1_chat_stream_replays_llamacpp() {
    let server = FakeServer::start(|_| recorded("llamacpp/chat-stream.http")).await;
    let ep = endpoint(ApiKind::OpenAiCompletions, &server);
    let got = Client::new()
        .unwrap()
        .send(&ep, &request(true))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let want: String = recorded_data("llamacpp/chat-stream.http")
        .iter()
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(got.text, want);
    assert_eq!(got.stop, Some(StopReason::MaxTokens));
    let u = got.usage.unwrap();
    assert_eq!(u.output, 12);
    assert!(u.input > 0);
    let req = &server.requests()[0];
    assert_eq!(req.path, "/v1/chat/completions");
    assert_eq!(req.header("authorization"), Some("Bearer sk-test-key"));
    let body: Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(body["stream_options"]["include_usage"], true);
    assert_eq!(body["max_tokens"], 12, "local servers get max_tokens");
    assert_eq!(
        body["messages"][0],
        json!({"role": "system", "content": "be brief"})
    );
}

#[tokio::test]
async fn wire_2_responses_stream_and_body_replay_llamacpp() {
    let server = FakeServer::start(|r| {
        if r.body_str().contains("\"stream\":true") {
            recorded("llamacpp/responses-stream.http")
        } else {
            recorded("llamacpp/responses-nonstream.http")
        }
    })
    .await;
    let ep = endpoint(ApiKind::OpenAiResponses, &server);
    let want: String = recorded_data("llamacpp/responses-stream.http")
        .iter()
        .filter(|v| v["type"] == "response.output_text.delta")
        .filter_map(|v| v["delta"].as_str().map(str::to_string))
        .collect();
    let client = Client::new().unwrap();
    let s = client
        .send(&ep, &request(true))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(s.text, want);
    assert!(s.usage.unwrap().output > 0);
    let n = client
        .send(&ep, &request(false))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert!(!n.text.is_empty());
    assert!(n.usage.is_some());
    let body: Value = serde_json::from_slice(&server.requests()[0].body).unwrap();
    assert_eq!(body["instructions"], "be brief");
    assert_eq!(body["max_output_tokens"], 12);
    assert_eq!(body["input"][0]["content"][0]["type"], "input_text");
    assert!(body.get("store").is_none());
    assert_eq!(server.requests()[0].path, "/v1/responses");
}

#[tokio::test]
async fn wire_3_messages_stream_and_body_replay_llamacpp() {
    let server = FakeServer::start(|r| {
        if r.body_str().contains("\"stream\":true") {
            recorded("llamacpp/messages-stream.http")
        } else {
            recorded("llamacpp/messages-nonstream.http")
        }
    })
    .await;
    let ep = endpoint(ApiKind::AnthropicMessages, &server);
    let want: String = recorded_data("llamacpp/messages-stream.http")
        .iter()
        .filter(|v| v["type"] == "content_block_delta")
        .filter_map(|v| v["delta"]["text"].as_str().map(str::to_string))
        .collect();
    let client = Client::new().unwrap();
    let s = client
        .send(&ep, &request(true))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(s.text, want);
    assert_eq!(s.stop, Some(StopReason::EndTurn));
    assert_eq!(s.usage.unwrap().output, 4);
    let n = client
        .send(&ep, &request(false))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert!(n.usage.is_some());
    let req = &server.requests()[0];
    assert_eq!(req.path, "/v1/messages");
    assert_eq!(req.header("x-api-key"), Some("sk-test-key"));
    assert_eq!(req.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(req.header("authorization"), None);
    let body: Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(body["system"], "be brief");
}

#[tokio::test]
async fn litellm_and_nonstream_chat_replay() {
    let server = FakeServer::start(|r| {
        if r.body_str().contains("\"stream\":true") {
            recorded("litellm/chat-stream.http")
        } else {
            recorded("llamacpp/chat-nonstream.http")
        }
    })
    .await;
    let ep = endpoint(ApiKind::OpenAiCompletions, &server);
    let client = Client::new().unwrap();
    let s = client
        .send(&ep, &request(true))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert!(!s.text.is_empty());
    let n = client
        .send(&ep, &request(false))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(n.stop, Some(StopReason::MaxTokens));
    assert_eq!(n.usage.unwrap().output, 12);
}

fn sse(frames: &[Value]) -> Vec<String> {
    frames.iter().map(|f| format!("data: {f}\n\n")).collect()
}

fn named(frames: &[(&str, Value)]) -> Vec<String> {
    frames
        .iter()
        .map(|(n, f)| format!("event: {n}\ndata: {f}\n\n"))
        .collect()
}

#[tokio::test]
async fn wire_5_reasoning_from_every_source() {
    // chat: reasoning_content, `reasoning`, and inline <think> cut mid-tag.
    let chat = sse(&[
        json!({"choices":[{"delta":{"reasoning_content":"step 1. "}}]}),
        json!({"choices":[{"delta":{"reasoning":"step 2. "}}]}),
        json!({"choices":[{"delta":{"content":"<thi"}}]}),
        json!({"choices":[{"delta":{"content":"nk>inner</th"}}]}),
        json!({"choices":[{"delta":{"content":"ink>\n\nAnswer."},"finish_reason":"stop"}]}),
    ]);
    let server = FakeServer::start(move |_| {
        let mut frames = chat.clone();
        frames.push("data: [DONE]\n\n".into());
        Reply::sse(frames)
    })
    .await;
    let ep = endpoint(ApiKind::OpenAiCompletions, &server);
    let c = Client::new()
        .unwrap()
        .send(&ep, &request(true))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(c.text, "Answer.");
    assert_eq!(c.reasoning, "step 1. step 2. inner");

    let resp = named(&[
        ("response.created", json!({"type":"response.created"})),
        (
            "response.reasoning_summary_text.delta",
            json!({"delta":"why "}),
        ),
        ("response.reasoning_text.delta", json!({"delta":"because"})),
        ("response.output_text.delta", json!({"delta":"Done"})),
        (
            "response.completed",
            json!({"response":{"status":"completed","usage":{"input_tokens":5,"output_tokens":2,"output_tokens_details":{"reasoning_tokens":1}}}}),
        ),
    ]);
    let server = FakeServer::start(move |_| Reply::sse(resp.clone())).await;
    let ep = endpoint(ApiKind::OpenAiResponses, &server);
    let c = Client::new()
        .unwrap()
        .send(&ep, &request(true))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(
        (c.text.as_str(), c.reasoning.as_str()),
        ("Done", "why because")
    );
    assert_eq!(c.usage.unwrap().reasoning, 1);

    let msgs = named(&[
        (
            "message_start",
            json!({"message":{"usage":{"input_tokens":9,"cache_read_input_tokens":3}}}),
        ),
        (
            "content_block_start",
            json!({"index":0,"content_block":{"type":"thinking","thinking":""}}),
        ),
        (
            "content_block_delta",
            json!({"index":0,"delta":{"type":"thinking_delta","thinking":"ponder"}}),
        ),
        ("content_block_stop", json!({"index":0})),
        (
            "content_block_start",
            json!({"index":1,"content_block":{"type":"text","text":""}}),
        ),
        (
            "content_block_delta",
            json!({"index":1,"delta":{"type":"text_delta","text":"Hi"}}),
        ),
        (
            "message_delta",
            json!({"delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":7}}),
        ),
        ("message_stop", json!({})),
    ]);
    let server = FakeServer::start(move |_| Reply::sse(msgs.clone())).await;
    let ep = endpoint(ApiKind::AnthropicMessages, &server);
    let c = Client::new()
        .unwrap()
        .send(&ep, &request(true))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!((c.text.as_str(), c.reasoning.as_str()), ("Hi", "ponder"));
    let u = c.usage.unwrap();
    // Anthropic's input_tokens (9) excludes the 3 cache reads: the one
    // internal meaning counts the whole prompt.
    assert_eq!((u.input, u.output, u.cache_read), (12, 7, 3));
}

fn tool_request() -> ChatRequest {
    ChatRequest {
        tools: vec![ToolDef {
            name: "get_weather".into(),
            description: Some("weather".into()),
            parameters: json!({"type":"object","properties":{"city":{"type":"string"}}}),
        }],
        tool_choice: Some(ToolChoice::Named("get_weather".into())),
        ..request(true)
    }
}

#[tokio::test]
async fn wire_4_parallel_fragmented_tool_calls_on_all_protocols() {
    let chat = sse(&[
        json!({"choices":[{"delta":{"tool_calls":[{"index":0,"id":"c1","function":{"name":"get_weather","arguments":"{\"ci"}}]}}]}),
        json!({"choices":[{"delta":{"tool_calls":[{"index":1,"id":"c2","function":{"name":"get_weather","arguments":""}}]}}]}),
        json!({"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"ty\":\"Paris\"}"}}]}}]}),
        json!({"choices":[{"delta":{"tool_calls":[{"index":1,"function":{"arguments":"{\"city\":\"Oslo\"}"}}]},"finish_reason":"tool_calls"}]}),
    ]);
    let server = FakeServer::start(move |_| Reply::sse(chat.clone())).await;
    let ep = endpoint(ApiKind::OpenAiCompletions, &server);
    let c = Client::new()
        .unwrap()
        .send(&ep, &tool_request())
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(c.stop, Some(StopReason::ToolUse));
    assert_eq!(c.tool_calls.len(), 2);
    assert_eq!(c.tool_calls[0].arguments, "{\"city\":\"Paris\"}");
    assert_eq!(c.tool_calls[1].id, "c2");
    assert_eq!(c.tool_calls[1].arguments, "{\"city\":\"Oslo\"}");
    let body: Value = serde_json::from_slice(&server.requests()[0].body).unwrap();
    assert_eq!(body["tools"][0]["function"]["name"], "get_weather");
    assert_eq!(body["tool_choice"]["function"]["name"], "get_weather");

    let resp = named(&[
        (
            "response.output_item.added",
            json!({"output_index":0,"item":{"type":"function_call","call_id":"call_a","name":"get_weather","arguments":""}}),
        ),
        (
            "response.function_call_arguments.delta",
            json!({"output_index":0,"delta":"{\"city\":"}),
        ),
        (
            "response.function_call_arguments.delta",
            json!({"output_index":0,"delta":"\"Rome\"}"}),
        ),
        (
            "response.output_item.done",
            json!({"output_index":0,"item":{"type":"function_call","call_id":"call_a","name":"get_weather","arguments":"{\"city\":\"Rome\"}"}}),
        ),
        (
            "response.completed",
            json!({"response":{"status":"completed"}}),
        ),
    ]);
    let server = FakeServer::start(move |_| Reply::sse(resp.clone())).await;
    let ep = endpoint(ApiKind::OpenAiResponses, &server);
    let c = Client::new()
        .unwrap()
        .send(&ep, &tool_request())
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(c.tool_calls.len(), 1);
    assert_eq!(
        c.tool_calls[0].arguments, "{\"city\":\"Rome\"}",
        "done does not repeat deltas"
    );
    assert_eq!(c.stop, Some(StopReason::ToolUse));

    let msgs = named(&[
        (
            "message_start",
            json!({"message":{"usage":{"input_tokens":1}}}),
        ),
        (
            "content_block_start",
            json!({"index":0,"content_block":{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{}}}),
        ),
        (
            "content_block_delta",
            json!({"index":0,"delta":{"type":"input_json_delta","partial_json":"{\"city\": \"Ly"}}),
        ),
        (
            "content_block_delta",
            json!({"index":0,"delta":{"type":"input_json_delta","partial_json":"on\"}"}}),
        ),
        ("content_block_stop", json!({"index":0})),
        (
            "message_delta",
            json!({"delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":3}}),
        ),
        ("message_stop", json!({})),
    ]);
    let server = FakeServer::start(move |_| Reply::sse(msgs.clone())).await;
    let ep = endpoint(ApiKind::AnthropicMessages, &server);
    let c = Client::new()
        .unwrap()
        .send(&ep, &tool_request())
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(c.tool_calls[0].name, "get_weather");
    assert_eq!(c.tool_calls[0].arguments, "{\"city\": \"Lyon\"}");
    let body: Value = serde_json::from_slice(&server.requests()[0].body).unwrap();
    assert_eq!(
        body["tool_choice"],
        json!({"type":"tool","name":"get_weather"})
    );
    assert_eq!(body["tools"][0]["input_schema"]["type"], "object");
}

#[tokio::test]
async fn tool_results_go_back_in_each_protocols_shape() {
    let server = FakeServer::start(|_| {
        Reply::json(
            200,
            r#"{"choices":[{"message":{"content":"ok"},"finish_reason":"stop"}]}"#,
        )
    })
    .await;
    let history = vec![
        Message::user("weather?"),
        Message {
            role: Role::Assistant,
            parts: vec![Part::ToolCall {
                id: "c1".into(),
                name: "get_weather".into(),
                arguments: "{\"city\":\"Paris\"}".into(),
            }],
        },
        Message {
            role: Role::User,
            parts: vec![Part::ToolResult {
                id: "c1".into(),
                content: "sunny".into(),
                is_error: false,
            }],
        },
    ];
    let req = ChatRequest {
        messages: history.clone(),
        ..request(false)
    };
    let client = Client::new().unwrap();
    for api in [
        ApiKind::OpenAiCompletions,
        ApiKind::OpenAiResponses,
        ApiKind::AnthropicMessages,
    ] {
        let ep = endpoint(api, &server);
        let _ = client.send(&ep, &req).await.unwrap().collect().await;
    }
    let reqs = server.requests();
    let chat: Value = serde_json::from_slice(&reqs[0].body).unwrap();
    assert_eq!(chat["messages"][2]["tool_calls"][0]["id"], "c1");
    assert_eq!(
        chat["messages"][3],
        json!({"role":"tool","content":"sunny","tool_call_id":"c1"})
    );
    let resp: Value = serde_json::from_slice(&reqs[1].body).unwrap();
    assert_eq!(resp["input"][1]["type"], "function_call");
    assert_eq!(
        resp["input"][2],
        json!({"type":"function_call_output","call_id":"c1","output":"sunny"})
    );
    let msgs: Value = serde_json::from_slice(&reqs[2].body).unwrap();
    assert_eq!(
        msgs["messages"][1]["content"][0]["input"],
        json!({"city":"Paris"})
    );
    assert_eq!(msgs["messages"][2]["content"][0]["type"], "tool_result");
    assert_eq!(msgs["max_tokens"], 12);
}

#[tokio::test]
async fn wire_6_compat_shaping_and_extra_body() {
    let server = FakeServer::start(|_| {
        Reply::json(
            200,
            r#"{"choices":[{"message":{"content":"ok"},"finish_reason":"stop"}]}"#,
        )
    })
    .await;
    let mut ep = endpoint(ApiKind::OpenAiCompletions, &server);
    ep.shaping.string_content = true;
    ep.shaping.strict_message_keys = true;
    ep.shaping.tools = false;
    let mut req = tool_request();
    req.stream = false;
    req.messages = vec![Message {
        role: Role::User,
        parts: vec![
            Part::Text("look".into()),
            Part::Image {
                url: "http://img/x.png".into(),
            },
        ],
    }];
    req.extra_body.insert("store".into(), json!(true));
    req.extra_body.insert(
        "chat_template_kwargs".into(),
        json!({"enable_thinking": false}),
    );
    req.extra_body.insert("max_tokens".into(), json!(99));
    let _ = Client::new()
        .unwrap()
        .send(&ep, &req)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&server.requests()[0].body).unwrap();
    assert_eq!(
        body["messages"][1]["content"],
        "look\n[image: http://img/x.png]"
    );
    assert!(body.get("tools").is_none() && body.get("tool_choice").is_none());
    assert!(
        body.get("store").is_none(),
        "OpenAI-only field stripped on custom endpoints"
    );
    assert_eq!(body["chat_template_kwargs"]["enable_thinking"], false);
    assert_eq!(body["max_tokens"], 99, "extra_body wins collisions");
}

#[tokio::test]
async fn upstream_errors_carry_status_type_and_retry_after() {
    let server = FakeServer::start(|r| match r.body_str().contains("overflow") {
        true => recorded("llamacpp/chat-context-overflow.http"),
        false => Reply::json(
            429,
            r#"{"error":{"message":"slow down","type":"rate_limit_error"}}"#,
        )
        .header("retry-after", "7"),
    })
    .await;
    let ep = endpoint(ApiKind::OpenAiCompletions, &server);
    let client = Client::new().unwrap();
    let mut req = request(true);
    req.messages = vec![Message::user("overflow")];
    let e = client.send(&ep, &req).await.err().unwrap();
    assert_eq!(e.status, Some(400));
    assert_eq!(e.error_type.as_deref(), Some("exceed_context_size_error"));
    let e = client.send(&ep, &request(true)).await.err().unwrap();
    assert_eq!(e.status, Some(429));
    assert_eq!(e.retry_after, Some(Duration::from_secs(7)));
    assert_eq!(e.error_type.as_deref(), Some("rate_limit_error"));
    assert_eq!(e.message, "slow down");

    let litellm = FakeServer::start(|_| recorded("litellm/chat-upstream-down.http")).await;
    let e = client
        .send(
            &endpoint(ApiKind::OpenAiCompletions, &litellm),
            &request(true),
        )
        .await
        .err()
        .unwrap();
    assert_eq!(e.status, Some(500));
    assert!(e.message.contains("Connection error"), "{}", e.message);

    // Nothing listens: connection refused.
    let dead = Endpoint::new(ApiKind::OpenAiCompletions, "http://127.0.0.1:9/v1");
    let e = client.send(&dead, &request(true)).await.err().unwrap();
    assert_eq!(e.kind, WireErrorKind::Connect);
}

#[tokio::test]
async fn stream_errors_inside_200() {
    let server = FakeServer::start(|r| {
        if r.path.ends_with("/responses") {
            Reply::sse([named(&[
                ("response.output_text.delta", json!({"delta":"par"})),
                (
                    "error",
                    json!({"type":"error","code":"server_error","message":"boom"}),
                ),
            ])
            .concat()])
        } else {
            Reply::sse(sse(&[
                json!({"choices":[{"delta":{"content":"x"},"finish_reason":"error"}]}),
            ]))
        }
    })
    .await;
    let client = Client::new().unwrap();
    let e = client
        .send(
            &endpoint(ApiKind::OpenAiCompletions, &server),
            &request(true),
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap_err();
    assert_eq!(e.kind, WireErrorKind::StreamError);
    let mut s = client
        .send(&endpoint(ApiKind::OpenAiResponses, &server), &request(true))
        .await
        .unwrap();
    assert_eq!(
        s.next().await.unwrap().unwrap(),
        Event::TextDelta("par".into())
    );
    let e = s.next().await.unwrap().unwrap_err();
    assert_eq!(
        (e.kind, e.message.as_str(), e.output_started),
        (WireErrorKind::StreamError, "boom", true)
    );
    assert!(s.next().await.is_none());
}

#[tokio::test]
async fn wire_7_stall_times_out_and_cut_stream_is_an_error() {
    let server = FakeServer::start(|r| {
        if r.body_str().contains("stall") {
            Reply::sse(sse(&[json!({"choices":[{"delta":{"content":"a"}}]})]))
                .sleep(Duration::from_secs(30))
        } else if r.body_str().contains("hang") {
            Reply::new(200).sleep(Duration::from_secs(30))
        } else {
            Reply::sse(sse(&[json!({"choices":[{"delta":{"content":"partial"}}]})]))
                .bytes("data: {\"choices\":[{\"del")
                .close()
        }
    })
    .await;
    let client = Client::new().unwrap();
    let mut ep = endpoint(ApiKind::OpenAiCompletions, &server);
    ep.idle_timeout = Duration::from_millis(300);
    let mut req = request(true);
    req.messages = vec![Message::user("stall")];
    let e = client
        .send(&ep, &req)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap_err();
    assert_eq!(e.kind, WireErrorKind::Idle);
    assert!(e.output_started);

    ep.idle_timeout = Duration::from_secs(60);
    ep.timeout = Duration::from_millis(400);
    req.messages = vec![Message::user("hang")];
    let e = match client.send(&ep, &req).await {
        Ok(s) => s.collect().await.unwrap_err(),
        Err(e) => e,
    };
    assert!(matches!(e.kind, WireErrorKind::Timeout(_)), "{e:?}");

    ep.timeout = Duration::from_secs(60);
    let e = client
        .send(&ep, &request(true))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap_err();
    assert_eq!(e.kind, WireErrorKind::Truncated, "{e:?}");
    assert!(e.output_started);
}

#[tokio::test]
async fn streaming_is_not_buffered_and_drop_cancels_upstream() {
    let release = Arc::new(Notify::new());
    let r2 = release.clone();
    let server = FakeServer::start(move |_| {
        Reply::sse(sse(&[json!({"choices":[{"delta":{"content":"first"}}]})]))
            .wait(r2.clone())
            .bytes(format!(
                "data: {}\n\ndata: [DONE]\n\n",
                json!({"choices":[{"delta":{"content":" second"},"finish_reason":"stop"}]})
            ))
    })
    .await;
    let ep = endpoint(ApiKind::OpenAiCompletions, &server);
    let client = Client::new().unwrap();
    let mut s = client.send(&ep, &request(true)).await.unwrap();
    // The upstream holds the rest until released: the first delta must
    // already be here.
    let first = tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .unwrap();
    assert_eq!(first.unwrap().unwrap(), Event::TextDelta("first".into()));
    release.notify_waiters();
    let rest = s.collect().await.unwrap();
    assert_eq!(rest.text, " second");

    // Dropping a stream mid-answer closes the upstream connection.
    let mut s = client.send(&ep, &request(true)).await.unwrap();
    assert!(s.next().await.unwrap().is_ok());
    drop(s);
    tokio::time::timeout(Duration::from_secs(10), server.wait_disconnect())
        .await
        .unwrap();
    assert_eq!(server.disconnects(), 1);
}

#[tokio::test]
async fn wire_6_tool_text_promoted_only_for_offered_tools() {
    let frames = sse(&[
        json!({"choices":[{"delta":{"content":"Checking. [get_wea"}}]}),
        json!({"choices":[{"delta":{"content":"ther]{\"city\":\"Nice\"}[END_TOOL"}}]}),
        json!({"choices":[{"delta":{"content":"_REQUEST]"},"finish_reason":"stop"}]}),
    ]);
    let server = FakeServer::start(move |_| Reply::sse(frames.clone())).await;
    let ep = endpoint(ApiKind::OpenAiCompletions, &server);
    let client = Client::new().unwrap();
    let c = client
        .send(&ep, &tool_request())
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(c.text, "Checking. ");
    assert_eq!(c.tool_calls.len(), 1);
    assert_eq!(c.tool_calls[0].name, "get_weather");
    assert_eq!(c.tool_calls[0].arguments, "{\"city\":\"Nice\"}");
    assert_eq!(c.stop, Some(StopReason::ToolUse));
    // Same text, no tools offered in this turn: it stays text.
    let c = client
        .send(&ep, &request(true))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(
        c.text,
        "Checking. [get_weather]{\"city\":\"Nice\"}[END_TOOL_REQUEST]"
    );
    assert!(c.tool_calls.is_empty());
    assert_eq!(c.stop, Some(StopReason::EndTurn));
}
