//! Sessions on small local models (CTX-2, CTX-3, CTX-4), over real
//! sockets and real SQLite files, against a fake llama.cpp that counts
//! tokens at a fixed number of bytes per token (1, 2 or 5: the tiny
//! model, code and non-English text, English prose) and answers llama.cpp's
//! own overflow error past its window: every turn is answered or refused
//! with numbers, no server overflow reaches the client, compactions are
//! rare, and the learned ratio makes estimates close to the server's
//! count. Also: the agent owns its session (through `user`, the session
//! header and `previous_response_id`), and a lowered output cap is said.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use clawgate_store::{EntryKind, SqliteStore, Store};
use clawgate_testkit::{FakeServer, Recorded, Reply};
use common::*;
use serde_json::{json, Value};

const SUMMARIZER: &str = "You compact a conversation";
/// Framing the fake counts per message (a chat template's tokens): not
/// the gateway's own figure, as a real template is not.
const FAKE_FRAMING: u64 = 7;

fn body(r: &Recorded) -> Value {
    serde_json::from_str(&r.body_str()).unwrap()
}

fn is_summarizer(v: &Value) -> bool {
    v["messages"][0]["role"] == "system"
        && v["messages"][0]["content"]
            .as_str()
            .is_some_and(|s| s.starts_with(SUMMARIZER))
}

/// Text bytes and messages of a chat-completions request, as the fake's
/// tokenizer sees them.
fn text_bytes(v: &Value) -> (u64, u64) {
    let mut bytes = 0u64;
    let mut msgs = 0u64;
    for m in v["messages"].as_array().into_iter().flatten() {
        msgs += 1;
        match &m["content"] {
            Value::String(s) => bytes += s.len() as u64,
            Value::Array(parts) => {
                for p in parts {
                    bytes += p["text"].as_str().map_or(0, str::len) as u64;
                }
            }
            _ => {}
        }
        for c in m["tool_calls"].as_array().into_iter().flatten() {
            bytes += c["function"]["arguments"].as_str().map_or(0, str::len) as u64
                + c["function"]["name"].as_str().map_or(0, str::len) as u64;
        }
    }
    for t in v["tools"].as_array().into_iter().flatten() {
        bytes += t.to_string().len() as u64;
    }
    (bytes, msgs)
}

fn count(v: &Value, bytes_per_token: u64) -> u64 {
    let (bytes, msgs) = text_bytes(v);
    bytes.div_ceil(bytes_per_token) + FAKE_FRAMING * msgs + 3
}

/// What the fake saw.
#[derive(Default)]
struct Seen {
    overflows: AtomicUsize,
    calls: AtomicUsize,
}

/// A llama.cpp-like chat server: counts the prompt at `bpt` bytes per
/// token, refuses past `window` with llama.cpp's body, otherwise answers
/// about 40 words (fewer when `max_tokens` says so) with the count as
/// `prompt_tokens`.
fn tokenizing_server(
    bpt: u64,
    window: u64,
    seen: Arc<Seen>,
) -> impl Fn(&Recorded) -> Reply + Send + Sync + 'static {
    move |r: &Recorded| {
        let v = body(r);
        let n = seen.calls.fetch_add(1, Ordering::SeqCst);
        let prompt = count(&v, bpt);
        if prompt > window {
            seen.overflows.fetch_add(1, Ordering::SeqCst);
            return Reply::json(400, &json!({"error": {"code": 400,
                "message": format!("request ({prompt} tokens) exceeds the available context size ({window} tokens), try increasing it"),
                "type": "exceed_context_size_error", "n_prompt_tokens": prompt, "n_ctx": window}}).to_string());
        }
        let cap = v["max_tokens"].as_u64().unwrap_or(u64::MAX);
        let mut text = if is_summarizer(&v) {
            "The user sent a series of long messages about servers and code; the assistant answered each.".to_string()
        } else {
            let mut t = format!("Answer {n}:");
            for i in 0..40 {
                t.push_str(&format!(" word{}", i % 7));
            }
            t
        };
        let max_bytes = (cap.saturating_mul(bpt)).min(text.len() as u64) as usize;
        text.truncate(max_bytes.max(1));
        let out = (text.len() as u64).div_ceil(bpt);
        Reply::json(200, &json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": out, "total_tokens": prompt + out}}).to_string())
    }
}

fn config(url: &str, window: u64, max_tokens: u64, compaction: &str) -> String {
    format!(
        r#"{{ agents: {{ defaults: {{ model: "a/m" {compaction} }} }},
             models: {{ mode: "replace", providers: {{
               a: {{ baseUrl: "{url}", api: "openai-completions", models: [{{ id: "m", contextWindow: {window}, maxTokens: {max_tokens} }}] }} }} }} }}"#
    )
}

