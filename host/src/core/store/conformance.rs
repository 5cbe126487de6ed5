//! One conformance suite for every [`LocalStore`]: the real store
//! (`storage::NodeStore`) and the simulator's `MemoryStore` run the same
//! cases, so the simulator cannot pass on behaviour the real store lacks.

use bytes::Bytes;

use super::{CopyState, LocalStore};
use crate::core::causal::tests::dot;
use crate::core::causal::CausalContext;
use crate::core::object::{Object, Version};
use crate::core::ring::partition_of;
use crate::core::table::{MergeMode, StorageKind};
use crate::core::types::TableName;

/// What the suite needs beyond the trait: making staged writes durable.
pub(crate) trait Backend: LocalStore {
    /// Commits everything staged so far (nothing sealed is pending).
    fn commit_staged(&mut self);
    /// Seals what is staged into batch `number`, handed to a commit that
    /// has not finished: still pending, still read.
    fn seal_staged(&mut self, number: u64);
}

/// An object with one live version holding `value`.
fn object(value: &str) -> Object {
    let mut object = Object::default();
    let version = Version {
        dot: dot("n1", 1, 1),
        timestamp_ms: 1,
        value: Some(Bytes::copy_from_slice(value.as_bytes())),
        content_type: "text/plain".into(),
    };
    object.apply_write(&CausalContext::new(), version, MergeMode::Siblings);
    object
}

fn table() -> TableName {
    TableName::new("conformance").expect("valid name")
}

/// Runs every case for every engine in `engines`, each on a fresh store
/// from `open` (named after the case, for backends that need a directory).
pub(crate) fn run<S: Backend>(engines: &[StorageKind], mut open: impl FnMut(&str) -> S) {
    for &engine in engines {
        stages_are_read_back_and_report_their_state(engine, &mut open(&format!("read-{engine:?}")));
        keys_of_every_allowed_length_are_taken(engine, &mut open(&format!("keys-{engine:?}")));
        a_partition_scan_pages_through_exactly_its_objects(
            engine,
            &mut open(&format!("scan-{engine:?}")),
        );
        a_scan_sees_staged_writes_over_durable_ones(engine, &mut open(&format!("over-{engine:?}")));
    }
    let mut store = open("modules");
    store.stage_module("abc", b"bytes").expect("module staged");
    assert_eq!(
        store.load_module("abc").expect("load"),
        Some(b"bytes".to_vec())
    );
    store.commit_staged();
    assert_eq!(
        store.load_module("abc").expect("load"),
        Some(b"bytes".to_vec())
    );
    assert_eq!(store.load_module("missing").expect("load"), None);
}

fn stages_are_read_back_and_report_their_state<S: Backend>(engine: StorageKind, store: &mut S) {
    let table = table();
    assert_eq!(store.load(&table, engine, b"k").expect("load"), None);
    store
        .stage(&table, engine, b"k", &object("one"))
        .expect("stage");
    assert_eq!(
        store.load(&table, engine, b"k").expect("load"),
        Some(object("one")),
        "{engine:?}: a staged write is read back"
    );
    if engine != StorageKind::Memory {
        assert_eq!(
            store.copy_state(&table, b"k"),
            CopyState::Staged,
            "{engine:?}"
        );
    }
    store.commit_staged();
    assert_eq!(
        store.copy_state(&table, b"k"),
        CopyState::Durable,
        "{engine:?}"
    );
    assert_eq!(
        store.load(&table, engine, b"k").expect("load"),
        Some(object("one")),
        "{engine:?}: a committed write is read back"
    );
    store
        .stage(&table, engine, b"k", &object("two"))
        .expect("stage");
    assert_eq!(
        store.load(&table, engine, b"k").expect("load"),
        Some(object("two")),
        "{engine:?}: the newest stage wins"
    );
}

fn keys_of_every_allowed_length_are_taken<S: Backend>(engine: StorageKind, store: &mut S) {
    let table = table();
    let longest = vec![b'k'; crate::core::limits::KEY_BYTES_MAX];
    store
        .stage(&table, engine, &longest, &object("v"))
        .expect("a key of the SPEC's largest size is taken");
    store.commit_staged();
    assert_eq!(
        store.load(&table, engine, &longest).expect("load"),
        Some(object("v"))
    );
    assert!(
        store.stage(&table, engine, b"", &object("v")).is_err(),
        "{engine:?}: an empty key is refused before staging"
    );
    let too_long = vec![b'k'; 4096];
    assert!(
        store
            .stage(&table, engine, &too_long, &object("v"))
            .is_err(),
        "{engine:?}: a key the store cannot hold is refused before staging"
    );
}

/// Every object of `partition`, walked page by page.
fn walk<S: Backend>(
    store: &mut S,
    engine: StorageKind,
    partition: (usize, usize),
    limit: usize,
) -> Vec<(Bytes, Object)> {
    let mut found = Vec::new();
    let mut after: Option<Bytes> = None;
    let mut pages = 0;
    loop {
        let page = store
            .scan_partition(&table(), engine, partition, after.as_deref(), limit)
            .expect("scan");
        assert!(
            page.objects.len() <= limit,
            "a page examines at most limit keys"
        );
        found.extend(page.objects);
        pages += 1;
        assert!(pages <= 1_000, "the walk ends");
        match page.next {
            Some(next) => after = Some(next),
            None => return found,
        }
    }
}

fn a_partition_scan_pages_through_exactly_its_objects<S: Backend>(
    engine: StorageKind,
    store: &mut S,
) {
    let table = table();
    let partitions = 8;
    let keys: Vec<String> = (0..60).map(|i| format!("key{i:03}")).collect();
    for (i, key) in keys.iter().enumerate() {
        store
            .stage(&table, engine, key.as_bytes(), &object(key))
            .expect("stage");
        // A third durable, a third sealed and being committed, a third staged.
        if i == 19 {
            store.commit_staged();
        }
        if i == 39 {
            store.seal_staged(1);
        }
    }
    // Another table's keys never show up.
    let other = TableName::new("other").expect("valid name");
    store
        .stage(&other, engine, b"key001", &object("x"))
        .expect("stage");
    for partition in 0..partitions {
        let mut expected: Vec<(Bytes, Object)> = keys
            .iter()
            .filter(|k| partition_of(partitions, &table, k.as_bytes()) == partition)
            .map(|k| (Bytes::copy_from_slice(k.as_bytes()), object(k)))
            .collect();
        expected.sort_by(|a, b| a.0.cmp(&b.0));
        for limit in [1, 7, 1_000] {
            assert_eq!(
                walk(store, engine, (partition, partitions), limit),
                expected,
                "{engine:?}: partition {partition} in pages of {limit}"
            );
        }
    }
}

fn a_scan_sees_staged_writes_over_durable_ones<S: Backend>(engine: StorageKind, store: &mut S) {
    let table = table();
    store
        .stage(&table, engine, b"a", &object("old"))
        .expect("stage");
    store.commit_staged();
    store
        .stage(&table, engine, b"a", &object("new"))
        .expect("stage");
    let partition = partition_of(1, &table, b"a");
    let all = walk(store, engine, (partition, 1), 1);
    assert_eq!(
        all,
        vec![(Bytes::from_static(b"a"), object("new"))],
        "{engine:?}"
    );
}
