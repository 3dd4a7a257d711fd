//! Mirrors: `mmap`s of a mem fd, accessed only through volatile copies,
//! atomics and [`VolatileSlice`].
//!
//! The mapping `unsafe` of the crate lives here and in the `guard`
//! submodule.
//!
//! SIGBUS in [`Mirror`]'s copies and atomics becomes
//! [`MirrorError::Fault`] with a fixup table, as the kernel's
//! `copy_from_user` does: each guarded operation is a small assembly
//! routine (x86_64) whose faulting instruction has a known resume address;
//! a process-wide `SA_SIGINFO | SA_ONSTACK` SIGBUS handler, installed on the
//! first guarded operation, resumes there when the fault is a real fault
//! (`si_code > 0`) inside the range this thread's guarded operation declared
//! (a thread-local), and passes every other SIGBUS on (previous handler, or
//! the default action). Nothing is remapped: the mirror is not poisoned and
//! other threads are unaffected. The crate docs say more.

mod guard;

use core::mem::size_of;
use core::ptr::NonNull;
use core::sync::atomic::Ordering;
use std::os::fd::BorrowedFd;

use rustix::io::Errno;
use rustix::mm::MapFlags;
use vm_memory::{ByteValued, VolatileSlice};

use crate::types::{MemOffset, Prot};

/// What went wrong in an access through a [`Mirror`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MirrorError {
    /// The range is not inside the mirror; nothing was accessed.
    #[error("range [{offset:#x}, +{len:#x}) is outside the mirror of {mirror_len:#x} bytes")]
    OutOfBounds {
        /// Offset in the mirror.
        offset: usize,
        /// Length asked for.
        len: usize,
        /// Length of the mirror.
        mirror_len: usize,
    },
    /// An atomic access at an offset that is not a multiple of its size;
    /// nothing was accessed.
    #[error("atomic access at mirror offset {offset:#x} is not {align}-byte aligned")]
    Unaligned {
        /// Offset in the mirror.
        offset: usize,
        /// Required alignment.
        align: usize,
    },
    /// A write into a mirror mapped [`Prot::Read`]; nothing was accessed.
    #[error("write at mirror offset {offset:#x} into a read-only mirror")]
    ReadOnly {
        /// Offset in the mirror.
        offset: usize,
    },
    /// SIGBUS during the access (contract A2): the offset has no grant, T
    /// maps nothing there or not with the access asked for, the grant
    /// forbids it, or T has exited or exec'd (U1, L2, L4). `copied` bytes at
    /// the start of the range were copied (copies only). The mirror itself
    /// is unchanged and may be used again.
    #[error(
        "SIGBUS at mirror offset {offset:#x} (mem offset {mem_offset}) after {copied} bytes: \
         no grant, nothing or no such access mapped in the target, or the target is gone \
         (contract A2)"
    )]
    Fault {
        /// Offset in the mirror of the faulting byte (`si_addr`).
        offset: usize,
        /// The same as an offset in mem.
        mem_offset: MemOffset,
        /// Bytes copied before the fault.
        copied: usize,
    },
}

/// A mirror: `mmap(NULL, len, prot, MAP_SHARED, mem, offset)` of a mem fd
/// (contract A1). Unmapped (`munmap`) on drop.
///
/// The memory belongs to the target process T and changes under us at any
/// time (contract C1, C3), so it is never exposed as a Rust reference: use
/// the fault-handled copies ([`Mirror::copy_to`], [`Mirror::read_obj`], ...),
/// the fault-handled atomics ([`Mirror::load_u64`], ...), or
/// [`Mirror::as_volatile_slice`] (whose accesses are *not* fault-handled).
/// Copy first, then validate what you copied.
#[derive(Debug)]
pub struct Mirror {
    ptr: NonNull<u8>,
    len: usize,
    offset: MemOffset,
    prot: Prot,
}

// SAFETY: a Mirror is a mapping address and a length. Every access through
// its API is a volatile copy or a hardware atomic on memory that other
// processes change concurrently anyway, so concurrent access from several
// threads adds no data race that Rust could observe: no `&`/`&mut` to the
// memory is ever created. munmap happens once, in Drop, which needs
// ownership.
unsafe impl Send for Mirror {}
// SAFETY: see `Send`: all `&self` methods only do volatile/atomic accesses.
unsafe impl Sync for Mirror {}

