//! The checks of a whole configuration that no single value's parsing can make: values that
//! must agree with each other, limits, and references between sections.

use super::{ByteSize, Config, MAX_DEFER_ACCEPT};

impl Config {
    pub(super) fn check(&self) -> Result<(), (&'static [&'static str], String)> {
        if self.server.listen.is_empty() && self.server.listen_tls.is_empty() {
            return Err((
                &["server.listen", "server.listen_tls"],
                "at least one address is needed".into(),
            ));
        }
        if !self.server.listen_tls.is_empty() && self.tls.certificates.is_empty() {
            return Err((
                &["server.listen_tls", "tls.certificates"],
                "TLS listeners need a certificate: add [[tls.certificates]] (cert and key)".into(),
            ));
        }
        if self.server.redirect_to_https && self.server.listen_tls.is_empty() {
            return Err((
                &["server.redirect_to_https", "server.listen_tls"],
                "redirecting to HTTPS needs a TLS listener (server.listen_tls)".into(),
            ));
        }
        if self.server.tcp_notsent_lowat.bytes() > u64::from(u32::MAX) {
            return Err((
                &["server.tcp_notsent_lowat"],
                "expected a size below 4GiB".into(),
            ));
        }
        if self.server.defer_accept.duration() > MAX_DEFER_ACCEPT {
            return Err((
                &["server.defer_accept"],
                "expected at most 60s (a client that sends nothing would wait that long)".into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.cache.heuristic_fraction) {
            return Err((
                &["cache.heuristic_fraction"],
                "expected a fraction between 0 and 1".into(),
            ));
        }
        if self.cache.max_object_size > self.cache.memory {
            return Err((
                &["cache.max_object_size", "cache.memory"],
                format!(
                    "{} is larger than cache.memory ({})",
                    self.cache.max_object_size, self.cache.memory
                ),
            ));
        }
        if let Some(dir) = self
            .disk
            .dirs
            .iter()
            .find(|dir| dir.size.bytes() < 4 * self.disk.segment_size_for(dir.size.bytes()))
        {
            return Err((
                &["disk.dirs", "disk.segment_size"],
                format!(
                    "{} is {}; a cache directory needs at least 4 segments of {}",
                    dir.path.display(),
                    dir.size,
                    ByteSize(self.disk.segment_size_for(dir.size.bytes()))
                ),
            ));
        }
        if !(4096..=(1 << 30)).contains(&self.cache.slice_size.bytes()) {
            return Err((
                &["cache.slice_size"],
                "expected a size between 4KiB and 1GiB".into(),
            ));
        }
        if !self.disk.dirs.is_empty() && self.disk.max_object_size < self.cache.slice_size {
            return Err((
                &["disk.max_object_size", "cache.slice_size"],
                format!(
                    "must be at least cache.slice_size ({}), or slices cannot be written to disk",
                    self.cache.slice_size
                ),
            ));
        }
        if let Some(segment) = self.disk.segment_size {
            if segment.bytes() > u32::MAX as u64 || segment.bytes() < self.disk.min_segment() {
                return Err((
                    &["disk.segment_size", "disk.max_object_size"],
                    "must be at most 4GiB and at least twice disk.max_object_size plus 1MiB".into(),
                ));
            }
        }
        if let Some(listen) = self.admin.listen {
            if !listen.ip().is_loopback()
                && self.admin.token.is_none()
                && self.admin.token_file.is_none()
            {
                return Err((
                    &["admin.listen", "admin.token"],
                    format!(
                        "{listen} is not a loopback address: set admin.token or admin.token_file"
                    ),
                ));
            }
        }
        if self
            .admin
            .token
            .as_ref()
            .is_some_and(|token| token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err((
                &["admin.token"],
                "expected at least 16 printable characters without spaces".into(),
            ));
        }
        if self
            .cluster
            .secret
            .as_ref()
            .is_some_and(|secret| secret.len() < 16)
        {
            return Err((
                &["cluster.secret"],
                "expected a secret of at least 16 characters".into(),
            ));
        }
        if !self.cluster.admin.is_empty() && self.cluster.admin.len() != self.cluster.peers.len() {
            return Err((
                &["cluster.admin", "cluster.peers"],
                format!(
                    "expected one admin address per peer, in the order of cluster.peers ({} peers, {} admin addresses)",
                    self.cluster.peers.len(),
                    self.cluster.admin.len()
                ),
            ));
        }
        let pools = self.effective_pools();
        for (index, pool) in pools.iter().enumerate() {
            if pool.hosts.is_empty() {
                return Err((&["pools"], format!("pool `{}` has no hosts", pool.name)));
            }
            if pools[..index].iter().any(|other| other.name == pool.name) {
                return Err((&["pools"], format!("two pools are named `{}`", pool.name)));
            }
        }
        if self
            .routes
            .iter()
            .flat_map(|route| &route.signing_keys)
            .any(|key| key.len() < 16)
        {
            return Err((
                &["routes"],
                "signing_keys: expected keys of at least 16 characters".into(),
            ));
        }
        if let Some(route) = self
            .routes
            .iter()
            .find(|route| !pools.iter().any(|pool| pool.name == route.pool))
        {
            return Err((
                &["routes"],
                format!("route to pool `{}`, which is not defined", route.pool),
            ));
        }
        for pool in &pools {
            let Some(health) = &pool.health else {
                continue;
            };
            if !["GET", "HEAD", "OPTIONS"].contains(&health.method.as_str()) {
                return Err((
                    &["pools"],
                    format!(
                        "pool `{}`: health.method must be GET, HEAD or OPTIONS",
                        pool.name
                    ),
                ));
            }
            if !health.path.starts_with('/') || health.rise == 0 || health.fall == 0 {
                return Err((
                    &["pools"],
                    format!(
                        "pool `{}`: health.path must start with / and rise and fall be at least 1",
                        pool.name
                    ),
                ));
            }
        }
        if self.retries.tries == 0 {
            return Err((&["retries.tries"], "at least one try is needed".into()));
        }
        if let Some(status) = self
            .retries
            .on_status
            .iter()
            .find(|s| !(500..600).contains(*s))
        {
            return Err((
                &["retries.on_status"],
                format!("{status}: only 5xx statuses are retried"),
            ));
        }
        if self.disk.dirs.len() > 64 {
            return Err((&["disk.dirs"], "at most 64 directories".into()));
        }
        if self.disk.io_threads == 0 {
            return Err((&["disk.io_threads"], "at least one thread is needed".into()));
        }
        if self.server.max_request_line > self.server.max_header_bytes {
            return Err((
                &["server.max_request_line", "server.max_header_bytes"],
                "must not be larger than server.max_header_bytes".into(),
            ));
        }
        self.check_file_pools()
    }

    /// Directories as hosts (`file:///`) and writable pools.
    fn check_file_pools(&self) -> Result<(), (&'static [&'static str], String)> {
        if let Some(peer) = self
            .cluster
            .peers
            .iter()
            .chain(&self.cluster.admin)
            .find(|url| url.is_directory())
        {
            return Err((
                &["cluster.peers", "cluster.admin"],
                format!(
                    "{}: a peer is a node reached over HTTP, not a directory",
                    peer.authority
                ),
            ));
        }
        let in_cluster = !self.cluster.peers.is_empty();
        if in_cluster && self.cluster.secret.is_none() {
            if let Some(pool) = self.effective_pools().iter().find(|pool| pool.internal) {
                return Err((
                    &["pools.internal", "cluster.secret"],
                    format!("pool `{}`: an internal pool in a cluster needs cluster.secret (a peer's signed marker is what lets a target's owner reach it; unsigned, any peer address could)", pool.name),
                ));
            }
        }
        let token_set = self.admin.token.is_some() || self.admin.token_file.is_some();
        for pool in self.effective_pools() {
            if pool.parent && pool.serves_files() {
                return Err((
                    &["pools.parent", "pools.hosts"],
                    format!(
                        "pool `{}`: a parent tier is caches reached over HTTP, not directories",
                        pool.name
                    ),
                ));
            }
            if let Some(s3) = &pool.s3 {
                if pool.serves_files() || pool.parent {
                    return Err((
                        &["pools.s3", "pools.hosts"],
                        format!("pool `{}`: a bucket's hosts are the store's endpoints (http or https URLs), not directories or a parent tier", pool.name),
                    ));
                }
                let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
                if s3.bucket.is_empty() || !s3.bucket.chars().all(valid) {
                    return Err((
                        &["pools.s3.bucket"],
                        format!(
                            "pool `{}`: `{}` is not a bucket name (letters, digits, `-`, `.`, `_`)",
                            pool.name, s3.bucket
                        ),
                    ));
                }
                if s3.region.is_empty() || !s3.region.chars().all(valid) {
                    return Err((
                        &["pools.s3.region"],
                        format!("pool `{}`: `{}` is not a region name", pool.name, s3.region),
                    ));
                }
            }
            if pool.writable && !pool.serves_files() && pool.s3.is_none() {
                return Err((
                    &["pools.writable"],
                    format!("pool `{}`: writable is for pools of file:/// hosts and buckets (an HTTP origin gets PUT and DELETE passed to it as they are)", pool.name),
                ));
            }
            if pool.writable && pool.writable_auth && !token_set {
                return Err((
                    &["pools.writable_auth", "pools.writable"],
                    format!(
                        "pool `{}`: writes need the admin token, and none is set: set admin.token (or admin.token_file), or writable_auth = false",
                        pool.name
                    ),
                ));
            }
        }
        Ok(())
    }
}
