//! URIs: `sip:`/`sips:` taken apart (user, password, host, port, params, headers), `tel:` and
//! `urn:` kept as scheme plus opaque part with params, any other absolute URI kept opaque.
//!
//! Parsing borrows from the message; nothing is unescaped in place. Comparison helpers
//! ([`Uri::aor_eq`], [`Uri::aor_key`]) apply the case rules of RFC 3261 §19.1.4 without
//! allocating (the key allocates, by design: it is what a registration cache stores).

use core::fmt;
use core::net::IpAddr;

use crate::params::Params;
use crate::scan::{all, is, starts_with_ci, HEADER, HOST, PARAM, PASSWORD, UNRESERVED, USER};

/// URI scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme<'a> {
    /// `sip:`
    Sip,
    /// `sips:`
    Sips,
    /// `tel:` (RFC 3966)
    Tel,
    /// `urn:` (e.g. `urn:service:sos`, RFC 5031)
    Urn,
    /// Anything else, as written (without the colon).
    Other(&'a str),
}

impl<'a> Scheme<'a> {
    /// The scheme name, lower case for the known ones.
    pub fn as_str(&self) -> &'a str {
        match self {
            Scheme::Sip => "sip",
            Scheme::Sips => "sips",
            Scheme::Tel => "tel",
            Scheme::Urn => "urn",
            Scheme::Other(s) => s,
        }
    }
}

/// The host of a SIP URI or a Via sent-by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Host<'a> {
    /// A domain name, as written (compare case-insensitively).
    Domain(&'a str),
    /// A dotted IPv4 address, as written.
    Ipv4(&'a str),
    /// An IPv6 reference, as written but without the brackets.
    Ipv6(&'a str),
}

impl<'a> Host<'a> {
    /// Classifies host text; `[...]` is IPv6 (brackets removed). `None` when empty or when it
    /// holds characters no host may contain.
    pub fn parse(s: &'a str) -> Option<Host<'a>> {
        let b = s.as_bytes();
        if b.is_empty() {
            return None;
        }
        if b[0] == b'[' {
            let inner = s.strip_prefix('[')?.strip_suffix(']')?;
            if inner.is_empty()
                || !inner
                    .bytes()
                    .all(|c| c.is_ascii_hexdigit() || c == b':' || c == b'.')
                || !inner.contains(':')
            {
                return None;
            }
            return Some(Host::Ipv6(inner));
        }
        if !all(b, HOST) {
            return None;
        }
        if is_ipv4(b) {
            return Some(Host::Ipv4(s));
        }
        Some(Host::Domain(s))
    }

    /// The host text (IPv6 without brackets).
    pub fn as_str(&self) -> &'a str {
        match self {
            Host::Domain(s) | Host::Ipv4(s) | Host::Ipv6(s) => s,
        }
    }

    /// The address, for IP hosts (parses the text; `None` for domains or bad literals).
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Host::Domain(_) => None,
            Host::Ipv4(s) => ipv4(s).map(IpAddr::V4),
            Host::Ipv6(s) => s.parse().ok(),
        }
    }

    /// Host equality per RFC 3261 §19.1.4: case-insensitive for names; IP literals compare
    /// as addresses (so `[::1]` equals `[0:0::1]`).
    pub fn eq_host(&self, other: &Host<'_>) -> bool {
        match (self.ip(), other.ip()) {
            (Some(a), Some(b)) => a == b,
            _ => self.as_str().eq_ignore_ascii_case(other.as_str()),
        }
    }
}

impl fmt::Display for Host<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ipv6(s) => write!(f, "[{s}]"),
            Host::Domain(s) | Host::Ipv4(s) => f.write_str(s),
        }
    }
}

/// Why a URI did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UriError(pub &'static str);

impl fmt::Display for UriError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// Where a part of a URI lies in its text: byte offsets into [`Uri::as_str`]. Offsets
/// instead of slices make a `Uri` (and the name-addrs, Mandatory and Via values holding
/// one) less than half the size, and so cheaper to return and to move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u32,
    end: u32,
}

impl Span {
    /// An absent optional part.
    const NONE: Span = Span {
        start: u32::MAX,
        end: u32::MAX,
    };
    /// Every empty part, wherever it was found: equal URIs have equal spans.
    const EMPTY: Span = Span { start: 0, end: 0 };

    /// The span of `part` within `raw`: a sub-slice of it, or empty.
    #[inline(always)]
    fn of(raw: &str, part: &str) -> Span {
        if part.is_empty() {
            return Span::EMPTY;
        }
        let start = crate::scan::offset_in(raw.as_bytes(), part.as_bytes());
        // `Uri::pack` only sees parts of `raw`, and `raw` is shorter than `u32::MAX`.
        Span {
            start: start as u32,
            end: (start + part.len()) as u32,
        }
    }

