//! The error of the fd-level calls ([`crate::pidfd_mem`], [`crate::Control`],
//! [`crate::Access`]): every kernel answer becomes a variant that names the
//! contract rule behind it and keeps the errno and the call that got it.

use core::fmt;
use std::io;

use rustix::io::Errno;

use crate::types::{Grant, MemOffset, Prot, RemoteAddr};

/// The call that failed, with the arguments that matter for diagnosis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Op {
    /// `open("/dev/pidfd_mem", O_RDWR | O_CLOEXEC)`.
    OpenDevice,
    /// `pidfd_open(pid, 0)`.
    PidfdOpen {
        /// The pid asked for.
        pid: u32,
    },
    /// `ioctl(dev, PIDFD_MEM_OPEN)`: `pidfd_mem(pidfd, flags)`.
    PidfdMemOpen {
        /// The flags sent.
        flags: u32,
    },
    /// `ioctl(dev, REMOTE_PROC_MAP)`.
    RemoteProcMap,
    /// `ioctl(ctl, PIDFD_MEM_MAP)`.
    Map(Grant),
    /// `ioctl(ctl, PIDFD_MEM_UNMAP)`.
    Unmap {
        /// Start of the window.
        offset: MemOffset,
        /// Length of the window.
        size: u64,
    },
    /// `ioctl(ctl, PIDFD_MEM_LOCK)`.
    Lock,
    /// `mmap(NULL, len, prot, MAP_SHARED, mem, offset)`.
    Mmap {
        /// The mem offset.
        offset: MemOffset,
        /// The length.
        len: usize,
        /// The protection.
        prot: Prot,
    },
    /// `pread(mem, buf, len, offset)`.
    Read {
        /// The mem offset.
        offset: MemOffset,
        /// The length asked for.
        len: usize,
    },
    /// `pwrite(mem, buf, len, offset)`.
    Write {
        /// The mem offset.
        offset: MemOffset,
        /// The length asked for.
        len: usize,
    },
    /// `poll(mem, POLLHUP)`.
    Poll,
    /// `process_vm_readv(pid, ...)` ([`crate::process_vm::read`]).
    ProcessVmRead {
        /// The process.
        pid: u32,
        /// Its address.
        address: RemoteAddr,
        /// The length asked for.
        len: usize,
    },
    /// `process_vm_writev(pid, ...)` ([`crate::process_vm::write`]).
    ProcessVmWrite {
        /// The process.
        pid: u32,
        /// Its address.
        address: RemoteAddr,
        /// The length asked for.
        len: usize,
    },
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::OpenDevice => write!(f, "open({})", crate::sys::PIDFD_MEM_DEVICE),
            Op::PidfdOpen { pid } => write!(f, "pidfd_open({pid})"),
            Op::PidfdMemOpen { flags } => write!(f, "PIDFD_MEM_OPEN ioctl (flags {flags:#x})"),
            Op::RemoteProcMap => f.write_str("REMOTE_PROC_MAP ioctl"),
            Op::Map(g) => write!(f, "PIDFD_MEM_MAP ioctl ({g})"),
            Op::Unmap { offset, size } => {
                write!(f, "PIDFD_MEM_UNMAP ioctl (offset {offset}, size {size:#x})")
            }
            Op::Lock => f.write_str("PIDFD_MEM_LOCK ioctl"),
            Op::Mmap { offset, len, prot } => {
                write!(
                    f,
                    "mmap of mem (offset {offset}, len {len:#x}, prot {prot})"
                )
            }
            Op::Read { offset, len } => write!(f, "pread of mem (offset {offset}, len {len:#x})"),
            Op::Write { offset, len } => write!(f, "pwrite of mem (offset {offset}, len {len:#x})"),
            Op::Poll => f.write_str("poll of mem"),
            Op::ProcessVmRead { pid, address, len } => {
                write!(
                    f,
                    "process_vm_readv (pid {pid}, address {address}, len {len:#x})"
                )
            }
            Op::ProcessVmWrite { pid, address, len } => {
                write!(
                    f,
                    "process_vm_writev (pid {pid}, address {address}, len {len:#x})"
                )
            }
        }
    }
}

