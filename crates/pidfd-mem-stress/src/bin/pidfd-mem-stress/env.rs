//! The system around a stress run (root only, best effort, restored at the
//! end): KSM running fast, khugepaged scanning often, a memory cgroup (with
//! cgroup2 mounted at /sys/fs/cgroup if it is not mounted anywhere), swap
//! on zram or a RAM disk so that pressure and MADV_PAGEOUT really swap, and
//! the NUMA node count (page migration needs two nodes; a fake-NUMA guest
//! gets them with `--append numa=fake=2`).
//!
//! No memory.max is set: a memory cgroup OOM kill prints a stack dump,
//! which the bench rightly counts as a splat. Pressure comes from
//! memory.high (reclaim and throttling, never OOM) and memory.reclaim.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pidfd_mem_stress::sys::{read_file, write_file};

/// Where swap comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SwapMode {
    /// Existing swap, else zram, else a RAM disk (brd), else none.
    Auto,
    /// Do not set up swap.
    None,
    /// zram only.
    Zram,
    /// brd (RAM disk) only.
    Brd,
}

/// What was set up.
#[derive(Default)]
pub struct Env {
    /// One line per feature, for the report.
    pub notes: Vec<String>,
    restore: Vec<(String, String)>,
    /// KSM is running.
    pub ksm: bool,
    /// The memory cgroup's directory.
    pub cgroup: Option<String>,
    /// Swap is active.
    pub swap: bool,
    swapped_on: Option<String>,
    /// Online NUMA nodes.
    pub numa_nodes: u32,
    /// /proc/sys/vm/compact_memory is writable.
    pub compact: bool,
}

