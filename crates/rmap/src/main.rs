//! `rmap`: look at, copy, watch and share another process's memory with
//! pidfd_mem (contract: `shared/spec/pidfd_mem.md`; design: `DESIGN.md`).

mod addr;
mod copy;
mod demo;
mod errors;
mod helper;
mod live;
mod maps;
mod ops;
mod share;
mod view;

use std::io::{self, IsTerminal};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::addr::{AddrExpr, RangeExpr};
use crate::errors::{classify, Code};

const EXIT_CODES: &str = "\
Exit codes:
  0  ok
  1  other failure (including SIGBUS seen by watch/attach)
  2  bad input: usage, an address, range or byte string that does not parse or resolve
  3  permission: EPERM/EACCES (no ptrace rights over the target, read-only grant)
  4  the target is gone (ESRCH: no such process, or it exited)
  5  the pidfd_mem module is missing (watch, share, attach, demo need it)";

const MAIN_HELP: &str = "\
Addresses: 0x7f12345000 (hex), 139716000000 (decimal), [heap], [stack], [vdso],
  [heap]+0x100, a mapped file by path, basename or prefix plus offsets
  (libc.so.6+0x1000, libc+0x1000), resolved from /proc/PID/maps.
Ranges: START-END or START..END (END excluded), or a region name alone ([heap]).

Without the module (no /dev/pidfd_mem), maps, read, write and dump still work
through process_vm_readv/process_vm_writev and say so once on stderr.
Load it, as root from the project's top directory, with
`make -C kmod KDIR=/lib/modules/$(uname -r)/build && insmod kmod/pidfd_mem.ko`,
or try rmap in a VM with `cargo xtask run -- target/release/rmap ...`.

Examples:
  rmap maps 1234
  rmap read 1234 '[heap]+0x40' 64
  rmap read 1234 0x7f0000001000 4096 --raw > page.bin
  rmap write 1234 libc.so.6+0x1f0000 --hex 'de ad be ef'
  rmap watch 1234 '[stack]' 128 --interval 200
  rmap dump 1234 --range '[heap]' -o heap.bin
  rmap share 1234 --range 0x7f0000000000-0x7f0000010000 --socket /tmp/r.sock --read-only
  rmap attach --socket /tmp/r.sock
  rmap demo
";

#[derive(Parser, Debug)]
#[command(
    name = "rmap",
    version,
    about = "Look at, copy, watch and share another process's memory (pidfd_mem)",
    after_help = format!("{MAIN_HELP}\n{EXIT_CODES}"),
)]
struct Cli {
    /// Machine-readable JSON on stdout (messages stay on stderr)
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    cmd: Cmd,
}

/// A process id (1..=2^31-1).
fn parse_pid(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a process id (a number such as 1234)"))?;
    if n == 0 || i32::try_from(n).is_err() {
        return Err(format!("{n} is not a valid process id"));
    }
    Ok(n)
}

/// Bytes given in hex on the command line.
#[derive(Clone, Debug)]
struct HexBytes(Vec<u8>);

fn parse_hex(s: &str) -> Result<HexBytes, errors::BadInput> {
    addr::parse_hex_bytes(s).map(HexBytes)
}

#[derive(Args, Debug, Clone)]
struct LiveArgs {
    /// Refresh every MS milliseconds
    #[arg(long, value_name = "MS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    interval: u64,
    /// Stop after N refreshes (default: until interrupted)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
}

