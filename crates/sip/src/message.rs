//! A parsed SIP message: the start line, a fixed table of header spans, and the body.
//!
//! Parsing does one pass over the header section, recording where each header's name and value
//! are; it decodes only what framing needs (the start line and Content-Length). Everything else
//! is parsed when asked for, from the borrowed bytes, without allocating.

use crate::header_name::{HeaderName, KNOWN_NAMES};
use crate::limits::{Framing, Limits, MAX_HEADERS};
use crate::method::Method;
use crate::name_addr::{Contact, NameAddr};
use crate::scan::{is_token, is_token_str, parse_u32, trim, ListItems};
use crate::uri::{Scheme, Uri};
use crate::values::{CSeq, Reason, ResourcePriority, RetryAfter};
use crate::via::Via;
use crate::Error;

/// Position of a header line in a message (0 = first header line), stable for the message's
/// lifetime; the [`crate::Editor`] addresses headers with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HeaderIndex(pub(crate) u16);

impl HeaderIndex {
    /// The position as a number.
    pub fn get(self) -> usize {
        usize::from(self.0)
    }
}

/// Marker for header names the crate does not know.
pub(crate) const UNKNOWN: u8 = u8::MAX;

/// Where one header line lies in the buffer. Offsets are from the start of the buffer; 16 bits
/// are enough because a message is at most [`crate::limits::MAX_MESSAGE_BYTES`] long, and they
/// halve the table a `Message` carries around.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Slot {
    /// Start of the name (= start of the line).
    pub(crate) line_start: u16,
    pub(crate) name_end: u16,
    pub(crate) value_start: u16,
    pub(crate) value_end: u16,
    /// Just after the line's final line ending.
    pub(crate) line_end: u16,
    /// `HeaderName as u8`, or `UNKNOWN`.
    pub(crate) id: u8,
    /// Whether the value holds a comma: without one it is one list element (the header pass
    /// finds it on its way to the line's end).
    pub(crate) comma: bool,
}

/// The first line of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartLine<'a> {
    /// `METHOD Request-URI SIP/2.0`
    Request {
        /// Method.
        method: Method<'a>,
        /// Request-URI.
        uri: Uri<'a>,
    },
    /// `SIP/2.0 code reason`
    Response {
        /// Status code (100..=699).
        status: u16,
        /// Reason phrase (may be empty).
        reason: &'a str,
    },
}

/// One header line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    /// Position in the message.
    pub index: HeaderIndex,
    /// The name as written (`v`, `VIA`, `Via`...).
    pub name: &'a str,
    /// The name, when the crate knows it (compact forms resolved).
    pub known: Option<HeaderName>,
    /// The value as written, trimmed; a folded value keeps its CRLF and leading whitespace
    /// (see [`Header::value_pieces`]).
    pub value: &'a str,
}

impl<'a> Header<'a> {
    /// The value's line pieces with folding removed: join them with a single space to get the
    /// unfolded value (RFC 3261 §7.3.1). One piece for an unfolded value.
    pub fn value_pieces(&self) -> impl Iterator<Item = &'a str> + 'a {
        self.value.split('\n').map(trim).filter(|p| !p.is_empty())
    }

    /// True when the value was folded over several lines.
    pub fn is_folded(&self) -> bool {
        self.value.contains('\n')
    }
}

/// The headers every request and response carries (RFC 3261 §8.1.1), parsed: what
/// [`Message::validate_mandatory`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mandatory<'a> {
    /// The topmost Via hop.
    pub top_via: Via<'a>,
    /// From.
    pub from: NameAddr<'a>,
    /// To.
    pub to: NameAddr<'a>,
    /// Call-ID.
    pub call_id: &'a str,
    /// CSeq.
    pub cseq: CSeq<'a>,
}

