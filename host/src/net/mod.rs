//! Peer transport: persistent TCP connections carrying length-prefixed,
//! versioned postcard frames ([`crate::core::codec`]).
//!
//! Each node writes only on connections it dialled (one per peer address, with
//! a bounded queue, batching and reconnect with backoff) and reads only on
//! connections it accepted; the first frame on a connection names the sender.
//! A garbage or oversized frame closes that connection and is logged. With a
//! cluster secret, both ends first prove it ([`handshake`]) and every frame
//! carries a tag checked before it is decoded.

pub mod faults;
pub mod handshake;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};

use crate::core::codec::{decode_frame_body, encode_frame, frame_body_len, FRAME_HEADER_BYTES};
use crate::core::limits::{
    FRAME_BYTES_MAX, HELLO_FRAME_BYTES_MAX, PEER_HELLO_TIMEOUT_MS, PEER_IDLE_TIMEOUT_MS,
    PEER_INBOUND_BYTES_MAX, PEER_QUEUE_BYTES_MAX, PEER_QUEUE_MESSAGES_MAX, SMALL_FRAME_BYTES,
    WRITE_BATCH_BYTES_MAX,
};
use crate::core::msg::Message;
use crate::core::node::Input;
use crate::core::types::NodeId;
use crate::runtime::Event;

use crate::core::peer_auth::{FrameSeal, FRAME_TAG_BYTES};
use faults::LinkFaults;
use handshake::PeerGuard;

/// First and largest pause between reconnect attempts.
const BACKOFF_MS_MIN: u64 = 50;
const BACKOFF_MS_MAX: u64 = 1_000;
/// A connect attempt that takes longer than this fails.
const CONNECT_TIMEOUT_MS: u64 = 2_000;

/// The sending half: one queue and connection task per peer address.
pub struct Outbound {
    me: NodeId,
    peers: HashMap<String, PeerQueue>,
    /// Where failed connects are reported (the node's failure detection).
    events: mpsc::Sender<Event>,
    /// Test-only slow and lossy links (`None` everywhere else).
    faults: Option<LinkFaults>,
    /// The cluster secret links prove.
    guard: Arc<PeerGuard>,
}

/// Encoded frames waiting for one peer, and their total size.
struct PeerQueue {
    frames: mpsc::Sender<Queued>,
    bytes: Arc<AtomicUsize>,
}

/// One encoded frame and, on a test's slowed link, when it may leave.
struct Queued {
    frame: Bytes,
    due: Option<tokio::time::Instant>,
}

impl Outbound {
    /// No connections yet; they are dialled on first use. A connect that
    /// fails is reported to `events` as [`Input::Unreachable`].
    pub fn new(me: NodeId, events: mpsc::Sender<Event>, guard: Arc<PeerGuard>) -> Self {
        Outbound {
            me,
            peers: HashMap::new(),
            events,
            faults: None,
            guard,
        }
    }

    /// Sends through test-only link faults (see [`faults`]).
    pub fn with_faults(mut self, faults: LinkFaults) -> Self {
        self.faults = Some(faults);
        self
    }

