//! The pure core at scale (`harness = false`): per-message latency of the
//! INVITE-180-200-ACK-BYE-200 call (`common/mod.rs`) through [`proxy::Proxy`] on an empty box
//! and on one holding `SCALE_BENCH_BINDINGS` bindings (default 100 000) and
//! `SCALE_BENCH_DIALOGS` confirmed dialogs (default 20 000), and the time of
//! `Proxy::registrations()` (`show registrations`) and `Proxy::calls()` (`show calls`) there.
//!
//! The tables are filled through `handle_input`, as on the wire: every binding a phone's
//! REGISTER answered 200 by the core, every dialog a phone's INVITE answered 200 and ACKed,
//! then the clock moves 40 s so the fill's transactions end. Each box gets
//! `SCALE_BENCH_WARMUP` calls (1000) and `SCALE_BENCH_CALLS` calls (10 000), the clock moving
//! 100 ms per call, the measured calls in 10 rounds alternating between the two boxes (a
//! machine busy for a while slows both alike); a message's latency is the wall time of one engine step (handle_input,
//! then every transmit and event taken out), read with `Instant` around it. Wall time: a busy
//! machine inflates it, the max most.
//!
//! `show registrations` is timed at each doubling of both tables on the way up (fastest of 3),
//! and left out once its next run is expected to take longer than
//! `SCALE_BENCH_SHOW_BUDGET_SECS` (30): today it looks at every dialog for every binding, so
//! at full size it is extrapolated from the growth per doubling, and said so.
//!
//! A benchmark: it prints (and writes one JSON line to `out/bench/scale.json`), it never
//! asserts a number.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// The live-bytes allocator is a `GlobalAlloc` impl, which is unsafe to implement and to call
// through; nothing else in this file is unsafe.
#![allow(unsafe_code)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

/// The system allocator, keeping the bytes live (asked for and not yet freed): what the
/// tables hold, where the resident set also keeps what the fill's transactions freed.
struct Live;

static LIVE: AtomicI64 = AtomicI64::new(0);

fn size(layout: Layout) -> i64 {
    i64::try_from(layout.size()).unwrap_or(i64::MAX)
}

unsafe impl GlobalAlloc for Live {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(size(layout), Ordering::Relaxed);
        // SAFETY: the caller's layout goes to the system allocator unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(size(layout), Ordering::Relaxed);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(size(layout), Ordering::Relaxed);
        // SAFETY: `ptr` came from this allocator (the system's) with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            i64::try_from(new_size).unwrap_or(i64::MAX) - size(layout),
            Ordering::Relaxed,
        );
        // SAFETY: `ptr` came from this allocator with `layout`; the caller vouches for
        // `new_size`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Live = Live;

fn live_bytes() -> i64 {
    LIVE.load(Ordering::Relaxed)
}

use common::{env_u64, percentile, Driver, STEPS};

/// Phones of the measured calls: past the fill's.
const MEASURE_PHONES: u32 = 500_000;

struct Run {
    /// All messages, sorted (ns).
    all: Vec<u64>,
    /// Per step of the call, sorted (ns).
    steps: Vec<Vec<u64>>,
    failed: u32,
}

/// Calls `first..first + n` on `driver`, recording latencies when `record`. Returns the
/// failed calls.
fn run_calls(driver: &mut Driver, first: u32, n: u32, record: bool) -> u32 {
    let step = Duration::from_millis(100);
    if record && driver.latencies.is_none() {
        driver.latencies = Some(Default::default());
    }
    let mut failed = 0;
    for i in first..first + n {
        if !driver.full_call(MEASURE_PHONES + i % 1000, &format!("measure-{i}")) {
            failed += 1;
        }
        driver.advance(step);
    }
    failed
}

