//! Fault-handled access to a mirror: SIGBUS inside a guarded copy or atomic
//! becomes an error instead of killing the process.
//!
//! # Technique (x86_64): fixup table, as the kernel's `copy_from_user`
//!
//! Every guarded operation is a tiny assembly routine whose one faulting
//! instruction has a known address and a known *fixup* address right behind
//! it (the `__pidfd_mem_rs_fixups` table below). A process-wide SIGBUS
//! handler is installed once (`SA_SIGINFO | SA_ONSTACK`). When SIGBUS hits,
//! the handler checks three things:
//!
//! 1. the signal is a real fault (`si_code > 0`), not `kill`/`raise`;
//! 2. this thread is inside a guarded operation and the fault address
//!    (`si_addr`) lies in the range that the operation declared (the mirror
//!    it works on), kept in a thread-local;
//! 3. the interrupted instruction pointer is one of the table's faulting
//!    instructions.
//!
//! If all hold, it records `si_addr` in a thread-local, moves the saved
//! instruction pointer to the fixup and returns: the routine returns a
//! "faulted" status (for `rep movsb`, the count of bytes not copied, which
//! the CPU leaves in `rcx` at the faulting byte). Nothing is unmapped or
//! replaced: the mirror stays exactly as it was and usable, and the next
//! access shows whatever the target maps then.
//!
//! Otherwise the fault is not ours and is passed on: to the handler that was
//! installed before ours (with its own `SA_SIGINFO` convention), or, if that
//! was `SIG_DFL`/`SIG_IGN`, by restoring `SIG_DFL` and letting the fault
//! happen again (a signal sent with `kill` is raised again), so that the
//! process dies of SIGBUS as it would have without this crate.
//!
//! The handler only touches const-initialised, destructor-free
//! thread-locals, an atomic pointer and async-signal-safe system calls
//! (`sigaction`, `raise`), and it preserves `errno`.
//!
//! If some code replaces the SIGBUS handler after ours was installed, faults
//! in guarded operations kill the process again, as any SIGBUS does.
//!
//! # Other architectures
//!
//! Elsewhere the same operations are done with plain volatile accesses and
//! SIGBUS is not caught: it kills the process, as for any mapping.

#[cfg(target_arch = "x86_64")]
pub(super) use self::x86_64::*;

#[cfg(not(target_arch = "x86_64"))]
pub(super) use self::portable::*;

/// A fault in a guarded operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Fault {
    /// `si_addr` of the SIGBUS.
    pub addr: usize,
    /// Bytes copied before the fault (copies only; 0 for atomics).
    pub done: usize,
}

#[cfg(target_arch = "x86_64")]
mod x86_64 {
    use core::cell::Cell;
    use core::ffi::{c_int, c_void};
    use core::ptr;
    use core::sync::atomic::{compiler_fence, AtomicPtr, Ordering};
    use std::sync::Once;

    use super::Fault;

