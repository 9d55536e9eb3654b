//! Resolution, chains, policy and merge semantics against real fixture
//! files (REF-1..4, FO-1 chain shape, CFG-5).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use clawgate_catalog::{
    load, load_text, ContextSource, DefaultRule, Registry, ResolveError, Role, SelectionSource, Via,
};
use clawgate_config::DataPolicy;
use clawgate_core::ModelRef;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/configs")
        .join(name)
}

fn env(name: &str) -> Option<String> {
    (name == "CLAWGATE_TEST_ANTHROPIC_KEY").then(|| "sk-ant-test".to_string())
}

fn reg(name: &str) -> Registry {
    load(Some(&fixture(name)), &env).unwrap().registry
}

fn reg_text(text: &str) -> Result<Registry, String> {
    load_text(&PathBuf::from("t.json5"), text, &env)
        .map(|s| s.registry)
        .map_err(|e| e.to_string())
}

fn chain_refs(
    reg: &Registry,
    agent: Option<&str>,
    req: Option<(&str, SelectionSource)>,
) -> Vec<String> {
    reg.chain(agent, req)
        .unwrap()
        .candidates
        .iter()
        .map(|c| c.resolved.reference().to_string())
        .collect()
}

#[test]
fn ref_1_split_and_case_insensitive() {
    let r = reg("rich.json5");
    let m = r.resolve("LMSTUDIO/MiniMax-M2.1-GS32").unwrap();
    assert_eq!(m.reference().to_string(), "lmstudio/minimax-m2.1-gs32");
    assert_eq!(m.via, Via::Ref);
    let k = r.resolve("openrouter/moonshotai/kimi-k2").unwrap();
    assert_eq!(k.model.provider, "openrouter");
    assert_eq!(k.model.id, "moonshotai/kimi-k2");
    assert!(k.catalogued);
}

#[test]
fn ref_2_alias_then_unique_id_then_error() {
    let r = reg("rich.json5");
    let a = r.resolve("qwen").unwrap();
    assert_eq!(a.reference().to_string(), "vllm-rig/qwen3-coder-480b");
    assert_eq!(a.via, Via::Alias("qwen".into()));
    let b = r.resolve("llama3.3:70b").unwrap();
    assert_eq!(b.reference().to_string(), "ollama/llama3.3:70b");
    assert_eq!(b.via, Via::BareId);
    // Only in the catalog, unique there.
    let c = r.resolve("claude-haiku-4-5").unwrap();
    assert_eq!(c.reference().to_string(), "anthropic/claude-haiku-4-5");
    // Aliases are case-insensitive.
    assert_eq!(
        r.resolve("minimax").unwrap().via,
        Via::Alias("minimax".into())
    );
    let err = r.resolve("minimx").unwrap_err();
    assert_eq!(
        err.to_string(),
        "Unknown model: \"minimx\" is not an alias, a configured model id or a provider/model ref; did you mean \"MiniMax\"?"
    );
    let err = r.resolve("anthropc/claude-opus-4-5").unwrap_err();
    assert!(matches!(err, ResolveError::UnknownProvider { .. }));
    assert!(
        err.to_string().contains("(did you mean \"anthropic\"?)"),
        "{err}"
    );
}

#[test]
fn ref_2_ambiguous_bare_id_lists_candidates() {
    let r = reg_text(
        r#"{ models: { providers: {
            a: { baseUrl: "http://127.0.0.1:1/v1", models: [{ id: "same" }] },
            b: { baseUrl: "http://127.0.0.1:2/v1", models: [{ id: "same" }] },
        } } }"#,
    )
    .unwrap();
    let err = r.resolve("same").unwrap_err();
    assert_eq!(
        err.to_string(),
        "\"same\" matches several models: a/same, b/same; use the full provider/model ref"
    );
}

#[test]
fn uncatalogued_models_follow_provider_rules() {
    let r = reg("rich.json5");
    // Hosted catalogs lag: allowed with CFG-4 defaults.
    let h = r.resolve("anthropic/claude-next").unwrap();
    assert!(!h.catalogued);
    assert_eq!(h.model.max_tokens, 8192);
    assert_eq!(
        h.model.effective_context(),
        (200_000, ContextSource::Assumed)
    );
    // A declared local list is closed...
    let err = r.resolve("lmstudio/other").unwrap_err();
    assert_eq!(
        err.to_string(),
        "Unknown model: lmstudio/other (models of lmstudio: minimax-m2.1-gs32)"
    );
    // ...unless agents.defaults.models has "provider/*".
    assert!(!r.resolve("vllm-rig/qwen3-32b").unwrap().catalogued);
}

