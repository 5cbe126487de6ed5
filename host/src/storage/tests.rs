//! One conformance suite, run against every engine (lmdb, memory, blob).

use super::*;
use crate::core::causal::tests::dot;
use crate::core::causal::CausalContext;
use crate::core::object::Version;
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
