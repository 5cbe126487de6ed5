//! Cluster metadata: members, the ring and table configs, merged by gossip.
//!
//! Every field merges as a join (per member the larger stamp, the superseding
//! ring, per table the larger (timestamp, node id)), so nodes that exchange
//! metadata in any order end up with the same copy.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::access::ApiKeyEntry;
use super::codec::short_hash;
use super::limits::{TABLES_MAX, TABLE_NAMES_MAX};
use super::ring::{Ring, RingV1};
use super::table::{MergeMode, StorageKind, TableConfig, TableConfigV1};
use super::token::TokenKey;
use super::types::{NodeId, TableName};

/// What the cluster knows of one member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its HTTP address, for clients and `/cluster`.
    pub http: String,
    /// Its peer address, where other nodes connect.
    pub peer: String,
    /// The highest epoch it has announced: a node resuming with a wiped data
    /// dir starts above it.
    pub epoch: u64,
    /// Raised by the member itself whenever it changes its record; the larger wins.
    pub stamp: u64,
}

/// A table's config with the stamp that orders concurrent changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableEntry {
    /// The config.
    pub config: TableConfig,
    /// Wall clock of the node that made the change.
    pub stamp_ms: u64,
    /// That node.
    pub origin: NodeId,
}

/// A table entry as builds before sloppy quorum stored it.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
pub struct TableEntryV1 {
    config: TableConfigV1,
    stamp_ms: u64,
    origin: NodeId,
}

impl From<TableEntryV1> for TableEntry {
    fn from(old: TableEntryV1) -> Self {
        TableEntry {
            config: old.config.into(),
            stamp_ms: old.stamp_ms,
            origin: old.origin,
        }
    }
}

fn upgraded_tables(tables: BTreeMap<TableName, TableEntryV1>) -> BTreeMap<TableName, TableEntry> {
    tables.into_iter().map(|(n, e)| (n, e.into())).collect()
}

impl TableEntry {
    fn supersedes(&self, other: &TableEntry) -> bool {
        (self.stamp_ms, &self.origin) > (other.stamp_ms, &other.origin)
    }
}

/// A plugin name's current module, or its deletion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginEntry {
    /// sha256 (hex) of the module bytes; `None` once deleted.
    pub sha256: Option<String>,
    /// ABI version the module speaks.
    pub abi: u32,
    /// Plugin functions it exports (`reconcile`, `select_storage`, `samples`).
    pub exports: Vec<String>,
    /// Module size.
    pub size_bytes: u64,
    /// Wall clock of the node that took the upload or delete.
    pub stamp_ms: u64,
    /// That node (it holds the bytes first).
    pub origin: NodeId,
    /// The module the name had before this upload or delete, if any: what a
    /// change that raced a table create using it is undone to.
    pub previous: Option<PluginVersion>,
}

/// One module a plugin name has named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginVersion {
    /// sha256 (hex) of the module bytes.
    pub sha256: String,
    /// ABI version the module speaks.
    pub abi: u32,
    /// Plugin functions it exports.
    pub exports: Vec<String>,
    /// Module size.
    pub size_bytes: u64,
}

/// A plugin entry as builds before [`PluginEntry::previous`] stored it.
#[derive(Deserialize)]
pub struct PluginEntryV1 {
    sha256: Option<String>,
    abi: u32,
    exports: Vec<String>,
    size_bytes: u64,
    stamp_ms: u64,
    origin: NodeId,
}

impl From<PluginEntryV1> for PluginEntry {
    fn from(old: PluginEntryV1) -> Self {
        PluginEntry {
            sha256: old.sha256,
            abi: old.abi,
            exports: old.exports,
            size_bytes: old.size_bytes,
            stamp_ms: old.stamp_ms,
            origin: old.origin,
            previous: None,
        }
    }
}

fn upgraded(plugins: BTreeMap<String, PluginEntryV1>) -> BTreeMap<String, PluginEntry> {
    plugins.into_iter().map(|(n, e)| (n, e.into())).collect()
}

