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
