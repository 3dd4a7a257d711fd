//! P1, P3: what an unprivileged process can and cannot reach.
//!
//! Each test forks a child that drops to uid/gid 65534 (supplementary
//! groups dropped, made dumpable again so that only the uid or Yama can be
//! the reason of a refusal) and reports what it saw; the parent judges.
//!
//! - P1/O1: no OPEN of a root process or of another user's process (EPERM);
//!   with Yama's ptrace_scope=1, no OPEN of a non-descendant of the same
//!   uid, but OPEN of one's own child.
//! - P1: a mem fd received from a privileged process reaches exactly the
//!   granted windows with the granted protections.
//! - P3: no argument reaches kernel memory: MAP of kernel or overflowing
//!   addresses is EINVAL, offsets near i64::MAX and negative offsets give
//!   EINVAL or EIO and never data, kernel addresses as buffers give EFAULT.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;

use pidfd_mem::{pass, pidfd_mem, pidfd_open, remote_proc_map, MemOffset, MirrorError, Prot};
use rustix::io::Errno;
use rustix::mm::{MapFlags, ProtFlags};

use crate::harness::{Ctx, Failure, TestResult};
use crate::util::*;
use crate::{ensure, note, skip};

/// The unprivileged uid/gid of the tests.
const NOBODY: u32 = 65534;
/// Another user's uid/gid.
const OTHER: u32 = 65533;

/// Drops to `id` (uid and gid, no supplementary groups) and makes the
/// process dumpable again (a uid change clears it, which alone would make
/// ptrace-attach checks fail).
fn drop_to(id: u32) -> Result<(), String> {
    // SAFETY: plain credential and prctl calls in a single-threaded child.
    unsafe {
        if libc::setgroups(0, core::ptr::null()) != 0 {
            return Err(format!("setgroups: {}", std::io::Error::last_os_error()));
        }
        if libc::setresgid(id, id, id) != 0 {
            return Err(format!("setresgid: {}", std::io::Error::last_os_error()));
        }
        if libc::setresuid(id, id, id) != 0 {
            return Err(format!("setresuid: {}", std::io::Error::last_os_error()));
        }
        if libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) != 0 {
            return Err(format!(
                "PR_SET_DUMPABLE: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// A process that drops to `id` and then idles until killed (on drop).
struct Idler {
    pid: i32,
    pidfd: OwnedFd,
}

impl Idler {
    /// Forks it; returns once it runs as `id` (`None`: stays as it is).
    fn spawn(id: Option<u32>) -> Result<Self, Failure> {
        let (r, w) = rustix::pipe::pipe().ctx("pipe")?;
        // SAFETY: tests are single-threaded children of the harness.
        let pid = unsafe { libc::fork() };
        ensure!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            drop(r);
            let _ = rustix::process::set_parent_process_death_signal(Some(
                rustix::process::Signal::KILL,
            ));
            let ok = id.map_or(Ok(()), drop_to).is_ok();
            let _ = rustix::io::write(&w, &[u8::from(ok)]);
            loop {
                // SAFETY: pause has no arguments.
                unsafe { libc::pause() };
            }
        }
        drop(w);
        let mut b = [0u8; 1];
        let n = rustix::io::read(&r, &mut b).ctx("read idler status")?;
        ensure!(n == 1 && b[0] == 1, "the idler could not drop to {id:?}");
        let pidfd = pidfd_open(pid as u32).ctx("pidfd_open(idler)")?;
        Ok(Self { pid, pidfd })
    }
}

impl Drop for Idler {
    fn drop(&mut self) {
        // SAFETY: killing and reaping our own child.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, core::ptr::null_mut(), 0);
        }
    }
}

fn need_root() -> TestResult {
    if !rustix::process::geteuid().is_root() {
        skip!("needs root to drop to uid {NOBODY}");
    }
    Ok(())
}

/// Runs `f` as uid 65534 in a forked child; `f` returns a bitmask of
/// failed checks (and notes each).
fn as_nobody(what: &str, f: impl FnOnce() -> i32) -> TestResult {
    let code = in_child(|| {
        if let Err(e) = drop_to(NOBODY) {
            note!("{e}");
            return 100;
        }
        f()
    })?;
    ensure!(
        code == 0,
        "{what}: the unprivileged child reported failures (code {code}, see notes above)"
    );
    Ok(())
}

/// `pidfd_mem` and REMOTE_PROC_MAP of `pidfd` must both be EPERM.
fn expect_eperm(pidfd: &OwnedFd, whose: &str) -> i32 {
    let mut bad = 0;
    match pidfd_mem(pidfd, 0) {
        Err(e) if e.errno() == Some(Errno::PERM) => {}
        r => {
            note!(
                "P1/O1: OPEN of {whose} as uid {NOBODY}: expected EPERM, seen {:?}",
                r.map(drop)
            );
            bad |= 1;
        }
    }
    match remote_proc_map(pidfd) {
        Err(e) if e.errno() == Some(Errno::PERM) => {}
        r => {
            note!(
                "P1/R1: REMOTE_PROC_MAP of {whose} as uid {NOBODY}: expected EPERM, seen {:?}",
                r.map(drop)
            );
            bad |= 2;
        }
    }
    bad
}

/// P1/O1: an unprivileged process cannot open a root process, nor a
/// (dumpable) process of another user; it can open its own child.
pub fn p1_unpriv_cannot_open_other_users() -> TestResult {
    need_root()?;
    let root_t = Idler::spawn(None)?;
    let other = Idler::spawn(Some(OTHER))?;
    as_nobody("P1", || {
        let mut bad = expect_eperm(&root_t.pidfd, "a root process");
        bad |= expect_eperm(&other.pidfd, &format!("a process of uid {OTHER}")) << 2;
        // The control: its own child (same uid, dumpable, a descendant).
        match Idler::spawn(None) {
            Ok(child) => match pidfd_mem(&child.pidfd, 0) {
                Ok(_) => {}
                Err(e) => {
                    note!("O1: OPEN of its own child as uid {NOBODY}: {e}");
                    bad |= 16;
                }
            },
            Err(e) => {
                note!("spawning a child: {e:?}");
                bad |= 32;
            }
        }
        bad
    })
}

const YAMA: &str = "/proc/sys/kernel/yama/ptrace_scope";

/// Puts Yama's ptrace_scope back on drop.
struct ScopeGuard(String);

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        let _ = std::fs::write(YAMA, &self.0);
    }
}