    // The guarded routines. System V ABI: arguments in rdi, rsi, rdx; result
    // in rax; they only touch caller-saved registers and rely on DF = 0 at
    // entry (guaranteed by the ABI).
    core::arch::global_asm!(
        ".pushsection .text.__pidfd_mem_rs_guarded,\"ax\",@progbits",
        // usize copy(dst, src, len): returns the count NOT copied (0 = all).
        ".p2align 4",
        ".globl __pidfd_mem_rs_copy",
        ".hidden __pidfd_mem_rs_copy",
        ".type __pidfd_mem_rs_copy,@function",
        "__pidfd_mem_rs_copy:",
        "    mov rcx, rdx",
        "__pidfd_mem_rs_copy_insn:",
        "    rep movsb",
        "__pidfd_mem_rs_copy_fixup:",
        "    mov rax, rcx",
        "    ret",
        ".size __pidfd_mem_rs_copy, .-__pidfd_mem_rs_copy",
        // u32 load64(ptr, out): 0 ok, 1 fault.
        ".p2align 4",
        ".globl __pidfd_mem_rs_load64",
        ".hidden __pidfd_mem_rs_load64",
        ".type __pidfd_mem_rs_load64,@function",
        "__pidfd_mem_rs_load64:",
        "    xor eax, eax",
        "__pidfd_mem_rs_load64_insn:",
        "    mov rdx, qword ptr [rdi]",
        "    mov qword ptr [rsi], rdx",
        "    ret",
        "__pidfd_mem_rs_load64_fixup:",
        "    mov eax, 1",
        "    ret",
        ".size __pidfd_mem_rs_load64, .-__pidfd_mem_rs_load64",
        // u32 load32(ptr, out): 0 ok, 1 fault.
        ".p2align 4",
        ".globl __pidfd_mem_rs_load32",
        ".hidden __pidfd_mem_rs_load32",
        ".type __pidfd_mem_rs_load32,@function",
        "__pidfd_mem_rs_load32:",
        "    xor eax, eax",
        "__pidfd_mem_rs_load32_insn:",
        "    mov edx, dword ptr [rdi]",
        "    mov dword ptr [rsi], edx",
        "    ret",
        "__pidfd_mem_rs_load32_fixup:",
        "    mov eax, 1",
        "    ret",
        ".size __pidfd_mem_rs_load32, .-__pidfd_mem_rs_load32",
        // u32 store64(ptr, val): 0 ok, 1 fault. xchg: a SeqCst store.
        ".p2align 4",
        ".globl __pidfd_mem_rs_store64",
        ".hidden __pidfd_mem_rs_store64",
        ".type __pidfd_mem_rs_store64,@function",
        "__pidfd_mem_rs_store64:",
        "    xor eax, eax",
        "__pidfd_mem_rs_store64_insn:",
        "    xchg qword ptr [rdi], rsi",
        "    ret",
        "__pidfd_mem_rs_store64_fixup:",
        "    mov eax, 1",
        "    ret",
        ".size __pidfd_mem_rs_store64, .-__pidfd_mem_rs_store64",
        // u32 store32(ptr, val): 0 ok, 1 fault.
        ".p2align 4",
        ".globl __pidfd_mem_rs_store32",
        ".hidden __pidfd_mem_rs_store32",
        ".type __pidfd_mem_rs_store32,@function",
        "__pidfd_mem_rs_store32:",
        "    xor eax, eax",
        "__pidfd_mem_rs_store32_insn:",
        "    xchg dword ptr [rdi], esi",
        "    ret",
        "__pidfd_mem_rs_store32_fixup:",
        "    mov eax, 1",
        "    ret",
        ".size __pidfd_mem_rs_store32, .-__pidfd_mem_rs_store32",
        // u32 cmpxchg64(ptr, *expected_inout, new): 0 ok, 1 fault; the value
        // found is written back to *expected_inout.
        ".p2align 4",
        ".globl __pidfd_mem_rs_cmpxchg64",
        ".hidden __pidfd_mem_rs_cmpxchg64",
        ".type __pidfd_mem_rs_cmpxchg64,@function",
        "__pidfd_mem_rs_cmpxchg64:",
        "    mov rax, qword ptr [rsi]",
        "__pidfd_mem_rs_cmpxchg64_insn:",
        "    lock cmpxchg qword ptr [rdi], rdx",
        "    mov qword ptr [rsi], rax",
        "    xor eax, eax",
        "    ret",
        "__pidfd_mem_rs_cmpxchg64_fixup:",
        "    mov eax, 1",
        "    ret",
        ".size __pidfd_mem_rs_cmpxchg64, .-__pidfd_mem_rs_cmpxchg64",
        // u32 cmpxchg32(ptr, *expected_inout, new).
        ".p2align 4",
        ".globl __pidfd_mem_rs_cmpxchg32",
        ".hidden __pidfd_mem_rs_cmpxchg32",
        ".type __pidfd_mem_rs_cmpxchg32,@function",
        "__pidfd_mem_rs_cmpxchg32:",
        "    mov eax, dword ptr [rsi]",
        "__pidfd_mem_rs_cmpxchg32_insn:",
        "    lock cmpxchg dword ptr [rdi], edx",
        "    mov dword ptr [rsi], eax",
        "    xor eax, eax",
        "    ret",
        "__pidfd_mem_rs_cmpxchg32_fixup:",
        "    mov eax, 1",
        "    ret",
        ".size __pidfd_mem_rs_cmpxchg32, .-__pidfd_mem_rs_cmpxchg32",
        ".popsection",
        // The fixup table: (faulting instruction, fixup) pairs.
        ".pushsection .data.rel.ro.__pidfd_mem_rs_fixups,\"aw\",@progbits",
        ".p2align 3",
        ".globl __pidfd_mem_rs_fixups",
        ".hidden __pidfd_mem_rs_fixups",
        "__pidfd_mem_rs_fixups:",
        "    .quad __pidfd_mem_rs_copy_insn, __pidfd_mem_rs_copy_fixup",
        "    .quad __pidfd_mem_rs_load64_insn, __pidfd_mem_rs_load64_fixup",
        "    .quad __pidfd_mem_rs_load32_insn, __pidfd_mem_rs_load32_fixup",
        "    .quad __pidfd_mem_rs_store64_insn, __pidfd_mem_rs_store64_fixup",
        "    .quad __pidfd_mem_rs_store32_insn, __pidfd_mem_rs_store32_fixup",
        "    .quad __pidfd_mem_rs_cmpxchg64_insn, __pidfd_mem_rs_cmpxchg64_fixup",
        "    .quad __pidfd_mem_rs_cmpxchg32_insn, __pidfd_mem_rs_cmpxchg32_fixup",
        ".popsection",
    );

