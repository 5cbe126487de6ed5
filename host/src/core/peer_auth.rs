//! Peers prove they hold the cluster secret before any frame counts, and
//! then seal every frame: the arithmetic of it, free of I/O
//! ([`crate::net`] moves the bytes).
//!
//! The handshake is a keyed challenge both ways, so neither side can be
//! fooled by a recording:
//!
//! 1. the dialer sends [`AUTH_MAGIC`] and a fresh nonce `d`;
//! 2. the acceptor answers a fresh nonce `a` and `HMAC(s, "accept" ‖ d ‖ a)`,
//!    which proves to the dialer that it talks to a holder of `s`;
//! 3. the dialer answers `HMAC(s, "dial" ‖ d ‖ a)`: a proof bound to the
//!    acceptor's fresh `a`, so replaying an old one fails.
//!
//! Both then derive a session key `HMAC(s, "session" ‖ d ‖ a)` and every
//! frame on the link carries a 16-byte tag `HMAC(k, n ‖ frame)` where `n`
//! counts the frames: a frame altered, dropped, reordered or replayed on the
//! link fails its tag and closes the connection. The secret itself never
//! crosses the wire and never appears in a log.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// What a dialer sends first when it authenticates: chosen so that a node
/// without a secret reads it as a frame header announcing ~1.1 GB and closes
/// the connection, and a node with one can tell a plain hello apart.
pub const AUTH_MAGIC: [u8; 4] = *b"CNA1";
/// Bytes of each side's nonce.
pub const NONCE_BYTES: usize = 32;
/// Bytes of a handshake proof (a whole HMAC-SHA256).
pub const PROOF_BYTES: usize = 32;
/// Bytes of the tag after every sealed frame.
pub const FRAME_TAG_BYTES: usize = 16;
/// The shortest secret accepted (before hashing), in bytes.
pub const SECRET_BYTES_MIN: usize = 32;

const DOMAIN: &[u8] = b"cairn peer auth v1";

/// The cluster secret, as every member reads it from its file. Only a key
/// stretched from the file's text with Argon2id (19 MiB, two passes) is
/// kept: an acceptor answers anyone's challenge with a proof, and a
/// recorded proof must not make guessing the text offline cheap. `Debug`
/// never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecret([u8; 32]);

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

impl ClusterSecret {
    /// The secret a file's text holds (surrounding whitespace ignored); too
    /// short a secret is refused, with a reason that does not quote it.
    pub fn from_text(text: &str) -> Result<ClusterSecret, String> {
        let secret = text.trim();
        if secret.len() < SECRET_BYTES_MIN {
            return Err(format!(
                "the cluster secret must be at least {SECRET_BYTES_MIN} characters (it has {})",
                secret.len()
            ));
        }
        let params = argon2::Params::new(19 * 1024, 2, 1, Some(32))
            .map_err(|e| format!("key stretching: {e}"))?;
        let stretch =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut key = [0u8; 32];
        stretch
            .hash_password_into(secret.as_bytes(), DOMAIN, &mut key)
            .map_err(|e| format!("key stretching: {e}"))?;
        Ok(ClusterSecret(key))
    }

    fn mac(
        &self,
        label: &[u8],
        dialer: &[u8; NONCE_BYTES],
        acceptor: &[u8; NONCE_BYTES],
    ) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(label);
        mac.update(dialer);
        mac.update(acceptor);
        mac
    }

    /// Step 2: what the acceptor sends to prove itself.
    pub fn acceptor_proof(
        &self,
        dialer: &[u8; NONCE_BYTES],
        acceptor: &[u8; NONCE_BYTES],
    ) -> [u8; PROOF_BYTES] {
        self.mac(b"accept", dialer, acceptor)
            .finalize()
            .into_bytes()
            .into()
    }

    /// Whether `proof` is the acceptor's for these nonces (constant time).
    pub fn acceptor_proof_matches(
        &self,
        dialer: &[u8; NONCE_BYTES],
        acceptor: &[u8; NONCE_BYTES],
        proof: &[u8],
    ) -> bool {
        self.mac(b"accept", dialer, acceptor)
            .verify_slice(proof)
            .is_ok()
    }

    /// Step 3: what the dialer sends to prove itself.
    pub fn dialer_proof(
        &self,
        dialer: &[u8; NONCE_BYTES],
        acceptor: &[u8; NONCE_BYTES],
    ) -> [u8; PROOF_BYTES] {
        self.mac(b"dial", dialer, acceptor)
            .finalize()
            .into_bytes()
            .into()
    }

    /// Whether `proof` is the dialer's for these nonces (constant time).
    pub fn dialer_proof_matches(
        &self,
        dialer: &[u8; NONCE_BYTES],
        acceptor: &[u8; NONCE_BYTES],
        proof: &[u8],
    ) -> bool {
        self.mac(b"dial", dialer, acceptor)
            .verify_slice(proof)
            .is_ok()
    }

    /// The key both sides seal this link's frames with.
    pub fn session(&self, dialer: &[u8; NONCE_BYTES], acceptor: &[u8; NONCE_BYTES]) -> FrameSeal {
        FrameSeal {
            key: self
                .mac(b"session", dialer, acceptor)
                .finalize()
                .into_bytes()
                .into(),
            next: 0,
        }
    }
}

