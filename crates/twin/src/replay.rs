//! The anti-replay window for the twin's keep-alives (as IPsec's, RFC 4303 §3.4.3).
//!
//! A keep-alive is fresh when its boot epoch is the twin's current one and its sequence number
//! was not seen yet and is not older than the last [`WINDOW`] numbers; a higher epoch is a
//! restart of the twin and starts a new window. The window is shared by both paths: the twin
//! numbers every datagram it sends, whatever the path, so a copy replayed on the other path is
//! caught too. Only authenticated datagrams reach it, so an attacker cannot move it.

/// How many sequence numbers behind the highest one are still accepted (out of order across
/// paths of different latency).
pub const WINDOW: u64 = 64;

/// Why a (verified) keep-alive is not fresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stale {
    /// The epoch is older than the twin's known one.
    OldEpoch,
    /// Seen already, or older than the window.
    Sequence,
}

/// What a fresh keep-alive did to the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fresh {
    /// Same epoch as before.
    Continues,
    /// The first epoch heard from the twin, or a higher one (the twin restarted).
    NewEpoch { previous: Option<u64> },
}

#[derive(Debug, Clone, Default)]
pub(crate) struct ReplayWindow {
    epoch: Option<u64>,
    highest: u64,
    /// Bit `i` set: `highest - i` was seen.
    seen: u64,
}

impl ReplayWindow {
    /// Checks `(epoch, seq)` and, when fresh, records it.
    pub(crate) fn accept(&mut self, epoch: u64, seq: u64) -> Result<Fresh, Stale> {
        match self.epoch {
            Some(known) if epoch < known => Err(Stale::OldEpoch),
            Some(known) if epoch == known => {
                if seq > self.highest {
                    let shift = seq - self.highest;
                    self.seen = if shift >= WINDOW {
                        0
                    } else {
                        self.seen << shift
                    };
                    self.seen |= 1;
                    self.highest = seq;
                    return Ok(Fresh::Continues);
                }
                let age = self.highest - seq;
                if age >= WINDOW || self.seen & (1 << age) != 0 {
                    return Err(Stale::Sequence);
                }
                self.seen |= 1 << age;
                Ok(Fresh::Continues)
            }
            previous => {
                self.epoch = Some(epoch);
                self.highest = seq;
                self.seen = 1;
                Ok(Fresh::NewEpoch { previous })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_out_of_order_duplicates_and_too_old() {
        let mut w = ReplayWindow::default();
        assert_eq!(w.accept(5, 10), Ok(Fresh::NewEpoch { previous: None }));
        assert_eq!(w.accept(5, 10), Err(Stale::Sequence));
        assert_eq!(w.accept(5, 12), Ok(Fresh::Continues));
        assert_eq!(w.accept(5, 11), Ok(Fresh::Continues), "late but inside");
        assert_eq!(w.accept(5, 11), Err(Stale::Sequence));
        assert_eq!(w.accept(5, 12 + WINDOW), Ok(Fresh::Continues));
        assert_eq!(
            w.accept(5, 12),
            Err(Stale::Sequence),
            "fell out of the window"
        );
        assert_eq!(
            w.accept(5, 13),
            Ok(Fresh::Continues),
            "last slot of the window"
        );
        assert_eq!(w.accept(5, 1000), Ok(Fresh::Continues), "a big jump clears");
        assert_eq!(w.accept(5, 999), Ok(Fresh::Continues));
    }

    #[test]
    fn epochs_only_grow() {
        let mut w = ReplayWindow::default();
        assert!(w.accept(5, 100).is_ok());
        assert_eq!(w.accept(4, 101), Err(Stale::OldEpoch));
        assert_eq!(w.accept(6, 0), Ok(Fresh::NewEpoch { previous: Some(5) }));
        assert_eq!(w.accept(5, 101), Err(Stale::OldEpoch));
        assert_eq!(w.accept(6, 0), Err(Stale::Sequence));
        assert_eq!(w.accept(6, 1), Ok(Fresh::Continues));
    }
}
