//! `clawgate security audit` (SEC-5) as data: every rule run over a loaded
//! snapshot, each finding with its severity, the key or file it is about
//! and one fix line. `doctor` includes these findings. Nothing here
//! connects anywhere; the outbound guard's refusal of a blocked `baseUrl`
//! happens earlier, when the config is validated.

use std::path::Path;

use clawgate_catalog::{Provider, Registry};
use clawgate_config::secretref::{loose_mode, SecretProvider};
use clawgate_config::{AgentSettings, AuthMode, ModelsMode, SecretForm, SecretValue};

use crate::doctor::{Finding, Severity};

fn finding(
    severity: Severity,
    check: &'static str,
    subject: impl Into<String>,
    message: impl Into<String>,
    fix: impl Into<String>,
) -> Finding {
    Finding {
        check,
        ..crate::doctor::finding(severity, "security", subject, message, fix)
    }
}

/// What the gateway would be reachable from, from `gateway.bind`.
fn beyond_loopback(bind: &str) -> bool {
    let b = bind.trim().trim_start_matches('[').trim_end_matches(']');
    match b {
        "loopback" | "localhost" => false,
        "lan" => true,
        ip => ip
            .parse::<std::net::IpAddr>()
            .map(|ip| !ip.is_loopback())
            .unwrap_or(true),
    }
}

fn auth_mode(reg: &Registry) -> AuthMode {
    let g = &reg.config.gateway;
    g.auth_mode.unwrap_or(if g.token.is_some() {
        AuthMode::Token
    } else if g.password.is_some() {
        AuthMode::Password
    } else {
        AuthMode::None
    })
}

/// An upper-case variable name for a key path (`PROXY_API_KEY`).
fn env_name(parts: &[&str]) -> String {
    parts
        .iter()
        .map(|p| {
            p.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_uppercase()
                    } else {
                        '_'
                    }
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("_")
}

/// Header names whose values are credentials.
fn secret_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n == "authorization"
        || n == "proxy-authorization"
        || n == "cookie"
        || ["key", "token", "secret", "password", "auth"]
            .iter()
            .any(|w| n.contains(w))
}

fn plaintext(v: &SecretValue) -> bool {
    v.form == SecretForm::Literal
}

/// Why a model id suggests a small or heavily quantized model (SEC-5).
pub fn small_model_hint(id: &str) -> Option<String> {
    let lower = id.to_ascii_lowercase();
    for token in lower.split(|c: char| !(c.is_ascii_alphanumeric() || c == '.')) {
        let t = token.trim_start_matches('i');
        if t.starts_with("q2") || t.starts_with("q3") {
            return Some(token.to_string());
        }
        if let Some(n) = token.strip_suffix('b').and_then(|n| n.parse::<f64>().ok()) {
            if n > 0.0 && n <= 8.0 {
                return Some(token.to_string());
            }
        }
        if token == "small" || token == "tiny" {
            return Some(format!("-{token}"));
        }
    }
    None
}

/// The audit's findings for a loaded snapshot.
pub fn audit(reg: &Registry) -> Vec<Finding> {
    let mut out = Vec::new();
    gateway(reg, &mut out);
    secrets(reg, &mut out);
    files(reg, &mut out);
    providers(reg, &mut out);
    local_commands(reg, &mut out);
    agents(reg, &mut out);
    out
}

fn gateway(reg: &Registry, out: &mut Vec<Finding>) {
    let g = &reg.config.gateway;
    if !beyond_loopback(&g.bind) {
        return;
    }
    let mode = auth_mode(reg);
    if mode == AuthMode::None {
        out.push(finding(
            Severity::Error,
            "gateway.bind_without_auth",
            "gateway.bind",
            format!("the gateway listens on {} without auth: anyone on the network can use every model", g.bind),
            "clawgate config set gateway.auth.mode '\"token\"' and set gateway.auth.token to \"${CLAWGATE_GATEWAY_TOKEN}\" (or bind to loopback)",
        ));
    }
    let token = match mode {
        AuthMode::Token => g.token.as_ref(),
        AuthMode::Password => g.password.as_ref(),
        AuthMode::None => None,
    };
    if let Some(len) = token
        .and_then(|t| t.resolved.as_ref())
        .map(|s| s.expose().chars().count())
        .filter(|n| *n < 16)
    {
        out.push(finding(
            Severity::Warn,
            "gateway.weak_secret",
            "gateway.auth",
            format!(
                "the gateway's {} has {len} characters while it is reachable beyond loopback",
                if mode == AuthMode::Token {
                    "token"
                } else {
                    "password"
                }
            ),
            "use at least 32 random characters, e.g. `openssl rand -hex 32`",
        ));
    }
    if reg.config.agents.defaults.model_policy_allow.is_none() {
        out.push(finding(
            Severity::Warn,
            "gateway.no_model_policy",
            "agents.defaults.modelPolicy.allow",
            "the gateway is reachable beyond loopback and no modelPolicy.allow limits which models a client may select",
            "clawgate config set agents.defaults.modelPolicy.allow '[\"<provider>/*\"]' with only the providers remote clients may use",
        ));
    }
}

