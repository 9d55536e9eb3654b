//! Model reference resolution (REF-1..4): refs, aliases, bare ids, the
//! local-first default, candidate chains and the `modelPolicy.allow` check.

use clawgate_config::{AgentSettings, DataPolicy};
use clawgate_core::ModelRef;

use crate::registry::{Model, Provider};
use crate::Registry;

/// How an input string was resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// A `provider/model` ref.
    Ref,
    /// An alias from `agents.defaults.models.<ref>.alias`.
    Alias(String),
    /// A bare model id that only one provider has.
    BareId,
}

/// A resolved model: the effective entry and how it was found.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub model: Model,
    pub via: Via,
    /// False when the catalog does not list the model and CFG-4 defaults
    /// apply (allowed on hosted and undeclared providers).
    pub catalogued: bool,
}

impl Resolved {
    pub fn reference(&self) -> ModelRef {
        self.model.reference()
    }
}

/// Why a model string does not resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("empty model reference")]
    Empty,
    #[error("Unknown provider \"{provider}\" in \"{input}\"{hint}; known providers: {known}")]
    UnknownProvider {
        input: String,
        provider: String,
        hint: String,
        known: String,
    },
    #[error("Unknown model: {reference} (models of {provider}: {known})")]
    UnknownModel {
        reference: String,
        provider: String,
        known: String,
    },
    #[error("Unknown model: {input:?} is not an alias, a configured model id or a provider/model ref{hint}")]
    NotFound { input: String, hint: String },
    #[error("{input:?} matches several models: {candidates}; use the full provider/model ref")]
    Ambiguous { input: String, candidates: String },
    #[error("provider \"{provider}\" uses api \"{api}\", which clawgate does not implement")]
    UnsupportedApi { provider: String, api: String },
    #[error("Unknown agent \"{0}\"; known agents: {1}")]
    UnknownAgent(String, String),
    #[error("no model configured: set agents.defaults.model.primary or configure a provider with models")]
    NoDefault,
}

/// `modelPolicy.allow` rejection (REF-4).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Model override \"{reference}\" is not allowed by {key}.")]
pub struct PolicyError {
    pub reference: String,
    /// The key to edit: `agents.defaults.modelPolicy.allow` or the agent's.
    pub key: String,
}

/// Which rule picked the default model (REF-3; reported by `models status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultRule {
    /// `agents.defaults.model.primary`.
    Configured,
    /// First model of the first configured provider with models (local-first).
    FirstConfiguredProvider,
}

impl DefaultRule {
    pub fn as_str(self) -> &'static str {
        match self {
            DefaultRule::Configured => "configured",
            DefaultRule::FirstConfiguredProvider => "first-configured-provider",
        }
    }
}

/// Who chose the model of a turn; decides strictness (FO-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectionSource {
    /// The configured default or an agent's configured model: uses the chain.
    Configured,
    /// An explicit user choice (`/model`, a ref from an API client,
    /// `--model`): strict, no fallback.
    User,
}

/// What place a candidate holds in a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Requested,
    Primary,
    Fallback(usize),
}

