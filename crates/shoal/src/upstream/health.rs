//! Active health checks: every host of a pool with a `health` section gets a request at an
//! interval; `rise` passes in a row bring a host that is down back, `fall` failures in a row take
//! it down. Changes are logged; the last result of each host is kept for the admin API.

use std::sync::{Arc, Weak};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::Connector;
use super::Pool;
use crate::clock::now_millis;
use crate::config::{HealthConfig, OriginUrl};
use shoal_api::upstreams::CheckResult;

/// Starts the checks of every pool that has them, on the current runtime. A pool's checks end
/// when the pool is gone (a reload removed or replaced it).
pub fn spawn(pools: &[Arc<Pool>]) {
    for pool in pools.iter().filter(|pool| pool.health.is_some()) {
        let tls = match crate::tls::client_config(pool.tls_ca.as_deref(), pool.accept_invalid_certs)
        {
            Ok(tls) => tls,
            Err(error) => {
                tracing::error!(pool = %pool.name, %error, "no health checks for this pool");
                continue;
            }
        };
        // The check sets Host itself (a pool may check a name other than the address).
        let client = check_client(tls, false);
        // A directory is not checked over HTTP: it answers from the node itself.
        for index in (0..pool.hosts.len()).filter(|&index| !pool.hosts[index].url.is_directory()) {
            tokio::spawn(check_host(client.clone(), Arc::downgrade(pool), index));
        }
    }
}

/// The HTTP client of active checks (the pools' and the router's). With `set_host`, the
/// client adds Host from the URI.
pub fn check_client(tls: rustls::ClientConfig, set_host: bool) -> Client<Connector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .set_host(set_host)
        .build(super::connector(tls, None))
}

/// Whether a checked target is up after a check: `rise` passes in a row bring one that is down
/// back, `fall` failures in a row take one that is up down. `streak` counts the checks in a row
/// with this check's outcome, this one included.
pub fn up_after(was_up: bool, passed: bool, streak: u32, rise: u32, fall: u32) -> bool {
    match passed {
        true => was_up || streak >= rise,
        false => was_up && streak < fall,
    }
}

async fn check_host(client: Client<Connector, Empty<Bytes>>, pool: Weak<Pool>, index: usize) {
    let mut streak = (true, 0u32);
    loop {
        let Some(pool) = pool.upgrade() else {
            return;
        };
        let Some(health) = pool.health.clone() else {
            return;
        };
        let host = &pool.hosts[index];
        let result = check(&client, &host.url, &health).await;
        streak = match streak {
            (passed, count) if passed == result.passed => (passed, count + 1),
            _ => (result.passed, 1),
        };
        let detail = result.detail.clone();
        if host.record_check(result, streak.1, &health) {
            if host.is_healthy() {
                tracing::info!(pool = %pool.name, host = %host.url.authority, %detail, "upstream host is up (health check)");
            } else {
                tracing::warn!(pool = %pool.name, host = %host.url.authority, %detail, "upstream host is down (health check)");
            }
        }
        drop(pool);
        tokio::time::sleep(health.interval.duration()).await;
    }
}

async fn check(
    client: &Client<Connector, Empty<Bytes>>,
    url: &OriginUrl,
    health: &HealthConfig,
) -> CheckResult {
    let authority = &url.authority;
    let scheme = if url.tls { "https" } else { "http" };
    let request = http::Request::builder()
        .method(health.method.as_str())
        .uri(format!("{scheme}://{authority}{}", health.path))
        .header(http::header::HOST, authority)
        .header(http::header::USER_AGENT, "shoal-health-check")
        .body(Empty::new());
    let outcome = match request {
        Ok(request) => {
            match tokio::time::timeout(health.timeout.duration(), client.request(request)).await {
                Ok(Ok(response)) if response.status().as_u16() == health.expect => {
                    Ok(response.status())
                }
                Ok(Ok(response)) => Err(format!("status {}", response.status().as_u16())),
                Ok(Err(error)) => Err(error.to_string()),
                Err(_) => Err(format!("no answer within {:?}", health.timeout.duration())),
            }
        }
        Err(error) => Err(error.to_string()),
    };
    CheckResult {
        at: now_millis(),
        passed: outcome.is_ok(),
        detail: match outcome {
            Ok(status) => format!("status {}", status.as_u16()),
            Err(reason) => reason,
        },
    }
}
