//! The one HTTP client: HTTP/1.1 on hyper's connection API, one connection per request
//! (`Connection: close`, as the router and the Mesos master expect nothing else), with a
//! connect timeout and a total deadline, HTTP basic auth, 307/308 redirects (a Mesos master
//! that is not the leader answers 307 with a protocol-relative `Location`), streamed bodies
//! (hyper decodes chunked framing; the operator API's SUBSCRIBE is an endless RecordIO
//! stream read piece by piece), sockets opened inside another network namespace, and TLS
//! for `https` URLs behind the `tls` feature.
//!
//! The core is async ([`Client`]); [`blocking::Client`] wraps it with a current-thread
//! runtime for the synchronous callers (the harness, the CLI, the CNI plugins).

pub mod blocking;
mod connect;
mod tls;
mod url;

pub use connect::Connector;
pub use tls::Tls;
pub use url::{Scheme, Url};

use crate::{Context, Error, ErrorKind, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use std::time::Duration;
use tokio::time::Instant;

/// Default time allowed to open the TCP connection (and finish a TLS handshake).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default time allowed for a whole exchange: connect, send, and the answer's head (a
/// buffered [`Client::fetch`] includes the body).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default number of 307/308 redirects followed.
pub const DEFAULT_REDIRECTS: usize = 3;

/// One request. `Host`, `Content-Length`, `Connection: close` and, when configured,
/// `Authorization` are added when it is sent.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: hyper::Method,
    pub url: Url,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Request {
    pub fn new(method: hyper::Method, url: Url) -> Request {
        Request {
            method,
            url,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    pub fn get(url: Url) -> Request {
        Request::new(hyper::Method::GET, url)
    }

    pub fn post(url: Url, body: impl Into<Bytes>) -> Request {
        Request::new(hyper::Method::POST, url).body(body)
    }

    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Request {
        self.body = body.into();
        self
    }

    /// `METHOD url`, for error messages.
    fn describe(&self) -> String {
        format!("{} {}", self.method, self.url)
    }
}

/// Status line and headers of an answer, and the URL that gave it (after redirects).
#[derive(Debug, Clone)]
pub struct Head {
    pub status: u16,
    pub reason: String,
    pub headers: HeaderMap,
    pub url: Url,
}

impl Head {
    /// The first header named `name` (case-insensitive), if it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The body of an answer, read as it arrives.
#[derive(Debug)]
pub struct Body {
    incoming: hyper::body::Incoming,
}

impl Body {
    /// The next piece of the body, `None` at its end (trailers are skipped).
    pub async fn chunk(&mut self) -> Result<Option<Bytes>> {
        loop {
            match self.incoming.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(hyper_error(e).context("read body")),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if !data.is_empty() {
                            return Ok(Some(data));
                        }
                    }
                }
            }
        }
    }

    /// The rest of the body, refusing more than `max` bytes.
    pub async fn read_all(&mut self, max: usize) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(piece) = self.chunk().await? {
            out.extend_from_slice(&piece);
            if out.len() > max {
                return Err(Error::new(
                    ErrorKind::Decode,
                    format!("read body: larger than {max} bytes"),
                ));
            }
        }
        Ok(out)
    }
}

/// A complete answer.
#[derive(Debug, Clone)]
pub struct Response {
    pub head: Head,
    pub body: Vec<u8>,
}