impl Mirror {
    /// `mmap(NULL, len, prot, MAP_SHARED, fd, offset)`.
    pub(crate) fn map(
        fd: BorrowedFd<'_>,
        offset: u64,
        len: usize,
        prot: Prot,
    ) -> Result<Self, Errno> {
        // SAFETY: a fresh mapping at an address the kernel chooses
        // (no MAP_FIXED) cannot alias any existing Rust object.
        let p = unsafe {
            rustix::mm::mmap(
                core::ptr::null_mut(),
                len,
                prot.mmap_flags(),
                MapFlags::SHARED,
                fd,
                offset,
            )
        }?;
        let Some(ptr) = NonNull::new(p.cast::<u8>()) else {
            // A mapping at address 0 cannot be represented; give it back.
            // SAFETY: we just created this mapping and nobody else knows it.
            let _ = unsafe { rustix::mm::munmap(p, len) };
            return Err(Errno::NOMEM);
        };
        Ok(Self {
            ptr,
            len,
            offset: MemOffset(offset),
            prot,
        })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the length is 0 (never, for a mirror made by
    /// [`crate::Access::mmap`]).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The mem offset this mirror starts at.
    pub fn mem_offset(&self) -> MemOffset {
        self.offset
    }

    /// The protection it was mapped with.
    pub fn prot(&self) -> Prot {
        self.prot
    }

    /// Whether SIGBUS in the copy and atomic methods becomes
    /// [`MirrorError::Fault`] on this architecture (true on x86_64; see the
    /// crate docs).
    pub const fn catches_sigbus() -> bool {
        guard::CATCHES_SIGBUS
    }

    /// The start of the mapping, raw: for benchmarks and tests that must
    /// touch the memory with their own instructions, and for `mprotect`,
    /// `mremap`, `madvise` on it.
    ///
    /// Never build a reference (`&[u8]`, `&T`) from it: the memory changes
    /// under you (C1) and may raise SIGBUS on any access (A2), which is only
    /// caught inside this type's copy and atomic methods. Do not unmap or
    /// move it while the `Mirror` lives (see [`Mirror::into_raw`]).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The mirror as a [`VolatileSlice`] (borrowing `self`): every access
    /// through it is volatile.
    ///
    /// Accesses through the slice are **not** fault-handled: where the
    /// mirror has no page to show (A2), they raise SIGBUS, which kills the
    /// process unless some handler catches it. Writes into a
    /// [`Prot::Read`] mirror raise SIGSEGV.
    pub fn as_volatile_slice(&self) -> VolatileSlice<'_> {
        // SAFETY: the mapping is `len` bytes long and stays mapped while
        // `self` is borrowed (munmap only in Drop); we never hand out
        // non-volatile access, and other processes' accesses are hardware
        // accesses to the same physical page, which volatile access
        // tolerates.
        unsafe { VolatileSlice::new(self.ptr.as_ptr(), self.len) }
    }

    /// Checks `[offset, offset+len)` and returns its start address.
    fn range(&self, offset: usize, len: usize) -> Result<*mut u8, MirrorError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(self.ptr.as_ptr().wrapping_add(offset)),
            _ => Err(MirrorError::OutOfBounds {
                offset,
                len,
                mirror_len: self.len,
            }),
        }
    }

    fn writable(&self, offset: usize) -> Result<(), MirrorError> {
        if self.prot.is_writable() {
            Ok(())
        } else {
            Err(MirrorError::ReadOnly { offset })
        }
    }

    fn fault(&self, f: guard::Fault) -> MirrorError {
        let offset = f.addr.wrapping_sub(self.ptr.as_ptr() as usize);
        MirrorError::Fault {
            offset,
            mem_offset: MemOffset(self.offset.0.wrapping_add(offset as u64)),
            copied: f.done,
        }
    }

    /// Copies `dst.len()` bytes from the mirror at `offset` into `dst`
    /// (fault-handled `rep movsb` on x86_64).
    ///
    /// # Errors
    ///
    /// [`MirrorError::Fault`] on SIGBUS (contract A2, U1, L2): `dst` then
    /// holds the first `copied` bytes; [`MirrorError::OutOfBounds`].
    ///
    /// # Example
    ///
    /// ```no_run
    /// # fn f(m: &pidfd_mem::Mirror) -> Result<(), pidfd_mem::MirrorError> {
    /// let mut buf = [0u8; 256];
    /// m.copy_to(0, &mut buf)?;
    /// // validate `buf` now: the target may change the mirror at any time
    /// # Ok(()) }
    /// ```
    pub fn copy_to(&self, offset: usize, dst: &mut [u8]) -> Result<(), MirrorError> {
        let src = self.range(offset, dst.len())?;
        // SAFETY: `src..src+len` is inside our live mapping (checked by
        // `range`), `dst` is a distinct Rust buffer of `len` bytes; SIGBUS in
        // the mirror range is caught by the guard.
        unsafe { guard::copy(dst.as_mut_ptr(), src, dst.len(), src as usize, dst.len()) }
            .map_err(|f| self.fault(f))
    }

    /// Copies `src` into the mirror at `offset` (fault-handled).
    ///
    /// # Errors
    ///
    /// [`MirrorError::ReadOnly`] for a [`Prot::Read`] mirror;
    /// [`MirrorError::Fault`] on SIGBUS (e.g. T's VMA is read-only, A2);
    /// [`MirrorError::OutOfBounds`].
    ///
    /// # Example
    ///
    /// ```no_run
    /// # fn f(m: &pidfd_mem::Mirror) -> Result<(), pidfd_mem::MirrorError> {
    /// m.copy_from(0, b"hello")?;
    /// # Ok(()) }
    /// ```
    pub fn copy_from(&self, offset: usize, src: &[u8]) -> Result<(), MirrorError> {
        let dst = self.range(offset, src.len())?;
        self.writable(offset)?;
        // SAFETY: `dst..dst+len` is inside our live, writable mapping;
        // `src` is a distinct Rust buffer; SIGBUS there is caught.
        unsafe { guard::copy(dst, src.as_ptr(), src.len(), dst as usize, src.len()) }
            .map_err(|f| self.fault(f))
    }

    /// Reads a `T` at `offset` by copying its bytes (no alignment needed).
    ///
    /// # Example
    ///
    /// ```no_run
    /// # fn f(m: &pidfd_mem::Mirror) -> Result<(), pidfd_mem::MirrorError> {
    /// let header: [u32; 4] = m.read_obj(0x40)?;
    /// # Ok(()) }
    /// ```
    pub fn read_obj<T: ByteValued>(&self, offset: usize) -> Result<T, MirrorError> {
        let mut v = T::zeroed();
        self.copy_to(offset, v.as_mut_slice())?;
        Ok(v)
    }

    /// Writes the bytes of `val` at `offset` (no alignment needed).
    ///
    /// # Example
    ///
    /// ```no_run
    /// # fn f(m: &pidfd_mem::Mirror) -> Result<(), pidfd_mem::MirrorError> {
    /// m.write_obj(0x40, 0xdead_beef_u32)?;
    /// # Ok(()) }
    /// ```
    pub fn write_obj<T: ByteValued>(&self, offset: usize, val: T) -> Result<(), MirrorError> {
        self.copy_from(offset, val.as_slice())
    }

    fn aligned<U>(&self, offset: usize) -> Result<*mut U, MirrorError> {
        let p = self.range(offset, size_of::<U>())?;
        if (p as usize) % size_of::<U>() != 0 {
            return Err(MirrorError::Unaligned {
                offset,
                align: size_of::<U>(),
            });
        }
        Ok(p.cast::<U>())
    }

    /// Atomic load of the `u64` at `offset` (8-aligned), fault-handled.
    ///
    /// On x86_64 every ordering is implemented as `SeqCst` (a `mov` load;
    /// stores are `xchg`); orderings that `AtomicU64::load` would reject are
    /// accepted, never a panic.
    ///
    /// # Example
    ///
    /// ```no_run
    /// # fn f(m: &pidfd_mem::Mirror) -> Result<(), pidfd_mem::MirrorError> {
    /// use std::sync::atomic::Ordering;
    /// let seq = m.load_u64(0, Ordering::Acquire)?;
    /// # Ok(()) }
    /// ```
    pub fn load_u64(&self, offset: usize, _order: Ordering) -> Result<u64, MirrorError> {
        let p = self.aligned::<u64>(offset)?;
        // SAFETY: `p` is aligned and inside our live mapping.
        unsafe { guard::load_u64(p) }.map_err(|f| self.fault(f))
    }

    /// Atomic store of `val` at `offset` (8-aligned), fault-handled (SeqCst).
    ///
    /// # Example
    ///
    /// ```no_run
    /// # fn f(m: &pidfd_mem::Mirror) -> Result<(), pidfd_mem::MirrorError> {
    /// m.store_u64(0, 42, std::sync::atomic::Ordering::Release)?;
    /// # Ok(()) }
    /// ```
    pub fn store_u64(&self, offset: usize, val: u64, _order: Ordering) -> Result<(), MirrorError> {
        let p = self.aligned::<u64>(offset)?;
        self.writable(offset)?;
        // SAFETY: `p` is aligned and inside our live, writable mapping.
        unsafe { guard::store_u64(p, val) }.map_err(|f| self.fault(f))
    }

    /// Atomic compare-and-exchange at `offset` (8-aligned), fault-handled
    /// (`lock cmpxchg`, SeqCst). `Ok(Ok(previous))` if it stored `new`,
    /// `Ok(Err(found))` if the value was not `current`.
    ///
    /// # Example
    ///
    /// ```no_run
    /// # fn f(m: &pidfd_mem::Mirror) -> Result<(), pidfd_mem::MirrorError> {
    /// use std::sync::atomic::Ordering::SeqCst;
    /// let took_lock = m.compare_exchange_u64(0, 0, 1, SeqCst, SeqCst)?.is_ok();
    /// # Ok(()) }
    /// ```
    pub fn compare_exchange_u64(
        &self,
        offset: usize,
        current: u64,
        new: u64,
        _success: Ordering,
        _failure: Ordering,
    ) -> Result<Result<u64, u64>, MirrorError> {
        let p = self.aligned::<u64>(offset)?;
        self.writable(offset)?;
        // SAFETY: `p` is aligned and inside our live, writable mapping.
        let found = unsafe { guard::cmpxchg_u64(p, current, new) }.map_err(|f| self.fault(f))?;
        Ok(if found == current {
            Ok(found)
        } else {
            Err(found)
        })
    }

    /// Atomic load of the `u32` at `offset` (4-aligned); see
    /// [`Mirror::load_u64`].
    pub fn load_u32(&self, offset: usize, _order: Ordering) -> Result<u32, MirrorError> {
        let p = self.aligned::<u32>(offset)?;
        // SAFETY: `p` is aligned and inside our live mapping.
        unsafe { guard::load_u32(p) }.map_err(|f| self.fault(f))
    }

    /// Atomic store of the `u32` at `offset` (4-aligned); see
    /// [`Mirror::store_u64`].
    pub fn store_u32(&self, offset: usize, val: u32, _order: Ordering) -> Result<(), MirrorError> {
        let p = self.aligned::<u32>(offset)?;
        self.writable(offset)?;
        // SAFETY: `p` is aligned and inside our live, writable mapping.
        unsafe { guard::store_u32(p, val) }.map_err(|f| self.fault(f))
    }

    /// Atomic compare-and-exchange of a `u32` (4-aligned); see
    /// [`Mirror::compare_exchange_u64`].
    pub fn compare_exchange_u32(
        &self,
        offset: usize,
        current: u32,
        new: u32,
        _success: Ordering,
        _failure: Ordering,
    ) -> Result<Result<u32, u32>, MirrorError> {
        let p = self.aligned::<u32>(offset)?;
        self.writable(offset)?;
        // SAFETY: `p` is aligned and inside our live, writable mapping.
        let found = unsafe { guard::cmpxchg_u32(p, current, new) }.map_err(|f| self.fault(f))?;
        Ok(if found == current {
            Ok(found)
        } else {
            Err(found)
        })
    }

    /// Gives up ownership of the mapping without unmapping it: returns its
    /// start and length. The caller must `munmap` it (tests use this to
    /// `mremap` or split a mirror, contract A1).
    pub fn into_raw(self) -> (NonNull<u8>, usize) {
        let me = core::mem::ManuallyDrop::new(self);
        (me.ptr, me.len)
    }

    /// Takes ownership of a mapping of a mem fd, e.g. one moved by `mremap`.
    ///
    /// # Safety
    ///
    /// `[ptr, ptr+len)` is a `MAP_SHARED` mapping of a mem fd (or another
    /// file) at mem offset `offset`, mapped with `prot`, owned by nobody
    /// else (it is unmapped on drop), and never accessed through Rust
    /// references.
    pub unsafe fn from_raw(ptr: NonNull<u8>, len: usize, offset: MemOffset, prot: Prot) -> Self {
        Self {
            ptr,
            len,
            offset,
            prot,
        }
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        // SAFETY: we own this mapping of `len` bytes; no reference into it
        // exists (only volatile slices borrowing `self`, now gone).
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
