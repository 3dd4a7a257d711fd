//! Creating the fds (`pidfd_mem`, `REMOTE_PROC_MAP`) and the control plane.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use rustix::fs::{Mode, OFlags};
use rustix::process::{Pid, PidfdFlags};

use crate::access::Access;
use crate::error::{to_i64, Error, Op};
use crate::sys;
use crate::types::{Grant, MemOffset};

/// Opens `/dev/pidfd_mem` with `O_RDWR | O_CLOEXEC`.
fn open_device() -> Result<OwnedFd, Error> {
    rustix::fs::open(
        sys::PIDFD_MEM_DEVICE,
        OFlags::RDWR | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::from_errno(Op::OpenDevice, e))
}

/// Whether the pidfd_mem module is loaded and its device usable: opens
/// `/dev/pidfd_mem` (which grants nothing by itself, contract §1) and closes
/// it again. False exactly when [`pidfd_mem`] would fail with
/// [`Error::ModuleNotLoaded`] (`ENOENT`: no device node; `ENODEV`/`ENXIO`: a
/// node without its driver); true for any other answer, so that a device
/// this caller may not open (`EACCES`) gives its own error from
/// [`pidfd_mem`] rather than advice to load the module. [`crate::MODULE_HELP`]
/// says how to load it.
///
/// # Example
///
/// ```no_run
/// if !pidfd_mem::module_loaded() {
///     eprintln!("{}", pidfd_mem::MODULE_HELP);
/// }
/// ```
pub fn module_loaded() -> bool {
    !matches!(open_device(), Err(Error::ModuleNotLoaded { .. }))
}

/// `pidfd_mem(pidfd, flags)`: opens `/dev/pidfd_mem` (`O_RDWR | O_CLOEXEC`)
/// and makes the `PIDFD_MEM_OPEN` ioctl on it. Returns the control fd and
/// the access fd of target T, both close-on-exec (contract §1, O1, O2).
///
/// The caller needs ptrace-attach rights over T, checked once, here
/// (contract O1). `flags` must be 0; it is sent as given so that the kernel
/// answers `EINVAL` for anything else (contract O2).
///
/// # Errors
///
/// [`Error::ModuleNotLoaded`] when the device is missing;
/// [`Error::NotPermitted`] (`EPERM`), [`Error::TargetExited`] (`ESRCH`),
/// [`Error::NotAPidfd`] / [`Error::InvalidArgument`] (`EINVAL`),
/// [`Error::BadFd`] (`EBADF`) as contract O2 says.
///
/// # Example
///
/// ```no_run
/// use pidfd_mem::{pidfd_mem, pidfd_open, Grant, MemOffset, Prot, RemoteAddr};
///
/// let target_pid: u32 = 1234;
/// let pidfd = pidfd_open(target_pid)?;
/// let (ctl, mem) = pidfd_mem(&pidfd, 0)?;
/// // Grant mem[0, 4096) = T[0x7f0000000000, +4096), read-only.
/// ctl.map(&Grant::new(RemoteAddr(0x7f00_0000_0000), MemOffset(0), 4096, Prot::Read))?;
/// ctl.lock()?;
/// let mut buf = [0u8; 64];
/// mem.read_exact_at(&mut buf, MemOffset(0))?;
/// # Ok::<(), pidfd_mem::Error>(())
/// ```
pub fn pidfd_mem(pidfd: impl AsFd, flags: u32) -> Result<(Control, Access), Error> {
    let op = Op::PidfdMemOpen { flags };
    let dev = open_device()?;
    let mut arg = sys::PidfdMemOpen {
        pidfd: pidfd.as_fd().as_raw_fd(),
        flags,
        ..Default::default()
    };
    let (ctl, mem) =
        sys::pidfd_mem_open(dev.as_fd(), &mut arg).map_err(|e| Error::from_errno(op, e))?;
    Ok((Control::from(ctl), Access::from(mem)))
}

/// `ioctl(/dev/pidfd_mem, REMOTE_PROC_MAP)`: the legacy whole-address-space
/// mode. Returns an access fd whose offsets equal T's addresses over all of
/// T's user address space, read-write: the same as [`pidfd_mem`], one MAP of
/// `[0, TASK_SIZE)` and LOCK (contract R1). Same permission rule as O1.
///
/// # Example
///
/// ```no_run
/// use pidfd_mem::{remote_proc_map, pidfd_open, MemOffset};
///
/// let pidfd = pidfd_open(1234)?;
/// let mem = remote_proc_map(&pidfd)?;
/// let mut word = [0u8; 8];
/// mem.read_exact_at(&mut word, MemOffset(0x5555_5555_8000))?; // T's address
/// # Ok::<(), pidfd_mem::Error>(())
/// ```
pub fn remote_proc_map(pidfd: impl AsFd) -> Result<Access, Error> {
    let dev = open_device()?;
    let mut arg = sys::RemoteProcMap {
        pidfd: pidfd.as_fd().as_raw_fd(),
        ..Default::default()
    };
    let mem = sys::remote_proc_map(dev.as_fd(), &mut arg)
        .map_err(|e| Error::from_errno(Op::RemoteProcMap, e))?;
    Ok(Access::from(mem))
}

