//! `cargo xtask`: builds the kernel module and runs commands and the test suite in a QEMU
//! guest that sees the host's root filesystem. See xtask/README.md.

mod bench;
mod debugkernel;
mod host;
mod initramfs;
mod ktap;
mod pvh;
mod vm;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

#[derive(Parser)]
#[command(about = "Build pidfd_mem.ko and run commands and tests in a QEMU guest")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the Debian packages the bench needs.
    Setup,
    /// Build kmod/pidfd_mem.ko.
    Kmod {
        /// Kernel build directory [default: the default kernel's /lib/modules/<ver>/build].
        #[arg(long)]
        kdir: Option<PathBuf>,
    },
    /// Boot the guest with the module loaded and run CMD in it; exit with CMD's status.
    Run {
        #[command(flatten)]
        vm: VmArgs,
        /// The command and its arguments, run as root in the current directory.
        #[arg(last = true, required = true, value_name = "CMD")]
        cmd: Vec<String>,
    },
    /// Host checks, then the guest suites in two boots (two vCPUs, then one). Prints "N passed, N failed".
    Test {
        #[command(flatten)]
        vm: VmArgs,
        /// Skip cargo fmt, clippy and the host's cargo test.
        #[arg(long)]
        guest_only: bool,
    },
    /// Run `rmap demo` in the guest.
    Demo {
        #[command(flatten)]
        vm: VmArgs,
    },
    /// Build the 6.12 debug kernel (KASAN, lockdep, kmemleak; cached outside the work
    /// tree, in $REMOTE_MAPPING_CACHE or /var/cache/remote-mapping) and run the guest suite
    /// on it.
    DebugKernel {
        /// Only build (or bring up to date) the kernel.
        #[arg(long)]
        build_only: bool,
        /// make -j [default: the number of cores].
        #[arg(long)]
        jobs: Option<usize>,
        /// The same 6.12 kernel without the debug set (in build-6.12; for `bench --kernel`).
        #[arg(long)]
        plain: bool,
        #[command(flatten)]
        vm: VmArgs,
    },
    /// Run pidfd-mem-bench in the guest; write target/bench/report.{json,md}, throughput.svg.
    Bench {
        #[command(flatten)]
        vm: VmArgs,
        /// Arguments for the bench (`--quick`).
        #[arg(last = true, value_name = "ARGS")]
        args: Vec<String>,
    },
}

#[derive(Args, Clone)]
struct VmArgs {
    /// bzImage to boot (with --kdir) [default: newest /boot/vmlinuz-<ver> with headers].
    #[arg(long, requires = "kdir")]
    kernel: Option<PathBuf>,
    /// Build directory of --kernel, used to build the module.
    #[arg(long, requires = "kernel")]
    kdir: Option<PathBuf>,
    /// Where the guest's modules (9p, virtio) are [default: /lib/modules/<release>].
    #[arg(long)]
    modules_dir: Option<PathBuf>,
    /// Do not build or load pidfd_mem.ko.
    #[arg(long)]
    no_module: bool,
    /// Load this .ko instead of building kmod/ (for testing the bench).
    #[arg(long, hide = true, conflicts_with = "no_module")]
    module: Option<PathBuf>,
    /// Seconds before the guest is killed.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    #[arg(long, value_enum, default_value = "tcg")]
    accel: vm::Accel,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 2048)]
    mem: u32,
    /// Guest CPUs.
    #[arg(long, default_value_t = 2)]
    smp: u32,
    /// Extra environment for the command in the guest.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Keep target/vm/run-<pid>/ (logs) even when the run passes.
    #[arg(long)]
    keep: bool,
    /// Extra kernel command line (e.g. "init_on_free=1 page_poison=1").
    #[arg(long, value_name = "ARGS", default_value = "")]
    append: String,
}

