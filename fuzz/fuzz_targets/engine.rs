//! Fuzz target: the pure proxy engine (`proxy::Proxy`) driven by arbitrary sequences of inputs,
//! checking the border's invariants (SPEC §1a) after every step.
//!
//! The input is read as a program: each step either delivers a message, jumps the clock, closes
//! a TCP flow or changes the system state. Messages are built from real shapes (INVITE,
//! REGISTER, BYE, ACK, CANCEL, OPTIONS, MESSAGE; responses 100/180/200/401/503 with Retry-After
//! echoing a request the engine really sent, from where it went or from somewhere else), with
//! Call-IDs, tags and branches from small pools so that messages relate to each other, then
//! mutated byte-wise. Sources are phones on the access side, the configured upstreams, and
//! hosts nobody configured. The caps are small so that they are reached.
//!
//! Invariants, checked after each step:
//! - nothing panics;
//! - transactions held <= `max_transactions` + 10 % (in-dialog work may use that much more),
//!   plus one probe in flight per upstream (the box's own, outside the cap);
//! - sessions <= `max_dialogs`, bindings <= `max_bindings`;
//! - every transmit goes to a configured upstream, to the address of a binding the engine
//!   cached, or to the source of a request it received: nothing a sender writes (Route,
//!   Request-URI, Via, Contact) chooses a destination.

#![no_main]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::arbitrary::{Result as ArbResult, Unstructured};
use libfuzzer_sys::fuzz_target;
use proxy::{
    Config, FlowId, Input, Limits, ListenerConfig, ListenerId, Proxy, Realm, SystemState,
    Transport, UpstreamConfig,
};

const ACCESS_UDP: ListenerId = ListenerId(0);
const ACCESS_TCP: ListenerId = ListenerId(1);
const CORE_UDP: ListenerId = ListenerId(2);
const BOX_ACCESS: &str = "10.0.0.1:5060";
const BOX_CORE: &str = "10.1.0.1:5060";
const UPSTREAMS: [&str; 2] = ["10.1.0.10:5060", "10.1.0.11:5060"];
/// Phones (access) and hosts nobody configured, on either side.
const HOSTS: [&str; 6] = [
    "192.0.2.1:5060",
    "192.0.2.2:5060",
    "192.0.2.3:40000",
    "198.51.100.66:5060",
    "10.1.0.99:5060",
    "127.0.0.9:39999",
];
// Small enough that the fuzzer's programs reach them: a replay of the corpus with
// ENGINE_FUZZ_REPORT showed 26 transactions, 4 sessions and 2 bindings at most (caps of 40, 8
// and 6 were never hit).
const MAX_TRANSACTIONS: usize = 12;
const MAX_DIALOGS: usize = 3;
const MAX_BINDINGS: usize = 2;

fn addr(s: &str) -> SocketAddr {
    // Constants above; a typo is a bug of this file, found on the first run.
    s.parse().expect("a constant address")
}

fn config() -> Config {
    let listener = |realm, transport, a| ListenerConfig {
        realm,
        transport,
        addr: addr(a),
    };
    Config {
        node_name: "fuzz".into(),
        listeners: vec![
            listener(Realm::Access, Transport::Udp, BOX_ACCESS),
            listener(Realm::Access, Transport::Tcp, BOX_ACCESS),
            listener(Realm::Core, Transport::Udp, BOX_CORE),
        ],
        upstreams: UPSTREAMS
            .iter()
            .enumerate()
            .map(|(i, u)| {
                UpstreamConfig::from_uri(&format!("sip:{u};transport=udp"), i as u32 + 1)
                    .expect("a constant upstream")
            })
            .collect(),
        local_names: vec!["sbc.example.net".into()],
        limits: Limits {
            per_source_rps: 30,
            max_transactions: MAX_TRANSACTIONS,
            max_dialogs: MAX_DIALOGS,
            max_bindings: MAX_BINDINGS,
            max_retry_after: Duration::from_secs(120),
            ..Limits::default()
        },
        ..Config::default()
    }
}

