//! The tests: every subcommand of `rmap` on a real target with the module.

use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use pidfd_mem::{pass, Error, MemOffset, Prot};
use serde_json::Value;

use crate::util::{
    dead_pid, hex, hex_field, pattern, rmap, rmap_with, Helper, Opts, Out, Running, TmpFile,
};
use crate::{note, Skip, Test};

pub fn all() -> Vec<Test> {
    let t = |name, run| Test::anyhow(name, run).timeout(Duration::from_secs(300));
    vec![
        t("rmap_maps_lists_the_targets_regions", maps),
        t("rmap_read_raw_hex_json_via_pidfd_mem", read_formats),
        t("rmap_read_symbolic_addresses", read_symbolic),
        t("rmap_read_hole_fails_and_says_why", read_hole),
        t("rmap_write_hex_file_stdin_seen_by_target", write_bytes),
        t("rmap_write_read_only_region_fails", write_read_only),
        t("rmap_watch_sees_the_targets_change", watch_change),
        t("rmap_watch_hole_is_sigbus_exit_1", watch_hole),
        t(
            "rmap_watch_cold_page_next_to_a_hole_is_readable",
            watch_cold_page_next_to_hole,
        ),
        t("rmap_watch_target_exit_is_4", watch_target_exit),
        t("rmap_dump_range_zeros_and_lists_holes", dump_range),
        t("rmap_dump_whole_process", dump_whole),
        t("rmap_share_attach_read_write_window", share_read_write),
        t("rmap_share_read_only_locked", share_read_only_locked),
        t("rmap_share_target_exit_is_4", share_target_exit),
        t("rmap_demo_passes", demo),
        t("rmap_bad_input_exit_2_every_subcommand", bad_input),
        t("rmap_attach_bad_sockets_exit_2", attach_bad_sockets),
        t("rmap_no_rights_exit_3_as_uid_65534", no_rights),
        t("rmap_target_gone_exit_4", target_gone),
    ]
}

/// Fails unless the `0x...` field `k` of `v` is `want`.
fn field_is(v: &Value, k: &str, want: u64) -> Result<()> {
    let got = hex_field(v, k)?;
    ensure!(got == want, "{k}: {got:#x}, expected {want:#x} in {v}");
    Ok(())
}

fn maps() -> Result<()> {
    let h = Helper::start()?;
    let pid = h.pid_arg();
    let o = rmap(&["maps", &pid])?;
    o.code(0)?;
    let text = o.text();
    for needle in [
        format!("process {pid}: "),
        "[stack]".into(),
        "/memfd:rmap-helper".into(),
        "START".into(),
    ] {
        ensure!(text.contains(&needle), "no {needle:?} in: {text}");
    }
    let o = rmap(&["--json", "maps", &pid])?;
    o.code(0)?;
    let v = o.json()?;
    let list = v.as_array().context("maps --json is an array")?;
    let find = |addr: u64| -> Result<&Value> {
        for r in list {
            if hex_field(r, "start")? <= addr && addr < hex_field(r, "end")? {
                return Ok(r);
            }
        }
        bail!("no region holds {addr:#x}")
    };
    let m = find(h.file)?;
    ensure!(m["kind"] == "memfd", "{m}");
    ensure!(m["perms"] == "r--s", "{m}");
    ensure!(m["size"] == 3 * h.page, "{m}");
    field_is(m, "start", h.file)?;
    let b = find(h.buf)?;
    ensure!(b["perms"] == "rw-p", "{b}");
    ensure!(
        b["kind"] == "heap" || b["kind"] == "anon",
        "buf's region: {b}"
    );
    ensure!(list.iter().any(|r| r["kind"] == "stack"));
    ensure!(list
        .iter()
        .any(|r| r["kind"] == "file" && r["perms"] == "r-xp"));
    // The listing is /proc's: the same regions in the same order.
    let proc_maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
    ensure!(
        proc_maps.lines().count() == list.len(),
        "{} regions listed, /proc/{pid}/maps has {}",
        list.len(),
        proc_maps.lines().count()
    );
    Ok(())
}

