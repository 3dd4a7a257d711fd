//! `pidfd-mem-stress`: several target processes churn their mappings while
//! several mappers fault, read, write, pread, fork, exit and UNMAP/MAP/LOCK
//! against them, for a set time; every value read is checked against what
//! T can have held (contract C1, C2, C3, C4, A1, A5, K1, L3, P1, P3).
//!
//! Run in the guest, as root:
//!
//! ```text
//! cargo xtask run --timeout 900 -- target/release/pidfd-mem-stress --seconds 60
//! ```
//!
//! The supervisor (this process) sets up the system (`env`), forks the
//! targets (`target`) and mappers (`mapper`), respawns them when they exit,
//! kills a target now and then, compacts memory (migration), asks the
//! memory cgroup to reclaim (swap), and once, half way, tries to unload the
//! module while it is in use (must fail, L3). At the end it prints what was
//! done, and one KTAP result per kind of check; exit status 0 iff all
//! passed. The bench adds its own checks: no kernel splat, module unloads
//! afterwards, kmemleak clean.

mod env;
mod layout;
mod mapper;
mod target;

use core::sync::atomic::Ordering::SeqCst;
use std::collections::HashSet;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use pidfd_mem_stress::failure;
use pidfd_mem_stress::rng::{mix, Rng};
use pidfd_mem_stress::shm::shared;
use pidfd_mem_stress::sys::{self, Forked};
use rustix::io::Errno;

use layout::*;

/// Stress of pidfd_mem: churning targets against racing mappers.
#[derive(Parser, Debug)]
#[command(name = "pidfd-mem-stress")]
struct Args {
    /// How long to run (1..=3600 s).
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Seed of every random choice (default: from the clock; printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Target processes (1..=8).
    #[arg(long, default_value_t = 3)]
    targets: usize,
    /// Mapper processes (1..=16).
    #[arg(long, default_value_t = 3)]
    mappers: usize,
    /// Swap for memory pressure and MADV_PAGEOUT.
    #[arg(long, value_enum, default_value = "auto")]
    swap: env::SwapMode,
    /// Leave the system alone (no KSM/THP knobs, cgroup, swap).
    #[arg(long)]
    no_env: bool,
    /// Each target pauses up to this many microseconds between operations.
    #[arg(long, default_value_t = 200)]
    pace_us: u64,
    /// Skip what makes T's kernel invalidate under anon_vma->rwsem (THP
    /// split/collapse, MADV_PAGEOUT/COLD, migration, compaction, memory
    /// pressure) or a file's i_mmap_rwsem (MADV_REMOVE, ftruncate), which
    /// lockdep reports against the module (README): lets the rest run on a
    /// lockdep kernel.
    #[arg(long)]
    lockdep_safe: bool,
    /// Run the whole time even after a failure (to see what else goes wrong,
    /// e.g. the module's debug checks); by default the run stops at once.
    #[arg(long)]
    keep_going: bool,
}

struct Child {
    pid: i32,
    slot: usize,
    is_target: bool,
}

struct Supervisor<'a> {
    sh: &'a Shared,
    args: Args,
    seed: u64,
    env: env::Env,
    children: Vec<Child>,
    killed: HashSet<i32>,
    next_inc: u64,
    spawned: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !(1..=3600).contains(&args.seconds) {
        eprintln!("--seconds must be in 1..=3600");
        return ExitCode::from(2);
    }
    if !(1..=MAX_T).contains(&args.targets) || !(1..=MAX_M).contains(&args.mappers) {
        eprintln!("--targets must be in 1..={MAX_T}, --mappers in 1..={MAX_M}");
        return ExitCode::from(2);
    }
    let seed = args.seed.unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        mix(t.as_nanos() as u64, u64::from(std::process::id()))
    });
    println!("KTAP version 1");
    println!("1..{NF}");
    println!(
        "# pidfd-mem-stress: seed {seed} (replay with --seed {seed}), {} s, {} targets, {} mappers, kernel {}",
        args.seconds,
        args.targets,
        args.mappers,
        sys::kernel_release()
    );
    if !std::path::Path::new(pidfd_mem::sys::PIDFD_MEM_DEVICE).exists() {
        for (i, n) in F_NAMES.iter().enumerate() {
            println!(
                "ok {} {n} # SKIP {} missing",
                i + 1,
                pidfd_mem::sys::PIDFD_MEM_DEVICE
            );
        }
        println!("0 passed, 0 failed, {NF} skipped");
        return ExitCode::SUCCESS;
    }
    let touch = !args.no_env && sys::is_root();
    let swap = if args.lockdep_safe {
        env::SwapMode::None
    } else {
        args.swap
    };
    let mut env = env::Env::setup(touch, swap, args.targets);
    if args.lockdep_safe {
        env.compact = false;
        env.notes.push(
            "--lockdep-safe: no THP split/collapse, MADV_PAGEOUT/COLD/REMOVE, ftruncate, migration, compaction or pressure"
                .into(),
        );
    }
    for n in &env.notes {
        println!("# environment: {n}");
    }
    let _ = std::io::stdout().flush();
    let sh: &Shared = shared();
    let _ = rustix::process::set_child_subreaper(Some(rustix::process::getpid()));
    let mut s = Supervisor {
        sh,
        args,
        seed,
        env,
        children: Vec::new(),
        killed: HashSet::new(),
        next_inc: 0,
        spawned: 0,
    };
    let vm0 = VmStat::now();
    let t0 = Instant::now();
    s.run();
    let elapsed = t0.elapsed();
    s.stop_all();
    let vm1 = VmStat::now();
    let events = s.env.events();
    s.env.teardown();
    s.report(elapsed, &vm0, &vm1, events)
}

