//! The one pass over a message: start line, header table, Content-Length, body.
//!
//! Decides what is a parse error (and so a 400/413/505/513 or a drop) and what is left to the
//! lazy accessors. Header lines may end in CRLF or a bare LF; a line starting with SP or HT
//! continues the previous one (folding).

use memchr::{memchr, memchr2, memrchr};

use crate::header_name::HeaderName;
use crate::limits::{Framing, Limits, MAX_HEADERS, MAX_MESSAGE_BYTES};
use crate::message::{id_of, is_name_char, Message, Slot, StartLine, UNKNOWN};
use crate::method::Method;
use crate::scan::{
    colon_or_newline, is_sip_2_0, is_token_str, newline_and_comma, starts_with_sip_slash,
};
use crate::uri::Uri;
use crate::Error;

const CONTENT_LENGTH: u8 = HeaderName::ContentLength as u8;

pub(crate) fn parse<'a>(
    buf: &'a [u8],
    limits: &Limits,
    framing: Framing,
) -> Result<Message<'a>, Error> {
    let mut msg = Message::empty(buf, 0);
    parse_into(&mut msg, buf, limits, framing)?;
    Ok(msg)
}

/// [`parse`] into a message that already has its place (a `Message` is about a kilobyte:
/// moving a parsed one around costs more than a short header's parse). What `msg` held before
/// is forgotten.
pub(crate) fn parse_into<'a>(
    msg: &mut Message<'a>,
    buf: &'a [u8],
    limits: &Limits,
    framing: Framing,
) -> Result<(), Error> {
    let max_headers = limits.max_headers.min(MAX_HEADERS);
    let max_message = limits.max_message_bytes.min(MAX_MESSAGE_BYTES);
    // RFC 3261 §7.5: CRLFs before the start line are ignored (stream keep-alives, sloppy
    // senders).
    let mut pos = 0;
    while pos < buf.len() && matches!(buf[pos], b'\r' | b'\n' | b' ' | b'\t') {
        pos += 1;
    }
    if pos == buf.len() {
        return Err(Error::Empty);
    }
    let start_pos = pos;
    let sl_nl = match memchr(b'\n', &buf[pos..]) {
        Some(i) => pos + i,
        None => {
            return Err(if looks_like_sip(&buf[pos..]) {
                Error::UnterminatedHeaders
            } else {
                Error::NotSip("no line ending")
            })
        }
    };
    let sl_text_end = if sl_nl > pos && buf[sl_nl - 1] == b'\r' {
        sl_nl - 1
    } else {
        sl_nl
    };
    if !looks_like_sip(&buf[pos..sl_text_end]) {
        return Err(Error::NotSip(
            "start line is neither a request nor a status line",
        ));
    }
    pos = sl_nl + 1;
    if matches!(buf.get(pos), Some(b' ' | b'\t')) {
        return Err(Error::BadHeaderLine {
            offset: pos,
            why: "folded start line",
        });
    }

    // Header lines.
    msg.reset(limits.max_via_hops.min(usize::from(u16::MAX)) as u16);
    let mut count: usize = 0;
    let mut content_length: Option<u32> = None;
    let head_end;
    loop {
        match buf.get(pos) {
            None => return Err(Error::UnterminatedHeaders),
            Some(b'\n') => {
                head_end = pos + 1;
                break;
            }
            Some(b'\r') if buf.get(pos + 1) == Some(&b'\n') => {
                head_end = pos + 2;
                break;
            }
            Some(_) => {}
        }
        if pos > max_message {
            return Err(Error::MessageTooLarge {
                size: pos,
                limit: max_message,
            });
        }
        let line_start = pos;
        let (name_end, colon, (nl, comma), id) = match header_line_fast(buf, line_start) {
            Some(found) => found,
            None => {
                let (name_end, colon, nl) = header_line_general(buf, line_start)?;
                (name_end, colon, nl, id_of(&buf[line_start..name_end]))
            }
        };
        let line_end = nl + 1;
        // A CRLF line's CR goes first, without the general loop's test of each blank.
        let mut value_end = if nl > colon + 1 && buf[nl - 1] == b'\r' {
            nl - 1
        } else {
            nl
        };
        while value_end > colon + 1 && matches!(buf[value_end - 1], b' ' | b'\t' | b'\r' | b'\n') {
            value_end -= 1;
        }
        // And the one space after the colon, as usually written, before the blank loop.
        let mut value_start = if colon + 1 < value_end && buf[colon + 1] == b' ' {
            colon + 2
        } else {
            colon + 1
        };
        while value_start < value_end && matches!(buf[value_start], b' ' | b'\t' | b'\r' | b'\n') {
            value_start += 1;
        }
        if count == max_headers {
            return Err(Error::TooManyHeaders { limit: max_headers });
        }
        if id == CONTENT_LENGTH {
            let n = parse_content_length(&buf[value_start..value_end])?;
            match content_length {
                Some(prev) if prev != n => return Err(Error::BadContentLength),
                _ => content_length = Some(n),
            }
        }
        msg.slots[count] = Slot {
            line_start: line_start as u16,
            name_end: name_end as u16,
            value_start: value_start as u16,
            value_end: value_end as u16,
            line_end: line_end as u16,
            id,
            comma,
        };
        // Index the first line and the count of each known name for O(1) lookups.
        if let Some(c) = msg.counts.get_mut(usize::from(id)) {
            if *c == 0 {
                msg.first[usize::from(id)] = (count + 1) as u8;
            }
            *c = c.saturating_add(1);
        }
        count += 1;
        pos = line_end;
    }

    // Body and framing.
    let available = buf.len() - head_end;
    let body_len = match (content_length, framing) {
        (Some(cl), _) => {
            let cl = cl as usize;
            if cl > limits.max_body_bytes {
                return Err(Error::BodyTooLarge {
                    size: cl,
                    limit: limits.max_body_bytes,
                });
            }
            if cl > available {
                return Err(Error::BodyTruncated {
                    declared: cl,
                    present: available,
                });
            }
            cl
        }
        (None, Framing::Stream) => return Err(Error::MissingContentLength),
        (None, Framing::Datagram) => {
            if available > limits.max_body_bytes {
                return Err(Error::BodyTooLarge {
                    size: available,
                    limit: limits.max_body_bytes,
                });
            }
            available
        }
    };
    let msg_end = head_end + body_len;
    if msg_end > max_message {
        return Err(Error::MessageTooLarge {
            size: msg_end,
            limit: max_message,
        });
    }
    let buf = &buf[..msg_end];
    let head = core::str::from_utf8(&buf[..head_end]).map_err(|e| Error::NotUtf8 {
        offset: e.valid_up_to(),
    })?;

    let start = parse_start_line(head.get(start_pos..sl_text_end).unwrap_or(""))?;
    msg.buf = buf;
    msg.head = head;
    msg.start = start;
    msg.start_line_end = (sl_nl + 1) as u32;
    msg.count = count as u16;
    msg.body_start = head_end as u32;
    msg.content_length = content_length;
    Ok(())
}

