//! A1..A8: the access fd and mirrors.

use std::os::unix::fs::FileExt;

use pidfd_mem::{pidfd_mem, pidfd_open, Access, Control, Grant, MemOffset, Prot, RemoteAddr};
use rustix::io::Errno;
use rustix::mm::{MapFlags, MprotectFlags, MremapFlags, ProtFlags};

use crate::harness::{Ctx, Failure, TestResult};
use crate::util::*;
use crate::{ensure, expect_eq, expect_errno, fail, note, skip};

/// A1: MAP_PRIVATE is EINVAL; MAP_SHARED works.
pub fn a1_map_private_einval() -> TestResult {
    let s = Setup::new(1)?;
    expect_errno!(
        RawMap::new(&s.mem, 0, page(), ProtFlags::READ, MapFlags::PRIVATE).map(|m| m.len),
        Errno::INVAL,
        "A1: mmap(MAP_PRIVATE) of mem"
    );
    expect_errno!(
        RawMap::new(
            &s.mem,
            0,
            page(),
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::PRIVATE
        )
        .map(|m| m.len),
        Errno::INVAL,
        "A1: mmap(MAP_PRIVATE, PROT_WRITE) of mem"
    );
    let m = RawMap::new(&s.mem, 0, page(), ProtFlags::READ, MapFlags::SHARED)
        .ctx("A1: mmap(MAP_SHARED)")?;
    expect_eq!(m.read(0), 1, "A1: shared mirror reads T");
    Ok(())
}

/// A1: PROT_WRITE over a range holding a read-only grant is EACCES.
pub fn a1_write_over_ro_grant_eacces() -> TestResult {
    let t = Target::spawn()?;
    let a = t.alloc(2 * page())?;
    let (ctl, mem) = t.open()?;
    ctl.map(&Grant::new(RemoteAddr(a), MemOffset(0), pg(), Prot::Read))?;
    ctl.map(&Grant::new(
        RemoteAddr(a + pg()),
        MemOffset(pg()),
        pg(),
        Prot::ReadWrite,
    ))?;
    let e = expect_errno!(
        mem.mmap(MemOffset(0), page(), Prot::ReadWrite)
            .map(|m| m.len()),
        Errno::ACCESS,
        "A1: PROT_WRITE mmap of a read-only grant"
    );
    ensure!(
        matches!(e, pidfd_mem::Error::AccessDenied { .. }),
        "library variant: expected AccessDenied, seen {e:?}"
    );
    expect_errno!(
        mem.mmap(MemOffset(0), 2 * page(), Prot::ReadWrite)
            .map(|m| m.len()),
        Errno::ACCESS,
        "A1: PROT_WRITE mmap of [RO grant, RW grant)"
    );
    mem.mmap(MemOffset(0), page(), Prot::Read)
        .ctx("A1: PROT_READ mmap of a read-only grant")?;
    mem.mmap(MemOffset(pg()), page(), Prot::ReadWrite)
        .ctx("A1: PROT_WRITE mmap of a read-write grant")?;
    Ok(())
}

/// A1: a read-only-grant mirror cannot be made writable by mprotect.
pub fn a1_mprotect_refused() -> TestResult {
    let t = Target::spawn()?;
    let a = t.alloc(page())?;
    let (ctl, mem) = t.open()?;
    ctl.map(&Grant::new(RemoteAddr(a), MemOffset(0), pg(), Prot::Read))?;
    let m = RawMap::new(&mem, 0, page(), ProtFlags::READ, MapFlags::SHARED).ctx("mmap RO")?;
    // SAFETY: changing the protection of our own mapping.
    let r = unsafe {
        rustix::mm::mprotect(
            m.ptr.cast(),
            m.len,
            MprotectFlags::READ | MprotectFlags::WRITE,
        )
    };
    expect_errno!(
        r,
        Errno::ACCESS,
        "A1: mprotect(PROT_WRITE) of a read-only-grant mirror"
    );
    Ok(())
}

/// A1: a mirror cannot grow by mremap; it can move, split and be partly
/// unmapped.
pub fn a1_mremap() -> TestResult {
    let s = Setup::new(4)?;
    let p = page();
    let mut m =
        RawMap::new(&s.mem, 0, 2 * p, ProtFlags::READ, MapFlags::SHARED).ctx("mmap 2 pages")?;
    expect_eq!(m.read(p), 2, "before mremap");
    // SAFETY: resizing our own mapping; on success we would own the result.
    let r = unsafe { rustix::mm::mremap(m.ptr.cast(), m.len, 4 * p, MremapFlags::MAYMOVE) };
    match r {
        Ok(np) => {
            m.ptr = np.cast();
            m.len = 4 * p;
            fail!("A1: mremap grew a mirror from 2 to 4 pages; it must be refused");
        }
        Err(e) => note!("A1: mremap grow refused with {}", pidfd_mem::ErrnoName(e)),
    }
    // SAFETY: as above, without MAYMOVE.
    let r = unsafe { rustix::mm::mremap(m.ptr.cast(), m.len, 3 * p, MremapFlags::empty()) };
    if let Ok(np) = r {
        m.ptr = np.cast();
        m.len = 3 * p;
        fail!("A1: mremap grew a mirror in place; it must be refused");
    }
    // Move: reserve a destination, then mremap there.
    match mremap_onto_reserved(&s.mem, m.ptr, 2 * p) {
        Ok(np) => {
            m.ptr = np;
            m.len = 2 * p;
        }
        Err(e) => fail!(
            "A1: moving a mirror with mremap must work, seen {}",
            pidfd_mem::ErrnoName(e)
        ),
    }
    expect_eq!(m.read(0), 1, "A1: moved mirror, page 0");
    expect_eq!(m.read(p), 2, "A1: moved mirror, page 1");
    // Split: mprotect half, unmap half.
    // SAFETY: our mapping.
    unsafe { rustix::mm::mprotect(m.ptr.cast(), p, MprotectFlags::empty()) }
        .ctx("A1: split by mprotect")?;
    expect_eq!(m.read(p), 2, "A1: the other half after the split");
    // SAFETY: our mapping; afterwards `m` covers only the second page.
    unsafe { rustix::mm::munmap(m.ptr.cast(), p) }.ctx("A1: partial munmap")?;
    // SAFETY: still inside our mapping.
    m.ptr = unsafe { m.ptr.add(p) };
    m.len = p;
    expect_eq!(m.read(0), 2, "A1: the rest after a partial munmap");
    s.t.store64(s.addr + pg(), 0x5a)?;
    expect_eq!(m.read(0), 0x5a, "A1: the rest stays coherent");
    Ok(())
}

