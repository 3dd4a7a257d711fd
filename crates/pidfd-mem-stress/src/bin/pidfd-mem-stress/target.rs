//! A target process T: keeps five regions (see `layout`) and churns their
//! mappings as fast as it can, publishing each operation's generation
//! before (`started`) and after (`done`) it. Before each operation it checks
//! its own pages: its tags intact, the zero words zero, and the mapper slots
//! holding only what mappers wrote there (contract C1, C2, P3).
//!
//! Operations: rewrite, munmap + mmap, MADV_DONTNEED / FREE / REMOVE /
//! PAGEOUT / COLD / COLLAPSE, ftruncate, mprotect, mremap away and back,
//! fork (the child writes foreign values into its copy-on-write copies and
//! checks that mapper stores never reach it), KSM unmerge and merge,
//! move_pages, a memory ballast (pressure in the memory cgroup), and exit
//! (now and then in the middle of an operation).

use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::os::fd::{AsRawFd, OwnedFd};

use pidfd_mem_stress::rng::Rng;
use pidfd_mem_stress::sys::{self, exit_now, now_us, sleep_us, Forked};
use pidfd_mem_stress::{failure, page};

use crate::layout::*;

/// What the supervisor tells a target.
#[derive(Clone, Debug)]
pub struct TargetCfg {
    /// `cgroup.procs` of the memory cgroup to join, if any.
    pub cgroup_procs: Option<String>,
    /// Online NUMA nodes (1: migration is skipped).
    pub numa_nodes: u32,
    /// KSM is available.
    pub ksm: bool,
    /// MiB of ballast to allocate now and then (0: none).
    pub ballast_mib: usize,
    /// Pause after each operation: up to this many microseconds.
    pub pace_us: u64,
    /// Lifetime of one incarnation, milliseconds (random in this range).
    pub life_ms: (u64, u64),
    /// Chance per operation to exit, per mille.
    pub exit_per_mille: u64,
    /// Skip the operations that invalidate under `anon_vma->rwsem` (THP
    /// split and collapse, MADV_PAGEOUT/COLD, migration, ballast) or under
    /// a file's `i_mmap_rwsem` (MADV_REMOVE, ftruncate of the memfd),
    /// which lockdep reports against the module today (see README).
    pub lockdep_safe: bool,
}

struct Region {
    addr: usize,
    len: usize,
    pages: usize,
}

struct T<'a> {
    sh: &'a Shared,
    slot: usize,
    inc: u64,
    rng: Rng,
    cfg: TargetCfg,
    regions: Vec<Region>,
    gen: [u64; NREG],
    memfd: OwnedFd,
    children: usize,
}

const MADV_COLD: i32 = 20;
const MADV_PAGEOUT: i32 = 21;
const MADV_COLLAPSE: i32 = 25;
const MPOL_MF_MOVE: i32 = 1 << 1;

fn word_ptr(addr: usize, page_idx: usize, word: usize) -> *mut u64 {
    (addr + page_idx * page() + word * 8) as *mut u64
}

/// Stores into T's own memory.
///
/// # Safety
///
/// `p` is an aligned word of one of T's regions, mapped read-write now.
unsafe fn store(p: *mut u64, v: u64) {
    // SAFETY: caller's contract; the page is shared with mirrors, so atomic.
    unsafe { AtomicU64::from_ptr(p) }.store(v, SeqCst);
}

