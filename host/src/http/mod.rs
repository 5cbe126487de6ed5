//! The HTTP API of SPEC §3: routing, request parsing with limits, and turning
//! node answers into status codes and JSON errors.

mod respond;
mod route;

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::runtime::NodeHandle;

/// Accepts HTTP/1.1 connections and serves each on the node's runtime.
pub async fn serve(listener: TcpListener, node: NodeHandle) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "http accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let node = node.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let node = node.clone();
                async move {
                    Ok::<Response<Full<Bytes>>, Infallible>(route::handle(request, &node).await)
                }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "http connection ended");
            }
        });
    }
}
