//! `pidfd-mem-bench`: measures pidfd_mem in the guest, and renders the report
//! on the host. See the library docs; `cargo xtask bench` runs both.
//!
//! ```text
//! pidfd-mem-bench [run] [--quick]             in the guest (root, module loaded): measure,
//!                                             progress on stderr, the JSON report on stdout
//!                                             between the marker lines
//! pidfd-mem-bench render REPORT.json OUTDIR   write OUTDIR/report.md and OUTDIR/throughput.svg,
//!                                             print the markdown
//! ```

mod guest;

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use pidfd_mem_bench::report::{self, Report};
use pidfd_mem_bench::{markdown, ratios, svg};

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pidfd-mem-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        [] | ["run"] => run(false),
        ["--quick"] | ["run", "--quick"] => run(true),
        ["render", json, dir] => render(Path::new(json), Path::new(dir)),
        _ => bail!(
            "usage: pidfd-mem-bench [run] [--quick] | pidfd-mem-bench render REPORT.json OUTDIR"
        ),
    }
}

fn run(quick: bool) -> Result<()> {
    let report = guest::run(quick)?;
    for r in ratios::compute(&report) {
        eprintln!(
            "bench: {:<40} {:>10} target >= {:<5} {}",
            r.name,
            r.value.map_or("-".into(), markdown::num),
            r.target,
            r.verdict()
        );
    }
    let json = serde_json::to_string_pretty(&report.to_json())?;
    println!("{}\n{json}\n{}", report::BEGIN, report::END);
    Ok(())
}

fn render(json: &Path, dir: &Path) -> Result<()> {
    let text =
        std::fs::read_to_string(json).with_context(|| format!("reading {}", json.display()))?;
    let body = report::extract(&text).context("no report between the markers")?;
    let value: serde_json::Value = serde_json::from_str(body).context("parsing the JSON report")?;
    let report = Report::from_json(&value).map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(dir)?;
    let md = markdown::render(&report);
    std::fs::write(dir.join("report.md"), &md)?;
    std::fs::write(dir.join("throughput.svg"), svg::render(&report))?;
    print!("{md}");
    Ok(())
}
