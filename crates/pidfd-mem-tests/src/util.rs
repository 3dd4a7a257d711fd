//! Helpers: a target process T driven over pipes, forked helper processes,
//! raw mappings.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use pidfd_mem::{pidfd_mem, Access, Control, Grant, MemOffset, Prot, RemoteAddr};
use rustix::io::Errno;
use rustix::mm::{MapFlags, ProtFlags};

use crate::harness::{Ctx, Failure};

/// The page size.
pub fn page() -> usize {
    pidfd_mem::page_size()
}

/// `page()` as u64.
pub fn pg() -> u64 {
    page() as u64
}

/// Commands T understands.
#[repr(u64)]
#[derive(Clone, Copy, Debug)]
enum Op {
    Ping = 1,
    MmapAnon,
    MmapShared,
    MmapFixed,
    MmapMemfd,
    MmapFile,
    MmapHuge,
    Munmap,
    Mprotect,
    Madvise,
    Store64,
    Load64,
    Fill,
    Sum,
    Exec,
    Exit,
    Fork,
}

#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
struct Cmd {
    op: u64,
    a: u64,
    b: u64,
    c: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
struct Reply {
    /// 0 or an errno.
    err: i64,
    val: u64,
}

fn as_bytes<T: Copy>(v: &T) -> &[u8] {
    // SAFETY: T is a #[repr(C)] plain-integer struct without padding
    // (Cmd, Reply): every byte is initialised.
    unsafe { core::slice::from_raw_parts((v as *const T).cast::<u8>(), core::mem::size_of::<T>()) }
}

fn read_struct<T: Copy + Default>(fd: impl AsFd) -> Result<T, Errno> {
    let mut v = T::default();
    // SAFETY: as `as_bytes`; any byte pattern is a valid Cmd/Reply.
    let buf = unsafe {
        core::slice::from_raw_parts_mut((&mut v as *mut T).cast::<u8>(), core::mem::size_of::<T>())
    };
    let mut n = 0;
    while n < buf.len() {
        match rustix::io::read(fd.as_fd(), &mut buf[n..]) {
            Ok(0) => return Err(Errno::PIPE),
            Ok(k) => n += k,
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(v)
}

fn write_all(fd: impl AsFd, buf: &[u8]) -> Result<(), Errno> {
    let mut n = 0;
    while n < buf.len() {
        match rustix::io::write(fd.as_fd(), &buf[n..]) {
            Ok(k) => n += k,
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn prot_of(bits: u64) -> ProtFlags {
    ProtFlags::from_bits_truncate(bits as u32)
}

/// Executes one command in T. Runs in T, on T's own memory.
fn serve(cmd: Cmd, reply_fd: RawFd) -> Reply {
    let ok = |val: u64| Reply { err: 0, val };
    let err = |e: Errno| Reply {
        err: i64::from(e.raw_os_error()),
        val: 0,
    };
    let len = cmd.b as usize;
    let map = |flags: MapFlags, addr: u64, fd: Option<&OwnedFd>| -> Reply {
        // SAFETY: T maps memory at an address the kernel chooses (or, with
        // MAP_FIXED, where the test asked: T runs no Rust code that uses
        // that range).
        let r = unsafe {
            match fd {
                None => rustix::mm::mmap_anonymous(addr as *mut _, len, prot_of(cmd.c), flags),
                Some(fd) => rustix::mm::mmap(addr as *mut _, len, prot_of(cmd.c), flags, fd, 0),
            }
        };
        match r {
            Ok(p) => ok(p as u64),
            Err(e) => err(e),
        }
    };
    match cmd.op {
        x if x == Op::Ping as u64 => ok(0),
        // a = hint, b = len, c = prot
        x if x == Op::MmapAnon as u64 => map(MapFlags::PRIVATE, 0, None),
        x if x == Op::MmapShared as u64 => map(MapFlags::SHARED, 0, None),
        x if x == Op::MmapFixed as u64 => map(MapFlags::PRIVATE | MapFlags::FIXED, cmd.a, None),
        x if x == Op::MmapHuge as u64 => map(MapFlags::PRIVATE | MapFlags::HUGETLB, 0, None),
        x if x == Op::MmapMemfd as u64 => {
            let fd = match rustix::fs::memfd_create("target", rustix::fs::MemfdFlags::CLOEXEC) {
                Ok(fd) => fd,
                Err(e) => return err(e),
            };
            if let Err(e) = rustix::fs::ftruncate(&fd, len as u64) {
                return err(e);
            }
            map(MapFlags::SHARED, 0, Some(&fd))
        }
        x if x == Op::MmapFile as u64 => {
            let path = format!(
                "/tmp/pidfd-mem-target-{}",
                rustix::process::getpid().as_raw_nonzero()
            );
            let fd = match rustix::fs::open(
                path.as_str(),
                rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CREATE | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::from_raw_mode(0o600),
            ) {
                Ok(fd) => fd,
                Err(e) => return err(e),
            };
            let _ = rustix::fs::unlink(path.as_str());
            if let Err(e) = rustix::fs::ftruncate(&fd, len as u64) {
                return err(e);
            }
            map(MapFlags::SHARED, 0, Some(&fd))
        }
        // a = addr, b = len
        x if x == Op::Munmap as u64 => {
            // SAFETY: the test owns the layout of T's test mappings.
            match unsafe { rustix::mm::munmap(cmd.a as *mut _, len) } {
                Ok(()) => ok(0),
                Err(e) => err(e),
            }
        }
        x if x == Op::Mprotect as u64 => {
            let flags = rustix::mm::MprotectFlags::from_bits_truncate(cmd.c as u32);
            // SAFETY: as above.
            match unsafe { rustix::mm::mprotect(cmd.a as *mut _, len, flags) } {
                Ok(()) => ok(0),
                Err(e) => err(e),
            }
        }
        x if x == Op::Madvise as u64 => {
            // SAFETY: as above; c is a raw MADV_* value.
            let r = unsafe { libc::madvise(cmd.a as *mut _, len, cmd.c as i32) };
            if r == 0 {
                ok(0)
            } else {
                err(Errno::from_raw_os_error(
                    std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
                ))
            }
        }
        // a = addr, b = value
        x if x == Op::Store64 as u64 => {
            // SAFETY: the test asks T to store into T's own test mapping.
            unsafe { (cmd.a as *mut u64).write_volatile(cmd.b) };
            ok(0)
        }
        x if x == Op::Load64 as u64 => {
            // SAFETY: as above.
            ok(unsafe { (cmd.a as *const u64).read_volatile() })
        }
        // a = addr, b = len, c = byte
        x if x == Op::Fill as u64 => {
            for i in 0..len {
                // SAFETY: as above.
                unsafe { (cmd.a as *mut u8).add(i).write_volatile(cmd.c as u8) };
            }
            ok(0)
        }
        x if x == Op::Sum as u64 => {
            let mut s = 0u64;
            for i in 0..len {
                // SAFETY: as above.
                s += u64::from(unsafe { (cmd.a as *const u8).add(i).read_volatile() });
            }
            ok(s)
        }
        x if x == Op::Exec as u64 => {
            // The reply fd survives exec; the new image (`--idle FD`)
            // answers on it once it runs.
            let _ = rustix::io::fcntl_setfd(
                // SAFETY: reply_fd is T's open reply pipe for its whole life.
                unsafe { rustix::fd::BorrowedFd::borrow_raw(reply_fd) },
                rustix::io::FdFlags::empty(),
            );
            let exe = CString::new("/proc/self/exe").expect("no NUL");
            let argv0 = CString::new("pidfd-mem-tests").expect("no NUL");
            let idle = CString::new("--idle").expect("no NUL");
            let fdarg = CString::new(reply_fd.to_string()).expect("no NUL");
            let argv = [
                argv0.as_ptr(),
                idle.as_ptr(),
                fdarg.as_ptr(),
                core::ptr::null(),
            ];
            // SAFETY: valid NUL-terminated strings and a null-terminated argv.
            unsafe { libc::execv(exe.as_ptr(), argv.as_ptr()) };
            err(Errno::from_raw_os_error(
                std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
            ))
        }
        x if x == Op::Fork as u64 => {
            // SAFETY: T is single-threaded; the child only pauses until the
            // test's process group is killed.
            match unsafe { libc::fork() } {
                0 => loop {
                    // SAFETY: waiting for a signal.
                    unsafe { libc::pause() };
                },
                -1 => err(Errno::from_raw_os_error(
                    std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
                )),
                child => ok(child as u64),
            }
        }
        x if x == Op::Exit as u64 => {
            // SAFETY: ending T.
            unsafe { libc::_exit(cmd.a as i32) }
        }
        _ => err(Errno::INVAL),
    }
}

/// `pidfd-mem-tests --idle FD`: what T execs into (contract L4). Tells the
/// test it runs, then waits to be killed.
pub fn idle_main(fd: &str) -> ! {
    if let Ok(fd) = fd.parse::<RawFd>() {
        // SAFETY: the fd number was inherited across exec for this purpose.
        let b = unsafe { rustix::fd::BorrowedFd::borrow_raw(fd) };
        let _ = write_all(
            b,
            as_bytes(&Reply {
                err: 0,
                val: 0x1d1e,
            }),
        );
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// A target process T, forked from the test and driven over pipes. Killed
/// and reaped on drop.
pub struct Target {
    /// T's pid.
    pub pid: i32,
    /// A pidfd of T.
    pub pidfd: OwnedFd,
    cmd: Option<OwnedFd>,
    reply: OwnedFd,
    reaped: bool,
}

impl Target {
    /// Forks T. T dies with the test (PR_SET_PDEATHSIG).
    pub fn spawn() -> Result<Self, Failure> {
        let (cmd_r, cmd_w) =
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).ctx("pipe")?;
        let (rep_r, rep_w) =
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).ctx("pipe")?;
        // SAFETY: tests are single-threaded children of the harness.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(Failure::Fail("fork of T failed".into()));
        }
        if pid == 0 {
            drop(cmd_w);
            drop(rep_r);
            let _ = rustix::process::set_parent_process_death_signal(Some(
                rustix::process::Signal::KILL,
            ));
            loop {
                let Ok(cmd) = read_struct::<Cmd>(&cmd_r) else {
                    // SAFETY: ending T when the test is gone.
                    unsafe { libc::_exit(0) }
                };
                let rep = serve(cmd, rep_w.as_raw_fd());
                if write_all(&rep_w, as_bytes(&rep)).is_err() {
                    // SAFETY: as above.
                    unsafe { libc::_exit(0) }
                }
            }
        }
        drop(cmd_r);
        drop(rep_w);
        let pidfd = pidfd_mem::pidfd_open(pid as u32).ctx("pidfd_open(T)")?;
        let t = Self {
            pid,
            pidfd,
            cmd: Some(cmd_w),
            reply: rep_r,
            reaped: false,
        };
        t.call(Op::Ping, 0, 0, 0).ctx("T ping")?;
        Ok(t)
    }

    fn send(&self, op: Op, a: u64, b: u64, c: u64) -> Result<(), Errno> {
        let cmd = Cmd {
            op: op as u64,
            a,
            b,
            c,
        };
        let fd = self.cmd.as_ref().ok_or(Errno::PIPE)?;
        write_all(fd, as_bytes(&cmd))
    }

    fn call(&self, op: Op, a: u64, b: u64, c: u64) -> Result<u64, Errno> {
        self.send(op, a, b, c)?;
        let r: Reply = read_struct(&self.reply)?;
        if r.err != 0 {
            return Err(Errno::from_raw_os_error(r.err as i32));
        }
        Ok(r.val)
    }

    /// T: `mmap(NULL, len, prot, MAP_PRIVATE|MAP_ANONYMOUS)`.
    pub fn mmap_anon(&self, len: usize, prot: ProtFlags) -> Result<u64, Failure> {
        self.call(Op::MmapAnon, 0, len as u64, prot.bits().into())
            .ctx("T mmap anon")
    }

    /// T: read-write private anonymous memory.
    pub fn alloc(&self, len: usize) -> Result<u64, Failure> {
        self.mmap_anon(len, ProtFlags::READ | ProtFlags::WRITE)
    }

    /// T: `mmap(NULL, len, rw, MAP_SHARED|MAP_ANONYMOUS)`.
    pub fn mmap_shared(&self, len: usize) -> Result<u64, Failure> {
        self.call(
            Op::MmapShared,
            0,
            len as u64,
            (ProtFlags::READ | ProtFlags::WRITE).bits().into(),
        )
        .ctx("T mmap shared anon")
    }

    /// T: `mmap(addr, len, prot, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED)`.
    pub fn mmap_fixed(&self, addr: u64, len: usize, prot: ProtFlags) -> Result<u64, Failure> {
        self.call(Op::MmapFixed, addr, len as u64, prot.bits().into())
            .ctx("T mmap fixed")
    }

    /// T: a memfd of `len` bytes mapped shared read-write.
    pub fn mmap_memfd(&self, len: usize) -> Result<u64, Failure> {
        self.call(
            Op::MmapMemfd,
            0,
            len as u64,
            (ProtFlags::READ | ProtFlags::WRITE).bits().into(),
        )
        .ctx("T mmap memfd")
    }

    /// T: a file in /tmp of `len` bytes mapped shared read-write.
    pub fn mmap_file(&self, len: usize) -> Result<u64, Errno> {
        self.call(
            Op::MmapFile,
            0,
            len as u64,
            (ProtFlags::READ | ProtFlags::WRITE).bits().into(),
        )
    }

    /// T: `MAP_HUGETLB` anonymous memory (fails without huge pages).
    pub fn mmap_huge(&self, len: usize) -> Result<u64, Errno> {
        self.call(
            Op::MmapHuge,
            0,
            len as u64,
            (ProtFlags::READ | ProtFlags::WRITE).bits().into(),
        )
    }

    /// T: `munmap`.
    pub fn munmap(&self, addr: u64, len: usize) -> Result<(), Failure> {
        self.call(Op::Munmap, addr, len as u64, 0)
            .ctx("T munmap")
            .map(drop)
    }

    /// T: `mprotect`.
    pub fn mprotect(&self, addr: u64, len: usize, prot: ProtFlags) -> Result<(), Failure> {
        self.call(Op::Mprotect, addr, len as u64, prot.bits().into())
            .ctx("T mprotect")
            .map(drop)
    }

    /// T: `madvise` with a raw `MADV_*`.
    pub fn madvise(&self, addr: u64, len: usize, advice: i32) -> Result<(), Failure> {
        self.call(Op::Madvise, addr, len as u64, advice as u64)
            .ctx("T madvise")
            .map(drop)
    }

    /// T stores `val` at `addr`.
    pub fn store64(&self, addr: u64, val: u64) -> Result<(), Failure> {
        self.call(Op::Store64, addr, val, 0)
            .ctx("T store")
            .map(drop)
    }

    /// T loads the u64 at `addr`.
    pub fn load64(&self, addr: u64) -> Result<u64, Failure> {
        self.call(Op::Load64, addr, 0, 0).ctx("T load")
    }

    /// T fills `[addr, addr+len)` with `byte`.
    pub fn fill(&self, addr: u64, len: usize, byte: u8) -> Result<(), Failure> {
        self.call(Op::Fill, addr, len as u64, byte.into())
            .ctx("T fill")
            .map(drop)
    }

    /// T sums the bytes of `[addr, addr+len)`.
    pub fn sum(&self, addr: u64, len: usize) -> Result<u64, Failure> {
        self.call(Op::Sum, addr, len as u64, 0).ctx("T sum")
    }

    /// T execs this binary in `--idle` mode; returns once the new image
    /// runs (contract L4).
    pub fn exec(&self) -> Result<(), Failure> {
        let v = self.call(Op::Exec, 0, 0, 0).ctx("T exec")?;
        if v != 0x1d1e {
            return Err(Failure::Fail(format!("T exec: unexpected reply {v:#x}")));
        }
        Ok(())
    }

    /// T forks a child that keeps T's memory as it is now (copy-on-write)
    /// and pauses; returns the child's pid.
    pub fn fork(&self) -> Result<i32, Failure> {
        self.call(Op::Fork, 0, 0, 0).ctx("T fork").map(|p| p as i32)
    }

    /// T exits; waits until it is a zombie, without reaping it (its pid
    /// stays valid).
    pub fn exit_no_reap(&mut self) -> Result<(), Failure> {
        if self.cmd.is_none() {
            return Ok(()); // already exited
        }
        self.send(Op::Exit, 0, 0, 0).ctx("T exit")?;
        self.cmd = None;
        let mut info: libc::siginfo_t =
            // SAFETY: all-zero is a valid siginfo_t to be filled in.
            unsafe { core::mem::zeroed() };
        // SAFETY: waitid on our child with WNOWAIT: leaves it a zombie.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                self.pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if r != 0 {
            return Err(Failure::Fail(format!(
                "waitid(T): {}",
                std::io::Error::last_os_error()
            )));
        }
        Ok(())
    }

    /// T exits and is reaped.
    pub fn exit_and_reap(&mut self) -> Result<(), Failure> {
        self.exit_no_reap()?;
        let mut st = 0;
        // SAFETY: reaping our child.
        unsafe { libc::waitpid(self.pid, &mut st, 0) };
        self.reaped = true;
        Ok(())
    }

    /// `pidfd_mem(T, 0)`.
    pub fn open(&self) -> Result<(Control, Access), Failure> {
        pidfd_mem(&self.pidfd, 0).ctx("pidfd_mem(T)")
    }

    /// Open, and grant `T[addr, addr+len)` at `mem[offset, ..)`.
    pub fn open_granted(
        &self,
        addr: u64,
        offset: u64,
        len: usize,
        prot: Prot,
    ) -> Result<(Control, Access), Failure> {
        let (ctl, mem) = self.open()?;
        ctl.map(&Grant::new(
            RemoteAddr(addr),
            MemOffset(offset),
            len as u64,
            prot,
        ))
        .ctx("PIDFD_MEM_MAP")?;
        Ok((ctl, mem))
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if !self.reaped {
            // SAFETY: killing and reaping our own child.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                let mut st = 0;
                libc::waitpid(self.pid, &mut st, 0);
            }
        }
    }
}

/// Runs `f` in a forked child and returns its exit code (or 128+signal).
/// The child is single-threaded and may do anything.
pub fn in_child(f: impl FnOnce() -> i32) -> Result<i32, Failure> {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    // SAFETY: tests are single-threaded.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Failure::Fail("fork failed".into()));
    }
    if pid == 0 {
        let code = f();
        let _ = std::io::stdout().flush();
        // SAFETY: ending the helper child.
        unsafe { libc::_exit(code) };
    }
    let mut st = 0;
    // SAFETY: reaping our child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    Ok(if libc::WIFSIGNALED(st) {
        128 + libc::WTERMSIG(st)
    } else {
        libc::WEXITSTATUS(st)
    })
}

