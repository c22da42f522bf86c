//! The kernel-facing half of netif on the real kernel, in a lab of network namespaces
//! (common/mod.rs): addresses through netlink, ARP probe and announce seen by another host's
//! kernel, and a freebind socket that starts receiving once its address arrives.
#![allow(clippy::unwrap_used, clippy::expect_used)] // setup failures fail the test

mod common;

use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::*;
use netif::{
    announce, bind_tcp_listener_freebind, bind_udp_freebind, probe, AddressError, Addresses,
    ArpError, ArpSocket, MacAddr, ProbeOutcome, ProbeTiming,
};

fn mac(text: &str) -> MacAddr {
    let mut bytes = [0u8; 6];
    for (b, part) in bytes.iter_mut().zip(text.split(':')) {
        *b = u8::from_str_radix(part, 16).unwrap();
    }
    MacAddr(bytes)
}

#[test]
fn addresses_are_added_and_removed_idempotently() {
    let Some(lab) = Lab::new() else { return };
    let svc = IpAddr::V4(SERVICE);
    in_ns(&lab.x, move || async move {
        let addrs = Addresses::open().unwrap();
        assert!(!addrs.has_address(DEV, svc).await.unwrap());
        addrs.add_address(DEV, svc, 24).await.unwrap();
        addrs
            .add_address(DEV, svc, 24)
            .await
            .expect("adding a present address is OK");
        assert!(addrs.has_address(DEV, svc).await.unwrap());
    });
    let show = ["-n", &lab.x, "-4", "addr", "show", "dev", DEV];
    assert!(ip(&show).contains("inet 10.77.0.10/24"), "{}", ip(&show));

    in_ns(&lab.x, move || async move {
        let addrs = Addresses::open().unwrap();
        addrs.remove_address(DEV, svc).await.unwrap();
        addrs
            .remove_address(DEV, svc)
            .await
            .expect("removing an absent address is OK");
        assert!(!addrs.has_address(DEV, svc).await.unwrap());
        // The node's own address is untouched.
        assert!(addrs.has_address(DEV, IpAddr::V4(X_IP)).await.unwrap());
    });
    let listed = ip(&show);
    assert!(!listed.contains("10.77.0.10"), "{listed}");
    assert!(listed.contains("10.77.0.2/24"), "{listed}");
}

#[test]
fn ipv6_address_is_added_with_kernel_dad() {
    let Some(lab) = Lab::new() else { return };
    let svc6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10));
    in_ns(&lab.x, move || async move {
        let addrs = Addresses::open().unwrap();
        addrs.add_address(DEV, svc6, 64).await.unwrap();
        assert!(addrs.has_address(DEV, svc6).await.unwrap());
    });
    // Right after the add the kernel is still doing DAD: the address is there, "tentative".
    let listed = ip(&["-n", &lab.x, "-6", "addr", "show", "dev", DEV]);
    assert!(listed.contains("2001:db8::10/64"), "{listed}");
    in_ns(&lab.x, move || async move {
        let addrs = Addresses::open().unwrap();
        addrs.remove_address(DEV, svc6).await.unwrap();
        assert!(!addrs.has_address(DEV, svc6).await.unwrap());
    });
}

#[test]
fn unknown_interface_is_an_error_naming_it() {
    let Some(lab) = Lab::new() else { return };
    let err = in_ns(&lab.x, || async {
        let addrs = Addresses::open().unwrap();
        addrs
            .add_address("nope0", IpAddr::V4(SERVICE), 24)
            .await
            .unwrap_err()
    });
    assert!(matches!(err, AddressError::NoInterface { .. }), "{err}");
    assert!(err.to_string().contains("nope0"), "{err}");
    let err = in_ns(&lab.x, || async {
        probe("nope0", SERVICE, ProbeTiming::default())
            .await
            .unwrap_err()
    });
    assert!(matches!(err, ArpError::NoInterface { .. }), "{err}");
    assert!(err.to_string().contains("nope0"), "{err}");
}

