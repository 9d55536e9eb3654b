//! `clawgate config validate | get | set` (CFG-7).

use clap::Subcommand;
use clawgate_config::edit::{self, Document};
use clawgate_config::{path, tree, ConfigError, Diagnostic};
use serde_json::json;

use super::output::{emit, json};
use super::{exit, CliError, CliResult, Ctx};

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Check the config file: syntax, types, keys, refs, aliases, and
    /// what `clawgate gateway` checks at start-up (auth secrets, bind).
    Validate {
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the value at a key path, with secrets redacted.
    Get {
        /// Key path, e.g. models.providers.lmstudio.baseUrl or
        /// agents.defaults.models["lmstudio/m"].alias
        path: String,
        /// Print the value as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Set the value at a key path (JSON5), keeping comments and a backup.
    Set {
        /// Key path, as for `config get`.
        path: String,
        /// The new value as JSON5: 196608, "text", true, { alias: "X" };
        /// anything else that does not parse (a URL, a word) is a string.
        value: String,
    },
}

pub fn run(ctx: &Ctx, cmd: ConfigCommand) -> CliResult {
    match cmd {
        ConfigCommand::Validate { json } => validate(ctx, json),
        ConfigCommand::Get { path, json } => get(ctx, &path, json),
        ConfigCommand::Set { path, value } => set(ctx, &path, &value),
    }
}

fn diag_json(d: &Diagnostic) -> serde_json::Value {
    json!({
        "file": d.file.display().to_string(),
        "line": d.line,
        "column": d.column,
        "path": d.path,
        "message": d.message,
    })
}

fn validate(ctx: &Ctx, as_json: bool) -> CliResult {
    let file = ctx
        .location
        .file()
        .map(|f| f.display().to_string())
        .unwrap_or_else(|| "(none)".into());
    match clawgate_catalog::load(ctx.location.file(), &Ctx::env) {
        Ok(snap) => {
            let reg = &snap.registry;
            // The same checks `clawgate gateway` makes before it binds.
            if let Err(e) = clawgate_api::startup(&reg.config.gateway, None, None) {
                let message = format!("gateway start-up: {e}");
                if as_json {
                    json(&json!({
                        "ok": false,
                        "file": file,
                        "errors": [{"file": file, "line": null, "column": null, "path": "gateway", "message": message}],
                        "warnings": snap.warnings.iter().map(diag_json).collect::<Vec<_>>(),
                    }))?;
                } else {
                    for w in &snap.warnings {
                        eprintln!("{w}");
                    }
                    eprintln!("{file}: {message}");
                }
                return Err(CliError::msg(
                    exit::INVALID_CONFIG,
                    format!("{file} is invalid (1 error): the gateway would refuse to start"),
                ));
            }
            let providers = reg.providers.len();
            let configured = reg.providers.values().filter(|p| p.configured).count();
            let models = reg.models().count();
            let from_catalog = reg
                .models()
                .filter(|(_, m)| m.origin == clawgate_catalog::Origin::Catalog)
                .count();
            if as_json {
                json(&json!({
                    "ok": true,
                    "file": file,
                    "source": ctx.location.describe(),
                    "providers": providers,
                    "configuredProviders": configured,
                    "models": models,
                    "catalogModels": from_catalog,
                    "warnings": snap.warnings.iter().map(diag_json).collect::<Vec<_>>(),
                    "errors": [],
                }))
            } else {
                for w in &snap.warnings {
                    eprintln!("{w}");
                }
                emit(&format!(
                    "ok: {} — {} ({configured} configured), {} ({} from the built-in catalog), {}\n",
                    ctx.location.describe(),
                    plural(providers, "provider"),
                    plural(models, "model"),
                    from_catalog,
                    plural(snap.warnings.len(), "warning"),
                ))
            }
        }
        Err(ConfigError::Invalid(errors)) => {
            if as_json {
                json(&json!({
                    "ok": false,
                    "file": file,
                    "errors": errors.iter().map(diag_json).collect::<Vec<_>>(),
                    "warnings": [],
                }))?;
            } else {
                for e in &errors {
                    eprintln!("{e}");
                }
            }
            Err(CliError::msg(
                exit::INVALID_CONFIG,
                format!("{file} is invalid ({})", plural(errors.len(), "error")),
            ))
        }
        Err(e) => Err(e.into()),
    }
}

/// "1 error", "2 errors".
pub fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn parse_path(key: &str) -> Result<Vec<path::Segment>, CliError> {
    path::parse(key).map_err(|reason| {
        CliError::new(
            exit::USAGE,
            ConfigError::BadPath {
                path: key.to_string(),
                reason,
            },
        )
    })
}

fn get(ctx: &Ctx, key: &str, as_json: bool) -> CliResult {
    let segments = parse_path(key)?;
    let written = match ctx.location.file() {
        Some(file) => edit::get_redacted_node(&read(file)?, file, &segments),
        None => Err(ConfigError::PathNotFound(key.to_string())),
    };
    let node = match written {
        Ok(node) => node,
        // Not in the file: the value clawgate uses, said to be a default.
        Err(ConfigError::PathNotFound(p)) => {
            let snap = clawgate_catalog::load(ctx.location.file(), &Ctx::env)?;
            let Some(d) = clawgate_catalog::defaults::default_for(&snap.registry, &segments) else {
                return Err(ConfigError::PathNotFound(p).into());
            };
            eprintln!(
                "{key} is not written in {}; default: {}",
                ctx.location.describe(),
                d.rule
            );
            return match (&d.value, as_json) {
                (serde_json::Value::String(s), false) => emit(&format!("{s}\n")),
                (v, _) => emit(&format!("{v}\n")),
            };
        }
        Err(e) => return Err(e.into()),
    };
    match (&node.kind, as_json) {
        (tree::Kind::String(s), false) => emit(&format!("{s}\n")),
        _ => {
            let text =
                serde_json::to_string_pretty(&node).map_err(|e| CliError::new(exit::FAILURE, e))?;
            emit(&format!("{text}\n"))
        }
    }
}

pub fn read(file: &std::path::Path) -> Result<String, CliError> {
    clawgate_config::read::read_regular(file, clawgate_config::read::MAX_CONFIG_FILE).map_err(
        |error| {
            CliError::from(ConfigError::Read {
                path: file.to_path_buf(),
                error,
            })
        },
    )
}

/// Applies `change` to the config text, checks the result fully, then
/// writes it with a backup. An invalid result is refused; the file is not
/// touched.
pub fn edit_config(
    ctx: &Ctx,
    change: impl FnOnce(&mut Document) -> Result<(), CliError>,
) -> Result<std::path::PathBuf, CliError> {
    let file = ctx.file_for_writing().to_path_buf();
    let text = if file.exists() {
        read(&file)?
    } else {
        "{\n}\n".to_string()
    };
    let mut doc = Document::parse(&file, &text)?;
    change(&mut doc)?;
    let new_text = doc.text();
    if let Err(e) = clawgate_catalog::load_text(&file, &new_text, &Ctx::env) {
        return Err(CliError::new(
            exit::INVALID_CONFIG,
            anyhow::anyhow!("the change would make the config invalid; nothing was written:\n{e}"),
        ));
    }
    if let Some(backup) = edit::write_with_backup(&file, &new_text)? {
        eprintln!("backup of the previous file: {}", backup.display());
    }
    Ok(file)
}

fn set(ctx: &Ctx, key: &str, value: &str) -> CliResult {
    let segments = parse_path(key)?;
    let parsed = match tree::parse_node(value) {
        Ok(node) => node,
        // Not JSON5 and not meant as structure (a URL, a path, a word):
        // taken as a string, as a shell user means it.
        Err(_) if !value.trim_start().starts_with(['{', '[', '"', '\'']) => {
            let quoted =
                serde_json::to_string(value).map_err(|e| CliError::new(exit::FAILURE, e))?;
            eprintln!("{value} is not JSON5; setting it as the string {quoted}");
            tree::parse_node(&quoted).map_err(|reason| {
                CliError::new(
                    exit::USAGE,
                    ConfigError::BadValue {
                        path: key.to_string(),
                        reason,
                    },
                )
            })?
        }
        Err(reason) => {
            return Err(CliError::new(
                exit::USAGE,
                ConfigError::BadValue {
                    path: key.to_string(),
                    reason,
                },
            ))
        }
    };
    let file = edit_config(ctx, |doc| {
        doc.set_node(&segments, &parsed).map_err(CliError::from)
    })?;
    emit(&format!(
        "set {} in {}\n",
        path::render(&segments),
        file.display()
    ))
}
