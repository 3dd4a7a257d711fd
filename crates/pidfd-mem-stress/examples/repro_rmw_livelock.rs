//! Reproducer: a read-modify-write store through a writable mirror never
//! completes when the CPU performs it as a load followed by a store (QEMU
//! TCG with one vCPU emulates `xchg`/`lock cmpxchg` that way; arm64
//! without LSE atomics does it with an LDXR/STXR loop). Found by
//! pidfd-mem-fuzz under `cargo xtask run --smp 1`.
//!
//! The load faults first: a read fault installs the page read-only. The
//! store then faults on the read-only PTE: `pfn_mkwrite` zaps the PTE so
//! that the store comes back as a write fault ... but the instruction
//! restarts from its load, which faults on the now missing PTE as a read
//! again, and so on forever (the task spins in the fault path; the bench's
//! watchdog reports it).
//!
//! ```text
//! cargo build --release -p pidfd-mem-stress --examples
//! cargo xtask run --smp 1 --timeout 120 -- target/release/examples/repro_rmw_livelock
//! ```
//!
//! With two vCPUs (the default) TCG performs the atomic with a write probe
//! first and the store completes.

use std::sync::atomic::Ordering::SeqCst;

use pidfd_mem::{pidfd_mem, pidfd_open, Grant, MemOffset, Prot, RemoteAddr};
use pidfd_mem_stress::sys::mmap_anon;

fn main() {
    let page = pidfd_mem::page_size();
    let p = mmap_anon(page, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_POPULATE).unwrap();
    let (ctl, mem) = pidfd_mem(pidfd_open(std::process::id()).unwrap(), 0).unwrap();
    ctl.map(&Grant::new(
        RemoteAddr(p as u64),
        MemOffset(0),
        page as u64,
        Prot::ReadWrite,
    ))
    .unwrap();
    let m = mem.mmap(MemOffset(0), page, Prot::ReadWrite).unwrap();
    println!("# store through the mirror (xchg)...");
    m.store_u64(0, 42, SeqCst).unwrap();
    println!("# plain store done; compare-exchange (lock cmpxchg) ...");
    let _ = m.compare_exchange_u64(8, 0, 7, SeqCst, SeqCst).unwrap();
    // SAFETY: reading our own page.
    let v = unsafe { (p as *const u64).read_volatile() };
    println!("# done: T sees {v}");
}