fn read_formats() -> Result<()> {
    let h = Helper::start()?;
    let (pid, buf) = (h.pid_arg(), h.at(0));
    let o = rmap(&["read", &pid, &buf, "300", "--raw"])?;
    o.code(0)?.used_module()?;
    ensure!(o.stdout == pattern(300), "--raw: {:?}", o.text());
    ensure!(o.stderr.is_empty(), "quiet with the module: {}", o.stderr);
    // Not a terminal: raw by default.
    let o = rmap(&["read", &pid, &buf, "18"])?;
    o.code(0)?;
    ensure!(o.stdout == b"rmap-target-helper", "{:?}", o.text());
    // More than one pread's worth, at an odd address, decimal, with a suffix.
    let o = rmap(&["read", &pid, &(h.buf + 1).to_string(), "40k", "--raw"])?;
    o.code(0)?;
    ensure!(o.stdout[..] == pattern(40 * 1024 + 1)[1..], "40k at buf+1");

    let o = rmap(&["read", &pid, &buf, "20", "--hex"])?;
    o.code(0)?;
    let text = o.text();
    let lines: Vec<&str> = text.lines().collect();
    ensure!(lines.len() == 2, "{text}");
    let first = format!(
        "0x{:012x}  72 6d 61 70 2d 74 61 72  67 65 74 2d 68 65 6c 70  |rmap-target-help|",
        h.buf
    );
    ensure!(lines[0] == first, "{:?} != {first:?}", lines[0]);
    ensure!(
        lines[1].starts_with(&format!("0x{:012x}  65 72 12 13", h.buf + 16)),
        "{}",
        lines[1]
    );
    ensure!(lines[1].ends_with("|er..|"), "{}", lines[1]);

    let o = rmap(&["--json", "read", &pid, &h.at(0x100), "64"])?;
    o.code(0)?;
    let v = o.json()?;
    ensure!(v["via"] == "pidfd_mem", "the module copies: {v}");
    ensure!(v["hex"] == hex(&pattern(0x140)[0x100..]), "{v}");
    ensure!(v["len"] == 64 && v["pid"] == h.pid, "{v}");
    field_is(&v, "address", h.buf + 0x100)?;
    Ok(())
}

fn read_symbolic() -> Result<()> {
    let h = Helper::start()?;
    let pid = h.pid_arg();
    // The helper is rmap itself: its lowest mapping is its ELF header.
    let o = rmap(&["read", &pid, "rmap+0", "4", "--raw"])?;
    o.code(0)?;
    ensure!(o.stdout == b"\x7fELF", "{:?}", o.stdout);
    let o = rmap(&["read", &pid, "rmap+2-1", "3", "--raw"])?;
    o.code(0)?;
    ensure!(o.stdout == b"ELF", "{:?}", o.stdout);
    // The memfd by name, into its second page.
    let o = rmap(&["read", &pid, "memfd:rmap-helper+0x1000", "2", "--raw"])?;
    o.code(0)?;
    ensure!(o.stdout == [0x22, 0x22], "{:?}", o.stdout);
    let o = rmap(&["read", &pid, "/memfd:rmap-helper+0xfff", "2", "--raw"])?;
    o.code(0)?;
    ensure!(o.stdout == [0x11, 0x22], "{:?}", o.stdout);
    // [heap]+offset, when buf is on the heap.
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
    let heap = maps
        .lines()
        .find(|l| l.ends_with("[heap]"))
        .and_then(|l| l.split('-').next())
        .and_then(|s| u64::from_str_radix(s, 16).ok());
    match heap {
        Some(start) if start <= h.buf => {
            let expr = format!("[heap]+{:#x}", h.buf - start);
            let o = rmap(&["read", &pid, &expr, "18", "--raw"])?;
            o.code(0)?;
            ensure!(o.stdout == b"rmap-target-helper", "{expr}: {:?}", o.text());
        }
        _ => note("buf is not on the heap: [heap]+N not checked"),
    }
    // [stack] resolves and reads what /proc says is there.
    let o = rmap(&["--json", "read", &pid, "[stack]+8", "8"])?;
    o.code(0)?;
    let v = o.json()?;
    let stack = maps
        .lines()
        .find(|l| l.ends_with("[stack]"))
        .and_then(|l| l.split('-').next())
        .and_then(|s| u64::from_str_radix(s, 16).ok())
        .context("no [stack] in /proc/PID/maps")?;
    field_is(&v, "address", stack + 8)?;
    ensure!(v["hex"].as_str().map(str::len) == Some(16), "{v}");
    Ok(())
}

fn read_hole() -> Result<()> {
    let h = Helper::start()?;
    let pid = h.pid_arg();
    // The memfd's third page lies beyond the file's end.
    let at = format!("{:#x}", h.file + 2 * h.page);
    let o = rmap(&["read", &pid, &at, "4"])?;
    o.code(1)?.says("cannot read")?.says("beyond the end")?;
    // A read that starts in page 1 and runs into page 2 stops there.
    let at = format!("{:#x}", h.file + 2 * h.page - 4);
    let o = rmap(&["read", &pid, &at, "8"])?;
    o.code(1)?.says("got 4 of 8 bytes")?;
    let o = rmap(&["read", &pid, "0x1000", "4"])?;
    o.code(1)?.says("nothing is mapped there")?;
    Ok(())
}