/// `pidfd_open(pid, 0)`: a pidfd for `pid` (close-on-exec), to pass to
/// [`pidfd_mem`].
///
/// # Example
///
/// ```no_run
/// let me = pidfd_mem::pidfd_open(std::process::id())?;
/// # Ok::<(), pidfd_mem::Error>(())
/// ```
pub fn pidfd_open(pid: u32) -> Result<OwnedFd, Error> {
    let op = Op::PidfdOpen { pid };
    let raw = i32::try_from(pid).map_err(|_| Error::OutOfRange {
        op,
        what: "pid",
        value: pid.into(),
    })?;
    let pid = Pid::from_raw(raw).ok_or(Error::OutOfRange {
        op,
        what: "pid",
        value: 0,
    })?;
    rustix::process::pidfd_open(pid, PidfdFlags::empty()).map_err(|e| Error::from_errno(op, e))
}

/// The control fd (ctl): adds and removes grants until locked (contract §3,
/// P2: any holder may change grants until LOCK).
///
/// Closing it leaves the grants as they are (contract K2).
#[derive(Debug)]
pub struct Control {
    fd: OwnedFd,
}

impl Control {
    /// `ioctl(ctl, PIDFD_MEM_MAP)`: adds `grant` (contract M1, M2).
    ///
    /// A grant is a window, not a snapshot: what T maps at
    /// `grant.address` at the moment of access is what readers see (M2).
    ///
    /// # Errors
    ///
    /// Per contract M1: [`Error::Unaligned`] / [`Error::InvalidArgument`]
    /// (`EINVAL`), [`Error::Overlap`] (`EEXIST`), [`Error::Locked`]
    /// (`EPERM`), [`Error::TargetExited`] (`ESRCH`);
    /// [`Error::OutOfRange`] when `offset` or `size` exceed `i64::MAX`.
    ///
    /// # Example
    ///
    /// ```no_run
    /// # fn f(ctl: &pidfd_mem::Control) -> Result<(), pidfd_mem::Error> {
    /// use pidfd_mem::{Grant, MemOffset, Prot, RemoteAddr};
    /// ctl.map(&Grant::new(RemoteAddr(0x7f00_0000_0000), MemOffset(0), 2 << 20, Prot::ReadWrite))?;
    /// # Ok(()) }
    /// ```
    pub fn map(&self, grant: &Grant) -> Result<(), Error> {
        let op = Op::Map(*grant);
        let arg = sys::PidfdMemMap {
            address: grant.address.0,
            offset: to_i64(op, "offset", grant.offset.0)?,
            size: to_i64(op, "size", grant.size)?,
            flags: grant.prot.grant_flags(),
            padding: [0; 7],
        };
        sys::map(self.fd.as_fd(), &arg).map_err(|e| Error::from_errno(op, e))
    }

    /// `ioctl(ctl, PIDFD_MEM_UNMAP)`: removes the grants' parts inside
    /// `[offset, offset+size)`, splitting grants at the edges; a range with
    /// no grant succeeds. When it returns, every mirror of the range in every
    /// process raises SIGBUS on access (contract U1).
    ///
    /// # Example
    ///
    /// ```no_run
    /// # fn f(ctl: &pidfd_mem::Control) -> Result<(), pidfd_mem::Error> {
    /// ctl.unmap(pidfd_mem::MemOffset(0), 4096)?;
    /// # Ok(()) }
    /// ```
    pub fn unmap(&self, offset: MemOffset, size: u64) -> Result<(), Error> {
        let op = Op::Unmap { offset, size };
        let arg = sys::PidfdMemUnmap {
            offset: to_i64(op, "offset", offset.0)?,
            size: to_i64(op, "size", size)?,
        };
        sys::unmap(self.fd.as_fd(), &arg).map_err(|e| Error::from_errno(op, e))
    }

    /// `ioctl(ctl, PIDFD_MEM_LOCK, 0)`: forbids every later MAP and UNMAP
    /// (they fail with [`Error::Locked`]); a second lock succeeds (contract K1).
    ///
    /// # Example
    ///
    /// ```no_run
    /// # fn f(ctl: &pidfd_mem::Control) -> Result<(), pidfd_mem::Error> {
    /// ctl.lock()?;
    /// # Ok(()) }
    /// ```
    pub fn lock(&self) -> Result<(), Error> {
        sys::lock(self.fd.as_fd()).map_err(|e| Error::from_errno(Op::Lock, e))
    }

    /// Gives back the fd.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }
}

impl AsFd for Control {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl From<OwnedFd> for Control {
    /// Takes an fd as a control fd. Nothing is checked: a wrong fd makes the
    /// ioctls fail with [`Error::NotSupported`] (`ENOTTY`).
    fn from(fd: OwnedFd) -> Self {
        Self { fd }
    }
}

impl From<Control> for OwnedFd {
    fn from(c: Control) -> Self {
        c.fd
    }
}
