//! What the proxy benches share: the box's config, phones and a core written by hand (as
//! `src/tests/harness.rs` does), and a driver that runs one INVITE-180-200-ACK-BYE-200 call
//! through a pure core on a simulated clock: the bare [`proxy::Proxy`], or anything that
//! wraps one and shows the same handle/poll surface ([`Core`]; `node`'s bench includes this
//! file and drives `node::Node`, the composition the daemon runs).
//!
//! The bench reads what the proxy transmits with its own small line code (not `proxy::msg`,
//! which is being replaced): the answers copy the proxy's Via, branch, Record-Route and tags.
//! Only the public API of `proxy` is used, so the bench keeps compiling while the core changes.
//!
//! Every call into the proxy goes through [`measured_step`] (never inlined): the callgrind
//! runs of `cargo xtask bench core` collect only inside it (`--toggle-collect`), and the
//! counting allocator of `core_call.rs` counts only while [`COUNTING`] is set, so neither
//! figure includes the bench writing and reading SIP.

#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use proxy::{Input, ListenerConfig, ListenerId, Proxy, Realm, Transmit, Transport, UpstreamConfig};

pub const ACCESS: &str = "10.0.0.1:5060";
pub const CORE_SIDE: &str = "10.1.0.1:5060";
pub const UPSTREAM: &str = "10.1.0.10:5060";
const ACCESS_LISTENER: ListenerId = ListenerId(0);
const CORE_LISTENER: ListenerId = ListenerId(1);

/// Set while the proxy runs (inside [`measured_step`]): what a counting allocator counts.
pub static COUNTING: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// When set, [`measured_step`] keeps this thread's change records (bindings and sessions)
    /// in [`PEER_RECORDS`] (the shards bench hands them to the other shards, as the sharded
    /// daemon does) and adds up its own time in [`STEP_TIME`].
    pub static SHARD_MODE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    pub static PEER_RECORDS: std::cell::RefCell<Vec<proxy::ChangeRecord>> =
        const { std::cell::RefCell::new(Vec::new()) };
    /// Nanoseconds spent in [`measured_step`] and messages handed to it, on this thread.
    pub static STEP_TIME: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
}

pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("a socket address")
}

/// Phone `i`'s address: distinct for every `i` below 600 000.
pub fn phone(i: u32) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::new(10, 2, (i / 50_000) as u8, 50),
        10_000 + (i % 50_000) as u16,
    ))
}

pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The box of the proxy tests: one access and one core listener, one upstream. No per-source
/// limit (the core is one source for everyone) and room for the scale fill.
pub fn config() -> proxy::Config {
    proxy::Config {
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
                addr: addr(CORE_SIDE),
            },
        ],
        upstreams: vec![
            UpstreamConfig::from_uri("sip:10.1.0.10:5060;transport=udp", 1).expect("upstream"),
        ],
        limits: proxy::Limits {
            per_source_rps: 0,
            max_transactions: 2_000_000,
            max_dialogs: 200_000,
            max_bindings: 400_000,
            ..proxy::Limits::default()
        },
        ..proxy::Config::default()
    }
}

// ---------------------------------------------------------------- SIP by hand

pub fn message(lines: &[&str]) -> String {
    format!("{}\r\nContent-Length: 0\r\n\r\n", lines.join("\r\n"))
}

pub fn header_lines(text: &str, name: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
        .collect()
}

/// A response to `request` as a UAS writes it: Via, From, To (tagged), Call-ID, CSeq and
/// Record-Route copied from what the proxy sent.
pub fn response(request: &str, status: &str, extra: &[&str]) -> String {
    let mut lines = vec![format!("SIP/2.0 {status}")];
    for name in ["Via", "From", "To", "Call-ID", "CSeq", "Record-Route"] {
        for value in header_lines(request, name) {
            let value = if name == "To" && !value.contains("tag=") {
                format!("{value};tag=uas")
            } else {
                value
            };
            lines.push(format!("{name}: {value}"));
        }
    }
    lines.extend(extra.iter().map(|s| (*s).to_owned()));
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    message(&lines)
}

/// The URI inside `<...>` of a name-addr (or the value up to its parameters).
fn uri_of(value: &str) -> String {
    match (value.find('<'), value.find('>')) {
        (Some(a), Some(b)) if a < b => value[a + 1..b].to_owned(),
        _ => value.split(';').next().unwrap_or(value).trim().to_owned(),
    }
}

