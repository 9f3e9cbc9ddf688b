//! Purges and bans for the whole cluster: the node that receives one with `cluster=1` applies it
//! itself, then sends it (without `cluster=1`, so that it goes no further) to the admin API of
//! every other peer (`cluster.admin`) at once, and reports each peer's answer. The peers share
//! this node's admin token.

use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use shoal_api::cache::{ClusterResult, Invalidation, PeerResult};

use super::{json, text};
use crate::proxy::Proxy;
use crate::upstream::root_cause;

/// How long a peer has to answer.
const PEER_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether the request asks for the whole cluster.
pub(super) fn wanted(query: &str) -> bool {
    query.split('&').any(|pair| pair == "cluster=1")
}

/// Sends `POST path?query` (less `cluster=1`) to every other peer and answers with this node's
/// result (`this_node`), each peer's, and how many failed.
pub(super) async fn to_peers(
    proxy: &Proxy,
    path: &str,
    query: &str,
    token: Option<&str>,
    this_node: Invalidation,
) -> Response<Full<Bytes>> {
    let live = proxy.generation();
    let admins = &live.config.cluster.admin;
    let Some(me) = live.cluster().map(|cluster| cluster.me) else {
        return text(
            StatusCode::BAD_REQUEST,
            "cluster=1: this node is not in a cluster (cluster.peers)\n".into(),
        );
    };
    if admins.is_empty() {
        return text(
            StatusCode::BAD_REQUEST,
            "cluster=1 needs the peers' admin addresses: set cluster.admin (or --peer-admin)\n"
                .into(),
        );
    }
    let forwarded: Vec<&str> = query
        .split('&')
        .filter(|pair| *pair != "cluster=1")
        .collect();
    let target = format!("{path}?{}", forwarded.join("&"));
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let calls = admins
        .iter()
        .enumerate()
        .filter(|(index, _)| *index != me)
        .map(|(_, admin)| {
            let url = format!("http://{}{target}", admin.authority);
            let client = client.clone();
            async move {
                let outcome = call(&client, &url, token).await;
                PeerResult {
                    admin: format!("http://{}", admin.authority),
                    ok: outcome.is_ok(),
                    error: outcome.as_ref().err().cloned(),
                    result: outcome.ok(),
                }
            }
        });
    let peers: Vec<PeerResult<Invalidation>> = futures_util::future::join_all(calls).await;
    let failed = peers.iter().filter(|peer| !peer.ok).count();
    for peer in peers.iter().filter(|peer| !peer.ok) {
        tracing::warn!(peer = %peer.admin, error = peer.error.as_deref().unwrap_or(""), %path, "cluster-wide request failed at a peer");
    }
    json(&ClusterResult {
        this_node,
        peers,
        failed,
    })
}

async fn call(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    url: &str,
    token: Option<&str>,
) -> Result<Invalidation, String> {
    let mut request = http::Request::post(url).header(super::guard::CHANGE_HEADER, "1");
    if let Some(token) = token {
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(Full::new(Bytes::new()))
        .map_err(|error| error.to_string())?;
    let response = tokio::time::timeout(PEER_TIMEOUT, client.request(request))
        .await
        .map_err(|_| format!("no answer within {PEER_TIMEOUT:?}"))?
        .map_err(|error| format!("cannot reach it: {}", root_cause(&error)))?;
    let status = response.status();
    let body = tokio::time::timeout(PEER_TIMEOUT, response.into_body().collect())
        .await
        .map_err(|_| format!("no complete answer within {PEER_TIMEOUT:?}"))?
        .map_err(|error| error.to_string())?
        .to_bytes();
    if !status.is_success() {
        return Err(format!(
            "{status}: {}",
            String::from_utf8_lossy(&body).trim()
        ));
    }
    serde_json::from_slice(&body).map_err(|error| format!("not the answer expected: {error}"))
}
