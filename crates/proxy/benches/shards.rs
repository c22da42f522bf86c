//! How the pure core's work spreads over shards (`harness = false`), for issue 15: N proxies,
//! one per thread, each driven by its own in-process load (phones calling the core,
//! INVITE-180-200-ACK-BYE-200, and one REGISTER for every `SHARDS_BENCH_REGISTER_EVERY`
//! operations), the phones split between the shards as the keyed hash of their Call-IDs
//! would split them. Each proxy is made shard `i` of N (`Proxy::set_shard`), and every change
//! record a shard makes (bindings and sessions) is applied on every other shard
//! (`Proxy::apply_peer_change`), as the sharded daemon does (`docs/decisions.md`, "Shards"):
//! so the figure includes what sharing the registrations and the sessions' parties costs.
//! What the daemon adds around it (its reader handing each message to a shard's queue, the
//! node relaying the records) is not here: no sockets, no channels but the records'.
//!
//! Measured per shard: the time inside the proxy (every `measured_step` and every record
//! applied, wall time around each: equal to CPU time while there are no more threads than
//! cores), and the messages it handled. Printed: messages per second of core time per shard
//! and in all, and the speed-up over one shard. With more shards than cores the threads share
//! cores and the time inside a step includes waiting for one: the speed-up stops at the number
//! of cores (this machine's is printed).
//!
//! `SHARDS_BENCH_SHARDS` (1,2,4), `SHARDS_BENCH_OPS` (operations per shard, 20 000),
//! `SHARDS_BENCH_REGISTER_EVERY` (10). A benchmark: it prints and writes
//! `out/bench/shards.json`, it never asserts a number.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fmt::Write as _;
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{env_u64, Driver, PEER_RECORDS, SHARD_MODE, STEP_TIME};

/// What one shard did.
#[derive(Debug, Default, Clone, Copy)]
struct ShardRun {
    /// Messages handed to the proxy (SIP in), and the time inside it for them.
    messages: u64,
    step_ns: u64,
    /// Binding records of other shards applied, and the time for them.
    applied: u64,
    apply_ns: u64,
    failed: u64,
}

impl ShardRun {
    fn core_secs(&self) -> f64 {
        (self.step_ns + self.apply_ns) as f64 / 1e9
    }
}

fn run_shard(
    index: u32,
    shards: u32,
    ops: u64,
    register_every: u64,
    inbox: mpsc::Receiver<Vec<proxy::ChangeRecord>>,
    peers: Vec<mpsc::Sender<Vec<proxy::ChangeRecord>>>,
    start: Arc<Barrier>,
) -> ShardRun {
    SHARD_MODE.set(true);
    let mut driver = Driver::new();
    driver.proxy.set_shard(
        index as usize,
        proxy::Shards::new(shards as usize, [1, 2, 3, 4]),
    );
    let mut run = ShardRun::default();
    // This shard's phones: those whose index the hash would give it.
    let phone = |k: u64| -> u32 { (k as u32 % 40_000) * shards + index };
    STEP_TIME.set((0, 0));
    start.wait();
    for op in 0..ops {
        for records in inbox.try_iter() {
            let now = driver.now;
            let t = Instant::now();
            for record in records {
                driver.proxy.apply_peer_change(now, record);
                run.applied += 1;
            }
            while driver.proxy.poll_event().is_some() {}
            run.apply_ns += t.elapsed().as_nanos() as u64;
        }
        let ok = if op % register_every == 0 {
            driver.register(phone(op / register_every), 1, 3600)
        } else {
            driver.full_call(phone(op), &format!("s{index}-{op}"))
        };
        if !ok {
            run.failed += 1;
        }
        let mine = PEER_RECORDS.with_borrow_mut(std::mem::take);
        if !mine.is_empty() {
            for peer in &peers {
                let _ = peer.send(mine.clone());
            }
        }
        if op % 10 == 9 {
            driver.advance(Duration::from_millis(100));
        }
    }
    let (step_ns, messages) = STEP_TIME.get();
    run.step_ns = step_ns;
    run.messages = messages;
    run
}

