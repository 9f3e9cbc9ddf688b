//! A bucket of an S3-compatible object store as a pool's origin (`[pools.s3]`): the client's
//! path is the object's key, and every request to the store is rewritten for the bucket and
//! signed with AWS Signature V4 (the `aws-sigv4` signer over the node's own HTTP client, not
//! the SDK). The signed host and region are the endpoint's, never the client's.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use http::header::{HeaderName, HeaderValue, HOST};
use http::Method;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};

use crate::config::{OriginUrl, PoolConfig, S3Config, S3Style};

/// What S3's canonical form leaves unescaped in a key: letters, digits, `-_.~` and `/`. The key
/// goes on the wire in exactly that form, so the store's canonical request is the signer's.
const KEY_ESCAPED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// The client's fields a read passes to the store.
const READ_FIELDS: [HeaderName; 7] = [
    http::header::RANGE,
    http::header::IF_MATCH,
    http::header::IF_NONE_MATCH,
    http::header::IF_MODIFIED_SINCE,
    http::header::IF_UNMODIFIED_SINCE,
    http::header::IF_RANGE,
    http::header::ACCEPT_ENCODING,
];

/// The client's fields a write passes to the store: its length and conditions, and what the
/// store keeps with the object and answers reads with.
const WRITE_FIELDS: [HeaderName; 10] = [
    http::header::CONTENT_LENGTH,
    http::header::CONTENT_TYPE,
    http::header::CONTENT_ENCODING,
    http::header::CONTENT_LANGUAGE,
    http::header::CONTENT_DISPOSITION,
    http::header::CACHE_CONTROL,
    http::header::EXPIRES,
    http::header::IF_MATCH,
    http::header::IF_NONE_MATCH,
    HeaderName::from_static("content-md5"),
];

/// Removes every `x-amz-*` field.
fn remove_amz(headers: &mut http::HeaderMap) {
    let amz: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("x-amz-"))
        .cloned()
        .collect();
    for name in amz {
        headers.remove(name);
    }
}

/// A pool's bucket and the credentials its requests are signed with.
pub struct Bucket {
    name: String,
    region: String,
    style: S3Style,
    identity: Identity,
    /// For answers that say nothing of their freshness (objects stored without
    /// `Cache-Control`, as most are): the pool's `max_age`.
    cache_control: HeaderValue,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bucket")
            .field("name", &self.name)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

/// Why a request cannot go to the bucket; answered by the node itself.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// `/`: no key (to the store it would be a listing of the bucket).
    NoKey,
    /// A method the bucket is not used with (reads, and writes when the pool is writable).
    Method,
}

impl Bucket {
    /// The bucket `config` names for `pool`, with the credentials from the config, else the
    /// environment, else the shared credentials file; fails (naming the pool) when there are
    /// none.
    pub fn new(config: &S3Config, pool: &PoolConfig) -> Result<Bucket, String> {
        let credentials = credentials(config, &|name| std::env::var(name).ok())
            .map_err(|error| format!("pool `{}`: {error}", pool.name))?;
        let max_age = format!("max-age={}", pool.max_age.duration().as_secs());
        Ok(Bucket {
            name: config.bucket.clone(),
            region: config.region.clone(),
            style: config.style,
            identity: credentials.into(),
            cache_control: HeaderValue::from_str(&max_age).expect("digits are a valid value"),
        })
    }

    /// Readies an answer of the store for the node: an object (200, 206) that says nothing of
    /// its freshness gets the pool's `max_age` (errors keep the cache's own short rules: an
    /// expired token's 403 must not last a day), and the store's own `x-amz-*` fields (request
    /// ids, metadata, key ARNs) are not passed on.
    pub fn received(&self, response: &mut http::Response<super::OriginBody>) {
        let object = matches!(response.status().as_u16(), 200 | 206);
        let headers = response.headers_mut();
        if object
            && !headers.contains_key(http::header::CACHE_CONTROL)
            && !headers.contains_key(http::header::EXPIRES)
        {
            headers.insert(http::header::CACHE_CONTROL, self.cache_control.clone());
        }
        remove_amz(headers);
    }

