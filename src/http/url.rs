//! Where a request goes: scheme, host, port and path. Parsed with the `http` crate's `Uri`
//! (hyper's own), plus the forms the harness and the CLI accept: a bare `host[:port][/path]`
//! (plain HTTP, the caller's default port) and, in redirects, Mesos' protocol-relative
//! `//host:port/path`.

use crate::{Context, Error, ErrorKind, Result};
use hyper::Uri;

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// An absolute `http(s)://host:port/path?query` URL (the port is always explicit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub scheme: Scheme,
    /// Host name or address, IPv6 without brackets.
    pub host: String,
    pub port: u16,
    /// Path plus query, always starting with `/`.
    pub path: String,
}

impl Url {
    /// Accepts `http://host[:port][/path]`, `https://...`, `//host...` and `host[:port][/path]`
    /// (plain HTTP). A missing port is `default_port` for either scheme: Mesos masters and
    /// the router keep their own port under TLS.
    pub fn parse(s: &str, default_port: u16) -> Result<Url> {
        let bad =
            |why: &str| Error::new(ErrorKind::InvalidConfig, format!("parse URL {s:?}: {why}"));
        let full = if s.starts_with("http://") || s.starts_with("https://") {
            s.to_string()
        } else if let Some(rest) = s.strip_prefix("//") {
            format!("http://{rest}")
        } else if s.contains("://") {
            return Err(bad("only http and https are supported"));
        } else {
            format!("http://{s}")
        };
        let uri: Uri = full.parse().map_err(|e| bad(&format!("{e}")))?;
        let scheme = match uri.scheme_str() {
            Some("https") => Scheme::Https,
            _ => Scheme::Http,
        };
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("no host"));
        }
        // An empty port (`host:`) means the default; `Uri` lets a non-numeric one through
        // (its `port()` is then `None`), so the authority's text decides.
        let port_text = match authority.as_str().rsplit_once(':') {
            Some((h, p)) if !h.starts_with('[') || h.ends_with(']') => p,
            _ => "",
        };
        let port = if port_text.is_empty() {
            default_port
        } else {
            port_text
                .parse()
                .map_err(|_| bad(&format!("bad port {port_text:?}")))?
        };
        let path = uri
            .path_and_query()
            .map(|p| p.as_str())
            .filter(|p| !p.is_empty())
            .unwrap_or("/");
        Ok(Url {
            scheme,
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }

    /// The same server with another path.
    pub fn with_path(&self, path: &str) -> Url {
        Url {
            path: path.to_string(),
            ..self.clone()
        }
    }

    /// Where a redirect's `Location` points: a bare path stays on this server, a
    /// protocol-relative `//host:port/path` (what Mesos sends) keeps this scheme, an absolute
    /// URL is taken as it is.
    pub fn join_location(&self, location: &str) -> Result<Url> {
        if location.starts_with('/') && !location.starts_with("//") {
            return Ok(self.with_path(location));
        }
        let mut url = Url::parse(location, self.port).context("follow redirect")?;
        if location.starts_with("//") {
            url.scheme = self.scheme;
        }
        Ok(url)
    }

    /// `host:port` as sent in the `Host` header (IPv6 in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        write!(f, "{scheme}://{}{}", self.authority(), self.path)
    }
}
