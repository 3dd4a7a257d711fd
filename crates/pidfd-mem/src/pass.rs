//! Passing ctl and mem fds to another process over a Unix socket with
//! `SCM_RIGHTS` (contract §1: fork and `SCM_RIGHTS` pass them as usual; P1,
//! P2: the fds are capabilities).
//!
//! Each message carries one fd and a one-byte tag (`b'M'` for mem, `b'C'`
//! for ctl, `b'F'` for any fd) so that a receiver cannot take a ctl for a
//! mem by mistake. Received fds are close-on-exec (`MSG_CMSG_CLOEXEC`) and
//! owned ([`OwnedFd`]) from the moment `recvmsg` returns.
//!
//! A message may also carry a payload, for what the receiver must know
//! about the fd (which window of mem it is, say): [`send_access_with`] /
//! [`recv_access_with`] send both in one `sendmsg`, so that no byte stream
//! has to be read up to, and not past, the fd. Such a message is
//! `[b'P', tag, len (u32, little-endian), payload]` with the fd in its
//! `SCM_RIGHTS`; on a stream socket, a payload that arrives in pieces is
//! read to its end. A receiver that expects one form and gets the other
//! fails with [`PassError::WrongKind`].
//!
//! # Example
//!
//! ```no_run
//! use std::os::unix::net::UnixStream;
//! use pidfd_mem::{pass, pidfd_mem, pidfd_open};
//!
//! let (a, b) = UnixStream::pair()?;
//! let (ctl, mem) = pidfd_mem(pidfd_open(std::process::id())?, 0)?;
//! pass::send_access(&a, &mem)?;          // e.g. to a sandboxed reader
//! let theirs = pass::recv_access(&b)?;   // in the other process
//!
//! // The fd and what it is, in one message.
//! pass::send_access_with(&a, &mem, b"window 0x0-0x1000")?;
//! let (theirs, about) = pass::recv_access_with(&b, 64)?;
//! assert_eq!(about, b"window 0x0-0x1000");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use core::mem::MaybeUninit;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, OwnedFd};

use rustix::io::Errno;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use crate::access::Access;
use crate::control::Control;

/// Tag of a message carrying a mem fd.
pub const TAG_ACCESS: u8 = b'M';
/// Tag of a message carrying a ctl fd.
pub const TAG_CONTROL: u8 = b'C';
/// Tag of a message carrying any other fd.
pub const TAG_FD: u8 = b'F';
/// First byte of a message carrying an fd and a payload; the fd's own tag
/// follows.
pub const TAG_PAYLOAD: u8 = b'P';

/// Length of the frame of a payload message before the payload: `b'P'`,
/// the tag, the length.
const FRAME: usize = 6;

/// What went wrong while passing an fd.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PassError {
    /// `sendmsg` failed.
    #[error("sendmsg(SCM_RIGHTS): {}", crate::error::ErrnoName(*.errno))]
    Send {
        /// The errno.
        errno: Errno,
    },
    /// `recvmsg` failed.
    #[error("recvmsg(SCM_RIGHTS): {}", crate::error::ErrnoName(*.errno))]
    Recv {
        /// The errno.
        errno: Errno,
    },
    /// The peer closed the socket.
    #[error("recvmsg: the peer closed the socket")]
    Closed,
    /// A message without an fd.
    #[error("recvmsg: the message carries no fd")]
    NoFd,
    /// More than one fd (all were closed).
    #[error("recvmsg: the message carries {count} fds, expected 1 (all closed)")]
    TooManyFds {
        /// How many.
        count: usize,
    },
    /// The control data was truncated (`MSG_CTRUNC`): fds may have been lost.
    #[error("recvmsg: control data truncated (MSG_CTRUNC)")]
    Truncated,
    /// The tag says another kind of fd, or a message with a payload where
    /// none was expected or the other way round (`'P'`); the fd was closed.
    #[error("recvmsg: expected a {expected:?}-tagged fd, got tag {found:?}")]
    WrongKind {
        /// The tag asked for.
        expected: char,
        /// The tag received.
        found: char,
    },
    /// The payload is longer than the receiver accepts (the fd was closed,
    /// the payload left unread), or than a message can say (`u32`).
    #[error("payload of {len} bytes is longer than the {max} accepted")]
    PayloadTooLarge {
        /// Its length.
        len: u64,
        /// The most accepted.
        max: u64,
    },
    /// A payload message cut short on a socket that keeps message
    /// boundaries, or truncated (`MSG_TRUNC`); the fd was closed.
    #[error("recvmsg: malformed payload message: {detail}")]
    Malformed {
        /// What was wrong.
        detail: &'static str,
    },
}

