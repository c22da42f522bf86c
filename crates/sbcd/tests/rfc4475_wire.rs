//! Every message of RFC 4475 (SIP torture tests) sent to a running sbcd's access port as a
//! datagram: what the box answers, and whether anything of it leaves towards the core. The
//! parser's verdicts are tested in crates/sip; this is what the daemon does with them on the
//! wire.

// Test helpers outside #[test] functions may expect: a failure is the test failing.
#![allow(clippy::expect_used)]

mod common;

use std::net::{SocketAddr, UdpSocket};

use common::daemon::{Sbcd, SbcdConfig};
use common::net::{header, status_code};
use common::PATIENCE;

/// What the box does with one message: the status it answers with (None: no answer) and
/// whether it forwards the message towards the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Outcome {
    answer: Option<u16>,
    forwarded: bool,
}

const fn answered(code: u16) -> Outcome {
    Outcome {
        answer: Some(code),
        forwarded: false,
    }
}
const DROPPED: Outcome = Outcome {
    answer: None,
    forwarded: false,
};
/// Forwarded to the (silent) upstream; an INVITE also gets its 100 Trying at once.
const fn forwarded(trying: bool) -> Outcome {
    Outcome {
        answer: if trying { Some(100) } else { None },
        forwarded: true,
    }
}

/// RFC 4475's messages and what the box must do with each (the RFC's expectation of a proxy,
/// and SPEC §1a where the border is stricter).
const EXPECTED: &[(&str, Outcome)] = &[
    // 3.1.1: valid; every one goes on to the core, INVITEs with a 100 Trying.
    // wsinv carries a To tag of a dialog the box never saw: 481, the border's rule (SPEC §1a).
    ("wsinv", answered(481)),
    ("intmeth", forwarded(false)),
    ("esc01", forwarded(true)),
    ("escnull", forwarded(false)),
    ("esc02", forwarded(false)),
    ("lwsdisp", forwarded(false)),
    ("longreq", forwarded(true)),
    ("dblreq", forwarded(false)),
    ("semiuri", forwarded(false)),
    ("transports", forwarded(false)),
    ("mpart01", forwarded(false)),
    // Responses nobody asked for: dropped.
    ("unreason", DROPPED),
    ("noreason", DROPPED),
    // 3.1.2: invalid; 400 where a reply can be built, never forwarded.
    ("badinv01", answered(400)),
    ("clerr", answered(400)),
    ("ncl", answered(400)),
    ("scalar02", answered(400)),
    ("scalarlg", DROPPED),
    ("quotbal", answered(400)),
    ("ltgtruri", answered(400)),
    ("lwsruri", answered(400)),
    ("lwsstart", answered(400)),
    ("trws", answered(400)),
    ("escruri", answered(400)),
    // A bad Date is the endpoint's business.
    ("baddate", forwarded(true)),
    ("regbadct", answered(400)),
    ("badaspec", answered(400)),
    ("baddn", answered(400)),
    ("badvers", answered(505)),
    ("mismatch01", answered(400)),
    ("mismatch02", answered(400)),
    ("bigcode", DROPPED),
    // 3.2: a bare magic cookie is matched the RFC 2543 way and forwarded.
    ("badbranch", forwarded(false)),
    // 3.3: application layer.
    // No Call-ID, From or To: nothing to echo in an answer, so dropped and counted.
    ("insuf", DROPPED),
    ("unkscm", answered(416)),
    ("novelsc", answered(416)),
    ("unksm2", forwarded(false)),
    ("bext01", answered(420)),
    ("invut", forwarded(true)),
    ("regaut01", forwarded(false)),
    ("multi01", answered(400)),
    ("mcl01", answered(400)),
    ("bcast", DROPPED),
    ("zeromf", answered(483)),
    ("cparam01", forwarded(false)),
    ("cparam02", forwarded(false)),
    ("regescrt", forwarded(false)),
    ("sdp01", forwarded(true)),
    // 3.4: RFC 2543 syntax.
    ("inv2543", forwarded(true)),
];

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../sip/tests/rfc4475/{name}.dat",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn fixtures() -> Vec<String> {
    let dir = format!("{}/../sip/tests/rfc4475", env!("CARGO_MANIFEST_DIR"));
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("the RFC 4475 fixtures")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".dat")
                .map(String::from)
        })
        .collect();
    names.sort();
    names
}

/// The Call-ID of a message text (full or compact name), if it has one.
fn call_id(text: &str) -> Option<String> {
    header(text, "Call-ID").or_else(|| header(text, "i"))
}

