//! Header names the crate knows: canonical spelling, compact form, case-insensitive lookup.
//!
//! Names the crate does not know are still accessible by their text
//! ([`crate::Message::headers_named`]); knowing a name only buys compact-form equivalence and a
//! typed accessor.

/// A header name the crate recognises (long or compact form, any letter case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HeaderName {
    /// Via (compact `v`)
    Via,
    /// From (compact `f`)
    From,
    /// To (compact `t`)
    To,
    /// Call-ID (compact `i`)
    CallId,
    /// CSeq
    CSeq,
    /// Max-Forwards
    MaxForwards,
    /// Route
    Route,
    /// Record-Route
    RecordRoute,
    /// Contact (compact `m`)
    Contact,
    /// Expires
    Expires,
    /// Min-Expires
    MinExpires,
    /// Content-Length (compact `l`)
    ContentLength,
    /// Content-Type (compact `c`)
    ContentType,
    /// Content-Encoding (compact `e`)
    ContentEncoding,
    /// Retry-After
    RetryAfter,
    /// Resource-Priority
    ResourcePriority,
    /// Accept-Resource-Priority
    AcceptResourcePriority,
    /// Reason
    Reason,
    /// Supported (compact `k`)
    Supported,
    /// Require
    Require,
    /// Proxy-Require
    ProxyRequire,
    /// Unsupported
    Unsupported,
    /// Subject (compact `s`)
    Subject,
    /// Allow
    Allow,
    /// Event (compact `o`)
    Event,
    /// Allow-Events (compact `u`)
    AllowEvents,
    /// Refer-To (compact `r`)
    ReferTo,
    /// Referred-By (compact `b`)
    ReferredBy,
    /// Session-Expires (compact `x`)
    SessionExpires,
    /// Path
    Path,
    /// User-Agent
    UserAgent,
    /// Server
    Server,
    /// Timestamp
    Timestamp,
    /// Authorization
    Authorization,
    /// Proxy-Authorization
    ProxyAuthorization,
    /// WWW-Authenticate
    WwwAuthenticate,
    /// Proxy-Authenticate
    ProxyAuthenticate,
    /// Accept
    Accept,
    /// Date
    Date,
}

/// (canonical, compact, variant) for every known name.
const TABLE: &[(&str, Option<u8>, HeaderName)] = &[
    ("Via", Some(b'v'), HeaderName::Via),
    ("From", Some(b'f'), HeaderName::From),
    ("To", Some(b't'), HeaderName::To),
    ("Call-ID", Some(b'i'), HeaderName::CallId),
    ("CSeq", None, HeaderName::CSeq),
    ("Max-Forwards", None, HeaderName::MaxForwards),
    ("Route", None, HeaderName::Route),
    ("Record-Route", None, HeaderName::RecordRoute),
    ("Contact", Some(b'm'), HeaderName::Contact),
    ("Expires", None, HeaderName::Expires),
    ("Min-Expires", None, HeaderName::MinExpires),
    ("Content-Length", Some(b'l'), HeaderName::ContentLength),
    ("Content-Type", Some(b'c'), HeaderName::ContentType),
    ("Content-Encoding", Some(b'e'), HeaderName::ContentEncoding),
    ("Retry-After", None, HeaderName::RetryAfter),
    ("Resource-Priority", None, HeaderName::ResourcePriority),
    (
        "Accept-Resource-Priority",
        None,
        HeaderName::AcceptResourcePriority,
    ),
    ("Reason", None, HeaderName::Reason),
    ("Supported", Some(b'k'), HeaderName::Supported),
    ("Require", None, HeaderName::Require),
    ("Proxy-Require", None, HeaderName::ProxyRequire),
    ("Unsupported", None, HeaderName::Unsupported),
    ("Subject", Some(b's'), HeaderName::Subject),
    ("Allow", None, HeaderName::Allow),
    ("Event", Some(b'o'), HeaderName::Event),
    ("Allow-Events", Some(b'u'), HeaderName::AllowEvents),
    ("Refer-To", Some(b'r'), HeaderName::ReferTo),
    ("Referred-By", Some(b'b'), HeaderName::ReferredBy),
    ("Session-Expires", Some(b'x'), HeaderName::SessionExpires),
    ("Path", None, HeaderName::Path),
    ("User-Agent", None, HeaderName::UserAgent),
    ("Server", None, HeaderName::Server),
    ("Timestamp", None, HeaderName::Timestamp),
    ("Authorization", None, HeaderName::Authorization),
    ("Proxy-Authorization", None, HeaderName::ProxyAuthorization),
    ("WWW-Authenticate", None, HeaderName::WwwAuthenticate),
    ("Proxy-Authenticate", None, HeaderName::ProxyAuthenticate),
    ("Accept", None, HeaderName::Accept),
    ("Date", None, HeaderName::Date),
];

/// Number of names the crate knows.
pub(crate) const KNOWN_NAMES: usize = TABLE.len();

/// Longest known name.
const MAX_NAME_LEN: usize = 24;
/// Most known names sharing one length.
const PER_LEN: usize = 6;
const NONE: u8 = u8::MAX;