/// What the proxy sent after one input: destination and text.
pub type Sent = Vec<(SocketAddr, String)>;

pub fn find<'a>(sent: &'a Sent, to: SocketAddr, prefix: &str) -> Option<&'a str> {
    sent.iter()
        .rev()
        .find(|(d, t)| *d == to && t.starts_with(prefix))
        .map(|(_, t)| t.as_str())
}

// ---------------------------------------------------------------- the core, measured

/// What the driver feeds and drains: the proxy's handle/poll surface, so the same call can be
/// measured through the bare proxy and through what the daemon wraps around it.
pub trait Core {
    fn handle_input(&mut self, now: Instant, input: Input<'_>);
    fn handle_timeout(&mut self, now: Instant);
    fn poll_timeout(&self) -> Option<Instant>;
    fn poll_transmit(&mut self) -> Option<Transmit>;
    fn recycle(&mut self, bytes: Vec<u8>);
    /// Takes every event out, as a shell does after every input.
    fn drain_events(&mut self);
}

impl Core for Proxy {
    fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        Proxy::handle_input(self, now, input);
    }
    fn handle_timeout(&mut self, now: Instant) {
        Proxy::handle_timeout(self, now);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Proxy::poll_timeout(self)
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        Proxy::poll_transmit(self)
    }
    fn recycle(&mut self, bytes: Vec<u8>) {
        Proxy::recycle(self, bytes);
    }
    fn drain_events(&mut self) {
        while let Some(e) = self.poll_event() {
            if let proxy::Event::Change(record) = e {
                if SHARD_MODE.get() {
                    PEER_RECORDS.with_borrow_mut(|r| r.push(record));
                }
            }
        }
    }
}

/// One step of the engine: the buffers of the transmits sent since the last step given back
/// (`Proxy::recycle`, as a shell does once it has sent them), a message in (or, with `None`,
/// the deadlines due at `now`), then every transmit and event taken out. Everything the engine
/// thread does per message; the only code the callgrind runs collect and the counting
/// allocator counts.
///
/// The transmits are put into `out` (empty, the bench's own list, kept from step to step):
/// a shell sends each as it takes it out and keeps no list, so the bench's list is not
/// counted as the proxy's.
#[inline(never)]
pub fn measured_step<C: Core>(
    proxy: &mut C,
    now: Instant,
    input: Option<Input<'_>>,
    sent: &mut Vec<Vec<u8>>,
    mut out: Vec<Transmit>,
) -> Vec<Transmit> {
    COUNTING.store(true, Ordering::Relaxed);
    for bytes in sent.drain(..) {
        proxy.recycle(bytes);
    }
    match input {
        Some(input) => proxy.handle_input(now, input),
        None => {
            while proxy.poll_timeout().is_some_and(|at| at <= now) {
                proxy.handle_timeout(now);
            }
        }
    }
    while let Some(t) = proxy.poll_transmit() {
        out.push(t);
    }
    proxy.drain_events();
    COUNTING.store(false, Ordering::Relaxed);
    out
}

/// [`measured_step`], its time added to [`STEP_TIME`] (in shard mode).
fn timed_step<C: Core>(
    proxy: &mut C,
    now: Instant,
    input: Option<Input<'_>>,
    sent: &mut Vec<Vec<u8>>,
    out: Vec<Transmit>,
) -> Vec<Transmit> {
    if !SHARD_MODE.get() {
        return measured_step(proxy, now, input, sent, out);
    }
    let message = u64::from(input.is_some());
    let t = Instant::now();
    let out = measured_step(proxy, now, input, sent, out);
    let ns = t.elapsed().as_nanos() as u64;
    let (time, n) = STEP_TIME.get();
    STEP_TIME.set((time + ns, n + message));
    out
}

/// The six messages of a call, in order (the index into [`Driver::latencies`]).
pub const STEPS: [&str; 6] = [
    "INVITE (phone)",
    "180 (core)",
    "200 (core)",
    "ACK (phone)",
    "BYE (phone)",
    "200 BYE (core)",
];

/// A core (the bare proxy by default) on a simulated clock, with the phones and the core
/// upstream written by hand.
pub struct Driver<C: Core = Proxy> {
    pub proxy: C,
    pub now: Instant,
    /// When set, the nanoseconds of every [`measured_step`] of a call message, per step.
    pub latencies: Option<[Vec<u64>; 6]>,
    /// OPTIONS probes the core answered.
    pub probes: u64,
    /// The buffers of what the proxy sent, read: given back at the next step.
    sent: Vec<Vec<u8>>,
    /// The list [`measured_step`] puts the transmits of a step into, empty between steps.
    transmits: Vec<Transmit>,
}

