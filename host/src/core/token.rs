//! The opaque context token clients carry from a read to a write
//! (`X-Cairn-Context`).
//!
//! A token names the versions the client saw, not the whole clock of the
//! object: a write supersedes exactly those, and the object clocks replicas
//! keep already cover everything those versions superseded. So a token is
//! bounded by the number of versions one key may hold, however many node
//! epochs ever wrote the key. It is bound to its (table, key) by a short hash,
//! so a token read from one key can never supersede versions of another; and
//! it carries the largest timestamp among the versions, so a `lww` write that
//! descends them is stamped after them even when the coordinator lacks them.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::causal::{CausalContext, ClockWire, ContextError};
use super::limits::CONTEXT_CHARS_MAX;
use super::object::Version;
use super::types::TableName;

/// Version byte of the token format (1 was unbound and carried whole clocks).
const TOKEN_VERSION: u8 = 2;
/// Bytes of the (table, key) hash inside a token.
const BINDING_BYTES: usize = 8;

/// What a client saw of one key: what its next write supersedes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientContext {
    /// The dots of the versions seen (live values and tombstones).
    pub seen: CausalContext,
    /// The largest timestamp among them (0 when none): a write that descends
    /// them is stamped above it.
    pub max_timestamp_ms: u64,
}

/// The token's body after the version byte and the binding.
#[derive(Serialize, Deserialize)]
struct TokenWire {
    seen: ClockWire,
    max_timestamp_ms: u64,
}

impl ClientContext {
    /// The context of a read that returned `versions`.
    pub fn of_versions<'a>(versions: impl IntoIterator<Item = &'a Version>) -> ClientContext {
        let mut context = ClientContext::default();
        for version in versions {
            context.seen.add(version.dot.clone());
            context.max_timestamp_ms = context.max_timestamp_ms.max(version.timestamp_ms);
        }
        context
    }

    /// Whether it covers nothing.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Encodes the token for `key` of `table`.
    pub fn encode(&self, table: &TableName, key: &[u8]) -> String {
        let mut bytes = vec![TOKEN_VERSION];
        bytes.extend_from_slice(&binding(table, key));
        let wire = TokenWire {
            seen: self.seen.to_wire(),
            max_timestamp_ms: self.max_timestamp_ms,
        };
        // Serialising integers and strings into a Vec cannot fail.
        bytes.extend(postcard::to_allocvec(&wire).unwrap_or_default());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Decodes a client's token for `key` of `table`; anything too long,
    /// undecodable, with trailing bytes or issued for another key is refused
    /// with a reason.
    pub fn decode(token: &str, table: &TableName, key: &[u8]) -> Result<Self, ContextError> {
        if token.len() > CONTEXT_CHARS_MAX {
            return Err(ContextError::TooLong);
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.trim())
            .map_err(|_| ContextError::Malformed("not base64url"))?;
        let (&version, rest) = bytes
            .split_first()
            .ok_or(ContextError::Malformed("empty"))?;
        if version != TOKEN_VERSION {
            return Err(ContextError::Malformed(
                "unknown token version (read the key again for a current token)",
            ));
        }
        if rest.len() < BINDING_BYTES {
            return Err(ContextError::Malformed("truncated"));
        }
        let (bound, body) = rest.split_at(BINDING_BYTES);
        let (wire, trailing): (TokenWire, &[u8]) =
            postcard::take_from_bytes(body).map_err(|_| ContextError::Malformed("undecodable"))?;
        if !trailing.is_empty() {
            return Err(ContextError::Malformed("trailing bytes"));
        }
        if bound != binding(table, key) {
            return Err(ContextError::OtherKey);
        }
        Ok(ClientContext {
            seen: CausalContext::from_wire(wire.seen)?,
            max_timestamp_ms: wire.max_timestamp_ms,
        })
    }
}