fn secrets(reg: &Registry, out: &mut Vec<Finding>) {
    let plain = |out: &mut Vec<Finding>, path: String, var: String| {
        out.push(finding(
            Severity::Warn,
            "secret.plaintext",
            path.clone(),
            "a secret is written in the config file in plain text",
            format!("export {var}=… and clawgate config set {path} '\"${{{var}}}\"' (or use a SecretRef)"),
        ));
    };
    for (id, pc) in &reg.config.models.providers {
        if pc.api_key.as_ref().is_some_and(plaintext) {
            plain(
                out,
                format!("models.providers.{id}.apiKey"),
                env_name(&[id, "api_key"]),
            );
        }
        for (h, v) in &pc.headers {
            if plaintext(v) && secret_header(h) {
                plain(
                    out,
                    format!("models.providers.{id}.headers.{h}"),
                    env_name(&[id, h]),
                );
            }
        }
        if let Some(ls) = &pc.local_service {
            for (k, v) in &ls.env {
                if plaintext(v) && secret_header(k) {
                    plain(
                        out,
                        format!("models.providers.{id}.localService.env.{k}"),
                        k.to_string(),
                    );
                }
            }
        }
    }
    let g = &reg.config.gateway;
    for (name, v) in [("token", &g.token), ("password", &g.password)] {
        if v.as_ref().is_some_and(plaintext) {
            plain(
                out,
                format!("gateway.auth.{name}"),
                env_name(&["clawgate_gateway", name]),
            );
        }
    }
    for (id, p) in &reg.config.auth.profiles {
        if p.api_key.as_ref().is_some_and(plaintext) {
            plain(
                out,
                format!("auth.profiles.{id}.apiKey"),
                env_name(&[id, "api_key"]),
            );
        }
    }
}

fn perms(path: &Path) -> Option<u32> {
    std::fs::metadata(path).ok().and_then(|m| loose_mode(&m))
}

fn files(reg: &Registry, out: &mut Vec<Finding>) {
    let has_plaintext = out.iter().any(|f| f.check == "secret.plaintext");
    let config_files = reg
        .config
        .path
        .iter()
        .map(|p| (p.as_path(), "config"))
        .chain(
            reg.config
                .includes
                .iter()
                .map(|p| (p.as_path(), "included file")),
        );
    for (path, what) in config_files {
        let Some(mode) = perms(path) else {
            continue;
        };
        // Writable by others: anyone can point the gateway elsewhere.
        let writable = mode & 0o022 != 0;
        if writable || has_plaintext || what == "included file" {
            out.push(finding(
                if writable {
                    Severity::Error
                } else {
                    Severity::Warn
                },
                if what == "config" {
                    "fs.config.perms"
                } else {
                    "fs.config_include.perms"
                },
                path.display().to_string(),
                format!(
                    "the {what} is {} by other users (mode {mode:o})",
                    if writable { "writable" } else { "readable" }
                ),
                format!("chmod 600 {}", path.display()),
            ));
        }
    }
    for (name, sp) in &reg.config.secrets.providers {
        match sp {
            SecretProvider::File {
                path,
                allow_insecure_path: false,
                ..
            } => {
                let path = clawgate_config::secretref::expand_home(path);
                if let Some(mode) = perms(&path) {
                    out.push(finding(
                        Severity::Warn,
                        "fs.secret_file.perms",
                        format!("secrets.providers.{name}.path"),
                        format!(
                            "{} holds secrets and is readable by other users (mode {mode:o})",
                            path.display()
                        ),
                        format!("chmod 600 {}", path.display()),
                    ));
                }
            }
            SecretProvider::Exec(x) => {
                let writable = std::fs::metadata(&x.command).ok().and_then(|m| {
                    use std::os::unix::fs::PermissionsExt;
                    let mode = m.permissions().mode() & 0o777;
                    (mode & 0o022 != 0).then_some(mode)
                });
                if let Some(mode) = writable {
                    out.push(finding(
                        Severity::Error,
                        "secrets.exec_writable",
                        format!("secrets.providers.{name}.command"),
                        format!("{} runs to fetch secrets and other users can change it (mode {mode:o})", x.command.display()),
                        format!("chmod go-w {}", x.command.display()),
                    ));
                }
            }
            _ => {}
        }
    }
}

