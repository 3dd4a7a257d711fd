//! Host tests: everything that needs no kernel module. A memfd or a regular
//! file stands in for a mem fd (`Access::from(OwnedFd)`): `pread`, `pwrite`,
//! `mmap` and `poll` behave alike, and truncating a file under its mapping
//! gives real SIGBUS faults to test the fault-handled copies (contract A2).

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use pidfd_mem::{
    pass, pidfd_mem, pidfd_open, remote_proc_map, Access, Control, Error, Grant, MemOffset, Mirror,
    MirrorError, PassError, Prot, RemoteAddr,
};
use rustix::fs::{ftruncate, memfd_create, MemfdFlags};
use rustix::io::{fcntl_getfd, Errno, FdFlags};
use vm_memory::Bytes;

fn page() -> usize {
    pidfd_mem::page_size()
}

fn memfd(len: usize) -> OwnedFd {
    let fd = memfd_create("pidfd-mem-test", MemfdFlags::CLOEXEC).expect("memfd_create");
    ftruncate(&fd, len as u64).expect("ftruncate");
    fd
}

/// A file-backed "mem" of `pages` pages filled with a pattern.
fn pattern_access(pages: usize) -> (Access, Vec<u8>) {
    let len = pages * page();
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let acc = Access::from(memfd(len));
    acc.write_all_at(&data, MemOffset(0)).expect("fill");
    (acc, data)
}

// ---------------------------------------------------------------- open

