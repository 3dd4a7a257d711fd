//! Running the real `rmap` binary and its `target-helper`, with deadlines.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

/// How long one rmap command may take (TCG is slow).
pub const RUN_LIMIT: Duration = Duration::from_secs(120);
/// How long to wait for one line of a running command.
pub const LINE_LIMIT: Duration = Duration::from_secs(60);

/// The `rmap` binary next to this program (`target/release/rmap`).
pub fn rmap_exe() -> Result<PathBuf> {
    let me = std::env::current_exe().context("finding this program's path")?;
    let exe = me
        .parent()
        .context("this program has no directory")?
        .join("rmap");
    ensure!(
        exe.exists(),
        "{} does not exist: build it with `cargo build --release -p rmap`",
        exe.display()
    );
    Ok(exe)
}

/// A fresh path under `/tmp` (the guest's own tmpfs) for `name`.
pub fn tmp(name: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    PathBuf::from(format!("/tmp/rmap-guest-{}-{n}-{name}", std::process::id()))
}

/// Removes a file when dropped.
pub struct TmpFile(pub PathBuf);

impl TmpFile {
    /// A fresh path (nothing created yet).
    pub fn new(name: &str) -> Self {
        Self(tmp(name))
    }

    /// The path as a string.
    pub fn s(&self) -> &str {
        self.0.to_str().unwrap_or("/tmp/invalid")
    }
}

impl Drop for TmpFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The helper's `buf` contents (as `rmap target-helper` makes them: see
/// `src/helper.rs`).
pub fn pattern(len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let tag = b"rmap-target-helper";
    v[..tag.len()].copy_from_slice(tag);
    v
}

/// Lowercase hex of `b`.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `"0x..."` of a JSON field as a number.
pub fn hex_field(v: &Value, k: &str) -> Result<u64> {
    let s = v[k]
        .as_str()
        .with_context(|| format!("no string {k:?} in {v}"))?;
    u64::from_str_radix(s.trim_start_matches("0x"), 16).with_context(|| format!("{k} = {s:?}"))
}

/// The end of a command.
pub struct Out {
    /// The command line, for messages.
    pub what: String,
    /// Its status.
    pub status: ExitStatus,
    /// Its stdout.
    pub stdout: Vec<u8>,
    /// Its stderr.
    pub stderr: String,
}

impl Out {
    /// Stdout as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Stdout as one JSON value.
    pub fn json(&self) -> Result<Value> {
        serde_json::from_slice(&self.stdout)
            .with_context(|| format!("{}: stdout is not JSON: {}", self.what, self.text()))
    }

    /// Fails unless it exited with `code`.
    pub fn code(&self, code: i32) -> Result<&Self> {
        if self.status.code() != Some(code) {
            bail!(
                "{}: expected exit {code}, got {}\nstdout: {}\nstderr: {}",
                self.what,
                describe(self.status),
                self.text().trim_end(),
                self.stderr.trim_end()
            );
        }
        Ok(self)
    }

    /// Fails unless stderr contains `needle`.
    pub fn says(&self, needle: &str) -> Result<&Self> {
        ensure!(
            self.stderr.contains(needle),
            "{}: expected {needle:?} on stderr, got: {}",
            self.what,
            self.stderr.trim_end()
        );
        Ok(self)
    }

    /// Fails if stderr says that rmap fell back to process_vm_*.
    pub fn used_module(&self) -> Result<&Self> {
        ensure!(
            !self.stderr.contains("not loaded"),
            "{}: fell back without the module: {}",
            self.what,
            self.stderr
        );
        Ok(self)
    }
}

fn describe(s: ExitStatus) -> String {
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => format!("{s}"),
    }
}

/// How to start rmap.
#[derive(Clone, Default)]
pub struct Opts<'a> {
    /// Run as this uid and gid (root drops to it before exec).
    pub uid: Option<u32>,
    /// Bytes on stdin (else /dev/null).
    pub stdin: Option<&'a [u8]>,
}

fn command(args: &[&str], o: &Opts<'_>) -> Result<Command> {
    let mut c = Command::new(rmap_exe()?);
    c.args(args);
    if let Some(uid) = o.uid {
        // std drops the supplementary groups too when root sets a uid.
        c.uid(uid).gid(uid);
    }
    Ok(c)
}

fn line_of(args: &[&str]) -> String {
    format!("rmap {}", args.join(" "))
}

/// Runs `rmap ARGS` to its end (killed after [`RUN_LIMIT`]).
pub fn rmap(args: &[&str]) -> Result<Out> {
    rmap_with(args, &Opts::default())
}

