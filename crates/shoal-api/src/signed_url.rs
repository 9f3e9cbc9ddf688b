//! Signed URLs: a route with `signing_keys` serves only URLs that carry a valid signature over
//! their path and an expiry time, as two query parameters:
//!
//! ```text
//! /downloads/big.iso?expires=1795400000&signature=<64 hex digits>
//! signature = lowercase hex of HMAC-SHA256(key, "<expires>:<path>")
//! ```
//!
//! `path` is the URL's path exactly as sent (percent-encoding included, no query); `expires` is
//! in seconds since the Unix epoch. Any of the route's keys may have signed it, so a new key can
//! be added, used, and the old one removed later. The two parameters are removed before the
//! request goes further: every signed URL of one file is one cache object, and the origin never
//! sees them. Other query parameters are not covered by the signature.
//!
//! Such a URL is for reading. A URL that allows a write (PUT or DELETE to a writable pool)
//! names its method, and the signature covers it, so that no download link can be turned into
//! an upload link:
//!
//! ```text
//! /uploads/a.iso?expires=1795400000&method=PUT&signature=<64 hex digits>
//! signature = lowercase hex of HMAC-SHA256(key, "<expires>:PUT:<path>")
//! ```
//!
//! (A path starts with `/` and a method with a letter, so the two messages never coincide.) A
//! URL signed for a method serves that method only.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a URL is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    /// No `expires` or `signature` parameter, or one that is not well formed.
    Unsigned,
    /// The expiry time has passed.
    Expired,
    /// No key gives this signature.
    BadSignature,
    /// Signed for another method than the request's.
    WrongMethod,
}

impl Denied {
    /// For the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Denied::Unsigned => "URL not signed (expires and signature parameters)",
            Denied::Expired => "signed URL expired",
            Denied::BadSignature => "URL signature does not match",
            Denied::WrongMethod => "URL signed for another method",
        }
    }
}

/// The signature of `path` until `expires` with `key`, in lowercase hex.
pub fn signature(key: &[u8], path: &str, expires: u64) -> String {
    to_hex(&mac(key, path, expires, None).finalize().into_bytes())
}

/// The MAC of the signed message: `<expires>:<path>`, or `<expires>:<METHOD>:<path>`.
fn mac(key: &[u8], path: &str, expires: u64, method: Option<&str>) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(expires.to_string().as_bytes());
    mac.update(b":");
    if let Some(method) = method {
        mac.update(method.as_bytes());
        mac.update(b":");
    }
    mac.update(path.as_bytes());
    mac
}

/// `bytes` in lowercase hex.
pub fn to_hex(bytes: &[u8]) -> String {
    let mut hex = String::with_capacity(bytes.len() * 2);
    for &byte in bytes {
        hex.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        hex.push(char::from(b"0123456789abcdef"[usize::from(byte & 15)]));
    }
    hex
}

/// `target` (path and query) with `expires` and `signature` parameters added.
pub fn sign(target: &str, key: &[u8], expires: u64) -> String {
    sign_for(target, key, expires, None)
}

/// `target` signed as [`sign`] does, for `method` only when given (a write: `PUT`, `DELETE`).
pub fn sign_for(target: &str, key: &[u8], expires: u64, method: Option<&str>) -> String {
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    let separator = if target.contains('?') { '&' } else { '?' };
    let signature = to_hex(&mac(key, path, expires, method).finalize().into_bytes());
    match method {
        None => format!("{target}{separator}expires={expires}&signature={signature}"),
        Some(method) => {
            format!("{target}{separator}expires={expires}&method={method}&signature={signature}")
        }
    }
}

/// A target whose signature holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The target without the signature's parameters.
    pub target: String,
    /// The method it was signed for, if any.
    pub method: Option<String>,
}

/// Checks `target` (path and query) at time `now` (seconds since the epoch) against `keys`;
/// on success returns the target without the signature's parameters.
pub fn verify(target: &str, keys: &[Vec<u8>], now: u64) -> Result<String, Denied> {
    verify_signed(target, keys, now).map(|verified| verified.target)
}

