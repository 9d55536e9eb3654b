//! SEC-3: known secret values never leave the process. A gateway at trace
//! log level runs full turns — a success after an upstream auth error that
//! quotes the key back, a fallback, a stream cut mid-answer, an exhausted
//! chain whose upstream quotes both keys, all three APIs, a wrong token —
//! with keys from the environment and from SecretRefs (file and exec);
//! then the CLI reads the config and status. Every channel is grepped for
//! every secret: stdout, stderr and logs, HTTP bodies and headers, SSE
//! events, metrics, `config get`, every file the state directory holds
//! (the session store included); `.bak` keeps the config's mode.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clawgate_testkit::{FakeServer, Recorded, Reply};
use serde_json::json;

const ENV_KEY: &str = "sk-grep-env-7f3a9c21d4e5b6a8";
const FILE_KEY: &str = "sk-grep-file-2b8d4e6f1a3c5e7d";
const EXEC_HEADER: &str = "hdr-grep-exec-9e8d7c6b5a4f3e2d";
const TOKEN: &str = "gw-grep-token-4c5d6e7f8a9b0c1d2e3f";

fn secrets() -> [&'static str; 4] {
    [ENV_KEY, FILE_KEY, EXEC_HEADER, TOKEN]
}

fn stream_reply(cut: bool) -> Reply {
    let mut r = Reply::sse([
        format!(
            "data: {}\n\n",
            json!({"choices":[{"index":0,"delta":{"role":"assistant","content":"hello "}}]})
        ),
        format!(
            "data: {}\n\n",
            json!({"choices":[{"index":0,"delta":{"content":"there"}}]})
        ),
    ]);
    if cut {
        r = r.close();
    } else {
        r = r.bytes(format!(
            "data: {}\n\ndata: [DONE]\n\n",
            json!({"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}})
        ));
    }
    r
}

fn is_stream(r: &Recorded) -> bool {
    r.body_str().contains("\"stream\":true")
}

struct Gateway {
    child: std::process::Child,
    url: String,
    stderr: Arc<Mutex<String>>,
}

fn start(dir: &Path) -> Gateway {
    let mut child = Command::new(env!("CARGO_BIN_EXE_clawgate"))
        .args(["gateway", "--port", "0"])
        .current_dir(dir)
        .env("HOME", dir)
        .env("CLAWGATE_LOG", "trace")
        .env("CLAWGATE_GREP_ENV_KEY", ENV_KEY)
        .env("CLAWGATE_GREP_TOKEN", TOKEN)
        .env_remove("CLAWGATE_CONFIG")
        .env_remove("CLAWGATE_STATE_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = Arc::new(Mutex::new(String::new()));
    let mut reader = BufReader::new(child.stderr.take().unwrap());
    let mut url = None;
    for _ in 0..200 {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        stderr.lock().unwrap().push_str(&line);
        if let Some(u) = line
            .split_whitespace()
            .find(|w| w.starts_with("http://127.0.0.1:"))
        {
            url = Some(u.trim_end_matches('/').to_string());
            break;
        }
    }
    let s = stderr.clone();
    std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = reader.read_to_string(&mut rest);
        s.lock().unwrap().push_str(&rest);
    });
    let url = url.unwrap_or_else(|| panic!("no listen line: {}", stderr.lock().unwrap()));
    Gateway { child, url, stderr }
}

fn cli(dir: &Path, args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_clawgate"))
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .env("CLAWGATE_LOG", "trace")
        .env("CLAWGATE_GREP_ENV_KEY", ENV_KEY)
        .env("CLAWGATE_GREP_TOKEN", TOKEN)
        .env_remove("CLAWGATE_CONFIG")
        .output()
        .unwrap();
    format!(
        "$ clawgate {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn files_under(dir: &Path, skip: &[PathBuf], out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if skip.contains(&p) {
            continue;
        }
        if p.is_dir() {
            files_under(&p, skip, out);
        } else {
            out.push(p);
        }
    }
}

