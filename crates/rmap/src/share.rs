//! `rmap share` and `rmap attach`: handing a window of T to other processes
//! over a unix socket.
//!
//! # Protocol
//!
//! For each client that connects, the sharer sends one message with the
//! library's [`pidfd_mem::pass::send_access_with`]: the access fd in
//! `SCM_RIGHTS`, and as its payload a 64-byte [`Header`] (plain bytes,
//! little-endian) describing the window: which part of mem it is, which
//! addresses of T it mirrors, with which protection. The client takes both
//! with [`pidfd_mem::pass::recv_access_with`] and checks the header (copied
//! out of the socket, then decoded). Nothing else is sent; the connection
//! is closed after.

use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use pidfd_mem::rustix::event::{PollFd, PollFlags};
use pidfd_mem::rustix::io::Errno;
use pidfd_mem::{pass, pidfd_mem, pidfd_open, Access, Grant, MemOffset, Prot, RemoteAddr};
use serde_json::json;

use crate::addr::RangeExpr;
use crate::copy::{cover, page};
use crate::errors::{bad, module_help, require_module, Code, Failure};
use crate::live::{self, View};
use crate::ops::resolve_range;
use crate::view::hex_addr;
use crate::{Ctx, LiveArgs};

/// Magic and version of the header.
pub const MAGIC: [u8; 8] = *b"RMAPSHR1";
/// Length of the header on the wire.
pub const HEADER_LEN: usize = 64;
/// Header flag: the sharer locked the control fd (contract K1): the window
/// cannot be revoked.
pub const FLAG_LOCKED: u32 = 1;

/// What the sharer tells each client about the window, before the fd.
///
/// Wire layout (little-endian): `magic[8]`, `pid u32`, `prot u32`
/// (`PIDFD_MEM_PROT_READ` [| `_WRITE`]), `flags u32` ([`FLAG_LOCKED`]),
/// `reserved u32` (0), `address u64`, `offset u64`, `size u64`,
/// `view_start u64`, `view_len u64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// T's pid (for messages: the fd, not the pid, is the capability).
    pub pid: u32,
    /// The grant's protection.
    pub prot: Prot,
    /// Whether the control fd was locked.
    pub locked: bool,
    /// T's address at mem offset `offset` (page aligned).
    pub address: u64,
    /// The window's mem offset (page aligned).
    pub offset: u64,
    /// The window's size (page aligned).
    pub size: u64,
    /// T's address of the range the sharer was asked for (inside the window).
    pub view_start: u64,
    /// Its length.
    pub view_len: u64,
}

impl Header {
    /// The 64 wire bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&self.pid.to_le_bytes());
        b[12..16].copy_from_slice(&(self.prot.grant_flags() as u32).to_le_bytes());
        let flags = if self.locked { FLAG_LOCKED } else { 0 };
        b[16..20].copy_from_slice(&flags.to_le_bytes());
        b[24..32].copy_from_slice(&self.address.to_le_bytes());
        b[32..40].copy_from_slice(&self.offset.to_le_bytes());
        b[40..48].copy_from_slice(&self.size.to_le_bytes());
        b[48..56].copy_from_slice(&self.view_start.to_le_bytes());
        b[56..64].copy_from_slice(&self.view_len.to_le_bytes());
        b
    }

    /// Checks and decodes 64 wire bytes (copied out of the socket first).
    pub fn decode(b: &[u8; HEADER_LEN]) -> Result<Self, String> {
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(a)
        };
        if b[0..8] != MAGIC {
            return Err(
                "not an rmap share header (bad magic): is this socket `rmap share`?".into(),
            );
        }
        let read = pidfd_mem::sys::PIDFD_MEM_PROT_READ as u32;
        let write = pidfd_mem::sys::PIDFD_MEM_PROT_WRITE as u32;
        let prot = match u32_at(12) {
            p if p == read => Prot::Read,
            p if p == read | write => Prot::ReadWrite,
            p => return Err(format!("header: unknown protection {p:#x}")),
        };
        let flags = u32_at(16);
        if flags & !FLAG_LOCKED != 0 || u32_at(20) != 0 {
            return Err(format!("header: unknown flags {flags:#x}"));
        }
        let h = Self {
            pid: u32_at(8),
            prot,
            locked: flags & FLAG_LOCKED != 0,
            address: u64_at(24),
            offset: u64_at(32),
            size: u64_at(40),
            view_start: u64_at(48),
            view_len: u64_at(56),
        };
        let pg = page();
        if h.size == 0 || h.size % pg != 0 || h.offset % pg != 0 || h.address % pg != 0 {
            return Err("header: window not page aligned".into());
        }
        let end = h.address.checked_add(h.size);
        let view_end = h.view_start.checked_add(h.view_len);
        match (end, view_end) {
            (Some(e), Some(ve))
                if h.view_start >= h.address
                    && ve <= e
                    && h.view_len > 0
                    && h.offset.checked_add(h.size).is_some() => {}
            _ => return Err("header: the view is not inside the window".into()),
        }
        Ok(h)
    }
}

