//! Copies from and to another process without the module:
//! `process_vm_readv(2)` and `process_vm_writev(2)`, one local and one
//! remote iovec each.
//!
//! These are the copies that pidfd_mem's `pread`/`pwrite` match (contract
//! A3, section 9): the same permission rule (ptrace-attach rights,
//! `PTRACE_MODE_ATTACH_REALCREDS`, as O1), T's own protections, short
//! counts at the first byte that cannot be copied. They need no module, so
//! tools use them as the fallback when [`crate::module_loaded`] is false.
//! Unlike a mem fd, nothing is bound to T's address space at open: each call
//! goes to whatever process has `pid` at that moment.
//!
//! The remote address is only a number here ([`RemoteAddr`]); the local side
//! is an ordinary Rust slice. Each function makes one system call (`EINTR`
//! is retried) and returns how many bytes it copied; the `unsafe` of those
//! calls lives in this module.
//!
//! # Example
//!
//! ```no_run
//! use pidfd_mem::{process_vm, RemoteAddr};
//!
//! let mut word = [0u8; 8];
//! let n = process_vm::read(1234, RemoteAddr(0x5555_5555_8000), &mut word)?;
//! process_vm::write(1234, RemoteAddr(0x5555_5555_8000), &word[..n])?;
//! # Ok::<(), pidfd_mem::Error>(())
//! ```

use rustix::io::Errno;

use crate::error::{Error, Op};
use crate::types::RemoteAddr;

/// Checks the arguments and turns them into what the system call takes.
fn check(op: Op, pid: u32, addr: RemoteAddr, len: usize) -> Result<(libc::pid_t, usize), Error> {
    let raw = libc::pid_t::try_from(pid)
        .ok()
        .filter(|&p| p > 0)
        .ok_or(Error::OutOfRange {
            op,
            what: "pid",
            value: pid.into(),
        })?;
    match usize::try_from(addr.0) {
        Ok(remote) if remote.checked_add(len).is_some() => Ok((raw, remote)),
        _ => Err(Error::OutOfRange {
            op,
            what: "address + length",
            value: addr.0,
        }),
    }
}

/// Runs `call` until it does not fail with `EINTR`.
fn retry(op: Op, mut call: impl FnMut() -> isize) -> Result<usize, Error> {
    loop {
        let n = call();
        if let Ok(n) = usize::try_from(n) {
            return Ok(n);
        }
        let os = std::io::Error::last_os_error().raw_os_error();
        match Errno::from_raw_os_error(os.unwrap_or(libc::EIO)) {
            Errno::INTR => continue,
            errno => return Err(Error::from_errno(op, errno)),
        }
    }
}

/// `process_vm_readv(pid, [buf], [addr, buf.len()], 0)`: copies from
/// process `pid` at `addr` into `buf`. Returns the bytes copied: fewer than
/// `buf.len()` when a byte after the first cannot be read; `Ok(0)` only for
/// an empty `buf`.
///
/// # Errors
///
/// [`Error::BadAddress`] (`EFAULT`): the first byte cannot be read (nothing
/// mapped there, no read permission, beyond the end of a mapped file);
/// [`Error::NotPermitted`] (`EPERM`): no ptrace-attach rights over the
/// process; [`Error::TargetExited`] (`ESRCH`): no such process;
/// [`Error::OutOfRange`]: `pid` is 0 or above `i32::MAX`, or `addr + len`
/// overflows.
pub fn read(pid: u32, addr: RemoteAddr, buf: &mut [u8]) -> Result<usize, Error> {
    let op = Op::ProcessVmRead {
        pid,
        address: addr,
        len: buf.len(),
    };
    let (pid, remote) = check(op, pid, addr, buf.len())?;
    if buf.is_empty() {
        return Ok(0);
    }
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: remote as *mut libc::c_void,
        iov_len: buf.len(),
    };
    retry(op, || {
        // SAFETY: `local` describes `buf`, a live buffer of `buf.len()` bytes
        // borrowed mutably for the whole call, and the kernel writes at most
        // that much into it. `remote` holds addresses of the other process,
        // which this process never dereferences. One iovec each, as passed.
        unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) }
    })
}

