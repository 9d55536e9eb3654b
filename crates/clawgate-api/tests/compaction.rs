//! Context preflight and compaction over real sockets and a real SQLite
//! file (CTX-2, CTX-3, CTX-4): a model with a small `contextWindow` is
//! compacted automatically and the next turns answer with the summary in
//! context; a context-overflow error from the server triggers one
//! compaction and one retry; tool calls are never parted from their
//! results; a summary keeps every identifier of what it replaced, even
//! when the model drops them; a turn that cannot fit is refused with a 400
//! in the protocol's shape.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use clawgate_store::{EntryKind, SqliteStore, Store};
use clawgate_testkit::{FakeServer, Recorded, Reply};
use common::*;
use serde_json::{json, Value};

/// The summarizer's calls start their system prompt with this.
const SUMMARIZER: &str = "You compact a conversation";
/// What the fake model summarizes everything into: no identifier kept.
const LOSSY_SUMMARY: &str = "The user and the assistant discussed several files and tickets.";

fn body(r: &Recorded) -> Value {
    serde_json::from_str(&r.body_str()).unwrap()
}

fn system_of(v: &Value) -> String {
    v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "system")
        .map(|m| m["content"].as_str().unwrap_or_default().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_summarizer(v: &Value) -> bool {
    system_of(v).starts_with(SUMMARIZER)
}

/// The summary block a compacted session's requests start with: in the
/// first user message, never in the system prompt.
fn summary_of(v: &Value) -> Option<String> {
    let first = v["messages"]
        .as_array()?
        .iter()
        .find(|m| m["role"] != "system")?;
    if first["role"] != "user" {
        return None;
    }
    let text = match &first["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(""),
        _ => return None,
    };
    text.starts_with("<conversation-summary>").then_some(text)
}

/// A chat-completions server: summarizer calls get [`LOSSY_SUMMARY`];
/// a user turn saying "use the tool" gets a tool call; others get
/// `Hello <n>`. Usage reports the request body's size / 4 as the prompt.
/// `overflow_once`: the first non-summarizer call with more than three
/// messages and no summary gets llama.cpp's overflow error.
fn model_server(overflow_once: bool) -> impl Fn(&Recorded) -> Reply + Send + Sync + 'static {
    let n = AtomicUsize::new(0);
    let overflowed = AtomicUsize::new(0);
    move |r: &Recorded| {
        let v = body(r);
        let i = n.fetch_add(1, Ordering::SeqCst) + 1;
        let usage = json!({"prompt_tokens": r.body.len() / 4, "completion_tokens": 7});
        if is_summarizer(&v) {
            return Reply::json(200, &json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": LOSSY_SUMMARY}, "finish_reason": "stop"}], "usage": usage}).to_string());
        }
        let msgs = v["messages"].as_array().unwrap();
        if overflow_once
            && msgs.len() > 3
            && summary_of(&v).is_none()
            && overflowed.fetch_add(1, Ordering::SeqCst) == 0
        {
            return Reply::json(400, &json!({"error": {"code": 400, "message": "the request exceeds the available context size, try increasing it", "type": "exceed_context_size_error", "n_prompt_tokens": 40000, "n_ctx": 32768}}).to_string());
        }
        let last = msgs.last().unwrap();
        if last["role"] == "user"
            && last["content"]
                .as_str()
                .unwrap_or("")
                .contains("use the tool")
        {
            return Reply::json(200, &json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": [{"id": format!("call_{i}"), "type": "function", "function": {"name": "read_file", "arguments": format!("{{\"path\":\"/srv/app/mod_{i}.rs\"}}")}}]}, "finish_reason": "tool_calls"}], "usage": usage}).to_string());
        }
        Reply::json(200, &json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": format!("Hello {i}")}, "finish_reason": "stop"}], "usage": usage}).to_string())
    }
}

fn config(url: &str, window: u64) -> String {
    format!(
        r#"{{ agents: {{ defaults: {{ model: "a/m" }} }},
             models: {{ mode: "replace", providers: {{
               a: {{ baseUrl: "{url}", api: "openai-completions", models: [{{ id: "m", contextWindow: {window} }}] }} }} }} }}"#
    )
}

async fn turn(gw: &Gw, session: &str, messages: Value) -> reqwest::Response {
    http()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "default", "user": session, "messages": messages,
            "tools": [{"type": "function", "function": {"name": "read_file", "parameters": {"type": "object"}}}]}))
        .send()
        .await
        .unwrap()
}

