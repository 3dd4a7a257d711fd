//! The access fd (mem): mirrors, `pread`/`pwrite`, exit notification.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;

use crate::error::{to_i64, Error, Op};
use crate::mirror::Mirror;
use crate::types::{MemOffset, Prot};

/// The access fd (mem) of a target T: a capability to exactly the granted
/// windows with the granted protections (contract P1).
///
/// It works while T lives, whatever happens to the control fd and to the
/// process that created it (contract L1); it does not keep T's address
/// space alive (O3). It is bound to the address space T had at OPEN: after
/// T exits or execs, reads and writes fail with [`Error::TargetExited`]
/// and [`Access::poll_exited`] reports true (L2, L4, A4).
#[derive(Debug)]
pub struct Access {
    fd: OwnedFd,
}

fn check_offset(op: Op, offset: MemOffset) -> Result<u64, Error> {
    to_i64(op, "offset", offset.0).map(|_| offset.0)
}

impl Access {
    /// `mmap(NULL, len, prot, MAP_SHARED, mem, offset)`: a mirror of
    /// `mem[offset, offset+len)` (contract A1). `prot` is `PROT_READ` or
    /// `PROT_READ | PROT_WRITE`.
    ///
    /// Pages are installed at fault time (A2): mapping succeeds even where
    /// the window has no grant, and access there raises SIGBUS, which the
    /// [`Mirror`] copy functions turn into [`crate::MirrorError::Fault`].
    ///
    /// # Errors
    ///
    /// [`Error::AccessDenied`] (`EACCES`) for [`Prot::ReadWrite`] over a
    /// read-only grant (A1); [`Error::Unaligned`] / [`Error::InvalidArgument`]
    /// (`EINVAL`) for an unaligned offset or a zero length.
    ///
    /// # Example
    ///
    /// ```no_run
    /// # fn f(mem: &pidfd_mem::Access) -> Result<(), Box<dyn std::error::Error>> {
    /// use pidfd_mem::{MemOffset, Prot};
    /// let mirror = mem.mmap(MemOffset(0), 4096, Prot::Read)?;
    /// let word: u64 = mirror.read_obj(0)?;
    /// # Ok(()) }
    /// ```
    pub fn mmap(&self, offset: MemOffset, len: usize, prot: Prot) -> Result<Mirror, Error> {
        let op = Op::Mmap { offset, len, prot };
        let off = check_offset(op, offset)?;
        Mirror::map(self.fd.as_fd(), off, len, prot).map_err(|e| Error::from_errno(op, e))
    }

    /// `pread(mem, buf, buf.len(), offset)`: copies from T at the granted
    /// offsets with T's own protections, like `process_vm_readv` (contract
    /// A3). Returns the count copied, which is short at the first byte that
    /// cannot be copied. `EINTR` is retried.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] (`EIO`) when the first byte cannot be copied (no grant,
    /// hole, `PROT_NONE`); [`Error::TargetExited`] (`ESRCH`) after T exited
    /// or exec'd (A3, L4).
    ///
    /// # Example
    ///
    /// ```no_run
    /// # fn f(mem: &pidfd_mem::Access) -> Result<(), pidfd_mem::Error> {
    /// let mut buf = [0u8; 4096];
    /// let n = mem.read_at(&mut buf, pidfd_mem::MemOffset(0))?;
    /// # Ok(()) }
    /// ```
    pub fn read_at(&self, buf: &mut [u8], offset: MemOffset) -> Result<usize, Error> {
        let op = Op::Read {
            offset,
            len: buf.len(),
        };
        let off = check_offset(op, offset)?;
        loop {
            match rustix::io::pread(&self.fd, &mut *buf, off) {
                Err(Errno::INTR) => continue,
                r => return r.map_err(|e| Error::from_errno(op, e)),
            }
        }
    }

    /// `pwrite(mem, buf, buf.len(), offset)`: copies into T (contract A3).
    /// Returns the count copied, short at the first byte that cannot be
    /// written. `EINTR` is retried.
    ///
    /// # Errors
    ///
    /// [`Error::AccessDenied`] (`EACCES`) when the first byte lies in a
    /// read-only grant; [`Error::Io`] (`EIO`) when it cannot be written for
    /// another reason; [`Error::TargetExited`] (`ESRCH`) after T exited.
    ///
    /// # Example
    ///
    /// ```no_run
    /// # fn f(mem: &pidfd_mem::Access) -> Result<(), pidfd_mem::Error> {
    /// let n = mem.write_at(b"hello", pidfd_mem::MemOffset(0))?;
    /// # Ok(()) }
    /// ```
    pub fn write_at(&self, buf: &[u8], offset: MemOffset) -> Result<usize, Error> {
        let op = Op::Write {
            offset,
            len: buf.len(),
        };
        let off = check_offset(op, offset)?;
        loop {
            match rustix::io::pwrite(&self.fd, buf, off) {
                Err(Errno::INTR) => continue,
                r => return r.map_err(|e| Error::from_errno(op, e)),
            }
        }
    }

