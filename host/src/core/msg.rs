//! Messages: what clients ask a node ([`ClientOp`]), what it answers
//! ([`ClientReply`]), and what nodes say to each other ([`Message`]).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::access::ApiKeyEntry;
use super::meta::{ClusterMeta, Member, MetaDigest, PluginEntry};
use super::object::{Object, Version};
use super::stats::AntiEntropyStats;
use super::table::{MergeMode, StorageKind, TableConfig, TablePatch};
use super::token::ClientContext;
use super::types::{NodeId, TableName};

/// A client's key operation, as the HTTP layer parsed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientOp {
    /// Read a key with an optional read quorum override.
    Get {
        /// Table.
        table: TableName,
        /// Key bytes.
        key: Bytes,
        /// `?r=`.
        r: Option<u8>,
    },
    /// Write a value, or a tombstone when `value` is `None` (DELETE).
    Put {
        /// Table.
        table: TableName,
        /// Key bytes.
        key: Bytes,
        /// The body, or `None` for a delete.
        value: Option<Bytes>,
        /// The body's media type.
        content_type: String,
        /// What this write supersedes; `None` means concurrent with everything
        /// (for a delete: whatever an R-quorum read sees).
        context: Option<ClientContext>,
        /// `?w=`.
        w: Option<u8>,
    },
    /// Merge a whole object — a backup's copy, with every version and the
    /// causal history it had — into the key's replicas, W of them durably
    /// (`cairn restore`). Nothing is minted: siblings stay siblings, and a
    /// copy the replicas already cover changes nothing.
    Restore {
        /// Table.
        table: TableName,
        /// Key bytes.
        key: Bytes,
        /// The object to merge in.
        object: Object,
        /// `?w=`.
        w: Option<u8>,
    },
}

impl ClientOp {
    /// The table the operation names.
    pub fn table(&self) -> &TableName {
        match self {
            ClientOp::Get { table, .. }
            | ClientOp::Put { table, .. }
            | ClientOp::Restore { table, .. } => table,
        }
    }

    /// The key the operation names.
    pub fn key(&self) -> &Bytes {
        match self {
            ClientOp::Get { key, .. }
            | ClientOp::Put { key, .. }
            | ClientOp::Restore { key, .. } => key,
        }
    }
}

/// Why a plugin call gave no answer. No failure changes stored data: a
/// merge that fails answers the siblings as they are, a storage choice that
/// fails puts the object in LMDB. `Display` is what clients see in
/// `X-Cairn-Plugin-Error` (see [`PluginFailure::header_value`]): the kind,
/// then the detail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum PluginFailure {
    /// The plugin trapped (a panic, unreachable, out-of-bounds access, stack overflow).
    #[error("trap: {0}")]
    Trap(String),
    /// It ran out of fuel or time.
    #[error("fuel: {0}")]
    Fuel(String),
    /// It needed more memory than allowed.
    #[error("memory: {0}")]
    Memory(String),
    /// Its answer was out of bounds, too large or undecodable.
    #[error("output: {0}")]
    Output(String),
    /// No call could be made: the module is not on this node (yet), it did
    /// not compile here, the pool is full, or the call did not finish in time.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl PluginFailure {
    /// `X-Cairn-Plugin-Error`: the kind, then at most 200 printable ASCII
    /// characters of detail (a plugin's own text must not break the header).
    pub fn header_value(&self) -> String {
        let text = self.to_string();
        let (kind, detail) = text.split_once(": ").unwrap_or((&text, ""));
        let detail: String = detail
            .chars()
            .filter(|c| c.is_ascii_graphic() || *c == ' ')
            .take(200)
            .collect();
        if detail.is_empty() {
            kind.to_owned()
        } else {
            format!("{kind}: {detail}")
        }
    }
}