/// Runs `rmap ARGS` with options.
pub fn rmap_with(args: &[&str], o: &Opts<'_>) -> Result<Out> {
    let what = line_of(args);
    let out = TmpFile::new("stdout");
    let err = TmpFile::new("stderr");
    let mut c = command(args, o)?;
    c.stdout(File::create(&out.0)?)
        .stderr(File::create(&err.0)?);
    c.stdin(if o.stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = c.spawn().with_context(|| format!("starting {what}"))?;
    if let (Some(data), Some(mut pipe)) = (o.stdin, child.stdin.take()) {
        pipe.write_all(data).context("writing stdin")?;
    }
    let status = wait_for(&mut child, RUN_LIMIT).with_context(|| what.clone())?;
    Ok(Out {
        what,
        status,
        stdout: std::fs::read(&out.0)?,
        stderr: String::from_utf8_lossy(&std::fs::read(&err.0)?).into_owned(),
    })
}

/// Waits for `child` at most `limit`, then kills it and fails.
fn wait_for(child: &mut Child, limit: Duration) -> Result<ExitStatus> {
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(s);
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            bail!("still running after {} s: killed", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A running rmap (watch, share, attach) whose stdout is read line by line.
pub struct Running {
    what: String,
    child: Child,
    lines: Receiver<String>,
    err: TmpFile,
}

impl Running {
    /// Starts `rmap ARGS`.
    pub fn start(args: &[&str]) -> Result<Self> {
        Self::start_with(args, &Opts::default())
    }

    /// Starts `rmap ARGS` with options (no stdin data).
    pub fn start_with(args: &[&str], o: &Opts<'_>) -> Result<Self> {
        let what = line_of(args);
        let err = TmpFile::new("stderr");
        let mut c = command(args, o)?;
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&err.0)?);
        let mut child = c.spawn().with_context(|| format!("starting {what}"))?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            what,
            child,
            lines,
            err,
        })
    }

    /// The next line of stdout, waiting at most [`LINE_LIMIT`].
    pub fn line(&mut self) -> Result<String> {
        match self.lines.recv_timeout(LINE_LIMIT) {
            Ok(l) => Ok(l),
            Err(RecvTimeoutError::Timeout) => bail!(
                "{}: no output line within {} s; stderr: {}",
                self.what,
                LINE_LIMIT.as_secs(),
                self.stderr()
            ),
            Err(RecvTimeoutError::Disconnected) => {
                let st = self.child.try_wait().ok().flatten();
                bail!(
                    "{}: stdout closed ({}); stderr: {}",
                    self.what,
                    st.map(describe).unwrap_or_else(|| "still running".into()),
                    self.stderr()
                )
            }
        }
    }

    /// The next line of stdout as JSON.
    pub fn json(&mut self) -> Result<Value> {
        let l = self.line()?;
        serde_json::from_str(&l).with_context(|| format!("{}: not JSON: {l}", self.what))
    }

    fn stderr(&self) -> String {
        std::fs::read(&self.err.0)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Waits for the end (at most [`RUN_LIMIT`]); the lines not read yet
    /// are its stdout.
    pub fn finish(mut self) -> Result<Out> {
        let status = wait_for(&mut self.child, RUN_LIMIT).with_context(|| self.what.clone())?;
        let mut rest = String::new();
        // The reader thread ends at EOF, which follows the exit.
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
            rest.push_str(&l);
            rest.push('\n');
        }
        Ok(Out {
            what: self.what.clone(),
            status,
            stdout: rest.into_bytes(),
            stderr: self.stderr(),
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `rmap target-helper`: a real target whose buffers are known.
pub struct Helper {
    child: Child,
    stdin: ChildStdin,
    stdout: Receiver<String>,
    /// Its pid.
    pub pid: u32,
    /// Address of its 64 KiB `buf` ([`pattern`]).
    pub buf: u64,
    /// Length of `buf`.
    pub len: u64,
    /// Address of its 3-page memfd mapping (page 0: 0x11, page 1: 0x22,
    /// page 2: beyond the file's end), read-only and shared.
    pub file: u64,
    /// The page size.
    pub page: u64,
}

impl Helper {
    /// Starts it and reads where its buffers are.
    pub fn start() -> Result<Self> {
        let mut child = Command::new(rmap_exe()?)
            .arg("target-helper")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting rmap target-helper")?;
        let stdin = child.stdin.take().context("no stdin pipe")?;
        let out: ChildStdout = child.stdout.take().context("no stdout pipe")?;
        let (tx, stdout) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = stdout
            .recv_timeout(LINE_LIMIT)
            .context("rmap target-helper said nothing")?;
        let v: Value = serde_json::from_str(&first)
            .with_context(|| format!("target-helper's first line is not JSON: {first}"))?;
        let pid = v["pid"].as_u64().context("pid")? as u32;
        ensure!(
            pid == child.id(),
            "helper says pid {pid}, is {}",
            child.id()
        );
        Ok(Self {
            pid,
            buf: hex_field(&v, "buf")?,
            len: v["len"].as_u64().context("len")?,
            file: hex_field(&v, "file")?,
            page: v["page"].as_u64().context("page")?,
            child,
            stdin,
            stdout,
        })
    }

    /// Its pid as an argument.
    pub fn pid_arg(&self) -> String {
        self.pid.to_string()
    }

    /// `buf + off` as an argument.
    pub fn at(&self, off: u64) -> String {
        format!("{:#x}", self.buf + off)
    }

    fn ask(&mut self, line: &str) -> Result<String> {
        writeln!(self.stdin, "{line}")?;
        self.stdin.flush()?;
        let answer = self
            .stdout
            .recv_timeout(LINE_LIMIT)
            .with_context(|| format!("target-helper did not answer {line:?}"))?;
        Ok(answer.trim().to_string())
    }

    /// What the helper itself sees in `buf[off..off+len]`, in hex.
    pub fn show(&mut self, off: usize, len: usize) -> Result<String> {
        self.ask(&format!("show {off} {len}"))
    }

    /// Makes the helper store `bytes` at `buf[off..]` itself.
    pub fn set(&mut self, off: usize, bytes: &[u8]) -> Result<()> {
        let a = self.ask(&format!("set {off} {}", hex(bytes)))?;
        ensure!(a == "ok", "target-helper answered {a:?} to set");
        Ok(())
    }

    /// Makes the helper exit and reaps it.
    pub fn quit(&mut self) -> Result<()> {
        writeln!(self.stdin, "quit")?;
        self.stdin.flush()?;
        let st = wait_for(&mut self.child, RUN_LIMIT).context("target-helper quit")?;
        ensure!(st.success(), "target-helper ended with {}", describe(st));
        Ok(())
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The pid of a process that has exited and been reaped.
pub fn dead_pid() -> Result<u32> {
    let mut c = Command::new("true").spawn().context("spawning true")?;
    let pid = c.id();
    c.wait()?;
    Ok(pid)
}