impl PluginEntry {
    fn supersedes(&self, other: &PluginEntry) -> bool {
        (self.stamp_ms, &self.origin) > (other.stamp_ms, &other.origin)
    }

    /// The module the name stands for now, unless deleted.
    pub fn live_version(&self) -> Option<PluginVersion> {
        Some(PluginVersion {
            sha256: self.sha256.clone()?,
            abi: self.abi,
            exports: self.exports.clone(),
            size_bytes: self.size_bytes,
        })
    }

    /// Whether it exports `function`.
    pub fn exports(&self, function: &str) -> bool {
        self.sha256.is_some() && self.exports.iter().any(|e| e == function)
    }
}

/// A dropped table. Its name stays taken: the tombstone beats any config of
/// that name from any node, so gossip never brings the table back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DroppedTable {
    /// Wall clock of the node that took the drop.
    pub stamp_ms: u64,
    /// That node.
    pub origin: NodeId,
}

impl DroppedTable {
    fn supersedes(&self, other: &DroppedTable) -> bool {
        (self.stamp_ms, &self.origin) > (other.stamp_ms, &other.origin)
    }
}

/// An operator's removal of a member: asked for (while its partitions
/// move away), then done. Both only grow in gossip, and a removed member's
/// record never comes back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Departure {
    /// The member's peer address when it was asked to leave: where the
    /// cluster tells it, should it not have heard, that it was removed.
    pub peer: String,
    /// Wall clock of the node that took the request.
    pub stamp_ms: u64,
    /// That node.
    pub origin: NodeId,
    /// The member holds nothing the cluster needs any more: once its
    /// partitions moved away it handed every copy and hint it held to their
    /// owners (set by the member itself), or the operator forced the removal
    /// of a dead member (its undelivered hints are lost with it).
    pub drained: bool,
}

impl Departure {
    /// Gossip's order: a drained record wins, then the earliest request.
    fn supersedes(&self, other: &Departure) -> bool {
        (
            self.drained,
            std::cmp::Reverse((self.stamp_ms, &self.origin)),
        ) > (
            other.drained,
            std::cmp::Reverse((other.stamp_ms, &other.origin)),
        )
    }
}

/// A new node taking over exactly a member's partitions, asked for before
/// it joins: its join then swaps it in for the old member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replacement {
    /// The member it replaces.
    pub old: NodeId,
    /// The old member is dead for good: it is not waited for to hand over
    /// what it held (lost with it).
    pub force: bool,
    /// Wall clock of the node that took the request.
    pub stamp_ms: u64,
    /// That node.
    pub origin: NodeId,
}

/// A short hash of each section of the metadata: what a gossip round sends
/// first, so two nodes that agree exchange a few dozen bytes, and two that
/// differ exchange only the sections that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaDigest {
    /// Members, departures and replacements.
    pub members: u64,
    /// The ring.
    pub ring: u64,
    /// Tables and dropped tables.
    pub tables: u64,
    /// Plugins.
    pub plugins: u64,
    /// The context-token key.
    pub token_key: u64,
    /// API keys.
    pub api_keys: u64,
}

/// Everything gossip spreads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMeta {
    /// Every member, this node included.
    pub members: BTreeMap<NodeId, Member>,
    /// The partition assignment; `None` until a node has joined or founded a cluster.
    pub ring: Option<Ring>,
    /// Every table.
    pub tables: BTreeMap<TableName, TableEntry>,
    /// Every plugin name, deleted ones included (so deletes spread too).
    pub plugins: BTreeMap<String, PluginEntry>,
    /// The key context tokens are MACed with; drawn by whoever first needs
    /// one (the founder), the smaller of two concurrent ones wins.
    pub token_key: Option<TokenKey>,
    /// Every dropped table.
    pub dropped: BTreeMap<TableName, DroppedTable>,
    /// Members being removed: their partitions move to the others first.
    pub leaving: BTreeMap<NodeId, Departure>,
    /// Removed members: gossip never makes them members again.
    pub removed: BTreeMap<NodeId, Departure>,
    /// Replacements asked for, by the new node's id.
    pub replacements: BTreeMap<NodeId, Replacement>,
    /// API keys by id, revoked ones included (so revocations spread too).
    pub api_keys: BTreeMap<String, ApiKeyEntry>,
}