/// The outcome of a client key operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientReply {
    /// A read: the live versions sorted by (timestamp_ms, dot), and the context
    /// covering everything the read saw (`None` when nothing exists at all).
    Read {
        /// Live versions.
        versions: Vec<Version>,
        /// What a write should carry to supersede them.
        context: Option<ClientContext>,
        /// The table's mode, which decides 200 or 300.
        merge: MergeMode,
        /// How many versions a plugin merged into the one returned (`X-Cairn-Merged`).
        merged: Option<u32>,
        /// Why the plugin could not merge (`X-Cairn-Plugin-Error`).
        plugin_error: Option<PluginFailure>,
    },
    /// A durable write: the context names the new version, whose clock covers
    /// everything the request's context covered.
    Written {
        /// The returned context.
        context: ClientContext,
    },
    /// Fewer replicas than the quorum answered in time (503).
    QuorumNotReached {
        /// R or W.
        needed: u8,
        /// Good answers received.
        acked: u8,
    },
    /// The table does not exist (404).
    UnknownTable,
    /// A write would leave too many live versions or bytes (409).
    TooManySiblings {
        /// Live versions the key would hold.
        siblings: usize,
    },
    /// Too much work in flight (503 with Retry-After).
    Overloaded,
    /// The request is wrong (400).
    BadRequest(String),
    /// This node cannot serve (it has not joined a cluster yet, storage failed): 503.
    Unavailable(String),
    /// The coordinator's disk is below its free-space reserve: 507, and the
    /// write was not staged anywhere.
    InsufficientStorage(String),
}

/// Cluster and table administration, answered by the node's own metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminOp {
    /// `PUT /tables/{t}`.
    PutTable(TableName, TablePatch),
    /// `GET /tables/{t}`.
    GetTable(TableName),
    /// `DELETE /tables/{t}`: permanent.
    DropTable(TableName),
    /// `GET /tables`.
    ListTables,
    /// `GET /cluster`.
    ClusterStatus,
    /// `GET /tables/{t}/preflist/{key}`.
    Preflist(TableName, Bytes),
    /// `POST /cluster/join`.
    Join(String),
    /// `POST /cluster/remove`: the member's partitions move to the others
    /// with their data, then it hands over what it still holds and leaves.
    Remove {
        /// The member.
        node: NodeId,
        /// Do not wait for it to hand over its copies and hints (it is dead
        /// for good: what only it held is lost with it).
        force: bool,
    },
    /// `POST /cluster/replace`: a node not yet a member takes over exactly
    /// the old member's partitions when it joins.
    Replace {
        /// The member replaced.
        old: NodeId,
        /// The node replacing it.
        new: NodeId,
        /// The old member is dead: do not wait for it to hand over.
        force: bool,
    },
    /// `PUT /plugins/{name}`, after the module was validated and compiled.
    PutPlugin {
        /// Plugin name.
        name: String,
        /// sha256 of the bytes.
        sha256: String,
        /// ABI version.
        abi: u32,
        /// Plugin functions exported.
        exports: Vec<String>,
        /// The module.
        bytes: Bytes,
    },
    /// `GET /plugins/{name}`.
    GetPlugin(String),
    /// `GET /plugins`.
    ListPlugins,
    /// `DELETE /plugins/{name}`.
    DeletePlugin(String),
    /// `POST /keys`: the HTTP layer drew the id, salt and secret, and passes
    /// only the hash on.
    CreateKey {
        /// The new key's id.
        id: String,
        /// Its entry (`created_ms` and `origin` are set by the node).
        entry: ApiKeyEntry,
    },
    /// `GET /keys`.
    ListKeys,
    /// `DELETE /keys/{id}`.
    RevokeKey(String),
    /// `GET /metrics`: everything the node counts and holds, read at once.
    Report,
    /// One page of this node's own copies of `table`'s objects (`GET
    /// /tables/{t}/export`, `GET /tables/{t}/stats`): keys after `after`,
    /// at most `limit` of them and about [`EXPORT_PAGE_BYTES`] of values.
    ExportPage {
        /// The table.
        table: TableName,
        /// Keys after this one.
        after: Option<Bytes>,
        /// Keys examined at most.
        limit: usize,
    },
}

/// About how many bytes of objects one export page carries (more only when
/// a single object is larger).
pub const EXPORT_PAGE_BYTES: usize = 4 * 1024 * 1024;

