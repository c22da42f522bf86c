//! Writing new messages: responses to a request, requests the proxy originates, CANCEL and
//! the ACK of a non-2xx final response, and a last-resort reply to a request that did not parse.
//!
//! Builders write into a caller's `Vec<u8>` (reuse it and nothing allocates once it has grown).
//! Header values from the template message are copied verbatim; text given by the caller is
//! checked for CR, LF and NUL so that nobody can inject a header through it.

use crate::error::{reason_phrase, WriteError};
use crate::header_name::HeaderName;
use crate::message::Message;
use crate::method::Method;
use crate::name_addr::NameAddr;
use crate::Error;

/// Most extra headers a builder holds.
pub const MAX_EXTRA_HEADERS: usize = 16;

/// A fixed-capacity list that remembers whether anything did not fit: builders never allocate,
/// and an overflow is reported when the message is written rather than dropped silently.
#[derive(Debug, Clone, Copy)]
struct Bounded<T: Copy, const N: usize> {
    items: [T; N],
    len: usize,
    overflow: bool,
}

impl<T: Copy, const N: usize> Bounded<T, N> {
    fn new(fill: T) -> Self {
        Bounded {
            items: [fill; N],
            len: 0,
            overflow: false,
        }
    }

    fn push(&mut self, item: T) {
        match self.items.get_mut(self.len) {
            Some(slot) => {
                *slot = item;
                self.len += 1;
            }
            None => self.overflow = true,
        }
    }

    fn as_slice(&self) -> &[T] {
        &self.items[..self.len]
    }

    fn overflowed(&self) -> bool {
        self.overflow
    }
}

/// Most Route headers a [`RequestBuilder`] holds.
pub const MAX_ROUTES: usize = 8;

/// Builds a response to a parsed request (RFC 3261 §8.2.6): status line, every Via, From, To
/// (with a To-tag added when asked and absent), Call-ID and CSeq copied, extra headers,
/// Content-Length.
#[derive(Debug, Clone)]
pub struct ResponseBuilder<'r> {
    req: &'r Message<'r>,
    status: u16,
    reason: Option<&'r str>,
    to_tag: Option<&'r str>,
    extra: Bounded<(&'r str, &'r str), MAX_EXTRA_HEADERS>,
    body: Option<(&'r str, &'r [u8])>,
}

impl<'r> ResponseBuilder<'r> {
    /// A response with `status` to `req`; the reason phrase defaults to the standard one.
    pub fn new(req: &'r Message<'r>, status: u16) -> Self {
        ResponseBuilder {
            req,
            status,
            reason: None,
            to_tag: None,
            extra: Bounded::new(("", "")),
            body: None,
        }
    }

    /// Sets the reason phrase.
    pub fn reason(mut self, reason: &'r str) -> Self {
        self.reason = Some(reason);
        self
    }

    /// Adds `;tag=tag` to To unless it already has a tag (never on 100 Trying).
    pub fn to_tag(mut self, tag: &'r str) -> Self {
        self.to_tag = Some(tag);
        self
    }

    /// Adds a header (e.g. `Retry-After`, `Reason`, `Contact`, `Expires`), in call order.
    pub fn header(mut self, name: &'r str, value: &'r str) -> Self {
        self.extra.push((name, value));
        self
    }

    /// Sets a body with its Content-Type.
    pub fn body(mut self, content_type: &'r str, body: &'r [u8]) -> Self {
        self.body = Some((content_type, body));
        self
    }

