//! Command-line interface (GW-4): argument definitions, shared context and
//! exit codes. Each command family has its own module.

mod chat_cmd;
mod config_cmd;
mod doctor_cmd;
mod gateway_cmd;
mod infer_cmd;
mod local_cmd;
mod models_cmd;
mod output;
mod security_cmd;
mod sessions_cmd;
mod state;
mod usage_cmd;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use clawgate_catalog::Snapshot;
use clawgate_config::{ConfigError, Location};

/// Exit codes scripts can rely on (documented in README.md).
pub mod exit {
    pub const OK: u8 = 0;
    /// Something failed at run time.
    pub const FAILURE: u8 = 1;
    /// Bad command-line usage (clap's own code).
    pub const USAGE: u8 = 2;
    /// The config file is invalid (or a change would make it invalid).
    pub const INVALID_CONFIG: u8 = 3;
    /// A named thing does not exist: config file, key path, model, alias.
    pub const NOT_FOUND: u8 = 4;
}

/// An error with the exit code it maps to.
pub struct CliError {
    pub code: u8,
    pub error: anyhow::Error,
}

impl CliError {
    pub fn new(code: u8, error: impl Into<anyhow::Error>) -> Self {
        Self {
            code,
            error: error.into(),
        }
    }
    pub fn msg(code: u8, msg: impl Into<String>) -> Self {
        Self::new(code, anyhow::anyhow!(msg.into()))
    }
}

impl From<ConfigError> for CliError {
    fn from(e: ConfigError) -> Self {
        let code = match &e {
            ConfigError::Invalid(_) => exit::INVALID_CONFIG,
            ConfigError::NotFound(_) | ConfigError::PathNotFound(_) => exit::NOT_FOUND,
            ConfigError::BadPath { .. } | ConfigError::BadValue { .. } => exit::USAGE,
            ConfigError::Read { .. } | ConfigError::Write { .. } => exit::FAILURE,
        };
        CliError::new(code, e)
    }
}

pub type CliResult = Result<(), CliError>;

#[derive(Parser)]
#[command(
    name = "clawgate",
    version,
    about = "Local-first AI agent gateway: your own model servers first, hosted models as fallbacks"
)]
struct Cli {
    /// Config file (default: $CLAWGATE_CONFIG, ./clawgate.json5, ~/.clawgate/clawgate.json5).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate, read and change the config file.
    Config {
        #[command(subcommand)]
        command: config_cmd::ConfigCommand,
    },
    /// List models, set the default, manage aliases and fallbacks.
    Models {
        #[command(subcommand)]
        command: models_cmd::ModelsCommand,
    },
    /// One model call: prints the answer (stateless unless --session).
    Infer(infer_cmd::InferArgs),
    /// Chat in the terminal on a kept session (streamed, with /commands).
    Chat(chat_cmd::ChatArgs),
    /// Usage and cost of kept sessions: by model, session, day or endpoint.
    Usage(usage_cmd::UsageArgs),
    /// List, show, delete or export kept sessions.
    Sessions {
        #[command(subcommand)]
        command: sessions_cmd::SessionsCommand,
    },
    /// Run the HTTP gateway (OpenAI-compatible API) until interrupted.
    Gateway(gateway_cmd::GatewayArgs),
    /// Check the config, every provider and local server, and say how to
    /// fix what is wrong (exit 1 when something is broken).
    Doctor(doctor_cmd::DoctorArgs),
    /// Security checks of the config (exit 1 on an error finding).
    Security {
        #[command(subcommand)]
        command: security_cmd::SecurityCommand,
    },
}

/// What every command needs: where the config is and how to read env vars.
pub struct Ctx {
    pub location: Location,
}

impl Ctx {
    pub fn env(name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    /// Loads and fully checks the config, printing its warnings to stderr.
    pub fn snapshot(&self) -> Result<Snapshot, CliError> {
        let snap = clawgate_catalog::load(self.location.file(), &Ctx::env)?;
        for w in &snap.warnings {
            eprintln!("{w}");
        }
        Ok(snap)
    }

    pub fn file_for_writing(&self) -> &Path {
        self.location.write_target()
    }
}

/// Structured logs to stderr: `CLAWGATE_LOG=error|warn|info|debug|trace`
/// (default `warn` for the gateway; `error` for the other commands, which
/// print their own notices and attempt lists, so no log line is mixed
/// into them; `off` to silence), `CLAWGATE_LOG_FORMAT=json` for one JSON
/// object per event.
fn init_logging(default: tracing::Level) {
    let level = match std::env::var("CLAWGATE_LOG")
        .unwrap_or_default()
        .to_ascii_lowercase()
        .as_str()
    {
        "off" => return,
        "error" => tracing::Level::ERROR,
        "info" => tracing::Level::INFO,
        "debug" => tracing::Level::DEBUG,
        "trace" => tracing::Level::TRACE,
        "warn" => tracing::Level::WARN,
        _ => default,
    };
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = if std::env::var("CLAWGATE_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

pub fn run() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    init_logging(match cli.command {
        Command::Gateway(_) => tracing::Level::WARN,
        _ => tracing::Level::ERROR,
    });
    let result = (|| -> CliResult {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let location =
            clawgate_config::locate(cli.config.as_deref(), &Ctx::env, &cwd, home.as_deref())?;
        let ctx = Ctx { location };
        match cli.command {
            Command::Config { command } => config_cmd::run(&ctx, command),
            Command::Models { command } => models_cmd::run(&ctx, command),
            Command::Infer(args) => infer_cmd::run(&ctx, args),
            Command::Chat(args) => chat_cmd::run(&ctx, args),
            Command::Sessions { command } => sessions_cmd::run(command),
            Command::Usage(args) => usage_cmd::run(args),
            Command::Gateway(args) => gateway_cmd::run(&ctx, args),
            Command::Doctor(args) => doctor_cmd::run(&ctx, args),
            Command::Security { command } => security_cmd::run(&ctx, command),
        }
    })();
    match result {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => {
            eprintln!("error: {:#}", e.error);
            ExitCode::from(e.code)
        }
    }
}
