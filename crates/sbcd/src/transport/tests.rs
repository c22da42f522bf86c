//! The transports against real sockets on 127.0.0.1 (one worker, no engine: the test reads the
//! engine's queue and UDP ingress and sends as the engine would).

use super::*;
use socket2::{Domain, Protocol, Socket, Type};
use std::io::{Read, Write};
use std::time::Duration;

const PATIENCE: Duration = Duration::from_secs(5);

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    port
}

struct Rig {
    shared: Arc<Shared>,
    engine: mpsc::Receiver<FromTransport>,
    serving: watch::Sender<bool>,
    addr: SocketAddr,
}

fn rig(transport: Transport) -> Rig {
    rig_with(transport, |_| {})
}

/// A rig whose limits the test adjusts.
fn rig_with(transport: Transport, adjust: impl FnOnce(&mut Limits)) -> Rig {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let specs = vec![ListenerSpec {
        id: ListenerId(0),
        transport,
        addr,
        freebind: false,
    }];
    let limits = Limits {
        max_message_bytes: 4096,
        tcp_idle_timeout: Duration::from_secs(60),
        tcp_message_timeout: Duration::from_secs(32),
        tcp_max_connections: 8,
        max_connections: 64,
        per_source_connections: 64,
        max_queued_bytes: 1 << 20,
    };
    let mut limits = limits;
    adjust(&mut limits);
    let (to_engine, engine) = mpsc::channel(64);
    let (serving, serving_rx) = watch::channel(true);
    let (shared, mut sockets) = bind_all(specs, limits, 1, to_engine, serving_rx).unwrap();
    shared.set_connect_runtime(tokio::runtime::Handle::current());
    tokio::spawn(run_worker(Arc::clone(&shared), sockets.remove(0)));
    Rig {
        shared,
        engine,
        serving,
        addr,
    }
}

async fn next(engine: &mut mpsc::Receiver<FromTransport>) -> FromTransport {
    tokio::time::timeout(PATIENCE, engine.recv())
        .await
        .expect("the engine queue stayed empty")
        .expect("the engine queue closed")
}

/// The next datagram the engine would read, as (listener, source, bytes).
async fn next_datagram(
    ingress: &mut udp::Ingress,
    shared: &Shared,
) -> (ListenerId, SocketAddr, Vec<u8>) {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let index = ingress.ready().await;
            if let Some(d) = ingress.try_recv(shared, index) {
                return (d.listener, d.source, d.bytes.to_vec());
            }
        }
    })
    .await
    .expect("no datagram arrived")
}

