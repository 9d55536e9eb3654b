//! `clawgate security audit [--json]` (SEC-5): the audit's findings
//! (`clawgate_session::audit`) printed with their fix lines; exit 1 when
//! one is an error. A config the outbound guard refuses (a metadata or
//! link-local `baseUrl`) does not load, and is reported as that error.

use clap::{Args, Subcommand};
use clawgate_session::doctor::{Finding, Severity};

use super::doctor_cmd::print_findings;
use super::{exit, CliError, CliResult, Ctx};

#[derive(Subcommand)]
pub enum SecurityCommand {
    /// Check the config for risky settings, each finding with its fix.
    Audit(AuditArgs),
}

#[derive(Args)]
pub struct AuditArgs {
    /// Print the findings as JSON.
    #[arg(long)]
    json: bool,
}

/// The state directory (transcripts, chat history, cooldowns) readable by
/// other local users.
fn state_permissions() -> Option<Finding> {
    let dir = super::state::state_dir()?;
    let open = clawgate_store::private::readable_by_others(&dir);
    if open.is_empty() {
        return None;
    }
    Some(Finding {
        severity: Severity::Warn,
        area: "state",
        check: "state.permissions",
        subject: dir.display().to_string(),
        message: format!(
            "other local users can read the state (every conversation): {}",
            open.join(", ")
        ),
        fix: format!(
            "chmod 700 {0} && chmod 600 {0}/* (clawgate tightens them itself the next time it opens the session store)",
            dir.display()
        ),
    })
}

pub fn run(ctx: &Ctx, command: SecurityCommand) -> CliResult {
    let SecurityCommand::Audit(args) = command;
    let findings = match clawgate_catalog::load(ctx.location.file(), &Ctx::env) {
        Err(e) => vec![Finding {
            severity: Severity::Error,
            area: "config",
            check: "config.invalid",
            subject: ctx.location.describe(),
            message: e.to_string(),
            fix: "fix the key named above, then `clawgate config validate`".into(),
        }],
        Ok(snap) => {
            let mut f = clawgate_session::audit::audit(&snap.registry);
            f.extend(state_permissions());
            f.sort_by_key(|f| f.severity);
            f
        }
    };
    let errors = print_findings(&findings, args.json)?;
    if errors > 0 {
        return Err(CliError::msg(
            exit::FAILURE,
            format!("security audit found {errors} error(s)"),
        ));
    }
    Ok(())
}
