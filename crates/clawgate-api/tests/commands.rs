//! Chat commands (CTX-6) over real sockets, on every session surface: the
//! gateway answers `/model …`, `/status`, `/compact`, `/new`, `/reset`
//! and `/usage` itself in the protocol's own shape, a `/model` choice is
//! strict, persists and passes the same `modelPolicy.allow` check as any
//! selection, and commands never enter the transcript.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use clawgate_store::{EntryKind, ModelSource, SqliteStore, Store};
use clawgate_testkit::{FakeServer, Recorded, Reply};
use common::*;
use serde_json::{json, Value};

fn server(name: &'static str) -> impl Fn(&Recorded) -> Reply + Send + Sync + 'static {
    let n = AtomicUsize::new(0);
    move |r: &Recorded| {
        let i = n.fetch_add(1, Ordering::SeqCst) + 1;
        let v: Value = serde_json::from_str(&r.body_str()).unwrap();
        let summarizing = v["messages"][0]["content"]
            .as_str()
            .is_some_and(|s| s.starts_with("You compact a conversation"));
        let text = if summarizing {
            "summary of the start".to_string()
        } else {
            format!("{name} {i}")
        };
        Reply::json(200, &json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 100, "completion_tokens": 5}}).to_string())
    }
}

fn config(a: &str, b: &str, c: &str) -> String {
    format!(
        r#"{{ agents: {{ defaults: {{ model: "a/m", modelPolicy: {{ allow: ["a/m", "b/m"] }},
                 models: {{ "b/m": {{ alias: "bee" }} }} }} }},
             models: {{ mode: "replace", providers: {{
               a: {{ baseUrl: "{a}", api: "openai-completions", models: [{{ id: "m", contextWindow: 32768, cost: {{ input: 1, output: 2 }} }}] }},
               b: {{ baseUrl: "{b}", api: "openai-completions", models: [{{ id: "m" }}] }},
               c: {{ baseUrl: "{c}", api: "openai-completions", models: [{{ id: "m" }}] }} }} }} }}"#
    )
}

async fn say(gw: &Gw, text: &str) -> String {
    let r = http()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "default", "user": "cmd", "messages": [{"role": "user", "content": text}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn ctx_6_chat_commands_are_answered_by_the_gateway_on_every_surface() {
    let (a, b, c) = (
        FakeServer::start(server("a")).await,
        FakeServer::start(server("b")).await,
        FakeServer::start(server("c")).await,
    );
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("s.sqlite3")).unwrap());
    let gw = gateway_with_store(
        &config(&a.base_url(), &b.base_url(), &c.base_url()),
        no_auth(),
        store.clone(),
    )
    .await;
    assert_eq!(say(&gw, "hi").await, "a 1");

    let list = say(&gw, "/model list").await;
    assert!(list.contains("Model: the agent's default"), "{list}");
    assert!(
        list.contains("1. a/m") && list.contains("2. b/m (bee)"),
        "{list}"
    );
    assert!(!list.contains("c/m"), "outside modelPolicy.allow: {list}");
    assert_eq!(say(&gw, "/model").await, list);

    // The policy holds for a command too.
    let no = say(&gw, "/model c/m").await;
    assert!(no.contains("modelPolicy.allow"), "{no}");
    assert_eq!(
        say(&gw, "/model 9").await,
        "There is no model #9: /model list shows 2 models."
    );
    let set = say(&gw, "/model 2").await;
    assert!(
        set.starts_with("Model set to b/m for this session"),
        "{set}"
    );
    let s = store.get("cmd").await.unwrap().unwrap();
    assert_eq!(
        (s.model.as_deref(), s.model_source),
        (Some("b/m"), ModelSource::User)
    );
    assert_eq!(say(&gw, "who answers?").await, "b 1");
    assert!(say(&gw, "/model list").await.contains("2. b/m (bee) *"));
    assert!(say(&gw, "/model default")
        .await
        .starts_with("Back to the default: a/m"));
    assert_eq!(say(&gw, "and now?").await, "a 2");
    assert!(say(&gw, "/model bee").await.starts_with("Model set to b/m"));
    assert!(say(&gw, "/reset").await.starts_with("Reset"));
    assert_eq!(
        store.get("cmd").await.unwrap().unwrap().model_source,
        ModelSource::Default
    );

    let status = say(&gw, "/status").await;
    assert!(
        status.starts_with("Session cmd\nModel: the agent's default\nTurns: 3, compactions: 0"),
        "{status}"
    );
    assert!(status.contains("of a/m's 32768-token window (config:contextWindow); 8192 kept free for the answer (a/m's maxTokens 8192), so the prompt has 24576"), "{status}");
    let usage = say(&gw, "/usage").await;
    assert!(
        usage.contains("a/m: 2 calls, 200 in (0 cached), 10 out, $0.0002"),
        "{usage}"
    );
    assert!(usage.contains("b/m: 1 calls"), "{usage}");

    // After /reset the history is empty; build some, then compact it.
    say(&gw, "first question about /srv/app.rs").await;
    say(&gw, "second question").await;
    let compacted = say(&gw, "/compact keep file names").await;
    assert!(
        compacted.starts_with("Compacted 2 earlier entries into a summary with a/m"),
        "{compacted}"
    );
    let summarizer = a.requests().last().unwrap().body_str();
    assert!(summarizer.contains("keep file names") && summarizer.contains("/srv/app.rs"));
    say(&gw, "third").await;
    let last: Value = serde_json::from_str(&a.requests().last().unwrap().body_str()).unwrap();
    assert!(last["messages"][0]["content"]
        .as_str()
        .unwrap()
        .contains("summary of the start"));
    assert_eq!(store.get("cmd").await.unwrap().unwrap().compactions, 1);

    // /new: the next call sees no history.
    assert!(say(&gw, "/new").await.starts_with("New conversation"));
    say(&gw, "fresh start").await;
    let last: Value = serde_json::from_str(&a.requests().last().unwrap().body_str()).unwrap();
    assert_eq!(
        last["messages"],
        json!([{"role": "user", "content": "fresh start"}])
    );

    // Streamed, and on the Anthropic endpoint.
    let r = http()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "default", "user": "cmd", "stream": true, "messages": [{"role": "user", "content": "/usage"}]}))
        .send()
        .await
        .unwrap();
    let sse = r.text().await.unwrap();
    assert!(
        sse.contains("Usage in this session") && sse.ends_with("data: [DONE]\n\n"),
        "{sse}"
    );
    let r = http()
        .post(gw.url("/v1/messages"))
        .header("x-clawgate-session-key", "cmd")
        .json(&json!({"model": "default", "max_tokens": 50, "messages": [{"role": "user", "content": "/model status"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "message");
    let text = v["content"][0]["text"].as_str().unwrap();
    assert!(
        text.contains("a/m: 32768-token window (config:contextWindow)"),
        "{text}"
    );

    // Commands never enter the transcript, and no model saw them.
    let s = store.get("cmd").await.unwrap().unwrap();
    let all = store.transcript(s.id).await.unwrap();
    assert!(all.iter().all(|e| !e.text.starts_with('/')), "{all:?}");
    assert!(all
        .iter()
        .any(|e| e.kind == EntryKind::User && e.text == "fresh start"));
    for srv in [&a, &b, &c] {
        assert!(srv
            .requests()
            .iter()
            .all(|r| !r.body_str().contains("\"/model")));
    }
    assert!(c.requests().is_empty());
}
