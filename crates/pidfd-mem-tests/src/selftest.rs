//! `--selftest`: tests of the harness and of the target helper, which need
//! no module; run on the host by `tests/selftest.rs`. Names say the outcome
//! the harness must report: `pass_*`, `fail_*`, `skip_*`.

use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::mm::ProtFlags;
use rustix::process::Signal;

use crate::harness::{Ctx, Test, TestResult};
use crate::util::*;
use crate::{expect_eq, fail, skip};

fn pass_ok() -> TestResult {
    Ok(())
}

fn fail_expected_vs_seen() -> TestResult {
    expect_eq!(2, 1, "one");
    Ok(())
}

fn skip_reason() -> TestResult {
    skip!("no such feature")
}

fn fail_panic() -> TestResult {
    let v: Vec<u8> = Vec::new();
    let _ = v[3];
    Ok(())
}

/// A real SIGBUS: a shared mapping of a file truncated under it.
fn sigbus_now() -> TestResult {
    let p = page();
    let fd: OwnedFd =
        rustix::fs::memfd_create("selftest", rustix::fs::MemfdFlags::CLOEXEC).ctx("memfd")?;
    rustix::fs::ftruncate(&fd, p as u64).ctx("ftruncate")?;
    let m = RawMap::new(&fd, 0, p, ProtFlags::READ, rustix::mm::MapFlags::SHARED).ctx("mmap")?;
    rustix::fs::ftruncate(&fd, 0).ctx("ftruncate 0")?;
    let v = m.read(0);
    fail!("read {v} from a truncated mapping without SIGBUS")
}

fn fail_sigbus_unexpected() -> TestResult {
    sigbus_now()
}

fn pass_sigbus_expected() -> TestResult {
    sigbus_now()
}

fn fail_sigbus_missing() -> TestResult {
    Ok(())
}

fn fail_timeout() -> TestResult {
    std::thread::sleep(Duration::from_secs(10));
    Ok(())
}

fn pass_leaves_grandchild() -> TestResult {
    // A forked helper that never exits: the harness must kill it.
    // SAFETY: single-threaded test child.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        loop {
            std::thread::sleep(Duration::from_secs(100));
        }
    }
    Ok(())
}

/// The target helper, everything but the module.
fn pass_target() -> TestResult {
    let t = Target::spawn()?;
    let p = page();
    let a = t.alloc(2 * p)?;
    t.fill(a, 2 * p, 3)?;
    expect_eq!(t.sum(a, 2 * p)?, 6 * p as u64, "sum");
    t.store64(a + 8, 0x1234)?;
    expect_eq!(t.load64(a + 8)?, 0x1234, "load");
    t.mprotect(a, p, ProtFlags::READ)?;
    t.munmap(a + pg(), p)?;
    expect_eq!(
        t.mmap_fixed(a + pg(), p, ProtFlags::READ | ProtFlags::WRITE)?,
        a + pg(),
        "mmap_fixed"
    );
    let s = t.mmap_shared(p)?;
    t.store64(s, 1)?;
    let m = t.mmap_memfd(p)?;
    t.store64(m, 2)?;
    expect_eq!(t.load64(m)?, 2, "memfd");
    match t.mmap_file(p) {
        Ok(f) => {
            t.store64(f, 3)?;
            expect_eq!(t.load64(f)?, 3, "file");
        }
        Err(e) => crate::note!("no /tmp file: {e}"),
    }
    t.madvise(a + pg(), p, libc::MADV_DONTNEED)?;
    // Reading T's memory with /proc/PID/mem (as root or our child).
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(format!("/proc/{}/mem", t.pid)).ctx("open /proc/T/mem")?;
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, a + 8).ctx("read /proc/T/mem")?;
    expect_eq!(u64::from_ne_bytes(b), 0x1234, "T's memory through /proc");
    t.exec()?;
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", t.pid)).ctx("cmdline")?;
    expect_eq!(
        cmdline.starts_with(b"pidfd-mem-tests\0--idle\0"),
        true,
        "T's cmdline after exec"
    );
    drop(f);
    let mut t2 = Target::spawn()?;
    t2.exit_no_reap()?;
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", t2.pid)).ctx("stat")?;
    expect_eq!(
        stat.contains(") Z "),
        true,
        "T is a zombie after exit_no_reap: {stat}"
    );
    t2.exit_and_reap()?;
    expect_eq!(
        std::path::Path::new(&format!("/proc/{}", t2.pid)).exists(),
        false,
        "T reaped"
    );
    let code = in_child(|| 7)?;
    expect_eq!(code, 7, "in_child exit code");
    Ok(())
}

/// The self-test table.
pub fn tests() -> Vec<Test> {
    let bus = Signal::BUS;
    vec![
        Test::new("pass_ok", pass_ok),
        Test::new("fail_expected_vs_seen", fail_expected_vs_seen),
        Test::new("skip_reason", skip_reason),
        Test::new("fail_panic", fail_panic),
        Test::new("fail_sigbus_unexpected", fail_sigbus_unexpected),
        Test::signal("pass_sigbus_expected", pass_sigbus_expected, bus),
        Test::signal("fail_sigbus_missing", fail_sigbus_missing, bus),
        Test::new("fail_timeout", fail_timeout).timeout(Duration::from_secs(1)),
        Test::new("pass_leaves_grandchild", pass_leaves_grandchild),
        Test::new("pass_target", pass_target),
    ]
}
