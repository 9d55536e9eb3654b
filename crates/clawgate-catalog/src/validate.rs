//! Cross-checks that need the merged catalog: custom providers, alias
//! targets and duplicates, primary/fallback refs, policy entries, auth
//! profiles. Each finding points at the place in the file (CFG-4).

use clawgate_config::{AgentSettings, Diagnostic, Loc, Severity};
use clawgate_core::ModelRef;

use crate::builtin;
use crate::resolve::ResolveError;
use crate::Registry;

struct Out<'a> {
    file: &'a std::path::Path,
    diags: Vec<Diagnostic>,
}

impl Out<'_> {
    fn error(&mut self, loc: &Loc, msg: impl Into<String>) {
        self.diags
            .push(Diagnostic::at(Severity::Error, self.file, loc, msg.into()));
    }
    fn warn(&mut self, loc: &Loc, msg: impl Into<String>) {
        self.diags.push(Diagnostic::at(
            Severity::Warning,
            self.file,
            loc,
            msg.into(),
        ));
    }
}

pub fn check(reg: &Registry) -> Vec<Diagnostic> {
    let file = reg
        .config
        .path
        .clone()
        .unwrap_or_else(|| "clawgate.json5".into());
    let mut out = Out {
        file: &file,
        diags: Vec::new(),
    };
    providers(reg, &mut out);
    // Aliases: one owner per alias, case-insensitively.
    let mut seen: Vec<(String, Loc)> = Vec::new();
    {
        for opts in reg.config.agents.defaults.models.values() {
            if let Some(alias) = &opts.alias {
                if let Some((_, first)) = seen
                    .iter()
                    .find(|(a, _)| a.eq_ignore_ascii_case(&alias.value))
                {
                    out.error(
                        &alias.loc,
                        format!(
                            "duplicate alias \"{}\" (already used at {}:{} by {})",
                            alias.value,
                            first.line,
                            first.column,
                            first.path.trim_end_matches(".alias")
                        ),
                    );
                } else {
                    seen.push((alias.value.clone(), alias.loc.clone()));
                }
            }
        }
    }
    agent(reg, &reg.config.agents.defaults, &mut out);
    for a in reg.config.agents.entries.values() {
        agent(reg, a, &mut out);
    }
    auth(reg, &mut out);
    out.diags
}

fn providers(reg: &Registry, out: &mut Out<'_>) {
    let builtin_ids = builtin::provider_ids();
    for (id, pc) in &reg.config.models.providers {
        let is_builtin = builtin_ids.contains(&id.as_str());
        if !is_builtin && pc.base_url.is_none() {
            out.error(
                &pc.loc,
                format!(
                    "custom provider \"{id}\" must set baseUrl (only built-in providers may omit it: {})",
                    builtin_ids.join(", ")
                ),
            );
        }
        if !is_builtin && pc.models.is_none() && pc.unsupported_api.is_none() {
            out.warn(
                &pc.loc,
                format!(
                    "custom provider \"{id}\" declares no models; only models discovered on the server can be used"
                ),
            );
        }
        let Some(p) = reg.providers.get(id) else {
            continue;
        };
        guarded_urls(p, pc, out);
        if let Some(key) = &pc.api_key {
            if key.is_marker() && !p.endpoint.is_local() {
                out.warn(
                    &pc.loc,
                    format!(
                        "apiKey is the local marker {} but {} is not a local address; a public host needs a real key",
                        key.redacted(),
                        p.base_url
                    ),
                );
            }
        }
    }
}

/// The outbound guard's verdict on every URL a provider is configured
/// with, before any request (SEC-2): a metadata or link-local base URL, or
/// a private one with `allowPrivateNetwork: false`, is refused here with
/// the key that would allow it.
fn guarded_urls(p: &crate::Provider, pc: &clawgate_config::ProviderConfig, out: &mut Out<'_>) {
    if let Some(b) = &p.base {
        let reach = p.guard.reach(&b.origin, false);
        if !reach.admits(b.class) {
            refused(p, pc, "baseUrl", &p.base_url, b.class, out);
        }
    }
    let mut urls: Vec<(String, &str)> = Vec::new();
    for (i, m) in pc.models.iter().flatten().enumerate() {
        if let Some(u) = &m.base_url {
            urls.push((format!("models[{i}].baseUrl"), u.as_str()));
        }
    }
    if let Some(h) = pc
        .local_service
        .as_ref()
        .and_then(|s| s.health_url.as_deref())
    {
        urls.push(("localService.healthUrl".to_string(), h));
    }
    for (key, url) in urls {
        let Ok(parsed) = url::Url::parse(url) else {
            continue;
        };
        let Some(class) = clawgate_config::endpoint::host_class(&parsed) else {
            continue;
        };
        let reach = p.guard.reach(&parsed.origin().ascii_serialization(), false);
        if !reach.admits(class) {
            refused(p, pc, &key, url, class, out);
        }
    }
}

