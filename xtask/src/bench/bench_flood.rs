//! `cargo xtask bench flood [--rates R1,R2,..] [--secs N] [--call-rate C] [--sources S]`: what a
//! flood of unique requests from one host (or `S` hosts) does to sbcd while SIPp places
//! legitimate calls from another.
//!
//! For each flood rate (datagrams a second; 0 is the baseline without a flood) a fresh release
//! sbcd (SIPp UAS behind it as the core, `[sip] workers = 2`, default `[limits]`) gets, for
//! `--secs` seconds, a flood from 127.0.0.2 (or round-robin from 127.0.1.1 .. 127.0.1.S: many
//! sources, each within its own budget, so that the global caps are what holds) (OPTIONS and INVITEs for unique users behind the box,
//! BYEs for dialogs that do not exist, every one with a new Call-ID, branch and tag: the mix of
//! the hostile test) while a SIPp UAC on 127.0.0.1 places `--call-rate` calls a second. Reported
//! per rate: the flood rate reached, sbcd's peak RSS (VmHWM), the legitimate calls' success
//! ratio, and the counters that show the drops (`rate_limited`, `cap_rejected`,
//! `unknown_dialog`).
//!
//! A benchmark: it prints, it never fails on a number. Sends only to 127.0.0.0/8.

use super::bench_sip::{build_sbcd, free_port, last_stats_row, sipp, start_sbcd, start_uas, stat};
use crate::util;
use anyhow::{bail, Context, Result};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DEFAULT_RATES: &[u32] = &[0, 5_000, 20_000];
const DEFAULT_SECS: u32 = 10;
const DEFAULT_CALL_RATE: u32 = 20;
/// The flooding host (the legitimate calls come from 127.0.0.1).
const FLOODER: [u8; 4] = [127, 0, 0, 2];

#[derive(Debug)]
struct Options {
    rates: Vec<u32>,
    secs: u32,
    call_rate: u32,
    /// Flooding hosts: 1 is 127.0.0.2, more are 127.0.1.1 ...
    sources: u32,
}

/// `cargo xtask bench flood`'s options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Flood rates in datagrams a second, separated by commas (0: the baseline without a flood)
    /// [default: 0,5000,20000].
    #[arg(long, value_name = "R1,R2,..", value_parser = rate_list)]
    rates: Option<Rates>,
    /// Seconds of flood per rate.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_SECS,
          value_parser = clap::value_parser!(u32).range(1..=120))]
    secs: u32,
    /// Legitimate calls a second.
    #[arg(long, value_name = "C", default_value_t = DEFAULT_CALL_RATE,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    call_rate: u32,
    /// Flooding hosts: 1 is 127.0.0.2, more are 127.0.1.1 ...
    #[arg(long, value_name = "S", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=250))]
    sources: u32,
}

/// `--rates`: a list like `0,5000,20000`.
#[derive(Debug, Clone)]
struct Rates(Vec<u32>);

fn rate_list(v: &str) -> Result<Rates, String> {
    v.split(',')
        .map(|r| r.trim().parse::<u32>().ok())
        .collect::<Option<Vec<_>>>()
        .map(Rates)
        .ok_or_else(|| format!("`{v}` is not a list of rates"))
}

impl Options {
    fn new(args: Args) -> Options {
        Options {
            rates: args.rates.map_or_else(|| DEFAULT_RATES.to_vec(), |r| r.0),
            secs: args.secs,
            call_rate: args.call_rate,
            sources: args.sources,
        }
    }
}

/// One flood rate's outcome.
#[derive(Debug)]
struct Outcome {
    asked: u32,
    reached: f64,
    peak_rss_kib: u64,
    calls: u64,
    successful: u64,
    counters: Vec<(String, u64)>,
}