/// A parsed SIP message borrowing the received bytes.
///
/// Holds a fixed-capacity header table (no heap). Typed accessors parse on demand and return
/// `Err` for a malformed or missing header; [`Message::validate`] runs the checks a proxy
/// needs before acting on a request.
#[derive(Clone)]
pub struct Message<'a> {
    /// The message bytes (datagram surplus beyond Content-Length excluded).
    pub(crate) buf: &'a [u8],
    /// The start line and header section as text (up to and including the empty line).
    pub(crate) head: &'a str,
    pub(crate) start: StartLine<'a>,
    pub(crate) start_line_end: u32,
    pub(crate) slots: [Slot; MAX_HEADERS],
    pub(crate) count: u16,
    /// Per known header name: 1 + index of its first line (0 = absent), and how many lines.
    pub(crate) first: [u8; KNOWN_NAMES],
    pub(crate) counts: [u8; KNOWN_NAMES],
    pub(crate) body_start: u32,
    pub(crate) content_length: Option<u32>,
    pub(crate) max_via_hops: u16,
}

impl core::fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Message")
            .field("start", &self.start)
            .field("headers", &self.count)
            .field("body_len", &self.body().len())
            .finish()
    }
}

impl<'a> Message<'a> {
    /// Parses a datagram with the default [`Limits`].
    pub fn parse(buf: &'a [u8]) -> Result<Message<'a>, Error> {
        Message::parse_with(buf, &Limits::default(), Framing::Datagram)
    }

    /// Parses one message with explicit limits and framing.
    ///
    /// With [`Framing::Datagram`] bytes after Content-Length are ignored (RFC 3261 §18.3); with
    /// [`Framing::Stream`] give exactly the bytes [`crate::framing::next_frame`] delimited.
    pub fn parse_with(
        buf: &'a [u8],
        limits: &Limits,
        framing: Framing,
    ) -> Result<Message<'a>, Error> {
        crate::parse::parse(buf, limits, framing)
    }

    /// Parses one message into `self` (what it held before is forgotten), as
    /// [`Message::parse_with`] does, without moving a parsed `Message` (about a kilobyte) to
    /// where it is used: a caller that parses every datagram keeps one in place.
    pub fn parse_into(
        &mut self,
        buf: &'a [u8],
        limits: &Limits,
        framing: Framing,
    ) -> Result<(), Error> {
        let parsed = crate::parse::parse_into(self, buf, limits, framing);
        if parsed.is_err() {
            self.reset(0);
        }
        parsed
    }