fn write_bytes() -> Result<()> {
    let mut h = Helper::start()?;
    let pid = h.pid_arg();
    let o = rmap(&["write", &pid, &h.at(4), "--hex", "de ad be ef"])?;
    o.code(0)?.used_module()?;
    ensure!(
        o.text()
            == format!(
                "wrote 4 bytes at {:#x} in process {pid} (via pidfd_mem)\n",
                h.buf + 4
            ),
        "{}",
        o.text()
    );
    let seen = h.show(0, 10)?;
    ensure!(seen == "726d6170deadbeef6765", "the target sees {seen}");

    let f = TmpFile::new("write.bin");
    std::fs::write(&f.0, b"XYZ")?;
    let o = rmap(&["--json", "write", &pid, &h.at(100), "--file", f.s()])?;
    o.code(0)?;
    let v = o.json()?;
    ensure!(v["written"] == 3 && v["via"] == "pidfd_mem", "{v}");
    ensure!(h.show(99, 5)? == hex(&[99, b'X', b'Y', b'Z', 103]));

    // Across a page boundary of buf, from stdin.
    let off = (h.page - (h.buf % h.page)) as usize - 2 + h.page as usize;
    let o = rmap_with(
        &["write", &pid, &h.at(off as u64), "--file", "-"],
        &Opts {
            stdin: Some(b"\x01\x02\x03\x04"),
            ..Opts::default()
        },
    )?;
    o.code(0)?;
    ensure!(h.show(off, 4)? == "01020304");
    // And rmap reads back what it wrote.
    let o = rmap(&["read", &pid, &h.at(off as u64 - 1), "6", "--raw"])?;
    o.code(0)?;
    let p = pattern(off + 5);
    ensure!(
        o.stdout == [p[off - 1], 1, 2, 3, 4, p[off + 4]],
        "{:?}",
        o.stdout
    );
    Ok(())
}

fn write_read_only() -> Result<()> {
    let h = Helper::start()?;
    let pid = h.pid_arg();
    let at = format!("{:#x}", h.file + 8);
    let o = rmap(&["write", &pid, &at, "--hex", "00 01"])?;
    note(format!(
        "write into r--s memory: {:?}, {}",
        o.status.code(),
        o.stderr.trim_end()
    ));
    ensure!(
        matches!(o.status.code(), Some(1 | 3)),
        "expected exit 1 or 3, got {:?}: {}",
        o.status,
        o.stderr
    );
    o.says("cannot write")?.says("not writable")?;
    ensure!(o.stdout.is_empty(), "{}", o.text());
    // Nothing changed.
    let o = rmap(&["read", &pid, &at, "2", "--raw"])?;
    o.code(0)?;
    ensure!(o.stdout == [0x11, 0x11], "{:?}", o.stdout);
    Ok(())
}

fn watch_change() -> Result<()> {
    let mut h = Helper::start()?;
    let pid = h.pid_arg();
    let off = 0x200usize;
    let at = h.at(off as u64);
    let mut w = Running::start(&[
        "--json",
        "watch",
        &pid,
        &at,
        "16",
        "--interval",
        "100",
        "--count",
        "50",
    ])?;
    let first = w.json()?;
    ensure!(first["refresh"] == 1, "{first}");
    ensure!(
        first["hex"] == hex(&pattern(off + 16)[off..]),
        "refresh 1: {first}"
    );
    field_is(&first, "address", h.buf + off as u64)?;
    h.set(off + 2, b"\xca\xfe")?;
    let mut want = pattern(off + 16)[off..].to_vec();
    want[2..4].copy_from_slice(b"\xca\xfe");
    let t = Instant::now();
    loop {
        let v = w.json()?;
        if v["hex"] == hex(&want) {
            // Bytes 2 and 3 (or the one not seen changed yet, had a refresh
            // fallen between the two bytes' stores).
            let changed = v["changed"].as_array().context("changed")?;
            ensure!(
                !changed.is_empty() && changed.iter().all(|c| c == 2 || c == 3),
                "the refresh that first shows the change marks bytes 2 and 3: {v}"
            );
            note(format!(
                "watch saw the target's store at refresh {}",
                v["refresh"]
            ));
            break;
        }
        ensure!(
            t.elapsed() < Duration::from_secs(60),
            "no refresh showed the change"
        );
    }
    let o = w.finish()?;
    o.code(0)?;
    for l in o.text().lines() {
        let v: Value = serde_json::from_str(l)?;
        ensure!(v["hex"] == hex(&want) && v["changed"] == serde_json::json!([]));
    }

    // Text mode, two refreshes.
    let o = rmap(&["watch", &pid, &at, "16", "--interval", "10", "--count", "2"])?;
    o.code(0)?;
    let text = o.text();
    ensure!(text.contains("--- refresh 1\n") && text.contains("--- refresh 2\n"));
    let line = format!(
        "0x{:012x}  {:02x} {:02x} ca fe",
        h.buf + off as u64,
        want[0],
        want[1]
    );
    ensure!(text.contains(&line), "no {line:?} in {text}");
    Ok(())
}