/// Writes `errno` as its symbolic name and number, e.g. `EINVAL (22)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrnoName(pub Errno);

impl fmt::Display for ErrnoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.0;
        let name = match e {
            Errno::PERM => "EPERM",
            Errno::NOENT => "ENOENT",
            Errno::SRCH => "ESRCH",
            Errno::INTR => "EINTR",
            Errno::IO => "EIO",
            Errno::NXIO => "ENXIO",
            Errno::BADF => "EBADF",
            Errno::AGAIN => "EAGAIN",
            Errno::NOMEM => "ENOMEM",
            Errno::ACCESS => "EACCES",
            Errno::FAULT => "EFAULT",
            Errno::EXIST => "EEXIST",
            Errno::NODEV => "ENODEV",
            Errno::INVAL => "EINVAL",
            Errno::NOTTY => "ENOTTY",
            Errno::NOSPC => "ENOSPC",
            Errno::OVERFLOW => "EOVERFLOW",
            Errno::BADMSG => "EBADMSG",
            Errno::NOSYS => "ENOSYS",
            Errno::SPIPE => "ESPIPE",
            Errno::PIPE => "EPIPE",
            Errno::NOTSOCK => "ENOTSOCK",
            Errno::CHILD => "ECHILD",
            Errno::TIMEDOUT => "ETIMEDOUT",
            Errno::BUSY => "EBUSY",
            Errno::TXTBSY => "ETXTBSY",
            _ => "errno",
        };
        write!(f, "{name} ({})", e.raw_os_error())
    }
}

/// Help text for a missing module: how to get it. The module is built out
/// of tree from this project's `kmod/` (there is no package to `modprobe`).
pub const MODULE_HELP: &str = "the pidfd_mem kernel module is not loaded: \
     build and load it from the project's top directory, as root, with \
     `make -C kmod KDIR=/lib/modules/$(uname -r)/build && insmod kmod/pidfd_mem.ko`, \
     or try it in a VM with `cargo xtask run -- CMD ARGS...`";

