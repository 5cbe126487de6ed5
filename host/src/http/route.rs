//! Routing and request parsing: paths, percent-decoded keys, query quorums,
//! context headers, and bodies read under their size limits.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, ALLOW, CACHE_CONTROL, CONNECTION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE,
    RETRY_AFTER, TRANSFER_ENCODING, WWW_AUTHENTICATE,
};
use hyper::{Method, Request, Response, StatusCode};
use percent_encoding::percent_decode_str;

use super::auth::{new_key, AuthRefusal};
use super::respond::{
    admin_reply, client_reply, error, json_response, key_json, overloaded, HttpResponse,
    CONTEXT_HEADER,
};
use crate::core::access::{is_key_id, Need, Role, KEY_TABLES_MAX};
use crate::core::limits::{
    ADMIN_BODY_BYTES_MAX, CONTENT_TYPE_BYTES_MAX, CONTEXT_CHARS_MAX, HTTP_BODY_TIMEOUT_MS,
    KEY_BYTES_MAX,
};
use crate::core::msg::AdminReply;
use crate::core::msg::{AdminOp, ClientOp, ClientReply};
use crate::core::table::TablePatch;
use crate::core::token::ClientContext;
use crate::core::types::{validate_peer_address, validate_plugin_name, NodeId, TableName};
use crate::plugin::MODULE_BYTES_MAX;
use crate::runtime::{NodeHandle, Unanswered};

mod backup;

/// A request that was refused before the node answered it.
#[derive(Debug)]
enum Refusal {
    /// A status with a reason, sent as `{"error": reason}`.
    Status(StatusCode, String),
    /// The node's queue is full: 503 with Retry-After.
    Overloaded,
    /// 405, with the methods the endpoint answers in `Allow`.
    NotAllowed { allow: &'static str, reason: String },
    /// 401, 403 or 429: the request's key does not let it through.
    Auth(AuthRefusal),
}

fn refuse(status: StatusCode, reason: impl Into<String>) -> Refusal {
    Refusal::Status(status, reason.into())
}

impl From<Unanswered> for Refusal {
    fn from(unanswered: Unanswered) -> Self {
        match unanswered {
            Unanswered::Overloaded => Refusal::Overloaded,
            Unanswered::Stopped => {
                refuse(StatusCode::SERVICE_UNAVAILABLE, "the node did not answer")
            }
        }
    }
}

/// Serves one request: inside a span naming the node, the request id, the
/// table and a keyed tag of the key (never the key), and counted in the
/// node's metrics by operation, table and status.
pub async fn handle(
    request: Request<Incoming>,
    node: &NodeHandle,
    remote: std::net::IpAddr,
) -> HttpResponse {
    use tracing::Instrument;
    let started = std::time::Instant::now();
    let shape = RequestShape::of(request.method(), request.uri().path());
    let request_id = super::observe::request_id(request.headers(), node);
    // At `debug`: the node loop's own lines are not in the request's task,
    // so at the default level the span would carry nothing but its cost.
    let span = tracing::debug_span!(
        "request",
        node = %node.node_id,
        id = %request_id,
        method = %request.method(),
        table = shape.table.as_deref().unwrap_or(""),
        key = tracing::field::Empty,
    );
    // Decoded and tagged only when the span is kept (at `debug`).
    if !span.is_disabled() {
        if let Some(raw) = key_segment(request.uri().path()) {
            let key: Vec<u8> = percent_decode_str(raw).collect();
            let tag = super::observe::key_hash(&key, node.token_key());
            span.record("key", tag.as_str());
        }
    }
    let mut response = answer(request, node, remote).instrument(span.clone()).await;
    let status = response.status().as_u16();
    span.in_scope(|| {
        tracing::debug!(
            status,
            micros = started.elapsed().as_micros() as u64,
            "request answered"
        )
    });
    node.metrics.request(
        shape.op,
        node.metrics.table_label(shape.table.as_deref()),
        status,
        started.elapsed(),
    );
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response
            .headers_mut()
            .insert(super::observe::REQUEST_ID_HEADER, value);
    }
    response
}

