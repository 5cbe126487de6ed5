//! Node answers → HTTP responses, in one place per answer type, each variant
//! matched exhaustively so a new outcome cannot go unmapped.

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use crate::core::meta::PluginEntry;
use crate::core::msg::{AdminReply, ClientReply, ClusterStatus, PluginFailure};
use crate::core::table::{MergeMode, TableConfig};
use crate::core::token::{ClientContext, TokenKey};
use crate::core::types::{NodeId, TableName};
use crate::storage::DiskGauge;

/// The header carrying context tokens both ways.
pub const CONTEXT_HEADER: &str = "x-cairn-context";
/// How many versions a plugin merged into a 200.
pub const MERGED_HEADER: &str = "x-cairn-merged";
/// Why a plugin could not merge a 300.
pub const PLUGIN_ERROR_HEADER: &str = "x-cairn-plugin-error";

/// An HTTP response.
pub type HttpResponse = Response<Full<Bytes>>;

/// A JSON body with a status.
pub fn json_response(status: StatusCode, body: &Value) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// `{"error": message}` with a status.
pub fn error(status: StatusCode, message: impl Into<String>) -> HttpResponse {
    json_response(status, &json!({ "error": message.into() }))
}

/// 503 `{"error":"overloaded"}` with Retry-After.
pub fn overloaded() -> HttpResponse {
    let mut response = error(StatusCode::SERVICE_UNAVAILABLE, "overloaded");
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

fn with_context(mut response: HttpResponse, token: Option<String>) -> HttpResponse {
    if let Some(value) = token.and_then(|t| HeaderValue::from_str(&t).ok()) {
        response.headers_mut().insert(CONTEXT_HEADER, value);
    }
    response
}

/// Adds `X-Cairn-Merged` and `X-Cairn-Plugin-Error` when a plugin took part.
fn with_plugin_headers(
    mut response: HttpResponse,
    merged: Option<u32>,
    plugin_error: Option<PluginFailure>,
) -> HttpResponse {
    if let Some(count) = merged {
        response
            .headers_mut()
            .insert(MERGED_HEADER, HeaderValue::from(count));
    }
    let header = plugin_error.map(|e| e.header_value());
    if let Some(value) = header.and_then(|e| HeaderValue::from_str(&e).ok()) {
        response.headers_mut().insert(PLUGIN_ERROR_HEADER, value);
    }
    response
}

/// A key operation's answer; context tokens are bound to `key` of `table`
/// and MACed with the cluster's `token_key`.
pub fn client_reply(
    reply: ClientReply,
    table: &TableName,
    key: &[u8],
    token_key: Option<TokenKey>,
) -> HttpResponse {
    let encode = |c: &ClientContext| token_key.map(|secret| c.encode(table, key, &secret));
    match reply {
        ClientReply::Read {
            versions,
            context,
            merge,
            merged,
            plugin_error,
        } => {
            let token = context.as_ref().and_then(encode);
            let response = match versions.len() {
                0 => with_context(error(StatusCode::NOT_FOUND, "not found"), token),
                1 => {
                    let version = &versions[0];
                    let body = version.value.clone().unwrap_or_default();
                    let mut response = Response::new(Full::new(body));
                    let content_type = HeaderValue::from_str(&version.content_type)
                        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
                    response.headers_mut().insert(CONTENT_TYPE, content_type);
                    with_context(response, token)
                }
                _ => {
                    debug_assert!(merge != MergeMode::Lww, "lww keeps one version");
                    let siblings: Vec<Value> = versions
                        .iter()
                        .map(|v| {
                            json!({
                                "value": base64::engine::general_purpose::STANDARD.encode(v.value.as_deref().unwrap_or_default()),
                                "content_type": v.content_type,
                                "timestamp_ms": v.timestamp_ms,
                            })
                        })
                        .collect();
                    let body = json!({ "context": token.clone().unwrap_or_default(), "siblings": siblings });
                    with_context(json_response(StatusCode::MULTIPLE_CHOICES, &body), token)
                }
            };
            with_plugin_headers(response, merged, plugin_error)
        }
        ClientReply::Written { context } => {
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = StatusCode::NO_CONTENT;
            with_context(response, encode(&context))
        }
        ClientReply::QuorumNotReached { needed, acked } => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({ "error": "quorum not reached", "needed": needed, "acked": acked }),
        ),
        ClientReply::UnknownTable => error(StatusCode::NOT_FOUND, "unknown table"),
        ClientReply::TooManySiblings { siblings } => json_response(
            StatusCode::CONFLICT,
            &json!({ "error": "too many siblings", "siblings": siblings }),
        ),
        ClientReply::Overloaded => overloaded(),
        ClientReply::BadRequest(message) => error(StatusCode::BAD_REQUEST, message),
        ClientReply::Unavailable(message) => error(StatusCode::SERVICE_UNAVAILABLE, message),
        ClientReply::InsufficientStorage(message) => json_response(
            StatusCode::INSUFFICIENT_STORAGE,
            &json!({ "error": "insufficient storage", "reason": message }),
        ),
    }
}

