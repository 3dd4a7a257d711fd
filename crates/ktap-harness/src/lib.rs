//! A kselftest-shaped harness for the guest suites (`pidfd-mem-tests`,
//! `rmap-guest-tests`, `vmi-tests`): every test runs in its own forked child
//! (its own process group), with a timeout, and is reported in KTAP
//! (Documentation/dev-tools/ktap.rst).
//!
//! A test is a `fn() -> TestResult` (or a `fn() -> anyhow::Result<()>`, with
//! [`Skip`] as the error that skips) registered in a table with its name, an
//! optional expected signal (the child must die of it: SIGBUS tests) and a
//! timeout. The child writes
//! its outcome into a pipe before `_exit`; the parent waits on a pidfd of
//! the child with the timeout, then kills the child's whole process group
//! (targets and helpers the test forked) and reaps everything (it is a child
//! subreaper).

use std::fmt::{self, Display};
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::process::{Pid, PidfdFlags, Signal};

/// Why a test did not pass.
#[derive(Debug)]
pub enum Failure {
    /// The test failed: what was expected and what was seen.
    Fail(String),
    /// The test cannot run here (missing feature), counted as skipped.
    Skip(String),
}

/// What a test returns.
pub type TestResult = Result<(), Failure>;

impl<E: Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Fail(e.to_string())
    }
}

/// The error an `anyhow` test returns to be skipped:
/// `return Err(Skip("why".into()).into())`.
#[derive(Debug)]
pub struct Skip(pub String);

impl Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Skip {}

/// The outcome of an `anyhow` test: [`Skip`] skips, any other error fails
/// with its whole chain of context.
fn from_anyhow(r: anyhow::Result<()>) -> TestResult {
    r.map_err(|e| match e.downcast_ref::<Skip>() {
        Some(s) => Failure::Skip(s.0.clone()),
        None => Failure::Fail(format!("{e:#}")),
    })
}

/// `.ctx("what")`: a failure that says which step failed.
pub trait Ctx<T> {
    /// Turns an error into a [`Failure::Fail`] prefixed with `what`.
    fn ctx(self, what: impl Display) -> Result<T, Failure>;
}

impl<T, E: Display> Ctx<T> for Result<T, E> {
    fn ctx(self, what: impl Display) -> Result<T, Failure> {
        self.map_err(|e| Failure::Fail(format!("{what}: {e}")))
    }
}

/// Fails the test with a formatted message and the source line.
#[macro_export]
macro_rules! fail {
    ($($fmt:tt)+) => {
        return Err($crate::Failure::Fail(format!("{}:{}: {}", file!(), line!(), format!($($fmt)+))))
    };
}

/// Skips the test with a reason.
#[macro_export]
macro_rules! skip {
    ($($fmt:tt)+) => {
        return Err($crate::Failure::Skip(format!($($fmt)+)))
    };
}

/// `ensure!(cond, "what is wrong {}", x)`.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            $crate::fail!($($fmt)+);
        }
    };
}

/// `expect_eq!(seen, expected, "what")`: fails with both values.
#[macro_export]
macro_rules! expect_eq {
    ($seen:expr, $expected:expr, $($what:tt)+) => {{
        let seen = $seen;
        let expected = $expected;
        if seen != expected {
            $crate::fail!("{}: expected {:?}, seen {:?}", format!($($what)+), expected, seen);
        }
    }};
}

/// Prints a diagnostic line (`# ...`) from inside a test.
#[macro_export]
macro_rules! note {
    ($($fmt:tt)+) => {{
        println!("# {}", format!($($fmt)+));
    }};
}

/// A test's body.
#[derive(Clone, Copy)]
pub enum Body {
    /// Returns a [`TestResult`].
    Plain(fn() -> TestResult),
    /// Returns an `anyhow::Result` ([`Skip`] to skip).
    Anyhow(fn() -> anyhow::Result<()>),
}

impl Body {
    fn call(self) -> TestResult {
        match self {
            Body::Plain(f) => f(),
            Body::Anyhow(f) => from_anyhow(f()),
        }
    }
}

/// One registered test.
pub struct Test {
    /// Name, after the contract id it checks (`m1_map_unaligned_einval`).
    pub name: &'static str,
    /// The test.
    pub run: Body,
    /// The child must die of this signal (e.g. SIGBUS).
    pub signal: Option<Signal>,
    /// Killed (and failed) after this long.
    pub timeout: Duration,
}

/// Default timeout of a test.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

