//! What a proxy reads from a message, extracted with our parser and with rsip, so that tests
//! can compare the two and benchmarks can time the same work on both.

#![allow(dead_code)]

use std::convert::TryFrom;

/// One address (Route, Contact, From/To URI) as both parsers can describe it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Addr {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    pub tag: Option<String>,
    pub expires: Option<String>,
    pub lr: bool,
}

/// One Via hop.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hop {
    pub transport: String,
    pub host: String,
    pub port: Option<u16>,
    pub branch: Option<String>,
    pub received: Option<String>,
}

/// The proxy's view of a message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Extract {
    pub method: Option<String>,
    pub status: Option<u16>,
    pub ruri: Option<Addr>,
    pub vias: Vec<Hop>,
    pub from: Addr,
    pub to: Addr,
    pub call_id: String,
    pub cseq: (u32, String),
    pub max_forwards: Option<u32>,
    pub routes: Vec<Addr>,
    pub record_routes: Vec<Addr>,
    pub contacts: Vec<Addr>,
    pub body: Vec<u8>,
}

fn ours_addr(uri: &sip::Uri<'_>, params: Option<sip::Params<'_>>) -> Addr {
    let hp = params.unwrap_or_default();
    Addr {
        user: uri.user().map(String::from),
        host: uri
            .host()
            .map(|h| h.as_str().to_ascii_lowercase())
            .unwrap_or_default(),
        port: uri.port(),
        tag: hp.value("tag").map(String::from),
        expires: hp.value("expires").map(String::from),
        lr: uri.is_loose_route() || hp.has("lr"),
    }
}

/// Our parser's view; `None` when it refuses the message.
pub fn ours(bytes: &[u8]) -> Option<Extract> {
    let m = sip::Message::parse(bytes).ok()?;
    let na = |n: sip::NameAddr<'_>| ours_addr(&n.uri(), Some(n.params()));
    let cseq = m.cseq().ok()?;
    Some(Extract {
        method: m.method().map(|x| x.as_str().to_string()),
        status: m.status(),
        ruri: m.request_uri().map(|u| ours_addr(&u, None)),
        vias: m
            .vias()
            .map(|v| {
                v.map(|v| Hop {
                    transport: v.transport().as_str().to_string(),
                    host: v.host().as_str().to_ascii_lowercase(),
                    port: v.port(),
                    branch: v.branch().map(String::from),
                    received: v.received().map(String::from),
                })
            })
            .collect::<Result<_, _>>()
            .ok()?,
        from: na(m.from_header().ok()?),
        to: na(m.to_header().ok()?),
        call_id: m.call_id().ok()?.to_string(),
        cseq: (cseq.seq, cseq.method.as_str().to_string()),
        max_forwards: m.max_forwards().ok()?,
        routes: m
            .routes()
            .map(|r| r.map(na))
            .collect::<Result<_, _>>()
            .ok()?,
        record_routes: m
            .record_routes()
            .map(|r| r.map(na))
            .collect::<Result<_, _>>()
            .ok()?,
        contacts: m
            .contacts()
            .filter_map(|c| match c {
                Ok(sip::Contact::Addr(a)) => Some(Ok(na(a))),
                Ok(sip::Contact::Wildcard(_)) => None,
                Err(e) => Some(Err(e)),
            })
            .collect::<Result<_, _>>()
            .ok()?,
        body: m.body().to_vec(),
    })
}

fn rsip_host(h: &rsip::HostWithPort) -> (String, Option<u16>) {
    let host = match &h.host {
        rsip::Host::Domain(d) => d.to_string().to_ascii_lowercase(),
        rsip::Host::IpAddr(ip) => ip.to_string(),
    };
    (host, h.port.map(|p| *p.value()))
}

fn rsip_addr(uri: &rsip::Uri, params: &[rsip::Param]) -> Addr {
    let (host, port) = rsip_host(&uri.host_with_port);
    let mut a = Addr {
        user: uri.auth.as_ref().map(|a| a.user.clone()),
        host,
        port,
        ..Addr::default()
    };
    for p in params.iter().chain(uri.params.iter()) {
        match p {
            rsip::Param::Lr => a.lr = true,
            rsip::Param::Tag(t) if params.contains(p) => a.tag = Some(t.to_string()),
            rsip::Param::Expires(e) if params.contains(p) => a.expires = Some(e.to_string()),
            _ => {}
        }
    }
    a
}

