//! `cargo xtask debug-kernel`: builds the 6.12 debug kernel (KASAN, lockdep, DEBUG_VM,
//! kmemleak, SLUB debugging) from Debian's `linux-source-6.12` with the fragment
//! `kmod/testing/config`, in a cache outside the work tree that later runs reuse, and runs
//! the guest suite on it. With `--plain`, the same kernel without the fragment's debug set
//! (for benchmarks, whose figures the debug options would distort), in its own directory.

use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::host;

/// What building the kernel needs, beyond the bench's own packages.
const PACKAGES: &[(&str, &str)] = &[
    ("linux-source-6.12", "/usr/src/linux-source-6.12.tar.xz"),
    ("flex", "/usr/bin/flex"),
    ("bison", "/usr/bin/bison"),
    ("bc", "/usr/bin/bc"),
    ("libelf-dev", "/usr/include/libelf.h"),
    ("libssl-dev", "/usr/include/openssl/ssl.h"),
    ("cpio", "/usr/bin/cpio"),
];

const TARBALL: &str = "/usr/src/linux-source-6.12.tar.xz";

/// The cache: `$REMOTE_MAPPING_CACHE` or `/var/cache/remote-mapping`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("REMOTE_MAPPING_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/remote-mapping"))
}

/// Which 6.12 kernel to build.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// The whole fragment: `build-6.12-debug`.
    Debug,
    /// The fragment up to its debug set (keeping the boot and debug-info lines there):
    /// `build-6.12`.
    Plain,
}

/// The fragment's text for `flavour`.
fn fragment_for(text: &[u8], flavour: Flavour) -> Vec<u8> {
    if flavour == Flavour::Debug {
        return text.to_vec();
    }
    let mut out = String::new();
    let mut debug_set = false;
    for line in String::from_utf8_lossy(text).lines() {
        debug_set |= line.starts_with("# -- debug set");
        if !debug_set || line.starts_with("CONFIG_PVH") || line.starts_with("CONFIG_DEBUG_INFO") {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.into_bytes()
}

/// The build directory (`--kdir`) and its bzImage (`--kernel`), built or brought up to
/// date with the fragment first.
pub fn build(jobs: usize, flavour: Flavour) -> Result<(PathBuf, PathBuf)> {
    host::ensure(PACKAGES)?;
    let cache = cache_dir();
    fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let src = cache.join("linux-source-6.12");
    if !src.join("Makefile").exists() {
        eprintln!("xtask: unpacking {TARBALL} into {}", cache.display());
        host::run(
            Command::new("tar")
                .arg("xf")
                .arg(TARBALL)
                .arg("-C")
                .arg(&cache),
        )?;
    }
    let out = cache.join(match flavour {
        Flavour::Debug => "build-6.12-debug",
        Flavour::Plain => "build-6.12",
    });
    fs::create_dir_all(&out)?;
    let source = host::repo_root().join("kmod/testing/config");
    let want = fragment_for(
        &fs::read(&source).with_context(|| format!("reading {}", source.display()))?,
        flavour,
    );
    let fragment = out.join(".fragment.config");
    let stamp = out.join(".fragment");
    if fs::read(&stamp).ok().as_deref() != Some(&want[..]) {
        fs::write(&fragment, &want)?;
        eprintln!(
            "xtask: configuring: x86_64_defconfig + {}",
            fragment.display()
        );
        make(&src, &out, &["x86_64_defconfig"])?;
        host::run(
            Command::new("scripts/kconfig/merge_config.sh")
                .current_dir(&src)
                .arg("-m")
                .arg("-O")
                .arg(&out)
                .arg(out.join(".config"))
                .arg(&fragment),
        )?;
        make(&src, &out, &["olddefconfig"])?;
        check_config(&out.join(".config"), &want)?;
    }
    eprintln!(
        "xtask: building the kernel in {} (the first time: about 40 minutes on 2 cores with the debug set, 25 without)",
        out.display()
    );
    let j = format!("-j{jobs}");
    make(&src, &out, &[&j, "bzImage", "modules"])?;
    fs::write(&stamp, &want)?;
    let image = out.join("arch/x86/boot/bzImage");
    if !image.exists() {
        bail!("the build finished but {} is missing", image.display());
    }
    Ok((out, image))
}

fn make(src: &Path, out: &Path, targets: &[&str]) -> Result<()> {
    host::run(
        Command::new("make")
            .current_dir(src)
            .arg(format!("O={}", out.display()))
            .args(targets),
    )
}

/// Every `CONFIG_X=y` of the fragment must have survived `olddefconfig` (a dependency
/// missing from the fragment drops an option silently).
fn check_config(config: &Path, fragment: &[u8]) -> Result<()> {
    let have = fs::read_to_string(config)?;
    let lost: Vec<String> = String::from_utf8_lossy(fragment)
        .lines()
        .filter(|l| l.starts_with("CONFIG_") && l.ends_with("=y"))
        .filter(|l| !have.lines().any(|h| h == *l))
        .map(|l| l.trim_end_matches("=y").to_string())
        .collect();
    if !lost.is_empty() {
        bail!(
            "the fragment asks for options the kernel did not keep: {}",
            lost.join(", ")
        );
    }
    Ok(())
}
