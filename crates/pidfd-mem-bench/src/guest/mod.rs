//! The measurements, run in the guest (root, module loaded). See the crate
//! docs for the method and `markdown::METHOD_NOTES` for what each figure is.
//!
//! Methods that a table compares are measured in alternation, sample by
//! sample ([`alternate`]): the host is shared and TCG drifts by up to 2x over
//! seconds, so measuring one method after the other would put the drift into
//! the ratios. Each sample of a "warm" method starts with its own warm-up
//! (QEMU's soft TLB grown over its buffers, the operation run once untimed).

mod figures;
mod sys;
mod target;

use std::hint::black_box;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use pidfd_mem::{
    pidfd_mem, pidfd_open, Access, Control, Grant, MemOffset, Mirror, Prot, RemoteAddr,
};
use pidfd_mem_bench::ratios::SPAN_64M;
use pidfd_mem_bench::report::{Figure, Report, Unit};
use pidfd_mem_bench::stats::{round_order, Plan, Stats};
use pidfd_mem_bench::{size_label, KIB, MIB};

use sys::{check, fill, ProcMem, Region, Thp, PAGE};
use target::Target;

const K4: usize = 4 * KIB as usize;
const M1: usize = MIB as usize;

/// Everything the figures use.
pub struct Ctx {
    quick: bool,
    /// The largest size: T's main buffer, the reader's buffers.
    big: usize,
    t: Target,
    pid: libc::pid_t,
    /// T's main buffer, granted at mem offset 0, read-write.
    t_buf: u64,
    ctl: Control,
    mem: Access,
    proc_mem: ProcMem,
    /// The reader's reference buffer (same page pattern as T's buffer).
    src: Region,
    /// Where reads land.
    dst: Region,
}

impl Ctx {
    /// Sizes of the sequential figures.
    fn sizes(&self) -> Vec<usize> {
        let mut v = vec![K4, 64 * KIB as usize, M1, 16 * M1];
        if !self.quick {
            v.push(256 * M1);
        }
        v
    }

    /// Samples and operations per sample for a figure of `size` bytes.
    ///
    /// Samples of small sizes are kept around 1-2 ms: the host is shared, and
    /// a preemption of QEMU's vCPU thread (a few ms) then spoils a few
    /// samples instead of half of them, which keeps the median in the
    /// undisturbed mode. Large sizes cannot be that short; their samples
    /// average many preemptions instead.
    fn plan(&self, size: usize) -> Plan {
        let (samples, inner) = match size {
            s if s <= K4 => (41, 32),
            s if s <= 64 * KIB as usize => (41, 4),
            s if s <= M1 => (41, 1),
            s if s <= 16 * M1 => (25, 1),
            _ => (13, 1),
        };
        if self.quick {
            Plan::new(3, (inner / 4).max(1))
        } else {
            Plan::new(samples, inner)
        }
    }

    /// `n` samples, or 3 in a quick run.
    fn samples(&self, n: usize) -> usize {
        if self.quick {
            3
        } else {
            n
        }
    }

    /// `src[..n]` and `dst[..n]` at once.
    fn bufs(&mut self, n: usize) -> (&[u8], &mut [u8]) {
        (&self.src.as_slice()[..n], &mut self.dst.as_mut_slice()[..n])
    }

    /// Zeroes `dst[..n]`, so that a check after a method sees only what it
    /// wrote.
    fn clear(&mut self, n: usize) {
        self.dst.as_mut_slice()[..n].fill(0);
    }
}

/// A mirror of `mem[offset, offset + len)`.
fn mirror(mem: &Access, offset: u64, len: usize, prot: Prot) -> Result<Mirror> {
    mem.mmap(MemOffset(offset), len, prot)
        .with_context(|| format!("mmap of mem [{offset:#x}, +{len:#x})"))
}

/// `count` fresh mirrors of `mem[offset, offset + len)`.
fn mirrors(mem: &Access, count: usize, offset: u64, len: usize, prot: Prot) -> Result<Vec<Mirror>> {
    (0..count).map(|_| mirror(mem, offset, len, prot)).collect()
}

/// The report being built, with progress on stderr.
pub struct Rec {
    report: Report,
    start: Instant,
}

