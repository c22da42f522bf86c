//! RFC 4475 (SIP torture test messages): every message of §3 parsed and classified as the RFC
//! says a proxy should treat it, and the field values of the valid ones checked.

use sip::{
    Contact, Disposition, Error, Framing, HeaderName, Host, Limits, Message, Method, Rport, Scheme,
    Transport,
};

/// What the RFC expects a proxy to make of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Parses and passes `validate()`.
    Valid,
    /// Parses and validates; the proxy refuses it with this status as a matter of policy
    /// (RFC 3261 §16.3), which crates/proxy/src/tests/rfc4475_policy.rs checks through the
    /// proxy.
    Policy(u16),
    /// `Message::parse` fails; the proxy answers with this status (`None`: drops it).
    ParseError(Option<u16>),
    /// Parses, but `validate()` fails; the proxy answers with this status (`None`: drops it,
    /// because it is a response).
    Invalid(Option<u16>),
}

use Expect::*;

const CASES: &[(&str, Expect)] = &[
    // 3.1.1 valid messages
    ("wsinv", Valid),
    ("intmeth", Valid),
    ("esc01", Valid),
    ("escnull", Valid),
    ("esc02", Valid),
    ("lwsdisp", Valid),
    ("longreq", Valid),
    ("dblreq", Valid),
    ("semiuri", Valid),
    ("transports", Valid),
    ("mpart01", Valid),
    ("unreason", Valid),
    ("noreason", Valid),
    // 3.1.2 invalid messages
    ("badinv01", Invalid(Some(400))),
    ("clerr", ParseError(Some(400))),
    ("ncl", ParseError(Some(400))),
    ("scalar02", Invalid(Some(400))),
    ("scalarlg", Invalid(None)),
    ("quotbal", Invalid(Some(400))),
    ("ltgtruri", ParseError(Some(400))),
    ("lwsruri", ParseError(Some(400))),
    ("lwsstart", ParseError(Some(400))),
    ("trws", ParseError(Some(400))),
    ("escruri", ParseError(Some(400))),
    // A proxy forwards a bad Date: only the endpoint cares.
    ("baddate", Valid),
    ("regbadct", Invalid(Some(400))),
    ("badaspec", Invalid(Some(400))),
    ("baddn", Invalid(Some(400))),
    ("badvers", ParseError(Some(505))),
    ("mismatch01", Invalid(Some(400))),
    ("mismatch02", Invalid(Some(400))),
    ("bigcode", ParseError(None)),
    // 3.2 transaction layer
    ("badbranch", Valid),
    // 3.3 application layer
    // A 400 would have to echo the Call-ID, From and To it lacks: dropped and counted.
    ("insuf", Invalid(None)),
    ("unkscm", Policy(416)),
    ("novelsc", Policy(416)),
    ("unksm2", Valid),
    ("bext01", Policy(420)),
    ("invut", Valid),
    ("regaut01", Valid),
    ("multi01", Invalid(Some(400))),
    ("mcl01", ParseError(Some(400))),
    // Well formed; a proxy discards it (crates/proxy/src/tests/rfc4475_policy.rs).
    ("bcast", Valid),
    ("zeromf", Policy(483)),
    ("cparam01", Valid),
    ("cparam02", Valid),
    ("regescrt", Valid),
    ("sdp01", Valid),
    // 3.4 backward compatibility
    ("inv2543", Valid),
];

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/rfc4475/{name}.dat", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn status_of(e: &Error) -> Option<u16> {
    match e.disposition() {
        Disposition::Reply { status, .. } => Some(status),
        Disposition::Drop => None,
    }
}

#[test]
fn every_message_is_classified_as_the_rfc_says() {
    let mut failures = Vec::new();
    for &(name, expect) in CASES {
        let bytes = fixture(name);
        let got = match Message::parse(&bytes) {
            Err(e) => ParseError(status_of(&e)),
            Ok(msg) => match msg.validate() {
                Ok(()) => match expect {
                    Policy(status) => Policy(status),
                    _ => Valid,
                },
                // Responses are never answered.
                Err(e) if msg.is_response() => {
                    let _ = e;
                    Invalid(None)
                }
                Err(e) => Invalid(status_of(&e)),
            },
        };
        if got != expect {
            let detail = match Message::parse(&bytes) {
                Err(e) => format!("parse: {e}"),
                Ok(m) => format!("validate: {:?}", m.validate()),
            };
            failures.push(format!(
                "{name}: expected {expect:?}, got {got:?} ({detail})"
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    assert_eq!(CASES.len(), 49, "RFC 4475 has 49 messages");
}

#[test]
fn every_fixture_is_in_the_table() {
    let dir = format!("{}/tests/rfc4475", env!("CARGO_MANIFEST_DIR"));
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".dat"))
                .map(String::from)
        })
        .collect();
    names.sort();
    for n in &names {
        assert!(CASES.iter().any(|(c, _)| c == n), "{n} has no expectation");
    }
    assert_eq!(names.len(), CASES.len());
}

