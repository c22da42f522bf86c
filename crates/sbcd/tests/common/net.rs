//! Ports and raw UDP: what the tests need below SIPp.

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Ports handed out by this test binary, so that two tests running in parallel never get the same
/// one even after the kernel has forgotten we probed it.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A port on 127.0.0.1 that is free for both UDP and TCP right now.
pub fn free_port() -> u16 {
    for _ in 0..200 {
        let Ok(tcp) = TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(port) = tcp.local_addr().map(|a| a.port()) else {
            continue;
        };
        if UdpSocket::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        let mut taken = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
        if taken.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1");
}

/// 127.0.0.1:`port`.
pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// True once something (a SIPp we started) has bound UDP `port` on 127.0.0.1.
pub fn udp_port_taken(port: u16) -> bool {
    UdpSocket::bind(("127.0.0.1", port)).is_err()
}

/// A UDP socket of the test's own, to send hand-written datagrams and read what comes back.
#[derive(Debug)]
pub struct UdpPeer {
    socket: UdpSocket,
}

impl UdpPeer {
    pub fn bind() -> UdpPeer {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket on 127.0.0.1");
        UdpPeer { socket }
    }

    /// A socket on another loopback address (127.0.0.0/8 is all local on Linux), for tests that
    /// need a source or a destination other than 127.0.0.1.
    pub fn bind_ip(ip: [u8; 4]) -> UdpPeer {
        assert_eq!(ip[0], 127, "tests send only to 127.0.0.0/8");
        let socket = UdpSocket::bind(SocketAddr::from((ip, 0)))
            .unwrap_or_else(|e| panic!("bind a UDP socket on {ip:?}: {e}"));
        UdpPeer { socket }
    }

    pub fn port(&self) -> u16 {
        self.socket.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// The socket's own address.
    pub fn addr(&self) -> SocketAddr {
        self.socket
            .local_addr()
            .expect("a bound socket has an address")
    }

    /// The next datagram within `timeout`, as raw bytes, or None.
    pub fn recv_bytes(&self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65536];
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            self.socket
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .ok()?;
            match self.socket.recv_from(&mut buf) {
                Ok((n, _)) => return Some(buf[..n].to_vec()),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    if Instant::now() >= deadline {
                        return None;
                    }
                }
                Err(e) => panic!("UDP receive failed: {e}"),
            }
        }
    }

    pub fn send(&self, to: SocketAddr, bytes: &[u8]) {
        self.socket.send_to(bytes, to).expect("send a datagram");
    }

    /// The next datagram within `timeout`, as text (lossy), or None.
    pub fn recv(&self, timeout: Duration) -> Option<String> {
        self.recv_bytes(timeout)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    /// The next datagram that is a response to `method` (by CSeq), skipping anything else.
    pub fn recv_response_to(&self, method: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let msg = self.recv(left)?;
            if msg.starts_with("SIP/2.0 ") && cseq_method(&msg).as_deref() == Some(method) {
                return Some(msg);
            }
        }
    }
}

/// The status code of a response's start line.
pub fn status_code(response: &str) -> Option<u16> {
    response.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
}

/// The value of the first header called `name` (case-insensitive, full names only).
pub fn header(msg: &str, name: &str) -> Option<String> {
    msg.split("\r\n")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
}

fn cseq_method(msg: &str) -> Option<String> {
    header(msg, "CSeq")?
        .split_whitespace()
        .nth(1)
        .map(str::to_owned)
}

/// A request from `from_port` to `to`, well formed, with the given method and request URI.
pub fn request(method: &str, uri: &str, from_port: u16, call_id: &str) -> String {
    format!(
        "{method} {uri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:{from_port};branch=z9hG4bK-{call_id}\r\n\
         From: <sip:tester@127.0.0.1:{from_port}>;tag=t-{call_id}\r\n\
         To: <{uri}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 {method}\r\n\
         Max-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// An upstream that never answers: its socket is bound (so no ICMP error gives it away) and
/// counts the requests it swallows.
#[derive(Debug)]
pub struct SilentUpstream {
    peer: UdpPeer,
}

impl SilentUpstream {
    pub fn bind() -> SilentUpstream {
        SilentUpstream {
            peer: UdpPeer::bind(),
        }
    }

    pub fn port(&self) -> u16 {
        self.peer.port()
    }

    /// The request lines of what arrived so far (start lines only), waiting at most `timeout`
    /// for the first.
    pub fn swallowed(&self, timeout: Duration) -> Vec<String> {
        let mut lines = Vec::new();
        let mut wait = timeout;
        while let Some(msg) = self.peer.recv(wait) {
            lines.push(msg.lines().next().unwrap_or_default().to_owned());
            wait = Duration::from_millis(50);
        }
        lines
    }
}
