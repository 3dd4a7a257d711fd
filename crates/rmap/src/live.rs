//! Live views of a mirror: `rmap watch` (and the viewer of `rmap attach`).
//!
//! Every refresh copies the view out of the mirror with the library's
//! fault-handled copy (DESIGN.md: copy first, then look at the copy); a
//! SIGBUS becomes a hole in that refresh, shown as `--`, reported on stderr
//! and in the exit status.

use std::io::{self, Write};
use std::time::Duration;

use anyhow::{Context, Result};
use pidfd_mem::{
    pidfd_mem, pidfd_open, Access, Grant, MemOffset, Mirror, MirrorError, Prot, RemoteAddr,
};
use serde_json::json;

use crate::addr::{AddrExpr, Range};
use crate::copy::{cover, page, push_hole};
use crate::errors::{bad, module_help, require_module, Code, Failure};
use crate::ops::{resolve_addr, span};
use crate::view::{hex, hex_addr, hexdump, Cell};
use crate::{Ctx, LiveArgs};

/// The most a live view shows.
pub const MAX_VIEW: u64 = 1 << 20;

/// One copy of the view: the bytes (zeros in holes), the holes as view
/// offsets, and the first fault seen.
#[derive(Debug)]
pub struct Snapshot {
    /// The bytes; zeros where nothing could be read.
    pub bytes: Vec<u8>,
    /// `[start, end)` offsets in the view that raised SIGBUS.
    pub holes: Vec<Range>,
    /// The library's report of the first SIGBUS.
    pub fault: Option<MirrorError>,
}

impl Snapshot {
    /// Whether the byte at `i` was read.
    pub fn has(&self, i: usize) -> bool {
        !self
            .holes
            .iter()
            .any(|h| h.start <= i as u64 && (i as u64) < h.end)
    }
}

/// Copies `len` bytes at mirror offset `off`. A SIGBUS makes the rest of
/// that page a hole, and the copy goes on at the next page.
pub fn snapshot(mirror: &Mirror, off: usize, len: usize) -> Result<Snapshot> {
    let mut bytes = vec![0u8; len];
    let mut holes = Vec::new();
    let mut fault = None;
    let page = usize::try_from(page()).unwrap_or(4096);
    let mut pos = 0usize;
    while pos < len {
        match mirror.copy_to(off + pos, &mut bytes[pos..]) {
            Ok(()) => break,
            Err(e @ MirrorError::Fault { copied, .. }) => {
                fault.get_or_insert(e);
                let bad_at = pos + copied.min(len - pos);
                // The page boundary after the faulting byte, in mirror offsets
                // (the mirror starts on a page boundary).
                let next = ((off + bad_at) / page + 1) * page - off;
                let end = next.min(len);
                bytes[bad_at..end].fill(0);
                push_hole(
                    &mut holes,
                    Range {
                        start: bad_at as u64,
                        end: end as u64,
                    },
                );
                pos = end;
            }
            Err(e) => return Err(anyhow::Error::new(e).context("copying from the mirror")),
        }
    }
    Ok(Snapshot {
        bytes,
        holes,
        fault,
    })
}

/// The cells of `now`, marking what changed since `prev`.
pub fn diff(prev: Option<&Snapshot>, now: &Snapshot) -> Vec<Cell> {
    (0..now.bytes.len())
        .map(|i| {
            if !now.has(i) {
                return Cell::Hole;
            }
            let b = now.bytes[i];
            match prev {
                Some(p) if !p.has(i) || p.bytes.get(i) != Some(&b) => Cell::Changed(b),
                _ => Cell::Byte(b),
            }
        })
        .collect()
}

/// What a live view shows and where it comes from.
pub struct View<'a> {
    /// The first line on a terminal (without the refresh count).
    pub title: String,
    /// The mirror.
    pub mirror: &'a Mirror,
    /// Its access fd (for POLLHUP, contract A4).
    pub mem: &'a Access,
    /// Mirror offset of the first byte shown.
    pub off: usize,
    /// Bytes shown.
    pub len: usize,
    /// T's address of the first byte shown.
    pub addr: u64,
}

