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

use clawgate_store::{SqliteStore, Store};
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
    for m in v["messages"].as_array().unwrap() {
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
