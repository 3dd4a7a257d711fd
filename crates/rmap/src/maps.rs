//! T's regions, from `/proc/PID/smaps` (or `/proc/PID/maps` when smaps
//! cannot be read), each with the kind of memory behind it.

use std::fmt;
use std::io;

use crate::errors::{BadInput, Failure};

/// What kind of memory a region is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Private anonymous memory (`malloc` arenas, `mmap(MAP_ANONYMOUS)`).
    Anon,
    /// `[heap]` (the brk area).
    Heap,
    /// `[stack]` (the main thread's stack).
    Stack,
    /// A mapped regular file.
    File,
    /// Shared anonymous memory, POSIX (`/dev/shm`) or SysV shared memory.
    Shmem,
    /// A memfd (`/memfd:NAME`).
    Memfd,
    /// hugetlbfs pages (`VmFlags: ht`).
    Hugetlb,
    /// `[vdso]`.
    Vdso,
    /// `[vvar]` and its kin: kernel data shown read-only to user space.
    Vvar,
    /// `[vsyscall]`: outside T's address space proper.
    Vsyscall,
    /// I/O or PFN memory (`VmFlags: io` or `pf`): device memory, or a
    /// pidfd_mem mirror; pidfd_mem does not mirror it (contract A2a).
    Io,
}

impl Kind {
    /// The word shown for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Anon => "anon",
            Kind::Heap => "heap",
            Kind::Stack => "stack",
            Kind::File => "file",
            Kind::Shmem => "shmem",
            Kind::Memfd => "memfd",
            Kind::Hugetlb => "hugetlb",
            Kind::Vdso => "vdso",
            Kind::Vvar => "vvar",
            Kind::Vsyscall => "vsyscall",
            Kind::Io => "io/pfn",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of `/proc/PID/maps`, with what smaps adds when it was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// `rwxp`/`rwxs` as the kernel writes them.
    pub perms: String,
    /// File offset of `start`.
    pub offset: u64,
    /// `major:minor` of the file's device.
    pub dev: String,
    /// Inode of the file (0 for anonymous memory).
    pub inode: u64,
    /// The pathname column as the kernel writes it (may be empty, may end in
    /// ` (deleted)`).
    pub path: String,
    /// Resident set in KiB (smaps `Rss`).
    pub rss_kb: Option<u64>,
    /// Page size of the mapping in KiB (smaps `KernelPageSize`).
    pub page_kb: Option<u64>,
    /// Transparent huge pages in KiB (smaps `AnonHugePages`).
    pub thp_kb: Option<u64>,
    /// smaps `VmFlags` (two-letter codes).
    pub vm_flags: Vec<String>,
}

impl Region {
    /// Length in bytes.
    pub fn size(&self) -> u64 {
        self.end - self.start
    }

    /// Whether T itself can read it (the `r` permission).
    pub fn readable(&self) -> bool {
        self.perms.starts_with('r')
    }

    /// Whether T itself can write it.
    pub fn writable(&self) -> bool {
        self.perms.as_bytes().get(1) == Some(&b'w')
    }

    /// Whether it is a shared mapping (`s`).
    pub fn shared(&self) -> bool {
        self.perms.as_bytes().get(3) == Some(&b's')
    }

