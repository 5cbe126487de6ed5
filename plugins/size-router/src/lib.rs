//! Chooses the storage engine per object, as Dynamo chose BerkeleyDB for
//! small objects and MySQL for large ones: `blob` from 64 KiB of live bytes
//! up, `lmdb` below.

use cairn_sdk::{export_plugin, Storage, StorageQuery};

/// Objects this large or larger go to the blob engine.
pub const BLOB_FROM_BYTES: u64 = 64 * 1024;

/// The plugin entry point.
pub fn select_storage(query: StorageQuery) -> Storage {
    if query.total_live_bytes >= BLOB_FROM_BYTES {
        Storage::Blob
    } else {
        Storage::Lmdb
    }
}

export_plugin! {
    select_storage = select_storage;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_objects_go_to_blobs() {
        let query = |bytes| StorageQuery {
            table: "t".into(),
            key: b"k".to_vec(),
            total_live_bytes: bytes,
        };
        assert_eq!(select_storage(query(65_535)), Storage::Lmdb);
        assert_eq!(select_storage(query(65_536)), Storage::Blob);
    }
}
