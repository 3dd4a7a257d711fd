//! The guest's initramfs: a newc cpio archive written here, and the kernel modules it needs.

use anyhow::{bail, Context, Result};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A newc ("070701") cpio archive built in memory. Every entry is owned by root.
pub struct Cpio {
    buf: Vec<u8>,
    ino: u32,
}

impl Cpio {
    pub fn new() -> Self {
        Cpio {
            buf: Vec::new(),
            ino: 1,
        }
    }

    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        let fields = [
            self.ino,
            mode,
            0, // uid
            0, // gid
            1, // nlink
            0, // mtime
            u32::try_from(data.len()).expect("initramfs entry over 4 GiB"),
            0, // devmajor
            0, // devminor
            rdev.0,
            rdev.1,
            u32::try_from(name.len() + 1).expect("long name"),
            0, // check
        ];
        self.ino += 1;
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while self.buf.len() % 4 != 0 {
            self.buf.push(0);
        }
    }

    pub fn dir(&mut self, name: &str) {
        self.entry(name, 0o040_755, (0, 0), &[]);
    }

    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.entry(name, 0o100_000 | mode, (0, 0), data);
    }

    pub fn char_dev(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, 0o020_600, (major, minor), &[]);
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.buf
    }
}

/// A module's name as the kernel spells it: file name without `.ko*`, `-` as `_`.
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// `CONFIG_X=y` and `=m` settings of a kernel `.config`.
pub fn read_config(path: &Path) -> Result<HashMap<String, String>> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.starts_with("CONFIG_"))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

/// Resolves `wanted` modules (name, CONFIG symbol) to the `.ko` files to load, dependencies
/// first. A module that is built in (per modules.builtin or the config) is skipped.
pub fn resolve_modules(
    modules_dir: Option<&Path>,
    config: &HashMap<String, String>,
    wanted: &[(&str, &str)],
) -> Result<Vec<PathBuf>> {
    let mut deps: HashMap<String, (String, Vec<String>)> = HashMap::new();
    let mut builtin = HashSet::new();
    if let Some(dir) = modules_dir {
        let dep_file = dir.join("modules.dep");
        let text = fs::read_to_string(&dep_file)
            .with_context(|| format!("reading {}", dep_file.display()))?;
        for line in text.lines() {
            let Some((path, rest)) = line.split_once(':') else {
                continue;
            };
            let ds = rest.split_whitespace().map(module_name).collect();
            deps.insert(module_name(path), (path.to_string(), ds));
        }
        if let Ok(text) = fs::read_to_string(dir.join("modules.builtin")) {
            builtin.extend(text.lines().map(module_name));
        }
    }
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    for &(name, symbol) in wanted {
        if deps.contains_key(name) {
            visit(name, &deps, &mut seen, &mut order)?;
        } else if builtin.contains(name) || config.get(symbol).is_some_and(|v| v == "y") {
            continue;
        } else {
            let where_ =
                modules_dir.map_or("no modules directory".into(), |d| d.display().to_string());
            bail!("kernel module {name} is not in {where_} and {symbol} is not =y in the kernel config");
        }
    }
    let Some(dir) = modules_dir else {
        return Ok(Vec::new());
    };
    Ok(order.into_iter().map(|p| dir.join(p)).collect())
}

fn visit(
    name: &str,
    deps: &HashMap<String, (String, Vec<String>)>,
    seen: &mut HashSet<String>,
    order: &mut Vec<String>,
) -> Result<()> {
    if !seen.insert(name.to_string()) {
        return Ok(());
    }
    let (path, ds) = deps
        .get(name)
        .with_context(|| format!("module {name} missing from modules.dep"))?;
    for d in ds {
        visit(d, deps, seen, order)?;
    }
    order.push(path.clone());
    Ok(())
}

/// A module's contents, decompressed if the distribution ships it compressed.
pub fn read_module(path: &Path) -> Result<Vec<u8>> {
    let tool = match path.extension().and_then(|e| e.to_str()) {
        Some("ko") => return fs::read(path).with_context(|| format!("reading {}", path.display())),
        Some("xz") => "xz",
        Some("zst") => "zstd",
        Some("gz") => "gzip",
        _ => bail!("unknown module format: {}", path.display()),
    };
    let out = Command::new(tool)
        .arg("-dc")
        .arg(path)
        .output()
        .with_context(|| format!("running {tool} to decompress {}", path.display()))?;
    if !out.status.success() {
        bail!("{tool} -dc {} failed", path.display());
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(module_name("kernel/net/9p/9pnet_virtio.ko"), "9pnet_virtio");
        assert_eq!(
            module_name("kernel/drivers/a/virtio-pci.ko.xz"),
            "virtio_pci"
        );
    }

    #[test]
    fn deps_first_and_builtins_skipped() {
        let dir = std::env::temp_dir().join(format!("xtask-mods-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("modules.dep"),
            "k/virtio_console.ko: k/virtio.ko k/virtio_ring.ko\nk/virtio_ring.ko:\nk/virtio.ko: k/virtio_ring.ko\n",
        )
        .unwrap();
        fs::write(dir.join("modules.builtin"), "k/9pnet_virtio.ko\n").unwrap();
        let config = HashMap::from([("CONFIG_9P_FS".to_string(), "y".to_string())]);
        let wanted = [
            ("virtio_console", "C"),
            ("9pnet_virtio", "N"),
            ("9p", "CONFIG_9P_FS"),
        ];
        let got = resolve_modules(Some(&dir), &config, &wanted).unwrap();
        let names: Vec<_> = got
            .iter()
            .map(|p| module_name(&p.to_string_lossy()))
            .collect();
        assert_eq!(names, ["virtio_ring", "virtio", "virtio_console"]);
        assert!(resolve_modules(Some(&dir), &config, &[("absent", "CONFIG_ABSENT")]).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cpio_is_aligned() {
        let mut c = Cpio::new();
        c.dir("bin");
        c.file("init", 0o755, b"#!/bin/sh\n");
        let buf = c.finish();
        assert_eq!(buf.len() % 4, 0);
        assert!(buf.starts_with(b"070701"));
    }
}
