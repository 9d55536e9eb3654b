//! Model catalog and resolution for clawgate (CFG-5, REF-1..4).
//!
//! Brief overview: [`Registry::build`] merges the built-in catalog
//! ([`builtin`]) with the configured providers (`models.mode` merge or
//! replace) into effective [`Provider`]s and [`Model`]s with every default
//! applied, then cross-checks the config against it. [`Registry::resolve`]
//! turns a ref, alias or bare id into a model; [`Registry::chain`] builds
//! the candidate chain of a turn; [`Registry::check_policy`] enforces
//! `modelPolicy.allow`. [`load`] is the one call a binary needs.

pub mod builtin;
pub mod defaults;
pub mod registry;
pub mod resolve;
mod validate;

use std::path::Path;

use clawgate_config::{Config, ConfigError, Diagnostic, EnvLookup, Severity};
use clawgate_core::ModelRef;
use indexmap::IndexMap;

pub use registry::{BaseUrl, ContextSource, Model, Origin, Provider};
pub use resolve::{
    Candidate, Chain, DefaultRule, PolicyError, ResolveError, Resolved, Role, SelectionSource, Via,
};

/// The effective model table of one config snapshot.
#[derive(Debug, Clone)]
pub struct Registry {
    pub config: Config,
    pub providers: IndexMap<String, Provider>,
    /// `(alias, target)` from `agents.defaults.models`, in file order.
    pub aliases: Vec<(String, ModelRef)>,
    /// The `agents.defaults.models` keys that are model refs, parsed once
    /// per snapshot (not per request), with their index in that map.
    pub option_refs: Vec<(ModelRef, usize)>,
    /// Every secret value of this snapshot, for masking text that leaves
    /// the process (SEC-3).
    pub redactor: std::sync::Arc<clawgate_core::Redactor>,
}

impl Registry {
    /// Builds the registry and cross-checks the config against it. Returns
    /// the diagnostics (errors and warnings) of those checks.
    pub fn build(config: Config, env: EnvLookup<'_>) -> (Self, Vec<Diagnostic>) {
        let providers = registry::build_providers(&config, env);
        let aliases = config
            .agents
            .defaults
            .models
            .values()
            .filter_map(|o| {
                let alias = o.alias.as_ref()?;
                let target = ModelRef::parse(&o.key.value).ok()?;
                Some((alias.value.clone(), target))
            })
            .collect();
        let option_refs = config
            .agents
            .defaults
            .models
            .keys()
            .enumerate()
            .filter_map(|(i, k)| ModelRef::parse(k).ok().map(|r| (r, i)))
            .collect();
        let redactor = std::sync::Arc::new(secrets(&config, &providers));
        let reg = Self {
            config,
            providers,
            aliases,
            option_refs,
            redactor,
        };
        let diags = validate::check(&reg);
        (reg, diags)
    }

    /// All models, configured providers first.
    pub fn models(&self) -> impl Iterator<Item = (&Provider, &Model)> {
        self.providers
            .values()
            .flat_map(|p| p.models.iter().map(move |m| (p, m)))
    }

    /// Refs the config mentions anywhere (primary, fallbacks, model options,
    /// per-agent models): what `models list` shows besides configured rows.
    pub fn referenced(&self) -> Vec<ModelRef> {
        let mut refs = Vec::new();
        let agents = std::iter::once(&self.config.agents.defaults)
            .chain(self.config.agents.entries.values());
        for a in agents {
            if let Some(sel) = &a.model {
                refs.extend(sel.primary.iter().map(|p| p.value.clone()));
                refs.extend(sel.fallbacks.iter().flatten().map(|f| f.value.clone()));
            }
            refs.extend(a.models.keys().cloned());
        }
        refs.into_iter()
            .filter_map(|s| self.resolve(&s).ok())
            .map(|r| r.reference())
            .collect()
    }
}

/// Every resolved secret of a snapshot: provider keys and header values,
/// `localService.env` values, auth profile keys, the gateway token and
/// password.
fn secrets(config: &Config, providers: &IndexMap<String, Provider>) -> clawgate_core::Redactor {
    let mut values: Vec<String> = Vec::new();
    let mut add = |v: Option<&clawgate_config::SecretValue>| {
        if let Some(s) = v.and_then(|v| v.resolved.as_ref()) {
            values.push(s.expose().to_string());
        }
    };
    for p in providers.values() {
        add(p.api_key.as_ref());
        for h in p.headers.values() {
            add(Some(h));
        }
        // A local server's environment may carry its keys (LOC-1: values
        // never logged, also not in the child's own output).
        for v in p.local_service.iter().flat_map(|ls| ls.env.values()) {
            add(Some(v));
        }
    }
    for prof in config.auth.profiles.values() {
        add(prof.api_key.as_ref());
    }
    add(config.gateway.token.as_ref());
    add(config.gateway.password.as_ref());
    clawgate_core::Redactor::new(values)
}

/// A loaded, fully checked config snapshot.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub registry: Registry,
    pub warnings: Vec<Diagnostic>,
}

/// Loads a config file (or the defaults when `file` is `None`), decodes it,
/// builds the registry and cross-checks it. Any error refuses the file.
pub fn load(file: Option<&Path>, env: EnvLookup<'_>) -> Result<Snapshot, ConfigError> {
    let loaded = match file {
        Some(f) => clawgate_config::load_file(f, env)?,
        None => clawgate_config::Loaded {
            config: Config::default(),
            warnings: Vec::new(),
        },
    };
    finish(loaded, env)
}

/// Like [`load`] for text already in memory (`config set` checks the new
/// text before writing it).
pub fn load_text(file: &Path, text: &str, env: EnvLookup<'_>) -> Result<Snapshot, ConfigError> {
    finish(clawgate_config::load_str(file, text, env)?, env)
}

/// [`load_text`] without touching anything outside the process (no
/// `$include`, no file or exec SecretRef): for fuzzing and untrusted text.
pub fn load_text_sandboxed(
    file: &Path,
    text: &str,
    env: EnvLookup<'_>,
) -> Result<Snapshot, ConfigError> {
    finish(clawgate_config::load_str_sandboxed(file, text, env)?, env)
}

fn finish(loaded: clawgate_config::Loaded, env: EnvLookup<'_>) -> Result<Snapshot, ConfigError> {
    let (registry, diags) = Registry::build(loaded.config, env);
    let (errors, mut warnings): (Vec<_>, Vec<_>) = diags
        .into_iter()
        .partition(|d| d.severity == Severity::Error);
    if !errors.is_empty() {
        return Err(ConfigError::Invalid(errors));
    }
    let mut all = loaded.warnings;
    all.append(&mut warnings);
    Ok(Snapshot {
        registry,
        warnings: all,
    })
}