/// The header line at `line_start` written the usual way: a name, optional blanks, `:`.
/// Returns the end of the name, the colon, the line's final `\n` (folding followed) and the
/// name's id, finding the colon with a word-at-a-time search that stops at the first `:` or
/// `\n`, where [`header_line_general`] first searches for the line's end and then for its
/// colon. A known name needs no check of its characters (known names are tokens). `None` for
/// any other line (an error, which the general reading names), or when the line has no end.
#[inline]
fn header_line_fast(buf: &[u8], line_start: usize) -> Option<(usize, usize, (usize, bool), u8)> {
    let colon = colon_or_newline(buf, line_start);
    // A `\n` first: no colon on this line, or a name folded over lines.
    if buf.get(colon) != Some(&b':') {
        return None;
    }
    // A name written against its colon, as usual, needs no walk back over blanks.
    let mut name_end = colon;
    if colon > line_start && matches!(buf[colon - 1], b' ' | b'\t') {
        while name_end > line_start && matches!(buf[name_end - 1], b' ' | b'\t') {
            name_end -= 1;
        }
    }
    let name = &buf[line_start..name_end];
    let id = id_of(name);
    if name.is_empty() || (id == UNKNOWN && !name.iter().all(|&b| is_name_char(b))) {
        return None;
    }
    // The colon comes before the first `\n`: it is the line's first one.
    let nl = line_end_from(buf, colon + 1).ok()?;
    Some((name_end, colon, nl, id))
}

