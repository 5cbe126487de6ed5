//! The peer handshake's I/O ([`crate::core::peer_auth`] has its arithmetic):
//! both ends of a new peer connection prove the cluster secret before a
//! frame counts, and failures are logged (never with the secret) and
//! counted for `/cluster`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::core::peer_auth::{ClusterSecret, FrameSeal, AUTH_MAGIC, NONCE_BYTES, PROOF_BYTES};

/// The longest a handshake may take (both directions).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// Handshakes under way at once on the acceptor's side; more connections
/// are closed at once. Unproven connections never hold a connection slot.
pub const HANDSHAKES_PENDING_MAX: usize = 64;
/// Of those, from one address.
pub const HANDSHAKES_PENDING_PER_ADDRESS_MAX: usize = 8;

/// What guards this node's peer links: the secret (`None`: links are not
/// authenticated), how many connections failed to authenticate (either
/// way round), and the handshakes under way.
#[derive(Debug)]
pub struct PeerGuard {
    secret: Option<ClusterSecret>,
    refused: AtomicU64,
    pending: Mutex<HashMap<IpAddr, usize>>,
    started: Instant,
    /// When a refusal was last logged (ms since `started`): at most one a
    /// second, so a flood of bad connections cannot flood the log.
    logged_ms: AtomicU64,
}

/// A handshake's place among those under way, given back on drop.
pub struct HandshakeAdmission {
    guard: Arc<PeerGuard>,
    from: IpAddr,
}

impl Drop for HandshakeAdmission {
    fn drop(&mut self) {
        let mut pending = self.guard.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = pending.get_mut(&self.from) {
            *count -= 1;
            if *count == 0 {
                pending.remove(&self.from);
            }
        }
    }
}

impl PeerGuard {
    /// Guards links with `secret`, or leaves them open (`None`).
    pub fn new(secret: Option<ClusterSecret>) -> PeerGuard {
        PeerGuard {
            secret,
            refused: AtomicU64::new(0),
            pending: Mutex::new(HashMap::new()),
            started: Instant::now(),
            logged_ms: AtomicU64::new(0),
        }
    }

    /// Admits a new connection from `from` to its handshake, unless too
    /// many are under way (from it, or at all): then `None`, and the
    /// caller closes it.
    pub fn admit(self: &Arc<Self>, from: IpAddr) -> Option<HandshakeAdmission> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let total: usize = pending.values().sum();
        let mine = pending.get(&from).copied().unwrap_or(0);
        if total >= HANDSHAKES_PENDING_MAX || mine >= HANDSHAKES_PENDING_PER_ADDRESS_MAX {
            return None;
        }
        pending.insert(from, mine + 1);
        Some(HandshakeAdmission {
            guard: self.clone(),
            from,
        })
    }

    /// Whether a refusal may be logged now (at most one a second).
    pub fn may_log(&self) -> bool {
        let now = self.started.elapsed().as_millis() as u64 + 1_000;
        let last = self.logged_ms.load(Ordering::Relaxed);
        now >= last + 1_000
            && self
                .logged_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Whether links are authenticated.
    pub fn enabled(&self) -> bool {
        self.secret.is_some()
    }

    /// Connections refused so far (handshakes that failed, frames whose seal
    /// did not hold, either side).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Counts a refusal.
    pub fn count_refusal(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Runs one side's `exchange` within [`HANDSHAKE_TIMEOUT`], counting
    /// a failure either way.
    async fn bounded(
        &self,
        exchange: impl std::future::Future<Output = Result<FrameSeal, String>>,
    ) -> Result<FrameSeal, String> {
        let outcome = tokio::time::timeout(HANDSHAKE_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| Err("the handshake timed out".to_owned()));
        if outcome.is_err() {
            self.count_refusal();
        }
        outcome
    }

    /// The dialer's side: `Ok(None)` when links are open, the seal for
    /// outgoing frames once the acceptor proved itself.
    pub async fn dial<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
    ) -> Result<Option<FrameSeal>, String> {
        let Some(secret) = &self.secret else {
            return Ok(None);
        };
        let exchange = async {
            let mine = nonce()?;
            let mut hello = Vec::with_capacity(AUTH_MAGIC.len() + NONCE_BYTES);
            hello.extend_from_slice(&AUTH_MAGIC);
            hello.extend_from_slice(&mine);
            stream.write_all(&hello).await.map_err(|e| e.to_string())?;
            let mut answer = [0u8; NONCE_BYTES + PROOF_BYTES];
            stream.read_exact(&mut answer).await.map_err(|_| {
                "the peer closed the connection during the handshake (it is stopping, or has no cluster secret or another one)"
                    .to_owned()
            })?;
            let theirs: [u8; NONCE_BYTES] = answer[..NONCE_BYTES]
                .try_into()
                .map_err(|_| "short nonce".to_owned())?;
            if !secret.acceptor_proof_matches(&mine, &theirs, &answer[NONCE_BYTES..]) {
                return Err("the peer did not prove the cluster secret".to_owned());
            }
            let proof = secret.dialer_proof(&mine, &theirs);
            stream.write_all(&proof).await.map_err(|e| e.to_string())?;
            Ok(secret.session(&mine, &theirs))
        };
        self.bounded(exchange).await.map(Some)
    }

    /// The acceptor's side: `Ok(None)` when links are open, the seal
    /// incoming frames must carry once the dialer proved itself.
    pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
    ) -> Result<Option<FrameSeal>, String> {
        let Some(secret) = &self.secret else {
            return Ok(None);
        };
        let exchange = async {
            let mut hello = [0u8; 4 + NONCE_BYTES];
            stream
                .read_exact(&mut hello[..4])
                .await
                .map_err(|e| e.to_string())?;
            if hello[..4] != AUTH_MAGIC {
                return Err(
                    "no handshake: the peer sent frames without proving the cluster secret (is it started without --cluster-secret-file?)"
                        .to_owned(),
                );
            }
            stream
                .read_exact(&mut hello[4..])
                .await
                .map_err(|e| e.to_string())?;
            let theirs: [u8; NONCE_BYTES] = hello[4..]
                .try_into()
                .map_err(|_| "short nonce".to_owned())?;
            let mine = nonce()?;
            let mut answer = Vec::with_capacity(NONCE_BYTES + PROOF_BYTES);
            answer.extend_from_slice(&mine);
            answer.extend_from_slice(&secret.acceptor_proof(&theirs, &mine));
            stream.write_all(&answer).await.map_err(|e| e.to_string())?;
            let mut proof = [0u8; PROOF_BYTES];
            stream.read_exact(&mut proof).await.map_err(|_| {
                "the peer gave up the handshake (another cluster secret?)".to_owned()
            })?;
            if !secret.dialer_proof_matches(&theirs, &mine, &proof) {
                return Err(
                    "the peer's proof does not hold (another cluster secret, or a replay)"
                        .to_owned(),
                );
            }
            Ok(secret.session(&theirs, &mine))
        };
        self.bounded(exchange).await.map(Some)
    }
}

/// A fresh nonce from the OS.
fn nonce() -> Result<[u8; NONCE_BYTES], String> {
    let mut bytes = [0u8; NONCE_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| format!("no OS randomness: {e}"))?;
    Ok(bytes)
}
