//! Diagnostics: errors and warnings that name file, line, column and key
//! path (CFG-4), and the error type of this crate.

use std::fmt;
use std::path::PathBuf;

/// Where a value sits: 1-based line and column plus its key path
/// (`models.providers.lmstudio.models[0].contextWindow`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Loc {
    pub line: u32,
    pub column: u32,
    pub path: String,
    /// The `$include`d file the position is in; `None`: the config file.
    pub file: Option<PathBuf>,
}

/// A value together with where it was written, for checks that run after
/// decoding (alias targets, fallbacks, …) and still need to point at the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Located<T> {
    pub value: T,
    pub loc: Loc,
}

impl<T> Located<T> {
    pub fn new(value: T, loc: Loc) -> Self {
        Self { value, loc }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One finding about a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: PathBuf,
    pub line: u32,
    pub column: u32,
    /// Key path; empty for syntax errors that have none.
    pub path: String,
    pub message: String,
}

impl Diagnostic {
    pub fn at(severity: Severity, file: impl Into<PathBuf>, loc: &Loc, message: String) -> Self {
        Self {
            severity,
            file: loc.file.clone().unwrap_or_else(|| file.into()),
            line: loc.line,
            column: loc.column,
            path: loc.path.clone(),
            message,
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{}:{}:{}: {kind}: ",
            self.file.display(),
            self.line,
            self.column
        )?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Everything that can go wrong loading or editing a config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// (`error` is said in the message, not chained: printed once.)
    #[error("cannot read config {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot write config {path}: {error}")]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("config file {0} not found")]
    NotFound(PathBuf),
    /// The file is invalid; nothing from it is used.
    #[error("{}", render(.0))]
    Invalid(Vec<Diagnostic>),
    #[error("Config path not found: {0}")]
    PathNotFound(String),
    #[error("invalid config path {path:?}: {reason}")]
    BadPath { path: String, reason: String },
    #[error("invalid value for {path}: {reason}")]
    BadValue { path: String, reason: String },
}

fn render(diags: &[Diagnostic]) -> String {
    diags
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl ConfigError {
    /// The error diagnostics, when the error is an invalid file.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ConfigError::Invalid(d) => d,
            _ => &[],
        }
    }
}
