//! API keys and roles: who may do what over HTTP, decided without I/O.
//!
//! A key is `cairn_<id>_<secret>`: the id (16 hex digits) names its entry in
//! the cluster metadata, which spreads by gossip like table configs and
//! holds only `HMAC-SHA256(salt, secret)` under a salt drawn for that key;
//! checking a presented key is one HMAC and a constant-time comparison. A
//! revocation is a tombstone that beats the entry on every node it
//! reaches, so a revoked key stays revoked however gossip is ordered.

use std::collections::BTreeMap;

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::types::{NodeId, TableName};

/// The start of every key: greppable in a leaked config, and what tells a
/// key from a typo.
pub const KEY_PREFIX: &str = "cairn_";
/// Hex digits of a key id.
pub const KEY_ID_CHARS: usize = 16;
/// Bytes of a key's secret (drawn from the OS; base64url in the key).
pub const KEY_SECRET_BYTES: usize = 32;
/// Bytes of a key's salt.
pub const KEY_SALT_BYTES: usize = 16;
/// Most tables one key may be limited to (keys spread in every metadata
/// push, so each stays small).
pub const KEY_TABLES_MAX: usize = 16;
/// Most keys (live and revoked) a cluster holds.
pub const KEYS_MAX: usize = 10_000;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    /// Everything: tables, plugins, cluster membership, keys, and data.
    Admin,
    /// Read and write keys (of its tables), and see the cluster.
    ReadWrite,
    /// Read keys (of its tables), and see the cluster.
    ReadOnly,
}

impl Role {
    /// The role's name in the API.
    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::ReadWrite => "read-write",
            Role::ReadOnly => "read-only",
        }
    }

    /// The role named `name`.
    pub fn parse(name: &str) -> Option<Role> {
        match name {
            "admin" => Some(Role::Admin),
            "read-write" => Some(Role::ReadWrite),
            "read-only" => Some(Role::ReadOnly),
            _ => None,
        }
    }
}

/// One key as the cluster holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyEntry {
    /// What it may do.
    pub role: Role,
    /// The tables it is limited to; empty: every table.
    pub tables: Vec<TableName>,
    /// Its salt.
    pub salt: [u8; KEY_SALT_BYTES],
    /// `HMAC-SHA256(salt, secret)`.
    pub hash: [u8; 32],
    /// When it was created (wall clock of the node that created it).
    pub created_ms: u64,
    /// That node.
    pub origin: NodeId,
    /// When it was revoked; `None` while it is live.
    pub revoked_ms: Option<u64>,
}

impl ApiKeyEntry {
    /// The gossip join: a revocation beats the live entry (and of two, the
    /// later), so every node ends with the same entry.
    pub fn supersedes(&self, other: &ApiKeyEntry) -> bool {
        (self.revoked_ms.is_some(), self.revoked_ms)
            > (other.revoked_ms.is_some(), other.revoked_ms)
    }

    /// Whether `secret` is this key's (constant time).
    pub fn holds(&self, secret: &str) -> bool {
        keyed(&self.salt, secret).verify_slice(&self.hash).is_ok()
    }
}

/// `HMAC-SHA256(salt, secret)`, what an entry keeps of its secret.
pub fn secret_hash(salt: &[u8; KEY_SALT_BYTES], secret: &str) -> [u8; 32] {
    keyed(salt, secret).finalize().into_bytes().into()
}

fn keyed(salt: &[u8; KEY_SALT_BYTES], secret: &str) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(salt)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(secret.as_bytes());
    mac
}

/// Splits a presented key into (id, secret); `None` when it is not shaped
/// like a key at all.
pub fn split_key(presented: &str) -> Option<(&str, &str)> {
    let rest = presented.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    (is_key_id(id) && !secret.is_empty() && secret.len() <= 128).then_some((id, secret))
}

