//! One fuzzing episode, in a process of its own (forked by the supervisor):
//! sets up arenas and targets, then makes a seeded sequence of random calls
//! against the module's three kinds of fds and the mirrors, checks the
//! answers that the contract pins down (oracles), and exits; the kernel
//! tears down whatever is left.
//!
//! # Never corrupt ourselves
//!
//! The worker is itself a target (T == caller is allowed), and the forked
//! targets must not crash either (a user-space general protection fault is
//! logged by the kernel in words the bench takes for a splat). Writes
//! through the module can only land where a read-write grant points, so:
//! read-write grants are only ever made over the arenas (memory used for
//! nothing else, at the same addresses in the worker and its targets);
//! REMOTE_PROC_MAP fds (read-write over everything) and any fd over pid 1
//! are only read through. Buffers that the kernel writes into are the sandbox (16 pages
//! followed by a large PROT_NONE guard) or mirrors that are safe to write.
//! Ioctls of random numbers get pointers into the sandbox or pointers that
//! cannot be written. Mirrors are touched with the library's guarded
//! copies, only where they are mapped readable (tracked exactly), and
//! unguarded only in forked "chaos" children, whose death is expected.
//! Racing threads only use fd numbers 900 and up, which hold duplicates of
//! fds over forked targets only, so a number reused under them is harmless.

use core::mem::ManuallyDrop;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use pidfd_mem::sys as psys;
use pidfd_mem::{MemOffset, Mirror, MirrorError, Prot};
use pidfd_mem_stress::rng::{mix, Rng};
use pidfd_mem_stress::sys::{self as ssys, exit_now, Forked};
use pidfd_mem_stress::{failure, page};
use rustix::io::Errno;
use vm_memory::ByteValued;

use crate::gen;
use crate::state::{FShared, Op};

/// First fd number of the race slots.
const RACE_FD: RawFd = 900;
/// Race slots.
const RACE_SLOTS: usize = 4;

fn errno() -> Errno {
    Errno::from_raw_os_error(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
}

fn ret(r: i64) -> Result<i64, Errno> {
    if r < 0 {
        Err(errno())
    } else {
        Ok(r)
    }
}

fn en(e: Errno) -> pidfd_mem::ErrnoName {
    pidfd_mem::ErrnoName(e)
}

fn unit<T>(r: Result<T, Errno>) -> Result<(), Errno> {
    r.map(drop)
}

/// Who a context's target is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    /// The worker itself.
    Me,
    /// Forked target `i`.
    Child(usize),
    /// pid 1: only ever read.
    Init,
}

#[derive(Clone, Copy, Debug)]
struct G {
    off: u64,
    addr: u64,
    size: u64,
    rw: bool,
}

struct Ctx {
    ctl: Option<OwnedFd>,
    mem: Option<OwnedFd>,
    who: Who,
    /// REMOTE_PROC_MAP: the whole address space read-write.
    rpm: bool,
    locked: bool,
    /// The grants, as far as we know (MAPs with arguments we made).
    grants: Vec<G>,
    /// The model is exactly the kernel's grants (no chaos child or random
    /// UNMAP may have removed some, no one else added any).
    exact: bool,
    /// The model holds every grant the kernel has (maybe more): no one
    /// but us made grants (racing threads, MAP of random contents).
    sup: bool,
    /// T may exec (an Execer target): a context opened after the exec is
    /// over the new image, where the arena addresses mean something else.
    no_write: bool,
}

impl Ctx {
    /// Whether writing through this context cannot corrupt the worker or
    /// pid 1 (see the module docs).
    fn write_ok(&self) -> bool {
        if knob("FUZZ_NO_WRITES") || self.no_write {
            return false;
        }
        match self.who {
            Who::Child(_) | Who::Me => !self.rpm,
            Who::Init => false,
        }
    }

    fn grant_at(&self, off: u64) -> Option<G> {
        if self.rpm {
            return None; // not modelled
        }
        self.grants
            .iter()
            .copied()
            .find(|g| g.off <= off && off - g.off < g.size)
    }

    /// Bytes from `off` that model grants cover without a gap.
    fn covered(&self, off: u64) -> u64 {
        let mut at = off;
        while let Some(g) = self.grant_at(at) {
            at = g.off + g.size;
        }
        at - off
    }

    fn remove(&mut self, off: u64, size: u64) {
        let end = off.saturating_add(size);
        let mut out = Vec::new();
        for g in self.grants.drain(..) {
            let gend = g.off + g.size;
            if gend <= off || g.off >= end {
                out.push(g);
                continue;
            }
            if g.off < off {
                out.push(G {
                    size: off - g.off,
                    ..g
                });
            }
            if gend > end {
                out.push(G {
                    off: end,
                    addr: g.addr + (end - g.off),
                    size: gend - end,
                    rw: g.rw,
                });
            }
        }
        self.grants = out;
    }
}