fn run(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn wait_for(path: &str) -> bool {
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end {
        if Path::new(path).exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn swapon(dev: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(dev) else {
        return false;
    };
    // SAFETY: swapon with a NUL-terminated path and no flags.
    unsafe { libc::swapon(c.as_ptr(), 0) == 0 }
}

/// Online NUMA nodes, from /sys/devices/system/node/online ("0", "0-1").
pub fn numa_nodes() -> u32 {
    let Some(s) = read_file("/sys/devices/system/node/online") else {
        return 1;
    };
    let mut n = 0;
    for part in s.split(',') {
        let mut it = part.split('-');
        let a: u32 = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
        let b: u32 = it.next().and_then(|x| x.parse().ok()).unwrap_or(a);
        n += b.saturating_sub(a) + 1;
    }
    n.max(1)
}

impl Env {
    /// Sets a knob, remembering its old value.
    fn set(&mut self, path: &str, v: &str) -> bool {
        let Some(old) = read_file(path) else {
            return false;
        };
        if write_file(path, v).is_err() {
            return false;
        }
        self.restore.push((path.to_string(), old));
        true
    }

    /// Sets everything up; `touch` false leaves the system as it is and
    /// only looks.
    pub fn setup(touch: bool, swap: SwapMode, targets: usize) -> Self {
        let mut e = Env {
            numa_nodes: numa_nodes(),
            ..Default::default()
        };
        e.compact = touch && Path::new("/proc/sys/vm/compact_memory").exists();
        let ksm = "/sys/kernel/mm/ksm";
        if Path::new(ksm).exists() {
            e.ksm = true;
            if touch {
                e.set(&format!("{ksm}/sleep_millisecs"), "20");
                e.set(&format!("{ksm}/pages_to_scan"), "1000");
                e.set(&format!("{ksm}/run"), "1");
            }
            e.notes.push(format!(
                "ksm: run {}",
                read_file(&format!("{ksm}/run")).unwrap_or_default()
            ));
        } else {
            e.notes.push("ksm: not available (merges skipped)".into());
        }
        let thp = "/sys/kernel/mm/transparent_hugepage";
        if let Some(en) = read_file(&format!("{thp}/enabled")) {
            if touch {
                e.set(&format!("{thp}/khugepaged/scan_sleep_millisecs"), "100");
                e.set(&format!("{thp}/khugepaged/alloc_sleep_millisecs"), "100");
                e.set(&format!("{thp}/khugepaged/pages_to_scan"), "4096");
            }
            e.notes.push(format!("thp: {en}"));
        } else {
            e.notes.push("thp: not available".into());
        }
        if touch {
            e.setup_swap(swap);
            e.setup_cgroup(targets);
        } else {
            e.notes.push("system left untouched (--no-env)".into());
        }
        e.notes.push(format!(
            "numa: {} node(s){}",
            e.numa_nodes,
            if e.numa_nodes < 2 {
                " (page migration skipped; boot with numa=fake=2 to have two)"
            } else {
                ""
            }
        ));
        e
    }

    fn setup_swap(&mut self, mode: SwapMode) {
        let existing = std::fs::read_to_string("/proc/swaps")
            .map(|s| s.lines().count() > 1)
            .unwrap_or(false);
        if mode == SwapMode::None {
            self.notes.push("swap: none (--swap none)".into());
            return;
        }
        if existing && mode == SwapMode::Auto {
            self.swap = true;
            self.notes.push("swap: already active".into());
            return;
        }
        if matches!(mode, SwapMode::Auto | SwapMode::Zram)
            // Built in (the 6.12 kernels of `cargo xtask debug-kernel`) or a module.
            && (std::path::Path::new("/sys/block/zram0").exists()
                || run("modprobe", &["zram", "num_devices=1"]))
            && wait_for("/sys/block/zram0/disksize")
            && write_file("/sys/block/zram0/disksize", "256M").is_ok()
            && wait_for("/dev/zram0")
            && run("mkswap", &["/dev/zram0"])
            && swapon("/dev/zram0")
        {
            self.swap = true;
            self.swapped_on = Some("/dev/zram0".into());
            self.notes.push("swap: zram0, 256 MiB".into());
            return;
        }
        if matches!(mode, SwapMode::Auto | SwapMode::Brd)
            && run("modprobe", &["brd", "rd_nr=1", "rd_size=262144"])
            && wait_for("/dev/ram0")
            && run("mkswap", &["/dev/ram0"])
            && swapon("/dev/ram0")
        {
            self.swap = true;
            self.swapped_on = Some("/dev/ram0".into());
            self.notes.push("swap: brd ram0, 256 MiB".into());
            return;
        }
        self.notes.push(
            "swap: none available (no zram or brd module): MADV_PAGEOUT and pressure cannot swap anonymous pages"
                .into(),
        );
    }

    fn cgroup2_root() -> Option<String> {
        let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
        mounts.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && f[2] == "cgroup2").then(|| f[1].to_string())
        })
    }

    fn setup_cgroup(&mut self, targets: usize) {
        let mut root = Self::cgroup2_root();
        if root.is_none() {
            let dir = "/sys/fs/cgroup";
            // SAFETY: mount(2) with NUL-terminated strings and no data.
            let ok = unsafe {
                libc::mount(
                    c"cgroup2".as_ptr(),
                    c"/sys/fs/cgroup".as_ptr(),
                    c"cgroup2".as_ptr(),
                    0,
                    core::ptr::null(),
                )
            } == 0;
            if ok {
                root = Some(dir.to_string());
            }
        }
        let Some(root) = root else {
            self.notes
                .push("memory cgroup: cgroup2 not available".into());
            return;
        };
        let controllers = read_file(&format!("{root}/cgroup.controllers")).unwrap_or_default();
        if !controllers.split_whitespace().any(|c| c == "memory") {
            self.notes
                .push(format!("memory cgroup: no memory controller in {root}"));
            return;
        }
        let _ = write_file(&format!("{root}/cgroup.subtree_control"), "+memory");
        let dir = format!("{root}/pidfd-mem-stress.{}", std::process::id());
        if std::fs::create_dir(&dir).is_err() || !Path::new(&format!("{dir}/memory.high")).exists()
        {
            self.notes
                .push(format!("memory cgroup: cannot create {dir}"));
            return;
        }
        let high_mib = 8 * targets + 8;
        if self.swap {
            let _ = write_file(&format!("{dir}/memory.high"), &format!("{}M", high_mib));
            self.notes.push(format!(
                "memory cgroup: {dir}, memory.high {high_mib} MiB, targets allocate 16 MiB ballasts; memory.reclaim every 2 s"
            ));
        } else {
            self.notes.push(format!(
                "memory cgroup: {dir}, no limit (without swap, pressure could only OOM-kill, which the bench counts as a splat)"
            ));
        }
        self.cgroup = Some(dir);
    }

    /// The memory cgroup's memory.reclaim file, when reclaim can swap.
    pub fn reclaim_path(&self) -> Option<String> {
        let d = self.cgroup.as_ref().filter(|_| self.swap)?;
        let p = format!("{d}/memory.reclaim");
        Path::new(&p).exists().then_some(p)
    }

    /// The cgroup.procs file targets join, if any.
    pub fn procs(&self) -> Option<String> {
        self.cgroup.as_ref().map(|d| format!("{d}/cgroup.procs"))
    }

    /// A line of memory.events (high, max, oom) for the report.
    pub fn events(&self) -> Option<String> {
        let d = self.cgroup.as_ref()?;
        let ev = read_file(&format!("{d}/memory.events"))?;
        Some(ev.split('\n').collect::<Vec<_>>().join(", "))
    }

    /// Puts everything back (after every process of the run is gone).
    pub fn teardown(&mut self) {
        if let Some(d) = self.cgroup.take() {
            let _ = std::fs::remove_dir(&d);
        }
        if let Some(dev) = self.swapped_on.take() {
            if let Ok(c) = std::ffi::CString::new(dev) {
                // SAFETY: swapoff with a NUL-terminated path.
                unsafe { libc::swapoff(c.as_ptr()) };
            }
        }
        for (path, old) in self.restore.drain(..).rev() {
            // KSM's run takes 0/1/2; THP knobs take numbers: restore as read.
            let _ = write_file(&path, &old);
        }
    }
}
