//! Exit codes, and the errors that choose them.
//!
//! Every failure travels as an `anyhow::Error`; [`classify`] walks its
//! chain, outermost first, and the first cause it recognises chooses the
//! code. Unrecognised errors are code 1.

use std::io;

use pidfd_mem::rustix::io::Errno;

/// The process exit codes of rmap (also listed in `rmap --help`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// Everything worked.
    Ok = 0,
    /// Any other failure.
    Other = 1,
    /// Bad input: a usage error, an address, range or byte string that does
    /// not parse or resolve.
    BadInput = 2,
    /// `EPERM`/`EACCES`: no ptrace rights over the target, or a read-only
    /// grant.
    Permission = 3,
    /// `ESRCH`: the target does not exist, or exited.
    Gone = 4,
    /// `/dev/pidfd_mem` is missing for a command that needs mirrors.
    NoModule = 5,
}

impl Code {
    /// As a process exit status.
    pub fn as_i32(self) -> i32 {
        self as i32
    }
}

/// Input that does not parse or does not resolve (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

/// A failure whose exit code is known where it is made.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Exit 3.
    #[error("{0}")]
    Permission(String),
    /// Exit 4.
    #[error("{0}")]
    Gone(String),
    /// Exit 5.
    #[error("{0}")]
    NoModule(String),
}

/// Shorthand for `Err(BadInput(..))` as an `anyhow::Error`.
pub fn bad(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(BadInput(msg.into()))
}

fn from_errno(e: Errno) -> Option<Code> {
    match e {
        Errno::PERM | Errno::ACCESS => Some(Code::Permission),
        Errno::SRCH => Some(Code::Gone),
        _ => None,
    }
}

fn from_library(e: &pidfd_mem::Error) -> Option<Code> {
    use pidfd_mem::Error as E;
    match e {
        E::ModuleNotLoaded { .. } => Some(Code::NoModule),
        E::NotPermitted { .. } | E::Locked { .. } | E::AccessDenied { .. } => {
            Some(Code::Permission)
        }
        E::TargetExited { .. } => Some(Code::Gone),
        other => other.errno().and_then(from_errno),
    }
}

/// The exit code for `err`.
pub fn classify(err: &anyhow::Error) -> Code {
    for cause in err.chain() {
        if cause.downcast_ref::<BadInput>().is_some() {
            return Code::BadInput;
        }
        if let Some(f) = cause.downcast_ref::<Failure>() {
            return match f {
                Failure::Permission(_) => Code::Permission,
                Failure::Gone(_) => Code::Gone,
                Failure::NoModule(_) => Code::NoModule,
            };
        }
        if let Some(e) = cause.downcast_ref::<pidfd_mem::Error>() {
            if let Some(c) = from_library(e) {
                return c;
            }
        }
        if let Some(e) = cause.downcast_ref::<pidfd_mem::PassError>() {
            use pidfd_mem::PassError as P;
            if let P::Send { errno } | P::Recv { errno } = e {
                if let Some(c) = from_errno(*errno) {
                    return c;
                }
            }
        }
        if let Some(e) = cause.downcast_ref::<Errno>() {
            if let Some(c) = from_errno(*e) {
                return c;
            }
        }
        if let Some(e) = cause.downcast_ref::<io::Error>() {
            if let Some(c) = e
                .raw_os_error()
                .and_then(|n| from_errno(Errno::from_raw_os_error(n)))
            {
                return c;
            }
        }
    }
    Code::Other
}

/// How to get the module, for commands that need mirrors: the library's
/// [`pidfd_mem::MODULE_HELP`], with the VM command for this one.
pub fn module_help(command: &str) -> String {
    format!(
        "`rmap {command}` needs mirrors: {help}\n\
         For rmap in the VM (QEMU, no root needed):\n    \
         cargo build --release -p rmap && cargo xtask run -- target/release/rmap {command} ...",
        help = pidfd_mem::MODULE_HELP
    )
}

