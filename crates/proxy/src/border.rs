//! The border's own decisions (SPEC §1a) that do not belong to one SIP mechanism: unpredictable
//! identifiers, the signed Record-Route token, stateless To tags, and the per-source request
//! budget.
//!
//! Pure like the rest of the crate: randomness comes from a seed and keys from the shell (which
//! reads the OS's random source and the key file), time comes in as a parameter.

use crate::hash::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::transport::{Realm, Transport};

type HmacSha256 = Hmac<Sha256>;

/// The secrets the proxy works with. The shell fills both from the OS (the route key from the
/// data partition, so tokens survive a restart); the all-zero default is for tests only.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keys {
    /// Signs what the box writes into its Record-Route entries (SPEC §7) and keys stateless
    /// To tags.
    pub route: [u8; 32],
    /// Seeds the generator of branch ids and tags.
    pub seed: [u8; 32],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

/// Branch ids and tags from a CSPRNG (ChaCha20): 64 bits each, so one seen on the wire says
/// nothing about the next.
pub(crate) struct Ids {
    rng: ChaCha20Rng,
}

impl std::fmt::Debug for Ids {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ids(..)")
    }
}

impl Ids {
    pub(crate) fn new(seed: [u8; 32]) -> Ids {
        Ids {
            rng: ChaCha20Rng::from_seed(seed),
        }
    }

    /// 64 random bits, as 16 hex digits.
    pub(crate) fn token(&mut self) -> String {
        let mut s = String::with_capacity(16);
        self.push_token(&mut s);
        s
    }

    /// Appends a [`Ids::token`] to `out` (no string of its own).
    pub(crate) fn push_token(&mut self, out: &mut String) {
        push_hex(out, self.rng.next_u64(), 16);
    }

    /// The next 64 random bits (what a token shows in hex).
    pub(crate) fn next(&mut self) -> u64 {
        self.rng.next_u64()
    }
}

/// Appends `n` in lower-case hex, zero-padded to at least `width` digits (what `{:0width$x}`
/// writes, without the formatting machinery on the per-message path).
pub(crate) fn push_hex(out: &mut String, n: u64, width: usize) {
    let mut digits = [0u8; 16];
    let count = write_hex(&mut digits, n, width);
    // The digits are ASCII: the check passes, and one copy is cheaper than a push a digit.
    out.push_str(std::str::from_utf8(&digits[..count]).unwrap_or_default());
}

/// Writes [`push_hex`]'s digits into `out`; returns how many.
pub(crate) fn write_hex(out: &mut [u8; 16], n: u64, width: usize) -> usize {
    let digits = (64 - n.leading_zeros() as usize)
        .div_ceil(4)
        .max(1)
        .max(width.min(16));
    // The digits wanted moved to the top, then all sixteen written eight at a time: what
    // follows the first `digits` is never read.
    let top = n << ((16 - digits) * 4);
    out[..8].copy_from_slice(&hex_word((top >> 32) as u32).to_be_bytes());
    out[8..].copy_from_slice(&hex_word(top as u32).to_be_bytes());
    digits
}

/// The eight lower-case hex digits of `x`, most significant in the top byte: each nibble
/// spread into a byte of its own, then made a digit in every byte at once (no carry crosses
/// a byte: the largest is `f`, 0x66).
fn hex_word(x: u32) -> u64 {
    const LOW_NIBBLES: u64 = 0x0f0f_0f0f_0f0f_0f0f;
    const ONES: u64 = 0x0101_0101_0101_0101;
    let x = u64::from(x);
    let x = ((x & 0xffff_0000) << 16) | (x & 0xffff);
    let x = ((x & 0x0000_ff00_0000_ff00) << 8) | (x & 0x0000_00ff_0000_00ff);
    let x = (((x & 0x00f0_00f0_00f0_00f0) << 4) | (x & 0x000f_000f_000f_000f)) & LOW_NIBBLES;
    // Bit 4 of a nibble plus six is set for a..f, which start 0x27 after '9' + 1.
    let letters = ((x + 6 * ONES) >> 4) & ONES;
    x + u64::from(b'0') * ONES + letters * 0x27
}