impl LiveArgs {
    fn interval(&self) -> Duration {
        Duration::from_millis(self.interval)
    }
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// List the target's regions with their kind (anon, heap, stack, file, shmem, memfd, hugetlb, vdso, ...)
    #[command(
        after_help = "Examples:\n  rmap maps 1234\n  rmap maps 1234 --json | jq '.[] | select(.kind == \"heap\")'"
    )]
    Maps {
        /// Target process id
        #[arg(value_parser = parse_pid)]
        pid: u32,
    },
    /// Copy LEN bytes at ADDR out of the target
    #[command(
        after_help = "Prints a hexdump on a terminal and raw bytes otherwise, unless --hex or --raw\nsays.\n\nExamples:\n  rmap read 1234 '[heap]' 64\n  rmap read 1234 0x7f0000001000 4k --raw > page.bin\n  rmap read 1234 libc.so.6+0 4 --hex"
    )]
    Read {
        /// Target process id
        #[arg(value_parser = parse_pid)]
        pid: u32,
        /// Address (0x..., decimal, [heap]+0x10, libc.so.6+0x1000)
        #[arg(value_parser = addr::parse_addr)]
        addr: AddrExpr,
        /// Length (64, 0x1000, 4k, 1M; at most 1 GiB)
        #[arg(value_parser = addr::parse_len)]
        len: u64,
        /// Hexdump, even when stdout is not a terminal
        #[arg(long, conflicts_with = "raw")]
        hex: bool,
        /// Raw bytes, even on a terminal
        #[arg(long)]
        raw: bool,
    },
    /// Copy bytes into the target at ADDR
    #[command(
        after_help = "Examples:\n  rmap write 1234 '[heap]+0x40' --hex 'de ad be ef'\n  rmap write 1234 0x7f0000001000 --file patch.bin\n  printf 'hi' | rmap write 1234 0x7f0000001000 --file -"
    )]
    Write {
        /// Target process id
        #[arg(value_parser = parse_pid)]
        pid: u32,
        /// Address (0x..., decimal, [heap]+0x10, libc.so.6+0x1000)
        #[arg(value_parser = addr::parse_addr)]
        addr: AddrExpr,
        /// The bytes, in hex: 'deadbeef', 'de ad be ef', 'de:ad:be:ef'
        #[arg(long, value_name = "BYTES", value_parser = parse_hex, required_unless_present = "file", conflicts_with = "file")]
        hex: Option<HexBytes>,
        /// Take the bytes from file F (`-` for stdin)
        #[arg(long, value_name = "F")]
        file: Option<PathBuf>,
    },
    /// Show LEN bytes at ADDR live through a mirror (needs the module)
    #[command(
        after_help = "On a terminal the view is redrawn in place and changed bytes are highlighted;\notherwise each refresh is printed in turn. Pages that cannot be read (SIGBUS)\nshow as -- and make the exit status 1; the target's exit makes it 4.\n\nExamples:\n  rmap watch 1234 '[stack]' 128\n  rmap watch 1234 0x7f0000001000 64 --interval 100 --count 10 --json"
    )]
    Watch {
        /// Target process id
        #[arg(value_parser = parse_pid)]
        pid: u32,
        /// Address (0x..., decimal, [heap]+0x10, libc.so.6+0x1000)
        #[arg(value_parser = addr::parse_addr)]
        addr: AddrExpr,
        /// Length (64, 0x100, 4k; at most 1 MiB)
        #[arg(value_parser = addr::parse_len)]
        len: u64,
        #[command(flatten)]
        live: LiveArgs,
    },
    /// Save whole regions of the target to a file
    #[command(
        after_help = "Without --range, FILE holds every readable region one after the other (the\nlisting printed says where each starts in FILE); regions without read\npermission and [vsyscall] are skipped. With --range, FILE is the range byte\nfor byte (file offset = address - START). Pages that cannot be read are\nwritten as zeros and listed, not fatal. A progress bar shows on a terminal.\n\nExamples:\n  rmap dump 1234 -o all.bin\n  rmap dump 1234 --range '[heap]' -o heap.bin\n  rmap dump 1234 --range 0x7f0000000000-0x7f0000100000 -o part.bin --json"
    )]
    Dump {
        /// Target process id
        #[arg(value_parser = parse_pid)]
        pid: u32,
        /// Only this range (START-END, START..END, or a region name)
        #[arg(long, value_name = "A-B", value_parser = addr::parse_range)]
        range: Option<RangeExpr>,
        /// Output file (`-` for stdout)
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
    /// Expose a range of the target to other processes over a unix socket (needs the module)
    #[command(
        after_help = "Opens pidfd_mem on PID, grants the page-aligned cover of the range at mem\noffset 0, and hands the access fd to every client that connects (SCM_RIGHTS),\nwith a 64-byte header describing the window in the same message (see\nsrc/share.rs). Runs until the target exits (exit 4), --max-clients is reached,\nor it is interrupted.\n\nExamples:\n  rmap share 1234 --range '[heap]' --socket /tmp/heap.sock --read-only --lock\n  rmap attach --socket /tmp/heap.sock"
    )]
    Share {
        /// Target process id
        #[arg(value_parser = parse_pid)]
        pid: u32,
        /// The range to share (START-END, START..END, or a region name)
        #[arg(long, value_name = "A-B", value_parser = addr::parse_range)]
        range: RangeExpr,
        /// Unix socket path to listen on
        #[arg(long, value_name = "PATH")]
        socket: PathBuf,
        /// Grant read-only (clients cannot write, contract A1)
        #[arg(long)]
        read_only: bool,
        /// PIDFD_MEM_LOCK after granting: the window can no longer be changed or revoked (contract K1)
        #[arg(long)]
        lock: bool,
        /// Stop after serving N clients
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        max_clients: Option<u64>,
    },
    /// Receive an access fd from `rmap share` and show the window live
    #[command(
        after_help = "Shows the shared range (its first 4 KiB) like watch. SIGBUS (a revoked\nwindow, a hole) shows as -- and makes the exit status 1; the target's exit\nmakes it 4.\n\nExamples:\n  rmap attach --socket /tmp/heap.sock\n  rmap attach --socket /tmp/heap.sock --count 1 --json"
    )]
    Attach {
        /// Unix socket path of `rmap share`
        #[arg(long, value_name = "PATH")]
        socket: PathBuf,
        #[command(flatten)]
        live: LiveArgs,
    },
    /// Show pidfd_mem end to end in a few seconds: share, live updates, revoke (needs the module)
    Demo,
    /// The demo's peer (started by `rmap demo`)
    #[command(hide = true)]
    DemoPeer {
        #[arg(long)]
        socket: PathBuf,
    },
    /// A target for tests: prints where its buffers are, then waits
    #[command(hide = true)]
    TargetHelper,
}

