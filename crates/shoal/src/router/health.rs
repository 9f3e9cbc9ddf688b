//! Active checks of the nodes that have a `check` URL: a GET at every interval, a 2xx within
//! the timeout passes; `rise` passes in a row bring a node that is down back, `fall` failures
//! take one that is up down. Changes are logged. The checks of a map end when a reload
//! replaces it (the new map's checks carry on from the same health).

use std::sync::{Arc, Weak};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;

use super::config::HealthConfig;
use super::map::Map;
use crate::upstream::Connector;

/// Starts the checks of `map`'s nodes on the current runtime.
pub fn spawn(map: &Arc<Map>, config: &HealthConfig) {
    let tls = match crate::tls::client_config(None, false) {
        Ok(tls) => tls,
        Err(error) => {
            tracing::error!(%error, "no node health checks");
            return;
        }
    };
    let client = crate::upstream::health::check_client(tls, true);
    for (index, node) in map.nodes().iter().enumerate() {
        if node.check.is_some() {
            tokio::spawn(check_node(
                client.clone(),
                Arc::downgrade(map),
                index,
                config.clone(),
            ));
        }
    }
}

/// The `load` of a node's JSON status, if the answer is one.
async fn read_load(
    response: http::Response<hyper::body::Incoming>,
    timeout: std::time::Duration,
) -> Option<super::Load> {
    use http_body_util::BodyExt;
    #[derive(serde::Deserialize)]
    struct Status {
        load: Option<super::Load>,
    }
    let body = tokio::time::timeout(timeout, response.into_body().collect())
        .await
        .ok()?
        .ok()?
        .to_bytes();
    serde_json::from_slice::<Status>(&body).ok()?.load
}

async fn check_node(
    client: Client<Connector, Empty<Bytes>>,
    map: Weak<Map>,
    index: usize,
    config: HealthConfig,
) {
    loop {
        let Some(map) = map.upgrade() else {
            return;
        };
        let node = &map.nodes()[index];
        let Some(url) = node.check.clone() else {
            return;
        };
        let outcome = match url.parse::<http::Uri>() {
            Ok(uri) => {
                let request = http::Request::get(uri)
                    .header(http::header::USER_AGENT, "shoal-router-check")
                    .body(Empty::new())
                    .expect("a GET with a parsed URI");
                match tokio::time::timeout(config.timeout.duration(), client.request(request)).await
                {
                    Ok(Ok(response)) if response.status().is_success() => {
                        let status = response.status().as_u16();
                        // A node's status reports its load; other check URLs need not.
                        if let Some(load) = read_load(response, config.timeout.duration()).await {
                            node.record_load(load);
                        }
                        Ok(format!("status {status}"))
                    }
                    Ok(Ok(response)) => Err(format!("status {}", response.status().as_u16())),
                    Ok(Err(error)) => Err(crate::upstream::root_cause(&error)),
                    Err(_) => Err(format!("no answer within {:?}", config.timeout.duration())),
                }
            }
            Err(error) => Err(format!("bad check URL: {error}")),
        };
        let passed = outcome.is_ok();
        let detail = outcome.unwrap_or_else(|error| error);
        if node.record_check(passed, detail.clone(), config.rise, config.fall) {
            match node.is_up() {
                true => tracing::info!(node = %node.name, %detail, "node is up"),
                false => tracing::warn!(node = %node.name, %detail, "node is down"),
            }
        }
        drop(map);
        tokio::time::sleep(config.interval.duration()).await;
    }
}
