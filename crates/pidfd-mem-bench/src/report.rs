//! The report: figures with their median/min/max, the machine, notes; its JSON
//! form (`target/bench/report.json`).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::stats::Stats;

/// The line before the JSON report on the bench's stdout.
pub const BEGIN: &str = "=== pidfd-mem-bench report begin ===";
/// The line after it.
pub const END: &str = "=== pidfd-mem-bench report end ===";
/// `schema` of the JSON report.
pub const SCHEMA: &str = "pidfd-mem-bench/1";

/// Groups of figures (the `group` field), one table each.
pub mod group {
    /// Sequential read throughput against size.
    pub const SEQ_READ: &str = "seq_read";
    /// Sequential write throughput against size.
    pub const SEQ_WRITE: &str = "seq_write";
    /// Random 8-byte reads over 64 MiB.
    pub const RANDOM8: &str = "random8";
    /// First touch of each page of a fresh mapping, per page.
    pub const FAULT: &str = "fault";
    /// Cold reads of T's THP-backed vs 4 KiB-backed memory.
    pub const THP: &str = "thp";
    /// T's `madvise(MADV_DONTNEED)` with mirrors populated (`param`: mirrors).
    pub const INVALIDATE: &str = "invalidate";
    /// From nothing to the first byte.
    pub const SETUP: &str = "setup";
    /// Mirror cold figures at several `fault_around_pages` (`param`).
    pub const FAULT_AROUND: &str = "fault_around";
}

/// Method names (the `method` field).
pub mod method {
    /// `memcpy` between two buffers of the reader: the physical reference.
    pub const MEMCPY: &str = "memcpy";
    /// `rep movsb` between two buffers of the reader: the instruction the
    /// kernel's `copy_to_user` uses on this CPU (ERMS), as TCG runs it.
    pub const REP_MOVSB: &str = "rep_movsb";
    /// `memcpy` from/to a mirror whose PTEs are all present.
    pub const MIRROR_WARM: &str = "mirror_warm";
    /// `Mirror::copy_to` (the library's SIGBUS-guarded `rep movsb`), warm.
    pub const MIRROR_WARM_COPY_TO: &str = "mirror_warm_copy_to";
    /// `memcpy` from/to a fresh mirror (no PTEs yet).
    pub const MIRROR_COLD: &str = "mirror_cold";
    /// `pread` on the access fd.
    pub const PREAD_MEM: &str = "pread_mem";
    /// `pwrite` on the access fd.
    pub const PWRITE_MEM: &str = "pwrite_mem";
    /// `process_vm_readv`.
    pub const PVR: &str = "process_vm_readv";
    /// `process_vm_writev`.
    pub const PVW: &str = "process_vm_writev";
    /// `pread`/`pwrite` on `/proc/T/mem`.
    pub const PROC_MEM: &str = "proc_mem";
    /// ptrace `PEEKDATA`/`POKEDATA`, 8 bytes a call.
    pub const PTRACE: &str = "ptrace";
    /// Loads from the reader's own memory (random8).
    pub const LOCAL: &str = "local";
    /// Loads from a populated mirror (random8), or first touches of a
    /// mirror (fault).
    pub const MIRROR: &str = "mirror";
    /// First touches of a fresh mapping of a populated memfd (fault).
    pub const LOCAL_SHMEM: &str = "local_shmem";
    /// Per-page first touch of a fresh mirror (fault_around).
    pub const MIRROR_TOUCH: &str = "mirror_touch";
    /// Mirror cold read of THP-backed T memory (thp).
    pub const MIRROR_COLD_THP: &str = "mirror_cold_thp";
    /// Mirror cold read of 4 KiB-backed T memory (thp).
    pub const MIRROR_COLD_4K: &str = "mirror_cold_4k";
    /// First touch, per page, of a fresh mirror of THP-backed T memory (thp).
    pub const MIRROR_TOUCH_THP: &str = "mirror_touch_thp";
    /// First touch, per page, of a fresh mirror of 4 KiB-backed T memory (thp).
    pub const MIRROR_TOUCH_4K: &str = "mirror_touch_4k";
    /// `process_vm_readv` of THP-backed T memory (thp).
    pub const PVR_THP: &str = "process_vm_readv_thp";
    /// `process_vm_readv` of 4 KiB-backed T memory (thp).
    pub const PVR_4K: &str = "process_vm_readv_4k";
    /// T's `madvise(MADV_DONTNEED)` (invalidate).
    pub const DONTNEED: &str = "madvise_dontneed";
    /// pidfd_open + OPEN + MAP + mmap + first byte (setup).
    pub const SETUP_PIDFD_MEM: &str = "pidfd_mem";
    /// open(/proc/T/mem) + first pread (setup).
    pub const SETUP_PROC_MEM: &str = "proc_mem";
    /// The steps of [`SETUP_PIDFD_MEM`], timed one by one (setup).
    pub const SETUP_STEPS: [&str; 5] = [
        "step_pidfd_open",
        "step_open",
        "step_map",
        "step_mmap",
        "step_first_byte",
    ];
}

