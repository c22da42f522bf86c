//! name-addr and addr-spec values: From, To, Contact, Route, Record-Route (RFC 3261 §20).
//!
//! `"Display" <uri>;params` and bare `uri;params`. In the bare form the parameters belong to
//! the header, not the URI, which is why a bare URI may not contain `;`, `,` or `?`
//! (RFC 3261 §20; RFC 4475 `regbadct`).

use crate::params::Params;
use crate::scan::{eq_letters_ci, find_unquoted, is_token, is_ws, parse_u32, trim};
use crate::uri::Uri;
use crate::Error;

/// A parsed name-addr or addr-spec with header parameters, borrowed from the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameAddr<'a> {
    raw: &'a str,
    display: Option<&'a str>,
    uri: Uri<'a>,
    params: Params<'a>,
    tag: Option<&'a str>,
}

impl<'a> NameAddr<'a> {
    /// Parses one value. `header` names the header for error messages.
    pub fn parse(text: &'a str, header: &'static str) -> Result<NameAddr<'a>, Error> {
        let bad = |why| Error::BadHeader { name: header, why };
        let raw = trim(text);
        if raw.is_empty() {
            return Err(bad("empty value"));
        }
        // `<sip:...>` without a display name, the form proxies and phones write: the URI and
        // its closing `>` in one scan (what the general reading below finds too).
        if let Some((uri, end)) = raw.strip_prefix('<').and_then(crate::uri::plain_sip_prefix) {
            let rest = trim(raw.get(end + 2..).unwrap_or(""));
            if rest.is_empty() || rest.starts_with(';') {
                let params = Params::new(rest);
                let tag = check_params(&params).map_err(bad)?;
                return Ok(NameAddr {
                    raw,
                    display: None,
                    uri,
                    params,
                    tag,
                });
            }
        }
        match find_unquoted(raw, b'<', false) {
            Some(lt) => {
                let display_text = trim(&raw[..lt]);
                let display = if display_text.is_empty() {
                    None
                } else {
                    Some(parse_display(display_text).ok_or(bad("malformed display name"))?)
                };
                let after_lt = &raw[lt + 1..];
                let gt = after_lt.find('>').ok_or(bad("missing >"))?;
                let uri_text = &after_lt[..gt];
                let uri = Uri::parse(uri_text).map_err(|e| bad(e.0))?;
                let rest = trim(&after_lt[gt + 1..]);
                if !rest.is_empty() && !rest.starts_with(';') {
                    return Err(bad("junk after >"));
                }
                let params = Params::new(rest);
                let tag = check_params(&params).map_err(bad)?;
                Ok(NameAddr {
                    raw,
                    display,
                    uri,
                    params,
                    tag,
                })
            }
            None => {
                if raw.contains('"') {
                    return Err(bad(
                        "quoted display name without <uri>, or unbalanced quote",
                    ));
                }
                let end = raw.find(';').unwrap_or(raw.len());
                let uri_text = trim(&raw[..end]);
                if uri_text.contains(['?', ',']) {
                    return Err(bad("URI with ? or , must be enclosed in <>"));
                }
                let uri = Uri::parse(uri_text).map_err(|e| bad(e.0))?;
                let params = Params::new(&raw[end..]);
                let tag = check_params(&params).map_err(bad)?;
                Ok(NameAddr {
                    raw,
                    display: None,
                    uri,
                    params,
                    tag,
                })
            }
        }
    }

    /// The value exactly as written (trimmed).
    pub fn raw(&self) -> &'a str {
        self.raw
    }

    /// The display name: the inside of the quotes (escapes kept as written) or the tokens as
    /// written. `None` when absent.
    pub fn display_name(&self) -> Option<&'a str> {
        self.display
    }

    /// The URI.
    pub fn uri(&self) -> Uri<'a> {
        self.uri
    }

    /// Header parameters (after `>` or after the bare URI).
    pub fn params(&self) -> Params<'a> {
        self.params
    }

    /// The `tag` parameter (From/To).
    pub fn tag(&self) -> Option<&'a str> {
        self.tag
    }

    /// The `expires` parameter of a Contact. `Err` when present but not a 32-bit number.
    pub fn expires(&self) -> Result<Option<u32>, Error> {
        match self.params.get("expires") {
            None => Ok(None),
            Some(v) => v.and_then(parse_u32).map(Some).ok_or(Error::BadHeader {
                name: "Contact",
                why: "expires parameter is not a 32-bit number",
            }),
        }
    }

    /// The `q` parameter of a Contact, as written.
    pub fn q(&self) -> Option<&'a str> {
        self.params.value("q")
    }
}

/// One Contact value: `*` or an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
// Boxing the address would put a heap allocation on the hot path; the size is fine on the stack.
#[allow(clippy::large_enum_variant)]
pub enum Contact<'a> {
    /// `Contact: *` (only meaningful in a REGISTER with `Expires: 0`).
    Wildcard(&'a str),
    /// An address with its parameters.
    Addr(NameAddr<'a>),
}

impl<'a> Contact<'a> {
    /// Parses one Contact value.
    pub fn parse(text: &'a str) -> Result<Contact<'a>, Error> {
        let t = trim(text);
        if t == "*" {
            return Ok(Contact::Wildcard(t));
        }
        NameAddr::parse(t, "Contact").map(Contact::Addr)
    }

    /// The value exactly as written.
    pub fn raw(&self) -> &'a str {
        match self {
            Contact::Wildcard(s) => s,
            Contact::Addr(a) => a.raw(),
        }
    }

    /// The address, unless this is the wildcard.
    pub fn addr(&self) -> Option<&NameAddr<'a>> {
        match self {
            Contact::Wildcard(_) => None,
            Contact::Addr(a) => Some(a),
        }
    }

    /// True for `*`.
    pub fn is_wildcard(&self) -> bool {
        matches!(self, Contact::Wildcard(_))
    }
}

/// A display name: one quoted string (returned without its quotes) or tokens separated by LWS.
fn parse_display(s: &str) -> Option<&str> {
    let b = s.as_bytes();
    if b[0] == b'"' {
        // The quoted string must end exactly at the end of `s`.
        let mut i = 1;
        while i < b.len() {
            match b[i] {
                b'\\' => i += 2,
                b'"' => return (i == b.len() - 1).then(|| &s[1..i]),
                _ => i += 1,
            }
        }
        return None;
    }
    b.iter()
        .all(|&c| is_token(c) || is_ws(c) || c >= 0x80)
        .then_some(s)
}

/// Parameter names must be tokens and no parameter may be empty; returns the tag on the way.
#[inline]
fn check_params<'a>(p: &Params<'a>) -> Result<Option<&'a str>, &'static str> {
    let mut tag = None;
    p.check(|name, value| {
        if tag.is_none() && eq_letters_ci(name, "tag") {
            tag = value;
        }
    })?;
    Ok(tag)
}
