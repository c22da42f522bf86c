//! Proxy edits over a parsed message, written out without re-serialising what they do not
//! touch (RFC 3261 §16.6: push Via, decrement Max-Forwards, add Record-Route, pop Route,
//! rewrite the Request-URI; §16.7: drop the top Via of a response).
//!
//! An [`Editor`] records edits as byte ranges of the original message (a fixed table, no
//! heap); [`Editor::write`] copies the untouched ranges verbatim around them. Content-Length is
//! rewritten only when the body is replaced.

use crate::build::{check_name, check_text, format_u32};
use crate::error::WriteError;
use crate::header_name::HeaderName;
use crate::message::{HeaderIndex, Message};
use crate::scan::ListItems;
use crate::Error;

/// Most edits one [`Editor`] records.
pub const MAX_EDITS: usize = 32;

#[derive(Debug, Clone, Copy)]
enum Text<'e> {
    Str(&'e str),
    Num(u32),
}

#[derive(Debug, Clone, Copy)]
enum Op<'e> {
    /// Replace the range with the text.
    Replace(Text<'e>),
    /// Insert `name: value\r\n` at the (empty) range.
    InsertHeader(&'e str, Text<'e>),
    /// Remove the range.
    Delete,
}

#[derive(Debug, Clone, Copy)]
struct Edit<'e> {
    start: u32,
    end: u32,
    op: Op<'e>,
}

const NO_EDIT: Edit<'static> = Edit {
    start: 0,
    end: 0,
    op: Op::Delete,
};

/// Records edits to a parsed message and writes the edited message.
///
/// Edits address the *original* message (header indexes, item text borrowed from it), so they
/// can be recorded in any order; two edits of the same bytes are refused at [`Editor::write`].
/// Inserted headers at the same position come out in the order they were recorded.
#[derive(Debug, Clone)]
pub struct Editor<'e> {
    msg: &'e Message<'e>,
    /// The recorded edits, `Some` below `len`. Empty slots are `None` rather than a blank
    /// edit: a new editor (one per forwarded or relayed message) then writes a tag per slot
    /// instead of copying a kilobyte and a half of blank edits.
    edits: [Option<Edit<'e>>; MAX_EDITS],
    len: usize,
    overflow: bool,
    body: Option<(Option<&'e str>, &'e [u8])>,
}

impl<'e> Editor<'e> {
    /// An editor with no edits: writing it reproduces the message byte for byte.
    pub fn new(msg: &'e Message<'e>) -> Self {
        Editor {
            msg,
            edits: [None; MAX_EDITS],
            len: 0,
            overflow: false,
            body: None,
        }
    }

    fn push(&mut self, start: usize, end: usize, op: Op<'e>) -> &mut Self {
        if self.len == MAX_EDITS {
            self.overflow = true;
        } else {
            self.edits[self.len] = Some(Edit {
                start: start as u32,
                end: end as u32,
                op,
            });
            self.len += 1;
        }
        self
    }

    /// Number of edits recorded.
    pub fn edit_count(&self) -> usize {
        self.len
    }

    /// Inserts `name: value` as the first header line (where a new Via or Record-Route goes).
    pub fn prepend_header(&mut self, name: &'e str, value: &'e str) -> &mut Self {
        let at = self
            .msg
            .slots()
            .first()
            .map_or(self.headers_end(), |s| s.line_start as usize);
        self.push(at, at, Op::InsertHeader(name, Text::Str(value)))
    }

    /// Inserts `name: value` after the last header line.
    pub fn append_header(&mut self, name: &'e str, value: &'e str) -> &mut Self {
        let at = self.headers_end();
        self.push(at, at, Op::InsertHeader(name, Text::Str(value)))
    }

    /// Inserts `name: value` just before the header at `index`.
    pub fn insert_before(
        &mut self,
        index: HeaderIndex,
        name: &'e str,
        value: &'e str,
    ) -> &mut Self {
        let at = self
            .slot(index)
            .map_or(self.headers_end(), |s| s.line_start as usize);
        self.push(at, at, Op::InsertHeader(name, Text::Str(value)))
    }

