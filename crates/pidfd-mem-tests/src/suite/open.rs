//! §1 (ABI), O1, O2, R1, P1: creating the fds.

use std::os::fd::{AsFd, AsRawFd};

use pidfd_mem::sys::{self, PidfdMemOpen, RemoteProcMap};
use pidfd_mem::{pass, pidfd_mem, pidfd_open, remote_proc_map, Error, MemOffset, Prot};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::ioctl::opcode;

use crate::harness::{Ctx, Failure, TestResult};
use crate::util::*;
use crate::{ensure, expect_eq, expect_errno, note, skip};

fn open_dev() -> Result<std::os::fd::OwnedFd, Failure> {
    rustix::fs::open(
        sys::PIDFD_MEM_DEVICE,
        OFlags::RDWR | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ctx("open /dev/pidfd_mem")
}

fn raw_open(pidfd: i32, flags: u32, reserved: [u64; 2]) -> Result<(), Errno> {
    let dev = open_dev().map_err(|_| Errno::NODEV)?;
    let mut a = PidfdMemOpen {
        pidfd,
        flags,
        reserved,
        ..Default::default()
    };
    sys::pidfd_mem_open(dev.as_fd(), &mut a).map(drop)
}

fn raw_rpm(pidfd: i32, flags: u32, reserved: u32) -> Result<(), Errno> {
    let dev = open_dev().map_err(|_| Errno::NODEV)?;
    let mut a = RemoteProcMap {
        pidfd,
        flags,
        reserved,
        ..Default::default()
    };
    sys::remote_proc_map(dev.as_fd(), &mut a).map(drop)
}

/// O1, §1: OPEN on oneself succeeds; both fds are close-on-exec.
pub fn o1_open_self() -> TestResult {
    let me = pidfd_open(std::process::id()).ctx("pidfd_open(self)")?;
    let (ctl, mem) = pidfd_mem(&me, 0).ctx("O1: pidfd_mem(self, 0)")?;
    ensure!(is_cloexec(&ctl), "§1: ctl must be close-on-exec");
    ensure!(is_cloexec(&mem), "§1: mem must be close-on-exec");
    ensure!(
        ctl.as_fd().as_raw_fd() != mem.as_fd().as_raw_fd(),
        "ctl and mem are the same fd"
    );
    Ok(())
}

/// O1: OPEN on a child (ptrace-attach rights) succeeds, and works.
pub fn o1_open_child() -> TestResult {
    let s = Setup::new(1)?;
    let mut b = [0u8; 8];
    s.mem
        .read_exact_at(&mut b, MemOffset(0))
        .ctx("pread after OPEN")?;
    expect_eq!(b, [1u8; 8], "bytes of T's page through mem");
    let rpm = remote_proc_map(&s.t.pidfd).ctx("O1/R1: REMOTE_PROC_MAP on a child")?;
    ensure!(
        is_cloexec(&rpm),
        "§1: REMOTE_PROC_MAP's mem must be close-on-exec"
    );
    Ok(())
}

/// O2: EBADF when the pidfd is not an open fd.
pub fn o2_ebadf() -> TestResult {
    expect_errno!(
        raw_open(-1, 0, [0; 2]),
        Errno::BADF,
        "O2: OPEN with pidfd -1"
    );
    // An fd number that is surely closed (F_GETFD says EBADF), far above
    // what raw_open's own open of the device takes.
    let closed = (900..1000)
        .find(|&n| {
            // SAFETY: only asks whether fd `n` exists; nothing is closed.
            let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(n) };
            rustix::io::fcntl_getfd(b) == Err(Errno::BADF)
        })
        .ok_or_else(|| Failure::Fail("no closed fd number in 900..1000".into()))?;
    expect_errno!(
        raw_open(closed, 0, [0; 2]),
        Errno::BADF,
        "O2: OPEN with closed fd {closed}"
    );
    expect_errno!(
        raw_open(1 << 30, 0, [0; 2]),
        Errno::BADF,
        "O2: OPEN with fd 1<<30"
    );
    expect_errno!(
        raw_rpm(-1, 0, 0),
        Errno::BADF,
        "O2/R1: REMOTE_PROC_MAP with pidfd -1"
    );
    Ok(())
}