fn prose(turn: usize, words: usize) -> String {
    const W: [&str; 12] = [
        "the", "server", "keeps", "a", "window", "of", "tokens", "while", "gateway", "sessions",
        "grow", "longer",
    ];
    let mut s = format!("Message {turn}:");
    for i in 0..words {
        s.push(' ');
        s.push_str(W[(i + turn) % W.len()]);
    }
    s
}

fn code(turn: usize, lines: usize) -> String {
    let mut s = format!("// file {turn}\n");
    for i in 0..lines {
        s.push_str(&format!(
            "    let value_{i} = compute(&input[{i}], {i} * 3); // step {turn}.{i}\n"
        ));
    }
    s
}

async fn say(gw: &Gw, session: &str, text: &str) -> reqwest::Response {
    http()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "default", "user": session,
            "messages": [{"role": "user", "content": text}]}))
        .send()
        .await
        .unwrap()
}

struct Outcome {
    answered: usize,
    refused: usize,
    compactions: usize,
    overflows_seen: usize,
    ratio: Option<f64>,
    last_estimate_error: Option<f64>,
    first_refusal: Option<String>,
}

/// One session of `turns` messages made by `make` on a fresh gateway
/// and store, against a fake of `bpt` bytes per token and `window`.
async fn session(bpt: u64, window: u64, turns: usize, make: &dyn Fn(usize) -> String) -> Outcome {
    let seen = Arc::new(Seen::default());
    let up = FakeServer::start(tokenizing_server(bpt, window, seen.clone())).await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("s.sqlite3")).unwrap());
    let gw = gateway_with_store(
        &config(&up.base_url(), window, 256, ""),
        no_auth(),
        store.clone(),
    )
    .await;
    let mut o = Outcome {
        answered: 0,
        refused: 0,
        compactions: 0,
        overflows_seen: 0,
        ratio: None,
        last_estimate_error: None,
        first_refusal: None,
    };
    for t in 0..turns {
        let r = say(&gw, "s", &make(t)).await;
        let status = r.status().as_u16();
        let notice = r
            .headers()
            .get("x-clawgate-context")
            .map(|h| h.to_str().unwrap().to_string())
            .unwrap_or_default();
        o.compactions += notice.matches("context: compacted").count();
        let estimate: Option<f64> = r
            .headers()
            .get("x-clawgate-prompt-estimate")
            .map(|h| h.to_str().unwrap().parse().unwrap());
        let v: Value = r.json().await.unwrap();
        match status {
            200 => {
                o.answered += 1;
                assert!(v["choices"][0]["message"]["content"].as_str().is_some());
                // The gateway's estimate of this very prompt against the
                // server's count of it.
                let real = v["usage"]["prompt_tokens"].as_f64().unwrap();
                let estimate = estimate.expect("a session turn says its estimate");
                o.last_estimate_error = Some((estimate - real).abs() / real);
            }
            400 => {
                o.refused += 1;
                let m = v["error"]["message"].as_str().unwrap();
                o.first_refusal
                    .get_or_insert_with(|| format!("turn {t}: {m}"));
                assert_eq!(v["error"]["code"], "context_length_exceeded", "{v}");
                assert!(m.starts_with("prompt is too long: "), "{m}");
                assert!(
                    !m.contains("exceeds the available context size"),
                    "a server overflow reached the client: {m}"
                );
                assert!(m.contains(&format!("{window} tokens")), "in numbers: {m}");
            }
            s => panic!("turn {t}: {s} {v}"),
        }
    }
    o.overflows_seen = seen.overflows.load(Ordering::SeqCst);
    o.ratio = store.ratio("a/m").await.unwrap();
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctx_2_sessions_on_small_windows_answer_every_turn_that_can_fit() {
    type Make = Box<dyn Fn(usize) -> String>;
    let kinds: Vec<(&str, Make)> = vec![
        ("60 words", Box::new(|t| prose(t, 60))),
        ("200 words", Box::new(|t| prose(t, 200))),
        ("400 words", Box::new(|t| prose(t, 400))),
        ("700 words", Box::new(|t| prose(t, 700))),
        ("50 lines of code", Box::new(|t| code(t, 50))),
    ];
    let turns = 12;
    let mut report = String::new();
    for bpt in [1u64, 2, 5] {
        for window in [2_048u64, 4_096, 8_192] {
            for (name, make) in &kinds {
                let o = session(bpt, window, turns, make.as_ref()).await;
                // What one turn costs in the server's tokens: the message
                // and an answer.
                let msg = make(0);
                let msg_tokens = (msg.len() as u64).div_ceil(bpt) + FAKE_FRAMING;
                let turn_tokens = msg_tokens + 260u64.div_ceil(bpt) + FAKE_FRAMING;
                let room = window - 256;
                let fits = msg_tokens + 16 <= room;
                report.push_str(&format!(
                    "{bpt} B/token, {window} window, {name}: {}/{turns} answered, {} refused, {} compactions, {} server overflows absorbed, ratio {:?}, estimate error {:?}{}\n",
                    o.answered, o.refused, o.compactions, o.overflows_seen, o.ratio, o.last_estimate_error,
                    o.first_refusal.as_deref().map(|r| format!("\n    {r}")).unwrap_or_default()
                ));
                if fits && msg_tokens * 2 <= room {
                    assert_eq!(o.answered, turns, "{report}");
                } else if !fits {
                    assert_eq!(o.answered, 0, "{report}");
                }
                // Where the room holds three turns, compaction is rare.
                if room >= 3 * turn_tokens {
                    assert!(
                        o.compactions <= turns / 3,
                        "{} compactions in {turns} turns: {report}",
                        o.compactions
                    );
                }
                if o.answered >= 2 {
                    let err = o.last_estimate_error.expect("calibrated");
                    assert!(
                        err <= 0.15,
                        "estimate off by {:.0} %: {report}",
                        err * 100.0
                    );
                    let r = o.ratio.unwrap();
                    assert!(
                        (r - bpt as f64).abs() / (bpt as f64) < 0.3,
                        "learned {r} for {bpt}: {report}"
                    );
                }
            }
        }
    }
    println!("{report}");
}