async fn exchange(log: &mut String, req: reqwest::RequestBuilder) -> (u16, String) {
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    for (k, v) in r.headers() {
        log.push_str(&format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
    }
    let body = r.text().await.unwrap_or_default();
    log.push_str(&body);
    log.push('\n');
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_3_no_secret_reaches_any_channel() {
    // Upstream A always refuses, quoting the key it was sent.
    let a = FakeServer::start(|r| {
        let sent = r.header("authorization").unwrap_or_default().to_string();
        Reply::json(
            401,
            &json!({"error": {"message": format!("Incorrect API key provided: {sent}"), "type": "invalid_request_error", "code": "invalid_api_key"}}).to_string(),
        )
    })
    .await;
    // Upstream B: answers, then cuts a stream, then refuses quoting both
    // its key and the exec-resolved header.
    let phase = Arc::new(AtomicUsize::new(0));
    let p = phase.clone();
    let b = FakeServer::start(move |r| match p.load(Ordering::SeqCst) {
        0 if is_stream(r) => stream_reply(false),
        0 => Reply::json(
            200,
            &json!({"id": "c1", "object": "chat.completion", "model": "m", "choices": [{"index": 0, "message": {"role": "assistant", "content": "fine"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}).to_string(),
        ),
        1 => stream_reply(true),
        _ => Reply::json(
            403,
            &format!(
                "denied for key {} with tenant {}",
                r.header("authorization").unwrap_or_default(),
                r.header("x-tenant").unwrap_or_default()
            ),
        ),
    })
    .await;

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let secret_dir = d.join("secret-sources");
    std::fs::create_dir_all(&secret_dir).unwrap();
    let keys = secret_dir.join("keys.json");
    std::fs::write(&keys, json!({"b": {"apiKey": FILE_KEY}}).to_string()).unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
    let exec = secret_dir.join("tenant");
    std::fs::write(
        &exec,
        format!("#!/bin/sh\nprintf '{{\"protocolVersion\":1,\"values\":{{\"tenant\":\"{EXEC_HEADER}\"}}}}'\n"),
    )
    .unwrap();
    std::fs::set_permissions(&exec, std::fs::Permissions::from_mode(0o700)).unwrap();
    let config = d.join("clawgate.json5");
    std::fs::write(
        &config,
        format!(
            r#"{{
  gateway: {{ auth: {{ mode: "token", token: "${{CLAWGATE_GREP_TOKEN}}" }} }},
  secrets: {{ providers: {{
    files: {{ source: "file", path: "{keys}" }},
    vault: {{ source: "exec", command: "{exec}" }},
  }} }},
  models: {{ mode: "replace", providers: {{
    a: {{ baseUrl: "{a}", apiKey: "${{CLAWGATE_GREP_ENV_KEY}}", models: [{{ id: "m" }}] }},
    b: {{ baseUrl: "{b}", apiKey: {{ source: "file", provider: "files", id: "/b/apiKey" }},
         headers: {{ "x-tenant": {{ source: "exec", provider: "vault", id: "tenant" }} }},
         models: [{{ id: "m" }}] }},
  }} }},
  agents: {{ defaults: {{ model: {{ primary: "a/m", fallbacks: ["b/m"] }} }} }},
}}
"#,
            keys = keys.display(),
            exec = exec.display(),
            a = a.base_url(),
            b = b.base_url(),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();

    let mut gw = start(d);
    let http = reqwest::Client::new();
    let mut seen = String::new();
    let chat = |body: serde_json::Value| {
        http.post(format!("{}/v1/chat/completions", gw.url))
            .bearer_auth(TOKEN)
            .header("x-clawgate-session-key", "grep-session")
            .json(&body)
    };
    // 1. A refuses quoting its key; B answers (a fallback).
    let (st, body) = exchange(
        &mut seen,
        chat(json!({"model": "default", "messages": [{"role": "user", "content": "hi"}]})),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert!(body.contains("fine"));
    // 2. A stream through the fallback.
    let (st, body) = exchange(
        &mut seen,
        chat(json!({"model": "default", "stream": true, "messages": [{"role": "user", "content": "hi"}]})),
    )
    .await;
    assert_eq!(st, 200);
    assert!(body.contains("there") && body.contains("[DONE]"), "{body}");
    // 3. The stream is cut mid-answer.
    phase.store(1, Ordering::SeqCst);
    let (_, body) = exchange(
        &mut seen,
        chat(json!({"model": "default", "stream": true, "messages": [{"role": "user", "content": "hi"}]})),
    )
    .await;
    assert!(body.contains("hello "), "{body}");
    // 4. Every candidate refuses and quotes its secrets; all three APIs.
    phase.store(2, Ordering::SeqCst);
    let (st, _) = exchange(
        &mut seen,
        chat(json!({"model": "default", "messages": [{"role": "user", "content": "hi"}]})),
    )
    .await;
    assert!(st >= 400);
    exchange(
        &mut seen,
        http.post(format!("{}/v1/responses", gw.url))
            .bearer_auth(TOKEN)
            .json(&json!({"model": "default", "input": "hi", "stream": true})),
    )
    .await;
    exchange(
        &mut seen,
        http.post(format!("{}/v1/messages", gw.url))
            .header("x-api-key", TOKEN)
            .json(&json!({"model": "default", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]})),
    )
    .await;
    // 5. A wrong token, and the read-only surfaces.
    let (st, _) = exchange(
        &mut seen,
        http.post(format!("{}/v1/chat/completions", gw.url))
            .bearer_auth("wrong-token")
            .json(&json!({"model": "default", "messages": [{"role": "user", "content": "hi"}]})),
    )
    .await;
    assert_eq!(st, 401);
    for path in [
        "/metrics",
        "/v1/models",
        "/ready",
        "/health",
        "/v1/clawgate/local",
    ] {
        exchange(
            &mut seen,
            http.get(format!("{}{path}", gw.url)).bearer_auth(TOKEN),
        )
        .await;
    }
    // The upstreams did get the secrets (so the grep below means something).
    assert!(a
        .requests()
        .iter()
        .any(|r| r.header("authorization") == Some(&format!("Bearer {ENV_KEY}"))));
    assert!(b
        .requests()
        .iter()
        .any(|r| r.header("x-tenant") == Some(EXEC_HEADER)));

    Command::new("kill")
        .args(["-TERM", &gw.child.id().to_string()])
        .status()
        .unwrap();
    let status = gw.child.wait().unwrap();
    assert!(status.success());
    let mut stdout = String::new();
    gw.child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let logs = gw.stderr.lock().unwrap().clone();
    assert!(
        logs.contains("TRACE") || logs.contains("DEBUG"),
        "trace logging was on"
    );
    assert!(logs.contains("fallback"), "the fallback was logged");

    // The CLI on the same config.
    let mut cli_out = String::new();
    for args in [
        vec!["config", "get", "models.providers"],
        vec!["config", "get", "gateway.auth.token"],
        vec!["config", "get", "secrets"],
        vec!["config", "validate"],
        vec!["models", "list", "--json"],
        vec!["models", "status", "--json"],
        vec!["security", "audit", "--json"],
        vec!["sessions", "list"],
        vec!["sessions", "show", "grep-session"],
        vec!["usage", "--json"],
        vec!["config", "set", "agents.defaults.timeoutSeconds", "120"],
    ] {
        cli_out.push_str(&cli(d, &args));
    }
    let bak = d.join("clawgate.json5.bak");
    assert!(bak.exists(), "config set keeps a .bak");
    assert_eq!(
        std::fs::metadata(&bak).unwrap().permissions().mode() & 0o777,
        0o600,
        ".bak keeps the config's mode"
    );
    assert_eq!(
        std::fs::metadata(&config).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Every file clawgate wrote (session store, state, config, .bak).
    let mut files = Vec::new();
    files_under(d, std::slice::from_ref(&secret_dir), &mut files);
    assert!(
        files
            .iter()
            .any(|f| f.to_string_lossy().contains("sessions.sqlite3")),
        "{files:?}"
    );
    let mut leaks = Vec::new();
    for (name, text) in [
        ("http", seen.as_str()),
        ("gateway stdout", stdout.as_str()),
        ("gateway stderr", logs.as_str()),
        ("cli", cli_out.as_str()),
    ] {
        for s in secrets() {
            if text.contains(s) {
                leaks.push(format!("{s} in {name}"));
            }
        }
    }
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        for s in secrets() {
            if bytes.windows(s.len()).any(|w| w == s.as_bytes()) {
                leaks.push(format!("{s} in {}", f.display()));
            }
        }
    }
    if std::env::var_os("CLAWGATE_GREP_DUMP").is_some() {
        eprintln!("--- http ---\n{seen}\n--- cli ---\n{cli_out}\n--- logs ---\n{logs}");
    }
    assert!(
        leaks.is_empty(),
        "{leaks:#?}\n--- http ---\n{seen}\n--- cli ---\n{cli_out}"
    );
}