/// Cluster metadata as builds before API keys stored it: still read from
/// old data dirs.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
pub struct ClusterMetaV5 {
    members: BTreeMap<NodeId, Member>,
    ring: Option<Ring>,
    tables: BTreeMap<TableName, TableEntry>,
    plugins: BTreeMap<String, PluginEntry>,
    token_key: Option<TokenKey>,
    dropped: BTreeMap<TableName, DroppedTable>,
    leaving: BTreeMap<NodeId, Departure>,
    removed: BTreeMap<NodeId, Departure>,
    replacements: BTreeMap<NodeId, Replacement>,
}

impl From<ClusterMetaV5> for ClusterMeta {
    fn from(old: ClusterMetaV5) -> Self {
        ClusterMeta {
            members: old.members,
            ring: old.ring,
            tables: old.tables,
            plugins: old.plugins,
            token_key: old.token_key,
            dropped: old.dropped,
            leaving: old.leaving,
            removed: old.removed,
            replacements: old.replacements,
            api_keys: BTreeMap::new(),
        }
    }
}

#[cfg(test)]
impl From<&ClusterMeta> for ClusterMetaV5 {
    /// What an earlier build stored (tests write old data dirs with it).
    fn from(meta: &ClusterMeta) -> Self {
        ClusterMetaV5 {
            members: meta.members.clone(),
            ring: meta.ring.clone(),
            tables: meta.tables.clone(),
            plugins: meta.plugins.clone(),
            token_key: meta.token_key,
            dropped: meta.dropped.clone(),
            leaving: meta.leaving.clone(),
            removed: meta.removed.clone(),
            replacements: meta.replacements.clone(),
        }
    }
}

/// Cluster metadata as builds before partition transfer (a ring's `next`)
/// stored it: still read from old data dirs.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
pub struct ClusterMetaV4 {
    members: BTreeMap<NodeId, Member>,
    ring: Option<RingV1>,
    tables: BTreeMap<TableName, TableEntry>,
    plugins: BTreeMap<String, PluginEntry>,
    token_key: Option<TokenKey>,
    dropped: BTreeMap<TableName, DroppedTable>,
}

impl From<ClusterMetaV4> for ClusterMeta {
    fn from(old: ClusterMetaV4) -> Self {
        ClusterMeta {
            members: old.members,
            ring: old.ring.map(Ring::from),
            tables: old.tables,
            plugins: old.plugins,
            token_key: old.token_key,
            dropped: old.dropped,
            leaving: BTreeMap::new(),
            removed: BTreeMap::new(),
            replacements: BTreeMap::new(),
            api_keys: BTreeMap::new(),
        }
    }
}

#[cfg(test)]
impl From<&ClusterMeta> for ClusterMetaV4 {
    /// What an earlier build stored (tests write old data dirs with it).
    fn from(meta: &ClusterMeta) -> Self {
        ClusterMetaV4 {
            members: meta.members.clone(),
            ring: meta.ring.as_ref().map(RingV1::from),
            tables: meta.tables.clone(),
            plugins: meta.plugins.clone(),
            token_key: meta.token_key,
            dropped: meta.dropped.clone(),
        }
    }
}

/// Cluster metadata as builds before sloppy quorum (a table's `sloppy`)
/// stored it: still read from old data dirs.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
pub struct ClusterMetaV3 {
    members: BTreeMap<NodeId, Member>,
    ring: Option<RingV1>,
    tables: BTreeMap<TableName, TableEntryV1>,
    plugins: BTreeMap<String, PluginEntry>,
    token_key: Option<TokenKey>,
    dropped: BTreeMap<TableName, DroppedTable>,
}

