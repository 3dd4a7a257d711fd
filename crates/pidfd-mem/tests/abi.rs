//! The ABI, checked mechanically (contract §1): a C program compiled against
//! `include/uapi/linux/pidfd_mem.h` prints every constant, struct size and
//! field offset, and each must equal the Rust side in `pidfd_mem::sys`.

use core::mem::{offset_of, size_of};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use pidfd_mem::sys::*;

const C_PROGRAM: &str = r#"
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <linux/pidfd_mem.h>

#define P(name, v) printf("%s %llu\n", name, (unsigned long long)(v))
#define SZ(t) P("sizeof(" #t ")", sizeof(struct t))
#define OFF(t, f) P("offsetof(" #t "." #f ")", offsetof(struct t, f))
#define FSZ(t, f) P("sizeof(" #t "." #f ")", sizeof(((struct t *)0)->f))

int main(void)
{
	printf("PIDFD_MEM_DEVICE %s\n", PIDFD_MEM_DEVICE);
	P("PIDFD_MEM_PROT_READ", PIDFD_MEM_PROT_READ);
	P("PIDFD_MEM_PROT_WRITE", PIDFD_MEM_PROT_WRITE);
	P("PIDFD_MEM_IOC_MAGIC", PIDFD_MEM_IOC_MAGIC);
	P("PIDFD_MEM_OPEN", PIDFD_MEM_OPEN);
	P("REMOTE_PROC_MAP", REMOTE_PROC_MAP);
	P("PIDFD_MEM_MAP", PIDFD_MEM_MAP);
	P("PIDFD_MEM_UNMAP", PIDFD_MEM_UNMAP);
	P("PIDFD_MEM_LOCK", PIDFD_MEM_LOCK);

	SZ(pidfd_mem_open);
	OFF(pidfd_mem_open, pidfd); FSZ(pidfd_mem_open, pidfd);
	OFF(pidfd_mem_open, flags); FSZ(pidfd_mem_open, flags);
	OFF(pidfd_mem_open, ctl_fd); FSZ(pidfd_mem_open, ctl_fd);
	OFF(pidfd_mem_open, mem_fd); FSZ(pidfd_mem_open, mem_fd);
	OFF(pidfd_mem_open, reserved); FSZ(pidfd_mem_open, reserved);

	SZ(pidfd_mem_map);
	OFF(pidfd_mem_map, address); FSZ(pidfd_mem_map, address);
	OFF(pidfd_mem_map, offset); FSZ(pidfd_mem_map, offset);
	OFF(pidfd_mem_map, size); FSZ(pidfd_mem_map, size);
	OFF(pidfd_mem_map, flags); FSZ(pidfd_mem_map, flags);
	OFF(pidfd_mem_map, padding); FSZ(pidfd_mem_map, padding);

	SZ(pidfd_mem_unmap);
	OFF(pidfd_mem_unmap, offset); FSZ(pidfd_mem_unmap, offset);
	OFF(pidfd_mem_unmap, size); FSZ(pidfd_mem_unmap, size);

	SZ(remote_proc_map);
	OFF(remote_proc_map, pidfd); FSZ(remote_proc_map, pidfd);
	OFF(remote_proc_map, flags); FSZ(remote_proc_map, flags);
	OFF(remote_proc_map, mem_fd); FSZ(remote_proc_map, mem_fd);
	OFF(remote_proc_map, reserved); FSZ(remote_proc_map, reserved);

	/* Signedness of the fields the contract gives as signed. */
	{
		struct pidfd_mem_map m; memset(&m, 0, sizeof(m));
		m.offset = -1; m.size = -1; m.flags = -1;
		P("signed(pidfd_mem_map.offset)", m.offset < 0);
		P("signed(pidfd_mem_map.size)", m.size < 0);
		P("signed(pidfd_mem_map.flags)", m.flags < 0);
		m.address = 0; m.address -= 1;
		P("signed(pidfd_mem_map.address)", m.address < 1 ? 1 : 0);
	}
	{
		struct pidfd_mem_open o; memset(&o, 0, sizeof(o));
		o.pidfd = -1; o.flags = 0; o.flags -= 1; o.ctl_fd = -1; o.mem_fd = -1;
		P("signed(pidfd_mem_open.pidfd)", o.pidfd < 0);
		P("signed(pidfd_mem_open.flags)", o.flags > 0 ? 0 : 1);
		P("signed(pidfd_mem_open.ctl_fd)", o.ctl_fd < 0);
		P("signed(pidfd_mem_open.mem_fd)", o.mem_fd < 0);
	}
	{
		struct pidfd_mem_unmap u; memset(&u, 0, sizeof(u));
		u.offset = -1; u.size = -1;
		P("signed(pidfd_mem_unmap.offset)", u.offset < 0);
		P("signed(pidfd_mem_unmap.size)", u.size < 0);
	}
	{
		struct remote_proc_map r; memset(&r, 0, sizeof(r));
		r.pidfd = -1; r.mem_fd = -1; r.flags = 0; r.flags -= 1; r.reserved = 0; r.reserved -= 1;
		P("signed(remote_proc_map.pidfd)", r.pidfd < 0);
		P("signed(remote_proc_map.flags)", r.flags > 0 ? 0 : 1);
		P("signed(remote_proc_map.mem_fd)", r.mem_fd < 0);
		P("signed(remote_proc_map.reserved)", r.reserved > 0 ? 0 : 1);
	}
	return 0;
}
"#;

