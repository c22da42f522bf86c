//! Text the tables keep and share: one allocation for several pieces written together, and a
//! copy that is a reference count.

use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Shared text: a whole `Arc<str>` or a piece of one. The texts a session learns at once (its
/// Call-ID, the caller's tag, URI and contact, the callee's URI) are pieces of one allocation,
/// and the table, the transactions and events that name the session and its change records
/// hold them without copying. Compares, orders, hashes and serialises as the `str` it reads.
#[derive(Clone)]
pub struct Text {
    all: Arc<str>,
    start: usize,
    end: usize,
}

impl Text {
    /// The text it reads.
    pub fn as_str(&self) -> &str {
        self.all.get(self.start..self.end).unwrap_or_default()
    }

    /// Whether both are the same piece of the same allocation (so they read the same text,
    /// without reading it).
    pub fn is(&self, other: &Text) -> bool {
        Arc::ptr_eq(&self.all, &other.all) && self.start == other.start && self.end == other.end
    }

    /// `parts` as pieces of one allocation, written through `scratch` (cleared first).
    pub fn joined<const N: usize>(parts: [&str; N], scratch: &mut String) -> [Text; N] {
        scratch.clear();
        for part in parts {
            scratch.push_str(part);
        }
        let all: Arc<str> = Arc::from(scratch.as_str());
        let mut at = 0;
        parts.map(|part| {
            let start = at;
            at += part.len();
            Text {
                all: all.clone(),
                start,
                end: at,
            }
        })
    }
}

impl std::ops::Deref for Text {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for Text {
    fn from(text: &str) -> Text {
        Text {
            all: Arc::from(text),
            start: 0,
            end: text.len(),
        }
    }
}

impl From<String> for Text {
    fn from(text: String) -> Text {
        let end = text.len();
        Text {
            all: Arc::from(text),
            start: 0,
            end,
        }
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Text) -> bool {
        // A session's id is mostly compared with a copy of itself (the one its transactions
        // hold): the same piece of the same allocation is equal without reading it.
        self.is(other) || self.as_str() == other.as_str()
    }
}

impl Eq for Text {}

impl PartialOrd for Text {
    fn partial_cmp(&self, other: &Text) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Text {
    fn cmp(&self, other: &Text) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl std::hash::Hash for Text {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // As its `str`: tables are looked up with borrowed `str` keys.
        self.as_str().hash(state);
    }
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Text {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Text, D::Error> {
        String::deserialize(deserializer).map(Text::from)
    }
}

#[cfg(test)]
mod tests {
    use super::Text;
    use std::hash::BuildHasher;

    #[test]
    fn pieces_read_compare_and_hash_as_their_text() {
        let mut scratch = String::new();
        let [a, b, empty, c] = Text::joined(["call-1", "tag", "", "sip:x@y"], &mut scratch);
        assert_eq!((&*a, &*b, &*empty, &*c), ("call-1", "tag", "", "sip:x@y"));
        assert_eq!(b, Text::from("tag"));
        assert!(a < c);
        let hasher = std::collections::hash_map::RandomState::new();
        assert_eq!(hasher.hash_one(&b), hasher.hash_one("tag"));
        assert_eq!(serde_json::to_string(&c).unwrap(), "\"sip:x@y\"");
        let back: Text = serde_json::from_str("\"sip:x@y\"").unwrap();
        assert_eq!(back, c);
        assert_eq!(format!("{a} {a:?}"), "call-1 \"call-1\"");
    }
}
