//! Discovery (LOC-5): `clawgate models discover` finds servers on the
//! ports it is told (the usual ones by default), prints ready-to-paste
//! JSON5 with the real context sizes, and `--write` adds them to the
//! config with its comments kept; a gateway with no provider configured
//! serves what it discovers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use clawgate_testkit::{free_port, FakeServer, Reply};
use serde_json::{json, Value};

async fn lmstudio() -> FakeServer {
    FakeServer::start(|r| match (r.method.as_str(), r.path.as_str()) {
        ("GET", "/v1/models") => Reply::json(
            200,
            r#"{"object":"list","data":[{"id":"qwen3-8b","object":"model","owned_by":"organization_owner"}]}"#,
        ),
        ("GET", "/api/v0/models") => Reply::json(
            200,
            r#"{"object":"list","data":[{"id":"qwen3-8b","state":"loaded","max_context_length":40960,"loaded_context_length":8192}]}"#,
        ),
        _ => Reply::json(
            200,
            r#"{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"from lmstudio"},"finish_reason":"stop"}]}"#,
        ),
    })
    .await
}

async fn llamacpp() -> FakeServer {
    FakeServer::start(|r| match (r.method.as_str(), r.path.as_str()) {
        ("GET", "/v1/models") => Reply::json(
            200,
            r#"{"object":"list","data":[{"id":"tiny","object":"model","owned_by":"llamacpp","meta":{"n_ctx":1024,"n_ctx_train":2048}}]}"#,
        ),
        _ => Reply::json(404, r#"{"error":{"message":"not found"}}"#),
    })
    .await
}

fn clawgate(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_clawgate"))
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .env_remove("CLAWGATE_CONFIG")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_prints_json5_and_writes_the_config_keeping_comments() {
    let (lm, ll) = (lmstudio().await, llamacpp().await);
    let down = free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("clawgate.json5");
    std::fs::write(
        &config,
        "// my gateway\n{\n  gateway: { port: 18789 }, // keep this\n}\n",
    )
    .unwrap();
    let ports = [lm.addr.port(), ll.addr.port(), down];
    let mut args = vec!["models".to_string(), "discover".to_string()];
    for p in ports {
        args.extend(["--port".to_string(), p.to_string()]);
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = clawgate(dir.path(), &argv);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("lmstudio: {"), "{text}");
    assert!(
        text.contains(&format!(
            "baseUrl: \"http://127.0.0.1:{}/v1\"",
            lm.addr.port()
        )),
        "{text}"
    );
    assert!(
        text.contains("{ id: \"qwen3-8b\", contextWindow: 8192, maxTokens: 4096 }, // loaded"),
        "{text}"
    );
    assert!(
        text.contains("llamacpp: {")
            && text.contains("{ id: \"tiny\", contextWindow: 1024, maxTokens: 512 }"),
        "{text}"
    );
    // The printed block is valid JSON5 under models.providers.
    let pasted = format!("{{ models: {{ providers: {{\n{text}\n}} }} }}").replace(
        "# paste under models.providers in your config, or run again with --write",
        "",
    );
    std::fs::write(dir.path().join("pasted.json5"), pasted).unwrap();
    let v = clawgate(
        dir.path(),
        &["--config", "pasted.json5", "config", "validate"],
    );
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));

    let mut write = argv.clone();
    write.push("--write");
    let out = clawgate(dir.path(), &write);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = std::fs::read_to_string(&config).unwrap();
    assert!(written.starts_with("// my gateway"), "{written}");
    assert!(written.contains("// keep this"), "{written}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("clawgate.json5.bak")).unwrap(),
        "// my gateway\n{\n  gateway: { port: 18789 }, // keep this\n}\n"
    );
    let list = clawgate(dir.path(), &["models", "list", "--json"]);
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let l = String::from_utf8_lossy(&list.stdout);
    assert!(
        l.contains("lmstudio/qwen3-8b") && l.contains("llamacpp/tiny"),
        "{l}"
    );
    // The output cap written is never above half the window.
    assert!(
        written.contains("\"maxTokens\": 512") || written.contains("maxTokens: 512"),
        "{written}"
    );
    // A second --write leaves configured providers alone.
    let again = clawgate(dir.path(), &write);
    assert!(String::from_utf8_lossy(&again.stderr).contains("already configured"));
    assert_eq!(std::fs::read_to_string(&config).unwrap(), written);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_without_providers_serves_what_it_discovers() {
    let lm = lmstudio().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut gw = Command::new(env!("CARGO_BIN_EXE_clawgate"))
        .args(["gateway", "--port", &port.to_string()])
        .current_dir(dir.path())
        .env("HOME", dir.path())
        .env("CLAWGATE_LOG", "off")
        .env(
            "CLAWGATE_DISCOVERY_PORTS",
            format!("{},{}", free_port(), lm.addr.port()),
        )
        .env_remove("CLAWGATE_CONFIG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = String::new();
    let mut reader = BufReader::new(gw.stderr.take().unwrap());
    loop {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "gateway ended: {said}"
        );
        said.push_str(&line);
        if line.contains("listening on") {
            break;
        }
    }
    assert!(
        said.contains("no provider configured: using lmstudio"),
        "{said}"
    );
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
        .json(&json!({"model": "default", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let served = r
        .headers()
        .get("x-clawgate-served-by")
        .map(|v| v.to_str().unwrap().to_string());
    let body: Value = r.json().await.unwrap();
    let _ = gw.kill();
    let _ = gw.wait();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "from lmstudio");
    assert!(served.unwrap().starts_with("lmstudio/qwen3-8b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_passes_a_key_from_the_environment_and_writes_only_its_name() {
    const KEY: &str = "sk-litellm-master-0123456789";
    // A LiteLLM proxy with a master key: nothing without it.
    let proxy = FakeServer::start(|r| {
        if r.header("authorization") != Some(&format!("Bearer {KEY}")) {
            return Reply::json(401, r#"{"error":{"message":"Authentication Error","type":"auth_error"}}"#);
        }
        match r.path.as_str() {
            "/v1/models" => Reply::json(200, r#"{"object":"list","data":[{"id":"local-llama","object":"model","owned_by":"openai"}]}"#),
            _ => Reply::json(404, r#"{"error":{"message":"not found"}}"#),
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("clawgate.json5"), "{}\n").unwrap();
    let port = proxy.addr.port().to_string();
    let o = clawgate(dir.path(), &["models", "discover", "--port", &port]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("no model server answered"));
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_clawgate"))
            .args(args)
            .current_dir(dir.path())
            .env("HOME", dir.path())
            .env_remove("CLAWGATE_CONFIG")
            .env("LITELLM_KEY", KEY)
            .output()
            .unwrap()
    };
    let o = run(&[
        "models",
        "discover",
        "--port",
        &port,
        "--api-key-env",
        "LITELLM_KEY",
        "--write",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("local-llama"), "{out}");
    assert!(!out.contains(KEY), "{out}");
    let written = std::fs::read_to_string(dir.path().join("clawgate.json5")).unwrap();
    assert!(
        written.contains("${LITELLM_KEY}") && !written.contains(KEY),
        "{written}"
    );
    // An unset variable is a usage error, not a silent keyless scan.
    let o = run(&[
        "models",
        "discover",
        "--port",
        &port,
        "--api-key-env",
        "NOPE_UNSET",
    ]);
    assert_eq!(o.status.code(), Some(2));
}
