//! Whole messages out of partial reads: the pure part of the receive path.
//!
//! A one-to-one SCTP socket delivers a message in as many reads as the buffer needs; the read
//! that ends the message carries `MSG_EOR`. Notifications come the same way, marked with
//! `MSG_NOTIFICATION`. The assembler is fed each read's bytes and flags and hands out a message
//! or a notification once it is whole. It holds a message of at most `max` bytes; a larger one
//! is reported once as too large and the rest of it is skipped, so the next message starts
//! clean.

/// What one read completed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// The message or notification goes on in the next read.
    More,
    Message(Vec<u8>),
    Notification(Vec<u8>),
    /// The message being read passed `limit` (`got` bytes so far); it is dropped.
    TooLarge {
        limit: usize,
        got: usize,
    },
}

#[derive(Debug)]
pub(crate) struct Assembler {
    /// Reused read buffer; `filled` bytes of it are the message being assembled.
    buf: Vec<u8>,
    filled: usize,
    notification: Vec<u8>,
    /// Skipping the rest of a message that was too large.
    discarding: bool,
    max: usize,
    chunk: usize,
}

impl Assembler {
    pub(crate) fn new(max: usize, chunk: usize) -> Assembler {
        Assembler {
            buf: Vec::new(),
            filled: 0,
            notification: Vec::new(),
            discarding: false,
            max,
            chunk: chunk.max(1),
        }
    }

    /// The space the next read goes into (`chunk` bytes after what is held).
    pub(crate) fn read_space(&mut self) -> &mut [u8] {
        let start = if self.discarding { 0 } else { self.filled };
        let end = start + self.chunk;
        if self.buf.len() < end {
            self.buf.resize(end, 0);
        }
        &mut self.buf[start..end]
    }

    /// Takes the result of a read of `n` bytes into [`Self::read_space`].
    pub(crate) fn commit(&mut self, n: usize, end_of_record: bool, notification: bool) -> Step {
        let start = if self.discarding { 0 } else { self.filled };
        let read = &self.buf[start..start + n];
        if notification {
            self.notification.extend_from_slice(read);
            if end_of_record {
                return Step::Notification(std::mem::take(&mut self.notification));
            }
            return Step::More;
        }
        if self.discarding {
            self.discarding = !end_of_record;
            return Step::More;
        }
        self.filled += n;
        if self.filled > self.max {
            let got = self.filled;
            self.filled = 0;
            self.discarding = !end_of_record;
            return Step::TooLarge {
                limit: self.max,
                got,
            };
        }
        if end_of_record {
            let message = self.buf[..self.filled].to_vec();
            self.filled = 0;
            return Step::Message(message);
        }
        Step::More
    }

    /// Bytes of an unfinished message held (0 between messages).
    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        self.filled
    }

    /// Forgets the unfinished message (its delivery was aborted).
    pub(crate) fn drop_partial(&mut self) {
        self.filled = 0;
        self.discarding = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `bytes` as reads of at most the assembler's chunk, the last one with EOR.
    fn feed(a: &mut Assembler, bytes: &[u8], notification: bool) -> Vec<Step> {
        let mut steps = Vec::new();
        let mut rest = bytes;
        loop {
            let space = a.read_space();
            let n = rest.len().min(space.len());
            space[..n].copy_from_slice(&rest[..n]);
            rest = &rest[n..];
            steps.push(a.commit(n, rest.is_empty(), notification));
            if rest.is_empty() {
                return steps;
            }
        }
    }

    #[test]
    fn a_message_larger_than_one_read_comes_out_whole() {
        let mut a = Assembler::new(65_535, 4096);
        let msg: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let steps = feed(&mut a, &msg, false);
        assert_eq!(steps.len(), 3);
        assert_eq!(steps[0], Step::More);
        assert_eq!(steps[1], Step::More);
        assert_eq!(steps[2], Step::Message(msg));
        assert_eq!(a.pending(), 0);
    }

    #[test]
    fn an_oversize_message_is_reported_once_and_the_next_one_is_clean() {
        let mut a = Assembler::new(5000, 4096);
        let big = vec![b'x'; 12_000];
        let steps = feed(&mut a, &big, false);
        assert_eq!(
            steps,
            vec![
                Step::More,
                Step::TooLarge {
                    limit: 5000,
                    got: 8192
                },
                Step::More
            ]
        );
        let small = b"OPTIONS sip:a SIP/2.0\r\n\r\n".to_vec();
        assert_eq!(feed(&mut a, &small, false), vec![Step::Message(small)]);
    }

    #[test]
    fn a_message_of_exactly_the_limit_passes() {
        let mut a = Assembler::new(8192, 4096);
        let msg = vec![b'y'; 8192];
        assert_eq!(feed(&mut a, &msg, false).pop(), Some(Step::Message(msg)));
    }

    #[test]
    fn notifications_are_kept_apart_from_a_partial_message() {
        let mut a = Assembler::new(65_535, 4);
        let space = a.read_space();
        space.copy_from_slice(b"INVI");
        assert_eq!(a.commit(4, false, false), Step::More);
        assert_eq!(
            feed(&mut a, b"note", true),
            vec![Step::Notification(b"note".to_vec())]
        );
        let steps = feed(&mut a, b"TE", false);
        assert_eq!(steps, vec![Step::Message(b"INVITE".to_vec())]);
    }
}