    /// Removes the whole header line at `index` (all its comma-joined values).
    pub fn remove_header(&mut self, index: HeaderIndex) -> &mut Self {
        match self.slot(index) {
            Some(s) => {
                let (a, b) = (s.line_start as usize, s.line_end as usize);
                self.push(a, b, Op::Delete)
            }
            None => self,
        }
    }

    /// Replaces the value of the header at `index`, keeping its name as written.
    pub fn replace_value(&mut self, index: HeaderIndex, value: &'e str) -> &mut Self {
        match self.slot(index) {
            Some(s) => {
                let (a, b) = (s.value_start as usize, s.value_end as usize);
                self.push(a, b, Op::Replace(Text::Str(value)))
            }
            None => self,
        }
    }

    /// Replaces the value of the header at `index` with a number (Max-Forwards, Expires).
    pub fn replace_value_u32(&mut self, index: HeaderIndex, value: u32) -> &mut Self {
        match self.slot(index) {
            Some(s) => {
                let (a, b) = (s.value_start as usize, s.value_end as usize);
                self.push(a, b, Op::Replace(Text::Num(value)))
            }
            None => self,
        }
    }

    /// Replaces one element of a list header (a Contact among several, say). `item` must be
    /// text borrowed from this message: the `raw()` of a Via, Contact or NameAddr, or an item
    /// of [`Message::list_items`]. Unknown text is refused at write time.
    pub fn replace_item(&mut self, item: &'e str, text: &'e str) -> &mut Self {
        match self.msg.offset_of(item) {
            Some(off) => self.push(off, off + item.len(), Op::Replace(Text::Str(text))),
            None => self.refuse(),
        }
    }

    /// Removes one element of a list header with its comma; removes the whole line when it was
    /// the line's only element. `item` as for [`Editor::replace_item`].
    pub fn remove_item(&mut self, item: &'e str) -> &mut Self {
        let Some(off) = self.msg.offset_of(item) else {
            return self.refuse();
        };
        let end = off + item.len();
        let Some((i, slot)) = self
            .msg
            .slots()
            .iter()
            .enumerate()
            .find(|(_, s)| (s.value_start as usize) <= off && end <= s.value_end as usize)
        else {
            return self.refuse();
        };
        if !slot.comma {
            // A value without a comma is one element, the value itself (trimmed as
            // `ListItems` trims): `item` starts where it does and the line goes, or it is no
            // element (what the walk below finds, without the walk).
            let (vs, ve) = (u32::from(slot.value_start), u32::from(slot.value_end));
            if vs == ve || off != vs as usize {
                return self.refuse();
            }
            self.retain(|e| !(matches!(e.op, Op::Delete) && e.start >= vs && e.end <= ve));
            return self.remove_header(HeaderIndex(i as u16));
        }
        self.remove_among_elements(off, end, i, slot)
    }

    /// [`Editor::remove_item`] for the item at `off..end` of line `i`, found among the line's
    /// elements.
    fn remove_among_elements(
        &mut self,
        off: usize,
        end: usize,
        i: usize,
        slot: &crate::message::Slot,
    ) -> &mut Self {
        let head = self.msg.head();
        let value = head
            .get(slot.value_start as usize..slot.value_end as usize)
            .unwrap_or("");
        // Find the neighbours of `item` among the line's elements, and whether any other
        // element stays (when none does, the whole line goes instead).
        let mut prev_end = None;
        let mut next_start = None;
        let mut seen = false;
        let mut others_kept = false;
        for element in ListItems::new(value, true) {
            let e_off = self.msg.offset_of(element).unwrap_or(0);
            let e_end = e_off + element.len();
            if e_off == off {
                seen = true;
                continue;
            }
            others_kept |= !self.is_deleted(e_off, e_end);
            if !seen {
                prev_end = Some(e_end);
            } else if next_start.is_none() {
                next_start = Some(e_off);
            }
        }
        if !seen {
            return self.refuse();
        }
        if !others_kept {
            let (vs, ve) = (u32::from(slot.value_start), u32::from(slot.value_end));
            self.retain(|e| !(matches!(e.op, Op::Delete) && e.start >= vs && e.end <= ve));
            return self.remove_header(HeaderIndex(i as u16));
        }
        match (prev_end, next_start) {
            // Remove "item, " up to the next element.
            (_, Some(next)) => self.push(off, next, Op::Delete),
            // Last element: remove ", item" from the end of the previous one.
            (Some(prev), None) => self.push(prev, end, Op::Delete),
            (None, None) => self.remove_header(HeaderIndex(i as u16)),
        }
    }

