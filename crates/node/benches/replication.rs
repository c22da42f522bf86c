//! Hot-standby replication between two whole nodes in one process (`harness = false`): the
//! replication stream's bytes and the twin's keep-alives moved in memory by this bench, the
//! phones and the core written by hand (as `src/tests/hot.rs` does), on a simulated clock.
//!
//! 1. Throughput: a steady stream of registrations and calls on the active; records per second
//!    from the active's proxy change to the standby's apply, bytes per record, and the time
//!    spent on each side.
//! 2. Snapshot sync: 100 000 bindings and 20 000 confirmed dialogs on the active, then a fresh
//!    standby connects; time (and bytes, records, peak memory) until it reports `Synced`, with
//!    the stream's default 256 KiB window; again with 1 ms of simulated round trip.
//! 3. CPU of an idle pair (keep-alives, heartbeats, upstream probes only) and of a pair under
//!    50 and 200 calls/s, per second of simulated time.
//!
//! A benchmark: it prints numbers (and one JSON line to `out/bench/twin-replication.json`), it
//! never asserts a timing. Environment: `REPL_BENCH_BINDINGS` (100000), `REPL_BENCH_DIALOGS`
//! (20000), `REPL_BENCH_ITERATIONS` (throughput iterations, 20000), `REPL_BENCH_IDLE_SECS`
//! (simulated idle seconds, 43200), `REPL_BENCH_BUSY_SECS` (simulated busy seconds, 60).
//!
//! Method: the bench runs on one thread; each node's CPU time is the thread's CPU time
//! (`CLOCK_THREAD_CPUTIME_ID`) read around every call into that node (a few hundred ns of the
//! clock's own cost per call included), so a busy machine does not inflate it; process CPU
//! (getrusage) also counts the bench's own work (writing and reading the phones' and the
//! core's SIP). Wall times are real time and do suffer from a busy machine.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use node::replication::{Event as ReplicationEvent, Mode};
use node::{Event, Node};
use proxy::{Input, ListenerConfig, ListenerId, Realm, Transport, UpstreamConfig};
use system_state::SystemState;

const ACCESS: &str = "10.0.0.1:5060";
const CORE_SIDE: &str = "10.1.0.1:5060";
const UPSTREAM: &str = "10.1.0.10:5060";
const GUARD: Duration = Duration::from_secs(300);
const KEY: [u8; 32] = [7; 32];

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Phone `i`'s address: distinct for every phone (one per AoR and call in the fill).
fn phone(i: u32) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::new(10, 2, (i / 50_000) as u8, 50),
        10_000 + (i % 50_000) as u16,
    ))
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------- process measurements

/// utime + stime of this process (getrusage).
fn process_cpu() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    getrusage(UsageWho::RUSAGE_SELF).map_or(Duration::ZERO, |u| {
        let d = |t: nix::sys::time::TimeVal| {
            Duration::from_secs(t.tv_sec().max(0) as u64)
                + Duration::from_micros(t.tv_usec().max(0) as u64)
        };
        d(u.user_time()) + d(u.system_time())
    })
}

/// This thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`).
fn thread_cpu() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map_or(Duration::ZERO, Duration::from)
}

/// A field of `/proc/self/status` in KiB (VmHWM, VmRSS).
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Resets VmHWM to the current RSS (Linux: `echo 5 > /proc/self/clear_refs`); false when not
/// allowed, and the peak then counts from the process's start.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

// ---------------------------------------------------------------- SIP by hand

fn message(lines: &[&str]) -> String {
    format!("{}\r\nContent-Length: 0\r\n\r\n", lines.join("\r\n"))
}

fn header_lines(text: &str, name: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
        .collect()
}

/// A response to `request` as a UAS writes it.
fn response(request: &str, status: &str, extra: &[&str]) -> String {
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

/// What a sent message is: its destination and text.
type Sent = Vec<(SocketAddr, String)>;

fn find<'a>(sent: &'a Sent, to: SocketAddr, prefix: &str) -> Option<&'a str> {
    sent.iter()
        .rev()
        .find(|(d, t)| *d == to && t.starts_with(prefix))
        .map(|(_, t)| t.as_str())
}

/// A confirmed call: what the phone needs to hang up.
struct Call {
    call_id: String,
    phone: SocketAddr,
    answered: String,
}

// ---------------------------------------------------------------- the pair

/// Time spent inside one node's calls, by kind.
#[derive(Debug, Default, Clone, Copy)]
struct Busy {
    /// `handle_input` (the SIP; on the active it includes encoding and queueing the records).
    sip: Duration,
    /// `handle_stream_*`, `poll_stream_bytes` (sealing, verifying, decoding, applying, acks).
    stream: Duration,
    /// Keep-alives, timeouts, probes, polls of transmits and events.
    other: Duration,
}

impl Busy {
    fn total(&self) -> Duration {
        self.sip + self.stream + self.other
    }

    fn since(&self, before: &Busy) -> Busy {
        Busy {
            sip: self.sip - before.sip,
            stream: self.stream - before.stream,
            other: self.other - before.other,
        }
    }
}

/// What one empty [`timed`] call adds to the measured time (ns).
static OVERHEAD_IN_NS: AtomicU64 = AtomicU64::new(0);

/// Whether [`timed`] reads the clock (off: process CPU holds no clock reads).
static TIMING: AtomicBool = AtomicBool::new(true);