#[test]
fn ref_3_default_model_rules() {
    let proxy = reg("seed-other-openai-proxy.json5");
    let (r, rule) = proxy.default_model().unwrap();
    assert_eq!(r.to_string(), "local/my-local-model");
    assert_eq!(rule, DefaultRule::FirstConfiguredProvider);
    let hybrid = reg("seed-hybrid-hosted-primary.json5");
    let (r, rule) = hybrid.default_model().unwrap();
    assert_eq!(r.to_string(), "anthropic/claude-sonnet-4-5");
    assert_eq!(rule, DefaultRule::Configured);
    let empty = load(None, &env).unwrap().registry;
    assert!(empty.default_model().is_none());
    assert!(matches!(
        empty.chain(None, None),
        Err(ResolveError::NoDefault)
    ));
}

#[test]
fn ref_4_policy_names_the_key() {
    let r = reg("rich.json5");
    let ok = |s: &str| r.check_policy(None, &ModelRef::parse(s).unwrap());
    assert!(ok("lmstudio/anything").is_ok());
    assert!(ok("VLLM-RIG/x").is_ok());
    assert!(ok("anthropic/claude-sonnet-4-5").is_ok());
    assert!(ok("vllm-rig/qwen3-coder-480b").is_ok());
    let err = ok("openai/gpt-5.4").unwrap_err();
    assert_eq!(
        err.to_string(),
        "Model override \"openai/gpt-5.4\" is not allowed by agents.defaults.modelPolicy.allow."
    );
    // A per-agent list replaces the default one.
    let err = r
        .check_policy(
            Some("private"),
            &ModelRef::parse("anthropic/claude-sonnet-4-5").unwrap(),
        )
        .unwrap_err();
    assert_eq!(err.key, "agents.entries.private.modelPolicy.allow");
    // No list: everything allowed.
    let seed = reg("seed-hybrid-hosted-primary.json5");
    assert!(seed
        .check_policy(None, &ModelRef::parse("openai/gpt-5.4").unwrap())
        .is_ok());
}

#[test]
fn fo_1_chain_shapes() {
    let hybrid = reg("seed-hybrid-hosted-primary.json5");
    assert_eq!(
        chain_refs(&hybrid, None, None),
        [
            "anthropic/claude-sonnet-4-5",
            "lmstudio/minimax-m2.1-gs32",
            "anthropic/claude-opus-4-5"
        ]
    );
    // Explicit user selection: strict.
    let c = hybrid
        .chain(None, Some(("Opus", SelectionSource::User)))
        .unwrap();
    assert!(c.strict);
    assert_eq!(c.candidates.len(), 1);
    assert_eq!(c.candidates[0].role, Role::Requested);
    // Configured request: requested, fallbacks (deduped), then primary.
    assert_eq!(
        chain_refs(
            &hybrid,
            None,
            Some(("anthropic/claude-opus-4-5", SelectionSource::Configured))
        ),
        [
            "anthropic/claude-opus-4-5",
            "lmstudio/minimax-m2.1-gs32",
            "anthropic/claude-sonnet-4-5"
        ]
    );
    let rich = reg("rich.json5");
    // The "Sonnet" alias in fallbacks resolves; order is kept.
    assert_eq!(
        chain_refs(&rich, None, None),
        [
            "lmstudio/minimax-m2.1-gs32",
            "vllm-rig/qwen3-coder-480b",
            "anthropic/claude-sonnet-4-5",
            "openrouter/moonshotai/kimi-k2"
        ]
    );
    // Per-agent string model: strict, no fallbacks.
    let p = rich.chain(Some("private"), None).unwrap();
    assert!(p.strict);
    assert_eq!(p.candidates.len(), 1);
    assert_eq!(
        chain_refs(&rich, Some("coder"), None),
        ["vllm-rig/qwen3-coder-480b", "lmstudio/minimax-m2.1-gs32"]
    );
    assert!(matches!(
        rich.chain(Some("nobody"), None),
        Err(ResolveError::UnknownAgent(..))
    ));
    assert_eq!(rich.data_policy(Some("private")), DataPolicy::LocalOnly);
    assert_eq!(rich.data_policy(None), DataPolicy::AllowHosted);
}

