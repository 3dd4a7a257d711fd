//! The figures, phase by phase.

use std::cell::RefCell;
use std::hint::black_box;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use pidfd_mem::{pidfd_mem, pidfd_open, Grant, MemOffset, Prot, RemoteAddr};
use pidfd_mem_bench::ratios::{FAULT_SPAN, SPAN_64M};
use pidfd_mem_bench::report::{group as g, method as m, Unit};
use pidfd_mem_bench::size_label;
use pidfd_mem_bench::stats::{measure, Plan};

use super::sys::{self, check, fill, Memfd, Ptrace, Region, Thp, PAGE};
use super::*;

/// Offsets in mem of the THP test's grants (past the main buffer's grant).
const OFF_THP: u64 = 1 << 30;
const OFF_4K: u64 = OFF_THP + SPAN_64M;

/// Largest size measured with ptrace: 8 bytes a system call is slow.
const PTRACE_CAP: usize = M1;

/// Every phase, in order; a failed phase is noted and the next one runs.
pub fn all(ctx: &mut Ctx, rec: &mut Rec) {
    type Phase = fn(&mut Ctx, &mut Rec) -> Result<()>;
    let phases: [(&str, Phase); 9] = [
        ("sequential read", seq_read),
        ("sequential write", seq_write),
        ("ptrace", ptrace),
        ("random 8-byte reads", random8),
        ("first touch", fault),
        ("THP", thp),
        ("invalidation", invalidate),
        ("setup", setup),
        ("fault-around", fault_around),
    ];
    for (name, phase) in phases {
        let t0 = Instant::now();
        eprintln!("bench: == {name}");
        if let Err(e) = phase(ctx, rec) {
            rec.note(format!("phase {name} failed: {e:#}"));
        }
        eprintln!("bench: == {name} took {:.1}s", t0.elapsed().as_secs_f64());
    }
}

