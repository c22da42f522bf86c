//! Which SIP worker (shard) a message belongs to (SPEC §6, `docs/decisions.md` "Shards").
//!
//! Every message of a transaction and of a dialog carries the same Call-ID, including those
//! that carry nothing the box wrote (a retransmission, a CANCEL, the ACK of a non-2xx, the
//! first request of a dialog), so the shard is a keyed hash of the Call-ID. Keyed with a seed
//! the shell draws once per process and hands to every shard, so a sender cannot aim a flood
//! at one worker, and every shard computes the same answer. A request a shard originates gets
//! a Call-ID that hashes to it ([`Shards::owns`]), or reuses one that does (a BYE of the
//! guard), so its answers come back to it.
//!
//! The reader of a socket calls [`Shards::of_message`] on the raw bytes: a scan for the
//! Call-ID header, no parse. A message with no readable Call-ID goes to shard 0, whose parser
//! answers it with 400 or drops and counts it, as a single engine would.

/// How messages are spread over the shards, and which one is this one.
#[derive(Debug, Clone)]
pub struct Shards {
    count: usize,
    keys: ahash::RandomState,
}

impl Default for Shards {
    fn default() -> Self {
        Shards::single()
    }
}

impl Shards {
    /// One shard: everything goes to shard 0.
    pub fn single() -> Shards {
        Shards::new(1, [0; 4])
    }

    /// `count` shards (at least one), the hash keyed with `seed` (the same seed for every
    /// shard of the process).
    pub fn new(count: usize, seed: [u64; 4]) -> Shards {
        Shards {
            count: count.max(1),
            keys: ahash::RandomState::with_seeds(seed[0], seed[1], seed[2], seed[3]),
        }
    }

    /// How many shards there are.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The shard of the dialog or transaction with this Call-ID.
    pub fn of_call_id(&self, call_id: &str) -> usize {
        self.of_call_id_bytes(call_id.as_bytes())
    }

    fn of_call_id_bytes(&self, call_id: &[u8]) -> usize {
        if self.count == 1 {
            return 0;
        }
        let h = self.keys.hash_one(call_id);
        // Lemire's reduction: uniform over the shards without a division.
        ((u128::from(h) * self.count as u128) >> 64) as usize
    }

    /// Whether `call_id` belongs to shard `index`.
    pub fn owns(&self, index: usize, call_id: &str) -> bool {
        self.of_call_id(call_id) == index
    }

    /// The shard of a received message, from its raw bytes (see the module's doc).
    pub fn of_message(&self, bytes: &[u8]) -> usize {
        if self.count == 1 {
            return 0;
        }
        call_id_of(bytes).map_or(0, |id| self.of_call_id_bytes(id))
    }
}

/// The value of the first Call-ID header (`Call-ID` or its compact form `i`, any case, space
/// before the colon allowed), trimmed, as `sip::Message::call_id` reads it; `None` when the
/// header part ends (or the bytes do) before one.
///
/// Read for every datagram before the parser sees it, so it jumps from line to line with
/// `memchr` and looks into a line only when its first byte after blanks can start the name
/// (`c` or `i`): Via, Route and Record-Route lines are most of a message and are not walked.
pub fn call_id_of(bytes: &[u8]) -> Option<&[u8]> {
    // The start line.
    let mut rest = &bytes[memchr::memchr(b'\n', bytes)? + 1..];
    loop {
        let end = memchr::memchr(b'\n', rest);
        let line = &rest[..end.unwrap_or(rest.len())];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return None;
        }
        let first = line.iter().find(|b| !matches!(b, b' ' | b'\t'));
        if matches!(first, Some(b'c' | b'C' | b'i' | b'I')) {
            if let Some(value) = call_id_in(line) {
                return (!value.is_empty()).then_some(value);
            }
        }
        rest = &rest[end? + 1..];
    }
}

