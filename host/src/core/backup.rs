//! The backup format `cairn backup` writes and `cairn restore` reads, and
//! the page format of a node's `/export` and `/import`: length-prefixed
//! frames, each one [`BackupFrame`] in the disk encoding.
//!
//! A backup keeps each key's whole object — every sibling, every
//! tombstone, the causal clock — so a restore gives back exactly what was
//! there, siblings included, and a context read after the restore
//! supersedes what it names. It holds every member's copy (replicas may
//! differ until anti-entropy has run); restoring merges the copies.
//!
//! A file: [`MAGIC`], a [`BackupFrame::Header`], then objects, each
//! member's page followed by a [`BackupFrame::Cursor`] saying where that
//! member's walk stands. A run cut short resumes from the last cursor of
//! each member; objects written after it are written again, which a
//! restore merges away.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::codec::{decode_disk, encode_disk, CodecError};
use super::limits::{
    CONTENT_TYPE_BYTES_MAX, CONTEXT_EPOCH_AHEAD_MAX_S, OBJECT_LIVE_BYTES_MAX, SIBLINGS_MAX,
};
use super::node::epoch_generation;
use super::object::Object;

/// The first bytes of a backup file.
pub const MAGIC: &[u8; 8] = b"CAIRNBK1";

/// Bytes of a frame's length prefix.
pub const LENGTH_BYTES: usize = 4;

/// The largest frame read: one object at its largest, with room for its
/// clock, key and content types.
pub const FRAME_BYTES_MAX: usize = OBJECT_LIVE_BYTES_MAX + 1024 * 1024;

/// One frame of a backup file or an export or import page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackupFrame {
    /// What the file holds: the table and its configuration as
    /// `GET /tables/{t}` showed it (JSON), so a restore can create it.
    Header {
        /// The table.
        table: String,
        /// Its configuration, as JSON.
        config_json: String,
        /// When the backup started (wall ms).
        created_ms: u64,
    },
    /// A key's object as one member held it.
    Object {
        /// The key.
        key: Bytes,
        /// Its object.
        object: Object,
    },
    /// Where member `node`'s walk stands: every key up to and including
    /// `after` is in the file; `None` once the walk is complete.
    Cursor {
        /// The member.
        node: String,
        /// The last key written, or `None` when the member is done.
        after: Option<Bytes>,
        /// Whether the member's walk is complete.
        done: bool,
    },
    /// The backup is complete: every member named walked to the end.
    End {
        /// The members walked.
        members: Vec<String>,
    },
}

/// Appends `frame` to `out`.
pub fn encode_frame(frame: &BackupFrame, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let body = encode_disk(frame)?;
    if body.len() > FRAME_BYTES_MAX {
        return Err(CodecError::TooLarge(body.len()));
    }
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(())
}

/// The length a frame's prefix announces, refused above [`FRAME_BYTES_MAX`].
pub fn frame_len(prefix: [u8; LENGTH_BYTES]) -> Result<usize, CodecError> {
    let len = u32::from_le_bytes(prefix) as usize;
    if len > FRAME_BYTES_MAX {
        return Err(CodecError::TooLarge(len));
    }
    Ok(len)
}

/// Decodes one frame's body.
pub fn decode_frame(body: &[u8]) -> Result<BackupFrame, CodecError> {
    decode_disk(body)
}

/// Every complete frame at the start of `bytes`, and how many bytes they
/// took (a partial frame at the end is left: a page cut short, or a file
/// whose writer stopped mid-frame).
pub fn decode_frames(bytes: &[u8]) -> Result<(Vec<BackupFrame>, usize), CodecError> {
    let mut frames = Vec::new();
    let mut at = 0;
    while let Some(prefix) = bytes.get(at..at + LENGTH_BYTES) {
        let mut raw = [0u8; LENGTH_BYTES];
        raw.copy_from_slice(prefix);
        let len = frame_len(raw)?;
        let Some(body) = bytes.get(at + LENGTH_BYTES..at + LENGTH_BYTES + len) else {
            break;
        };
        frames.push(decode_frame(body)?);
        at += LENGTH_BYTES + len;
    }
    Ok((frames, at))
}

