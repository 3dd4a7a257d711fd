//! `report.md`: the tables of the report.

use std::fmt::Write as _;

use crate::ratios::{self, FAULT_SPAN, SPAN_64M};
use crate::report::{group as g, method as m, method_label, Figure, Report};
use crate::size_label;

/// A number with about three significant digits.
pub fn num(x: f64) -> String {
    let a = x.abs();
    if !x.is_finite() {
        "-".into()
    } else if a >= 100.0 || a == 0.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else if a >= 0.001 {
        format!("{x:.4}")
    } else {
        format!("{x:.2e}")
    }
}

/// `median (min–max)`.
fn cell(f: Option<&Figure>) -> String {
    match f {
        Some(f) => format!(
            "{} ({}–{})",
            num(f.stats.median),
            num(f.stats.min),
            num(f.stats.max)
        ),
        None => "-".into(),
    }
}

fn opt(x: Option<f64>) -> String {
    x.map_or("-".into(), num)
}

/// Methods × sizes of a group, `median (min–max)`.
fn size_table(out: &mut String, r: &Report, group: &str) {
    let sizes = r.sizes(group);
    out.push_str("| method |");
    for s in &sizes {
        let _ = write!(out, " {} |", size_label(*s));
    }
    out.push_str("\n|---|");
    out.push_str(&"---:|".repeat(sizes.len()));
    out.push('\n');
    for method in r.methods(group) {
        let _ = write!(out, "| {} |", method_label(group, &method));
        for s in &sizes {
            let _ = write!(out, " {} |", cell(r.find(group, &method, Some(*s), None)));
        }
        out.push('\n');
    }
}

/// Methods × sizes of a group as multiples of `base`'s median.
fn relative_table(out: &mut String, r: &Report, group: &str, base: &str) {
    let sizes = r.sizes(group);
    let _ = write!(out, "| method / {} |", method_label(group, base));
    for s in &sizes {
        let _ = write!(out, " {} |", size_label(*s));
    }
    out.push_str("\n|---|");
    out.push_str(&"---:|".repeat(sizes.len()));
    out.push('\n');
    for method in r.methods(group) {
        let _ = write!(out, "| {} |", method_label(group, &method));
        for s in &sizes {
            let v = match (
                r.find(group, &method, Some(*s), None),
                r.find(group, base, Some(*s), None),
            ) {
                (Some(a), Some(b)) if b.stats.median > 0.0 => {
                    format!("{}x", num(a.stats.median / b.stats.median))
                }
                _ => "-".into(),
            };
            let _ = write!(out, " {v} |");
        }
        out.push('\n');
    }
}

/// Rows of single figures: label, `median (min–max)`, unit, and a ratio to
/// `base` for figures of the same unit, oriented so that higher is better
/// for the row's method.
fn list_table(out: &mut String, r: &Report, group: &str, base: Option<&str>) {
    let base_fig = base.and_then(|b| r.figures.iter().find(|f| f.group == group && f.method == b));
    out.push_str("| method | median (min–max) | unit |");
    if let Some(b) = base {
        let _ = write!(out, " vs {} |", method_label(group, b));
    }
    out.push_str("\n|---|---:|---|");
    if base.is_some() {
        out.push_str("---:|");
    }
    out.push('\n');
    for f in r.figures.iter().filter(|f| f.group == group) {
        let _ = write!(
            out,
            "| {} | {} | {} |",
            method_label(group, &f.method),
            cell(Some(f)),
            f.unit.name()
        );
        if let Some(b) = base_fig {
            if f.unit != b.unit {
                out.push_str(" - |");
            } else {
                let x = if f.unit.higher_is_better() {
                    f.stats.median / b.stats.median
                } else {
                    b.stats.median / f.stats.median
                };
                let _ = write!(out, " {}x |", num(x));
            }
        } else if base.is_some() {
            out.push_str(" - |");
        }
        out.push('\n');
    }
}