pub fn run(args: Args) -> Result<()> {
    let options = Options::new(args);
    util::ensure_debs(&["sip-tester"])?;
    let sbcd = build_sbcd()?;
    let sbcctl = sbcd.with_file_name("sbcctl");
    let work = std::env::temp_dir().join(format!("bench-flood-{}", std::process::id()));
    std::fs::create_dir_all(&work).with_context(|| format!("create {}", work.display()))?;
    eprintln!(
        "bench flood: rates {:?} datagrams/s from {} source(s) for {} s each, {} legitimate calls/s",
        options.rates, options.sources, options.secs, options.call_rate
    );
    let mut outcomes = Vec::new();
    for &rate in &options.rates {
        let dir = work.join(format!("rate-{rate}"));
        std::fs::create_dir_all(&dir)?;
        let outcome = one_rate(&sbcd, &sbcctl, &dir, rate, &options);
        match outcome {
            Ok(o) => outcomes.push(o),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&work);
                return Err(e.context(format!("flood rate {rate}")));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    report(&outcomes, &options);
    Ok(())
}

fn one_rate(sbcd_bin: &Path, sbcctl: &Path, dir: &Path, rate: u32, o: &Options) -> Result<Outcome> {
    let uas_port = free_port()?;
    let access_port = free_port()?;
    let mut uas = start_uas(dir, uas_port)?;
    let mut sbcd = start_sbcd(
        sbcd_bin,
        dir,
        access_port,
        uas_port,
        super::bench_sip::WORKERS,
    )?;
    let pid = sbcd.0.id();
    let target = SocketAddr::from(([127, 0, 0, 1], access_port));

    let stop = Arc::new(AtomicBool::new(false));
    let flooder = {
        let (stop, sources) = (Arc::clone(&stop), o.sources);
        std::thread::spawn(move || flood(target, rate, sources, &stop))
    };
    let calls = u64::from(o.call_rate) * u64::from(o.secs);
    let stats_file = dir.join("uac.csv");
    let limit = o.secs * 3 + 30;
    let status = sipp(dir, "uac_call.xml", free_port()?)
        .arg(target.to_string())
        .args(["-s", "bench", "-key", "caller", "legit", "-d", "0"])
        .args(["-r", &o.call_rate.to_string(), "-m", &calls.to_string()])
        .args(["-trace_stat", "-stf"])
        .arg(&stats_file)
        .args(["-timeout", &format!("{limit}s"), "-timeout_error"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("run the SIPp UAC")?;
    stop.store(true, Ordering::Relaxed);
    let (sent, elapsed) = flooder
        .join()
        .map_err(|_| anyhow::anyhow!("the flood thread panicked"))??;
    if let Ok(Some(exit)) = sbcd.0.try_wait() {
        bail!("sbcd exited under the flood: {exit}");
    }
    let peak_rss_kib = peak_rss_kib(pid)?;
    let counters = counters(sbcctl, &dir.join("control.sock"))?;
    let text = std::fs::read_to_string(&stats_file)
        .with_context(|| format!("SIPp ({status}) wrote no statistics"))?;
    let stats = last_stats_row(&text);
    sbcd.stop();
    uas.stop();
    Ok(Outcome {
        asked: rate,
        reached: sent as f64 / elapsed.as_secs_f64().max(1e-3),
        peak_rss_kib,
        calls,
        successful: stat(&stats, "SuccessfulCall(C)"),
        counters,
    })
}

/// Sends the flood until `stop`, paced in 5 ms slots; returns how many and for how long.
fn flood(
    target: SocketAddr,
    rate: u32,
    sources: u32,
    stop: &AtomicBool,
) -> Result<(u64, Duration)> {
    let hosts: Vec<[u8; 4]> = if sources <= 1 {
        vec![FLOODER]
    } else {
        (1..=sources).map(|i| [127, 0, 1, i as u8]).collect()
    };
    let sockets = hosts
        .iter()
        .map(|&ip| {
            let socket = UdpSocket::bind(SocketAddr::from((ip, 0)))
                .with_context(|| format!("bind {ip:?}"))?;
            let from = socket.local_addr()?;
            Ok((socket, from))
        })
        .collect::<Result<Vec<_>>>()?;
    let started = Instant::now();
    let slot = Duration::from_millis(5);
    let per_slot = u64::from(rate) / 200;
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let slot_start = Instant::now();
        for _ in 0..per_slot {
            let (socket, from) = &sockets[(i % sockets.len() as u64) as usize];
            // A full socket buffer is the flood's problem, not the bench's.
            let _ = socket.send_to(request(i, *from, target).as_bytes(), target);
            i += 1;
        }
        if let Some(rest) = slot.checked_sub(slot_start.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    Ok((i, started.elapsed()))
}

/// The flood's `i`-th request: unique Call-ID, branch and tag (the hostile test's mix).
fn request(i: u64, from: SocketAddr, box_addr: SocketAddr) -> String {
    let (method, to_tag) = match i % 3 {
        0 => ("OPTIONS", ""),
        1 => ("INVITE", ""),
        _ => ("BYE", ";tag=gone"),
    };
    let uri = format!("sip:flood-{i}@{box_addr}");
    format!(
        "{method} {uri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {from};branch=z9hG4bK-flood-{i}\r\n\
         From: <sip:flood@{from}>;tag=f-{i}\r\n\
         To: <{uri}>{to_tag}\r\n\
         Call-ID: flood-{i}\r\n\
         CSeq: 1 {method}\r\n\
         Contact: <sip:flood@{from}>\r\n\
         Max-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// VmHWM (peak resident set) of `pid`, in KiB.
fn peak_rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc/<pid>/status")
}

/// The drop counters from `sbcctl show stats` (lines `name value`).
fn counters(sbcctl: &Path, socket: &Path) -> Result<Vec<(String, u64)>> {
    let out = Command::new(sbcctl)
        .arg("--socket")
        .arg(socket)
        .args(["show", "stats"])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {}", sbcctl.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let wanted = ["sip.rate_limited", "sip.cap_rejected", "sip.unknown_dialog"];
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let (name, value) = (parts.next()?, parts.next()?.parse().ok()?);
            wanted.contains(&name).then(|| (name.to_owned(), value))
        })
        .collect())
}

fn report(outcomes: &[Outcome], o: &Options) {
    println!();
    let from = if o.sources <= 1 {
        "127.0.0.2".to_owned()
    } else {
        format!("127.0.1.1-{}", o.sources)
    };
    println!(
        "flood from {from} against sbcd (release, 2 workers, default [limits]) while SIPp \
         places {} calls/s for {} s from 127.0.0.1",
        o.call_rate, o.secs
    );
    println!(
        "{:>12} {:>12} {:>14} {:>16} {:>14} {:>13} {:>15}",
        "flood/s asked",
        "reached",
        "peak RSS MiB",
        "calls ok",
        "rate_limited",
        "cap_rejected",
        "unknown_dialog"
    );
    for r in outcomes {
        let counter = |name: &str| {
            r.counters
                .iter()
                .find(|(n, _)| n == name)
                .map_or("-".to_owned(), |(_, v)| v.to_string())
        };
        println!(
            "{:>12} {:>12.0} {:>14.1} {:>9}/{:<6} {:>14} {:>13} {:>15}",
            r.asked,
            r.reached,
            r.peak_rss_kib as f64 / 1024.0,
            r.successful,
            r.calls,
            counter("sip.rate_limited"),
            counter("sip.cap_rejected"),
            counter("sip.unknown_dialog"),
        );
    }
}
