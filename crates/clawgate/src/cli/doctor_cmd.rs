//! `clawgate doctor` (LOC-4): the config lint, the status report and every
//! server check in one list, each finding with its fix; exit 1 when
//! anything is broken. The findings are library code
//! (`clawgate_session::doctor`); this only runs the checks and prints.

use std::time::Duration;

use clap::Args;
use clawgate_session::doctor::{Finding, Severity};
use serde_json::json;

use super::output::{emit, json};
use super::{exit, CliError, CliResult, Ctx};

#[derive(Args)]
pub struct DoctorArgs {
    /// Also send hosted models a tiny request (a paid call each); local
    /// models are always probed.
    #[arg(long)]
    probe: bool,
    /// Per request, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 8000)]
    timeout: u64,
    /// Print the findings as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(ctx: &Ctx, args: DoctorArgs) -> CliResult {
    let findings = match clawgate_catalog::load(ctx.location.file(), &Ctx::env) {
        Err(e) => vec![Finding {
            severity: Severity::Error,
            area: "config",
            check: "",
            subject: ctx.location.describe(),
            message: e.to_string(),
            fix: "fix the key named above, then `clawgate config validate`".into(),
        }],
        Ok(snap) => {
            let reg = &snap.registry;
            let report = clawgate_session::status::report(
                reg,
                ctx.location.describe(),
                &super::state::load_cooldowns(),
                super::state::now_unix_ms(),
            );
            let opts = clawgate_session::check::CheckOptions {
                probe: true,
                probe_hosted: args.probe,
                provider: None,
                timeout: Duration::from_millis(args.timeout.max(1)),
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| CliError::new(exit::FAILURE, e))?;
            let client =
                clawgate_wire::Client::new().map_err(|e| CliError::new(exit::FAILURE, e))?;
            let servers = rt.block_on(super::local_cmd::check_with_local(
                reg,
                &client,
                &opts,
                &|_, _| {},
            ));
            clawgate_session::doctor::findings(reg, &snap.warnings, &report, &servers)
        }
    };
    let errors = print_findings(&findings, args.json)?;
    if errors > 0 {
        return Err(CliError::msg(
            exit::FAILURE,
            format!("doctor found {errors} problem(s) that make requests fail"),
        ));
    }
    Ok(())
}

/// Prints findings (text or JSON); returns how many are errors.
pub fn print_findings(findings: &[Finding], as_json: bool) -> Result<usize, CliError> {
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    let warns = findings
        .iter()
        .filter(|f| f.severity == Severity::Warn)
        .count();
    if as_json {
        json(
            &json!({ "ok": errors == 0, "errors": errors, "warnings": warns, "findings": findings }),
        )?;
    } else {
        let mut out = String::new();
        for f in findings {
            out.push_str(&format!(
                "{:<5} [{}] {}: {}\n      fix: {}\n",
                f.severity.as_str(),
                if f.check.is_empty() { f.area } else { f.check },
                super::output::printable(&f.subject, false),
                // Server output and upstream text may hold escapes.
                super::output::printable(&f.message, true),
                f.fix
            ));
        }
        out.push_str(&match (errors, warns) {
            (0, 0) => "no problems found\n".to_string(),
            (e, w) => format!("{e} error(s), {w} warning(s)\n"),
        });
        emit(&out)?;
    }
    Ok(errors)
}