    /// True when a recorded removal covers `start..end`.
    fn is_deleted(&self, start: usize, end: usize) -> bool {
        self.recorded().any(|e| {
            matches!(e.op, Op::Delete) && e.start as usize <= start && end <= e.end as usize
        })
    }

    /// Keeps only the recorded edits for which `keep` holds.
    fn retain(&mut self, keep: impl Fn(&Edit<'e>) -> bool) {
        let mut kept = 0;
        for i in 0..self.len {
            if self.edits[i].as_ref().is_some_and(&keep) {
                self.edits[kept] = self.edits[i];
                kept += 1;
            }
        }
        self.len = kept;
    }

    /// Removes the topmost element of the first `name` header: the top Route of a request
    /// (RFC 3261 §16.4) or the top Via of a response (§16.7). Returns the removed text, or
    /// `None` when there is no such header.
    pub fn pop_first(&mut self, name: HeaderName) -> Option<&'e str> {
        let (_, first) = self.msg.list_items(name).next()?;
        self.remove_item(first);
        Some(first)
    }

    /// Replaces the Request-URI (requests only; ignored for responses).
    pub fn set_request_uri(&mut self, uri: &'e str) -> &mut Self {
        match self
            .msg
            .request_uri()
            .and_then(|u| self.msg.offset_of(u.as_str()).map(|o| (o, u)))
        {
            Some((off, u)) => self.push(off, off + u.as_str().len(), Op::Replace(Text::Str(uri))),
            None => self,
        }
    }

    /// Max-Forwards handling of RFC 3261 §16.6 step 3: decrements it, or adds
    /// `Max-Forwards: 70` when absent. Returns the new value, or `Ok(None)` when it is already
    /// 0 (nothing is edited; the proxy must answer 483 Too Many Hops).
    pub fn decrement_max_forwards(&mut self) -> Result<Option<u32>, Error> {
        let current = self.msg.max_forwards()?;
        match current {
            Some(0) => Ok(None),
            Some(n) => {
                if let Some(h) = self.msg.headers_of(HeaderName::MaxForwards).next() {
                    self.replace_value_u32(h.index, n - 1);
                }
                Ok(Some(n - 1))
            }
            None => {
                let at = self.headers_end();
                self.push(at, at, Op::InsertHeader("Max-Forwards", Text::Num(70)));
                Ok(Some(70))
            }
        }
    }

    /// Replaces the body (Content-Length is rewritten, or added when absent); with
    /// `content_type`, the Content-Type value too (added when absent).
    pub fn set_body(&mut self, content_type: Option<&'e str>, body: &'e [u8]) -> &mut Self {
        self.body = Some((content_type, body));
        self
    }

    /// Length of the edited message in bytes.
    pub fn output_len(&self) -> Result<usize, WriteError> {
        let mut counter = Counter(0);
        self.emit(&mut counter)?;
        Ok(counter.0)
    }

    /// Appends the edited message to `out`.
    pub fn write(&self, out: &mut Vec<u8>) -> Result<(), WriteError> {
        self.emit(out)
    }

    /// Writes the edited message into `out`, returning its length.
    pub fn write_into(&self, out: &mut [u8]) -> Result<usize, WriteError> {
        let mut sink = SliceSink {
            out,
            pos: 0,
            needed: 0,
        };
        self.emit(&mut sink)?;
        if sink.needed > sink.out.len() {
            return Err(WriteError::BufferTooSmall {
                needed: sink.needed,
            });
        }
        Ok(sink.pos)
    }