    /// A message with no start line and no headers: a place for [`Message::parse_into`].
    pub fn blank() -> Message<'static> {
        Message::empty(&[], 0)
    }

    /// Forgets the header table (the slots past `count` are never read) before a parse.
    pub(crate) fn reset(&mut self, max_via_hops: u16) {
        self.buf = &[];
        self.head = "";
        self.start = StartLine::Response {
            status: 0,
            reason: "",
        };
        self.start_line_end = 0;
        self.count = 0;
        self.first = [0; KNOWN_NAMES];
        self.counts = [0; KNOWN_NAMES];
        self.body_start = 0;
        self.content_length = None;
        self.max_via_hops = max_via_hops;
    }

    /// A message with no start line and no headers yet, for the parser to fill in place (a
    /// `Message` is about a kilobyte: building it where it will live saves copies).
    pub(crate) fn empty(buf: &'a [u8], max_via_hops: u16) -> Self {
        Message {
            buf,
            head: "",
            start: StartLine::Response {
                status: 0,
                reason: "",
            },
            start_line_end: 0,
            slots: [Slot::default(); MAX_HEADERS],
            count: 0,
            first: [0; KNOWN_NAMES],
            counts: [0; KNOWN_NAMES],
            body_start: 0,
            content_length: None,
            max_via_hops,
        }
    }

    /// The message bytes as received (surplus after Content-Length excluded).
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// The start line and header section as text, up to and including the empty line.
    pub fn head(&self) -> &'a str {
        self.head
    }

    /// The parsed start line.
    pub fn start_line(&self) -> &StartLine<'a> {
        &self.start
    }

    /// True for requests.
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// True for responses.
    pub fn is_response(&self) -> bool {
        !self.is_request()
    }

    /// The request method (`None` for responses).
    pub fn method(&self) -> Option<Method<'a>> {
        match self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// The Request-URI (`None` for responses).
    pub fn request_uri(&self) -> Option<Uri<'a>> {
        match self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    /// The status code (`None` for requests).
    pub fn status(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { status, .. } => Some(status),
            StartLine::Request { .. } => None,
        }
    }

    /// The reason phrase (`None` for requests).
    pub fn reason_phrase(&self) -> Option<&'a str> {
        match self.start {
            StartLine::Response { reason, .. } => Some(reason),
            StartLine::Request { .. } => None,
        }
    }

    /// The body (empty when there is none).
    pub fn body(&self) -> &'a [u8] {
        self.buf.get(self.body_start as usize..).unwrap_or(&[])
    }

    /// The Content-Length value, when the header is present (checked while parsing).
    pub fn content_length(&self) -> Option<u32> {
        self.content_length
    }

    /// The Content-Type value, as written.
    pub fn content_type(&self) -> Option<&'a str> {
        self.first(HeaderName::ContentType).map(|h| h.value)
    }

    /// Number of header lines.
    pub fn header_count(&self) -> usize {
        usize::from(self.count)
    }

    /// Every header line, in order.
    pub fn headers(&self) -> Headers<'_, 'a> {
        Headers {
            msg: self,
            next: 0,
            filter: Filter::All,
        }
    }

    /// The header at `index`.
    pub fn header_at(&self, index: HeaderIndex) -> Option<Header<'a>> {
        let slot = self
            .slots
            .get(index.get())
            .filter(|_| index.0 < self.count)?;
        Some(self.header_of(index.0, slot))
    }

    /// Every header line called `name` (case-insensitive; long and compact forms are the same
    /// header when the crate knows the name).
    pub fn headers_named<'m>(&'m self, name: &'m str) -> Headers<'m, 'a> {
        match HeaderName::parse(name) {
            Some(known) => self.headers_of(known),
            None => Headers {
                msg: self,
                next: 0,
                filter: Filter::Name(name),
            },
        }
    }

    /// Every header line with a known name.
    pub fn headers_of(&self, name: HeaderName) -> Headers<'_, 'a> {
        // Start at the first line with that name; past the end when there is none.
        let next = match self.first[name as usize] {
            0 => self.count,
            f => u16::from(f) - 1,
        };
        Headers {
            msg: self,
            next,
            filter: Filter::Known(name as u8, self.counts[name as usize]),
        }
    }

    /// The position of the first header line with a known name: where an editor inserts
    /// above it, without walking to it.
    pub fn first_index(&self, name: HeaderName) -> Option<HeaderIndex> {
        match self.first[name as usize] {
            0 => None,
            f => Some(HeaderIndex(u16::from(f) - 1)),
        }
    }

    /// The value of the first header line with a known name, as written (trimmed).
    pub(crate) fn first_value(&self, name: HeaderName) -> Option<&'a str> {
        let f = usize::from(self.first[name as usize]).checked_sub(1)?;
        let s = self.slots.get(f)?;
        Some(
            self.head
                .get(s.value_start as usize..s.value_end as usize)
                .unwrap_or(""),
        )
    }

    /// How many header lines carry this known name.
    pub fn count_of(&self, name: HeaderName) -> usize {
        usize::from(self.counts[name as usize])
    }

    /// The value of the first header called `name` (see [`Message::headers_named`]).
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers_named(name).next().map(|h| h.value)
    }

    /// The comma-separated elements of every `name` header, in order, with the header each
    /// comes from. Quoted strings and `<...>` do not split.
    pub fn list_items(&self, name: HeaderName) -> ListIter<'_, 'a> {
        // Start at the first line with that name; past the end when there is none.
        let next = match self.first[name as usize] {
            0 => self.count,
            f => u16::from(f) - 1,
        };
        ListIter {
            msg: self,
            next,
            id: name as u8,
            left: self.counts[name as usize],
            current: None,
        }
    }

    /// Every Via hop, top first, comma-joined values split. Stops with
    /// [`Error::TooManyVias`] past the limit.
    pub fn vias(&self) -> Parsed<'_, 'a, Via<'a>> {
        Parsed {
            items: self.list_items(HeaderName::Via),
            parse: Via::parse,
            left: usize::from(self.max_via_hops),
            limit: usize::from(self.max_via_hops),
            done: false,
        }
    }

    /// The topmost Via hop.
    pub fn top_via(&self) -> Result<Via<'a>, Error> {
        self.vias()
            .next()
            .unwrap_or(Err(Error::MissingHeader("Via")))
    }

    /// The From header.
    pub fn from_header(&self) -> Result<NameAddr<'a>, Error> {
        NameAddr::parse(self.single(HeaderName::From)?, "From")
    }

    /// The To header.
    pub fn to_header(&self) -> Result<NameAddr<'a>, Error> {
        NameAddr::parse(self.single(HeaderName::To)?, "To")
    }

    /// The Call-ID.
    pub fn call_id(&self) -> Result<&'a str, Error> {
        let v = self.single(HeaderName::CallId)?;
        if v.is_empty() || crate::scan::has_ws(v.as_bytes()) {
            return Err(Error::BadHeader {
                name: "Call-ID",
                why: "empty or contains whitespace",
            });
        }
        Ok(v)
    }

    /// The CSeq.
    pub fn cseq(&self) -> Result<CSeq<'a>, Error> {
        CSeq::parse(self.single(HeaderName::CSeq)?)
    }

    /// Max-Forwards (`Ok(None)` when absent). Values above 255 are refused.
    pub fn max_forwards(&self) -> Result<Option<u32>, Error> {
        match self.optional_single(HeaderName::MaxForwards)? {
            None => Ok(None),
            Some(v) => parse_u32(v)
                .filter(|n| *n <= 255)
                .map(Some)
                .ok_or(Error::BadHeader {
                    name: "Max-Forwards",
                    why: "not a number from 0 to 255",
                }),
        }
    }

    /// Every Route value, top first.
    pub fn routes(&self) -> Parsed<'_, 'a, NameAddr<'a>> {
        Parsed::new(self.list_items(HeaderName::Route), |t| {
            NameAddr::parse(t, "Route")
        })
    }

    /// Every Record-Route value, top first.
    pub fn record_routes(&self) -> Parsed<'_, 'a, NameAddr<'a>> {
        Parsed::new(self.list_items(HeaderName::RecordRoute), |t| {
            NameAddr::parse(t, "Record-Route")
        })
    }

    /// Every Contact value (`*` included), in order.
    pub fn contacts(&self) -> Parsed<'_, 'a, Contact<'a>> {
        Parsed::new(self.list_items(HeaderName::Contact), Contact::parse)
    }

    /// The Expires header (`Ok(None)` when absent).
    pub fn expires(&self) -> Result<Option<u32>, Error> {
        match self.optional_single(HeaderName::Expires)? {
            None => Ok(None),
            Some(v) => parse_u32(v).map(Some).ok_or(Error::BadHeader {
                name: "Expires",
                why: "not a 32-bit number of seconds",
            }),
        }
    }

    /// The Retry-After header (`Ok(None)` when absent).
    pub fn retry_after(&self) -> Result<Option<RetryAfter<'a>>, Error> {
        self.optional_single(HeaderName::RetryAfter)?
            .map(RetryAfter::parse)
            .transpose()
    }

    /// Every Resource-Priority value (RFC 4412), in order.
    pub fn resource_priorities(&self) -> Parsed<'_, 'a, ResourcePriority<'a>> {
        Parsed::new(
            self.list_items(HeaderName::ResourcePriority),
            ResourcePriority::parse,
        )
    }

    /// Every Reason value (RFC 3326), in order.
    pub fn reasons(&self) -> Parsed<'_, 'a, Reason<'a>> {
        Parsed::new(self.list_items(HeaderName::Reason), Reason::parse)
    }

    /// Option tags of every Supported header.
    pub fn supported(&self) -> Tokens<'_, 'a> {
        Tokens(self.list_items(HeaderName::Supported))
    }

    /// Option tags of every Require header.
    pub fn require(&self) -> Tokens<'_, 'a> {
        Tokens(self.list_items(HeaderName::Require))
    }

    /// Option tags of every Proxy-Require header.
    pub fn proxy_require(&self) -> Tokens<'_, 'a> {
        Tokens(self.list_items(HeaderName::ProxyRequire))
    }

    /// Checks what a proxy relies on, returning the first problem: the mandatory headers
    /// (Via, From, To, Call-ID, CSeq) are present once and parse, the CSeq method matches the
    /// request method, Max-Forwards, Expires, Contact, Route and Record-Route parse when
    /// present, and the Via hop limit holds.
    ///
    /// Problems the RFCs leave to the proxy's policy (unknown URI scheme: 416, Proxy-Require:
    /// 420, Max-Forwards 0: 483) are not errors here.
    pub fn validate(&self) -> Result<(), Error> {
        self.validate_mandatory().map(|_| ())
    }

    /// As [`Message::validate`], returning the mandatory headers it parsed on the way, for a
    /// caller that reads them again and again (a proxy reads the tags and the top Via of one
    /// message many times).
    pub fn validate_mandatory(&self) -> Result<Mandatory<'a>, Error> {
        self.validate_mandatory_with(|_, _| {})
    }

    /// As [`Message::validate_mandatory`], handing every Contact address, Route and
    /// Record-Route entry it parses on the way to `seen`, with the header it is in (in message
    /// order per header), so a caller can keep them instead of parsing them again. On `Err`,
    /// what was handed over is of a message to drop.
    pub fn validate_mandatory_with(
        &self,
        seen: impl FnMut(HeaderName, &NameAddr<'a>),
    ) -> Result<Mandatory<'a>, Error> {
        let mut out = None;
        self.validate_mandatory_into(&mut out, seen)?;
        // A validation that passed has filled `out`.
        out.ok_or(Error::MissingHeader("Via"))
    }

    /// As [`Message::validate_mandatory_with`], the mandatory headers put into `out` (left
    /// as it was on `Err`): a caller that keeps them gets them where it keeps them, without
    /// a copy of the half kilobyte on the way.
    pub fn validate_mandatory_into(
        &self,
        out: &mut Option<Mandatory<'a>>,
        mut seen: impl FnMut(HeaderName, &NameAddr<'a>),
    ) -> Result<(), Error> {
        let mut top_via = None;
        for via in self.vias() {
            let via = via?;
            top_via.get_or_insert(via);
        }
        let top_via = top_via.ok_or(Error::MissingHeader("Via"))?;
        let from = self.from_header()?;
        let to = self.to_header()?;
        let call_id = self.call_id()?;
        let cseq = self.cseq()?;
        if let Some(method) = self.method() {
            if cseq.method != method {
                return Err(Error::CSeqMethodMismatch);
            }
        }
        self.max_forwards()?;
        self.expires()?;
        for c in self.contacts() {
            if let Contact::Addr(a) = c? {
                a.expires()?;
                seen(HeaderName::Contact, &a);
            }
        }
        for r in self.routes() {
            seen(HeaderName::Route, &r?);
        }
        for r in self.record_routes() {
            seen(HeaderName::RecordRoute, &r?);
        }
        *out = Some(Mandatory {
            top_via,
            from,
            to,
            call_id,
            cseq,
        });
        Ok(())
    }

    /// The mandatory headers, parsed, without the rest of [`Message::validate`]'s checks: for
    /// a message validated before (a transaction's stored copy of its request).
    pub fn mandatory(&self) -> Result<Mandatory<'a>, Error> {
        Ok(Mandatory {
            top_via: self.top_via()?,
            from: self.from_header()?,
            to: self.to_header()?,
            call_id: self.call_id()?,
            cseq: self.cseq()?,
        })
    }

    /// True when the Request-URI scheme is one a SIP proxy can route (sip, sips, tel, urn).
    pub fn has_routable_scheme(&self) -> bool {
        self.request_uri()
            .is_some_and(|u| !matches!(u.scheme(), Scheme::Other(_)))
    }

    // ----- crate-internal access for the editor and builders -----

    pub(crate) fn slots(&self) -> &[Slot] {
        &self.slots[..usize::from(self.count)]
    }

    pub(crate) fn start_line_end(&self) -> usize {
        self.start_line_end as usize
    }

    pub(crate) fn body_start(&self) -> usize {
        self.body_start as usize
    }

    /// Offset of `inner` in the message, when it is a sub-slice of it.
    pub(crate) fn offset_of(&self, inner: &str) -> Option<usize> {
        let off = crate::scan::offset_in(self.buf, inner.as_bytes());
        (off <= self.buf.len() && off + inner.len() <= self.buf.len()).then_some(off)
    }

    fn header_of(&self, i: u16, s: &Slot) -> Header<'a> {
        let h = self.head;
        Header {
            index: HeaderIndex(i),
            name: h
                .get(s.line_start as usize..s.name_end as usize)
                .unwrap_or(""),
            known: known_name(s.id),
            value: h
                .get(s.value_start as usize..s.value_end as usize)
                .unwrap_or(""),
        }
    }

    fn first(&self, name: HeaderName) -> Option<Header<'a>> {
        self.headers_of(name).next()
    }

    /// The value of the one header called `name`: missing and repeated are errors.
    fn single(&self, name: HeaderName) -> Result<&'a str, Error> {
        self.optional_single(name)?
            .ok_or(Error::MissingHeader(name.as_str()))
    }

    /// The value of the header called `name` if present; repeated is an error (RFC 4475
    /// `multi01`). Only the value: every caller reads nothing else.
    fn optional_single(&self, name: HeaderName) -> Result<Option<&'a str>, Error> {
        match self.first[name as usize] {
            0 => Ok(None),
            _ if self.counts[name as usize] > 1 => Err(Error::DuplicateHeader(name.as_str())),
            f => {
                let s = &self.slots[usize::from(f) - 1];
                Ok(Some(
                    self.head
                        .get(s.value_start as usize..s.value_end as usize)
                        .unwrap_or(""),
                ))
            }
        }
    }
}

