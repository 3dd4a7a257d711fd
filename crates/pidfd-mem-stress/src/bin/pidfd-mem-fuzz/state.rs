//! What the fuzzer's processes share: per-operation outcome counters, the
//! failure log, and what the worker is doing now (for hang reports).

use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use pidfd_mem_stress::shm::{Counters, FailLog, SharedZeroable};
use rustix::io::Errno;

/// Operation kinds (counters and reports).
macro_rules! ops {
    ($($name:ident = $text:literal,)*) => {
        /// Operation kinds.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(usize)]
        pub enum Op { $($name,)* N }
        /// Their names.
        pub const OP_NAMES: [&str; Op::N as usize] = [$($text,)*];
    };
}

ops! {
    Open = "ioctl PIDFD_MEM_OPEN",
    Rpm = "ioctl REMOTE_PROC_MAP",
    Map = "ioctl PIDFD_MEM_MAP",
    Unmap = "ioctl PIDFD_MEM_UNMAP",
    Lock = "ioctl PIDFD_MEM_LOCK",
    IoctlOther = "ioctl (other numbers)",
    Mmap = "mmap",
    Munmap = "munmap",
    Mremap = "mremap",
    Mprotect = "mprotect",
    Madvise = "madvise",
    Msync = "msync",
    Mlock = "mlock/munlock",
    TouchLoad = "mirror load (guarded)",
    TouchStore = "mirror store (guarded)",
    TouchCopy = "mirror copy (guarded)",
    Pread = "pread",
    Pwrite = "pwrite",
    Preadv2 = "preadv2/pwritev2",
    Lseek = "lseek+read/write",
    Splice = "splice/sendfile/copy_file_range",
    ProcMem = "/proc/self/mem at mirrors",
    VmReadv = "process_vm_readv at mirrors",
    Futex = "futex on mirrors",
    BufSyscall = "mirror as syscall buffer",
    Poll = "poll/epoll",
    FdMisc = "fstat/fcntl/fadvise/ftruncate/...",
    Close = "close/dup",
    Chaos = "chaos child (unguarded touches)",
    Target = "target kill/spawn",
    Race = "racing threads",
    RaceOps = "racing thread calls",
}

/// Outcome buckets: success, then errnos.
pub const OUTCOMES: [(&str, i32); 21] = [
    ("ok", 0),
    ("EPERM", libc::EPERM),
    ("ENOENT", libc::ENOENT),
    ("ESRCH", libc::ESRCH),
    ("EINTR", libc::EINTR),
    ("EIO", libc::EIO),
    ("EBADF", libc::EBADF),
    ("EAGAIN", libc::EAGAIN),
    ("ENOMEM", libc::ENOMEM),
    ("EACCES", libc::EACCES),
    ("EFAULT", libc::EFAULT),
    ("EBUSY", libc::EBUSY),
    ("EEXIST", libc::EEXIST),
    ("ENODEV", libc::ENODEV),
    ("EINVAL", libc::EINVAL),
    ("ENOTTY", libc::ENOTTY),
    ("ESPIPE", libc::ESPIPE),
    ("EOVERFLOW", libc::EOVERFLOW),
    ("EOPNOTSUPP", libc::EOPNOTSUPP),
    ("SIGBUS", -1),
    ("other", -2),
];

const NO: usize = OUTCOMES.len();
const NC: usize = Op::N as usize * NO;

/// Bytes of the "current operation" text.
pub const NOW_LEN: usize = 200;

/// Everything shared.
pub struct FShared {
    /// Calls per (operation, outcome).
    pub counts: Counters<NC>,
    /// Operations done.
    pub ops: AtomicU64,
    /// Episodes run.
    pub episodes: AtomicU64,
    /// Oracle failures and unexpected deaths.
    pub fails: FailLog,
    now_len: AtomicU64,
    now: [AtomicU8; NOW_LEN],
}

// SAFETY: only atomics and SharedZeroable members.
unsafe impl SharedZeroable for FShared {}

/// The bucket of an errno.
pub fn bucket(errno: i32) -> usize {
    OUTCOMES
        .iter()
        .position(|&(_, e)| e == errno)
        .unwrap_or(NO - 1)
}

impl FShared {
    /// Counts one call of `op` with outcome `Ok` or `Err(errno)`.
    pub fn count(&self, op: Op, r: Result<(), Errno>) {
        let b = match r {
            Ok(()) => 0,
            Err(e) => bucket(e.raw_os_error()),
        };
        self.counts.inc(op as usize * NO + b);
    }

    /// Counts one SIGBUS caught in a guarded access.
    pub fn count_sigbus(&self, op: Op) {
        self.counts.inc(op as usize * NO + NO - 2);
    }

    /// Per-operation totals, as report lines.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, name) in OP_NAMES.iter().enumerate() {
            let row: Vec<(usize, u64)> = (0..NO)
                .map(|b| (b, self.counts.get(i * NO + b)))
                .filter(|&(_, n)| n > 0)
                .collect();
            let total: u64 = row.iter().map(|&(_, n)| n).sum();
            if total == 0 {
                out.push(format!("{name}: 0"));
                continue;
            }
            let parts: Vec<String> = row
                .iter()
                .map(|&(b, n)| format!("{} {n}", OUTCOMES[b].0))
                .collect();
            out.push(format!("{name}: {total} ({})", parts.join(", ")));
        }
        out
    }

    /// Whether some counter holds an impossible value (something wrote
    /// into this shared state).
    pub fn corrupted(&self) -> bool {
        (0..NC).any(|i| self.counts.get(i) > 1 << 48)
    }

    /// Records what the worker is about to do.
    pub fn set_now(&self, s: &str) {
        let b = s.as_bytes();
        let n = b.len().min(NOW_LEN);
        self.now_len.store(0, Ordering::Release);
        for (d, c) in self.now.iter().zip(&b[..n]) {
            d.store(*c, Ordering::Relaxed);
        }
        self.now_len.store(n as u64, Ordering::Release);
    }

    /// What the worker said it was doing last.
    pub fn now(&self) -> String {
        let n = self.now_len.load(Ordering::Acquire) as usize;
        let b: Vec<u8> = self.now[..n]
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        String::from_utf8_lossy(&b).into_owned()
    }
}
