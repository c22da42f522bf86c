//! Calls and registrations through a real sbcd with SIPp peers: access to core, core to a
//! registered phone, the registration cache and its expiry, CANCEL, and TCP on the access side.

mod common;

use std::time::{Duration, Instant};

use common::daemon::{Sbcd, SbcdConfig};
use common::sipp::Sipp;
use common::{wait_for, PATIENCE};

/// The core answering calls (and probes, and REGISTERs) behind sbcd.
fn core_uas() -> common::sipp::SippRun {
    Sipp::uas("uas_answer.xml").start()
}

#[test]
fn call_from_access_reaches_the_core() {
    let core = core_uas();
    let sbcd = Sbcd::start(SbcdConfig::with_upstreams(&[core.port()]));

    let phones = Sipp::uac("uac_call.xml", sbcd.access())
        .service("core-user")
        .key("caller", "alice")
        .calls(5)
        .rate(10)
        .hold_ms(200)
        .run();

    phones.assert_all_succeeded(5);
    assert_eq!(sbcd.stat("sip.calls_started"), 5);
    let state = sbcd.system_state();
    assert_eq!(state.active_sessions, 0, "every call ended: {state:?}");

    // The same numbers the way operators collect them: `sbcctl show metrics` prints the
    // Prometheus text format, `--json` the snapshot behind it.
    let (ok, text, err) = sbcd.ctl_raw(&["show", "metrics"]);
    assert!(ok, "{text}{err}");
    for line in [
        "# TYPE sbc_calls_started_total counter",
        "sbc_calls_started_total 5",
        "sbc_calls_active 0",
        "sbc_system_state{state=\"online\"} 1",
        "sbc_system_state{state=\"draining\"} 0",
        "# TYPE sbc_sip_answers_total counter",
        "# TYPE sbc_watchdog_recoveries_total counter",
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} in:\n{text}");
    }
    let answered = text
        .lines()
        .find_map(|l| l.strip_prefix("sbc_sip_answers_total{class=\"2xx\"} "))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(
        answered >= Some(10),
        "5 INVITEs and 5 BYEs answered 2xx:\n{text}"
    );
    let up = format!("sbc_upstream_up{{upstream=\"sip:127.0.0.1:{}", core.port());
    assert!(
        text.lines()
            .any(|l| l.starts_with(&up) && l.ends_with("} 1")),
        "{up} in:\n{text}"
    );
    match sbcd.ctl("show metrics") {
        control::Reply::Metrics(snapshot) => {
            assert!(snapshot.stats.iter().any(|c| c.name == "sip.relayed_2xx"));
            assert!(snapshot.system_state.is_some() && snapshot.health.is_some());
        }
        other => panic!("show metrics --json: {other:?}"),
    }
    let core = core.stop();
    core.assert_none_failed();
    assert_eq!(core.logged("bye-reason").len(), 5, "the core saw every BYE");
}

/// A call held well past `[limits] dialog_idle_secs` with no request in it: the box forgets
/// its record (what a lost BYE would otherwise hold for good), and the BYE that comes after
/// all still reaches the core on the box's signed Record-Route and ends the call.
#[test]
fn a_call_held_past_the_dialog_idle_time_is_forgotten_and_its_bye_still_ends_it() {
    let core = core_uas();
    let mut config = SbcdConfig::with_upstreams(&[core.port()]);
    config.dialog_idle_secs = Some(1);
    let sbcd = Sbcd::start(config);
    // Held 6 s from the ACK: forgotten about 1 s after the 200, 5 s before the BYE.
    let call = Sipp::uac("uac_call.xml", sbcd.access())
        .service("core-user")
        .key("caller", "idle")
        .calls(1)
        .hold_ms(6000)
        .start();
    sbcd.wait_log("cause=Idle", PATIENCE);
    assert_eq!(
        sbcd.system_state().active_sessions,
        0,
        "the held call is no longer counted"
    );
    let outcome = call.wait();
    outcome.assert_all_succeeded(1);
    assert_eq!(sbcd.stat("sip.dialogs_idle_forgotten"), 1);
    assert_eq!(
        sbcd.stat("sip.unknown_dialog"),
        0,
        "the BYE was not refused"
    );
    let core = core.stop();
    core.assert_none_failed();
    assert_eq!(core.logged("bye-reason").len(), 1, "the core saw the BYE");
}

