//! `clawgate gateway` as a process: graceful shutdown drains an in-flight
//! stream, and gives up at the drain bound (GW-1).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use clawgate_testkit::{FakeServer, Reply};
use serde_json::json;
use tokio::sync::Notify;

fn start(dir: &std::path::Path, upstream: &str, drain: u64) -> (Child, String) {
    start_logging(dir, upstream, drain, "off")
}

fn start_logging(dir: &std::path::Path, upstream: &str, drain: u64, log: &str) -> (Child, String) {
    std::fs::write(
        dir.join("clawgate.json5"),
        format!(r#"{{ models: {{ providers: {{ up: {{ baseUrl: "{upstream}", models: [{{ id: "m" }}] }} }} }} }}"#),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_clawgate"))
        .args([
            "gateway",
            "--port",
            "0",
            "--drain-seconds",
            &drain.to_string(),
        ])
        .current_dir(dir)
        .env("HOME", dir)
        .env("CLAWGATE_LOG", log)
        .env_remove("CLAWGATE_CONFIG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().rsplit(' ').next().unwrap().to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{line}");
    (child, url)
}

fn sigterm(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

fn held_stream(hold: Arc<Notify>) -> Reply {
    Reply::sse([format!(
        "data: {}\n\n",
        json!({"choices":[{"delta":{"content":"one "}}]})
    )])
    .wait(hold)
    .bytes(format!(
        "data: {}\n\ndata: [DONE]\n\n",
        json!({"choices":[{"delta":{"content":"two"},"finish_reason":"stop"}]})
    ))
}

async fn wait_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_stream_then_exits() {
    let hold = Arc::new(Notify::new());
    let h2 = hold.clone();
    let up = FakeServer::start(move |_| held_stream(h2.clone())).await;
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url) = start(dir.path(), &up.base_url(), 30);
    let mut r = reqwest::Client::new()
        .post(format!("{url}/v1/chat/completions"))
        .json(&json!({"model": "default", "stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    let mut seen = String::new();
    while !seen.contains("one ") {
        seen.push_str(&String::from_utf8_lossy(&r.chunk().await.unwrap().unwrap()));
    }
    sigterm(&child);
    // Still serving the in-flight answer: release the rest and read it all.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "exited before the stream finished"
    );
    hold.notify_waiters();
    while let Some(c) = r.chunk().await.unwrap() {
        seen.push_str(&String::from_utf8_lossy(&c));
    }
    assert!(
        seen.contains("two") && seen.trim_end().ends_with("data: [DONE]"),
        "{seen}"
    );
    let status = wait_exit(&mut child, Duration::from_secs(10))
        .await
        .expect("exits after draining");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_gives_up_at_the_drain_bound() {
    let hold = Arc::new(Notify::new());
    let h2 = hold.clone();
    let up = FakeServer::start(move |_| held_stream(h2.clone())).await;
    let dir = tempfile::tempdir().unwrap();
    const DRAIN: Duration = Duration::from_secs(2);
    let (mut child, url) = start(dir.path(), &up.base_url(), DRAIN.as_secs());
    let mut r = reqwest::Client::new()
        .post(format!("{url}/v1/chat/completions"))
        .json(&json!({"model": "default", "stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    let mut seen = String::new();
    while !seen.contains("one ") {
        seen.push_str(&String::from_utf8_lossy(&r.chunk().await.unwrap().unwrap()));
    }
    let signalled = std::time::Instant::now();
    sigterm(&child);
    let status = wait_exit(&mut child, Duration::from_secs(10))
        .await
        .expect("exits at the drain bound");
    let took = signalled.elapsed();
    assert!(status.success());
    // It waited for the held stream up to the bound, and not much longer
    // (a bound twice as long would miss this window).
    assert!(
        took >= DRAIN - Duration::from_millis(100) && took < DRAIN + Duration::from_millis(1500),
        "SIGTERM to exit took {took:?} with a {DRAIN:?} drain bound"
    );
    // The held answer was cut, not completed.
    while let Ok(Some(c)) = r.chunk().await {
        seen.push_str(&String::from_utf8_lossy(&c));
    }
    assert!(!seen.contains("[DONE]") && !seen.contains("two"), "{seen}");
}

async fn model_ids(url: &str) -> Vec<String> {
    let v: serde_json::Value = reqwest::get(format!("{url}/v1/models"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cfg_6_reload_applies_valid_changes_and_keeps_old_on_invalid() {
    let up = FakeServer::start(|_| Reply::json(200, "{}")).await;
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url) = start_logging(dir.path(), &up.base_url(), 1, "warn");
    assert!(!model_ids(&url).await.contains(&"Fast".to_string()));
    // A valid change is picked up without a restart.
    std::fs::write(
        dir.path().join("clawgate.json5"),
        format!(
            r#"{{ agents: {{ defaults: {{ models: {{ "up/m": {{ alias: "Fast" }} }} }} }},
                 models: {{ providers: {{ up: {{ baseUrl: "{}", models: [{{ id: "m" }}] }} }} }} }}"#,
            up.base_url()
        ),
    )
    .unwrap();
    let mut seen = false;
    for _ in 0..100 {
        if model_ids(&url).await.contains(&"Fast".to_string()) {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen, "reloaded within 10 s");
    // A truncated file (what `cat > clawgate.json5` does first) is a write
    // in progress: the running config stays.
    std::fs::write(dir.path().join("clawgate.json5"), "").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(model_ids(&url).await.contains(&"Fast".to_string()));
    // An invalid file is rejected; the running config stays.
    std::fs::write(
        dir.path().join("clawgate.json5"),
        "{ models: { mode: \"merged\" } }",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(model_ids(&url).await.contains(&"Fast".to_string()));
    assert!(child.try_wait().unwrap().is_none(), "still running");
    // The watcher goes on after a rejected file: a further valid change
    // (with a new port, which needs a restart) is applied.
    std::fs::write(
        dir.path().join("clawgate.json5"),
        format!(
            r#"{{ gateway: {{ port: 18799 }}, agents: {{ defaults: {{ models: {{ "up/m": {{ alias: "Faster" }} }} }} }},
                 models: {{ providers: {{ up: {{ baseUrl: "{}", models: [{{ id: "m" }}] }} }} }} }}"#,
            up.base_url()
        ),
    )
    .unwrap();
    let mut seen = false;
    for _ in 0..100 {
        if model_ids(&url).await.contains(&"Faster".to_string()) {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen, "a valid change after a rejected one is applied");
    sigterm(&child);
    wait_exit(&mut child, Duration::from_secs(10))
        .await
        .unwrap();
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(log.contains("config reload rejected"), "{log}");
    assert!(
        log.contains("config reload skipped: the file is empty"),
        "{log}"
    );
    assert!(
        log.contains("gateway.port changed; it takes effect only after a restart"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cfg_6_reload_follows_an_included_file() {
    let up = FakeServer::start(|_| Reply::json(200, "{}")).await;
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url) = start_logging(dir.path(), &up.base_url(), 1, "warn");
    let wait_for = |alias: &'static str| {
        let url = url.clone();
        async move {
            for _ in 0..100 {
                if model_ids(&url).await.contains(&alias.to_string()) {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            false
        }
    };
    assert!(!model_ids(&url).await.contains(&"One".to_string()));
    // The config becomes a split one; then only the included file changes.
    let agents = dir.path().join("agents.json5");
    std::fs::write(
        &agents,
        r#"{ defaults: { models: { "up/m": { alias: "One" } } } }"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("clawgate.json5"),
        format!(
            r#"{{ agents: {{ $include: "./agents.json5" }},
                 models: {{ providers: {{ up: {{ baseUrl: "{}", models: [{{ id: "m" }}] }} }} }} }}"#,
            up.base_url()
        ),
    )
    .unwrap();
    assert!(wait_for("One").await, "the split config was loaded");
    // A different size, so the change shows even within one mtime tick.
    std::fs::write(
        &agents,
        r#"{ defaults: { models: { "up/m": { alias: "TwoTwo" } } } }"#,
    )
    .unwrap();
    assert!(
        wait_for("TwoTwo").await,
        "a change to the included file reloads"
    );
    sigterm(&child);
    wait_exit(&mut child, Duration::from_secs(10))
        .await
        .unwrap();
}

/// CTX-1: SIGKILL during 32 concurrent session turns leaves a consistent
/// database holding every turn whose reply completed, and no half turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_during_session_turns_loses_no_acknowledged_turn() {
    use clawgate_store::{EntryKind, SqliteStore, Store};
    // Answers end at staggered times, so the kill lands mid-way.
    let n = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let n2 = n.clone();
    let up = FakeServer::start(move |_| {
        let i = n2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Reply::sse([format!(
            "data: {}\n\n",
            json!({"choices":[{"delta":{"content":"part "}}]})
        )])
        .sleep(Duration::from_millis(40 * i))
        .bytes(format!(
            "data: {}\n\ndata: [DONE]\n\n",
            json!({"choices":[{"delta":{"content":"end"},"finish_reason":"stop"}]})
        ))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("clawgate.json5"),
        format!(r#"{{ models: {{ providers: {{ up: {{ baseUrl: "{}", models: [{{ id: "m" }}] }} }} }} }}"#, up.base_url()),
    )
    .unwrap();
    let state = dir.path().join("state");
    let mut child = Command::new(env!("CARGO_BIN_EXE_clawgate"))
        .args(["gateway", "--port", "0"])
        .current_dir(dir.path())
        .env("HOME", dir.path())
        .env("CLAWGATE_STATE_DIR", &state)
        .env("CLAWGATE_LOG", "off")
        .env_remove("CLAWGATE_CONFIG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().rsplit(' ').next().unwrap().to_string();
    let client = reqwest::Client::new();
    let mut turns = Vec::new();
    for i in 0..32 {
        let (client, url) = (client.clone(), url.clone());
        turns.push(tokio::spawn(async move {
            let r = client
                .post(format!("{url}/v1/chat/completions"))
                .json(
                    &json!({"model": "default", "stream": true, "user": format!("s{i}"),
                              "messages": [{"role": "user", "content": format!("turn of s{i}")}]}),
                )
                .send()
                .await;
            let Ok(mut r) = r else { return (i, false) };
            let mut seen = String::new();
            while let Ok(Some(c)) = r.chunk().await {
                seen.push_str(&String::from_utf8_lossy(&c));
            }
            (i, seen.contains("[DONE]"))
        }));
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let killed = Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let _ = child.wait();
    let mut completed = Vec::new();
    for t in turns {
        let (i, done) = t.await.unwrap();
        if done {
            completed.push(i);
        }
    }
    assert!(
        !completed.is_empty() && completed.len() < 32,
        "the kill landed mid-way: {completed:?}"
    );
    let store = SqliteStore::open(&state.join("sessions.sqlite3")).unwrap();
    assert_eq!(store.integrity_check().unwrap(), "ok");
    for i in 0..32 {
        let session = store.get(&format!("s{i}")).await.unwrap();
        let entries = match &session {
            Some(s) => store.transcript(s.id).await.unwrap(),
            None => Vec::new(),
        };
        if completed.contains(&i) {
            let kinds: Vec<_> = entries.iter().map(|e| (e.kind, e.text.as_str())).collect();
            assert_eq!(
                kinds,
                vec![
                    (EntryKind::User, format!("turn of s{i}").as_str()),
                    (EntryKind::Assistant, "part end")
                ],
                "s{i} was acknowledged"
            );
        } else {
            // Never half a turn: nothing, or the whole turn.
            assert!(
                entries.is_empty() || entries.len() == 2,
                "s{i}: {entries:?}"
            );
        }
    }
}
