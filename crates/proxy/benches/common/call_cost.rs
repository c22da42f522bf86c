//! The cost of one INVITE-180-200-ACK-BYE-200 call through a core ([`Core`]), shared by the
//! proxy's `core_call` bench (the bare [`proxy::Proxy`]) and the node's `node_call` bench
//! (`node::Node`, what the daemon runs), so both figures come from the same calls and the
//! same counting.
//!
//! After `CORE_BENCH_WARMUP` calls (default 1000), `CORE_BENCH_CALLS` calls (default 10 000)
//! are measured. The clock moves `CORE_BENCH_STEP_MS` (100) per call and every deadline due
//! is fired, so transactions end (Timer K/D/J) and upstream probes go out and are answered as
//! on a box at 10 calls/s: the steady state holds about 320 calls' ended transactions.
//!
//! Printed per measured call: heap allocations (`alloc` and `alloc_zeroed`), reallocations,
//! and bytes asked for (alloc sizes plus realloc new sizes), counted by the
//! `#[global_allocator]` below only inside [`measured_step`](super::common::measured_step),
//! so the bench's own SIP writing and reading is not counted. The last line, `RESULT ...`, is
//! read by `cargo xtask bench core`, which also runs the binary under callgrind for
//! instructions per call.

// The counting allocator is a `GlobalAlloc` impl, which is unsafe to implement and to call
// through; nothing else in this file is unsafe.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::common::{env_u64, Core, Driver, COUNTING};

/// The system allocator, counting while [`COUNTING`] is set.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static REALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
/// Bytes held now by everyone (the bench's own included), counted always: what the core
/// keeps shows as the difference between two moments with the same bench state.
static HELD: AtomicU64 = AtomicU64::new(0);

fn count(calls: &AtomicU64, bytes: usize) {
    if COUNTING.load(Ordering::Relaxed) {
        calls.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HELD.fetch_add(layout.size() as u64, Ordering::Relaxed);
        count(&ALLOCS, layout.size());
        // SAFETY: the caller's contract for `alloc` (a layout of non-zero size) is passed on
        // unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        HELD.fetch_add(layout.size() as u64, Ordering::Relaxed);
        count(&ALLOCS, layout.size());
        // SAFETY: as for `alloc`: the caller's layout goes unchanged to the system allocator.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `System` (every allocation here is) with `layout`,
        // as the caller guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(&REALLOCS, new_size);
        HELD.fetch_add(new_size as u64, Ordering::Relaxed);
        HELD.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `System` with `layout` and `new_size` is valid, as the
        // caller guarantees; passed on unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn snapshot() -> (u64, u64, u64) {
    (
        ALLOCS.load(Ordering::Relaxed),
        REALLOCS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    )
}

/// Runs calls `first..first + n`; returns how many failed.
#[inline(never)]
fn run_calls<C: Core>(driver: &mut Driver<C>, first: u32, n: u32, step: Duration) -> u32 {
    let mut failed = 0;
    for i in first..first + n {
        // A phone of its own for every call of a window of 1000, a Call-ID of its own always.
        if !driver.full_call(i % 1000, &format!("bench-call-{i}")) {
            failed += 1;
        }
        driver.advance(step);
    }
    failed
}

/// The whole bench: warm-up, measured calls, the figures printed. `what` names the core;
/// `counts` reads its sessions and bindings after the run.
pub fn run<C: Core>(mut driver: Driver<C>, what: &str, counts: impl Fn(&C) -> proxy::Counts) {
    // `cargo bench` passes `--bench`; nothing else is taken.
    let warmup = env_u64("CORE_BENCH_WARMUP", 1000) as u32;
    let calls = env_u64("CORE_BENCH_CALLS", 10_000).max(1) as u32;
    let step = Duration::from_millis(env_u64("CORE_BENCH_STEP_MS", 100));

    let warm_failed = run_calls(&mut driver, 0, warmup, step);
    let held_before = HELD.load(Ordering::Relaxed);
    let probes_before = driver.probes;
    let before = snapshot();
    let failed = run_calls(&mut driver, warmup, calls, step);
    let after = snapshot();
    let held_after = HELD.load(Ordering::Relaxed);
    let per = |a: u64, b: u64| (b - a) as f64 / f64::from(calls);
    let allocs = per(before.0, after.0);
    let reallocs = per(before.1, after.1);
    let bytes = per(before.2, after.2);
    let counts = counts(&driver.proxy);

    println!(
        "{what}, INVITE-180-200-ACK-BYE-200, {warmup} warm-up + {calls} measured calls, clock +{} ms per call",
        step.as_millis()
    );
    println!(
        "failed calls: {warm_failed} in warm-up, {failed} measured; probes answered while measuring: {}",
        driver.probes - probes_before
    );
    println!(
        "after the run: {} active sessions, {} bindings",
        counts.active_sessions, counts.registrations
    );
    // A core that forgets what it is done with holds as much after the measured calls as
    // after the warm-up (its tables full of ended transactions at both moments): growth
    // per call here is what it never gives back.
    println!(
        "heap held: {held_before} bytes after the warm-up, {held_after} after the measured calls ({:+.2} per measured call)",
        (held_after as f64 - held_before as f64) / f64::from(calls)
    );
    println!("per call, counted only inside the core:");
    println!("  allocations  {allocs:>10.2}");
    println!("  reallocations{reallocs:>10.2}");
    println!("  bytes        {bytes:>10.1}");
    println!(
        "RESULT calls={calls} warmup={warmup} failed={failed} allocs_per_call={allocs:.3} reallocs_per_call={reallocs:.3} bytes_per_call={bytes:.1} held_growth_per_call={:.2}",
        (held_after as f64 - held_before as f64) / f64::from(calls)
    );
}
