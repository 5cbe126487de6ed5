//! The HTTP API of SPEC §3: routing, request parsing with limits, and turning
//! node answers into status codes and JSON errors.

pub mod auth;
mod observe;
mod respond;
mod route;
pub mod tls;

use std::convert::Infallible;
use std::sync::Arc;

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

/// Accepts HTTP/1.1 connections (over TLS when `tls` is given) and serves
/// each on the node's runtime. At most `connections_max` at once (default
/// `HTTP_CONNECTIONS_MAX`; more are closed at once, so descriptors stay
/// for storage and peers); a TLS handshake and then a request's headers
/// must each arrive within [`HTTP_HEADER_TIMEOUT_MS`] (slowloris).
pub async fn serve(
    listener: TcpListener,
    node: NodeHandle,
    connections_max: usize,
    tls: Option<Arc<tls::TlsReloader>>,
) {
    let connections = Arc::new(Semaphore::new(connections_max));
    loop {
        let (stream, remote) = match listener.accept().await {
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
        let tls = tls.as_ref().map(|t| t.current());
        tokio::spawn(async move {
            let _slot = slot;
            match tls {
                None => serve_connection(stream, node, remote.ip()).await,
                Some(config) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(config);
                    let within = std::time::Duration::from_millis(HTTP_HEADER_TIMEOUT_MS);
                    match tokio::time::timeout(within, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => serve_connection(stream, node, remote.ip()).await,
                        Ok(Err(e)) => tracing::debug!(%remote, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

/// Serves HTTP/1.1 on one connection until it ends.
async fn serve_connection<S>(stream: S, node: NodeHandle, remote: std::net::IpAddr)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request: Request<Incoming>| {
        let node = node.clone();
        async move {
            Ok::<Response<Full<Bytes>>, Infallible>(route::handle(request, &node, remote).await)
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
}
