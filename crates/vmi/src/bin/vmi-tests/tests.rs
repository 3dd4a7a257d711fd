//! The tests. Each starts its own paused QEMU (see `qemu.rs`).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use vmi::guest::{Expose, GuestMemory, Via};
use vmi::layout;
use vmi::Error;

use crate::qemu::{find_vmlinux, pattern, scratch_dir, Opts, Qemu, Ram};
use crate::{Skip, Test};

const MIB: u64 = 1 << 20;

pub fn all() -> Vec<Test> {
    let t = |name, run| Test::anyhow(name, run).timeout(Duration::from_secs(120));
    vec![
        t(
            "vmi_anon_layout_monitor_agrees_with_proc_maps",
            anon_layout_monitor_agrees_with_proc_maps,
        ),
        t("vmi_anon_write_seen_by_qmp_xp", anon_write_seen_by_qmp_xp),
        t(
            "vmi_anon_loader_file_read_through_mirror",
            anon_loader_file_read_through_mirror,
        ),
        t("vmi_memfd_write_seen_by_qmp_xp", memfd_write_seen_by_qmp_xp),
        t(
            "vmi_memfd_loader_file_read_through_mirror",
            memfd_loader_file_read_through_mirror,
        ),
        t(
            "vmi_remote_proc_map_write_seen_by_qmp_xp",
            remote_proc_map_write_seen_by_qmp_xp,
        ),
        t(
            "vmi_rom_read_matches_xp_and_write_refused",
            rom_read_matches_xp_and_write_refused,
        ),
        t(
            "vmi_outside_guest_ram_is_unmapped",
            outside_guest_ram_is_unmapped,
        ),
        t(
            "vmi_qemu_exit_turns_mirror_reads_into_errors",
            qemu_exit_turns_mirror_reads_into_errors,
        ),
        Test {
            timeout: Duration::from_secs(300),
            ..t(
                "vmi_pvh_vmlinux_banner_found_by_scan",
                pvh_vmlinux_banner_found_by_scan,
            )
        },
        t(
            "vmi_cli_write_read_find_seen_by_qmp_xp",
            cli_write_read_find_seen_by_qmp_xp,
        ),
        t(
            "vmi_cli_qemu_pid_skips_busy_qmp_socket",
            cli_qemu_pid_skips_busy_qmp_socket,
        ),
        t(
            "vmi_cli_no_monitor_write_seen_by_qmp_xp",
            cli_no_monitor_write_seen_by_qmp_xp,
        ),
    ]
}

/// Maps the guest of `q` with the layout its monitor gives.
fn open(q: &mut Qemu, expose: Expose) -> Result<GuestMemory> {
    let l = layout::from_monitor(q.qmp()).context("layout from the monitor")?;
    GuestMemory::open(q.pid(), l, expose).context("mapping guest memory")
}

/// Writes a distinct pattern at several guest-physical addresses (page
/// starts, unaligned, across pages, low RAM below the hole, the last bytes
/// of RAM) through the mirror and checks that QEMU's `xp` sees each.
fn write_seen_by_xp(ram: Ram, expose: Expose) -> Result<()> {
    let mem = 64;
    let mut q = Qemu::start(&Opts::new(mem, ram))?;
    let g = open(&mut q, expose)?;
    let sites = [0x1000u64, 0x9_fff9, 0x12_3457, 0x20_0ffa, mem * MIB - 64];
    for (i, &gpa) in sites.iter().enumerate() {
        let data = pattern(64, 0x5eed + i as u64);
        g.write(gpa, &data)
            .with_context(|| format!("write at {gpa:#x}"))?;
        let seen = q.qmp().xp(gpa, data.len())?;
        ensure!(
            seen == data,
            "QEMU's xp at {gpa:#x} sees {seen:02x?}, the mirror wrote {data:02x?}"
        );
        // And back: the mirror reads what it wrote.
        let mut back = vec![0u8; data.len()];
        g.read(gpa, &mut back)?;
        ensure!(back == data, "mirror read-back at {gpa:#x} differs");
    }
    q.quit()
}

fn anon_write_seen_by_qmp_xp() -> Result<()> {
    write_seen_by_xp(Ram::Anon, Expose::Grants)
}

fn memfd_write_seen_by_qmp_xp() -> Result<()> {
    write_seen_by_xp(Ram::Memfd, Expose::Grants)
}

