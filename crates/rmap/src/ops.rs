//! The copy commands: `maps`, `read`, `write`, `dump`. They work with or
//! without the module (see [`crate::copy`]).

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;

use crate::addr::{AddrExpr, Range, RangeExpr};
use crate::copy::{push_hole, Copier};
use crate::errors::{bad, Code};
use crate::maps::{Kind, Maps, Region};
use crate::view::{cells, hex, hex_addr, hexdump, human_size};
use crate::Ctx;

/// The most `read` copies at once.
pub const MAX_READ: u64 = 1 << 30;

/// T's maps when `need`, else `None`.
pub fn maps_if(pid: u32, need: bool) -> Result<Option<Maps>> {
    if need {
        Maps::read(pid).map(Some)
    } else {
        Ok(None)
    }
}

/// Resolves an address, reading T's maps only for symbolic forms.
pub fn resolve_addr(pid: u32, a: &AddrExpr) -> Result<u64> {
    let maps = maps_if(pid, a.needs_maps())?;
    Ok(a.resolve(maps.as_ref())?)
}

/// Resolves a range, reading T's maps only when needed.
pub fn resolve_range(pid: u32, r: &RangeExpr) -> Result<Range> {
    let maps = maps_if(pid, r.needs_maps())?;
    Ok(r.resolve(maps.as_ref())?)
}

/// `[addr, addr+len)`, refusing overflow.
pub fn span(addr: u64, len: u64) -> Result<Range> {
    let end = addr
        .checked_add(len)
        .ok_or_else(|| bad(format!("{addr:#x} + {len:#x} overflows 64 bits")))?;
    Ok(Range { start: addr, end })
}

/// Why T's byte at `addr` cannot be copied, in words, from its maps.
fn why_not(pid: u32, addr: u64, write: bool) -> String {
    let Ok(maps) = Maps::read(pid) else {
        return "not mapped, or not accessible".into();
    };
    match maps.find(addr) {
        None => "nothing is mapped there".into(),
        Some(r) if !write && !r.readable() => {
            format!("its region {} has no read permission", describe(r))
        }
        Some(r) if write && !r.writable() => {
            format!("its region {} is not writable", describe(r))
        }
        Some(r) => format!(
            "the page cannot be {} (region {}: I/O memory, or beyond the end of a mapped file)",
            if write { "written" } else { "read" },
            describe(r)
        ),
    }
}

fn describe(r: &Region) -> String {
    let name = if r.path.is_empty() { "" } else { r.name() };
    format!(
        "{:#x}-{:#x} {} {} {}",
        r.start,
        r.end,
        r.perms,
        r.kind(),
        name
    )
    .trim_end()
    .to_string()
}

