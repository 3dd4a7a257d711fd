//! `vmi`: VM introspection over pidfd_mem.
//!
//! A running QEMU's guest-physical memory, read and written at
//! guest-physical addresses through coherent mirrors of QEMU's own RAM
//! mappings: stores by the guest are seen at once, stores through a mirror
//! are what the guest (and QEMU's monitor) sees.
//!
//! 1. [`qmp::Qmp`] talks to QEMU's monitor (found from the pid's command
//!    line with [`qmp::Qmp::for_pid`], or given as a socket path).
//! 2. [`layout::from_monitor`] works out which guest-physical ranges are
//!    RAM or ROM and at which host addresses QEMU keeps them, from `info
//!    mtree -f`, `gpa2hva` and `info ramblock` ([`hmp`] parses them);
//!    [`layout::from_proc`] guesses without a monitor.
//! 3. [`guest::GuestMemory::open`] grants those host ranges with
//!    `pidfd_mem` (or takes QEMU's whole address space with
//!    `REMOTE_PROC_MAP`), maps them, and offers [`guest::GuestMemory::read`],
//!    [`guest::GuestMemory::write`] and [`guest::GuestMemory::find`].
//!
//! [`session::attach`] does all three for a pid or a QMP socket.
//!
//! The rules of remote memory (DESIGN.md) hold: the mirrors are accessed
//! only through the `pidfd-mem` copy functions, which turn SIGBUS (QEMU
//! exited, RAM unplugged) into errors; scans copy a chunk, then search the
//! copy.
//!
//! ```no_run
//! use vmi::guest::{Expose, Via};
//! use vmi::session::{attach, Target};
//! let s = attach(&Target::Pid { pid: 1234, monitor: true }, Expose::Grants)?;
//! let guest = &s.guest;
//! let scan = guest.find(b"Linux version ", Via::Mirror, 10)?;
//! let mut banner = [0u8; 80];
//! guest.read(scan.matches[0], &mut banner)?;
//! # Ok::<(), vmi::Error>(())
//! ```

#![warn(missing_docs)]

mod error;
pub mod guest;
pub mod hmp;
pub mod layout;
pub mod procfs;
pub mod qmp;
pub mod session;

pub use error::Error;