    /// Appends the response to `out`.
    pub fn write(&self, out: &mut Vec<u8>) -> Result<(), WriteError> {
        if !(100..=699).contains(&self.status) {
            return Err(WriteError::BadStatus(self.status));
        }
        if self.extra.overflowed() {
            return Err(WriteError::TooManyEdits {
                limit: MAX_EXTRA_HEADERS,
            });
        }
        let reason = self.reason.unwrap_or_else(|| reason_phrase(self.status));
        check_text(reason, "reason phrase", true)?;
        if let Some(tag) = self.to_tag {
            check_text(tag, "To tag", false)?;
        }
        for (name, value) in self.extra.as_slice() {
            check_name(name)?;
            check_text(value, "header value", true)?;
        }
        let req = self.req;
        let missing = |h: HeaderName| WriteError::Template(Error::MissingHeader(h.as_str()));
        let mut vias = req.headers_of(HeaderName::Via).peekable();
        if vias.peek().is_none() {
            return Err(missing(HeaderName::Via));
        }
        let from = req
            .first_value(HeaderName::From)
            .ok_or(missing(HeaderName::From))?;
        let to = req
            .first_value(HeaderName::To)
            .ok_or(missing(HeaderName::To))?;
        let call_id = req
            .first_value(HeaderName::CallId)
            .ok_or(missing(HeaderName::CallId))?;
        let cseq = req
            .first_value(HeaderName::CSeq)
            .ok_or(missing(HeaderName::CSeq))?;

        out.extend_from_slice(b"SIP/2.0 ");
        push_u32(out, u32::from(self.status));
        out.push(b' ');
        out.extend_from_slice(reason.as_bytes());
        out.extend_from_slice(b"\r\n");
        for via in vias {
            put_header(out, "Via", via.value);
        }
        put_header(out, "From", from);
        out.extend_from_slice(b"To: ");
        out.extend_from_slice(to.as_bytes());
        if let Some(tag) = self.to_tag {
            let has_tag = NameAddr::parse(to, "To")
                .map(|t| t.tag().is_some())
                .unwrap_or(false);
            if self.status > 100 && !has_tag {
                out.extend_from_slice(b";tag=");
                out.extend_from_slice(tag.as_bytes());
            }
        }
        out.extend_from_slice(b"\r\n");
        put_header(out, "Call-ID", call_id);
        put_header(out, "CSeq", cseq);
        for (name, value) in self.extra.as_slice() {
            put_header(out, name, value);
        }
        finish(out, self.body)
    }
}

