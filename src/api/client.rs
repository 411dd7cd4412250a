//! Blocking HTTP/1.1 client for the router, with a connect timeout and a total deadline on
//! every call (Weave's client had none, so a hung router hung every container launch).
//!
//! Two transports under the same typed calls: by default a minimal exchange of its own (no
//! async runtime: a CNI plugin process pays 40-50 us less per call, measured by
//! `benches/http_client.rs`), and [`Client::over_shared_http`], the crate's one hyper client
//! ([`crate::http`]), for the CLI and other long-lived callers.

use crate::attachment::Attachment;
use crate::error::Detail;
use crate::{Context, Error, ErrorKind, Result};
use ipnet::Ipv4Net;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Default time allowed to establish the TCP connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default time allowed for a whole call (the router bounds its own waits below this).
pub const DEFAULT_TOTAL_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer we read; the router's are small.
const MAX_RESPONSE: usize = 16 << 20;

/// What `POST /ip/<id>` with an attachment answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocated {
    pub cidr: Ipv4Net,
    /// The router's DNS domain, when its DNS server is on.
    pub dns_domain: Option<String>,
}

/// A typed client for one router.
#[derive(Debug, Clone)]
pub struct Client {
    /// `host:port`.
    addr: String,
    connect_timeout: Duration,
    total_timeout: Duration,
    transport: Transport,
}

/// How a [`Client`] sends its requests.
#[derive(Debug, Clone)]
enum Transport {
    /// The built-in exchange below (the plugins' fast path).
    Minimal,
    /// The shared hyper client.
    Shared(crate::http::blocking::Client),
}

impl Client {
    /// Address from `WEAVE_HTTP_ADDR` (`host`, `host:port` or `:port`), else 127.0.0.1:6784.
    pub fn from_env() -> Client {
        match std::env::var("WEAVE_HTTP_ADDR") {
            Ok(a) if !a.trim().is_empty() => Client::new(a.trim()),
            _ => Client::new(crate::DEFAULT_HTTP_ADDR),
        }
    }

    /// `addr` as Weave's script takes it: `host`, `host:port` or `:port` (an optional
    /// `http://` prefix is dropped).
    pub fn new(addr: &str) -> Client {
        let addr = addr
            .strip_prefix("http://")
            .unwrap_or(addr)
            .trim_end_matches('/');
        let addr = if let Some(port) = addr.strip_prefix(':') {
            format!("127.0.0.1:{port}")
        } else if !addr.contains(':') {
            format!("{addr}:6784")
        } else {
            addr.to_string()
        };
        Client {
            addr,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            total_timeout: DEFAULT_TOTAL_TIMEOUT,
            transport: Transport::Minimal,
        }
    }