/// The first bytes of sha256(len(table) ‖ table ‖ key): which key a token is for.
fn binding(table: &TableName, key: &[u8]) -> [u8; BINDING_BYTES] {
    let mut hasher = Sha256::new();
    hasher.update((table.as_str().len() as u32).to_be_bytes());
    hasher.update(table.as_str().as_bytes());
    hasher.update(key);
    let digest = hasher.finalize();
    let mut out = [0; BINDING_BYTES];
    out.copy_from_slice(&digest[..BINDING_BYTES]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::causal::tests::{contexts, dot};
    use crate::core::limits::{REPLICAS_MAX, SIBLINGS_MAX};
    use bytes::Bytes;
    use proptest::prelude::*;

    fn table(name: &str) -> TableName {
        TableName::new(name).unwrap()
    }

    fn sample() -> ClientContext {
        let mut seen = CausalContext::new();
        seen.add(dot("a", 1, 1));
        seen.add(dot("b", 2, 3));
        ClientContext {
            seen,
            max_timestamp_ms: 1234,
        }
    }

    #[test]
    fn round_trips_for_its_own_key_only() {
        let c = sample();
        let token = c.encode(&table("t"), b"a");
        assert_eq!(
            ClientContext::decode(&token, &table("t"), b"a"),
            Ok(c.clone())
        );
        assert_eq!(
            ClientContext::decode(&token, &table("t"), b"b"),
            Err(ContextError::OtherKey)
        );
        assert_eq!(
            ClientContext::decode(&token, &table("u"), b"a"),
            Err(ContextError::OtherKey)
        );
        // The table name's length is hashed too: ("ab", "c") is not ("a", "bc").
        let token = c.encode(&table("ab"), b"c");
        assert_eq!(
            ClientContext::decode(&token, &table("a"), b"bc"),
            Err(ContextError::OtherKey)
        );
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        let t = table("t");
        assert!(ClientContext::decode("!!!", &t, b"k").is_err());
        assert!(ClientContext::decode("", &t, b"k").is_err());
        let mut trailing = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sample().encode(&t, b"k"))
            .unwrap();
        trailing.push(0);
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(trailing);
        assert_eq!(
            ClientContext::decode(&token, &t, b"k"),
            Err(ContextError::Malformed("trailing bytes"))
        );
    }

    #[test]
    fn the_length_cap_is_exact() {
        let t = table("t");
        // Valid base64url of exactly the cap decodes as far as its content
        // allows; one character more is refused for its length alone.
        let at_cap = "A".repeat(CONTEXT_CHARS_MAX);
        assert_ne!(
            ClientContext::decode(&at_cap, &t, b"k"),
            Err(ContextError::TooLong)
        );
        let over = "A".repeat(CONTEXT_CHARS_MAX + 1);
        assert_eq!(
            ClientContext::decode(&over, &t, b"k"),
            Err(ContextError::TooLong)
        );
    }

    #[test]
    fn a_token_of_the_most_versions_a_key_holds_fits_the_cap() {
        // SIBLINGS_MAX live values plus one tombstone, each from a distinct
        // actor (the most replicas a table has, with the longest node ids,
        // the largest epochs and huge counters): the worst a read can hand
        // out, whatever the key's history.
        let versions: Vec<Version> = (0..=SIBLINGS_MAX)
            .map(|i| Version {
                dot: dot(
                    &format!("{:0>32}", i % usize::from(REPLICAS_MAX)),
                    u64::MAX - i as u64,
                    // Counters count one actor's writes to one key: 2^40 is
                    // a thousand billion of them.
                    (1 << 40) - i as u64,
                ),
                timestamp_ms: u64::MAX,
                value: Some(Bytes::from_static(b"v")),
                content_type: String::new(),
            })
            .collect();
        let context = ClientContext::of_versions(&versions);
        let key = vec![b'k'; 1024];
        let token = context.encode(&table(&"t".repeat(64)), &key);
        assert!(token.len() <= CONTEXT_CHARS_MAX, "{} chars", token.len());
        assert_eq!(
            ClientContext::decode(&token, &table(&"t".repeat(64)), &key),
            Ok(context)
        );
    }

    proptest! {
        #[test]
        fn tokens_round_trip(seen in contexts(), ts in any::<u64>(), key in prop::collection::vec(any::<u8>(), 0..40)) {
            let c = ClientContext { seen, max_timestamp_ms: ts };
            prop_assert_eq!(ClientContext::decode(&c.encode(&table("t"), &key), &table("t"), &key), Ok(c));
        }

        #[test]
        fn garbage_tokens_never_panic(s in "[A-Za-z0-9_-]{0,200}") {
            let _ = ClientContext::decode(&s, &table("t"), b"k");
        }
    }
}