impl VmArgs {
    /// Builds what the guest needs and turns the flags into [`vm::Options`].
    fn options(&self) -> Result<vm::Options> {
        host::ensure_packages()?;
        let kernel = host::select_kernel(
            self.kernel.as_deref(),
            self.kdir.as_deref(),
            self.modules_dir.as_deref(),
        )?;
        eprintln!(
            "xtask: kernel {} ({})",
            kernel.release,
            kernel.image.display()
        );
        let module = match (&self.module, self.no_module) {
            (_, true) => None,
            (Some(ko), false) => Some((ko.clone(), None)),
            (None, false) => Some((
                host::build_kmod_for_run(&kernel.kdir)?,
                Some("/dev/pidfd_mem".to_string()),
            )),
        };
        let env = self
            .env
            .iter()
            .map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect::<Option<Vec<_>>>()
            .context("--env takes KEY=VALUE")?;
        let mut opts = vm::Options {
            kernel,
            module,
            timeout: Duration::from_secs(self.timeout),
            accel: vm::Accel::Tcg,
            mem_mib: self.mem,
            smp: self.smp,
            env,
            keep: self.keep,
            stream: true,
            append: self.append.clone(),
        };
        if self.accel == vm::Accel::Kvm && vm::kvm_works(&opts) {
            opts.accel = vm::Accel::Kvm;
        }
        Ok(opts)
    }
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<i32> {
    let cwd = std::env::current_dir()?;
    match Cli::parse().cmd {
        Cmd::Setup => {
            host::ensure_packages()?;
            eprintln!("xtask: the packages the bench needs are installed");
            Ok(0)
        }
        Cmd::Kmod { kdir } => {
            host::ensure_packages()?;
            let kdir = match kdir {
                Some(k) => k,
                None => host::default_kernel()?.kdir,
            };
            let ko = host::build_kmod(&kdir)?;
            eprintln!("xtask: built {}", ko.display());
            Ok(0)
        }
        Cmd::Run { vm, cmd } => {
            let outcome = vm::run(&vm.options()?, &cwd, &cmd)?;
            outcome.report();
            Ok(outcome.exit_code())
        }
        Cmd::Test { vm, guest_only } => test(&vm, guest_only),
        Cmd::Demo { vm } => demo(&vm),
        Cmd::Bench { vm, args } => bench::bench(&vm, &args),
        Cmd::DebugKernel {
            build_only,
            jobs,
            plain,
            mut vm,
        } => {
            let jobs = jobs.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
            });
            let flavour = if plain {
                debugkernel::Flavour::Plain
            } else {
                debugkernel::Flavour::Debug
            };
            let (kdir, image) = debugkernel::build(jobs, flavour)?;
            eprintln!("xtask: kernel {}", image.display());
            if build_only {
                return Ok(0);
            }
            vm.kernel = Some(image);
            vm.kdir = Some(kdir);
            // KASAN and lockdep make everything several times slower under TCG.
            vm.timeout = vm.timeout.max(3600);
            test(&vm, true)
        }
    }
}

/// Guest test programs, run in this order in one boot: a path relative to the repository,
/// then its arguments.
const GUEST_SUITE: &[&str] = &[
    "target/vm/smoke",
    "target/release/pidfd-mem-tests",
    "target/release/rmap-guest-tests",
    "target/release/vmi-tests",
    "target/release/pidfd-mem-stress --seconds 20",
    "target/release/pidfd-mem-fuzz --seconds 15",
    "target/release/pidfd-mem-regress",
];

/// Run again in a second boot with one vCPU, where TCG performs an atomic
/// read-modify-write as a load and a store (the bugs of that shape showed
/// only there), with the fuzzer's corpus replayed.
const GUEST_SUITE_SMP1: &[&str] = &[
    "target/release/pidfd-mem-tests",
    "target/release/pidfd-mem-regress",
    "target/release/pidfd-mem-fuzz --corpus",
];