/// What a request is, for its span and its metrics, read from its method
/// and path alone (before it is parsed for real).
struct RequestShape {
    /// `get`, `put` or `delete` on a key; `observe` for reads of cluster
    /// state, `admin` for changes, `other` for the rest.
    op: &'static str,
    /// The table a key operation names (checked against the cluster's
    /// tables before it becomes a label).
    table: Option<String>,
}

/// The key segment of a key operation's path, as sent (percent-encoded).
fn key_segment(path: &str) -> Option<&str> {
    match path
        .trim_start_matches('/')
        .splitn(4, '/')
        .collect::<Vec<_>>()[..]
    {
        ["tables", _, "keys", key] => Some(key),
        _ => None,
    }
}

impl RequestShape {
    fn of(method: &Method, path: &str) -> RequestShape {
        let segments: Vec<&str> = path.trim_start_matches('/').splitn(4, '/').collect();
        match segments.as_slice() {
            ["tables", table, "keys", _] => {
                let op = match *method {
                    Method::GET | Method::HEAD => "get",
                    Method::PUT => "put",
                    Method::DELETE => "delete",
                    _ => "other",
                };
                RequestShape {
                    op,
                    table: Some((*table).to_owned()),
                }
            }
            _ => RequestShape {
                op: match *method {
                    Method::GET | Method::HEAD => "observe",
                    Method::OPTIONS => "other",
                    _ => "admin",
                },
                table: None,
            },
        }
    }
}

/// Answers one request, turning a refusal into its error answer.
async fn answer(
    request: Request<Incoming>,
    node: &NodeHandle,
    remote: std::net::IpAddr,
) -> HttpResponse {
    match dispatch(request, node, remote).await {
        Ok(response) => response,
        Err(Refusal::Status(status, reason)) => error(status, reason),
        Err(Refusal::Overloaded) => overloaded(),
        Err(Refusal::NotAllowed { allow, reason }) => {
            let mut response = error(StatusCode::METHOD_NOT_ALLOWED, reason);
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static(allow));
            response
        }
        // Refused clients do not keep a connection slot.
        Err(Refusal::Auth(AuthRefusal::Unauthenticated(reason))) => {
            let mut response = error(StatusCode::UNAUTHORIZED, reason);
            let headers = response.headers_mut();
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
            response
        }
        Err(Refusal::Auth(AuthRefusal::Forbidden(reason))) => error(StatusCode::FORBIDDEN, reason),
        Err(Refusal::Auth(AuthRefusal::Throttled(seconds))) => {
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                format!("too many failed authentications with this key; retry in {seconds} s"),
            );
            let headers = response.headers_mut();
            headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
            response
        }
    }
}

/// What a request needs its key to allow (see [`crate::core::access`]).
fn need_of(method: &Method, segments: &[&str]) -> Result<Need, Refusal> {
    Ok(match (method, segments) {
        // The dashboard's page holds no data: it asks for a key and sends it
        // with the requests it makes.
        (_, ["health"] | [""]) => Need::Nothing,
        (
            &Method::GET,
            ["cluster"] | ["metrics"] | ["tables"] | ["tables", _] | ["plugins"] | ["plugins", _],
        ) => Need::Observe,
        (&Method::GET, ["tables", table, "preflist" | "keys", _]) => Need::Read(table_name(table)?),
        (_, ["tables", table, "keys", _]) => Need::Write(table_name(table)?),
        _ => Need::Admin,
    })
}

