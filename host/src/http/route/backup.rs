//! Backup and restore over HTTP: `GET /tables/{t}/export` (pages of this
//! node's own copies), `POST /tables/{t}/import` (objects merged into
//! their replicas), and `GET /tables/{t}/stats` (what this node holds of a
//! table, summed). Objects travel as [`crate::core::backup`] frames.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use serde_json::json;

use super::{quorum_param, read_body, refuse, Refusal};
use crate::core::backup::{
    decode_frames, encode_frame, hex, BackupFrame, TableStats, FRAME_BYTES_MAX, SIBLINGS_LABELS,
};
use crate::core::limits::{CONTENT_TYPE_BYTES_MAX, KEY_BYTES_MAX};
use crate::core::msg::{AdminOp, AdminReply, ClientOp, ClientReply};
use crate::core::types::TableName;
use crate::http::respond::{admin_reply, json_response, HttpResponse};
use crate::runtime::NodeHandle;

/// The media type of export and import bodies.
pub const BACKUP_MEDIA_TYPE: &str = "application/x-cairn-backup";

/// The header naming the key an export continues after (hex).
pub const NEXT_HEADER: &str = "x-cairn-next";

/// The largest import body: one object at its largest plus a batch's worth.
const IMPORT_BODY_BYTES_MAX: usize = FRAME_BYTES_MAX + 8 * 1024 * 1024;

/// Restores of one import run at once at most.
const IMPORT_CONCURRENCY: usize = 32;

/// Keys a stats walk reads per turn of the node loop.
const STATS_PAGE_KEYS: usize = 1_000;

/// `?NAME=` as hex bytes (an export cursor).
fn hex_param(query: &str, name: &str) -> Result<Option<Bytes>, Refusal> {
    let Some(raw) = query
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
    else {
        return Ok(None);
    };
    crate::core::backup::unhex(raw)
        .filter(|bytes| bytes.len() <= KEY_BYTES_MAX)
        .map(|bytes| Some(Bytes::from(bytes)))
        .ok_or_else(|| {
            refuse(
                StatusCode::BAD_REQUEST,
                format!("?{name}= must be hex bytes"),
            )
        })
}

/// `?limit=`: keys per page, 1 to 1000 (default 500).
fn limit_param(query: &str) -> Result<usize, Refusal> {
    match query
        .split('&')
        .find_map(|pair| pair.strip_prefix("limit="))
    {
        None => Ok(500),
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1_000).contains(n))
            .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, "?limit= must be 1 to 1000")),
    }
}

/// One page of this node's copies of `table`, as frames; `x-cairn-next`
/// names the key to continue after, absent once the walk is complete.
pub async fn export(
    request: Request<Incoming>,
    node: &NodeHandle,
    table: TableName,
) -> Result<HttpResponse, Refusal> {
    let query = request.uri().query().unwrap_or("").to_owned();
    let op = AdminOp::ExportPage {
        table,
        after: hex_param(&query, "after")?,
        limit: limit_param(&query)?,
    };
    let (objects, next) = match node.admin(op).await? {
        AdminReply::Page { objects, next } => (objects, next),
        other => return Ok(admin_reply(other)),
    };
    let mut body = Vec::new();
    for (key, object) in objects {
        encode_frame(&BackupFrame::Object { key, object }, &mut body).map_err(|e| {
            refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("encoding a page: {e}"),
            )
        })?;
    }
    let mut response = Response::new(Full::new(Bytes::from(body)));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(BACKUP_MEDIA_TYPE));
    if let Some(next) = next {
        if let Ok(value) = HeaderValue::from_str(&hex(&next)) {
            headers.insert(NEXT_HEADER, value);
        }
    }
    Ok(response)
}