    /// Queues `message` for the node at `addr`. A full queue drops it: callers
    /// have deadlines, and a peer that cannot keep up is treated as slow.
    pub fn send(&mut self, addr: &str, message: Message) {
        let queue = self.peers.entry(addr.to_owned()).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(PEER_QUEUE_MESSAGES_MAX);
            let bytes = Arc::new(AtomicUsize::new(0));
            let events = self.events.clone();
            tokio::spawn(dial(
                addr.to_owned(),
                self.me.clone(),
                rx,
                bytes.clone(),
                events,
                self.guard.clone(),
            ));
            PeerQueue { frames: tx, bytes }
        });
        let mut frame = Vec::new();
        if let Err(e) = encode_frame(&message, &mut frame) {
            tracing::warn!(peer = addr, error = %e, "message not sent");
            return;
        }
        // Bounded in bytes as well as in messages: a slow peer costs at most
        // PEER_QUEUE_BYTES_MAX of memory, however large the frames.
        if queue.bytes.load(Ordering::Relaxed) + frame.len() > PEER_QUEUE_BYTES_MAX {
            tracing::debug!(peer = addr, "peer queue full (bytes); message dropped");
            return;
        }
        let (copies, due) = match &self.faults {
            Some(faults) => {
                let fate = faults.fate();
                (fate.copies, fate.due)
            }
            None => (1, None),
        };
        let frame = Bytes::from(frame);
        for _ in 0..copies {
            let len = frame.len();
            queue.bytes.fetch_add(len, Ordering::Relaxed);
            let queued = Queued {
                frame: frame.clone(),
                due,
            };
            if queue.frames.try_send(queued).is_err() {
                queue.bytes.fetch_sub(len, Ordering::Relaxed);
                tracing::debug!(peer = addr, "peer queue full; message dropped");
            }
        }
    }
}

async fn dial(
    addr: String,
    me: NodeId,
    mut queue: mpsc::Receiver<Queued>,
    queued: Arc<AtomicUsize>,
    events: mpsc::Sender<Event>,
    guard: Arc<PeerGuard>,
) {
    let mut backoff_ms = BACKOFF_MS_MIN;
    loop {
        let connect = tokio::time::timeout(
            Duration::from_millis(CONNECT_TIMEOUT_MS),
            TcpStream::connect(&addr),
        );
        let connected = match connect.await {
            Ok(Ok(mut stream)) => match guard.dial(&mut stream).await {
                Ok(seal) => Some((stream, seal)),
                Err(reason) => {
                    if guard.may_log() {
                        tracing::warn!(peer = %addr, %reason, "peer connection refused");
                    }
                    None
                }
            },
            _ => None,
        };
        match connected {
            Some((stream, seal)) => {
                backoff_ms = BACKOFF_MS_MIN;
                if !write_loop(stream, &me, &mut queue, &queued, seal).await {
                    return;
                }
                tracing::debug!(peer = %addr, "peer connection lost; reconnecting");
            }
            None => {
                // The node learns at once, not only after pings go unanswered
                // (a full inbox drops the report: the pings still tell).
                let _ = events.try_send(Event::Input(Input::Unreachable { addr: addr.clone() }));
                // Whatever waited for this peer is stale by the time it is reachable.
                while let Ok(waiting) = queue.try_recv() {
                    queued.fetch_sub(waiting.frame.len(), Ordering::Relaxed);
                }
                if queue.is_closed() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
                backoff_ms = (backoff_ms * 2).min(BACKOFF_MS_MAX);
            }
        }
    }
}