/// The trimmed value of `line` if it is a Call-ID header line.
fn call_id_in(line: &[u8]) -> Option<&[u8]> {
    let colon = memchr::memchr(b':', line)?;
    let name = trim(&line[..colon]);
    (name.eq_ignore_ascii_case(b"call-id") || name.eq_ignore_ascii_case(b"i"))
        .then(|| trim(&line[colon + 1..]))
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(call_id_line: &str) -> String {
        format!(
            "INVITE sip:bob@example.com SIP/2.0\r\n\
             Via: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK1\r\n\
             From: <sip:alice@example.com>;tag=1\r\n\
             To: <sip:bob@example.com>\r\n\
             {call_id_line}\r\n\
             CSeq: 1 INVITE\r\n\
             Content-Length: 0\r\n\r\n"
        )
    }

    /// The scan as first written, line by line and byte by byte: what `call_id_of` must
    /// agree with.
    fn call_id_line_by_line(bytes: &[u8]) -> Option<&[u8]> {
        let mut lines = bytes.split(|b| *b == b'\n');
        lines.next()?;
        for line in lines {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                return None;
            }
            let Some(colon) = line.iter().position(|b| *b == b':') else {
                continue;
            };
            let (name, value) = (trim(&line[..colon]), &line[colon + 1..]);
            if name.eq_ignore_ascii_case(b"call-id") || name.eq_ignore_ascii_case(b"i") {
                let value = trim(value);
                return (!value.is_empty()).then_some(value);
            }
        }
        None
    }

    #[test]
    fn the_jumping_scan_agrees_with_the_line_by_line_one() {
        let pieces: [&[u8]; 16] = [
            b"Call-ID: a@b",
            b"i:x",
            b" call-id : y ",
            b"\tI: z",
            b"Call-ID:",
            b"C: no",
            b"Contact: <sip:c@d>",
            b"Via: SIP/2.0/UDP h",
            b"",
            b"\r",
            b"X",
            b"ii: w",
            b"Call-IDx: v",
            b"i :\t",
            b"cALL-iD:\tq\t",
            b"CSeq: 1 INVITE",
        ];
        // Every sequence of up to four lines, after a start line, with both line ends.
        let mut seeds = vec![0u64];
        for _ in 0..4 {
            seeds = seeds
                .iter()
                .flat_map(|s| (0..pieces.len() as u64 * 2).map(move |p| s * 64 + p + 1))
                .collect();
            for &seed in &seeds {
                let mut text = b"INVITE sip:x SIP/2.0\r\n".to_vec();
                let mut n = seed;
                while n > 0 {
                    let p = ((n - 1) % 64) as usize;
                    text.extend_from_slice(pieces[p / 2]);
                    text.extend_from_slice(if p % 2 == 0 { b"\r\n" } else { b"\n" });
                    n = (n - 1) / 64;
                }
                for cut in [text.len(), text.len().saturating_sub(1), text.len() / 2] {
                    let bytes = &text[..cut];
                    assert_eq!(
                        call_id_of(bytes),
                        call_id_line_by_line(bytes),
                        "{:?}",
                        String::from_utf8_lossy(bytes)
                    );
                }
            }
        }
    }

    #[test]
    fn the_raw_scan_reads_the_call_id_the_parser_reads() {
        for line in [
            "Call-ID: a84b4c76e66710@pc33.example.com",
            "call-id:a84b4c76e66710@pc33.example.com",
            "CALL-ID  :  a84b4c76e66710@pc33.example.com  ",
            "i: a84b4c76e66710@pc33.example.com",
            "I:\ta84b4c76e66710@pc33.example.com",
        ] {
            let text = message(line);
            let parsed = sip::Message::parse(text.as_bytes()).unwrap();
            let scanned = call_id_of(text.as_bytes()).unwrap();
            assert_eq!(scanned, parsed.call_id().unwrap().as_bytes(), "{line:?}");
            assert_eq!(scanned, b"a84b4c76e66710@pc33.example.com", "{line:?}");
        }
    }

    #[test]
    fn a_call_id_in_the_body_or_nowhere_is_no_call_id() {
        let text =
            "OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\nCall-ID: body\r\n";
        assert_eq!(call_id_of(text.as_bytes()), None);
        assert_eq!(call_id_of(b""), None);
        assert_eq!(call_id_of(b"garbage without lines"), None);
        assert_eq!(call_id_of(b"X\r\nCall-ID:   \r\n\r\n"), None);
        // No Call-ID: shard 0, whose parser answers it.
        let shards = Shards::new(4, [1, 2, 3, 4]);
        assert_eq!(shards.of_message(text.as_bytes()), 0);
    }

    #[test]
    fn every_message_of_a_call_goes_to_the_shard_of_its_call_id() {
        let shards = Shards::new(3, [7, 8, 9, 10]);
        let same = Shards::new(3, [7, 8, 9, 10]);
        for n in 0..200 {
            let id = format!("call-{n}@h");
            let want = shards.of_call_id(&id);
            assert!(want < 3);
            assert_eq!(same.of_call_id(&id), want, "a clone of the seed agrees");
            for line in [format!("Call-ID: {id}"), format!("i:{id}")] {
                assert_eq!(shards.of_message(message(&line).as_bytes()), want);
            }
        }
    }

    #[test]
    fn call_ids_spread_evenly_and_the_seed_changes_where_they_go() {
        let a = Shards::new(4, [1, 1, 1, 1]);
        let b = Shards::new(4, [2, 2, 2, 2]);
        let mut per_shard = [0u32; 4];
        let mut moved = 0;
        for n in 0..40_000 {
            let id = format!("{n}");
            per_shard[a.of_call_id(&id)] += 1;
            moved += u32::from(a.of_call_id(&id) != b.of_call_id(&id));
        }
        for n in per_shard {
            assert!((9_500..=10_500).contains(&n), "{per_shard:?}");
        }
        // With another seed about three quarters land elsewhere: no sender can aim at a shard
        // without the seed.
        assert!((28_000..=32_000).contains(&moved), "{moved}");
        assert_eq!(Shards::single().of_call_id("anything"), 0);
    }
}