    /// `parts` (a request for the object its path names) as sent to `endpoint`: the bucket's
    /// path and `Host`, only the client's fields the store is to act on (never its query or
    /// `x-amz-*` fields, which could ask for a listing, a copy of another object or an ACL
    /// change), and signed for `now`. With
    /// `writable`, PUT and DELETE go to the bucket too; a PUT's body is not part of the
    /// signature (`UNSIGNED-PAYLOAD`), so it streams.
    pub fn request(
        &self,
        endpoint: &OriginUrl,
        parts: &http::request::Parts,
        writable: bool,
        now: SystemTime,
    ) -> Result<http::request::Parts, Refused> {
        let method = &parts.method;
        let read = *method == Method::GET || *method == Method::HEAD;
        let write = *method == Method::PUT || *method == Method::DELETE;
        if !(read || (write && writable)) {
            return Err(Refused::Method);
        }
        let key = object_key(parts.uri.path()).ok_or(Refused::NoKey)?;
        let (host, path) = match self.style {
            S3Style::Path => (endpoint.authority.clone(), format!("/{}/{key}", self.name)),
            S3Style::Virtual => (
                format!("{}.{}", self.name, endpoint.authority),
                format!("/{key}"),
            ),
        };
        let mut signed = http::Request::new(()).into_parts().0;
        signed.method = parts.method.clone();
        signed.version = parts.version;
        // Only what the store is to act on: the conditions and range of a read, the
        // representation fields of a write. Not the client's cookies, credentials, forwarding
        // fields or the store's own `x-amz-*` (a copy source, an ACL).
        let passed: &[HeaderName] = match write {
            false => &READ_FIELDS,
            true => &WRITE_FIELDS,
        };
        for name in passed {
            for value in parts.headers.get_all(name) {
                signed.headers.append(name.clone(), value.clone());
            }
        }
        let host_value = HeaderValue::from_str(&host).map_err(|_| Refused::NoKey)?;
        signed.headers.insert(HOST, host_value);
        let scheme = if endpoint.tls { "https" } else { "http" };
        let url = format!("{scheme}://{host}{path}");
        let body = match write && *method == Method::PUT {
            true => SignableBody::UnsignedPayload,
            false => SignableBody::Bytes(&[]),
        };
        let headers = [("host", host.as_str())];
        let instructions = self
            .sign(method.as_str(), &url, headers.into_iter(), body, now)
            .map_err(|error| {
                // Only a bug gets here (the URL is built above); a 403 from the store would
                // say less.
                tracing::error!(%error, %url, "cannot sign the request");
                Refused::NoKey
            })?;
        for (name, value) in instructions {
            signed.headers.insert(name, value);
        }
        signed.uri = path.parse().map_err(|_| Refused::NoKey)?;
        Ok(signed)
    }

    fn sign<'a>(
        &'a self,
        method: &'a str,
        url: &'a str,
        headers: impl Iterator<Item = (&'a str, &'a str)>,
        body: SignableBody<'a>,
        now: SystemTime,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
        let mut settings = SigningSettings::default();
        // S3's rules: the path is escaped once (as it is on the wire) and never normalized
        // (`a//b` and `a/./b` are keys of their own), and the payload hash is sent.
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let params = v4::SigningParams::builder()
            .identity(&self.identity)
            .region(&self.region)
            .name("s3")
            .time(now)
            .settings(settings)
            .build()
            .map_err(|error| error.to_string())?
            .into();
        let request =
            SignableRequest::new(method, url, headers, body).map_err(|e| e.to_string())?;
        let (instructions, _) = sign(request, &params)
            .map_err(|error| error.to_string())?
            .into_parts();
        instructions
            .headers()
            .map(|(name, value)| {
                let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
                let value = HeaderValue::from_str(value).map_err(|e| e.to_string())?;
                Ok((name, value))
            })
            .collect()
    }
}

/// The object key a request path names, escaped as S3's canonical form wants it (the path
/// arrives in the node's normal form, where some reserved characters are left unescaped).
/// `None` for `/` (which names no object), for a key of slashes only, and for a key with `.`
/// or `..` segments once decoded (`..%2F` would otherwise reach the store as `../`, and a store
/// or a proxy before it that resolves them would read outside the bucket).
pub fn object_key(path: &str) -> Option<String> {
    let decoded =
        percent_encoding::percent_decode_str(path.strip_prefix('/')?).collect::<Vec<u8>>();
    let segments = || decoded.split(|&byte| byte == b'/');
    if segments().all(<[u8]>::is_empty) || segments().any(|s| s == b"." || s == b"..") {
        return None;
    }
    Some(percent_encoding::percent_encode(&decoded, KEY_ESCAPED).to_string())
}