/// The final `\n` of the header line that holds `from`, following folded continuation lines,
/// and whether a `,` comes between `from` and it. Always inlined: it runs for every header
/// line, and a call costs as much as the usual line's search.
#[inline(always)]
fn line_end_from(buf: &[u8], from: usize) -> Result<(usize, bool), Error> {
    let (mut nl, mut comma) = newline_and_comma(buf, from);
    // Folding: the next line starts with whitespace (rarely: one test, then the loop).
    if matches!(buf.get(nl + 1), Some(b' ' | b'\t')) {
        while nl < buf.len() && matches!(buf.get(nl + 1), Some(b' ' | b'\t')) {
            let (next, more) = newline_and_comma(buf, nl + 1);
            (nl, comma) = (next, comma || more);
        }
    }
    if nl == buf.len() {
        return Err(Error::UnterminatedHeaders);
    }
    Ok((nl, comma))
}

/// The header line at `line_start` read by the general rules: its end (folding followed), the
/// first colon in it and the name before that colon, blanks trimmed; the errors of a line
/// without an end, without a colon or with a name that is not a token.
fn header_line_general(
    buf: &[u8],
    line_start: usize,
) -> Result<(usize, usize, (usize, bool)), Error> {
    let (nl, comma) = line_end_from(buf, line_start)?;
    let line = &buf[line_start..nl];
    let colon = match memchr(b':', line) {
        Some(c) => line_start + c,
        None => {
            return Err(Error::BadHeaderLine {
                offset: line_start,
                why: "no colon",
            });
        }
    };
    let mut name_end = colon;
    while name_end > line_start && matches!(buf[name_end - 1], b' ' | b'\t') {
        name_end -= 1;
    }
    let name = &buf[line_start..name_end];
    if name.is_empty() || !name.iter().all(|&b| is_name_char(b)) {
        return Err(Error::BadHeaderLine {
            offset: line_start,
            why: "invalid header name",
        });
    }
    Ok((name_end, colon, (nl, comma)))
}

/// Content-Length: digits only (RFC 4475 `ncl` has a negative one).
pub(crate) fn parse_content_length(v: &[u8]) -> Result<u32, Error> {
    crate::scan::parse_u32_bytes(v).ok_or(Error::BadContentLength)
}

/// A start line that is plausibly SIP: begins with `SIP/` (status line) or ends, after any
/// trailing whitespace, with ` SIP/` and a version (request line). Anything else is noise.
fn looks_like_sip(line: &[u8]) -> bool {
    starts_with_sip_slash(line) || ends_with_sp_sip_2_0(line) || ends_with_version(line)
}

/// True when `line` ends, after any trailing whitespace, with a space, `SIP/` and a digit:
/// what a request line ends with by the general rules.
fn ends_with_version(line: &[u8]) -> bool {
    let mut end = line.len();
    while end > 0 && matches!(line[end - 1], b' ' | b'\t' | b'\r') {
        end -= 1;
    }
    let line = &line[..end];
    match memrchr(b' ', line) {
        Some(sp) => {
            let v = &line[sp + 1..];
            v.len() >= 5 && starts_with_sip_slash(v) && v[4].is_ascii_digit()
        }
        None => false,
    }
}

/// True when `line` ends with ` SIP/2.0` (the version in any letter case), as a request line
/// is written: its last space and version then need no search, and nothing after the version
/// needs trimming.
#[inline]
fn ends_with_sp_sip_2_0(line: &[u8]) -> bool {
    match line.len().checked_sub(8).map(|at| &line[at..]) {
        Some([b' ', version @ ..]) => is_sip_2_0(version),
        _ => false,
    }
}

/// The request line written the usual way: a method token, one space, a Request-URI, one
/// space and ` SIP/2.0` at its end. Returns the method and the URI's text, found without the
/// searches of [`parse_start_line`]'s general reading, which reads anything else (and agrees
/// wherever this answers; the URI's own checks are left to it either way).
#[inline]
fn plain_request_line(line: &str) -> Option<(&str, &str)> {
    let b = line.as_bytes();
    if !ends_with_sp_sip_2_0(b) {
        return None;
    }
    let sp1 = crate::scan::token_end(b, 0);
    if sp1 == 0 || b.get(sp1) != Some(&b' ') {
        return None;
    }
    Some((line.get(..sp1)?, line.get(sp1 + 1..b.len() - 8)?))
}