#[test]
fn cfg_5_merge_overrides_field_by_field_and_replace_drops_catalog() {
    let merged = reg_text(
        r#"{ models: { providers: { anthropic: {
            timeoutSeconds: 90,
            models: [{ id: "claude-sonnet-4-5", contextTokens: 100000 }],
        } } } }"#,
    )
    .unwrap();
    let a = merged.provider("anthropic").unwrap();
    assert_eq!(a.timeout_seconds, Some(90));
    assert_eq!(a.base_url, "https://api.anthropic.com");
    let s = merged.resolve("anthropic/claude-sonnet-4-5").unwrap().model;
    assert_eq!(s.context_window, Some(200_000), "catalog field kept");
    assert_eq!(s.context_tokens, Some(100_000), "config field wins");
    assert_eq!(s.cost.input, 3.0);
    assert_eq!(
        s.effective_context(),
        (100_000, ContextSource::ConfigTokens)
    );
    assert!(merged.provider("openai").is_some());
    // Other catalog models of the provider stay.
    assert!(
        merged
            .resolve("anthropic/claude-opus-4-5")
            .unwrap()
            .catalogued
    );

    let replaced = reg_text(
        r#"{ models: { mode: "replace", providers: {
            local: { baseUrl: "http://127.0.0.1:8000/v1", models: [{ id: "m" }] },
        } } }"#,
    )
    .unwrap();
    assert_eq!(replaced.providers.len(), 1);
    assert_eq!(replaced.models().count(), 1);
    assert!(replaced.resolve("anthropic/claude-opus-4-5").is_err());
}

#[test]
fn cfg_4_model_defaults() {
    let r = reg("seed-other-openai-proxy.json5");
    let m = r.resolve("local/my-local-model").unwrap().model;
    assert_eq!(m.max_tokens, 8192);
    assert_eq!(
        m.effective_context(),
        (120_000, ContextSource::ConfigWindow)
    );
    let bare = reg_text(
        r#"{ models: { providers: { box: { baseUrl: "http://gpu-box:8000/v1", models: [{ id: "q" }] } } } }"#,
    )
    .unwrap();
    let p = bare.provider("box").unwrap();
    assert_eq!(p.api.map(|a| a.as_str()), Some("openai-completions"));
    assert!(p.api_key.is_none(), "a local server needs no key");
    let q = &p.models[0];
    assert_eq!(q.name, "q");
    assert_eq!(q.cost.input, 0.0);
    assert_eq!(q.effective_context(), (200_000, ContextSource::Assumed));
}

#[test]
fn cfg_3_secrets_resolve_but_never_print() {
    let r = reg("rich.json5");
    let a = r.provider("anthropic").unwrap();
    let key = a.api_key.as_ref().unwrap();
    assert_eq!(key.resolved.as_ref().unwrap().expose(), "sk-ant-test");
    assert_eq!(key.redacted(), "marker(env:CLAWGATE_TEST_ANTHROPIC_KEY)");
    assert!(!format!("{a:?}").contains("sk-ant-test"));
    // env.vars from the file fill ${VAR} when the process lacks it.
    let v = r.provider("vllm-rig").unwrap();
    let auth = v.headers.get("Authorization").unwrap();
    assert_eq!(
        auth.resolved.as_ref().unwrap().expose(),
        "Bearer from-file-token"
    );
    let lm = r.provider("lmstudio").unwrap();
    assert!(lm.api_key.as_ref().unwrap().is_marker());
}

/// No panic on any input: every prefix of a real config, and every single
/// byte replaced by a few troublesome characters, loads or is refused
/// with diagnostics.
#[test]
fn broken_input_never_panics() {
    let text = std::fs::read_to_string(fixture("rich.json5")).unwrap();
    let bytes = text.as_bytes();
    let mut refused = 0;
    for cut in 0..bytes.len() {
        if !text.is_char_boundary(cut) {
            continue;
        }
        if load_text(&PathBuf::from("p.json5"), &text[..cut], &env).is_err() {
            refused += 1;
        }
    }
    assert!(refused > bytes.len() / 2, "most prefixes are invalid JSON5");
    for (i, _) in text.char_indices().step_by(7) {
        for ch in ["\"", "{", "]", ":", "-1", "\u{0}", "é"] {
            let mut broken = text.clone();
            let end = text[i..].chars().next().map_or(i, |c| i + c.len_utf8());
            broken.replace_range(i..end, ch);
            let _ = load_text(&PathBuf::from("m.json5"), &broken, &env);
        }
    }
}