fn test(args: &VmArgs, guest_only: bool) -> Result<i32> {
    host::ensure_packages()?;
    // Every step runs even when an earlier one failed, so that one run shows every problem.
    let mut fails = Vec::new();
    if !guest_only {
        let clippy = [
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ];
        for step in [
            &["fmt", "--all", "--check"][..],
            &clippy,
            &["test", "--workspace"],
        ] {
            if let Err(e) = host::run(host::cargo().args(step)) {
                fails.push(format!("{e:#}"));
            }
        }
    }
    let mut totals = ktap::Totals::default();
    let mut smp1 = args.clone();
    smp1.smp = 1;
    for (suite, vm) in [(GUEST_SUITE, args), (GUEST_SUITE_SMP1, &smp1)] {
        match guest_suite(vm, suite, &mut fails) {
            Ok(t) => totals = totals + t,
            Err(e) => fails.push(format!("{e:#}")),
        }
    }
    for f in &fails {
        eprintln!("xtask: FAIL: {f}");
    }
    let totals = ktap::Totals {
        failed: totals.failed + u32::try_from(fails.len())?,
        ..totals
    };
    println!("{totals}");
    Ok(i32::from(totals.failed > 0))
}

/// Builds the module and the guest programs, runs `suite` in one boot, and counts its KTAP
/// results. Failures outside KTAP (a missing program, a splat) go to `fails`.
fn guest_suite(args: &VmArgs, suite: &[&str], fails: &mut Vec<String>) -> Result<ktap::Totals> {
    let root = host::repo_root();
    let opts = args.options()?; // builds the module
    host::run(host::cargo().args([
        "build",
        "--release",
        "--workspace",
        "--bins",
        "--tests",
        "--examples",
    ]))?;
    host::run(
        Command::new("gcc")
            .args(["-static", "-O2", "-Wall", "-Werror", "-I"])
            .arg(root.join("include/uapi"))
            .arg(root.join("xtask/guest/smoke.c"))
            .arg("-o")
            .arg(host::vm_dir()?.join("smoke")),
    )?;

    // One shell script runs every program that exists; their KTAP goes to stdout.
    let mut script = String::from("rc=0\n");
    for entry in suite {
        let mut words = entry.split_whitespace();
        let prog = words.next().unwrap_or_default();
        let path = root.join(prog);
        if !path.exists() {
            fails.push(format!("no guest suite: {} does not exist", path.display()));
            continue;
        }
        let mut p = vm::sh_quote(&path.to_string_lossy());
        for w in words {
            p += " ";
            p += &vm::sh_quote(w);
        }
        script += &format!("echo '# xtask: running {entry}'\n{p} 2>&1 || {{ echo \"# xtask: {prog} exited with $?\"; rc=1; }}\n");
    }
    script += "exit $rc\n";
    let argv = ["/bin/sh".to_string(), "-c".to_string(), script];
    let outcome = vm::run(&opts, &root, &argv)?;
    outcome.report();
    let totals = ktap::count(&outcome.out);
    if !outcome.splats.is_empty() {
        fails.push("kernel splat in the guest".to_string());
    }
    if outcome.status != vm::Status::Exit(0) && totals.failed == 0 {
        fails.push("the guest run failed without a failing KTAP result".to_string());
    }
    Ok(totals)
}

fn demo(args: &VmArgs) -> Result<i32> {
    let rmap = host::repo_root().join("target/release/rmap");
    if !rmap.exists() {
        host::run(host::cargo().args(["build", "--release", "--bin", "rmap"]))
            .context("the rmap CLI cannot be built yet")?;
    }
    if !Path::new(&rmap).exists() {
        bail!("{} does not exist after building", rmap.display());
    }
    let opts = args.options()?;
    let outcome = vm::run(
        &opts,
        &host::repo_root(),
        &[rmap.to_string_lossy().into_owned(), "demo".into()],
    )?;
    outcome.report();
    Ok(outcome.exit_code())
}
