//! `pidfd-mem`: coherent, zero-copy access to another process's memory.
//!
//! Rust bindings for the `pidfd_mem` kernel module (`kmod/`), whose ABI is
//! `include/uapi/linux/pidfd_mem.h` and whose behaviour is the contract
//! `shared/spec/pidfd_mem.md`; section ids (O1, M1, A2, ...) below are that
//! contract's.
//!
//! - [`pidfd_mem`] (`PIDFD_MEM_OPEN` on `/dev/pidfd_mem`) gives a control
//!   fd ([`Control`]) and an access fd ([`Access`]) for a target process T
//!   over which the caller has ptrace-attach rights (O1).
//! - [`Control::map`] grants windows of T's address space at offsets of
//!   mem (M1), [`Control::unmap`] revokes them (U1), [`Control::lock`]
//!   freezes the set (K1).
//! - [`Access::mmap`] maps a window as a [`Mirror`] (A1); [`Access::read_at`]
//!   and [`Access::write_at`] copy with `pread`/`pwrite` (A3);
//!   [`Access::poll_exited`] tells when T is gone (A4).
//! - [`remote_proc_map`] is the legacy whole-address-space mode (R1).
//! - [`pass`] sends the fds to other processes with `SCM_RIGHTS`, alone or
//!   with a payload in the same message.
//! - [`process_vm`] copies with `process_vm_readv`/`process_vm_writev`, for
//!   when the module is not loaded ([`module_loaded`]; [`MODULE_HELP`] says
//!   how to get it).
//! - [`sys`] is the raw ABI, for tests that must send what the safe API
//!   refuses to build.
//!
//! # Rules for remote memory
//!
//! A mirror shows T's pages as T maps them *at the moment of access*
//! (M2, C1, C3). T can change them at any time, and any access may raise
//! SIGBUS (A2: no grant, nothing mapped, wrong protection, T exited or
//! exec'd). Hence:
//!
//! 1. **Never a Rust reference.** This crate never makes `&[u8]`, `&mut
//!    [u8]` or `&T` over a mirror, and neither should you: the compiler
//!    would assume the bytes cannot change. Access goes through
//!    [`Mirror::copy_to`] / [`Mirror::copy_from`] / [`Mirror::read_obj`] /
//!    [`Mirror::write_obj`], the atomics ([`Mirror::load_u64`],
//!    [`Mirror::compare_exchange_u64`], ...), or a
//!    [`vm_memory::VolatileSlice`] from [`Mirror::as_volatile_slice`].
//! 2. **Copy first, then validate.** Read a structure into local memory
//!    once, check it there, and use only the checked copy: reading a field
//!    twice from the mirror may give two different values.
//! 3. **SIGBUS is data.** The copy and atomic methods of [`Mirror`] turn
//!    SIGBUS into [`MirrorError::Fault`] (see below). Raw pointers
//!    ([`Mirror::as_ptr`]) and volatile slices are not guarded: a fault there
//!    kills the process, as for any mapping.
//! 4. **Fds are capabilities** (P1, P2): whoever holds mem may read (and,
//!    where granted, write) the windows; whoever holds ctl may change the
//!    grants until [`Control::lock`]. Both are close-on-exec.
//!
//! # How SIGBUS in a copy becomes an error
//!
//! On x86_64, each guarded operation (the copies and the atomics of
//! [`Mirror`]) runs a small assembly routine whose one faulting instruction
//! (`rep movsb`, `mov`, `xchg`, `lock cmpxchg`) is listed in a fixup table
//! with the address to resume at, as the kernel does for `copy_from_user`.
//! A SIGBUS handler (`SA_SIGINFO | SA_ONSTACK`) is installed once per
//! process, on the first guarded operation. On SIGBUS it checks that the
//! signal is a real fault (`si_code > 0`), that this thread is inside a
//! guarded operation whose declared range (a thread-local) contains the
//! fault address `si_addr`, and that the interrupted instruction is one of
//! the table's; then it records `si_addr`, moves the saved instruction
//! pointer to the fixup and returns. The routine returns how much it did
//! (`rep movsb` leaves the count left in `rcx`), and the method returns
//! [`MirrorError::Fault`] with the faulting offset and the bytes copied.
//!
//! Nothing is remapped: the mirror is unchanged, not poisoned, and may be
//! used again (the next access shows whatever T maps then). Other threads
//! using the same mirror are not affected.
//!
//! Every other SIGBUS is passed on: to the handler installed before ours,
//! or, if there was none, by restoring the default action so that the
//! process dies of SIGBUS exactly as without this crate. (Code that replaces
//! the SIGBUS handler later disables the catching.)
//!
//! Other architectures use plain volatile copies and atomics without
//! catching ([`Mirror::catches_sigbus`] says which).
//!
//! The alternative of mapping a zero page over the faulting page from the
//! handler was rejected: it silently shows zeros (stale data, against A2)
//! to every other thread that shares the mirror.
//!
//! # Example
//!
//! ```no_run
//! use pidfd_mem::{pidfd_mem, pidfd_open, Grant, MemOffset, Prot, RemoteAddr};
//!
//! // T exposes one page of its own memory (T == caller is allowed, O1/A6).
//! let mut page = vec![0u8; 4096 * 2];
//! let addr = (page.as_mut_ptr() as usize + 4095) & !4095;
//! let (ctl, mem) = pidfd_mem(pidfd_open(std::process::id())?, 0)?;
//! ctl.map(&Grant::new(RemoteAddr(addr as u64), MemOffset(0), 4096, Prot::ReadWrite))?;
//! ctl.lock()?;
//!
//! let mirror = mem.mmap(MemOffset(0), 4096, Prot::ReadWrite)?;
//! mirror.copy_from(0, b"hello")?;          // T sees it at once (C1)
//! let mut buf = [0u8; 5];
//! mirror.copy_to(0, &mut buf)?;            // copy first, then validate
//! assert_eq!(&buf, b"hello");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

mod access;
mod control;
mod error;
mod mirror;
pub mod pass;
pub mod process_vm;
pub mod sys;
mod types;

pub use access::Access;
pub use control::{module_loaded, pidfd_mem, pidfd_open, remote_proc_map, Control};
pub use error::{ErrnoName, Error, Op, MODULE_HELP};
pub use mirror::{Mirror, MirrorError};
pub use pass::PassError;
pub use types::{Grant, MemOffset, Prot, RemoteAddr};

/// Re-exported: [`Error::errno`] returns its [`rustix::io::Errno`].
pub use rustix;
/// Re-exported so that users name the same types ([`vm_memory::VolatileSlice`],
/// [`vm_memory::ByteValued`]) as this crate.
pub use vm_memory;

/// The system page size (`sysconf(_SC_PAGESIZE)`), the unit of grants.
pub fn page_size() -> usize {
    rustix::param::page_size()
}
