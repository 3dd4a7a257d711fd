//! C2, C4, O3, L3, P3: copy-on-write, coherence under churn, lifetime and
//! races. The churn tests run for a bounded time (a few seconds) and check
//! every value they read against what T can have held at that moment.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pidfd_mem::{pidfd_mem, pidfd_open, Grant, MemOffset, MirrorError, Prot, RemoteAddr};
use rustix::io::Errno;
use rustix::mm::{MapFlags, ProtFlags};

use crate::harness::{Ctx, Failure, TestResult};
use crate::util::*;
use crate::{ensure, expect_eq, fail, note};

/// Reads `len` bytes at `addr` of process `pid` with process_vm_readv.
fn peer_read(pid: i32, addr: u64, buf: &mut [u8]) -> Result<(), Failure> {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut _,
        iov_len: buf.len(),
    };
    // SAFETY: one local iovec over `buf`, which outlives the call.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    ensure!(
        n == buf.len() as isize,
        "process_vm_readv({pid}) = {n}: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// C2: a store through a mirror is T's store: it breaks copy-on-write in T,
/// so T's child (forked after the page was mirrored) keeps the old bytes.
pub fn c2_mirror_store_breaks_cow_in_t() -> TestResult {
    let s = Setup::new(1)?;
    let m = s.mem.mmap(MemOffset(0), page(), Prot::ReadWrite)?;
    expect_eq!(m.read_obj::<u8>(0)?, 1, "populated read-only in the mirror");
    let child = s.t.fork()?;
    m.write_obj(0, 0xabu8)?;
    expect_eq!(
        s.t.load64(s.addr)? & 0xff,
        0xab,
        "C2: T sees the store made through the mirror"
    );
    let mut b = [0u8; 1];
    peer_read(child, s.addr, &mut b)?;
    expect_eq!(b[0], 1, "C2: T's child keeps the byte it had at fork");
    // And the other way: T's own later store is seen, the child's page not.
    s.t.store64(s.addr, 0x77)?;
    expect_eq!(m.read_obj::<u64>(0)?, 0x77, "C1 after the COW break");
    peer_read(child, s.addr, &mut b)?;
    expect_eq!(b[0], 1, "C2: the child's copy is still its own");
    Ok(())
}

/// `/proc/PID/pagemap` of one address, in words: "pfn 0x..", "none".
fn pagemap(pid: &str, addr: u64) -> String {
    let Ok(f) = std::fs::File::open(format!("/proc/{pid}/pagemap")) else {
        return "unreadable".into();
    };
    let mut b = [0u8; 8];
    match std::os::unix::fs::FileExt::read_exact_at(&f, &mut b, addr / pg() * 8) {
        Ok(()) => {
            let e = u64::from_ne_bytes(b);
            if e >> 63 == 1 {
                format!("pfn {:#x}", e & ((1 << 55) - 1))
            } else {
                "none".into()
            }
        }
        Err(e) => format!("error {e}"),
    }
}

/// The churning target of C4: a process that remaps one page again and
/// again, storing a new generation number in it each time, and publishes in
/// a shared status page the generation it is starting (`started`) and the
/// last one it finished (`done`). `C4_OPS` picks the changes (0 munmap and
/// mmap, 1 MADV_DONTNEED, 2 mprotect, 3 fork).
struct Churn {
    pid: i32,
    addr: u64,
    status: RawMap,
}

impl Churn {
    const STARTED: usize = 0;
    const DONE: usize = 8;
    const STOP: usize = 16;