fn set_scope(v: &str) -> Result<(), Failure> {
    std::fs::write(YAMA, v).ctx(format!("write {v} to {YAMA}"))
}

/// P1/O1 with Yama: under ptrace_scope=1 an unprivileged process cannot
/// open a non-descendant of its own uid (EPERM) but can open its own child;
/// under ptrace_scope=0 it can open that same non-descendant (so the EPERM
/// is Yama's). The old value is restored.
pub fn p1_yama_scope1_descendants_only() -> TestResult {
    need_root()?;
    let Ok(old) = std::fs::read_to_string(YAMA) else {
        skip!("no Yama ({YAMA} missing)");
    };
    let old = old.trim().to_string();
    if old == "3" {
        skip!("Yama ptrace_scope is 3 (cannot be lowered)");
    }
    let _restore = ScopeGuard(old.clone());
    // A sibling: same uid, dumpable, not a descendant of the checker.
    let sibling = Idler::spawn(Some(NOBODY))?;
    set_scope("0")?;
    as_nobody("Yama scope 0", || match pidfd_mem(&sibling.pidfd, 0) {
        Ok(_) => 0,
        Err(e) => {
            note!("P1 control: with ptrace_scope=0, OPEN of a same-uid non-descendant: {e} (expected success)");
            1
        }
    })?;
    set_scope("1")?;
    as_nobody("Yama scope 1", || {
        let mut bad = 0;
        match pidfd_mem(&sibling.pidfd, 0) {
            Err(e) if e.errno() == Some(Errno::PERM) => {}
            r => {
                note!("P1/Yama: with ptrace_scope=1, OPEN of a same-uid non-descendant: expected EPERM, seen {:?}", r.map(drop));
                bad |= 1;
            }
        }
        match remote_proc_map(&sibling.pidfd) {
            Err(e) if e.errno() == Some(Errno::PERM) => {}
            r => {
                note!("P1/Yama: with ptrace_scope=1, REMOTE_PROC_MAP of a non-descendant: expected EPERM, seen {:?}", r.map(drop));
                bad |= 2;
            }
        }
        match Idler::spawn(None).map(|c| pidfd_mem(&c.pidfd, 0).map(drop)) {
            Ok(Ok(())) => {}
            r => {
                note!("P1/Yama: with ptrace_scope=1, OPEN of its own child: expected success, seen {r:?}");
                bad |= 4;
            }
        }
        bad
    })?;
    note!("yama: ptrace_scope restored to {old}");
    Ok(())
}