/// A server that echoes nothing private: `Hello <n>` with a usage.
fn plain_server(name: &'static str) -> impl Fn(&Recorded) -> Reply + Send + Sync + 'static {
    let n = AtomicUsize::new(0);
    move |r: &Recorded| {
        let i = n.fetch_add(1, Ordering::SeqCst);
        Reply::json(200, &json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": format!("{name} {i}")}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": r.body.len() / 4, "completion_tokens": 2}}).to_string())
    }
}

fn agents_config(private: &str, public: &str) -> String {
    format!(
        r#"{{ agents: {{ defaults: {{ model: "pub/m" }},
             entries: {{ priv: {{ model: "priv/m", dataPolicy: "local-only" }}, pub: {{ model: "pub/m" }} }} }},
             models: {{ mode: "replace", providers: {{
               priv: {{ baseUrl: "{private}", api: "openai-completions", models: [{{ id: "m", contextWindow: 32768 }}] }},
               pub: {{ baseUrl: "{public}", api: "openai-completions", models: [{{ id: "m", contextWindow: 32768 }}] }} }} }} }}"#
    )
}

#[tokio::test]
async fn ctx_4_a_session_belongs_to_the_agent_that_created_it() {
    let private = FakeServer::start(plain_server("private")).await;
    let public = FakeServer::start(plain_server("public")).await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("s.sqlite3")).unwrap());
    let gw = gateway_with_store(
        &agents_config(&private.base_url(), &public.base_url()),
        no_auth(),
        store.clone(),
    )
    .await;
    let secret = "my secret plan is PLAN-7731";
    let leaked = |what: &str| {
        let hit = public
            .requests()
            .iter()
            .any(|r| r.body_str().contains("PLAN-7731"));
        assert!(
            !hit,
            "{what}: the public agent's provider saw the private history"
        );
    };
    // Through `user`.
    let chat = |model: &str, user: &str, text: &str| {
        http()
            .post(gw.url("/v1/chat/completions"))
            .json(&json!({"model": model, "user": user, "messages": [{"role": "user", "content": text}]}))
            .send()
    };
    assert_eq!(
        chat("agent/priv", "shared", secret).await.unwrap().status(),
        200
    );
    assert_eq!(
        chat("agent/pub", "shared", "and what was my plan?")
            .await
            .unwrap()
            .status(),
        200
    );
    leaked("user");
    // The default agent is another agent too.
    assert_eq!(
        chat("default", "shared", "and now?")
            .await
            .unwrap()
            .status(),
        200
    );
    leaked("default agent");
    // The owner still has its history.
    assert_eq!(
        chat("agent/priv", "shared", "go on")
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(private
        .requests()
        .last()
        .unwrap()
        .body_str()
        .contains("PLAN-7731"));
    // Through the session header, on another protocol.
    let r = http()
        .post(gw.url("/v1/messages"))
        .header("x-clawgate-session-key", "shared")
        .json(&json!({"model": "agent/pub", "max_tokens": 50, "messages": [{"role": "user", "content": "remind me"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    leaked("x-clawgate-session-key");
    let keys: Vec<String> = store
        .sessions(10)
        .await
        .unwrap()
        .into_iter()
        .map(|s| format!("{}={}", s.key, s.agent.unwrap_or_default()))
        .collect();
    assert!(keys.contains(&"shared=priv".to_string()), "{keys:?}");
    assert!(keys.contains(&"shared@pub=pub".to_string()), "{keys:?}");
    assert!(keys.contains(&"shared@default=".to_string()), "{keys:?}");

    // Through previous_response_id: a kept answer continues only for its
    // agent, and is read only by it.
    let r = http()
        .post(gw.url("/v1/responses"))
        .json(&json!({"model": "agent/priv", "store": true, "input": secret}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let id = v["id"].as_str().unwrap().to_string();
    // 128 random bits, not a clock and a counter.
    assert_eq!(id.len(), "resp_".len() + 32, "{id}");
    assert!(
        id["resp_".len()..].chars().all(|c| c.is_ascii_hexdigit()),
        "{id}"
    );
    let r = http()
        .post(gw.url("/v1/responses"))
        .json(&json!({"model": "agent/priv", "store": true, "input": "again"}))
        .send()
        .await
        .unwrap();
    let other: Value = r.json().await.unwrap();
    let other = other["id"].as_str().unwrap();
    let common = id
        .chars()
        .zip(other.chars())
        .take_while(|(a, b)| a == b)
        .count();
    assert!(
        common < "resp_".len() + 8,
        "{id} and {other} share {common} characters"
    );
    let r = http()
        .post(gw.url("/v1/responses"))
        .json(&json!({"model": "agent/pub", "previous_response_id": id, "input": "continue"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "previous_response_not_found");
    leaked("previous_response_id");
    let r = http()
        .post(gw.url("/v1/responses"))
        .json(&json!({"model": "agent/priv", "previous_response_id": id, "input": "continue"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(private
        .requests()
        .last()
        .unwrap()
        .body_str()
        .contains("PLAN-7731"));
    for (agent, want) in [(None, 404), (Some("pub"), 404), (Some("priv"), 200)] {
        let mut req = http().get(gw.url(&format!("/v1/responses/{id}")));
        if let Some(a) = agent {
            req = req.header("x-clawgate-agent", a);
        }
        assert_eq!(req.send().await.unwrap().status(), want, "{agent:?}");
    }
}

#[tokio::test]
async fn a_lowered_output_cap_is_said() {
    let seen = Arc::new(Seen::default());
    let up = FakeServer::start(tokenizing_server(4, 32_768, seen)).await;
    let gw = gateway_with(
        &config(&up.base_url(), 32_768, 1_000, ""),
        no_auth(),
        Default::default(),
    )
    .await;
    for (path, body) in [
        (
            "/v1/chat/completions",
            json!({"model": "default", "max_tokens": 32000, "messages": [{"role": "user", "content": "hi"}]}),
        ),
        (
            "/v1/messages",
            json!({"model": "default", "max_tokens": 32000, "messages": [{"role": "user", "content": "hi"}]}),
        ),
        (
            "/v1/responses",
            json!({"model": "default", "max_output_tokens": 32000, "input": "hi"}),
        ),
    ] {
        let r = http().post(gw.url(path)).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let n = r
            .headers()
            .get("x-clawgate-notice")
            .map(|h| h.to_str().unwrap().to_string());
        assert_eq!(
            n.as_deref(),
            Some("max_tokens 32000 lowered to 1000: a/m's maxTokens is 1000 (raise models.providers.a.models[].maxTokens if the model can write more)"),
            "{path}"
        );
        let sent = body_of_last(&up);
        assert_eq!(sent["max_tokens"], 1000, "{path}");
    }
    // Within the cap: nothing to say.
    let r = http()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "default", "max_tokens": 500, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("x-clawgate-notice").is_none());
}

fn body_of_last(up: &FakeServer) -> Value {
    body(up.requests().last().unwrap())
}

/// A summarizer that keeps no identifier at all.
fn forgetful_server(bpt: u64) -> impl Fn(&Recorded) -> Reply + Send + Sync + 'static {
    move |r: &Recorded| {
        let v = body(r);
        let prompt = count(&v, bpt);
        let text = if is_summarizer(&v) {
            "They talked about some files."
        } else {
            "Noted."
        };
        Reply::json(200, &json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": 2}}).to_string())
    }
}

#[tokio::test]
async fn ctx_3_a_second_compaction_keeps_what_the_first_summary_kept() {
    let up = FakeServer::start(forgetful_server(4)).await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("s.sqlite3")).unwrap());
    let gw = gateway_with_store(
        &config(&up.base_url(), 8_192, 256, ""),
        no_auth(),
        store.clone(),
    )
    .await;
    let filler = "lorem ipsum dolor sit amet ".repeat(200);
    let mut summaries = 0;
    for i in 0..30 {
        let text = format!(
            "Look at /srv/app/mod_{i}.rs and ticket OPS-{}. {filler}",
            5000 + i
        );
        let r = say(&gw, "twice", &text).await;
        assert_eq!(r.status(), 200);
        let s = store.get("twice").await.unwrap().unwrap();
        summaries = s.compactions;
        if summaries >= 2 {
            break;
        }
    }
    assert!(summaries >= 2, "two compactions ({summaries})");
    let s = store.get("twice").await.unwrap().unwrap();
    let all = store.transcript(s.id).await.unwrap();
    let last = all
        .iter()
        .rev()
        .find(|e| e.kind == EntryKind::Summary)
        .unwrap();
    // The first turn's identifiers went into the first summary (the model
    // dropped them, the guard put them back); the second summary, made
    // from the first and newer turns, still has them.
    for id in ["/srv/app/mod_0.rs", "OPS-5000"] {
        assert!(last.text.contains(id), "{id} in {}", last.text);
    }
}

/// A server that reports no usage: the gateway's figures stay the
/// heuristic's (four bytes of ASCII a token), which the test can aim at.
fn no_usage_server() -> impl Fn(&Recorded) -> Reply + Send + Sync + 'static {
    move |r: &Recorded| {
        let text = if is_summarizer(&body(r)) {
            "Summary."
        } else {
            "Noted."
        };
        Reply::json(200, &json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}).to_string())
    }
}

/// Runs turns whose sizes are chosen so that one prompt lands just under
/// the room (3 840 of a 4 096 window with 256 for the answer) but past
/// the early-compaction line; returns the turn of the first compaction.
async fn aim_at_the_line(compaction: &str) -> Option<usize> {
    let up = FakeServer::start(no_usage_server()).await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("s.sqlite3")).unwrap());
    let cfg = config(&up.base_url(), 4_096, 256, compaction);
    let gw = gateway_with_store(&cfg, no_auth(), store).await;
    let room = 4_096 - 256;
    let mut last = 0u64;
    for i in 0..12 {
        // About 900 tokens a turn, then exactly what lands 40 tokens under
        // the room (the early line is 192 under it).
        let left = (room - 40u64).saturating_sub(last + 6 + 4);
        let tokens = if left > 1_400 { 900 } else { left };
        let text = "word".repeat(tokens as usize);
        let r = say(&gw, "aim", &text).await;
        assert_eq!(r.status(), 200);
        last = r.headers()["x-clawgate-prompt-estimate"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let n = r
            .headers()
            .get("x-clawgate-context")
            .map(|h| h.to_str().unwrap().to_string())
            .unwrap_or_default();
        if n.contains("context: compacted") {
            return Some(i);
        }
        if tokens < 900 {
            // The aimed turn passed without a compaction: it fit.
            assert!(
                last <= room && last > room - 192,
                "aimed at the line: {last}"
            );
            return None;
        }
    }
    None
}

#[tokio::test]
async fn ctx_3_with_compaction_off_a_turn_is_compacted_only_when_it_would_not_fit() {
    // On: the aimed turn is past the early line, so it is compacted.
    assert_eq!(aim_at_the_line("").await, Some(3));
    // Off: the same turn fits, so it is sent as it is.
    assert_eq!(
        aim_at_the_line(", compaction: { enabled: false }").await,
        None
    );
    // Off, and a turn that does not fit: compacted even so (OpenClaw's
    // `enabled: false` turns off only the early compaction).
    let up = FakeServer::start(no_usage_server()).await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("s.sqlite3")).unwrap());
    let cfg = config(
        &up.base_url(),
        4_096,
        256,
        ", compaction: { enabled: false }",
    );
    let gw = gateway_with_store(&cfg, no_auth(), store.clone()).await;
    for i in 0..6 {
        let r = say(&gw, "off", &"word".repeat(900)).await;
        assert_eq!(r.status(), 200, "turn {i}");
    }
    let s = store.get("off").await.unwrap().unwrap();
    assert!(s.compactions >= 1);
}

#[tokio::test]
async fn ctx_2_the_refusal_is_at_the_room_line_itself() {
    let seen = Arc::new(Seen::default());
    let up = FakeServer::start(tokenizing_server(4, 16_000, seen)).await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("s.sqlite3")).unwrap());
    let gw = gateway_with_store(&config(&up.base_url(), 16_000, 8_192, ""), no_auth(), store).await;
    // 12 000 tokens of message fit the 16 000 window, but not with the
    // 4 000 the client asks to keep for the answer: refused, in numbers,
    // before anything is sent.
    let text = "abcd".repeat(12_000);
    let ask = |max: u64, key: &'static str| {
        http()
            .post(gw.url("/v1/chat/completions"))
            .json(&json!({"model": "default", "user": key, "max_tokens": max, "messages": [{"role": "user", "content": text}]}))
            .send()
    };
    let r = ask(4_000, "line").await.unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    let m = v["error"]["message"].as_str().unwrap();
    assert!(
        m.starts_with(
            "prompt is too long: the new message with the system prompt and tools is about 1200"
        ),
        "{m}"
    );
    assert!(m.contains("a/m's window is 16000 tokens (config:contextWindow) and 4000 must stay free for the answer (the request's max_tokens 4000)"), "{m}");
    // No prompt was sent (the fake has no tokenizer endpoint to ask).
    assert!(up.requests().iter().all(|r| r.path == "/tokenize"));
    // With a smaller answer it fits: answered.
    let r = ask(2_000, "line2").await.unwrap();
    assert_eq!(r.status(), 200);
}