    fn spawn(secs: u64) -> Result<Self, Failure> {
        let status = RawMap::anon_shared(page()).ctx("status page")?;
        let (r, w) = rustix::pipe::pipe().ctx("pipe")?;
        // SAFETY: tests run single-threaded in their own forked child.
        let pid = unsafe { libc::fork() };
        ensure!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            drop(r);
            Self::run(&status, w, secs);
        }
        drop(w);
        let mut b = [0u8; 8];
        rustix::io::read(&r, &mut b).ctx("read churn address")?;
        Ok(Self {
            pid,
            addr: u64::from_ne_bytes(b),
            status,
        })
    }

    fn run(status: &RawMap, w: rustix::fd::OwnedFd, secs: u64) -> ! {
        let p = page();
        let rw = ProtFlags::READ | ProtFlags::WRITE;
        // SAFETY: a fresh private anonymous page of this process.
        let addr =
            unsafe { rustix::mm::mmap_anonymous(core::ptr::null_mut(), p, rw, MapFlags::PRIVATE) }
                .unwrap_or_else(|_| std::process::exit(3));
        let _ = rustix::io::write(&w, &(addr as u64).to_ne_bytes());
        let end = Instant::now() + Duration::from_secs(secs);
        let mut g = 0u64;
        let ops: Vec<u64> = std::env::var("C4_OPS")
            .ok()
            .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect())
            .unwrap_or_else(|| vec![0, 1, 2, 3]);
        while Instant::now() < end && status.load(Self::STOP) == 0 {
            g += 1;
            status.store(Self::STARTED, g);
            // SAFETY: `addr` is this process's own churn page; nothing else
            // in this process uses it.
            unsafe {
                match ops[(g as usize) % ops.len()] {
                    0 => {
                        let _ = rustix::mm::munmap(addr, p);
                        let _ = rustix::mm::mmap_anonymous(
                            addr,
                            p,
                            rw,
                            MapFlags::PRIVATE | MapFlags::FIXED,
                        );
                    }
                    1 => {
                        let _ = libc::madvise(addr, p, libc::MADV_DONTNEED);
                    }
                    2 => {
                        let _ = rustix::mm::mprotect(addr, p, rustix::mm::MprotectFlags::empty());
                        let _ = rustix::mm::mprotect(
                            addr,
                            p,
                            rustix::mm::MprotectFlags::READ | rustix::mm::MprotectFlags::WRITE,
                        );
                    }
                    3 => {
                        // Copy-on-write: a child shares the page, then T
                        // writes its own copy below.
                        let c = libc::fork();
                        if c == 0 {
                            libc::_exit(0);
                        }
                        if c > 0 {
                            libc::waitpid(c, core::ptr::null_mut(), 0);
                        }
                    }
                    _ => {}
                }
                (addr.cast::<u64>()).write_volatile(g);
                (addr.cast::<u8>().add(p - 8).cast::<u64>()).write_volatile(g);
            }
            status.store(Self::DONE, g);
        }
        // SAFETY: leaving the forked child.
        unsafe { libc::_exit(0) }
    }
}

impl Drop for Churn {
    fn drop(&mut self) {
        self.status.store(Self::STOP, 1);
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(self.pid, core::ptr::null_mut(), 0) };
    }
}