/// A `localService.command` runs as the gateway's user: a file or a
/// folder above it that group or others can write lets any local user
/// replace it (an error); a symlink runs whatever it points to (a
/// warning).
fn local_commands(reg: &Registry, out: &mut Vec<Finding>) {
    use std::os::unix::fs::PermissionsExt;
    for (id, p) in &reg.config.models.providers {
        let Some(ls) = &p.local_service else {
            continue;
        };
        let cmd = &ls.command;
        // A bare name is found on PATH when it starts: nothing to judge.
        if !cmd.is_absolute() {
            continue;
        }
        let key = format!("models.providers.{id}.localService.command");
        if std::fs::symlink_metadata(cmd).is_ok_and(|m| m.file_type().is_symlink()) {
            let target = std::fs::canonicalize(cmd)
                .map(|t| t.display().to_string())
                .unwrap_or_else(|_| "a missing file".into());
            out.push(finding(
                Severity::Warn,
                "local.command_symlink",
                key.clone(),
                format!(
                    "{} is a symlink to {target}: what runs is whatever it points to",
                    cmd.display()
                ),
                format!("point localService.command at {target} itself"),
            ));
        }
        let mode = |p: &std::path::Path| std::fs::metadata(p).ok().map(|m| m.permissions().mode());
        if let Some(m) = mode(cmd).filter(|m| m & 0o022 != 0) {
            out.push(finding(
                Severity::Error,
                "local.command_writable",
                key.clone(),
                format!(
                    "{} runs as your user and other users can change it (mode {:o})",
                    cmd.display(),
                    m & 0o777
                ),
                format!("chmod go-w {}", cmd.display()),
            ));
            continue;
        }
        // A folder above it writable by others (and not sticky, as /tmp
        // is) lets them swap the file for another.
        let open_dir = cmd
            .ancestors()
            .skip(1)
            .find(|d| mode(d).is_some_and(|m| m & 0o022 != 0 && m & 0o1000 == 0));
        if let Some(d) = open_dir {
            out.push(finding(
                Severity::Error,
                "local.command_dir_writable",
                key,
                format!(
                    "{} is in {}, which other users can write: they can replace what runs as your user",
                    cmd.display(),
                    d.display()
                ),
                format!("chmod go-w {}", d.display()),
            ));
        }
    }
}

fn providers(reg: &Registry, out: &mut Vec<Finding>) {
    let policy = reg.config.agents.defaults.model_policy_allow.is_some();
    if reg.config.models.mode == ModelsMode::Replace && !reg.providers.values().any(|p| p.hosted) {
        out.push(finding(
            Severity::Warn,
            "models.replace_without_hosted",
            "models.mode",
            "models.mode is \"replace\" and no hosted provider is configured: when the local server is down nothing can answer",
            "clawgate config set models.mode '\"merge\"' (the recommended mode) and add a hosted fallback, or accept local-only operation",
        ));
    }
    for p in reg.providers.values() {
        if p.configured && p.allow_private_network == Some(true) {
            out.push(finding(
                Severity::Warn,
                "network.allow_private",
                format!("models.providers.{}.request.allowPrivateNetwork", p.id),
                "allowPrivateNetwork: true lets this provider's traffic reach any private address, not only its configured origin",
                format!("remove models.providers.{}.request.allowPrivateNetwork: the configured baseUrl is trusted without it", p.id),
            ));
        }
        if p.configured && p.allow_special_use == Some(true) {
            out.push(finding(
                Severity::Warn,
                "network.allow_special_use",
                format!("models.providers.{}.request.allowSpecialUseAddresses", p.id),
                "allowSpecialUseAddresses: true lets this provider reach cloud metadata and link-local addresses",
                format!("remove models.providers.{}.request.allowSpecialUseAddresses unless the server really lives on a link-local address", p.id),
            ));
        }
        // A hosted catalog provider nobody configured, armed by a key in
        // the environment: any client may select it.
        if p.hosted && !p.configured && !policy {
            if let (Some(var), Some(k)) = (&p.api_key_env, &p.api_key) {
                if k.resolved.is_some() {
                    out.push(finding(
                        Severity::Warn,
                        "env.hosted_key_reachable",
                        format!("models.providers.{}", p.id),
                        format!("{var} is set, so any client of the gateway can run paid {} models; no modelPolicy.allow limits them", p.name),
                        format!("unset {var} for the gateway, or set agents.defaults.modelPolicy.allow to the models clients may use"),
                    ));
                }
            }
        }
        small_models(p, out);
    }
}

