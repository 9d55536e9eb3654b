//! OpenClaw's SecretRef objects (`{source: "env" | "file" | "exec",
//! provider, id}`) and the `secrets.providers` that resolve them, so
//! configs that keep keys out of the file load unchanged (CFG-3). Each ref
//! is resolved once, at load or reload, into memory; an unresolved one is
//! an error at its key path. Nothing here prints a resolved value.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use indexmap::IndexMap;

/// Where a secret comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefSource {
    Env,
    File,
    Exec,
}

impl RefSource {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "env" => Some(RefSource::Env),
            "file" => Some(RefSource::File),
            "exec" => Some(RefSource::Exec),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RefSource::Env => "env",
            RefSource::File => "file",
            RefSource::Exec => "exec",
        }
    }
}

/// A parsed SecretRef.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SecretRef {
    pub source: RefSourceKey,
    pub provider: String,
    pub id: String,
}

/// `RefSource` as a hashable key.
pub type RefSourceKey = &'static str;

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.source, self.provider, self.id)
    }
}

/// `secrets.providers.<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretProvider {
    Env {
        /// Only these variables may be read, when set.
        allowlist: Option<Vec<String>>,
    },
    File {
        path: PathBuf,
        /// `json` (id is a JSON pointer) or `singleValue` (id `value`).
        single_value: bool,
        allow_insecure_path: bool,
    },
    Exec(ExecProvider),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecProvider {
    pub command: PathBuf,
    pub args: Vec<String>,
    /// Environment variables passed through; nothing else is.
    pub pass_env: Vec<String>,
    /// Default true: stdout must be the JSON protocol answer.
    pub json_only: bool,
    pub allow_symlink_command: bool,
    pub trusted_dirs: Vec<PathBuf>,
    pub timeout: Duration,
    pub max_output_bytes: usize,
}

impl ExecProvider {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_MAX_OUTPUT: usize = 1024 * 1024;
}

/// `secrets.*`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Secrets {
    pub providers: IndexMap<String, SecretProvider>,
    /// `secrets.defaults.<source>`: the provider a ref without one uses.
    pub defaults: HashMap<&'static str, String>,
}

/// `^[a-z][a-z0-9_-]{0,63}$`
pub fn valid_provider(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_lowercase()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

/// The id rules of each source, as OpenClaw writes them.
pub fn valid_id(source: RefSource, id: &str) -> Result<(), &'static str> {
    let b = id.as_bytes();
    match source {
        RefSource::Env => {
            let ok = !b.is_empty()
                && b.len() <= 128
                && b[0].is_ascii_uppercase()
                && b[1..]
                    .iter()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_');
            ok.then_some(())
                .ok_or("an env id must match ^[A-Z][A-Z0-9_]{0,127}$")
        }
        RefSource::File => (id.starts_with('/') || id == "value")
            .then_some(())
            .ok_or("a file id must be an absolute JSON pointer (/...) or \"value\""),
        RefSource::Exec => {
            let ok = !b.is_empty()
                && b.len() <= 256
                && b[0].is_ascii_alphanumeric()
                && b[1..]
                    .iter()
                    .all(|c| c.is_ascii_alphanumeric() || b"._:/-".contains(c))
                && !id.split('/').any(|seg| seg == "." || seg == "..");
            ok.then_some(()).ok_or(
                "an exec id must match ^[A-Za-z0-9][A-Za-z0-9._:/-]{0,255}$ without . or .. segments",
            )
        }
    }
}

/// What resolving produced: the value, and warnings (permissions).
pub struct Resolution {
    pub value: Result<String, String>,
    pub warnings: Vec<String>,
}

/// Resolves refs, each provider at most once per id (a reload builds a
/// new resolver: values are read again).
pub struct Resolver<'a> {
    secrets: &'a Secrets,
    env: &'a dyn Fn(&str) -> Option<String>,
    cache: HashMap<SecretRef, Result<String, String>>,
}