    /// Whether `addr` lies inside.
    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }

    /// The path without the kernel's ` (deleted)` suffix.
    pub fn name(&self) -> &str {
        self.path.strip_suffix(" (deleted)").unwrap_or(&self.path)
    }

    /// The last component of the path (or the whole `[name]`).
    pub fn basename(&self) -> &str {
        let name = self.name();
        if name.starts_with('[') {
            return name;
        }
        name.rsplit('/').next().unwrap_or(name)
    }

    fn has_flag(&self, flag: &str) -> bool {
        self.vm_flags.iter().any(|f| f == flag)
    }

    /// The kind of memory behind the region.
    pub fn kind(&self) -> Kind {
        let name = self.name();
        match name {
            "[heap]" => return Kind::Heap,
            "[vdso]" => return Kind::Vdso,
            "[vsyscall]" => return Kind::Vsyscall,
            _ => {}
        }
        if name.starts_with("[vvar") {
            return Kind::Vvar;
        }
        if self.has_flag("io") || self.has_flag("pf") {
            return Kind::Io;
        }
        // hugetlb VMAs have the `ht` flag and big kernel pages (THP keeps
        // 4 kB KernelPageSize).
        if self.has_flag("ht")
            || self
                .page_kb
                .is_some_and(|k| k * 1024 > pidfd_mem::page_size() as u64)
            || name.starts_with("/anon_hugepage")
            || name.starts_with("/dev/hugepages/")
        {
            return Kind::Hugetlb;
        }
        if name.starts_with("[stack") {
            return Kind::Stack;
        }
        if name.starts_with("[anon_shmem:") {
            return Kind::Shmem;
        }
        if name.starts_with("[anon:") || name.is_empty() {
            return if self.shared() {
                Kind::Shmem
            } else {
                Kind::Anon
            };
        }
        if name.starts_with("/memfd:") {
            return Kind::Memfd;
        }
        if name.starts_with("/dev/zero")
            || name.starts_with("/SYSV")
            || name.starts_with("/dev/shm/")
        {
            return Kind::Shmem;
        }
        if name.starts_with('[') {
            // Another kernel-named area: report it as anonymous memory.
            return Kind::Anon;
        }
        Kind::File
    }
}

/// Parses one maps line: `start-end perms offset dev inode [path]`.
pub fn parse_maps_line(line: &str) -> Option<Region> {
    let mut rest = line.trim_end_matches('\n');
    let mut field = || -> Option<&str> {
        let r = rest.trim_start_matches(' ');
        let end = r.find(' ').unwrap_or(r.len());
        let (f, tail) = r.split_at(end);
        rest = tail;
        (!f.is_empty()).then_some(f)
    };
    let range = field()?;
    let perms = field()?.to_string();
    let offset = u64::from_str_radix(field()?, 16).ok()?;
    let dev = field()?.to_string();
    let inode = field()?.parse().ok()?;
    let path = rest.trim_start_matches(' ').to_string();
    let (s, e) = range.split_once('-')?;
    let start = u64::from_str_radix(s, 16).ok()?;
    let end = u64::from_str_radix(e, 16).ok()?;
    if end < start || perms.len() != 4 {
        return None;
    }
    Some(Region {
        start,
        end,
        perms,
        offset,
        dev,
        inode,
        path,
        rss_kb: None,
        page_kb: None,
        thp_kb: None,
        vm_flags: Vec::new(),
    })
}

/// Parses the text of `/proc/PID/maps` or `/proc/PID/smaps`.
pub fn parse(text: &str) -> Vec<Region> {
    let mut out: Vec<Region> = Vec::new();
    for line in text.lines() {
        if let Some(r) = parse_maps_line(line) {
            out.push(r);
            continue;
        }
        let Some(last) = out.last_mut() else { continue };
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        let kb = || {
            value
                .strip_suffix(" kB")
                .and_then(|v| v.trim().parse().ok())
        };
        match key {
            "Rss" => last.rss_kb = kb(),
            "KernelPageSize" => last.page_kb = kb(),
            "AnonHugePages" => last.thp_kb = kb(),
            "VmFlags" => last.vm_flags = value.split_whitespace().map(String::from).collect(),
            _ => {}
        }
    }
    out
}

/// The regions of a process.
#[derive(Clone, Debug, Default)]
pub struct Maps {
    /// In address order, as the kernel lists them.
    pub regions: Vec<Region>,
}

impl Maps {
    /// From canned text (tests) or a file's contents.
    pub fn from_text(text: &str) -> Self {
        Self {
            regions: parse(text),
        }
    }

    /// Reads `/proc/PID/smaps`, or `/proc/PID/maps` if smaps cannot be read.
    pub fn read(pid: u32) -> anyhow::Result<Self> {
        let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"));
        let text = match smaps {
            Ok(t) => t,
            Err(_) => std::fs::read_to_string(format!("/proc/{pid}/maps"))
                .map_err(|e| proc_error(pid, "maps", e))?,
        };
        Ok(Self::from_text(&text))
    }

