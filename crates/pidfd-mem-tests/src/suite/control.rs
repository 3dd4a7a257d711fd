//! M1, M2, U1, K1, K2: the control plane.

use std::os::fd::AsFd;

use pidfd_mem::sys::{self, PidfdMemMap};
use pidfd_mem::{Error, Grant, MemOffset, Prot, RemoteAddr};
use rustix::io::Errno;
use rustix::mm::ProtFlags;

use crate::harness::{Ctx, TestResult};
use crate::util::*;
use crate::{ensure, expect_eq, expect_errno, note};

/// M1: valid grants succeed (read-only, read-write, any mem offset).
pub fn m1_map_ok() -> TestResult {
    let s = Setup::new(2)?;
    let p = pg() as i64;
    raw_map(&s.ctl, s.addr, p * 16, p, RO).ctx("M1: read-only grant")?;
    raw_map(&s.ctl, s.addr, p * 1024 * 1024, 2 * p, RW).ctx("M1: grant at a large offset")?;
    raw_map(&s.ctl, s.addr, (i64::MAX & !(p - 1)) - p, p, RW)
        .ctx("M1: grant ending at the last page of s64")?;
    // Two windows may show the same address of T.
    raw_map(&s.ctl, s.addr, p * 32, 2 * p, RW).ctx("M1: second window on the same T range")?;
    let mut b = [0u8; 1];
    s.mem
        .read_exact_at(&mut b, MemOffset(pg() * 33))
        .ctx("pread second window")?;
    expect_eq!(b[0], 2, "M1: second window shows T's page 1");
    Ok(())
}

/// M1: EINVAL for unaligned address, offset or size.
pub fn m1_map_unaligned_einval() -> TestResult {
    let s = Setup::new(2)?;
    let p = pg() as i64;
    let a = s.addr;
    let cases: [(&str, u64, i64, i64); 7] = [
        ("address + 1", a + 1, 0, p),
        ("address + page/2", a + pg() / 2, 0, p),
        ("offset 1", a, 1, p),
        ("offset page/2 + page", a, p + p / 2, p),
        ("size page + 1", a, 0, p + 1),
        ("size page/2", a, 0, p / 2),
        ("size 1", a, 0, 1),
    ];
    for (what, address, offset, size) in cases {
        expect_errno!(
            raw_map(&s.ctl, address, offset, size, RW),
            Errno::INVAL,
            "M1: MAP with {what}"
        );
    }
    let e = expect_errno!(
        s.ctl.map(&Grant::new(
            RemoteAddr(a + 8),
            MemOffset(0),
            pg(),
            Prot::Read
        )),
        Errno::INVAL,
        "M1: Control::map with unaligned address"
    );
    ensure!(
        matches!(
            e,
            Error::Unaligned {
                what: "address",
                ..
            }
        ),
        "library variant: expected Unaligned address, seen {e:?}"
    );
    Ok(())
}

/// M1: EINVAL for size <= 0 and offset < 0.
pub fn m1_map_size_offset_einval() -> TestResult {
    let s = Setup::new(1)?;
    let p = pg() as i64;
    for size in [0, -p, i64::MIN, -(i64::MAX & !(p - 1))] {
        expect_errno!(
            raw_map(&s.ctl, s.addr, 0, size, RW),
            Errno::INVAL,
            "M1: MAP with size {size}"
        );
    }
    for offset in [-p, i64::MIN, -(1i64 << 40)] {
        expect_errno!(
            raw_map(&s.ctl, s.addr, offset, p, RW),
            Errno::INVAL,
            "M1: MAP with offset {offset}"
        );
    }
    Ok(())
}