fn known_name(id: u8) -> Option<HeaderName> {
    if id == UNKNOWN {
        None
    } else {
        crate::header_name::from_index(id)
    }
}

#[inline]
pub(crate) fn id_of(name: &[u8]) -> u8 {
    HeaderName::from_bytes(name)
        .map(|n| n as u8)
        .unwrap_or(UNKNOWN)
}

#[derive(Debug, Clone, Copy)]
enum Filter<'m> {
    All,
    /// A known name, and how many of its lines are still to come (the walk stops after the
    /// last one instead of reading every line below it).
    Known(u8, u8),
    Name(&'m str),
}

/// Iterator over header lines (all, or those with one name).
#[derive(Debug, Clone)]
pub struct Headers<'m, 'a> {
    msg: &'m Message<'a>,
    next: u16,
    filter: Filter<'m>,
}

impl<'a> Headers<'_, 'a> {
    /// The next matching line and its slot. Always inlined: a call costs as much as the
    /// usual walk of one or two slots.
    #[inline(always)]
    fn next_slot(&mut self) -> Option<(u16, Slot)> {
        if let Filter::Known(_, 0) = self.filter {
            return None;
        }
        while self.next < self.msg.count {
            let i = self.next;
            self.next += 1;
            let slot = &self.msg.slots[usize::from(i)];
            let hit = match &mut self.filter {
                Filter::All => true,
                Filter::Known(id, left) => {
                    let hit = slot.id == *id;
                    if hit {
                        *left -= 1;
                    }
                    hit
                }
                Filter::Name(name) => {
                    slot.id == UNKNOWN
                        && self
                            .msg
                            .head
                            .get(slot.line_start as usize..slot.name_end as usize)
                            .is_some_and(|n| n.eq_ignore_ascii_case(name))
                }
            };
            if hit {
                return Some((i, *slot));
            }
        }
        None
    }
}