impl Driver<Proxy> {
    /// A proxy as a box without a twin runs it (`node::Node::new` turns the change records
    /// off; a hot twin or shards turn them on, and the shards bench makes its proxies shards).
    pub fn new() -> Driver {
        let now = Instant::now();
        let mut proxy = Proxy::new(config(), now);
        proxy.set_replication(false);
        Driver::with_core(proxy, now)
    }
}

impl<C: Core> Driver<C> {
    /// Drives `core`, built at `now` (the simulated clock starts there).
    pub fn with_core(core: C, now: Instant) -> Driver<C> {
        let mut d = Driver {
            proxy: core,
            now,
            latencies: None,
            probes: 0,
            sent: Vec::new(),
            transmits: Vec::new(),
        };
        d.timers();
        d
    }

    fn step(
        &mut self,
        listener: ListenerId,
        from: SocketAddr,
        text: &str,
        kind: Option<usize>,
    ) -> Sent {
        let input = Input {
            listener,
            flow: None,
            source: from,
            bytes: text.as_bytes(),
        };
        let t = Instant::now();
        let out = std::mem::take(&mut self.transmits);
        let out = timed_step(&mut self.proxy, self.now, Some(input), &mut self.sent, out);
        let ns = t.elapsed().as_nanos() as u64;
        if let (Some(lat), Some(k)) = (self.latencies.as_mut(), kind) {
            lat[k].push(ns);
        }
        self.collect(out)
    }

    /// Reads the transmits; the core answers the upstream probes (OPTIONS) at once.
    fn collect(&mut self, mut out: Vec<Transmit>) -> Sent {
        let sent: Sent = out
            .drain(..)
            .map(|t| {
                let text = String::from_utf8_lossy(&t.bytes).into_owned();
                self.sent.push(t.bytes);
                (t.destination, text)
            })
            .collect();
        self.transmits = out;
        let upstream = addr(UPSTREAM);
        for (d, text) in &sent {
            if *d == upstream && text.starts_with("OPTIONS ") {
                self.probes += 1;
                let ok = response(text, "200 OK", &[]);
                self.step(CORE_LISTENER, upstream, &ok, None);
            }
        }
        sent
    }

    /// Fires the deadlines due now.
    pub fn timers(&mut self) {
        let out = std::mem::take(&mut self.transmits);
        let out = timed_step(&mut self.proxy, self.now, None, &mut self.sent, out);
        self.collect(out);
    }

    /// Moves the clock by `d` and fires what fell due (at the end: the bench's jumps are short
    /// against the timers, or taken in steps).
    pub fn advance(&mut self, d: Duration) {
        let target = self.now + d;
        while let Some(at) = self.proxy.poll_timeout().filter(|&at| at < target) {
            self.now = self.now.max(at);
            self.timers();
        }
        self.now = target;
        self.timers();
    }

    /// Phone `n` registers `user{n}`; the core accepts. Whether the phone got its 200.
    pub fn register(&mut self, n: u32, cseq: u32, expires: u32) -> bool {
        let from = phone(n);
        let request = message(&[
            "REGISTER sip:example.com SIP/2.0",
            &format!("Via: SIP/2.0/UDP {from};branch=z9hG4bK-reg{n}-{cseq};rport"),
            "Max-Forwards: 70",
            &format!("From: <sip:user{n}@example.com>;tag=reg{n}"),
            &format!("To: <sip:user{n}@example.com>"),
            &format!("Call-ID: reg-{n}"),
            &format!("CSeq: {cseq} REGISTER"),
            &format!("Contact: <sip:user{n}@{from}>;expires={expires}"),
        ]);
        let sent = self.step(ACCESS_LISTENER, from, &request, None);
        let Some(forwarded) = find(&sent, addr(UPSTREAM), "REGISTER") else {
            return false;
        };
        let answer = response(
            forwarded,
            "200 OK",
            &[&format!("Contact: <sip:user{n}@{from}>;expires={expires}")],
        );
        let sent = self.step(CORE_LISTENER, addr(UPSTREAM), &answer, None);
        find(&sent, from, "SIP/2.0 200").is_some()
    }

