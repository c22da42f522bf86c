//! The keep-alive on the wire: a versioned, authenticated envelope around a postcard body.
//!
//! ```text
//! [MAGIC] [VERSION] [postcard(Keepalive)] [HMAC-SHA256 tag, 32 bytes]
//! ```
//!
//! The tag covers everything before it (magic and version included) and is keyed under a domain
//! label, because the same twin key also signs Record-Route entries (SPEC §7): a tag made for
//! one purpose must never verify for the other. [`open`] checks the size, then the tag (in
//! constant time), and only then looks at the version and decodes: nothing an attacker without
//! the key sends reaches the decoder.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::{DropReason, PeerState};

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// First byte of every twin datagram: tells a keep-alive from anything else sent to the port.
pub const MAGIC: u8 = 0xB7;
/// The envelope version this build speaks. A different one is dropped as
/// [`DropReason::Version`].
pub const VERSION: u8 = 1;
/// Length of the HMAC-SHA256 tag that ends every datagram.
pub const TAG_LEN: usize = 32;
/// The largest datagram accepted: a keep-alive is under 100 bytes; anything much bigger is not
/// one of ours and is refused before the MAC is even computed over it.
pub const MAX_DATAGRAM: usize = 512;
const HEADER_LEN: usize = 2;
/// Separates keep-alive tags from every other use of the twin key.
const DOMAIN: &[u8] = b"sbc twin keep-alive\0";

/// Where the sender stands with the service addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Holds no service address and is not trying to.
    Standby,
    /// Has decided to take over (term raised) and waits for its address probe.
    Probing,
    /// Holds the service addresses.
    Active,
}

/// What a keep-alive is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// The periodic keep-alive.
    Beat,
    /// "Are you there?": sent once on every path when the twin went silent on all of them.
    Query { nonce: u64 },
    /// The answer to a query, echoing its nonce, sent at once on the path the query came on.
    Answer { nonce: u64 },
}

/// The body of every twin datagram (SPEC §7: node id, boot epoch, sequence number, term, role,
/// system state, counts, health, replication position). Postcard encodes fields in order with
/// no names: adding, removing or reordering a field (or a variant of [`Phase`] or [`Kind`]) is
/// a new [`VERSION`], pinned by a test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keepalive {
    pub node_id: u8,
    pub epoch: u64,
    pub seq: u64,
    pub term: u64,
    pub phase: Phase,
    /// The operator asked this node to give its addresses away: it must not win an election.
    pub standing_down: bool,
    pub state: PeerState,
    pub calls: u32,
    pub registrations: u32,
    pub health: u8,
    pub replication_position: u64,
    pub kind: Kind,
}

/// Signs and verifies datagrams under the twin key (keyed once; each use clones the state).
#[derive(Clone)]
pub(crate) struct Sealer {
    keyed: HmacSha256,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    pub(crate) fn new(keyed: HmacSha256) -> Sealer {
        Sealer { keyed }
    }

    fn mac(&self, signed: &[u8]) -> HmacSha256 {
        let mut mac = self.keyed.clone();
        mac.update(DOMAIN);
        mac.update(signed);
        mac
    }

    /// The datagram for `body`.
    pub(crate) fn seal(&self, body: &Keepalive) -> Vec<u8> {
        self.seal_raw(VERSION, body)
    }

    /// Seals under any version byte: tests use it to forge future versions with a good tag.
    pub(crate) fn seal_raw(&self, version: u8, body: &Keepalive) -> Vec<u8> {
        let mut out = vec![MAGIC, version];
        // Encoding a plain struct into a Vec cannot fail (no maps, no unsized sequences): if it
        // ever did, an empty body makes the twin drop the datagram as malformed rather than
        // this node panicking.
        out.extend(postcard::to_allocvec(body).unwrap_or_default());
        let tag = self.mac(&out).finalize().into_bytes();
        out.extend_from_slice(&tag);
        out
    }