#[test]
fn sec_2_a_blocked_base_url_is_refused_before_any_request() {
    let cases = [
        (
            r#"{models: {providers: {m: {baseUrl: "http://169.254.169.254/v1", models: [{id: "x"}]}}}}"#,
            "t.json5:1:23: error: models.providers.m.baseUrl: http://169.254.169.254/v1 is a cloud metadata address, which the outbound guard refuses; set models.providers.m.request.allowSpecialUseAddresses: true to allow it",
        ),
        (
            r#"{models: {providers: {m: {baseUrl: "http://[fe80::1]:8000/v1", models: [{id: "x"}]}}}}"#,
            "models.providers.m.baseUrl: http://[fe80::1]:8000/v1 is a link-local address",
        ),
        (
            r#"{models: {providers: {m: {baseUrl: "http://metadata.google.internal/v1", models: [{id: "x"}]}}}}"#,
            "is a cloud metadata address",
        ),
        (
            r#"{models: {providers: {m: {baseUrl: "http://127.0.0.1:1234/v1", request: {allowPrivateNetwork: false}, models: [{id: "x"}]}}}}"#,
            "models.providers.m.baseUrl: http://127.0.0.1:1234/v1 is a loopback address, which the outbound guard refuses; models.providers.m.request.allowPrivateNetwork is false; set it to true to allow it",
        ),
        (
            r#"{models: {providers: {m: {baseUrl: "http://127.0.0.1:1234/v1", models: [{id: "x", baseUrl: "http://[::ffff:169.254.169.254]/v1"}]}}}}"#,
            "models.providers.m.models[0].baseUrl: http://[::ffff:169.254.169.254]/v1 is a cloud metadata address",
        ),
    ];
    for (text, want) in cases {
        let err = reg_text(text).err().unwrap_or_default();
        assert!(err.contains(want), "{text}\n{err}");
    }
    // The opt-in, and the configured origins that need none.
    for text in [
        r#"{models: {providers: {m: {baseUrl: "http://169.254.169.254/v1", request: {allowSpecialUseAddresses: true}, models: [{id: "x"}]}}}}"#,
        r#"{models: {providers: {m: {baseUrl: "http://192.168.1.20:1234/v1", models: [{id: "x"}]}}}}"#,
        r#"{models: {providers: {m: {baseUrl: "http://gpu-box:8000/v1", models: [{id: "x"}]}}}}"#,
    ] {
        assert!(reg_text(text).is_ok(), "{text}: {:?}", reg_text(text).err());
    }
    let reg = reg_text(r#"{models: {providers: {m: {baseUrl: "http://127.0.0.1:1234/v1", localService: {command: "/bin/true", healthUrl: "http://127.0.0.1:1235/health"}, models: [{id: "x"}]}}}}"#).unwrap();
    let p = reg.provider("m").unwrap();
    assert_eq!(
        p.guard.trusted,
        ["http://127.0.0.1:1234", "http://127.0.0.1:1235"]
    );
    // A catalog provider nobody configured trusts no origin.
    assert!(reg.provider("openrouter").unwrap().guard.trusted.is_empty());
    // The base URL is parsed once, with the registry.
    let b = reg.provider("m").unwrap().base.clone().unwrap();
    assert_eq!(
        (b.origin.as_str(), b.host_port.as_str()),
        ("http://127.0.0.1:1234", "127.0.0.1:1234")
    );
    let b = reg.provider("anthropic").unwrap().base.clone().unwrap();
    assert_eq!(b.host_port, "api.anthropic.com:443");
    assert_eq!(b.class, clawgate_core::net::AddrClass::Public);
    let b = clawgate_catalog::BaseUrl::parse("http://[::1]/v1").unwrap();
    assert_eq!(
        (b.origin.as_str(), b.host_port.as_str()),
        ("http://[::1]", "[::1]:80")
    );
    assert!(clawgate_catalog::BaseUrl::parse("not a url").is_none());
}
