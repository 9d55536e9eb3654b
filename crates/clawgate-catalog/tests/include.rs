//! OpenClaw's `$include` and SecretRef forms (CFG-3, issue 13): a config
//! split into files and using every SecretRef source loads to the same
//! registry as its single-file twin; broken includes and refs are errors
//! with file, line, column and key path.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use clawgate_catalog::{load, Registry};

const FILE_KEY: &str = "sk-file-0123456789abcdef";
const EXEC_VALUE: &str = "tenant-exec-abcdef0123";
const ENV_KEY: &str = "sk-ant-env-0123456789";

fn env(name: &str) -> Option<String> {
    match name {
        "CLAWGATE_TEST_INCLUDE_KEY" => Some(ENV_KEY.into()),
        "HOME" => Some("/nonexistent-home".into()),
        _ => None,
    }
}

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/configs/include")
}

/// Copies the fixture folder, fills in its absolute path and writes the
/// secret file (0600) and the exec provider's command (0700).
fn stage(dir: &Path) {
    fn copy(from: &Path, to: &Path, root: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let target = to.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                copy(&e.path(), &target, root);
            } else {
                let text = std::fs::read_to_string(e.path()).unwrap();
                std::fs::write(&target, text.replace("@DIR@", &root.display().to_string()))
                    .unwrap();
            }
        }
    }
    copy(&fixture_dir(), dir, dir);
    let secrets = dir.join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    let keys = secrets.join("keys.json");
    std::fs::write(
        &keys,
        format!(r#"{{"providers": {{"proxy": {{"apiKey": "{FILE_KEY}"}}}}}}"#),
    )
    .unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
    let exec = secrets.join("exec-key");
    // Answers the JSON protocol for the ids it is asked; checks its
    // arguments and that only passEnv reached it.
    std::fs::write(
        &exec,
        format!(
            "#!/bin/sh\n[ \"$1 $2\" = \"--profile test\" ] || exit 3\n[ -z \"$CLAWGATE_TEST_INCLUDE_KEY\" ] || exit 4\nread -r req\ncase \"$req\" in *'\"tenant/header\"'*) ;; *) exit 5;; esac\nprintf '{{\"protocolVersion\":1,\"values\":{{\"tenant/header\":\"{EXEC_VALUE}\"}}}}'\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&exec, std::fs::Permissions::from_mode(0o700)).unwrap();
}

fn registry(file: &Path) -> Registry {
    match load(Some(file), &env) {
        Ok(s) => s.registry,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn a_split_config_loads_to_the_same_registry_as_its_single_file_twin() {
    let dir = tempfile::tempdir().unwrap();
    stage(dir.path());
    let single = registry(&dir.path().join("single.json5"));
    let split = registry(&dir.path().join("main.json5"));
    // Providers, models, keys (redacted forms), guards: all equal.
    assert_eq!(
        format!("{:?}", single.providers),
        format!("{:?}", split.providers)
    );
    for reg in [&single, &split] {
        let proxy = reg.provider("proxy").unwrap();
        let key = proxy.api_key.as_ref().unwrap();
        assert_eq!(key.resolved.as_ref().unwrap().expose(), FILE_KEY);
        assert_eq!(key.redacted(), "marker(secretref-managed)");
        let h = &proxy.headers["x-tenant"];
        assert_eq!(h.resolved.as_ref().unwrap().expose(), EXEC_VALUE);
        let a = reg.provider("anthropic").unwrap().api_key.as_ref().unwrap();
        assert_eq!(a.resolved.as_ref().unwrap().expose(), ENV_KEY);
        assert_eq!(
            a.redacted(),
            "marker(secretref-env:CLAWGATE_TEST_INCLUDE_KEY)"
        );
        let chain: Vec<String> = reg
            .chain(None, None)
            .unwrap()
            .candidates
            .iter()
            .map(|c| c.resolved.reference().to_string())
            .collect();
        assert_eq!(
            chain,
            [
                "lmstudio/qwen3-8b",
                "proxy/big",
                "anthropic/claude-sonnet-4-5"
            ]
        );
        assert_eq!(
            reg.resolve("qwen").unwrap().reference().to_string(),
            "lmstudio/qwen3-8b"
        );
        assert!(reg.local_only_key(Some("private")).is_some());
    }
    assert_eq!(split.config.includes.len(), 5);
    // `config get` reads the merged value, secrets as their refs.
    let main = dir.path().join("main.json5");
    let text = std::fs::read_to_string(&main).unwrap();
    let get = |p: &str| {
        let segs = clawgate_config::path::parse(p).unwrap();
        clawgate_config::edit::get_redacted_node(&text, &main, &segs)
            .unwrap()
            .to_json()
    };
    assert_eq!(
        get("models.providers.proxy.baseUrl"),
        "http://127.0.0.1:4000/v1"
    );
    assert_eq!(get("models.mode"), "merge");
    assert_eq!(get("models.providers.proxy.apiKey")["source"], "file");
    assert!(single.config.includes.is_empty());
    // No resolved value is in the Debug form.
    let dump = format!("{:?}", split.providers);
    for v in [FILE_KEY, EXEC_VALUE, ENV_KEY] {
        assert!(!dump.contains(v));
    }
}

fn load_err(dir: &Path, name: &str, text: &str) -> String {
    let f = dir.join(name);
    std::fs::write(&f, text).unwrap();
    match load(Some(&f), &env) {
        Ok(_) => panic!("{name} loaded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn broken_includes_name_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let err = load_err(
        d,
        "a.json5",
        "{\n  models: { $include: \"./nope.json5\" },\n}\n",
    );
    assert!(
        err.contains(&format!(
            "{}:2:23: error: $include: included file {}: not found",
            d.join("a.json5").display(),
            d.join("nope.json5").display()
        )),
        "{err}"
    );
    // A loop, reported with its chain.
    std::fs::write(d.join("b.json5"), "{ models: { $include: \"./c.json5\" } }").unwrap();
    std::fs::write(d.join("c.json5"), "{ $include: \"./b.json5\" }").unwrap();
    let err = load_err(d, "b2.json5", "{ $include: \"./b.json5\" }");
    assert!(err.contains("circular $include: "), "{err}");
    assert!(
        err.contains("b.json5 -> ") && err.contains("c.json5 -> "),
        "{err}"
    );
    // A syntax error inside an included file names that file.
    std::fs::write(
        d.join("bad.json5"),
        "{\n  providers: {\n    x: {baseUrl: }\n  }\n}",
    )
    .unwrap();
    let err = load_err(d, "e.json5", "{ models: { $include: \"./bad.json5\" } }");
    assert!(
        err.contains(&format!("{}:3:", d.join("bad.json5").display())),
        "{err}"
    );
    // A decoding error inside an included file: that file's line:column and the key path.
    std::fs::write(
        d.join("m.json5"),
        "{\n  providers: {\n    lm: { baseUrl: \"http://127.0.0.1:1/v1\", models: [{ id: \"x\", contextWindow: \"big\" }] },\n  },\n}",
    )
    .unwrap();
    let err = load_err(d, "f.json5", "{ models: { $include: \"./m.json5\" } }");
    assert!(
        err.contains(&format!("{}:3:", d.join("m.json5").display()))
            && err.contains("models.providers.lm.models[0].contextWindow"),
        "{err}"
    );
    // Sibling keys next to an included array.
    std::fs::write(d.join("arr.json5"), "[1, 2]").unwrap();
    let err = load_err(
        d,
        "g.json5",
        "{ models: { $include: \"./arr.json5\", mode: \"merge\" } }",
    );
    assert!(err.contains("must hold an object"), "{err}");
    // Eleven levels deep.
    for i in 0..12 {
        std::fs::write(
            d.join(format!("n{i}.json5")),
            format!("{{ $include: \"./n{}.json5\" }}", i + 1),
        )
        .unwrap();
    }
    std::fs::write(d.join("n12.json5"), "{}").unwrap();
    let err = load_err(d, "deep.json5", "{ models: { $include: \"./n0.json5\" } }");
    assert!(err.contains("nests deeper than 10 levels"), "{err}");
}

#[test]
fn unresolved_secret_refs_fail_with_their_key_path() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases = [
        (
            r#"{ models: { providers: { p: { baseUrl: "http://127.0.0.1:1/v1", apiKey: { source: "env", provider: "default", id: "CLAWGATE_UNSET_VAR" } } } } }"#,
            "models.providers.p.apiKey: SecretRef env:default:CLAWGATE_UNSET_VAR did not resolve: environment variable CLAWGATE_UNSET_VAR is not set",
        ),
        (
            r#"{ models: { providers: { p: { baseUrl: "http://127.0.0.1:1/v1", apiKey: { source: "file", provider: "nofile", id: "/a" } } } } }"#,
            "SecretRef file:nofile:/a did not resolve: secrets.providers.nofile is not configured",
        ),
        (
            r#"{ models: { providers: { p: { baseUrl: "http://127.0.0.1:1/v1", apiKey: { source: "env", provider: "default", id: "lower" } } } } }"#,
            "models.providers.p.apiKey.id: an env id must match ^[A-Z][A-Z0-9_]{0,127}$",
        ),
        (
            r#"{ secrets: { providers: { v: { source: "exec", command: "/bin/sh" } } }, models: { providers: { p: { baseUrl: "http://127.0.0.1:1/v1", apiKey: { source: "exec", provider: "v", id: "a/../b" } } } } }"#,
            "without . or .. segments",
        ),
        (
            r#"{ secrets: { providers: { v: { source: "exec", command: "bin/sh" } } } }"#,
            "secrets.providers.v.command: expected an absolute path",
        ),
        (
            r#"{ gateway: { auth: { mode: "token", token: { source: "env", id: "CLAWGATE_UNSET_TOKEN" } } } }"#,
            "gateway.auth.token: SecretRef env:default:CLAWGATE_UNSET_TOKEN did not resolve",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let err = load_err(d, &format!("s{i}.json5"), text);
        assert!(err.contains(want), "{text}\n{err}");
    }
}

#[test]
fn exec_providers_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let slow = d.join("slow");
    std::fs::write(&slow, "#!/bin/sh\nsleep 5\n").unwrap();
    std::fs::set_permissions(&slow, std::fs::Permissions::from_mode(0o700)).unwrap();
    let link = d.join("link");
    std::os::unix::fs::symlink(&slow, &link).unwrap();
    let loud = d.join("loud");
    std::fs::write(&loud, "#!/bin/sh\nhead -c 5000 /dev/zero | tr '\\0' a\n").unwrap();
    std::fs::set_permissions(&loud, std::fs::Permissions::from_mode(0o700)).unwrap();
    let failing = d.join("failing");
    std::fs::write(
        &failing,
        "#!/bin/sh\necho sk-leaked-on-stderr >&2\nexit 7\n",
    )
    .unwrap();
    std::fs::set_permissions(&failing, std::fs::Permissions::from_mode(0o700)).unwrap();
    let cfg = |cmd: &Path, extra: &str| {
        format!(
            r#"{{ secrets: {{ providers: {{ v: {{ source: "exec", command: "{}"{extra} }} }} }}, models: {{ providers: {{ p: {{ baseUrl: "http://127.0.0.1:1/v1", apiKey: {{ source: "exec", provider: "v", id: "k" }} }} }} }} }}"#,
            cmd.display()
        )
    };
    let t = std::time::Instant::now();
    let err = load_err(d, "t.json5", &cfg(&slow, ", timeoutMs: 200"));
    assert!(err.contains("did not answer within 200 ms"), "{err}");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(4),
        "killed at the timeout"
    );
    let err = load_err(d, "l.json5", &cfg(&link, ""));
    assert!(
        err.contains("is a symlink (set allowSymlinkCommand: true to allow it)"),
        "{err}"
    );
    let err = load_err(
        d,
        "o.json5",
        &cfg(&loud, ", maxOutputBytes: 1000, jsonOnly: false"),
    );
    assert!(err.contains("larger than 1000 bytes"), "{err}");
    let err = load_err(d, "f.json5", &cfg(&failing, ""));
    assert!(err.contains("exited with exit status: 7"), "{err}");
    assert!(!err.contains("sk-leaked"), "{err}");
    let err = load_err(
        d,
        "d.json5",
        &cfg(&slow, r#", trustedDirs: ["/opt/nowhere"]"#),
    );
    assert!(err.contains("is outside trustedDirs"), "{err}");
}

#[test]
fn a_loose_secret_file_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let keys = d.join("k.json");
    std::fs::write(&keys, r#"{"k": "sk-loose-0123"}"#).unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o644)).unwrap();
    let f = d.join("c.json5");
    std::fs::write(
        &f,
        r#"{ secrets: { providers: { f: { source: "file", path: "./k.json" } } }, models: { providers: { p: { baseUrl: "http://127.0.0.1:1/v1", apiKey: { source: "file", provider: "f", id: "/k" } } } } }"#,
    )
    .unwrap();
    let snap = load(Some(&f), &env).unwrap();
    let w: Vec<String> = snap.warnings.iter().map(|w| w.to_string()).collect();
    assert!(
        w.iter()
            .any(|w| w.contains("is readable by others (mode 644); chmod 600 it")),
        "{w:?}"
    );
    let key = snap
        .registry
        .provider("p")
        .unwrap()
        .api_key
        .clone()
        .unwrap();
    assert_eq!(key.resolved.unwrap().expose(), "sk-loose-0123");
}
