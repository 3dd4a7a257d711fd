//! Copying bytes from and to T: with pidfd_mem (`pread`/`pwrite` on the
//! access fd through a grant that covers the range, contract A3) when the
//! module is loaded, else with `process_vm_readv`/`process_vm_writev`.

use std::sync::Once;

use anyhow::{Context, Result};
use pidfd_mem::{pidfd_mem, pidfd_open, process_vm, Access, Grant, MemOffset, Prot, RemoteAddr};

use crate::addr::Range;
use crate::errors::{bad, Failure};

/// How bytes are copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// `pread`/`pwrite` on a pidfd_mem access fd.
    PidfdMem,
    /// `process_vm_readv`/`process_vm_writev`.
    ProcessVm,
}

impl Via {
    /// The word for messages and JSON.
    pub fn as_str(self, write: bool) -> &'static str {
        match (self, write) {
            (Via::PidfdMem, _) => "pidfd_mem",
            (Via::ProcessVm, false) => "process_vm_readv",
            (Via::ProcessVm, true) => "process_vm_writev",
        }
    }
}

enum Inner {
    Module {
        mem: Access,
        /// T's address at mem offset 0.
        base: u64,
    },
    ProcessVm,
}

/// Access to T's bytes in one range.
pub struct Copier {
    pid: u32,
    inner: Inner,
}

static NOTICE: Once = Once::new();

/// The page size.
pub fn page() -> u64 {
    pidfd_mem::page_size() as u64
}

/// `a` rounded down to a page boundary.
pub fn align_down(a: u64) -> u64 {
    a & !(page() - 1)
}

/// `a` rounded up to a page boundary, `None` past the top.
pub fn align_up(a: u64) -> Option<u64> {
    a.checked_add(page() - 1).map(|v| v & !(page() - 1))
}

/// The page-aligned window that covers `r`.
pub fn cover(r: Range) -> Result<(u64, u64)> {
    let start = align_down(r.start);
    let end = align_up(r.end)
        .ok_or_else(|| bad(format!("range ends past the top of memory ({:#x})", r.end)))?;
    Ok((start, end - start))
}

impl Copier {
    /// Opens T for copies in `range`, read-only or read-write. Uses pidfd_mem
    /// when the module is loaded (one grant covering the range at mem offset
    /// 0), else says once on stderr that it falls back to process_vm_*.
    pub fn open(pid: u32, range: Range, write: bool) -> Result<Self> {
        let pidfd = pidfd_open(pid).with_context(|| format!("cannot open process {pid}"))?;
        match pidfd_mem(&pidfd, 0) {
            Ok((ctl, mem)) => {
                let (start, size) = cover(range)?;
                let prot = if write { Prot::ReadWrite } else { Prot::Read };
                ctl.map(&Grant::new(RemoteAddr(start), MemOffset(0), size, prot))
                    .with_context(|| {
                        format!("cannot grant [{start:#x}, +{size:#x}) of process {pid}")
                    })?;
                // Closing ctl keeps the grant (contract K2).
                drop(ctl);
                Ok(Self {
                    pid,
                    inner: Inner::Module { mem, base: start },
                })
            }
            Err(pidfd_mem::Error::ModuleNotLoaded { .. }) => {
                NOTICE.call_once(|| {
                    eprintln!(
                        "rmap: pidfd_mem module not loaded: using {}",
                        Via::ProcessVm.as_str(write)
                    );
                });
                Ok(Self {
                    pid,
                    inner: Inner::ProcessVm,
                })
            }
            Err(e) => {
                Err(anyhow::Error::new(e).context(format!("pidfd_mem on process {pid} failed")))
            }
        }
    }

    /// Which mechanism copies.
    pub fn via(&self) -> Via {
        match self.inner {
            Inner::Module { .. } => Via::PidfdMem,
            Inner::ProcessVm => Via::ProcessVm,
        }
    }

    /// Copies from T at `addr` into `buf`. `Ok(0)` when the first byte
    /// cannot be read (hole, `PROT_NONE`, I/O memory, beyond a file's end);
    /// short counts stop at the first byte that cannot.
    pub fn read_some(&self, addr: u64, buf: &mut [u8]) -> Result<usize> {
        match &self.inner {
            Inner::Module { mem, base } => {
                let off = addr
                    .checked_sub(*base)
                    .ok_or_else(|| bad("address below the grant"))?;
                match mem.read_at(buf, MemOffset(off)) {
                    Ok(n) => Ok(n),
                    Err(pidfd_mem::Error::Io { .. } | pidfd_mem::Error::BadAddress { .. }) => Ok(0),
                    Err(e) => Err(anyhow::Error::new(e)),
                }
            }
            Inner::ProcessVm => match process_vm::read(self.pid, RemoteAddr(addr), buf) {
                Ok(n) => Ok(n),
                Err(pidfd_mem::Error::BadAddress { .. }) => Ok(0),
                Err(e) => Err(self.gone_or(e)),
            },
        }
    }