/// Sends `fd` with tag `tag`: `sendmsg(socket, [tag], SCM_RIGHTS [fd],
/// MSG_NOSIGNAL)`; `EINTR` is retried.
pub fn send_fd_tagged(socket: impl AsFd, fd: impl AsFd, tag: u8) -> Result<(), PassError> {
    let fds = [fd.as_fd()];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let payload = [tag];
    loop {
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
            // The buffer is sized for one fd: cannot happen.
            return Err(PassError::Send {
                errno: Errno::NOBUFS,
            });
        }
        match rustix::net::sendmsg(
            socket.as_fd(),
            &[IoSlice::new(&payload)],
            &mut control,
            SendFlags::NOSIGNAL,
        ) {
            Err(Errno::INTR) => continue,
            Err(errno) => return Err(PassError::Send { errno }),
            Ok(_) => return Ok(()),
        }
    }
}

/// Receives one fd and its tag: `recvmsg(socket, MSG_CMSG_CLOEXEC)`;
/// `EINTR` is retried. Every fd that arrives is owned at once, so extra fds
/// are closed, never leaked.
pub fn recv_fd_tagged(socket: impl AsFd) -> Result<(OwnedFd, u8), PassError> {
    // Room for a few fds, so that a sender of more than one is detected
    // rather than silently truncated.
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(8))];
    let mut payload = [0u8; 1];
    loop {
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let msg = match rustix::net::recvmsg(
            socket.as_fd(),
            &mut [IoSliceMut::new(&mut payload)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Err(Errno::INTR) => continue,
            Err(errno) => return Err(PassError::Recv { errno }),
            Ok(m) => m,
        };
        let mut fds: Vec<OwnedFd> = Vec::new();
        for m in control.drain() {
            if let RecvAncillaryMessage::ScmRights(it) = m {
                fds.extend(it);
            }
        }
        if msg.flags.contains(ReturnFlags::CTRUNC) {
            return Err(PassError::Truncated);
        }
        if msg.bytes == 0 && fds.is_empty() {
            return Err(PassError::Closed);
        }
        return match fds.len() {
            0 => Err(PassError::NoFd),
            1 => Ok((fds.remove(0), payload[0])),
            count => Err(PassError::TooManyFds { count }),
        };
    }
}

/// Sends `fd` with tag `tag` and `payload` in one message (see the module
/// docs): `sendmsg(socket, [b'P', tag, len, payload], SCM_RIGHTS [fd],
/// MSG_NOSIGNAL)`. On a stream socket, bytes the kernel did not take with the
/// fd are sent after it. `EINTR` is retried.
pub fn send_fd_with(
    socket: impl AsFd,
    fd: impl AsFd,
    tag: u8,
    payload: &[u8],
) -> Result<(), PassError> {
    let len = u32::try_from(payload.len()).map_err(|_| PassError::PayloadTooLarge {
        len: payload.len() as u64,
        max: u32::MAX.into(),
    })?;
    let mut msg = Vec::with_capacity(FRAME + payload.len());
    msg.extend_from_slice(&[TAG_PAYLOAD, tag]);
    msg.extend_from_slice(&len.to_le_bytes());
    msg.extend_from_slice(payload);
    let fds = [fd.as_fd()];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let sent = loop {
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
            // The buffer is sized for one fd: cannot happen.
            return Err(PassError::Send {
                errno: Errno::NOBUFS,
            });
        }
        match rustix::net::sendmsg(
            socket.as_fd(),
            &[IoSlice::new(&msg)],
            &mut control,
            SendFlags::NOSIGNAL,
        ) {
            Err(Errno::INTR) => continue,
            Err(errno) => return Err(PassError::Send { errno }),
            Ok(n) => break n,
        }
    };
    let mut rest = &msg[sent.min(msg.len())..];
    while !rest.is_empty() {
        match rustix::net::send(socket.as_fd(), rest, SendFlags::NOSIGNAL) {
            Err(Errno::INTR) => continue,
            Err(errno) => return Err(PassError::Send { errno }),
            Ok(n) => rest = &rest[n..],
        }
    }
    Ok(())
}

