//! TLS, both sides, with rustls and its ring provider (TLS 1.2 and 1.3 only).
//!
//! Clients: the certificates of `[tls]`, each chosen by the name the client asks for (SNI)
//! against its configured `names` or, without them, the names the certificate is valid for; the
//! first is the default. They sit behind an atomic swap, so a configuration reload or a changed
//! file puts new ones in force for the next handshake without touching open connections; a pair
//! that does not load (unreadable, not PEM, a key that is not the certificate's) is refused and
//! the old one stays.
//!
//! Upstreams: a client configuration per pool, trusting the system's roots plus the pool's
//! `tls_ca` file, or nothing at all for pools that opt out of verification for testing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::TlsConfig;

/// The protocols offered to clients by ALPN, preferred first.
pub const ALPN_H2: &[u8] = b"h2";
const ALPN_HTTP11: &[u8] = b"http/1.1";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates in force.
pub struct Certificates {
    entries: Vec<Entry>,
}

struct Entry {
    key: Arc<CertifiedKey>,
    /// Lowercase names from the config (`*.example.com` for a wildcard); empty: use the
    /// certificate's own.
    names: Vec<String>,
    /// The files and when they were last modified, to notice changes.
    files: [(PathBuf, Option<SystemTime>); 2],
}

impl Certificates {
    /// Loads every certificate of `config`; the error names the file and what is wrong with it.
    pub fn load(config: &TlsConfig) -> Result<Certificates, String> {
        let provider = provider();
        let entries = config
            .certificates
            .iter()
            .map(|certificate| {
                let chain = read_chain(&certificate.cert)?;
                let key = read_key(&certificate.key)?;
                let key = CertifiedKey::from_der(chain, key, &provider).map_err(|error| {
                    format!(
                        "{} and {}: {error} (is the key the certificate's?)",
                        certificate.cert.display(),
                        certificate.key.display()
                    )
                })?;
                Ok(Entry {
                    key: Arc::new(key),
                    names: certificate
                        .names
                        .iter()
                        .map(|name| name.to_ascii_lowercase())
                        .collect(),
                    files: [
                        (certificate.cert.clone(), modified(&certificate.cert)),
                        (certificate.key.clone(), modified(&certificate.key)),
                    ],
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Certificates { entries })
    }

    /// The certificate for `name` (the client's SNI): the first whose names match, else the
    /// first of all.
    fn choose(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let name = name.map(str::to_ascii_lowercase);
        let chosen = name.as_deref().and_then(|name| {
            self.entries
                .iter()
                .find(|entry| match entry.names.is_empty() {
                    false => entry
                        .names
                        .iter()
                        .any(|pattern| matches_name(pattern, name)),
                    true => valid_for(&entry.key, name),
                })
        });
        chosen
            .or(self.entries.first())
            .map(|entry| Arc::clone(&entry.key))
    }

    /// Whether a certificate or key file changed since it was loaded.
    fn changed_on_disk(&self) -> bool {
        self.entries
            .iter()
            .flat_map(|entry| &entry.files)
            .any(|(path, loaded)| modified(path) != *loaded)
    }
}

/// `*.example.com` matches one label in front of `example.com`; anything else matches itself.
fn matches_name(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => name
            .strip_suffix(suffix)
            .and_then(|head| head.strip_suffix('.'))
            .is_some_and(|label| !label.is_empty() && !label.contains('.')),
        None => pattern == name,
    }
}

/// Whether the certificate is valid for `name` (its subject alternative names, wildcards
/// included), as a client would check it.
fn valid_for(key: &CertifiedKey, name: &str) -> bool {
    let (Some(certificate), Ok(server_name)) = (key.cert.first(), ServerName::try_from(name))
    else {
        return false;
    };
    webpki::EndEntityCert::try_from(certificate).is_ok_and(|parsed| {
        parsed
            .verify_is_valid_for_subject_name(&server_name)
            .is_ok()
    })
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path)
        .and_then(|meta| meta.modified())
        .ok()
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let text = std::fs::read(path).map_err(|error| format!("{}: {error}", path.display()))?;
    let chain = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("{}: not a PEM certificate chain: {error}", path.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "{}: no certificate in it (expected PEM \"BEGIN CERTIFICATE\" blocks)",
            path.display()
        ));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let text = std::fs::read(path).map_err(|error| format!("{}: {error}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&text).map_err(|error| {
        format!(
            "{}: not a PEM private key (PKCS#8, PKCS#1 or SEC1): {error}",
            path.display()
        )
    })
}