/// A1, C3: the parts of a mirror split by munmap and moved by mremap keep
/// dropping the pages T replaces: each part is found where it is now.
pub fn a1_split_and_moved_mirror_drops_replaced_pages() -> TestResult {
    let s = Setup::new(4)?;
    let p = page();
    let mut m =
        RawMap::new(&s.mem, 0, 4 * p, ProtFlags::READ, MapFlags::SHARED).ctx("mmap 4 pages")?;
    for i in 0..4 {
        expect_eq!(m.read(i * p), (i + 1) as u8, "page {i} before the split");
    }
    // SAFETY: the second page of our own mapping.
    unsafe { rustix::mm::munmap(m.ptr.add(p).cast(), p) }.ctx("A1: munmap page 1")?;
    // SAFETY: still inside our mapping (its last two pages).
    let r = mremap_onto_reserved(&s.mem, unsafe { m.ptr.add(2 * p) }, 2 * p);
    // From here `m` is page 0 only.
    m.len = p;
    let moved = match r {
        Ok(ptr) => RawMap { ptr, len: 2 * p },
        Err(e) => fail!(
            "A1: mremap of part of a mirror: {}",
            pidfd_mem::ErrnoName(e)
        ),
    };
    expect_eq!(moved.read(0), 3, "A1: moved part, page 2");
    for round in 0..3u8 {
        // T's fork keeps the old pages alive with their old bytes, so that
        // a PTE left to them reads them; one DONTNEED over all four pages
        // is one invalidation across every part of the mirror.
        let _keeper = s.t.fork()?;
        s.t.madvise(s.addr, 4 * p, libc::MADV_DONTNEED)?;
        for i in [0usize, 2, 3] {
            s.t.fill(s.addr + (i * p) as u64, p, 0x40 + 0x10 * round + i as u8)?;
        }
        expect_eq!(
            m.read(0),
            0x40 + 0x10 * round,
            "C3: split-off page 0 after T replaced it (round {round})"
        );
        expect_eq!(
            moved.read(0),
            0x42 + 0x10 * round,
            "C3: moved page 2 after T replaced it (round {round})"
        );
        expect_eq!(
            moved.read(p),
            0x43 + 0x10 * round,
            "C3: moved page 3 after T replaced it (round {round})"
        );
    }
    Ok(())
}

/// A2: where the offset has no grant, or T maps nothing, or maps it
/// PROT_NONE, or read-only for a write, the mirror access is SIGBUS
/// (caught as MirrorError::Fault); mmap itself succeeds (fault time).
pub fn a2_faults_are_errors() -> TestResult {
    let t = Target::spawn()?;
    let p = page();
    let hole = t.alloc(p)?;
    t.munmap(hole, p)?;
    let none = t.mmap_anon(p, ProtFlags::empty())?;
    let ro = t.mmap_anon(p, ProtFlags::READ)?;
    let (ctl, mem) = t.open()?;
    ctl.map(&Grant::new(
        RemoteAddr(hole),
        MemOffset(0),
        pg(),
        Prot::ReadWrite,
    ))?;
    ctl.map(&Grant::new(
        RemoteAddr(none),
        MemOffset(pg()),
        pg(),
        Prot::ReadWrite,
    ))?;
    ctl.map(&Grant::new(
        RemoteAddr(ro),
        MemOffset(2 * pg()),
        pg(),
        Prot::ReadWrite,
    ))?;
    // offset 3p: no grant.
    let m = mem
        .mmap(MemOffset(0), 4 * p, Prot::ReadWrite)
        .ctx("A2: mmap over holes and ungranted offsets")?;
    expect_fault(m.read_obj::<u8>(0), "A2: read where T maps nothing")?;
    expect_fault(m.write_obj(0, 1u8), "A2: write where T maps nothing")?;
    expect_fault(m.read_obj::<u8>(p), "A2: read of T's PROT_NONE page")?;
    expect_fault(m.write_obj(p, 1u8), "A2: write to T's PROT_NONE page")?;
    expect_eq!(
        m.read_obj::<u8>(2 * p)?,
        0,
        "A2: read of T's read-only page (zeros)"
    );
    expect_fault(m.write_obj(2 * p, 1u8), "A2: write to T's read-only VMA")?;
    expect_fault(
        m.read_obj::<u8>(3 * p),
        "A2: read of an offset without grant",
    )?;
    expect_fault(
        m.load_u64(3 * p, std::sync::atomic::Ordering::SeqCst),
        "A2: atomic load without grant",
    )?;
    Ok(())
}

fn raw_setup(
    prot: ProtFlags,
    grant: Option<Prot>,
    t_prot: Option<ProtFlags>,
) -> Result<(Target, RawMap, pidfd_mem::Control, pidfd_mem::Access), Failure> {
    let t = Target::spawn()?;
    let a = t.alloc(page())?;
    match t_prot {
        None => t.munmap(a, page())?,
        Some(pr) => t.mprotect(a, page(), pr)?,
    }
    let (ctl, mem) = t.open()?;
    if let Some(g) = grant {
        ctl.map(&Grant::new(RemoteAddr(a), MemOffset(0), pg(), g))?;
    }
    let m = RawMap::new(&mem, 0, page(), prot, MapFlags::SHARED).ctx("mmap")?;
    Ok((t, m, ctl, mem))
}

