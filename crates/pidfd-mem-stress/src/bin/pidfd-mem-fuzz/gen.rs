//! Random and edge values for the fuzzer's arguments.

use pidfd_mem_stress::page;
use pidfd_mem_stress::rng::Rng;

/// Kernel addresses (never readable from user space).
pub const KERNEL_ADDRS: [u64; 5] = [
    0xffff_8000_0000_0000,
    0xffff_8880_0000_0000,
    0xffff_ffff_8100_0000,
    0xffff_ffff_ff60_0000, // vsyscall
    0xffff_ffff_ffff_f000,
];

/// The top of the user address space (`TASK_SIZE`, `mm->task_size`):
/// 47 bits, or 56 with 5-level paging (found by asking mmap for a hint
/// above 47 bits).
pub fn task_size() -> u64 {
    let p = page() as u64;
    // SAFETY: a fresh mapping at a hint; wherever the kernel puts it, it
    // aliases nothing, and we unmap it at once.
    let q = unsafe {
        libc::mmap(
            (1u64 << 52) as *mut _,
            page(),
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if q == libc::MAP_FAILED {
        return (1 << 47) - p;
    }
    // SAFETY: our mapping from above.
    unsafe { libc::munmap(q, page()) };
    if q as u64 >= 1 << 47 {
        (1 << 56) - p
    } else {
        (1 << 47) - p
    }
}

/// A u64 that is interesting as an address, offset or size.
pub fn edge_u64(rng: &mut Rng, task_size: u64) -> u64 {
    let p = page() as u64;
    match rng.below(20) {
        0 => 0,
        1 => 1,
        2 => p - 1,
        3 => p,
        4 => p + 1,
        5 => task_size,
        6 => task_size - p,
        7 => task_size + p,
        8 => 1 << 47,
        9 => i64::MAX as u64,
        10 => (i64::MAX as u64) & !(p - 1),
        11 => (i64::MAX as u64 & !(p - 1)) - p,
        12 => i64::MIN as u64,
        13 => u64::MAX,
        14 => !(p - 1),
        15 => (-(p as i64)) as u64,
        16 => *rng.pick(&KERNEL_ADDRS),
        17 => 1 << 40,
        18 => rng.next_u64() & !(p - 1),
        _ => rng.next_u64(),
    }
}

/// An offset in mem: mostly small and aligned, sometimes edges.
pub fn offset(rng: &mut Rng, task_size: u64) -> i64 {
    let p = page() as u64;
    match rng.below(10) {
        0..=5 => (rng.below(64) * p) as i64,
        6 => ((1 << 30) + rng.below(16) * p) as i64,
        7 => rng.below(64 * p) as i64, // often unaligned
        _ => edge_u64(rng, task_size) as i64,
    }
}

/// A grant or window size: mostly a few pages, sometimes edges.
pub fn size(rng: &mut Rng, task_size: u64) -> i64 {
    let p = page() as u64;
    match rng.below(10) {
        0..=5 => ((1 + rng.below(16)) * p) as i64,
        6 => (512 * p) as i64,
        7 => (1 + rng.below(3 * p)) as i64, // often unaligned
        _ => edge_u64(rng, task_size) as i64,
    }
}

/// Grant flags: mostly valid.
pub fn grant_flags(rng: &mut Rng) -> i32 {
    match rng.below(20) {
        0..=8 => 1,
        9..=17 => 3,
        18 => *rng.pick(&[0, 2, 4, 5, 7, -1, i32::MIN, 0x101]),
        _ => rng.next_u64() as i32,
    }
}

/// A length for pread/pwrite: mostly small, sometimes huge.
pub fn count(rng: &mut Rng) -> usize {
    let p = page();
    match rng.below(12) {
        0 => 0,
        1 => 1,
        2 => 8,
        3 | 4 => p,
        5 => 1 + rng.index(4 * p),
        6 => 16 * p,
        7 => 64 * p,
        8 => 1 << 30,
        9 => isize::MAX as usize,
        10 => usize::MAX,
        _ => rng.index(2 * p),
    }
}

/// mmap protections.
pub fn prot(rng: &mut Rng) -> i32 {
    match rng.below(10) {
        0..=4 => libc::PROT_READ,
        5..=7 => libc::PROT_READ | libc::PROT_WRITE,
        8 => *rng.pick(&[
            libc::PROT_NONE,
            libc::PROT_WRITE,
            libc::PROT_READ | libc::PROT_EXEC,
            libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
        ]),
        _ => (rng.next_u64() as i32) & 0xf,
    }
}

/// mmap flags (without MAP_FIXED, which the caller adds on its own ranges).
pub fn map_flags(rng: &mut Rng) -> i32 {
    let base = match rng.below(10) {
        0..=7 => libc::MAP_SHARED,
        8 => libc::MAP_PRIVATE,
        _ => libc::MAP_SHARED_VALIDATE,
    };
    let extra = [
        0,
        0,
        0,
        libc::MAP_POPULATE,
        libc::MAP_NORESERVE,
        libc::MAP_LOCKED,
        libc::MAP_HUGETLB,
        libc::MAP_32BIT,
        libc::MAP_SYNC,
        libc::MAP_NONBLOCK,
        libc::MAP_STACK,
        libc::MAP_GROWSDOWN,
    ];
    base | *rng.pick(&extra)
}

/// madvise advice values (MADV_HWPOISON and MADV_SOFT_OFFLINE excluded:
/// they test memory failure, not this module).
pub fn advice(rng: &mut Rng) -> i32 {
    if rng.chance(50) {
        return 26 + rng.below(70) as i32; // unknown: EINVAL
    }
    rng.below(26) as i32
}
