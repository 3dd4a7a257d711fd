//! Address newtypes, protections and grants.

use core::fmt;

use crate::sys;

/// An address in the target process T's address space (contract §1:
/// `pidfd_mem_map.address`).
///
/// It is only a number here: it means nothing in the caller's own address
/// space, and this crate never turns it into a pointer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RemoteAddr(pub u64);

impl RemoteAddr {
    /// The address of `ptr` taken as an address of T; for the case where T
    /// is the caller itself or a fork of it (contract A6), where addresses
    /// coincide.
    pub fn from_ptr<P>(ptr: *const P) -> Self {
        Self(ptr as usize as u64)
    }

    /// The address as a number.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// This address plus `delta`, or `None` on overflow.
    pub const fn checked_add(self, delta: u64) -> Option<Self> {
        match self.0.checked_add(delta) {
            Some(a) => Some(Self(a)),
            None => None,
        }
    }
}

impl From<u64> for RemoteAddr {
    fn from(v: u64) -> Self {
        Self(v)
    }
}

impl fmt::Display for RemoteAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// An offset in a mem fd: the file position that `mmap`, `pread` and
/// `pwrite` take, and `pidfd_mem_map.offset` (contract §1, M1, A3).
///
/// The kernel takes it as a signed 64-bit `off_t`; values above `i64::MAX`
/// are refused on the Rust side with [`crate::Error::OutOfRange`] because
/// they cannot be sent faithfully.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemOffset(pub u64);

impl MemOffset {
    /// The offset as a number.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// This offset plus `delta`, or `None` on overflow.
    pub const fn checked_add(self, delta: u64) -> Option<Self> {
        match self.0.checked_add(delta) {
            Some(a) => Some(Self(a)),
            None => None,
        }
    }
}

impl From<u64> for MemOffset {
    fn from(v: u64) -> Self {
        Self(v)
    }
}

impl fmt::Display for MemOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// The protection of a grant or of a mirror.
///
/// A grant is either read-only or read-write (contract M1: flags are `READ`
/// or `READ|WRITE`, nothing else); a mirror is mapped `PROT_READ` or
/// `PROT_READ|PROT_WRITE` (contract A1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Prot {
    /// `PIDFD_MEM_PROT_READ` / `PROT_READ`.
    Read,
    /// `PIDFD_MEM_PROT_READ | PIDFD_MEM_PROT_WRITE` / `PROT_READ | PROT_WRITE`.
    ReadWrite,
}

impl Prot {
    /// The `pidfd_mem_map.flags` value of this protection.
    pub const fn grant_flags(self) -> i32 {
        match self {
            Prot::Read => sys::PIDFD_MEM_PROT_READ,
            Prot::ReadWrite => sys::PIDFD_MEM_PROT_READ | sys::PIDFD_MEM_PROT_WRITE,
        }
    }

    /// The `mmap` protection of a mirror with this protection.
    pub fn mmap_flags(self) -> rustix::mm::ProtFlags {
        use rustix::mm::ProtFlags;
        match self {
            Prot::Read => ProtFlags::READ,
            Prot::ReadWrite => ProtFlags::READ | ProtFlags::WRITE,
        }
    }

    /// Whether writes are allowed.
    pub const fn is_writable(self) -> bool {
        matches!(self, Prot::ReadWrite)
    }
}

impl fmt::Display for Prot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Prot::Read => "r",
            Prot::ReadWrite => "rw",
        })
    }
}

/// One grant: the window `mem[offset, offset+size)` mirrors
/// `T[address, address+size)` with protection `prot` (contract §1, M1, M2).
///
/// The fields are sent to the kernel as they are; alignment, overflow and
/// range are the kernel's to check (contract M1), so that callers see its
/// errors. Only what does not fit the ABI's signed fields is refused here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Grant {
    /// Start in T (page aligned).
    pub address: RemoteAddr,
    /// Start in mem (page aligned).
    pub offset: MemOffset,
    /// Length in bytes (page aligned, > 0).
    pub size: u64,
    /// Read-only or read-write.
    pub prot: Prot,
}

impl Grant {
    /// A grant of `T[address, address+size)` at `mem[offset, ..)`.
    pub const fn new(address: RemoteAddr, offset: MemOffset, size: u64, prot: Prot) -> Self {
        Self {
            address,
            offset,
            size,
            prot,
        }
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "address {}, offset {}, size {:#x}, prot {}",
            self.address, self.offset, self.size, self.prot
        )
    }
}