/// [`verify`], telling the method a URL was signed for.
pub fn verify_signed(target: &str, keys: &[Vec<u8>], now: u64) -> Result<Verified, Denied> {
    let (path, query) = target.split_once('?').ok_or(Denied::Unsigned)?;
    let (mut expires, mut signature, mut method) = (None, None, None);
    let mut kept = Vec::new();
    for pair in query.split('&') {
        // Each at most once: a second one would reach the origin, and which one counts would
        // depend on who reads the URL.
        let slot = match pair.split_once('=') {
            Some(("expires", value)) => (&mut expires, value),
            Some(("signature", value)) => (&mut signature, value),
            Some(("method", value)) => (&mut method, value),
            _ => {
                kept.push(pair);
                continue;
            }
        };
        if slot.0.replace(slot.1).is_some() {
            return Err(Denied::Unsigned);
        }
    }
    if method.is_some_and(|m: &str| m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase())) {
        return Err(Denied::Unsigned);
    }
    let expires: u64 = expires
        .and_then(|value| value.parse().ok())
        .ok_or(Denied::Unsigned)?;
    let signature = signature.and_then(decode_hex).ok_or(Denied::Unsigned)?;
    if expires < now {
        return Err(Denied::Expired);
    }
    let valid = keys.iter().any(|key| {
        // Compared in constant time.
        mac(key, path, expires, method)
            .verify_slice(&signature)
            .is_ok()
    });
    if !valid {
        return Err(Denied::BadSignature);
    }
    Ok(Verified {
        target: match kept.is_empty() {
            true => path.to_owned(),
            false => format!("{path}?{}", kept.join("&")),
        },
        method: method.map(str::to_owned),
    })
}

/// A SHA-256 digest (64 hex digits) as bytes.
pub fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_795_000_000;

    #[test]
    fn a_signed_url_verifies_until_it_expires_and_loses_its_parameters() {
        let keys = vec![
            b"old-key-0123456789".to_vec(),
            b"new-key-0123456789".to_vec(),
        ];
        let signed = sign("/files/a.iso?mirror=2", &keys[1], NOW + 60);
        assert!(signed.starts_with("/files/a.iso?mirror=2&expires=1795000060&signature="));
        assert_eq!(
            verify(&signed, &keys, NOW),
            Ok("/files/a.iso?mirror=2".into())
        );
        assert_eq!(verify(&signed, &keys, NOW + 61), Err(Denied::Expired));
        // Signed with the old key, during a rotation.
        let old = sign("/files/a.iso", &keys[0], NOW + 60);
        assert_eq!(verify(&old, &keys, NOW), Ok("/files/a.iso".into()));
        assert_eq!(verify(&old, &keys[1..], NOW), Err(Denied::BadSignature));
    }

    #[test]
    fn tampering_is_refused() {
        let keys = vec![b"a-key-of-some-length".to_vec()];
        let signed = sign("/files/a.iso", &keys[0], NOW + 60);
        let other_file = signed.replace("a.iso", "b.iso");
        assert_eq!(verify(&other_file, &keys, NOW), Err(Denied::BadSignature));
        let later = signed.replace("expires=1795000060", "expires=1795999999");
        assert_eq!(verify(&later, &keys, NOW), Err(Denied::BadSignature));
        assert_eq!(verify("/files/a.iso", &keys, NOW), Err(Denied::Unsigned));
        assert_eq!(
            verify("/files/a.iso?expires=1795000060&signature=zz", &keys, NOW),
            Err(Denied::Unsigned)
        );
    }

    #[test]
    fn a_url_signed_for_a_method_says_so_and_cannot_be_made_into_another() {
        let keys = vec![b"a-key-of-some-length".to_vec()];
        let put = sign_for("/up/a.iso", &keys[0], NOW + 60, Some("PUT"));
        assert!(put.starts_with("/up/a.iso?expires=1795000060&method=PUT&signature="));
        let verified = verify_signed(&put, &keys, NOW).unwrap();
        assert_eq!(
            (verified.target.as_str(), verified.method.as_deref()),
            ("/up/a.iso", Some("PUT"))
        );
        for forged in [
            put.replace("method=PUT", "method=DELETE"),
            put.replace("&method=PUT", ""),
        ] {
            assert_eq!(
                verify_signed(&forged, &keys, NOW),
                Err(Denied::BadSignature),
                "{forged}"
            );
        }
        // A read link does not become a write link by naming a method.
        let read = sign("/up/a.iso", &keys[0], NOW + 60);
        let upgraded = read.replace("&signature=", "&method=PUT&signature=");
        assert_eq!(
            verify_signed(&upgraded, &keys, NOW),
            Err(Denied::BadSignature)
        );
        assert_eq!(verify_signed(&read, &keys, NOW).unwrap().method, None);
        let lowercase = put.replace("method=PUT", "method=put");
        assert_eq!(verify_signed(&lowercase, &keys, NOW), Err(Denied::Unsigned));
        for doubled in [format!("{put}&method=DELETE"), format!("{read}&expires=1")] {
            assert_eq!(
                verify_signed(&doubled, &keys, NOW),
                Err(Denied::Unsigned),
                "{doubled}"
            );
        }
    }
}
