//! Reproducer of the open bug (DESIGN.md, known limits): a fork child
//! inherits its parent's mirror into a fresh mm on which no interval notifier
//! was ever registered; the first OPEN over the child registers one, and
//! `mm_take_all_locks()` then write-locks the i_mmap_rwsem of every file the
//! child maps, the mirror's access inode among them (file -> access inode ->
//! file in address order). A lockdep kernel reports the cycle at once; it is
//! a real one against our zap, which takes an access inode's i_mmap_rwsem
//! under a file's or an anon_vma's lock.
//!
//! ```text
//! cargo build --release -p pidfd-mem-stress --examples
//! cargo xtask run --kernel .../bzImage --kdir ... -- target/release/examples/repro_fork_child_register_lockdep
//! ```

use pidfd_mem::{pidfd_mem, pidfd_open};
use pidfd_mem_stress::SelfMirror;

fn main() {
    let s = SelfMirror::new();
    let m = &s.mirror;
    let (r, w) = rustix::pipe::pipe().unwrap();
    // SAFETY: single-threaded; the child only waits for its parent to go.
    let child = unsafe { libc::fork() };
    if child == 0 {
        drop(w);
        let mut b = [0u8; 1];
        let _ = rustix::io::read(&r, &mut b);
        // SAFETY: leaving the child.
        unsafe { libc::_exit(0) };
    }
    drop(r);
    println!(
        "# mirror at {:p}, inherited by child {child}; OPEN of the child",
        m.as_ptr()
    );
    let (_ctl, _mem) = pidfd_mem(pidfd_open(child as u32).unwrap(), 0).unwrap();
    drop(w);
    // SAFETY: reaping our child.
    unsafe { libc::waitpid(child, core::ptr::null_mut(), 0) };
    println!("# done; a lockdep kernel reports the cycle in mm_take_all_locks now");
}
