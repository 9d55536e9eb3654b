//! `clawgate models running | unload` (LOC-7): asks the running gateway,
//! which owns the local servers, over its own API (`/v1/clawgate/local`).

use std::time::Duration;

use clawgate_wire::Client;
use serde_json::{json, Value};

use super::output::{emit, json as print_json, table};
use super::{exit, CliError, CliResult, Ctx};

/// The gateway's address and credential from the config (or `--url`).
fn gateway(
    ctx: &Ctx,
    url: Option<&str>,
) -> Result<(String, Option<clawgate_core::Secret>), CliError> {
    let snap = ctx.snapshot()?;
    let gw = &snap.registry.config.gateway;
    let base = match url {
        Some(u) => u.trim_end_matches('/').to_string(),
        // Whatever it binds, the gateway answers on loopback.
        None => format!("http://127.0.0.1:{}", gw.port),
    };
    let cred = gw
        .token
        .as_ref()
        .or(gw.password.as_ref())
        .and_then(|s| s.resolved.clone());
    Ok((base, cred))
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::new(exit::FAILURE, e))
}

fn answer(
    base: &str,
    r: Result<(u16, Vec<u8>), clawgate_wire::WireError>,
) -> Result<(u16, Value), CliError> {
    let (status, body) = r.map_err(|e| {
        CliError::msg(
            exit::FAILURE,
            format!("no gateway answered at {base}: {} (is `clawgate gateway` running? --url names another)", e.message),
        )
    })?;
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if status == 401 || status == 403 {
        return Err(CliError::msg(
            exit::FAILURE,
            format!("the gateway at {base} refused the credential (gateway.auth.token)"),
        ));
    }
    Ok((status, v))
}

pub fn running(ctx: &Ctx, url: Option<&str>, as_json: bool) -> CliResult {
    let (base, cred) = gateway(ctx, url)?;
    let client = Client::new().map_err(|e| CliError::new(exit::FAILURE, e))?;
    let rt = runtime()?;
    let r = rt.block_on(client.get_raw(
        &format!("{base}/v1/clawgate/local"),
        cred.as_ref(),
        Duration::from_secs(5),
    ));
    let (status, v) = answer(&base, r)?;
    if status != 200 {
        return Err(CliError::msg(
            exit::FAILURE,
            format!("the gateway answered HTTP {status}: {v}"),
        ));
    }
    if as_json {
        return print_json(&v);
    }
    let empty = Vec::new();
    let services = v
        .get("services")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let queues = v.get("queues").and_then(Value::as_array).unwrap_or(&empty);
    let s = |x: &Value, k: &str| match x.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".to_string(),
        Some(other) => other.to_string(),
    };
    let mut out = String::new();
    if services.is_empty() {
        out.push_str("no local server (localService) has been used since the gateway started\n");
    } else {
        let rows: Vec<Vec<String>> = services
            .iter()
            .map(|x| {
                let idle = x
                    .get("idle_stop_in_ms")
                    .and_then(Value::as_u64)
                    .map(|ms| format!("stops in {}s", ms.div_ceil(1000)))
                    .unwrap_or_else(|| "-".into());
                vec![
                    s(x, "provider"),
                    s(x, "group"),
                    s(x, "state"),
                    s(x, "pid"),
                    s(x, "leases"),
                    idle,
                    s(x, "starts"),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "PROVIDER",
                "GROUP",
                "STATE",
                "PID",
                "IN FLIGHT",
                "IDLE STOP",
                "STARTS",
            ],
            &rows,
        ));
    }
    // A server that is not running: what it printed last (why it
    // stopped or never became ready).
    for x in services.iter().filter(|x| s(x, "state") == "stopped") {
        let lines: Vec<&str> = x
            .get("last_output")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if !lines.is_empty() {
            out.push_str(&format!("\nlast output of {}:\n", s(x, "provider")));
            for l in lines {
                out.push_str(&format!("  {}\n", super::output::printable(l, false)));
            }
        }
    }
    if !queues.is_empty() {
        out.push('\n');
        let rows: Vec<Vec<String>> = queues
            .iter()
            .map(|q| {
                vec![
                    s(q, "provider"),
                    s(q, "limit"),
                    s(q, "in_flight"),
                    s(q, "waiting"),
                    s(q, "spilled_total"),
                ]
            })
            .collect();
        out.push_str(&table(
            &["QUEUE", "MAX CONCURRENT", "IN FLIGHT", "WAITING", "SPILLED"],
            &rows,
        ));
    }
    emit(&out)
}

pub fn unload(ctx: &Ctx, model: &str, url: Option<&str>) -> CliResult {
    let (base, cred) = gateway(ctx, url)?;
    let client = Client::new().map_err(|e| CliError::new(exit::FAILURE, e))?;
    let rt = runtime()?;
    let body = json!({ "model": model });
    // Waits for the server's requests in flight to end.
    let r = rt.block_on(client.post_raw(
        &format!("{base}/v1/clawgate/local/unload"),
        cred.as_ref(),
        &body,
        Duration::from_secs(600),
    ));
    let (status, v) = answer(&base, r)?;
    let message = v
        .pointer("/error/message")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    match status {
        200 => emit(&format!(
            "stopped the local server of {}\n",
            s_or(&v, "provider", model)
        )),
        404 => Err(CliError::msg(exit::NOT_FOUND, message)),
        _ => Err(CliError::msg(
            exit::FAILURE,
            format!("the gateway answered HTTP {status}: {message}"),
        )),
    }
}

fn s_or(v: &Value, k: &str, d: &str) -> String {
    v.get(k).and_then(Value::as_str).unwrap_or(d).to_string()
}

