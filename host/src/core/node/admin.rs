//! Admin operations: tables, plugins, cluster status and joins, answered from
//! (and changing) this node's cluster metadata.

use super::*;
use crate::core::access::{ApiKeyEntry, KEYS_MAX};
use crate::core::meta::{Departure, DroppedTable, PluginEntry, Replacement};
use crate::core::msg::{NodeReport, EXPORT_PAGE_BYTES};
use crate::core::object::Object;

/// Keys one export page examines at most.
pub const EXPORT_PAGE_KEYS_MAX: usize = 1_000;
use crate::core::table::TablePatch;

impl Node {
    /// Answers one admin operation.
    pub(super) fn on_admin(&mut self, op: AdminOp, store: &mut dyn LocalStore) -> AdminReply {
        let changes_cluster = matches!(
            op,
            AdminOp::PutTable(..)
                | AdminOp::DropTable(_)
                | AdminOp::PutPlugin { .. }
                | AdminOp::DeletePlugin(_)
                | AdminOp::CreateKey { .. }
                | AdminOp::RevokeKey(_)
        );
        if changes_cluster && !self.is_member() {
            // A change made before joining would be carried into a cluster
            // that never agreed to it (and could break its rules).
            return AdminReply::Unavailable(format!(
                "this node has not joined a cluster yet (seeds: {}); see GET /cluster",
                self.config.seeds.join(", ")
            ));
        }
        match op {
            AdminOp::PutTable(name, patch) => self.put_table(name, &patch, store),
            AdminOp::DropTable(name) => self.drop_table(name, store),
            AdminOp::PutPlugin {
                name,
                sha256,
                abi,
                exports,
                bytes,
            } => self.put_plugin(name, sha256, abi, exports, &bytes, store),
            AdminOp::GetPlugin(name) => match self.meta.plugin(&name) {
                Some(entry) => AdminReply::Plugin {
                    entry: entry.clone(),
                    name,
                    created: false,
                    spread: None,
                },
                None => AdminReply::NotFound(format!("no plugin {name}")),
            },
            AdminOp::ListPlugins => AdminReply::Plugins(
                self.meta
                    .plugins
                    .iter()
                    .filter(|(_, e)| e.sha256.is_some())
                    .map(|(n, e)| (n.clone(), e.clone()))
                    .collect(),
            ),
            AdminOp::DeletePlugin(name) => self.delete_plugin(name, store),
            AdminOp::GetTable(name) => match self.meta.tables.get(&name) {
                Some(entry) => AdminReply::Table(name, entry.config.clone()),
                None => AdminReply::NotFound(format!("no table {name}")),
            },
            AdminOp::ListTables => AdminReply::Tables(
                self.meta
                    .tables
                    .iter()
                    .map(|(n, e)| (n.clone(), e.config.clone()))
                    .collect(),
            ),
            AdminOp::ClusterStatus => AdminReply::Cluster(Box::new(self.cluster_status())),
            AdminOp::ExportPage {
                table,
                after,
                limit,
            } => self.export_page(&table, after, limit, store),
            AdminOp::Report => AdminReply::Report(Box::new(NodeReport {
                stats: self.stats(),
                sizes: self.sizes(),
                cluster: self.cluster_status(),
            })),
            AdminOp::Preflist(table, key) => {
                let Some(entry) = self.meta.tables.get(&table) else {
                    return AdminReply::NotFound(format!("no table {table}"));
                };
                let primaries = self.primaries_of(&table, &key, entry.config.n);
                // The stand-ins a request would use now, as this node sees its peers.
                let fallbacks = self
                    .replicas_for(&table, &key, &entry.config)
                    .into_iter()
                    .filter(|node| !primaries.contains(node))
                    .collect();
                AdminReply::Preflist {
                    primaries,
                    fallbacks,
                }
            }
            AdminOp::Join(seed) => {
                if self.meta.members.len() > 1 {
                    return AdminReply::Conflict(
                        "this node is already in a cluster with other members".into(),
                    );
                }
                // The node keeps serving its one-node cluster until a seed
                // accepts it: a wrong or silent seed leaves it as it was.
                self.join.begin(seed, self.now.mono_ms);
                self.timers.set(Timer::Join, self.now.mono_ms);
                AdminReply::Accepted("joining")
            }
            AdminOp::CreateKey { id, entry } => self.create_key(id, entry, store),
            AdminOp::ListKeys => AdminReply::Keys(
                self.meta
                    .api_keys
                    .iter()
                    .map(|(id, e)| (id.clone(), e.clone()))
                    .collect(),
            ),
            AdminOp::RevokeKey(id) => self.revoke_key(&id, store),
            AdminOp::Remove { node, force } => self.remove_member(node, force, store),
            AdminOp::Replace { old, new, force } => self.replace_member(old, new, force, store),
        }
    }

