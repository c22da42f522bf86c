//! The crate's checks against a real kernel SCTP, for the QEMU peer guest of the system test
//! (`tests/system/tests/sctp.rs`). Prints one line per finding; the test reads them.
//!
//! - `respond ADDR COUNT [READ_CHUNK]`: a minimal SIP responder over SCTP for SIPp: answers
//!   every request but ACK with 200 (a To tag added), reports each message's size and whether
//!   its body is as long as its Content-Length says (a message larger than one read must
//!   arrive whole), reports how each association ended, and exits after COUNT associations.
//!   Writes `ADDR`'s port to `/tmp/responder.ready` once it listens.
//! - `close graceful|abort`: an association over 127.0.0.1 closed by one side with
//!   `Association::close` or `Association::abort`; prints what the other side was told.

use sctp::{AssocState, Association, Incoming, Listener, Notification, Options};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("respond") => respond(&args[1..]),
        Some("close") => close(&args[1..]),
        _ => Err(
            "usage: sctp-selftest respond ADDR COUNT [READ_CHUNK] | close graceful|abort".into(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("selftest: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn respond(args: &[String]) -> Result<(), String> {
    let [addr, count, rest @ ..] = args else {
        return Err("respond needs ADDR COUNT".into());
    };
    let addr: SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let count: usize = count.parse().map_err(|e| format!("{count}: {e}"))?;
    let mut options = Options::default();
    if let Some(chunk) = rest.first() {
        options.read_chunk = chunk.parse().map_err(|e| format!("{chunk}: {e}"))?;
    }
    let listener = Listener::bind(addr, options.clone()).map_err(|e| e.to_string())?;
    println!(
        "responder: listening on {} (reads of {} bytes)",
        listener.local_addr(),
        options.read_chunk
    );
    std::fs::write("/tmp/responder.ready", listener.local_addr().to_string())
        .map_err(|e| format!("writing /tmp/responder.ready: {e}"))?;
    for _ in 0..count {
        let (mut assoc, peer) = listener.accept().map_err(|e| format!("accept: {e}"))?;
        println!("responder: association from {peer}");
        let mut ending = Vec::new();
        loop {
            match assoc.recv() {
                Ok(Incoming::Message(m)) => {
                    if let Some(answer) = answer(&m) {
                        assoc.send(&answer).map_err(|e| e.to_string())?;
                    }
                }
                Ok(Incoming::Notification(n)) => {
                    println!("responder: notification {}", describe(&n));
                    ending.push(n);
                }
                Ok(Incoming::Closed) => break,
                Err(e) => {
                    println!("responder: receive error: {e}");
                    break;
                }
            }
        }
        println!(
            "responder: association from {peer} ended by {}",
            verdict(&ending)
        );
    }
    println!("responder: done");
    Ok(())
}

/// The SIP answer to `message`, after reporting it: 200 to every request but ACK.
fn answer(message: &[u8]) -> Option<Vec<u8>> {
    let text = String::from_utf8_lossy(message);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let method = request_line.split(' ').next().unwrap_or_default();
    let headers: Vec<(&str, &str)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim(), v.trim()))
        .collect();
    let get = |long: &str, short: &str| {
        headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(long) || n.eq_ignore_ascii_case(short))
            .map(|(_, v)| *v)
            .collect::<Vec<_>>()
    };
    let declared: Option<usize> = get("Content-Length", "l")
        .first()
        .and_then(|v| v.parse().ok());
    let whole = declared == Some(body.len());
    println!(
        "responder: {method} of {} bytes, Content-Length {} and {} body bytes: {}",
        message.len(),
        declared.map_or_else(|| "missing".to_string(), |d| d.to_string()),
        body.len(),
        if whole { "whole" } else { "NOT WHOLE" }
    );
    if method == "ACK" || request_line.starts_with("SIP/2.0") {
        return None;
    }
    let mut out = String::from("SIP/2.0 200 OK\r\n");
    for via in get("Via", "v") {
        out.push_str(&format!("Via: {via}\r\n"));
    }
    for (long, short) in [("From", "f"), ("Call-ID", "i"), ("CSeq", "")] {
        for v in get(long, short) {
            out.push_str(&format!("{long}: {v}\r\n"));
        }
    }
    for to in get("To", "t") {
        if to.contains(";tag=") {
            out.push_str(&format!("To: {to}\r\n"));
        } else {
            out.push_str(&format!("To: {to};tag=selftest\r\n"));
        }
    }
    out.push_str("Contact: <sip:selftest@127.0.0.1;transport=sctp>\r\n");
    out.push_str("Content-Length: 0\r\n\r\n");
    Some(out.into_bytes())
}

fn describe(n: &Notification) -> String {
    match n {
        Notification::AssocChange { state, error, .. } => {
            format!("assoc change {state:?} (error {error})")
        }
        Notification::Shutdown => "shutdown event".into(),
        Notification::PartialDeliveryAborted => "partial delivery aborted".into(),
        Notification::Other { kind } => format!("type {kind:#06x}"),
    }
}

/// How the peer ended an association, from the notifications it brought.
fn verdict(seen: &[Notification]) -> &'static str {
    let lost = seen.iter().any(|n| {
        matches!(
            n,
            Notification::AssocChange {
                state: AssocState::CommLost,
                ..
            }
        )
    });
    if lost {
        "ABORT (COMM_LOST)"
    } else if seen.contains(&Notification::Shutdown) {
        "SHUTDOWN"
    } else {
        "end of file without a notification"
    }
}

fn close(args: &[String]) -> Result<(), String> {
    let how = args.first().map(String::as_str).unwrap_or("graceful");
    let any: SocketAddr = "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?;
    let listener = Listener::bind(any, Options::default()).map_err(|e| e.to_string())?;
    let mut client = Association::connect(listener.local_addr(), &Options::default())
        .map_err(|e| e.to_string())?;
    client
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let (server, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
    match how {
        "graceful" => server.close(),
        "abort" => server.abort().map_err(|e| e.to_string())?,
        other => return Err(format!("close {other}: expected graceful or abort")),
    }
    let mut seen = Vec::new();
    loop {
        match client.recv() {
            Ok(Incoming::Notification(n)) => {
                println!("close {how}: peer notification {}", describe(&n));
                seen.push(n);
            }
            Ok(Incoming::Closed) => break,
            Ok(Incoming::Message(m)) => return Err(format!("unexpected {}-byte message", m.len())),
            Err(e) => {
                println!("close {how}: peer receive ended with {e}");
                break;
            }
        }
    }
    println!("close {how}: the peer saw {}", verdict(&seen));
    Ok(())
}