    // ----- internals -----

    fn refuse(&mut self) -> &mut Self {
        // Recorded as an impossible edit (start after end) so that `write` reports it.
        if self.len == MAX_EDITS {
            self.overflow = true;
        } else {
            self.edits[self.len] = Some(Edit {
                start: u32::MAX,
                end: 0,
                op: Op::Delete,
            });
            self.len += 1;
        }
        self
    }

    /// The recorded edits, in record order.
    fn recorded(&self) -> impl Iterator<Item = &Edit<'e>> {
        self.edits[..self.len].iter().flatten()
    }

    fn slot(&self, index: HeaderIndex) -> Option<crate::message::Slot> {
        self.msg.slots().get(index.get()).copied()
    }

    /// Where the empty line ending the header section starts.
    fn headers_end(&self) -> usize {
        self.msg
            .slots()
            .last()
            .map_or(self.msg.start_line_end(), |s| s.line_end as usize)
    }

    /// Body-dependent edits: Content-Length (and Content-Type) values.
    fn body_edits(&self, extra: &mut [Edit<'e>; 4]) -> usize {
        let Some((ct, body)) = self.body else {
            return 0;
        };
        let mut n = 0;
        let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
        let at = self.headers_end();
        match self.msg.headers_of(HeaderName::ContentLength).next() {
            Some(h) => {
                let s = self.msg.slots()[h.index.get()];
                extra[n] = Edit {
                    start: u32::from(s.value_start),
                    end: u32::from(s.value_end),
                    op: Op::Replace(Text::Num(len)),
                };
            }
            None => {
                extra[n] = Edit {
                    start: at as u32,
                    end: at as u32,
                    op: Op::InsertHeader("Content-Length", Text::Num(len)),
                }
            }
        }
        n += 1;
        if let Some(ct) = ct {
            match self.msg.headers_of(HeaderName::ContentType).next() {
                Some(h) => {
                    let s = self.msg.slots()[h.index.get()];
                    extra[n] = Edit {
                        start: u32::from(s.value_start),
                        end: u32::from(s.value_end),
                        op: Op::Replace(Text::Str(ct)),
                    };
                }
                None => {
                    extra[n] = Edit {
                        start: at as u32,
                        end: at as u32,
                        op: Op::InsertHeader("Content-Type", Text::Str(ct)),
                    }
                }
            }
            n += 1;
        }
        n
    }

    fn emit(&self, sink: &mut impl Sink) -> Result<(), WriteError> {
        if self.overflow {
            return Err(WriteError::TooManyEdits { limit: MAX_EDITS });
        }
        let mut extra = [NO_EDIT; 4];
        let n_extra = self.body_edits(&mut extra);
        // Order: by start; at equal starts, insertions before removals, then record order.
        let total = self.len + n_extra;
        let edit = |i: u8| -> &Edit<'e> {
            let i = usize::from(i);
            if i < self.len {
                self.edits[i].as_ref().unwrap_or(&NO_EDIT)
            } else {
                &extra[i - self.len]
            }
        };
        let buf = self.msg.as_bytes();
        let copy_end = if self.body.is_some() {
            self.msg.body_start()
        } else {
            buf.len()
        };
        // Each edit's place as one number (start, then insertion before the rest, then record
        // order): the sort compares numbers, not edits looked up again at every step.
        let mut keys = [0u32; MAX_EDITS + 4];
        for i in 0..total {
            keys[i] = sort_key(edit(i as u8), i as u8, copy_end);
            let mut j = i;
            while j > 0 && keys[j - 1] > keys[j] {
                keys.swap(j - 1, j);
                j -= 1;
            }
        }
        let mut cursor = 0usize;
        let mut last_was_delete = false;
        for &key in &keys[..total] {
            let e = edit(key as u8);
            let (start, end) = (e.start as usize, e.end as usize);
            if start > end || end > copy_end {
                return Err(WriteError::Template(Error::BadHeader {
                    name: "edit",
                    why: "item text is not part of this message's header section",
                }));
            }
            if start < cursor {
                // Two removals may share bytes (the comma between two removed elements):
                // their union is removed. Anything else overlapping is a caller's mistake.
                if matches!(e.op, Op::Delete) && last_was_delete {
                    cursor = cursor.max(end);
                    continue;
                }
                return Err(WriteError::OverlappingEdits { offset: start });
            }
            last_was_delete = matches!(e.op, Op::Delete);
            sink.put(&buf[cursor..start]);
            match e.op {
                Op::Replace(t) => put_text(sink, t, "replacement value")?,
                Op::InsertHeader(name, t) => {
                    check_name(name)?;
                    sink.put(name.as_bytes());
                    sink.put(b": ");
                    put_text(sink, t, "header value")?;
                    sink.put(b"\r\n");
                }
                Op::Delete => {}
            }
            cursor = end;
        }
        sink.put(&buf[cursor..copy_end]);
        if let Some((_, body)) = self.body {
            sink.put(body);
        }
        Ok(())
    }
}