/// `clawgate models discover`: asks the usual local ports (or `ports`)
/// what they serve and prints a provider block per server; `write` adds
/// the new ones to the config (comments kept, `.bak`).
pub fn discover(
    ctx: &Ctx,
    ports: &[u16],
    timeout_ms: u64,
    write: bool,
    as_json: bool,
    api_key_env: Option<&str>,
) -> CliResult {
    let key = match api_key_env {
        Some(var) => match std::env::var(var) {
            Ok(v) if !v.is_empty() => Some(clawgate_core::Secret::new(v)),
            _ => {
                return Err(CliError::msg(
                    exit::USAGE,
                    format!("--api-key-env {var}: the variable {var} is not set"),
                ))
            }
        },
        None => None,
    };
    let ports: Vec<u16> = if ports.is_empty() {
        clawgate_local::discover::PORTS
            .iter()
            .map(|(p, _)| *p)
            .collect()
    } else {
        ports.to_vec()
    };
    let client = Client::new().map_err(|e| CliError::new(exit::FAILURE, e))?;
    let rt = runtime()?;
    let found = rt.block_on(clawgate_local::discover::discover(
        &client,
        &ports,
        Duration::from_millis(timeout_ms.max(1)),
        key.as_ref(),
    ));
    if as_json {
        let v: Vec<Value> = found
            .iter()
            .map(|f| {
                json!({
                    "id": f.id,
                    "port": f.port,
                    "server": f.info.kind.as_str(),
                    "baseUrl": f.base_url,
                    "models": f.info.models.iter().map(|m| json!({
                        "id": m.id, "loaded": m.loaded, "context": m.context, "maxContext": m.max_context,
                    })).collect::<Vec<_>>(),
                    "provider": f.provider_value(),
                })
            })
            .collect();
        print_json(&Value::Array(v))?;
    } else if found.is_empty() {
        let list: Vec<String> = ports.iter().map(u16::to_string).collect();
        emit(&format!(
            "no model server answered on 127.0.0.1 ports {} (start LM Studio's server, Ollama, vLLM, llama-server or LiteLLM, or name other ports with --port)\n",
            list.join(", ")
        ))?;
    } else {
        let mut out = String::from(
            "# paste under models.providers in your config, or run again with --write\n",
        );
        for f in &found {
            out.push_str(&f.json5_block());
        }
        emit(&out)?;
    }
    if write && !found.is_empty() {
        let snap = ctx.snapshot()?;
        let fresh: Vec<&clawgate_local::discover::Found> = found
            .iter()
            .filter(|f| {
                let taken = snap.registry.config.models.providers.contains_key(&f.id);
                if taken {
                    eprintln!(
                        "models.providers.{} is already configured; left as it is",
                        f.id
                    );
                }
                !taken
            })
            .collect();
        if fresh.is_empty() {
            return Ok(());
        }
        let file = super::config_cmd::edit_config(ctx, |doc| {
            use clawgate_config::path::Segment;
            for f in &fresh {
                let path = [
                    Segment::Key("models".into()),
                    Segment::Key("providers".into()),
                    Segment::Key(f.id.clone()),
                ];
                let mut value = f.provider_value();
                if let Some(var) = api_key_env {
                    value["apiKey"] = Value::String(format!("${{{var}}}"));
                }
                doc.set(&path, &value)?;
            }
            Ok(())
        })?;
        let ids: Vec<&str> = fresh.iter().map(|f| f.id.as_str()).collect();
        eprintln!("added {} to {}", ids.join(", "), file.display());
    }
    Ok(())
}

/// The server checks of `models status --probe` and `doctor`, with the
/// servers clawgate would start on demand running: each `localService`
/// that does not answer is started first (said on stderr, as a request
/// would start it), probed, and stopped again when the check ends.
pub async fn check_with_local(
    reg: &clawgate_catalog::Registry,
    client: &Client,
    opts: &clawgate_session::check::CheckOptions,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Vec<clawgate_session::check::ProviderCheck> {
    use clawgate_session::check::LocalStart;
    let mut started = std::collections::HashMap::new();
    let sup = super::state::supervisor(client.clone());
    if opts.probe {
        let mut ids: Vec<&String> = reg
            .providers
            .iter()
            .filter(|(id, p)| {
                p.local_service.is_some()
                    && opts
                        .provider
                        .as_deref()
                        .is_none_or(|want| want.eq_ignore_ascii_case(id))
            })
            .map(|(id, _)| id)
            .collect();
        ids.sort();
        for id in ids {
            match sup.start_now(reg, id).await {
                Ok(None) => {}
                Ok(Some(ready)) => {
                    eprintln!(
                        "started {id}'s local server (localService) for the probe: ready in {} ms; it stops when the probe ends",
                        ready.as_millis()
                    );
                    started.insert(
                        id.clone(),
                        LocalStart::Started {
                            ready_ms: ready.as_millis() as u64,
                        },
                    );
                }
                Err(message) => {
                    // Here its output is shown, not left to a log.
                    let message = message
                        .strip_suffix(clawgate_local::OUTPUT_IN_LOG)
                        .unwrap_or(&message)
                        .to_string();
                    let last_output = sup
                        .running()
                        .into_iter()
                        .find(|v| v.provider == *id)
                        .map(|v| v.last_output)
                        .unwrap_or_default();
                    eprintln!("{id}'s local server (localService) did not start: {message}");
                    for line in &last_output {
                        eprintln!("  {}", super::output::printable(line, false));
                    }
                    started.insert(
                        id.clone(),
                        LocalStart::Failed {
                            message,
                            last_output,
                        },
                    );
                }
            }
        }
    }
    let mut checks = clawgate_session::check::check(reg, client, opts, progress).await;
    for c in &mut checks {
        c.local_service = started.remove(&c.id);
    }
    sup.shutdown().await;
    checks
}
