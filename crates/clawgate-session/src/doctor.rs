//! `clawgate doctor` (LOC-4) as data: every finding of the config lint,
//! the status report and the server checks, each with a severity and one
//! concrete fix line. `error` means a request would fail now (the default
//! model cannot answer, a server clawgate must start cannot be started);
//! the CLI exits 1 on any.

use clawgate_catalog::{Provider, Registry};
use clawgate_config::Diagnostic;
use serde::Serialize;

use crate::check::{LocalStart, ProviderCheck};
use crate::status::Report;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warn,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warn => "warn",
            Severity::Info => "info",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// `config`, `model`, `auth`, `server`, `context`, `probe`,
    /// `localService`, `cooldown`.
    pub area: &'static str,
    /// The security audit's rule id (`secret.plaintext`, …); empty for
    /// the other checks.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub check: &'static str,
    /// What it is about (a key path, a provider, a model ref).
    pub subject: String,
    pub message: String,
    pub fix: String,
}

pub(crate) fn finding(
    severity: Severity,
    area: &'static str,
    subject: impl Into<String>,
    message: impl Into<String>,
    fix: impl Into<String>,
) -> Finding {
    Finding {
        severity,
        area,
        check: "",
        subject: subject.into(),
        message: message.into(),
        fix: fix.into(),
    }
}

/// `models.providers.<p>.models[<i>]` of a model the config lists.
fn model_path(reg: &Registry, provider: &str, model: &str) -> Option<String> {
    let rows = reg.config.models.providers.get(provider)?.models.as_ref()?;
    let i = rows.iter().position(|m| m.id.eq_ignore_ascii_case(model))?;
    Some(format!("models.providers.{provider}.models[{i}]"))
}

/// The default agent's first candidate: what "does it work" means first.
fn primary(report: &Report) -> Option<&str> {
    report.default.as_ref().map(|d| d.reference.as_str())
}

/// How to start a local server of the kind its port suggests.
fn start_hint(p: &Provider) -> String {
    let port = p.base.as_ref().and_then(|b| b.url.port_or_known_default());
    let how = match port {
        Some(1234) => {
            "start LM Studio's server (Developer → Start server, or `lms server start`)".to_string()
        }
        Some(11434) => "run `ollama serve`".to_string(),
        Some(8080) => "run `llama-server -m MODEL.gguf --port 8080`".to_string(),
        Some(8000) => "run `vllm serve MODEL --port 8000`".to_string(),
        Some(4000) => "run `litellm --port 4000`".to_string(),
        _ => format!("start the server at {}", p.base_url),
    };
    format!(
        "{how}, or add models.providers.{}.localService so clawgate starts it on demand",
        p.id
    )
}