/// Where an edit goes among the others, as one number that sorts as the tuple (start, not an
/// insertion, record index `i`): by start; at equal starts, insertions before removals and
/// replacements, then in record order. `i` is its low byte. A start past `copy_end` (where the
/// copied text ends) counts as `copy_end + 1`: the first such edit in the order is refused
/// whatever its start, and the edits before it keep their order, so the key fits 32 bits for
/// any message (at most [`crate::limits::MAX_MESSAGE_BYTES`] long).
#[inline]
fn sort_key(e: &Edit<'_>, i: u8, copy_end: usize) -> u32 {
    let start = (e.start as usize).min(copy_end + 1).min(PAST_ANY_MESSAGE) as u32;
    let later = u32::from(!matches!(e.op, Op::InsertHeader(..)));
    start << 9 | later << 8 | u32::from(i)
}

/// A start past the end of any message's text: what [`sort_key`] counts every later one as
/// (and 23 bits, so that the key keeps nine below it).
const PAST_ANY_MESSAGE: usize = 1 << 22;
const _: () = assert!(crate::limits::MAX_MESSAGE_BYTES < PAST_ANY_MESSAGE);

fn put_text(sink: &mut impl Sink, t: Text<'_>, what: &'static str) -> Result<(), WriteError> {
    match t {
        Text::Str(s) => {
            check_text(s, what, true)?;
            sink.put(s.as_bytes());
        }
        Text::Num(n) => {
            let mut digits = [0u8; 10];
            sink.put(format_u32(n, &mut digits));
        }
    }
    Ok(())
}

trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

struct Counter(usize);

impl Sink for Counter {
    fn put(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }
}

/// Writes into a fixed buffer; keeps counting past its end so the error can say how much
/// room was needed.
struct SliceSink<'o> {
    out: &'o mut [u8],
    pos: usize,
    needed: usize,
}