impl<'a> Iterator for Headers<'_, 'a> {
    type Item = Header<'a>;

    fn next(&mut self) -> Option<Header<'a>> {
        let (i, slot) = self.next_slot()?;
        Some(self.msg.header_of(i, &slot))
    }
}

/// Iterator over the comma-separated elements of a list header, across all its lines:
/// `(header the element is in, element text)`.
///
/// It walks the header table itself, for its one known name (not through [`Headers`], whose
/// filter also serves any name and every line): the list readers run for every header of
/// every message validated.
#[derive(Debug, Clone)]
pub struct ListIter<'m, 'a> {
    msg: &'m Message<'a>,
    /// The next line to look at.
    next: u16,
    /// The name's id, and how many of its lines are still to come (the walk stops after the
    /// last one instead of reading every line below it).
    id: u8,
    left: u8,
    current: Option<(HeaderIndex, ListItems<'a>)>,
}

impl<'a> ListIter<'_, 'a> {
    /// The next line of the name: its position, value and whether the value holds a comma.
    #[inline]
    fn next_line(&mut self) -> Option<(HeaderIndex, &'a str, bool)> {
        if self.left == 0 {
            return None;
        }
        let slots = self.msg.slots();
        let mut i = usize::from(self.next);
        let slot = loop {
            let slot = slots.get(i)?;
            i += 1;
            if slot.id == self.id {
                break slot;
            }
        };
        self.next = i as u16;
        self.left -= 1;
        let value = self
            .msg
            .head
            .get(slot.value_start as usize..slot.value_end as usize)
            .unwrap_or("");
        Some((HeaderIndex((i - 1) as u16), value, slot.comma))
    }
}