#[test]
fn module_not_loaded_on_host() {
    if Path::new(pidfd_mem::sys::PIDFD_MEM_DEVICE).exists() {
        println!("SKIP: /dev/pidfd_mem exists here; this test checks its absence");
        return;
    }
    let me = pidfd_open(std::process::id()).expect("pidfd_open(self)");
    let e = pidfd_mem(&me, 0).expect_err("no module, no pidfd_mem");
    assert!(
        matches!(
            e,
            Error::ModuleNotLoaded {
                errno: Errno::NOENT
            }
        ),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(msg.contains("make -C kmod KDIR="), "{msg}");
    assert!(msg.contains("insmod kmod/pidfd_mem.ko"), "{msg}");
    assert!(msg.contains("cargo xtask run --"), "{msg}");
    assert!(!msg.contains("modprobe"), "{msg}");
    assert!(!pidfd_mem::module_loaded());
    let e = remote_proc_map(&me).expect_err("no module, no remote_proc_map");
    assert!(matches!(e, Error::ModuleNotLoaded { .. }), "{e:?}");
}

#[test]
fn pidfd_open_validates_pid() {
    assert!(matches!(
        pidfd_open(0),
        Err(Error::OutOfRange { what: "pid", .. })
    ));
    assert!(matches!(
        pidfd_open(u32::MAX),
        Err(Error::OutOfRange { what: "pid", .. })
    ));
    let fd = pidfd_open(std::process::id()).expect("self");
    let fl = fcntl_getfd(&fd).expect("F_GETFD");
    assert!(fl.contains(FdFlags::CLOEXEC));
}

// ---------------------------------------------------------------- control

#[test]
fn control_out_of_range_refused_before_the_kernel() {
    // A memfd as ctl: anything reaching the kernel would be ENOTTY.
    let ctl = Control::from(memfd(0));
    let g = Grant::new(RemoteAddr(0), MemOffset(1 << 63), 4096, Prot::Read);
    assert!(matches!(
        ctl.map(&g),
        Err(Error::OutOfRange { what: "offset", .. })
    ));
    let g = Grant::new(RemoteAddr(0), MemOffset(0), u64::MAX, Prot::ReadWrite);
    assert!(matches!(
        ctl.map(&g),
        Err(Error::OutOfRange { what: "size", .. })
    ));
    assert!(matches!(
        ctl.unmap(MemOffset(u64::MAX), 4096),
        Err(Error::OutOfRange { what: "offset", .. })
    ));
    assert!(matches!(
        ctl.unmap(MemOffset(0), 1 << 63),
        Err(Error::OutOfRange { what: "size", .. })
    ));
}

#[test]
fn control_ioctls_on_a_foreign_fd_are_enotty() {
    let ctl = Control::from(memfd(0));
    let g = Grant::new(RemoteAddr(0x10000), MemOffset(0), 4096, Prot::Read);
    let e = ctl.map(&g).expect_err("memfd has no PIDFD_MEM_MAP");
    assert!(
        matches!(
            e,
            Error::NotSupported {
                errno: Errno::NOTTY,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(matches!(
        ctl.unmap(MemOffset(0), 4096),
        Err(Error::NotSupported { .. })
    ));
    assert!(matches!(ctl.lock(), Err(Error::NotSupported { .. })));
    // sys-level raw calls give the raw errno.
    assert_eq!(
        pidfd_mem::sys::lock_with_arg(ctl.as_fd(), 1),
        Err(Errno::NOTTY)
    );
    let fd: OwnedFd = ctl.into_fd();
    drop(fd);
}

// ---------------------------------------------------------------- access: pread/pwrite

#[test]
fn read_write_at_roundtrip() {
    let (acc, data) = pattern_access(2);
    let mut buf = vec![0u8; 100];
    assert_eq!(acc.read_at(&mut buf, MemOffset(10)).unwrap(), 100);
    assert_eq!(&buf[..], &data[10..110]);
    assert_eq!(acc.write_at(b"xyz", MemOffset(4096)).unwrap(), 3);
    let mut three = [0u8; 3];
    acc.read_exact_at(&mut three, MemOffset(4096)).unwrap();
    assert_eq!(&three, b"xyz");
    // Past the end: short count, then EOF.
    let end = 2 * page() as u64;
    let mut big = vec![0u8; 64];
    assert_eq!(acc.read_at(&mut big, MemOffset(end - 16)).unwrap(), 16);
    match acc.read_exact_at(&mut big, MemOffset(end - 16)) {
        Err(Error::UnexpectedEof { done: 16, .. }) => {}
        r => panic!("expected UnexpectedEof after 16 bytes, got {r:?}"),
    }
}

#[test]
fn read_write_offset_above_i64_max_refused() {
    let (acc, _) = pattern_access(1);
    let mut b = [0u8; 1];
    assert!(matches!(
        acc.read_at(&mut b, MemOffset(1 << 63)),
        Err(Error::OutOfRange { what: "offset", .. })
    ));
    assert!(matches!(
        acc.write_at(&b, MemOffset(u64::MAX)),
        Err(Error::OutOfRange { .. })
    ));
}

#[test]
fn pread_errno_keeps_op_context() {
    // A write-only pipe end as "mem": pread is ESPIPE, reported as Os with op.
    let (r, w) = rustix::pipe::pipe().unwrap();
    drop(r);
    let acc = Access::from(w);
    let mut b = [0u8; 4];
    let e = acc
        .read_at(&mut b, MemOffset(8))
        .expect_err("pread on a pipe");
    assert_eq!(e.errno(), Some(Errno::SPIPE));
    assert!(e.to_string().contains("pread of mem (offset 0x8"), "{e}");
}

// ---------------------------------------------------------------- poll

#[test]
fn poll_exited_reports_pollhup_only() {
    // A regular file is always readable: that must not count as "exited".
    let (acc, _) = pattern_access(1);
    assert!(!acc.poll_exited(Some(Duration::ZERO)).unwrap());
    assert!(!acc.poll_exited(Some(Duration::from_millis(20))).unwrap());
    // A pipe whose writer is gone reports POLLHUP: "exited".
    let (r, w) = rustix::pipe::pipe().unwrap();
    let acc = Access::from(r);
    assert!(!acc.poll_exited(Some(Duration::ZERO)).unwrap());
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        drop(w);
    });
    acc.wait_exit().expect("wait_exit returns on POLLHUP");
    assert!(acc.poll_exited(Some(Duration::ZERO)).unwrap());
    t.join().unwrap();
}

// ---------------------------------------------------------------- mirrors

#[test]
fn mirror_copies_objects_and_atomics() {
    let (acc, data) = pattern_access(2);
    let m = acc.mmap(MemOffset(0), 2 * page(), Prot::ReadWrite).unwrap();
    assert_eq!(m.len(), 2 * page());
    assert!(!m.is_empty());
    assert_eq!(m.prot(), Prot::ReadWrite);
    assert_eq!(m.mem_offset(), MemOffset(0));
    let mut buf = vec![0u8; 2 * page()];
    m.copy_to(0, &mut buf).unwrap();
    assert_eq!(buf, data);
    m.copy_from(page() - 2, b"abcd").unwrap(); // straddles the page boundary
    let mut four = [0u8; 4];
    acc.read_exact_at(&mut four, MemOffset(page() as u64 - 2))
        .unwrap();
    assert_eq!(&four, b"abcd", "a store through the mirror is in the file");
    m.write_obj(3, 0x1122_3344_5566_7788u64).unwrap(); // unaligned is fine here
    assert_eq!(m.read_obj::<u64>(3).unwrap(), 0x1122_3344_5566_7788);
    let arr: [u16; 3] = m.read_obj(page() - 2).unwrap();
    assert_eq!(arr[0].to_ne_bytes(), *b"ab");

    m.store_u64(64, 7, Ordering::Release).unwrap();
    assert_eq!(m.load_u64(64, Ordering::Acquire).unwrap(), 7);
    assert_eq!(
        m.compare_exchange_u64(64, 7, 9, Ordering::SeqCst, Ordering::SeqCst)
            .unwrap(),
        Ok(7)
    );
    assert_eq!(
        m.compare_exchange_u64(64, 7, 11, Ordering::SeqCst, Ordering::SeqCst)
            .unwrap(),
        Err(9)
    );
    assert_eq!(m.load_u64(64, Ordering::Relaxed).unwrap(), 9);
    m.store_u32(128, 5, Ordering::SeqCst).unwrap();
    assert_eq!(m.load_u32(128, Ordering::SeqCst).unwrap(), 5);
    assert_eq!(
        m.compare_exchange_u32(128, 5, 6, Ordering::AcqRel, Ordering::Acquire)
            .unwrap(),
        Ok(5)
    );
    assert_eq!(
        m.compare_exchange_u32(128, 5, 6, Ordering::AcqRel, Ordering::Acquire)
            .unwrap(),
        Err(6)
    );
    // Orderings that std's atomics reject are accepted, never a panic.
    assert_eq!(m.load_u32(128, Ordering::Release).unwrap(), 6);
    m.store_u32(128, 1, Ordering::Acquire).unwrap();

    // The volatile slice sees the same bytes.
    let vs = m.as_volatile_slice();
    assert_eq!(vs.len(), 2 * page());
    let mut b = [0u8; 4];
    vs.subslice(page() - 2, 4).unwrap().copy_to(&mut b[..]);
    assert_eq!(&b, b"abcd");
}

#[test]
fn mirror_argument_errors() {
    let (acc, _) = pattern_access(1);
    let m = acc.mmap(MemOffset(0), page(), Prot::ReadWrite).unwrap();
    let p = page();
    let mut buf = [0u8; 8];
    assert_eq!(
        m.copy_to(p - 4, &mut buf),
        Err(MirrorError::OutOfBounds {
            offset: p - 4,
            len: 8,
            mirror_len: p
        })
    );
    assert!(matches!(
        m.copy_from(usize::MAX, &buf),
        Err(MirrorError::OutOfBounds { .. })
    ));
    assert!(matches!(
        m.read_obj::<u64>(p - 7),
        Err(MirrorError::OutOfBounds { .. })
    ));
    for off in [1usize, 4, 12] {
        assert_eq!(
            m.load_u64(off, Ordering::SeqCst),
            Err(MirrorError::Unaligned {
                offset: off,
                align: 8
            })
        );
        assert!(matches!(
            m.store_u64(off, 1, Ordering::SeqCst),
            Err(MirrorError::Unaligned { .. })
        ));
        assert!(matches!(
            m.compare_exchange_u64(off, 0, 1, Ordering::SeqCst, Ordering::SeqCst),
            Err(MirrorError::Unaligned { .. })
        ));
    }
    for off in [1usize, 2, 6] {
        assert_eq!(
            m.load_u32(off, Ordering::SeqCst),
            Err(MirrorError::Unaligned {
                offset: off,
                align: 4
            })
        );
        assert!(matches!(
            m.store_u32(off, 1, Ordering::SeqCst),
            Err(MirrorError::Unaligned { .. })
        ));
        assert!(matches!(
            m.compare_exchange_u32(off, 0, 1, Ordering::SeqCst, Ordering::SeqCst),
            Err(MirrorError::Unaligned { .. })
        ));
    }
    assert!(matches!(
        m.load_u64(p, Ordering::SeqCst),
        Err(MirrorError::OutOfBounds { .. })
    ));

    // Writes into a read-only mirror are refused before touching it.
    let ro = acc.mmap(MemOffset(0), p, Prot::Read).unwrap();
    assert_eq!(
        ro.copy_from(0, b"x"),
        Err(MirrorError::ReadOnly { offset: 0 })
    );
    assert_eq!(
        ro.store_u64(8, 1, Ordering::SeqCst),
        Err(MirrorError::ReadOnly { offset: 8 })
    );
    assert!(matches!(
        ro.write_obj(0, 1u8),
        Err(MirrorError::ReadOnly { .. })
    ));
    assert!(matches!(
        ro.compare_exchange_u32(0, 0, 1, Ordering::SeqCst, Ordering::SeqCst),
        Err(MirrorError::ReadOnly { .. })
    ));
    assert!(ro.read_obj::<u8>(0).is_ok());
}

#[test]
fn mmap_errors_are_typed() {
    let (acc, _) = pattern_access(2);
    match acc.mmap(MemOffset(100), page(), Prot::Read) {
        Err(Error::Unaligned {
            what: "offset",
            value: 100,
            errno: Errno::INVAL,
            ..
        }) => {}
        r => panic!("expected Unaligned offset EINVAL, got {r:?}"),
    }
    assert!(matches!(
        acc.mmap(MemOffset(0), 0, Prot::Read),
        Err(Error::InvalidArgument {
            errno: Errno::INVAL,
            ..
        })
    ));
    assert!(matches!(
        acc.mmap(MemOffset(1 << 63), page(), Prot::Read),
        Err(Error::OutOfRange { .. })
    ));
    // PROT_WRITE on an fd opened read-only: EACCES, as over a read-only grant (A1).
    let path = std::env::temp_dir().join(format!("pidfd-mem-ro-{}", std::process::id()));
    std::fs::write(&path, vec![0u8; page()]).unwrap();
    let ro: OwnedFd = std::fs::File::open(&path).unwrap().into();
    std::fs::remove_file(&path).unwrap();
    let acc = Access::from(ro);
    match acc.mmap(MemOffset(0), page(), Prot::ReadWrite) {
        Err(e @ Error::AccessDenied { .. }) => assert!(e.to_string().contains("mmap"), "{e}"),
        r => panic!("expected AccessDenied, got {r:?}"),
    }
    assert!(acc.mmap(MemOffset(0), page(), Prot::Read).is_ok());
}

#[test]
fn mirror_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Mirror>();
    check::<Access>();
    check::<Control>();
}

// ---------------------------------------------------------------- SIGBUS

/// A 2-page mirror of a file truncated to 1 page: page 1 raises SIGBUS.
fn truncated_mirror(fd: OwnedFd) -> (Access, Mirror, Vec<u8>) {
    let p = page();
    let data: Vec<u8> = (0..2 * p).map(|i| (i * 7 % 256) as u8).collect();
    let acc = Access::from(fd);
    acc.write_all_at(&data, MemOffset(0)).unwrap();
    let m = acc.mmap(MemOffset(0), 2 * p, Prot::ReadWrite).unwrap();
    ftruncate(&acc, p as u64).unwrap();
    (acc, m, data)
}

fn check_faults(acc: &Access, m: &Mirror, data: &[u8]) {
    if !Mirror::catches_sigbus() {
        println!("SKIP: SIGBUS is not caught on this architecture");
        return;
    }
    let p = page();
    // copy_to across the boundary: the first page arrives, then Fault.
    let mut buf = vec![0u8; 2 * p];
    match m.copy_to(0, &mut buf) {
        Err(MirrorError::Fault {
            offset,
            mem_offset,
            copied,
        }) => {
            assert_eq!(offset, p, "fault at the first byte of page 1");
            assert_eq!(mem_offset, MemOffset(p as u64));
            assert!(copied <= p, "copied {copied} > {p}");
            assert_eq!(&buf[..copied], &data[..copied]);
        }
        r => panic!("expected Fault at {p:#x}, got {r:?}"),
    }
    // Starting inside the bad page.
    let mut small = [0u8; 16];
    assert!(matches!(
        m.copy_to(p + 100, &mut small),
        Err(MirrorError::Fault { offset, copied: 0, .. }) if offset == p + 100
    ));
    assert!(matches!(
        m.copy_from(p + 8, b"zz"),
        Err(MirrorError::Fault { .. })
    ));
    assert!(matches!(
        m.read_obj::<u32>(p),
        Err(MirrorError::Fault { .. })
    ));
    assert!(matches!(
        m.write_obj(p, 1u32),
        Err(MirrorError::Fault { .. })
    ));
    assert!(
        matches!(m.load_u64(p, Ordering::SeqCst), Err(MirrorError::Fault { offset, .. }) if offset == p)
    );
    assert!(matches!(
        m.load_u32(p + 4, Ordering::SeqCst),
        Err(MirrorError::Fault { .. })
    ));
    assert!(matches!(
        m.store_u64(p + 8, 1, Ordering::SeqCst),
        Err(MirrorError::Fault { .. })
    ));
    assert!(matches!(
        m.store_u32(p + 8, 1, Ordering::SeqCst),
        Err(MirrorError::Fault { .. })
    ));
    assert!(matches!(
        m.compare_exchange_u64(p, 0, 1, Ordering::SeqCst, Ordering::SeqCst),
        Err(MirrorError::Fault { .. })
    ));
    assert!(matches!(
        m.compare_exchange_u32(p, 0, 1, Ordering::SeqCst, Ordering::SeqCst),
        Err(MirrorError::Fault { .. })
    ));
    // Page 0 is still fine: the mirror is not poisoned.
    m.copy_to(0, &mut small).unwrap();
    assert_eq!(&small[..], &data[..16]);
    assert!(m.load_u64(0, Ordering::SeqCst).is_ok());
    // Grow the file again: page 1 is back (zeros now), same mirror.
    ftruncate(acc, 2 * p as u64).unwrap();
    m.copy_to(p, &mut small).unwrap();
    assert_eq!(small, [0u8; 16]);
    m.copy_from(p, b"back").unwrap();
    let mut four = [0u8; 4];
    acc.read_exact_at(&mut four, MemOffset(p as u64)).unwrap();
    assert_eq!(&four, b"back");
}

#[test]
fn sigbus_in_copy_is_an_error_memfd() {
    let (acc, m, data) = truncated_mirror(memfd(2 * page()));
    check_faults(&acc, &m, &data);
}

#[test]
fn sigbus_in_copy_is_an_error_regular_file() {
    let path = std::env::temp_dir().join(format!("pidfd-mem-sigbus-{}", std::process::id()));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    let (acc, m, data) = truncated_mirror(f.into());
    check_faults(&acc, &m, &data);
}

#[test]
fn sigbus_caught_on_many_threads_at_once() {
    if !Mirror::catches_sigbus() {
        println!("SKIP: SIGBUS is not caught on this architecture");
        return;
    }
    let (_acc, m, _) = truncated_mirror(memfd(2 * page()));
    let p = page();
    std::thread::scope(|s| {
        for t in 0..4 {
            let m = &m;
            s.spawn(move || {
                for i in 0..200 {
                    let mut b = [0u8; 64];
                    let off = p + (t * 64 + i) % (p - 64);
                    assert!(matches!(
                        m.copy_to(off, &mut b),
                        Err(MirrorError::Fault { .. })
                    ));
                    m.copy_to(t * 64, &mut b).expect("page 0 readable");
                }
            });
        }
    });
}

/// Forks; the child runs `f` and `_exit(0)`s. Returns the wait status.
fn in_child(f: impl FnOnce()) -> i32 {
    // SAFETY: the child only runs `f` (volatile accesses, no locks, no
    // allocation) and then _exit, so forking a multi-threaded test process
    // is sound.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        f();
        // SAFETY: _exit is always safe; it skips destructors on purpose.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child with a valid status pointer.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid);
    status
}

#[test]
fn sigbus_outside_guarded_copies_still_kills() {
    let (_acc, m, _) = truncated_mirror(memfd(2 * page()));
    // Make sure our handler is installed in this process.
    let mut b = [0u8; 1];
    let _ = m.copy_to(page(), &mut b);
    let p = page();
    let vs = m.as_volatile_slice();
    let status = in_child(|| {
        // Unguarded volatile read of the truncated page through the
        // VolatileSlice: must die of SIGBUS.
        let _ = vs.read_obj::<u8>(p);
    });
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGBUS,
        "expected the child to die of SIGBUS, status {status:#x}"
    );
    // The same with a raw pointer.
    let status = in_child(|| {
        // SAFETY: the pointer is inside the live mapping; the read faults,
        // which is the point of the test.
        let _ = unsafe { m.as_ptr().add(p).read_volatile() };
    });
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGBUS,
        "expected the child to die of SIGBUS, status {status:#x}"
    );
    // raise(SIGBUS) is passed on to the previous handler (here std's stack
    // overflow handler, which resets SIGBUS to SIG_DFL and returns), as
    // without this crate: a second one kills. tests/sigbus_chain.rs checks
    // the chaining in processes where no handler was there before.
    let status = in_child(|| {
        let _ = m.copy_to(0, &mut [0u8; 1]);
        // SAFETY: raising a signal at ourselves.
        unsafe { libc::raise(libc::SIGBUS) };
        // SAFETY: as above.
        unsafe { libc::raise(libc::SIGBUS) };
    });
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGBUS,
        "expected raise(SIGBUS) to kill the child, status {status:#x}"
    );
}

