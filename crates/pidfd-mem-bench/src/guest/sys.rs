//! System-level helpers of the guest bench: aligned buffers, the page
//! pattern, `process_vm_readv`/`writev`, `/proc/PID/mem`, ptrace, memfd, the
//! module parameter.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;

use anyhow::{bail, Context, Result};

/// The page size (x86_64).
pub const PAGE: usize = 4096;
/// The PMD size (x86_64): a transparent huge page.
pub const HUGE: usize = 2 << 20;

/// Transparent huge page advice for an anonymous region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Thp {
    /// `MADV_HUGEPAGE`.
    Huge,
    /// `MADV_NOHUGEPAGE`.
    NoHuge,
}

impl Thp {
    /// For the command pipe.
    pub fn to_u64(self) -> u64 {
        match self {
            Thp::Huge => 1,
            Thp::NoHuge => 0,
        }
    }

    /// From the command pipe.
    pub fn from_u64(v: u64) -> Thp {
        if v == 1 {
            Thp::Huge
        } else {
            Thp::NoHuge
        }
    }
}

/// Anonymous private memory owned by this process, unmapped on drop.
pub struct Region {
    map: *mut u8,
    map_len: usize,
    ptr: *mut u8,
    len: usize,
}

impl Region {
    /// `len` bytes (a multiple of the page size) starting `pages_after` pages
    /// after a 2 MiB boundary, advised `thp`, not yet populated.
    pub fn anon(len: usize, pages_after: usize, thp: Thp) -> io::Result<Region> {
        let map_len = len + HUGE + pages_after * PAGE;
        // SAFETY: a fresh anonymous mapping at an address the kernel picks;
        // it aliases nothing.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let map = map.cast::<u8>();
        let aligned = (map as usize).next_multiple_of(HUGE) - map as usize;
        let ptr = map.wrapping_add(aligned + pages_after * PAGE);
        let region = Region {
            map,
            map_len,
            ptr,
            len,
        };
        let advice = match thp {
            Thp::Huge => libc::MADV_HUGEPAGE,
            Thp::NoHuge => libc::MADV_NOHUGEPAGE,
        };
        // SAFETY: [ptr, ptr+len) lies inside our mapping (aligned +
        // pages_after pages + len <= map_len); advice changes no content.
        if unsafe { libc::madvise(ptr.cast(), len, advice) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(region)
    }

    /// `len` bytes, not populated, `DISTANCE` pages (plus a multiple of
    /// 2^18 pages, either way) from `base`, wherever the address space is
    /// free; see [`DISTANCE`].
    pub fn at_distance(base: *const u8, len: usize) -> io::Result<Region> {
        for k in 0..64usize {
            for up in [true, false] {
                let pages = DISTANCE + k * (1 << 18);
                let Some(addr) = (if up {
                    (base as usize).checked_add(pages * PAGE)
                } else {
                    (base as usize).checked_sub(pages * PAGE)
                }) else {
                    continue;
                };
                // SAFETY: MAP_FIXED_NOREPLACE never replaces a mapping: it
                // fails with EEXIST where anything is mapped.
                let p = unsafe {
                    libc::mmap(
                        addr as *mut libc::c_void,
                        len,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_PRIVATE
                            | libc::MAP_ANONYMOUS
                            | libc::MAP_NORESERVE
                            | libc::MAP_FIXED_NOREPLACE,
                        -1,
                        0,
                    )
                };
                if p == libc::MAP_FAILED {
                    continue;
                }
                let region = Region {
                    map: p.cast(),
                    map_len: len,
                    ptr: p.cast(),
                    len,
                };
                if p as usize != addr {
                    continue; // an old kernel took it as a hint: drop it
                }
                // SAFETY: our fresh mapping; advice changes no content.
                unsafe { libc::madvise(p, len, libc::MADV_NOHUGEPAGE) };
                return Ok(region);
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            "no free range at the distance",
        ))
    }

    /// The start address.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The region as bytes (read-only).
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: [ptr, ptr+len) is our own private mapping, alive while
        // `self` is; nothing else in this process refers to it.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// The region as bytes.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as `as_slice`, and `&mut self` makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `anon`; no reference to it outlives
        // `self` (slices borrow `self`).
        unsafe { libc::munmap(self.map.cast(), self.map_len) };
    }
}