/// How a method is named in the tables and the plot.
pub fn method_label(group: &str, m: &str) -> String {
    let write = group == group::SEQ_WRITE;
    match m {
        method::MEMCPY => "memcpy (local)",
        method::REP_MOVSB => "rep movsb (local; the kernel's copy loop)",
        method::MIRROR_WARM if write => "mirror store, warm",
        method::MIRROR_WARM => "mirror, warm",
        method::MIRROR_WARM_COPY_TO => "mirror, warm, Mirror::copy_to",
        method::MIRROR_COLD if write => "mirror store, cold",
        method::MIRROR_COLD => "mirror, cold",
        method::PREAD_MEM => "pread mem fd",
        method::PWRITE_MEM => "pwrite mem fd",
        method::PVR => "process_vm_readv",
        method::PVW => "process_vm_writev",
        method::PROC_MEM if write => "pwrite /proc/T/mem",
        method::PROC_MEM if group == group::SETUP => "open /proc/T/mem + pread",
        method::PROC_MEM => "pread /proc/T/mem",
        method::PTRACE if write => "ptrace POKEDATA",
        method::PTRACE => "ptrace PEEKDATA",
        method::LOCAL => "local load",
        method::MIRROR if group == group::FAULT => "mirror first touch",
        method::MIRROR => "mirror load, warm",
        method::LOCAL_SHMEM => "local memfd minor fault",
        method::MIRROR_TOUCH => "mirror first touch",
        method::MIRROR_COLD_THP => "mirror cold, T on THP",
        method::MIRROR_COLD_4K => "mirror cold, T on 4 KiB pages",
        method::MIRROR_TOUCH_THP => "mirror first touch, T on THP",
        method::MIRROR_TOUCH_4K => "mirror first touch, T on 4 KiB pages",
        "step_pidfd_open" => "  step: pidfd_open",
        "step_open" => "  step: PIDFD_MEM_OPEN",
        "step_map" => "  step: PIDFD_MEM_MAP",
        "step_mmap" => "  step: mmap",
        "step_first_byte" => "  step: first load (fault)",
        method::PVR_THP => "process_vm_readv, T on THP",
        method::PVR_4K => "process_vm_readv, T on 4 KiB pages",
        method::DONTNEED => "madvise(MADV_DONTNEED) in T",
        method::SETUP_PIDFD_MEM => "pidfd_open + OPEN + MAP + mmap + first byte",
        other => other,
    }
    .to_string()
}

/// The unit of a figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// MiB per second (higher is better).
    MibPerS,
    /// Million operations per second (higher is better).
    MopsPerS,
    /// Nanoseconds per page (lower is better).
    NsPerPage,
    /// Milliseconds (lower is better).
    Ms,
    /// Microseconds (lower is better).
    Us,
}