/// `process_vm_writev(pid, [buf], [addr, buf.len()], 0)`: copies `buf`
/// into process `pid` at `addr`, with the process's own protections (no
/// write into read-only memory). Returns the bytes copied: fewer than
/// `buf.len()` when a byte after the first cannot be written; `Ok(0)` only
/// for an empty `buf`.
///
/// # Errors
///
/// As [`read`]; [`Error::BadAddress`] (`EFAULT`) also when the first byte is
/// not writable.
pub fn write(pid: u32, addr: RemoteAddr, buf: &[u8]) -> Result<usize, Error> {
    let op = Op::ProcessVmWrite {
        pid,
        address: addr,
        len: buf.len(),
    };
    let (pid, remote) = check(op, pid, addr, buf.len())?;
    if buf.is_empty() {
        return Ok(0);
    }
    let local = libc::iovec {
        // The iovec type wants *mut; the kernel only reads the local side of
        // process_vm_writev.
        iov_base: buf.as_ptr().cast_mut().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: remote as *mut libc::c_void,
        iov_len: buf.len(),
    };
    retry(op, || {
        // SAFETY: `local` describes `buf`, a live buffer of `buf.len()` bytes
        // borrowed for the whole call, which process_vm_writev only reads.
        // `remote` holds addresses of the other process, which this process
        // never dereferences. One iovec each, as passed.
        unsafe { libc::process_vm_writev(pid, &local, 1, &remote, 1, 0) }
    })
}

/// Fills `buf` from process `pid` at `addr` with as many [`read`] calls as
/// needed. The error names the address of the call that failed; a hole
/// after the first byte is [`Error::BadAddress`] for that address.
pub fn read_exact(pid: u32, addr: RemoteAddr, buf: &mut [u8]) -> Result<(), Error> {
    let mut done = 0;
    while done < buf.len() {
        let at = RemoteAddr(addr.0.wrapping_add(done as u64));
        done += read(pid, at, &mut buf[done..])?;
    }
    Ok(())
}

/// Writes all of `buf` into process `pid` at `addr` with as many [`write()`]
/// calls as needed.
pub fn write_all(pid: u32, addr: RemoteAddr, buf: &[u8]) -> Result<(), Error> {
    let mut done = 0;
    while done < buf.len() {
        let at = RemoteAddr(addr.0.wrapping_add(done as u64));
        done += write(pid, at, &buf[done..])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_itself() {
        let me = std::process::id();
        let src = b"process_vm test bytes".to_vec();
        let mut dst = vec![0u8; src.len()];
        let n = read(me, RemoteAddr::from_ptr(src.as_ptr()), &mut dst).unwrap();
        assert_eq!(n, src.len());
        assert_eq!(dst, src);

        let mut target = vec![0u8; 8];
        let addr = RemoteAddr::from_ptr(target.as_ptr());
        write_all(me, addr, b"written!").unwrap();
        // The kernel wrote behind the compiler's back.
        std::hint::black_box(&mut target);
        assert_eq!(&target, b"written!");
        let mut back = [0u8; 8];
        read_exact(me, addr, &mut back).unwrap();
        assert_eq!(&back, b"written!");
    }

    #[test]
    fn errors() {
        let me = std::process::id();
        let mut b = [0u8; 4];
        // Page 0 is never mapped.
        let e = read(me, RemoteAddr(0), &mut b).unwrap_err();
        assert!(matches!(e, Error::BadAddress { .. }), "{e:?}");
        assert!(e.to_string().contains("process_vm_readv"), "{e}");
        let e = write(me, RemoteAddr(0), &b).unwrap_err();
        assert!(matches!(e, Error::BadAddress { .. }), "{e:?}");
        assert!(e.to_string().contains("process_vm_writev"), "{e}");
        assert!(matches!(
            read(0, RemoteAddr(0x1000), &mut b),
            Err(Error::OutOfRange { what: "pid", .. })
        ));
        assert!(matches!(
            read(u32::MAX, RemoteAddr(0x1000), &mut b),
            Err(Error::OutOfRange { what: "pid", .. })
        ));
        assert!(matches!(
            read(me, RemoteAddr(u64::MAX - 1), &mut b),
            Err(Error::OutOfRange {
                what: "address + length",
                ..
            })
        ));
        assert_eq!(read(me, RemoteAddr(0), &mut []).unwrap(), 0);
    }

    #[test]
    fn a_gone_process_is_target_exited() {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        let mut b = [0u8; 4];
        let e = read(pid, RemoteAddr(0x1000), &mut b).unwrap_err();
        assert!(matches!(e, Error::TargetExited { .. }), "{e:?}");
    }
}