/// Pages between the source and the destination of a repeated copy.
///
/// QEMU's soft TLB is direct mapped: page `p` uses slot `p mod N`, `N` a
/// power of two that QEMU grows to about twice the pages in use (4 s for a
/// copy of `s` pages). A destination `D` pages from its source shares slots
/// with it, and the two evict each other on every pass, unless `D mod N`
/// lies in `[s, N - s]`. `0x11111` has bit `k` set and bit `k + 1` clear for
/// `k` = 0, 4, 8, 12, 16, which puts `D mod N` in `[s, N - s]` for every copy
/// size of the bench (1 to 65536 pages) at every `N >= 4 s`; it is also more
/// than 65536, so the two 256 MiB buffers do not overlap. (The rule of thumb
/// "offset by an odd number of pages" only avoids the worst case.)
pub const DISTANCE: usize = 0x11111;

/// The byte every page `page` (counted from the buffer start) is filled with,
/// in T and in the reader's reference buffer alike, so that writes of the
/// reference into T change nothing and reads can be checked.
pub fn pattern(page: usize) -> u8 {
    (page % 251) as u8 + 1
}

/// Fills `buf` with [`pattern`] page by page (populating it).
pub fn fill(buf: &mut [u8]) {
    fill_from(buf, 0);
}

/// Fills `buf`, which starts at page `first` of its buffer, with [`pattern`].
pub fn fill_from(buf: &mut [u8], first: usize) {
    for (i, page) in buf.chunks_mut(PAGE).enumerate() {
        page.fill(pattern(first + i));
    }
}

/// The first page of `buf` whose first or last byte is not [`pattern`].
pub fn check(buf: &[u8]) -> Option<usize> {
    buf.chunks(PAGE)
        .enumerate()
        .find(|(i, p)| p[0] != pattern(*i) || p[p.len() - 1] != pattern(*i))
        .map(|(i, _)| i)
}

fn remote_iov(addr: u64, len: usize) -> libc::iovec {
    libc::iovec {
        iov_base: addr as usize as *mut libc::c_void,
        iov_len: len,
    }
}

/// `process_vm_readv` of T's `[addr, addr + buf.len())` into `buf`, repeated
/// while short.
pub fn pvr(pid: libc::pid_t, buf: &mut [u8], addr: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let local = libc::iovec {
            iov_base: buf[done..].as_mut_ptr().cast(),
            iov_len: buf.len() - done,
        };
        let remote = remote_iov(addr + done as u64, buf.len() - done);
        // SAFETY: `local` describes the live, exclusively borrowed rest of
        // `buf`; the remote address is only interpreted in T by the kernel.
        let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
        if n <= 0 {
            return Err(short(n));
        }
        done += n as usize;
    }
    Ok(())
}

/// `process_vm_writev` of `buf` into T at `addr`, repeated while short.
pub fn pvw(pid: libc::pid_t, buf: &[u8], addr: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let local = libc::iovec {
            iov_base: buf[done..].as_ptr() as *mut libc::c_void,
            iov_len: buf.len() - done,
        };
        let remote = remote_iov(addr + done as u64, buf.len() - done);
        // SAFETY: `local` describes the rest of `buf`, which the kernel only
        // reads for a writev; the remote address is T's.
        let n = unsafe { libc::process_vm_writev(pid, &local, 1, &remote, 1, 0) };
        if n <= 0 {
            return Err(short(n));
        }
        done += n as usize;
    }
    Ok(())
}

fn short(n: isize) -> io::Error {
    if n < 0 {
        io::Error::last_os_error()
    } else {
        io::Error::new(io::ErrorKind::UnexpectedEof, "0 bytes moved")
    }
}

/// `/proc/T/mem`, opened read-write.
pub struct ProcMem(File);

impl ProcMem {
    /// Opens `/proc/<pid>/mem`.
    pub fn open(pid: libc::pid_t) -> io::Result<ProcMem> {
        File::options()
            .read(true)
            .write(true)
            .open(format!("/proc/{pid}/mem"))
            .map(ProcMem)
    }