    /// The region that contains `addr`.
    pub fn find(&self, addr: u64) -> Option<&Region> {
        self.regions.iter().find(|r| r.contains(addr))
    }

    /// The regions whose path or basename is exactly `name`.
    pub fn exact(&self, name: &str) -> Vec<&Region> {
        self.regions
            .iter()
            .filter(|r| r.name() == name || r.basename() == name)
            .collect()
    }

    /// The regions that a name denotes: `[heap]`-like names exactly; a path
    /// exactly; else a basename exactly; else a unique file whose basename
    /// starts with `name` followed by `.` or `-` (`libc` for `libc.so.6`).
    /// A name that fits several files is an error listing them.
    pub fn by_name(&self, name: &str) -> Result<Vec<&Region>, BadInput> {
        let pick = |f: &dyn Fn(&Region) -> bool| -> Vec<&Region> {
            self.regions.iter().filter(|r| f(r)).collect()
        };
        let exact = pick(&|r| r.name() == name);
        if !exact.is_empty() {
            return Ok(exact);
        }
        if name.starts_with('[') {
            return Err(BadInput(format!(
                "no region named {name} in the target (see `rmap maps PID`)"
            )));
        }
        for rule in [
            &(|r: &Region| r.basename() == name) as &dyn Fn(&Region) -> bool,
            &|r: &Region| {
                r.kind() != Kind::Anon
                    && !r.name().starts_with('[')
                    && r.basename()
                        .strip_prefix(name)
                        .is_some_and(|t| t.starts_with('.') || t.starts_with('-'))
            },
        ] {
            let found = pick(rule);
            if found.is_empty() {
                continue;
            }
            let mut paths: Vec<&str> = found.iter().map(|r| r.name()).collect();
            paths.dedup();
            paths.sort_unstable();
            paths.dedup();
            if paths.len() > 1 {
                return Err(BadInput(format!(
                    "{name} names several mappings: {}; give the full path",
                    paths.join(", ")
                )));
            }
            return Ok(found);
        }
        Err(BadInput(format!(
            "no mapping named {name} in the target (see `rmap maps PID`)"
        )))
    }
}

/// A failure to read `/proc/PID/FILE`, classified for the exit code.
pub fn proc_error(pid: u32, file: &str, e: io::Error) -> anyhow::Error {
    let what = format!("cannot read /proc/{pid}/{file}");
    match e.kind() {
        io::ErrorKind::NotFound => {
            anyhow::Error::new(Failure::Gone(format!("{what}: no process {pid}")))
        }
        io::ErrorKind::PermissionDenied => anyhow::Error::new(Failure::Permission(format!(
            "{what}: {e} (you need ptrace rights over the target)"
        ))),
        _ => anyhow::Error::new(e).context(what),
    }
}