/// M1: EINVAL when offset+size or address+size overflows, or the range
/// lies beyond the user address space.
pub fn m1_map_overflow_einval() -> TestResult {
    let s = Setup::new(1)?;
    let p = pg() as i64;
    let top = i64::MAX & !(p - 1);
    expect_errno!(
        raw_map(&s.ctl, s.addr, top, 2 * p, RW),
        Errno::INVAL,
        "M1: offset+size overflows s64"
    );
    expect_errno!(
        raw_map(&s.ctl, s.addr, p, top, RW),
        Errno::INVAL,
        "M1: offset+size overflows s64 (large size)"
    );
    let atop = !(pg() - 1);
    expect_errno!(
        raw_map(&s.ctl, atop, 0, 2 * p, RW),
        Errno::INVAL,
        "M1: address+size overflows u64"
    );
    expect_errno!(
        raw_map(&s.ctl, atop, 0, p, RW),
        Errno::INVAL,
        "M1: address at the top of u64 (kernel space)"
    );
    for address in [1u64 << 63, 0xffff_8000_0000_0000, 1 << 56] {
        expect_errno!(
            raw_map(&s.ctl, address, 0, p, RW),
            Errno::INVAL,
            "M1: address {address:#x} beyond the user address space"
        );
    }
    // A range that starts in user space and ends beyond it.
    expect_errno!(
        raw_map(&s.ctl, (1u64 << 56) - pg(), 0, 1 << 40, RW),
        Errno::INVAL,
        "M1: address+size beyond the user address space"
    );
    Ok(())
}

/// M1: EINVAL for flags other than READ and READ|WRITE.
pub fn m1_map_flags_einval() -> TestResult {
    let s = Setup::new(1)?;
    let p = pg() as i64;
    for flags in [0, 2, 4, 1 | 4, 3 | 4, 8, 0x100, -1, i32::MIN] {
        expect_errno!(
            raw_map(&s.ctl, s.addr, 0, p, flags),
            Errno::INVAL,
            "M1: MAP with flags {flags:#x}"
        );
    }
    Ok(())
}

/// M1: EINVAL for any non-zero padding word.
pub fn m1_map_padding_einval() -> TestResult {
    let s = Setup::new(1)?;
    for i in 0..7 {
        for v in [1, -1] {
            let mut arg = PidfdMemMap {
                address: s.addr,
                offset: 0,
                size: pg() as i64,
                flags: RW,
                padding: [0; 7],
            };
            arg.padding[i] = v;
            expect_errno!(
                sys::map(s.ctl.as_fd(), &arg),
                Errno::INVAL,
                "M1: MAP with padding[{i}] = {v}"
            );
        }
    }
    Ok(())
}

/// M1: EEXIST when the offset window overlaps an existing grant.
pub fn m1_map_overlap_eexist() -> TestResult {
    let t = Target::spawn()?;
    let a = t.alloc(8 * page())?;
    let (ctl, _mem) = t.open()?;
    let p = pg() as i64;
    raw_map(&ctl, a, 2 * p, 2 * p, RW).ctx("first grant [2p, 4p)")?;
    let overlapping: [(&str, i64, i64); 6] = [
        ("the same window", 2 * p, 2 * p),
        ("[3p, 5p)", 3 * p, 2 * p),
        ("[p, 3p)", p, 2 * p),
        ("[0, 8p) covering it", 0, 8 * p),
        ("[3p, 4p) inside it", 3 * p, p),
        ("[2p, 3p) its start", 2 * p, p),
    ];
    for (what, off, size) in overlapping {
        let e = expect_errno!(
            raw_map(&ctl, a, off, size, RW),
            Errno::EXIST,
            "M1: MAP of {what}"
        );
        let _ = e;
    }
    let e = expect_errno!(
        ctl.map(&Grant::new(
            RemoteAddr(a),
            MemOffset(3 * pg()),
            pg(),
            Prot::Read
        )),
        Errno::EXIST,
        "M1: Control::map overlapping"
    );
    ensure!(
        matches!(e, Error::Overlap { .. }),
        "library variant: expected Overlap, seen {e:?}"
    );
    raw_map(&ctl, a, 4 * p, p, RW).ctx("M1: adjacent grant [4p, 5p) must succeed")?;
    raw_map(&ctl, a, p, p, RW).ctx("M1: adjacent grant [p, 2p) must succeed")?;
    // The same T range at another offset is no overlap (offsets are what count).
    raw_map(&ctl, a, 10 * p, 2 * p, RO).ctx("M1: same T range, other offset")?;
    Ok(())
}

