//! Guest-physical address → QEMU host virtual address.
//!
//! The main source is QEMU's monitor (over QMP): `info mtree -f` gives the
//! CPUs' flat view of guest-physical memory, each range being some memory
//! region from some offset (aliases resolved: `pc.ram @0x100000` above the
//! 640K–1M hole, `pc.ram @0xc0000000` above 4 GiB, ROM shadows in between);
//! `gpa2hva` gives the host address of each range's first and last byte
//! (a RAMBlock is one contiguous host mapping, which the last byte checks);
//! `info ramblock` checks that the range lies inside its block. QEMU 7.2's
//! `info ramblock` has no host addresses, hence `gpa2hva`.
//!
//! Without QMP, [`from_proc`] guesses from `/proc/PID/cmdline` (`-m`, memory
//! backends) and `/proc/PID/maps` (the one mapping of exactly the RAM
//! size), assuming the `pc`/`q35` layout of a guest below 2.75 GiB.

use std::collections::HashMap;

use crate::error::Error;
use crate::hmp::{self, FlatRange, RamBlock};
use crate::procfs;
use crate::qmp::Qmp;

/// One guest-physical range backed by QEMU host memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RamRange {
    /// First guest-physical address.
    pub gpa: u64,
    /// Length in bytes.
    pub len: u64,
    /// Memory region (RAMBlock) name.
    pub region: String,
    /// Offset of `gpa` inside the region.
    pub region_offset: u64,
    /// QEMU's host virtual address of `gpa`.
    pub hva: u64,
    /// Guest stores reach it (`ram`); false for ROM.
    pub writable: bool,
}

impl RamRange {
    /// One past the last guest-physical address.
    pub fn end(&self) -> u64 {
        self.gpa + self.len
    }

    /// Whether `gpa` is inside.
    pub fn contains(&self, gpa: u64) -> bool {
        gpa >= self.gpa && gpa - self.gpa < self.len
    }
}

/// Where a layout came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// QEMU's monitor: `info mtree -f`, `gpa2hva`, `info ramblock`.
    Monitor,
    /// `/proc/PID/{cmdline,maps}` and the assumed `pc`/`q35` layout.
    ProcMaps {
        /// The RAM size read from the command line.
        ram_size: u64,
    },
}

/// The guest RAM of one QEMU process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The ranges, by guest-physical address.
    pub ranges: Vec<RamRange>,
    /// Where it came from.
    pub source: Source,
    /// RAM-backed ranges left out, and why (not page aligned).
    pub skipped: Vec<String>,
}

/// Builds the layout from parsed monitor output. `gpa2hva` answers the
/// `gpa2hva` command for one address (`None`: nothing mapped).
pub fn build(
    flat: &[FlatRange],
    blocks: &[RamBlock],
    page_size: u64,
    mut gpa2hva: impl FnMut(u64) -> Result<Option<(String, u64)>, Error>,
) -> Result<Layout, Error> {
    let used: HashMap<&str, u64> = blocks.iter().map(|b| (b.name.as_str(), b.used)).collect();
    let mut ranges = Vec::new();
    let mut skipped = Vec::new();
    for r in flat.iter().filter(|r| r.is_ram_backed()) {
        let len = r.len();
        if r.start % page_size != 0 || len % page_size != 0 || len == 0 {
            skipped.push(format!(
                "{:#x}-{:#x} {} ({}): not page aligned",
                r.start, r.end, r.region, r.kind
            ));
            continue;
        }
        let what = |at: u64| format!("gpa2hva {at:#x} ({})", r.region);
        let (name, hva) = gpa2hva(r.start)?
            .ok_or_else(|| Error::Layout(format!("{}: nothing mapped", what(r.start))))?;
        if name != r.region {
            return Err(Error::Layout(format!(
                "{}: QEMU names region {name:?}",
                what(r.start)
            )));
        }
        if hva % page_size != 0 {
            return Err(Error::Layout(format!(
                "{}: host address {hva:#x} not page aligned",
                what(r.start)
            )));
        }
        let last = gpa2hva(r.end)?.map(|(_, h)| h);
        if last != Some(hva + len - 1) {
            return Err(Error::Layout(format!(
                "{}: host address {last:x?}, expected {:#x} (range not contiguous in QEMU)",
                what(r.end),
                hva + len - 1
            )));
        }
        if let Some(&u) = used.get(r.region.as_str()) {
            if r.offset.checked_add(len).map_or(true, |e| e > u) {
                return Err(Error::Layout(format!(
                    "{:#x}-{:#x}: {} @{:#x} runs past the block's {u:#x} used bytes",
                    r.start, r.end, r.region, r.offset
                )));
            }
        }
        ranges.push(RamRange {
            gpa: r.start,
            len,
            region: r.region.clone(),
            region_offset: r.offset,
            hva,
            writable: r.is_writable(),
        });
    }
    ranges.sort_by_key(|r| r.gpa);
    if ranges.is_empty() {
        return Err(Error::Layout("no RAM in the system flat view".into()));
    }
    Ok(Layout {
        ranges,
        source: Source::Monitor,
        skipped,
    })
}

