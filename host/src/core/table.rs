//! Table configuration: replication (N, R, W), reconciliation and storage engine.
//!
//! A table's config is cluster metadata: created or changed on any node, stamped
//! with (wall clock, node id) and gossiped; the largest stamp wins everywhere.

use serde::{Deserialize, Serialize};

use super::limits::REPLICAS_MAX;

/// How concurrent versions of a key are reconciled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MergeMode {
    /// Replicas keep one winner: descendants replace ancestors, then the largest
    /// (timestamp_ms, node id, epoch, counter) wins.
    Lww,
    /// Every concurrent version is kept and returned to the client (300).
    Siblings,
    /// A WebAssembly plugin merges siblings on the coordinator's read path.
    Plugin,
}

/// Which engine holds a table's value bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// LMDB, durable: the default.
    Lmdb,
    /// Process memory, volatile: for n1 r1 w1 caches.
    Memory,
    /// Large values as files named by sha256.
    Blob,
    /// A plugin's `select_storage` chooses per object.
    Plugin,
}

/// A table's stored configuration, as `GET /tables/{t}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableConfig {
    /// Replicas per key.
    pub n: u8,
    /// Answers a read waits for.
    pub r: u8,
    /// Durable acks a write waits for.
    pub w: u8,
    /// Reconciliation mode.
    pub merge: MergeMode,
    /// Merge plugin name, when `merge` is `plugin`.
    pub plugin: Option<String>,
    /// Storage engine.
    pub storage: StorageKind,
    /// Storage-selection plugin, when `storage` is `plugin`.
    pub storage_plugin: Option<String>,
    /// Whether requests use stand-ins for unreachable primaries (sloppy
    /// quorum with hinted handoff); `false` uses primaries only and answers
    /// 503 rather than count a stand-in's ack (like Riak's PW = W).
    pub sloppy: bool,
}

/// A table's config as builds before sloppy quorum stored it (in old data
/// dirs' cluster metadata): such tables are sloppy, the default.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(test, derive(Serialize))]
pub struct TableConfigV1 {
    n: u8,
    r: u8,
    w: u8,
    merge: MergeMode,
    plugin: Option<String>,
    storage: StorageKind,
    storage_plugin: Option<String>,
}

#[cfg(test)]
impl From<&TableConfig> for TableConfigV1 {
    /// What an earlier build stored (tests write old data dirs with it).
    fn from(config: &TableConfig) -> Self {
        TableConfigV1 {
            n: config.n,
            r: config.r,
            w: config.w,
            merge: config.merge,
            plugin: config.plugin.clone(),
            storage: config.storage,
            storage_plugin: config.storage_plugin.clone(),
        }
    }
}

impl From<TableConfigV1> for TableConfig {
    fn from(old: TableConfigV1) -> Self {
        TableConfig {
            n: old.n,
            r: old.r,
            w: old.w,
            merge: old.merge,
            plugin: old.plugin,
            storage: old.storage,
            storage_plugin: old.storage_plugin,
            sloppy: true,
        }
    }
}

impl Default for TableConfig {
    fn default() -> Self {
        TableConfig {
            n: 3,
            r: 2,
            w: 2,
            merge: MergeMode::Lww,
            plugin: None,
            storage: StorageKind::Lmdb,
            storage_plugin: None,
            sloppy: true,
        }
    }
}

/// A request to create or change a table: every field optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TablePatch {
    /// Replicas per key.
    pub n: Option<u8>,
    /// Read quorum.
    pub r: Option<u8>,
    /// Write quorum.
    pub w: Option<u8>,
    /// Reconciliation mode.
    pub merge: Option<MergeMode>,
    /// Merge plugin name.
    pub plugin: Option<String>,
    /// Storage engine.
    pub storage: Option<StorageKind>,
    /// Storage-selection plugin name.
    pub storage_plugin: Option<String>,
    /// Whether stand-ins take writes for unreachable primaries.
    pub sloppy: Option<bool>,
}

/// Why a table config was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A rule of SPEC §3 "Tables" is broken: answered 400.
    #[error("{0}")]
    Invalid(String),
    /// `n` or `storage` of an existing table cannot change: answered 409.
    #[error("{0}")]
    Conflict(String),
}

