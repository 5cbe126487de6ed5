//! Membership: this node's own record, joins it asks for and admits, and
//! gossip of the cluster's metadata. The view of who is alive lives in
//! `core/members.rs`; this file carries out what it and the metadata decide.

use super::*;
use crate::core::limits::PING_FANOUT;
use crate::core::meta::Departure;

impl Node {
    /// Membership messages: liveness probes, gossip and joins.
    pub(super) fn on_member(
        &mut self,
        from: NodeId,
        message: MemberMessage,
        store: &mut dyn LocalStore,
    ) {
        match message {
            MemberMessage::Pong => {}
            MemberMessage::Ping => {
                if let Some(addr) = self.addr_of(&from) {
                    self.emit(Output::Send {
                        addr,
                        message: Message::Member(MemberMessage::Pong),
                    });
                } else if let Some(addr) = self.meta.removed.get(&from).map(|d| d.peer.clone()) {
                    // A removed node that has not heard of its removal
                    // learns it from the cluster's metadata, and stops.
                    self.emit(Output::Send {
                        addr,
                        message: Message::Member(MemberMessage::Gossip(Box::new(
                            self.meta.clone(),
                        ))),
                    });
                }
            }
            MemberMessage::Gossip(meta) => self.take_gossip(&meta, store),
            MemberMessage::Digest(theirs) => {
                if !self.takes_gossip() {
                    return;
                }
                let (Some(delta), Some(addr)) =
                    (self.meta.differing_from(&theirs), self.addr_of(&from))
                else {
                    return;
                };
                self.stats.gossip.deltas_sent += 1;
                self.emit(Output::Send {
                    addr,
                    message: Message::Member(MemberMessage::Delta {
                        meta: Box::new(delta),
                        digest: Some(self.meta.digest()),
                    }),
                });
            }
            MemberMessage::Delta { meta, digest } => {
                self.take_gossip(&meta, store);
                // What the peer lacks goes back (once: the answer carries no digest).
                let back = digest.and_then(|theirs| self.meta.differing_from(&theirs));
                if let (Some(back), Some(addr)) = (back, self.addr_of(&from)) {
                    if self.takes_gossip() {
                        self.stats.gossip.deltas_sent += 1;
                        self.emit(Output::Send {
                            addr,
                            message: Message::Member(MemberMessage::Delta {
                                meta: Box::new(back),
                                digest: None,
                            }),
                        });
                    }
                }
            }
            MemberMessage::JoinRequest {
                member,
                fresh,
                tables,
            } => self.on_join_request(from, member, fresh, &tables, store),
            MemberMessage::JoinAccepted(meta) => self.on_join_accepted(*meta, store),
            MemberMessage::JoinRefused { reason } => {
                // A runtime join fails and the node goes on serving as before.
                let runtime = self
                    .join
                    .fail(|_| format!("the seed refused the join: {reason}"));
                if !runtime && !self.is_member() {
                    self.emit(Output::Fatal(format!(
                        "the seed refused the join: {reason}"
                    )));
                }
            }
        }
    }

    /// Whether gossip is merged here: a node joining another cluster takes
    /// that cluster's state whole from its acceptance, never piecemeal.
    fn takes_gossip(&self) -> bool {
        self.is_member() && !self.join.is_under_way()
    }

    /// Merges a peer's metadata (whole, or the sections of a delta).
    fn take_gossip(&mut self, meta: &ClusterMeta, store: &mut dyn LocalStore) {
        if self.takes_gossip() && self.meta.merge(meta) {
            let _ = store.stage_meta(&self.meta);
            self.defend_own_record(store);
        }
    }

    /// One gossip round: the digest to one random member, and now and then
    /// (one round in four) to a seed, so a node whose view lost track of
    /// others learns them from a seed (which answers members only), not
    /// only from the peers it still knows.
    pub(super) fn gossip_round(&mut self, random: u64) {
        let digest = Message::Member(MemberMessage::Digest(self.meta.digest()));
        let addrs = self.peer_addrs();
        if !addrs.is_empty() {
            let addr = addrs[(random % addrs.len() as u64) as usize].clone();
            self.stats.gossip.rounds += 1;
            self.emit(Output::Send {
                addr,
                message: digest.clone(),
            });
        }
        let seeds = &self.config.seeds;
        if !seeds.is_empty() && (random >> 32).is_multiple_of(4) {
            let seed = seeds[((random >> 34) % seeds.len() as u64) as usize].clone();
            if seed != self.config.peer {
                self.emit(Output::Send {
                    addr: seed,
                    message: digest,
                });
            }
        }
    }