/// Picks the certificate of each handshake from the certificates in force.
pub struct CertResolver {
    current: ArcSwap<Certificates>,
}

impl std::fmt::Debug for CertResolver {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "CertResolver({} certificates)",
            self.current.load().entries.len()
        )
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.load().choose(hello.server_name())
    }
}

impl CertResolver {
    /// A resolver serving `certificates`.
    pub fn new(certificates: Certificates) -> Arc<CertResolver> {
        Arc::new(CertResolver {
            current: ArcSwap::from_pointee(certificates),
        })
    }

    /// Puts `certificates` in force for the next handshakes.
    pub fn replace(&self, certificates: Certificates) {
        self.current.store(Arc::new(certificates));
    }

    /// Reloads the certificates of `config` when a file changed since they were loaded; a pair
    /// that does not load is logged and the old ones stay.
    pub fn reload_if_changed(&self, config: &TlsConfig) {
        if !self.current.load().changed_on_disk() {
            return;
        }
        match Certificates::load(config) {
            Ok(certificates) => {
                tracing::info!("certificate files changed: new certificates in force");
                self.replace(certificates);
            }
            Err(error) => {
                tracing::error!(%error, "certificate files changed but do not load; the old certificates stay")
            }
        }
    }

    /// The rustls configuration of the TLS listeners: this resolver, TLS 1.2 and 1.3, ALPN h2
    /// then http/1.1.
    pub fn server_config(self: &Arc<Self>) -> Arc<rustls::ServerConfig> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("the ring provider supports TLS 1.2 and 1.3")
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
        Arc::new(config)
    }
}

/// The rustls configuration for connections to `https://` upstreams: the system's roots plus
/// the certificates of `ca_file`, or (`accept_invalid`) no verification at all.
pub fn client_config(
    ca_file: Option<&Path>,
    accept_invalid: bool,
) -> Result<rustls::ClientConfig, String> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|error| error.to_string())?;
    let config = if accept_invalid {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnything(provider())))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        for certificate in system_roots() {
            let _ = roots.add(certificate.clone());
        }
        if let Some(path) = ca_file {
            for certificate in read_chain(path)? {
                roots
                    .add(certificate)
                    .map_err(|error| format!("{}: {error}", path.display()))?;
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    // ALPN is left to the connector, which offers the protocols it enables (HTTP/1.1).
    Ok(config)
}

/// The system's trusted CA certificates, read once per process (a system without a CA bundle
/// has none, and still works with `tls_ca`).
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: std::sync::OnceLock<Vec<CertificateDer<'static>>> = std::sync::OnceLock::new();
    ROOTS.get_or_init(|| rustls_native_certs::load_native_certs().certs)
}

/// Accepts every server certificate: `danger_accept_invalid_certs_for_testing`.
#[derive(Debug)]
struct AcceptAnything(Arc<CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            certificate,
            signature,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            certificate,
            signature,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_one_label() {
        assert!(matches_name("*.example.com", "a.example.com"));
        assert!(!matches_name("*.example.com", "example.com"));
        assert!(!matches_name("*.example.com", "a.b.example.com"));
        assert!(!matches_name("*.example.com", "aexample.com"));
        assert!(matches_name("example.com", "example.com"));
        assert!(!matches_name("example.com", "www.example.com"));
    }
}