/// Receives one fd, its tag and its payload, sent by [`send_fd_with`]:
/// `recvmsg(socket, MSG_CMSG_CLOEXEC)`, then, on a stream socket, `recv` for
/// the rest of the payload if it came in pieces. `EINTR` is retried. A
/// payload longer than `max_payload` is refused
/// ([`PassError::PayloadTooLarge`]) without being read to its end.
pub fn recv_fd_with(
    socket: impl AsFd,
    max_payload: usize,
) -> Result<(OwnedFd, u8, Vec<u8>), PassError> {
    // The first recvmsg takes the frame and up to 64 KiB of payload; the
    // buffer grows to the length the frame says, once it is checked.
    let mut buf = vec![0u8; FRAME.saturating_add(max_payload).min(FRAME + (64 << 10))];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(8))];
    let (fd, mut got) = loop {
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let msg = match rustix::net::recvmsg(
            socket.as_fd(),
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Err(Errno::INTR) => continue,
            Err(errno) => return Err(PassError::Recv { errno }),
            Ok(m) => m,
        };
        let mut fds: Vec<OwnedFd> = Vec::new();
        for m in control.drain() {
            if let RecvAncillaryMessage::ScmRights(it) = m {
                fds.extend(it);
            }
        }
        if msg.flags.contains(ReturnFlags::CTRUNC) {
            return Err(PassError::Truncated);
        }
        if msg.bytes == 0 && fds.is_empty() {
            return Err(PassError::Closed);
        }
        if msg.flags.contains(ReturnFlags::TRUNC) {
            return Err(PassError::Malformed {
                detail: "the message is longer than its frame (MSG_TRUNC)",
            });
        }
        break match fds.len() {
            0 => return Err(PassError::NoFd),
            1 => (fds.remove(0), msg.bytes),
            count => return Err(PassError::TooManyFds { count }),
        };
    };
    // The fd is owned now: any error below closes it.
    let stream = matches!(
        rustix::net::sockopt::socket_type(socket.as_fd()),
        Ok(rustix::net::SocketType::STREAM)
    );
    let read_to = |end: usize, got: &mut usize, buf: &mut [u8]| -> Result<(), PassError> {
        while *got < end {
            if !stream {
                return Err(PassError::Malformed {
                    detail: "the message is shorter than its frame",
                });
            }
            match rustix::net::recv(socket.as_fd(), &mut buf[*got..end], RecvFlags::empty()) {
                Err(Errno::INTR) => continue,
                Err(errno) => return Err(PassError::Recv { errno }),
                Ok((0, _)) => return Err(PassError::Closed),
                Ok((n, _)) => *got += n,
            }
        }
        Ok(())
    };
    // The first byte says whether this is a payload message at all.
    if buf[0] != TAG_PAYLOAD {
        return Err(PassError::WrongKind {
            expected: char::from(TAG_PAYLOAD),
            found: char::from(buf[0]),
        });
    }
    read_to(FRAME, &mut got, &mut buf)?;
    let tag = buf[1];
    let len = u32::from_le_bytes([buf[2], buf[3], buf[4], buf[5]]);
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if len > max_payload {
        return Err(PassError::PayloadTooLarge {
            len: len as u64,
            max: max_payload as u64,
        });
    }
    if got > FRAME + len {
        return Err(PassError::Malformed {
            detail: "bytes after the payload in the fd's message",
        });
    }
    buf.resize(buf.len().max(FRAME + len), 0);
    read_to(FRAME + len, &mut got, &mut buf)?;
    buf.truncate(FRAME + len);
    buf.drain(..FRAME);
    Ok((fd, tag, buf))
}

/// Sends any fd (tag [`TAG_FD`]).
pub fn send_fd(socket: impl AsFd, fd: impl AsFd) -> Result<(), PassError> {
    send_fd_tagged(socket, fd, TAG_FD)
}

/// Receives any fd sent by [`send_fd`].
pub fn recv_fd(socket: impl AsFd) -> Result<OwnedFd, PassError> {
    recv_expect(socket, TAG_FD)
}

fn recv_expect(socket: impl AsFd, tag: u8) -> Result<OwnedFd, PassError> {
    let (fd, found) = recv_fd_tagged(socket)?;
    if found != tag {
        return Err(PassError::WrongKind {
            expected: char::from(tag),
            found: char::from(found),
        });
    }
    Ok(fd)
}

/// Sends a mem fd over `socket` (`sendmsg`, `SCM_RIGHTS`). The receiver gets
/// the same capability (contract P1).
pub fn send_access(socket: impl AsFd, access: &Access) -> Result<(), PassError> {
    send_fd_tagged(socket, access, TAG_ACCESS)
}

/// Receives a mem fd sent by [`send_access`] (`recvmsg`,
/// `MSG_CMSG_CLOEXEC`).
pub fn recv_access(socket: impl AsFd) -> Result<Access, PassError> {
    recv_expect(socket, TAG_ACCESS).map(Access::from)
}

/// Sends a mem fd and `payload` (what the receiver should know about it) in
/// one message ([`send_fd_with`], tag [`TAG_ACCESS`]). The receiver gets
/// the same capability (contract P1).
pub fn send_access_with(
    socket: impl AsFd,
    access: &Access,
    payload: &[u8],
) -> Result<(), PassError> {
    send_fd_with(socket, access, TAG_ACCESS, payload)
}

/// Receives a mem fd and its payload sent by [`send_access_with`]; a
/// payload longer than `max_payload` bytes is refused
/// ([`PassError::PayloadTooLarge`]).
pub fn recv_access_with(
    socket: impl AsFd,
    max_payload: usize,
) -> Result<(Access, Vec<u8>), PassError> {
    let (fd, tag, payload) = recv_fd_with(socket, max_payload)?;
    if tag != TAG_ACCESS {
        return Err(PassError::WrongKind {
            expected: char::from(TAG_ACCESS),
            found: char::from(tag),
        });
    }
    Ok((Access::from(fd), payload))
}

/// Sends a ctl fd over `socket` (contract P2: any holder may change grants
/// until LOCK).
pub fn send_control(socket: impl AsFd, control: &Control) -> Result<(), PassError> {
    send_fd_tagged(socket, control, TAG_CONTROL)
}

/// Receives a ctl fd sent by [`send_control`].
pub fn recv_control(socket: impl AsFd) -> Result<Control, PassError> {
    recv_expect(socket, TAG_CONTROL).map(Control::from)
}
