//! Session mode over real sockets and a real SQLite file (GW-2, CTX-1,
//! CTX-5, FO-5): a named session keeps its history across a gateway
//! restart, a user's model selection is strict and persists, a streamed
//! turn is stored before the client sees its end, usage and cost rows
//! equal what the server reported and the configured prices, and requests
//! without a key stay stateless.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use clawgate_store::{EntryKind, GroupBy, SqliteStore, Store, UsageQuery};
use clawgate_testkit::{FakeServer, Recorded, Reply};
use common::*;
use serde_json::{json, Value};

/// A chat-completions server that answers `Hello <n>` where n counts its
/// requests, with reported usage, streamed or not as asked.
fn counting_server() -> impl Fn(&Recorded) -> Reply + Send + Sync + 'static {
    let n = std::sync::atomic::AtomicUsize::new(0);
    move |r: &Recorded| {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let body: Value = serde_json::from_str(&r.body_str()).unwrap();
        let text = format!("Hello {i}");
        let usage = json!({"prompt_tokens": 1000, "completion_tokens": 20, "prompt_tokens_details": {"cached_tokens": 600}});
        if body["stream"] == true {
            Reply::sse([
                format!(
                    "data: {}\n\n",
                    json!({"choices": [{"index": 0, "delta": {"reasoning_content": "hm"}}]})
                ),
                format!(
                    "data: {}\n\n",
                    json!({"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": "stop"}]})
                ),
                format!("data: {}\n\n", json!({"choices": [], "usage": usage})),
                "data: [DONE]\n\n".to_string(),
            ])
        } else {
            Reply::json(
                200,
                &json!({"id": "c", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}], "usage": usage}).to_string(),
            )
        }
    }
}

fn config(a: &str, b: &str) -> String {
    format!(
        r#"{{ agents: {{ defaults: {{ model: {{ primary: "a/m", fallbacks: ["b/m"] }} }} }},
             models: {{ mode: "replace", providers: {{
               a: {{ baseUrl: "{a}", api: "openai-completions", models: [{{ id: "m", cost: {{ input: 3, output: 15, cacheRead: 0.3, cacheWrite: 3.75 }} }}] }},
               b: {{ baseUrl: "{b}", api: "openai-completions", models: [{{ id: "m" }}] }} }} }} }}"#
    )
}

