//! Malformed input over UDP: `400 Bad Request` where a reply is possible, counted drops where
//! not, and the engine still serving calls afterwards.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::daemon::{Sbcd, SbcdConfig};
use common::net::{header, request, status_code, UdpPeer};
use common::sipp::Sipp;

/// How long to listen for an answer that should come at once.
const ANSWER: Duration = Duration::from_secs(2);
/// How long to listen for an answer that must not come.
const SILENCE: Duration = Duration::from_millis(300);

/// Requests a 400 can answer: Via, From, To, Call-ID and CSeq can all be read (a response must
/// echo them, RFC 3261 8.2.6.2), yet something else is broken.
fn answerable(port: u16, target: &str) -> Vec<(&'static str, Vec<u8>)> {
    let good = |id: &str| request("INVITE", &format!("sip:x@{target}"), port, id);
    vec![
        (
            "CSeq without a number",
            good("bad-2").replace("CSeq: 1 INVITE", "CSeq: one INVITE"),
        ),
        (
            "CSeq method differs from the request",
            good("bad-3").replace("CSeq: 1 INVITE", "CSeq: 1 BYE"),
        ),
        (
            "Content-Length beyond the datagram",
            good("bad-4").replace("Content-Length: 0", "Content-Length: 500"),
        ),
        (
            "Max-Forwards not a number",
            good("bad-5").replace("Max-Forwards: 70", "Max-Forwards: seventy"),
        ),
    ]
    .into_iter()
    .map(|(what, text)| (what, text.into_bytes()))
    .collect()
}

