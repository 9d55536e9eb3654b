//! Spanned tree → typed [`Config`], with every structural check of CFG-4.
//!
//! The decoder never stops at the first problem: it collects every error and
//! warning with its position, and the caller refuses the whole file when any
//! error was found (never half-configured).

use std::path::PathBuf;
use std::time::Duration;

use clawgate_core::{ApiKind, ApiParse, Secret};
use indexmap::IndexMap;

use crate::diag::{Diagnostic, Loc, Located, Severity};
use crate::keys::{self, nearest};
use crate::model::*;
use crate::path::{child, index};
use crate::secret::{SecretForm, SecretValue};
use crate::secretref::{self, ExecProvider, RefSource, SecretProvider, SecretRef, Secrets};
use crate::source::Source;
use crate::tree::{Entry, Kind, Node, Span};

/// Looks an environment variable up; injectable so tests never touch the
/// process environment.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

static EMPTY_SOURCE: std::sync::LazyLock<Source> = std::sync::LazyLock::new(|| Source::new("", ""));

pub(crate) struct Decoder<'a> {
    /// The config file, then each `$include`d file (`Span::file`).
    srcs: &'a [Source],
    env: EnvLookup<'a>,
    /// `env.vars` from the file: used when the process lacks the variable.
    file_env: IndexMap<String, String>,
    /// `secrets.*`: the providers SecretRefs resolve through.
    pub secrets: Secrets,
    /// False: file and exec SecretRefs are not resolved (sandboxed loads).
    pub io: bool,
    pub diags: Vec<Diagnostic>,
}

impl<'a> Decoder<'a> {
    pub fn new(srcs: &'a [Source], env: EnvLookup<'a>) -> Self {
        Self {
            srcs,
            env,
            file_env: IndexMap::new(),
            secrets: Secrets::default(),
            io: true,
            diags: Vec::new(),
        }
    }

    fn loc(&self, span: Span, path: &str) -> Loc {
        let src = self.src(span);
        let (line, column) = src.line_col(span.start);
        Loc {
            line,
            column,
            path: path.to_string(),
            file: (span.file != 0).then(|| src.path().to_path_buf()),
        }
    }