/// A2: a hole in T raises SIGBUS (unguarded).
pub fn a2_hole_sigbus() -> TestResult {
    let (_t, m, _c, _a) = raw_setup(ProtFlags::READ, Some(Prot::Read), None)?;
    let v = m.read(0);
    fail!("A2: read of a hole returned {v} instead of raising SIGBUS")
}

/// A2: an offset without grant raises SIGBUS.
pub fn a2_ungranted_sigbus() -> TestResult {
    let (_t, m, _c, _a) = raw_setup(
        ProtFlags::READ,
        None,
        Some(ProtFlags::READ | ProtFlags::WRITE),
    )?;
    let v = m.read(0);
    fail!("A2: read without grant returned {v} instead of raising SIGBUS")
}

/// A2: T's PROT_NONE page raises SIGBUS.
pub fn a2_prot_none_sigbus() -> TestResult {
    let (_t, m, _c, _a) = raw_setup(ProtFlags::READ, Some(Prot::Read), Some(ProtFlags::empty()))?;
    let v = m.read(0);
    fail!("A2: read of PROT_NONE returned {v} instead of raising SIGBUS")
}

/// A2: a write to T's read-only VMA raises SIGBUS (reads work).
pub fn a2_ro_vma_write_sigbus() -> TestResult {
    let (_t, m, _c, _a) = raw_setup(
        ProtFlags::READ | ProtFlags::WRITE,
        Some(Prot::ReadWrite),
        Some(ProtFlags::READ),
    )?;
    expect_eq!(m.read(0), 0, "A2: read of a read-only VMA works");
    m.write(0, 1);
    fail!("A2: write to T's read-only VMA did not raise SIGBUS")
}

/// A2: where T has a VMA but no page, reads show zeros (and allocate
/// nothing visible); a write allocates the page in T.
pub fn a2_zeros_and_write_allocates() -> TestResult {
    let t = Target::spawn()?;
    let p = page();
    let a = t.alloc(4 * p)?; // never touched by T
    let (_ctl, mem) = t.open_granted(a, 0, 4 * p, Prot::ReadWrite)?;
    let m = mem.mmap(MemOffset(0), 4 * p, Prot::ReadWrite)?;
    let mut buf = vec![0xffu8; 4 * p];
    m.copy_to(0, &mut buf).ctx("A2: read of untouched memory")?;
    ensure!(
        buf.iter().all(|&b| b == 0),
        "A2: untouched memory must read as zeros"
    );
    let mut pb = vec![0xffu8; p];
    mem.read_exact_at(&mut pb, MemOffset(pg()))
        .ctx("A3: pread of untouched memory")?;
    ensure!(
        pb.iter().all(|&b| b == 0),
        "A3: pread of untouched memory must give zeros"
    );
    m.write_obj(2 * p + 16, 0xfeed_u64)
        .ctx("A2: write to an untouched page")?;
    expect_eq!(
        t.load64(a + 2 * pg() + 16)?,
        0xfeed,
        "A2: T sees the page the mirror allocated"
    );
    expect_eq!(t.sum(a + 3 * pg(), p)?, 0, "A2: other pages stay zero");
    Ok(())
}

/// Makes sure at least `n` 2 MiB huge pages are reserved (root in the guest).
fn reserve_huge_pages(n: u32) {
    let path = "/proc/sys/vm/nr_hugepages";
    let have: u32 = std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if have < n {
        let _ = std::fs::write(path, n.to_string());
    }
}

/// A2a: a regular file's page cache (here the test program itself, on the
/// host root shared over 9p), mapped read-only by T, read through a mirror
/// byte for byte as the file holds it.
pub fn a2a_regular_file_page_cache() -> TestResult {
    let exe = std::env::current_exe().ctx("current_exe")?;
    let data = std::fs::read(&exe).ctx("reading the test program")?;
    let len = (data.len().min(1 << 20) / page()) * page();
    ensure!(len > 0, "the test program is shorter than a page");
    let f = std::fs::File::open(&exe).ctx("open")?;
    // Mapped before T is forked, so T has it at the same address.
    let map = RawMap::new(&f, 0, len, ProtFlags::READ, MapFlags::PRIVATE).ctx("mmap the file")?;
    let t = Target::spawn()?;
    let (ctl, mem) = t.open()?;
    ctl.map(&Grant::new(
        RemoteAddr(map.ptr as u64),
        MemOffset(0),
        len as u64,
        Prot::Read,
    ))?;
    let m = mem.mmap(MemOffset(0), len, Prot::Read)?;
    let mut got = vec![0u8; len];
    m.copy_to(0, &mut got)?;
    ensure!(
        got == data[..len],
        "A2a: the mirror of T's file mapping differs from the file"
    );
    Ok(())
}