// ---------------------------------------------------------------- fd passing

#[test]
fn pass_access_and_control_over_socketpair() {
    let (a, b) = UnixStream::pair().unwrap();
    let (acc, data) = pattern_access(1);
    pass::send_access(&a, &acc).unwrap();
    let got = pass::recv_access(&b).unwrap();
    let fl = fcntl_getfd(&got).unwrap();
    assert!(
        fl.contains(FdFlags::CLOEXEC),
        "received fds are close-on-exec"
    );
    let mut buf = [0u8; 32];
    got.read_exact_at(&mut buf, MemOffset(0)).unwrap();
    assert_eq!(&buf[..], &data[..32]);
    got.write_at(b"!", MemOffset(0)).unwrap();
    let mut one = [0u8; 1];
    acc.read_exact_at(&mut one, MemOffset(0)).unwrap();
    assert_eq!(&one, b"!", "same open file on both sides");

    let ctl = Control::from(memfd(0));
    pass::send_control(&a, &ctl).unwrap();
    let c2 = pass::recv_control(&b).unwrap();
    assert!(fcntl_getfd(&c2).unwrap().contains(FdFlags::CLOEXEC));

    pass::send_fd(&a, memfd(0)).unwrap();
    pass::recv_fd(&b).unwrap();
}

#[test]
fn pass_errors() {
    let (a, b) = UnixStream::pair().unwrap();
    // Wrong kind: a ctl where a mem is expected.
    pass::send_control(&a, &Control::from(memfd(0))).unwrap();
    assert!(matches!(
        pass::recv_access(&b),
        Err(PassError::WrongKind {
            expected: 'M',
            found: 'C'
        })
    ));
    // Data without an fd.
    rustix::io::write(&a, b"M").unwrap();
    assert!(matches!(pass::recv_access(&b), Err(PassError::NoFd)));
    // Two fds in one message: both closed, error.
    {
        use core::mem::MaybeUninit;
        use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
        let (f1, f2) = (memfd(0), memfd(0));
        let fds = [f1.as_fd(), f2.as_fd()];
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(2))];
        let mut ctl = SendAncillaryBuffer::new(&mut space);
        assert!(ctl.push(SendAncillaryMessage::ScmRights(&fds)));
        rustix::net::sendmsg(
            &a,
            &[std::io::IoSlice::new(b"M")],
            &mut ctl,
            SendFlags::empty(),
        )
        .unwrap();
    }
    assert!(matches!(
        pass::recv_access(&b),
        Err(PassError::TooManyFds { count: 2 })
    ));
    // Sending on a closed peer: EPIPE, not SIGPIPE.
    drop(b);
    assert!(matches!(
        pass::send_access(&a, &Access::from(memfd(0))),
        Err(PassError::Send { errno: Errno::PIPE })
    ));
    let (a, b) = UnixStream::pair().unwrap();
    drop(a);
    assert!(matches!(pass::recv_access(&b), Err(PassError::Closed)));
    // Not a socket.
    let e = pass::send_fd(memfd(0), memfd(0)).expect_err("not a socket");
    assert!(
        matches!(
            e,
            PassError::Send {
                errno: Errno::NOTSOCK
            }
        ),
        "{e:?}"
    );
}