    #[inline]
    fn of_option(raw: &str, part: Option<&str>) -> Span {
        part.map_or(Span::NONE, |p| Span::of(raw, p))
    }

    #[inline]
    fn text(self, raw: &str) -> &str {
        raw.get(self.start as usize..self.end as usize)
            .unwrap_or("")
    }

    #[inline]
    fn option(self, raw: &str) -> Option<&str> {
        (self.start != u32::MAX).then(|| self.text(raw))
    }
}

/// The scheme of a URI without its text (an `Other` scheme is the text before the colon).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SchemeKind {
    Sip,
    Sips,
    Tel,
    Urn,
    Other,
}

/// The kind of host of a URI; its text is the `host_raw` span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HostKind {
    None,
    Domain,
    Ipv4,
    /// The span includes the brackets; [`Host::Ipv6`] does not.
    Ipv6,
}

/// A URI's parts as slices of its text, as the parsers find them; [`Uri::pack`] turns
/// them into spans.
struct Parts<'a> {
    raw: &'a str,
    scheme: Scheme<'a>,
    user: Option<&'a str>,
    password: Option<&'a str>,
    host: Option<Host<'a>>,
    host_raw: &'a str,
    port: Option<u16>,
    params: Params<'a>,
    headers: Option<&'a str>,
    opaque: &'a str,
}

/// A parsed URI borrowing from the message.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Uri<'a> {
    raw: &'a str,
    user: Span,
    password: Span,
    host_raw: Span,
    params: Span,
    headers: Span,
    opaque: Span,
    port: Option<u16>,
    scheme: SchemeKind,
    host: HostKind,
}

impl fmt::Debug for Uri<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // As `#[derive(Debug)]` printed the slices this type held before it held offsets.
        f.debug_struct("Uri")
            .field("raw", &self.raw)
            .field("scheme", &self.scheme())
            .field("user", &self.user())
            .field("password", &self.password())
            .field("host", &self.host())
            .field("host_raw", &self.host_raw())
            .field("port", &self.port)
            .field("params", &self.params())
            .field("headers", &self.headers())
            .field("opaque", &self.opaque())
            .finish()
    }
}

impl<'a> Uri<'a> {
    /// Parses a URI (no surrounding whitespace or angle brackets).
    ///
    /// `sip`/`sips` must have a valid host; `tel`/`urn` and other schemes only need a
    /// non-empty opaque part without whitespace.
    pub fn parse(s: &'a str) -> Result<Uri<'a>, UriError> {
        if s.len() >= u32::MAX as usize {
            // Parts are kept as 32-bit offsets (a message is at most 64 KiB).
            return Err(UriError("URI longer than 4 GiB"));
        }
        if let Some(uri) = parse_plain_sip(s) {
            return Ok(uri);
        }
        let colon = s.find(':').ok_or(UriError("no scheme"))?;
        let scheme_text = &s[..colon];
        if scheme_text.is_empty()
            || !scheme_text.as_bytes()[0].is_ascii_alphabetic()
            || !scheme_text
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
        {
            return Err(UriError("bad scheme"));
        }
        let rest = &s[colon + 1..];
        let scheme = if scheme_text.eq_ignore_ascii_case("sip") {
            Scheme::Sip
        } else if scheme_text.eq_ignore_ascii_case("sips") {
            Scheme::Sips
        } else if scheme_text.eq_ignore_ascii_case("tel") {
            Scheme::Tel
        } else if scheme_text.eq_ignore_ascii_case("urn") {
            Scheme::Urn
        } else {
            Scheme::Other(scheme_text)
        };
        match scheme {
            Scheme::Sip | Scheme::Sips => parse_sip(s, scheme, rest),
            _ => {
                if rest.is_empty() {
                    return Err(UriError("empty URI after the scheme"));
                }
                // SIP URIs are checked part by part; the others only as opaque text.
                if rest
                    .bytes()
                    .any(|c| c <= b' ' || c == 0x7f || matches!(c, b'<' | b'>' | b'"'))
                {
                    return Err(UriError(
                        "whitespace, control character or delimiter in URI",
                    ));
                }
                let (opaque, params) = match rest.find(';') {
                    Some(i) => (&rest[..i], &rest[i..]),
                    None => (rest, ""),
                };
                Ok(Uri::pack(Parts {
                    raw: s,
                    scheme,
                    user: None,
                    password: None,
                    host: None,
                    host_raw: "",
                    port: None,
                    params: Params::new(params),
                    headers: None,
                    opaque,
                }))
            }
        }
    }

    /// The URI exactly as written.
    pub fn as_str(&self) -> &'a str {
        self.raw
    }