/// Sends the access fd with the header, in one message.
pub fn send_window(stream: &UnixStream, h: &Header, mem: &Access) -> Result<()> {
    pass::send_access_with(stream, mem, &h.encode()).context("sending the access fd and its header")
}

/// Receives what [`send_window`] sent. A peer that sends something else
/// is bad input (exit 2): the socket given is not `rmap share`.
pub fn recv_window(stream: &UnixStream) -> Result<(Header, Access)> {
    let (mem, payload) = match pass::recv_access_with(stream, HEADER_LEN) {
        Ok(x) => x,
        Err(
            e @ (pass::PassError::NoFd
            | pass::PassError::WrongKind { .. }
            | pass::PassError::PayloadTooLarge { .. }
            | pass::PassError::Malformed { .. }),
        ) => return Err(bad(format!("{NOT_SHARE} ({e})"))),
        Err(e) => {
            return Err(anyhow::Error::new(e).context("receiving the access fd and its header"))
        }
    };
    let b: &[u8; HEADER_LEN] = payload.as_slice().try_into().map_err(|_| {
        bad(format!(
            "header: {} bytes, expected {HEADER_LEN}: {NOT_SHARE}",
            payload.len()
        ))
    })?;
    let h = Header::decode(b).map_err(bad)?;
    Ok((h, mem))
}

/// Why a peer's message is refused.
const NOT_SHARE: &str =
    "the peer does not speak `rmap share`'s protocol: is this socket `rmap share`?";

/// Options of `rmap share`.
pub struct ShareOpts<'a> {
    /// Target.
    pub pid: u32,
    /// What to share.
    pub range: &'a RangeExpr,
    /// Where to listen.
    pub socket: &'a Path,
    /// Grant read-only.
    pub read_only: bool,
    /// Lock the control fd.
    pub lock: bool,
    /// Stop after this many clients.
    pub max_clients: Option<u64>,
}

/// Removes the socket file when dropped.
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Binds `path`, replacing a stale socket (one nobody listens on).
pub fn listen(path: &Path) -> Result<UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(bad(format!(
                "{} exists and is not a socket; choose another --socket path",
                path.display()
            )));
        }
        match UnixStream::connect(path) {
            Ok(_) => {
                return Err(bad(format!(
                    "{} is in use by another process",
                    path.display()
                )))
            }
            Err(_) => {
                std::fs::remove_file(path)
                    .with_context(|| format!("removing stale socket {}", path.display()))?;
            }
        }
    }
    UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))
}