/// The credentials for `config`: its own keys; else, when it names a credentials file or a
/// profile, that profile of that file; else `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`
/// (with `AWS_SESSION_TOKEN`); else the profile of the shared credentials file. `env` reads
/// the environment.
fn credentials(
    config: &S3Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Credentials, String> {
    let made = |id: String, secret: String, token: Option<String>, from: &'static str| {
        Credentials::new(id, secret, token, None, from)
    };
    match (&config.access_key_id, &config.secret_access_key) {
        (Some(id), Some(secret)) => {
            return Ok(made(
                id.clone(),
                secret.clone(),
                config.session_token.clone(),
                "config",
            ))
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err("s3: access_key_id and secret_access_key go together".into())
        }
        (None, None) => {}
    }
    // A file or profile the pool names is its choice; the environment's keys are for pools
    // that name neither.
    let named = config.credentials_file.is_some() || config.profile.is_some();
    if let (false, Some(id), Some(secret)) = (
        named,
        env("AWS_ACCESS_KEY_ID"),
        env("AWS_SECRET_ACCESS_KEY"),
    ) {
        return Ok(made(id, secret, env("AWS_SESSION_TOKEN"), "environment"));
    }
    let file = config
        .credentials_file
        .clone()
        .or_else(|| env("AWS_SHARED_CREDENTIALS_FILE").map(PathBuf::from))
        .or_else(|| env("HOME").map(|home| Path::new(&home).join(".aws/credentials")));
    let profile = config
        .profile
        .clone()
        .or_else(|| env("AWS_PROFILE"))
        .unwrap_or_else(|| String::from("default"));
    let Some(file) = file else {
        return Err("s3: no credentials (set access_key_id and secret_access_key, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a credentials file)".into());
    };
    let text = std::fs::read_to_string(&file).map_err(|error| {
        format!(
            "s3: no credentials in the config or the environment, and {}: {error}",
            file.display()
        )
    })?;
    let values = profile_values(&text, &profile);
    let value = |name: &str| {
        values
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, v)| v.clone())
    };
    match (value("aws_access_key_id"), value("aws_secret_access_key")) {
        (Some(id), Some(secret)) => Ok(made(
            id,
            secret,
            value("aws_session_token"),
            "credentials file",
        )),
        _ => Err(format!(
            "s3: {} has no aws_access_key_id and aws_secret_access_key in profile [{profile}]",
            file.display()
        )),
    }
}