/// O2: EINVAL when the fd is not a pidfd.
pub fn o2_einval_not_pidfd() -> TestResult {
    let memfd = rustix::fs::memfd_create("x", rustix::fs::MemfdFlags::CLOEXEC).ctx("memfd")?;
    let e = expect_errno!(pidfd_mem(&memfd, 0), Errno::INVAL, "O2: OPEN on a memfd");
    ensure!(
        matches!(e, Error::NotAPidfd { .. }),
        "library variant: expected NotAPidfd, seen {e:?}"
    );
    let dev = open_dev()?;
    expect_errno!(
        pidfd_mem(&dev, 0),
        Errno::INVAL,
        "O2: OPEN on /dev/pidfd_mem itself"
    );
    let me = pidfd_open(std::process::id())?;
    let (ctl, mem) = pidfd_mem(&me, 0)?;
    expect_errno!(pidfd_mem(&ctl, 0), Errno::INVAL, "O2: OPEN on a ctl fd");
    expect_errno!(pidfd_mem(&mem, 0), Errno::INVAL, "O2: OPEN on a mem fd");
    expect_errno!(
        remote_proc_map(&memfd),
        Errno::INVAL,
        "O2/R1: REMOTE_PROC_MAP on a memfd"
    );
    Ok(())
}

/// O2: EINVAL for non-zero flags.
pub fn o2_einval_flags() -> TestResult {
    let me = pidfd_open(std::process::id())?;
    for flags in [1u32, 2, 4, 0x100, 0x8000_0000, u32::MAX] {
        expect_errno!(
            pidfd_mem(&me, flags),
            Errno::INVAL,
            "O2: OPEN with flags {flags:#x}"
        );
        expect_errno!(
            raw_rpm(me.as_raw_fd(), flags, 0),
            Errno::INVAL,
            "O2/R1: REMOTE_PROC_MAP with flags {flags:#x}"
        );
    }
    Ok(())
}

/// O2: EINVAL for non-zero reserved fields.
pub fn o2_einval_reserved() -> TestResult {
    let me = pidfd_open(std::process::id())?;
    let fd = me.as_raw_fd();
    for r in [[1u64, 0], [0, 1], [u64::MAX, 0], [0, 1 << 63]] {
        expect_errno!(
            raw_open(fd, 0, r),
            Errno::INVAL,
            "O2: OPEN with reserved {r:x?}"
        );
    }
    for r in [1u32, 0x8000_0000] {
        expect_errno!(
            raw_rpm(fd, 0, r),
            Errno::INVAL,
            "O2/R1: REMOTE_PROC_MAP with reserved {r:#x}"
        );
    }
    // ... and the out fields are outputs: junk in them is fine.
    let dev = open_dev()?;
    let mut a = PidfdMemOpen {
        pidfd: fd,
        ctl_fd: 12345,
        mem_fd: -7,
        ..Default::default()
    };
    sys::pidfd_mem_open(dev.as_fd(), &mut a)
        .ctx("O2: OPEN with junk in the out fields must succeed")?;
    Ok(())
}

/// O2: ESRCH when T has exited (zombie, then reaped).
pub fn o2_esrch_exited() -> TestResult {
    let mut t = Target::spawn()?;
    t.exit_no_reap()?;
    expect_errno!(pidfd_mem(&t.pidfd, 0), Errno::SRCH, "O2: OPEN on a zombie");
    expect_errno!(
        remote_proc_map(&t.pidfd),
        Errno::SRCH,
        "O2/R1: REMOTE_PROC_MAP on a zombie"
    );
    t.exit_and_reap()?;
    let e = expect_errno!(
        pidfd_mem(&t.pidfd, 0),
        Errno::SRCH,
        "O2: OPEN on a reaped process"
    );
    ensure!(
        matches!(e, Error::TargetExited { .. }),
        "library variant: expected TargetExited, seen {e:?}"
    );
    Ok(())
}