/// Answers to [`AdminOp`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminReply {
    /// One table's config.
    Table(TableName, TableConfig),
    /// Every table.
    Tables(Vec<(TableName, TableConfig)>),
    /// Cluster view.
    Cluster(Box<ClusterStatus>),
    /// Preference list.
    Preflist {
        /// The N owners in order.
        primaries: Vec<NodeId>,
        /// Stand-ins this node would use now for unreachable primaries.
        fallbacks: Vec<NodeId>,
    },
    /// A join was started.
    Accepted(&'static str),
    /// A plugin's entry; `created` when the name was new.
    Plugin {
        /// Name.
        name: String,
        /// Its entry.
        entry: PluginEntry,
        /// Whether this upload created the name.
        created: bool,
        /// For an upload: (nodes holding the module, members) when answered.
        spread: Option<(usize, usize)>,
    },
    /// Every live plugin.
    Plugins(Vec<(String, PluginEntry)>),
    /// A key was created (201).
    KeyCreated(String, ApiKeyEntry),
    /// Every key, revoked ones included.
    Keys(Vec<(String, ApiKeyEntry)>),
    /// What the node counts and holds ([`AdminOp::Report`]).
    Report(Box<NodeReport>),
    /// One page of objects ([`AdminOp::ExportPage`]).
    Page {
        /// Keys and their objects, in key order.
        objects: Vec<(Bytes, Object)>,
        /// The key to continue after, or `None` when the walk is complete.
        next: Option<Bytes>,
    },
    /// Deleted.
    Deleted,
    /// Not found (404).
    NotFound(String),
    /// Refused (400).
    Invalid(String),
    /// Conflicts with the current state (409).
    Conflict(String),
    /// Cannot be served now (503).
    Unavailable(String),
}

/// The partition transfer a node is receiving, for `/cluster`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferStatus {
    /// Partitions it must still copy for the ring's move.
    pub partitions_left: u32,
    /// The node the page under way comes from.
    pub source: Option<NodeId>,
    /// Keys copied for the move so far (over restarts).
    pub keys: u64,
    /// Bytes copied for the move so far (over restarts).
    pub bytes: u64,
    /// Keys it had copied before this process started (a resumed transfer).
    pub resumed_keys: u64,
    /// Keys a second since this process began copying.
    pub keys_per_s: u64,
    /// Bytes a second since this process began copying.
    pub bytes_per_s: u64,
    /// Seconds until the walk under way completes, estimated.
    pub eta_s: Option<u64>,
}

/// A ring move under way, as every node sees it, for `/cluster`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveStatus {
    /// Partitions whose owner changes.
    pub partitions_moving: u32,
    /// Copies the move needs: (partition, new replica) pairs.
    pub copies_total: u32,
    /// Those already durable at their new replica.
    pub copies_done: u32,
    /// Copies still needed, by receiving node.
    pub copies_left_by_node: Vec<(NodeId, u32)>,
}

/// `GET /cluster`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterStatus {
    /// This node.
    pub node: NodeId,
    /// Every member.
    pub members: Vec<MemberStatus>,
    /// The join asked for with `POST /cluster/join`: under way, or why it failed.
    pub join: Option<JoinStatus>,
    /// Anti-entropy's progress (`None` on a node that runs none).
    pub antientropy: Option<AntiEntropyStatus>,
    /// Hints this node keeps, per owner with any.
    pub hints: Vec<HintStatus>,
    /// Writes this node refused to keep as hints since start, because it
    /// kept [`crate::core::limits::HINTS_MAX`] already (the coordinator
    /// then marks the key's partition for anti-entropy).
    pub hints_refused_full: u64,
    /// Tombstone collection on this node.
    pub tombstones: TombstoneStatus,
    /// The ring move under way, if any.
    pub ring_move: Option<MoveStatus>,
    /// The transfer this node receives for it, if any.
    pub transfer: Option<TransferStatus>,
    /// Each partition's owner in ring order (empty before a ring exists).
    pub ring_owners: Vec<NodeId>,
}

