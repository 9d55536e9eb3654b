//! `clawgate infer` end to end: the real binary against in-process
//! upstreams on 127.0.0.1 (WIRE-1..8 through the CLI).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::{Command, Output};

use clawgate_testkit::{FakeServer, Reply};
use serde_json::{json, Value};

fn wire(name: &str) -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/wire")
            .join(name),
    )
    .unwrap()
}

async fn clawgate(dir: &std::path::Path, args: &[&str]) -> Output {
    clawgate_env(dir, args, &[]).await
}

fn config(dir: &std::path::Path, base_url: &str, api: &str) {
    let text = format!(
        r#"{{
  agents: {{ defaults: {{
    model: "local/tiny",
    models: {{ "local/tiny": {{ alias: "Tiny", params: {{ extra_body: {{ top_k: 20 }}, chat_template_kwargs: {{ enable_thinking: false }} }} }} }},
    modelPolicy: {{ allow: ["local/*", "anthropic/claude-opus-4-5"] }},
  }} }},
  models: {{ providers: {{
    local: {{ baseUrl: "{base_url}", api: "{api}", models: [{{ id: "tiny", contextWindow: 32768, maxTokens: 64 }}] }},
  }} }},
}}"#
    );
    std::fs::write(dir.join("clawgate.json5"), text).unwrap();
}

fn out_json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infer_json_against_replayed_llamacpp() {
    let server =
        FakeServer::start(|_| Reply::recorded(&wire("llamacpp/chat-nonstream.http")).unwrap())
            .await;
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), &server.base_url(), "openai-completions");
    let o = clawgate(
        dir.path(),
        &[
            "infer",
            "--model",
            "Tiny",
            "--prompt",
            "hello",
            "--json",
            "--max-tokens",
            "100000",
        ],
    )
    .await;
    let v = out_json(&o);
    assert_eq!(v["ok"], true, "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(v["ref"], "local/tiny");
    assert_eq!(v["api"], "openai-completions");
    assert_eq!(v["usage"]["output"], 12);
    assert_eq!(v["stop"], "max_tokens");
    assert!(!v["text"].as_str().unwrap().is_empty());
    let body: Value = serde_json::from_slice(&server.requests()[0].body).unwrap();
    assert_eq!(
        body["model"], "tiny",
        "the upstream gets the provider-local id"
    );
    assert_eq!(
        body["max_tokens"], 64,
        "maxTokens caps the request (WIRE-8)"
    );
    // ... and says so, never silently.
    assert_eq!(
        v["capNotice"],
        "max_tokens 100000 lowered to 64: local/tiny's maxTokens is 64 (raise models.providers.local.models[].maxTokens if the model can write more)"
    );
    assert_eq!(body["top_k"], 20);
    assert_eq!(
        body["chat_template_kwargs"],
        json!({"enable_thinking": false})
    );
    assert_eq!(body["stream"], false);
    assert_eq!(
        server.requests()[0].header("authorization"),
        None,
        "a local server without key gets none"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infer_streams_text_and_keeps_reasoning_off_stdout() {
    let frames = vec![
        format!(
            "data: {}\n\n",
            json!({"choices":[{"delta":{"content":"<think>secret plan</think>"}}]})
        ),
        format!(
            "data: {}\n\n",
            json!({"choices":[{"delta":{"reasoning_content":" more"}}]})
        ),
        format!(
            "data: {}\n\n",
            json!({"choices":[{"delta":{"content":"Bonjour"},"finish_reason":"stop"}]})
        ),
        "data: [DONE]\n\n".to_string(),
    ];
    let server = FakeServer::start(move |_| Reply::sse(frames.clone())).await;
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), &server.base_url(), "openai-completions");
    let o = clawgate(
        dir.path(),
        &["infer", "--prompt", "hi", "--stream", "--show-reasoning"],
    )
    .await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "Bonjour\n");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("secret plan") && err.contains("more"), "{err}");
    let o = clawgate(dir.path(), &["infer", "--prompt", "hi", "--stream"]).await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "Bonjour\n");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !err.contains("secret plan") && !err.contains("more"),
        "{err}"
    );
    let body: Value = serde_json::from_slice(&server.requests()[0].body).unwrap();
    assert_eq!(body["stream"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infer_failures_are_classified_and_exit_non_zero() {
    let server = FakeServer::start(|_| {
        Reply::recorded(&wire("llamacpp/chat-context-overflow.http")).unwrap()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), &server.base_url(), "openai-completions");
    let o = clawgate(dir.path(), &["infer", "--prompt", "long", "--json"]).await;
    assert_eq!(o.status.code(), Some(1));
    let v = out_json(&o);
    assert_eq!(v["ok"], false);
    assert_eq!(v["error"]["status"], 400);
    assert_eq!(v["error"]["class"], "context_overflow");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("exceeds the available context size"));

    // Hosted model without a key: OpenClaw's message, with the fix.
    let o = clawgate(
        dir.path(),
        &[
            "infer",
            "--model",
            "anthropic/claude-opus-4-5",
            "--prompt",
            "x",
        ],
    )
    .await;
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("No API key found for provider \"anthropic\"; set ANTHROPIC_API_KEY"),
        "{err}"
    );

    // modelPolicy.allow applies to an explicit --model.
    let o = clawgate(
        dir.path(),
        &["infer", "--model", "openai/gpt-5.4", "--prompt", "x"],
    )
    .await;
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains(
        "Model override \"openai/gpt-5.4\" is not allowed by agents.defaults.modelPolicy.allow."
    ));

    // Nothing listening: a connection error, not a hang.
    config(dir.path(), "http://127.0.0.1:9/v1", "openai-responses");
    let o = clawgate(dir.path(), &["infer", "--prompt", "x", "--json"]).await;
    assert_eq!(o.status.code(), Some(1));
    let v = out_json(&o);
    assert_eq!(v["error"]["class"], "unreachable");
    assert_eq!(v["attempts"][0]["model"], "local/tiny");
    // The cooldown it saved is private state: 0700 folder, 0600 file.
    use std::os::unix::fs::PermissionsExt;
    let state = dir.path().join(".clawgate/state");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("cooldowns.json")), 0o600);
}

