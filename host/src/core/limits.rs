//! Every bound Cairn enforces, in one place, with its unit last in the name.
//!
//! Bounds exist so that no input can make a node grow memory without limit or
//! wait forever; each one is referenced by the code that enforces it.

/// Longest key accepted, after percent-decoding (SPEC §3 "Limits").
pub const KEY_BYTES_MAX: usize = 1024;
/// Default largest value accepted by PUT; configurable per node.
pub const VALUE_BYTES_MAX_DEFAULT: usize = 8 * 1024 * 1024;
/// Longest context token accepted from a client.
pub const CONTEXT_CHARS_MAX: usize = 2048;
/// Most live versions one key may hold before a client write gets 409.
pub const SIBLINGS_MAX: usize = 64;
/// Most live bytes (values and their content types) one key may hold before
/// a client write gets 409.
pub const OBJECT_LIVE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Longest Content-Type a value may carry (400 beyond).
pub const CONTENT_TYPE_BYTES_MAX: usize = 256;
/// What one version costs in a frame beyond its value and content type, at
/// most: its dot (a node id, an epoch, a counter), timestamp and framing.
const VERSION_OVERHEAD_BYTES_MAX: usize = NODE_ID_CHARS_MAX + 64;
/// Largest replication factor a table may ask for.
pub const REPLICAS_MAX: u8 = 9;
/// Longest table name.
pub const TABLE_NAME_CHARS_MAX: usize = 64;
/// Longest node id.
pub const NODE_ID_CHARS_MAX: usize = 32;
/// Most tables a cluster may hold (each is an LMDB database).
pub const TABLES_MAX: usize = 400;
/// Most table names a cluster may use, dropped ones included: a dropped
/// table's name is never reused and its (emptied) LMDB database stays, and
/// LMDB holds at most 512 named databases per node.
pub const TABLE_NAMES_MAX: usize = 500;
/// Largest peer frame, header excluded: a value plus its siblings and clocks.
pub const FRAME_BYTES_MAX: usize = OBJECT_LIVE_BYTES_MAX + 4 * 1024 * 1024;
/// Default time a client request may take before it is answered 503.
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// Shortest request timeout a node accepts: below it, a healthy cluster's
/// requests would time out.
pub const REQUEST_TIMEOUT_MS_MIN: u64 = 100;
/// Longest request timeout a node accepts.
pub const REQUEST_TIMEOUT_MS_MAX: u64 = 600_000;
/// A member with no message for this long is reported `down`.
pub const MEMBER_DOWN_AFTER_MS: u64 = 5_000;
/// How long a node remembers when it last heard from an id that is not a
/// member (a joiner not yet in its metadata, or any peer naming itself at
/// will): past this the entry goes, so the map stays within the members
/// plus those heard in the last few seconds.
pub const STRANGER_HEARD_KEPT_MS: u64 = 2 * MEMBER_DOWN_AFTER_MS;
/// How often a node pings every member (any message counts as an answer).
pub const PING_INTERVAL_MS: u64 = 1_000;
/// Members a node pings per interval at most: up to this many others are
/// all pinged every interval; beyond, they are pinged in turn, so probes
/// grow as n × fanout, not n², and the down threshold grows with the cycle.
pub const PING_FANOUT: usize = 16;
/// How often a node pushes its cluster metadata to one random peer.
pub const GOSSIP_INTERVAL_MS: u64 = 1_000;
/// Default partition count of a new cluster.
pub const PARTITIONS_DEFAULT: u32 = 256;
/// Largest partition count a cluster may be created with.
pub const PARTITIONS_MAX: u32 = 1_024;
/// Fewest partitions a cluster may have: enough that a table's n replicas
/// land on distinct nodes.
pub const PARTITIONS_MIN: u32 = 16;
/// Client requests one node coordinates or forwards at once; beyond it: 503 overloaded.
pub const CLIENT_REQUESTS_IN_FLIGHT_MAX: usize = 16_384;
/// Largest first frame (the hello naming the sender) on a peer connection:
/// nothing larger is read from a connection that has not said who it is.
pub const HELLO_FRAME_BYTES_MAX: usize = 1024;
/// How long a new peer connection may take to send its hello.
pub const PEER_HELLO_TIMEOUT_MS: u64 = 10_000;
/// A peer connection silent this long is closed (members ping every second).
pub const PEER_IDLE_TIMEOUT_MS: u64 = 30_000;
/// Bytes of peer frames being read at once, over all connections: a frame is
/// admitted against it before its body is read.
pub const PEER_INBOUND_BYTES_MAX: usize = 4 * FRAME_BYTES_MAX;
/// How long a request body may take to arrive.
pub const HTTP_BODY_TIMEOUT_MS: u64 = 30_000;
/// Peer connections one node accepts at once (each member dials one).
pub const PEER_CONNECTIONS_MAX: usize = 1_100;
/// HTTP connections one node serves at once; more are closed on accept.
pub const HTTP_CONNECTIONS_MAX: usize = 1_024;
/// Free space a node keeps on its data dir's disk by default: writes that
/// would leave less are refused (507) before they are staged, so LMDB and
/// the blob files never run into a full disk mid-commit.
pub const DISK_RESERVE_BYTES_DEFAULT: u64 = 256 * 1024 * 1024;
/// Bytes of request bodies one node holds at once (admitted before reading).
pub const HTTP_BODY_BYTES_IN_FLIGHT_MAX: usize = 512 * 1024 * 1024;
/// An HTTP connection must send a request's headers within this long.
pub const HTTP_HEADER_TIMEOUT_MS: u64 = 10_000;
/// Most distinct actors a context token may name (a bound for the decoder).
pub const CONTEXT_ACTORS_MAX: usize = 512;