/// `GET /metrics` reads the node through this: its counters, its sizes and
/// the cluster as it sees it, taken in one turn so they agree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReport {
    /// Counters since start.
    pub stats: crate::core::stats::NodeStats,
    /// What it holds now.
    pub sizes: crate::core::stats::NodeSizes,
    /// The cluster as `GET /cluster` shows it.
    pub cluster: ClusterStatus,
}

/// Tombstones on one node: what waits, what went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TombstoneStatus {
    /// Keys whose copy here holds tombstones only (as far as anti-entropy's
    /// start-up walk has seen), awaiting collection.
    pub pending: u64,
    /// Tombstones collected here since start.
    pub collected: u64,
    /// Checks this node started that some member did not answer in time.
    pub checks_timed_out: u64,
    /// The grace period (`None`: no collection, anti-entropy is off).
    pub grace_ms: Option<u64>,
}

/// The hints one stand-in keeps for one owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HintStatus {
    /// The owner.
    pub owner: NodeId,
    /// Hints waiting for it.
    pub pending: u64,
    /// Delivered (and removed) since this node started.
    pub delivered: u64,
    /// Where delivery stands: `idle`, `owner down`, `throttled`,
    /// `delivering` or `failing`.
    pub state: String,
    /// The last error, while failing.
    pub error: Option<String>,
}

/// Anti-entropy as one node sees it: whether its sweeps keep up (the
/// oldest comparison), what they repaired and what they cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AntiEntropyStatus {
    /// When a partition was last compared with a peer (wall ms).
    pub last_exchange_ms: Option<u64>,
    /// When the least recently compared partition this node replicates was
    /// compared (wall ms); `None` while some has never been.
    pub oldest_exchange_ms: Option<u64>,
    /// (table, partition) pairs this node replicates and compares.
    pub partitions: u64,
    /// Of those, how many were never compared yet.
    pub never_compared: u64,
    /// Partitions waiting to be compared again as known divergent.
    pub divergent: u64,
    /// Whether every table's tree holds what the store held at start.
    pub trees_built: bool,
    /// Keys this node holds objects for, by its trees.
    pub keys_held: u64,
    /// Counters since start.
    pub stats: AntiEntropyStats,
    /// The throttle: keys read a second.
    pub keys_per_s: u64,
    /// The throttle: bytes sent a second.
    pub bytes_per_s: u64,
}

/// A join this node was asked to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinStatus {
    /// The seed asked.
    pub seed: String,
    /// `None` while under way; why it failed otherwise (the node serves as before).
    pub failure: Option<String>,
}

/// One member as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    /// Id.
    pub id: NodeId,
    /// HTTP address.
    pub http: String,
    /// Peer address.
    pub peer: String,
    /// `up` or `down`, from this node's failure detection; `joining` for
    /// this node while no seed has admitted it yet, and for an up member
    /// that owns no partition yet but will once the ring's move completes.
    pub status: &'static str,
    /// Partitions it owns.
    pub partitions: usize,
    /// Partitions it will own once the ring's move completes.
    pub partitions_next: usize,
}

/// Why a replica could not serve a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaError {
    /// The replica does not know the table yet.
    UnknownTable,
    /// The storage engine failed.
    Storage(String),
}

/// Everything nodes say to each other: a hello, then messages of one
/// subsystem each. Each subsystem's enum says, exhaustively, which of its
/// messages are answers (see [`Message::is_answer`]), so a new message
/// cannot be added without deciding whether it waits for durability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// First frame on every connection: who is speaking.
    Hello {
        /// The sender.
        node: NodeId,
    },
    /// Membership and liveness: pings, gossip and joins.
    Member(MemberMessage),
    /// Replicas' copies of keys: writes, reads and repairs between a coordinator and the other replicas.
    Replica(ReplicaMessage),
    /// Plugin modules spreading to every node.
    Module(ModuleMessage),
    /// Client operations a node hands to a replica of the key.
    Forward(ForwardMessage),
    /// Anti-entropy: replicas comparing hash trees and exchanging objects.
    Sync(SyncMessage),
    /// Hinted handoff: a stand-in delivering what it kept for an owner.
    Handoff(HandoffMessage),
    /// Tombstone collection: asking every member, then removing.
    Reap(ReapMessage),
    /// Partition transfer: a new replica pulling a partition's data.
    Transfer(TransferMessage),
}

