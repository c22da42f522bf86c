//! Real kernel SCTP over 127.0.0.1: whole messages past one read, notifications, SHUTDOWN on
//! close and ABORT only on request. The host kernel of the development machines has no SCTP
//! (`EPROTONOSUPPORT`): there each test prints a banner and passes without checking anything;
//! the system test `tests/system/tests/sctp.rs` runs the same checks inside a QEMU guest whose
//! kernel has it (through `examples/sctp-selftest.rs`).

use sctp::{AssocState, Association, Incoming, Listener, Notification, Options, RecvError};
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

fn listener(options: Options) -> Option<Listener> {
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"));
    match Listener::bind(addr, options) {
        Ok(l) => Some(l),
        Err(e) if e.is_unsupported() => {
            let _ = writeln!(
                std::io::stderr(),
                "\n*** SKIPPED: this kernel has no SCTP ({e}); `modprobe sctp` where it can, or \
                 see the QEMU system test tests/system/tests/sctp.rs ***\n"
            );
            None
        }
        Err(e) => panic!("{e}"),
    }
}

fn pair(server: Options, client: Options) -> Option<(Association, Association)> {
    let l = listener(server)?;
    let c = Association::connect(l.local_addr(), &client).unwrap_or_else(|e| panic!("{e}"));
    let (s, _) = l.accept().unwrap_or_else(|e| panic!("accept: {e}"));
    for a in [&c, &s] {
        a.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    Some((c, s))
}

/// The next message, skipping notifications.
fn next_message(a: &mut Association) -> Vec<u8> {
    loop {
        match a.recv() {
            Ok(Incoming::Message(m)) => return m,
            Ok(Incoming::Notification(_)) => continue,
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

/// Notifications until the association is closed.
fn events_until_closed(a: &mut Association) -> Vec<Notification> {
    let mut seen = Vec::new();
    loop {
        match a.recv() {
            Ok(Incoming::Notification(n)) => seen.push(n),
            Ok(Incoming::Closed) => return seen,
            Ok(Incoming::Message(m)) => panic!("unexpected {}-byte message", m.len()),
            Err(e) => {
                seen.push(Notification::Other { kind: 0 });
                eprintln!("receive ended with {e}");
                return seen;
            }
        }
    }
}

#[test]
fn a_message_larger_than_one_read_arrives_whole() {
    let small_reads = Options {
        read_chunk: 4096,
        max_message: 200_000,
        ..Options::default()
    };
    let Some((client, mut server)) = pair(small_reads, Options::default()) else {
        return;
    };
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    client.send(&big).unwrap_or_else(|e| panic!("{e}"));
    client.send(b"after").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(next_message(&mut server), big);
    assert_eq!(next_message(&mut server), b"after");
}

#[test]
fn an_oversize_message_is_an_error_and_the_next_one_arrives() {
    let Some((client, mut server)) = pair(Options::default(), Options::default()) else {
        return;
    };
    client
        .send(&vec![b'x'; 70_000])
        .unwrap_or_else(|e| panic!("{e}"));
    client.send(b"next").unwrap_or_else(|e| panic!("{e}"));
    let err = loop {
        match server.recv() {
            Ok(Incoming::Notification(_)) => continue,
            other => break other,
        }
    };
    assert!(
        matches!(err, Err(RecvError::TooLarge { limit: 65_535, .. })),
        "{err:?}"
    );
    assert_eq!(next_message(&mut server), b"next");
}

#[test]
fn close_is_a_shutdown_and_abort_is_not() {
    let Some((mut client, server)) = pair(Options::default(), Options::default()) else {
        return;
    };
    server.close();
    let seen = events_until_closed(&mut client);
    assert!(seen.contains(&Notification::Shutdown), "{seen:?}");
    assert!(!seen.iter().any(|n| matches!(
        n,
        Notification::AssocChange {
            state: AssocState::CommLost,
            ..
        }
    )));

    let Some((mut client, server)) = pair(Options::default(), Options::default()) else {
        return;
    };
    server.abort().unwrap_or_else(|e| panic!("{e}"));
    let seen = events_until_closed(&mut client);
    assert!(
        seen.iter().any(|n| matches!(
            n,
            Notification::AssocChange {
                state: AssocState::CommLost,
                ..
            }
        )),
        "{seen:?}"
    );
}

#[test]
fn a_non_blocking_association_connects_and_joins_a_message_across_would_blocks() {
    let Some(l) = listener(Options::default()) else {
        return;
    };
    let mut client = Association::start_connect(l.local_addr(), &Options::default())
        .unwrap_or_else(|e| panic!("{e}"));
    // The kernel completes the handshake for the listener; accept only takes it.
    let (server, _) = l.accept().unwrap_or_else(|e| panic!("accept: {e}"));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut got = None;
    let mut would_block = 0u32;
    let big = vec![b'z'; 60_000];
    let mut sent = false;
    while got.is_none() && std::time::Instant::now() < deadline {
        match client.recv() {
            Ok(Incoming::Message(m)) => got = Some(m),
            Ok(Incoming::Notification(_)) => {}
            Ok(Incoming::Closed) => panic!("closed before the message"),
            Err(e) if e.is_would_block() => {
                would_block += 1;
                if !sent {
                    client.finish_connect().unwrap_or_else(|e| panic!("{e}"));
                    server.send(&big).unwrap_or_else(|e| panic!("{e}"));
                    sent = true;
                }
                std::thread::yield_now();
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        would_block > 0,
        "a non-blocking receive never said would-block"
    );
    assert_eq!(got, Some(big));
}