/// Records the throughput of each method of an alternating measurement.
fn add_mibps(rec: &mut Rec, group: &str, n: usize, methods: &[Method<'_>], res: &[Vec<f64>]) {
    for (mt, s) in methods.iter().zip(res) {
        rec.add(
            group,
            mt.name,
            (Some(n), mt.param),
            Unit::MibPerS,
            mt.plan.inner,
            mibps(s, n),
        );
    }
}

/// A warm local copy: TLB grown, one untimed copy, then `inner` timed ones.
fn warm_local(ctx: &mut Ctx, n: usize, inner: usize, copy: fn(&mut [u8], &[u8])) -> Result<f64> {
    // SAFETY: our own populated buffers of at least `n` bytes.
    unsafe { grow_soft_tlb(&[(ctx.src.as_ptr(), n), (ctx.dst.as_ptr(), n)])? };
    let (src, dst) = ctx.bufs(n);
    copy(dst, src);
    time_ops(inner, || {
        copy(dst, src);
        black_box(dst.as_ptr());
        Ok(())
    })
}

fn memcpy(dst: &mut [u8], src: &[u8]) {
    dst.copy_from_slice(src);
}

fn seq_read(ctx: &mut Ctx, rec: &mut Rec) -> Result<()> {
    for n in ctx.sizes() {
        let plan = ctx.plan(n);
        let warm = mirror(&ctx.mem, 0, n, Prot::Read)?;
        let warm = &warm;
        // The warm copies land `DISTANCE` pages from the mirror, as the
        // local ones land that far from `src` (see `sys::DISTANCE`).
        let mut near = Region::at_distance(warm.as_ptr(), n)?;
        near.as_mut_slice().fill(0);
        let near = RefCell::new(near);
        let near = &near;
        let mut methods = [
            Method::new(m::MEMCPY, plan, |ctx, inner| {
                warm_local(ctx, n, inner, memcpy)
            })
            .checked(n),
            Method::new(m::REP_MOVSB, plan, |ctx, inner| {
                warm_local(ctx, n, inner, rep_movsb)
            })
            .checked(n),
            Method::new(m::MIRROR_WARM, plan, move |_, inner| {
                let mut near = near.borrow_mut();
                // SAFETY: the mirror's `n` bytes are granted and populated in
                // T (which is paused); `near` is ours and populated.
                unsafe { grow_soft_tlb(&[(warm.as_ptr(), n), (near.as_ptr(), n)])? };
                let dst = near.as_mut_slice();
                copy_out(warm, dst);
                time_ops(inner, || {
                    copy_out(warm, dst);
                    black_box(dst.as_ptr());
                    Ok(())
                })
            }),
            Method::new(m::MIRROR_WARM_COPY_TO, plan, move |_, inner| {
                let mut near = near.borrow_mut();
                // SAFETY: as above.
                unsafe { grow_soft_tlb(&[(warm.as_ptr(), n), (near.as_ptr(), n)])? };
                let dst = near.as_mut_slice();
                warm.copy_to(0, dst)?;
                time_ops(inner, || {
                    warm.copy_to(0, dst)?;
                    black_box(dst.as_ptr());
                    Ok(())
                })
            }),
            Method::new(m::MIRROR_COLD, plan, |ctx, inner| {
                mirror_cold(ctx, 0, n, inner)
            })
            .checked(n),
            Method::new(m::PREAD_MEM, plan, |ctx, inner| {
                let dst = &mut ctx.dst.as_mut_slice()[..n];
                time_ops(inner, || Ok(ctx.mem.read_exact_at(dst, MemOffset(0))?))
            })
            .checked(n),
            Method::new(m::PVR, plan, |ctx, inner| {
                let (pid, addr) = (ctx.pid, ctx.t_buf);
                let dst = &mut ctx.dst.as_mut_slice()[..n];
                time_ops(inner, || Ok(sys::pvr(pid, dst, addr)?))
            })
            .checked(n),
            Method::new(m::PROC_MEM, plan, |ctx, inner| {
                let dst = &mut ctx.dst.as_mut_slice()[..n];
                time_ops(inner, || Ok(ctx.proc_mem.read(dst, ctx.t_buf)?))
            })
            .checked(n),
        ];
        let res = alternate(ctx, rec, &mut methods);
        add_mibps(rec, g::SEQ_READ, n, &methods, &res);
        let bad = check(near.borrow().as_slice());
        if let Some(p) = bad {
            rec.note(format!(
                "warm mirror reads {}: wrong data at page {p}",
                size_label(n as u64)
            ));
        }
    }
    Ok(())
}

fn seq_write(ctx: &mut Ctx, rec: &mut Rec) -> Result<()> {
    for n in ctx.sizes() {
        let plan = ctx.plan(n);
        let warm = mirror(&ctx.mem, 0, n, Prot::ReadWrite)?;
        let warm = &warm;
        // The stores come from `DISTANCE` pages away, as for the local copy.
        let mut far = Region::at_distance(warm.as_ptr(), n)?;
        fill(far.as_mut_slice());
        let far = &far;
        let mut methods = [
            Method::new(m::MEMCPY, plan, |ctx, inner| {
                warm_local(ctx, n, inner, memcpy)
            }),
            // Warm: the untimed copy faults every page writable (the first
            // sample's; later ones find the PTEs there).
            Method::new(m::MIRROR_WARM, plan, move |_, inner| {
                // SAFETY: the mirror's `n` bytes are granted and populated in
                // T; `far` is ours and populated.
                unsafe { grow_soft_tlb(&[(far.as_ptr(), n), (warm.as_ptr(), n)])? };
                let src = far.as_slice();
                copy_in(warm, src);
                time_ops(inner, || {
                    copy_in(warm, src);
                    Ok(())
                })
            }),
            Method::new(m::MIRROR_COLD, plan, |ctx, inner| {
                let fresh = mirrors(&ctx.mem, inner, 0, n, Prot::ReadWrite)?;
                let src = &ctx.src.as_slice()[..n];
                let t0 = Instant::now();
                for mir in &fresh {
                    copy_in(mir, src);
                }
                let dt = t0.elapsed().as_secs_f64() / inner as f64;
                drop(fresh);
                Ok(dt)
            }),
            Method::new(m::PWRITE_MEM, plan, |ctx, inner| {
                let src = &ctx.src.as_slice()[..n];
                time_ops(inner, || Ok(ctx.mem.write_all_at(src, MemOffset(0))?))
            }),
            Method::new(m::PVW, plan, |ctx, inner| {
                let src = &ctx.src.as_slice()[..n];
                time_ops(inner, || Ok(sys::pvw(ctx.pid, src, ctx.t_buf)?))
            }),
            Method::new(m::PROC_MEM, plan, |ctx, inner| {
                let src = &ctx.src.as_slice()[..n];
                time_ops(inner, || Ok(ctx.proc_mem.write(src, ctx.t_buf)?))
            }),
        ];
        let res = alternate(ctx, rec, &mut methods);
        add_mibps(rec, g::SEQ_WRITE, n, &methods, &res);
    }
    // The writes stored the pattern T had: check that T still has it.
    let big = ctx.big;
    ctx.clear(big);
    let (pid, addr) = (ctx.pid, ctx.t_buf);
    sys::pvr(pid, &mut ctx.dst.as_mut_slice()[..big], addr)?;
    if let Some(p) = check(&ctx.dst.as_slice()[..big]) {
        rec.note(format!("T's buffer is wrong after the writes, at page {p}"));
    }
    Ok(())
}

fn ptrace(ctx: &mut Ctx, rec: &mut Rec) -> Result<()> {
    let tracer = Ptrace::attach(ctx.pid)?;
    let tracer = &tracer;
    for n in ctx.sizes().into_iter().filter(|&n| n <= PTRACE_CAP) {
        // A sample is one 8-byte call per word of the size: keep it short.
        let plan = match n {
            _ if ctx.quick => Plan::new(3, 1),
            s if s <= K4 => Plan::new(9, 8),
            s if s < M1 => Plan::new(5, 1),
            _ => Plan::new(3, 1),
        };
        let mut methods = [Method::new(m::PTRACE, plan, move |ctx, inner| {
            let addr = ctx.t_buf;
            let dst = &mut ctx.dst.as_mut_slice()[..n];
            time_ops(inner, || {
                for (i, w) in dst.chunks_exact_mut(8).enumerate() {
                    w.copy_from_slice(&tracer.peek(addr + 8 * i as u64)?.to_ne_bytes());
                }
                Ok(())
            })
        })
        .checked(n)];
        let res = alternate(ctx, rec, &mut methods);
        add_mibps(rec, g::SEQ_READ, n, &methods, &res);
        let mut methods = [Method::new(m::PTRACE, plan, move |ctx, inner| {
            let addr = ctx.t_buf;
            let src = &ctx.src.as_slice()[..n];
            time_ops(inner, || {
                for (i, w) in src.chunks_exact(8).enumerate() {
                    let v = u64::from_ne_bytes(w.try_into().unwrap_or_default());
                    tracer.poke(addr + 8 * i as u64, v)?;
                }
                Ok(())
            })
        })];
        let res = alternate(ctx, rec, &mut methods);
        add_mibps(rec, g::SEQ_WRITE, n, &methods, &res);
    }
    rec.report.notes.push(format!(
        "ptrace PEEKDATA/POKEDATA are measured up to {} only (one system call per 8 bytes).",
        size_label(PTRACE_CAP as u64)
    ));
    Ok(())
}

/// Pseudo-random 8-byte aligned offsets below `span` (xorshift64*, fixed
/// seed: every method and every run loads the same words).
pub fn offsets(count: usize, span: usize) -> Vec<u32> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..count)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
            ((r >> 11) % (span / 8) as u64 * 8) as u32
        })
        .collect()
}