fn remote_proc_map_write_seen_by_qmp_xp() -> Result<()> {
    write_seen_by_xp(Ram::Anon, Expose::RemoteProcMap)
}

/// QEMU copies a file into guest RAM at machine init (`-device loader`):
/// the mirror must read exactly the file there, and `xp` agrees.
fn loader_file_read_through_mirror(ram: Ram) -> Result<()> {
    let dir = scratch_dir()?;
    let blob = pattern(300 * 1024 + 123, 0xb10b);
    let file = dir.join("blob.bin");
    std::fs::write(&file, &blob)?;
    let gpa = 0x30_0000 + 0x456;
    let mut o = Opts::new(64, ram);
    o.loaders.push((file, gpa));
    let mut q = Qemu::start_in(&o, dir)?;
    let g = open(&mut q, Expose::Grants)?;
    let mut seen = vec![0u8; blob.len()];
    g.read(gpa, &mut seen)?;
    if let Some(i) = seen.iter().zip(&blob).position(|(a, b)| a != b) {
        bail!(
            "mirror differs from the loaded file at +{i:#x} (guest-physical {:#x}): {:#04x} vs {:#04x}",
            gpa + i as u64,
            seen[i],
            blob[i]
        );
    }
    let tail = gpa + blob.len() as u64 - 16;
    ensure!(
        q.qmp().xp(tail, 16)? == blob[blob.len() - 16..],
        "xp disagrees with the file at {tail:#x}"
    );
    q.quit()
}

fn anon_loader_file_read_through_mirror() -> Result<()> {
    loader_file_read_through_mirror(Ram::Anon)
}

fn memfd_loader_file_read_through_mirror() -> Result<()> {
    loader_file_read_through_mirror(Ram::Memfd)
}

/// The monitor's layout has RAM at `[0, 640K)` and `[1M, 64M)` with the
/// ROM aliases in between, and the `/proc/PID/maps` guess (no monitor) puts
/// those RAM addresses at the same host addresses.
fn anon_layout_monitor_agrees_with_proc_maps() -> Result<()> {
    let mut q = Qemu::start(&Opts::new(64, Ram::Anon))?;
    let mon = layout::from_monitor(q.qmp())?;
    for r in &mon.ranges {
        crate::note(format!(
            "{:#x}-{:#x} {} @{:#x} hva {:#x} {}",
            r.gpa,
            r.end() - 1,
            r.region,
            r.region_offset,
            r.hva,
            if r.writable { "rw" } else { "r" }
        ));
    }
    let proc = layout::from_proc(q.pid())?;
    for p in &proc.ranges {
        for gpa in [p.gpa, p.end() - 1] {
            let m = mon
                .ranges
                .iter()
                .find(|r| r.contains(gpa))
                .with_context(|| format!("monitor layout has no RAM at {gpa:#x}"))?;
            ensure!(
                m.writable,
                "{gpa:#x} is not writable RAM in the monitor's layout"
            );
            ensure!(
                m.hva + (gpa - m.gpa) == p.hva + (gpa - p.gpa),
                "{gpa:#x}: monitor says hva {:#x}, /proc guess {:#x}",
                m.hva + (gpa - m.gpa),
                p.hva + (gpa - p.gpa)
            );
        }
    }
    let roms: Vec<_> = mon
        .ranges
        .iter()
        .filter(|r| !r.writable)
        .map(|r| r.region.as_str())
        .collect();
    ensure!(
        roms.contains(&"pc.bios") && roms.contains(&"pc.rom"),
        "no BIOS/option ROM ranges: {roms:?}"
    );
    let ram: u64 = mon
        .ranges
        .iter()
        .filter(|r| r.writable)
        .map(|r| r.len)
        .sum();
    ensure!(
        (64 * MIB - 0x6_0000..=64 * MIB).contains(&ram),
        "RAM total {ram:#x}"
    );
    q.quit()
}

