//! `cargo xtask bench daemon [--rate R] [--secs S] [--workers N] [--sbcd PATH]`: the whole
//! daemon's instructions per call under SIPp, a figure that does not move with a noisy machine.
//!
//! `bench core` counts the pure core alone; `bench sip` measures CPU time, which moves by 15 %
//! or more between runs on a shared VM. This runs the release sbcd under `valgrind
//! --tool=callgrind` (every thread) with the SIPp flow of `bench sip` (INVITE, 100, 180, 200,
//! ACK, BYE, 200 through sbcd, record-routed) at `--rate` calls per second, twice: for
//! `--secs` seconds and for twice that, each with a fresh sbcd. Instructions per call = the
//! difference of the two runs' totals over the difference of their calls: start-up and stop
//! cancel, and what the daemon does per second at that rate (timers, heartbeats of its idle
//! threads) is counted in, spread over the calls. The same difference is given for a few
//! functions (inclusive): the core's `Proxy::handle_input`, the call log line, the engine's
//! `flush`. The rate must be low enough for sbcd to keep up under valgrind (about 50 times
//! slower): the default 5 calls/s takes about a quarter of a core.
//!
//! A benchmark: it prints (and writes one JSON line to `out/bench/daemon.json`), it never fails
//! on a number. It installs `sip-tester` and `valgrind` when missing; sends only to 127.0.0.1.

use super::bench_sip::{
    build_sbcd, free_port, run_uac, start_sbcd_under, start_uas, stat, Guard, WorkDir,
};
use crate::util;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The functions whose inclusive instructions per call are reported beside the total, by a
/// part of their name as `callgrind_annotate` prints it.
const PARTS: &[(&str, &str)] = &[
    (
        "the core (Proxy::handle_input)",
        "proxy::engine::Proxy::handle_input",
    ),
    (
        "the call's log line (log_event)",
        "sbcd::sip_core::log_event",
    ),
    ("sending (Engine::flush)", "sbcd::engine::Engine::flush"),
];

/// `cargo xtask bench daemon`'s options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Calls per second (sbcd runs about 50 times slower under valgrind).
    #[arg(long, value_name = "R", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=50))]
    rate: u32,
    /// Seconds of the shorter run (the longer one is twice as long).
    #[arg(long, value_name = "S", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(5..=60))]
    secs: u32,
    /// sbcd's SIP workers.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=16))]
    workers: u32,
    /// Run this sbcd binary instead of building one.
    #[arg(long, value_name = "PATH")]
    sbcd: Option<PathBuf>,
}

/// One run's counts.
struct Run {
    calls: u64,
    total: u64,
    parts: Vec<u64>,
}