/// The engine, its clock, what it sent, and what the invariants allow it to send to.
struct World {
    proxy: Proxy,
    now: Instant,
    /// Requests the engine sent, kept for building responses to them (newest last).
    sent_requests: Vec<(SocketAddr, ListenerId, Option<FlowId>, String)>,
    /// Responses the engine sent to phones (to build ACK/BYE in their dialogs).
    sent_responses: Vec<String>,
    /// Sources of requests the engine received.
    sources: HashSet<SocketAddr>,
    /// Addresses of bindings the engine cached at some point.
    bindings: HashSet<SocketAddr>,
    upstreams: HashSet<SocketAddr>,
}

impl World {
    fn new() -> World {
        let now = Instant::now();
        World {
            proxy: Proxy::new(config(), now),
            now,
            sent_requests: Vec::new(),
            sent_responses: Vec::new(),
            sources: HashSet::new(),
            bindings: HashSet::new(),
            upstreams: UPSTREAMS.iter().map(|u| addr(u)).collect(),
        }
    }

    fn deliver(
        &mut self,
        listener: ListenerId,
        flow: Option<FlowId>,
        source: SocketAddr,
        bytes: &[u8],
    ) {
        if !bytes.starts_with(b"SIP/2.0") {
            self.sources.insert(source);
        }
        self.proxy.handle_input(
            self.now,
            Input {
                listener,
                flow,
                source,
                bytes,
            },
        );
        self.drain();
    }

    /// Jumps the clock forward by `d`, firing every deadline on the way in order.
    fn advance(&mut self, d: Duration) {
        let target = self.now + d;
        for _ in 0..10_000 {
            match self.proxy.poll_timeout() {
                Some(at) if at <= target => {
                    self.now = self.now.max(at);
                    self.proxy.handle_timeout(self.now);
                    self.drain();
                }
                _ => break,
            }
        }
        self.now = target;
        self.proxy.handle_timeout(self.now);
        self.drain();
    }

    /// Takes everything the engine wants sent and checks where it goes.
    fn drain(&mut self) {
        for b in self.proxy.registrations() {
            self.bindings.insert(b.remote);
        }
        while let Some(t) = self.proxy.poll_transmit() {
            let d = t.destination;
            assert!(
                self.upstreams.contains(&d)
                    || self.bindings.contains(&d)
                    || self.sources.contains(&d),
                "a transmit to {d}, which is no upstream, no binding and no request's source:\n{}",
                String::from_utf8_lossy(&t.bytes)
            );
            let text = String::from_utf8_lossy(&t.bytes).into_owned();
            if trace_wanted() {
                // ENGINE_FUZZ_TRACE=1 on one input: what the engine sent, to read a failure.
                eprintln!("-> {d} {}", text.lines().next().unwrap_or_default());
            }
            if text.starts_with("SIP/2.0") {
                remember(&mut self.sent_responses, text);
            } else {
                remember(&mut self.sent_requests, (d, t.listener, t.flow, text));
            }
        }
        while self.proxy.poll_event().is_some() {}
        self.check_bounds();
    }

    fn check_bounds(&self) {
        let stats = self.proxy.stats();
        let held = stats.server_transactions + stats.client_transactions;
        // The cap gates what senders make the box do; its own OPTIONS probes (one in flight
        // per upstream) are outside it.
        let cap = (MAX_TRANSACTIONS + MAX_TRANSACTIONS / 10 + UPSTREAMS.len()) as u64;
        assert!(
            held <= cap,
            "{held} transactions held, cap {cap}: {stats:?}"
        );
        let counts = self.proxy.counts();
        assert!(
            counts.active_sessions <= MAX_DIALOGS,
            "{} sessions, cap {MAX_DIALOGS}",
            counts.active_sessions
        );
        let bindings = self.proxy.registrations().len();
        assert!(
            bindings <= MAX_BINDINGS,
            "{bindings} bindings, cap {MAX_BINDINGS}"
        );
        assert!(counts.registrations <= MAX_BINDINGS);
    }
}

