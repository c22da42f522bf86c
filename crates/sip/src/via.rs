//! One Via hop (`via-parm` of RFC 3261 §20.42): sent-protocol, sent-by and parameters.
//!
//! Linear whitespace (folding included) is allowed around `/`, `:`, `;` and `=`, as RFC 4475's
//! `wsinv` exercises.

use crate::params::Params;
use crate::scan::{eq_letters_ci, is_token, is_ws, trim};
use crate::uri::{is_ipv4, parse_port, Host};
use crate::Error;

/// The transport named in a Via hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport<'a> {
    /// UDP
    Udp,
    /// TCP
    Tcp,
    /// TLS
    Tls,
    /// SCTP
    Sctp,
    /// TLS-SCTP
    TlsSctp,
    /// WS
    Ws,
    /// WSS
    Wss,
    /// Any other token, as written.
    Other(&'a str),
}

impl<'a> Transport<'a> {
    /// Classifies a transport token (case-insensitive).
    pub fn from_token(t: &'a str) -> Transport<'a> {
        const KNOWN: [(&str, Transport<'static>); 7] = [
            ("UDP", Transport::Udp),
            ("TCP", Transport::Tcp),
            ("TLS", Transport::Tls),
            ("SCTP", Transport::Sctp),
            ("TLS-SCTP", Transport::TlsSctp),
            ("WS", Transport::Ws),
            ("WSS", Transport::Wss),
        ];
        KNOWN
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(t))
            .map(|(_, tr)| *tr)
            .unwrap_or(Transport::Other(t))
    }

    /// Canonical upper-case spelling (`Other` as written).
    pub fn as_str(&self) -> &'a str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
            Transport::Sctp => "SCTP",
            Transport::TlsSctp => "TLS-SCTP",
            Transport::Ws => "WS",
            Transport::Wss => "WSS",
            Transport::Other(s) => s,
        }
    }

    /// True for transports that run over a byte stream (framed by Content-Length).
    pub fn is_stream(&self) -> bool {
        !matches!(self, Transport::Udp)
    }
}

/// The `rport` parameter (RFC 3581).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rport {
    /// No `rport` parameter.
    Absent,
    /// `rport` without value: the client asks for the source port to be filled in.
    Requested,
    /// `rport=N`: filled in by a server.
    Port(u16),
}

/// One Via hop, borrowed from the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Via<'a> {
    raw: &'a str,
    protocol_name: &'a str,
    protocol_version: &'a str,
    transport: &'a str,
    host: Host<'a>,
    host_raw: &'a str,
    port: Option<u16>,
    params: Params<'a>,
    branch: Option<&'a str>,
    received: Option<&'a str>,
    rport: Rport,
}

/// The branch prefix of RFC 3261 transactions.
pub const MAGIC_COOKIE: &str = "z9hG4bK";