    /// Verifies and decodes a datagram, or says why it is dropped.
    pub(crate) fn open(&self, datagram: &[u8]) -> Result<Keepalive, DropReason> {
        if datagram.len() > MAX_DATAGRAM || datagram.len() < HEADER_LEN + TAG_LEN {
            return Err(DropReason::Malformed);
        }
        let (signed, tag) = datagram.split_at(datagram.len() - TAG_LEN);
        // Constant-time comparison inside `verify_slice`.
        self.mac(signed)
            .verify_slice(tag)
            .map_err(|_| DropReason::Forged)?;
        let (header, body) = signed.split_at(HEADER_LEN);
        if header[0] != MAGIC {
            return Err(DropReason::Malformed);
        }
        if header[1] != VERSION {
            return Err(DropReason::Version);
        }
        match postcard::take_from_bytes::<Keepalive>(body) {
            Ok((keepalive, [])) => Ok(keepalive),
            _ => Err(DropReason::Malformed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Key;

    fn sealer(byte: u8) -> Sealer {
        Sealer::new(Key::new(vec![byte; 32]).unwrap().keyed)
    }

    fn sample() -> Keepalive {
        Keepalive {
            node_id: 1,
            epoch: 7,
            seq: 1234,
            term: 3,
            phase: Phase::Active,
            standing_down: false,
            state: PeerState::Draining,
            calls: 42,
            registrations: 1000,
            health: 90,
            replication_position: u64::MAX,
            kind: Kind::Query { nonce: 99 },
        }
    }

    #[test]
    fn a_sealed_keepalive_opens_to_the_same_body() {
        let s = sealer(1);
        let datagram = s.seal(&sample());
        assert!(datagram.len() < 100, "{} bytes", datagram.len());
        assert_eq!(s.open(&datagram), Ok(sample()));
    }

    /// The version-1 datagram, byte for byte: the two boxes of a pair run different builds
    /// during an update, so a change here must come with a new [`VERSION`].
    #[test]
    fn the_version_1_datagram_is_pinned() {
        let body = Keepalive {
            node_id: 2,
            epoch: 1_700_000_000,
            seq: 300,
            term: 7,
            phase: Phase::Probing,
            standing_down: true,
            state: PeerState::Offline,
            calls: 5,
            registrations: 70_000,
            health: 100,
            replication_position: 123_456_789,
            kind: Kind::Answer { nonce: 299 },
        };
        let datagram = sealer(1).seal(&body);
        let hex: String = datagram.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(&hex[..4], "b701");
        assert_eq!(
            &hex[4..hex.len() - 64],
            "0280e2cfaa06ac020701010205f0a20464959aef3a02ab02"
        );
        // HMAC-SHA256(key, "sbc twin keep-alive\0" || magic || version || body), checked
        // against Python's hmac module.
        assert_eq!(
            &hex[hex.len() - 64..],
            "e51a4ec61863bcbce01b636e00089346e14d0dfa0b2e436fe008fdb3617dbd60"
        );
        assert_eq!(sealer(1).open(&datagram), Ok(body));
    }

    #[test]
    fn a_tampered_byte_anywhere_is_forged() {
        let s = sealer(1);
        let datagram = s.seal(&sample());
        for i in 0..datagram.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut bad = datagram.clone();
                bad[i] ^= flip;
                assert_eq!(
                    s.open(&bad),
                    Err(DropReason::Forged),
                    "byte {i} ^ {flip:#x}"
                );
            }
        }
    }

    #[test]
    fn a_truncated_or_extended_datagram_is_dropped() {
        let s = sealer(1);
        let datagram = s.seal(&sample());
        for len in 0..datagram.len() {
            let got = s.open(&datagram[..len]);
            assert!(
                matches!(got, Err(DropReason::Forged | DropReason::Malformed)),
                "length {len}: {got:?}"
            );
        }
        let mut longer = datagram.clone();
        longer.push(0);
        assert_eq!(s.open(&longer), Err(DropReason::Forged));
        assert_eq!(
            s.open(&vec![0; MAX_DATAGRAM + 1]),
            Err(DropReason::Malformed)
        );
    }

    #[test]
    fn another_key_makes_it_forged() {
        let datagram = sealer(1).seal(&sample());
        assert_eq!(sealer(2).open(&datagram), Err(DropReason::Forged));
    }

    #[test]
    fn an_unknown_version_with_a_good_tag_is_a_version_drop() {
        let s = sealer(1);
        assert_eq!(
            s.open(&s.seal_raw(VERSION + 1, &sample())),
            Err(DropReason::Version)
        );
    }

    #[test]
    fn a_good_tag_over_garbage_is_malformed() {
        let s = sealer(1);
        let mut signed = vec![MAGIC, VERSION, 0xff, 0xff, 0xff];
        let tag = s.mac(&signed).finalize().into_bytes();
        signed.extend_from_slice(&tag);
        assert_eq!(s.open(&signed), Err(DropReason::Malformed));

        // A valid body followed by trailing bytes, all under a good tag.
        let mut padded = vec![MAGIC, VERSION];
        padded.extend(postcard::to_allocvec(&sample()).unwrap());
        padded.push(0);
        let tag = s.mac(&padded).finalize().into_bytes();
        padded.extend_from_slice(&tag);
        assert_eq!(s.open(&padded), Err(DropReason::Malformed));

        // A good tag but a stranger's magic byte.
        let mut other = vec![0x00, VERSION];
        other.extend(postcard::to_allocvec(&sample()).unwrap());
        let tag = s.mac(&other).finalize().into_bytes();
        other.extend_from_slice(&tag);
        assert_eq!(s.open(&other), Err(DropReason::Malformed));
    }
}
