//! pass: a request forwarded to the origin as it is and its answer relayed, never stored;
//! what an unsafe method that succeeds changed is invalidated. Also how any request is
//! rewritten for the origin (`forward_headers`), which fetches share.

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{CONTENT_LOCATION, LOCATION};
use http::{Method, StatusCode};

use super::{
    headers, now_millis, request_host, scheme, target, ClientRequest, Counter, Proxy, ProxyError,
    ProxyResponse, ResponseBody, ResponseHeaders,
};
use crate::cache::CacheStatus;
use crate::upstream::cluster::{MarkedRequest, PEER_HEADER};
use crate::upstream::{RequestBody, Trace};

impl Proxy {
    /// Marks every stored copy of `target` on `host` (both schemes, every variant) as needing
    /// revalidation before its next use: the next request asks the origin conditionally, and
    /// a 304 makes it fresh again. The copy on disk is rewritten with the mark; one only on
    /// disk (not read into RAM) is removed, since marking it would mean reading it first.
    pub fn invalidate_url(&self, host: &str, target: &str) {
        for scheme in ["http", "https"] {
            let key = self.key_of(scheme, host, target);
            let in_ram = self.tiers.ram_entry(key);
            for object in in_ram.iter().flat_map(|entry| entry.variants.iter()) {
                let mut meta = crate::store::ObjectMeta::clone(&object.meta());
                meta.freshness.lifetime = 0;
                meta.freshness.always_revalidate = true;
                object.set_meta(meta);
                self.tiers.rewrite_on_disk(key, object);
            }
            if in_ram.is_none() {
                self.tiers.remove_from_disk(key);
            }
        }
    }

    /// pass: forward the request as it is and relay the answer; unsafe methods that succeed
    /// invalidate what they changed.
    pub(super) async fn pass(
        self: &Arc<Self>,
        request: ClientRequest,
    ) -> Result<ProxyResponse, ProxyError> {
        let ClientRequest {
            head,
            body,
            client,
            tls,
            ..
        } = request;
        let mut forwarded = head.clone();
        self.forward_headers(&mut forwarded, request_host(&head), client, tls);
        self.metrics.add(Counter::OriginRequests, 1);
        let key = self.key_of(scheme(tls), request_host(&head), target(&head));
        let (response, trace) = match self.forward(key, &mut forwarded, body, false).await {
            Ok(answer) => answer,
            Err(error) => {
                self.metrics.origin_failure(&error);
                return Err(error.into());
            }
        };
        if let Some(instruction) = response.extensions().get::<super::reproxy::Instruction>() {
            let (instruction, first) = (instruction.clone(), response.into_parts().0);
            let request = ClientRequest {
                head,
                body: RequestBody::empty(),
                has_body: false,
                client,
                tls,
            };
            return Box::pin(self.follow(instruction, &first.headers, request)).await;
        }
        if !head.method.is_safe()
            && (response.status().is_success() || response.status().is_redirection())
        {
            self.invalidate_after_write(&head, response.headers());
            // A write the node itself made (to a writable pool, authorized): what was stored
            // is gone or replaced, so it goes now rather than waiting to be revalidated.
            let live = self.live();
            if live
                .routes
                .destination(request_host(&head), head.uri.path())
                .pool
                .writable
                .is_some()
            {
                self.purge_written(request_host(&head), &head.uri);
            }
        }
        let status = CacheStatus::Pass;
        let view = ClientRequest {
            head,
            body: RequestBody::empty(),
            has_body: false,
            client,
            tls,
        };
        Ok(self.relay(response, Some(trace), &view, status))
    }

    /// After a write through a writable pool, removes every stored URL whose answer came from
    /// the written file: the URL itself (with and without its query), the directory's URL for
    /// its `index.html`, and the file's own URL when a precompressed sibling (`.br`, `.zst`,
    /// `.gz`) or an `.etag` sidecar was written (they change what that URL answers).
    fn purge_written(&self, host: &str, uri: &http::Uri) {
        let path = uri.path();
        let mut targets = vec![path.to_owned()];
        if let Some(query) = uri.query() {
            targets.push(format!("{path}?{query}"));
        }
        let base = [".br", ".zst", ".gz", ".etag"]
            .iter()
            .find_map(|suffix| path.strip_suffix(suffix));
        for file in std::iter::once(path).chain(base) {
            if file != path {
                targets.push(file.to_owned());
            }
            if let Some(directory) = file.strip_suffix("index.html") {
                targets.push(directory.to_owned());
            }
        }
        for target in &targets {
            for scheme in ["http", "https"] {
                self.purge(self.key_of(scheme, host, target));
            }
        }
    }

