//! The border of SPEC §1a tried the way an attacker on the access side would, through the real
//! `sbcd` on loopback: one test per finding of issue 11, each asserting the property an operator
//! relies on (nothing reaches a third party, a forged answer changes nothing, a silent source
//! gets back at most 3x what it sent, memory stays bounded and calls go on under a flood), never
//! the mechanism that gives it. A real scanner (sipvicious' svmap and svwar) tries it too.
//!
//! Traffic goes only to 127.0.0.0/8: the attacker, the flooder and the third party are other
//! loopback addresses (Linux routes the whole /8 to `lo`).
//!
//! Several properties are about what sbcd would send *later* (retransmissions). sbcd's RFC 3261
//! timers cannot be shortened from its configuration, so the tests use sbcd's own Timer E as the
//! clock: a request it forwards to an upstream that never answers is sent again after 0.5, 1.5,
//! 3.5, 7.5, 11.5 s (T1 = 500 ms doubling up to T2 = 4 s). Timers A (INVITE requests) and G
//! (INVITE responses) run on the same base, so once the marker has been retransmitted `n` times
//! after some moment, anything sbcd had sent statefully before that moment has been
//! retransmitted `n` times too (the engine is one thread and handles its timers in deadline
//! order). Waiting for those arrivals is waiting for an event, not for a guessed time.

// A test's set-up failing (a socket, /proc) is a test failure: panicking with a message is the
// right answer there.
#![allow(clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::daemon::{Sbcd, SbcdConfig};
use common::net::{header, status_code, UdpPeer};
use common::sipp::Sipp;
use common::{wait_for, PATIENCE};
use control::SystemState;

/// The attacker's host on the access side.
const ATTACKER: [u8; 4] = [127, 0, 0, 66];
/// A host nobody configured: the relay test's would-be destination.
const THIRD_PARTY: [u8; 4] = [127, 0, 0, 9];
/// The flooding host.
const FLOODER: [u8; 4] = [127, 0, 0, 2];

/// A request from `from` with `extra` header lines, Content-Length 0.
fn sip_request(
    method: &str,
    uri: &str,
    from: SocketAddr,
    call_id: &str,
    to_tag: Option<&str>,
    extra: &[String],
) -> String {
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    let mut extra_lines = String::new();
    for line in extra {
        extra_lines.push_str(line);
        extra_lines.push_str("\r\n");
    }
    format!(
        "{method} {uri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {from};branch=z9hG4bK-{call_id}\r\n\
         From: <sip:attacker@{from}>;tag=f-{call_id}\r\n\
         To: <{uri}>{to_tag}\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 {method}\r\n\
         Max-Forwards: 70\r\n\
         {extra_lines}\
         Content-Length: 0\r\n\r\n"
    )
}

