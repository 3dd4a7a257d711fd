//! Raw ABI: the structs, constants and ioctls of `include/uapi/linux/pidfd_mem.h`.
//!
//! This module mirrors the header exactly (checked mechanically by
//! `tests/abi.rs`, which compiles a C program against the header and
//! compares every constant, size and field offset). It is public so that
//! tests can send arguments the safe API refuses to build (non-zero reserved
//! fields, negative offsets, unknown flags, unknown ioctls): the kernel, not
//! this crate, is the judge of those (contract §1, O2, M1).
//!
//! Every function here makes exactly one `ioctl(2)` and returns the raw
//! [`Errno`]; the typed [`crate::Error`] is built by the callers. File
//! descriptors that the kernel returns are wrapped in [`OwnedFd`] right after
//! the call.
//!
//! The ioctl `unsafe` of the crate lives here.

use core::ffi::c_void;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use rustix::io::Errno;
use rustix::ioctl::{
    ioctl, opcode, IntegerSetter, Ioctl, IoctlOutput, NoArg, Opcode, Setter, Updater,
};

/// `PIDFD_MEM_DEVICE`: the misc device that stands for the `pidfd_mem()`
/// system call (contract §1).
pub const PIDFD_MEM_DEVICE: &str = "/dev/pidfd_mem";

/// `PIDFD_MEM_PROT_READ`: a grant readable through mem.
pub const PIDFD_MEM_PROT_READ: i32 = 0x1;
/// `PIDFD_MEM_PROT_WRITE`: a grant writable through mem (only with READ).
pub const PIDFD_MEM_PROT_WRITE: i32 = 0x2;

/// `PIDFD_MEM_IOC_MAGIC`: the ioctl group of every pidfd_mem ioctl.
pub const PIDFD_MEM_IOC_MAGIC: u8 = 0xB6;

/// `struct pidfd_mem_open`, the argument of [`PIDFD_MEM_OPEN`] (contract §1, O1, O2).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PidfdMemOpen {
    /// in: pidfd of the target T.
    pub pidfd: i32,
    /// in: must be 0.
    pub flags: u32,
    /// out: control fd.
    pub ctl_fd: i32,
    /// out: access fd.
    pub mem_fd: i32,
    /// in: must be 0.
    pub reserved: [u64; 2],
}

/// `struct pidfd_mem_map`, the argument of [`PIDFD_MEM_MAP`] (contract M1).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PidfdMemMap {
    /// Start in T, page aligned.
    pub address: u64,
    /// Start in mem, page aligned, >= 0.
    pub offset: i64,
    /// Page aligned, > 0.
    pub size: i64,
    /// [`PIDFD_MEM_PROT_READ`] `[|` [`PIDFD_MEM_PROT_WRITE`]`]`.
    pub flags: i32,
    /// Must be 0.
    pub padding: [i32; 7],
}

/// `struct pidfd_mem_unmap`, the argument of [`PIDFD_MEM_UNMAP`] (contract U1).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PidfdMemUnmap {
    /// Start in mem.
    pub offset: i64,
    /// Length of the window.
    pub size: i64,
}

/// `struct remote_proc_map`, the argument of [`REMOTE_PROC_MAP`] (contract R1).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RemoteProcMap {
    /// in: pidfd of the target T.
    pub pidfd: i32,
    /// in: must be 0.
    pub flags: u32,
    /// out: whole-address-space access fd.
    pub mem_fd: i32,
    /// in: must be 0.
    pub reserved: u32,
}

// SAFETY (the four impls): `#[repr(C)]` structs of integers whose padding is
// explicit fields (sizes 32, 56, 16, 16, checked against the C header by
// tests/abi.rs): no padding bytes, and every bit pattern is a valid value.
// SAFETY: see above.
unsafe impl vm_memory::ByteValued for PidfdMemOpen {}
// SAFETY: see above.
unsafe impl vm_memory::ByteValued for PidfdMemMap {}
// SAFETY: see above.
unsafe impl vm_memory::ByteValued for PidfdMemUnmap {}
// SAFETY: see above.
unsafe impl vm_memory::ByteValued for RemoteProcMap {}

