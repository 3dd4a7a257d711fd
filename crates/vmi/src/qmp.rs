//! A small QMP client: JSON lines over a unix socket.
//!
//! Only what introspection needs: the greeting, `qmp_capabilities`, any
//! command with `execute`, `human-monitor-command` for HMP (`info ramblock`,
//! `info mtree -f`, `gpa2hva`, `xp`), `query-memdev`, `quit`. Events are
//! skipped. Commands are synchronous, one at a time, without ids.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::error::Error;

/// How long one QMP answer may take by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// A connected QMP session, in command mode.
#[derive(Debug)]
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    path: PathBuf,
    version: String,
}

/// One memory backend from `query-memdev`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemDev {
    /// Its id (`pc.ram` for the machine's implicit RAM).
    pub id: Option<String>,
    /// Size in bytes.
    pub size: u64,
    /// `share=on`: QEMU maps it `MAP_SHARED` (memfd, file, shm).
    pub share: bool,
}

/// Parses a `query-memdev` return value.
pub fn parse_memdevs(v: &Value) -> Result<Vec<MemDev>, Error> {
    let list = v
        .as_array()
        .ok_or_else(|| Error::QmpProtocol(format!("query-memdev: not a list: {v}")))?;
    list.iter()
        .map(|d| {
            Ok(MemDev {
                id: d.get("id").and_then(Value::as_str).map(str::to_string),
                size: d
                    .get("size")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| Error::QmpProtocol(format!("query-memdev: no size: {d}")))?,
                share: d.get("share").and_then(Value::as_bool).unwrap_or(false),
            })
        })
        .collect()
}

impl Qmp {
    /// Connects to the QMP socket at `path`, reads the greeting (within
    /// `greeting_timeout`: a monitor that already has a client accepts the
    /// connection but stays silent) and enters command mode.
    pub fn connect(path: &Path, greeting_timeout: Duration) -> Result<Self, Error> {
        let what = || format!("QMP socket {}", path.display());
        let stream = UnixStream::connect(path).map_err(|e| Error::io(what(), e))?;
        stream
            .set_read_timeout(Some(greeting_timeout))
            .map_err(|e| Error::io(what(), e))?;
        let writer = stream.try_clone().map_err(|e| Error::io(what(), e))?;
        let mut q = Self {
            reader: BufReader::new(stream),
            writer,
            path: path.to_path_buf(),
            version: String::new(),
        };
        let greeting = q.read_message()?;
        let v = greeting
            .get("QMP")
            .ok_or_else(|| Error::QmpProtocol(format!("no greeting: {greeting}")))?;
        let ver = &v["version"];
        q.version = match (ver["qemu"]["major"].as_u64(), ver["qemu"]["minor"].as_u64()) {
            (Some(a), Some(b)) => format!(
                "{a}.{b}.{} {}",
                ver["qemu"]["micro"].as_u64().unwrap_or(0),
                ver["package"].as_str().unwrap_or("")
            )
            .trim()
            .to_string(),
            _ => "unknown".into(),
        };
        q.set_timeout(DEFAULT_TIMEOUT)?;
        q.execute("qmp_capabilities", None)?;
        Ok(q)
    }

    /// [`Qmp::connect`], retried until `deadline` while the socket does not
    /// exist yet or refuses (QEMU still starting).
    pub fn connect_until(path: &Path, deadline: Instant) -> Result<Self, Error> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match Self::connect(path, left.max(Duration::from_millis(100))) {
                Ok(q) => return Ok(q),
                Err(Error::Io { source, .. })
                    if Instant::now() < deadline
                        && matches!(
                            source.kind(),
                            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                        ) =>
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Finds and connects to a QMP socket of QEMU process `pid`: each unix
    /// socket its command line names ([`crate::procfs::qmp_sockets`]), in
    /// order, skipping any that stays silent for `greeting_timeout` (a QMP
    /// monitor serves one client at a time) or whose peer is another
    /// process.
    pub fn for_pid(pid: u32, greeting_timeout: Duration) -> Result<Self, Error> {
        let args = crate::procfs::cmdline(pid)?;
        let cwd = crate::procfs::cwd(pid)?;
        let socks = crate::procfs::qmp_sockets(&args, &cwd);
        if socks.is_empty() {
            return Err(Error::NoQmp {
                pid,
                why: "no -qmp unix:PATH or -mon mode=control socket on its command line".into(),
            });
        }
        let mut why = Vec::new();
        for s in socks {
            match Self::connect(&s, greeting_timeout) {
                Ok(q) => match q.peer_pid() {
                    Ok(p) if p == pid => return Ok(q),
                    Ok(p) => why.push(format!("{}: served by pid {p}", s.display())),
                    Err(e) => why.push(e.to_string()),
                },
                Err(e) => why.push(e.to_string()),
            }
        }
        Err(Error::NoQmp {
            pid,
            why: why.join("; "),
        })
    }

    /// Sets how long an answer may take.
    pub fn set_timeout(&mut self, t: Duration) -> Result<(), Error> {
        self.writer
            .set_read_timeout(Some(t))
            .map_err(|e| Error::io(format!("QMP socket {}", self.path.display()), e))
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// QEMU's version from the greeting (`7.2.22 Debian ...`).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The pid of the process at the other end (`SO_PEERCRED`): QEMU's pid.
    pub fn peer_pid(&self) -> Result<u32, Error> {
        let cred = rustix::net::sockopt::socket_peercred(&self.writer)
            .map_err(|e| Error::io(format!("SO_PEERCRED on {}", self.path.display()), e.into()))?;
        Ok(cred.pid.as_raw_nonzero().get().unsigned_abs())
    }

    fn read_message(&mut self) -> Result<Value, Error> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .map_err(|e| Error::io(format!("reading QMP {}", self.path.display()), e))?;
        if n == 0 {
            return Err(Error::QmpProtocol(format!(
                "{}: connection closed",
                self.path.display()
            )));
        }
        serde_json::from_str(&line)
            .map_err(|e| Error::QmpProtocol(format!("bad JSON ({e}): {line:?}")))
    }

    /// Runs `command` with `arguments` and returns its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, Error> {
        let mut msg = json!({ "execute": command });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        let mut line = msg.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .map_err(|e| Error::io(format!("writing QMP {}", self.path.display()), e))?;
        loop {
            let mut v = self.read_message()?;
            if v.get("event").is_some() {
                continue;
            }
            if let Some(r) = v.get_mut("return") {
                return Ok(r.take());
            }
            if let Some(e) = v.get("error") {
                return Err(Error::Qmp {
                    command: command.to_string(),
                    class: e["class"].as_str().unwrap_or("?").to_string(),
                    desc: e["desc"].as_str().unwrap_or("?").to_string(),
                });
            }
            return Err(Error::QmpProtocol(format!("unexpected message: {v}")));
        }
    }