/// Runs `f`, adding the thread CPU time it took to `acc`, less the clock's own cost.
fn timed<R>(acc: &mut Duration, f: impl FnOnce() -> R) -> R {
    if !TIMING.load(Ordering::Relaxed) {
        return f();
    }
    let t = thread_cpu();
    let r = f();
    let took = thread_cpu().saturating_sub(t);
    *acc += took.saturating_sub(Duration::from_nanos(OVERHEAD_IN_NS.load(Ordering::Relaxed)));
    r
}

/// Measures what [`timed`] costs around nothing (the clock is a system call).
fn calibrate() -> (Duration, Duration) {
    const N: u32 = 200_000;
    let mut inside = Duration::ZERO;
    let t = thread_cpu();
    for _ in 0..N {
        timed(&mut inside, || std::hint::black_box(()));
    }
    let call = thread_cpu().saturating_sub(t) / N;
    let inside = inside / N;
    OVERHEAD_IN_NS.store(inside.as_nanos() as u64, Ordering::Relaxed);
    (inside, call)
}

struct Side {
    node: Node,
    busy: Busy,
    synced: Option<(u64, Duration)>,
    rejected: u64,
    closed: u64,
}

struct Pair {
    sides: [Side; 2],
    now: Instant,
    stream: bool,
    /// Bytes written and not yet delivered, with their delivery time, per direction.
    wire: [VecDeque<(Instant, Vec<u8>)>; 2],
    /// One-way delay of the replication stream (half the round trip).
    one_way: Duration,
    /// Stream bytes written, per direction (A→B, B→A).
    bytes: [u64; 2],
    /// SIP messages the nodes sent that the bench did not ask for (probes answered here).
    stray: u64,
}

fn node_config(id: u8) -> proxy::Config {
    proxy::Config {
        node_name: format!("sbc-{id}"),
        branch_scope: Some("pair".into()),
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
        upstreams: vec![UpstreamConfig::from_uri("sip:10.1.0.10:5060;transport=udp", 1).unwrap()],
        limits: proxy::Limits {
            // The bench's phones are many, but its core is one: no per-source limit, and room
            // for the fill's transactions, dialogs and bindings.
            per_source_rps: 0,
            max_transactions: 2_000_000,
            max_dialogs: 200_000,
            max_bindings: 400_000,
            ..proxy::Limits::default()
        },
        ..proxy::Config::default()
    }
}

fn twin_config(id: u8) -> twin::Config {
    let mut config = twin::Config::new(
        twin::NodeId(id),
        twin::Key::new(KEY.to_vec()).unwrap(),
        vec!["192.0.2.10".parse().unwrap()],
    );
    config.second_path = false;
    config
}

impl Pair {
    /// Two hot-standby nodes, A (node 1) and B (node 2), not connected yet; A is made active.
    fn new() -> Pair {
        let now = Instant::now();
        let sides = [1u8, 2].map(|id| {
            let mut node = Node::with_twin(
                node_config(id),
                SystemState::Online,
                GUARD,
                twin::Twin::new(twin_config(id), 1, now),
                now,
            );
            node.enable_replication(Mode::Hot, id, KEY.to_vec(), 1, now);
            Side {
                node,
                busy: Busy::default(),
                synced: None,
                rejected: 0,
                closed: 0,
            }
        });
        let mut pair = Pair {
            sides,
            now,
            stream: false,
            wire: [VecDeque::new(), VecDeque::new()],
            one_way: Duration::ZERO,
            bytes: [0; 2],
            stray: 0,
        };
        // Node 1 starts first: it is active before B has a say.
        pair.advance(Duration::from_secs(3));
        assert!(pair.owns(0), "A should be active");
        pair
    }

    fn owns(&self, i: usize) -> bool {
        self.sides[i]
            .node
            .twin_status(self.now)
            .is_some_and(|s| s.owns_addresses)
    }

    fn connect(&mut self) {
        self.stream = true;
        self.wire = [VecDeque::new(), VecDeque::new()];
        let now = self.now;
        for (i, side) in self.sides.iter_mut().enumerate() {
            let node = &mut side.node;
            timed(&mut side.busy.stream, || {
                node.handle_stream_open(now, [i as u8 + 1; 16]);
            });
        }
    }

    fn disconnect(&mut self) {
        self.stream = false;
        self.wire = [VecDeque::new(), VecDeque::new()];
        let now = self.now;
        for side in &mut self.sides {
            let node = &mut side.node;
            timed(&mut side.busy.stream, || node.handle_stream_closed(now));
        }
    }

    /// Takes node `i`'s events (and notes what replication reports) and its SIP transmits,
    /// answering the upstream probes as the core; returns the other transmits.
    fn collect(&mut self, i: usize) -> Sent {
        let mut sent = Vec::new();
        let side = &mut self.sides[i];
        let node = &mut side.node;
        let (events, transmits) = timed(&mut side.busy.other, || {
            let mut events = Vec::new();
            while let Some(e) = node.poll_event() {
                events.push(e);
            }
            let mut transmits = Vec::new();
            while let Some(t) = node.poll_transmit() {
                transmits.push(t);
            }
            (events, transmits)
        });
        for e in events {
            if let Event::Replication(r) = e {
                match r {
                    ReplicationEvent::Synced { records, took } => {
                        side.synced = Some((records, took));
                    }
                    ReplicationEvent::Rejected(_) => side.rejected += 1,
                    ReplicationEvent::Closed(_) => side.closed += 1,
                    _ => {}
                }
            }
        }
        let mut probes = Vec::new();
        for t in transmits {
            let text = String::from_utf8_lossy(&t.bytes).into_owned();
            if t.destination == addr(UPSTREAM) && text.starts_with("OPTIONS") {
                probes.push(text);
            } else {
                sent.push((t.destination, text));
            }
        }
        for probe in probes {
            let ok = response(&probe, "200 OK", &[]);
            let more = self.deliver_raw(i, Realm::Core, addr(UPSTREAM), &ok);
            sent.extend(more);
        }
        sent
    }