const _: () = assert!(
    size_of::<PidfdMemOpen>() == 32
        && size_of::<PidfdMemMap>() == 56
        && size_of::<PidfdMemUnmap>() == 16
        && size_of::<RemoteProcMap>() == 16
);

/// `PIDFD_MEM_OPEN = _IOWR(0xB6, 0x01, struct pidfd_mem_open)`, on `/dev/pidfd_mem`.
pub const PIDFD_MEM_OPEN: Opcode = opcode::read_write::<PidfdMemOpen>(PIDFD_MEM_IOC_MAGIC, 0x01);
/// `REMOTE_PROC_MAP = _IOWR(0xB6, 0x02, struct remote_proc_map)`, on `/dev/pidfd_mem`.
pub const REMOTE_PROC_MAP: Opcode = opcode::read_write::<RemoteProcMap>(PIDFD_MEM_IOC_MAGIC, 0x02);
/// `PIDFD_MEM_MAP = _IOW(0xB6, 0x10, struct pidfd_mem_map)`, on ctl.
pub const PIDFD_MEM_MAP: Opcode = opcode::write::<PidfdMemMap>(PIDFD_MEM_IOC_MAGIC, 0x10);
/// `PIDFD_MEM_UNMAP = _IOW(0xB6, 0x11, struct pidfd_mem_unmap)`, on ctl.
pub const PIDFD_MEM_UNMAP: Opcode = opcode::write::<PidfdMemUnmap>(PIDFD_MEM_IOC_MAGIC, 0x11);
/// `PIDFD_MEM_LOCK = _IO(0xB6, 0x12)`, on ctl.
pub const PIDFD_MEM_LOCK: Opcode = opcode::none(PIDFD_MEM_IOC_MAGIC, 0x12);