#[test]
fn probe_on_a_down_interface_fails_instead_of_finding_it_clear() {
    let Some(lab) = Lab::new() else { return };
    ip(&["-n", &lab.x, "link", "set", DEV, "down"]);
    let err = in_ns(&lab.x, || async {
        probe(DEV, SERVICE, ProbeTiming::default())
            .await
            .unwrap_err()
    });
    assert!(matches!(err, ArpError::Send { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("eth0") && text.contains("10.77.0.10"),
        "{text}"
    );
}

#[test]
fn probe_is_clear_when_nobody_holds_the_address() {
    let Some(lab) = Lab::new() else { return };
    let timing = ProbeTiming::default();
    let (outcome, took) = in_ns(&lab.x, move || async move {
        let mut socket = ArpSocket::open(DEV).unwrap();
        assert_eq!(socket.mac(), mac(X_MAC));
        let start = Instant::now();
        let outcome = socket.probe(SERVICE, timing).await.unwrap();
        (outcome, start.elapsed())
    });
    eprintln!(
        "probe, clear: {took:?} on an open socket ({} probes {:?} apart, {:?} wait: nominal {:?})",
        timing.probes,
        timing.interval,
        timing.wait,
        timing.total()
    );
    assert_eq!(outcome, ProbeOutcome::Clear);
    assert!(
        took >= timing.total(),
        "a clear probe waits its full time: {took:?}"
    );
    // Nobody learned anything from the probe: sender IP 0.0.0.0 creates no neighbour entry.
    let neigh = ip(&["-n", &lab.peer, "neigh", "show", "dev", DEV]);
    assert!(!neigh.contains(X_MAC), "{neigh}");
}

#[test]
fn probe_ignores_what_arrived_before_it_started() {
    let Some(lab) = Lab::new() else { return };
    let (opened, announced) = (Arc::new(Barrier::new(2)), Arc::new(Barrier::new(2)));
    let (o, a) = (opened.clone(), announced.clone());
    let x = spawn_in_ns(&lab.x, move || async move {
        let mut socket = ArpSocket::open(DEV).unwrap();
        o.wait();
        a.wait();
        socket.probe(SERVICE, ProbeTiming::default()).await.unwrap()
    });
    opened.wait();
    // y announces the address and lets it go again before x probes: old news for x's socket.
    in_ns(&lab.y, || async {
        announce(DEV, SERVICE, 1, Duration::ZERO).await.unwrap();
    });
    std::thread::sleep(Duration::from_millis(20));
    announced.wait();
    assert_eq!(join(x), ProbeOutcome::Clear);
}

#[test]
fn probe_finds_the_host_that_holds_the_address() {
    let Some(lab) = Lab::new() else { return };
    ip(&["-n", &lab.peer, "addr", "add", "10.77.0.10/24", "dev", DEV]);
    let (outcome, took) = in_ns(&lab.x, || async {
        let start = Instant::now();
        let outcome = probe(DEV, SERVICE, ProbeTiming::default()).await.unwrap();
        (outcome, start.elapsed())
    });
    eprintln!("probe, conflict: answered after {took:?}");
    assert_eq!(outcome, ProbeOutcome::Conflict { mac: mac(PEER_MAC) });
}

#[test]
fn two_hosts_probing_at_once_never_both_find_it_clear() {
    let Some(lab) = Lab::new() else { return };
    let start = Arc::new(Barrier::new(2));
    let probe_after_barrier = |ns: &str| {
        let start = start.clone();
        spawn_in_ns(ns, move || async move {
            start.wait();
            probe(DEV, SERVICE, ProbeTiming::default()).await.unwrap()
        })
    };
    let (x, y) = (probe_after_barrier(&lab.x), probe_after_barrier(&lab.y));
    let (x, y) = (join(x), join(y));
    eprintln!("simultaneous probes: x {x:?}, y {y:?}");
    // Whoever hears the other's probe backs off; the other may then find it clear (it stops
    // hearing probes once the first one backed off), but never both.
    assert!(!(x == ProbeOutcome::Clear && y == ProbeOutcome::Clear));
    for (outcome, other) in [(x, Y_MAC), (y, X_MAC)] {
        if let ProbeOutcome::Conflict { mac: seen } = outcome {
            assert_eq!(seen, mac(other));
        }
    }
}

#[test]
fn announce_moves_the_peers_arp_entry_to_the_new_holder() {
    let Some(lab) = Lab::new() else { return };
    // x holds the service address and the peer talks to it: the peer's cache maps it to x.
    ip(&["-n", &lab.x, "addr", "add", "10.77.0.10/24", "dev", DEV]);
    in_ns(&lab.peer, || async {
        let socket = UdpSocket::bind("10.77.0.1:0").unwrap();
        socket.send_to(b"hello x", (SERVICE, 9)).unwrap();
    });
    let neigh = ["-n", &lab.peer, "neigh", "show", "10.77.0.10", "dev", DEV];
    let before = ip_until(&neigh, Duration::from_secs(2), |out| out.contains(X_MAC));
    assert!(
        before.contains(X_MAC),
        "peer never resolved the address to x: {before}"
    );

    // x dies; y takes the address over and announces it once.
    ip(&["-n", &lab.x, "link", "set", DEV, "down"]);
    in_ns(&lab.y, || async {
        let addrs = Addresses::open().unwrap();
        addrs
            .add_address(DEV, IpAddr::V4(SERVICE), 24)
            .await
            .unwrap();
    });
    // Adding an IPv4 address tells the neighbours nothing: only the announcement can move it.
    let unchanged = ip(&neigh);
    assert!(unchanged.contains(X_MAC), "{unchanged}");
    let (opened, took) = in_ns(&lab.y, || async {
        let start = Instant::now();
        let socket = ArpSocket::open(DEV).unwrap();
        let opened = start.elapsed();
        socket.announce(SERVICE, 1, Duration::ZERO).await.unwrap();
        (opened, start.elapsed() - opened)
    });
    eprintln!("announce (1 gratuitous ARP): {took:?} on an open socket, opening it {opened:?}");
    let after = ip_until(&neigh, Duration::from_millis(500), |out| {
        out.contains(Y_MAC)
    });
    assert!(
        after.contains(Y_MAC),
        "peer still maps the address to x after the announce: {after}"
    );
}

#[test]
fn freebind_socket_binds_before_the_address_exists_and_receives_once_it_does() {
    let Some(lab) = Lab::new() else { return };
    let udp_addr = SocketAddr::from((SERVICE, 5060));
    let tcp_addr = SocketAddr::from((SERVICE, 5061));
    // Sockets belong to the namespace they were opened in, so y's can be used from here.
    let (udp, tcp) = in_ns(&lab.y, move || async move {
        let udp = bind_udp_freebind(udp_addr).expect("freebind UDP bind to an absent address");
        let tcp = bind_tcp_listener_freebind(tcp_addr, 16).expect("freebind TCP listen");
        let addrs = Addresses::open().unwrap();
        assert!(!addrs.has_address(DEV, udp_addr.ip()).await.unwrap());
        addrs.add_address(DEV, udp_addr.ip(), 24).await.unwrap();
        (udp, tcp)
    });
    in_ns(&lab.peer, move || async move {
        let socket = UdpSocket::bind("10.77.0.1:0").unwrap();
        socket.send_to(b"OPTIONS", udp_addr).unwrap();
        TcpStream::connect_timeout(&tcp_addr, Duration::from_secs(2)).expect("TCP connect");
    });
    udp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 64];
    let (len, from) = udp
        .recv_from(&mut buf)
        .expect("datagram to the service address");
    assert_eq!(&buf[..len], b"OPTIONS");
    assert_eq!(from.ip(), IpAddr::V4(PEER_IP));
    let (_conn, from) = tcp.accept().unwrap();
    assert_eq!(from.ip(), IpAddr::V4(PEER_IP));
}

#[test]
fn without_freebind_the_same_bind_fails_and_ipv6_binds_too() {
    let Some(lab) = Lab::new() else { return };
    in_ns(&lab.y, || async {
        let absent = SocketAddr::from((SERVICE, 5062));
        let plain = UdpSocket::bind(absent).unwrap_err();
        assert_eq!(
            plain.raw_os_error(),
            Some(nix::libc::EADDRNOTAVAIL),
            "{plain}"
        );
        bind_udp_freebind(absent).unwrap();
        let v6 = SocketAddr::from((Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10), 5060));
        bind_udp_freebind(v6).expect("IPv6 freebind UDP");
        bind_tcp_listener_freebind(v6, 16).expect("IPv6 freebind TCP");
    });
}