/// What went wrong in an fd-level call. Each kernel-made variant keeps the
/// errno ([`Error::errno`]) and the call with its arguments ([`Error::op`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `/dev/pidfd_mem` is missing (`ENOENT`) or has no driver (`ENODEV`,
    /// `ENXIO`).
    #[error("{}: {}: {MODULE_HELP}", crate::sys::PIDFD_MEM_DEVICE, ErrnoName(*.errno))]
    ModuleNotLoaded {
        /// The errno of the open.
        errno: Errno,
    },
    /// `EPERM` from OPEN or REMOTE_PROC_MAP: no ptrace-attach rights over T
    /// (contract O1, O2, P1).
    #[error("{op}: {}: no ptrace-attach rights over the target (contract O1/P1)", ErrnoName(*.errno))]
    NotPermitted {
        /// The call.
        op: Op,
        /// The errno.
        errno: Errno,
    },
    /// `EPERM` from MAP or UNMAP: the control fd is locked (contract K1).
    #[error("{op}: {}: the control fd is locked (contract K1)", ErrnoName(*.errno))]
    Locked {
        /// The call.
        op: Op,
        /// The errno.
        errno: Errno,
    },
    /// `ESRCH`: T has exited, has no address space, or has exec'd since
    /// OPEN (contract O2, M1, A3, L2, L4).
    #[error("{op}: {}: the target has exited or changed its address space (contract O2/L2/L4)", ErrnoName(*.errno))]
    TargetExited {
        /// The call.
        op: Op,
        /// The errno.
        errno: Errno,
    },
    /// `EEXIST` from MAP: the window overlaps an existing grant (contract M1).
    #[error("{op}: {}: the window overlaps an existing grant (contract M1)", ErrnoName(*.errno))]
    Overlap {
        /// The call.
        op: Op,
        /// The errno.
        errno: Errno,
    },
    /// `EINVAL` where an argument is visibly not page aligned (contract M1,
    /// U1, A1).
    #[error("{op}: {}: {what} {value:#x} is not page aligned (contract M1)", ErrnoName(*.errno))]
    Unaligned {
        /// The call.
        op: Op,
        /// The errno.
        errno: Errno,
        /// Which argument.
        what: &'static str,
        /// Its value.
        value: u64,
    },
    /// `EINVAL` from OPEN or REMOTE_PROC_MAP with zero flags: the fd is not a
    /// pidfd (contract O2).
    #[error("{op}: {}: the fd is not a pidfd (contract O2)", ErrnoName(*.errno))]
    NotAPidfd {
        /// The call.
        op: Op,
        /// The errno.
        errno: Errno,
    },
    /// Any other `EINVAL` (contract O2, M1, U1, K1, A1).
    #[error("{op}: {}: invalid argument", ErrnoName(*.errno))]
    InvalidArgument {
        /// The call.
        op: Op,
        /// The errno.
        errno: Errno,
    },
    /// `EBADF` (contract O2).
    #[error("{op}: {}: bad file descriptor", ErrnoName(*.errno))]
    BadFd {
        /// The call.
        op: Op,
        /// The errno.
        errno: Errno,
    },
    /// `EACCES`: write or `PROT_WRITE` over a read-only grant (contract A1,
    /// A3), or the device is not accessible.
    #[error("{op}: {}: access denied (read-only grant, contract A1/A3)", ErrnoName(*.errno))]
    AccessDenied {
        /// The call.
        op: Op,
        /// The errno.
        errno: Errno,
    },
    /// `EIO`: the first byte cannot be copied: no grant, hole, `PROT_NONE`
    /// (contract A3).
    #[error("{op}: {}: the first byte is not accessible in the target (no grant, hole or PROT_NONE, contract A3)", ErrnoName(*.errno))]
    Io {
        /// The call.
        op: Op,
        /// The errno.
        errno: Errno,
    },
    /// `EFAULT`: the kernel could not access an argument (contract O2, A9);
    /// for [`crate::process_vm`], the first byte of the other process cannot
    /// be copied (nothing mapped, no such access, beyond a file's end).
    #[error("{op}: {}: bad address", ErrnoName(*.errno))]
    BadAddress {
        /// The call.
        op: Op,
        /// The errno.
        errno: Errno,
    },
    /// `ENOTTY`: the fd is not a pidfd_mem fd or the ioctl is unknown
    /// (contract §1).
    #[error("{op}: {}: not a pidfd_mem fd, or unknown ioctl", ErrnoName(*.errno))]
    NotSupported {
        /// The call.
        op: Op,
        /// The errno.
        errno: Errno,
    },
    /// `pread` returned 0 before the buffer was filled.
    #[error("{op}: end of file after {done} bytes")]
    UnexpectedEof {
        /// The call.
        op: Op,
        /// Bytes copied before.
        done: usize,
    },
    /// An argument that cannot be represented in the ABI (e.g. a mem offset
    /// above `i64::MAX`); refused before any system call.
    #[error("{op}: {what} {value:#x} does not fit the ABI")]
    OutOfRange {
        /// The call.
        op: Op,
        /// Which argument.
        what: &'static str,
        /// Its value.
        value: u64,
    },
    /// The kernel reported success but its reply is malformed (e.g. a
    /// negative fd).
    #[error("{op}: malformed kernel reply: {detail}")]
    Protocol {
        /// The call.
        op: Op,
        /// What was wrong.
        detail: &'static str,
    },
    /// POLLERR on mem.
    #[error("{op}: POLLERR without POLLHUP")]
    PollError {
        /// The call.
        op: Op,
    },
    /// Any other errno.
    #[error("{op}: {}", ErrnoName(*.errno))]
    Os {
        /// The call.
        op: Op,
        /// The errno.
        errno: Errno,
    },
}

