//! The effective provider/model table: the built-in catalog merged with (or
//! replaced by) the configured providers (CFG-5), with every default of
//! CFG-4 applied.

use clawgate_config::endpoint::{self, EndpointClass};
use clawgate_config::{
    Compat, Config, Cost, EnvLookup, JsonMap, LocalService, Modality, ModelConfig, ModelsMode,
    ProviderConfig, SecretValue,
};
use clawgate_core::net::OutboundPolicy;
use clawgate_core::{ApiKind, ApiParse, ModelRef};
use indexmap::IndexMap;

use crate::builtin::{self, BuiltinModel, BuiltinProvider};

/// Default output cap for a configured model without `maxTokens` (CFG-4).
pub const DEFAULT_MAX_TOKENS: u64 = 8192;
/// Context window assumed when neither config, catalog nor server gives one.
pub const ASSUMED_CONTEXT_WINDOW: u64 = 200_000;

/// Where a provider or model definition came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Only in the built-in catalog.
    Catalog,
    /// Only in the config file.
    Config,
    /// A catalog entry overridden field by field by the config.
    Merged,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Catalog => "catalog",
            Origin::Config => "config",
            Origin::Merged => "config+catalog",
        }
    }
}

/// Where a model's effective context window comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextSource {
    /// `contextTokens` (runtime cap) from the config.
    ConfigTokens,
    /// `contextWindow` from the config.
    ConfigWindow,
    /// The built-in catalog.
    Catalog,
    /// Nothing reported one: the 200 000 default, flagged as assumed.
    Assumed,
}

impl ContextSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ContextSource::ConfigTokens => "config:contextTokens",
            ContextSource::ConfigWindow => "config:contextWindow",
            ContextSource::Catalog => "catalog",
            ContextSource::Assumed => "assumed",
        }
    }
}

/// An effective provider.
#[derive(Debug, Clone)]
pub struct Provider {
    pub id: String,
    pub name: String,
    /// `None` when the config names an api clawgate does not implement.
    pub api: Option<ApiKind>,
    pub unsupported_api: Option<String>,
    pub base_url: String,
    /// The credential: from the config, else the catalog's env variable.
    pub api_key: Option<SecretValue>,
    pub api_key_env: Option<String>,
    pub headers: IndexMap<String, SecretValue>,
    pub timeout_seconds: Option<u64>,
    pub allow_private_network: Option<bool>,
    pub allow_special_use: Option<bool>,
    /// The outbound guard's rules for this provider (SEC-2), built once
    /// with the registry.
    pub guard: std::sync::Arc<OutboundPolicy>,
    /// `base_url` parsed once with the registry (`None`: not a URL).
    pub base: Option<BaseUrl>,
    pub local_service: Option<LocalService>,
    /// `maxConcurrent` as written (`0` = no limit); the default when it is
    /// not written depends on the server (see `clawgate-local`).
    pub max_concurrent: Option<u32>,
    /// `spillAfterMs` as written.
    pub spill_after_ms: Option<u64>,
    pub params: JsonMap,
    pub endpoint: EndpointClass,
    /// A hosted cloud API from the catalog (not a local-server template).
    pub hosted: bool,
    pub builtin: bool,
    pub configured: bool,
    pub origin: Origin,
    /// The config wrote a `models` list (only those models exist then).
    pub models_declared: bool,
    /// `agents.defaults.models` has `"<id>/*"`: any model id of the server
    /// may be used even with a declared list (OpenClaw's vLLM rule).
    pub wildcard: bool,
    pub models: Vec<Model>,
}

/// A base URL parsed once, with what the guard, the data policy, probes
/// and provenance need from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    pub url: url::Url,
    /// `scheme://host[:port]`, as the outbound guard compares origins.
    pub origin: String,
    /// `host:port` with the scheme's port made explicit.
    pub host_port: String,
    pub class: clawgate_core::net::AddrClass,
}

impl BaseUrl {
    pub fn parse(text: &str) -> Option<Self> {
        let url = url::Url::parse(text).ok()?;
        let class = endpoint::host_class(&url)?;
        let host = match url.host()? {
            url::Host::Ipv6(ip) => format!("[{ip}]"),
            h => h.to_string(),
        };
        let port = url.port_or_known_default()?;
        Some(Self {
            origin: url.origin().ascii_serialization(),
            host_port: format!("{host}:{port}"),
            class,
            url,
        })
    }
}