/// A position in a transfer's walk: every key of the walked partitions up
/// to and including this (table, key), in table-name then key order, is
/// copied. `None` (no position) is the walk's start.
pub type WalkPosition = Option<(TableName, Bytes)>;

/// Partition transfer, pulled by the node a ring move makes a new replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TransferMessage {
    /// Send the next page of my keys in `partitions` after `after`: those
    /// of each table I am a new replica of under the ring's move.
    Fetch {
        /// The receiver's request id.
        request: u64,
        /// The receiver's move ([`crate::core::ring::Ring::plan_id`]): a
        /// source whose ring plans another move (or none yet) refuses.
        plan: u64,
        /// Partitions walked together (they share the position).
        partitions: Vec<u32>,
        /// Where the walk stands.
        after: WalkPosition,
        /// Bytes of objects the page may carry (what the receiver's
        /// throttle allows now; one larger object still goes alone).
        max_bytes: u32,
    },
    /// A page of the walk.
    Page {
        /// The request id.
        request: u64,
        /// (table, key, object) in walk order.
        objects: Vec<(TableName, Bytes, Object)>,
        /// Where the walk stands after this page; `None` once it is complete.
        next: WalkPosition,
        /// The source's estimate of the keys the whole walk brings (for
        /// the receiver's ETA; nothing depends on it).
        estimate: u64,
    },
    /// The source cannot serve the walk now (its ring is older, or its
    /// store failed): the receiver asks again later, maybe elsewhere.
    Refused {
        /// The request id.
        request: u64,
        /// Why.
        reason: String,
    },
}

impl TransferMessage {
    /// Whether this message answers something (see [`Message::is_answer`]):
    /// a page may carry copies staged in the turn it was built in, so it
    /// leaves once they are durable.
    pub fn is_answer(&self) -> bool {
        match self {
            TransferMessage::Fetch { .. } => false,
            TransferMessage::Page { .. } | TransferMessage::Refused { .. } => true,
        }
    }
}

/// Tombstone collection, decided by the first primary of each key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ReapMessage {
    /// May these tombstones go? A primary of a key accepts only when it
    /// holds exactly this item; any member refuses a key it keeps a hint for.
    Check {
        /// The asker's check id.
        request: u64,
        /// Table.
        table: TableName,
        /// (key, item hash) of each tombstone.
        keys: Vec<(Bytes, [u8; 32])>,
    },
    /// The answer: the keys refused, by index.
    Checked {
        /// The check id.
        request: u64,
        /// Indexes of refused keys.
        refused: Vec<u32>,
    },
    /// Every member accepted: remove these tombstones if the copy is still
    /// exactly this item.
    Collect {
        /// Table.
        table: TableName,
        /// (key, item hash) of each tombstone.
        keys: Vec<(Bytes, [u8; 32])>,
    },
}

/// Hinted handoff from a stand-in to the owner of its hints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum HandoffMessage {
    /// Store these objects (merged in, as replica writes), then answer.
    Deliver {
        /// The stand-in's batch id.
        request: u64,
        /// (table, key, object) for each hint.
        hints: Vec<(TableName, Bytes, Object)>,
    },
    /// The batch is durable here, but for the hints refused (by index,
    /// with why): the stand-in removes the others.
    Delivered {
        /// The batch id.
        request: u64,
        /// Hints not stored.
        refused: Vec<(u32, ReplicaError)>,
    },
}

