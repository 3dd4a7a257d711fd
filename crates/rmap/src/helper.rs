//! `rmap target-helper` (hidden): a process for tests to read and write.
//!
//! It prints one JSON line saying where its buffers are, then answers
//! commands on stdin, one a line, until stdin closes:
//!
//! - `show OFF LEN`: prints `buf[OFF..OFF+LEN]` in hex, as seen by itself;
//! - `set OFF HEX`: stores the bytes HEX (e.g. `cafe01`) at `buf[OFF..]`
//!   itself (a change for watchers to see), then prints `ok`;
//! - `quit`: exits.
//!
//! Buffers:
//!
//! - `buf`: 64 KiB on the heap; byte `i` is `i % 251`, except that it
//!   starts with `rmap-target-helper`;
//! - `file`: a 3-page shared read-only mapping of a 2-page memfd
//!   (`/memfd:rmap-helper`): page 0 is all 0x11, page 1 all 0x22, and page
//!   2 lies beyond the end of the file, so it cannot be read (a hole inside
//!   a readable region).

use std::fs::File;
use std::io::{self, BufRead, Write};
use std::os::fd::AsFd;

use anyhow::{Context, Result};
use pidfd_mem::rustix;
use serde_json::json;

use crate::errors::Code;

/// The contents of the helper's `buf`.
pub fn pattern(len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let tag = b"rmap-target-helper";
    v[..tag.len()].copy_from_slice(tag);
    v
}

/// `rmap target-helper`.
pub fn run() -> Result<Code> {
    let page = pidfd_mem::page_size();
    let mut buf = pattern(64 << 10);

    let fd = rustix::fs::memfd_create("rmap-helper", rustix::fs::MemfdFlags::CLOEXEC)
        .context("memfd_create")?;
    let mut content = vec![0x11u8; page];
    content.extend(vec![0x22u8; page]);
    File::from(fd.try_clone()?)
        .write_all(&content)
        .context("filling the memfd")?;
    // SAFETY: a new shared, read-only mapping at an address the kernel
    // chooses (no MAP_FIXED), so it aliases no Rust object; this process
    // never touches it (only other processes read it), and it stays mapped
    // until the process exits.
    let file_map = unsafe {
        rustix::mm::mmap(
            core::ptr::null_mut(),
            3 * page,
            rustix::mm::ProtFlags::READ,
            rustix::mm::MapFlags::SHARED,
            fd.as_fd(),
            0,
        )
    }
    .context("mmap of the memfd")?;

    let mut out = io::stdout().lock();
    let v = json!({
        "pid": std::process::id(),
        "buf": format!("{:#x}", buf.as_ptr() as usize),
        "len": buf.len(),
        "file": format!("{:#x}", file_map as usize),
        "page": page,
    });
    writeln!(out, "{v}")?;
    out.flush()?;

    for line in io::stdin().lock().lines() {
        let line = line?;
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["show", off, len] => {
                let off: usize = off.parse().unwrap_or(0);
                let len: usize = len.parse().unwrap_or(0);
                // Other processes change `buf` behind the compiler's back:
                // make it assume the memory may have changed.
                std::hint::black_box(&mut buf);
                let end = off.saturating_add(len).min(buf.len());
                let start = off.min(end);
                writeln!(out, "{}", crate::view::hex(&buf[start..end]))?;
                out.flush()?;
            }
            ["set", off, bytes] => {
                let off: usize = off.parse().unwrap_or(usize::MAX);
                match crate::addr::parse_hex_bytes(bytes) {
                    Ok(b) if off.checked_add(b.len()).is_some_and(|e| e <= buf.len()) => {
                        buf[off..off + b.len()].copy_from_slice(&b);
                        // Make the stores happen now, in memory.
                        std::hint::black_box(&mut buf);
                        writeln!(out, "ok")?;
                    }
                    _ => writeln!(out, "?")?,
                }
                out.flush()?;
            }
            ["quit"] => break,
            _ => {
                writeln!(out, "?")?;
                out.flush()?;
            }
        }
    }
    Ok(Code::Ok)
}