impl Test {
    /// A test that must return `Ok`.
    pub const fn new(name: &'static str, run: fn() -> TestResult) -> Self {
        Self {
            name,
            run: Body::Plain(run),
            signal: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// A test written with `anyhow` that must return `Ok` ([`Skip`] skips).
    pub const fn anyhow(name: &'static str, run: fn() -> anyhow::Result<()>) -> Self {
        Self {
            name,
            run: Body::Anyhow(run),
            signal: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// A test whose child must die of `sig` (after any setup that returns
    /// `Err` is reported as such).
    pub const fn signal(name: &'static str, run: fn() -> TestResult, sig: Signal) -> Self {
        Self {
            name,
            run: Body::Plain(run),
            signal: Some(sig),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// With another timeout.
    pub const fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }
}

/// The result of one test.
#[derive(Debug)]
pub enum Outcome {
    /// Passed.
    Pass,
    /// Failed, with the reason.
    Fail(String),
    /// Skipped, with the reason.
    Skip(String),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Pass => f.write_str("pass"),
            Outcome::Fail(m) => write!(f, "fail: {m}"),
            Outcome::Skip(m) => write!(f, "skip: {m}"),
        }
    }
}

fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGBUS => "SIGBUS".into(),
        libc::SIGSEGV => "SIGSEGV".into(),
        libc::SIGKILL => "SIGKILL".into(),
        libc::SIGABRT => "SIGABRT".into(),
        libc::SIGILL => "SIGILL".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGPIPE => "SIGPIPE".into(),
        n => format!("signal {n}"),
    }
}

const MAX_MESSAGE: usize = 16 * 1024;

/// Runs in the child: the test, then its outcome into `out`, then `_exit`.
fn child_main(test: &Test, out: OwnedFd) -> ! {
    let body = test.run;
    let r = catch_unwind(AssertUnwindSafe(move || body.call()));
    let msg = match r {
        Ok(Ok(())) => "P".to_string(),
        Ok(Err(Failure::Fail(m))) => format!("F{m}"),
        Ok(Err(Failure::Skip(m))) => format!("S{m}"),
        Err(p) => {
            let m = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(non-string panic)".into());
            format!("Fpanic: {m}")
        }
    };
    let mut bytes = msg.into_bytes();
    bytes.truncate(MAX_MESSAGE);
    let _ = rustix::io::write(&out, &bytes);
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: _exit ends the child without running the parent's atexit
    // handlers or destructors twice.
    unsafe { libc::_exit(0) }
}

/// Reaps every exited child (we are a subreaper: orphaned grandchildren
/// come to us).
fn reap_all() {
    loop {
        let mut st = 0;
        // SAFETY: waitpid with WNOHANG and a valid status pointer.
        let r = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
        if r <= 0 {
            break;
        }
    }
}

/// Runs one test in a forked child and returns its outcome.
pub fn run_one(test: &Test) -> Outcome {
    let (rd, wr) = match rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC) {
        Ok(p) => p,
        Err(e) => return Outcome::Fail(format!("harness: pipe: {e}")),
    };
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: the harness is single-threaded, so the child may run any code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Outcome::Fail(format!(
            "harness: fork: {}",
            std::io::Error::last_os_error()
        ));
    }
    if pid == 0 {
        drop(rd);
        // Own process group, so that the parent can kill everything we fork.
        // SAFETY: setpgid on ourselves.
        unsafe { libc::setpgid(0, 0) };
        child_main(test, wr);
    }
    drop(wr);
    // SAFETY: setpgid on our child (also done by the child; racing is fine).
    unsafe { libc::setpgid(pid, pid) };
    let start = Instant::now();

    let status = wait_child(pid, test.timeout);
    // Kill whatever the test left behind (targets, helpers), then reap.
    // SAFETY: kill of a process group we created.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    reap_all();

    let mut buf = vec![0u8; MAX_MESSAGE];
    let n = read_nonblocking(&rd, &mut buf);
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    let reported = match msg.chars().next() {
        Some('P') => Some(Outcome::Pass),
        Some('F') => Some(Outcome::Fail(msg[1..].to_string())),
        Some('S') => Some(Outcome::Skip(msg[1..].to_string())),
        _ => None,
    };

    let status = match status {
        None => {
            return Outcome::Fail(format!(
                "timeout: killed after {:.1} s (limit {} s)",
                start.elapsed().as_secs_f64(),
                test.timeout.as_secs()
            ))
        }
        Some(s) => s,
    };
    let died_of = libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status));
    match (test.signal, died_of, reported) {
        (_, _, Some(Outcome::Skip(m))) => Outcome::Skip(m),
        (_, _, Some(Outcome::Fail(m))) => Outcome::Fail(m),
        (Some(want), Some(got), None) if got == want.as_raw() => Outcome::Pass,
        (Some(want), Some(got), _) => Outcome::Fail(format!(
            "expected death by {}, died of {}",
            signal_name(want.as_raw()),
            signal_name(got)
        )),
        (Some(want), None, _) => Outcome::Fail(format!(
            "expected death by {}, but the test returned normally (exit status {})",
            signal_name(want.as_raw()),
            libc::WEXITSTATUS(status)
        )),
        (None, Some(got), _) => Outcome::Fail(format!("died of {}", signal_name(got))),
        (None, None, Some(Outcome::Pass)) => Outcome::Pass,
        (None, None, _) => Outcome::Fail(format!(
            "exited ({}) without reporting an outcome",
            libc::WEXITSTATUS(status)
        )),
    }
}