/// P1: a mem fd received from a privileged process reaches exactly the
/// granted windows with the granted protections: read-write window 0,
/// nothing at 1, read-only window 2.
pub fn p1_received_mem_grants_only() -> TestResult {
    need_root()?;
    let p = page();
    let t = Target::spawn()?;
    let a = t.alloc(3 * p)?;
    for i in 0..3u64 {
        t.store64(a + i * pg(), 0x5ec0 + i)?;
    }
    let (ctl, mem) = t.open()?;
    raw_map(&ctl, a, 0, pg() as i64, RW).ctx("MAP window 0 rw")?;
    raw_map(&ctl, a + 2 * pg(), 2 * pg() as i64, pg() as i64, RO).ctx("MAP window 2 ro")?;
    drop(ctl);
    let (s1, s2) = std::os::unix::net::UnixStream::pair().ctx("socketpair")?;
    pass::send_access(&s1, &mem).ctx("send_access")?;
    drop(mem);
    let t_pidfd = rustix::io::dup(&t.pidfd).ctx("dup pidfd")?;
    as_nobody("P1", || {
        let mem = match pass::recv_access(&s2) {
            Ok(m) => m,
            Err(e) => {
                note!("recv_access: {e}");
                return 64;
            }
        };
        let mut bad = 0;
        let mut b = [0u8; 8];
        let pgu = p as u64;
        // Window 0: read and write.
        if !matches!(mem.read_at(&mut b, MemOffset(0)), Ok(8)) || u64::from_ne_bytes(b) != 0x5ec0 {
            note!("P1: pread of the read-write window: {b:x?}");
            bad |= 1;
        }
        if !matches!(mem.write_at(&0x1234u64.to_ne_bytes(), MemOffset(8)), Ok(8)) {
            note!("P1: pwrite into the read-write window failed");
            bad |= 1;
        }
        // Window 1: nothing.
        match mem.read_at(&mut b, MemOffset(pgu)) {
            Err(e) if e.errno() == Some(Errno::IO) => {}
            r => {
                note!("P1/A3: pread outside the grants: expected EIO, seen {r:?} {b:x?}");
                bad |= 2;
            }
        }
        // A read across window 0 and the gap stops at the gap.
        let mut two = vec![0u8; 2 * p];
        match mem.read_at(&mut two, MemOffset(0)) {
            Ok(n) if n == p => {}
            r => {
                note!("P1/A3: pread across the end of a grant: expected {p} bytes, seen {r:?}");
                bad |= 2;
            }
        }
        // Window 2: read-only.
        if !matches!(mem.read_at(&mut b, MemOffset(2 * pgu)), Ok(8))
            || u64::from_ne_bytes(b) != 0x5ec2
        {
            note!("P1: pread of the read-only window: {b:x?}");
            bad |= 4;
        }
        match mem.write_at(&b, MemOffset(2 * pgu)) {
            Err(e) if e.errno() == Some(Errno::ACCESS) => {}
            r => {
                note!("P1/A3: pwrite into the read-only window: expected EACCES, seen {r:?}");
                bad |= 4;
            }
        }
        for (off, len, what) in [
            (2 * pgu, p, "the read-only window"),
            (0, 3 * p, "all three windows"),
        ] {
            match mem.mmap(MemOffset(off), len, Prot::ReadWrite) {
                Err(e) if e.errno() == Some(Errno::ACCESS) => {}
                r => {
                    note!(
                        "P1/A1: PROT_WRITE mmap over {what}: expected EACCES, seen {:?}",
                        r.map(drop)
                    );
                    bad |= 8;
                }
            }
        }
        match mem.mmap(MemOffset(2 * pgu), p, Prot::Read) {
            Ok(m) => {
                // SAFETY: mprotect of our own mirror (A1: must be refused).
                let r = unsafe {
                    rustix::mm::mprotect(
                        m.as_ptr().cast(),
                        p,
                        rustix::mm::MprotectFlags::READ | rustix::mm::MprotectFlags::WRITE,
                    )
                };
                if r != Err(Errno::ACCESS) {
                    note!("P1/A1: mprotect(PROT_WRITE) of a mirror of the read-only window: expected EACCES, seen {r:?}");
                    bad |= 8;
                }
                if !matches!(m.load_u64(0, Ordering::SeqCst), Ok(0x5ec2)) {
                    note!("P1: mirror of the read-only window does not show T's value");
                    bad |= 8;
                }
            }
            Err(e) => {
                note!("P1: read-only mmap of the read-only window: {e}");
                bad |= 8;
            }
        }
        // A mirror over all three: the gap raises SIGBUS, not data.
        match mem.mmap(MemOffset(0), 3 * p, Prot::Read) {
            Ok(m) => {
                if !matches!(m.load_u64(8, Ordering::SeqCst), Ok(0x1234)) {
                    note!("P1: mirror of window 0 does not show the pwrite");
                    bad |= 16;
                }
                match m.load_u64(p, Ordering::SeqCst) {
                    Err(MirrorError::Fault { .. }) => {}
                    r => {
                        note!("P1/A2: mirror read in the gap: expected SIGBUS, seen {r:?}");
                        bad |= 16;
                    }
                }
            }
            Err(e) => {
                note!("P1: mmap of all three windows read-only: {e}");
                bad |= 16;
            }
        }
        // The mem fd is all it has: no OPEN of the (root) target.
        if pidfd_mem(&t_pidfd, 0).map(drop).map_err(|e| e.errno()) != Err(Some(Errno::PERM)) {
            note!("P1: the holder of mem could OPEN the root target itself");
            bad |= 32;
        }
        bad
    })?;
    ensure!(
        t.load64(a + 8)? == 0x1234,
        "P1: T does not see the unprivileged pwrite"
    );
    ensure!(
        t.load64(a + 2 * pg())? == 0x5ec2,
        "P1: the read-only window changed"
    );
    Ok(())
}