    const N_FIXUPS: usize = 7;

    extern "C" {
        fn __pidfd_mem_rs_copy(dst: *mut u8, src: *const u8, len: usize) -> usize;
        fn __pidfd_mem_rs_load64(ptr: *const u64, out: *mut u64) -> u32;
        fn __pidfd_mem_rs_load32(ptr: *const u32, out: *mut u32) -> u32;
        fn __pidfd_mem_rs_store64(ptr: *mut u64, val: u64) -> u32;
        fn __pidfd_mem_rs_store32(ptr: *mut u32, val: u32) -> u32;
        fn __pidfd_mem_rs_cmpxchg64(ptr: *mut u64, expected: *mut u64, new: u64) -> u32;
        fn __pidfd_mem_rs_cmpxchg32(ptr: *mut u32, expected: *mut u32, new: u32) -> u32;
        static __pidfd_mem_rs_fixups: [[usize; 2]; N_FIXUPS];
    }

    thread_local! {
        /// `[start, end)` of the memory the current guarded operation of this
        /// thread works on; `(0, 0)` outside one.
        static GUARD: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
        /// `si_addr` of the last fault fixed up on this thread.
        static FAULT_ADDR: Cell<usize> = const { Cell::new(0) };
    }

    /// The SIGBUS disposition found when ours was installed (leaked box).
    static PREV: AtomicPtr<libc::sigaction> = AtomicPtr::new(ptr::null_mut());
    static INSTALL: Once = Once::new();

    fn install() {
        INSTALL.call_once(|| {
            // SAFETY: sigaction with a null new action only reads the
            // current one into `old`, a valid out pointer; all-zero is a
            // valid `sigaction` (plain integers and a mask).
            let mut old: libc::sigaction = unsafe { core::mem::zeroed() };
            // SAFETY: see above.
            unsafe { libc::sigaction(libc::SIGBUS, ptr::null(), &mut old) };
            PREV.store(Box::into_raw(Box::new(old)), Ordering::Release);

            // SAFETY: all-zero is a valid `sigaction`; the fields we need are
            // set below.
            let mut new: libc::sigaction = unsafe { core::mem::zeroed() };
            new.sa_sigaction = handler as *const () as usize;
            new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            // SAFETY: `new.sa_mask` is a valid sigset_t to initialise.
            unsafe { libc::sigemptyset(&mut new.sa_mask) };
            // SAFETY: installs `handler`, an `extern "C"` function with the
            // SA_SIGINFO signature that only does async-signal-safe work.
            // `actual` is a valid out pointer.
            let mut actual: libc::sigaction = unsafe { core::mem::zeroed() };
            // SAFETY: see above.
            let rc = unsafe { libc::sigaction(libc::SIGBUS, &new, &mut actual) };
            if rc == 0
                && (actual.sa_sigaction != old.sa_sigaction || actual.sa_flags != old.sa_flags)
            {
                // Someone changed the disposition between our two calls:
                // chain to what was really there.
                PREV.store(Box::into_raw(Box::new(actual)), Ordering::Release);
            }
        });
    }

