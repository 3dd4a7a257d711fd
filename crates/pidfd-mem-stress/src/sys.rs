//! Thin helpers over system calls and `/proc`, `/sys` files.

use std::io;
use std::time::Duration;

use rustix::io::Errno;

/// The result of [`fork`].
pub enum Forked {
    /// In the parent: the child's pid.
    Parent(i32),
    /// In the child.
    Child,
}

/// `fork()`.
///
/// # Safety
///
/// In a multi-threaded process the child may only call async-signal-safe
/// functions (no allocation, no locks another thread may have held) until
/// it execs or `_exit`s.
pub unsafe fn fork() -> io::Result<Forked> {
    // SAFETY: forwarded to the caller.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid)),
    }
}

/// `_exit(code)`: leaves at once, without destructors or atexit handlers
/// (the right way out of a forked child).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and is async-signal-safe.
    unsafe { libc::_exit(code) }
}

/// Gives SIGSEGV and SIGBUS their default action (`sigaction`, async-signal
/// safe): for a fork child that is meant to die of them. Rust std's handler
/// for these signals takes a spin lock that a thread of the parent may have
/// held at the fork (a thread that was just starting or ending); a child
/// that inherits it held spins ten million times, prints "deadlock in
/// SIGSEGV handler", and only then dies.
pub fn default_fault_signals() {
    for sig in [libc::SIGSEGV, libc::SIGBUS] {
        // SAFETY: installs SIG_DFL, with an empty mask, for a valid signal.
        unsafe {
            let mut sa: libc::sigaction = core::mem::zeroed();
            sa.sa_sigaction = libc::SIG_DFL;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, core::ptr::null_mut());
        }
    }
}

/// Asks for SIGKILL when the parent dies.
pub fn die_with_parent() {
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
}

/// Asks for SIGKILL when the parent dies, and exits at once if the parent
/// (`ppid`) died before we asked.
pub fn die_with_parent_of(ppid: i32) {
    die_with_parent();
    // SAFETY: getppid has no arguments.
    if unsafe { libc::getppid() } != ppid {
        exit_now(0);
    }
}

/// Kills (SIGKILL) every child of ours (found in /proc) that is still
/// there: orphans that came to us as the subreaper.
pub fn kill_children() {
    let me = std::process::id().to_string();
    let Ok(d) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in d.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let ppid = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit(')')
                    .next()
                    .and_then(|r| r.split_whitespace().nth(1).map(str::to_string))
            });
        if ppid.as_deref() == Some(me.as_str()) {
            kill(pid, libc::SIGKILL);
        }
    }
}

/// Sleeps `us` microseconds (`nanosleep`, no allocation).
pub fn sleep_us(us: u64) {
    let ts = libc::timespec {
        tv_sec: (us / 1_000_000) as libc::time_t,
        tv_nsec: ((us % 1_000_000) * 1000) as libc::c_long,
    };
    // SAFETY: nanosleep with a valid request and no remainder pointer.
    unsafe { libc::nanosleep(&ts, core::ptr::null_mut()) };
}

/// `sched_yield()`.
pub fn yield_now() {
    // SAFETY: no arguments.
    unsafe { libc::sched_yield() };
}

/// Monotonic time in microseconds (no allocation).
pub fn now_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime with a valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

/// Writes `s` to the file at `path` (for /proc and /sys knobs).
pub fn write_file(path: &str, s: &str) -> io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(s.as_bytes())
}

/// The contents of `path`, trimmed; `None` if unreadable.
pub fn read_file(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// A number from `path` (first field), if readable.
pub fn read_u64(path: &str) -> Option<u64> {
    read_file(path)?.split_whitespace().next()?.parse().ok()
}

/// A field of `/proc/vmstat` (e.g. `pswpout`).
pub fn vmstat(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/vmstat").ok()?;
    s.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next()? == field).then(|| it.next()?.parse().ok())?
    })
}

/// The minor page faults of this process so far (`/proc/self/stat`, field
/// 10).
pub fn self_minflt() -> u64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    // The command name (field 2) is in parentheses and may hold spaces.
    let Some(rest) = s.rfind(')').map(|i| &s[i + 1..]) else {
        return 0;
    };
    // rest starts at field 3 (state); minflt is field 10.
    rest.split_whitespace()
        .nth(7)
        .and_then(|x| x.parse().ok())
        .unwrap_or(0)
}

/// `delete_module(name, O_NONBLOCK)`: the errno it fails with, or `None`
/// if the module was unloaded.
pub fn try_unload_module(name: &core::ffi::CStr) -> Option<Errno> {
    // SAFETY: delete_module with a NUL-terminated name and O_NONBLOCK.
    let r = unsafe { libc::syscall(libc::SYS_delete_module, name.as_ptr(), libc::O_NONBLOCK) };
    if r == 0 {
        None
    } else {
        Some(Errno::from_raw_os_error(
            io::Error::last_os_error().raw_os_error().unwrap_or(0),
        ))
    }
}