/// A response to `request` (its text as an upstream received it) with the given start line,
/// echoing what RFC 3261 8.2.6.2 requires (Via, From, To with a tag, Call-ID, CSeq) and, for a
/// REGISTER, its Contact and Expires: what the real upstream would have sent.
fn forge_response(request: &str, status_line: &str, extra: &[&str]) -> String {
    let mut out = format!("{status_line}\r\n");
    for line in request.lines().skip(1).map(str::trim_end) {
        if line.is_empty() {
            break;
        }
        let name = line.split(':').next().unwrap_or_default().trim();
        let keep = ["Via", "From", "Call-ID", "CSeq", "Contact", "Expires"]
            .iter()
            .any(|k| k.eq_ignore_ascii_case(name));
        if name.eq_ignore_ascii_case("To") {
            out.push_str(line);
            out.push_str(";tag=forged\r\n");
        } else if keep {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    for line in extra {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}

/// sbcd's Timer E seen at an upstream that never answers (see the module doc).
struct RetransmissionClock {
    upstream: UdpPeer,
    call_id: String,
    arrivals: usize,
}

impl RetransmissionClock {
    /// Sends the marker (an OPTIONS for a user behind the box, which sbcd forwards to its
    /// upstream) from `from` and waits for its first arrival at `upstream`.
    fn start(sbcd: &Sbcd, from: &UdpPeer, upstream: UdpPeer, name: &str) -> RetransmissionClock {
        let call_id = format!("clock-{name}");
        let marker = sip_request(
            "OPTIONS",
            &format!("sip:clock@{}", sbcd.access()),
            from.addr(),
            &call_id,
            None,
            &[],
        );
        from.send(sbcd.access(), marker.as_bytes());
        let mut clock = RetransmissionClock {
            upstream,
            call_id,
            arrivals: 0,
        };
        clock.wait_arrivals(1, || {});
        clock
    }

    /// Waits for `n` more arrivals of the marker (each a retransmission by sbcd), calling
    /// `tick` after each, so a test can read its sockets while it waits.
    fn wait_arrivals(&mut self, n: usize, mut tick: impl FnMut()) {
        let target = self.arrivals + n;
        // The longest gap between two arrivals is T2 (4 s); give a loaded machine slack.
        let deadline = Instant::now() + PATIENCE + Duration::from_secs(4) * n as u32;
        while self.arrivals < target {
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| {
                    panic!(
                        "timed out waiting for retransmission {} of the marker",
                        self.arrivals
                    )
                });
            if let Some(msg) = self.upstream.recv(left.min(Duration::from_millis(200))) {
                if header(&msg, "Call-ID").as_deref() == Some(self.call_id.as_str()) {
                    self.arrivals += 1;
                    tick();
                }
            } else {
                tick();
            }
        }
    }
}

/// Finding 1, open relay: requests for a dialog sbcd does not know, carrying a Route to sbcd
/// and a Request-URI at a third party, must not reach that third party, whatever the method.
///
/// The third party is a socket of the test on 127.0.0.9, so every datagram there is counted.
/// When is "never" established? The marker of the retransmission clock goes out on the same
/// socket after the six requests; sbcd reads one socket in order and sends what a request makes
/// it send in the same step, so once the marker reaches the upstream every first transmission
/// of the six has happened. A retransmission presupposes a first transmission; the marker's
/// three retransmissions (3.5 s) are waited for anyway, the window in which the old code sent
/// 17 datagrams for these 6 requests. Answers are not required (the property is what does not
/// leave), only reported.
#[test]
fn open_relay_nothing_reaches_a_third_party() {
    let upstream = UdpPeer::bind();
    let sbcd = Sbcd::start(SbcdConfig::with_upstreams(&[upstream.port()]));
    let third_party = UdpPeer::bind_ip(THIRD_PARTY);
    let attacker = UdpPeer::bind_ip(ATTACKER);
    let uri = format!("sip:x@{}", third_party.addr());
    let route = format!("Route: <sip:{};lr>", sbcd.access());

    for method in ["ACK", "MESSAGE", "INVITE", "BYE", "OPTIONS", "NOTIFY"] {
        let req = sip_request(
            method,
            &uri,
            attacker.addr(),
            &format!("relay-{method}"),
            Some("1"),
            std::slice::from_ref(&route),
        );
        attacker.send(sbcd.access(), req.as_bytes());
    }
    let mut clock = RetransmissionClock::start(&sbcd, &attacker, upstream, "relay");
    let mut at_third_party = Vec::new();
    clock.wait_arrivals(3, || {
        while let Some(m) = third_party.recv(Duration::from_millis(1)) {
            at_third_party.push(m.lines().next().unwrap_or_default().to_owned());
        }
    });
    let mut answers = Vec::new();
    while let Some(answer) = attacker.recv(Duration::from_millis(1)) {
        answers.push(format!(
            "{} {}",
            header(&answer, "CSeq").unwrap_or_default(),
            status_code(&answer).unwrap_or_default()
        ));
    }
    eprintln!("RELAY: answers to the attacker: {answers:?}");
    assert!(
        at_third_party.is_empty(),
        "{} datagrams reached the third party: {at_third_party:?}",
        at_third_party.len()
    );
    eprintln!("RELAY: 0 datagrams at the third party");
}

/// Returns once sbcd has handled what `peer` sent to its core port so far: sbcd reads one socket
/// in order and answers an OPTIONS to itself at once, so its answer comes after everything
/// before it was handled.
fn handled(sbcd: &Sbcd, peer: &UdpPeer, call_id: &str) {
    handled_on(sbcd.core(), peer, call_id);
}

/// As [`handled`], for what `peer` sent to the sbcd port `port`.
fn handled_on(port: SocketAddr, peer: &UdpPeer, call_id: &str) {
    let options = sip_request(
        "OPTIONS",
        &format!("sip:{port}"),
        peer.addr(),
        call_id,
        None,
        &[],
    );
    peer.send(port, options.as_bytes());
    wait_for(
        "sbcd to answer an OPTIONS after the forgeries",
        PATIENCE,
        || {
            peer.recv(Duration::from_millis(200))
                .filter(|m| header(m, "Call-ID").as_deref() == Some(call_id))
        },
    );
}

/// Finding 2, forged responses: answers forged by a host the request was not sent to, even with
/// the right branch (the strongest attacker: it read the request), change nothing. A forged 200
/// to a REGISTER caches no binding; a forged `503 Retry-After: 4294967295` takes no upstream out
/// of rotation, and calls go on.
#[test]
fn forged_responses_change_nothing() {
    let attacker = UdpPeer::bind_ip(ATTACKER);

    // A registrar that never answers: the REGISTER's transaction stays open for the forgeries.
    let registrar = UdpPeer::bind();
    let sbcd = Sbcd::start(SbcdConfig::with_upstreams(&[registrar.port()]));
    let register = sip_request(
        "REGISTER",
        "sip:example.com",
        attacker.addr(),
        "reg-victim",
        None,
        &[
            format!("Contact: <sip:victim@{}>", attacker.addr()),
            "Expires: 3600".to_owned(),
        ],
    )
    .replace(
        &format!("From: <sip:attacker@{}>", attacker.addr()),
        "From: <sip:victim@example.com>",
    )
    .replace("To: <sip:example.com>", "To: <sip:victim@example.com>");
    attacker.send(sbcd.access(), register.as_bytes());
    let at_registrar = wait_for("the REGISTER at the registrar", PATIENCE, || {
        registrar
            .recv(Duration::from_millis(200))
            .filter(|m| m.starts_with("REGISTER "))
    });
    let forged = forge_response(&at_registrar, "SIP/2.0 200 OK", &[]);
    for _ in 0..5 {
        attacker.send(sbcd.core(), forged.as_bytes());
    }
    handled(&sbcd, &attacker, "forged-200");
    let registrations = sbcd.registrations();
    assert!(
        registrations.is_empty(),
        "a forged 200 created bindings: {registrations:?}"
    );
    drop(sbcd);

    // A real upstream that rings for 2 s: time for a forged 503 during the call's INVITE.
    let core = Sipp::uas("uas_answer.xml")
        .hold_ms(2000)
        .trace_messages()
        .start();
    let sbcd = Sbcd::start(SbcdConfig::with_upstreams(&[core.port()]));
    let call = Sipp::uac("uac_call.xml", sbcd.access())
        .service("core-user")
        .key("caller", "forged-503")
        .calls(1)
        .hold_ms(100)
        .start();
    let invite = core.wait_received("INVITE", |_| true);
    let forged = forge_response(
        &invite,
        "SIP/2.0 503 Service Unavailable",
        &["Retry-After: 4294967295"],
    );
    attacker.send(sbcd.core(), forged.as_bytes());
    handled(&sbcd, &attacker, "forged-503");
    let upstreams = sbcd.upstreams();
    assert!(
        upstreams.iter().all(|u| u.status == "in-rotation"),
        "a forged 503 took an upstream out: {upstreams:?}"
    );
    // The call it was forged against completes, and so does the next one.
    call.wait().assert_all_succeeded(1);
    Sipp::uac("uac_call.xml", sbcd.access())
        .service("core-user")
        .key("caller", "after-forgery")
        .calls(1)
        .hold_ms(100)
        .run()
        .assert_all_succeeded(1);
    core.stop();
}

/// What one never-answering source sent and got back.
struct Silent {
    what: &'static str,
    peer: UdpPeer,
    sent: usize,
    received: usize,
    codes: Vec<u16>,
}

impl Silent {
    fn new(what: &'static str) -> Silent {
        Silent {
            what,
            peer: UdpPeer::bind_ip(ATTACKER),
            sent: 0,
            received: 0,
            codes: Vec::new(),
        }
    }

    fn send(&mut self, to: SocketAddr, bytes: &[u8]) {
        self.peer.send(to, bytes);
        self.sent += bytes.len();
    }

    /// Reads what arrived, waiting up to `timeout` for the first datagram.
    fn read(&mut self, timeout: Duration) {
        let mut wait = timeout;
        while let Some(bytes) = self.peer.recv_bytes(wait) {
            self.received += bytes.len();
            if let Some(code) = status_code(&String::from_utf8_lossy(&bytes)) {
                self.codes.push(code);
            }
            wait = Duration::from_millis(1);
        }
    }

    /// Waits for sbcd's first answer.
    fn wait_answer(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        while self.codes.is_empty() {
            assert!(
                Instant::now() < deadline,
                "{}: sbcd did not answer within {PATIENCE:?}",
                self.what
            );
            self.read(Duration::from_millis(100));
        }
    }

    fn ratio(&self) -> f64 {
        self.received as f64 / self.sent as f64
    }
}

/// Finding 3, amplification: a source that sends one INVITE the box rejects itself and never
/// ACKs gets back at most 3x the bytes it sent. Three such INVITEs: Max-Forwards 0 (483), one
/// while offline (503), one padded with ~60 KB of Via (Max-Forwards 0 too, so the box answers
/// it itself). The window is five retransmissions of the marker after the last answer (at
/// least 7.5 s): the old code's Timer G would have re-sent each answer four or five times by
/// then (5x and more; it measured 9-11x over 40 s).
#[test]
fn amplification_a_silent_source_gets_at_most_three_times_what_it_sent() {
    let upstream = UdpPeer::bind();
    let sbcd = Sbcd::start(SbcdConfig::with_upstreams(&[upstream.port()]));
    let clock_from = UdpPeer::bind();
    let mut clock = RetransmissionClock::start(&sbcd, &clock_from, upstream, "amplification");
    let uri = format!("sip:+15550001@{}", sbcd.access());

    let mut hops = Silent::new("Max-Forwards 0");
    let invite = sip_request("INVITE", &uri, hops.peer.addr(), "amp-483", None, &[])
        .replace("Max-Forwards: 70", "Max-Forwards: 0");
    hops.send(sbcd.access(), invite.as_bytes());
    hops.wait_answer();

    let mut padded = Silent::new("60 KB of Via, Max-Forwards 0");
    // 60 hops of ~1000 bytes: under the parser's 70-hop limit, one loopback datagram.
    let padding: Vec<String> = (0..60)
        .map(|i| {
            format!(
                "Via: SIP/2.0/UDP 127.0.0.66:{};branch=z9hG4bK-pad{i};x={}",
                5060 + i,
                "a".repeat(950)
            )
        })
        .collect();
    let invite = sip_request("INVITE", &uri, padded.peer.addr(), "amp-pad", None, &[])
        .replace("Max-Forwards: 70", "Max-Forwards: 0")
        .replace(
            "\r\nFrom:",
            &format!("\r\n{}\r\nFrom:", padding.join("\r\n")),
        );
    assert!(invite.len() > 60_000 && invite.len() < 65_000);
    padded.send(sbcd.access(), invite.as_bytes());
    padded.wait_answer();

    sbcd.drain(None);
    sbcd.wait_state(SystemState::Offline, PATIENCE);
    let mut offline = Silent::new("offline");
    let invite = sip_request("INVITE", &uri, offline.peer.addr(), "amp-503", None, &[]);
    offline.send(sbcd.access(), invite.as_bytes());
    offline.wait_answer();

    let mut cases = [hops, padded, offline];
    clock.wait_arrivals(5, || {
        for c in cases.iter_mut() {
            c.read(Duration::from_millis(1));
        }
    });
    for c in cases.iter_mut() {
        c.read(Duration::from_millis(50));
    }
    for c in &cases {
        eprintln!(
            "AMPLIFICATION: {}: sent {} B, got {} B back ({:.2}x), answers {:?}",
            c.what,
            c.sent,
            c.received,
            c.ratio(),
            c.codes
        );
    }
    for c in &cases {
        assert!(
            c.received <= 3 * c.sent,
            "{}: {} B back for {} B sent ({:.1}x)",
            c.what,
            c.received,
            c.sent,
            c.ratio()
        );
    }
}

/// Finding 3, the reflection half: a request replayed by someone else (same branch and sent-by,
/// another source) must not make sbcd re-send its answers to the request's real sender. A phone
/// calls a core that rings for 10 s; once it has its 180, the attacker replays the phone's
/// INVITE 20 times: the phone gets no further provisional response (the old code re-sent the
/// stored one to the phone for every replay).
#[test]
fn amplification_a_replayed_request_reflects_nothing_to_its_sender() {
    let core = Sipp::uas("uas_answer.xml").hold_ms(10_000).start();
    let sbcd = Sbcd::start(SbcdConfig::with_upstreams(&[core.port()]));
    let phone = UdpPeer::bind();
    let attacker = UdpPeer::bind_ip(ATTACKER);
    let invite = sip_request(
        "INVITE",
        &format!("sip:core-user@{}", sbcd.access()),
        phone.addr(),
        "reflect",
        None,
        &[format!("Contact: <sip:phone@{}>", phone.addr())],
    );
    phone.send(sbcd.access(), invite.as_bytes());
    wait_for("the phone's 180", PATIENCE, || {
        phone
            .recv_response_to("INVITE", Duration::from_millis(200))
            .filter(|m| status_code(m) == Some(180))
    });
    for _ in 0..20 {
        attacker.send(sbcd.access(), invite.as_bytes());
    }
    handled_on(sbcd.access(), &attacker, "after-replays");
    let mut reflected = Vec::new();
    while let Some(m) = phone.recv(Duration::from_millis(1)) {
        // The core's 200 may come at the end of its ring; only provisionals are reflections.
        if status_code(&m).is_some_and(|c| c < 200) {
            reflected.push(m.lines().next().unwrap_or_default().to_owned());
        }
    }
    eprintln!(
        "REFLECTION: 20 replays, {} provisional responses at the phone",
        reflected.len()
    );
    assert!(
        reflected.is_empty(),
        "replays by another source reached the phone: {reflected:?}"
    );
    core.stop();
}

/// VmHWM (peak resident set) of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

/// The flood's requests, all unique (new Call-ID, branch and tag each time): an OPTIONS and an
/// INVITE for users behind the box (forwarded: they cost a transaction, a dialog), and a BYE for
/// a dialog that does not exist (answered 481).
fn flood_request(i: u64, from: SocketAddr, box_addr: SocketAddr) -> String {
    let call_id = format!("flood-{i}");
    let uri = format!("sip:flood-{i}@{box_addr}");
    match i % 3 {
        0 => sip_request("OPTIONS", &uri, from, &call_id, None, &[]),
        1 => sip_request(
            "INVITE",
            &uri,
            from,
            &call_id,
            None,
            &[format!("Contact: <sip:flood@{from}>")],
        ),
        _ => sip_request("BYE", &uri, from, &call_id, Some("gone"), &[]),
    }
}

/// Datagrams a second the flood aims at (the attack ran at 20 000/s).
const FLOOD_RATE: u64 = 20_000;
/// Legitimate calls placed during the flood, and their rate (10 s of calls).
const LEGIT_CALLS: u32 = 200;
const LEGIT_RATE: u32 = 20;
/// The memory sbcd may reach under the flood. Why 64 MiB: an idle debug sbcd peaks at a few
/// MiB; a held transaction costs about 2.3 KB (measured in issue 11), and one source within its
/// budget (`per_source_rps` = 200, transactions living up to 32 s) holds at most ~6 400 of them,
/// ~15 MB, plus the legitimate calls. The old code reached 1.7 GiB under this flood.
const RSS_BOUND_KIB: u64 = 64 * 1024;

/// Finding 4, no bounds: a flood of unique requests from one host while SIPp places legitimate
/// calls from another: sbcd's peak RSS stays under [`RSS_BOUND_KIB`], at least 95 % of the
/// legitimate calls complete, and the counters show what was dropped.
#[test]
fn flood_memory_stays_bounded_and_calls_complete() {
    let core = Sipp::uas("uas_answer.xml").start();
    let sbcd = Sbcd::start(SbcdConfig::with_upstreams(&[core.port()]));
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let flooder = {
        let (stop, sent, target) = (Arc::clone(&stop), Arc::clone(&sent), sbcd.access());
        std::thread::spawn(move || {
            let peer = UdpPeer::bind_ip(FLOODER);
            let from = peer.addr();
            let started = Instant::now();
            // Paced in 5 ms slots: a load generator's pacing, not a wait for an event. It
            // stops when the legitimate calls are done, or once they have all been placed (10 s
            // at 20/s, 12 s with slack) and only stragglers are left (SIPp waits out a lost
            // call's timers), so the file stays within its minute.
            let slot = Duration::from_millis(5);
            let per_slot = FLOOD_RATE / 200;
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(12) {
                let slot_start = Instant::now();
                for _ in 0..per_slot {
                    peer.send(target, flood_request(i, from, target).as_bytes());
                    i += 1;
                }
                sent.store(i, Ordering::Relaxed);
                if let Some(rest) = slot.checked_sub(slot_start.elapsed()) {
                    std::thread::sleep(rest);
                }
            }
            started.elapsed()
        })
    };
    // The flood is on before the first legitimate call.
    wait_for("the flood to start", PATIENCE, || {
        (sent.load(Ordering::Relaxed) > 0).then_some(())
    });
    let calls = Sipp::uac("uac_call.xml", sbcd.access())
        .service("core-user")
        .key("caller", "legit")
        .calls(LEGIT_CALLS)
        .rate(LEGIT_RATE)
        .hold_ms(0)
        .time_limit(Duration::from_secs(60))
        .run();
    stop.store(true, Ordering::Relaxed);
    let flood_time = flooder.join().expect("the flood thread");
    let flood_sent = sent.load(Ordering::Relaxed);
    let peak = peak_rss_kib(sbcd.pid());
    let ok = calls.successful();
    eprintln!(
        "FLOOD: {flood_sent} requests in {:.1} s ({:.0}/s) from {FLOODER:?}; sbcd peak RSS \
         {:.1} MiB (bound {} MiB); legitimate calls {ok}/{LEGIT_CALLS} ({:.1} %)",
        flood_time.as_secs_f64(),
        flood_sent as f64 / flood_time.as_secs_f64(),
        peak as f64 / 1024.0,
        RSS_BOUND_KIB / 1024,
        100.0 * ok as f64 / f64::from(LEGIT_CALLS),
    );
    assert!(
        peak < RSS_BOUND_KIB,
        "sbcd peaked at {peak} KiB under the flood (bound {RSS_BOUND_KIB} KiB)"
    );
    assert!(
        ok * 100 >= u64::from(LEGIT_CALLS) * 95,
        "only {ok} of {LEGIT_CALLS} legitimate calls completed\n{}",
        calls.details()
    );
    let (rate_limited, cap_rejected, unknown_dialog) = (
        sbcd.stat("sip.rate_limited"),
        sbcd.stat("sip.cap_rejected"),
        sbcd.stat("sip.unknown_dialog"),
    );
    eprintln!(
        "FLOOD: rate_limited {rate_limited}, cap_rejected {cap_rejected}, \
         unknown_dialog {unknown_dialog}"
    );
    assert!(
        rate_limited > 0,
        "the flood was over its source's budget, yet no drop was counted"
    );
    // The core answered the flood's admitted INVITEs, which the flooder never ACKs: the UAS's
    // failed calls are the flood's, not the legitimate ones.
    core.stop();
}

/// Whether a scanner from the Debian package `sipvicious` is on PATH. Outside CI a missing
/// scanner skips the test with a message; under `CI=true` it fails it: CI must run it
/// (`cargo xtask test` installs the package).
fn scanner_available(tool: &str) -> bool {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool} >/dev/null 2>&1")])
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{tool} is missing under CI=true; install the Debian package sipvicious \
             (cargo xtask test does)"
        );
        eprintln!("SKIPPED: {tool} not found; install the Debian package sipvicious");
    }
    found
}