/// A2a: every kind of memory T reaches with loads and stores can be
/// mirrored: private and shared anonymous, memfd, regular file (tmpfs),
/// THP, hugetlbfs (the test reserves huge pages when there are none; skipped
/// only if the kernel has no hugetlb at all).
pub fn a2a_memory_kinds() -> TestResult {
    reserve_huge_pages(4);
    let t = Target::spawn()?;
    let p = page();
    let huge = 2 << 20;
    let mut kinds: Vec<(&str, u64, usize)> = vec![
        ("private anonymous", t.alloc(2 * p)?, 2 * p),
        ("shared anonymous", t.mmap_shared(2 * p)?, 2 * p),
        ("memfd", t.mmap_memfd(2 * p)?, 2 * p),
    ];
    match t.mmap_file(2 * p) {
        Ok(a) => kinds.push(("regular file (/tmp)", a, 2 * p)),
        Err(e) => note!(
            "A2a: no regular file in /tmp ({}), not checked",
            pidfd_mem::ErrnoName(e)
        ),
    }
    // THP: a 2 MiB aligned region inside 4 MiB, MADV_HUGEPAGE.
    let region = t.alloc(2 * huge)?;
    let thp = (region + huge as u64 - 1) & !(huge as u64 - 1);
    let _ = t.madvise(thp, huge, libc::MADV_HUGEPAGE);
    kinds.push(("anonymous with MADV_HUGEPAGE", thp, huge));
    match t.mmap_huge(huge) {
        Ok(a) => kinds.push(("hugetlb", a, huge)),
        Err(e) => note!(
            "A2a: no hugetlb pages ({}), hugetlb not checked",
            pidfd_mem::ErrnoName(e)
        ),
    }
    let (ctl, mem) = t.open()?;
    let mut off = 0u64;
    for (i, (kind, addr, len)) in kinds.iter().enumerate() {
        let byte = 0x10 + i as u8;
        t.fill(*addr, *len, byte)?;
        ctl.map(&Grant::new(
            RemoteAddr(*addr),
            MemOffset(off),
            *len as u64,
            Prot::ReadWrite,
        ))
        .ctx(format!("A2a: MAP {kind}"))?;
        let m = mem
            .mmap(MemOffset(off), *len, Prot::ReadWrite)
            .ctx(format!("A2a: mmap {kind}"))?;
        expect_eq!(
            m.read_obj::<u8>(len - 1)?,
            byte,
            "A2a: {kind}: last byte through the mirror"
        );
        m.write_obj(8, 0x7777_u64)
            .ctx(format!("A2a: {kind}: write"))?;
        expect_eq!(
            t.load64(addr + 8)?,
            0x7777,
            "A2a: {kind}: T sees the mirror's store"
        );
        t.store64(*addr + 16, 0x8888)?;
        expect_eq!(
            m.read_obj::<u64>(16)?,
            0x8888,
            "A2a: {kind}: the mirror sees T's store"
        );
        off += (*len as u64).max(huge as u64);
    }
    Ok(())
}

/// A3: pread/pwrite copy from/to T at the granted offsets.
pub fn a3_pread_pwrite() -> TestResult {
    let s = Setup::new(2)?;
    let p = page();
    let mut buf = vec![0u8; 2 * p];
    let n = s
        .mem
        .read_at(&mut buf, MemOffset(0))
        .ctx("A3: pread 2 pages")?;
    expect_eq!(n, 2 * p, "A3: pread count");
    ensure!(
        buf[..p].iter().all(|&b| b == 1) && buf[p..].iter().all(|&b| b == 2),
        "A3: pread content"
    );
    let n = s
        .mem
        .write_at(&[9u8; 100], MemOffset(pg() - 50))
        .ctx("A3: pwrite across pages")?;
    expect_eq!(n, 100, "A3: pwrite count");
    expect_eq!(
        s.t.sum(s.addr + pg() - 50, 100)?,
        900,
        "A3: T sees the pwrite"
    );
    Ok(())
}

/// A3: read/write with lseek work like pread/pwrite.
pub fn a3_read_write_lseek() -> TestResult {
    let s = Setup::new(2)?;
    rustix::fs::seek(&s.mem, rustix::fs::SeekFrom::Start(pg())).ctx("A3: lseek")?;
    let mut b = [0u8; 4];
    let n = rustix::io::read(&s.mem, &mut b).ctx("A3: read")?;
    expect_eq!((n, b), (4, [2u8; 4]), "A3: read at the lseek position");
    let pos = rustix::fs::seek(&s.mem, rustix::fs::SeekFrom::Current(0)).ctx("lseek")?;
    expect_eq!(pos, pg() + 4, "A3: position after read");
    let n = rustix::io::write(&s.mem, b"wxyz").ctx("A3: write")?;
    expect_eq!(n, 4, "A3: write count");
    expect_eq!(
        s.t.load64(s.addr + pg())?,
        u64::from_ne_bytes(*b"\x02\x02\x02\x02wxyz"),
        "A3: T sees write()"
    );
    Ok(())
}

/// A3: short count at the first byte that cannot be copied.
pub fn a3_short_count() -> TestResult {
    let t = Target::spawn()?;
    let p = page();
    let a = t.alloc(3 * p)?;
    t.fill(a, 3 * p, 5)?;
    t.munmap(a + pg(), p)?; // page 1 is a hole
    let (ctl, mem) = t.open()?;
    ctl.map(&Grant::new(
        RemoteAddr(a),
        MemOffset(0),
        3 * pg(),
        Prot::ReadWrite,
    ))?;
    ctl.map(&Grant::new(
        RemoteAddr(a + 2 * pg()),
        MemOffset(8 * pg()),
        pg(),
        Prot::ReadWrite,
    ))?;
    let mut buf = vec![0u8; 2 * p];
    expect_eq!(
        mem.read_at(&mut buf, MemOffset(0))
            .ctx("pread into the hole")?,
        p,
        "A3: pread stops at the hole"
    );
    expect_eq!(
        mem.read_at(&mut buf[..16], MemOffset(pg() - 8))
            .ctx("pread across")?,
        8,
        "A3: pread of 16 bytes, 8 before the hole"
    );
    expect_eq!(
        mem.write_at(&buf, MemOffset(0))
            .ctx("pwrite into the hole")?,
        p,
        "A3: pwrite stops at the hole"
    );
    expect_eq!(
        mem.read_at(&mut buf, MemOffset(8 * pg()))
            .ctx("pread past the grant")?,
        p,
        "A3: pread stops at the end of the grant"
    );
    Ok(())
}