/// C4: while T unmaps and remaps, zaps (MADV_DONTNEED), re-protects and
/// copy-on-writes (fork) a page as fast as it can, a mirror never shows a
/// page T no longer maps: every value read is
/// 0 (a fresh page), or a generation T had finished or was writing then.
pub fn c4_churn_never_stale() -> TestResult {
    let churn = Churn::spawn(4)?;
    let pidfd = pidfd_open(churn.pid as u32).ctx("pidfd_open")?;
    let (ctl, mem) = pidfd_mem(&pidfd, 0).ctx("pidfd_mem")?;
    ctl.map(&Grant::new(
        RemoteAddr(churn.addr),
        MemOffset(0),
        pg(),
        Prot::Read,
    ))
    .ctx("map")?;
    let m = mem.mmap(MemOffset(0), page(), Prot::Read)?;
    let (mut reads, mut faults, mut zeros, mut preads) = (0u64, 0u64, 0u64, 0u64);
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end {
        for off in [0usize, page() - 8] {
            let done = churn.status.load(Churn::DONE);
            // One aligned 8-byte load: a byte-wise copy could tear across
            // two of T's pages (the copy faults and resumes on the new one).
            let v = match m.load_u64(off, Ordering::SeqCst) {
                Ok(v) => v,
                Err(MirrorError::Fault { .. }) => {
                    faults += 1;
                    continue;
                }
                Err(e) => fail!("mirror read: {e}"),
            };
            let started = churn.status.load(Churn::STARTED);
            reads += 1;
            if v == 0 {
                zeros += 1;
            } else if v < done || v > started {
                let mine = pagemap("self", m.as_ptr() as u64);
                let theirs = pagemap(&churn.pid.to_string(), churn.addr);
                fail!(
                    "C4: mirror read {v} at +{off} after T finished generation {done} \
                     (and had started {started}): a page T no longer maps \
                     (pagemap now: mirror {mine}, T {theirs})"
                );
            }
            // The copying path must hold to the same rule.
            let mut b = [0u8; 8];
            let done = churn.status.load(Churn::DONE);
            if matches!(mem.read_at(&mut b, MemOffset(off as u64)), Ok(8)) {
                let v = u64::from_ne_bytes(b);
                let started = churn.status.load(Churn::STARTED);
                preads += 1;
                ensure!(
                    pread_value_ok(v, done, started),
                    "C4: pread {v} after T finished {done} (started {started})"
                );
            }
        }
    }
    let gens = churn.status.load(Churn::DONE);
    note!("c4: {gens} generations, {reads} mirror reads ({zeros} zero, {faults} SIGBUS), {preads} preads");
    ensure!(gens > 20, "C4: T churned only {gens} generations");
    ensure!(reads > zeros, "C4: no non-zero value was ever read");
    Ok(())
}

/// A value pread may return: 0, a generation T had finished or was writing,
/// or such a generation torn with the zeros of its fresh page (pread copies
/// byte by byte while T stores its 8 bytes at once).
fn pread_value_ok(v: u64, done: u64, started: u64) -> bool {
    if v == 0 || (v >= done && v <= started) {
        return true;
    }
    (done..=started.min(done + 4096)).any(|g| {
        (0..8).all(|i| {
            let b = (v >> (8 * i)) & 0xff;
            b == 0 || b == (g >> (8 * i)) & 0xff
        })
    })
}

/// O3: holding ctl, mem and a populated mirror does not keep T's address
/// space alive: T's exit tears it down (POLLHUP) while T is still a zombie.
pub fn o3_fds_do_not_pin_address_space() -> TestResult {
    let mut s = Setup::new(4)?;
    let m = s.mem.mmap(MemOffset(0), 4 * page(), Prot::ReadWrite)?;
    expect_eq!(m.read_obj::<u8>(3 * page())?, 4, "populated");
    s.t.exit_no_reap()?;
    ensure!(
        wait_hup(&s.mem, 10)?,
        "O3: T exited (zombie) but its address space was not torn down in 10 s"
    );
    Ok(())
}

/// L3: the module cannot be unloaded while an fd is open.
pub fn l3_unload_refused_while_in_use() -> TestResult {
    let s = Setup::new(1)?;
    let name = c"pidfd_mem";
    // SAFETY: delete_module with a NUL-terminated name and O_NONBLOCK.
    let r = unsafe { libc::syscall(libc::SYS_delete_module, name.as_ptr(), libc::O_NONBLOCK) };
    let e = std::io::Error::last_os_error().raw_os_error();
    ensure!(
        r != 0,
        "L3: the module was unloaded while fds were open (the rest of the suite will skip)"
    );
    ensure!(
        e == Some(libc::EWOULDBLOCK) || e == Some(libc::EBUSY),
        "L3: delete_module failed with {e:?}, expected EWOULDBLOCK or EBUSY"
    );
    ensure!(
        std::path::Path::new("/dev/pidfd_mem").exists(),
        "L3: /dev/pidfd_mem vanished"
    );
    drop(s);
    Ok(())
}

