//! The turn as a library (GW-2, FO-1, REF-4): what a request or a command
//! line asks for becomes a [`Target`] (an agent, an explicit selection or
//! both), and [`route`] resolves its candidate chain, checks the selection
//! against `modelPolicy.allow` and runs it through the failover runner.
//! Every surface — the three HTTP protocols and `clawgate infer` — calls
//! this one step and maps [`TurnError`] to its own error shape; whatever
//! follows an answer (metrics, usage, history) attaches as a
//! [`clawgate_router::Observer`]. Session mode ([`session`]) builds on it:
//! the stored history, the context preflight ([`context`]) and compaction
//! ([`compact`]).

pub mod audit;
pub mod check;
pub mod commands;
pub mod compact;
pub mod context;
pub mod doctor;
pub mod session;
pub mod status;
pub mod transcript;

use clawgate_catalog::{Chain, PolicyError, Registry, SelectionSource};
use clawgate_router::{Routed, RunError, Runner, Turn};
use clawgate_wire::ChatRequest;

/// The agent a turn addresses and the model it explicitly selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `None`: the default agent.
    pub agent: Option<String>,
    /// An explicit selection and where it came from: a user's choice is
    /// strict (no fallback), a configured one (the routing header on an
    /// agent target) uses the chain.
    pub requested: Option<(String, SelectionSource)>,
}

/// Why a turn did not start or did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    /// The model or agent does not resolve.
    #[error("{reason}")]
    UnknownTarget { model: String, reason: String },
    /// The selection is outside `modelPolicy.allow`.
    #[error("{0}")]
    Forbidden(#[from] PolicyError),
    /// Every candidate failed, or one failed in a way another would repeat
    /// (boxed: it carries the attempt list).
    #[error("{0}")]
    Run(Box<RunError>),
    /// The session store failed.
    #[error("{0}")]
    Store(#[from] clawgate_store::StoreError),
    /// The conversation does not fit the model's window and compaction
    /// could not free enough room (CTX-2); the message says what to do.
    #[error("{0}")]
    ContextFull(String),
    /// A compaction the user asked for could not be made.
    #[error("{0}")]
    Compaction(String),
    /// The request forces a tool the agent's `tools` policy keeps out.
    #[error("{0}")]
    ToolNotAllowed(String),
}

impl From<RunError> for TurnError {
    fn from(e: RunError) -> Self {
        Self::Run(Box::new(e))
    }
}

impl Target {
    /// From an API request's `model` (GW-2): `default` / `openclaw` → the
    /// default agent; `agent/<id>` / `openclaw/<id>` → that agent, with
    /// `x-clawgate-model` (`override_model`) selecting its backend model;
    /// anything else is an explicit, strict selection.
    pub fn from_api(
        reg: &Registry,
        model: &str,
        override_model: Option<&str>,
    ) -> Result<Self, TurnError> {
        let agent = match model {
            "default" | "openclaw" => Some(None),
            m => m
                .strip_prefix("agent/")
                .or_else(|| m.strip_prefix("openclaw/"))
                .map(|id| Some(id.to_string())),
        };
        match agent {
            Some(agent) => {
                if let Some(id) = &agent {
                    if !reg.config.agents.entries.contains_key(id) {
                        return Err(TurnError::UnknownTarget {
                            model: model.to_string(),
                            reason: format!("no agent \"{id}\""),
                        });
                    }
                }
                let requested =
                    override_model.map(|m| (m.to_string(), SelectionSource::Configured));
                Ok(Self { agent, requested })
            }
            // Resolved (once) when the chain is built.
            None => Ok(Self {
                agent: None,
                requested: Some((model.to_string(), SelectionSource::User)),
            }),
        }
    }

    /// From the command line: `--agent` and a strict `--model`.
    pub fn from_cli(agent: Option<&str>, model: Option<&str>) -> Self {
        Self {
            agent: agent.map(str::to_string),
            requested: model.map(|m| (m.to_string(), SelectionSource::User)),
        }
    }
}

/// One turn to run.
pub struct TurnInput<'a> {
    pub request: ChatRequest,
    /// Session key for sticky credentials (and, next, the stored history).
    pub session: Option<String>,
    /// User-facing notices while routing (the overload notice).
    pub on_notice: Option<&'a (dyn Fn(&str) + Sync)>,
    /// Credential pins from a session store.
    pub pinned: Vec<(String, String)>,
}