/// O2: ESRCH for a kernel thread (no address space).
pub fn o2_esrch_kernel_thread() -> TestResult {
    let comm = std::fs::read_to_string("/proc/2/comm").unwrap_or_default();
    if comm.trim() != "kthreadd" {
        skip!("pid 2 is {:?}, not kthreadd", comm.trim());
    }
    let kt = match pidfd_open(2) {
        Ok(fd) => fd,
        Err(e) => skip!("pidfd_open(2): {e}"),
    };
    expect_errno!(pidfd_mem(&kt, 0), Errno::SRCH, "O2: OPEN on kthreadd");
    expect_errno!(
        remote_proc_map(&kt),
        Errno::SRCH,
        "O2/R1: REMOTE_PROC_MAP on kthreadd"
    );
    Ok(())
}

/// O2: EFAULT for a bad argument pointer.
pub fn o2_efault() -> TestResult {
    let dev = open_dev()?;
    // A page that exists but is PROT_NONE, and a low unmapped address.
    let none = RawMapAnon::new(page()).ctx("mmap PROT_NONE")?;
    for (what, p) in [
        ("address 0x10", 0x10usize as *mut core::ffi::c_void),
        ("a PROT_NONE page", none.ptr),
    ] {
        // SAFETY: the kernel cannot access either address, so it answers
        // EFAULT without touching our memory.
        let r = unsafe { sys::raw_ioctl(&dev, sys::PIDFD_MEM_OPEN, p) };
        expect_errno!(r, Errno::FAULT, "O2: OPEN with argument at {what}");
        // SAFETY: as above.
        let r = unsafe { sys::raw_ioctl(&dev, sys::REMOTE_PROC_MAP, p) };
        expect_errno!(
            r,
            Errno::FAULT,
            "O2/R1: REMOTE_PROC_MAP with argument at {what}"
        );
        let me = pidfd_open(std::process::id())?;
        let (ctl, _mem) = pidfd_mem(&me, 0)?;
        // SAFETY: as above.
        let r = unsafe { sys::raw_ioctl(&ctl, sys::PIDFD_MEM_MAP, p) };
        expect_errno!(r, Errno::FAULT, "M1: MAP with argument at {what}");
        // SAFETY: as above.
        let r = unsafe { sys::raw_ioctl(&ctl, sys::PIDFD_MEM_UNMAP, p) };
        expect_errno!(r, Errno::FAULT, "U1: UNMAP with argument at {what}");
    }
    Ok(())
}

/// An anonymous PROT_NONE mapping.
struct RawMapAnon {
    ptr: *mut core::ffi::c_void,
    len: usize,
}

impl RawMapAnon {
    fn new(len: usize) -> Result<Self, Errno> {
        // SAFETY: a fresh mapping at a kernel-chosen address.
        let ptr = unsafe {
            rustix::mm::mmap_anonymous(
                core::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::empty(),
                rustix::mm::MapFlags::PRIVATE,
            )
        }?;
        Ok(Self { ptr, len })
    }
}

impl Drop for RawMapAnon {
    fn drop(&mut self) {
        // SAFETY: our mapping.
        let _ = unsafe { rustix::mm::munmap(self.ptr, self.len) };
    }
}