/// A table's JSON form: its name and stored config.
pub fn table_json(name: &TableName, config: &TableConfig) -> Value {
    let mut value = serde_json::to_value(config).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.retain(|_, v| !v.is_null());
        map.insert("name".into(), Value::String(name.to_string()));
    }
    value
}

/// A plugin's JSON form: `{"name","sha256","abi","exports","size_bytes"}`.
fn plugin_json(name: &str, entry: &PluginEntry) -> Value {
    json!({
        "name": name,
        "sha256": entry.sha256,
        "abi": entry.abi,
        "exports": entry.exports.iter().filter(|e| *e != "samples").collect::<Vec<_>>(),
        "size_bytes": entry.size_bytes,
    })
}

fn cluster_json(status: ClusterStatus) -> Value {
    let members: Vec<Value> = status
        .members
        .iter()
        .map(|m| {
            json!({ "id": m.id.as_str(), "http": m.http, "peer": m.peer, "status": m.status, "partitions": m.partitions, "partitions_next": m.partitions_next })
        })
        .collect();
    let join = status.join.map(|j| match j.failure {
        None => json!({ "seed": j.seed, "state": "joining" }),
        Some(reason) => json!({ "seed": j.seed, "state": "failed", "reason": reason }),
    });
    let hints_pending: serde_json::Map<String, Value> = status
        .hints
        .iter()
        .map(|h| (h.owner.to_string(), json!(h.pending)))
        .collect();
    let hints: serde_json::Map<String, Value> = status
        .hints
        .iter()
        .map(|h| {
            let mut entry =
                json!({ "pending": h.pending, "delivered": h.delivered, "state": h.state });
            if let (Some(error), Value::Object(map)) = (&h.error, &mut entry) {
                map.insert("error".into(), json!(error));
            }
            (h.owner.to_string(), entry)
        })
        .collect();
    let ring_move = status.ring_move.map(|m| {
        let left: serde_json::Map<String, Value> = m
            .copies_left_by_node
            .iter()
            .map(|(node, n)| (node.to_string(), json!(n)))
            .collect();
        json!({
            "partitions_moving": m.partitions_moving,
            "copies_total": m.copies_total,
            "copies_done": m.copies_done,
            "copies_left": left,
        })
    });
    let transfers: Vec<Value> = status
        .transfer
        .iter()
        .map(|t| {
            json!({
                "receiver": status.node.as_str(),
                "source": t.source.as_ref().map(|s| s.to_string()),
                "partitions_left": t.partitions_left,
                "keys": t.keys,
                "bytes": t.bytes,
                "resumed_keys": t.resumed_keys,
                "keys_per_s": t.keys_per_s,
                "bytes_per_s": t.bytes_per_s,
                "eta_s": t.eta_s,
            })
        })
        .collect();
    let ring: Vec<&str> = status.ring_owners.iter().map(NodeId::as_str).collect();
    let mut body = json!({
        "node": status.node.as_str(),
        "members": members,
        "ring": ring,
        "join": join,
        "ring_move": ring_move,
        "transfers": transfers,
        "hints_pending": hints_pending,
        "hints": hints,
        "hints_refused_full": status.hints_refused_full,
        "tombstones_pending": status.tombstones.pending,
        "tombstones": {
            "pending": status.tombstones.pending,
            "collected": status.tombstones.collected,
            "checks_timed_out": status.tombstones.checks_timed_out,
            "grace_ms": status.tombstones.grace_ms,
        },
    });
    if let (Some(ae), Value::Object(map)) = (status.antientropy, &mut body) {
        map.insert(
            "antientropy".into(),
            json!({
                "last_exchange_ms": ae.last_exchange_ms,
                "oldest_exchange_ms": ae.oldest_exchange_ms,
                "partitions": ae.partitions,
                "never_compared": ae.never_compared,
                "divergent": ae.divergent,
                "trees_built": ae.trees_built,
                "keys_held": ae.keys_held,
                "exchanges": ae.stats.exchanges,
                "differing": ae.stats.differing,
                "keys_repaired": ae.stats.objects_repaired,
                "objects_sent": ae.stats.objects_sent,
                "bytes_sent": ae.stats.bytes_sent,
                "message_bytes": ae.stats.message_bytes,
                "throttled_turns": ae.stats.throttled_turns,
                "keys_per_s": ae.keys_per_s,
                "bytes_per_s": ae.bytes_per_s,
            }),
        );
    }
    body
}