fn page_size() -> u64 {
    rustix::param::page_size() as u64
}

fn first_unaligned(fields: &[(&'static str, u64)]) -> Option<(&'static str, u64)> {
    let mask = page_size() - 1;
    fields.iter().copied().find(|(_, v)| v & mask != 0)
}

impl Error {
    /// Turns the errno of `op` into the variant that the contract gives it.
    pub fn from_errno(op: Op, errno: Errno) -> Self {
        match errno {
            Errno::NOENT | Errno::NODEV | Errno::NXIO if op == Op::OpenDevice => {
                Error::ModuleNotLoaded { errno }
            }
            Errno::PERM => match op {
                Op::Map(_) | Op::Unmap { .. } | Op::Lock => Error::Locked { op, errno },
                _ => Error::NotPermitted { op, errno },
            },
            Errno::SRCH => Error::TargetExited { op, errno },
            Errno::EXIST => Error::Overlap { op, errno },
            Errno::INVAL => Self::classify_einval(op, errno),
            Errno::BADF => Error::BadFd { op, errno },
            Errno::ACCESS => Error::AccessDenied { op, errno },
            Errno::IO => Error::Io { op, errno },
            Errno::FAULT => Error::BadAddress { op, errno },
            Errno::NOTTY => Error::NotSupported { op, errno },
            Errno::BADMSG => Error::Protocol {
                op,
                detail: "the kernel returned a negative fd",
            },
            _ => Error::Os { op, errno },
        }
    }

    fn classify_einval(op: Op, errno: Errno) -> Self {
        let unaligned = match op {
            Op::Map(g) => first_unaligned(&[
                ("address", g.address.0),
                ("offset", g.offset.0),
                ("size", g.size),
            ]),
            Op::Unmap { offset, size } => first_unaligned(&[("offset", offset.0), ("size", size)]),
            Op::Mmap { offset, .. } => first_unaligned(&[("offset", offset.0)]),
            _ => None,
        };
        if let Some((what, value)) = unaligned {
            return Error::Unaligned {
                op,
                errno,
                what,
                value,
            };
        }
        match op {
            Op::PidfdMemOpen { flags: 0 } | Op::RemoteProcMap => Error::NotAPidfd { op, errno },
            _ => Error::InvalidArgument { op, errno },
        }
    }

    /// The errno the kernel gave, or `None` for errors found by this crate.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Error::ModuleNotLoaded { errno }
            | Error::NotPermitted { errno, .. }
            | Error::Locked { errno, .. }
            | Error::TargetExited { errno, .. }
            | Error::Overlap { errno, .. }
            | Error::Unaligned { errno, .. }
            | Error::NotAPidfd { errno, .. }
            | Error::InvalidArgument { errno, .. }
            | Error::BadFd { errno, .. }
            | Error::AccessDenied { errno, .. }
            | Error::Io { errno, .. }
            | Error::BadAddress { errno, .. }
            | Error::NotSupported { errno, .. }
            | Error::Os { errno, .. } => Some(*errno),
            Error::UnexpectedEof { .. }
            | Error::OutOfRange { .. }
            | Error::Protocol { .. }
            | Error::PollError { .. } => None,
        }
    }

    /// The call that failed.
    pub fn op(&self) -> Op {
        match self {
            Error::ModuleNotLoaded { .. } => Op::OpenDevice,
            Error::NotPermitted { op, .. }
            | Error::Locked { op, .. }
            | Error::TargetExited { op, .. }
            | Error::Overlap { op, .. }
            | Error::Unaligned { op, .. }
            | Error::NotAPidfd { op, .. }
            | Error::InvalidArgument { op, .. }
            | Error::BadFd { op, .. }
            | Error::AccessDenied { op, .. }
            | Error::Io { op, .. }
            | Error::BadAddress { op, .. }
            | Error::NotSupported { op, .. }
            | Error::UnexpectedEof { op, .. }
            | Error::OutOfRange { op, .. }
            | Error::Protocol { op, .. }
            | Error::PollError { op }
            | Error::Os { op, .. } => *op,
        }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        let kind_errno = match &e {
            Error::UnexpectedEof { .. } => return io::Error::new(io::ErrorKind::UnexpectedEof, e),
            Error::OutOfRange { .. } => Errno::INVAL,
            Error::Protocol { .. } => Errno::BADMSG,
            Error::PollError { .. } => Errno::IO,
            other => other.errno().unwrap_or(Errno::IO),
        };
        io::Error::new(io::Error::from(kind_errno).kind(), e)
    }
}

