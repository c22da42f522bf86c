//! Byte-level tokenising shared by the header parsers.
//!
//! Folded header values are never unfolded into a copy: every routine here treats CR and LF
//! inside a value as whitespace, which is exactly what folding means (RFC 3261 §7.3.1).

/// Character classes of RFC 3261 §25.1, one bit each, looked up in [`CLASS`].
pub(crate) const WS: u8 = 1;
/// `token` characters.
pub(crate) const TOKEN: u8 = 2;
/// `unreserved` (alphanum and mark).
pub(crate) const UNRESERVED: u8 = 4;
/// Extra characters of a URI user part (`user-unreserved` plus `%`).
pub(crate) const USER: u8 = 8;
/// Extra characters of a URI password.
pub(crate) const PASSWORD: u8 = 16;
/// Extra characters of URI parameters (`param-unreserved`, `%`, `;`, `=`).
pub(crate) const PARAM: u8 = 32;
/// Extra characters of URI headers (`hnv-unreserved`, `%`, `&`, `=`).
pub(crate) const HEADER: u8 = 64;
/// Host name characters (alphanum, `-`, `.`).
pub(crate) const HOST: u8 = 128;

const fn build_classes() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        let alnum = b.is_ascii_alphanumeric();
        let mut v = 0;
        if matches!(b, b' ' | b'\t' | b'\r' | b'\n') {
            v |= WS;
        }
        if alnum
            || matches!(
                b,
                b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            )
        {
            v |= TOKEN;
        }
        if alnum
            || matches!(
                b,
                b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
            )
        {
            v |= UNRESERVED;
        }
        if matches!(
            b,
            b'%' | b'&' | b'=' | b'+' | b'$' | b',' | b';' | b'?' | b'/'
        ) {
            v |= USER;
        }
        if matches!(b, b'%' | b'&' | b'=' | b'+' | b'$' | b',') {
            v |= PASSWORD;
        }
        if matches!(
            b,
            b'%' | b'[' | b']' | b'/' | b':' | b'&' | b'+' | b'$' | b';' | b'='
        ) {
            v |= PARAM;
        }
        if matches!(
            b,
            b'%' | b'[' | b']' | b'/' | b'?' | b':' | b'+' | b'$' | b'&' | b'='
        ) {
            v |= HEADER;
        }
        if alnum || b == b'-' || b == b'.' {
            v |= HOST;
        }
        t[c] = v;
        c += 1;
    }
    t
}

/// Class bits of every byte.
pub(crate) static CLASS: [u8; 256] = build_classes();

/// True when `b` has any of the `classes` bits.
#[inline]
pub(crate) fn is(b: u8, classes: u8) -> bool {
    CLASS[usize::from(b)] & classes != 0
}

/// True when every byte of `s` has one of the `classes` bits.
#[inline]
pub(crate) fn all(s: &[u8], classes: u8) -> bool {
    s.iter().all(|&b| is(b, classes))
}

/// Whitespace inside a header value, folding included.
#[inline]
pub(crate) fn is_ws(b: u8) -> bool {
    is(b, WS)
}

/// `token` characters of RFC 3261 §25.1.
#[inline]
pub(crate) fn is_token(b: u8) -> bool {
    is(b, TOKEN)
}

/// Trims linear whitespace (folding included) on both ends.
#[inline]
pub(crate) fn trim(s: &str) -> &str {
    let b = s.as_bytes();
    // Most text handed here is trimmed already (header values are): no slicing then.
    match (b.first(), b.last()) {
        (Some(&first), Some(&last)) if !is_ws(first) && !is_ws(last) => return s,
        _ => {}
    }
    let mut start = 0;
    let mut end = b.len();
    while start < end && is_ws(b[start]) {
        start += 1;
    }
    while end > start && is_ws(b[end - 1]) {
        end -= 1;
    }
    // Both ends sit next to ASCII whitespace or at the ends: valid char boundaries.
    s.get(start..end).unwrap_or("")
}

