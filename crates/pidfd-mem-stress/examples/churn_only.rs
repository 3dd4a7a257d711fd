//! Diagnostic: the fuzzer's churning target alone (mmap/munmap/mprotect/
//! madvise/mremap/fork on its own anonymous memory), without pidfd_mem, for
//! N seconds. Used to tell whether user-space faults seen in the fuzzer's
//! guest logs come from the module or from the churn itself.
use std::time::{Duration, Instant};

fn main() {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let p = 4096usize;
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    // SAFETY: a fresh private mapping.
    let a = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            64 * p,
            rw,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    } as usize;
    let mut kids = Vec::new();
    for k in 0..3u64 {
        // SAFETY: single-threaded fork.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let end = Instant::now() + Duration::from_secs(secs);
            let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ k;
            let mut next = || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            while Instant::now() < end {
                let i = (next() % 60) as usize;
                let len = (1 + next() % 4) as usize * p;
                let at = a + i * p;
                // SAFETY: our own arena pages, restored read-write.
                unsafe {
                    match next() % 8 {
                        0 => {
                            libc::munmap(at as *mut _, len);
                            libc::mmap(
                                at as *mut _,
                                len,
                                rw,
                                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                                -1,
                                0,
                            );
                        }
                        1 => {
                            libc::mprotect(at as *mut _, len, libc::PROT_READ);
                            libc::mprotect(at as *mut _, len, rw);
                        }
                        2 => {
                            let adv = [libc::MADV_DONTNEED, libc::MADV_FREE, 21, 20]
                                [(next() % 4) as usize];
                            libc::madvise(at as *mut _, len, adv);
                        }
                        4 => {
                            let q = libc::mmap(
                                core::ptr::null_mut(),
                                len,
                                libc::PROT_NONE,
                                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                                -1,
                                0,
                            );
                            if q != libc::MAP_FAILED {
                                let r = libc::mremap(
                                    at as *mut _,
                                    len,
                                    len,
                                    libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                                    q,
                                );
                                if r != libc::MAP_FAILED {
                                    libc::mremap(
                                        q,
                                        len,
                                        len,
                                        libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                                        at as *mut libc::c_void,
                                    );
                                } else {
                                    libc::munmap(q, len);
                                }
                            }
                        }
                        3 => {
                            let c = libc::fork();
                            if c == 0 {
                                libc::_exit(0);
                            }
                            if c > 0 {
                                libc::waitpid(c, core::ptr::null_mut(), 0);
                            }
                        }
                        _ => (at as *mut u64).write_volatile(next()),
                    }
                }
            }
            // SAFETY: leaving the child.
            unsafe { libc::_exit(0) };
        }
        kids.push(pid);
    }
    for k in kids {
        // SAFETY: reaping our children.
        unsafe { libc::waitpid(k, core::ptr::null_mut(), 0) };
    }
    println!("# churn done");
}
