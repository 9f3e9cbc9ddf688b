//! The router's status API: `GET /status` (nodes, health, weights, answer counts) and
//! `POST /reload`, for operators and `shoal ctl --admin ROUTER nodes|reload`.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use shoal_api::node::ReloadReport;
use shoal_api::path;
use shoal_api::router::{Answers, NodeStatus, RouterStatus};

use super::Router;
use crate::admin::{json, text};

/// Answers one request to the status API.
pub(super) fn answer(
    router: &Router,
    request: &http::Request<hyper::body::Incoming>,
    _: std::net::SocketAddr,
) -> Response<Full<Bytes>> {
    route(router, request.method(), request.uri().path())
}

fn route(router: &Router, method: &Method, path: &str) -> Response<Full<Bytes>> {
    match (method, path) {
        (&Method::GET, path::STATUS) => {
            let map = router.zone.map.load();
            let count = |index: usize| router.zone.answered[index].load(Ordering::Relaxed);
            let status = RouterStatus {
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
            json(&status)
        }
        (&Method::POST, path::RELOAD) => match router.reload() {
            Ok(generation) => json(&ReloadReport {
                generation,
                changed: vec!["map".into()],
                needs_restart: Vec::new(),
            }),
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
