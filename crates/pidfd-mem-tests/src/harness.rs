//! The shared harness (`ktap-harness`: a forked child per test, timeouts,
//! expected signals, KTAP), and what only this suite needs: errno checks
//! with the contract's errno names.

use std::fmt::Display;

use rustix::io::Errno;

pub use ktap_harness::{run_all, Ctx, Failure, Test, TestResult};

/// `expect_errno!(result, Errno::INVAL, "what")`: the call must fail with
/// exactly this errno (contract errors are exact).
#[macro_export]
macro_rules! expect_errno {
    ($res:expr, $errno:expr, $($what:tt)+) => {{
        let expected: rustix::io::Errno = $errno;
        match $res {
            Ok(v) => $crate::fail!(
                "{}: expected {}, seen success ({:?})",
                format!($($what)+),
                pidfd_mem::ErrnoName(expected),
                v
            ),
            Err(e) => {
                let seen = $crate::harness::errno_of(&e);
                if seen != Some(expected) {
                    $crate::fail!(
                        "{}: expected {}, seen {}",
                        format!($($what)+),
                        pidfd_mem::ErrnoName(expected),
                        e
                    );
                }
                e
            }
        }
    }};
}

/// Errors that carry an errno.
pub trait HasErrno: Display {
    /// The errno, if any.
    fn errno(&self) -> Option<Errno>;
}

impl HasErrno for Errno {
    fn errno(&self) -> Option<Errno> {
        Some(*self)
    }
}

impl HasErrno for pidfd_mem::Error {
    fn errno(&self) -> Option<Errno> {
        pidfd_mem::Error::errno(self)
    }
}

impl HasErrno for std::io::Error {
    fn errno(&self) -> Option<Errno> {
        self.raw_os_error().map(Errno::from_raw_os_error)
    }
}

/// The errno of an error (for [`expect_errno!`]).
pub fn errno_of(e: &impl HasErrno) -> Option<Errno> {
    e.errno()
}
