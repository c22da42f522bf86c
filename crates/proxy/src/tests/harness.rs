//! A simulated network for the proxy: phones on the access side, core servers on the other,
//! a clock that jumps to the next deadline. Tests read: set up, drive, assert.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::config::{Config, ListenerConfig, UpstreamConfig};
use crate::events::Event;
use crate::msg::{self, Message};
use crate::transport::{FlowId, Input, ListenerId, Realm, Transport};
use crate::Proxy;

pub const ACCESS: &str = "10.0.0.1:5060";
pub const CORE: &str = "10.1.0.1:5060";

pub fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// How a simulated core server answers INVITEs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoreInvite {
    /// 100, 180, 200.
    Answer,
    /// 100 then this final, with this Retry-After.
    Reject(u16, Option<u32>),
    /// Nothing at all.
    Silent,
    /// 100 and 180, then nothing.
    Ring,
}

/// Whether a simulated registrar demands credentials on REGISTER, and how it treats a nonce
/// offered again (the digest itself is not computed: any `Authorization` counts as valid).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrarAuth {
    /// Accepts everything.
    Open,
    /// 401 without an Authorization; accepts a nonce again (Kamailio's default).
    NonceReuse,
    /// 401 without an Authorization, and 401 (`stale=true`) for one it has seen before.
    OneTimeNonce,
}

#[derive(Debug, Clone)]
pub struct Peer {
    /// Core: whether REGISTER needs credentials.
    pub auth: RegistrarAuth,
    /// Authorization values a registrar has accepted.
    pub seen_credentials: Vec<String>,
    /// Core: how INVITEs are answered. Phones always answer 180 + 200 unless `ring_only`.
    pub invite: CoreInvite,
    /// OPTIONS answer code; None = silent.
    pub options: Option<u16>,
    /// REGISTER answer: the code (200 echoes contacts; 0: silent).
    pub register: u16,
    /// Everything received, in order.
    pub inbox: Vec<Vec<u8>>,
}

pub struct Net {
    pub proxy: Proxy,
    pub now: Instant,
    pub peers: HashMap<SocketAddr, Peer>,
    pub events: Vec<Event>,
    /// Transmits to addresses without a peer.
    pub lost: Vec<(SocketAddr, Vec<u8>)>,
    /// On a connection-oriented listener, the shell's connections (associations) by peer, as
    /// a shell keeps them: a transmit without a flow opens one (logged in `opened`), a close
    /// from the proxy ends it (logged in `closed`).
    pub connections: HashMap<(ListenerId, SocketAddr), FlowId>,
    pub opened: Vec<SocketAddr>,
    pub closed: Vec<SocketAddr>,
    tag_counter: u32,
}

pub fn config() -> Config {
    Config {
        node_name: "sbc-a".into(),
        listeners: vec![
            ListenerConfig {
                realm: Realm::Access,
                transport: Transport::Udp,
                addr: addr(ACCESS),
            },
            ListenerConfig {
                realm: Realm::Core,
                transport: Transport::Udp,
                addr: addr(CORE),
            },
        ],
        upstreams: vec![UpstreamConfig::from_uri("sip:10.1.0.10:5060;transport=udp", 1).unwrap()],
        ..Config::default()
    }
}

impl Net {
    pub fn new(config: Config) -> Self {
        let now = Instant::now();
        let mut peers = HashMap::new();
        for u in &config.upstreams {
            peers.insert(u.addr, Peer::core());
        }
        Net {
            proxy: Proxy::new(config, now),
            now,
            peers,
            events: Vec::new(),
            lost: Vec::new(),
            connections: HashMap::new(),
            opened: Vec::new(),
            closed: Vec::new(),
            tag_counter: 0,
        }
    }

    pub fn standard() -> Self {
        Net::new(config())
    }

    pub fn add_phone(&mut self, a: &str) {
        self.peers.insert(addr(a), Peer::phone());
    }

    pub fn peer(&mut self, a: &str) -> &mut Peer {
        self.peers.get_mut(&addr(a)).unwrap()
    }

