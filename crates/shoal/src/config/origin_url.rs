//! Where an origin is and what `Host` it is sent: `OriginUrl` (`http://host:port`, an
//! `https://` one, with its authority and TLS name parsed once, or a `file:///` directory the
//! node serves itself) and `HostHeader`.

use serde::{Deserialize, Serialize};

/// How the `Host` header sent to the origin is chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostHeader {
    /// Send the client's `Host` unchanged.
    Preserve,
    /// Send the origin's own host and port.
    Origin,
    /// Send this fixed value.
    Fixed(String),
}

impl<'de> Deserialize<'de> for HostHeader {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(match text.as_str() {
            "preserve" => HostHeader::Preserve,
            "origin" => HostHeader::Origin,
            _ if !text.is_empty()
                && text
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b)) =>
            {
                HostHeader::Fixed(text)
            }
            _ => {
                return Err(serde::de::Error::custom(format!(
                    "`{text}`: expected \"preserve\", \"origin\" or a host name"
                )))
            }
        })
    }
}

/// One origin server, from a URL such as `http://127.0.0.1:8081`, or a directory the node
/// serves itself, from `file:///srv/www`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginUrl {
    /// For `file:///DIR`: the directory whose files are the origin's answers (absolute).
    /// `host`, `port` and `tls` then mean nothing; `authority` is the URL, for logs.
    pub directory: Option<std::path::PathBuf>,
    /// `https://`: spoken to over TLS.
    pub tls: bool,
    /// Host name or IP address, without brackets.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// `host:port` as sent in `Host` when the host is rewritten to the origin's.
    pub authority: String,
}

impl std::str::FromStr for OriginUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if let Some(path) = text.strip_prefix("file://") {
            return OriginUrl::directory(text, path);
        }
        let uri: http::Uri = text
            .parse()
            .map_err(|e| format!("`{text}` is not a URL: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(other) => {
                return Err(format!(
                    "`{text}`: scheme `{other}` is not supported (http, https or file)"
                ))
            }
            None => {
                return Err(format!(
                    "`{text}`: expected a URL such as http://127.0.0.1:8081"
                ))
            }
        };
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!("`{text}`: an origin URL has no path or query"));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("`{text}`: the URL has no host"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("`{text}`: the URL has no host"));
        }
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Ok(OriginUrl {
            directory: None,
            tls,
            host: host.to_owned(),
            port,
            authority: authority.as_str().to_owned(),
        })
    }
}

impl OriginUrl {
    /// `file://PATH` (`path` is what follows `file://`): an absolute directory, with no host
    /// part (`file://localhost/` is not accepted either: one spelling, as operators read it).
    fn directory(text: &str, path: &str) -> Result<OriginUrl, String> {
        if !path.starts_with('/') {
            return Err(format!(
                "`{text}`: expected an absolute directory such as file:///srv/www"
            ));
        }
        if path.contains(['?', '#', '%']) {
            return Err(format!(
                "`{text}`: a file URL here is a plain directory path, without `?`, `#` or `%`"
            ));
        }
        let trimmed = path.trim_end_matches('/');
        let directory = std::path::PathBuf::from(if trimmed.is_empty() { "/" } else { trimmed });
        Ok(OriginUrl {
            authority: format!("file://{}", directory.display()),
            directory: Some(directory),
            tls: false,
            host: String::new(),
            port: 0,
        })
    }

    /// Whether it is a directory the node serves (`file:///`) rather than a server.
    pub fn is_directory(&self) -> bool {
        self.directory.is_some()
    }
}

impl Serialize for OriginUrl {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.is_directory() {
            return serializer.serialize_str(&self.authority);
        }
        let scheme = if self.tls { "https" } else { "http" };
        serializer.serialize_str(&format!("{scheme}://{}", self.authority))
    }
}

impl Serialize for HostHeader {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(match self {
            HostHeader::Preserve => "preserve",
            HostHeader::Origin => "origin",
            HostHeader::Fixed(name) => name,
        })
    }
}

impl<'de> Deserialize<'de> for OriginUrl {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::OriginUrl;

    #[test]
    fn origin_urls_need_a_host_and_no_path() {
        let url: OriginUrl = "https://[::1]:8443".parse().unwrap();
        assert_eq!((url.host.as_str(), url.port, url.tls), ("::1", 8443, true));
        for bad in [
            "http://:80",
            "http://://DD:o/",
            "http://a/b",
            "ftp://a",
            "a:80",
            "file://x",
        ] {
            assert!(bad.parse::<OriginUrl>().is_err(), "{bad}");
        }
    }
}
