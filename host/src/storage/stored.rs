//! The on-disk form of an object: its clock and versions, with each live value
//! either inline (lmdb) or a reference to a blob file (blob).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::blob::{blob_id, BlobId};
use crate::core::causal::{CausalContext, Dot};
use crate::core::object::{Object, Version};

/// Where a version's value bytes are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// In the LMDB record.
    Inline(Bytes),
    /// In the blob file with this id.
    Blob(BlobId),
    /// A tombstone.
    Tombstone,
}

/// One version as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredVersion {
    dot: Dot,
    timestamp_ms: u64,
    content_type: String,
    body: Body,
}

/// An object as stored in LMDB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredObject {
    clock: CausalContext,
    versions: Vec<StoredVersion>,
}

impl StoredObject {
    /// The stored form; with `in_blobs`, live values become blob references,
    /// each reported to `new_blob` with its bytes.
    pub fn from_object(
        object: &Object,
        in_blobs: bool,
        mut new_blob: impl FnMut(BlobId, &Bytes),
    ) -> StoredObject {
        let versions = object
            .versions
            .iter()
            .map(|v| {
                let body = match &v.value {
                    None => Body::Tombstone,
                    Some(bytes) if in_blobs => {
                        let id = blob_id(bytes);
                        new_blob(id, bytes);
                        Body::Blob(id)
                    }
                    Some(bytes) => Body::Inline(bytes.clone()),
                };
                StoredVersion {
                    dot: v.dot.clone(),
                    timestamp_ms: v.timestamp_ms,
                    content_type: v.content_type.clone(),
                    body,
                }
            })
            .collect();
        StoredObject {
            clock: object.clock.clone(),
            versions,
        }
    }

    /// The blobs this object references.
    pub fn blob_ids(&self) -> impl Iterator<Item = &BlobId> {
        self.versions.iter().filter_map(|v| match &v.body {
            Body::Blob(id) => Some(id),
            _ => None,
        })
    }

    /// The object, with blob references resolved by `read_blob`.
    pub fn into_object<E>(
        self,
        mut read_blob: impl FnMut(&BlobId) -> Result<Bytes, E>,
    ) -> Result<Object, E> {
        let mut versions = Vec::with_capacity(self.versions.len());
        for v in self.versions {
            let value = match v.body {
                Body::Inline(bytes) => Some(bytes),
                Body::Blob(id) => Some(read_blob(&id)?),
                Body::Tombstone => None,
            };
            versions.push(Version {
                dot: v.dot,
                timestamp_ms: v.timestamp_ms,
                value,
                content_type: v.content_type,
            });
        }
        Ok(Object {
            clock: self.clock,
            versions,
        })
    }
}