pub fn run(args: Args) -> Result<()> {
    util::ensure_debs(&["sip-tester", "valgrind"])?;
    let sbcd = match args.sbcd {
        Some(path) => path,
        None => build_sbcd()?,
    };
    eprintln!(
        "bench daemon: sbcd under callgrind, {} calls/s for {} s and for {} s, {} SIP worker(s)",
        args.rate,
        args.secs,
        2 * args.secs,
        args.workers
    );
    let short = one_run(&sbcd, args.rate, args.secs, args.workers)?;
    let long = one_run(&sbcd, args.rate, 2 * args.secs, args.workers)?;
    let calls = long.calls.saturating_sub(short.calls);
    if calls == 0 {
        bail!("the longer run completed no more calls than the shorter one");
    }
    let per_call = |a: u64, b: u64| b.saturating_sub(a) as f64 / calls as f64;
    let total = per_call(short.total, long.total);
    println!(
        "sbcd, {} worker(s), {} calls/s: {:.0} instructions per call ({} and {} calls; {} and {} instructions)",
        args.workers, args.rate, total, short.calls, long.calls, short.total, long.total
    );
    let mut json = format!(
        "{{\"bench\":\"daemon\",\"rate\":{},\"workers\":{},\"calls\":[{},{}],\"instructions_per_call\":{total:.0}",
        args.rate, args.workers, short.calls, long.calls
    );
    for (i, (label, _)) in PARTS.iter().enumerate() {
        let part = per_call(short.parts[i], long.parts[i]);
        println!(
            "  {label:<34} {part:>8.0}  {:>5.1} %",
            100.0 * part / total.max(1.0)
        );
        json.push_str(&format!(",\"{}\":{part:.0}", PARTS[i].1));
    }
    json.push_str("}\n");
    let out = util::root().join("out/bench");
    std::fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;
    let path = out.join("daemon.json");
    std::fs::write(&path, json).with_context(|| format!("write {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

/// sbcd under callgrind with SIPp calling through it for `secs` seconds.
fn one_run(sbcd: &Path, rate: u32, secs: u32, workers: u32) -> Result<Run> {
    let work = WorkDir::create()?;
    let dir = &work.path;
    let uas_port = free_port()?;
    let proxy_port = free_port()?;
    let _uas = start_uas(dir, uas_port)?;
    let profile = dir.join("callgrind.out");
    let valgrind = [
        "valgrind".to_string(),
        "--tool=callgrind".to_string(),
        format!("--callgrind-out-file={}", profile.display()),
    ];
    let mut proxy = start_sbcd_under(&valgrind, sbcd, dir, proxy_port, uas_port, workers)?;
    let stats = run_uac(dir, proxy_port, rate, u64::from(rate * secs), secs)?;
    stop_and_wait(&mut proxy)?;
    let calls = stat(&stats, "SuccessfulCall(C)");
    let text = std::fs::read_to_string(&profile)
        .with_context(|| format!("callgrind wrote no {}", profile.display()))?;
    let total = totals(&text).context("no totals in callgrind's output")?;
    let parts = inclusive(&profile)?;
    // Kept beside `bench core`'s, for reading with callgrind_annotate: the difference of the
    // two runs' self costs by function is what a call costs where.
    let out = util::root().join("out/bench");
    std::fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;
    let kept = out.join(format!("callgrind.daemon.{secs}.out"));
    std::fs::copy(&profile, &kept).with_context(|| format!("copy to {}", kept.display()))?;
    eprintln!("bench daemon: {secs} s: {calls} calls, {total} instructions");
    Ok(Run {
        calls,
        total,
        parts,
    })
}

/// SIGTERM, then up to a minute for valgrind to write its profile and exit.
fn stop_and_wait(proxy: &mut Guard) -> Result<()> {
    let _ = Command::new("kill")
        .args(["-TERM", &proxy.0.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if proxy.0.try_wait()?.is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("sbcd under valgrind did not stop within 60 s of SIGTERM")
}

/// The `totals:` (or `summary:`) line of a callgrind output file.
fn totals(text: &str) -> Option<u64> {
    text.lines()
        .rev()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })
        .and_then(|n| n.trim().parse().ok())
}

/// The inclusive instructions of each of [`PARTS`] (0 when it is not in the profile).
fn inclusive(profile: &Path) -> Result<Vec<u64>> {
    let out = Command::new("callgrind_annotate")
        .arg("--inclusive=yes")
        .arg("--threshold=100")
        .arg(profile)
        .stderr(Stdio::null())
        .output()
        .context("run callgrind_annotate")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(PARTS.iter().map(|(_, name)| part_of(&text, name)).collect())
}

/// The inclusive instructions of function `name` in `callgrind_annotate --inclusive=yes`'s
/// output. The annotator splits a function by the source file of the code inlined into it
/// (`1,234 (12.3%)  file:function`, one line per file), the pieces overlapping; the largest is
/// the function's own file, as `bench core` reads it. Call sites (`=>`) are not the function.
fn part_of(annotate: &str, name: &str) -> u64 {
    let own = format!(":{name}");
    annotate
        .lines()
        .filter(|l| !l.contains("=>"))
        .filter(|l| {
            l.find(&own).is_some_and(|at| {
                let after = &l[at + own.len()..];
                after.is_empty() || after.starts_with(' ')
            })
        })
        .filter_map(|l| l.split_whitespace().next()?.replace(',', "").parse().ok())
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_totals_line_is_read_and_a_function_is_told_from_its_call_sites_and_namesakes() {
        assert_eq!(totals("events: Ir\nfn=x\n1 2\ntotals: 1234\n"), Some(1234));
        assert_eq!(totals("summary: 99\n"), Some(99));
        assert_eq!(totals("events: Ir\n"), None);
        let annotate = "\
23,326,437 (79.2%)  /src/engine/mod.rs:proxy::engine::Proxy::handle_input
29,000,000 (98.0%)  => /src/engine/mod.rs:proxy::engine::Proxy::handle_input (1,201x)
   400,000 ( 1.4%)  /src/msg.rs:proxy::engine::Proxy::handle_input [/bin/sbcd]
 9,000,000 ( 3.8%)  /src/x.rs:proxy::engine::Proxy::handle_input_twice
 1,113,002 ( 3.8%)  /src/sip_core.rs:sbcd::sip_core::log_event [/bin/sbcd]";
        assert_eq!(
            part_of(annotate, "proxy::engine::Proxy::handle_input"),
            23_326_437
        );
        assert_eq!(part_of(annotate, "sbcd::sip_core::log_event"), 1_113_002);
        assert_eq!(part_of(annotate, "sbcd::engine::Engine::flush"), 0);
    }
}
