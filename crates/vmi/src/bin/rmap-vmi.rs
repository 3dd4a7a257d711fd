//! `rmap-vmi`: read, write and search a running QEMU guest's physical
//! memory through pidfd_mem mirrors of QEMU's RAM.
//!
//! ```text
//! rmap-vmi [--qemu-pid PID | --qmp SOCKET] (read GPA LEN | write GPA HEXBYTES | find PATTERN | info)
//! ```

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{ArgGroup, Parser, Subcommand};
use vmi::guest::{Expose, GuestMemory, Scan, Via};
use vmi::layout::Source;
use vmi::session::{self, Session, Target};

/// Guest-physical memory of a running QEMU, through pidfd_mem mirrors.
#[derive(Parser, Debug)]
#[command(name = "rmap-vmi", version)]
#[command(group(ArgGroup::new("target").required(true).args(["qemu_pid", "qmp"])))]
struct Cli {
    /// QEMU's pid; its QMP socket is taken from its command line (without
    /// one, the layout is guessed from /proc/PID/maps).
    #[arg(long, value_name = "PID")]
    qemu_pid: Option<u32>,
    /// QEMU's QMP unix socket (QEMU's pid is the socket's peer).
    #[arg(long, value_name = "SOCKET")]
    qmp: Option<PathBuf>,
    /// Take QEMU's whole address space with REMOTE_PROC_MAP instead of
    /// granting only guest memory with pidfd_mem.
    #[arg(long)]
    remote_proc_map: bool,
    /// With --qemu-pid: do not use the monitor, guess the layout from
    /// /proc/PID/{cmdline,maps} (pc/q35 guests below 2.75 GiB).
    #[arg(long, requires = "qemu_pid")]
    no_monitor: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Print LEN bytes at guest-physical GPA (hex dump).
    Read {
        /// Guest-physical address (0x... or decimal).
        #[arg(value_parser = parse_num)]
        gpa: u64,
        /// Length in bytes (0x... or decimal).
        #[arg(value_parser = parse_num)]
        len: u64,
        /// Write the raw bytes to stdout instead of a hex dump.
        #[arg(long)]
        raw: bool,
    },
    /// Write bytes (hex: "deadbeef", "de:ad:be:ef" or "de ad be ef") at GPA.
    Write {
        /// Guest-physical address.
        #[arg(value_parser = parse_num)]
        gpa: u64,
        /// The bytes, in hex.
        #[arg(value_parser = parse_hex_bytes)]
        bytes: HexBytes,
    },
    /// Search all guest RAM and ROM for PATTERN; print each match with the
    /// text that follows it, and how long the scan took.
    Find {
        /// The pattern: text, or hex bytes with --hex.
        pattern: String,
        /// PATTERN is hex bytes.
        #[arg(long)]
        hex: bool,
        /// Stop after this many matches.
        #[arg(long, default_value_t = 32)]
        max: usize,
        /// Also scan with process_vm_readv and pread on the access fd, and
        /// the mirror a second time, and print each time.
        #[arg(long)]
        compare: bool,
    },
    /// Print the guest-physical layout and how it is mapped.
    Info,
}

#[derive(Clone, Debug)]
struct HexBytes(Vec<u8>);

fn parse_num(s: &str) -> Result<u64, String> {
    let t = s.replace('_', "");
    let r = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => t.parse(),
    };
    r.map_err(|e| format!("{s:?}: {e}"))
}

fn parse_hex_bytes(s: &str) -> Result<HexBytes, String> {
    let t = s.strip_prefix("0x").unwrap_or(s);
    let digits: String = t
        .chars()
        .filter(|c| !matches!(c, ' ' | ':' | '-' | '_'))
        .collect();
    if digits.is_empty() || digits.len() % 2 != 0 {
        return Err(format!("{s:?}: an even, non-zero number of hex digits"));
    }
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).map_err(|e| format!("{s:?}: {e}")))
        .collect::<Result<Vec<u8>, String>>()
        .map(HexBytes)
}