/// rsip's view; `None` when it refuses the message or a header the proxy needs.
pub fn theirs(bytes: &[u8]) -> Option<Extract> {
    use rsip::headers::ToTypedHeader;
    use rsip::headers::UntypedHeader;
    use rsip::message::HasHeaders;
    let m = rsip::SipMessage::try_from(bytes).ok()?;
    let (method, status, ruri) = match &m {
        rsip::SipMessage::Request(r) => (
            Some(r.method.to_string()),
            None,
            Some(rsip_addr(&r.uri, &[])),
        ),
        rsip::SipMessage::Response(r) => (None, Some(r.status_code.code()), None),
    };
    let headers = match &m {
        rsip::SipMessage::Request(r) => r.headers(),
        rsip::SipMessage::Response(r) => r.headers(),
    };
    let mut e = Extract {
        method,
        status,
        ruri,
        ..Extract::default()
    };
    for h in headers.iter() {
        match h {
            rsip::Header::Via(v) => {
                let v = v.typed().ok()?;
                let (host, port) = rsip_host(&v.uri.host_with_port);
                e.vias.push(Hop {
                    transport: v.transport.to_string(),
                    host,
                    port,
                    branch: v.branch().map(|b| b.to_string()),
                    received: v.params.iter().find_map(|p| match p {
                        rsip::Param::Received(r) => Some(r.to_string()),
                        _ => None,
                    }),
                });
            }
            rsip::Header::From(f) => {
                let f = f.typed().ok()?;
                e.from = rsip_addr(&f.uri, &f.params);
            }
            rsip::Header::To(t) => {
                let t = t.typed().ok()?;
                e.to = rsip_addr(&t.uri, &t.params);
            }
            rsip::Header::CallId(c) => e.call_id = c.value().trim().to_string(),
            rsip::Header::CSeq(c) => {
                let c = c.typed().ok()?;
                e.cseq = (c.seq, c.method.to_string());
            }
            rsip::Header::MaxForwards(mf) => e.max_forwards = Some(mf.num().ok()?),
            rsip::Header::Route(r) => {
                for u in r.typed().ok()?.0.uris() {
                    e.routes.push(rsip_addr(&u.uri, &u.params));
                }
            }
            rsip::Header::RecordRoute(r) => {
                for u in r.typed().ok()?.0.uris() {
                    e.record_routes.push(rsip_addr(&u.uri, &u.params));
                }
            }
            rsip::Header::Contact(c) => {
                let c = c.typed().ok()?;
                e.contacts.push(rsip_addr(&c.uri, &c.params));
            }
            _ => {}
        }
    }
    e.body = match &m {
        rsip::SipMessage::Request(r) => r.body.clone(),
        rsip::SipMessage::Response(r) => r.body.clone(),
    };
    Some(e)
}

/// Parse and read every proxy header with our parser, without allocating; returns a number
/// derived from what was read so that the work cannot be optimised away.
pub fn ours_touch(bytes: &[u8]) -> usize {
    let Ok(m) = sip::Message::parse(bytes) else {
        return 0;
    };
    let mut n = m.method().map_or(0, |x| x.as_str().len()) + usize::from(m.status().unwrap_or(0));
    if let Some(u) = m.request_uri() {
        n += u.user().map_or(0, str::len) + u.host_raw().len();
    }
    for v in m.vias().flatten() {
        n += v.host_raw().len() + usize::from(v.port().unwrap_or(0));
        n += v.branch().map_or(0, str::len) + v.received().map_or(0, str::len);
        n += v.transport().as_str().len();
    }
    if let Ok(f) = m.from_header() {
        n += f.tag().map_or(0, str::len) + f.uri().host_raw().len();
    }
    if let Ok(t) = m.to_header() {
        n += t.tag().map_or(0, str::len) + t.uri().host_raw().len();
    }
    n += m.call_id().map_or(0, str::len);
    n += m.cseq().map_or(0, |c| c.seq as usize);
    n += m.max_forwards().ok().flatten().unwrap_or(0) as usize;
    for r in m.routes().chain(m.record_routes()).flatten() {
        n += r.uri().host_raw().len() + usize::from(r.uri().is_loose_route());
    }
    for c in m.contacts().flatten() {
        if let sip::Contact::Addr(a) = c {
            n += a.uri().host_raw().len() + a.expires().ok().flatten().unwrap_or(0) as usize;
        }
    }
    n + m.body().len() + m.content_length().unwrap_or(0) as usize
}

/// The same reads with rsip, as lean as its API allows (typed headers, no extra copies).
pub fn rsip_touch(bytes: &[u8]) -> usize {
    use rsip::headers::ToTypedHeader;
    use rsip::headers::UntypedHeader;
    use rsip::message::HasHeaders;
    let Ok(m) = rsip::SipMessage::try_from(bytes) else {
        return 0;
    };
    let (headers, body) = match &m {
        rsip::SipMessage::Request(r) => (
            r.headers(),
            r.body.len() + r.method.to_string().len() + r.uri.params.len(),
        ),
        rsip::SipMessage::Response(r) => {
            (r.headers(), r.body.len() + r.status_code.code() as usize)
        }
    };
    let mut n = body;
    for h in headers.iter() {
        match h {
            rsip::Header::Via(v) => {
                if let Ok(v) = v.typed() {
                    n += v.params.len() + v.branch().map_or(0, |_| 1);
                    n += v.uri.host_with_port.port.map_or(0, |p| *p.value() as usize);
                }
            }
            rsip::Header::From(f) => {
                if let Ok(f) = f.typed() {
                    n += f.params.len();
                }
            }
            rsip::Header::To(t) => {
                if let Ok(t) = t.typed() {
                    n += t.params.len();
                }
            }
            rsip::Header::CallId(c) => n += c.value().len(),
            rsip::Header::CSeq(c) => n += c.typed().map_or(0, |c| c.seq as usize),
            rsip::Header::MaxForwards(mf) => n += mf.num().unwrap_or(0) as usize,
            rsip::Header::Route(r) => n += r.typed().map_or(0, |r| r.0.uris().len()),
            rsip::Header::RecordRoute(r) => n += r.typed().map_or(0, |r| r.0.uris().len()),
            rsip::Header::Contact(c) => n += c.typed().map_or(0, |c| c.params.len()),
            rsip::Header::ContentLength(l) => n += l.value().len(),
            _ => {}
        }
    }
    n
}
