//! Reproducer: lockdep "possible circular locking dependency" between
//! `anon_vma->rwsem` and `mapping->i_mmap_rwsem` when T splits a huge page
//! inside a granted range (found by pidfd-mem-stress on the 6.12 debug
//! kernel).
//!
//! T (this process) maps a 2 MiB aligned anonymous region with
//! MADV_HUGEPAGE, touches it (one THP), grants it to itself (no mirror is
//! needed), and unmaps its second half. `__split_vma` holds the region's
//! `anon_vma->rwsem` (vma_prepare) while `__split_huge_pmd` runs the
//! interval notifier, whose zap (`unmap_mapping_range` on the access inode)
//! takes `i_mmap_rwsem`: the reverse of mm's documented order
//! (i_mmap_rwsem -> anon_vma->rwsem, mm/rmap.c), which every mprotect of a
//! written file-backed private mapping records (ld.so does at start).
//!
//! ```text
//! cargo build --release -p pidfd-mem-stress --examples
//! cargo xtask run --kernel .../bzImage --kdir ... -- target/release/examples/repro_thp_split_lockdep
//! ```
//!
//! On a lockdep kernel the bench reports the splat. The same edge comes
//! from every rmap walk that invalidates under `anon_vma_lock_read` (page
//! migration and compaction, swap-out of granted pages).

use pidfd_mem::{pidfd_mem, pidfd_open, Grant, MemOffset, Prot, RemoteAddr};
use pidfd_mem_stress::sys::mmap_anon;

fn main() {
    const HUGE: usize = 2 << 20;
    let big = mmap_anon(2 * HUGE, libc::PROT_READ | libc::PROT_WRITE, 0).unwrap();
    let a = (big as usize + HUGE - 1) & !(HUGE - 1);
    // SAFETY: our own mapping; touching it makes the huge page.
    unsafe {
        libc::madvise(a as *mut _, HUGE, libc::MADV_HUGEPAGE);
        core::ptr::write_bytes(a as *mut u8, 1, HUGE);
    }
    let thp = std::fs::read_to_string("/proc/self/smaps_rollup")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("AnonHugePages:"))
                .map(str::to_string)
        })
        .unwrap_or_default();
    println!("# {thp}");
    let (ctl, _mem) = pidfd_mem(pidfd_open(std::process::id()).unwrap(), 0).unwrap();
    ctl.map(&Grant::new(
        RemoteAddr(a as u64),
        MemOffset(0),
        HUGE as u64,
        Prot::Read,
    ))
    .unwrap();
    // SAFETY: unmaps the second half of our own region: splits the VMA
    // and the huge page.
    let r = unsafe { libc::munmap((a + HUGE / 2) as *mut _, HUGE / 2) };
    assert_eq!(r, 0);
    println!("# munmap of half a granted THP done; a lockdep kernel reports the inversion now");
}
