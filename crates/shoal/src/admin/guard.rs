//! Who may use the admin API, checked before anything is answered. A browser on the
//! operator's machine can reach a loopback admin listener, so the token is not the only
//! defence:
//!
//! - **DNS rebinding**: a page of `evil.example` whose name is made to resolve to 127.0.0.1
//!   reaches the admin under `Host: evil.example`. A request whose `Host` is a name must name
//!   the admin (`localhost`, or one of `admin.names`); an address is never a rebound name.
//! - **Cross-site requests**: a page elsewhere can make a browser send a form or a simple
//!   `fetch` to the admin, with no preflight. A change (any method but GET and HEAD) must come
//!   from the admin's own origin when it says where it came from (`Origin`), and must carry
//!   what no cross-site form or simple request can: the `Authorization` header, a
//!   `Content-Type` other than a form's, or `X-Shoal-Admin`.
//! - **The token** (when set): compared over SHA-256 digests of fixed length, so the time
//!   taken says nothing of its length or of where a guess differs; the scheme is
//!   case-insensitive (RFC 9110 §11.1).

use http::{Method, Request, StatusCode};

use crate::bearer::Bearer;

pub use shoal_api::CHANGE_HEADER;

/// Why a request is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No valid token.
    Unauthorized,
    /// `Host` names something other than the admin: a rebound name.
    ForeignHost,
    /// A change that a page elsewhere could have made the browser send.
    CrossSite(&'static str),
}

impl Refusal {
    /// The status and text the client gets.
    pub fn answer(&self) -> (StatusCode, &'static str) {
        match self {
            Refusal::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "a valid admin token is needed: Authorization: Bearer TOKEN\n",
            ),
            Refusal::ForeignHost => (
                StatusCode::MISDIRECTED_REQUEST,
                "this admin API is not served under that Host (see admin.names)\n",
            ),
            Refusal::CrossSite(why) => (StatusCode::FORBIDDEN, why),
        }
    }
}

/// The checks of one admin listener.
pub struct Guard {
    token: Option<Bearer>,
    /// Host names the admin answers to, lowercase.
    names: Vec<String>,
}

impl Guard {
    /// A guard requiring `token` (if any), answering to `names` besides `localhost` and any
    /// address.
    pub fn new(token: Option<&str>, names: &[String]) -> Guard {
        Guard {
            token: token.map(Bearer::new),
            names: names.iter().map(|name| name.to_ascii_lowercase()).collect(),
        }
    }

    /// Whether `request` may be served.
    pub fn check<B>(&self, request: &Request<B>) -> Result<(), Refusal> {
        let host = request
            .headers()
            .get(http::header::HOST)
            .and_then(|value| value.to_str().ok())
            .ok_or(Refusal::ForeignHost)?;
        if !self.answers_to(host) {
            return Err(Refusal::ForeignHost);
        }
        if !self.authorized(request) {
            return Err(Refusal::Unauthorized);
        }
        if request.method() == Method::GET || request.method() == Method::HEAD {
            return Ok(());
        }
        if let Some(origin) = request.headers().get(http::header::ORIGIN) {
            let own = origin
                .to_str()
                .ok()
                .and_then(|origin| origin.strip_prefix("http://"))
                .is_some_and(|origin| origin.eq_ignore_ascii_case(host));
            if !own {
                return Err(Refusal::CrossSite(
                    "changes are accepted only from the admin's own pages (Origin)\n",
                ));
            }
        }
        let headers = request.headers();
        let simple_type = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_none_or(|value| {
                let essence = value.split(';').next().unwrap_or("").trim();
                [
                    "application/x-www-form-urlencoded",
                    "multipart/form-data",
                    "text/plain",
                ]
                .iter()
                .any(|simple| essence.eq_ignore_ascii_case(simple))
            });
        let marked = headers.contains_key(http::header::AUTHORIZATION)
            || headers.contains_key(CHANGE_HEADER)
            || !simple_type;
        if !marked {
            return Err(Refusal::CrossSite(
                "a change needs an X-Shoal-Admin header (which a cross-site form cannot send)\n",
            ));
        }
        Ok(())
    }

    /// Whether `host` (a `Host` value) is one the admin answers to: an address, `localhost`,
    /// or one of the configured names, with any port.
    fn answers_to(&self, host: &str) -> bool {
        let name = match host.rsplit_once(':') {
            // `[::1]:9090`, `[::1]`, `127.0.0.1:9090`, `name:9090`.
            _ if host.starts_with('[') => return host[1..].split(']').next().is_some_and(is_ip),
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        };
        is_ip(name)
            || name.eq_ignore_ascii_case("localhost")
            || self
                .names
                .iter()
                .any(|known| name.eq_ignore_ascii_case(known))
    }

    fn authorized<B>(&self, request: &Request<B>) -> bool {
        self.token
            .as_ref()
            .is_none_or(|token| token.admits(request.headers()))
    }
}

fn is_ip(text: &str) -> bool {
    text.parse::<std::net::IpAddr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder().method(method).uri("/purge");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn requests_from_elsewhere_are_refused() {
        let guard = Guard::new(None, &["admin.internal".to_owned()]);
        let check = |method, headers: &[(&str, &str)]| guard.check(&request(method, headers));
        let host = ("host", "127.0.0.1:9090");
        let marked = ("x-shoal-admin", "1");
        assert_eq!(check("GET", &[host]), Ok(()));
        for good in [
            "localhost:9090",
            "[::1]:9090",
            "10.1.2.3",
            "ADMIN.internal:9090",
        ] {
            assert_eq!(check("GET", &[("host", good)]), Ok(()), "{good}");
        }
        for rebound in [
            "evil.example",
            "evil.example:9090",
            "localhost.evil.example",
        ] {
            assert_eq!(
                check("GET", &[("host", rebound)]),
                Err(Refusal::ForeignHost)
            );
        }
        assert_eq!(check("GET", &[]), Err(Refusal::ForeignHost));
        assert_eq!(check("POST", &[host, marked]), Ok(()));
        assert_eq!(
            check("POST", &[host, marked, ("origin", "http://127.0.0.1:9090")]),
            Ok(())
        );
        assert_eq!(
            check("POST", &[host, ("content-type", "application/json")]),
            Ok(())
        );
        for cross_site in [
            vec![host],
            vec![host, ("content-type", "text/plain;charset=utf-8")],
            vec![host, ("content-type", "application/x-www-form-urlencoded")],
            vec![host, marked, ("origin", "http://evil.example")],
            vec![host, marked, ("origin", "null")],
        ] {
            assert!(
                matches!(check("POST", &cross_site), Err(Refusal::CrossSite(_))),
                "{cross_site:?}"
            );
        }
    }

    #[test]
    fn the_token_is_compared_whole_and_its_scheme_in_any_case() {
        let guard = Guard::new(Some("0123456789abcdef"), &[]);
        let check = |authorization: &str| {
            let headers = [("host", "127.0.0.1"), ("authorization", authorization)];
            guard.check(&request("GET", &headers))
        };
        for good in [
            "Bearer 0123456789abcdef",
            "bearer 0123456789abcdef",
            "BEARER  0123456789abcdef",
        ] {
            assert_eq!(check(good), Ok(()), "{good}");
        }
        for bad in [
            "Bearer 0123456789abcde",
            "Bearer 0123456789abcdef0",
            "Basic 0123456789abcdef",
            "0123456789abcdef",
            "Bearer",
            "",
        ] {
            assert_eq!(check(bad), Err(Refusal::Unauthorized), "{bad:?}");
        }
    }
}
