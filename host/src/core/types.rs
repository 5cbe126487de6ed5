//! Validated names: node ids and table names.
//!
//! Constructing one checks the SPEC's pattern once, so the rest of the code can
//! trust any `NodeId` or `TableName` it holds, including ones decoded from peers.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::limits::{NODE_ID_CHARS_MAX, TABLE_NAME_CHARS_MAX};

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Node ids match `[A-Za-z0-9_-]{1,32}`.
    #[error("node id must match [A-Za-z0-9_-]{{1,32}}: {0:?}")]
    NodeId(String),
    /// Table names match `[a-z0-9_-]{1,64}`.
    #[error("table name must match [a-z0-9_-]{{1,64}}: {0:?}")]
    Table(String),
}

/// A member's stable identity. Cheap to clone: it appears in every dot.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(Arc<str>);

impl NodeId {
    /// Checks `[A-Za-z0-9_-]{1,32}`.
    pub fn new(raw: &str) -> Result<Self, NameError> {
        let ok = !raw.is_empty()
            && raw.len() <= NODE_ID_CHARS_MAX
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(NodeId(Arc::from(raw)))
        } else {
            Err(NameError::NodeId(raw.chars().take(64).collect()))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for NodeId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        NodeId::new(&raw).map_err(serde::de::Error::custom)
    }
}

/// Checks a plugin name: the same pattern as table names, `[a-z0-9_-]{1,64}`.
pub fn validate_plugin_name(raw: &str) -> Result<(), String> {
    TableName::new(raw)
        .map(|_| ())
        .map_err(|_| format!("plugin name must match [a-z0-9_-]{{1,64}}: {raw:?}"))
}

/// A table (namespace) name.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableName(Arc<str>);

impl TableName {
    /// Checks `[a-z0-9_-]{1,64}`.
    pub fn new(raw: &str) -> Result<Self, NameError> {
        let ok = !raw.is_empty()
            && raw.len() <= TABLE_NAME_CHARS_MAX
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if ok {
            Ok(TableName(Arc::from(raw)))
        } else {
            Err(NameError::Table(raw.chars().take(80).collect()))
        }
    }

    /// The local store's name for the hints this node keeps for `owner`
    /// (hinted handoff): a name no table can have (it holds a `/`), so the
    /// hints live apart from every table's objects, in the same durable
    /// batches. Never sent to a peer.
    pub fn hints_for(owner: &NodeId) -> Self {
        TableName(Arc::from(format!("hints/{owner}")))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for TableName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TableName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        TableName::new(&raw).map_err(serde::de::Error::custom)
    }
}

/// Checks that `address` reads as HOST:PORT (an IP address or a host name,
/// and a port from 1 to 65535), so a typo in a seed is refused at once
/// instead of leaving a node asking nobody. Names resolve when connecting.
pub fn validate_peer_address(address: &str) -> Result<(), String> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| "a peer address is HOST:PORT".to_owned())?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let host_ok = bare.parse::<core::net::IpAddr>().is_ok()
        || (!bare.is_empty()
            && bare.len() <= 253
            && bare
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
    if !host_ok {
        return Err(format!("{host:?} is neither an IP address nor a host name"));
    }
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok(()),
        _ => Err(format!("{port:?} is not a port from 1 to 65535")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_follow_the_spec_pattern() {
        assert!(NodeId::new("n1").is_ok());
        assert!(NodeId::new("Node_A-9").is_ok());
        assert!(NodeId::new("").is_err());
        assert!(NodeId::new("has space").is_err());
        assert!(NodeId::new(&"x".repeat(33)).is_err());
    }

    #[test]
    fn table_names_are_lowercase() {
        assert!(TableName::new("carts").is_ok());
        assert!(TableName::new("Carts").is_err());
        assert!(TableName::new(&"a".repeat(65)).is_err());
    }

    #[test]
    fn decoding_checks_the_pattern_too() {
        let bytes = postcard::to_allocvec("bad id!").unwrap();
        assert!(postcard::from_bytes::<NodeId>(&bytes).is_err());
    }

    #[test]
    fn peer_addresses_are_host_and_port() {
        for good in [
            "127.0.0.1:9080",
            "node-2.example:9080",
            "[::1]:9080",
            "localhost:1",
        ] {
            assert_eq!(validate_peer_address(good), Ok(()), "{good}");
        }
        for bad in [
            "nonsense",
            "host:",
            "host:0",
            "host:65536",
            ":9080",
            "a b:9080",
            "x:y",
        ] {
            assert!(validate_peer_address(bad).is_err(), "{bad}");
        }
    }
}