    /// `pread` of T's `[addr, addr + buf.len())`, repeated while short.
    pub fn read(&self, buf: &mut [u8], addr: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, addr)
    }

    /// `pwrite` of `buf` at T's `addr`, repeated while short.
    pub fn write(&self, buf: &[u8], addr: u64) -> io::Result<()> {
        self.0.write_all_at(buf, addr)
    }
}

/// T stopped under ptrace (`PTRACE_SEIZE` + `PTRACE_INTERRUPT`); detached on
/// drop, after which T goes on with its blocking read.
pub struct Ptrace(libc::pid_t);

impl Ptrace {
    /// Seizes and stops `pid` (a child of ours).
    pub fn attach(pid: libc::pid_t) -> Result<Ptrace> {
        // SAFETY: ptrace requests with integer arguments only.
        if unsafe { libc::ptrace(libc::PTRACE_SEIZE, pid, 0usize, 0usize) } != 0 {
            return Err(io::Error::last_os_error()).context("PTRACE_SEIZE");
        }
        let t = Ptrace(pid);
        // SAFETY: as above.
        if unsafe { libc::ptrace(libc::PTRACE_INTERRUPT, pid, 0usize, 0usize) } != 0 {
            return Err(io::Error::last_os_error()).context("PTRACE_INTERRUPT");
        }
        let mut status = 0;
        // SAFETY: waits for our own child; `status` is a valid out pointer.
        if unsafe { libc::waitpid(pid, &mut status, libc::__WALL) } != pid {
            return Err(io::Error::last_os_error()).context("waitpid for the ptrace stop");
        }
        if !libc::WIFSTOPPED(status) {
            bail!("T did not stop under ptrace (status {status:#x})");
        }
        Ok(t)
    }

    /// `PTRACE_PEEKDATA` of the word at T's `addr`.
    pub fn peek(&self, addr: u64) -> io::Result<u64> {
        // SAFETY: resets this thread's errno, which is ours to write.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: PEEKDATA returns the word; `addr` is only read in T.
        let v = unsafe { libc::ptrace(libc::PTRACE_PEEKDATA, self.0, addr as usize, 0usize) };
        if v == -1 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(0) {
                return Err(e);
            }
        }
        Ok(v as u64)
    }

    /// `PTRACE_POKEDATA` of `val` at T's `addr`.
    pub fn poke(&self, addr: u64, val: u64) -> io::Result<()> {
        // SAFETY: POKEDATA passes the word by value; `addr` is only written in T.
        if unsafe { libc::ptrace(libc::PTRACE_POKEDATA, self.0, addr as usize, val as usize) } != 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for Ptrace {
    fn drop(&mut self) {
        // SAFETY: integer-only ptrace request on our tracee.
        unsafe { libc::ptrace(libc::PTRACE_DETACH, self.0, 0usize, 0usize) };
    }
}

/// A memfd whose pages are all in the page cache (shmem).
pub struct Memfd {
    fd: OwnedFd,
    len: usize,
}

impl Memfd {
    /// A populated memfd of `len` bytes.
    pub fn populated(len: usize) -> Result<Memfd> {
        let name = CString::new("pidfd-mem-bench").context("memfd name")?;
        // SAFETY: a valid C string; the result is checked.
        let raw = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error()).context("memfd_create");
        }
        // SAFETY: `raw` is a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let file = File::from(fd);
        file.set_len(len as u64).context("ftruncate memfd")?;
        let mut chunk = vec![0u8; HUGE];
        for off in (0..len).step_by(HUGE) {
            let n = HUGE.min(len - off);
            fill(&mut chunk[..n]);
            file.write_all_at(&chunk[..n], off as u64)
                .context("populating the memfd")?;
        }
        Ok(Memfd {
            fd: file.into(),
            len,
        })
    }

    /// A fresh `MAP_SHARED`, `PROT_READ` mapping of the whole memfd.
    pub fn map(&self) -> io::Result<Mapping> {
        // SAFETY: a fresh shared mapping of our memfd at an address the
        // kernel picks; it aliases no Rust object.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                self.len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                self.fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: p.cast(),
            len: self.len,
        })
    }
}