#[tokio::test]
async fn udp_datagrams_reach_the_engine_and_transmits_leave() {
    let rig = rig(Transport::Udp);
    let mut ingress = udp::Ingress::new(&rig.shared, rig.shared.take_udp());
    assert!(!ingress.is_empty());
    assert!(rig.shared.take_udp().is_empty(), "UDP has one reader");
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(PATIENCE)).unwrap();
    peer.send_to(b"OPTIONS sip:x SIP/2.0\r\n\r\n", rig.addr)
        .unwrap();
    let (listener, source, bytes) = next_datagram(&mut ingress, &rig.shared).await;
    assert_eq!(listener, ListenerId(0));
    assert_eq!(source, peer.local_addr().unwrap());
    assert_eq!(bytes, b"OPTIONS sip:x SIP/2.0\r\n\r\n");

    rig.shared.send(Transmit {
        listener: ListenerId(0),
        transport: Transport::Udp,
        flow: None,
        destination: source,
        bytes: b"SIP/2.0 200 OK\r\n\r\n".to_vec(),
    });
    let mut buf = [0u8; 64];
    let (n, from) = peer.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"SIP/2.0 200 OK\r\n\r\n");
    assert_eq!(from, rig.addr);

    // Over the limit: dropped and counted, never passed on cut short.
    peer.send_to(&[b'x'; 5000], rig.addr).unwrap();
    peer.send_to(b"small", rig.addr).unwrap();
    let (_, _, bytes) = next_datagram(&mut ingress, &rig.shared).await;
    assert_eq!(bytes, b"small");
    assert_eq!(
        rig.shared
            .counters
            .udp_oversize_dropped
            .load(Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn tcp_streams_are_framed_reused_and_closed_gracefully_when_offline() {
    let mut rig = rig(Transport::Tcp);
    let addr = rig.addr;
    let mut peer = tokio::task::spawn_blocking(move || {
        let s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        s
    })
    .await
    .unwrap();
    let message = b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 4\r\n\r\nbody";
    peer.write_all(&message[..20]).unwrap();
    peer.write_all(&message[20..]).unwrap();
    let FromTransport::Message(m) = next(&mut rig.engine).await else {
        panic!("expected a message");
    };
    assert_eq!(m.bytes, message);
    let flow = m.flow.expect("a TCP message has a flow");

    // The answer goes back on the same connection.
    rig.shared.send(Transmit {
        listener: ListenerId(0),
        transport: Transport::Tcp,
        flow: Some(flow),
        destination: m.source,
        bytes: b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec(),
    });
    // An RFC 5626 ping is answered with a pong on the same connection.
    peer.write_all(b"\r\n\r\n").unwrap();
    let mut peer = tokio::task::spawn_blocking(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 128];
        while !got.ends_with(b"\r\n\r\n\r\n") {
            let n = peer.read(&mut buf).unwrap();
            assert!(n > 0, "connection closed early: {got:?}");
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n\r\n");
        peer
    })
    .await
    .unwrap();

    // Offline: the connection ends with a FIN (read returns 0, no reset) and new ones are refused.
    rig.serving.send_replace(false);
    let refused = tokio::task::spawn_blocking(move || {
        let mut buf = [0u8; 16];
        assert_eq!(peer.read(&mut buf).unwrap(), 0);
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            match std::net::TcpStream::connect(addr) {
                // A connection the kernel took into the listener's backlog just before the
                // listener closed is reset, not refused: the listener is going, try again.
                Err(e)
                    if e.kind() == std::io::ErrorKind::ConnectionReset
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::yield_now();
                }
                Err(e) => return e.kind(),
                Ok(_) if std::time::Instant::now() < deadline => {
                    std::thread::yield_now();
                }
                Ok(_) => panic!("still accepting connections while offline"),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(refused, std::io::ErrorKind::ConnectionRefused);
    assert!(matches!(
        next(&mut rig.engine).await,
        FromTransport::Closed { flow: f, .. } if f == flow
    ));
    assert_eq!(rig.shared.open_connections(), 0);
}

#[tokio::test]
async fn an_unframeable_stream_is_closed() {
    let mut rig = rig(Transport::Tcp);
    let addr = rig.addr;
    let got = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        s.write_all(b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP h\r\n\r\n")
            .unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        got
    })
    .await
    .unwrap();
    // Whatever the parser chose to answer, the connection ended.
    let _ = got;
    assert!(matches!(
        next(&mut rig.engine).await,
        FromTransport::Closed { .. }
    ));
    assert_eq!(
        rig.shared
            .counters
            .tcp_framing_errors
            .load(Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn connections_past_the_limit_are_closed_at_once() {
    let rig = rig(Transport::Tcp);
    let addr = rig.addr;
    let (kept, mut extra) = tokio::task::spawn_blocking(move || {
        // The rig allows 8; they are accepted in order, so the ninth is the one refused.
        let kept: Vec<std::net::TcpStream> = (0..8)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        let extra = std::net::TcpStream::connect(addr).unwrap();
        extra.set_read_timeout(Some(PATIENCE)).unwrap();
        (kept, extra)
    })
    .await
    .unwrap();
    let n = tokio::task::spawn_blocking(move || {
        let mut buf = [0u8; 8];
        extra.read(&mut buf).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(n, 0, "the ninth connection is closed");
    assert_eq!(
        rig.shared
            .counters
            .tcp_refused_limit
            .load(Ordering::Relaxed),
        1
    );
    assert_eq!(rig.shared.open_connections(), 8);
    drop(kept);
}

/// A blocking client connection from `from` (a loopback address) to `to`.
fn connect_from(from: [u8; 4], to: SocketAddr) -> std::net::TcpStream {
    let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    sock.bind(&SocketAddr::from((from, 0)).into()).unwrap();
    sock.connect(&to.into()).unwrap();
    let stream: std::net::TcpStream = sock.into();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
}

/// Waits (without blocking the runtime) until `done` holds.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    tokio::time::timeout(PATIENCE, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

#[tokio::test]
async fn a_source_over_its_share_is_closed_with_a_fin_and_others_still_get_in() {
    let rig = rig_with(Transport::Tcp, |l| l.per_source_connections = 2);
    let addr = rig.addr;
    let (kept, third, other) = tokio::task::spawn_blocking(move || {
        let kept: Vec<_> = (0..2).map(|_| connect_from([127, 0, 0, 2], addr)).collect();
        let mut third = connect_from([127, 0, 0, 2], addr);
        // The box's close is a FIN (read gives 0), never a reset (read gives an error).
        let mut buf = [0u8; 8];
        let n = third.read(&mut buf).unwrap();
        let other = connect_from([127, 0, 0, 3], addr);
        (kept, n, other)
    })
    .await
    .unwrap();
    assert_eq!(third, 0);
    until("both sources' connections", || {
        rig.shared.open_connections() == 3
    })
    .await;
    let c = &rig.shared.counters;
    assert_eq!(c.tcp_refused_per_source.load(Ordering::Relaxed), 1);
    assert_eq!(c.tcp_refused_limit.load(Ordering::Relaxed), 0);
    drop((kept, other));
}

#[tokio::test]
async fn past_the_total_cap_the_box_opens_no_connection_and_the_flow_fails() {
    let mut rig = rig_with(Transport::Tcp, |l| l.max_connections = 1);
    let addr = rig.addr;
    let held = tokio::task::spawn_blocking(move || connect_from([127, 0, 0, 2], addr))
        .await
        .unwrap();
    until("the inbound connection", || {
        rig.shared.open_connections() == 1
    })
    .await;
    // A second inbound one is refused by the same cap.
    let refused = tokio::task::spawn_blocking(move || {
        let mut s = connect_from([127, 0, 0, 3], addr);
        let mut buf = [0u8; 8];
        s.read(&mut buf).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(refused, 0);

    let far = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    far.set_nonblocking(true).unwrap();
    let destination = far.local_addr().unwrap();
    rig.shared.send(Transmit {
        listener: ListenerId(0),
        transport: Transport::Tcp,
        flow: None,
        destination,
        bytes: b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 0\r\n\r\n".to_vec(),
    });
    let FromTransport::Closed { remote, .. } = next(&mut rig.engine).await else {
        panic!("expected the flow to fail");
    };
    assert_eq!(remote, destination);
    let c = &rig.shared.counters;
    assert_eq!(
        c.tcp_connect_refused_max_connections
            .load(Ordering::Relaxed),
        1
    );
    assert_eq!(c.tcp_refused_max_connections.load(Ordering::Relaxed), 1);
    assert_eq!(c.tcp_connected.load(Ordering::Relaxed), 0);
    assert_eq!(rig.shared.queued_bytes(), 0);
    assert!(
        matches!(far.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "nothing connected to the destination"
    );
    drop(held);
}

#[tokio::test]
async fn a_peer_that_does_not_read_holds_at_most_the_queued_byte_bound() {
    const BOUND: usize = 100_000;
    const MESSAGE: usize = 30_000;
    let mut rig = rig_with(Transport::Tcp, |l| l.max_queued_bytes = BOUND);
    let addr = rig.addr;
    let mut peer = tokio::task::spawn_blocking(move || {
        let mut s = connect_from([127, 0, 0, 2], addr);
        s.write_all(b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        s
    })
    .await
    .unwrap();
    let FromTransport::Message(m) = next(&mut rig.engine).await else {
        panic!("expected a message");
    };
    // The connection's task cannot run between these sends (one thread): whatever does not
    // fit the bound at once is dropped.
    for _ in 0..50 {
        rig.shared.send(Transmit {
            listener: ListenerId(0),
            transport: Transport::Tcp,
            flow: m.flow,
            destination: m.source,
            bytes: vec![b'x'; MESSAGE],
        });
    }
    let fitted = BOUND / MESSAGE;
    assert_eq!(rig.shared.queued_bytes(), fitted * MESSAGE);
    let c = &rig.shared.counters;
    assert_eq!(
        c.tcp_send_dropped_queued_bytes.load(Ordering::Relaxed),
        (50 - fitted) as u64
    );
    // What was queued is written, and its bytes are given back.
    let got = tokio::task::spawn_blocking(move || {
        let mut got = vec![0u8; fitted * MESSAGE];
        peer.read_exact(&mut got).unwrap();
        got
    })
    .await
    .unwrap();
    assert!(got.iter().all(|&b| b == b'x'));
    until("the queue to empty", || rig.shared.queued_bytes() == 0).await;
}

#[tokio::test]
async fn a_peer_that_stops_reading_is_closed_after_the_message_timeout() {
    let mut rig = rig_with(Transport::Tcp, |l| {
        l.tcp_message_timeout = Duration::from_millis(300);
        l.max_queued_bytes = 256 * 1024;
    });
    let addr = rig.addr;
    let peer = tokio::task::spawn_blocking(move || {
        // A small receive buffer, never read: the box's writes stall once it is full.
        let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        sock.connect(&addr.into()).unwrap();
        let mut s: std::net::TcpStream = sock.into();
        s.write_all(b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        s
    })
    .await
    .unwrap();
    let FromTransport::Message(m) = next(&mut rig.engine).await else {
        panic!("expected a message");
    };
    // Keep sending until the queues are full: the writer is stuck on the peer.
    let stalled = tokio::time::timeout(PATIENCE, async {
        let c = &rig.shared.counters;
        while c.tcp_send_dropped_queued_bytes.load(Ordering::Relaxed) == 0 {
            rig.shared.send(Transmit {
                listener: ListenerId(0),
                transport: Transport::Tcp,
                flow: m.flow,
                destination: m.source,
                bytes: vec![b'x'; 60_000],
            });
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(stalled.is_ok(), "the peer's buffers never filled");
    assert!(matches!(
        next(&mut rig.engine).await,
        FromTransport::Closed { flow, .. } if Some(flow) == m.flow
    ));
    let c = &rig.shared.counters;
    assert_eq!(c.tcp_closed_slow_write.load(Ordering::Relaxed), 1);
    // Whatever was queued for it was given back.
    assert_eq!(rig.shared.queued_bytes(), 0);
    drop(peer);
}

/// A listener on a twin service address binds before the node owns the address (SPEC §9);
/// any other listener on an address the host does not have is refused at start, as before.
#[test]
fn only_service_address_listeners_bind_an_address_the_host_does_not_have() {
    // TEST-NET-1: on no interface of a test machine.
    let addr: SocketAddr = "192.0.2.10:5060".parse().unwrap();
    for transport in [Transport::Udp, Transport::Tcp] {
        let spec = |freebind| ListenerSpec {
            id: ListenerId(0),
            transport,
            addr,
            freebind,
        };
        let bound = match transport {
            Transport::Udp => bind_udp(&spec(true)).map(drop),
            _ => bind_tcp(&spec(true)).map(drop),
        };
        assert!(bound.is_ok(), "{transport:?} with freebind: {bound:?}");
        let refused = match transport {
            Transport::Udp => bind_udp(&spec(false)).map(drop),
            _ => bind_tcp(&spec(false)).map(drop),
        };
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.to_string().contains("192.0.2.10")),
            "{transport:?} without freebind: {refused:?}"
        );
    }
}
