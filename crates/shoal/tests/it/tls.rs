//! TLS on both sides with certificates made at test time (rcgen): HTTP/1.1 and HTTP/2 by ALPN,
//! certificates by SNI, TLS 1.2 and 1.3 only, HSTS and the redirect from plain HTTP, the
//! certificates reloaded when their files change or the config is reloaded (a bad pair refused),
//! and `https://` origins verified against a CA file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use shoal::config::{CertificateConfig, Config, Span};

use crate::disk::TempDir;
use crate::support::*;

/// A CA that signs the test certificates.
pub(crate) struct Authority {
    certificate: rcgen::Certificate,
    key: KeyPair,
}

impl Authority {
    pub(crate) fn new() -> Authority {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Shoal test CA");
        let certificate = params.self_signed(&key).unwrap();
        Authority { certificate, key }
    }

    /// A certificate for `names`, written as `NAME.pem` and `NAME.key` in `dir`.
    pub(crate) fn issue(&self, dir: &Path, file: &str, names: &[&str]) -> CertificateConfig {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let certificate = params
            .signed_by(&key, &self.certificate, &self.key)
            .unwrap();
        let (cert, key_file) = (
            dir.join(format!("{file}.pem")),
            dir.join(format!("{file}.key")),
        );
        std::fs::write(&cert, certificate.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        CertificateConfig {
            cert,
            key: key_file,
            names: Vec::new(),
        }
    }

    fn write_pem(&self, dir: &Path) -> PathBuf {
        let path = dir.join("ca.pem");
        std::fs::write(&path, self.certificate.pem()).unwrap();
        path
    }

    /// A client configuration trusting only this CA, for `versions`, offering HTTP/2 and
    /// HTTP/1.1 by ALPN (only HTTP/1.1 with `http1_only`).
    fn client_config(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
        http1_only: bool,
    ) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.certificate.der().clone()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = match http1_only {
            true => vec![b"http/1.1".to_vec()],
            false => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        };
        config
    }

    /// A reqwest client trusting this CA, sending every request for `names` to `address`.
    pub(crate) fn http_client(
        &self,
        address: SocketAddr,
        names: &[&str],
        http1_only: bool,
    ) -> reqwest::Client {
        let mut builder = reqwest::Client::builder()
            .use_preconfigured_tls(self.client_config(rustls::ALL_VERSIONS, http1_only))
            .pool_max_idle_per_host(0);
        for name in names {
            builder = builder.resolve(name, address);
        }
        if http1_only {
            builder = builder.http1_only();
        }
        builder.build().unwrap()
    }

    /// The certificate a handshake with `name` at `address` gets.
    async fn served(
        &self,
        address: SocketAddr,
        name: &str,
    ) -> Result<CertificateDer<'static>, String> {
        let connector = tokio_rustls::TlsConnector::from(Arc::new(
            self.client_config(rustls::ALL_VERSIONS, true),
        ));
        let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
        let server_name = ServerName::try_from(name.to_owned()).unwrap();
        let stream = connector
            .connect(server_name, tcp)
            .await
            .map_err(|error| error.to_string())?;
        Ok(stream.get_ref().1.peer_certificates().unwrap()[0].clone())
    }
}

/// One keep-alive GET on an open TLS connection; the response head (its small body read too).
async fn exchange(stream: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET /kept HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = vec![0u8; 4096];
    let mut received = Vec::new();
    loop {
        let read = stream.read(&mut buffer).await.unwrap();
        assert!(read > 0, "the connection was closed");
        received.extend_from_slice(&buffer[..read]);
        // The origin's body is one byte ("x"): the response ends with it.
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            if received.len() > end + 4 {
                return String::from_utf8_lossy(&received[..end]).into_owned();
            }
        }
    }
}

fn certificate_der(config: &CertificateConfig) -> CertificateDer<'static> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_file(&config.cert).unwrap()
}