/// TASK_SIZE (`mm->task_size`) as the kernel uses it: 47 bits, or 56 with
/// 5-level paging (a hint above 47 bits is honoured only then).
fn task_size() -> u64 {
    // SAFETY: a fresh PROT_NONE mapping at a hint, unmapped at once.
    let q = unsafe {
        rustix::mm::mmap_anonymous(
            (1u64 << 52) as *mut _,
            page(),
            ProtFlags::empty(),
            MapFlags::PRIVATE,
        )
    };
    let high = match q {
        Ok(q) => {
            // SAFETY: our mapping from above.
            let _ = unsafe { rustix::mm::munmap(q, page()) };
            q as u64 >= 1 << 47
        }
        Err(_) => false,
    };
    if high {
        (1 << 56) - pg()
    } else {
        (1 << 47) - pg()
    }
}

/// P3 (M1): MAP of kernel addresses, of windows beyond TASK_SIZE and of
/// overflowing ranges is EINVAL, as an unprivileged process over itself.
pub fn p3_map_kernel_addresses_einval() -> TestResult {
    need_root()?;
    let ts = task_size();
    as_nobody("P3", || {
        let (ctl, _mem) = match pidfd_open(std::process::id()).map(|me| pidfd_mem(me, 0)) {
            Ok(Ok(x)) => x,
            r => {
                note!(
                    "pidfd_mem(self) as uid {NOBODY}: {:?}",
                    r.map(|x| x.map(drop))
                );
                return 64;
            }
        };
        let p = pg();
        let cases: [(u64, i64, &str); 9] = [
            (ts, p as i64, "TASK_SIZE"),
            (ts + p, p as i64, "above TASK_SIZE"),
            (ts - p, 2 * p as i64, "a window crossing TASK_SIZE"),
            (1 << 47, p as i64, "1 << 47"),
            (0xffff_8880_0000_0000, p as i64, "the direct map"),
            (0xffff_ffff_8100_0000, p as i64, "the kernel text"),
            (0xffff_ffff_ff60_0000, p as i64, "the vsyscall page"),
            (!(p - 1), 2 * p as i64, "an address + size that overflows"),
            (
                p,
                (i64::MAX as u64 & !(p - 1)) as i64,
                "a size up to i64::MAX",
            ),
        ];
        let mut bad = 0;
        for (i, (address, size, what)) in cases.iter().enumerate() {
            for flags in [RO, RW] {
                let r = raw_map(&ctl, *address, (i as i64) << 24, *size, flags);
                if r != Err(Errno::INVAL) {
                    note!("P3/M1: MAP of {what} ({address:#x} + {size:#x}, flags {flags}): expected EINVAL, seen {r:?}");
                    bad |= 1;
                }
            }
        }
        // The last page below TASK_SIZE is a valid window (M2: a window,
        // whatever T maps there).
        if let Err(e) = raw_map(&ctl, ts - p, 1 << 30, p as i64, RO) {
            note!(
                "M1: MAP of the last user page ({:#x}): {e:?}, expected success",
                ts - p
            );
            bad |= 2;
        }
        bad
    })
}

