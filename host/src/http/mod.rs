//! The HTTP API of SPEC §3: routing, request parsing with limits, and turning
//! node answers into status codes and JSON errors.

pub mod auth;
mod respond;
mod route;

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::core::limits::HTTP_HEADER_TIMEOUT_MS;

use crate::runtime::NodeHandle;

/// Accepts HTTP/1.1 connections and serves each on the node's runtime. At
/// most `connections_max` at once (default `HTTP_CONNECTIONS_MAX`; more
/// are closed at once, so descriptors stay for storage and peers), and a
/// request's headers must arrive within [`HTTP_HEADER_TIMEOUT_MS`].
pub async fn serve(listener: TcpListener, node: NodeHandle, connections_max: usize) {
    let connections = std::sync::Arc::new(Semaphore::new(connections_max));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "http accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = connections.clone().try_acquire_owned() else {
            tracing::warn!("too many HTTP connections; one closed on accept");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let node = node.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = service_fn(move |request: Request<Incoming>| {
                let node = node.clone();
                async move {
                    Ok::<Response<Full<Bytes>>, Infallible>(route::handle(request, &node).await)
                }
            });
            if let Err(e) = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_millis(HTTP_HEADER_TIMEOUT_MS))
                // A client that shuts its sending side after the request
                // (`nc -N`, some proxies) still gets its answer.
                .half_close(true)
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "http connection ended");
            }
        });
    }
}