/// Whether `id` is shaped like a key id (16 lowercase hex digits).
pub fn is_key_id(id: &str) -> bool {
    id.len() == KEY_ID_CHARS
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// What a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// Nothing (`/health`).
    Nothing,
    /// Seeing the cluster: status, table and plugin configs, the dashboard,
    /// metrics. Any key suffices.
    Observe,
    /// Reading keys of a table.
    Read(TableName),
    /// Writing or deleting keys of a table.
    Write(TableName),
    /// Changing tables, plugins, membership, or keys.
    Admin,
}

/// Why a request was not let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No key, or one the cluster does not hold (401).
    Unauthenticated(&'static str),
    /// A valid key without the right (403).
    Forbidden(String),
}

/// Who a presented key turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The key's id (`"admin-key-file"` for the bootstrap key).
    pub id: String,
    /// Its role.
    pub role: Role,
    /// Its tables (empty: all).
    pub tables: Vec<TableName>,
}

impl Principal {
    /// Whether this key may do what `need` says.
    pub fn permits(&self, need: &Need) -> Result<(), Denied> {
        let table_allowed =
            |table: &TableName| self.tables.is_empty() || self.tables.contains(table);
        let ok = match need {
            Need::Nothing | Need::Observe => true,
            Need::Admin => self.role == Role::Admin,
            Need::Read(table) => table_allowed(table),
            Need::Write(table) => self.role != Role::ReadOnly && table_allowed(table),
        };
        if ok {
            return Ok(());
        }
        Err(Denied::Forbidden(match need {
            Need::Admin => format!(
                "key {} is {}; this needs an admin key",
                self.id,
                self.role.name()
            ),
            Need::Write(table) if self.role == Role::ReadOnly => {
                format!(
                    "key {} is read-only; writing to table {table} needs a read-write key",
                    self.id
                )
            }
            Need::Read(table) | Need::Write(table) => {
                format!("key {} is not allowed on table {table}", self.id)
            }
            Need::Nothing | Need::Observe => String::new(),
        }))
    }
}

/// Finds who `presented` is among `keys`, or whether it is the bootstrap
/// admin key (`--admin-key-file`, held as an entry of its own); 401
/// reasons never echo what was presented.
pub fn authenticate(
    keys: &BTreeMap<String, ApiKeyEntry>,
    bootstrap: Option<&ApiKeyEntry>,
    presented: Option<&str>,
) -> Result<Principal, Denied> {
    let presented = presented.ok_or(Denied::Unauthenticated(
        "this node requires an API key: send Authorization: Bearer <key>",
    ))?;
    if let Some(entry) = bootstrap.filter(|e| e.holds(presented)) {
        return Ok(Principal {
            id: BOOTSTRAP_KEY_ID.to_owned(),
            role: entry.role,
            tables: Vec::new(),
        });
    }
    let (id, secret) = split_key(presented).ok_or(Denied::Unauthenticated(
        "the API key is not valid (keys look like cairn_<id>_<secret>)",
    ))?;
    match keys.get(id) {
        Some(entry) if entry.revoked_ms.is_none() && entry.holds(secret) => Ok(Principal {
            id: id.to_owned(),
            role: entry.role,
            tables: entry.tables.clone(),
        }),
        _ => Err(Denied::Unauthenticated(
            "the API key is not valid (unknown, revoked or wrong)",
        )),
    }
}

/// How the bootstrap admin key (`--admin-key-file`) is named in logs and
/// errors.
pub const BOOTSTRAP_KEY_ID: &str = "admin-key-file";

/// Failed authentications per bucket (the HTTP layer uses client address
/// and key id): past a budget, the bucket's attempts are answered 429
/// without being checked or logged until its window ends, so guessing at a
/// key costs the guesser time, never the node.
#[derive(Debug, Default)]
pub struct FailureBudget {
    /// Per id: failures in the current window and when it began.
    windows: BTreeMap<String, (u32, u64)>,
}

/// Failures allowed per key id per window.
pub const AUTH_FAILURES_PER_WINDOW: u32 = 10;
/// The window, ms.
pub const AUTH_FAILURE_WINDOW_MS: u64 = 60_000;
/// Ids tracked at once (the oldest windows are forgotten first).
const FAILURE_IDS_MAX: usize = 4_096;