/// Runs a sipvicious scanner with a bound on its run time; returns what it printed (stdout and
/// stderr: it reports through both).
fn scan(tool: &str, args: &[String]) -> String {
    let out = std::process::Command::new("timeout")
        .arg("120")
        .arg(tool)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {tool}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{tool} {}: {}\n{text}", args.join(" "), out.status);
    assert!(
        out.status.code() != Some(124),
        "{tool} did not finish in 120 s"
    );
    text
}

/// A real scanner: `svmap` (OPTIONS sweep, fingerprinting from Server/User-Agent) and `svwar`
/// (extension enumeration by REGISTER and by INVITE over a small range) against the access
/// port, with a core behind the box that answers everyone alike. sbcd stays up (answers OPTIONS
/// after), svmap cannot name what it found (no product, no version), and svwar finds no
/// extension: sbcd's own answers do not differ by extension.
#[test]
fn scanners_learn_nothing_and_sbcd_stays_up() {
    if !scanner_available("svmap") || !scanner_available("svwar") {
        return;
    }
    let core = Sipp::uas("uas_answer.xml").start();
    let sbcd = Sbcd::start(SbcdConfig::with_upstreams(&[core.port()]));
    let target = "127.0.0.1".to_owned();
    let port = format!("-p{}", sbcd.access().port());
    // Its own source port and address, so that it needs neither 5060 nor a guess at our IP.
    let local = |p: u16| {
        vec![
            "-P".to_owned(),
            p.to_string(),
            "-x".to_owned(),
            target.clone(),
        ]
    };

    let mut args = vec![port.clone()];
    args.extend(local(common::net::free_port()));
    args.push(target.clone());
    let map = scan("svmap", &args);
    let row = map
        .lines()
        .find(|l| l.contains(&sbcd.access().to_string()))
        .unwrap_or_else(|| panic!("svmap did not list sbcd at all:\n{map}"));
    assert!(
        row.contains("unknown"),
        "svmap named what it found: {row:?}"
    );
    let lower = map.to_ascii_lowercase();
    assert!(
        !lower.contains("sbc") && !lower.contains(env!("CARGO_PKG_VERSION")),
        "svmap's report names the product or its version:\n{map}"
    );

    for method in ["REGISTER", "INVITE"] {
        let mut args = vec![port.clone(), "-m".to_owned(), method.to_owned()];
        args.extend(["-e".to_owned(), "100-130".to_owned()]);
        args.extend(local(common::net::free_port()));
        args.push(target.clone());
        let war = scan("svwar", &args);
        assert!(
            war.contains("found nothing") && !war.contains("| Extension"),
            "svwar ({method}) told extensions apart:\n{war}"
        );
    }

    // Still up: sbcd answers an OPTIONS to itself.
    let peer = UdpPeer::bind();
    let options = sip_request(
        "OPTIONS",
        &format!("sip:{}", sbcd.access()),
        peer.addr(),
        "after-scan",
        None,
        &[],
    );
    peer.send(sbcd.access(), options.as_bytes());
    let answer = peer.recv_response_to("OPTIONS", PATIENCE);
    assert_eq!(
        answer.as_deref().and_then(status_code),
        Some(200),
        "sbcd does not answer after the scans"
    );
    eprintln!(
        "SCAN: svmap saw {row:?}; svwar REGISTER and INVITE over 100-130 found nothing; sbcd \
         answers OPTIONS 200"
    );
    core.stop();
}