/// P3: UNMAP and MAP racing against faults and preads never expose anything
/// but T's bytes: each read is a SIGBUS or error, or the page's own pattern.
pub fn p3_unmap_races_faults() -> TestResult {
    const PAGES: usize = 32;
    let s = Setup::new(PAGES)?;
    let p = page();
    let m = Arc::new(s.mem.mmap(MemOffset(0), PAGES * p, Prot::Read)?);
    let stop = Arc::new(AtomicBool::new(false));
    let bad = Arc::new(AtomicU64::new(0));
    let seen = Arc::new(AtomicU64::new(0));
    let reader = {
        let (m, stop, bad, seen) = (m.clone(), stop.clone(), bad.clone(), seen.clone());
        std::thread::spawn(move || {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                i = (i * 7 + 3) % PAGES;
                if let Ok(v) = m.read_obj::<u8>(i * p + (i * 13) % p) {
                    seen.fetch_add(1, Ordering::Relaxed);
                    if v != (i + 1) as u8 {
                        bad.store(((i as u64) << 8) | u64::from(v), Ordering::Relaxed);
                    }
                }
            }
        })
    };
    let end = Instant::now() + Duration::from_secs(3);
    let mut rounds = 0u64;
    let mut k = 1usize;
    while Instant::now() < end {
        k = (k * 5 + 1) % PAGES;
        let len = 1 + k % 5;
        let off = (k.min(PAGES - len) * p) as u64;
        s.ctl.unmap(MemOffset(off), (len * p) as u64).ctx("unmap")?;
        let mut b = [0u8; 1];
        let probe = (off as usize + p / 2) as u64;
        match s.mem.read_at(&mut b, MemOffset(probe)) {
            Err(e) if e.errno() == Some(Errno::IO) => {}
            other => fail!("P3: pread in a revoked window returned {other:?}, expected EIO"),
        }
        s.ctl
            .map(&Grant::new(
                RemoteAddr(s.addr + off),
                MemOffset(off),
                (len * p) as u64,
                Prot::ReadWrite,
            ))
            .ctx("map")?;
        rounds += 1;
    }
    stop.store(true, Ordering::Relaxed);
    reader
        .join()
        .map_err(|_| Failure::Fail("reader panicked".into()))?;
    let b = bad.load(Ordering::Relaxed);
    ensure!(
        b == 0,
        "P3: page {} read {:#x} instead of its pattern",
        b >> 8,
        b & 0xff
    );
    note!(
        "p3: {rounds} unmap/map rounds, {} good reads",
        seen.load(Ordering::Relaxed)
    );
    ensure!(seen.load(Ordering::Relaxed) > 0, "P3: no read succeeded");
    Ok(())
}

