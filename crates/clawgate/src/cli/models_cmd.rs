//! `clawgate models list | set | aliases | fallbacks` (GW-4, REF-2).

use clap::Subcommand;
use clawgate_catalog::{Chain, Model, Provider, Registry, Role};
use clawgate_config::edit::Document;
use clawgate_config::path::Segment;
use clawgate_core::ModelRef;
use serde_json::{json, Value};

use super::config_cmd::edit_config;
use super::output::{emit, json, table};
use super::{exit, CliError, CliResult, Ctx};

#[derive(Subcommand)]
pub enum ModelsCommand {
    /// List models: configured and referenced ones, or the whole catalog.
    List {
        /// Include every catalog model.
        #[arg(long)]
        all: bool,
        /// Only this provider.
        #[arg(long, value_name = "ID")]
        provider: Option<String>,
        /// Only providers on loopback or the private network.
        #[arg(long)]
        local: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Default model, each agent's chain and data policy, provider auth and
    /// active cooldowns.
    Status {
        /// Also send each model one tiny real request and report its
        /// bucket (ok, auth, rate_limit, billing, timeout, format,
        /// unknown, no_model) and latency.
        #[arg(long)]
        probe: bool,
        /// Only this provider.
        #[arg(long, value_name = "ID")]
        probe_provider: Option<String>,
        /// Per request, in milliseconds.
        #[arg(long, value_name = "MS", default_value_t = 8000)]
        probe_timeout: u64,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Local servers the running gateway started (localService), with
    /// their requests in flight and idle timers, and the backend queues.
    Running {
        /// The gateway (default: http://127.0.0.1:<gateway.port>).
        #[arg(long)]
        url: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop a local server the running gateway started, once its requests
    /// end.
    Unload {
        /// A provider/model ref, an alias or a provider id.
        model: String,
        /// The gateway (default: http://127.0.0.1:<gateway.port>).
        #[arg(long)]
        url: Option<String>,
    },
    /// Find local model servers on the usual loopback ports (LM Studio
    /// 1234, Ollama 11434, vLLM/SGLang/MLX 8000, llama.cpp 8080, LiteLLM
    /// 4000) and print a provider block for each.
    Discover {
        /// Ask these ports instead (repeat the flag).
        #[arg(long = "port", value_name = "PORT")]
        ports: Vec<u16>,
        /// Per server, in milliseconds.
        #[arg(long, value_name = "MS", default_value_t = 1500)]
        timeout: u64,
        /// Add the servers found to the config (comments kept, .bak).
        #[arg(long)]
        write: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        /// The environment variable holding the servers' API key (a
        /// LiteLLM proxy's master key); providers written get
        /// `apiKey: "${VAR}"`, never the key itself.
        #[arg(long, value_name = "VAR")]
        api_key_env: Option<String>,
    },
    /// Set the default model (agents.defaults.model.primary).
    Set {
        /// A provider/model ref, an alias or a unique model id.
        model: String,
    },
    /// Manage aliases (agents.defaults.models.<ref>.alias).
    Aliases {
        #[command(subcommand)]
        command: AliasCommand,
    },
    /// Manage the fallback chain (agents.defaults.model.fallbacks).
    Fallbacks {
        #[command(subcommand)]
        command: FallbackCommand,
    },
}

#[derive(Subcommand)]
pub enum AliasCommand {
    /// List aliases and the models they point to.
    List {
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add or move an alias.
    Add {
        /// The alias, e.g. Local.
        alias: String,
        /// A provider/model ref, an alias or a unique model id.
        model: String,
    },
    /// Remove an alias (the model stays).
    Remove {
        /// The alias to remove.
        alias: String,
    },
}

#[derive(Subcommand)]
pub enum FallbackCommand {
    /// List the fallback chain in order.
    List {
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Append a model to the fallback chain.
    Add {
        /// A provider/model ref, an alias or a unique model id.
        model: String,
    },
    /// Remove a model from the fallback chain.
    Remove {
        /// A provider/model ref, an alias or a unique model id.
        model: String,
    },
    /// Remove every fallback.
    Clear,
}

pub fn run(ctx: &Ctx, cmd: ModelsCommand) -> CliResult {
    match cmd {
        ModelsCommand::List {
            all,
            provider,
            local,
            json,
        } => list(ctx, all, provider.as_deref(), local, json),
        ModelsCommand::Status {
            probe,
            probe_provider,
            probe_timeout,
            json,
        } => {
            let opts = clawgate_session::check::CheckOptions {
                probe,
                probe_hosted: probe,
                provider: probe_provider,
                timeout: std::time::Duration::from_millis(if probe {
                    probe_timeout.max(1)
                } else {
                    probe_timeout.clamp(1, 2000)
                }),
            };
            status(ctx, &opts, json)
        }
        ModelsCommand::Running { url, json } => {
            super::local_cmd::running(ctx, url.as_deref(), json)
        }
        ModelsCommand::Unload { model, url } => {
            super::local_cmd::unload(ctx, &model, url.as_deref())
        }
        ModelsCommand::Discover {
            ports,
            timeout,
            write,
            json,
            api_key_env,
        } => super::local_cmd::discover(ctx, &ports, timeout, write, json, api_key_env.as_deref()),
        ModelsCommand::Set { model } => set(ctx, &model),
        ModelsCommand::Aliases { command } => aliases(ctx, command),
        ModelsCommand::Fallbacks { command } => fallbacks(ctx, command),
    }
}

fn not_found(e: impl std::fmt::Display) -> CliError {
    CliError::msg(exit::NOT_FOUND, e.to_string())
}

fn fmt_price(v: f64) -> String {
    if v == 0.0 {
        "0".to_string()
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Tags of a model in the default chain and elsewhere.
fn tags(chain: Option<&Chain>, p: &Provider, m: &Model) -> Vec<String> {
    let r = m.reference();
    let mut t = Vec::new();
    if let Some(chain) = chain {
        for c in &chain.candidates {
            if c.resolved.reference().matches(&r) {
                t.push(match c.role {
                    Role::Primary => "default".to_string(),
                    Role::Fallback(i) => format!("fallback#{}", i + 1),
                    Role::Requested => "requested".to_string(),
                });
            }
        }
    }
    t.push(m.origin.as_str().to_string());
    if p.endpoint.is_local() {
        t.push("local".to_string());
    }
    if m.effective_context().1 == clawgate_catalog::ContextSource::Assumed {
        t.push("context-assumed".to_string());
    }
    if let Some(api) = &p.unsupported_api {
        t.push(format!("unsupported-api:{api}"));
    }
    t
}

fn model_json(
    reg: &Registry,
    chain: Option<&Chain>,
    p: &Provider,
    m: &Model,
    catalogued: bool,
) -> Value {
    let (ctx, src) = m.effective_context();
    let aliases = reg.aliases_of(&m.reference());
    json!({
        "ref": m.reference().to_string(),
        "provider": p.id,
        "id": m.id,
        "name": m.name,
        "api": p.api_for(m).map(|a| a.as_str()),
        "baseUrl": p.base_url_for(m),
        "endpoint": p.endpoint.as_str(),
        "alias": aliases.first(),
        "aliases": aliases,
        "contextWindow": m.context_window,
        "contextTokens": m.context_tokens,
        "effectiveContext": ctx,
        "contextSource": src.as_str(),
        "contextAssumed": src == clawgate_catalog::ContextSource::Assumed,
        "maxTokens": m.max_tokens,
        "reasoning": m.reasoning,
        "input": m.input.iter().map(|i| i.as_str()).collect::<Vec<_>>(),
        "cost": {
            "input": m.cost.input,
            "output": m.cost.output,
            "cacheRead": m.cost.cache_read,
            "cacheWrite": m.cost.cache_write,
        },
        "origin": m.origin.as_str(),
        "catalogued": catalogued,
        "tags": tags(chain, p, m),
    })
}

fn list(ctx: &Ctx, all: bool, provider: Option<&str>, local: bool, as_json: bool) -> CliResult {
    let snap = ctx.snapshot()?;
    let reg = &snap.registry;
    if let Some(id) = provider {
        if reg.provider(id).is_none() {
            return Err(not_found(format!(
                "unknown provider \"{id}\"; known providers: {}",
                reg.providers.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
    }
    let referenced = reg.referenced();
    let mut rows: Vec<(Provider, Model, bool)> = Vec::new();
    let mut push = |p: &Provider, m: Model, catalogued: bool| {
        if !rows
            .iter()
            .any(|(_, x, _)| x.reference().matches(&m.reference()))
        {
            rows.push((p.clone(), m, catalogued));
        }
    };
    for (p, m) in reg.models() {
        let shown = all || p.configured || referenced.iter().any(|r| r.matches(&m.reference()));
        if shown {
            push(p, m.clone(), true);
        }
    }
    // Referenced models the catalog does not list still show, with defaults.
    for r in &referenced {
        if let (Ok(res), Some(p)) = (reg.resolve(&r.to_string()), reg.provider(r.provider())) {
            if !res.catalogued {
                push(p, res.model, false);
            }
        }
    }
    rows.retain(|(p, _, _)| {
        provider.is_none_or(|id| p.id.eq_ignore_ascii_case(id)) && (!local || p.endpoint.is_local())
    });
    let chain = reg.chain(None, None).ok();
    if as_json {
        let items: Vec<Value> = rows
            .iter()
            .map(|(p, m, c)| model_json(reg, chain.as_ref(), p, m, *c))
            .collect();
        return json(&Value::Array(items));
    }
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|(p, m, _)| {
            let (ctx_len, src) = m.effective_context();
            let ctx_cell = match (m.context_tokens, m.context_window) {
                (Some(t), Some(w)) => format!("{t}/{w}"),
                _ if src == clawgate_catalog::ContextSource::Assumed => format!("{ctx_len}?"),
                _ => ctx_len.to_string(),
            };
            vec![
                m.reference().to_string(),
                p.api_for(m).map(|a| a.as_str()).unwrap_or("-").to_string(),
                ctx_cell,
                m.max_tokens.to_string(),
                m.input
                    .iter()
                    .map(|i| i.as_str())
                    .collect::<Vec<_>>()
                    .join("+"),
                format!("{}/{}", fmt_price(m.cost.input), fmt_price(m.cost.output)),
                reg.aliases_of(&m.reference()).join(","),
                tags(chain.as_ref(), p, m).join(","),
            ]
        })
        .collect();
    emit(&table(
        &[
            "MODEL",
            "API",
            "CONTEXT",
            "MAX OUT",
            "INPUT",
            "$/M IN/OUT",
            "ALIAS",
            "TAGS",
        ],
        &body,
    ))
}

/// Resolves user input to the canonical ref the config should store.
fn canonical(reg: &Registry, input: &str) -> Result<ModelRef, CliError> {
    let resolved = reg.resolve(input).map_err(not_found)?;
    if !resolved.catalogued {
        eprintln!(
            "warning: {} is not in the catalog of provider \"{}\"; saved anyway, defaults apply",
            resolved.reference(),
            resolved.model.provider
        );
    }
    Ok(resolved.reference())
}

fn key(s: &str) -> Segment {
    Segment::Key(s.to_string())
}

/// Writes `agents.defaults.model` in object form, keeping what is there.
fn ensure_model_object(doc: &mut Document, reg: &Registry) -> Result<(), CliError> {
    let sel = reg.config.agents.defaults.model.as_ref();
    if let Some(sel) = sel.filter(|s| s.string_form) {
        let primary = sel
            .primary
            .as_ref()
            .map(|p| p.value.clone())
            .unwrap_or_default();
        doc.set(
            &[key("agents"), key("defaults"), key("model")],
            &json!({ "primary": primary }),
        )?;
    }
    Ok(())
}

fn set(ctx: &Ctx, input: &str) -> CliResult {
    let snap = ctx.snapshot()?;
    let reg = &snap.registry;
    let r = canonical(reg, input)?;
    let file = edit_config(ctx, |doc| {
        ensure_model_object(doc, reg)?;
        doc.set(
            &[key("agents"), key("defaults"), key("model"), key("primary")],
            &Value::from(r.to_string()),
        )?;
        Ok(())
    })?;
    emit(&format!(
        "default model: {r} (written to {})\n",
        file.display()
    ))
}

/// The key under `agents.defaults.models` that holds this ref, as written.
fn options_key(reg: &Registry, r: &ModelRef) -> String {
    reg.config
        .agents
        .defaults
        .models
        .keys()
        .find(|k| ModelRef::parse(k).is_ok_and(|kr| kr.matches(r)))
        .cloned()
        .unwrap_or_else(|| r.to_string())
}

fn aliases(ctx: &Ctx, cmd: AliasCommand) -> CliResult {
    let snap = ctx.snapshot()?;
    let reg = &snap.registry;
    match cmd {
        AliasCommand::List { json: as_json } => {
            if as_json {
                let items: Vec<Value> = reg
                    .aliases
                    .iter()
                    .map(|(a, r)| json!({ "alias": a, "ref": r.to_string() }))
                    .collect();
                return json(&Value::Array(items));
            }
            let rows: Vec<Vec<String>> = reg
                .aliases
                .iter()
                .map(|(a, r)| vec![a.clone(), r.to_string()])
                .collect();
            emit(&table(&["ALIAS", "MODEL"], &rows))
        }
        AliasCommand::Add { alias, model } => {
            let alias = alias.trim().to_string();
            if alias.is_empty() || alias.contains('/') {
                return Err(CliError::msg(
                    exit::USAGE,
                    "an alias must be non-empty and must not contain \"/\" (it would read as a provider/model ref)",
                ));
            }
            // Resolving first makes an alias of an alias point at the model.
            let target = canonical(reg, &model)?;
            let previous = reg.alias_target(&alias).cloned();
            // One alias per model entry (OpenClaw's shape): say what is replaced.
            let replaced: Vec<String> = reg
                .aliases_of(&target)
                .into_iter()
                .filter(|a| !a.eq_ignore_ascii_case(&alias))
                .map(str::to_string)
                .collect();
            if previous.as_ref().is_some_and(|p| p.matches(&target)) {
                return emit(&format!("alias {alias} already points to {target}\n"));
            }
            let file = edit_config(ctx, |doc| {
                if let Some(prev) = &previous {
                    remove_alias_entry(doc, reg, prev);
                }
                doc.set(
                    &[
                        key("agents"),
                        key("defaults"),
                        key("models"),
                        key(&options_key(reg, &target)),
                        key("alias"),
                    ],
                    &Value::from(alias.clone()),
                )?;
                Ok(())
            })?;
            if let Some(prev) = previous {
                eprintln!("moved alias {alias} from {prev}");
            }
            for old in replaced {
                eprintln!("alias {old} of {target} is replaced by {alias} (one alias per model)");
            }
            emit(&format!(
                "alias {alias} -> {target} (written to {})\n",
                file.display()
            ))
        }
        AliasCommand::Remove { alias } => {
            let Some(target) = reg.alias_target(&alias).cloned() else {
                return Err(not_found(format!("no alias \"{alias}\"")));
            };
            let file = edit_config(ctx, |doc| {
                remove_alias_entry(doc, reg, &target);
                Ok(())
            })?;
            emit(&format!(
                "removed alias {alias} (was {target}) from {}\n",
                file.display()
            ))
        }
    }
}

/// Removes the alias of `target`; drops the whole entry when nothing else
/// (params) is left in it.
fn remove_alias_entry(doc: &mut Document, reg: &Registry, target: &ModelRef) {
    let k = options_key(reg, target);
    let has_params = reg
        .config
        .agents
        .defaults
        .models
        .get(&k)
        .is_some_and(|o| !o.params.is_empty());
    let base = [key("agents"), key("defaults"), key("models"), key(&k)];
    if has_params {
        let mut p = base.to_vec();
        p.push(key("alias"));
        doc.remove(&p);
    } else {
        doc.remove(&base);
    }
}

fn fallbacks(ctx: &Ctx, cmd: FallbackCommand) -> CliResult {
    let snap = ctx.snapshot()?;
    let reg = &snap.registry;
    let sel = reg.config.agents.defaults.model.as_ref();
    let current: Vec<String> = sel
        .and_then(|s| s.fallbacks.as_ref())
        .map(|f| f.iter().map(|l| l.value.clone()).collect())
        .unwrap_or_default();
    let path = [
        key("agents"),
        key("defaults"),
        key("model"),
        key("fallbacks"),
    ];
    match cmd {
        FallbackCommand::List { json: as_json } => {
            let chain = reg.chain(None, None).ok();
            let describe = |input: &str| -> Value {
                match reg.resolve(input) {
                    Ok(r) => {
                        let p = reg.provider(&r.model.provider);
                        json!({
                            "ref": r.reference().to_string(),
                            "written": input,
                            "api": p.and_then(|p| p.api_for(&r.model)).map(|a| a.as_str()),
                            "baseUrl": p.map(|p| p.base_url_for(&r.model).to_string()),
                            "aliases": reg.aliases_of(&r.reference()),
                        })
                    }
                    Err(e) => json!({ "written": input, "error": e.to_string() }),
                }
            };
            let primary = chain.as_ref().and_then(|c| {
                c.candidates
                    .iter()
                    .find(|x| x.role == Role::Primary)
                    .map(|x| x.resolved.reference().to_string())
            });
            if as_json {
                return json(&json!({
                    "primary": primary.as_deref().map(describe),
                    "fallbacks": current.iter().map(|f| describe(f)).collect::<Vec<_>>(),
                }));
            }
            let mut rows = Vec::new();
            if let Some(p) = &primary {
                rows.push(vec!["primary".into(), p.clone(), alias_cell(reg, p)]);
            }
            for (i, f) in current.iter().enumerate() {
                let shown = reg
                    .resolve(f)
                    .map(|r| r.reference().to_string())
                    .unwrap_or_else(|_| f.clone());
                rows.push(vec![
                    format!("{}", i + 1),
                    shown.clone(),
                    alias_cell(reg, &shown),
                ]);
            }
            emit(&table(&["#", "MODEL", "ALIAS"], &rows))
        }
        FallbackCommand::Add { model } => {
            let r = canonical(reg, &model)?;
            if current
                .iter()
                .any(|f| reg.resolve(f).is_ok_and(|x| x.reference().matches(&r)))
            {
                return Err(CliError::msg(
                    exit::FAILURE,
                    format!("{r} is already a fallback"),
                ));
            }
            let mut next = current.clone();
            next.push(r.to_string());
            let file = edit_config(ctx, |doc| {
                ensure_model_object(doc, reg)?;
                doc.set(&path, &json!(next))?;
                Ok(())
            })?;
            emit(&format!(
                "added fallback {r} (written to {})\n",
                file.display()
            ))
        }
        FallbackCommand::Remove { model } => {
            let target = reg.resolve(&model).map(|x| x.reference()).ok();
            let idx = current.iter().position(|f| {
                f.eq_ignore_ascii_case(&model)
                    || target
                        .as_ref()
                        .is_some_and(|t| reg.resolve(f).is_ok_and(|x| x.reference().matches(t)))
            });
            let Some(idx) = idx else {
                return Err(not_found(format!("{model} is not a fallback")));
            };
            let mut p = path.to_vec();
            p.push(Segment::Index(idx));
            let removed = current[idx].clone();
            let file = edit_config(ctx, |doc| {
                doc.remove(&p);
                Ok(())
            })?;
            emit(&format!(
                "removed fallback {removed} (written to {})\n",
                file.display()
            ))
        }
        FallbackCommand::Clear => {
            if sel.is_none_or(|s| s.fallbacks.is_none()) {
                return emit("no fallbacks configured\n");
            }
            let file = edit_config(ctx, |doc| {
                doc.set(&path, &json!([]))?;
                Ok(())
            })?;
            emit(&format!(
                "cleared fallbacks (written to {})\n",
                file.display()
            ))
        }
    }
}

fn alias_cell(reg: &Registry, r: &str) -> String {
    ModelRef::parse(r)
        .map(|r| reg.aliases_of(&r).join(","))
        .unwrap_or_default()
}

fn status(ctx: &Ctx, opts: &clawgate_session::check::CheckOptions, as_json: bool) -> CliResult {
    let snap = ctx.snapshot()?;
    let report = clawgate_session::status::report(
        &snap.registry,
        ctx.location.describe(),
        &super::state::load_cooldowns(),
        super::state::now_unix_ms(),
    );
    let servers = check_servers(&snap.registry, opts)?;
    if as_json {
        let mut v = serde_json::to_value(&report).map_err(|e| CliError::new(exit::FAILURE, e))?;
        v["servers"] =
            serde_json::to_value(&servers).map_err(|e| CliError::new(exit::FAILURE, e))?;
        return json(&v);
    }
    let mut out = format!("config: {}\n", report.config);
    match &report.default {
        Some(d) => out.push_str(&format!(
            "default model: {} (rule: {})\n",
            d.reference, d.rule
        )),
        None => {
            out.push_str("default model: none (configure a provider or agents.defaults.model)\n")
        }
    }
    for a in &report.agents {
        out.push_str(&format!(
            "\nagent {} (dataPolicy {}{})\n",
            a.agent,
            a.data_policy,
            if a.strict { ", strict" } else { "" }
        ));
        let rows: Vec<Vec<String>> = a
            .candidates
            .iter()
            .map(|c| {
                let cd = c
                    .cooldowns
                    .iter()
                    .map(|x| format!("{} {}s", x.class, x.remaining_seconds))
                    .collect::<Vec<_>>()
                    .join(",");
                vec![
                    c.role.clone(),
                    c.reference.clone(),
                    c.endpoint.unwrap_or("-").to_string(),
                    if c.allowed {
                        "allowed".into()
                    } else {
                        "blocked (local-only)".into()
                    },
                    if cd.is_empty() { "-".into() } else { cd },
                ]
            })
            .collect();
        out.push_str(&table(
            &["ROLE", "MODEL", "ENDPOINT", "POLICY", "COOLDOWN"],
            &rows,
        ));
    }
    out.push('\n');
    let rows: Vec<Vec<String>> = report
        .providers
        .iter()
        .map(|p| {
            let cd = p
                .cooldowns
                .iter()
                .map(|x| format!("{} {} {}s", x.key, x.class, x.remaining_seconds))
                .collect::<Vec<_>>()
                .join("; ");
            vec![
                p.id.clone(),
                p.api
                    .or(p.unsupported_api.as_deref())
                    .unwrap_or("-")
                    .to_string(),
                p.base_url.clone(),
                p.endpoint.to_string(),
                p.auth.clone(),
                if cd.is_empty() { "-".into() } else { cd },
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "PROVIDER",
            "API",
            "BASE URL",
            "ENDPOINT",
            "AUTH",
            "COOLDOWNS",
        ],
        &rows,
    ));
    out.push('\n');
    out.push_str(&servers_table(&servers));
    emit(&out)
}

/// LOC-3: asks the servers (and probes), with a progress line on a
/// terminal.
fn check_servers(
    reg: &Registry,
    opts: &clawgate_session::check::CheckOptions,
) -> Result<Vec<clawgate_session::check::ProviderCheck>, CliError> {
    use std::io::IsTerminal;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::new(exit::FAILURE, e))?;
    let client = clawgate_wire::Client::new().map_err(|e| CliError::new(exit::FAILURE, e))?;
    let tty = std::io::stderr().is_terminal();
    let progress = |done: usize, total: usize| {
        if tty {
            eprint!("\rprobing {done}/{total}…");
            if done == total {
                eprint!("\r\x1b[K");
            }
        }
    };
    Ok(rt.block_on(super::local_cmd::check_with_local(
        reg, &client, opts, &progress,
    )))
}

fn servers_table(servers: &[clawgate_session::check::ProviderCheck]) -> String {
    let yn = |b: Option<bool>| match b {
        Some(true) => "yes".to_string(),
        Some(false) => "no".to_string(),
        None => "-".to_string(),
    };
    let mut rows = Vec::new();
    for p in servers {
        let reach = match (&p.reachable, &p.error) {
            (Some(true), _) => format!("yes ({})", p.server.unwrap_or("?")),
            (Some(false), Some(e)) => format!("no: {e}"),
            (Some(false), None) => "no".into(),
            (None, _) => "-".into(),
        };
        for m in &p.models {
            let ctx = match m.served_context {
                Some(s) if s != m.configured_context => format!(
                    "{} ({}) / served {} → uses {}",
                    m.configured_context, m.configured_source, s, m.used_context
                ),
                Some(s) => format!("{s} (served = configured)"),
                None => format!("{} ({})", m.configured_context, m.configured_source),
            };
            let probe = m
                .probe
                .as_ref()
                .map(|pr| {
                    if pr.detail.is_empty() {
                        format!("{} {} ms", pr.bucket, pr.latency_ms)
                    } else {
                        format!("{} {} ms: {}", pr.bucket, pr.latency_ms, pr.detail)
                    }
                })
                .unwrap_or_else(|| "-".into());
            rows.push(vec![
                p.id.clone(),
                reach.clone(),
                m.reference.clone(),
                yn(m.listed),
                yn(m.loaded),
                ctx,
                probe,
            ]);
        }
    }
    table(
        &[
            "PROVIDER",
            "REACHABLE",
            "MODEL",
            "LISTED",
            "LOADED",
            "CONTEXT",
            "PROBE",
        ],
        &rows,
    )
}
