//! A small blocking HTTP/1.1 client for the Mesos APIs: one connection per request
//! (`Connection: close`), a deadline on every read and write, `Content-Length`, chunked and
//! until-EOF bodies, and sockets that can be opened inside another network namespace
//! (a socket stays in the namespace it was created in, so only `connect` needs a `setns`).

use crate::{Context, Error, ErrorKind, Result};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Largest response head we accept.
const MAX_HEAD: usize = 64 << 10;

/// An `http://host:port/path` URL (no TLS: the fixture and the harness speak plain HTTP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub host: String,
    pub port: u16,
    /// Path plus query, always starting with `/`.
    pub path: String,
}

impl Url {
    /// Accepts `http://host:port[/path]`, `host:port[/path]` and `host` (port 5050, the
    /// master's default).
    pub fn parse(s: &str) -> Result<Url> {
        let rest = if let Some(r) = s.strip_prefix("http://") {
            r
        } else if s.starts_with("https://") {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                format!("parse URL {s:?}: https is not supported"),
            ));
        } else {
            s.strip_prefix("//").unwrap_or(s)
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
                let port = p.parse().map_err(|_| {
                    Error::new(
                        ErrorKind::InvalidConfig,
                        format!("parse URL {s:?}: bad port {p:?}"),
                    )
                })?;
                (h, port)
            }
            _ => (authority, 5050),
        };
        if host.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                format!("parse URL {s:?}: no host"),
            ));
        }
        Ok(Url {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
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

    /// Where a redirect's `Location` points: Mesos sends a protocol-relative
    /// `//host:port/path`; absolute URLs and bare paths are accepted too.
    pub fn join_location(&self, location: &str) -> Result<Url> {
        if location.starts_with('/') && !location.starts_with("//") {
            return Ok(self.with_path(location));
        }
        Url::parse(location).context("follow redirect")
    }

    /// `host:port` as sent in the `Host` header.
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
        write!(f, "http://{}{}", self.authority(), self.path)
    }
}

/// How TCP connections are opened: from this process' namespace or from another one.
#[derive(Debug, Clone, Default)]
pub struct Connector {
    netns: Option<PathBuf>,
}

impl Connector {
    /// Connections from the caller's network namespace.
    pub fn direct() -> Connector {
        Connector { netns: None }
    }

    /// Connections from the network namespace at `path` (e.g. `/run/netns/NAME`).
    pub fn in_netns(path: impl Into<PathBuf>) -> Connector {
        Connector {
            netns: Some(path.into()),
        }
    }

    /// `ip netns` name or path: a bare name means `/run/netns/<name>`.
    pub fn for_netns_name(name: &str) -> Connector {
        if name.contains('/') {
            Connector::in_netns(name)
        } else {
            Connector::in_netns(Path::new("/run/netns").join(name))
        }
    }

    /// Opens a connection to `host:port`, giving up at `deadline`.
    pub fn connect(&self, host: &str, port: u16, deadline: Instant) -> Result<TcpStream> {
        let what = || format!("connect to {host}:{port}");
        let timeout = remaining(deadline).with_context(what)?;
        let stream = match &self.netns {
            None => connect_any(host, port, timeout),
            Some(ns) => {
                let (ns, host) = (ns.clone(), host.to_string());
                // A fresh thread, so the caller's thread never changes namespace.
                std::thread::spawn(move || -> Result<TcpStream> {
                    let file = std::fs::File::open(&ns)
                        .with_context(|| format!("open netns {}", ns.display()))?;
                    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                        .map_err(|e| Error::kernel(e as i32, e.desc()))
                        .with_context(|| format!("enter netns {}", ns.display()))?;
                    connect_any(&host, port, timeout)
                })
                .join()
                .map_err(|_| Error::new(ErrorKind::Internal, "connect thread panicked"))?
            }
        };
        stream.with_context(what)
    }
}

fn connect_any(host: &str, port: u16, timeout: Duration) -> Result<TcpStream> {
    let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs().context("resolve")?.collect();
    let mut last = Error::new(ErrorKind::NotFound, "no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = e.into(),
        }
    }
    Err(last.with_kind(ErrorKind::TryAgainLater))
}

/// Time left until `deadline`, or a timeout error.
pub fn remaining(deadline: Instant) -> Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(Error::new(ErrorKind::TryAgainLater, "timed out"))
    } else {
        Ok(left)
    }
}

/// One request. `Host`, `Content-Length` and `Connection: close` are added when sent.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: &'static str,
    pub url: Url,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Status line and headers of an answer.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
}