#[cfg(test)]
impl From<&ClusterMeta> for ClusterMetaV3 {
    /// What an earlier build stored (tests write old data dirs with it).
    fn from(meta: &ClusterMeta) -> Self {
        ClusterMetaV3 {
            members: meta.members.clone(),
            ring: meta.ring.as_ref().map(RingV1::from),
            tables: meta
                .tables
                .iter()
                .map(|(name, entry)| {
                    let old = TableEntryV1 {
                        config: (&entry.config).into(),
                        stamp_ms: entry.stamp_ms,
                        origin: entry.origin.clone(),
                    };
                    (name.clone(), old)
                })
                .collect(),
            plugins: meta.plugins.clone(),
            token_key: meta.token_key,
            dropped: meta.dropped.clone(),
        }
    }
}

impl From<ClusterMetaV3> for ClusterMeta {
    fn from(old: ClusterMetaV3) -> Self {
        ClusterMeta {
            members: old.members,
            ring: old.ring.map(Ring::from),
            tables: upgraded_tables(old.tables),
            plugins: old.plugins,
            token_key: old.token_key,
            dropped: old.dropped,
            leaving: BTreeMap::new(),
            removed: BTreeMap::new(),
            replacements: BTreeMap::new(),
            api_keys: BTreeMap::new(),
        }
    }
}

/// Cluster metadata as builds before table drops (and plugin histories)
/// stored it: still read from old data dirs.
#[derive(Deserialize)]
pub struct ClusterMetaV2 {
    members: BTreeMap<NodeId, Member>,
    ring: Option<RingV1>,
    tables: BTreeMap<TableName, TableEntryV1>,
    plugins: BTreeMap<String, PluginEntryV1>,
    token_key: Option<TokenKey>,
}

impl From<ClusterMetaV2> for ClusterMeta {
    fn from(old: ClusterMetaV2) -> Self {
        ClusterMeta {
            members: old.members,
            ring: old.ring.map(Ring::from),
            tables: upgraded_tables(old.tables),
            plugins: upgraded(old.plugins),
            token_key: old.token_key,
            dropped: BTreeMap::new(),
            leaving: BTreeMap::new(),
            removed: BTreeMap::new(),
            replacements: BTreeMap::new(),
            api_keys: BTreeMap::new(),
        }
    }
}

/// Cluster metadata as builds before context-token keys stored it: still
/// read from old data dirs (the key is drawn afresh).
#[derive(Deserialize)]
pub struct ClusterMetaV1 {
    members: BTreeMap<NodeId, Member>,
    ring: Option<RingV1>,
    tables: BTreeMap<TableName, TableEntryV1>,
    plugins: BTreeMap<String, PluginEntryV1>,
}

impl From<ClusterMetaV1> for ClusterMeta {
    fn from(old: ClusterMetaV1) -> Self {
        ClusterMetaV2 {
            members: old.members,
            ring: old.ring,
            tables: old.tables,
            plugins: old.plugins,
            token_key: None,
        }
        .into()
    }
}

/// Joins `theirs` into `mine` key by key: an entry `admit` lets in replaces
/// mine when it `supersedes` it (or mine is absent). Says whether `mine`
/// changed.
fn join_entries<K: Ord + Clone, V: Clone>(
    mine: &mut BTreeMap<K, V>,
    theirs: &BTreeMap<K, V>,
    admit: impl Fn(&K) -> bool,
    supersedes: impl Fn(&V, &V) -> bool,
) -> bool {
    let mut changed = false;
    for (key, entry) in theirs.iter().filter(|(key, _)| admit(key)) {
        if mine.get(key).is_none_or(|held| supersedes(entry, held)) {
            mine.insert(key.clone(), entry.clone());
            changed = true;
        }
    }
    changed
}

impl ClusterMeta {
    /// Metadata of a node that has not joined anything yet.
    pub fn empty() -> ClusterMeta {
        ClusterMeta {
            members: BTreeMap::new(),
            ring: None,
            tables: BTreeMap::new(),
            plugins: BTreeMap::new(),
            token_key: None,
            dropped: BTreeMap::new(),
            leaving: BTreeMap::new(),
            removed: BTreeMap::new(),
            replacements: BTreeMap::new(),
            api_keys: BTreeMap::new(),
        }
    }