/// Refreshes `view` every `live.interval` until `live.count` refreshes or
/// T exits. Exit 4 when T exits, 1 when any refresh hit SIGBUS.
pub fn run(ctx: &Ctx, view: &View<'_>, live: &LiveArgs) -> Result<Code> {
    let mut prev: Option<Snapshot> = None;
    let mut refreshes = 0u64;
    let mut faulted = 0u64;
    let mut first_fault: Option<String> = None;
    let mut last_holes: Vec<Range> = Vec::new();
    let mut out = io::stdout().lock();
    let color = ctx.tty_out && !ctx.json;
    loop {
        if view
            .mem
            .poll_exited(Some(Duration::ZERO))
            .context("poll on the access fd")?
        {
            out.flush()?;
            return Err(anyhow::Error::new(Failure::Gone(
                "the target exited: its access fd reports POLLHUP (contract A4), \
                 and its mirror would raise SIGBUS (L2)"
                    .into(),
            )));
        }
        let snap = snapshot(view.mirror, view.off, view.len)?;
        refreshes += 1;
        let cells = diff(prev.as_ref(), &snap);
        let holes_abs: Vec<Range> = snap
            .holes
            .iter()
            .map(|h| Range {
                start: view.addr + h.start,
                end: view.addr + h.end,
            })
            .collect();
        if let Some(f) = &snap.fault {
            faulted += 1;
            let msg = format!(
                "SIGBUS reading {}: {f}",
                holes_abs
                    .iter()
                    .map(|h| format!("{:#x}-{:#x}", h.start, h.end))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            if holes_abs != last_holes {
                eprintln!("rmap: {msg}");
            }
            first_fault.get_or_insert(msg);
        }
        last_holes = holes_abs.clone();
        if ctx.json {
            let changed: Vec<usize> = cells
                .iter()
                .enumerate()
                .filter(|(_, c)| matches!(c, Cell::Changed(_)))
                .map(|(i, _)| i)
                .collect();
            let v = json!({
                "refresh": refreshes,
                "address": hex_addr(view.addr),
                "len": view.len,
                "hex": hex(&snap.bytes),
                "changed": changed,
                "holes": holes_abs
                    .iter()
                    .map(|h| json!({"start": hex_addr(h.start), "end": hex_addr(h.end)}))
                    .collect::<Vec<_>>(),
                "sigbus": snap.fault.map(|f| f.to_string()),
            });
            writeln!(out, "{v}")?;
        } else {
            let mut frame = String::new();
            if color {
                // Home and clear: redraw in place.
                frame.push_str("\x1b[H\x1b[2J");
                frame.push_str(&format!(
                    "{}; refresh {refreshes}{} (Ctrl-C to stop)\n\n",
                    view.title,
                    live.count.map(|c| format!(" of {c}")).unwrap_or_default()
                ));
            } else {
                frame.push_str(&format!("--- refresh {refreshes}\n"));
            }
            frame.push_str(&hexdump(view.addr, &cells, color));
            for h in &holes_abs {
                frame.push_str(&format!(
                    "-- {:#x}-{:#x}: SIGBUS (no grant, nothing mapped there, or revoked)\n",
                    h.start, h.end
                ));
            }
            out.write_all(frame.as_bytes())?;
        }
        out.flush()?;
        prev = Some(snap);
        if live.count.is_some_and(|c| refreshes >= c) {
            break;
        }
        std::thread::sleep(live.interval());
    }
    if let Some(first) = first_fault {
        anyhow::bail!("{faulted} of {refreshes} refreshes hit SIGBUS; the first: {first}");
    }
    Ok(Code::Ok)
}

/// `rmap watch PID ADDR LEN`.
pub fn watch(ctx: &Ctx, pid: u32, a: &AddrExpr, len: u64, live: &LiveArgs) -> Result<Code> {
    require_module("watch")?;
    if len > MAX_VIEW {
        return Err(bad(format!(
            "watch shows at most 1 MiB ({len} bytes asked)"
        )));
    }
    let addr = resolve_addr(pid, a)?;
    let range = span(addr, len)?;
    let (start, size) = cover(range)?;
    let pidfd = pidfd_open(pid).with_context(|| format!("cannot open process {pid}"))?;
    let (ctl, mem) = match pidfd_mem(&pidfd, 0) {
        Ok(x) => x,
        Err(pidfd_mem::Error::ModuleNotLoaded { .. }) => {
            return Err(anyhow::Error::new(Failure::NoModule(module_help("watch"))))
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("pidfd_mem on process {pid}"))),
    };
    ctl.map(&Grant::new(
        RemoteAddr(start),
        MemOffset(0),
        size,
        Prot::Read,
    ))
    .with_context(|| format!("granting [{start:#x}, +{size:#x}) of process {pid}"))?;
    // The grant outlives ctl (contract K2).
    drop(ctl);
    let size_usize = usize::try_from(size).map_err(|_| bad("range too large"))?;
    let mirror = mem
        .mmap(MemOffset(0), size_usize, Prot::Read)
        .context("mapping the mirror")?;
    let view = View {
        title: format!(
            "rmap watch: process {pid}, {addr:#x} +{len} bytes through a pidfd_mem mirror, every {} ms",
            live.interval
        ),
        mirror: &mirror,
        mem: &mem,
        off: usize::try_from(addr - start).unwrap_or(0),
        len: usize::try_from(len).unwrap_or(0),
        addr,
    };
    run(ctx, &view, live)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(bytes: &[u8], holes: &[(u64, u64)]) -> Snapshot {
        Snapshot {
            bytes: bytes.to_vec(),
            holes: holes
                .iter()
                .map(|&(start, end)| Range { start, end })
                .collect(),
            fault: None,
        }
    }

    #[test]
    fn diff_marks_changes_and_holes() {
        let a = snap(b"abcd", &[]);
        let b = snap(b"abXd", &[(3, 4)]);
        assert_eq!(
            diff(None, &a),
            [
                Cell::Byte(b'a'),
                Cell::Byte(b'b'),
                Cell::Byte(b'c'),
                Cell::Byte(b'd')
            ]
        );
        assert_eq!(
            diff(Some(&a), &b),
            [
                Cell::Byte(b'a'),
                Cell::Byte(b'b'),
                Cell::Changed(b'X'),
                Cell::Hole
            ]
        );
        // A byte that comes back after a hole counts as changed.
        let c = snap(b"abXd", &[]);
        assert_eq!(diff(Some(&b), &c)[3], Cell::Changed(b'd'));
    }
}