    /// Phone `n` calls the core: INVITE, the core's 180 and 200, the phone's ACK. Returns what
    /// the phone needs to hang up, or `None` when a step did not come through.
    pub fn call(&mut self, n: u32, call_id: &str) -> Option<Call> {
        let from = phone(n);
        let upstream = addr(UPSTREAM);
        let invite = message(&[
            "INVITE sip:+15550001@example.com SIP/2.0",
            &format!("Via: SIP/2.0/UDP {from};branch=z9hG4bK-{call_id};rport"),
            "Max-Forwards: 70",
            &format!("From: <sip:user{n}@example.com>;tag=caller{n}"),
            "To: <sip:+15550001@example.com>",
            &format!("Call-ID: {call_id}"),
            "CSeq: 1 INVITE",
            &format!("Contact: <sip:user{n}@{from}>"),
        ]);
        let sent = self.step(ACCESS_LISTENER, from, &invite, Some(0));
        let forwarded = find(&sent, upstream, "INVITE")?.to_owned();
        let contact = format!("Contact: <sip:core@{UPSTREAM}>");
        let ringing = response(&forwarded, "180 Ringing", &[&contact]);
        let sent = self.step(CORE_LISTENER, upstream, &ringing, Some(1));
        find(&sent, from, "SIP/2.0 180")?;
        let ok = response(&forwarded, "200 OK", &[&contact]);
        let sent = self.step(CORE_LISTENER, upstream, &ok, Some(2));
        let answered = find(&sent, from, "SIP/2.0 200")?.to_owned();
        let call = Call {
            call_id: call_id.to_owned(),
            phone: from,
            target: header_lines(&answered, "Contact")
                .first()
                .map(|c| uri_of(c))
                .unwrap_or_else(|| format!("sip:core@{UPSTREAM}")),
            from: header_lines(&answered, "From").first()?.clone(),
            to: header_lines(&answered, "To").first()?.clone(),
            routes: header_lines(&answered, "Record-Route"),
        };
        let sent = self.step(ACCESS_LISTENER, from, &call.request("ACK", 1), Some(3));
        find(&sent, upstream, "ACK")?;
        Some(call)
    }

    /// The phone hangs up: BYE along the route, the core's 200. Whether the phone got its 200.
    pub fn hang_up(&mut self, call: &Call) -> bool {
        let upstream = addr(UPSTREAM);
        let sent = self.step(
            ACCESS_LISTENER,
            call.phone,
            &call.request("BYE", 2),
            Some(4),
        );
        let Some(forwarded) = find(&sent, upstream, "BYE") else {
            return false;
        };
        let ok = response(forwarded, "200 OK", &[]);
        let sent = self.step(CORE_LISTENER, upstream, &ok, Some(5));
        find(&sent, call.phone, "SIP/2.0 200").is_some()
    }

    /// One whole call: INVITE-180-200-ACK-BYE-200. Whether every step came through.
    pub fn full_call(&mut self, n: u32, call_id: &str) -> bool {
        match self.call(n, call_id) {
            Some(call) => self.hang_up(&call),
            None => false,
        }
    }
}

impl Default for Driver<Proxy> {
    fn default() -> Self {
        Driver::new()
    }
}

/// A confirmed call, as the phone knows it.
pub struct Call {
    pub call_id: String,
    pub phone: SocketAddr,
    /// The remote target (the Contact of the 200 as the phone got it).
    pub target: String,
    pub from: String,
    pub to: String,
    /// The Record-Route of the 200 (one entry per line; the route set of the phone).
    pub routes: Vec<String>,
}

impl Call {
    /// An in-dialog request from the phone.
    fn request(&self, method: &str, cseq: u32) -> String {
        let mut lines = vec![
            format!("{method} {} SIP/2.0", self.target),
            format!(
                "Via: SIP/2.0/UDP {};branch=z9hG4bK-{}-{method};rport",
                self.phone, self.call_id
            ),
            "Max-Forwards: 70".into(),
            format!("From: {}", self.from),
            format!("To: {}", self.to),
            format!("Call-ID: {}", self.call_id),
            format!("CSeq: {cseq} {method}"),
        ];
        // The UAC's route set is the Record-Route of the 2xx, reversed.
        lines.extend(self.routes.iter().rev().map(|rr| format!("Route: {rr}")));
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        message(&lines)
    }
}

/// Percentile `p` (0..=100) of sorted values.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