/// U1, A2: an UNMAP that splits a grant leaves the rest of it granted, and a
/// fault there that raced the split must not raise SIGBUS. A reader faults
/// page 0 again and again (a fresh mirror each time) while UNMAP cuts the
/// grant that holds page 0 smaller and smaller (splitting it each time), and
/// only page 0's own reset counts as a hole.
pub fn u1_split_grant_faults_never_sigbus() -> TestResult {
    const PAGES: usize = 64;
    let s = Setup::new(PAGES)?;
    let p = page();
    // Even: page 0 granted throughout; odd: being reset (UNMAP of page 0).
    let epoch = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mem = Arc::new(s.mem);
    let reader = {
        let (mem, epoch, stop) = (mem.clone(), epoch.clone(), stop.clone());
        std::thread::spawn(move || -> Result<(u64, u64), Failure> {
            let (mut reads, mut holes) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let m = mem.mmap(MemOffset(0), p, Prot::Read)?;
                let e0 = epoch.load(Ordering::SeqCst);
                let r = m.load_u64(0, Ordering::SeqCst);
                let e1 = epoch.load(Ordering::SeqCst);
                match r {
                    Ok(v) => {
                        reads += 1;
                        ensure!(
                            v & 0xff == 1,
                            "U1: page 0 read {v:#x}, expected its pattern"
                        );
                    }
                    Err(MirrorError::Fault { .. }) if e0 % 2 == 0 && e0 == e1 => {
                        fail!(
                            "U1/A2: SIGBUS on page 0, granted throughout (an UNMAP of \
                             other pages split its grant meanwhile), after {reads} good reads"
                        )
                    }
                    Err(MirrorError::Fault { .. }) => holes += 1,
                    Err(e) => fail!("mirror load: {e}"),
                }
            }
            Ok((reads, holes))
        })
    };
    let grant = |off: usize, len: usize| {
        Grant::new(
            RemoteAddr(s.addr + (off * p) as u64),
            MemOffset((off * p) as u64),
            (len * p) as u64,
            Prot::ReadWrite,
        )
    };
    let end = Instant::now() + Duration::from_secs(2);
    let mut splits = 0u64;
    let mut run = || -> Result<(), Failure> {
        while Instant::now() < end {
            // Halve the grant holding page 0: each UNMAP splits it.
            let mut n = PAGES;
            while n > 1 {
                n /= 2;
                s.ctl
                    .unmap(MemOffset((n * p) as u64), (n * p) as u64)
                    .ctx("unmap")?;
                s.ctl.map(&grant(n, n)).ctx("map")?;
                splits += 1;
            }
            // One grant over all again: page 0 is a hole meanwhile.
            epoch.fetch_add(1, Ordering::SeqCst);
            s.ctl
                .unmap(MemOffset(0), (PAGES * p) as u64)
                .ctx("unmap all")?;
            s.ctl.map(&grant(0, PAGES)).ctx("map all")?;
            epoch.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    };
    let res = run();
    stop.store(true, Ordering::Relaxed);
    let (reads, holes) = reader
        .join()
        .map_err(|_| Failure::Fail("reader panicked".into()))??;
    res?;
    note!("u1: {splits} splits of page 0's grant, {reads} reads of page 0, {holes} during resets");
    ensure!(reads > 0, "U1: no read of page 0 succeeded");
    Ok(())
}

/// One side of [`a6_mutual_mirrors_no_deadlock`]: mirrors `peer` whole
/// (REMOTE_PROC_MAP), then for `secs` seconds reads the peer's buffer at
/// `peer_buf` through the mirror while churning its own buffer `own` (stores,
/// MADV_DONTNEED, munmap and remap, mprotect), so that each side's
/// invalidations zap the other's mirror while the other faults on its own.
/// Returns the number of mirror reads that succeeded.
fn mutual_side(peer: i32, peer_buf: u64, own: *mut u8, secs: u64) -> Result<u64, Failure> {
    let p = page();
    let pidfd = pidfd_open(peer as u32).ctx("pidfd_open(peer)")?;
    let mem = pidfd_mem::remote_proc_map(&pidfd).ctx("REMOTE_PROC_MAP(peer)")?;
    let m = mem.mmap(MemOffset(peer_buf), 16 * p, Prot::Read)?;
    let rw = ProtFlags::READ | ProtFlags::WRITE;
    let end = Instant::now() + Duration::from_secs(secs);
    let (mut ok, mut i) = (0u64, 0usize);
    while Instant::now() < end {
        i += 1;
        if m.load_u64((i % 16) * p, Ordering::SeqCst).is_ok() {
            ok += 1;
        }
        let at = (i * 7 % 16) * p;
        // SAFETY: `own` is this process's own 16-page test buffer; nothing
        // else in this process uses it.
        unsafe {
            match i % 4 {
                0 => {
                    let _ = libc::madvise(own.add(at).cast(), p, libc::MADV_DONTNEED);
                }
                1 => {
                    let _ = rustix::mm::munmap(own.add(at).cast(), p);
                    let _ = rustix::mm::mmap_anonymous(
                        own.add(at).cast(),
                        p,
                        rw,
                        MapFlags::PRIVATE | MapFlags::FIXED,
                    );
                }
                2 => {
                    let _ = rustix::mm::mprotect(
                        own.add(at).cast(),
                        p,
                        rustix::mm::MprotectFlags::READ,
                    );
                    let _ = rustix::mm::mprotect(
                        own.add(at).cast(),
                        p,
                        rustix::mm::MprotectFlags::READ | rustix::mm::MprotectFlags::WRITE,
                    );
                }
                _ => {}
            }
            own.add(at).cast::<u64>().write_volatile(i as u64);
        }
    }
    Ok(ok)
}

