//! The built-in catalog (CFG-5): hosted providers with their current models,
//! context windows, output limits and prices, plus templates for the usual
//! local servers. Shipped as data (`data/builtin.json`) compiled into the
//! binary; its `source` fields say where each figure came from and when.

use std::sync::OnceLock;

use indexmap::IndexMap;
use serde::Deserialize;

const DATA: &str = include_str!("../data/builtin.json");

#[derive(Debug, Deserialize)]
pub struct BuiltinCatalog {
    pub retrieved: String,
    pub providers: IndexMap<String, BuiltinProvider>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BuiltinProvider {
    pub name: String,
    pub api: String,
    pub base_url: String,
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Hosted (a paid cloud API) or a local-server template.
    pub hosted: bool,
    pub source: String,
    pub models: Vec<BuiltinModel>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BuiltinModel {
    pub id: String,
    pub name: String,
    pub reasoning: bool,
    pub input: Vec<String>,
    pub context_window: u64,
    pub max_tokens: u64,
    pub cost: BuiltinCost,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BuiltinCost {
    pub input: f64,
    pub output: f64,
    pub cache_read: f64,
    pub cache_write: f64,
}

static CATALOG: OnceLock<Option<BuiltinCatalog>> = OnceLock::new();

/// The built-in catalog. The data is checked by this crate's tests, so a
/// parse failure can only come from a broken build; it yields an empty
/// catalog rather than a panic.
pub fn catalog() -> Option<&'static BuiltinCatalog> {
    CATALOG
        .get_or_init(|| serde_json::from_str(DATA).ok())
        .as_ref()
}

/// The built-in provider with this id (exact).
pub fn provider(id: &str) -> Option<&'static BuiltinProvider> {
    catalog()?.providers.get(id)
}

/// Ids of all built-in providers, in catalog order.
pub fn provider_ids() -> Vec<&'static str> {
    catalog()
        .map(|c| c.providers.keys().map(String::as_str).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clawgate_core::{ApiKind, ApiParse};

    #[test]
    fn data_parses_and_is_sane() {
        let c = serde_json::from_str::<BuiltinCatalog>(DATA).unwrap();
        assert_eq!(c.retrieved, "2026-11-25");
        for (id, p) in &c.providers {
            assert!(
                matches!(ApiKind::parse(&p.api), ApiParse::Supported(_)),
                "{id}: api {}",
                p.api
            );
            assert!(p.base_url.starts_with("http"), "{id}");
            assert_eq!(
                p.hosted,
                p.api_key_env.is_some(),
                "{id}: hosted needs a key env"
            );
            for m in &p.models {
                assert!(m.context_window > 0 && m.max_tokens > 0, "{id}/{}", m.id);
                assert!(m.max_tokens <= m.context_window, "{id}/{}", m.id);
                assert!(
                    m.cost.input > 0.0 && m.cost.output >= m.cost.input,
                    "{id}/{}",
                    m.id
                );
                assert!(m.input.iter().all(|i| i == "text" || i == "image"));
            }
        }
    }

    #[test]
    fn required_models_present() {
        let c = catalog().unwrap();
        let has = |p: &str, m: &str| c.providers[p].models.iter().any(|x| x.id == m);
        for m in [
            "claude-opus-4-5",
            "claude-sonnet-4-5",
            "claude-haiku-4-5",
            "claude-opus-4-6",
            "claude-sonnet-4-6",
        ] {
            assert!(has("anthropic", m), "{m}");
        }
        for m in ["minimax/minimax-m2.1", "moonshotai/kimi-k2", "z-ai/glm-4.6"] {
            assert!(has("openrouter", m), "{m}");
        }
        assert!(has("openai", "gpt-5.4"));
        let sonnet = c.providers["anthropic"]
            .models
            .iter()
            .find(|m| m.id == "claude-sonnet-4-5")
            .unwrap();
        assert_eq!(sonnet.context_window, 200_000);
        assert_eq!(sonnet.cost.input, 3.0);
        assert_eq!(sonnet.cost.output, 15.0);
    }
}