impl<'a> Resolver<'a> {
    pub fn new(secrets: &'a Secrets, env: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self {
            secrets,
            env,
            cache: HashMap::new(),
        }
    }

    pub fn resolve(&mut self, r: &SecretRef) -> Resolution {
        let mut warnings = Vec::new();
        if let Some(v) = self.cache.get(r) {
            return Resolution {
                value: v.clone(),
                warnings,
            };
        }
        let value = self.resolve_uncached(r, &mut warnings);
        self.cache.insert(r.clone(), value.clone());
        Resolution { value, warnings }
    }

    fn resolve_uncached(
        &self,
        r: &SecretRef,
        warnings: &mut Vec<String>,
    ) -> Result<String, String> {
        let provider = match self.secrets.providers.get(&r.provider) {
            Some(p) => p,
            // The implicit env provider.
            None if r.source == "env" && r.provider == "default" => {
                return env_value(self.env, &r.id, None)
            }
            None => {
                return Err(format!(
                    "secrets.providers.{} is not configured",
                    r.provider
                ))
            }
        };
        match (r.source, provider) {
            ("env", SecretProvider::Env { allowlist }) => {
                env_value(self.env, &r.id, allowlist.as_deref())
            }
            (
                "file",
                SecretProvider::File {
                    path,
                    single_value,
                    allow_insecure_path,
                },
            ) => file_value(path, *single_value, *allow_insecure_path, &r.id, warnings),
            ("exec", SecretProvider::Exec(x)) => exec_value(x, &r.provider, &r.id, self.env),
            (source, _) => Err(format!(
                "secrets.providers.{} is not a {source} provider",
                r.provider
            )),
        }
    }
}

fn env_value(
    env: &dyn Fn(&str) -> Option<String>,
    id: &str,
    allowlist: Option<&[String]>,
) -> Result<String, String> {
    if let Some(list) = allowlist {
        if !list.iter().any(|a| a == id) {
            return Err(format!("{id} is not in the provider's allowlist"));
        }
    }
    env(id)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("environment variable {id} is not set"))
}

/// `~/…` against `$HOME`.
pub fn expand_home(p: &Path) -> PathBuf {
    match p.strip_prefix("~") {
        Ok(rest) => match std::env::var_os("HOME") {
            Some(home) => PathBuf::from(home).join(rest),
            None => p.to_path_buf(),
        },
        Err(_) => p.to_path_buf(),
    }
}

/// Group- or world-accessible: a secret file others can read.
#[cfg(unix)]
pub fn loose_mode(meta: &std::fs::Metadata) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

#[cfg(not(unix))]
pub fn loose_mode(_: &std::fs::Metadata) -> Option<u32> {
    None
}

const MAX_SECRET_FILE: u64 = 1024 * 1024;

fn file_value(
    path: &Path,
    single_value: bool,
    allow_insecure: bool,
    id: &str,
    warnings: &mut Vec<String>,
) -> Result<String, String> {
    let path = expand_home(path);
    let meta = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.len() > MAX_SECRET_FILE {
        return Err(format!("{} is larger than 1 MiB", path.display()));
    }
    if let Some(mode) = loose_mode(&meta).filter(|_| !allow_insecure) {
        warnings.push(format!(
            "secret file {} is readable by others (mode {mode:o}); chmod 600 it",
            path.display()
        ));
    }
    let text = crate::read::read_regular(&path, MAX_SECRET_FILE)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if single_value {
        if id != "value" {
            return Err("a singleValue file provider takes the id \"value\"".into());
        }
        return Ok(text.trim_end_matches(['\n', '\r']).to_string());
    }
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{} is not JSON ({e})", path.display()))?;
    match json.pointer(id) {
        Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(_) => Err(format!(
            "{id} in {} is not a non-empty string",
            path.display()
        )),
        None => Err(format!("{id} is not in {}", path.display())),
    }
}

