//! Host tests of the `rmap` binary, against `rmap target-helper` (a child
//! process whose buffers are known). On the host there is no module, so
//! the copy commands go through process_vm_readv/writev and the mirror
//! commands exit 5; where `/dev/pidfd_mem` exists the checks that depend on
//! its absence are skipped.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};

use serde_json::Value;

const RMAP: &str = env!("CARGO_BIN_EXE_rmap");

fn module_loaded() -> bool {
    pidfd_mem::module_loaded()
}

/// The helper's `buf` contents (see `src/helper.rs`).
fn pattern(len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let tag = b"rmap-target-helper";
    v[..tag.len()].copy_from_slice(tag);
    v
}

struct Helper {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    pid: u32,
    buf: u64,
    file: u64,
    page: u64,
}

fn hex_field(v: &Value, k: &str) -> u64 {
    let s = v[k].as_str().unwrap_or_else(|| panic!("{k} in {v}"));
    u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap()
}

impl Helper {
    fn start() -> Self {
        let mut child = Command::new(RMAP)
            .arg("target-helper")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn rmap target-helper");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let v: Value = serde_json::from_str(&line).expect("helper's first line is JSON");
        Helper {
            pid: v["pid"].as_u64().unwrap() as u32,
            buf: hex_field(&v, "buf"),
            file: hex_field(&v, "file"),
            page: v["page"].as_u64().unwrap(),
            child,
            stdin,
            stdout,
        }
    }