/// M1, K1: EPERM after LOCK.
pub fn m1_map_locked_eperm() -> TestResult {
    let s = Setup::new(2)?;
    s.ctl.lock().ctx("LOCK")?;
    let e = expect_errno!(
        s.ctl.map(&Grant::new(
            RemoteAddr(s.addr),
            MemOffset(8 * pg()),
            pg(),
            Prot::Read
        )),
        Errno::PERM,
        "M1/K1: MAP after LOCK"
    );
    ensure!(
        matches!(e, Error::Locked { .. }),
        "library variant: expected Locked, seen {e:?}"
    );
    Ok(())
}

/// M1: ESRCH when T has exited.
pub fn m1_map_esrch() -> TestResult {
    let mut t = Target::spawn()?;
    let a = t.alloc(page())?;
    let (ctl, _mem) = t.open()?;
    t.exit_no_reap()?;
    expect_errno!(
        raw_map(&ctl, a, 0, pg() as i64, RW),
        Errno::SRCH,
        "M1: MAP after T exited (zombie)"
    );
    t.exit_and_reap()?;
    expect_errno!(
        raw_map(&ctl, a, pg() as i64, pg() as i64, RW),
        Errno::SRCH,
        "M1: MAP after T was reaped"
    );
    Ok(())
}

/// M2, C3: a grant is a window: nothing mapped yet is fine; what T maps
/// there at the moment of access is what the mirror shows.
pub fn m2_grant_is_window() -> TestResult {
    let t = Target::spawn()?;
    let a = t.alloc(page())?;
    t.munmap(a, page())?; // now a hole in T
    let (ctl, mem) = t.open()?;
    ctl.map(&Grant::new(
        RemoteAddr(a),
        MemOffset(0),
        pg(),
        Prot::ReadWrite,
    ))
    .ctx("M2: MAP over a range where T maps nothing")?;
    let m = mem
        .mmap(MemOffset(0), page(), Prot::ReadWrite)
        .ctx("A1: mmap")?;
    let mut b = [0u8; 8];
    expect_errno!(
        mem.read_at(&mut b, MemOffset(0)),
        Errno::IO,
        "A3: pread of the hole"
    );
    expect_fault(m.read_obj::<u64>(0), "A2: mirror read of the hole")?;
    t.mmap_fixed(a, page(), ProtFlags::READ | ProtFlags::WRITE)?;
    t.store64(a, 0x1111)?;
    expect_eq!(
        m.read_obj::<u64>(0)?,
        0x1111,
        "M2: the same mirror after T mapped the address"
    );
    mem.read_exact_at(&mut b, MemOffset(0))
        .ctx("pread after T mapped")?;
    expect_eq!(
        u64::from_ne_bytes(b),
        0x1111,
        "M2: pread after T mapped the address"
    );
    // T replaces the page: the mirror follows (C3).
    t.munmap(a, page())?;
    expect_fault(m.read_obj::<u64>(0), "C3: mirror read after T's munmap")?;
    t.mmap_fixed(a, page(), ProtFlags::READ | ProtFlags::WRITE)?;
    t.store64(a, 0x2222)?;
    expect_eq!(
        m.read_obj::<u64>(0)?,
        0x2222,
        "C3: mirror shows T's new page"
    );
    Ok(())
}