    /// A message from `from` arriving on the listener of `realm`.
    pub fn inject(&mut self, realm: Realm, from: &str, bytes: &[u8]) {
        let listener = ListenerId(match realm {
            Realm::Access => 0,
            Realm::Core => 1,
        });
        self.proxy.handle_input(
            self.now,
            Input {
                listener,
                flow: None,
                source: addr(from),
                bytes,
            },
        );
        self.drive();
    }

    /// Delivers everything the proxy sends, lets peers answer, until quiet.
    pub fn drive(&mut self) {
        let mut rounds = 0;
        loop {
            rounds += 1;
            assert!(rounds < 10_000, "the network does not settle");
            while let Some(e) = self.proxy.poll_event() {
                self.events.push(e);
            }
            let Some(mut t) = self.proxy.poll_transmit() else {
                // As a shell does: what was sent before a close goes out before it (the ACK
                // of the 503 that asked for the close, on the association it closes).
                while let Some(close) = self.proxy.poll_close() {
                    let key = (close.listener, close.remote);
                    if self.connections.get(&key) == Some(&close.flow) {
                        self.connections.remove(&key);
                        self.closed.push(close.remote);
                    }
                }
                self.proxy.assert_one_deadline_per_transaction();
                break;
            };
            if t.transport.is_reliable() {
                let key = (t.listener, t.destination);
                let next = FlowId(1000 + self.opened.len() as u64);
                let flow = match t.flow.filter(|f| self.connections.get(&key) == Some(f)) {
                    Some(flow) => flow,
                    None => *self.connections.entry(key).or_insert_with(|| {
                        self.opened.push(t.destination);
                        next
                    }),
                };
                t.flow = Some(flow);
            }
            let replies = match self.peers.get_mut(&t.destination) {
                Some(peer) => {
                    peer.inbox.push(t.bytes.clone());
                    self.tag_counter += 1;
                    peer.react(&t.bytes, t.destination, self.tag_counter)
                }
                None => {
                    self.lost.push((t.destination, t.bytes));
                    Vec::new()
                }
            };
            for reply in replies {
                self.proxy.handle_input(
                    self.now,
                    Input {
                        listener: t.listener,
                        flow: t.flow,
                        source: t.destination,
                        bytes: &reply,
                    },
                );
            }
        }
    }

    /// Moves the clock forward by `d`, firing every deadline on the way.
    pub fn advance(&mut self, d: Duration) {
        let target = self.now + d;
        loop {
            self.drive();
            match self.proxy.poll_timeout() {
                Some(at) if at <= target => {
                    self.now = self.now.max(at);
                    self.proxy.handle_timeout(self.now);
                }
                _ => break,
            }
        }
        self.now = target;
        self.proxy.handle_timeout(self.now);
        self.drive();
    }

    pub fn set_state(&mut self, state: crate::SystemState) {
        self.proxy.set_system_state(state);
        self.drive();
    }

