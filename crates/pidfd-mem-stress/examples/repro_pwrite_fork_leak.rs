//! Probe: does a `pwrite` through mem reach a child that T forked after the
//! write began (contract C2/A3: a write through mem is T's write; T's child
//! keeps the bytes it had at fork, as with process_vm_writev)?
//!
//! `pidfd_mem_rw()` takes T's pages with get_user_pages_remote() (FOLL_GET,
//! not FOLL_PIN) and copies after dropping T's mmap_lock. If T forks in that
//! window, the page is copy-on-write shared with the child, fork does not
//! know it is being written (only FOLL_PIN pins make fork copy the page for
//! the child), and the copy lands in the page both now map.
//!
//! T forks children in a loop; each child reads a word of the granted page
//! at once and again a moment later: a change means a write after its fork
//! reached it. Meanwhile the parent pwrites a counter to that word, large
//! multi-page writes so that the copy takes a while.
//!
//! ```text
//! cargo build --release -p pidfd-mem-stress --examples
//! cargo xtask run -- target/release/examples/repro_pwrite_fork_leak [SECONDS] [pvm]
//! ```
//!
//! With `pvm` the same writes go through process_vm_writev (FOLL_PIN), the
//! reference that A3 names: no child ever sees them.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use pidfd_mem::{pidfd_mem, pidfd_open, Grant, MemOffset, Prot, RemoteAddr};

const PAGES: usize = 64;

fn main() {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    // "pvm": the same writes with process_vm_writev (the reference: 0 leaks).
    let pvm = std::env::args().nth(2).as_deref() == Some("pvm");
    let page = pidfd_mem::page_size();
    // Shared flag page: T's children report leaks here.
    // SAFETY: a fresh shared mapping.
    let report = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            page,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    } as *mut u64;
    // SAFETY: a fresh private region, populated; T inherits it at the same address.
    let region = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            PAGES * page,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
            -1,
            0,
        )
    } as usize;
    let (r, w) = rustix::pipe::pipe().unwrap();
    // SAFETY: single-threaded fork; T only forks and its children only read.
    let t = unsafe { libc::fork() };
    if t == 0 {
        drop(r);
        let _ =
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
        let _ = rustix::io::write(&w, b"x");
        loop {
            // SAFETY: fork of a single-threaded process; the child reads
            // its own memory, writes the shared report page, and exits.
            let c = unsafe { libc::fork() };
            if c == 0 {
                let last = (region + (PAGES - 1) * page) as *const u64;
                // SAFETY: our copy of the region, mapped.
                let a = unsafe { last.read_volatile() };
                let end = Instant::now() + Duration::from_millis(2);
                while Instant::now() < end {}
                // SAFETY: as above.
                let b = unsafe { last.read_volatile() };
                if a != b {
                    // SAFETY: the shared report page.
                    unsafe {
                        report.write_volatile(report.read_volatile() + 1);
                        report.add(1).write_volatile(a);
                        report.add(2).write_volatile(b);
                    }
                }
                // SAFETY: leaving the child.
                unsafe { libc::_exit(0) };
            }
            // SAFETY: reaping our child.
            unsafe { libc::waitpid(c, core::ptr::null_mut(), 0) };
        }
    }
    drop(w);
    let mut b = [0u8; 1];
    rustix::io::read(&r, &mut b).unwrap();
    let (ctl, mem) = pidfd_mem(pidfd_open(t as u32).unwrap(), 0).unwrap();
    ctl.map(&Grant::new(
        RemoteAddr(region as u64),
        MemOffset(0),
        (PAGES * page) as u64,
        Prot::ReadWrite,
    ))
    .unwrap();
    let mut buf = vec![0u8; PAGES * page];
    let end = Instant::now() + Duration::from_secs(secs);
    let mut n = 0u64;
    while Instant::now() < end {
        n += 1;
        for chunk in buf.chunks_mut(8) {
            chunk.copy_from_slice(&n.to_ne_bytes());
        }
        if pvm {
            let local = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            let remote = libc::iovec {
                iov_base: region as *mut _,
                iov_len: buf.len(),
            };
            // SAFETY: one local iovec over our buffer; the remote one is T's region.
            unsafe { libc::process_vm_writev(t, &local, 1, &remote, 1, 0) };
        } else {
            let _ = rustix::io::pwrite(mem.as_fd(), &buf, 0);
        }
    }
    // SAFETY: killing and reaping T.
    unsafe {
        libc::kill(t, libc::SIGKILL);
        libc::waitpid(t, core::ptr::null_mut(), 0);
    }
    // SAFETY: the shared report page.
    let (leaks, a, bb) = unsafe {
        (
            report.read_volatile(),
            report.add(1).read_volatile(),
            report.add(2).read_volatile(),
        )
    };
    println!("# {n} pwrites of {PAGES} pages; T's children saw their copy change {leaks} times (last: {a} -> {bb})");
    if leaks > 0 {
        println!("not ok 1 c2_pwrite_does_not_reach_forked_child");
        std::process::exit(1);
    }
    println!("ok 1 c2_pwrite_does_not_reach_forked_child");
}