/// The whole `report.md`.
pub fn render(r: &Report) -> String {
    let mut o = String::new();
    o.push_str("# pidfd_mem benchmark\n\n");
    if r.quick {
        o.push_str("**Quick run** (`--quick`): fewer sizes and samples; not for the record.\n\n");
    }
    o.push_str(
        "The guest runs under **QEMU TCG** (software emulation): the figures are relative to \
         each other within this run, not speeds of any real machine. Each figure is the median \
         over repeated samples, with min–max in parentheses, after one untimed warm-up sample. \
         A ratio's value is median over median (the verdict's figure); its range pairs the worst \
         and best samples; paired is the median over rounds of the ratio of the two samples of \
         one round, and best/best divides the best samples: both resist a busy host, whose \
         preemptions of QEMU add milliseconds to some samples.\n\n",
    );
    o.push_str("| | |\n|---|---|\n");
    for (k, v) in &r.machine {
        let _ = writeln!(o, "| {k} | {v} |");
    }
    let _ = writeln!(o, "| run time | {:.0} s |\n", r.elapsed_s);

    o.push_str("## Headline ratios (higher is better for pidfd_mem)\n\n");
    o.push_str(
        "| ratio | value | range | paired | best/best | target | verdict | XPMEM | definition |\n",
    );
    o.push_str("|---|---:|---:|---:|---:|---:|---|---|---|\n");
    let all = ratios::compute(r);
    for x in &all {
        let mut verdict = match (x.met(), x.expected_miss) {
            (Some(false), Some(_)) => "**missed** (expected, see below)".to_string(),
            (Some(false), None) => "**missed**".to_string(),
            _ => x.verdict().to_string(),
        };
        if x.met_best().is_some() && x.met_best() != x.met() {
            let best = if x.met_best() == Some(true) {
                "met"
            } else {
                "missed"
            };
            verdict += &format!(" (best/best: {best})");
        }
        let _ = writeln!(
            o,
            "| `{}` | {} | {}–{} | {} | {} | >= {} | {} | {} | {} |",
            x.name,
            opt(x.value),
            opt(x.lo),
            opt(x.hi),
            opt(x.paired),
            opt(x.best),
            x.target,
            verdict,
            x.xpmem.unwrap_or("-"),
            x.definition
        );
    }
    o.push_str(
        "\nUnder TCG the kernel's copies (`copy_to_user`: `rep movsb` on this CPU) run one \
         emulated iteration at a time, ~600 MiB/s (the `rep movsb` row below), while glibc's \
         memcpy runs vector code at 3-4 GiB/s: ratios of mirrors to system calls are larger \
         here than they would be on hardware, where both copy at memory speed. Ratios among \
         system calls, and of warm mirrors to memcpy, are not affected.\n",
    );
    for x in all.iter().filter(|x| x.expected_miss.is_some()) {
        let _ = writeln!(
            o,
            "\n`{}`: {}.",
            x.name,
            x.expected_miss.unwrap_or_default()
        );
    }
    o.push('\n');

    o.push_str("## Sequential read, MiB/s\n\n");
    size_table(&mut o, r, g::SEQ_READ);
    o.push('\n');
    relative_table(&mut o, r, g::SEQ_READ, m::PVR);
    o.push_str("\n## Sequential write, MiB/s\n\n");
    size_table(&mut o, r, g::SEQ_WRITE);
    o.push('\n');
    relative_table(&mut o, r, g::SEQ_WRITE, m::PVW);

    let _ = write!(
        o,
        "\n## Random 8-byte reads over {}\n\n",
        size_label(SPAN_64M)
    );
    list_table(&mut o, r, g::RANDOM8, Some(m::PVR));
    let _ = write!(
        o,
        "\n## First touch of a fresh mapping of {} of populated memory\n\n",
        size_label(FAULT_SPAN)
    );
    list_table(&mut o, r, g::FAULT, Some(m::LOCAL_SHMEM));
    let _ = write!(
        o,
        "\n## Cold read of {}: T on THP vs 4 KiB pages\n\n",
        size_label(SPAN_64M)
    );
    list_table(&mut o, r, g::THP, Some(m::MIRROR_COLD_4K));

    let _ = write!(
        o,
        "\n## Invalidation: T's madvise(MADV_DONTNEED) of {}, ms\n\n",
        size_label(SPAN_64M)
    );
    o.push_str("| mirrors populated | ms | vs no mirror |\n|---:|---:|---:|\n");
    let none = r.find(g::INVALIDATE, m::DONTNEED, Some(SPAN_64M), Some(0));
    for p in r.params(g::INVALIDATE) {
        let f = r.find(g::INVALIDATE, m::DONTNEED, Some(SPAN_64M), Some(p));
        let rel = match (f, none) {
            (Some(f), Some(n)) if n.stats.median > 0.0 => {
                format!("{}x", num(f.stats.median / n.stats.median))
            }
            _ => "-".into(),
        };
        let _ = writeln!(o, "| {p} | {} | {rel} |", cell(f));
    }

    o.push_str("\n## Setup: from nothing to the first byte\n\nThe steps are timed in a separate pass with a clock read between steps (see `clock_read_ns`).\n\n");
    list_table(&mut o, r, g::SETUP, Some(m::SETUP_PROC_MEM));

    let fa = r.params(g::FAULT_AROUND);
    if !fa.is_empty() {
        let mut sizes: Vec<u64> = r
            .figures
            .iter()
            .filter(|f| f.group == g::FAULT_AROUND && f.method == m::MIRROR_COLD)
            .filter_map(|f| f.size)
            .collect();
        sizes.sort_unstable();
        sizes.dedup();
        o.push_str(
            "\n## Mirror fault-around (`/sys/module/pidfd_mem/parameters/fault_around_pages`)\n\n",
        );
        let _ = write!(
            o,
            "Cold mirror read in MiB/s (and as a multiple of process_vm_readv at that size), the \
             first touch of each page of a fresh {} mirror in ns/page, and that times the pages \
             mapped per fault.\n\n",
            size_label(FAULT_SPAN)
        );
        o.push_str("| fault_around_pages |");
        for s in &sizes {
            let _ = write!(o, " cold read {} |", size_label(*s));
        }
        o.push_str(" first touch ns/page | = µs per fault |\n|---:|");
        o.push_str(&"---:|".repeat(sizes.len() + 2));
        o.push('\n');
        for p in fa {
            let _ = write!(o, "| {p} |");
            for s in &sizes {
                let f = r.find(g::FAULT_AROUND, m::MIRROR_COLD, Some(*s), Some(p));
                let vs = match (f, r.find(g::SEQ_READ, m::PVR, Some(*s), None)) {
                    (Some(f), Some(b)) if b.stats.median > 0.0 => {
                        format!(" = {}x", num(f.stats.median / b.stats.median))
                    }
                    _ => String::new(),
                };
                let _ = write!(o, " {}{vs} |", cell(f));
            }
            let touch = r.figures.iter().find(|f| {
                f.group == g::FAULT_AROUND && f.method == m::MIRROR_TOUCH && f.param == Some(p)
            });
            let per_fault = touch.map_or("-".into(), |f| num(f.stats.median * p as f64 / 1e3));
            let _ = writeln!(o, " {} | {per_fault} |", cell(touch));
        }
    }

    o.push_str("\n## How each figure is taken\n\n");
    for line in METHOD_NOTES {
        let _ = writeln!(o, "- {line}");
    }
    if !r.notes.is_empty() {
        o.push_str("\n## Notes from this run\n\n");
        for n in &r.notes {
            let _ = writeln!(o, "- {n}");
        }
    }
    o
}