    fn put_table(
        &mut self,
        name: TableName,
        patch: &TablePatch,
        store: &mut dyn LocalStore,
    ) -> AdminReply {
        if self.meta.dropped.contains_key(&name) {
            return AdminReply::Conflict(format!(
                "table {name} was dropped; the names of dropped tables are not reused"
            ));
        }
        let existing = self.meta.tables.get(&name).cloned();
        if existing.is_none() {
            if let Err(full) = self.meta.room_for_tables(1) {
                return AdminReply::Invalid(full);
            }
        }
        let config = match TableConfig::apply(existing.as_ref().map(|e| &e.config), patch) {
            Ok(config) => config,
            Err(ConfigError::Invalid(m)) => return AdminReply::Invalid(m),
            Err(ConfigError::Conflict(m)) => return AdminReply::Conflict(m),
        };
        if let Some(plugin) = config
            .storage_plugin
            .as_deref()
            .filter(|_| config.storage == StorageKind::Plugin)
        {
            if !self
                .meta
                .plugin(plugin)
                .is_some_and(|p| p.exports("select_storage"))
            {
                return AdminReply::Invalid(format!(
                    "no uploaded plugin {plugin:?} exports select_storage"
                ));
            }
        }
        if let Some(plugin) = config
            .plugin
            .as_deref()
            .filter(|_| config.merge == MergeMode::Plugin)
        {
            if !self
                .meta
                .plugin(plugin)
                .is_some_and(|p| p.exports("reconcile"))
            {
                return AdminReply::Invalid(format!(
                    "no uploaded plugin {plugin:?} exports reconcile"
                ));
            }
        }
        let stamp_ms = self.now.wall_ms.max(existing.map_or(0, |e| e.stamp_ms + 1));
        let entry = TableEntry {
            config: config.clone(),
            stamp_ms,
            origin: self.config.id.clone(),
        };
        self.meta.tables.insert(name.clone(), entry);
        self.meta_changed(store);
        AdminReply::Table(name, config)
    }

    /// Drops a table for good: a tombstone in cluster metadata that beats
    /// any config of the name, so requests get 404 on every node once it has
    /// spread, and each node collects the table's data in the background.
    /// Dropping a dropped table again is answered as done.
    fn drop_table(&mut self, name: TableName, store: &mut dyn LocalStore) -> AdminReply {
        if self.meta.dropped.contains_key(&name) {
            return AdminReply::Deleted;
        }
        let Some(entry) = self.meta.tables.remove(&name) else {
            return AdminReply::NotFound(format!("no table {name}"));
        };
        let stamp_ms = self.now.wall_ms.max(entry.stamp_ms + 1);
        self.meta.dropped.insert(
            name,
            DroppedTable {
                stamp_ms,
                origin: self.config.id.clone(),
            },
        );
        self.meta_changed(store);
        AdminReply::Deleted
    }

    /// Starts removing `id`: its partitions move to the other members with
    /// their data (from it if it is up, from the other replicas if not),
    /// and it leaves the member list once they have.
    fn remove_member(&mut self, id: NodeId, force: bool, store: &mut dyn LocalStore) -> AdminReply {
        if self.meta.removed.contains_key(&id) {
            return AdminReply::Accepted("leaving");
        }
        if let Some(departure) = self.meta.leaving.get_mut(&id) {
            if force && !departure.drained {
                departure.drained = true;
                self.meta.settle_ring();
                self.meta_changed(store);
            }
            return AdminReply::Accepted("leaving");
        }
        let Some(peer) = self.meta.members.get(&id).map(|m| m.peer.clone()) else {
            return AdminReply::NotFound(format!("no member {id}"));
        };
        if self.meta.staying_members().iter().all(|m| *m == id) {
            return AdminReply::Conflict(format!(
                "{id} is the last member that keeps data; a cluster keeps at least one"
            ));
        }
        let departure = Departure {
            peer,
            stamp_ms: self.now.wall_ms,
            origin: self.config.id.clone(),
            drained: force,
        };
        self.meta.leaving.insert(id, departure);
        self.meta.settle_ring();
        self.meta_changed(store);
        AdminReply::Accepted("leaving")
    }

