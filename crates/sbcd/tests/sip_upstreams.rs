//! sbcd as a client of its upstreams: a 503 with Retry-After takes an upstream out of rotation
//! until an OPTIONS probe brings it back, a silent upstream is left after the timeout, and when
//! none is left the caller gets 503 with Retry-After.

mod common;

use std::time::{Duration, Instant};

use common::daemon::{Sbcd, SbcdConfig};
use common::net::SilentUpstream;
use common::sipp::Sipp;
use common::{wait_for, PATIENCE};

fn one_call(sbcd: &Sbcd, caller: &str) -> common::sipp::SippOutcome {
    Sipp::uac("uac_call.xml", sbcd.access())
        .service("core-user")
        .key("caller", caller)
        .calls(1)
        .hold_ms(100)
        .run()
}

fn status_of(sbcd: &Sbcd, port: u16) -> (String, u64) {
    let ups = sbcd.upstreams();
    let needle = format!(":{port}");
    let u = ups
        .iter()
        .find(|u| u.uri.contains(&needle))
        .unwrap_or_else(|| panic!("upstream on port {port} listed: {ups:?}"));
    (u.status.clone(), u.failures)
}

#[test]
fn upstream_503_with_retry_after_is_skipped_until_a_probe_brings_it_back() {
    let overloaded = Sipp::uas("uas_503.xml").key("retry_after", "2").start();
    let healthy = Sipp::uas("uas_answer.xml").start();
    let config = SbcdConfig::with_upstreams(&[overloaded.port(), healthy.port()]);
    let sbcd = Sbcd::start(config);
    wait_for("the first upstream in rotation", PATIENCE, || {
        (status_of(&sbcd, overloaded.port()).0 == "in-rotation").then_some(())
    });

    one_call(&sbcd, "alice").assert_all_succeeded(1);
    let out_at = Instant::now();
    let (status, failures) = status_of(&sbcd, overloaded.port());
    assert_eq!(status, "out", "a 503 with Retry-After takes it out");
    assert!(failures >= 1);
    assert!(sbcd.stat("sip.upstream_failovers") >= 1);

    let probes_before = sbcd.stat("sip.probes_sent");
    wait_for(
        "the probe to bring the first upstream back",
        PATIENCE,
        || (status_of(&sbcd, overloaded.port()).0 == "in-rotation").then_some(()),
    );
    eprintln!(
        "upstream out for {:?} after Retry-After: 2 (probe interval 1 s)",
        out_at.elapsed()
    );
    // Measured from after the call returned, which may be late on a loaded machine: only a
    // return well before the Retry-After of 2 s is wrong.
    assert!(
        out_at.elapsed() >= Duration::from_millis(1000),
        "not before its Retry-After"
    );
    assert!(
        sbcd.stat("sip.probes_sent") > probes_before,
        "back by a probe"
    );

    // Back in rotation, it is tried first again, and refuses again.
    one_call(&sbcd, "bob").assert_all_succeeded(1);
    let overloaded = overloaded.stop();
    overloaded.assert_none_failed();
    assert_eq!(overloaded.logged("invite-refused").len(), 2);
    let healthy = healthy.stop();
    healthy.assert_none_failed();
    assert_eq!(
        healthy.logged("bye-reason").len(),
        2,
        "both calls ended at the next upstream"
    );
}

#[test]
fn silent_upstream_times_out_and_the_next_one_is_tried() {
    let silent = SilentUpstream::bind();
    let healthy = Sipp::uas("uas_answer.xml").start();
    let mut config = SbcdConfig::with_upstreams(&[silent.port(), healthy.port()]);
    // Probes would find the silent upstream dead before any call; here the call must find it.
    config.probe_interval_secs = 300;
    config.upstream_timeout_ms = 1000;
    let sbcd = Sbcd::start(config);

    let started = Instant::now();
    one_call(&sbcd, "carol").assert_all_succeeded(1);
    eprintln!(
        "call through a silent first upstream took {:?} (upstream_timeout_ms 1000)",
        started.elapsed()
    );

    let swallowed = silent.swallowed(Duration::from_millis(100));
    assert!(
        swallowed.iter().any(|l| l.starts_with("INVITE ")),
        "the silent upstream was tried first: {swallowed:?}"
    );
    assert!(
        status_of(&sbcd, silent.port()).1 >= 1,
        "its failure is counted"
    );
    assert!(sbcd.stat("sip.upstream_failovers") >= 1);
    healthy.stop().assert_none_failed();
}

#[test]
fn no_upstream_left_gives_the_caller_503_with_retry_after() {
    let overloaded = Sipp::uas("uas_503.xml").key("retry_after", "20").start();
    let sbcd = Sbcd::start(SbcdConfig::with_upstreams(&[overloaded.port()]));

    let caller = Sipp::uac("uac_expect_503.xml", sbcd.access())
        .service("core-user")
        .key("caller", "dave")
        .calls(1)
        .run();

    caller.assert_all_succeeded(1);
    let retry_after: Vec<u64> = caller
        .logged("retry-after")
        .iter()
        .filter_map(|v| v.parse().ok())
        .collect();
    assert!(
        matches!(retry_after[..], [s] if (1..=20).contains(&s)),
        "Retry-After is the shortest remaining wait: {retry_after:?}"
    );
    overloaded.stop().assert_none_failed();
}

#[test]
fn an_upstream_not_back_when_it_said_is_reported() {
    let overloaded = Sipp::uas("uas_503.xml").key("retry_after", "1").start();
    let overloaded_port = overloaded.port();
    let healthy = Sipp::uas("uas_answer.xml").start();
    let config = SbcdConfig::with_upstreams(&[overloaded_port, healthy.port()]);
    let sbcd = Sbcd::start(config);
    wait_for("the first upstream in rotation", PATIENCE, || {
        (status_of(&sbcd, overloaded_port).0 == "in-rotation").then_some(())
    });
    one_call(&sbcd, "eve").assert_all_succeeded(1);
    // It said "back in 1 s", and then it is gone: the probes find nobody.
    overloaded.stop().assert_none_failed();

    sbcd.wait_log("not back when it said", PATIENCE);
    let late = wait_for("`show upstreams` to say late", PATIENCE, || {
        let (status, _) = status_of(&sbcd, overloaded_port);
        (status == "late").then_some(status)
    });

    assert_eq!(late, "late");
    healthy.stop().assert_none_failed();
}
