//! State shared by every process of a run: a `MAP_SHARED | MAP_ANONYMOUS`
//! mapping made before the first fork, holding only atomics, so that
//! targets, mappers, their children and the supervisor all see one copy.
//! Nothing here allocates, so that a child forked from a multi-threaded
//! process may use it.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};

/// Types whose all-zero bytes are a valid value and which may be shared
/// between processes (only atomics inside).
///
/// # Safety
///
/// The type must be valid when all its bytes are zero, contain no pointers
/// or references, and be safe to access concurrently through `&Self` (only
/// atomics or other `SharedZeroable` fields).
pub unsafe trait SharedZeroable: Sync {}

// SAFETY: an atomic integer is valid at zero and made for concurrent access.
unsafe impl SharedZeroable for AtomicU64 {}
// SAFETY: as above.
unsafe impl SharedZeroable for AtomicU8 {}
// SAFETY: an array of such types is such a type.
unsafe impl<T: SharedZeroable, const N: usize> SharedZeroable for [T; N] {}

/// Maps a zeroed `T` in memory shared with every child forked afterwards.
/// The mapping is never unmapped (it lives as long as the process).
pub fn shared<T: SharedZeroable>() -> &'static T {
    let len = core::mem::size_of::<T>().max(1);
    // SAFETY: a fresh shared anonymous mapping at an address the kernel
    // chooses aliases nothing.
    let p = unsafe {
        rustix::mm::mmap_anonymous(
            core::ptr::null_mut(),
            len,
            rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
            rustix::mm::MapFlags::SHARED,
        )
    }
    .expect("mmap of the shared state");
    assert_eq!(p as usize % core::mem::align_of::<T>(), 0);
    // SAFETY: the mapping is zero-filled, page aligned, `len` bytes long and
    // never unmapped; all-zero is a valid `T` (SharedZeroable) and every
    // access goes through atomics.
    unsafe { &*p.cast::<T>() }
}

/// A `fmt::Write` into a fixed buffer; output beyond it is dropped.
pub struct FixedBuf<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> FixedBuf<N> {
    /// An empty buffer.
    pub const fn new() -> Self {
        Self {
            buf: [0; N],
            len: 0,
        }
    }

    /// The bytes written.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl<const N: usize> Default for FixedBuf<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Write for FixedBuf<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = N - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Bytes kept per failure message.
pub const FAIL_TEXT: usize = 480;
/// Failure messages kept (later ones are only counted).
pub const FAIL_SLOTS: usize = 24;

/// One kept failure message.
pub struct FailSlot {
    len: AtomicU64,
    text: [AtomicU8; FAIL_TEXT],
}

// SAFETY: only atomics.
unsafe impl SharedZeroable for FailSlot {}

/// Failures reported by any process of the run.
pub struct FailLog {
    count: AtomicU64,
    slots: [FailSlot; FAIL_SLOTS],
}

// SAFETY: only atomics.
unsafe impl SharedZeroable for FailLog {}

impl FailLog {
    /// Records a failure (allocation-free; safe in a forked child of a
    /// multi-threaded process). Also echoes it on stderr at once.
    pub fn record(&self, args: fmt::Arguments<'_>) {
        let mut b = FixedBuf::<FAIL_TEXT>::new();
        let _ = b.write_fmt(args);
        let i = self.count.fetch_add(1, Ordering::SeqCst) as usize;
        let bytes = b.as_bytes();
        if i < FAIL_SLOTS {
            let slot = &self.slots[i];
            for (d, s) in slot.text.iter().zip(bytes) {
                d.store(*s, Ordering::Relaxed);
            }
            slot.len.store(bytes.len() as u64 + 1, Ordering::Release);
        }
        // SAFETY: write(2) of a valid buffer to stderr; no allocation.
        unsafe {
            libc::write(2, b"FAIL: ".as_ptr().cast(), 6);
            libc::write(2, bytes.as_ptr().cast(), bytes.len());
            libc::write(2, b"\n".as_ptr().cast(), 1);
        }
    }

    /// How many failures were recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    /// The kept messages.
    pub fn messages(&self) -> Vec<String> {
        let n = (self.count() as usize).min(FAIL_SLOTS);
        (0..n)
            .map(|i| {
                let slot = &self.slots[i];
                let len = slot.len.load(Ordering::Acquire);
                if len == 0 {
                    return "(message still being written)".to_string();
                }
                let bytes: Vec<u8> = slot.text[..(len - 1) as usize]
                    .iter()
                    .map(|b| b.load(Ordering::Relaxed))
                    .collect();
                String::from_utf8_lossy(&bytes).into_owned()
            })
            .collect()
    }
}

/// Records a failure in a [`FailLog`] with `format_args!` syntax.
#[macro_export]
macro_rules! failure {
    ($log:expr, $($fmt:tt)+) => {
        $log.record(format_args!($($fmt)+))
    };
}

/// Counters in shared memory, indexed by a program's own enum.
pub struct Counters<const N: usize> {
    c: [AtomicU64; N],
}

// SAFETY: only atomics.
unsafe impl<const N: usize> SharedZeroable for Counters<N> {}

impl<const N: usize> Counters<N> {
    /// Adds `n` to counter `i`.
    pub fn add(&self, i: usize, n: u64) {
        self.c[i].fetch_add(n, Ordering::Relaxed);
    }

    /// Adds 1 to counter `i`.
    pub fn inc(&self, i: usize) {
        self.add(i, 1);
    }

    /// Raises counter `i` to at least `v`.
    pub fn max(&self, i: usize, v: u64) {
        self.c[i].fetch_max(v, Ordering::Relaxed);
    }

    /// The value of counter `i`.
    pub fn get(&self, i: usize) -> u64 {
        self.c[i].load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_log_keeps_messages() {
        let log: &FailLog = shared();
        failure!(log, "one {}", 1);
        failure!(log, "two {:#x}", 2);
        assert_eq!(log.count(), 2);
        assert_eq!(log.messages(), vec!["one 1".to_string(), "two 0x2".into()]);
    }

    #[test]
    fn fixed_buf_truncates() {
        let mut b = FixedBuf::<4>::new();
        let _ = write!(b, "abcdef");
        assert_eq!(b.as_bytes(), b"abcd");
    }
}
