//! Who may hold a connection (SPEC §1a, bounded resources): decides whether a new stream
//! connection gets a slot, against three caps checked in this order:
//!
//! 1. per source address (`[limits] per_source_connections`, inbound only): one host cannot take
//!    the slots everyone else needs;
//! 2. per listener (`[sip] tcp_max_connections`, inbound only);
//! 3. all connections of the box, inbound and outbound together (`[limits] max_connections`):
//!    file descriptors, buffers and tasks are one pool whoever opened the connection.
//!
//! The first cap hit is the reason given, so a flood from one host is counted as that host's
//! and not as the box being full. Pure bookkeeping: the shell holds it behind one lock and
//! gives a slot back when its connection ends.
//!
//! A refused connection is not reset but closed gracefully (FIN or SHUTDOWN, then a moment for
//! the peer to close its side: [`crate::Connection::refused`]). Those closes are bounded too
//! ([`Caps::lingering`]): a flood of connections must not turn into a flood of waiting closes,
//! so past the cap a refused connection is shut down without the wait.
//!
//! Listeners are numbered from 0 by the shell (its listener ids); the crate knows nothing else
//! of them.

use std::collections::HashMap;
use std::net::IpAddr;

/// The caps, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub per_source: usize,
    pub per_listener: usize,
    pub total: usize,
    /// Refused connections allowed to wait out their close at once.
    pub lingering: usize,
}

/// How many refused connections may wait out their close at once, unless configured otherwise.
pub const MAX_LINGERING: usize = 256;

/// Why a connection got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    PerSource,
    Listener,
    Total,
}

/// The connections holding a slot, counted per source, per listener and in total.
#[derive(Debug)]
pub struct Admission {
    caps: Caps,
    total: usize,
    per_listener: Vec<usize>,
    /// Only sources holding at least one connection: the map is as large as the connections.
    per_source: HashMap<IpAddr, usize>,
    /// Refused connections waiting out their close.
    lingering: usize,
}

impl Admission {
    /// Nothing admitted yet, for `listeners` listeners.
    pub fn new(caps: Caps, listeners: usize) -> Admission {
        Admission {
            caps,
            total: 0,
            per_listener: vec![0; listeners],
            per_source: HashMap::new(),
            lingering: 0,
        }
    }

    /// A connection accepted on `listener` from `source`: admitted, or why not.
    pub fn admit_inbound(&mut self, listener: usize, source: IpAddr) -> Result<(), Refused> {
        let source = source.to_canonical();
        let from_source = self.per_source.get(&source).copied().unwrap_or(0);
        if from_source >= self.caps.per_source {
            return Err(Refused::PerSource);
        }
        let Some(on_listener) = self.per_listener.get_mut(listener) else {
            // Not one of ours: nothing may be accepted there.
            return Err(Refused::Listener);
        };
        if *on_listener >= self.caps.per_listener {
            return Err(Refused::Listener);
        }
        if self.total >= self.caps.total {
            return Err(Refused::Total);
        }
        *on_listener += 1;
        self.total += 1;
        self.per_source.insert(source, from_source + 1);
        Ok(())
    }

    /// A connection the box itself wants to open: admitted, or why not.
    pub fn admit_outbound(&mut self) -> Result<(), Refused> {
        if self.total >= self.caps.total {
            return Err(Refused::Total);
        }
        self.total += 1;
        Ok(())
    }