/// P3 (M1, A1, A3): windows at offsets near i64::MAX: a window ending at
/// the last page boundary is fine and reads T's bytes; one more page
/// overflows (EINVAL); pread past it gives EIO, pread whose end passes
/// i64::MAX or that starts below zero gives EINVAL; never data.
pub fn p3_offsets_near_i64_max() -> TestResult {
    need_root()?;
    as_nobody("P3", || {
        let p = page();
        let pgu = p as u64;
        let me = match pidfd_open(std::process::id()).map(|me| pidfd_mem(me, 0)) {
            Ok(Ok(x)) => x,
            r => {
                note!("pidfd_mem(self): {:?}", r.map(|x| x.map(drop)));
                return 64;
            }
        };
        let (ctl, mem) = me;
        let buf = match RawMap::anon_shared(p) {
            Ok(b) => b,
            Err(e) => {
                note!("mmap: {e}");
                return 64;
            }
        };
        buf.store(0, 0xfeed_f00d);
        let top = i64::MAX as u64 & !(pgu - 1); // 0x7fff_ffff_ffff_f000
        let mut bad = 0;
        let expect_einval = |r: Result<(), Errno>, what: &str| -> i32 {
            if r != Err(Errno::INVAL) {
                note!("P3/M1: {what}: expected EINVAL, seen {r:?}");
                return 1;
            }
            0
        };
        bad |= expect_einval(
            raw_map(&ctl, buf.ptr as u64, top as i64, p as i64, RO),
            "MAP at offset i64::MAX & !4095 (end overflows)",
        );
        bad |= expect_einval(
            raw_map(&ctl, buf.ptr as u64, i64::MAX, p as i64, RO),
            "MAP at offset i64::MAX",
        );
        bad |= expect_einval(
            raw_map(&ctl, buf.ptr as u64, i64::MIN, p as i64, RO),
            "MAP at offset i64::MIN",
        );
        bad |= expect_einval(
            raw_map(&ctl, buf.ptr as u64, -(p as i64), p as i64, RO),
            "MAP at offset -4096",
        );
        bad |= expect_einval(
            raw_unmap(&ctl, top as i64, p as i64),
            "UNMAP at offset i64::MAX & !4095",
        );
        bad |= expect_einval(
            raw_unmap(&ctl, -(p as i64), p as i64),
            "UNMAP at a negative offset",
        );
        let hi = top - pgu; // the last window that fits
        if let Err(e) = raw_map(&ctl, buf.ptr as u64, hi as i64, p as i64, RO) {
            note!("M1: MAP at offset {hi:#x} (ends at {top:#x}): {e:?}, expected success");
            return bad | 2;
        }
        let mut b = [0u8; 8];
        match mem.read_at(&mut b, MemOffset(hi)) {
            Ok(8) if u64::from_ne_bytes(b) == 0xfeed_f00d => {}
            r => {
                note!("P1: pread of the window at {hi:#x}: {r:?} {b:x?}, expected T's value");
                bad |= 4;
            }
        }
        // Past the window, up to i64::MAX: no grant.
        for off in [top, i64::MAX as u64 - 7] {
            match mem.read_at(&mut b, MemOffset(off)) {
                Err(e) if e.errno() == Some(Errno::IO) || e.errno() == Some(Errno::INVAL) => {}
                r => {
                    note!("P3/A3: pread at {off:#x}: expected EIO or EINVAL, seen {r:?} {b:x?}");
                    bad |= 4;
                }
            }
        }
        // A pread whose end passes i64::MAX, and negative offsets: EINVAL.
        let fd = mem.as_fd().as_raw_fd();
        for (off, n) in [
            (i64::MAX - 7, 16usize),
            (-1i64, 8),
            (-(p as i64), 8),
            (i64::MIN, 8),
        ] {
            let mut big = [0u8; 16];
            // SAFETY: pread into a local buffer of `n` <= 16 bytes.
            let r = unsafe { libc::pread(fd, big.as_mut_ptr().cast(), n, off) };
            let e = std::io::Error::last_os_error().raw_os_error();
            if r >= 0 || e != Some(libc::EINVAL) {
                note!("P3/A3: pread({n} at {off:#x}): returned {r} (errno {e:?}), expected EINVAL and no data");
                bad |= 8;
            }
            // SAFETY: pwrite from a local buffer of `n` <= 16 bytes.
            let r = unsafe { libc::pwrite(fd, big.as_ptr().cast(), n, off) };
            let e = std::io::Error::last_os_error().raw_os_error();
            if r >= 0 || e != Some(libc::EINVAL) {
                note!(
                    "P3/A3: pwrite({n} at {off:#x}): returned {r} (errno {e:?}), expected EINVAL"
                );
                bad |= 8;
            }
        }
        // lseek to a negative position is refused.
        // SAFETY: lseek has no memory arguments.
        let r = unsafe { libc::lseek(fd, -(p as i64), libc::SEEK_SET) };
        if r >= 0 {
            note!("P3: lseek to a negative offset returned {r}");
            bad |= 8;
        }
        // Mirrors: the top window maps; past it, or wrapping, refused.
        match mem.mmap(MemOffset(hi), p, Prot::Read) {
            Ok(m) => {
                if !matches!(m.load_u64(0, Ordering::SeqCst), Ok(0xfeed_f00d)) {
                    note!("P1: mirror of the window at {hi:#x} does not show T's value");
                    bad |= 16;
                }
            }
            Err(e) => {
                note!("A1: mmap of the window at {hi:#x}: {e}");
                bad |= 16;
            }
        }
        for (off, len) in [(top, 2 * p), (hi, 2 * p)] {
            // SAFETY: a new shared mapping at a kernel-chosen address; if it
            // is (wrongly) made, it is unmapped at once.
            let r = unsafe {
                rustix::mm::mmap(
                    core::ptr::null_mut(),
                    len,
                    ProtFlags::READ,
                    MapFlags::SHARED,
                    &mem,
                    off,
                )
            };
            match r {
                Err(Errno::INVAL) | Err(Errno::OVERFLOW) => {}
                Ok(q) => {
                    note!("P3/A1: mmap of {len:#x} bytes at offset {off:#x} (past i64::MAX) succeeded");
                    // SAFETY: the mapping just made.
                    let _ = unsafe { rustix::mm::munmap(q, len) };
                    bad |= 32;
                }
                Err(e) => {
                    note!("P3/A1: mmap of {len:#x} bytes at offset {off:#x}: {e:?}, expected EINVAL or EOVERFLOW");
                    bad |= 32;
                }
            }
        }
        bad
    })
}

