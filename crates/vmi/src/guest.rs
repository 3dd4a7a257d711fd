//! A QEMU guest's physical memory, mirrored: the layout's host ranges are
//! granted with pidfd_mem (or taken whole with `REMOTE_PROC_MAP`) and mapped
//! once; reads and writes at guest-physical addresses are fault-handled
//! copies through those mirrors (never references: QEMU's vCPUs write the
//! same pages at any time).

use std::io;
use std::time::{Duration, Instant};

use pidfd_mem::{Access, Grant, MemOffset, Mirror, Prot, RemoteAddr};

use crate::error::Error;
use crate::layout::{Layout, RamRange};

/// How QEMU's memory is exposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Expose {
    /// `pidfd_mem` and one grant per guest range, packed in mem (each at
    /// its host address's offset inside a 2 MiB frame, so that huge pages
    /// can be mapped whole), then LOCK. Only guest memory is exposed.
    #[default]
    Grants,
    /// `REMOTE_PROC_MAP`: QEMU's whole address space, offsets equal to host
    /// addresses (contract R1).
    RemoteProcMap,
}

/// How [`GuestMemory::find`] reads guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// Fault-handled copies out of the mirrors.
    Mirror,
    /// `process_vm_readv` from QEMU's host addresses.
    ProcessVmReadv,
    /// `pread` on the access fd (contract A3).
    Pread,
}

impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Via::Mirror => "mirror",
            Via::ProcessVmReadv => "process_vm_readv",
            Via::Pread => "pread",
        })
    }
}

/// One guest range and its mirror.
#[derive(Debug)]
pub struct Mapped {
    /// The range.
    pub range: RamRange,
    /// Where it is in mem.
    pub mem_offset: u64,
    mirror: Mirror,
}

/// The result of a scan.
#[derive(Clone, Debug)]
pub struct Scan {
    /// Guest-physical addresses of the matches, ascending (at most the
    /// limit asked for).
    pub matches: Vec<u64>,
    /// Bytes read.
    pub bytes: u64,
    /// Time taken, in all.
    pub elapsed: Duration,
    /// Of which reading (copying out of guest memory); the rest is the
    /// search.
    pub read: Duration,
}

/// A QEMU guest's memory, mirrored.
#[derive(Debug)]
pub struct GuestMemory {
    pid: u32,
    layout: Layout,
    mapped: Vec<Mapped>,
    access: Access,
    expose: Expose,
}

const TWO_MIB: u64 = 2 << 20;
/// The unit of scans: copied, then searched.
pub const SCAN_CHUNK: usize = 1 << 20;

fn pm(what: impl Into<String>) -> impl FnOnce(pidfd_mem::Error) -> Error {
    let what = what.into();
    move |source| Error::PidfdMem { what, source }
}

impl GuestMemory {
    /// Exposes and maps the ranges of `layout` of QEMU process `pid`.
    pub fn open(pid: u32, layout: Layout, expose: Expose) -> Result<Self, Error> {
        let pidfd = pidfd_mem::pidfd_open(pid).map_err(pm(format!("pidfd_open({pid})")))?;
        let mut offsets = Vec::with_capacity(layout.ranges.len());
        let access = match expose {
            Expose::Grants => {
                let (ctl, access) =
                    pidfd_mem::pidfd_mem(&pidfd, 0).map_err(pm(format!("pidfd_mem(pid {pid})")))?;
                let mut cursor = 0u64;
                for r in &layout.ranges {
                    let off = cursor.next_multiple_of(TWO_MIB) + r.hva % TWO_MIB;
                    let prot = if r.writable {
                        Prot::ReadWrite
                    } else {
                        Prot::Read
                    };
                    let g = Grant::new(RemoteAddr(r.hva), MemOffset(off), r.len, prot);
                    ctl.map(&g).map_err(pm(format!("grant {}", r.region)))?;
                    offsets.push(off);
                    cursor = off + r.len;
                }
                ctl.lock().map_err(pm("PIDFD_MEM_LOCK"))?;
                access
            }
            Expose::RemoteProcMap => {
                offsets.extend(layout.ranges.iter().map(|r| r.hva));
                pidfd_mem::remote_proc_map(&pidfd)
                    .map_err(pm(format!("REMOTE_PROC_MAP(pid {pid})")))?
            }
        };
        let mut mapped = Vec::with_capacity(layout.ranges.len());
        for (r, off) in layout.ranges.iter().zip(offsets) {
            let len = usize::try_from(r.len)
                .map_err(|_| Error::Layout(format!("{}: too long", r.region)))?;
            let prot = if r.writable {
                Prot::ReadWrite
            } else {
                Prot::Read
            };
            let mirror = access
                .mmap(MemOffset(off), len, prot)
                .map_err(pm(format!("mmap of {} at mem offset {off:#x}", r.region)))?;
            mapped.push(Mapped {
                range: r.clone(),
                mem_offset: off,
                mirror,
            });
        }
        Ok(Self {
            pid,
            layout,
            mapped,
            access,
            expose,
        })
    }

    /// QEMU's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The layout mapped.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// How it was exposed.
    pub fn expose(&self) -> Expose {
        self.expose
    }

    /// The ranges with their mem offsets.
    pub fn mapped(&self) -> &[Mapped] {
        &self.mapped
    }

    /// Total guest bytes mapped.
    pub fn total_bytes(&self) -> u64 {
        self.mapped.iter().map(|m| m.range.len).sum()
    }

    /// QEMU's host address of `gpa`.
    pub fn hva(&self, gpa: u64) -> Option<u64> {
        self.find_range(gpa)
            .map(|m| m.range.hva + (gpa - m.range.gpa))
    }