/// Lower-case hex of `bytes`: how export cursors travel in URLs and
/// headers.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes `text` spells in hex, or `None` if it is not hex.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Why an object from a backup cannot be restored, or `None` when it may
/// be: it must be one this build could have stored — every version's dot
/// minted (counter from 1) and covered by the clock, no epoch or timestamp
/// more than [`CONTEXT_EPOCH_AHEAD_MAX_S`] ahead of `now_wall_ms` (an lww
/// version from the future would hide every later write; an epoch no node
/// reached would end the cluster's epochs for the key), no more versions,
/// live bytes or content type than a write is allowed, so every replica
/// can receive it in one frame.
pub fn restore_refusal(object: &Object, now_wall_ms: u64) -> Option<String> {
    let epoch_limit = now_wall_ms / 1000 + CONTEXT_EPOCH_AHEAD_MAX_S;
    let stamp_limit = now_wall_ms.saturating_add(CONTEXT_EPOCH_AHEAD_MAX_S * 1000);
    if object
        .clock
        .actors()
        .any(|a| epoch_generation(a.epoch) > epoch_limit)
    {
        return Some("the restored object names an epoch no node has reached".into());
    }
    if object.versions.len() > SIBLINGS_MAX + 1 {
        return Some(format!(
            "the restored object holds {} versions; at most {} are stored",
            object.versions.len(),
            SIBLINGS_MAX + 1
        ));
    }
    for version in &object.versions {
        if version.dot.counter == 0 || !object.clock.covers(&version.dot) {
            return Some("a restored version is not covered by its object's clock".into());
        }
        if version.timestamp_ms > stamp_limit {
            return Some(
                "a restored version is stamped more than 7 days ahead of this node's clock".into(),
            );
        }
        if version.content_type.len() > CONTENT_TYPE_BYTES_MAX {
            return Some(format!(
                "a restored version's Content-Type is longer than {CONTENT_TYPE_BYTES_MAX} bytes"
            ));
        }
    }
    if object.live_bytes() > OBJECT_LIVE_BYTES_MAX {
        return Some(format!(
            "the restored object holds more than {OBJECT_LIVE_BYTES_MAX} live bytes"
        ));
    }
    None
}

/// What one member holds of a table, summed over its objects
/// (`GET /tables/{t}/stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Keys with an object here (tombstones included).
    pub keys: u64,
    /// Keys whose versions are all tombstones.
    pub tombstones: u64,
    /// Live bytes of every key (values and their content types, as the
    /// object size limit counts them).
    pub live_bytes: u64,
    /// Keys by how many live versions (siblings) they hold: index 0 counts
    /// keys with 1, index 1 with 2, ..., the last every key with more.
    pub siblings: [u64; SIBLINGS_BUCKETS],
}

/// Buckets of [`TableStats::siblings`]: 1, 2, 3, 4, 5 to 8, more.
pub const SIBLINGS_BUCKETS: usize = 6;

/// The labels of [`TableStats::siblings`]' buckets.
pub const SIBLINGS_LABELS: [&str; SIBLINGS_BUCKETS] = ["1", "2", "3", "4", "5-8", "9+"];

