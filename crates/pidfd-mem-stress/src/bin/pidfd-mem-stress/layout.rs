//! What every process of a stress run shares: the status of each target
//! (its regions, and per region the generation it started and the last one
//! it finished), the mappers' write sequences, counters and failure logs;
//! and the tags written into T's pages, with the rules that judge a value.
//!
//! # Page layout (in T)
//!
//! Word 0 and word 511 of every page hold T's tag `(incarnation, region,
//! page, generation)`; T rewrites them at the end of every operation on the
//! region (generation `g` is published as `started` before the operation
//! and as `done` after it). In the writable region, words `16 + m` (stores
//! through a mirror) and `64 + m` (pwrite) belong to mapper `m`, which
//! writes `(m, incarnation, page, seq)` there. Every other word is zero.
//!
//! # Judging a value (contract C1, C4)
//!
//! A reader loads `done` before and `started` after its read. A tag word
//! read in between must carry T's incarnation, the region and the page, and
//! a generation in `[done, started]`; zero only if an operation ran
//! meanwhile (`started > done`: T may have just replaced the page). Anything
//! else is a page T did not map there at that moment: stale or foreign.
//! Aligned atomic loads must match exactly; byte copies (`copy_to`,
//! `pread`) may tear, so each of their bytes must come from some allowed
//! value.

use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use pidfd_mem_stress::shm::{Counters, FailLog, SharedZeroable};

/// Most targets.
pub const MAX_T: usize = 8;
/// Most mappers (mapper slots `16 + m` and `64 + m` must stay apart).
pub const MAX_M: usize = 16;
/// Regions per target.
pub const NREG: usize = 5;

/// The region kinds (index = region number).
pub const R_ANON: usize = 0;
/// Shared memfd (shmem) pages.
pub const R_SHMEM: usize = 1;
/// Private anonymous, granted read-write: mappers write their slots here.
pub const R_WRITABLE: usize = 2;
/// A 2 MiB aligned THP region (MADV_HUGEPAGE).
pub const R_THP: usize = 3;
/// KSM-mergeable pages with identical contents.
pub const R_KSM: usize = 4;

/// Region names for reports.
pub const REGION_NAMES: [&str; NREG] = ["anon", "shmem", "writable", "thp", "ksm"];
/// Pages per region.
pub const REGION_PAGES: [usize; NREG] = [64, 32, 32, 512, 16];

/// The mem offset of region `r`'s grant: regions are 16 MiB apart (2 MiB
/// aligned, so that mirrors keep T's huge page phase).
pub fn region_offset(r: usize) -> u64 {
    (r as u64) << 24
}

/// Word index of the first tag.
pub const W_TAG0: usize = 0;
/// Word index of the second tag (the last word of the page).
pub fn w_tag1() -> usize {
    pidfd_mem_stress::page() / 8 - 1
}
/// First store slot.
pub const W_SLOT: usize = 16;
/// First pwrite slot.
pub const W_PSLOT: usize = 64;

/// The page field of KSM tags (all KSM pages are identical).
pub const KSM_PAGE: u64 = 0xfff;
/// The generation a fork child of T writes into its own copies: never a
/// generation T can have (foreign if a mirror shows it).
pub const FOREIGN_GEN: u64 = 0xffff_fff0;

/// T's tag.
pub fn ttag(inc: u64, r: usize, page: u64, g: u64) -> u64 {
    ((inc & 0xffff) << 48) | ((r as u64 & 0xf) << 44) | ((page & 0xfff) << 32) | (g & 0xffff_ffff)
}

/// The page field T writes in region `r` at page `p`.
pub fn page_field(r: usize, p: usize) -> u64 {
    if r == R_KSM {
        KSM_PAGE
    } else {
        p as u64
    }
}

/// A mapper's write tag.
pub fn mtag(m: usize, inc: u64, page: u64, seq: u64) -> u64 {
    (0xa << 60)
        | ((m as u64 & 0xf) << 56)
        | ((inc & 0xffff) << 40)
        | ((page & 0xff) << 32)
        | (seq & 0xffff_ffff)
}