    /// The scheme.
    pub fn scheme(&self) -> Scheme<'a> {
        match self.scheme {
            SchemeKind::Sip => Scheme::Sip,
            SchemeKind::Sips => Scheme::Sips,
            SchemeKind::Tel => Scheme::Tel,
            SchemeKind::Urn => Scheme::Urn,
            SchemeKind::Other => Scheme::Other(self.raw.split(':').next().unwrap_or("")),
        }
    }

    /// True for `sip:` and `sips:`.
    pub fn is_sip(&self) -> bool {
        matches!(self.scheme, SchemeKind::Sip | SchemeKind::Sips)
    }

    /// The user part, still %-escaped, for SIP URIs (`None` when there is no `@`).
    pub fn user(&self) -> Option<&'a str> {
        self.user.option(self.raw)
    }

    /// The password part (after `user:`), still escaped.
    pub fn password(&self) -> Option<&'a str> {
        self.password.option(self.raw)
    }

    /// The host of a SIP URI (`None` for other schemes).
    pub fn host(&self) -> Option<Host<'a>> {
        let text = self.host_raw();
        match self.host {
            HostKind::None => None,
            HostKind::Domain => Some(Host::Domain(text)),
            HostKind::Ipv4 => Some(Host::Ipv4(text)),
            HostKind::Ipv6 => Some(Host::Ipv6(
                text.get(1..text.len().saturating_sub(1)).unwrap_or(""),
            )),
        }
    }

    /// The host as written (IPv6 with brackets); empty for other schemes.
    pub fn host_raw(&self) -> &'a str {
        self.host_raw.text(self.raw)
    }

    /// The explicit port, if any.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// URI parameters (`;transport=tcp;lr`). For `tel:`/`urn:` these are the `;` parameters
    /// after the opaque part.
    pub fn params(&self) -> Params<'a> {
        Params::new(self.params.text(self.raw))
    }

    /// The header part after `?` (SIP URIs only), raw.
    pub fn headers(&self) -> Option<&'a str> {
        self.headers.option(self.raw)
    }

    /// For non-SIP schemes: the text after `scheme:` up to the first `;` (the telephone
    /// number of a `tel:` URI, `service:sos` of an `urn:` URI). Empty for SIP URIs.
    pub fn opaque(&self) -> &'a str {
        self.opaque.text(self.raw)
    }

    /// A URI from the parts a parser found, all slices of `parts.raw`. Always inlined: the
    /// parsers' slices then become offsets without being stored first.
    #[inline(always)]
    fn pack(parts: Parts<'a>) -> Uri<'a> {
        let raw = parts.raw;
        let scheme = match parts.scheme {
            Scheme::Sip => SchemeKind::Sip,
            Scheme::Sips => SchemeKind::Sips,
            Scheme::Tel => SchemeKind::Tel,
            Scheme::Urn => SchemeKind::Urn,
            Scheme::Other(_) => SchemeKind::Other,
        };
        let host = match parts.host {
            None => HostKind::None,
            Some(Host::Domain(_)) => HostKind::Domain,
            Some(Host::Ipv4(_)) => HostKind::Ipv4,
            Some(Host::Ipv6(_)) => HostKind::Ipv6,
        };
        Uri {
            raw,
            user: Span::of_option(raw, parts.user),
            password: Span::of_option(raw, parts.password),
            host_raw: Span::of(raw, parts.host_raw),
            params: Span::of(raw, parts.params.as_str()),
            headers: Span::of_option(raw, parts.headers),
            opaque: Span::of(raw, parts.opaque),
            port: parts.port,
            scheme,
            host,
        }
    }

    /// The `transport` URI parameter, if any.
    pub fn transport_param(&self) -> Option<&'a str> {
        self.params().value("transport")
    }

    /// True when the URI carries the `lr` parameter (loose routing, RFC 3261 §19.1.1).
    pub fn is_loose_route(&self) -> bool {
        self.params().has("lr")
    }

    /// True for an emergency service URN (`urn:service:sos` and its sub-services, RFC 5031).
    pub fn is_sos(&self) -> bool {
        self.scheme == SchemeKind::Urn
            && starts_with_ci(self.opaque(), "service:sos")
            && matches!(self.opaque().as_bytes().get(11), None | Some(b'.'))
    }

    /// Address-of-record equality: RFC 3261 §19.1.4 narrowed to scheme, user and host, as
    /// registrars canonicalize an AoR (§10.3): scheme and host compare case-insensitively, the
    /// user case-sensitively with %-escapes decoded. The port is not part of whom an AoR
    /// names: a phone registers `sip:lou@example.com` and the core calls it at
    /// `sip:lou@example.com:5060` (Kamailio's usrloc keys by user and domain alike).
    /// Parameters and headers are ignored. Non-SIP URIs compare scheme plus opaque part
    /// (case-insensitively for `urn:`).
    pub fn aor_eq(&self, other: &Uri<'_>) -> bool {
        if !self
            .scheme()
            .as_str()
            .eq_ignore_ascii_case(other.scheme().as_str())
        {
            return false;
        }
        if !self.is_sip() {
            return if self.scheme == SchemeKind::Urn {
                self.opaque().eq_ignore_ascii_case(other.opaque())
            } else {
                escaped_eq(self.opaque(), other.opaque())
            };
        }
        let users_equal = match (self.user(), other.user()) {
            (None, None) => true,
            (Some(a), Some(b)) => escaped_eq(a, b),
            _ => false,
        };
        users_equal
            && match (self.host(), other.host()) {
                (Some(a), Some(b)) => a.eq_host(&b),
                _ => false,
            }
    }

    /// A canonical text form of the AoR (what [`Uri::aor_eq`] compares), for use as a map key:
    /// `scheme:user@host` with scheme and host lower-cased and the user %-decoded where
    /// the result stays printable ASCII.
    pub fn aor_key(&self) -> String {
        let mut key = String::with_capacity(self.raw.len());
        // Writing into a String cannot fail.
        let _ = self.write_aor_key(&mut key);
        key
    }

    /// Writes [`Uri::aor_key`] into `out` without building the string: a caller that only
    /// hashes the key, or appends it to a buffer it has, allocates nothing.
    pub fn write_aor_key<W: fmt::Write>(&self, out: &mut W) -> fmt::Result {
        write_lower(out, self.scheme().as_str())?;
        out.write_char(':')?;
        if !self.is_sip() {
            return if self.scheme == SchemeKind::Urn {
                write_lower(out, self.opaque())
            } else {
                write_decoded(out, self.opaque())
            };
        }
        if let Some(user) = self.user() {
            write_decoded(out, user)?;
            out.write_char('@')?;
        }
        match self.host() {
            Some(Host::Ipv6(h)) => {
                out.write_char('[')?;
                match h.parse::<core::net::Ipv6Addr>() {
                    Ok(a) => write!(out, "{a}")?,
                    Err(_) => write_lower(out, h)?,
                }
                out.write_char(']')?;
            }
            Some(h) => write_lower(out, h.as_str())?,
            None => {}
        }
        Ok(())
    }
}