/// A forked child that answers the parent: for each request it runs
/// `answer` and writes back the bytes that returns; it exits 0 once the
/// parent closes its side (A5 tests: the child sees the parent's mirrors).
pub struct Responder {
    pid: i32,
    to_child: OwnedFd,
    from_child: OwnedFd,
}

impl Responder {
    /// Forks the child. Tests are single-threaded, so it may do anything.
    pub fn spawn(mut answer: impl FnMut() -> Vec<u8>) -> Result<Self, Failure> {
        let (to_child_r, to_child_w) = rustix::pipe::pipe().ctx("pipe")?;
        let (from_child_r, from_child_w) = rustix::pipe::pipe().ctx("pipe")?;
        // SAFETY: tests are single-threaded.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(Failure::Fail("fork failed".into()));
        }
        if pid == 0 {
            drop(to_child_w);
            drop(from_child_r);
            let mut b = [0u8; 1];
            while rustix::io::read(&to_child_r, &mut b) == Ok(1) {
                let _ = rustix::io::write(&from_child_w, &answer());
            }
            // SAFETY: ending the helper child.
            unsafe { libc::_exit(0) };
        }
        Ok(Self {
            pid,
            to_child: to_child_w,
            from_child: from_child_r,
        })
    }

    /// One request; the answer's bytes go to `buf`; how many came.
    pub fn ask(&self, buf: &mut [u8]) -> Result<usize, Failure> {
        rustix::io::write(&self.to_child, b"x").ctx("to child")?;
        rustix::io::read(&self.from_child, buf).ctx("from child")
    }

    /// Closes the requests and reaps the child: (exited normally, status).
    pub fn finish(self) -> (bool, i32) {
        let Self { pid, to_child, .. } = self;
        drop(to_child);
        let mut st = 0;
        // SAFETY: reaping our child.
        unsafe { libc::waitpid(pid, &mut st, 0) };
        (libc::WIFEXITED(st), libc::WEXITSTATUS(st))
    }
}