/// `rmap share PID --range A-B --socket PATH`.
pub fn share(ctx: &Ctx, o: ShareOpts<'_>) -> Result<Code> {
    require_module("share")?;
    let pid = o.pid;
    let range = resolve_range(pid, o.range)?;
    let (start, size) = cover(range)?;
    let prot = if o.read_only {
        Prot::Read
    } else {
        Prot::ReadWrite
    };
    let pidfd = pidfd_open(pid).with_context(|| format!("cannot open process {pid}"))?;
    let (ctl, mem) = match pidfd_mem(&pidfd, 0) {
        Ok(x) => x,
        Err(pidfd_mem::Error::ModuleNotLoaded { .. }) => {
            return Err(anyhow::Error::new(Failure::NoModule(module_help("share"))))
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("pidfd_mem on process {pid}"))),
    };
    ctl.map(&Grant::new(RemoteAddr(start), MemOffset(0), size, prot))
        .with_context(|| format!("granting [{start:#x}, +{size:#x}) of process {pid}"))?;
    if o.lock {
        ctl.lock().context("PIDFD_MEM_LOCK")?;
    }
    let header = Header {
        pid,
        prot,
        locked: o.lock,
        address: start,
        offset: 0,
        size,
        view_start: range.start,
        view_len: range.len(),
    };
    let listener = listen(o.socket)?;
    let _cleanup = SocketFile(o.socket.to_path_buf());
    let mut out = io::stdout().lock();
    if ctx.json {
        let v = json!({
            "event": "listening",
            "socket": o.socket.display().to_string(),
            "pid": pid,
            "address": hex_addr(start),
            "size": size,
            "offset": 0,
            "prot": prot.to_string(),
            "locked": o.lock,
            "view_start": hex_addr(range.start),
            "view_len": range.len(),
        });
        writeln!(out, "{v}")?;
    } else {
        writeln!(
            out,
            "sharing process {pid} [{:#x}, {:#x}) as mem[0, {size:#x}) = [{start:#x}, +{size:#x}), {}{}, on {}",
            range.start,
            range.end,
            if o.read_only { "read-only" } else { "read-write" },
            if o.lock { ", locked" } else { "" },
            o.socket.display()
        )?;
        writeln!(
            out,
            "clients: rmap attach --socket {}   (Ctrl-C to stop)",
            o.socket.display()
        )?;
    }
    out.flush()?;
    let mut served = 0u64;
    loop {
        let (listener_ready, gone) = {
            let mut fds = [
                PollFd::new(&listener, PollFlags::IN),
                PollFd::new(&mem, PollFlags::empty()),
            ];
            match pidfd_mem::rustix::event::poll(&mut fds, None) {
                Err(Errno::INTR) => continue,
                Err(e) => return Err(anyhow::Error::new(e).context("poll")),
                Ok(_) => {}
            }
            (
                fds[0].revents().contains(PollFlags::IN),
                fds[1].revents().contains(PollFlags::HUP),
            )
        };
        if gone {
            return Err(anyhow::Error::new(Failure::Gone(format!(
                "process {pid} exited (the access fd reports POLLHUP, contract A4); \
                 stopped sharing after {served} client{}",
                if served == 1 { "" } else { "s" }
            ))));
        }
        if !listener_ready {
            continue;
        }
        let (stream, _) = match listener.accept() {
            Ok(x) => x,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(anyhow::Error::new(e).context("accept")),
        };
        let peer = pidfd_mem::rustix::net::sockopt::socket_peercred(stream.as_fd())
            .map(|c| c.pid.as_raw_nonzero().get())
            .ok();
        let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
        match send_window(&stream, &header, &mem) {
            Ok(()) => {
                served += 1;
                if ctx.json {
                    let v = json!({"event": "client", "n": served, "pid": peer});
                    writeln!(out, "{v}")?;
                } else {
                    writeln!(
                        out,
                        "client {served}{} received the access fd",
                        peer.map(|p| format!(" (pid {p})")).unwrap_or_default()
                    )?;
                }
                out.flush()?;
            }
            Err(e) => eprintln!("rmap: a client went away: {e:#}"),
        }
        if o.max_clients.is_some_and(|m| served >= m) {
            return Ok(Code::Ok);
        }
    }
}

/// The part of the window `attach` shows by default.
const ATTACH_DEFAULT: u64 = 4096;

