//! The `clawgate` command: parses the command line and wires the library
//! crates together. Behaviour lives in the libraries; this crate only
//! formats output and maps failures to exit codes.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::run()
}