    /// Reads the fixup table.
    fn fixups() -> [[usize; 2]; N_FIXUPS] {
        // SAFETY: the table is immutable data defined in the global_asm
        // above, with exactly N_FIXUPS pairs of addresses.
        unsafe { ptr::read(ptr::addr_of!(__pidfd_mem_rs_fixups)) }
    }

    /// If this SIGBUS is a fault in this thread's guarded operation, points
    /// the interrupted context at the fixup and returns true.
    ///
    /// # Safety
    ///
    /// `info` and `ctx` are the arguments the kernel gave to an SA_SIGINFO
    /// handler (or null).
    unsafe fn try_fixup(info: *mut libc::siginfo_t, ctx: *mut c_void) -> bool {
        if info.is_null() || ctx.is_null() {
            return false;
        }
        // SAFETY: the kernel passes a valid siginfo_t (caller's contract).
        let info = unsafe { &*info };
        if info.si_code <= 0 {
            // Sent by kill/raise/sigqueue, not a fault.
            return false;
        }
        // SAFETY: for a SIGBUS fault, si_addr is the union member in use.
        let addr = unsafe { info.si_addr() } as usize;
        let (start, end) = GUARD.get();
        if !(start <= addr && addr < end) {
            return false;
        }
        // SAFETY: with SA_SIGINFO, `ctx` points to the ucontext_t saved on
        // the signal frame, which we may modify; the kernel restores it on
        // return from the handler.
        let uc = unsafe { &mut *ctx.cast::<libc::ucontext_t>() };
        let rip_slot = &mut uc.uc_mcontext.gregs[libc::REG_RIP as usize];
        let rip = *rip_slot as usize;
        for [insn, fixup] in fixups() {
            if rip == insn {
                FAULT_ADDR.set(addr);
                *rip_slot = fixup as i64;
                return true;
            }
        }
        false
    }