impl<'a> Iterator for ListIter<'_, 'a> {
    type Item = (HeaderIndex, &'a str);

    /// The end is found inline (most walks end after one line, and walks of a name the
    /// message lacks end at once): only a walk with more to read pays for the call below.
    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 && self.current.is_none() {
            return None;
        }
        self.next_element()
    }
}

impl<'a> ListIter<'_, 'a> {
    /// [`ListIter::next`] when a line or a split line's elements are left.
    fn next_element(&mut self) -> Option<(HeaderIndex, &'a str)> {
        loop {
            if let Some((index, items)) = &mut self.current {
                if let Some(item) = items.next() {
                    return Some((*index, item));
                }
            }
            let (index, value, comma) = self.next_line()?;
            if !comma {
                // One element: the value, trimmed by the header pass as `ListItems` trims.
                self.current = None;
                if !value.is_empty() {
                    return Some((index, value));
                }
                continue;
            }
            self.current = Some((index, ListItems::new(value, true)));
        }
    }
}

/// Iterator over typed list elements: each element parsed on the way.
pub struct Parsed<'m, 'a, T> {
    items: ListIter<'m, 'a>,
    parse: fn(&'a str) -> Result<T, Error>,
    left: usize,
    limit: usize,
    done: bool,
}

impl<'m, 'a, T> Parsed<'m, 'a, T> {
    fn new(items: ListIter<'m, 'a>, parse: fn(&'a str) -> Result<T, Error>) -> Self {
        Parsed {
            items,
            parse,
            left: usize::MAX,
            limit: usize::MAX,
            done: false,
        }
    }
}

impl<T> core::fmt::Debug for Parsed<'_, '_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Parsed")
            .field("items", &self.items)
            .finish()
    }
}

