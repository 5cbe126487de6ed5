//! One conformance suite, run against every engine (lmdb, memory, blob).

use super::*;
use crate::core::causal::tests::dot;
use crate::core::causal::CausalContext;
use crate::core::object::Version;
use crate::core::store::CopyState;
use crate::core::table::MergeMode;

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("cairn-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn object(values: &[Option<&[u8]>]) -> Object {
    let mut o = Object::default();
    for (i, value) in values.iter().enumerate() {
        let v = Version {
            dot: dot("n1", 1, i as u64 + 1),
            timestamp_ms: i as u64,
            value: value.map(Bytes::copy_from_slice),
            content_type: "application/octet-stream".into(),
        };
        o.apply_write(&CausalContext::new(), v, MergeMode::Siblings);
    }
    o
}

const ENGINES: [StorageKind; 3] = [StorageKind::Lmdb, StorageKind::Memory, StorageKind::Blob];

#[test]
fn every_engine_reads_back_what_it_stored() {
    for engine in ENGINES {
        let dir = temp_dir(&format!("conformance-{engine:?}"));
        let id = NodeId::new("n1").unwrap();
        let table = TableName::new("t").unwrap();
        let large = vec![7u8; 1 << 20];
        let first = object(&[Some(b"small"), None, Some(&large), Some(b"")]);
        let second = object(&[Some(b"replaced")]);
        {
            let (mut store, _) = NodeStore::open(&dir, &id).unwrap();
            assert_eq!(
                store.load(&table, engine, b"k").unwrap(),
                None,
                "{engine:?}: empty"
            );
            store.stage(&table, engine, b"k", &first).unwrap();
            assert_eq!(
                store.load(&table, engine, b"k").unwrap(),
                Some(first.clone()),
                "{engine:?}: staged reads"
            );
            store.commit().unwrap();
            assert_eq!(
                store.load(&table, engine, b"k").unwrap(),
                Some(first.clone()),
                "{engine:?}: committed"
            );
            store.stage(&table, engine, b"other", &second).unwrap();
            store.stage(&table, engine, b"other", &first).unwrap();
            store.commit().unwrap();
            assert_eq!(
                store.load(&table, engine, b"other").unwrap(),
                Some(first.clone()),
                "{engine:?}: last stage wins"
            );
            assert_eq!(store.load(&table, engine, b"missing").unwrap(), None);
        }
        let (mut store, _) = NodeStore::open(&dir, &id).unwrap();
        let expected = if engine == StorageKind::Memory {
            None
        } else {
            Some(first.clone())
        };
        assert_eq!(
            store.load(&table, engine, b"k").unwrap(),
            expected,
            "{engine:?}: after reopening"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn blobs_nothing_references_are_collected() {
    let dir = temp_dir("blob-gc");
    let id = NodeId::new("n1").unwrap();
    let table = TableName::new("b").unwrap();
    let (mut store, _) = NodeStore::open(&dir, &id).unwrap();
    store
        .stage(
            &table,
            StorageKind::Blob,
            b"k",
            &object(&[Some(b"old value")]),
        )
        .unwrap();
    store
        .stage(&table, StorageKind::Blob, b"j", &object(&[Some(b"shared")]))
        .unwrap();
    store.commit().unwrap();
    store
        .stage(&table, StorageKind::Blob, b"k", &object(&[Some(b"shared")]))
        .unwrap();
    store.commit().unwrap();
    let files = || std::fs::read_dir(dir.join("blobs")).unwrap().count();
    assert_eq!(files(), 2);
    assert_eq!(
        store.collect_blobs(std::slice::from_ref(&table)).unwrap(),
        1,
        "only the old value goes"
    );
    assert_eq!(files(), 1);
    assert_eq!(
        store.load(&table, StorageKind::Blob, b"k").unwrap(),
        Some(object(&[Some(b"shared")]))
    );
    assert_eq!(
        store.load(&table, StorageKind::Blob, b"j").unwrap(),
        Some(object(&[Some(b"shared")]))
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_corrupt_blob_is_an_error_not_a_wrong_value() {
    let dir = temp_dir("blob-corrupt");
    let id = NodeId::new("n1").unwrap();
    let table = TableName::new("b").unwrap();
    let (mut store, _) = NodeStore::open(&dir, &id).unwrap();
    store
        .stage(
            &table,
            StorageKind::Blob,
            b"k",
            &object(&[Some(b"precious")]),
        )
        .unwrap();
    store.commit().unwrap();
    for entry in std::fs::read_dir(dir.join("blobs")).unwrap() {
        std::fs::write(entry.unwrap().path(), b"tampered").unwrap();
    }
    assert!(store.load(&table, StorageKind::Blob, b"k").is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn committed_objects_epochs_and_shutdown_state_survive_reopening() {
    let dir = temp_dir("reopen");
    let id = NodeId::new("n1").unwrap();
    {
        let (mut store, persisted) = NodeStore::open(&dir, &id).unwrap();
        assert_eq!(persisted.epoch, None);
        store.persist_epoch_now(7).unwrap();
    }
    let (mut store, persisted) = NodeStore::open(&dir, &id).unwrap();
    assert_eq!(persisted.epoch, Some(7));
    assert!(!persisted.clean_shutdown);
    store.mark_clean_shutdown().unwrap();
    drop(store);
    let (_, persisted) = NodeStore::open(&dir, &id).unwrap();
    assert!(persisted.clean_shutdown);
    assert!(NodeStore::open(&dir, &NodeId::new("other").unwrap()).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sealed_batches_stay_visible_while_another_thread_commits_them() {
    for engine in [StorageKind::Lmdb, StorageKind::Blob] {
        let dir = temp_dir(&format!("sealed-{engine:?}"));
        let id = NodeId::new("n1").unwrap();
        let table = TableName::new("t").unwrap();
        let first = object(&[Some(b"first")]);
        let second = object(&[Some(b"second")]);
        let third = object(&[Some(b"third")]);
        {
            let (mut store, _) = NodeStore::open(&dir, &id).unwrap();
            assert_eq!(store.copy_state(&table, b"k"), CopyState::Durable);
            assert!(store.seal(1).is_none(), "nothing staged, nothing sealed");
            store.stage(&table, engine, b"k", &first).unwrap();
            assert_eq!(store.copy_state(&table, b"k"), CopyState::Staged);
            let one = store.seal(1).expect("something was staged");
            assert_eq!(store.copy_state(&table, b"k"), CopyState::Sealed(1));
            store.stage(&table, engine, b"k", &second).unwrap();
            store.stage(&table, engine, b"j", &first).unwrap();
            let two = store.seal(2).expect("something was staged");
            assert_eq!(store.copy_state(&table, b"k"), CopyState::Sealed(2));
            assert_eq!(store.copy_state(&table, b"j"), CopyState::Sealed(2));
            store.stage(&table, engine, b"k", &third).unwrap();
            assert_eq!(
                store.load(&table, engine, b"k").unwrap(),
                Some(third.clone()),
                "{engine:?}: the newest overlay wins"
            );
            assert!(
                store.commit().is_err(),
                "no inline commit under sealed batches"
            );
            // The committing thread writes both sealed batches in one transaction.
            let writer = store.writer();
            std::thread::spawn(move || writer.write(&[one, two]))
                .join()
                .unwrap()
                .unwrap();
            store.durable_through(1);
            assert!(store.has_sealed());
            assert_eq!(store.copy_state(&table, b"j"), CopyState::Sealed(2));
            store.durable_through(2);
            assert!(!store.has_sealed());
            assert_eq!(store.copy_state(&table, b"j"), CopyState::Durable);
            assert_eq!(
                store.load(&table, engine, b"k").unwrap(),
                Some(third.clone()),
                "{engine:?}: the staged write still wins"
            );
            // Only the sealed batches are durable: a crash now keeps `second`.
        }
        let (mut store, _) = NodeStore::open(&dir, &id).unwrap();
        assert_eq!(
            store.load(&table, engine, b"k").unwrap(),
            Some(second),
            "{engine:?}: the later sealed batch won, the staged one was lost"
        );
        assert_eq!(store.load(&table, engine, b"j").unwrap(), Some(first));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn blob_collection_keeps_files_of_staged_and_sealed_writes() {
    let dir = temp_dir("blob-gc-pending");
    let id = NodeId::new("n1").unwrap();
    let table = TableName::new("b").unwrap();
    let (mut store, _) = NodeStore::open(&dir, &id).unwrap();
    let sealed_value = object(&[Some(b"in flight")]);
    store
        .stage(&table, StorageKind::Blob, b"k", &sealed_value)
        .unwrap();
    let batch = store.seal(1).unwrap();
    store.writer().write(&[batch]).unwrap();
    // Written but not yet reported durable, and another write staged.
    store
        .stage(&table, StorageKind::Blob, b"j", &object(&[Some(b"staged")]))
        .unwrap();
    assert_eq!(
        store.collect_blobs(std::slice::from_ref(&table)).unwrap(),
        0
    );
    store.durable_through(1);
    store.commit().unwrap();
    assert_eq!(
        store.collect_blobs(std::slice::from_ref(&table)).unwrap(),
        0
    );
    assert_eq!(
        store.load(&table, StorageKind::Blob, b"k").unwrap(),
        Some(sealed_value)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn keys_up_to_1024_bytes_are_stored_and_a_key_lmdb_cannot_take_is_refused_before_staging() {
    let dir = temp_dir("long-keys");
    let id = NodeId::new("n1").unwrap();
    let table = TableName::new("t").unwrap();
    let (mut store, _) = NodeStore::open(&dir, &id).unwrap();
    let value = object(&[Some(b"v")]);
    for engine in [StorageKind::Lmdb, StorageKind::Blob] {
        // SPEC's longest key; LMDB's default limit (511 bytes) once failed
        // the whole commit and stopped every replica of such a key.
        let longest = vec![b'k'; crate::core::limits::KEY_BYTES_MAX];
        store.stage(&table, engine, &longest, &value).unwrap();
        store.commit().unwrap();
        assert_eq!(
            store.load(&table, engine, &longest).unwrap(),
            Some(value.clone())
        );
        // What LMDB cannot store (a peer may send anything) is refused, and
        // the batch it would have joined still commits.
        let too_long = vec![b'k'; store.writer.env.max_key_size() + 1];
        assert!(store.stage(&table, engine, &too_long, &value).is_err());
        assert!(store.stage(&table, engine, b"", &value).is_err());
        store.stage(&table, engine, b"fine", &value).unwrap();
        store.commit().unwrap();
        assert_eq!(
            store.load(&table, engine, b"fine").unwrap(),
            Some(value.clone())
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn blob_collection_spares_the_temporary_file_of_a_blob_being_written() {
    let dir = temp_dir("blob-gc-tmp");
    let id = NodeId::new("n1").unwrap();
    let table = TableName::new("b").unwrap();
    let (mut store, _) = NodeStore::open(&dir, &id).unwrap();
    let value = b"being written".to_vec();
    store
        .stage(&table, StorageKind::Blob, b"k", &object(&[Some(&value)]))
        .unwrap();
    let _batch = store.seal(1).unwrap();
    // The committing thread is between creating the temporary file and its rename.
    let hex: String = blob::blob_id(&value)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let in_flight = dir.join("blobs").join(format!(".{hex}.tmp"));
    std::fs::write(&in_flight, &value).unwrap();
    // A crash's leftover of a blob nothing references.
    let stray_hex: String = blob::blob_id(b"orphan")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let stray = dir.join("blobs").join(format!(".{stray_hex}.tmp"));
    std::fs::write(&stray, b"orphan").unwrap();
    assert_eq!(
        store.collect_blobs(std::slice::from_ref(&table)).unwrap(),
        1
    );
    assert!(in_flight.exists(), "the in-flight file was collected");
    assert!(!stray.exists(), "the stray file was kept");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cluster_metadata_written_by_earlier_builds_still_opens() {
    // Written under the legacy key: before table drops the layout ended at
    // `token_key`; before token keys at `plugins` (an empty map and a `None`
    // are one byte each; the test's metadata has no plugins, whose entries
    // also changed).
    for (label, trailing) in [("meta-v2", 1), ("meta-v1", 2)] {
        metadata_without_trailing_fields_opens(label, trailing, STATE_META_LEGACY);
    }
    // Before sloppy quorum: under its own key, tables without `sloppy`.
    metadata_without_trailing_fields_opens("meta-v3", 0, STATE_META_V3);
}

#[test]
fn cluster_metadata_from_before_api_keys_opens_with_none() {
    let dir = temp_dir("meta-v5");
    let id = NodeId::new("n1").unwrap();
    let mut meta = ClusterMeta::empty();
    meta.ring = Some(crate::core::ring::Ring::single(&id, 16, 3));
    let old = encode_disk(&crate::core::meta::ClusterMetaV5::from(&meta)).unwrap();
    {
        let (store, _) = NodeStore::open(&dir, &id).unwrap();
        let mut wtxn = store.writer.env.write_txn().unwrap();
        store.writer.state.put(&mut wtxn, STATE_META, &old).unwrap();
        wtxn.commit().unwrap();
    }
    let (_, persisted) = NodeStore::open(&dir, &id).unwrap();
    assert_eq!(persisted.meta, Some(meta));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cluster_metadata_from_before_partition_transfer_opens_with_its_ring() {
    let dir = temp_dir("meta-v4");
    let id = NodeId::new("n1").unwrap();
    let mut meta = ClusterMeta::empty();
    meta.ring = Some(crate::core::ring::Ring::single(&id, 16, 3));
    let old = encode_disk(&crate::core::meta::ClusterMetaV4::from(&meta)).unwrap();
    {
        let (store, _) = NodeStore::open(&dir, &id).unwrap();
        let mut wtxn = store.writer.env.write_txn().unwrap();
        store
            .writer
            .state
            .put(&mut wtxn, STATE_META_V4, &old)
            .unwrap();
        wtxn.commit().unwrap();
    }
    let (_, persisted) = NodeStore::open(&dir, &id).unwrap();
    assert_eq!(
        persisted.meta,
        Some(meta),
        "the ring came back, with no move"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn metadata_without_trailing_fields_opens(label: &str, trailing: usize, key: &str) {
    let dir = temp_dir(label);
    let id = NodeId::new("n1").unwrap();
    let mut meta = ClusterMeta::empty();
    meta.tables.insert(
        TableName::new("t").unwrap(),
        crate::core::meta::TableEntry {
            config: crate::core::table::TableConfig::apply(None, &Default::default()).unwrap(),
            stamp_ms: 1,
            origin: id.clone(),
        },
    );
    let mut old = encode_disk(&crate::core::meta::ClusterMetaV3::from(&meta)).unwrap();
    for _ in 0..trailing {
        assert_eq!(old.pop(), Some(0));
    }
    {
        let (store, _) = NodeStore::open(&dir, &id).unwrap();
        let mut wtxn = store.writer.env.write_txn().unwrap();
        store.writer.state.put(&mut wtxn, key, &old).unwrap();
        wtxn.commit().unwrap();
    }
    let (_, persisted) = NodeStore::open(&dir, &id).unwrap();
    assert_eq!(persisted.meta, Some(meta));
    assert!(persisted
        .meta
        .unwrap()
        .tables
        .values()
        .all(|t| t.config.sloppy));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_data_dir_in_use_is_refused_with_its_holder_and_free_again_once_closed() {
    let dir = temp_dir("locked");
    let id = NodeId::new("n1").unwrap();
    let (store, _) = NodeStore::open(&dir, &id).unwrap();
    let refused = NodeStore::open(&dir, &id)
        .err()
        .expect("a second open is refused");
    assert!(
        refused
            .reason()
            .contains(&format!("in use by process {}", std::process::id())),
        "{refused}"
    );
    drop(store);
    assert!(NodeStore::open(&dir, &id).is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn writes_that_would_eat_into_the_disk_reserve_are_refused_before_staging() {
    let dir = temp_dir("reserve");
    let id = NodeId::new("n1").unwrap();
    let table = TableName::new("t").unwrap();
    let (mut store, _) = NodeStore::open(&dir, &id).unwrap();
    let free = store.disk_gauge().free_bytes();
    assert!(free > 0);
    // A reserve a little under the free space: a small write fits, a value
    // larger than the gap does not, in either engine that writes to disk.
    store.reserve_disk(free - (1 << 20));
    store
        .stage(&table, StorageKind::Lmdb, b"small", &object(&[Some(b"v")]))
        .unwrap();
    let large = vec![1u8; 2 << 20];
    for engine in [StorageKind::Lmdb, StorageKind::Blob] {
        let refused = store
            .stage(&table, engine, b"large", &object(&[Some(&large)]))
            .unwrap_err();
        assert!(
            matches!(refused, StoreError::Full(_)),
            "{engine:?}: {refused}"
        );
        assert_eq!(store.load(&table, engine, b"large").unwrap(), None);
    }
    // Memory tables take no disk.
    store
        .stage(
            &table,
            StorageKind::Memory,
            b"large",
            &object(&[Some(&large)]),
        )
        .unwrap();
    // What is staged counts until it is durable: the gap is taken.
    store.reserve_disk(free - (20 << 10));
    let second = store
        .stage(&table, StorageKind::Lmdb, b"small2", &object(&[Some(b"v")]))
        .unwrap_err();
    assert!(matches!(second, StoreError::Full(_)), "{second}");
    store.commit().unwrap();
    assert_eq!(
        store.load(&table, StorageKind::Lmdb, b"small").unwrap(),
        Some(object(&[Some(b"v")]))
    );
}

#[test]
fn a_dropped_tables_records_are_deleted_in_slices() {
    let dir = temp_dir("dropped");
    let id = NodeId::new("n1").unwrap();
    let (gone, kept) = (
        TableName::new("gone").unwrap(),
        TableName::new("kept").unwrap(),
    );
    let (mut store, _) = NodeStore::open(&dir, &id).unwrap();
    for i in 0..2_500u32 {
        let key = i.to_be_bytes();
        store
            .stage(&gone, StorageKind::Lmdb, &key, &object(&[Some(b"v")]))
            .unwrap();
    }
    store
        .stage(&gone, StorageKind::Memory, b"m", &object(&[Some(b"v")]))
        .unwrap();
    store
        .stage(&kept, StorageKind::Lmdb, b"k", &object(&[Some(b"v")]))
        .unwrap();
    store.commit().unwrap();
    let mut slices = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let (staged, last) = store
            .collect_dropped(&gone, after.as_deref(), 1_000)
            .unwrap();
        slices.push(staged);
        store.commit().unwrap();
        if staged == 0 {
            break;
        }
        after = last;
    }
    assert_eq!(slices, [1_000, 1_000, 500, 0]);
    assert_eq!(
        store.collect_dropped(&gone, None, 1_000).unwrap(),
        (0, None)
    );
    for (engine, key) in [
        (StorageKind::Lmdb, &7u32.to_be_bytes()[..]),
        (StorageKind::Memory, b"m"),
    ] {
        assert_eq!(store.load(&gone, engine, key).unwrap(), None);
    }
    assert!(store
        .load(&kept, StorageKind::Lmdb, b"k")
        .unwrap()
        .is_some());
}

#[test]
fn plugin_entries_of_earlier_builds_still_open() {
    use std::collections::BTreeMap;
    #[derive(serde::Serialize)]
    struct OldPlugin {
        sha256: Option<String>,
        abi: u32,
        exports: Vec<String>,
        size_bytes: u64,
        stamp_ms: u64,
        origin: NodeId,
    }
    #[derive(serde::Serialize)]
    struct OldMeta {
        members: BTreeMap<NodeId, crate::core::meta::Member>,
        ring: Option<crate::core::ring::Ring>,
        tables: BTreeMap<TableName, crate::core::meta::TableEntryV1>,
        plugins: BTreeMap<String, OldPlugin>,
        token_key: Option<crate::core::token::TokenKey>,
    }
    let dir = temp_dir("meta-plugins");
    let id = NodeId::new("n1").unwrap();
    let old = OldMeta {
        members: BTreeMap::new(),
        ring: None,
        tables: BTreeMap::new(),
        plugins: BTreeMap::from([(
            "cart".to_owned(),
            OldPlugin {
                sha256: Some("ab".repeat(32)),
                abi: 1,
                exports: vec!["reconcile".into()],
                size_bytes: 10,
                stamp_ms: 5,
                origin: id.clone(),
            },
        )]),
        token_key: None,
    };
    {
        let (store, _) = NodeStore::open(&dir, &id).unwrap();
        let mut wtxn = store.writer.env.write_txn().unwrap();
        let bytes = encode_disk(&old).unwrap();
        store
            .writer
            .state
            .put(&mut wtxn, STATE_META_LEGACY, &bytes)
            .unwrap();
        wtxn.commit().unwrap();
    }
    let (_, persisted) = NodeStore::open(&dir, &id).unwrap();
    let meta = persisted.meta.expect("metadata");
    let entry = meta.plugin("cart").expect("the plugin");
    assert!(entry.exports("reconcile"));
    assert_eq!((entry.stamp_ms, entry.previous.clone()), (5, None));
    let _ = std::fs::remove_dir_all(&dir);
}

impl crate::core::store::conformance::Backend for NodeStore {
    fn commit_staged(&mut self) {
        self.commit().expect("commit");
    }

    fn seal_staged(&mut self, number: u64) {
        self.seal(number);
    }
}

#[test]
fn the_node_store_passes_the_local_store_conformance_suite() {
    let id = NodeId::new("n1").unwrap();
    let mut opened = Vec::new();
    crate::core::store::conformance::run(&ENGINES, |case| {
        let dir = temp_dir(&format!("suite-{case}"));
        opened.push(dir.clone());
        NodeStore::open(&dir, &id).unwrap().0
    });
    for dir in opened {
        let _ = std::fs::remove_dir_all(dir);
    }
}
