//! Who is asking: the `Authorization: Bearer` key of each request, checked
//! against the cluster's API keys ([`crate::core::access`]) before the
//! request is routed, when `--auth required`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use base64::Engine as _;
use hyper::header::AUTHORIZATION;
use hyper::HeaderMap;

use crate::core::access::{
    authenticate, secret_hash, split_key, ApiKeyEntry, Denied, FailureBudget, Need, Principal,
    Role, KEY_ID_CHARS, KEY_PREFIX, KEY_SALT_BYTES, KEY_SECRET_BYTES,
};
use crate::core::types::NodeId;

/// The shortest bootstrap admin key accepted.
pub const BOOTSTRAP_KEY_CHARS_MIN: usize = 32;

/// Why a request is not let through, as the route answers it.
#[derive(Debug)]
pub enum AuthRefusal {
    /// 401 (with `WWW-Authenticate: Bearer`).
    Unauthenticated(&'static str),
    /// 403.
    Forbidden(String),
    /// 429: this key id failed too often; retry after this many seconds.
    Throttled(u64),
}

/// The node's access rules: whether keys are required, the bootstrap admin
/// key, the cluster's keys as the node loop last published them, and the
/// failed-authentication budget.
pub struct AccessControl {
    required: bool,
    bootstrap: Option<ApiKeyEntry>,
    keys: RwLock<Arc<BTreeMap<String, ApiKeyEntry>>>,
    failures: Mutex<FailureBudget>,
    started: Instant,
}

impl std::fmt::Debug for AccessControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessControl")
            .field("required", &self.required)
            .field("bootstrap", &self.bootstrap.is_some())
            .finish()
    }
}

impl AccessControl {
    /// Keys are checked when `required`; `bootstrap` is the admin key's
    /// text (`--admin-key-file`), kept only as a salted hash.
    pub fn new(required: bool, bootstrap: Option<&str>) -> Result<AccessControl, String> {
        let bootstrap = match bootstrap.map(str::trim) {
            None => None,
            Some(text) if text.len() < BOOTSTRAP_KEY_CHARS_MIN => {
                return Err(format!(
                "the admin key must be at least {BOOTSTRAP_KEY_CHARS_MIN} characters (it has {})",
                text.len()
            ))
            }
            Some(text) => {
                let salt: [u8; KEY_SALT_BYTES] = random()?;
                Some(ApiKeyEntry {
                    role: Role::Admin,
                    tables: Vec::new(),
                    salt,
                    hash: secret_hash(&salt, text),
                    created_ms: 0,
                    origin: NodeId::new("local").map_err(|e| e.to_string())?,
                    revoked_ms: None,
                })
            }
        };
        Ok(AccessControl {
            required,
            bootstrap,
            keys: RwLock::new(Arc::new(BTreeMap::new())),
            failures: Mutex::new(FailureBudget::default()),
            started: Instant::now(),
        })
    }

    /// Whether requests need a key.
    pub fn required(&self) -> bool {
        self.required
    }

