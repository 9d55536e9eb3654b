//! From a resolved model to a wire endpoint and request settings: the
//! provider's URL, credential, headers, timeout and compat shaping, and the
//! model's `params` (`extra_body`, `chat_template_kwargs`).

use std::time::Duration;

use clawgate_catalog::{Model, Provider, Registry};
use clawgate_config::{MaxTokensField as CfgField, SecretForm, SecretValue};
use clawgate_core::Secret;
use clawgate_wire::{Endpoint, MaxTokensField, Shaping};
use serde_json::{Map, Value};

/// Why a model cannot be called.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("provider \"{provider}\" uses api \"{api}\", which clawgate does not implement")]
    UnsupportedApi { provider: String, api: String },
    /// OpenClaw's wording, with the fix.
    #[error("No API key found for provider \"{provider}\"{hint}")]
    NoApiKey { provider: String, hint: String },
}

/// The endpoint for one model, with the credential `key` (a provider's
/// own `apiKey` or an auth profile's).
pub fn endpoint(
    p: &Provider,
    m: &Model,
    key: Option<&SecretValue>,
) -> Result<Endpoint, TargetError> {
    let api = p.api_for(m).ok_or_else(|| TargetError::UnsupportedApi {
        provider: p.id.clone(),
        api: p.unsupported_api.clone().unwrap_or_default(),
    })?;
    let mut ep = Endpoint::new(api, p.base_url_for(m));
    ep.policy = Some(p.guard.clone());
    match key {
        Some(k) => match &k.resolved {
            Some(secret) => ep.api_key = Some(secret.clone()),
            // A local server that needs no key never gets a "no API key" error (CFG-3).
            None if p.endpoint.is_local() => {}
            None => {
                let var = match &k.form {
                    SecretForm::Env(v) => v.clone(),
                    SecretForm::Template(v) => v.join(", "),
                    _ => String::new(),
                };
                return Err(TargetError::NoApiKey {
                    provider: p.id.clone(),
                    hint: format!("; set {var}"),
                });
            }
        },
        None if p.hosted => {
            return Err(TargetError::NoApiKey {
                provider: p.id.clone(),
                hint: format!("; set models.providers.{}.apiKey", p.id),
            })
        }
        None => {}
    }
    for (k, v) in &p.headers {
        if let Some(s) = &v.resolved {
            ep.headers.push((k.clone(), s.clone()));
        }
    }
    for (k, v) in &m.headers {
        ep.headers.push((k.clone(), Secret::new(v.clone())));
    }
    if let Some(t) = p.timeout_seconds {
        ep.timeout = Duration::from_secs(t);
        // A longer provider budget also raises the idle watchdog.
        ep.idle_timeout = ep
            .idle_timeout
            .max(Duration::from_secs(t).min(Duration::from_secs(600)));
    }
    ep.shaping = Shaping {
        string_content: m.compat.requires_string_content.unwrap_or(false),
        strict_message_keys: m.compat.strict_message_keys.unwrap_or(false),
        tools: m.compat.supports_tools.unwrap_or(true),
        max_tokens_field: m.compat.max_tokens_field.map(|f| match f {
            CfgField::MaxTokens => MaxTokensField::MaxTokens,
            CfgField::MaxCompletionTokens => MaxTokensField::MaxCompletionTokens,
        }),
        usage_in_stream: m.compat.supports_usage_in_streaming.unwrap_or(true),
    };
    Ok(ep)
}

/// `params.extra_body` (and `chat_template_kwargs`) for a model, from
/// `agents.defaults.params` < `agents.defaults.models[ref].params`.
pub fn extra_body(reg: &Registry, m: &Model) -> Map<String, Value> {
    let defaults = &reg.config.agents.defaults;
    let mut params = defaults.params.clone();
    let r = m.reference();
    if let Some(opts) = reg
        .option_refs
        .iter()
        .find(|(kr, _)| kr.matches(&r))
        .and_then(|(_, i)| defaults.models.get_index(*i).map(|(_, o)| o))
    {
        for (k, v) in &opts.params {
            params.insert(k.clone(), v.clone());
        }
    }
    let mut out = Map::new();
    if let Some(Value::Object(kw)) = params.get("chat_template_kwargs") {
        out.insert("chat_template_kwargs".into(), Value::Object(kw.clone()));
    }
    for key in ["extra_body", "extraBody"] {
        if let Some(Value::Object(eb)) = params.get(key) {
            for (k, v) in eb {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out
}
