//! Byte-level tokenising shared by the header parsers.
//!
//! Folded header values are never unfolded into a copy: every routine here treats CR and LF
//! inside a value as whitespace, which is exactly what folding means (RFC 3261 §7.3.1).

/// Whitespace inside a header value, folding included.
#[inline]
pub(crate) fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// `token` characters of RFC 3261 §25.1.
#[inline]
pub(crate) fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

/// Trims linear whitespace (folding included) on both ends.
#[inline]
pub(crate) fn trim(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_ascii() && is_ws(c as u8))
}

/// True when `s` is a non-empty token.
pub(crate) fn is_token_str(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token)
}

/// Parses decimal digits (leading zeros allowed) into a u32; `None` on anything else or overflow.
pub(crate) fn parse_u32(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let significant = s.trim_start_matches('0');
    if significant.len() > 10 {
        return None;
    }
    let mut n: u32 = 0;
    for b in significant.bytes() {
        n = n.checked_mul(10)?.checked_add(u32::from(b - b'0'))?;
    }
    Some(n)
}

/// Index of the first `needle` in `s` that is outside a quoted string (and, when `angles` is
/// set, outside `<...>`).
pub(crate) fn find_unquoted(s: &str, needle: u8, angles: bool) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut in_quote = false;
    let mut in_angle = false;
    while i < b.len() {
        let c = b[i];
        if in_quote {
            match c {
                b'\\' => i += 1,
                b'"' => in_quote = false,
                _ => {}
            }
        } else if in_angle {
            if c == b'>' {
                in_angle = false;
            }
        } else if c == needle {
            return Some(i);
        } else if c == b'"' {
            in_quote = true;
        } else if angles && c == b'<' {
            in_angle = true;
        }
        i += 1;
    }
    None
}

/// Iterator over the comma-separated elements of a list header value, each trimmed, empty
/// elements skipped. Commas inside quoted strings and `<...>` do not split.
#[derive(Debug, Clone)]
pub(crate) struct ListItems<'a> {
    rest: &'a str,
    angles: bool,
}

impl<'a> ListItems<'a> {
    pub(crate) fn new(value: &'a str, angles: bool) -> Self {
        ListItems {
            rest: value,
            angles,
        }
    }
}

impl<'a> Iterator for ListItems<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        loop {
            if self.rest.is_empty() {
                return None;
            }
            let (item, rest) = match find_unquoted(self.rest, b',', self.angles) {
                Some(i) => (&self.rest[..i], &self.rest[i + 1..]),
                None => (self.rest, ""),
            };
            self.rest = rest;
            let item = trim(item);
            if !item.is_empty() {
                return Some(item);
            }
        }
    }
}

/// Byte offset of `inner` within `outer`; `inner` must be a sub-slice of `outer`.
#[inline]
pub(crate) fn offset_in(outer: &[u8], inner: &[u8]) -> usize {
    (inner.as_ptr() as usize).wrapping_sub(outer.as_ptr() as usize)
}

/// Case-insensitive ASCII prefix test.
#[inline]
pub(crate) fn starts_with_ci(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// Strips one pair of surrounding double quotes, if present.
pub(crate) fn unquote(s: &str) -> &str {
    if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
        &s[1..s.len() - 1]
    } else {
        s
    }
}