impl<'a> Via<'a> {
    /// Parses one `via-parm` (one hop, no commas).
    pub fn parse(text: &'a str) -> Result<Via<'a>, Error> {
        let bad = |why| Error::BadHeader { name: "Via", why };
        let raw = trim(text);
        if let Some((transport, host_raw, host, port, end)) = plain_sent_by(raw) {
            let sent_by = SentBy {
                protocol_name: &raw[..3],
                protocol_version: &raw[4..7],
                transport,
                host_raw,
                host,
                port,
            };
            return Via::with_params(raw, sent_by, raw.get(end..).unwrap_or(""));
        }
        let mut cur = Cursor { s: raw, pos: 0 };
        let (protocol_name, protocol_version) = if raw.starts_with("SIP/2.0/") {
            // The form every sender uses: skip the general grammar.
            cur.pos = 8;
            (&raw[..3], &raw[4..7])
        } else {
            let name = cur.token().ok_or(bad("missing protocol name"))?;
            cur.expect(b'/')
                .ok_or(bad("missing / after protocol name"))?;
            let version = cur.token().ok_or(bad("missing protocol version"))?;
            cur.expect(b'/')
                .ok_or(bad("missing / after protocol version"))?;
            (name, version)
        };
        let transport = cur.token().ok_or(bad("missing transport"))?;
        if !cur.skip_ws() {
            return Err(bad("no whitespace between transport and sent-by"));
        }
        let host_raw = cur.host().ok_or(bad("missing or malformed sent-by host"))?;
        let host = Host::parse(host_raw).ok_or(bad("malformed sent-by host"))?;
        cur.skip_ws();
        let port = if cur.peek() == Some(b':') {
            cur.pos += 1;
            cur.skip_ws();
            let digits = cur.take_while(|c| c.is_ascii_digit());
            Some(parse_port(digits).ok_or(bad("malformed sent-by port"))?)
        } else {
            None
        };
        cur.skip_ws();
        let rest = raw.get(cur.pos..).unwrap_or("");
        let sent_by = SentBy {
            protocol_name,
            protocol_version,
            transport,
            host_raw,
            host,
            port,
        };
        Via::with_params(raw, sent_by, rest)
    }

    /// The hop `raw` with its sent-protocol and sent-by read, and `rest` (what follows the
    /// sent-by) as its parameters. Always inlined: the usual hop's reading then hands its
    /// parts on in registers.
    #[inline(always)]
    fn with_params(raw: &'a str, sent_by: SentBy<'a>, rest: &'a str) -> Result<Via<'a>, Error> {
        let bad = |why| Error::BadHeader { name: "Via", why };
        if !rest.is_empty() && !rest.starts_with(';') {
            return Err(bad("junk after sent-by"));
        }
        let SentBy {
            protocol_name,
            protocol_version,
            transport,
            host_raw,
            host,
            port,
        } = sent_by;
        let params = Params::new(rest);
        // One pass validates the parameters (RFC 4475 badinv01 has empty ones) and keeps the
        // ones a proxy reads for every message.
        let (mut branch, mut received, mut rport) = (None, None, Rport::Absent);
        params
            .check(
                // Inlined into the check's loop (called for every parameter of every hop).
                #[inline(always)]
                |name, value| {
                    // The length picks the one name to compare with.
                    match name.len() {
                        6 if eq_letters_ci(name, "branch") => branch = branch.or(value),
                        8 if eq_letters_ci(name, "received") => received = received.or(value),
                        5 if eq_letters_ci(name, "rport") && rport == Rport::Absent => {
                            rport = match value {
                                None => Rport::Requested,
                                Some(v) => parse_port(v).map_or(Rport::Requested, Rport::Port),
                            };
                        }
                        _ => {}
                    }
                },
            )
            .map_err(bad)?;
        Ok(Via {
            raw,
            protocol_name,
            protocol_version,
            transport,
            host,
            host_raw,
            port,
            params,
            branch,
            received,
            rport,
        })
    }

    /// The hop exactly as written (one comma-separated element of a Via header).
    pub fn raw(&self) -> &'a str {
        self.raw
    }

    /// `SIP` normally.
    pub fn protocol_name(&self) -> &'a str {
        self.protocol_name
    }

    /// `2.0` normally.
    pub fn protocol_version(&self) -> &'a str {
        self.protocol_version
    }

    /// The transport token as written.
    pub fn transport_str(&self) -> &'a str {
        self.transport
    }

    /// The transport, classified.
    pub fn transport(&self) -> Transport<'a> {
        Transport::from_token(self.transport)
    }

    /// The sent-by host (IPv6 without brackets).
    pub fn host(&self) -> Host<'a> {
        self.host
    }

    /// The sent-by host as written (IPv6 with brackets).
    pub fn host_raw(&self) -> &'a str {
        self.host_raw
    }

    /// The sent-by port, if written.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// All parameters.
    pub fn params(&self) -> Params<'a> {
        self.params
    }

    /// The `branch` parameter.
    pub fn branch(&self) -> Option<&'a str> {
        self.branch
    }

    /// True when the branch starts with the RFC 3261 magic cookie `z9hG4bK`.
    pub fn has_magic_cookie(&self) -> bool {
        self.branch().is_some_and(|b| b.starts_with(MAGIC_COOKIE))
    }

    /// The `received` parameter.
    pub fn received(&self) -> Option<&'a str> {
        self.received
    }

    /// The `rport` parameter. A malformed `rport=` value reads as `Requested`.
    pub fn rport(&self) -> Rport {
        self.rport
    }

    /// The `maddr` parameter.
    pub fn maddr(&self) -> Option<&'a str> {
        self.params.value("maddr")
    }
}

/// What a hop says before its parameters.
struct SentBy<'a> {
    protocol_name: &'a str,
    protocol_version: &'a str,
    transport: &'a str,
    host_raw: &'a str,
    host: Host<'a>,
    port: Option<u16>,
}