/// What a word of a page holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Word {
    /// T's tag.
    Tag,
    /// Mapper `m`'s store slot.
    Slot(usize),
    /// Mapper `m`'s pwrite slot.
    PSlot(usize),
    /// Always zero.
    Zero,
}

/// The kind of word `w` in region `r`.
pub fn word_kind(r: usize, w: usize) -> Word {
    if w == W_TAG0 || w == w_tag1() {
        Word::Tag
    } else if r == R_WRITABLE && (W_SLOT..W_SLOT + MAX_M).contains(&w) {
        Word::Slot(w - W_SLOT)
    } else if r == R_WRITABLE && (W_PSLOT..W_PSLOT + MAX_M).contains(&w) {
        Word::PSlot(w - W_PSLOT)
    } else {
        Word::Zero
    }
}

/// Target slot state: being set up (0 is never used: empty).
pub const ST_STARTING: u64 = 1;
/// Regions published; mappers may open it.
pub const ST_ALIVE: u64 = 2;
/// Exited (marked before it is reaped, so its pid stays valid while alive).
pub const ST_DEAD: u64 = 3;

/// One target's status.
pub struct TargetSlot {
    /// Incarnation (never 0 mod 65536 while in use).
    pub inc: AtomicU64,
    /// Pid of this incarnation.
    pub pid: AtomicU64,
    /// `ST_*`.
    pub state: AtomicU64,
    /// Region start addresses in T.
    pub addr: [AtomicU64; NREG],
    /// Generation started, per region.
    pub started: [AtomicU64; NREG],
    /// Generation finished, per region.
    pub done: [AtomicU64; NREG],
}

/// One mapper's status.
pub struct MapperSlot {
    /// Pid of this incarnation.
    pub pid: AtomicU64,
    /// The last write sequence this mapper started (monotonic across its
    /// incarnations).
    pub wstarted: AtomicU64,
}

/// Counter indices and names.
macro_rules! counters {
    ($($name:ident = $text:literal,)*) => {
        /// Counter indices.
        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        #[derive(Clone, Copy, Debug)]
        #[repr(usize)]
        pub enum C { $($name,)* N }
        /// Counter names, by index.
        pub const COUNTER_NAMES: [&str; C::N as usize] = [$($text,)*];
    };
}

