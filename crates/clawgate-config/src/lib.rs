//! OpenClaw-compatible configuration for clawgate (CFG-1..4, CFG-7).
//!
//! Brief overview: [`locate`] finds the file (CFG-1), [`load_file`] /
//! [`load_str`] parse JSON5 into a spanned tree and decode it into a typed
//! [`Config`], collecting every error and warning with file:line:column and
//! key path. A file with any error is refused whole. [`edit`] changes a file
//! without losing its comments.
//!
//! Cross-checks that need the model catalog (aliases, fallbacks, policy
//! entries) live in `clawgate-catalog`, which builds on this crate.

mod decode;
pub mod diag;
pub mod edit;
pub mod endpoint;
mod include;
mod keys;
pub mod model;
pub mod path;
pub mod read;
pub mod secret;
pub mod secretref;
pub mod source;
pub mod tree;

use std::path::{Path, PathBuf};

pub use decode::EnvLookup;
pub use diag::{ConfigError, Diagnostic, Loc, Located, Severity};
pub use keys::nearest;
pub use model::*;
pub use secret::{SecretForm, SecretValue};
pub use source::Source;

/// A structurally valid config and the warnings it produced.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Diagnostic>,
}

/// Reads and decodes a config file.
pub fn load_file(path: &Path, env: EnvLookup<'_>) -> Result<Loaded, ConfigError> {
    let text = read::read_regular(path, read::MAX_CONFIG_FILE).map_err(|error| {
        if error.kind() == std::io::ErrorKind::NotFound {
            ConfigError::NotFound(path.to_path_buf())
        } else {
            ConfigError::Read {
                path: path.to_path_buf(),
                error,
            }
        }
    })?;
    load_str(path, &text, env)
}

/// Decodes config text; `path` is used in diagnostics.
pub fn load_str(path: &Path, text: &str, env: EnvLookup<'_>) -> Result<Loaded, ConfigError> {
    load(path, text, env, true)
}

/// Decodes config text without touching anything outside the process:
/// `$include` files are not read and file/exec SecretRefs are not
/// resolved (both are errors). For fuzzing and untrusted text.
pub fn load_str_sandboxed(
    path: &Path,
    text: &str,
    env: EnvLookup<'_>,
) -> Result<Loaded, ConfigError> {
    load(path, text, env, false)
}

fn load(path: &Path, text: &str, env: EnvLookup<'_>, io: bool) -> Result<Loaded, ConfigError> {
    let source = Source::new(path, text);
    let root = tree::parse(&source).map_err(|d| ConfigError::Invalid(vec![d]))?;
    let mut includes = include::Expander::new(source);
    includes.io = io;
    let root = root.map(|r| includes.expand(r));
    if !includes.diags.is_empty() {
        return Err(ConfigError::Invalid(includes.diags));
    }
    let mut decoder = decode::Decoder::new(&includes.sources, env);
    decoder.io = io;
    let mut config = decoder.config(root.as_ref(), Some(path.to_path_buf()));
    config.includes = includes.included();
    let (errors, warnings): (Vec<_>, Vec<_>) = decoder
        .diags
        .into_iter()
        .partition(|d| d.severity == Severity::Error);
    if errors.is_empty() {
        Ok(Loaded { config, warnings })
    } else {
        Err(ConfigError::Invalid(errors))
    }
}

/// How the config file was found (CFG-1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `--config PATH`.
    Flag(PathBuf),
    /// `$CLAWGATE_CONFIG`.
    Env(PathBuf),
    /// `./clawgate.json5`.
    WorkingDir(PathBuf),
    /// `~/.clawgate/clawgate.json5`.
    Home(PathBuf),
    /// No file: defaults plus discovery. Writes go to the given path.
    None { write_to: PathBuf },
}

