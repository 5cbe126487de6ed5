//! The peer handshake's I/O ([`crate::core::peer_auth`] has its arithmetic):
//! both ends of a new peer connection prove the cluster secret before a
//! frame counts, and failures are logged (never with the secret) and
//! counted for `/cluster`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::core::peer_auth::{ClusterSecret, FrameSeal, AUTH_MAGIC, NONCE_BYTES, PROOF_BYTES};

/// The longest a handshake may take (both directions).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// What guards this node's peer links: the secret (`None`: links are not
/// authenticated) and how many connections failed to authenticate, either
/// way round.
#[derive(Debug, Default)]
pub struct PeerGuard {
    secret: Option<ClusterSecret>,
    refused: AtomicU64,
}

impl PeerGuard {
    /// Guards links with `secret`, or leaves them open (`None`).
    pub fn new(secret: Option<ClusterSecret>) -> PeerGuard {
        PeerGuard {
            secret,
            refused: AtomicU64::new(0),
        }
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
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, exchange).await {
            Ok(Ok(seal)) => Ok(Some(seal)),
            Ok(Err(reason)) => {
                self.count_refusal();
                Err(reason)
            }
            Err(_) => {
                self.count_refusal();
                Err("the handshake timed out".to_owned())
            }
        }
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
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, exchange).await {
            Ok(Ok(seal)) => Ok(Some(seal)),
            Ok(Err(reason)) => {
                self.count_refusal();
                Err(reason)
            }
            Err(_) => {
                self.count_refusal();
                Err("the handshake timed out".to_owned())
            }
        }
    }
}

/// A fresh nonce from the OS.
fn nonce() -> Result<[u8; NONCE_BYTES], String> {
    let mut bytes = [0u8; NONCE_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| format!("no OS randomness: {e}"))?;
    Ok(bytes)
}