/// Fails with exit 5 unless the module is loaded ([`pidfd_mem::module_loaded`]).
pub fn require_module(command: &str) -> anyhow::Result<()> {
    if pidfd_mem::module_loaded() {
        Ok(())
    } else {
        Err(anyhow::Error::new(Failure::NoModule(module_help(command))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;
    use pidfd_mem::{MemOffset, Op};

    fn lib(op: Op, e: Errno) -> anyhow::Error {
        anyhow::Error::new(pidfd_mem::Error::from_errno(op, e))
    }

    #[test]
    fn codes_are_stable() {
        assert_eq!(Code::Ok.as_i32(), 0);
        assert_eq!(Code::Other.as_i32(), 1);
        assert_eq!(Code::BadInput.as_i32(), 2);
        assert_eq!(Code::Permission.as_i32(), 3);
        assert_eq!(Code::Gone.as_i32(), 4);
        assert_eq!(Code::NoModule.as_i32(), 5);
    }

    #[test]
    fn library_errors() {
        let read = Op::Read {
            offset: MemOffset(0),
            len: 1,
        };
        assert_eq!(classify(&lib(Op::OpenDevice, Errno::NOENT)), Code::NoModule);
        assert_eq!(
            classify(&lib(Op::PidfdMemOpen { flags: 0 }, Errno::PERM)),
            Code::Permission
        );
        assert_eq!(classify(&lib(read, Errno::ACCESS)), Code::Permission);
        assert_eq!(classify(&lib(read, Errno::SRCH)), Code::Gone);
        assert_eq!(
            classify(&lib(Op::PidfdOpen { pid: 7 }, Errno::SRCH)),
            Code::Gone
        );
        assert_eq!(classify(&lib(read, Errno::IO)), Code::Other);
        assert_eq!(classify(&lib(Op::Lock, Errno::NOTTY)), Code::Other);
    }

    #[test]
    fn context_does_not_hide_the_cause() {
        let e = lib(Op::PidfdOpen { pid: 7 }, Errno::SRCH).context("opening the target");
        assert_eq!(classify(&e), Code::Gone);
        let e = bad("no such thing").context("resolving");
        assert_eq!(classify(&e), Code::BadInput);
    }

    #[test]
    fn os_errors() {
        let io = |n| anyhow::Error::new(io::Error::from_raw_os_error(n));
        assert_eq!(classify(&io(libc::EPERM)), Code::Permission);
        assert_eq!(classify(&io(libc::EACCES)), Code::Permission);
        assert_eq!(classify(&io(libc::ESRCH)), Code::Gone);
        assert_eq!(classify(&io(libc::ENOENT)), Code::Other);
        assert_eq!(classify(&anyhow::Error::new(Errno::SRCH)), Code::Gone);
        let r: Result<(), io::Error> = Err(io::Error::from_raw_os_error(libc::EPERM));
        assert_eq!(
            classify(&r.context("process_vm_readv").unwrap_err()),
            Code::Permission
        );
        assert_eq!(
            classify(&anyhow::Error::new(pidfd_mem::PassError::Recv {
                errno: Errno::ACCESS
            })),
            Code::Permission
        );
    }

    #[test]
    fn failures_and_plain_errors() {
        let f = |x| anyhow::Error::new(x);
        assert_eq!(classify(&f(Failure::Gone("x".into()))), Code::Gone);
        assert_eq!(
            classify(&f(Failure::Permission("x".into()))),
            Code::Permission
        );
        assert_eq!(classify(&f(Failure::NoModule("x".into()))), Code::NoModule);
        assert_eq!(classify(&anyhow::anyhow!("something")), Code::Other);
    }

    #[test]
    fn module_help_says_how() {
        let h = module_help("watch");
        assert!(h.contains("insmod kmod/pidfd_mem.ko"), "{h}");
        assert!(h.contains("make -C kmod KDIR="), "{h}");
        assert!(!h.contains("modprobe"), "{h}");
        assert!(
            h.contains("cargo xtask run -- target/release/rmap watch"),
            "{h}"
        );
    }
}