fn random8(ctx: &mut Ctx, rec: &mut Rec) -> Result<()> {
    let span = SPAN_64M as usize;
    let (n_fast, n_slow) = if ctx.quick {
        (1 << 18, 2048)
    } else {
        (1 << 20, 16384)
    };
    let samples = ctx.samples(15);
    let offs = offsets(n_fast, span);
    let offs = &offs[..];
    let offs_range = (offs.as_ptr().cast::<u8>(), std::mem::size_of_val(offs));
    // SAFETY: `src` is our own populated buffer of at least 64 MiB, and
    // every offset is below 64 MiB - 8.
    let expect_fast = unsafe { random_loads(ctx.src.as_ptr(), offs) };
    // SAFETY: as above.
    let expect_slow = unsafe { random_loads(ctx.src.as_ptr(), &offs[..n_slow]) };
    let mir = mirror(&ctx.mem, 0, span, Prot::Read)?;
    let mir = &mir;
    let sums = std::cell::RefCell::new(Vec::new());
    let sums = &sums;
    // Syscall methods: 8 bytes a call at each offset.
    let slow = |name: &'static str, read: fn(&Ctx, &mut [u8; 8], u32) -> Result<()>| {
        Method::new(name, Plan::new(samples, n_slow), move |ctx, _| {
            let mut word = [0u8; 8];
            let mut sum = 0u64;
            let t = time_ops(1, || {
                for &off in &offs[..n_slow] {
                    read(ctx, &mut word, off)?;
                    sum = sum.wrapping_add(u64::from_ne_bytes(word));
                }
                Ok(())
            })?;
            sums.borrow_mut().push((name, sum, expect_slow));
            Ok(t / n_slow as f64)
        })
    };
    let mut methods = [
        Method::new(m::LOCAL, Plan::new(samples, n_fast), move |ctx, _| {
            let base = ctx.src.as_ptr();
            // SAFETY: as for `expect_fast`; the offsets array is ours.
            unsafe { grow_soft_tlb(&[(base, span), offs_range])? };
            let mut sum = 0;
            let t = time_ops(1, || {
                // SAFETY: as above.
                sum = black_box(unsafe { random_loads(base, offs) });
                Ok(())
            })?;
            sums.borrow_mut().push((m::LOCAL, sum, expect_fast));
            Ok(t / n_fast as f64)
        }),
        Method::new(m::MIRROR, Plan::new(samples, n_fast), move |_, _| {
            // SAFETY: the mirror is `span` bytes of T's populated, granted
            // buffer (touching it populates its PTEs); T is paused, so the
            // loads race with no store; the offsets array is ours.
            unsafe { grow_soft_tlb(&[(mir.as_ptr(), span), offs_range])? };
            let mut sum = 0;
            let t = time_ops(1, || {
                // SAFETY: as above.
                sum = black_box(unsafe { random_loads(mir.as_ptr(), offs) });
                Ok(())
            })?;
            sums.borrow_mut().push((m::MIRROR, sum, expect_fast));
            Ok(t / n_fast as f64)
        }),
        slow(m::PVR, |ctx, word, off| {
            Ok(sys::pvr(ctx.pid, word, ctx.t_buf + u64::from(off))?)
        }),
        slow(m::PREAD_MEM, |ctx, word, off| {
            if ctx.mem.read_at(word, MemOffset(u64::from(off)))? != 8 {
                bail!("short pread of 8 bytes");
            }
            Ok(())
        }),
        slow(m::PROC_MEM, |ctx, word, off| {
            Ok(ctx.proc_mem.read(word, ctx.t_buf + u64::from(off))?)
        }),
    ];
    let res = alternate(ctx, rec, &mut methods);
    for (mt, s) in methods.iter().zip(&res) {
        rec.add(
            g::RANDOM8,
            mt.name,
            (Some(span), None),
            Unit::MopsPerS,
            mt.plan.inner,
            mops(s),
        );
    }
    let bad: Vec<String> = sums
        .borrow()
        .iter()
        .filter(|(_, got, want)| got != want)
        .map(|(name, got, want)| format!("{name} summed {got:#x}, expected {want:#x}"))
        .collect();
    if !bad.is_empty() {
        rec.note(format!("random8: wrong data: {}", bad.join("; ")));
    }
    Ok(())
}