    /// Gives back the slot of an inbound connection admitted with the same arguments.
    pub fn release_inbound(&mut self, listener: usize, source: IpAddr) {
        let source = source.to_canonical();
        if let Some(n) = self.per_listener.get_mut(listener) {
            *n = n.saturating_sub(1);
        }
        if let Some(n) = self.per_source.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&source);
            }
        }
        self.total = self.total.saturating_sub(1);
    }

    /// Gives back the slot of an outbound connection.
    pub fn release_outbound(&mut self) {
        self.total = self.total.saturating_sub(1);
    }

    /// A refused connection wants to wait out its close: whether it may (else it is shut down
    /// without waiting). A yes is given back with [`Self::release_lingering`].
    pub fn admit_lingering(&mut self) -> bool {
        if self.lingering >= self.caps.lingering {
            return false;
        }
        self.lingering += 1;
        true
    }

    /// A refused connection finished waiting out its close.
    pub fn release_lingering(&mut self) {
        self.lingering = self.lingering.saturating_sub(1);
    }

    /// Connections holding a slot.
    #[cfg(test)]
    pub fn open(&self) -> usize {
        self.total
    }

    /// Sources holding at least one inbound connection.
    #[cfg(test)]
    pub fn sources(&self) -> usize {
        self.per_source.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L0: usize = 0;
    const L1: usize = 1;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    fn admission(per_source: usize, per_listener: usize, total: usize) -> Admission {
        Admission::new(
            Caps {
                per_source,
                per_listener,
                total,
                lingering: 2,
            },
            2,
        )
    }

    #[test]
    fn one_source_is_held_to_its_share_and_others_still_get_in() {
        let mut a = admission(2, 10, 10);
        assert_eq!(a.admit_inbound(L0, ip(2)), Ok(()));
        assert_eq!(a.admit_inbound(L1, ip(2)), Ok(()));
        // Per source counts across listeners.
        assert_eq!(a.admit_inbound(L0, ip(2)), Err(Refused::PerSource));
        assert_eq!(a.admit_inbound(L0, ip(3)), Ok(()));
        assert_eq!(a.open(), 3);
        a.release_inbound(L1, ip(2));
        assert_eq!(a.admit_inbound(L0, ip(2)), Ok(()));
    }

    #[test]
    fn an_ipv4_mapped_source_is_the_same_source() {
        let mut a = admission(1, 10, 10);
        assert_eq!(a.admit_inbound(L0, ip(2)), Ok(()));
        let mapped = IpAddr::from(std::net::Ipv4Addr::new(127, 0, 0, 2).to_ipv6_mapped());
        assert_eq!(a.admit_inbound(L0, mapped), Err(Refused::PerSource));
        a.release_inbound(L0, mapped);
        assert_eq!(a.sources(), 0);
    }

    #[test]
    fn the_listener_cap_counts_inbound_only() {
        let mut a = admission(10, 1, 10);
        assert_eq!(a.admit_inbound(L0, ip(2)), Ok(()));
        assert_eq!(a.admit_inbound(L0, ip(3)), Err(Refused::Listener));
        assert_eq!(a.admit_inbound(L1, ip(3)), Ok(()));
        assert_eq!(a.admit_outbound(), Ok(()));
        assert_eq!(a.admit_inbound(7, ip(4)), Err(Refused::Listener));
    }

    #[test]
    fn the_total_cap_counts_both_directions() {
        let mut a = admission(10, 10, 3);
        assert_eq!(a.admit_outbound(), Ok(()));
        assert_eq!(a.admit_outbound(), Ok(()));
        assert_eq!(a.admit_inbound(L0, ip(2)), Ok(()));
        assert_eq!(a.admit_outbound(), Err(Refused::Total));
        assert_eq!(a.admit_inbound(L1, ip(3)), Err(Refused::Total));
        // A refused connection left nothing behind.
        assert_eq!(a.sources(), 1);
        a.release_outbound();
        assert_eq!(a.admit_inbound(L1, ip(3)), Ok(()));
        a.release_inbound(L0, ip(2));
        a.release_inbound(L1, ip(3));
        a.release_outbound();
        assert_eq!((a.open(), a.sources()), (0, 0));
    }

    #[test]
    fn the_source_cap_is_checked_first() {
        // A host over its share is refused as such even when the box is full too.
        let mut a = admission(1, 1, 1);
        assert_eq!(a.admit_inbound(L0, ip(2)), Ok(()));
        assert_eq!(a.admit_inbound(L0, ip(2)), Err(Refused::PerSource));
        assert_eq!(a.admit_inbound(L0, ip(3)), Err(Refused::Listener));
        assert_eq!(a.admit_inbound(L1, ip(3)), Err(Refused::Total));
    }

    #[test]
    fn refused_connections_wait_out_their_close_up_to_the_cap() {
        let mut a = admission(1, 1, 1);
        assert!(a.admit_lingering());
        assert!(a.admit_lingering());
        assert!(!a.admit_lingering(), "the third waits for nobody");
        a.release_lingering();
        assert!(a.admit_lingering());
        // Lingering holds no connection slot.
        assert_eq!(a.admit_inbound(L0, ip(2)), Ok(()));
    }
}