/// Waits for any child without reaping it (`waitid(P_ALL, WEXITED |
/// WNOWAIT)`), with `WNOHANG` when `block` is false. Returns the child's
/// pid and its wait status (as `waitpid` encodes it).
pub fn peek_child(block: bool) -> Option<(i32, i32)> {
    // SAFETY: all-zero is a valid siginfo_t to be filled in.
    let mut info: libc::siginfo_t = unsafe { core::mem::zeroed() };
    let flags = libc::WEXITED | libc::WNOWAIT | if block { 0 } else { libc::WNOHANG };
    // SAFETY: waitid with a valid out pointer.
    let r = unsafe { libc::waitid(libc::P_ALL, 0, &mut info, flags) };
    if r != 0 {
        return None;
    }
    // SAFETY: waitid filled in a SIGCHLD siginfo (or left pid 0).
    let pid = unsafe { info.si_pid() };
    if pid == 0 {
        return None;
    }
    // SAFETY: as above.
    let status = unsafe { info.si_status() };
    let code = info.si_code;
    let st = if code == libc::CLD_EXITED {
        (status & 0xff) << 8
    } else {
        status & 0x7f
    };
    Some((pid, st))
}

/// Reaps `pid` (blocking); returns its wait status.
pub fn reap(pid: i32) -> i32 {
    let mut st = 0;
    // SAFETY: waitpid on our child with a valid status pointer.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    st
}

/// Reaps every child until there is none left (ECHILD), for up to `t`.
/// Returns `None` when all are gone, else the pids still there (found in
/// /proc as our children).
pub fn reap_all(t: Duration) -> Option<Vec<i32>> {
    let end = std::time::Instant::now() + t;
    loop {
        let mut st = 0;
        // SAFETY: waitpid with WNOHANG and a valid status pointer.
        let r = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
        if r < 0 {
            return None; // ECHILD: nobody left
        }
        if r == 0 {
            if std::time::Instant::now() >= end {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let me = std::process::id().to_string();
    let kids = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
                .filter(|pid| {
                    std::fs::read_to_string(format!("/proc/{pid}/stat"))
                        .ok()
                        .and_then(|s| s.rsplit(')').next().map(str::to_string))
                        .and_then(|r| r.split_whitespace().nth(1).map(|pp| pp == me))
                        .unwrap_or(false)
                })
                .collect()
        })
        .unwrap_or_default();
    Some(kids)
}

/// Reaps any exited child without blocking; returns (pid, status).
pub fn reap_any() -> Option<(i32, i32)> {
    let mut st = 0;
    // SAFETY: waitpid with WNOHANG and a valid status pointer.
    let r = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
    (r > 0).then_some((r, st))
}

/// How a wait status reads: `exit N` or `signal NAME`.
pub fn describe_status(st: i32) -> String {
    if libc::WIFEXITED(st) {
        format!("exit {}", libc::WEXITSTATUS(st))
    } else if libc::WIFSIGNALED(st) {
        format!("signal {}", signal_name(libc::WTERMSIG(st)))
    } else {
        format!("status {st:#x}")
    }
}

/// The name of a signal number.
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGBUS => "SIGBUS",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGKILL => "SIGKILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGILL => "SIGILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGFPE => "SIGFPE",
        libc::SIGSYS => "SIGSYS",
        libc::SIGTRAP => "SIGTRAP",
        _ => "other",
    }
}

/// `kill(pid, sig)`.
pub fn kill(pid: i32, sig: i32) {
    // SAFETY: kill has no memory arguments.
    unsafe { libc::kill(pid, sig) };
}

/// Sleeps for `d`.
pub fn sleep(d: Duration) {
    std::thread::sleep(d);
}

/// The kernel's release (`uname -r`).
pub fn kernel_release() -> String {
    rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned()
}

/// Whether the process runs as root (euid 0).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// `mmap(NULL, len, prot, MAP_PRIVATE | MAP_ANONYMOUS | flags, -1, 0)`: a
/// fresh private anonymous region at an address the kernel chooses.
pub fn mmap_anon(len: usize, prot: i32, flags: i32) -> Result<usize, Errno> {
    // SAFETY: a new mapping at an address the kernel chooses aliases nothing.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            len,
            prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | flags,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        Err(Errno::from_io_error(&io::Error::last_os_error()).unwrap_or(Errno::NOMEM))
    } else {
        Ok(p as usize)
    }
}

/// Flushes this process's whole TLB on every CPU that runs it: `mprotect`s
/// a populated 64-page region of its own read-only and back (more pages
/// than x86 flushes one by one, so the kernel flushes the whole mm). Used to
/// tell a stale translation from a stale page table entry.
pub fn flush_own_tlb() -> Result<(), Errno> {
    const PAGES: usize = 64;
    static REGION: std::sync::OnceLock<Result<usize, Errno>> = std::sync::OnceLock::new();
    let len = PAGES * crate::page();
    let addr = (*REGION.get_or_init(|| {
        let a = mmap_anon(len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_POPULATE)?;
        Ok(a)
    }))?;
    for prot in [libc::PROT_READ, libc::PROT_READ | libc::PROT_WRITE] {
        // SAFETY: our own private region, never handed out.
        if unsafe { libc::mprotect(addr as *mut libc::c_void, len, prot) } != 0 {
            return Err(Errno::from_io_error(&io::Error::last_os_error()).unwrap_or(Errno::INVAL));
        }
    }
    Ok(())
}