/// The methods an endpoint answers (the `Allow` header of its 405 and
/// OPTIONS answers), or `None` for a path that is no endpoint.
fn allowed_methods(segments: &[&str]) -> Option<&'static str> {
    Some(match segments {
        [""] | ["health"] | ["cluster"] | ["metrics"] | ["tables"] | ["plugins"] => {
            "GET, HEAD, OPTIONS"
        }
        ["tables", _, "preflist", _] => "GET, HEAD, OPTIONS",
        ["tables", _, "export" | "stats"] => "GET, HEAD, OPTIONS",
        ["tables", _, "import"] => "POST, OPTIONS",
        ["cluster", "join" | "remove" | "replace"] => "POST, OPTIONS",
        ["keys"] => "GET, HEAD, POST, OPTIONS",
        ["keys", _] => "DELETE, OPTIONS",
        ["plugins", _] | ["tables", _] | ["tables", _, "keys", _] => {
            "GET, HEAD, PUT, DELETE, OPTIONS"
        }
        _ => return None,
    })
}

async fn dispatch(
    request: Request<Incoming>,
    node: &NodeHandle,
    remote: std::net::IpAddr,
) -> Result<HttpResponse, Refusal> {
    let path = request.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').splitn(4, '/').collect();
    let Some(allow) = allowed_methods(&segments) else {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            format!("no such endpoint: {path}"),
        ));
    };
    let method = request.method().clone();
    if method == Method::OPTIONS {
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::NO_CONTENT;
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static(allow));
        return Ok(response);
    }
    if !allow.split(", ").any(|m| m == method.as_str()) {
        return Err(Refusal::NotAllowed {
            allow,
            reason: format!("{method} is not allowed on {path}"),
        });
    }
    check_transfer_coding(&request)?;
    // HEAD is answered as GET; hyper sends the head without the body.
    let method = if method == Method::HEAD {
        Method::GET
    } else {
        method
    };
    let need = need_of(&method, &segments)?;
    node.access
        .check(request.headers(), &need, remote)
        .map_err(Refusal::Auth)?;
    match (&method, segments.as_slice()) {
        (&Method::GET, [""]) => Ok(dashboard()),
        (&Method::GET, ["health"]) => Ok(Response::new(Full::new(Bytes::from_static(b"ok")))),
        (&Method::GET, ["cluster"]) => {
            let status = node.admin(AdminOp::ClusterStatus).await?;
            Ok(super::respond::cluster_reply(
                status,
                &node.disk,
                &node.peers,
            ))
        }
        (&Method::GET, ["metrics"]) if !node.metrics.enabled() => Err(refuse(
            StatusCode::NOT_FOUND,
            "metrics are off on this node (--metrics off)",
        )),
        (&Method::GET, ["metrics"]) => {
            let accept = request.headers().get(hyper::header::ACCEPT);
            let format = crate::metrics::Format::accepted(accept.and_then(|v| v.to_str().ok()));
            match node.admin(AdminOp::Report).await? {
                AdminReply::Report(report) => Ok(super::observe::metrics_response(
                    node.metrics
                        .encode_as(*report, node.peers.refused(), format),
                    format,
                )),
                other => Ok(admin_reply(other)),
            }
        }
        (&Method::POST, ["cluster", "join"]) => {
            let body: serde_json::Value = json_body(request, node).await?;
            let seed = body.get("seed").and_then(|s| s.as_str()).ok_or_else(|| {
                refuse(
                    StatusCode::BAD_REQUEST,
                    "body must be {\"seed\":\"HOST:PORT\"}",
                )
            })?;
            validate_peer_address(seed)
                .map_err(|e| refuse(StatusCode::BAD_REQUEST, format!("seed {seed:?}: {e}")))?;
            admin(node, AdminOp::Join(seed.to_owned())).await
        }
        (&Method::POST, ["cluster", "remove"]) => {
            let body: serde_json::Value = json_body(request, node).await?;
            let shape = "body must be {\"node\":\"ID\"} (with \"force\":true for a dead node)";
            let id = node_id_field(&body, "node", shape)?;
            let force = force_field(&body, shape)?;
            admin(node, AdminOp::Remove { node: id, force }).await
        }
        (&Method::POST, ["cluster", "replace"]) => {
            let body: serde_json::Value = json_body(request, node).await?;
            let shape = "body must be {\"old\":\"ID\",\"new\":\"ID\"} (with \"force\":true for a dead old node)";
            let old = node_id_field(&body, "old", shape)?;
            let new = node_id_field(&body, "new", shape)?;
            let force = force_field(&body, shape)?;
            admin(node, AdminOp::Replace { old, new, force }).await
        }
        (&Method::GET, ["tables"]) => admin(node, AdminOp::ListTables).await,
        (&Method::GET, ["tables", table]) => {
            admin(node, AdminOp::GetTable(table_name(table)?)).await
        }
        (&Method::DELETE, ["tables", table]) => {
            admin(node, AdminOp::DropTable(table_name(table)?)).await
        }
        (&Method::PUT, ["tables", table]) => {
            let name = table_name(table)?;
            let patch: TablePatch = json_body(request, node).await?;
            admin(node, AdminOp::PutTable(name, patch)).await
        }
        (&Method::GET, ["tables", table, "preflist", key]) => {
            let op = AdminOp::Preflist(table_name(table)?, key_bytes(key)?);
            admin(node, op).await
        }
        (&Method::GET, ["tables", table, "export"]) => {
            let table = table_name(table)?;
            backup::export(request, node, table).await
        }
        (&Method::POST, ["tables", table, "import"]) => {
            let table = table_name(table)?;
            backup::import(request, node, table).await
        }
        (&Method::GET, ["tables", table, "stats"]) => backup::stats(node, table_name(table)?).await,
        (&Method::GET, ["plugins"]) => admin(node, AdminOp::ListPlugins).await,
        (&Method::POST, ["keys"]) => create_key(request, node).await,
        (&Method::GET, ["keys"]) => admin(node, AdminOp::ListKeys).await,
        (&Method::DELETE, ["keys", id]) => {
            if !is_key_id(id) {
                return Err(refuse(StatusCode::NOT_FOUND, format!("no key {id}")));
            }
            let reply = node.admin(AdminOp::RevokeKey((*id).to_owned())).await?;
            if reply == AdminReply::Deleted {
                node.access.learn_revoked(id);
            }
            Ok(admin_reply(reply))
        }
        (&Method::GET, ["plugins", name]) => {
            admin(node, AdminOp::GetPlugin(plugin_name(name)?)).await
        }
        (&Method::DELETE, ["plugins", name]) => {
            admin(node, AdminOp::DeletePlugin(plugin_name(name)?)).await
        }
        (&Method::PUT, ["plugins", name]) => {
            let name = plugin_name(name)?;
            upload_plugin(request, node, name).await
        }
        (_, ["tables", table, "keys", key]) => {
            let (table, key) = (table_name(table)?, key_bytes(key)?);
            key_operation(request, method, node, table, key).await
        }
        // Every pair allowed above is routed; this is for the compiler.
        _ => Err(Refusal::NotAllowed {
            allow,
            reason: format!("{method} is not allowed on {path}"),
        }),
    }
}

