//! Fuzz target: any bytes through framing, parsing, every accessor, validation, building and
//! editing. Nothing may panic, and what we write must parse back.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sip::{Editor, Framing, HeaderName, Limits, Message, ResponseBuilder};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let _ = sip::next_frame(data, &limits);
    let _ = Message::parse_with(data, &limits, Framing::Stream);
    let msg = match Message::parse(data) {
        Ok(m) => m,
        Err(e) => {
            let _ = e.disposition();
            let mut out = Vec::new();
            if sip::build::reply_to_unparsable(data, 400, "Bad Request", &mut out).is_ok() {
                Message::parse(&out).expect("our reply to an unparsable request parses");
            }
            return;
        }
    };
    touch(&msg);
    let _ = msg.validate();

    // No edits: byte for byte the same message.
    let mut same = Vec::new();
    Editor::new(&msg).write(&mut same).expect("empty edit writes");
    assert_eq!(same, msg.as_bytes());

    // The proxy's edits.
    let mut ed = Editor::new(&msg);
    ed.prepend_header("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKfuzz");
    ed.prepend_header("Record-Route", "<sip:192.0.2.1;lr>");
    let _ = ed.decrement_max_forwards();
    if msg.is_request() {
        ed.pop_first(HeaderName::Route);
    }
    let mut out = Vec::new();
    if ed.write(&mut out).is_ok() {
        if let Ok(edited) = Message::parse(&out) {
            touch(&edited);
            assert_eq!(edited.body(), msg.body());
        }
    }

    if msg.is_request() {
        let mut out = Vec::new();
        let r = ResponseBuilder::new(&msg, 503)
            .to_tag("fz")
            .header("Retry-After", "60")
            .write(&mut out);
        if r.is_ok() {
            Message::parse(&out).expect("a response we build parses");
        }
    }
});

fn touch(m: &Message<'_>) {
    let _ = (m.method(), m.request_uri(), m.status(), m.reason_phrase(), m.body());
    for v in m.vias().flatten() {
        let _ = (v.branch(), v.received(), v.rport(), v.host().ip(), v.transport());
    }
    let _ = m.from_header().map(|f| (f.tag(), f.uri().aor_key()));
    let _ = m.to_header().map(|t| t.uri().aor_eq(&t.uri()));
    let _ = (m.call_id(), m.cseq(), m.max_forwards(), m.expires(), m.retry_after());
    for r in m.routes().chain(m.record_routes()).flatten() {
        let _ = r.uri().is_loose_route();
    }
    for c in m.contacts().flatten() {
        let _ = c.addr().map(|a| a.expires());
    }
    let _ = (m.resource_priorities().count(), m.reasons().count(), m.supported().count());
    for h in m.headers() {
        let _ = h.value_pieces().count();
    }
}