/// Table indexes of the names of each length: a lookup compares against one or a few names.
const BY_LEN: [[u8; PER_LEN]; MAX_NAME_LEN + 1] = {
    let mut t = [[NONE; PER_LEN]; MAX_NAME_LEN + 1];
    let mut i = 0;
    while i < TABLE.len() {
        let len = TABLE[i].0.len();
        let mut j = 0;
        while t[len][j] != NONE {
            j += 1;
        }
        t[len][j] = i as u8;
        i += 1;
    }
    t
};

/// Table index of each compact form, by lower-case letter.
const BY_COMPACT: [u8; 26] = {
    let mut t = [NONE; 26];
    let mut i = 0;
    while i < TABLE.len() {
        if let Some(c) = TABLE[i].1 {
            t[(c - b'a') as usize] = i as u8;
        }
        i += 1;
    }
    t
};

impl HeaderName {
    /// Recognises a header name in long or compact form, any case. `None` for unknown names.
    pub fn from_bytes(name: &[u8]) -> Option<HeaderName> {
        if name.len() == 1 {
            let c = name[0].to_ascii_lowercase();
            if !c.is_ascii_lowercase() {
                return None;
            }
            return from_index(BY_COMPACT[usize::from(c - b'a')]);
        }
        BY_LEN
            .get(name.len())?
            .iter()
            .take_while(|&&i| i != NONE)
            .map(|&i| &TABLE[usize::from(i)])
            .find(|(long, _, _)| same_name(long.as_bytes(), name))
            .map(|e| e.2)
    }

    /// Same as [`HeaderName::from_bytes`] for text.
    pub fn parse(name: &str) -> Option<HeaderName> {
        HeaderName::from_bytes(name.as_bytes())
    }

    /// The canonical long form (`Call-ID`, `CSeq`, ...).
    pub fn as_str(self) -> &'static str {
        TABLE[self.index()].0
    }

    /// The compact form, when the name has one (`v` for Via).
    pub fn compact(self) -> Option<char> {
        TABLE[self.index()].1.map(char::from)
    }

    /// True for headers whose value is a comma-separated list the crate splits (Via, Route,
    /// Record-Route, Contact, Supported, Require, ...). Unknown headers are never split.
    pub fn is_list(self) -> bool {
        matches!(
            self,
            HeaderName::Via
                | HeaderName::Route
                | HeaderName::RecordRoute
                | HeaderName::Contact
                | HeaderName::Supported
                | HeaderName::Require
                | HeaderName::ProxyRequire
                | HeaderName::Unsupported
                | HeaderName::Allow
                | HeaderName::AllowEvents
                | HeaderName::ResourcePriority
                | HeaderName::AcceptResourcePriority
                | HeaderName::Reason
                | HeaderName::Path
                | HeaderName::ContentEncoding
        )
    }

    fn index(self) -> usize {
        // The table lists the variants in declaration order.
        self as usize
    }
}

impl core::fmt::Display for HeaderName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Case-insensitive equality of a known name (letters and `-` only) with any bytes of the same
/// length. For a letter `k`, `b | 0x20 == k | 0x20` holds only for the same letter in either
/// case; `-` must match exactly. The last byte is compared first: names of one length mostly
/// differ there or at the start.
fn same_name(known: &[u8], name: &[u8]) -> bool {
    let same = |k: u8, b: u8| k == b || (k.is_ascii_alphabetic() && (k | 0x20) == (b | 0x20));
    let n = known.len();
    n == name.len()
        && n > 0
        && same(known[n - 1], name[n - 1])
        && known.iter().zip(name).all(|(&k, &b)| same(k, b))
}

/// The variant stored at `index` of the table (the inverse of `as u8`).
pub(crate) fn from_index(index: u8) -> Option<HeaderName> {
    TABLE.get(usize::from(index)).map(|e| e.2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_in_declaration_order() {
        for (i, (_, _, name)) in TABLE.iter().enumerate() {
            assert_eq!(*name as usize, i, "{name:?}");
        }
    }

    #[test]
    fn compact_and_case() {
        assert_eq!(HeaderName::parse("v"), Some(HeaderName::Via));
        assert_eq!(HeaderName::parse("V"), Some(HeaderName::Via));
        assert_eq!(HeaderName::parse("cALL-id"), Some(HeaderName::CallId));
        assert_eq!(HeaderName::parse("l"), Some(HeaderName::ContentLength));
        assert_eq!(HeaderName::parse("X-Foo"), None);
        assert_eq!(HeaderName::from_bytes(b"Call\rID"), None);
        assert_eq!(HeaderName::from_bytes(b"Call\x0dID"), None);
        assert_eq!(
            HeaderName::from_bytes(b"CONTENT-length"),
            Some(HeaderName::ContentLength)
        );
        assert_eq!(HeaderName::from_bytes(b"Vi\x01"), None);
        assert_eq!(HeaderName::CallId.compact(), Some('i'));
    }
}