    /// Takes the cluster's keys as they are now (the node loop calls this
    /// whenever its metadata's keys change).
    pub fn publish(&self, keys: &BTreeMap<String, ApiKeyEntry>) {
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys.clone());
    }

    /// Takes one key this node just created or revoked, so its own
    /// handlers know it at once (the node loop's next publication agrees).
    pub fn learn(&self, id: &str, entry: &ApiKeyEntry) {
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        if keys.get(id).is_some_and(|held| !entry.supersedes(held)) {
            return;
        }
        let mut updated = (**keys).clone();
        updated.insert(id.to_owned(), entry.clone());
        *keys = Arc::new(updated);
    }

    /// Forgets key `id` as revoked at once on this node.
    pub fn learn_revoked(&self, id: &str) {
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = keys.get(id).filter(|e| e.revoked_ms.is_none()) {
            let mut revoked = entry.clone();
            revoked.revoked_ms = Some(revoked.created_ms);
            let mut updated = (**keys).clone();
            updated.insert(id.to_owned(), revoked);
            *keys = Arc::new(updated);
        }
    }

    /// Whether the published keys are `keys` (so the node loop publishes
    /// only changes).
    pub fn holds(&self, keys: &BTreeMap<String, ApiKeyEntry>) -> bool {
        **self.keys.read().unwrap_or_else(|e| e.into_inner()) == *keys
    }

    /// Lets a request with `headers` from `remote` through to do what
    /// `need` says, or says why not. With keys not required, everyone
    /// passes.
    ///
    /// Failed authentications are budgeted per (client address, key id),
    /// and per address alone for keys not shaped like one (the bootstrap
    /// key's guessers): past the budget an attempt is answered 429 without
    /// being checked, so guessing costs the guesser time, while the key's
    /// holder on another address is not locked out.
    pub fn check(
        &self,
        headers: &HeaderMap,
        need: &Need,
        remote: IpAddr,
    ) -> Result<(), AuthRefusal> {
        if !self.required || *need == Need::Nothing {
            return Ok(());
        }
        let presented = bearer(headers)?;
        let bucket = presented.map(|key| match split_key(key) {
            Some((id, _)) => format!("{remote} {id}"),
            None => remote.to_string(),
        });
        let now_ms = self.started.elapsed().as_millis() as u64;
        if let Some(bucket) = &bucket {
            let blocked = self
                .failures
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .blocked(bucket, now_ms);
            if let Some(wait_ms) = blocked {
                return Err(AuthRefusal::Throttled(wait_ms.div_ceil(1000).max(1)));
            }
        }
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner()).clone();
        let principal: Principal = match authenticate(&keys, self.bootstrap.as_ref(), presented) {
            Ok(principal) => principal,
            Err(Denied::Unauthenticated(reason)) => {
                let Some(bucket) = bucket else {
                    // No key at all: nothing was guessed.
                    return Err(AuthRefusal::Unauthenticated(reason));
                };
                let key_id = presented
                    .and_then(split_key)
                    .map_or("(not a key id)", |(id, _)| id);
                let throttled = self
                    .failures
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .fail(&bucket, now_ms);
                return match throttled {
                    Some(wait_ms) => {
                        // Logged once per window: the attempts that follow are not.
                        tracing::warn!(%remote, key_id, "too many failed authentications: this client's attempts with this key are refused unchecked for a while");
                        Err(AuthRefusal::Throttled(wait_ms.div_ceil(1000).max(1)))
                    }
                    None => {
                        tracing::info!(%remote, key_id, reason, "request refused: not authenticated");
                        Err(AuthRefusal::Unauthenticated(reason))
                    }
                };
            }
            Err(Denied::Forbidden(reason)) => return Err(AuthRefusal::Forbidden(reason)),
        };
        principal.permits(need).map_err(|denied| match denied {
            Denied::Forbidden(reason) => AuthRefusal::Forbidden(reason),
            Denied::Unauthenticated(reason) => AuthRefusal::Unauthenticated(reason),
        })
    }
}

/// The `Authorization: Bearer` key, if any; a header of another scheme or
/// not text is refused.
fn bearer(headers: &HeaderMap) -> Result<Option<&str>, AuthRefusal> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| AuthRefusal::Unauthenticated("the Authorization header is not text"))?;
    let (scheme, key) = text.split_once(' ').unwrap_or((text, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthRefusal::Unauthenticated(
            "only Authorization: Bearer <key> is understood",
        ));
    }
    Ok(Some(key.trim()))
}

/// A new key: (id, the key to hand out once, the entry to store).
pub fn new_key(
    role: Role,
    tables: Vec<crate::core::types::TableName>,
) -> Result<(String, String, ApiKeyEntry), String> {
    let id_bytes: [u8; KEY_ID_CHARS / 2] = random()?;
    let id: String = id_bytes.iter().map(|b| format!("{b:02x}")).collect();
    let secret_bytes: [u8; KEY_SECRET_BYTES] = random()?;
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret_bytes);
    let salt: [u8; KEY_SALT_BYTES] = random()?;
    let entry = ApiKeyEntry {
        role,
        tables,
        salt,
        hash: secret_hash(&salt, &secret),
        created_ms: 0,
        origin: NodeId::new("local").map_err(|e| e.to_string())?,
        revoked_ms: None,
    };
    let key = format!("{KEY_PREFIX}{id}_{secret}");
    Ok((id, key, entry))
}

fn random<const N: usize>() -> Result<[u8; N], String> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| format!("no OS randomness: {e}"))?;
    Ok(bytes)
}