impl ResponseHead {
    /// First header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A complete answer.
#[derive(Debug, Clone)]
pub struct Response {
    pub head: ResponseHead,
    pub body: Vec<u8>,
}

#[derive(Debug)]
enum Framing {
    Length(u64),
    /// Bytes left in the current chunk; `None` before a chunk-size line.
    Chunked(Option<u64>),
    UntilEof,
}

/// The body of an answer, read piece by piece with a deadline per read (streams).
#[derive(Debug)]
pub struct BodyReader {
    conn: BufReader<TcpStream>,
    framing: Framing,
    done: bool,
}

impl BodyReader {
    /// Next piece of the body, `None` at its end. Waits at most until `deadline`.
    pub fn read_some(&mut self, deadline: Instant) -> Result<Option<Vec<u8>>> {
        while !self.done {
            set_deadline(&self.conn, deadline)?;
            let want = match &mut self.framing {
                Framing::Length(0) => {
                    self.done = true;
                    break;
                }
                Framing::Length(n) => *n,
                Framing::Chunked(None) => {
                    let line = read_line(&mut self.conn).context("read chunk size")?;
                    let size = line.split(';').next().unwrap_or("").trim();
                    let size = u64::from_str_radix(size, 16).map_err(|_| {
                        Error::new(ErrorKind::Decode, format!("bad chunk size {line:?}"))
                    })?;
                    if size == 0 {
                        // Trailers end with an empty line.
                        while !read_line(&mut self.conn)
                            .context("read trailer")?
                            .is_empty()
                        {}
                        self.done = true;
                        break;
                    }
                    self.framing = Framing::Chunked(Some(size));
                    continue;
                }
                Framing::Chunked(Some(n)) => *n,
                Framing::UntilEof => 16 << 10,
            };
            let mut buf = vec![0u8; want.min(16 << 10) as usize];
            let n = self
                .conn
                .read(&mut buf)
                .map_err(io_error)
                .context("read body")?;
            if n == 0 {
                if matches!(self.framing, Framing::UntilEof) {
                    self.done = true;
                    break;
                }
                return Err(Error::new(
                    ErrorKind::Io,
                    "read body: connection closed early",
                ));
            }
            buf.truncate(n);
            match &mut self.framing {
                Framing::Length(left) => *left -= n as u64,
                Framing::Chunked(Some(left)) => {
                    *left -= n as u64;
                    if *left == 0 {
                        let end = read_line(&mut self.conn).context("read chunk end")?;
                        if !end.is_empty() {
                            return Err(Error::new(
                                ErrorKind::Decode,
                                "chunk not followed by CRLF",
                            ));
                        }
                        self.framing = Framing::Chunked(None);
                    }
                }
                _ => {}
            }
            return Ok(Some(buf));
        }
        Ok(None)
    }

    /// The rest of the body, refusing more than `max` bytes.
    pub fn read_all(&mut self, deadline: Instant, max: usize) -> Result<Vec<u8>> {
        let mut body = Vec::new();
        while let Some(piece) = self.read_some(deadline)? {
            body.extend_from_slice(&piece);
            if body.len() > max {
                return Err(Error::new(
                    ErrorKind::Decode,
                    format!("body larger than {max} bytes"),
                ));
            }
        }
        Ok(body)
    }
}

fn io_error(e: std::io::Error) -> Error {
    if matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    ) {
        Error::new(ErrorKind::TryAgainLater, "timed out")
    } else {
        e.into()
    }
}

fn set_deadline(conn: &BufReader<TcpStream>, deadline: Instant) -> Result<()> {
    // Bytes already buffered need no wait; a zero timeout would be rejected anyway.
    let left = remaining(deadline)?;
    conn.get_ref().set_read_timeout(Some(left))?;
    Ok(())
}

/// One CRLF- (or LF-) terminated line without its terminator.
fn read_line(conn: &mut BufReader<TcpStream>) -> Result<String> {
    let mut line = Vec::new();
    let n = conn
        .by_ref()
        .take(MAX_HEAD as u64)
        .read_until(b'\n', &mut line)
        .map_err(io_error)?;
    if n == 0 || line.last() != Some(&b'\n') {
        return Err(Error::new(ErrorKind::Io, "connection closed mid-line"));
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| Error::new(ErrorKind::Decode, "line is not UTF-8"))
}

/// Sends `req` and reads the answer's head; the body is left to the caller (streams).
pub fn send(
    connector: &Connector,
    req: &Request,
    deadline: Instant,
) -> Result<(ResponseHead, BodyReader)> {
    let conn = connector.connect(&req.url.host, req.url.port, deadline)?;
    conn.set_nodelay(true).ok();
    conn.set_write_timeout(Some(remaining(deadline)?))?;
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
        req.method,
        req.url.path,
        req.url.authority(),
        req.body.len()
    );
    for (k, v) in &req.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(&req.body);
    (&conn)
        .write_all(&out)
        .map_err(io_error)
        .context("send request")?;

    let mut conn = BufReader::new(conn);
    set_deadline(&conn, deadline)?;
    let status_line = read_line(&mut conn).context("read status line")?;
    let mut parts = status_line.splitn(3, ' ');
    let (version, code) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let status = match code.parse::<u16>() {
        Ok(c) if version.starts_with("HTTP/1.") => c,
        _ => {
            return Err(Error::new(
                ErrorKind::Decode,
                format!("bad status line {status_line:?}"),
            ))
        }
    };
    let reason = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    let mut size = status_line.len();
    loop {
        let line = read_line(&mut conn).context("read headers")?;
        if line.is_empty() {
            break;
        }
        size += line.len();
        if size > MAX_HEAD {
            return Err(Error::new(ErrorKind::Decode, "response head too large"));
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let head = ResponseHead {
        status,
        reason,
        headers,
    };
    let chunked = head
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let framing =
        if chunked {
            Framing::Chunked(None)
        } else if let Some(len) = head.header("content-length") {
            Framing::Length(len.parse().map_err(|_| {
                Error::new(ErrorKind::Decode, format!("bad Content-Length {len:?}"))
            })?)
        } else if req.method == "HEAD" || status == 204 || status == 304 {
            Framing::Length(0)
        } else {
            Framing::UntilEof
        };
    Ok((
        head,
        BodyReader {
            conn,
            framing,
            done: false,
        },
    ))
}

/// Sends `req` and reads the whole answer (at most `max_body` bytes) before `deadline`.
pub fn fetch(
    connector: &Connector,
    req: &Request,
    deadline: Instant,
    max_body: usize,
) -> Result<Response> {
    let (head, mut body) = send(connector, req, deadline)?;
    let body = body.read_all(deadline, max_body)?;
    Ok(Response { head, body })
}

/// Standard base64 (for `Authorization: Basic`).
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