/// A last-resort reply to a request that failed to parse: copies the Via, From, To, Call-ID
/// and CSeq lines found in the raw bytes (folded lines included) under a status line. Fails
/// (and the caller drops the message) when the bytes are a response, or when any of those
/// headers cannot be found.
pub fn reply_to_unparsable(
    raw: &[u8],
    status: u16,
    reason: &str,
    out: &mut Vec<u8>,
) -> Result<(), WriteError> {
    if !(100..=699).contains(&status) {
        return Err(WriteError::BadStatus(status));
    }
    check_text(reason, "reason phrase", true)?;
    let start = raw
        .iter()
        .position(|b| !matches!(b, b'\r' | b'\n'))
        .unwrap_or(raw.len());
    let raw = &raw[start..];
    if raw.len() < 4 || raw[..4].eq_ignore_ascii_case(b"SIP/") {
        return Err(WriteError::Template(Error::NotSip("a response or nothing")));
    }
    // Collect (name id, whole line) for the headers we need, in order, without allocating.
    let mut lines: [(u8, &[u8]); 24] = [(0, &[]); 24];
    let mut n = 0;
    let mut pos = match memchr::memchr(b'\n', raw) {
        Some(i) => i + 1,
        None => return Err(WriteError::Template(Error::UnterminatedHeaders)),
    };
    while pos < raw.len() && !matches!(raw[pos], b'\r' | b'\n') {
        let mut nl = memchr::memchr(b'\n', &raw[pos..]).map_or(raw.len(), |i| pos + i);
        while nl + 1 < raw.len() && matches!(raw[nl + 1], b' ' | b'\t') {
            nl = memchr::memchr(b'\n', &raw[nl + 1..]).map_or(raw.len(), |i| nl + 1 + i);
        }
        let line = &raw[pos..nl.min(raw.len())];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        // Only lines our own parser would accept are copied: a token name (trailing blanks
        // allowed) and UTF-8 text, so that the reply itself always parses.
        let usable = |colon: usize| {
            let name = trim_blanks_end(&line[..colon]);
            crate::scan::is_token_str(core::str::from_utf8(name).unwrap_or(""))
                && core::str::from_utf8(line).is_ok()
        };
        if let Some(colon) = memchr::memchr(b':', line).filter(|&c| usable(c)) {
            let name = trim_blanks_end(&line[..colon]);
            if let Some(h) = HeaderName::from_bytes(name) {
                let wanted = matches!(
                    h,
                    HeaderName::Via
                        | HeaderName::From
                        | HeaderName::To
                        | HeaderName::CallId
                        | HeaderName::CSeq
                );
                if wanted && n < lines.len() {
                    lines[n] = (h as u8, line);
                    n += 1;
                }
            }
        }
        pos = nl + 1;
    }
    for h in [
        HeaderName::Via,
        HeaderName::From,
        HeaderName::To,
        HeaderName::CallId,
        HeaderName::CSeq,
    ] {
        if !lines[..n].iter().any(|(id, _)| *id == h as u8) {
            return Err(WriteError::Template(Error::MissingHeader(h.as_str())));
        }
    }
    out.extend_from_slice(b"SIP/2.0 ");
    push_u32(out, u32::from(status));
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (_, line) in &lines[..n] {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    finish(out, None)
}

/// Builds a request the proxy originates (OPTIONS probe, REGISTER de-registration, BYE with
/// Reason, ...) with the mandatory headers of RFC 3261 §8.1.1: Via, Max-Forwards, From (with
/// tag), To, Call-ID, CSeq, plus Contact, Route and extra headers, and Content-Length.
#[derive(Debug, Clone)]
pub struct RequestBuilder<'b> {
    method: Method<'b>,
    uri: &'b str,
    via: Option<(&'b str, &'b str, &'b str)>,
    from: Option<(&'b str, &'b str)>,
    to: Option<(&'b str, Option<&'b str>)>,
    call_id: Option<&'b str>,
    cseq: Option<u32>,
    max_forwards: u32,
    contact: Option<&'b str>,
    routes: Bounded<&'b str, MAX_ROUTES>,
    extra: Bounded<(&'b str, &'b str), MAX_EXTRA_HEADERS>,
    body: Option<(&'b str, &'b [u8])>,
}

impl<'b> RequestBuilder<'b> {
    /// A request with `method` to `request_uri` (written as given).
    pub fn new(method: Method<'b>, request_uri: &'b str) -> Self {
        RequestBuilder {
            method,
            uri: request_uri,
            via: None,
            from: None,
            to: None,
            call_id: None,
            cseq: None,
            max_forwards: 70,
            contact: None,
            routes: Bounded::new(""),
            extra: Bounded::new(("", "")),
            body: None,
        }
    }

    /// The Via: `SIP/2.0/{transport} {sent_by};branch={branch}` (`branch` should start with
    /// [`crate::via::MAGIC_COOKIE`]). Add `;rport` to `branch` text if wanted.
    pub fn via(mut self, transport: &'b str, sent_by: &'b str, branch: &'b str) -> Self {
        self.via = Some((transport, sent_by, branch));
        self
    }

    /// From: a URI or name-addr (a bare URI is put in `<>`) and the mandatory tag.
    pub fn from(mut self, addr: &'b str, tag: &'b str) -> Self {
        self.from = Some((addr, tag));
        self
    }

    /// To: a URI or name-addr and an optional tag (in-dialog requests have one).
    pub fn to(mut self, addr: &'b str, tag: Option<&'b str>) -> Self {
        self.to = Some((addr, tag));
        self
    }

    /// Call-ID.
    pub fn call_id(mut self, call_id: &'b str) -> Self {
        self.call_id = Some(call_id);
        self
    }

    /// CSeq number (the method is the request's).
    pub fn cseq(mut self, seq: u32) -> Self {
        self.cseq = Some(seq);
        self
    }

    /// Max-Forwards (default 70).
    pub fn max_forwards(mut self, n: u32) -> Self {
        self.max_forwards = n;
        self
    }

    /// Contact value, written as given (e.g. `<sip:sbc@192.0.2.1:5060>` or `*`).
    pub fn contact(mut self, contact: &'b str) -> Self {
        self.contact = Some(contact);
        self
    }

    /// Appends a Route value (e.g. `<sip:core.example.com;lr>`), top first.
    pub fn route(mut self, route: &'b str) -> Self {
        self.routes.push(route);
        self
    }

    /// Adds a header (`Expires: 0`, `Reason: SIP;cause=503`, ...), in call order.
    pub fn header(mut self, name: &'b str, value: &'b str) -> Self {
        self.extra.push((name, value));
        self
    }

    /// Sets a body with its Content-Type.
    pub fn body(mut self, content_type: &'b str, body: &'b [u8]) -> Self {
        self.body = Some((content_type, body));
        self
    }

    /// Appends the request to `out`.
    pub fn write(&self, out: &mut Vec<u8>) -> Result<(), WriteError> {
        if self.extra.overflowed() || self.routes.overflowed() {
            return Err(WriteError::TooManyEdits {
                limit: MAX_EXTRA_HEADERS.max(MAX_ROUTES),
            });
        }
        let (transport, sent_by, branch) = self.via.ok_or(WriteError::Missing("Via"))?;
        let (from, from_tag) = self.from.ok_or(WriteError::Missing("From"))?;
        let (to, to_tag) = self.to.ok_or(WriteError::Missing("To"))?;
        let call_id = self.call_id.ok_or(WriteError::Missing("Call-ID"))?;
        let cseq = self.cseq.ok_or(WriteError::Missing("CSeq"))?;
        let method = self.method.as_str();
        if !crate::scan::is_token_str(method) {
            return Err(WriteError::InvalidText { what: "method" });
        }
        for (text, what) in [
            (self.uri, "Request-URI"),
            (transport, "Via transport"),
            (sent_by, "Via sent-by"),
            (branch, "Via branch"),
            (from, "From"),
            (from_tag, "From tag"),
            (to, "To"),
            (call_id, "Call-ID"),
        ] {
            check_text(text, what, false)?;
        }
        if let Some(tag) = to_tag {
            check_text(tag, "To tag", false)?;
        }
        if let Some(c) = self.contact {
            check_text(c, "Contact", false)?;
        }
        for r in self.routes.as_slice() {
            check_text(r, "Route", false)?;
        }
        for (name, value) in self.extra.as_slice() {
            check_name(name)?;
            check_text(value, "header value", true)?;
        }

        out.extend_from_slice(method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.uri.as_bytes());
        out.extend_from_slice(b" SIP/2.0\r\nVia: SIP/2.0/");
        out.extend_from_slice(transport.as_bytes());
        out.push(b' ');
        out.extend_from_slice(sent_by.as_bytes());
        out.extend_from_slice(b";branch=");
        out.extend_from_slice(branch.as_bytes());
        out.extend_from_slice(b"\r\nMax-Forwards: ");
        push_u32(out, self.max_forwards);
        out.extend_from_slice(b"\r\n");
        for r in self.routes.as_slice() {
            put_header(out, "Route", r);
        }
        out.extend_from_slice(b"From: ");
        push_addr(out, from);
        out.extend_from_slice(b";tag=");
        out.extend_from_slice(from_tag.as_bytes());
        out.extend_from_slice(b"\r\nTo: ");
        push_addr(out, to);
        if let Some(tag) = to_tag {
            out.extend_from_slice(b";tag=");
            out.extend_from_slice(tag.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        put_header(out, "Call-ID", call_id);
        out.extend_from_slice(b"CSeq: ");
        push_u32(out, cseq);
        out.push(b' ');
        out.extend_from_slice(method.as_bytes());
        out.extend_from_slice(b"\r\n");
        if let Some(c) = self.contact {
            put_header(out, "Contact", c);
        }
        for (name, value) in self.extra.as_slice() {
            put_header(out, name, value);
        }
        finish(out, self.body)
    }
}

/// Writes the CANCEL for a pending INVITE the proxy forwarded (RFC 3261 §9.1): same
/// Request-URI, top Via only, Route headers, From, To, Call-ID, CSeq number with method CANCEL.
/// Pass the INVITE *as the proxy sent it*.
pub fn cancel_for(invite: &Message<'_>, out: &mut Vec<u8>) -> Result<(), WriteError> {
    in_transaction_request(invite, None, "CANCEL", out)
}

/// Writes the ACK for a non-2xx final response to an INVITE the proxy sent (RFC 3261
/// §17.1.1.3): same Request-URI, top Via only, Route headers, From, Call-ID, CSeq number with
/// method ACK, and the To of the response (with its tag).
pub fn ack_for_non_2xx(
    invite: &Message<'_>,
    response: &Message<'_>,
    out: &mut Vec<u8>,
) -> Result<(), WriteError> {
    in_transaction_request(invite, Some(response), "ACK", out)
}

fn in_transaction_request(
    invite: &Message<'_>,
    response: Option<&Message<'_>>,
    method: &str,
    out: &mut Vec<u8>,
) -> Result<(), WriteError> {
    let uri = invite
        .request_uri()
        .ok_or(WriteError::Template(Error::NotSip("not a request")))?;
    let via = invite.top_via().map_err(WriteError::Template)?;
    let cseq = invite.cseq().map_err(WriteError::Template)?;
    let missing = |h: HeaderName| WriteError::Template(Error::MissingHeader(h.as_str()));
    let from = invite
        .first_value(HeaderName::From)
        .ok_or(missing(HeaderName::From))?;
    let to_source = response.unwrap_or(invite);
    let to = to_source
        .first_value(HeaderName::To)
        .ok_or(missing(HeaderName::To))?;
    let call_id = invite
        .first_value(HeaderName::CallId)
        .ok_or(missing(HeaderName::CallId))?;

    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(uri.as_str().as_bytes());
    out.extend_from_slice(b" SIP/2.0\r\n");
    put_header(out, "Via", via.raw());
    out.extend_from_slice(b"Max-Forwards: 70\r\n");
    for route in invite.headers_of(HeaderName::Route) {
        put_header(out, "Route", route.value);
    }
    put_header(out, "From", from);
    put_header(out, "To", to);
    put_header(out, "Call-ID", call_id);
    out.extend_from_slice(b"CSeq: ");
    push_u32(out, cseq.seq);
    out.push(b' ');
    out.extend_from_slice(method.as_bytes());
    out.extend_from_slice(b"\r\n");
    finish(out, None)
}

/// Strips trailing SP and HT (what may separate a header name from its colon).
fn trim_blanks_end(b: &[u8]) -> &[u8] {
    let end = b
        .iter()
        .rposition(|c| !matches!(c, b' ' | b'\t'))
        .map_or(0, |i| i + 1);
    &b[..end]
}

fn put_header(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Writes a URI or name-addr, putting a bare URI in `<>` so that the tag parameter that
/// follows belongs to the header.
fn push_addr(out: &mut Vec<u8>, addr: &str) {
    if addr.contains('<') {
        out.extend_from_slice(addr.as_bytes());
    } else {
        out.push(b'<');
        out.extend_from_slice(addr.as_bytes());
        out.push(b'>');
    }
}

/// Content-Type and Content-Length, the empty line, the body.
fn finish(out: &mut Vec<u8>, body: Option<(&str, &[u8])>) -> Result<(), WriteError> {
    let body = match body {
        Some((ct, body)) => {
            check_text(ct, "Content-Type", false)?;
            put_header(out, "Content-Type", ct);
            body
        }
        None => &[],
    };
    out.extend_from_slice(b"Content-Length: ");
    push_u32(out, u32::try_from(body.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
    Ok(())
}

/// Appends a decimal number without allocating.
pub(crate) fn push_u32(out: &mut Vec<u8>, n: u32) {
    let mut digits = [0u8; 10];
    out.extend_from_slice(format_u32(n, &mut digits));
}

/// Formats `n` into `buf`, returning the digits.
pub(crate) fn format_u32(mut n: u32, buf: &mut [u8; 10]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Refuses text that would break the message: CR, LF, NUL; empty unless `empty_ok`.
pub(crate) fn check_text(s: &str, what: &'static str, empty_ok: bool) -> Result<(), WriteError> {
    // One vector search for the three bytes instead of a test per byte: values are long
    // (Via lines, Record-Route URIs with route tokens).
    if (!empty_ok && s.is_empty()) || memchr::memchr3(b'\r', b'\n', 0, s.as_bytes()).is_some() {
        return Err(WriteError::InvalidText { what });
    }
    Ok(())
}

/// A header name must be a token.
pub(crate) fn check_name(s: &str) -> Result<(), WriteError> {
    if !crate::scan::is_token_str(s) {
        return Err(WriteError::InvalidText {
            what: "header name",
        });
    }
    Ok(())
}