impl Rec {
    /// Records a figure from its samples, already in `unit`.
    fn add(
        &mut self,
        group: &str,
        method: &str,
        (size, param): (Option<usize>, Option<u64>),
        unit: Unit,
        inner: usize,
        values: Vec<f64>,
    ) {
        let Some(stats) = Stats::of(&values) else {
            self.note(format!("{group} {method}: no valid samples"));
            return;
        };
        eprintln!(
            "bench: [{:6.1}s] {group:<12} {method:<22} {:>8} {:>5} {:>10.4} {} ({:.4}–{:.4})",
            self.start.elapsed().as_secs_f64(),
            size.map_or(String::new(), |s| size_label(s as u64)),
            param.map_or(String::new(), |p| format!("p={p}")),
            stats.median,
            unit.name(),
            stats.min,
            stats.max,
        );
        self.report.figures.push(Figure {
            group: group.into(),
            method: method.into(),
            size: size.map(|s| s as u64),
            param,
            unit,
            stats,
            inner,
            values,
        });
    }

    fn note(&mut self, text: String) {
        eprintln!("bench: note: {text}");
        self.report.notes.push(text);
    }
}

/// One sample of a method: its own set-up, timing and tear-down; returns
/// seconds per operation. Gets the context and the operations to time.
type SampleFn<'a> = Box<dyn FnMut(&mut Ctx, usize) -> Result<f64> + 'a>;

/// A method of an alternating measurement.
struct Method<'a> {
    name: &'static str,
    param: Option<u64>,
    plan: Plan,
    /// Clear `dst[..n]` before the warm-up sample and check the pattern there
    /// after it.
    check: Option<usize>,
    run: SampleFn<'a>,
}

impl<'a> Method<'a> {
    fn new(
        name: &'static str,
        plan: Plan,
        run: impl FnMut(&mut Ctx, usize) -> Result<f64> + 'a,
    ) -> Self {
        Method {
            name,
            param: None,
            plan,
            check: None,
            run: Box::new(run),
        }
    }

    fn checked(mut self, n: usize) -> Self {
        self.check = Some(n);
        self
    }

    fn param(mut self, p: u64) -> Self {
        self.param = Some(p);
        self
    }
}

/// Measures `methods` in alternation: one warm-up round (results checked
/// where asked, then discarded), then rounds of one sample of each method,
/// in the order of [`round_order`], until each has `plan.samples`. A method
/// that fails is noted and left out. Returns each method's samples (empty
/// for a failed one).
fn alternate(ctx: &mut Ctx, rec: &mut Rec, methods: &mut [Method<'_>]) -> Vec<Vec<f64>> {
    let mut out = vec![Vec::new(); methods.len()];
    let mut failed = vec![false; methods.len()];
    let rounds = methods.iter().map(|m| m.plan.samples).max().unwrap_or(0);
    for round in 0..=rounds {
        for i in round_order(round, methods.len()) {
            let m = &mut methods[i];
            if failed[i] || (round > 0 && out[i].len() >= m.plan.samples) {
                continue;
            }
            if round == 0 {
                if let Some(n) = m.check {
                    ctx.clear(n);
                }
            }
            match (m.run)(ctx, m.plan.inner.max(1)) {
                Ok(t) if round > 0 => out[i].push(t),
                Ok(_) => {
                    if let Some(n) = m.check {
                        if let Some(p) = check(&ctx.dst.as_slice()[..n]) {
                            rec.note(format!(
                                "{} {}: wrong data at page {p}",
                                m.name,
                                size_label(n as u64)
                            ));
                        }
                    }
                }
                Err(e) => {
                    failed[i] = true;
                    out[i].clear();
                    rec.note(format!("{} failed: {e:#}", m.name));
                }
            }
        }
    }
    out
}

/// Times `inner` runs of `op`: seconds per run.
fn time_ops(inner: usize, mut op: impl FnMut() -> Result<()>) -> Result<f64> {
    let t0 = Instant::now();
    for _ in 0..inner {
        op()?;
    }
    Ok(t0.elapsed().as_secs_f64() / inner.max(1) as f64)
}

/// Seconds per operation of `bytes` to MiB/s.
fn mibps(samples: &[f64], bytes: usize) -> Vec<f64> {
    samples
        .iter()
        .map(|t| bytes as f64 / t / MIB as f64)
        .collect()
}

/// Seconds per operation to million operations per second.
fn mops(samples: &[f64]) -> Vec<f64> {
    samples.iter().map(|t| 1e-6 / t).collect()
}

/// Seconds times `k` (1e3: ms, 1e6: µs, 1e9: ns).
fn scaled(samples: &[f64], k: f64) -> Vec<f64> {
    samples.iter().map(|t| t * k).collect()
}

/// Copies `dst.len()` bytes from the start of mirror `mir` with memcpy.
fn copy_out(mir: &Mirror, dst: &mut [u8]) {
    assert!(dst.len() <= mir.len());
    // SAFETY: [as_ptr, +dst.len()) is inside the mapping of `mir` (asserted),
    // which stays mapped while `mir` is borrowed. The bytes are T's; T is
    // blocked in `read` on its command pipe during every measurement, so
    // nothing stores to them while we copy (no data race), and the range is
    // granted and populated in T, so the access does not fault with SIGBUS.
    // `dst` is the reader's own memory and cannot overlap a mirror.
    unsafe { std::ptr::copy_nonoverlapping(mir.as_ptr(), dst.as_mut_ptr(), dst.len()) }
}

/// Copies `src` to the start of the read-write mirror `mir` with memcpy.
fn copy_in(mir: &Mirror, src: &[u8]) {
    assert!(src.len() <= mir.len() && mir.prot() == Prot::ReadWrite);
    // SAFETY: as in `copy_out`: inside the live, writable mapping; T is
    // paused, so it neither reads nor writes these bytes meanwhile; the
    // grant is read-write and T's pages are present and writable.
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), mir.as_ptr(), src.len()) }
}