/// One sample of first touches of every page of a fresh mirror of
/// `mem[offset, offset + span)`: seconds per page.
fn mirror_touch(ctx: &Ctx, offset: u64, span: usize) -> Result<f64> {
    let mir = mirror(&ctx.mem, offset, span, Prot::Read)?;
    let t = time_ops(1, || {
        // SAFETY: a fresh mirror of `span` bytes of T's populated, granted
        // buffer, alive for the call.
        black_box(unsafe { touch_pages(mir.as_ptr(), span) });
        Ok(())
    })?;
    drop(mir);
    Ok(t / (span / PAGE) as f64)
}

/// One sample of a cold mirror read of `mem[offset, offset + n)` into `dst`
/// (`inner` fresh mirrors): seconds per read.
fn mirror_cold(ctx: &mut Ctx, offset: u64, n: usize, inner: usize) -> Result<f64> {
    let fresh = mirrors(&ctx.mem, inner, offset, n, Prot::Read)?;
    let dst = &mut ctx.dst.as_mut_slice()[..n];
    let t0 = Instant::now();
    for mir in &fresh {
        copy_out(mir, dst);
    }
    black_box(dst.as_ptr());
    let dt = t0.elapsed().as_secs_f64() / inner as f64;
    drop(fresh);
    Ok(dt)
}

