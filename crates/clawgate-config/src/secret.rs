//! Secret-bearing config values (CFG-3): `${ENV}` references, bare env-var
//! names, local non-secret markers and plain literals, resolved once at load
//! and never printed.

use clawgate_core::Secret;

/// Non-secret placeholders that local servers accept in place of a key.
pub const LOCAL_MARKERS: &[&str] = &[
    "lmstudio",
    "lm-studio",
    "sk-local",
    "ollama-local",
    "ollama",
    "local",
    "vllm",
    "sglang",
    "llama.cpp",
    "llama-cpp",
    "llamacpp",
    "mlx",
    "custom-local",
    "EMPTY",
    "none",
    "no-key",
    "dummy",
    "not-needed",
    "sk-no-key-required",
];

/// How a secret value was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretForm {
    /// A literal secret typed into the file.
    Literal,
    /// A whole-value reference to one environment variable: `${NAME}` or a
    /// bare `NAME_LIKE_THIS`.
    Env(String),
    /// A string with one or more `${VAR}` inside (`Bearer ${TOKEN}`).
    Template(Vec<String>),
    /// A non-secret local marker such as `lmstudio`.
    Marker(String),
    /// An OpenClaw SecretRef object (`{source, provider, id}`).
    Ref(crate::secretref::SecretRef),
}

/// A config value that may hold a secret.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue {
    pub form: SecretForm,
    /// The resolved value; `None` when a referenced variable is unset.
    pub resolved: Option<Secret>,
    /// Variables that were referenced but not set.
    pub missing: Vec<String>,
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretValue({})", self.redacted())
    }
}

impl SecretValue {
    /// Parses and resolves a written value with the given environment.
    pub fn resolve(written: &str, env: &dyn Fn(&str) -> Option<String>) -> Self {
        if LOCAL_MARKERS.contains(&written) {
            return Self {
                form: SecretForm::Marker(written.to_string()),
                resolved: Some(Secret::new(written)),
                missing: vec![],
            };
        }
        if let Some(name) = whole_env_ref(written) {
            let value = env(name).filter(|v| !v.is_empty());
            return Self {
                form: SecretForm::Env(name.to_string()),
                missing: if value.is_none() {
                    vec![name.to_string()]
                } else {
                    vec![]
                },
                resolved: value.map(Secret::new),
            };
        }
        let (text, vars, missing) = interpolate(written, env);
        if vars.is_empty() {
            return Self {
                form: SecretForm::Literal,
                resolved: Some(Secret::new(text)),
                missing: vec![],
            };
        }
        Self {
            form: SecretForm::Template(vars),
            resolved: missing.is_empty().then(|| Secret::new(text)),
            missing,
        }
    }

    /// True for a local marker (not a real credential).
    pub fn is_marker(&self) -> bool {
        matches!(self.form, SecretForm::Marker(_))
    }

    /// The safe display form: `marker(NAME)` for markers and references,
    /// `***` for anything that is or contains a real secret (SEC-3).
    pub fn redacted(&self) -> String {
        match &self.form {
            SecretForm::Marker(m) => format!("marker({m})"),
            SecretForm::Env(name) => format!("marker(env:{name})"),
            SecretForm::Ref(r) if r.source == "env" => format!("marker(secretref-env:{})", r.id),
            SecretForm::Ref(_) => "marker(secretref-managed)".to_string(),
            SecretForm::Template(_) | SecretForm::Literal => "***".to_string(),
        }
    }
}

/// `${NAME}` as the whole value, or a bare env-var-looking name
/// (`OLLAMA_API_KEY`: upper case with at least one underscore), which
/// OpenClaw also accepts.
fn whole_env_ref(s: &str) -> Option<&str> {
    if let Some(inner) = s.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
        if is_env_name(inner) {
            return Some(inner);
        }
    }
    (is_env_name(s) && s.contains('_') && s.bytes().any(|b| b.is_ascii_uppercase())).then_some(s)
}

/// `[A-Z_][A-Z0-9_]*`, the only names `${…}` substitutes.
pub fn is_env_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b'A'..=b'Z' | b'_'))
        && bytes.all(|b| matches!(b, b'A'..=b'Z' | b'0'..=b'9' | b'_'))
}

/// Substitutes `${VAR}` occurrences; `$${VAR}` is an escape for a literal
/// `${VAR}`. Returns the text, the names referenced and those unset.
fn interpolate(
    s: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> (String, Vec<String>, Vec<String>) {
    let mut out = String::with_capacity(s.len());
    let mut vars = Vec::new();
    let mut missing = Vec::new();
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(escaped) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = escaped;
            continue;
        }
        if let Some(body) = after.strip_prefix("${") {
            if let Some(end) = body.find('}') {
                let name = &body[..end];
                if is_env_name(name) {
                    vars.push(name.to_string());
                    match env(name).filter(|v| !v.is_empty()) {
                        Some(v) => out.push_str(&v),
                        None => missing.push(name.to_string()),
                    }
                    rest = &body[end + 1..];
                    continue;
                }
            }
        }
        out.push('$');
        rest = &after[1..];
    }
    out.push_str(rest);
    (out, vars, missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "ANTHROPIC_API_KEY" => Some("sk-ant-secret".into()),
            "TOKEN" => Some("t0k".into()),
            "EMPTY_ONE" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn resolves_forms() {
        let v = SecretValue::resolve("${ANTHROPIC_API_KEY}", &env);
        assert_eq!(v.form, SecretForm::Env("ANTHROPIC_API_KEY".into()));
        assert_eq!(v.resolved.as_ref().unwrap().expose(), "sk-ant-secret");

        let v = SecretValue::resolve("ANTHROPIC_API_KEY", &env);
        assert_eq!(v.form, SecretForm::Env("ANTHROPIC_API_KEY".into()));

        let v = SecretValue::resolve("Bearer ${TOKEN}", &env);
        assert_eq!(v.resolved.as_ref().unwrap().expose(), "Bearer t0k");
        assert_eq!(v.redacted(), "***");

        let v = SecretValue::resolve("lmstudio", &env);
        assert!(v.is_marker());
        assert_eq!(v.redacted(), "marker(lmstudio)");

        let v = SecretValue::resolve("sk-live-abc", &env);
        assert_eq!(v.form, SecretForm::Literal);
        assert_eq!(v.redacted(), "***");
        assert_eq!(format!("{v:?}"), "SecretValue(***)");
    }

    #[test]
    fn missing_and_empty_vars_stay_unresolved() {
        let v = SecretValue::resolve("${NOPE}", &env);
        assert!(v.resolved.is_none());
        assert_eq!(v.missing, vec!["NOPE".to_string()]);
        let v = SecretValue::resolve("${EMPTY_ONE}", &env);
        assert!(v.resolved.is_none());
        let v = SecretValue::resolve("x-${NOPE}-y", &env);
        assert!(v.resolved.is_none());
        assert_eq!(v.redacted(), "***");
    }

    #[test]
    fn escape_keeps_literal() {
        let v = SecretValue::resolve("a$${TOKEN}b$c", &env);
        assert_eq!(v.form, SecretForm::Literal);
        assert_eq!(v.resolved.as_ref().unwrap().expose(), "a${TOKEN}b$c");
    }
}
