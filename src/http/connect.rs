//! Opening connections: TCP from this process' network namespace or from another one (a
//! socket stays in the namespace it was created in, so only `connect` runs on a thread that
//! entered it, through [`crate::netns`]), with a connect timeout, then TLS when the URL is
//! `https` (feature `tls`: rustls with the ring provider).

use super::url::{Scheme, Url};
use crate::netns::NetNs;
use crate::{Context, Error, ErrorKind, Result};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A byte stream hyper can speak HTTP/1.1 over: plain TCP or TLS.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// Where TCP connections are opened from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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

    /// A TCP connection to `host:port` within `timeout`. Refusals and timeouts are
    /// `TryAgainLater` (the server may come); the message names the address.
    pub(crate) async fn tcp(&self, host: &str, port: u16, timeout: Duration) -> Result<TcpStream> {
        let what = || format!("connect to {}", authority(host, port));
        let stream = match &self.netns {
            None => connect_here(host, port, timeout).await,
            Some(ns) => {
                let (ns, host) = (ns.clone(), host.to_string());
                let (tx, rx) = tokio::sync::oneshot::channel();
                // A fresh thread enters the namespace, so no runtime thread ever changes it.
                std::thread::spawn(move || {
                    let got = NetNs::open(&ns)
                        .and_then(|n| n.run(|| connect_blocking(&host, port, timeout)))
                        .and_then(|r| r);
                    let _ = tx.send(got);
                });
                let std_stream = rx
                    .await
                    .map_err(|_| Error::new(ErrorKind::Internal, "connect thread panicked"))?;
                std_stream.and_then(|s| {
                    s.set_nonblocking(true)?;
                    Ok(TcpStream::from_std(s)?)
                })
            }
        };
        let stream = stream.with_context(what)?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// TCP, then TLS for `https` URLs.
    pub(crate) async fn open(
        &self,
        url: &Url,
        timeout: Duration,
        tls: &super::Tls,
    ) -> Result<Box<dyn Io>> {
        let tcp = self.tcp(&url.host, url.port, timeout).await?;
        match url.scheme {
            Scheme::Http => Ok(Box::new(tcp)),
            Scheme::Https => tls.wrap(tcp, &url.host).await,
        }
    }
}

fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

async fn connect_here(host: &str, port: u16, timeout: Duration) -> Result<TcpStream> {
    let attempt = async {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| Error::from(e).with_kind(ErrorKind::TryAgainLater))
            .context("resolve")?
            .collect();
        let mut last = Error::new(ErrorKind::TryAgainLater, "no address");
        for a in addrs {
            match TcpStream::connect(a).await {
                Ok(s) => return Ok(s),
                Err(e) => last = Error::from(e).with_kind(ErrorKind::TryAgainLater),
            }
        }
        Err(last)
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(Error::new(
            ErrorKind::TryAgainLater,
            format!("timed out after {timeout:?}"),
        )),
    }
}

fn connect_blocking(host: &str, port: u16, timeout: Duration) -> Result<std::net::TcpStream> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| Error::from(e).with_kind(ErrorKind::TryAgainLater))
        .context("resolve")?
        .collect();
    let mut last = Error::new(ErrorKind::TryAgainLater, "no address");
    for a in addrs {
        match std::net::TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = Error::from(e).with_kind(ErrorKind::TryAgainLater),
        }
    }
    Err(last)
}