/// A raw `mmap` of a mem fd, unmapped on drop (for A1 tests that need
/// flags the library does not make, and for deliberately unguarded access).
pub struct RawMap {
    /// Start.
    pub ptr: *mut u8,
    /// Length.
    pub len: usize,
}

impl RawMap {
    /// `mmap(NULL, len, prot, flags, fd, offset)`.
    pub fn new(
        fd: impl AsFd,
        offset: u64,
        len: usize,
        prot: ProtFlags,
        flags: MapFlags,
    ) -> Result<Self, Errno> {
        // SAFETY: a new mapping at a kernel-chosen address aliases nothing.
        let p = unsafe { rustix::mm::mmap(core::ptr::null_mut(), len, prot, flags, fd, offset) }?;
        Ok(Self { ptr: p.cast(), len })
    }

    /// A shared anonymous mapping (shared with children forked after it).
    pub fn anon_shared(len: usize) -> Result<Self, Errno> {
        // SAFETY: a new mapping at a kernel-chosen address aliases nothing.
        let p = unsafe {
            rustix::mm::mmap_anonymous(
                core::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
            )
        }?;
        Ok(Self { ptr: p.cast(), len })
    }

    /// Atomic (SeqCst) load of the aligned u64 at byte `i`.
    pub fn load(&self, i: usize) -> u64 {
        assert!(i + 8 <= self.len && i % 8 == 0);
        // SAFETY: aligned and inside the live mapping, which is never a
        // mirror here (local shared memory).
        unsafe {
            (*self.ptr.add(i).cast::<std::sync::atomic::AtomicU64>())
                .load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    /// Atomic (SeqCst) store of the aligned u64 at byte `i`.
    pub fn store(&self, i: usize, v: u64) {
        assert!(i + 8 <= self.len && i % 8 == 0);
        // SAFETY: as `load`.
        unsafe {
            (*self.ptr.add(i).cast::<std::sync::atomic::AtomicU64>())
                .store(v, std::sync::atomic::Ordering::SeqCst)
        }
    }

    /// Volatile read of byte `i` (unguarded: SIGBUS kills).
    pub fn read(&self, i: usize) -> u8 {
        assert!(i < self.len);
        // SAFETY: inside the live mapping; a fault is the test's point.
        unsafe { self.ptr.add(i).read_volatile() }
    }

    /// Volatile write of byte `i` (unguarded).
    pub fn write(&self, i: usize, v: u8) {
        assert!(i < self.len);
        // SAFETY: as `read`.
        unsafe { self.ptr.add(i).write_volatile(v) }
    }
}

impl Drop for RawMap {
    fn drop(&mut self) {
        // SAFETY: our mapping (tests that move it reset ptr/len).
        let _ = unsafe { rustix::mm::munmap(self.ptr.cast(), self.len) };
    }
}

/// Moves the `len` bytes of a mirror at `from` with mremap onto a range
/// first reserved by mapping `mem` there; the new address. On failure the
/// reservation is gone and the mirror stays where it was.
pub fn mremap_onto_reserved(mem: impl AsFd, from: *mut u8, len: usize) -> Result<*mut u8, Errno> {
    let dest = RawMap::new(mem, 0, len, ProtFlags::READ, MapFlags::SHARED)?;
    let (dptr, dlen) = (dest.ptr, dest.len);
    core::mem::forget(dest);
    // SAFETY: the caller's mapping moves onto the range reserved above,
    // which nothing else uses.
    let r = unsafe {
        rustix::mm::mremap_fixed(
            from.cast(),
            len,
            len,
            rustix::mm::MremapFlags::MAYMOVE,
            dptr.cast(),
        )
    };
    if r.is_err() {
        // SAFETY: unmapping the reserved range we own.
        let _ = unsafe { rustix::mm::munmap(dptr.cast(), dlen) };
    }
    r.map(|p| p.cast())
}

/// Whether `fd` has FD_CLOEXEC.
pub fn is_cloexec(fd: impl AsFd) -> bool {
    rustix::io::fcntl_getfd(fd).is_ok_and(|f| f.contains(rustix::io::FdFlags::CLOEXEC))
}

/// Polls `mem` for exit for up to `secs` seconds.
pub fn wait_hup(mem: &Access, secs: u64) -> Result<bool, Failure> {
    mem.poll_exited(Some(Duration::from_secs(secs)))
        .ctx("poll(mem)")
}

/// The access must have raised SIGBUS, caught as [`pidfd_mem::MirrorError::Fault`].
pub fn expect_fault<T: std::fmt::Debug>(
    r: Result<T, pidfd_mem::MirrorError>,
    what: &str,
) -> Result<(), Failure> {
    match r {
        Err(pidfd_mem::MirrorError::Fault { .. }) => Ok(()),
        Ok(v) => Err(Failure::Fail(format!(
            "{what}: expected SIGBUS (MirrorError::Fault), seen success ({v:?})"
        ))),
        Err(e) => Err(Failure::Fail(format!(
            "{what}: expected SIGBUS (MirrorError::Fault), seen {e}"
        ))),
    }
}

/// `PIDFD_MEM_MAP` with raw fields (padding 0).
pub fn raw_map(
    ctl: &Control,
    address: u64,
    offset: i64,
    size: i64,
    flags: i32,
) -> Result<(), Errno> {
    pidfd_mem::sys::map(
        ctl.as_fd(),
        &pidfd_mem::sys::PidfdMemMap {
            address,
            offset,
            size,
            flags,
            padding: [0; 7],
        },
    )
}

/// `PIDFD_MEM_UNMAP` with raw fields.
pub fn raw_unmap(ctl: &Control, offset: i64, size: i64) -> Result<(), Errno> {
    pidfd_mem::sys::unmap(ctl.as_fd(), &pidfd_mem::sys::PidfdMemUnmap { offset, size })
}

/// Read-write flags of a grant.
pub const RW: i32 = pidfd_mem::sys::PIDFD_MEM_PROT_READ | pidfd_mem::sys::PIDFD_MEM_PROT_WRITE;
/// Read-only flags of a grant.
pub const RO: i32 = pidfd_mem::sys::PIDFD_MEM_PROT_READ;

/// A T with `pages` read-write pages at `addr`, each page i filled with
/// byte `i + 1`, opened and granted read-write at mem offset 0.
pub struct Setup {
    /// The target.
    pub t: Target,
    /// Start of T's region.
    pub addr: u64,
    /// The control fd.
    pub ctl: Control,
    /// The access fd.
    pub mem: Access,
}

impl Setup {
    /// See [`Setup`].
    pub fn new(pages: usize) -> Result<Self, Failure> {
        let t = Target::spawn()?;
        let addr = t.alloc(pages * page())?;
        for i in 0..pages {
            t.fill(addr + (i * page()) as u64, page(), (i + 1) as u8)?;
        }
        let (ctl, mem) = t.open_granted(addr, 0, pages * page(), Prot::ReadWrite)?;
        Ok(Self { t, addr, ctl, mem })
    }
}
