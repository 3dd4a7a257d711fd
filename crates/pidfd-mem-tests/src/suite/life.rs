//! C1, C3, L2, L4: coherence and lifetime.

use std::sync::atomic::Ordering;

use pidfd_mem::{MemOffset, Prot};
use rustix::io::Errno;
use rustix::mm::{MapFlags, ProtFlags};

use crate::harness::{Ctx, TestResult};
use crate::util::*;
use crate::{ensure, expect_eq, expect_errno, fail};

/// C1: a store by T (another process) is visible through the mirror at
/// once, and a store through the mirror is visible to T at once.
pub fn c1_both_directions() -> TestResult {
    let s = Setup::new(1)?;
    let m = s.mem.mmap(MemOffset(0), page(), Prot::ReadWrite)?;
    for i in 0..200u64 {
        s.t.store64(s.addr, i)?;
        expect_eq!(
            m.load_u64(0, Ordering::SeqCst)?,
            i,
            "C1: mirror sees T's store #{i}"
        );
        m.store_u64(8, 1000 + i, Ordering::SeqCst)?;
        expect_eq!(
            s.t.load64(s.addr + 8)?,
            1000 + i,
            "C1: T sees the mirror's store #{i}"
        );
        let mut b = [0u8; 8];
        s.mem.read_exact_at(&mut b, MemOffset(8))?;
        expect_eq!(
            u64::from_ne_bytes(b),
            1000 + i,
            "C1: pread sees the mirror's store #{i}"
        );
    }
    // An atomic through the mirror is an atomic on T's page.
    m.store_u64(16, 5, Ordering::SeqCst)?;
    expect_eq!(
        m.compare_exchange_u64(16, 5, 6, Ordering::SeqCst, Ordering::SeqCst)?,
        Ok(5),
        "C1: cmpxchg"
    );
    expect_eq!(s.t.load64(s.addr + 16)?, 6, "C1: T sees the cmpxchg");
    Ok(())
}

/// C3: when T's mapping changes (madvise DONTNEED, mprotect, munmap, new
/// mapping), the mirror shows T's current state at the next access.
pub fn c3_mapping_changes() -> TestResult {
    let s = Setup::new(1)?;
    let p = page();
    let m = s.mem.mmap(MemOffset(0), p, Prot::ReadWrite)?;
    expect_eq!(m.read_obj::<u8>(0)?, 1, "populated");
    s.t.madvise(s.addr, p, libc::MADV_DONTNEED)?;
    expect_eq!(
        m.read_obj::<u64>(0)?,
        0,
        "C3: after MADV_DONTNEED T's page is zero, so is the mirror"
    );
    s.t.store64(s.addr, 0x33)?;
    expect_eq!(m.read_obj::<u64>(0)?, 0x33, "C3: T's store after DONTNEED");
    s.t.mprotect(s.addr, p, ProtFlags::empty())?;
    expect_fault(m.read_obj::<u64>(0), "C3/A2: after mprotect(PROT_NONE)")?;
    s.t.mprotect(s.addr, p, ProtFlags::READ)?;
    expect_eq!(
        m.read_obj::<u64>(0)?,
        0x33,
        "C3: after mprotect(PROT_READ), reads work"
    );
    expect_fault(
        m.write_obj(0, 1u64),
        "C3/A2: after mprotect(PROT_READ), writes fault",
    )?;
    s.t.mprotect(s.addr, p, ProtFlags::READ | ProtFlags::WRITE)?;
    m.write_obj(0, 0x44u64)?;
    expect_eq!(
        s.t.load64(s.addr)?,
        0x44,
        "C3: after mprotect(RW), writes reach T"
    );
    s.t.munmap(s.addr, p)?;
    expect_fault(m.read_obj::<u64>(0), "C3: after munmap")?;
    s.t.mmap_fixed(s.addr, p, ProtFlags::READ | ProtFlags::WRITE)?;
    expect_eq!(m.read_obj::<u64>(0)?, 0, "C3: T's new anonymous page");
    Ok(())
}

/// L2: after T's exit, a (populated) mirror raises SIGBUS.
pub fn l2_exit_sigbus() -> TestResult {
    let mut s = Setup::new(1)?;
    let m = RawMap::new(&s.mem, 0, page(), ProtFlags::READ, MapFlags::SHARED).ctx("mmap")?;
    expect_eq!(m.read(0), 1, "populated");
    s.t.exit_no_reap()?;
    ensure!(
        wait_hup(&s.mem, 10)?,
        "A4: no POLLHUP within 10 s of T's exit"
    );
    let v = m.read(0);
    fail!("L2: read after T's exit returned {v} instead of raising SIGBUS")
}

/// L2: after T's exit: mirror accesses fault, pread/pwrite ESRCH, new
/// mirrors fault too.
pub fn l2_exit_faults() -> TestResult {
    let mut s = Setup::new(1)?;
    let m = s.mem.mmap(MemOffset(0), page(), Prot::ReadWrite)?;
    expect_eq!(m.read_obj::<u8>(0)?, 1, "populated");
    s.t.exit_and_reap()?;
    ensure!(
        wait_hup(&s.mem, 10)?,
        "A4: no POLLHUP within 10 s of T's exit"
    );
    expect_fault(m.read_obj::<u8>(0), "L2: mirror read after exit")?;
    expect_fault(m.write_obj(0, 1u8), "L2: mirror write after exit")?;
    let mut b = [0u8; 1];
    expect_errno!(
        s.mem.read_at(&mut b, MemOffset(0)),
        Errno::SRCH,
        "L2/A3: pread after exit"
    );
    if let Ok(m2) = s.mem.mmap(MemOffset(0), page(), Prot::Read) {
        expect_fault(m2.read_obj::<u8>(0), "L2: a mirror made after exit")?;
    }
    Ok(())
}

/// L4: after T execs, a mirror raises SIGBUS (even populated).
pub fn l4_exec_sigbus() -> TestResult {
    let s = Setup::new(1)?;
    let m = RawMap::new(&s.mem, 0, page(), ProtFlags::READ, MapFlags::SHARED).ctx("mmap")?;
    expect_eq!(m.read(0), 1, "populated");
    s.t.exec()?;
    let v = m.read(0);
    fail!("L4: read after T's exec returned {v} instead of raising SIGBUS")
}

/// L4: after exec: pread/pwrite ESRCH, poll POLLHUP, mirror faults.
pub fn l4_exec_esrch_pollhup() -> TestResult {
    let s = Setup::new(1)?;
    let m = s.mem.mmap(MemOffset(0), page(), Prot::ReadWrite)?;
    expect_eq!(m.read_obj::<u8>(0)?, 1, "populated");
    s.t.exec()?;
    expect_eq!(wait_hup(&s.mem, 10)?, true, "L4/A4: POLLHUP after exec");
    let mut b = [0u8; 8];
    expect_errno!(
        s.mem.read_at(&mut b, MemOffset(0)),
        Errno::SRCH,
        "L4: pread after exec"
    );
    expect_errno!(
        s.mem.write_at(&b, MemOffset(0)),
        Errno::SRCH,
        "L4: pwrite after exec"
    );
    expect_fault(m.read_obj::<u8>(0), "L4: mirror read after exec")?;
    expect_fault(m.write_obj(0, 1u8), "L4: mirror write after exec")?;
    // A new OPEN binds to the new image and works.
    let (ctl2, mem2) = s.t.open()?;
    let _ = (ctl2, mem2);
    Ok(())
}
