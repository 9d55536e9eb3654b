//! State kept between runs: cooldowns, so that one `clawgate infer` skips
//! a provider another one just found dead, and `models status` can show
//! them. Stored as JSON in `$CLAWGATE_STATE_DIR` or `~/.clawgate/state`.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use clawgate_router::cooldown::{CooldownKey, SavedCooldown};
use clawgate_router::ErrorClass;
use serde_json::{json, Value};

pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The session database: `sessions.sqlite3` in the state directory.
pub fn sessions_file() -> Option<PathBuf> {
    dir().map(|d| d.join("sessions.sqlite3"))
}

/// The line history of `clawgate chat`.
pub fn chat_history_file() -> Option<PathBuf> {
    dir().map(|d| d.join("chat-history.txt"))
}

/// The local-server supervisor of this process, writing down what it
/// starts in the state directory (so that a successor of a killed
/// gateway takes it back).
pub fn supervisor(client: clawgate_wire::Client) -> clawgate_local::Supervisor {
    let sup = clawgate_local::Supervisor::new(client);
    match dir() {
        Some(d) => sup.with_ledger(&d),
        None => sup,
    }
}

/// The state directory (`$CLAWGATE_STATE_DIR` or `~/.clawgate/state`).
pub fn state_dir() -> Option<PathBuf> {
    dir()
}

fn dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("CLAWGATE_STATE_DIR") {
        return Some(PathBuf::from(d));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".clawgate").join("state"))
}

fn file() -> Option<PathBuf> {
    dir().map(|d| d.join("cooldowns.json"))
}

fn key_json(k: &CooldownKey) -> Value {
    match k {
        CooldownKey::Credential { provider, profile } => {
            json!({"kind": "credential", "provider": provider, "profile": profile})
        }
        CooldownKey::Model { provider, model } => {
            json!({"kind": "model", "provider": provider, "model": model})
        }
    }
}

fn key_from(v: &Value) -> Option<CooldownKey> {
    let provider = v.get("provider")?.as_str()?.to_string();
    match v.get("kind")?.as_str()? {
        "credential" => Some(CooldownKey::Credential {
            provider,
            profile: v.get("profile")?.as_str()?.to_string(),
        }),
        "model" => Some(CooldownKey::Model {
            provider,
            model: v.get("model")?.as_str()?.to_string(),
        }),
        _ => None,
    }
}

/// Loads saved cooldowns; a missing or unreadable file is an empty state.
pub fn load_cooldowns() -> Vec<SavedCooldown> {
    let Some(text) = file().and_then(|f| std::fs::read_to_string(f).ok()) else {
        return Vec::new();
    };
    let Ok(Value::Array(items)) = serde_json::from_str::<Value>(&text) else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|i| {
            Some(SavedCooldown {
                key: key_from(i.get("key")?)?,
                until_unix_ms: i.get("untilUnixMs")?.as_u64()?,
                class: ErrorClass::parse(i.get("class")?.as_str()?)?,
                failures: i.get("failures")?.as_u64()? as u32,
            })
        })
        .collect()
}

/// Saves cooldowns; failing to save only loses this optimisation.
pub fn save_cooldowns(saved: &[SavedCooldown]) {
    let (Some(dir), Some(file)) = (dir(), file()) else {
        return;
    };
    let items: Vec<Value> = saved
        .iter()
        .map(|s| {
            json!({
                "key": key_json(&s.key),
                "untilUnixMs": s.until_unix_ms,
                "class": s.class.as_str(),
                "failures": s.failures,
            })
        })
        .collect();
    // Private like the rest of the state: 0700 folder, 0600 file.
    if clawgate_store::private::private_dir(&dir).is_err() {
        return;
    }
    let tmp = dir.join("cooldowns.json.tmp");
    if clawgate_store::private::private_file(&tmp).is_err() {
        return;
    }
    if std::fs::write(&tmp, Value::Array(items).to_string()).is_ok() {
        let _ = std::fs::rename(&tmp, &file);
    }
}