    /// Messages received by `a` whose first line starts with `prefix`.
    pub fn received(&self, a: &str, prefix: &str) -> Vec<String> {
        self.peers
            .get(&addr(a))
            .map(|p| {
                p.inbox
                    .iter()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .filter(|s| s.starts_with(prefix))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Registers `user` from phone `phone` (expires 3600) and returns the response it got.
    pub fn register(&mut self, phone: &str, user: &str, expires: u32) -> String {
        self.tag_counter += 1;
        let req = Req::new("REGISTER", "sip:example.com", phone)
            .from(&format!("sip:{user}@example.com"))
            .to(&format!("sip:{user}@example.com"), None)
            .call_id(&format!("reg-{user}"))
            .cseq(self.tag_counter)
            .header(
                "Contact",
                &format!("<sip:{user}@{phone}>;expires={expires}"),
            );
        self.inject(Realm::Access, phone, &req.bytes());
        self.received(phone, "SIP/2.0").pop().unwrap_or_default()
    }

    /// As [`Net::register`], with credentials for a fresh nonce, as a phone sends them after
    /// its registrar's challenge.
    pub fn register_with_credentials(&mut self, phone: &str, user: &str, expires: u32) -> String {
        self.tag_counter += 1;
        let n = self.tag_counter;
        let req = Req::new("REGISTER", "sip:example.com", phone)
            .from(&format!("sip:{user}@example.com"))
            .to(&format!("sip:{user}@example.com"), None)
            .call_id(&format!("reg-{user}"))
            .cseq(n)
            .header(
                "Contact",
                &format!("<sip:{user}@{phone}>;expires={expires}"),
            )
            .add_header("Authorization", &digest(user, n));
        self.inject(Realm::Access, phone, &req.bytes());
        self.received(phone, "SIP/2.0").pop().unwrap_or_default()
    }

    /// A call from a phone to the core: the phone's INVITE answered by the core.
    pub fn call_out(&mut self, phone: &str, call_id: &str) -> Req {
        let req = Req::new("INVITE", "sip:+15550001@example.com", phone)
            .from("sip:alice@example.com")
            .call_id(call_id);
        self.inject(Realm::Access, phone, &req.bytes());
        req
    }
}

impl Peer {
    pub fn phone() -> Self {
        Peer {
            auth: RegistrarAuth::Open,
            seen_credentials: Vec::new(),
            invite: CoreInvite::Answer,
            options: Some(200),
            register: 200,
            inbox: Vec::new(),
        }
    }

    pub fn core() -> Self {
        Peer {
            auth: RegistrarAuth::Open,
            seen_credentials: Vec::new(),
            invite: CoreInvite::Answer,
            options: Some(200),
            register: 200,
            inbox: Vec::new(),
        }
    }

    pub fn react(&mut self, bytes: &[u8], me: SocketAddr, n: u32) -> Vec<Vec<u8>> {
        let Ok(m) = Message::parse(bytes) else {
            return Vec::new();
        };
        if !m.is_request() {
            return Vec::new();
        }
        let tag = format!("peer{n}");
        let contact = ("Contact", format!("<sip:peer@{me}>"));
        let reply =
            |code: u16, extra: &[(&str, String)]| msg::response_to(&m, code, Some(&tag), extra);
        match m.method().as_str() {
            "ACK" => Vec::new(),
            "INVITE" => match self.invite {
                CoreInvite::Answer => {
                    vec![reply(100, &[]), reply(180, &[]), reply(200, &[contact])]
                }
                CoreInvite::Reject(code, ra) => {
                    let extra: Vec<(&str, String)> = ra
                        .map(|s| ("Retry-After", s.to_string()))
                        .into_iter()
                        .collect();
                    vec![reply(100, &[]), reply(code, &extra)]
                }
                CoreInvite::Silent => Vec::new(),
                CoreInvite::Ring => vec![reply(100, &[]), reply(180, &[])],
            },
            "OPTIONS" => self.options.map(|c| reply(c, &[])).into_iter().collect(),
            "REGISTER" => {
                let challenge = (
                    "WWW-Authenticate",
                    "Digest realm=\"example.com\", nonce=\"fresh\"".to_owned(),
                );
                let credentials = m.header("authorization").map(str::to_owned);
                match (self.auth, credentials) {
                    (RegistrarAuth::Open, _) => {}
                    (_, None) => return vec![reply(401, &[challenge])],
                    (RegistrarAuth::OneTimeNonce, Some(c))
                        if self.seen_credentials.contains(&c) =>
                    {
                        let stale = (
                            "WWW-Authenticate",
                            "Digest realm=\"example.com\", nonce=\"fresh\", stale=true".to_owned(),
                        );
                        return vec![reply(401, &[stale])];
                    }
                    (_, Some(c)) => self.seen_credentials.push(c),
                }
                if self.register == 0 {
                    return Vec::new();
                }
                if self.register != 200 {
                    return vec![reply(self.register, &[])];
                }
                let header_expires = m.expires();
                let contacts: Vec<(&str, String)> = m
                    .contacts()
                    .filter_map(|c| {
                        let e = c
                            .expires()
                            .ok()
                            .flatten()
                            .or(header_expires)
                            .unwrap_or(3600);
                        (e > 0).then(|| ("Contact", format!("<{}>;expires={e}", c.uri())))
                    })
                    .collect();
                vec![reply(200, &contacts)]
            }
            "CANCEL" => vec![reply(200, &[])],
            _ => vec![reply(200, &[])],
        }
    }
}

/// A request built for tests.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub uri: String,
    pub via: String,
    pub branch: String,
    pub from: String,
    pub from_tag: String,
    pub to: String,
    pub to_tag: Option<String>,
    pub call_id: String,
    pub cseq: u32,
    pub headers: Vec<(String, String)>,
}

impl Req {
    pub fn new(method: &str, uri: &str, sender: &str) -> Self {
        Req {
            method: method.into(),
            uri: uri.into(),
            via: sender.into(),
            branch: format!("z9hG4bK{method}{}", uri.len() + sender.len()),
            from: "sip:alice@example.com".into(),
            from_tag: "ftag".into(),
            to: uri.into(),
            to_tag: None,
            call_id: format!("call-{method}"),
            cseq: 1,
            headers: vec![("Contact".into(), format!("<sip:alice@{sender}>"))],
        }
    }

    pub fn from(mut self, uri: &str) -> Self {
        self.from = uri.into();
        self
    }

    pub fn to(mut self, uri: &str, tag: Option<&str>) -> Self {
        self.to = uri.into();
        self.to_tag = tag.map(Into::into);
        self
    }

    pub fn call_id(mut self, id: &str) -> Self {
        self.call_id = id.into();
        self.branch = format!("z9hG4bK-{}-{}-{}", self.method, id, self.cseq);
        self
    }

    pub fn branch(mut self, b: &str) -> Self {
        self.branch = b.into();
        self
    }

    pub fn cseq(mut self, n: u32) -> Self {
        self.cseq = n;
        self.branch = format!("z9hG4bK-{}-{}-{}", self.method, self.call_id, n);
        self
    }

    pub fn method(mut self, m: &str) -> Self {
        self.method = m.into();
        self
    }

    /// Replaces (or, for Contact, sets) a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn add_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut s = format!("{} {} SIP/2.0\r\n", self.method, self.uri);
        s += &format!(
            "Via: SIP/2.0/UDP {};branch={};rport\r\n",
            self.via, self.branch
        );
        s += "Max-Forwards: 70\r\n";
        s += &format!("From: <{}>;tag={}\r\n", self.from, self.from_tag);
        match &self.to_tag {
            Some(t) => s += &format!("To: <{}>;tag={t}\r\n", self.to),
            None => s += &format!("To: <{}>\r\n", self.to),
        }
        s += &format!("Call-ID: {}\r\n", self.call_id);
        let cseq_method = &self.method;
        s += &format!("CSeq: {} {cseq_method}\r\n", self.cseq);
        for (n, v) in &self.headers {
            s += &format!("{n}: {v}\r\n");
        }
        s += "Content-Length: 0\r\n\r\n";
        s.into_bytes()
    }
}

/// An Authorization value for `user` on nonce number `n` (the simulated registrar checks no
/// digest; distinct nonces give distinct values).
pub fn digest(user: &str, n: u32) -> String {
    format!(
        "Digest username=\"{user}\", realm=\"example.com\", nonce=\"n{n}\", \
         uri=\"sip:example.com\", response=\"{n:032x}\""
    )
}

/// The Route set a UAC builds from the Record-Route of a message (reversed).
pub fn route_set(message: &str) -> Vec<String> {
    let m = Message::parse(message.as_bytes()).unwrap();
    let mut rr: Vec<String> = m
        .list("record-route")
        .iter()
        .map(|s| s.to_string())
        .collect();
    rr.reverse();
    rr
}

/// Status code of a response text.
pub fn code(response: &str) -> u16 {
    response
        .get(8..11)
        .and_then(|c| c.parse().ok())
        .unwrap_or_default()
}

/// A header value of a message text.
pub fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    message.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}