/// The BIOS is at the top of 4 GiB: the mirror reads what `xp` reads there
/// (the reset vector), and refuses to write ROM, also when a write starts
/// in RAM and runs into ROM (nothing is written then).
fn rom_read_matches_xp_and_write_refused() -> Result<()> {
    let mut q = Qemu::start(&Opts::new(64, Ram::Anon))?;
    let g = open(&mut q, Expose::Grants)?;
    let mut v = [0u8; 16];
    g.read(0xffff_fff0, &mut v)?;
    ensure!(
        q.qmp().xp(0xffff_fff0, 16)? == v,
        "reset vector differs from xp"
    );
    ensure!(
        v[0] == 0xea,
        "reset vector does not start with a far jump: {v:02x?}"
    );
    match g.write(0xffff_fff0, &[0x90]) {
        Err(Error::ReadOnly { .. }) => {}
        r => bail!("write into the BIOS: {r:?}"),
    }
    let edge = 0xc_0000 - 8;
    let before = q.qmp().xp(edge, 8)?;
    match g.write(edge, &[0xaa; 16]) {
        Err(Error::ReadOnly { gpa: 0xc_0000, .. }) => {}
        r => bail!("write across RAM into ROM at {edge:#x}: {r:?}"),
    }
    ensure!(
        q.qmp().xp(edge, 8)? == before,
        "a refused write changed RAM"
    );
    q.quit()
}

fn outside_guest_ram_is_unmapped() -> Result<()> {
    let mut q = Qemu::start(&Opts::new(64, Ram::Anon))?;
    let g = open(&mut q, Expose::Grants)?;
    let end = 64 * MIB;
    let mut b = [0u8; 16];
    match g.read(end, &mut b) {
        Err(Error::Unmapped { gpa }) if gpa == end => {}
        r => bail!("read at the end of RAM: {r:?}"),
    }
    match g.read(end - 8, &mut b) {
        Err(Error::Unmapped { gpa }) if gpa == end => {}
        r => bail!("read across the end of RAM: {r:?}"),
    }
    match g.write(0xfec0_0000, &[1]) {
        Err(Error::Unmapped { .. }) => {}
        r => bail!("write into the IOAPIC: {r:?}"),
    }
    q.quit()
}

/// When QEMU exits, its memory is gone: mirror reads fail with an error
/// (SIGBUS caught by the library), never stale data, never a crash.
fn qemu_exit_turns_mirror_reads_into_errors() -> Result<()> {
    let mut q = Qemu::start(&Opts::new(64, Ram::Memfd))?;
    let g = open(&mut q, Expose::Grants)?;
    g.write(0x10_0000, b"still here?")?;
    q.quit()?;
    let mut b = [0u8; 11];
    match g.read(0x10_0000, &mut b) {
        Err(Error::Mirror { gpa: 0x10_0000, .. }) => Ok(()),
        r => bail!(
            "read after QEMU exited: {r:?} ({:?})",
            b.escape_ascii().to_string()
        ),
    }
}

/// The banner of the vmlinux file: `Linux version ...` up to its NUL.
fn file_banner(image: &[u8]) -> Option<Vec<u8>> {
    let f = memchr::memmem::Finder::new(b"Linux version ");
    f.find_iter(image)
        .map(|at| {
            let end = image[at..]
                .iter()
                .position(|&b| b == 0)
                .map_or(image.len(), |n| at + n);
            image[at..end].to_vec()
        })
        .find(|b| b.get(14).is_some_and(u8::is_ascii_digit))
}

