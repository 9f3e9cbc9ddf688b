//! Which pool a request goes to: routes by host and path prefix, first match wins, then the
//! default pool.

use std::sync::Arc;

use super::Pool;
use crate::config::{Config, PoolConfig};

/// The pools and the routes to them.
#[derive(Debug)]
pub struct Routes {
    pools: Vec<Arc<Pool>>,
    /// What each pool was built from, to carry it over a reload that leaves it unchanged.
    configs: Vec<PoolConfig>,
    routes: Vec<Route>,
    default: usize,
}

#[derive(Debug)]
struct Route {
    /// Lowercase host, or `.example.com` for `*.example.com`.
    host: Option<String>,
    path_prefix: Option<String>,
    pool: usize,
    fallthrough_404: bool,
    /// Keys that may sign its URLs; empty: signatures not needed.
    signing_keys: Vec<Vec<u8>>,
}

/// Where a request goes.
#[derive(Clone, Copy, Debug)]
pub struct Destination<'a> {
    /// The pool.
    pub pool: &'a Arc<Pool>,
    /// Try the pool's next host when one answers 404.
    pub fallthrough_404: bool,
}

impl Route {
    fn matches(&self, host: &str, path: &str) -> bool {
        let host_matches = match &self.host {
            None => true,
            Some(suffix) if suffix.starts_with('.') => {
                host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
            Some(exact) => host == exact,
        };
        host_matches
            && self
                .path_prefix
                .as_ref()
                .is_none_or(|prefix| path.starts_with(prefix.as_str()))
    }
}

impl Routes {
    /// The pools and routes of `config` (checked: every route names a pool). A pool of
    /// `previous` whose settings are the same is kept, with its connections' state, health and
    /// counters.
    pub fn new(config: &Config, previous: Option<&Routes>) -> Routes {
        let configs = config.effective_pools();
        let pools: Vec<Arc<Pool>> = configs
            .iter()
            .map(|pool| {
                let kept = previous.and_then(|previous| {
                    let index = previous.configs.iter().position(|old| old == pool)?;
                    Some(Arc::clone(&previous.pools[index]))
                });
                kept.unwrap_or_else(|| Arc::new(Pool::new(pool)))
            })
            .collect();
        let index_of = |name: &str| pools.iter().position(|pool| pool.name == name);
        let routes = config
            .routes
            .iter()
            .filter_map(|route| {
                Some(Route {
                    host: route.host.as_ref().map(|host| {
                        let host = host.to_ascii_lowercase();
                        host.strip_prefix('*').map_or(host.clone(), str::to_owned)
                    }),
                    path_prefix: route.path_prefix.clone(),
                    pool: index_of(&route.pool)?,
                    fallthrough_404: route.fallthrough_404,
                    signing_keys: route
                        .signing_keys
                        .iter()
                        .map(|key| key.as_bytes().to_vec())
                        .collect(),
                })
            })
            .collect();
        let default = index_of("origin").unwrap_or(0);
        Routes {
            pools,
            configs,
            routes,
            default,
        }
    }

    /// Where a request to `host` (with or without port) and `path` goes.
    pub fn destination(&self, host: &str, path: &str) -> Destination<'_> {
        match self.route(host, path) {
            Some(route) => Destination {
                pool: &self.pools[route.pool],
                fallthrough_404: route.fallthrough_404,
            },
            None => Destination {
                pool: &self.pools[self.default],
                fallthrough_404: false,
            },
        }
    }

    /// The keys that may sign URLs of `host` and `path`, if their route wants signed URLs.
    pub fn signing_keys(&self, host: &str, path: &str) -> Option<&[Vec<u8>]> {
        self.route(host, path)
            .map(|route| route.signing_keys.as_slice())
            .filter(|keys| !keys.is_empty())
    }

    /// The first route that matches, if any.
    fn route(&self, host: &str, path: &str) -> Option<&Route> {
        if self.routes.is_empty() {
            return None;
        }
        let host = strip_port(host);
        let lowercase;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lowercase = host.to_ascii_lowercase();
            lowercase.as_str()
        } else {
            host
        };
        self.routes.iter().find(|route| route.matches(host, path))
    }

    /// Every pool.
    pub fn pools(&self) -> &[Arc<Pool>] {
        &self.pools
    }
}

fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port)) if !name.ends_with(']') || host.starts_with('[') => {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                name
            } else {
                host
            }
        }
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn routes(text: &str) -> Routes {
        Routes::new(
            &Config::parse(text, std::path::Path::new("test.toml")).unwrap(),
            None,
        )
    }

    #[test]
    fn the_first_matching_route_wins_and_the_rest_go_to_the_default() {
        let routes = routes(
            r#"
            [origin]
            urls = ["http://127.0.0.1:1"]
            [[pools]]
            name = "images"
            hosts = [{ url = "http://127.0.0.1:2" }]
            [[pools]]
            name = "api"
            hosts = [{ url = "http://127.0.0.1:3" }]
            [[routes]]
            host = "*.example.com"
            path_prefix = "/img/"
            pool = "images"
            [[routes]]
            host = "api.example.com"
            pool = "api"
            "#,
        );
        let pool = |host, path| routes.destination(host, path).pool.name.clone();
        assert_eq!(pool("cdn.example.com", "/img/a.png"), "images");
        assert_eq!(pool("CDN.Example.com:8080", "/img/a.png"), "images");
        assert_eq!(
            pool("api.example.com", "/img/x"),
            "images",
            "first match wins"
        );
        assert_eq!(pool("api.example.com", "/v1"), "api");
        assert_eq!(
            pool("example.com", "/img/a.png"),
            "origin",
            "*. needs a subdomain"
        );
        assert_eq!(pool("other.test", "/"), "origin");
    }

    #[test]
    fn a_reload_keeps_the_pools_whose_settings_did_not_change() {
        let text = |api_port: u16| {
            format!(
                "[[pools]]\nname = \"origin\"\nhosts = [{{ url = \"http://127.0.0.1:1\" }}]\n\
                 [[pools]]\nname = \"api\"\nhosts = [{{ url = \"http://127.0.0.1:{api_port}\" }}]\n"
            )
        };
        let before = routes(&text(2));
        let parse = |text: &str| Config::parse(text, std::path::Path::new("t.toml")).unwrap();
        let after = Routes::new(&parse(&text(3)), Some(&before));
        assert!(
            Arc::ptr_eq(&before.pools()[0], &after.pools()[0]),
            "unchanged: kept"
        );
        assert!(
            !Arc::ptr_eq(&before.pools()[1], &after.pools()[1]),
            "changed: new"
        );
        assert_eq!(after.pools()[1].hosts[0].url.authority, "127.0.0.1:3");
    }
}