/// A tokenizer fake whose summaries are long (a small model that does not
/// stop): 1 byte a token.
fn wordy_summarizer(window: u64) -> impl Fn(&Recorded) -> Reply + Send + Sync + 'static {
    move |r: &Recorded| {
        let v = body(r);
        let prompt = count(&v, 1);
        if prompt > window {
            return Reply::json(400, &json!({"error": {"code": 400,
                "message": format!("request ({prompt} tokens) exceeds the available context size ({window} tokens), try increasing it"),
                "type": "exceed_context_size_error", "n_prompt_tokens": prompt, "n_ctx": window}}).to_string());
        }
        let text = if is_summarizer(&v) {
            "summary words ".repeat(40)
        } else {
            "ok".to_string()
        };
        Reply::json(200, &json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": text.len()}}).to_string())
    }
}

#[tokio::test]
async fn ctx_2_a_message_that_leaves_no_room_for_the_summary_is_answered_without_it() {
    let up = FakeServer::start(wordy_summarizer(2_048)).await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("s.sqlite3")).unwrap());
    let gw = gateway_with_store(
        &config(&up.base_url(), 2_048, 64, ""),
        no_auth(),
        store.clone(),
    )
    .await;
    let mut cut = 0;
    for t in 0..4 {
        // 1 500 tokens of a 1 984-token room: the summary does not fit
        // beside it whole.
        let r = say(&gw, "full", &format!("{t} {}", "x".repeat(1_500))).await;
        let notice = r
            .headers()
            .get("x-clawgate-context")
            .map(|h| h.to_str().unwrap().to_string())
            .unwrap_or_default();
        assert_eq!(r.status(), 200, "turn {t}: {}", r.text().await.unwrap());
        if notice.contains("left out of this turn") || notice.contains("was cut to") {
            cut += 1;
        }
    }
    assert!(cut >= 2, "{cut}");
    // Every request the server answered fit its window.
    assert!(up.requests().iter().all(|r| count(&body(r), 1) <= 2_048));
    let s = store.get("full").await.unwrap().unwrap();
    assert!(s.compactions >= 2);
}

