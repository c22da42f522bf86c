//! Differential test against rsip 0.4: on messages rsip handles (no compact forms, folding,
//! IPv6 Via hosts or comma-joined Vias — see FACTS.md), both parsers must agree on every field
//! a proxy reads.

#[path = "support/access.rs"]
mod access;

use access::{ours, theirs};

const MESSAGES: &[&str] = &[
    "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
     Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;received=192.0.2.101\r\n\
     Via: SIP/2.0/TCP 192.0.2.7:5062;branch=z9hG4bKnashds8\r\n\
     Max-Forwards: 70\r\n\
     To: Bob <sip:bob@biloxi.example.com>\r\n\
     From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
     Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
     CSeq: 314159 INVITE\r\n\
     Route: <sip:p1.example.com;lr>, <sip:p2.example.com:5070;lr>\r\n\
     Record-Route: <sip:rr.example.com;lr>\r\n\
     Contact: <sip:alice@pc33.atlanta.example.com>\r\n\
     Content-Type: application/sdp\r\n\
     Content-Length: 5\r\n\r\nv=0\r\n",
    "SIP/2.0 200 OK\r\n\
     Via: SIP/2.0/UDP server10.biloxi.example.com;branch=z9hG4bKnashds8;received=192.0.2.3\r\n\
     Via: SIP/2.0/UDP bigbox3.site3.atlanta.example.com;branch=z9hG4bK77ef4c2312983.1\r\n\
     To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf\r\n\
     From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
     Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
     CSeq: 314159 INVITE\r\n\
     Contact: <sip:bob@192.0.2.4>\r\n\
     Content-Length: 0\r\n\r\n",
    "REGISTER sip:registrar.biloxi.example.com SIP/2.0\r\n\
     Via: SIP/2.0/UDP bobspc.biloxi.example.com:5060;branch=z9hG4bKnashds7\r\n\
     Max-Forwards: 70\r\n\
     To: Bob <sip:bob@biloxi.example.com>\r\n\
     From: Bob <sip:bob@biloxi.example.com>;tag=456248\r\n\
     Call-ID: 843817637684230@998sdasdh09\r\n\
     CSeq: 1826 REGISTER\r\n\
     Contact: <sip:bob@192.0.2.4>;expires=7200\r\n\
     Contact: <sip:bob@192.0.2.5:5080>;expires=60\r\n\
     Expires: 7200\r\n\
     Content-Length: 0\r\n\r\n",
    "BYE sip:alice@pc33.atlanta.example.com SIP/2.0\r\n\
     Via: SIP/2.0/TLS 192.0.2.4;branch=z9hG4bKnashds10\r\n\
     Max-Forwards: 69\r\n\
     From: <sip:bob@biloxi.example.com>;tag=a6c85cf\r\n\
     To: <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
     Call-ID: a84b4c76e66710\r\n\
     CSeq: 231 BYE\r\n\
     Content-Length: 0\r\n\r\n",
    "OPTIONS sip:core.example.net:5070 SIP/2.0\r\n\
     Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK.probe.1\r\n\
     Max-Forwards: 70\r\n\
     From: <sip:sbc@example.net>;tag=p1\r\n\
     To: <sip:core.example.net:5070>\r\n\
     Call-ID: probe-1@10.0.0.1\r\n\
     CSeq: 1 OPTIONS\r\n\
     Content-Length: 0\r\n\r\n",
];

#[test]
fn both_parsers_agree_on_plain_messages() {
    for raw in MESSAGES {
        let a = ours(raw.as_bytes()).expect("ours parses");
        let b = theirs(raw.as_bytes()).expect("rsip parses");
        assert_eq!(a, b, "\n{raw}");
    }
}

/// The fields of the proxy's view on which two extracts differ.
fn differing_fields(a: &access::Extract, b: &access::Extract) -> Vec<&'static str> {
    let mut fields = Vec::new();
    let mut check = |name, same: bool| {
        if !same {
            fields.push(name);
        }
    };
    check("method", a.method == b.method);
    check("status", a.status == b.status);
    check("ruri", a.ruri == b.ruri);
    check("vias", a.vias == b.vias);
    check("from", a.from == b.from);
    check("to", a.to == b.to);
    check("call_id", a.call_id == b.call_id);
    check("cseq", a.cseq == b.cseq);
    check("max_forwards", a.max_forwards == b.max_forwards);
    check("routes", a.routes == b.routes);
    check("record_routes", a.record_routes == b.record_routes);
    check("contacts", a.contacts == b.contacts);
    check("body", a.body == b.body);
    fields
}

/// Where rsip 0.4 and we disagree on an RFC 4475 message rsip accepts, field by field, each
/// with the reason it is rsip's fault. A difference not listed here fails the test, and so
/// does a listed one that is gone (the list cannot go stale).
const RSIP_FAULTS: &[(&str, &[&str], &str)] = &[
    (
        "dblreq",
        &["from", "to", "call_id", "contacts", "body"],
        "a user part with a dot (j.user@) is taken as the host; Content-Length is ignored, so \
         the second request of the datagram becomes the body, and the Call-ID reads empty",
    ),
    (
        "regaut01",
        &["from", "to"],
        "a user part with a dot (j.user@) is taken as the host",
    ),
    (
        "mismatch01",
        &["to"],
        "a user part with a dot (j.user@) is taken as the host",
    ),
    (
        "invut",
        &["to"],
        "a user part with a dot (j.user@) is taken as the host",
    ),
    (
        "novelsc",
        &["ruri"],
        "an unknown URI scheme (soap.beep://) is read as a host and port",
    ),
    (
        "regescrt",
        &["contacts"],
        "headers of a Contact URI (?Route=...) are dropped",
    ),
];

#[test]
fn both_parsers_agree_on_the_rfc4475_messages_rsip_accepts_but_for_its_listed_faults() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/rfc4475");
    let mut compared = 0;
    let mut wrong = Vec::new();
    let mut seen_faults = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("dat") {
            continue;
        }
        let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
        let bytes = std::fs::read(&path).unwrap();
        let (Some(a), Some(b)) = (ours(&bytes), theirs(&bytes)) else {
            continue;
        };
        compared += 1;
        let differs = differing_fields(&a, &b);
        let listed = RSIP_FAULTS
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, fields, _)| fields.to_vec())
            .unwrap_or_default();
        if differs != listed {
            wrong.push(format!(
                "{name}: differs on {differs:?}, listed {listed:?}\n  ours: {a:?}\n  rsip: {b:?}"
            ));
        }
        if !listed.is_empty() {
            seen_faults.push(name);
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
    for (name, _, _) in RSIP_FAULTS {
        assert!(
            seen_faults.iter().any(|n| n == name),
            "{name} no longer compared"
        );
    }
    assert!(compared >= 20, "only {compared} RFC 4475 messages compared");
}