/// `rmap attach --socket PATH`.
pub fn attach(ctx: &Ctx, socket: &Path, live: &LiveArgs) -> Result<Code> {
    let stream = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) => {
            // No sharer can run without the module; say how to get it.
            if require_module("attach").is_err() {
                return Err(anyhow::Error::new(Failure::NoModule(module_help("attach"))));
            }
            // A path where no sharer listens is bad input (exit 2).
            let why = match e.kind() {
                io::ErrorKind::NotFound => "no such socket: is `rmap share` running?",
                io::ErrorKind::ConnectionRefused => {
                    "nobody listens there (or it is not a socket): is `rmap share` running?"
                }
                _ => {
                    return Err(anyhow::Error::new(e)
                        .context(format!("{}: cannot connect", socket.display())))
                }
            };
            return Err(bad(format!("{}: {why}", socket.display())));
        }
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .context("socket timeout")?;
    let (h, mem) = recv_window(&stream)?;
    drop(stream);
    let size = usize::try_from(h.size).map_err(|_| bad("window too large"))?;
    // A viewer only reads: map read-only whatever the grant allows.
    let mirror = mem
        .mmap(MemOffset(h.offset), size, Prot::Read)
        .context("mapping the window")?;
    let len = h.view_len.min(ATTACH_DEFAULT);
    if len < h.view_len {
        eprintln!(
            "rmap: showing the first {len} of {} bytes of the window",
            h.view_len
        );
    }
    let view = View {
        title: format!(
            "rmap attach: process {}'s [{:#x}, +{}) through a mirror of the fd from {} ({}{})",
            h.pid,
            h.view_start,
            len,
            socket.display(),
            if h.prot.is_writable() {
                "rw grant"
            } else {
                "read-only grant"
            },
            if h.locked { ", locked" } else { "" }
        ),
        mirror: &mirror,
        mem: &mem,
        off: usize::try_from(h.view_start - h.address).unwrap_or(0),
        len: usize::try_from(len).unwrap_or(0),
        addr: h.view_start,
    };
    live::run(ctx, &view, live)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            pid: 1234,
            prot: Prot::Read,
            locked: true,
            address: 0x7f00_0000_0000,
            offset: 0,
            size: 2 * page(),
            view_start: 0x7f00_0000_0010,
            view_len: 100,
        }
    }

    #[test]
    fn header_round_trips() {
        let h = sample();
        let b = h.encode();
        assert_eq!(&b[0..8], b"RMAPSHR1");
        assert_eq!(Header::decode(&b).unwrap(), h);
        let rw = Header {
            prot: Prot::ReadWrite,
            locked: false,
            ..h
        };
        assert_eq!(Header::decode(&rw.encode()).unwrap(), rw);
        // Layout is fixed: prot at 12, address at 24.
        assert_eq!(u32::from_le_bytes([b[12], b[13], b[14], b[15]]), 1);
        assert_eq!(b[24..32], 0x7f00_0000_0000u64.to_le_bytes());
    }

    #[test]
    fn header_refuses_garbage() {
        let good = sample().encode();
        let mut b = good;
        b[0] = b'X';
        assert!(Header::decode(&b).unwrap_err().contains("magic"));
        let mut b = good;
        b[12] = 2;
        assert!(Header::decode(&b).is_err());
        let mut b = good;
        b[16] = 2;
        assert!(Header::decode(&b).is_err());
        let mut b = good;
        b[20] = 1;
        assert!(Header::decode(&b).is_err());
        // View outside the window.
        let h = Header {
            view_start: 0x7eff_0000_0000,
            ..sample()
        };
        assert!(Header::decode(&h.encode()).is_err());
        let h = Header {
            view_len: 3 * page(),
            ..sample()
        };
        assert!(Header::decode(&h.encode()).is_err());
        let h = Header {
            size: 100,
            ..sample()
        };
        assert!(Header::decode(&h.encode()).is_err());
        let h = Header {
            address: u64::MAX - page() + 1,
            view_start: u64::MAX - 10,
            view_len: 1,
            ..sample()
        };
        assert!(Header::decode(&h.encode()).is_err());
    }

    #[test]
    fn a_peer_that_is_not_share_is_bad_input() {
        use crate::errors::classify;
        let memfd = || {
            pidfd_mem::rustix::fs::memfd_create(
                "rmap-test",
                pidfd_mem::rustix::fs::MemfdFlags::CLOEXEC,
            )
            .unwrap()
        };
        // Bytes without an fd.
        let (a, b) = UnixStream::pair().unwrap();
        (&a).write_all(b"hello").unwrap();
        let e = recv_window(&b).unwrap_err();
        assert_eq!(classify(&e), Code::BadInput, "{e:#}");
        assert!(format!("{e:#}").contains("rmap share"), "{e:#}");
        // An fd without the header (the old protocol's message).
        let (a, b) = UnixStream::pair().unwrap();
        pass::send_access(&a, &Access::from(memfd())).unwrap();
        assert_eq!(classify(&recv_window(&b).unwrap_err()), Code::BadInput);
        // A header of the wrong size, or with a bad magic.
        let (a, b) = UnixStream::pair().unwrap();
        pass::send_access_with(&a, &Access::from(memfd()), &[0u8; 10]).unwrap();
        assert_eq!(classify(&recv_window(&b).unwrap_err()), Code::BadInput);
        pass::send_access_with(&a, &Access::from(memfd()), &[0u8; HEADER_LEN]).unwrap();
        let e = recv_window(&b).unwrap_err();
        assert_eq!(classify(&e), Code::BadInput);
        assert!(e.to_string().contains("bad magic"), "{e}");
        // The sharer hung up: not bad input.
        drop(a);
        assert_eq!(classify(&recv_window(&b).unwrap_err()), Code::Other);
    }

    #[test]
    fn header_and_fd_cross_a_socket() {
        // Any fd passes; a memfd stands in for mem on the host.
        let (a, b) = UnixStream::pair().unwrap();
        let fd = pidfd_mem::rustix::fs::memfd_create(
            "rmap-test",
            pidfd_mem::rustix::fs::MemfdFlags::CLOEXEC,
        )
        .unwrap();
        let mem = Access::from(fd);
        send_window(&a, &sample(), &mem).unwrap();
        let (h, got) = recv_window(&b).unwrap();
        assert_eq!(h, sample());
        // The received fd is a distinct, working fd.
        got.write_all_at(b"xy", MemOffset(0)).unwrap();
        let mut buf = [0u8; 2];
        mem.read_exact_at(&mut buf, MemOffset(0)).unwrap();
        assert_eq!(&buf, b"xy");
    }
}
