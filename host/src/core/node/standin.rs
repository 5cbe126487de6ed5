//! Coordinating as a stand-in: when none of a key's primaries is reachable
//! from the node a client asked, one of the first n reachable nodes of the
//! key's preference list (the stand-ins; the asked node forwards to one
//! unless it is one) coordinates a write over them, each keeping it as a
//! hint for the primary it stands in for, so a sloppy table stays writable
//! while any W nodes are reachable; and a read, counting hints only.
//!
//! Such a node holds no copy of the key it could mint from, and may have
//! minted dots for it before (as a stand-in, handed off since). So it mints
//! under an actor of its own for this, a stand-in epoch made durable before
//! use, with a counter per key kept in memory: no dot is minted twice, a
//! key's stand-in dots are consecutive, and the node's own per-key counters
//! (and the gaps it marks seen past its mint floor) never mix with these. A
//! node that minted any takes a fresh epoch at its next start, as after a
//! crash.

use std::collections::HashMap;

use super::*;
use crate::core::coord::targets::owner_of;
use crate::core::limits::STAND_IN_KEYS_MAX;

/// The actor a node mints under as a stand-in coordinator: its epoch, and
/// the last counter it minted for each key under it.
#[derive(Debug)]
pub(super) struct StandInActor {
    epoch: u64,
    counters: HashMap<(TableName, Bytes), u64>,
}

impl StandInActor {
    /// The stand-in epoch.
    pub(super) fn epoch(&self) -> u64 {
        self.epoch
    }
}

impl Node {
    /// Whether this node coordinates `op` itself as a stand-in rather than
    /// forwarding it: a write needing no read first (a value, or a delete
    /// with a context), or a read of a table whose reads write nothing back
    /// (not `merge: plugin`), on a sloppy table not placed by a storage
    /// plugin, with no primary of the key up as this node sees it.
    pub(super) fn stands_in_to_coordinate(
        &self,
        op: &ClientOp,
        config: &TableConfig,
        primaries: &[NodeId],
    ) -> bool {
        let plain = match op {
            ClientOp::Put { value: Some(_), .. } => true,
            ClientOp::Put { context, .. } => context.is_some(),
            ClientOp::Get { .. } => config.merge != MergeMode::Plugin,
            // A restore goes to the key's primaries; none up, it fails and
            // is retried.
            ClientOp::Restore { .. } => false,
        };
        plain
            && config.sloppy
            && config.storage != StorageKind::Plugin
            && !primaries
                .iter()
                .any(|p| *p != self.config.id && self.status_of(p) == Status::Up)
    }

    /// The epoch this node mints under as a stand-in coordinator, once it
    /// did: never its own epoch, and below the one it takes at its next start.
    pub fn stand_in_epoch(&self) -> Option<u64> {
        self.stand_in_actor.as_ref().map(StandInActor::epoch)
    }

    /// Whether this node minted under a stand-in actor since it started.
    pub(super) fn minted_as_stand_in(&self) -> bool {
        self.stand_in_actor.is_some()
    }

    /// The next dot of this node's stand-in actor for `key` (recorded by
    /// [`Node::stand_in_minted`] once used): one past the last it used for
    /// that key under the stand-in epoch, so a key's
    /// stand-in dots are consecutive and fold into one vector entry of its
    /// clock. A fresh stand-in epoch (durable before use) starts when there
    /// is none, or when it remembers [`STAND_IN_KEYS_MAX`] keys already.
    fn mint_as_stand_in(
        &mut self,
        slot: (TableName, Bytes),
        store: &mut dyn LocalStore,
    ) -> Result<Dot, String> {
        let full = self.stand_in_actor.as_ref().is_some_and(|actor| {
            actor.counters.len() >= STAND_IN_KEYS_MAX && !actor.counters.contains_key(&slot)
        });
        let exhausted = self
            .stand_in_actor
            .as_ref()
            .and_then(|actor| actor.counters.get(&slot))
            .is_some_and(|&c| c == u64::MAX);
        if self.stand_in_actor.is_none() || full || exhausted {
            let floor = self
                .epoch
                .max(self.stand_in_actor.as_ref().map_or(0, |a| a.epoch));
            let epoch = fresh_epoch(floor, self.now, &mut self.rng).map_err(|e| e.to_string())?;
            store.persist_epoch_now(epoch).map_err(|e| e.to_string())?;
            self.stand_in_actor = Some(StandInActor {
                epoch,
                counters: HashMap::new(),
            });
        }
        let actor = self
            .stand_in_actor
            .as_ref()
            .ok_or_else(|| "no stand-in epoch".to_owned())?;
        let counter = actor.counters.get(&slot).copied().unwrap_or(0) + 1;
        Ok(Dot {
            actor: Actor {
                node: self.config.id.clone(),
                epoch: actor.epoch,
            },
            counter,
        })
    }

    /// `dot` (from [`Node::mint_as_stand_in`]) is used: staged here. A dot
    /// never used (the write refused before anything kept it) is minted
    /// again, so a key's stand-in dots stay without gaps.
    fn stand_in_minted(&mut self, slot: (TableName, Bytes), dot: &Dot) {
        if let Some(actor) = self.stand_in_actor.as_mut() {
            if actor.epoch == dot.actor.epoch {
                actor.counters.insert(slot, dot.counter);
            }
        }
    }

