//! The opaque context token clients carry from a read to a write
//! (`X-Cairn-Context`).
//!
//! A token names the versions the client saw, not the whole clock of the
//! object: a write supersedes exactly those, and the object clocks replicas
//! keep already cover everything those versions superseded. So a token is
//! bounded by the number of versions one key may hold, however many node
//! epochs ever wrote the key. It is bound to its (table, key) and to its
//! cluster by a MAC under the cluster's token key, so a token read from one
//! key can never supersede versions of another, and no client can make up the
//! dots or timestamp inside one; it carries the largest timestamp among the
//! versions, so a `lww` write that descends them is stamped after them even
//! when the coordinator lacks them.

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::causal::{CausalContext, ClockWire, ContextError, Dot};
use super::limits::CONTEXT_CHARS_MAX;
use super::object::Version;
use super::types::TableName;

/// Version byte of the token format (1 was unbound and carried whole clocks;
/// 2 was bound by an unkeyed hash).
const TOKEN_VERSION: u8 = 3;
/// Bytes of the MAC inside a token.
const TAG_BYTES: usize = 16;

/// The cluster's secret for context tokens: drawn by the node that founds
/// the cluster and spread with the cluster metadata. Whoever holds it can
/// issue tokens; clients never see it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TokenKey(pub [u8; 32]);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

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
    /// What a write returns: the new version alone. Its clock covers
    /// everything the request's context covered, so naming it supersedes
    /// all of that, and the token stays one dot long however long a chain
    /// of writes gets.
    pub fn of_new_version(dot: Dot, timestamp_ms: u64) -> ClientContext {
        let mut seen = CausalContext::new();
        seen.add(dot);
        ClientContext {
            seen,
            max_timestamp_ms: timestamp_ms,
        }
    }

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

    /// Encodes the token for `key` of `table` under the cluster's `secret`.
    pub fn encode(&self, table: &TableName, key: &[u8], secret: &TokenKey) -> String {
        let wire = TokenWire {
            seen: self.seen.to_wire(),
            max_timestamp_ms: self.max_timestamp_ms,
        };
        // Serialising integers and strings into a Vec cannot fail.
        let body = postcard::to_allocvec(&wire).unwrap_or_default();
        let mut bytes = vec![TOKEN_VERSION];
        bytes.extend_from_slice(&tag(secret, table, key, &body));
        bytes.extend(body);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Decodes a client's token for `key` of `table`; anything too long,
    /// undecodable, with trailing bytes, issued for another key or not
    /// issued by this cluster at all is refused with a reason.
    pub fn decode(
        token: &str,
        table: &TableName,
        key: &[u8],
        secret: &TokenKey,
    ) -> Result<Self, ContextError> {
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
        if rest.len() < TAG_BYTES {
            return Err(ContextError::Malformed("truncated"));
        }
        let (claimed, body) = rest.split_at(TAG_BYTES);
        if !tag_matches(secret, table, key, body, claimed) {
            return Err(ContextError::OtherKey);
        }
        let (wire, trailing): (TokenWire, &[u8]) =
            postcard::take_from_bytes(body).map_err(|_| ContextError::Malformed("undecodable"))?;
        if !trailing.is_empty() {
            return Err(ContextError::Malformed("trailing bytes"));
        }
        Ok(ClientContext {
            seen: CausalContext::from_wire(wire.seen)?,
            max_timestamp_ms: wire.max_timestamp_ms,
        })
    }
}

impl TokenKey {
    /// What logs show of a key: 8 bytes of HMAC-SHA256 under the cluster's
    /// key, so every node of the cluster writes the same tag for a key (it
    /// can be followed through their logs) and nobody without the key can
    /// test guesses of it against a log.
    pub fn log_tag(&self, key: &[u8]) -> [u8; 8] {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(b"cairn log tag");
        mac.update(key);
        let full = mac.finalize().into_bytes();
        let mut out = [0; 8];
        out.copy_from_slice(&full[..8]);
        out
    }
}

fn mac(secret: &TokenKey, table: &TableName, key: &[u8], body: &[u8]) -> Hmac<Sha256> {
    // A 32-byte key is always a valid HMAC key.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&secret.0)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(&(table.as_str().len() as u32).to_be_bytes());
    mac.update(table.as_str().as_bytes());
    mac.update(&(key.len() as u32).to_be_bytes());
    mac.update(key);
    mac.update(body);
    mac
}