/// `rmap --json watch` of the 16 bytes around the end of the helper's
/// memfd (8 bytes of page 1, 8 beyond the file's end), one refresh.
fn watch_across_eof(h: &Helper) -> Result<Out> {
    let start = h.file + 2 * h.page - 8;
    rmap(&[
        "--json",
        "watch",
        &h.pid_arg(),
        &format!("{start:#x}"),
        "16",
        "--count",
        "1",
    ])
}

/// Checks that `o` shows page 1's 8 bytes and SIGBUS for the 8 after.
fn check_across_eof(h: &Helper, o: &Out) -> Result<()> {
    o.code(1)?.says("SIGBUS")?;
    let v = o.json()?;
    ensure!(
        v["hex"] == format!("{}{}", "22".repeat(8), "00".repeat(8)),
        "the 8 bytes before the file's end are 0x22, then zeros for the hole: {v}"
    );
    let holes = v["holes"].as_array().context("holes")?;
    ensure!(holes.len() == 1, "one hole: {v}");
    field_is(&holes[0], "start", h.file + 2 * h.page)?;
    field_is(&holes[0], "end", h.file + 2 * h.page + 8)?;
    ensure!(v["sigbus"].is_string(), "{v}");
    Ok(())
}

fn watch_hole() -> Result<()> {
    let h = Helper::start()?;
    // T's page 1 is made present first (a pread through pidfd_mem faults
    // it in T): see the next test for the page that T never touched.
    let at = format!("{:#x}", h.file + h.page);
    rmap(&["read", &h.pid_arg(), &at, "8"])?.code(0)?;
    check_across_eof(&h, &watch_across_eof(&h)?)
}

/// Contract A2: a page that T maps readable never raises SIGBUS in a
/// mirror, even when T has not touched it yet and the page after it is
/// beyond the file's end. (Found by this suite on pidfd_mem.ko: the
/// fault-around window asks hmm_range_fault to fault every page from the
/// faulting one to the window's end, so T's failure on the page beyond EOF
/// failed the whole fault; the next access, with the page now present in
/// T, worked.)
fn watch_cold_page_next_to_hole() -> Result<()> {
    let h = Helper::start()?;
    let first = watch_across_eof(&h)?;
    let second = watch_across_eof(&h)?;
    if let Err(e) = check_across_eof(&h, &first) {
        let again = match check_across_eof(&h, &second) {
            Ok(()) => "the same watch again, with the page now present in T, reads it",
            Err(_) => "the same watch again fails too",
        };
        bail!("first access to the untouched page: {e:#}\n({again})");
    }
    check_across_eof(&h, &second)
}

fn watch_target_exit() -> Result<()> {
    let mut h = Helper::start()?;
    let mut w = Running::start(&[
        "--json",
        "watch",
        &h.pid_arg(),
        &h.at(0),
        "18",
        "--interval",
        "50",
    ])?;
    let v = w.json()?;
    ensure!(v["hex"] == hex(b"rmap-target-helper"), "{v}");
    h.quit()?;
    let o = w.finish()?;
    o.code(4)?.says("exited")?;
    Ok(())
}

fn dump_range() -> Result<()> {
    let h = Helper::start()?;
    let out = TmpFile::new("dump-range.bin");
    let p = h.page as usize;
    // From the last 16 bytes before the memfd (unmapped or another region)
    // is not predictable: start at the memfd and run 2 pages past it.
    let range = format!("{:#x}-{:#x}", h.file, h.file + 3 * h.page);
    let o = rmap(&[
        "--json",
        "dump",
        &h.pid_arg(),
        "--range",
        &range,
        "-o",
        out.s(),
    ])?;
    o.code(0)?.used_module()?;
    let data = std::fs::read(&out.0)?;
    ensure!(data.len() == 3 * p, "{} bytes", data.len());
    ensure!(data[..p].iter().all(|&b| b == 0x11), "page 0");
    ensure!(data[p..2 * p].iter().all(|&b| b == 0x22), "page 1");
    ensure!(data[2 * p..].iter().all(|&b| b == 0), "page 2: zeros");
    let v = o.json()?;
    ensure!(v["via"] == "pidfd_mem", "{v}");
    ensure!(v["bytes"] == 3 * h.page, "{v}");
    let holes = v["holes"].as_array().context("holes")?;
    ensure!(holes.len() == 1, "{v}");
    field_is(&holes[0], "start", h.file + 2 * h.page)?;
    field_is(&holes[0], "end", h.file + 3 * h.page)?;
    ensure!(holes[0]["reason"] == "unreadable", "{v}");

    // A range of buf, byte for byte, in text mode.
    let range = format!("{}..{}", h.at(10), h.at(5000));
    let o = rmap(&["dump", &h.pid_arg(), "--range", &range, "-o", out.s()])?;
    o.code(0)?;
    ensure!(std::fs::read(&out.0)? == pattern(5000)[10..], "buf range");
    ensure!(
        o.text().contains("no holes: every byte was read"),
        "{}",
        o.text()
    );
    ensure!(o.text().contains("via pidfd_mem"), "{}", o.text());
    // With the memfd's hole, the listing says so.
    let range = format!("{:#x}-{:#x}", h.file + h.page, h.file + 3 * h.page);
    let o = rmap(&["dump", &h.pid_arg(), "--range", &range, "-o", "-"])?;
    o.code(0)?;
    ensure!(o.stdout.len() == 2 * p);
    ensure!(
        o.stderr.contains("holes, written as zeros (1):"),
        "listing on stderr when the data is on stdout: {}",
        o.stderr
    );
    ensure!(
        o.stderr.contains(&format!(
            "{:#x}-{:#x}",
            h.file + 2 * h.page,
            h.file + 3 * h.page
        )),
        "{}",
        o.stderr
    );
    Ok(())
}