/// Anti-entropy between two replicas of a partition. None is an answer that
/// waits for durability: like a read repair, what it carries is merged as a
/// repair, and a hash only decides what to send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SyncMessage {
    /// The sender's root of one partition's tree.
    Root {
        /// Table.
        table: TableName,
        /// Partition.
        partition: u32,
        /// The sender's root.
        root: [u8; 32],
    },
    /// The answer to an agreeing root: the partition was compared and
    /// nothing differs.
    InSync {
        /// Table.
        table: TableName,
        /// Partition.
        partition: u32,
    },
    /// The answer to a differing root: the sender's leaves.
    Leaves {
        /// Table.
        table: TableName,
        /// Partition.
        partition: u32,
        /// Every leaf's hash, in leaf order.
        leaves: Vec<[u8; 32]>,
    },
    /// The sender's items (key, item hash) of the leaves that differ.
    Items {
        /// Table.
        table: TableName,
        /// Partition.
        partition: u32,
        /// The leaves the items cover, whole.
        leaves: Vec<u16>,
        /// Every item the sender holds in those leaves.
        items: Vec<(Bytes, [u8; 32])>,
    },
    /// Send me your objects of these keys (their items differ here).
    Pull {
        /// Table.
        table: TableName,
        /// Keys.
        keys: Vec<Bytes>,
    },
    /// Objects of the leaves that differ, to be merged.
    Objects {
        /// Table.
        table: TableName,
        /// The objects, by key.
        objects: Vec<(Bytes, Object)>,
    },
}

/// Membership and liveness: pings, gossip and joins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MemberMessage {
    /// Liveness probe; any message counts as an answer.
    Ping,
    /// Answer to a ping.
    Pong,
    /// The sender's whole cluster metadata (sent when it changes it).
    Gossip(Box<ClusterMeta>),
    /// A gossip round's opening: the digest of the sender's metadata. A
    /// peer that differs answers with a [`MemberMessage::Delta`].
    Digest(MetaDigest),
    /// The sections of the sender's metadata that differ from a digest,
    /// merged in by the receiver; with the sender's own digest when it
    /// answers one (the receiver then sends back what the sender lacks).
    Delta {
        /// The differing sections (the others empty).
        meta: Box<ClusterMeta>,
        /// The sender's digest, when this answers a digest.
        digest: Option<MetaDigest>,
    },
    /// A node asks a seed to join its cluster.
    JoinRequest {
        /// The joiner's record.
        member: Member,
        /// Whether the joiner starts with an empty data dir.
        fresh: bool,
        /// The joiner's own tables, which it brings into the cluster: the
        /// seed refuses a join that would take the cluster past its table
        /// limits.
        tables: Vec<TableName>,
    },
    /// The seed admitted the joiner.
    JoinAccepted(Box<ClusterMeta>),
    /// The seed refused.
    JoinRefused {
        /// Why.
        reason: String,
    },
}

/// Replicas' copies of keys: writes, reads and repairs between a coordinator and the other replicas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ReplicaMessage {
    /// Store this whole object (merged into what the replica has).
    Write {
        /// Coordinator's request id.
        request: u64,
        /// Table.
        table: TableName,
        /// Key.
        key: Bytes,
        /// The coordinator's resulting object.
        object: Object,
        /// The engine a `storage: plugin` table's plugin chose for it.
        engine: Option<StorageKind>,
        /// The unreachable primary the receiver stands in for (sloppy
        /// quorum): it keeps the object as a hint for that node, durable
        /// before it acks, and hands it off once the owner is reachable.
        hint_for: Option<NodeId>,
    },
    /// The object is durable on the replica (or why not).
    WriteAck {
        /// Request id.
        request: u64,
        /// Outcome.
        outcome: Result<(), ReplicaError>,
    },
    /// Send your copy of a key.
    Read {
        /// Request id.
        request: u64,
        /// Table.
        table: TableName,
        /// Key.
        key: Bytes,
        /// The unreachable primary the receiver stands in for: it answers
        /// with its hint for that node.
        hint_for: Option<NodeId>,
    },
    /// A replica's copy (`None`: not found).
    ReadReply {
        /// Request id.
        request: u64,
        /// Outcome.
        outcome: Result<Option<Object>, ReplicaError>,
    },
    /// Read repair: merge this object in; no answer expected.
    Repair {
        /// Table.
        table: TableName,
        /// Key.
        key: Bytes,
        /// The merged object.
        object: Object,
    },
}