    /// Fills `buf` from `offset` with as many `pread` calls as needed
    /// (contract A3). The error names the offset of the call that failed.
    ///
    /// # Example
    ///
    /// ```no_run
    /// # fn f(mem: &pidfd_mem::Access) -> Result<(), pidfd_mem::Error> {
    /// let mut header = [0u8; 16];
    /// mem.read_exact_at(&mut header, pidfd_mem::MemOffset(0x1000))?;
    /// # Ok(()) }
    /// ```
    pub fn read_exact_at(&self, buf: &mut [u8], offset: MemOffset) -> Result<(), Error> {
        let mut done = 0;
        while done < buf.len() {
            let at = Self::advance(
                offset,
                done,
                Op::Read {
                    offset,
                    len: buf.len(),
                },
            )?;
            match self.read_at(&mut buf[done..], at)? {
                0 => {
                    return Err(Error::UnexpectedEof {
                        op: Op::Read {
                            offset: at,
                            len: buf.len() - done,
                        },
                        done,
                    })
                }
                n => done += n,
            }
        }
        Ok(())
    }

    /// Writes all of `buf` at `offset` with as many `pwrite` calls as needed
    /// (contract A3).
    ///
    /// # Example
    ///
    /// ```no_run
    /// # fn f(mem: &pidfd_mem::Access) -> Result<(), pidfd_mem::Error> {
    /// mem.write_all_at(&[0u8; 8192], pidfd_mem::MemOffset(0))?;
    /// # Ok(()) }
    /// ```
    pub fn write_all_at(&self, buf: &[u8], offset: MemOffset) -> Result<(), Error> {
        let mut done = 0;
        while done < buf.len() {
            let at = Self::advance(
                offset,
                done,
                Op::Write {
                    offset,
                    len: buf.len(),
                },
            )?;
            match self.write_at(&buf[done..], at)? {
                0 => {
                    return Err(Error::UnexpectedEof {
                        op: Op::Write {
                            offset: at,
                            len: buf.len() - done,
                        },
                        done,
                    })
                }
                n => done += n,
            }
        }
        Ok(())
    }

    fn advance(offset: MemOffset, done: usize, op: Op) -> Result<MemOffset, Error> {
        offset.checked_add(done as u64).ok_or(Error::OutOfRange {
            op,
            what: "offset + length",
            value: offset.0,
        })
    }

    /// `poll([{mem, events: 0}], timeout)`: true once T's address space is
    /// gone (exit or exec), which mem reports as `POLLHUP` (contract A4,
    /// L4). `None` waits forever; `Some(Duration::ZERO)` only checks.
    /// `EINTR` is retried with the time left.
    ///
    /// # Example
    ///
    /// ```no_run
    /// # fn f(mem: &pidfd_mem::Access) -> Result<(), pidfd_mem::Error> {
    /// if mem.poll_exited(Some(std::time::Duration::ZERO))? {
    ///     println!("target is gone");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn poll_exited(&self, timeout: Option<Duration>) -> Result<bool, Error> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            let left = match (timeout, deadline) {
                (None, _) => None,
                (Some(_), Some(d)) => Some(d.saturating_duration_since(Instant::now())),
                // The deadline overflows Instant: as good as forever.
                (Some(_), None) => None,
            };
            let ts = left.map(|d| Timespec {
                tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                tv_nsec: i64::from(d.subsec_nanos()),
            });
            // Ask for no event: POLLHUP and POLLERR are always reported, and
            // a driver without a poll method (always readable) does not make
            // this return early.
            let mut fds = [PollFd::new(&self.fd, PollFlags::empty())];
            match rustix::event::poll(&mut fds, ts.as_ref()) {
                Err(Errno::INTR) => continue,
                Err(e) => return Err(Error::from_errno(Op::Poll, e)),
                Ok(0) => return Ok(false),
                Ok(_) => {
                    let rev = fds[0].revents();
                    if rev.contains(PollFlags::HUP) {
                        return Ok(true);
                    }
                    if rev.contains(PollFlags::ERR) {
                        return Err(Error::PollError { op: Op::Poll });
                    }
                    if rev.contains(PollFlags::NVAL) {
                        return Err(Error::from_errno(Op::Poll, Errno::BADF));
                    }
                    // Spurious: poll again.
                }
            }
        }
    }

    /// Blocks until T's address space is gone ([`Access::poll_exited`] with
    /// no timeout; contract A4).
    ///
    /// # Example
    ///
    /// ```no_run
    /// # fn f(mem: &pidfd_mem::Access) -> Result<(), pidfd_mem::Error> {
    /// mem.wait_exit()?;
    /// # Ok(()) }
    /// ```
    pub fn wait_exit(&self) -> Result<(), Error> {
        while !self.poll_exited(None)? {}
        Ok(())
    }

    /// Gives back the fd.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }
}

impl AsFd for Access {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl From<OwnedFd> for Access {
    /// Takes an fd as an access fd. Nothing is checked; the calls work on
    /// any file that supports them (which the host tests use with a memfd).
    fn from(fd: OwnedFd) -> Self {
        Self { fd }
    }
}

impl From<Access> for OwnedFd {
    fn from(a: Access) -> Self {
        a.fd
    }
}