/// A mapping of a mem fd made by the worker (exact bookkeeping: touches
/// rely on it).
#[derive(Clone, Copy, Debug)]
struct Mir {
    ptr: usize,
    len: usize,
    ci: usize,
    off: u64,
    /// Current protection if known for the whole mapping, else -1.
    prot: i32,
    /// Mapped while a read-only grant lay in its window (as far as the
    /// model knows exactly): A1 forbids making it writable.
    ro_locked: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TKind {
    Idle,
    Churn,
    Exiter,
    Execer,
}

struct Tgt {
    pid: i32,
    pidfd: Option<OwnedFd>,
    kind: TKind,
    killed: bool,
}

/// The arenas: the only memory of the worker that read-write grants over
/// the worker may cover. Forked targets inherit them at the same addresses.
struct Arena {
    /// (start, pages, name).
    parts: Vec<(usize, usize, &'static str)>,
    /// Backs the shared part.
    _memfd: OwnedFd,
}

/// The sandbox: 16 read-write pages (kernel writes land here) followed by a
/// PROT_NONE guard, so that any overlong copy stops with EFAULT.
struct Sandbox {
    base: usize,
    guard: usize,
}

const SANDBOX_PAGES: usize = 16;
const GUARD_PAGES: usize = 4096;

/// Runs one episode; returns the exit code (0, or 1 after an oracle failure).
pub fn run(sh: &FShared, eseed: u64, ops: u64, verbose: bool) -> i32 {
    let mut w = match Worker::new(sh, eseed, verbose) {
        Ok(w) => w,
        Err(e) => {
            failure!(sh.fails, "episode {eseed:#x}: setup: {e}");
            return 1;
        }
    };
    let before = sh.fails.count();
    for _ in 0..ops {
        w.step += 1;
        w.one(verbose);
        sh.ops.fetch_add(1, SeqCst);
        if sh.corrupted() {
            w.fail(format_args!(
                "this call overwrote the fuzzer's own shared state"
            ));
            break;
        }
        if sh.fails.count() > before {
            break;
        }
    }
    if w.rng.chance(300) {
        w.teardown();
    }
    i32::from(sh.fails.count() > before)
}

struct Worker<'a> {
    sh: &'a FShared,
    rng: Rng,
    eseed: u64,
    step: u64,
    ts: u64,
    devs: Vec<OwnedFd>,
    tg: Vec<Tgt>,
    ctx: Vec<Ctx>,
    mir: Vec<Mir>,
    arena: Arena,
    sb: Sandbox,
    misc: Vec<OwnedFd>,
    /// Duplicates of mem fds (extra references; never written to).
    dups: Vec<OwnedFd>,
    /// Where splice/sendfile/copy_file_range write: a memfd of our own.
    sink: OwnedFd,
    pipe: (OwnedFd, OwnedFd),
    ro_page: usize,
    proc_mem: Option<OwnedFd>,
    now: String,
    verbose: bool,
}

fn mmap_anon(len: usize, prot: i32) -> Result<usize, String> {
    ssys::mmap_anon(len, prot, libc::MAP_NORESERVE).map_err(|e| format!("mmap: {e}"))
}

impl<'a> Worker<'a> {
    fn new(sh: &'a FShared, eseed: u64, verbose: bool) -> Result<Self, String> {
        let p = page();
        let mut rng = Rng::new(eseed);
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        let memfd = rustix::fs::memfd_create("fuzz-arena", rustix::fs::MemfdFlags::CLOEXEC)
            .map_err(|e| format!("memfd: {e}"))?;
        rustix::fs::ftruncate(&memfd, (16 * p) as u64).map_err(|e| format!("ftruncate: {e}"))?;
        let mut parts = Vec::new();
        let a = mmap_anon(64 * p, rw)?;
        parts.push((a, 64, "anon"));
        // SAFETY: a fresh shared mapping of our memfd.
        let b = unsafe {
            libc::mmap(
                ptr::null_mut(),
                16 * p,
                rw,
                libc::MAP_SHARED,
                memfd.as_raw_fd(),
                0,
            )
        };
        if b == libc::MAP_FAILED {
            return Err("mmap memfd".into());
        }
        parts.push((b as usize, 16, "memfd"));
        let c = mmap_anon(8 * p, rw)?;
        // SAFETY: our fresh arena pages: filled, then made read-only.
        unsafe {
            ptr::write_bytes(c as *mut u8, 0x5a, 8 * p);
            libc::mprotect(c as *mut _, 8 * p, libc::PROT_READ);
        }
        parts.push((c, 8, "read-only"));
        parts.push((mmap_anon(8 * p, libc::PROT_NONE)?, 8, "prot-none"));
        let huge = 2 << 20;
        let big = mmap_anon(2 * huge, rw)?;
        let e = (big + huge - 1) & !(huge - 1);
        // SAFETY: our arena; MADV_HUGEPAGE and touching make a THP.
        unsafe {
            libc::madvise(e as *mut _, huge, libc::MADV_HUGEPAGE);
            ptr::write_bytes(e as *mut u8, 0x11, huge);
        }
        parts.push((e, huge / p, "thp"));
        let hole = mmap_anon(16 * p, libc::PROT_NONE)?;
        // SAFETY: unmapping what we just mapped: an address range known to
        // be free (until something else is mapped there).
        unsafe { libc::munmap(hole as *mut _, 16 * p) };
        parts.push((hole, 16, "hole"));
        for &(s, n, name) in &parts {
            if name == "anon" {
                // SAFETY: our arena, read-write.
                unsafe { ptr::write_bytes(s as *mut u8, 0x22, n * p) };
            }
        }
        let sbase = mmap_anon((SANDBOX_PAGES + GUARD_PAGES) * p, libc::PROT_NONE)?;
        // SAFETY: our reservation: its first pages become read-write.
        unsafe { libc::mprotect(sbase as *mut _, SANDBOX_PAGES * p, rw) };
        let ro_page = mmap_anon(p, libc::PROT_READ)?;
        let pipe = rustix::pipe::pipe_with(
            rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK,
        )
        .map_err(|e| format!("pipe: {e}"))?;
        let mut misc = Vec::new();
        if let Ok(fd) = rustix::fs::open(
            "/dev/null",
            rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        ) {
            misc.push(fd);
        }
        if let Ok(fd) = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        ) {
            misc.push(fd);
        }
        if let Ok(fd) = rustix::fs::memfd_create("fuzz-misc", rustix::fs::MemfdFlags::CLOEXEC) {
            let _ = rustix::fs::ftruncate(&fd, (64 * p) as u64);
            misc.push(fd);
        }
        let sink = rustix::fs::memfd_create("fuzz-sink", rustix::fs::MemfdFlags::CLOEXEC)
            .map_err(|e| format!("memfd: {e}"))?;
        let proc_mem = rustix::fs::open(
            "/proc/self/mem",
            rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .ok();
        let mut w = Worker {
            sh,
            rng: Rng::new(rng.next_u64()),
            eseed,
            step: 0,
            ts: gen::task_size(),
            devs: Vec::new(),
            tg: Vec::new(),
            ctx: Vec::new(),
            mir: Vec::new(),
            arena: Arena {
                parts,
                _memfd: memfd,
            },
            sb: Sandbox {
                base: sbase,
                guard: sbase + SANDBOX_PAGES * p,
            },
            misc,
            dups: Vec::new(),
            sink,
            pipe,
            ro_page,
            proc_mem,
            now: String::new(),
            verbose,
        };
        for _ in 0..2 {
            let dev = rustix::fs::open(
                psys::PIDFD_MEM_DEVICE,
                rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(|e| format!("open device: {e}"))?;
            w.devs.push(dev);
        }
        for _ in 0..rng.range(1, 3) {
            w.spawn_target();
        }
        // Something to work with from the start: valid contexts over the
        // worker and over each target.
        w.open_valid(Who::Me);
        for i in 0..w.tg.len() {
            w.open_valid(Who::Child(i));
        }
        Ok(w)
    }

    fn p(&self) -> usize {
        page()
    }

    fn note(&mut self, s: String) {
        self.sh.set_now(&s);
        self.now = s;
    }

    fn fail(&self, what: std::fmt::Arguments<'_>) {
        failure!(
            self.sh.fails,
            "episode {:#x} step {} ({}): {}",
            self.eseed,
            self.step,
            self.now,
            what
        );
    }

    // ----- targets -----

    fn spawn_target(&mut self) {
        let kind = *self.rng.pick(&[
            TKind::Idle,
            TKind::Churn,
            TKind::Churn,
            TKind::Exiter,
            TKind::Execer,
        ]);
        let seed = self.rng.next_u64();
        let parts: Vec<(usize, usize)> = self.arena.parts.iter().map(|&(s, n, _)| (s, n)).collect();
        let me = std::process::id() as i32;
        // SAFETY: the worker is single-threaded here.
        match unsafe { ssys::fork() } {
            Ok(Forked::Child) => {
                ssys::die_with_parent_of(me);
                target_main(kind, seed, &parts)
            }
            Ok(Forked::Parent(pid)) => {
                if self.verbose {
                    println!("# target pid {pid} kind {kind:?}");
                }
                let pidfd = pidfd_mem::pidfd_open(pid as u32).ok();
                self.tg.push(Tgt {
                    pid,
                    pidfd,
                    kind,
                    killed: false,
                });
            }
            Err(_) => {}
        }
    }

    /// Whether `who` is a target that execs (see `Ctx::no_write`).
    fn execs(&self, who: Who) -> bool {
        matches!(who, Who::Child(i) if self.tg[i].kind == TKind::Execer)
    }

    fn pidfd_of(&self, who: Who) -> Option<OwnedFd> {
        match who {
            Who::Me => pidfd_mem::pidfd_open(std::process::id()).ok(),
            Who::Init => pidfd_mem::pidfd_open(1).ok(),
            Who::Child(_) if knob("FUZZ_NO_CHILD_CTX") => None,
            Who::Child(i) => self.tg[i]
                .pidfd
                .as_ref()
                .and_then(|f| rustix::io::dup(f).ok()),
        }
    }

    fn open_valid(&mut self, who: Who) {
        let Some(pidfd) = self.pidfd_of(who) else {
            return;
        };
        let mut arg = psys::PidfdMemOpen {
            pidfd: pidfd.as_raw_fd(),
            ..Default::default()
        };
        let dev = self.devs[0].as_raw_fd();
        // SAFETY: `dev` is our open device fd (borrowed for the call).
        let r = psys::pidfd_mem_open(unsafe { rustix::fd::BorrowedFd::borrow_raw(dev) }, &mut arg);
        self.sh
            .count(Op::Open, unit(r.as_ref().map(drop).map_err(|e| *e)));
        if let Ok((ctl, mem)) = r {
            self.ctx.push(Ctx {
                ctl: Some(ctl),
                mem: Some(mem),
                who,
                rpm: false,
                locked: false,
                grants: Vec::new(),
                exact: true,
                sup: true,
                no_write: self.execs(who),
            });
        }
    }

    // ----- one operation -----

    fn one(&mut self, verbose: bool) {
        let w = [
            6,  // 0 open
            2,  // 1 rpm
            14, // 2 map
            6,  // 3 unmap
            2,  // 4 lock
            4,  // 5 ioctl other
            10, // 6 mmap
            3,  // 7 munmap
            3,  // 8 mremap
            3,  // 9 mprotect
            4,  // 10 madvise
            1,  // 11 msync
            1,  // 12 mlock
            12, // 13 touch
            8,  // 14 pread
            6,  // 15 pwrite
            3,  // 16 preadv2
            2,  // 17 lseek
            2,  // 18 splice
            2,  // 19 proc mem / vm_readv
            1,  // 20 futex
            3,  // 21 buffer syscalls
            2,  // 22 poll
            2,  // 23 fd misc
            2,  // 24 close
            2,  // 25 chaos child
            1,  // 26 target life
            2,  // 27 race
        ];
        // Diagnostic: FUZZ_OPS=i,j,... keeps only those operations.
        let mut w = w;
        if let Ok(only) = std::env::var("FUZZ_OPS") {
            let keep: Vec<usize> = only
                .split(',')
                .filter_map(|x| x.trim().parse().ok())
                .collect();
            for (i, x) in w.iter_mut().enumerate() {
                if !keep.contains(&i) {
                    *x = 0;
                }
            }
            if w.iter().all(|&x| x == 0) {
                w[0] = 1;
            }
        }
        let k = self.rng.weighted(&w);
        match k {
            0 => self.op_open(),
            1 => self.op_rpm(),
            2 => self.op_map(),
            3 => self.op_unmap(),
            4 => self.op_lock(),
            5 => self.op_ioctl_other(),
            6 => self.op_mmap(),
            7 => self.op_munmap(),
            8 => self.op_mremap(),
            9 => self.op_mprotect(),
            10 => self.op_madvise(),
            11 => self.op_msync(),
            12 => self.op_mlock(),
            13 => self.op_touch(),
            14 => self.op_pread(),
            15 => self.op_pwrite(),
            16 => self.op_preadv2(),
            17 => self.op_lseek(),
            18 => self.op_splice(),
            19 => self.op_procmem(),
            20 => self.op_futex(),
            21 => self.op_bufsys(),
            22 => self.op_poll(),
            23 => self.op_fdmisc(),
            24 => self.op_close(),
            25 => self.op_chaos(),
            26 => self.op_target(),
            _ => self.op_race(),
        }
        if verbose {
            println!("# {:#x}/{}: {}", self.eseed, self.step, self.now);
        }
    }

    // ----- argument helpers -----

    /// A pointer for an ioctl argument of `n` bytes, holding `bytes` where
    /// it is readable. `write_back`: the kernel writes the struct back
    /// (`_IOWR`), so the pointer must be safe to write.
    fn arg_ptr(&mut self, bytes: &[u8], write_back: bool) -> (usize, &'static str) {
        let n = bytes.len();
        let p = self.p();
        let sb = self.sb.base;
        match self.rng.below(40) {
            0 => (0, "NULL"),
            1 => (
                *self.rng.pick(&gen::KERNEL_ADDRS) as usize,
                "kernel address",
            ),
            2 => (self.sb.guard + p, "unmapped"),
            3 => {
                // Straddles into the guard: only part of it is readable.
                let at = self.sb.guard - n / 2;
                // SAFETY: the readable part lies in the sandbox.
                unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), at as *mut u8, n / 2) };
                (at, "straddling the guard")
            }
            4 if write_back => (self.ro_page, "read-only page"),
            4 => {
                // Readable, not writable: fine for _IOW.
                (self.ro_page, "read-only page (zeros)")
            }
            5 => {
                let at = sb + 1 + self.rng.index(64);
                // SAFETY: inside the sandbox.
                unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), at as *mut u8, n) };
                (at, "misaligned")
            }
            _ => {
                let at = sb + 8 * self.rng.index(64);
                // SAFETY: inside the sandbox.
                unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), at as *mut u8, n) };
                (at, "sandbox")
            }
        }
    }

    fn raw_ioctl(fd: RawFd, cmd: u32, arg: usize) -> Result<i64, Errno> {
        // SAFETY: `arg` is NULL, a kernel or unmapped address, the
        // read-only page, or points into the sandbox with room for any
        // struct of these ioctls: whatever the driver reads or writes
        // there cannot corrupt the worker.
        ret(unsafe { libc::ioctl(fd, cmd as libc::c_ulong, arg) } as i64)
    }

    /// Some fd: mostly of the wanted kind, sometimes anything.
    fn pick_fd(&mut self, want: u8) -> RawFd {
        let pick_ctx = |w: &mut Self, ctl: bool| -> Option<RawFd> {
            if w.ctx.is_empty() {
                return None;
            }
            let i = w.rng.index(w.ctx.len());
            let c = &w.ctx[i];
            if ctl { c.ctl.as_ref() } else { c.mem.as_ref() }.map(AsRawFd::as_raw_fd)
        };
        if self.rng.chance(850) {
            let fd = match want {
                b'd' => Some(self.devs[self.rng.index(self.devs.len())].as_raw_fd()),
                b'c' => pick_ctx(self, true),
                _ => pick_ctx(self, false),
            };
            if let Some(fd) = fd {
                return fd;
            }
        }
        match self.rng.below(8) {
            0 => -1,
            1 => 1 << 20,
            2 => RACE_FD + self.rng.index(RACE_SLOTS) as RawFd, // closed now
            3 => self.pipe.0.as_raw_fd(),
            4 if !self.misc.is_empty() => self.misc[self.rng.index(self.misc.len())].as_raw_fd(),
            5 => self.devs[0].as_raw_fd(),
            6 => pick_ctx(self, true).unwrap_or(-1),
            _ => pick_ctx(self, false).unwrap_or(-1),
        }
    }

    /// The context an fd belongs to, if it is one of ours.
    fn ctx_of_ctl(&self, fd: RawFd) -> Option<usize> {
        self.ctx
            .iter()
            .position(|c| c.ctl.as_ref().is_some_and(|f| f.as_raw_fd() == fd))
    }

    fn ctx_of_mem(&self, fd: RawFd) -> Option<usize> {
        self.ctx
            .iter()
            .position(|c| c.mem.as_ref().is_some_and(|f| f.as_raw_fd() == fd))
    }

    /// An address in the target of context `ci` for a grant of `size`.
    fn grant_addr(&mut self, who: Who, size: u64) -> u64 {
        let p = self.p() as u64;
        if who != Who::Init && self.rng.chance(750) {
            let &(s, n, _) = self.rng.pick(&self.arena.parts);
            let k = self.rng.below(n as u64 + 2);
            let mut a = s as u64 + k * p;
            if self.rng.chance(30) {
                a += 1 + self.rng.below(p - 1);
            }
            let _ = size;
            return a;
        }
        if who == Who::Me && self.rng.chance(200) && !self.mir.is_empty() {
            // A7: a grant over one of our own mirrors.
            return self.mir[self.rng.index(self.mir.len())].ptr as u64;
        }
        gen::edge_u64(&mut self.rng, self.ts)
    }

    /// The arena parts that read-write grants over the worker may cover
    /// (not the hole: something else may be mapped there later).
    fn rw_parts(&self) -> Vec<(usize, usize, &'static str)> {
        self.arena
            .parts
            .iter()
            .copied()
            .filter(|p| p.2 != "hole")
            .collect()
    }

    /// Whether `[addr, addr+size)` lies in one arena part (not the hole).
    fn in_arena(&self, addr: u64, size: u64) -> bool {
        let p = self.p() as u64;
        self.rw_parts().iter().any(|&(s, n, _)| {
            let s = s as u64;
            addr >= s && size <= n as u64 * p && addr - s <= n as u64 * p - size
        })
    }

    // ----- ioctls -----

    fn op_open(&mut self) {
        let who = match self.rng.below(10) {
            0..=3 => Who::Me,
            4 => Who::Init,
            _ if !self.tg.is_empty() => Who::Child(self.rng.index(self.tg.len())),
            _ => Who::Me,
        };
        let mut owned: Option<OwnedFd> = None;
        let (pidfd, what) = match self.rng.below(12) {
            0 => (-1, "-1"),
            1 => (1 << 20, "unopened fd"),
            2 => (self.pick_fd(b'c'), "some fd"),
            3 => (self.devs[0].as_raw_fd(), "the device fd"),
            4 => {
                owned = pidfd_mem::pidfd_open(2).ok(); // kthreadd
                (
                    owned.as_ref().map_or(-1, AsRawFd::as_raw_fd),
                    "pidfd of kthreadd",
                )
            }
            _ => {
                owned = self.pidfd_of(who);
                (owned.as_ref().map_or(-1, AsRawFd::as_raw_fd), "pidfd")
            }
        };
        let flags = if self.rng.chance(900) {
            0
        } else {
            self.rng.next_u64() as u32
        };
        let reserved = if self.rng.chance(900) {
            [0, 0]
        } else {
            [self.rng.next_u64() | 1, 0]
        };
        let arg = psys::PidfdMemOpen {
            pidfd,
            flags,
            ctl_fd: -1,
            mem_fd: -1,
            reserved,
        };
        let bytes = arg.as_slice().to_vec();
        let (at, where_) = self.arg_ptr(&bytes, true);
        let dev = self.pick_fd(b'd');
        self.note(format!("OPEN dev {dev} pidfd {pidfd} ({what}, {who:?}) flags {flags:#x} reserved {reserved:x?} arg {where_}"));
        let r = Self::raw_ioctl(dev, psys::PIDFD_MEM_OPEN, at);
        self.sh.count(Op::Open, unit(r));
        let is_dev = self.devs.iter().any(|d| d.as_raw_fd() == dev);
        if r.is_ok() {
            // Read back the fds the kernel wrote (only our own memory is
            // used as a struct that can be written successfully).
            let mut back = psys::PidfdMemOpen::default();
            // SAFETY: `at` points into the sandbox (the call succeeded, so
            // the kernel could read and write there).
            unsafe {
                ptr::copy_nonoverlapping(
                    at as *const u8,
                    (&mut back as *mut psys::PidfdMemOpen).cast(),
                    size_of::<psys::PidfdMemOpen>(),
                )
            };
            if !is_dev || flags != 0 || reserved != [0, 0] || what != "pidfd" {
                self.fail(format_args!("OPEN succeeded where it must fail (O2)"));
            }
            if back.ctl_fd < 0 || back.mem_fd < 0 {
                self.fail(format_args!(
                    "OPEN succeeded with fds {} {}",
                    back.ctl_fd, back.mem_fd
                ));
                return;
            }
            // SAFETY: the kernel just installed these two fds for us.
            let (ctl, mem) = unsafe {
                (
                    OwnedFd::from_raw_fd(back.ctl_fd),
                    OwnedFd::from_raw_fd(back.mem_fd),
                )
            };
            if !ssys_cloexec(&ctl) || !ssys_cloexec(&mem) {
                self.fail(format_args!("OPEN fds are not close-on-exec (contract §1)"));
            }
            self.ctx.push(Ctx {
                ctl: Some(ctl),
                mem: Some(mem),
                who,
                rpm: false,
                locked: false,
                grants: Vec::new(),
                exact: true,
                sup: true,
                no_write: self.execs(who),
            });
        } else if let Err(e) = r {
            // The contract's answers where the argument was readable.
            if is_dev && (where_ == "sandbox" || where_ == "misaligned") {
                if (flags != 0 || reserved != [0, 0]) && e != Errno::INVAL {
                    self.fail(format_args!(
                        "OPEN with flags/reserved not 0: {}, expected EINVAL (O2)",
                        en(e)
                    ));
                }
                if flags == 0
                    && reserved == [0, 0]
                    && what == "pidfd"
                    && who == Who::Me
                    && e != Errno::NOMEM
                {
                    self.fail(format_args!("OPEN of itself failed: {} (O1)", en(e)));
                }
            }
            if !is_dev
                && (where_ == "sandbox" || where_ == "misaligned")
                && e != Errno::NOTTY
                && e != Errno::BADF
            {
                self.fail(format_args!(
                    "PIDFD_MEM_OPEN on an fd that is not the device: {}, expected ENOTTY",
                    en(e)
                ));
            }
        }
        drop(owned);
    }

    fn op_rpm(&mut self) {
        let who = match self.rng.below(4) {
            0 => Who::Me,
            1 => Who::Init,
            _ if !self.tg.is_empty() => Who::Child(self.rng.index(self.tg.len())),
            _ => Who::Me,
        };
        let owned = self.pidfd_of(who);
        let pidfd = if self.rng.chance(900) {
            owned.as_ref().map_or(-1, AsRawFd::as_raw_fd)
        } else {
            self.pick_fd(b'm')
        };
        let flags = if self.rng.chance(900) {
            0
        } else {
            1 + self.rng.below(1 << 31) as u32
        };
        let reserved = if self.rng.chance(900) { 0 } else { 1 };
        let arg = psys::RemoteProcMap {
            pidfd,
            flags,
            mem_fd: -1,
            reserved,
        };
        let bytes = arg.as_slice().to_vec();
        let (at, where_) = self.arg_ptr(&bytes, true);
        let dev = self.pick_fd(b'd');
        self.note(format!("REMOTE_PROC_MAP dev {dev} pidfd {pidfd} ({who:?}) flags {flags:#x} reserved {reserved} arg {where_}"));
        let r = Self::raw_ioctl(dev, psys::REMOTE_PROC_MAP, at);
        self.sh.count(Op::Rpm, unit(r));
        if r.is_ok() {
            let mut back = psys::RemoteProcMap::default();
            // SAFETY: `at` is in the sandbox (the kernel wrote there).
            unsafe {
                ptr::copy_nonoverlapping(
                    at as *const u8,
                    (&mut back as *mut psys::RemoteProcMap).cast(),
                    size_of::<psys::RemoteProcMap>(),
                )
            };
            if flags != 0 || reserved != 0 {
                self.fail(format_args!(
                    "REMOTE_PROC_MAP succeeded with flags/reserved not 0 (R1/O2)"
                ));
            }
            if back.mem_fd < 0 {
                self.fail(format_args!(
                    "REMOTE_PROC_MAP succeeded with fd {}",
                    back.mem_fd
                ));
                return;
            }
            // SAFETY: the kernel just installed this fd for us.
            let mem = unsafe { OwnedFd::from_raw_fd(back.mem_fd) };
            // Which process did it name? `pidfd` may have been another fd
            // that happens to be a pidfd: only trust the plain case.
            let who = if Some(pidfd) == owned.as_ref().map(AsRawFd::as_raw_fd) {
                who
            } else {
                Who::Init
            };
            self.ctx.push(Ctx {
                ctl: None,
                mem: Some(mem),
                who,
                rpm: true,
                locked: true,
                grants: Vec::new(),
                exact: false,
                sup: false,
                no_write: self.execs(who),
            });
        }
    }

    fn op_map(&mut self) {
        let p = self.p() as u64;
        let fd = self.pick_fd(b'c');
        let ci = self.ctx_of_ctl(fd);
        let who = ci.map_or(Who::Init, |i| self.ctx[i].who);
        let mut size = gen::size(&mut self.rng, self.ts);
        let mut flags = gen::grant_flags(&mut self.rng);
        let mut offset = gen::offset(&mut self.rng, self.ts);
        let mut address = self.grant_addr(who, size as u64);
        // Keep most windows clear of what is already granted.
        if let Some(i) = ci {
            if self.rng.chance(600) && offset >= 0 {
                let top = self.ctx[i]
                    .grants
                    .iter()
                    .map(|g| g.off + g.size)
                    .max()
                    .unwrap_or(0);
                offset = (top + p * self.rng.below(4)) as i64;
            }
        }
        // Read-write grants over ourselves only over the arenas; over pid
        // 1 never.
        if flags & 2 != 0 {
            match who {
                Who::Me | Who::Child(_) => {
                    if !self.in_arena(address, size as u64) || size <= 0 {
                        let parts = self.rw_parts();
                        let &(s, n, _) = self.rng.pick(&parts);
                        let k = self.rng.below(n as u64);
                        address = s as u64 + k * p;
                        size = ((1 + self.rng.below(n as u64 - k)) * p) as i64;
                    }
                }
                Who::Init => flags = 1,
            }
        }
        let padding = if self.rng.chance(950) {
            [0; 7]
        } else {
            let mut pd = [0i32; 7];
            pd[self.rng.index(7)] = self.rng.next_u64() as i32 | 1;
            pd
        };
        let arg = psys::PidfdMemMap {
            address,
            offset,
            size,
            flags,
            padding,
        };
        let bytes = arg.as_slice().to_vec();
        let (at, where_) = self.arg_ptr(&bytes, false);
        self.note(format!("MAP ctl {fd} ({who:?}) address {address:#x} offset {offset:#x} size {size:#x} flags {flags:#x} padding {padding:?} arg {where_}"));
        let r = Self::raw_ioctl(fd, psys::PIDFD_MEM_MAP, at);
        self.sh.count(Op::Map, unit(r));
        let Some(i) = ci else {
            if r.is_ok() {
                self.fail(format_args!(
                    "MAP succeeded on an fd that is not a control fd"
                ));
            }
            return;
        };
        if where_ != "sandbox" && where_ != "misaligned" {
            if r.is_ok() && where_ != "read-only page (zeros)" {
                self.fail(format_args!("MAP succeeded with an unreadable argument"));
            }
            return;
        }
        let invalid = address % p != 0
            || offset < 0
            || size <= 0
            || offset as u64 % p != 0
            || size as u64 % p != 0
            || offset.checked_add(size).is_none()
            || address > self.ts
            || size as u64 > self.ts - address
            || !(flags == 1 || flags == 3)
            || padding != [0; 7];
        let c = &self.ctx[i];
        let overlap = !invalid
            && c.grants
                .iter()
                .any(|g| g.off < offset as u64 + size as u64 && (offset as u64) < g.off + g.size);
        let (exact, sup) = (c.exact, c.sup);
        let locked = c.locked;
        let child_gone = matches!(who, Who::Child(t) if self.tg[t].killed || self.tg[t].kind != TKind::Idle && self.tg[t].kind != TKind::Churn);
        match r {
            Ok(_) => {
                if invalid {
                    self.fail(format_args!("MAP accepted invalid arguments (M1/P3)"));
                } else if exact && overlap {
                    self.fail(format_args!(
                        "MAP accepted a window overlapping a grant (M1)"
                    ));
                } else if locked {
                    self.fail(format_args!("MAP succeeded after LOCK (K1)"));
                }
                self.ctx[i].grants.push(G {
                    off: offset as u64,
                    addr: address,
                    size: size as u64,
                    rw: flags == 3,
                });
            }
            Err(e) => {
                let want = if invalid {
                    Some(Errno::INVAL)
                } else if locked {
                    Some(Errno::PERM)
                } else if overlap {
                    Some(Errno::EXIST)
                } else {
                    None
                };
                let ok = match want {
                    Some(w) => e == w || !exact && w == Errno::EXIST,
                    None => {
                        e == Errno::NOMEM
                            || e == Errno::SRCH && child_gone
                            || !sup && (e == Errno::EXIST || e == Errno::SRCH)
                    }
                };
                if !ok {
                    self.fail(format_args!(
                        "MAP answered {}, expected {} (M1)",
                        en(e),
                        want.map_or("success or ENOMEM".to_string(), |w| en(w).to_string())
                    ));
                }
                if e == Errno::PERM {
                    self.ctx[i].locked = true;
                }
            }
        }
    }

    fn op_unmap(&mut self) {
        let p = self.p() as u64;
        let fd = self.pick_fd(b'c');
        let ci = self.ctx_of_ctl(fd);
        let (offset, size) = match ci.filter(|_| self.rng.chance(700)) {
            Some(i) if !self.ctx[i].grants.is_empty() => {
                let g = self.ctx[i].grants[self.rng.index(self.ctx[i].grants.len())];
                // A piece of a grant, or across its edges.
                let a = g.off + p * self.rng.below(g.size / p + 1);
                let a = a.saturating_sub(p * self.rng.below(2));
                (a as i64, (p * (1 + self.rng.below(g.size / p + 2))) as i64)
            }
            _ => (
                gen::offset(&mut self.rng, self.ts),
                gen::size(&mut self.rng, self.ts),
            ),
        };
        let arg = psys::PidfdMemUnmap { offset, size };
        let bytes = arg.as_slice().to_vec();
        let (at, where_) = self.arg_ptr(&bytes, false);
        self.note(format!(
            "UNMAP ctl {fd} offset {offset:#x} size {size:#x} arg {where_}"
        ));
        let r = Self::raw_ioctl(fd, psys::PIDFD_MEM_UNMAP, at);
        self.sh.count(Op::Unmap, unit(r));
        let Some(i) = ci else {
            if r.is_ok() {
                self.fail(format_args!(
                    "UNMAP succeeded on an fd that is not a control fd"
                ));
            }
            return;
        };
        if where_ != "sandbox" && where_ != "misaligned" {
            return;
        }
        let invalid = offset < 0
            || size <= 0
            || offset as u64 % p != 0
            || size as u64 % p != 0
            || offset.checked_add(size).is_none();
        match r {
            Ok(_) => {
                if invalid {
                    self.fail(format_args!("UNMAP accepted invalid arguments (U1)"));
                } else if self.ctx[i].locked {
                    self.fail(format_args!("UNMAP succeeded after LOCK (K1)"));
                }
                self.ctx[i].remove(offset as u64, size as u64);
            }
            Err(e) => {
                let ok = if invalid {
                    e == Errno::INVAL
                } else {
                    e == Errno::PERM || e == Errno::SRCH || e == Errno::NOMEM
                };
                if !ok {
                    self.fail(format_args!("UNMAP answered {} (U1)", en(e)));
                }
                if e == Errno::PERM {
                    self.ctx[i].locked = true;
                }
            }
        }
    }

    fn op_lock(&mut self) {
        let fd = self.pick_fd(b'c');
        let arg = if self.rng.chance(800) {
            0
        } else {
            gen::edge_u64(&mut self.rng, self.ts) as usize
        };
        self.note(format!("LOCK ctl {fd} arg {arg:#x}"));
        // SAFETY: PIDFD_MEM_LOCK takes an integer, never a pointer; on other
        // fds this number is unknown (ENOTTY) or an fd of ours.
        let r = ret(unsafe { libc::ioctl(fd, psys::PIDFD_MEM_LOCK as libc::c_ulong, arg) } as i64);
        self.sh.count(Op::Lock, unit(r));
        if let Some(i) = self.ctx_of_ctl(fd) {
            match r {
                Ok(_) if arg != 0 => {
                    self.fail(format_args!("LOCK accepted argument {arg:#x} (K1)"))
                }
                Ok(_) => self.ctx[i].locked = true,
                Err(e) if arg != 0 && e != Errno::INVAL => self.fail(format_args!(
                    "LOCK with argument {arg:#x}: {}, expected EINVAL (K1)",
                    en(e)
                )),
                Err(e) if arg == 0 => self.fail(format_args!("LOCK failed: {} (K1)", en(e))),
                Err(_) => {}
            }
        }
    }

    fn op_ioctl_other(&mut self) {
        let fd = match self.rng.below(3) {
            0 => self.pick_fd(b'd'),
            1 => self.pick_fd(b'c'),
            _ => self.pick_fd(b'm'),
        };
        let known = [
            psys::PIDFD_MEM_OPEN,
            psys::REMOTE_PROC_MAP,
            psys::PIDFD_MEM_MAP,
            psys::PIDFD_MEM_UNMAP,
            psys::PIDFD_MEM_LOCK,
        ];
        let cmd: u32 = match self.rng.below(6) {
            // Our magic, another number, size or direction.
            0..=2 => {
                let dir = self.rng.below(4) as u32;
                let size = *self.rng.pick(&[0u32, 8, 16, 24, 32, 56, 64, 0x3fff]);
                let nr = *self
                    .rng
                    .pick(&[0u32, 1, 2, 3, 0x10, 0x11, 0x12, 0x13, 0xff]);
                (dir << 30) | (size << 16) | (0xb6 << 8) | nr
            }
            3 => *self.rng.pick(&known),
            // Generic file ioctls (FIONREAD, FIONBIO, FIOCLEX, FIGETBSZ, FIOQSIZE).
            4 => *self.rng.pick(&[0x541b, 0x5421, 0x5451, 0x5450, 2, 0x5460]),
            _ => self.rng.next_u64() as u32,
        };
        let arg = match self.rng.below(5) {
            0 => 0,
            1 => gen::KERNEL_ADDRS[0] as usize,
            2 => self.sb.guard,
            _ => self.sb.base + 8 * self.rng.index(64),
        };
        if arg >= self.sb.base && arg < self.sb.guard {
            let n = 64usize;
            for k in 0..n / 8 {
                let v = self.rng.next_u64();
                // SAFETY: inside the sandbox.
                unsafe { ((arg + 8 * k) as *mut u64).write_unaligned(v) };
            }
        }
        self.note(format!("ioctl fd {fd} cmd {cmd:#x} arg {arg:#x}"));
        let is_ours = self.devs.iter().any(|d| d.as_raw_fd() == fd)
            || self.ctx_of_ctl(fd).is_some()
            || self.ctx_of_mem(fd).is_some();
        let cmd_safe =
            (cmd >> 8) & 0xff == 0xb6 || [0x541b, 0x5421, 0x5451, 0x5450, 2, 0x5460].contains(&cmd);
        if !cmd_safe && !is_ours {
            return; // random numbers only on the module's fds
        }
        let r = if known.contains(&cmd) && arg >= self.sb.base && arg < self.sb.guard {
            // A valid number on a (possibly) wrong fd, with random struct
            // contents: the contents could name a pidfd of ours and ask
            // for fds (fine) or grant random windows (fine: never over
            // the worker read-write, the numbers are random) — but MAP on
            // a control fd over the worker could be read-write anywhere.
            // OPEN and REMOTE_PROC_MAP may hand out fds we do not track:
            // they stay open until the episode ends.
            if cmd == psys::PIDFD_MEM_MAP && self.ctx_of_ctl(fd).is_some() {
                // Random contents could grant read-write anywhere in T.
                return;
            }
            if cmd == psys::PIDFD_MEM_UNMAP {
                if let Some(i) = self.ctx_of_ctl(fd) {
                    self.ctx[i].exact = false;
                }
            }
            Self::raw_ioctl(fd, cmd, arg)
        } else {
            Self::raw_ioctl(fd, cmd, arg)
        };
        self.sh.count(Op::IoctlOther, unit(r));
        if cmd == psys::PIDFD_MEM_LOCK && r.is_ok() {
            if let Some(i) = self.ctx_of_ctl(fd) {
                self.ctx[i].locked = true;
            }
        }
        if is_ours && (cmd >> 8) & 0xff == 0xb6 && !known.contains(&cmd) {
            match r {
                Err(Errno::NOTTY) => {}
                other => self.fail(format_args!(
                    "unknown pidfd_mem ioctl {cmd:#x}: {other:?}, expected ENOTTY (§1)"
                )),
            }
        }
        if cmd == 0x5451 || cmd == 0x5450 {
            // FIOCLEX / FIONCLEX: put close-on-exec back.
            // SAFETY: fcntl on an fd number; no memory involved.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }

    // ----- mirrors -----

    fn pick_mem_ctx(&mut self) -> Option<usize> {
        let with_mem: Vec<usize> = (0..self.ctx.len())
            .filter(|&i| self.ctx[i].mem.is_some())
            .collect();
        (!with_mem.is_empty()).then(|| *self.rng.pick(&with_mem))
    }

    /// A PROT_NONE reservation of `len` bytes that is ours to map over.
    fn reserve(&mut self, len: usize) -> Option<usize> {
        mmap_anon(len, libc::PROT_NONE).ok()
    }

    fn op_mmap(&mut self) {
        let p = self.p();
        let Some(ci) = self.pick_mem_ctx() else {
            return;
        };
        let fd = if self.rng.chance(900) {
            self.ctx[ci].mem.as_ref().map_or(-1, AsRawFd::as_raw_fd)
        } else {
            self.pick_fd(b'c')
        };
        let is_mem = self.ctx_of_mem(fd) == Some(ci);
        let off: u64 = match self.rng.below(10) {
            0..=6 if !self.ctx[ci].grants.is_empty() => {
                let g = self.ctx[ci].grants[self.rng.index(self.ctx[ci].grants.len())];
                g.off + p as u64 * self.rng.below(g.size / p as u64 + 1)
            }
            7 if self.ctx[ci].rpm => {
                let &(s, n, _) = self.rng.pick(&self.arena.parts);
                (s + p * self.rng.index(n)) as u64
            }
            _ => gen::offset(&mut self.rng, self.ts) as u64,
        };
        let len = match self.rng.below(10) {
            0..=6 => p * (1 + self.rng.index(16)),
            7 => 2 << 20,
            8 => p * (1 + self.rng.index(600)),
            _ => gen::edge_u64(&mut self.rng, self.ts) as usize,
        };
        let prot = gen::prot(&mut self.rng);
        let mut flags = gen::map_flags(&mut self.rng);
        if flags & libc::MAP_LOCKED != 0 && self.rng.chance(500) {
            flags &= !libc::MAP_LOCKED;
        }
        let mut addr = 0usize;
        if self.rng.chance(100) && len < 64 << 20 {
            if let Some(r) = self.reserve(len) {
                addr = r;
                flags |= libc::MAP_FIXED;
            }
        }
        self.note(format!(
            "mmap fd {fd} off {off:#x} len {len:#x} prot {prot:#x} flags {flags:#x} at {addr:#x}"
        ));
        // SAFETY: without MAP_FIXED the kernel picks a free address; with
        // it, `addr` is our own fresh reservation of `len` bytes.
        let q = unsafe { libc::mmap(addr as *mut _, len, prot, flags, fd, off as libc::off_t) };
        let r = if q == libc::MAP_FAILED {
            Err(errno())
        } else {
            Ok(())
        };
        self.sh.count(Op::Mmap, r);
        match r {
            Ok(()) => {
                let q = q as usize;
                if !is_mem {
                    // Not a mirror (some other fd mapped): give it back.
                    // SAFETY: the mapping we just made.
                    unsafe { libc::munmap(q as *mut _, len) };
                    if self.ctx_of_ctl(fd).is_some()
                        || self.devs.iter().any(|d| d.as_raw_fd() == fd)
                    {
                        self.fail(format_args!("mmap of a control or device fd succeeded"));
                    }
                    return;
                }
                if flags & libc::MAP_SHARED == 0
                    && flags & libc::MAP_SHARED_VALIDATE != libc::MAP_SHARED_VALIDATE
                {
                    self.fail(format_args!("MAP_PRIVATE mirror accepted (A1)"));
                }
                let c = &self.ctx[ci];
                let ro = c.exact
                    && !c.rpm
                    && c.grants
                        .iter()
                        .any(|g| !g.rw && g.off < off + len as u64 && off < g.off + g.size);
                if prot & libc::PROT_WRITE != 0 && ro {
                    self.fail(format_args!(
                        "PROT_WRITE mirror over a read-only grant accepted (A1)"
                    ));
                }
                // The kernel maps whole pages.
                let len = len.div_ceil(p) * p;
                self.mir.push(Mir {
                    ptr: q,
                    len,
                    ci,
                    off,
                    prot,
                    ro_locked: ro,
                });
                if self.mir.len() > 48 {
                    let m = self.mir.swap_remove(0);
                    // SAFETY: our mirror; nothing refers to it any more.
                    unsafe { libc::munmap(m.ptr as *mut _, m.len) };
                }
            }
            Err(e) => {
                if addr != 0 {
                    // SAFETY: our reservation, still in place after a
                    // failed MAP_FIXED... or replaced: unmap either way.
                    unsafe { libc::munmap(addr as *mut _, len) };
                }
                if is_mem
                    && flags & libc::MAP_TYPE == libc::MAP_PRIVATE
                    && flags & (libc::MAP_HUGETLB | libc::MAP_GROWSDOWN | libc::MAP_SYNC) == 0
                    && len <= 1 << 30
                    && len % p == 0
                    && off % p as u64 == 0
                    && off < 1 << 40
                    && e != Errno::INVAL
                {
                    self.fail(format_args!(
                        "MAP_PRIVATE mirror: {}, expected EINVAL (A1)",
                        en(e)
                    ));
                }
            }
        }
    }

    fn pick_mir(&mut self) -> Option<usize> {
        (!self.mir.is_empty()).then(|| self.rng.index(self.mir.len()))
    }

    /// A page-aligned piece `[a, b)` (byte offsets) of mirror `mi`.
    fn piece(&mut self, mi: usize) -> (usize, usize) {
        let p = self.p();
        let pages = self.mir[mi].len / p;
        if pages == 0 || self.rng.chance(300) {
            return (0, self.mir[mi].len);
        }
        let a = self.rng.index(pages);
        let b = a + 1 + self.rng.index(pages - a);
        (a * p, (b * p).min(self.mir[mi].len))
    }

    fn op_munmap(&mut self) {
        let Some(mi) = self.pick_mir() else {
            return;
        };
        let (a, b) = self.piece(mi);
        let m = self.mir[mi];
        self.note(format!("munmap mirror {:#x}+[{a:#x},{b:#x})", m.ptr));
        // SAFETY: a page-aligned piece of our own mirror.
        let r = ret(unsafe { libc::munmap((m.ptr + a) as *mut _, b - a) } as i64);
        self.sh.count(Op::Munmap, unit(r));
        if r.is_ok() {
            self.mir.swap_remove(mi);
            if a > 0 {
                self.mir.push(Mir { len: a, ..m });
            }
            if b < m.len {
                self.mir.push(Mir {
                    ptr: m.ptr + b,
                    len: m.len - b,
                    off: m.off + b as u64,
                    ..m
                });
            }
        }
    }

    fn op_mremap(&mut self) {
        let p = self.p();
        let Some(mi) = self.pick_mir() else {
            return;
        };
        let m = self.mir[mi];
        let kind = self.rng.below(5);
        self.note(format!(
            "mremap mirror {:#x} len {:#x} kind {kind}",
            m.ptr, m.len
        ));
        let (r, new_ptr, new_len) = match kind {
            0 if m.len > p => {
                let nl = p * (1 + self.rng.index(m.len / p - 1));
                // SAFETY: shrinks our own mirror in place.
                let q = unsafe { libc::mremap(m.ptr as *mut _, m.len, nl, 0) };
                (q, q as usize, nl)
            }
            1 => {
                let nl = m.len + p * (1 + self.rng.index(4));
                let flags = if self.rng.chance(500) {
                    libc::MREMAP_MAYMOVE
                } else {
                    0
                };
                // SAFETY: asks to grow our own mirror (refused: A1); if it
                // moved, only our own mirror moved.
                let q = unsafe { libc::mremap(m.ptr as *mut _, m.len, nl, flags) };
                if q != libc::MAP_FAILED {
                    self.fail(format_args!("mremap grew a mirror (A1 forbids it)"));
                }
                (q, q as usize, nl)
            }
            2 | 3 => {
                let Some(res) = self.reserve(m.len) else {
                    return;
                };
                // SAFETY: moves our own mirror onto our own fresh reservation.
                let q = unsafe {
                    libc::mremap(
                        m.ptr as *mut _,
                        m.len,
                        m.len,
                        libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                        res as *mut libc::c_void,
                    )
                };
                if q == libc::MAP_FAILED {
                    // SAFETY: our unused reservation.
                    unsafe { libc::munmap(res as *mut _, m.len) };
                }
                (q, q as usize, m.len)
            }
            _ => {
                // MREMAP_DONTUNMAP: refused for VM_PFNMAP / VM_DONTEXPAND.
                // SAFETY: moves our own mirror to an address the kernel
                // chooses (leaving the old range mapped).
                let q = unsafe {
                    libc::mremap(
                        m.ptr as *mut _,
                        m.len,
                        m.len,
                        libc::MREMAP_MAYMOVE | 4,
                        ptr::null_mut::<libc::c_void>(),
                    )
                };
                if q != libc::MAP_FAILED {
                    // Both the old and the new range are mirrors now.
                    self.mir.push(Mir {
                        ptr: q as usize,
                        ..m
                    });
                }
                (q, m.ptr, m.len)
            }
        };
        let res = if r == libc::MAP_FAILED {
            Err(errno())
        } else {
            Ok(())
        };
        self.sh.count(Op::Mremap, res);
        if res.is_ok() {
            let e = &mut self.mir[mi];
            e.ptr = new_ptr;
            e.len = new_len;
        }
    }

    fn op_mprotect(&mut self) {
        let Some(mi) = self.pick_mir() else {
            return;
        };
        let (a, b) = self.piece(mi);
        let prot = gen::prot(&mut self.rng);
        let m = self.mir[mi];
        self.note(format!(
            "mprotect mirror {:#x}+[{a:#x},{b:#x}) prot {prot:#x}",
            m.ptr
        ));
        // SAFETY: our own mirror; the worker tracks its protection.
        let r = ret(unsafe { libc::mprotect((m.ptr + a) as *mut _, b - a, prot) } as i64);
        self.sh.count(Op::Mprotect, unit(r));
        if r.is_ok() {
            self.mir[mi].prot = if a == 0 && b == m.len { prot } else { -1 };
            if prot & libc::PROT_WRITE != 0 && m.ro_locked {
                self.fail(format_args!(
                    "mprotect made a mirror mapped over a read-only grant writable (A1)"
                ));
            }
        }
    }

    fn op_madvise(&mut self) {
        let Some(mi) = self.pick_mir() else {
            return;
        };
        let (a, b) = self.piece(mi);
        let adv = gen::advice(&mut self.rng);
        let m = self.mir[mi];
        self.note(format!(
            "madvise mirror {:#x}+[{a:#x},{b:#x}) advice {adv}",
            m.ptr
        ));
        // SAFETY: advice on our own mirror (no HWPOISON/SOFT_OFFLINE).
        let r = ret(unsafe { libc::madvise((m.ptr + a) as *mut _, b - a, adv) } as i64);
        self.sh.count(Op::Madvise, unit(r));
    }

    fn op_msync(&mut self) {
        let Some(mi) = self.pick_mir() else {
            return;
        };
        let (a, b) = self.piece(mi);
        let flags = *self.rng.pick(&[
            libc::MS_SYNC,
            libc::MS_ASYNC,
            libc::MS_INVALIDATE,
            libc::MS_SYNC | libc::MS_INVALIDATE,
        ]);
        let m = self.mir[mi];
        self.note(format!(
            "msync mirror {:#x}+[{a:#x},{b:#x}) flags {flags}",
            m.ptr
        ));
        // SAFETY: msync of our own mirror.
        let r = ret(unsafe { libc::msync((m.ptr + a) as *mut _, b - a, flags) } as i64);
        self.sh.count(Op::Msync, unit(r));
    }

    fn op_mlock(&mut self) {
        let Some(mi) = self.pick_mir() else {
            return;
        };
        let (a, b) = self.piece(mi);
        let m = self.mir[mi];
        let k = self.rng.below(3);
        self.note(format!(
            "mlock kind {k} mirror {:#x}+[{a:#x},{b:#x})",
            m.ptr
        ));
        let at = (m.ptr + a) as *const libc::c_void;
        // SAFETY: (un)locking our own mirror's range.
        let r = ret(unsafe {
            match k {
                0 => libc::mlock(at, b - a),
                1 => libc::syscall(libc::SYS_mlock2, at, b - a, 1) as i32, // MLOCK_ONFAULT
                _ => libc::munlock(at, b - a),
            }
        } as i64);
        self.sh.count(Op::Mlock, unit(r));
    }

    /// Runs `f` on mirror `mi` as a library `Mirror` (guarded copies and
    /// atomics), without taking ownership.
    fn with_mirror<R>(&self, mi: usize, f: impl FnOnce(&Mirror) -> R) -> R {
        let m = self.mir[mi];
        let prot = if m.prot & libc::PROT_WRITE != 0 {
            Prot::ReadWrite
        } else {
            Prot::Read
        };
        // SAFETY: `[ptr, ptr+len)` is one of our live mirrors, mapped
        // readable (callers check `prot`), and stays mapped during `f` (the
        // worker thread is the only one that changes mappings). ManuallyDrop:
        // the bookkeeping, not this value, owns the mapping.
        let mirror = ManuallyDrop::new(unsafe {
            Mirror::from_raw(
                NonNull::new(m.ptr as *mut u8).expect("mirror at 0"),
                m.len,
                MemOffset(m.off),
                prot,
            )
        });
        f(&mirror)
    }

    /// Whether reading mem offset `off` of context `ci` must raise SIGBUS
    /// as far as the model knows: no grant there (A2), or a grant over
    /// one of our own mirrors (A7).
    fn must_fault(&self, ci: usize, off: u64) -> bool {
        let c = &self.ctx[ci];
        if !c.sup || c.rpm {
            return false;
        }
        match c.grant_at(off) {
            None => true,
            Some(g) => {
                let a = g.addr + (off - g.off);
                c.who == Who::Me
                    && self
                        .mir
                        .iter()
                        .any(|m| (m.ptr as u64..(m.ptr + m.len) as u64).contains(&a))
            }
        }
    }

    fn op_touch(&mut self) {
        let p = self.p();
        let Some(mi) = self.pick_mir() else {
            return;
        };
        let m = self.mir[mi];
        if m.prot < 0 || m.prot & libc::PROT_READ == 0 && m.prot & libc::PROT_WRITE == 0 {
            return; // not known readable: a touch would be SIGSEGV
        }
        let at = 8 * self.rng.index(m.len / 8);
        let off = m.off + at as u64;
        let must_fault = self.must_fault(m.ci, off);
        let c = &self.ctx[m.ci];
        let may_store = m.prot & libc::PROT_WRITE != 0 && c.write_ok();
        let k = self.rng.below(4);
        self.note(format!(
            "touch kind {k} mirror {:#x}+{at:#x} (mem {off:#x}, ctx {:?})",
            m.ptr, c.who
        ));
        match k {
            0 | 1 => {
                let r = self.with_mirror(mi, |mm| mm.load_u64(at, SeqCst));
                match r {
                    Ok(v) => {
                        self.sh.count(Op::TouchLoad, Ok(()));
                        if must_fault {
                            self.fail(format_args!("mirror load at mem offset {off:#x} returned {v:#x} where no grant is (A2/A7/P1)"));
                        }
                    }
                    Err(MirrorError::Fault { .. }) => self.sh.count_sigbus(Op::TouchLoad),
                    Err(e) => self.fail(format_args!("mirror load: {e}")),
                }
            }
            2 if may_store => {
                let v = self.rng.next_u64();
                let rw_grant = self.ctx[m.ci].grant_at(off).map(|g| g.rw);
                let sup = self.ctx[m.ci].sup;
                let r = self.with_mirror(mi, |mm| mm.store_u64(at, v, SeqCst));
                match r {
                    Ok(()) => {
                        self.sh.count(Op::TouchStore, Ok(()));
                        if sup && rw_grant != Some(true) && !self.ctx[m.ci].rpm {
                            self.fail(format_args!("mirror store at mem offset {off:#x} succeeded without a read-write grant (A2/P1)"));
                        }
                    }
                    Err(MirrorError::Fault { .. }) => self.sh.count_sigbus(Op::TouchStore),
                    Err(e) => self.fail(format_args!("mirror store: {e}")),
                }
            }
            _ => {
                let len = (1 + self.rng.index(2 * p)).min(m.len - at);
                let mut buf = vec![0u8; len];
                let r = self.with_mirror(mi, |mm| mm.copy_to(at, &mut buf));
                match r {
                    Ok(()) => {
                        self.sh.count(Op::TouchCopy, Ok(()));
                        if must_fault {
                            self.fail(format_args!("mirror copy at mem offset {off:#x} returned data where no grant is (A2/P1)"));
                        }
                    }
                    Err(MirrorError::Fault { copied, .. }) => {
                        self.sh.count_sigbus(Op::TouchCopy);
                        if copied > 0 && must_fault {
                            self.fail(format_args!("mirror copy at mem offset {off:#x} copied {copied} bytes where no grant is (A2/P1)"));
                        }
                    }
                    Err(e) => self.fail(format_args!("mirror copy: {e}")),
                }
            }
        }
    }

    // ----- pread / pwrite -----

    /// A destination buffer for `n` bytes the kernel writes: the sandbox
    /// (possibly running into the guard), a write-safe mirror, or a bad
    /// pointer; with the most bytes the caller may ask to be written there
    /// (a mirror is followed by other mappings of ours: stay inside it).
    fn dest(&mut self, n: usize) -> (usize, &'static str, usize) {
        let p = self.p();
        let any = usize::MAX;
        match self.rng.below(12) {
            0 => (0, "NULL", any),
            1 => (
                gen::KERNEL_ADDRS[self.rng.index(gen::KERNEL_ADDRS.len())] as usize,
                "kernel",
                any,
            ),
            2 => (self.ro_page, "read-only", any),
            3 => (self.sb.guard, "guard", any),
            4 => (self.sb.guard - (n.min(p) / 2).max(1), "into the guard", any),
            5 => {
                // A mirror that is safe to write through.
                let ok: Vec<usize> = (0..self.mir.len())
                    .filter(|&i| self.ctx[self.mir[i].ci].write_ok())
                    .collect();
                if ok.is_empty() {
                    (self.sb.base, "sandbox", any)
                } else {
                    let m = self.mir[*self.rng.pick(&ok)];
                    let at = m.ptr + 8 * self.rng.index(m.len / 8);
                    (at, "mirror", m.ptr + m.len - at)
                }
            }
            _ => (self.sb.base + self.rng.index(64), "sandbox", any),
        }
    }

    fn mem_fd_and_ctx(&mut self) -> (RawFd, Option<usize>) {
        let fd = self.pick_fd(b'm');
        (fd, self.ctx_of_mem(fd))
    }

    fn pick_offset(&mut self, ci: Option<usize>) -> i64 {
        let p = self.p() as u64;
        if let Some(i) = ci {
            let c = &self.ctx[i];
            if c.rpm && self.rng.chance(600) {
                let &(s, n, _) = self.rng.pick(&self.arena.parts);
                return (s as u64 + self.rng.below(n as u64 * p)) as i64;
            }
            if !c.grants.is_empty() && self.rng.chance(700) {
                let g = c.grants[self.rng.index(c.grants.len())];
                let x = g.off + self.rng.below(g.size + 2 * p);
                return x.saturating_sub(p) as i64;
            }
        }
        gen::offset(&mut self.rng, self.ts)
    }

    fn op_pread(&mut self) {
        let (fd, ci) = self.mem_fd_and_ctx();
        let off = self.pick_offset(ci);
        let n = gen::count(&mut self.rng);
        let (buf, what, cap) = self.dest(n);
        let n = n.min(cap);
        // A sandbox destination holds at most what is left of it before the
        // guard; past that the kernel faults (EFAULT / short count).
        self.note(format!(
            "pread fd {fd} off {off:#x} count {n:#x} buf {what}"
        ));
        // SAFETY: the kernel writes at most `n` bytes at `buf`: the
        // sandbox (then the guard stops it), a write-safe mirror, or an
        // address it cannot write (EFAULT).
        let r = ret(unsafe { libc::pread(fd, buf as *mut _, n, off) } as i64);
        self.sh.count(Op::Pread, unit(r));
        let Some(i) = ci else {
            return;
        };
        let c = &self.ctx[i];
        if !c.sup || c.rpm || what == "mirror" {
            return;
        }
        match r {
            Ok(got) if got > 0 => {
                let cov = if off < 0 { 0 } else { c.covered(off as u64) };
                if got as u64 > cov {
                    self.fail(format_args!("pread returned {got} bytes at {off:#x}, but grants cover only {cov} (P1/A3)"));
                }
                if got as usize > n {
                    self.fail(format_args!("pread returned {got} > count {n}"));
                }
            }
            Ok(_) => {}
            Err(e) => {
                if off < 0 && e != Errno::INVAL {
                    self.fail(format_args!(
                        "pread at negative offset {off:#x}: {}, expected EINVAL",
                        en(e)
                    ));
                }
            }
        }
    }

    /// A source buffer for `n` bytes the kernel reads.
    fn source(&mut self, n: usize) -> (usize, &'static str) {
        match self.rng.below(10) {
            0 => (0, "NULL"),
            1 => (
                gen::KERNEL_ADDRS[self.rng.index(gen::KERNEL_ADDRS.len())] as usize,
                "kernel",
            ),
            2 => (
                self.sb.guard - (n.min(self.p()) / 2).max(1),
                "into the guard",
            ),
            3 if !self.mir.is_empty() => {
                let m = self.mir[self.rng.index(self.mir.len())];
                (m.ptr + 8 * self.rng.index(m.len / 8), "mirror")
            }
            _ => {
                let at = self.sb.base + self.rng.index(64);
                for k in 0..64 {
                    // SAFETY: inside the sandbox.
                    unsafe { ((at + 8 * k) as *mut u64).write_unaligned(self.rng.next_u64()) };
                }
                (at, "sandbox")
            }
        }
    }

    fn op_pwrite(&mut self) {
        let (fd, ci) = self.mem_fd_and_ctx();
        if let Some(i) = ci {
            if !self.ctx[i].write_ok() {
                return;
            }
        } else if self.ctx_of_ctl(fd).is_none()
            && !self.devs.iter().any(|d| d.as_raw_fd() == fd)
            && (0..RACE_FD).contains(&fd)
        {
            return; // never write into an unrelated file of ours
        }
        let off = self.pick_offset(ci);
        let n = gen::count(&mut self.rng);
        let (buf, what) = self.source(n);
        let first_kernel = what == "kernel";
        self.note(format!(
            "pwrite fd {fd} off {off:#x} count {n:#x} buf {what}"
        ));
        // SAFETY: the kernel only reads from `buf`.
        let r = ret(unsafe { libc::pwrite(fd, buf as *const _, n, off) } as i64);
        self.sh.count(Op::Pwrite, unit(r));
        let Some(i) = ci else {
            return;
        };
        if first_kernel && matches!(r, Ok(k) if k > 0) {
            self.fail(format_args!(
                "pwrite from a kernel address wrote {r:?} bytes (P3)"
            ));
        }
        let c = &self.ctx[i];
        if !c.sup || c.rpm {
            return;
        }
        let g = if off >= 0 {
            c.grant_at(off as u64)
        } else {
            None
        };
        match r {
            Ok(got) if got > 0 => {
                if !g.is_some_and(|g| g.rw) {
                    self.fail(format_args!("pwrite of {got} bytes at {off:#x} succeeded without a read-write grant there (A3/P1)"));
                }
                let cov = c.covered(off as u64);
                if got as u64 > cov {
                    self.fail(format_args!(
                        "pwrite wrote {got} bytes at {off:#x}, grants cover {cov}"
                    ));
                }
            }
            Ok(_) => {}
            Err(e) => {
                if off < 0 && e != Errno::INVAL {
                    self.fail(format_args!(
                        "pwrite at negative offset: {}, expected EINVAL",
                        en(e)
                    ));
                }
                // Only where the kernel gets as far as the grant: a count
                // the buffer's address range can hold (else EFAULT first).
                if n > 0
                    && n <= 1 << 20
                    && what == "sandbox"
                    && matches!(g, Some(g) if !g.rw)
                    && e != Errno::ACCESS
                    && e != Errno::SRCH
                    && e != Errno::IO
                {
                    self.fail(format_args!(
                        "pwrite into a read-only grant: {}, expected EACCES (A3)",
                        en(e)
                    ));
                }
            }
        }
    }

    fn op_preadv2(&mut self) {
        let (fd, ci) = self.mem_fd_and_ctx();
        let write = self.rng.chance(400) && ci.is_some_and(|i| self.ctx[i].write_ok());
        let off = if self.rng.chance(100) {
            -1
        } else {
            self.pick_offset(ci)
        };
        let nv = 1 + self.rng.index(4);
        let mut iov = Vec::new();
        for _ in 0..nv {
            let n = gen::count(&mut self.rng).min(1 << 20);
            let (b, n) = if write {
                (self.source(n).0, n)
            } else {
                let (b, _, cap) = self.dest(n);
                (b, n.min(cap))
            };
            iov.push(libc::iovec {
                iov_base: b as *mut _,
                iov_len: n,
            });
        }
        let flags = match self.rng.below(8) {
            0 => 0x1,  // RWF_HIPRI
            1 => 0x2,  // RWF_DSYNC
            2 => 0x8,  // RWF_NOWAIT
            3 => 0x10, // RWF_APPEND
            4 => self.rng.next_u64() as i32,
            _ => 0,
        };
        self.note(format!(
            "{} fd {fd} off {off:#x} iovs {nv} flags {flags:#x}",
            if write { "pwritev2" } else { "preadv2" }
        ));
        // SAFETY: each iovec is the sandbox (bounded by its guard), a
        // write-safe mirror or an address the kernel cannot use.
        let r = ret(unsafe {
            if write {
                libc::pwritev2(fd, iov.as_ptr(), nv as i32, off, flags)
            } else {
                libc::preadv2(fd, iov.as_ptr(), nv as i32, off, flags)
            }
        } as i64);
        self.sh.count(Op::Preadv2, unit(r));
    }

    fn op_lseek(&mut self) {
        let (fd, ci) = self.mem_fd_and_ctx();
        let whence = *self.rng.pick(&[
            libc::SEEK_SET,
            libc::SEEK_CUR,
            libc::SEEK_END,
            libc::SEEK_DATA,
            libc::SEEK_HOLE,
            7,
        ]);
        let off = self.pick_offset(ci);
        self.note(format!(
            "lseek fd {fd} {off:#x} whence {whence} then read/write"
        ));
        // SAFETY: lseek has no memory arguments.
        let r = ret(unsafe { libc::lseek(fd, off, whence) });
        self.sh.count(Op::Lseek, unit(r));
        if ci.is_some() && whence == libc::SEEK_END && r.is_ok() {
            self.fail(format_args!("lseek(SEEK_END) on mem succeeded"));
        }
        let n = gen::count(&mut self.rng).min(1 << 20);
        let write = self.rng.chance(300) && ci.is_some_and(|i| self.ctx[i].write_ok());
        // SAFETY: as pread/pwrite.
        let r = ret(unsafe {
            if write {
                let (b, _) = self.source(n);
                libc::write(fd, b as *const _, n)
            } else {
                let (b, _, cap) = self.dest(n);
                libc::read(fd, b as *mut _, n.min(cap))
            }
        } as i64);
        self.sh.count(Op::Lseek, unit(r));
    }

    fn op_splice(&mut self) {
        let (fd, ci) = self.mem_fd_and_ctx();
        let mut off = self.pick_offset(ci);
        let n = gen::count(&mut self.rng).min(1 << 20);
        let k = self.rng.below(4);
        self.note(format!("splice kind {k} fd {fd} off {off:#x} n {n:#x}"));
        let (pr, pw) = (self.pipe.0.as_raw_fd(), self.pipe.1.as_raw_fd());
        // Never a mem fd: a dup of one over ourselves (REMOTE_PROC_MAP) would
        // write into our own memory.
        let out = self.sink.as_raw_fd();
        // SAFETY: offsets are our locals; the fds are ours (a pipe, a
        // memfd, a mem fd or a bad number).
        let r = ret(unsafe {
            match k {
                0 => libc::splice(
                    fd,
                    &mut off,
                    pw,
                    ptr::null_mut(),
                    n,
                    libc::SPLICE_F_NONBLOCK,
                ) as i64,
                1 => libc::sendfile(out, fd, &mut off, n) as i64,
                2 => libc::copy_file_range(fd, &mut off, out, ptr::null_mut(), n, 0) as i64,
                _ if ci.is_some_and(|i| self.ctx[i].write_ok()) => libc::splice(
                    pr,
                    ptr::null_mut(),
                    fd,
                    &mut off,
                    n,
                    libc::SPLICE_F_NONBLOCK,
                ) as i64,
                _ => -1,
            }
        });
        self.sh.count(Op::Splice, unit(r));
        self.drain_pipe();
    }

    fn drain_pipe(&mut self) {
        let mut b = [0u8; 4096];
        while matches!(rustix::io::read(&self.pipe.0, &mut b), Ok(n) if n > 0) {}
    }

    fn op_procmem(&mut self) {
        let Some(mi) = self.pick_mir() else {
            return;
        };
        let m = self.mir[mi];
        let at = m.ptr + 8 * self.rng.index(m.len / 8);
        let n = 1 + self.rng.index(2 * self.p());
        let room = m.ptr + m.len - at;
        let k = self.rng.below(4);
        self.note(format!(
            "proc/vm access kind {k} at mirror address {at:#x} n {n}"
        ));
        let write_ok = self.ctx[m.ci].write_ok();
        match k {
            0 | 1 => {
                let Some(pm) = self.proc_mem.as_ref().map(AsRawFd::as_raw_fd) else {
                    return;
                };
                // SAFETY: /proc/self/mem at one of our mirror addresses,
                // to or from the sandbox; writes only through write-safe
                // mirrors (A8: the write goes to T through the grant).
                let r = ret(unsafe {
                    if k == 1 && write_ok {
                        // Inside the mirror: /proc/self/mem writes on into
                        // whatever follows it (FOLL_FORCE).
                        libc::pwrite(pm, self.sb.base as *const _, n.min(room), at as i64)
                    } else {
                        libc::pread(pm, self.sb.base as *mut _, n, at as i64)
                    }
                } as i64);
                self.sh.count(Op::ProcMem, unit(r));
            }
            _ => {
                let local = libc::iovec {
                    iov_base: self.sb.base as *mut _,
                    iov_len: n,
                };
                let remote = libc::iovec {
                    iov_base: at as *mut _,
                    iov_len: if k == 3 { n.min(room) } else { n },
                };
                // SAFETY: local is the sandbox; remote is our mirror (GUP
                // refuses it: A9) and is written only if write-safe.
                let r = ret(unsafe {
                    if k == 3 && write_ok {
                        libc::process_vm_writev(libc::getpid(), &local, 1, &remote, 1, 0)
                    } else {
                        libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0)
                    }
                } as i64);
                self.sh.count(Op::VmReadv, unit(r));
            }
        }
    }

    fn op_futex(&mut self) {
        let Some(mi) = self.pick_mir() else {
            return;
        };
        let m = self.mir[mi];
        let at = m.ptr + 4 * self.rng.index(m.len / 4);
        let op = *self.rng.pick(&[
            libc::FUTEX_WAIT,
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            libc::FUTEX_WAKE,
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
        ]);
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 1000,
        };
        self.note(format!("futex op {op} at mirror {at:#x}"));
        // SAFETY: futex on our mirror address (the kernel reads it with
        // fault handling); a 1 µs timeout bounds any wait.
        let r = ret(unsafe {
            libc::syscall(
                libc::SYS_futex,
                at,
                op,
                self.rng.next_u64() as u32,
                &ts,
                0,
                0,
            )
        });
        self.sh.count(Op::Futex, unit(r));
    }

    fn op_bufsys(&mut self) {
        let Some(mi) = self.pick_mir() else {
            return;
        };
        let m = self.mir[mi];
        let at = m.ptr + 8 * self.rng.index(m.len / 8);
        // Reads may run past the mirror's end; writes stay inside it.
        let room = m.ptr + m.len - at;
        let n = (1 + self.rng.index(2 * self.p())).min(room + self.p());
        let write_ok = self.ctx[m.ci].write_ok();
        let k = self.rng.below(5);
        self.note(format!("mirror as buffer kind {k} at {at:#x} n {n}"));
        // SAFETY: in every arm, the kernel reads from the mirror (any), or
        // writes into it only when it is write-safe; faults become EFAULT.
        let r = ret(unsafe {
            match k {
                0 => libc::write(self.pipe.1.as_raw_fd(), at as *const _, n) as i64,
                1 if write_ok => {
                    libc::write(
                        self.pipe.1.as_raw_fd(),
                        self.sb.base as *const _,
                        n.min(4096),
                    );
                    libc::read(self.pipe.0.as_raw_fd(), at as *mut _, n.min(room)) as i64
                }
                2 if write_ok => libc::getrandom(at as *mut _, n.min(256).min(room), 0) as i64,
                3 => {
                    let fd = self.ctx[m.ci].mem.as_ref().map_or(-1, AsRawFd::as_raw_fd);
                    if write_ok {
                        // pread from mem into a mirror of (maybe) the same mem.
                        libc::pread(fd, at as *mut _, n.min(room), m.off as i64) as i64
                    } else {
                        libc::write(self.pipe.1.as_raw_fd(), at as *const _, n) as i64
                    }
                }
                _ => {
                    let iov = libc::iovec {
                        iov_base: at as *mut _,
                        iov_len: n,
                    };
                    libc::vmsplice(self.pipe.1.as_raw_fd(), &iov, 1, libc::SPLICE_F_NONBLOCK) as i64
                }
            }
        });
        self.sh.count(Op::BufSyscall, unit(r));
        self.drain_pipe();
    }

    fn op_poll(&mut self) {
        let fds: Vec<RawFd> = (0..1 + self.rng.index(4))
            .map(|_| match self.rng.below(3) {
                0 => self.pick_fd(b'c'),
                1 => self.pick_fd(b'd'),
                _ => self.pick_fd(b'm'),
            })
            .collect();
        self.note(format!("poll/epoll {fds:?}"));
        let mut pfds: Vec<libc::pollfd> = fds
            .iter()
            .map(|&fd| libc::pollfd {
                fd,
                events: self.rng.next_u64() as i16,
                revents: 0,
            })
            .collect();
        // SAFETY: a valid array of pollfds, timeout 0.
        let r = ret(unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 0) } as i64);
        self.sh.count(Op::Poll, unit(r));
        // SAFETY: epoll on our fds; events out into a local array.
        unsafe {
            let ep = libc::epoll_create1(libc::EPOLL_CLOEXEC);
            if ep >= 0 {
                for &fd in &fds {
                    let mut ev = libc::epoll_event {
                        events: (libc::EPOLLIN | libc::EPOLLHUP) as u32,
                        u64: fd as u64,
                    };
                    let r = ret(libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) as i64);
                    self.sh.count(Op::Poll, unit(r));
                }
                let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 8];
                libc::epoll_wait(ep, evs.as_mut_ptr(), 8, 0);
                libc::close(ep);
            }
        }
    }

    fn op_fdmisc(&mut self) {
        let fd = match self.rng.below(3) {
            0 => self.pick_fd(b'c'),
            1 => self.pick_fd(b'd'),
            _ => self.pick_fd(b'm'),
        };
        let k = self.rng.below(12);
        self.note(format!("fd misc kind {k} fd {fd}"));
        let a = self.rng.next_u64() as i64 & 0xffff_ffff;
        // SAFETY: in every arm, fd calls whose memory arguments are locals or
        // the sandbox. fchmod only on mem fds (their inode is their own;
        // ctl's is the inode every anon_inode file shares).
        let r = ret(unsafe {
            let mut st: libc::stat = core::mem::zeroed();
            match k {
                0 => libc::fstat(fd, &mut st) as i64,
                // O_NONBLOCK stays: the pipe and eventfd must never block.
                1 => libc::fcntl(
                    fd,
                    libc::F_SETFL,
                    libc::O_NONBLOCK
                        | *self
                            .rng
                            .pick(&[libc::O_APPEND, libc::O_DIRECT, libc::O_NOATIME, 0]),
                ) as i64,
                2 => libc::posix_fadvise(fd, a, a, self.rng.below(6) as i32) as i64,
                3 => libc::ftruncate(fd, a) as i64,
                // Small: a large fallocate of the memfd would OOM the guest.
                4 => libc::fallocate(fd, self.rng.below(4) as i32, a & 0xf_ffff, 1 + (a & 0xffff))
                    as i64,
                5 => libc::fsync(fd) as i64,
                6 => libc::readahead(fd, a, a as usize) as i64,
                7 => libc::flock(
                    fd,
                    *self
                        .rng
                        .pick(&[libc::LOCK_SH, libc::LOCK_EX, libc::LOCK_UN])
                        | libc::LOCK_NB,
                ) as i64,
                8 => {
                    let mut sf: libc::statfs = core::mem::zeroed();
                    libc::fstatfs(fd, &mut sf) as i64
                }
                9 if self.ctx_of_mem(fd).is_some() => libc::fchmod(fd, 0o600) as i64,
                10 => libc::syncfs(fd) as i64,
                _ => libc::fcntl(fd, libc::F_GETFL) as i64,
            }
        });
        self.sh.count(Op::FdMisc, unit(r));
    }

    fn op_close(&mut self) {
        if self.ctx.is_empty() {
            return;
        }
        let i = self.rng.index(self.ctx.len());
        let k = self.rng.below(4);
        self.note(format!("close kind {k} ctx {i}"));
        match k {
            0 => {
                self.ctx[i].ctl = None; // K2: grants stay
            }
            1 => {
                // Mirrors keep the access file alive (their VMAs hold it).
                self.ctx[i].mem = None;
            }
            2 => {
                if let Some(f) = &self.ctx[i].mem {
                    if let Ok(d) = rustix::io::dup(f) {
                        self.dups.push(d);
                    }
                }
            }
            _ => {
                // Drop the whole context (fds) and, sometimes, its mirrors.
                let c = self.ctx.swap_remove(i);
                drop(c);
                let last = self.ctx.len();
                let mut keep = Vec::new();
                for m in self.mir.drain(..) {
                    let mut m = m;
                    if m.ci == i {
                        // SAFETY: our mirror; it goes out of the bookkeeping.
                        unsafe { libc::munmap(m.ptr as *mut _, m.len) };
                        continue;
                    }
                    if m.ci == last {
                        m.ci = i; // swap_remove moved the last context here
                    }
                    keep.push(m);
                }
                self.mir = keep;
            }
        }
        self.sh.count(Op::Close, Ok(()));
    }

    // ----- processes -----

    fn op_target(&mut self) {
        let k = self.rng.below(3);
        if k == 0 && self.tg.len() < 5 {
            self.note("spawn target".into());
            let n = self.tg.len();
            self.spawn_target();
            if self.tg.len() > n && self.rng.chance(700) {
                self.open_valid(Who::Child(n));
            }
        } else if !self.tg.is_empty() {
            let i = self.rng.index(self.tg.len());
            self.note(format!("kill target {i}"));
            ssys::kill(self.tg[i].pid, libc::SIGKILL);
            self.tg[i].killed = true;
        }
        self.sh.count(Op::Target, Ok(()));
        while ssys::reap_any().is_some() {}
    }

    /// A forked child that touches mirrors with plain (unguarded) loads and
    /// stores and changes its copies of them, cycles UNMAP on inherited
    /// control fds, and dies or exits; its death by SIGBUS or SIGSEGV is
    /// expected. The worker waits for it (a hang is a failure).
    fn op_chaos(&mut self) {
        let seed = self.rng.next_u64();
        self.note(format!(
            "chaos child seed {seed:#x} ({} mirrors)",
            self.mir.len()
        ));
        // The child may UNMAP through inherited control fds: afterwards the
        // model may hold grants the kernel no longer has.
        for c in &mut self.ctx {
            c.exact = false;
        }
        let me = std::process::id() as i32;
        // SAFETY: the worker is single-threaded here.
        match unsafe { ssys::fork() } {
            Ok(Forked::Child) => {
                ssys::die_with_parent_of(me);
                self.chaos_main(seed)
            }
            Ok(Forked::Parent(pid)) => {
                if self.verbose {
                    println!("# chaos child pid {pid}");
                }
                let st = wait_timeout(pid, Duration::from_secs(30));
                match st {
                    None => {
                        let stack = std::fs::read_to_string(format!("/proc/{pid}/stack"))
                            .unwrap_or_default();
                        self.fail(format_args!(
                            "chaos child {pid} did not end in 30 s; kernel stack: {}",
                            stack.replace('\n', " | ")
                        ));
                        ssys::kill(pid, libc::SIGKILL);
                        ssys::reap(pid);
                    }
                    Some(st) => {
                        let r = if libc::WIFSIGNALED(st) {
                            match libc::WTERMSIG(st) {
                                libc::SIGBUS => Err(Errno::from_raw_os_error(libc::EFAULT)),
                                libc::SIGSEGV | libc::SIGKILL => Ok(()),
                                sig => {
                                    self.fail(format_args!("chaos child died of signal {sig}"));
                                    Ok(())
                                }
                            }
                        } else {
                            Ok(())
                        };
                        if r.is_err() {
                            self.sh.count_sigbus(Op::Chaos);
                        } else {
                            self.sh.count(Op::Chaos, Ok(()));
                        }
                    }
                }
            }
            Err(_) => {}
        }
    }

    fn chaos_main(&mut self, seed: u64) -> ! {
        ssys::default_fault_signals();
        let mut rng = Rng::new(seed);
        let end = Instant::now() + Duration::from_millis(rng.range(1, 30));
        while Instant::now() < end {
            if self.mir.is_empty() {
                break;
            }
            let mi = rng.index(self.mir.len());
            let m = self.mir[mi];
            let at = m.ptr + 8 * rng.index(m.len / 8);
            match rng.below(10) {
                0..=4 => {
                    // SAFETY: a plain load from our mirror: may raise
                    // SIGBUS/SIGSEGV, which ends this expendable child.
                    let _ = unsafe { (at as *const u64).read_volatile() };
                }
                5 | 6 if self.ctx[m.ci].write_ok() => {
                    // SAFETY: a plain store through a write-safe mirror
                    // (T is a forked target, or the worker's arenas).
                    unsafe { (at as *mut u64).write_volatile(rng.next_u64()) };
                }
                7 => {
                    // SAFETY: unmaps this child's copy of a mirror.
                    unsafe { libc::munmap(m.ptr as *mut _, m.len) };
                    self.mir.swap_remove(mi);
                }
                8 => {
                    // SAFETY: changes this child's copy of a mirror.
                    unsafe { libc::mprotect(m.ptr as *mut _, m.len, gen::prot(&mut rng)) };
                }
                _ => {
                    if let Some(ctl) = self.ctx[m.ci].ctl.as_ref() {
                        let _ = psys::unmap(
                            rustix::fd::AsFd::as_fd(ctl),
                            &psys::PidfdMemUnmap {
                                offset: (m.off & !(self.p() as u64 - 1)) as i64,
                                size: self.p() as i64,
                            },
                        );
                    }
                }
            }
            if rng.chance(20) {
                ssys::kill(std::process::id() as i32, libc::SIGKILL);
            }
        }
        exit_now(0)
    }

    /// Threads racing on fd numbers 900+ (duplicates of a forked target's
    /// fds): one closes and re-dups them, others use them (pread, pwrite,
    /// MAP/UNMAP, mmap + guarded touch + munmap, poll), one may kill the
    /// target, while this thread does the same.
    fn op_race(&mut self) {
        let cands: Vec<usize> = (0..self.ctx.len())
            .filter(|&i| {
                matches!(self.ctx[i].who, Who::Child(_))
                    && self.ctx[i].ctl.is_some()
                    && self.ctx[i].mem.is_some()
            })
            .collect();
        if cands.is_empty() {
            return;
        }
        let ci = *self.rng.pick(&cands);
        self.ctx[ci].exact = false;
        self.ctx[ci].sup = false;
        let Who::Child(ti) = self.ctx[ci].who else {
            return;
        };
        let srcs: [RawFd; RACE_SLOTS] = [
            self.ctx[ci].ctl.as_ref().map_or(-1, AsRawFd::as_raw_fd),
            self.ctx[ci].mem.as_ref().map_or(-1, AsRawFd::as_raw_fd),
            self.ctx[ci].mem.as_ref().map_or(-1, AsRawFd::as_raw_fd),
            self.devs[0].as_raw_fd(),
        ];
        let dur = Duration::from_millis(self.rng.range(5, 60));
        let kill = self.rng.chance(300).then_some(self.tg[ti].pid);
        if kill.is_some() {
            self.tg[ti].killed = true;
        }
        let seed = self.rng.next_u64();
        let parts: Vec<(u64, u64)> = self
            .rw_parts()
            .iter()
            .map(|&(s, n, _)| (s as u64, n as u64))
            .collect();
        self.note(format!(
            "race {} ms on ctx {ci} (target {ti}), kill {kill:?}",
            dur.as_millis()
        ));
        for (k, &s) in srcs.iter().enumerate() {
            // SAFETY: dup3 onto our reserved slot numbers.
            unsafe { libc::dup3(s, RACE_FD + k as RawFd, libc::O_CLOEXEC) };
        }
        let stop = AtomicBool::new(false);
        let calls = AtomicU64::new(0);
        let sh = self.sh;
        std::thread::scope(|sc| {
            sc.spawn(|| {
                let mut rng = Rng::new(mix(seed, 1));
                while !stop.load(SeqCst) {
                    let k = rng.index(RACE_SLOTS);
                    // SAFETY: close/dup3 of our reserved slot numbers only.
                    unsafe {
                        if rng.chance(500) {
                            libc::close(RACE_FD + k as RawFd);
                        } else {
                            libc::dup3(srcs[k], RACE_FD + k as RawFd, libc::O_CLOEXEC);
                        }
                    }
                    calls.fetch_add(1, SeqCst);
                    std::thread::yield_now();
                }
            });
            if let Some(pid) = kill {
                let d = dur / 2;
                sc.spawn(move || {
                    std::thread::sleep(d);
                    ssys::kill(pid, libc::SIGKILL);
                });
            }
            for t in 0..2 {
                let (stop, calls, parts) = (&stop, &calls, &parts);
                sc.spawn(move || race_user(sh, mix(seed, 10 + t), stop, calls, parts));
            }
            let end = Instant::now() + dur;
            while Instant::now() < end {
                race_once(sh, &mut Rng::new(mix(seed, calls.load(SeqCst))), &parts);
                calls.fetch_add(1, SeqCst);
            }
            stop.store(true, SeqCst);
        });
        for k in 0..RACE_SLOTS {
            // SAFETY: closes our reserved slot numbers.
            unsafe { libc::close(RACE_FD + k as RawFd) };
        }
        self.sh.count(Op::Race, Ok(()));
        self.sh.counts.add(
            Op::RaceOps as usize * crate::state::OUTCOMES.len(),
            calls.load(SeqCst),
        );
        while ssys::reap_any().is_some() {}
    }

    /// Unmaps and closes everything explicitly (the other episodes leave it
    /// to exit).
    fn teardown(&mut self) {
        self.note("teardown".into());
        for m in self.mir.drain(..) {
            // SAFETY: our mirrors.
            unsafe { libc::munmap(m.ptr as *mut _, m.len) };
        }
        self.ctx.clear();
        for t in &self.tg {
            ssys::kill(t.pid, libc::SIGKILL);
        }
        while ssys::reap_any().is_some() {}
    }
}

