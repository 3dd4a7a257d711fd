//! `vmi-tests`: the guest suite of `vmi`, run in the VM bench
//! (`cargo xtask run --timeout 900 -- target/release/vmi-tests`): real
//! `qemu-system-x86_64` processes (TCG, paused with `-S`) inside the guest,
//! their memory mirrored with pidfd_mem and checked against QEMU's own
//! monitor (`xp`) and against files QEMU loaded into guest RAM.
//!
//! Each test runs in a forked child of its own (`ktap-harness`). KTAP
//! output: `KTAP version 1`, `1..N`, `ok N name`, `not ok N name`,
//! `ok N name # SKIP reason`, diagnostics as `# ...`; last line `N passed,
//! N failed, N skipped`; exit 0 iff none failed. Arguments: `--list`, or
//! filters (substrings of test names).

mod qemu;
mod tests;

use std::process::ExitCode;

pub use ktap_harness::{Skip, Test};

/// Prints a diagnostic line.
pub fn note(s: impl std::fmt::Display) {
    println!("# {s}");
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let missing = (!std::path::Path::new(pidfd_mem::sys::PIDFD_MEM_DEVICE).exists()).then(|| {
        format!(
            "{} missing: {}",
            pidfd_mem::sys::PIDFD_MEM_DEVICE,
            pidfd_mem::MODULE_HELP
        )
    });
    ktap_harness::main(&tests::all(), &args, missing.as_deref())
}