fn small_models(p: &Provider, out: &mut Vec<Finding>) {
    if p.hosted || !p.endpoint.is_local() {
        return;
    }
    for (i, m) in p.models.iter().enumerate() {
        if m.compat.supports_tools == Some(false) {
            continue;
        }
        if let Some(hint) = small_model_hint(&m.id) {
            out.push(finding(
                Severity::Warn,
                "model.small_with_tools",
                format!("{}/{}", p.id, m.id),
                format!("a small or heavily quantized local model (\"{hint}\") is used with tools; local models skip provider-side safety filters and small ones follow injected instructions more easily"),
                format!("use a larger model for tool use, or clawgate config set models.providers.{}.models[{i}].compat.supportsTools false", p.id),
            ));
        }
    }
}

fn agents(reg: &Registry, out: &mut Vec<Finding>) {
    let defaults = &reg.config.agents.defaults;
    let mut check = |path: String, a: &AgentSettings| {
        if a.compaction.as_ref().is_some_and(|c| c.disabled()) {
            out.push(finding(
                Severity::Warn,
                "compaction.disabled",
                format!("{path}.compaction"),
                "compaction is off: long sessions keep every untrusted tool result and page in context",
                format!("clawgate config set {path}.compaction.mode '\"default\"'"),
            ));
        }
    };
    check("agents.defaults".into(), defaults);
    for (id, a) in &reg.config.agents.entries {
        check(format!("agents.entries.{id}"), a);
    }
    // A local-only agent whose chain names hosted models: they are skipped.
    for (id, _) in &reg.config.agents.entries {
        if reg.local_only_key(Some(id)).is_none() {
            continue;
        }
        let Ok(chain) = reg.chain(Some(id), None) else {
            continue;
        };
        for c in &chain.candidates {
            let Some(p) = reg.provider(&c.resolved.model.provider) else {
                continue;
            };
            let named = clawgate_config::endpoint::classify(&p.base_url)
                .map(|e| e.is_local())
                .unwrap_or(false);
            if !named {
                out.push(finding(
                    Severity::Info,
                    "data_policy.hosted_in_chain",
                    format!("agents.entries.{id}"),
                    format!("agent {id} is local-only; {} in its chain is never used", c.resolved.reference()),
                    format!("remove {} from the agent's fallbacks, or set agents.entries.{id}.dataPolicy '\"allow-hosted\"'", c.resolved.reference()),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_model_hints() {
        for (id, want) in [
            ("qwen3-8b", Some("8b")),
            ("llama-3.2-1b-instruct", Some("1b")),
            ("Qwen2.5-0.5B-Instruct-GGUF", Some("0.5b")),
            ("mistral-7b-instruct-q3_k_m", Some("7b")),
            ("gemma-27b-IQ2_XS", Some("iq2")),
            ("gemma-27b-Q3_K_S", Some("q3")),
            ("phi-small", Some("-small")),
            ("qwen3-32b", None),
            ("llama-3.3-70b-q4_k_m", None),
            ("gpt-oss-120b", None),
            ("gpt-5", None),
        ] {
            assert_eq!(small_model_hint(id).as_deref(), want, "{id}");
        }
    }
}