#[test]
fn pass_access_with_a_payload() {
    let (a, b) = UnixStream::pair().unwrap();
    let (acc, data) = pattern_access(1);
    let header: Vec<u8> = (0..64u8).collect();
    pass::send_access_with(&a, &acc, &header).unwrap();
    // Something sent after must stay for the next read, not be swallowed.
    pass::send_access(&a, &acc).unwrap();
    let (got, payload) = pass::recv_access_with(&b, 64).unwrap();
    assert_eq!(payload, header);
    assert!(fcntl_getfd(&got).unwrap().contains(FdFlags::CLOEXEC));
    let mut buf = [0u8; 16];
    got.read_exact_at(&mut buf, MemOffset(0)).unwrap();
    assert_eq!(&buf[..], &data[..16]);
    pass::recv_access(&b).expect("the next message is intact");

    // An empty payload, and a payload as large as allowed.
    pass::send_access_with(&a, &acc, b"").unwrap();
    assert_eq!(pass::recv_access_with(&b, 0).unwrap().1, b"");
    let big = vec![7u8; 100_000];
    let sender = {
        let a = a.try_clone().unwrap();
        let acc = Access::from(acc.as_fd().try_clone_to_owned().unwrap());
        let big = big.clone();
        std::thread::spawn(move || pass::send_access_with(&a, &acc, &big).unwrap())
    };
    let (_, got_big) = pass::recv_access_with(&b, big.len()).unwrap();
    sender.join().unwrap();
    assert_eq!(got_big, big);

    // Any bound is fine, even one no buffer could hold.
    pass::send_access_with(&a, &acc, b"unbounded").unwrap();
    assert_eq!(
        pass::recv_access_with(&b, usize::MAX).unwrap().1,
        b"unbounded"
    );

    // Over a datagram socket too (one message, boundaries kept).
    let (c, d) = std::os::unix::net::UnixDatagram::pair().unwrap();
    pass::send_access_with(&c, &acc, b"dgram").unwrap();
    assert_eq!(pass::recv_access_with(&d, 16).unwrap().1, b"dgram");
}

