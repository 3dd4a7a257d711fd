//! `pidfd-mem-bench`: the benchmark of pidfd_mem (issue #7, contract section 9).
//!
//! The binary (`src/main.rs`, guest code in `src/guest/`) runs in the QEMU
//! guest started by `cargo xtask bench`. It forks a target process T that owns
//! the buffers and waits on a pipe, and measures, on the same buffers of T:
//! mirrors (`Access::mmap`, cold and warm), `pread`/`pwrite` on the access fd,
//! `process_vm_readv`/`writev`, `pread`/`pwrite` on `/proc/T/mem`, ptrace
//! `PEEKDATA`/`POKEDATA` (small sizes only) and a local `memcpy` in the reader
//! itself as the physical reference. It prints its report as JSON between the
//! [`report::BEGIN`] and [`report::END`] lines on stdout (the guest root is
//! read-only); xtask writes `target/bench/report.json` and runs
//! `pidfd-mem-bench render` on the host, which writes `report.md` and
//! `throughput.svg` with this library.
//!
//! # Why a hand-written timer and not criterion
//!
//! Criterion wants to own the process (its own `main`, its own sampling plan,
//! its own output directory on a writable filesystem, wall-clock budgets
//! tuned for native speed). Here every sample needs untimed set-up and
//! tear-down (a fresh mirror `mmap` before a cold read, a `munmap` after; T
//! repopulating its pages before an invalidation; QEMU's soft TLB grown
//! before a warm copy), the methods of one table must alternate sample by
//! sample (the host is shared and TCG drifts, see "Measuring under TCG" in
//! `shared/notes/kernel-facts.md`), the number of samples must be small and
//! fixed so that the whole run stays within minutes under TCG, and the
//! result is one JSON report collected from stdout. The guest code does this
//! with [`std::time::Instant`] around each sample: one untimed warm-up round
//! that also checks the data, then rounds in the order of
//! [`stats::round_order`], each sample the mean over `inner` operations;
//! every figure is the median with min and max ([`stats::Stats`]).
//!
//! # Pure parts (tested on the host)
//!
//! - [`stats`], median/min/max, the order of alternating samples, a simple
//!   sampling loop, geometric mean;
//! - [`report`], the report model and its JSON form;
//! - [`ratios`], the headline ratios of the issue and their targets;
//! - [`markdown`], `report.md`;
//! - [`svg`], `throughput.svg`, written by hand (log-log, one line per method).

pub mod markdown;
pub mod ratios;
pub mod report;
pub mod stats;
pub mod svg;

/// 1 KiB.
pub const KIB: u64 = 1024;
/// 1 MiB.
pub const MIB: u64 = 1024 * 1024;

/// A size in bytes as the tables print it: `4 KiB`, `16 MiB`, `1.5 MiB`.
pub fn size_label(bytes: u64) -> String {
    let units = [(1u64 << 30, "GiB"), (MIB, "MiB"), (KIB, "KiB")];
    for (scale, name) in units {
        if bytes >= scale {
            if bytes % scale == 0 {
                return format!("{} {name}", bytes / scale);
            }
            return format!("{:.1} {name}", bytes as f64 / scale as f64);
        }
    }
    format!("{bytes} B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_labels() {
        assert_eq!(size_label(4096), "4 KiB");
        assert_eq!(size_label(256 * MIB), "256 MiB");
        assert_eq!(size_label(3 * MIB / 2), "1.5 MiB");
        assert_eq!(size_label(100), "100 B");
    }
}