/// True when `s` holds linear whitespace (SP, HT, CR or LF). Eight bytes a step look for any
/// byte up to SP (a superset); only a word that has one is looked at byte by byte, and a tail
/// shorter than a word is read with the word that ends the text.
pub(crate) fn has_ws(s: &[u8]) -> bool {
    let word_has_ws = |chunk: &[u8]| {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        w.wrapping_sub(splat(0x21)) & !w & splat(0x80) != 0 && chunk.iter().any(|&b| is_ws(b))
    };
    if s.len() < 8 {
        return s.iter().any(|&b| is_ws(b));
    }
    // The bytes after the last whole word are read as the (overlapping) last eight.
    s.chunks_exact(8).any(word_has_ws) || word_has_ws(&s[s.len() - 8..])
}

/// True when `s` is a non-empty token.
pub(crate) fn is_token_str(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token)
}

/// Parses decimal digits (leading zeros allowed) into a u32; `None` on anything else or overflow.
#[inline]
pub(crate) fn parse_u32(s: &str) -> Option<u32> {
    parse_u32_bytes(s.as_bytes())
}

/// [`parse_u32`] on bytes: one pass, no UTF-8 check needed (any byte that is not a digit is
/// refused).
pub(crate) fn parse_u32_bytes(b: &[u8]) -> Option<u32> {
    // Nine digits or fewer never overflow a u32: one fold, without the count of significant
    // digits below (Max-Forwards, CSeq numbers and Content-Length are short).
    if (1..=9).contains(&b.len()) {
        let mut n = 0u32;
        for &c in b {
            if !c.is_ascii_digit() {
                return None;
            }
            n = n * 10 + u32::from(c - b'0');
        }
        return Some(n);
    }
    if b.is_empty() {
        return None;
    }
    // Up to ten significant digits fit in a u64 without overflow; more never fit in a u32.
    let (mut n, mut significant) = (0u64, 0usize);
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        if n != 0 || c != b'0' {
            significant += 1;
            if significant > 10 {
                // Keep checking that the rest are digits: the answer is `None` either way.
                continue;
            }
            n = n * 10 + u64::from(c - b'0');
        }
    }
    if significant > 10 {
        return None;
    }
    u32::try_from(n).ok()
}

