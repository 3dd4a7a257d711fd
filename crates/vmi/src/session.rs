//! Attaching to a QEMU in one call: find its monitor, work out the layout,
//! expose and map its memory.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::Error;
use crate::guest::{Expose, GuestMemory};
use crate::layout;
use crate::qmp::{MemDev, Qmp};

/// Which QEMU, and how to reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// QEMU's pid. With `monitor`, its QMP socket is taken from its command
    /// line ([`Qmp::for_pid`]) and the layout guessed from `/proc` only if
    /// none answers; without, the layout is guessed from `/proc` at once.
    Pid {
        /// The pid.
        pid: u32,
        /// Use the monitor if one is found.
        monitor: bool,
    },
    /// QEMU's QMP socket; QEMU is its peer.
    Qmp(PathBuf),
}

/// An attached QEMU.
#[derive(Debug)]
pub struct Session {
    /// Its memory, mapped.
    pub guest: GuestMemory,
    /// The monitor connection, when the layout came from it.
    pub qmp: Option<Qmp>,
    /// `query-memdev` (empty without a monitor).
    pub memdevs: Vec<MemDev>,
    /// Why the monitor was not used although asked for (the layout was
    /// then guessed from `/proc`).
    pub fallback: Option<Error>,
}

/// How long a QMP socket may stay silent before the next one is tried.
pub const GREETING_TIMEOUT: Duration = Duration::from_secs(3);

/// Attaches to `target` and maps its memory as `expose` says.
pub fn attach(target: &Target, expose: Expose) -> Result<Session, Error> {
    let (pid, mut qmp, fallback) = match target {
        Target::Qmp(p) => {
            let q = Qmp::connect(p, GREETING_TIMEOUT)?;
            (q.peer_pid()?, Some(q), None)
        }
        Target::Pid {
            pid,
            monitor: false,
        } => (*pid, None, None),
        Target::Pid { pid, monitor: true } => match Qmp::for_pid(*pid, GREETING_TIMEOUT) {
            Ok(q) => (*pid, Some(q), None),
            Err(e) => (*pid, None, Some(e)),
        },
    };
    let (layout, memdevs) = match qmp.as_mut() {
        Some(q) => (
            layout::from_monitor(q)?,
            q.query_memdev().unwrap_or_default(),
        ),
        None => (layout::from_proc(pid)?, Vec::new()),
    };
    Ok(Session {
        guest: GuestMemory::open(pid, layout, expose)?,
        qmp,
        memdevs,
        fallback,
    })
}
