//! The bytes on the connection: the length prefix, the Hello, the session key and the sealed
//! frames that follow it.
//!
//! This module decides what is authentic and well formed; it knows nothing of windows, acks or
//! timers. Every check that involves a tag runs before anything the tag covers is decoded.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::CloseReason;

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// The protocol version this build speaks (the Hello's first byte).
pub const VERSION: u8 = 1;
/// Every frame starts with its length (of what follows), big-endian.
pub const LEN_PREFIX: usize = 4;
/// Length of the Hello after its prefix: version, node id, epoch, listener hash, nonce, tag.
/// Frozen across versions, so a peer of another version is told [`CloseReason::Version`]
/// rather than [`CloseReason::Malformed`].
pub const HELLO_LEN: usize = 1 + 1 + 8 + 32 + 16 + HELLO_TAG_LEN;
/// The Hello carries a full HMAC-SHA256 tag.
const HELLO_TAG_LEN: usize = 32;
const HELLO_SIGNED_LEN: usize = HELLO_LEN - HELLO_TAG_LEN;
/// Every frame after the Hello ends with this much of its HMAC-SHA256 tag.
pub const TAG_LEN: usize = 16;
/// Separates Hello tags from every other use of the twin key (keep-alives, Record-Route).
const HELLO_DOMAIN: &[u8] = b"sbc-replica-hello\0";
/// Separates session keys from every other use of the twin key.
const SESSION_DOMAIN: &[u8] = b"sbc-replica-session\0";

/// HMAC-SHA256 keyed with `key`.
pub(crate) fn keyed(key: &[u8]) -> HmacSha256 {
    match <HmacSha256 as Mac>::new_from_slice(key) {
        Ok(mac) => mac,
        // HMAC takes keys of any length; `new_from_slice` has no other error.
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    }
}

/// What a Hello says, once its tag has verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hello {
    pub version: u8,
    pub node_id: u8,
    pub epoch: u64,
    pub listener_hash: [u8; 32],
    pub nonce: [u8; 16],
}

impl Hello {
    /// The whole Hello frame, length prefix included, tagged under the long-term key.
    pub fn seal(&self, long_term: &HmacSha256) -> Vec<u8> {
        let mut frame = Vec::with_capacity(LEN_PREFIX + HELLO_LEN);
        frame.extend_from_slice(&(HELLO_LEN as u32).to_be_bytes());
        frame.push(self.version);
        frame.push(self.node_id);
        frame.extend_from_slice(&self.epoch.to_be_bytes());
        frame.extend_from_slice(&self.listener_hash);
        frame.extend_from_slice(&self.nonce);
        let mut mac = long_term.clone();
        mac.update(HELLO_DOMAIN);
        mac.update(&frame[LEN_PREFIX..]);
        frame.extend_from_slice(&mac.finalize().into_bytes());
        frame
    }

    /// Checks the tag of a Hello body (after its prefix), then reads it.
    pub fn open(long_term: &HmacSha256, body: &[u8]) -> Result<Hello, CloseReason> {
        if body.len() != HELLO_LEN {
            return Err(CloseReason::Malformed);
        }
        let (signed, tag) = body.split_at(HELLO_SIGNED_LEN);
        let mut mac = long_term.clone();
        mac.update(HELLO_DOMAIN);
        mac.update(signed);
        mac.verify_slice(tag).map_err(|_| CloseReason::Forged)?;
        let (version, rest) = split::<1>(signed);
        let (node_id, rest) = split::<1>(rest);
        let (epoch, rest) = split::<8>(rest);
        let (listener_hash, rest) = split::<32>(rest);
        let (nonce, _) = split::<16>(rest);
        Ok(Hello {
            version: version[0],
            node_id: node_id[0],
            epoch: u64::from_be_bytes(epoch),
            listener_hash,
            nonce,
        })
    }
}

/// The first `N` bytes as an array and the rest; the caller has checked the length.
fn split<const N: usize>(bytes: &[u8]) -> ([u8; N], &[u8]) {
    let mut head = [0u8; N];
    head.copy_from_slice(&bytes[..N]);
    (head, &bytes[N..])
}

