//! What each local server really serves (LOC-3): asked once when the
//! gateway starts and again after clawgate starts the server, kept per
//! provider, refreshed in the background when older than [`STALE`]. The
//! preflight reads it without waiting (`served_context`); a configured
//! `contextWindow` larger than what the server accepts is reported once,
//! with the number that will be used.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clawgate_catalog::{ContextSource, Provider, Registry};
use clawgate_core::Secret;
use clawgate_wire::introspect::ServerInfo;
use clawgate_wire::Client;

/// Facts older than this are asked for again (a model swapped in LM
/// Studio or Ollama changes them).
pub const STALE: Duration = Duration::from_secs(300);
/// How long one introspection may take.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(3);

struct Entry {
    at: Instant,
    base_url: String,
    key: Option<Secret>,
    /// The provider's outbound rules, for the refresh.
    guard: std::sync::Arc<clawgate_core::net::OutboundPolicy>,
    info: Option<ServerInfo>,
    refreshing: bool,
}

/// Per-provider server facts; cheap to share.
#[derive(Default)]
pub struct Facts {
    entries: Mutex<HashMap<String, Entry>>,
    /// (provider, model, real) already warned about.
    warned: Mutex<HashSet<(String, String, u64)>>,
}

/// A configured window the server does not honour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub reference: String,
    pub configured: u64,
    pub configured_source: &'static str,
    pub served: u64,
}

impl Mismatch {
    pub fn message(&self) -> String {
        format!(
            "{}: {} is {} but the server serves {} tokens per request; using {}",
            self.reference, self.configured_source, self.configured, self.served, self.served
        )
    }
}

/// Every configured window of `p`'s models that is larger than what the
/// server reports.
pub fn mismatches(p: &Provider, info: &ServerInfo) -> Vec<Mismatch> {
    p.models
        .iter()
        .filter_map(|m| {
            let served = info.model(&m.id).and_then(|s| s.context)?;
            let (configured, src) = m.effective_context();
            (src != ContextSource::Assumed && configured > served).then(|| Mismatch {
                reference: m.reference().to_string(),
                configured,
                configured_source: src.as_str(),
                served,
            })
        })
        .collect()
}

impl Facts {
    /// The context one request to `provider`'s `model` really gets, if the
    /// server said. Schedules a refresh when the facts are stale.
    pub fn served_context(
        self: &Arc<Self>,
        client: &Client,
        provider: &str,
        model: &str,
    ) -> Option<u64> {
        let mut refresh = None;
        let ctx = {
            let mut entries = self.entries.lock().ok()?;
            let e = entries.get_mut(provider)?;
            if e.at.elapsed() >= STALE && !e.refreshing {
                e.refreshing = true;
                refresh = Some((e.base_url.clone(), e.key.clone(), e.guard.clone()));
            }
            e.info.as_ref()?.model(model)?.context
        };
        if let (Some((base, key, guard)), Ok(rt)) = (refresh, tokio::runtime::Handle::try_current())
        {
            let me = self.clone();
            let client = client.scoped(guard.clone());
            let provider = provider.to_string();
            rt.spawn(async move {
                let info = client
                    .introspect(&base, key.as_ref(), ASK_TIMEOUT)
                    .await
                    .ok();
                me.store(&provider, base, key, guard, info);
            });
        }
        ctx
    }

    /// Which software serves `provider` and its parallel slots, when known.
    pub fn kind(
        &self,
        provider: &str,
    ) -> Option<(clawgate_wire::introspect::ServerKind, Option<u64>)> {
        let entries = self.entries.lock().ok()?;
        let info = entries.get(provider)?.info.as_ref()?;
        Some((info.kind, info.slots))
    }

    fn store(
        &self,
        provider: &str,
        base_url: String,
        key: Option<Secret>,
        guard: std::sync::Arc<clawgate_core::net::OutboundPolicy>,
        info: Option<ServerInfo>,
    ) {
        if let Ok(mut entries) = self.entries.lock() {
            // Bounded by the configured providers; a reload that renames
            // them leaves a few stale entries at most.
            if entries.len() >= 1024 {
                entries.clear();
            }
            entries.insert(
                provider.to_string(),
                Entry {
                    at: Instant::now(),
                    base_url,
                    key,
                    guard,
                    info,
                    refreshing: false,
                },
            );
        }
    }

    /// Asks `p`'s server now and records the answer; warns once per
    /// configured window the server does not honour.
    pub async fn learn(&self, client: &Client, p: &Provider) -> Option<ServerInfo> {
        let key = p.api_key.as_ref().and_then(|k| k.resolved.clone());
        let info = client
            .scoped(p.guard.clone())
            .introspect(&p.base_url, key.as_ref(), ASK_TIMEOUT)
            .await
            .ok();
        if let Some(info) = &info {
            for m in mismatches(p, info) {
                let fresh = self
                    .warned
                    .lock()
                    .map(|mut w| {
                        // Bounded: a server whose size keeps changing is
                        // warned about again after a while, not remembered
                        // forever.
                        if w.len() >= 4096 {
                            w.clear();
                        }
                        w.insert((p.id.clone(), m.reference.clone(), m.served))
                    })
                    .unwrap_or(false);
                if fresh {
                    tracing::warn!("context window: {}", m.message());
                }
            }
        }
        self.store(
            &p.id,
            p.base_url.clone(),
            key,
            p.guard.clone(),
            info.clone(),
        );
        info
    }

    /// Learns every local provider of `registry` in the background (the
    /// gateway at start).
    pub fn learn_all(self: &Arc<Self>, client: &Client, registry: &Arc<Registry>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        for p in registry.providers.values() {
            // Hosted APIs describe no servers; a localService is asked
            // once it runs.
            if p.hosted || !p.endpoint.is_local() || p.local_service.is_some() || p.api.is_none() {
                continue;
            }
            let (me, client, reg, id) =
                (self.clone(), client.clone(), registry.clone(), p.id.clone());
            rt.spawn(async move {
                if let Some(p) = reg.providers.get(&id) {
                    me.learn(&client, p).await;
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clawgate_wire::introspect::{ServedModel, ServerKind};

    #[test]
    fn only_a_configured_window_larger_than_the_served_one_is_a_mismatch() {
        let text = r#"{ models: { mode: "replace", providers: { llama: { baseUrl: "http://127.0.0.1:8080/v1",
            models: [{ id: "big", contextWindow: 32768 }, { id: "small", contextWindow: 2048 }, { id: "unset" }] } } } }"#;
        let reg = clawgate_catalog::load_text(std::path::Path::new("t.json5"), text, &|_| None)
            .map(|s| s.registry)
            .unwrap_or_else(|e| panic!("{e}"));
        let p = reg
            .provider("llama")
            .unwrap_or_else(|| panic!("no provider"));
        let served = |id: &str| ServedModel {
            id: id.into(),
            loaded: Some(true),
            context: Some(4096),
            max_context: None,
        };
        let info = ServerInfo {
            kind: ServerKind::LlamaCpp,
            models: vec![served("big"), served("small"), served("unset")],
            slots: None,
        };
        let m = mismatches(p, &info);
        assert_eq!(m.len(), 1, "{m:?}");
        assert_eq!(
            m[0].message(),
            "llama/big: config:contextWindow is 32768 but the server serves 4096 tokens per request; using 4096"
        );
    }
}
