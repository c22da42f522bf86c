//! The proxy's view of SIP messages: a thin layer over the workspace `sip` crate.
//!
//! `sip` tokenises and validates (zero-copy, with its limits and its judgement of what is
//! malformed); this module adds what the proxy's routing code wants on top: header values by
//! long or compact name with folding undone, comma lists as strings, small string-level readers
//! for Via / name-addr / URI text (used on values the proxy builds itself, too), and [`Draft`],
//! an owned editable copy that can be kept in a transaction and sent several times (serial
//! forking re-sends the same request with a new Via and Record-Route per attempt). Header
//! values that are not touched keep their text.
//!
//! Nothing here panics on any input: malformed input is an `Err`.

use std::borrow::Cow;

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The `sip` crate refused it.
    #[error(transparent)]
    Sip(#[from] sip::Error),
    /// Via, From, To, Call-ID or CSeq is missing or unreadable for the proxy.
    #[error("missing or bad mandatory header {0}")]
    Mandatory(&'static str),
}

/// The first line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine<'a> {
    /// `METHOD uri SIP/2.0`.
    Request {
        /// The method token as sent.
        method: &'a str,
        /// The request URI.
        uri: &'a str,
    },
    /// `SIP/2.0 code reason`.
    Response {
        /// The status code.
        code: u16,
        /// The reason phrase.
        reason: &'a str,
    },
}

/// One header line (continuation lines joined).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header<'a> {
    /// The name as sent.
    pub name: &'a str,
    /// The value, trimmed, folding undone.
    pub value: Cow<'a, str>,
}

/// A parsed message that borrows the received bytes.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    /// The first line.
    pub start: StartLine<'a>,
    /// The headers in order.
    pub headers: Vec<Header<'a>>,
    /// The body (as long as Content-Length says).
    pub body: &'a [u8],
    /// The `sip` crate's view, for its builders.
    pub sip: sip::Message<'a>,
}

/// The long form of a compact header name, lower-cased for comparison.
fn canonical(name: &str) -> Cow<'_, str> {
    match sip::HeaderName::parse(name) {
        Some(known) => Cow::Borrowed(known.as_str()),
        None => Cow::Borrowed(name),
    }
}

/// Whether header `name` (as sent) is `wanted` (long form, any case).
pub fn name_is(name: &str, wanted: &str) -> bool {
    // Every alias of a header name is a one-letter compact form, so only those need the table;
    // this runs for every header line on every lookup.
    name.eq_ignore_ascii_case(wanted)
        || (name.len() == 1 && canonical(name).eq_ignore_ascii_case(wanted))
}

