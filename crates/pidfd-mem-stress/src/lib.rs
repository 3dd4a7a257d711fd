//! Shared pieces of the two guest programs of this crate:
//!
//! - `pidfd-mem-stress`: several target processes (T) churn their mappings
//!   while several mappers fault, read, write, `pread`, fork, exit and
//!   UNMAP/MAP/LOCK against them; every value read is checked against what T
//!   can have held (contract C1-C4, A5, L3, P3).
//! - `pidfd-mem-fuzz`: a seeded syscall fuzzer of the module's interface.
//!
//! Both run as root in the xtask guest (`cargo xtask run -- target/release/...`)
//! and print KTAP-compatible `# ...` lines and a final `N passed, N failed`.
//! The bench fails the run on kernel splats and kmemleak reports; these
//! programs fail on wrong values and unexpected answers.
//!
//! Rules for remote memory (DESIGN.md): mirrors are touched only through the
//! library's guarded copies and atomics, or in forked children whose death
//! is expected; values that must be read whole are read with aligned atomic
//! loads.

pub mod rng;
pub mod shm;
pub mod sys;

/// The system page size.
pub fn page() -> usize {
    pidfd_mem::page_size()
}

/// What the reproducers of `examples/` start from: this process opened on
/// itself, one page of its heap granted read-only at mem offset 0, and a
/// mirror of it. Panics on failure (reproducers only).
pub struct SelfMirror {
    /// The control fd.
    pub ctl: pidfd_mem::Control,
    /// The access fd.
    pub mem: pidfd_mem::Access,
    /// The mirror of the page.
    pub mirror: pidfd_mem::Mirror,
    /// A pidfd of this process.
    pub pidfd: std::os::fd::OwnedFd,
    _heap: Vec<u8>,
}

impl SelfMirror {
    /// See [`SelfMirror`].
    pub fn new() -> Self {
        use pidfd_mem::{pidfd_mem, pidfd_open, Grant, MemOffset, Prot, RemoteAddr};
        let p = page();
        let heap = vec![0u8; 2 * p];
        let a = (heap.as_ptr() as usize + p - 1) & !(p - 1);
        let pidfd = pidfd_open(std::process::id()).expect("pidfd_open of self");
        let (ctl, mem) = pidfd_mem(&pidfd, 0).expect("PIDFD_MEM_OPEN of self");
        ctl.map(&Grant::new(
            RemoteAddr(a as u64),
            MemOffset(0),
            p as u64,
            Prot::Read,
        ))
        .expect("PIDFD_MEM_MAP");
        let mirror = mem.mmap(MemOffset(0), p, Prot::Read).expect("mmap of mem");
        Self {
            ctl,
            mem,
            mirror,
            pidfd,
            _heap: heap,
        }
    }
}

impl Default for SelfMirror {
    fn default() -> Self {
        Self::new()
    }
}