/// A diagnostic switch from the environment (FUZZ_NO_WRITES: never write
/// through the module; FUZZ_NO_CHILD_CTX: no fds over forked targets).
fn knob(name: &str) -> bool {
    std::env::var_os(name).is_some()
}

fn ssys_cloexec(fd: &OwnedFd) -> bool {
    rustix::io::fcntl_getfd(fd).is_ok_and(|f| f.contains(rustix::io::FdFlags::CLOEXEC))
}

fn race_user(sh: &FShared, seed: u64, stop: &AtomicBool, calls: &AtomicU64, parts: &[(u64, u64)]) {
    let mut rng = Rng::new(seed);
    while !stop.load(SeqCst) {
        race_once(sh, &mut rng, parts);
        calls.fetch_add(1, SeqCst);
    }
}

/// One call on a race slot. Everything it touches is its own (a local
/// buffer, a mapping it makes and unmaps) or a forked target's memory.
fn race_once(sh: &FShared, rng: &mut Rng, parts: &[(u64, u64)]) {
    let p = page();
    let fd = RACE_FD + rng.index(RACE_SLOTS) as RawFd;
    let &(s, n) = rng.pick(parts);
    let k = rng.below(6);
    let r: Result<(), Errno> = match k {
        0 => {
            let mut b = vec![0u8; 2 * p];
            // SAFETY: reads into our local buffer of that size.
            unit(ret(unsafe {
                libc::pread(
                    fd,
                    b.as_mut_ptr().cast(),
                    b.len(),
                    (rng.below(64) * p as u64) as i64,
                )
            } as i64))
        }
        1 if !knob("FUZZ_NO_WRITES") => {
            let b = vec![0x5au8; p];
            // SAFETY: the slot holds a forked target's fd (or nothing, or
            // the device): the write can only reach that target.
            unit(ret(unsafe {
                libc::pwrite(
                    fd,
                    b.as_ptr().cast(),
                    b.len(),
                    (rng.below(64) * p as u64) as i64,
                )
            } as i64))
        }
        2 => {
            let k = rng.below(n);
            let arg = psys::PidfdMemMap {
                // Inside one arena part: a read-write window past its end
                // would reach T's other memory (its TLS, say).
                address: s + k * p as u64,
                offset: (rng.below(64) * p as u64) as i64,
                size: p as i64 * (1 + rng.below(4.min(n - k))) as i64,
                flags: if rng.chance(500) { 1 } else { 3 },
                padding: [0; 7],
            };
            // SAFETY: MAP reads our local struct; the slot is a forked
            // target's ctl (or another of our fds: ENOTTY).
            unit(ret(
                unsafe { libc::ioctl(fd, psys::PIDFD_MEM_MAP as libc::c_ulong, &arg) } as i64,
            ))
        }
        3 => {
            let arg = psys::PidfdMemUnmap {
                offset: (rng.below(64) * p as u64) as i64,
                size: (p as u64 * (1 + rng.below(8))) as i64,
            };
            // SAFETY: UNMAP reads our local struct.
            unit(ret(
                unsafe { libc::ioctl(fd, psys::PIDFD_MEM_UNMAP as libc::c_ulong, &arg) } as i64,
            ))
        }
        4 => {
            let len = p * (1 + rng.index(8));
            // SAFETY: a new mapping at an address the kernel chooses.
            let q = unsafe {
                libc::mmap(
                    ptr::null_mut(),
                    len,
                    libc::PROT_READ,
                    libc::MAP_SHARED,
                    fd,
                    (rng.below(64) * p as u64) as i64,
                )
            };
            if q == libc::MAP_FAILED {
                Err(errno())
            } else {
                // Guarded reads: the slot may have been any of our fds, but
                // only a mem fd can be mapped shared; the touch is guarded.
                // SAFETY: our fresh mapping of `len` bytes, unmapped below
                // and not used after; ManuallyDrop leaves the unmap to us.
                let m = ManuallyDrop::new(unsafe {
                    Mirror::from_raw(
                        NonNull::new(q.cast()).unwrap(),
                        len,
                        MemOffset(0),
                        Prot::Read,
                    )
                });
                for _ in 0..4 {
                    let _ = m.load_u64(8 * rng.index(len / 8), SeqCst);
                }
                // SAFETY: our mapping from above.
                unsafe { libc::munmap(q, len) };
                Ok(())
            }
        }
        _ => {
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one local pollfd, no wait.
            unit(ret(unsafe { libc::poll(&mut pfd, 1, 0) } as i64))
        }
    };
    sh.count(Op::RaceOps, r);
}