impl<'a> Message<'a> {
    /// Reads a datagram.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ParseError> {
        Self::parse_with(bytes, sip::Framing::Datagram)
    }

    /// Reads a message with the framing of its transport, and checks that what the proxy
    /// relies on is there.
    pub fn parse_with(bytes: &'a [u8], framing: sip::Framing) -> Result<Self, ParseError> {
        let inner = sip::Message::parse_with(bytes, &sip::Limits::default(), framing)?;
        inner.validate()?;
        let start = match *inner.start_line() {
            sip::StartLine::Request { method, uri } => StartLine::Request {
                method: method.as_str(),
                uri: uri.as_str(),
            },
            sip::StartLine::Response { status, reason } => StartLine::Response {
                code: status,
                reason,
            },
        };
        // Most messages have fewer lines than this: one allocation instead of a growing vector.
        let mut headers = Vec::with_capacity(16);
        headers.extend(inner.headers().map(|h| Header {
            name: h.name,
            value: if h.is_folded() {
                Cow::Owned(h.value_pieces().collect::<Vec<_>>().join(" "))
            } else {
                Cow::Borrowed(h.value)
            },
        }));
        let message = Message {
            start,
            headers,
            body: inner.body(),
            sip: inner,
        };
        message.check_mandatory()?;
        Ok(message)
    }

    fn check_mandatory(&self) -> Result<(), ParseError> {
        self.top_via().ok_or(ParseError::Mandatory("Via"))?;
        self.header("from")
            .and_then(NameAddr::parse)
            .ok_or(ParseError::Mandatory("From"))?;
        self.header("to")
            .and_then(NameAddr::parse)
            .ok_or(ParseError::Mandatory("To"))?;
        self.call_id().ok_or(ParseError::Mandatory("Call-ID"))?;
        self.cseq().ok_or(ParseError::Mandatory("CSeq"))?;
        Ok(())
    }

    /// Whether it is a request.
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// The method of a request, or of the CSeq of a response.
    pub fn method(&self) -> &str {
        match &self.start {
            StartLine::Request { method, .. } => method,
            StartLine::Response { .. } => self.cseq().map(|(_, m)| m).unwrap_or_default(),
        }
    }

    /// The request URI.
    pub fn request_uri(&self) -> Option<&'a str> {
        match self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    /// The status code of a response.
    pub fn code(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { code, .. } => Some(code),
            StartLine::Request { .. } => None,
        }
    }

    /// The first value of header `name` (long form).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| name_is(h.name, name))
            .map(|h| h.value.as_ref())
    }

    /// Every value of header `name`, comma lists split, in order.
    pub fn list(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|h| name_is(h.name, name))
            .flat_map(|h| split_list(h.value.as_ref()))
            .collect()
    }

    /// The topmost Via.
    pub fn top_via(&self) -> Option<Via<'_>> {
        self.headers
            .iter()
            .filter(|h| name_is(h.name, "via"))
            .flat_map(|h| list_items(h.value.as_ref()))
            .next()
            .and_then(Via::parse)
    }

    /// Every Via, top first.
    pub fn vias(&self) -> Vec<Via<'_>> {
        self.list("via")
            .into_iter()
            .filter_map(Via::parse)
            .collect()
    }

    /// The Call-ID.
    pub fn call_id(&self) -> Option<&str> {
        self.header("call-id").filter(|v| !v.is_empty())
    }

    /// CSeq number and method.
    pub fn cseq(&self) -> Option<(u32, &str)> {
        let value = self.header("cseq")?;
        let mut parts = value.split_whitespace();
        let number = parts.next()?.parse().ok()?;
        let method = parts.next()?;
        Some((number, method))
    }

    /// The From header.
    pub fn from(&self) -> Option<NameAddr<'_>> {
        self.header("from").and_then(NameAddr::parse)
    }

    /// The To header.
    pub fn to(&self) -> Option<NameAddr<'_>> {
        self.header("to").and_then(NameAddr::parse)
    }

    /// Max-Forwards, if present and readable.
    pub fn max_forwards(&self) -> Option<u32> {
        self.header("max-forwards")
            .and_then(|v| v.trim().parse().ok())
    }

    /// Expires header, if present and readable.
    pub fn expires(&self) -> Option<u32> {
        self.header("expires").and_then(|v| v.trim().parse().ok())
    }

    /// Retry-After seconds, if present and readable.
    pub fn retry_after(&self) -> Option<u32> {
        self.header("retry-after")
            .and_then(|v| v.split([';', '(', ' ']).next())
            .and_then(|v| v.trim().parse().ok())
    }

    /// Makes an editable copy.
    pub fn to_draft(&self) -> Draft {
        Draft {
            start: match &self.start {
                StartLine::Request { method, uri } => format!("{method} {uri} SIP/2.0"),
                StartLine::Response { code, reason } => format!("SIP/2.0 {code} {reason}"),
            },
            headers: {
                // Room for the lines the proxy adds (Via, Record-Route) without regrowing.
                let mut headers = Vec::with_capacity(self.headers.len() + 4);
                headers.extend(
                    self.headers
                        .iter()
                        .map(|h| (h.name.to_owned(), h.value.to_string())),
                );
                headers
            },
            body: self.body.to_vec(),
        }
    }
}

