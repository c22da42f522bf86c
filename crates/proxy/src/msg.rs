//! The proxy's view of SIP messages: the workspace `sip` crate's parse, with the few readings
//! the routing code wants on top.
//!
//! `sip` tokenises, validates (zero-copy, with its limits and its judgement of what is
//! malformed) and gives typed access (Via, name-addr, URI, CSeq, ...). This module adds no
//! parsing of its own: [`Message`] only answers in the shape the engine asks (`Option` where a
//! validated message cannot fail, the method of a response from its CSeq), [`aor_of`] is
//! `sip`'s address-of-record key, and [`Draft`] is an owned message for the few the proxy
//! builds line by line (relayed REGISTER answers with rewritten Contact, de-registrations).
//!
//! Nothing here panics on any input: malformed input is an `Err`.

use sip::{HeaderName, Method};

/// Why a message was refused: the `sip` crate's judgement.
pub type ParseError = sip::Error;

/// A parsed and validated message that borrows the received bytes.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    /// The `sip` crate's view: every reading goes through it.
    pub sip: sip::Message<'a>,
    /// Its mandatory headers, parsed once (the engine reads the tags and the top Via of one
    /// message many times); `None` only in a [`Message::blank`] not (successfully) parsed into.
    parts: Option<sip::Mandatory<'a>>,
    /// The Route, Record-Route and Contact addresses validation parsed, kept when few (the
    /// engine reads them again to route, record and answer).
    routes: Kept<'a>,
    record_routes: Kept<'a>,
    contacts: Kept<'a>,
}

/// How many entries of one header a message keeps parsed.
const KEPT: usize = 4;

/// Up to [`KEPT`] parsed entries of one header, and how many there were: all of them when
/// that is at most `KEPT`, otherwise they are parsed again when read.
#[derive(Debug, Clone, Copy, Default)]
struct Kept<'a> {
    entries: [Option<sip::NameAddr<'a>>; KEPT],
    seen: usize,
    /// False until validation handed its entries over (a stored copy is not validated).
    filled: bool,
}

impl<'a> Kept<'a> {
    /// Empty, and not filled (the entries left behind are never read).
    fn clear(&mut self) {
        self.seen = 0;
        self.filled = false;
    }

    fn push(&mut self, entry: &sip::NameAddr<'a>) {
        if let Some(slot) = self.entries.get_mut(self.seen) {
            *slot = Some(*entry);
        }
        self.seen += 1;
    }

    /// Every entry, when all are kept.
    fn all(&self) -> Option<&[Option<sip::NameAddr<'a>>]> {
        (self.filled && self.seen <= KEPT).then(|| &self.entries[..self.seen])
    }
}

/// The entries of one header: those validation kept, or (when it did not keep them all) the
/// header parsed again. One or the other, so the parse is not even set up when it is not
/// needed (a chain of both set it up for every reading).
enum Entries<K, P> {
    Kept(K),
    Parsed(P),
}

impl<'a, K, P> Iterator for Entries<K, P>
where
    K: Iterator<Item = sip::NameAddr<'a>>,
    P: Iterator<Item = sip::NameAddr<'a>>,
{
    type Item = sip::NameAddr<'a>;

    fn next(&mut self) -> Option<sip::NameAddr<'a>> {
        match self {
            Entries::Kept(kept) => kept.next(),
            Entries::Parsed(parsed) => parsed.next(),
        }
    }
}