fn fault(ctx: &mut Ctx, rec: &mut Rec) -> Result<()> {
    let span = FAULT_SPAN as usize;
    let memfd = Memfd::populated(span)?;
    let memfd = &memfd;
    let plan = Plan::new(ctx.samples(41), 1);
    let mut methods = [
        Method::new(m::MIRROR, plan, move |ctx, _| mirror_touch(ctx, 0, span)),
        Method::new(m::LOCAL_SHMEM, plan, move |_, _| {
            let map = memfd.map()?;
            let t = time_ops(1, || {
                // SAFETY: a fresh read-only mapping of the populated memfd,
                // alive for the call.
                black_box(unsafe { touch_pages(map.as_ptr(), map.len()) });
                Ok(())
            })?;
            drop(map);
            Ok(t / (span / PAGE) as f64)
        }),
    ];
    let res = alternate(ctx, rec, &mut methods);
    for (mt, s) in methods.iter().zip(&res) {
        rec.add(
            g::FAULT,
            mt.name,
            (Some(span), None),
            Unit::NsPerPage,
            1,
            scaled(s, 1e9),
        );
    }
    let fab = rec
        .report
        .machine
        .get("fault_around_bytes")
        .cloned()
        .unwrap_or_default();
    rec.report.notes.push(format!(
        "First touch: the local memfd maps {fab} bytes per fault (kernel fault_around_bytes); \
         a mirror maps fault_around_pages = {} pages per read fault.",
        sys::fault_around().map_or("?".into(), |p| p.to_string())
    ));
    Ok(())
}

fn thp(ctx: &mut Ctx, rec: &mut Rec) -> Result<()> {
    let span = SPAN_64M as usize;
    let a_thp = ctx.t.alloc(span, Thp::Huge)?;
    let a_4k = ctx.t.alloc(span, Thp::NoHuge)?;
    let result = thp_figures(ctx, rec, a_thp, a_4k);
    ctx.ctl.unmap(MemOffset(OFF_THP), 2 * span as u64)?;
    ctx.t.free(a_thp)?;
    ctx.t.free(a_4k)?;
    result
}

/// The measurements of [`thp`], which frees T's buffers.
fn thp_figures(ctx: &mut Ctx, rec: &mut Rec, a_thp: u64, a_4k: u64) -> Result<()> {
    let span = SPAN_64M as usize;
    for (addr, off) in [(a_thp, OFF_THP), (a_4k, OFF_4K)] {
        ctx.ctl.map(&Grant::new(
            RemoteAddr(addr),
            MemOffset(off),
            span as u64,
            Prot::Read,
        ))?;
    }
    let kib = |a| sys::anon_huge_kib(ctx.pid, a).map_or("?".into(), |k: u64| k.to_string());
    let note = format!(
        "THP test: T's MADV_HUGEPAGE buffer has AnonHugePages {} KiB of {} KiB; \
         the MADV_NOHUGEPAGE one {} KiB.",
        kib(a_thp),
        span / 1024,
        kib(a_4k)
    );
    rec.report.notes.push(note);
    let plan = Plan::new(ctx.samples(15), 1);
    let pvr = |name, addr| {
        Method::new(name, plan, move |ctx: &mut Ctx, _| {
            let pid = ctx.pid;
            let dst = &mut ctx.dst.as_mut_slice()[..span];
            time_ops(1, || Ok(sys::pvr(pid, dst, addr)?))
        })
        .checked(span)
    };
    let mut methods = [
        Method::new(m::MIRROR_COLD_4K, plan, |ctx, _| {
            mirror_cold(ctx, OFF_4K, span, 1)
        })
        .checked(span),
        Method::new(m::MIRROR_COLD_THP, plan, |ctx, _| {
            mirror_cold(ctx, OFF_THP, span, 1)
        })
        .checked(span),
        Method::new(m::MIRROR_TOUCH_4K, plan, |ctx, _| {
            mirror_touch(ctx, OFF_4K, span)
        }),
        Method::new(m::MIRROR_TOUCH_THP, plan, |ctx, _| {
            mirror_touch(ctx, OFF_THP, span)
        }),
        pvr(m::PVR_4K, a_4k),
        pvr(m::PVR_THP, a_thp),
    ];
    let res = alternate(ctx, rec, &mut methods);
    for (mt, s) in methods.iter().zip(&res) {
        let (unit, values) = if mt.name.contains("touch") {
            (Unit::NsPerPage, scaled(s, 1e9))
        } else {
            (Unit::MibPerS, mibps(s, span))
        };
        rec.add(g::THP, mt.name, (Some(span), None), unit, 1, values);
    }
    Ok(())
}