/// Checks that a mem offset or size fits the ABI's `__s64`.
pub(crate) fn to_i64(op: Op, what: &'static str, value: u64) -> Result<i64, Error> {
    i64::try_from(value).map_err(|_| Error::OutOfRange { op, what, value })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Prot, RemoteAddr};

    fn grant(address: u64, offset: u64, size: u64) -> Grant {
        Grant::new(RemoteAddr(address), MemOffset(offset), size, Prot::Read)
    }

    #[test]
    fn open_device_enoent_is_module_not_loaded_with_help() {
        for errno in [Errno::NOENT, Errno::NODEV, Errno::NXIO] {
            let e = Error::from_errno(Op::OpenDevice, errno);
            assert!(
                matches!(e, Error::ModuleNotLoaded { .. }),
                "{errno:?}: {e:?}"
            );
            let msg = e.to_string();
            assert!(
                msg.contains("make -C kmod KDIR=/lib/modules/$(uname -r)/build"),
                "{msg}"
            );
            assert!(msg.contains("insmod kmod/pidfd_mem.ko"), "{msg}");
            assert!(msg.contains("cargo xtask run --"), "{msg}");
            assert!(!msg.contains("modprobe"), "{msg}");
            assert_eq!(e.errno(), Some(errno));
        }
        // ENOENT elsewhere is not about the module.
        let e = Error::from_errno(Op::Lock, Errno::NOENT);
        assert!(matches!(e, Error::Os { .. }), "{e:?}");
    }

    #[test]
    fn eperm_is_locked_on_ctl_and_not_permitted_on_open() {
        let map = Op::Map(grant(0, 0, 4096));
        assert!(matches!(
            Error::from_errno(map, Errno::PERM),
            Error::Locked { .. }
        ));
        let unmap = Op::Unmap {
            offset: MemOffset(0),
            size: 4096,
        };
        assert!(matches!(
            Error::from_errno(unmap, Errno::PERM),
            Error::Locked { .. }
        ));
        let open = Op::PidfdMemOpen { flags: 0 };
        assert!(matches!(
            Error::from_errno(open, Errno::PERM),
            Error::NotPermitted { .. }
        ));
        assert!(matches!(
            Error::from_errno(Op::RemoteProcMap, Errno::PERM),
            Error::NotPermitted { .. }
        ));
    }

    #[test]
    fn contract_errnos_map_to_variants() {
        let op = Op::Read {
            offset: MemOffset(0),
            len: 1,
        };
        assert!(matches!(
            Error::from_errno(op, Errno::SRCH),
            Error::TargetExited { .. }
        ));
        assert!(matches!(Error::from_errno(op, Errno::IO), Error::Io { .. }));
        assert!(matches!(
            Error::from_errno(op, Errno::ACCESS),
            Error::AccessDenied { .. }
        ));
        assert!(matches!(
            Error::from_errno(op, Errno::BADF),
            Error::BadFd { .. }
        ));
        assert!(matches!(
            Error::from_errno(op, Errno::FAULT),
            Error::BadAddress { .. }
        ));
        assert!(matches!(
            Error::from_errno(Op::Lock, Errno::NOTTY),
            Error::NotSupported { .. }
        ));
        let map = Op::Map(grant(0, 0, 4096));
        assert!(matches!(
            Error::from_errno(map, Errno::EXIST),
            Error::Overlap { .. }
        ));
        assert!(matches!(
            Error::from_errno(op, Errno::NOMEM),
            Error::Os { .. }
        ));
        for e in [Errno::SRCH, Errno::IO, Errno::EXIST, Errno::NOMEM] {
            assert_eq!(Error::from_errno(op, e).errno(), Some(e));
        }
    }

    #[test]
    fn einval_classification() {
        // Unaligned fields are named.
        match Error::from_errno(Op::Map(grant(0x1001, 0, 4096)), Errno::INVAL) {
            Error::Unaligned {
                what: "address",
                value: 0x1001,
                errno,
                ..
            } => {
                assert_eq!(errno, Errno::INVAL)
            }
            e => panic!("{e:?}"),
        }
        match Error::from_errno(Op::Map(grant(0, 8, 4096)), Errno::INVAL) {
            Error::Unaligned { what: "offset", .. } => {}
            e => panic!("{e:?}"),
        }
        match Error::from_errno(Op::Map(grant(0, 0, 100)), Errno::INVAL) {
            Error::Unaligned { what: "size", .. } => {}
            e => panic!("{e:?}"),
        }
        let unmap = Op::Unmap {
            offset: MemOffset(3),
            size: 4096,
        };
        assert!(matches!(
            Error::from_errno(unmap, Errno::INVAL),
            Error::Unaligned { .. }
        ));
        let mmap = Op::Mmap {
            offset: MemOffset(5),
            len: 4096,
            prot: Prot::Read,
        };
        assert!(matches!(
            Error::from_errno(mmap, Errno::INVAL),
            Error::Unaligned { .. }
        ));
        // Aligned but still EINVAL (e.g. size 0, overflow): InvalidArgument.
        assert!(matches!(
            Error::from_errno(Op::Map(grant(0, 0, 0)), Errno::INVAL),
            Error::InvalidArgument { .. }
        ));
        // OPEN: flags 0 means the fd is not a pidfd; non-zero flags are the flags.
        assert!(matches!(
            Error::from_errno(Op::PidfdMemOpen { flags: 0 }, Errno::INVAL),
            Error::NotAPidfd { .. }
        ));
        assert!(matches!(
            Error::from_errno(Op::PidfdMemOpen { flags: 1 }, Errno::INVAL),
            Error::InvalidArgument { .. }
        ));
        assert!(matches!(
            Error::from_errno(Op::RemoteProcMap, Errno::INVAL),
            Error::NotAPidfd { .. }
        ));
    }

    #[test]
    fn messages_name_the_call_and_errno() {
        let g = grant(0x7000, 0x2000, 0x3000);
        let msg = Error::from_errno(Op::Map(g), Errno::EXIST).to_string();
        assert!(msg.contains("PIDFD_MEM_MAP"), "{msg}");
        assert!(msg.contains("EEXIST (17)"), "{msg}");
        assert!(msg.contains("offset 0x2000"), "{msg}");
        assert!(msg.contains("M1"), "{msg}");
    }

    #[test]
    fn into_io_error_keeps_errno() {
        let e = Error::from_errno(Op::Lock, Errno::PERM);
        let io: io::Error = e.into();
        assert_eq!(io.kind(), io::ErrorKind::PermissionDenied);
        assert!(io.to_string().contains("locked"), "{io}");
    }

    #[test]
    fn to_i64_refuses_what_does_not_fit() {
        assert_eq!(to_i64(Op::Lock, "x", 5).ok(), Some(5));
        assert!(matches!(
            to_i64(Op::Lock, "x", 1 << 63),
            Err(Error::OutOfRange {
                what: "x",
                value: 0x8000_0000_0000_0000,
                ..
            })
        ));
    }
}
