//! The library's one error type.

use std::io;

/// What can go wrong between QEMU, its monitor and the mirrors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A system call or a file failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// QMP answered a command with an error.
    #[error("QMP {command}: {class}: {desc}")]
    Qmp {
        /// The command sent.
        command: String,
        /// QMP's error class.
        class: String,
        /// QMP's description.
        desc: String,
    },
    /// QMP said something that is not the protocol.
    #[error("QMP protocol: {0}")]
    QmpProtocol(String),
    /// An HMP answer (`info ramblock`, `info mtree -f`, `gpa2hva`, `xp`) or a
    /// `/proc` file did not parse.
    #[error("cannot parse {what}: {line:?}")]
    Parse {
        /// Which output.
        what: &'static str,
        /// The offending line.
        line: String,
    },
    /// No QMP socket could be found or reached for a QEMU process.
    #[error("QEMU pid {pid}: no usable QMP socket ({why})")]
    NoQmp {
        /// QEMU's pid.
        pid: u32,
        /// Why.
        why: String,
    },
    /// The guest RAM layout cannot be worked out or is inconsistent.
    #[error("guest RAM layout: {0}")]
    Layout(String),
    /// A pidfd_mem call failed.
    #[error("{what}: {source}")]
    PidfdMem {
        /// What was being done.
        what: String,
        /// The library's error.
        #[source]
        source: pidfd_mem::Error,
    },
    /// An access through a mirror failed (SIGBUS: QEMU unmapped the RAM or
    /// exited).
    #[error("guest-physical {gpa:#x}: {source}")]
    Mirror {
        /// The guest-physical address of the access.
        gpa: u64,
        /// The mirror's error.
        #[source]
        source: pidfd_mem::MirrorError,
    },
    /// No guest RAM (or ROM) at this guest-physical address.
    #[error("guest-physical {gpa:#x} is not RAM or ROM of the guest")]
    Unmapped {
        /// The address.
        gpa: u64,
    },
    /// A write into a region the guest sees as ROM.
    #[error("guest-physical {gpa:#x} is read-only ({region})")]
    ReadOnly {
        /// The address.
        gpa: u64,
        /// The memory region's name.
        region: String,
    },
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn parse(what: &'static str, line: &str) -> Self {
        Self::Parse {
            what,
            line: line.to_string(),
        }
    }
}