/// `rmap maps PID`.
pub fn maps(ctx: &Ctx, pid: u32) -> Result<Code> {
    let maps = Maps::read(pid)?;
    let mut out = io::stdout().lock();
    if ctx.json {
        let list: Vec<_> = maps
            .regions
            .iter()
            .map(|r| {
                json!({
                    "start": hex_addr(r.start),
                    "end": hex_addr(r.end),
                    "size": r.size(),
                    "perms": r.perms,
                    "offset": r.offset,
                    "dev": r.dev,
                    "inode": r.inode,
                    "path": r.path,
                    "kind": r.kind().as_str(),
                    "rss_kb": r.rss_kb,
                    "page_kb": r.page_kb,
                    "thp_kb": r.thp_kb,
                    "vm_flags": r.vm_flags,
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::Value::Array(list))?;
        return Ok(Code::Ok);
    }
    let total: u64 = maps.regions.iter().map(Region::size).sum();
    let rss: Option<u64> = maps.regions.iter().map(|r| r.rss_kb).sum();
    write!(
        out,
        "process {pid}: {} regions, {} mapped",
        maps.regions.len(),
        human_size(total)
    )?;
    if let Some(k) = rss {
        write!(out, ", {} resident", human_size(k * 1024))?;
    }
    writeln!(out)?;
    let w = maps
        .regions
        .iter()
        .map(|r| format!("{:x}", r.end).len())
        .max()
        .unwrap_or(12)
        .max(12);
    writeln!(
        out,
        "{:<w2$} {:<w2$} {:>9} {:<4} {:<8} {:>9}  NAME",
        "START",
        "END",
        "SIZE",
        "PERM",
        "KIND",
        "RSS",
        w2 = w + 2
    )?;
    for r in &maps.regions {
        let rss = r
            .rss_kb
            .map(|k| human_size(k * 1024))
            .unwrap_or_else(|| "-".into());
        let mut name = r.path.clone();
        if r.thp_kb.is_some_and(|k| k > 0) {
            name.push_str(&format!(
                " (THP {})",
                human_size(r.thp_kb.unwrap_or(0) * 1024)
            ));
        }
        writeln!(
            out,
            "0x{:0w$x} 0x{:0w$x} {:>9} {:<4} {:<8} {:>9}  {}",
            r.start,
            r.end,
            human_size(r.size()),
            r.perms,
            r.kind().as_str(),
            rss,
            name
        )?;
    }
    Ok(Code::Ok)
}

/// `rmap read PID ADDR LEN`.
pub fn read(ctx: &Ctx, pid: u32, a: &AddrExpr, len: u64, hex_out: bool, raw: bool) -> Result<Code> {
    if len > MAX_READ {
        return Err(bad(format!(
            "read copies at most 1 GiB at once ({} asked); use `rmap dump --range` for more",
            human_size(len)
        )));
    }
    let addr = resolve_addr(pid, a)?;
    let range = span(addr, len)?;
    let copier = Copier::open(pid, range, false)?;
    let n = usize::try_from(len).map_err(|_| bad("length too large"))?;
    let mut buf = vec![0u8; n];
    let mut done = 0;
    while done < n {
        let got = copier.read_some(addr + done as u64, &mut buf[done..])?;
        if got == 0 {
            let at = addr + done as u64;
            anyhow::bail!(
                "cannot read {at:#x} in process {pid}: {} (got {done} of {n} bytes)",
                why_not(pid, at, false)
            );
        }
        done += got;
    }
    let mut out = io::stdout().lock();
    if ctx.json {
        let v = json!({
            "pid": pid,
            "address": hex_addr(addr),
            "len": n,
            "via": copier.via().as_str(false),
            "hex": hex(&buf),
        });
        writeln!(out, "{v}")?;
    } else if hex_out || (ctx.tty_out && !raw) {
        out.write_all(hexdump(addr, &cells(&buf), false).as_bytes())?;
    } else {
        out.write_all(&buf)?;
    }
    out.flush()?;
    Ok(Code::Ok)
}

/// `rmap write PID ADDR (--hex BYTES | --file F)`.
pub fn write(
    ctx: &Ctx,
    pid: u32,
    a: &AddrExpr,
    hex_bytes: Option<Vec<u8>>,
    file: Option<std::path::PathBuf>,
) -> Result<Code> {
    let data = match (hex_bytes, file) {
        (Some(b), _) => b,
        (None, Some(f)) if f.as_os_str() == "-" => {
            let mut v = Vec::new();
            io::stdin().read_to_end(&mut v).context("reading stdin")?;
            v
        }
        (None, Some(f)) => std::fs::read(&f).map_err(|e| {
            let what = format!("cannot read {}: {e}", f.display());
            if e.kind() == io::ErrorKind::NotFound {
                bad(what)
            } else {
                anyhow::Error::new(e).context(what)
            }
        })?,
        (None, None) => return Err(bad("give the bytes with --hex BYTES or --file F")),
    };
    if data.is_empty() {
        return Err(bad("nothing to write: the input is empty"));
    }
    let addr = resolve_addr(pid, a)?;
    let range = span(addr, data.len() as u64)?;
    let copier = Copier::open(pid, range, true)?;
    let mut done = 0;
    while done < data.len() {
        let n = copier.write_some(addr + done as u64, &data[done..])?;
        if n == 0 {
            let at = addr + done as u64;
            anyhow::bail!(
                "cannot write {at:#x} in process {pid}: {} (wrote {done} of {} bytes)",
                why_not(pid, at, true),
                data.len()
            );
        }
        done += n;
    }
    let mut out = io::stdout().lock();
    if ctx.json {
        let v = json!({
            "pid": pid,
            "address": hex_addr(addr),
            "written": done,
            "via": copier.via().as_str(true),
        });
        writeln!(out, "{v}")?;
    } else {
        writeln!(
            out,
            "wrote {done} bytes at {addr:#x} in process {pid} (via {})",
            copier.via().as_str(true)
        )?;
    }
    Ok(Code::Ok)
}

/// A tiny progress bar on stderr (only when stderr is a terminal).
pub struct Progress {
    total: u64,
    done: u64,
    last: Option<Instant>,
    on: bool,
}

impl Progress {
    /// A bar for `total` bytes; drawn only when `on`.
    pub fn new(total: u64, on: bool) -> Self {
        Self {
            total,
            done: 0,
            last: None,
            on,
        }
    }

    /// `n` more bytes done.
    pub fn add(&mut self, n: u64) {
        self.done += n;
        if !self.on {
            return;
        }
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_millis(100))
            && self.done < self.total
        {
            return;
        }
        self.last = Some(now);
        eprint!("\r{}", bar(self.done, self.total, 30));
    }

    /// Erases the bar.
    pub fn finish(&self) {
        if self.on && self.last.is_some() {
            eprint!("\r{}\r", " ".repeat(30 + 40));
        }
    }
}

/// `[#########.........]  45%  12 MiB / 27 MiB`.
pub fn bar(done: u64, total: u64, width: usize) -> String {
    let frac = if total == 0 {
        1.0
    } else {
        (done as f64 / total as f64).min(1.0)
    };
    let fill = (frac * width as f64).round() as usize;
    format!(
        "[{}{}] {:>3}%  {} / {}",
        "#".repeat(fill),
        ".".repeat(width - fill),
        (frac * 100.0).floor() as u64,
        human_size(done),
        human_size(total)
    )
}

/// One stretch of the dump: T's `[start, end)`, read or not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Piece {
    /// The stretch.
    pub range: Range,
    /// The region it lies in (`None`: unmapped gap).
    pub region: Option<usize>,
    /// Read it (false: write zeros, and list it as a hole with `reason`).
    pub read: bool,
    /// Why it is not read.
    pub reason: &'static str,
}

/// Plans a dump: the pieces written to the file, in order, and the regions
/// skipped (not written at all; only without `range`).
pub fn plan(maps: &Maps, range: Option<Range>) -> (Vec<Piece>, Vec<(usize, &'static str)>) {
    let mut pieces = Vec::new();
    let mut skipped = Vec::new();
    match range {
        None => {
            for (i, r) in maps.regions.iter().enumerate() {
                if r.kind() == Kind::Vsyscall {
                    skipped.push((i, "outside the process's address space"));
                } else if !r.readable() {
                    skipped.push((i, "no read permission"));
                } else {
                    pieces.push(Piece {
                        range: Range {
                            start: r.start,
                            end: r.end,
                        },
                        region: Some(i),
                        read: true,
                        reason: "",
                    });
                }
            }
        }
        Some(want) => {
            let mut at = want.start;
            for (i, r) in maps.regions.iter().enumerate() {
                if r.end <= at || at >= want.end {
                    continue;
                }
                if r.start >= want.end {
                    break;
                }
                if r.start > at {
                    pieces.push(Piece {
                        range: Range {
                            start: at,
                            end: r.start,
                        },
                        region: None,
                        read: false,
                        reason: "unmapped",
                    });
                    at = r.start;
                }
                let end = r.end.min(want.end);
                let (read, reason) = if r.kind() == Kind::Vsyscall {
                    (false, "outside the process's address space")
                } else if !r.readable() {
                    (false, "no read permission")
                } else {
                    (true, "")
                };
                pieces.push(Piece {
                    range: Range { start: at, end },
                    region: Some(i),
                    read,
                    reason,
                });
                at = end;
            }
            if at < want.end {
                pieces.push(Piece {
                    range: Range {
                        start: at,
                        end: want.end,
                    },
                    region: None,
                    read: false,
                    reason: "unmapped",
                });
            }
        }
    }
    (pieces, skipped)
}

const CHUNK: usize = 1 << 20;

/// The most unmapped bytes a `--range` dump writes as zeros.
const MAX_GAP: u64 = 1 << 30;

/// `rmap dump PID [--range A-B] -o FILE`.
pub fn dump(ctx: &Ctx, pid: u32, range: Option<&RangeExpr>, output: &Path) -> Result<Code> {
    let maps = Maps::read(pid)?;
    let want = range.map(|r| r.resolve(Some(&maps))).transpose()?;
    let (pieces, skipped) = plan(&maps, want);
    let gaps: u64 = pieces
        .iter()
        .filter(|p| p.region.is_none())
        .map(|p| p.range.len())
        .sum();
    if gaps > MAX_GAP {
        return Err(bad(format!(
            "the range spans {} where nothing is mapped; dump without --range \
             (regions only) or give a smaller range",
            human_size(gaps)
        )));
    }
    let to_stdout = output.as_os_str() == "-";
    let readable: Vec<&Piece> = pieces.iter().filter(|p| p.read).collect();
    let total: u64 = pieces.iter().map(|p| p.range.len()).sum();
    let copier = match (readable.first(), readable.last()) {
        (Some(first), Some(last)) => Some(Copier::open(
            pid,
            Range {
                start: first.range.start,
                end: last.range.end,
            },
            false,
        )?),
        _ => None,
    };
    let mut file: Box<dyn Write> = if to_stdout {
        Box::new(io::BufWriter::new(io::stdout().lock()))
    } else {
        let f =
            File::create(output).with_context(|| format!("cannot create {}", output.display()))?;
        Box::new(io::BufWriter::new(f))
    };
    let mut progress = Progress::new(total, ctx.tty_err);
    // (piece, file offset)
    let mut written: Vec<(usize, u64)> = Vec::new();
    let mut holes: Vec<(Range, &'static str)> = Vec::new();
    let mut off = 0u64;
    let mut buf = vec![0u8; CHUNK];
    for (pi, p) in pieces.iter().enumerate() {
        written.push((pi, off));
        let mut at = p.range.start;
        while at < p.range.end {
            let n = usize::try_from((p.range.end - at).min(CHUNK as u64)).unwrap_or(CHUNK);
            let chunk = &mut buf[..n];
            match (&copier, p.read) {
                (Some(c), true) => {
                    let mut h = Vec::new();
                    c.read_with_holes(at, chunk, &mut h)?;
                    for r in h {
                        add_hole(&mut holes, r, "unreadable");
                    }
                }
                _ => {
                    chunk.fill(0);
                    add_hole(
                        &mut holes,
                        Range {
                            start: at,
                            end: at + n as u64,
                        },
                        p.reason,
                    );
                }
            }
            file.write_all(chunk)
                .with_context(|| format!("writing {}", output.display()))?;
            at += n as u64;
            off += n as u64;
            progress.add(n as u64);
        }
    }
    file.flush()
        .with_context(|| format!("writing {}", output.display()))?;
    drop(file);
    progress.finish();

    let via = copier.as_ref().map(|c| c.via().as_str(false));
    let region_json = |i: usize| {
        let r = &maps.regions[i];
        json!({"perms": r.perms, "kind": r.kind().as_str(), "path": r.path})
    };
    if ctx.json {
        let pieces_json: Vec<_> = written
            .iter()
            .map(|&(pi, file_off)| {
                let p = &pieces[pi];
                let mut v = json!({
                    "start": hex_addr(p.range.start),
                    "end": hex_addr(p.range.end),
                    "file_offset": file_off,
                    "size": p.range.len(),
                });
                if let (Some(i), Some(obj)) = (p.region, v.as_object_mut()) {
                    if let Some(extra) = region_json(i).as_object() {
                        obj.extend(extra.clone());
                    }
                }
                v
            })
            .collect();
        let holes_json: Vec<_> = holes
            .iter()
            .map(|(r, why)| {
                json!({"start": hex_addr(r.start), "end": hex_addr(r.end), "size": r.len(), "reason": why})
            })
            .collect();
        let skipped_json: Vec<_> = skipped
            .iter()
            .map(|&(i, why)| {
                let r = &maps.regions[i];
                json!({"start": hex_addr(r.start), "end": hex_addr(r.end), "perms": r.perms, "path": r.path, "reason": why})
            })
            .collect();
        let v = json!({
            "pid": pid,
            "output": output.display().to_string(),
            "bytes": off,
            "via": via,
            "pieces": pieces_json,
            "holes": holes_json,
            "skipped": skipped_json,
        });
        if to_stdout {
            eprintln!("{v}");
        } else {
            writeln!(io::stdout().lock(), "{v}")?;
        }
        return Ok(Code::Ok);
    }
    let mut text = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(
        text,
        "dumped {} of process {pid} to {} ({} piece{}{})",
        human_size(off),
        if to_stdout {
            "stdout".to_string()
        } else {
            output.display().to_string()
        },
        pieces.len(),
        if pieces.len() == 1 { "" } else { "s" },
        via.map(|v| format!(", via {v}")).unwrap_or_default()
    );
    if !pieces.is_empty() {
        let _ = writeln!(
            text,
            "{:>12}  {:<33} {:>9}  WHAT",
            "FILE OFFSET", "RANGE", "SIZE"
        );
        for &(pi, file_off) in &written {
            let p = &pieces[pi];
            let what = match p.region {
                Some(i) => {
                    let r = &maps.regions[i];
                    format!("{} {} {}", r.perms, r.kind(), r.path)
                }
                None => "unmapped (zeros)".to_string(),
            };
            let _ = writeln!(
                text,
                "{:>#12x}  {:#x}-{:#x} {:>9}  {}",
                file_off,
                p.range.start,
                p.range.end,
                human_size(p.range.len()),
                what.trim_end()
            );
        }
    }
    if holes.is_empty() {
        let _ = writeln!(text, "no holes: every byte was read");
    } else {
        let _ = writeln!(text, "holes, written as zeros ({}):", holes.len());
        for (r, why) in &holes {
            let _ = writeln!(
                text,
                "  {:#x}-{:#x} {:>9}  {why}",
                r.start,
                r.end,
                human_size(r.len())
            );
        }
    }
    if !skipped.is_empty() {
        let _ = writeln!(text, "regions not in the file ({}):", skipped.len());
        for &(i, why) in &skipped {
            let r = &maps.regions[i];
            let _ = writeln!(
                text,
                "  {:#x}-{:#x} {} {}  {why}",
                r.start, r.end, r.perms, r.path
            );
        }
    }
    if to_stdout {
        eprint!("{text}");
    } else {
        io::stdout().lock().write_all(text.as_bytes())?;
    }
    Ok(Code::Ok)
}

fn add_hole(holes: &mut Vec<(Range, &'static str)>, r: Range, why: &'static str) {
    if let Some((last, w)) = holes.last_mut() {
        if *w == why && last.end == r.start {
            last.end = r.end;
            return;
        }
    }
    let mut v = Vec::new();
    push_hole(&mut v, r);
    holes.extend(v.into_iter().map(|r| (r, why)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps::CANNED;

    #[test]
    fn progress_bar_text() {
        assert_eq!(bar(0, 100, 10), "[..........]   0%  0 B / 100 B");
        assert_eq!(bar(50, 100, 10), "[#####.....]  50%  50 B / 100 B");
        assert_eq!(bar(100, 100, 10), "[##########] 100%  100 B / 100 B");
        assert_eq!(bar(0, 0, 4), "[####] 100%  0 B / 0 B");
        assert_eq!(bar(200, 100, 4), "[####] 100%  200 B / 100 B");
    }

    #[test]
    fn plan_whole_process_skips_unreadable_regions() {
        let m = Maps::from_text(CANNED);
        let (pieces, skipped) = plan(&m, None);
        assert!(pieces.iter().all(|p| p.read));
        assert_eq!(pieces.len(), 15);
        let why: Vec<_> = skipped
            .iter()
            .map(|&(i, w)| (m.regions[i].path.as_str(), w))
            .collect();
        assert_eq!(
            why,
            [
                ("", "no read permission"),
                ("[vsyscall]", "outside the process's address space")
            ]
        );
    }

    #[test]
    fn plan_range_covers_it_byte_for_byte() {
        let m = Maps::from_text(CANNED);
        // From inside the last ld page, over the ---p page and the next one,
        // into the gap after it.
        let want = Range {
            start: 0x7f40_0000_0800,
            end: 0x7f50_0000_3000,
        };
        let (pieces, skipped) = plan(&m, Some(want));
        assert!(skipped.is_empty());
        let got: Vec<_> = pieces
            .iter()
            .map(|p| (p.range.start, p.range.end, p.read, p.reason))
            .collect();
        assert_eq!(
            got,
            [
                (0x7f40_0000_0800, 0x7f40_0000_1000, true, ""),
                (0x7f40_0000_1000, 0x7f50_0000_0000, false, "unmapped"),
                (
                    0x7f50_0000_0000,
                    0x7f50_0000_1000,
                    false,
                    "no read permission"
                ),
                (0x7f50_0000_1000, 0x7f50_0000_2000, true, ""),
                (0x7f50_0000_2000, 0x7f50_0000_3000, false, "unmapped"),
            ]
        );
        let total: u64 = pieces.iter().map(|p| p.range.len()).sum();
        assert_eq!(total, want.len());
        // A range inside one region is one piece.
        let (pieces, _) = plan(
            &m,
            Some(Range {
                start: 0x5555_d600_0010,
                end: 0x5555_d600_0020,
            }),
        );
        assert_eq!(pieces.len(), 1);
        assert!(pieces[0].read);
    }

    #[test]
    fn spans_refuse_overflow() {
        assert!(span(u64::MAX, 2).is_err());
        assert_eq!(span(10, 5).unwrap(), Range { start: 10, end: 15 });
    }

    #[test]
    fn holes_merge_by_reason() {
        let mut h = Vec::new();
        add_hole(&mut h, Range { start: 0, end: 4 }, "unmapped");
        add_hole(&mut h, Range { start: 4, end: 8 }, "unmapped");
        add_hole(&mut h, Range { start: 8, end: 12 }, "unreadable");
        assert_eq!(
            h,
            [
                (Range { start: 0, end: 8 }, "unmapped"),
                (Range { start: 8, end: 12 }, "unreadable")
            ]
        );
    }
}
