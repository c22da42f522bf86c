//! `cargo xtask bench sip [--step-secs N] [--rates R1,R2,..] [--sbcd PATH] [--only sbcd]`: sbcd
//! against Kamailio under SIPp. `--sbcd` runs a given sbcd binary instead of building one, and
//! `--only sbcd` skips Kamailio: to compare two builds of sbcd, run after run.
//!
//! The same SIPp UAC -> proxy -> SIPp UAS call flow (INVITE, 100, 180, 200, ACK, BYE, 200, both
//! proxies record-routing and transaction-stateful) is driven at a rising call rate, one step
//! of `--step-secs` seconds per rate, first through a release build of sbcd and then through
//! Kamailio 5.6 with `bench/kamailio.cfg`. A step counts when every call succeeded and SIPp
//! reached at least 90% of the asked rate; the stepping stops at the first step that does not.
//!
//! Reported per proxy: the highest call rate reached with zero failed (or unfinished) calls,
//! and the proxy's CPU time (user + system: the run time of every thread of every process of
//! the proxy, from `/proc/PID/task/TID/schedstat`, in nanoseconds; summed over all of
//! Kamailio's processes) per call over the rates both proxies passed, and at each of those
//! rates on its own, with the ratio sbcd / Kamailio per rate: a table, and one JSON line in
//! `out/bench/sip.json`. Both SIPp ends run on the same two cores as the proxy, so the rate is
//! the rate of the whole bench box, and the CPU per call is the fairer figure.
//!
//! This is a benchmark: it prints, it never fails on a number. It installs `sip-tester` and
//! `kamailio` when they are missing (as root), and sends only to 127.0.0.1.

use crate::util;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Rates tried by default, in calls per second.
/// The low rates show the per-call cost where neither proxy is near its limit (and the fixed
/// costs of an idle loop weigh most); the high ones find each proxy's ceiling on this box.
const DEFAULT_RATES: &[u32] = &[50, 100, 200, 400, 800, 1200, 1600, 2000, 2400];
/// How long each rate is held by default.
const DEFAULT_STEP_SECS: u32 = 4;
/// SIP worker processes (Kamailio `-n`) and threads (sbcd `[sip] workers`, each a shard) by
/// default: one per core here. `--workers N` sets both.
pub(super) const WORKERS: u32 = 2;

pub fn run(args: Args) -> Result<()> {
    let options = Options::new(args);
    util::ensure_debs(&["sip-tester", "kamailio"])?;
    let sbcd = match &options.sbcd {
        Some(path) => path.clone(),
        None => build_sbcd()?,
    };
    let work = WorkDir::create()?;
    eprintln!(
        "bench sip: rates {:?} calls/s, {} s per step, {} SIP workers per proxy",
        options.rates, options.step_secs, options.workers
    );

    let sbcd_result = bench_proxy(&ProxyKind::Sbcd(sbcd), &options, &work.path)?;
    if options.only_sbcd {
        return Ok(());
    }
    let kamailio_result = bench_proxy(&ProxyKind::Kamailio, &options, &work.path)?;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    report(&sbcd_result, &kamailio_result, options.workers);
    write_json(&sbcd_result, &kamailio_result, &options, load.trim())
}

#[derive(Debug)]
struct Options {
    rates: Vec<u32>,
    step_secs: u32,
    /// A prebuilt sbcd to run instead of building one.
    sbcd: Option<PathBuf>,
    /// Skip Kamailio (`--only sbcd`): sbcd's own figures, to compare two builds of it.
    only_sbcd: bool,
    /// SIP workers of each proxy.
    workers: u32,
}

