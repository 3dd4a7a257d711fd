//! A mapper: opens a live target, grants its five regions, maps mirrors of
//! them, and for a session of a few hundred milliseconds to seconds runs
//! against T's churn:
//!
//! - two reader threads: aligned atomic loads (judged exactly) and byte
//!   copies (judged as torn) through the mirrors;
//! - a pread thread: `pread` of random windows, some running past the
//!   granted region (no byte may come from beyond it);
//! - a writer thread: stores through a read-write mirror and `pwrite`s into
//!   this mapper's slots of the writable region, read back at once (C1);
//! - the session thread: UNMAP/MAP cycles (U1, M1), LOCK (K1), mirrors moved
//!   with mremap, shrunk, split and replaced (A1), fork children that keep
//!   reading the inherited mirrors and cycling grants (A5, P3), and now and
//!   then the mapper's abrupt exit in the middle of it all.
//!
//! Every value read is judged by the rules of `layout`.

use core::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::ptr::NonNull;
use std::sync::RwLock;
use std::time::Duration;

use pidfd_mem::{
    pidfd_mem, pidfd_open, Access, Control, Error, Grant, MemOffset, Mirror, MirrorError, Prot,
    RemoteAddr,
};
use pidfd_mem_stress::rng::{mix, Rng};
use pidfd_mem_stress::sys::{self, exit_now, now_us, Forked};
use pidfd_mem_stress::{failure, page};
use rustix::io::Errno;

use crate::layout::*;

/// What the supervisor tells a mapper.
#[derive(Clone, Debug)]
pub struct MapperCfg {
    /// Targets in the run.
    pub targets: usize,
    /// Session length, milliseconds (random in this range).
    pub session_ms: (u64, u64),
    /// Chance per session to exit abruptly in its middle, per mille.
    pub exit_per_mille: u64,
}

struct MInfo {
    m: Mirror,
    r: usize,
    /// First page (in the region) the mirror shows.
    first: usize,
    pages: usize,
}

struct Sess<'a> {
    sh: &'a Shared,
    me: usize,
    ti: usize,
    inc: u64,
    addr: [u64; NREG],
    ctl: Control,
    mem: Access,
    mirrors: RwLock<Vec<MInfo>>,
    stop: AtomicBool,
    locked: AtomicBool,
}

/// Runs mapper `me` until the run stops (or it exits abruptly). Never returns.
pub fn run(sh: &Shared, me: usize, seed: u64, cfg: MapperCfg) -> ! {
    sys::die_with_parent();
    let mut rng = Rng::new(seed);
    let mut minflt = sys::self_minflt();
    let mut n = 0u64;
    loop {
        if sh.stopping() {
            exit_now(0);
        }
        let alive: Vec<usize> = (0..cfg.targets)
            .filter(|&i| sh.targets[i].state.load(SeqCst) == ST_ALIVE)
            .collect();
        if alive.is_empty() {
            sys::sleep_us(5000);
            continue;
        }
        let ti = *rng.pick(&alive);
        n += 1;
        if let Some(s) = Sess::open(sh, me, ti, &mut rng) {
            sh.inc(C::MSessions);
            s.run(mix(seed, n), &cfg);
        }
        let now = sys::self_minflt();
        sh.add(C::MMinflt, now.saturating_sub(minflt));
        minflt = now;
    }
}

fn is_errno(e: &Error, errno: Errno) -> bool {
    e.errno() == Some(errno)
}