/// A6/nesting: two processes each mirror the other's whole address space and
/// churn their own memory while faulting on the other's: every invalidation
/// zaps a mirror whose owner is itself a target. Neither may deadlock (the
/// harness timeout catches that) nor recurse (the kernel log catches that).
pub fn a6_mutual_mirrors_no_deadlock() -> TestResult {
    let p = page();
    let alloc = || -> Result<*mut u8, Failure> {
        // SAFETY: a fresh private anonymous mapping.
        let a = unsafe {
            rustix::mm::mmap_anonymous(
                core::ptr::null_mut(),
                16 * p,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE,
            )
        }
        .ctx("mmap")?;
        Ok(a.cast())
    };
    // Both buffers exist before the fork, at the same addresses in both.
    let parent_buf = alloc()?;
    let child_buf = alloc()?;
    let parent = rustix::process::getpid().as_raw_nonzero().get();
    let (r, w) = rustix::pipe::pipe().ctx("pipe")?;
    // SAFETY: tests run single-threaded in their own forked child.
    let child = unsafe { libc::fork() };
    ensure!(child >= 0, "fork: {}", std::io::Error::last_os_error());
    if child == 0 {
        drop(r);
        let code = match mutual_side(parent, parent_buf as u64, child_buf, 3) {
            Ok(n) if n > 0 => 0,
            Ok(_) => 2,
            Err(_) => 1,
        };
        let _ = rustix::io::write(&w, &[code]);
        // SAFETY: leaving the forked child.
        unsafe { libc::_exit(code.into()) };
    }
    drop(w);
    let mine = mutual_side(child, child_buf as u64, parent_buf, 3)?;
    let mut code = [9u8];
    let _ = rustix::io::read(&r, &mut code);
    let mut st = 0;
    // SAFETY: reaping our child.
    unsafe { libc::waitpid(child, &mut st, 0) };
    note!(
        "a6 mutual: {mine} reads of the peer here; peer side status {}",
        code[0]
    );
    ensure!(mine > 0, "no read of the peer succeeded");
    expect_eq!(code[0], 0, "the peer side (0: its reads succeeded)");
    Ok(())
}

/// C2: stores and read-modify-writes (plain store, xchg, lock cmpxchg, copy)
/// into pages the mirror has only read: the read-only entry the read fault
/// installed becomes writable where it is (pfn_mkwrite runs T's write fault
/// first) and T sees every store. With one vCPU (`cargo xtask run --smp 1`)
/// TCG performs an atomic as a load then a store; dropping the entry there
/// would fault the load back read-only forever.
pub fn c2_store_after_read_fault() -> TestResult {
    use std::sync::atomic::Ordering::{Relaxed, SeqCst};
    let s = Setup::new(4)?;
    let p = page();
    let m = s.mem.mmap(MemOffset(0), 4 * p, Prot::ReadWrite)?;
    for i in 0..4usize {
        let off = i * p;
        let fill = 0x0101_0101_0101_0101u64 * (i as u64 + 1);
        expect_eq!(m.load_u64(off + 8, Relaxed)?, fill, "C2: read first");
        let val = 0xc200 + i as u64;
        match i {
            0 => m.store_u64(off, val, SeqCst)?,
            1 => expect_eq!(
                m.compare_exchange_u64(off, fill, val, SeqCst, SeqCst)?,
                Ok(fill),
                "C2: lock cmpxchg after a read"
            ),
            2 => m.write_obj(off, val)?,
            _ => m.copy_from(off, &val.to_ne_bytes())?,
        }
        expect_eq!(
            s.t.load64(s.addr + off as u64)?,
            val,
            "C2: T sees the store after the mirror's read"
        );
        expect_eq!(
            m.load_u64(off, Relaxed)?,
            val,
            "C2: the mirror reads it back"
        );
    }
    Ok(())
}