/// llama.cpp's tokenizer endpoint beside its chat endpoint, at one byte
/// a token; chat answers report no usage, so nothing else calibrates.
fn server_with_tokenizer(tokenize: bool) -> impl Fn(&Recorded) -> Reply + Send + Sync + 'static {
    move |r: &Recorded| {
        let v = body(r);
        if r.path == "/tokenize" {
            if !tokenize {
                return Reply::json(
                    404,
                    r#"{"error":{"code":404,"message":"File Not Found","type":"not_found_error"}}"#,
                );
            }
            let n = v["content"].as_str().map_or(0, str::len);
            return Reply::json(200, &json!({"tokens": vec![7; n]}).to_string());
        }
        let prompt = count(&v, 1);
        if prompt > 4_096 {
            return Reply::json(400, &json!({"error": {"code": 400,
                "message": format!("request ({prompt} tokens) exceeds the available context size (4096 tokens), try increasing it"),
                "type": "exceed_context_size_error", "n_prompt_tokens": prompt, "n_ctx": 4_096}}).to_string());
        }
        Reply::json(200, &json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]}).to_string())
    }
}

#[tokio::test]
async fn ctx_2_near_the_line_the_servers_tokenizer_counts() {
    let up = FakeServer::start(server_with_tokenizer(true)).await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("s.sqlite3")).unwrap());
    let gw = gateway_with_store(&config(&up.base_url(), 4_096, 256, ""), no_auth(), store).await;
    // 15 000 bytes: the heuristic says 3 750 tokens, just under the room
    // of 3 840; the server's tokenizer says 15 000. Refused, in its
    // numbers, without a chat request.
    let r = say(&gw, "tok", &"x".repeat(15_000)).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    let m = v["error"]["message"].as_str().unwrap();
    assert!(m.contains("is about 1500"), "{m}");
    let paths: Vec<String> = up.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/tokenize"], "asked the tokenizer, sent no prompt");
    // Far from the line, nobody asks.
    let r = say(&gw, "tok2", "hello").await;
    assert_eq!(r.status(), 200);
    assert_eq!(up.requests().len(), 2);

    // A server without the endpoint is asked once; the overflow path
    // still keeps its error from the client.
    let up = FakeServer::start(server_with_tokenizer(false)).await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("s.sqlite3")).unwrap());
    let gw = gateway_with_store(&config(&up.base_url(), 4_096, 256, ""), no_auth(), store).await;
    for key in ["a", "b"] {
        let r = say(&gw, key, &"x".repeat(15_000)).await;
        assert_eq!(r.status(), 400);
        let v: Value = r.json().await.unwrap();
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("prompt is too long"));
    }
    let tokenize_calls = up
        .requests()
        .iter()
        .filter(|r| r.path == "/tokenize")
        .count();
    assert_eq!(tokenize_calls, 1);
}

