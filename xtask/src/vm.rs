//! Booting the guest under QEMU, running one command in it, and judging the result.

use crate::host::{self, Kernel};
use crate::initramfs::{self, Cpio};
use anyhow::{bail, Context, Result};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const INIT: &str = include_str!("../guest/init.sh");

/// Modules the guest needs before it can reach the host (name, CONFIG symbol when built in).
const GUEST_MODULES: &[(&str, &str)] = &[
    ("virtio_pci", "CONFIG_VIRTIO_PCI"),
    ("virtio_console", "CONFIG_VIRTIO_CONSOLE"),
    ("9pnet_virtio", "CONFIG_NET_9P_VIRTIO"),
    ("9p", "CONFIG_9P_FS"),
];

/// Kernel log text that only a splat prints. A clean boot of Debian's kernel prints none.
const SPLATS: &[&str] = &[
    "BUG:", // BUG: kernel NULL pointer dereference, sleeping function called..., soft lockup, KASAN
    "WARNING:", // WARN_ON, lockdep reports, suspicious RCU usage
    "Oops:",
    "general protection fault",
    "kernel BUG at",
    "Kernel panic",
    "Call Trace:",
    "possible circular locking",
    "possible recursive locking",
    "inconsistent lock state",
    "DEBUG_LOCKS_WARN_ON",
    "refcount_t:",
    "KASAN:",
    "UBSAN:",
    "KFENCE:",
    "soft lockup",
    "hard LOCKUP",
    "blocked for more than", // hung task
    "rcu_sched detected stalls",
    "rcu_preempt detected stalls",
    "list_add corruption",
    "list_del corruption",
    "Bad page",
    "Bad rss-counter",
    "unreferenced object", // kmemleak
];