/// QEMU loads a PVH vmlinux (the VM bench's own kernel) into guest RAM at
/// machine init: a scan of all guest memory through the mirror finds its
/// banner, identical to the file's and to what `xp` shows, and scans with
/// process_vm_readv and pread find the same matches.
fn pvh_vmlinux_banner_found_by_scan() -> Result<()> {
    let Some(vmlinux) = find_vmlinux() else {
        return Err(Skip(
            "no target/vm/vmlinux-* (run the VM bench once) and no $VMI_VMLINUX".into(),
        )
        .into());
    };
    let image =
        std::fs::read(&vmlinux).with_context(|| format!("reading {}", vmlinux.display()))?;
    let banner = file_banner(&image).context("no banner in the vmlinux")?;
    crate::note(format!("{}: {}", vmlinux.display(), banner.escape_ascii()));
    let mut o = Opts::new(256, Ram::Anon);
    o.kernel = Some(vmlinux);
    let mut q = Qemu::start(&o)?;
    let g = open(&mut q, Expose::Grants)?;
    let mirror = g.find(b"Linux version ", Via::Mirror, 64)?;
    let mut hits = 0;
    for &gpa in &mirror.matches {
        let mut b = vec![0u8; banner.len()];
        g.read(gpa, &mut b)?;
        if b == banner {
            hits += 1;
            let xp = q.qmp().xp(gpa, banner.len().min(64))?;
            ensure!(
                xp == banner[..xp.len()],
                "xp at {gpa:#x} shows {:?}",
                xp.escape_ascii().to_string()
            );
            crate::note(format!("banner at guest-physical {gpa:#x}"));
        }
    }
    ensure!(
        hits > 0,
        "banner not found; matches at {:x?}",
        mirror.matches
    );
    let mib = g.total_bytes() as f64 / MIB as f64;
    crate::note(format!(
        "mirror scan of {mib:.0} MiB: {:.1} ms (reading {:.1} ms)",
        ms(mirror.elapsed),
        ms(mirror.read)
    ));
    for via in [Via::ProcessVmReadv, Via::Pread, Via::Mirror] {
        let s = g.find(b"Linux version ", via, 64)?;
        crate::note(format!(
            "{via} scan: {:.1} ms (reading {:.1} ms)",
            ms(s.elapsed),
            ms(s.read)
        ));
        ensure!(
            s.matches == mirror.matches,
            "{via} finds {:x?}, the mirror {:x?}",
            s.matches,
            mirror.matches
        );
    }
    q.quit()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `rmap-vmi`, next to this program.
fn rmap_vmi() -> Result<PathBuf> {
    let p = std::env::current_exe()?.with_file_name("rmap-vmi");
    if !p.exists() {
        return Err(Skip(format!("{} not built", p.display())).into());
    }
    Ok(p)
}

fn run_cli(args: &[&str]) -> Result<String> {
    let out = Command::new(rmap_vmi()?).args(args).output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "rmap-vmi {args:?}: {}\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

/// The command line end to end, on the second QMP socket: `write` is seen
/// by `xp`, `read` prints the bytes, `find` lists the address.
fn cli_write_read_find_seen_by_qmp_xp() -> Result<()> {
    let mut q = Qemu::start(&Opts::new(64, Ram::Memfd))?;
    let sock = q.tool_sock.to_string_lossy().into_owned();
    let text = b"vmi-cli-marker-7f3a";
    let hex: String = text.iter().map(|b| format!("{b:02x}")).collect();
    let out = run_cli(&["--qmp", &sock, "write", "0x2345678", &hex])?;
    ensure!(
        out.contains("wrote 19 bytes at 0x2345678"),
        "write printed {out:?}"
    );
    ensure!(
        q.qmp().xp(0x234_5678, text.len())? == text,
        "xp does not see the CLI's write"
    );
    let out = run_cli(&["--qmp", &sock, "read", "0x2345678", "19"])?;
    ensure!(
        out.starts_with("0000000002345678  76 6d 69 2d 63 6c 69 2d  6d 61 72 6b 65 72 2d 37  |vmi-cli-marker-7|"),
        "read printed {out:?}"
    );
    let out = run_cli(&["--qmp", &sock, "find", "vmi-cli-marker-7f3a"])?;
    ensure!(
        out.contains("0x0000000002345678  vmi-cli-marker-7f3a"),
        "find printed {out:?}"
    );
    q.quit()
}

/// `--qemu-pid` finds the QMP sockets on QEMU's command line; the first
/// is held by the test (a monitor serves one client), so it must go on to
/// the second.
fn cli_qemu_pid_skips_busy_qmp_socket() -> Result<()> {
    let q = Qemu::start(&Opts::new(64, Ram::Anon))?;
    let pid = q.pid().to_string();
    let out = run_cli(&["--qemu-pid", &pid, "info"])?;
    for l in out.lines() {
        crate::note(l);
    }
    ensure!(
        out.contains("vmi.sock"),
        "info did not use the free socket: {out:?}"
    );
    ensure!(
        out.contains("pc.bios") && out.contains("pc.ram"),
        "info: {out:?}"
    );
    q.quit()
}

/// Without the monitor, the layout is guessed from /proc: a write there is
/// still what QEMU sees.
fn cli_no_monitor_write_seen_by_qmp_xp() -> Result<()> {
    let mut q = Qemu::start(&Opts::new(64, Ram::Anon))?;
    let pid = q.pid().to_string();
    run_cli(&[
        "--qemu-pid",
        &pid,
        "--no-monitor",
        "write",
        "0x3000001",
        "c0ffee",
    ])?;
    ensure!(
        q.qmp().xp(0x300_0001, 3)? == [0xc0, 0xff, 0xee],
        "xp does not see the write"
    );
    q.quit()
}
