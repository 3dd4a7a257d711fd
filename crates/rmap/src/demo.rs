//! `rmap demo`: the seed's flow in a few seconds, step by step.
//!
//! The parent exposes one page of its own memory with pidfd_mem, passes the
//! access fd to a separate program (`rmap demo-peer`, exec'd) over a unix
//! socket, changes the page while the peer watches it through its mirror,
//! then revokes the window, and the peer's next access raises SIGBUS.
//!
//! The shared value is one aligned 8-byte word: the parent stores it with
//! an atomic store, the peer loads it with the library's fault-handled
//! atomic load, so no reading is ever torn. After each new value the peer
//! says on the socket what it saw; the parent checks it.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use pidfd_mem::rustix::event::{PollFd, PollFlags, Timespec};
use pidfd_mem::{pidfd_mem, pidfd_open, Grant, MemOffset, Mirror, MirrorError, Prot, RemoteAddr};

use crate::errors::{module_help, require_module, Code, Failure};
use crate::share::{recv_window, send_window, Header};
use crate::Ctx;

/// Values the parent stores, one after the other.
const TICKS: u32 = 5;
/// Time between two ticks.
const TICK_GAP: Duration = Duration::from_millis(300);
/// How long the parent waits for any answer of the peer.
const ANSWER: Duration = Duration::from_secs(10);
/// How long the peer lives at most.
const PEER_LIFE: Duration = Duration::from_secs(60);

/// `s` (at most 8 bytes) as the word whose memory holds those bytes.
pub fn word(s: &str) -> u64 {
    let mut b = [0u8; 8];
    let n = s.len().min(8);
    b[..n].copy_from_slice(&s.as_bytes()[..n]);
    u64::from_ne_bytes(b)
}

/// The text a word holds (up to its first NUL), checked after the copy.
pub fn text(w: u64) -> String {
    let b = w.to_ne_bytes();
    let n = b.iter().position(|&c| c == 0).unwrap_or(8);
    String::from_utf8_lossy(&b[..n]).into_owned()
}

/// Wraps `s` at `width` columns; lines after the first start with `indent`.
pub fn wrap(first: &str, s: &str, indent: usize, width: usize) -> String {
    let mut out = String::from(first);
    let mut col = first.chars().count();
    let pad = " ".repeat(indent);
    let mut line_empty = true;
    for w in s.split_whitespace() {
        let wl = w.chars().count();
        if !line_empty && col + 1 + wl > width {
            out.push('\n');
            out.push_str(&pad);
            col = indent;
            line_empty = true;
        }
        if !line_empty {
            out.push(' ');
            col += 1;
        }
        out.push_str(w);
        col += wl;
        line_empty = false;
    }
    out
}