/// A3: EIO when the first byte cannot be copied (no grant, hole,
/// PROT_NONE).
pub fn a3_eio() -> TestResult {
    let t = Target::spawn()?;
    let p = page();
    let hole = t.alloc(p)?;
    t.munmap(hole, p)?;
    let none = t.mmap_anon(p, ProtFlags::empty())?;
    let (ctl, mem) = t.open()?;
    ctl.map(&Grant::new(
        RemoteAddr(hole),
        MemOffset(0),
        pg(),
        Prot::ReadWrite,
    ))?;
    ctl.map(&Grant::new(
        RemoteAddr(none),
        MemOffset(pg()),
        pg(),
        Prot::ReadWrite,
    ))?;
    let mut b = [0u8; 8];
    for (what, off) in [
        ("a hole", 0),
        ("PROT_NONE", pg()),
        ("no grant", 2 * pg()),
        ("no grant, far", 1 << 40),
    ] {
        let e = expect_errno!(
            mem.read_at(&mut b, MemOffset(off)),
            Errno::IO,
            "A3: pread of {what}"
        );
        ensure!(
            matches!(e, pidfd_mem::Error::Io { .. }),
            "library variant: expected Io, seen {e:?}"
        );
        expect_errno!(
            mem.write_at(&b, MemOffset(off)),
            Errno::IO,
            "A3: pwrite of {what}"
        );
    }
    Ok(())
}

/// A3: EACCES for a write whose first byte lies in a read-only grant.
pub fn a3_eacces() -> TestResult {
    let t = Target::spawn()?;
    let a = t.alloc(2 * page())?;
    let (ctl, mem) = t.open()?;
    ctl.map(&Grant::new(
        RemoteAddr(a),
        MemOffset(0),
        pg(),
        Prot::ReadWrite,
    ))?;
    ctl.map(&Grant::new(
        RemoteAddr(a + pg()),
        MemOffset(pg()),
        pg(),
        Prot::Read,
    ))?;
    let e = expect_errno!(
        mem.write_at(&[1u8; 8], MemOffset(pg())),
        Errno::ACCESS,
        "A3: pwrite into a read-only grant"
    );
    ensure!(
        matches!(e, pidfd_mem::Error::AccessDenied { .. }),
        "library variant: expected AccessDenied, seen {e:?}"
    );
    let mut b = [0u8; 8];
    mem.read_exact_at(&mut b, MemOffset(pg()))
        .ctx("A3: pread of a read-only grant works")?;
    let n = mem
        .write_at(&vec![3u8; 2 * page()], MemOffset(0))
        .ctx("A3: pwrite from RW into RO")?;
    expect_eq!(n, page(), "A3: pwrite stops at the read-only grant");
    expect_eq!(
        t.sum(a + pg(), page())?,
        0,
        "A3: the read-only grant was not written"
    );
    Ok(())
}

/// A3, L2: ESRCH after T has exited.
pub fn a3_esrch() -> TestResult {
    let mut s = Setup::new(1)?;
    s.t.exit_no_reap()?;
    let mut b = [0u8; 8];
    expect_errno!(
        s.mem.read_at(&mut b, MemOffset(0)),
        Errno::SRCH,
        "A3: pread after T exited"
    );
    expect_errno!(
        s.mem.write_at(&b, MemOffset(0)),
        Errno::SRCH,
        "A3: pwrite after T exited"
    );
    s.t.exit_and_reap()?;
    let e = expect_errno!(
        s.mem.read_at(&mut b, MemOffset(0)),
        Errno::SRCH,
        "A3: pread after T was reaped"
    );
    ensure!(
        matches!(e, pidfd_mem::Error::TargetExited { .. }),
        "library variant: expected TargetExited, seen {e:?}"
    );
    Ok(())
}

/// A4, A3: every OPEN of the same T (they share one notifier on T's mm)
/// reports POLLHUP and ESRCH after T exits, also after another one was
/// closed first.
pub fn a4_poll_hup_every_open() -> TestResult {
    let mut t = Target::spawn()?;
    let addr = t.alloc(page())?;
    let mut mems = Vec::new();
    for _ in 0..3 {
        let (_ctl, mem) = t.open_granted(addr, 0, page(), Prot::Read)?;
        mems.push(mem);
    }
    drop(mems.remove(1));
    let (_ctl, last) = t.open_granted(addr, 0, page(), Prot::Read)?;
    mems.push(last);
    t.exit_and_reap()?;
    for (i, mem) in mems.iter().enumerate() {
        expect_eq!(
            wait_hup(mem, 10)?,
            true,
            "A4: POLLHUP on OPEN {i} of the same T after its exit"
        );
        let mut b = [0u8; 1];
        expect_errno!(
            mem.read_at(&mut b, MemOffset(0)),
            Errno::SRCH,
            "A3: pread on OPEN {i} after T's exit"
        );
    }
    Ok(())
}

/// A4, O3: poll reports POLLHUP once T has exited (holding mem does not
/// keep T's address space alive).
pub fn a4_poll_hup_on_exit() -> TestResult {
    let mut s = Setup::new(1)?;
    let m = s.mem.mmap(MemOffset(0), page(), Prot::Read)?;
    expect_eq!(
        s.mem
            .poll_exited(Some(std::time::Duration::ZERO))
            .ctx("poll")?,
        false,
        "A4: poll while T lives"
    );
    expect_eq!(
        s.mem
            .poll_exited(Some(std::time::Duration::from_millis(200)))
            .ctx("poll")?,
        false,
        "A4: poll with timeout while T lives"
    );
    s.t.exit_no_reap()?;
    expect_eq!(
        wait_hup(&s.mem, 10)?,
        true,
        "A4/O3: POLLHUP within 10 s of T's exit (zombie, mirror and fds held)"
    );
    s.t.exit_and_reap()?;
    expect_eq!(
        s.mem.poll_exited(Some(std::time::Duration::ZERO))?,
        true,
        "A4: POLLHUP stays"
    );
    drop(m);
    Ok(())
}