/// Splits a header value at commas that are outside quotes and angle brackets.
pub fn split_list(value: &str) -> Vec<&str> {
    list_items(value).collect()
}

/// The items of a comma list, trimmed, empty ones left out, without collecting them (the first
/// item is often all a caller wants).
pub fn list_items(value: &str) -> impl Iterator<Item = &str> {
    let bytes = value.as_bytes();
    let (mut quoted, mut angle, mut start, mut i) = (false, false, 0, 0);
    std::iter::from_fn(move || {
        while start <= bytes.len() {
            while i < bytes.len() {
                match bytes[i] {
                    b'\\' if quoted => i += 1,
                    b'"' => quoted = !quoted,
                    b'<' if !quoted => angle = true,
                    b'>' if !quoted => angle = false,
                    b',' if !quoted && !angle => break,
                    _ => {}
                }
                i += 1;
            }
            // An escape as the last byte can step past the end.
            let end = i.min(bytes.len());
            let item = value.get(start..end).map(str::trim);
            start = end + 1;
            i = start;
            match item {
                Some(item) if !item.is_empty() => return Some(item),
                _ => {}
            }
        }
        None
    })
}

/// The value of parameter `name` in a `;a=b;c` list (`Some("")` for a flag).
pub fn param<'v>(params: &'v str, name: &str) -> Option<&'v str> {
    params.split(';').find_map(|p| {
        let (n, v) = p.split_once('=').unwrap_or((p, ""));
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// One Via entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via<'a> {
    /// The transport token (`UDP`, `TCP`, ...).
    pub transport: &'a str,
    /// The sent-by host.
    pub host: &'a str,
    /// The sent-by port, if given.
    pub port: Option<u16>,
    /// Everything after the sent-by (starting after the first `;`).
    pub params: &'a str,
}

impl<'a> Via<'a> {
    /// Reads `SIP/2.0/UDP host:port;params`.
    pub fn parse(value: &'a str) -> Option<Self> {
        // RFC 3261 §25.1: LWS may surround each SLASH (`SIP  /   2.0 / UDP`, RFC 4475 wsinv).
        let (name, rest) = value.trim().split_once('/')?;
        let (_version, rest) = rest.split_once('/')?;
        let rest = rest.trim_start();
        let (transport, rest) = rest.split_at(rest.find(char::is_whitespace)?);
        if !name.trim().eq_ignore_ascii_case("SIP") {
            return None;
        }
        let rest = rest.trim();
        let (sent_by, params) = rest.split_once(';').unwrap_or((rest, ""));
        let (host, port) = split_hostport(sent_by.trim())?;
        Some(Via {
            transport,
            host,
            port,
            params,
        })
    }

    /// The branch parameter.
    pub fn branch(&self) -> Option<&'a str> {
        param(self.params, "branch").filter(|b| !b.is_empty())
    }

    /// `host:port` as one string (for matching).
    pub fn sent_by(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.to_owned(),
        }
    }
}

/// Splits `host[:port]`, `[v6][:port]`.
pub fn split_hostport(s: &str) -> Option<(&str, Option<u16>)> {
    if s.is_empty() {
        return None;
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((host, port));
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => Some((host, Some(port.parse().ok()?))),
        Some(_) => Some((s, None)),
        None => Some((s, None)),
    }
}

/// A name-addr or addr-spec with header parameters (From, To, Contact, Route, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// The URI.
    pub uri: &'a str,
    /// The header parameters after the URI (without the leading `;`).
    pub params: &'a str,
}