/// `GET /cluster`: the node's view of the cluster, and its own disk: free
/// bytes, the reserve, and whether writes are refused for want of space.
pub fn cluster_reply(
    reply: AdminReply,
    disk: &DiskGauge,
    peers: &crate::net::handshake::PeerGuard,
) -> HttpResponse {
    let AdminReply::Cluster(status) = reply else {
        return admin_reply(reply);
    };
    let mut body = cluster_json(*status);
    if let Value::Object(map) = &mut body {
        let writes = if disk.refusing() {
            "refused"
        } else {
            "accepted"
        };
        map.insert(
            "disk".into(),
            json!({ "free_bytes": disk.free_bytes(), "reserve_bytes": disk.reserve_bytes(), "writes": writes }),
        );
        map.insert(
            "peer_links".into(),
            json!({ "authenticated": peers.enabled(), "refused": peers.refused() }),
        );
    }
    json_response(StatusCode::OK, &body)
}

/// An API key as `GET /keys` shows it: never its hash or salt.
pub fn key_json(id: &str, entry: &crate::core::access::ApiKeyEntry) -> Value {
    let tables: Vec<&str> = entry.tables.iter().map(|t| t.as_str()).collect();
    json!({
        "id": id,
        "role": entry.role.name(),
        "tables": tables,
        "created_ms": entry.created_ms,
        "created_by": entry.origin.as_str(),
        "revoked": entry.revoked_ms.is_some(),
        "revoked_ms": entry.revoked_ms,
    })
}

/// An admin operation's answer.
pub fn admin_reply(reply: AdminReply) -> HttpResponse {
    match reply {
        AdminReply::Table(name, config) => {
            json_response(StatusCode::OK, &table_json(&name, &config))
        }
        AdminReply::Tables(tables) => {
            let list: Vec<Value> = tables.iter().map(|(n, c)| table_json(n, c)).collect();
            json_response(StatusCode::OK, &json!({ "tables": list }))
        }
        AdminReply::Cluster(status) => json_response(StatusCode::OK, &cluster_json(*status)),
        AdminReply::Preflist {
            primaries,
            fallbacks,
        } => {
            let names = |ids: &[crate::core::types::NodeId]| {
                ids.iter().map(|i| i.to_string()).collect::<Vec<_>>()
            };
            json_response(
                StatusCode::OK,
                &json!({ "primaries": names(&primaries), "fallbacks": names(&fallbacks) }),
            )
        }
        AdminReply::Accepted(state) => {
            json_response(StatusCode::ACCEPTED, &json!({ "status": state }))
        }
        AdminReply::Plugin {
            name,
            entry,
            created,
            spread,
        } => {
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            let mut body = plugin_json(&name, &entry);
            if let (Some((holding, members)), Value::Object(map)) = (spread, &mut body) {
                map.insert(
                    "nodes".into(),
                    json!({ "holding": holding, "members": members }),
                );
            }
            json_response(status, &body)
        }
        AdminReply::Plugins(plugins) => {
            let list: Vec<Value> = plugins.iter().map(|(n, e)| plugin_json(n, e)).collect();
            json_response(StatusCode::OK, &json!({ "plugins": list }))
        }
        AdminReply::KeyCreated(id, entry) => {
            json_response(StatusCode::CREATED, &key_json(&id, &entry))
        }
        AdminReply::Keys(keys) => {
            let list: Vec<Value> = keys.iter().map(|(id, e)| key_json(id, e)).collect();
            json_response(StatusCode::OK, &json!({ "keys": list }))
        }
        AdminReply::Deleted => {
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = StatusCode::NO_CONTENT;
            response
        }
        AdminReply::NotFound(message) => error(StatusCode::NOT_FOUND, message),
        AdminReply::Invalid(message) => error(StatusCode::BAD_REQUEST, message),
        AdminReply::Conflict(message) => error(StatusCode::CONFLICT, message),
        AdminReply::Unavailable(message) => error(StatusCode::SERVICE_UNAVAILABLE, message),
        // Read by `/metrics`, never answered as it is.
        AdminReply::Report(_) | AdminReply::Page { .. } => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "a node report or page reached the JSON answers",
        ),
    }
}
