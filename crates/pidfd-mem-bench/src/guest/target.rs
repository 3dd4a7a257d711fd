//! The target process T: a forked child that owns the measured buffers and
//! does what the reader asks over a pipe (allocate and populate, repopulate,
//! `madvise(MADV_DONTNEED)` under its own clock, free). Between commands it
//! blocks in `read` on the pipe, so it never touches its memory while the
//! reader measures.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::sys::{fill, fill_from, Region, Thp, PAGE};

const ALLOC: u64 = 1;
const TOUCH: u64 = 2;
const DONTNEED: u64 = 3;
const FREE: u64 = 4;
const EXIT: u64 = 5;

/// T, seen from the reader. Dropping it asks T to exit and reaps it.
pub struct Target {
    pid: libc::pid_t,
    cmd: File,
    resp: File,
}

fn pipe() -> Result<(File, File)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error()).context("pipe2");
    }
    // SAFETY: two fresh fds that nothing else owns.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((File::from(r), File::from(w)))
}

impl Target {
    /// Forks T. The caller must be single-threaded (the bench is).
    pub fn spawn() -> Result<Target> {
        let (cmd_r, cmd_w) = pipe()?;
        let (resp_r, resp_w) = pipe()?;
        // SAFETY: the bench has one thread, so the child may allocate and
        // run Rust code freely; it leaves only through `_exit`.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error()).context("fork");
        }
        if pid == 0 {
            drop(cmd_w);
            drop(resp_r);
            // SAFETY: prctl with integer arguments: die with the reader.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
            // T on the second vCPU (if any), the reader on the first.
            super::sys::pin_to_cpu(1);
            let code = match std::panic::catch_unwind(move || serve(cmd_r, resp_w)) {
                Ok(Ok(())) => 0,
                _ => 1,
            };
            // SAFETY: ends the child without running the parent's atexit
            // handlers or flushing its copied stdio buffers.
            unsafe { libc::_exit(code) };
        }
        Ok(Target {
            pid,
            cmd: cmd_w,
            resp: resp_r,
        })
    }

    /// T's pid.
    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    fn call(&mut self, cmd: [u64; 3]) -> Result<u64> {
        let mut buf = [0u8; 24];
        for (i, w) in cmd.iter().enumerate() {
            buf[i * 8..i * 8 + 8].copy_from_slice(&w.to_ne_bytes());
        }
        self.cmd.write_all(&buf).context("writing to T")?;
        let mut r = [0u8; 16];
        self.resp.read_exact(&mut r).context("T did not answer")?;
        let status = u64::from_ne_bytes(r[..8].try_into().unwrap_or_default());
        let value = u64::from_ne_bytes(r[8..].try_into().unwrap_or_default());
        if status != 0 {
            bail!(
                "T failed command {}: {}",
                cmd[0],
                io::Error::from_raw_os_error(status as i32)
            );
        }
        Ok(value)
    }

    /// T allocates `len` bytes at a 2 MiB boundary, advised `thp`, and fills
    /// them with the page pattern. Returns the address in T.
    pub fn alloc(&mut self, len: usize, thp: Thp) -> Result<u64> {
        self.call([ALLOC, len as u64, thp.to_u64()])
    }

    /// T fills `[addr, addr + len)` of one of its buffers with the pattern
    /// again (repopulating it after `MADV_DONTNEED`).
    pub fn touch(&mut self, addr: u64, len: usize) -> Result<()> {
        self.call([TOUCH, addr, len as u64]).map(|_| ())
    }

    /// T runs `madvise(addr, len, MADV_DONTNEED)` and returns how long it
    /// took, in seconds, by T's clock.
    pub fn dontneed(&mut self, addr: u64, len: usize) -> Result<f64> {
        self.call([DONTNEED, addr, len as u64])
            .map(|ns| ns as f64 * 1e-9)
    }

    /// T unmaps the buffer allocated at `addr`.
    pub fn free(&mut self, addr: u64) -> Result<()> {
        self.call([FREE, addr, 0]).map(|_| ())
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.call([EXIT, 0, 0]);
        let mut status = 0;
        // SAFETY: reaps our own child; `status` is a valid out pointer.
        unsafe { libc::waitpid(self.pid, &mut status, 0) };
    }
}

/// T's loop: one command at a time until EXIT or the pipe closes.
fn serve(mut cmd: File, mut resp: File) -> io::Result<()> {
    let mut regions: Vec<Region> = Vec::new();
    loop {
        let mut buf = [0u8; 24];
        if cmd.read_exact(&mut buf).is_err() {
            return Ok(());
        }
        let w = |i: usize| u64::from_ne_bytes(buf[i * 8..i * 8 + 8].try_into().unwrap_or_default());
        let (op, a, b) = (w(0), w(1), w(2));
        let result: io::Result<u64> = match op {
            ALLOC => Region::anon(a as usize, 0, Thp::from_u64(b)).map(|mut r| {
                fill(r.as_mut_slice());
                let addr = r.as_ptr() as u64;
                regions.push(r);
                addr
            }),
            TOUCH => match find(&mut regions, a, b) {
                Some((s, first)) => {
                    fill_from(s, first);
                    Ok(0)
                }
                None => Err(io::Error::from_raw_os_error(libc::EINVAL)),
            },
            DONTNEED => {
                let t0 = Instant::now();
                // SAFETY: drops T's pages in a range of T's own buffer,
                // which no reference spans at this point (the loop holds
                // none); reads after it see zeros until TOUCH.
                let rc =
                    unsafe { libc::madvise(a as usize as *mut _, b as usize, libc::MADV_DONTNEED) };
                let ns = t0.elapsed().as_nanos() as u64;
                if rc == 0 {
                    Ok(ns)
                } else {
                    Err(io::Error::last_os_error())
                }
            }
            FREE => {
                regions.retain(|r| r.as_ptr() as u64 != a);
                Ok(0)
            }
            EXIT => {
                resp.write_all(&[0u8; 16])?;
                return Ok(());
            }
            _ => Err(io::Error::from_raw_os_error(libc::EINVAL)),
        };
        let (status, value) = match result {
            Ok(v) => (0u64, v),
            Err(e) => (e.raw_os_error().unwrap_or(libc::EIO) as u64, 0),
        };
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&status.to_ne_bytes());
        out[8..].copy_from_slice(&value.to_ne_bytes());
        resp.write_all(&out)?;
    }
}

/// The part `[addr, addr + len)` of one of `regions` and the index of its
/// first page in that region (for [`fill_from`]); `addr` must be page aligned.
fn find(regions: &mut [Region], addr: u64, len: u64) -> Option<(&mut [u8], usize)> {
    regions.iter_mut().find_map(|r| {
        let start = r.as_ptr() as u64;
        let off = addr.checked_sub(start)? as usize;
        let end = off.checked_add(len as usize)?;
        (off % PAGE == 0 && end <= r.len()).then(|| (&mut r.as_mut_slice()[off..end], off / PAGE))
    })
}
