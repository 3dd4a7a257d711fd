//! What `/proc/PID` tells about a QEMU process: its command line (QMP
//! sockets, RAM size) and its mappings (the fallback layout).

use std::path::{Path, PathBuf};

use crate::error::Error;

/// `/proc/PID/cmdline` as arguments.
pub fn cmdline(pid: u32) -> Result<Vec<String>, Error> {
    let p = format!("/proc/{pid}/cmdline");
    let raw = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
    Ok(raw
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect())
}

/// `/proc/PID/cwd`, to resolve relative socket paths.
pub fn cwd(pid: u32) -> Result<PathBuf, Error> {
    let p = format!("/proc/{pid}/cwd");
    std::fs::read_link(&p).map_err(|e| Error::io(&p, e))
}

/// The value of each `-opt VALUE` / `--opt VALUE` / `-opt=VALUE`.
fn option_values<'a>(args: &'a [String], opt: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    let mut it = args.iter().peekable();
    std::iter::from_fn(move || {
        while let Some(a) = it.next() {
            let Some(name) = a.strip_prefix("--").or_else(|| a.strip_prefix('-')) else {
                continue;
            };
            if name == opt {
                if let Some(v) = it.next() {
                    return Some(v.as_str());
                }
            } else if let Some(v) = name.strip_prefix(opt).and_then(|r| r.strip_prefix('=')) {
                return Some(v);
            }
        }
        None
    })
}

/// `key=value` of a QEMU option string (`socket,id=x,path=/tmp/q`); the
/// first, unnamed part answers to `first`.
fn opt_get<'a>(value: &'a str, key: &str, first: &str) -> Option<&'a str> {
    value
        .split(',')
        .enumerate()
        .find_map(|(i, part)| match part.split_once('=') {
            Some((k, v)) if k == key => Some(v),
            None if i == 0 && key == first => Some(part),
            _ => None,
        })
}

/// The QMP unix sockets named on QEMU's command line, in order: `-qmp
/// unix:PATH,...` (and `-qmp-pretty`), and `-chardev socket,id=X,path=PATH`
/// used by `-mon chardev=X,mode=control`. Relative paths are joined to `cwd`.
pub fn qmp_sockets(args: &[String], cwd: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for opt in ["qmp", "qmp-pretty"] {
        for v in option_values(args, opt) {
            let spec = v.split(',').next().unwrap_or("");
            if let Some(p) = spec.strip_prefix("unix:") {
                out.push(cwd.join(p));
            }
        }
    }
    let control: Vec<&str> = option_values(args, "mon")
        .filter(|v| opt_get(v, "mode", "chardev") == Some("control"))
        .filter_map(|v| opt_get(v, "chardev", "chardev"))
        .collect();
    for v in option_values(args, "chardev") {
        if opt_get(v, "backend", "backend") != Some("socket") {
            continue;
        }
        if let (Some(id), Some(path)) = (opt_get(v, "id", ""), opt_get(v, "path", "")) {
            if control.contains(&id) {
                out.push(cwd.join(path));
            }
        }
    }
    out
}

/// A QEMU size: a number with an optional `K`/`M`/`G`/`T` suffix (with or
/// without `B`, any case); without a suffix, `default_unit` bytes.
pub fn parse_size(s: &str, default_unit: u64) -> Option<u64> {
    let s = s.trim();
    let num_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(num_end);
    let unit = match suffix.to_ascii_uppercase().trim_end_matches('B') {
        "" if suffix.is_empty() => default_unit,
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return None,
    };
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(unit);
    }
    let f: f64 = num.parse().ok()?;
    let v = f * unit as f64;
    (v.is_finite() && v >= 0.0 && v < u64::MAX as f64).then_some(v as u64)
}

/// The guest's RAM size: the size of the backend named by `-machine
/// memory-backend=ID` if any, else `-m SIZE` / `-m size=SIZE` (MiB by
/// default), else QEMU's default of 128 MiB.
pub fn ram_size(args: &[String]) -> Option<u64> {
    let backend = option_values(args, "machine")
        .chain(option_values(args, "M"))
        .find_map(|v| opt_get(v, "memory-backend", "type"));
    if let Some(id) = backend {
        return option_values(args, "object")
            .filter(|v| v.starts_with("memory-backend-"))
            .find(|v| opt_get(v, "id", "") == Some(id))
            .and_then(|v| opt_get(v, "size", ""))
            .and_then(|s| parse_size(s, 1));
    }
    match option_values(args, "m").last() {
        Some(v) => parse_size(opt_get(v, "size", "size")?, 1 << 20),
        None => Some(128 << 20),
    }
}

/// One line of `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapsEntry {
    /// Start address.
    pub start: u64,
    /// End address (exclusive).
    pub end: u64,
    /// `rw-p`, `rw-s`, ...
    pub perms: String,
    /// File offset.
    pub offset: u64,
    /// Path or pseudo-name (`[heap]`, `/memfd:x (deleted)`), if any.
    pub path: Option<String>,
}

