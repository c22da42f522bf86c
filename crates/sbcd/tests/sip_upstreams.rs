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
    let overloaded = Sipp::uas("uas_503.xml")
        .key("retry_after", "2")
        .key("options_code", "200")
        .start();
    let healthy = Sipp::uas("uas_answer.xml").start();
    let config = SbcdConfig::with_upstreams(&[overloaded.port(), healthy.port()]);
    let sbcd = Sbcd::start(config);
    wait_for("the first upstream in rotation", PATIENCE, || {
        (status_of(&sbcd, overloaded.port()).0 == "in-rotation").then_some(())
    });

    one_call(&sbcd, "alice").assert_all_succeeded(1);
    // What sbcd said, in order: out (on the 503), then back (on a probe's 200). A snapshot
    // after the call could already see it back on a slow machine; the log cannot be reordered.
    sbcd.wait_log("upstream out of rotation", PATIENCE);
    sbcd.wait_log("upstream back in rotation", PATIENCE);
    assert_eq!(status_of(&sbcd, overloaded.port()).0, "in-rotation");
    assert!(
        status_of(&sbcd, overloaded.port()).1 >= 1,
        "its failure is counted"
    );
    // The probe that brought it back is shown: its 200, when (a wall-clock time in JSON, a
    // date and an age for people).
    let probe = sbcd
        .upstreams()
        .into_iter()
        .find(|u| u.uri.contains(&format!(":{}", overloaded.port())))
        .and_then(|u| u.last_probe)
        .expect("the last probe is listed");
    assert_eq!(probe.code, Some(200));
    let now = common::unix_ms_now();
    assert!(
        probe.at_unix_ms <= now + 1000 && probe.at_unix_ms + 60_000 >= now,
        "probe at {} ms, now {now} ms",
        probe.at_unix_ms
    );
    let (ok, text, _) = sbcd.ctl_raw(&["show", "upstreams"]);
    assert!(ok, "{text}");
    assert!(
        text.contains("last probe: 200 OK at 20")
            && text.contains(" UTC, ")
            && text.contains(" ago"),
        "{text}"
    );
    assert!(sbcd.stat("sip.upstream_failovers") >= 1);
    // Back in rotation, it is tried first again, and refuses again.
    one_call(&sbcd, "bob").assert_all_succeeded(1);
    let overloaded = overloaded.stop();
    overloaded.assert_none_failed();
    let refused = overloaded.logged_unix_ms("invite-refused");
    assert_eq!(refused.len(), 2);
    // Not probed back before its Retry-After of 2 s, by the upstream's own clock: the first
    // OPTIONS it answered 200 after the first refusal came at least 2 s later. (SIPp's
    // gettimeofday and the 1 s probe period leave no room for a flaky early answer.)
    let answered_after = overloaded
        .logged("options-answered 200")
        .iter()
        .filter_map(|rest| {
            let mut p = rest.split_whitespace().map(|v| v.parse::<f64>().ok());
            Some(p.next()?? * 1000.0 + p.next()?? / 1000.0)
        })
        .find(|at| *at > refused[0]);
    let back_after_ms = answered_after.expect("a probe after the refusal") - refused[0];
    eprintln!("upstream probed back {back_after_ms:.0} ms after its 503 (Retry-After: 2)");
    assert!(back_after_ms >= 2000.0 - 1.0, "not before its Retry-After");
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
    let overloaded = Sipp::uas("uas_503.xml")
        .key("retry_after", "20")
        .key("options_code", "200")
        .start();
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
    // It says "back in 1 s", and when the probe comes it is still overloaded: the far end, not
    // a race with the test, decides that it is not back.
    let overloaded = Sipp::uas("uas_503.xml")
        .key("retry_after", "1")
        .key("options_code", "503")
        .start();
    let overloaded_port = overloaded.port();
    let healthy = Sipp::uas("uas_answer.xml").start();
    let mut config = SbcdConfig::with_upstreams(&[overloaded_port, healthy.port()]);
    // No routine probe before the call (it would find the upstream overloaded and take it out
    // before the call could hear its promise); the probe after a Retry-After comes when the
    // Retry-After has passed, whatever the interval.
    config.probe_interval_secs = 30;
    let sbcd = Sbcd::start(config);
    one_call(&sbcd, "eve").assert_all_succeeded(1);

    sbcd.wait_log("not back when it said", PATIENCE);
    let late = wait_for("`show upstreams` to say late", PATIENCE, || {
        let (status, _) = status_of(&sbcd, overloaded_port);
        (status == "late").then_some(status)
    });

    assert_eq!(late, "late");
    overloaded.stop().assert_none_failed();
    healthy.stop().assert_none_failed();
}
