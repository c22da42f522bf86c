//! `;name=value` parameter lists, as found after URIs, name-addrs and Via hops.

use crate::scan::{find_unquoted, trim, unquote};

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
        ParamIter { rest: self.raw }
    }

    /// The parameter named `name`: `None` when absent, `Some(None)` for a bare name,
    /// `Some(Some(v))` with a value.
    pub fn get(&self, name: &str) -> Option<Option<&'a str>> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// True when the list holds an empty parameter (`;;` or a trailing `;`), which the
    /// grammar does not allow.
    pub(crate) fn has_empty(&self) -> bool {
        let mut rest = self.raw;
        while let Some(i) = find_unquoted(rest, b';', false) {
            rest = &rest[i + 1..];
            let end = find_unquoted(rest, b';', false).unwrap_or(rest.len());
            if trim(&rest[..end]).is_empty() {
                return true;
            }
        }
        false
    }

    /// The value of `name`, when it is present with a value.
    pub fn value(&self, name: &str) -> Option<&'a str> {
        self.get(name).flatten()
    }

    /// True when `name` is present (with or without value).
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

/// Iterator over `(name, value)` pairs of a [`Params`].
#[derive(Debug, Clone)]
pub struct ParamIter<'a> {
    rest: &'a str,
}

impl<'a> Iterator for ParamIter<'a> {
    type Item = (&'a str, Option<&'a str>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.rest.is_empty() {
                return None;
            }
            // Skip to the start of a parameter.
            let start = match find_unquoted(self.rest, b';', false) {
                Some(i) => i + 1,
                None => {
                    self.rest = "";
                    return None;
                }
            };
            let after = &self.rest[start..];
            let end = find_unquoted(after, b';', false).unwrap_or(after.len());
            let piece = &after[..end];
            self.rest = &after[end..];
            let piece = trim(piece);
            if piece.is_empty() {
                continue;
            }
            return Some(match piece.find('=') {
                Some(eq) => (trim(&piece[..eq]), Some(unquote(trim(&piece[eq + 1..])))),
                None => (piece, None),
            });
        }
    }
}

impl<'a> IntoIterator for Params<'a> {
    type Item = (&'a str, Option<&'a str>);
    type IntoIter = ParamIter<'a>;
    fn into_iter(self) -> ParamIter<'a> {
        self.iter()
    }
}
