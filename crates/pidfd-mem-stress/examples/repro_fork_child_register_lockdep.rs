//! Reproducer of a fixed deadlock (DESIGN.md, "Finding mirrors"): a fork
//! child inherits its parent's mirror into a fresh mm on which no notifier
//! was ever registered; the first OPEN over the child registers one, and
//! `mm_take_all_locks()` then write-locks the i_mmap_rwsem of every file the
//! child maps, the mirror's access inode among them. When the zap took an
//! access inode's i_mmap_rwsem (under a file's or an anon_vma's lock), a
//! lockdep kernel reported the cycle here at once. The zap now finds
//! mirrors on its own list; the child then reads through its mirror, whose
//! first fault starts watching it (mirror.c).
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
        // The heap page is zeros; a fault in the mirror is SIGBUS.
        let ok = m.read_obj::<u8>(0) == Ok(0);
        // SAFETY: leaving the child.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    drop(r);
    println!(
        "# mirror at {:p}, inherited by child {child}; OPEN of the child",
        m.as_ptr()
    );
    let (_ctl, _mem) = pidfd_mem(pidfd_open(child as u32).unwrap(), 0).unwrap();
    drop(w);
    let mut st = 0;
    // SAFETY: reaping our child.
    unsafe { libc::waitpid(child, &mut st, 0) };
    assert!(
        libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
        "the child could not read its inherited mirror (wait status {st:#x})"
    );
    println!("# done: the child read its inherited mirror");
}