    fn src(&self, span: Span) -> &'a Source {
        let srcs: &'a [Source] = self.srcs;
        srcs.get(usize::from(span.file))
            .or(srcs.first())
            .unwrap_or(&EMPTY_SOURCE)
    }

    fn main_path(&self) -> std::path::PathBuf {
        self.srcs
            .first()
            .map(|s| s.path().to_path_buf())
            .unwrap_or_default()
    }

    fn push(&mut self, severity: Severity, span: Span, path: &str, message: String) {
        let loc = self.loc(span, path);
        self.diags
            .push(Diagnostic::at(severity, self.main_path(), &loc, message));
    }

    fn error(&mut self, span: Span, path: &str, message: impl Into<String>) {
        self.push(Severity::Error, span, path, message.into());
    }

    fn warn(&mut self, span: Span, path: &str, message: impl Into<String>) {
        self.push(Severity::Warning, span, path, message.into());
    }

    fn secret(&self, written: &str) -> SecretValue {
        let env = |name: &str| {
            (self.env)(name)
                .filter(|v| !v.is_empty())
                .or_else(|| self.file_env.get(name).cloned())
        };
        SecretValue::resolve(written, &env)
    }

    // ----- typed readers -------------------------------------------------

    /// The entries of an object, or an error. Duplicate keys are errors.
    fn object<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n [Entry]> {
        let Kind::Object(entries) = &node.kind else {
            self.error(
                node.span,
                path,
                format!("expected an object, got {}", node.describe()),
            );
            return None;
        };
        for (i, e) in entries.iter().enumerate() {
            if let Some(first) = entries[..i].iter().find(|f| f.key == e.key) {
                let (line, _) = self.src(first.key_span).line_col(first.key_span.start);
                self.error(
                    e.key_span,
                    &child(path, &e.key),
                    format!("duplicate key (first defined on line {line})"),
                );
            }
        }
        Some(entries)
    }

    /// Checks keys against the known and OpenClaw-only sets.
    fn check_keys(&mut self, entries: &[Entry], path: &str, known: &[&str], foreign: &[&str]) {
        for e in entries {
            if known.contains(&e.key.as_str()) {
                continue;
            }
            let p = child(path, &e.key);
            if foreign.contains(&e.key.as_str()) {
                self.warn(
                    e.key_span,
                    &p,
                    "OpenClaw setting not used by clawgate; ignored",
                );
                continue;
            }
            let hint = nearest(&e.key, known)
                .map(|k| format!("; did you mean \"{k}\"?"))
                .unwrap_or_else(|| format!("; expected one of: {}", known.join(", ")));
            self.error(e.key_span, &p, format!("unknown key{hint}"));
        }
    }

    fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        match &node.kind {
            Kind::String(s) => Some(s.clone()),
            _ => {
                self.error(
                    node.span,
                    path,
                    format!("expected a string, got {}", node.describe()),
                );
                None
            }
        }
    }

    fn nonempty_string(&mut self, node: &Node, path: &str) -> Option<String> {
        let s = self.string(node, path)?;
        if s.trim().is_empty() {
            self.error(node.span, path, "expected a non-empty string, got \"\"");
            return None;
        }
        Some(s)
    }

    fn located_string(&mut self, node: &Node, path: &str) -> Option<Located<String>> {
        let s = self.nonempty_string(node, path)?;
        Some(Located::new(s, self.loc(node.span, path)))
    }

    fn bool(&mut self, node: &Node, path: &str) -> Option<bool> {
        match &node.kind {
            Kind::Bool(b) => Some(*b),
            _ => {
                self.error(
                    node.span,
                    path,
                    format!("expected true or false, got {}", node.describe()),
                );
                None
            }
        }
    }

    fn positive_int(&mut self, node: &Node, path: &str) -> Option<u64> {
        match &node.kind {
            Kind::Number(n) if n.as_u64().is_some_and(|v| v > 0) => n.as_u64(),
            _ => {
                self.error(
                    node.span,
                    path,
                    format!("expected a positive integer, got {}", node.describe()),
                );
                None
            }
        }
    }

    fn non_negative_int(&mut self, node: &Node, path: &str) -> Option<u64> {
        match &node.kind {
            Kind::Number(n) if n.as_u64().is_some() => n.as_u64(),
            _ => {
                self.error(
                    node.span,
                    path,
                    format!("expected a non-negative integer, got {}", node.describe()),
                );
                None
            }
        }
    }

    fn non_negative_number(&mut self, node: &Node, path: &str) -> Option<f64> {
        match &node.kind {
            Kind::Number(n) if n.value.is_finite() && n.value >= 0.0 => Some(n.value),
            _ => {
                self.error(
                    node.span,
                    path,
                    format!("expected a non-negative number, got {}", node.describe()),
                );
                None
            }
        }
    }

    fn array<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n [Node]> {
        match &node.kind {
            Kind::Array(items) => Some(items),
            _ => {
                self.error(
                    node.span,
                    path,
                    format!("expected an array, got {}", node.describe()),
                );
                None
            }
        }
    }

    fn string_list(&mut self, node: &Node, path: &str) -> Option<Vec<Located<String>>> {
        let items = self.array(node, path)?;
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            if let Some(s) = self.located_string(item, &index(path, i)) {
                out.push(s);
            }
        }
        Some(out)
    }

    fn json_map(&mut self, node: &Node, path: &str) -> JsonMap {
        match node.to_json() {
            serde_json::Value::Object(m) => m,
            _ => {
                self.error(
                    node.span,
                    path,
                    format!("expected an object, got {}", node.describe()),
                );
                JsonMap::new()
            }
        }
    }

    fn http_url(&mut self, node: &Node, path: &str) -> Option<String> {
        let s = self.nonempty_string(node, path)?;
        // Forms that parsers read differently (a backslash, userinfo,
        // spaces or control characters) are refused: every part of
        // clawgate must see the one host the user meant.
        let odd = s.contains('\\') || s.chars().any(|c| c.is_whitespace() || c.is_control());
        let userinfo = url::Url::parse(&s)
            .map(|u| !u.username().is_empty() || u.password().is_some())
            .unwrap_or(false);
        if odd || userinfo {
            self.error(
                node.span,
                path,
                format!(
                    "expected a plain http(s) URL (no backslash, no user@ part, no spaces), got {}; put credentials in apiKey or headers",
                    node.describe()
                ),
            );
            return None;
        }
        match url::Url::parse(&s) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(s),
            _ => {
                self.error(
                    node.span,
                    path,
                    format!("expected an http(s) URL, got {}", node.describe()),
                );
                None
            }
        }
    }

    fn secret_map(&mut self, node: &Node, path: &str) -> IndexMap<String, SecretValue> {
        let mut out = IndexMap::new();
        let Some(entries) = self.object(node, path) else {
            return out;
        };
        for e in entries {
            let p = child(path, &e.key);
            if let Some(sv) = self.secret_node(&e.value, &p) {
                out.insert(e.key.clone(), sv);
            }
        }
        out
    }

    fn warn_missing(&mut self, sv: &SecretValue, span: Span, path: &str) {
        for name in &sv.missing {
            self.warn(
                span,
                path,
                format!("environment variable {name} is not set; this value stays unresolved"),
            );
        }
    }

    // ----- sections ------------------------------------------------------

    pub fn config(&mut self, root: Option<&Node>, path: Option<PathBuf>) -> Config {
        let mut config = Config {
            path,
            ..Config::default()
        };
        let Some(root) = root else {
            return config;
        };
        let Some(entries) = self.object(root, "") else {
            return config;
        };
        self.check_keys(entries, "", keys::ROOT, keys::ROOT_FOREIGN);
        // `env` first: its variables feed `${VAR}` resolution everywhere else.
        if let Some(e) = entries.iter().find(|e| e.key == "env") {
            self.env_section(&e.value);
        }
        // Then the secret providers every SecretRef below resolves through.
        if let Some(e) = entries.iter().find(|e| e.key == "secrets") {
            self.secrets_section(&e.value);
        }
        for e in entries {
            match e.key.as_str() {
                "agents" => config.agents = self.agents(&e.value),
                "models" => config.models = self.models(&e.value),
                "gateway" => config.gateway = self.gateway(&e.value),
                "auth" => config.auth = self.auth(&e.value),
                _ => {}
            }
        }
        config.secrets = self.secrets.clone();
        config
    }

    fn secrets_section(&mut self, node: &Node) {
        let Some(entries) = self.object(node, "secrets") else {
            return;
        };
        self.check_keys(entries, "secrets", keys::SECRETS, &[]);
        for e in entries {
            let p = child("secrets", &e.key);
            match e.key.as_str() {
                "providers" => {
                    let Some(list) = self.object(&e.value, &p) else {
                        continue;
                    };
                    for pe in list {
                        let pp = child(&p, &pe.key);
                        if !secretref::valid_provider(&pe.key) {
                            self.error(
                                pe.key_span,
                                &pp,
                                "a secret provider name must match ^[a-z][a-z0-9_-]{0,63}$",
                            );
                            continue;
                        }
                        if let Some(sp) = self.secret_provider(&pe.value, &pp) {
                            self.secrets.providers.insert(pe.key.clone(), sp);
                        }
                    }
                }
                "defaults" => {
                    let Some(list) = self.object(&e.value, &p) else {
                        continue;
                    };
                    for d in list {
                        let dp = child(&p, &d.key);
                        let Some(source) = RefSource::parse(&d.key) else {
                            self.error(
                                d.key_span,
                                &dp,
                                "unknown source; expected env, file or exec",
                            );
                            continue;
                        };
                        if let Some(name) = self.nonempty_string(&d.value, &dp) {
                            self.secrets.defaults.insert(source.as_str(), name);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    fn secret_provider(&mut self, node: &Node, path: &str) -> Option<SecretProvider> {
        let entries = self.object(node, path)?;
        self.check_keys(entries, path, keys::SECRET_PROVIDER, &[]);
        let field = |k: &str| entries.iter().find(|e| e.key == k);
        let source = match field("source") {
            Some(e) => self.nonempty_string(&e.value, &child(path, "source"))?,
            None => {
                self.error(
                    node.span,
                    path,
                    "missing required key \"source\" (env, file or exec)",
                );
                return None;
            }
        };
        let flag = |d: &mut Self, k: &str| -> bool {
            field(k)
                .and_then(|e| d.bool(&e.value, &child(path, k)))
                .unwrap_or(false)
        };
        let strings = |d: &mut Self, k: &str| -> Vec<String> {
            field(k)
                .and_then(|e| d.string_list(&e.value, &child(path, k)))
                .map(|l| l.into_iter().map(|s| s.value).collect())
                .unwrap_or_default()
        };
        match source.as_str() {
            "env" => Some(SecretProvider::Env {
                allowlist: field("allowlist").map(|_| strings(self, "allowlist")),
            }),
            "file" => {
                let Some(pe) = field("path") else {
                    self.error(node.span, path, "a file provider needs \"path\"");
                    return None;
                };
                let file = self.nonempty_string(&pe.value, &child(path, "path"))?;
                let single_value = match field("mode") {
                    None => false,
                    Some(m) => match self.string(&m.value, &child(path, "mode")).as_deref() {
                        Some("json") => false,
                        Some("singleValue") => true,
                        _ => {
                            self.error(
                                m.value.span,
                                &child(path, "mode"),
                                "expected \"json\" or \"singleValue\"",
                            );
                            return None;
                        }
                    },
                };
                // Relative to the file it is written in, like `$include`.
                let written = PathBuf::from(&file);
                let path = if written.is_absolute() || file.starts_with('~') {
                    written
                } else {
                    self.src(pe.value.span)
                        .path()
                        .parent()
                        .map(|d| d.join(&written))
                        .unwrap_or(written)
                };
                Some(SecretProvider::File {
                    path,
                    single_value,
                    allow_insecure_path: flag(self, "allowInsecurePath"),
                })
            }
            "exec" => {
                let Some(ce) = field("command") else {
                    self.error(
                        node.span,
                        path,
                        "an exec provider needs \"command\" (an absolute path)",
                    );
                    return None;
                };
                let command =
                    PathBuf::from(self.nonempty_string(&ce.value, &child(path, "command"))?);
                if !command.is_absolute() {
                    self.error(
                        ce.value.span,
                        &child(path, "command"),
                        "expected an absolute path (no shell is used)",
                    );
                    return None;
                }
                let ms = |d: &mut Self, k: &str| {
                    field(k).and_then(|e| d.positive_int(&e.value, &child(path, k)))
                };
                let timeout = ms(self, "timeoutMs")
                    .map(|t| Duration::from_millis(t.min(120_000)))
                    .unwrap_or(ExecProvider::DEFAULT_TIMEOUT);
                let max_output_bytes = ms(self, "maxOutputBytes")
                    .map(|b| (b as usize).min(16 * 1024 * 1024))
                    .unwrap_or(ExecProvider::DEFAULT_MAX_OUTPUT);
                Some(SecretProvider::Exec(ExecProvider {
                    command,
                    args: strings(self, "args"),
                    pass_env: strings(self, "passEnv"),
                    json_only: field("jsonOnly")
                        .and_then(|e| self.bool(&e.value, &child(path, "jsonOnly")))
                        .unwrap_or(true),
                    allow_symlink_command: flag(self, "allowSymlinkCommand"),
                    trusted_dirs: strings(self, "trustedDirs")
                        .into_iter()
                        .map(PathBuf::from)
                        .collect(),
                    timeout,
                    max_output_bytes,
                }))
            }
            other => {
                let e = field("source").map(|e| e.value.span).unwrap_or(node.span);
                self.error(
                    e,
                    &child(path, "source"),
                    format!("unknown source \"{other}\"; expected env, file or exec"),
                );
                None
            }
        }
    }

    /// A secret-bearing value: a string (`${ENV}`, a name, a marker, a
    /// literal) or a SecretRef object, resolved now. An unresolved ref is
    /// an error at its key path.
    fn secret_node(&mut self, node: &Node, path: &str) -> Option<SecretValue> {
        if let Kind::String(s) = &node.kind {
            let sv = self.secret(s);
            self.warn_missing(&sv, node.span, path);
            return Some(sv);
        }
        let Kind::Object(entries) = &node.kind else {
            self.error(
                node.span,
                path,
                format!(
                    "expected a string or a SecretRef object, got {}",
                    node.describe()
                ),
            );
            return None;
        };
        self.check_keys(entries, path, &["source", "provider", "id"], &[]);
        let get = |k: &str| entries.iter().find(|e| e.key == k);
        let source_text = match get("source") {
            Some(e) => self.nonempty_string(&e.value, &child(path, "source"))?,
            None => {
                self.error(
                    node.span,
                    path,
                    "a SecretRef needs \"source\" (env, file or exec)",
                );
                return None;
            }
        };
        let Some(source) = RefSource::parse(&source_text) else {
            self.error(
                node.span,
                &child(path, "source"),
                format!("unknown source \"{source_text}\"; expected env, file or exec"),
            );
            return None;
        };
        let id = match get("id") {
            Some(e) => self.nonempty_string(&e.value, &child(path, "id"))?,
            None => {
                self.error(node.span, path, "a SecretRef needs \"id\"");
                return None;
            }
        };
        if let Err(why) = secretref::valid_id(source, &id) {
            self.error(node.span, &child(path, "id"), why);
            return None;
        }
        let provider = match get("provider") {
            Some(e) => self.nonempty_string(&e.value, &child(path, "provider"))?,
            None => self
                .secrets
                .defaults
                .get(source.as_str())
                .cloned()
                .unwrap_or_else(|| "default".to_string()),
        };
        if !secretref::valid_provider(&provider) {
            self.error(
                node.span,
                &child(path, "provider"),
                "a provider name must match ^[a-z][a-z0-9_-]{0,63}$",
            );
            return None;
        }
        let r = SecretRef {
            source: source.as_str(),
            provider,
            id,
        };
        let env = |name: &str| {
            (self.env)(name)
                .filter(|v| !v.is_empty())
                .or_else(|| self.file_env.get(name).cloned())
        };
        if !self.io && source != RefSource::Env {
            self.error(
                node.span,
                path,
                format!("SecretRef {r} is not resolved in a sandboxed load"),
            );
            return None;
        }
        let res = secretref::Resolver::new(&self.secrets, &env).resolve(&r);
        for w in res.warnings {
            self.warn(node.span, path, w);
        }
        match res.value {
            Ok(v) => Some(SecretValue {
                form: SecretForm::Ref(r),
                resolved: Some(Secret::new(v)),
                missing: vec![],
            }),
            Err(why) => {
                self.error(
                    node.span,
                    path,
                    format!("SecretRef {r} did not resolve: {why}"),
                );
                None
            }
        }
    }

    fn env_section(&mut self, node: &Node) {
        let Some(entries) = self.object(node, "env") else {
            return;
        };
        for e in entries {
            let p = child("env", &e.key);
            match e.key.as_str() {
                "vars" => {
                    let Some(vars) = self.object(&e.value, &p) else {
                        continue;
                    };
                    for v in vars {
                        let vp = child(&p, &v.key);
                        if let Some(s) = self.string(&v.value, &vp) {
                            self.file_env.insert(v.key.clone(), s);
                        }
                    }
                }
                k if keys::ENV_FOREIGN.contains(&k) => self.warn(
                    e.key_span,
                    &p,
                    "OpenClaw setting not used by clawgate; ignored",
                ),
                // OpenClaw also takes inline `env: { NAME: "value" }`.
                k if crate::secret::is_env_name(k) => {
                    if let Some(s) = self.string(&e.value, &p) {
                        self.file_env.insert(e.key.clone(), s);
                    }
                }
                _ => self.error(
                    e.key_span,
                    &p,
                    "unknown key; expected \"vars\" or an environment variable name (A-Z, 0-9, _)",
                ),
            }
        }
    }

    fn agents(&mut self, node: &Node) -> Agents {
        let mut agents = Agents::default();
        let Some(entries) = self.object(node, "agents") else {
            return agents;
        };
        self.check_keys(entries, "agents", keys::AGENTS, &[]);
        for e in entries {
            let p = child("agents", &e.key);
            match e.key.as_str() {
                "defaults" => agents.defaults = self.agent(&e.value, &p),
                "entries" => {
                    let Some(list) = self.object(&e.value, &p) else {
                        continue;
                    };
                    for a in list {
                        let ap = child(&p, &a.key);
                        let settings = self.agent(&a.value, &ap);
                        agents.entries.insert(a.key.clone(), settings);
                    }
                }
                "list" => self.warn(
                    e.key_span,
                    &p,
                    "retired OpenClaw key; use agents.entries.<id> instead (ignored)",
                ),
                _ => {}
            }
        }
        agents
    }

    fn agent(&mut self, node: &Node, path: &str) -> AgentSettings {
        let mut a = AgentSettings {
            loc: self.loc(node.span, path),
            ..AgentSettings::default()
        };
        let Some(entries) = self.object(node, path) else {
            return a;
        };
        self.check_keys(entries, path, keys::AGENT, keys::AGENT_FOREIGN);
        for e in entries {
            let p = child(path, &e.key);
            let v = &e.value;
            match e.key.as_str() {
                "model" => a.model = self.model_selection(v, &p),
                "models" => a.models = self.model_options(v, &p),
                "modelPolicy" => {
                    if let Some(mp) = self.object(v, &p) {
                        self.check_keys(mp, &p, keys::MODEL_POLICY, &[]);
                        if let Some(allow) = mp.iter().find(|x| x.key == "allow") {
                            a.model_policy_allow =
                                self.string_list(&allow.value, &child(&p, "allow"));
                        }
                    }
                }
                "timeoutSeconds" => a.timeout_seconds = self.non_negative_int(v, &p),
                "compaction" => a.compaction = self.compaction(v, &p),
                "dataPolicy" => {
                    a.data_policy = match &v.kind {
                        Kind::String(s) if s == "local-only" => Some(DataPolicy::LocalOnly),
                        Kind::String(s) if s == "allow-hosted" => Some(DataPolicy::AllowHosted),
                        _ => {
                            self.error(
                                v.span,
                                &p,
                                format!(
                                    "expected \"local-only\" or \"allow-hosted\", got {}",
                                    v.describe()
                                ),
                            );
                            None
                        }
                    }
                }
                "contextTokens" => a.context_tokens = self.positive_int(v, &p),
                "params" => a.params = self.json_map(v, &p),
                "tools" => a.tools = self.tool_policy(v, &p),
                _ => {}
            }
        }
        a
    }

    fn tool_policy(&mut self, node: &Node, path: &str) -> Option<ToolPolicy> {
        let entries = self.object(node, path)?;
        let mut t = ToolPolicy::default();
        let names = |d: &mut Self, e: &Entry, p: &str| -> Vec<String> {
            d.string_list(&e.value, p)
                .map(|l| l.into_iter().map(|s| s.value).collect())
                .unwrap_or_default()
        };
        for e in entries {
            let p = child(path, &e.key);
            match e.key.as_str() {
                "allow" => t.allow = Some(names(self, e, &p)),
                "alsoAllow" => t.also_allow = names(self, e, &p),
                "deny" => t.deny = names(self, e, &p),
                // OpenClaw's own tool settings (profile, exec, fs, …).
                _ => self.warn(
                    e.key_span,
                    &p,
                    "OpenClaw tool setting not used by clawgate; ignored (clawgate enforces tools.allow and tools.deny on the tools clients send)",
                ),
            }
        }
        Some(t)
    }

    fn model_selection(&mut self, node: &Node, path: &str) -> Option<ModelSelection> {
        match &node.kind {
            Kind::String(_) => Some(ModelSelection {
                primary: self.located_string(node, path),
                fallbacks: None,
                string_form: true,
            }),
            Kind::Object(_) => {
                let entries = self.object(node, path)?;
                self.check_keys(entries, path, keys::MODEL_SELECTION, &[]);
                let mut sel = ModelSelection::default();
                for e in entries {
                    let p = child(path, &e.key);
                    match e.key.as_str() {
                        "primary" => sel.primary = self.located_string(&e.value, &p),
                        "fallbacks" => sel.fallbacks = self.string_list(&e.value, &p),
                        _ => {}
                    }
                }
                Some(sel)
            }
            _ => {
                self.error(
                    node.span,
                    path,
                    format!(
                        "expected \"provider/model\" or {{ primary, fallbacks }}, got {}",
                        node.describe()
                    ),
                );
                None
            }
        }
    }

    fn model_options(&mut self, node: &Node, path: &str) -> IndexMap<String, ModelOptions> {
        let mut out = IndexMap::new();
        let Some(entries) = self.object(node, path) else {
            return out;
        };
        for e in entries {
            let p = child(path, &e.key);
            let key = Located::new(e.key.clone(), self.loc(e.key_span, &p));
            if !e.key.contains('/') {
                self.error(
                    e.key_span,
                    &p,
                    "expected a \"provider/model\" key (or \"provider/*\")",
                );
                continue;
            }
            let mut opts = ModelOptions {
                key,
                alias: None,
                params: JsonMap::new(),
            };
            if let Some(fields) = self.object(&e.value, &p) {
                self.check_keys(fields, &p, keys::MODEL_OPTIONS, keys::MODEL_OPTIONS_FOREIGN);
                for f in fields {
                    let fp = child(&p, &f.key);
                    match f.key.as_str() {
                        "alias" => opts.alias = self.located_string(&f.value, &fp),
                        "params" => opts.params = self.json_map(&f.value, &fp),
                        _ => {}
                    }
                }
            }
            out.insert(e.key.clone(), opts);
        }
        out
    }

    fn compaction(&mut self, node: &Node, path: &str) -> Option<Compaction> {
        let entries = self.object(node, path)?;
        self.check_keys(entries, path, keys::COMPACTION, keys::COMPACTION_FOREIGN);
        let mut c = Compaction::default();
        for e in entries {
            let p = child(path, &e.key);
            let v = &e.value;
            match e.key.as_str() {
                "mode" => {
                    c.mode = self.string(v, &p);
                    if let Some(m) = &c.mode {
                        if !["default", "safeguard", "off"].contains(&m.as_str()) {
                            self.error(
                                v.span,
                                &p,
                                format!(
                                    "expected \"default\", \"safeguard\" or \"off\", got {}",
                                    v.describe()
                                ),
                            );
                        }
                    }
                }
                "enabled" => c.enabled = self.bool(v, &p),
                "keepRecentTokens" => c.keep_recent_tokens = self.positive_int(v, &p),
                "reserveTokens" => c.reserve_tokens = self.non_negative_int(v, &p),
                "reserveTokensFloor" => c.reserve_tokens_floor = self.non_negative_int(v, &p),
                "model" => c.model = self.located_string(v, &p),
                "timeoutSeconds" => c.timeout_seconds = self.positive_int(v, &p),
                _ => {}
            }
        }
        Some(c)
    }

    fn models(&mut self, node: &Node) -> Models {
        let mut m = Models::default();
        let Some(entries) = self.object(node, "models") else {
            return m;
        };
        self.check_keys(entries, "models", keys::MODELS, keys::MODELS_FOREIGN);
        for e in entries {
            let p = child("models", &e.key);
            match e.key.as_str() {
                "mode" => match &e.value.kind {
                    Kind::String(s) if s == "merge" => m.mode = ModelsMode::Merge,
                    Kind::String(s) if s == "replace" => m.mode = ModelsMode::Replace,
                    _ => self.error(
                        e.value.span,
                        &p,
                        format!(
                            "expected \"merge\" or \"replace\", got {}",
                            e.value.describe()
                        ),
                    ),
                },
                "providers" => {
                    let Some(list) = self.object(&e.value, &p) else {
                        continue;
                    };
                    for pe in list {
                        let pp = child(&p, &pe.key);
                        if let Some(dup) = m
                            .providers
                            .keys()
                            .find(|k| k.eq_ignore_ascii_case(&pe.key))
                            .cloned()
                        {
                            self.error(
                                pe.key_span,
                                &pp,
                                format!(
                                    "provider id clashes with \"{dup}\" (refs compare case-insensitively)"
                                ),
                            );
                            continue;
                        }
                        if let Some(provider) = self.provider(pe, &pp) {
                            m.providers.insert(pe.key.clone(), provider);
                        }
                    }
                }
                "pricing" => {}
                _ => {}
            }
        }
        m
    }

    fn provider(&mut self, pe: &Entry, path: &str) -> Option<ProviderConfig> {
        if pe.key.is_empty() || pe.key.contains('/') || pe.key.trim() != pe.key {
            self.error(
                pe.key_span,
                path,
                "provider id must be non-empty, without \"/\" or surrounding spaces",
            );
            return None;
        }
        let entries = self.object(&pe.value, path)?;
        self.check_keys(entries, path, keys::PROVIDER, keys::PROVIDER_FOREIGN);
        let mut p = ProviderConfig {
            id: pe.key.clone(),
            loc: self.loc(pe.key_span, path),
            ..ProviderConfig::default()
        };
        for e in entries {
            let kp = child(path, &e.key);
            let v = &e.value;
            match e.key.as_str() {
                "baseUrl" | "baseURL" => {
                    if e.key == "baseURL" && entries.iter().any(|x| x.key == "baseUrl") {
                        self.error(
                            e.key_span,
                            &kp,
                            "baseUrl is given twice (baseUrl and baseURL)",
                        );
                    }
                    p.base_url = self.http_url(v, &kp);
                }
                "apiKey" => {
                    if let Some(sv) = self.secret_node(v, &kp) {
                        p.api_key = Some(sv);
                    }
                }
                "api" => {
                    let (api, unsupported) = self.api(v, &kp);
                    p.api = api;
                    p.unsupported_api = unsupported;
                }
                "headers" => p.headers = self.secret_map(v, &kp),
                "timeoutSeconds" => p.timeout_seconds = self.positive_int(v, &kp),
                "request" => {
                    if let Some(req) = self.object(v, &kp) {
                        self.check_keys(req, &kp, keys::REQUEST, keys::REQUEST_FOREIGN);
                        for r in req {
                            let rp = child(&kp, &r.key);
                            match r.key.as_str() {
                                "allowPrivateNetwork" => {
                                    p.allow_private_network = self.bool(&r.value, &rp)
                                }
                                "allowSpecialUseAddresses" => {
                                    p.allow_special_use = self.bool(&r.value, &rp)
                                }
                                "headers" => {
                                    let extra = self.secret_map(&r.value, &rp);
                                    p.headers.extend(extra);
                                }
                                _ => {}
                            }
                        }
                    }
                }
                "localService" => p.local_service = self.local_service(v, &kp),
                "maxConcurrent" => {
                    if let Some(n) = self.non_negative_int(v, &kp) {
                        match u32::try_from(n) {
                            Ok(n) if n <= 100_000 => p.max_concurrent = Some(n),
                            _ => self.error(
                                v.span,
                                &kp,
                                format!("expected at most 100000 (0 = no limit), got {n}"),
                            ),
                        }
                    }
                }
                "spillAfterMs" => p.spill_after_ms = self.non_negative_int(v, &kp),
                "models" => p.models = self.model_rows(v, &kp, &pe.key),
                "maxTokens" => p.max_tokens = self.positive_int(v, &kp),
                "contextWindow" => p.context_window = self.positive_int(v, &kp),
                "contextTokens" => p.context_tokens = self.positive_int(v, &kp),
                "params" => p.params = self.json_map(v, &kp),
                _ => {}
            }
        }
        Some(p)
    }

    fn api(&mut self, node: &Node, path: &str) -> (Option<ApiKind>, Option<String>) {
        let Some(s) = self.string(node, path) else {
            return (None, None);
        };
        match ApiKind::parse(&s) {
            ApiParse::Supported(k) => (Some(k), None),
            ApiParse::Legacy { kind, written } => {
                self.warn(
                    node.span,
                    path,
                    format!("\"{written}\" is a retired spelling; use \"{kind}\""),
                );
                (Some(kind), None)
            }
            ApiParse::Unsupported(v) => {
                self.warn(
                    node.span,
                    path,
                    format!(
                        "api \"{v}\" is not implemented by clawgate; this provider is skipped (supported: openai-completions, openai-responses, anthropic-messages)"
                    ),
                );
                (None, Some(v))
            }
            ApiParse::Unknown(v) => {
                let names: Vec<&str> = ApiKind::ALL.iter().map(|k| k.as_str()).collect();
                let hint = nearest(&v, &names)
                    .map(|k| format!("; did you mean \"{k}\"?"))
                    .unwrap_or_default();
                self.error(
                    node.span,
                    path,
                    format!(
                        "unknown api {}: expected one of openai-completions, openai-responses, anthropic-messages{hint}",
                        node.describe()
                    ),
                );
                (None, None)
            }
        }
    }

    fn local_service(&mut self, node: &Node, path: &str) -> Option<LocalService> {
        let entries = self.object(node, path)?;
        self.check_keys(entries, path, keys::LOCAL_SERVICE, &[]);
        let mut ls = LocalService {
            command: PathBuf::new(),
            args: Vec::new(),
            cwd: None,
            env: IndexMap::new(),
            health_url: None,
            ready_timeout_ms: LocalService::DEFAULT_READY_TIMEOUT_MS,
            idle_stop_ms: 0,
            group: None,
            warm_up: false,
        };
        let mut has_command = false;
        for e in entries {
            let p = child(path, &e.key);
            let v = &e.value;
            match e.key.as_str() {
                "command" => {
                    if let Some(c) = self.nonempty_string(v, &p) {
                        let cmd = PathBuf::from(&c);
                        if cmd.is_absolute() {
                            ls.command = cmd;
                            has_command = true;
                        } else {
                            self.error(
                                v.span,
                                &p,
                                format!(
                                    "expected an absolute path (no PATH lookup), got {}",
                                    v.describe()
                                ),
                            );
                            has_command = true;
                        }
                    } else {
                        has_command = true;
                    }
                }
                "args" => {
                    if let Some(list) = self.string_list(v, &p) {
                        ls.args = list.into_iter().map(|l| l.value).collect();
                    }
                }
                "cwd" => ls.cwd = self.nonempty_string(v, &p).map(PathBuf::from),
                "env" => ls.env = self.secret_map(v, &p),
                "healthUrl" => ls.health_url = self.http_url(v, &p),
                "readyTimeoutMs" => {
                    if let Some(t) = self.positive_int(v, &p) {
                        ls.ready_timeout_ms = t;
                    }
                }
                "idleStopMs" => {
                    if let Some(t) = self.non_negative_int(v, &p) {
                        ls.idle_stop_ms = t;
                    }
                }
                "group" => ls.group = self.nonempty_string(v, &p),
                "warmUp" => ls.warm_up = self.bool(v, &p).unwrap_or(false),
                _ => {}
            }
        }
        if !has_command {
            self.error(node.span, path, "missing required key \"command\"");
            return None;
        }
        Some(ls)
    }

    fn model_rows(&mut self, node: &Node, path: &str, provider: &str) -> Option<Vec<ModelConfig>> {
        let items = self.array(node, path)?;
        let mut rows: Vec<ModelConfig> = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let ip = index(path, i);
            let Some(row) = self.model_row(item, &ip, provider) else {
                continue;
            };
            if let Some(first) = rows.iter().find(|r| r.id.eq_ignore_ascii_case(&row.id)) {
                let msg = format!(
                    "duplicate model id \"{}\" (also at {})",
                    row.id, first.loc.path
                );
                let loc = row.loc.clone();
                self.diags
                    .push(Diagnostic::at(Severity::Error, self.main_path(), &loc, msg));
                continue;
            }
            rows.push(row);
        }
        Some(rows)
    }

    fn model_row(&mut self, node: &Node, path: &str, provider: &str) -> Option<ModelConfig> {
        let entries = self.object(node, path)?;
        self.check_keys(entries, path, keys::MODEL, keys::MODEL_FOREIGN);
        let Some(id_entry) = entries.iter().find(|e| e.key == "id") else {
            self.error(node.span, path, "missing required key \"id\"");
            return None;
        };
        let id_path = child(path, "id");
        let id = self.nonempty_string(&id_entry.value, &id_path)?;
        if let Some(rest) = id.strip_prefix(provider).and_then(|r| r.strip_prefix('/')) {
            self.error(
                id_entry.value.span,
                &id_path,
                format!(
                    "model id repeats the provider prefix; write \"{rest}\" (the ref is then \"{provider}/{rest}\")"
                ),
            );
            return None;
        }
        let mut m = ModelConfig {
            id,
            loc: self.loc(id_entry.value.span, &id_path),
            ..ModelConfig::default()
        };
        let mut spans: IndexMap<&str, Span> = IndexMap::new();
        for e in entries {
            let p = child(path, &e.key);
            let v = &e.value;
            spans.insert(e.key.as_str(), v.span);
            match e.key.as_str() {
                "name" => m.name = self.nonempty_string(v, &p),
                "reasoning" => m.reasoning = self.bool(v, &p),
                "input" => m.input = self.modalities(v, &p),
                "cost" => m.cost = self.cost(v, &p),
                "contextWindow" => m.context_window = self.positive_int(v, &p),
                "contextTokens" => m.context_tokens = self.positive_int(v, &p),
                "maxTokens" => m.max_tokens = self.positive_int(v, &p),
                "compat" => m.compat = self.compat(v, &p),
                "params" => m.params = self.json_map(v, &p),
                "api" => m.api = self.api(v, &p).0,
                "baseUrl" => m.base_url = self.http_url(v, &p),
                "headers" => {
                    if let Some(hs) = self.object(v, &p) {
                        for h in hs {
                            let hp = child(&p, &h.key);
                            if let Some(s) = self.string(&h.value, &hp) {
                                m.headers.insert(h.key.clone(), s);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        if let (Some(ct), Some(cw)) = (m.context_tokens, m.context_window) {
            if ct > cw {
                let span = spans.get("contextTokens").copied().unwrap_or_default();
                self.error(
                    span,
                    &child(path, "contextTokens"),
                    format!("contextTokens ({ct}) is larger than contextWindow ({cw})"),
                );
            }
        }
        if let (Some(mt), Some(cw)) = (m.max_tokens, m.context_window) {
            if mt > cw {
                let span = spans.get("maxTokens").copied().unwrap_or_default();
                self.error(
                    span,
                    &child(path, "maxTokens"),
                    format!("maxTokens ({mt}) is larger than contextWindow ({cw})"),
                );
            }
        }
        Some(m)
    }

    fn modalities(&mut self, node: &Node, path: &str) -> Option<Vec<Modality>> {
        let items = self.array(node, path)?;
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let p = index(path, i);
            let Some(s) = self.string(item, &p) else {
                continue;
            };
            match Modality::parse(&s) {
                Some(m) => out.push(m),
                None => {
                    let all = ["text", "image", "video", "audio", "document"];
                    let hint = nearest(&s, &all)
                        .map(|k| format!("; did you mean \"{k}\"?"))
                        .unwrap_or_default();
                    self.error(
                        item.span,
                        &p,
                        format!(
                            "unknown input kind {}: expected text, image, video, audio or document{hint}",
                            item.describe()
                        ),
                    );
                }
            }
        }
        Some(out)
    }

    fn cost(&mut self, node: &Node, path: &str) -> Option<Cost> {
        let entries = self.object(node, path)?;
        self.check_keys(entries, path, keys::COST, keys::COST_FOREIGN);
        let mut c = Cost::default();
        for e in entries {
            let p = child(path, &e.key);
            let slot = match e.key.as_str() {
                "input" => &mut c.input,
                "output" => &mut c.output,
                "cacheRead" => &mut c.cache_read,
                "cacheWrite" => &mut c.cache_write,
                _ => continue,
            };
            if let Some(v) = self.non_negative_number(&e.value, &p) {
                *slot = v;
            }
        }
        Some(c)
    }

    fn compat(&mut self, node: &Node, path: &str) -> Compat {
        let mut c = Compat::default();
        let Some(entries) = self.object(node, path) else {
            return c;
        };
        for e in entries {
            let p = child(path, &e.key);
            let v = &e.value;
            match e.key.as_str() {
                "requiresStringContent" => c.requires_string_content = self.bool(v, &p),
                "strictMessageKeys" => c.strict_message_keys = self.bool(v, &p),
                "supportsTools" => c.supports_tools = self.bool(v, &p),
                "supportsUsageInStreaming" => c.supports_usage_in_streaming = self.bool(v, &p),
                "supportsDeveloperRole" => c.supports_developer_role = self.bool(v, &p),
                "supportedReasoningEfforts" => {
                    c.supported_reasoning_efforts = self
                        .string_list(v, &p)
                        .map(|l| l.into_iter().map(|x| x.value).collect())
                }
                "reasoningEffortMap" => {
                    if let Some(map) = self.object(v, &p) {
                        let mut out = IndexMap::new();
                        for m in map {
                            if let Some(s) = self.string(&m.value, &child(&p, &m.key)) {
                                out.insert(m.key.clone(), s);
                            }
                        }
                        c.reasoning_effort_map = Some(out);
                    }
                }
                "maxTokensField" => {
                    c.max_tokens_field = match &v.kind {
                        Kind::String(s) if s == "max_tokens" => Some(MaxTokensField::MaxTokens),
                        Kind::String(s) if s == "max_completion_tokens" => {
                            Some(MaxTokensField::MaxCompletionTokens)
                        }
                        _ => {
                            self.error(
                                v.span,
                                &p,
                                format!(
                                    "expected \"max_tokens\" or \"max_completion_tokens\", got {}",
                                    v.describe()
                                ),
                            );
                            None
                        }
                    }
                }
                // OpenClaw adds compat flags between releases: warn, never fail.
                other => {
                    let hint = nearest(other, keys::COMPAT)
                        .map(|k| format!(" (did you mean \"{k}\"?)"))
                        .unwrap_or_default();
                    self.warn(
                        e.key_span,
                        &p,
                        format!("compat flag not known to clawgate; ignored{hint}"),
                    );
                }
            }
        }
        c
    }

    fn gateway(&mut self, node: &Node) -> Gateway {
        let mut g = Gateway::default();
        let Some(entries) = self.object(node, "gateway") else {
            return g;
        };
        self.check_keys(entries, "gateway", keys::GATEWAY, keys::GATEWAY_FOREIGN);
        for e in entries {
            let p = child("gateway", &e.key);
            let v = &e.value;
            match e.key.as_str() {
                "bind" => {
                    if let Some(b) = self.nonempty_string(v, &p) {
                        let ok = matches!(b.as_str(), "loopback" | "lan" | "localhost")
                            || b.parse::<std::net::IpAddr>().is_ok();
                        if ok {
                            g.bind = b;
                        } else {
                            self.error(
                                v.span,
                                &p,
                                format!(
                                    "expected \"loopback\", \"lan\" or an IP address, got {}",
                                    v.describe()
                                ),
                            );
                        }
                    }
                }
                "port" => {
                    if let Some(port) = self.positive_int(v, &p) {
                        match u16::try_from(port) {
                            Ok(port) => g.port = port,
                            Err(_) => self.error(
                                v.span,
                                &p,
                                format!("expected a port between 1 and 65535, got {port}"),
                            ),
                        }
                    }
                }
                "auth" => {
                    let Some(auth) = self.object(v, &p) else {
                        continue;
                    };
                    self.check_keys(auth, &p, keys::GATEWAY_AUTH, keys::GATEWAY_AUTH_FOREIGN);
                    for a in auth {
                        let ap = child(&p, &a.key);
                        match a.key.as_str() {
                            "mode" => {
                                g.auth_mode = match &a.value.kind {
                                    Kind::String(s) if s == "token" => Some(AuthMode::Token),
                                    Kind::String(s) if s == "password" => Some(AuthMode::Password),
                                    Kind::String(s) if s == "none" => Some(AuthMode::None),
                                    _ => {
                                        self.error(
                                            a.value.span,
                                            &ap,
                                            format!(
                                                "expected \"token\", \"password\" or \"none\", got {}",
                                                a.value.describe()
                                            ),
                                        );
                                        None
                                    }
                                }
                            }
                            "token" | "password" => {
                                let sv = match &a.value.kind {
                                    Kind::String(_) => self
                                        .nonempty_string(&a.value, &ap)
                                        .and_then(|_| self.secret_node(&a.value, &ap)),
                                    _ => self.secret_node(&a.value, &ap),
                                };
                                if let Some(sv) = sv {
                                    if a.key == "token" {
                                        g.token = Some(sv);
                                    } else {
                                        g.password = Some(sv);
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
                "http" => {
                    let Some(http) = self.object(v, &p) else {
                        continue;
                    };
                    self.check_keys(http, &p, keys::GATEWAY_HTTP, &[]);
                    for h in http {
                        let hp = child(&p, &h.key);
                        if h.key == "allowedHosts" {
                            if let Some(list) = self.string_list(&h.value, &hp) {
                                g.allowed_hosts = list
                                    .into_iter()
                                    .map(|l| l.value.trim().to_ascii_lowercase())
                                    .collect();
                            }
                            continue;
                        }
                        let Some(eps) = self.object(&h.value, &hp) else {
                            continue;
                        };
                        self.check_keys(eps, &hp, keys::GATEWAY_ENDPOINTS, &[]);
                        for ep in eps {
                            let epp = child(&hp, &ep.key);
                            let Some(fields) = self.object(&ep.value, &epp) else {
                                continue;
                            };
                            self.check_keys(fields, &epp, keys::GATEWAY_ENDPOINT, &[]);
                            if let Some(en) = fields.iter().find(|f| f.key == "enabled") {
                                if let Some(b) = self.bool(&en.value, &child(&epp, "enabled")) {
                                    g.endpoints.insert(ep.key.clone(), b);
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        g
    }

    fn auth(&mut self, node: &Node) -> AuthProfiles {
        let mut out = AuthProfiles::default();
        let Some(entries) = self.object(node, "auth") else {
            return out;
        };
        self.check_keys(entries, "auth", keys::AUTH, keys::AUTH_FOREIGN);
        for e in entries {
            let p = child("auth", &e.key);
            match e.key.as_str() {
                "profiles" => {
                    let Some(list) = self.object(&e.value, &p) else {
                        continue;
                    };
                    for pe in list {
                        let pp = child(&p, &pe.key);
                        let Some(fields) = self.object(&pe.value, &pp) else {
                            continue;
                        };
                        self.check_keys(
                            fields,
                            &pp,
                            keys::AUTH_PROFILE,
                            keys::AUTH_PROFILE_FOREIGN,
                        );
                        let mut provider = None;
                        let mut api_key = None;
                        for f in fields {
                            let fp = child(&pp, &f.key);
                            match f.key.as_str() {
                                "provider" => provider = self.nonempty_string(&f.value, &fp),
                                "apiKey" => {
                                    if let Some(sv) = self.secret_node(&f.value, &fp) {
                                        api_key = Some(sv);
                                    }
                                }
                                _ => {}
                            }
                        }
                        let Some(provider) = provider else {
                            self.error(pe.value.span, &pp, "missing required key \"provider\"");
                            continue;
                        };
                        out.profiles.insert(
                            pe.key.clone(),
                            AuthProfile {
                                id: pe.key.clone(),
                                provider,
                                api_key,
                                loc: self.loc(pe.key_span, &pp),
                            },
                        );
                    }
                }
                "order" => {
                    let Some(list) = self.object(&e.value, &p) else {
                        continue;
                    };
                    for oe in list {
                        let op = child(&p, &oe.key);
                        if let Some(ids) = self.string_list(&oe.value, &op) {
                            out.order
                                .insert(oe.key.clone(), ids.into_iter().map(|l| l.value).collect());
                        }
                    }
                }
                _ => {}
            }
        }
        out
    }
}