/// An effective model entry.
#[derive(Debug, Clone)]
pub struct Model {
    pub provider: String,
    pub id: String,
    pub name: String,
    pub reasoning: bool,
    pub input: Vec<Modality>,
    pub cost: Cost,
    pub context_window: Option<u64>,
    pub context_tokens: Option<u64>,
    /// Where `context_window` came from when set.
    pub window_source: Option<ContextSource>,
    pub max_tokens: u64,
    pub compat: Compat,
    pub params: JsonMap,
    /// Per-model overrides of the provider's `api` / `baseUrl`.
    pub api: Option<ApiKind>,
    pub base_url: Option<String>,
    pub headers: IndexMap<String, String>,
    pub origin: Origin,
}

impl Model {
    pub fn reference(&self) -> ModelRef {
        ModelRef::new(&self.provider, &self.id)
    }

    /// The window the preflight budgets against: `contextTokens`, else
    /// `contextWindow`, else the assumed 200 000.
    pub fn effective_context(&self) -> (u64, ContextSource) {
        if let Some(t) = self.context_tokens {
            return (t, ContextSource::ConfigTokens);
        }
        match (self.context_window, self.window_source) {
            (Some(w), Some(src)) => (w, src),
            (Some(w), None) => (w, ContextSource::ConfigWindow),
            (None, _) => (ASSUMED_CONTEXT_WINDOW, ContextSource::Assumed),
        }
    }

    /// A model the catalog does not list, on a provider that allows that:
    /// every default of CFG-4.
    pub fn uncatalogued(provider: &Provider, id: &str) -> Model {
        Self::blank(&provider.id, id)
    }

    /// A model with every CFG-4 default: name = id, text input, zero cost,
    /// no known window, 8192 output tokens.
    fn blank(provider: &str, id: &str) -> Model {
        Model {
            provider: provider.to_string(),
            id: id.to_string(),
            name: id.to_string(),
            reasoning: false,
            input: vec![Modality::Text],
            cost: Cost::default(),
            context_window: None,
            context_tokens: None,
            window_source: None,
            max_tokens: DEFAULT_MAX_TOKENS,
            compat: Compat::default(),
            params: JsonMap::new(),
            api: None,
            base_url: None,
            headers: IndexMap::new(),
            origin: Origin::Config,
        }
    }
}

impl Provider {
    /// The api a model of this provider is spoken to with.
    pub fn api_for(&self, model: &Model) -> Option<ApiKind> {
        model.api.or(self.api)
    }

    /// The base URL a model of this provider is reached at.
    pub fn base_url_for<'a>(&'a self, model: &'a Model) -> &'a str {
        model.base_url.as_deref().unwrap_or(&self.base_url)
    }

    pub fn model(&self, id: &str) -> Option<&Model> {
        self.models.iter().find(|m| m.id.eq_ignore_ascii_case(id))
    }

    /// Whether a model id the catalog does not list may still be used here:
    /// hosted catalogs lag, undeclared local servers are discovered, and a
    /// `provider/*` entry opens a declared list.
    pub fn allows_uncatalogued(&self) -> bool {
        !self.models_declared || self.hosted || self.wildcard
    }
}

fn api_of(s: &str) -> Option<ApiKind> {
    match ApiKind::parse(s) {
        ApiParse::Supported(k) | ApiParse::Legacy { kind: k, .. } => Some(k),
        _ => None,
    }
}

fn from_builtin_model(provider: &str, m: &BuiltinModel) -> Model {
    Model {
        provider: provider.to_string(),
        id: m.id.clone(),
        name: m.name.clone(),
        reasoning: m.reasoning,
        input: m.input.iter().filter_map(|i| Modality::parse(i)).collect(),
        cost: Cost {
            input: m.cost.input,
            output: m.cost.output,
            cache_read: m.cost.cache_read,
            cache_write: m.cost.cache_write,
        },
        context_window: Some(m.context_window),
        context_tokens: None,
        window_source: Some(ContextSource::Catalog),
        max_tokens: m.max_tokens,
        compat: Compat::default(),
        params: JsonMap::new(),
        api: None,
        base_url: None,
        headers: IndexMap::new(),
        origin: Origin::Catalog,
    }
}