/// Waits for child `pid` up to `t`; its wait status, or None on timeout.
pub fn wait_timeout(pid: i32, t: Duration) -> Option<i32> {
    let end = Instant::now() + t;
    loop {
        let mut st = 0;
        // SAFETY: waitpid on our child with a valid status pointer.
        let r = unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) };
        if r == pid {
            return Some(st);
        }
        if r < 0 || Instant::now() >= end {
            return if r < 0 { Some(0) } else { None };
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A forked target: idles, churns its copy of the arenas, exits, or
/// execs this binary in `--idle` mode.
fn target_main(kind: TKind, seed: u64, parts: &[(usize, usize)]) -> ! {
    let mut rng = Rng::new(seed);
    let p = page();
    match kind {
        TKind::Idle => loop {
            ssys::sleep_us(1_000_000);
        },
        TKind::Exiter => {
            ssys::sleep_us(rng.below(50_000));
            exit_now(0)
        }
        TKind::Execer => {
            ssys::sleep_us(rng.below(50_000));
            let exe = CString::new("/proc/self/exe").unwrap();
            let a0 = CString::new("pidfd-mem-fuzz").unwrap();
            // SAFETY: getppid has no arguments.
            let a1 = CString::new(format!("--idle={}", unsafe { libc::getppid() })).unwrap();
            let argv = [a0.as_ptr(), a1.as_ptr(), ptr::null()];
            // SAFETY: execv with NUL-terminated strings and a NULL-ended argv.
            unsafe { libc::execv(exe.as_ptr(), argv.as_ptr()) };
            exit_now(0)
        }
        TKind::Churn => {
            if std::env::var_os("FUZZ_DIAG_SEGV").is_some() {
                diag_segv_handler();
            }
            let rw = libc::PROT_READ | libc::PROT_WRITE;
            // Only the read-write anonymous arenas (the first and the THP
            // one) are churned; they stay read-write between operations.
            let mine: Vec<(usize, usize)> = [parts[0], parts[4]].to_vec();
            loop {
                let &(s, n) = rng.pick(&mine);
                let k = rng.index(n);
                let len = (1 + rng.index(4)).min(n - k) * p;
                let a = s + k * p;
                // SAFETY: in every arm, T's own arena pages, restored
                // read-write before any store.
                unsafe {
                    match rng.below(8) {
                        0 => {
                            libc::munmap(a as *mut _, len);
                            libc::mmap(
                                a as *mut _,
                                len,
                                rw,
                                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                                -1,
                                0,
                            );
                        }
                        1 => {
                            libc::mprotect(
                                a as *mut _,
                                len,
                                *rng.pick(&[libc::PROT_NONE, libc::PROT_READ]),
                            );
                            libc::sched_yield();
                            libc::mprotect(a as *mut _, len, rw);
                        }
                        2 => {
                            libc::madvise(
                                a as *mut _,
                                len,
                                *rng.pick(&[libc::MADV_DONTNEED, libc::MADV_FREE, 21, 20]),
                            );
                        }
                        3 => {
                            let c = libc::fork();
                            if c == 0 {
                                canary_child();
                            }
                            if c > 0 {
                                libc::waitpid(c, ptr::null_mut(), 0);
                            }
                        }
                        4 => {
                            let q = libc::mmap(
                                ptr::null_mut(),
                                len,
                                libc::PROT_NONE,
                                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                                -1,
                                0,
                            );
                            if q != libc::MAP_FAILED {
                                let r = libc::mremap(
                                    a as *mut _,
                                    len,
                                    len,
                                    libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                                    q,
                                );
                                if r != libc::MAP_FAILED {
                                    libc::mremap(
                                        q,
                                        len,
                                        len,
                                        libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                                        a as *mut libc::c_void,
                                    );
                                } else {
                                    libc::munmap(q, len);
                                }
                            }
                        }
                        _ => {
                            ((a + 8 * rng.index(len / 8)) as *mut u64)
                                .write_volatile(rng.next_u64());
                        }
                    }
                }
                if rng.chance(100) {
                    ssys::sleep_us(rng.below(1000));
                }
            }
        }
    }
}

/// Diagnostic (env FUZZ_DIAG_SEGV): on SIGSEGV print the faulting RIP, the
/// code bytes there as this process sees them, and exit 99.
fn diag_segv_handler() {
    extern "C" fn h(_sig: i32, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
        use core::fmt::Write;
        let mut b = pidfd_mem_stress::shm::FixedBuf::<512>::new();
        // SAFETY: the kernel's siginfo and ucontext for an SA_SIGINFO handler.
        unsafe {
            let uc = &*ctx.cast::<libc::ucontext_t>();
            let rip = uc.uc_mcontext.gregs[libc::REG_RIP as usize] as usize;
            let _ = write!(
                b,
                "DIAG SIGSEGV pid {} code {} addr {:#x} rip {rip:#x} bytes",
                libc::getpid(),
                (*info).si_code,
                (*info).si_addr() as usize
            );
            for i in 0..16 {
                let _ = write!(b, " {:02x}", *((rip + i) as *const u8));
            }
            let _ = writeln!(b);
            libc::write(2, b.as_bytes().as_ptr().cast(), b.as_bytes().len());
            libc::_exit(99);
        }
    }
    // SAFETY: installs a handler that only formats into a stack buffer and
    // writes to stderr.
    unsafe {
        let mut sa: libc::sigaction = core::mem::zeroed();
        sa.sa_sigaction = h as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        libc::sigaction(libc::SIGSEGV, &sa, ptr::null_mut());
    }
}

/// A fork child of a churning target: fills fresh pages with a pattern,
/// waits a moment, and checks that nobody wrote into them. A write through
/// a stale mirror PTE into a page freed by the target and reused here
/// shows up as a changed word (reported on stderr, exit 42).
fn canary_child() -> ! {
    use core::fmt::Write;
    let p = page();
    let n = 32;
    // SAFETY: a fresh private mapping of our own.
    let q = unsafe {
        libc::mmap(
            ptr::null_mut(),
            n * p,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
            -1,
            0,
        )
    };
    if q == libc::MAP_FAILED {
        exit_now(0);
    }
    // SAFETY: getpid has no arguments.
    let pat = 0xc0de_0000_0000_0000u64 | u64::from(unsafe { libc::getpid() } as u32);
    let words = n * p / 8;
    for i in 0..words {
        // SAFETY: inside our fresh mapping.
        unsafe { (q as *mut u64).add(i).write_volatile(pat ^ i as u64) };
    }
    ssys::sleep_us(2000);
    for i in 0..words {
        // SAFETY: inside our mapping.
        let v = unsafe { (q as *const u64).add(i).read_volatile() };
        if v != pat ^ i as u64 {
            let mut b = pidfd_mem_stress::shm::FixedBuf::<200>::new();
            let _ = writeln!(
                b,
                "DIAG STALE WRITE: canary page {} word {} holds {v:#018x}, expected {:#018x}",
                i * 8 / p,
                i % (p / 8),
                pat ^ i as u64
            );
            // SAFETY: write to stderr.
            unsafe { libc::write(2, b.as_bytes().as_ptr().cast(), b.as_bytes().len()) };
            exit_now(42);
        }
    }
    exit_now(0)
}