/// Writes queued messages until the connection fails (returns true) or the
/// queue is closed (returns false).
///
/// The peer never writes on a connection it accepted, so a readable socket means
/// it closed: noticing that while idle reconnects before the next message,
/// instead of losing that message to a dead socket.
async fn write_loop(
    stream: TcpStream,
    me: &NodeId,
    queue: &mut mpsc::Receiver<Queued>,
    queued: &AtomicUsize,
    mut seal: Option<FrameSeal>,
) -> bool {
    let _ = stream.set_nodelay(true);
    let (mut closed, mut writer) = stream.into_split();
    let mut probe = [0u8; 1];
    let mut buf = Vec::with_capacity(64 * 1024);
    // A frame taken from the queue before it was due (slowed test links).
    let mut held: Option<Queued> = None;
    if encode_frame(&Message::Hello { node: me.clone() }, &mut buf).is_err() {
        return false;
    }
    // On an authenticated link every frame is followed by its tag.
    let mut append = |buf: &mut Vec<u8>, frame: &[u8]| {
        let start = buf.len();
        buf.extend_from_slice(frame);
        if let Some(seal) = &mut seal {
            let tag = seal.seal(&[&buf[start..]]);
            buf.extend_from_slice(&tag);
        }
    };
    let hello = std::mem::take(&mut buf);
    append(&mut buf, &hello);
    loop {
        if !buf.is_empty() {
            if writer.write_all(&buf).await.is_err() {
                return true;
            }
            buf.clear();
        }
        // Frames leave the byte count as they leave the queue.
        let first = match held.take() {
            Some(first) => first,
            None => tokio::select! {
                frame = queue.recv() => match frame {
                    Some(frame) => {
                        queued.fetch_sub(frame.frame.len(), Ordering::Relaxed);
                        frame
                    }
                    None => return false,
                },
                _ = closed.read(&mut probe) => return true,
            },
        };
        if let Some(due) = first.due {
            tokio::time::sleep_until(due).await;
        }
        append(&mut buf, &first.frame);
        while buf.len() < WRITE_BATCH_BYTES_MAX {
            match queue.try_recv() {
                Ok(next) => {
                    queued.fetch_sub(next.frame.len(), Ordering::Relaxed);
                    // A slowed frame not yet due waits for the next round.
                    if next
                        .due
                        .is_some_and(|due| due > tokio::time::Instant::now())
                    {
                        held = Some(next);
                        break;
                    }
                    append(&mut buf, &next.frame);
                }
                Err(_) => break,
            }
        }
    }
}