/// Environment variables passed from the host to the guest command when set.
const PASSED_ENV: &[&str] = &[
    "RUST_LOG",
    "RUST_BACKTRACE",
    "RUST_TEST_THREADS",
    "RUST_MIN_STACK",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Accel {
    Tcg,
    Kvm,
}

#[derive(Clone, Debug)]
pub struct Options {
    pub kernel: Kernel,
    /// The `.ko` to insmod after the host is mounted, and the device node it must create.
    pub module: Option<(PathBuf, Option<String>)>,
    pub timeout: Duration,
    pub accel: Accel,
    pub mem_mib: u32,
    pub smp: u32,
    pub env: Vec<(String, String)>,
    /// Keep the run directory (logs, initramfs) even on success.
    pub keep: bool,
    /// Copy the command's output to our stdout/stderr as it arrives.
    pub stream: bool,
    /// Extra kernel command line.
    pub append: String,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Status {
    Exit(i32),
    GuestTimeout,
    HostTimeout,
    Panic,
    GuestError(String),
    Silent,
}

#[derive(Debug)]
pub struct Outcome {
    pub status: Status,
    /// The command's stdout.
    pub out: String,
    /// Each splat found, with the log lines around it.
    pub splats: Vec<String>,
    pub console_tail: String,
    /// From starting QEMU to the command's start.
    pub boot: Option<Duration>,
    pub total: Duration,
    pub dir: PathBuf,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.status == Status::Exit(0) && self.splats.is_empty()
    }

    pub fn exit_code(&self) -> i32 {
        match self.status {
            Status::Exit(0) if !self.splats.is_empty() => 1,
            Status::Exit(n) => n,
            Status::GuestTimeout | Status::HostTimeout => 124,
            _ => 1,
        }
    }

    /// Explains on stderr what went wrong, if anything, with the logs that show it.
    pub fn report(&self) {
        for s in &self.splats {
            eprintln!("xtask: kernel splat:\n{s}");
        }
        let what = match &self.status {
            Status::Exit(0) => None,
            Status::Exit(n) => Some(format!("the command exited with status {n}")),
            Status::GuestTimeout => Some("the command timed out (guest watchdog)".into()),
            Status::HostTimeout => Some("the guest timed out; QEMU was killed".into()),
            Status::Panic => Some("the guest kernel panicked".into()),
            Status::GuestError(e) => Some(format!("the guest could not run the command: {e}")),
            Status::Silent => Some("the guest stopped without reporting a status".into()),
        };
        let failed = what.is_some() || !self.splats.is_empty();
        if failed && !matches!(self.status, Status::Exit(_)) {
            eprintln!("xtask: last lines of the console:\n{}", self.console_tail);
        }
        if let Some(w) = what {
            eprintln!("xtask: {w}");
        }
        if !self.splats.is_empty() {
            eprintln!(
                "xtask: {} kernel splat(s): the run fails",
                self.splats.len()
            );
        }
        if failed {
            eprintln!("xtask: logs kept in {}", self.dir.display());
        }
        let boot = self
            .boot
            .map_or("-".into(), |b| format!("{:.1}s", b.as_secs_f64()));
        eprintln!(
            "xtask: boot to command {boot}, total {:.1}s",
            self.total.as_secs_f64()
        );
    }
}

/// Quotes a word for a POSIX shell.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The script the host's /bin/sh runs in the chroot: environment, directory, command.
fn command_script(cwd: &Path, argv: &[String], env: &[(String, String)]) -> String {
    let mut s = String::new();
    let mut vars: Vec<(String, String)> = [
        (
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ),
        ("HOME", "/root"),
        ("TERM", "dumb"),
        ("LANG", "C.UTF-8"),
        ("RUST_BACKTRACE", "1"),
        ("XTASK_GUEST", "1"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    vars.extend(
        PASSED_ENV
            .iter()
            .filter_map(|k| Some((k.to_string(), std::env::var(k).ok()?))),
    );
    vars.extend(env.iter().cloned());
    for (k, v) in vars {
        s += &format!("export {k}={}\n", sh_quote(&v));
    }
    s += &format!("cd {} || exit 125\nexec", sh_quote(&cwd.to_string_lossy()));
    for a in argv {
        s += " ";
        s += &sh_quote(a);
    }
    s + "\n"
}

fn build_initramfs(
    opts: &Options,
    cwd: &Path,
    argv: &[String],
    cmd_timeout: u64,
) -> Result<Vec<u8>> {
    let config = match &opts.kernel.config {
        Some(p) => initramfs::read_config(p)?,
        None => Default::default(),
    };
    let modules =
        initramfs::resolve_modules(opts.kernel.modules_dir.as_deref(), &config, GUEST_MODULES)?;
    let mut c = Cpio::new();
    for d in [
        "bin",
        "dev",
        "proc",
        "sys",
        "host",
        "tmp",
        "lib",
        "lib/modules",
        "xtask",
    ] {
        c.dir(d);
    }
    c.char_dev("dev/console", 5, 1);
    c.char_dev("dev/null", 1, 3);
    let busybox = fs::read("/usr/bin/busybox")
        .context("reading /usr/bin/busybox (install busybox-static)")?;
    c.file("bin/busybox", 0o755, &busybox);
    c.file("init", 0o755, INIT.as_bytes());
    let mut names = Vec::new();
    for (i, m) in modules.iter().enumerate() {
        let stem = m.file_name().unwrap_or_default().to_string_lossy();
        let name = format!(
            "lib/modules/{i:02}-{}.ko",
            stem.split(".ko").next().unwrap_or(&stem)
        );
        c.file(&name, 0o644, &initramfs::read_module(m)?);
        names.push(format!("/{name}"));
    }
    let (module, module_dev) = match &opts.module {
        Some((ko, dev)) => {
            let data = fs::read(ko).with_context(|| format!("reading {}", ko.display()))?;
            c.file("xtask/module.ko", 0o644, &data);
            ("/xtask/module.ko", dev.as_deref().unwrap_or(""))
        }
        None => ("", ""),
    };
    let work = shadowed_work_tree()
        .map(|w| w.display().to_string())
        .unwrap_or_default();
    let conf = format!(
        "MODULES={}\nMODULE={module}\nMODULE_DEV={}\nMSIZE=512000\nCMD_TIMEOUT={cmd_timeout}\nWORK={}\n",
        sh_quote(&names.join(" ")),
        sh_quote(module_dev),
        sh_quote(&work),
    );
    c.file("xtask/conf", 0o644, conf.as_bytes());
    c.file(
        "xtask/cmd",
        0o644,
        command_script(cwd, argv, &opts.env).as_bytes(),
    );
    Ok(c.finish())
}

/// QEMU, killed and reaped when dropped (error paths included); it also dies with us.
struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A file that another process appends to; `poll` returns what is new.
struct Tail {
    file: File,
    data: Vec<u8>,
}

impl Tail {
    fn create(path: &Path) -> Result<Tail> {
        File::create(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Tail {
            file: File::open(path)?,
            data: Vec::new(),
        })
    }

    fn poll(&mut self) -> &[u8] {
        let old = self.data.len();
        let _ = self.file.read_to_end(&mut self.data);
        &self.data[old..]
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

/// QEMU escapes a comma in an option value by doubling it.
fn qemu_path(p: &Path) -> String {
    p.to_string_lossy().replace(',', ",,")
}

/// The work tree, when it lies under a directory the guest covers with its
/// own tmpfs (so that it must be exported separately).
fn shadowed_work_tree() -> Option<PathBuf> {
    let root = crate::host::repo_root();
    let root = root.canonicalize().unwrap_or(root);
    ["/tmp", "/run", "/dev/shm"]
        .iter()
        .any(|d| root.starts_with(d))
        .then_some(root)
}

fn qemu_command(opts: &Options, dir: &Path) -> Command {
    let mut q = Command::new("qemu-system-x86_64");
    let (accel, cpu) = match opts.accel {
        Accel::Tcg => ("tcg,thread=multi", "max"),
        Accel::Kvm => ("kvm", "host"),
    };
    q.args([
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ]);
    q.args(["-accel", accel, "-cpu", cpu]);
    q.args([
        "-m",
        &opts.mem_mib.to_string(),
        "-smp",
        &opts.smp.to_string(),
    ]);
    q.arg("-kernel").arg(crate::pvh::boot_image(
        &opts.kernel.image,
        dir.parent().unwrap_or(dir),
    ));
    q.arg("-initrd").arg(dir.join("initramfs.cpio"));
    q.arg("-append")
        .arg(format!("console=ttyS0 panic=-1 quiet {}", opts.append).trim_end());
    q.arg("-serial")
        .arg(format!("file:{}", qemu_path(&dir.join("console.log"))));
    q.args([
        "-fsdev",
        "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap",
    ]);
    q.args(["-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot"]);
    if let Some(work) = shadowed_work_tree() {
        // The guest mounts tmpfs over /tmp, /run and /dev/shm: a work tree
        // there (a CI clone under /tmp, say) is exported on its own.
        q.args([
            "-fsdev",
            &format!(
                "local,id=work,path={},security_model=none,readonly=on,multidevs=remap",
                qemu_path(&work)
            ),
        ]);
        q.args(["-device", "virtio-9p-pci,fsdev=work,mount_tag=work"]);
    }
    q.args(["-device", "virtio-serial-pci"]);
    for port in ["out", "err", "status", "kmsg"] {
        let path = qemu_path(&dir.join(port));
        q.args(["-chardev", &format!("file,id={port},path={path}")]);
        q.args([
            "-device",
            &format!("virtserialport,chardev={port},name={port}"),
        ]);
    }
    q.stdin(Stdio::null()).stdout(Stdio::null());
    // SAFETY: the closure runs in the forked child before exec and only makes two
    // async-signal-safe system calls (prctl, getppid); it touches no memory of the parent.
    unsafe {
        q.pre_exec(|| {
            // If xtask dies (even by SIGKILL), the kernel kills QEMU.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 || libc::getppid() == 1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    q
}

/// Boots the guest and runs `argv` in `cwd` inside it.
pub fn run(opts: &Options, cwd: &Path, argv: &[String]) -> Result<Outcome> {
    if argv.is_empty() {
        bail!("no command to run");
    }
    if opts.accel == Accel::Kvm && !Path::new("/dev/kvm").exists() {
        bail!("--accel kvm: /dev/kvm does not exist");
    }
    prune_runs(&host::vm_dir()?);
    let dir = host::vm_dir()?.join(format!("run-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let secs = opts.timeout.as_secs();
    let cmd_timeout = secs.saturating_sub((secs / 10).max(15)).max(1);
    let initrd = build_initramfs(opts, cwd, argv, cmd_timeout)?;
    fs::write(dir.join("initramfs.cpio"), initrd)?;

    let mut console = Tail::create(&dir.join("console.log"))?;
    let mut out = Tail::create(&dir.join("out"))?;
    let mut err = Tail::create(&dir.join("err"))?;
    let mut q = qemu_command(opts, &dir);
    let start = Instant::now();
    let mut qemu = Qemu(
        q.spawn()
            .context("starting qemu-system-x86_64 (install qemu-system-x86)")?,
    );
    let mut boot = None;
    let mut panic_at = None;
    let mut host_timeout = false;
    let mut scanned = 0;
    loop {
        let exited = qemu.0.try_wait()?.is_some();
        if opts.stream {
            std::io::stdout().write_all(out.poll())?;
            std::io::stdout().flush()?;
            std::io::stderr().write_all(err.poll())?;
        }
        console.poll();
        // Look at complete new console lines for progress and panics.
        let end = console
            .data
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        if end > scanned {
            let new = String::from_utf8_lossy(&console.data[scanned..end]).into_owned();
            scanned = end;
            if boot.is_none() && new.contains("xtask: command start") {
                boot = Some(start.elapsed());
            }
            if panic_at.is_none() && new.contains("Kernel panic - not syncing") {
                panic_at = Some(Instant::now());
            }
        }
        if exited {
            break;
        }
        if panic_at.is_some_and(|t| t.elapsed() > Duration::from_secs(2)) {
            break; // the panic message is out; the guest will not recover
        }
        if start.elapsed() > opts.timeout {
            host_timeout = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(qemu); // kill (if still running) and reap
    let total = start.elapsed();
    if opts.stream {
        std::io::stdout().write_all(out.poll())?;
        std::io::stderr().write_all(err.poll())?;
    }
    console.poll();
    let status_text = fs::read_to_string(dir.join("status")).unwrap_or_default();
    let kmsg = fs::read_to_string(dir.join("kmsg")).unwrap_or_default();
    let console_text = console.text();
    let status = parse_status(
        &status_text,
        &console_text,
        panic_at.is_some(),
        host_timeout,
    );

    let mut splats = Vec::new();
    let mut seen = Vec::new();
    for log in [&kmsg, &console_text] {
        for s in find_splats(log, &mut seen) {
            splats.push(s);
        }
    }
    let outcome = Outcome {
        status,
        out: out.text(),
        splats,
        console_tail: tail_lines(&console_text, 40),
        boot,
        total,
        dir: dir.clone(),
    };
    let _ = fs::remove_file(dir.join("initramfs.cpio"));
    if outcome.passed() && !opts.keep {
        let _ = fs::remove_dir_all(&dir);
    }
    Ok(outcome)
}

/// Deletes the logs of old runs (kept when they failed) but the newest ten and live ones.
fn prune_runs(vm_dir: &Path) {
    let Ok(entries) = fs::read_dir(vm_dir) else {
        return;
    };
    let mut runs: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.strip_prefix("run-")?.to_string();
            let alive = Path::new("/proc").join(pid).exists();
            (!alive).then_some((e.metadata().ok()?.modified().ok()?, e.path()))
        })
        .collect();
    runs.sort_by_key(|r| std::cmp::Reverse(r.0));
    for (_, old) in runs.iter().skip(10) {
        let _ = fs::remove_dir_all(old);
    }
}

fn parse_status(status: &str, console: &str, panic: bool, host_timeout: bool) -> Status {
    let s = status.trim();
    if let Some(n) = s.strip_prefix("exit ") {
        return n.parse().map_or(Status::Silent, Status::Exit);
    }
    if s.starts_with("timeout") {
        return Status::GuestTimeout;
    }
    if let Some(e) = s.strip_prefix("error ") {
        return Status::GuestError(e.to_string());
    }
    // No status port (it may not exist yet): the console has the guest's own words.
    if let Some(line) = console.lines().find(|l| l.contains("xtask: error: ")) {
        return Status::GuestError(line.split("xtask: error: ").nth(1).unwrap_or("").into());
    }
    if panic {
        Status::Panic
    } else if host_timeout {
        Status::HostTimeout
    } else {
        Status::Silent
    }
}

/// A log line without its `[ 12.345678]` timestamp.
fn strip_time(line: &str) -> &str {
    match line
        .trim_start()
        .strip_prefix('[')
        .and_then(|r| r.split_once(']'))
    {
        Some((_, rest)) => rest.trim_start(),
        None => line,
    }
}

/// The splats in `log` not already in `seen`, each with ~40 lines of context.
fn find_splats(log: &str, seen: &mut Vec<String>) -> Vec<String> {
    let lines: Vec<&str> = log.lines().collect();
    let mut found = Vec::new();
    let mut covered_to = 0;
    for (i, line) in lines.iter().enumerate() {
        let msg = strip_time(line);
        if !SPLATS.iter().any(|p| msg.contains(p)) || seen.iter().any(|s| s == msg) {
            continue;
        }
        seen.push(msg.to_string());
        if i < covered_to {
            continue; // inside the context already shown for the previous splat
        }
        let (from, to) = (i.saturating_sub(10), (i + 30).min(lines.len()));
        covered_to = to;
        if found.len() < 5 {
            found.push(lines[from..to].join("\n"));
        }
    }
    found
}

fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Boots a guest under KVM with a short timeout: true if it ran a command.
pub fn kvm_works(opts: &Options) -> bool {
    let probe = Options {
        accel: Accel::Kvm,
        module: None,
        timeout: Duration::from_secs(10),
        stream: false,
        keep: false,
        ..opts.clone()
    };
    let ok = Path::new("/dev/kvm").exists()
        && run(&probe, Path::new("/"), &["true".to_string()]).is_ok_and(|o| o.passed());
    if !ok {
        eprintln!("xtask: KVM does not work here (probe boot failed): using TCG");
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        let s = command_script(Path::new("/w"), &["a b".into(), "c".into()], &[]);
        assert!(s.ends_with("cd '/w' || exit 125\nexec 'a b' 'c'\n"));
    }

    #[test]
    fn splats() {
        let log = "[    0.1] Linux version 6.1\n[    2.0] WARNING: CPU: 0 PID: 1 at x.c:1 f\n[    2.1] Call Trace:\n";
        let mut seen = Vec::new();
        let found = find_splats(log, &mut seen);
        assert_eq!(found.len(), 1);
        assert!(find_splats(log, &mut seen).is_empty(), "deduplicated");
        assert!(find_splats("[ 1.0] clean boot\n", &mut Vec::new()).is_empty());
    }
}