/// `POST /keys {"role":R,"tables":[..]}`: draws the key here, hands only its
/// hash to the node, and shows the key once, in the 201 answer.
async fn create_key(
    request: Request<Incoming>,
    node: &NodeHandle,
) -> Result<HttpResponse, Refusal> {
    let shape = "body must be {\"role\":\"admin\"|\"read-write\"|\"read-only\",\"tables\":[\"T\",...]} (tables optional: all)";
    let body: serde_json::Value = json_body(request, node).await?;
    let fields = body
        .as_object()
        .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, shape))?;
    if let Some(other) = fields.keys().find(|k| *k != "role" && *k != "tables") {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("unknown field {other:?}; {shape}"),
        ));
    }
    let role = fields
        .get("role")
        .and_then(|r| r.as_str())
        .and_then(Role::parse)
        .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, shape))?;
    let tables = match fields.get("tables") {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(serde_json::Value::Array(list)) => {
            if list.len() > KEY_TABLES_MAX {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    format!("a key may be limited to at most {KEY_TABLES_MAX} tables"),
                ));
            }
            let mut tables = Vec::with_capacity(list.len());
            for table in list {
                let name = table
                    .as_str()
                    .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, shape))?;
                tables.push(table_name(name)?);
            }
            tables.sort();
            tables.dedup();
            tables
        }
        Some(_) => return Err(refuse(StatusCode::BAD_REQUEST, shape)),
    };
    if role == Role::Admin && !tables.is_empty() {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "an admin key cannot be limited to tables: it could create a key that is not",
        ));
    }
    let (id, key, entry) =
        new_key(role, tables).map_err(|e| refuse(StatusCode::SERVICE_UNAVAILABLE, e))?;
    match node.admin(AdminOp::CreateKey { id, entry }).await? {
        AdminReply::KeyCreated(id, entry) => {
            node.access.learn(&id, &entry);
            let mut body = key_json(&id, &entry);
            if let serde_json::Value::Object(map) = &mut body {
                map.insert("key".into(), serde_json::Value::String(key));
            }
            let mut response = json_response(StatusCode::CREATED, &body);
            response
                .headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(response)
        }
        other => Ok(admin_reply(other)),
    }
}

