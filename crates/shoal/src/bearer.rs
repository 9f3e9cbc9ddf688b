//! The admin token as a credential (`Authorization: Bearer TOKEN`): for the admin API and for
//! writes to writable pools. Compared over SHA-256 digests of fixed length, so the time taken
//! does not tell how much of a guess was right.

use sha2::{Digest, Sha256};

/// A token to compare presented credentials with.
#[derive(Clone)]
pub struct Bearer([u8; 32]);

impl Bearer {
    /// The credential `token`.
    pub fn new(token: &str) -> Bearer {
        Bearer(digest(token))
    }

    /// Whether `headers` carry this token as `Authorization: Bearer` (scheme in any case).
    pub fn admits(&self, headers: &http::HeaderMap) -> bool {
        let presented = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map_or("", |(_, credentials)| credentials.trim());
        // Both sides are 32 bytes whatever was sent; every byte is compared.
        digest(presented)
            .iter()
            .zip(&self.0)
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
    }
}

impl std::fmt::Debug for Bearer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Bearer(..)")
    }
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}