// ---- Membership and clients ------------------------------------------------

/// A joiner whose id answered this recently is refused (it may still be running).
pub const REJOIN_QUIET_MS: u64 = 10_000;
/// How often a node that has not joined yet asks its seeds again.
pub const JOIN_RETRY_MS: u64 = 1_000;
/// How far ahead of this node's wall clock (in seconds) an epoch named by a
/// client's context may be: epochs start at wall-clock seconds, so a larger
/// one comes from a forged token or a clock far off, and accepting it would
/// push this node's own epochs toward exhaustion.
pub const CONTEXT_EPOCH_AHEAD_MAX_S: u64 = 7 * 24 * 3600;
/// A join asked for at runtime gives up after this long without an answer.
pub const JOIN_GIVE_UP_MS: u64 = 30_000;
/// A read that finishes this long past its deadline means the node
/// stalled: it repairs and writes nothing from what it read.
pub const REQUEST_STALLED_MS: u64 = 1_000;
/// Keys a stand-in coordinator keeps a counter for under one stand-in
/// epoch; past this a fresh stand-in epoch starts (about 100 bytes a key).
pub const STAND_IN_KEYS_MAX: usize = 100_000;
/// Forwarded requests a coordinator remembers, to take a duplicate once.
pub const FORWARDS_REMEMBERED: usize = 16_384;
/// A forwarding node waits this much longer than the coordinator's own
/// deadline, so the coordinator's 503 (with its count of acks) arrives first.
pub const FORWARD_GRACE_MS: u64 = 500;

// ---- anti-entropy -----------------------------------------------------------