/// One direction of an authenticated link: the session key and the number
/// of the next frame. The dialer seals, the acceptor checks, both counting.
pub struct FrameSeal {
    key: [u8; 32],
    next: u64,
}

impl FrameSeal {
    fn mac(&self, parts: &[&[u8]]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(&self.next.to_be_bytes());
        for part in parts {
            mac.update(part);
        }
        mac
    }

    /// The tag of the next frame (its header and body, in `parts`).
    pub fn seal(&mut self, parts: &[&[u8]]) -> [u8; FRAME_TAG_BYTES] {
        let full = self.mac(parts).finalize().into_bytes();
        self.next += 1;
        let mut tag = [0; FRAME_TAG_BYTES];
        tag.copy_from_slice(&full[..FRAME_TAG_BYTES]);
        tag
    }

    /// Whether `tag` seals the next frame (constant time); either way the
    /// count moves on (a failure closes the link).
    pub fn open(&mut self, parts: &[&[u8]], tag: &[u8]) -> bool {
        let ok = self.mac(parts).verify_truncated_left(tag).is_ok() && tag.len() == FRAME_TAG_BYTES;
        self.next += 1;
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(text: &str) -> ClusterSecret {
        ClusterSecret::from_text(text).unwrap()
    }

    #[test]
    fn short_secrets_are_refused_without_being_quoted() {
        let e = ClusterSecret::from_text("  hunter2  \n").unwrap_err();
        assert!(e.contains("at least 32"), "{e}");
        assert!(!e.contains("hunter2"));
        assert_eq!(
            format!("{:?}", secret("0123456789abcdef0123456789abcdef")),
            "ClusterSecret(..)"
        );
        // Whitespace around the secret (a trailing newline) does not matter.
        assert_eq!(
            secret("0123456789abcdef0123456789abcdef\n"),
            secret("0123456789abcdef0123456789abcdef")
        );
    }

    #[test]
    fn proofs_hold_only_for_the_same_secret_and_fresh_nonces() {
        let s = secret("the right cluster secret, 32 chars");
        let wrong = secret("some other cluster secret, 32 chars");
        let (d, a, a2) = ([1; 32], [2; 32], [3; 32]);
        let accept = s.acceptor_proof(&d, &a);
        assert!(s.acceptor_proof_matches(&d, &a, &accept));
        assert!(!wrong.acceptor_proof_matches(&d, &a, &accept));
        let dial = s.dialer_proof(&d, &a);
        assert!(s.dialer_proof_matches(&d, &a, &dial));
        assert!(!wrong.dialer_proof_matches(&d, &a, &dial));
        // A recorded dialer proof is worthless against a new challenge.
        assert!(!s.dialer_proof_matches(&d, &a2, &dial));
        // The two directions' proofs differ: one cannot be reflected back.
        assert!(!s.dialer_proof_matches(&d, &a, &accept));
        assert!(!s.acceptor_proof_matches(&d, &a, &s.dialer_proof(&d, &a)[..31]));
    }

    #[test]
    fn frames_fail_when_altered_replayed_or_reordered() {
        let s = secret("the right cluster secret, 32 chars");
        let (d, a) = ([1; 32], [2; 32]);
        let mut sender = s.session(&d, &a);
        let mut receiver = s.session(&d, &a);
        let t1 = sender.seal(&[b"head", b"one"]);
        let t2 = sender.seal(&[b"head", b"two"]);
        assert!(receiver.open(&[b"head", b"one"], &t1));
        // Replaying frame one where frame two belongs fails.
        let mut replayed = s.session(&d, &a);
        replayed.open(&[b"head", b"one"], &t1);
        assert!(!replayed.open(&[b"head", b"one"], &t1));
        // An altered body fails.
        let mut altered = s.session(&d, &a);
        altered.open(&[b"head", b"one"], &t1);
        assert!(!altered.open(&[b"head", b"twO"], &t2));
        assert!(receiver.open(&[b"head", b"two"], &t2));
        // Another session's keys do not open these frames.
        let mut other = s.session(&d, &[9; 32]);
        assert!(!other.open(&[b"head", b"one"], &t1));
    }
}
