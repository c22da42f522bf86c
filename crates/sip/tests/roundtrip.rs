//! Property tests: what we build, we parse back the same; edits do what they say; folding,
//! compact names and letter case do not change what a proxy reads; stream framing cuts exactly
//! the messages that were sent; no input makes the parser panic.

// Helpers outside `#[test]` functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

#[path = "support/access.rs"]
mod access;

use proptest::prelude::*;
use sip::{
    Editor, Frame, Framing, HeaderName, Limits, Message, Method, RequestBuilder, ResponseBuilder,
};

#[derive(Debug, Clone)]
struct Req {
    method: String,
    user: Option<String>,
    host: String,
    port: Option<u16>,
    transport: &'static str,
    via_host: String,
    via_port: Option<u16>,
    branch: String,
    from_tag: String,
    to_tag: Option<String>,
    call_id: String,
    cseq: u32,
    max_forwards: u32,
    routes: Vec<String>,
    extra: Vec<(String, String)>,
    body: Vec<u8>,
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,8}(\\.[a-z][a-z0-9-]{0,8}){0,3}",
        (1u8..=254, 0u8..=255, 0u8..=255, 1u8..=254)
            .prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}")),
        (1u16..0xffff, 1u16..0xffff).prop_map(|(a, b)| format!("[2001:db8:{a:x}::{b:x}]")),
    ]
}