/// Refuses bodies in a transfer coding this server does not decode (only
/// `chunked` is): stored undecoded, they would be wrong values. A PUT's
/// `Content-Encoding` is refused by [`key_operation`] for the same reason.
fn check_transfer_coding<B>(request: &Request<B>) -> Result<(), Refusal> {
    for value in request.headers().get_all(TRANSFER_ENCODING) {
        let text = value.to_str().unwrap_or("?");
        for coding in text.split(',').map(str::trim) {
            if !coding.eq_ignore_ascii_case("chunked") {
                return Err(refuse(
                    StatusCode::NOT_IMPLEMENTED,
                    format!("Transfer-Encoding {coding} is not supported; send the body plain or chunked"),
                ));
            }
        }
    }
    Ok(())
}

async fn key_operation(
    request: Request<Incoming>,
    method: Method,
    node: &NodeHandle,
    table: TableName,
    key: Bytes,
) -> Result<HttpResponse, Refusal> {
    let query = request.uri().query().unwrap_or("").to_owned();
    let bound_to = (table.clone(), key.clone());
    let op = match method {
        Method::GET => ClientOp::Get {
            table,
            key,
            r: quorum_param(&query, "r")?,
        },
        Method::PUT => {
            let w = quorum_param(&query, "w")?;
            let context = context_header(&request, &table, &key, node)?;
            let content_type = content_type_header(&request)?;
            for coding in request.headers().get_all(CONTENT_ENCODING) {
                if !coding.as_bytes().eq_ignore_ascii_case(b"identity") {
                    return Err(refuse(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "values are stored as sent: send them without a Content-Encoding",
                    ));
                }
            }
            let value = read_body(request, node.value_bytes_max, node).await?;
            ClientOp::Put {
                table,
                key,
                value: Some(value),
                content_type,
                context,
                w,
            }
        }
        Method::DELETE => {
            let w = quorum_param(&query, "w")?;
            let context = context_header(&request, &table, &key, node)?;
            ClientOp::Put {
                table,
                key,
                value: None,
                content_type: String::new(),
                context,
                w,
            }
        }
        ref other => {
            return Err(refuse(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{other} is not allowed on keys"),
            ))
        }
    };
    if let ClientOp::Put {
        value: Some(value), ..
    } = &op
    {
        node.metrics.write(value.len());
    }
    match node.client(op).await {
        Ok(reply) => {
            if let ClientReply::Read { versions, .. } = &reply {
                let sizes: Vec<usize> = versions
                    .iter()
                    .filter_map(|v| v.value.as_ref().map(|value| value.len()))
                    .collect();
                node.metrics.read(&sizes);
            }
            Ok(client_reply(
                reply,
                &bound_to.0,
                &bound_to.1,
                node.token_key(),
            ))
        }
        Err(unanswered) => Err(unanswered.into()),
    }
}

