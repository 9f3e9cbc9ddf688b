//! The built-in demo origin: a small static-file server, started by `shoal serve` when no
//! origin is configured, so that a node run with no arguments serves something real. It sends
//! validators (`ETag`, `Last-Modified`) and `Cache-Control: public, max-age=60`, so the first
//! request through the node is a MISS and the next a HIT.

use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, LAST_MODIFIED};
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const FALLBACK_INDEX: &str = include_str!("../../../examples/site/index.html");

/// Binds the demo origin on `address`, serving `root`; returns the bound address.
pub async fn start(address: SocketAddr, root: PathBuf) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    let root = Arc::new(root);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let root = Arc::clone(&root);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: http::Request<hyper::body::Incoming>| {
                        let root = Arc::clone(&root);
                        async move {
                            Ok::<_, std::convert::Infallible>(
                                serve_file(&root, request.method(), request.uri().path()).await,
                            )
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(bound)
}

async fn serve_file(root: &Path, method: &Method, path: &str) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    let relative = path.trim_start_matches('/');
    let relative = if relative.is_empty() || relative.ends_with('/') {
        format!("{relative}index.html")
    } else {
        relative.to_owned()
    };
    let relative = PathBuf::from(relative);
    if relative
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    }
    let file = root.join(&relative);
    let (body, modified) = match tokio::fs::read(&file).await {
        Ok(body) => {
            let modified = tokio::fs::metadata(&file)
                .await
                .ok()
                .and_then(|m| m.modified().ok());
            (Bytes::from(body), modified)
        }
        Err(_) if relative == Path::new("index.html") => {
            (Bytes::from_static(FALLBACK_INDEX.as_bytes()), None)
        }
        Err(_) => return plain(StatusCode::NOT_FOUND, "not found\n"),
    };
    let mut response = Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, content_type(&relative))
        .header(CACHE_CONTROL, "public, max-age=60");
    if let Some(modified) = modified {
        let seconds = modified
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        response = response
            .header(LAST_MODIFIED, httpdate::fmt_http_date(modified))
            .header(ETAG, format!("\"{:x}-{:x}\"", body.len(), seconds));
    }
    let body = if method == Method::HEAD {
        Bytes::new()
    } else {
        body
    };
    response
        .body(Full::new(body))
        .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "error\n"))
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("txt") => "text/plain; charset=utf-8",
        Some("css") => "text/css",
        Some("js") => "text/javascript",
        Some("json") => "application/json",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        _ => "application/octet-stream",
    }
}
