//! The admin API over HTTP: one request at a time, typed answers.

use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;

/// How long the API has to answer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The admin API of one node (or a router's status API).
pub struct Api {
    base: String,
    token: Option<String>,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// An answer: the API's JSON as sent (for `--json`), and read into its type.
pub struct Answer<T> {
    /// The body as sent.
    pub json: Bytes,
    /// The body read.
    pub value: T,
}

impl Api {
    /// The API at `base`, such as `http://127.0.0.1:9090`, asked with `token`.
    pub fn new(base: &str, token: Option<String>) -> Result<Api, String> {
        let base = base.trim_end_matches('/').to_owned();
        if !base.starts_with("http://") {
            return Err(format!(
                "--admin {base}: expected a URL such as http://127.0.0.1:9090"
            ));
        }
        Ok(Api {
            base,
            token,
            client: Client::builder(TokioExecutor::new()).build_http(),
        })
    }

    /// `GET path`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<Answer<T>, String> {
        self.call(http::Method::GET, path).await
    }

    /// `POST path`.
    pub async fn post<T: DeserializeOwned>(&self, path: &str) -> Result<Answer<T>, String> {
        self.call(http::Method::POST, path).await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: http::Method,
        path: &str,
    ) -> Result<Answer<T>, String> {
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        // What the admin asks of a change, to tell it from a cross-site form.
        let request = request
            .header(shoal_api::CHANGE_HEADER, "1")
            .body(Full::new(Bytes::new()))
            .map_err(|error| format!("bad request: {error}"))?;
        let response = tokio::time::timeout(TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| format!("the admin API at {} did not answer within 10 s", self.base))?
            .map_err(|error| {
                format!(
                    "cannot reach the admin API at {}: {}",
                    self.base,
                    root_cause(&error)
                )
            })?;
        let status = response.status();
        let json = tokio::time::timeout(TIMEOUT, response.into_body().collect())
            .await
            .map_err(|_| format!("the admin API at {} stopped answering", self.base))?
            .map_err(|error| format!("reading the answer: {error}"))?
            .to_bytes();
        match status {
            http::StatusCode::UNAUTHORIZED => {
                Err("unauthorized: give the admin token with --token or SHOAL_ADMIN_TOKEN".into())
            }
            status if !status.is_success() => Err(format!(
                "{}: {}",
                status,
                String::from_utf8_lossy(&json).trim()
            )),
            _ => {
                let value = serde_json::from_slice(&json).map_err(|error| {
                    format!("the admin API sent an answer this ctl cannot read: {error}")
                })?;
                Ok(Answer { json, value })
            }
        }
    }
}

/// The innermost cause of a connection error (hyper's outer ones say only "client error").
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// Percent-encodes a query parameter value.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_encoded_as_query_values() {
        assert_eq!(
            encode("http://a.test/x?y=1&z"),
            "http%3A%2F%2Fa.test%2Fx%3Fy%3D1%26z"
        );
    }
}
