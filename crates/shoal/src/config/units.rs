//! Value types of the config file: byte sizes (`512MiB`), durations (`30s`), header field
//! names and values, method names. Each is parsed once, while deserializing, into the type the
//! node uses, so that a typo is reported by serde with the position of the offending value
//! and nothing downstream parses it again.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// A size in bytes, written as `512MiB`, `64KiB`, `1GB` or a plain number of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The size as a number of bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl std::str::FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: u64 = number
            .parse()
            .map_err(|_| format!("`{text}` is not a size: expected a number followed by a unit such as KiB, MiB or GiB"))?;
        let multiplier: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" | "K" | "k" => 1 << 10,
            "MiB" | "M" => 1 << 20,
            "GiB" | "G" => 1 << 30,
            "TiB" | "T" => 1 << 40,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            other => {
                return Err(format!(
                    "unknown size unit `{other}` in `{text}`: expected B, KiB, MiB, GiB, TiB, KB, MB, GB or TB"
                ))
            }
        };
        number
            .checked_mul(multiplier)
            .map(ByteSize)
            .ok_or_else(|| format!("size `{text}` is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let units = [
            (1u64 << 40, "TiB"),
            (1 << 30, "GiB"),
            (1 << 20, "MiB"),
            (1 << 10, "KiB"),
        ];
        for (size, name) in units {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{}", self.0 / size, name);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"512MiB\" or a number of bytes")
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(value))
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<ByteSize, E> {
                u64::try_from(value)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<ByteSize, E> {
                value.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

/// A duration, written as `500ms`, `30s`, `5m`, `2h`, `1d` or a plain number of seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span(pub Duration);

impl Span {
    /// The duration.
    pub fn duration(self) -> Duration {
        self.0
    }
}

impl std::str::FromStr for Span {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        shoal_api::duration::parse(text).map(Span)
    }
}

impl serde::Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0.as_millis();
        match (millis % 1000, millis / 1000) {
            (0, seconds) if seconds > 0 && seconds % 86_400 == 0 => {
                write!(f, "{}d", seconds / 86_400)
            }
            (0, seconds) if seconds > 0 && seconds % 3600 == 0 => write!(f, "{}h", seconds / 3600),
            (0, seconds) if seconds > 0 && seconds % 60 == 0 => write!(f, "{}m", seconds / 60),
            (0, seconds) => write!(f, "{seconds}s"),
            _ => write!(f, "{millis}ms"),
        }
    }
}

impl serde::Serialize for Span {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SpanVisitor;
        impl Visitor<'_> for SpanVisitor {
            type Value = Span;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"30s\" or a number of seconds")
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Span, E> {
                Ok(Span(Duration::from_secs(value)))
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Span, E> {
                u64::try_from(value)
                    .map(|secs| Span(Duration::from_secs(secs)))
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Span, E> {
                value.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_any(SpanVisitor)
    }
}

/// A header field name, such as `x-original-url` (stored lowercase).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldName(pub http::HeaderName);

impl<'de> Deserialize<'de> for FieldName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        http::HeaderName::from_bytes(text.as_bytes())
            .map(FieldName)
            .map_err(|_| de::Error::custom(format!("`{text}` is not a header field name")))
    }
}

impl serde::Serialize for FieldName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0.as_str())
    }
}

/// A header field value, such as an HSTS policy; empty in the file: none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldValue(pub http::HeaderValue);

/// Reads an optional field value: the empty string is none.
pub(super) fn optional_value<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<FieldValue>, D::Error> {
    let text = String::deserialize(deserializer)?;
    if text.is_empty() {
        return Ok(None);
    }
    http::HeaderValue::from_str(&text)
        .map(|value| Some(FieldValue(value)))
        .map_err(|_| de::Error::custom(format!("`{text}` is not a header field value")))
}

/// Writes an optional field value or name as the file has it (none: empty).
pub(super) fn optional_text<S: serde::Serializer, T: AsRef<[u8]>>(
    value: &Option<T>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let text = value
        .as_ref()
        .map(|value| value.as_ref())
        .unwrap_or_default();
    serializer.serialize_str(&String::from_utf8_lossy(text))
}

/// Reads an optional field name: the empty string is none.
pub(super) fn optional_name<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<http::HeaderName>, D::Error> {
    let text = String::deserialize(deserializer)?;
    if text.is_empty() {
        return Ok(None);
    }
    FieldName::deserialize(de::value::StrDeserializer::<D::Error>::new(&text))
        .map(|name| Some(name.0))
}

impl AsRef<[u8]> for FieldValue {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// A method name (a token, such as GET or PURGE); never CONNECT, which a reverse proxy does
/// not serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MethodName(pub http::Method);

impl std::str::FromStr for MethodName {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match http::Method::from_bytes(text.as_bytes()) {
            Ok(method) if method != http::Method::CONNECT => Ok(MethodName(method)),
            _ => Err(format!(
                "`{text}`: expected a method name such as GET or PURGE (CONNECT is never served)"
            )),
        }
    }
}

impl<'de> Deserialize<'de> for MethodName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(de::Error::custom)
    }
}

impl serde::Serialize for MethodName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0.as_str())
    }
}

/// Reads the node's name for `Via`: one token.
pub(super) fn pseudonym<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let text = String::deserialize(deserializer)?;
    let token = !text.is_empty()
        && text
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte));
    match token {
        true => Ok(text),
        false => Err(de::Error::custom(format!(
            "`{text}`: expected a single token such as \"shoal\""
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let check = |text: &str, expected: Option<u64>| {
            assert_eq!(
                text.parse::<ByteSize>().ok().map(|s| s.0),
                expected,
                "{text}"
            );
        };
        check("512MiB", Some(512 << 20));
        check("64KiB", Some(64 << 10));
        check("1GB", Some(1_000_000_000));
        check("100", Some(100));
        check("12XB", None);
        check("MiB", None);
        check("99999999999999TiB", None);
    }

    #[test]
    fn durations() {
        let check = |text: &str, expected: Option<Duration>| {
            assert_eq!(text.parse::<Span>().ok().map(|s| s.0), expected, "{text}");
        };
        check("500ms", Some(Duration::from_millis(500)));
        check("30s", Some(Duration::from_secs(30)));
        check("5m", Some(Duration::from_secs(300)));
        check("1d", Some(Duration::from_secs(86_400)));
        check("7", Some(Duration::from_secs(7)));
        check("7w", None);
    }

    #[test]
    fn size_display_round_trips() {
        for text in ["512MiB", "64KiB", "3GiB", "1000B"] {
            assert_eq!(text.parse::<ByteSize>().unwrap().to_string(), text);
        }
    }

    #[test]
    fn spans_print_as_they_are_written() {
        for text in ["500ms", "30s", "5m", "2h", "1d", "90s", "1500ms", "0s"] {
            let span: Span = text.parse().unwrap();
            assert_eq!(span.to_string(), text);
        }
    }
}