    /// Records that `new`, once it joins, takes over exactly `old`'s
    /// partitions (the rest of the ring does not move).
    fn replace_member(
        &mut self,
        old: NodeId,
        new: NodeId,
        force: bool,
        store: &mut dyn LocalStore,
    ) -> AdminReply {
        if !self.meta.members.contains_key(&old) || self.meta.leaving.contains_key(&old) {
            return AdminReply::NotFound(format!("no member {old} that is not already leaving"));
        }
        if self.meta.members.contains_key(&new) || self.meta.removed.contains_key(&new) {
            return AdminReply::Conflict(format!(
                "{new} is or was a member; a replacement is a node that has not joined yet"
            ));
        }
        let replacement = Replacement {
            old,
            force,
            stamp_ms: self.now.wall_ms,
            origin: self.config.id.clone(),
        };
        self.meta.replacements.insert(new, replacement);
        self.meta_changed(store);
        AdminReply::Accepted("replacing")
    }

    fn cluster_status(&mut self) -> ClusterStatus {
        let members = self
            .meta
            .members
            .iter()
            .map(|(id, m)| {
                let ring = self.meta.ring.as_ref();
                let partitions = ring.map_or(0, |r| r.owned_by(id));
                let partitions_next = ring.map_or(0, |r| r.future_owned_by(id));
                let status = match self.status_of(id) {
                    Status::Up if self.meta.leaving.contains_key(id) => Status::Leaving,
                    Status::Up if partitions == 0 && partitions_next > 0 => Status::Joining,
                    status => status,
                };
                MemberStatus {
                    id: id.clone(),
                    http: m.http.clone(),
                    peer: m.peer.clone(),
                    status: status.as_str(),
                    partitions,
                    partitions_next,
                }
            })
            .collect::<Vec<_>>();
        let mut members = members;
        if !self.is_member() {
            // Not in the cluster's member list yet, but a member of nothing
            // else either: it shows itself, joining.
            members.push(MemberStatus {
                id: self.config.id.clone(),
                http: self.config.http.clone(),
                peer: self.config.peer.clone(),
                status: Status::Joining.as_str(),
                partitions: 0,
                partitions_next: 0,
            });
        }
        let join = match (self.join.runtime_seed(), self.join.failure()) {
            // Started with --seed and not admitted yet: it keeps asking.
            _ if !self.is_member() => Some(JoinStatus {
                seed: self.config.seeds.join(","),
                failure: None,
            }),
            (Some(seed), _) => Some(JoinStatus {
                seed: seed.clone(),
                failure: None,
            }),
            (None, Some((seed, reason))) => Some(JoinStatus {
                seed: seed.clone(),
                failure: Some(reason.clone()),
            }),
            (None, None) => None,
        };
        ClusterStatus {
            node: self.config.id.clone(),
            members,
            join,
            antientropy: self.antientropy_status(),
            hints: self.hints_status(),
            hints_refused_full: self.hints.refused_full,
            tombstones: self.tombstone_status(),
            ring_move: self.move_status(),
            transfer: self.transfer_status(),
            ring_owners: self
                .meta
                .ring
                .as_ref()
                .map_or_else(Vec::new, |ring| ring.owners().to_vec()),
        }
    }

    /// One page of this node's copies of `table`'s objects, bounded in keys
    /// and bytes so a walk of a large table never holds up the loop long.
    fn export_page(
        &mut self,
        table: &TableName,
        after: Option<Bytes>,
        limit: usize,
        store: &mut dyn LocalStore,
    ) -> AdminReply {
        let Some(entry) = self.meta.tables.get(table) else {
            return AdminReply::NotFound(format!("no table {table}"));
        };
        let storage = entry.config.storage;
        let limit = limit.clamp(1, EXPORT_PAGE_KEYS_MAX);
        let keys = match store.keys_after(table, after.as_deref(), limit) {
            Ok(keys) => keys,
            Err(e) => return AdminReply::Unavailable(e.to_string()),
        };
        let mut next = (keys.len() == limit)
            .then(|| keys.last().cloned())
            .flatten();
        let mut objects = Vec::new();
        let mut bytes = 0;
        for key in keys {
            if bytes >= EXPORT_PAGE_BYTES {
                // The page is full: the walk continues after the last key sent.
                next = objects.last().map(|(key, _): &(Bytes, Object)| key.clone());
                break;
            }
            match store.load(table, storage, &key) {
                Ok(Some(object)) => {
                    bytes += object.live_bytes() + key.len();
                    objects.push((key, object));
                }
                Ok(None) => {}
                Err(e) => return AdminReply::Unavailable(e.to_string()),
            }
        }
        AdminReply::Page { objects, next }
    }

