//! Host side: packages, the kernel to boot, building the module, running host commands.

use anyhow::{bail, Context, Result};
use std::cmp::Ordering;
use std::fs;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian packages the bench needs, with a file that shows each is there.
const PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-x86", "/usr/bin/qemu-system-x86_64"),
    ("busybox-static", "/usr/bin/busybox"),
    ("linux-image-amd64", ""),
    ("linux-headers-amd64", ""),
    ("make", "/usr/bin/make"),
    ("gcc", "/usr/bin/gcc"),
    ("libc6-dev", "/usr/include/stdio.h"),
];

/// The workspace root (the parent of this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// `<repo>/target/vm`, created if needed.
pub fn vm_dir() -> Result<PathBuf> {
    let dir = repo_root().join("target/vm");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout.ends_with(b"install ok installed"))
}

/// Installs whatever of [`PACKAGES`] is missing, with apt-get (run `apt-get update` first).
pub fn ensure_packages() -> Result<()> {
    ensure(PACKAGES)
}

/// Installs whatever of `packages` (name, a file it provides or "") is missing.
pub fn ensure(packages: &[(&str, &str)]) -> Result<()> {
    let have_dpkg = Command::new("dpkg-query").arg("--version").output().is_ok();
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(pkg, file)| {
            if have_dpkg {
                !installed(pkg)
            } else {
                !file.is_empty() && !Path::new(file).exists()
            }
        })
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    if !have_dpkg {
        bail!("missing: {list} (not a Debian system: install the equivalents by hand)");
    }
    eprintln!("xtask: installing missing packages: {list}");
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    let mut install = vec!["install", "-y"];
    install.extend(&missing);
    if !apt(&["update"]) || !apt(&install) {
        bail!("could not install the missing packages: {list}\n  run as root: apt-get update && apt-get install -y {list}");
    }
    Ok(())
}

/// The kernel the guest boots and the build directory modules are built against.
#[derive(Clone, Debug)]
pub struct Kernel {
    pub image: PathBuf,
    pub kdir: PathBuf,
    /// `uname -r` of the image.
    pub release: String,
    /// `/lib/modules/<release>` or `--modules-dir`, when there is one.
    pub modules_dir: Option<PathBuf>,
    /// The kernel's `.config`, when found.
    pub config: Option<PathBuf>,
}

/// Compares version strings piecewise, numbers as numbers ("6.10.0" > "6.9.1").
fn version_cmp(a: &str, b: &str) -> Ordering {
    fn pieces(s: &str) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        let mut rest = s;
        while !rest.is_empty() {
            let digits = rest.chars().take_while(char::is_ascii_digit).count();
            let (tok, tail) = if digits > 0 {
                rest.split_at(digits)
            } else {
                rest.split_at(
                    rest.find(|c: char| c.is_ascii_digit())
                        .unwrap_or(rest.len()),
                )
            };
            out.push((
                tok.parse().unwrap_or(0),
                if digits > 0 {
                    String::new()
                } else {
                    tok.into()
                },
            ));
            rest = tail;
        }
        out
    }
    pieces(a).cmp(&pieces(b))
}

/// The kernel release of a bzImage (its setup header's `kernel_version`) or of a vmlinux ELF
/// (its "Linux version" banner).
pub fn kernel_release(image: &Path) -> Result<String> {
    let data = fs::read(image).with_context(|| format!("reading {}", image.display()))?;
    let text = if data.get(0x202..0x206) == Some(b"HdrS") {
        let off = usize::from(u16::from_le_bytes([data[0x20e], data[0x20f]])) + 0x200;
        data.get(off..).context("bad kernel_version offset")?
    } else if data.starts_with(b"\x7fELF") {
        let banner = b"Linux version ";
        let at = data.windows(banner.len()).position(|w| w == banner);
        &data[at.context("no Linux version banner")? + banner.len()..]
    } else {
        bail!("{} is neither a bzImage nor a vmlinux", image.display());
    };
    let end = text.iter().position(|&b| b == 0 || b == b' ').unwrap_or(0);
    let release = String::from_utf8_lossy(&text[..end]).into_owned();
    if release.is_empty() {
        bail!("no version string in {}", image.display());
    }
    Ok(release)
}

/// The newest `/boot/vmlinuz-<ver>` that has `/lib/modules/<ver>/build`.
pub fn default_kernel() -> Result<Kernel> {
    let mut best: Option<String> = None;
    for entry in fs::read_dir("/boot").context("reading /boot")? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let Some(ver) = name.strip_prefix("vmlinuz-") else {
            continue;
        };
        if !Path::new("/lib/modules").join(ver).join("build").is_dir() {
            continue;
        }
        if best
            .as_deref()
            .map_or(true, |b| version_cmp(ver, b) == Ordering::Greater)
        {
            best = Some(ver.to_string());
        }
    }
    let Some(ver) = best else {
        bail!("no /boot/vmlinuz-<ver> with /lib/modules/<ver>/build: install linux-image-amd64 and linux-headers-amd64 (cargo xtask setup), or pass --kernel and --kdir");
    };
    let modules = Path::new("/lib/modules").join(&ver);
    let kdir = modules.join("build");
    let config = [
        kdir.join(".config"),
        PathBuf::from(format!("/boot/config-{ver}")),
    ]
    .into_iter()
    .find(|p| p.exists());
    Ok(Kernel {
        image: PathBuf::from(format!("/boot/vmlinuz-{ver}")),
        kdir,
        release: ver,
        modules_dir: Some(modules),
        config,
    })
}