fn attach(cli: &Cli) -> Result<Session> {
    let expose = if cli.remote_proc_map {
        Expose::RemoteProcMap
    } else {
        Expose::Grants
    };
    let target = match (&cli.qmp, cli.qemu_pid) {
        (Some(p), _) => Target::Qmp(p.clone()),
        (None, Some(pid)) => Target::Pid {
            pid,
            monitor: !cli.no_monitor,
        },
        (None, None) => bail!("give --qemu-pid or --qmp"),
    };
    let s = session::attach(&target, expose).with_context(|| match &target {
        Target::Qmp(p) => format!("attaching to the QEMU of QMP socket {}", p.display()),
        Target::Pid { pid, .. } => format!("attaching to QEMU pid {pid}"),
    })?;
    if let Some(e) = &s.fallback {
        eprintln!(
            "rmap-vmi: {e}; layout guessed from /proc/{}/maps",
            s.guest.pid()
        );
    }
    Ok(s)
}

fn size(n: u64) -> String {
    match n {
        n if n >= 1 << 30 && n % (1 << 30) != 0 => {
            format!("{:.1} GiB", n as f64 / f64::from(1 << 30))
        }
        n if n >= 1 << 20 && n % (1 << 20) != 0 => {
            format!("{:.1} MiB", n as f64 / f64::from(1 << 20))
        }
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{} GiB", n >> 30),
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} B"),
    }
}

fn hexdump(out: &mut impl Write, gpa: u64, data: &[u8]) -> std::io::Result<()> {
    for (i, line) in data.chunks(16).enumerate() {
        let mut hex = String::new();
        for (j, b) in line.iter().enumerate() {
            hex.push_str(&format!("{b:02x}{}", if j == 7 { "  " } else { " " }));
        }
        let text: String = line
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        writeln!(out, "{:016x}  {hex:<49} |{text}|", gpa + 16 * i as u64)?;
    }
    Ok(())
}

/// The text after a match, up to a NUL or a newline, escaped.
fn context(guest: &GuestMemory, gpa: u64) -> String {
    let m = guest
        .mapped()
        .iter()
        .find(|m| m.range.contains(gpa))
        .map(|m| m.range.end() - gpa)
        .unwrap_or(0);
    let mut buf = vec![0u8; m.min(200) as usize];
    if guest.read(gpa, &mut buf).is_err() {
        return String::from("(unreadable)");
    }
    let end = buf
        .iter()
        .position(|&b| b == 0 || b == b'\n')
        .unwrap_or(buf.len());
    buf[..end].escape_ascii().to_string()
}