/// Merges every object of the body (frames) into its key's replicas, W of
/// them durably; answers how many were restored and which failed and why:
/// 503 when the cluster could not take some now (the batch may be sent
/// again, merging is idempotent), 422 when some cannot be restored as they
/// are (a refused object, a missing table).
pub async fn import(
    request: Request<Incoming>,
    node: &NodeHandle,
    table: TableName,
) -> Result<HttpResponse, Refusal> {
    let query = request.uri().query().unwrap_or("").to_owned();
    let w = quorum_param(&query, "w")?;
    let body = read_body(request, IMPORT_BODY_BYTES_MAX, node).await?;
    let (frames, used) = decode_frames(&body)
        .map_err(|e| refuse(StatusCode::BAD_REQUEST, format!("not a backup page: {e}")))?;
    if used != body.len() {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "the body ends inside a frame",
        ));
    }
    let mut restores = Vec::with_capacity(frames.len());
    for frame in frames {
        let BackupFrame::Object { key, object } = frame else {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "an import body holds objects only",
            ));
        };
        if key.is_empty() || key.len() > KEY_BYTES_MAX {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                format!("a key is 1 to {KEY_BYTES_MAX} bytes"),
            ));
        }
        if object
            .versions
            .iter()
            .any(|v| v.content_type.len() > CONTENT_TYPE_BYTES_MAX)
        {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                format!(
                    "key {}: a Content-Type longer than {CONTENT_TYPE_BYTES_MAX} bytes",
                    hex(&key)
                ),
            ));
        }
        restores.push((key, object));
    }
    let total = restores.len();
    let mut failed = Vec::new();
    let mut running = tokio::task::JoinSet::new();
    let mut queue = restores.into_iter();
    loop {
        while running.len() < IMPORT_CONCURRENCY {
            let Some((key, object)) = queue.next() else {
                break;
            };
            let (node, table) = (node.clone(), table.clone());
            running.spawn(async move {
                let op = ClientOp::Restore {
                    table,
                    key: key.clone(),
                    object,
                    w,
                };
                (key, node.client(op).await)
            });
        }
        let Some(done) = running.join_next().await else {
            break;
        };
        let Ok((key, outcome)) = done else {
            failed
                .push(json!({"key": "?", "error": "the restore task stopped", "permanent": false}));
            continue;
        };
        // Permanent: sending it again cannot help (the object or the table
        // is the problem); otherwise the cluster could not take it now.
        let (error, permanent) = match outcome {
            Ok(ClientReply::Written { .. }) => continue,
            Ok(ClientReply::QuorumNotReached { needed, acked }) => {
                (format!("{acked} of {needed} replicas stored it in time"), false)
            }
            Ok(ClientReply::UnknownTable) => ("no such table".to_owned(), true),
            Ok(ClientReply::TooManySiblings { siblings }) => (
                format!("merged with what the cluster holds it would have {siblings} siblings or too many bytes"),
                true,
            ),
            Ok(ClientReply::BadRequest(reason)) => (reason, true),
            Ok(other) => (format!("{other:?}"), false),
            Err(unanswered) => (format!("{unanswered:?}"), false),
        };
        failed.push(json!({"key": hex(&key), "error": error, "permanent": permanent}));
    }
    let permanent = failed.iter().any(|f| f["permanent"] == true);
    let status = match (failed.is_empty(), permanent) {
        (true, _) => StatusCode::OK,
        (false, true) => StatusCode::UNPROCESSABLE_ENTITY,
        (false, false) => StatusCode::SERVICE_UNAVAILABLE,
    };
    let mut body = json!({"restored": total - failed.len(), "failed": failed});
    if status != StatusCode::OK {
        body["error"] = json!(format!(
            "{} of {total} objects not restored{}: {}",
            total - body["restored"].as_u64().unwrap_or(0) as usize,
            if permanent {
                " (some cannot be, as they are)"
            } else {
                " (send the batch again)"
            },
            body["failed"]
        ));
    }
    Ok(json_response(status, &body))
}

/// What this node holds of `table`: keys, tombstones, live bytes, and keys
/// by sibling count, from a walk of its own copies a page per loop turn.
pub async fn stats(node: &NodeHandle, table: TableName) -> Result<HttpResponse, Refusal> {
    let mut stats = TableStats::default();
    let mut after = None;
    loop {
        let op = AdminOp::ExportPage {
            table: table.clone(),
            after,
            limit: STATS_PAGE_KEYS,
        };
        let (objects, next) = match node.admin(op).await? {
            AdminReply::Page { objects, next } => (objects, next),
            other => return Ok(admin_reply(other)),
        };
        for (_, object) in &objects {
            stats.add(object);
        }
        match next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let siblings: serde_json::Map<String, serde_json::Value> = SIBLINGS_LABELS
        .iter()
        .zip(stats.siblings)
        .map(|(label, count)| ((*label).to_owned(), json!(count)))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "node": node.node_id.as_str(),
            "table": table.as_str(),
            "keys": stats.keys,
            "tombstones": stats.tombstones,
            "live_bytes": stats.live_bytes,
            "siblings": siblings,
        }),
    ))
}