impl TableStats {
    /// Counts one key's object.
    pub fn add(&mut self, object: &Object) {
        self.keys += 1;
        let live = object.live_count();
        if live == 0 {
            self.tombstones += 1;
            return;
        }
        self.live_bytes += object.live_bytes() as u64;
        let bucket = match live {
            1..=4 => live - 1,
            5..=8 => 4,
            _ => 5,
        };
        self.siblings[bucket] += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::causal::{Actor, Dot};
    use crate::core::object::Version;
    use crate::core::types::NodeId;

    fn object(values: &[Option<&str>]) -> Object {
        let mut object = Object::default();
        for (i, value) in values.iter().enumerate() {
            let dot = Dot {
                actor: Actor {
                    node: NodeId::new(&format!("node{i}")).unwrap(),
                    epoch: 7 << 32,
                },
                counter: 1,
            };
            object.clock.add(dot.clone());
            object.versions.push(Version {
                dot,
                timestamp_ms: 5,
                value: value.map(|v| Bytes::from(v.to_owned())),
                content_type: if value.is_some() {
                    "text/plain".into()
                } else {
                    String::new()
                },
            });
        }
        object
    }

    #[test]
    fn frames_round_trip_and_a_cut_tail_is_left_for_later() {
        let frames = vec![
            BackupFrame::Header {
                table: "t".into(),
                config_json: "{}".into(),
                created_ms: 1,
            },
            BackupFrame::Object {
                key: Bytes::from_static(b"k"),
                object: object(&[Some("a"), Some("b")]),
            },
            BackupFrame::Cursor {
                node: "node1".into(),
                after: Some(Bytes::from_static(b"k")),
                done: false,
            },
        ];
        let mut bytes = Vec::new();
        for frame in &frames {
            encode_frame(frame, &mut bytes).unwrap();
        }
        let whole = bytes.len();
        bytes.extend_from_slice(&[9, 0, 0, 0, 1, 2]);
        let (decoded, used) = decode_frames(&bytes).unwrap();
        assert_eq!(decoded, frames);
        assert_eq!(used, whole);
    }

    #[test]
    fn hex_round_trips_and_refuses_what_is_not_hex() {
        assert_eq!(hex(b"\x00\xffk"), "00ff6b");
        assert_eq!(unhex("00ff6b"), Some(b"\x00\xffk".to_vec()));
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex("é1"), None);
    }

    #[test]
    fn garbage_and_oversized_frames_are_errors_not_panics() {
        assert!(decode_frames(&[3, 0, 0, 0, 1, 2, 3]).is_err());
        assert!(matches!(
            decode_frames(&[255, 255, 255, 255]),
            Err(CodecError::TooLarge(_))
        ));
        assert!(decode_frame(&[]).is_err());
    }

    #[test]
    fn objects_no_node_could_have_stored_are_refused() {
        let now = 100_000_000;
        assert_eq!(restore_refusal(&object(&[Some("a"), None]), now), None);
        let mut uncovered = object(&[Some("a")]);
        uncovered.clock = crate::core::causal::CausalContext::new();
        assert!(restore_refusal(&uncovered, now).is_some());
        let mut zero = object(&[Some("a")]);
        zero.versions[0].dot.counter = 0;
        assert!(restore_refusal(&zero, now).is_some());
        let mut future = object(&[Some("a")]);
        future.versions[0].timestamp_ms = u64::MAX;
        assert!(restore_refusal(&future, now).unwrap().contains("ahead"));
        let mut far_epoch = object(&[Some("a")]);
        let dot = Dot {
            actor: Actor {
                node: NodeId::new("node9").unwrap(),
                epoch: u64::MAX,
            },
            counter: 1,
        };
        far_epoch.clock.add(dot);
        assert!(restore_refusal(&far_epoch, now).unwrap().contains("epoch"));
        let crowded = object(&vec![Some("x"); SIBLINGS_MAX + 2]);
        assert!(restore_refusal(&crowded, now).unwrap().contains("versions"));
    }

    #[test]
    fn stats_count_keys_tombstones_bytes_and_siblings() {
        let mut stats = TableStats::default();
        stats.add(&object(&[Some("ab")]));
        stats.add(&object(&[Some("a"), Some("b")]));
        stats.add(&object(&[None]));
        stats.add(&object(&[Some("x"); 6]));
        assert_eq!(stats.keys, 4);
        assert_eq!(stats.tombstones, 1);
        // Values and their content types, as the object size limit counts.
        let typed = |value: usize| value + "text/plain".len();
        assert_eq!(
            stats.live_bytes,
            (typed(2) + 2 * typed(1) + 6 * typed(1)) as u64
        );
        assert_eq!(stats.siblings, [1, 1, 0, 0, 1, 0]);
    }
}