fn rate(s: &Scan) -> String {
    let secs = s.elapsed.as_secs_f64();
    let read = s.read.as_secs_f64();
    let mib = s.bytes as f64 / f64::from(1 << 20);
    format!(
        "{:7.1} ms, of which reading {:7.1} ms ({:.0} MiB/s)",
        secs * 1e3,
        read * 1e3,
        if read > 0.0 { mib / read } else { 0.0 }
    )
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let a = attach(&cli)?;
    let g = &a.guest;
    let mut out = std::io::stdout().lock();
    match &cli.cmd {
        Cmd::Read { gpa, len, raw } => {
            let len = usize::try_from(*len).context("LEN")?;
            let mut buf = vec![0u8; len];
            g.read(*gpa, &mut buf)?;
            if *raw {
                out.write_all(&buf)?;
            } else {
                hexdump(&mut out, *gpa, &buf)?;
            }
        }
        Cmd::Write { gpa, bytes } => {
            g.write(*gpa, &bytes.0)?;
            writeln!(out, "wrote {} bytes at {gpa:#x}", bytes.0.len())?;
        }
        Cmd::Find {
            pattern,
            hex,
            max,
            compare,
        } => {
            let pat = if *hex {
                parse_hex_bytes(pattern).map_err(anyhow::Error::msg)?.0
            } else {
                pattern.as_bytes().to_vec()
            };
            let scan = g.find(&pat, Via::Mirror, *max)?;
            for &m in &scan.matches {
                writeln!(out, "{m:#018x}  {}", context(g, m))?;
            }
            writeln!(
                out,
                "{} match{} in {} of guest memory",
                scan.matches.len(),
                if scan.matches.len() == 1 { "" } else { "es" },
                size(g.total_bytes()),
            )?;
            writeln!(out, "{:<24} {}", "mirror scan", rate(&scan))?;
            if *compare {
                for (via, label) in [
                    (Via::ProcessVmReadv, "process_vm_readv scan"),
                    (Via::Pread, "pread (access fd) scan"),
                    (Via::Mirror, "mirror scan, again"),
                ] {
                    let s = g.find(&pat, via, *max)?;
                    let same = if s.matches == scan.matches {
                        "same matches"
                    } else {
                        "DIFFERENT matches"
                    };
                    writeln!(out, "{label:<24} {} ({same})", rate(&s))?;
                }
            }
        }
        Cmd::Info => {
            let how = match (&a.qmp, &g.layout().source) {
                (Some(q), Source::Monitor) => format!(
                    "layout from the monitor at {} (QEMU {})",
                    q.path().display(),
                    q.version()
                ),
                (_, Source::ProcMaps { ram_size }) => format!(
                    "layout guessed from /proc/{}/maps for {} of RAM",
                    g.pid(),
                    size(*ram_size)
                ),
                (None, Source::Monitor) => "layout from the monitor".into(),
            };
            writeln!(out, "QEMU pid {}: {how}", g.pid())?;
            writeln!(
                out,
                "exposed with {}",
                match g.expose() {
                    Expose::Grants => "pidfd_mem, one grant per range, locked",
                    Expose::RemoteProcMap => "REMOTE_PROC_MAP (QEMU's whole address space)",
                }
            )?;
            for d in &a.memdevs {
                writeln!(
                    out,
                    "memdev {}: {}, {}",
                    d.id.as_deref().unwrap_or("(no id)"),
                    size(d.size),
                    if d.share { "shared" } else { "private" }
                )?;
            }
            writeln!(
                out,
                "{:<37} {:>9}  {:<10} {:>10}  {:>14}  {:>14}  access",
                "guest-physical", "size", "region", "offset", "host address", "mem offset"
            )?;
            for m in g.mapped() {
                let r = &m.range;
                writeln!(
                    out,
                    "{:#018x}-{:#018x} {:>9}  {:<10} {:>#10x}  {:>#14x}  {:>#14x}  {}",
                    r.gpa,
                    r.end() - 1,
                    size(r.len),
                    r.region,
                    r.region_offset,
                    r.hva,
                    m.mem_offset,
                    if r.writable { "rw" } else { "r" }
                )?;
            }
            for s in &g.layout().skipped {
                writeln!(out, "skipped: {s}")?;
            }
            writeln!(
                out,
                "total {} in {} ranges",
                size(g.total_bytes()),
                g.mapped().len()
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_hex_bytes() {
        assert_eq!(parse_num("0x1000"), Ok(0x1000));
        assert_eq!(parse_num("4096"), Ok(4096));
        assert_eq!(parse_num("0x10_0000"), Ok(0x10_0000));
        assert!(parse_num("zz").is_err());
        assert_eq!(
            parse_hex_bytes("deadBEEF").unwrap().0,
            [0xde, 0xad, 0xbe, 0xef]
        );
        assert_eq!(
            parse_hex_bytes("de:ad be-ef").unwrap().0,
            [0xde, 0xad, 0xbe, 0xef]
        );
        assert_eq!(parse_hex_bytes("0x00ff").unwrap().0, [0, 0xff]);
        assert!(parse_hex_bytes("abc").is_err());
        assert!(parse_hex_bytes("").is_err());
        assert!(parse_hex_bytes("zz").is_err());
    }

    #[test]
    fn hexdump_lines() {
        let mut v = Vec::new();
        hexdump(&mut v, 0x1000, b"Linux version 6.1\x00\x01").unwrap();
        let s = String::from_utf8(v).unwrap();
        assert_eq!(
            s,
            "0000000000001000  4c 69 6e 75 78 20 76 65  72 73 69 6f 6e 20 36 2e  |Linux version 6.|\n\
             0000000000001010  31 00 01                                          |1..|\n"
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(size(768 << 10), "768 KiB");
        assert_eq!(size(127 << 20), "127 MiB");
        assert_eq!(size(4 << 30), "4 GiB");
        assert_eq!(size(100), "100 B");
        assert_eq!(size((64 << 20) + (256 << 10)), "64.2 MiB");
    }

    #[test]
    fn cli_shape() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        assert!(Cli::try_parse_from(["rmap-vmi", "info"]).is_err());
        assert!(
            Cli::try_parse_from(["rmap-vmi", "--qemu-pid", "1", "--qmp", "/x", "info"]).is_err()
        );
        let c = Cli::try_parse_from(["rmap-vmi", "--qmp", "/tmp/q", "write", "0x1000", "cafe"])
            .unwrap();
        assert!(matches!(c.cmd, Cmd::Write { gpa: 0x1000, .. }));
    }
}