/// Plugin modules spreading to every node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ModuleMessage {
    /// Send me the module with this sha256.
    Fetch {
        /// Hex sha256.
        sha256: String,
    },
    /// A module's bytes.
    Bytes {
        /// Hex sha256 (checked by the receiver).
        sha256: String,
        /// The bytes.
        bytes: Bytes,
    },
    /// A module's bytes are stored here now: told to the node that took its
    /// upload, which answers the upload once every member holds it.
    Stored {
        /// Hex sha256.
        sha256: String,
    },
}

/// Client operations a node hands to a replica of the key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ForwardMessage {
    /// Coordinate this client operation for me.
    Request {
        /// The forwarder's request id.
        request: u64,
        /// The operation.
        op: ClientOp,
    },
    /// The coordinator's answer to a forwarded operation.
    Reply {
        /// Request id.
        request: u64,
        /// The answer.
        reply: ClientReply,
    },
}

impl Message {
    /// Whether this message answers something, and so may only leave once the
    /// writes staged in the same loop turn are durable.
    pub fn is_answer(&self) -> bool {
        match self {
            Message::Hello { .. } => false,
            Message::Member(message) => message.is_answer(),
            Message::Replica(message) => message.is_answer(),
            Message::Module(message) => message.is_answer(),
            Message::Forward(message) => message.is_answer(),
            Message::Sync(message) => message.is_answer(),
            Message::Handoff(message) => message.is_answer(),
            Message::Reap(message) => message.is_answer(),
            Message::Transfer(message) => message.is_answer(),
        }
    }
}

impl ReapMessage {
    /// Whether this message answers something (see [`Message::is_answer`]):
    /// a member vouches for the tombstone it holds only once it is durable.
    pub fn is_answer(&self) -> bool {
        matches!(self, ReapMessage::Checked { .. })
    }
}

impl HandoffMessage {
    /// Whether this message answers something (see [`Message::is_answer`]).
    pub fn is_answer(&self) -> bool {
        match self {
            HandoffMessage::Deliver { .. } => false,
            HandoffMessage::Delivered { .. } => true,
        }
    }
}

impl SyncMessage {
    /// Whether this message answers something (see [`Message::is_answer`]).
    pub fn is_answer(&self) -> bool {
        match self {
            SyncMessage::Root { .. } => false,
            SyncMessage::InSync { .. } => false,
            SyncMessage::Leaves { .. } => false,
            SyncMessage::Items { .. } => false,
            SyncMessage::Pull { .. } => false,
            SyncMessage::Objects { .. } => false,
        }
    }
}

impl MemberMessage {
    /// Whether this message answers something (see [`Message::is_answer`]).
    pub fn is_answer(&self) -> bool {
        match self {
            MemberMessage::Ping => false,
            MemberMessage::Pong => false,
            MemberMessage::Gossip(_) => false,
            MemberMessage::Digest(_) => false,
            MemberMessage::Delta { .. } => false,
            MemberMessage::JoinRequest { .. } => false,
            MemberMessage::JoinAccepted(_) => true,
            MemberMessage::JoinRefused { .. } => false,
        }
    }
}

impl ReplicaMessage {
    /// Whether this message answers something (see [`Message::is_answer`]).
    pub fn is_answer(&self) -> bool {
        match self {
            ReplicaMessage::Write { .. } => false,
            ReplicaMessage::WriteAck { .. } => true,
            ReplicaMessage::Read { .. } => false,
            ReplicaMessage::ReadReply { .. } => true,
            ReplicaMessage::Repair { .. } => false,
        }
    }
}

impl ModuleMessage {
    /// Whether this message answers something (see [`Message::is_answer`]).
    pub fn is_answer(&self) -> bool {
        match self {
            ModuleMessage::Fetch { .. } => false,
            ModuleMessage::Bytes { .. } => true,
            ModuleMessage::Stored { .. } => true,
        }
    }
}

impl ForwardMessage {
    /// Whether this message answers something (see [`Message::is_answer`]).
    pub fn is_answer(&self) -> bool {
        match self {
            ForwardMessage::Request { .. } => false,
            ForwardMessage::Reply { .. } => true,
        }
    }
}