impl<'a> Sess<'a> {
    fn open(sh: &'a Shared, me: usize, ti: usize, rng: &mut Rng) -> Option<Self> {
        let ts = &sh.targets[ti];
        let inc = ts.inc.load(SeqCst);
        let pid = ts.pid.load(SeqCst) as u32;
        if ts.state.load(SeqCst) != ST_ALIVE {
            return None;
        }
        let pidfd = pidfd_open(pid).ok();
        // T is marked dead before it is reaped: if it is still alive with
        // the same incarnation now, the pidfd names it.
        if ts.state.load(SeqCst) != ST_ALIVE || ts.inc.load(SeqCst) != inc {
            return None;
        }
        let pidfd = pidfd?;
        let (ctl, mem) = match pidfd_mem(&pidfd, 0) {
            Ok(x) => x,
            Err(e) if is_errno(&e, Errno::SRCH) => {
                sh.inc(C::MOpenEsrch);
                return None;
            }
            Err(e) => {
                failure!(sh.fails[F_PROCS], "M{me}: pidfd_mem(T{ti}/{inc}): {e}");
                return None;
            }
        };
        let mut addr = [0u64; NREG];
        for (r, a) in addr.iter_mut().enumerate() {
            *a = ts.addr[r].load(SeqCst);
        }
        let s = Sess {
            sh,
            me,
            ti,
            inc,
            addr,
            ctl,
            mem,
            mirrors: RwLock::new(Vec::new()),
            stop: AtomicBool::new(false),
            locked: AtomicBool::new(false),
        };
        for (r, &pages) in REGION_PAGES.iter().enumerate() {
            // Now and then two grants for one region.
            let cut = if rng.chance(300) {
                1 + rng.index(pages - 1)
            } else {
                pages
            };
            for (a, b) in [(0, cut), (cut, pages)] {
                if a < b && !s.map(r, a, b, s.grant_prot(r)) {
                    return None;
                }
            }
        }
        if rng.chance(50) {
            s.lock();
        }
        {
            let mut ms = s.mirrors.write().unwrap();
            for (r, &pages) in REGION_PAGES.iter().enumerate() {
                s.new_mirror(&mut ms, rng, r, 0, pages);
            }
            for _ in 0..rng.below(3) {
                let r = rng.index(NREG);
                let a = rng.index(REGION_PAGES[r]);
                let b = a + 1 + rng.index(REGION_PAGES[r] - a);
                s.new_mirror(&mut ms, rng, r, a, b);
            }
        }
        Some(s)
    }

    fn grant_prot(&self, r: usize) -> Prot {
        if r == R_WRITABLE {
            Prot::ReadWrite
        } else {
            Prot::Read
        }
    }

    fn offset(&self, r: usize, page_idx: usize) -> u64 {
        region_offset(r) + (page_idx * page()) as u64
    }

    /// MAP of region `r`'s pages `[a, b)`. False if T is gone.
    fn map(&self, r: usize, a: usize, b: usize, prot: Prot) -> bool {
        let p = page() as u64;
        let g = Grant::new(
            RemoteAddr(self.addr[r] + a as u64 * p),
            MemOffset(self.offset(r, a)),
            (b - a) as u64 * p,
            prot,
        );
        match self.ctl.map(&g) {
            Ok(()) => {
                self.sh.inc(C::MMap);
                if prot == Prot::Read && r == R_WRITABLE {
                    self.sh.inc(C::MMapRo);
                }
                true
            }
            Err(e) if is_errno(&e, Errno::EXIST) => {
                self.sh.inc(C::MMapEexist);
                true
            }
            Err(e) if is_errno(&e, Errno::PERM) => {
                self.sh.inc(C::MLockedEperm);
                self.locked.store(true, SeqCst);
                true
            }
            Err(e) if is_errno(&e, Errno::SRCH) => false,
            Err(e) => {
                failure!(
                    self.sh.fails[F_PROCS],
                    "M{}: T{}/{}: {e}",
                    self.me,
                    self.ti,
                    self.inc
                );
                false
            }
        }
    }

    fn unmap(&self, r: usize, a: usize, b: usize) {
        let len = ((b - a) * page()) as u64;
        match self.ctl.unmap(MemOffset(self.offset(r, a)), len) {
            Ok(()) => self.sh.inc(C::MUnmap),
            Err(e) if is_errno(&e, Errno::PERM) => {
                self.sh.inc(C::MLockedEperm);
                self.locked.store(true, SeqCst);
            }
            // An UNMAP that splits a grant makes new grants, which needs
            // T's address space: after T's exit it answers ESRCH (contract
            // U1 does not list it; M1 does).
            Err(e) if is_errno(&e, Errno::SRCH) => self.sh.inc(C::MUnmapEsrch),
            Err(e) => {
                failure!(
                    self.sh.fails[F_PROCS],
                    "M{}: T{}/{}: {e}",
                    self.me,
                    self.ti,
                    self.inc
                )
            }
        }
    }