    /// What the helper itself sees in `buf[off..off+len]`, in hex.
    fn show(&mut self, off: usize, len: usize) -> String {
        writeln!(self.stdin, "show {off} {len}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim().to_string()
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rmap(args: &[&str]) -> Output {
    Command::new(RMAP)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run rmap")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[track_caller]
fn assert_code(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("rmap-cli-{}-{name}", std::process::id()))
}

#[test]
fn read_gives_the_real_bytes() {
    let h = Helper::start();
    let (pid, buf) = (h.pid.to_string(), format!("{:#x}", h.buf));
    let o = rmap(&["read", &pid, &buf, "300", "--raw"]);
    assert_code(&o, 0);
    assert_eq!(o.stdout, pattern(300));
    if !module_loaded() {
        assert!(
            stderr(&o).contains("pidfd_mem module not loaded: using process_vm_readv"),
            "{}",
            stderr(&o)
        );
        assert_eq!(stderr(&o).lines().count(), 1, "said once: {}", stderr(&o));
    }
    // Not a terminal: raw by default.
    let o = rmap(&["read", &pid, &buf, "18"]);
    assert_code(&o, 0);
    assert_eq!(o.stdout, b"rmap-target-helper");
    // Decimal address, length with a suffix.
    let o = rmap(&["read", &pid, &h.buf.to_string(), "1k"]);
    assert_code(&o, 0);
    assert_eq!(o.stdout, pattern(1024));
}

#[test]
fn read_hex_and_json() {
    let h = Helper::start();
    let (pid, buf) = (h.pid.to_string(), format!("{:#x}", h.buf));
    let o = rmap(&["read", &pid, &buf, "20", "--hex"]);
    assert_code(&o, 0);
    let text = stdout(&o);
    let first = text.lines().next().unwrap();
    assert!(
        first.starts_with(&format!("0x{:012x}  72 6d 61 70", h.buf)),
        "{text}"
    );
    assert!(first.ends_with("|rmap-target-help|"), "{text}");
    assert_eq!(text.lines().count(), 2, "{text}");

    let o = rmap(&["--json", "read", &pid, &buf, "4"]);
    assert_code(&o, 0);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["hex"], "726d6170");
    assert_eq!(v["len"], 4);
    assert_eq!(v["pid"], h.pid);
    assert_eq!(hex_field(&v, "address"), h.buf);
}

#[test]
fn symbolic_addresses() {
    let h = Helper::start();
    let pid = h.pid.to_string();
    // The helper is rmap itself: its first mapping is its ELF header.
    let o = rmap(&["read", &pid, "rmap+0", "4", "--raw"]);
    assert_code(&o, 0);
    assert_eq!(o.stdout, b"\x7fELF");
    let o = rmap(&["read", &pid, "rmap+1", "3", "--raw"]);
    assert_code(&o, 0);
    assert_eq!(o.stdout, b"ELF");
    // The memfd by name, plus an offset into its second page.
    let o = rmap(&["read", &pid, "memfd:rmap-helper+0x1000", "2", "--raw"]);
    assert_code(&o, 0);
    assert_eq!(o.stdout, [0x22, 0x22]);
    // [heap]+offset, when the buffer is on the heap (glibc puts 64 KiB there).
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let heap = maps
        .lines()
        .find(|l| l.ends_with("[heap]"))
        .and_then(|l| l.split('-').next())
        .and_then(|s| u64::from_str_radix(s, 16).ok());
    if let Some(start) = heap.filter(|&s| s <= h.buf) {
        let expr = format!("[heap]+{:#x}", h.buf - start);
        let o = rmap(&["read", &pid, &expr, "18", "--raw"]);
        assert_code(&o, 0);
        assert_eq!(o.stdout, b"rmap-target-helper");
    }
    // [stack] resolves.
    let o = rmap(&["read", &pid, "[stack]+8", "8", "--raw"]);
    assert_code(&o, 0);
    assert_eq!(o.stdout.len(), 8);
}

#[test]
fn write_changes_the_target() {
    let mut h = Helper::start();
    let pid = h.pid.to_string();
    let at = format!("{:#x}", h.buf + 4);
    let o = rmap(&["write", &pid, &at, "--hex", "de ad be ef"]);
    assert_code(&o, 0);
    assert!(stdout(&o).contains("wrote 4 bytes"), "{}", stdout(&o));
    if !module_loaded() {
        assert!(
            stderr(&o).contains("pidfd_mem module not loaded: using process_vm_writev"),
            "{}",
            stderr(&o)
        );
    }
    assert_eq!(h.show(0, 10), "726d6170deadbeef6765");

    let f = tmp("write.bin");
    std::fs::write(&f, b"XYZ").unwrap();
    let o = rmap(&[
        "--json",
        "write",
        &pid,
        &format!("{:#x}", h.buf + 100),
        "--file",
        f.to_str().unwrap(),
    ]);
    let _ = std::fs::remove_file(&f);
    assert_code(&o, 0);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["written"], 3);
    assert_eq!(h.show(100, 3), "58595a");
    // And rmap reads back what it wrote.
    let o = rmap(&["read", &pid, &format!("{:#x}", h.buf + 100), "3", "--raw"]);
    assert_eq!(o.stdout, b"XYZ");
}

#[test]
fn write_into_read_only_memory_fails() {
    let h = Helper::start();
    let o = rmap(&[
        "write",
        &h.pid.to_string(),
        &format!("{:#x}", h.file),
        "--hex",
        "00",
    ]);
    assert_code(&o, 1);
    assert!(stderr(&o).contains("not writable"), "{}", stderr(&o));
}

#[test]
fn maps_lists_regions_and_kinds() {
    let h = Helper::start();
    let pid = h.pid.to_string();
    let o = rmap(&["maps", &pid]);
    assert_code(&o, 0);
    let text = stdout(&o);
    assert!(text.contains("[stack]"), "{text}");
    assert!(text.contains("/memfd:rmap-helper"), "{text}");
    let o = rmap(&["--json", "maps", &pid]);
    assert_code(&o, 0);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let list = v.as_array().unwrap();
    let kind_of = |addr: u64| {
        list.iter()
            .find(|r| hex_field(r, "start") <= addr && addr < hex_field(r, "end"))
            .map(|r| r["kind"].as_str().unwrap().to_string())
    };
    assert_eq!(kind_of(h.file).as_deref(), Some("memfd"));
    assert!(list.iter().any(|r| r["kind"] == "stack"));
    assert!(list
        .iter()
        .any(|r| r["kind"] == "file" && r["perms"] == "r-xp"));
    let memfd = list
        .iter()
        .find(|r| hex_field(r, "start") == h.file)
        .unwrap();
    assert_eq!(memfd["size"], 3 * h.page);
    assert_eq!(memfd["perms"], "r--s");
}

#[test]
fn dump_writes_zeros_for_holes_and_lists_them() {
    let h = Helper::start();
    let out = tmp("dump-range.bin");
    let range = format!("{:#x}-{:#x}", h.file, h.file + 3 * h.page);
    let o = rmap(&[
        "--json",
        "dump",
        &h.pid.to_string(),
        "--range",
        &range,
        "-o",
        out.to_str().unwrap(),
    ]);
    let data = std::fs::read(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    assert_code(&o, 0);
    let p = h.page as usize;
    assert_eq!(data.len(), 3 * p);
    assert!(data[..p].iter().all(|&b| b == 0x11));
    assert!(data[p..2 * p].iter().all(|&b| b == 0x22));
    assert!(data[2 * p..].iter().all(|&b| b == 0));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let holes = v["holes"].as_array().unwrap();
    assert_eq!(holes.len(), 1, "{v}");
    assert_eq!(hex_field(&holes[0], "start"), h.file + 2 * h.page);
    assert_eq!(hex_field(&holes[0], "end"), h.file + 3 * h.page);
    assert_eq!(holes[0]["reason"], "unreadable");
    assert_eq!(v["bytes"], 3 * h.page);

    // Plain words for people, on the same dump.
    let o = rmap(&[
        "dump",
        &h.pid.to_string(),
        "--range",
        &range,
        "-o",
        out.to_str().unwrap(),
    ]);
    let _ = std::fs::remove_file(&out);
    assert_code(&o, 0);
    assert!(
        stdout(&o).contains("holes, written as zeros (1)"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn dump_whole_process() {
    let h = Helper::start();
    let out = tmp("dump-all.bin");
    let o = rmap(&[
        "--json",
        "dump",
        &h.pid.to_string(),
        "-o",
        out.to_str().unwrap(),
    ]);
    let data = std::fs::read(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    assert_code(&o, 0);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["bytes"].as_u64().unwrap(), data.len() as u64);
    // The helper's buffer is in the file where the listing says.
    let piece = v["pieces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| hex_field(p, "start") <= h.buf && h.buf < hex_field(p, "end"))
        .expect("a piece holds buf");
    let at = (piece["file_offset"].as_u64().unwrap() + h.buf - hex_field(piece, "start")) as usize;
    assert_eq!(&data[at..at + 300], &pattern(300)[..]);
    // The memfd's last page is a hole; [vsyscall] is skipped.
    assert!(v["holes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| hex_field(x, "start") == h.file + 2 * h.page));
    assert!(v["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["path"] == "[vsyscall]"));
}

#[test]
fn bad_input_exits_2_with_a_clear_message() {
    let h = Helper::start();
    let pid = h.pid.to_string();
    let buf = format!("{:#x}", h.buf);
    let cases: &[(&[&str], &str)] = &[
        (&["read", &pid, "zz", "4"], "no mapping named zz"),
        (&["read", &pid, "12zz", "4"], "not an address"),
        (&["read", &pid, &buf, "0"], "asks for nothing"),
        (&["read", "notapid", &buf, "4"], "not a process id"),
        (
            &["read", &pid, "[nosuch]+4", "4"],
            "no region named [nosuch]",
        ),
        (
            &["read", &pid, "nosuchlib.so+4", "4"],
            "no mapping named nosuchlib.so",
        ),
        (
            &["read", &pid, "[heap]-0xffffffffffff", "4"],
            "outside the address space",
        ),
        (&["read", &pid, "0xffffffffffffffff", "2"], "overflows"),
        (&["read", &pid, &buf, "2g"], "at most 1 GiB"),
        (
            &["write", &pid, &buf, "--hex", "abc"],
            "odd number of digits",
        ),
        (&["write", &pid, &buf, "--hex", "zz"], "not hex"),
        (&["write", &pid, &buf], "--hex"),
        (
            &["write", &pid, &buf, "--file", "/nonexistent/x"],
            "cannot read /nonexistent/x",
        ),
        (
            &["dump", &pid, "--range", "0x2000-0x1000", "-o", "/dev/null"],
            "not above its start",
        ),
        (
            &["dump", &pid, "--range", "12-", "-o", "/dev/null"],
            "not a range",
        ),
        (&["read", &pid], "required"),
        (&["frobnicate"], "unrecognized subcommand"),
    ];
    for (args, needle) in cases {
        let o = rmap(args);
        assert_code(&o, 2);
        assert!(
            stderr(&o).contains(needle),
            "{args:?}: expected {needle:?} in {}",
            stderr(&o)
        );
    }
}

#[test]
fn unreadable_memory_is_exit_1_and_says_why() {
    let h = Helper::start();
    let o = rmap(&[
        "read",
        &h.pid.to_string(),
        &format!("{:#x}", h.file + 2 * h.page),
        "4",
    ]);
    assert_code(&o, 1);
    assert!(stderr(&o).contains("cannot read"), "{}", stderr(&o));
    let o = rmap(&["read", &h.pid.to_string(), "0x1000", "4"]);
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("nothing is mapped there"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_gone_target_exits_4() {
    let mut c = Command::new("true").spawn().unwrap();
    let pid = c.id().to_string();
    c.wait().unwrap();
    for args in [
        &["read", &pid, "0x1000", "4"][..],
        &["maps", &pid],
        &["dump", &pid, "-o", "/dev/null"],
        &["read", &pid, "[heap]", "4"],
    ] {
        let o = rmap(args);
        assert_code(&o, 4);
    }
}

#[test]
fn mirror_commands_need_the_module() {
    if module_loaded() {
        return;
    }
    let h = Helper::start();
    let pid = h.pid.to_string();
    let buf = format!("{:#x}", h.buf);
    let sock = tmp("share.sock");
    let sock = sock.to_str().unwrap();
    let range = format!("{buf}-{:#x}", h.buf + 16);
    for args in [
        &["watch", &pid, &buf, "16", "--count", "1"][..],
        &["share", &pid, "--range", &range, "--socket", sock],
        &["attach", "--socket", sock],
        &["demo"],
    ] {
        let o = rmap(args);
        assert_code(&o, 5);
        let e = stderr(&o);
        assert!(e.contains("insmod kmod/pidfd_mem.ko"), "{args:?}: {e}");
        assert!(e.contains("make -C kmod"), "{args:?}: {e}");
        assert!(
            e.contains("cargo xtask run -- target/release/rmap"),
            "{args:?}: {e}"
        );
    }
    assert!(!Path::new(sock).exists());
}

#[test]
fn help_documents_exit_codes_and_examples() {
    let o = rmap(&["--help"]);
    assert_code(&o, 0);
    let t = stdout(&o);
    for needle in [
        "Exit codes:",
        "4  the target is gone",
        "Examples:",
        "rmap demo",
    ] {
        assert!(t.contains(needle), "{needle}: {t}");
    }
    assert!(!t.contains("target-helper"), "hidden: {t}");
    let o = rmap(&["read", "--help"]);
    assert_code(&o, 0);
    assert!(stdout(&o).contains("[heap]"));
}
