//! Chat commands (CTX-6) in any session surface: a session turn whose new
//! message is `/model …`, `/status`, `/compact [instructions]`, `/new`,
//! `/reset` or `/usage` is answered by the gateway itself, in the
//! protocol's own answer shape; nothing reaches a model except the
//! summarizer of `/compact`. A model chosen with `/model` goes through the
//! same `modelPolicy.allow` check as any other selection.

use clawgate_catalog::Registry;
use clawgate_router::cooldown::CooldownKey;
use clawgate_router::{Routed, Runner, Served};
use clawgate_store::{GroupBy, ModelSource, UsageQuery};
use clawgate_wire::{Event, Part, Role, StopReason};

use crate::context::Window;
use crate::session::SessionTurn;
use crate::{Target, TurnError};

/// A chat command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `/model` and `/model list`: the current model and the numbered list.
    ModelList,
    /// `/model <ref|alias|#>`.
    ModelSet(String),
    /// `/model default`.
    ModelDefault,
    /// `/model status`.
    ModelStatus,
    Status,
    /// `/compact [instructions]`.
    Compact(Option<String>),
    New,
    Reset,
    Usage,
}

impl Command {
    /// The command a message is, if it is one. Only the listed words count:
    /// `/etc/hosts is broken` is a question, not a command.
    pub fn parse(text: &str) -> Option<Self> {
        let t = text.trim();
        let rest = t.strip_prefix('/')?;
        let (word, arg) = match rest.split_once(char::is_whitespace) {
            Some((w, a)) => (w, a.trim()),
            None => (rest, ""),
        };
        let arg = (!arg.is_empty()).then(|| arg.to_string());
        Some(match (word, arg.as_deref()) {
            ("model", None | Some("list")) => Command::ModelList,
            ("model", Some("default")) => Command::ModelDefault,
            ("model", Some("status")) => Command::ModelStatus,
            ("model", Some(m)) => Command::ModelSet(m.to_string()),
            ("status", None) => Command::Status,
            ("compact", _) => Command::Compact(arg),
            ("new", None) => Command::New,
            ("reset", None) => Command::Reset,
            ("usage", None) => Command::Usage,
            _ => return None,
        })
    }
}

/// The command in a turn's new messages: the last one is the user's and
/// holds only the command text.
pub fn find(messages: &[clawgate_wire::Message]) -> Option<Command> {
    let last = messages.last()?;
    if last.role != Role::User {
        return None;
    }
    match last.parts.as_slice() {
        [Part::Text(t)] => Command::parse(t),
        _ => None,
    }
}

/// What answered: the gateway itself.
pub fn served() -> Served {
    Served {
        reference: "clawgate/command".into(),
        provider: "clawgate".into(),
        model: "command".into(),
        host: "local".into(),
        api: "clawgate".into(),
        profile: String::new(),
        cost: Default::default(),
        capped: None,
    }
}

/// A command's reply as an answer every surface renders.
pub fn reply(text: String) -> Routed {
    Routed::local(
        served(),
        vec![Event::TextDelta(text), Event::Stop(StopReason::EndTurn)],
    )
}

/// The models `/model` offers for an agent: configured and referenced
/// ones that `modelPolicy.allow` lets it select, in config order.
pub fn choices(registry: &Registry, agent: Option<&str>) -> Vec<String> {
    let referenced = registry.referenced();
    let mut out: Vec<String> = Vec::new();
    for (p, m) in registry.models() {
        let r = m.reference();
        let listed = p.configured || referenced.iter().any(|x| x.matches(&r));
        if listed && registry.check_policy(agent, &r).is_ok() {
            let s = r.to_string();
            if !out.contains(&s) {
                out.push(s);
            }
        }
    }
    out
}

fn tokens(n: u64) -> String {
    match n {
        0..=9_999 => n.to_string(),
        10_000..=999_999 => format!("{:.1}k", n as f64 / 1_000.0),
        _ => format!("{:.2}M", n as f64 / 1_000_000.0),
    }
}