    /// Copies `buf` into T at `addr`. `Ok(0)` when the first byte cannot be
    /// written; short counts stop at the first byte that cannot.
    pub fn write_some(&self, addr: u64, buf: &[u8]) -> Result<usize> {
        match &self.inner {
            Inner::Module { mem, base } => {
                let off = addr
                    .checked_sub(*base)
                    .ok_or_else(|| bad("address below the grant"))?;
                match mem.write_at(buf, MemOffset(off)) {
                    Ok(n) => Ok(n),
                    Err(pidfd_mem::Error::Io { .. } | pidfd_mem::Error::BadAddress { .. }) => Ok(0),
                    Err(e) => Err(anyhow::Error::new(e)),
                }
            }
            Inner::ProcessVm => match process_vm::write(self.pid, RemoteAddr(addr), buf) {
                Ok(n) => Ok(n),
                Err(pidfd_mem::Error::BadAddress { .. }) => Ok(0),
                Err(e) => Err(self.gone_or(e)),
            },
        }
    }

    fn gone_or(&self, e: pidfd_mem::Error) -> anyhow::Error {
        if matches!(e, pidfd_mem::Error::TargetExited { .. }) {
            anyhow::Error::new(Failure::Gone(format!(
                "process {} has exited (ESRCH)",
                self.pid
            )))
        } else {
            anyhow::Error::new(e)
        }
    }

    /// Fills `buf` from T at `addr`; pages that cannot be read are zeros
    /// and returned as holes (merged, in address order).
    pub fn read_with_holes(&self, addr: u64, buf: &mut [u8], holes: &mut Vec<Range>) -> Result<()> {
        let len = buf.len();
        let mut done = 0usize;
        while done < len {
            let at = addr + done as u64;
            let n = self.read_some(at, &mut buf[done..])?;
            if n > 0 {
                done += n;
                continue;
            }
            let next = align_up(at + 1).unwrap_or(u64::MAX);
            let k = usize::try_from(next - at)
                .unwrap_or(usize::MAX)
                .min(len - done);
            buf[done..done + k].fill(0);
            push_hole(
                holes,
                Range {
                    start: at,
                    end: at + k as u64,
                },
            );
            done += k;
        }
        Ok(())
    }
}

/// Adds `r` to `holes`, merging with the last one when they touch.
pub fn push_hole(holes: &mut Vec<Range>, r: Range) {
    if let Some(last) = holes.last_mut() {
        if last.end == r.start {
            last.end = r.end;
            return;
        }
    }
    holes.push(r);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment() {
        let p = page();
        assert_eq!(align_down(p + 5), p);
        assert_eq!(align_up(p + 5), Some(2 * p));
        assert_eq!(align_up(p), Some(p));
        assert_eq!(align_up(u64::MAX), None);
        assert_eq!(
            cover(Range {
                start: p + 1,
                end: p + 2
            })
            .unwrap(),
            (p, p)
        );
        assert!(cover(Range {
            start: 0,
            end: u64::MAX
        })
        .is_err());
    }

    #[test]
    fn holes_merge() {
        let mut h = Vec::new();
        push_hole(&mut h, Range { start: 0, end: 10 });
        push_hole(&mut h, Range { start: 10, end: 20 });
        push_hole(&mut h, Range { start: 30, end: 40 });
        assert_eq!(
            h,
            [Range { start: 0, end: 20 }, Range { start: 30, end: 40 }]
        );
    }

    #[test]
    fn reads_own_memory_with_process_vm_readv() {
        // The host test process reads itself: no module needed.
        let data = b"rmap copy test".to_vec();
        let me = Copier {
            pid: std::process::id(),
            inner: Inner::ProcessVm,
        };
        let mut buf = vec![0u8; data.len()];
        let n = me.read_some(data.as_ptr() as u64, &mut buf).unwrap();
        assert_eq!(n, data.len());
        assert_eq!(buf, data);
        // Page 0 is never mapped: a hole, not an error.
        let mut holes = Vec::new();
        let mut z = vec![1u8; 16];
        me.read_with_holes(0, &mut z, &mut holes).unwrap();
        assert_eq!(z, [0; 16]);
        assert_eq!(holes, [Range { start: 0, end: 16 }]);
    }
}