    /// Passes a SIGBUS that is not ours on.
    ///
    /// # Safety
    ///
    /// Called from the signal handler with its arguments.
    unsafe fn chain(sig: c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
        let prev = PREV.load(Ordering::Acquire);
        let (action, flags) = if prev.is_null() {
            (libc::SIG_DFL, 0)
        } else {
            // SAFETY: PREV only ever holds leaked, never freed boxes.
            let p = unsafe { &*prev };
            (p.sa_sigaction, p.sa_flags)
        };
        // SAFETY: `info` is null or the kernel's siginfo_t.
        let user_sent = info.is_null() || unsafe { (*info).si_code } <= 0;
        if action == libc::SIG_DFL || action == libc::SIG_IGN {
            if action == libc::SIG_IGN && user_sent {
                return; // an ignored kill(SIGBUS) stays ignored
            }
            // SAFETY: all-zero sigaction is SIG_DFL with an empty mask;
            // sigaction is async-signal-safe.
            unsafe {
                let mut dfl: libc::sigaction = core::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(libc::SIGBUS, &dfl, ptr::null_mut());
            }
            if user_sent {
                // SIGBUS is blocked while we run: this stays pending and
                // kills the process (default action) when we return.
                // SAFETY: raise is async-signal-safe.
                unsafe { libc::raise(sig) };
            }
            // A real fault re-executes the instruction and dies of SIGBUS.
            return;
        }
        if flags & libc::SA_SIGINFO != 0 {
            // SAFETY: the previous handler was installed with SA_SIGINFO, so
            // `action` is a function of this signature.
            let f: extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) =
                unsafe { core::mem::transmute(action) };
            f(sig, info, ctx);
        } else {
            // SAFETY: without SA_SIGINFO `action` is a `void (*)(int)`.
            let f: extern "C" fn(c_int) = unsafe { core::mem::transmute(action) };
            f(sig);
        }
    }

    extern "C" fn handler(sig: c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
        // SAFETY: __errno_location returns this thread's errno slot.
        let errno_slot = unsafe { libc::__errno_location() };
        // SAFETY: the slot is valid for the life of the thread.
        let saved_errno = unsafe { *errno_slot };
        // SAFETY: we are the SA_SIGINFO handler; these are its arguments.
        if !unsafe { try_fixup(info, ctx) } {
            // SAFETY: same arguments.
            unsafe { chain(sig, info, ctx) };
        }
        // SAFETY: as above.
        unsafe { *errno_slot = saved_errno };
    }

    /// Runs `f` with this thread's guard set to `[start, start+len)`.
    fn guarded<R>(start: usize, len: usize, f: impl FnOnce() -> R) -> (R, usize) {
        install();
        let saved = GUARD.replace((start, start.saturating_add(len)));
        FAULT_ADDR.set(0);
        // The handler runs on this thread: order the thread-local stores
        // before the guarded instruction, and its loads after.
        compiler_fence(Ordering::SeqCst);
        let r = f();
        compiler_fence(Ordering::SeqCst);
        GUARD.set(saved);
        (r, FAULT_ADDR.get())
    }

    /// Copies `len` bytes from `src` to `dst`, catching SIGBUS in
    /// `[guard, guard+guard_len)`.
    ///
    /// # Safety
    ///
    /// `dst` and `src` are valid for `len` bytes (apart from SIGBUS in the
    /// guarded range) and do not overlap; the guarded range is a mapping
    /// that only volatile/atomic accesses reach.
    pub(in crate::mirror) unsafe fn copy(
        dst: *mut u8,
        src: *const u8,
        len: usize,
        guard: usize,
        guard_len: usize,
    ) -> Result<(), Fault> {
        // SAFETY: forwarded from the caller; the routine is a `rep movsb`.
        let (left, addr) = guarded(guard, guard_len, || unsafe {
            __pidfd_mem_rs_copy(dst, src, len)
        });
        if left == 0 {
            Ok(())
        } else {
            Err(Fault {
                addr,
                done: len - left,
            })
        }
    }

    fn status(st: u32, addr: usize) -> Result<(), Fault> {
        if st == 0 {
            Ok(())
        } else {
            Err(Fault { addr, done: 0 })
        }
    }

    /// Atomic load of the u64 at `p` (SeqCst), SIGBUS caught.
    ///
    /// # Safety
    ///
    /// `p` is 8-aligned and inside a live mapping.
    pub(in crate::mirror) unsafe fn load_u64(p: *const u64) -> Result<u64, Fault> {
        let mut out = 0u64;
        // SAFETY: caller's contract; `out` is a live local.
        let (st, addr) = guarded(p as usize, 8, || unsafe {
            __pidfd_mem_rs_load64(p, &mut out)
        });
        status(st, addr).map(|()| out)
    }

    /// Atomic load of the u32 at `p` (SeqCst), SIGBUS caught.
    ///
    /// # Safety
    ///
    /// `p` is 4-aligned and inside a live mapping.
    pub(in crate::mirror) unsafe fn load_u32(p: *const u32) -> Result<u32, Fault> {
        let mut out = 0u32;
        // SAFETY: caller's contract; `out` is a live local.
        let (st, addr) = guarded(p as usize, 4, || unsafe {
            __pidfd_mem_rs_load32(p, &mut out)
        });
        status(st, addr).map(|()| out)
    }

    /// Atomic store (`xchg`, SeqCst) of `v` at `p`, SIGBUS caught.
    ///
    /// # Safety
    ///
    /// `p` is 8-aligned and inside a live writable mapping.
    pub(in crate::mirror) unsafe fn store_u64(p: *mut u64, v: u64) -> Result<(), Fault> {
        // SAFETY: caller's contract.
        let (st, addr) = guarded(p as usize, 8, || unsafe { __pidfd_mem_rs_store64(p, v) });
        status(st, addr)
    }

    /// Atomic store (`xchg`, SeqCst) of `v` at `p`, SIGBUS caught.
    ///
    /// # Safety
    ///
    /// `p` is 4-aligned and inside a live writable mapping.
    pub(in crate::mirror) unsafe fn store_u32(p: *mut u32, v: u32) -> Result<(), Fault> {
        // SAFETY: caller's contract.
        let (st, addr) = guarded(p as usize, 4, || unsafe { __pidfd_mem_rs_store32(p, v) });
        status(st, addr)
    }

    /// `lock cmpxchg` (SeqCst): returns the value found at `p`.
    ///
    /// # Safety
    ///
    /// `p` is 8-aligned and inside a live writable mapping.
    pub(in crate::mirror) unsafe fn cmpxchg_u64(
        p: *mut u64,
        current: u64,
        new: u64,
    ) -> Result<u64, Fault> {
        let mut found = current;
        // SAFETY: caller's contract; `found` is a live local.
        let (st, addr) = guarded(p as usize, 8, || unsafe {
            __pidfd_mem_rs_cmpxchg64(p, &mut found, new)
        });
        status(st, addr).map(|()| found)
    }

    /// `lock cmpxchg` (SeqCst): returns the value found at `p`.
    ///
    /// # Safety
    ///
    /// `p` is 4-aligned and inside a live writable mapping.
    pub(in crate::mirror) unsafe fn cmpxchg_u32(
        p: *mut u32,
        current: u32,
        new: u32,
    ) -> Result<u32, Fault> {
        let mut found = current;
        // SAFETY: caller's contract; `found` is a live local.
        let (st, addr) = guarded(p as usize, 4, || unsafe {
            __pidfd_mem_rs_cmpxchg32(p, &mut found, new)
        });
        status(st, addr).map(|()| found)
    }

    /// Whether SIGBUS in guarded operations is caught on this target.
    pub(in crate::mirror) const CATCHES_SIGBUS: bool = true;
}