/// Writes `s` ASCII-lower-cased.
fn write_lower<W: fmt::Write>(out: &mut W, s: &str) -> fmt::Result {
    s.chars()
        .try_for_each(|c| out.write_char(c.to_ascii_lowercase()))
}

impl fmt::Display for Uri<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.raw)
    }
}

/// For each byte: whether it has one of the `classes` bits and is not `%` (the plain form
/// has no escapes: a `%` ends its scan and sends the URI to the general rules).
const fn plain_table(classes: u8) -> [bool; 256] {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = crate::scan::CLASS[c] & classes != 0 && c != b'%' as usize;
        c += 1;
    }
    t
}

/// User characters of the plain form.
static PLAIN_USER: [bool; 256] = plain_table(UNRESERVED | USER);
/// Host name characters.
static PLAIN_HOST: [bool; 256] = plain_table(HOST);
/// Parameter characters of the plain form.
static PLAIN_PARAM: [bool; 256] = plain_table(UNRESERVED | PARAM);

/// The first index at or after `from` whose byte is not in `table`; four bytes a step while
/// all four are (route tokens and branch ids are long runs).
#[inline]
fn skip_class(b: &[u8], from: usize, table: &[bool; 256]) -> usize {
    let mut i = from;
    while let Some(&[b0, b1, b2, b3]) = b.get(i..i + 4) {
        if !(table[usize::from(b0)]
            & table[usize::from(b1)]
            & table[usize::from(b2)]
            & table[usize::from(b3)])
        {
            break;
        }
        i += 4;
    }
    while i < b.len() && table[usize::from(b[i])] {
        i += 1;
    }
    i
}

/// The first index at or after `from` whose byte is not a host name character (the HOST
/// class), four bytes a step: a Via hop's sent-by host is read as a URI's.
#[inline]
pub(crate) fn skip_host(b: &[u8], from: usize) -> usize {
    skip_class(b, from, &PLAIN_HOST)
}