/// /proc/vmstat fields worth reporting (deltas over the run).
struct VmStat(Vec<(&'static str, u64)>);

const VMSTAT_FIELDS: &[&str] = &[
    "pswpin",
    "pswpout",
    "pgmigrate_success",
    "numa_pages_migrated",
    "compact_success",
    "thp_fault_alloc",
    "thp_collapse_alloc",
    "thp_split_pmd",
    "thp_split_page",
    "ksm_swpin_copy",
    "cow_ksm",
];

impl VmStat {
    fn now() -> Self {
        Self(
            VMSTAT_FIELDS
                .iter()
                .filter_map(|f| sys::vmstat(f).map(|v| (*f, v)))
                .collect(),
        )
    }
}

impl Supervisor<'_> {
    fn spawn_target(&mut self, slot: usize) {
        let sh = self.sh;
        let ts = &sh.targets[slot];
        self.next_inc += 1;
        if self.next_inc % 65536 == 0 {
            self.next_inc += 1;
        }
        let inc = self.next_inc;
        // Order matters to readers (layout): incarnation first, then the
        // status of the regions, then (in T) the addresses and ALIVE.
        ts.state.store(ST_STARTING, SeqCst);
        ts.inc.store(inc, SeqCst);
        for r in 0..NREG {
            ts.started[r].store(0, SeqCst);
            ts.done[r].store(0, SeqCst);
        }
        let cfg = target::TargetCfg {
            cgroup_procs: self.env.procs(),
            numa_nodes: self.env.numa_nodes,
            ksm: self.env.ksm,
            ballast_mib: if self.env.swap && self.env.cgroup.is_some() {
                16
            } else {
                0
            },
            pace_us: self.args.pace_us,
            life_ms: (2_000, 15_000),
            exit_per_mille: 1,
            lockdep_safe: self.args.lockdep_safe,
        };
        let seed = mix(self.seed, 0x7000_0000 + inc);
        let _ = std::io::stdout().flush();
        // SAFETY: the supervisor's only other thread writes /proc and /sys
        // files; the child allocates only with glibc's fork-safe malloc.
        match unsafe { sys::fork() } {
            Ok(Forked::Child) => target::run(sh, slot, inc, seed, cfg),
            Ok(Forked::Parent(pid)) => {
                ts.pid.store(pid as u64, SeqCst);
                sh.inc(C::TSpawn);
                self.children.push(Child {
                    pid,
                    slot,
                    is_target: true,
                });
            }
            Err(e) => failure!(sh.fails[F_PROCS], "fork of target {slot}: {e}"),
        }
    }

    fn spawn_mapper(&mut self, slot: usize) {
        let sh = self.sh;
        self.spawned += 1;
        let seed = mix(self.seed, 0x4d00_0000 + self.spawned);
        let cfg = mapper::MapperCfg {
            targets: self.args.targets,
            session_ms: (200, 3_000),
            exit_per_mille: 120,
        };
        let _ = std::io::stdout().flush();
        // SAFETY: as in spawn_target.
        match unsafe { sys::fork() } {
            Ok(Forked::Child) => mapper::run(sh, slot, seed, cfg),
            Ok(Forked::Parent(pid)) => {
                sh.mappers[slot].pid.store(pid as u64, SeqCst);
                sh.inc(C::MSpawn);
                self.children.push(Child {
                    pid,
                    slot,
                    is_target: false,
                });
            }
            Err(e) => failure!(sh.fails[F_PROCS], "fork of mapper {slot}: {e}"),
        }
    }

    /// Handles every child that exited; respawns unless stopping.
    fn collect(&mut self, respawn: bool) {
        while let Some((pid, st)) = sys::peek_child(false) {
            let sh = self.sh;
            let idx = self.children.iter().position(|c| c.pid == pid);
            if let Some(i) = idx {
                let c = self.children.swap_remove(i);
                if c.is_target {
                    // Dead before reaped: a mapper that sees ALIVE after
                    // its pidfd_open has the right process (mapper.rs).
                    sh.targets[c.slot].state.store(ST_DEAD, SeqCst);
                }
                sys::reap(pid);
                let by_us = self.killed.remove(&pid);
                let normal = st == 0
                    || (libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 2) // failure recorded
                    || (by_us && libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGKILL);
                if !normal {
                    failure!(
                        sh.fails[F_PROCS],
                        "{} {} (pid {pid}) ended with {}",
                        if c.is_target { "target" } else { "mapper" },
                        c.slot,
                        sys::describe_status(st)
                    );
                }
                if respawn {
                    if c.is_target {
                        self.spawn_target(c.slot);
                    } else {
                        self.spawn_mapper(c.slot);
                    }
                }
            } else {
                // An orphan (a fork child of a target or mapper that exited).
                sys::reap(pid);
                if libc::WIFSIGNALED(st) && libc::WTERMSIG(st) != libc::SIGKILL {
                    failure!(
                        sh.fails[F_PROCS],
                        "orphaned child {pid} ended with {}",
                        sys::describe_status(st)
                    );
                }
            }
        }
    }

    fn run(&mut self) {
        let sh = self.sh;
        // Our own fds keep the module in use for the unload check (L3).
        let own =
            pidfd_mem::pidfd_open(std::process::id()).and_then(|p| pidfd_mem::pidfd_mem(p, 0));
        if let Err(e) = &own {
            failure!(sh.fails[F_PROCS], "pidfd_mem(self): {e}");
        }
        for slot in 0..self.args.targets {
            self.spawn_target(slot);
        }
        for slot in 0..self.args.mappers {
            self.spawn_mapper(slot);
        }
        // Slow periodic work (compaction can take seconds) in a thread of
        // its own, so that exits are handled at once.
        let stop_bg = std::sync::atomic::AtomicBool::new(false);
        let compact = self.env.compact;
        let reclaim = self.env.reclaim_path();
        let mut rng = Rng::new(mix(self.seed, 1));
        let start = Instant::now();
        let total = Duration::from_secs(self.args.seconds);
        std::thread::scope(|sc| {
            sc.spawn(|| {
                let mut n = 0u64;
                while !stop_bg.load(SeqCst) {
                    std::thread::sleep(Duration::from_millis(250));
                    n += 1;
                    if compact
                        && n % 20 == 0
                        && sys::write_file("/proc/sys/vm/compact_memory", "1").is_ok()
                    {
                        sh.inc(C::SCompact);
                    }
                    if let Some(path) = reclaim.as_deref().filter(|_| n % 8 == 0) {
                        // EAGAIN when less could be reclaimed: fine.
                        let _ = sys::write_file(path, "4M");
                        sh.inc(C::SReclaim);
                    }
                }
            });
            let mut unload_done = false;
            let mut next_kill = Instant::now() + Duration::from_millis(rng.range(1000, 4000));
            while start.elapsed() < total {
                self.collect(true);
                if !unload_done && start.elapsed() >= total / 2 {
                    unload_done = true;
                    self.unload_check();
                }
                if Instant::now() >= next_kill {
                    next_kill = Instant::now() + Duration::from_millis(rng.range(1000, 4000));
                    let ts: Vec<i32> = self
                        .children
                        .iter()
                        .filter(|c| c.is_target)
                        .map(|c| c.pid)
                        .collect();
                    if !ts.is_empty() {
                        let pid = *rng.pick(&ts);
                        self.killed.insert(pid);
                        sys::kill(pid, libc::SIGKILL);
                        sh.inc(C::TKilled);
                    }
                }
                if sh.failures() > 0 && !self.args.keep_going {
                    println!("# stopping early: a failure was recorded");
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            stop_bg.store(true, SeqCst);
        });
        drop(own);
    }

    /// L3: unloading the module while it is in use must fail cleanly.
    fn unload_check(&mut self) {
        let sh = self.sh;
        match sys::try_unload_module(c"pidfd_mem") {
            None => failure!(
                sh.fails[F_UNLOAD],
                "delete_module(pidfd_mem, O_NONBLOCK) unloaded the module while fds and mirrors were in use (L3)"
            ),
            Some(e) if e == Errno::WOULDBLOCK || e == Errno::BUSY => {
                sh.inc(C::SUnload);
                println!("# l3: delete_module(pidfd_mem, O_NONBLOCK) mid-run: {} (refused, as it must be)", pidfd_mem::ErrnoName(e));
            }
            Some(e) if e == Errno::PERM => {
                println!("# l3: delete_module: EPERM (not root): unload check skipped");
                sh.inc(C::SUnload);
            }
            Some(e) => failure!(
                sh.fails[F_UNLOAD],
                "delete_module(pidfd_mem, O_NONBLOCK) while in use: {}, expected EWOULDBLOCK or EBUSY",
                pidfd_mem::ErrnoName(e)
            ),
        }
        if !std::path::Path::new(pidfd_mem::sys::PIDFD_MEM_DEVICE).exists() {
            failure!(
                sh.fails[F_UNLOAD],
                "{} vanished after the unload attempt",
                pidfd_mem::sys::PIDFD_MEM_DEVICE
            );
        }
    }

    /// Stops every process: asks, waits up to 60 s, then kills.
    fn stop_all(&mut self) {
        let sh = self.sh;
        sh.stop.store(1, SeqCst);
        let end = Instant::now() + Duration::from_secs(60);
        while !self.children.is_empty() && Instant::now() < end {
            self.collect(false);
            std::thread::sleep(Duration::from_millis(20));
        }
        for c in &self.children {
            let stack =
                std::fs::read_to_string(format!("/proc/{}/stack", c.pid)).unwrap_or_default();
            failure!(
                sh.fails[F_PROCS],
                "{} {} (pid {}) did not stop within 60 s; kernel stack: {}",
                if c.is_target { "target" } else { "mapper" },
                c.slot,
                c.pid,
                stack.replace('\n', " | ")
            );
            self.killed.insert(c.pid);
            sys::kill(c.pid, libc::SIGKILL);
        }
        let end = Instant::now() + Duration::from_secs(30);
        while !self.children.is_empty() && Instant::now() < end {
            self.collect(false);
            std::thread::sleep(Duration::from_millis(20));
        }
        // Orphans left (fork children): they die with their parents; wait
        // for every one, so that nothing holds the module when we exit.
        let _ = sys::reap_all(Duration::from_secs(5));
        sys::kill_children();
        if let Some(pids) = sys::reap_all(Duration::from_secs(60)) {
            for pid in pids {
                let stack =
                    std::fs::read_to_string(format!("/proc/{pid}/stack")).unwrap_or_default();
                failure!(
                    sh.fails[F_PROCS],
                    "process {pid} did not exit within 60 s after the run; kernel stack: {}",
                    stack.replace('\n', " | ")
                );
            }
        }
    }

    fn report(
        &self,
        elapsed: Duration,
        vm0: &VmStat,
        vm1: &VmStat,
        events: Option<String>,
    ) -> ExitCode {
        let sh = self.sh;
        let get = |c: C| sh.counters.get(c as usize);
        println!("# ran {:.1} s", elapsed.as_secs_f64());
        for prefix in ["t.", "m.", "s."] {
            let title = match prefix {
                "t." => "target operations",
                "m." => "mapper operations",
                _ => "supervisor",
            };
            let items: Vec<String> = COUNTER_NAMES
                .iter()
                .enumerate()
                .filter(|(_, n)| n.starts_with(prefix))
                .map(|(i, n)| format!("{} {}", &n[2..], sh.counters.get(i)))
                .collect();
            for chunk in items.chunks(6) {
                println!("# {title}: {}", chunk.join(", "));
            }
        }
        let accesses = get(C::MLoads)
            + get(C::MLoadFaults)
            + get(C::MCopies)
            + get(C::MCopyFaults)
            + get(C::MStores)
            + get(C::MStoreFaults)
            + get(C::MForkChildLoads)
            + get(C::MForkChildFaults);
        let sigbus = get(C::MLoadFaults)
            + get(C::MCopyFaults)
            + get(C::MStoreFaults)
            + get(C::MForkChildFaults);
        println!(
            "# totals: {} mirror accesses ({} SIGBUS caught as Fault), {} preads, {} pwrites, {} minor faults in mappers",
            accesses,
            sigbus,
            get(C::MPreads) + get(C::MPreadErr),
            get(C::MPwrites) + get(C::MPwriteErr),
            get(C::MMinflt)
        );
        println!(
            "# totals: {} target operations (each changes T's mappings or pages: invalidations), {} UNMAP and {} MAP by mappers, {} target incarnations, {} mapper processes",
            get(C::TOps),
            get(C::MUnmap),
            get(C::MMap),
            get(C::TSpawn),
            get(C::MSpawn)
        );
        let gens: Vec<String> = (0..self.args.targets)
            .map(|t| {
                let ts = &sh.targets[t];
                let g: Vec<String> = (0..NREG)
                    .map(|r| ts.done[r].load(SeqCst).to_string())
                    .collect();
                format!("T{} inc {}: {}", t, ts.inc.load(SeqCst), g.join("/"))
            })
            .collect();
        println!(
            "# generations of the last incarnations (anon/shmem/writable/thp/ksm): {}",
            gens.join("; ")
        );
        let d: Vec<String> = vm1
            .0
            .iter()
            .map(|(f, v)| {
                let old = vm0.0.iter().find(|(g, _)| g == f).map_or(0, |x| x.1);
                format!("{f} {}", v.saturating_sub(old))
            })
            .collect();
        println!("# vmstat deltas: {}", d.join(", "));
        if let Some(ps) = sys::read_u64("/sys/kernel/mm/ksm/pages_sharing") {
            println!(
                "# ksm: pages_sharing {ps}, full_scans {}",
                sys::read_u64("/sys/kernel/mm/ksm/full_scans").unwrap_or(0)
            );
        }
        if let Some(e) = events {
            println!("# memory cgroup events: {e}");
        }
        let mut passed = 0;
        let mut failed = 0;
        for (i, name) in F_NAMES.iter().enumerate() {
            let log = &sh.fails[i];
            if log.count() == 0 {
                passed += 1;
                println!("ok {} {name}", i + 1);
            } else {
                failed += 1;
                for m in log.messages() {
                    println!("# {name}: {m}");
                }
                if log.count() as usize > log.messages().len() {
                    println!("# {name}: ... {} failures in all", log.count());
                }
                println!("not ok {} {name}", i + 1);
            }
        }
        println!("# seed {} (replay with --seed {})", self.seed, self.seed);
        println!("# {passed} passed, {failed} failed");
        println!("{passed} passed, {failed} failed");
        if failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}