async fn tls_node(origin: &Origin, tweak: impl FnOnce(&mut Config)) -> shoal::Node {
    node_with(origin, |config| {
        config.server.listen_tls = vec!["127.0.0.1:0".parse().unwrap()];
        tweak(config);
    })
    .await
}

#[tokio::test]
async fn https_serves_http2_and_http1_with_the_certificate_of_each_name() {
    let origin = Origin::start(|seen| {
        let proto = seen
            .headers
            .get("x-forwarded-proto")
            .map(|v| v.to_str().unwrap().to_owned());
        Reply::ok(format!("{} via {}", seen.target, proto.unwrap_or_default()))
            .header("cache-control", "max-age=60")
    })
    .await;
    let dir = TempDir::new("tls");
    let ca = Authority::new();
    let a = ca.issue(&dir.0, "a", &["a.test"]);
    let b = ca.issue(&dir.0, "b", &["*.b.test"]);
    let node = tls_node(&origin, |config| {
        config.tls.certificates = vec![a.clone(), b.clone()];
        config.server.hsts = Some(shoal::config::FieldValue(http::HeaderValue::from_static(
            "max-age=31536000",
        )));
    })
    .await;
    let address = node.listen_tls[0];
    let port = address.port();

    // HTTP/2 by ALPN, the first certificate for its name; HSTS on TLS answers only.
    let h2 = ca.http_client(address, &["a.test", "www.b.test", "c.test"], false);
    let response = h2
        .get(format!("https://a.test:{port}/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(
        response.headers()["strict-transport-security"],
        "max-age=31536000"
    );
    assert_eq!(cache_status(response.headers()), "MISS");
    assert_eq!(response.text().await.unwrap(), "/x via https");
    // The wildcard certificate for a name under it.
    let response = h2
        .get(format!("https://www.b.test:{port}/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // A name no certificate is for gets the default (the first), which the client rejects.
    let refused = h2.get(format!("https://c.test:{port}/x")).send().await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(
        ca.served(address, "a.test").await.unwrap(),
        certificate_der(&a)
    );
    assert_eq!(
        ca.served(address, "x.b.test").await.unwrap(),
        certificate_der(&b)
    );

    // HTTP/1.1 by ALPN.
    let h1 = ca.http_client(address, &["a.test"], true);
    let response = h1
        .get(format!("https://a.test:{port}/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_11);
    assert_eq!(
        response.headers()["strict-transport-security"],
        "max-age=31536000"
    );
    assert_eq!(response.text().await.unwrap(), "/x via https");

    // TLS 1.2 is accepted.
    let tls12 = reqwest::Client::builder()
        .use_preconfigured_tls(ca.client_config(&[&rustls::version::TLS12], true))
        .resolve("a.test", address)
        .build()
        .unwrap();
    assert_eq!(
        tls12
            .get(format!("https://a.test:{port}/x"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Plain HTTP is a different object (the scheme is in the cache key) and has no HSTS.
    let (status, headers, body) = get(&node, "/x").await;
    assert_eq!(status, 200);
    assert_eq!(cache_status(&headers), "MISS");
    assert!(!headers.contains_key("strict-transport-security"));
    assert_eq!(&body[..], b"/x via http");
}

#[tokio::test]
async fn tls_1_2_and_1_3_are_spoken_and_older_versions_refused() {
    let origin = Origin::fixed("x").await;
    let dir = TempDir::new("tls-old");
    let ca = Authority::new();
    let a = ca.issue(&dir.0, "a", &["a.test"]);
    let node = tls_node(&origin, |config| config.tls.certificates = vec![a]).await;
    let ca_file = ca.write_pem(&dir.0);
    let port = node.listen_tls[0].port();
    // Blocking, so on a thread of its own: the node runs on this test's runtime.
    let curl = |extra: &'static [&'static str]| {
        let ca_file = ca_file.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new("curl")
                .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
                .arg(&ca_file)
                .args(["--resolve", &format!("a.test:{port}:127.0.0.1")])
                .args(["--max-time", "10"])
                .args(extra)
                .arg(format!("https://a.test:{port}/"))
                .output()
                .unwrap()
        })
    };
    let modern = curl(&[]).await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&modern.stdout),
        "200",
        "{}",
        String::from_utf8_lossy(&modern.stderr)
    );
    // A TLS 1.1 hello, written by hand: curl's OpenSSL no longer offers 1.1 itself, so it
    // could not tell. A server that spoke 1.1 would answer with a handshake record (a
    // ServerHello); this one must answer with an alert.
    for version in [0x0301u16, 0x0302] {
        let reply = hello(node.listen_tls[0], version).await;
        assert_eq!(
            reply.first(),
            Some(&0x15),
            "TLS {version:#06x}: {reply:02x?}"
        );
    }
    // The same hello as TLS 1.2 gets a ServerHello: the check above can fail.
    assert_eq!(hello(node.listen_tls[0], 0x0303).await.first(), Some(&0x16));
}

/// Sends a minimal ClientHello of `version` (AES-128-GCM and AES-128-CBC suites, the
/// P-256 group, ECDSA and RSA signatures, SNI a.test) and returns the first bytes answered.
async fn hello(server: SocketAddr, version: u16) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let name = b"a.test";
    let mut extensions = Vec::new();
    let mut extension = |kind: u16, body: &[u8]| {
        extensions.extend_from_slice(&kind.to_be_bytes());
        extensions.extend_from_slice(&(body.len() as u16).to_be_bytes());
        extensions.extend_from_slice(body);
    };
    let mut sni = vec![0, (name.len() + 3) as u8, 0, 0, name.len() as u8];
    sni.extend_from_slice(name);
    extension(0x0000, &sni);
    extension(0x000a, &[0, 2, 0x00, 0x17]); // supported groups: secp256r1
    extension(0x000b, &[1, 0]); // EC point formats: uncompressed
    extension(0x000d, &[0, 4, 0x04, 0x03, 0x08, 0x04]); // signatures: ECDSA-SHA256, RSA-PSS
    let mut body = Vec::new();
    body.extend_from_slice(&version.to_be_bytes());
    body.extend_from_slice(&[7u8; 32]); // random
    body.push(0); // no session id
    body.extend_from_slice(&[0, 6, 0xc0, 0x2b, 0xc0, 0x2f, 0x00, 0x2f]); // cipher suites
    body.extend_from_slice(&[1, 0]); // compression: null
    body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
    body.extend_from_slice(&extensions);
    let mut handshake = vec![1, 0];
    handshake.extend_from_slice(&(body.len() as u16).to_be_bytes());
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    let mut stream = tokio::net::TcpStream::connect(server).await.unwrap();
    stream.write_all(&record).await.unwrap();
    let mut reply = vec![0u8; 5];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut reply))
        .await
        .unwrap()
        .unwrap_or(0);
    reply.truncate(read);
    reply
}

