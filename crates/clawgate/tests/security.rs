//! `clawgate security audit` (SEC-5) and its place in `doctor`: every
//! seeded problem of a fixture is found with its fix, a clean config gets
//! none, and the outbound guard's refusal of a blocked `baseUrl` is an
//! error before any request.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/configs/audit")
        .join(name)
}

fn audit(dir: &Path, config: &Path, env: &[(&str, &str)]) -> (Output, Value) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_clawgate"));
    c.args([
        "security",
        "audit",
        "--json",
        "--config",
        config.to_str().unwrap(),
    ])
    .current_dir(dir)
    .env_clear()
    .env("HOME", dir)
    .env("PATH", std::env::var("PATH").unwrap_or_default())
    .env(
        "CLAWGATE_TEST_GATEWAY_TOKEN",
        "gw-0123456789abcdef0123456789abcdef",
    )
    .env("CLAWGATE_TEST_ANTHROPIC_KEY", "sk-ant-0123456789");
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    let v: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)));
    (o, v)
}

fn checks(v: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            assert!(!f["fix"].as_str().unwrap().is_empty(), "{f}");
            (
                f["check"].as_str().unwrap().to_string(),
                f["subject"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

fn staged(dir: &Path, name: &str, mode: u32) -> PathBuf {
    let to = dir.join(name);
    std::fs::copy(fixture(name), &to).unwrap();
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode)).unwrap();
    to
}

#[test]
fn the_audit_finds_every_seeded_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = staged(dir.path(), "seeded.json5", 0o644);
    let (o, v) = audit(dir.path(), &cfg, &[]);
    assert!(o.status.success(), "warnings only: exit 0");
    let s = |a: &str, b: &str| (a.to_string(), b.to_string());
    let mut want = vec![
        s("compaction.disabled", "agents.defaults.compaction"),
        s("fs.config.perms", cfg.to_str().unwrap()),
        s(
            "gateway.no_model_policy",
            "agents.defaults.modelPolicy.allow",
        ),
        s("gateway.weak_secret", "gateway.auth"),
        s(
            "model.small_with_tools",
            "lmstudio/llama-3.2-3b-instruct-q3_k_m",
        ),
        s("models.replace_without_hosted", "models.mode"),
        s(
            "network.allow_private",
            "models.providers.proxy.request.allowPrivateNetwork",
        ),
        s(
            "network.allow_special_use",
            "models.providers.proxy.request.allowSpecialUseAddresses",
        ),
        s("secret.plaintext", "gateway.auth.token"),
        s("secret.plaintext", "models.providers.proxy.apiKey"),
        s(
            "secret.plaintext",
            "models.providers.proxy.headers.Authorization",
        ),
    ];
    want.sort();
    assert_eq!(checks(&v), want);
    let text = v.to_string();
    for secret in ["short-token", "sk-proxy-plaintext", "sk-proxy-header"] {
        assert!(!text.contains(secret), "{secret} in the audit output");
    }
    let fix = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["subject"] == "models.providers.proxy.apiKey")
        .unwrap()["fix"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        fix,
        "export PROXY_API_KEY=… and clawgate config set models.providers.proxy.apiKey '\"${PROXY_API_KEY}\"' (or use a SecretRef)"
    );
}

#[test]
fn a_clean_config_gets_no_finding_and_doctor_includes_the_audit() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = staged(dir.path(), "clean.json5", 0o600);
    let (o, v) = audit(dir.path(), &cfg, &[]);
    assert!(o.status.success());
    assert_eq!(checks(&v), Vec::<(String, String)>::new(), "{v}");
    // A hosted key in the environment arms a catalog provider for any client.
    let (_, v) = audit(
        dir.path(),
        &cfg,
        &[("OPENAI_API_KEY", "sk-openai-0123456789")],
    );
    assert_eq!(
        checks(&v),
        [(
            "env.hosted_key_reachable".to_string(),
            "models.providers.openai".to_string()
        )]
    );
    // doctor lists the audit's findings too.
    let seeded = staged(dir.path(), "seeded.json5", 0o600);
    let o = Command::new(env!("CARGO_BIN_EXE_clawgate"))
        .args([
            "doctor",
            "--json",
            "--timeout",
            "200",
            "--config",
            seeded.to_str().unwrap(),
        ])
        .current_dir(dir.path())
        .env("HOME", dir.path())
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let found: Vec<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["check"].as_str())
        .collect();
    assert!(
        found.contains(&"secret.plaintext") && found.contains(&"model.small_with_tools"),
        "{found:?}"
    );
}