/// The latencies `driver` recorded, sorted.
fn take_run(driver: &mut Driver, failed: u32) -> Run {
    let lat = driver.latencies.take().unwrap_or_default();
    let mut steps: Vec<Vec<u64>> = lat.into_iter().collect();
    let mut all: Vec<u64> = steps.iter().flatten().copied().collect();
    all.sort_unstable();
    for s in &mut steps {
        s.sort_unstable();
    }
    Run { all, steps, failed }
}

/// Warms both boxes up, then measures them in 10 interleaved rounds (so that a machine busy
/// for a while slows both alike).
fn measure_both(empty: &mut Driver, big: &mut Driver, warmup: u32, calls: u32) -> (Run, Run) {
    let (mut failed_empty, mut failed_big) = (0, 0);
    failed_empty += run_calls(empty, 0, warmup, false);
    failed_big += run_calls(big, 0, warmup, false);
    let rounds = 10;
    let mut done = 0;
    for r in 0..rounds {
        let n = calls * (r + 1) / rounds - done;
        failed_empty += run_calls(empty, warmup + done, n, true);
        failed_big += run_calls(big, warmup + done, n, true);
        done += n;
    }
    (take_run(empty, failed_empty), take_run(big, failed_big))
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn print_run(name: &str, run: &Run) {
    let a = &run.all;
    println!(
        "{name:<28} {:>8} {:>9.1} {:>9.1} {:>10.1}   ({} failed calls)",
        a.len(),
        us(percentile(a, 50.0)),
        us(percentile(a, 99.0)),
        us(a.last().copied().unwrap_or(0)),
        run.failed
    );
    for (k, s) in run.steps.iter().enumerate() {
        println!(
            "  {:<26} {:>8} {:>9.1} {:>9.1} {:>10.1}",
            STEPS[k],
            s.len(),
            us(percentile(s, 50.0)),
            us(percentile(s, 99.0)),
            us(s.last().copied().unwrap_or(0)),
        );
    }
}

/// The fill so far and its cost.
#[derive(Default)]
struct Fill {
    bindings: u32,
    dialogs: u32,
    failures: u32,
    reg_time: Duration,
    dialog_time: Duration,
}

/// Grows the tables through handle_input to `bindings` and `dialogs`: phone `n` registers
/// `user{n}`, then calls from phones of their own (a dialog per phone, none of them
/// registered) are answered and ACKed. Then the clock moves 40 s (in 1 s steps, so probes are
/// answered) past the fill's transactions (Timer J/K/D).
fn fill_to(driver: &mut Driver, fill: &mut Fill, bindings: u32, dialogs: u32, total: u32) {
    let t = Instant::now();
    for n in fill.bindings..bindings {
        if !driver.register(n, 1, 7200) {
            fill.failures += 1;
        }
        if n % 1000 == 999 {
            driver.advance(Duration::from_millis(1));
        }
    }
    fill.bindings = fill.bindings.max(bindings);
    fill.reg_time += t.elapsed();
    let t = Instant::now();
    for k in fill.dialogs..dialogs {
        if driver.call(total + k, &format!("fill-{k}")).is_none() {
            fill.failures += 1;
        }
        if k % 1000 == 999 {
            driver.advance(Duration::from_millis(1));
        }
    }
    fill.dialogs = fill.dialogs.max(dialogs);
    fill.dialog_time += t.elapsed();
    for _ in 0..40 {
        driver.advance(Duration::from_secs(1));
    }
}

/// The process's resident set (`/proc/self/statm`), where there is one.
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Every binding record of `full` applied to a fresh proxy; the time per record.
fn apply_bindings(full: &Driver) -> Duration {
    let records: Vec<proxy::ChangeRecord> = full
        .proxy
        .full_sync()
        .into_iter()
        .filter(|r| matches!(r, proxy::ChangeRecord::Binding(_)))
        .collect();
    let n = records.len().max(1) as u32;
    let mut fresh = Driver::new();
    let now = fresh.now;
    let t = Instant::now();
    for record in records {
        let _ = fresh.proxy.apply_change(now, record);
        while fresh.proxy.poll_event().is_some() {}
    }
    t.elapsed() / n
}

/// What sbcd's engine reads per turn of its loop for `show registrations`.
const PAGE: usize = 1000;

/// A whole listing read a page at a time, as sbcd's engine does.
struct Paged {
    bindings: usize,
    pages: usize,
    total: Duration,
    longest: Duration,
}

fn paged_listing(proxy: &proxy::Proxy) -> Paged {
    let mut paged = Paged {
        bindings: 0,
        pages: 0,
        total: Duration::ZERO,
        longest: Duration::ZERO,
    };
    let mut after: Option<(String, String)> = None;
    loop {
        let t = Instant::now();
        let page =
            proxy.registrations_page(after.as_ref().map(|(a, c)| (a.as_str(), c.as_str())), PAGE);
        let e = t.elapsed();
        paged.pages += 1;
        paged.total += e;
        paged.longest = paged.longest.max(e);
        paged.bindings += page.len();
        match page.last() {
            Some(last) if page.len() == PAGE => {
                after = Some((last.aor.clone(), last.contact.clone()));
            }
            _ => return paged,
        }
    }
}

/// One size at which `show registrations` and `show calls` were timed.
struct ShowPoint {
    bindings: usize,
    dialogs: usize,
    /// `None`: skipped, too slow to wait for.
    registrations: Option<Duration>,
    calls: Duration,
}

/// Times `f` three times (once when a run takes more than 2 s); the fastest.
fn best_of(f: impl Fn() -> usize) -> Duration {
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        std::hint::black_box(f());
        let e = t.elapsed();
        best = best.min(e);
        if e > Duration::from_secs(2) {
            break;
        }
    }
    best
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken.
    let bindings = env_u64("SCALE_BENCH_BINDINGS", 100_000) as u32;
    let dialogs = env_u64("SCALE_BENCH_DIALOGS", 20_000) as u32;
    let warmup = env_u64("SCALE_BENCH_WARMUP", 1000) as u32;
    let calls = env_u64("SCALE_BENCH_CALLS", 10_000) as u32;
    let mut json = String::from("{\"bench\":\"scale\"");

    println!("pure core at scale (release): INVITE-180-200-ACK-BYE-200, {warmup} warm-up + {calls} measured calls per box,");
    println!("the empty and the full box measured in 10 interleaved rounds");
    println!(
        "latency = wall time of one engine step (handle_input + transmits and events taken out)"
    );
    println!();

    let budget = Duration::from_secs(env_u64("SCALE_BENCH_SHOW_BUDGET_SECS", 30));
    eprintln!(
        "filling {bindings} bindings and {dialogs} dialogs through handle_input, in doublings ..."
    );
    let rss_before = rss_bytes();
    let live_before = live_bytes();
    let mut big = Driver::new();
    let mut fill = Fill::default();
    let total = bindings;
    let mut points: Vec<ShowPoint> = Vec::new();
    // Doublings of both tables up to the full size: show registrations and show calls timed
    // at each, show registrations only while its next run is expected within the budget
    // (from the growth between the last two sizes).
    for shift in (0..=6).rev() {
        fill_to(
            &mut big,
            &mut fill,
            bindings >> shift,
            dialogs >> shift,
            total,
        );
        let c = big.proxy.counts();
        let expected = match points.as_slice() {
            [.., a, b] => match (a.registrations, b.registrations) {
                (Some(a), Some(b)) => Some(b.mul_f64(b.as_secs_f64() / a.as_secs_f64().max(1e-9))),
                _ => None,
            },
            [b] => b.registrations.map(|b| b * 4),
            [] => Some(Duration::ZERO),
        };
        let registrations = expected
            .filter(|&e| e <= budget)
            .map(|_| best_of(|| big.proxy.registrations().len()));
        let calls = best_of(|| big.proxy.calls().len());
        eprintln!(
            "  {} bindings, {} dialogs: show registrations {}, show calls {:.1} ms",
            c.registrations,
            c.confirmed,
            registrations.map_or("skipped".to_owned(), |d| format!(
                "{:.1} ms",
                d.as_secs_f64() * 1e3
            )),
            calls.as_secs_f64() * 1e3
        );
        points.push(ShowPoint {
            bindings: c.registrations,
            dialogs: c.confirmed,
            registrations,
            calls,
        });
    }
    let Fill {
        failures: fill_failures,
        reg_time,
        dialog_time,
        ..
    } = fill;
    let counts = big.proxy.counts();
    let rss_full = rss_bytes();
    let live = (live_bytes() - live_before) as f64;
    let (rss_grown, memory) = match (rss_before, rss_full) {
        (Some(a), Some(b)) => {
            let grown = b.saturating_sub(a) as f64 / 1048576.0;
            (format!("{grown:.1} MiB"), format!("{grown:.1}"))
        }
        _ => ("unknown".to_owned(), "null".to_owned()),
    };
    println!(
        "memory: the full box holds {:.1} MiB of heap ({} bindings, {} dialogs, the fill's transactions ended); the resident set grew {rss_grown} (it keeps what the fill's transactions freed)",
        live / 1048576.0,
        counts.registrations,
        counts.confirmed
    );
    println!(
        "fill: {} bindings in {:.1} s ({:.1} us per REGISTER round), {} confirmed dialogs in {:.1} s ({:.1} us per call set-up), {fill_failures} failures",
        counts.registrations,
        reg_time.as_secs_f64(),
        reg_time.as_secs_f64() * 1e6 / f64::from(bindings.max(1)),
        counts.confirmed,
        dialog_time.as_secs_f64(),
        dialog_time.as_secs_f64() * 1e6 / f64::from(dialogs.max(1)),
    );
    eprintln!("measuring at scale ...");
    let t = Instant::now();
    let mut empty = Driver::new();
    let (empty_run, scale_run) = measure_both(&mut empty, &mut big, warmup, calls);
    eprintln!("  {:.1} s", t.elapsed().as_secs_f64());

    println!();
    println!(
        "{:<28} {:>8} {:>9} {:>9} {:>10}",
        "per message (us)", "messages", "p50", "p99", "max"
    );
    print_run("empty box", &empty_run);
    print_run(
        &format!(
            "{} bindings, {} dialogs",
            counts.registrations, counts.confirmed
        ),
        &scale_run,
    );
    let p99_ratio =
        percentile(&scale_run.all, 99.0) as f64 / percentile(&empty_run.all, 99.0).max(1) as f64;
    let p50_ratio =
        percentile(&scale_run.all, 50.0) as f64 / percentile(&empty_run.all, 50.0).max(1) as f64;
    println!("p99 at scale / p99 empty: {p99_ratio:.2} (goal <= 2); p50 ratio {p50_ratio:.2}");
    println!();
    println!("show registrations (Proxy::registrations()) and show calls (Proxy::calls()), fastest of 3 runs:");
    println!(
        "{:>9} {:>8} {:>22} {:>14}",
        "bindings", "dialogs", "registrations (ms)", "calls (ms)"
    );
    for p in &points {
        println!(
            "{:>9} {:>8} {:>22} {:>14.1}",
            p.bindings,
            p.dialogs,
            p.registrations.map_or("skipped".to_owned(), |d| format!(
                "{:.1}",
                d.as_secs_f64() * 1e3
            )),
            p.calls.as_secs_f64() * 1e3
        );
    }
    // The largest size measured, and the growth per doubling of both tables there.
    let measured: Vec<&ShowPoint> = points
        .iter()
        .filter(|p| p.registrations.is_some())
        .collect();
    let mut extrapolated_ms = None;
    if let ([.., a, b], Some(last)) = (measured.as_slice(), points.last()) {
        if last.registrations.is_none() {
            let (ta, tb) = (
                a.registrations.unwrap_or_default().as_secs_f64(),
                b.registrations.unwrap_or_default().as_secs_f64(),
            );
            let growth = tb / ta.max(1e-9);
            let doublings = (last.bindings as f64 / b.bindings.max(1) as f64).log2();
            let ms = tb * growth.powf(doublings) * 1e3;
            extrapolated_ms = Some(ms);
            println!(
                "show registrations at {} bindings and {} dialogs: not run (over the {} s budget); \
                 about {:.0} s extrapolated ({growth:.1}x per doubling of both tables)",
                last.bindings,
                last.dialogs,
                budget.as_secs(),
                ms / 1e3
            );
        }
    }
    println!("goal: show registrations with 100 000 bindings under 1000 ms");
    let paged = paged_listing(&big.proxy);
    let applied = apply_bindings(&big);
    println!(
        "a binding record applied on another proxy (how a shard or a twin learns a REGISTER another one handled): {:.2} us each, {} records; a REGISTER round through the proxy took {:.2} us",
        applied.as_secs_f64() * 1e6,
        counts.registrations,
        reg_time.as_secs_f64() * 1e6 / f64::from(bindings.max(1)),
    );
    println!(
        "show registrations as sbcd reads it, {PAGE} bindings per turn of its loop: {} bindings in {} pages, {:.1} ms in all, the longest page {:.1} ms (the longest SIP waits for it)",
        paged.bindings,
        paged.pages,
        paged.total.as_secs_f64() * 1e3,
        paged.longest.as_secs_f64() * 1e3
    );
    let reg_times: Vec<Duration> = points
        .last()
        .and_then(|p| p.registrations)
        .into_iter()
        .collect();
    let call_times: Vec<Duration> = points.last().map(|p| p.calls).into_iter().collect();

    let ms_min = |v: &[Duration]| v.iter().min().map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    let run_json = |r: &Run| {
        format!(
            "{{\"messages\":{},\"p50_us\":{:.2},\"p99_us\":{:.2},\"max_us\":{:.2},\"failed_calls\":{}}}",
            r.all.len(),
            us(percentile(&r.all, 50.0)),
            us(percentile(&r.all, 99.0)),
            us(r.all.last().copied().unwrap_or(0)),
            r.failed
        )
    };
    let _ = write!(
        json,
        ",\"bindings\":{},\"dialogs\":{},\"fill_failures\":{fill_failures},\"fill_register_s\":{:.2},\"fill_dialogs_s\":{:.2},\"empty\":{},\"scale\":{},\"p99_ratio\":{p99_ratio:.3},\"registrations_ms\":{},\"registrations_ms_extrapolated\":{},\"calls_ms\":{:.2},\"registrations_paged_ms\":{:.2},\"registrations_longest_page_ms\":{:.2},\"fill_rss_mib\":{memory},\"live_heap_mib\":{:.1}}}",
        counts.registrations,
        counts.confirmed,
        reg_time.as_secs_f64(),
        dialog_time.as_secs_f64(),
        run_json(&empty_run),
        run_json(&scale_run),
        reg_times
            .first()
            .map_or("null".to_owned(), |d| format!("{:.2}", d.as_secs_f64() * 1e3)),
        extrapolated_ms.map_or("null".to_owned(), |ms| format!("{ms:.0}")),
        ms_min(&call_times),
        paged.total.as_secs_f64() * 1e3,
        paged.longest.as_secs_f64() * 1e3,
        live / 1048576.0,
    );
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap_or(std::path::Path::new("."));
    let dir = root.join("out/bench");
    let path = dir.join("scale.json");
    match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, format!("{json}\n"))) {
        Ok(()) => println!("\nwrote {}", path.display()),
        Err(e) => println!("\ncould not write {}: {e}", path.display()),
    }
}
