//! Reproducer: lockdep "possible circular locking dependency" between
//! `&pidfd_mem_i_mmap_key` and `&mapping->i_mmap_rwsem` in
//! `mm_take_all_locks()` (found by pidfd-mem-fuzz on the 6.12 debug kernel
//! after bd6e65f gave the access inodes' i_mmap_rwsem a class of its own).
//!
//! PIDFD_MEM_OPEN registers an mmu_notifier on T's mm; `mmu_notifier_register()`
//! calls `mm_take_all_locks()`, which write-locks the i_mmap_rwsem of every
//! file mapped in T, in VMA order. When T maps a mirror (an access file)
//! between other files (its binary below, libc above), that takes
//! file -> access inode -> file: with two lock classes, lockdep sees a cycle,
//! and a real one against our zap, which takes the access inode's lock under
//! a file's (DESIGN.md, known limits).
//!
//! Mitigated since: OPEN and MAP insert only interval notifiers, and mmap()
//! of a mirror registers them on the mapper's mm before its first mirror
//! exists, so this OPEN registers nothing and lockdep stays quiet. The case
//! left open is a fork child of a mapper (see DESIGN.md).
//!
//! ```text
//! cargo build --release -p pidfd-mem-stress --examples
//! cargo xtask run --kernel .../bzImage --kdir ... -- target/release/examples/repro_register_with_mirror_lockdep
//! ```

use pidfd_mem::pidfd_mem;
use pidfd_mem_stress::SelfMirror;

fn main() {
    let s = SelfMirror::new();
    let m = &s.mirror;
    println!(
        "# mirror at {:p}; OPEN again (mmu_notifier_register on an mm mapping it)",
        m.as_ptr()
    );
    let again = pidfd_mem(&s.pidfd, 0).unwrap();
    drop(again);
    println!("# done; the mirror mmap registered this mm first: a lockdep kernel stays quiet");
}
