//! Host test against a live QEMU (no module needed): the monitor layout of
//! a paused `qemu-system-x86_64` agrees with the `/proc` guess, and `xp`
//! reads a file QEMU loaded. Skipped (passes with a note) without QEMU.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vmi::{layout, qmp::Qmp};

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn live_qemu_monitor_layout_and_xp() {
    if Command::new("qemu-system-x86_64")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        eprintln!("qemu-system-x86_64 not installed: skipped");
        return;
    }
    let dir = std::env::temp_dir().join(format!("vmi-host-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let blob = dir.join("blob");
    std::fs::write(&blob, b"loaded-by-qemu").unwrap();
    let sock = dir.join("q.sock");
    let child = Command::new("qemu-system-x86_64")
        .args([
            "-S",
            "-nodefaults",
            "-display",
            "none",
            "-accel",
            "tcg",
            "-m",
            "96",
        ])
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", sock.display()))
        .arg("-device")
        .arg(format!("loader,file={},addr=0x123000", blob.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let child = Kill(child);
    let mut q = Qmp::connect_until(&sock, Instant::now() + Duration::from_secs(30)).unwrap();
    assert_eq!(q.peer_pid().unwrap(), child.0.id());
    assert_eq!(q.xp(0x123000, 14).unwrap(), b"loaded-by-qemu");

    let mon = layout::from_monitor(&mut q).unwrap();
    let ram: Vec<_> = mon.ranges.iter().filter(|r| r.writable).collect();
    assert_eq!(ram.first().map(|r| r.gpa), Some(0));
    assert_eq!(ram.last().map(|r| r.end()), Some(96 << 20));
    let guess = layout::from_proc(child.0.id()).unwrap();
    for g in &guess.ranges {
        let m = mon.ranges.iter().find(|r| r.contains(g.gpa)).unwrap();
        assert_eq!(m.hva + (g.gpa - m.gpa), g.hva, "at {:#x}", g.gpa);
    }
    let memdevs = q.query_memdev().unwrap();
    assert_eq!(memdevs[0].size, 96 << 20);
    q.quit().unwrap();
    drop(child);
    let _ = std::fs::remove_dir_all(&dir);
}
