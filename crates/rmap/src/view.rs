//! Output formatting: hex dumps (with changed bytes and holes), sizes.

use std::fmt::Write as _;

/// One byte of a view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cell {
    /// A byte read.
    Byte(u8),
    /// A byte read that differs from the previous refresh.
    Changed(u8),
    /// Nothing could be read here (hole, revoked window, unreadable page).
    Hole,
}

const REVERSE: &str = "\x1b[7m";
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

/// Bytes per hexdump line.
pub const LINE: usize = 16;

fn addr_width(addr: u64, len: usize) -> usize {
    let last = addr.saturating_add(len as u64);
    let digits = (64 - last.leading_zeros() as usize).div_ceil(4);
    digits.max(12)
}

/// A hexdump of `cells`, the first at T's address `addr`, 16 bytes a line:
/// `0x7ffd00000010  48 65 6c 6c 6f 00 00 00  00 00 00 00 00 00 00 00  |Hello...........|`.
/// Holes are `--`. With `color`, changed bytes are in reverse video and
/// holes dim; without, they are not marked (holes still show as `--`).
pub fn hexdump(addr: u64, cells: &[Cell], color: bool) -> String {
    let width = addr_width(addr, cells.len());
    let mut out = String::new();
    for (i, line) in cells.chunks(LINE).enumerate() {
        let at = addr.wrapping_add((i * LINE) as u64);
        let _ = write!(out, "0x{at:0width$x} ");
        for j in 0..LINE {
            out.push(' ');
            if j == LINE / 2 {
                out.push(' ');
            }
            match line.get(j) {
                None => out.push_str("  "),
                Some(c) => paint(&mut out, *c, color, |o, b| {
                    let _ = write!(o, "{b:02x}");
                }),
            }
        }
        out.push_str("  |");
        for c in line {
            paint(&mut out, *c, color, |o, b| {
                o.push(if b.is_ascii_graphic() || b == b' ' {
                    char::from(b)
                } else {
                    '.'
                });
            });
        }
        out.push_str("|\n");
    }
    out
}

fn paint(out: &mut String, c: Cell, color: bool, f: impl Fn(&mut String, u8)) {
    match c {
        Cell::Byte(b) => f(out, b),
        Cell::Changed(b) => {
            if color {
                out.push_str(REVERSE);
            }
            f(out, b);
            if color {
                out.push_str(RESET);
            }
        }
        Cell::Hole => {
            if color {
                out.push_str(DIM);
            }
            // Two columns in the hex part, one in the text part: the caller
            // tells which by what it writes for a byte; a hole is written as
            // that many dashes.
            let mut probe = String::new();
            f(&mut probe, b'.');
            for _ in 0..probe.chars().count() {
                out.push('-');
            }
            if color {
                out.push_str(RESET);
            }
        }
    }
}

/// Plain bytes as cells.
pub fn cells(bytes: &[u8]) -> Vec<Cell> {
    bytes.iter().map(|&b| Cell::Byte(b)).collect()
}

/// `bytes` as lowercase hex without separators.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A size for people: `512 B`, `4 KiB`, `1.5 MiB`.
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 || v.fract() == 0.0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `0x...` for JSON and messages.
pub fn hex_addr(a: u64) -> String {
    format!("{a:#x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hexdump_plain() {
        let bytes: Vec<u8> = b"Hello, world!\n\x00\x01ABC".to_vec();
        let s = hexdump(0x7ffd_0000_0010, &cells(&bytes), false);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0],
            "0x7ffd00000010  48 65 6c 6c 6f 2c 20 77  6f 72 6c 64 21 0a 00 01  |Hello, world!...|"
        );
        assert_eq!(
            lines[1],
            "0x7ffd00000020  41 42 43                                          |ABC|"
        );
    }

    #[test]
    fn hexdump_widens_for_big_addresses() {
        let s = hexdump(0xffff_ffff_ff60_0000, &cells(&[1]), false);
        assert!(s.starts_with("0xffffffffff600000  01"), "{s}");
        let s = hexdump(0, &cells(&[1]), false);
        assert!(s.starts_with("0x000000000000  01"), "{s}");
    }

    #[test]
    fn hexdump_marks() {
        let c = [Cell::Byte(b'a'), Cell::Changed(b'b'), Cell::Hole];
        let plain = hexdump(0x1000, &c, false);
        assert_eq!(
            plain.lines().next().unwrap(),
            "0x000000001000  61 62 --                                          |ab-|"
        );
        let color = hexdump(0x1000, &c, true);
        assert!(color.contains("\x1b[7m62\x1b[0m"), "{color:?}");
        assert!(color.contains("\x1b[2m--\x1b[0m"), "{color:?}");
        assert!(
            color.contains("|a\x1b[7mb\x1b[0m\x1b[2m-\x1b[0m|"),
            "{color:?}"
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(4096), "4 KiB");
        assert_eq!(human_size(1536 * 1024), "1.5 MiB");
        assert_eq!(human_size(u64::MAX), "16384 PiB");
        assert_eq!(hex(&[0xde, 0xad, 1]), "dead01");
        assert_eq!(hex_addr(4096), "0x1000");
    }
}