#[cfg(test)]
pub(crate) const CANNED: &str = "\
5555d4a00000-5555d4a02000 r--p 00000000 fe:01 1234                       /usr/bin/cat
5555d4a02000-5555d4a07000 r-xp 00002000 fe:01 1234                       /usr/bin/cat
5555d6000000-5555d6021000 rw-p 00000000 00:00 0                          [heap]
7f0000000000-7f0000200000 rw-s 00000000 00:10 77                         /dev/hugepages/buf (deleted)
7f1000000000-7f1000001000 rw-s 00000000 00:01 99                         /memfd:ring (deleted)
7f1000001000-7f1000002000 rw-s 00000000 00:01 100                        /dev/zero (deleted)
7f2000000000-7f2000028000 r--p 00000000 fe:01 5678                       /usr/lib/x86_64-linux-gnu/libc.so.6
7f2000028000-7f200019d000 r-xp 00028000 fe:01 5678                       /usr/lib/x86_64-linux-gnu/libc.so.6
7f200019d000-7f20001f5000 r--p 0019d000 fe:01 5678                       /usr/lib/x86_64-linux-gnu/libc.so.6
7f3000000000-7f3000001000 rw-p 00000000 00:00 0                          [anon:tokio]
7f4000000000-7f4000001000 r--p 00000000 fe:01 91                         /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
7f5000000000-7f5000001000 ---p 00000000 00:00 0 
7f5000001000-7f5000002000 rw-p 00000000 00:00 0 
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
7ffd00100000-7ffd00104000 r--p 00000000 00:00 0                          [vvar]
7ffd00104000-7ffd00106000 r-xp 00000000 00:00 0                          [vdso]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines_and_kinds() {
        let m = Maps::from_text(CANNED);
        assert_eq!(m.regions.len(), 17);
        let r = &m.regions[0];
        assert_eq!(r.start, 0x5555_d4a0_0000);
        assert_eq!(r.end, 0x5555_d4a0_2000);
        assert_eq!(r.perms, "r--p");
        assert_eq!(r.path, "/usr/bin/cat");
        assert_eq!(r.inode, 1234);
        let kinds: Vec<&str> = m.regions.iter().map(|r| r.kind().as_str()).collect();
        assert_eq!(
            kinds,
            [
                "file", "file", "heap", "hugetlb", "memfd", "shmem", "file", "file", "file",
                "anon", "file", "anon", "anon", "stack", "vvar", "vdso", "vsyscall"
            ]
        );
        assert_eq!(m.regions[11].path, "");
        assert!(!m.regions[11].readable());
        assert!(m.regions[4].shared());
    }

    #[test]
    fn smaps_fields_refine_the_kind() {
        let text = "\
7f0000000000-7f0000200000 rw-s 00000000 00:10 77                         /dev/hugepages/buf (deleted)
Size:               2048 kB
KernelPageSize:     2048 kB
Rss:                2048 kB
AnonHugePages:         0 kB
VmFlags: rd wr sh mr mw me ms de ht sd
7f1000000000-7f1000001000 rw-s 00000000 00:05 3                          /dev/mem
Rss:                   0 kB
VmFlags: rd wr sh mr mw me ms io pf
7f2000000000-7f2000400000 rw-p 00000000 00:00 0 
Rss:                4096 kB
KernelPageSize:        4 kB
AnonHugePages:      4096 kB
VmFlags: rd wr mr mw me ac hg
";
        let m = Maps::from_text(text);
        assert_eq!(m.regions.len(), 3);
        assert_eq!(m.regions[0].kind(), Kind::Hugetlb);
        assert_eq!(m.regions[0].rss_kb, Some(2048));
        assert_eq!(m.regions[1].kind(), Kind::Io);
        assert_eq!(m.regions[2].kind(), Kind::Anon);
        assert_eq!(m.regions[2].thp_kb, Some(4096));
    }

    #[test]
    fn garbage_lines_are_skipped() {
        let m = Maps::from_text("hello\n1-2 r\nzz-10 rw-p 0 0:0 0\n\n");
        assert!(m.regions.is_empty());
    }

    #[test]
    fn names() {
        let m = Maps::from_text(CANNED);
        assert_eq!(m.by_name("[heap]").unwrap().len(), 1);
        assert_eq!(m.by_name("libc.so.6").unwrap().len(), 3);
        assert_eq!(m.by_name("libc").unwrap().len(), 3);
        assert_eq!(
            m.by_name("/usr/lib/x86_64-linux-gnu/libc.so.6")
                .unwrap()
                .len(),
            3
        );
        assert_eq!(m.by_name("ld-linux-x86-64.so.2").unwrap().len(), 1);
        assert_eq!(m.by_name("memfd:ring").unwrap().len(), 1);
        assert_eq!(m.by_name("/memfd:ring").unwrap().len(), 1);
        assert!(m.by_name("[nosuch]").is_err());
        assert!(m.by_name("nosuch.so").is_err());
        // `l` is a prefix of nothing followed by . or -: not found.
        assert!(m.by_name("l").is_err());
    }
}