#[test]
fn pass_with_payload_errors() {
    let (a, b) = UnixStream::pair().unwrap();
    let acc = Access::from(memfd(0));
    // Longer than the receiver accepts.
    pass::send_access_with(&a, &acc, &[1u8; 65]).unwrap();
    assert!(matches!(
        pass::recv_access_with(&b, 64),
        Err(PassError::PayloadTooLarge { len: 65, max: 64 })
    ));
    let (a, b) = UnixStream::pair().unwrap();
    // A plain message where a payload is expected, and the other way round.
    pass::send_access(&a, &acc).unwrap();
    assert!(matches!(
        pass::recv_access_with(&b, 64),
        Err(PassError::WrongKind {
            expected: 'P',
            found: 'M'
        })
    ));
    pass::send_access_with(&a, &acc, b"x").unwrap();
    assert!(matches!(
        pass::recv_access(&b),
        Err(PassError::WrongKind {
            expected: 'M',
            found: 'P'
        })
    ));
    let (a, b) = UnixStream::pair().unwrap();
    // The wrong kind of fd.
    pass::send_fd_with(&a, memfd(0), pass::TAG_CONTROL, b"x").unwrap();
    assert!(matches!(
        pass::recv_access_with(&b, 64),
        Err(PassError::WrongKind {
            expected: 'M',
            found: 'C'
        })
    ));
    // The peer closes half way through the payload.
    {
        use core::mem::MaybeUninit;
        use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
        let f = memfd(0);
        let fds = [f.as_fd()];
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut ctl = SendAncillaryBuffer::new(&mut space);
        assert!(ctl.push(SendAncillaryMessage::ScmRights(&fds)));
        let mut msg = vec![b'P', b'M'];
        msg.extend_from_slice(&10u32.to_le_bytes());
        msg.extend_from_slice(b"abc");
        rustix::net::sendmsg(
            &a,
            &[std::io::IoSlice::new(&msg)],
            &mut ctl,
            SendFlags::empty(),
        )
        .unwrap();
    }
    drop(a);
    assert!(matches!(
        pass::recv_access_with(&b, 64),
        Err(PassError::Closed)
    ));
    // Nothing at all.
    let (a, b) = UnixStream::pair().unwrap();
    drop(a);
    assert!(matches!(
        pass::recv_access_with(&b, 64),
        Err(PassError::Closed)
    ));
}
