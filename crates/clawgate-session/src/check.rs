//! `models status` with the servers asked (LOC-3): per provider whether
//! its server answers, which models it lists and has loaded, the context
//! configured against the context served (and which one clawgate uses);
//! with probes, one tiny real request per model, sorted into a bucket
//! (`ok`, `auth`, `rate_limit`, `billing`, `timeout`, `format`,
//! `unknown`, `no_model`) with its latency. Probes go straight to the
//! server — no failover, no cooldown — since they test one model.

use std::time::{Duration, Instant};

use clawgate_catalog::{ContextSource, Provider, Registry};
use clawgate_router::{classify, ErrorClass};
use clawgate_wire::introspect::ServerInfo;
use clawgate_wire::{ChatRequest, Client, Message};
use serde::Serialize;

/// What was asked of the servers.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// Send one tiny request per model of a local server.
    pub probe: bool,
    /// Also probe hosted APIs (a paid request each).
    pub probe_hosted: bool,
    /// Only this provider (probed or asked).
    pub provider: Option<String>,
    /// Per request.
    pub timeout: Duration,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderCheck {
    pub id: String,
    pub base_url: String,
    /// `None` for hosted APIs (not asked; the probe tells).
    pub reachable: Option<bool>,
    /// The server software, when recognised.
    pub server: Option<&'static str>,
    pub error: Option<String>,
    /// llama.cpp's parallel slots.
    pub slots: Option<u64>,
    pub models: Vec<ModelCheck>,
    /// What clawgate did with the provider's `localService` for this
    /// check (set by the caller that starts it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_service: Option<LocalStart>,
}

/// A `localService` started for a probe.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase", tag = "outcome")]
pub enum LocalStart {
    /// Started by the check, ready after `ready_ms`, stopped afterwards.
    Started { ready_ms: u64 },
    /// It did not become ready: why, and the last lines it printed
    /// (redacted).
    Failed {
        message: String,
        last_output: Vec<String>,
    },
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelCheck {
    #[serde(rename = "ref")]
    pub reference: String,
    /// Whether the server lists it (`None`: not asked or no list).
    pub listed: Option<bool>,
    pub loaded: Option<bool>,
    pub configured_context: u64,
    pub configured_source: &'static str,
    pub served_context: Option<u64>,
    /// What preflight and compaction use.
    pub used_context: u64,
    pub probe: Option<Probe>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    pub bucket: &'static str,
    pub latency_ms: u64,
    pub detail: String,
}

/// The probe bucket of a failure class.
pub fn bucket(class: ErrorClass) -> &'static str {
    match class {
        ErrorClass::Auth | ErrorClass::AuthPermanent => "auth",
        ErrorClass::RateLimit => "rate_limit",
        ErrorClass::Billing => "billing",
        ErrorClass::Timeout => "timeout",
        ErrorClass::Format => "format",
        ErrorClass::ModelNotFound => "no_model",
        ErrorClass::Blocked => "blocked",
        ErrorClass::Overloaded
        | ErrorClass::Unreachable
        | ErrorClass::ServerError
        | ErrorClass::ContextOverflow
        | ErrorClass::Unknown => "unknown",
    }
}

/// The providers a status is about: configured ones, and catalog ones a
/// chain or an option refers to.
fn in_scope<'a>(
    reg: &'a Registry,
    only: Option<&str>,
) -> Vec<(&'a Provider, Vec<&'a clawgate_catalog::Model>)> {
    let referenced = reg.referenced();
    reg.providers
        .values()
        .filter(|p| only.is_none_or(|o| p.id.eq_ignore_ascii_case(o)))
        .filter_map(|p| {
            let models: Vec<_> = p
                .models
                .iter()
                .filter(|m| {
                    p.configured
                        || referenced.iter().any(|r| {
                            r.to_string()
                                .eq_ignore_ascii_case(&m.reference().to_string())
                        })
                })
                .collect();
            (!models.is_empty() && p.api.is_some()).then_some((p, models))
        })
        .collect()
}