/// Parses `/proc/PID/maps` text.
pub fn parse_maps(text: &str) -> Result<Vec<MapsEntry>, Error> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let bad = || Error::parse("/proc/PID/maps", line);
            let mut f = line.splitn(6, ' ');
            let range = f.next().ok_or_else(bad)?;
            let perms = f.next().ok_or_else(bad)?;
            let offset = f.next().ok_or_else(bad)?;
            let _dev = f.next().ok_or_else(bad)?;
            let _inode = f.next().ok_or_else(bad)?;
            let path = f.next().map(str::trim).filter(|p| !p.is_empty());
            let (s, e) = range.split_once('-').ok_or_else(bad)?;
            let hex = |v: &str| u64::from_str_radix(v, 16).map_err(|_| bad());
            Ok(MapsEntry {
                start: hex(s)?,
                end: hex(e)?,
                perms: perms.to_string(),
                offset: hex(offset)?,
                path: path.map(str::to_string),
            })
        })
        .collect()
}

/// `/proc/PID/maps`, parsed.
pub fn maps(pid: u32) -> Result<Vec<MapsEntry>, Error> {
    let p = format!("/proc/{pid}/maps");
    let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
    parse_maps(&text)
}

/// The one mapping that can be guest RAM of `size` bytes: readable and
/// writable, exactly `size` long, and anonymous, a memfd, or a shared file
/// (`memory-backend-file`).
pub fn find_ram_mapping(maps: &[MapsEntry], size: u64) -> Result<&MapsEntry, Error> {
    let found: Vec<&MapsEntry> = maps
        .iter()
        .filter(|m| m.perms.starts_with("rw") && m.end - m.start == size)
        .filter(|m| match &m.path {
            None => true,
            Some(p) => p.starts_with("/memfd:") || (m.perms.ends_with('s') && p.starts_with('/')),
        })
        .collect();
    match found.as_slice() {
        [one] => Ok(one),
        [] => Err(Error::Layout(format!(
            "no mapping of exactly {size:#x} bytes that could be guest RAM"
        ))),
        many => Err(Error::Layout(format!(
            "{} mappings of {size:#x} bytes could be guest RAM (at {}): use QMP",
            many.len(),
            many.iter()
                .map(|m| format!("{:#x}", m.start))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_string).collect()
    }

    #[test]
    fn qmp_sockets_from_command_lines() {
        let cwd = Path::new("/work");
        let a = args("qemu-system-x86_64 -S -m 128 -qmp unix:/tmp/a.sock,server=on,wait=off --qmp unix:rel.sock,server,nowait -qmp tcp:localhost:4444");
        assert_eq!(
            qmp_sockets(&a, cwd),
            [
                PathBuf::from("/tmp/a.sock"),
                PathBuf::from("/work/rel.sock")
            ]
        );
        let a = args("qemu -chardev socket,id=mon0,path=/run/q.qmp,server=on,wait=off -mon chardev=mon0,mode=control -chardev socket,id=h,path=/run/hmp -mon chardev=h");
        assert_eq!(qmp_sockets(&a, cwd), [PathBuf::from("/run/q.qmp")]);
        assert!(qmp_sockets(&args("qemu -m 64"), cwd).is_empty());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256", 1 << 20), Some(256 << 20));
        assert_eq!(parse_size("256M", 1 << 20), Some(256 << 20));
        assert_eq!(parse_size("4G", 1 << 20), Some(4 << 30));
        assert_eq!(parse_size("1.5g", 1 << 20), Some(3 << 29));
        assert_eq!(parse_size("128MiB", 1), None);
        assert_eq!(parse_size("65536", 1), Some(65536));
        assert_eq!(parse_size("2x", 1), None);
    }

    #[test]
    fn ram_size_from_command_lines() {
        assert_eq!(ram_size(&args("qemu -S")), Some(128 << 20));
        assert_eq!(ram_size(&args("qemu -m 256")), Some(256 << 20));
        assert_eq!(
            ram_size(&args("qemu -m size=1G,slots=2,maxmem=4G")),
            Some(1 << 30)
        );
        assert_eq!(
            ram_size(&args("qemu -m 128 -object memory-backend-memfd,id=m,size=128M,share=on -machine memory-backend=m")),
            Some(128 << 20)
        );
        assert_eq!(
            ram_size(&args(
                "qemu -machine pc,memory-backend=mem -object memory-backend-ram,id=mem,size=64M"
            )),
            Some(64 << 20)
        );
    }

    #[test]
    fn ram_mapping_in_real_maps() {
        let maps = parse_maps(include_str!("../testdata/qemu-7.2/pc-anon-128m.maps")).unwrap();
        let m = find_ram_mapping(&maps, 128 << 20).unwrap();
        // The address `gpa2hva 0` gave for this very process.
        assert_eq!(m.start, 0x7efc_2be0_0000);
        assert_eq!(m.path, None);
        assert_eq!(m.perms, "rw-p");
        let maps = parse_maps(include_str!("../testdata/qemu-7.2/pc-memfd-128m.maps")).unwrap();
        let m = find_ram_mapping(&maps, 128 << 20).unwrap();
        assert_eq!(m.start, 0x7f02_5fff_f000);
        assert_eq!(
            m.path.as_deref(),
            Some("/memfd:memory-backend-memfd (deleted)")
        );
        assert!(find_ram_mapping(&maps, 3 << 20).is_err());
    }
}