impl<'a> NameAddr<'a> {
    /// Reads `"Name" <uri>;params` or `uri;params`.
    pub fn parse(value: &'a str) -> Option<Self> {
        let value = value.trim();
        if let Some(open) = find_unquoted(value, '<') {
            let after = &value[open + 1..];
            let close = after.find('>')?;
            let uri = after[..close].trim();
            let rest = after[close + 1..].trim_start();
            let params = rest.strip_prefix(';').unwrap_or(rest);
            return (!uri.is_empty()).then_some(NameAddr { uri, params });
        }
        let (uri, params) = value.split_once(';').unwrap_or((value, ""));
        let uri = uri.trim();
        (!uri.is_empty() && !uri.contains(' ')).then_some(NameAddr { uri, params })
    }

    /// The tag parameter.
    pub fn tag(&self) -> Option<&'a str> {
        param(self.params, "tag").filter(|t| !t.is_empty())
    }
}

fn find_unquoted(s: &str, wanted: char) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == wanted && !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

/// The parts of a SIP URI the proxy uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uri<'a> {
    /// `sip`, `sips`, `tel`, `urn`...
    pub scheme: &'a str,
    /// The user part, if any.
    pub user: Option<&'a str>,
    /// The host.
    pub host: &'a str,
    /// The port.
    pub port: Option<u16>,
    /// URI parameters (without the leading `;`).
    pub params: &'a str,
}

impl<'a> Uri<'a> {
    /// Reads `scheme:[user[:pw]@]host[:port][;params][?headers]`.
    pub fn parse(s: &'a str) -> Option<Self> {
        let (scheme, rest) = s.trim().split_once(':')?;
        let rest = rest.split('?').next().unwrap_or_default();
        let (userhost, params) = rest.split_once(';').unwrap_or((rest, ""));
        let (user, hostport) = match userhost.rsplit_once('@') {
            Some((u, h)) => (Some(u.split(':').next().unwrap_or(u)), h),
            None => (None, userhost),
        };
        let (host, port) = split_hostport(hostport)?;
        Some(Uri {
            scheme,
            user,
            host,
            port,
            params,
        })
    }

    /// The AoR key: `user@host` (host lower-cased), or the host alone.
    pub fn aor_key(&self) -> String {
        match self.user {
            Some(u) => format!("{u}@{}", self.host.to_ascii_lowercase()),
            None => self.host.to_ascii_lowercase(),
        }
    }
}

/// The AoR key of a URI string, or the string itself when it is not a URI we can read.
pub fn aor_of(uri: &str) -> String {
    Uri::parse(uri)
        .map(|u| u.aor_key())
        .unwrap_or_else(|| uri.to_owned())
}

