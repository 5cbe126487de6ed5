//! Helpers for plugins whose values are JSON, the common case.

use serde::de::DeserializeOwned;

use crate::Sibling;

/// Parses every sibling as `T`; `None` when any is not valid JSON of that
/// shape (the example plugins then keep the siblings for the client).
pub fn parse_all<T: DeserializeOwned>(siblings: &[Sibling]) -> Option<Vec<T>> {
    siblings
        .iter()
        .map(|s| serde_json::from_slice(&s.value).ok())
        .collect()
}

/// Serialises a merged JSON value (object keys come out sorted when `T` is a
/// `BTreeMap`, so equal merges are equal bytes).
pub fn to_bytes<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}