fn parse_start_line(line: &str) -> Result<StartLine<'_>, Error> {
    if starts_with_sip_slash(line.as_bytes()) {
        return parse_status_line(line);
    }
    let (method, uri_text) = match plain_request_line(line) {
        Some(found) => found,
        None => request_line_general(line)?,
    };
    if uri_text.is_empty() || uri_text.starts_with([' ', '\t']) {
        return Err(Error::BadRequestLine(
            "more than one space between elements",
        ));
    }
    if memchr2(b' ', b'\t', uri_text.as_bytes()).is_some() {
        return Err(Error::BadRequestUri("whitespace inside the Request-URI"));
    }
    let uri = Uri::parse(uri_text).map_err(|e| Error::BadRequestUri(e.0))?;
    if uri.is_sip() && uri.headers().is_some() {
        // RFC 3261 §19.1.1, table 1: headers are not allowed in a Request-URI (RFC 4475
        // `escruri`).
        return Err(Error::BadRequestUri("header part in a Request-URI"));
    }
    Ok(StartLine::Request {
        method: Method::from_token(method),
        uri,
    })
}

/// The method and the Request-URI's text of a request line by the general rules, with the
/// errors of a line whose method, spaces or version are wrong.
fn request_line_general(line: &str) -> Result<(&str, &str), Error> {
    // The memchr crate's searches: much cheaper than `str::find` with a char pattern on lines
    // this short, and one is done for every message.
    let sp1 =
        memchr(b' ', line.as_bytes()).ok_or(Error::BadRequestLine("no space after the method"))?;
    let method = &line[..sp1];
    if !is_token_str(method) {
        return Err(Error::BadRequestLine("method is not a token"));
    }
    let rest = &line[sp1 + 1..];
    let sp2 = memrchr(b' ', rest.as_bytes()).ok_or(Error::BadRequestLine("missing SIP version"))?;
    let uri_text = &rest[..sp2];
    let version = &rest[sp2 + 1..];
    if version.is_empty() {
        return Err(Error::BadRequestLine(
            "trailing whitespace after the SIP version",
        ));
    }
    if !is_sip_2_0(version.as_bytes()) {
        return Err(if starts_with_sip_slash(version.as_bytes()) {
            Error::UnsupportedVersion
        } else {
            Error::BadRequestLine("malformed SIP version")
        });
    }
    Ok((method, uri_text))
}

fn parse_status_line(line: &str) -> Result<StartLine<'_>, Error> {
    let sp1 =
        memchr(b' ', line.as_bytes()).ok_or(Error::BadStatusLine("no space after the version"))?;
    if !is_sip_2_0(&line.as_bytes()[..sp1]) {
        return Err(Error::BadStatusLine("unsupported SIP version"));
    }
    let rest = &line[sp1 + 1..];
    let code_end = memchr(b' ', rest.as_bytes()).unwrap_or(rest.len());
    let status = match rest.as_bytes()[..code_end] {
        [a, b, c] if [a, b, c].iter().all(u8::is_ascii_digit) => {
            u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
        }
        _ => return Err(Error::BadStatusLine("status code is not three digits")),
    };
    if !(100..=699).contains(&status) {
        return Err(Error::BadStatusLine("status code outside 100..=699"));
    }
    let reason = rest.get(code_end + 1..).unwrap_or("");
    Ok(StartLine::Response { status, reason })
}

#[cfg(test)]
mod tests {
    use super::{header_line_fast, header_line_general};
    use crate::header_name::HeaderName;
    use crate::message::id_of;

