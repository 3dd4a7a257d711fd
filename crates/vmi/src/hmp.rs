//! Parsers for the human monitor (HMP) answers this crate asks QEMU for
//! through QMP's `human-monitor-command`: `info ramblock`, `info mtree -f`,
//! `gpa2hva` and `xp`. Written against QEMU 7.2 (Debian 12); the canned
//! outputs in `testdata/qemu-7.2/` are real ones. HMP lines end in `\r\n`.

use crate::error::Error;

fn hex(s: &str) -> Option<u64> {
    let s = s.trim();
    let s = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    u64::from_str_radix(s, 16).ok()
}

/// One line of `info ramblock`: a RAMBlock, QEMU's unit of host memory
/// (guest RAM, ROMs, firmware tables).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RamBlock {
    /// Block name (`pc.ram`, the memory backend's id, `pc.bios`, ...).
    pub name: String,
    /// Host page size backing it, in bytes.
    pub page_size: u64,
    /// Offset in QEMU's `ram_addr_t` space (not a host address).
    pub offset: u64,
    /// Bytes in use.
    pub used: u64,
    /// Bytes reserved (resizable blocks).
    pub total: u64,
}

fn unit(s: &str) -> Option<u64> {
    Some(match s {
        "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => return None,
    })
}

/// Parses `info ramblock`:
///
/// ```text
///               Block Name    PSize              Offset               Used              Total
///                   pc.ram    4 KiB  0x0000000000000000 0x0000000008000000 0x0000000008000000
/// ```
pub fn parse_ramblocks(text: &str) -> Result<Vec<RamBlock>, Error> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with("Block Name") {
            continue;
        }
        let tok: Vec<&str> = line.split_whitespace().collect();
        let n = tok.len();
        let bad = || Error::parse("info ramblock", line);
        if n < 6 {
            return Err(bad());
        }
        let num: u64 = tok[n - 5].parse().map_err(|_| bad())?;
        out.push(RamBlock {
            name: tok[..n - 5].join(" "),
            page_size: num * unit(tok[n - 4]).ok_or_else(bad)?,
            offset: hex(tok[n - 3]).ok_or_else(bad)?,
            used: hex(tok[n - 2]).ok_or_else(bad)?,
            total: hex(tok[n - 1]).ok_or_else(bad)?,
        });
    }
    Ok(out)
}

/// One range of a flat view: guest-physical `[start, end]` is `region` from
/// `offset` on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlatRange {
    /// First address.
    pub start: u64,
    /// Last address (inclusive, as QEMU prints it).
    pub end: u64,
    /// Priority of the region.
    pub prio: i32,
    /// `ram`, `rom` (RAM the guest cannot write), `i/o`, `romd`, `ramd`,
    /// `nv-ram`, ...
    pub kind: String,
    /// The terminal memory region's name (for RAM: its RAMBlock's name).
    pub region: String,
    /// Offset of `start` inside the region (the `@...` suffix; 0 without).
    pub offset: u64,
}

impl FlatRange {
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.end.wrapping_sub(self.start).wrapping_add(1)
    }

    /// Never true for a parsed range.
    pub fn is_empty(&self) -> bool {
        self.end < self.start
    }

    /// Backed by host RAM that guest loads read (`ram`, `rom` and their
    /// `nv-` forms). `romd` (ROM device in I/O mode), `ramd` (device memory)
    /// and `i/o` are not.
    pub fn is_ram_backed(&self) -> bool {
        matches!(self.kind.trim_start_matches("nv-"), "ram" | "rom")
    }

    /// Guest stores reach the RAM (`ram`, not `rom`).
    pub fn is_writable(&self) -> bool {
        self.kind.trim_start_matches("nv-") == "ram"
    }
}