impl Role {
    pub fn describe(self) -> String {
        match self {
            Role::Requested => "requested".to_string(),
            Role::Primary => "primary".to_string(),
            Role::Fallback(i) => format!("fallback #{}", i + 1),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Candidate {
    pub resolved: Resolved,
    pub role: Role,
}

/// The ordered candidates for one turn.
#[derive(Debug, Clone)]
pub struct Chain {
    pub agent: String,
    pub candidates: Vec<Candidate>,
    /// True when no fallback may be used (explicit user selection, or a
    /// per-agent model without its own fallbacks).
    pub strict: bool,
}

fn list(items: impl Iterator<Item = String>) -> String {
    let v: Vec<String> = items.collect();
    if v.is_empty() {
        "none".to_string()
    } else {
        v.join(", ")
    }
}

impl Registry {
    pub fn provider(&self, id: &str) -> Option<&Provider> {
        self.providers.get(id).or_else(|| {
            self.providers
                .values()
                .find(|p| p.id.eq_ignore_ascii_case(id))
        })
    }

    /// Resolves a ref, alias or bare id (REF-1, REF-2).
    pub fn resolve(&self, input: &str) -> Result<Resolved, ResolveError> {
        let input = input.trim();
        if input.is_empty() {
            return Err(ResolveError::Empty);
        }
        if let Ok(r) = ModelRef::parse(input) {
            if let Some(p) = self.provider(r.provider()) {
                return self.resolve_in(p, r.model(), Via::Ref);
            }
        }
        if let Some(target) = self.alias_target(input) {
            let r = target.clone();
            if let Some(p) = self.provider(r.provider()) {
                return self.resolve_in(p, r.model(), Via::Alias(input.to_string()));
            }
        }
        let matches = self.bare_matches(input);
        match matches.len() {
            1 => {
                let m = matches[0];
                return Ok(Resolved {
                    model: m.clone(),
                    via: Via::BareId,
                    catalogued: true,
                });
            }
            n if n > 1 => {
                return Err(ResolveError::Ambiguous {
                    input: input.to_string(),
                    candidates: list(matches.iter().map(|m| m.reference().to_string())),
                })
            }
            _ => {}
        }
        if let Ok(r) = ModelRef::parse(input) {
            let ids: Vec<&str> = self.providers.keys().map(String::as_str).collect();
            let hint = clawgate_config::nearest(r.provider(), &ids)
                .map(|s| format!(" (did you mean \"{s}\"?)"))
                .unwrap_or_default();
            return Err(ResolveError::UnknownProvider {
                input: input.to_string(),
                provider: r.provider().to_string(),
                hint,
                known: list(self.providers.keys().cloned()),
            });
        }
        let mut names: Vec<String> = self.aliases.iter().map(|(a, _)| a.clone()).collect();
        names.extend(
            self.providers
                .values()
                .filter(|p| p.configured)
                .flat_map(|p| p.models.iter().map(|m| m.id.clone())),
        );
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let hint = clawgate_config::nearest(input, &refs)
            .map(|s| format!("; did you mean \"{s}\"?"))
            .unwrap_or_default();
        Err(ResolveError::NotFound {
            input: input.to_string(),
            hint,
        })
    }

    fn resolve_in(&self, p: &Provider, model: &str, via: Via) -> Result<Resolved, ResolveError> {
        if let Some(api) = &p.unsupported_api {
            return Err(ResolveError::UnsupportedApi {
                provider: p.id.clone(),
                api: api.clone(),
            });
        }
        if let Some(m) = p.model(model) {
            return Ok(Resolved {
                model: m.clone(),
                via,
                catalogued: true,
            });
        }
        if p.allows_uncatalogued() {
            return Ok(Resolved {
                model: Model::uncatalogued(p, model),
                via,
                catalogued: false,
            });
        }
        Err(ResolveError::UnknownModel {
            reference: format!("{}/{}", p.id, model),
            provider: p.id.clone(),
            known: list(p.models.iter().map(|m| m.id.clone())),
        })
    }

    /// The ref an alias points at (aliases are case-insensitive).
    pub fn alias_target(&self, alias: &str) -> Option<&ModelRef> {
        self.aliases
            .iter()
            .find(|(a, _)| a.eq_ignore_ascii_case(alias))
            .map(|(_, r)| r)
    }

    /// Aliases of a model, for listings.
    pub fn aliases_of(&self, r: &ModelRef) -> Vec<&str> {
        self.aliases
            .iter()
            .filter(|(_, t)| t.matches(r))
            .map(|(a, _)| a.as_str())
            .collect()
    }

    /// Models whose id equals `id`: configured providers first; the catalog
    /// only when no configured provider has it.
    fn bare_matches(&self, id: &str) -> Vec<&Model> {
        let find = |configured: bool| -> Vec<&Model> {
            self.providers
                .values()
                .filter(|p| p.configured == configured && p.api.is_some())
                .flat_map(|p| p.models.iter())
                .filter(|m| m.id.eq_ignore_ascii_case(id))
                .collect()
        };
        let configured = find(true);
        if configured.is_empty() {
            find(false)
        } else {
            configured
        }
    }

    /// The default model and the rule that chose it (REF-3). `None` means
    /// the gateway must fall back on discovered local servers.
    pub fn default_model(&self) -> Option<(ModelRef, DefaultRule)> {
        self.default_resolved()
            .map(|(r, rule)| (r.reference(), rule))
    }

    fn default_resolved(&self) -> Option<(Resolved, DefaultRule)> {
        let defaults = &self.config.agents.defaults;
        if let Some(primary) = defaults.model.as_ref().and_then(|m| m.primary.as_ref()) {
            if let Ok(r) = self.resolve(&primary.value) {
                return Some((r, DefaultRule::Configured));
            }
        }
        self.providers
            .values()
            .filter(|p| p.configured && p.api.is_some())
            .find_map(|p| p.models.first())
            .map(|m| {
                let resolved = Resolved {
                    model: m.clone(),
                    via: Via::Ref,
                    catalogued: true,
                };
                (resolved, DefaultRule::FirstConfiguredProvider)
            })
    }

    fn agent(&self, agent: Option<&str>) -> Result<Option<&AgentSettings>, ResolveError> {
        match agent {
            None | Some("default") | Some("openclaw") => Ok(None),
            Some(id) => self.config.agents.entries.get(id).map(Some).ok_or_else(|| {
                ResolveError::UnknownAgent(
                    id.to_string(),
                    list(self.config.agents.entries.keys().cloned()),
                )
            }),
        }
    }

    /// The data policy in force for an agent (SEC-6).
    pub fn data_policy(&self, agent: Option<&str>) -> DataPolicy {
        let entry = self.agent(agent).ok().flatten();
        entry
            .and_then(|a| a.data_policy)
            .or(self.config.agents.defaults.data_policy)
            .unwrap_or_default()
    }

    /// The tool allowlist in force for an agent (SEC-4) and the key that
    /// set it: the agent's own `tools`, else `agents.defaults.tools`.
    pub fn tool_policy(
        &self,
        agent: Option<&str>,
    ) -> Option<(&clawgate_config::ToolPolicy, String)> {
        let entry = self.agent(agent).ok().flatten();
        if let (Some(t), Some(id)) = (entry.and_then(|a| a.tools.as_ref()), agent) {
            return Some((t, format!("agents.entries.{id}.tools")));
        }
        self.config
            .agents
            .defaults
            .tools
            .as_ref()
            .map(|t| (t, "agents.defaults.tools".to_string()))
    }

    /// Under `local-only`, the key that set it (named in refusals); `None`
    /// when hosted endpoints are allowed.
    pub fn local_only_key(&self, agent: Option<&str>) -> Option<String> {
        if self.data_policy(agent) != DataPolicy::LocalOnly {
            return None;
        }
        let own = self.agent(agent).ok().flatten().and_then(|a| a.data_policy);
        Some(match (own, agent) {
            (Some(_), Some(id)) => format!("agents.entries.{id}.dataPolicy"),
            _ => "agents.defaults.dataPolicy".to_string(),
        })
    }

    /// Whether an agent's data policy lets a turn go to this provider
    /// (SEC-6): `local-only` keeps it on loopback and private endpoints.
    /// The one rule the runner and the `models status` report share; the
    /// error is the reason shown for a skipped or blocked candidate.
    pub fn allows(
        &self,
        agent: Option<&str>,
        provider: &crate::Provider,
    ) -> Result<(), &'static str> {
        if self.data_policy(agent) == DataPolicy::LocalOnly && !provider.endpoint.is_local() {
            return Err("dataPolicy local-only: endpoint is not local");
        }
        Ok(())
    }

    /// The candidate chain for a turn (FO-1): the requested model first,
    /// then the configured fallbacks (deduplicated, not filtered by the
    /// allowlist), then the primary if not already present. A user
    /// selection is strict: just the requested model.
    pub fn chain(
        &self,
        agent: Option<&str>,
        requested: Option<(&str, SelectionSource)>,
    ) -> Result<Chain, ResolveError> {
        let entry = self.agent(agent)?;
        let agent_name = agent.unwrap_or("default").to_string();
        // An explicit user selection is strict: nothing else to resolve.
        if let Some((input, SelectionSource::User)) = requested {
            return Ok(Chain {
                agent: agent_name,
                candidates: vec![Candidate {
                    resolved: self.resolve(input)?,
                    role: Role::Requested,
                }],
                strict: true,
            });
        }
        let defaults = &self.config.agents.defaults;
        // A per-agent model is strict unless it carries its own fallbacks.
        let (selection, agent_strict) = match entry.and_then(|e| e.model.as_ref()) {
            Some(sel) => (Some(sel), sel.fallbacks.is_none()),
            None => (defaults.model.as_ref(), false),
        };
        let primary = match selection.and_then(|s| s.primary.as_ref()) {
            Some(p) => Some(self.resolve(&p.value)?),
            None => self.default_resolved().map(|(r, _)| r),
        };
        let mut candidates: Vec<Candidate> = Vec::new();
        let push = |c: Candidate, list: &mut Vec<Candidate>| {
            let r = c.resolved.reference();
            if !list.iter().any(|x| x.resolved.reference().matches(&r)) {
                list.push(c);
            }
        };
        if let Some((input, _)) = requested {
            candidates.push(Candidate {
                resolved: self.resolve(input)?,
                role: Role::Requested,
            });
        } else if let Some(p) = primary.clone() {
            candidates.push(Candidate {
                resolved: p,
                role: Role::Primary,
            });
        }
        if !agent_strict {
            for (i, f) in selection
                .and_then(|s| s.fallbacks.as_ref())
                .into_iter()
                .flatten()
                .enumerate()
            {
                let resolved = self.resolve(&f.value)?;
                push(
                    Candidate {
                        resolved,
                        role: Role::Fallback(i),
                    },
                    &mut candidates,
                );
            }
        }
        if let Some(p) = primary {
            push(
                Candidate {
                    resolved: p,
                    role: Role::Primary,
                },
                &mut candidates,
            );
        }
        if candidates.is_empty() {
            return Err(ResolveError::NoDefault);
        }
        Ok(Chain {
            agent: agent_name,
            candidates,
            strict: agent_strict,
        })
    }

    /// Checks an explicit selection against `modelPolicy.allow` (REF-4). A
    /// per-agent list replaces the default one; an empty list allows all.
    pub fn check_policy(&self, agent: Option<&str>, r: &ModelRef) -> Result<(), PolicyError> {
        let entry = self.agent(agent).ok().flatten();
        let (allow, key) = match entry.and_then(|e| e.model_policy_allow.as_ref()) {
            Some(list) => (
                list,
                format!(
                    "agents.entries.{}.modelPolicy.allow",
                    agent.unwrap_or_default()
                ),
            ),
            None => match &self.config.agents.defaults.model_policy_allow {
                Some(list) => (list, "agents.defaults.modelPolicy.allow".to_string()),
                None => return Ok(()),
            },
        };
        if allow.is_empty() {
            return Ok(());
        }
        let full = r.key();
        let ok = allow.iter().any(|entry| {
            let e = entry.value.trim();
            if let Some(prefix) = e.strip_suffix('*') {
                return full.starts_with(&prefix.to_ascii_lowercase());
            }
            if let Ok(er) = ModelRef::parse(e) {
                if er.matches(r) {
                    return true;
                }
            }
            self.alias_target(e).is_some_and(|t| t.matches(r))
        });
        if ok {
            Ok(())
        } else {
            Err(PolicyError {
                reference: r.to_string(),
                key,
            })
        }
    }
}