/// HMAC-SHA256 under the route key, keyed once: each use clones the state after the key's
/// two blocks, so a signature costs the message's blocks and the outer one only.
#[derive(Clone)]
pub struct Signer {
    keyed: HmacSha256,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

impl Signer {
    /// A signer for `key`.
    pub fn new(key: &[u8; 32]) -> Signer {
        // HMAC takes keys of any length; a 32-byte key cannot be refused.
        let keyed = match <HmacSha256 as Mac>::new_from_slice(key) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC accepts any key length"),
        };
        Signer { keyed }
    }

    fn start(&self, domain: &[u8]) -> HmacSha256 {
        let mut m = self.keyed.clone();
        m.update(domain);
        m
    }
}

// Unpadded URL-safe base64 (`URL_SAFE_NO_PAD`): all of it is allowed in a URI parameter
// unescaped.

fn decode(s: &str) -> Option<Vec<u8>> {
    if s.len() > 200 {
        return None;
    }
    URL_SAFE_NO_PAD.decode(s).ok()
}

/// A stateless To tag: the same request (retransmitted) gets the same tag, and nobody without
/// the key can tell the next one.
pub(crate) fn stateless_tag(signer: &Signer, parts: &[&str]) -> String {
    let mut m = signer.start(b"tag");
    for p in parts {
        m.update(&[0]);
        m.update(p.as_bytes());
    }
    let full = m.finalize().into_bytes();
    full[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// One party of a signed dialog: where it is and over what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenParty {
    /// Its address as the box reached it.
    pub addr: SocketAddr,
    /// The transport toward it.
    pub transport: Transport,
}

/// What the box writes into its Record-Route entry (parameter `sbc=`), signed: the realm of
/// the caller and where each realm's party is. A node with no record of the dialog verifies it
/// against the request's Call-ID and caller tag, and sends the request to the party on the
/// other side, never to an address the sender wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteToken {
    /// The realm the INVITE (or SUBSCRIBE, REFER) came from.
    pub caller_realm: Realm,
    /// The access-side party.
    pub access: TokenParty,
    /// The core-side party.
    pub core: TokenParty,
}

/// The URI parameter that carries the token.
pub const TOKEN_PARAM: &str = "sbc";
const TOKEN_VERSION: u8 = 1;
const MAC_LEN: usize = 12;

fn realm_byte(r: Realm) -> u8 {
    match r {
        Realm::Access => b'a',
        Realm::Core => b'c',
    }
}

fn transport_byte(t: Transport) -> u8 {
    match t {
        Transport::Udp => b'u',
        Transport::Tcp => b't',
        Transport::Sctp => b's',
    }
}

fn read_party(b: &[u8]) -> Option<(TokenParty, &[u8])> {
    let (&t, rest) = b.split_first()?;
    let transport = match t {
        b'u' => Transport::Udp,
        b't' => Transport::Tcp,
        b's' => Transport::Sctp,
        _ => return None,
    };
    let (&family, rest) = rest.split_first()?;
    let (ip, rest): (IpAddr, &[u8]) = match family {
        4 => {
            let octets: [u8; 4] = rest.get(..4)?.try_into().ok()?;
            (octets.into(), &rest[4..])
        }
        6 => {
            let octets: [u8; 16] = rest.get(..16)?.try_into().ok()?;
            (octets.into(), &rest[16..])
        }
        _ => return None,
    };
    let port = u16::from_be_bytes(rest.get(..2)?.try_into().ok()?);
    Some((
        TokenParty {
            addr: SocketAddr::new(ip, port),
            transport,
        },
        &rest[2..],
    ))
}

/// Room for a token's body and MAC: two IPv6 parties (20 bytes each), version, realm, MAC.
const TOKEN_ROOM: usize = 64;

/// A token's bytes before base64, on the stack: a signature allocates nothing.
struct TokenBytes {
    bytes: [u8; TOKEN_ROOM],
    len: usize,
}