fn from_builtin(id: &str, b: &BuiltinProvider, env: EnvLookup<'_>) -> Provider {
    let api_key = b
        .api_key_env
        .as_ref()
        .map(|name| SecretValue::resolve(&format!("${{{name}}}"), env));
    Provider {
        id: id.to_string(),
        name: b.name.clone(),
        api: api_of(&b.api),
        unsupported_api: None,
        base_url: b.base_url.clone(),
        api_key,
        api_key_env: b.api_key_env.clone(),
        headers: IndexMap::new(),
        timeout_seconds: None,
        allow_private_network: None,
        allow_special_use: None,
        guard: Default::default(),
        base: None,
        local_service: None,
        max_concurrent: None,
        spill_after_ms: None,
        params: JsonMap::new(),
        endpoint: EndpointClass::Public,
        hosted: b.hosted,
        builtin: true,
        configured: false,
        origin: Origin::Catalog,
        models_declared: false,
        wildcard: false,
        models: b.models.iter().map(|m| from_builtin_model(id, m)).collect(),
    }
}

/// Applies a configured model row over an existing entry, field by field.
fn overlay_model(base: &mut Model, row: &ModelConfig, provider: &ProviderConfig) {
    if let Some(n) = &row.name {
        base.name = n.clone();
    }
    if let Some(r) = row.reasoning {
        base.reasoning = r;
    }
    if let Some(i) = &row.input {
        base.input = i.clone();
    }
    if let Some(c) = row.cost {
        base.cost = c;
    }
    if let Some(w) = row.context_window.or(provider.context_window) {
        if row.context_window.is_some() || base.context_window.is_none() {
            base.context_window = Some(w);
            base.window_source = Some(ContextSource::ConfigWindow);
        }
    }
    if let Some(t) = row.context_tokens.or(provider.context_tokens) {
        base.context_tokens = Some(t);
    }
    if let Some(m) = row.max_tokens {
        base.max_tokens = m;
    }
    base.compat = row.compat.clone();
    base.params.extend(row.params.clone());
    if row.api.is_some() {
        base.api = row.api;
    }
    if row.base_url.is_some() {
        base.base_url = row.base_url.clone();
    }
    base.headers.extend(row.headers.clone());
    base.origin = if base.origin == Origin::Catalog {
        Origin::Merged
    } else {
        base.origin
    };
}

fn configured_model(provider: &ProviderConfig, row: &ModelConfig) -> Model {
    let mut m = Model::blank(&provider.id, &row.id);
    m.max_tokens = provider.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
    overlay_model(&mut m, row, provider);
    m.origin = Origin::Config;
    m
}

/// Applies a configured provider over a built-in one (or builds it fresh).
fn overlay_provider(base: Option<Provider>, pc: &ProviderConfig, mode: ModelsMode) -> Provider {
    let mut p = base.unwrap_or_else(|| Provider {
        id: pc.id.clone(),
        name: pc.id.clone(),
        // A custom provider with a baseUrl speaks openai-completions unless told (CFG-2).
        api: Some(ApiKind::OpenAiCompletions),
        unsupported_api: None,
        base_url: String::new(),
        api_key: None,
        api_key_env: None,
        headers: IndexMap::new(),
        timeout_seconds: None,
        allow_private_network: None,
        allow_special_use: None,
        guard: Default::default(),
        base: None,
        local_service: None,
        max_concurrent: None,
        spill_after_ms: None,
        params: JsonMap::new(),
        endpoint: EndpointClass::Public,
        hosted: false,
        builtin: false,
        configured: true,
        origin: Origin::Config,
        models_declared: false,
        wildcard: false,
        models: Vec::new(),
    });
    p.configured = true;
    if p.builtin {
        p.origin = Origin::Merged;
    }
    if let Some(u) = &pc.base_url {
        p.base_url = u.clone();
    }
    if pc.api.is_some() {
        p.api = pc.api;
    }
    if let Some(u) = &pc.unsupported_api {
        p.api = None;
        p.unsupported_api = Some(u.clone());
    }
    if let Some(k) = &pc.api_key {
        p.api_key = Some(k.clone());
    }
    p.headers.extend(pc.headers.clone());
    if pc.timeout_seconds.is_some() {
        p.timeout_seconds = pc.timeout_seconds;
    }
    if pc.allow_private_network.is_some() {
        p.allow_private_network = pc.allow_private_network;
    }
    if pc.allow_special_use.is_some() {
        p.allow_special_use = pc.allow_special_use;
    }
    if pc.local_service.is_some() {
        p.local_service = pc.local_service.clone();
    }
    if pc.max_concurrent.is_some() {
        p.max_concurrent = pc.max_concurrent;
    }
    if pc.spill_after_ms.is_some() {
        p.spill_after_ms = pc.spill_after_ms;
    }
    p.params.extend(pc.params.clone());
    if mode == ModelsMode::Replace {
        p.models.clear();
    }
    if let Some(rows) = &pc.models {
        p.models_declared = true;
        for row in rows {
            match p
                .models
                .iter_mut()
                .find(|m| m.id.eq_ignore_ascii_case(&row.id))
            {
                Some(existing) => overlay_model(existing, row, pc),
                None => p.models.push(configured_model(pc, row)),
            }
        }
    }
    // Provider-level window/token/output defaults reach catalog rows too.
    for m in &mut p.models {
        if m.context_tokens.is_none() {
            m.context_tokens = pc.context_tokens;
        }
    }
    p
}

