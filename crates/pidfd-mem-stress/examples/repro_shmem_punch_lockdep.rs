//! Reproducer: lockdep "possible recursive locking detected" on
//! `mapping->i_mmap_rwsem` when T punches a hole in (or truncates) shared
//! file memory inside a granted range (found by pidfd-mem-stress on the
//! 6.12 debug kernel).
//!
//! T (this process) maps a memfd shared, touches it, grants it to itself,
//! and calls MADV_REMOVE on one page: `shmem_fallocate()` ->
//! `unmap_mapping_range(memfd)` holds the memfd's `i_mmap_rwsem` while
//! zapping T's PTEs, which runs the grant's interval notifier, whose zap
//! takes the access inode's `i_mmap_rwsem`: the same lock class, nested
//! without annotation. ftruncate() of the memfd takes the same path.
//!
//! ```text
//! cargo build --release -p pidfd-mem-stress --examples
//! cargo xtask run --kernel .../bzImage --kdir ... -- target/release/examples/repro_shmem_punch_lockdep
//! ```

use std::os::fd::AsRawFd;

use pidfd_mem::{pidfd_mem, pidfd_open, Grant, MemOffset, Prot, RemoteAddr};

fn main() {
    let page = pidfd_mem::page_size();
    let fd = rustix::fs::memfd_create("repro", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    rustix::fs::ftruncate(&fd, 4 * page as u64).unwrap();
    // SAFETY: a fresh shared mapping of our memfd.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            4 * page,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    // SAFETY: our own mapping.
    unsafe { core::ptr::write_bytes(p.cast::<u8>(), 1, 4 * page) };
    let (ctl, _mem) = pidfd_mem(pidfd_open(std::process::id()).unwrap(), 0).unwrap();
    ctl.map(&Grant::new(
        RemoteAddr(p as u64),
        MemOffset(0),
        4 * page as u64,
        Prot::Read,
    ))
    .unwrap();
    // SAFETY: punches a hole in one page of our own shared mapping.
    let r = unsafe { libc::madvise(p.cast::<u8>().add(page).cast(), page, libc::MADV_REMOVE) };
    assert_eq!(r, 0);
    println!("# MADV_REMOVE of a granted shmem page done; a lockdep kernel reports recursive i_mmap_rwsem now");
}