fn sent_messages(r: &Recorded) -> Vec<(String, String)> {
    let v: Value = serde_json::from_str(&r.body_str()).unwrap();
    v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap().to_string(),
                m["content"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

async fn chat(gw: &Gw, body: Value) -> (u16, String) {
    let r = http()
        .post(gw.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn a_session_survives_a_gateway_restart() {
    let a = FakeServer::start(counting_server()).await;
    let b = FakeServer::start(counting_server()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.sqlite3");
    {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).unwrap());
        let gw = gateway_with_store(&config(&a.base_url(), &b.base_url()), no_auth(), store).await;
        let (status, _) = chat(&gw, json!({"model": "default", "user": "ana", "messages": [
            {"role": "system", "content": "be brief"}, {"role": "user", "content": "My name is Ana"}]})).await;
        assert_eq!(status, 200);
    }
    // A new gateway process over the same file.
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).unwrap());
    let gw = gateway_with_store(
        &config(&a.base_url(), &b.base_url()),
        no_auth(),
        store.clone(),
    )
    .await;
    let (status, text) = chat(&gw, json!({"model": "default", "user": "ana", "messages": [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "What is my name?"}]})).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        sent_messages(&a.requests()[1]),
        vec![
            ("system".to_string(), "be brief".to_string()),
            ("user".to_string(), "My name is Ana".to_string()),
            ("assistant".to_string(), "Hello 1".to_string()),
            ("user".to_string(), "What is my name?".to_string()),
        ]
    );
    let s = store.get("ana").await.unwrap().unwrap();
    assert_eq!(s.turns, 2);
    // The same session through the Anthropic endpoint, named by header.
    let r = http()
        .post(gw.url("/v1/messages"))
        .header("x-clawgate-session-key", "ana")
        .json(&json!({"model": "default", "max_tokens": 64, "messages": [{"role": "user", "content": "And now?"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let last = sent_messages(&a.requests()[2]);
    assert_eq!(last.len(), 5, "{last:?}");
    assert_eq!(last[4], ("user".to_string(), "And now?".to_string()));
}

#[tokio::test]
async fn a_streamed_turn_is_stored_before_the_client_sees_its_end() {
    let a = FakeServer::start(counting_server()).await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("s.sqlite3")).unwrap());
    let gw = gateway_with_store(
        &config(&a.base_url(), &a.base_url()),
        no_auth(),
        store.clone(),
    )
    .await;
    for (path, body) in [
        (
            "/v1/chat/completions",
            json!({"model": "default", "stream": true, "user": "s", "messages": [{"role": "user", "content": "one"}]}),
        ),
        (
            "/v1/responses",
            json!({"model": "default", "stream": true, "user": "s", "input": "two"}),
        ),
    ] {
        let r = http().post(gw.url(path)).json(&body).send().await.unwrap();
        let text = r.text().await.unwrap();
        assert!(text.contains("Hello"), "{text}");
        // The client has the whole stream: the turn is already stored.
        let s = store.get("s").await.unwrap().unwrap();
        let entries = store.transcript(s.id).await.unwrap();
        let last = entries.last().unwrap();
        assert_eq!(last.kind, EntryKind::Assistant, "{entries:?}");
        assert!(last.text.starts_with("Hello"));
    }
    let s = store.get("s").await.unwrap().unwrap();
    let kinds: Vec<_> = store
        .transcript(s.id)
        .await
        .unwrap()
        .iter()
        .map(|e| (e.kind, e.text.clone()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (EntryKind::User, "one".to_string()),
            (EntryKind::Reasoning, "hm".to_string()),
            (EntryKind::Assistant, "Hello 1".to_string()),
            (EntryKind::User, "two".to_string()),
            (EntryKind::Reasoning, "hm".to_string()),
            (EntryKind::Assistant, "Hello 2".to_string()),
        ]
    );
}

#[tokio::test]
async fn a_user_model_selection_is_strict_and_persists() {
    let a = FakeServer::start(counting_server()).await;
    let b = FakeServer::start(counting_server()).await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("s.sqlite3")).unwrap());
    let gw = gateway_with_store(
        &config(&a.base_url(), &b.base_url()),
        no_auth(),
        store.clone(),
    )
    .await;
    let (status, _) = chat(
        &gw,
        json!({"model": "b/m", "user": "pick", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(status, 200);
    // The next turn says "default": the session's selection still holds.
    let (status, _) = chat(
        &gw,
        json!({"model": "default", "user": "pick", "messages": [{"role": "user", "content": "y"}]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!((a.requests().len(), b.requests().len()), (0, 2));
    let s = store.get("pick").await.unwrap().unwrap();
    assert_eq!(s.model.as_deref(), Some("b/m"));
    assert_eq!(s.model_source, clawgate_store::ModelSource::User);
    // Another session is not affected.
    let (status, _) = chat(&gw, json!({"model": "default", "user": "other", "messages": [{"role": "user", "content": "z"}]})).await;
    assert_eq!(status, 200);
    assert_eq!(a.requests().len(), 1);
}

#[tokio::test]
async fn usage_and_cost_rows_equal_what_the_server_reported() {
    let a = FakeServer::start(counting_server()).await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("s.sqlite3")).unwrap());
    let gw = gateway_with_store(
        &config(&a.base_url(), &a.base_url()),
        no_auth(),
        store.clone(),
    )
    .await;
    for stream in [false, true, false] {
        let (status, _) = chat(&gw, json!({"model": "default", "stream": stream, "user": "u", "messages": [{"role": "user", "content": "x"}]})).await;
        assert_eq!(status, 200);
    }
    let rows = store
        .usage(UsageQuery {
            session_id: None,
            session: None,
            since_ms: 0,
            by: GroupBy::Model,
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(r.group, "a/m");
    assert_eq!(
        (r.calls, r.input, r.output, r.cache_read, r.estimated_calls),
        (3, 3_000, 60, 1_800, 0)
    );
    // Per call: 400 uncached × 3 + 600 × 0.3 + 20 × 15, per million.
    let per_call = (400.0 * 3.0 + 600.0 * 0.3 + 20.0 * 15.0) / 1e6;
    assert!(
        (r.cost_usd - 3.0 * per_call).abs() < 1e-12,
        "{}",
        r.cost_usd
    );
    let hosts = store
        .usage(UsageQuery {
            session_id: None,
            session: None,
            since_ms: 0,
            by: GroupBy::Endpoint,
        })
        .await
        .unwrap();
    assert_eq!(
        hosts[0].group,
        a.base_url()
            .trim_start_matches("http://")
            .trim_end_matches("/v1")
    );
    // The Prometheus counters say the same.
    let metrics = metrics(&gw).await;
    let value = |series: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series))
            .unwrap_or_else(|| panic!("{series} in {metrics}"))
            .trim()
            .parse()
            .unwrap()
    };
    let l = "{provider=\"a\",model=\"m\"}";
    assert!((value(&format!("clawgate_cost_usd_total{l}")) - 3.0 * per_call).abs() < 1e-12);
    assert_eq!(
        value(&format!("clawgate_answers_without_usage_total{l}")),
        0.0
    );
    assert_eq!(
        value("clawgate_tokens_total{provider=\"a\",model=\"m\",kind=\"input\"}"),
        3_000.0
    );
    // Each family is one group, as the text format requires.
    let mut seen = Vec::new();
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        let family = line
            .split(['{', ' '])
            .next()
            .unwrap()
            .trim_end_matches("_bucket")
            .trim_end_matches("_sum")
            .trim_end_matches("_count");
        if seen.last().map(String::as_str) != Some(family) {
            assert!(
                !seen.iter().any(|f| f == family),
                "{family} split in two groups"
            );
            seen.push(family.to_string());
        }
    }
}

#[tokio::test]
async fn requests_without_a_session_stay_stateless() {
    let a = FakeServer::start(counting_server()).await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("s.sqlite3")).unwrap());
    let gw = gateway_with_store(
        &config(&a.base_url(), &a.base_url()),
        no_auth(),
        store.clone(),
    )
    .await;
    let (status, _) = chat(
        &gw,
        json!({"model": "default", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(status, 200);
    // Claude Code's metadata.user_id pins credentials only: it sends the
    // whole history itself.
    let r = http()
        .post(gw.url("/v1/messages"))
        .json(&json!({"model": "default", "max_tokens": 8, "metadata": {"user_id": "device-1"}, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http()
        .post(gw.url("/v1/messages"))
        .json(&json!({"model": "default", "max_tokens": 8, "metadata": {"user_id": "device-1"}, "messages": [{"role": "user", "content": "y"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(sent_messages(&a.requests()[2]).len(), 1, "no history added");
    assert!(store.sessions(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn an_answer_that_fails_mid_way_is_kept_marked_incomplete() {
    let up = FakeServer::start(|_| {
        Reply::sse([format!(
            "data: {}\n\n",
            json!({"choices": [{"index": 0, "delta": {"content": "partial "}}]})
        )])
        .close()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("s.sqlite3")).unwrap());
    let gw = gateway_with_store(
        &config(&up.base_url(), &up.base_url()),
        no_auth(),
        store.clone(),
    )
    .await;
    let (status, text) = chat(&gw, json!({"model": "a/m", "stream": true, "user": "cut", "messages": [{"role": "user", "content": "go"}]})).await;
    assert_eq!(status, 200);
    assert!(text.contains("\"error\""), "{text}");
    let s = store.get("cut").await.unwrap().unwrap();
    let entries = store.transcript(s.id).await.unwrap();
    let last = entries.last().unwrap();
    assert_eq!(
        (last.kind, last.text.as_str(), last.incomplete),
        (EntryKind::Assistant, "partial ", true)
    );
    // Non-streamed: the same, and the client gets the 502.
    let (status, _) = chat(
        &gw,
        json!({"model": "a/m", "user": "cut", "messages": [{"role": "user", "content": "again"}]}),
    )
    .await;
    assert_eq!(status, 502);
    assert_eq!(store.get("cut").await.unwrap().unwrap().turns, 2);
}

#[tokio::test]
async fn a_client_that_resends_its_history_does_not_get_it_twice() {
    let a = FakeServer::start(counting_server()).await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("s.sqlite3")).unwrap());
    let gw = gateway_with_store(
        &config(&a.base_url(), &a.base_url()),
        no_auth(),
        store.clone(),
    )
    .await;
    let (status, _) = chat(&gw, json!({"model": "default", "user": "sdk", "messages": [{"role": "user", "content": "one"}]})).await;
    assert_eq!(status, 200);
    // An SDK that sets `user` for its own reasons and sends everything.
    let (status, _) = chat(
        &gw,
        json!({"model": "default", "user": "sdk", "messages": [
        {"role": "user", "content": "one"}, {"role": "assistant", "content": "Hello 1"},
        {"role": "user", "content": "two"}]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        sent_messages(&a.requests()[1]),
        vec![
            ("user".to_string(), "one".to_string()),
            ("assistant".to_string(), "Hello 1".to_string()),
            ("user".to_string(), "two".to_string()),
        ]
    );
    let s = store.get("sdk").await.unwrap().unwrap();
    assert_eq!(store.transcript(s.id).await.unwrap().len(), 4);
}

#[tokio::test]
async fn concurrent_turns_of_one_session_run_one_after_the_other() {
    // A slow server: were turns to overlap, they would see the same
    // history and interleave in the transcript.
    let a = FakeServer::start(|r: &Recorded| {
        let v: Value = serde_json::from_str(&r.body_str()).unwrap();
        let n = v["messages"].as_array().unwrap().len();
        std::thread::sleep(std::time::Duration::from_millis(20));
        Reply::json(200, &json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": format!("saw {n}")}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 10, "completion_tokens": 2}}).to_string())
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("s.sqlite3")).unwrap());
    let gw = Arc::new(
        gateway_with_store(
            &config(&a.base_url(), &a.base_url()),
            no_auth(),
            store.clone(),
        )
        .await,
    );
    let turns: Vec<_> = (0..8)
        .map(|i| {
            let gw = gw.clone();
            tokio::spawn(async move {
                chat(&gw, json!({"model": "default", "user": "busy", "messages": [{"role": "user", "content": format!("q{i}")}]})).await
            })
        })
        .collect();
    for t in turns {
        assert_eq!(t.await.unwrap().0, 200);
    }
    // Each call saw every turn before it: 1, 3, 5, … messages.
    let mut seen: Vec<usize> = a
        .requests()
        .iter()
        .map(|r| {
            let v: Value = serde_json::from_str(&r.body_str()).unwrap();
            v["messages"].as_array().unwrap().len()
        })
        .collect();
    seen.sort();
    assert_eq!(seen, (0..8).map(|i| 2 * i + 1).collect::<Vec<_>>());
    // The transcript alternates question and answer.
    let s = store.get("busy").await.unwrap().unwrap();
    assert_eq!(s.turns, 8);
    let kinds: Vec<EntryKind> = store
        .transcript(s.id)
        .await
        .unwrap()
        .iter()
        .map(|e| e.kind)
        .collect();
    for pair in kinds.chunks(2) {
        assert_eq!(pair, [EntryKind::User, EntryKind::Assistant]);
    }
}

/// A store whose commits wait for the test's word: what a client sees
/// while the turn is not yet stored.
struct HeldStore {
    inner: SqliteStore,
    open: Arc<tokio::sync::Semaphore>,
}

impl Store for HeldStore {
    fn load_turn<'a>(
        &'a self,
        key: &'a str,
        agent: Option<&'a str>,
        now_ms: i64,
    ) -> clawgate_store::StoreFuture<'a, clawgate_store::TurnState> {
        self.inner.load_turn(key, agent, now_ms)
    }
    fn get<'a>(
        &'a self,
        key: &'a str,
    ) -> clawgate_store::StoreFuture<'a, Option<clawgate_store::Session>> {
        self.inner.get(key)
    }
    fn transcript(
        &self,
        session: i64,
    ) -> clawgate_store::StoreFuture<'_, Vec<clawgate_store::Entry>> {
        self.inner.transcript(session)
    }
    fn commit(&self, turn: clawgate_store::TurnCommit) -> clawgate_store::StoreFuture<'_, ()> {
        Box::pin(async move {
            // One commit per permit the test gives.
            if let Ok(p) = self.open.acquire().await {
                p.forget();
            }
            self.inner.commit(turn).await
        })
    }
    fn reset(
        &self,
        session: i64,
        model_too: bool,
        now_ms: i64,
    ) -> clawgate_store::StoreFuture<'_, ()> {
        self.inner.reset(session, model_too, now_ms)
    }
    fn select_model<'a>(
        &'a self,
        session: i64,
        model: Option<&'a str>,
        source: clawgate_store::ModelSource,
        now_ms: i64,
    ) -> clawgate_store::StoreFuture<'a, ()> {
        self.inner.select_model(session, model, source, now_ms)
    }
    fn response<'a>(
        &'a self,
        id: &'a str,
    ) -> clawgate_store::StoreFuture<'a, Option<clawgate_store::KeptResponse>> {
        self.inner.response(id)
    }
    fn ratio<'a>(&'a self, model: &'a str) -> clawgate_store::StoreFuture<'a, Option<f64>> {
        self.inner.ratio(model)
    }
    fn sessions(
        &self,
        limit: usize,
    ) -> clawgate_store::StoreFuture<'_, Vec<clawgate_store::Session>> {
        self.inner.sessions(limit)
    }
    fn delete<'a>(&'a self, key: &'a str) -> clawgate_store::StoreFuture<'a, bool> {
        self.inner.delete(key)
    }
    fn usage(
        &self,
        query: UsageQuery,
    ) -> clawgate_store::StoreFuture<'_, Vec<clawgate_store::UsageTotal>> {
        self.inner.usage(query)
    }
}

#[tokio::test]
async fn a_streamed_turns_last_frame_waits_for_its_commit() {
    let a = FakeServer::start(counting_server()).await;
    let dir = tempfile::tempdir().unwrap();
    let open = Arc::new(tokio::sync::Semaphore::new(0));
    let store: Arc<dyn Store> = Arc::new(HeldStore {
        inner: SqliteStore::open(&dir.path().join("s.sqlite3")).unwrap(),
        open: open.clone(),
    });
    let gw = gateway_with_store(
        &config(&a.base_url(), &a.base_url()),
        no_auth(),
        store.clone(),
    )
    .await;
    for (i, (path, body, end)) in [
        (
            "/v1/chat/completions",
            json!({"model": "default", "stream": true, "user": "held", "messages": [{"role": "user", "content": "one"}]}),
            "[DONE]",
        ),
        (
            "/v1/responses",
            json!({"model": "default", "stream": true, "user": "held", "input": "two"}),
            "response.completed",
        ),
        (
            "/v1/messages",
            json!({"model": "default", "stream": true, "max_tokens": 50, "metadata": {"user_id": "x"}, "messages": [{"role": "user", "content": "three"}]}),
            "message_stop",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let mut req = http().post(gw.url(path)).json(&body);
        if path == "/v1/messages" {
            req = req.header("x-clawgate-session-key", "held");
        }
        let mut r = req.send().await.unwrap();
        assert_eq!(r.status(), 200);
        let mut seen = String::new();
        // The answer's text arrives; its end does not while the commit
        // is held.
        let held = tokio::time::timeout(std::time::Duration::from_millis(500), async {
            while let Some(chunk) = r.chunk().await.unwrap() {
                seen.push_str(&String::from_utf8_lossy(&chunk));
                if seen.contains(end) {
                    return true;
                }
            }
            true
        })
        .await;
        assert!(held.is_err(), "{path}: the end came before the commit: {seen}");
        assert!(seen.contains("Hello"), "{path}: the text is not held back: {seen}");
        open.add_permits(1);
        while let Some(chunk) = r.chunk().await.unwrap() {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
        assert!(seen.contains(end), "{path}: {seen}");
        let s = store.get("held").await.unwrap().unwrap();
        assert_eq!(s.turns as usize, i + 1, "{path}");
    }
}