/// Accepts peer connections (at most `connections_max` at once; more are
/// closed on accept) and turns their frames into events for the node loop.
/// With a cluster secret in `guard`, a connection must prove it first
/// and seal every frame; one that does not is closed, logged and counted,
/// and none of its frames reaches the node.
pub async fn serve(
    listener: TcpListener,
    events: mpsc::Sender<Event>,
    connections_max: usize,
    guard: Arc<PeerGuard>,
) {
    let connections = Arc::new(Semaphore::new(connections_max));
    // KiB of frame bodies being read, shared by every connection.
    let inbound = Arc::new(Semaphore::new(PEER_INBOUND_BYTES_MAX / 1024));
    loop {
        match listener.accept().await {
            Ok((mut stream, remote)) => {
                let Some(admission) = guard.admit(remote.ip()) else {
                    guard.count_refusal();
                    if guard.may_log() {
                        tracing::warn!(%remote, "too many peer handshakes under way; closed");
                    }
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let events = events.clone();
                let inbound = inbound.clone();
                let guard = guard.clone();
                let connections = connections.clone();
                tokio::spawn(async move {
                    // Proven first: an unproven connection never holds a slot.
                    let seal = match guard.accept(&mut stream).await {
                        Ok(seal) => seal,
                        Err(reason) => {
                            if guard.may_log() {
                                tracing::warn!(%remote, %reason, "peer connection refused");
                            }
                            return;
                        }
                    };
                    drop(admission);
                    let Ok(slot) = connections.try_acquire_owned() else {
                        tracing::warn!(%remote, "too many peer connections; closed");
                        return;
                    };
                    if let Err(reason) = read_loop(stream, events, &inbound, seal, &guard).await {
                        tracing::warn!(%remote, %reason, "peer connection closed");
                    }
                    drop(slot);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "peer accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// How long a frame's body may take to arrive once its header did.
const FRAME_BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// Reads one frame of at most `max` body bytes, waiting at most `idle` for
/// its header; a large frame is admitted against the node's `inbound` budget
/// before its body is read. Memory grows with the bytes that arrive, never
/// with what the header announces.
async fn read_frame(
    reader: &mut BufReader<TcpStream>,
    body: &mut Vec<u8>,
    max: usize,
    inbound: &Semaphore,
    idle: Duration,
    seal: &mut Option<(FrameSeal, &PeerGuard)>,
) -> Result<Option<Message>, String> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    // Only a read that has to wait for the socket is timed: under load the
    // next header is usually buffered already, and a timer per frame costs.
    let read = if reader.buffer().len() >= FRAME_HEADER_BYTES {
        Ok(reader.read_exact(&mut header).await)
    } else {
        tokio::time::timeout(idle, reader.read_exact(&mut header)).await
    };
    match read {
        Err(_) => return Err(format!("silent for {} s", idle.as_secs())),
        Ok(Ok(_)) => {}
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Ok(Err(e)) => return Err(e.to_string()),
    }
    let len = frame_body_len(header).map_err(|e| e.to_string())?;
    if len > max {
        return Err(format!("frame of {len} bytes where at most {max} may come"));
    }
    // A large frame waits while other connections' frames use the budget:
    // the sender's queue backs up, nothing is allocated meanwhile.
    let _admitted = if len > SMALL_FRAME_BYTES {
        let kib = u32::try_from(len.div_ceil(1024)).map_err(|e| e.to_string())?;
        Some(inbound.acquire_many(kib).await.map_err(|e| e.to_string())?)
    } else {
        None
    };
    body.clear();
    body.shrink_to(SMALL_FRAME_BYTES);
    let mut limited = (&mut *reader).take(len as u64);
    let read = if len > SMALL_FRAME_BYTES {
        // A large frame holds budget while it arrives: it gets a deadline.
        tokio::time::timeout(FRAME_BODY_TIMEOUT, limited.read_to_end(body))
            .await
            .map_err(|_| format!("a {len}-byte frame did not arrive within 60 s"))?
    } else {
        limited.read_to_end(body).await
    }
    .map_err(|e| e.to_string())?;
    if read < len {
        return Err(format!(
            "connection closed {} bytes into a {len}-byte frame",
            read
        ));
    }
    // A sealed frame is believed only once its tag holds.
    if let Some((seal, guard)) = seal {
        let mut tag = [0u8; FRAME_TAG_BYTES];
        let read = tokio::time::timeout(FRAME_BODY_TIMEOUT, reader.read_exact(&mut tag)).await;
        if !matches!(read, Ok(Ok(_))) {
            return Err(format!(
                "connection closed before the tag of a {len}-byte frame"
            ));
        }
        if !seal.open(&[&header, body], &tag) {
            guard.count_refusal();
            return Err("a frame's seal did not hold (altered, replayed or reordered)".into());
        }
    }
    decode_frame_body(body).map(Some).map_err(|e| e.to_string())
}

async fn read_loop(
    stream: TcpStream,
    events: mpsc::Sender<Event>,
    inbound: &Semaphore,
    seal: Option<FrameSeal>,
    guard: &PeerGuard,
) -> Result<(), String> {
    let mut seal = seal.map(|seal| (seal, guard));
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let mut body = Vec::new();
    // A connection proves nothing until its hello: a small frame, soon.
    let hello_within = Duration::from_millis(PEER_HELLO_TIMEOUT_MS);
    let hello = tokio::time::timeout(
        hello_within,
        read_frame(
            &mut reader,
            &mut body,
            HELLO_FRAME_BYTES_MAX,
            inbound,
            hello_within,
            &mut seal,
        ),
    );
    let first = hello.await.map_err(|_| "no hello in time".to_owned())?;
    let from = match first? {
        Some(Message::Hello { node }) => node,
        Some(_) => return Err("first frame was not a hello".into()),
        None => return Ok(()),
    };
    // Members ping every second: a connection silent for 30 s is a dead one,
    // and its slot goes back to the pool.
    let idle = Duration::from_millis(PEER_IDLE_TIMEOUT_MS);
    loop {
        let next = read_frame(
            &mut reader,
            &mut body,
            FRAME_BYTES_MAX,
            inbound,
            idle,
            &mut seal,
        );
        let Some(message) = next.await? else {
            break;
        };
        if events
            .send(Event::Input(Input::Peer {
                from: from.clone(),
                message,
            }))
            .await
            .is_err()
        {
            return Ok(());
        }
    }
    Ok(())
}