/// Loads from T's own memory.
///
/// # Safety
///
/// `p` is an aligned word of one of T's regions, mapped readable now.
unsafe fn load(p: *mut u64) -> u64 {
    // SAFETY: caller's contract.
    unsafe { AtomicU64::from_ptr(p) }.load(SeqCst)
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn madvise(addr: usize, len: usize, advice: i32) -> Result<(), i32> {
    // SAFETY: madvise on T's own region; no advice used here discards
    // anything T relies on without rewriting it afterwards.
    if unsafe { libc::madvise(addr as *mut _, len, advice) } == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

fn mprotect(addr: usize, len: usize, prot: i32) -> Result<(), i32> {
    // SAFETY: mprotect of T's own region; T does not touch it until it is
    // read-write again.
    if unsafe { libc::mprotect(addr as *mut _, len, prot) } == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

/// `mmap(addr, len, PROT_READ|PROT_WRITE, flags | MAP_FIXED, fd, off)`.
fn mmap_fixed(addr: usize, len: usize, flags: i32, fd: i32, off: i64) -> Result<(), i32> {
    // SAFETY: MAP_FIXED over a range of T's own region (or a hole T just
    // made there): nothing else of T lives there.
    let p = unsafe {
        libc::mmap(
            addr as *mut _,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags | libc::MAP_FIXED,
            fd,
            off,
        )
    };
    if p == libc::MAP_FAILED {
        Err(errno())
    } else if p as usize != addr {
        Err(libc::EFAULT)
    } else {
        Ok(())
    }
}

fn mmap_anywhere(len: usize, prot: i32) -> Result<usize, i32> {
    pidfd_mem_stress::sys::mmap_anon(len, prot, libc::MAP_NORESERVE).map_err(|e| e.raw_os_error())
}

fn munmap(addr: usize, len: usize) {
    // SAFETY: unmaps a range of T's own regions or scratch space.
    unsafe { libc::munmap(addr as *mut _, len) };
}

fn mremap_fixed(from: usize, len: usize, to: usize) -> Result<(), i32> {
    // SAFETY: moves T's own region onto T's own scratch reservation (or
    // back into the hole it left).
    let p = unsafe {
        libc::mremap(
            from as *mut _,
            len,
            len,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            to as *mut libc::c_void,
        )
    };
    if p == libc::MAP_FAILED {
        Err(errno())
    } else {
        Ok(())
    }
}

/// Runs target `slot`, incarnation `inc`, until the run stops or it decides
/// to exit. Never returns.
pub fn run(sh: &Shared, slot: usize, inc: u64, seed: u64, cfg: TargetCfg) -> ! {
    sys::die_with_parent();
    if let Some(p) = &cfg.cgroup_procs {
        // Best effort: pressure is a bonus, not a requirement.
        let _ = sys::write_file(p, "0");
    }
    let mut t = match T::new(sh, slot, inc, seed, cfg) {
        Ok(t) => t,
        Err(e) => {
            failure!(sh.fails[F_PROCS], "T{slot}/{inc}: setup: {e}");
            exit_now(2);
        }
    };
    t.main_loop()
}

impl<'a> T<'a> {
    fn new(
        sh: &'a Shared,
        slot: usize,
        inc: u64,
        seed: u64,
        cfg: TargetCfg,
    ) -> Result<Self, String> {
        let p = page();
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        let memfd = rustix::fs::memfd_create("pidfd-mem-stress", rustix::fs::MemfdFlags::CLOEXEC)
            .map_err(|e| format!("memfd_create: {e}"))?;
        let mut regions = Vec::new();
        for (r, &pages) in REGION_PAGES.iter().enumerate() {
            let len = pages * p;
            let addr = match r {
                R_SHMEM => {
                    rustix::fs::ftruncate(&memfd, len as u64)
                        .map_err(|e| format!("ftruncate: {e}"))?;
                    // SAFETY: a new shared mapping of our memfd.
                    let a = unsafe {
                        libc::mmap(
                            ptr::null_mut(),
                            len,
                            rw,
                            libc::MAP_SHARED,
                            memfd.as_raw_fd(),
                            0,
                        )
                    };
                    if a == libc::MAP_FAILED {
                        return Err(format!("mmap memfd: errno {}", errno()));
                    }
                    a as usize
                }
                R_THP => {
                    // 2 MiB aligned: map twice the size, trim both ends.
                    let huge = 2 << 20;
                    let big = mmap_anywhere(len + huge, rw)
                        .map_err(|e| format!("mmap thp: errno {e}"))?;
                    let a = (big + huge - 1) & !(huge - 1);
                    if a > big {
                        munmap(big, a - big);
                    }
                    let tail = big + len + huge - (a + len);
                    if tail > 0 {
                        munmap(a + len, tail);
                    }
                    if madvise(a, len, libc::MADV_HUGEPAGE).is_err() {
                        sh.inc(C::THugepageUnsupported);
                    }
                    a
                }
                _ => mmap_anywhere(len, rw).map_err(|e| format!("mmap: errno {e}"))?,
            };
            if r == R_KSM && cfg.ksm && madvise(addr, len, libc::MADV_MERGEABLE).is_err() {
                sh.inc(C::TKsmUnsupported);
            }
            regions.push(Region { addr, len, pages });
        }
        let ts = &sh.targets[slot];
        let mut t = Self {
            sh,
            slot,
            inc,
            rng: Rng::new(seed),
            cfg,
            regions,
            gen: [0; NREG],
            memfd,
            children: 0,
        };
        for r in 0..NREG {
            ts.addr[r].store(t.regions[r].addr as u64, SeqCst);
            t.gen[r] = 1;
            ts.started[r].store(1, SeqCst);
            t.write_tags(r, 1);
            ts.done[r].store(1, SeqCst);
        }
        ts.state.store(ST_ALIVE, SeqCst);
        Ok(t)
    }

    fn ts(&self) -> &TargetSlot {
        &self.sh.targets[self.slot]
    }

    fn write_tags(&self, r: usize, g: u64) {
        let reg = &self.regions[r];
        let w1 = w_tag1();
        for p in 0..reg.pages {
            let v = ttag(self.inc, r, page_field(r, p), g);
            // SAFETY: every operation leaves the whole region mapped
            // read-write before the tags are written.
            unsafe {
                store(word_ptr(reg.addr, p, W_TAG0), v);
                store(word_ptr(reg.addr, p, w1), v);
            }
        }
    }

    /// Checks region `r` before an operation: T's tags are those of the
    /// last generation, zero words are zero, mapper slots hold mapper
    /// values for this page (C1: mapper stores land in T's page, P3:
    /// nothing foreign).
    fn verify(&self, r: usize) {
        let reg = &self.regions[r];
        let g = self.gen[r];
        let w1 = w_tag1();
        let zero_words = [1usize, 2, 9, 100, 300, w1 - 1];
        for p in 0..reg.pages {
            let want = ttag(self.inc, r, page_field(r, p), g);
            for w in [W_TAG0, w1] {
                // SAFETY: the region is mapped read-write between operations.
                let v = unsafe { load(word_ptr(reg.addr, p, w)) };
                if v != want {
                    failure!(
                        self.sh.fails[F_WRITES],
                        "T{}/{}: region {} page {p} word {w} holds {v:#018x}, T wrote {want:#018x} \
                         (generation {g}): something else wrote into T's page",
                        self.slot,
                        self.inc,
                        REGION_NAMES[r]
                    );
                }
            }
            for &w in &zero_words {
                // SAFETY: as above.
                let v = unsafe { load(word_ptr(reg.addr, p, w)) };
                if v != 0 {
                    failure!(
                        self.sh.fails[F_WRITES],
                        "T{}/{}: region {} page {p} word {w} holds {v:#018x}: T never writes there",
                        self.slot,
                        self.inc,
                        REGION_NAMES[r]
                    );
                }
            }
            if r == R_WRITABLE {
                for m in 0..MAX_M {
                    for (w, torn) in [(W_SLOT + m, false), (W_PSLOT + m, true)] {
                        // SAFETY: as above.
                        let v = unsafe { load(word_ptr(reg.addr, p, w)) };
                        if v == 0 {
                            continue;
                        }
                        self.sh.inc(C::TSlotsSeen);
                        let ws = self.sh.mappers[m].wstarted.load(SeqCst);
                        let want = mtag(m, self.inc, p as u64, 0);
                        let bad = if torn {
                            (4..8).any(|i| {
                                let b = v.to_le_bytes()[i];
                                b != 0 && b != want.to_le_bytes()[i]
                            })
                        } else {
                            v >> 32 != want >> 32 || (v & 0xffff_ffff) > (ws & 0xffff_ffff)
                        };
                        if bad {
                            failure!(
                                self.sh.fails[F_WRITES],
                                "T{}/{}: writable page {p} slot word {w} holds {v:#018x}: not a \
                                 value mapper {m} wrote for this page (its last sequence {ws})",
                                self.slot,
                                self.inc
                            );
                        }
                    }
                }
            }
        }
        self.sh.add(C::TVerified, reg.pages as u64);
    }

    fn main_loop(&mut self) -> ! {
        let life = self.rng.range(self.cfg.life_ms.0, self.cfg.life_ms.1) * 1000;
        let end = now_us() + life;
        loop {
            while let Some((_, st)) = sys::reap_any() {
                self.children = self.children.saturating_sub(1);
                if st == 0 {
                    self.sh.inc(C::TForkChildOk);
                } else if !(libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGKILL) {
                    failure!(
                        self.sh.fails[F_FORK],
                        "T{}/{}: fork child ended with {}",
                        self.slot,
                        self.inc,
                        sys::describe_status(st)
                    );
                }
            }
            if self.sh.stopping() {
                exit_now(0);
            }
            let exit = now_us() > end || self.rng.chance(self.cfg.exit_per_mille);
            let thp = if self.cfg.lockdep_safe { 0 } else { 3 };
            let r = self.rng.weighted(&[4, 3, 4, thp, 1]);
            self.verify(r);
            let g = self.gen[r] + 1;
            self.gen[r] = g;
            self.ts().started[r].store(g, SeqCst);
            let mid = exit && self.rng.chance(500);
            if let Err(e) = self.operate(r) {
                failure!(
                    self.sh.fails[F_PROCS],
                    "T{}/{}: region {}: {e}",
                    self.slot,
                    self.inc,
                    REGION_NAMES[r]
                );
                exit_now(2);
            }
            if mid {
                self.sh.inc(C::TExitMidOp);
                exit_now(0);
            }
            self.write_tags(r, g);
            self.ts().done[r].store(g, SeqCst);
            self.sh.inc(C::TOps);
            if exit {
                self.sh.inc(C::TExit);
                exit_now(0);
            }
            if self.cfg.pace_us > 0 {
                sleep_us(self.rng.below(self.cfg.pace_us));
            }
        }
    }

    /// A random page range `[a, b)` of region `r` (whole region 1 in 4).
    fn subrange(&mut self, r: usize) -> (usize, usize) {
        let n = self.regions[r].pages;
        if self.rng.chance(250) {
            return (0, n);
        }
        let a = self.rng.index(n);
        let len = 1 + self.rng.index((n - a).min(16));
        (a, a + len)
    }

    /// One operation on region `r` (between `started` and `done`).
    fn operate(&mut self, r: usize) -> Result<(), String> {
        let p = page();
        let (addr, len, pages) = {
            let reg = &self.regions[r];
            (reg.addr, reg.len, reg.pages)
        };
        let sh = self.sh;
        // Weights per operation kind, by region.
        //           rewrite munmap dontneed free remove trunc pageout cold mprot mremap fork ksm collapse move ballast
        let mut w: [u32; 15] = match r {
            R_ANON => [3, 3, 3, 2, 0, 0, 2, 1, 3, 2, 2, 0, 0, 1, 1],
            R_SHMEM => [3, 3, 3, 0, 2, 1, 2, 1, 3, 2, 1, 0, 0, 0, 0],
            R_WRITABLE => [3, 3, 3, 2, 0, 0, 2, 1, 3, 2, 3, 0, 0, 1, 0],
            R_THP => [3, 3, 3, 0, 0, 0, 1, 0, 2, 2, 1, 0, 2, 1, 0],
            _ => [1, 1, 0, 0, 0, 0, 0, 0, 1, 1, 1, 3, 0, 0, 0],
        };
        if self.cfg.lockdep_safe {
            for k in [4, 5, 6, 7, 12, 13, 14] {
                w[k] = 0;
            }
        }
        let (a, b) = self.subrange(r);
        let (sa, sl) = (addr + a * p, (b - a) * p);
        let anon = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
        match self.rng.weighted(&w) {
            0 => sh.inc(C::TRewrite),
            1 => {
                munmap(sa, sl);
                if r == R_SHMEM {
                    mmap_fixed(
                        sa,
                        sl,
                        libc::MAP_SHARED,
                        self.memfd.as_raw_fd(),
                        (a * p) as i64,
                    )
                } else {
                    mmap_fixed(sa, sl, anon, -1, 0)
                }
                .map_err(|e| format!("mmap fixed after munmap: errno {e}"))?;
                if r == R_THP {
                    let _ = madvise(sa, sl, libc::MADV_HUGEPAGE);
                }
                if r == R_KSM && self.cfg.ksm {
                    let _ = madvise(sa, sl, libc::MADV_MERGEABLE);
                }
                sh.inc(C::TMunmapMmap);
            }
            2 => {
                madvise(sa, sl, libc::MADV_DONTNEED)
                    .map_err(|e| format!("MADV_DONTNEED: errno {e}"))?;
                sh.inc(C::TDontneed);
            }
            3 => {
                madvise(sa, sl, libc::MADV_FREE).map_err(|e| format!("MADV_FREE: errno {e}"))?;
                sh.inc(C::TFree);
            }
            4 => {
                madvise(sa, sl, libc::MADV_REMOVE)
                    .map_err(|e| format!("MADV_REMOVE: errno {e}"))?;
                sh.inc(C::TRemove);
            }
            5 => {
                // The pages beyond the new end vanish (mirrors: SIGBUS);
                // T does not touch them until the size is back.
                rustix::fs::ftruncate(&self.memfd, (a * p) as u64)
                    .and_then(|()| {
                        sys::yield_now();
                        rustix::fs::ftruncate(&self.memfd, len as u64)
                    })
                    .map_err(|e| format!("ftruncate: {e}"))?;
                sh.inc(C::TTruncate);
            }
            6 => match madvise(sa, sl, MADV_PAGEOUT) {
                Ok(()) => sh.inc(C::TPageout),
                Err(libc::EINVAL) => sh.inc(C::TPageoutUnsupported),
                Err(e) => return Err(format!("MADV_PAGEOUT: errno {e}")),
            },
            7 => match madvise(sa, sl, MADV_COLD) {
                Ok(()) => sh.inc(C::TCold),
                Err(libc::EINVAL) => sh.inc(C::TPageoutUnsupported),
                Err(e) => return Err(format!("MADV_COLD: errno {e}")),
            },
            8 => {
                let prot = if self.rng.chance(500) {
                    libc::PROT_NONE
                } else {
                    libc::PROT_READ
                };
                mprotect(sa, sl, prot).map_err(|e| format!("mprotect: errno {e}"))?;
                for _ in 0..self.rng.below(3) {
                    sys::yield_now();
                }
                mprotect(sa, sl, libc::PROT_READ | libc::PROT_WRITE)
                    .map_err(|e| format!("mprotect back: errno {e}"))?;
                sh.inc(C::TMprotect);
            }
            9 => {
                // Away to scratch space and back: same pages, new PTEs.
                // The range may span several VMAs (earlier operations split
                // it), which one mremap cannot move: then page by page.
                let scratch = mmap_anywhere(sl, libc::PROT_NONE)
                    .map_err(|e| format!("scratch mmap: errno {e}"))?;
                if mremap_fixed(sa, sl, scratch).is_ok() {
                    sys::yield_now();
                    mremap_fixed(scratch, sl, sa).map_err(|e| format!("mremap back: errno {e}"))?;
                } else {
                    for i in 0..b - a {
                        mremap_fixed(sa + i * p, p, scratch + i * p)
                            .map_err(|e| format!("mremap page away: errno {e}"))?;
                    }
                    sys::yield_now();
                    for i in 0..b - a {
                        mremap_fixed(scratch + i * p, p, sa + i * p)
                            .map_err(|e| format!("mremap page back: errno {e}"))?;
                    }
                }
                sh.inc(C::TMremap);
            }
            10 => {
                if self.children < 4 {
                    self.fork_child()?;
                }
            }
            11 => {
                if self.cfg.ksm {
                    let _ = madvise(addr, len, libc::MADV_UNMERGEABLE);
                    let _ = madvise(addr, len, libc::MADV_MERGEABLE);
                    sh.inc(C::TKsmRemerge);
                } else {
                    sh.inc(C::TKsmUnsupported);
                }
            }
            12 => match madvise(addr, len, MADV_COLLAPSE) {
                Ok(()) => sh.inc(C::TCollapse),
                Err(libc::EINVAL) => sh.inc(C::TCollapseUnsupported),
                Err(_) => sh.inc(C::TCollapseFailed),
            },
            13 => self.move_pages(addr, pages)?,
            _ => self.ballast()?,
        }
        Ok(())
    }

    fn move_pages(&mut self, addr: usize, pages: usize) -> Result<(), String> {
        if self.cfg.numa_nodes < 2 {
            self.sh.inc(C::TMigrateSkipped);
            return Ok(());
        }
        let node = self.rng.below(u64::from(self.cfg.numa_nodes)) as i32;
        if self.rng.chance(200) {
            // The whole process from every node to one.
            let all: u64 = (1u64 << self.cfg.numa_nodes) - 1;
            let to: u64 = 1 << node;
            // SAFETY: migrate_pages of ourselves with valid node masks of
            // 64 bits.
            let r = unsafe { libc::syscall(libc::SYS_migrate_pages, 0, 64, &all, &to) };
            if r < 0 {
                return Err(format!("migrate_pages: errno {}", errno()));
            }
            self.sh.inc(C::TMigratePages);
            return Ok(());
        }
        let addrs: Vec<*mut libc::c_void> = (0..pages)
            .map(|i| (addr + i * page()) as *mut libc::c_void)
            .collect();
        let nodes = vec![node; pages];
        let mut status = vec![0i32; pages];
        // SAFETY: move_pages of our own pages, with arrays of `pages` entries.
        let r = unsafe {
            libc::syscall(
                libc::SYS_move_pages,
                0,
                pages,
                addrs.as_ptr(),
                nodes.as_ptr(),
                status.as_mut_ptr(),
                MPOL_MF_MOVE,
            )
        };
        if r < 0 {
            return Err(format!("move_pages: errno {}", errno()));
        }
        self.sh.inc(C::TMovePages);
        let moved = status.iter().filter(|&&s| s == node).count();
        self.sh.add(C::TMovedPages, moved as u64);
        Ok(())
    }

    fn ballast(&mut self) -> Result<(), String> {
        if self.cfg.ballast_mib == 0 {
            self.sh.inc(C::TRewrite);
            return Ok(());
        }
        let len = self.cfg.ballast_mib << 20;
        let b = mmap_anywhere(len, libc::PROT_READ | libc::PROT_WRITE)
            .map_err(|e| format!("ballast mmap: errno {e}"))?;
        for i in (0..len).step_by(page()) {
            // SAFETY: our fresh private mapping.
            unsafe { ((b + i) as *mut u8).write_volatile(1) };
        }
        munmap(b, len);
        self.sh.inc(C::TBallast);
        Ok(())
    }

    /// Forks a child that keeps T's pages copy-on-write: it writes foreign
    /// values into its own copies (a mirror that shows them shows a page T
    /// does not map) and checks that its copy of the writable region never
    /// changes (a mapper store must break copy-on-write in T, C2).
    fn fork_child(&mut self) -> Result<(), String> {
        let life_us = self.rng.range(5_000, 150_000);
        let foreign_pages: Vec<(usize, usize)> = (0..4)
            .map(|_| {
                let r = *self.rng.pick(&[R_ANON, R_WRITABLE, R_THP]);
                (r, self.rng.index(REGION_PAGES[r]))
            })
            .collect();
        // SAFETY: T is single-threaded.
        match unsafe { sys::fork() }.map_err(|e| format!("fork: {e}"))? {
            Forked::Parent(_) => {
                self.children += 1;
                self.sh.inc(C::TFork);
                Ok(())
            }
            Forked::Child => {
                sys::die_with_parent();
                exit_now(self.fork_child_main(life_us, &foreign_pages))
            }
        }
    }

    fn fork_child_main(&self, life_us: u64, foreign: &[(usize, usize)]) -> i32 {
        let reg = &self.regions[R_WRITABLE];
        let w1 = w_tag1();
        let words: Vec<usize> = (W_SLOT..W_SLOT + MAX_M)
            .chain(W_PSLOT..W_PSLOT + MAX_M)
            .chain([w1])
            .collect();
        let snap = |p: usize| -> Vec<u64> {
            // SAFETY: the child's copy of the region, mapped read-write.
            words
                .iter()
                .map(|&w| unsafe { load(word_ptr(reg.addr, p, w)) })
                .collect()
        };
        let before: Vec<Vec<u64>> = (0..reg.pages).map(snap).collect();
        for &(r, p) in foreign {
            let v = ttag(self.inc, r, page_field(r, p), FOREIGN_GEN);
            // SAFETY: the child's own copy-on-write copy of T's page.
            unsafe { store(word_ptr(self.regions[r].addr, p, W_TAG0), v) };
        }
        sleep_us(life_us);
        let mut code = 0;
        for (p, old) in before.iter().enumerate() {
            let now = snap(p);
            if &now != old {
                let i = now.iter().zip(old).position(|(a, b)| a != b).unwrap_or(0);
                failure!(
                    self.sh.fails[F_FORK],
                    "T{}/{} fork child: its copy of writable page {p} word {} changed from \
                     {:#018x} to {:#018x}: a store reached the child's copy-on-write page (C2)",
                    self.slot,
                    self.inc,
                    words[i],
                    old[i],
                    now[i]
                );
                code = 1;
                break;
            }
        }
        code
    }
}