impl Unit {
    /// The unit's name in JSON and tables.
    pub fn name(self) -> &'static str {
        match self {
            Unit::MibPerS => "MiB/s",
            Unit::MopsPerS => "Mop/s",
            Unit::NsPerPage => "ns/page",
            Unit::Ms => "ms",
            Unit::Us => "us",
        }
    }

    /// The unit named `s`.
    pub fn parse(s: &str) -> Option<Unit> {
        [
            Unit::MibPerS,
            Unit::MopsPerS,
            Unit::NsPerPage,
            Unit::Ms,
            Unit::Us,
        ]
        .into_iter()
        .find(|u| u.name() == s)
    }

    /// Whether a larger figure is better.
    pub fn higher_is_better(self) -> bool {
        matches!(self, Unit::MibPerS | Unit::MopsPerS)
    }
}

/// One measured figure.
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    /// See [`group`].
    pub group: String,
    /// See [`method`].
    pub method: String,
    /// Bytes moved or spanned, when the figure has a size.
    pub size: Option<u64>,
    /// Another parameter: mirrors populated, `fault_around_pages`.
    pub param: Option<u64>,
    /// The unit of `stats`.
    pub unit: Unit,
    /// Median, min and max over the samples.
    pub stats: Stats,
    /// Operations timed together in one sample.
    pub inner: usize,
    /// Every sample, in `unit`, in the order taken (empty when not kept).
    pub values: Vec<f64>,
}

impl Figure {
    fn to_json(&self) -> Value {
        json!({
            "group": self.group,
            "method": self.method,
            "size": self.size,
            "param": self.param,
            "unit": self.unit.name(),
            "median": self.stats.median,
            "min": self.stats.min,
            "max": self.stats.max,
            "samples": self.stats.n,
            "inner": self.inner,
            "values": self.values,
        })
    }

    fn from_json(v: &Value) -> Result<Figure, String> {
        let s = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| format!("figure without string `{k}`: {v}"))
        };
        let f = |k: &str| {
            v.get(k)
                .and_then(Value::as_f64)
                .ok_or_else(|| format!("figure without number `{k}`: {v}"))
        };
        let unit = s("unit")?;
        Ok(Figure {
            group: s("group")?,
            method: s("method")?,
            size: v.get("size").and_then(Value::as_u64),
            param: v.get("param").and_then(Value::as_u64),
            unit: Unit::parse(&unit).ok_or_else(|| format!("unknown unit {unit}"))?,
            stats: Stats {
                median: f("median")?,
                min: f("min")?,
                max: f("max")?,
                n: v.get("samples").and_then(Value::as_u64).unwrap_or(0) as usize,
            },
            inner: v.get("inner").and_then(Value::as_u64).unwrap_or(1) as usize,
            values: v
                .get("values")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_f64).collect())
                .unwrap_or_default(),
        })
    }
}

/// The whole report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// Kernel, CPU, accelerator, settings (`uname -r`, `/proc/cpuinfo`, ...).
    pub machine: BTreeMap<String, String>,
    /// Every figure, in the order measured.
    pub figures: Vec<Figure>,
    /// Remarks made while measuring (skipped figures, THP coverage, ...).
    pub notes: Vec<String>,
    /// Wall time of the run in seconds.
    pub elapsed_s: f64,
    /// A reduced run (`--quick`): fewer sizes and samples.
    pub quick: bool,
}

impl Report {
    /// The figure with these keys, if measured.
    pub fn find(
        &self,
        group: &str,
        method: &str,
        size: Option<u64>,
        param: Option<u64>,
    ) -> Option<&Figure> {
        self.figures
            .iter()
            .find(|f| f.group == group && f.method == method && f.size == size && f.param == param)
    }

    /// Methods of a group, in first-measured order.
    pub fn methods(&self, group: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for f in self.figures.iter().filter(|f| f.group == group) {
            if !out.contains(&f.method) {
                out.push(f.method.clone());
            }
        }
        out
    }