    /// Pings up to [`PING_FANOUT`] other members, in turn, and up to as
    /// many that count as down out of turn (a single failed call marks a
    /// member down until it is heard from: it must not wait a whole cycle).
    pub(super) fn ping_round(&mut self) {
        let addrs = self.peer_addrs();
        self.liveness.set_peer_count(addrs.len());
        let count = addrs.len().min(PING_FANOUT);
        let mut targets: Vec<String> = (0..count)
            .map(|i| addrs[(self.ping_cursor + i) % addrs.len()].clone())
            .collect();
        if addrs.len() > PING_FANOUT {
            let down: Vec<String> = self
                .other_members()
                .iter()
                .filter(|id| self.status_of(id) == Status::Down)
                .filter_map(|id| self.addr_of(id))
                .filter(|addr| !targets.contains(addr))
                .take(PING_FANOUT)
                .collect();
            targets.extend(down);
        }
        for addr in targets {
            self.emit(Output::Send {
                addr,
                message: Message::Member(MemberMessage::Ping),
            });
        }
        self.ping_cursor = if addrs.is_empty() {
            0
        } else {
            (self.ping_cursor + count) % addrs.len()
        };
    }

    /// Every member but this node.
    pub(super) fn other_members(&self) -> Vec<NodeId> {
        self.meta
            .members
            .keys()
            .filter(|id| **id != self.config.id)
            .cloned()
            .collect()
    }

    pub(super) fn peer_addrs(&self) -> Vec<String> {
        self.meta
            .members
            .iter()
            .filter(|(id, _)| **id != self.config.id)
            .map(|(_, m)| m.peer.clone())
            .collect()
    }

    pub(super) fn own_record(&self, stamp: u64) -> Member {
        Member {
            http: self.config.http.clone(),
            peer: self.config.peer.clone(),
            epoch: self.epoch,
            stamp,
        }
    }

    /// Gossip brought a record of this node's id that this process did not
    /// announce (another process started with the id and a copy of its data
    /// dir, at other addresses): the node announces its own addresses again
    /// with a larger stamp, so peers do not keep sending to an address that
    /// is not this node's once the other process is gone, and moves above an
    /// epoch the other process may have used, so their dots never collide.
    pub(super) fn defend_own_record(&mut self, store: &mut dyn LocalStore) {
        let Some(record) = self.meta.members.get(&self.config.id) else {
            return;
        };
        let foreign = record.http != self.config.http || record.peer != self.config.peer;
        if !foreign && record.epoch <= self.epoch {
            return;
        }
        if record.epoch > self.epoch {
            if let Err(e) = self.take_fresh_epoch(record.epoch, store) {
                self.emit(Output::Fatal(format!("cannot take a new epoch: {e}")));
                return;
            }
        }
        self.refresh_own_record(store);
    }

    /// Announces this node's addresses and epoch when they differ from the record.
    pub(super) fn refresh_own_record(&mut self, store: &mut dyn LocalStore) {
        if self.meta.removed.contains_key(&self.config.id) {
            // Removed for good: it announces nothing any more.
            return;
        }
        let current = self.meta.members.get(&self.config.id).cloned();
        let stale = match &current {
            Some(m) => {
                m.http != self.config.http || m.peer != self.config.peer || m.epoch != self.epoch
            }
            None => true,
        };
        if stale {
            let stamp = current.map_or(1, |m| m.stamp + 1);
            self.meta
                .members
                .insert(self.config.id.clone(), self.own_record(stamp));
            self.meta_changed(store);
        }
    }

    pub(super) fn ask_to_join(&mut self) {
        let Some(addr) = self.join.next_seed(&self.config.seeds) else {
            return;
        };
        let member = self.own_record(1);
        self.emit(Output::Send {
            addr,
            message: Message::Member(MemberMessage::JoinRequest {
                member,
                fresh: self.fresh_data_dir,
                tables: self.meta.tables.keys().cloned().collect(),
            }),
        });
    }

    pub(super) fn claim_if_empty(&mut self, store: &mut dyn LocalStore) {
        let Some(ring) = &self.meta.ring else { return };
        if ring.future_owned_by(&self.config.id) > 0 || self.meta.members.len() > ring.partitions()
        {
            return;
        }
        if self.meta.leaving.contains_key(&self.config.id) {
            return;
        }
        let claimed = ring.plan_join(&self.config.id, &self.meta.staying_members());
        self.meta.ring = Some(claimed);
        self.meta.settle_ring();
        self.meta_changed(store);
    }

    pub(super) fn meta_changed(&mut self, store: &mut dyn LocalStore) {
        // A failed stage shows up as a failed commit in the driver; gossip still spreads it.
        let _ = store.stage_meta(&self.meta);
        let gossip = Message::Member(MemberMessage::Gossip(Box::new(self.meta.clone())));
        for addr in self.peer_addrs() {
            self.emit(Output::Send {
                addr,
                message: gossip.clone(),
            });
        }
    }

    pub(super) fn status_of(&self, node: &NodeId) -> Status {
        if *node == self.config.id {
            return Status::Up;
        }
        self.liveness.status(node, self.now.mono_ms)
    }