    fn deliver_raw(&mut self, i: usize, realm: Realm, from: SocketAddr, text: &str) -> Sent {
        let now = self.now;
        let side = &mut self.sides[i];
        let node = &mut side.node;
        timed(&mut side.busy.sip, || {
            node.handle_input(
                now,
                Input {
                    listener: ListenerId(match realm {
                        Realm::Access => 0,
                        Realm::Core => 1,
                    }),
                    flow: None,
                    source: from,
                    bytes: text.as_bytes(),
                },
            );
        });
        self.collect(i)
    }

    /// A SIP message to node `i`; returns what it sent.
    fn deliver(&mut self, i: usize, realm: Realm, from: SocketAddr, text: &str) -> Sent {
        self.deliver_raw(i, realm, from, text)
    }

    /// Moves keep-alives, address actions and the stream's due bytes until nothing moves.
    fn pump(&mut self) {
        let now = self.now;
        loop {
            let mut moved = false;
            for i in 0..2 {
                let (side, other) = if i == 0 {
                    let (a, b) = self.sides.split_at_mut(1);
                    (&mut a[0], &mut b[0])
                } else {
                    let (a, b) = self.sides.split_at_mut(1);
                    (&mut b[0], &mut a[0])
                };
                let node = &mut side.node;
                let (datagrams, probe) = timed(&mut side.busy.other, || {
                    let mut datagrams = Vec::new();
                    while let Some(t) = node.poll_twin_transmit() {
                        datagrams.push(t);
                    }
                    let mut probe = false;
                    while let Some(action) = node.poll_address_action() {
                        probe |= matches!(action, twin::AddressAction::Probe(_));
                    }
                    if probe {
                        let owns_j = other
                            .node
                            .twin_status(now)
                            .is_some_and(|s| s.owns_addresses);
                        let conflicts = if owns_j {
                            vec!["192.0.2.10".parse().unwrap()]
                        } else {
                            Vec::new()
                        };
                        node.handle_probe_result(now, conflicts);
                    }
                    (datagrams, probe)
                });
                moved |= probe || !datagrams.is_empty();
                let bytes = timed(&mut side.busy.stream, || {
                    let mut out = Vec::new();
                    while let Some(b) = node.poll_stream_bytes() {
                        out.push(b);
                    }
                    out
                });
                if self.stream {
                    for b in bytes {
                        self.bytes[i] += b.len() as u64;
                        self.wire[i].push_back((now + self.one_way, b));
                    }
                }
                let peer = &mut other.node;
                if !datagrams.is_empty() {
                    timed(&mut other.busy.other, || {
                        for t in &datagrams {
                            peer.handle_twin_datagram(now, t.path, &t.payload);
                        }
                    });
                }
                while self.stream && self.wire[i].front().is_some_and(|(at, _)| *at <= now) {
                    let (_, b) = self.wire[i].pop_front().unwrap();
                    moved = true;
                    timed(&mut other.busy.stream, || peer.handle_stream_bytes(now, &b));
                }
                let stray = self.collect(i);
                self.stray += stray.len() as u64;
                moved |= !stray.is_empty();
            }
            if !moved {
                return;
            }
        }
    }

    /// The next thing due: a node's deadline or a delivery on the wire.
    fn next_due(&self) -> Option<Instant> {
        let timers = self.sides.iter().filter_map(|s| s.node.poll_timeout());
        let wire = self
            .wire
            .iter()
            .filter_map(|w| w.front().map(|(at, _)| *at));
        timers.chain(wire).min()
    }

    /// Runs the pair up to `target`, firing each node's deadlines when they come.
    fn advance_to(&mut self, target: Instant) {
        loop {
            self.pump();
            match self.next_due() {
                Some(at) if at <= target => {
                    self.now = self.now.max(at);
                    self.fire();
                }
                _ => break,
            }
        }
        self.now = self.now.max(target);
        self.fire();
        self.pump();
    }

    fn advance(&mut self, d: Duration) {
        self.advance_to(self.now + d);
    }

    /// `handle_timeout` on each node whose deadline has come.
    fn fire(&mut self) {
        let now = self.now;
        for side in &mut self.sides {
            if side.node.poll_timeout().is_some_and(|at| at <= now) {
                let node = &mut side.node;
                timed(&mut side.busy.other, || node.handle_timeout(now));
            }
        }
    }

    // ------------------------------------------------------------ phones and the core

    /// Phone `n` registers `user{n}` through the active (A); the core accepts. Returns
    /// whether the phone got its 200.
    fn register(&mut self, n: u32, cseq: u32, expires: u32) -> bool {
        let from = phone(n);
        let request = message(&[
            "REGISTER sip:example.com SIP/2.0",
            &format!("Via: SIP/2.0/UDP {from};branch=z9hG4bK-reg{n}-{cseq}"),
            "Max-Forwards: 70",
            &format!("From: <sip:user{n}@example.com>;tag=reg{n}"),
            &format!("To: <sip:user{n}@example.com>"),
            &format!("Call-ID: reg-{n}"),
            &format!("CSeq: {cseq} REGISTER"),
            &format!("Contact: <sip:user{n}@{from}>;expires={expires}"),
        ]);
        let sent = self.deliver(0, Realm::Access, from, &request);
        let Some(forwarded) = find(&sent, addr(UPSTREAM), "REGISTER") else {
            return false;
        };
        let answer = response(
            forwarded,
            "200 OK",
            &[&format!("Contact: <sip:user{n}@{from}>;expires={expires}")],
        );
        let sent = self.deliver(0, Realm::Core, addr(UPSTREAM), &answer);
        find(&sent, from, "SIP/2.0 200").is_some()
    }