    /// Sizes of a group, ascending.
    pub fn sizes(&self, group: &str) -> Vec<u64> {
        let mut out: Vec<u64> = self
            .figures
            .iter()
            .filter(|f| f.group == group)
            .filter_map(|f| f.size)
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Parameters of a group, ascending.
    pub fn params(&self, group: &str) -> Vec<u64> {
        let mut out: Vec<u64> = self
            .figures
            .iter()
            .filter(|f| f.group == group)
            .filter_map(|f| f.param)
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The JSON report, headline ratios included (computed by
    /// [`crate::ratios::compute`]).
    pub fn to_json(&self) -> Value {
        let ratios: Map<String, Value> = crate::ratios::compute(self)
            .into_iter()
            .map(|r| (r.name.to_string(), r.to_json()))
            .collect();
        json!({
            "schema": SCHEMA,
            "machine": self.machine,
            "tcg_note": "The guest runs under QEMU TCG (software emulation): figures are relative \
                         to each other within this run, not absolute speeds of any hardware.",
            "quick": self.quick,
            "elapsed_s": self.elapsed_s,
            "ratios": ratios,
            "figures": self.figures.iter().map(Figure::to_json).collect::<Vec<_>>(),
            "notes": self.notes,
        })
    }

    /// Reads a report written by [`Report::to_json`] (ratios are recomputed
    /// from the figures, not read).
    pub fn from_json(v: &Value) -> Result<Report, String> {
        if v.get("schema").and_then(Value::as_str) != Some(SCHEMA) {
            return Err(format!("not a {SCHEMA} report"));
        }
        let machine = v
            .get("machine")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let figures = v
            .get("figures")
            .and_then(Value::as_array)
            .ok_or("report without figures")?
            .iter()
            .map(Figure::from_json)
            .collect::<Result<Vec<_>, _>>()?;
        let notes = v
            .get("notes")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        Ok(Report {
            machine,
            figures,
            notes,
            elapsed_s: v.get("elapsed_s").and_then(Value::as_f64).unwrap_or(0.0),
            quick: v.get("quick").and_then(Value::as_bool).unwrap_or(false),
        })
    }
}

/// The JSON text between [`BEGIN`] and [`END`] in `output`, or `output`
/// itself when it has no markers.
pub fn extract(output: &str) -> Option<&str> {
    match output.find(BEGIN) {
        Some(b) => {
            let rest = &output[b + BEGIN.len()..];
            let e = rest.find(END)?;
            Some(rest[..e].trim())
        }
        None => Some(output.trim()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::MIB;

    /// A small report with the figures the ratios need.
    pub(crate) fn sample_report() -> Report {
        let mut r = Report::default();
        r.machine.insert("kernel".into(), "6.1.0-56-amd64".into());
        let fig =
            |group: &str, m: &str, size: Option<u64>, param: Option<u64>, unit, v: f64| Figure {
                group: group.into(),
                method: m.into(),
                size,
                param,
                unit,
                stats: Stats {
                    median: v,
                    min: v * 0.9,
                    max: v * 1.1,
                    n: 5,
                },
                inner: 1,
                values: vec![v * 0.9, v, v * 1.1],
            };
        use group as g;
        use method as m;
        for (size, k) in [(4096, 1.0), (MIB, 2.0), (256 * MIB, 3.0)] {
            let s = Some(size);
            r.figures.push(fig(
                g::SEQ_READ,
                m::MEMCPY,
                s,
                None,
                Unit::MibPerS,
                1000.0 * k,
            ));
            r.figures.push(fig(
                g::SEQ_READ,
                m::MIRROR_WARM,
                s,
                None,
                Unit::MibPerS,
                990.0 * k,
            ));
            r.figures.push(fig(
                g::SEQ_READ,
                m::MIRROR_COLD,
                s,
                None,
                Unit::MibPerS,
                400.0 * k,
            ));
            r.figures
                .push(fig(g::SEQ_READ, m::PVR, s, None, Unit::MibPerS, 100.0 * k));
            r.figures.push(fig(
                g::SEQ_READ,
                m::PREAD_MEM,
                s,
                None,
                Unit::MibPerS,
                95.0 * k,
            ));
            r.figures
                .push(fig(g::SEQ_WRITE, m::PVW, s, None, Unit::MibPerS, 90.0 * k));
        }
        r.figures.push(fig(
            g::SEQ_READ,
            m::PTRACE,
            Some(4096),
            None,
            Unit::MibPerS,
            1.0,
        ));
        let s64 = Some(64 * MIB);
        r.figures
            .push(fig(g::RANDOM8, m::MIRROR, s64, None, Unit::MopsPerS, 50.0));
        r.figures
            .push(fig(g::RANDOM8, m::PVR, s64, None, Unit::MopsPerS, 0.5));
        r.figures.push(fig(
            g::FAULT,
            m::MIRROR,
            Some(crate::ratios::FAULT_SPAN),
            None,
            Unit::NsPerPage,
            200.0,
        ));
        r.figures.push(fig(
            g::FAULT,
            m::LOCAL_SHMEM,
            Some(crate::ratios::FAULT_SPAN),
            None,
            Unit::NsPerPage,
            300.0,
        ));
        r.figures.push(fig(
            g::THP,
            m::MIRROR_COLD_THP,
            s64,
            None,
            Unit::MibPerS,
            500.0,
        ));
        r.figures.push(fig(
            g::THP,
            m::MIRROR_COLD_4K,
            s64,
            None,
            Unit::MibPerS,
            450.0,
        ));
        r.figures.push(fig(
            g::INVALIDATE,
            m::DONTNEED,
            s64,
            Some(0),
            Unit::Ms,
            10.0,
        ));
        r.figures.push(fig(
            g::INVALIDATE,
            m::DONTNEED,
            s64,
            Some(4),
            Unit::Ms,
            30.0,
        ));
        r.notes.push("a note".into());
        r
    }

    #[test]
    fn json_round_trip() {
        let r = sample_report();
        let v = r.to_json();
        assert_eq!(v["schema"], SCHEMA);
        assert!(v["ratios"]["warm_seq_read_vs_memcpy"]["value"].is_number());
        let text = serde_json::to_string_pretty(&v).unwrap();
        let wrapped = format!("noise\n{BEGIN}\n{text}\n{END}\nmore noise\n");
        let back: Value = serde_json::from_str(extract(&wrapped).unwrap()).unwrap();
        let back = Report::from_json(&back).unwrap();
        // serde_json's default float parser may be off by one ulp.
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * a.abs().max(1.0);
        assert_eq!(back.figures.len(), r.figures.len());
        for (a, b) in back.figures.iter().zip(&r.figures) {
            assert_eq!(
                (&a.group, &a.method, a.size, a.param, a.unit),
                (&b.group, &b.method, b.size, b.param, b.unit)
            );
            assert!(
                close(a.stats.median, b.stats.median)
                    && close(a.stats.min, b.stats.min)
                    && close(a.stats.max, b.stats.max)
            );
            assert_eq!((a.stats.n, a.inner), (b.stats.n, b.inner));
            assert!(a.values.iter().zip(&b.values).all(|(x, y)| close(*x, *y)));
        }
        assert_eq!(
            (&back.machine, &back.notes, back.quick),
            (&r.machine, &r.notes, r.quick)
        );
        assert!(Report::from_json(&json!({"schema": "other"})).is_err());
    }

    #[test]
    fn lookups() {
        let r = sample_report();
        assert_eq!(r.sizes(group::SEQ_READ), vec![4096, MIB, 256 * MIB]);
        assert_eq!(r.methods(group::SEQ_READ)[0], method::MEMCPY);
        assert_eq!(r.params(group::INVALIDATE), vec![0, 4]);
        assert!(r
            .find(group::SEQ_READ, method::PVR, Some(MIB), None)
            .is_some());
        assert!(r
            .find(group::SEQ_READ, method::PVR, Some(7), None)
            .is_none());
    }
}