/// Runs a command for the session and returns its reply text. Errors are
/// for what fails underneath (the store, the summarizer); a wrong argument
/// is a reply that says so.
pub async fn run(
    command: Command,
    turn: &mut SessionTurn,
    runner: &Runner,
    registry: &Registry,
    target: &Target,
    now_ms: i64,
) -> Result<String, TurnError> {
    let agent = target.agent.as_deref();
    let selected = || match (&turn.session.model, turn.session.model_source) {
        (Some(m), ModelSource::User) => format!("{m} (your choice; strict, no fallback)"),
        _ => "the agent's default".to_string(),
    };
    match command {
        Command::ModelList => {
            let list = choices(registry, agent);
            let current = turn
                .session
                .model
                .clone()
                .filter(|_| turn.session.model_source == ModelSource::User);
            let mut s = format!("Model: {}\n", selected());
            if let Ok(chain) = registry.chain(agent, None) {
                let refs: Vec<String> = chain
                    .candidates
                    .iter()
                    .map(|c| c.resolved.reference().to_string())
                    .collect();
                s.push_str(&format!("Default chain: {}\n", refs.join(" → ")));
            }
            s.push_str("Choose with /model <ref|alias|#>, back with /model default:\n");
            for (i, r) in list.iter().enumerate() {
                let mark = if current.as_deref() == Some(r.as_str()) {
                    " *"
                } else {
                    ""
                };
                let aliases = registry
                    .resolve(r)
                    .map(|x| registry.aliases_of(&x.reference()).join(", "))
                    .unwrap_or_default();
                if aliases.is_empty() {
                    s.push_str(&format!("  {}. {r}{mark}\n", i + 1));
                } else {
                    s.push_str(&format!("  {}. {r} ({aliases}){mark}\n", i + 1));
                }
            }
            Ok(s.trim_end().to_string())
        }
        Command::ModelSet(arg) => {
            let list = choices(registry, agent);
            let wanted = match arg.parse::<usize>() {
                Ok(n) => match n.checked_sub(1).and_then(|i| list.get(i)) {
                    Some(r) => r.clone(),
                    None => {
                        return Ok(format!(
                            "There is no model #{n}: /model list shows {} models.",
                            list.len()
                        ))
                    }
                },
                Err(_) => arg,
            };
            let resolved = match registry.resolve(&wanted) {
                Ok(r) => r,
                Err(e) => return Ok(format!("{wanted}: {e}. /model list shows the choices.")),
            };
            let r = resolved.reference();
            if let Err(p) = registry.check_policy(agent, &r) {
                return Ok(format!("{p}"));
            }
            let reference = r.to_string();
            turn.select(Some(&reference), ModelSource::User, now_ms)
                .await?;
            let window = Window::of(registry, runner, agent, &resolved);
            Ok(format!(
                "Model set to {reference} for this session ({}-token window, {}). It is strict: no fallback. /model default goes back.",
                window.tokens, window.source
            ))
        }
        Command::ModelDefault => {
            turn.select(None, ModelSource::Default, now_ms).await?;
            let chain = registry
                .chain(agent, None)
                .map(|c| {
                    c.candidates
                        .iter()
                        .map(|x| x.resolved.reference().to_string())
                        .collect::<Vec<_>>()
                        .join(" → ")
                })
                .unwrap_or_else(|e| e.to_string());
            Ok(format!("Back to the default: {chain}."))
        }
        Command::ModelStatus => {
            let chain = crate::chain_for(registry, target)?;
            let mut s = format!("Model: {}\n", selected());
            let saved = runner.export_cooldowns(now_ms.max(0) as u64);
            for c in &chain.candidates {
                let r = c.resolved.reference().to_string();
                let w = Window::of(registry, runner, agent, &c.resolved);
                let allowed = registry
                    .provider(&c.resolved.model.provider)
                    .map(|p| registry.allows(agent, p));
                let mut line = format!("  {r}: {}-token window ({})", w.tokens, w.source);
                if let Some(Err(why)) = allowed {
                    line.push_str(&format!(", skipped: {why}"));
                }
                let provider = c.resolved.model.provider.as_str();
                let cooling: Vec<String> = saved
                    .iter()
                    .filter(|x| match &x.key {
                        CooldownKey::Credential { provider: p, .. } => p == provider,
                        CooldownKey::Model { provider: p, model } => {
                            p == provider && *model == c.resolved.model.id
                        }
                    })
                    .map(|x| {
                        format!(
                            "{} cooling down ({}) for {} s",
                            x.key.describe(),
                            x.class.as_str(),
                            x.until_unix_ms
                                .saturating_sub(now_ms.max(0) as u64)
                                .div_ceil(1000)
                        )
                    })
                    .collect();
                if !cooling.is_empty() {
                    line.push_str(&format!(", {}", cooling.join(", ")));
                }
                s.push_str(&line);
                s.push('\n');
            }
            Ok(s.trim_end().to_string())
        }
        Command::Status => {
            let chain = crate::chain_for(registry, target)?;
            let mut s = format!(
                "Session {}{}\nModel: {}\nTurns: {}, compactions: {}\n",
                turn.session.key,
                agent.map(|a| format!(" (agent {a})")).unwrap_or_default(),
                selected(),
                turn.session.turns,
                turn.session.compactions,
            );
            if let Some(c) = chain.candidates.first() {
                let w = Window::of(registry, runner, agent, &c.resolved);
                turn.learn_tokens(&w.reference).await?;
                let settings = crate::session::CompactionSettings::of(registry, agent);
                let reserve = crate::context::Reserve::of(
                    &w,
                    None,
                    c.resolved.model.max_tokens,
                    settings.reserve,
                );
                let e = turn.context_estimate();
                s.push_str(&format!(
                    "Context: {e} of {}'s {}-token window ({}); {} kept free for the answer ({}), so the prompt has {}\n",
                    w.reference,
                    w.tokens,
                    w.source,
                    reserve.tokens,
                    reserve.why,
                    w.tokens.saturating_sub(reserve.tokens)
                ));
            }
            s.push_str(&usage_line(turn, now_ms).await?);
            Ok(s)
        }
        Command::Compact(instructions) => {
            match turn
                .compact_now(runner, registry, target, instructions.as_deref(), now_ms)
                .await?
            {
                Some(c) => Ok(format!(
                    "Compacted {} earlier entries into a summary with {}; the full history stays stored. Context now: {}.",
                    c.entries,
                    c.model,
                    turn.context_estimate()
                )),
                None => Ok("Nothing to compact yet: the history is all recent.".to_string()),
            }
        }
        Command::New => {
            turn.reset(false, now_ms).await?;
            Ok("New conversation: the history starts empty (the old one stays stored). The model choice is kept.".to_string())
        }
        Command::Reset => {
            turn.reset(true, now_ms).await?;
            Ok("Reset: the history starts empty (the old one stays stored) and the model is back to the default.".to_string())
        }
        Command::Usage => usage_line(turn, now_ms).await,
    }
}