/// Asks QEMU's monitor (see the module docs).
pub fn from_monitor(q: &mut Qmp) -> Result<Layout, Error> {
    let views = hmp::parse_mtree_flat(&q.hmp("info mtree -f")?)?;
    let sys = hmp::system_view(&views)
        .ok_or_else(|| {
            Error::Layout("info mtree -f has no view of address space \"memory\"".into())
        })?
        .clone();
    let blocks = hmp::parse_ramblocks(&q.hmp("info ramblock")?)?;
    build(&sys.ranges, &blocks, pidfd_mem::page_size() as u64, |gpa| {
        hmp::parse_gpa2hva(&q.hmp(&format!("gpa2hva {gpa:#x}"))?)
    })
}

/// Below this size, `pc` and `q35` put all RAM at `[0, size)` (less the
/// 640K–1M hole); above it, part moves above 4 GiB at a machine-dependent
/// split.
pub const LINEAR_LIMIT: u64 = 0xb000_0000;
/// The legacy hole (VGA, option ROMs, BIOS shadow) `[0xa0000, 0x100000)`.
pub const HOLE: (u64, u64) = (0xa_0000, 0x10_0000);

/// The `pc`/`q35` layout of `ram_size` bytes of RAM at host address `hva`,
/// for `ram_size` below [`LINEAR_LIMIT`].
pub fn pc_layout(ram_size: u64, hva: u64, region: &str) -> Result<Vec<RamRange>, Error> {
    if ram_size > LINEAR_LIMIT || ram_size <= HOLE.1 {
        return Err(Error::Layout(format!(
            "RAM size {ram_size:#x}: only sizes in ({:#x}, {LINEAR_LIMIT:#x}] are laid out without the monitor",
            HOLE.1
        )));
    }
    let mk = |gpa: u64, end: u64| RamRange {
        gpa,
        len: end - gpa,
        region: region.to_string(),
        region_offset: gpa,
        hva: hva + gpa,
        writable: true,
    };
    Ok(vec![mk(0, HOLE.0), mk(HOLE.1, ram_size)])
}