impl Response {
    pub fn status(&self) -> u16 {
        self.head.status
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Largest body [`Client::fetch`] reads unless told otherwise.
pub const DEFAULT_MAX_BODY: usize = 64 << 20;

/// How requests are sent: timeouts, credentials, redirects, where sockets are opened, TLS.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    connector: Connector,
    connect_timeout: Duration,
    timeout: Duration,
    authorization: Option<HeaderValue>,
    redirects: usize,
    tls: Tls,
}

impl Default for Client {
    fn default() -> Self {
        Client::new()
    }
}

impl Client {
    pub fn new() -> Client {
        Client {
            connector: Connector::direct(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: DEFAULT_TIMEOUT,
            authorization: None,
            redirects: DEFAULT_REDIRECTS,
            tls: Tls::default(),
        }
    }

    /// Time to connect, and for the whole exchange (see [`DEFAULT_TIMEOUT`]).
    pub fn with_timeouts(mut self, connect: Duration, total: Duration) -> Client {
        self.connect_timeout = connect;
        self.timeout = total;
        self
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `Authorization: Basic base64(user:password)` on every request, redirects included
    /// (a Mesos leader redirect stays within the cluster the credentials are for).
    pub fn with_basic_auth(mut self, user: &str, password: &str) -> Client {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        self.authorization = HeaderValue::from_str(&format!("Basic {token}")).ok();
        self
    }

    /// How many 307/308 redirects to follow (0: the 307 answer is returned as it is).
    pub fn with_redirects(mut self, n: usize) -> Client {
        self.redirects = n;
        self
    }

    /// Where connections are opened from (e.g. a simulated host's network namespace).
    pub fn with_connector(mut self, connector: Connector) -> Client {
        self.connector = connector;
        self
    }

    pub fn connector(&self) -> &Connector {
        &self.connector
    }

    /// How `https` URLs are verified.
    pub fn with_tls(mut self, tls: Tls) -> Client {
        self.tls = tls;
        self
    }

    /// Sends `req`, following redirects, and returns the head with the body still to read.
    /// Everything up to the head must happen before `deadline`; reading the body is the
    /// caller's (with its own deadline: streams outlive any one timeout).
    pub async fn send_until(&self, req: &Request, deadline: Instant) -> Result<(Head, Body)> {
        let mut url = req.url.clone();
        let mut redirects = 0;
        loop {
            let (head, body) = tokio::time::timeout_at(deadline, self.exchange(req, &url))
                .await
                .map_err(|_| {
                    Error::new(
                        ErrorKind::TryAgainLater,
                        format!("no answer within {:?}", self.timeout),
                    )
                })
                .and_then(|r| r)
                .with_context(|| format!("{} {url}", req.method))?;
            let location = head.header("location").map(str::to_string);
            match (head.status, location) {
                (307 | 308, Some(location)) if redirects < self.redirects => {
                    redirects += 1;
                    url = url.join_location(&location)?;
                }
                _ => return Ok((head, body)),
            }
        }
    }

    /// [`Client::send_until`] with this client's total timeout.
    pub async fn send(&self, req: &Request) -> Result<(Head, Body)> {
        self.send_until(req, Instant::now() + self.timeout).await
    }

    /// Sends `req` and reads the whole answer (at most `max_body` bytes), all within the
    /// total timeout.
    pub async fn fetch(&self, req: &Request, max_body: usize) -> Result<Response> {
        let deadline = Instant::now() + self.timeout;
        let (head, mut body) = self.send_until(req, deadline).await?;
        let body = tokio::time::timeout_at(deadline, body.read_all(max_body))
            .await
            .map_err(|_| {
                Error::new(
                    ErrorKind::TryAgainLater,
                    format!("read body: not complete within {:?}", self.timeout),
                )
            })
            .and_then(|r| r)
            .with_context(|| req.describe())?;
        Ok(Response { head, body })
    }

    /// One request to `url` on a new connection.
    async fn exchange(&self, req: &Request, url: &Url) -> Result<(Head, Body)> {
        let io = self
            .connector
            .open(url, self.connect_timeout, &self.tls)
            .await?;
        let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
            // Some servers (and the harness' scripted test servers) match header names as
            // written: send them as `Content-Type`, not `content-type`.
            .title_case_headers(true)
            .handshake::<_, Full<Bytes>>(hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(hyper_error)?;
        // The connection runs beside the request until the body is read or dropped.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut builder = hyper::Request::builder()
            .method(req.method.clone())
            .uri(url.path.as_str())
            .header(hyper::header::HOST, url.authority())
            .header(hyper::header::CONNECTION, "close");
        if let Some(auth) = &self.authorization {
            builder = builder.header(hyper::header::AUTHORIZATION, auth.clone());
        }
        for (k, v) in &req.headers {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| {
                Error::new(ErrorKind::InvalidConfig, format!("header name {k:?}: {e}"))
            })?;
            let value = HeaderValue::from_str(v).map_err(|e| {
                Error::new(ErrorKind::InvalidConfig, format!("header {k} value: {e}"))
            })?;
            builder = builder.header(name, value);
        }
        if req.method != hyper::Method::GET || !req.body.is_empty() {
            builder = builder.header(hyper::header::CONTENT_LENGTH, req.body.len());
        }
        let request = builder
            .body(Full::new(req.body.clone()))
            .map_err(|e| Error::new(ErrorKind::InvalidConfig, format!("build request: {e}")))?;
        let answer = sender.send_request(request).await.map_err(hyper_error)?;
        let (parts, incoming) = answer.into_parts();
        let head = Head {
            status: parts.status.as_u16(),
            reason: match parts.extensions.get::<hyper::ext::ReasonPhrase>() {
                Some(r) => String::from_utf8_lossy(r.as_bytes()).into_owned(),
                None => parts.status.canonical_reason().unwrap_or("").to_string(),
            },
            headers: parts.headers,
            url: url.clone(),
        };
        Ok((head, Body { incoming }))
    }
}

/// hyper's errors: a connection that closed or failed before a whole answer is transient
/// (the server is restarting, or overloaded); a malformed answer is a decode error.
fn hyper_error(e: hyper::Error) -> Error {
    let kind = if e.is_parse() || e.is_parse_status() {
        ErrorKind::Decode
    } else if e.is_incomplete_message() || e.is_closed() || e.is_canceled() || e.is_timeout() {
        ErrorKind::TryAgainLater
    } else {
        ErrorKind::Io
    };
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    Error::new(kind, msg)
}

#[cfg(test)]
mod tests;