/// `cargo xtask bench sip`'s options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seconds each rate is held.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_STEP_SECS,
          value_parser = clap::value_parser!(u32).range(1..=60))]
    step_secs: u32,
    /// Call rates to step through, separated by commas
    /// [default: 50,100,200,400,800,1200,1600,2000,2400].
    #[arg(long, value_name = "R1,R2,..", value_parser = rate_list)]
    rates: Option<Rates>,
    /// Run this sbcd binary instead of building one.
    #[arg(long, value_name = "PATH", value_parser = existing_file)]
    sbcd: Option<PathBuf>,
    /// Skip Kamailio: sbcd's own figures, to compare two builds of it.
    #[arg(long, value_name = "sbcd", value_parser = ["sbcd"])]
    only: Option<String>,
    /// SIP workers of each proxy (Kamailio processes, sbcd threads).
    #[arg(long, value_name = "N", default_value_t = WORKERS,
          value_parser = clap::value_parser!(u32).range(1..=16))]
    workers: u32,
}

/// `--rates`: a list like `100,200,400`, each above 0.
#[derive(Debug, Clone)]
struct Rates(Vec<u32>);

fn rate_list(v: &str) -> Result<Rates, String> {
    v.split(',')
        .map(|r| r.trim().parse::<u32>().ok().filter(|&r| r > 0))
        .collect::<Option<Vec<_>>>()
        .map(Rates)
        .ok_or_else(|| format!("`{v}` is not a list of rates"))
}

fn existing_file(v: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(v);
    if !path.is_file() {
        return Err(format!("no file {}", path.display()));
    }
    Ok(path)
}

impl Options {
    fn new(args: Args) -> Options {
        Options {
            rates: args.rates.map_or_else(|| DEFAULT_RATES.to_vec(), |r| r.0),
            step_secs: args.step_secs,
            sbcd: args.sbcd,
            only_sbcd: args.only.is_some(),
            workers: args.workers,
        }
    }
}

/// A temporary directory for configs, logs and SIPp statistics, removed at the end.
pub(super) struct WorkDir {
    pub(super) path: PathBuf,
}

