//! Faster boots: QEMU can start an uncompressed vmlinux at its PVH entry point, which skips
//! SeaBIOS and the in-guest decompression of the bzImage (about 2 s of 3.5 s under TCG).
//! The vmlinux is taken out of the bzImage once and cached in target/vm/.

use anyhow::{bail, Context, Result};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Compressed payload formats of a bzImage: magic and the tool that decompresses it.
const FORMATS: &[(&[u8], &str)] = &[
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x1f\x8b\x08", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\x02\x21\x4c\x18", "lz4"),
];

fn le32(d: &[u8], at: usize) -> Result<u32> {
    let b = d.get(at..at + 4).context("truncated image")?;
    Ok(u32::from_le_bytes(b.try_into()?))
}

fn le_n(d: &[u8], at: usize, n: usize) -> Result<u64> {
    let b = d.get(at..at + n).context("truncated ELF")?;
    Ok(b.iter().rev().fold(0, |acc, &x| (acc << 8) | u64::from(x)))
}

/// True if an ELF64 image has a Xen PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY, type 18).
fn has_pvh_note(elf: &[u8]) -> Result<bool> {
    if !elf.starts_with(b"\x7fELF\x02\x01") {
        return Ok(false);
    }
    let phoff = usize::try_from(le_n(elf, 0x20, 8)?)?;
    let phentsize = usize::try_from(le_n(elf, 0x36, 2)?)?;
    let phnum = usize::try_from(le_n(elf, 0x38, 2)?)?;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if le_n(elf, ph, 4)? != 4 {
            continue; // not PT_NOTE
        }
        let (off, size) = (
            usize::try_from(le_n(elf, ph + 8, 8)?)?,
            usize::try_from(le_n(elf, ph + 32, 8)?)?,
        );
        let mut at = off;
        while at + 12 <= off + size {
            let (namesz, descsz, kind) = (
                le32(elf, at)? as usize,
                le32(elf, at + 4)? as usize,
                le32(elf, at + 8)?,
            );
            let name = elf.get(at + 12..at + 12 + namesz).unwrap_or_default();
            if name == b"Xen\0" && kind == 18 {
                return Ok(true);
            }
            at += 12 + namesz.next_multiple_of(4) + descsz.next_multiple_of(4);
        }
    }
    Ok(false)
}

fn extract(image: &Path, out: &Path) -> Result<()> {
    let data = fs::read(image)?;
    if data.get(0x202..0x206) != Some(b"HdrS") {
        bail!("not a bzImage");
    }
    let setup_sects = match data[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    let start = (setup_sects + 1) * 512 + le32(&data, 0x248)? as usize;
    let len = le32(&data, 0x24c)? as usize;
    let payload = data
        .get(start..start + len)
        .context("payload outside the image")?;
    let &(_, tool) = FORMATS
        .iter()
        .find(|(magic, _)| payload.starts_with(magic))
        .context("unknown compression")?;
    let packed = out.with_extension("packed");
    fs::write(&packed, payload)?;
    // The kernel appends the decompressed size after the stream: tools may complain about it.
    let single = if tool == "xz" {
        "--single-stream"
    } else {
        "-q"
    };
    let status = Command::new(tool)
        .args(["-dcq", single])
        .arg(&packed)
        .stdout(File::create(out)?)
        .stderr(std::process::Stdio::null())
        .status()
        .with_context(|| format!("running {tool}"))?;
    let _ = fs::remove_file(&packed);
    let elf = fs::read(out)?;
    let size = le32(payload, len.saturating_sub(4))? as usize;
    if elf.len() != size {
        bail!(
            "{tool} gave {} bytes, expected {size} ({status})",
            elf.len()
        );
    }
    if !has_pvh_note(&elf)? {
        bail!("the kernel has no PVH entry point");
    }
    Ok(())
}

/// The image QEMU should boot for `image`: a cached PVH vmlinux when one can be had,
/// else `image` itself.
pub fn boot_image(image: &Path, cache_dir: &Path) -> PathBuf {
    let Ok(meta) = fs::metadata(image) else {
        return image.to_path_buf();
    };
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
    let key = format!(
        "{}-{}-{}",
        meta.len(),
        mtime.map_or(0, |d| d.as_secs()),
        image.display()
    );
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let out = cache_dir.join(format!("vmlinux-{hash:016x}"));
    if out.exists() {
        return out;
    }
    if fs::read(image).is_ok_and(|d| has_pvh_note(&d).unwrap_or(false)) {
        return image.to_path_buf(); // already a PVH vmlinux
    }
    let tmp = cache_dir.join(format!("vmlinux-{hash:016x}.tmp{}", std::process::id()));
    match extract(image, &tmp).and_then(|()| Ok(fs::rename(&tmp, &out)?)) {
        Ok(()) => out,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            eprintln!(
                "xtask: booting {} as is (no PVH vmlinux: {e:#})",
                image.display()
            );
            image.to_path_buf()
        }
    }
}