#[test]
fn stream_framing_agrees_on_the_valid_messages() {
    let limits = Limits::default();
    for &(name, expect) in CASES {
        if !matches!(expect, Valid | Policy(_)) || name == "inv2543" {
            continue; // inv2543 has no Content-Length: fine on UDP, refused on a stream.
        }
        let bytes = fixture(name);
        let msg = Message::parse(&bytes).unwrap();
        match sip::next_frame(&bytes, &limits).unwrap() {
            sip::Frame::Message { len } => {
                assert_eq!(len, msg.as_bytes().len(), "{name}");
                Message::parse_with(&bytes[..len], &limits, Framing::Stream).unwrap();
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    let inv2543 = fixture("inv2543");
    assert_eq!(
        sip::next_frame(&inv2543, &limits),
        Err(Error::MissingContentLength)
    );
}

#[test]
fn wsinv_fields() {
    let bytes = fixture("wsinv");
    let m = Message::parse(&bytes).unwrap();
    assert_eq!(m.method(), Some(Method::Invite));
    let ruri = m.request_uri().unwrap();
    assert_eq!(ruri.user(), Some("vivekg"));
    assert_eq!(ruri.host(), Some(Host::Domain("chair-dnrc.example.com")));
    assert_eq!(ruri.params().get("unknownparam"), Some(None));
    let to = m.to_header().unwrap();
    assert_eq!(to.tag(), Some("1918181833n"));
    assert_eq!(to.uri().user(), Some("vivekg"));
    let from = m.from_header().unwrap();
    assert_eq!(from.display_name(), Some(r#"J Rosenberg \\\""#));
    assert_eq!(from.tag(), Some("98asjd8"));
    assert_eq!(from.uri().host_raw(), "example.com");
    assert_eq!(m.max_forwards().unwrap(), Some(68));
    assert_eq!(m.call_id().unwrap(), "wsinv.ndaksdj@192.0.2.1");
    assert_eq!(m.content_length(), Some(150));
    assert_eq!(m.body().len(), 150);
    let cseq = m.cseq().unwrap();
    assert_eq!((cseq.seq, cseq.method), (9, Method::Invite));
    let vias: Vec<_> = m.vias().map(|v| v.unwrap()).collect();
    assert_eq!(vias.len(), 3);
    assert_eq!(vias[0].transport(), Transport::Udp);
    assert_eq!(vias[0].host(), Host::Ipv4("192.0.2.2"));
    assert_eq!(vias[0].branch(), Some("390skdjuw"));
    assert_eq!(vias[0].rport(), Rport::Requested);
    assert!(!vias[0].has_magic_cookie());
    assert_eq!(vias[1].transport(), Transport::Tcp);
    assert_eq!(vias[1].host_raw(), "spindle.example.com");
    assert_eq!(vias[1].branch(), Some("z9hG4bK9ikj8"));
    assert_eq!(vias[2].host(), Host::Ipv4("192.168.255.111"));
    assert_eq!(vias[2].branch(), Some("z9hG4bK30239"));
    assert_eq!(m.header("Subject"), Some(""));
    assert_eq!(m.header("s"), Some(""));
    let nf = m.headers_named("newfangledheader").next().unwrap();
    assert!(nf.is_folded());
    assert_eq!(
        nf.value_pieces().collect::<Vec<_>>(),
        ["newfangled value", "continued newfangled value"]
    );
    assert_eq!(m.header("UnknownHeaderWithUnusualValue"), Some(";;,,;;,;"));
    assert_eq!(m.content_type(), Some("application/sdp"));
    let routes: Vec<_> = m.routes().map(|r| r.unwrap()).collect();
    assert_eq!(routes.len(), 1);
    assert!(routes[0].uri().is_loose_route());
    assert_eq!(routes[0].uri().params().value("unknownwith"), Some("value"));
    let contacts: Vec<_> = m.contacts().map(|c| c.unwrap()).collect();
    assert_eq!(contacts.len(), 1);
    let c = contacts[0].addr().unwrap();
    assert_eq!(c.display_name(), Some(r#"Quoted string \"\""#));
    assert_eq!(c.params().value("newparam"), Some("newvalue"));
    assert_eq!(c.params().get("secondparam"), Some(None));
    assert_eq!(c.q(), Some("0.33"));
}

#[test]
fn intmeth_fields() {
    let bytes = fixture("intmeth");
    let m = Message::parse(&bytes).unwrap();
    assert_eq!(
        m.method(),
        Some(Method::Other("!interesting-Method0123456789_*+`.%indeed'~"))
    );
    let ruri = m.request_uri().unwrap();
    assert_eq!(
        ruri.user(),
        Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
    );
    assert_eq!(
        ruri.password(),
        Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
    );
    assert_eq!(ruri.host_raw(), "example.com");
    assert_eq!(m.top_via().unwrap().branch(), Some("z9hG4bK-.!%66*_+`'~"));
    assert_eq!(
        m.to_header().unwrap().display_name(),
        Some("BEL:\\\x07 NUL:\\\0 DEL:\\\x7f")
    );
    let from = m.from_header().unwrap();
    assert_eq!(from.display_name(), Some("token1~` token2'+_ token3*%!.-"));
    assert_eq!(from.tag(), Some("_token~1'+`*%!-."));
    assert_eq!(
        from.params().value("fromParam''~+*_!.-%"),
        Some("работающий")
    );
    assert_eq!(
        m.call_id().unwrap(),
        "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    );
    assert_eq!(m.cseq().unwrap().seq, 139122385);
    assert_eq!(m.max_forwards().unwrap(), Some(255));
    assert_eq!(
        m.header("extensionHeader-!.%*+_`'~"),
        Some("\u{feff}大停電")
    );
}

#[test]
fn escapes() {
    let bytes = fixture("esc01");
    let m = Message::parse(&bytes).unwrap();
    let ruri = m.request_uri().unwrap();
    assert_eq!(ruri.user(), Some("sips%3Auser%40example.com"));
    assert_eq!(ruri.host_raw(), "example.net");
    let to = m.to_header().unwrap().uri();
    let plain = sip::Uri::parse("sip:user@example.com").unwrap();
    assert!(to.aor_eq(&plain), "%75se%72 is user");
    assert_eq!(to.aor_key(), "sip:user@example.com");
    assert_eq!(m.call_id().unwrap(), "esc01.239409asdfakjkn23onasd0-3234");
    assert_eq!(m.content_type(), Some("application/sdp"));
    let c = m.contacts().next().unwrap().unwrap();
    assert_eq!(c.addr().unwrap().uri().user(), Some("cal%6Cer"));

    let bytes = fixture("escnull");
    let m = Message::parse(&bytes).unwrap();
    assert_eq!(m.contacts().count(), 2);
    assert_eq!(m.content_length(), Some(0));

    let bytes = fixture("esc02");
    let m = Message::parse(&bytes).unwrap();
    assert_eq!(m.method(), Some(Method::Other("RE%47IST%45R")));
    assert_eq!(m.to_header().unwrap().display_name(), Some("%Z%45"));
    // C%6Fntact is an unknown header, not a Contact.
    assert_eq!(m.contacts().count(), 2);
    assert_eq!(
        m.header("C%6Fntact"),
        Some("<sip:alias2@host2.example.com>")
    );
}

#[test]
fn longreq_dblreq_semiuri_transports() {
    let bytes = fixture("longreq");
    let m = Message::parse(&bytes).unwrap();
    assert_eq!(m.vias().count(), 34);
    assert_eq!(m.top_via().unwrap().host_raw(), "sip33.example.com");
    let last = m.vias().last().unwrap().unwrap();
    assert_eq!(last.received(), Some("192.0.2.5"));
    assert_eq!(m.to_header().unwrap().uri().port(), Some(6000));

    let bytes = fixture("dblreq");
    let m = Message::parse(&bytes).unwrap();
    assert_eq!(m.method(), Some(Method::Register));
    assert!(
        m.as_bytes().len() < bytes.len(),
        "the second request is surplus"
    );
    assert_eq!(
        m.call_id().unwrap(),
        "dblreq.0ha0isndaksdj99sdfafnl3lk233412"
    );

    let bytes = fixture("semiuri");
    let m = Message::parse(&bytes).unwrap();
    let ruri = m.request_uri().unwrap();
    assert_eq!(ruri.user(), Some("user;par=u%40example.net"));
    assert_eq!(ruri.host_raw(), "example.com");
    assert!(ruri.params().is_empty());

    let bytes = fixture("transports");
    let m = Message::parse(&bytes).unwrap();
    let t: Vec<_> = m.vias().map(|v| v.unwrap().transport()).collect();
    assert_eq!(
        t,
        [
            Transport::Udp,
            Transport::Sctp,
            Transport::Tls,
            Transport::Other("UNKNOWN"),
            Transport::Tcp
        ]
    );
}

#[test]
fn responses_and_bodies() {
    let bytes = fixture("unreason");
    let m = Message::parse(&bytes).unwrap();
    assert_eq!(m.status(), Some(200));
    assert_eq!(
        m.reason_phrase(),
        Some("= 2**3 * 5**2 но сто девяносто девять - простое")
    );
    assert_eq!(m.body().len(), 154);

    let bytes = fixture("noreason");
    let m = Message::parse(&bytes).unwrap();
    assert_eq!(m.status(), Some(100));
    assert_eq!(m.reason_phrase(), Some(""));

    let bytes = fixture("mpart01");
    let m = Message::parse(&bytes).unwrap();
    assert_eq!(m.body().len(), 553);
    assert!(m.content_type().unwrap().starts_with("multipart/mixed"));

    let bytes = fixture("bcast");
    let m = Message::parse(&bytes).unwrap();
    let vias: Vec<_> = m.vias().map(|v| v.unwrap()).collect();
    assert_eq!(
        vias[1].host().ip(),
        Some("255.255.255.255".parse().unwrap())
    );
}

#[test]
fn application_layer_details() {
    let bytes = fixture("unkscm");
    let m = Message::parse(&bytes).unwrap();
    assert_eq!(
        m.request_uri().unwrap().scheme(),
        Scheme::Other("nobodyKnowsThisScheme")
    );
    assert!(!m.has_routable_scheme());

    let bytes = fixture("novelsc");
    let m = Message::parse(&bytes).unwrap();
    assert_eq!(
        m.request_uri().unwrap().scheme(),
        Scheme::Other("soap.beep")
    );

    let bytes = fixture("unksm2");
    let m = Message::parse(&bytes).unwrap();
    assert_eq!(m.to_header().unwrap().uri().scheme(), Scheme::Other("isbn"));
    assert_eq!(
        m.from_header().unwrap().uri().scheme(),
        Scheme::Other("http")
    );

    let bytes = fixture("bext01");
    let m = Message::parse(&bytes).unwrap();
    assert_eq!(
        m.require().collect::<Vec<_>>(),
        ["nothingSupportsThis", "nothingSupportsThisEither"]
    );
    assert_eq!(m.proxy_require().count(), 2);

    let bytes = fixture("zeromf");
    let m = Message::parse(&bytes).unwrap();
    assert_eq!(m.max_forwards().unwrap(), Some(0));
    let mut ed = sip::Editor::new(&m);
    assert_eq!(ed.decrement_max_forwards().unwrap(), None);

    let bytes = fixture("cparam01");
    let m = Message::parse(&bytes).unwrap();
    let c = m.contacts().next().unwrap().unwrap();
    let a = c.addr().unwrap();
    assert!(
        a.params().has("unknownparam"),
        "bare URI: the param is the header's"
    );
    assert!(a.uri().params().is_empty());

    let bytes = fixture("cparam02");
    let m = Message::parse(&bytes).unwrap();
    let c = m.contacts().next().unwrap().unwrap();
    let a = c.addr().unwrap();
    assert!(a.uri().params().has("unknownparam"));
    assert!(a.params().is_empty());

    let bytes = fixture("regescrt");
    let m = Message::parse(&bytes).unwrap();
    let c = m.contacts().next().unwrap().unwrap();
    assert_eq!(
        c.addr().unwrap().uri().headers(),
        Some("Route=%3Csip:sip.example.com%3E")
    );

    let bytes = fixture("inv2543");
    let m = Message::parse(&bytes).unwrap();
    assert_eq!(m.max_forwards().unwrap(), None);
    assert_eq!(m.content_length(), None);
    assert_eq!(m.from_header().unwrap().tag(), None);
    assert_eq!(m.top_via().unwrap().branch(), None);
    assert_eq!(m.to_header().unwrap().params().value("user"), Some("phone"));

    let bytes = fixture("escnull");
    let m = Message::parse(&bytes).unwrap();
    assert!(matches!(m.contacts().next(), Some(Ok(Contact::Addr(_)))));
}

#[test]
fn invalid_details() {
    let err = |name: &str| Message::parse(&fixture(name)).unwrap_err();
    assert!(matches!(
        err("clerr"),
        Error::BodyTruncated { declared: 9999, .. }
    ));
    assert_eq!(err("ncl"), Error::BadContentLength);
    assert_eq!(err("mcl01"), Error::BadContentLength);
    assert_eq!(err("badvers"), Error::UnsupportedVersion);
    assert!(matches!(err("bigcode"), Error::BadStatusLine(_)));
    assert!(matches!(err("ltgtruri"), Error::BadRequestUri(_)));
    assert!(matches!(err("escruri"), Error::BadRequestUri(_)));

    let bytes = fixture("scalar02");
    let m = Message::parse(&bytes).unwrap();
    assert!(m.cseq().is_err());
    assert!(m.max_forwards().is_err());
    assert!(m.expires().is_err());
    let c = m.contacts().next().unwrap().unwrap();
    assert!(c.addr().unwrap().expires().is_err());

    let bytes = fixture("scalarlg");
    let m = Message::parse(&bytes).unwrap();
    assert!(m.retry_after().is_err());

    let bytes = fixture("insuf");
    let m = Message::parse(&bytes).unwrap();
    assert!(matches!(m.validate(), Err(Error::MissingHeader(_))));

    let bytes = fixture("multi01");
    let m = Message::parse(&bytes).unwrap();
    assert!(matches!(m.validate(), Err(Error::DuplicateHeader(_))));

    let bytes = fixture("mismatch01");
    let m = Message::parse(&bytes).unwrap();
    assert_eq!(m.validate(), Err(Error::CSeqMethodMismatch));

    // The broken requests that still name their transaction can be answered.
    for name in [
        "clerr", "ncl", "ltgtruri", "lwsstart", "escruri", "badvers", "mcl01",
    ] {
        let bytes = fixture(name);
        let mut out = Vec::new();
        sip::build::reply_to_unparsable(&bytes, 400, "Bad Request", &mut out)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let reply = Message::parse(&out).unwrap();
        assert_eq!(reply.status(), Some(400));
        assert_eq!(reply.headers_of(HeaderName::CallId).count(), 1, "{name}");
    }
    // A response is never answered.
    let bytes = fixture("bigcode");
    assert!(sip::build::reply_to_unparsable(&bytes, 400, "Bad Request", &mut Vec::new()).is_err());
}

#[test]
fn remaining_valid_messages_fields() {
    let bytes = fixture("lwsdisp");
    let m = Message::parse(&bytes).unwrap();
    let from = m.from_header().unwrap();
    assert_eq!(from.display_name(), Some("caller"));
    assert_eq!(from.tag(), Some("323"));

    let bytes = fixture("badbranch");
    let m = Message::parse(&bytes).unwrap();
    let v = m.top_via().unwrap();
    assert_eq!(v.branch(), Some("z9hG4bK"));
    assert!(v.has_magic_cookie());

    let bytes = fixture("baddate");
    let m = Message::parse(&bytes).unwrap();
    assert_eq!(m.header("date"), Some("Fri, 01 Jan 2010 16:00:00 EST"));

    let bytes = fixture("invut");
    let m = Message::parse(&bytes).unwrap();
    assert_eq!(m.content_type(), Some("application/unknownformat"));
    assert_eq!(m.body().len(), 40);

    let bytes = fixture("regaut01");
    let m = Message::parse(&bytes).unwrap();
    assert_eq!(
        m.header("Authorization"),
        Some("NoOneKnowsThisScheme opaque-data=here")
    );
    assert_eq!(m.content_length(), Some(0));

    let bytes = fixture("sdp01");
    let m = Message::parse(&bytes).unwrap();
    assert_eq!(m.header("Accept"), Some("text/nobodyKnowsThis"));
    assert_eq!(m.body().len(), 150);

    let bytes = fixture("semiuri");
    let m = Message::parse(&bytes).unwrap();
    let accept = m.headers_named("Accept").next().unwrap();
    assert_eq!(accept.value_pieces().count(), 3);
}
