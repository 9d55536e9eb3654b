//! Discovery (LOC-5): the usual loopback ports of local model servers are
//! asked what they serve — LM Studio 1234, Ollama 11434, vLLM / SGLang /
//! MLX 8000, llama.cpp 8080, LiteLLM 4000 — and whatever answers becomes a
//! ready-to-use provider entry (JSON5 for the config, or a value for the
//! comment-keeping editor), with the context sizes the server reports.

use std::time::Duration;

use clawgate_wire::introspect::{ServerInfo, ServerKind};
use clawgate_wire::Client;
use serde_json::{json, Value};

/// The usual ports and who usually listens there.
pub const PORTS: [(u16, &str); 5] = [
    (1234, "LM Studio"),
    (11434, "Ollama"),
    (8000, "vLLM / SGLang / MLX"),
    (8080, "llama.cpp"),
    (4000, "LiteLLM"),
];

/// A server that answered.
#[derive(Debug, Clone)]
pub struct Found {
    pub port: u16,
    /// A provider id for it (`lmstudio`, `ollama`, `vllm`, `llamacpp`,
    /// `litellm`, else `local-<port>`).
    pub id: String,
    pub base_url: String,
    pub info: ServerInfo,
}

fn provider_id(port: u16, kind: ServerKind) -> String {
    match kind {
        ServerKind::LmStudio => "lmstudio".into(),
        ServerKind::Ollama => "ollama".into(),
        ServerKind::Vllm => "vllm".into(),
        ServerKind::LlamaCpp => "llamacpp".into(),
        ServerKind::OpenAi if port == 4000 => "litellm".into(),
        ServerKind::OpenAi => format!("local-{port}"),
    }
}

/// Asks `127.0.0.1:<port>/v1` for each port at once; what answers with a
/// model list, in port order. Ids are unique.
pub async fn discover(
    client: &Client,
    ports: &[u16],
    within: Duration,
    key: Option<&clawgate_core::Secret>,
) -> Vec<Found> {
    let asks = ports.iter().map(|&port| async move {
        let base = format!("http://127.0.0.1:{port}/v1");
        // A server behind a key (a LiteLLM proxy's master key) answers
        // its list only with it.
        let info = client.introspect(&base, key, within).await.ok()?;
        (!info.models.is_empty()).then(|| Found {
            port,
            id: provider_id(port, info.kind),
            base_url: base,
            info,
        })
    });
    let mut found: Vec<Found> = futures_util::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .collect();
    let mut seen = std::collections::HashSet::new();
    for f in &mut found {
        if !seen.insert(f.id.clone()) {
            f.id = format!("{}-{}", f.id, f.port);
            seen.insert(f.id.clone());
        }
    }
    found
}

impl Found {
    /// `models.providers.<id>` as a value: `baseUrl`, and each model with
    /// the context the server reports (its loaded context, else its
    /// maximum), so nothing is assumed.
    pub fn provider_value(&self) -> Value {
        let models: Vec<Value> = self
            .info
            .models
            .iter()
            .map(|m| {
                let mut v = json!({ "id": m.id });
                if let Some(ctx) = m.context.or(m.max_context) {
                    v["contextWindow"] = ctx.into();
                    v["maxTokens"] = output_cap(ctx).into();
                }
                v
            })
            .collect();
        json!({ "baseUrl": self.base_url, "models": models })
    }

    /// The same as JSON5 text, ready to paste under `models.providers`.
    pub fn json5_block(&self) -> String {
        let mut out = format!(
            "// {} on port {} ({}), found by clawgate models discover\n{}: {{\n  baseUrl: {:?},\n  models: [\n",
            self.info.kind.as_str(),
            self.port,
            PORTS
                .iter()
                .find(|(p, _)| *p == self.port)
                .map_or("custom port", |(_, who)| who),
            json5_key(&self.id),
            self.base_url
        );
        for m in &self.info.models {
            let ctx = m.context.or(m.max_context);
            let loaded = match m.loaded {
                Some(true) => " // loaded",
                Some(false) => " // not loaded",
                None => "",
            };
            match ctx {
                Some(c) => out.push_str(&format!(
                    "    {{ id: {:?}, contextWindow: {c}, maxTokens: {} }},{loaded}\n",
                    m.id,
                    output_cap(c)
                )),
                None => out.push_str(&format!("    {{ id: {:?} }},{loaded}\n", m.id)),
            }
        }
        out.push_str("  ],\n},\n");
        out
    }
}

/// The output cap written for a discovered model: the usual 8 192, never
/// more than half its window (an answer as long as the window would
/// leave no room for the prompt).
pub fn output_cap(context: u64) -> u64 {
    (context / 2).clamp(1, 8_192)
}

/// A provider id as a JSON5 key (quoted unless it is an identifier).
fn json5_key(id: &str) -> String {
    let ident = id
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
    if ident {
        id.to_string()
    } else {
        format!("{id:?}")
    }
}