/// The kernel given by `--kernel`/`--kdir`/`--modules-dir`, or the default one.
pub fn select_kernel(
    image: Option<&Path>,
    kdir: Option<&Path>,
    modules_dir: Option<&Path>,
) -> Result<Kernel> {
    let mut k = match (image, kdir) {
        (None, None) => default_kernel()?,
        (Some(image), Some(kdir)) => {
            let release = kernel_release(image)?;
            let modules = Path::new("/lib/modules").join(&release);
            Kernel {
                image: image.to_path_buf(),
                kdir: kdir.to_path_buf(),
                modules_dir: modules.join("modules.dep").exists().then_some(modules),
                config: Some(kdir.join(".config")).filter(|p| p.exists()),
                release,
            }
        }
        _ => bail!("--kernel and --kdir go together"),
    };
    if let Some(dir) = modules_dir {
        k.modules_dir = Some(dir.to_path_buf());
    }
    Ok(k)
}

/// Runs a command, failing with its command line if it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    let program = Path::new(cmd.get_program());
    let mut line = program
        .file_name()
        .unwrap_or(program.as_os_str())
        .to_string_lossy()
        .into_owned();
    for a in cmd.get_args() {
        line += " ";
        line += &a.to_string_lossy();
    }
    eprintln!("xtask: $ {line}");
    let status = cmd.status().with_context(|| format!("starting {line}"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// `cargo` in the workspace root (the one running us, when known).
pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(repo_root());
    c
}

/// Builds the module in `<repo>/kmod` against `kdir`; returns `kmod/pidfd_mem.ko`.
pub fn build_kmod(kdir: &Path) -> Result<PathBuf> {
    build_kmod_in(&repo_root().join("kmod"), kdir)
}

/// Builds the module for `kdir` in a copy of kmod/ of its own
/// (`target/kmod/<kdir>/kmod`), so that runs on two kernels, or two runs at
/// once, never swap each other's `.ko`. Only changed sources are copied, so
/// the build stays incremental.
pub fn build_kmod_for_run(kdir: &Path) -> Result<PathBuf> {
    let src = repo_root().join("kmod");
    let tag: String = kdir
        .display()
        .to_string()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let top = repo_root().join("target/kmod").join(tag.trim_matches('_'));
    let dst = top.join("kmod");
    fs::create_dir_all(&dst).with_context(|| format!("creating {}", dst.display()))?;
    let include = top.join("include");
    if !include.exists() {
        std::os::unix::fs::symlink(repo_root().join("include"), &include)
            .with_context(|| format!("linking {}", include.display()))?;
    }
    for entry in fs::read_dir(&src).with_context(|| format!("reading {}", src.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let wanted = name == "Kbuild"
            || name == "Makefile"
            || [".c", ".h", ".sh"].iter().any(|e| name.ends_with(e));
        if !wanted || name.ends_with(".mod.c") || !path.is_file() {
            continue;
        }
        let data = fs::read(&path)?;
        let to = dst.join(&name);
        if fs::read(&to).ok().as_deref() != Some(&data[..]) {
            fs::write(&to, &data).with_context(|| format!("writing {}", to.display()))?;
        }
    }
    build_kmod_in(&dst, kdir)
}

fn build_kmod_in(kmod: &Path, kdir: &Path) -> Result<PathBuf> {
    if !kmod.join("Makefile").exists() {
        bail!(
            "{} has no Makefile yet: nothing to build (use --no-module to boot without it)",
            kmod.display()
        );
    }
    if !kdir.join("Makefile").exists() {
        bail!("{} is not a kernel build directory (no Makefile): install linux-headers-amd64 or pass --kdir", kdir.display());
    }
    // make's output goes to stderr: stdout is the guest command's (`cargo xtask run -- cat f > g`).
    let stderr = std::io::stderr().as_fd().try_clone_to_owned()?;
    run(Command::new("make")
        .arg("-C")
        .arg(kmod)
        .arg(format!("KDIR={}", kdir.display()))
        .stdout(stderr))?;
    let ko = kmod.join("pidfd_mem.ko");
    if !ko.exists() {
        bail!("make succeeded but {} does not exist", ko.display());
    }
    Ok(ko)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(
            version_cmp("6.10.0-1-amd64", "6.9.12-1-amd64"),
            Ordering::Greater
        );
        assert_eq!(
            version_cmp("6.1.0-56-amd64", "6.1.0-9-amd64"),
            Ordering::Greater
        );
        assert_eq!(
            version_cmp("6.1.0-56-amd64", "6.1.0-56-amd64"),
            Ordering::Equal
        );
    }
}
