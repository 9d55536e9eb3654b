//! `clawgate sessions list | show | delete | export` (CTX-1): the sessions
//! the gateway and `infer --session` keep in the state directory.

use std::sync::Arc;

use clap::Subcommand;
use clawgate_store::{Entry, Session, SqliteStore, Store};
use serde_json::{json, Value};

use super::output::{emit, json, table};
use super::{exit, CliError, CliResult};

#[derive(Subcommand)]
pub enum SessionsCommand {
    /// List sessions, most recently used first.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a session's transcript (reasoning marked apart).
    Show {
        /// The session key.
        key: String,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a session and its transcript (its usage rows stay counted).
    Delete {
        /// The session key.
        key: String,
    },
    /// Print a session with its whole transcript as JSON.
    Export {
        /// The session key.
        key: String,
    },
}

fn open() -> Result<Arc<dyn Store>, CliError> {
    let path = super::state::sessions_file()
        .ok_or_else(|| CliError::msg(exit::FAILURE, "no HOME or CLAWGATE_STATE_DIR"))?;
    let store =
        SqliteStore::open(&path).map_err(|e| CliError::msg(exit::FAILURE, e.to_string()))?;
    Ok(Arc::new(store))
}

fn session_json(s: &Session) -> Value {
    json!({
        "key": s.key,
        "agent": s.agent,
        "model": s.model,
        "modelSource": s.model_source.as_str(),
        "turns": s.turns,
        "compactions": s.compactions,
        "createdMs": s.created_ms,
        "updatedMs": s.updated_ms,
    })
}

fn entry_json(e: &Entry) -> Value {
    json!({
        "id": e.id,
        "turn": e.turn,
        "kind": e.kind.as_str(),
        "text": e.text,
        "toolId": e.tool_id,
        "toolName": e.tool_name,
        "isError": e.is_error,
        "incomplete": e.incomplete,
        "replacesThrough": e.replaces_through,
        "atMs": e.at_ms,
    })
}

pub fn run(cmd: SessionsCommand) -> CliResult {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::new(exit::FAILURE, e))?;
    rt.block_on(async move {
        let store = open()?;
        let fail = |e: clawgate_store::StoreError| CliError::msg(exit::FAILURE, e.to_string());
        let find = |key: String| {
            let store = store.clone();
            async move {
                store
                    .get(&key)
                    .await
                    .map_err(fail)?
                    .ok_or_else(|| CliError::msg(exit::NOT_FOUND, format!("no session {key:?}")))
            }
        };
        match cmd {
            SessionsCommand::List { limit, json: as_json } => {
                let sessions = store.sessions(limit).await.map_err(fail)?;
                if as_json {
                    return json(&Value::Array(sessions.iter().map(session_json).collect()));
                }
                let rows: Vec<Vec<String>> = sessions
                    .iter()
                    .map(|s| {
                        vec![
                            s.key.clone(),
                            s.agent.clone().unwrap_or_else(|| "default".into()),
                            s.model
                                .as_ref()
                                .map(|m| format!("{m} ({})", s.model_source.as_str()))
                                .unwrap_or_else(|| "default".into()),
                            s.turns.to_string(),
                            s.compactions.to_string(),
                        ]
                    })
                    .collect();
                emit(&table(&["SESSION", "AGENT", "MODEL", "TURNS", "COMPACTIONS"], &rows))
            }
            SessionsCommand::Show { key, json: as_json } => {
                let s = find(key).await?;
                let entries = store.transcript(s.id).await.map_err(fail)?;
                if as_json {
                    return json(&json!({"session": session_json(&s), "entries": entries.iter().map(entry_json).collect::<Vec<_>>()}));
                }
                let mut out = String::new();
                for e in &entries {
                    let label = match (e.kind.as_str(), &e.tool_name) {
                        ("tool_call", Some(name)) => format!("tool_call {name}"),
                        (k, _) => k.to_string(),
                    };
                    let mark = if e.incomplete { " (incomplete)" } else { "" };
                    out.push_str(&format!(
                        "[{}] {}{mark}: {}\n",
                        e.turn,
                        super::output::printable(&label, false),
                        super::output::printable(&e.text, true)
                    ));
                }
                emit(&out)
            }
            SessionsCommand::Delete { key } => {
                if !store.delete(&key).await.map_err(fail)? {
                    return Err(CliError::msg(exit::NOT_FOUND, format!("no session {key:?}")));
                }
                emit(&format!(
                    "deleted session {}\n",
                    super::output::printable(&key, false)
                ))
            }
            SessionsCommand::Export { key } => {
                let s = find(key).await?;
                let entries = store.transcript(s.id).await.map_err(fail)?;
                json(&json!({"session": session_json(&s), "entries": entries.iter().map(entry_json).collect::<Vec<_>>()}))
            }
        }
    })
}