    fn lock(&self) {
        match self.ctl.lock() {
            Ok(()) => {
                self.sh.inc(C::MLock);
                self.locked.store(true, SeqCst);
            }
            Err(e) => failure!(self.sh.fails[F_PROCS], "M{}: LOCK: {e}", self.me),
        }
    }

    fn new_mirror(&self, ms: &mut Vec<MInfo>, rng: &mut Rng, r: usize, a: usize, b: usize) {
        let want = if r == R_WRITABLE && rng.chance(700) {
            Prot::ReadWrite
        } else {
            Prot::Read
        };
        let off = MemOffset(self.offset(r, a));
        let len = (b - a) * page();
        let m = match self.mem.mmap(off, len, want) {
            Ok(m) => m,
            Err(e) if is_errno(&e, Errno::ACCESS) && want == Prot::ReadWrite => {
                // A read-only grant lies in the window now (A1).
                self.sh.inc(C::MMmapEacces);
                match self.mem.mmap(off, len, Prot::Read) {
                    Ok(m) => m,
                    Err(e) => {
                        failure!(self.sh.fails[F_PROCS], "M{}: mmap: {e}", self.me);
                        return;
                    }
                }
            }
            Err(e) => {
                failure!(self.sh.fails[F_PROCS], "M{}: mmap: {e}", self.me);
                return;
            }
        };
        self.sh.inc(C::MMirrors);
        ms.push(MInfo {
            m,
            r,
            first: a,
            pages: b - a,
        });
    }

    fn run(self, seed: u64, cfg: &MapperCfg) {
        let mut rng = Rng::new(seed);
        let len = rng.range(cfg.session_ms.0, cfg.session_ms.1) * 1000;
        let start = now_us();
        let deadline = start + len;
        let exit_at = rng
            .chance(cfg.exit_per_mille)
            .then(|| start + rng.below(len));
        // LOCK (K1) once in some sessions, at a random moment: later
        // UNMAP/MAP must get EPERM.
        let mut lock_at = rng.chance(250).then(|| start + rng.below(len));
        let mut children = Vec::new();
        std::thread::scope(|sc| {
            for k in 0..2 {
                let s = &self;
                sc.spawn(move || s.reader(mix(seed, 10 + k)));
            }
            sc.spawn(|| self.preader(mix(seed, 20)));
            sc.spawn(|| self.writer(mix(seed, 30)));
            let ts = &self.sh.targets[self.ti];
            while now_us() < deadline && !self.sh.stopping() {
                if ts.inc.load(SeqCst) != self.inc
                    || ts.state.load(SeqCst) != ST_ALIVE
                    || self.mem.poll_exited(Some(Duration::ZERO)).unwrap_or(true)
                {
                    self.sh.inc(C::MTargetGone);
                    break;
                }
                if exit_at.is_some_and(|t| now_us() >= t) {
                    self.sh.inc(C::MExit);
                    exit_now(0);
                }
                if lock_at.is_some_and(|t| now_us() >= t) {
                    lock_at = None;
                    self.lock();
                }
                match rng.weighted(&[40, 15, 6, 39]) {
                    0 => self.grant_cycle(&mut rng),
                    1 => self.restructure(&mut rng),
                    2 => {
                        if children.len() < 3 {
                            if let Some(pid) = self.fork_child(&mut rng) {
                                children.push(pid);
                            }
                        }
                    }
                    _ => sys::sleep_us(rng.below(2000)),
                }
            }
            self.stop.store(true, SeqCst);
        });
        for pid in children {
            let st = sys::reap(pid);
            if st != 0 && !(libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGKILL) {
                failure!(
                    self.sh.fails[F_FORK],
                    "M{} fork child: ended with {} (it touches mirrors only with guarded loads)",
                    self.me,
                    sys::describe_status(st)
                );
            }
        }
    }

    fn report_bad(
        &self,
        how: &str,
        at: At,
        v: u64,
        (b, a): (Before, After),
        why: &str,
        where_: u64,
    ) {
        failure!(
            self.sh.fails[F_READS],
            "M{} {how}: T{}/{} region {} page {} word {} = {v:#018x} ({why}); T had finished \
             generation {} and started {}; mem offset {where_:#x}",
            self.me,
            self.ti,
            self.inc,
            REGION_NAMES[at.r],
            at.page,
            at.word,
            b.done,
            a.started
        );
    }

