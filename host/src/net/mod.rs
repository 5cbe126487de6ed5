//! Peer transport: persistent TCP connections carrying length-prefixed,
//! versioned postcard frames ([`crate::core::codec`]).
//!
//! Each node writes only on connections it dialled (one per peer address, with
//! a bounded queue, batching and reconnect with backoff) and reads only on
//! connections it accepted; the first frame on a connection names the sender.
//! A garbage or oversized frame closes that connection and is logged.

use std::collections::HashMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::core::codec::{decode_frame_body, encode_frame, frame_body_len, FRAME_HEADER_BYTES};
use crate::core::msg::Message;
use crate::core::types::NodeId;
use crate::runtime::Event;

/// Messages queued for one peer before new ones are dropped.
const PEER_QUEUE_MESSAGES_MAX: usize = 16_384;
/// Bytes gathered into one socket write.
const WRITE_BATCH_BYTES_MAX: usize = 256 * 1024;
/// First and largest pause between reconnect attempts.
const BACKOFF_MS_MIN: u64 = 50;
const BACKOFF_MS_MAX: u64 = 1_000;
/// A connect attempt that takes longer than this fails.
const CONNECT_TIMEOUT_MS: u64 = 2_000;

/// The sending half: one queue and connection task per peer address.
pub struct Outbound {
    me: NodeId,
    peers: HashMap<String, mpsc::Sender<Message>>,
}

impl Outbound {
    /// No connections yet; they are dialled on first use.
    pub fn new(me: NodeId) -> Self {
        Outbound {
            me,
            peers: HashMap::new(),
        }
    }

    /// Queues `message` for the node at `addr`. A full queue drops it: callers
    /// have deadlines, and a peer that cannot keep up is treated as slow.
    pub fn send(&mut self, addr: &str, message: Message) {
        let queue = self.peers.entry(addr.to_owned()).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(PEER_QUEUE_MESSAGES_MAX);
            tokio::spawn(dial(addr.to_owned(), self.me.clone(), rx));
            tx
        });
        if queue.try_send(message).is_err() {
            tracing::debug!(peer = addr, "peer queue full; message dropped");
        }
    }
}

async fn dial(addr: String, me: NodeId, mut queue: mpsc::Receiver<Message>) {
    let mut backoff_ms = BACKOFF_MS_MIN;
    loop {
        let connect = tokio::time::timeout(
            Duration::from_millis(CONNECT_TIMEOUT_MS),
            TcpStream::connect(&addr),
        );
        match connect.await {
            Ok(Ok(stream)) => {
                backoff_ms = BACKOFF_MS_MIN;
                if !write_loop(stream, &me, &mut queue).await {
                    return;
                }
                tracing::debug!(peer = %addr, "peer connection lost; reconnecting");
            }
            _ => {
                // Whatever waited for this peer is stale by the time it is reachable.
                while queue.try_recv().is_ok() {}
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
async fn write_loop(stream: TcpStream, me: &NodeId, queue: &mut mpsc::Receiver<Message>) -> bool {
    let _ = stream.set_nodelay(true);
    let (mut closed, mut writer) = stream.into_split();
    let mut probe = [0u8; 1];
    let mut buf = Vec::with_capacity(64 * 1024);
    if encode_frame(&Message::Hello { node: me.clone() }, &mut buf).is_err() {
        return false;
    }
    loop {
        if !buf.is_empty() {
            if writer.write_all(&buf).await.is_err() {
                return true;
            }
            buf.clear();
        }
        let first = tokio::select! {
            message = queue.recv() => match message {
                Some(message) => message,
                None => return false,
            },
            _ = closed.read(&mut probe) => return true,
        };
        push(&first, &mut buf);
        while buf.len() < WRITE_BATCH_BYTES_MAX {
            match queue.try_recv() {
                Ok(message) => push(&message, &mut buf),
                Err(_) => break,
            }
        }
    }
}

fn push(message: &Message, buf: &mut Vec<u8>) {
    if let Err(e) = encode_frame(message, buf) {
        tracing::warn!(error = %e, "message not sent");
    }
}

/// Accepts peer connections and turns their frames into events for the node loop.
pub async fn serve(listener: TcpListener, events: mpsc::Sender<Event>) {
    loop {
        match listener.accept().await {
            Ok((stream, remote)) => {
                let _ = stream.set_nodelay(true);
                let events = events.clone();
                tokio::spawn(async move {
                    if let Err(reason) = read_loop(stream, events).await {
                        tracing::warn!(%remote, %reason, "peer connection closed");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "peer accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn read_frame(
    reader: &mut BufReader<TcpStream>,
    body: &mut Vec<u8>,
) -> Result<Option<Message>, String> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    match reader.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.to_string()),
    }
    let len = frame_body_len(header).map_err(|e| e.to_string())?;
    body.clear();
    body.resize(len, 0);
    reader.read_exact(body).await.map_err(|e| e.to_string())?;
    decode_frame_body(body).map(Some).map_err(|e| e.to_string())
}

async fn read_loop(stream: TcpStream, events: mpsc::Sender<Event>) -> Result<(), String> {
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let mut body = Vec::new();
    let from = match read_frame(&mut reader, &mut body).await? {
        Some(Message::Hello { node }) => node,
        Some(_) => return Err("first frame was not a hello".into()),
        None => return Ok(()),
    };
    while let Some(message) = read_frame(&mut reader, &mut body).await? {
        if events
            .send(Event::Peer {
                from: from.clone(),
                message,
            })
            .await
            .is_err()
        {
            return Ok(());
        }
    }
    Ok(())
}
