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
//! KTAP output: `KTAP version 1`, `1..N`, `ok N name`, `not ok N name`,
//! `ok N name # SKIP reason`, diagnostics as `# ...`; last line `N passed,
//! N failed, N skipped`; exit 0 iff none failed. Without `/dev/pidfd_mem`
//! every test is skipped. Arguments: `--list`, or filters (substrings of
//! test names).

mod tests;
mod util;

use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Prints a diagnostic line.
pub fn note(s: impl std::fmt::Display) {
    for line in s.to_string().lines() {
        println!("# {line}");
    }
}

/// A test's reason to be skipped (returned as the error).
#[derive(Debug)]
pub struct Skip(pub String);

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Skip {}

/// One test.
pub struct Test {
    /// Named after the subcommand and what it checks.
    pub name: &'static str,
    /// The test.
    pub run: fn() -> anyhow::Result<()>,
}

/// How long one test may take.
const TIMEOUT: Duration = Duration::from_secs(300);

enum Outcome {
    Pass,
    Fail(String),
    Skip(String),
}

/// Runs `t` on its own thread with a timeout. Its processes are killed
/// when their guards drop (or, after a timeout, when this program exits).
fn run_one(t: &Test) -> Outcome {
    let (tx, rx) = mpsc::channel();
    let run = t.run;
    let spawned = std::thread::Builder::new()
        .name(t.name.into())
        .spawn(move || {
            let r = std::panic::catch_unwind(run);
            let _ = tx.send(r);
        });
    if let Err(e) = spawned {
        return Outcome::Fail(format!("cannot start the test thread: {e}"));
    }
    match rx.recv_timeout(TIMEOUT) {
        Ok(Ok(Ok(()))) => Outcome::Pass,
        Ok(Ok(Err(e))) => match e.downcast_ref::<Skip>() {
            Some(s) => Outcome::Skip(s.0.clone()),
            None => Outcome::Fail(format!("{e:#}")),
        },
        Ok(Err(p)) => Outcome::Fail(format!(
            "panic: {}",
            p.downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default()
        )),
        Err(_) => Outcome::Fail(format!("timeout after {} s", TIMEOUT.as_secs())),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let all = tests::all();
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let sel: Vec<&Test> = all
        .iter()
        .filter(|t| filters.is_empty() || filters.iter().any(|f| t.name.contains(f.as_str())))
        .collect();
    if args.iter().any(|a| a == "--list") {
        for t in &sel {
            println!("{}", t.name);
        }
        return ExitCode::SUCCESS;
    }
    let missing = (!pidfd_mem::module_loaded()).then(|| {
        format!(
            "{} missing: {}",
            pidfd_mem::sys::PIDFD_MEM_DEVICE,
            pidfd_mem::MODULE_HELP
        )
    });
    println!("KTAP version 1");
    println!("1..{}", sel.len());
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for (i, t) in sel.iter().enumerate() {
        let n = i + 1;
        let t0 = Instant::now();
        let outcome = match &missing {
            Some(m) => Outcome::Skip(m.clone()),
            None => run_one(t),
        };
        match outcome {
            Outcome::Pass => {
                passed += 1;
                note(format!(
                    "{} took {:.1} s",
                    t.name,
                    t0.elapsed().as_secs_f64()
                ));
                println!("ok {n} {}", t.name);
            }
            Outcome::Skip(why) => {
                skipped += 1;
                println!("ok {n} {} # SKIP {}", t.name, why.replace('\n', " "));
            }
            Outcome::Fail(why) => {
                failed += 1;
                note(why);
                println!("not ok {n} {}", t.name);
            }
        }
    }
    println!("{passed} passed, {failed} failed, {skipped} skipped");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