    /// Phone `n` calls the core through A: INVITE, 200 OK, ACK.
    fn call(&mut self, n: u32, call_id: &str) -> Option<Call> {
        let from = phone(n);
        let invite = message(&[
            "INVITE sip:+15550001@example.com SIP/2.0",
            &format!("Via: SIP/2.0/UDP {from};branch=z9hG4bK-{call_id}"),
            "Max-Forwards: 70",
            &format!("From: <sip:user{n}@example.com>;tag=caller"),
            "To: <sip:+15550001@example.com>",
            &format!("Call-ID: {call_id}"),
            "CSeq: 1 INVITE",
            &format!("Contact: <sip:user{n}@{from}>"),
        ]);
        let sent = self.deliver(0, Realm::Access, from, &invite);
        let forwarded = find(&sent, addr(UPSTREAM), "INVITE")?.to_owned();
        let ok = response(
            &forwarded,
            "200 OK",
            &[&format!("Contact: <sip:core@{UPSTREAM}>")],
        );
        let sent = self.deliver(0, Realm::Core, addr(UPSTREAM), &ok);
        let answered = find(&sent, from, "SIP/2.0 200")?.to_owned();
        let mut ack = vec![
            format!("ACK sip:core@{UPSTREAM} SIP/2.0"),
            format!("Via: SIP/2.0/UDP {from};branch=z9hG4bK-{call_id}-ack"),
            "Max-Forwards: 70".into(),
            format!("From: <sip:user{n}@example.com>;tag=caller"),
            format!("To: {}", header_lines(&answered, "To").remove(0)),
            format!("Call-ID: {call_id}"),
            "CSeq: 1 ACK".into(),
        ];
        ack.extend(
            header_lines(&answered, "Record-Route")
                .into_iter()
                .map(|rr| format!("Route: {rr}")),
        );
        let ack: Vec<&str> = ack.iter().map(String::as_str).collect();
        self.deliver(0, Realm::Access, from, &message(&ack));
        Some(Call {
            call_id: call_id.to_owned(),
            phone: from,
            answered,
        })
    }

    /// The phone hangs up `call`: BYE along its route, the core's 200. Returns whether the
    /// phone got its 200.
    fn hang_up(&mut self, call: &Call) -> bool {
        let Call {
            call_id,
            phone: from,
            answered,
        } = call;
        let mut lines = vec![
            format!("BYE sip:core@{UPSTREAM} SIP/2.0"),
            format!("Via: SIP/2.0/UDP {from};branch=z9hG4bK-{call_id}-bye"),
            "Max-Forwards: 70".into(),
            header_lines(answered, "From")
                .first()
                .map(|f| format!("From: {f}"))
                .unwrap_or_default(),
            format!("To: {}", header_lines(answered, "To").remove(0)),
            format!("Call-ID: {call_id}"),
            "CSeq: 2 BYE".into(),
        ];
        lines.extend(
            header_lines(answered, "Record-Route")
                .into_iter()
                .map(|rr| format!("Route: {rr}")),
        );
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        let sent = self.deliver(0, Realm::Access, *from, &message(&lines));
        let Some(forwarded) = find(&sent, addr(UPSTREAM), "BYE") else {
            return false;
        };
        let ok = response(forwarded, "200 OK", &[]);
        let sent = self.deliver(0, Realm::Core, addr(UPSTREAM), &ok);
        find(&sent, *from, "SIP/2.0 200").is_some()
    }

    fn applied(&self, i: usize) -> u64 {
        self.sides[i]
            .node
            .replication_view(self.now)
            .map_or(0, |v| v.records_applied)
    }

    fn position(&self, i: usize) -> u64 {
        self.sides[i]
            .node
            .replication_view(self.now)
            .map_or(0, |v| v.position)
    }
}

// ---------------------------------------------------------------- 1. throughput

struct Throughput {
    process: Duration,
    iterations: u64,
    records: u64,
    bytes: u64,
    wall: Duration,
    active: Busy,
    standby: Busy,
    baseline_active_sip: Duration,
    failures: u64,
    rejected: u64,
}

/// The steady load: each iteration registers phone `n` (a new AoR), sets up a call and hangs
/// up the call from `HELD` iterations before; the clock moves 1 ms every 10 iterations.
fn steady_load(pair: &mut Pair, iterations: u64) -> u64 {
    const HELD: usize = 1000;
    let mut held: VecDeque<Call> = VecDeque::new();
    let mut failures = 0;
    for k in 0..iterations {
        let n = k as u32;
        if !pair.register(n, 1, 3600) {
            failures += 1;
        }
        match pair.call(n, &format!("steady-{k}")) {
            Some(c) => held.push_back(c),
            None => failures += 1,
        }
        if held.len() > HELD {
            let c = held.pop_front().unwrap();
            if !pair.hang_up(&c) {
                failures += 1;
            }
        }
        pair.pump();
        if k % 10 == 9 {
            pair.advance(Duration::from_millis(1));
        }
    }
    pair.advance(Duration::from_millis(10));
    failures
}