#[test]
fn an_open_bind_without_auth_and_a_blocked_base_url_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let open = dir.path().join("open.json5");
    std::fs::write(
        &open,
        r#"{ gateway: { bind: "0.0.0.0" }, models: { providers: { lm: { baseUrl: "http://127.0.0.1:1234/v1", models: [{ id: "qwen3-32b" }] } } } }"#,
    )
    .unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (o, v) = audit(dir.path(), &open, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(checks(&v).contains(&(
        "gateway.bind_without_auth".to_string(),
        "gateway.bind".to_string()
    )));

    let meta = dir.path().join("meta.json5");
    std::fs::write(
        &meta,
        r#"{ models: { providers: { m: { baseUrl: "http://169.254.169.254/latest", models: [{ id: "x" }] } } } }"#,
    )
    .unwrap();
    let (o, v) = audit(dir.path(), &meta, &[]);
    assert_eq!(o.status.code(), Some(1));
    let msg = v["findings"][0]["message"].as_str().unwrap();
    assert!(
        msg.contains("models.providers.m.baseUrl: http://169.254.169.254/latest is a cloud metadata address, which the outbound guard refuses; set models.providers.m.request.allowSpecialUseAddresses: true to allow it"),
        "{msg}"
    );
    let o = Command::new(env!("CARGO_BIN_EXE_clawgate"))
        .args(["config", "validate", "--config", meta.to_str().unwrap()])
        .current_dir(dir.path())
        .env("HOME", dir.path())
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("cloud metadata address"));
}

#[test]
fn sec_state_readable_by_others_is_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = staged(dir.path(), "clean.json5", 0o600);
    let state = dir.path().join(".clawgate/state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("sessions.sqlite3"), b"").unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        state.join("sessions.sqlite3"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let (_, v) = audit(dir.path(), &cfg, &[]);
    assert_eq!(
        checks(&v),
        [("state.permissions".to_string(), state.display().to_string())],
        "{v}"
    );
    let f = &v["findings"][0];
    assert!(
        f["message"]
            .as_str()
            .unwrap()
            .contains("sessions.sqlite3 (644)"),
        "{f}"
    );
    // Private: nothing to say.
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(
        state.join("sessions.sqlite3"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let (_, v) = audit(dir.path(), &cfg, &[]);
    assert_eq!(checks(&v), Vec::<(String, String)>::new(), "{v}");
}

#[test]
fn sec_a_local_service_command_others_can_replace_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o700)).unwrap();
    let server = bin.join("llama-server");
    std::fs::write(&server, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&server, std::fs::Permissions::from_mode(0o700)).unwrap();
    let link = bin.join("server-link");
    std::os::unix::fs::symlink(&server, &link).unwrap();
    let cfg = dir.path().join("clawgate.json5");
    let write_cfg = |command: &Path| {
        std::fs::write(
            &cfg,
            format!(
                r#"{{ models: {{ mode: "replace", providers: {{ l: {{ baseUrl: "http://127.0.0.1:18123/v1", apiKey: "local",
                     localService: {{ command: "{}" }}, models: [{{ id: "m" }}] }} }} }} }}"#,
                command.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    let local_checks = |v: &Value| -> Vec<String> {
        checks(v)
            .into_iter()
            .filter(|(c, _)| c.starts_with("local."))
            .map(|(c, _)| c)
            .collect()
    };
    // Private: nothing to say.
    write_cfg(&server);
    let (_, v) = audit(dir.path(), &cfg, &[]);
    assert!(local_checks(&v).is_empty(), "{v}");
    // Writable by the group: an error.
    std::fs::set_permissions(&server, std::fs::Permissions::from_mode(0o770)).unwrap();
    let (o, v) = audit(dir.path(), &cfg, &[]);
    assert_eq!(local_checks(&v), ["local.command_writable"], "{v}");
    assert!(!o.status.success());
    // The file is private but its folder is open to others.
    std::fs::set_permissions(&server, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (_, v) = audit(dir.path(), &cfg, &[]);
    assert_eq!(local_checks(&v), ["local.command_dir_writable"], "{v}");
    // A symlinked command: a warning.
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o700)).unwrap();
    write_cfg(&link);
    let (_, v) = audit(dir.path(), &cfg, &[]);
    assert_eq!(local_checks(&v), ["local.command_symlink"], "{v}");
}
