//! What HTTP adds for operators: request ids, key hashes for logs, and the
//! `/metrics` answer.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use hyper::Response;
use sha2::{Digest, Sha256};

use super::respond::HttpResponse;
use crate::core::token::TokenKey;
use crate::runtime::NodeHandle;

/// The header a request id comes in (a client's, if it sent a sane one) and
/// goes back out in.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Longest request id taken from a client.
const REQUEST_ID_CHARS_MAX: usize = 64;

/// The request's id: the client's `X-Request-Id` when it is 1 to 64 letters,
/// digits, `-`, `_` or `.` (so it can be logged and echoed as is), else one
/// drawn here, unique within the process.
pub fn request_id(headers: &HeaderMap, node: &NodeHandle) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    if let Some(given) = headers.get(REQUEST_ID_HEADER).and_then(|v| v.to_str().ok()) {
        let sane = !given.is_empty()
            && given.len() <= REQUEST_ID_CHARS_MAX
            && given
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if sane {
            return given.to_owned();
        }
    }
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{}-{n:x}", node.node_id)
}

/// What logs show of a key, in hex: [`TokenKey::log_tag`] under the
/// cluster's key (the same on every node, not testable against guesses
/// without it); before the node has joined a cluster, 8 bytes of its
/// SHA-256.
pub fn key_hash(key: &[u8], cluster_key: Option<TokenKey>) -> String {
    match cluster_key {
        Some(cluster_key) => crate::core::backup::hex(&cluster_key.log_tag(key)),
        None => crate::core::backup::hex(&Sha256::digest(key)[..8]),
    }
}

/// `GET /metrics`'s answer, `text` being in `format`.
pub fn metrics_response(text: String, format: crate::metrics::Format) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(text)));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    response
}