/// How often anti-entropy runs a turn by default (`serve
/// --antientropy-every-ms`).
pub const ANTIENTROPY_EVERY_MS_DEFAULT: u64 = 100;
/// Keys anti-entropy reads a second by default (`serve
/// --antientropy-keys-per-s`): a wiped replica of 100,000 keys is refilled
/// in about 10 s, and a disk doing a few hundred thousand reads a second
/// keeps most of them for clients.
pub const ANTIENTROPY_KEYS_PER_S_DEFAULT: u64 = 10_000;
/// Bytes of objects anti-entropy sends a second by default (`serve
/// --antientropy-bytes-per-s`).
pub const ANTIENTROPY_BYTES_PER_S_DEFAULT: u64 = 16 * 1024 * 1024;
/// Every partition a node replicates is compared with a peer within this
/// long (SPEC §4 allows 60 s): each turn starts the share of a sweep's
/// exchanges this needs, within [`ANTIENTROPY_EXCHANGES_PER_TURN_MAX`] and
/// the throttle.
pub const ANTIENTROPY_SWEEP_TARGET_MS: u64 = 30_000;
/// Exchanges one turn starts at most (each is a 40-byte root to begin with).
pub const ANTIENTROPY_EXCHANGES_PER_TURN_MAX: u64 = 64;
/// Hints one node keeps at most (for all owners together); a write that
/// would need one more is refused by this stand-in (its ack fails).
pub const HINTS_MAX: u64 = 1_000_000;
/// Hints delivered a second at most (all owners together): 100,000 hints
/// drain in about 10 s, within SPEC §4's 30 s.
pub const HANDOFF_KEYS_PER_S: u64 = 10_000;
/// How often a stand-in looks for owners to deliver to.
pub const HANDOFF_EVERY_MS: u64 = 100;
/// Hints one batch carries at most.
pub const HANDOFF_BATCH_KEYS: usize = 256;
/// Live bytes one batch carries at most (at least one hint).
pub const HANDOFF_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// How long a stand-in waits for its owner's answer to a batch before it
/// sends the batch's hints again.
pub const HANDOFF_ANSWER_MS: u64 = 10_000;
/// Keys read per page when hints are counted at start.
pub const HINTS_COUNT_PAGE: usize = 10_000;

// ---- partition transfer -------------------------------------------------------

/// Bytes a second a receiver copies a moving partition at, by default
/// (`--transfer-bytes-per-s`): a transfer never starves client requests.
pub const TRANSFER_BYTES_PER_S_DEFAULT: u64 = 32 * 1024 * 1024;
/// How often a receiver looks whether its next page is due.
pub const TRANSFER_EVERY_MS: u64 = 50;
/// Bytes of objects a page carries at most (one larger object goes alone).
pub const TRANSFER_PAGE_BYTES: usize = 1024 * 1024;
/// Keys a source examines for one page at most (keys are not grouped by
/// partition on disk, so a walk examines every key of a table).
pub const TRANSFER_PAGE_KEYS_EXAMINED: usize = 2_048;
/// How long a receiver waits for a page before asking again (maybe elsewhere).
pub const TRANSFER_ANSWER_MS: u64 = 10_000;
/// Keys a leftover sweep examines a turn (every [`TRANSFER_EVERY_MS`]).
pub const LEFTOVER_WALK_KEYS: usize = 256;

// ---- tombstone collection ----------------------------------------------------

/// How long a tombstone is kept at least after the deciding primary stored
/// it (`serve --tombstone-grace-ms`): `serve` refuses a grace shorter than
/// twice a forwarded request's whole wait, so a read or write still under
/// way when every replica holds the tombstone lands on it rather than on
/// nothing.
pub const TOMBSTONE_GRACE_MS_DEFAULT: u64 = 60_000;
/// How often a node looks for tombstones it may collect.
pub const REAP_EVERY_MS: u64 = 1_000;
/// Tombstones one check asks about at most.
pub const REAP_BATCH_KEYS: usize = 1_024;
/// How long a check waits for every member's answer.
pub const REAP_ANSWER_MS: u64 = 10_000;

/// Keys of one table the start-up walk observes into the trees per
/// anti-entropy turn, so building the trees never holds up the loop long.
pub const ANTIENTROPY_WALK_KEYS: usize = 1_000;
/// Items (key, hash) one anti-entropy message carries at most: whole
/// leaves up to this many, at least one (a leaf holds a few keys up to
/// 100,000 keys per partition). A few times the objects one exchange
/// moves: more would be sent again with every exchange a large
/// difference takes.
pub const ANTIENTROPY_ITEMS_PER_MESSAGE: usize = 1_024;
/// Items a node takes in one message (a sender goes past
/// [`ANTIENTROPY_ITEMS_PER_MESSAGE`] only for one leaf holding more); a
/// longer list is ignored whole, never cut (a cut would make the keys
/// past it look missing). A leaf holds more only beyond 67 million keys
/// in one partition.
pub const ANTIENTROPY_ITEMS_ACCEPTED_MAX: usize = 262_144;
/// Objects one anti-entropy message carries at most; a leaf with more is
/// finished by the next exchange of its partition.
pub const ANTIENTROPY_OBJECTS_PER_MESSAGE: usize = 256;
/// Live bytes one anti-entropy message carries at most (at least one object).
pub const ANTIENTROPY_BYTES_PER_MESSAGE: usize = 8 * 1024 * 1024;

