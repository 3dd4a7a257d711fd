//! Reproducer: KASAN slab-use-after-free in `pidfd_mem_zap()` (found by
//! pidfd-mem-stress on the 6.12 debug kernel, right after the lockdep
//! report of `repro_thp_split_lockdep`).
//!
//! `pidfd_mem_notifier_map()` (kmod/grant.c, CONFIG_LOCKDEP) walks
//! `current->held_locks` and dereferences each entry's `instance->name`.
//! Once lockdep has reported anything it turns itself off
//! (`debug_locks_off()`): from then on lock releases are not recorded, so
//! `held_locks[0..lockdep_depth)` keeps whatever each task held at that
//! moment, including locks inside objects freed since.
//!
//! Here T (this process) grants a page of its own and forks, in a loop:
//! fork holds the child mm's mmap_lock (dup_mmap). A helper process turns
//! lockdep off meanwhile (the THP split inversion). If T was inside
//! dup_mmap at that moment, its frozen `held_locks` names the child's
//! mmap_lock; the child exits and its mm_struct is freed; T's next
//! copy-on-write store invalidates its grant, and the walk reads the freed
//! mm_struct.
//!
//! ```text
//! cargo build --release -p pidfd-mem-stress --examples
//! cargo xtask run --kernel .../bzImage --kdir ... -- target/release/examples/repro_held_locks_uaf
//! ```

use std::time::{Duration, Instant};

use pidfd_mem::{pidfd_mem, pidfd_open, Grant, MemOffset, Prot, RemoteAddr};
use pidfd_mem_stress::sys::mmap_anon;

fn thp_split_with_grant() {
    const HUGE: usize = 2 << 20;
    let big = mmap_anon(2 * HUGE, libc::PROT_READ | libc::PROT_WRITE, 0).unwrap();
    let a = (big as usize + HUGE - 1) & !(HUGE - 1);
    // SAFETY: our own mapping.
    unsafe {
        libc::madvise(a as *mut _, HUGE, libc::MADV_HUGEPAGE);
        core::ptr::write_bytes(a as *mut u8, 1, HUGE);
    }
    let (ctl, _mem) = pidfd_mem(pidfd_open(std::process::id()).unwrap(), 0).unwrap();
    ctl.map(&Grant::new(
        RemoteAddr(a as u64),
        MemOffset(0),
        HUGE as u64,
        Prot::Read,
    ))
    .unwrap();
    // SAFETY: our own region.
    unsafe { libc::munmap((a + HUGE / 2) as *mut _, HUGE / 2) };
}

fn main() {
    let page = pidfd_mem::page_size();
    // SAFETY: a fresh private page.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            page,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    } as *mut u64;
    let (ctl, _mem) = pidfd_mem(pidfd_open(std::process::id()).unwrap(), 0).unwrap();
    ctl.map(&Grant::new(
        RemoteAddr(p as u64),
        MemOffset(0),
        page as u64,
        Prot::Read,
    ))
    .unwrap();
    // SAFETY: fork of a single-threaded process.
    let helper = unsafe { libc::fork() };
    if helper == 0 {
        std::thread::sleep(Duration::from_millis(1500));
        thp_split_with_grant();
        // SAFETY: leaving the helper.
        unsafe { libc::_exit(0) };
    }
    let end = Instant::now() + Duration::from_secs(8);
    let mut n = 0u64;
    while Instant::now() < end {
        // SAFETY: single-threaded; the child only exits.
        let c = unsafe { libc::fork() };
        if c == 0 {
            // SAFETY: leaving the child.
            unsafe { libc::_exit(0) };
        }
        // SAFETY: reaping our child, then a copy-on-write store into our
        // own granted page (invalidates the grant: pidfd_mem_zap runs).
        unsafe {
            libc::waitpid(c, core::ptr::null_mut(), 0);
            p.write_volatile(n);
        }
        n += 1;
    }
    // SAFETY: reaping the helper.
    unsafe { libc::waitpid(helper, core::ptr::null_mut(), 0) };
    println!("# {n} fork + copy-on-write rounds under a grant");
}