/// Signedness of a Rust field type, read from the type itself.
trait Sign {
    const SIGNED: bool;
}
impl Sign for i32 {
    const SIGNED: bool = true;
}
impl Sign for i64 {
    const SIGNED: bool = true;
}
impl Sign for u32 {
    const SIGNED: bool = false;
}
impl Sign for u64 {
    const SIGNED: bool = false;
}
fn signed_of<T: Sign>(_: &T) -> bool {
    T::SIGNED
}

macro_rules! field {
    ($m:ident, $cname:literal, $t:ty, $f:ident, signed) => {{
        field!($m, $cname, $t, $f);
        let v: $t = Default::default();
        $m.insert(
            concat!("signed(", $cname, ".", stringify!($f), ")").to_string(),
            u8::from(signed_of(&v.$f)).to_string(),
        );
    }};
    ($m:ident, $cname:literal, $t:ty, $f:ident) => {{
        let v: $t = Default::default();
        $m.insert(
            concat!("offsetof(", $cname, ".", stringify!($f), ")").to_string(),
            offset_of!($t, $f).to_string(),
        );
        $m.insert(
            concat!("sizeof(", $cname, ".", stringify!($f), ")").to_string(),
            core::mem::size_of_val(&v.$f).to_string(),
        );
    }};
}

fn rust_side() -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        m.insert(k.to_string(), v);
    };
    put("PIDFD_MEM_DEVICE", PIDFD_MEM_DEVICE.to_string());
    put("PIDFD_MEM_PROT_READ", PIDFD_MEM_PROT_READ.to_string());
    put("PIDFD_MEM_PROT_WRITE", PIDFD_MEM_PROT_WRITE.to_string());
    put("PIDFD_MEM_IOC_MAGIC", PIDFD_MEM_IOC_MAGIC.to_string());
    put("PIDFD_MEM_OPEN", PIDFD_MEM_OPEN.to_string());
    put("REMOTE_PROC_MAP", REMOTE_PROC_MAP.to_string());
    put("PIDFD_MEM_MAP", PIDFD_MEM_MAP.to_string());
    put("PIDFD_MEM_UNMAP", PIDFD_MEM_UNMAP.to_string());
    put("PIDFD_MEM_LOCK", PIDFD_MEM_LOCK.to_string());
    put(
        "sizeof(pidfd_mem_open)",
        size_of::<PidfdMemOpen>().to_string(),
    );
    put(
        "sizeof(pidfd_mem_map)",
        size_of::<PidfdMemMap>().to_string(),
    );
    put(
        "sizeof(pidfd_mem_unmap)",
        size_of::<PidfdMemUnmap>().to_string(),
    );
    put(
        "sizeof(remote_proc_map)",
        size_of::<RemoteProcMap>().to_string(),
    );

    field!(m, "pidfd_mem_open", PidfdMemOpen, pidfd, signed);
    field!(m, "pidfd_mem_open", PidfdMemOpen, flags, signed);
    field!(m, "pidfd_mem_open", PidfdMemOpen, ctl_fd, signed);
    field!(m, "pidfd_mem_open", PidfdMemOpen, mem_fd, signed);
    field!(m, "pidfd_mem_open", PidfdMemOpen, reserved);

    field!(m, "pidfd_mem_map", PidfdMemMap, address, signed);
    field!(m, "pidfd_mem_map", PidfdMemMap, offset, signed);
    field!(m, "pidfd_mem_map", PidfdMemMap, size, signed);
    field!(m, "pidfd_mem_map", PidfdMemMap, flags, signed);
    field!(m, "pidfd_mem_map", PidfdMemMap, padding);

    field!(m, "pidfd_mem_unmap", PidfdMemUnmap, offset, signed);
    field!(m, "pidfd_mem_unmap", PidfdMemUnmap, size, signed);

    field!(m, "remote_proc_map", RemoteProcMap, pidfd, signed);
    field!(m, "remote_proc_map", RemoteProcMap, flags, signed);
    field!(m, "remote_proc_map", RemoteProcMap, mem_fd, signed);
    field!(m, "remote_proc_map", RemoteProcMap, reserved, signed);
    m
}

