//! Where requests go: upstream pools, the routes that pick a pool, the cluster of peer caches,
//! and retries.

use serde::{Deserialize, Serialize};

use super::{ByteSize, OriginUrl, Span};

pub use shoal_api::upstreams::Policy;

/// A named group of interchangeable upstream hosts (origins, or a tier of parent caches).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// The name routes refer to.
    pub name: String,
    /// How a host is picked for each request.
    #[serde(default = "default_policy")]
    pub policy: Policy,
    /// The hosts are Shoal (or other) caches forming a parent tier (a shield): requests to
    /// them carry the hop marker, so a parent never sends them on to its own peers.
    #[serde(default)]
    pub parent: bool,
    /// The hosts.
    pub hosts: Vec<HostConfig>,
    /// Active health checks of the hosts; none when unset (passive checks always run).
    #[serde(default)]
    pub health: Option<HealthConfig>,
    /// For `https://` hosts: a PEM file of CA certificates trusted besides the system's.
    #[serde(default)]
    pub tls_ca: Option<std::path::PathBuf>,
    /// For `https://` hosts: accept any certificate, unverified. For tests against
    /// self-signed origins only; never in production.
    #[serde(default)]
    pub danger_accept_invalid_certs_for_testing: bool,
    /// For `file:///` hosts: how long a file's answer is fresh (`Cache-Control: max-age`);
    /// then the node revalidates it with its ETag, which costs a `stat`. For buckets
    /// (`[pools.s3]`): the freshness of objects stored without `Cache-Control` or `Expires`.
    #[serde(default = "default_file_max_age")]
    pub max_age: Span,
    /// For `file:///` hosts: answers for files up to this size are stored in the cache as any
    /// origin's are; larger files go to the client straight from the file (with `sendfile` to
    /// plain HTTP/1 clients), as the kernel's page cache holds them already. Set it to
    /// `cache.max_object_size` to store every file the cache can.
    #[serde(default = "default_cache_files_up_to")]
    pub cache_files_up_to: ByteSize,
    /// For `file:///` hosts: serve names that start with a dot (`.well-known` always is).
    #[serde(default)]
    pub dotfiles: bool,
    /// For `file:///` hosts: follow symbolic links that lead outside the directory (links
    /// within it are always followed).
    #[serde(default)]
    pub symlinks: bool,
    /// Accept PUT and DELETE: file hosts write their directory. Off: 405 with `Allow`.
    #[serde(default)]
    pub writable: bool,
    /// Writes need the admin token (`Authorization: Bearer TOKEN`). Off only for a pool that
    /// nothing untrusted can reach.
    #[serde(default = "default_true")]
    pub writable_auth: bool,
    /// The largest upload a writable pool accepts.
    #[serde(default = "default_max_upload_size")]
    pub max_upload_size: ByteSize,
    /// The pool's hosts are applications that may answer `X-Reproxy-URL` (URLs the node
    /// fetches and sends instead) or `X-Accel-Redirect` (a path the node routes again, to an
    /// `internal` pool for instance). Off: those fields are removed from its answers.
    #[serde(default)]
    pub reproxy: bool,
    /// Clients cannot reach the pool's routes (404): only `X-Accel-Redirect` answers lead
    /// there, as nginx's `internal` locations.
    #[serde(default)]
    pub internal: bool,
    /// The hosts are the endpoints of an S3-compatible object store, and requests are for
    /// objects of this bucket, signed with AWS Signature V4 (docs/upstreams.md).
    #[serde(default)]
    pub s3: Option<S3Config>,
}

/// A bucket of an S3-compatible store as a pool's origin (`[pools.s3]`).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// The bucket; the client's path is the object's key in it.
    pub bucket: String,
    /// The region signed for (stores that have none accept `us-east-1`).
    #[serde(default = "default_region")]
    pub region: String,
    /// `path`: requests go to `/BUCKET/KEY` on the endpoint (what MinIO, Garage, Ceph RGW and
    /// SeaweedFS expect); `virtual`: to `/KEY` with `Host: BUCKET.ENDPOINT` (AWS's preference).
    #[serde(default)]
    pub style: S3Style,
    /// The access key; unset: `AWS_ACCESS_KEY_ID`, else the credentials file.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// Its secret; unset: `AWS_SECRET_ACCESS_KEY`, else the credentials file.
    #[serde(default, serialize_with = "super::redacted")]
    pub secret_access_key: Option<String>,
    /// A session token for temporary credentials; unset: `AWS_SESSION_TOKEN` (with the
    /// environment's keys) or the credentials file's.
    #[serde(default, serialize_with = "super::redacted")]
    pub session_token: Option<String>,
    /// The shared credentials file; unset: `AWS_SHARED_CREDENTIALS_FILE`, else
    /// `~/.aws/credentials`.
    #[serde(default)]
    pub credentials_file: Option<std::path::PathBuf>,
    /// The profile read from it; unset: `AWS_PROFILE`, else `default`.
    #[serde(default)]
    pub profile: Option<String>,
}

/// How a bucket is named in requests to its store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum S3Style {
    /// `/BUCKET/KEY`.
    #[default]
    Path,
    /// `Host: BUCKET.ENDPOINT`, `/KEY`.
    Virtual,
}

fn default_region() -> String {
    String::from("us-east-1")
}

fn default_file_max_age() -> Span {
    Span(std::time::Duration::from_secs(60))
}

fn default_cache_files_up_to() -> ByteSize {
    ByteSize(1 << 20)
}

fn default_true() -> bool {
    true
}

fn default_max_upload_size() -> ByteSize {
    ByteSize(1 << 30)
}