/// Datagrams arriving at `socket` until one carries `sentinel` as its Call-ID; the others.
fn until_sentinel(socket: &UdpSocket, sentinel: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 65536];
    socket
        .set_read_timeout(Some(PATIENCE))
        .expect("a read timeout");
    loop {
        let (n, _) = socket
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("waiting for {sentinel}: {e}"));
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if call_id(&text).as_deref() == Some(sentinel) {
            return seen;
        }
        seen.push(text);
    }
}

fn sentinel(method_uri: &str, port: u16, id: &str) -> String {
    format!(
        "OPTIONS {method_uri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{id}\r\n\
         From: <sip:tester@127.0.0.1>;tag={id}\r\n\
         To: <{method_uri}>\r\n\
         Call-ID: {id}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Max-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

#[test]
fn every_rfc4475_message_gets_what_the_rfc_asks_of_a_proxy_on_the_wire() {
    let upstream = UdpSocket::bind("127.0.0.1:0").unwrap();
    let upstream_port = upstream.local_addr().unwrap().port();
    let mut config = SbcdConfig::with_upstreams(&[upstream_port]);
    config.probe_interval_secs = 3600;
    // The sentinels below bound the box's answers to a message only when one shard judges
    // both in order: with several, each goes to the shard of its own Call-ID.
    config.workers = 1;
    let sbcd = Sbcd::start(config);
    let phone_socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let phone_port = phone_socket.local_addr().unwrap().port();
    let access: SocketAddr = sbcd.access();

    let mut got = Vec::new();
    let mut transactions_seen = Vec::new();
    for (i, name) in fixtures().iter().enumerate() {
        let bytes = unique_transaction(fixture(name), name, &mut transactions_seen);
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let id = call_id(&text);
        phone_socket.send_to(&bytes, access).unwrap();
        // Everything the box does with one datagram happens before it reads the next (one
        // shard, in order): a sentinel answered by the box bounds its answers, and a
        // sentinel it forwards bounds what it forwarded.
        let to_box = format!("sentinel-box-{i}");
        phone_socket
            .send_to(
                sentinel(&format!("sip:{access}"), phone_port, &to_box).as_bytes(),
                access,
            )
            .unwrap();
        let to_core = format!("sentinel-core-{i}");
        phone_socket
            .send_to(
                sentinel("sip:sentinel@example.com", phone_port, &to_core).as_bytes(),
                access,
            )
            .unwrap();
        let answers: Vec<u16> = until_sentinel(&phone_socket, &to_box)
            .iter()
            .filter(|a| id.is_some() && call_id(a) == id)
            .filter_map(|a| status_code(a))
            .collect();
        let forwarded = until_sentinel(&upstream, &to_core)
            .iter()
            .any(|m| !m.starts_with("SIP/2.0 ") && (id.is_none() || call_id(m) == id));
        got.push((name.clone(), answers, forwarded));
    }
    let mut wrong = Vec::new();
    for (name, answers, forwarded) in &got {
        eprintln!("RFC4475 {name}: answered {answers:?}, forwarded {forwarded}");
        let outcome = Outcome {
            answer: answers.first().copied(),
            forwarded: *forwarded,
        };
        match EXPECTED.iter().find(|(n, _)| n == name) {
            Some((_, expected)) if *expected == outcome && answers.len() <= 1 => {}
            Some((_, expected)) => wrong.push(format!(
                "{name}: expected {expected:?}, got {answers:?} forwarded {forwarded}"
            )),
            None => wrong.push(format!("{name}: no expectation")),
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
    assert_eq!(got.len(), EXPECTED.len(), "every RFC 4475 message was sent");
    assert_eq!(got.len(), 49);
}

/// Several of the RFC's messages reuse one branch and sent-by (`z9hG4bKkdjuw` from
/// `saturn.example.com`, ...): to the box, the second is a retransmission of the first, as
/// RFC 3261 §17.2.3 says. Each message is a test of its own, so a reused top branch gets the
/// message's name appended before it is sent; nothing else is touched.
fn unique_transaction(bytes: Vec<u8>, name: &str, seen: &mut Vec<String>) -> Vec<u8> {
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let Some(via) = text
        .split("\r\n")
        .find(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("via") || l.starts_with("v ") || l.starts_with("v:")
        })
        .map(str::to_owned)
    else {
        return bytes;
    };
    let method = text
        .split(' ')
        .next()
        .unwrap_or_default()
        .replace("ACK", "INVITE");
    let key = format!("{method} {via}");
    if !seen.contains(&key) {
        seen.push(key);
        return bytes;
    }
    let Some(at) = via.find("branch=") else {
        return bytes;
    };
    let end = via[at..]
        .find([';', ',', ' '])
        .map_or(via.len(), |e| at + e);
    let renamed = format!("{}.{name}{}", &via[..end], &via[end..]);
    text.replacen(&via, &renamed, 1).into_bytes()
}