/// A `sip:`/`sips:` URI written the plain way, in one pass: an optional user (no password,
/// no escapes), a host name or IPv4 address, an optional port and parameters without escapes,
/// no headers. `None` for anything else, which [`parse_sip`] reads with the general rules
/// (the two agree wherever this one answers).
fn parse_plain_sip(raw: &str) -> Option<Uri<'_>> {
    plain_sip_prefix(raw)
        .filter(|(_, end)| *end == raw.len())
        .map(|(uri, _)| uri)
}

/// The plain `sip:`/`sips:` URI that `raw` starts with, and where it ends: at the end of
/// `raw` or at the first byte no part of a plain URI may hold (a name-addr's `>`). Neither
/// `@` nor any byte outside the URI classes can be inside what it reads, so the URI is what
/// [`parse_plain_sip`] would read from `raw[..end]`. Always inlined: each caller's use of the
/// URI it returns then needs no copy of it.
#[inline(always)]
pub(crate) fn plain_sip_prefix(raw: &str) -> Option<(Uri<'_>, usize)> {
    let b = raw.as_bytes();
    if b.len() >= u32::MAX as usize {
        return None;
    }
    // `| 0x20` folds exactly the two cases of a letter onto its lower case (and nothing else
    // onto it): the scheme compared without a call per byte.
    let (scheme, at) = match b.get(..5)? {
        [s, i, p, b':', _] if [*s | 0x20, *i | 0x20, *p | 0x20] == *b"sip" => (SchemeKind::Sip, 4),
        [s, i, p, s2, b':'] if [*s | 0x20, *i | 0x20, *p | 0x20, *s2 | 0x20] == *b"sips" => {
            (SchemeKind::Sips, 5)
        }
        _ => return None,
    };
    // The parts are found as byte offsets and kept as such (every one is bounded by ASCII
    // delimiters, so the URI text slices there): no slice is made only to be turned back
    // into offsets.
    let span = |start: usize, end: usize| {
        if start == end {
            Span::EMPTY
        } else {
            Span {
                start: start as u32,
                end: end as u32,
            }
        }
    };
    // userinfo: the first `@` ends it. When the user characters stop at anything else, the
    // host starts after the scheme: host, port and parameters hold no `@`, so one further on
    // stops their scans and the URI is not plain.
    let stop = skip_class(b, at, &PLAIN_USER);
    let (user, host_start) = match b.get(stop) {
        Some(b'@') => {
            if stop == at {
                return None;
            }
            (span(at, stop), stop + 1)
        }
        _ => (Span::NONE, at),
    };
    let host_end = skip_class(b, host_start, &PLAIN_HOST);
    if host_end == host_start {
        return None;
    }
    let (port, port_end) = match b.get(host_end) {
        Some(b':') => {
            // As `parse_port` reads the digits: one to five of them, at most 65535.
            let start = host_end + 1;
            let (mut i, mut n) = (start, 0u32);
            while let Some(&c) = b.get(i).filter(|c| c.is_ascii_digit()) {
                if i - start < 5 {
                    n = n * 10 + u32::from(c - b'0');
                }
                i += 1;
            }
            if i == start || i - start > 5 {
                return None;
            }
            (Some(u16::try_from(n).ok()?), i)
        }
        _ => (None, host_end),
    };
    let end = match b.get(port_end) {
        Some(b';') => skip_class(b, port_end, &PLAIN_PARAM),
        _ => port_end,
    };
    if matches!(b.get(end), Some(&c) if c != b'>') {
        return None;
    }
    let host = if is_ipv4(&b[host_start..host_end]) {
        HostKind::Ipv4
    } else {
        HostKind::Domain
    };
    let uri = Uri {
        raw: raw.get(..end)?,
        user,
        password: Span::NONE,
        host_raw: span(host_start, host_end),
        params: span(port_end, end),
        headers: Span::NONE,
        opaque: Span::EMPTY,
        port,
        scheme,
        host,
    };
    Some((uri, end))
}