// ---- Plugin merges ---------------------------------------------------------

/// On plugin tables a write that leaves this many live versions triggers a merge.
pub const RECONCILE_ON_WRITE_FROM: usize = 8;

// ---- Durability ------------------------------------------------------------

/// How many ranges of lost batches a node remembers: answers naming one
/// come from requests pending when the commit failed, which end within their
/// deadline.
pub const LOST_BATCH_RANGES_KEPT: usize = 64;

// ---- Plugin modules --------------------------------------------------------

/// How long to wait for a module before asking another peer.
pub const MODULE_FETCH_RETRY_MS: u64 = 1_000;
/// How long an upload waits for the other members to hold its module before
/// it is answered with how many do (SPEC: a plugin reaches every up node
/// within 2 s).
pub const UPLOAD_SPREAD_WAIT_MS: u64 = 2_000;

// ---- The node loop ---------------------------------------------------------

/// Events waiting for the node loop before HTTP answers 503 overloaded.
pub const EVENT_QUEUE_MAX: usize = 65_536;
/// Events fed to the node per turn before it commits and answers.
pub const EVENTS_PER_TURN_MAX: usize = 4_096;
/// A node whose commits fail this often stops: each failure costs its
/// writes in flight and an epoch generation, and storage failing at this
/// rate is broken, not full for a moment.
pub const COMMIT_FAILURES_MAX: usize = 10;
/// Calls of one plugin waiting for a free instance before new ones are turned away.
pub const PLUGIN_CALLS_WAITING_MAX: usize = 256;
/// Records of a dropped table deleted per collection slice: collection goes
/// on in the background without holding up requests.
pub const DROP_SWEEP_RECORDS: usize = 1_000;

// ---- Peer connections ------------------------------------------------------

/// Messages queued for one peer before new ones are dropped.
pub const PEER_QUEUE_MESSAGES_MAX: usize = 16_384;
/// Encoded bytes queued for one peer before new messages are dropped: room
/// for two of the largest frames, not 16,384 of them.
pub const PEER_QUEUE_BYTES_MAX: usize = 2 * FRAME_BYTES_MAX;
/// Bytes gathered into one socket write.
pub const WRITE_BATCH_BYTES_MAX: usize = 256 * 1024;
/// Frames up to this size skip the shared budget (their memory is bounded
/// by the connection cap), so pings and acks never queue behind large frames.
pub const SMALL_FRAME_BYTES: usize = 64 * 1024;

// ---- HTTP ------------------------------------------------------------------

/// Largest JSON body accepted by table and cluster endpoints.
pub const ADMIN_BODY_BYTES_MAX: usize = 64 * 1024;

// The plugin sandbox's bounds (fuel, memory, instances, module size) live
// with the sandbox in `plugin/mod.rs`, where the ABI they bound is defined.

const _: () = assert!(CONTEXT_CHARS_MAX < FRAME_BYTES_MAX);
// Any object the limits admit fits one frame, so replicas can always receive
// what a coordinator accepted: its live bytes, each version's overhead, a
// clock of as many actors as a context may name, and room for the message.
const _: () = assert!(
    OBJECT_LIVE_BYTES_MAX
        + (SIBLINGS_MAX + 1) * (CONTENT_TYPE_BYTES_MAX + VERSION_OVERHEAD_BYTES_MAX)
        + CONTEXT_ACTORS_MAX * (NODE_ID_CHARS_MAX + 32)
        + KEY_BYTES_MAX
        + 64 * 1024
        < FRAME_BYTES_MAX
);
const _: () = assert!(VALUE_BYTES_MAX_DEFAULT <= OBJECT_LIVE_BYTES_MAX);
const _: () = assert!(
    PARTITIONS_DEFAULT.is_power_of_two()
        && PARTITIONS_MAX.is_power_of_two()
        && PARTITIONS_MIN.is_power_of_two()
        && PARTITIONS_MIN >= REPLICAS_MAX as u32
);
const _: () = assert!(MEMBER_DOWN_AFTER_MS > 2 * PING_INTERVAL_MS);