/// The `key = value` lines of section `[profile]` of an AWS credentials file (an INI file of
/// a few lines; the format is too small for a crate to pay off).
fn profile_values(text: &str, profile: &str) -> Vec<(String, String)> {
    let mut inside = false;
    let mut values = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = section.trim() == profile;
            continue;
        }
        if let (true, Some((key, value))) = (inside, line.split_once('=')) {
            values.push((key.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> S3Config {
        toml::from_str("bucket = \"media\"").unwrap()
    }

    #[test]
    fn keys_are_escaped_as_the_canonical_form_wants() {
        assert_eq!(object_key("/a/b.bin").as_deref(), Some("a/b.bin"));
        assert_eq!(
            object_key("/a%20b/c+d(1)!.txt").as_deref(),
            Some("a%20b/c%2Bd%281%29%21.txt")
        );
        assert_eq!(object_key("/~x/%7E"), Some(String::from("~x/~")));
        assert_eq!(object_key("/"), None);
        for refused in ["//", "/a/../b", "/..%2Fother/k", "/a/%2e/b", "/."] {
            assert_eq!(object_key(refused), None, "{refused}");
        }
        assert_eq!(object_key("/a//b").as_deref(), Some("a//b"));
    }

    #[test]
    fn credentials_come_from_the_config_then_the_environment_then_the_file() {
        let mut with_keys = config();
        with_keys.access_key_id = Some("AKCONFIG".into());
        with_keys.secret_access_key = Some("secret".into());
        let env = |name: &str| match name {
            "AWS_ACCESS_KEY_ID" => Some(String::from("AKENV")),
            "AWS_SECRET_ACCESS_KEY" => Some(String::from("envsecret")),
            _ => None,
        };
        assert_eq!(
            credentials(&with_keys, &env).unwrap().access_key_id(),
            "AKCONFIG"
        );
        assert_eq!(
            credentials(&config(), &env).unwrap().access_key_id(),
            "AKENV"
        );

        let dir = std::env::temp_dir().join(format!("shoal-s3-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("credentials");
        std::fs::write(
            &file,
            "[default]\naws_access_key_id = AKDEFAULT\naws_secret_access_key = d\n\n# other\n[cdn]\nAWS_ACCESS_KEY_ID=AKCDN\naws_secret_access_key = c\naws_session_token = t\n",
        )
        .unwrap();
        let mut from_file = config();
        from_file.credentials_file = Some(file.clone());
        let none = |_: &str| None;
        assert_eq!(
            credentials(&from_file, &none).unwrap().access_key_id(),
            "AKDEFAULT"
        );
        from_file.profile = Some("cdn".into());
        let cdn = credentials(&from_file, &none).unwrap();
        assert_eq!(
            (cdn.access_key_id(), cdn.session_token()),
            ("AKCDN", Some("t"))
        );
        from_file.profile = Some("missing".into());
        let error = credentials(&from_file, &none).unwrap_err();
        assert!(error.contains("[missing]"), "{error}");
        std::fs::remove_dir_all(dir).unwrap();

        let mut half = config();
        half.access_key_id = Some("AK".into());
        assert!(credentials(&half, &none)
            .unwrap_err()
            .contains("go together"));
    }

    #[test]
    fn requests_name_the_bucket_lose_the_clients_amz_fields_and_are_signed() {
        let mut with_keys = config();
        with_keys.access_key_id = Some("AKID".into());
        with_keys.secret_access_key = Some("secret".into());
        let bucket = Bucket::new(&with_keys, &PoolConfig::of_hosts("p", Vec::new())).unwrap();
        let endpoint: OriginUrl = "http://127.0.0.1:9000".parse().unwrap();
        let (mut parts, ()) = http::Request::get("/v/a.bin?list-type=2")
            .header("host", "cdn.example")
            .header("x-amz-copy-source", "other/secret")
            .header("authorization", "Bearer client")
            .header("range", "bytes=0-9")
            .body(())
            .unwrap()
            .into_parts();
        let signed = bucket
            .request(&endpoint, &parts, false, SystemTime::UNIX_EPOCH)
            .unwrap();
        assert_eq!(signed.uri, "/media/v/a.bin");
        assert_eq!(signed.headers["host"], "127.0.0.1:9000");
        assert!(!signed.headers.contains_key("x-amz-copy-source"));
        assert_eq!(signed.headers["range"], "bytes=0-9");
        let authorization = signed.headers["authorization"].to_str().unwrap();
        assert!(
            authorization
                .starts_with("AWS4-HMAC-SHA256 Credential=AKID/19700101/us-east-1/s3/aws4_request"),
            "{authorization}"
        );
        assert!(signed.headers.contains_key("x-amz-date"));
        assert!(signed.headers.contains_key("x-amz-content-sha256"));

        parts.method = Method::PUT;
        assert_eq!(
            bucket
                .request(&endpoint, &parts, false, SystemTime::now())
                .unwrap_err(),
            Refused::Method
        );
        let put = bucket
            .request(&endpoint, &parts, true, SystemTime::now())
            .unwrap();
        assert_eq!(put.headers["x-amz-content-sha256"], "UNSIGNED-PAYLOAD");
        parts.method = Method::GET;
        parts.uri = "/".parse().unwrap();
        assert_eq!(
            bucket
                .request(&endpoint, &parts, false, SystemTime::now())
                .unwrap_err(),
            Refused::NoKey
        );

        let mut virtual_hosted = with_keys.clone();
        virtual_hosted.style = S3Style::Virtual;
        let bucket = Bucket::new(&virtual_hosted, &PoolConfig::of_hosts("p", Vec::new())).unwrap();
        parts.uri = "/a".parse().unwrap();
        let signed = bucket
            .request(&endpoint, &parts, false, SystemTime::now())
            .unwrap();
        assert_eq!(signed.uri, "/a");
        assert_eq!(signed.headers["host"], "media.127.0.0.1:9000");
    }
}
