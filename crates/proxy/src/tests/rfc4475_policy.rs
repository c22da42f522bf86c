//! The RFC 4475 messages whose handling is a proxy's policy (RFC 3261 §16.3), not syntax:
//! what the proxy answers and whether anything leaves it.

use super::harness::*;
use crate::transport::Realm;

const SENDER: &str = "192.0.2.1:5060";
const UPSTREAM: &str = "10.1.0.10:5060";

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../sip/tests/rfc4475/{name}.dat",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Sends fixture `name` from access and returns the codes answered and the messages forwarded.
fn through(name: &str) -> (Vec<u16>, usize) {
    let mut net = Net::standard();
    net.add_phone(SENDER);
    net.inject(Realm::Access, SENDER, &fixture(name));
    let answers: Vec<u16> = net
        .received(SENDER, "SIP/2.0")
        .iter()
        .map(|r| code(r))
        .collect();
    let forwarded = net.peers.get(&addr(UPSTREAM)).map_or(0, |p| {
        p.inbox
            .iter()
            .filter(|m| !m.starts_with(b"OPTIONS sip:10.1"))
            .count()
    });
    (answers, forwarded + net.lost.len())
}

#[test]
fn an_unknown_request_uri_scheme_gets_416_and_goes_nowhere() {
    assert_eq!(through("unkscm"), (vec![416], 0));
    assert_eq!(through("novelsc"), (vec![416], 0));
}

#[test]
fn a_proxy_require_the_box_does_not_support_gets_420_naming_it() {
    let mut net = Net::standard();
    net.add_phone(SENDER);
    net.inject(Realm::Access, SENDER, &fixture("bext01"));
    let answer = net.received(SENDER, "SIP/2.0").pop().unwrap();
    assert_eq!(code(&answer), 420);
    assert_eq!(
        header(&answer, "Unsupported"),
        Some("noProxiesSupportThis, norDoAnyProxiesSupportThis")
    );
    assert_eq!(through("bext01").1, 0, "nothing forwarded");
}

#[test]
fn no_hops_left_gets_483_and_goes_nowhere() {
    assert_eq!(through("zeromf"), (vec![483], 0));
}

#[test]
fn a_response_with_a_broadcast_via_is_discarded() {
    // Not ours to relay (its top Via is not the box's), and nothing the box sends ever goes to
    // a Via's sent-by: responses go back where their request came from.
    let (answers, sent) = through("bcast");
    assert!(answers.is_empty());
    assert_eq!(sent, 0);
}

#[test]
fn a_bare_magic_cookie_branch_is_matched_the_rfc_2543_way() {
    // Two different requests with the same bare `branch=z9hG4bK` from one sender are two
    // transactions, not a request and its retransmission.
    let mut net = Net::standard();
    net.add_phone(SENDER);
    let first = fixture("badbranch");
    let second = String::from_utf8(first.clone())
        .unwrap()
        .replace("CSeq: 8 OPTIONS", "CSeq: 9 OPTIONS");
    net.inject(Realm::Access, SENDER, &first);
    net.inject(Realm::Access, SENDER, second.as_bytes());
    let forwarded = net.received(UPSTREAM, "OPTIONS sip:user@example.com");
    assert_eq!(forwarded.len(), 2, "{forwarded:?}");
    // The same request again is a retransmission: nothing more goes out.
    net.inject(Realm::Access, SENDER, &first);
    assert_eq!(
        net.received(UPSTREAM, "OPTIONS sip:user@example.com").len(),
        2
    );
}