    /// Joins `other` into this copy; says whether anything changed.
    pub fn merge(&mut self, other: &ClusterMeta) -> bool {
        // A removal beats every record of the member, older or newer.
        let mut changed = join_entries(
            &mut self.removed,
            &other.removed,
            |_| true,
            |t, m| (t.stamp_ms, &t.origin) < (m.stamp_ms, &m.origin),
        );
        for id in self.removed.keys() {
            changed |= self.members.remove(id).is_some();
            changed |= self.leaving.remove(id).is_some();
        }
        let removed = &self.removed;
        changed |= join_entries(
            &mut self.members,
            &other.members,
            |id| !removed.contains_key(id),
            |t, m| (t.stamp, t.epoch) > (m.stamp, m.epoch),
        );
        changed |= join_entries(
            &mut self.leaving,
            &other.leaving,
            |id| !removed.contains_key(id),
            Departure::supersedes,
        );
        changed |= join_entries(
            &mut self.replacements,
            &other.replacements,
            |_| true,
            |t, m| (t.stamp_ms, &t.origin) > (m.stamp_ms, &m.origin),
        );
        if let Some(theirs) = other.ring.as_ref().filter(|r| r.is_valid()) {
            match &mut self.ring {
                Some(mine) => changed |= mine.merge(theirs),
                None => {
                    self.ring = Some(theirs.clone());
                    changed = true;
                }
            }
        }
        changed |= join_entries(
            &mut self.dropped,
            &other.dropped,
            |_| true,
            |t, m| t.supersedes(m),
        );
        // A drop beats every config of its name, older or newer.
        for name in self.dropped.keys() {
            changed |= self.tables.remove(name).is_some();
        }
        let dropped = &self.dropped;
        changed |= join_entries(
            &mut self.tables,
            &other.tables,
            |name| !dropped.contains_key(name),
            |t, m| t.supersedes(m),
        );
        if let Some(theirs) = other.token_key {
            if self.token_key.is_none_or(|mine| theirs < mine) {
                self.token_key = Some(theirs);
                changed = true;
            }
        }
        changed |= join_entries(
            &mut self.plugins,
            &other.plugins,
            |_| true,
            |t, m| t.supersedes(m),
        );
        changed |= join_entries(
            &mut self.api_keys,
            &other.api_keys,
            |_| true,
            ApiKeyEntry::supersedes,
        );
        changed |= self.keep_plugins_tables_use();
        changed | self.settle_ring()
    }

    /// The digest of each section.
    pub fn digest(&self) -> MetaDigest {
        MetaDigest {
            members: short_hash(&(
                &self.members,
                &self.leaving,
                &self.removed,
                &self.replacements,
            )),
            ring: short_hash(&self.ring),
            tables: short_hash(&(&self.tables, &self.dropped)),
            plugins: short_hash(&self.plugins),
            token_key: short_hash(&self.token_key),
            api_keys: short_hash(&self.api_keys),
        }
    }

    /// The sections of this metadata whose digest differs from `theirs`,
    /// the others left empty (merging an empty section changes nothing);
    /// `None` when every section agrees.
    pub fn differing_from(&self, theirs: &MetaDigest) -> Option<ClusterMeta> {
        let mine = self.digest();
        if mine == *theirs {
            return None;
        }
        let mut delta = ClusterMeta::empty();
        if mine.members != theirs.members {
            delta.members = self.members.clone();
            delta.leaving = self.leaving.clone();
            delta.removed = self.removed.clone();
            delta.replacements = self.replacements.clone();
        }
        if mine.ring != theirs.ring {
            delta.ring = self.ring.clone();
        }
        if mine.tables != theirs.tables {
            delta.tables = self.tables.clone();
            delta.dropped = self.dropped.clone();
        }
        if mine.plugins != theirs.plugins {
            delta.plugins = self.plugins.clone();
        }
        if mine.token_key != theirs.token_key {
            delta.token_key = self.token_key;
        }
        if mine.api_keys != theirs.api_keys {
            delta.api_keys = self.api_keys.clone();
        }
        Some(delta)
    }