#[cfg(not(target_arch = "x86_64"))]
mod portable {
    //! No fixup table here: plain volatile and atomic accesses; SIGBUS is
    //! not caught.
    use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

    use super::Fault;

    /// # Safety
    ///
    /// As the x86_64 version.
    pub(in crate::mirror) unsafe fn copy(
        dst: *mut u8,
        src: *const u8,
        len: usize,
        _guard: usize,
        _guard_len: usize,
    ) -> Result<(), Fault> {
        for i in 0..len {
            // SAFETY: caller's contract: both valid for `len` bytes.
            unsafe { dst.add(i).write_volatile(src.add(i).read_volatile()) };
        }
        Ok(())
    }

    /// # Safety
    ///
    /// `p` aligned, in a live mapping.
    pub(in crate::mirror) unsafe fn load_u64(p: *const u64) -> Result<u64, Fault> {
        // SAFETY: caller's contract; only atomics reach the mirror.
        Ok(unsafe { AtomicU64::from_ptr(p.cast_mut()) }.load(Ordering::SeqCst))
    }

    /// # Safety
    ///
    /// `p` aligned, in a live mapping.
    pub(in crate::mirror) unsafe fn load_u32(p: *const u32) -> Result<u32, Fault> {
        // SAFETY: caller's contract.
        Ok(unsafe { AtomicU32::from_ptr(p.cast_mut()) }.load(Ordering::SeqCst))
    }

    /// # Safety
    ///
    /// `p` aligned, in a live writable mapping.
    pub(in crate::mirror) unsafe fn store_u64(p: *mut u64, v: u64) -> Result<(), Fault> {
        // SAFETY: caller's contract.
        unsafe { AtomicU64::from_ptr(p) }.store(v, Ordering::SeqCst);
        Ok(())
    }

    /// # Safety
    ///
    /// `p` aligned, in a live writable mapping.
    pub(in crate::mirror) unsafe fn store_u32(p: *mut u32, v: u32) -> Result<(), Fault> {
        // SAFETY: caller's contract.
        unsafe { AtomicU32::from_ptr(p) }.store(v, Ordering::SeqCst);
        Ok(())
    }

    /// # Safety
    ///
    /// `p` aligned, in a live writable mapping.
    pub(in crate::mirror) unsafe fn cmpxchg_u64(
        p: *mut u64,
        current: u64,
        new: u64,
    ) -> Result<u64, Fault> {
        // SAFETY: caller's contract.
        let a = unsafe { AtomicU64::from_ptr(p) };
        Ok(
            match a.compare_exchange(current, new, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(v) | Err(v) => v,
            },
        )
    }

    /// # Safety
    ///
    /// `p` aligned, in a live writable mapping.
    pub(in crate::mirror) unsafe fn cmpxchg_u32(
        p: *mut u32,
        current: u32,
        new: u32,
    ) -> Result<u32, Fault> {
        // SAFETY: caller's contract.
        let a = unsafe { AtomicU32::from_ptr(p) };
        Ok(
            match a.compare_exchange(current, new, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(v) | Err(v) => v,
            },
        )
    }

    /// Whether SIGBUS in guarded operations is caught on this target.
    pub(in crate::mirror) const CATCHES_SIGBUS: bool = false;
}