/// A5: a mapper's fork child inherits the mirror, and it stays coherent
/// both ways.
pub fn a5_fork_child_coherent() -> TestResult {
    let s = Setup::new(1)?;
    let m = s.mem.mmap(MemOffset(0), page(), Prot::ReadWrite)?;
    expect_eq!(m.read_obj::<u8>(0)?, 1, "populated before fork");
    // Child: on each request, report the mirror's u64 at 0, then store
    // 0x5000+n at 8.
    let mut n = 0u64;
    let child = Responder::spawn(|| {
        let v = m.read_obj::<u64>(0).unwrap_or(u64::MAX);
        let _ = m.write_obj(8, 0x5000 + n);
        n += 1;
        v.to_ne_bytes().to_vec()
    })?;
    for i in 0..20u64 {
        s.t.store64(s.addr, 0x100 + i)?;
        let mut v = [0u8; 8];
        let n = child.ask(&mut v)?;
        expect_eq!(n, 8, "reply size");
        expect_eq!(
            u64::from_ne_bytes(v),
            0x100 + i,
            "A5: fork child reads T's store #{i}"
        );
        expect_eq!(
            s.t.load64(s.addr + 8)?,
            0x5000 + i,
            "A5: T sees the fork child's store #{i}"
        );
        expect_eq!(
            m.read_obj::<u64>(8)?,
            0x5000 + i,
            "A5: the parent's mirror sees the child's store #{i}"
        );
    }
    expect_eq!(child.finish(), (true, 0), "fork child's exit");
    Ok(())
}

/// A5, C4: a fork child's inherited mirror never shows a page T replaced
/// (copy-on-write): not one the parent had mapped before the fork, nor one
/// the child faulted in itself.
pub fn a5_fork_child_drops_replaced_pages() -> TestResult {
    let s = Setup::new(1)?;
    let p = page();
    let m = RawMap::new(&s.mem, 0, p, ProtFlags::READ, MapFlags::SHARED).ctx("mmap")?;
    expect_eq!(m.read(0), 1, "mapped in the parent before fork");
    // Child: on each request, report the mirror's first byte (a SIGBUS
    // kills it, which the parent sees).
    let child = Responder::spawn(|| vec![m.read(0)])?;
    for round in 0..4u8 {
        // T's fork keeps the old page alive with its old bytes, so that a
        // PTE left to it reads them: a freed page could come back as T's
        // new one and hide it.
        let _keeper = s.t.fork()?;
        s.t.fill(s.addr, p, 0x60 + round)?;
        let mut v = [0u8; 1];
        let n = child.ask(&mut v)?;
        expect_eq!(n, 1, "the child answered (round {round})");
        expect_eq!(
            v[0],
            0x60 + round,
            "C4: the fork child reads T's new page (round {round})"
        );
        expect_eq!(m.read(0), 0x60 + round, "C4: and so does the parent");
    }
    expect_eq!(child.finish(), (true, 0), "fork child's exit");
    Ok(())
}

/// `len` fresh bytes of our own, and this process opened with them granted
/// read-write at mem offset 0 (A6: T is the mapper).
fn self_granted(len: usize) -> Result<(*mut u64, Control, Access), Failure> {
    // SAFETY: a fresh anonymous mapping of our own.
    let local = unsafe {
        rustix::mm::mmap_anonymous(
            core::ptr::null_mut(),
            len,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::PRIVATE,
        )
    }
    .ctx("mmap local")?
    .cast::<u64>();
    let me = pidfd_open(std::process::id())?;
    let (ctl, mem) = pidfd_mem(&me, 0).ctx("A6: OPEN self")?;
    ctl.map(&Grant::new(
        RemoteAddr::from_ptr(local),
        MemOffset(0),
        len as u64,
        Prot::ReadWrite,
    ))
    .ctx("A6: MAP own memory")?;
    Ok((local, ctl, mem))
}

/// A6: T maps its own mem (self case, then parent-maps-then-forks): no
/// deadlock, same semantics.
pub fn a6_self_mapping() -> TestResult {
    let p = page();
    let (local, _ctl, mem) = self_granted(2 * p)?;
    let m = mem
        .mmap(MemOffset(0), 2 * p, Prot::ReadWrite)
        .ctx("A6: mmap own mem")?;
    // Untouched own page through the mirror: zeros, then allocation.
    expect_eq!(m.read_obj::<u64>(p)?, 0, "A6: untouched own page");
    m.write_obj(0, 0xaaaa_u64)?;
    // SAFETY: our own mapping; volatile because the mirror aliases it.
    let v0 = unsafe { local.read_volatile() };
    expect_eq!(v0, 0xaaaa, "A6: own memory sees the mirror's store");
    // SAFETY: as above.
    unsafe { local.add(1).write_volatile(0xbbbb) };
    expect_eq!(
        m.read_obj::<u64>(8)?,
        0xbbbb,
        "A6: the mirror sees our own store"
    );
    let mut b = [0u8; 8];
    mem.read_exact_at(&mut b, MemOffset(8))
        .ctx("A6: pread own memory")?;
    expect_eq!(u64::from_ne_bytes(b), 0xbbbb, "A6: pread own memory");
    // Parent maps, then forks: the child's mirror shows the parent (T).
    let code = in_child(|| match m.read_obj::<u64>(0) {
        Ok(0xaaaa) => match m.write_obj(16, 0xcccc_u64) {
            Ok(()) => 0,
            Err(e) => {
                note!("A6: child write through the inherited mirror: {e}");
                2
            }
        },
        r => {
            note!("A6: child read through the inherited mirror: expected 0xaaaa, seen {r:?}");
            1
        }
    })?;
    expect_eq!(
        code,
        0,
        "A6: fork child's access to the inherited self-mirror"
    );
    // SAFETY: as above.
    let v2 = unsafe { local.add(2).read_volatile() };
    expect_eq!(v2, 0xcccc, "A6: the child's store lands in T (the parent)");
    drop(m);
    // SAFETY: our own mapping, no mirror left.
    let _ = unsafe { rustix::mm::munmap(local.cast(), 2 * p) };
    Ok(())
}