    /// Runs an HMP command line through `human-monitor-command` and returns
    /// its text.
    pub fn hmp(&mut self, command_line: &str) -> Result<String, Error> {
        let r = self.execute(
            "human-monitor-command",
            Some(json!({ "command-line": command_line })),
        )?;
        r.as_str()
            .map(str::to_string)
            .ok_or_else(|| Error::QmpProtocol(format!("{command_line}: not a string: {r}")))
    }

    /// `query-memdev`.
    pub fn query_memdev(&mut self) -> Result<Vec<MemDev>, Error> {
        let v = self.execute("query-memdev", None)?;
        parse_memdevs(&v)
    }

    /// `xp /LENxb GPA`: QEMU's own view of guest-physical memory.
    pub fn xp(&mut self, gpa: u64, len: usize) -> Result<Vec<u8>, Error> {
        let text = self.hmp(&format!("xp /{len}xb {gpa:#x}"))?;
        let (start, bytes) = crate::hmp::parse_xp_bytes(&text)?;
        if start != gpa || bytes.len() != len {
            return Err(Error::QmpProtocol(format!(
                "xp {gpa:#x} {len}: got {} bytes at {start:#x}: {text:?}",
                bytes.len()
            )));
        }
        Ok(bytes)
    }

    /// `quit`: QEMU exits.
    pub fn quit(mut self) -> Result<(), Error> {
        match self.execute("quit", None) {
            Ok(_) => Ok(()),
            // QEMU may close the socket before answering.
            Err(Error::QmpProtocol(m)) if m.ends_with("connection closed") => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memdev_answers() {
        let v: Value = serde_json::from_str(include_str!(
            "../testdata/qemu-7.2/pc-memfd-128m.query-memdev.json"
        ))
        .unwrap();
        let d = parse_memdevs(&v["return"]).unwrap();
        assert_eq!(
            d,
            [MemDev {
                id: Some("m".into()),
                size: 128 << 20,
                share: true
            }]
        );
        let v: Value = serde_json::from_str(include_str!(
            "../testdata/qemu-7.2/pc-anon-128m.query-memdev.json"
        ))
        .unwrap();
        let d = parse_memdevs(&v["return"]).unwrap();
        assert_eq!((d[0].id.as_deref(), d[0].share), (Some("pc.ram"), false));
        assert!(parse_memdevs(&json!({})).is_err());
    }

    /// A fake QMP server on a socket pair: greeting, events between
    /// answers, errors.
    #[test]
    fn client_against_a_fake_server() {
        let dir = std::env::temp_dir().join(format!("vmi-qmp-test-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let sock = dir.join("q.sock");
        let _ = std::fs::remove_file(&sock);
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let server = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            w.write_all(b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 22, \"minor\": 2, \"major\": 7}, \"package\": \"Debian\"}, \"capabilities\": []}}\r\n").unwrap();
            let mut line = String::new();
            let mut answers = [
                "{\"return\": {}}\r\n".to_string(),
                "{\"timestamp\": {}, \"event\": \"STOP\"}\r\n{\"return\": \"0000000000001000: 0x01 0x02\\r\\n\"}\r\n".to_string(),
                "{\"error\": {\"class\": \"GenericError\", \"desc\": \"nope\"}}\r\n".to_string(),
            ]
            .into_iter();
            while r.read_line(&mut line).unwrap() > 0 {
                let Some(a) = answers.next() else { break };
                w.write_all(a.as_bytes()).unwrap();
                line.clear();
            }
        });
        let mut q = Qmp::connect(&sock, Duration::from_secs(5)).unwrap();
        assert_eq!(q.version(), "7.2.22 Debian");
        assert_eq!(q.peer_pid().unwrap(), std::process::id());
        assert_eq!(q.xp(0x1000, 2).unwrap(), [1, 2]);
        match q.hmp("bad") {
            Err(Error::Qmp { class, desc, .. }) => {
                assert_eq!((class.as_str(), desc.as_str()), ("GenericError", "nope"))
            }
            r => panic!("{r:?}"),
        }
        drop(q);
        server.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