fn throughput(iterations: u64) -> Throughput {
    // End to end: wall and process CPU with no clock read around the nodes' calls.
    TIMING.store(false, Ordering::Relaxed);
    let mut clean = Pair::new();
    clean.connect();
    clean.advance(Duration::from_millis(100));
    let cpu0 = process_cpu();
    let t = Instant::now();
    steady_load(&mut clean, iterations);
    let wall = t.elapsed();
    let process = process_cpu().saturating_sub(cpu0);
    TIMING.store(true, Ordering::Relaxed);
    drop(clean);

    // Baseline: the same load with no stream (records numbered, nothing encoded or sent).
    let mut base = Pair::new();
    let before = base.sides[0].busy;
    steady_load(&mut base, iterations);
    let baseline_active_sip = base.sides[0].busy.since(&before).sip;
    drop(base);

    // The split: the same load again, the clock read around every call into a node.
    let mut pair = Pair::new();
    pair.connect();
    pair.advance(Duration::from_millis(100));
    let (a0, b0) = (pair.sides[0].busy, pair.sides[1].busy);
    let (applied0, bytes0) = (pair.applied(1), pair.bytes[0]);
    let failures = steady_load(&mut pair, iterations);
    Throughput {
        process,
        iterations,
        records: pair.applied(1) - applied0,
        bytes: pair.bytes[0] - bytes0,
        wall,
        active: pair.sides[0].busy.since(&a0),
        standby: pair.sides[1].busy.since(&b0),
        baseline_active_sip,
        failures,
        rejected: pair.sides[1].rejected,
    }
}

// ---------------------------------------------------------------- 2. snapshot sync

struct Fill {
    bindings: u64,
    dialogs: u64,
    failures: u64,
    setup: Duration,
}

struct SyncRun {
    rtt: Duration,
    records: u64,
    bytes_ab: u64,
    bytes_ba: u64,
    wall: Duration,
    simulated: Duration,
    active: Busy,
    standby: Busy,
    standby_counts: (usize, usize),
    rss_before_kib: u64,
    hwm_after_kib: u64,
    peak_reset: bool,
    rejected: u64,
}

fn fill(pair: &mut Pair, bindings: u32, dialogs: u32) -> Fill {
    let t = Instant::now();
    let mut failures = 0;
    for n in 0..bindings {
        if !pair.register(n, 1, 7200) {
            failures += 1;
        }
        if n % 1000 == 999 {
            pair.advance(Duration::from_millis(1));
        }
    }
    for k in 0..dialogs {
        // Calls from phones of their own (not the registered ones: a dialog per phone).
        if pair.call(bindings + k, &format!("fill-{k}")).is_none() {
            failures += 1;
        }
        if k % 1000 == 999 {
            pair.advance(Duration::from_millis(1));
        }
    }
    // Past the transactions' end (Timer J/K/D), so the snapshot meets the steady tables.
    pair.advance(Duration::from_secs(40));
    let counts = pair.sides[0].node.counts();
    Fill {
        bindings: counts.registrations as u64,
        dialogs: counts.confirmed as u64,
        failures,
        setup: t.elapsed(),
    }
}

/// A fresh standby connects to the filled active; runs until it reports `Synced`.
fn sync_once(pair: &mut Pair, rtt: Duration) -> SyncRun {
    pair.one_way = rtt / 2;
    // A fresh standby: a new node 2 whose tables are empty.
    let now = pair.now;
    let mut node = Node::with_twin(
        node_config(2),
        SystemState::Online,
        GUARD,
        twin::Twin::new(twin_config(2), 1, now),
        now,
    );
    node.enable_replication(Mode::Hot, 2, KEY.to_vec(), 1, now);
    pair.disconnect();
    pair.sides[1] = Side {
        node,
        busy: Busy::default(),
        synced: None,
        rejected: 0,
        closed: 0,
    };
    // Let the new standby hear the active (keep-alives) before the stream opens.
    pair.advance(Duration::from_millis(500));
    assert!(pair.owns(0) && !pair.owns(1));
    let rss_before_kib = status_kib("VmRSS:");
    let peak_reset = reset_peak();
    let (a0, b0, bytes0) = (pair.sides[0].busy, pair.sides[1].busy, pair.bytes);
    let sim0 = pair.now;
    let t = Instant::now();
    pair.connect();
    loop {
        pair.pump();
        if pair.sides[1].synced.is_some() || pair.sides[1].closed > 0 {
            break;
        }
        match pair.next_due() {
            Some(at) => {
                pair.now = pair.now.max(at);
                pair.fire();
            }
            None => break,
        }
    }
    let wall = t.elapsed();
    let simulated = pair.now.saturating_duration_since(sim0);
    let hwm_after_kib = status_kib("VmHWM:");
    // Let the acks of the last records reach the active.
    pair.advance(Duration::from_millis(10));
    let counts = pair.sides[1].node.counts();
    SyncRun {
        rtt,
        records: pair.sides[1].synced.map_or(0, |(r, _)| r),
        bytes_ab: pair.bytes[0] - bytes0[0],
        bytes_ba: pair.bytes[1] - bytes0[1],
        wall,
        simulated,
        active: pair.sides[0].busy.since(&a0),
        standby: pair.sides[1].busy.since(&b0),
        standby_counts: (counts.registrations, counts.confirmed),
        rss_before_kib,
        hwm_after_kib,
        peak_reset,
        rejected: pair.sides[1].rejected,
    }
}