/// Guesses the layout of QEMU process `pid` from `/proc` (see the module
/// docs): no monitor needed, but only the common case.
pub fn from_proc(pid: u32) -> Result<Layout, Error> {
    let args = procfs::cmdline(pid)?;
    let ram_size = procfs::ram_size(&args)
        .ok_or_else(|| Error::Layout("cannot read the RAM size from QEMU's command line".into()))?;
    let maps = procfs::maps(pid)?;
    let m = procfs::find_ram_mapping(&maps, ram_size)?;
    let region = m
        .path
        .clone()
        .unwrap_or_else(|| "anonymous RAM".to_string());
    Ok(Layout {
        ranges: pc_layout(ram_size, m.start, &region)?,
        source: Source::ProcMaps { ram_size },
        skipped: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! data {
        ($f:literal) => {
            include_str!(concat!("../testdata/qemu-7.2/", $f))
        };
    }

    /// A fake `gpa2hva` over the system view: each region's block at a
    /// made-up host base.
    fn fake(
        flat: &[FlatRange],
        bases: &HashMap<&str, u64>,
    ) -> impl FnMut(u64) -> Result<Option<(String, u64)>, Error> {
        let flat = flat.to_vec();
        let bases: HashMap<String, u64> = bases.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        move |gpa| {
            Ok(flat
                .iter()
                .find(|r| r.is_ram_backed() && gpa >= r.start && gpa <= r.end)
                .map(|r| {
                    (
                        r.region.clone(),
                        bases[&r.region] + r.offset + (gpa - r.start),
                    )
                }))
        }
    }

    #[test]
    fn pc_anon_layout_resolves_aliases() {
        let views = hmp::parse_mtree_flat(data!("pc-anon-128m.mtree-f.txt")).unwrap();
        let flat = &hmp::system_view(&views).unwrap().ranges;
        let blocks = hmp::parse_ramblocks(data!("pc-anon-128m.ramblock.txt")).unwrap();
        let bases = HashMap::from([
            ("pc.ram", 0x7f00_0000_0000),
            ("pc.rom", 0x7f10_0000_0000),
            ("pc.bios", 0x7f20_0000_0000),
        ]);
        let l = build(flat, &blocks, 4096, fake(flat, &bases)).unwrap();
        let got: Vec<_> = l
            .ranges
            .iter()
            .map(|r| (r.gpa, r.len, r.region.as_str(), r.hva, r.writable))
            .collect();
        assert_eq!(
            got,
            [
                (0, 0xc_0000, "pc.ram", 0x7f00_0000_0000, true),
                (0xc_0000, 0x2_0000, "pc.rom", 0x7f10_0000_0000, false),
                (0xe_0000, 0x2_0000, "pc.bios", 0x7f20_0002_0000, false),
                (0x10_0000, 0x7f0_0000, "pc.ram", 0x7f00_0010_0000, true),
                (0xfffc_0000, 0x4_0000, "pc.bios", 0x7f20_0000_0000, false),
            ]
        );
        assert!(l.skipped.is_empty());
    }

    #[test]
    fn pc_4g_layout_maps_high_ram_at_block_offset() {
        let views = hmp::parse_mtree_flat(data!("pc-anon-4g.mtree-f.txt")).unwrap();
        let flat = &hmp::system_view(&views).unwrap().ranges;
        let blocks = hmp::parse_ramblocks(data!("pc-anon-4g.ramblock.txt")).unwrap();
        let bases = HashMap::from([("pc.ram", 0x1000_0000), ("pc.rom", 0), ("pc.bios", 0)]);
        let l = build(flat, &blocks, 4096, fake(flat, &bases)).unwrap();
        let high = l.ranges.last().unwrap();
        assert_eq!(
            (high.gpa, high.len, high.hva),
            (0x1_0000_0000, 0x4000_0000, 0x1000_0000 + 0xc000_0000)
        );
    }

    #[test]
    fn build_refuses_inconsistent_monitor_answers() {
        let views = hmp::parse_mtree_flat(data!("pc-memfd-128m.mtree-f.txt")).unwrap();
        let flat = &hmp::system_view(&views).unwrap().ranges;
        let blocks = hmp::parse_ramblocks(data!("pc-memfd-128m.ramblock.txt")).unwrap();
        let bases = HashMap::from([("m", 0x7000_0000_0000), ("pc.rom", 0), ("pc.bios", 0)]);
        assert!(build(flat, &blocks, 4096, fake(flat, &bases)).is_ok());
        // The last byte's host address is not where contiguity puts it.
        let mut f = fake(flat, &bases);
        let e = build(flat, &blocks, 4096, |gpa| {
            f(gpa).map(|o| o.map(|(n, h)| (n, if gpa == 0x7ff_ffff { h + 4096 } else { h })))
        })
        .unwrap_err();
        assert!(e.to_string().contains("not contiguous"), "{e}");
        // A region name that does not match.
        let mut f = fake(flat, &bases);
        let e = build(flat, &blocks, 4096, |gpa| {
            f(gpa).map(|o| o.map(|(_, h)| ("other".into(), h)))
        })
        .unwrap_err();
        assert!(e.to_string().contains("other"), "{e}");
        // A block smaller than the view says.
        let mut small = blocks.clone();
        small[0].used = 0x100_0000;
        assert!(build(flat, &small, 4096, fake(flat, &bases)).is_err());
    }

    #[test]
    fn build_skips_unaligned_ranges() {
        let flat = vec![
            FlatRange {
                start: 0,
                end: 0xfff,
                prio: 0,
                kind: "ram".into(),
                region: "r".into(),
                offset: 0,
            },
            FlatRange {
                start: 0x1000,
                end: 0x17ff,
                prio: 0,
                kind: "ram".into(),
                region: "s".into(),
                offset: 0,
            },
        ];
        let l = build(&flat, &[], 4096, |g| {
            Ok(Some((
                (if g < 0x1000 { "r" } else { "s" }).into(),
                0x10_0000 + g,
            )))
        })
        .unwrap();
        assert_eq!(l.ranges.len(), 1);
        assert_eq!(l.skipped.len(), 1);
    }

    #[test]
    fn pc_layout_without_monitor() {
        let r = pc_layout(256 << 20, 0x7f00_0000_0000, "anonymous RAM").unwrap();
        assert_eq!(
            (r[0].gpa, r[0].len, r[0].hva),
            (0, 0xa_0000, 0x7f00_0000_0000)
        );
        assert_eq!(
            (r[1].gpa, r[1].end(), r[1].hva),
            (0x10_0000, 256 << 20, 0x7f00_0010_0000)
        );
        assert!(pc_layout(4 << 30, 0, "x").is_err());
    }
}