#[tokio::test]
async fn plain_http_is_redirected_to_https_when_asked() {
    let origin = Origin::fixed("secret").await;
    let dir = TempDir::new("tls-redirect");
    let ca = Authority::new();
    let a = ca.issue(&dir.0, "a", &["a.test"]);
    let node = tls_node(&origin, |config| {
        config.tls.certificates = vec![a];
        config.server.listen_tls = vec![crate::process::free_port()];
        config.server.redirect_to_https = true;
    })
    .await;
    let port = node.listen_tls[0].port();
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = plain
        .get(format!("{}/page?q=1", base(&node)))
        .header("host", "a.test:8080")
        .send()
        .await
        .unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    assert_eq!(status, 308);
    assert_eq!(
        headers["location"],
        format!("https://a.test:{port}/page?q=1").as_str()
    );
    assert_eq!(origin.seen().len(), 0, "nothing went to the origin");
    let https = ca.http_client(node.listen_tls[0], &["a.test"], false);
    let response = https
        .get(format!("https://a.test:{port}/page?q=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), "secret");
}

#[tokio::test]
async fn certificates_reload_when_their_files_change_and_with_the_config() {
    let origin = Origin::fixed("x").await;
    let dir = TempDir::new("tls-reload");
    let ca = Authority::new();
    let first = ca.issue(&dir.0, "a", &["a.test"]);
    let node = tls_node(&origin, |config| {
        config.tls.certificates = vec![first.clone()];
        config.tls.watch_interval = Span(Duration::from_millis(50));
    })
    .await;
    let address = node.listen_tls[0];
    assert_eq!(
        ca.served(address, "a.test").await.unwrap(),
        certificate_der(&first)
    );
    // A keep-alive connection opened with the first certificate.
    let connector =
        tokio_rustls::TlsConnector::from(Arc::new(ca.client_config(rustls::ALL_VERSIONS, true)));
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let mut open = connector
        .connect(ServerName::try_from("a.test").unwrap(), tcp)
        .await
        .unwrap();
    assert!(exchange(&mut open).await.starts_with("HTTP/1.1 200"));

    // A renewed pair written over the files is served from the next handshake on.
    let renewed = ca.issue(&dir.0, "a", &["a.test"]);
    let renewed_der = certificate_der(&renewed);
    let mut served = None;
    for _ in 0..100 {
        served = Some(ca.served(address, "a.test").await.unwrap());
        if served.as_ref() == Some(&renewed_der) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        served.unwrap(),
        renewed_der,
        "the renewed certificate is served"
    );
    // The connection opened before goes on.
    assert!(exchange(&mut open).await.starts_with("HTTP/1.1 200"));

    // A broken file is not taken: the renewed pair stays in force.
    std::fs::write(&renewed.key, "not a key").unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(ca.served(address, "a.test").await.unwrap(), renewed_der);

    // A config reload with a key that is not the certificate's is refused, naming the files.
    let other = ca.issue(&dir.0, "other", &["a.test"]);
    let mut config = (*node.proxy.config()).clone();
    config.tls.certificates = vec![CertificateConfig {
        cert: renewed.cert.clone(),
        key: other.key.clone(),
        names: Vec::new(),
    }];
    let refused = node.proxy.reload(config.clone()).unwrap_err();
    assert!(
        refused.contains("a.pem") && refused.contains("other.key"),
        "{refused}"
    );
    assert_eq!(ca.served(address, "a.test").await.unwrap(), renewed_der);

    // A config reload with a good pair puts it in force.
    config.tls.certificates = vec![other.clone()];
    node.proxy.reload(config).unwrap();
    assert_eq!(
        ca.served(address, "a.test").await.unwrap(),
        certificate_der(&other)
    );
}

#[tokio::test]
async fn a_key_that_is_not_the_certificates_stops_the_node_at_start() {
    let origin = Origin::fixed("x").await;
    let dir = TempDir::new("tls-mismatch");
    let ca = Authority::new();
    let a = ca.issue(&dir.0, "a", &["a.test"]);
    let b = ca.issue(&dir.0, "b", &["b.test"]);
    let mut config = Config::default();
    config.server.listen = vec!["127.0.0.1:0".parse().unwrap()];
    config.server.listen_tls = vec!["127.0.0.1:0".parse().unwrap()];
    config.admin.listen = None;
    config.origin.urls = vec![origin.url().parse().unwrap()];
    config.tls.certificates = vec![CertificateConfig {
        cert: a.cert,
        key: b.key,
        names: Vec::new(),
    }];
    let error = shoal::Node::start(config).await.err().unwrap().to_string();
    assert!(
        error.contains("a.pem") && error.contains("b.key"),
        "{error}"
    );
}

#[tokio::test]
async fn https_origins_are_verified_against_the_configured_ca() {
    let origin = Origin::fixed("from the origin").await;
    let dir = TempDir::new("tls-upstream");
    let ca = Authority::new();
    let ca_file = ca.write_pem(&dir.0);
    // A TLS node stands in for an HTTPS origin (its certificate is for 127.0.0.1).
    let front = ca.issue(&dir.0, "front", &["127.0.0.1"]);
    let https_origin = tls_node(&origin, |config| config.tls.certificates = vec![front]).await;
    let url = format!("https://{}", https_origin.listen_tls[0]);

    let verified = node_with(&origin, |config| {
        config.origin.urls = vec![url.parse().unwrap()];
        config.origin.tls_ca = Some(ca_file.clone());
    })
    .await;
    let (status, _, body) = get(&verified, "/a").await;
    assert_eq!(status, 200);
    assert_eq!(&body[..], b"from the origin");

    // Without the CA, the origin's certificate is not trusted: no answer from it.
    let untrusting = node_with(&origin, |config| {
        config.origin.urls = vec![url.parse().unwrap()];
    })
    .await;
    let (status, _, _) = get(&untrusting, "/b").await;
    assert!(status == 502 || status == 503, "{status}");

    // The testing-only opt-out accepts it unverified.
    let trusting = node_with(&origin, |config| {
        config.origin.urls = vec![url.parse().unwrap()];
        config.origin.danger_accept_invalid_certs_for_testing = true;
    })
    .await;
    assert_eq!(get(&trusting, "/c").await.0, 200);
}

#[tokio::test]
async fn the_command_line_shortcut_serves_one_certificate() {
    let origin = Origin::fixed("over tls").await;
    let dir = TempDir::new("tls-cli");
    let ca = Authority::new();
    let a = ca.issue(&dir.0, "a", &["a.test"]);
    let tls_address = crate::process::free_port();
    let args: Vec<std::ffi::OsString> = vec![
        "--origin".into(),
        origin.url().into(),
        "--listen-tls".into(),
        tls_address.to_string().into(),
        "--tls-cert".into(),
        a.cert.clone().into(),
        "--tls-key".into(),
        a.key.clone().into(),
    ];
    let _node = crate::process::Node::start(&args, crate::process::free_port(), |_| true).await;
    let client = ca.http_client(tls_address, &["a.test"], false);
    let response = client
        .get(format!("https://a.test:{}/", tls_address.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.text().await.unwrap(), "over tls");
}

/// The deadlines hold over TLS too: a client that never starts its handshake is closed within
/// the head timeout, and an HTTP/2 connection over TLS that goes quiet after its SETTINGS is
/// sent GOAWAY and closed after the keep-alive timeout; each is counted.
#[tokio::test]
async fn tls_handshakes_and_http2_over_tls_keep_their_deadlines() {
    use shoal::proxy::Counter;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = Origin::fixed("x").await;
    let dir = TempDir::new("tls-deadlines");
    let ca = Authority::new();
    let a = ca.issue(&dir.0, "a", &["a.test"]);
    let node = tls_node(&origin, |config| {
        config.tls.certificates = vec![a];
        config.server.header_read_timeout = Span(Duration::from_millis(400));
        config.server.keepalive_timeout = Span(Duration::from_millis(600));
        config.server.defer_accept = Span(Duration::ZERO);
    })
    .await;
    let counter = |counter| node.proxy.metrics().get(counter);
    let mut silent = tokio::net::TcpStream::connect(node.listen_tls[0])
        .await
        .unwrap();
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut sink));
    assert!(
        closed.await.is_ok(),
        "a silent TLS client kept its connection"
    );
    assert_eq!(counter(Counter::HandshakeTimeouts), 1);

    let connector =
        tokio_rustls::TlsConnector::from(Arc::new(ca.client_config(rustls::ALL_VERSIONS, false)));
    let tcp = tokio::net::TcpStream::connect(node.listen_tls[0])
        .await
        .unwrap();
    let name = ServerName::try_from("a.test".to_owned()).unwrap();
    let mut stream = connector.connect(name, tcp).await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    // The preface and an empty SETTINGS frame, then nothing.
    let mut opening = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    opening.extend([0, 0, 0, 4, 0, 0, 0, 0, 0]);
    stream.write_all(&opening).await.unwrap();
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut received));
    assert!(
        read.await.is_ok(),
        "an idle HTTP/2 connection over TLS stayed open"
    );
    assert_eq!(counter(Counter::IdleTimeouts), 1);
}