/// Builds the provider table for a config.
pub fn build_providers(config: &Config, env: EnvLookup<'_>) -> IndexMap<String, Provider> {
    let mode = config.models.mode;
    let mut out: IndexMap<String, Provider> = IndexMap::new();
    if mode == ModelsMode::Merge {
        if let Some(cat) = builtin::catalog() {
            for (id, b) in &cat.providers {
                // Local-server templates only exist when configured.
                if b.hosted {
                    out.insert(id.clone(), from_builtin(id, b, env));
                }
            }
        }
    }
    for (id, pc) in &config.models.providers {
        let base = out
            .shift_remove(id)
            .or_else(|| builtin::provider(id).map(|b| from_builtin(id, b, env)));
        let p = overlay_provider(base, pc, mode);
        out.insert(id.clone(), p);
    }
    // Keep configured providers first (in file order), then the catalog's:
    // the order decides the local-first default (REF-3) and listings.
    out.sort_by(|_, a, _, b| b.configured.cmp(&a.configured));
    for key in config.agents.defaults.models.keys() {
        if let Some(id) = key.strip_suffix("/*") {
            if let Some(p) = out.values_mut().find(|p| p.id.eq_ignore_ascii_case(id)) {
                p.wildcard = true;
            }
        }
    }
    // Parsed once here; everything after reads `base`.
    for p in out.values_mut() {
        p.base = BaseUrl::parse(&p.base_url);
        p.endpoint = p
            .base
            .as_ref()
            .map_or(EndpointClass::Public, |b| EndpointClass::of(b.class));
        p.guard = std::sync::Arc::new(outbound_policy(p));
    }
    out
}

/// The origin of a URL as the guard compares it (`scheme://host[:port]`).
pub fn origin_of(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    u.host()?;
    Some(u.origin().ascii_serialization())
}

/// A provider's outbound rules: the origins the user configured for it are
/// trusted (loopback, LAN, tailnet included); a catalog provider nobody
/// configured trusts none, so its public name resolving to a private
/// address is refused.
fn outbound_policy(p: &Provider) -> OutboundPolicy {
    let mut trusted: Vec<String> = Vec::new();
    if p.configured {
        if let Some(b) = &p.base {
            trusted.push(b.origin.clone());
        }
        let health = p.local_service.as_ref().map(|s| s.health_url(&p.base_url));
        let urls = p
            .models
            .iter()
            .filter_map(|m| m.base_url.as_deref())
            .chain(health.as_deref());
        for u in urls {
            if let Some(o) = origin_of(u) {
                if !trusted.contains(&o) {
                    trusted.push(o);
                }
            }
        }
    }
    OutboundPolicy {
        provider: p.id.clone(),
        trusted,
        allow_private: p.allow_private_network,
        allow_special: p.allow_special_use == Some(true),
    }
}