/// Resolves the target's chain and checks an explicit selection (from the
/// request or the routing header alike) against `modelPolicy.allow`.
/// Configured fallbacks are not policy-checked (FO-1).
pub fn chain_for(registry: &Registry, target: &Target) -> Result<Chain, TurnError> {
    let agent = target.agent.as_deref();
    let chain = registry
        .chain(
            agent,
            target.requested.as_ref().map(|(r, s)| (r.as_str(), *s)),
        )
        .map_err(|e| TurnError::UnknownTarget {
            model: target
                .requested
                .as_ref()
                .map(|(r, _)| r.clone())
                .or_else(|| target.agent.as_ref().map(|a| format!("agent/{a}")))
                .unwrap_or_else(|| "default".to_string()),
            reason: e.to_string(),
        })?;
    if target.requested.is_some() {
        if let Some(c) = chain.candidates.first() {
            registry.check_policy(agent, &c.resolved.reference())?;
        }
    }
    Ok(chain)
}

/// Applies the agent's tool allowlist (SEC-4) to the tools a client sent:
/// tools it keeps out are removed before any model sees them; forcing one
/// (`tool_choice`) is an error naming the key. Every surface and the
/// session path come through here.
pub fn restrict_tools(
    registry: &Registry,
    agent: Option<&str>,
    mut request: ChatRequest,
) -> Result<ChatRequest, TurnError> {
    let Some((policy, key)) = registry.tool_policy(agent) else {
        return Ok(request);
    };
    if request.tools.is_empty() {
        return Ok(request);
    }
    let who = agent.unwrap_or("default");
    if let Some(clawgate_wire::ToolChoice::Named(name)) = &request.tool_choice {
        if !policy.allows(name) {
            return Err(TurnError::ToolNotAllowed(format!(
                "tool \"{name}\" is not allowed for agent {who} ({key}.{})",
                &policy.reason(name)["tools.".len()..]
            )));
        }
    }
    let before = request.tools.len();
    let mut removed = Vec::new();
    request.tools.retain(|t| {
        let ok = policy.allows(&t.name);
        if !ok && removed.len() < 32 {
            removed.push(t.name.clone());
        }
        ok
    });
    if request.tools.len() < before {
        tracing::info!(agent = who, removed = %removed.join(", "), count = before - request.tools.len(), "tools outside the agent's allowlist removed");
        if request.tools.is_empty() {
            if request.tool_choice == Some(clawgate_wire::ToolChoice::Required) {
                return Err(TurnError::ToolNotAllowed(format!(
                    "tool_choice is \"required\" but none of the tools sent is allowed for agent {who} ({key})"
                )));
            }
            request.tool_choice = None;
        }
    }
    Ok(request)
}

/// Runs a turn on a resolved chain (FO-1..8).
pub async fn run_chain(
    runner: &Runner,
    registry: &Registry,
    chain: &Chain,
    agent: Option<&str>,
    input: TurnInput<'_>,
) -> Result<Routed, TurnError> {
    let request = restrict_tools(registry, agent, input.request)?;
    let turn = Turn {
        registry,
        chain,
        request,
        session: input.session,
        pinned: input.pinned,
        agent,
        on_notice: input.on_notice,
    };
    Ok(runner.run(turn).await?)
}

/// Resolves the target's chain, checks the selection ([`chain_for`]) and
/// routes the turn: the stateless path every surface shares.
pub async fn route(
    runner: &Runner,
    registry: &Registry,
    target: &Target,
    input: TurnInput<'_>,
) -> Result<Routed, TurnError> {
    let chain = chain_for(registry, target)?;
    run_chain(runner, registry, &chain, target.agent.as_deref(), input).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn reg() -> Registry {
        clawgate_catalog::load_text(
            std::path::Path::new("t.json5"),
            r#"{ agents: { entries: { coder: {} } }, models: { providers: { b: { baseUrl: "http://127.0.0.1:1/v1", models: [{ id: "m" }] } } } }"#,
            &|_| None,
        )
        .unwrap()
        .registry
    }

    #[test]
    fn gw_2_api_targets() {
        let r = reg();
        let t = |m: &str, h: Option<&str>| Target::from_api(&r, m, h);
        assert_eq!(t("default", None).unwrap(), Target::from_cli(None, None));
        assert_eq!(t("openclaw", None).unwrap(), Target::from_cli(None, None));
        let coder = t("agent/coder", Some("b/m")).unwrap();
        assert_eq!(coder.agent.as_deref(), Some("coder"));
        assert_eq!(
            coder.requested,
            Some(("b/m".to_string(), SelectionSource::Configured))
        );
        assert_eq!(
            t("openclaw/coder", None).unwrap().agent.as_deref(),
            Some("coder")
        );
        assert_eq!(t("b/m", None).unwrap(), Target::from_cli(None, Some("b/m")));
        assert!(matches!(
            t("agent/nobody", None),
            Err(TurnError::UnknownTarget { reason, .. }) if reason == "no agent \"nobody\""
        ));
    }
}