/// U1: UNMAP of the middle splits a grant; the rest keeps working; the cut
/// window can be granted again.
pub fn u1_unmap_split() -> TestResult {
    let s = Setup::new(3)?;
    let p = page();
    let m = s
        .mem
        .mmap(MemOffset(0), 3 * p, Prot::ReadWrite)
        .ctx("mmap")?;
    for i in 0..3 {
        expect_eq!(
            m.read_obj::<u8>(i * p)?,
            (i + 1) as u8,
            "page {i} before UNMAP"
        );
    }
    s.ctl
        .unmap(MemOffset(pg()), pg())
        .ctx("U1: UNMAP [p, 2p)")?;
    expect_eq!(m.read_obj::<u8>(0)?, 1, "U1: page 0 after UNMAP of page 1");
    expect_eq!(
        m.read_obj::<u8>(2 * p)?,
        3,
        "U1: page 2 after UNMAP of page 1"
    );
    expect_fault(m.read_obj::<u8>(p), "U1: page 1 after its UNMAP")?;
    let mut b = [0u8; 1];
    expect_errno!(
        s.mem.read_at(&mut b, MemOffset(pg())),
        Errno::IO,
        "U1/A3: pread of the cut page"
    );
    // A pread across the cut stops short at it.
    let mut two = vec![0u8; 2 * p];
    let n = s
        .mem
        .read_at(&mut two, MemOffset(0))
        .ctx("pread across the cut")?;
    expect_eq!(n, p, "A3: short count at the cut");
    // Both remainders are still grants, the cut is free.
    expect_errno!(
        raw_map(&s.ctl, s.addr, 0, pg() as i64, RW),
        Errno::EXIST,
        "U1: left remainder still granted"
    );
    expect_errno!(
        raw_map(&s.ctl, s.addr, 2 * pg() as i64, pg() as i64, RW),
        Errno::EXIST,
        "U1: right remainder still granted"
    );
    raw_map(&s.ctl, s.addr + 2 * pg(), pg() as i64, pg() as i64, RO)
        .ctx("U1: MAP into the cut must succeed")?;
    expect_eq!(m.read_obj::<u8>(p)?, 3, "U1: the cut now shows T's page 2");
    // Cut across an edge: [2p, 4p) removes the right remainder only.
    s.ctl
        .unmap(MemOffset(2 * pg()), 2 * pg())
        .ctx("U1: UNMAP straddling the end")?;
    expect_fault(m.read_obj::<u8>(2 * p), "U1: page 2 after UNMAP [2p, 4p)")?;
    expect_eq!(m.read_obj::<u8>(0)?, 1, "U1: page 0 untouched");
    Ok(())
}

/// U1: UNMAP of a range without grants succeeds.
pub fn u1_unmap_no_grant_ok() -> TestResult {
    let s = Setup::new(1)?;
    let p = pg();
    s.ctl
        .unmap(MemOffset(100 * p), p)
        .ctx("U1: UNMAP of an empty range")?;
    s.ctl
        .unmap(MemOffset(1 << 40), 1 << 30)
        .ctx("U1: UNMAP of a large empty range")?;
    let t = Target::spawn()?;
    let (ctl, _mem) = t.open()?;
    ctl.unmap(MemOffset(0), p).ctx("U1: UNMAP on a fresh ctl")?;
    let mut b = [0u8; 1];
    s.mem
        .read_exact_at(&mut b, MemOffset(0))
        .ctx("the real grant is untouched")?;
    Ok(())
}

/// U1: UNMAP works after T has exited (it lists no ESRCH), also where it
/// splits a grant; MAP then answers ESRCH (M1). The mirror keeps faulting.
pub fn u1_unmap_after_exit() -> TestResult {
    let mut s = Setup::new(4)?;
    let p = pg();
    let m = s.mem.mmap(MemOffset(0), 4 * page(), Prot::Read)?;
    s.t.exit_and_reap()?;
    s.ctl
        .unmap(MemOffset(p), p)
        .ctx("U1: UNMAP splitting a grant after T exited")?;
    s.ctl
        .unmap(MemOffset(0), 4 * p)
        .ctx("U1: UNMAP of the rest after T exited")?;
    expect_errno!(
        s.ctl
            .map(&Grant::new(RemoteAddr(s.addr), MemOffset(0), p, Prot::Read)),
        Errno::SRCH,
        "M1: MAP after T exited"
    );
    expect_fault(m.read_obj::<u8>(0), "U1: the mirror after exit and UNMAP")?;
    Ok(())
}

