//! `pidfd-mem-fuzz`: a seeded syscall fuzzer for the pidfd_mem module's
//! interface (contract §1, M1, U1, K1, A1-A3, A7-A9, P1, P3).
//!
//! Random ioctls (the module's numbers with random and edge arguments,
//! other numbers, bad, misaligned and straddling pointers, overflowing and
//! huge sizes, negative offsets) on the device, control and access fds;
//! mmap/munmap/mremap/mprotect/madvise/msync/mlock on mirrors; pread/pwrite
//! and friends with random offsets, sizes and bad buffers; mirrors as
//! buffers of other system calls, /proc/self/mem, process_vm_readv and
//! futex on mirror addresses; racing threads that close and re-dup fds
//! others use; targets that exit, exec or are killed mid-call; forked
//! children that touch mirrors unguarded. Answers the contract pins down
//! are checked (oracles); the bench checks for splats, hangs and leaks.
//!
//! ```text
//! cargo xtask run -- target/release/pidfd-mem-fuzz --seconds 60
//! pidfd-mem-fuzz --seed N --iterations N     # reproducible sequence
//! pidfd-mem-fuzz --corpus                    # replay corpus/seeds.txt
//! ```
//!
//! Each episode (`--ops-per-episode` calls) runs in a forked worker with
//! its own seed, derived from the run's seed; a failure prints the episode
//! seed, which `--episode-seed` replays alone.

mod gen;
mod state;
mod worker;

use core::sync::atomic::Ordering::SeqCst;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use pidfd_mem_stress::failure;
use pidfd_mem_stress::rng::mix;
use pidfd_mem_stress::shm::shared;
use pidfd_mem_stress::sys::{self, Forked};

use state::FShared;

/// The default corpus: seeds that found bugs (or seed the regression set).
const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/corpus/seeds.txt");

/// Seeded syscall fuzzer for pidfd_mem.
#[derive(Parser, Debug)]
#[command(name = "pidfd-mem-fuzz")]
struct Args {
    /// Seed (default: from the clock; printed); decimal or 0x hex.
    #[arg(long, value_parser = parse_seed)]
    seed: Option<u64>,
    /// Stop after this many calls (rounded up to whole episodes).
    #[arg(long)]
    iterations: Option<u64>,
    /// Stop after this many seconds (1..=3600; default 60 without --iterations).
    #[arg(long)]
    seconds: Option<u64>,
    /// Replay the seeds of a corpus file (`SEED ITERATIONS # note` or
    /// `episode EPISODE_SEED # note` per line).
    #[arg(long, num_args = 0..=1, default_missing_value = CORPUS)]
    corpus: Option<String>,
    /// Calls per episode (one forked worker each).
    #[arg(long, default_value_t = 250)]
    ops_per_episode: u64,
    /// Replay one episode by its seed (decimal or 0x hex).
    #[arg(long, value_parser = parse_seed)]
    episode_seed: Option<u64>,
    /// An episode that runs longer than this many seconds is a hang.
    #[arg(long, default_value_t = 180)]
    episode_timeout: u64,
    /// Print every call.
    #[arg(long)]
    verbose: bool,
    /// (internal) Sleep until the given parent dies: what exec'ing
    /// targets become.
    #[arg(long, hide = true)]
    idle: Option<i32>,
}