/// A mapping made by [`Memfd::map`], unmapped on drop.
pub struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    /// The start address.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: our own mapping; no reference into it outlives `self`.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Pins the calling thread to CPU `cpu`, if the machine has it: QEMU keeps
/// one soft TLB per vCPU, so a reader that migrates between vCPUs finds a
/// TLB of another size and content. Returns whether it pinned.
pub fn pin_to_cpu(cpu: usize) -> bool {
    // SAFETY: cpu_set_t is plain data, zeroed is the empty set; CPU_SET
    // writes inside it; sched_setaffinity reads `size_of` bytes of it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// The module's `fault_around_pages` parameter.
pub const FAULT_AROUND: &str = "/sys/module/pidfd_mem/parameters/fault_around_pages";

/// The current `fault_around_pages`, if the module is loaded.
pub fn fault_around() -> Option<u32> {
    std::fs::read_to_string(FAULT_AROUND)
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Sets `fault_around_pages` (root only).
pub fn set_fault_around(pages: u32) -> io::Result<()> {
    std::fs::write(FAULT_AROUND, format!("{pages}\n"))
}

/// `AnonHugePages` (KiB) of T's mapping that contains `addr`, from
/// `/proc/<pid>/smaps`.
pub fn anon_huge_kib(pid: libc::pid_t, addr: u64) -> Option<u64> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let mut inside = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) {
                inside = (a..b).contains(&addr);
                continue;
            }
        }
        if inside {
            if let Some(rest) = line.strip_prefix("AnonHugePages:") {
                return rest.split_whitespace().next()?.parse().ok();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_alignment_and_pattern() {
        let mut r = Region::anon(4 * PAGE, 3, Thp::NoHuge).unwrap();
        assert_eq!(r.as_ptr() as usize % HUGE, 3 * PAGE);
        fill(r.as_mut_slice());
        assert_eq!(check(r.as_slice()), None);
        r.as_mut_slice()[2 * PAGE + PAGE - 1] ^= 0xff;
        assert_eq!(check(r.as_slice()), Some(2));
        assert_eq!(r.len(), 4 * PAGE);
    }

    #[test]
    fn distance_keeps_copies_out_of_each_others_tlb_slots() {
        let pages = [1usize, 16, 256, 4096, 65536];
        for s in pages {
            for bits in 8..=22 {
                let n = 1usize << bits;
                if n < 4 * s {
                    continue;
                }
                for d in [DISTANCE, DISTANCE + (1 << 18)] {
                    let r = d % n;
                    assert!(r >= s && r <= n - s, "s {s} N {n} D {d}: {r}");
                }
            }
        }
        let a = Region::anon(4 * PAGE, 0, Thp::NoHuge).unwrap();
        let b = Region::at_distance(a.as_ptr(), 2 * PAGE).unwrap();
        let d = (b.as_ptr() as isize - a.as_ptr() as isize).unsigned_abs() / PAGE;
        assert_eq!((d - DISTANCE) % (1 << 18), 0);
    }

    #[test]
    fn own_process_copies() {
        // process_vm_readv and /proc/self/mem on our own memory (allowed).
        let mut a = Region::anon(2 * PAGE, 0, Thp::NoHuge).unwrap();
        fill(a.as_mut_slice());
        let mut b = vec![0u8; 2 * PAGE];
        let me = std::process::id() as libc::pid_t;
        pvr(me, &mut b, a.as_ptr() as u64).unwrap();
        assert_eq!(check(&b), None);
        let pm = ProcMem::open(me).unwrap();
        let mut c = vec![0u8; 2 * PAGE];
        pm.read(&mut c, a.as_ptr() as u64).unwrap();
        assert_eq!(b, c);
        let m = Memfd::populated(3 * PAGE).unwrap();
        let map = m.map().unwrap();
        // SAFETY: the mapping is 3 pages long and alive.
        let third = unsafe { map.as_ptr().add(2 * PAGE).read_volatile() };
        assert_eq!(third, pattern(2));
        assert_eq!(map.len(), 3 * PAGE);
    }
}