/// This session's usage totals.
async fn usage_line(turn: &SessionTurn, _now_ms: i64) -> Result<String, TurnError> {
    let rows = turn
        .store()
        .usage(UsageQuery {
            since_ms: 0,
            by: GroupBy::Model,
            session: None,
            session_id: Some(turn.session.id),
        })
        .await?;
    if rows.is_empty() {
        return Ok("Usage: no model calls yet in this session.".to_string());
    }
    let mut s = String::from("Usage in this session:\n");
    for r in &rows {
        s.push_str(&format!(
            "  {}: {} calls, {} in ({} cached), {} out, ${:.4}{}\n",
            r.group,
            r.calls,
            tokens(r.input),
            tokens(r.cache_read),
            tokens(r.output),
            r.cost_usd,
            if r.estimated_calls > 0 {
                format!(
                    ", {} calls estimated (the server reported no usage)",
                    r.estimated_calls
                )
            } else {
                String::new()
            }
        ));
    }
    Ok(s.trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctx_6_commands_parse_and_questions_do_not() {
        let p = Command::parse;
        assert_eq!(p("/model"), Some(Command::ModelList));
        assert_eq!(p(" /model list "), Some(Command::ModelList));
        assert_eq!(p("/model default"), Some(Command::ModelDefault));
        assert_eq!(p("/model status"), Some(Command::ModelStatus));
        assert_eq!(p("/model 2"), Some(Command::ModelSet("2".into())));
        assert_eq!(
            p("/model local/qwen"),
            Some(Command::ModelSet("local/qwen".into()))
        );
        assert_eq!(p("/status"), Some(Command::Status));
        assert_eq!(p("/compact"), Some(Command::Compact(None)));
        assert_eq!(
            p("/compact keep the API names"),
            Some(Command::Compact(Some("keep the API names".into())))
        );
        assert_eq!(p("/new"), Some(Command::New));
        assert_eq!(p("/reset"), Some(Command::Reset));
        assert_eq!(p("/usage"), Some(Command::Usage));
        assert_eq!(p("/etc/hosts is broken"), None);
        assert_eq!(p("/status of the build?"), None);
        assert_eq!(p("what does /model do?"), None);
        assert_eq!(p("/"), None);
    }
}