enum Limit {
    Ops(u64),
    Time(Duration),
    Episode(u64),
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(ppid) = args.idle {
        sys::die_with_parent_of(ppid);
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    if let Some(s) = args.seconds {
        if !(1..=3600).contains(&s) {
            eprintln!("--seconds must be in 1..=3600");
            return ExitCode::from(2);
        }
    }
    let sh: &FShared = shared();
    let _ = rustix::process::set_child_subreaper(Some(rustix::process::getpid()));
    let mut runs: Vec<(String, u64, Limit)> = Vec::new();
    if let Some(path) = &args.corpus {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{path}: {e}");
                return ExitCode::from(2);
            }
        };
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut it = line.split_whitespace();
            if line.starts_with("episode") {
                let Some(e) = it.nth(1).and_then(parse_u64) else {
                    eprintln!("{path}: bad line: {line}");
                    return ExitCode::from(2);
                };
                runs.push((
                    format!("p3_fuzz_corpus_episode_{e:#x}"),
                    e,
                    Limit::Episode(e),
                ));
                continue;
            }
            let (Some(seed), Some(iters)) =
                (it.next().and_then(parse_u64), it.next().and_then(parse_u64))
            else {
                eprintln!("{path}: bad line: {line}");
                return ExitCode::from(2);
            };
            runs.push((format!("p3_fuzz_corpus_{seed}"), seed, Limit::Ops(iters)));
        }
    } else if let Some(e) = args.episode_seed {
        runs.push((format!("p3_fuzz_episode_{e:#x}"), e, Limit::Episode(e)));
    } else {
        let seed = args.seed.unwrap_or_else(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            mix(t.as_nanos() as u64, u64::from(std::process::id()))
        });
        let limit = match (args.iterations, args.seconds) {
            (Some(n), _) => Limit::Ops(n),
            (None, s) => Limit::Time(Duration::from_secs(s.unwrap_or(60))),
        };
        runs.push((format!("p3_fuzz_seed_{seed}"), seed, limit));
    }
    println!("KTAP version 1");
    println!("1..{}", runs.len());
    println!("# pidfd-mem-fuzz: kernel {}", sys::kernel_release());
    if !std::path::Path::new(pidfd_mem::sys::PIDFD_MEM_DEVICE).exists() {
        for (i, (name, _, _)) in runs.iter().enumerate() {
            println!(
                "ok {} {name} # SKIP {} missing",
                i + 1,
                pidfd_mem::sys::PIDFD_MEM_DEVICE
            );
        }
        println!("0 passed, 0 failed, {} skipped", runs.len());
        return ExitCode::SUCCESS;
    }
    let t0 = Instant::now();
    let (mut passed, mut failed) = (0, 0);
    for (i, (name, seed, limit)) in runs.iter().enumerate() {
        let before = sh.fails.count();
        let n0 = sh.ops.load(SeqCst);
        match limit {
            Limit::Episode(e) => println!("# episode seed {e:#x}, {} calls", args.ops_per_episode),
            Limit::Ops(n) => println!("# seed {seed} (replay: --seed {seed} --iterations {n})"),
            Limit::Time(d) => println!(
                "# seed {seed} (replay: --seed {seed} --seconds {})",
                d.as_secs()
            ),
        }
        let _ = std::io::stdout().flush();
        campaign(sh, *seed, limit, &args);
        let n = sh.ops.load(SeqCst) - n0;
        if sh.fails.count() == before {
            passed += 1;
            println!("# {name}: {n} calls");
            println!("ok {} {name}", i + 1);
        } else {
            failed += 1;
            for m in sh.fails.messages().iter().skip(before as usize) {
                println!("# {name}: {m}");
            }
            println!("not ok {} {name}", i + 1);
        }
        let _ = std::io::stdout().flush();
    }
    // Orphaned descendants (targets killed with their worker, their fork
    // children) come to us: wait for all, so that nothing holds the module
    // when we exit (the bench unloads it right after, L3).
    let _ = sys::reap_all(Duration::from_secs(5));
    sys::kill_children();
    if let Some(pids) = sys::reap_all(Duration::from_secs(60)) {
        for pid in pids {
            let stack = std::fs::read_to_string(format!("/proc/{pid}/stack")).unwrap_or_default();
            failure!(
                sh.fails,
                "process {pid} did not exit within 60 s after the run; kernel stack: {}",
                stack.replace('\n', " | ")
            );
        }
        failed += 1;
        passed -= passed.min(1);
    }
    println!(
        "# {} calls in {} episodes, {:.1} s",
        sh.ops.load(SeqCst),
        sh.episodes.load(SeqCst),
        t0.elapsed().as_secs_f64()
    );
    for l in sh.lines() {
        println!("# {l}");
    }
    println!("# {passed} passed, {failed} failed");
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn parse_seed(s: &str) -> Result<u64, String> {
    parse_u64(s).ok_or_else(|| format!("not a number: {s}"))
}

fn parse_u64(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Runs episodes until the limit; stops at the first failure.
fn campaign(sh: &FShared, seed: u64, limit: &Limit, args: &Args) {
    let start = Instant::now();
    let ops0 = sh.ops.load(SeqCst);
    let mut k = 0u64;
    let me = std::process::id() as i32;
    loop {
        let eseed = match limit {
            Limit::Episode(e) if k == 0 => *e,
            Limit::Episode(_) => return,
            Limit::Ops(n) if sh.ops.load(SeqCst) - ops0 >= *n => return,
            Limit::Time(d) if start.elapsed() >= *d => return,
            _ => mix(seed, k),
        };
        k += 1;
        let failed_before = sh.fails.count();
        let _ = std::io::stdout().flush();
        // SAFETY: the supervisor is single-threaded.
        let pid = match unsafe { sys::fork() } {
            Ok(Forked::Child) => {
                sys::die_with_parent_of(me);
                let code = worker::run(sh, eseed, args.ops_per_episode, args.verbose);
                let _ = std::io::stdout().flush();
                sys::exit_now(code)
            }
            Ok(Forked::Parent(pid)) => pid,
            Err(e) => {
                failure!(sh.fails, "fork of a worker: {e}");
                return;
            }
        };
        sh.episodes.fetch_add(1, SeqCst);
        match worker::wait_timeout(pid, Duration::from_secs(args.episode_timeout)) {
            None => {
                let mut stacks = String::new();
                if let Ok(d) = std::fs::read_dir(format!("/proc/{pid}/task")) {
                    for t in d.flatten() {
                        let s = std::fs::read_to_string(t.path().join("stack")).unwrap_or_default();
                        stacks.push_str(&format!(
                            " [task {}: {}]",
                            t.file_name().to_string_lossy(),
                            s.replace('\n', " | ")
                        ));
                    }
                }
                failure!(
                    sh.fails,
                    "episode {eseed:#x} hung for {} s in: {}; kernel stacks:{stacks}",
                    args.episode_timeout,
                    sh.now()
                );
                sys::kill(pid, libc::SIGKILL);
                sys::reap(pid);
            }
            Some(st) => {
                if libc::WIFSIGNALED(st) {
                    failure!(
                        sh.fails,
                        "episode {eseed:#x}: the worker died of {} during: {} (the fuzzer must not crash: replay with --episode-seed {eseed:#x})",
                        sys::signal_name(libc::WTERMSIG(st)),
                        sh.now()
                    );
                } else if libc::WEXITSTATUS(st) != 0 && sh.fails.count() == failed_before {
                    failure!(
                        sh.fails,
                        "episode {eseed:#x}: the worker exited {}",
                        libc::WEXITSTATUS(st)
                    );
                }
            }
        }
        while sys::reap_any().is_some() {}
        if sh.corrupted() {
            failure!(
                sh.fails,
                "episode {eseed:#x}: the fuzzer's own shared state was overwritten (last call: {})",
                sh.now()
            );
        }
        if sh.fails.count() > failed_before {
            println!("# failing episode seed {eseed:#x} (replay: --episode-seed {eseed:#x} --ops-per-episode {})", args.ops_per_episode);
            return;
        }
    }
}