/// U1: the same EINVAL rules as M1.
pub fn u1_unmap_einval() -> TestResult {
    let s = Setup::new(1)?;
    let p = pg() as i64;
    let top = i64::MAX & !(p - 1);
    let cases: [(&str, i64, i64); 9] = [
        ("offset 1", 1, p),
        ("offset page/2", p / 2, p),
        ("size page + 1", 0, p + 1),
        ("size 1", 0, 1),
        ("size 0", 0, 0),
        ("size -page", 0, -p),
        ("offset -page", -p, p),
        ("offset i64::MIN", i64::MIN, p),
        ("offset+size overflowing", top, 2 * p),
    ];
    for (what, off, size) in cases {
        expect_errno!(
            raw_unmap(&s.ctl, off, size),
            Errno::INVAL,
            "U1: UNMAP with {what}"
        );
    }
    Ok(())
}

/// U1, K1: EPERM after LOCK.
pub fn u1_unmap_locked_eperm() -> TestResult {
    let s = Setup::new(1)?;
    s.ctl.lock().ctx("LOCK")?;
    let e = expect_errno!(
        s.ctl.unmap(MemOffset(0), pg()),
        Errno::PERM,
        "U1/K1: UNMAP after LOCK"
    );
    ensure!(
        matches!(e, Error::Locked { .. }),
        "library variant: expected Locked, seen {e:?}"
    );
    let mut b = [0u8; 1];
    s.mem
        .read_exact_at(&mut b, MemOffset(0))
        .ctx("the grant survives the refused UNMAP")?;
    Ok(())
}

/// U1: before UNMAP returns, every mirror PTE in every mapper is gone.
pub fn u1_unmap_zaps_every_mapper() -> TestResult {
    let s = Setup::new(2)?;
    let p = page();
    let m = s.mem.mmap(MemOffset(0), 2 * p, Prot::Read).ctx("mmap")?;
    expect_eq!(m.read_obj::<u8>(0)?, 1, "populate page 0");
    // A second mapper, in another process, with its own populated mirror.
    let (go_r, go_w) = rustix::pipe::pipe().ctx("pipe")?;
    let (ready_r, ready_w) = rustix::pipe::pipe().ctx("pipe")?;
    let mem = &s.mem;
    // SAFETY: tests are single-threaded.
    let child = unsafe { libc::fork() };
    if child == 0 {
        let code = (|| {
            let Ok(m2) = mem.mmap(MemOffset(0), 2 * p, Prot::Read) else {
                return 2;
            };
            if m2.read_obj::<u8>(0) != Ok(1) {
                return 3;
            }
            let _ = rustix::io::write(&ready_w, b"r");
            let mut b = [0u8; 1];
            let _ = rustix::io::read(&go_r, &mut b);
            match m2.read_obj::<u8>(0) {
                Err(pidfd_mem::MirrorError::Fault { .. }) => 0,
                Ok(v) => {
                    note!("U1: second mapper still reads {v} after UNMAP");
                    1
                }
                Err(e) => {
                    note!("U1: second mapper: {e}");
                    4
                }
            }
        })();
        // SAFETY: ending the helper.
        unsafe { libc::_exit(code) };
    }
    ensure!(child > 0, "fork failed");
    let mut b = [0u8; 1];
    rustix::io::read(&ready_r, &mut b).ctx("wait for the second mapper")?;
    s.ctl.unmap(MemOffset(0), pg()).ctx("UNMAP page 0")?;
    expect_fault(m.read_obj::<u8>(0), "U1: this mapper after UNMAP")?;
    expect_eq!(m.read_obj::<u8>(p)?, 2, "U1: page 1 untouched");
    rustix::io::write(&go_w, b"g").ctx("release the second mapper")?;
    let mut st = 0;
    // SAFETY: reaping our child.
    unsafe { libc::waitpid(child, &mut st, 0) };
    let code = if libc::WIFEXITED(st) {
        libc::WEXITSTATUS(st)
    } else {
        128 + libc::WTERMSIG(st)
    };
    expect_eq!(
        code,
        0,
        "second mapper exit code (0 = saw SIGBUS after UNMAP)"
    );
    Ok(())
}