/// What each figure measures (the same for every run).
pub const METHOD_NOTES: &[&str] = &[
    "T is a forked child of the bench that owns the buffers (anonymous, 2 MiB aligned, `MADV_NOHUGEPAGE` unless stated) and waits on a pipe; it is paused while the reader measures. The reader's `src` (same page pattern as T's buffer) is 5 pages past a 2 MiB boundary; every destination of a repeated copy lies 0x11111 pages (+ k * 2^18) from its source, so that source and destination never share QEMU soft-TLB slots (which are direct mapped: `vpn mod N`); an odd offset alone only avoids the worst case.",
    "Methods compared in a table are measured in alternation, one sample each per round, in a shuffled order that changes every round (the host is shared and TCG drifts by up to 2x over seconds). Round 0 is an untimed warm-up that also checks the data. A sample times `inner` operations (more for small sizes); figures are the median over the samples with min and max.",
    "Warm samples (memcpy, rep movsb, warm mirror) first grow QEMU's soft TLB over their buffers (touch every page, then force a full TLB flush by unmapping 64 pages, 10 times: QEMU only resizes its TLB on a full flush), then run the copy once untimed. Random-load samples do the same.",
    "`rep movsb` (local) is the copy loop of the kernel's `copy_to_user`/`copy_from_user` on this CPU (ERMS). QEMU 7.2 runs it one iteration at a time, at ~600 MiB/s, against 3-4 GiB/s for glibc's vector memcpy: every method that copies in the kernel (`pread`, `process_vm_readv`, `/proc/T/mem`, and `Mirror::copy_to`, which uses `rep movsb` too) is capped there, and so is glibc's memcpy itself for sizes where it picks `rep movsb` (the 64 KiB column). This inflates the mirror-vs-syscall ratios under TCG compared with hardware, where both run at memory speed.",
    "Mirror reads copy out with `ptr::copy_nonoverlapping` (glibc memcpy, as the local reference) from `Mirror::as_ptr()`. Outside a benchmark that is forbidden (a mirror is never Rust-visible memory: T writes it at any time and it may SIGBUS); here T is paused, so the copy sees no concurrent store. `Mirror::copy_to` (the library's SIGBUS-guarded `rep movsb`) is measured warm as its own row.",
    "Cold: a fresh `mmap` of the access fd (no PTEs) per operation, created and unmapped outside the timer; the timer covers the faults and the copy. Warm: the mirror was populated by the warm-up and its PTEs stay.",
    "Mirror stores fault one page at a time (a write fault runs T's own write fault first, contract C2): there is no write fault-around.",
    "`pread`/`pwrite` on the access fd, `process_vm_readv`/`writev` and `/proc/T/mem` move the whole size in one call (repeated only if short). ptrace moves 8 bytes a call and is measured only for small sizes.",
    "Random 8-byte reads: the same pseudo-random 8-byte-aligned offsets over 64 MiB for every method; loads are `read_volatile`; syscall methods move 8 bytes per call.",
    "First touch: a fresh mapping touched by one load per page, over 4 MiB (one sample ~1 ms); local is a fresh `MAP_SHARED` mapping of a memfd whose pages are in the page cache (the kernel's default fault-around, `fault_around_bytes`, applies); mirror is a fresh mirror of T's populated pages (the module's `fault_around_pages`).",
    "Invalidation: T times its own `madvise(MADV_DONTNEED)` over 64 MiB with 0, 1 or 4 populated mirrors of the range (all in the reader); T repopulates the range and the mirrors are touched again before each sample, untimed.",
    "Setup: `pidfd_open` + `PIDFD_MEM_OPEN` + `MAP` (256 MiB) + `mmap` + one load, vs `open(\"/proc/T/mem\")` + `pread` of one byte; closing is not timed.",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::sample_report;

    #[test]
    fn numbers() {
        assert_eq!(num(1234.6), "1235");
        assert_eq!(num(12.345), "12.3");
        assert_eq!(num(1.2345), "1.23");
        assert_eq!(num(0.5), "0.5000");
        assert_eq!(num(f64::NAN), "-");
    }

    #[test]
    fn renders_tables() {
        let md = render(&sample_report());
        assert!(md.contains("TCG"));
        assert!(md.contains("| `warm_seq_read_vs_memcpy` | 0.99"));
        assert!(md.contains("missed** (expected"));
        assert!(md.contains("| 4 KiB | 1 MiB | 256 MiB |"));
        assert!(md.contains("| mirror, warm | 990 (891–1089)"));
        assert!(md.contains("| 4 | 30.0 (27.0–33.0) | 3.00x |"));
        // Every table row has the same number of cells as its header.
        for block in md.split("\n\n").filter(|b| b.starts_with('|')) {
            let counts: Vec<usize> = block.lines().map(|l| l.matches('|').count()).collect();
            assert!(counts.windows(2).all(|w| w[0] == w[1]), "{block}");
        }
    }
}