/// An editable message: the start line, header lines, body. Serialising recomputes
/// Content-Length; header values that were not touched keep their text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    /// The first line without CRLF.
    pub start: String,
    /// Header names and values in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Draft {
    /// A draft with this start line and nothing else.
    pub fn new(start: String) -> Self {
        Draft {
            start,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header line at the end.
    pub fn push(&mut self, name: &str, value: impl Into<String>) -> &mut Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// Adds a header line above all others of any name (top of the header section).
    pub fn prepend(&mut self, name: &str, value: impl Into<String>) -> &mut Self {
        self.headers.insert(0, (name.to_owned(), value.into()));
        self
    }

    /// Puts a header line just above the first line of the same name, or at the top.
    pub fn insert_first(&mut self, name: &str, value: impl Into<String>) -> &mut Self {
        let at = self
            .headers
            .iter()
            .position(|(n, _)| name_is(n, name))
            .unwrap_or(0);
        self.headers.insert(at, (name.to_owned(), value.into()));
        self
    }

    /// Replaces every line of `name` with one line carrying `value`, or adds it.
    pub fn set(&mut self, name: &str, value: impl Into<String>) -> &mut Self {
        let value = value.into();
        match self.headers.iter().position(|(n, _)| name_is(n, name)) {
            Some(at) => {
                self.headers[at].1 = value;
                let mut i = 0;
                self.headers.retain(|(n, _)| {
                    i += 1;
                    i - 1 == at || !name_is(n, name)
                });
            }
            None => {
                self.headers.push((name.to_owned(), value));
            }
        }
        self
    }

    /// Removes every line of `name`.
    pub fn remove(&mut self, name: &str) -> &mut Self {
        self.headers.retain(|(n, _)| !name_is(n, name));
        self
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| name_is(n, name))
            .map(|(_, v)| v.as_str())
    }

    /// Removes the first element of the comma list carried by the first line of `name`.
    pub fn pop_first_of(&mut self, name: &str) -> Option<String> {
        let at = self.headers.iter().position(|(n, _)| name_is(n, name))?;
        let items: Vec<String> = split_list(&self.headers[at].1)
            .into_iter()
            .map(str::to_owned)
            .collect();
        let mut items = items.into_iter();
        let first = items.next();
        let rest: Vec<String> = items.collect();
        if rest.is_empty() {
            self.headers.remove(at);
        } else {
            self.headers[at].1 = rest.join(", ");
        }
        first
    }

    /// Replaces the whole comma list of `name` with `items` (one line), or removes it.
    pub fn set_list(&mut self, name: &str, items: &[String]) -> &mut Self {
        if items.is_empty() {
            self.remove(name)
        } else {
            self.set(name, items.join(", "))
        }
    }

    /// Replaces the request URI of a request draft.
    pub fn set_request_uri(&mut self, uri: &str) {
        let mut parts = self.start.splitn(3, ' ');
        if let (Some(method), Some(_), Some(version)) = (parts.next(), parts.next(), parts.next()) {
            self.start = format!("{method} {uri} {version}");
        }
    }

    /// The wire form, with Content-Length set to the body's length.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Sized up front (the Content-Length line is at most 40 bytes): one allocation.
        let size = self.start.len()
            + 2
            + self
                .headers
                .iter()
                .map(|(n, v)| n.len() + v.len() + 4)
                .sum::<usize>()
            + 40
            + self.body.len();
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(self.start.as_bytes());
        out.extend_from_slice(b"\r\n");
        for (name, value) in &self.headers {
            if name_is(name, "content-length") {
                continue;
            }
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        // Writing into a Vec cannot fail.
        let _ = std::io::Write::write_fmt(
            &mut out,
            format_args!("Content-Length: {}\r\n\r\n", self.body.len()),
        );
        out.extend_from_slice(&self.body);
        out
    }
}

/// Builds a response to `request`: its Vias, From, To (with `to_tag` added when it has none
/// and the code is above 100), Call-ID and CSeq, then `extra` headers.
pub fn response_to(
    request: &Message<'_>,
    code: u16,
    to_tag: Option<&str>,
    extra: &[(&str, String)],
) -> Vec<u8> {
    let mut builder = sip::ResponseBuilder::new(&request.sip, code).reason(reason_phrase(code));
    if let Some(tag) = to_tag {
        builder = builder.to_tag(tag);
    }
    for (name, value) in extra {
        builder = builder.header(name, value);
    }
    let mut out = Vec::new();
    if builder.write(&mut out).is_ok() {
        return out;
    }
    // The builder refused (a value it will not write); build it here instead.
    let mut draft = Draft::new(format!("SIP/2.0 {code} {}", reason_phrase(code)));
    for h in &request.headers {
        if name_is(h.name, "via") {
            draft.push("Via", h.value.to_string());
        }
    }
    for name in ["From", "To", "Call-ID", "CSeq"] {
        if let Some(value) = request.header(name) {
            let mut value = value.to_owned();
            if name == "To" && code > 100 {
                if let (Some(tag), Some(to)) = (to_tag, request.to()) {
                    if to.tag().is_none() {
                        value.push_str(";tag=");
                        value.push_str(tag);
                    }
                }
            }
            draft.push(name, value);
        }
    }
    for (name, value) in extra {
        draft.push(name, value.clone());
    }
    draft.to_bytes()
}