    fn find_range(&self, gpa: u64) -> Option<&Mapped> {
        let i = self.mapped.partition_point(|m| m.range.end() <= gpa);
        self.mapped.get(i).filter(|m| m.range.contains(gpa))
    }

    /// Splits `[gpa, gpa+len)` into (range, offset in range, length)
    /// pieces; `Unmapped` at the first byte outside guest RAM/ROM.
    fn pieces(&self, gpa: u64, len: usize) -> Result<Vec<(&Mapped, usize, usize)>, Error> {
        let mut out = Vec::new();
        let mut at = gpa;
        let mut left = len as u64;
        while left > 0 {
            let m = self.find_range(at).ok_or(Error::Unmapped { gpa: at })?;
            let off = at - m.range.gpa;
            let n = left.min(m.range.len - off);
            out.push((m, off as usize, n as usize));
            at += n;
            left -= n;
        }
        Ok(out)
    }

    /// Copies guest-physical `[gpa, gpa+buf.len())` into `buf` through the
    /// mirrors.
    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), Error> {
        let mut done = 0;
        for (m, off, n) in self.pieces(gpa, buf.len())? {
            m.mirror
                .copy_to(off, &mut buf[done..done + n])
                .map_err(|source| Error::Mirror {
                    gpa: m.range.gpa + off as u64,
                    source,
                })?;
            done += n;
        }
        Ok(())
    }

    /// Copies `data` to guest-physical `gpa` through the mirrors. Nothing is
    /// written if any part is ROM or outside guest memory.
    pub fn write(&self, gpa: u64, data: &[u8]) -> Result<(), Error> {
        let pieces = self.pieces(gpa, data.len())?;
        if let Some((m, off, _)) = pieces.iter().find(|(m, _, _)| !m.range.writable) {
            return Err(Error::ReadOnly {
                gpa: m.range.gpa + *off as u64,
                region: m.range.region.clone(),
            });
        }
        let mut done = 0;
        for (m, off, n) in pieces {
            m.mirror
                .copy_from(off, &data[done..done + n])
                .map_err(|source| Error::Mirror {
                    gpa: m.range.gpa + off as u64,
                    source,
                })?;
            done += n;
        }
        Ok(())
    }

    /// Reads part of one range `via` some path (for scans).
    fn read_chunk(&self, m: &Mapped, off: usize, buf: &mut [u8], via: Via) -> Result<(), Error> {
        let gpa = m.range.gpa + off as u64;
        match via {
            Via::Mirror => m
                .mirror
                .copy_to(off, buf)
                .map_err(|source| Error::Mirror { gpa, source }),
            Via::ProcessVmReadv => {
                let hva = m.range.hva + off as u64;
                process_vm_read_exact(self.pid, hva, buf).map_err(|e| {
                    Error::io(
                        format!("process_vm_readv at {hva:#x} (guest-physical {gpa:#x})"),
                        e,
                    )
                })
            }
            Via::Pread => self
                .access
                .read_exact_at(buf, MemOffset(m.mem_offset + off as u64))
                .map_err(pm(format!("pread at guest-physical {gpa:#x}"))),
        }
    }

    /// Searches all of guest memory for `pattern`, reading it `via` the
    /// mirrors, `process_vm_readv` or `pread`, [`SCAN_CHUNK`] bytes at a
    /// time; stops after `limit` matches. Matches do not span ranges.
    pub fn find(&self, pattern: &[u8], via: Via, limit: usize) -> Result<Scan, Error> {
        let t0 = Instant::now();
        let mut matches = Vec::new();
        let mut bytes = 0u64;
        let mut read = Duration::ZERO;
        if pattern.is_empty() || limit == 0 {
            return Ok(Scan {
                matches,
                bytes,
                elapsed: t0.elapsed(),
                read,
            });
        }
        let finder = memchr::memmem::Finder::new(pattern);
        let carry = pattern.len() - 1;
        let mut buf = vec![0u8; carry + SCAN_CHUNK];
        'ranges: for m in &self.mapped {
            let len = m.range.len as usize;
            let mut off = 0usize;
            let mut kept = 0usize; // bytes of the previous chunk kept in front
            while off < len {
                let n = SCAN_CHUNK.min(len - off);
                let r0 = Instant::now();
                self.read_chunk(m, off, &mut buf[kept..kept + n], via)?;
                read += r0.elapsed();
                bytes += n as u64;
                let base = m.range.gpa + (off - kept) as u64;
                for p in finder.find_iter(&buf[..kept + n]) {
                    matches.push(base + p as u64);
                    if matches.len() >= limit {
                        break 'ranges;
                    }
                }
                let have = kept + n;
                let keep = carry.min(have);
                buf.copy_within(have - keep..have, 0);
                kept = keep;
                off += n;
            }
        }
        Ok(Scan {
            matches,
            bytes,
            elapsed: t0.elapsed(),
            read,
        })
    }
}

/// `process_vm_readv` of `buf.len()` bytes at `addr` in `pid`, repeated
/// over short reads.
pub fn process_vm_read_exact(pid: u32, addr: u64, buf: &mut [u8]) -> io::Result<()> {
    let pid =
        libc::pid_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        let local = libc::iovec {
            iov_base: rest.as_mut_ptr().cast(),
            iov_len: rest.len(),
        };
        let remote = libc::iovec {
            iov_base: (addr + done as u64) as usize as *mut libc::c_void,
            iov_len: rest.len(),
        };
        // SAFETY: `local` describes `rest`, which is borrowed mutably for
        // the call and not otherwise accessed; `remote` is only an address
        // in the other process, which the kernel checks.
        let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
        match n {
            n if n < 0 => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            0 => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            n => done += n as usize,
        }
    }
    Ok(())
}
