//! Small typed header values: CSeq, Retry-After, Resource-Priority, Reason.

use crate::method::Method;
use crate::params::Params;
use crate::scan::{
    find_unquoted, is_token, is_token_str, is_ws, parse_u32, trim, unquote, ListItems,
};
use crate::Error;

/// `CSeq: 4711 INVITE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CSeq<'a> {
    /// Sequence number (a 32-bit unsigned integer, RFC 3261 §8.1.1.5).
    pub seq: u32,
    /// Method.
    pub method: Method<'a>,
}

impl<'a> CSeq<'a> {
    /// Parses a CSeq value (LWS, folding included, may separate the two parts).
    pub fn parse(text: &'a str) -> Result<CSeq<'a>, Error> {
        let t = trim(text);
        match plain_cseq(t) {
            Some(cseq) => Ok(cseq),
            None => CSeq::parse_general(t),
        }
    }

    /// The general reading of a trimmed CSeq value.
    fn parse_general(t: &'a str) -> Result<CSeq<'a>, Error> {
        let bad = |why| Error::BadHeader { name: "CSeq", why };
        let split = t.bytes().position(is_ws).ok_or(bad("missing method"))?;
        let seq = parse_u32(&t[..split]).ok_or(bad("sequence number is not a 32-bit number"))?;
        let method = trim(&t[split..]);
        if !is_token_str(method) {
            return Err(bad("method is not a token"));
        }
        Ok(CSeq {
            seq,
            method: Method::from_token(method),
        })
    }
}

/// A trimmed CSeq value written the usual way, `digits SP method`, read in one pass: at most
/// ten digits (the value checked against u32), one space, a token. `None` for anything else,
/// which [`CSeq::parse_general`] reads (the two agree where this one answers).
fn plain_cseq(t: &str) -> Option<CSeq<'_>> {
    let b = t.as_bytes();
    let (mut i, mut n) = (0, 0u64);
    while let Some(&c) = b.get(i).filter(|c| c.is_ascii_digit() && i < 10) {
        n = n * 10 + u64::from(c - b'0');
        i += 1;
    }
    if i == 0 || b.get(i) != Some(&b' ') {
        return None;
    }
    let seq = u32::try_from(n).ok()?;
    let method = t.get(i + 1..)?;
    if !is_token_str(method) {
        return None;
    }
    Some(CSeq {
        seq,
        method: Method::from_token(method),
    })
}

/// `Retry-After: 120 (comment);duration=3600`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter<'a> {
    /// Seconds to wait.
    pub seconds: u32,
    /// The comment in parentheses, without them.
    pub comment: Option<&'a str>,
    /// Parameters (`duration`, ...).
    pub params: Params<'a>,
}

impl<'a> RetryAfter<'a> {
    /// Parses a Retry-After value.
    pub fn parse(text: &'a str) -> Result<RetryAfter<'a>, Error> {
        let bad = |why| Error::BadHeader {
            name: "Retry-After",
            why,
        };
        let t = trim(text);
        let digits_end = t
            .bytes()
            .position(|c| !c.is_ascii_digit())
            .unwrap_or(t.len());
        let seconds = parse_u32(&t[..digits_end]).ok_or(bad("delay is not a 32-bit number"))?;
        let mut rest = trim(&t[digits_end..]);
        let mut comment = None;
        if rest.starts_with('(') {
            let close = rest.rfind(')').ok_or(bad("unterminated comment"))?;
            comment = Some(&rest[1..close]);
            rest = trim(&rest[close + 1..]);
        }
        if !rest.is_empty() && !rest.starts_with(';') {
            return Err(bad("junk after the delay"));
        }
        Ok(RetryAfter {
            seconds,
            comment,
            params: Params::new(rest),
        })
    }

    /// The `duration` parameter, when present and numeric.
    pub fn duration(&self) -> Option<u32> {
        self.params.value("duration").and_then(parse_u32)
    }
}

/// One `namespace.priority` value of Resource-Priority (RFC 4412).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourcePriority<'a> {
    /// The value as written.
    pub raw: &'a str,
    /// Namespace (`ets`, `wps`, `dsn`, ...); compare case-insensitively.
    pub namespace: &'a str,
    /// Priority within the namespace (`0`, `flash`, ...).
    pub priority: &'a str,
}