counters! {
    TOps = "t.ops",
    TRewrite = "t.rewrite",
    TMunmapMmap = "t.munmap+mmap",
    TDontneed = "t.madv_dontneed",
    TFree = "t.madv_free",
    TRemove = "t.madv_remove",
    TTruncate = "t.ftruncate",
    TPageout = "t.madv_pageout",
    TPageoutUnsupported = "t.madv_pageout.unsupported",
    TCold = "t.madv_cold",
    TMprotect = "t.mprotect",
    TMremap = "t.mremap",
    TFork = "t.fork",
    TForkChildOk = "t.fork.child_ok",
    TKsmRemerge = "t.ksm_unmerge+merge",
    TKsmUnsupported = "t.ksm.unsupported",
    THugepageUnsupported = "t.madv_hugepage.unsupported",
    TCollapse = "t.madv_collapse",
    TCollapseFailed = "t.madv_collapse.failed",
    TCollapseUnsupported = "t.madv_collapse.einval",
    TMovePages = "t.move_pages",
    TMovedPages = "t.move_pages.moved",
    TMigrateSkipped = "t.migrate.skipped_one_node",
    TMigratePages = "t.migrate_pages",
    TBallast = "t.ballast",
    TExit = "t.exit",
    TExitMidOp = "t.exit_mid_op",
    TKilled = "t.killed_by_supervisor",
    TSpawn = "t.spawn",
    TVerified = "t.pages_verified",
    TSlotsSeen = "t.mapper_slots_seen",
    MSessions = "m.sessions",
    MOpenEsrch = "m.open.target_gone",
    MMirrors = "m.mirrors",
    MLoads = "m.atomic_loads",
    MLoadFaults = "m.atomic_loads.sigbus",
    MZeros = "m.atomic_loads.zero",
    MCopies = "m.copies",
    MCopyFaults = "m.copies.sigbus",
    MPreads = "m.preads",
    MPreadShort = "m.preads.short",
    MPreadErr = "m.preads.error",
    MStores = "m.stores",
    MStoreFaults = "m.stores.sigbus",
    MPwrites = "m.pwrites",
    MPwriteErr = "m.pwrites.error",
    MUnmap = "m.unmap",
    MUnmapEsrch = "m.unmap.esrch_target_gone",
    MMap = "m.map",
    MMapEexist = "m.map.eexist",
    MMapRo = "m.map.read_only",
    MLock = "m.lock",
    MLockedEperm = "m.locked.eperm",
    MMremap = "m.mirror.mremap_move",
    MShrink = "m.mirror.mremap_shrink",
    MGrowRefused = "m.mirror.mremap_grow_refused",
    MSplit = "m.mirror.split",
    MRemap = "m.mirror.remap",
    MMmapEacces = "m.mirror.mmap_rw_over_ro.eacces",
    MFork = "m.fork",
    MForkChildLoads = "m.fork.child_loads",
    MForkChildFaults = "m.fork.child_sigbus",
    MExit = "m.exit_mid_session",
    MSpawn = "m.spawn",
    MTargetGone = "m.target_gone_mid_session",
    MMinflt = "m.minflt",
    SCompact = "s.compact_memory",
    SReclaim = "s.memory_reclaim",
    SUnload = "s.unload_refused",
    SDiscarded = "m.reads_discarded_target_changed",
}

/// Failure categories (one KTAP result each).
pub const F_READS: usize = 0;
/// Mapper writes and T's checks of its own pages.
pub const F_WRITES: usize = 1;
/// Fork children (C2, A5).
pub const F_FORK: usize = 2;
/// Module unload mid-run (L3).
pub const F_UNLOAD: usize = 3;
/// Processes that died unexpectedly, setup errors, hangs.
pub const F_PROCS: usize = 4;
/// Number of categories.
pub const NF: usize = 5;
/// KTAP names of the categories.
pub const F_NAMES: [&str; NF] = [
    "c4_stress_reads_never_stale",
    "c1_stress_writes_land_in_t",
    "c2_stress_fork_children",
    "l3_stress_unload_refused",
    "p3_stress_processes",
];

/// Everything shared.
pub struct Shared {
    /// Set to stop the run.
    pub stop: AtomicU64,
    /// Targets.
    pub targets: [TargetSlot; MAX_T],
    /// Mappers.
    pub mappers: [MapperSlot; MAX_M],
    /// Counters.
    pub counters: Counters<{ C::N as usize }>,
    /// Failure logs, by category.
    pub fails: [FailLog; NF],
}

// SAFETY: only atomics (and arrays and structs of them).
unsafe impl SharedZeroable for TargetSlot {}
// SAFETY: as above.
unsafe impl SharedZeroable for MapperSlot {}
// SAFETY: as above.
unsafe impl SharedZeroable for Shared {}

impl Shared {
    /// Adds 1 to a counter.
    pub fn inc(&self, c: C) {
        self.counters.inc(c as usize);
    }

    /// Adds `n` to a counter.
    pub fn add(&self, c: C, n: u64) {
        self.counters.add(c as usize, n);
    }

    /// Whether the run is stopping.
    pub fn stopping(&self) -> bool {
        self.stop.load(SeqCst) != 0
    }

    /// The number of failures in all categories.
    pub fn failures(&self) -> u64 {
        self.fails.iter().map(FailLog::count).sum()
    }
}

/// What a reader loads before its read.
#[derive(Clone, Copy, Debug)]
pub struct Before {
    /// T's incarnation.
    pub inc: u64,
    /// `done` of the region.
    pub done: u64,
}