/// What commands need from the command line besides their own arguments.
pub struct Ctx {
    /// `--json`.
    pub json: bool,
    /// stdout is a terminal.
    pub tty_out: bool,
    /// stderr is a terminal.
    pub tty_err: bool,
}

fn run(cli: Cli) -> anyhow::Result<Code> {
    let ctx = Ctx {
        json: cli.json,
        tty_out: io::stdout().is_terminal(),
        tty_err: io::stderr().is_terminal(),
    };
    match cli.cmd {
        Cmd::Maps { pid } => ops::maps(&ctx, pid),
        Cmd::Read {
            pid,
            addr,
            len,
            hex,
            raw,
        } => ops::read(&ctx, pid, &addr, len, hex, raw),
        Cmd::Write {
            pid,
            addr,
            hex,
            file,
        } => ops::write(&ctx, pid, &addr, hex.map(|h| h.0), file),
        Cmd::Dump { pid, range, output } => ops::dump(&ctx, pid, range.as_ref(), &output),
        Cmd::Watch {
            pid,
            addr,
            len,
            live,
        } => live::watch(&ctx, pid, &addr, len, &live),
        Cmd::Share {
            pid,
            range,
            socket,
            read_only,
            lock,
            max_clients,
        } => share::share(
            &ctx,
            share::ShareOpts {
                pid,
                range: &range,
                socket: &socket,
                read_only,
                lock,
                max_clients,
            },
        ),
        Cmd::Attach { socket, live } => share::attach(&ctx, &socket, &live),
        Cmd::Demo => demo::demo(&ctx),
        Cmd::DemoPeer { socket } => demo::peer(&socket),
        Cmd::TargetHelper => helper::run(),
    }
}

fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        // Usage errors exit 2, --help and --version 0 (clap's convention).
        Err(e) => e.exit(),
    };
    let code = match run(cli) {
        Ok(code) => code,
        // The reader went away (`rmap read ... | head`): nothing to report.
        Err(e) if broken_pipe(&e) => Code::Ok,
        Err(e) => {
            eprintln!("rmap: error: {e:#}");
            classify(&e)
        }
    };
    std::process::exit(code.as_i32());
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_lists_exit_codes_and_examples() {
        let help = Cli::command().render_long_help().to_string();
        for needle in [
            "Exit codes:",
            "5  the pidfd_mem module",
            "rmap read 1234",
            "insmod",
        ] {
            assert!(help.contains(needle), "{needle}: {help}");
        }
    }

    #[test]
    fn usage_errors() {
        let p = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("rmap").chain(args.iter().copied()))
        };
        assert!(p(&["read", "12", "0x10", "4"]).is_ok());
        assert!(p(&["read", "12", "[heap]+0x10", "4k", "--raw"]).is_ok());
        for bad in [
            &["read", "0", "0x10", "4"][..],
            &["read", "abc", "0x10", "4"],
            &["read", "12", "zz zz", "4"],
            &["read", "12", "0x10", "0"],
            &["read", "12", "0x10", "4", "--hex", "--raw"],
            &["write", "12", "0x10"],
            &["write", "12", "0x10", "--hex", "abc"],
            &["write", "12", "0x10", "--hex", "ab", "--file", "x"],
            &["dump", "12"],
            &["watch", "12", "0x10", "4", "--interval", "0"],
            &["share", "12", "--socket", "/tmp/x"],
            &["maps", "99999999999"],
        ] {
            let e = p(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}: {e}");
        }
        assert_eq!(p(&["--help"]).unwrap_err().exit_code(), 0);
    }
}
