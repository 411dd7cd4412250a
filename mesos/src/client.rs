//! What the operator and the scheduler clients share: where the master is, how to encode,
//! credentials, the per-call deadline and where connections are opened from. The endpoint
//! kind (`Operator` or `Scheduler`) only selects the calls each client offers.

use crate::http::{self, Connector, Url};
use crate::proto::Encoding;
use crate::{Context, Result};
use std::marker::PhantomData;
use std::time::Duration;

/// Default deadline of one call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A client of one master endpoint; `K` is the endpoint kind.
#[derive(Debug)]
pub struct MasterClient<K> {
    pub(crate) url: Url,
    pub(crate) encoding: Encoding,
    pub(crate) authorization: Option<String>,
    pub(crate) timeout: Duration,
    pub(crate) connector: Connector,
    kind: PhantomData<K>,
}

impl<K> Clone for MasterClient<K> {
    fn clone(&self) -> Self {
        MasterClient {
            url: self.url.clone(),
            encoding: self.encoding,
            authorization: self.authorization.clone(),
            timeout: self.timeout,
            connector: self.connector.clone(),
            kind: PhantomData,
        }
    }
}

impl<K> MasterClient<K> {
    /// `master` as `http://host:port`, `host:port` or `host` (port 5050); `path` is the
    /// endpoint's.
    pub(crate) fn at(master: &str, path: &str) -> Result<Self> {
        let url = Url::parse(master).context("use master address")?;
        Ok(MasterClient {
            url: url.with_path(path),
            encoding: Encoding::Protobuf,
            authorization: None,
            timeout: DEFAULT_TIMEOUT,
            connector: Connector::direct(),
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
        let token = http::base64(format!("{principal}:{secret}").as_bytes());
        self.authorization = Some(format!("Basic {token}"));
        self
    }

    /// Deadline of each unary call, and of connecting a stream.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Where connections are opened from (e.g. a simulated host's network namespace).
    pub fn with_connector(mut self, connector: Connector) -> Self {
        self.connector = connector;
        self
    }

    pub fn encoding(&self) -> Encoding {
        self.encoding
    }
}