    /// Coordinates a client write none of whose primaries is reachable:
    /// mints under the stand-in actor, keeps it as a hint here when this
    /// node is among the first n reachable nodes, and sends it to the
    /// others, each a stand-in for one primary; W counts their durable acks.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn coordinate_as_stand_in(
        &mut self,
        origin: Origin,
        op: ClientOp,
        config: &TableConfig,
        w: u8,
        primaries: &[NodeId],
        deadline_ms: u64,
        store: &mut dyn LocalStore,
    ) {
        let (table, key, value, content_type, context) = match op {
            ClientOp::Put {
                table,
                key,
                value,
                content_type,
                context,
                ..
            } => (table, key, value, content_type, context),
            ClientOp::Restore { .. } => {
                let reason = "no primary of the key is reachable to restore it";
                return self.reply(origin, ClientReply::Unavailable(reason.into()));
            }
            ClientOp::Get { table, key, .. } => {
                let read = (table, key);
                return self.read_as_stand_in(
                    origin,
                    read,
                    config,
                    w,
                    primaries,
                    deadline_ms,
                    store,
                );
            }
        };
        let targets = self.replicas_for(&table, &key, config);
        if targets.len() < usize::from(w) {
            let needed = w;
            return self.reply(origin, ClientReply::QuorumNotReached { needed, acked: 0 });
        }
        let context = context.unwrap_or_default();
        let me = self.config.id.clone();
        // Only a node that keeps the write itself coordinates it (`on_client`
        // forwards otherwise): its hint is the copy the limits are checked on.
        let Some(owner) = owner_of(&me, primaries, &targets).cloned() else {
            let reason = "this node is not among the key's stand-ins".to_owned();
            return self.reply(origin, ClientReply::Unavailable(reason));
        };
        let local = match self.read_hint(&owner, &table, &key, store).0 {
            Ok(found) => found.unwrap_or_default(),
            Err(e) => return self.reply(origin, unavailable(e)),
        };
        let dot = match self.mint_as_stand_in((table.clone(), key.clone()), store) {
            Ok(dot) => dot,
            Err(e) => return self.reply(origin, ClientReply::Unavailable(e)),
        };
        let ancestors = local
            .max_timestamp_covered(&context.seen)
            .max(context.max_timestamp_ms);
        let timestamp_ms = self.now.wall_ms.max(ancestors.saturating_add(1));
        let content_type = if value.is_some() && content_type.is_empty() {
            "application/octet-stream".to_owned()
        } else {
            content_type
        };
        let version = Version {
            dot: dot.clone(),
            timestamp_ms,
            value,
            content_type,
        };
        let mut object = local;
        object.apply_write(&context.seen, version, config.merge);
        let live = object.live_count();
        if live > SIBLINGS_MAX || object.live_bytes() > OBJECT_LIVE_BYTES_MAX {
            return self.reply(origin, ClientReply::TooManySiblings { siblings: live });
        }
        if let Err(e) = self.store_hint(&owner, &table, &key, &object, store) {
            return self.reply(origin, unavailable(e));
        }
        self.stand_in_minted((table.clone(), key.clone()), &dot);
        self.stats.handoff.hints_stored += 1;
        let context_out = ClientContext::of_new_version(dot, timestamp_ms);
        let request = self.next_id();
        let slot = (table.clone(), key.clone());
        let fsm = PutFsm::new(origin, slot, w, targets.clone(), context_out, deadline_ms);
        self.outbox.local_copy_staged(request);
        self.stats.client.coordinated_as_stand_in += 1;
        self.send_to_other_replicas(&table, &key, &targets, |hint_for| {
            Message::Replica(ReplicaMessage::Write {
                request,
                table: table.clone(),
                key: key.clone(),
                object: object.clone(),
                engine: None,
                hint_for,
            })
        });
        self.pending.insert(request, Pending::Put(fsm, None));
        self.progress_put(request);
    }
}

impl Node {
    /// Coordinates a read none of whose primaries is reachable, over the
    /// first n reachable nodes (all stand-ins): only hints count toward R,
    /// this node's own included (a stand-in's "not found" knows nothing),
    /// and nothing is repaired (read repair goes to primaries only).
    #[allow(clippy::too_many_arguments)]
    fn read_as_stand_in(
        &mut self,
        origin: Origin,
        (table, key): (TableName, Bytes),
        config: &TableConfig,
        r: u8,
        primaries: &[NodeId],
        deadline_ms: u64,
        store: &mut dyn LocalStore,
    ) {
        let targets = self.replicas_for(&table, &key, config);
        if targets.len() < usize::from(r) {
            return self.reply(
                origin,
                ClientReply::QuorumNotReached {
                    needed: r,
                    acked: 0,
                },
            );
        }
        let me = self.config.id.clone();
        let mut fsm = GetFsm::new(
            origin,
            table.clone(),
            key.clone(),
            config.clone(),
            r,
            targets.clone(),
            deadline_ms,
            None,
        );
        if let Some(owner) = owner_of(&me, primaries, &targets).cloned() {
            let (found, release) = self.read_hint(&owner, &table, &key, store);
            fsm.local_batch = match release {
                Release::Now => None,
                Release::AfterBatch(batch) => Some(batch),
            };
            let outcome = match found {
                Ok(None) => Err(ReplicaError::Storage(
                    "a stand-in without a hint for the key".into(),
                )),
                other => other,
            };
            fsm.record(&me, outcome);
        }
        let request = self.next_id();
        self.stats.client.coordinated_as_stand_in += 1;
        self.send_to_other_replicas(&table, &key, &targets, |hint_for| {
            Message::Replica(ReplicaMessage::Read {
                request,
                table: table.clone(),
                key: key.clone(),
                hint_for,
            })
        });
        self.pending.insert(request, Pending::Get(Box::new(fsm)));
        self.progress_get(request, store);
    }
}

/// A client's answer for a stand-in's own store failing.
fn unavailable(error: ReplicaError) -> ClientReply {
    ClientReply::Unavailable(match error {
        ReplicaError::UnknownTable => "the table is not known here yet".to_owned(),
        ReplicaError::Storage(reason) => reason,
    })
}