fn invalidate(ctx: &mut Ctx, rec: &mut Rec) -> Result<()> {
    let span = SPAN_64M as usize;
    let plan = Plan::new(ctx.samples(11), 1);
    let dontneed = |k: usize| {
        Method::new(m::DONTNEED, plan, move |ctx: &mut Ctx, _| {
            ctx.t.touch(ctx.t_buf, span)?;
            let populated = mirrors(&ctx.mem, k, 0, span, Prot::Read)?;
            for mir in &populated {
                // SAFETY: a mirror of `span` bytes of T's buffer, just
                // repopulated by T (which is paused again).
                black_box(unsafe { touch_pages(mir.as_ptr(), span) });
            }
            let dt = ctx.t.dontneed(ctx.t_buf, span)?;
            drop(populated);
            Ok(dt)
        })
        .param(k as u64)
    };
    let mut methods = [dontneed(0), dontneed(1), dontneed(4)];
    let res = alternate(ctx, rec, &mut methods);
    for (mt, s) in methods.iter().zip(&res) {
        rec.add(
            g::INVALIDATE,
            mt.name,
            (Some(span), mt.param),
            Unit::Ms,
            1,
            scaled(s, 1e3),
        );
    }
    ctx.t.touch(ctx.t_buf, span)?;
    Ok(())
}

fn setup(ctx: &mut Ctx, rec: &mut Rec) -> Result<()> {
    let plan = Plan::new(ctx.samples(31), 1);
    let big = ctx.big;
    let mut methods = [
        Method::new(m::SETUP_PIDFD_MEM, plan, |ctx, _| {
            let t0 = Instant::now();
            let pidfd = pidfd_open(ctx.pid as u32)?;
            let (ctl, mem) = pidfd_mem(&pidfd, 0)?;
            ctl.map(&Grant::new(
                RemoteAddr(ctx.t_buf),
                MemOffset(0),
                big as u64,
                Prot::Read,
            ))?;
            let mir = mem.mmap(MemOffset(0), big, Prot::Read)?;
            // SAFETY: the first byte of a fresh mirror of T's populated,
            // granted buffer.
            black_box(unsafe { mir.as_ptr().read_volatile() });
            let dt = t0.elapsed().as_secs_f64();
            drop((mir, mem, ctl, pidfd));
            Ok(dt)
        }),
        Method::new(m::SETUP_PROC_MEM, plan, |ctx, _| {
            let t0 = Instant::now();
            let f = std::fs::File::open(format!("/proc/{}/mem", ctx.pid))?;
            let mut b = [0u8; 1];
            std::os::unix::fs::FileExt::read_exact_at(&f, &mut b, ctx.t_buf)?;
            black_box(b);
            let dt = t0.elapsed().as_secs_f64();
            drop(f);
            Ok(dt)
        }),
    ];
    let res = alternate(ctx, rec, &mut methods);
    for (mt, s) in methods.iter().zip(&res) {
        rec.add(g::SETUP, mt.name, (None, None), Unit::Us, 1, scaled(s, 1e6));
    }

    // The same, step by step, in a separate pass (the clock reads between
    // steps would inflate the total above).
    let mut steps: Vec<[f64; 5]> = Vec::new();
    measure(
        plan,
        || Ok(None),
        |state| {
            let mut lap = Instant::now();
            let mut dt = [0f64; 5];
            let mut tick = |i: usize| {
                dt[i] = lap.elapsed().as_secs_f64();
                lap = Instant::now();
            };
            let pidfd = pidfd_open(ctx.pid as u32)?;
            tick(0);
            let (ctl, mem) = pidfd_mem(&pidfd, 0)?;
            tick(1);
            ctl.map(&Grant::new(
                RemoteAddr(ctx.t_buf),
                MemOffset(0),
                big as u64,
                Prot::Read,
            ))?;
            tick(2);
            let mir = mem.mmap(MemOffset(0), big, Prot::Read)?;
            tick(3);
            // SAFETY: as above.
            black_box(unsafe { mir.as_ptr().read_volatile() });
            tick(4);
            steps.push(dt);
            *state = Some((mir, mem, ctl, pidfd));
            Ok(())
        },
        |state| {
            drop(state);
            Ok(())
        },
    )?;
    for (i, name) in m::SETUP_STEPS.iter().enumerate() {
        // The first pass is the warm-up.
        let s: Vec<f64> = steps.iter().skip(1).map(|d| d[i]).collect();
        rec.add(g::SETUP, name, (None, None), Unit::Us, 1, scaled(&s, 1e6));
    }
    Ok(())
}