// ---------------------------------------------------------------- 3. CPU per simulated second

struct CpuRun {
    label: String,
    calls_per_sec: u64,
    simulated: Duration,
    process_cpu: Duration,
    wall: Duration,
    active: Busy,
    standby: Busy,
    records: u64,
    bytes: u64,
    failures: u64,
}

/// A connected, synced pair run for `secs` simulated seconds at `rate` calls/s (each call
/// held `hold`), after a warm-up of `hold` so the number of calls up is steady.
fn cpu_run(rate: u64, secs: u64, hold: Duration) -> CpuRun {
    let mut pair = Pair::new();
    pair.connect();
    pair.advance(Duration::from_secs(1));
    let mut held: VecDeque<(Instant, Call)> = VecDeque::new();
    let mut failures = 0;
    let mut k = 0u64;
    let mut run = |pair: &mut Pair, for_secs: Duration, failures: &mut u64| {
        let end = pair.now + for_secs;
        if rate == 0 {
            pair.advance_to(end);
            return;
        }
        let gap = Duration::from_secs(1) / rate as u32;
        let mut next = pair.now;
        while next < end {
            pair.advance_to(next);
            while held.front().is_some_and(|(at, _)| *at <= pair.now) {
                let (_, c) = held.pop_front().unwrap();
                if !pair.hang_up(&c) {
                    *failures += 1;
                }
            }
            match pair.call((k % 1_000_000) as u32, &format!("busy-{k}")) {
                Some(c) => held.push_back((pair.now + hold, c)),
                None => *failures += 1,
            }
            k += 1;
            next += gap;
        }
        pair.advance_to(end);
    };
    if rate > 0 {
        run(&mut pair, hold, &mut failures);
    }
    // First the process's CPU with no clock read around the nodes' calls, then as long again
    // with the nodes' time measured (its own cost taken off).
    TIMING.store(false, Ordering::Relaxed);
    let cpu0 = process_cpu();
    let t = Instant::now();
    run(&mut pair, Duration::from_secs(secs), &mut failures);
    let wall = t.elapsed();
    let process = process_cpu().saturating_sub(cpu0);
    TIMING.store(true, Ordering::Relaxed);
    let (a0, b0, bytes0, pos0) = (
        pair.sides[0].busy,
        pair.sides[1].busy,
        pair.bytes,
        pair.position(0),
    );
    let sim0 = pair.now;
    run(&mut pair, Duration::from_secs(secs), &mut failures);
    CpuRun {
        label: if rate == 0 {
            "idle (keep-alives only)".into()
        } else {
            format!("{rate} calls/s, held {} s", hold.as_secs())
        },
        calls_per_sec: rate,
        simulated: pair.now.saturating_duration_since(sim0),
        process_cpu: process,
        wall,
        active: pair.sides[0].busy.since(&a0),
        standby: pair.sides[1].busy.since(&b0),
        records: pair.position(0) - pos0,
        bytes: (pair.bytes[0] + pair.bytes[1]) - (bytes0[0] + bytes0[1]),
        failures,
    }
}

// ---------------------------------------------------------------- output

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken.
    let iterations = env_u64("REPL_BENCH_ITERATIONS", 20_000);
    let bindings = env_u64("REPL_BENCH_BINDINGS", 100_000) as u32;
    let dialogs = env_u64("REPL_BENCH_DIALOGS", 20_000) as u32;
    let idle_secs = env_u64("REPL_BENCH_IDLE_SECS", 43_200);
    let busy_secs = env_u64("REPL_BENCH_BUSY_SECS", 60);
    let mut json = String::from("{\"bench\":\"twin-replication\"");

    println!(
        "hot-standby replication, two nodes in one process (release), stream bytes moved in memory"
    );
    println!(
        "method: one thread; a node's time ('active', 'standby', 'ms', 'us') = thread CPU time"
    );
    println!("        (CLOCK_THREAD_CPUTIME_ID) summed around every call into that node; 'process CPU' =");
    println!("        getrusage utime+stime, which also counts this bench writing and reading the phones'");
    println!("        and the core's SIP; 'wall' = real time (inflated when the machine is busy).");

    let (inside, call) = calibrate();
    println!(
        "        the clock costs {} ns per timed call ({} ns of it inside the measured span, taken off every",
        call.as_nanos(),
        inside.as_nanos()
    );
    println!("        node time); process CPU and wall are measured in runs with no clock reads.");
    println!();
    let _ = write!(
        json,
        ",\"clock_ns_per_call\":{},\"clock_ns_inside\":{}",
        call.as_nanos(),
        inside.as_nanos()
    );
    let parts = std::env::var("REPL_BENCH_PARTS").unwrap_or_else(|_| "123".into());
    // The sync first, in a fresh process: its memory figures then hold no heap left over from
    // the other parts.
    if parts.contains('2') {
        part_sync(&mut json, bindings, dialogs);
    }
    if parts.contains('1') {
        part_throughput(&mut json, iterations);
    }
    if parts.contains('3') {
        part_cpu(&mut json, idle_secs, busy_secs);
    }
    json.push('}');

    // The workspace root is two levels above this crate.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap_or(std::path::Path::new("."));
    let dir = root.join("out/bench");
    let path = dir.join("twin-replication.json");
    match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, format!("{json}\n"))) {
        Ok(()) => println!("\nwrote {}", path.display()),
        Err(e) => println!("\ncould not write {}: {e}", path.display()),
    }
}