impl TableConfig {
    /// Applies a patch: onto `existing` when the table exists (omitted fields keep
    /// their values), else onto the defaults. Checks every rule.
    pub fn apply(
        existing: Option<&TableConfig>,
        patch: &TablePatch,
    ) -> Result<TableConfig, ConfigError> {
        let base = existing.cloned().unwrap_or_default();
        if let Some(old) = existing {
            if patch.n.is_some_and(|n| n != old.n) {
                return Err(ConfigError::Conflict(format!(
                    "n of an existing table cannot change (it is {})",
                    old.n
                )));
            }
            if patch.storage.is_some_and(|s| s != old.storage) {
                return Err(ConfigError::Conflict(
                    "storage of an existing table cannot change".into(),
                ));
            }
        }
        let merge = patch.merge.unwrap_or(base.merge);
        let storage = patch.storage.unwrap_or(base.storage);
        // A plugin name on a table that does not use it would be kept, shown
        // and checked by nobody: refuse it, and forget the merge plugin when
        // the merge mode moves away from "plugin".
        if patch.plugin.is_some() && merge != MergeMode::Plugin {
            return Err(ConfigError::Invalid(
                "\"plugin\" is only for tables with merge \"plugin\"".into(),
            ));
        }
        if patch.storage_plugin.is_some() && storage != StorageKind::Plugin {
            return Err(ConfigError::Invalid(
                "\"storage_plugin\" is only for tables with storage \"plugin\"".into(),
            ));
        }
        let config = TableConfig {
            n: patch.n.unwrap_or(base.n),
            r: patch.r.unwrap_or(base.r),
            w: patch.w.unwrap_or(base.w),
            merge,
            plugin: (merge == MergeMode::Plugin)
                .then(|| patch.plugin.clone().or(base.plugin))
                .flatten(),
            storage,
            storage_plugin: (storage == StorageKind::Plugin)
                .then(|| patch.storage_plugin.clone().or(base.storage_plugin))
                .flatten(),
            sloppy: patch.sloppy.unwrap_or(base.sloppy),
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks 1 ≤ r ≤ n, 1 ≤ w ≤ n, 1 ≤ n ≤ 9 and the plugin fields.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.n < 1 || self.n > REPLICAS_MAX {
            return invalid(format!("n must be between 1 and {REPLICAS_MAX}"));
        }
        if self.r < 1 || self.r > self.n {
            return invalid("r must be between 1 and n".into());
        }
        if self.w < 1 || self.w > self.n {
            return invalid("w must be between 1 and n".into());
        }
        if self.merge == MergeMode::Plugin && self.plugin.is_none() {
            return invalid(
                "merge \"plugin\" needs \"plugin\": the name of an uploaded plugin".into(),
            );
        }
        if self.storage == StorageKind::Plugin && self.storage_plugin.is_none() {
            return invalid(
                "storage \"plugin\" needs \"storage_plugin\": the name of an uploaded plugin"
                    .into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_names_belong_only_to_tables_that_use_them() {
        let patch = |json: &str| serde_json::from_str::<TablePatch>(json).unwrap();
        for stray in [
            r#"{"merge":"lww","plugin":"carts"}"#,
            r#"{"plugin":"carts"}"#,
            r#"{"storage":"lmdb","storage_plugin":"router"}"#,
        ] {
            let refused = TableConfig::apply(None, &patch(stray));
            assert!(
                matches!(refused, Err(ConfigError::Invalid(ref m)) if m.contains("only for")),
                "{stray}: {refused:?}"
            );
        }
        let merged = patch(r#"{"merge":"plugin","plugin":"carts"}"#);
        let plugin = TableConfig::apply(None, &merged).unwrap();
        assert_eq!(plugin.plugin.as_deref(), Some("carts"));
        // Moving to lww forgets the merge plugin.
        let lww = TableConfig::apply(Some(&plugin), &patch(r#"{"merge":"lww"}"#)).unwrap();
        assert_eq!(lww.plugin, None);
    }

    #[test]
    fn defaults_are_n3_r2_w2_lww_lmdb() {
        let c = TableConfig::apply(None, &TablePatch::default()).unwrap();
        assert_eq!((c.n, c.r, c.w), (3, 2, 2));
        assert_eq!(c.merge, MergeMode::Lww);
        assert_eq!(c.storage, StorageKind::Lmdb);
    }

    #[test]
    fn quorums_must_fit_n() {
        let p = TablePatch {
            n: Some(2),
            r: Some(3),
            ..Default::default()
        };
        assert!(matches!(
            TableConfig::apply(None, &p),
            Err(ConfigError::Invalid(_))
        ));
        let p = TablePatch {
            n: Some(10),
            ..Default::default()
        };
        assert!(matches!(
            TableConfig::apply(None, &p),
            Err(ConfigError::Invalid(_))
        ));
        let p = TablePatch {
            w: Some(0),
            ..Default::default()
        };
        assert!(matches!(
            TableConfig::apply(None, &p),
            Err(ConfigError::Invalid(_))
        ));
    }

    #[test]
    fn omitted_fields_keep_their_values_and_n_cannot_change() {
        let first = TableConfig::apply(
            None,
            &TablePatch {
                n: Some(5),
                r: Some(3),
                ..Default::default()
            },
        )
        .unwrap();
        let second = TableConfig::apply(
            Some(&first),
            &TablePatch {
                w: Some(4),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!((second.n, second.r, second.w), (5, 3, 4));
        let bad = TableConfig::apply(
            Some(&first),
            &TablePatch {
                n: Some(3),
                ..Default::default()
            },
        );
        assert!(matches!(bad, Err(ConfigError::Conflict(_))));
        let same = TableConfig::apply(
            Some(&first),
            &TablePatch {
                n: Some(5),
                ..Default::default()
            },
        );
        assert!(same.is_ok());
    }
}
