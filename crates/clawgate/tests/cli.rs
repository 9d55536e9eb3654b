//! Black-box tests of the `clawgate` binary: config validation with exact
//! diagnostics, listings, and comment-preserving edits (CFG-1..7, REF, GW-4).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/configs")
}

/// Runs clawgate in an isolated directory with an empty HOME, so no user
/// config leaks in.
struct Run {
    dir: tempfile::TempDir,
}

impl Run {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn cmd(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_clawgate"))
            .args(args)
            .current_dir(self.dir.path())
            .env("HOME", self.dir.path())
            .env_remove("CLAWGATE_CONFIG")
            .env_remove("ANTHROPIC_API_KEY")
            .env("CLAWGATE_TEST_ANTHROPIC_KEY", "sk-ant-very-secret-value")
            .env("CLAWGATE_TEST_GATEWAY_TOKEN", "gw-very-secret-token")
            .output()
            .unwrap()
    }

    fn copy(&self, fixture: &str) -> PathBuf {
        let to = self.path(fixture.rsplit('/').next().unwrap());
        std::fs::copy(fixtures().join(fixture), &to).unwrap();
        to
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json_out(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn seed_configs_validate_unchanged() {
    let run = Run::new();
    for name in [
        "seed-hybrid-hosted-primary.json5",
        "seed-lmstudio-recommended.json5",
        "seed-other-openai-proxy.json5",
    ] {
        let shared = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/fixtures/configs")
            .join(name);
        if shared.exists() {
            // The copies in the project are the seed files byte for byte.
            assert_eq!(
                std::fs::read(&shared).unwrap(),
                std::fs::read(fixtures().join(name)).unwrap(),
                "{name} drifted from the seed"
            );
        } else if std::env::var_os("CLAWGATE_NO_SHARED").is_some() {
            eprintln!(
                "SKIPPED: {} is absent (CLAWGATE_NO_SHARED set): the seed comparison did not run",
                shared.display()
            );
        } else {
            panic!(
                "{} is absent: the seed configs cannot be compared (set CLAWGATE_NO_SHARED=1 to skip this comparison on purpose)",
                shared.display()
            );
        }
        let o = run.cmd(&["config", "validate", "--config", s(&fixtures().join(name))]);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        assert!(stdout(&o).starts_with("ok: "), "{}", stdout(&o));
        assert_eq!(stderr(&o), "", "seed configs load without warnings");
    }
}

/// Each broken file and the exact single diagnostic it must produce.
const BROKEN: &[(&str, &str)] = &[
    ("syntax-missing-comma.json5", "3:18: error: invalid JSON5: Expected comma"),
    ("syntax-unterminated-string.json5", "3:24: error: invalid JSON5: Unterminated string literal"),
    ("context-window-string.json5", "7:60: error: models.providers.lmstudio.models[0].contextWindow: expected a positive integer, got \"big\""),
    ("context-window-negative.json5", "7:50: error: models.providers.local.models[0].contextWindow: expected a positive integer, got -4096"),
    ("unknown-api.json5", "6:14: error: models.providers.lmstudio.api: unknown api \"openai-response\": expected one of openai-completions, openai-responses, anthropic-messages; did you mean \"openai-responses\"?"),
    ("model-id-prefix.json5", "6:24: error: models.providers.lmstudio.models[0].id: model id repeats the provider prefix; write \"minimax-m2.1-gs32\" (the ref is then \"lmstudio/minimax-m2.1-gs32\")"),
    ("alias-nowhere.json5", "5:9: error: agents.defaults.models[\"lmstudio/minimax-m2.1\"]: alias \"Minimax\" points to lmstudio/minimax-m2.1, which is not a model of provider \"lmstudio\" (its models: minimax-m2.1-gs32)"),
    ("duplicate-alias.json5", "6:47: error: agents.defaults.models[\"anthropic/claude-opus-4-6\"].alias: duplicate alias \"opus\" (already used at 5:47 by agents.defaults.models[\"anthropic/claude-opus-4-5\"])"),
    ("fallback-unknown-provider.json5", "6:21: error: agents.defaults.model.fallbacks[0]: fallback: Unknown provider \"lmstudoi\" in \"lmstudoi/minimax-m2.1-gs32\" (did you mean \"lmstudio\"?); known providers: lmstudio, anthropic, openai, openrouter"),
    ("typo-key.json5", "6:45: error: models.providers.lmstudio.models[0].contextWindw: unknown key; did you mean \"contextWindow\"?"),
    ("custom-provider-no-baseurl.json5", "4:7: error: models.providers.gpu-box: custom provider \"gpu-box\" must set baseUrl (only built-in providers may omit it: anthropic, openai, openrouter, lmstudio, ollama, vllm, sglang, llama-cpp, litellm)"),
    ("models-not-array.json5", "6:17: error: models.providers.local.models: expected an array, got an object"),
    ("local-service-relative-command.json5", "6:34: error: models.providers.llama.localService.command: expected an absolute path (no PATH lookup), got \"llama-server\""),
    ("max-tokens-over-window.json5", "6:65: error: models.providers.local.models[0].maxTokens: maxTokens (8192) is larger than contextWindow (4096)"),
    ("bad-mode.json5", "2:19: error: models.mode: expected \"merge\" or \"replace\", got \"merged\""),
    ("policy-unknown-provider.json5", "4:45: error: agents.defaults.modelPolicy.allow[1]: allow entry names unknown provider \"opneai\"; did you mean \"openai\"?"),
    ("duplicate-key.json5", "6:9: error: models.providers.local.baseUrl: duplicate key (first defined on line 5)"),
    ("bad-port.json5", "2:20: error: gateway.port: expected a port between 1 and 65535, got 70000"),
    ("primary-unknown-model.json5", "2:32: error: agents.defaults.model: primary model: Unknown model: lmstudio/minimax-m3 (models of lmstudio: minimax-m2.1-gs32)"),
    ("bad-input-kind.json5", "6:45: error: models.providers.local.models[0].input[1]: unknown input kind \"imgae\": expected text, image, video, audio or document; did you mean \"image\"?"),
    ("unknown-root-key.json5", "2:3: error: model: unknown key; did you mean \"models\"?"),
    ("base-url-not-url.json5", "4:25: error: models.providers.local.baseUrl: expected an http(s) URL, got \"127.0.0.1:8000/v1\""),
];

#[test]
fn cfg_4_broken_files_report_exact_position_and_message() {
    let run = Run::new();
    let dir = fixtures().join("broken");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = BROKEN.iter().map(|(n, _)| n.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "every broken fixture has an expectation");
    for (name, want) in BROKEN {
        let file = dir.join(name);
        let o = run.cmd(&["config", "validate", "--config", s(&file)]);
        assert_eq!(o.status.code(), Some(3), "{name}: {}", stderr(&o));
        let err = stderr(&o);
        let lines: Vec<&str> = err.lines().filter(|l| l.contains(": error: ")).collect();
        let expected = format!("{}:{want}", file.display());
        assert_eq!(lines, vec![expected.as_str()], "{name}");
        assert!(err.ends_with("is invalid (1 error)\n"), "{name}: {err}");
    }
}

#[test]
fn cfg_4_validate_json_is_structured() {
    let run = Run::new();
    let file = fixtures().join("broken/context-window-string.json5");
    let o = run.cmd(&["config", "validate", "--json", "--config", s(&file)]);
    assert_eq!(o.status.code(), Some(3));
    let v = json_out(&o);
    assert_eq!(v["ok"], false);
    let e = &v["errors"][0];
    assert_eq!(e["line"], 7);
    assert_eq!(e["column"], 60);
    assert_eq!(
        e["path"],
        "models.providers.lmstudio.models[0].contextWindow"
    );
    assert_eq!(e["message"], "expected a positive integer, got \"big\"");
}

#[test]
fn cfg_4_openclaw_sections_warn_once_each() {
    let run = Run::new();
    let o = run.cmd(&[
        "config",
        "validate",
        "--json",
        "--config",
        s(&fixtures().join("rich.json5")),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json_out(&o);
    let paths: Vec<&str> = v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["path"].as_str().unwrap())
        .collect();
    for p in [
        "channels",
        "tools",
        "skills",
        "agents.defaults.workspace",
        "models.providers.lmstudio.models[0].compat.thinkingFormat",
    ] {
        assert_eq!(
            paths.iter().filter(|x| **x == p).count(),
            1,
            "{p} in {paths:?}"
        );
    }
    assert_eq!(v["providers"], 6);
}

#[test]
fn models_list_on_seed_hybrid() {
    let run = Run::new();
    let file = fixtures().join("seed-hybrid-hosted-primary.json5");
    let o = run.cmd(&["models", "list", "--json", "--config", s(&file)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json_out(&o);
    let rows = v.as_array().unwrap();
    let by_ref = |r: &str| {
        rows.iter()
            .find(|x| x["ref"] == r)
            .unwrap_or_else(|| panic!("{r}"))
    };
    let lm = by_ref("lmstudio/minimax-m2.1-gs32");
    assert_eq!(lm["alias"], "MiniMax Local");
    assert_eq!(lm["contextWindow"], 196608);
    assert_eq!(lm["maxTokens"], 8192);
    assert_eq!(lm["cost"]["input"], 0.0);
    assert_eq!(lm["cost"]["output"], 0.0);
    assert_eq!(lm["api"], "openai-responses");
    assert_eq!(lm["baseUrl"], "http://127.0.0.1:1234/v1");
    assert_eq!(lm["endpoint"], "loopback");
    let sonnet = by_ref("anthropic/claude-sonnet-4-5");
    assert_eq!(sonnet["contextWindow"], 200000);
    assert_eq!(sonnet["maxTokens"], 64000);
    assert_eq!(sonnet["cost"]["input"], 3.0);
    assert_eq!(sonnet["cost"]["output"], 15.0);
    assert_eq!(sonnet["api"], "anthropic-messages");
    assert!(sonnet["tags"]
        .as_array()
        .unwrap()
        .contains(&Value::from("default")));
    let opus = by_ref("anthropic/claude-opus-4-5");
    assert_eq!(opus["cost"]["input"], 5.0);
    assert_eq!(opus["alias"], "Opus");
    assert_eq!(
        rows.len(),
        3,
        "default view: configured and referenced models"
    );

    let all = json_out(&run.cmd(&["models", "list", "--all", "--json", "--config", s(&file)]));
    assert!(all
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["ref"] == "openai/gpt-5.4"));
    let local = json_out(&run.cmd(&[
        "models",
        "list",
        "--all",
        "--local",
        "--json",
        "--config",
        s(&file),
    ]));
    let refs: Vec<&str> = local
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["ref"].as_str().unwrap())
        .collect();
    assert_eq!(refs, ["lmstudio/minimax-m2.1-gs32"]);
    let anth = json_out(&run.cmd(&[
        "models",
        "list",
        "--all",
        "--provider",
        "anthropic",
        "--json",
        "--config",
        s(&file),
    ]));
    assert!(anth
        .as_array()
        .unwrap()
        .iter()
        .all(|x| x["provider"] == "anthropic"));
    let o = run.cmd(&["models", "list", "--provider", "nope", "--config", s(&file)]);
    assert_eq!(o.status.code(), Some(4));

    // Piped output is plain tab-separated text with a header.
    let o = run.cmd(&["models", "list", "--config", s(&file)]);
    let text = stdout(&o);
    assert!(text.starts_with("MODEL\tAPI\tCONTEXT\t"), "{text}");
    assert!(
        text.contains("lmstudio/minimax-m2.1-gs32\topenai-responses\t196608\t8192\t"),
        "{text}"
    );
}

#[test]
fn models_fallbacks_list_shows_chain_in_order() {
    let run = Run::new();
    let file = fixtures().join("seed-hybrid-hosted-primary.json5");
    let v = json_out(&run.cmd(&[
        "models",
        "fallbacks",
        "list",
        "--json",
        "--config",
        s(&file),
    ]));
    assert_eq!(v["primary"]["ref"], "anthropic/claude-sonnet-4-5");
    let f: Vec<&str> = v["fallbacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["ref"].as_str().unwrap())
        .collect();
    assert_eq!(
        f,
        ["lmstudio/minimax-m2.1-gs32", "anthropic/claude-opus-4-5"]
    );
    let o = run.cmd(&["models", "fallbacks", "list", "--config", s(&file)]);
    assert_eq!(
        stdout(&o),
        "#\tMODEL\tALIAS\nprimary\tanthropic/claude-sonnet-4-5\tSonnet\n1\tlmstudio/minimax-m2.1-gs32\tMiniMax Local\n2\tanthropic/claude-opus-4-5\tOpus\n"
    );
}

#[test]
fn replace_mode_drops_catalog_models() {
    let run = Run::new();
    let file = run.copy("seed-other-openai-proxy.json5");
    let o = run.cmd(&[
        "config",
        "set",
        "models.mode",
        "\"replace\"",
        "--config",
        s(&file),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json_out(&run.cmd(&["models", "list", "--all", "--json", "--config", s(&file)]));
    let refs: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["ref"].as_str().unwrap())
        .collect();
    assert_eq!(refs, ["local/my-local-model"]);
}

const COMMENTED: &str = r#"// my gateway config
{
  agents: {
    defaults: {
      model: "lmstudio/minimax-m2.1-gs32", // local first
      models: {
        "lmstudio/minimax-m2.1-gs32": { alias: "Minimax" },
      },
    },
  },
  models: {
    mode: "merge",
    providers: {
      /* the Mac Studio */
      lmstudio: {
        baseUrl: "http://127.0.0.1:1234/v1",
        apiKey: "lmstudio",
        api: "openai-responses",
        models: [{ id: "minimax-m2.1-gs32", contextWindow: 196608 }],
      },
    },
  },
}
"#;

#[test]
fn cfg_7_edits_keep_comments_and_backups() {
    let run = Run::new();
    let file = run.path("clawgate.json5");
    std::fs::write(&file, COMMENTED).unwrap();
    // No --config: ./clawgate.json5 is found (CFG-1).
    let o = run.cmd(&["models", "set", "Opus"]);
    assert_eq!(o.status.code(), Some(4), "unknown alias: {}", stderr(&o));
    let o = run.cmd(&["models", "set", "anthropic/claude-opus-4-5"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run.cmd(&["models", "fallbacks", "add", "Minimax"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run.cmd(&[
        "models",
        "aliases",
        "add",
        "Opus",
        "anthropic/claude-opus-4-5",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run.cmd(&["models", "aliases", "add", "Big", "Opus"]);
    assert!(o.status.success(), "alias of alias: {}", stderr(&o));
    let o = run.cmd(&["models", "fallbacks", "add", "anthropic/claude-sonnet-4-5"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run.cmd(&["models", "fallbacks", "add", "anthropic/claude-sonnet-4-5"]);
    assert_eq!(o.status.code(), Some(1), "duplicate fallback refused");

    let text = std::fs::read_to_string(&file).unwrap();
    for comment in [
        "// my gateway config",
        "// local first",
        "/* the Mac Studio */",
    ] {
        assert!(text.contains(comment), "lost {comment}:\n{text}");
    }
    let backup = std::fs::read_to_string(run.path("clawgate.json5.bak")).unwrap();
    assert!(backup.contains("// my gateway config"));

    let v = json_out(&run.cmd(&["models", "fallbacks", "list", "--json"]));
    assert_eq!(v["primary"]["ref"], "anthropic/claude-opus-4-5");
    let f: Vec<&str> = v["fallbacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["ref"].as_str().unwrap())
        .collect();
    assert_eq!(
        f,
        ["lmstudio/minimax-m2.1-gs32", "anthropic/claude-sonnet-4-5"]
    );
    let aliases = json_out(&run.cmd(&["models", "aliases", "list", "--json"]));
    // "Big" moved onto the model "Opus" named: one alias per entry.
    assert!(aliases
        .as_array()
        .unwrap()
        .contains(&serde_json::json!({"alias": "Big", "ref": "anthropic/claude-opus-4-5"})));

    let o = run.cmd(&["models", "fallbacks", "remove", "Minimax"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run.cmd(&["models", "aliases", "remove", "Minimax"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run.cmd(&["models", "aliases", "remove", "Minimax"]);
    assert_eq!(o.status.code(), Some(4));
    let o = run.cmd(&["models", "fallbacks", "clear"]);
    assert!(o.status.success());
    let v = json_out(&run.cmd(&["models", "fallbacks", "list", "--json"]));
    assert_eq!(v["fallbacks"], serde_json::json!([]));
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("/* the Mac Studio */"), "{text}");
    assert!(run.cmd(&["config", "validate"]).status.success());
}

#[test]
fn cfg_7_invalid_set_is_refused_and_file_untouched() {
    let run = Run::new();
    let file = run.path("c.json5");
    std::fs::write(&file, COMMENTED).unwrap();
    let o = run.cmd(&[
        "config",
        "set",
        "models.providers.lmstudio.models[0].contextWindow",
        "\"big\"",
        "--config",
        s(&file),
    ]);
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains("nothing was written"), "{}", stderr(&o));
    assert!(stderr(&o).contains("expected a positive integer, got \"big\""));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), COMMENTED);
    assert!(!run.path("c.json5.bak").exists());

    let o = run.cmd(&[
        "config",
        "set",
        "gateway.port",
        "18800",
        "--config",
        s(&file),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run.cmd(&["config", "get", "gateway.port", "--config", s(&file)]);
    assert_eq!(stdout(&o), "18800\n");
    let o = run.cmd(&[
        "config",
        "set",
        "gateway.port",
        "{oops",
        "--config",
        s(&file),
    ]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn cfg_7_get_never_prints_secrets() {
    let run = Run::new();
    let file = fixtures().join("rich.json5");
    let o = run.cmd(&[
        "config",
        "get",
        "models.providers.anthropic.apiKey",
        "--config",
        s(&file),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "marker(env:CLAWGATE_TEST_ANTHROPIC_KEY)\n");
    let o = run.cmd(&[
        "config",
        "get",
        "models.providers.lmstudio.apiKey",
        "--config",
        s(&file),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "marker(lmstudio)\n");
    let o = run.cmd(&[
        "config",
        "get",
        "models.providers[\"vllm-rig\"]",
        "--json",
        "--config",
        s(&file),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json_out(&o);
    assert_eq!(v["headers"]["Authorization"], "***");
    assert_eq!(v["baseUrl"], "http://192.168.1.50:8000/v1");
    let o = run.cmd(&["config", "get", "", "--config", s(&file)]);
    assert_eq!(o.status.code(), Some(2));
    let whole = run.cmd(&["config", "get", "models", "--json", "--config", s(&file)]);
    assert!(whole.status.success(), "{}", stderr(&whole));
    let text = stdout(&whole);
    assert!(!text.contains("sk-ant-very-secret-value"));
    assert!(!text.contains("from-file-token"), "{text}");
    assert!(
        text.contains("\"***\"") && text.contains("marker(env:CLAWGATE_TEST_ANTHROPIC_KEY)"),
        "the secrets are there, redacted: {text}"
    );
    let o = run.cmd(&["config", "get", "models.nope", "--config", s(&file)]);
    assert_eq!(o.status.code(), Some(4));
    assert_eq!(stderr(&o), "error: Config path not found: models.nope\n");
}

#[test]
fn cfg_1_no_config_and_env_location() {
    let run = Run::new();
    let o = run.cmd(&["models", "list", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json_out(&o), serde_json::json!([]));
    let all = json_out(&run.cmd(&["models", "list", "--all", "--json"]));
    assert!(all.as_array().unwrap().len() >= 15);
    let o = run.cmd(&["config", "validate"]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("none (defaults and discovery)"));
    let o = run.cmd(&["config", "validate", "--config", "missing.json5"]);
    assert_eq!(o.status.code(), Some(4));
    let o = Command::new(env!("CARGO_BIN_EXE_clawgate"))
        .args(["config", "validate"])
        .current_dir(run.dir.path())
        .env("HOME", run.dir.path())
        .env(
            "CLAWGATE_CONFIG",
            fixtures().join("seed-lmstudio-recommended.json5"),
        )
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(stdout(&o).contains("($CLAWGATE_CONFIG)"), "{}", stdout(&o));
}

/// `config get` prints objects in file order and `config set` writes an
/// object's keys in the order they were typed (JSON values would sort).
#[test]
fn cfg_7_get_and_set_keep_key_order() {
    let run = Run::new();
    let file = run.path("order.json5");
    std::fs::write(
        &file,
        "{ models: { providers: { zeta: { baseUrl: \"http://127.0.0.1:1/v1\", api: \"openai-completions\", models: [] } } } }\n",
    )
    .unwrap();
    let o = run.cmd(&[
        "config",
        "get",
        "models.providers.zeta",
        "--config",
        s(&file),
    ]);
    let text = stdout(&o);
    let (b, a) = (text.find("baseUrl").unwrap(), text.find("\"api\"").unwrap());
    assert!(b < a, "{text}");
    let o = run.cmd(&[
        "config",
        "set",
        "models.providers.alpha",
        "{ models: [], baseUrl: \"http://127.0.0.1:2/v1\", api: \"openai-completions\" }",
        "--config",
        s(&file),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let written = std::fs::read_to_string(&file).unwrap();
    let alpha = &written[written.find("alpha").unwrap()..];
    let (m, b) = (
        alpha.find("models").unwrap(),
        alpha.find("baseUrl").unwrap(),
    );
    assert!(m < b, "{written}");
}

#[test]
fn validate_runs_the_gateway_start_up_checks() {
    let run = Run::new();
    let file = run.path("gw.json5");
    std::fs::write(
        &file,
        r#"{ gateway: { auth: { token: "${CLAWGATE_TEST_UNSET_TOKEN}" } } }"#,
    )
    .unwrap();
    let o = run.cmd(&["config", "validate", "--config", s(&file)]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("gateway.auth.token uses ${CLAWGATE_TEST_UNSET_TOKEN}, which is not set"),
        "{err}"
    );
    assert!(err.contains("is invalid (1 error)"), "{err}");
    // The gateway refuses with the same words.
    let o = run.cmd(&["gateway", "--port", "0", "--config", s(&file)]);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        stderr(&o)
            .contains("gateway.auth.token uses ${CLAWGATE_TEST_UNSET_TOKEN}, which is not set"),
        "{}",
        stderr(&o)
    );
    let o = run.cmd(&["config", "validate", "--json", "--config", s(&file)]);
    let v = json_out(&o);
    assert_eq!(v["ok"], false);
    assert_eq!(v["warnings"][0]["path"], "gateway.auth.token", "{v}");
    assert!(v["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("${CLAWGATE_TEST_UNSET_TOKEN}"));
    // A bad bind address in the file is caught too.
    std::fs::write(&file, r#"{ gateway: { bind: "127.0.0.O" } }"#).unwrap();
    let o = run.cmd(&["config", "validate", "--config", s(&file)]);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        stderr(&o).contains(":1:20: error: gateway.bind: expected \"loopback\", \"lan\" or an IP address, got \"127.0.0.O\""),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_mistyped_bind_address_is_an_error_not_loopback() {
    let run = Run::new();
    let o = run.cmd(&["gateway", "--bind", "0.0.0.O", "--port", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o)
            .contains("invalid bind address \"0.0.0.O\": use loopback, lan, or an IP address"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn config_set_takes_a_url_as_a_string_and_get_shows_defaults() {
    let run = Run::new();
    let file = run.path("clawgate.json5");
    std::fs::write(
        &file,
        "{\n  // my local box\n  models: { providers: { box: { baseUrl: \"http://127.0.0.1:1/v1\", models: [{ id: \"m\" }] } } },\n}\n",
    )
    .unwrap();
    let o = run.cmd(&[
        "config",
        "set",
        "models.providers.box.baseUrl",
        "http://127.0.0.1:1234/v1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("is not JSON5; setting it as the string \"http://127.0.0.1:1234/v1\"")
    );
    let o = run.cmd(&["config", "get", "models.providers.box.baseUrl"]);
    assert_eq!(stdout(&o), "http://127.0.0.1:1234/v1\n");
    assert!(std::fs::read_to_string(&file)
        .unwrap()
        .contains("// my local box"));
    // Broken structure is still an error, not a string.
    let o = run.cmd(&["config", "set", "models.providers.box.headers", "{ broken"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    // Keys with defaults show the default and say so.
    for (key, value, rule) in [
        ("gateway.port", "18789", "default: the default port"),
        (
            "gateway.auth.mode",
            "none",
            "default: none: no token or password is set",
        ),
        ("models.mode", "merge", "default: merge unless written"),
        (
            "models.providers.box.models[0].maxTokens",
            "8192",
            "default: 8192 unless written",
        ),
        (
            "agents.defaults.model.primary",
            "box/m",
            "the first model of the first configured provider",
        ),
    ] {
        let o = run.cmd(&["config", "get", key]);
        assert!(o.status.success(), "{key}: {}", stderr(&o));
        assert_eq!(stdout(&o), format!("{value}\n"), "{key}");
        assert!(
            stderr(&o).contains("is not written in") && stderr(&o).contains(rule),
            "{key}: {}",
            stderr(&o)
        );
    }
    let o = run.cmd(&["config", "get", "gateway.nope"]);
    assert_eq!(o.status.code(), Some(4));
}

#[test]
fn every_command_and_argument_has_help_text() {
    let run = Run::new();
    let mut todo: Vec<Vec<String>> = vec![vec![]];
    let mut seen = 0;
    while let Some(cmd) = todo.pop() {
        seen += 1;
        let mut args: Vec<&str> = cmd.iter().map(String::as_str).collect();
        args.push("--help");
        let o = run.cmd(&args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        let mut section = "";
        for line in stdout(&o).lines() {
            if !line.starts_with(' ') && line.ends_with(':') {
                section = line;
                continue;
            }
            let entry = line.trim_start();
            let indent = line.len() - entry.len();
            if section.is_empty() || entry.is_empty() || indent > 6 {
                continue; // prose, or a wrapped description
            }
            let (name, help) = match entry.split_once("  ") {
                Some((n, h)) => (n.trim(), h.trim()),
                None => (entry, ""),
            };
            assert!(!help.is_empty(), "{args:?}: `{name}` has no help text");
            if section == "Commands:" && name != "help" {
                let mut sub = cmd.clone();
                sub.push(name.to_string());
                todo.push(sub);
            }
        }
    }
    assert!(seen >= 20, "walked {seen} commands");
}

/// Runs clawgate and kills it after `secs`: a read that never ends is a
/// failure, not a hung test.
fn bounded(run: &Run, args: &[&str], secs: u64) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_clawgate"))
        .args(args)
        .current_dir(run.dir.path())
        .env("HOME", run.dir.path())
        .env_remove("CLAWGATE_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            let o = child.wait_with_output().unwrap();
            return (o.status.code(), stderr(&o));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    (None, "still running: killed".into())
}

#[test]
fn sec_a_config_never_reads_a_device_or_a_fifo() {
    let run = Run::new();
    // --config of a device.
    for dev in ["/dev/zero", "/dev/urandom"] {
        let (code, err) = bounded(&run, &["--config", dev, "config", "validate"], 10);
        assert_eq!(code, Some(1), "{dev}: {err}");
        assert_eq!(err.matches("not a regular file").count(), 1, "{dev}: {err}");
    }
    // $include of a device and of a FIFO, a file SecretRef of a device.
    let fifo = run.path("fifo.json5");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    for (what, text) in [
        ("include /dev/zero", r#"{ "$include": "/dev/zero" }"#.to_string()),
        ("include fifo", format!(r#"{{ "$include": "{}" }}"#, fifo.display())),
        (
            "file secret",
            r#"{ secrets: { providers: { f: { source: "file", path: "/dev/urandom", mode: "singleValue" } } },
                 models: { providers: { p: { baseUrl: "http://127.0.0.1:1/v1", apiKey: { source: "file", provider: "f", id: "value" }, models: [{ id: "m" }] } } } }"#
                .to_string(),
        ),
    ] {
        std::fs::write(run.path("clawgate.json5"), text).unwrap();
        let (code, err) = bounded(&run, &["config", "validate"], 10);
        assert!(code.is_some(), "{what}: {err}");
        assert_ne!(code, Some(0), "{what}: {err}");
        assert!(err.contains("not a regular file"), "{what}: {err}");
    }
}

#[test]
fn sec_a_base_url_parsers_would_read_differently_is_refused() {
    let run = Run::new();
    for url in [
        r"http://127.0.0.1:19399\\@10.1.2.3/v1",
        "http://user:pw@127.0.0.1:1234/v1",
        "http://127.0.0.1:1234/v1 ",
    ] {
        std::fs::write(
            run.path("clawgate.json5"),
            format!("{{\n  models: {{ providers: {{ p: {{\n    baseUrl: \"{url}\", models: [{{ id: \"m\" }}] }} }} }},\n}}\n"),
        )
        .unwrap();
        let o = run.cmd(&["config", "validate"]);
        assert_eq!(o.status.code(), Some(3), "{url}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains("clawgate.json5:3:"), "{url}: {err}");
        assert!(err.contains("models.providers.p.baseUrl"), "{url}: {err}");
        assert!(err.contains("expected a plain http(s) URL"), "{url}: {err}");
    }
}