/// Datagrams nothing can be answered to: not SIP, no readable Via, a header a response must
/// echo is missing, or a response nobody asked for. Dropped and counted.
fn unanswerable(port: u16, target: &str) -> Vec<(&'static str, Vec<u8>)> {
    let good = |id: &str| request("INVITE", &format!("sip:x@{target}"), port, id);
    let without = |text: String, name: &str| {
        text.split("\r\n")
            .filter(|l| !l.starts_with(name))
            .collect::<Vec<_>>()
            .join("\r\n")
    };
    vec![
        ("binary noise", (0u8..=255).rev().cycle().take(700).collect()),
        ("text that is not SIP", b"hello sbcd, this is not SIP\r\n\r\n".to_vec()),
        ("a start line only", b"INVITE sip:x@y SIP/2.0\r\n\r\n".to_vec()),
        ("a bad SIP version", b"INVITE sip:x@y SIP/7.0\r\nVia: nowhere\r\n\r\n".to_vec()),
        ("NUL bytes in the Via", b"OPTIONS sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP \x00\x00\x00\r\n\r\n".to_vec()),
        ("no Call-ID", without(good("bad-1"), "Call-ID:").into_bytes()),
        ("no From", without(good("bad-6"), "From:").into_bytes()),
        ("a response nobody asked for", b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKnope\r\nCall-ID: stray\r\nCSeq: 1 INVITE\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nContent-Length: 0\r\n\r\n".to_vec()),
    ]
}

#[test]
fn malformed_input_gets_400_or_is_dropped_and_calls_still_work() {
    let core = Sipp::uas("uas_answer.xml").start();
    let sbcd = Sbcd::start(SbcdConfig::with_upstreams(&[core.port()]));
    let peer = UdpPeer::bind();
    let target = sbcd.access().to_string();

    let answerable = answerable(peer.port(), &target);
    let unanswerable = unanswerable(peer.port(), &target);

    let mut wrong = Vec::new();
    let bad_before = sbcd.stat("sip.bad_requests");
    for (what, bytes) in &answerable {
        peer.send(sbcd.access(), bytes);
        match peer.recv(ANSWER) {
            Some(answer) if status_code(&answer) == Some(400) => eprintln!("{what}: 400"),
            Some(answer) => wrong.push(format!("{what}: answered {:?}", first_line(&answer))),
            None => wrong.push(format!("{what}: no 400")),
        }
    }
    let answered = sbcd.stat("sip.bad_requests") - bad_before;

    let dropped_before = sbcd.stat("sip.malformed_dropped") + sbcd.stat("sip.stray_responses");
    for (what, bytes) in &unanswerable {
        peer.send(sbcd.access(), bytes);
        match peer.recv(SILENCE) {
            Some(answer) => wrong.push(format!("{what}: answered {:?}", first_line(&answer))),
            None => eprintln!("{what}: dropped"),
        }
    }
    let dropped =
        sbcd.stat("sip.malformed_dropped") + sbcd.stat("sip.stray_responses") - dropped_before;
    eprintln!(
        "malformed input: {answered} of {} answered 400, {dropped} of {} dropped and counted",
        answerable.len(),
        unanswerable.len()
    );

    // The engine still serves a call.
    Sipp::uac("uac_call.xml", sbcd.access())
        .service("core-user")
        .key("caller", "after-garbage")
        .calls(1)
        .hold_ms(100)
        .run()
        .assert_all_succeeded(1);

    assert!(wrong.is_empty(), "wrong handling:\n{}", wrong.join("\n"));
    assert_eq!(answered, answerable.len() as u64, "each 400 is counted");
    assert_eq!(dropped, unanswerable.len() as u64, "each drop is counted");
    core.stop().assert_none_failed();
}

fn first_line(msg: &str) -> &str {
    msg.lines().next().unwrap_or_default()
}

/// A caller that missed the 200 (it never ACKs the first) must get the callee's
/// retransmissions through sbcd (RFC 3261 16.7: a proxy forwards 2xx retransmissions), or the
/// call hangs on any lost datagram.
#[test]
fn a_retransmitted_200_reaches_a_caller_that_missed_the_first() {
    let core = Sipp::uas("uas_answer.xml").start();
    let sbcd = Sbcd::start(SbcdConfig::with_upstreams(&[core.port()]));
    let phone = UdpPeer::bind();
    let uri = format!("sip:core-user@{}", sbcd.access());
    let invite = request("INVITE", &uri, phone.port(), "missed-200").replace(
        "Max-Forwards: 70\r\n",
        &format!(
            "Max-Forwards: 70\r\nContact: <sip:tester@127.0.0.1:{}>\r\n",
            phone.port()
        ),
    );
    phone.send(sbcd.access(), invite.as_bytes());

    let first = wait_ok(&phone, "the first 200");
    let again = wait_ok(&phone, "the retransmitted 200");

    // Now end the call properly: ACK and BYE along the Record-Route set, reversed.
    let to = header(&again, "To").unwrap_or_default();
    let contact = header(&again, "Contact").unwrap_or_default();
    let target = contact
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap_or_default()
        .to_owned();
    let mut routes: Vec<String> = again
        .split("\r\n")
        .filter_map(|l| l.strip_prefix("Record-Route:"))
        .flat_map(|v| {
            v.split(',')
                .map(|r| r.trim().to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    routes.reverse();
    let in_dialog = |method: &str, cseq: u32, branch: &str| {
        format!(
            "{method} {target} SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{branch}\r\n\
             Route: {routes}\r\n\
             From: <sip:tester@127.0.0.1:{port}>;tag=t-missed-200\r\n\
             To: {to}\r\n\
             Call-ID: missed-200\r\n\
             CSeq: {cseq} {method}\r\n\
             Max-Forwards: 70\r\n\
             Content-Length: 0\r\n\r\n",
            port = phone.port(),
            routes = routes.join(", "),
        )
    };
    phone.send(sbcd.access(), in_dialog("ACK", 1, "ack-1").as_bytes());
    phone.send(sbcd.access(), in_dialog("BYE", 2, "bye-1").as_bytes());
    let bye_answer = phone.recv_response_to("BYE", ANSWER);

    assert_eq!(status_code(&first), Some(200));
    assert_eq!(status_code(&again), Some(200));
    assert_eq!(
        bye_answer.as_deref().and_then(status_code),
        Some(200),
        "the call ends"
    );
    let core = core.stop();
    core.assert_none_failed();
    assert_eq!(core.logged("bye-reason").len(), 1);
}

/// The next 200 to the INVITE within two retransmission intervals (or the test fails).
fn wait_ok(phone: &UdpPeer, what: &str) -> String {
    loop {
        let msg = phone
            .recv_response_to("INVITE", Duration::from_secs(3))
            .unwrap_or_else(|| panic!("no {what}"));
        if status_code(&msg) == Some(200) {
            return msg;
        }
    }
}

/// Noise on a SIP TCP connection cannot be framed: sbcd closes that connection (counting it)
/// and keeps serving calls over TCP.
#[test]
fn garbage_on_a_tcp_connection_closes_it_and_calls_still_work() {
    let core = Sipp::uas("uas_answer.xml").start();
    let sbcd = Sbcd::start(SbcdConfig::with_upstreams(&[core.port()]));
    let framing_before = sbcd.stat("transport.tcp.framing_errors");

    let mut noisy = TcpStream::connect(sbcd.access()).expect("connect over TCP");
    let noise: Vec<u8> = (0u8..=255).cycle().take(70_000).collect();
    // sbcd may close the connection before it has read everything: a failed write is fine.
    let _ = noisy.write_all(&noise);
    let _ = noisy.write_all(b"\r\n\r\n");
    let _ = noisy.set_read_timeout(Some(common::PATIENCE));
    // Everything sbcd sends until it closes; the close must be a FIN (a read of 0), never a
    // reset or silence.
    let mut answer = Vec::new();
    let closed = loop {
        let mut buf = [0u8; 2048];
        match noisy.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) => break Err(e),
        }
    };
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let framing_errors = sbcd.stat("transport.tcp.framing_errors") - framing_before;
    eprintln!(
        "TCP noise: answered {:?}, framing errors counted {framing_errors}",
        first_line(&answer)
    );

    Sipp::uac("uac_call.xml", sbcd.access())
        .tcp()
        .service("core-user")
        .key("caller", "after-noise")
        .calls(1)
        .hold_ms(100)
        .run()
        .assert_all_succeeded(1);

    assert!(
        closed.is_ok(),
        "noise gets the connection closed with a FIN: {closed:?}"
    );
    assert!(
        answer.is_empty() || status_code(&answer) == Some(400),
        "noise gets nothing but a 400 before the close: {answer:?}"
    );
    assert!(framing_errors >= 1, "the bad stream is counted");
    core.stop().assert_none_failed();
}