fn dump_whole() -> Result<()> {
    let h = Helper::start()?;
    let out = TmpFile::new("dump-all.bin");
    let o = rmap(&["--json", "dump", &h.pid_arg(), "-o", out.s()])?;
    o.code(0)?.used_module()?;
    let data = std::fs::read(&out.0)?;
    let v = o.json()?;
    ensure!(v["via"] == "pidfd_mem", "{}", v["via"]);
    ensure!(v["bytes"].as_u64() == Some(data.len() as u64));
    let pieces = v["pieces"].as_array().context("pieces")?;
    let piece_of = |addr: u64| -> Result<&Value> {
        for p in pieces {
            if hex_field(p, "start")? <= addr && addr < hex_field(p, "end")? {
                return Ok(p);
            }
        }
        bail!("no piece holds {addr:#x}")
    };
    let at = |addr: u64| -> Result<usize> {
        let p = piece_of(addr)?;
        let off = p["file_offset"].as_u64().context("file_offset")?;
        Ok((off + addr - hex_field(p, "start")?) as usize)
    };
    let b = at(h.buf)?;
    ensure!(
        data[b..b + h.len as usize] == pattern(h.len as usize),
        "buf in the dump"
    );
    let f = at(h.file)?;
    let p = h.page as usize;
    ensure!(data[f..f + p].iter().all(|&x| x == 0x11));
    ensure!(data[f + p..f + 2 * p].iter().all(|&x| x == 0x22));
    ensure!(data[f + 2 * p..f + 3 * p].iter().all(|&x| x == 0));
    let holes = v["holes"].as_array().context("holes")?;
    let mut found = false;
    for x in holes {
        if hex_field(x, "start")? == h.file + 2 * h.page {
            found = true;
        }
    }
    ensure!(
        found,
        "the memfd's last page is listed as a hole: {holes:?}"
    );
    let skipped = v["skipped"].as_array().context("skipped")?;
    let has_vsyscall = std::fs::read_to_string(format!("/proc/{}/maps", h.pid))?
        .lines()
        .any(|l| l.ends_with("[vsyscall]"));
    if has_vsyscall {
        ensure!(
            skipped.iter().any(|x| x["path"] == "[vsyscall]"),
            "[vsyscall] is skipped: {skipped:?}"
        );
    }
    for x in skipped {
        ensure!(
            x["perms"].as_str().is_some_and(|p| !p.starts_with('r')) || x["path"] == "[vsyscall]",
            "only unreadable regions are skipped: {x}"
        );
    }
    // The helper's own first bytes are rmap's ELF header.
    let elf = at(pieces[0]["start"]
        .as_str()
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .context("first piece")?)?;
    ensure!(data[elf..elf + 4] == *b"\x7fELF", "first piece");
    Ok(())
}

/// The header `rmap share` sends with the fd (see `src/share.rs`), decoded
/// here independently: (prot, flags, address, size, view_start, view_len).
fn header(b: &[u8]) -> Result<(u32, u32, u64, u64, u64, u64)> {
    ensure!(b.len() == 64, "header of {} bytes", b.len());
    ensure!(b[..8] == *b"RMAPSHR1", "magic {:?}", &b[..8]);
    let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let u64_at = |i: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[i..i + 8]);
        u64::from_le_bytes(a)
    };
    ensure!(u64_at(32) == 0, "offset");
    Ok((
        u32_at(12),
        u32_at(16),
        u64_at(24),
        u64_at(40),
        u64_at(48),
        u64_at(56),
    ))
}

/// Connects to `sock` as a client of `rmap share` and takes the fd and header.
fn client(sock: &str) -> Result<(pidfd_mem::Access, Vec<u8>)> {
    let s = UnixStream::connect(sock).with_context(|| format!("connecting to {sock}"))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    pass::recv_access_with(&s, 64).context("receiving the fd and header")
}

fn attach_once(sock: &str) -> Result<Value> {
    let o = rmap(&["--json", "attach", "--socket", sock, "--count", "1"])?;
    o.code(0)?;
    o.json()
}

