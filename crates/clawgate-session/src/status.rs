//! The `models status` report (GW-4) as data: the default model and the
//! rule that chose it, each agent's candidate chain with what its data
//! policy allows (the runner's own rule, [`Registry::allows`]), provider
//! auth state, and active cooldowns. Surfaces render it (the CLI as a
//! table or JSON; the dashboard next).

use clawgate_catalog::{Provider, Registry};
use clawgate_router::cooldown::{CooldownKey, SavedCooldown};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Where the config came from, as the caller describes it.
    pub config: String,
    pub default: Option<DefaultModel>,
    pub agents: Vec<AgentStatus>,
    pub providers: Vec<ProviderStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DefaultModel {
    #[serde(rename = "ref")]
    pub reference: String,
    pub rule: &'static str,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    pub agent: String,
    pub data_policy: &'static str,
    pub strict: bool,
    pub candidates: Vec<CandidateStatus>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CandidateStatus {
    #[serde(rename = "ref")]
    pub reference: String,
    pub role: String,
    pub endpoint: Option<&'static str>,
    pub allowed: bool,
    pub blocked_by: Option<&'static str>,
    pub cooldowns: Vec<CooldownStatus>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderStatus {
    pub id: String,
    pub api: Option<&'static str>,
    pub unsupported_api: Option<String>,
    pub base_url: String,
    pub endpoint: &'static str,
    pub configured: bool,
    pub auth: String,
    pub models: usize,
    pub cooldowns: Vec<CooldownStatus>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CooldownStatus {
    pub key: String,
    pub class: &'static str,
    pub remaining_seconds: u64,
    pub until_unix_ms: u64,
}

/// Where a provider's credential stands, without showing it.
pub fn auth_status(p: &Provider) -> String {
    use clawgate_config::SecretForm;
    match &p.api_key {
        None if p.endpoint.is_local() => "not needed (local)".to_string(),
        None => format!("missing (set models.providers.{}.apiKey)", p.id),
        Some(k) if k.is_marker() => k.redacted(),
        Some(k) => match (&k.resolved, &k.form) {
            (Some(_), SecretForm::Env(name)) => format!("ok (env {name})"),
            (Some(_), SecretForm::Template(_)) => "ok (from environment)".to_string(),
            (Some(_), _) => "ok (in config file)".to_string(),
            (None, _) if p.endpoint.is_local() => "not needed (local)".to_string(),
            (None, _) => format!("missing (set {})", k.missing.join(", ")),
        },
    }
}

fn provider_of(k: &CooldownKey) -> &str {
    match k {
        CooldownKey::Credential { provider, .. } | CooldownKey::Model { provider, .. } => provider,
    }
}

/// Builds the report; `cooldowns` are the saved ones, `now_unix_ms` the
/// wall clock (expired cooldowns are left out).
pub fn report(
    reg: &Registry,
    config: String,
    cooldowns: &[SavedCooldown],
    now_unix_ms: u64,
) -> Report {
    let active: Vec<&SavedCooldown> = cooldowns
        .iter()
        .filter(|c| c.until_unix_ms > now_unix_ms)
        .collect();
    let cd = |c: &SavedCooldown| CooldownStatus {
        key: c.key.describe(),
        class: c.class.as_str(),
        remaining_seconds: (c.until_unix_ms - now_unix_ms).div_ceil(1000),
        until_unix_ms: c.until_unix_ms,
    };
    let mut agent_ids: Vec<Option<String>> = vec![None];
    agent_ids.extend(reg.config.agents.entries.keys().cloned().map(Some));
    let agents = agent_ids
        .iter()
        .map(|agent| {
            let agent = agent.as_deref();
            let (candidates, strict, error) = match reg.chain(agent, None) {
                Ok(c) => (c.candidates, c.strict, None),
                Err(e) => (Vec::new(), false, Some(e.to_string())),
            };
            let candidates = candidates
                .iter()
                .map(|c| {
                    let m = &c.resolved.model;
                    let p = reg.provider(&m.provider);
                    let blocked_by = p.and_then(|p| reg.allows(agent, p).err());
                    CandidateStatus {
                        reference: m.reference().to_string(),
                        role: c.role.describe(),
                        endpoint: p.map(|p| p.endpoint.as_str()),
                        allowed: blocked_by.is_none(),
                        blocked_by,
                        cooldowns: active
                            .iter()
                            .filter(|x| match &x.key {
                                CooldownKey::Model { provider, model } => {
                                    provider == &m.provider && model == &m.id
                                }
                                CooldownKey::Credential { provider, .. } => provider == &m.provider,
                            })
                            .map(|x| cd(x))
                            .collect(),
                    }
                })
                .collect();
            AgentStatus {
                agent: agent.unwrap_or("default").to_string(),
                data_policy: reg.data_policy(agent).as_str(),
                strict,
                candidates,
                error,
            }
        })
        .collect();
    let providers = reg
        .providers
        .values()
        .filter(|p| p.configured || p.hosted)
        .map(|p| ProviderStatus {
            id: p.id.clone(),
            api: p.api.map(|a| a.as_str()),
            unsupported_api: p.unsupported_api.clone(),
            base_url: p.base_url.clone(),
            endpoint: p.endpoint.as_str(),
            configured: p.configured,
            auth: auth_status(p),
            models: p.models.len(),
            cooldowns: active
                .iter()
                .filter(|c| provider_of(&c.key) == p.id)
                .map(|x| cd(x))
                .collect(),
        })
        .collect();
    Report {
        config,
        default: reg.default_model().map(|(r, rule)| DefaultModel {
            reference: r.to_string(),
            rule: rule.as_str(),
        }),
        agents,
        providers,
    }
}