/// One HTTP/1.1 request to 127.0.0.1:`port`; the whole answer (the server closes).
fn http_get(port: u16, request: &str) -> String {
    use std::io::{Read, Write};
    let fail = |what: &str, e: std::io::Error| -> ! { panic!("{what} 127.0.0.1:{port}: {e}") };
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| fail("connect to", e));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap_or_else(|e| fail("timeout on", e));
    stream
        .write_all(request.as_bytes())
        .unwrap_or_else(|e| fail("send to", e));
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .unwrap_or_else(|e| fail("read from", e));
    answer
}

#[test]
fn metrics_are_scraped_over_http_on_the_core_address() {
    let core = core_uas();
    let port = common::net::free_port();
    let sbcd = Sbcd::start(SbcdConfig {
        metrics_http_port: Some(port),
        ..SbcdConfig::with_upstreams(&[core.port()])
    });
    Sipp::uac("uac_call.xml", sbcd.access())
        .service("core-user")
        .key("caller", "alice")
        .calls(2)
        .hold_ms(100)
        .run()
        .assert_all_succeeded(2);

    let answer = http_get(port, "GET /metrics HTTP/1.1\r\nHost: sbc\r\n\r\n");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    assert!(
        head.contains(&format!("Content-Length: {}", body.len())),
        "{head}"
    );
    for line in [
        "# TYPE sbc_calls_started_total counter",
        "sbc_calls_started_total 2",
        "sbc_system_state{state=\"online\"} 1",
    ] {
        assert!(body.lines().any(|l| l == line), "{line:?} in:\n{body}");
    }
    // The same families as `sbcctl show metrics`, in the same order.
    let (ok, text, _) = sbcd.ctl_raw(&["show", "metrics"]);
    assert!(ok);
    let families = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.starts_with("# TYPE"))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(families(body), families(&text));

    let other = http_get(port, "GET / HTTP/1.1\r\n\r\n");
    assert!(other.starts_with("HTTP/1.1 404 "), "{other}");
    let post = http_get(port, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
    core.stop().assert_none_failed();
}

#[test]
fn call_from_core_reaches_registered_phone() {
    let registrar = core_uas();
    let sbcd = Sbcd::start(SbcdConfig::with_upstreams(&[registrar.port()]));
    let phone_port = common::net::free_port();

    Sipp::uac("register.xml", sbcd.access())
        .on_port(phone_port)
        .service("bob")
        .key("expires", "60")
        .calls(1)
        .run()
        .assert_all_succeeded(1);
    let regs = sbcd.registrations();
    assert!(
        regs.iter().any(|r| r.aor.contains("bob@127.0.0.1")),
        "bob is cached: {regs:?}"
    );

    // The phone now waits for calls on the address it registered.
    let phone = Sipp::uas("uas_answer.xml").on_port(phone_port).start();
    let caller = Sipp::uac("uac_call.xml", sbcd.core())
        .service("bob")
        .key("caller", "carol")
        .calls(1)
        .hold_ms(200)
        .run();

    caller.assert_all_succeeded(1);
    let phone = phone.stop();
    phone.assert_none_failed();
    assert_eq!(
        phone.logged("bye-reason").len(),
        1,
        "the phone got the call"
    );
    registrar.stop().assert_none_failed();
}

/// SPEC §6: the calls spread over the shards by Call-ID, and a phone registered through one
/// shard is reached through every shard (each holds every binding).
#[test]
fn calls_to_a_phone_registered_through_one_shard_pass_through_every_shard() {
    let registrar = core_uas();
    let sbcd = Sbcd::start(SbcdConfig::with_upstreams(&[registrar.port()]));
    assert_eq!(sbcd.config.workers, 2);
    let phone_port = common::net::free_port();
    Sipp::uac("register.xml", sbcd.access())
        .on_port(phone_port)
        .service("dora")
        .key("expires", "60")
        .calls(1)
        .run()
        .assert_all_succeeded(1);

    let phone = Sipp::uas("uas_answer.xml").on_port(phone_port).start();
    let calls = 40;
    Sipp::uac("uac_call.xml", sbcd.core())
        .service("dora")
        .key("caller", "erin")
        .calls(calls)
        .rate(40)
        .hold_ms(100)
        .run()
        .assert_all_succeeded(u64::from(calls));
    let phone = phone.stop();
    phone.assert_none_failed();
    assert_eq!(phone.logged("bye-reason").len(), calls as usize);
    // Each shard started some of them (both get none with odds of 2 in 2^40).
    let on: Vec<u64> = (0..2)
        .map(|k| sbcd.stat(&format!("sip.shard.{k}.calls_started")))
        .collect();
    eprintln!("SHARDS: calls started per shard {on:?}");
    assert!(on.iter().all(|n| *n > 0), "{on:?}");
    assert_eq!(on.iter().sum::<u64>(), u64::from(calls));
    assert_eq!(sbcd.stat("sip.calls_started"), u64::from(calls));
    assert!(sbcd.stat("sip.peer_records_applied") > 0);
    assert_eq!(sbcd.system_state().active_sessions, 0);
    registrar.stop().assert_none_failed();
}