impl TokenBytes {
    fn push(&mut self, more: &[u8]) {
        // Two parties, version, realm and MAC fit in TOKEN_ROOM: nothing is ever cut here.
        let end = (self.len + more.len()).min(TOKEN_ROOM);
        let n = end - self.len;
        self.bytes[self.len..end].copy_from_slice(&more[..n]);
        self.len = end;
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

fn push_party(out: &mut TokenBytes, p: &TokenParty) {
    out.push(&[transport_byte(p.transport)]);
    match p.addr.ip() {
        IpAddr::V4(ip) => {
            out.push(&[4]);
            out.push(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(&[6]);
            out.push(&ip.octets());
        }
    }
    out.push(&p.addr.port().to_be_bytes());
}

impl RouteToken {
    fn body(&self) -> TokenBytes {
        let mut b = TokenBytes {
            bytes: [0; TOKEN_ROOM],
            len: 0,
        };
        b.push(&[TOKEN_VERSION, realm_byte(self.caller_realm)]);
        push_party(&mut b, &self.access);
        push_party(&mut b, &self.core);
        b
    }

    fn mac(signer: &Signer, body: &[u8], call_id: &str, caller_tag: &str) -> HmacSha256 {
        let mut m = signer.start(b"rr");
        m.update(body);
        m.update(&[0]);
        m.update(call_id.as_bytes());
        m.update(&[0]);
        m.update(caller_tag.as_bytes());
        m
    }

    /// The parameter value for a dialog identified by `call_id` and the caller's tag.
    pub fn sign(&self, signer: &Signer, call_id: &str, caller_tag: &str) -> String {
        let mut out = String::new();
        self.sign_into(signer, call_id, caller_tag, &mut out);
        out
    }

    /// [`RouteToken::sign`], appended to `out` (no allocation when it has room).
    pub fn sign_into(&self, signer: &Signer, call_id: &str, caller_tag: &str, out: &mut String) {
        let mut signed = self.body();
        let full = Self::mac(signer, signed.as_slice(), call_id, caller_tag)
            .finalize()
            .into_bytes();
        signed.push(&full[..MAC_LEN]);
        URL_SAFE_NO_PAD.encode_string(signed.as_slice(), out);
    }

    /// The token in `value` if its signature holds for `call_id` and one of `tags` (an
    /// in-dialog request carries the caller's tag in From or in To, depending on its
    /// direction).
    pub fn verify(signer: &Signer, value: &str, call_id: &str, tags: &[&str]) -> Option<Self> {
        let raw = decode(value)?;
        let split = raw.len().checked_sub(MAC_LEN)?;
        let (body, tag) = raw.split_at(split);
        let signed = tags.iter().any(|caller_tag| {
            // Constant-time comparison of the truncated tag.
            Self::mac(signer, body, call_id, caller_tag)
                .verify_truncated_left(tag)
                .is_ok()
        });
        if !signed {
            return None;
        }
        let (&version, rest) = body.split_first()?;
        if version != TOKEN_VERSION {
            return None;
        }
        let (&realm, rest) = rest.split_first()?;
        let caller_realm = match realm {
            b'a' => Realm::Access,
            b'c' => Realm::Core,
            _ => return None,
        };
        let (access, rest) = read_party(rest)?;
        let (core, rest) = read_party(rest)?;
        rest.is_empty().then_some(RouteToken {
            caller_realm,
            access,
            core,
        })
    }

    /// The party in `realm`.
    pub fn party(&self, realm: Realm) -> TokenParty {
        match realm {
            Realm::Access => self.access,
            Realm::Core => self.core,
        }
    }
}

/// How many sources the budget table remembers before it forgets the idle ones.
const SOURCES_TRACKED: usize = 65_536;

/// A token bucket per source address: `rate` requests a second, bursts up to one second's
/// worth. Exempt addresses (the configured upstreams) are not counted.
#[derive(Debug)]
pub(crate) struct SourceBudget {
    rate: u32,
    buckets: HashMap<IpAddr, Bucket>,
    /// No bucket is full again before this (none: not known). A full table of busy sources
    /// made every request from a new source walk all of them; now a walk happens only once
    /// some bucket may be idle. Taking a token only moves a bucket's idle time later, so only
    /// new buckets can move this earlier.
    idle_not_before: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Requests that may still come, in thousandths.
    milli_tokens: u64,
    last: Instant,
}

impl SourceBudget {
    pub(crate) fn new(rate: u32) -> SourceBudget {
        SourceBudget {
            rate,
            buckets: HashMap::default(),
            idle_not_before: None,
        }
    }

    /// When `bucket` is full again if nothing takes from it, rounded down: never after it is.
    fn full_at(rate: u32, bucket: &Bucket) -> Instant {
        let missing = (u64::from(rate) * 1000).saturating_sub(bucket.milli_tokens);
        let micros = u128::from(missing) * 1000 / u128::from(rate.max(1));
        bucket.last + Duration::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
    }

    fn full(&self) -> u64 {
        u64::from(self.rate) * 1000
    }

    fn refill(rate: u32, bucket: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(bucket.last);
        let add = elapsed.as_micros().saturating_mul(u128::from(rate)) / 1000;
        let full = u64::from(rate) * 1000;
        bucket.milli_tokens = u64::try_from(u128::from(bucket.milli_tokens) + add)
            .unwrap_or(u64::MAX)
            .min(full);
        bucket.last = now;
    }

    /// Whether one more request from `ip` is within its budget (and takes it if so).
    pub(crate) fn admit(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.rate == 0 {
            return true;
        }
        let new = !self.buckets.contains_key(&ip);
        if new && self.buckets.len() >= SOURCES_TRACKED {
            self.forget_idle(now);
            if self.buckets.len() >= SOURCES_TRACKED {
                // Every tracked source is busy: this one is admitted uncounted rather than
                // tracked, so a flood from many addresses cannot grow the table.
                return true;
            }
        }
        let full = self.full();
        let rate = self.rate;
        let bucket = self.buckets.entry(ip).or_insert(Bucket {
            milli_tokens: full,
            last: now,
        });
        Self::refill(rate, bucket, now);
        let admitted = if bucket.milli_tokens >= 1000 {
            bucket.milli_tokens -= 1000;
            true
        } else {
            false
        };
        if new {
            let at = Self::full_at(rate, bucket);
            self.idle_not_before = self.idle_not_before.map(|t| t.min(at));
        }
        admitted
    }

    /// Drops the buckets that are full again (their sources have been quiet for a second).
    /// When every source is busy, the table stays as it is and new sources share the
    /// budget of no one: they are admitted uncounted until old ones quieten, which the global
    /// caps still bound.
    fn forget_idle(&mut self, now: Instant) {
        if self.idle_not_before.is_some_and(|t| now < t) {
            return;
        }
        let rate = self.rate;
        let full = self.full();
        let mut idle_not_before: Option<Instant> = None;
        self.buckets.retain(|_, b| {
            Self::refill(rate, b, now);
            let keep = b.milli_tokens < full;
            if keep {
                let at = Self::full_at(rate, b);
                idle_not_before = Some(idle_not_before.map_or(at, |t| t.min(at)));
            }
            keep
        });
        self.idle_not_before = idle_not_before;
    }

    /// Sources remembered now.
    #[cfg(test)]
    pub(crate) fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

/// A `Retry-After` from an upstream, capped (SPEC §1a).
pub(crate) fn capped_wait(secs: u32, max: Duration) -> Duration {
    Duration::from_secs(u64::from(secs)).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> RouteToken {
        RouteToken {
            caller_realm: Realm::Access,
            access: TokenParty {
                addr: "192.0.2.7:5062".parse().unwrap(),
                transport: Transport::Tcp,
            },
            core: TokenParty {
                addr: "[2001:db8::1]:5060".parse().unwrap(),
                transport: Transport::Udp,
            },
        }
    }

    #[test]
    fn a_signed_token_verifies_with_either_tag_position_and_nothing_else() {
        let key = Signer::new(&[7u8; 32]);
        let value = token().sign(&key, "call-1", "tagA");
        assert_eq!(
            RouteToken::verify(&key, &value, "call-1", &["tagB", "tagA"]),
            Some(token())
        );
        assert_eq!(RouteToken::verify(&key, &value, "call-2", &["tagA"]), None);
        assert_eq!(
            RouteToken::verify(&Signer::new(&[8u8; 32]), &value, "call-1", &["tagA"]),
            None
        );
        // Any change to the body (another destination) breaks the signature.
        let mut raw = decode(&value).unwrap();
        raw[3] ^= 1;
        let forged = base64::Engine::encode(&URL_SAFE_NO_PAD, &raw);
        assert_eq!(RouteToken::verify(&key, &forged, "call-1", &["tagA"]), None);
        assert_eq!(RouteToken::verify(&key, "z.z", "call-1", &["tagA"]), None);
        assert_eq!(RouteToken::verify(&key, "", "call-1", &["tagA"]), None);
    }

    #[test]
    fn ids_do_not_repeat_and_differ_per_seed() {
        let mut a = Ids::new([1; 32]);
        let mut b = Ids::new([2; 32]);
        let first: Vec<String> = (0..100).map(|_| a.token()).collect();
        let mut sorted = first.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 100);
        assert_ne!(first[0], b.token());
        assert_eq!(first[0].len(), 16);
    }

    #[test]
    fn push_hex_writes_what_format_writes() {
        for n in [
            0,
            1,
            0xf,
            0x10,
            0xdead_beef,
            0x0123_4567_89ab_cdef,
            0xfedc_ba98_7654_3210,
            0xa0a0_5f5f,
            u64::from(u32::MAX),
            u64::MAX,
            1 << 63,
        ]
        .into_iter()
        .chain((0..64).map(|shift| 0x9e37_79b9_7f4a_7c15_u64 >> shift))
        {
            for width in [0, 1, 7, 8, 9, 16] {
                let mut s = String::new();
                push_hex(&mut s, n, width);
                assert_eq!(s, format!("{n:0width$x}"), "{n} {width}");
            }
        }
    }

    #[test]
    fn stateless_tags_are_stable_per_request_and_keyed() {
        let one = Signer::new(&[1; 32]);
        let t = stateless_tag(&one, &["z9hG4bK1", "call"]);
        assert_eq!(t, stateless_tag(&one, &["z9hG4bK1", "call"]));
        assert_ne!(t, stateless_tag(&one, &["z9hG4bK2", "call"]));
        assert_ne!(
            t,
            stateless_tag(&Signer::new(&[2; 32]), &["z9hG4bK1", "call"])
        );
    }

    #[test]
    fn a_source_gets_its_rate_and_no_more_and_recovers() {
        let t0 = Instant::now();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let mut budget = SourceBudget::new(10);
        let admitted = (0..50).filter(|_| budget.admit(ip, t0)).count();
        assert_eq!(admitted, 10);
        assert!(budget.admit(other, t0), "another source has its own budget");
        // 100 ms later, one more.
        let t1 = t0 + Duration::from_millis(100);
        assert!(budget.admit(ip, t1));
        assert!(!budget.admit(ip, t1));
        // A second later, a full burst again, never more.
        let t2 = t1 + Duration::from_secs(5);
        assert_eq!((0..50).filter(|_| budget.admit(ip, t2)).count(), 10);
    }

    #[test]
    fn the_table_forgets_quiet_sources_when_full() {
        let t0 = Instant::now();
        let mut budget = SourceBudget::new(5);
        for i in 0..SOURCES_TRACKED as u32 {
            assert!(budget.admit(IpAddr::from(i.to_be_bytes()), t0));
        }
        assert_eq!(budget.tracked(), SOURCES_TRACKED);
        let later = t0 + Duration::from_secs(2);
        assert!(budget.admit("198.51.100.1".parse().unwrap(), later));
        assert_eq!(budget.tracked(), 1);
    }

    #[test]
    fn a_full_table_of_busy_sources_is_walked_again_only_when_one_may_be_idle() {
        let t0 = Instant::now();
        let mut budget = SourceBudget::new(5);
        let source = |i: u32| IpAddr::from(i.to_be_bytes());
        for i in 0..SOURCES_TRACKED as u32 {
            assert!(budget.admit(source(i), t0));
        }
        // Everyone is busy: a newcomer is admitted uncounted, nobody is forgotten, and the
        // table does not grow past its bound.
        assert!(budget.admit(source(u32::MAX), t0 + Duration::from_millis(10)));
        assert_eq!(budget.tracked(), SOURCES_TRACKED);
        assert_eq!(
            budget.idle_not_before,
            Some(t0 + Duration::from_millis(200))
        );
        // One token back takes 200 ms at 5 a second: just before, still nobody is idle.
        assert!(budget.admit(source(u32::MAX - 1), t0 + Duration::from_millis(199)));
        assert_eq!(budget.tracked(), SOURCES_TRACKED);
        // At 200 ms the first sources are full again and go; the newcomer is tracked.
        assert!(budget.admit(source(u32::MAX - 2), t0 + Duration::from_millis(200)));
        assert_eq!(budget.tracked(), 1);
    }
}