impl<'a> Message<'a> {
    /// Reads a datagram.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ParseError> {
        Self::parse_with(bytes, sip::Framing::Datagram)
    }

    /// Reads a message with the framing of its transport, and checks what the proxy relies on
    /// (`sip::Message::validate`: the mandatory headers present once and readable).
    pub fn parse_with(bytes: &'a [u8], framing: sip::Framing) -> Result<Self, ParseError> {
        let mut message = Message {
            sip: sip::Message::parse_with(bytes, &sip::Limits::default(), framing)?,
            ..Message::blank()
        };
        message.validate()?;
        Ok(message)
    }

    /// Validates the parsed `sip`, keeping its mandatory headers and the few Route,
    /// Record-Route and Contact entries it parsed on the way.
    fn validate(&mut self) -> Result<(), ParseError> {
        // Filled where they are kept: a few kilobytes of entries are not moved around.
        for kept in [
            &mut self.routes,
            &mut self.record_routes,
            &mut self.contacts,
        ] {
            kept.clear();
        }
        let (routes, record_routes, contacts) = (
            &mut self.routes,
            &mut self.record_routes,
            &mut self.contacts,
        );
        self.sip
            .validate_mandatory_into(&mut self.parts, |name, entry| match name {
                HeaderName::Route => routes.push(entry),
                HeaderName::RecordRoute => record_routes.push(entry),
                _ => contacts.push(entry),
            })?;
        for kept in [
            &mut self.routes,
            &mut self.record_routes,
            &mut self.contacts,
        ] {
            kept.filled = true;
        }
        Ok(())
    }

    /// A place to parse received messages into ([`Message::parse_into`]).
    pub fn blank() -> Message<'static> {
        Message {
            sip: sip::Message::blank(),
            parts: None,
            routes: Kept::default(),
            record_routes: Kept::default(),
            contacts: Kept::default(),
        }
    }

    /// As [`Message::parse_with`], into `self` (what it held is forgotten): the engine parses
    /// every datagram where it is read, instead of moving a kilobyte-sized message around.
    pub fn parse_into(&mut self, bytes: &'a [u8], framing: sip::Framing) -> Result<(), ParseError> {
        self.parts = None;
        for kept in [
            &mut self.routes,
            &mut self.record_routes,
            &mut self.contacts,
        ] {
            kept.clear();
        }
        self.sip
            .parse_into(bytes, &sip::Limits::default(), framing)?;
        self.validate()
    }

    /// Reads a message this box validated when it came (a transaction's copy of its
    /// request): parsed again, not checked again.
    pub fn stored(bytes: &'a [u8]) -> Result<Self, ParseError> {
        let sip = sip::Message::parse_with(bytes, &sip::Limits::default(), sip::Framing::Datagram)?;
        let parts = Some(sip.mandatory()?);
        Ok(Message {
            sip,
            parts,
            ..Message::blank()
        })
    }

    /// Whether it is a request.
    pub fn is_request(&self) -> bool {
        self.sip.is_request()
    }

    /// The method of a request, or of the CSeq of a response. Methods are case-sensitive
    /// (RFC 3261 §7.1), but the proxy has always treated `invite` as INVITE: a known method in
    /// another case is read as that method.
    pub fn method(&self) -> Method<'a> {
        let method = self
            .sip
            .method()
            .or(self.parts.as_ref().map(|p| p.cseq.method))
            .unwrap_or(Method::Other(""));
        known_in_any_case(method)
    }

    /// The request URI as written.
    pub fn request_uri(&self) -> Option<&'a str> {
        self.sip.request_uri().map(|u| u.as_str())
    }

    /// The status code of a response.
    pub fn code(&self) -> Option<u16> {
        self.sip.status()
    }

    /// The first value of header `name` (any form of the name), as written.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.sip.header(name)
    }

    /// Every element of the known list header `name` (comma lists split), as written; for
    /// tests and cold paths (it collects).
    pub fn list(&self, name: &str) -> Vec<&'a str> {
        match HeaderName::parse(name) {
            Some(known) => self.sip.list_items(known).map(|(_, item)| item).collect(),
            None => self.sip.headers_named(name).map(|h| h.value).collect(),
        }
    }

    /// The topmost Via.
    pub fn top_via(&self) -> Option<&sip::Via<'a>> {
        self.parts.as_ref().map(|p| &p.top_via)
    }

    /// Every Via, top first.
    pub fn vias(&self) -> impl Iterator<Item = sip::Via<'a>> + '_ {
        self.sip.vias().filter_map(Result::ok)
    }

    /// The Call-ID.
    pub fn call_id(&self) -> Option<&'a str> {
        self.parts.as_ref().map(|p| p.call_id)
    }

    /// The CSeq number.
    pub fn cseq(&self) -> Option<u32> {
        self.parts.as_ref().map(|p| p.cseq.seq)
    }

    /// The From header.
    pub fn from(&self) -> Option<sip::NameAddr<'a>> {
        self.parts.as_ref().map(|p| p.from)
    }

    /// The To header.
    pub fn to(&self) -> Option<sip::NameAddr<'a>> {
        self.parts.as_ref().map(|p| p.to)
    }

    /// The From tag.
    pub fn from_tag(&self) -> Option<&'a str> {
        self.parts.as_ref()?.from.tag()
    }

    /// The To tag.
    pub fn to_tag(&self) -> Option<&'a str> {
        self.parts.as_ref()?.to.tag()
    }

    /// Every Route entry, top first (a validated message has only readable ones).
    pub fn routes(&self) -> impl Iterator<Item = sip::NameAddr<'a>> + '_ {
        match self.routes.all() {
            Some(kept) => Entries::Kept(kept.iter().flatten().copied()),
            None => Entries::Parsed(self.sip.routes().filter_map(Result::ok)),
        }
    }

    /// Every Route entry, top first, read in place: `None` unless validation kept them all
    /// (then [`Message::routes`] parses them).
    pub fn kept_routes(&self) -> Option<impl Iterator<Item = &sip::NameAddr<'a>> + '_> {
        self.routes.all().map(|all| all.iter().flatten())
    }

    /// Every Record-Route entry, top first.
    pub fn record_routes(&self) -> impl Iterator<Item = sip::NameAddr<'a>> + '_ {
        match self.record_routes.all() {
            Some(kept) => Entries::Kept(kept.iter().flatten().copied()),
            None => Entries::Parsed(self.sip.record_routes().filter_map(Result::ok)),
        }
    }

    /// Every Contact address (the wildcard left out), in order.
    pub fn contacts(&self) -> impl Iterator<Item = sip::NameAddr<'a>> + '_ {
        match self.contacts.all() {
            Some(kept) => Entries::Kept(kept.iter().flatten().copied()),
            None => Entries::Parsed(
                self.sip
                    .contacts()
                    .filter_map(|c| c.ok().and_then(|c| c.addr().copied())),
            ),
        }
    }

    /// Whether a Contact is `*`.
    pub fn has_wildcard_contact(&self) -> bool {
        self.sip
            .contacts()
            .any(|c| c.is_ok_and(|c| c.is_wildcard()))
    }

    /// The URI of the first Contact.
    pub fn first_contact_uri(&self) -> Option<&'a str> {
        self.contacts().next().map(|c| c.uri().as_str())
    }

    /// Max-Forwards, if present and readable.
    pub fn max_forwards(&self) -> Option<u32> {
        self.sip.max_forwards().ok().flatten()
    }

    /// Expires header, if present and readable.
    pub fn expires(&self) -> Option<u32> {
        self.sip.expires().ok().flatten()
    }

    /// Retry-After seconds, if present and readable.
    pub fn retry_after(&self) -> Option<u32> {
        self.sip.retry_after().ok().flatten().map(|r| r.seconds)
    }

    /// The body.
    pub fn body(&self) -> &'a [u8] {
        self.sip.body()
    }

    /// Makes an editable copy (folded values unfolded).
    pub fn to_draft(&self) -> Draft {
        let start = match *self.sip.start_line() {
            sip::StartLine::Request { method, uri } => format!("{method} {uri} SIP/2.0"),
            sip::StartLine::Response { status, reason } => format!("SIP/2.0 {status} {reason}"),
        };
        // Room for the lines the proxy adds (Via, Record-Route) without regrowing.
        let mut headers = Vec::with_capacity(self.sip.header_count() + 4);
        headers.extend(
            self.sip
                .headers()
                .map(|h| (h.name.to_owned(), unfolded(&h))),
        );
        Draft {
            start,
            headers,
            body: self.body().to_vec(),
        }
    }
}

