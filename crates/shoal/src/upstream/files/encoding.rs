//! Precompressed siblings: which of `x.br`, `x.zst` and `x.gz` a client's `Accept-Encoding`
//! lets it have, by its q-values (RFC 9110 §12.5.3), the best first.

use std::path::{Path, PathBuf};

use http::HeaderValue;

/// A content coding the node serves from a sibling file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// `.br`
    Brotli,
    /// `.zst`
    Zstd,
    /// `.gz`
    Gzip,
}

impl Encoding {
    /// Every one, in the order preferred when the client weighs them the same (the smaller
    /// results first).
    pub const ALL: [Encoding; 3] = [Encoding::Brotli, Encoding::Zstd, Encoding::Gzip];

    /// Its `Content-Encoding` token.
    pub fn token(self) -> &'static str {
        match self {
            Encoding::Brotli => "br",
            Encoding::Zstd => "zstd",
            Encoding::Gzip => "gzip",
        }
    }

    /// The sibling of `path` in this encoding.
    pub fn sibling(self, path: &Path) -> PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push(self.suffix());
        PathBuf::from(name)
    }

    /// The suffix of its siblings' names.
    pub fn suffix(self) -> &'static str {
        match self {
            Encoding::Brotli => ".br",
            Encoding::Zstd => ".zst",
            Encoding::Gzip => ".gz",
        }
    }
}

/// The weight (q-value in thousandths) a request gives each encoding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Accepted {
    weights: [u16; 3],
}

impl Accepted {
    /// Whether `encoding` is wanted more than `than` (`None`: nothing chosen yet, so any
    /// acceptable encoding is).
    pub fn prefers(self, encoding: Encoding, than: Option<Encoding>) -> bool {
        let weight = self.weight(encoding);
        weight > 0 && than.is_none_or(|than| weight > self.weight(than))
    }

    fn weight(self, encoding: Encoding) -> u16 {
        self.weights[encoding as usize]
    }
}

/// What `Accept-Encoding` accepts; nothing when absent (identity, §12.5.3) or unreadable.
/// `*` gives its weight to the codings not named; `x-gzip` counts as `gzip`.
pub fn accepted(header: Option<&HeaderValue>) -> Accepted {
    let mut named: [Option<u16>; 3] = [None; 3];
    let mut any = None;
    let Some(text) = header.and_then(|value| value.to_str().ok()) else {
        return Accepted::default();
    };
    for item in text.split(',') {
        let mut pieces = item.split(';');
        let coding = pieces.next().unwrap_or("").trim();
        let mut weight = 1000;
        for parameter in pieces {
            if let Some((name, value)) = parameter.split_once('=') {
                if name.trim().eq_ignore_ascii_case("q") {
                    weight = qvalue(value.trim()).unwrap_or(0);
                }
            }
        }
        let slot = match coding.to_ascii_lowercase().as_str() {
            "br" => &mut named[Encoding::Brotli as usize],
            "zstd" => &mut named[Encoding::Zstd as usize],
            "gzip" | "x-gzip" => &mut named[Encoding::Gzip as usize],
            "*" => &mut any,
            _ => continue,
        };
        *slot = Some(weight);
    }
    Accepted {
        weights: named.map(|weight| weight.or(any).unwrap_or(0)),
    }
}

/// A q-value (`0`, `0.5`, `1.000`) in thousandths.
fn qvalue(text: &str) -> Option<u16> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = format!("{fraction:0<3}").parse::<u16>().ok()?;
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn best(header: &str, available: &[Encoding]) -> Option<Encoding> {
        let accepted = accepted(Some(&HeaderValue::from_str(header).unwrap()));
        let mut chosen = None;
        for encoding in Encoding::ALL {
            if available.contains(&encoding) && accepted.prefers(encoding, chosen) {
                chosen = Some(encoding);
            }
        }
        chosen
    }

    #[test]
    fn q_values_choose_the_sibling() {
        use Encoding::*;
        let all = [Brotli, Zstd, Gzip];
        assert_eq!(best("gzip, deflate, br", &all), Some(Brotli));
        assert_eq!(best("gzip, br;q=0.5", &all), Some(Gzip));
        assert_eq!(best("br;q=0, gzip;q=0.1", &all), Some(Gzip));
        assert_eq!(best("identity", &all), None);
        assert_eq!(best("*", &[Gzip]), Some(Gzip));
        assert_eq!(best("*;q=0.5, gzip;q=0", &[Gzip, Zstd]), Some(Zstd));
        assert_eq!(best("x-gzip", &all), Some(Gzip));
        assert_eq!(best("GZIP;Q=1.0", &all), Some(Gzip));
        assert_eq!(
            best("gzip;q=2", &all),
            None,
            "an invalid q-value counts as 0"
        );
        assert_eq!(best("zstd, br", &[Gzip]), None);
        assert_eq!(accepted(None), Accepted::default());
    }
}