fn c_side() -> BTreeMap<String, String> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let include = manifest.join("../../include/uapi");
    let header = include.join("linux/pidfd_mem.h");
    assert!(
        header.exists(),
        "ABI header not found at {}",
        header.display()
    );
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("abi");
    std::fs::create_dir_all(&dir).expect("create tmp dir");
    let src = dir.join("abi.c");
    let exe = dir.join("abi");
    std::fs::write(&src, C_PROGRAM).expect("write abi.c");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let out = Command::new(&cc)
        .arg("-std=gnu11")
        .arg("-Wall")
        .arg("-Werror")
        .arg("-I")
        .arg(&include)
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C compiler `{cc}`: {e}"));
    assert!(
        out.status.success(),
        "compiling the ABI probe against {} failed:\n{}",
        header.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(&exe).output().expect("run the ABI probe");
    assert!(run.status.success(), "the ABI probe failed");
    String::from_utf8(run.stdout)
        .expect("utf-8")
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn abi_matches_header() {
    let c = c_side();
    let rust = rust_side();
    let mut problems = Vec::new();
    for (k, cv) in &c {
        match rust.get(k) {
            None => problems.push(format!(
                "{k}: in the header ({cv}) but not checked on the Rust side"
            )),
            Some(rv) if rv != cv => problems.push(format!("{k}: header says {cv}, Rust says {rv}")),
            Some(_) => {}
        }
    }
    for k in rust.keys() {
        if !c.contains_key(k) {
            problems.push(format!(
                "{k}: on the Rust side but not printed by the header probe"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "ABI mismatch between include/uapi/linux/pidfd_mem.h and pidfd_mem::sys:\n  {}",
        problems.join("\n  ")
    );
    println!("ABI: {} items match", c.len());
}

#[test]
fn ioctl_numbers_match_linux_encoding() {
    // _IOC(dir, type, nr, size) = dir << 30 | size << 16 | type << 8 | nr
    // (x86, arm64 and most others; checked against the header above too).
    let ioc =
        |dir: u32, nr: u32, size: usize| (dir << 30) | ((size as u32) << 16) | (0xB6 << 8) | nr;
    assert_eq!(PIDFD_MEM_OPEN, ioc(3, 0x01, size_of::<PidfdMemOpen>()));
    assert_eq!(REMOTE_PROC_MAP, ioc(3, 0x02, size_of::<RemoteProcMap>()));
    assert_eq!(PIDFD_MEM_MAP, ioc(1, 0x10, size_of::<PidfdMemMap>()));
    assert_eq!(PIDFD_MEM_UNMAP, ioc(1, 0x11, size_of::<PidfdMemUnmap>()));
    assert_eq!(PIDFD_MEM_LOCK, ioc(0, 0x12, 0));
}