/// Keeps the last few of something (enough to answer recent requests, bounded per run).
fn remember<T>(list: &mut Vec<T>, item: T) {
    if list.len() >= 32 {
        list.remove(0);
    }
    list.push(item);
}

/// The value of a header in a message's text (first match, full name only).
fn header_lines<'a>(msg: &'a str, names: &[&str]) -> Vec<&'a str> {
    msg.split("\r\n")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter(|l| {
            let name = l.split(':').next().unwrap_or_default().trim();
            names.iter().any(|n| n.eq_ignore_ascii_case(name))
        })
        .collect()
}

/// A request of a real shape; `u` chooses its details.
fn request(u: &mut Unstructured<'_>, source: SocketAddr) -> ArbResult<String> {
    let methods = [
        "INVITE", "REGISTER", "BYE", "ACK", "CANCEL", "OPTIONS", "MESSAGE",
    ];
    let method = *u.choose(&methods)?;
    let call = u.int_in_range(0..=5u8)?;
    let branch = u.int_in_range(0..=7u8)?;
    let user = u.int_in_range(0..=3u8)?;
    let uri = match u.int_in_range(0..=4u8)? {
        0 => format!("sip:user{user}@example.com"),
        1 => format!("sip:user{user}@{BOX_ACCESS}"),
        2 => format!("sip:{BOX_CORE}"),
        3 => format!("sip:x@{}", HOSTS[usize::from(user) % HOSTS.len()]),
        _ => format!("sip:user{user}@{}", HOSTS[usize::from(user)]),
    };
    let aor = format!("sip:user{user}@example.com");
    let mut m = format!(
        "{method} {} SIP/2.0\r\nVia: SIP/2.0/UDP {source};branch=z9hG4bK-f{branch}\r\n",
        if method == "REGISTER" {
            "sip:example.com"
        } else {
            &uri
        }
    );
    m.push_str(&format!("From: <{aor}>;tag=ft{call}\r\n"));
    let to_tag = match u.int_in_range(0..=3u8)? {
        0 => format!(";tag=tt{call}"),
        1 => ";tag=1".to_owned(),
        _ => String::new(),
    };
    m.push_str(&format!("To: <{aor}>{to_tag}\r\n"));
    m.push_str(&format!("Call-ID: call-{call}\r\n"));
    let cseq = u.int_in_range(1..=3u32)?;
    m.push_str(&format!("CSeq: {cseq} {method}\r\n"));
    m.push_str(&format!(
        "Max-Forwards: {}\r\n",
        *u.choose(&[70u32, 70, 1, 0])?
    ));
    m.push_str(&format!("Contact: <sip:user{user}@{source}>\r\n"));
    if method == "REGISTER" {
        m.push_str(&format!(
            "Expires: {}\r\n",
            *u.choose(&[3600u32, 60, 0, 5])?
        ));
    }
    if u.ratio(1, 4)? {
        let target = *u.choose(&[BOX_ACCESS, BOX_CORE, HOSTS[5]])?;
        m.push_str(&format!("Route: <sip:{target};lr>\r\n"));
    }
    if u.ratio(1, 8)? {
        m.push_str("Resource-Priority: ets.0\r\n");
    }
    if method == "INVITE" && u.ratio(1, 2)? {
        let body = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
        m.push_str(&format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    } else {
        m.push_str("Content-Length: 0\r\n\r\n");
    }
    Ok(m)
}

/// A response to a request the engine sent, as its next hop would answer it.
fn response(u: &mut Unstructured<'_>, request: &str) -> ArbResult<String> {
    let code = *u.choose(&[100u16, 180, 200, 200, 401, 503])?;
    let reason = match code {
        100 => "Trying",
        180 => "Ringing",
        200 => "OK",
        401 => "Unauthorized",
        _ => "Service Unavailable",
    };
    let mut m = format!("SIP/2.0 {code} {reason}\r\n");
    for line in header_lines(request, &["Via", "From", "Call-ID", "CSeq", "Record-Route"]) {
        m.push_str(line);
        m.push_str("\r\n");
    }
    for line in header_lines(request, &["To"]) {
        m.push_str(line);
        if code != 100 && !line.contains("tag=") {
            m.push_str(";tag=callee");
        }
        m.push_str("\r\n");
    }
    if code == 200 || code == 180 {
        m.push_str("Contact: <sip:callee@10.1.0.10:5060>\r\n");
        for line in header_lines(request, &["Contact", "Expires"]) {
            if request.starts_with("REGISTER") {
                m.push_str(line);
                m.push_str("\r\n");
            }
        }
    }
    if code == 503 {
        let secs = *u.choose(&[0u64, 1, 30, 4_294_967_295, 18_446_744_073_709_551_615])?;
        m.push_str(&format!("Retry-After: {secs}\r\n"));
    }
    if code == 401 {
        m.push_str("WWW-Authenticate: Digest realm=\"example.com\", nonce=\"n\"\r\n");
    }
    m.push_str("Content-Length: 0\r\n\r\n");
    Ok(m)
}

/// An in-dialog request (ACK or BYE) a phone would send after a response the engine sent it:
/// To with the callee's tag, Route from the Record-Route set reversed.
fn in_dialog(u: &mut Unstructured<'_>, answer: &str, source: SocketAddr) -> ArbResult<String> {
    let method = *u.choose(&["ACK", "BYE", "BYE", "INVITE"])?;
    let mut routes: Vec<&str> = header_lines(answer, &["Record-Route"])
        .into_iter()
        .filter_map(|l| l.split_once(':').map(|(_, v)| v.trim()))
        .collect();
    routes.reverse();
    let mut m = format!(
        "{method} sip:callee@10.1.0.10:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {source};branch=z9hG4bK-d{}\r\n",
        u.int_in_range(0..=7u8)?
    );
    for line in header_lines(answer, &["From", "To", "Call-ID"]) {
        m.push_str(line);
        m.push_str("\r\n");
    }
    for r in routes {
        m.push_str(&format!("Route: {r}\r\n"));
    }
    m.push_str(&format!(
        "CSeq: {} {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        u.int_in_range(1..=3u32)?
    ));
    Ok(m)
}

/// A few byte-level edits: flips, deletions, insertions of fuzzer bytes, a doubled line.
fn mutate(u: &mut Unstructured<'_>, text: String) -> ArbResult<Vec<u8>> {
    let mut bytes = text.into_bytes();
    for _ in 0..u.int_in_range(0..=3u8)? {
        if bytes.is_empty() {
            break;
        }
        let at = u.choose_index(bytes.len())?;
        match u.int_in_range(0..=3u8)? {
            0 => bytes[at] ^= u.arbitrary::<u8>()?,
            1 => {
                let end = (at + usize::from(u.int_in_range(1..=16u8)?)).min(bytes.len());
                bytes.drain(at..end);
            }
            2 => {
                let n = u.int_in_range(1..=8u8)?;
                let insert: Vec<u8> = (0..n)
                    .map(|_| u.arbitrary::<u8>())
                    .collect::<ArbResult<_>>()?;
                bytes.splice(at..at, insert);
            }
            _ => {
                // Double the line `at` falls in (a repeated header).
                let start = bytes[..at]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |p| p + 1);
                let end = bytes[at..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(bytes.len(), |p| at + p + 1);
                let line = bytes[start..end].to_vec();
                bytes.splice(start..start, line);
            }
        }
    }
    Ok(bytes)
}

/// Where a message comes from: the listener it arrives on, the flow, the source.
fn origin(u: &mut Unstructured<'_>) -> ArbResult<(ListenerId, Option<FlowId>, SocketAddr)> {
    let all: Vec<&str> = HOSTS.iter().chain(UPSTREAMS.iter()).copied().collect();
    let source = addr(u.choose(&all)?);
    let listener = *u.choose(&[ACCESS_UDP, ACCESS_UDP, ACCESS_TCP, CORE_UDP, CORE_UDP])?;
    let flow = (listener == ACCESS_TCP).then(|| FlowId(u64::from(source.port() % 3)));
    Ok((listener, flow, source))
}

fn step(world: &mut World, u: &mut Unstructured<'_>) -> ArbResult<()> {
    match u.int_in_range(0..=9u8)? {
        0..=3 => {
            let (listener, flow, source) = origin(u)?;
            let text = request(u, source)?;
            let bytes = mutate(u, text)?;
            world.deliver(listener, flow, source, &bytes);
        }
        4 | 5 => {
            if world.sent_requests.is_empty() {
                return Ok(());
            }
            let i = u.choose_index(world.sent_requests.len())?;
            let (dest, listener, flow, req) = world.sent_requests[i].clone();
            let text = response(u, &req)?;
            let bytes = mutate(u, text)?;
            // Mostly from where the request went; sometimes forged from elsewhere.
            let (listener, flow, source) = if u.ratio(3, 4)? {
                (listener, flow, dest)
            } else {
                origin(u)?
            };
            world.deliver(listener, flow, source, &bytes);
        }
        6 => {
            if world.sent_responses.is_empty() {
                return Ok(());
            }
            let i = u.choose_index(world.sent_responses.len())?;
            let answer = world.sent_responses[i].clone();
            let (listener, flow, source) = origin(u)?;
            let text = in_dialog(u, &answer, source)?;
            let bytes = mutate(u, text)?;
            world.deliver(listener, flow, source, &bytes);
        }
        7 => {
            // Up to a little over Timer C (181 s): the transaction timers, upstream timeouts,
            // probes and Retry-After (capped at 120 s here) all fire within it. A binding's
            // expiry is reached by repeating the jump.
            let jumps = [0u64, 10, 500, 4_000, 32_000, 64_000, 190_000];
            let ms = *u.choose(&jumps)?;
            world.advance(Duration::from_millis(ms));
        }
        8 => {
            let flow = FlowId(u64::from(u.int_in_range(0..=2u8)?));
            world.proxy.handle_flow_closed(world.now, ACCESS_TCP, flow);
            world.drain();
        }
        _ => {
            let state = *u.choose(&[
                SystemState::Online,
                SystemState::Draining,
                SystemState::Offline,
            ])?;
            world.proxy.set_system_state(state);
            world.drain();
            if u.ratio(1, 8)? {
                world.proxy.terminate_all(world.now, "fuzz");
                world.drain();
            }
        }
    }
    Ok(())
}

/// Whether to print every transmit's destination and start line (`ENGINE_FUZZ_TRACE=1`, when
/// reading one failing input).
fn trace_wanted() -> bool {
    static WANTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WANTED.get_or_init(|| std::env::var_os("ENGINE_FUZZ_TRACE").is_some())
}

/// Whether to print, per input, how close it came to the caps (`ENGINE_FUZZ_REPORT=1` with
/// `-runs=0` over a corpus): the invariants only mean something if the bounds are reached.
fn report_wanted() -> bool {
    static WANTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WANTED.get_or_init(|| std::env::var_os("ENGINE_FUZZ_REPORT").is_some())
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let mut world = World::new();
    let mut peak = (0u64, 0usize, 0usize);
    for _ in 0..256 {
        if u.is_empty() || step(&mut world, &mut u).is_err() {
            break;
        }
        if report_wanted() {
            let stats = world.proxy.stats();
            peak.0 = peak
                .0
                .max(stats.server_transactions + stats.client_transactions);
            peak.1 = peak.1.max(world.proxy.counts().active_sessions);
            peak.2 = peak.2.max(world.proxy.registrations().len());
        }
    }
    world.check_bounds();
    if report_wanted() {
        let stats = world.proxy.stats();
        eprintln!(
            "ENGINE_FUZZ_REPORT transactions {} sessions {} bindings {} cap_rejected {} \
             rate_limited {} unknown_dialog {} spoofed {}",
            peak.0,
            peak.1,
            peak.2,
            stats.cap_rejected,
            stats.rate_limited,
            stats.unknown_dialog,
            stats.spoofed
        );
    }
});