fn part_throughput(json: &mut String, iterations: u64) {
    let tp = throughput(iterations);
    let active_repl = tp.active.sip.saturating_sub(tp.baseline_active_sip) + tp.active.stream;
    let standby_repl = tp.standby.stream;
    let records = tp.records.max(1) as f64;
    println!("1. replication throughput: steady load on the active ({} iterations of REGISTER (new AoR) + call set up + the call from 1000 iterations before hung up)", tp.iterations);
    println!("   records applied on the standby      {:>12}", tp.records);
    println!(
        "   stream bytes active -> standby      {:>12}  ({:.1} B/record)",
        tp.bytes,
        tp.bytes as f64 / records
    );
    println!("   end to end, SIP included            {:>12.0} records/s  (wall {:.2} s; {:.0} SIP iterations/s)", records / tp.wall.as_secs_f64(), tp.wall.as_secs_f64(), tp.iterations as f64 / tp.wall.as_secs_f64());
    println!(
        "   end to end, by process CPU          {:>12.0} records/s  (process CPU {:.2} s, phones and core included)",
        records / tp.process.as_secs_f64(),
        tp.process.as_secs_f64()
    );
    println!(
        "   active: handle_input (SIP + encode) {:>12.0} ms  (same load, no stream: {:.0} ms)",
        ms(tp.active.sip),
        ms(tp.baseline_active_sip)
    );
    println!(
        "   active: stream calls (seal, acks)   {:>12.0} ms",
        ms(tp.active.stream)
    );
    println!("   active replication share            {:>12.2} us/record  (handle_input difference + stream calls)", us(active_repl) / records);
    println!(
        "   standby: decode+validate+apply      {:>12.2} us/record  ({:.0} ms in its stream calls)",
        us(standby_repl) / records,
        ms(standby_repl)
    );
    println!("   replication alone                   {:>12.0} records/s  (records / (active share + standby))", records / (active_repl + standby_repl).as_secs_f64());
    println!(
        "   refused records {}, SIP failures {}",
        tp.rejected, tp.failures
    );
    println!();
    let _ = write!(
        *json,
        ",\"throughput\":{{\"iterations\":{},\"records\":{},\"bytes\":{},\"bytes_per_record\":{:.1},\"end_to_end_records_per_s\":{:.0},\"wall_s\":{:.3},\"process_cpu_s\":{:.3},\"active_handle_input_ms\":{:.1},\"active_handle_input_no_stream_ms\":{:.1},\"active_stream_ms\":{:.1},\"active_us_per_record\":{:.3},\"standby_us_per_record\":{:.3},\"replication_only_records_per_s\":{:.0},\"rejected\":{},\"sip_failures\":{}}}",
        tp.iterations, tp.records, tp.bytes, tp.bytes as f64 / records, records / tp.wall.as_secs_f64(), tp.wall.as_secs_f64(), tp.process.as_secs_f64(), ms(tp.active.sip), ms(tp.baseline_active_sip), ms(tp.active.stream), us(active_repl) / records, us(standby_repl) / records, records / (active_repl + standby_repl).as_secs_f64(), tp.rejected, tp.failures
    );
}

fn part_sync(json: &mut String, bindings: u32, dialogs: u32) {
    let hwm_start = status_kib("VmHWM:");
    let mut pair = Pair::new();
    let rss0 = status_kib("VmRSS:");
    let f = fill(&mut pair, bindings, dialogs);
    let rss_filled = status_kib("VmRSS:");
    println!("2. snapshot sync: the active filled through handle_input with {} bindings ({} distinct AoRs) and {} confirmed calls", f.bindings, bindings, f.dialogs);
    println!("   setup took {:.1} s wall ({} SIP failures); RSS {} MiB -> {} MiB with the filled active (and an empty standby)", f.setup.as_secs_f64(), f.failures, rss0 / 1024, rss_filled / 1024);
    let _ = write!(
        *json,
        ",\"fill\":{{\"bindings\":{},\"dialogs\":{},\"setup_s\":{:.1},\"failures\":{},\"rss_before_mib\":{},\"rss_filled_mib\":{},\"hwm_at_start_mib\":{}}},\"sync\":[",
        f.bindings, f.dialogs, f.setup.as_secs_f64(), f.failures, rss0 / 1024, rss_filled / 1024, hwm_start / 1024
    );
    println!(
        "   {:<10} {:>9} {:>10} {:>8} {:>10} {:>11} {:>11} {:>12} {:>11} {:>14}",
        "rtt",
        "records",
        "MiB A->B",
        "B/rec",
        "wall ms",
        "active ms",
        "standby ms",
        "simulated ms",
        "rec/s (CPU)",
        "peak RSS MiB"
    );
    for (n, rtt) in [Duration::ZERO, Duration::from_millis(1)]
        .into_iter()
        .enumerate()
    {
        let s = sync_once(&mut pair, rtt);
        let r = s.records.max(1) as f64;
        println!(
            "   {:<10} {:>9} {:>10.1} {:>8.1} {:>10.0} {:>11.0} {:>11.0} {:>12.1} {:>11.0} {:>14}",
            format!("{} ms", s.rtt.as_millis()),
            s.records,
            s.bytes_ab as f64 / 1048576.0,
            s.bytes_ab as f64 / r,
            ms(s.wall),
            ms(s.active.total()),
            ms(s.standby.total()),
            ms(s.simulated),
            r / (s.active.total() + s.standby.total()).as_secs_f64(),
            format!(
                "{}{}",
                s.hwm_after_kib / 1024,
                if s.peak_reset { "" } else { "*" }
            ),
        );
        println!(
            "   {:<10} active {:.2} us/record, standby {:.2} us/record; sync time ~ CPU + simulated = {:.0} ms",
            "", us(s.active.total()) / r, us(s.standby.total()) / r, ms(s.active.total() + s.standby.total() + s.simulated)
        );
        println!(
            "   {:<10} standby then holds {} bindings, {} confirmed calls; {} refused; acks B->A {} bytes; RSS before {} MiB",
            "", s.standby_counts.0, s.standby_counts.1, s.rejected, s.bytes_ba, s.rss_before_kib / 1024
        );
        let _ = write!(
            *json,
            "{}{{\"rtt_ms\":{},\"records\":{},\"bytes_a_to_b\":{},\"bytes_b_to_a\":{},\"bytes_per_record\":{:.1},\"wall_ms\":{:.1},\"active_ms\":{:.1},\"standby_ms\":{:.1},\"simulated_ms\":{:.1},\"standby_bindings\":{},\"standby_dialogs\":{},\"rejected\":{},\"rss_before_mib\":{},\"peak_rss_mib\":{},\"peak_reset\":{}}}",
            if n == 0 { "" } else { "," },
            s.rtt.as_millis(), s.records, s.bytes_ab, s.bytes_ba, s.bytes_ab as f64 / r, ms(s.wall), ms(s.active.total()), ms(s.standby.total()), ms(s.simulated), s.standby_counts.0, s.standby_counts.1, s.rejected, s.rss_before_kib / 1024, s.hwm_after_kib / 1024, s.peak_reset
        );
    }
    json.push(']');
    println!("   wall = real time from handle_stream_open to the standby's Synced event; the simulated clock stands");
    println!("   still while a node computes and moves only for latency (and timers), so 'simulated' is the latency's");
    println!("   share; the stream's window is replica's default (256 KiB, enable_replication takes Config::new).");
    println!("   peak RSS = VmHWM after a reset at the stream's open (both nodes live in this process; * = reset");
    println!("   refused, peak since start). Bytes count every frame (length prefix, postcard body, 16-byte tag).");
    println!();
}