/// The usual reason phrase of a status code.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        183 => "Session Progress",
        200 => "OK",
        380 => "Alternative Service",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        486 => "Busy Here",
        487 => "Request Terminated",
        500 => "Server Internal Error",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        600 => "Busy Everywhere",
        603 => "Decline",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:bob@example.com SIP/2.0\r\n\
v: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport, SIP/2.0/UDP [2001:db8::1];branch=z9hG4bK0\r\n\
f: \"Al, ice\" <sip:alice@example.com>;tag=a1\r\n\
t: <sip:bob@example.com>\r\n\
i: abc@host\r\n\
CSeq: 1 INVITE\r\n\
Subject: folded\r\n  line\r\n\
l: 4\r\n\r\nbodyEXTRA";

    #[test]
    fn reads_compact_folded_lists_and_body() {
        let m = Message::parse(INVITE.as_bytes()).unwrap();
        assert_eq!(m.method(), "INVITE");
        assert_eq!(m.vias().len(), 2);
        let via = m.top_via().unwrap();
        assert_eq!(
            (via.host, via.port, via.branch()),
            ("192.0.2.1", Some(5060), Some("z9hG4bK1"))
        );
        assert_eq!(m.vias()[1].host, "2001:db8::1");
        assert_eq!(m.from().unwrap().tag(), Some("a1"));
        assert_eq!(m.to().unwrap().tag(), None);
        assert_eq!(m.header("subject"), Some("folded line"));
        assert_eq!(m.body, b"body");
        assert_eq!(m.cseq(), Some((1, "INVITE")));
    }

    #[test]
    fn refuses_garbage_without_panicking() {
        for bad in [
            &b""[..],
            b"\r\n\r\n",
            b"HELLO\r\n\r\n",
            b"INVITE sip:a SIP/2.0\r\nVia: x\r\n\r\n",
            b"SIP/2.0 99999 x\r\n\r\n",
            b"INVITE sip:a SIP/2.0\r\nContent-Length: 99\r\n\r\n",
            b"\xff\xfe\r\n\r\n",
            b"INVITE sip:a SIP/2.0\r\n bad\r\n\r\n",
        ] {
            assert!(Message::parse(bad).is_err());
        }
    }

    #[test]
    fn draft_round_trip_and_edits() {
        let m = Message::parse(INVITE.as_bytes()).unwrap();
        let mut d = m.to_draft();
        d.insert_first("Via", "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx");
        d.set_request_uri("sip:bob@10.0.0.9");
        d.set("Max-Forwards", "69");
        let bytes = d.to_bytes();
        let again = Message::parse(&bytes).unwrap();
        assert_eq!(again.request_uri(), Some("sip:bob@10.0.0.9"));
        assert_eq!(again.vias().len(), 3);
        assert_eq!(again.top_via().unwrap().host, "10.0.0.1");
        assert_eq!(again.body, b"body");
        assert_eq!(again.max_forwards(), Some(69));
    }

    #[test]
    fn uri_and_name_addr() {
        let u = Uri::parse("sip:alice:pw@Example.COM:5070;transport=tcp?x=y").unwrap();
        assert_eq!(u.user, Some("alice"));
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.aor_key(), "alice@example.com");
        assert_eq!(param(u.params, "transport"), Some("tcp"));
        let n = NameAddr::parse("<sip:a@b;lr>;expires=30").unwrap();
        assert_eq!(
            (n.uri, param(n.params, "expires")),
            ("sip:a@b;lr", Some("30"))
        );
        assert_eq!(split_list("<sip:a,b@c>, \"x,y\" <sip:d@e>").len(), 2);
        assert_eq!(
            split_list(" a , ,\"x\\\",y\" ,<b,c>,"),
            vec!["a", "\"x\\\",y\"", "<b,c>"]
        );
        assert!(split_list("").is_empty());
        assert_eq!(list_items("\"a\\").collect::<Vec<_>>(), vec!["\"a\\"]);
    }
}