fn seed(name: &str) -> String {
    std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/configs")
            .join(name),
    )
    .unwrap()
}

async fn clawgate_env(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let dir = dir.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_clawgate"))
            .args(&args)
            .current_dir(&dir)
            .env("HOME", &dir)
            .env_remove("CLAWGATE_CONFIG")
            .env_remove("ANTHROPIC_API_KEY")
            .envs(env)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn responses_ok(text: &str) -> Reply {
    Reply::sse([
        format!(
            "event: response.output_text.delta\ndata: {}\n\n",
            json!({"delta": text})
        ),
        format!(
            "event: response.completed\ndata: {}\n\n",
            json!({"response":{"status":"completed","usage":{"input_tokens":3,"output_tokens":2}}})
        ),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_hybrid_hosted_primary_down_answers_from_local_fallback() {
    let lmstudio = FakeServer::start(|_| responses_ok("local answer")).await;
    let dir = tempfile::tempdir().unwrap();
    // The seed file unchanged, with the hosted endpoint pointed at a dead
    // loopback port and LM Studio at the fake (nothing leaves this machine).
    let text = seed("seed-hybrid-hosted-primary.json5")
        .replace("http://127.0.0.1:1234/v1", &lmstudio.base_url())
        .replacen(
            "providers: {",
            "providers: {\n      anthropic: { baseUrl: \"http://127.0.0.1:9\" },",
            1,
        );
    std::fs::write(dir.path().join("clawgate.json5"), text).unwrap();
    let env = [("ANTHROPIC_API_KEY", "sk-ant-test")];
    let o = clawgate_env(
        dir.path(),
        &["infer", "--prompt", "bonjour", "--json"],
        &env,
    )
    .await;
    let v = out_json(&o);
    assert_eq!(v["ok"], true, "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(v["ref"], "lmstudio/minimax-m2.1-gs32");
    assert_eq!(v["text"], "local answer");
    assert_eq!(v["api"], "openai-responses");
    assert_eq!(v["attempts"][0]["model"], "anthropic/claude-sonnet-4-5");
    assert_eq!(v["attempts"][0]["class"], "unreachable");
    assert_eq!(
        v["fallback"],
        "answered by lmstudio/minimax-m2.1-gs32 (selected anthropic/claude-sonnet-4-5: unreachable)"
    );
    assert_eq!(
        lmstudio.requests()[0].header("authorization"),
        Some("Bearer lmstudio")
    );

    // The failure left a cooldown that `models status` shows and the next
    // run honours (state kept under HOME/.clawgate/state).
    let o = clawgate_env(dir.path(), &["models", "status", "--json"], &env).await;
    let st = out_json(&o);
    assert_eq!(st["default"]["ref"], "anthropic/claude-sonnet-4-5");
    assert_eq!(st["default"]["rule"], "configured");
    let primary = &st["agents"][0]["candidates"][0];
    assert_eq!(primary["ref"], "anthropic/claude-sonnet-4-5");
    let cd = &primary["cooldowns"][0];
    assert_eq!(cd["class"], "unreachable");
    assert_eq!(cd["key"], "anthropic (anthropic:default)");
    let left = cd["remainingSeconds"].as_u64().unwrap();
    assert!(
        (1..=5).contains(&left),
        "a short unreachable cooldown: {left}"
    );
    let anth = st["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "anthropic")
        .unwrap();
    assert_eq!(anth["auth"], "ok (env ANTHROPIC_API_KEY)");
    let o = clawgate_env(dir.path(), &["infer", "--prompt", "encore", "--json"], &env).await;
    let v = out_json(&o);
    assert_eq!(v["ref"], "lmstudio/minimax-m2.1-gs32");
    assert!(
        v["attempts"][0]["skipped"]
            .as_str()
            .unwrap()
            .starts_with("cooling down after unreachable"),
        "{v}"
    );
    std::fs::remove_dir_all(dir.path().join(".clawgate")).unwrap();

    // An explicit --model on the dead provider fails with the attempt list.
    let o = clawgate_env(
        dir.path(),
        &["infer", "--model", "Sonnet", "--prompt", "x"],
        &env,
    )
    .await;
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("all candidates failed (1 attempts)"), "{err}");
    assert!(
        err.contains("1. anthropic/claude-sonnet-4-5 [anthropic:default] — unreachable: connection failed: connection refused (is the server running?)"),
        "{err}"
    );
    // Model calls only (`models status` also asked the server what it
    // serves).
    assert_eq!(
        lmstudio
            .requests()
            .iter()
            .filter(|r| r.method == "POST")
            .count(),
        2,
        "no fallback for an explicit model"
    );
    assert!(!err.contains("sk-ant-test"), "secrets never printed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_local_first_with_local_down_answers_from_hosted() {
    let anthropic = FakeServer::start(|_| {
        Reply::sse([
            format!(
                "event: message_start\ndata: {}\n\n",
                json!({"message":{"usage":{"input_tokens":5}}})
            ),
            format!(
                "event: content_block_delta\ndata: {}\n\n",
                json!({"index":0,"delta":{"type":"text_delta","text":"hosted answer"}})
            ),
            format!(
                "event: message_delta\ndata: {}\n\n",
                json!({"delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":2}})
            ),
            format!("event: message_stop\ndata: {}\n\n", json!({})),
        ])
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    // Local-first: the seed's reverse order, LM Studio down (nothing on the port).
    let anthropic_base = format!("http://{}", anthropic.addr);
    let text = seed("seed-lmstudio-recommended.json5")
        .replace("http://127.0.0.1:1234/v1", "http://127.0.0.1:9/v1")
        .replace(
            "model: { primary: \"lmstudio/minimax-m2.1-gs32\" },",
            "model: { primary: \"lmstudio/minimax-m2.1-gs32\", fallbacks: [\"anthropic/claude-sonnet-4-5\", \"Opus\"] },",
        )
        .replacen("providers: {", &format!("providers: {{\n      anthropic: {{ baseUrl: \"{anthropic_base}\" }},"), 1);
    std::fs::write(dir.path().join("clawgate.json5"), text).unwrap();
    let o = clawgate_env(
        dir.path(),
        &["infer", "--prompt", "bonjour", "--stream"],
        &[("ANTHROPIC_API_KEY", "sk-ant-test")],
    )
    .await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "hosted answer\n");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("answered by anthropic/claude-sonnet-4-5 (selected lmstudio/minimax-m2.1-gs32: unreachable)"), "{err}");
    let req = &anthropic.requests()[0];
    assert_eq!(req.path, "/v1/messages");
    assert_eq!(req.header("x-api-key"), Some("sk-ant-test"));
    let body: Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(body["model"], "claude-sonnet-4-5");
    assert_eq!(body["max_tokens"], 64000, "the catalog's output cap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_failing_mid_way_is_logged_as_a_failure_not_as_answered() {
    let frames = vec![
        format!(
            "data: {}\n\n",
            json!({"choices":[{"delta":{"content":"partial "}}]})
        ),
        format!(
            "data: {}\n\n",
            json!({"error":{"message":"the model crashed"}})
        ),
    ];
    let server = FakeServer::start(move |_| Reply::sse(frames.clone())).await;
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), &server.base_url(), "openai-completions");
    let o = clawgate_env(
        dir.path(),
        &["infer", "--prompt", "hi", "--stream"],
        &[("CLAWGATE_LOG", "info")],
    )
    .await;
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "partial \n");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("answer failed after output had started"),
        "{err}"
    );
    assert!(!err.contains(" answered "), "{err}");
    assert!(err.contains("the model crashed"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infer_json_on_an_empty_answer_says_what_happened() {
    let frames = vec![
        format!(
            "data: {}\n\n",
            json!({"choices":[{"delta":{"reasoning_content":"thinking and thinking"}}]})
        ),
        format!(
            "data: {}\n\n",
            json!({"choices":[{"delta":{},"finish_reason":"length"}],"usage":{"prompt_tokens":5,"completion_tokens":64}})
        ),
        "data: [DONE]\n\n".to_string(),
    ];
    let server = FakeServer::start(move |_| Reply::sse(frames.clone())).await;
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), &server.base_url(), "openai-completions");
    let o = clawgate(
        dir.path(),
        &["infer", "--prompt", "hi", "--stream", "--json"],
    )
    .await;
    assert_eq!(o.status.code(), Some(1));
    let v = out_json(&o);
    assert_eq!(v["ok"], false);
    assert_eq!(v["error"]["class"], "empty_answer");
    assert_eq!(
        v["error"]["message"],
        "local/tiny returned only reasoning, no text (stop reason: max_tokens, 64 output tokens) (the output cap was reached: raise --max-tokens or the model's maxTokens)"
    );
    assert_eq!(v["reasoning"], "thinking and thinking");
    // Without --json the same reason is the error line.
    let o = clawgate(dir.path(), &["infer", "--prompt", "hi"]).await;
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("error: local/tiny returned only reasoning, no text"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infer_with_a_session_keeps_the_conversation_between_runs() {
    let n = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let n2 = n.clone();
    let server = FakeServer::start(move |_| {
        let i = n2.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        Reply::sse([
            format!(
                "data: {}\n\n",
                json!({"choices":[{"delta":{"content":format!("answer {i}")},"finish_reason":"stop"}]})
            ),
            "data: [DONE]\n\n".to_string(),
        ])
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), &server.base_url(), "openai-completions");
    for prompt in ["first", "second"] {
        let o = clawgate(
            dir.path(),
            &["infer", "--session", "work", "--prompt", prompt],
        )
        .await;
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let body: Value = serde_json::from_slice(&server.requests()[1].body).unwrap();
    let msgs: Vec<(&str, &str)> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect();
    assert_eq!(
        msgs,
        vec![
            ("user", "first"),
            ("assistant", "answer 1"),
            ("user", "second")
        ]
    );
    assert!(dir.path().join(".clawgate/state/sessions.sqlite3").exists());
    // Without --session nothing is added.
    let o = clawgate(dir.path(), &["infer", "--prompt", "alone"]).await;
    assert!(o.status.success());
    let body: Value = serde_json::from_slice(&server.requests()[2].body).unwrap();
    assert_eq!(body["messages"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_list_show_export_and_delete() {
    let server = FakeServer::start(|_| {
        Reply::sse([
            format!(
                "data: {}\n\n",
                json!({"choices":[{"delta":{"reasoning_content":"hmm"}}]})
            ),
            format!(
                "data: {}\n\n",
                json!({"choices":[{"delta":{"content":"Bonjour"},"finish_reason":"stop"}]})
            ),
            "data: [DONE]\n\n".to_string(),
        ])
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), &server.base_url(), "openai-completions");
    let o = clawgate(
        dir.path(),
        &["infer", "--session", "s1", "--prompt", "salut"],
    )
    .await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = clawgate(dir.path(), &["sessions", "list"]).await;
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        out,
        "SESSION\tAGENT\tMODEL\tTURNS\tCOMPACTIONS\ns1\tdefault\tdefault\t1\t0\n"
    );
    let o = clawgate(dir.path(), &["sessions", "show", "s1"]).await;
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "[1] user: salut\n[1] reasoning: hmm\n[1] assistant: Bonjour\n"
    );
    let o = clawgate(dir.path(), &["sessions", "export", "s1"]).await;
    let v = out_json(&o);
    assert_eq!(v["session"]["key"], "s1");
    assert_eq!(v["entries"].as_array().unwrap().len(), 3);
    assert_eq!(v["entries"][1]["kind"], "reasoning");
    let o = clawgate(dir.path(), &["sessions", "delete", "s1"]).await;
    assert!(o.status.success());
    let o = clawgate(dir.path(), &["sessions", "show", "s1"]).await;
    assert_eq!(o.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no session \"s1\""));
    let o = clawgate(dir.path(), &["sessions", "list", "--json"]).await;
    assert_eq!(out_json(&o), json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_reports_what_the_server_reported_at_the_configured_prices() {
    let server = FakeServer::start(|_| {
        Reply::sse([
            format!(
                "data: {}\n\n",
                json!({"choices":[{"delta":{"content":"ok"},"finish_reason":"stop"}]})
            ),
            format!(
                "data: {}\n\n",
                json!({"choices":[],"usage":{"prompt_tokens":2000,"completion_tokens":100,"prompt_tokens_details":{"cached_tokens":1000}}})
            ),
            "data: [DONE]\n\n".to_string(),
        ])
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("clawgate.json5"),
        format!(
            r#"{{ models: {{ providers: {{ paid: {{ baseUrl: "{}", api: "openai-completions",
                 models: [{{ id: "m", cost: {{ input: 2, output: 8, cacheRead: 0.5, cacheWrite: 0 }} }}] }} }} }} }}"#,
            server.base_url()
        ),
    )
    .unwrap();
    for key in ["a", "a", "b"] {
        let o = clawgate(dir.path(), &["infer", "--session", key, "--prompt", "x"]).await;
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let o = clawgate(dir.path(), &["usage", "--json"]).await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v = out_json(&o);
    let row = &v["rows"][0];
    assert_eq!(row["group"], "paid/m");
    assert_eq!(
        (
            row["calls"].as_u64(),
            row["input"].as_u64(),
            row["output"].as_u64(),
            row["cacheRead"].as_u64()
        ),
        (Some(3), Some(6000), Some(300), Some(3000))
    );
    // Per call: 1 000 uncached × 2 + 1 000 × 0.5 + 100 × 8, per million.
    let want = 3.0 * (2_000.0 + 500.0 + 800.0) / 1e6;
    assert!(
        (row["costUsd"].as_f64().unwrap() - want).abs() < 1e-12,
        "{row}"
    );
    let o = clawgate(dir.path(), &["usage", "--by", "session", "--since", "7d"]).await;
    let out = String::from_utf8_lossy(&o.stdout);
    let groups: Vec<&str> = out
        .lines()
        .skip(1)
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert_eq!(groups, vec!["a", "b"], "{out}");
    let o = clawgate(dir.path(), &["usage", "--since", "soon"]).await;
    assert_eq!(o.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_sessions_output_never_carries_control_characters() {
    use clawgate_store::{EntryKind, NewEntry, SqliteStore, Store, TurnCommit};
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), "http://127.0.0.1:9/v1", "openai-completions");
    // A key and a message with escape sequences (an older database, or a
    // key given on the command line).
    let key = "\u{1b}]0;pwned\u{7}\u{1b}[2J";
    {
        let store =
            SqliteStore::open(&dir.path().join(".clawgate/state/sessions.sqlite3")).unwrap();
        let s = store.load_turn(key, None, 1).await.unwrap().session;
        store
            .commit(TurnCommit {
                session: s.id,
                entries: vec![NewEntry::new(
                    EntryKind::User,
                    "line one\nline two \u{1b}[31mred\u{1b}[0m",
                )],
                usage: Vec::new(),
                sticky: None,
                response: None,
                context: None,
                calibration: None,
                at_ms: 2,
            })
            .await
            .unwrap();
    }
    let o = clawgate(dir.path(), &["sessions", "list"]).await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        !o.stdout.contains(&0x1b) && !o.stdout.contains(&0x07),
        "{:?}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("\\u{1b}]0;pwned\\u{7}"));
    let o = clawgate(dir.path(), &["sessions", "show", key]).await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(!o.stdout.contains(&0x1b), "{text:?}");
    assert!(
        text.contains("line one\nline two \\u{1b}[31mred"),
        "{text:?}"
    );
}