    /// The same client, sending through the crate's one hyper client ([`crate::http`]).
    /// Errors keep their kinds and details: a router not reached is `TryAgainLater` with
    /// [`Detail::Unreachable`] (and the errno), an answer is mapped as before.
    pub fn over_shared_http(mut self) -> Result<Client> {
        let inner = crate::http::Client::new()
            .with_timeouts(self.connect_timeout, self.total_timeout)
            .with_redirects(0);
        self.transport = Transport::Shared(crate::http::blocking::Client::new(inner)?);
        Ok(self)
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn with_timeouts(mut self, connect: Duration, total: Duration) -> Client {
        self.connect_timeout = connect;
        self.total_timeout = total;
        if let Transport::Shared(c) = self.transport {
            self.transport = Transport::Shared(c.map(|c| c.with_timeouts(connect, total)));
        }
        self
    }

    /// `POST /ip/<id>[/<subnet>]` → the allocated CIDR (prefix of the subnet).
    pub fn allocate(&self, id: &str, subnet: Option<Ipv4Net>) -> Result<Ipv4Net> {
        let path = ip_path(id, subnet);
        let body = self.expect_ok("POST", &path, Some(b""))?;
        parse_cidr(body.trim()).with_context(|| format!("POST {path}"))
    }

    /// `POST /ip/<id>[/<subnet>]` with the attachment as JSON body: allocates and records the
    /// attachment in one call (the router fills in `ips`, `mac` and `ipam_id`). The ADD path
    /// of `weave-net` makes exactly this one router call.
    ///
    /// The answer also says whether the router's DNS server is on, and for which domain
    /// (a header), so the plugin's result can name the nameserver without another call.
    pub fn allocate_attached(
        &self,
        id: &str,
        subnet: Option<Ipv4Net>,
        attachment: &Attachment,
    ) -> Result<Allocated> {
        let path = ip_path(id, subnet);
        let body = serde_json::to_vec(attachment)?;
        let a = self.expect_answer("POST", &path, Some(&body))?;
        Ok(Allocated {
            cidr: parse_cidr(a.body.trim()).with_context(|| format!("POST {path}"))?,
            dns_domain: a.dns_domain,
        })
    }

    /// `GET /ip/<id>[/<subnet>]` → the CIDRs `id` owns (empty if none).
    pub fn lookup(&self, id: &str, subnet: Option<Ipv4Net>) -> Result<Vec<Ipv4Net>> {
        let path = ip_path(id, subnet);
        let body = self.expect_ok("GET", &path, None)?;
        body.split_whitespace()
            .map(parse_cidr)
            .collect::<Result<Vec<_>>>()
            .with_context(|| format!("GET {path}"))
    }

    /// `PUT /ip/<id>/<cidr>`: claim a specific address.
    pub fn claim(&self, id: &str, cidr: Ipv4Net) -> Result<()> {
        let path = format!(
            "/ip/{}/{}/{}",
            encode_segment(id),
            cidr.addr(),
            cidr.prefix_len()
        );
        self.expect_ok("PUT", &path, Some(b"")).map(drop)
    }

    /// `DELETE /ip/<id>`: frees every address of `id` and drops attachments recorded with
    /// that IPAM ID. `Ok(false)` when it had no addresses.
    pub fn release(&self, id: &str) -> Result<bool> {
        let path = format!("/ip/{}", encode_segment(id));
        let (status, body) = self.request("DELETE", &path, None)?;
        match status {
            200..=299 => Ok(true),
            400 if body.contains("Delete: no addresses for") => Ok(false),
            _ => Err(status_error("DELETE", &path, status, &body)),
        }
    }

    /// `DELETE /ip/<id>/<ip>`: frees one address.
    pub fn release_one(&self, id: &str, ip: Ipv4Addr) -> Result<()> {
        let path = format!("/ip/{}/{ip}", encode_segment(id));
        self.expect_ok("DELETE", &path, None).map(drop)
    }

    /// `GET /ipinfo/defaultsubnet`.
    pub fn default_subnet(&self) -> Result<Ipv4Net> {
        let body = self.expect_ok("GET", "/ipinfo/defaultsubnet", None)?;
        parse_cidr(body.trim()).context("GET /ipinfo/defaultsubnet")
    }

    /// `POST /expose/<ip>/<len>[?skipNAT=true]`: put the address on the bridge (+ NAT).
    pub fn expose(&self, cidr: Ipv4Net, skip_nat: bool) -> Result<()> {
        let mut path = format!("/expose/{}/{}", cidr.addr(), cidr.prefix_len());
        if skip_nat {
            path.push_str("?skipNAT=true");
        }
        self.expect_ok("POST", &path, Some(b"")).map(drop)
    }

    /// `DELETE /expose/<ip>/<len>`: take the address off the bridge and remove its NAT rules.
    pub fn hide(&self, cidr: Ipv4Net) -> Result<()> {
        let path = format!("/expose/{}/{}", cidr.addr(), cidr.prefix_len());
        self.expect_ok("DELETE", &path, None).map(drop)
    }

    /// `GET /status[/<sub>]`: the text body (503 while not ready is returned as text too).
    pub fn status(&self, sub: Option<&str>) -> Result<(u16, String)> {
        let path = match sub {
            Some(s) => format!("/status/{}", encode_segment(s)),
            None => "/status".to_string(),
        };
        let (status, body) = self.request("GET", &path, None)?;
        match status {
            200..=299 | 503 => Ok((status, body)),
            _ => Err(status_error("GET", &path, status, &body)),
        }
    }

    /// `GET /report`: JSON.
    pub fn report(&self) -> Result<serde_json::Value> {
        let body = self.expect_ok("GET", "/report", None)?;
        serde_json::from_str(&body).context("GET /report: decode JSON")
    }

    /// `POST /cni/attachments`; the DNS domain when the router's DNS server is on.
    pub fn register_attachment(&self, a: &Attachment) -> Result<Option<String>> {
        let body = serde_json::to_vec(a)?;
        self.expect_answer("POST", "/cni/attachments", Some(&body))
            .map(|a| a.dns_domain)
    }

    /// `DELETE /cni/attachments/<id>/<ifname>`.
    pub fn unregister_attachment(&self, container_id: &str, ifname: &str) -> Result<()> {
        let path = format!(
            "/cni/attachments/{}/{}",
            encode_segment(container_id),
            encode_segment(ifname)
        );
        self.expect_ok("DELETE", &path, None).map(drop)
    }

    /// `GET /cni/attachments`.
    pub fn attachments(&self) -> Result<Vec<Attachment>> {
        let body = self.expect_ok("GET", "/cni/attachments", None)?;
        serde_json::from_str(&body).context("GET /cni/attachments: decode JSON")
    }

    /// A call that must answer 2xx; returns the body.
    pub(super) fn expect_ok(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<String> {
        self.expect_answer(method, path, body).map(|a| a.body)
    }

    fn expect_answer(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Answer> {
        let a = self
            .exchange(method, path, body)
            .with_context(|| format!("{method} {path}"))?;
        if (200..300).contains(&a.status) {
            Ok(a)
        } else {
            Err(status_error(method, path, a.status, &a.body))
        }
    }

    /// Any call: `(status, body)`; transport failures and timeouts are `TryAgainLater`.
    pub fn request(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<(u16, String)> {
        self.exchange(method, path, body)
            .map(|a| (a.status, a.body))
            .with_context(|| format!("{method} {path}"))
    }

    fn exchange(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Answer> {
        match &self.transport {
            Transport::Minimal => self.exchange_minimal(method, path, body),
            Transport::Shared(http) => self.exchange_shared(http, method, path, body),
        }
    }

    /// One request through the shared hyper client; transport failures are marked as the
    /// router not reached.
    fn exchange_shared(
        &self,
        http: &crate::http::blocking::Client,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Answer> {
        let url = crate::http::Url::parse(&format!("http://{}{path}", self.addr), 6784)?;
        let method = hyper::Method::from_bytes(method.as_bytes())
            .map_err(|e| Error::new(ErrorKind::InvalidConfig, format!("method: {e}")))?;
        let mut req =
            crate::http::Request::new(method, url).header("Accept", "application/json, text/plain");
        if let Some(b) = body {
            req = req.header("Content-Type", content_type(b)).body(b.to_vec());
        }
        let deadline = Instant::now() + self.total_timeout;
        match http.fetch_until(&req, deadline, MAX_RESPONSE) {
            Ok(answer) => Ok(Answer {
                status: answer.status(),
                body: answer.text(),
                dns_domain: answer
                    .head
                    .header(super::DNS_DOMAIN_HEADER)
                    .map(str::to_string),
            }),
            Err(e) if e.kind() == ErrorKind::TryAgainLater => {
                Err(e.with_detail(Detail::Unreachable))
            }
            Err(e) => Err(e),
        }
    }

    fn exchange_minimal(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Answer> {
        let deadline = Instant::now() + self.total_timeout;
        let target = self.resolve()?;
        let mut stream = TcpStream::connect_timeout(&target, self.connect_timeout)
            .map_err(|e| unreachable_io(e, format!("connect {}", self.addr)))?;
        let _ = stream.set_nodelay(true);

        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        if let Some(b) = body {
            request.push_str(&format!(
                "Content-Type: {}\r\nContent-Length: {}\r\n",
                content_type(b),
                b.len()
            ));
        }
        request.push_str("Accept: application/json, text/plain\r\n\r\n");
        let mut bytes = request.into_bytes();
        if let Some(b) = body {
            bytes.extend_from_slice(b);
        }
        set_deadline(&stream, deadline, &self.addr)?;
        stream
            .write_all(&bytes)
            .map_err(|e| unreachable_io(e, format!("send to {}", self.addr)))?;

        let mut raw = Vec::with_capacity(512);
        let mut buf = [0u8; 8192];
        loop {
            set_deadline(&stream, deadline, &self.addr)?;
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    raw.extend_from_slice(&buf[..n]);
                    if raw.len() > MAX_RESPONSE {
                        return Err(Error::new(ErrorKind::Router, "answer too large"));
                    }
                    if response_complete(&raw) {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(timed_out(&self.addr, self.total_timeout))
                }
                Err(e) => return Err(unreachable_io(e, format!("read from {}", self.addr))),
            }
        }
        parse_response(&raw)
    }

    fn resolve(&self) -> Result<SocketAddr> {
        if let Ok(a) = self.addr.parse::<SocketAddr>() {
            return Ok(a);
        }
        self.addr
            .to_socket_addrs()
            .map_err(|e| unreachable_io(e, format!("resolve {}", self.addr)))?
            .next()
            .ok_or_else(|| unreachable(format!("resolve {}: no address", self.addr)))
    }
}

/// JSON bodies (ours) say so; any other body is a form, as Weave's are.
fn content_type(body: &[u8]) -> &'static str {
    if body.first() == Some(&b'{') || body.first() == Some(&b'[') {
        "application/json"
    } else {
        "application/x-www-form-urlencoded"
    }
}

fn ip_path(id: &str, subnet: Option<Ipv4Net>) -> String {
    match subnet {
        Some(s) => format!("/ip/{}/{}/{}", encode_segment(id), s.addr(), s.prefix_len()),
        None => format!("/ip/{}", encode_segment(id)),
    }
}

fn set_deadline(stream: &TcpStream, deadline: Instant, addr: &str) -> Result<()> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(timed_out(addr, Duration::ZERO));
    }
    stream
        .set_read_timeout(Some(left))
        .and_then(|_| stream.set_write_timeout(Some(left)))
        .map_err(|e| unreachable_io(e, "set timeout".to_string()))
}

/// The router was not reached: transient for callers (CNI code 11), and marked so the CLI
/// can tell "not running" from a router that answered.
fn unreachable(msg: String) -> Error {
    Error::new(ErrorKind::TryAgainLater, msg).with_detail(Detail::Unreachable)
}

/// [`unreachable`] keeping the errno (ECONNREFUSED: nobody listens).
fn unreachable_io(e: std::io::Error, what: String) -> Error {
    Error::from(e)
        .with_kind(ErrorKind::TryAgainLater)
        .with_detail(Detail::Unreachable)
        .context(what)
}

fn timed_out(addr: &str, total: Duration) -> Error {
    let what = if total.is_zero() {
        String::new()
    } else {
        format!(" within {total:?}")
    };
    unreachable(format!("no answer from router at {addr}{what}"))
}

/// Maps a non-2xx answer to an error: 503 (not ready) is transient, 404 is NotFound,
/// the rest means the router refused the request.
fn status_error(method: &str, path: &str, status: u16, body: &str) -> Error {
    let kind = match status {
        503 => ErrorKind::TryAgainLater,
        404 => ErrorKind::NotFound,
        _ => ErrorKind::Router,
    };
    let body = body.trim();
    let reason = if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    };
    Error::new(
        kind,
        format!("{method} {path}: router answered {status}{reason}"),
    )
    .with_detail(Detail::HttpStatus(status))
}

fn parse_cidr(s: &str) -> Result<Ipv4Net> {
    s.parse::<Ipv4Net>().map_err(|_| {
        Error::new(
            ErrorKind::Router,
            format!("unexpected answer {s:?}: not an IPv4 CIDR"),
        )
    })
}

/// Characters a path segment keeps as they are (RFC 3986 unreserved, plus `:` and `@`, so
/// `weave:expose` passes unchanged).
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b':')
    .remove(b'@');

/// Percent-encodes a path segment; IDs made of safe characters pass unchanged.
pub(super) fn encode_segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

fn header_end(raw: &[u8]) -> Option<usize> {
    raw.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// True once a Content-Length body is complete (lets us stop before the server closes).
fn response_complete(raw: &[u8]) -> bool {
    let Some(end) = header_end(raw) else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    head.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .is_some_and(|len| raw.len() - end >= len)
}

/// An HTTP answer: status, body, and the DNS domain the router announced (if any).
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    status: u16,
    body: String,
    dns_domain: Option<String>,
}

fn parse_response(raw: &[u8]) -> Result<Answer> {
    let bad = |why: &str| Error::new(ErrorKind::Router, format!("malformed HTTP answer: {why}"));
    let end = header_end(raw).ok_or_else(|| bad("no header end (connection closed early)"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| bad("header is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status code"))?;
    let mut content_length = None;
    let mut chunked = false;
    let mut dns_domain = None;
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        if k == "content-length" {
            content_length = v.parse::<usize>().ok();
        } else if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
            chunked = true;
        } else if k == super::DNS_DOMAIN_HEADER {
            dns_domain = Some(v.to_string());
        }
    }
    let rest = &raw[end..];
    let body = if chunked {
        decode_chunked(rest).ok_or_else(|| bad("bad chunked body"))?
    } else if let Some(n) = content_length {
        rest.get(..n)
            .ok_or_else(|| bad("body shorter than Content-Length"))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Answer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
        dns_domain,
    })
}