/// A user message of about `tokens` tokens that names identifiers.
fn long_user(i: usize, tokens: usize) -> String {
    let mut s = format!(
        "Step {i}: look at /srv/app/src/handler_{i}.rs and ticket OPS-{} (build 0x{:06x}). ",
        4100 + i,
        0xabc000 + i
    );
    while s.len() < tokens * 4 {
        s.push_str("The quick brown fox jumps over the lazy dog again. ");
    }
    s
}

/// Every tool result in a chat-completions request follows the assistant
/// message that made its call.
fn pairs_are_whole(v: &Value) {
    let mut open: Vec<String> = Vec::new();
    for m in v["messages"].as_array().unwrap() {
        if let Some(calls) = m["tool_calls"].as_array() {
            open.extend(calls.iter().map(|c| c["id"].as_str().unwrap().to_string()));
        }
        if m["role"] == "tool" {
            let id = m["tool_call_id"].as_str().unwrap();
            assert!(
                open.iter().any(|o| o == id),
                "tool result {id} without its call in {v}"
            );
        }
    }
}

#[tokio::test]
async fn ctx_3_a_small_window_is_compacted_and_the_next_turns_answer_from_the_summary() {
    let up = FakeServer::start(model_server(false)).await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("s.sqlite3")).unwrap());
    // 16 000 tokens: warn under 8 000 left, block under 4 000, keep at
    // most 4 000 verbatim.
    let gw = gateway_with_store(&config(&up.base_url(), 16_000), no_auth(), store.clone()).await;
    let mut compacted_at = None;
    for i in 0..8 {
        // Every other turn runs a tool: a call, then its result.
        let r = turn(
            &gw,
            "small",
            json!([{"role": "user", "content": long_user(i, 1_500)}]),
        )
        .await;
        assert_eq!(r.status(), 200);
        if r.headers()
            .get("x-clawgate-context")
            .is_some_and(|h| h.to_str().unwrap().contains("context: compacted"))
        {
            compacted_at.get_or_insert(i);
        }
        let r = turn(
            &gw,
            "small",
            json!([{"role": "user", "content": format!("now use the tool for step {i}")}]),
        )
        .await;
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        let call = v["choices"][0]["message"]["tool_calls"][0]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let r = turn(&gw, "small", json!([
            {"role": "assistant", "content": null, "tool_calls": [{"id": call, "type": "function", "function": {"name": "read_file", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": call, "content": format!("fn step_{i}() {{ /* contents of mod {i} */ }}")}])).await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
    let compacted_at = compacted_at.expect("a 16 000-token window was compacted");
    assert!(compacted_at >= 3, "not from token 1: turn {compacted_at}");

    let reqs = up.requests();
    let summarizer: Vec<Value> = reqs.iter().map(body).filter(is_summarizer).collect();
    assert!(!summarizer.is_empty());
    // The transcript reaches the summarizer as delimited data with its
    // identifiers.
    let first = summarizer[0]["messages"][1]["content"].as_str().unwrap();
    assert!(
        first.contains("<transcript>") && first.contains("/srv/app/src/handler_0.rs"),
        "{first}"
    );
    // Every request the model saw kept tool pairs whole, and every one
    // after the first compaction carries the summary.
    let mut after = 0;
    for v in reqs.iter().map(body).filter(|v| !is_summarizer(v)) {
        pairs_are_whole(&v);
        assert!(
            !system_of(&v).contains(LOSSY_SUMMARY),
            "the summary has no system authority"
        );
        if let Some(sys) = summary_of(&v) {
            after += 1;
            assert!(sys.contains(LOSSY_SUMMARY));
            // The model dropped the identifiers; the guard put them back.
            for id in ["/srv/app/src/handler_0.rs", "OPS-4100", "0xabc000"] {
                assert!(sys.contains(id), "{id} kept verbatim in the summary: {sys}");
            }
            // What is kept verbatim starts with a user message (the
            // summary block in front of it).
            assert_eq!(v["messages"][0]["role"], "user", "{v}");
        }
    }
    assert!(
        after >= 2,
        "the turns after compaction answer from the summary ({after})"
    );
    // The full history stays stored; the session counts its compactions.
    let s = store.get("small").await.unwrap().unwrap();
    assert!(s.compactions >= 1);
    assert_eq!(s.turns, 24, "a compaction is not a turn");
    let all = store.transcript(s.id).await.unwrap();
    let users = all.iter().filter(|e| e.kind == EntryKind::User).count();
    assert_eq!(users, 16, "nothing is dropped from the stored transcript");
    let summaries: Vec<_> = all
        .iter()
        .filter(|e| e.kind == EntryKind::Summary)
        .collect();
    assert_eq!(summaries.len() as u32, s.compactions);
    assert!(summaries.iter().all(|e| e.replaces_through.is_some()));
    assert!(all
        .iter()
        .any(|e| e.kind == EntryKind::Notice && e.text.starts_with("context: compacted")));
}

#[tokio::test]
async fn ctx_4_an_overflow_from_the_server_compacts_once_and_retries_once() {
    let up = FakeServer::start(model_server(true)).await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("s.sqlite3")).unwrap());
    // The config claims a large window; the server knows better.
    let gw = gateway_with_store(&config(&up.base_url(), 200_000), no_auth(), store.clone()).await;
    for i in 0..2 {
        let r = turn(
            &gw,
            "big",
            json!([{"role": "user", "content": long_user(i, 300)}]),
        )
        .await;
        assert_eq!(r.status(), 200);
    }
    let r = turn(&gw, "big", json!([{"role": "user", "content": "and now?"}])).await;
    let notice = r
        .headers()
        .get("x-clawgate-context")
        .map(|h| h.to_str().unwrap().to_string());
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .starts_with("Hello"));
    assert!(notice.unwrap().contains("said the prompt is too long"));
    let kinds: Vec<&str> = up
        .requests()
        .iter()
        .map(|r| {
            if is_summarizer(&body(r)) {
                "summarize"
            } else {
                "turn"
            }
        })
        .collect::<Vec<_>>()
        .into_iter()
        .collect();
    assert_eq!(
        kinds,
        vec!["turn", "turn", "turn", "summarize", "turn"],
        "one compaction, one retry"
    );
    let last = body(up.requests().last().unwrap());
    assert!(summary_of(&last).unwrap().contains(LOSSY_SUMMARY));
    let s = store.get("big").await.unwrap().unwrap();
    assert_eq!((s.turns, s.compactions), (3, 1));
}

#[tokio::test]
async fn ctx_2_a_turn_that_cannot_fit_is_refused_in_each_protocols_shape() {
    let up = FakeServer::start(model_server(false)).await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("s.sqlite3")).unwrap());
    let gw = gateway_with_store(&config(&up.base_url(), 16_000), no_auth(), store).await;
    // One new message larger than the window: nothing older to compact.
    let r = turn(
        &gw,
        "huge",
        json!([{"role": "user", "content": long_user(0, 20_000)}]),
    )
    .await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    let m = v["error"]["message"].as_str().unwrap();
    assert!(
        m.starts_with(
            "prompt is too long: the new message with the system prompt and tools is about "
        ),
        "{m}"
    );
    assert!(
        m.contains("(estimated)")
            && m.contains("a/m's window is 16000 tokens (config:contextWindow) and 4000 must stay free for the answer (a/m's maxTokens 8192)")
            && m.contains("send a shorter message"),
        "{m}"
    );
    // The Anthropic endpoint, the session named by header.
    let r = http()
        .post(gw.url("/v1/messages"))
        .header("x-clawgate-session-key", "huge")
        .json(&json!({"model": "default", "max_tokens": 100, "messages": [{"role": "user", "content": long_user(1, 20_000)}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("prompt is too long"));
    assert!(up.requests().is_empty(), "nothing was sent to the model");

    // A 2 048-token window holds a short chat: a warning once per model,
    // never a refusal by a fixed floor.
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("s.sqlite3")).unwrap());
    let gw = gateway_with_store(&config(&up.base_url(), 2_048), no_auth(), store).await;
    let mut warned = 0;
    for i in 0..3 {
        let r = turn(
            &gw,
            "tiny",
            json!([{"role": "user", "content": format!("hi {i}")}]),
        )
        .await;
        assert_eq!(r.status(), 200);
        let h = r
            .headers()
            .get("x-clawgate-context")
            .map(|h| h.to_str().unwrap().to_string())
            .unwrap_or_default();
        if h.contains("low context window: a/m ctx=2048 (warn<8000) source=config:contextWindow") {
            warned += 1;
        }
    }
    assert!(warned <= 1, "once per model ({warned})");
    let before = up.requests().len();
    // Stateless requests are not refused.
    let r = http()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "default", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.requests().len(), before + 1);
}