impl WorkDir {
    pub(super) fn create() -> Result<WorkDir> {
        let path = std::env::temp_dir().join(format!("bench-sip-{}", std::process::id()));
        std::fs::create_dir_all(&path).with_context(|| format!("create {}", path.display()))?;
        Ok(WorkDir { path })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Builds sbcd in release mode and returns the binary's path.
pub(super) fn build_sbcd() -> Result<PathBuf> {
    util::run(Command::new(env!("CARGO")).current_dir(util::root()).args([
        "build",
        "--release",
        "-p",
        "sbcd",
        "--bin",
        "sbcd",
        // bench flood reads sbcd's counters with it.
        "--bin",
        "sbcctl",
    ]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| {
            if t.is_absolute() {
                t
            } else {
                util::root().join(t)
            }
        })
        .unwrap_or_else(|| util::root().join("target"));
    let bin = target.join("release/sbcd");
    if !bin.exists() {
        bail!("built sbcd but found no {}", bin.display());
    }
    Ok(bin)
}

enum ProxyKind {
    Sbcd(PathBuf),
    Kamailio,
}

impl ProxyKind {
    fn name(&self) -> &'static str {
        match self {
            ProxyKind::Sbcd(_) => "sbcd",
            ProxyKind::Kamailio => "kamailio",
        }
    }
}

/// One rate step's outcome.
#[derive(Debug, Clone)]
struct Step {
    asked: u32,
    reached: f64,
    successful: u64,
    /// The proxy's CPU time over the step, nanoseconds.
    cpu_ns: u64,
    counted: bool,
}

#[derive(Debug)]
struct ProxyResult {
    name: &'static str,
    steps: Vec<Step>,
}

impl ProxyResult {
    /// The highest rate reached by a step with zero failed calls.
    fn best_rate(&self) -> f64 {
        self.steps
            .iter()
            .filter(|s| s.counted)
            .map(|s| s.reached)
            .fold(0.0, f64::max)
    }

    /// Proxy CPU microseconds per call over the counted steps at the given rates (the rates
    /// both proxies passed, so that neither is flattered by fixed costs spread thinner).
    fn cpu_us_per_call(&self, rates: &[u32]) -> Option<f64> {
        let (ticks, calls) = self
            .steps
            .iter()
            .filter(|s| s.counted && rates.contains(&s.asked))
            .fold((0u64, 0u64), |(t, c), s| (t + s.cpu_ns, c + s.successful));
        (calls > 0).then(|| per_call_us(ticks, calls))
    }

    /// The counted step at `rate`, if there is one.
    fn counted_at(&self, rate: u32) -> Option<&Step> {
        self.steps.iter().find(|s| s.counted && s.asked == rate)
    }
}

fn bench_proxy(kind: &ProxyKind, options: &Options, work: &Path) -> Result<ProxyResult> {
    let name = kind.name();
    let dir = work.join(name);
    std::fs::create_dir_all(&dir)?;
    let uas_port = free_port()?;
    let proxy_port = free_port()?;
    let mut uas = start_uas(&dir, uas_port)?;

    let mut proxy = match kind {
        ProxyKind::Sbcd(bin) => start_sbcd(bin, &dir, proxy_port, uas_port, options.workers)?,
        ProxyKind::Kamailio => start_kamailio(&dir, proxy_port, uas_port, options.workers)?,
    };
    let pid = proxy.0.id();

    let mut steps = Vec::new();
    for &rate in &options.rates {
        let calls = u64::from(rate) * u64::from(options.step_secs);
        let before = cpu_ns_of_tree(pid);
        let stats = run_uac(&dir, proxy_port, rate, calls, options.step_secs)?;
        let cpu_ns = cpu_ns_of_tree(pid).saturating_sub(before);
        if let Ok(Some(status)) = proxy.0.try_wait() {
            bail!("{name} exited during the bench: {status}");
        }
        let successful = stat(&stats, "SuccessfulCall(C)");
        let failed = stat(&stats, "FailedCall(C)");
        let reached = stats
            .get("CallRate(C)")
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        let counted = failed == 0 && successful == calls && reached >= 0.9 * f64::from(rate);
        let step = Step {
            asked: rate,
            reached,
            successful,
            cpu_ns,
            counted,
        };
        eprintln!(
            "bench sip: {name:<8} asked {rate:>5}/s reached {reached:>7.1}/s  ok {successful:>6} \
             failed {failed:>4} unfinished {:>4}  cpu {:>6.1} us/call{}",
            calls.saturating_sub(successful + failed),
            per_call_us(cpu_ns, successful),
            if counted { "" } else { "  (stop)" }
        );
        steps.push(step);
        if !counted {
            break;
        }
    }
    proxy.stop();
    uas.stop();
    Ok(ProxyResult { name, steps })
}

fn report(sbcd: &ProxyResult, kamailio: &ProxyResult, workers: u32) {
    let show = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
    println!();
    println!("SIPp UAC -> proxy -> SIPp UAS, UDP on 127.0.0.1, {workers} SIP workers per proxy");
    println!(
        "{:<34} {:>12} {:>12} {:>16}",
        "", sbcd.name, kamailio.name, "sbcd / kamailio"
    );
    let (rs, rk) = (sbcd.best_rate(), kamailio.best_rate());
    println!(
        "{:<34} {:>12.1} {:>12.1} {:>16}",
        "calls/s reached, zero failed",
        rs,
        rk,
        show((rk > 0.0).then(|| rs / rk))
    );
    let both = common_rates(sbcd, kamailio);
    let (cs, ck) = (sbcd.cpu_us_per_call(&both), kamailio.cpu_us_per_call(&both));
    println!(
        "{:<34} {:>12} {:>12} {:>16}",
        "proxy CPU per call (us, user+sys)",
        show(cs),
        show(ck),
        show(cs.zip(ck).filter(|(_, k)| *k > 0.0).map(|(s, k)| s / k))
    );
    println!("(CPU per call over the rates both passed: {both:?} calls/s)");
    println!();
    println!(
        "{:>8} {:>16} {:>16} {:>16}",
        "calls/s", "sbcd us/call", "kamailio us/call", "sbcd / kamailio"
    );
    for &rate in &both {
        if let Some((cs, ck, ratio)) = at_rate(sbcd, kamailio, rate) {
            println!("{rate:>8} {cs:>16.1} {ck:>16.1} {ratio:>16.3}");
        }
    }
    let last = |r: &ProxyResult| r.steps.iter().filter(|s| s.counted).count() == r.steps.len();
    if last(sbcd) || last(kamailio) {
        println!("(a proxy that passed every step may go faster: try --rates with higher values)");
    }
}

fn per_call_us(ns: u64, calls: u64) -> f64 {
    if calls == 0 {
        return 0.0;
    }
    ns as f64 / 1e3 / calls as f64
}

/// The rates both proxies passed, in the order they were asked.
fn common_rates(sbcd: &ProxyResult, kamailio: &ProxyResult) -> Vec<u32> {
    sbcd.steps
        .iter()
        .filter(|s| s.counted && kamailio.counted_at(s.asked).is_some())
        .map(|s| s.asked)
        .collect()
}

/// sbcd's and Kamailio's CPU per call at one rate, and their ratio.
fn at_rate(sbcd: &ProxyResult, kamailio: &ProxyResult, rate: u32) -> Option<(f64, f64, f64)> {
    let s = sbcd.counted_at(rate)?;
    let k = kamailio.counted_at(rate)?;
    let (cs, ck) = (
        per_call_us(s.cpu_ns, s.successful),
        per_call_us(k.cpu_ns, k.successful),
    );
    (ck > 0.0).then(|| (cs, ck, cs / ck))
}

/// One JSON line in `out/bench/sip.json` (replaced by each run).
fn write_json(
    sbcd: &ProxyResult,
    kamailio: &ProxyResult,
    options: &Options,
    load: &str,
) -> Result<()> {
    let workers = options.workers;
    let num = |v: Option<f64>| v.map_or("null".to_owned(), |v| format!("{v:.3}"));
    let both = common_rates(sbcd, kamailio);
    let per_rate = both
        .iter()
        .filter_map(|&r| {
            let (cs, ck, ratio) = at_rate(sbcd, kamailio, r)?;
            Some(format!(
                "{{\"rate\":{r},\"sbcd_us_per_call\":{cs:.1},\"kamailio_us_per_call\":{ck:.1},\"ratio\":{ratio:.3}}}"
            ))
        })
        .collect::<Vec<_>>()
        .join(",");
    let (cs, ck) = (sbcd.cpu_us_per_call(&both), kamailio.cpu_us_per_call(&both));
    let rates = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let json = format!(
        "{{\"bench\":\"sip\",\"workers\":{workers},\"step_secs\":{},\"rates_asked\":[{}],\"common_rates\":[{}],\"sbcd_best_rate\":{:.1},\"kamailio_best_rate\":{:.1},\"sbcd_us_per_call\":{},\"kamailio_us_per_call\":{},\"ratio\":{},\"per_rate\":[{per_rate}],\"loadavg_at_end\":\"{load}\"}}\n",
        options.step_secs,
        rates(&options.rates),
        rates(&both),
        sbcd.best_rate(),
        kamailio.best_rate(),
        num(cs),
        num(ck),
        num(cs.zip(ck).filter(|(_, k)| *k > 0.0).map(|(s, k)| s / k)),
    );
    let out_dir = util::root().join("out/bench");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("create {}", out_dir.display()))?;
    let path = out_dir.join("sip.json");
    std::fs::write(&path, json).with_context(|| format!("write {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

/// A child process killed when dropped (a bench interrupted by an error leaks nothing).
pub(super) struct Guard(pub(super) Child);

impl Guard {
    pub(super) fn new(child: Child) -> Guard {
        Guard(child)
    }

    /// SIGTERM (Kamailio's main process then stops its children), then wait.
    pub(super) fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            self.stop();
        }
    }
}

fn scenario(name: &str) -> PathBuf {
    util::root().join("crates/sbcd/tests/scenarios").join(name)
}

/// SIPp answering every call (`uas_answer.xml`) on 127.0.0.1:`port`, once it is listening;
/// stopped when the guard is dropped.
pub(super) fn start_uas(dir: &Path, port: u16) -> Result<Guard> {
    let mut uas = Guard::new(
        sipp(dir, "uas_answer.xml", port)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start the SIPp UAS (sipp)")?,
    );
    wait_bound(port, &mut uas.0, "SIPp UAS")?;
    Ok(uas)
}

pub(super) fn sipp(dir: &Path, scenario_file: &str, port: u16) -> Command {
    let mut cmd = Command::new("sipp");
    cmd.current_dir(dir)
        .arg("-sf")
        .arg(scenario(scenario_file))
        .args(["-i", "127.0.0.1", "-p", &port.to_string(), "-nostdin"])
        .stdin(Stdio::null());
    cmd
}

/// Runs one rate step and returns SIPp's final statistics row.
pub(super) fn run_uac(
    dir: &Path,
    proxy_port: u16,
    rate: u32,
    calls: u64,
    step_secs: u32,
) -> Result<HashMap<String, String>> {
    let stats = dir.join(format!("uac-{rate}.csv"));
    // A stalled run ends here; its unfinished calls count as lost.
    let limit = step_secs * 2 + 10;
    let status = sipp(dir, "uac_call.xml", free_port()?)
        .arg(format!("127.0.0.1:{proxy_port}"))
        .args(["-s", "bench", "-key", "caller", "bench", "-d", "0"])
        .args(["-r", &rate.to_string(), "-m", &calls.to_string()])
        .args(["-l", &(rate * 2).to_string()])
        // A proxy with several workers may relay a 180 after the 200 that followed it (legal
        // over UDP); SIPp would abort such a call as unexpected. Go on instead: a call still
        // fails when an expected message never comes.
        .args(["-default_behaviors", "all,-abortunexp"])
        .args(["-trace_stat", "-stf"])
        .arg(&stats)
        .args(["-timeout", &format!("{limit}s"), "-timeout_error"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("run the SIPp UAC")?;
    let text = std::fs::read_to_string(&stats)
        .with_context(|| format!("SIPp ({status}) wrote no statistics"))?;
    Ok(last_stats_row(&text))
}

pub(super) fn last_stats_row(csv: &str) -> HashMap<String, String> {
    let mut lines = csv.lines().filter(|l| !l.trim().is_empty());
    let (Some(header), Some(last)) = (lines.next(), lines.next_back()) else {
        return HashMap::new();
    };
    header
        .split(';')
        .zip(last.split(';'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

pub(super) fn stat(stats: &HashMap<String, String>, name: &str) -> u64 {
    stats
        .get(name)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

pub(super) fn start_sbcd(
    bin: &Path,
    dir: &Path,
    access_port: u16,
    uas_port: u16,
    workers: u32,
) -> Result<Guard> {
    start_sbcd_under(&[], bin, dir, access_port, uas_port, workers)
}

/// [`start_sbcd`], run by the command `under` (a program and its arguments, the sbcd binary and
/// its own arguments after them; none: sbcd itself), as `bench daemon` runs it under valgrind.
pub(super) fn start_sbcd_under(
    under: &[String],
    bin: &Path,
    dir: &Path,
    access_port: u16,
    uas_port: u16,
    workers: u32,
) -> Result<Guard> {
    let core_port = free_port()?;
    let config = dir.join("sbc.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nname = \"bench\"\n\n\
             [[listen]]\nrealm = \"access\"\ntransport = \"udp\"\naddr = \"127.0.0.1:{access_port}\"\n\n\
             [[listen]]\nrealm = \"core\"\ntransport = \"udp\"\naddr = \"127.0.0.1:{core_port}\"\n\n\
             [[upstream]]\nuri = \"sip:127.0.0.1:{uas_port};transport=udp\"\npriority = 1\n\n\
             [control]\nsocket = \"{}\"\n\n[state]\ndir = \"{}\"\n\n[panel]\nboard = \"sim\"\n\n\
             [sip]\nworkers = {workers}\n",
            dir.join("control.sock").display(),
            dir.join("state").display(),
        ),
    )?;
    let mut command = match under.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(bin);
            command
        }
        None => Command::new(bin),
    };
    let mut child = command
        .arg("--config")
        .arg(&config)
        // Calls are logged at info; a benchmark measures the proxy, not its logging.
        .env("SBCD_LOG", "warn,sbcd::daemon=info")
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    let stderr = child.stderr.take().context("sbcd stderr")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("sbcd: listening") {
                let _ = tx.send(());
            }
        }
    });
    let mut guard = Guard::new(child);
    if rx.recv_timeout(Duration::from_secs(30)).is_err() {
        let status = guard.0.try_wait().ok().flatten();
        bail!("sbcd did not log `sbcd: listening` within 30 s (exit: {status:?})");
    }
    Ok(guard)
}

fn start_kamailio(dir: &Path, port: u16, uas_port: u16, workers: u32) -> Result<Guard> {
    let config = util::root().join("bench/kamailio.cfg");
    let log = std::fs::File::create(dir.join("kamailio.log"))?;
    let mut child = Command::new("kamailio")
        .arg("-f")
        .arg(&config)
        .args(["-DD", "-E", "-m", "256", "-M", "16"])
        .args(["-n", &workers.to_string()])
        .args(["-l", &format!("udp:127.0.0.1:{port}")])
        .args(["-A", &format!("UPSTREAM=\"sip:127.0.0.1:{uas_port}\"")])
        .arg("-Y")
        .arg(dir)
        .arg("-w")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .context("start kamailio")?;
    wait_bound(port, &mut child, "kamailio").map_err(|e| {
        let log = std::fs::read_to_string(dir.join("kamailio.log")).unwrap_or_default();
        e.context(format!("kamailio log:\n{log}"))
    })?;
    Ok(Guard::new(child))
}

/// Waits until something has bound UDP `port` on 127.0.0.1 (the process is up and listening).
pub(super) fn wait_bound(port: u16, child: &mut Child, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if UdpSocket::bind(("127.0.0.1", port)).is_err() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            bail!("{what} exited before listening: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("{what} did not bind 127.0.0.1:{port} within 30 s")
}

/// A port on 127.0.0.1 free for UDP (and TCP) right now.
pub(super) fn free_port() -> Result<u16> {
    for _ in 0..100 {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port on 127.0.0.1")
}

/// CPU time (user + system, nanoseconds) of every thread of `pid` and of all its descendants
/// (Kamailio's workers are its children). Read from each thread's `schedstat` (run time in
/// nanoseconds; `/proc/PID/stat` counts 10 ms ticks, too coarse for a few hundred calls).
/// Both proxies' threads live as long as the proxy, so no exited thread's time goes missing.
fn cpu_ns_of_tree(pid: u32) -> u64 {
    let procs = all_processes();
    let mut total = 0;
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        if procs.contains_key(&p) {
            total += cpu_ns_of_process(p);
        }
        frontier.extend(
            procs
                .iter()
                .filter(|(_, (ppid, _))| *ppid == p)
                .map(|(child, _)| *child),
        );
    }
    total
}

/// The run time of every thread of `pid`, nanoseconds.
fn cpu_ns_of_process(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// pid -> (ppid, utime + stime) for every process in /proc.
fn all_processes() -> HashMap<u32, (u32, u64)> {
    let mut out = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The command name may hold spaces and parentheses: the fields start after the last ')'.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // fields[0] is the state (field 3): ppid is field 4, utime 14, stime 15.
        let num = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        if let (Some(ppid), Some(utime), Some(stime)) = (num(1), num(11), num(12)) {
            out.insert(pid, (ppid as u32, utime + stime));
        }
    }
    out
}
