//! SIGBUS that is not a guarded mirror access is passed on unchanged: to the
//! handler installed before ours, or to the default action (crate docs,
//! "How SIGBUS in a copy becomes an error"). Each case runs in a fresh
//! forked child in which no guarded operation ran before, so that the
//! child decides what "before" is. The parent never runs a guarded op.

use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;

use pidfd_mem::{Access, MemOffset, Mirror, MirrorError, Prot};
use rustix::fs::{ftruncate, memfd_create, MemfdFlags};

/// A 2-page mirror whose page 1 raises SIGBUS (file truncated to 1 page).
fn truncated_mirror() -> (Access, Mirror) {
    let p = pidfd_mem::page_size();
    let fd: OwnedFd = memfd_create("chain", MemfdFlags::CLOEXEC).unwrap();
    ftruncate(&fd, 2 * p as u64).unwrap();
    let acc = Access::from(fd);
    let m = acc.mmap(MemOffset(0), 2 * p, Prot::ReadWrite).unwrap();
    ftruncate(&acc, p as u64).unwrap();
    (acc, m)
}

fn in_child(f: impl FnOnce() -> i32) -> i32 {
    // SAFETY: the child runs `f` then _exit; `f` only maps memory, installs
    // handlers and touches the mapping.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = f();
        // SAFETY: _exit is always safe.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: our own child, valid status pointer.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    status
}

extern "C" fn exit_42(_sig: libc::c_int, _info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(42) };
}

fn set_handler(action: usize, flags: libc::c_int) {
    // SAFETY: all-zero is a valid sigaction; `action` is SIG_DFL, SIG_IGN or
    // an extern "C" handler of the matching signature.
    unsafe {
        let mut sa: libc::sigaction = core::mem::zeroed();
        sa.sa_sigaction = action;
        sa.sa_flags = flags;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGBUS, &sa, core::ptr::null_mut()), 0);
    }
}

/// 0 if a guarded copy of page 1 gives Fault, else 1.
fn guarded_ok(m: &Mirror) -> bool {
    let p = pidfd_mem::page_size();
    let mut b = [0u8; 8];
    matches!(m.copy_to(p, &mut b), Err(MirrorError::Fault { .. }))
        && matches!(
            m.load_u64(p, Ordering::SeqCst),
            Err(MirrorError::Fault { .. })
        )
}

#[test]
fn chains_to_previous_siginfo_handler() {
    if !Mirror::catches_sigbus() {
        println!("SKIP: SIGBUS is not caught on this architecture");
        return;
    }
    let status = in_child(|| {
        set_handler(exit_42 as *const () as usize, libc::SA_SIGINFO);
        let (_acc, m) = truncated_mirror();
        if !guarded_ok(&m) {
            return 1;
        }
        // Not guarded: goes to exit_42.
        // SAFETY: inside the live mapping; faults on purpose.
        let _ = unsafe { m.as_ptr().add(pidfd_mem::page_size()).read_volatile() };
        2
    });
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 42,
        "expected the previous handler to exit(42), status {status:#x}"
    );
}

#[test]
fn default_action_kills_for_faults_and_raise() {
    if !Mirror::catches_sigbus() {
        println!("SKIP: SIGBUS is not caught on this architecture");
        return;
    }
    for raise in [false, true] {
        let status = in_child(|| {
            set_handler(libc::SIG_DFL, 0);
            let (_acc, m) = truncated_mirror();
            if !guarded_ok(&m) {
                return 1;
            }
            if raise {
                // SAFETY: raising a signal at ourselves.
                unsafe { libc::raise(libc::SIGBUS) };
            } else {
                // SAFETY: inside the live mapping; faults on purpose.
                let _ = unsafe { m.as_ptr().add(pidfd_mem::page_size()).read_volatile() };
            }
            2
        });
        assert!(
            libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGBUS,
            "raise={raise}: expected death by SIGBUS, status {status:#x}"
        );
    }
}

#[test]
fn ignored_kill_stays_ignored_but_faults_kill() {
    if !Mirror::catches_sigbus() {
        println!("SKIP: SIGBUS is not caught on this architecture");
        return;
    }
    let status = in_child(|| {
        set_handler(libc::SIG_IGN, 0);
        let (_acc, m) = truncated_mirror();
        if !guarded_ok(&m) {
            return 1;
        }
        // SAFETY: raising a signal at ourselves; SIGBUS was ignored.
        unsafe { libc::raise(libc::SIGBUS) };
        // Still alive: now a real fault must kill.
        // SAFETY: inside the live mapping; faults on purpose.
        let _ = unsafe { m.as_ptr().add(pidfd_mem::page_size()).read_volatile() };
        3
    });
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGBUS,
        "expected survival of raise then death by SIGBUS, status {status:#x}"
    );
}