fn decode_chunked(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_str = std::str::from_utf8(&rest[..line_end]).ok()?;
        let size = usize::from_str_radix(size_str.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use weave_testkit::canned_http::{answer, closed_port, serve};

    #[test]
    fn address_forms_follow_weave() {
        assert_eq!(Client::new("10.0.0.1").addr(), "10.0.0.1:6784");
        assert_eq!(Client::new(":7000").addr(), "127.0.0.1:7000");
        assert_eq!(
            Client::new("http://127.0.0.1:6784/").addr(),
            "127.0.0.1:6784"
        );
        assert_eq!(Client::new("localhost:1").addr(), "localhost:1");
    }

    #[test]
    fn segments_are_encoded_only_when_needed() {
        assert_eq!(encode_segment("weave:expose"), "weave:expose");
        assert_eq!(encode_segment("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn parses_content_length_and_chunked_answers() {
        let r =
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n10.32.0.1/12").unwrap();
        assert_eq!(
            (r.status, r.body.as_str(), r.dns_domain),
            (200, "10.32.0.1/12", None)
        );
        let r = parse_response(b"HTTP/1.1 400 Bad\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
            .unwrap();
        assert_eq!((r.status, r.body.as_str()), (400, "abcde"));
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nX-Weave-DNS-Domain: weave.local.\r\nContent-Length: 2\r\n\r\nok",
        )
        .unwrap();
        assert_eq!(r.dns_domain.as_deref(), Some("weave.local."));
        assert!(parse_response(b"HTTP/1.1 200").is_err());
    }

    #[test]
    fn refused_connection_is_try_again_later() {
        let port = closed_port();
        let c = Client::new(&format!("127.0.0.1:{port}"));
        let e = c.allocate("abc", None).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TryAgainLater);
        assert!(
            e.to_string()
                .starts_with(&format!("POST /ip/abc: connect 127.0.0.1:{port}: ")),
            "{e}"
        );
    }

    #[test]
    fn silent_server_times_out() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let c = Client::new(&addr.to_string())
            .with_timeouts(Duration::from_secs(1), Duration::from_millis(300));
        let started = Instant::now();
        let e = c.lookup("abc", None).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TryAgainLater);
        assert!(e.to_string().contains("no answer from router"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(3));
        drop(l);
    }

    /// A router stand-in answering, one connection each: an address, 400 for an unknown
    /// container, 503 while not ready.
    fn serve_allocated_unknown_busy() -> (u16, std::thread::JoinHandle<Vec<String>>) {
        serve(vec![
            answer("200 OK", &[], b"10.32.0.5/12"),
            answer("400 Bad Request", &[], b"Delete: no addresses for abc"),
            answer("503 Service Unavailable", &[], b"not ready"),
        ])
    }

    #[test]
    fn answers_map_to_kinds() {
        let (port, server) = serve_allocated_unknown_busy();
        let addr = format!("127.0.0.1:{port}");
        let c = Client::new(&addr);
        assert_eq!(
            c.allocate("abc", None).unwrap(),
            "10.32.0.5/12".parse::<Ipv4Net>().unwrap()
        );
        assert!(!c.release("abc").unwrap());
        let e = c.allocate("abc", None).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TryAgainLater);
        assert_eq!(
            e.to_string(),
            "POST /ip/abc: router answered 503: not ready"
        );
        server.join().unwrap();
    }

    #[test]
    fn over_the_shared_client_errors_keep_their_kinds_and_details() {
        let port = closed_port();
        let c = Client::new(&format!("127.0.0.1:{port}"))
            .over_shared_http()
            .unwrap();
        let e = c.allocate("abc", None).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TryAgainLater);
        assert_eq!(e.detail(), Some(Detail::Unreachable));
        assert_eq!(e.errno(), Some(libc::ECONNREFUSED), "{e}");

        let (port, server) = serve_allocated_unknown_busy();
        let addr = format!("127.0.0.1:{port}");
        let c = Client::new(&addr).over_shared_http().unwrap();
        assert_eq!(
            c.allocate("abc", None).unwrap(),
            "10.32.0.5/12".parse::<Ipv4Net>().unwrap()
        );
        assert!(!c.release("abc").unwrap());
        let e = c.allocate("abc", None).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TryAgainLater);
        assert_eq!(e.detail(), Some(Detail::HttpStatus(503)));
        assert_eq!(
            e.to_string(),
            "POST /ip/abc: router answered 503: not ready"
        );
        server.join().unwrap();
    }
}