/// A header value with folding undone (RFC 3261 §7.3.1).
fn unfolded(h: &sip::Header<'_>) -> String {
    if h.is_folded() {
        h.value_pieces().collect::<Vec<_>>().join(" ")
    } else {
        h.value.to_owned()
    }
}

/// `method` as a known method when it is one in another case.
fn known_in_any_case(method: Method<'_>) -> Method<'_> {
    const KNOWN: [Method<'static>; 14] = [
        Method::Invite,
        Method::Ack,
        Method::Bye,
        Method::Cancel,
        Method::Register,
        Method::Options,
        Method::Subscribe,
        Method::Notify,
        Method::Refer,
        Method::Message,
        Method::Info,
        Method::Prack,
        Method::Update,
        Method::Publish,
    ];
    match method {
        Method::Other(token) => KNOWN
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(token))
            .unwrap_or(method),
        known => known,
    }
}

/// Whether header `name` (as written) is `wanted` (long form, any case; compact forms too).
pub fn name_is(name: &str, wanted: &str) -> bool {
    name.eq_ignore_ascii_case(wanted)
        || (name.len() == 1
            && HeaderName::parse(name).is_some_and(|n| n.as_str().eq_ignore_ascii_case(wanted)))
}

/// The address-of-record key of a URI: `sip`'s canonical form, `scheme:user@host` with
/// scheme and host lower-cased and the user %-decoded ([`sip::Uri::aor_key`]), so two URIs
/// have the same key exactly when [`sip::Uri::aor_eq`] calls them equal. Text that is not a
/// URI is its own key.
pub fn aor_of(uri: &str) -> String {
    match sip::Uri::parse(uri) {
        Ok(u) => u.aor_key(),
        Err(_) => uri.to_owned(),
    }
}