/// Loads the first byte of every page of `[ptr, ptr + len)`.
///
/// # Safety
///
/// The range must be mapped readable for the whole call, and every page must
/// be backed (for a mirror: granted and present in T), else SIGBUS.
unsafe fn touch_pages(ptr: *const u8, len: usize) -> u64 {
    let mut sum = 0u64;
    for off in (0..len).step_by(PAGE) {
        // SAFETY: inside the readable range, by the caller's contract.
        sum += u64::from(unsafe { ptr.add(off).read_volatile() });
    }
    sum
}

/// Sums the 8-byte words at `base + off` for every `off`.
///
/// # Safety
///
/// `base + off .. + 8` must be mapped readable and backed for every offset.
unsafe fn random_loads(base: *const u8, offs: &[u32]) -> u64 {
    let mut sum = 0u64;
    for &off in offs {
        // SAFETY: by the caller's contract; offsets are 8-byte aligned and
        // `base` is page aligned, so the loads are aligned.
        sum = sum.wrapping_add(unsafe { base.add(off as usize).cast::<u64>().read_volatile() });
    }
    sum
}

/// Copies `src` into `dst` with `rep movsb`, the loop the kernel's
/// `copy_to_user`/`copy_from_user` run on a CPU with ERMS (this one): under
/// TCG it shows what the kernel's copies can reach at best.
#[cfg(target_arch = "x86_64")]
fn rep_movsb(dst: &mut [u8], src: &[u8]) {
    let n = dst.len().min(src.len());
    // SAFETY: copies `n` bytes from `src` to `dst`, two distinct live
    // buffers of at least `n` bytes; the direction flag is clear (ABI); only
    // rcx, rdi and rsi change, and they are declared.
    unsafe {
        std::arch::asm!(
            "rep movsb",
            inout("rcx") n => _,
            inout("rdi") dst.as_mut_ptr() => _,
            inout("rsi") src.as_ptr() => _,
            options(nostack, preserves_flags)
        );
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn rep_movsb(dst: &mut [u8], src: &[u8]) {
    let n = dst.len().min(src.len());
    dst[..n].copy_from_slice(&src[..n]);
}

/// Rounds of [`grow_soft_tlb`]: QEMU doubles its TLB at most once a flush,
/// from 256 entries; 10 doublings cover 256 MiB twice over.
const TLB_ROUNDS: usize = 10;

/// Grows QEMU's software TLB until it holds the pages of `ranges`, so that a
/// figure does not depend on what ran before it (kernel facts, "Measuring
/// under TCG"). QEMU resizes its TLB only when the guest flushes it whole,
/// doubling it when more than 70% of the entries were used since the last
/// resize; a loop that makes no such flush (a memcpy, random loads) keeps
/// whatever size it started with. Each round touches every page, then
/// unmaps 64 touched pages, which makes the kernel flush the whole TLB
/// (more than `tlb_single_page_flush_ceiling` pages).
///
/// # Safety
///
/// Every range must be mapped readable and backed, as for [`touch_pages`].
unsafe fn grow_soft_tlb(ranges: &[(*const u8, usize)]) -> Result<()> {
    for _ in 0..TLB_ROUNDS {
        for &(p, len) in ranges {
            // SAFETY: by the caller's contract.
            black_box(unsafe { touch_pages(p, len) });
        }
        let mut flusher = Region::anon(64 * PAGE, 0, Thp::NoHuge)?;
        fill(flusher.as_mut_slice());
        drop(flusher);
    }
    Ok(())
}

/// The whole run.
pub fn run(quick: bool) -> Result<Report> {
    if !std::path::Path::new("/dev/pidfd_mem").exists() {
        bail!("/dev/pidfd_mem does not exist: run in the guest (cargo xtask bench)");
    }
    let start = Instant::now();
    let mut rec = Rec {
        report: Report {
            quick,
            machine: machine(),
            ..Report::default()
        },
        start,
    };
    let big = if quick { SPAN_64M as usize } else { 256 * M1 };
    let label = size_label(big as u64);
    eprintln!("bench: T allocates {label}; the reader allocates 2 x {label}");
    let mut t = Target::spawn()?;
    let pid = t.pid();
    let pinned = sys::pin_to_cpu(0);
    rec.report.machine.insert(
        "pinning".into(),
        if pinned {
            "reader on CPU 0, T on CPU 1 (when there is one)".into()
        } else {
            "none (sched_setaffinity failed)".into()
        },
    );
    let t_buf = t.alloc(big, Thp::NoHuge)?;
    let pidfd = pidfd_open(pid as u32)?;
    let (ctl, mem) = pidfd_mem(&pidfd, 0)?;
    ctl.map(&Grant::new(
        RemoteAddr(t_buf),
        MemOffset(0),
        big as u64,
        Prot::ReadWrite,
    ))?;
    // Reader buffers: src 5 pages past a 2 MiB boundary (T's buffer and
    // mirrors are at 0); dst `sys::DISTANCE` pages from src, so that copies
    // between them do not share QEMU soft TLB slots (kernel facts).
    let mut src = Region::anon(big, 5, Thp::NoHuge)?;
    fill(src.as_mut_slice());
    let mut dst = Region::at_distance(src.as_ptr(), big)?;
    dst.as_mut_slice().fill(0);
    rec.report.machine.insert(
        "buffers".into(),
        format!(
            "T: {label} at {t_buf:#x}, 4 KiB pages; reader: src at {:p}, dst at {:p}",
            src.as_ptr(),
            dst.as_ptr()
        ),
    );
    let mut ctx = Ctx {
        quick,
        big,
        proc_mem: ProcMem::open(pid).context("open /proc/T/mem")?,
        t,
        pid,
        t_buf,
        ctl,
        mem,
        src,
        dst,
    };
    figures::all(&mut ctx, &mut rec);
    drop(ctx);
    rec.report.elapsed_s = start.elapsed().as_secs_f64();
    Ok(rec.report)
}

/// Kernel, CPU, accelerator and the settings that shape the figures.
fn machine() -> std::collections::BTreeMap<String, String> {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "?".into())
    };
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let mem = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:").map(|v| v.trim().to_string()))
        .unwrap_or_else(|| "?".into());
    let accel = std::env::var("PIDFD_MEM_BENCH_ACCEL").unwrap_or_else(|_| "unknown".into());
    let tcg = if cpu.contains("TCG") || accel == "tcg" {
        "yes: QEMU TCG, figures are relative, not absolute"
    } else {
        "not detected"
    };
    // Cost of one clock read (a system call with the hpet clocksource).
    let t0 = Instant::now();
    for _ in 0..1000 {
        black_box(Instant::now());
    }
    let clock_ns = t0.elapsed().as_nanos() / 1000;
    let flags = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("flags"))
        .unwrap_or_default();
    let copy = ["fsrm", "erms", "rep_good"]
        .into_iter()
        .find(|f| flags.split_whitespace().any(|x| x == *f))
        .unwrap_or("none");
    let mut m = std::collections::BTreeMap::new();
    let mut put = |k: &str, v: String| {
        m.insert(k.to_string(), v);
    };
    put("kernel", uname_release());
    put("cpu", cpu);
    put("cpus", cpus.to_string());
    put("memory", mem);
    put("accel", accel);
    put("tcg", tcg.into());
    put("copy_user flag", copy.into());
    put(
        "clocksource",
        read("/sys/devices/system/clocksource/clocksource0/current_clocksource"),
    );
    put("clock_read_ns", clock_ns.to_string());
    put(
        "thp_enabled",
        read("/sys/kernel/mm/transparent_hugepage/enabled"),
    );
    put(
        "fault_around_bytes",
        read("/sys/kernel/debug/fault_around_bytes"),
    );
    put(
        "source",
        std::env::var("PIDFD_MEM_BENCH_SOURCE").unwrap_or_else(|_| "?".into()),
    );
    put(
        "pidfd_mem fault_around_pages",
        sys::fault_around().map_or("?".into(), |p| p.to_string()),
    );
    m
}

fn uname_release() -> String {
    // SAFETY: utsname is plain data; zeroed is a valid value.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid out pointer.
    if unsafe { libc::uname(&mut u) } != 0 {
        return "?".into();
    }
    // SAFETY: uname NUL-terminates `release` within the array.
    unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}