/// Index of the first `needle` in `s` that is outside a quoted string (and, when `angles` is
/// set, outside `<...>`).
pub(crate) fn find_unquoted(s: &str, needle: u8, angles: bool) -> Option<usize> {
    use memchr::{memchr, memchr2, memchr3};
    let b = s.as_bytes();
    let mut i = 0;
    loop {
        let rest = b.get(i..)?;
        // Jump to the next byte that matters instead of walking every byte.
        let rel = if angles {
            memchr3(needle, b'"', b'<', rest)
        } else {
            memchr2(needle, b'"', rest)
        }?;
        let p = i + rel;
        let c = b[p];
        if c == needle {
            return Some(p);
        }
        if c == b'"' {
            // Skip the quoted string; an unterminated one hides everything after it.
            let mut j = p + 1;
            loop {
                let q = j + memchr2(b'"', b'\\', b.get(j..)?)?;
                if b[q] == b'\\' {
                    j = q + 2;
                } else {
                    i = q + 1;
                    break;
                }
            }
        } else {
            // `<`: skip to the matching `>`.
            i = p + 1 + memchr(b'>', b.get(p + 1..)?)? + 1;
        }
    }
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
            // Most values hold no comma at all, and then none is outside quotes or `<...>`:
            // one search instead of stepping over every quote and angle bracket.
            let comma = match memchr::memchr(b',', self.rest.as_bytes()) {
                None => None,
                Some(_) => find_unquoted(self.rest, b',', self.angles),
            };
            let (item, rest) = match comma {
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

/// `s.eq_ignore_ascii_case(lower)` for a `lower` of lower-case ASCII letters only (a
/// parameter name the parsers look for): a byte matches a letter when it is that letter with
/// or without the case bit, which `| 0x20` tests without a lower-casing of both sides.
///
/// A name of up to eight bytes is compared as one word: the callers' names are literals, so
/// the word of `lower` and the case bits are constants, and the test is a load, an `|` and a
/// compare instead of a compare per byte.
#[inline(always)]
pub(crate) fn eq_letters_ci(s: &str, lower: &str) -> bool {
    debug_assert!(lower.bytes().all(|b| b.is_ascii_lowercase()));
    let (s, lower) = (s.as_bytes(), lower.as_bytes());
    let n = lower.len();
    if s.len() != n {
        return false;
    }
    if n <= 8 {
        let (mut a, mut b) = ([0u8; 8], [0u8; 8]);
        a[..n].copy_from_slice(s);
        b[..n].copy_from_slice(lower);
        // The case bit of each of the `n` bytes (the padding bytes are zero on both sides).
        let case = splat(0x20) & u64::MAX.checked_shr(64 - 8 * n as u32).unwrap_or(0);
        return u64::from_le_bytes(a) | case == u64::from_le_bytes(b);
    }
    s.iter().zip(lower).all(|(a, b)| a | 0x20 == *b)
}

/// Case-insensitive ASCII prefix test.
#[inline]
pub(crate) fn starts_with_ci(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// `s.eq_ignore_ascii_case(b"SIP/2.0")`, read as one pattern: `| 0x20` folds exactly the two
/// cases of a letter, and the other bytes compare as they are (every message has the version
/// once, a request twice with the plausibility check).
#[inline]
pub(crate) fn is_sip_2_0(s: &[u8]) -> bool {
    matches!(s, [a, b, c, b'/', b'2', b'.', b'0'] if [*a | 0x20, *b | 0x20, *c | 0x20] == *b"sip")
}

/// `s` starts with `SIP/` in any letter case, as [`is_sip_2_0`] compares it.
#[inline]
pub(crate) fn starts_with_sip_slash(s: &[u8]) -> bool {
    matches!(s, [a, b, c, b'/', ..] if [*a | 0x20, *b | 0x20, *c | 0x20] == *b"sip")
}

/// Strips one pair of surrounding double quotes, if present.
pub(crate) fn unquote(s: &str) -> &str {
    if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
        &s[1..s.len() - 1]
    } else {
        s
    }
}

/// Eight copies of byte `b`.
#[inline]
const fn splat(b: u8) -> u64 {
    0x0101_0101_0101_0101 * b as u64
}

/// High bit set in every byte of `w` that is zero; exact for the lowest such byte, which is
/// all the scanners below read.
#[inline]
const fn zero_bytes(w: u64) -> u64 {
    w.wrapping_sub(splat(1)) & !w & splat(0x80)
}

/// Index of the first `:` or `\n` at or after `from` (`b.len()` when none), eight bytes a
/// step: where a header line's name ends, or shows that it has no colon.
#[inline]
pub(crate) fn colon_or_newline(b: &[u8], from: usize) -> usize {
    let mut i = from;
    while let Some(chunk) = b.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        let hits = zero_bytes(w ^ splat(b':')) | zero_bytes(w ^ splat(b'\n'));
        if hits != 0 {
            return i + (hits.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < b.len() && !matches!(b[i], b':' | b'\n') {
        i += 1;
    }
    i
}

/// Index of the first `\n` at or after `from` (`b.len()` when none), and whether a `,` comes
/// before it. The header pass reads a value's end this way and notes for the list readers
/// whether it can hold more than one element: one search for either byte, a second one only
/// past a comma.
#[inline]
pub(crate) fn newline_and_comma(b: &[u8], from: usize) -> (usize, bool) {
    let rest = b.get(from..).unwrap_or(&[]);
    match memchr::memchr2(b'\n', b',', rest) {
        None => (b.len(), false),
        Some(i) if rest[i] == b'\n' => (from + i, false),
        Some(i) => {
            let after = from + i + 1;
            let nl = memchr::memchr(b'\n', &b[after..]).map_or(b.len(), |j| after + j);
            (nl, true)
        }
    }
}

/// Index of the first byte at or after `from` that is not a `token` character (`b.len()` when
/// all are). Parameter names (`branch`, `tag`, `lr`, `rport`) are mostly lower-case letters:
/// the run of those at the start is found eight bytes at once, and only what follows it is
/// looked up a byte at a time.
#[inline]
pub(crate) fn token_end(b: &[u8], from: usize) -> usize {
    let mut i = from;
    if let Some(chunk) = b.get(from..from.wrapping_add(8)) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        i += lower_letters_in(u64::from_le_bytes(word));
    }
    while i < b.len() && is_token(b[i]) {
        i += 1;
    }
    i
}

/// How many of the bytes of `w` (little-endian), from the first on, are `a`..=`z`.
#[inline]
const fn lower_letters_in(w: u64) -> usize {
    // For a byte below 0x80, `+ 0x1f` sets its high bit exactly when it is at least `a`, and
    // `+ 0x05` exactly when it is above `z`; neither carries into the next byte.
    let low = w & splat(0x7f);
    let at_least_a = low.wrapping_add(splat(0x1f));
    let above_z = low.wrapping_add(splat(0x05));
    let letters = at_least_a & !above_z & !w & splat(0x80);
    ((!letters & splat(0x80)).trailing_zeros() / 8) as usize
}

/// Index of the first byte at or after `from` that ends a plain parameter value: whitespace or
/// a control character (anything up to SP), `;`, `"` or DEL; `b.len()` when none does. Eight
/// bytes per step (SWAR): values are long (branch ids, tags, route tokens).
#[inline]
pub(crate) fn plain_value_end(b: &[u8], from: usize) -> usize {
    let mut i = from;
    while let Some(chunk) = b.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        // Bytes below 0x21 (high bit clear: 0x80 and above are not flagged).
        let low = w.wrapping_sub(splat(0x21)) & !w & splat(0x80);
        let hits = low
            | zero_bytes(w ^ splat(b';'))
            | zero_bytes(w ^ splat(b'"'))
            | zero_bytes(w ^ splat(0x7f));
        if hits != 0 {
            return i + (hits.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < b.len() && !matches!(b[i], 0..=b' ' | b';' | b'"' | 0x7f) {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::{find_unquoted, plain_value_end};

    #[test]
    fn parse_u32_reads_as_a_checked_fold_does() {
        let slow = |s: &str| -> Option<u32> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let significant = s.trim_start_matches('0');
            if significant.len() > 10 {
                return None;
            }
            significant.bytes().try_fold(0u32, |n, b| {
                n.checked_mul(10)?.checked_add(u32::from(b - b'0'))
            })
        };
        for s in [
            "",
            "0",
            "00",
            "7",
            "070",
            "4294967295",
            "4294967296",
            "04294967295",
            "9999999999",
            "99999999999",
            "00000000000000000001",
            "12a",
            "-1",
            " 1",
            "1 ",
            "\u{e9}",
            "+5",
            "1000000000",
            "10000000000",
            "999999999",
            "000000000",
            "12345678a",
            "a23456789",
            "0999999999",
            "1234 5678",
        ] {
            assert_eq!(super::parse_u32(s), slow(s), "{s:?}");
            assert_eq!(super::parse_u32_bytes(s.as_bytes()), slow(s), "{s:?}");
        }
        assert_eq!(super::parse_u32_bytes(b"1\xff"), None);
    }

    #[test]
    fn find_unquoted_skips_quotes_and_angles() {
        assert_eq!(find_unquoted(r#""a,b" <sip:x,y>, z"#, b',', true), Some(15));
        assert_eq!(
            find_unquoted(r#""a,b" <sip:x,y>, z"#, b',', false),
            Some(12)
        );
        assert_eq!(find_unquoted(r#""a\",b", c"#, b',', true), Some(7));
        assert_eq!(find_unquoted(r#""unterminated, x"#, b',', true), None);
        assert_eq!(find_unquoted("<sip:x, y", b',', true), None);
        assert_eq!(find_unquoted("abc", b',', true), None);
        assert_eq!(find_unquoted("", b',', true), None);
    }

    #[test]
    fn colon_or_newline_agrees_with_a_byte_loop() {
        let slow = |b: &[u8], from: usize| {
            (from..b.len())
                .find(|&i| matches!(b[i], b':' | b'\n'))
                .unwrap_or(b.len())
        };
        let mut samples: Vec<Vec<u8>> = vec![b"".to_vec(), b"Via: x".to_vec()];
        for stop in [b':', b'\n', b';', b'\r', 0x3b, 0x0b, 0xba, 0x8a] {
            for len in 0..20 {
                for at in 0..=len {
                    let mut v: Vec<u8> = (0..len).map(|i| b'A' + (i % 26) as u8).collect();
                    if at < len {
                        v[at] = stop;
                        if at + 3 < len {
                            v[at + 3] = b':';
                        }
                    }
                    samples.push(v);
                }
            }
        }
        for s in &samples {
            for from in 0..=s.len() {
                assert_eq!(
                    super::colon_or_newline(s, from),
                    slow(s, from),
                    "{s:?} from {from}"
                );
            }
        }
    }

    #[test]
    fn newline_and_comma_agrees_with_a_byte_loop() {
        let slow = |b: &[u8], from: usize| {
            let nl = (from..b.len()).find(|&i| b[i] == b'\n').unwrap_or(b.len());
            (nl, b[from..nl].contains(&b','))
        };
        let mut samples: Vec<Vec<u8>> = vec![b"".to_vec(), b"a, b\r\n".to_vec()];
        for first in [b'\n', b',', b'\r', 0x2d, 0x0b, 0x8a, 0xac] {
            for second in [b'\n', b',', b'x', 0x2b] {
                for len in 0..20 {
                    for at in 0..=len {
                        let mut v: Vec<u8> = (0..len).map(|i| b'A' + (i % 26) as u8).collect();
                        if at < len {
                            v[at] = first;
                            for gap in [1, 2, 5, 9] {
                                if at + gap < len {
                                    let mut w = v.clone();
                                    w[at + gap] = second;
                                    samples.push(w);
                                }
                            }
                        }
                        samples.push(v);
                    }
                }
            }
        }
        for s in &samples {
            for from in 0..=s.len() {
                assert_eq!(
                    super::newline_and_comma(s, from),
                    slow(s, from),
                    "{s:?} from {from}"
                );
            }
        }
    }

    #[test]
    fn the_sip_version_patterns_are_eq_ignore_ascii_case() {
        let mut samples: Vec<Vec<u8>> = [
            "SIP/2.0", "sip/2.0", "SiP/2.0", "SIP/2.0 ", "SIP/2.", "SIP/", "SIP", "",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        // Every byte in every position, the case bit's neighbours included.
        for at in 0..7 {
            for b in 0..=u8::MAX {
                let mut v = b"SIP/2.0".to_vec();
                v[at] = b;
                samples.push(v.clone());
                v.push(b'x');
                samples.push(v);
            }
        }
        for s in &samples {
            assert_eq!(
                super::is_sip_2_0(s),
                s.eq_ignore_ascii_case(b"SIP/2.0"),
                "{s:?}"
            );
            assert_eq!(
                super::starts_with_sip_slash(s),
                s.len() >= 4 && s[..4].eq_ignore_ascii_case(b"SIP/"),
                "{s:?}"
            );
        }
    }

    #[test]
    fn eq_letters_ci_is_eq_ignore_ascii_case_for_lower_case_letters() {
        // Every length up to a word, and one past it (compared byte by byte).
        let names = [
            "branch",
            "received",
            "rport",
            "tag",
            "lr",
            "x",
            "",
            "abcd",
            "maddr",
            "abcdefg",
            "transport",
        ];
        let mut samples: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        samples.extend(names.iter().map(|s| s.to_ascii_uppercase()));
        samples.extend(
            [
                "Branch", "bRaNcH", "branc", "branchh", "", "\u{e9}", "TAG", "t@g",
            ]
            .map(String::from),
        );
        // Every byte in every position of a few names: the case bit's neighbours included.
        for name in ["tag", "rport", "branch", "received", "transport"] {
            for at in 0..name.len() {
                for b in 0..=0x7fu8 {
                    let mut v = name.as_bytes().to_vec();
                    v[at] = b;
                    samples.push(String::from_utf8(v).unwrap());
                }
            }
        }
        for s in &samples {
            for lower in names {
                assert_eq!(
                    super::eq_letters_ci(s, lower),
                    s.eq_ignore_ascii_case(lower),
                    "{s:?} {lower}"
                );
            }
        }
    }

    #[test]
    fn trim_trims_linear_whitespace_only() {
        fn slow(s: &str) -> &str {
            s.trim_matches(|c| matches!(c, ' ' | '\t' | '\r' | '\n'))
        }
        for s in [
            "",
            " ",
            "\t\r\n ",
            "a",
            " a",
            "a ",
            " a ",
            "a b",
            "\r\n a\r\n\t",
            "\u{e9}",
            " \u{e9} ",
            "\u{a0}x\u{a0}",
            "\u{b}x\u{c}",
            "x\r\n y",
        ] {
            assert_eq!(super::trim(s), slow(s), "{s:?}");
        }
    }

    #[test]
    fn has_ws_agrees_with_a_byte_loop() {
        let mut samples: Vec<Vec<u8>> = vec![b"".to_vec(), b"abc@host".to_vec()];
        for c in [
            b' ', b'\t', b'\r', b'\n', 0, 0x0b, 0x1f, 0x20, 0x21, 0x7f, 0x80, 0xa0, 0xff,
        ] {
            for len in 1..20 {
                for at in 0..len {
                    let mut v: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
                    v[at] = c;
                    samples.push(v);
                }
            }
        }
        samples.push(
            "f81d4fae-7dec-11d0-a765-00a0c91e6bf6@\u{e9}x.example"
                .as_bytes()
                .to_vec(),
        );
        for s in &samples {
            assert_eq!(
                super::has_ws(s),
                s.iter().any(|&b| super::is_ws(b)),
                "{s:?}"
            );
        }
    }

    #[test]
    fn list_items_split_as_find_unquoted_does() {
        let samples = [
            "a, b,c",
            "<sip:a,b@h>;lr, <sip:c@h>",
            r#""x,y" <sip:a@h>, sip:b@h"#,
            r#""a\",b", c"#,
            "<sip:x, y",
            "single <sip:a@h>;tag=1",
            ",, ,a,",
            "",
        ];
        for s in samples {
            for angles in [false, true] {
                let mut expected = Vec::new();
                let mut rest = s;
                while !rest.is_empty() {
                    let (item, next) = match find_unquoted(rest, b',', angles) {
                        Some(i) => (&rest[..i], &rest[i + 1..]),
                        None => (rest, ""),
                    };
                    rest = next;
                    let item = super::trim(item);
                    if !item.is_empty() {
                        expected.push(item);
                    }
                }
                let got: Vec<_> = super::ListItems::new(s, angles).collect();
                assert_eq!(got, expected, "{s} angles={angles}");
            }
        }
    }

    #[test]
    fn token_end_agrees_with_a_byte_loop() {
        let slow = |b: &[u8], from: usize| {
            (from..b.len())
                .find(|&i| !super::is_token(b[i]))
                .unwrap_or(b.len().max(from))
        };
        let mut samples: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"branch=z9hG4bK-1;rport".to_vec(),
            b"tag=x".to_vec(),
            b"lr>".to_vec(),
            "received=1.2.3.4;\u{e9}x".as_bytes().to_vec(),
        ];
        // Every byte value at every place of a run of letters, digits or upper case.
        for fill in [b'a', b'z', b'Q', b'5', b'-'] {
            for len in 0..18 {
                for at in 0..=len {
                    for stop in 0..=255u8 {
                        let mut v = vec![fill; len];
                        if at < len {
                            v[at] = stop;
                        }
                        samples.push(v);
                    }
                }
            }
        }
        for s in &samples {
            for from in 0..=s.len() + 1 {
                assert_eq!(
                    super::token_end(s, from),
                    slow(s, from),
                    "{s:?} from {from}"
                );
            }
        }
    }

    #[test]
    fn plain_value_end_agrees_with_a_byte_loop() {
        let slow = |b: &[u8], from: usize| {
            (from..b.len())
                .find(|&i| matches!(b[i], 0..=b' ' | b';' | b'"' | 0x7f))
                .unwrap_or(b.len())
        };
        let mut samples: Vec<Vec<u8>> = vec![b"".to_vec(), b"abc".to_vec()];
        for stop in [b' ', b'\t', b'\r', b'\n', 0, 0x1f, b';', b'"', 0x7f] {
            for len in 0..20 {
                for at in 0..=len {
                    let mut v: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
                    if at < len {
                        v[at] = stop;
                    }
                    samples.push(v);
                }
            }
        }
        samples.push("z9hG4bK-\u{e9}\u{1F600}-x;y".as_bytes().to_vec());
        samples.push(vec![0x80, 0xff, 0x21, 0x7e, 0x20, 0x3a, 0x3c]);
        for s in &samples {
            for from in 0..=s.len() {
                assert_eq!(plain_value_end(s, from), slow(s, from), "{s:?} from {from}");
            }
        }
    }
}