/// §1: unknown ioctls answer ENOTTY on the device, ctl and mem.
pub fn abi_unknown_ioctl_enotty() -> TestResult {
    let dev = open_dev()?;
    let me = pidfd_open(std::process::id())?;
    let (ctl, mem) = pidfd_mem(&me, 0)?;
    let unknown = [
        ("_IO(0xB6, 0x7f)", opcode::none(0xB6, 0x7f)),
        ("_IO(0xB6, 0x03)", opcode::none(0xB6, 0x03)),
        (
            "_IOW(0xB6, 0x10) with a wrong size",
            opcode::write::<u64>(0xB6, 0x10),
        ),
        ("TCGETS", 0x5401),
    ];
    let fds: [(&str, std::os::fd::BorrowedFd<'_>); 3] = [
        ("/dev/pidfd_mem", dev.as_fd()),
        ("ctl", ctl.as_fd()),
        ("mem", mem.as_fd()),
    ];
    for (fname, fd) in fds {
        for (iname, req) in unknown {
            // SAFETY: requests unknown to this driver with a null argument:
            // nothing is read or written.
            let r = unsafe { sys::raw_ioctl(fd, req, core::ptr::null_mut()) };
            expect_errno!(r, Errno::NOTTY, "§1: {iname} on {fname}");
        }
    }
    // Known ioctls on the wrong fd are unknown there.
    let wrong = [
        ("PIDFD_MEM_MAP on mem", mem.as_fd(), sys::PIDFD_MEM_MAP),
        ("PIDFD_MEM_UNMAP on mem", mem.as_fd(), sys::PIDFD_MEM_UNMAP),
        ("PIDFD_MEM_LOCK on mem", mem.as_fd(), sys::PIDFD_MEM_LOCK),
        ("PIDFD_MEM_OPEN on ctl", ctl.as_fd(), sys::PIDFD_MEM_OPEN),
        ("REMOTE_PROC_MAP on mem", mem.as_fd(), sys::REMOTE_PROC_MAP),
        (
            "PIDFD_MEM_MAP on /dev/pidfd_mem",
            dev.as_fd(),
            sys::PIDFD_MEM_MAP,
        ),
        (
            "PIDFD_MEM_LOCK on /dev/pidfd_mem",
            dev.as_fd(),
            sys::PIDFD_MEM_LOCK,
        ),
    ];
    for (what, fd, req) in wrong {
        // SAFETY: a null argument: a driver that (wrongly) used it would get
        // EFAULT, never touch our memory.
        let r = unsafe { sys::raw_ioctl(fd, req, core::ptr::null_mut()) };
        expect_errno!(r, Errno::NOTTY, "§1: {what}");
    }
    Ok(())
}

/// R1: REMOTE_PROC_MAP gives mem with offset == T's address, read-write.
pub fn r1_remote_proc_map() -> TestResult {
    let t = Target::spawn()?;
    let a = t.alloc(2 * page())?;
    let far = t.alloc(page())?;
    t.store64(a, 0x1111_2222_3333_4444)?;
    t.store64(far + 8, 0x5555)?;
    let mem = remote_proc_map(&t.pidfd).ctx("R1: REMOTE_PROC_MAP")?;
    let mut b = [0u8; 8];
    mem.read_exact_at(&mut b, MemOffset(a))
        .ctx("R1: pread at T's address")?;
    expect_eq!(
        u64::from_ne_bytes(b),
        0x1111_2222_3333_4444,
        "R1: pread at offset == address"
    );
    mem.read_exact_at(&mut b, MemOffset(far + 8))
        .ctx("R1: pread at another address")?;
    expect_eq!(u64::from_ne_bytes(b), 0x5555, "R1: pread elsewhere in T");
    mem.write_all_at(&7u64.to_ne_bytes(), MemOffset(a + 8))
        .ctx("R1: pwrite (read-write grant)")?;
    expect_eq!(t.load64(a + 8)?, 7, "R1: T sees the pwrite");
    let m = mem
        .mmap(MemOffset(a), 2 * page(), Prot::ReadWrite)
        .ctx("R1: mmap RW at T's address")?;
    expect_eq!(
        m.read_obj::<u64>(0)?,
        0x1111_2222_3333_4444,
        "R1: mirror at T's address"
    );
    m.write_obj(page(), 99u64)?;
    expect_eq!(
        t.load64(a + page() as u64)?,
        99,
        "R1: T sees the mirror store"
    );
    // Outside T's mappings: a hole.
    let mut one = [0u8; 1];
    expect_errno!(
        mem.read_at(&mut one, MemOffset(0)),
        Errno::IO,
        "R1/A3: pread at address 0 (hole)"
    );
    Ok(())
}

fn drop_privileges() -> Result<(), String> {
    // SAFETY: plain credential syscalls in a single-threaded child.
    unsafe {
        if libc::setgroups(0, core::ptr::null()) != 0 {
            return Err(format!("setgroups: {}", std::io::Error::last_os_error()));
        }
        if libc::setresgid(65534, 65534, 65534) != 0 {
            return Err(format!("setresgid: {}", std::io::Error::last_os_error()));
        }
        if libc::setresuid(65534, 65534, 65534) != 0 {
            return Err(format!("setresuid: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// P1 (O1): an unprivileged process cannot OPEN or REMOTE_PROC_MAP a root
/// process (EPERM), but can open itself.
pub fn p1_unprivileged_eperm() -> TestResult {
    if rustix::process::geteuid().as_raw() != 0 {
        skip!("needs root to drop to uid 65534");
    }
    let t = Target::spawn()?; // runs as root
    let code = in_child(|| {
        if let Err(e) = drop_privileges() {
            note!("{e}");
            return 10;
        }
        let mut bad = 0;
        match pidfd_mem(&t.pidfd, 0) {
            Err(e) if e.errno() == Some(Errno::PERM) => {}
            Err(e) => {
                note!("P1: OPEN of a root process as uid 65534: expected EPERM, seen {e}");
                bad |= 1;
            }
            Ok(_) => {
                note!("P1: OPEN of a root process as uid 65534: expected EPERM, seen success");
                bad |= 1;
            }
        }
        match remote_proc_map(&t.pidfd) {
            Err(e) if e.errno() == Some(Errno::PERM) => {}
            r => {
                note!(
                    "P1/R1: REMOTE_PROC_MAP as uid 65534: expected EPERM, seen {:?}",
                    r.map(drop)
                );
                bad |= 2;
            }
        }
        if let Ok(init) = pidfd_open(1) {
            match pidfd_mem(&init, 0) {
                Err(e) if e.errno() == Some(Errno::PERM) => {}
                r => {
                    note!(
                        "P1: OPEN of pid 1 as uid 65534: expected EPERM, seen {:?}",
                        r.map(drop)
                    );
                    bad |= 4;
                }
            }
        }
        match pidfd_open(std::process::id()).map(|me| pidfd_mem(&me, 0)) {
            Ok(Ok(_)) => {}
            r => {
                note!(
                    "O1: OPEN of itself as uid 65534 must succeed, seen {:?}",
                    r.map(|x| x.map(drop))
                );
                bad |= 8;
            }
        }
        bad
    })?;
    ensure!(
        code == 0,
        "unprivileged child reported failures (code {code}, see notes above)"
    );
    Ok(())
}

/// P1: mem is a capability: an unprivileged holder reads exactly the
/// granted window with the granted protection, nothing else.
pub fn p1_mem_is_capability() -> TestResult {
    if rustix::process::geteuid().as_raw() != 0 {
        skip!("needs root to drop to uid 65534");
    }
    let t = Target::spawn()?;
    let a = t.alloc(2 * page())?;
    t.store64(a, 0xc0ffee)?;
    let (ctl, mem) = t.open_granted(a, 0, page(), Prot::Read)?;
    drop(ctl);
    let (s1, s2) = std::os::unix::net::UnixStream::pair().ctx("socketpair")?;
    // Sent before the fork: the socket holds it for the child.
    pass::send_access(&s1, &mem).ctx("send_access")?;
    drop(mem);
    let code = in_child(|| {
        if let Err(e) = drop_privileges() {
            note!("{e}");
            return 10;
        }
        let mem = match pass::recv_access(&s2) {
            Ok(m) => m,
            Err(e) => {
                note!("recv_access: {e}");
                return 11;
            }
        };
        let mut bad = 0;
        let mut b = [0u8; 8];
        match mem.read_exact_at(&mut b, MemOffset(0)) {
            Ok(()) if u64::from_ne_bytes(b) == 0xc0ffee => {}
            r => {
                note!("P1: pread of the granted window: expected 0xc0ffee, seen {r:?} {b:x?}");
                bad |= 1;
            }
        }
        match mem.read_at(&mut b, MemOffset(pg())) {
            Err(e) if e.errno() == Some(Errno::IO) => {}
            r => {
                note!("P1/A3: pread outside the grant: expected EIO, seen {r:?}");
                bad |= 2;
            }
        }
        match mem.write_at(&b, MemOffset(0)) {
            Err(e) if e.errno() == Some(Errno::ACCESS) => {}
            r => {
                note!("P1/A3: pwrite into the read-only grant: expected EACCES, seen {r:?}");
                bad |= 4;
            }
        }
        match mem.mmap(MemOffset(0), page(), Prot::ReadWrite) {
            Err(e) if e.errno() == Some(Errno::ACCESS) => {}
            r => {
                note!(
                    "P1/A1: PROT_WRITE mmap of the read-only grant: expected EACCES, seen {:?}",
                    r.map(drop)
                );
                bad |= 8;
            }
        }
        match mem
            .mmap(MemOffset(0), page(), Prot::Read)
            .map(|m| m.read_obj::<u64>(0))
        {
            Ok(Ok(0xc0ffee)) => {}
            r => {
                note!("P1: read mirror of the grant: expected 0xc0ffee, seen {r:?}");
                bad |= 16;
            }
        }
        bad
    })?;
    ensure!(
        code == 0,
        "unprivileged holder reported failures (code {code}, see notes above)"
    );
    Ok(())
}

/// L1, P1: mem keeps working after the process that created it exits, in
/// a process that received it with SCM_RIGHTS.
pub fn l1_mem_outlives_creator() -> TestResult {
    let t = Target::spawn()?;
    let a = t.alloc(page())?;
    t.store64(a, 0xabc)?;
    let (s1, s2) = std::os::unix::net::UnixStream::pair().ctx("socketpair")?;
    let code = in_child(|| {
        let r = (|| -> Result<(), Failure> {
            let (ctl, mem) = t.open_granted(a, 0, page(), Prot::ReadWrite)?;
            ctl.lock().ctx("lock")?;
            pass::send_access(&s1, &mem).ctx("send_access")?;
            Ok(())
        })();
        match r {
            Ok(()) => 0,
            Err(e) => {
                note!("creator: {e:?}");
                1
            }
        }
    })?;
    ensure!(code == 0, "the creator process failed (code {code})");
    let mem = pass::recv_access(&s2).ctx("recv_access")?;
    ensure!(is_cloexec(&mem), "received mem must be close-on-exec");
    let mut b = [0u8; 8];
    mem.read_exact_at(&mut b, MemOffset(0))
        .ctx("L1: pread after the creator exited")?;
    expect_eq!(
        u64::from_ne_bytes(b),
        0xabc,
        "L1: value through the passed mem"
    );
    let m = mem
        .mmap(MemOffset(0), page(), Prot::ReadWrite)
        .ctx("L1: mmap the passed mem")?;
    m.write_obj(8, 0xdefu64)?;
    expect_eq!(
        t.load64(a + 8)?,
        0xdef,
        "L1: T sees a store through the passed mem"
    );
    Ok(())
}

/// P2: ctl is a capability: any holder (here an unprivileged process that
/// received it with SCM_RIGHTS) may change the grants until LOCK.
pub fn p2_ctl_is_capability() -> TestResult {
    if rustix::process::geteuid().as_raw() != 0 {
        skip!("needs root to drop to uid 65534");
    }
    let t = Target::spawn()?;
    let a = t.alloc(page())?;
    t.store64(a, 0xcafe)?;
    let (ctl, mem) = t.open()?;
    let (s1, s2) = std::os::unix::net::UnixStream::pair().ctx("socketpair")?;
    pass::send_control(&s1, &ctl).ctx("send_control")?;
    let code = in_child(|| {
        if let Err(e) = drop_privileges() {
            note!("{e}");
            return 10;
        }
        let ctl = match pass::recv_control(&s2) {
            Ok(c) => c,
            Err(e) => {
                note!("recv_control: {e}");
                return 11;
            }
        };
        match ctl.map(&pidfd_mem::Grant::new(
            pidfd_mem::RemoteAddr(a),
            MemOffset(pg()),
            pg(),
            Prot::Read,
        )) {
            Ok(()) => 0,
            Err(e) => {
                note!("P2: MAP by an unprivileged holder of ctl: {e}");
                1
            }
        }
    })?;
    expect_eq!(code, 0, "P2: unprivileged holder's MAP (see notes)");
    let mut b = [0u8; 8];
    mem.read_exact_at(&mut b, MemOffset(pg()))
        .ctx("P2: pread of the grant made by the other holder")?;
    expect_eq!(
        u64::from_ne_bytes(b),
        0xcafe,
        "P2: value through that grant"
    );
    ctl.lock().ctx("LOCK")?;
    Ok(())
}