impl PoolConfig {
    /// A pool named `name` of `hosts`, every other key at its default.
    pub fn of_hosts(name: &str, hosts: Vec<HostConfig>) -> PoolConfig {
        PoolConfig {
            name: name.to_owned(),
            policy: default_policy(),
            parent: false,
            hosts,
            health: None,
            tls_ca: None,
            danger_accept_invalid_certs_for_testing: false,
            max_age: default_file_max_age(),
            cache_files_up_to: default_cache_files_up_to(),
            dotfiles: false,
            symlinks: false,
            writable: false,
            writable_auth: true,
            max_upload_size: default_max_upload_size(),
            reproxy: false,
            internal: false,
            s3: None,
        }
    }

    /// Whether any of its hosts is a directory.
    pub fn serves_files(&self) -> bool {
        self.hosts.iter().any(|host| host.url.is_directory())
    }
}

/// An active health check: a request sent to every host of a pool at an interval.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// GET, HEAD or OPTIONS.
    #[serde(deserialize_with = "check_method")]
    pub method: String,
    /// The path requested.
    #[serde(deserialize_with = "check_path")]
    pub path: String,
    /// The status a healthy host answers with.
    pub expect: u16,
    /// Time between two checks of a host.
    pub interval: Span,
    /// Time a check may take.
    pub timeout: Span,
    /// Successes in a row that bring a host that is down back up.
    #[serde(deserialize_with = "at_least_one")]
    pub rise: u32,
    /// Failures in a row that take a host that is up down.
    #[serde(deserialize_with = "at_least_one")]
    pub fall: u32,
}

// Checked as they are read, so that an error names the line of the value (pools are arrays of
// tables, which a check after parsing could not point into).
fn check_method<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let method = String::deserialize(deserializer)?;
    match ["GET", "HEAD", "OPTIONS"].contains(&method.as_str()) {
        true => Ok(method),
        false => Err(serde::de::Error::custom(format!(
            "expected GET, HEAD or OPTIONS, not `{method}`"
        ))),
    }
}

fn check_path<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let path = String::deserialize(deserializer)?;
    match path.starts_with('/') {
        true => Ok(path),
        false => Err(serde::de::Error::custom(format!(
            "expected a path starting with /, not `{path}`"
        ))),
    }
}

fn at_least_one<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    match u32::deserialize(deserializer)? {
        0 => Err(serde::de::Error::custom("expected at least 1")),
        count => Ok(count),
    }
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            method: "GET".to_owned(),
            path: "/".to_owned(),
            expect: 200,
            interval: Span(std::time::Duration::from_secs(5)),
            timeout: Span(std::time::Duration::from_secs(2)),
            rise: 2,
            fall: 3,
        }
    }
}

fn default_policy() -> Policy {
    Policy::RoundRobin
}

/// One host of a pool.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// Its URL, such as `http://10.0.0.1:8080`.
    pub url: OriginUrl,
    /// Its share of requests relative to the pool's other hosts (weighted and hash policies).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Most requests in flight to it at once; 0 for no limit.
    #[serde(default)]
    pub max_connections: u32,
}

fn default_weight() -> u32 {
    1
}

/// Maps requests to a pool: the first route whose host and path prefix match wins.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The request's host (without port), exactly or as `*.example.com`; unset matches any.
    #[serde(default)]
    pub host: Option<String>,
    /// The start of the request's path; unset matches any.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// The pool the request goes to.
    pub pool: String,
    /// When a host answers 404, try the next host of the pool; only the last 404 is returned.
    #[serde(default)]
    pub fallthrough_404: bool,
    /// Serve only signed URLs (see `docs/security.md`): any of these keys (at least 16
    /// characters each; two during a rotation) may have signed them. Empty: no signature needed.
    #[serde(default, serialize_with = "key_count")]
    pub signing_keys: Vec<String>,
}

/// Shows how many keys there are, never the keys.
fn key_count<S: serde::Serializer>(keys: &[String], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format!("({} keys)", keys.len()))
}

/// The peer caches this node shares its objects with.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Every node of the cluster, this one included, the same list on every node. Each object
    /// has one owner among them (rendezvous hashing of its key): a miss for an object another
    /// peer owns is fetched from that peer.
    pub peers: Vec<OriginUrl>,
    /// Which peer this node is (`host:port` as in `peers`); unset: the peer whose address is
    /// one of `server.listen`.
    pub node_id: Option<String>,
    /// The admin API of each peer, in the order of `peers` (this node's included), such as
    /// `http://10.0.0.2:9090`: where purges and bans asked for the whole cluster
    /// (`?cluster=1`, `shoal ctl purge --all`) are sent. The peers must share this node's admin
    /// token. Empty: purges and bans stay on the node they are sent to.
    pub admin: Vec<OriginUrl>,
    /// A secret shared by the peers (at least 16 characters). Set: the peer marker a node
    /// sends is signed with it (HMAC-SHA256 over the sender, the time, the method and the
    /// target) and a marker is believed only with a valid signature less than 30 s old, on top
    /// of coming from a peer's address. For peers on a network others share.
    #[serde(serialize_with = "super::redacted")]
    pub secret: Option<String>,
}

/// Retrying a failed upstream request on the next host.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Most attempts per request, the first included.
    pub tries: u32,
    /// No new attempt starts after this much time since the first. Unset: the origin's
    /// first-byte timeout plus its connect timeout, so that an attempt that timed out can
    /// always be followed by one on the next host.
    pub deadline: Option<Span>,
    /// Statuses retried on the next host (idempotent requests only), as connection errors and
    /// timeouts are.
    pub on_status: Vec<u16>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            tries: 3,
            deadline: None,
            on_status: vec![502, 503, 504],
        }
    }
}