    fn wstarted(&self, m: usize) -> u64 {
        self.sh.mappers[m].wstarted.load(SeqCst)
    }

    fn reader(&self, seed: u64) {
        let mut rng = Rng::new(seed);
        let ts = &self.sh.targets[self.ti];
        let p = page();
        let wpp = p / 8;
        let mut buf = vec![0u8; 2 * p];
        let (mut loads, mut faults, mut zeros, mut copies, mut cfaults, mut discarded) =
            (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
        while !self.stop.load(SeqCst) {
            let ms = self.mirrors.read().unwrap();
            if ms.is_empty() {
                drop(ms);
                sys::yield_now();
                continue;
            }
            let mi = &ms[rng.index(ms.len())];
            let j = rng.index(mi.pages);
            let pg = mi.first + j;
            if rng.chance(800) {
                let word = match rng.below(10) {
                    0..=3 => W_TAG0,
                    4..=6 => w_tag1(),
                    7 if mi.r == R_WRITABLE => W_SLOT + rng.index(MAX_M),
                    _ => rng.index(wpp),
                };
                let at = At {
                    inc: self.inc,
                    r: mi.r,
                    page: pg,
                    word,
                };
                let b = ts.before(mi.r);
                let res = mi.m.load_u64(j * p + word * 8, SeqCst);
                let a = ts.after(mi.r);
                if b.inc != self.inc || a.inc != self.inc {
                    discarded += 1;
                    continue;
                }
                match res {
                    Ok(v) => {
                        loads += 1;
                        if v == 0 {
                            zeros += 1;
                        }
                        if let Err(why) = judge_atomic(v, at, b, a, |m| self.wstarted(m)) {
                            let again = recheck(&mi.m, j * p + word * 8);
                            self.report_bad(
                                "atomic load",
                                at,
                                v,
                                (b, a),
                                &format!("{why}; {again}"),
                                mi.m.mem_offset().0 + (j * p + word * 8) as u64,
                            );
                        }
                    }
                    Err(MirrorError::Fault { .. }) => faults += 1,
                    Err(e) => failure!(self.sh.fails[F_READS], "M{}: mirror load: {e}", self.me),
                }
            } else {
                let left = (mi.pages - j) * p;
                let w0 = rng.index(wpp);
                let len = (8 * (1 + rng.index(2 * wpp))).min(left - w0 * 8);
                let off = j * p + w0 * 8;
                let b = ts.before(mi.r);
                let res = mi.m.copy_to(off, &mut buf[..len]);
                let a = ts.after(mi.r);
                if b.inc != self.inc || a.inc != self.inc {
                    discarded += 1;
                    continue;
                }
                let valid = match res {
                    Ok(()) => {
                        copies += 1;
                        len
                    }
                    Err(MirrorError::Fault { copied, .. }) => {
                        cfaults += 1;
                        copied
                    }
                    Err(e) => {
                        failure!(self.sh.fails[F_READS], "M{}: mirror copy: {e}", self.me);
                        0
                    }
                };
                for k in 0..valid / 8 {
                    let v = u64::from_le_bytes(buf[k * 8..k * 8 + 8].try_into().unwrap());
                    let word_abs = w0 + k;
                    let at = At {
                        inc: self.inc,
                        r: mi.r,
                        page: pg + word_abs / wpp,
                        word: word_abs % wpp,
                    };
                    if let Err(why) = judge_torn(v, at, b, a, |m| self.wstarted(m)) {
                        let again = recheck(&mi.m, off + k * 8);
                        self.report_bad(
                            "byte copy",
                            at,
                            v,
                            (b, a),
                            &format!("{why}; {again}"),
                            mi.m.mem_offset().0 + (off + k * 8) as u64,
                        );
                        break;
                    }
                }
            }
        }
        let sh = self.sh;
        sh.add(C::MLoads, loads);
        sh.add(C::MLoadFaults, faults);
        sh.add(C::MZeros, zeros);
        sh.add(C::MCopies, copies);
        sh.add(C::MCopyFaults, cfaults);
        sh.add(C::SDiscarded, discarded);
    }

    fn preader(&self, seed: u64) {
        let mut rng = Rng::new(seed);
        let ts = &self.sh.targets[self.ti];
        let p = page();
        let wpp = p / 8;
        let mut buf = vec![0u8; 9 * p];
        let (mut n_ok, mut n_short, mut n_err) = (0u64, 0u64, 0u64);
        while !self.stop.load(SeqCst) {
            let r = rng.index(NREG);
            let pages = REGION_PAGES[r];
            let a = rng.index(pages);
            let w0 = if rng.chance(500) { 0 } else { rng.index(wpp) };
            let len = match rng.below(4) {
                0 => 8,
                1 => p,
                2 => 8 * (1 + rng.index(wpp * 8)),
                // Past the end of the region's window: nothing may come
                // from beyond the grant.
                _ => (pages - a) * p - w0 * 8 + 8 * (1 + rng.index(wpp)),
            }
            .min(buf.len());
            let off = self.offset(r, a) + (w0 * 8) as u64;
            let window_end = self.offset(r, pages);
            let b = ts.before(r);
            let res = self.mem.read_at(&mut buf[..len], MemOffset(off));
            let aft = ts.after(r);
            if b.inc != self.inc || aft.inc != self.inc {
                continue;
            }
            match res {
                Ok(n) => {
                    n_ok += 1;
                    if n < len {
                        n_short += 1;
                    }
                    if n > len || off + n as u64 > window_end {
                        failure!(
                            self.sh.fails[F_READS],
                            "M{}: pread({len} at {off:#x}) returned {n} bytes, past the end of \
                             the grant at {window_end:#x} (P1/P3)",
                            self.me
                        );
                        continue;
                    }
                    for k in 0..n / 8 {
                        let v = u64::from_le_bytes(buf[k * 8..k * 8 + 8].try_into().unwrap());
                        let word_abs = w0 + k;
                        let at = At {
                            inc: self.inc,
                            r,
                            page: a + word_abs / wpp,
                            word: word_abs % wpp,
                        };
                        if let Err(why) = judge_torn(v, at, b, aft, |m| self.wstarted(m)) {
                            self.report_bad("pread", at, v, (b, aft), why, off + (k * 8) as u64);
                            break;
                        }
                    }
                }
                Err(e)
                    if [
                        Errno::IO,
                        Errno::SRCH,
                        Errno::NOMEM,
                        Errno::INTR,
                        Errno::AGAIN,
                    ]
                    .iter()
                    .any(|&x| is_errno(&e, x)) =>
                {
                    n_err += 1
                }
                Err(e) => failure!(self.sh.fails[F_READS], "M{}: {e}", self.me),
            }
        }
        self.sh.add(C::MPreads, n_ok);
        self.sh.add(C::MPreadShort, n_short);
        self.sh.add(C::MPreadErr, n_err);
    }

    fn writer(&self, seed: u64) {
        let mut rng = Rng::new(seed);
        let ts = &self.sh.targets[self.ti];
        let p = page();
        let ws = &self.sh.mappers[self.me].wstarted;
        let (mut stores, mut sfaults, mut pwrites, mut perr) = (0u64, 0u64, 0u64, 0u64);
        while !self.stop.load(SeqCst) {
            let pg = rng.index(REGION_PAGES[R_WRITABLE]);
            if rng.chance(500) {
                let ms = self.mirrors.read().unwrap();
                let Some(mi) = ms.iter().find(|mi| {
                    mi.r == R_WRITABLE
                        && mi.m.prot() == Prot::ReadWrite
                        && (mi.first..mi.first + mi.pages).contains(&pg)
                }) else {
                    drop(ms);
                    sys::yield_now();
                    continue;
                };
                let word = W_SLOT + self.me;
                let off = (pg - mi.first) * p + word * 8;
                let val = mtag(self.me, self.inc, pg as u64, ws.fetch_add(1, SeqCst) + 1);
                let b = ts.before(R_WRITABLE);
                match mi.m.store_u64(off, val, SeqCst) {
                    Ok(()) => {
                        stores += 1;
                        let back = mi.m.load_u64(off, SeqCst);
                        let a = ts.after(R_WRITABLE);
                        if let Ok(v) = back {
                            if v != val && a.started <= b.done && a.inc == self.inc {
                                failure!(
                                    self.sh.fails[F_WRITES],
                                    "M{}: stored {val:#018x} through a mirror at T{}/{} writable \
                                     page {pg} slot {word}, read back {v:#018x} with no T \
                                     operation in between (C1)",
                                    self.me,
                                    self.ti,
                                    self.inc
                                );
                            }
                        }
                    }
                    Err(MirrorError::Fault { .. }) => sfaults += 1,
                    Err(e) => failure!(self.sh.fails[F_WRITES], "M{}: mirror store: {e}", self.me),
                }
            } else {
                let word = W_PSLOT + self.me;
                let off = MemOffset(self.offset(R_WRITABLE, pg) + (word * 8) as u64);
                let val = mtag(self.me, self.inc, pg as u64, ws.fetch_add(1, SeqCst) + 1);
                let b = ts.before(R_WRITABLE);
                match self.mem.write_at(&val.to_le_bytes(), off) {
                    Ok(8) => {
                        pwrites += 1;
                        let mut back = [0u8; 8];
                        let r = self.mem.read_at(&mut back, off);
                        let a = ts.after(R_WRITABLE);
                        let v = u64::from_le_bytes(back);
                        if matches!(r, Ok(8))
                            && v != val
                            && a.started <= b.done
                            && a.inc == self.inc
                        {
                            failure!(
                                self.sh.fails[F_WRITES],
                                "M{}: pwrite {val:#018x} at T{}/{} writable page {pg} slot \
                                 {word}, pread back {v:#018x} with no T operation in between (C1)",
                                self.me,
                                self.ti,
                                self.inc
                            );
                        }
                    }
                    Ok(n) => failure!(
                        self.sh.fails[F_WRITES],
                        "M{}: pwrite of 8 aligned bytes wrote {n}",
                        self.me
                    ),
                    Err(e)
                        if [
                            Errno::IO,
                            Errno::SRCH,
                            Errno::ACCESS,
                            Errno::NOMEM,
                            Errno::INTR,
                        ]
                        .iter()
                        .any(|&x| is_errno(&e, x)) =>
                    {
                        perr += 1
                    }
                    Err(e) => failure!(self.sh.fails[F_WRITES], "M{}: {e}", self.me),
                }
            }
        }
        let sh = self.sh;
        sh.add(C::MStores, stores);
        sh.add(C::MStoreFaults, sfaults);
        sh.add(C::MPwrites, pwrites);
        sh.add(C::MPwriteErr, perr);
    }

    /// UNMAP a random window of a region, then MAP it again (read-only now
    /// and then for the writable region).
    fn grant_cycle(&self, rng: &mut Rng) {
        let r = rng.index(NREG);
        let pages = REGION_PAGES[r];
        let a = rng.index(pages);
        let b = a + 1 + rng.index((pages - a).min(32));
        self.unmap(r, a, b);
        for _ in 0..rng.below(3) {
            sys::yield_now();
        }
        let prot = if r == R_WRITABLE && rng.chance(150) {
            Prot::Read
        } else {
            self.grant_prot(r)
        };
        self.map(r, a, b, prot);
    }

    /// Changes the set of mirrors while no reader uses them: mremap move,
    /// shrink, grow (must fail, A1), split, or replace.
    fn restructure(&self, rng: &mut Rng) {
        let p = page();
        let mut ms = self.mirrors.write().unwrap();
        if ms.is_empty() {
            return;
        }
        let i = rng.index(ms.len());
        match rng.below(5) {
            0 => {
                let mi = ms.swap_remove(i);
                let (off, prot) = (self.offset(mi.r, mi.first), mi.m.prot());
                let (ptr, len) = mi.m.into_raw();
                // SAFETY: a PROT_NONE reservation at an address the kernel
                // chooses: ours, and nothing lives there.
                let res = unsafe {
                    libc::mmap(
                        core::ptr::null_mut(),
                        len,
                        libc::PROT_NONE,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                        -1,
                        0,
                    )
                };
                let mut at = ptr;
                if res != libc::MAP_FAILED {
                    // SAFETY: moves our mirror onto our own reservation; no
                    // reader holds a pointer into it (write lock).
                    let q = unsafe {
                        libc::mremap(
                            ptr.as_ptr().cast(),
                            len,
                            len,
                            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                            res,
                        )
                    };
                    if q == libc::MAP_FAILED {
                        failure!(
                            self.sh.fails[F_PROCS],
                            "M{}: mremap move of a mirror: {}",
                            self.me,
                            std::io::Error::last_os_error()
                        );
                        // SAFETY: our reservation, unused.
                        unsafe { libc::munmap(res, len) };
                    } else {
                        at = NonNull::new(q.cast()).unwrap_or(ptr);
                        self.sh.inc(C::MMremap);
                    }
                }
                // SAFETY: `at` is the mirror's mapping (moved or not), of
                // `len` bytes at mem offset `off`, owned by nobody else.
                let m = unsafe { Mirror::from_raw(at, len, MemOffset(off), prot) };
                ms.push(MInfo {
                    m,
                    r: mi.r,
                    first: mi.first,
                    pages: mi.pages,
                });
            }
            1 if ms[i].pages >= 2 => {
                let mi = ms.swap_remove(i);
                let prot = mi.m.prot();
                let (ptr, len) = mi.m.into_raw();
                // SAFETY: shrinks our own mirror in place; readers are
                // excluded by the write lock.
                let q = unsafe { libc::mremap(ptr.as_ptr().cast(), len, len - p, 0) };
                let keep = if q == libc::MAP_FAILED {
                    failure!(
                        self.sh.fails[F_PROCS],
                        "M{}: mremap shrink of a mirror: {}",
                        self.me,
                        std::io::Error::last_os_error()
                    );
                    len
                } else {
                    self.sh.inc(C::MShrink);
                    len - p
                };
                // SAFETY: the (possibly shrunk) mirror, ours.
                let m = unsafe {
                    Mirror::from_raw(ptr, keep, MemOffset(self.offset(mi.r, mi.first)), prot)
                };
                ms.push(MInfo {
                    m,
                    r: mi.r,
                    first: mi.first,
                    pages: keep / p,
                });
            }
            2 => {
                let mi = &ms[i];
                let len = mi.pages * p;
                // SAFETY: asks to grow our own mirror in place (no
                // MAYMOVE): it must fail (A1, VM_DONTEXPAND).
                let q = unsafe { libc::mremap(mi.m.as_ptr().cast(), len, len + p, 0) };
                if q == libc::MAP_FAILED {
                    self.sh.inc(C::MGrowRefused);
                } else {
                    failure!(
                        self.sh.fails[F_PROCS],
                        "M{}: mremap grew a mirror (A1 forbids it)",
                        self.me
                    );
                    // SAFETY: gives back the page it grew by.
                    unsafe { libc::munmap(mi.m.as_ptr().add(len).cast(), p) };
                }
            }
            3 if ms[i].pages >= 3 => {
                let mi = ms.swap_remove(i);
                let k = 1 + rng.index(mi.pages - 2);
                let prot = mi.m.prot();
                let (ptr, len) = mi.m.into_raw();
                // SAFETY: unmaps one page in the middle of our own mirror.
                unsafe { libc::munmap(ptr.as_ptr().add(k * p).cast(), p) };
                let off = self.offset(mi.r, mi.first);
                // SAFETY: the two pieces left, each ours.
                let (m1, m2) = unsafe {
                    (
                        Mirror::from_raw(ptr, k * p, MemOffset(off), prot),
                        Mirror::from_raw(
                            NonNull::new(ptr.as_ptr().add((k + 1) * p)).unwrap(),
                            len - (k + 1) * p,
                            MemOffset(off + ((k + 1) * p) as u64),
                            prot,
                        ),
                    )
                };
                ms.push(MInfo {
                    m: m1,
                    r: mi.r,
                    first: mi.first,
                    pages: k,
                });
                ms.push(MInfo {
                    m: m2,
                    r: mi.r,
                    first: mi.first + k + 1,
                    pages: mi.pages - k - 1,
                });
                self.sh.inc(C::MSplit);
            }
            _ => {
                if ms.len() > 3 {
                    ms.swap_remove(i);
                }
                if ms.len() < 16 {
                    let r = rng.index(NREG);
                    let a = rng.index(REGION_PAGES[r]);
                    let b = a + 1 + rng.index(REGION_PAGES[r] - a);
                    self.new_mirror(&mut ms, rng, r, a, b);
                    self.sh.inc(C::MRemap);
                }
            }
        }
    }

    /// Forks a child that reads the inherited mirrors (A5) and cycles
    /// grants through the inherited ctl for a short while. The write lock
    /// is held across the fork, so the child's copy of the mirror list is
    /// stable and no other thread of ours is inside it.
    // The write lock only reads, but excludes every reader thread across
    // the fork (a child must not inherit a lock held by another thread).
    #[allow(clippy::readonly_write_lock)]
    fn fork_child(&self, rng: &mut Rng) -> Option<i32> {
        let ms = self.mirrors.write().unwrap();
        let seed = rng.next_u64();
        // SAFETY: the child only does guarded loads, atomics, ioctls and
        // `_exit`; it takes no lock and allocates nothing.
        match unsafe { sys::fork() } {
            Ok(Forked::Parent(pid)) => {
                self.sh.inc(C::MFork);
                Some(pid)
            }
            Ok(Forked::Child) => {
                sys::die_with_parent();
                self.child_main(&ms, seed);
                exit_now(0)
            }
            Err(e) => {
                failure!(self.sh.fails[F_PROCS], "M{}: fork: {e}", self.me);
                None
            }
        }
    }

    fn child_main(&self, ms: &[MInfo], seed: u64) {
        let mut rng = Rng::new(seed);
        let ts = &self.sh.targets[self.ti];
        let p = page();
        let end = now_us() + rng.range(5_000, 100_000);
        let (mut loads, mut faults) = (0u64, 0u64);
        let locked = self.locked.load(SeqCst);
        while now_us() < end && !ms.is_empty() {
            if !locked && rng.chance(20) {
                let r = rng.index(NREG);
                let a = rng.index(REGION_PAGES[r]);
                let b = a + 1 + rng.index((REGION_PAGES[r] - a).min(8));
                let un = pidfd_mem::sys::PidfdMemUnmap {
                    offset: self.offset(r, a) as i64,
                    size: ((b - a) * p) as i64,
                };
                let _ = pidfd_mem::sys::unmap(rustix::fd::AsFd::as_fd(&self.ctl), &un);
                let mp = pidfd_mem::sys::PidfdMemMap {
                    address: self.addr[r] + (a * p) as u64,
                    offset: self.offset(r, a) as i64,
                    size: ((b - a) * p) as i64,
                    flags: self.grant_prot(r).grant_flags(),
                    padding: [0; 7],
                };
                let _ = pidfd_mem::sys::map(rustix::fd::AsFd::as_fd(&self.ctl), &mp);
            }
            let mi = &ms[rng.index(ms.len())];
            let j = rng.index(mi.pages);
            let word = if rng.chance(500) { W_TAG0 } else { w_tag1() };
            let at = At {
                inc: self.inc,
                r: mi.r,
                page: mi.first + j,
                word,
            };
            let b = ts.before(mi.r);
            let res = mi.m.load_u64(j * p + word * 8, SeqCst);
            let a = ts.after(mi.r);
            if b.inc != self.inc || a.inc != self.inc {
                break;
            }
            match res {
                Ok(v) => {
                    loads += 1;
                    if let Err(why) = judge_atomic(v, at, b, a, |m| self.wstarted(m)) {
                        failure!(
                            self.sh.fails[F_FORK],
                            "M{} fork child (A5): T{}/{} region {} page {} word {word} = \
                             {v:#018x} ({why}); T had finished {} and started {}",
                            self.me,
                            self.ti,
                            self.inc,
                            REGION_NAMES[mi.r],
                            at.page,
                            b.done,
                            a.started
                        );
                        break;
                    }
                }
                Err(_) => faults += 1,
            }
        }
        self.sh.add(C::MForkChildLoads, loads);
        self.sh.add(C::MForkChildFaults, faults);
    }
}

/// What the mirror word at byte `off` reads now, and again after a full TLB
/// flush of this process: a value that only the flush changes was a stale
/// translation; one that survives it, a stale mirror PTE.
fn recheck(m: &Mirror, off: usize) -> String {
    let show = |r: Result<u64, MirrorError>| match r {
        Ok(v) => format!("{v:#018x}"),
        Err(e) => format!("({e})"),
    };
    let now = show(m.load_u64(off & !7, SeqCst));
    let flushed = match sys::flush_own_tlb() {
        Ok(()) => show(m.load_u64(off & !7, SeqCst)),
        Err(e) => format!("no flush ({e})"),
    };
    format!("re-read {now}, after a full TLB flush {flushed}")
}
