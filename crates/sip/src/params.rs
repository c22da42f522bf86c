//! `;name=value` parameter lists, as found after URIs, name-addrs and Via hops.

use crate::scan::{is_token_str, plain_value_end, token_end, trim, unquote};

/// A borrowed parameter list: the raw text starting at the first `;` (or empty).
///
/// Names compare case-insensitively (RFC 3261 §7.3.1). Values are returned without surrounding
/// quotes but otherwise as written (escapes inside quoted strings are not expanded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Params<'a> {
    raw: &'a str,
}

impl<'a> Params<'a> {
    /// Wraps raw parameter text (`;a=b;c`); anything before the first `;` is ignored.
    pub fn new(raw: &'a str) -> Self {
        Params { raw }
    }

    /// The raw text as written, starting at the first `;` (empty when there are none).
    pub fn as_str(&self) -> &'a str {
        self.raw
    }

    /// True when there is no parameter.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// Every parameter in order: `(name, value)`; `value` is `None` for a bare name.
    pub fn iter(&self) -> ParamIter<'a> {
        let b = self.raw.as_bytes();
        ParamIter {
            raw: self.raw,
            pos: next_semi(b, 0),
        }
    }

    /// The parameter named `name`: `None` when absent, `Some(None)` for a bare name,
    /// `Some(Some(v))` with a value.
    pub fn get(&self, name: &str) -> Option<Option<&'a str>> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The value of `name`, when it is present with a value.
    pub fn value(&self, name: &str) -> Option<&'a str> {
        self.get(name).flatten()
    }

    /// True when `name` is present (with or without value).
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// One pass over the list for the parsers: calls `seen(name, value)` for every parameter;
    /// `Err` on an empty parameter, a name that is not a token or an empty value. Always
    /// inlined: each parser's `seen` then runs in its loop without a call per parameter.
    #[inline(always)]
    pub(crate) fn check(
        &self,
        mut seen: impl FnMut(&'a str, Option<&'a str>),
    ) -> Result<(), &'static str> {
        let b = self.raw.as_bytes();
        let mut pos = next_semi(b, 0);
        while pos < b.len() {
            // One call of `seen` for both readings, which the compiler then inlines.
            let (name, value, end) = match simple_param(self.raw, pos) {
                Some(found) => found,
                None => general_param(self.raw, pos)?,
            };
            seen(name, value);
            pos = end;
        }
        Ok(())
    }
}

/// The parameter after the `;` at `semi` by the general rules, with the position of the `;`
/// after it; the errors of an empty parameter, a name that is not a token or an empty value.
fn general_param(raw: &str, semi: usize) -> Result<(&str, Option<&str>, usize), &'static str> {
    let end = next_semi(raw.as_bytes(), semi + 1);
    let (name, value) =
        split_param(raw.get(semi + 1..end).unwrap_or("")).ok_or("empty parameter")?;
    if !is_token_str(name) {
        return Err("parameter name is not a token");
    }
    if value == Some("") {
        return Err("parameter with = but no value");
    }
    Ok((name, value, end))
}

/// The parameter after the `;` at `semi` when it is written the plain way (a token name, and
/// `=` with a value free of whitespace, quotes and `;`), with the position of the `;` after
/// it: one pass over its bytes instead of splitting and trimming. `None` for anything else,
/// which [`split_param`] reads with the general rules (the two agree where both apply).
/// Always inlined into the check's loop: it runs for every parameter.
#[inline(always)]
fn simple_param(raw: &str, semi: usize) -> Option<(&str, Option<&str>, usize)> {
    let b = raw.as_bytes();
    let start = semi + 1;
    let i = token_end(b, start);
    if i == start {
        return None;
    }
    let name = raw.get(start..i)?;
    match b.get(i) {
        None | Some(b';') => Some((name, None, i)),
        Some(b'=') => {
            let value_start = i + 1;
            let j = plain_value_end(b, value_start);
            if j == value_start || !matches!(b.get(j), None | Some(b';')) {
                return None;
            }
            Some((name, Some(raw.get(value_start..j)?), j))
        }
        Some(_) => None,
    }
}

/// Index of the next `;` outside a quoted string at or after `from` (`b.len()` when none).
fn next_semi(b: &[u8], from: usize) -> usize {
    let mut i = from;
    while i < b.len() {
        match b[i] {
            b';' => return i,
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            _ => {}
        }
        i += 1;
    }
    b.len()
}

/// Splits one parameter (text between two `;`) into trimmed name and unquoted value; `None`
/// when it is empty.
fn split_param(piece: &str) -> Option<(&str, Option<&str>)> {
    let piece = trim(piece);
    if piece.is_empty() {
        return None;
    }
    Some(match memchr::memchr(b'=', piece.as_bytes()) {
        Some(eq) => (trim(&piece[..eq]), Some(unquote(trim(&piece[eq + 1..])))),
        None => (piece, None),
    })
}

/// Iterator over `(name, value)` pairs of a [`Params`]; empty parameters are skipped.
#[derive(Debug, Clone)]
pub struct ParamIter<'a> {
    raw: &'a str,
    /// Position of the `;` before the next parameter.
    pos: usize,
}

impl<'a> Iterator for ParamIter<'a> {
    type Item = (&'a str, Option<&'a str>);

    fn next(&mut self) -> Option<Self::Item> {
        let b = self.raw.as_bytes();
        while self.pos < b.len() {
            if let Some((name, value, end)) = simple_param(self.raw, self.pos) {
                self.pos = end;
                return Some((name, value));
            }
            let end = next_semi(b, self.pos + 1);
            let piece = self.raw.get(self.pos + 1..end).unwrap_or("");
            self.pos = end;
            if let Some(p) = split_param(piece) {
                return Some(p);
            }
        }
        None
    }
}

impl<'a> IntoIterator for Params<'a> {
    type Item = (&'a str, Option<&'a str>);
    type IntoIter = ParamIter<'a>;
    fn into_iter(self) -> ParamIter<'a> {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_values_quotes_and_whitespace() {
        let p = Params::new(r#" ; lr ;Transport = TCP; text="a;b\"c" ;x"#);
        let all: Vec<_> = p.iter().collect();
        assert_eq!(
            all,
            [
                ("lr", None),
                ("Transport", Some("TCP")),
                ("text", Some(r#"a;b\"c"#)),
                ("x", None)
            ]
        );
        assert_eq!(p.value("transport"), Some("TCP"));
        assert!(p.has("LR"));
        assert_eq!(p.get("missing"), None);
        assert!(p.check(|_, _| {}).is_ok());
    }

    #[test]
    fn empty_and_malformed_parameters_are_refused() {
        for bad in [";;a", ";a;", ";a=", "; =b", ";a b"] {
            assert!(Params::new(bad).check(|_, _| {}).is_err(), "{bad}");
        }
        assert!(Params::new("").is_empty());
        assert!(Params::new("no-semicolon").is_empty());
    }
}
