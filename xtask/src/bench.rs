//! `cargo xtask bench`: builds `pidfd-mem-bench`, runs it in the guest like
//! `run`, takes its JSON report from the guest's stdout (between the marker
//! lines: the guest root is read-only), writes `target/bench/report.json`, and
//! renders `report.md` and `throughput.svg` there with `pidfd-mem-bench render`
//! on the host.

use std::fs;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{host, vm, VmArgs};

/// Must match `pidfd_mem_bench::report::{BEGIN, END}` (xtask does not depend
/// on the bench crate, so that a broken bench cannot break xtask's build).
const BEGIN: &str = "=== pidfd-mem-bench report begin ===";
const END: &str = "=== pidfd-mem-bench report end ===";

/// The JSON between the markers in the guest's stdout.
fn extract(out: &str) -> Option<&str> {
    let rest = &out[out.find(BEGIN)? + BEGIN.len()..];
    Some(rest[..rest.find(END)?].trim())
}

/// The commit measured, for the report: `git describe` of the work tree,
/// with `-dirty` when `kmod/`, the library or the ABI header differ from it.
fn source_version() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(host::repo_root())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(head) = git(&["describe", "--always", "--abbrev=12"]) else {
        return "unknown (no git)".to_string();
    };
    match git(&[
        "status",
        "--porcelain",
        "--",
        "kmod",
        "crates/pidfd-mem",
        "include",
    ]) {
        Some(s) if s.is_empty() => head,
        _ => format!("{head}-dirty"),
    }
}

/// Runs the benchmark; `extra` goes to the bench (`--quick`).
pub fn bench(args: &VmArgs, extra: &[String]) -> Result<i32> {
    let root = host::repo_root();
    host::run(host::cargo().args(["build", "--release", "-p", "pidfd-mem-bench"]))?;
    let bin = root.join("target/release/pidfd-mem-bench");
    let mut opts = args.options()?;
    let accel = match opts.accel {
        vm::Accel::Tcg => "tcg",
        vm::Accel::Kvm => "kvm",
    };
    opts.env
        .push(("PIDFD_MEM_BENCH_ACCEL".to_string(), accel.to_string()));
    opts.env
        .push(("PIDFD_MEM_BENCH_SOURCE".to_string(), source_version()));
    let mut argv = vec![bin.to_string_lossy().into_owned(), "run".to_string()];
    argv.extend(extra.iter().cloned());
    let outcome = vm::run(&opts, &root, &argv)?;
    outcome.report();
    let Some(json) = extract(&outcome.out) else {
        bail!(
            "the bench printed no report (guest status: {:?})",
            outcome.status
        );
    };
    let dir = root.join("target/bench");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let report = dir.join("report.json");
    fs::write(&report, format!("{json}\n"))
        .with_context(|| format!("writing {}", report.display()))?;
    host::run(Command::new(&bin).arg("render").arg(&report).arg(&dir))?;
    eprintln!(
        "xtask: wrote {0}/report.json, {0}/report.md, {0}/throughput.svg",
        dir.display()
    );
    Ok(outcome.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_between_markers() {
        let out = format!("noise\n{BEGIN}\n{{\"a\": 1}}\n{END}\n");
        assert_eq!(extract(&out), Some("{\"a\": 1}"));
        assert_eq!(extract("no markers"), None);
        assert_eq!(extract(&format!("{BEGIN}\n{{")), None);
    }
}