fn say(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

struct Steps {
    n: usize,
    failed: Option<String>,
}

impl Steps {
    fn step(&mut self, s: &str) {
        self.n += 1;
        say(&wrap(&format!("{:>2}. ", self.n), s, 4, 78));
    }

    fn fail(&mut self, why: &str) -> anyhow::Error {
        say(&wrap("    FAILED: ", why, 12, 78));
        let msg = format!("demo failed at step {}: {why}", self.n);
        self.failed = Some(msg.clone());
        anyhow::anyhow!(msg)
    }
}

/// Kills the peer if the demo stops early, and removes the socket's directory.
struct Cleanup {
    child: Option<Child>,
    dir: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            if let Ok(None) = c.try_wait() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wait_child(c: &mut Child, limit: Duration) -> Result<Option<ExitStatus>> {
    let t = Instant::now();
    loop {
        if let Some(s) = c.try_wait()? {
            return Ok(Some(s));
        }
        if t.elapsed() > limit {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn accept_peer(l: &UnixListener, child: &mut Child) -> Result<UnixStream> {
    l.set_nonblocking(true)?;
    let t = Instant::now();
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false)?;
                return Ok(s);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
        if let Some(st) = child.try_wait()? {
            bail!("the peer exited before connecting ({st})");
        }
        if t.elapsed() > ANSWER {
            bail!("the peer did not connect within {} s", ANSWER.as_secs());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn expect(r: &mut BufReader<UnixStream>, want: &str) -> Result<(), String> {
    let mut line = String::new();
    match r.read_line(&mut line) {
        Ok(0) => Err(format!("the peer hung up instead of saying {want:?}")),
        Ok(_) if line.trim_end() == want => Ok(()),
        Ok(_) => Err(format!(
            "the peer said {:?} instead of {want:?}",
            line.trim_end()
        )),
        Err(e) => Err(format!("no answer from the peer ({e}), expected {want:?}")),
    }
}

/// `rmap demo`.
pub fn demo(_ctx: &Ctx) -> Result<Code> {
    require_module("demo")?;
    let mut st = Steps { n: 0, failed: None };
    let me = std::process::id();
    let page = pidfd_mem::page_size();
    let words = page / 8;

    say("rmap demo: one process shares a page of its memory with another, changes it while the");
    say("other watches, then takes it back. Contract ids are those of shared/spec/pidfd_mem.md.");
    say("");

    // A page-aligned page inside a buffer of words, without unsafe code.
    let store: Vec<AtomicU64> = (0..2 * words).map(|_| AtomicU64::new(0)).collect();
    let Some(first) = (0..words).find(|&i| store[i].as_ptr() as usize % page == 0) else {
        bail!("no page-aligned word in the buffer");
    };
    let cell = &store[first];
    let addr = cell.as_ptr() as u64;
    cell.store(word("hello"), Ordering::Release);
    st.step(&format!(
        "The parent (pid {me}) keeps an 8-byte word at the start of a page at {addr:#x}. \
         It says \"hello\"."
    ));

    st.step(&format!(
        "pidfd_mem(pidfd_open({me}), 0) gives the parent two fds: a control fd (ctl), \
         which decides what is shared, and an access fd (mem), which reaches it. A process \
         may always do this on itself (contract O1)."
    ));
    let pidfd = pidfd_open(me).map_err(|e| st.fail(&format!("pidfd_open: {e}")))?;
    let (ctl, mem) = match pidfd_mem(&pidfd, 0) {
        Ok(x) => x,
        Err(pidfd_mem::Error::ModuleNotLoaded { .. }) => {
            return Err(anyhow::Error::new(Failure::NoModule(module_help("demo"))))
        }
        Err(e) => return Err(st.fail(&e.to_string())),
    };

    let size = page as u64;
    st.step(&format!(
        "PIDFD_MEM_MAP on ctl: mem[0, {size:#x}) now mirrors the parent's [{addr:#x}, \
         +{size:#x}), read-only. Whoever holds mem reaches this page and nothing else of the \
         parent (M1, P1)."
    ));
    ctl.map(&Grant::new(
        RemoteAddr(addr),
        MemOffset(0),
        size,
        Prot::Read,
    ))
    .map_err(|e| st.fail(&e.to_string()))?;

    let dir = std::env::temp_dir().join(format!("rmap-demo-{me}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let mut guard = Cleanup {
        child: None,
        dir: dir.clone(),
    };
    let sock = dir.join("sock");
    let listener =
        UnixListener::bind(&sock).with_context(|| format!("listening on {}", sock.display()))?;
    let exe = std::env::current_exe().context("finding rmap's own program file")?;
    let child = Command::new(&exe)
        .arg("demo-peer")
        .arg("--socket")
        .arg(&sock)
        .spawn()
        .with_context(|| format!("starting {} demo-peer", exe.display()))?;
    let peer_pid = child.id();
    let child = guard.child.insert(child);
    st.step(&format!(
        "The parent starts the peer, `rmap demo-peer` (pid {peer_pid}): a separate program, \
         exec'd, that shares no memory with the parent. It sends mem to the peer over the \
         unix socket {} with SCM_RIGHTS, in one message with a header that says which \
         window mem holds (section 1: the fd passes like any other).",
        sock.display()
    ));
    let stream = accept_peer(&listener, child).map_err(|e| st.fail(&format!("{e:#}")))?;
    let header = Header {
        pid: me,
        prot: Prot::Read,
        locked: false,
        address: addr,
        offset: 0,
        size,
        view_start: addr,
        view_len: 8,
    };
    send_window(&stream, &header, &mem).map_err(|e| st.fail(&format!("{e:#}")))?;
    stream.set_read_timeout(Some(ANSWER))?;
    let mut answers = BufReader::new(stream.try_clone()?);
    let mut tell = &stream;
    expect(&mut answers, "rw-refused").map_err(|e| st.fail(&e))?;
    expect(&mut answers, "seen hello").map_err(|e| st.fail(&e))?;

    st.step(&format!(
        "The parent stores \"tick 1\" to \"tick {TICKS}\" into its own word, {} ms apart, \
         and sends nothing: the peer polls its mirror and prints each new value (C1: the \
         mirror is the parent's page, not a copy).",
        TICK_GAP.as_millis()
    ));
    for k in 1..=TICKS {
        std::thread::sleep(TICK_GAP);
        let v = format!("tick {k}");
        cell.store(word(&v), Ordering::Release);
        expect(&mut answers, &format!("seen {v}")).map_err(|e| st.fail(&e))?;
    }
    writeln!(tell, "pause")?;
    expect(&mut answers, "paused").map_err(|e| st.fail(&e))?;

    st.step(&format!(
        "PIDFD_MEM_UNMAP of mem[0, {size:#x}): the parent revokes the window. When the ioctl \
         returns, no mirror maps the page any more (U1)."
    ));
    ctl.unmap(MemOffset(0), size)
        .map_err(|e| st.fail(&e.to_string()))?;
    writeln!(tell, "revoked")?;
    let sigbus_ok = if Mirror::catches_sigbus() {
        expect(&mut answers, "sigbus").map_err(|e| st.fail(&e))?;
        true
    } else {
        false
    };

    let status = wait_child(child, ANSWER)?;
    let now = text(cell.load(Ordering::Acquire));
    let last = format!("tick {TICKS}");
    let peer_ok = match status {
        Some(s) if s.success() => true,
        // Where the library cannot catch SIGBUS, it kills the peer: the
        // revocation worked all the same.
        Some(s) if !sigbus_ok && s.signal() == Some(libc::SIGBUS) => true,
        _ => false,
    };
    st.step(&format!(
        "The peer {}, and the parent's word still says \"{now}\": revoking the window took \
         nothing from the parent.",
        match status {
            Some(s) if s.success() => "exited with status 0".to_string(),
            Some(s) if s.signal() == Some(libc::SIGBUS) => "was killed by SIGBUS".to_string(),
            Some(s) => format!("ended with {s}"),
            None => "did not exit".to_string(),
        }
    ));
    if !peer_ok {
        return Err(st.fail("the peer did not end as expected"));
    }
    if now != last {
        return Err(st.fail(&format!("the parent's word says {now:?}, not {last:?}")));
    }
    drop(guard);
    debug_assert!(st.failed.is_none());
    say("");
    say(&format!(
        "demo passed: all {} steps behaved as the contract says.",
        st.n
    ));
    Ok(Code::Ok)
}

fn peer_say(s: &str) {
    say(&wrap("      peer: ", s, 12, 78));
}

fn readable(stream: &UnixStream, wait: Duration) -> Result<bool> {
    let ts = Timespec {
        tv_sec: 0,
        tv_nsec: i64::from(wait.subsec_nanos()),
    };
    let mut fds = [PollFd::new(stream, PollFlags::IN)];
    match pidfd_mem::rustix::event::poll(&mut fds, Some(&ts)) {
        Ok(n) => Ok(n > 0),
        Err(pidfd_mem::rustix::io::Errno::INTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// `rmap demo-peer --socket PATH`: the other side of the demo.
pub fn peer(socket: &Path) -> Result<Code> {
    let started = Instant::now();
    let stream = UnixStream::connect(socket)
        .with_context(|| format!("peer: cannot connect to {}", socket.display()))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let (h, mem) = recv_window(&stream)?;
    let len = usize::try_from(h.size)?;
    let mirror = mem
        .mmap(MemOffset(h.offset), len, Prot::Read)
        .context("peer: mmap of mem")?;
    peer_say(&format!(
        "got mem; mmap(MAP_SHARED, PROT_READ) of mem[{:#x}, {:#x}) is a mirror at {:#x} in \
         the peer (A1).",
        h.offset,
        h.offset + h.size,
        mirror.as_ptr() as usize
    ));
    let mut tell = &stream;
    match mem.mmap(MemOffset(h.offset), len, Prot::ReadWrite) {
        Err(pidfd_mem::Error::AccessDenied { .. }) => {
            peer_say("asking for PROT_WRITE over the read-only grant fails with EACCES (A1).");
            writeln!(tell, "rw-refused")?;
        }
        Err(e) => {
            peer_say(&format!("asking for PROT_WRITE failed otherwise: {e}"));
            writeln!(tell, "rw-other")?;
        }
        Ok(_) => {
            peer_say("asking for PROT_WRITE over the read-only grant succeeded: against A1!");
            writeln!(tell, "rw-allowed")?;
        }
    }
    let off = usize::try_from(h.view_start - h.address)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut last: Option<u64> = None;
    loop {
        if started.elapsed() > PEER_LIFE {
            peer_say("giving up: the parent went quiet");
            return Ok(Code::Other);
        }
        if !reader.buffer().is_empty() || readable(&stream, Duration::from_millis(5))? {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                peer_say("the parent hung up");
                return Ok(Code::Other);
            }
            if line.trim_end() == "pause" {
                writeln!(tell, "paused")?;
                return peer_revoked(&mirror, off, &mut reader, tell);
            }
            continue;
        }
        match mirror.load_u64(off, Ordering::Acquire) {
            Ok(v) if Some(v) != last => {
                last = Some(v);
                let t = text(v);
                peer_say(&format!("the mirror shows \"{t}\""));
                writeln!(tell, "seen {t}")?;
            }
            Ok(_) => {}
            Err(e) => {
                peer_say(&format!("unexpected: {e}"));
                writeln!(tell, "early-fault")?;
                return Ok(Code::Other);
            }
        }
    }
}

fn peer_revoked(
    mirror: &Mirror,
    off: usize,
    reader: &mut BufReader<UnixStream>,
    mut tell: &UnixStream,
) -> Result<Code> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if line.trim_end() != "revoked" {
        peer_say(&format!("unexpected message {:?}", line.trim_end()));
        return Ok(Code::Other);
    }
    if !Mirror::catches_sigbus() {
        peer_say(
            "this architecture cannot catch SIGBUS in a copy: the next access kills the peer \
             with SIGBUS (U1).",
        );
    }
    match mirror.load_u64(off, Ordering::Acquire) {
        Err(MirrorError::Fault { offset, .. }) => {
            peer_say(&format!(
                "the window was revoked: access raised SIGBUS, as the contract's U1 says (at \
                 mirror offset {offset:#x}; the library's fault-handled load made it an error)."
            ));
            writeln!(tell, "sigbus")?;
            Ok(Code::Ok)
        }
        Err(e) => {
            peer_say(&format!("unexpected error after the revocation: {e}"));
            writeln!(tell, "other-error")?;
            Ok(Code::Other)
        }
        Ok(v) => {
            peer_say(&format!(
                "the mirror still shows \"{}\" after the revocation: against U1!",
                text(v)
            ));
            writeln!(tell, "nofault")?;
            Ok(Code::Other)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_hold_short_texts() {
        assert_eq!(text(word("tick 1")), "tick 1");
        assert_eq!(text(word("")), "");
        assert_eq!(text(word("12345678")), "12345678");
        assert_eq!(text(word("123456789")), "12345678");
        assert_eq!(text(u64::MAX), "\u{fffd}".repeat(8));
    }

    #[test]
    fn wrapping() {
        assert_eq!(wrap(" 1. ", "a b c", 4, 78), " 1. a b c");
        assert_eq!(
            wrap(" 1. ", "aaaa bbbb cccc", 4, 12),
            " 1. aaaa\n    bbbb\n    cccc"
        );
        for line in wrap(" 1. ", &"word ".repeat(50), 4, 40).lines() {
            assert!(line.len() <= 40, "{line}");
        }
    }
}