/// C2, A3: a pwrite through mem is T's write: a child T forks while the copy
/// runs keeps the bytes it had at fork (mem pins T's pages as
/// process_vm_writev does, so fork copies them for the child). T forks
/// children in a loop; each reads a word twice a moment apart; the test
/// pwrites a counter over the region meanwhile, for a few seconds.
pub fn c2_pwrite_not_in_child_forked_during_copy() -> TestResult {
    const PAGES: usize = 64;
    let p = page();
    let report = RawMap::anon_shared(p).ctx("report page")?;
    // SAFETY: a fresh private region, populated; T inherits it at the same address.
    let region = unsafe {
        rustix::mm::mmap_anonymous(
            core::ptr::null_mut(),
            PAGES * p,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::PRIVATE | MapFlags::POPULATE,
        )
    }
    .ctx("mmap region")? as usize;
    let (r, w) = rustix::pipe::pipe().ctx("pipe")?;
    // SAFETY: the test process is single-threaded; T only forks and its
    // children only read their own memory and write the shared report page.
    let t = unsafe { libc::fork() };
    if t == 0 {
        drop(r);
        let _ =
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
        let _ = rustix::io::write(&w, b"x");
        loop {
            // SAFETY: as above.
            let c = unsafe { libc::fork() };
            if c == 0 {
                let last = (region + (PAGES - 1) * p) as *const u64;
                // SAFETY: our copy of the region, mapped.
                let a = unsafe { last.read_volatile() };
                let end = Instant::now() + Duration::from_millis(2);
                while Instant::now() < end {}
                // SAFETY: as above.
                let b = unsafe { last.read_volatile() };
                if a != b {
                    report.store(0, report.load(0) + 1);
                }
                // SAFETY: leaving the child.
                unsafe { libc::_exit(0) };
            }
            // SAFETY: reaping our child.
            unsafe { libc::waitpid(c, core::ptr::null_mut(), 0) };
        }
    }
    drop(w);
    let mut b = [0u8; 1];
    rustix::io::read(&r, &mut b).ctx("T ready")?;
    let result = (|| {
        let (ctl, mem) = pidfd_mem(pidfd_open(t as u32)?, 0).ctx("OPEN T")?;
        ctl.map(&Grant::new(
            RemoteAddr(region as u64),
            MemOffset(0),
            (PAGES * p) as u64,
            Prot::ReadWrite,
        ))?;
        let mut buf = vec![0u8; PAGES * p];
        let end = Instant::now() + Duration::from_secs(3);
        let mut n = 0u64;
        while Instant::now() < end {
            n += 1;
            for chunk in buf.chunks_mut(8) {
                chunk.copy_from_slice(&n.to_ne_bytes());
            }
            mem.write_all_at(&buf, MemOffset(0)).ctx("pwrite")?;
        }
        note!("{n} pwrites of {PAGES} pages while T forked");
        Ok::<(), Failure>(())
    })();
    // SAFETY: killing and reaping T.
    unsafe {
        libc::kill(t, libc::SIGKILL);
        libc::waitpid(t, core::ptr::null_mut(), 0);
    }
    result?;
    expect_eq!(
        report.load(0),
        0,
        "C2: children of T that saw a pwrite made after their fork"
    );
    Ok(())
}