/// One flat view of `info mtree -f`: the address spaces that share it and
/// its ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlatView {
    /// Names of the address spaces (`memory`, `cpu-memory-0`, `I/O`, ...).
    pub address_spaces: Vec<String>,
    /// The root region's name, if any.
    pub root: Option<String>,
    /// The ranges, in address order.
    pub ranges: Vec<FlatRange>,
}

fn parse_flat_range(line: &str) -> Result<FlatRange, Error> {
    let bad = || Error::parse("info mtree -f", line);
    let t = line.trim();
    let (span, rest) = t.split_once(" (prio ").ok_or_else(bad)?;
    let (start, end) = span.split_once('-').ok_or_else(bad)?;
    let (prio_kind, rest) = rest.split_once("): ").ok_or_else(bad)?;
    let (prio, kind) = prio_kind.split_once(", ").ok_or_else(bad)?;
    let mut words = rest.split_whitespace();
    let region = words.next().ok_or_else(bad)?.to_string();
    let offset = match words.next() {
        Some(w) if w.starts_with('@') => hex(&w[1..]).ok_or_else(bad)?,
        _ => 0,
    };
    Ok(FlatRange {
        start: hex(start).ok_or_else(bad)?,
        end: hex(end).ok_or_else(bad)?,
        prio: prio.trim().parse().map_err(|_| bad())?,
        kind: kind.trim().to_string(),
        region,
        offset,
    })
}

/// Parses `info mtree -f`:
///
/// ```text
/// FlatView #0
///  AS "memory", root: system
///  AS "cpu-memory-0", root: system
///  Root memory region: system
///   0000000000000000-00000000000bffff (prio 0, ram): pc.ram
///   00000000000e0000-00000000000fffff (prio 0, rom): pc.bios @0000000000020000
/// ```
pub fn parse_mtree_flat(text: &str) -> Result<Vec<FlatView>, Error> {
    let mut views: Vec<FlatView> = Vec::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        if t.starts_with("FlatView #") {
            views.push(FlatView::default());
            continue;
        }
        let Some(view) = views.last_mut() else {
            return Err(Error::parse("info mtree -f", line));
        };
        if let Some(rest) = t.strip_prefix("AS \"") {
            let name = rest
                .split_once('"')
                .ok_or_else(|| Error::parse("info mtree -f", line))?
                .0;
            view.address_spaces.push(name.to_string());
        } else if let Some(root) = t.strip_prefix("Root memory region: ") {
            view.root = (root != "(none)").then(|| root.to_string());
        } else if t.starts_with("No rendered FlatView") {
        } else {
            view.ranges.push(parse_flat_range(line)?);
        }
    }
    Ok(views)
}

/// The flat view of the `memory` address space (the CPUs' view of guest
/// physical memory).
pub fn system_view(views: &[FlatView]) -> Option<&FlatView> {
    views
        .iter()
        .find(|v| v.address_spaces.iter().any(|a| a == "memory"))
}

/// Parses a `gpa2hva ADDR` answer: `Some((region, hva))` from
/// `Host virtual address for 0x0 (pc.ram) is 0x7f3e2be00000`, `None` from
/// `No memory is mapped at address 0x40000000`.
pub fn parse_gpa2hva(text: &str) -> Result<Option<(String, u64)>, Error> {
    let t = text.trim();
    if t.starts_with("No memory is mapped") {
        return Ok(None);
    }
    let bad = || Error::parse("gpa2hva", t);
    let rest = t
        .strip_prefix("Host virtual address for ")
        .ok_or_else(bad)?;
    let (_, rest) = rest.split_once(" (").ok_or_else(bad)?;
    let (region, rest) = rest.rsplit_once(") is ").ok_or_else(bad)?;
    Ok(Some((region.to_string(), hex(rest).ok_or_else(bad)?)))
}