/// P3 (R1, A3): through REMOTE_PROC_MAP of itself (offset = address over
/// the whole user address space), an unprivileged process reads no byte at
/// or above TASK_SIZE: kernel addresses as offsets are negative (EINVAL),
/// TASK_SIZE and above are outside the grant (EIO).
pub fn p3_pread_kernel_offsets_no_data() -> TestResult {
    need_root()?;
    let ts = task_size();
    as_nobody("P3", || {
        let mem = match pidfd_open(std::process::id()).map(remote_proc_map) {
            Ok(Ok(m)) => m,
            r => {
                note!("REMOTE_PROC_MAP(self): {:?}", r.map(|x| x.map(drop)));
                return 64;
            }
        };
        let fd = mem.as_fd().as_raw_fd();
        let mut bad = 0;
        let offsets: [(u64, &[i32]); 7] = [
            (ts, &[libc::EIO]),
            (ts - 8, &[libc::EIO]),
            (1 << 47, &[libc::EIO]),
            (0x7fff_ffff_ffff_f000, &[libc::EIO]),
            (0xffff_8880_0000_0000, &[libc::EINVAL]),
            (0xffff_ffff_8100_0000, &[libc::EINVAL]),
            (0xffff_ffff_ff60_0000, &[libc::EINVAL]),
        ];
        for (off, allowed) in offsets {
            let mut b = [0u8; 64];
            // SAFETY: pread into a local buffer of 64 bytes.
            let r = unsafe { libc::pread(fd, b.as_mut_ptr().cast(), b.len(), off as i64) };
            let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            if r >= 0 || !allowed.contains(&e) {
                note!("P3/R1: pread at {off:#x}: returned {r} (errno {e}), expected one of {allowed:?} and no data");
                bad |= 1;
            }
        }
        // The vsyscall page as a mirror offset: refused.
        // SAFETY: a new shared mapping at a kernel-chosen address; if it is
        // (wrongly) made, it is unmapped at once.
        let r = unsafe {
            rustix::mm::mmap(
                core::ptr::null_mut(),
                page(),
                ProtFlags::READ,
                MapFlags::SHARED,
                &mem,
                0xffff_ffff_ff60_0000,
            )
        };
        match r {
            Err(_) => {}
            Ok(q) => {
                note!("P3/R1: mmap of mem at the vsyscall page's offset succeeded");
                // SAFETY: the mapping just made.
                let _ = unsafe { rustix::mm::munmap(q, page()) };
                bad |= 2;
            }
        }
        bad
    })
}