fn refused(
    p: &crate::Provider,
    pc: &clawgate_config::ProviderConfig,
    key: &str,
    url: &str,
    class: clawgate_core::net::AddrClass,
    out: &mut Out<'_>,
) {
    let mut loc = pc.loc.clone();
    loc.path = format!("models.providers.{}.{key}", p.id);
    let refusal = p.guard.refusal(class, "agents.defaults.dataPolicy");
    out.error(
        &loc,
        format!(
            "{url} is {}, which the outbound guard refuses; {}",
            class.describe(),
            refusal.fix
        ),
    );
}

fn check_ref(reg: &Registry, value: &str, loc: &Loc, what: &str, out: &mut Out<'_>) {
    match reg.resolve(value) {
        Ok(r) if !r.catalogued => out.warn(
            loc,
            format!(
                "{what} {} is not in the catalog of provider \"{}\"; defaults apply (context window assumed 200000, maxTokens 8192)",
                r.reference(),
                r.model.provider
            ),
        ),
        Ok(_) => {}
        Err(e) => out.error(loc, format!("{what}: {e}")),
    }
}

fn agent(reg: &Registry, a: &AgentSettings, out: &mut Out<'_>) {
    if let Some(sel) = &a.model {
        if let Some(p) = &sel.primary {
            check_ref(reg, &p.value, &p.loc, "primary model", out);
        }
        let mut seen: Vec<String> = Vec::new();
        for f in sel.fallbacks.iter().flatten() {
            check_ref(reg, &f.value, &f.loc, "fallback", out);
            let key = f.value.to_ascii_lowercase();
            if seen.contains(&key) {
                out.warn(&f.loc, "fallback listed twice; the repeat is ignored");
            }
            seen.push(key);
        }
    }
    if let Some(c) = a.compaction.as_ref().and_then(|c| c.model.as_ref()) {
        check_ref(reg, &c.value, &c.loc, "compaction model", out);
    }
    for opts in a.models.values() {
        let key = &opts.key;
        let Ok(r) = ModelRef::parse(&key.value) else {
            continue;
        };
        let Some(p) = reg.provider(r.provider()) else {
            let err = reg.resolve(&key.value).err();
            let msg = match err {
                Some(e @ ResolveError::UnknownProvider { .. }) => e.to_string(),
                _ => format!("unknown provider \"{}\"", r.provider()),
            };
            out.error(&key.loc, msg);
            continue;
        };
        if r.model() == "*" {
            if let Some(alias) = &opts.alias {
                out.error(
                    &alias.loc,
                    "an alias cannot point at a wildcard \"provider/*\" entry",
                );
            }
            continue;
        }
        if p.model(r.model()).is_none() {
            let target = opts
                .alias
                .as_ref()
                .map(|a| format!("alias \"{}\" points to {}", a.value, key.value))
                .unwrap_or_else(|| key.value.clone());
            if p.allows_uncatalogued() {
                out.warn(
                    &key.loc,
                    format!(
                        "{target}, which the catalog of \"{}\" does not list; defaults apply",
                        p.id
                    ),
                );
            } else {
                let known: Vec<&str> = p.models.iter().map(|m| m.id.as_str()).collect();
                out.error(
                    &key.loc,
                    format!(
                        "{target}, which is not a model of provider \"{}\" (its models: {})",
                        p.id,
                        known.join(", ")
                    ),
                );
            }
        }
    }
    for entry in a.model_policy_allow.iter().flatten() {
        let e = entry.value.trim();
        let provider = e.split('/').next().unwrap_or_default();
        if e.contains('/') {
            if reg.provider(provider).is_none() {
                let ids: Vec<&str> = reg.providers.keys().map(String::as_str).collect();
                let hint = clawgate_config::nearest(provider, &ids)
                    .map(|s| format!("; did you mean \"{s}\"?"))
                    .unwrap_or_default();
                out.error(
                    &entry.loc,
                    format!("allow entry names unknown provider \"{provider}\"{hint}"),
                );
            } else if e.ends_with('*') && !e.ends_with("/*") {
                out.error(
                    &entry.loc,
                    "wildcards are only allowed as a trailing \"/*\"",
                );
            }
        } else if reg.alias_target(e).is_none() {
            out.error(
                &entry.loc,
                format!(
                    "{e:?} is neither a provider/model ref, a \"provider/*\" wildcard nor an alias"
                ),
            );
        }
    }
}

fn auth(reg: &Registry, out: &mut Out<'_>) {
    let auth = &reg.config.auth;
    for p in auth.profiles.values() {
        if reg.provider(&p.provider).is_none() {
            out.error(
                &p.loc,
                format!(
                    "auth profile \"{}\" names unknown provider \"{}\"",
                    p.id, p.provider
                ),
            );
        }
    }
    for (provider, ids) in &auth.order {
        for id in ids {
            match auth.profiles.get(id) {
                Some(p) if p.provider.eq_ignore_ascii_case(provider) => {}
                Some(p) => out.error(
                    &p.loc,
                    format!(
                        "auth.order.{provider} lists profile \"{id}\", which belongs to provider \"{}\"",
                        p.provider
                    ),
                ),
                None if id == &format!("{provider}:default") => {}
                None => {
                    let loc = Loc {
                        path: format!("auth.order.{provider}"),
                        ..Loc::default()
                    };
                    out.error(&loc, format!("unknown auth profile \"{id}\""));
                }
            }
        }
    }
}