/// N shards, each on its own thread, all started together.
fn run_shards(shards: u32, ops: u64, register_every: u64) -> Vec<ShardRun> {
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..shards).map(|_| mpsc::channel()).unzip();
    let start = Arc::new(Barrier::new(shards as usize));
    let handles: Vec<_> = receivers
        .into_iter()
        .enumerate()
        .map(|(i, inbox)| {
            let peers: Vec<_> = senders
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, s)| s.clone())
                .collect();
            let start = Arc::clone(&start);
            std::thread::Builder::new()
                .name(format!("shard-{i}"))
                .spawn(move || {
                    run_shard(i as u32, shards, ops, register_every, inbox, peers, start)
                })
                .expect("a shard thread")
        })
        .collect();
    drop(senders);
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let list = std::env::var("SHARDS_BENCH_SHARDS").unwrap_or_else(|_| "1,2,4".into());
    let counts: Vec<u32> = list
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .filter(|n| *n > 0)
        .collect();
    let ops = env_u64("SHARDS_BENCH_OPS", 20_000);
    let register_every = env_u64("SHARDS_BENCH_REGISTER_EVERY", 10).max(1);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "shards: {ops} operations per shard (a call, or a REGISTER every {register_every}), {cores} cores here"
    );
    // Warm the allocator and the code once.
    let _ = run_shards(1, ops / 10, register_every);
    let mut json = format!(
        "{{\"bench\":\"shards\",\"ops_per_shard\":{ops},\"register_every\":{register_every},\"cores\":{cores},\"runs\":["
    );
    println!(
        "{:>6} {:>10} {:>12} {:>16} {:>18} {:>9} {:>7}",
        "shards",
        "messages",
        "applied",
        "msg/s per shard",
        "msg/s all shards",
        "speed-up",
        "failed"
    );
    let mut one: Option<f64> = None;
    for (k, &n) in counts.iter().enumerate() {
        let runs = run_shards(n, ops, register_every);
        let messages: u64 = runs.iter().map(|r| r.messages).sum();
        let applied: u64 = runs.iter().map(|r| r.applied).sum();
        let failed: u64 = runs.iter().map(|r| r.failed).sum();
        // Each shard's rate over its own core time; all shards: the sum of those rates (what
        // the shards carry with a core each).
        let rates: Vec<f64> = runs
            .iter()
            .map(|r| r.messages as f64 / r.core_secs().max(1e-9))
            .collect();
        let all: f64 = rates.iter().sum();
        let per_shard = all / f64::from(n);
        let base = *one.get_or_insert(all);
        let apply_us =
            runs.iter().map(|r| r.apply_ns).sum::<u64>() as f64 / 1e3 / applied.max(1) as f64;
        println!(
            "{:>6} {:>10} {:>12} {:>16.0} {:>18.0} {:>8.2}x {:>7}",
            n,
            messages,
            applied,
            per_shard,
            all,
            all / base,
            failed
        );
        if applied > 0 {
            println!("       (a record of another shard applied in {apply_us:.2} us)");
        }
        let _ = write!(
            json,
            "{}{{\"shards\":{n},\"messages\":{messages},\"applied\":{applied},\"msg_per_core_s\":{per_shard:.0},\"msg_per_s_all\":{all:.0},\"speedup\":{:.3},\"apply_us\":{apply_us:.2},\"failed\":{failed}}}",
            if k == 0 { "" } else { "," },
            all / base
        );
    }
    json.push_str("]}");
    if cores < counts.iter().copied().max().unwrap_or(1) as usize {
        println!(
            "(more shards than the {cores} cores here: past {cores} the threads take turns on a core, and the time in a step includes the wait)"
        );
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap_or(std::path::Path::new("."));
    let dir = root.join("out/bench");
    let path = dir.join("shards.json");
    match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, format!("{json}\n"))) {
        Ok(()) => println!("\nwrote {}", path.display()),
        Err(e) => println!("\ncould not write {}: {e}", path.display()),
    }
}