/// What a reader loads after its read.
#[derive(Clone, Copy, Debug)]
pub struct After {
    /// `started` of the region.
    pub started: u64,
    /// T's incarnation (the read is discarded if it changed).
    pub inc: u64,
}

impl TargetSlot {
    /// Loads before a read of region `r`.
    pub fn before(&self, r: usize) -> Before {
        let inc = self.inc.load(SeqCst);
        Before {
            inc,
            done: self.done[r].load(SeqCst),
        }
    }

    /// Loads after a read of region `r`.
    pub fn after(&self, r: usize) -> After {
        let started = self.started[r].load(SeqCst);
        After {
            started,
            inc: self.inc.load(SeqCst),
        }
    }
}

/// Where a value was read, for messages and for the rules.
#[derive(Clone, Copy, Debug)]
pub struct At {
    /// T's incarnation (the session's).
    pub inc: u64,
    /// Region.
    pub r: usize,
    /// Page in the region.
    pub page: usize,
    /// Word in the page.
    pub word: usize,
}

/// Judges a value read whole (aligned atomic load). `wstarted` gives the
/// latest write sequence mapper `m` started, loaded after the read.
/// Returns `Err(reason)` for a value T cannot have held there.
pub fn judge_atomic(
    v: u64,
    at: At,
    b: Before,
    a: After,
    wstarted: impl Fn(usize) -> u64,
) -> Result<(), &'static str> {
    match word_kind(at.r, at.word) {
        Word::Tag => {
            if v == 0 {
                return if a.started > b.done {
                    Ok(())
                } else {
                    Err("zero where T's tag must be (no operation ran meanwhile)")
                };
            }
            let want = ttag(at.inc, at.r, page_field(at.r, at.page), 0);
            if v >> 32 != want >> 32 {
                return Err("foreign tag (another incarnation, region or page)");
            }
            let g = v & 0xffff_ffff;
            if g < b.done {
                return Err("stale generation (older than T had finished)");
            }
            if g > a.started {
                return Err(
                    "generation T never wrote there (newer than started, or a fork child's)",
                );
            }
            Ok(())
        }
        Word::Slot(m) => judge_slot(v, at, m, wstarted),
        // pwrite may store byte by byte: its slots are judged as torn.
        Word::PSlot(_) => judge_torn(v, at, b, a, wstarted),
        Word::Zero => {
            if v == 0 {
                Ok(())
            } else {
                Err("non-zero word where T never writes")
            }
        }
    }
}

fn judge_slot(
    v: u64,
    at: At,
    m: usize,
    wstarted: impl Fn(usize) -> u64,
) -> Result<(), &'static str> {
    if v == 0 {
        return Ok(());
    }
    let want = mtag(m, at.inc, at.page as u64, 0);
    if v >> 32 != want >> 32 {
        return Err("foreign value in a mapper slot (other mapper, incarnation or page)");
    }
    if v & 0xffff_ffff > wstarted(m) & 0xffff_ffff {
        return Err("mapper slot sequence never written yet");
    }
    Ok(())
}