    /// Members that keep (or take) a share of the ring: not leaving.
    pub fn staying_members(&self) -> Vec<NodeId> {
        self.members
            .keys()
            .filter(|id| !self.leaving.contains_key(*id))
            .cloned()
            .collect()
    }

    /// Puts the departures the ring does not reflect yet into its next
    /// assignment (a removal whose plan lost to a concurrent ring change in
    /// gossip is planned again). A function of the merged state, so nodes
    /// planning at once plan alike. Says whether the ring changed.
    fn plan_departures(&mut self) -> bool {
        let Some(ring) = &self.ring else {
            return false;
        };
        // Removed members too: a plan that lost to a concurrent one may
        // have handed them partitions again.
        let leaving: Vec<NodeId> = self
            .leaving
            .keys()
            .chain(self.removed.keys())
            .filter(|id| ring.future_owned_by(id) > 0)
            .cloned()
            .collect();
        let remaining = self.staying_members();
        if leaving.is_empty() || remaining.is_empty() {
            return false;
        }
        // A replacement whose plan lost stays exact: its new member takes
        // the old one's partitions.
        let mut planned = ring.clone();
        let mut rest = Vec::new();
        for old in leaving {
            let new = self
                .replacements
                .iter()
                .find(|(new, r)| r.old == old && self.members.contains_key(*new))
                .map(|(new, _)| new.clone());
            match new {
                Some(new) => planned = planned.plan_replacement(&old, &new),
                None => rest.push(old),
            }
        }
        if !rest.is_empty() {
            planned = planned.plan_removal(&rest, &remaining);
        }
        self.ring = Some(planned);
        true
    }