impl Sink for SliceSink<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.needed += bytes.len();
        if let Some(dst) = self.out.get_mut(self.pos..self.pos + bytes.len()) {
            dst.copy_from_slice(bytes);
            self.pos += bytes.len();
        } else {
            // Once one piece does not fit, nothing more is written.
            self.pos = self.out.len() + 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Editor;
    use crate::header_name::HeaderName;
    use crate::message::Message;

    /// `remove_item` as it was for every line: the item looked for among the line's elements.
    fn remove_by_elements<'e>(ed: &mut Editor<'e>, item: &'e str) {
        let Some(off) = ed.msg.offset_of(item) else {
            ed.refuse();
            return;
        };
        let end = off + item.len();
        let found = ed
            .msg
            .slots()
            .iter()
            .enumerate()
            .find(|(_, s)| (s.value_start as usize) <= off && end <= s.value_end as usize)
            .map(|(i, s)| (i, *s));
        match found {
            Some((i, slot)) => {
                ed.remove_among_elements(off, end, i, &slot);
            }
            None => {
                ed.refuse();
            }
        }
    }

    #[test]
    fn a_comma_free_line_loses_its_item_as_the_element_walk_removes_it() {
        let raw = "INVITE sip:b@h SIP/2.0\r\n\
Via: SIP/2.0/UDP a;branch=z9hG4bK1\r\n\
Via: SIP/2.0/UDP b;branch=z9hG4bK2, SIP/2.0/UDP c;branch=z9hG4bK3\r\n\
Route: <sip:r1;lr>\r\n\
Route: <sip:r2;lr>;x=1\r\n\
Route:  <sip:r3;lr> \r\n\
From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        let m = Message::parse(raw.as_bytes()).unwrap();
        let mut items: Vec<&str> = m
            .list_items(HeaderName::Via)
            .chain(m.list_items(HeaderName::Route))
            .map(|(_, item)| item)
            .collect();
        // Text of the message that is not an element: a prefix of one, a piece inside one.
        let first = items[0];
        items.push(&first[..10]);
        items.push(&first[4..12]);
        items.push(
            m.list_items(HeaderName::Route)
                .nth(1)
                .unwrap()
                .1
                .get(..12)
                .unwrap(),
        );
        for a in &items {
            for b in &items {
                let mut fast = Editor::new(&m);
                fast.remove_item(a).remove_item(b);
                let mut general = Editor::new(&m);
                remove_by_elements(&mut general, a);
                remove_by_elements(&mut general, b);
                let (mut x, mut y) = (Vec::new(), Vec::new());
                let (rx, ry) = (fast.write(&mut x), general.write(&mut y));
                assert_eq!(rx.is_ok(), ry.is_ok(), "{a:?} then {b:?}");
                assert_eq!(x, y, "{a:?} then {b:?}");
            }
        }
        // The first Via removed leaves the other lines as they were.
        let mut ed = Editor::new(&m);
        ed.pop_first(HeaderName::Via);
        let mut out = Vec::new();
        ed.write(&mut out).unwrap();
        assert!(!String::from_utf8(out).unwrap().contains("z9hG4bK1"));
    }
}

#[cfg(test)]
mod order_tests {
    use super::{sort_key, Edit, Op, Text};

    /// The packed keys sort edits as the stable sort on (start, not an insertion) that `emit`
    /// did before: every mix of starts and kinds, in every record order tried.
    #[test]
    fn packed_keys_sort_as_the_stable_tuple_sort() {
        let kinds = [
            Op::Delete,
            Op::InsertHeader("X", Text::Str("v")),
            Op::Replace(Text::Num(7)),
        ];
        let copy_end = 1000;
        let mut seed = 0x9e37_79b9_u32;
        for round in 0..500 {
            let n = round % 12;
            let edits: Vec<Edit<'_>> = (0..n)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    let start = [0, 1, 5, 999, 1000, 1001, 70_000, u32::MAX][(seed % 8) as usize];
                    Edit {
                        start,
                        end: start,
                        op: kinds[(seed / 8 % 3) as usize],
                    }
                })
                .collect();
            let mut by_tuple: Vec<usize> = (0..n).collect();
            by_tuple
                .sort_by_key(|&i| (edits[i].start, !matches!(edits[i].op, Op::InsertHeader(..))));
            // Past the copied text only the first edit's place matters: it is refused.
            let valid = by_tuple
                .iter()
                .take_while(|&&i| edits[i].start <= copy_end as u32);
            let valid = valid.count();
            let mut by_key: Vec<u32> = (0..n)
                .map(|i| sort_key(&edits[i], i as u8, copy_end))
                .collect();
            by_key.sort_unstable();
            let by_key: Vec<usize> = by_key.iter().map(|&k| usize::from(k as u8)).collect();
            assert_eq!(by_key[..valid], by_tuple[..valid]);
            if valid < n {
                assert!(edits[by_key[valid]].start > copy_end as u32);
            }
        }
    }
}