/// Asks every provider in scope (concurrently) and, with `probe`, sends
/// each model one request. `progress(done, total)` is called as probes end.
pub async fn check(
    reg: &Registry,
    client: &Client,
    opts: &CheckOptions,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Vec<ProviderCheck> {
    let scope = in_scope(reg, opts.provider.as_deref());
    let probes_for = |p: &Provider| opts.probe && (opts.probe_hosted || !p.hosted);
    let total = scope
        .iter()
        .filter(|(p, _)| probes_for(p))
        .map(|(_, m)| m.len())
        .sum();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let per_provider = scope.iter().map(|(p, models)| {
        let done = &done;
        async move {
            let info = if p.hosted {
                None
            } else {
                let key = p.api_key.as_ref().and_then(|k| k.resolved.clone());
                Some(
                    client
                        .scoped(p.guard.clone())
                        .introspect(&p.base_url, key.as_ref(), opts.timeout)
                        .await,
                )
            };
            let probing = probes_for(p);
            let probes = models.iter().map(|m| async move {
                if !probing {
                    return None;
                }
                let mut r = probe(client, p, m, opts.timeout).await;
                // A server may quote the key back in its error text.
                r.detail = reg.redactor.redact(&r.detail).into_owned();
                let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                progress(n, total);
                Some(r)
            });
            let probes = futures_util::future::join_all(probes).await;
            let served: Option<&ServerInfo> = info.as_ref().and_then(|i| i.as_ref().ok());
            let models = models
                .iter()
                .zip(probes)
                .map(|(m, probe)| model_check(m, served, probe))
                .collect();
            ProviderCheck {
                id: p.id.clone(),
                base_url: p.base_url.clone(),
                reachable: info.as_ref().map(|i| i.is_ok()),
                server: served.map(|s| s.kind.as_str()),
                error: info
                    .as_ref()
                    .and_then(|i| i.as_ref().err())
                    .map(|e| reg.redactor.redact(&e.message).into_owned()),
                slots: served.and_then(|s| s.slots),
                models,
                local_service: None,
            }
        }
    });
    futures_util::future::join_all(per_provider).await
}

fn model_check(
    m: &clawgate_catalog::Model,
    served: Option<&ServerInfo>,
    probe: Option<Probe>,
) -> ModelCheck {
    let (configured, src) = m.effective_context();
    let entry = served.and_then(|s| s.model(&m.id));
    // A server that lists models but not this one answers with whatever
    // it has loaded (llama.cpp ignores the id): say so.
    let listed = served
        .filter(|s| !s.models.is_empty())
        .map(|_| entry.is_some());
    let served_context = entry.and_then(|e| e.context);
    let used = match served_context {
        Some(real) if real < configured || src == ContextSource::Assumed => real,
        _ => configured,
    };
    let probe = probe.map(|mut pr| {
        if pr.bucket == "ok" && listed == Some(false) {
            pr.bucket = "no_model";
            pr.detail =
                "the server does not list this model (it answered with the model it has loaded)"
                    .into();
        }
        pr
    });
    ModelCheck {
        reference: m.reference().to_string(),
        listed,
        loaded: entry.and_then(|e| e.loaded),
        configured_context: configured,
        configured_source: src.as_str(),
        served_context,
        used_context: used,
        probe,
    }
}

/// One tiny request to `m`, classified.
async fn probe(
    client: &Client,
    p: &Provider,
    m: &clawgate_catalog::Model,
    within: Duration,
) -> Probe {
    let started = Instant::now();
    let done = |bucket: &'static str, detail: String| Probe {
        bucket,
        latency_ms: started.elapsed().as_millis() as u64,
        detail,
    };
    let ep = match clawgate_router::target::endpoint(p, m, p.api_key.as_ref()) {
        Ok(ep) => ep,
        Err(e) => return done("auth", e.to_string()),
    };
    let req = ChatRequest {
        model: m.id.clone(),
        messages: vec![Message::user("Reply with the single word OK.")],
        max_tokens: Some(16),
        stream: false,
        ..Default::default()
    };
    let answer = tokio::time::timeout(within, async {
        let stream = client.send(&ep, &req).await?;
        stream.collect().await
    })
    .await;
    match answer {
        Err(_) => done(
            "timeout",
            format!("no answer within {} ms", within.as_millis()),
        ),
        Ok(Ok(_)) => done("ok", String::new()),
        Ok(Err(e)) => {
            let class = classify(&e);
            done(bucket(class), format!("{}: {}", class.as_str(), e.message))
        }
    }
}