impl<'a, T> Iterator for Parsed<'_, 'a, T> {
    type Item = Result<T, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let (_, text) = self.items.next()?;
        if self.left == 0 {
            self.done = true;
            return Some(Err(Error::TooManyVias { limit: self.limit }));
        }
        self.left -= 1;
        Some((self.parse)(text))
    }
}

/// Iterator over option tags (Supported, Require, Proxy-Require); non-token elements are
/// skipped.
#[derive(Debug, Clone)]
pub struct Tokens<'m, 'a>(ListIter<'m, 'a>);

impl<'a> Iterator for Tokens<'_, 'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        loop {
            let (_, t) = self.0.next()?;
            if is_token_str(t) {
                return Some(t);
            }
        }
    }
}

/// True when `b` may appear in a header name.
pub(crate) fn is_name_char(b: u8) -> bool {
    is_token(b)
}

#[cfg(test)]
mod list_tests {
    use super::Message;
    use crate::header_name::HeaderName;
    use crate::scan::ListItems;

    #[test]
    fn list_items_are_the_lines_of_the_name_split() {
        let raw = "INVITE sip:b@h SIP/2.0\r\n\
Via: SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2\r\n\
Route: <sip:r1;lr>\r\n\
v: SIP/2.0/UDP c;branch=z9hG4bK3\r\n\
X-Other: x, y\r\n\
Route: <sip:r2;lr>,\r\n <sip:r3;lr>\r\n\
Contact: \"A, B\" <sip:a@h>\r\n\
Record-Route: \r\n\
Route: ,, \r\n\
Via: SIP/2.0/UDP d;branch=z9hG4bK4\r\n\
From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n";
        let m = Message::parse(raw.as_bytes()).unwrap();
        for name in [
            HeaderName::Via,
            HeaderName::Route,
            HeaderName::RecordRoute,
            HeaderName::Contact,
            HeaderName::From,
            HeaderName::Supported,
        ] {
            let by_lines: Vec<_> = m
                .headers_of(name)
                .flat_map(|h| ListItems::new(h.value, true).map(move |item| (h.index, item)))
                .collect();
            let listed: Vec<_> = m.list_items(name).collect();
            assert_eq!(listed, by_lines, "{name:?}");
        }
        assert_eq!(m.list_items(HeaderName::Via).count(), 4);
        assert_eq!(m.list_items(HeaderName::Route).count(), 3);
    }