impl FailureBudget {
    /// Whether `id` is over its budget at `now_ms`: how long until its
    /// window ends, if so.
    pub fn blocked(&self, id: &str, now_ms: u64) -> Option<u64> {
        let (count, start) = *self.windows.get(id)?;
        let left = (start + AUTH_FAILURE_WINDOW_MS).checked_sub(now_ms)?;
        (count > AUTH_FAILURES_PER_WINDOW && left > 0).then_some(left)
    }

    /// Counts a failure of `id` at `now_ms`; returns how long until it may
    /// fail again unthrottled when this failure took it over budget.
    pub fn fail(&mut self, id: &str, now_ms: u64) -> Option<u64> {
        if self.windows.len() >= FAILURE_IDS_MAX && !self.windows.contains_key(id) {
            let expired: Vec<String> = self
                .windows
                .iter()
                .filter(|(_, (_, start))| now_ms.saturating_sub(*start) >= AUTH_FAILURE_WINDOW_MS)
                .map(|(id, _)| id.clone())
                .collect();
            for id in expired {
                self.windows.remove(&id);
            }
            if self.windows.len() >= FAILURE_IDS_MAX {
                let oldest = self
                    .windows
                    .iter()
                    .min_by_key(|(_, (_, start))| *start)
                    .map(|(id, _)| id.clone());
                if let Some(oldest) = oldest {
                    self.windows.remove(&oldest);
                }
            }
        }
        let window = self.windows.entry(id.to_owned()).or_insert((0, now_ms));
        if now_ms.saturating_sub(window.1) >= AUTH_FAILURE_WINDOW_MS {
            *window = (0, now_ms);
        }
        window.0 += 1;
        (window.0 > AUTH_FAILURES_PER_WINDOW)
            .then(|| (window.1 + AUTH_FAILURE_WINDOW_MS).saturating_sub(now_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str) -> TableName {
        TableName::new(name).unwrap()
    }

    fn entry(role: Role, tables: &[&str], secret: &str) -> ApiKeyEntry {
        let salt = [5; KEY_SALT_BYTES];
        ApiKeyEntry {
            role,
            tables: tables.iter().map(|t| table(t)).collect(),
            salt,
            hash: secret_hash(&salt, secret),
            created_ms: 1,
            origin: NodeId::new("n1").unwrap(),
            revoked_ms: None,
        }
    }

    fn keys(entries: &[(&str, ApiKeyEntry)]) -> BTreeMap<String, ApiKeyEntry> {
        entries
            .iter()
            .map(|(id, e)| (id.to_string(), e.clone()))
            .collect()
    }

    const ID: &str = "0123456789abcdef";

    #[test]
    fn only_the_right_secret_of_a_live_key_authenticates() {
        let held = keys(&[(ID, entry(Role::ReadOnly, &[], "s3cret"))]);
        let who = authenticate(&held, None, Some(&format!("cairn_{ID}_s3cret"))).unwrap();
        assert_eq!((who.id.as_str(), who.role), (ID, Role::ReadOnly));
        for wrong in [
            format!("cairn_{ID}_s3cre"),
            format!("cairn_{ID}_s3cret!"),
            "cairn_0123456789abcdee_s3cret".to_owned(),
            format!("cairn_{}_s3cret", ID.to_uppercase()),
            "s3cret".to_owned(),
            String::new(),
        ] {
            let denied = authenticate(&held, None, Some(&wrong)).unwrap_err();
            assert!(matches!(denied, Denied::Unauthenticated(_)), "{wrong}");
        }
        assert!(authenticate(&held, None, None).is_err());
        let mut revoked = held.clone();
        revoked.get_mut(ID).unwrap().revoked_ms = Some(9);
        assert!(authenticate(&revoked, None, Some(&format!("cairn_{ID}_s3cret"))).is_err());
    }

    #[test]
    fn the_bootstrap_key_is_an_admin_known_by_its_whole_text() {
        let boot = entry(Role::Admin, &[], "any admin key of the operator's");
        let key = "any admin key of the operator's";
        let who = authenticate(&BTreeMap::new(), Some(&boot), Some(key)).unwrap();
        assert_eq!((who.role, who.id.as_str()), (Role::Admin, BOOTSTRAP_KEY_ID));
        assert!(authenticate(&BTreeMap::new(), None, Some(key)).is_err());
        assert!(authenticate(&BTreeMap::new(), Some(&boot), Some("any admin key")).is_err());
    }

    #[test]
    fn roles_and_table_limits_decide_what_a_key_may_do() {
        let who = |role, tables: &[&str]| Principal {
            id: ID.into(),
            role,
            tables: tables.iter().map(|t| table(t)).collect(),
        };
        let (a, b) = (table("a"), table("b"));
        let ro = who(Role::ReadOnly, &[]);
        assert!(ro.permits(&Need::Read(a.clone())).is_ok());
        assert!(ro.permits(&Need::Observe).is_ok());
        assert!(
            matches!(ro.permits(&Need::Write(a.clone())), Err(Denied::Forbidden(r)) if r.contains("read-only"))
        );
        assert!(ro.permits(&Need::Admin).is_err());
        let rw_a = who(Role::ReadWrite, &["a"]);
        assert!(rw_a.permits(&Need::Write(a.clone())).is_ok());
        assert!(
            matches!(rw_a.permits(&Need::Read(b.clone())), Err(Denied::Forbidden(r)) if r.contains("table b"))
        );
        assert!(rw_a.permits(&Need::Write(b.clone())).is_err());
        assert!(rw_a.permits(&Need::Admin).is_err());
        let admin = who(Role::Admin, &[]);
        for need in [Need::Admin, Need::Write(b.clone()), Need::Read(a)] {
            assert!(admin.permits(&need).is_ok());
        }
        // An admin limited to tables still administers, but reads only its own.
        let admin_a = who(Role::Admin, &["a"]);
        assert!(admin_a.permits(&Need::Read(b)).is_err());
    }

    #[test]
    fn a_revocation_wins_the_gossip_join_either_way() {
        let live = entry(Role::Admin, &[], "x");
        let mut revoked = live.clone();
        revoked.revoked_ms = Some(10);
        assert!(revoked.supersedes(&live));
        assert!(!live.supersedes(&revoked));
        let mut later = live.clone();
        later.revoked_ms = Some(11);
        assert!(later.supersedes(&revoked) && !revoked.supersedes(&later));
    }

    #[test]
    fn failures_past_the_budget_are_throttled_per_bucket() {
        let mut budget = FailureBudget::default();
        for _ in 0..AUTH_FAILURES_PER_WINDOW {
            assert_eq!(budget.blocked("k1", 1_000), None);
            assert_eq!(budget.fail("k1", 1_000), None);
        }
        assert_eq!(
            budget.blocked("k1", 1_500),
            None,
            "at the budget, not past it"
        );
        assert_eq!(
            budget.fail("k1", 2_000),
            Some(AUTH_FAILURE_WINDOW_MS - 1_000)
        );
        assert_eq!(
            budget.blocked("k1", 3_000),
            Some(AUTH_FAILURE_WINDOW_MS - 2_000)
        );
        assert_eq!(budget.blocked("k1", 1_000 + AUTH_FAILURE_WINDOW_MS), None);
        // Another id is not affected; a new window starts afresh.
        assert_eq!(budget.fail("k2", 2_000), None);
        assert_eq!(budget.fail("k1", 1_000 + AUTH_FAILURE_WINDOW_MS), None);
        // The table of ids stays bounded.
        for i in 0..(FAILURE_IDS_MAX + 10) {
            budget.fail(&format!("id{i}"), 5_000);
        }
        assert!(budget.windows.len() <= FAILURE_IDS_MAX);
    }
}