    /// The tables that use plugin `name`, with the function each needs.
    fn tables_using(&self, name: &str) -> Vec<(TableName, &'static str)> {
        let mut users = Vec::new();
        for (table, entry) in &self.meta.tables {
            if entry.config.merge == MergeMode::Plugin
                && entry.config.plugin.as_deref() == Some(name)
            {
                users.push((table.clone(), "reconcile"));
            }
            if entry.config.storage == StorageKind::Plugin
                && entry.config.storage_plugin.as_deref() == Some(name)
            {
                users.push((table.clone(), "select_storage"));
            }
        }
        users
    }

    fn put_plugin(
        &mut self,
        name: String,
        sha256: String,
        abi: u32,
        exports: Vec<String>,
        bytes: &[u8],
        store: &mut dyn LocalStore,
    ) -> AdminReply {
        for (table, function) in self.tables_using(&name) {
            if !exports.iter().any(|e| e == function) {
                return AdminReply::Conflict(format!("table {table} uses {function} of plugin {name}, which this module does not export"));
            }
        }
        if let Err(e) = store.stage_module(&sha256, bytes) {
            return AdminReply::Unavailable(e.to_string());
        }
        self.modules.hold(&sha256);
        let existing = self.meta.plugins.get(&name);
        let created = existing.is_none_or(|e| e.sha256.is_none());
        let stamp_ms = self.now.wall_ms.max(existing.map_or(0, |e| e.stamp_ms + 1));
        let previous = existing.and_then(|e| e.live_version().or_else(|| e.previous.clone()));
        let entry = PluginEntry {
            sha256: Some(sha256),
            abi,
            exports,
            size_bytes: bytes.len() as u64,
            stamp_ms,
            origin: self.config.id.clone(),
            previous,
        };
        self.meta.plugins.insert(name.clone(), entry.clone());
        self.meta_changed(store);
        AdminReply::Plugin {
            name,
            entry,
            created,
            spread: None,
        }
    }

    /// Adds a key to the cluster's; it spreads with the metadata.
    fn create_key(
        &mut self,
        id: String,
        mut entry: ApiKeyEntry,
        store: &mut dyn LocalStore,
    ) -> AdminReply {
        if self.meta.api_keys.contains_key(&id) {
            return AdminReply::Conflict(format!("key {id} exists"));
        }
        if self.meta.api_keys.len() >= KEYS_MAX {
            return AdminReply::Conflict(format!(
                "the cluster holds {KEYS_MAX} keys (revoked ones included), the most it may"
            ));
        }
        entry.created_ms = self.now.wall_ms;
        entry.origin = self.config.id.clone();
        entry.revoked_ms = None;
        self.meta.api_keys.insert(id.clone(), entry.clone());
        self.meta_changed(store);
        AdminReply::KeyCreated(id, entry)
    }

    /// Revokes a key: a tombstone that beats the key on every node it
    /// reaches. Revoking a revoked key again is answered as done.
    fn revoke_key(&mut self, id: &str, store: &mut dyn LocalStore) -> AdminReply {
        let Some(entry) = self.meta.api_keys.get_mut(id) else {
            return AdminReply::NotFound(format!("no key {id}"));
        };
        if entry.revoked_ms.is_none() {
            entry.revoked_ms = Some(self.now.wall_ms.max(entry.created_ms));
            self.meta_changed(store);
        }
        AdminReply::Deleted
    }

    fn delete_plugin(&mut self, name: String, store: &mut dyn LocalStore) -> AdminReply {
        let Some(existing) = self.meta.plugin(&name).cloned() else {
            return AdminReply::NotFound(format!("no plugin {name}"));
        };
        if let Some((table, _)) = self.tables_using(&name).first() {
            return AdminReply::Conflict(format!("table {table} uses plugin {name}"));
        }
        let tombstone = PluginEntry {
            sha256: None,
            stamp_ms: self.now.wall_ms.max(existing.stamp_ms + 1),
            origin: self.config.id.clone(),
            previous: existing.live_version(),
            ..existing
        };
        self.meta.plugins.insert(name, tombstone);
        self.meta_changed(store);
        AdminReply::Deleted
    }
}
