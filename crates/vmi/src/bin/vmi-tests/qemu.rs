//! Starting a paused `qemu-system-x86_64` (TCG) for a test, with two QMP
//! sockets: `ctl.sock` for the test's own checks (`xp`, layout) and
//! `vmi.sock` left free for `rmap-vmi`. Killed and reaped on drop.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use vmi::qmp::Qmp;

/// Guest RAM backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ram {
    /// QEMU's default: private anonymous memory.
    Anon,
    /// `-object memory-backend-memfd,id=m,size=...,share=on -machine
    /// memory-backend=m`.
    Memfd,
}

/// What to start.
#[derive(Clone, Debug)]
pub struct Opts {
    /// RAM size in MiB.
    pub mem_mib: u64,
    /// Backend.
    pub ram: Ram,
    /// `-device loader,file=F,addr=GPA`.
    pub loaders: Vec<(PathBuf, u64)>,
    /// `-kernel` (a PVH vmlinux is loaded uncompressed at machine init).
    pub kernel: Option<PathBuf>,
}

impl Opts {
    pub fn new(mem_mib: u64, ram: Ram) -> Self {
        Self {
            mem_mib,
            ram,
            loaders: Vec::new(),
            kernel: None,
        }
    }
}

/// A running (paused) QEMU.
pub struct Qemu {
    child: Option<Child>,
    /// Its scratch directory (sockets, log, files).
    pub dir: PathBuf,
    qmp: Option<Qmp>,
    /// The second QMP socket, for `rmap-vmi`.
    pub tool_sock: PathBuf,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A fresh scratch directory under /tmp.
pub fn scratch_dir() -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!(
        "vmi-tests-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir_all(&d).with_context(|| format!("mkdir {}", d.display()))?;
    Ok(d)
}

impl Qemu {
    /// Starts QEMU paused (`-S`) and connects to `ctl.sock`.
    pub fn start(opts: &Opts) -> Result<Self> {
        Self::start_in(opts, scratch_dir()?)
    }

    /// As [`Qemu::start`], in `dir` (which may hold the loader files).
    pub fn start_in(opts: &Opts, dir: PathBuf) -> Result<Self> {
        let ctl = dir.join("ctl.sock");
        let tool = dir.join("vmi.sock");
        let log = fs::File::create(dir.join("qemu.log"))?;
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-S", "-nodefaults", "-no-user-config", "-display", "none"])
            .args(["-accel", "tcg,tb-size=64", "-m"])
            .arg(format!("{}M", opts.mem_mib))
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", ctl.display()))
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", tool.display()));
        if opts.ram == Ram::Memfd {
            cmd.arg("-object")
                .arg(format!(
                    "memory-backend-memfd,id=m,size={}M,share=on",
                    opts.mem_mib
                ))
                .args(["-machine", "memory-backend=m"]);
        }
        for (f, gpa) in &opts.loaders {
            cmd.arg("-device")
                .arg(format!("loader,file={},addr={gpa:#x}", f.display()));
        }
        if let Some(k) = &opts.kernel {
            cmd.arg("-kernel").arg(k).args(["-append", "console=ttyS0"]);
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: the closure runs in the child between fork and exec and
        // only makes one prctl system call (async-signal-safe): QEMU dies
        // with the thread that started it, whatever happens to the test.
        unsafe {
            cmd.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::KILL,
                ))
                .map_err(std::io::Error::from)
            });
        }
        let mut child = cmd.spawn().context("spawning qemu-system-x86_64")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let qmp = loop {
            if let Some(st) = child.try_wait()? {
                bail!(
                    "QEMU exited ({st}) at start: {}",
                    fs::read_to_string(dir.join("qemu.log"))
                        .unwrap_or_default()
                        .trim()
                );
            }
            match Qmp::connect_until(&ctl, Instant::now() + Duration::from_millis(200)) {
                Ok(q) => break q,
                Err(_) if Instant::now() < deadline => continue,
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(e).context("QMP did not come up in 60 s");
                }
            }
        };
        Ok(Self {
            child: Some(child),
            dir,
            qmp: Some(qmp),
            tool_sock: tool,
        })
    }

    /// The test's QMP connection (`ctl.sock`).
    pub fn qmp(&mut self) -> &mut Qmp {
        self.qmp.as_mut().expect("QMP connection taken by quit")
    }

    /// QEMU's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// `quit` over QMP and reap QEMU.
    pub fn quit(mut self) -> Result<()> {
        if let Some(q) = self.qmp.take() {
            q.quit()?;
        }
        if let Some(mut c) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(30);
            while c.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                    bail!("QEMU did not exit after quit");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.wait();
        }
        Ok(())
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A pseudo-random buffer (xorshift), the same for the same seed.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The PVH vmlinux for the banner test: `$VMI_VMLINUX`, else the newest
/// `target/vm/vmlinux-*` that the VM bench caches (xtask/src/pvh.rs).
pub fn find_vmlinux() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("VMI_VMLINUX") {
        return Some(PathBuf::from(p));
    }
    let dir = Path::new("target/vm");
    fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("vmlinux-"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .max()
        .map(|(_, p)| p)
}