impl<'a> ResourcePriority<'a> {
    /// Parses one r-value.
    pub fn parse(text: &'a str) -> Result<ResourcePriority<'a>, Error> {
        let bad = |why| Error::BadHeader {
            name: "Resource-Priority",
            why,
        };
        let raw = trim(text);
        let dot = raw
            .find('.')
            .ok_or(bad("missing . between namespace and priority"))?;
        let (namespace, priority) = (&raw[..dot], &raw[dot + 1..]);
        let ok = |s: &str| !s.is_empty() && s.bytes().all(|c| is_token(c) && c != b'.');
        if !ok(namespace) || !ok(priority) {
            return Err(bad("namespace or priority is not a token"));
        }
        Ok(ResourcePriority {
            raw,
            namespace,
            priority,
        })
    }
}

/// One Reason value (RFC 3326): `SIP ;cause=503 ;text="Service Unavailable"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reason<'a> {
    /// The value as written.
    pub raw: &'a str,
    /// Protocol (`SIP`, `Q.850`, ...).
    pub protocol: &'a str,
    /// Parameters.
    pub params: Params<'a>,
}

impl<'a> Reason<'a> {
    /// Parses one Reason value.
    pub fn parse(text: &'a str) -> Result<Reason<'a>, Error> {
        let bad = |why| Error::BadHeader {
            name: "Reason",
            why,
        };
        let raw = trim(text);
        let semi = find_unquoted(raw, b';', false).unwrap_or(raw.len());
        let protocol = trim(&raw[..semi]);
        if !is_token_str(protocol) {
            return Err(bad("protocol is not a token"));
        }
        Ok(Reason {
            raw,
            protocol,
            params: Params::new(&raw[semi..]),
        })
    }

    /// The `cause` parameter, when numeric.
    pub fn cause(&self) -> Option<u32> {
        self.params.value("cause").and_then(parse_u32)
    }

    /// The `text` parameter without its quotes (escapes kept).
    pub fn text(&self) -> Option<&'a str> {
        self.params.value("text").map(unquote)
    }
}

/// The elements of one comma-separated header value, trimmed, empty ones skipped; commas
/// inside quoted strings and `<...>` do not split. For list values kept as text apart from
/// their message (a [`crate::Message`] splits its own with [`crate::Message::list_items`]).
pub fn list_items(value: &str) -> impl Iterator<Item = &str> {
    ListItems::new(value, true)
}

#[cfg(test)]
mod list_tests {
    use super::list_items;

    #[test]
    fn splits_outside_quotes_and_angles() {
        let items: Vec<&str> = list_items(" a , ,\"x\\\",y\" ,<b,c>,").collect();
        assert_eq!(items, vec!["a", "\"x\\\",y\"", "<b,c>"]);
        assert_eq!(list_items("<sip:a,b@c>, \"x,y\" <sip:d@e>").count(), 2);
        assert_eq!(list_items("").count(), 0);
    }
}

#[cfg(test)]
mod cseq_tests {
    use super::{plain_cseq, CSeq};
    use crate::scan::trim;

    #[test]
    fn the_plain_cseq_reads_as_the_general_one() {
        for text in [
            "1 INVITE",
            "4711 ACK",
            "0 BYE",
            "00001 OPTIONS",
            "4294967295 INVITE",
            "4294967296 INVITE",
            "9999999999 INVITE",
            "0000000000001 INVITE",
            "12345678901 INVITE",
            "1  INVITE",
            "1\tINVITE",
            "1\r\n INVITE",
            "1 INVITE x",
            "1 INV<ITE",
            "1 invite",
            "1 ",
            "1",
            " 7 CANCEL ",
            "-1 INVITE",
            "1a INVITE",
            "1 \u{e9}",
        ] {
            let t = trim(text);
            let general = CSeq::parse_general(t);
            if let Some(plain) = plain_cseq(t) {
                assert_eq!(Ok(plain), general, "{text:?}");
            }
            assert_eq!(CSeq::parse(text), general, "{text:?}");
        }
    }
}
