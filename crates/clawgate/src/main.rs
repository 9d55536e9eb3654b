//! The `clawgate` command: parses the command line and wires the library
//! crates together. Behaviour lives in the libraries; this crate only
//! formats output and maps failures to exit codes.

mod cli;

use std::process::ExitCode;

/// glibc's allocator spent about a quarter of the gateway's CPU under
/// load, much of it waiting on arena locks between worker threads
/// (measured with `perf`, see docs/BENCHMARKS.md); mimalloc's per-thread
/// heaps do not contend.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    cli::run()
}