/// Judges a value that a byte copy may have torn (`copy_to`, `pread`): each
/// byte must come from some value allowed there.
pub fn judge_torn(
    v: u64,
    at: At,
    b: Before,
    a: After,
    _wstarted: impl Fn(usize) -> u64,
) -> Result<(), &'static str> {
    let bytes = v.to_le_bytes();
    match word_kind(at.r, at.word) {
        Word::Tag => {
            let zero_ok = a.started > b.done;
            let want = ttag(at.inc, at.r, page_field(at.r, at.page), 0).to_le_bytes();
            for i in 4..8 {
                if bytes[i] != want[i] && !(zero_ok && bytes[i] == 0) {
                    return Err("torn tag with foreign identity bytes");
                }
            }
            if a.started < b.done {
                return Err("started < done (status torn?)");
            }
            if a.started - b.done > 4096 {
                return Ok(()); // too wide to judge the generation bytes
            }
            for (i, &byte) in bytes.iter().enumerate().take(4) {
                let ok = (zero_ok && byte == 0)
                    || (b.done..=a.started).any(|g| (g >> (8 * i)) as u8 == byte);
                if !ok {
                    return Err("torn tag with a generation byte T never wrote");
                }
            }
            Ok(())
        }
        Word::Slot(m) | Word::PSlot(m) => {
            let want = mtag(m, at.inc, at.page as u64, 0).to_le_bytes();
            for i in 4..8 {
                if bytes[i] != want[i] && bytes[i] != 0 {
                    return Err("torn mapper slot with foreign identity bytes");
                }
            }
            Ok(())
        }
        Word::Zero => {
            if v == 0 {
                Ok(())
            } else {
                Err("non-zero word where T never writes")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(word: usize) -> At {
        At {
            inc: 7,
            r: R_ANON,
            page: 3,
            word,
        }
    }

    #[test]
    fn atomic_rules() {
        let b = Before { inc: 7, done: 10 };
        let a = After {
            started: 11,
            inc: 7,
        };
        let z = |_| 0;
        assert!(judge_atomic(ttag(7, R_ANON, 3, 10), at(0), b, a, z).is_ok());
        assert!(judge_atomic(ttag(7, R_ANON, 3, 11), at(0), b, a, z).is_ok());
        assert!(judge_atomic(ttag(7, R_ANON, 3, 9), at(0), b, a, z).is_err());
        assert!(judge_atomic(ttag(7, R_ANON, 3, 12), at(0), b, a, z).is_err());
        assert!(judge_atomic(ttag(7, R_ANON, 4, 10), at(0), b, a, z).is_err());
        assert!(judge_atomic(ttag(8, R_ANON, 3, 10), at(0), b, a, z).is_err());
        assert!(judge_atomic(0, at(0), b, a, z).is_ok());
        let idle = After {
            started: 10,
            inc: 7,
        };
        assert!(judge_atomic(0, at(0), b, idle, z).is_err());
        assert!(judge_atomic(0, at(5), b, idle, z).is_ok());
        assert!(judge_atomic(1, at(5), b, idle, z).is_err());
    }

    #[test]
    fn slot_rules() {
        let b = Before { inc: 7, done: 10 };
        let a = After {
            started: 10,
            inc: 7,
        };
        let at = At {
            inc: 7,
            r: R_WRITABLE,
            page: 2,
            word: W_SLOT + 3,
        };
        assert!(judge_atomic(mtag(3, 7, 2, 5), at, b, a, |_| 5).is_ok());
        assert!(judge_atomic(mtag(3, 7, 2, 6), at, b, a, |_| 5).is_err());
        assert!(judge_atomic(mtag(4, 7, 2, 5), at, b, a, |_| 5).is_err());
        assert!(judge_atomic(mtag(3, 7, 1, 5), at, b, a, |_| 5).is_err());
        assert!(judge_atomic(0, at, b, a, |_| 5).is_ok());
    }

    #[test]
    fn torn_rules() {
        let b = Before {
            inc: 7,
            done: 0x1ff,
        };
        let a = After {
            started: 0x200,
            inc: 7,
        };
        let z = |_| 0;
        let old = ttag(7, R_ANON, 3, 0x1ff);
        let new = ttag(7, R_ANON, 3, 0x200);
        // First byte from the new value, the rest from the old one.
        let torn = (old & !0xff) | (new & 0xff);
        assert!(judge_torn(torn, at(0), b, a, z).is_ok());
        // Torn with a fresh (zero) page while an operation ran.
        assert!(judge_torn(old & 0xffff_ffff_0000_0000, at(0), b, a, z).is_ok());
        assert!(judge_torn(ttag(7, R_ANON, 3, 0x3ff), at(0), b, a, z).is_err());
        assert!(judge_torn(ttag(9, R_ANON, 3, 0x1ff), at(0), b, a, z).is_err());
    }
}