fn token() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9][a-zA-Z0-9.!%*_+`'~-]{0,15}"
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("INVITE".to_string()),
        Just("REGISTER".to_string()),
        Just("OPTIONS".to_string()),
        Just("BYE".to_string()),
        Just("SUBSCRIBE".to_string()),
        "[A-Z]{3,10}",
    ]
}

fn req() -> impl Strategy<Value = Req> {
    (
        (
            method(),
            proptest::option::of("[a-zA-Z0-9._-]{1,12}"),
            host(),
            proptest::option::of(1u16..),
        ),
        (
            prop_oneof![Just("UDP"), Just("TCP"), Just("TLS"), Just("SCTP")],
            host(),
            proptest::option::of(1u16..),
            "z9hG4bK[a-zA-Z0-9.-]{1,20}",
        ),
        (
            token(),
            proptest::option::of(token()),
            "[a-zA-Z0-9.-]{1,20}(@[a-z0-9.]{1,12})?",
        ),
        (any::<u32>(), 0u32..=255),
        proptest::collection::vec(host(), 0..4),
        proptest::collection::vec(("X-[A-Za-z0-9-]{1,10}", "[!-~]([ -~]{0,20}[!-~])?"), 0..4),
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(
            |(
                (method, user, host, port),
                (transport, via_host, via_port, branch),
                (from_tag, to_tag, call_id),
                (cseq, max_forwards),
                routes,
                extra,
                body,
            )| Req {
                method,
                user,
                host,
                port,
                transport,
                via_host,
                via_port,
                branch,
                from_tag,
                to_tag,
                call_id,
                cseq,
                max_forwards,
                routes,
                extra,
                body,
            },
        )
}

fn uri_text(user: &Option<String>, host: &str, port: Option<u16>) -> String {
    let mut s = String::from("sip:");
    if let Some(u) = user {
        s.push_str(u);
        s.push('@');
    }
    s.push_str(host);
    if let Some(p) = port {
        s.push_str(&format!(":{p}"));
    }
    s
}

fn build(r: &Req) -> Vec<u8> {
    let ruri = uri_text(&r.user, &r.host, r.port);
    let sent_by = match r.via_port {
        Some(p) => format!("{}:{p}", r.via_host),
        None => r.via_host.clone(),
    };
    let routes: Vec<String> = r.routes.iter().map(|h| format!("<sip:{h};lr>")).collect();
    let mut b = RequestBuilder::new(Method::from_token(&r.method), &ruri)
        .via(r.transport, &sent_by, &r.branch)
        .from("<sip:caller@example.com>", &r.from_tag)
        .to(&ruri, r.to_tag.as_deref())
        .call_id(&r.call_id)
        .cseq(r.cseq)
        .max_forwards(r.max_forwards);
    for route in &routes {
        b = b.route(route);
    }
    for (n, v) in &r.extra {
        b = b.header(n, v);
    }
    if !r.body.is_empty() {
        b = b.body("application/octet-stream", &r.body);
    }
    let mut out = Vec::new();
    b.write(&mut out).unwrap();
    out
}

fn host_of(h: &str) -> &str {
    h.trim_start_matches('[').trim_end_matches(']')
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn built_requests_parse_back(r in req()) {
        let bytes = build(&r);
        let m = Message::parse(&bytes).unwrap();
        m.validate().unwrap();
        prop_assert_eq!(m.method().unwrap().as_str(), r.method.as_str());
        let u = m.request_uri().unwrap();
        prop_assert_eq!(u.user(), r.user.as_deref());
        prop_assert_eq!(u.host().unwrap().as_str(), host_of(&r.host));
        prop_assert_eq!(u.port(), r.port);
        let v = m.top_via().unwrap();
        prop_assert_eq!(v.transport().as_str(), r.transport);
        prop_assert_eq!(v.host().as_str(), host_of(&r.via_host));
        prop_assert_eq!(v.port(), r.via_port);
        prop_assert_eq!(v.branch(), Some(r.branch.as_str()));
        prop_assert_eq!(m.from_header().unwrap().tag(), Some(r.from_tag.as_str()));
        prop_assert_eq!(m.to_header().unwrap().tag(), r.to_tag.as_deref());
        prop_assert_eq!(m.call_id().unwrap(), r.call_id.as_str());
        let cseq = m.cseq().unwrap();
        prop_assert_eq!(cseq.seq, r.cseq);
        prop_assert_eq!(cseq.method.as_str(), r.method.as_str());
        prop_assert_eq!(m.max_forwards().unwrap(), Some(r.max_forwards));
        let routes: Vec<String> = m.routes().map(|x| x.unwrap().uri().host().unwrap().as_str().to_string()).collect();
        let expected: Vec<String> = r.routes.iter().map(|h| host_of(h).to_string()).collect();
        prop_assert_eq!(routes, expected);
        for (n, v) in &r.extra {
            prop_assert!(m.headers_named(n).any(|h| h.value == v.as_str()), "{} missing", n);
        }
        prop_assert_eq!(m.body(), &r.body[..]);
        prop_assert_eq!(m.content_length(), Some(r.body.len() as u32));
    }

    #[test]
    fn responses_built_from_requests_parse_back(r in req(), status in 100u16..700, tag in token()) {
        let bytes = build(&r);
        let m = Message::parse(&bytes).unwrap();
        let mut out = Vec::new();
        ResponseBuilder::new(&m, status).to_tag(&tag).write(&mut out).unwrap();
        let resp = Message::parse(&out).unwrap();
        resp.validate().unwrap();
        prop_assert_eq!(resp.status(), Some(status));
        prop_assert_eq!(resp.top_via().unwrap().branch(), Some(r.branch.as_str()));
        prop_assert_eq!(resp.call_id().unwrap(), r.call_id.as_str());
        prop_assert_eq!(resp.cseq().unwrap(), m.cseq().unwrap());
        let expected_tag = match (&r.to_tag, status) {
            (Some(t), _) => Some(t.as_str()),
            (None, 100) => None,
            (None, _) => Some(tag.as_str()),
        };
        prop_assert_eq!(resp.to_header().unwrap().tag(), expected_tag);
    }

    #[test]
    fn proxy_edits_do_what_they_say(r in req(), new_body in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64))) {
        let bytes = build(&r);
        let m = Message::parse(&bytes).unwrap();
        let mut ed = Editor::new(&m);
        ed.prepend_header("Via", "SIP/2.0/UDP 192.0.2.200:5060;branch=z9hG4bKsbc");
        ed.prepend_header("Record-Route", "<sip:192.0.2.200;lr>");
        let mf = ed.decrement_max_forwards().unwrap();
        let popped = ed.pop_first(HeaderName::Route);
        if let Some(b) = &new_body {
            ed.set_body(None, b);
        }
        let mut out = Vec::new();
        ed.write(&mut out).unwrap();
        prop_assert_eq!(out.len(), ed.output_len().unwrap());
        let f = Message::parse(&out).unwrap();
        f.validate().unwrap();
        prop_assert_eq!(f.vias().count(), 2);
        prop_assert_eq!(f.top_via().unwrap().branch(), Some("z9hG4bKsbc"));
        prop_assert_eq!(f.vias().nth(1).unwrap().unwrap().branch(), Some(r.branch.as_str()));
        prop_assert_eq!(f.max_forwards().unwrap(), Some(mf.unwrap_or(0)));
        prop_assert_eq!(mf, r.max_forwards.checked_sub(1).filter(|_| r.max_forwards > 0));
        prop_assert_eq!(popped.is_some(), !r.routes.is_empty());
        prop_assert_eq!(f.routes().count(), r.routes.len().saturating_sub(1));
        prop_assert_eq!(f.record_routes().count(), 1);
        let body = new_body.as_deref().unwrap_or(&r.body);
        prop_assert_eq!(f.body(), body);
        prop_assert_eq!(f.content_length(), Some(body.len() as u32));
        prop_assert_eq!(f.call_id().unwrap(), r.call_id.as_str());
    }

    #[test]
    fn folding_compact_names_and_case_change_nothing(r in req(), upper in any::<bool>()) {
        let bytes = build(&r);
        let plain = access::ours(&bytes).unwrap();
        let split = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = std::str::from_utf8(&bytes[..split]).unwrap();
        let body = &bytes[split + 4..];
        let mut varied = head
            .replace(";branch=", "\r\n ;branch=")
            .replace(";tag=", "\r\n\t ;tag=")
            .replace("\r\nVia: ", "\r\nv: ")
            .replace("\r\nFrom: ", "\r\nf:")
            .replace("\r\nTo: ", "\r\nt :  ")
            .replace("\r\nCall-ID: ", "\r\ni:\r\n ")
            .replace("\r\nContent-Length: ", "\r\nl: ")
            .replace("\r\nMax-Forwards: ", if upper { "\r\nMAX-FORWARDS: " } else { "\r\nmax-forwards: " })
            .replace("\r\nCSeq: ", "\r\nCSEQ: ");
        varied.push_str("\r\n\r\n");
        let mut varied = varied.into_bytes();
        varied.extend_from_slice(body);
        let folded = access::ours(&varied);
        prop_assert_eq!(Some(plain), folded, "{}", String::from_utf8_lossy(&varied));
    }

    #[test]
    fn stream_framing_returns_what_was_sent(rs in proptest::collection::vec(req(), 1..4), pings in proptest::collection::vec(any::<bool>(), 4)) {
        let limits = Limits::default();
        let messages: Vec<Vec<u8>> = rs.iter().map(build).collect();
        let mut stream = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            if pings[i % pings.len()] {
                stream.extend_from_slice(b"\r\n\r\n");
            }
            stream.extend_from_slice(m);
        }
        let mut got = Vec::new();
        let mut rest = &stream[..];
        loop {
            match sip::next_frame(rest, &limits).unwrap() {
                Frame::Incomplete => break,
                Frame::KeepAlive { len, .. } => rest = &rest[len..],
                Frame::Message { len } => {
                    Message::parse_with(&rest[..len], &limits, Framing::Stream).unwrap();
                    got.push(rest[..len].to_vec());
                    rest = &rest[len..];
                }
            }
        }
        prop_assert!(rest.is_empty());
        prop_assert_eq!(got, messages);
    }

    #[test]
    fn no_input_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = sip::next_frame(&data, &Limits::default());
        if let Ok(m) = Message::parse(&data) {
            let _ = m.validate();
            let mut out = Vec::new();
            Editor::new(&m).write(&mut out).unwrap();
            prop_assert_eq!(&out[..], m.as_bytes());
        }
    }

    #[test]
    fn mutated_messages_never_panic(r in req(), flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut bytes = build(&r);
        for (i, b) in flips {
            let at = i.index(bytes.len());
            bytes[at] = b;
        }
        if let Ok(m) = Message::parse(&bytes) {
            let _ = m.validate();
            let _ = access::ours(&bytes);
            let mut ed = Editor::new(&m);
            ed.prepend_header("Via", "SIP/2.0/UDP 192.0.2.200;branch=z9hG4bKx");
            let _ = ed.decrement_max_forwards();
            let mut out = Vec::new();
            if ed.write(&mut out).is_ok() {
                Message::parse(&out).unwrap();
            }
        }
    }
}