/// A message the proxy writes line by line: requests it originates (probe, BYE of the guard,
/// de-registrations) and a relayed REGISTER answer whose Contact values the drain rewrites.
/// Serialising recomputes Content-Length; header values that were not touched keep their text.
/// Forwarded requests and relayed responses never go through it: they are edited in place with
/// `sip::Editor`.
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
        let items: Vec<String> = sip::values::list_items(&self.headers[at].1)
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
    let out = Vec::with_capacity(response_room(request, extra));
    response_into(request, code, to_tag, extra, out)
}

/// Room for [`response_to`]'s answer: all of the request's head and the extras, so it is
/// written without regrowing.
pub fn response_room(request: &Message<'_>, extra: &[(&str, String)]) -> usize {
    let extra_len: usize = extra.iter().map(|(n, v)| n.len() + v.len() + 4).sum();
    request.sip.head().len() + extra_len + 32
}

/// [`response_to`], written into `out` (emptied first).
pub fn response_into(
    request: &Message<'_>,
    code: u16,
    to_tag: Option<&str>,
    extra: &[(&str, String)],
    mut out: Vec<u8>,
) -> Vec<u8> {
    out.clear();
    // The reason phrase is the builder's, `sip::error::reason_phrase`.
    let mut builder = sip::ResponseBuilder::new(&request.sip, code);
    if let Some(tag) = to_tag {
        builder = builder.to_tag(tag);
    }
    for (name, value) in extra {
        builder = builder.header(name, value);
    }
    // A response holds a few of the request's lines and the extra ones: the caller made room
    // for all of the request's head and the extras.
    out.reserve(response_room(request, extra));
    if builder.write(&mut out).is_ok() {
        return out;
    }
    // The builder refused (a value it will not write); build it here instead.
    let reason = sip::error::reason_phrase(code);
    let mut draft = Draft::new(format!("SIP/2.0 {code} {reason}"));
    for via in request.sip.headers_of(HeaderName::Via) {
        draft.push("Via", via.value);
    }
    let to_needs_tag = code > 100 && request.to_tag().is_none();
    for name in [
        HeaderName::From,
        HeaderName::To,
        HeaderName::CallId,
        HeaderName::CSeq,
    ] {
        if let Some(value) = request.sip.headers_of(name).next().map(|h| h.value) {
            let mut value = value.to_owned();
            if let (HeaderName::To, Some(tag), true) = (name, to_tag, to_needs_tag) {
                value.push_str(";tag=");
                value.push_str(tag);
            }
            draft.push(name.as_str(), value);
        }
    }
    for (name, value) in extra {
        draft.push(name, value.clone());
    }
    draft.to_bytes()
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
        assert_eq!(m.method(), Method::Invite);
        assert_eq!(m.vias().count(), 2);
        let via = m.top_via().unwrap();
        assert_eq!(
            (via.host().as_str(), via.port(), via.branch()),
            ("192.0.2.1", Some(5060), Some("z9hG4bK1"))
        );
        assert_eq!(m.vias().nth(1).unwrap().host().as_str(), "2001:db8::1");
        assert_eq!(m.from_tag(), Some("a1"));
        assert_eq!(m.to_tag(), None);
        assert_eq!(m.to_draft().get("subject"), Some("folded line"));
        assert_eq!(m.body(), b"body");
        assert_eq!(m.cseq(), Some(1));
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
        d.prepend("Via", "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx");
        d.set("Max-Forwards", "69");
        let bytes = d.to_bytes();
        let again = Message::parse(&bytes).unwrap();
        assert_eq!(again.request_uri(), Some("sip:bob@example.com"));
        assert_eq!(again.vias().count(), 3);
        assert_eq!(again.top_via().unwrap().host().as_str(), "10.0.0.1");
        assert_eq!(again.body(), b"body");
        assert_eq!(again.max_forwards(), Some(69));
    }

    #[test]
    fn aor_keys_are_sips() {
        assert_eq!(
            aor_of("sip:alice:pw@Example.COM:5070;transport=tcp?x=y"),
            "sip:alice@example.com"
        );
        assert_eq!(aor_of("sip:%61lice@example.com"), "sip:alice@example.com");
        assert_eq!(aor_of("not a uri"), "not a uri");
    }

    #[test]
    fn lower_case_methods_read_as_known() {
        let raw = INVITE
            .replacen("INVITE sip", "invite sip", 1)
            .replacen("1 INVITE", "1 invite", 1);
        let m = Message::parse(raw.as_bytes()).unwrap();
        assert_eq!(m.method(), Method::Invite);
    }
}