async fn admin(node: &NodeHandle, op: AdminOp) -> Result<HttpResponse, Refusal> {
    match node.admin(op).await {
        Ok(reply) => Ok(admin_reply(reply)),
        Err(unanswered) => Err(unanswered.into()),
    }
}

fn plugin_name(raw: &str) -> Result<String, Refusal> {
    validate_plugin_name(raw).map_err(|e| refuse(StatusCode::BAD_REQUEST, e))?;
    Ok(raw.to_owned())
}

/// Validates and compiles the module off the node loop, then records it.
async fn upload_plugin(
    request: Request<Incoming>,
    node: &NodeHandle,
    name: String,
) -> Result<HttpResponse, Refusal> {
    let bytes = read_body(request, MODULE_BYTES_MAX, node).await?;
    let runtime = node.plugins.clone();
    let module = bytes.clone();
    let compiled = tokio::task::spawn_blocking(move || runtime.compile(&module))
        .await
        .map_err(|e| {
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("validation did not finish: {e}"),
            )
        })?;
    let plugin =
        compiled.map_err(|e| refuse(StatusCode::BAD_REQUEST, format!("invalid plugin: {e}")))?;
    node.plugins.insert(plugin.clone());
    let op = AdminOp::PutPlugin {
        name,
        sha256: plugin.info.sha256.clone(),
        abi: plugin.info.abi,
        exports: plugin.info.exports.clone(),
        bytes,
    };
    admin(node, op).await
}

/// `body["force"]`: false when absent, a 400 saying the body's `shape`
/// when not a boolean.
fn force_field(body: &serde_json::Value, shape: &str) -> Result<bool, Refusal> {
    match body.get("force") {
        None => Ok(false),
        Some(value) => value
            .as_bool()
            .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, shape)),
    }
}

/// The node id in `body[field]`, or a 400 saying the body's `shape`.
fn node_id_field(body: &serde_json::Value, field: &str, shape: &str) -> Result<NodeId, Refusal> {
    let raw = body
        .get(field)
        .and_then(|v| v.as_str())
        .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, shape))?;
    NodeId::new(raw).map_err(|e| refuse(StatusCode::BAD_REQUEST, format!("{field} {raw:?}: {e}")))
}

fn table_name(raw: &str) -> Result<TableName, Refusal> {
    TableName::new(raw).map_err(|e| refuse(StatusCode::BAD_REQUEST, e.to_string()))
}

/// Percent-decodes `raw`, refusing a `%` not followed by two hex digits
/// (taken literally, `%zz` would name another key than the client meant).
fn percent_decoded(raw: &str, what: &str) -> Result<Vec<u8>, Refusal> {
    let bytes = raw.as_bytes();
    for (i, _) in raw.match_indices('%') {
        let escape = bytes.get(i + 1..i + 3);
        if !escape.is_some_and(|e| e.iter().all(u8::is_ascii_hexdigit)) {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                format!(
                    "{what} has an invalid percent-escape: a % must be followed by two hex digits"
                ),
            ));
        }
    }
    Ok(percent_decode_str(raw).collect())
}

fn key_bytes(raw: &str) -> Result<Bytes, Refusal> {
    let key = percent_decoded(raw, "the key")?;
    if key.is_empty() || key.len() > KEY_BYTES_MAX {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("a key is 1 to {KEY_BYTES_MAX} bytes after percent-decoding"),
        ));
    }
    Ok(Bytes::from(key))
}

/// `?NAME=` as a quorum: percent-decoded, at most once.
fn quorum_param(query: &str, name: &str) -> Result<Option<u8>, Refusal> {
    let mut found = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decoded(k, "the query")? != name.as_bytes() {
            continue;
        }
        if found.is_some() {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                format!("?{name}= given more than once"),
            ));
        }
        let value = percent_decoded(v, "the query")?;
        let parsed = std::str::from_utf8(&value)
            .ok()
            .and_then(|v| v.parse::<u8>().ok())
            .ok_or_else(|| {
                refuse(
                    StatusCode::BAD_REQUEST,
                    format!("?{name}= must be a number between 1 and n"),
                )
            })?;
        found = Some(parsed);
    }
    Ok(found)
}