/// The first bytes of HMAC-SHA256(secret, len(table) ‖ table ‖ len(key) ‖ key ‖ body).
fn tag(secret: &TokenKey, table: &TableName, key: &[u8], body: &[u8]) -> [u8; TAG_BYTES] {
    let full = mac(secret, table, key, body).finalize().into_bytes();
    let mut out = [0; TAG_BYTES];
    out.copy_from_slice(&full[..TAG_BYTES]);
    out
}

/// Whether `claimed` is the token's tag, compared in constant time.
fn tag_matches(
    secret: &TokenKey,
    table: &TableName,
    key: &[u8],
    body: &[u8],
    claimed: &[u8],
) -> bool {
    mac(secret, table, key, body)
        .verify_truncated_left(claimed)
        .is_ok()
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

    const SECRET: TokenKey = TokenKey([7; 32]);

    fn sample() -> ClientContext {
        let mut seen = CausalContext::new();
        seen.add(dot("a", 1, 1));
        seen.add(dot("b", 2, 3));
        ClientContext {
            seen,
            max_timestamp_ms: 1234,
        }
    }

    fn decode(token: &str, t: &str, key: &[u8]) -> Result<ClientContext, ContextError> {
        ClientContext::decode(token, &table(t), key, &SECRET)
    }

    #[test]
    fn round_trips_for_its_own_key_and_cluster_only() {
        let c = sample();
        let token = c.encode(&table("t"), b"a", &SECRET);
        assert_eq!(decode(&token, "t", b"a"), Ok(c.clone()));
        assert_eq!(decode(&token, "t", b"b"), Err(ContextError::OtherKey));
        assert_eq!(decode(&token, "u", b"a"), Err(ContextError::OtherKey));
        // The lengths are in the MAC too: ("ab", "c") is not ("a", "bc").
        let token = c.encode(&table("ab"), b"c", &SECRET);
        assert_eq!(decode(&token, "a", b"bc"), Err(ContextError::OtherKey));
        // Another cluster's token is refused.
        let other = c.encode(&table("t"), b"a", &TokenKey([8; 32]));
        assert_eq!(decode(&other, "t", b"a"), Err(ContextError::OtherKey));
    }

    #[test]
    fn a_token_whose_dots_or_timestamp_were_changed_is_refused() {
        let token = sample().encode(&table("t"), b"k", &SECRET);
        let mut bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&token)
            .unwrap();
        // Every byte after the tag is covered: flip each in turn.
        for i in 1 + TAG_BYTES..bytes.len() {
            bytes[i] ^= 1;
            let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes);
            assert!(decode(&forged, "t", b"k").is_err(), "byte {i} unchecked");
            bytes[i] ^= 1;
        }
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        assert!(decode("!!!", "t", b"k").is_err());
        assert!(decode("", "t", b"k").is_err());
        let mut trailing = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sample().encode(&table("t"), b"k", &SECRET))
            .unwrap();
        trailing.push(0);
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(trailing);
        // Appended bytes break the MAC before anything is decoded.
        assert_eq!(decode(&token, "t", b"k"), Err(ContextError::OtherKey));
    }

    #[test]
    fn the_length_cap_is_exact() {
        // Valid base64url of exactly the cap is read (and refused for what it
        // says); one character more is refused for its length alone.
        let at_cap = "A".repeat(CONTEXT_CHARS_MAX);
        assert_ne!(decode(&at_cap, "t", b"k"), Err(ContextError::TooLong));
        let over = "A".repeat(CONTEXT_CHARS_MAX + 1);
        assert_eq!(decode(&over, "t", b"k"), Err(ContextError::TooLong));
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
        let long = "t".repeat(64);
        let token = context.encode(&table(&long), &key, &SECRET);
        assert!(token.len() <= CONTEXT_CHARS_MAX, "{} chars", token.len());
        assert_eq!(decode(&token, &long, &key), Ok(context));
    }

    proptest! {
        #[test]
        fn tokens_round_trip(seen in contexts(), ts in any::<u64>(), key in prop::collection::vec(any::<u8>(), 0..40)) {
            let c = ClientContext { seen, max_timestamp_ms: ts };
            prop_assert_eq!(decode(&c.encode(&table("t"), &key, &SECRET), "t", &key), Ok(c));
        }

        #[test]
        fn garbage_tokens_never_panic(s in "[A-Za-z0-9_-]{0,200}") {
            let _ = decode(&s, "t", b"k");
        }
    }
}