/// Wraps an fd number that the kernel just returned in an ioctl argument.
fn own_returned_fd(fd: RawFd) -> Result<OwnedFd, Errno> {
    if fd < 0 {
        // The kernel reported success but returned no fd: refuse to invent
        // one. EBADMSG stands for "the reply is malformed".
        return Err(Errno::BADMSG);
    }
    // SAFETY: the ioctl succeeded, so the kernel installed `fd` in our fd
    // table for us and nothing else owns it yet; wrapping it here (right
    // after the call) makes this OwnedFd its one owner.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `ioctl(dev, PIDFD_MEM_OPEN, arg)`: the `pidfd_mem(pidfd, flags)` call
/// (contract O1, O2). `arg` is sent as given (pidfd, flags and reserved
/// included) and its out fields are updated. On success returns
/// `(ctl, mem)`, owned.
pub fn pidfd_mem_open(
    dev: BorrowedFd<'_>,
    arg: &mut PidfdMemOpen,
) -> Result<(OwnedFd, OwnedFd), Errno> {
    // SAFETY: PIDFD_MEM_OPEN is _IOWR on exactly `struct pidfd_mem_open`, and
    // `PidfdMemOpen` is its #[repr(C)] mirror (tests/abi.rs), so the kernel
    // reads and writes only within `*arg`.
    unsafe { ioctl(dev, Updater::<PIDFD_MEM_OPEN, PidfdMemOpen>::new(arg)) }?;
    let ctl = own_returned_fd(arg.ctl_fd);
    let mem = own_returned_fd(arg.mem_fd);
    Ok((ctl?, mem?))
}

/// `ioctl(dev, REMOTE_PROC_MAP, arg)`: the legacy whole-address-space mode
/// (contract R1). On success returns the mem fd, owned.
pub fn remote_proc_map(dev: BorrowedFd<'_>, arg: &mut RemoteProcMap) -> Result<OwnedFd, Errno> {
    // SAFETY: REMOTE_PROC_MAP is _IOWR on exactly `struct remote_proc_map`,
    // mirrored by `RemoteProcMap` (tests/abi.rs).
    unsafe { ioctl(dev, Updater::<REMOTE_PROC_MAP, RemoteProcMap>::new(arg)) }?;
    own_returned_fd(arg.mem_fd)
}

/// `ioctl(ctl, PIDFD_MEM_MAP, arg)`: adds a grant (contract M1, M2).
pub fn map(ctl: BorrowedFd<'_>, arg: &PidfdMemMap) -> Result<(), Errno> {
    // SAFETY: PIDFD_MEM_MAP is _IOW on exactly `struct pidfd_mem_map`,
    // mirrored by `PidfdMemMap` (tests/abi.rs); the kernel only reads it, from
    // the copy that `Setter` owns for the duration of the call.
    unsafe { ioctl(ctl, Setter::<PIDFD_MEM_MAP, PidfdMemMap>::new(*arg)) }
}

/// `ioctl(ctl, PIDFD_MEM_UNMAP, arg)`: revokes a window (contract U1).
pub fn unmap(ctl: BorrowedFd<'_>, arg: &PidfdMemUnmap) -> Result<(), Errno> {
    // SAFETY: PIDFD_MEM_UNMAP is _IOW on exactly `struct pidfd_mem_unmap`,
    // mirrored by `PidfdMemUnmap`; the kernel only reads the copy that
    // `Setter` owns for the duration of the call.
    unsafe { ioctl(ctl, Setter::<PIDFD_MEM_UNMAP, PidfdMemUnmap>::new(*arg)) }
}

/// `ioctl(ctl, PIDFD_MEM_LOCK, 0)`: forbids later MAP and UNMAP (contract K1).
pub fn lock(ctl: BorrowedFd<'_>) -> Result<(), Errno> {
    // SAFETY: PIDFD_MEM_LOCK is _IO: the argument is the integer 0, which
    // `NoArg` passes (a null pointer); nothing is read or written.
    unsafe { ioctl(ctl, NoArg::<PIDFD_MEM_LOCK>::new()) }
}

/// `ioctl(ctl, PIDFD_MEM_LOCK, arg)` with an arbitrary integer argument:
/// for testing that a non-zero argument is `EINVAL` (contract K1).
pub fn lock_with_arg(ctl: BorrowedFd<'_>, arg: usize) -> Result<(), Errno> {
    // SAFETY: PIDFD_MEM_LOCK is _IO and takes its argument as an integer,
    // never as a pointer: any value is safe to pass.
    unsafe { ioctl(ctl, IntegerSetter::<PIDFD_MEM_LOCK>::new_usize(arg)) }
}

/// An ioctl with an arbitrary request number and pointer argument, for
/// negative tests (unknown ioctls answer `ENOTTY`, bad pointers `EFAULT`;
/// contract §1, O2).
struct RawIoctl {
    request: Opcode,
    arg: *mut c_void,
}

// SAFETY: `RawIoctl` hands the kernel its request and argument verbatim;
// `raw_ioctl`'s caller promises that the pair is harmless for the fd.
unsafe impl Ioctl for RawIoctl {
    type Output = IoctlOutput;
    // The kernel may write through `arg`: say so, so that rustix does not
    // assume the call is read-only.
    const IS_MUTATING: bool = true;

    fn opcode(&self) -> Opcode {
        self.request
    }

    fn as_ptr(&mut self) -> *mut c_void {
        self.arg
    }

    unsafe fn output_from_ptr(out: IoctlOutput, _: *mut c_void) -> rustix::io::Result<IoctlOutput> {
        Ok(out)
    }
}

/// `ioctl(fd, request, arg)` with any request and argument; returns the
/// ioctl's non-negative return value.
///
/// # Safety
///
/// The driver behind `fd` may read or write memory at `arg` as `request`
/// tells it to: the caller must make sure that this cannot corrupt the
/// process (for example: `request` is unknown to that driver, or `arg` points
/// to a live buffer of the size that `request` encodes, or `arg` is an
/// address that is not mapped at all so that the kernel answers `EFAULT`).
pub unsafe fn raw_ioctl(fd: impl AsFd, request: Opcode, arg: *mut c_void) -> Result<i32, Errno> {
    // SAFETY: forwarded to the caller (see # Safety).
    unsafe { ioctl(fd, RawIoctl { request, arg }) }
}
