//! Proxy edits, builders, framing, limits and URIs, each against a hand-written expectation.

// Helpers outside `#[test]` functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use sip::build::{ack_for_non_2xx, cancel_for, reply_to_unparsable};
use sip::{
    Contact, Disposition, Editor, Error, Frame, Framing, HeaderName, Host, Limits, Message, Method,
    RequestBuilder, ResponseBuilder, Rport, Scheme, Transport, Uri, WriteError,
};

const INVITE: &str = "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 70\r\n\
Route: <sip:sbc.example.net;lr>, <sip:core.example.net;lr>\r\n\
To: Bob <sip:bob@biloxi.example.com>\r\n\
From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@pc33.atlanta.example.com>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\
\r\n\
v=0\n";

fn parse(s: &str) -> Message<'_> {
    Message::parse(s.as_bytes()).unwrap()
}

fn written(ed: &Editor<'_>) -> String {
    let mut out = Vec::new();
    ed.write(&mut out).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn no_edit_reproduces_the_bytes() {
    let m = parse(INVITE);
    assert_eq!(written(&Editor::new(&m)), INVITE);
}

#[test]
fn proxy_forwarding_edits() {
    let m = parse(INVITE);
    let mut ed = Editor::new(&m);
    ed.prepend_header("Via", "SIP/2.0/UDP 192.0.2.200:5060;branch=z9hG4bKsbc1");
    ed.prepend_header("Record-Route", "<sip:192.0.2.200;lr>");
    assert_eq!(ed.decrement_max_forwards().unwrap(), Some(69));
    assert_eq!(
        ed.pop_first(HeaderName::Route),
        Some("<sip:sbc.example.net;lr>")
    );
    ed.set_request_uri("sip:bob@192.0.2.4:5060");
    let out = written(&ed);
    let f = parse(&out);
    assert_eq!(f.request_uri().unwrap().as_str(), "sip:bob@192.0.2.4:5060");
    let vias: Vec<_> = f.vias().map(|v| v.unwrap()).collect();
    assert_eq!(vias.len(), 2);
    assert_eq!(vias[0].branch(), Some("z9hG4bKsbc1"));
    assert_eq!(vias[0].port(), Some(5060));
    assert_eq!(vias[1].rport(), Rport::Requested);
    assert_eq!(f.max_forwards().unwrap(), Some(69));
    let routes: Vec<_> = f.routes().map(|r| r.unwrap().uri().host_raw()).collect();
    assert_eq!(routes, ["core.example.net"]);
    assert_eq!(f.record_routes().count(), 1);
    assert_eq!(f.body(), b"v=0\n");
    // Untouched lines are byte for byte the same.
    assert!(out.contains("From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"));
    assert!(out.contains("Route: <sip:core.example.net;lr>\r\n"));
    // Insertions at the same place come out in the order they were recorded.
    assert!(
        out.starts_with("INVITE sip:bob@192.0.2.4:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.200")
    );
}

#[test]
fn popping_the_last_route_removes_the_line() {
    let m = parse(INVITE);
    let mut ed = Editor::new(&m);
    let routes: Vec<_> = m.routes().map(|r| r.unwrap().raw()).collect();
    ed.remove_item(routes[0]).remove_item(routes[1]);
    let out = written(&ed);
    assert!(!out.contains("Route:"));
    assert_eq!(parse(&out).routes().count(), 0);
}

#[test]
fn removing_the_last_element_takes_the_comma_with_it() {
    let m = parse(INVITE);
    let second = m.routes().nth(1).unwrap().unwrap().raw();
    let mut ed = Editor::new(&m);
    ed.remove_item(second);
    assert!(written(&ed).contains("Route: <sip:sbc.example.net;lr>\r\n"));
}

#[test]
fn response_top_via_pop_with_comma_joined_hops() {
    let raw = "SIP/2.0 200 OK\r\n\
v: SIP/2.0/UDP 192.0.2.200;branch=z9hG4bKsbc1, SIP/2.0/UDP [2001:db8::1]:5070;branch=z9hG4bKa;received=2001:db8::9\r\n\
f: <sip:a@example.com>;tag=1\r\nt: <sip:b@example.com>;tag=2\r\ni: x@y\r\nCSeq: 1 INVITE\r\nl: 0\r\n\r\n";
    let m = parse(raw);
    let hops: Vec<_> = m.vias().map(|v| v.unwrap()).collect();
    assert_eq!(hops.len(), 2);
    assert_eq!(hops[1].host(), Host::Ipv6("2001:db8::1"));
    assert_eq!(hops[1].host_raw(), "[2001:db8::1]");
    assert_eq!(hops[1].port(), Some(5070));
    assert_eq!(hops[1].received(), Some("2001:db8::9"));
    let mut ed = Editor::new(&m);
    assert!(ed.pop_first(HeaderName::Via).is_some());
    let out = written(&ed);
    assert!(
        out.contains("v: SIP/2.0/UDP [2001:db8::1]:5070;branch=z9hG4bKa;received=2001:db8::9\r\n")
    );
    let f = parse(&out);
    assert_eq!(f.vias().count(), 1);
    assert_eq!(f.top_via().unwrap().transport(), Transport::Udp);
}

#[test]
fn contact_expires_rewrite_and_expires_header() {
    let raw = "REGISTER sip:example.com SIP/2.0\r\n\
Via: SIP/2.0/TCP 192.0.2.4:5060;branch=z9hG4bKr1\r\nMax-Forwards: 70\r\n\
From: <sip:bob@example.com>;tag=a\r\nTo: <sip:bob@example.com>\r\nCall-ID: r1\r\nCSeq: 2 REGISTER\r\n\
Contact: <sip:bob@192.0.2.4>;expires=3600, <sip:bob@192.0.2.5>;expires=3600\r\n\
Expires: 3600\r\nContent-Length: 0\r\n\r\n";
    let m = parse(raw);
    let contacts: Vec<_> = m.contacts().map(|c| c.unwrap()).collect();
    let second = contacts[1].raw();
    let expires = m.headers_of(HeaderName::Expires).next().unwrap().index;
    let mut ed = Editor::new(&m);
    ed.replace_item(second, "<sip:bob@192.0.2.5>;expires=60");
    ed.replace_value_u32(expires, 60);
    let out = written(&ed);
    let f = parse(&out);
    let exp: Vec<_> = f
        .contacts()
        .map(|c| match c.unwrap() {
            Contact::Addr(a) => a.expires().unwrap(),
            Contact::Wildcard(_) => None,
        })
        .collect();
    assert_eq!(exp, [Some(3600), Some(60)]);
    assert_eq!(f.expires().unwrap(), Some(60));
    assert_eq!(f.content_length(), Some(0));
}

#[test]
fn body_replacement_fixes_content_length() {
    let m = parse(INVITE);
    let mut ed = Editor::new(&m);
    ed.set_body(
        Some("application/sdp"),
        b"v=0\r\no=- 1 1 IN IP4 192.0.2.200\r\n",
    );
    let f_out = written(&ed);
    let f = parse(&f_out);
    assert_eq!(f.content_length(), Some(33));
    assert_eq!(f.body().len(), 33);

    // Without Content-Length in the original, one is added.
    let raw = "MESSAGE sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
From: <sip:b@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\nCall-ID: m\r\nCSeq: 1 MESSAGE\r\n\r\nhello";
    let m = parse(raw);
    assert_eq!(m.body(), b"hello");
    let mut ed = Editor::new(&m);
    ed.set_body(Some("text/plain"), b"bye");
    let out = written(&ed);
    let f = parse(&out);
    assert_eq!(f.content_length(), Some(3));
    assert_eq!(f.content_type(), Some("text/plain"));
    assert_eq!(f.body(), b"bye");
}

#[test]
fn editor_errors() {
    let m = parse(INVITE);
    let mut ed = Editor::new(&m);
    ed.prepend_header("Via", "x");
    let needed = ed.output_len().unwrap();
    let mut small = [0u8; 16];
    assert_eq!(
        ed.write_into(&mut small),
        Err(WriteError::BufferTooSmall { needed })
    );
    let mut big = vec![0u8; needed];
    assert_eq!(ed.write_into(&mut big), Ok(needed));

    let cseq = m.headers_of(HeaderName::CSeq).next().unwrap().index;
    let mut ed = Editor::new(&m);
    ed.remove_header(cseq).replace_value(cseq, "1 INVITE");
    assert!(matches!(
        ed.write(&mut Vec::new()),
        Err(WriteError::OverlappingEdits { .. })
    ));

    let mut ed = Editor::new(&m);
    ed.replace_value(cseq, "1 INVITE\r\nX-Injected: yes");
    assert!(matches!(
        ed.write(&mut Vec::new()),
        Err(WriteError::InvalidText { .. })
    ));

    let foreign = String::from("<sip:sbc.example.net;lr>");
    let mut ed = Editor::new(&m);
    ed.remove_item(&foreign);
    assert!(ed.write(&mut Vec::new()).is_err());

    let mut ed = Editor::new(&m);
    for _ in 0..=sip::edit::MAX_EDITS {
        ed.append_header("X-A", "b");
    }
    assert!(matches!(
        ed.write(&mut Vec::new()),
        Err(WriteError::TooManyEdits { .. })
    ));
}

#[test]
fn max_forwards_absent_is_added() {
    let raw = "OPTIONS sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
From: <sip:b@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\nCall-ID: o\r\nCSeq: 1 OPTIONS\r\n\r\n";
    let m = parse(raw);
    let mut ed = Editor::new(&m);
    assert_eq!(ed.decrement_max_forwards().unwrap(), Some(70));
    assert_eq!(parse(&written(&ed)).max_forwards().unwrap(), Some(70));
}

#[test]
fn response_from_request() {
    let m = parse(INVITE);
    let mut out = Vec::new();
    ResponseBuilder::new(&m, 503)
        .to_tag("sbc-1")
        .header("Retry-After", "60")
        .header("Reason", "SIP;cause=503;text=\"draining\"")
        .write(&mut out)
        .unwrap();
    let r = Message::parse(&out).unwrap();
    assert_eq!(r.status(), Some(503));
    assert_eq!(r.reason_phrase(), Some("Service Unavailable"));
    assert_eq!(r.top_via().unwrap().branch(), Some("z9hG4bK776asdhds"));
    assert_eq!(r.to_header().unwrap().tag(), Some("sbc-1"));
    assert_eq!(r.from_header().unwrap().tag(), Some("1928301774"));
    assert_eq!(r.call_id().unwrap(), m.call_id().unwrap());
    assert_eq!(r.cseq().unwrap(), m.cseq().unwrap());
    assert_eq!(r.retry_after().unwrap().unwrap().seconds, 60);
    let reason = r.reasons().next().unwrap().unwrap();
    assert_eq!(
        (reason.protocol, reason.cause(), reason.text()),
        ("SIP", Some(503), Some("draining"))
    );
    assert_eq!(r.content_length(), Some(0));
    r.validate().unwrap();

    // 100 Trying never carries a To-tag; an existing tag is kept.
    let mut out = Vec::new();
    ResponseBuilder::new(&m, 100)
        .to_tag("x")
        .write(&mut out)
        .unwrap();
    assert_eq!(
        Message::parse(&out).unwrap().to_header().unwrap().tag(),
        None
    );
    let tagged = INVITE.replace(
        "To: Bob <sip:bob@biloxi.example.com>",
        "To: <sip:bob@b>;tag=old",
    );
    let m2 = parse(&tagged);
    let mut out = Vec::new();
    ResponseBuilder::new(&m2, 200)
        .to_tag("new")
        .reason("Fine")
        .write(&mut out)
        .unwrap();
    let r = Message::parse(&out).unwrap();
    assert_eq!(r.to_header().unwrap().tag(), Some("old"));
    assert_eq!(r.reason_phrase(), Some("Fine"));

    assert_eq!(
        ResponseBuilder::new(&m, 99).write(&mut Vec::new()),
        Err(WriteError::BadStatus(99))
    );
    let bad = ResponseBuilder::new(&m, 400)
        .header("X", "a\r\nb")
        .write(&mut Vec::new());
    assert!(matches!(bad, Err(WriteError::InvalidText { .. })));
}

#[test]
fn originated_requests() {
    let mut out = Vec::new();
    RequestBuilder::new(Method::Options, "sip:core.example.net:5070")
        .via("UDP", "192.0.2.200:5060", "z9hG4bKprobe1")
        .from("sip:sbc@example.net", "p1")
        .to("sip:core.example.net:5070", None)
        .call_id("probe-1@192.0.2.200")
        .cseq(1)
        .write(&mut out)
        .unwrap();
    let m = Message::parse(&out).unwrap();
    m.validate().unwrap();
    assert_eq!(m.method(), Some(Method::Options));
    assert_eq!(m.max_forwards().unwrap(), Some(70));
    assert_eq!(m.from_header().unwrap().tag(), Some("p1"));
    assert_eq!(
        m.from_header().unwrap().uri().as_str(),
        "sip:sbc@example.net"
    );
    assert_eq!(m.to_header().unwrap().tag(), None);
    assert_eq!(m.cseq().unwrap().method, Method::Options);

    let mut out = Vec::new();
    RequestBuilder::new(Method::Register, "sip:registrar.example.net")
        .via("TCP", "192.0.2.200:5060", "z9hG4bKdereg")
        .from("<sip:bob@example.net>", "d1")
        .to("<sip:bob@example.net>", None)
        .call_id("dereg-1")
        .cseq(7)
        .contact("*")
        .header("Expires", "0")
        .write(&mut out)
        .unwrap();
    let m = Message::parse(&out).unwrap();
    m.validate().unwrap();
    assert_eq!(m.expires().unwrap(), Some(0));
    assert!(m.contacts().next().unwrap().unwrap().is_wildcard());

    let mut out = Vec::new();
    RequestBuilder::new(Method::Bye, "sip:alice@192.0.2.101")
        .via("UDP", "192.0.2.200", "z9hG4bKbye")
        .from("<sip:bob@example.net>", "a6c85cf")
        .to("<sip:alice@example.com>", Some("1928301774"))
        .call_id("a84b4c76e66710")
        .cseq(231)
        .route("<sip:core.example.net;lr>")
        .header("Reason", "SIP;cause=503;text=\"guard timer\"")
        .write(&mut out)
        .unwrap();
    let m = Message::parse(&out).unwrap();
    m.validate().unwrap();
    assert_eq!(m.to_header().unwrap().tag(), Some("1928301774"));
    assert_eq!(
        m.reasons().next().unwrap().unwrap().text(),
        Some("guard timer")
    );
    assert!(m.routes().next().unwrap().unwrap().uri().is_loose_route());

    let missing = RequestBuilder::new(Method::Options, "sip:x").write(&mut Vec::new());
    assert_eq!(missing, Err(WriteError::Missing("Via")));
}

#[test]
fn cancel_and_ack() {
    let invite = parse(INVITE);
    let mut out = Vec::new();
    cancel_for(&invite, &mut out).unwrap();
    let c = Message::parse(&out).unwrap();
    c.validate().unwrap();
    assert_eq!(c.method(), Some(Method::Cancel));
    assert_eq!(c.request_uri(), invite.request_uri());
    assert_eq!(c.top_via().unwrap().branch(), Some("z9hG4bK776asdhds"));
    assert_eq!(c.cseq().unwrap().seq, 314159);
    assert_eq!(c.routes().count(), 2);

    let resp = "SIP/2.0 486 Busy Here\r\n\
Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds\r\n\
To: Bob <sip:bob@biloxi.example.com>;tag=busy1\r\n\
From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\nCSeq: 314159 INVITE\r\nContent-Length: 0\r\n\r\n";
    let resp = parse(resp);
    let mut out = Vec::new();
    ack_for_non_2xx(&invite, &resp, &mut out).unwrap();
    let a = Message::parse(&out).unwrap();
    a.validate().unwrap();
    assert_eq!(a.method(), Some(Method::Ack));
    assert_eq!(a.to_header().unwrap().tag(), Some("busy1"));
    assert_eq!(a.cseq().unwrap().method, Method::Ack);
    assert_eq!(a.vias().count(), 1);
}

#[test]
fn unparsable_requests_can_still_be_answered() {
    let raw = "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\
Content-Length: nope\r\n\r\n";
    let err = Message::parse(raw.as_bytes()).unwrap_err();
    assert_eq!(err, Error::BadContentLength);
    let Disposition::Reply { status, reason } = err.disposition() else {
        panic!("drop?")
    };
    let mut out = Vec::new();
    reply_to_unparsable(raw.as_bytes(), status, reason, &mut out).unwrap();
    let r = Message::parse(&out).unwrap();
    assert_eq!(r.status(), Some(400));
    assert_eq!(r.call_id().unwrap(), "c");
    // A header that is not UTF-8 is not copied (the reply must parse): here the only Via.
    let latin1 = raw
        .replace("branch=z9hG4bK1", "branch=z9h\u{e7}")
        .replace('\u{e7}', "\u{fffd}");
    let mut bytes = latin1.into_bytes();
    let at = bytes
        .windows(3)
        .position(|w| w == "\u{fffd}".as_bytes())
        .unwrap();
    bytes.splice(at..at + 3, [0xe7]);
    assert!(reply_to_unparsable(&bytes, 400, "Bad Request", &mut Vec::new()).is_err());
    // Without a Call-ID there is nothing to answer.
    let no_callid = raw.replace("Call-ID: c\r\n", "");
    assert!(reply_to_unparsable(no_callid.as_bytes(), 400, "Bad Request", &mut out).is_err());
}

#[test]
fn stream_framing() {
    let limits = Limits::default();
    assert_eq!(sip::next_frame(b"", &limits), Ok(Frame::Incomplete));
    assert_eq!(
        sip::next_frame(b"\r\n\r\n", &limits),
        Ok(Frame::KeepAlive { len: 4, ping: true })
    );
    assert_eq!(
        sip::next_frame(b"\r\nINV", &limits),
        Ok(Frame::KeepAlive {
            len: 2,
            ping: false
        })
    );
    assert_eq!(sip::next_frame(b"\r\n\r", &limits), Ok(Frame::Incomplete));

    let two = format!("{INVITE}{INVITE}");
    let Ok(Frame::Message { len }) = sip::next_frame(two.as_bytes(), &limits) else {
        panic!()
    };
    assert_eq!(len, INVITE.len());
    let m = Message::parse_with(&two.as_bytes()[..len], &limits, Framing::Stream).unwrap();
    assert_eq!(m.body(), b"v=0\n");
    for cut in 1..INVITE.len() {
        assert_eq!(
            sip::next_frame(&INVITE.as_bytes()[..cut], &limits),
            Ok(Frame::Incomplete)
        );
    }

    let no_cl = "OPTIONS sip:a SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n\r\n";
    assert_eq!(
        sip::next_frame(no_cl.as_bytes(), &limits),
        Err(Error::MissingContentLength)
    );
    assert_eq!(
        Message::parse_with(no_cl.as_bytes(), &limits, Framing::Stream).unwrap_err(),
        Error::MissingContentLength
    );
    let small = Limits {
        max_message_bytes: 100,
        ..Limits::default()
    };
    assert!(matches!(
        sip::next_frame(INVITE.as_bytes(), &small),
        Err(Error::MessageTooLarge { .. })
    ));
    assert!(matches!(
        sip::next_frame(&[b'A'; 70_000], &limits),
        Err(Error::MessageTooLarge { .. })
    ));
}

#[test]
fn datagram_content_length() {
    // Surplus after the body is ignored; a short body is refused.
    let extra = format!("{INVITE}garbage");
    assert_eq!(Message::parse(extra.as_bytes()).unwrap().body(), b"v=0\n");
    let short = &INVITE[..INVITE.len() - 1];
    assert_eq!(
        Message::parse(short.as_bytes()).unwrap_err(),
        Error::BodyTruncated {
            declared: 4,
            present: 3
        }
    );
}

#[test]
fn limits_map_to_the_right_reply() {
    let many: String = (0..100).map(|i| format!("X-H{i}: v\r\n")).collect();
    let raw = format!("OPTIONS sip:a@b SIP/2.0\r\n{many}\r\n");
    let e = Message::parse(raw.as_bytes()).unwrap_err();
    assert_eq!(
        e,
        Error::TooManyHeaders {
            limit: sip::MAX_HEADERS
        }
    );
    assert_eq!(e.status_code(), Some(513));

    let few = Limits {
        max_headers: 5,
        ..Limits::default()
    };
    assert!(Message::parse_with(INVITE.as_bytes(), &few, Framing::Datagram).is_err());

    let vias: String = (0..10)
        .map(|i| format!("Via: SIP/2.0/UDP h{i};branch=z9hG4bK{i}\r\n"))
        .collect();
    let raw = format!("OPTIONS sip:a@b SIP/2.0\r\n{vias}From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n");
    let hops = Limits {
        max_via_hops: 4,
        ..Limits::default()
    };
    let m = Message::parse_with(raw.as_bytes(), &hops, Framing::Datagram).unwrap();
    let e = m.validate().unwrap_err();
    assert_eq!(e, Error::TooManyVias { limit: 4 });
    assert_eq!(e.status_code(), Some(513));

    let body = Limits {
        max_body_bytes: 2,
        ..Limits::default()
    };
    let e = Message::parse_with(INVITE.as_bytes(), &body, Framing::Datagram).unwrap_err();
    assert_eq!(e.status_code(), Some(413));

    assert_eq!(
        Message::parse(b"\r\n\r\n").unwrap_err().disposition(),
        Disposition::Drop
    );
    assert_eq!(
        Message::parse(b"GET / HTTP/1.1\r\n\r\n")
            .unwrap_err()
            .disposition(),
        Disposition::Drop
    );
    assert_eq!(
        Message::parse(b"\x16\x03\x01\x00")
            .unwrap_err()
            .disposition(),
        Disposition::Drop
    );
}

#[test]
fn compact_forms_and_case_are_one_header() {
    let raw = "OPTIONS sip:a@b SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bK1\r\nVIA: SIP/2.0/UDP g;branch=z9hG4bK2\r\n\
f: <sip:a@b>;tag=1\r\nT: <sip:a@b>\r\ni: c1\r\ncseq: 1 OPTIONS\r\nk: path, outbound\r\nSupported: timer\r\n\
Resource-Priority: ets.0, wps.3\r\nX-Custom: one\r\nx-custom: two\r\nl: 0\r\n\r\n";
    let m = parse(raw);
    m.validate().unwrap();
    assert_eq!(m.vias().count(), 2);
    assert_eq!(m.header("Call-ID"), Some("c1"));
    assert_eq!(m.header("i"), Some("c1"));
    assert_eq!(m.headers_named("via").count(), 2);
    assert_eq!(
        m.headers_named("X-CUSTOM")
            .map(|h| h.value)
            .collect::<Vec<_>>(),
        ["one", "two"]
    );
    assert_eq!(
        m.supported().collect::<Vec<_>>(),
        ["path", "outbound", "timer"]
    );
    let rp: Vec<_> = m
        .resource_priorities()
        .map(|r| r.unwrap())
        .map(|r| (r.namespace, r.priority))
        .collect();
    assert_eq!(rp, [("ets", "0"), ("wps", "3")]);
    assert_eq!(m.count_of(HeaderName::Supported), 2);
    assert_eq!(m.content_length(), Some(0));
}

#[test]
fn uris() {
    let u = Uri::parse("sips:Alice%40x@[2001:DB8::1]:5061;transport=tcp;lr?subject=hi").unwrap();
    assert_eq!(u.scheme(), Scheme::Sips);
    assert_eq!(u.user(), Some("Alice%40x"));
    assert_eq!(u.host(), Some(Host::Ipv6("2001:DB8::1")));
    assert_eq!(u.port(), Some(5061));
    assert_eq!(u.transport_param(), Some("tcp"));
    assert!(u.is_loose_route());
    assert_eq!(u.headers(), Some("subject=hi"));
    let same = Uri::parse("SIPS:Alice%40x@[2001:db8:0::1]:5061").unwrap();
    assert!(u.aor_eq(&same));
    assert_eq!(u.aor_key(), same.aor_key());
    assert_eq!(u.aor_key(), "sips:Alice%40x@[2001:db8::1]");
    // Written into a buffer, the key is the same text.
    let mut written = String::from("key=");
    u.write_aor_key(&mut written).unwrap();
    assert_eq!(written, "key=sips:Alice%40x@[2001:db8::1]");
    // The user part is case-sensitive, the host is not, and the port names no one else.
    let a = Uri::parse("sip:bob@Example.COM").unwrap();
    assert!(a.aor_eq(&Uri::parse("sip:bob@example.com;transport=udp").unwrap()));
    assert!(!a.aor_eq(&Uri::parse("sip:Bob@example.com").unwrap()));
    assert!(a.aor_eq(&Uri::parse("sip:bob@example.com:5060").unwrap()));
    assert!(!a.aor_eq(&Uri::parse("sips:bob@example.com").unwrap()));
    assert!(a.aor_eq(&Uri::parse("sip:%62ob@example.com").unwrap()));

    let tel = Uri::parse("tel:+1-201-555-0123;phone-context=example.com").unwrap();
    assert_eq!(tel.scheme(), Scheme::Tel);
    assert_eq!(tel.opaque(), "+1-201-555-0123");
    assert_eq!(tel.params().value("phone-context"), Some("example.com"));
    assert!(Uri::parse("urn:service:sos").unwrap().is_sos());
    assert!(Uri::parse("urn:service:sos.fire").unwrap().is_sos());
    assert!(!Uri::parse("urn:service:sosx").unwrap().is_sos());
    assert_eq!(
        Uri::parse("sip:192.0.2.1:5060").unwrap().host(),
        Some(Host::Ipv4("192.0.2.1"))
    );

    for bad in [
        "sip:",
        "sip:@host",
        "sip:a@",
        "sip:a@host:99999",
        "sip:a b@host",
        "<sip:a@b>",
        "sip:a@[::1",
        "sip:a@h%",
    ] {
        assert!(Uri::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn ipv6_request_and_folded_headers() {
    let raw = "INVITE sip:[2001:db8::5]:5062;transport=udp SIP/2.0\r\n\
Via: SIP/2.0/UDP [2001:db8::9]:5060\r\n ;branch=z9hG4bKv6;rport=5060\r\n\
From: <sip:a@[2001:db8::9]>\r\n ;tag=v6\r\nTo: <sip:b@[2001:db8::5]>\r\nCall-ID: v6\r\nCSeq: 1\r\n\tINVITE\r\n\
Max-Forwards: 3\r\nContent-Length: 0\r\n\r\n";
    let m = parse(raw);
    m.validate().unwrap();
    let u = m.request_uri().unwrap();
    assert_eq!(u.host().unwrap().ip(), Some("2001:db8::5".parse().unwrap()));
    assert_eq!(u.port(), Some(5062));
    let v = m.top_via().unwrap();
    assert_eq!(v.host(), Host::Ipv6("2001:db8::9"));
    assert_eq!(v.rport(), Rport::Port(5060));
    assert_eq!(v.branch(), Some("z9hG4bKv6"));
    assert!(v.has_magic_cookie());
    assert_eq!(m.from_header().unwrap().tag(), Some("v6"));
    assert_eq!(m.cseq().unwrap().method, Method::Invite);
}

#[test]
fn outbound_contacts_with_quoted_angle_brackets() {
    let raw = "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.4:5060;branch=z9hG4bKo;received=[2001:db8::9]\r\n\
From: \"Alice, A.\" <sip:alice@example.com>;tag=1\r\nTo: <sip:alice@example.com>\r\nCall-ID: ob\r\nCSeq: 1 REGISTER\r\n\
Contact: \"Alice\" <sip:alice@192.0.2.4:5060;ob>;reg-id=1;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>\";expires=600, <sip:alice@[2001:db8::4]>;expires=0\r\n\
Content-Length: 0\r\n\r\n";
    let m = parse(raw);
    m.validate().unwrap();
    assert_eq!(m.top_via().unwrap().received(), Some("[2001:db8::9]"));
    assert_eq!(m.from_header().unwrap().display_name(), Some("Alice, A."));
    let c: Vec<_> = m.contacts().map(|c| c.unwrap()).collect();
    assert_eq!(c.len(), 2);
    let a = c[0].addr().unwrap();
    assert_eq!(
        a.params().value("+sip.instance"),
        Some("<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>")
    );
    assert_eq!(a.params().value("reg-id"), Some("1"));
    assert_eq!(a.expires().unwrap(), Some(600));
    assert!(a.uri().params().has("ob"));
    let b = c[1].addr().unwrap();
    assert_eq!(b.uri().host(), Some(Host::Ipv6("2001:db8::4")));
    assert_eq!(b.expires().unwrap(), Some(0));
}

#[test]
fn validation_hands_back_the_mandatory_headers_it_parsed() {
    let m = parse(INVITE);
    let parts = m.validate_mandatory().unwrap();
    assert_eq!(parts, m.mandatory().unwrap());
    assert_eq!(parts.top_via.branch(), Some("z9hG4bK776asdhds"));
    assert_eq!(parts.from.tag(), Some("1928301774"));
    assert_eq!(parts.to.tag(), None);
    assert_eq!(parts.call_id, "a84b4c76e66710@pc33.atlanta.example.com");
    assert_eq!(
        (parts.cseq.seq, parts.cseq.method),
        (314159, Method::Invite)
    );
    // What validate refuses, validate_mandatory refuses the same way.
    let bad = INVITE.replace("CSeq: 314159 INVITE", "CSeq: 314159 BYE");
    let m = parse(&bad);
    assert_eq!(
        m.validate_mandatory().unwrap_err(),
        Error::CSeqMethodMismatch
    );
    assert_eq!(m.validate().unwrap_err(), Error::CSeqMethodMismatch);
}
