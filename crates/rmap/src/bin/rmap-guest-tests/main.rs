//! `rmap-guest-tests`: the guest suite of the `rmap` command line, run in the
//! VM bench with the module loaded (`cargo build --release -p rmap && cargo
//! xtask run -- target/release/rmap-guest-tests`, and in `cargo xtask test`).
//!
//! Every test runs the real `rmap` binary (next to this program) as a
//! subprocess against a real target, `rmap target-helper`, whose buffers
//! are known, and checks the bytes, not only the exit codes: each subcommand
//! with the module, bad input for each (exit 2), no rights (exit 3), a target
//! that is gone or goes (exit 4).
//!
//! Each test runs in a forked child of its own (`ktap-harness`). KTAP
//! output: `KTAP version 1`, `1..N`, `ok N name`, `not ok N name`,
//! `ok N name # SKIP reason`, diagnostics as `# ...`; last line `N passed,
//! N failed, N skipped`; exit 0 iff none failed. Without `/dev/pidfd_mem`
//! every test is skipped. Arguments: `--list`, or filters (substrings of
//! test names).

mod tests;
mod util;

use std::process::ExitCode;

pub use ktap_harness::{Skip, Test};

/// Prints a diagnostic line.
pub fn note(s: impl std::fmt::Display) {
    for line in s.to_string().lines() {
        println!("# {line}");
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let missing = (!pidfd_mem::module_loaded()).then(|| {
        format!(
            "{} missing: {}",
            pidfd_mem::sys::PIDFD_MEM_DEVICE,
            pidfd_mem::MODULE_HELP
        )
    });
    ktap_harness::main(&tests::all(), &args, missing.as_deref())
}