/// U1: the next access after UNMAP raises SIGBUS (unguarded access).
pub fn u1_unmap_then_sigbus() -> TestResult {
    let s = Setup::new(1)?;
    let m = RawMap::new(
        &s.mem,
        0,
        page(),
        ProtFlags::READ,
        rustix::mm::MapFlags::SHARED,
    )
    .ctx("mmap")?;
    expect_eq!(m.read(0), 1, "populated");
    s.ctl.unmap(MemOffset(0), pg()).ctx("UNMAP")?;
    let v = m.read(0);
    crate::fail!("U1: read after UNMAP returned {v} instead of raising SIGBUS")
}

/// K1: LOCK forbids MAP and UNMAP (EPERM), a second LOCK succeeds, existing
/// grants keep working.
pub fn k1_lock() -> TestResult {
    let s = Setup::new(1)?;
    s.ctl.lock().ctx("K1: LOCK")?;
    expect_errno!(
        raw_map(&s.ctl, s.addr, 4 * pg() as i64, pg() as i64, RO),
        Errno::PERM,
        "K1: MAP after LOCK"
    );
    expect_errno!(
        raw_unmap(&s.ctl, 0, pg() as i64),
        Errno::PERM,
        "K1: UNMAP after LOCK"
    );
    expect_errno!(
        raw_unmap(&s.ctl, 100 * pg() as i64, pg() as i64),
        Errno::PERM,
        "K1: UNMAP of nothing after LOCK"
    );
    s.ctl.lock().ctx("K1: a second LOCK must succeed")?;
    let mut b = [0u8; 1];
    s.mem
        .read_exact_at(&mut b, MemOffset(0))
        .ctx("K1: grants work after LOCK")?;
    expect_eq!(b[0], 1, "K1: value after LOCK");
    Ok(())
}

/// K1: LOCK's argument must be 0.
pub fn k1_lock_arg_einval() -> TestResult {
    let s = Setup::new(1)?;
    for arg in [1usize, 0x1000, usize::MAX] {
        expect_errno!(
            sys::lock_with_arg(s.ctl.as_fd(), arg),
            Errno::INVAL,
            "K1: LOCK with argument {arg:#x}"
        );
    }
    raw_map(&s.ctl, s.addr, 4 * pg() as i64, pg() as i64, RO)
        .ctx("K1: a refused LOCK does not lock")?;
    sys::lock_with_arg(s.ctl.as_fd(), 0).ctx("K1: LOCK with argument 0")?;
    expect_errno!(
        raw_map(&s.ctl, s.addr, 8 * pg() as i64, pg() as i64, RO),
        Errno::PERM,
        "K1: locked now"
    );
    Ok(())
}

/// K2: closing ctl leaves the grants as they are.
pub fn k2_close_ctl_keeps_grants() -> TestResult {
    let s = Setup::new(2)?;
    let Setup { t, addr, ctl, mem } = s;
    drop(ctl);
    let m = mem
        .mmap(MemOffset(0), 2 * page(), Prot::ReadWrite)
        .ctx("K2: mmap after closing ctl")?;
    expect_eq!(m.read_obj::<u8>(page())?, 2, "K2: page 1 after closing ctl");
    t.store64(addr, 0x4242)?;
    expect_eq!(
        m.read_obj::<u64>(0)?,
        0x4242,
        "K2: T's store after closing ctl"
    );
    let mut b = [0u8; 8];
    mem.read_exact_at(&mut b, MemOffset(0))
        .ctx("K2: pread after closing ctl")?;
    Ok(())
}