/// A7: a grant over T's own mirror (a mirror of a mirror) faults; it
/// never recurses.
pub fn a7_mirror_of_mirror_sigbus() -> TestResult {
    let p = page();
    // SAFETY: a fresh anonymous mapping of our own.
    let local = unsafe {
        rustix::mm::mmap_anonymous(
            core::ptr::null_mut(),
            p,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::PRIVATE,
        )
    }
    .ctx("mmap")?;
    let me = pidfd_open(std::process::id())?;
    let (ctl, mem) = pidfd_mem(&me, 0)?;
    ctl.map(&Grant::new(
        RemoteAddr::from_ptr(local),
        MemOffset(0),
        pg(),
        Prot::ReadWrite,
    ))?;
    let m1 = mem.mmap(MemOffset(0), p, Prot::ReadWrite)?;
    m1.write_obj(0, 1u64)?;
    ctl.map(&Grant::new(
        RemoteAddr::from_ptr(m1.as_ptr()),
        MemOffset(pg()),
        pg(),
        Prot::ReadWrite,
    ))
    .ctx("MAP over our own mirror")?;
    let m2 = mem.mmap(MemOffset(pg()), p, Prot::ReadWrite)?;
    expect_fault(m2.read_obj::<u64>(0), "A7: read of a mirror of a mirror")?;
    expect_fault(m2.write_obj(0, 2u64), "A7: write to a mirror of a mirror")?;
    let mut b = [0u8; 8];
    match mem.read_at(&mut b, MemOffset(pg())) {
        Err(e) if e.errno() == Some(Errno::IO) => {}
        r => note!(
            "A7: pread of a mirror of a mirror: {r:?} (contract names no errno; EIO expected)"
        ),
    }
    drop((m1, m2));
    // SAFETY: our own mapping.
    let _ = unsafe { rustix::mm::munmap(local, p) };
    Ok(())
}

/// A8: a debugger sees through a mirror: /proc/self/mem reads and writes
/// mirror addresses.
pub fn a8_proc_mem_sees_mirror() -> TestResult {
    let s = Setup::new(1)?;
    let m = s.mem.mmap(MemOffset(0), page(), Prot::ReadWrite)?;
    s.t.store64(s.addr, 0x0dbe)?;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/proc/self/mem")
        .ctx("open /proc/self/mem")?;
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, m.as_ptr() as u64)
        .ctx("A8: /proc/self/mem read at a mirror address")?;
    expect_eq!(
        u64::from_ne_bytes(b),
        0x0dbe,
        "A8: /proc/self/mem read through the mirror"
    );
    f.write_all_at(&0x0dbf_u64.to_ne_bytes(), m.as_ptr() as u64 + 8)
        .ctx("A8: /proc/self/mem write at a mirror address")?;
    expect_eq!(
        s.t.load64(s.addr + 8)?,
        0x0dbf,
        "A8: T sees the debugger's write"
    );
    Ok(())
}

/// A9 (documented limit): kernel paths that pin user pages get EFAULT on a
/// mirror address; shared futex wait is one.
pub fn a9_futex_on_mirror_efault() -> TestResult {
    let s = Setup::new(1)?;
    let m = s.mem.mmap(MemOffset(0), page(), Prot::ReadWrite)?;
    m.store_u32(0, 5, std::sync::atomic::Ordering::SeqCst)?;
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 10_000_000,
    };
    // SAFETY: FUTEX_WAIT on an address of our live mapping with a 10 ms
    // timeout; the kernel only reads the word (or refuses).
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            m.as_ptr(),
            libc::FUTEX_WAIT,
            6u32,
            &ts as *const libc::timespec,
            0usize,
            0u32,
        )
    };
    let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    ensure!(
        r == -1,
        "A9: shared FUTEX_WAIT on a mirror address returned {r}, expected EFAULT"
    );
    expect_eq!(
        pidfd_mem::ErrnoName(Errno::from_raw_os_error(errno)),
        pidfd_mem::ErrnoName(Errno::FAULT),
        "A9: shared FUTEX_WAIT on a mirror address"
    );
    Ok(())
}

/// Minor faults this thread has taken (`/proc/thread-self/stat`, field 10).
/// Faults the module takes in T on our behalf count here too.
fn minor_faults() -> Result<u64, Failure> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ctx("/proc/thread-self/stat")?;
    // Fields after "(comm)": state is field 3, minflt field 10.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(7))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Failure::Fail(format!("no minflt in {stat:?}")))
}

/// The kB a field of `/proc/PID/smaps` gives for the VMA holding `addr`.
fn smaps_kb(pid: i32, addr: u64, field: &str) -> Result<u64, Failure> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ctx("smaps")?;
    let mut inside = false;
    for line in smaps.lines() {
        let head = line.split_whitespace().next().unwrap_or("");
        if let Some((lo, hi)) = head.split_once('-') {
            if let (Ok(lo), Ok(hi)) = (u64::from_str_radix(lo, 16), u64::from_str_radix(hi, 16)) {
                inside = lo <= addr && addr < hi;
                continue;
            }
        }
        if inside && head == field {
            return Ok(line
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0));
        }
    }
    fail!("no {field} for {addr:#x} in /proc/{pid}/smaps")
}

/// Whether the kernel maps PMD-sized PFN entries in VM_PFNMAP VMAs: 6.12
/// and later (where the module's build probe enables its ->huge_fault).
fn kernel_has_huge_pfnmap() -> bool {
    let uname = rustix::system::uname();
    let release = uname.release().to_string_lossy();
    let mut nums = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse::<u32>().ok());
    (nums.next().unwrap_or(0), nums.next().unwrap_or(0)) >= (6, 12)
}