fn part_cpu(json: &mut String, idle_secs: u64, busy_secs: u64) {
    println!("3. CPU per simulated second of a connected, synced pair (process CPU / simulated s; in-node time / simulated s)");
    println!(
        "   {:<24} {:>10} {:>13} {:>13} {:>13} {:>12} {:>10} {:>9}",
        "load",
        "sim s",
        "process us/s",
        "active us/s",
        "standby us/s",
        "records/s",
        "bytes/s",
        "wall s"
    );
    json.push_str(",\"cpu\":[");
    let runs = [(0, idle_secs), (50, busy_secs), (200, busy_secs)];
    for (n, (rate, secs)) in runs.into_iter().enumerate() {
        let c = cpu_run(rate, secs, Duration::from_secs(30));
        let sim = c.simulated.as_secs_f64().max(1e-9);
        println!(
            "   {:<24} {:>10.0} {:>13.1} {:>13.1} {:>13.1} {:>12.1} {:>10.0} {:>9.2}",
            c.label,
            sim,
            us(c.process_cpu) / sim,
            us(c.active.total()) / sim,
            us(c.standby.total()) / sim,
            c.records as f64 / sim,
            c.bytes as f64 / sim,
            c.wall.as_secs_f64(),
        );
        println!(
            "   {:<24} active: SIP {:.1} us/s, stream {:.1} us/s, keep-alives+timers {:.1} us/s; standby: stream {:.1} us/s, keep-alives+timers {:.1} us/s; SIP failures {}",
            "", us(c.active.sip) / sim, us(c.active.stream) / sim, us(c.active.other) / sim, us(c.standby.stream) / sim, us(c.standby.other) / sim, c.failures
        );
        let _ = write!(
            *json,
            "{}{{\"calls_per_s\":{},\"simulated_s\":{:.0},\"process_cpu_us_per_s\":{:.1},\"active_us_per_s\":{:.1},\"standby_us_per_s\":{:.1},\"active_sip_us_per_s\":{:.1},\"active_stream_us_per_s\":{:.1},\"active_other_us_per_s\":{:.1},\"standby_stream_us_per_s\":{:.1},\"standby_other_us_per_s\":{:.1},\"records_per_s\":{:.1},\"stream_bytes_per_s\":{:.0},\"wall_s\":{:.2},\"failures\":{}}}",
            if n == 0 { "" } else { "," },
            c.calls_per_sec, sim, us(c.process_cpu) / sim, us(c.active.total()) / sim, us(c.standby.total()) / sim, us(c.active.sip) / sim, us(c.active.stream) / sim, us(c.active.other) / sim, us(c.standby.stream) / sim, us(c.standby.other) / sim, c.records as f64 / sim, c.bytes as f64 / sim, c.wall.as_secs_f64(), c.failures
        );
    }
    json.push(']');
    println!("   us/s = microseconds of CPU per second of simulated time (1000 us/s = 0.1 % of one core);");
    println!("   process CPU is measured over 'sim s' with no clock read around the nodes' calls (it counts the");
    println!("   bench's phones, core and harness too); the nodes' split over as long again with the clock read");
    println!("   around every call (its calibrated cost taken off). Calls held 30 s after a 30 s warm-up;");
    println!("   records/s and bytes/s = records made by the active and stream bytes both ways.");
}