    /// RFC 9111 §4.4: a successful unsafe request invalidates the target URI and the
    /// `Location` and `Content-Location` URIs on the same host. Any client may send one, so
    /// invalidating marks the stored copies stale rather than removing them
    /// (`Proxy::invalidate_url`): a flood of writes costs revalidations, never the objects.
    fn invalidate_after_write(&self, head: &http::request::Parts, response: &http::HeaderMap) {
        let host = request_host(head);
        self.invalidate_url(host, target(head));
        for name in [LOCATION, CONTENT_LOCATION] {
            let Some(location) = response.get(name).and_then(|v| v.to_str().ok()) else {
                continue;
            };
            let Ok(uri) = location.parse::<http::Uri>() else {
                continue;
            };
            let same_host = uri
                .authority()
                .is_none_or(|authority| authority.as_str().eq_ignore_ascii_case(host));
            if same_host {
                let path = uri.path_and_query().map_or("/", |p| p.as_str());
                self.invalidate_url(host, path);
            }
        }
    }

    /// Rewrites `head`, a copy of the client's request head, for the origin. `host` is the
    /// client's (`request_host` of the original head, which stays untouched).
    pub(super) fn forward_headers(
        &self,
        head: &mut http::request::Parts,
        host: &str,
        client: SocketAddr,
        tls: bool,
    ) {
        let live = self.live();
        let via = match head.version {
            http::Version::HTTP_10 => &live.via_http10,
            http::Version::HTTP_2 => &live.via_http2,
            _ => &live.via,
        };
        let sender = sender_of(&live, client);
        if !marker_believed(&live, head, host, client, sender) {
            head.headers.remove(PEER_HEADER);
        }
        headers::forward_request(
            &mut head.headers,
            client,
            sender,
            (!host.is_empty()).then_some(host),
            via,
            scheme(tls),
            &live.config.origin,
        );
        if live.config.cache.surrogate_control {
            crate::cache::control::announce_surrogate(&mut head.headers);
        }
        // Origins are spoken to in HTTP/1.1 whatever the client used.
        head.version = http::Version::HTTP_11;
        // The request target in origin form, as the origin client sends it; routing reads the
        // host from `Host` from here on.
        if let Some(path) = head.uri.path_and_query().cloned() {
            head.uri = http::Uri::from(path);
        }
    }

    /// Whether `request` may reach `internal` pools: it carries a peer marker this node
    /// believes, from a peer's own address (a trusted proxy's would be a client's, passed on).
    pub(super) fn sent_by_a_peer(&self, live: &super::Generation, request: &ClientRequest) -> bool {
        let host = request_host(&request.head);
        let sender = headers::Sender::Client;
        marker_believed(live, &request.head, host, request.client, sender)
    }

    /// Relays an origin response to the client without storing it.
    pub(super) fn relay(
        &self,
        response: http::Response<crate::upstream::OriginBody>,
        origin: Option<Trace>,
        request: &ClientRequest,
        cache_status: CacheStatus,
    ) -> ProxyResponse {
        let (mut parts, incoming) = response.into_parts();
        let length = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            // A fetch's answer has had its framing fields taken off already.
            .or_else(|| http_body::Body::size_hint(&incoming).exact());
        headers::forward_response(&mut parts.headers, now_millis());
        let body = if request.head.method == Method::HEAD
            || parts.status == StatusCode::NO_CONTENT
            || parts.status == StatusCode::NOT_MODIFIED
        {
            if request.head.method == Method::HEAD {
                ResponseBody::Omitted(length)
            } else {
                ResponseBody::Empty
            }
        } else {
            ResponseBody::Upstream {
                incoming,
                timeout: self.live().config.origin.body_timeout.duration(),
                metrics: Arc::clone(&self.metrics),
            }
        };
        ProxyResponse {
            status: parts.status,
            headers: ResponseHeaders::Map(parts.headers),
            age: None,
            cache_status,
            body,
            close: false,
            origin,
        }
    }
}

/// The peer marker makes a node fetch from the origin itself: believed only from the peers and
/// the trusted proxies (a parent tier's edges), else anyone could make every node of a cluster
/// fetch each object. With `cluster.secret`, it must also be signed for this request.
fn marker_believed(
    live: &super::Generation,
    head: &http::request::Parts,
    host: &str,
    client: SocketAddr,
    sender: headers::Sender,
) -> bool {
    live.cluster().is_some_and(|cluster| {
        let from = cluster.is_peer(client.ip()) || sender == headers::Sender::TrustedProxy;
        from && head.headers.get(PEER_HEADER).is_some_and(|marker| {
            let request = MarkedRequest {
                method: &head.method,
                host,
                target: target(head),
            };
            cluster.believes(marker, &request, now_millis() / 1000)
        })
    })
}

/// Who sent a request from `client`: a trusted proxy (`server.trusted_proxies`) or a client.
fn sender_of(live: &super::Generation, client: SocketAddr) -> headers::Sender {
    let trusted = live.config.server.trusted_proxies.iter();
    match trusted.into_iter().any(|proxy| proxy.contains(client.ip())) {
        true => headers::Sender::TrustedProxy,
        false => headers::Sender::Client,
    }
}