fn share_read_write() -> Result<()> {
    let mut h = Helper::start()?;
    let sock = TmpFile::new("rw.sock");
    let range = format!("{}-{}", h.at(0), h.at(256));
    let mut s = Running::start(&[
        "--json",
        "share",
        &h.pid_arg(),
        "--range",
        &range,
        "--socket",
        sock.s(),
        "--max-clients",
        "3",
    ])?;
    let v = s.json()?;
    ensure!(v["event"] == "listening", "{v}");
    ensure!(v["prot"] == "rw" && v["locked"] == false, "{v}");
    field_is(&v, "view_start", h.buf)?;
    ensure!(v["view_len"] == 256, "{v}");

    // Client 1: rmap attach, another process, sees T's bytes.
    let a = attach_once(sock.s())?;
    ensure!(a["hex"] == hex(&pattern(256)), "attach: {a}");
    field_is(&a, "address", h.buf)?;
    ensure!(s.json()?["event"] == "client");

    // Client 2: this process, with the library, reads the header and writes
    // through the received fd; T sees it.
    let (mem, payload) = client(sock.s())?;
    let (prot, flags, address, size, view_start, view_len) = header(&payload)?;
    ensure!(prot == 3 && flags == 0, "prot {prot}, flags {flags}");
    ensure!(address == h.buf & !(h.page - 1) && size % h.page == 0);
    ensure!(address + size >= h.buf + 256);
    ensure!(view_start == h.buf && view_len == 256);
    let off = MemOffset(view_start - address);
    mem.write_all_at(b"via-share", off)?;
    ensure!(h.show(0, 9)? == hex(b"via-share"), "T sees the write");
    let mirror = mem.mmap(MemOffset(0), size as usize, Prot::ReadWrite)?;
    mirror.copy_from(off.0 as usize + 9, b"!")?;
    ensure!(
        h.show(9, 1)? == hex(b"!"),
        "T sees the store through a mirror"
    );
    ensure!(s.json()?["event"] == "client");

    // Client 3: attach again, sees both.
    let a = attach_once(sock.s())?;
    let mut want = pattern(256);
    want[..10].copy_from_slice(b"via-share!");
    ensure!(a["hex"] == hex(&want), "attach: {a}");
    let o = s.finish()?;
    o.code(0)?;
    ensure!(!sock.0.exists(), "share removes its socket when it is done");
    Ok(())
}