/// The request's context token, which must have been issued for this key.
fn context_header<B>(
    request: &Request<B>,
    table: &TableName,
    key: &[u8],
    node: &NodeHandle,
) -> Result<Option<ClientContext>, Refusal> {
    let mut values = request.headers().get_all(CONTEXT_HEADER).iter();
    let Some(raw) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "more than one X-Cairn-Context header: send the one context the write descends from",
        ));
    }
    let text = raw
        .to_str()
        .map_err(|_| refuse(StatusCode::BAD_REQUEST, "context token must be ASCII"))?;
    if text.len() > CONTEXT_CHARS_MAX {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("context token longer than {CONTEXT_CHARS_MAX} characters"),
        ));
    }
    let Some(secret) = node.token_key() else {
        return Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node has not joined a cluster yet",
        ));
    };
    ClientContext::decode(text, table, key, &secret)
        .map(Some)
        .map_err(|e| refuse(StatusCode::BAD_REQUEST, e.to_string()))
}

/// The Content-Type of a PUT: printable ASCII of at most
/// [`CONTENT_TYPE_BYTES_MAX`] bytes, stored with the value ("" when absent).
fn content_type_header(request: &Request<Incoming>) -> Result<String, Refusal> {
    let mut values = request.headers().get_all(CONTENT_TYPE).iter();
    let Some(raw) = values.next() else {
        return Ok(String::new());
    };
    if values.next().is_some() {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "more than one Content-Type header",
        ));
    }
    if raw.len() > CONTENT_TYPE_BYTES_MAX {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("Content-Type longer than {CONTENT_TYPE_BYTES_MAX} bytes"),
        ));
    }
    let text = raw
        .to_str()
        .map_err(|_| refuse(StatusCode::BAD_REQUEST, "Content-Type must be ASCII"))?;
    Ok(text.to_owned())
}

/// Reads a body of at most `max` bytes: refused from Content-Length before
/// reading when it announces more, and while reading otherwise.
async fn read_body(
    request: Request<Incoming>,
    max: usize,
    node: &NodeHandle,
) -> Result<Bytes, Refusal> {
    let too_large = || {
        refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body larger than {max} bytes"),
        )
    };
    let announced = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|len| len > max as u64) {
        return Err(too_large());
    }
    let expected = announced.map_or(max, |len| len as usize);
    let _admitted = node.admit_body(expected).ok_or(Refusal::Overloaded)?;
    // A body trickling in must not hold its share of the budget forever.
    let deadline = std::time::Duration::from_millis(HTTP_BODY_TIMEOUT_MS);
    let collected =
        tokio::time::timeout(deadline, Limited::new(request.into_body(), max).collect())
            .await
            .map_err(|_| {
                refuse(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the body did not arrive within {} s",
                        HTTP_BODY_TIMEOUT_MS / 1000
                    ),
                )
            })?;
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(too_large())
        }
        Err(e) => Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("could not read the body: {e}"),
        )),
    }
}

async fn json_body<T: serde::de::DeserializeOwned + Default>(
    request: Request<Incoming>,
    node: &NodeHandle,
) -> Result<T, Refusal> {
    let bytes = read_body(request, ADMIN_BODY_BYTES_MAX, node).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| refuse(StatusCode::BAD_REQUEST, format!("bad JSON: {e}")))
}

fn dashboard() -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from_static(DASHBOARD_HTML.as_bytes())));
    response.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // Nothing but its own inline code and requests to this node.
    response.headers_mut().insert(
        hyper::header::CONTENT_SECURITY_POLICY,
        hyper::header::HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'",
        ),
    );
    response
}

/// The dashboard: one static page, compiled in; it reads `/cluster`,
/// `/tables`, `/plugins` and `/metrics` with the visitor's key and redraws
/// itself every 2 s.
const DASHBOARD_HTML: &str = include_str!("dashboard.html");