/// The key of one connection: `HMAC(key, label || nonce₁ || nonce₂ || epoch₁ || epoch₂)`, node 1's
/// values first. Both nonces are fresh, so no frame of another connection verifies under it.
pub(crate) fn session_key(
    long_term: &HmacSha256,
    nonces: [&[u8; 16]; 2],
    epochs: [u64; 2],
) -> HmacSha256 {
    let mut mac = long_term.clone();
    mac.update(SESSION_DOMAIN);
    mac.update(nonces[0]);
    mac.update(nonces[1]);
    mac.update(&epochs[0].to_be_bytes());
    mac.update(&epochs[1].to_be_bytes());
    keyed(&mac.finalize().into_bytes())
}

/// The body of every frame after the Hello. Postcard encodes fields in order with no names:
/// changing a variant or a field is a new [`VERSION`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Frame {
    Record {
        seq: u64,
        #[serde(with = "bytes")]
        payload: Vec<u8>,
    },
    SnapshotBegin {
        records: u64,
    },
    SnapshotEnd {
        seq: u64,
    },
    Ack {
        seq: u64,
    },
    Heartbeat,
}

impl Frame {
    /// The postcard body.
    pub fn encode(&self) -> Vec<u8> {
        // Encoding into a Vec fails only when serde itself reports an error, which these types
        // never do.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Reads a whole body; trailing bytes are malformed too.
    pub fn decode(body: &[u8]) -> Result<Frame, CloseReason> {
        match postcard::take_from_bytes::<Frame>(body) {
            Ok((frame, [])) => Ok(frame),
            _ => Err(CloseReason::Malformed),
        }
    }
}

/// The wire size of a sealed frame with a body of `body_len` bytes.
pub(crate) fn sealed_len(body_len: usize) -> usize {
    LEN_PREFIX + body_len + TAG_LEN
}

/// The frame tag: `HMAC(session, sender || counter || body)`, truncated by the caller. The
/// covered bytes go to the MAC in one update (one pass of the block buffer, not three).
fn frame_tag(session: &HmacSha256, sender: u8, counter: u64, body: &[u8]) -> HmacSha256 {
    let mut covered = Vec::with_capacity(1 + 8 + body.len());
    covered.push(sender);
    covered.extend_from_slice(&counter.to_be_bytes());
    covered.extend_from_slice(body);
    let mut mac = session.clone();
    mac.update(&covered);
    mac
}

/// Appends `[len][body][tag]` to `out`.
pub(crate) fn seal_into(
    out: &mut Vec<u8>,
    session: &HmacSha256,
    sender: u8,
    counter: u64,
    body: &[u8],
) {
    out.extend_from_slice(&((body.len() + TAG_LEN) as u32).to_be_bytes());
    out.extend_from_slice(body);
    let tag = frame_tag(session, sender, counter, body)
        .finalize()
        .into_bytes();
    out.extend_from_slice(&tag[..TAG_LEN]);
}

/// Checks the tag of a frame (after its prefix) in constant time, then decodes its body.
pub(crate) fn open(
    session: &HmacSha256,
    sender: u8,
    counter: u64,
    sealed: &[u8],
) -> Result<Frame, CloseReason> {
    if sealed.len() < TAG_LEN {
        return Err(CloseReason::Malformed);
    }
    let (body, tag) = sealed.split_at(sealed.len() - TAG_LEN);
    frame_tag(session, sender, counter, body)
        .verify_truncated_left(tag)
        .map_err(|_| CloseReason::Forged)?;
    Frame::decode(body)
}

/// Record payloads as postcard byte strings (a length and the bytes) rather than a sequence of
/// `u8` elements: the same bytes on the wire, without a visitor call per byte.
mod bytes {
    use std::fmt;

    use serde::de::{Error, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        deserializer.deserialize_byte_buf(BytesVisitor)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::new();
            while let Some(byte) = seq.next_element::<u8>()? {
                out.push(byte);
            }
            Ok(out)
        }
    }
}
