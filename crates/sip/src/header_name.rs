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
const NONE: u8 = u8::MAX;

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

/// Slots of [`BY_KEY`]; a power of two.
const KEY_SLOTS: usize = 128;

/// Where a long name of `len` bytes whose first and last bytes are `first` and `last` (either
/// case) would be in [`BY_KEY`]. No two known names share a slot (checked when the table is
/// built), so a lookup compares against at most one name.
#[inline]
const fn key_slot(len: usize, first: u8, last: u8) -> usize {
    (len.wrapping_mul(6) + (first | 0x20) as usize + ((last | 0x20) as usize).wrapping_mul(26))
        & (KEY_SLOTS - 1)
}

/// Table index of the long name for each [`key_slot`].
const BY_KEY: [u8; KEY_SLOTS] = {
    let mut t = [NONE; KEY_SLOTS];
    let mut i = 0;
    while i < TABLE.len() {
        let name = TABLE[i].0.as_bytes();
        assert!(name.len() >= 2 && name.len() <= MAX_NAME_LEN);
        let slot = key_slot(name.len(), name[0], name[name.len() - 1]);
        assert!(
            t[slot] == NONE,
            "two known header names share a lookup slot"
        );
        t[slot] = i as u8;
        i += 1;
    }
    t
};

/// Every long name in lower case, and per byte the bit that folds case: `0x20` for letters,
/// 0 for `-`. A byte `b` matches the name's byte at `i` exactly when
/// `b | MASK[i] == LOWER[i]`: for a letter only its two cases do, for `-` only `-`.
const FOLDED: [([u8; MAX_NAME_LEN], [u8; MAX_NAME_LEN]); TABLE.len()] = {
    let mut t = [([0u8; MAX_NAME_LEN], [0u8; MAX_NAME_LEN]); TABLE.len()];
    let mut i = 0;
    while i < TABLE.len() {
        let name = TABLE[i].0.as_bytes();
        let mut j = 0;
        while j < name.len() {
            let c = name[j];
            assert!(c.is_ascii_alphabetic() || c == b'-');
            if c.is_ascii_alphabetic() {
                t[i].0[j] = c.to_ascii_lowercase();
                t[i].1[j] = 0x20;
            } else {
                t[i].0[j] = c;
            }
            j += 1;
        }
        i += 1;
    }
    t
};

/// Bytes `at..at + 8` of `s` as a little-endian word.
#[inline]
fn word(s: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&s[at..at + 8]);
    u64::from_le_bytes(w)
}

/// Bytes `at..at + 4` of `s` as a little-endian word.
#[inline]
fn half(s: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&s[at..at + 4]);
    u32::from_le_bytes(w)
}

/// True when `name` is the known name with lower-case form `lower` and case mask `mask`
/// (see [`FOLDED`]), compared a word at a time; `name` is at least 2 bytes long and no longer
/// than `lower`. Overlapping words cover a length that is not a multiple of the word.
#[inline]
fn folded_eq(name: &[u8], lower: &[u8; MAX_NAME_LEN], mask: &[u8; MAX_NAME_LEN]) -> bool {
    let n = name.len();
    if n >= 8 {
        let mut i = 0;
        while i + 8 < n {
            if word(name, i) | word(mask, i) != word(lower, i) {
                return false;
            }
            i += 8;
        }
        word(name, n - 8) | word(mask, n - 8) == word(lower, n - 8)
    } else if n >= 4 {
        half(name, 0) | half(mask, 0) == half(lower, 0)
            && half(name, n - 4) | half(mask, n - 4) == half(lower, n - 4)
    } else {
        // Two or three bytes (`To`, `Via`): two overlapping pairs.
        pair(name, 0) | pair(mask, 0) == pair(lower, 0)
            && pair(name, n - 2) | pair(mask, n - 2) == pair(lower, n - 2)
    }
}

/// Bytes `at..at + 2` of `s` as a little-endian number.
#[inline]
fn pair(s: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([s[at], s[at + 1]])
}

impl HeaderName {
    /// Recognises a header name in long or compact form, any case. `None` for unknown names.
    #[inline]
    pub fn from_bytes(name: &[u8]) -> Option<HeaderName> {
        if name.len() == 1 {
            let c = name[0].to_ascii_lowercase();
            if !c.is_ascii_lowercase() {
                return None;
            }
            return from_index(BY_COMPACT[usize::from(c - b'a')]);
        }
        let (Some(&first), Some(&last)) = (name.first(), name.last()) else {
            return None;
        };
        if name.len() > MAX_NAME_LEN {
            return None;
        }
        let index = BY_KEY[key_slot(name.len(), first, last)];
        let (known, _, variant) = TABLE.get(usize::from(index))?;
        let (lower, mask) = &FOLDED[usize::from(index)];
        (known.len() == name.len() && folded_eq(name, lower, mask)).then_some(*variant)
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

    /// The lookup by length, end bytes and folded words, against a plain byte-by-byte reading
    /// of the table.
    #[test]
    fn lookup_agrees_with_a_plain_comparison() {
        let slow = |name: &[u8]| -> Option<HeaderName> {
            if name.len() == 1 {
                let c = name[0].to_ascii_lowercase();
                return TABLE.iter().find(|e| e.1 == Some(c)).map(|e| e.2);
            }
            TABLE
                .iter()
                .find(|(long, _, _)| {
                    long.len() == name.len()
                        && long.bytes().zip(name).all(|(k, &b)| {
                            k == b || (k.is_ascii_alphabetic() && k.eq_ignore_ascii_case(&b))
                        })
                })
                .map(|e| e.2)
        };
        let mut samples: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"x-custom".to_vec(),
            b"Call\rID".to_vec(),
            b"Contacz".to_vec(),
            b"Accept-Resource-Priorityy".to_vec(),
            vec![b'a'; 40],
        ];
        for c in 0..=255u8 {
            samples.push(vec![c]);
        }
        for (long, _, _) in TABLE {
            let b = long.as_bytes();
            samples.push(b.to_vec());
            samples.push(b.to_ascii_lowercase());
            samples.push(b.to_ascii_uppercase());
            samples.push(b[..b.len() - 1].to_vec());
            samples.push([b, b"x"].concat());
            for at in 0..b.len() {
                // Bytes that fold onto a letter or `-` under `| 0x20`, and their neighbours.
                for c in [
                    b'\r', b'@', b'`', b'[', b'{', b'_', b'-', b'.', 0x80, 0xc1, 0xe1,
                ] {
                    let mut v = b.to_vec();
                    v[at] = c;
                    samples.push(v);
                }
                let mut v = b.to_vec();
                v[at] ^= 0x20;
                samples.push(v);
            }
        }
        for s in &samples {
            assert_eq!(
                HeaderName::from_bytes(s),
                slow(s),
                "{:?}",
                String::from_utf8_lossy(s)
            );
        }
    }
}
