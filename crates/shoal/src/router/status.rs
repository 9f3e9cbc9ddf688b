//! The router's status API: `GET /status` (nodes, health, weights, answer counts) and
//! `POST /reload`, for operators and `shoal ctl --admin ROUTER nodes|reload`.

use std::sync::atomic::Ordering;
use std::sync::Weak;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use serde::Serialize;

use super::Router;

#[derive(Serialize)]
struct Status {
    /// 1 at start, one more per reload.
    generation: u64,
    nodes: Vec<NodeStatus>,
    /// Answers given, by what decided them.
    answers: Answers,
    /// Whether answers are failing open (every node of a client's rule is down).
    failing_open: bool,
}

#[derive(Serialize)]
struct NodeStatus {
    name: String,
    addresses: Vec<std::net::IpAddr>,
    weight: u32,
    /// The weight choices use now: lowered as the node nears its capacity.
    effective_weight: f64,
    up: bool,
    checked: bool,
    last_check: Option<String>,
    load: Option<super::Load>,
}

#[derive(Serialize)]
struct Answers {
    prefix: u64,
    asn: u64,
    country: u64,
    continent: u64,
    default: u64,
}

/// Serves the status API on `listener` while the router lives.
pub async fn serve(listener: tokio::net::TcpListener, router: Weak<Router>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let router = router.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let router = router.clone();
                    async move {
                        let response = match router.upgrade() {
                            Some(router) => route(&router, request.method(), request.uri().path()),
                            None => text(StatusCode::SERVICE_UNAVAILABLE, "stopping\n".into()),
                        };
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn route(router: &Router, method: &Method, path: &str) -> Response<Full<Bytes>> {
    match (method, path) {
        (&Method::GET, "/status") => {
            let map = router.zone.map.load();
            let count = |index: usize| router.zone.answered[index].load(Ordering::Relaxed);
            let status = Status {
                generation: router.generation(),
                nodes: map
                    .nodes()
                    .iter()
                    .map(|node| NodeStatus {
                        name: node.name.clone(),
                        addresses: node.addresses.clone(),
                        weight: node.weight,
                        effective_weight: node.effective_weight() as f64 / 1000.0,
                        up: node.is_up(),
                        checked: node.check.is_some(),
                        last_check: node.last_check(),
                        load: node.load(),
                    })
                    .collect(),
                answers: Answers {
                    prefix: count(0),
                    asn: count(1),
                    country: count(2),
                    continent: count(3),
                    default: count(4),
                },
                failing_open: map.failing_open(),
            };
            match serde_json::to_vec_pretty(&status) {
                Ok(body) => Response::builder()
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(Full::new(Bytes::from(body)))
                    .unwrap_or_default(),
                Err(error) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")),
            }
        }
        (&Method::POST, "/reload") => match router.reload() {
            Ok(generation) => text(
                StatusCode::OK,
                format!("{{\"generation\": {generation}, \"changed\": [\"map\"], \"needs_restart\": []}}\n"),
            ),
            Err(reason) => text(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("configuration refused, the running one stays: {reason}\n"),
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "router endpoints: GET /status, POST /reload\n".into(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}