fn share_read_only_locked() -> Result<()> {
    let h = Helper::start()?;
    let sock = TmpFile::new("ro.sock");
    let range = format!("{}..{}", h.at(0x1000), h.at(0x1100));
    let mut s = Running::start(&[
        "share",
        &h.pid_arg(),
        "--range",
        &range,
        "--socket",
        sock.s(),
        "--read-only",
        "--lock",
        "--max-clients",
        "2",
    ])?;
    let l = s.line()?;
    ensure!(
        l.contains("read-only, locked") && l.contains(sock.s()),
        "{l}"
    );
    ensure!(s.line()?.contains("rmap attach --socket"));

    let (mem, payload) = client(sock.s())?;
    let (prot, flags, address, size, view_start, view_len) = header(&payload)?;
    ensure!(prot == 1, "read-only grant: prot {prot}");
    ensure!(flags == 1, "locked: flags {flags}");
    ensure!(view_start == h.buf + 0x1000 && view_len == 0x100);
    let off = view_start - address;
    // Reads work, through pread and a read-only mirror.
    let mut b = vec![0u8; 0x100];
    mem.read_exact_at(&mut b, MemOffset(off))?;
    ensure!(b == pattern(0x1100)[0x1000..], "pread");
    let m = mem.mmap(MemOffset(0), size as usize, Prot::Read)?;
    let mut c = vec![0u8; 0x100];
    m.copy_to(off as usize, &mut c)?;
    ensure!(c == b, "mirror");
    // Writes are refused (contract A1, A3).
    match mem.mmap(MemOffset(0), size as usize, Prot::ReadWrite) {
        Err(Error::AccessDenied { .. }) => {}
        other => bail!("PROT_WRITE mirror of a read-only share: {other:?}"),
    }
    match mem.write_at(b"x", MemOffset(off)) {
        Err(Error::AccessDenied { .. }) => {}
        other => bail!("pwrite into a read-only share: {other:?}"),
    }
    ensure!(s.line()?.contains("client 1"));

    let o = rmap(&["attach", "--socket", sock.s(), "--count", "1"])?;
    o.code(0)?;
    let line = format!(
        "0x{:012x}  {}",
        h.buf + 0x1000,
        pattern(0x1010)[0x1000..]
            .iter()
            .take(8)
            .map(|x| format!("{x:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    ensure!(o.text().contains(&line), "no {line:?} in {}", o.text());
    let o = s.finish()?;
    o.code(0)?;
    ensure!(o.text().contains("client 2"), "{}", o.text());
    Ok(())
}

fn share_target_exit() -> Result<()> {
    let mut h = Helper::start()?;
    let sock = TmpFile::new("gone.sock");
    let range = format!("{}-{}", h.at(0), h.at(16));
    let mut s = Running::start(&[
        "--json",
        "share",
        &h.pid_arg(),
        "--range",
        &range,
        "--socket",
        sock.s(),
    ])?;
    ensure!(s.json()?["event"] == "listening");
    let a = attach_once(sock.s())?;
    ensure!(a["hex"] == hex(b"rmap-target-help"), "{a}");
    h.quit()?;
    let o = s.finish()?;
    o.code(4)?.says("exited")?.says("1 client")?;
    ensure!(!sock.0.exists(), "socket removed");
    Ok(())
}

fn demo() -> Result<()> {
    let o = rmap(&["demo"])?;
    o.code(0)?;
    let t = o.text();
    for needle in [
        "the mirror shows \"tick 5\"",
        "EACCES",
        "SIGBUS",
        "demo passed",
    ] {
        ensure!(t.contains(needle), "no {needle:?} in:\n{t}");
    }
    Ok(())
}

fn bad_input() -> Result<()> {
    let h = Helper::start()?;
    let pid = h.pid_arg();
    let buf = h.at(0);
    let empty = TmpFile::new("empty");
    std::fs::write(&empty.0, b"")?;
    let not_sock = TmpFile::new("not-a-socket");
    std::fs::write(&not_sock.0, b"x")?;
    let sock = TmpFile::new("bad.sock");
    let cases: &[(&[&str], &str)] = &[
        // maps
        (&["maps", "notapid"], "not a process id"),
        (&["maps", "0"], "not a valid process id"),
        (&["maps"], "required"),
        // read
        (&["read", &pid, "zz", "4"], "no mapping named zz"),
        (&["read", &pid, "12zz", "4"], "not an address"),
        (&["read", &pid, &buf, "0"], "asks for nothing"),
        (
            &["read", &pid, "[nosuch]+4", "4"],
            "no region named [nosuch]",
        ),
        (&["read", &pid, "0xffffffffffffffff", "2"], "overflows"),
        (&["read", &pid, &buf, "2g"], "at most 1 GiB"),
        (
            &["read", &pid, &buf, "4", "--hex", "--raw"],
            "cannot be used with",
        ),
        // write
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
            &["write", &pid, &buf, "--file", empty.s()],
            "nothing to write",
        ),
        (
            &["write", &pid, "[nosuch]", "--hex", "00"],
            "no region named [nosuch]",
        ),
        // watch
        (
            &["watch", &pid, &buf, "2M", "--count", "1"],
            "at most 1 MiB",
        ),
        (
            &["watch", &pid, "nosuch.so", "4", "--count", "1"],
            "no mapping named nosuch.so",
        ),
        (&["watch", &pid, &buf, "4", "--interval", "0"], "--interval"),
        (&["watch", &pid, &buf, "4", "--count", "0"], "--count"),
        // dump
        (
            &["dump", &pid, "--range", "0x2000-0x1000", "-o", "/dev/null"],
            "not above its start",
        ),
        (
            &["dump", &pid, "--range", "12-", "-o", "/dev/null"],
            "not a range",
        ),
        (
            &["dump", &pid, "--range", "[nosuch]", "-o", "/dev/null"],
            "no region named [nosuch]",
        ),
        (&["dump", &pid], "--output"),
        // share
        (
            &["share", &pid, "--range", "[nosuch]", "--socket", sock.s()],
            "no region named [nosuch]",
        ),
        (
            &[
                "share",
                &pid,
                "--range",
                "0x2000-0x1000",
                "--socket",
                sock.s(),
            ],
            "not above its start",
        ),
        (
            &[
                "share",
                &pid,
                "--range",
                &format!("{buf}-{}", h.at(8)),
                "--socket",
                not_sock.s(),
            ],
            "exists and is not a socket",
        ),
        (&["share", &pid, "--socket", sock.s()], "--range"),
        // attach
        (&["attach"], "--socket"),
        (&["attach", "--socket", sock.s()], "no such socket"),
        (
            &["attach", "--socket", not_sock.s()],
            "nobody listens there",
        ),
        // demo
        (&["demo", "extra"], "unexpected argument"),
        // none
        (&["frobnicate"], "unrecognized subcommand"),
    ];
    for (args, needle) in cases {
        let o = rmap(args)?;
        o.code(2)?.says(needle)?;
    }
    ensure!(!sock.0.exists(), "no socket left by a refused share");
    ensure!(std::fs::read(&not_sock.0)? == b"x", "the file is untouched");
    // The target was not changed by any of it.
    let o = rmap(&["read", &pid, &buf, "64", "--raw"])?;
    o.code(0)?;
    ensure!(o.stdout == pattern(64));
    note(format!("{} bad inputs refused with exit 2", cases.len()));
    Ok(())
}

fn attach_bad_sockets() -> Result<()> {
    // A socket whose peer is not `rmap share`: plain bytes, no fd.
    let sock = TmpFile::new("liar.sock");
    let l = UnixListener::bind(&sock.0)?;
    for (what, reply) in [
        ("plain bytes", &b"hello, I am not rmap share\n"[..]),
        ("nothing", &b""[..]),
    ] {
        let att = Running::start(&["attach", "--socket", sock.s(), "--count", "1"])?;
        let mut c = accept_within(&l, Duration::from_secs(60))?;
        std::io::Write::write_all(&mut c, reply)?;
        drop(c);
        let o = att.finish()?;
        note(format!("{what}: {}", o.stderr.trim_end()));
        if reply.is_empty() {
            // The peer hung up without a word: not bad input, a failure.
            o.code(1)?.says("closed")?;
        } else {
            o.code(2)?.says("is this socket `rmap share`?")?;
        }
    }
    // A share of another kind of fd (a memfd with a wrong header).
    let att = Running::start(&["attach", "--socket", sock.s(), "--count", "1"])?;
    let c = accept_within(&l, Duration::from_secs(60))?;
    let fd = pidfd_mem::rustix::fs::memfd_create("x", pidfd_mem::rustix::fs::MemfdFlags::CLOEXEC)?;
    pass::send_access_with(&c, &pidfd_mem::Access::from(fd), &[0u8; 64])?;
    drop(c);
    let o = att.finish()?;
    o.code(2)?.says("bad magic")?;
    Ok(())
}

/// Accepts one connection on `l` within `limit`.
fn accept_within(l: &UnixListener, limit: Duration) -> Result<UnixStream> {
    l.set_nonblocking(true)?;
    let t = Instant::now();
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false)?;
                return Ok(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
        ensure!(t.elapsed() < limit, "nobody connected");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn no_rights() -> Result<()> {
    if !rustix_is_root() {
        return Err(
            Skip("needs root to run rmap as uid 65534 against a root target".into()).into(),
        );
    }
    let mut h = Helper::start()?;
    let pid = h.pid_arg();
    let buf = h.at(0);
    let nobody = Opts {
        uid: Some(65534),
        ..Opts::default()
    };
    let out = TmpFile::new("nobody-dump.bin");
    let sock = TmpFile::new("nobody.sock");
    let range = format!("{buf}-{}", h.at(16));
    let cases: &[(&[&str], &str)] = &[
        (&["maps", &pid], "ptrace"),
        (&["read", &pid, &buf, "4"], "EPERM"),
        (&["read", &pid, "[heap]", "4"], "ptrace"),
        (&["write", &pid, &buf, "--hex", "00"], "EPERM"),
        (&["watch", &pid, &buf, "4", "--count", "1"], "EPERM"),
        (&["dump", &pid, "-o", "/dev/null"], "ptrace"),
        (&["dump", &pid, "--range", &range, "-o", out.s()], "ptrace"),
        (
            &["share", &pid, "--range", &range, "--socket", sock.s()],
            "EPERM",
        ),
    ];
    for (args, needle) in cases {
        let o = rmap_with(args, &nobody)?;
        o.code(3)?.says(needle)?;
    }
    ensure!(!sock.0.exists(), "no socket left");
    // The target is untouched, and rmap as root still works on it.
    ensure!(h.show(0, 4)? == hex(b"rmap"));
    rmap(&["read", &pid, &buf, "4"])?.code(0)?;
    // uid 65534 may look at its own process (O1): its own demo works.
    let o = rmap_with(&["demo"], &nobody)?;
    o.code(0)?;
    Ok(())
}

fn rustix_is_root() -> bool {
    pidfd_mem::rustix::process::getuid().is_root()
}

fn target_gone() -> Result<()> {
    let pid = dead_pid()?.to_string();
    let sock = TmpFile::new("dead.sock");
    let cases: &[&[&str]] = &[
        &["maps", &pid],
        &["read", &pid, "0x10000", "4"],
        &["read", &pid, "[heap]", "4"],
        &["write", &pid, "0x10000", "--hex", "00"],
        &["watch", &pid, "0x10000", "4", "--count", "1"],
        &["dump", &pid, "-o", "/dev/null"],
        &[
            "dump",
            &pid,
            "--range",
            "0x10000-0x20000",
            "-o",
            "/dev/null",
        ],
        &[
            "share",
            &pid,
            "--range",
            "0x10000-0x20000",
            "--socket",
            sock.s(),
        ],
    ];
    for args in cases {
        let o = rmap(args)?;
        o.code(4)?;
        ensure!(
            o.stderr.contains(&pid) || o.stderr.contains("ESRCH"),
            "{}: says which process or ESRCH: {}",
            o.what,
            o.stderr
        );
    }
    ensure!(!sock.0.exists());
    Ok(())
}