    #[test]
    fn the_first_line_of_a_name_is_the_first_its_walk_finds() {
        let raw = "INVITE sip:b@h SIP/2.0\r\nv: SIP/2.0/UDP a;branch=z9hG4bK1\r\n\
Max-Forwards: 70\r\nVia: SIP/2.0/UDP b;branch=z9hG4bK2\r\nf: <sip:a@h>;tag=1\r\n\
To: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nSubject:\r\n\r\n";
        let m = Message::parse(raw.as_bytes()).unwrap();
        for name in (0..=u8::MAX).map_while(crate::header_name::from_index) {
            let walked = m.headers_of(name).next();
            assert_eq!(m.first_index(name), walked.map(|h| h.index), "{name:?}");
            assert_eq!(m.first_value(name), walked.map(|h| h.value), "{name:?}");
        }
    }

    #[test]
    fn validation_into_a_place_is_validation_returned() {
        let good = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\n\
From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\
Record-Route: <sip:p;lr>\r\nContact: <sip:b@h>\r\n\r\n";
        let bad = good.replace("CSeq: 1 INVITE", "CSeq: x INVITE");
        let m = Message::parse(good.as_bytes()).unwrap();
        let (mut returned, mut placed) = (Vec::new(), Vec::new());
        let mut out = None;
        let ok = m.validate_mandatory_into(&mut out, |n, a| placed.push((n, *a)));
        let expected = m.validate_mandatory_with(|n, a| returned.push((n, *a)));
        assert_eq!(ok, Ok(()));
        assert_eq!(out, Some(expected.unwrap()));
        assert_eq!(placed, returned);
        // On `Err`, what the place held stays.
        let m = Message::parse(bad.as_bytes()).unwrap();
        let before = out;
        assert_eq!(
            m.validate_mandatory_into(&mut out, |_, _| {}),
            m.validate_mandatory().map(|_| ())
        );
        assert!(m.validate().is_err());
        assert_eq!(out, before);
    }
}