/// Waits for `pid` up to `timeout`; returns its wait status, or `None` on
/// timeout (the child is then killed and reaped).
fn wait_child(pid: i32, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    let pidfd =
        Pid::from_raw(pid).and_then(|p| rustix::process::pidfd_open(p, PidfdFlags::empty()).ok());
    loop {
        let mut st = 0;
        // SAFETY: waitpid for our child with a valid status pointer.
        let r = unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) };
        if r == pid {
            return Some(st);
        }
        let now = Instant::now();
        if now >= deadline {
            // SAFETY: killing our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            // SAFETY: as above.
            unsafe { libc::waitpid(pid, &mut st, 0) };
            return None;
        }
        let left = (deadline - now).min(Duration::from_millis(200));
        let ts = Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        match &pidfd {
            Some(fd) => {
                let mut fds = [PollFd::new(fd, PollFlags::IN)];
                let _ = rustix::event::poll(&mut fds, Some(&ts));
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn read_nonblocking(fd: &OwnedFd, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        let mut fds = [PollFd::new(fd, PollFlags::IN)];
        let ready = rustix::event::poll(
            &mut fds,
            Some(&Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            }),
        )
        .unwrap_or(0);
        if ready == 0 || !fds[0].revents().contains(PollFlags::IN) {
            break;
        }
        match rustix::io::read(fd.as_fd(), &mut buf[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    n
}

/// Runs the selected tests, prints KTAP and the totals; returns true if
/// none failed. `skip_all` skips every test with that reason (module
/// missing).
pub fn run_all(tests: &[&Test], skip_all: Option<&str>) -> bool {
    // Orphaned grandchildren of tests come to us, to be reaped.
    let _ = rustix::process::set_child_subreaper(Some(rustix::process::getpid()));
    println!("KTAP version 1");
    println!("1..{}", tests.len());
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for (i, t) in tests.iter().enumerate() {
        let n = i + 1;
        let t0 = Instant::now();
        let outcome = match skip_all {
            Some(reason) => Outcome::Skip(reason.to_string()),
            None => run_one(t),
        };
        match outcome {
            Outcome::Pass => {
                passed += 1;
                println!("# {} took {:.1} s", t.name, t0.elapsed().as_secs_f64());
                println!("ok {n} {}", t.name);
            }
            Outcome::Skip(m) => {
                skipped += 1;
                println!("ok {n} {} # SKIP {}", t.name, m.replace('\n', " "));
            }
            Outcome::Fail(m) => {
                failed += 1;
                for line in m.lines() {
                    println!("# {}: {line}", t.name);
                }
                println!("not ok {n} {}", t.name);
            }
        }
        let _ = std::io::stdout().flush();
    }
    println!("# {passed} passed, {failed} failed, {skipped} skipped");
    println!("{passed} passed, {failed} failed, {skipped} skipped");
    failed == 0
}

/// The tests of `all` whose name contains any of the filters in `args`
/// (words not starting with `--`); all of them without filters.
pub fn select<'a>(all: &'a [Test], args: &[String]) -> Vec<&'a Test> {
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    all.iter()
        .filter(|t| filters.is_empty() || filters.iter().any(|f| t.name.contains(f.as_str())))
        .collect()
}

/// A suite's `main`: `--list` prints the selected names, otherwise runs
/// them (every one skipped with `skip_all`'s reason if given). `args` are
/// the program's arguments without its name.
pub fn main(all: &[Test], args: &[String], skip_all: Option<&str>) -> std::process::ExitCode {
    let sel = select(all, args);
    if args.iter().any(|a| a == "--list") {
        for t in &sel {
            println!("{}", t.name);
        }
        return std::process::ExitCode::SUCCESS;
    }
    if run_all(&sel, skip_all) {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