fn parse_sip<'a>(raw: &'a str, scheme: Scheme<'a>, rest: &'a str) -> Result<Uri<'a>, UriError> {
    // user and password cannot hold an unescaped `@`, and neither can host, params or
    // headers: the first `@` ends the userinfo.
    let (userinfo, hostpart) = match rest.find('@') {
        Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
        None => (None, rest),
    };
    let (user, password) = match userinfo {
        None => (None, None),
        Some(ui) => {
            let (u, p) = match ui.find(':') {
                Some(i) => (&ui[..i], Some(&ui[i + 1..])),
                None => (ui, None),
            };
            if u.is_empty() {
                return Err(UriError("empty user part before @"));
            }
            if !u.bytes().all(is_user_char) || !escapes_valid(u) {
                return Err(UriError("invalid character in user part"));
            }
            if let Some(p) = p {
                if !p.bytes().all(is_password_char) || !escapes_valid(p) {
                    return Err(UriError("invalid character in password"));
                }
            }
            (Some(u), p)
        }
    };
    // hostport ends at the first `;` or `?` (an IPv6 literal holds neither).
    let hp_end = memchr::memchr2(b';', b'?', hostpart.as_bytes()).unwrap_or(hostpart.len());
    let hostport = &hostpart[..hp_end];
    let after = &hostpart[hp_end..];
    let (host_raw, port_text) = if hostport.starts_with('[') {
        let close = hostport
            .find(']')
            .ok_or(UriError("unterminated IPv6 reference"))?;
        let tail = &hostport[close + 1..];
        let port = match tail.strip_prefix(':') {
            Some(p) => Some(p),
            None if tail.is_empty() => None,
            None => return Err(UriError("junk after IPv6 reference")),
        };
        (&hostport[..close + 1], port)
    } else {
        match hostport.rfind(':') {
            Some(i) => (&hostport[..i], Some(&hostport[i + 1..])),
            None => (hostport, None),
        }
    };
    let host = Host::parse(host_raw).ok_or(UriError("invalid host"))?;
    let port = match port_text {
        None => None,
        Some(p) => Some(parse_port(p).ok_or(UriError("invalid port"))?),
    };
    let (params, headers) = match after.find('?') {
        Some(i) => (&after[..i], Some(&after[i + 1..])),
        None => (after, None),
    };
    if !all(params.as_bytes(), UNRESERVED | PARAM) || !escapes_valid(params) {
        return Err(UriError("invalid character in URI parameters"));
    }
    if let Some(h) = headers {
        if !all(h.as_bytes(), UNRESERVED | HEADER) || !escapes_valid(h) {
            return Err(UriError("invalid character in URI headers"));
        }
    }
    Ok(Uri::pack(Parts {
        raw,
        scheme,
        user,
        password,
        host: Some(host),
        host_raw,
        port,
        params: Params::new(params),
        headers,
        opaque: "",
    }))
}

/// Dotted IPv4 text as `core::net::Ipv4Addr`'s parser reads it (four decimal octets up to
/// 255, no leading zeros), without its general machinery: proxies compare the host of every
/// Via and Route with their own addresses.
fn ipv4(s: &str) -> Option<core::net::Ipv4Addr> {
    let b = s.as_bytes();
    let mut octets = [0u8; 4];
    let mut i = 0;
    for (k, octet) in octets.iter_mut().enumerate() {
        if k > 0 {
            if b.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
        // One to three digits; a fourth is left for the `.` test (or the end test) to refuse.
        let start = i;
        let mut value = 0u16;
        while let Some(&c) = b.get(i).filter(|c| c.is_ascii_digit() && i - start < 3) {
            value = value * 10 + u16::from(c - b'0');
            i += 1;
        }
        if i == start || (i - start > 1 && b[start] == b'0') {
            return None;
        }
        *octet = u8::try_from(value).ok()?;
    }
    (i == b.len()).then(|| core::net::Ipv4Addr::from(octets))
}

/// Four dot-separated runs of one to three digits. Always inlined: the URI and sent-by scans
/// run it on every host they read.
///
/// Read a group at a time: a group's first digit is required and its second and third are
/// each one test, where a walk over the bytes would ask of every byte whether it is a dot, a
/// digit, and the how-manieth of its run.
#[inline(always)]
pub(crate) fn is_ipv4(b: &[u8]) -> bool {
    // Four groups of one to three digits and three dots: 7 to 15 bytes (a domain name is
    // mostly refused here, or at its first byte below).
    if !(7..=15).contains(&b.len()) {
        return false;
    }
    let digit = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    let mut i = 0;
    for group in 0..4 {
        if group > 0 {
            if b.get(i) != Some(&b'.') {
                return false;
            }
            i += 1;
        }
        if !digit(i) {
            return false;
        }
        i += 1;
        if digit(i) {
            i += 1;
            if digit(i) {
                i += 1;
            }
        }
    }
    i == b.len()
}

/// [`is_ipv4`] as a walk over the bytes: the rule it reads, kept to test it against.
#[cfg(test)]
fn is_ipv4_walk(b: &[u8]) -> bool {
    let mut dots = 0;
    let mut run = 0;
    for &c in b {
        if c == b'.' {
            if run == 0 {
                return false;
            }
            dots += 1;
            run = 0;
        } else if c.is_ascii_digit() && run < 3 {
            run += 1;
        } else {
            return false;
        }
    }
    dots == 3 && run > 0
}

/// A port: 1 to 5 digits fitting in u16.
#[inline]
pub(crate) fn parse_port(p: &str) -> Option<u16> {
    if p.is_empty() || p.len() > 5 {
        return None;
    }
    let mut n: u32 = 0;
    for c in p.bytes() {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u32::from(c - b'0');
    }
    u16::try_from(n).ok()
}

fn is_user_char(c: u8) -> bool {
    is(c, UNRESERVED | USER)
}

fn is_password_char(c: u8) -> bool {
    is(c, UNRESERVED | PASSWORD)
}

/// Every `%` is followed by two hex digits.
fn escapes_valid(s: &str) -> bool {
    let b = s.as_bytes();
    if memchr::memchr(b'%', b).is_none() {
        return true;
    }
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if i + 2 >= b.len() {
                return false;
            }
            if !(b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit()) {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    true
}

/// Iterates the bytes of `s` with `%HH` escapes decoded.
fn decoded(s: &str) -> impl Iterator<Item = u8> + '_ {
    let b = s.as_bytes();
    let mut i = 0;
    core::iter::from_fn(move || {
        let c = *b.get(i)?;
        if c == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                i += 3;
                return Some(h << 4 | l);
            }
        }
        i += 1;
        Some(c)
    })
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Equality after decoding %-escapes (case-sensitive otherwise).
fn escaped_eq(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    decoded(a).eq(decoded(b))
}