/// Cold reads and first touches at several `fault_around_pages`, the values
/// alternating sample by sample (each sample sets the parameter first).
fn fault_around(ctx: &mut Ctx, rec: &mut Rec) -> Result<()> {
    let Some(orig) = sys::fault_around() else {
        rec.note(format!(
            "{} is missing: no fault-around table",
            sys::FAULT_AROUND
        ));
        return Ok(());
    };
    let mut sizes = vec![M1, 16 * M1];
    if !ctx.quick {
        sizes.push(ctx.big);
    }
    let result = fault_around_values(ctx, rec, &sizes);
    sys::set_fault_around(orig).context("restoring fault_around_pages")?;
    result
}

/// The measurements of [`fault_around`], which restores the parameter.
fn fault_around_values(ctx: &mut Ctx, rec: &mut Rec, sizes: &[usize]) -> Result<()> {
    const VALUES: [u32; 3] = [1, 16, 64];
    for &n in sizes {
        let plan = ctx.plan(n);
        let mut methods = VALUES.map(|fa| {
            Method::new(m::MIRROR_COLD, plan, move |ctx, inner| {
                sys::set_fault_around(fa).context("writing fault_around_pages")?;
                mirror_cold(ctx, 0, n, inner)
            })
            .param(u64::from(fa))
            .checked(n)
        });
        let res = alternate(ctx, rec, &mut methods);
        add_mibps(rec, g::FAULT_AROUND, n, &methods, &res);
    }
    let span = FAULT_SPAN as usize;
    let plan = Plan::new(ctx.samples(31), 1);
    let mut methods = VALUES.map(|fa| {
        Method::new(m::MIRROR_TOUCH, plan, move |ctx, _| {
            sys::set_fault_around(fa).context("writing fault_around_pages")?;
            mirror_touch(ctx, 0, span)
        })
        .param(u64::from(fa))
    });
    let res = alternate(ctx, rec, &mut methods);
    for (mt, s) in methods.iter().zip(&res) {
        rec.add(
            g::FAULT_AROUND,
            mt.name,
            (Some(span), mt.param),
            Unit::NsPerPage,
            1,
            scaled(s, 1e9),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_aligned_and_in_range() {
        let o = offsets(10_000, 64 << 20);
        assert!(o.iter().all(|&x| x % 8 == 0 && (x as usize) < (64 << 20)));
        assert_eq!(o, offsets(10_000, 64 << 20), "deterministic");
        let distinct: std::collections::HashSet<_> = o.iter().collect();
        assert!(distinct.len() > 9_900);
    }
}