    #[test]
    fn status_lines_read_as_str_parsing_read_them() {
        use crate::message::StartLine;
        use crate::Error;
        // The status code as it was read: `str::find` for its end, `str::parse` for its value.
        fn by_str(line: &str) -> Result<StartLine<'_>, Error> {
            let sp1 = line
                .find(' ')
                .ok_or(Error::BadStatusLine("no space after the version"))?;
            if !line[..sp1].eq_ignore_ascii_case("SIP/2.0") {
                return Err(Error::BadStatusLine("unsupported SIP version"));
            }
            let rest = &line[sp1 + 1..];
            let code_end = rest.find(' ').unwrap_or(rest.len());
            let code = &rest[..code_end];
            if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Error::BadStatusLine("status code is not three digits"));
            }
            let status: u16 = code
                .parse()
                .map_err(|_| Error::BadStatusLine("status code"))?;
            if !(100..=699).contains(&status) {
                return Err(Error::BadStatusLine("status code outside 100..=699"));
            }
            let reason = rest.get(code_end + 1..).unwrap_or("");
            Ok(StartLine::Response { status, reason })
        }
        for line in [
            "SIP/2.0 200 OK",
            "SIP/2.0 180 Ringing",
            "SIP/2.0 100",
            "SIP/2.0 100 ",
            "SIP/2.0 699 x y",
            "SIP/2.0 700 Too big",
            "SIP/2.0 099 Small",
            "SIP/2.0 2000 OK",
            "SIP/2.0 20 OK",
            "SIP/2.0 2a0 OK",
            "SIP/2.0 -20 OK",
            "SIP/2.0 +20 OK",
            "SIP/2.0  200 OK",
            "SIP/2.0 \u{e9}00 OK",
            "SIP/2.0 20\u{e9} OK",
            "SIP/3.0 200 OK",
            "SIP/2.0",
            "sip/2.0 486 Busy Here",
        ] {
            assert_eq!(super::parse_status_line(line), by_str(line), "{line:?}");
        }
    }

    #[test]
    fn the_plain_request_line_reads_as_the_general_one() {
        use super::{ends_with_sp_sip_2_0, ends_with_version, plain_request_line};
        use super::{parse_start_line, request_line_general};
        let lines = [
            "INVITE sip:+15550001@example.com SIP/2.0",
            "BYE sip:core@192.0.2.1:5060;transport=udp sip/2.0",
            "ACK sip:a@b SIP/2.0",
            "INVITE  sip:a@b SIP/2.0",
            "INVITE sip:a@b  SIP/2.0",
            "INVITE sip:a b SIP/2.0",
            "INVITE sip:a\tb SIP/2.0",
            "INVITE\tsip:a@b SIP/2.0",
            "INVITE SIP/2.0",
            " SIP/2.0",
            "  SIP/2.0",
            "I SIP/2.0",
            "I  SIP/2.0",
            "IN@VITE sip:a@b SIP/2.0",
            "INVITE sip:a@b SIP/2.1",
            "INVITE sip:a@b SIP/2.0 ",
            "INVITE sip:a@b SIP/3.0",
            "INVITE sip:a@b SIPS/2.0",
            "INVITE sip:a@b XIP/2.0",
            "INVITE sip:a@b",
            "INVITE",
            "",
            "SIP/2.0",
            "INVITE sip:\u{e9}@b SIP/2.0",
            "\u{e9} sip:a@b SIP/2.0",
            "INVITE sip:a@b?x=y SIP/2.0",
            "MESSAGE tel:+1555 SIP/2.0",
            "X-Long-Method-Name sip:[2001:db8::1]:5060 SIP/2.0",
            "INVITE sip:a@b SIP/2.0\r",
        ];
        for line in lines {
            if let Some(found) = plain_request_line(line) {
                assert_eq!(Ok(found), request_line_general(line), "{line:?}");
            }
            if ends_with_sp_sip_2_0(line.as_bytes()) {
                assert!(ends_with_version(line.as_bytes()), "{line:?}");
            }
            // And the whole start line, errors included, as before.
            let _ = parse_start_line(line);
        }
    }

    #[test]
    fn a_value_is_its_line_after_the_colon_trimmed() {
        use crate::message::Message;
        let lines = [
            "X-A: v\r\n",
            "X-A:v\r\n",
            "X-A:\r\n",
            "X-A: \r\n",
            "X-A:\r\r\n",
            "X-A: v \r\n",
            "X-A: v\t\r\n",
            "X-A: v\r \r\n",
            "X-A: v\n",
            "X-A:\n",
            "X-A: \r\n folded\r\n",
            "X-A: v\r\n \r\n",
            "X-A:  v\r\n",
            "X-A: \tv\r\n",
            "X-A:\tv\r\n",
            "X-A: \r\n v\r\n",
            "X-A : v\r\n",
            "X-A: v w\r\n",
        ];
        for line in lines {
            let raw = format!("OPTIONS sip:h SIP/2.0\r\n{line}Call-ID: c\r\n\r\n");
            let m = Message::parse(raw.as_bytes()).unwrap();
            // The text between the colon and the line's last `\n`, trimmed of blanks and line
            // endings on both ends.
            let after = &line[line.find(':').unwrap() + 1..line.len() - 1];
            let lws = |c: char| matches!(c, ' ' | '\t' | '\r' | '\n');
            let expected = after.trim_matches(lws);
            assert_eq!(m.header("X-A"), Some(expected), "{line:?}");
        }
    }

    #[test]
    fn the_fast_header_line_reads_as_the_general_one() {
        let lines: &[&[u8]] = &[
            b"Via: SIP/2.0/UDP h\r\n\r\n",
            b"v:SIP/2.0/UDP h\n\n",
            b"Call-ID \t : x@y\r\n\r\n",
            b"To: <sip:a@b>\r\n ;tag=1\r\n\tx\r\n\r\n",
            b"Subject:\r\n folded only\r\n\r\n",
            b"X-Odd_Name.~!%*+`': a:b:c\r\n\r\n",
            b"Na me: x\r\n\r\n",
            b": no name\r\n\r\n",
            b" : blank name\r\n\r\n",
            b"NoColon\r\n\r\n",
            b"No colon here\r\n: later\r\n\r\n",
            b"Bad@Name: x\r\n\r\n",
            b"Name\r\n : folded before the colon\r\n\r\n",
            b"Unterminated: x",
            b"Unterminated: x\r\n more",
            b"Name:",
            b"Name:\n",
            b"Name:\r\n\r\n",
            b"Contact: \"A: B\" <sip:[2001:db8::1]:5060>\r\n\r\n",
            b"\xc3\xa9: x\r\n\r\n",
            b"Name\r: x\r\n\r\n",
            b"Call\rID: x\r\n\r\n",
            b"CONTENT-length : 0\r\n\r\n",
            b"Record-Route: <sip:h;lr>\r\n\r\n",
            b"Record-Routes: <sip:h;lr>\r\n\r\n",
            b"Via \t:x\n\n",
            b"X-Long-Unknown-Header-Name-Here: v\r\n\r\n",
            b"X-Bad<Name>: v\r\n\r\n",
            b"Na\tme: v\r\n\r\n",
            b"NoColonButNewline\n: x\n\n",
            b"abcdefgh",
            b"abcdefg:",
            b"Route: <sip:a,b>;lr, <sip:c>\r\n\r\n",
            b"Contact: \"a,b\" <sip:x>\r\n\r\n",
            b"To: x\r\n ,y\r\n\r\n",
            b"Via: a\r\nVia: b, c\r\n\r\n",
        ];
        for &line in lines {
            let general = header_line_general(line, 0);
            if let Some((name_end, colon, end, id)) = header_line_fast(line, 0) {
                assert_eq!(
                    Ok((name_end, colon, end)),
                    general,
                    "{:?}",
                    String::from_utf8_lossy(line)
                );
                assert_eq!(id, id_of(&line[..name_end]));
            }
        }
        // Offsets other than 0.
        let two = b"A: 1\r\nCSeq\t: 2 INVITE\r\n\r\n";
        assert_eq!(
            header_line_fast(two, 6),
            Some((10, 11, (22, false), HeaderName::CSeq as u8))
        );
        assert_eq!(header_line_general(two, 6), Ok((10, 11, (22, false))));
        // A comma, on the first line or on a folded one.
        let list = b"Route: <sip:a>, <sip:b>\r\nX: 1\r\n\r\n";
        assert_eq!(header_line_general(list, 0), Ok((5, 5, (24, true))));
        assert_eq!(
            header_line_fast(list, 0),
            Some((5, 5, (24, true), HeaderName::Route as u8))
        );
        let folded = b"Route: <sip:a>\r\n , <sip:b>\r\n\r\n";
        assert_eq!(header_line_general(folded, 0), Ok((5, 5, (27, true))));
    }
}