#[tokio::test]
async fn ctx_4_another_agents_form_of_a_key_cannot_be_squatted() {
    let private = FakeServer::start(plain_server("private")).await;
    let public = FakeServer::start(plain_server("public")).await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("s.sqlite3")).unwrap());
    let gw = gateway_with_store(
        &agents_config(&private.base_url(), &public.base_url()),
        no_auth(),
        store.clone(),
    )
    .await;
    let chat = |model: &'static str, user: String| {
        http()
            .post(gw.url("/v1/chat/completions"))
            .json(&json!({"model": model, "user": user, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    // `pub` cannot take the names `priv` (or the default agent) would get.
    for key in ["V@priv", "V@priv@priv", "V@default"] {
        let r = chat("agent/pub", key.to_string()).await.unwrap();
        assert_eq!(r.status(), 400, "{key}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "session_key_reserved", "{v}");
    }
    // ... so `priv` still gets its own session on a key `pub` took.
    assert_eq!(chat("agent/pub", "V".into()).await.unwrap().status(), 200);
    assert_eq!(chat("agent/priv", "V".into()).await.unwrap().status(), 200);
    assert_eq!(
        store.get("V@priv").await.unwrap().unwrap().agent.as_deref(),
        Some("priv")
    );
    // An agent's own form, and an `@` that names no agent, are fine.
    assert_eq!(
        chat("agent/pub", "W@pub".into()).await.unwrap().status(),
        200
    );
    assert_eq!(
        chat("agent/pub", "alice@example.com".into())
            .await
            .unwrap()
            .status(),
        200
    );

    // A kept answer whose session key is the longest a client may send
    // plus `@pub` is still continued by its agent.
    let long = "k".repeat(256);
    assert_eq!(
        chat("agent/priv", long.clone()).await.unwrap().status(),
        200
    );
    let r = http()
        .post(gw.url("/v1/responses"))
        .json(&json!({"model": "agent/pub", "user": long, "store": true, "input": "first"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let r = http()
        .post(gw.url("/v1/responses"))
        .json(&json!({"model": "agent/pub", "previous_response_id": v["id"], "input": "second"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let s = store.get(&format!("{long}@pub")).await.unwrap().unwrap();
    assert_eq!(s.turns, 2);

    // `/usage` in a session counts that session only, not an earlier one
    // (another agent's, deleted) under the same key.
    assert_eq!(chat("agent/priv", "RK".into()).await.unwrap().status(), 200);
    assert!(store.delete("RK").await.unwrap());
    assert_eq!(chat("agent/pub", "RK".into()).await.unwrap().status(), 200);
    let r = http()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "agent/pub", "user": "RK", "messages": [{"role": "user", "content": "/usage"}]}))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    let text = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(
        text.contains("pub/m: 1 calls") && !text.contains("priv/m"),
        "{text}"
    );
}

#[tokio::test]
async fn ctx_4_turns_reaching_one_session_by_two_keys_run_one_after_the_other() {
    let release = Arc::new(tokio::sync::Notify::new());
    let held = release.clone();
    let n = Arc::new(AtomicUsize::new(0));
    let seen = n.clone();
    let public = FakeServer::start(move |_r: &Recorded| {
        let i = seen.fetch_add(1, Ordering::SeqCst);
        let body = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": format!("public {i}")}, "finish_reason": "stop"}]}).to_string();
        let reply = Reply::new(200).header("content-type", "application/json");
        // The first answer waits for the test.
        if i == 0 {
            reply.wait(held.clone()).bytes(body)
        } else {
            reply.bytes(body)
        }
    })
    .await;
    let private = FakeServer::start(plain_server("private")).await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("s.sqlite3")).unwrap());
    let gw = Arc::new(
        gateway_with_store(
            &agents_config(&private.base_url(), &public.base_url()),
            no_auth(),
            store.clone(),
        )
        .await,
    );
    let turn = |model: &'static str, user: &'static str, text: &'static str| {
        let gw = gw.clone();
        tokio::spawn(async move {
            http()
                .post(gw.url("/v1/chat/completions"))
                .json(&json!({"model": model, "user": user, "messages": [{"role": "user", "content": text}]}))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    // `priv` owns L; `pub`'s turns on L go to L@pub.
    assert_eq!(turn("agent/priv", "L", "mine").await.unwrap(), 200);
    let first = turn("agent/pub", "L", "one");
    while n.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    // The same session by its own name waits for the turn in flight...
    let second = turn("agent/pub", "L@pub", "two");
    // ... while another agent's session on the same key does not.
    assert_eq!(turn("agent/priv", "L", "again").await.unwrap(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(public.requests().len(), 1, "the second turn waited");
    release.notify_one();
    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(second.await.unwrap(), 200);
    // The second turn was built on the first.
    let last = body(public.requests().last().unwrap());
    let said: Vec<String> = last["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(said, ["one", "public 0", "two"], "{last}");
}

#[tokio::test]
async fn ctx_2_the_warning_is_sent_when_the_session_crosses_the_line_not_every_turn() {
    // No usage from the server: nothing calibrates, every turn is near.
    let up = FakeServer::start(no_usage_server()).await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("s.sqlite3")).unwrap());
    let cfg = config(&up.base_url(), 8_192, 256, "");
    let gw = gateway_with_store(&cfg, no_auth(), store).await;
    let line = (8_192 - 256) / 10 * 8;
    let (mut warned, mut crossings, mut compacted, mut past) = (0, 0, 0, 0);
    let mut under = true;
    for _ in 0..14 {
        let r = say(&gw, "line", &"word".repeat(600)).await;
        assert_eq!(r.status(), 200);
        let est: u64 = r.headers()["x-clawgate-prompt-estimate"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let n = r
            .headers()
            .get("x-clawgate-context")
            .map(|h| h.to_str().unwrap().to_string())
            .unwrap_or_default();
        if n.contains("context: compacted") {
            compacted += 1;
            under = est <= line;
        } else if est > line {
            past += 1;
            if under {
                crossings += 1;
            }
            under = false;
        }
        warned += n.matches("past 80 % of the room").count();
    }
    // Several turns past the line, one warning per crossing.
    assert!(
        compacted >= 1 && past > crossings,
        "{compacted} {past} {crossings}"
    );
    assert_eq!(warned, crossings, "{past} turns past the line");
}

#[tokio::test]
async fn sec_keys_with_control_characters_are_refused() {
    let up = FakeServer::start(plain_server("up")).await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("s.sqlite3")).unwrap());
    let gw = gateway_with_store(
        &config(&up.base_url(), 8_192, 256, ""),
        no_auth(),
        store.clone(),
    )
    .await;
    for key in [
        "\u{1b}]0;pwned\u{7}",
        "a\n2026-12-03T00:00:00Z ERROR forged",
        "nul\u{0}",
        "\u{1b}[2J",
    ] {
        let r = say(&gw, key, "hi").await;
        assert_eq!(r.status(), 400, "{key:?}");
        let v: Value = r.json().await.unwrap();
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("control character"),
            "{v}"
        );
        let r = http()
            .post(gw.url("/v1/responses"))
            .json(&json!({"model": "default", "previous_response_id": key, "input": "x"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{key:?}");
    }
    assert!(store.sessions(10).await.unwrap().is_empty());
    assert!(up.requests().is_empty());
}

#[tokio::test]
async fn a_capped_responses_stream_ends_with_response_incomplete() {
    let up = FakeServer::start(|_r: &Recorded| {
        Reply::sse([
            format!("data: {}\n\n", json!({"choices": [{"index": 0, "delta": {"content": "cut sho"}}]})),
            format!("data: {}\n\n", json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}], "usage": {"prompt_tokens": 5, "completion_tokens": 2}})),
            "data: [DONE]\n\n".to_string(),
        ])
    })
    .await;
    let gw = gateway_with(
        &config(&up.base_url(), 8_192, 2, ""),
        no_auth(),
        Default::default(),
    )
    .await;
    let text = http()
        .post(gw.url("/v1/responses"))
        .json(&json!({"model": "default", "stream": true, "input": "hi"}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!text.contains("event: response.completed"), "{text}");
    let last = text
        .split("\n\n")
        .filter(|f| f.contains("event: response.incomplete"))
        .last()
        .expect("response.incomplete");
    let data: Value = serde_json::from_str(last.split("data: ").nth(1).unwrap()).unwrap();
    assert_eq!(data["type"], "response.incomplete");
    assert_eq!(data["response"]["status"], "incomplete");
    assert_eq!(
        data["response"]["incomplete_details"]["reason"],
        "max_output_tokens"
    );
}

#[tokio::test]
async fn a_server_killed_mid_stream_is_unreachable_not_a_timeout() {
    let up = FakeServer::start(|_r: &Recorded| {
        Reply::sse([format!(
            "data: {}\n\n",
            json!({"choices": [{"index": 0, "delta": {"content": "half an ans"}}]})
        )])
        .close()
    })
    .await;
    let gw = gateway_with(
        &config(&up.base_url(), 8_192, 256, ""),
        no_auth(),
        Default::default(),
    )
    .await;
    let text = http()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "default", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("half an ans"), "{text}");
    assert!(text.contains("\"code\":\"unreachable\""), "{text}");
    assert!(!text.contains("\"code\":\"timeout\""), "{text}");
}
