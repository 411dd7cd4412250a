//! What the operator and the scheduler clients share: where the master is, how to encode,
//! the per-call deadline, and the HTTP client (weave's one client: credentials, TLS, leader
//! redirects, where connections are opened from). The endpoint kind (`Operator` or
//! `Scheduler`) only selects the calls each client offers.

use crate::http::{self, blocking, Connector, Url};
use crate::proto::Encoding;
use crate::{Context, Result};
use std::marker::PhantomData;
use std::time::Duration;

/// Default deadline of one call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The master's port when the address names none.
pub const DEFAULT_MASTER_PORT: u16 = 5050;
/// Leader redirects followed before giving up (a loop means a confused cluster).
pub(crate) const MAX_REDIRECTS: usize = 3;

/// A client of one master endpoint; `K` is the endpoint kind.
#[derive(Debug)]
pub struct MasterClient<K> {
    pub(crate) url: Url,
    pub(crate) encoding: Encoding,
    pub(crate) timeout: Duration,
    pub(crate) http: blocking::Client,
    kind: PhantomData<K>,
}

impl<K> Clone for MasterClient<K> {
    fn clone(&self) -> Self {
        MasterClient {
            url: self.url.clone(),
            encoding: self.encoding,
            timeout: self.timeout,
            http: self.http.clone(),
            kind: PhantomData,
        }
    }
}

impl<K> MasterClient<K> {
    /// `master` as `http://host:port`, `https://host:port`, `host:port` or `host` (port
    /// 5050); `path` is the endpoint's.
    pub(crate) fn at(master: &str, path: &str) -> Result<Self> {
        let url = Url::parse(master, DEFAULT_MASTER_PORT).context("use master address")?;
        let http = blocking::Client::new(
            http::Client::new()
                .with_redirects(MAX_REDIRECTS)
                .with_timeouts(DEFAULT_TIMEOUT, DEFAULT_TIMEOUT),
        )?;
        Ok(MasterClient {
            url: url.with_path(path),
            encoding: Encoding::Protobuf,
            timeout: DEFAULT_TIMEOUT,
            http,
            kind: PhantomData,
        })
    }

    pub fn with_encoding(mut self, encoding: Encoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// HTTP basic auth, for masters run with `--authenticate_http_readwrite` (operator) or
    /// `--authenticate_http_frameworks` (scheduler).
    pub fn with_basic_auth(mut self, principal: &str, secret: &str) -> Self {
        self.http = self.http.map(|c| c.with_basic_auth(principal, secret));
        self
    }

    /// Deadline of each unary call, and of connecting a stream.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self.http = self.http.map(|c| c.with_timeouts(timeout, timeout));
        self
    }

    /// Where connections are opened from (e.g. a simulated host's network namespace).
    pub fn with_connector(mut self, connector: Connector) -> Self {
        self.http = self.http.map(|c| c.with_connector(connector));
        self
    }

    /// Also trusts the CA certificates in `pem` for an `https` master (the system's roots
    /// are trusted already).
    pub fn with_ca_pem(mut self, pem: &[u8]) -> Result<Self> {
        let tls = http::Tls::default()
            .with_root_pem(pem)
            .context("use master CA")?;
        self.http = self.http.map(|c| c.with_tls(tls));
        Ok(self)
    }

    pub fn encoding(&self) -> Encoding {
        self.encoding
    }
}