/// Appends `s` with escapes decoded where the decoded byte is printable ASCII other than `%`
/// and `@`, so that the key stays unambiguous text.
fn write_decoded<W: fmt::Write>(out: &mut W, s: &str) -> fmt::Result {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                let d = h << 4 | l;
                if d.is_ascii_graphic() && d != b'%' && d != b'@' && d != b':' {
                    out.write_char(char::from(d))?;
                } else {
                    out.write_char('%')?;
                    out.write_char(char::from(b[i + 1].to_ascii_uppercase()))?;
                    out.write_char(char::from(b[i + 2].to_ascii_uppercase()))?;
                }
                i += 3;
                continue;
            }
        }
        out.write_char(char::from(c))?;
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The general reading of a `sip:`/`sips:` URI, without the plain-form shortcut.
    fn general(s: &str) -> Result<Uri<'_>, UriError> {
        let colon = s.find(':').ok_or(UriError("no scheme"))?;
        let scheme = if s[..colon].eq_ignore_ascii_case("sips") {
            Scheme::Sips
        } else {
            Scheme::Sip
        };
        parse_sip(s, scheme, &s[colon + 1..])
    }

    #[test]
    fn parts_read_back_as_written() {
        let u =
            Uri::parse("sips:al%41ce:pw@[2001:db8::1]:5061;lr;transport=tls?subject=x").unwrap();
        assert_eq!(
            format!("{u:?}"),
            r#"Uri { raw: "sips:al%41ce:pw@[2001:db8::1]:5061;lr;transport=tls?subject=x", scheme: Sips, user: Some("al%41ce"), password: Some("pw"), host: Some(Ipv6("2001:db8::1")), host_raw: "[2001:db8::1]", port: Some(5061), params: Params { raw: ";lr;transport=tls" }, headers: Some("subject=x"), opaque: "" }"#
        );
        let u = Uri::parse("sip:u:@h?").unwrap();
        assert_eq!((u.password(), u.headers()), (Some(""), Some("")));
        let u = Uri::parse("sip:h").unwrap();
        assert_eq!((u.user(), u.password(), u.headers()), (None, None, None));
        assert_eq!(u.host(), Some(Host::Domain("h")));
        let u = Uri::parse("X-Foo.1:opaque;a=b").unwrap();
        assert_eq!(u.scheme(), Scheme::Other("X-Foo.1"));
        assert_eq!(
            (u.opaque(), u.params().as_str(), u.host()),
            ("opaque", ";a=b", None)
        );
        let u = Uri::parse("urn:service:sos.fire").unwrap();
        assert!(u.is_sos());
        assert_eq!(u.params().as_str(), "");
    }

    #[test]
    fn ipv4_reads_as_std_does() {
        let samples = [
            "1.2.3.4",
            "0.0.0.0",
            "255.255.255.255",
            "256.1.1.1",
            "01.2.3.4",
            "1.2.3.04",
            "1.2.3.0",
            "10.0.0.1",
            "1.2.3",
            "1.2.3.4.5",
            "1..3.4",
            "",
            ".1.2.3",
            "1.2.3.",
            "999.1.1.1",
            "1.2.3.4a",
            "100.200.250.255",
            "00.0.0.0",
            "1.02.3.4",
            "1.2.3.4 ",
            "1.2.3.4.",
            "1.2.3.1234",
            "1234.1.1.1",
            "1.2.3.-4",
            "1.2.+3.4",
            "0.00.0.0",
            "1.2.3.4\u{e9}",
            "12.34.56.78",
            "255.255.255.256",
            "0000.1.1.1",
        ];
        for s in samples {
            assert_eq!(ipv4(s), s.parse::<core::net::Ipv4Addr>().ok(), "{s}");
        }
        for a in [0u32, 7, 99, 100, 199, 200, 249, 250, 255] {
            let s = format!("{a}.{a}.{a}.{a}");
            assert_eq!(ipv4(&s), s.parse::<core::net::Ipv4Addr>().ok(), "{s}");
        }
    }

    #[test]
    fn is_ipv4_reads_as_the_walk_over_the_bytes_does() {
        let mut samples: Vec<Vec<u8>> = [
            "1.2.3.4",
            "10.2.0.50",
            "255.255.255.255",
            "999.999.999.999",
            "1234.1.1.1",
            "1.2.3.4.5",
            "1.2.3",
            "1..3.4",
            ".1.2.3",
            "1.2.3.",
            "1.2.3.4a",
            "a.2.3.4",
            "example.com",
            "",
            "1",
            "1.2.3.4\u{e9}",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        // Every split of up to five groups of zero to four digits, then each of those with one
        // byte changed to a dot, a letter, a digit or a byte outside ASCII, or cut short.
        let mut groups: Vec<Vec<u8>> = vec![Vec::new()];
        for _ in 0..5 {
            let mut next = Vec::new();
            for g in &groups {
                for len in 0..=4usize {
                    let mut v = g.clone();
                    if !v.is_empty() {
                        v.push(b'.');
                    }
                    v.extend((0..len).map(|i| b'1' + i as u8));
                    next.push(v);
                }
            }
            samples.extend(next.iter().cloned());
            groups = next;
        }
        let whole = samples.clone();
        for s in &whole {
            if s.len() > 16 {
                continue;
            }
            for at in 0..s.len() {
                for c in [b'.', b'a', b'7', b'-', b'/', b':', 0xc3] {
                    let mut v = s.clone();
                    v[at] = c;
                    samples.push(v);
                }
                samples.push(s[..at].to_vec());
            }
        }
        for s in &samples {
            assert_eq!(
                is_ipv4(s),
                is_ipv4_walk(s),
                "{:?}",
                String::from_utf8_lossy(s)
            );
        }
    }

    #[test]
    fn the_plain_form_reads_as_the_general_rules_do() {
        let samples = [
            "sip:example.com",
            "SIP:Alice@Example.COM",
            "sips:bob@192.0.2.1:5061",
            "sip:10.1.0.1:5060;lr;rt=AbC-_09",
            "sip:10.1.0.1:5060;transport=tcp;lr",
            "sip:+1555@host;user=phone",
            "sip:a;b@host",
            "sip:user:pw@host",
            "sip:user@host?subject=x",
            "sip:%61lice@host",
            "sip:alice@host;p=%41",
            "sip:host:",
            "sip:host:99999",
            "sip:host:65535",
            "sip:host:65536",
            "sip:host:05060",
            "sip:host:000001",
            "sip:host:0",
            "SIPS:u@h:1;lr",
            "sip:u@10.0.0.1:5060;lr;rt=AbC-_09.x~y",
            "sip:u@10.0.0.256",
            "sip:host:5060:1",
            "sip:@host",
            "sip:user@",
            "sip:[::1]:5060",
            "sip:user@[2001:db8::1];lr",
            "sip:host;p=[x]",
            "sip:host;a b",
            "sip:ho st",
            "sip:1.2.3.4.5",
            "sip:1.2.3",
            "sip:a@b@c",
            "sip:abc;x=@",
            "sip:h\u{e9}",
            "sips:",
            "sip:x",
        ];
        for s in samples {
            let bracketed = format!("{s}>;tag=1");
            if let Some((plain, end)) = plain_sip_prefix(&bracketed) {
                assert_eq!(&bracketed[end..], ">;tag=1", "{s}");
                assert_eq!(Ok(plain), general(s), "{s}");
            }
            if let Some(plain) = parse_plain_sip(s) {
                assert_eq!(Ok(plain), general(s), "{s}");
            }
            assert_eq!(Uri::parse(s), general(s), "{s}");
        }
    }
}