pub fn findings(
    reg: &Registry,
    warnings: &[Diagnostic],
    report: &Report,
    servers: &[ProviderCheck],
) -> Vec<Finding> {
    let mut out = Vec::new();
    for w in warnings {
        out.push(finding(
            Severity::Warn,
            "config",
            if w.path.is_empty() {
                w.file.display().to_string()
            } else {
                w.path.clone()
            },
            w.to_string(),
            format!(
                "edit {}:{}:{} (then `clawgate config validate`)",
                w.file.display(),
                w.line,
                w.column
            ),
        ));
    }
    if primary(report).is_none() {
        out.push(finding(
            Severity::Error,
            "model",
            "agents.defaults.model",
            "no default model: no provider is configured and none was discovered",
            "run `clawgate models discover --write`, or add a provider under models.providers",
        ));
    }
    for a in &report.agents {
        if let Some(e) = &a.error {
            out.push(finding(
                Severity::Error,
                "model",
                format!("agent {}", a.agent),
                e.clone(),
                "`clawgate models list` shows the refs that exist; fix the agent's model or fallbacks",
            ));
        }
    }
    let in_chain = |id: &str| {
        report
            .agents
            .iter()
            .flat_map(|a| &a.candidates)
            .any(|c| c.reference.split('/').next() == Some(id))
    };
    let is_primary_provider =
        |id: &str| primary(report).and_then(|r| r.split('/').next()) == Some(id);
    let serious = |id: &str| {
        if is_primary_provider(id) {
            Severity::Error
        } else {
            Severity::Warn
        }
    };
    for p in &report.providers {
        if p.auth.starts_with("missing") && in_chain(&p.id) {
            out.push(finding(
                serious(&p.id),
                "auth",
                format!("models.providers.{}.apiKey", p.id),
                format!("{} has no API key: {}", p.id, p.auth),
                format!("export the key (e.g. `export {}_API_KEY=…`) or `clawgate config set models.providers.{}.apiKey '${{{}_API_KEY}}'`", p.id.to_ascii_uppercase(), p.id, p.id.to_ascii_uppercase()),
            ));
        }
        for c in &p.cooldowns {
            out.push(finding(
                Severity::Info,
                "cooldown",
                c.key.clone(),
                format!("cooling down after {} for {}s", c.class, c.remaining_seconds),
                "nothing to do: it is tried again when the cooldown ends (or now, as the last candidate)",
            ));
        }
    }
    for p in reg.providers.values() {
        let Some(ls) = &p.local_service else { continue };
        let subject = format!("models.providers.{}.localService.command", p.id);
        match std::fs::metadata(&ls.command) {
            Err(e) => out.push(finding(
                Severity::Error,
                "localService",
                subject,
                format!("{} cannot be started: {}: {e}", p.id, ls.command.display()),
                "install the server or point localService.command at its absolute path",
            )),
            Ok(m) if !executable(&m) => out.push(finding(
                Severity::Error,
                "localService",
                subject,
                format!("{} is not executable", ls.command.display()),
                format!("chmod +x {}", ls.command.display()),
            )),
            Ok(_) => {}
        }
        if let Some(cwd) = ls.cwd.as_ref().filter(|c| !c.is_dir()) {
            out.push(finding(
                Severity::Error,
                "localService",
                format!("models.providers.{}.localService.cwd", p.id),
                format!("{} is not a directory", cwd.display()),
                "create it or fix localService.cwd",
            ));
        }
    }
    for s in servers {
        let Some(p) = reg.provider(&s.id) else {
            continue;
        };
        match &s.local_service {
            Some(LocalStart::Failed {
                message,
                last_output,
            }) => out.push(finding(
                serious(&s.id),
                "localService",
                format!("models.providers.{}.localService", s.id),
                if last_output.is_empty() {
                    format!("started for the probe, it did not become ready: {message}")
                } else {
                    format!(
                        "started for the probe, it did not become ready: {message}; its last output:\n        {}",
                        last_output.join("\n        ")
                    )
                },
                format!("check models.providers.{}.localService (command, args, env, readyTimeoutMs); run the command by hand to see it fail", s.id),
            )),
            Some(LocalStart::Started { ready_ms }) => out.push(finding(
                Severity::Info,
                "localService",
                format!("models.providers.{}.localService", s.id),
                format!("it was not running: started for the probe (ready in {ready_ms} ms) and stopped again"),
                "nothing to do: clawgate starts it on the first request",
            )),
            None => {}
        }
        let start_failed = matches!(s.local_service, Some(LocalStart::Failed { .. }));
        if s.reachable == Some(false) && !start_failed {
            let (sev, fix) = if p.local_service.is_some() {
                (
                    Severity::Info,
                    "nothing to do: clawgate starts it on the first request".to_string(),
                )
            } else {
                (serious(&s.id), start_hint(p))
            };
            out.push(finding(
                sev,
                "server",
                s.id.clone(),
                format!(
                    "{} does not answer at {}: {}",
                    s.id,
                    s.base_url,
                    s.error.as_deref().unwrap_or("no answer")
                ),
                fix,
            ));
        }
        for m in &s.models {
            let (_, model) = m.reference.split_once('/').unwrap_or(("", &m.reference));
            let path = model_path(reg, &s.id, model);
            if let Some(served) = m
                .served_context
                .filter(|sv| *sv < m.configured_context && m.configured_source != "assumed")
            {
                out.push(finding(
                    Severity::Warn,
                    "context",
                    m.reference.clone(),
                    format!("{} is {} but the server serves {served} tokens per request; clawgate uses {served}", m.configured_source, m.configured_context),
                    match &path {
                        Some(pp) => format!("`clawgate config set {pp}.contextWindow {served}`, or restart the server with a larger context (llama.cpp: -c; per slot it is -c ÷ -np)"),
                        None => format!("restart the server with a larger context, or set the model's contextWindow to {served}"),
                    },
                ));
            }
            if m.listed == Some(false) {
                let listed: Vec<String> = servers
                    .iter()
                    .filter(|x| x.id == s.id)
                    .flat_map(|x| {
                        x.models
                            .iter()
                            .filter(|y| y.listed == Some(true))
                            .map(|y| y.reference.clone())
                    })
                    .collect();
                out.push(finding(
                    if primary(report) == Some(m.reference.as_str()) { Severity::Error } else { Severity::Warn },
                    "model",
                    m.reference.clone(),
                    format!("{} does not list {model}", s.id),
                    match (&path, listed.is_empty()) {
                        (Some(pp), false) => format!("`clawgate config set {pp}.id <id>` with one it lists ({}), or load {model} in the server", listed.join(", ")),
                        _ => format!("load {model} in the server, or use a model `clawgate models discover` shows"),
                    },
                ));
            }
            if let Some(pr) = m
                .probe
                .as_ref()
                .filter(|pr| pr.bucket != "ok" && pr.bucket != "no_model")
            {
                let fix = match pr.bucket {
                    "auth" => format!("check models.providers.{}.apiKey (`clawgate models status` shows where it comes from)", s.id),
                    "billing" => "add credit or a payment method with the provider, or move it down the fallbacks".to_string(),
                    "rate_limit" => "wait, add a second key as an auth profile, or add a fallback".to_string(),
                    "timeout" => format!("the server is slow or stuck: check it, or raise models.providers.{}.timeoutSeconds", s.id),
                    "format" => "the server rejected the request shape: check models.providers.<id>.api and the model's compat flags".to_string(),
                    _ if start_failed => format!("its localService did not start: see the models.providers.{}.localService finding", s.id),
                    _ if s.reachable == Some(false) && p.local_service.is_some() => "clawgate starts its localService on the first request; run `clawgate doctor` (which starts it for the probe) to see whether it starts".to_string(),
                    _ if s.reachable == Some(false) => start_hint(p),
                    _ => "see the detail; `clawgate infer --model <ref> --prompt hi` reproduces it".to_string(),
                };
                out.push(finding(
                    if primary(report) == Some(m.reference.as_str()) {
                        Severity::Error
                    } else {
                        Severity::Warn
                    },
                    "probe",
                    m.reference.clone(),
                    format!("probe {}: {}", pr.bucket, pr.detail),
                    fix,
                ));
            }
        }
    }
    out.extend(crate::audit::audit(reg));
    out.sort_by_key(|f| f.severity);
    out
}

#[cfg(unix)]
fn executable(m: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    m.is_file() && m.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn executable(m: &std::fs::Metadata) -> bool {
    m.is_file()
}