    /// Leaving members that own nothing now or after the move, and have
    /// handed over what they held (or were forced out), are removed. Says
    /// whether any was.
    fn complete_departures(&mut self) -> bool {
        let Some(ring) = &self.ring else {
            return false;
        };
        let done: Vec<NodeId> = self
            .leaving
            .iter()
            .filter(|(id, departure)| {
                departure.drained && ring.owned_by(id) == 0 && ring.future_owned_by(id) == 0
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &done {
            if let Some(departure) = self.leaving.remove(id) {
                self.members.remove(id);
                self.removed.insert(id.clone(), departure);
            }
        }
        !done.is_empty()
    }

    /// The distinct replica counts of the live tables: what a ring move
    /// must copy partitions for.
    pub fn replica_counts(&self) -> std::collections::BTreeSet<u8> {
        self.tables.values().map(|t| t.config.n).collect()
    }

    /// Plans departures the ring does not reflect yet, completes the ring's
    /// move once every copy it needs is marked (see [`Ring::settle`]), and
    /// removes the leaving members that own nothing any more; a function
    /// of the merged state, so every node decides alike. Says whether
    /// anything changed.
    pub fn settle_ring(&mut self) -> bool {
        let planned = self.plan_departures();
        let ns = self.replica_counts();
        let settled = self.ring.as_mut().is_some_and(|ring| ring.settle(&ns));
        planned | settled | self.complete_departures()
    }

    /// Undoes a plugin delete or re-upload that would leave a live table
    /// without the plugin function it uses (a change that raced the table's
    /// create on another node): the name gets back the module it had before.
    /// A function of the merged state, so every node decides alike.
    pub fn keep_plugins_tables_use(&mut self) -> bool {
        let mut needs: Vec<(String, &'static str)> = Vec::new();
        for entry in self.tables.values() {
            let config = &entry.config;
            if let (MergeMode::Plugin, Some(name)) = (config.merge, &config.plugin) {
                needs.push((name.clone(), "reconcile"));
            }
            if let (StorageKind::Plugin, Some(name)) = (config.storage, &config.storage_plugin) {
                needs.push((name.clone(), "select_storage"));
            }
        }
        let mut changed = false;
        for (name, function) in needs {
            let Some(entry) = self.plugins.get(&name) else {
                continue;
            };
            if entry.exports(function) {
                continue;
            }
            let Some(before) = entry
                .previous
                .clone()
                .filter(|v| v.exports.iter().any(|e| e == function))
            else {
                continue;
            };
            let restored = PluginEntry {
                sha256: Some(before.sha256),
                abi: before.abi,
                exports: before.exports,
                size_bytes: before.size_bytes,
                stamp_ms: entry.stamp_ms + 1,
                origin: entry.origin.clone(),
                previous: None,
            };
            self.plugins.insert(name, restored);
            changed = true;
        }
        changed
    }

    /// Whether `more` new tables fit the cluster's limits: at most
    /// [`TABLES_MAX`] live tables and [`TABLE_NAMES_MAX`] names, dropped
    /// ones included. `Err` says why not.
    pub fn room_for_tables(&self, more: usize) -> Result<(), String> {
        let live = self.tables.len() + more;
        if live > TABLES_MAX || live + self.dropped.len() > TABLE_NAMES_MAX {
            return Err(format!(
                "a cluster holds at most {TABLES_MAX} tables and uses at most {TABLE_NAMES_MAX} \
                 names, dropped ones included (this one has {} tables and {} dropped)",
                self.tables.len(),
                self.dropped.len()
            ));
        }
        Ok(())
    }

    /// The live plugin called `name`.
    pub fn plugin(&self, name: &str) -> Option<&PluginEntry> {
        self.plugins.get(name).filter(|p| p.sha256.is_some())
    }

    /// Member ids in order.
    pub fn member_ids(&self) -> Vec<NodeId> {
        self.members.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::table::TablePatch;

    fn id(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    fn with_table(origin: &str, stamp_ms: u64, r: u8) -> ClusterMeta {
        let mut meta = ClusterMeta::empty();
        let config = TableConfig::apply(
            None,
            &TablePatch {
                r: Some(r),
                ..Default::default()
            },
        )
        .unwrap();
        meta.tables.insert(
            TableName::new("t").unwrap(),
            TableEntry {
                config,
                stamp_ms,
                origin: id(origin),
            },
        );
        meta
    }

    #[test]
    fn concurrent_table_creates_resolve_to_the_same_winner_everywhere() {
        let a = with_table("a", 100, 1);
        let b = with_table("b", 100, 3);
        let mut left = a.clone();
        left.merge(&b);
        let mut right = b.clone();
        right.merge(&a);
        assert_eq!(left, right);
        assert_eq!(left.tables.values().next().unwrap().config.r, 3);
        assert!(!left.merge(&a), "merging again changes nothing");
    }

    #[test]
    fn a_dropped_table_stays_dropped_whatever_order_gossip_arrives_in() {
        let created = with_table("a", 100, 1);
        let mut dropped = created.clone();
        dropped.tables.clear();
        dropped.dropped.insert(
            TableName::new("t").unwrap(),
            DroppedTable {
                stamp_ms: 50,
                origin: id("b"),
            },
        );
        // A newer config of the name (a create racing the drop) loses too.
        let recreated = with_table("c", 200, 2);
        let mut left = created.clone();
        assert!(left.merge(&dropped));
        left.merge(&recreated);
        let mut right = recreated.clone();
        right.merge(&dropped);
        right.merge(&created);
        assert_eq!(left, right);
        assert!(left.tables.is_empty());
        assert_eq!(left.dropped.len(), 1);
        assert!(
            !left.merge(&created),
            "gossip of the old config changes nothing"
        );
    }

    #[test]
    fn the_newer_member_record_and_ring_win() {
        let mut a = ClusterMeta::empty();
        let n = id("n1");
        a.members.insert(
            n.clone(),
            Member {
                http: "h".into(),
                peer: "p".into(),
                epoch: 1,
                stamp: 1,
            },
        );
        a.ring = Some(Ring::single(&n, 8, 3));
        let mut b = a.clone();
        b.members.get_mut(&n).unwrap().stamp = 2;
        b.members.get_mut(&n).unwrap().epoch = 7;
        b.ring = Some(
            a.ring
                .as_ref()
                .unwrap()
                .claim_for(&id("n2"), &[n.clone(), id("n2")]),
        );
        assert!(a.merge(&b));
        assert_eq!(a.members[&n].epoch, 7);
        assert_eq!(a.ring, b.ring);
    }
}