/// P3: kernel addresses as user buffers and ioctl arguments are EFAULT:
/// pwrite from a kernel address writes nothing into T, pread into one
/// writes nothing, MAP/OPEN with a kernel argument pointer fail.
pub fn p3_kernel_buffers_efault() -> TestResult {
    need_root()?;
    as_nobody("P3", || {
        let p = page();
        let buf = match RawMap::anon_shared(p) {
            Ok(b) => b,
            Err(e) => {
                note!("mmap: {e}");
                return 64;
            }
        };
        buf.store(0, 0x600d);
        let (ctl, mem) = match pidfd_open(std::process::id()).map(|me| pidfd_mem(me, 0)) {
            Ok(Ok(x)) => x,
            r => {
                note!("pidfd_mem(self): {:?}", r.map(|x| x.map(drop)));
                return 64;
            }
        };
        if let Err(e) = raw_map(&ctl, buf.ptr as u64, 0, p as i64, RW) {
            note!("MAP: {e:?}");
            return 64;
        }
        let fd = mem.as_fd().as_raw_fd();
        let mut bad = 0;
        for k in [
            0xffff_8880_0000_0000usize,
            0xffff_ffff_8100_0000,
            0xffff_ffff_ff60_0000,
        ] {
            // SAFETY: the kernel must refuse to read from `k` (EFAULT).
            let r = unsafe { libc::pwrite(fd, k as *const _, 64, 0) };
            let e = std::io::Error::last_os_error().raw_os_error();
            if r >= 0 || e != Some(libc::EFAULT) {
                note!("P3: pwrite from kernel address {k:#x}: returned {r} (errno {e:?}), expected EFAULT");
                bad |= 1;
            }
            // SAFETY: the kernel must refuse to write to `k` (EFAULT).
            let r = unsafe { libc::pread(fd, k as *mut _, 64, 0) };
            let e = std::io::Error::last_os_error().raw_os_error();
            if r >= 0 || e != Some(libc::EFAULT) {
                note!("P3: pread into kernel address {k:#x}: returned {r} (errno {e:?}), expected EFAULT");
                bad |= 2;
            }
            // SAFETY: MAP reads its argument from `k`: the kernel refuses.
            let r = unsafe {
                pidfd_mem::sys::raw_ioctl(&ctl, pidfd_mem::sys::PIDFD_MEM_MAP, k as *mut _)
            };
            if r != Err(Errno::FAULT) {
                note!("P3: MAP with its argument at kernel address {k:#x}: {r:?}, expected EFAULT");
                bad |= 4;
            }
        }
        if buf.load(0) != 0x600d {
            note!(
                "P3: T's page changed to {:#x} after pwrites from kernel addresses",
                buf.load(0)
            );
            bad |= 8;
        }
        bad
    })
}