/// A2a, C1-C3 and contract section 9: T's transparent huge pages are
/// mapped whole, one PMD per fault, where the kernel has huge PFN mappings
/// (6.12); everywhere they read right and stay coherent when T splits one
/// (DONTNEED of a 4 KiB page) or the mirror stores into one (the read-only
/// huge entry is split and the page faulted writable in T).
pub fn a2a_thp_mapped_whole() -> TestResult {
    use std::sync::atomic::Ordering::{Relaxed, SeqCst};
    const FILL: u64 = 0x5a5a_5a5a_5a5a_5a5a;
    let huge = 2usize << 20;
    let p = page();
    let t = Target::spawn()?;
    let region = t.alloc(3 * huge)?;
    let thp = (region + huge as u64 - 1) & !(huge as u64 - 1);
    t.madvise(thp, 2 * huge, libc::MADV_HUGEPAGE)?;
    t.fill(thp, 2 * huge, 0x5a)?;
    let kb = smaps_kb(t.pid, thp, "AnonHugePages:")?;
    if kb < 4096 {
        skip!("T got {kb} kB of THP for 4 MiB (THP off, or memory fragmented)");
    }
    let (ctl, mem) = t.open()?;
    ctl.map(&Grant::new(
        RemoteAddr(thp),
        MemOffset(0),
        2 * huge as u64,
        Prot::ReadWrite,
    ))?;
    let m = mem.mmap(MemOffset(0), 2 * huge, Prot::ReadWrite)?;
    expect_eq!(
        m.as_ptr() as usize % huge,
        0,
        "section 9: the mirror sits at T's offset within a 2 MiB frame"
    );
    let before = minor_faults()?;
    for off in (0..2 * huge).step_by(p) {
        let v = m.load_u64(off, Relaxed)?;
        ensure!(v == FILL, "A2a: THP page at {off:#x} reads {v:#x}");
    }
    let faults = minor_faults()? - before;
    note!("4 MiB of THP read through a mirror in {faults} faults");

    t.madvise(thp + (huge + p) as u64, p, libc::MADV_DONTNEED)?;
    expect_eq!(
        m.load_u64(huge + p, Relaxed)?,
        0,
        "C3: the page T dropped from its huge page"
    );
    expect_eq!(
        m.load_u64(huge + 2 * p, Relaxed)?,
        FILL,
        "C3: the rest of the huge page T split"
    );
    m.store_u64(8 * p, 0x1234, SeqCst)?;
    expect_eq!(t.load64(thp + 8 * pg())?, 0x1234, "C2: T sees the store");
    expect_eq!(
        m.load_u64(9 * p, Relaxed)?,
        FILL,
        "C2: the rest of the huge page after the store"
    );
    t.store64(thp + 100 * pg(), 0x9999)?;
    expect_eq!(
        m.load_u64(100 * p, Relaxed)?,
        0x9999,
        "C1: the mirror sees T's store"
    );
    if !kernel_has_huge_pfnmap() {
        skip!("contents and coherence hold; this kernel has no huge PFN mappings (6.12+): {faults} faults for 4 MiB");
    }
    // One fault per PMD, and at most one retry each (a first try under the
    // per-VMA lock falls back); 4 KiB entries take 16 or more.
    ensure!(
        faults <= 8,
        "section 9: 4 MiB of THP took {faults} faults through the mirror (about one per 2 MiB expected)"
    );
    Ok(())
}

/// A6, A7: a process splits its own large mirror (mprotect and munmap of
/// pages inside it) while a grant of the same mem covers that mirror. Since
/// 6.4 the kernel splits the mirror's page tables under the mirror file's
/// i_mmap_rwsem and runs the grant's invalidation there: nothing to zap (a
/// mirror of a mirror maps nothing), and it must not wait on that lock.
pub fn a6_split_mirror_granted_over_itself() -> TestResult {
    use std::sync::atomic::Ordering::{Relaxed, SeqCst};
    let huge = 2usize << 20;
    let len = 4 * huge;
    let p = page();
    let (local, ctl, mem) = self_granted(len)?;
    let m = mem.mmap(MemOffset(0), len, Prot::ReadWrite)?;
    for off in (0..len).step_by(p) {
        m.load_u64(off, Relaxed)?;
    }
    ctl.map(&Grant::new(
        RemoteAddr(m.as_ptr() as u64),
        MemOffset(2 * len as u64),
        len as u64,
        Prot::ReadWrite,
    ))
    .ctx("A7: MAP over our own mirror")?;
    let base = m.as_ptr() as usize;
    // SAFETY: pages inside our own mirror mapping; the Mirror is not used
    // there afterwards.
    unsafe {
        rustix::mm::mprotect((base + huge + 3 * p) as *mut _, p, MprotectFlags::READ)
            .ctx("A6: mprotect inside the mirror")?;
        rustix::mm::munmap((base + 2 * huge + 5 * p) as *mut _, p)
            .ctx("A6: munmap inside the mirror")?;
    }
    m.store_u64(0, 0xa6, SeqCst)?;
    // SAFETY: our own mapping; volatile because the mirror aliases it.
    let v = unsafe { local.read_volatile() };
    expect_eq!(v, 0xa6, "A6: the split mirror still writes through");
    let mm = mem.mmap(MemOffset(2 * len as u64), p, Prot::Read)?;
    expect_fault(mm.load_u64(0, Relaxed), "A7: a mirror of the split mirror")?;
    drop(mm);
    drop(m);
    // SAFETY: our own mapping, no mirror left.
    let _ = unsafe { rustix::mm::munmap(local.cast(), len) };
    Ok(())
}