    pub(super) fn on_join_request(
        &mut self,
        from: NodeId,
        member: Member,
        fresh: bool,
        tables: &[TableName],
        store: &mut dyn LocalStore,
    ) {
        let reply_to = member.peer.clone();
        let refuse = |reason: String| Output::Send {
            addr: reply_to.clone(),
            message: Message::Member(MemberMessage::JoinRefused { reason }),
        };
        let Some(ring) = self.meta.ring.clone() else {
            self.emit(refuse("the seed has not joined a cluster itself".into()));
            return;
        };
        if self.meta.removed.contains_key(&from) {
            self.emit(refuse(format!(
                "node {from} was removed from this cluster; a node joins again under a new id"
            )));
            return;
        }
        // The joiner's tables the cluster lacks would join too: refused
        // beyond the limits, so none is left behind on the joiner unserved.
        let brought = tables
            .iter()
            .filter(|t| !self.meta.tables.contains_key(*t) && !self.meta.dropped.contains_key(*t))
            .count();
        if let Err(full) = self.meta.room_for_tables(brought) {
            self.emit(refuse(format!(
                "joining would bring {brought} tables: {full}; drop tables on the joining node first"
            )));
            return;
        }
        if let Some(known) = self.meta.members.get(&from).cloned() {
            let heard = self.liveness.last_heard(&from);
            // Quiet for as long as a member must be to count as down (a
            // large cluster pings each member less often).
            let quiet_ms = REJOIN_QUIET_MS.max(self.liveness.down_after_ms());
            if fresh
                && from != self.config.id
                && heard.is_some_and(|t| self.now.mono_ms.saturating_sub(t) < quiet_ms)
            {
                self.emit(refuse(format!(
                    "node id {from} is already a member and answered within the last {} s",
                    quiet_ms / 1000
                )));
                return;
            }
            let record = Member {
                epoch: member.epoch.max(known.epoch),
                stamp: known.stamp + 1,
                ..member
            };
            self.meta.members.insert(from.clone(), record);
            if fresh && from != self.config.id {
                self.peer_lost_disk(&from);
            }
        } else {
            if self.meta.members.len() >= ring.partitions() {
                self.emit(refuse(
                    "the cluster has as many members as partitions".into(),
                ));
                return;
            }
            self.meta.members.insert(from.clone(), member);
            // The joiner's share moves once its data has (see `transfer.rs`):
            // exactly the old member's partitions for a replacement, else
            // about 1/m of the ring.
            let replaces = self
                .meta
                .replacements
                .get(&from)
                .map(|r| (r.old.clone(), r.force))
                .filter(|(old, _)| {
                    self.meta.members.contains_key(old) && !self.meta.leaving.contains_key(old)
                });
            let planned = match &replaces {
                Some((old, force)) => {
                    // A forced replacement does not wait for the old member
                    // to hand over what it holds (it is dead for good).
                    let departure = Departure {
                        peer: self.addr_of(old).unwrap_or_default(),
                        stamp_ms: self.now.wall_ms,
                        origin: self.config.id.clone(),
                        drained: *force,
                    };
                    self.meta.leaving.insert(old.clone(), departure);
                    ring.plan_replacement(old, &from)
                }
                None => ring.plan_join(&from, &self.meta.staying_members()),
            };
            self.meta.ring = Some(planned);
            self.meta.settle_ring();
        }
        self.meta_changed(store);
        self.emit(Output::Send {
            addr: reply_to,
            message: Message::Member(MemberMessage::JoinAccepted(Box::new(self.meta.clone()))),
        });
    }

    pub(super) fn on_join_accepted(&mut self, meta: ClusterMeta, store: &mut dyn LocalStore) {
        if !meta.ring.as_ref().is_some_and(Ring::is_valid) {
            return;
        }
        // Only a join this node asked for: a member is never moved into
        // another cluster by a message it did not ask for.
        if self.is_member() && !self.join.is_under_way() {
            return;
        }
        let mut adopted = meta;
        // The cluster's definition of a table wins: a joiner's own config of
        // the same name (another n, another engine) never replaces it, nor
        // brings back a table the cluster dropped. The joiner's other tables
        // join too while the cluster's table limits allow (in name order);
        // the rest stay behind, unserved.
        // Its own drops come along where the cluster does not use the name,
        // so its data there is still collected and the name stays taken.
        for (name, dropped) in std::mem::take(&mut self.meta.dropped) {
            if !adopted.tables.contains_key(&name) {
                adopted.dropped.entry(name).or_insert(dropped);
            }
        }
        for (name, entry) in std::mem::take(&mut self.meta.tables) {
            if adopted.tables.contains_key(&name)
                || adopted.dropped.contains_key(&name)
                || adopted.room_for_tables(1).is_err()
            {
                continue;
            }
            adopted.tables.insert(name, entry);
        }
        if let Some(record) = adopted.members.get(&self.config.id) {
            self.resumed_membership = self.fresh_data_dir;
            if record.epoch >= self.epoch {
                let persisted = fresh_epoch(record.epoch, self.now, &mut self.rng)
                    .map_err(|e| e.to_string())
                    .and_then(|epoch| {
                        store
                            .persist_epoch_now(epoch)
                            .map(|()| epoch)
                            .map_err(|e| e.to_string())
                    });
                match persisted {
                    Ok(epoch) => self.epoch = epoch,
                    Err(e) => {
                        self.emit(Output::Fatal(format!("cannot take a new epoch: {e}")));
                        return;
                    }
                }
            }
        }
        adopted.keep_plugins_tables_use();
        self.meta = adopted;
        self.join.finish();
        self.refresh_own_record(store);
        self.meta_changed(store);
    }
}
