//! Parser benchmark: our parser and rsip 0.4 side by side on a typical INVITE, 200 OK and
//! REGISTER, each parsed and its proxy headers read (Via hops, From/To tags, Call-ID, CSeq,
//! Max-Forwards, Route/Record-Route, Contact, Content-Length). Prints messages per second and
//! the ratio. A benchmark, not a test: nothing here asserts a speed.
//!
//! `SIP_BENCH_SECS` (default 1) sets the time spent per message and parser.

use std::hint::black_box;
use std::time::{Duration, Instant};

#[path = "../tests/support/access.rs"]
mod access;

const MESSAGES: [(&str, &[u8]); 3] = [
    ("INVITE", include_bytes!("messages/invite.sip")),
    ("200 OK", include_bytes!("messages/ok200.sip")),
    ("REGISTER", include_bytes!("messages/register.sip")),
];

/// Runs `f` on `msg` for about `budget`, returns messages per second.
fn rate(msg: &[u8], budget: Duration, f: fn(&[u8]) -> usize) -> f64 {
    // Warm-up and a batch size that makes clock reads negligible.
    let mut batch = 1u64;
    loop {
        let t = Instant::now();
        for _ in 0..batch {
            black_box(f(black_box(msg)));
        }
        if t.elapsed() > Duration::from_millis(10) {
            break;
        }
        batch *= 2;
    }
    let start = Instant::now();
    let mut done = 0u64;
    while start.elapsed() < budget {
        for _ in 0..batch {
            black_box(f(black_box(msg)));
        }
        done += batch;
    }
    done as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is accepted and ignored.
    let secs: f64 = std::env::var("SIP_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let budget = Duration::from_secs_f64(secs);
    for (name, msg) in MESSAGES {
        assert!(
            access::ours_touch(msg) > 0,
            "{name}: our parser refused the benchmark message"
        );
        assert!(
            access::rsip_touch(msg) > 0,
            "{name}: rsip refused the benchmark message"
        );
    }
    println!("parse + proxy header access, {secs} s per message and parser");
    println!(
        "{:<10} {:>6} {:>16} {:>16} {:>8}",
        "message", "bytes", "ours msg/s", "rsip msg/s", "ratio"
    );
    let mut worst = f64::INFINITY;
    for (name, msg) in MESSAGES {
        let ours = rate(msg, budget, access::ours_touch);
        let theirs = rate(msg, budget, access::rsip_touch);
        let ratio = ours / theirs;
        worst = worst.min(ratio);
        println!(
            "{name:<10} {:>6} {ours:>16.0} {theirs:>16.0} {ratio:>7.1}x",
            msg.len()
        );
    }
    println!("lowest ratio: {worst:.1}x (goal: at least 3x)");
    println!();
    println!("breakdown (ours): parse only, then parse + proxy headers");
    for (name, msg) in MESSAGES {
        let parse_only = rate(msg, budget, |m| {
            sip::Message::parse(m).map_or(0, |m| m.header_count())
        });
        let full = rate(msg, budget, access::ours_touch);
        println!(
            "{name:<10} parse {:>7.0} ns   parse+access {:>7.0} ns",
            1e9 / parse_only,
            1e9 / full
        );
    }
}