fn exec_value(
    x: &ExecProvider,
    provider: &str,
    id: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let cmd = &x.command;
    if !cmd.is_absolute() {
        return Err(format!("command {} is not an absolute path", cmd.display()));
    }
    let link = std::fs::symlink_metadata(cmd).map_err(|e| format!("{}: {e}", cmd.display()))?;
    if link.file_type().is_symlink() && !x.allow_symlink_command {
        return Err(format!(
            "command {} is a symlink (set allowSymlinkCommand: true to allow it)",
            cmd.display()
        ));
    }
    let real = std::fs::canonicalize(cmd).map_err(|e| format!("{}: {e}", cmd.display()))?;
    if !std::fs::metadata(&real)
        .map(|m| m.is_file())
        .unwrap_or(false)
    {
        return Err(format!("command {} is not a regular file", cmd.display()));
    }
    if !x.trusted_dirs.is_empty() && !x.trusted_dirs.iter().any(|d| real.starts_with(d)) {
        return Err(format!("command {} is outside trustedDirs", real.display()));
    }
    let mut c = Command::new(&real);
    // Its own process group, so a timeout ends what it started too (a
    // helper shell's `sleep` would otherwise live on, one per reload).
    std::os::unix::process::CommandExt::process_group(&mut c, 0);
    c.args(&x.args)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for name in &x.pass_env {
        if let Some(v) = env(name) {
            c.env(name, v);
        }
    }
    let mut child = c
        .spawn()
        .map_err(|e| format!("command {} could not start: {e}", cmd.display()))?;
    let request = serde_json::json!({"protocolVersion": 1, "provider": provider, "ids": [id]});
    if let Some(mut stdin) = child.stdin.take() {
        // A command that ignores stdin may close it early: not an error.
        let _ = stdin.write_all(request.to_string().as_bytes());
    }
    let stdout = child.stdout.take();
    let limit = x.max_output_bytes;
    let reader = std::thread::spawn(move || -> Result<Vec<u8>, String> {
        let Some(out) = stdout else {
            return Ok(Vec::new());
        };
        let mut buf = Vec::new();
        out.take(limit as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(|e| e.to_string())?;
        Ok(buf)
    });
    let deadline = Instant::now() + x.timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() >= deadline => {
                if let Ok(pid) = i32::try_from(child.id()) {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "command {} did not answer within {} ms",
                    cmd.display(),
                    x.timeout.as_millis()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(e.to_string()),
        }
    };
    let out = reader
        .join()
        .map_err(|_| "the output reader failed".to_string())??;
    if out.len() > limit {
        return Err(format!("command output is larger than {limit} bytes"));
    }
    if !status.success() {
        // stderr is not quoted: a secret tool may print secrets there.
        return Err(format!("command {} exited with {status}", cmd.display()));
    }
    let text = String::from_utf8(out).map_err(|_| "command output is not UTF-8".to_string())?;
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(v) if v.get("values").is_some() || v.get("errors").is_some() => {
            if let Some(s) = v.pointer(&format!("/values/{}", pointer_escape(id))).and_then(|s| s.as_str()) {
                if !s.is_empty() {
                    return Ok(s.to_string());
                }
            }
            let why = v
                .pointer(&format!("/errors/{}/message", pointer_escape(id)))
                .and_then(|m| m.as_str())
                .map(short)
                .unwrap_or_else(|| "no value for this id".into());
            Err(format!("command {}: {why}", cmd.display()))
        }
        _ if !x.json_only => {
            let v = text.trim_end_matches(['\n', '\r']);
            if v.is_empty() {
                Err(format!("command {} printed nothing", cmd.display()))
            } else {
                Ok(v.to_string())
            }
        }
        _ => Err(format!(
            "command {} did not answer with the JSON protocol (set jsonOnly: false for plain output)",
            cmd.display()
        )),
    }
}

fn pointer_escape(id: &str) -> String {
    id.replace('~', "~0").replace('/', "~1")
}

/// A provider's error message, bounded.
fn short(s: &str) -> String {
    s.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_patterns() {
        assert!(valid_provider("default") && valid_provider("vault_1-a"));
        assert!(!valid_provider("Vault") && !valid_provider("") && !valid_provider("1a"));
        assert!(valid_id(RefSource::Env, "OPENAI_API_KEY").is_ok());
        assert!(valid_id(RefSource::Env, "openai").is_err());
        assert!(valid_id(RefSource::File, "/providers/openai/apiKey").is_ok());
        assert!(valid_id(RefSource::File, "providers").is_err());
        assert!(valid_id(RefSource::Exec, "providers/openai/apiKey").is_ok());
        assert!(valid_id(RefSource::Exec, "a/../b").is_err());
        assert!(valid_id(RefSource::Exec, "a/./b").is_err());
        assert!(valid_id(RefSource::Exec, "-x").is_err());
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn sec_an_exec_timeout_ends_what_the_command_started() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("child.pid");
        let script = dir.path().join("slow");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh
sleep 30 &
echo $! > {}
wait
",
                pidfile.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).unwrap();
        let x = ExecProvider {
            command: script,
            args: Vec::new(),
            pass_env: Vec::new(),
            json_only: true,
            allow_symlink_command: false,
            trusted_dirs: Vec::new(),
            timeout: Duration::from_millis(300),
            max_output_bytes: 1024,
        };
        let e = exec_value(&x, "vault", "k", &|_| None).unwrap_err();
        assert!(e.contains("did not answer within 300 ms"), "{e}");
        let pid = std::fs::read_to_string(&pidfile).unwrap();
        let proc_dir = format!("/proc/{}", pid.trim());
        // Killed with its group (a zombie until init reaps it counts as
        // gone: it no longer runs).
        let mut gone = false;
        for _ in 0..100 {
            let state = std::fs::read_to_string(format!("{proc_dir}/stat")).unwrap_or_default();
            if state.is_empty() || state.split_whitespace().nth(2) == Some("Z") {
                gone = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(gone, "the command's child {} still runs", pid.trim());
    }
}