/// A hop written the way senders write it, `SIP/2.0/UDP host[:port]` with one space and no
/// other whitespace, read in one pass: transport, host (a name or an IPv4 address), port, and
/// where the parameters start. `None` for anything else, which the general grammar reads
/// (the two agree wherever this one answers).
#[allow(clippy::type_complexity)]
fn plain_sent_by(raw: &str) -> Option<(&str, &str, Host<'_>, Option<u16>, usize)> {
    let b = raw.as_bytes();
    if !raw.starts_with("SIP/2.0/") {
        return None;
    }
    // UDP, as most hops are sent, without the walk over its token.
    let mut i = if b.get(8..12) == Some(b"UDP ") { 11 } else { 8 };
    while i < b.len() && is_token(b[i]) {
        i += 1;
    }
    if i == 8 || b.get(i) != Some(&b' ') {
        return None;
    }
    let transport = raw.get(8..i)?;
    let host_start = i + 1;
    // The HOST class is exactly alphanumerics, `-` and `.`.
    let mut i = crate::uri::skip_host(b, host_start);
    if i == host_start {
        return None;
    }
    let host_raw = raw.get(host_start..i)?;
    let host = if is_ipv4(host_raw.as_bytes()) {
        Host::Ipv4(host_raw)
    } else {
        Host::Domain(host_raw)
    };
    let port = if b.get(i) == Some(&b':') {
        // As `parse_port` reads the digits (one to five of them, at most 65535), on the way
        // over them.
        let start = i + 1;
        let mut n = 0u32;
        i = start;
        while let Some(&c) = b.get(i).filter(|c| c.is_ascii_digit()) {
            if i - start < 5 {
                n = n * 10 + u32::from(c - b'0');
            }
            i += 1;
        }
        if i == start || i - start > 5 {
            return None;
        }
        Some(u16::try_from(n).ok()?)
    } else {
        None
    };
    match b.get(i) {
        None | Some(b';') => Some((transport, host_raw, host, port, i)),
        _ => None,
    }
}

/// A tiny cursor for the Via grammar.
struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    /// Skips whitespace; true when at least one byte was skipped.
    fn skip_ws(&mut self) -> bool {
        let start = self.pos;
        while self.peek().is_some_and(is_ws) {
            self.pos += 1;
        }
        self.pos > start
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.pos += 1;
        }
        self.s.get(start..self.pos).unwrap_or("")
    }

    fn token(&mut self) -> Option<&'a str> {
        self.skip_ws();
        let t = self.take_while(is_token);
        (!t.is_empty()).then_some(t)
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.pos += 1;
            Some(())
        } else {
            None
        }
    }

    /// A host: `[...]` or a run of name characters.
    fn host(&mut self) -> Option<&'a str> {
        if self.peek() == Some(b'[') {
            let start = self.pos;
            let close = self.s[start..].find(']')?;
            self.pos = start + close + 1;
            return self.s.get(start..self.pos);
        }
        let h = self.take_while(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.');
        (!h.is_empty()).then_some(h)
    }
}

#[cfg(test)]
mod plain_form_tests {
    use super::*;

    /// The fields of a hop, without its raw text.
    fn fields<'a>(v: &Via<'a>) -> impl PartialEq + core::fmt::Debug + 'a {
        (
            (v.protocol_name(), v.protocol_version(), v.transport_str()),
            (v.host(), v.host_raw(), v.port()),
            (v.params().as_str(), v.branch(), v.received(), v.rport()),
        )
    }

    #[test]
    fn the_plain_form_reads_as_the_general_grammar_does() {
        let samples = [
            "SIP/2.0/UDP 10.2.0.50:10001;branch=z9hG4bK-1;rport",
            "SIP/2.0/TCP example.com;branch=z9hG4bK-2;received=192.0.2.1",
            "SIP/2.0/UDP host:5060",
            "SIP/2.0/UDP host",
            "SIP/2.0/UDP host:",
            "SIP/2.0/UDP host:99999;branch=x",
            "SIP/2.0/UDP host :5060;branch=x",
            "SIP/2.0/UDP host;;branch=x",
            "SIP/2.0/UDP  host;branch=x",
            "SIP/2.0/UDP [2001:db8::1]:5060;branch=x",
            "SIP/2.0/UDP 1.2.3.4;rport=5062",
            "SIP/2.0/UDP host junk",
            "SIP/2.0/UDP host:0",
            "SIP/2.0/UDP host:00080;rport",
            "SIP/2.0/UDP host:65535",
            "SIP/2.0/UDP host:65536",
            "SIP/2.0/UDP host:000001",
            "SIP/2.0/UDP host:123456;branch=x",
            "SIP/2.0/UDP host:5x",
            "SIP/2.0/UDP a.b-c.example.org:5060;branch=x",
            "SIP/2.0/UDP h;branch=x",
            "SIP/2.0/UDP host_name;branch=x",
            "SIP/2.0/UDP 192.0.2.1%25x;branch=x",
            "SIP/2.0/UDPX host;branch=x",
            "SIP/2.0/udp host;branch=x",
            "SIP/2.0/UDP",
            "SIP/2.0/UDP ",
        ];
        for s in samples {
            // The same hop with whitespace around the slashes takes the general grammar.
            let general = s.replacen("SIP/2.0/", "SIP / 2.0 / ", 1);
            match (Via::parse(s), Via::parse(&general)) {
                (Ok(a), Ok(b)) => assert_eq!(fields(&a), fields(&b), "{s}"),
                (a, b) => assert_eq!(a.is_ok(), b.is_ok(), "{s}"),
            }
        }
    }
}