impl Location {
    /// The file to read, if any.
    pub fn file(&self) -> Option<&Path> {
        match self {
            Location::Flag(p) | Location::Env(p) | Location::WorkingDir(p) | Location::Home(p) => {
                Some(p)
            }
            Location::None { .. } => None,
        }
    }

    /// The file that edits write to.
    pub fn write_target(&self) -> &Path {
        match self {
            Location::None { write_to } => write_to,
            other => other.file().unwrap_or(Path::new("clawgate.json5")),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Location::Flag(p) => format!("{} (--config)", p.display()),
            Location::Env(p) => format!("{} ($CLAWGATE_CONFIG)", p.display()),
            Location::WorkingDir(p) => format!("{} (working directory)", p.display()),
            Location::Home(p) => format!("{} (home)", p.display()),
            Location::None { .. } => "none (defaults and discovery)".to_string(),
        }
    }
}

/// Finds the config file: `--config`, then `$CLAWGATE_CONFIG`, then
/// `./clawgate.json5`, then `~/.clawgate/clawgate.json5`. An explicit path
/// that does not exist is an error; no file at all is valid.
pub fn locate(
    flag: Option<&Path>,
    env: EnvLookup<'_>,
    cwd: &Path,
    home: Option<&Path>,
) -> Result<Location, ConfigError> {
    if let Some(p) = flag {
        return if p.exists() {
            Ok(Location::Flag(p.to_path_buf()))
        } else {
            Err(ConfigError::NotFound(p.to_path_buf()))
        };
    }
    if let Some(p) = env("CLAWGATE_CONFIG").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(p);
        return if p.exists() {
            Ok(Location::Env(p))
        } else {
            Err(ConfigError::NotFound(p))
        };
    }
    let local = cwd.join("clawgate.json5");
    if local.exists() {
        return Ok(Location::WorkingDir(local));
    }
    let home_file = home.map(|h| h.join(".clawgate").join("clawgate.json5"));
    if let Some(h) = home_file.as_ref().filter(|h| h.exists()) {
        return Ok(Location::Home(h.clone()));
    }
    Ok(Location::None {
        write_to: home_file.unwrap_or(local),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn locate_order() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let cwd = dir.path().join("cwd");
        std::fs::create_dir_all(home.join(".clawgate")).unwrap();
        std::fs::create_dir_all(&cwd).unwrap();

        let loc = locate(None, &no_env, &cwd, Some(&home)).unwrap();
        assert_eq!(
            loc,
            Location::None {
                write_to: home.join(".clawgate/clawgate.json5")
            }
        );

        std::fs::write(home.join(".clawgate/clawgate.json5"), "{}").unwrap();
        let loc = locate(None, &no_env, &cwd, Some(&home)).unwrap();
        assert!(matches!(loc, Location::Home(_)));

        std::fs::write(cwd.join("clawgate.json5"), "{}").unwrap();
        let loc = locate(None, &no_env, &cwd, Some(&home)).unwrap();
        assert!(matches!(loc, Location::WorkingDir(_)));

        let envp = dir.path().join("e.json5");
        std::fs::write(&envp, "{}").unwrap();
        let e = envp.display().to_string();
        let env = move |k: &str| (k == "CLAWGATE_CONFIG").then(|| e.clone());
        let loc = locate(None, &env, &cwd, Some(&home)).unwrap();
        assert_eq!(loc, Location::Env(envp.clone()));

        let loc = locate(Some(&envp), &no_env, &cwd, Some(&home)).unwrap();
        assert_eq!(loc, Location::Flag(envp));

        let missing = dir.path().join("missing.json5");
        assert!(matches!(
            locate(Some(&missing), &no_env, &cwd, Some(&home)),
            Err(ConfigError::NotFound(_))
        ));
    }

    #[test]
    fn empty_file_is_defaults() {
        let l = load_str(Path::new("e.json5"), "  // nothing\n", &no_env).unwrap();
        assert!(l.config.models.providers.is_empty());
        assert_eq!(l.config.gateway.port, 18789);
    }
}
