//! The value a key path takes when the file does not write it, for
//! `config get` (CFG-7): the effective value the registry uses, with the
//! rule that produced it.

use clawgate_config::path::Segment;
use serde_json::{json, Value};

use crate::Registry;

/// The effective value of a path the file leaves out, and why it is that.
#[derive(Debug, Clone, PartialEq)]
pub struct Default {
    pub value: Value,
    pub rule: &'static str,
}

fn key(s: &Segment) -> Option<&str> {
    match s {
        Segment::Key(k) => Some(k),
        Segment::Index(_) => None,
    }
}

/// The default of `path`, when the path is one clawgate fills in.
pub fn default_for(reg: &Registry, path: &[Segment]) -> Option<Default> {
    let keys: Vec<Option<&str>> = path.iter().map(key).collect();
    let d = |value: Value, rule: &'static str| Some(Default { value, rule });
    let g = &reg.config.gateway;
    match keys.as_slice() {
        [Some("gateway"), Some("port")] => d(json!(g.port), "the default port"),
        [Some("gateway"), Some("bind")] => d(json!(g.bind), "loopback unless written"),
        [Some("gateway"), Some("auth"), Some("mode")] => {
            let (mode, rule) = match (g.auth_mode, g.token.is_some(), g.password.is_some()) {
                (Some(m), ..) => (m, "as written"),
                (None, true, _) => (
                    clawgate_config::AuthMode::Token,
                    "token, because gateway.auth.token is set",
                ),
                (None, false, true) => (
                    clawgate_config::AuthMode::Password,
                    "password, because gateway.auth.password is set",
                ),
                (None, false, false) => (
                    clawgate_config::AuthMode::None,
                    "none: no token or password is set (loopback only)",
                ),
            };
            d(json!(mode.as_str()), rule)
        }
        [Some("models"), Some("mode")] => d(
            json!(reg.config.models.mode.as_str()),
            "merge unless written",
        ),
        [Some("agents"), Some("defaults"), Some("model"), Some("primary")]
        | [Some("agents"), Some("defaults"), Some("model")] => {
            let (r, rule) = reg.default_model()?;
            d(
                json!(r.to_string()),
                match rule {
                    crate::DefaultRule::Configured => "as configured",
                    crate::DefaultRule::FirstConfiguredProvider => {
                        "the first model of the first configured provider (local-first)"
                    }
                },
            )
        }
        [Some("models"), Some("providers"), Some(id), Some(field)] => {
            let p = reg.provider(id)?;
            match *field {
                "baseUrl" => d(json!(p.base_url), "the built-in catalog's endpoint"),
                "api" => d(json!(p.api?.as_str()), "the built-in catalog's protocol"),
                _ => None,
            }
        }
        [Some("models"), Some("providers"), Some(id), Some("models"), None, Some(field)] => {
            let Segment::Index(i) = path[4] else {
                return None;
            };
            // The row as written names the model; the registry has it with
            // every default applied.
            let row = reg
                .config
                .models
                .providers
                .get(*id)?
                .models
                .as_ref()?
                .get(i)?;
            let p = reg.provider(id)?;
            let m = p.models.iter().find(|m| m.id == row.id)?;
            match *field {
                "name" => d(json!(m.name), "the model id"),
                "maxTokens" => d(json!(m.max_tokens), "8192 unless written (CFG-4)"),
                "contextWindow" => {
                    let (w, src) = m.effective_context();
                    d(
                        json!(w),
                        match src {
                            crate::ContextSource::Catalog => "the built-in catalog's window",
                            crate::ContextSource::Assumed => {
                                "assumed (CFG-4): no contextWindow written and none reported by the server"
                            }
                            _ => "from contextTokens",
                        },
                    )
                }
                "input" => d(
                    json!(m.input.iter().map(|i| i.as_str()).collect::<Vec<_>>()),
                    "text only unless written",
                ),
                "reasoning" => d(json!(m.reasoning), "false unless written"),
                _ => None,
            }
        }
        _ => None,
    }
}