/// Parses `xp /Nxb ADDR`: `0000000000200000: 0x48 0x45 ...` lines. Returns
/// the first address and the bytes; the lines must follow each other.
pub fn parse_xp_bytes(text: &str) -> Result<(u64, Vec<u8>), Error> {
    let mut start = None;
    let mut bytes = Vec::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let bad = || Error::parse("xp", line);
        let (addr, rest) = line.split_once(':').ok_or_else(bad)?;
        let addr = hex(addr).ok_or_else(bad)?;
        let first = *start.get_or_insert(addr);
        if addr != first + bytes.len() as u64 {
            return Err(bad());
        }
        for w in rest.split_whitespace() {
            let v = hex(w).filter(|v| *v <= 0xff).ok_or_else(bad)?;
            bytes.push(v as u8);
        }
    }
    Ok((start.unwrap_or(0), bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! data {
        ($f:literal) => {
            include_str!(concat!("../testdata/qemu-7.2/", $f))
        };
    }

    #[test]
    fn ramblock_pc_anon() {
        let b = parse_ramblocks(data!("pc-anon-128m.ramblock.txt")).unwrap();
        assert_eq!(b.len(), 6);
        assert_eq!(
            b[0],
            RamBlock {
                name: "pc.ram".into(),
                page_size: 4096,
                offset: 0,
                used: 0x800_0000,
                total: 0x800_0000,
            }
        );
        assert_eq!(b[1].name, "/rom@etc/acpi/tables");
        assert_eq!(b[1].used, 0x20000);
        assert_eq!(b[1].total, 0x20_0000);
        assert_eq!(b[2].name, "pc.bios");
    }

    #[test]
    fn ramblock_memfd_backend_is_named_after_the_memdev() {
        let b = parse_ramblocks(data!("pc-memfd-128m.ramblock.txt")).unwrap();
        assert_eq!(b[0].name, "m");
        assert_eq!(b[0].used, 128 << 20);
    }

    #[test]
    fn ramblock_rejects_garbage() {
        assert!(parse_ramblocks("pc.ram 4 KiB nothex 0x0 0x0\r\n").is_err());
        assert!(parse_ramblocks("pc.ram 4 XiB 0x0 0x0 0x0\r\n").is_err());
    }

    #[test]
    fn mtree_pc_anon_system_view() {
        let v = parse_mtree_flat(data!("pc-anon-128m.mtree-f.txt")).unwrap();
        assert_eq!(v.len(), 4);
        let sys = system_view(&v).unwrap();
        assert_eq!(sys.address_spaces, ["memory", "cpu-memory-0"]);
        assert_eq!(sys.root.as_deref(), Some("system"));
        let ram: Vec<_> = sys.ranges.iter().filter(|r| r.is_ram_backed()).collect();
        assert_eq!(ram.len(), 5);
        assert_eq!(
            *ram[0],
            FlatRange {
                start: 0,
                end: 0xbffff,
                prio: 0,
                kind: "ram".into(),
                region: "pc.ram".into(),
                offset: 0,
            }
        );
        assert_eq!(
            (ram[1].region.as_str(), ram[1].kind.as_str()),
            ("pc.rom", "rom")
        );
        assert!(!ram[1].is_writable());
        assert_eq!(
            (ram[2].region.as_str(), ram[2].offset),
            ("pc.bios", 0x20000)
        );
        assert_eq!(
            (ram[3].start, ram[3].len(), ram[3].offset),
            (0x10_0000, 0x7f0_0000, 0x10_0000)
        );
        assert!(ram[3].is_writable());
        assert_eq!((ram[4].start, ram[4].end), (0xfffc_0000, 0xffff_ffff));
        // The I/O view is a separate view and is not taken.
        assert!(v.iter().any(|f| f.address_spaces == ["I/O"]));
        assert!(sys
            .ranges
            .iter()
            .any(|r| r.region == "ioapic" && !r.is_ram_backed()));
    }

    #[test]
    fn mtree_pc_4g_has_ram_above_4g_as_second_alias() {
        let v = parse_mtree_flat(data!("pc-anon-4g.mtree-f.txt")).unwrap();
        let sys = system_view(&v).unwrap();
        let ram: Vec<_> = sys.ranges.iter().filter(|r| r.is_writable()).collect();
        assert_eq!(ram.len(), 3);
        assert_eq!((ram[1].start, ram[1].end), (0x10_0000, 0xbfff_ffff));
        assert_eq!(
            (ram[2].start, ram[2].end, ram[2].offset),
            (0x1_0000_0000, 0x1_3fff_ffff, 0xc000_0000)
        );
        assert_eq!(ram[2].region, "pc.ram");
    }

    #[test]
    fn mtree_memfd_and_q35_views() {
        // memfd: the I/O view comes first, the RAM region is the memdev.
        let v = parse_mtree_flat(data!("pc-memfd-128m.mtree-f.txt")).unwrap();
        let sys = system_view(&v).unwrap();
        assert_eq!(sys.ranges[0].region, "m");
        assert_eq!(sys.ranges[3].region, "m");
        assert_eq!(sys.ranges[3].offset, 0x10_0000);
        // q35: a view with no rendered ranges comes first.
        let v = parse_mtree_flat(data!("q35-anon-512m.mtree-f.txt")).unwrap();
        assert!(v[0].ranges.is_empty() && v[0].root.is_none());
        let sys = system_view(&v).unwrap();
        assert_eq!(sys.ranges[3].end, 0x1fff_ffff);
    }

    #[test]
    fn mtree_rejects_a_range_outside_a_view() {
        assert!(parse_mtree_flat("  0000-0fff (prio 0, ram): x\r\n").is_err());
        assert!(parse_mtree_flat("FlatView #0\r\n  0000-0fff prio 0 ram x\r\n").is_err());
    }

    #[test]
    fn gpa2hva_answers() {
        assert_eq!(
            parse_gpa2hva(data!("pc-anon-128m.gpa2hva-0.txt")).unwrap(),
            Some(("pc.ram".into(), 0x7efc_2be0_0000))
        );
        let (r, hva0) = parse_gpa2hva(data!("pc-anon-128m.gpa2hva-0.txt"))
            .unwrap()
            .unwrap();
        let (r1, hva1) = parse_gpa2hva(data!("pc-anon-128m.gpa2hva-100000.txt"))
            .unwrap()
            .unwrap();
        assert_eq!((r.as_str(), r1.as_str()), ("pc.ram", "pc.ram"));
        assert_eq!(hva1 - hva0, 0x10_0000);
        let (m, _) = parse_gpa2hva(data!("pc-memfd-128m.gpa2hva-0.txt"))
            .unwrap()
            .unwrap();
        assert_eq!(m, "m");
        let (rom, _) = parse_gpa2hva(data!("pc-anon-128m.gpa2hva-c0000.txt"))
            .unwrap()
            .unwrap();
        assert_eq!(rom, "pc.rom");
        assert_eq!(
            parse_gpa2hva(data!("pc-anon-128m.gpa2hva-unmapped.txt")).unwrap(),
            None
        );
        assert!(parse_gpa2hva("Host virtual address for 0x0 (x) is zz").is_err());
    }

    #[test]
    fn xp_bytes() {
        let (a, b) = parse_xp_bytes(data!("pc-anon-128m.xp-200000.txt")).unwrap();
        assert_eq!(a, 0x20_0000);
        assert_eq!(b, b"HELLO-LOADER-0123456");
        let (a, b) = parse_xp_bytes(data!("pc-anon-128m.xp-fffffff0.txt")).unwrap();
        assert_eq!(a, 0xffff_fff0);
        assert_eq!(&b[..4], &[0xea, 0x5b, 0xe0, 0x00]);
        assert!(parse_xp_bytes("0000000000200000: 0x48\r\n0000000000200008: 0x41\r\n").is_err());
        assert!(parse_xp_bytes("0000000000200000: 0x148\r\n").is_err());
    }
}
