//! Byte formats: peer frames (length prefix, version byte, postcard) and the
//! on-disk encoding of objects and node state (version byte, postcard).
//!
//! Decoders take bytes from outside (peers, disk) and answer garbage with a
//! [`CodecError`], never a panic.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::limits::FRAME_BYTES_MAX;
use super::msg::Message;

/// Version byte of the peer frame format: 8 since cluster metadata carries
/// API keys (a sixth digest section); 5 since anti-entropy answers an
/// agreeing root (`SyncMessage::InSync`); 4 grouped messages by subsystem
/// and typed a read's plugin failure. Each changed the encoding, so a node
/// of another build refuses the frame by its version instead of misreading
/// it.
// `ClientOp::Restore` was added as the last variant: every earlier
// message encodes as before, so the version stays (a node of an older
// build refuses only a forwarded restore, as garbage).
pub const FRAME_VERSION: u8 = 8;
/// Version byte of the disk format.
pub const DISK_VERSION: u8 = 1;
/// Bytes of the length prefix.
pub const FRAME_HEADER_BYTES: usize = 4;

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// A frame announced more bytes than the cap.
    #[error("frame of {0} bytes exceeds the {FRAME_BYTES_MAX}-byte cap")]
    TooLarge(usize),
    /// A version byte this build does not know.
    #[error("unknown format version {0}")]
    Version(u8),
    /// Not a valid encoding.
    #[error("undecodable: {0}")]
    Garbage(String),
    /// Empty input where a version byte was expected.
    #[error("empty")]
    Empty,
    /// Encoding failed (only for values postcard cannot represent).
    #[error("encode: {0}")]
    Encode(String),
}

/// Appends one frame carrying `message` to `out`.
pub fn encode_frame(message: &Message, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
    out.push(FRAME_VERSION);
    let mut out_taken = std::mem::take(out);
    out_taken =
        postcard::to_extend(message, out_taken).map_err(|e| CodecError::Encode(e.to_string()))?;
    *out = out_taken;
    let body = out.len() - start - FRAME_HEADER_BYTES;
    if body > FRAME_BYTES_MAX {
        out.truncate(start);
        return Err(CodecError::TooLarge(body));
    }
    out[start..start + FRAME_HEADER_BYTES].copy_from_slice(&(body as u32).to_be_bytes());
    Ok(())
}

/// The body length a frame header announces, refused when over the cap.
pub fn frame_body_len(header: [u8; FRAME_HEADER_BYTES]) -> Result<usize, CodecError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > FRAME_BYTES_MAX {
        return Err(CodecError::TooLarge(len));
    }
    Ok(len)
}

/// Decodes a frame body (version byte + postcard).
pub fn decode_frame_body(body: &[u8]) -> Result<Message, CodecError> {
    decode_versioned(body, FRAME_VERSION)
}

/// Encodes a value for disk.
pub fn encode_disk<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let out = vec![DISK_VERSION];
    postcard::to_extend(value, out).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Decodes a value written by [`encode_disk`].
pub fn decode_disk<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    decode_versioned(bytes, DISK_VERSION)
}

fn decode_versioned<T: DeserializeOwned>(bytes: &[u8], version: u8) -> Result<T, CodecError> {
    let (&found, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if found != version {
        return Err(CodecError::Version(found));
    }
    let (value, rest) =
        postcard::take_from_bytes(body).map_err(|e| CodecError::Garbage(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CodecError::Garbage(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    Ok(value)
}

/// The first 8 bytes of sha256 of a value's encoding: a short identity of
/// ordered state (maps and sets encode alike when equal), for gossip
/// digests and ring plans.
pub fn short_hash(value: &impl Serialize) -> u64 {
    use sha2::{Digest, Sha256};
    let bytes = postcard::to_allocvec(value).unwrap_or_default();
    let digest = Sha256::digest(&bytes);
    let mut top = [0u8; 8];
    top.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(top)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::causal::tests::dot;
    use crate::core::causal::CausalContext;
    use crate::core::msg::ReplicaMessage;
    use crate::core::object::{Object, Version};
    use crate::core::table::MergeMode;
    use crate::core::types::TableName;
    use bytes::Bytes;
    use proptest::prelude::*;

    fn sample_object() -> Object {
        let mut o = Object::default();
        let v = Version {
            dot: dot("n1", 3, 7),
            timestamp_ms: 1234,
            value: Some(Bytes::from_static(b"hello")),
            content_type: "text/plain".into(),
        };
        o.apply_write(&CausalContext::new(), v, MergeMode::Siblings);
        o
    }

    #[test]
    fn frames_round_trip() {
        let message = Message::Replica(ReplicaMessage::Write {
            request: 9,
            table: TableName::new("t").unwrap(),
            key: Bytes::from_static(b"k"),
            object: sample_object(),
            engine: None,
            hint_for: None,
        });
        let mut buf = Vec::new();
        encode_frame(&message, &mut buf).unwrap();
        let len = frame_body_len(buf[..4].try_into().unwrap()).unwrap();
        assert_eq!(len, buf.len() - 4);
        assert_eq!(decode_frame_body(&buf[4..]).unwrap(), message);
    }

    #[test]
    fn oversized_and_unknown_frames_are_refused() {
        assert!(matches!(
            frame_body_len(u32::MAX.to_be_bytes()),
            Err(CodecError::TooLarge(_))
        ));
        let unknown = FRAME_VERSION + 1;
        assert_eq!(
            decode_frame_body(&[unknown, 0]),
            Err(CodecError::Version(unknown))
        );
        assert_eq!(decode_frame_body(&[]), Err(CodecError::Empty));
    }

    #[test]
    fn objects_round_trip_on_disk() {
        let o = sample_object();
        assert_eq!(decode_disk::<Object>(&encode_disk(&o).unwrap()).unwrap(), o);
        let mut bytes = encode_disk(&o).unwrap();
        bytes.push(1);
        assert!(decode_disk::<Object>(&bytes).is_err());
    }

    proptest! {
        #[test]
        fn garbage_frames_are_errors_not_panics(body in prop::collection::vec(any::<u8>(), 0..256)) {
            let mut framed = vec![FRAME_VERSION];
            framed.extend(&body);
            let _ = decode_frame_body(&framed);
            let _ = decode_disk::<Object>(&framed);
        }
    }
}
