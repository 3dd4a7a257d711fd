//! pidfd-mem-regress: the bug corpus as regression tests. Runs each
//! reproducer of `examples/` (built with `cargo build --release --examples`,
//! found next to this program) in turn, with a time limit, and reports
//! KTAP. A reproducer passes when it exits 0 within its limit; the ones
//! that found lockdep or KASAN reports pass on any kernel and are judged
//! by the bench's splat scan. (Bugs whose reproducer became a test of the
//! contract suite, such as the pwrite/fork leak, run there.)
//!
//! ```text
//! cargo build --release -p pidfd-mem-stress --bins --examples
//! cargo xtask run -- target/release/pidfd-mem-regress
//! cargo xtask run --smp 1 -- target/release/pidfd-mem-regress   # as CI does too
//! ```

use std::io::{BufRead, BufReader};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// A reproducer: its example name, arguments, time limit, and why it may
/// not be run (an open bug: reported as a skip, never as a pass).
struct Case {
    name: &'static str,
    args: &'static [&'static str],
    limit: Duration,
    open_bug: Option<&'static str>,
}

const CASES: &[Case] = &[
    Case {
        name: "repro_thp_split_lockdep",
        args: &[],
        limit: Duration::from_secs(120),
        open_bug: None,
    },
    Case {
        name: "repro_shmem_punch_lockdep",
        args: &[],
        limit: Duration::from_secs(120),
        open_bug: None,
    },
    Case {
        name: "repro_held_locks_uaf",
        args: &[],
        limit: Duration::from_secs(120),
        open_bug: None,
    },
    Case {
        name: "repro_rmw_livelock",
        args: &[],
        limit: Duration::from_secs(60),
        open_bug: None,
    },
    Case {
        name: "repro_register_with_mirror_lockdep",
        args: &[],
        limit: Duration::from_secs(60),
        open_bug: None,
    },
    Case {
        name: "repro_fork_child_register_lockdep",
        args: &[],
        limit: Duration::from_secs(60),
        open_bug: None,
    },
];

/// Runs one reproducer; Ok(()) if it exited 0 in time.
fn run(path: &std::path::Path, case: &Case) -> Result<(), String> {
    let mut child = Command::new(path)
        .args(case.args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
    // Relay the reproducer's lines as KTAP diagnostics, from a thread each.
    let relays: Vec<_> = [
        child
            .stdout
            .take()
            .map(|o| Box::new(o) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|e| Box::new(e) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|r| {
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines().map_while(Result::ok) {
                println!("# {}", line.trim_start_matches("# "));
            }
        })
    })
    .collect();
    let end = Instant::now() + case.limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Ok(s),
            Ok(None) if Instant::now() >= end => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!(
                    "still running after {} s: killed",
                    case.limit.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => break Err(format!("wait: {e}")),
        }
    };
    for r in relays {
        let _ = r.join();
    }
    match status? {
        s if s.success() => Ok(()),
        s => Err(format!("exited with {s}")),
    }
}

fn main() -> ExitCode {
    let dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("examples")))
        .unwrap_or_default();
    println!("KTAP version 1");
    println!("1..{}", CASES.len());
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for (i, case) in CASES.iter().enumerate() {
        let n = i + 1;
        let name = format!("regress_{}", case.name.trim_start_matches("repro_"));
        if let Some(why) = case.open_bug {
            println!("ok {n} {name} # SKIP {why}");
            skipped += 1;
            continue;
        }
        let path = dir.join(case.name);
        if !path.exists() {
            println!(
                "# {} missing: build it with `cargo build --release -p pidfd-mem-stress --examples`",
                path.display()
            );
            println!("not ok {n} {name}");
            failed += 1;
            continue;
        }
        match run(&path, case) {
            Ok(()) => {
                println!("ok {n} {name}");
                passed += 1;
            }
            Err(e) => {
                println!("# {name}: {e}");
                println!("not ok {n} {name}");
                failed += 1;
            }
        }
    }
    println!("# {passed} passed, {failed} failed, {skipped} skipped");
    println!("{passed} passed, {failed} failed, {skipped} skipped");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