#[test]
fn registration_is_cached_then_expires() {
    let registrar = core_uas();
    let sbcd = Sbcd::start(SbcdConfig::with_upstreams(&[registrar.port()]));

    let registered_at = Instant::now();
    Sipp::uac("register.xml", sbcd.access())
        .service("dave")
        .key("expires", "2")
        .calls(1)
        .run()
        .assert_all_succeeded(1);

    let regs = sbcd.registrations();
    let dave = regs
        .iter()
        .find(|r| r.aor.contains("dave@127.0.0.1"))
        .unwrap_or_else(|| panic!("dave is cached: {regs:?}"));
    assert!(dave.expires_in_secs <= 2, "granted 2 s: {dave:?}");
    assert_eq!(sbcd.system_state().registrations, 1);

    wait_for("dave's binding to expire", PATIENCE, || {
        sbcd.registrations().is_empty().then_some(())
    });
    let lived = registered_at.elapsed();
    eprintln!("registration with Expires: 2 left the cache after {lived:?}");
    assert!(
        lived >= Duration::from_millis(1500),
        "not before its expiry"
    );
    assert_eq!(sbcd.system_state().registrations, 0);
}

#[test]
fn show_registrations_lists_a_cache_of_many_pages_whole_and_in_order() {
    // The engine reads the cache 1000 bindings per turn of its loop, SIP in between: the
    // listing must come out whole across pages, each binding once, in (AoR, contact) order.
    const PHONES: u64 = 2_500;
    let registrar = core_uas();
    let sbcd = Sbcd::start(SbcdConfig::with_upstreams(&[registrar.port()]));
    Sipp::uac("register_numbered.xml", sbcd.access())
        .service("pager")
        .key("expires", "600")
        .calls(PHONES as u32)
        .rate(1_000)
        .run()
        .assert_all_succeeded(PHONES);
    assert_eq!(sbcd.system_state().registrations, PHONES);
    let listed = sbcd.registrations();
    assert_eq!(listed.len() as u64, PHONES, "every binding, once");
    assert!(
        listed
            .windows(2)
            .all(|w| (&w[0].aor, &w[0].contact) < (&w[1].aor, &w[1].contact)),
        "in (AoR, contact) order, no binding twice"
    );
}

#[test]
fn cancelled_call_ends_cleanly() {
    let core = Sipp::uas("uas_ring_cancel.xml").start();
    let sbcd = Sbcd::start(SbcdConfig::with_upstreams(&[core.port()]));

    let phones = Sipp::uac("uac_cancel.xml", sbcd.access())
        .service("core-user")
        .key("caller", "erin")
        .calls(3)
        .rate(10)
        .run();

    phones.assert_all_succeeded(3);
    wait_for("no session left after the CANCELs", PATIENCE, || {
        (sbcd.system_state().active_sessions == 0).then_some(())
    });
    core.stop().assert_none_failed();
}

#[test]
fn call_over_tcp_on_the_access_side() {
    let core = core_uas();
    let sbcd = Sbcd::start(SbcdConfig::with_upstreams(&[core.port()]));

    let phones = Sipp::uac("uac_call.xml", sbcd.access())
        .tcp()
        .service("core-user")
        .key("caller", "frank")
        .calls(3)
        .rate(10)
        .hold_ms(200)
        .run();

    phones.assert_all_succeeded(3);
    assert!(
        sbcd.stat("transport.tcp.accepted") >= 1,
        "calls came over TCP"
    );
    assert_eq!(sbcd.system_state().active_sessions, 0);
    core.stop().assert_none_failed();
}
