//! Passing ctl and mem fds to another process over a Unix socket with
//! `SCM_RIGHTS` (contract §1: fork and `SCM_RIGHTS` pass them as usual; P1,
//! P2: the fds are capabilities).
//!
//! Each message carries one fd and a one-byte tag (`b'M'` for mem, `b'C'`
//! for ctl, `b'F'` for any fd) so that a receiver cannot take a ctl for a
//! mem by mistake. Received fds are close-on-exec (`MSG_CMSG_CLOEXEC`) and
//! owned ([`OwnedFd`]) from the moment `recvmsg` returns.
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
    /// The tag says another kind of fd (the fd was closed).
    #[error("recvmsg: expected a {expected:?}-tagged fd, got tag {found:?}")]
    WrongKind {
        /// The tag asked for.
        expected: char,
        /// The tag received.
        found: char,
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

/// Sends a ctl fd over `socket` (contract P2: any holder may change grants
/// until LOCK).
pub fn send_control(socket: impl AsFd, control: &Control) -> Result<(), PassError> {
    send_fd_tagged(socket, control, TAG_CONTROL)
}

/// Receives a ctl fd sent by [`send_control`].
pub fn recv_control(socket: impl AsFd) -> Result<Control, PassError> {
    recv_expect(socket, TAG_CONTROL).map(Control::from)
}
