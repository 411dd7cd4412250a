//! The synchronous face of [`super::Client`], for callers without an async runtime (the
//! harness, the CLI, the CNI plugins): each client owns a current-thread tokio runtime that
//! runs only while one of its calls waits, so nothing runs in the background between calls.
//! Deadlines are `std::time::Instant`s, as synchronous code keeps them.

use super::{Head, Request, Response};
use crate::{Error, ErrorKind, Result};
use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A blocking HTTP client; clones share one runtime.
#[derive(Debug, Clone)]
pub struct Client {
    inner: super::Client,
    runtime: Arc<tokio::runtime::Runtime>,
}

impl Client {
    /// Wraps `inner` with a new current-thread runtime.
    pub fn new(inner: super::Client) -> Result<Client> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| Error::from(e).context("start HTTP client runtime"))?;
        Ok(Client {
            inner,
            runtime: Arc::new(runtime),
        })
    }

    /// The async client underneath (its settings).
    pub fn settings(&self) -> &super::Client {
        &self.inner
    }

    /// Changes the settings, keeping the runtime.
    pub fn map(mut self, f: impl FnOnce(super::Client) -> super::Client) -> Client {
        self.inner = f(self.inner);
        self
    }

    /// Sends `req` (following redirects) and returns the head before `deadline`; the body
    /// is read from the returned [`BodyReader`].
    pub fn send_until(&self, req: &Request, deadline: Instant) -> Result<(Head, BodyReader)> {
        let (head, body) = self
            .runtime
            .block_on(self.inner.send_until(req, deadline.into()))?;
        Ok((
            head,
            BodyReader {
                body,
                runtime: self.runtime.clone(),
            },
        ))
    }

    /// Sends `req` and reads the whole answer (at most `max_body` bytes) within the
    /// client's total timeout.
    pub fn fetch(&self, req: &Request, max_body: usize) -> Result<Response> {
        self.runtime.block_on(self.inner.fetch(req, max_body))
    }

    /// Like [`Client::fetch`], until `deadline` instead of the client's timeout.
    pub fn fetch_until(
        &self,
        req: &Request,
        deadline: Instant,
        max_body: usize,
    ) -> Result<Response> {
        let (head, mut body) = self.send_until(req, deadline)?;
        let body = body.read_all(deadline, max_body)?;
        Ok(Response { head, body })
    }
}

/// The body of an answer, read with a deadline per read (streams).
#[derive(Debug)]
pub struct BodyReader {
    body: super::Body,
    runtime: Arc<tokio::runtime::Runtime>,
}

impl BodyReader {
    /// The next piece of the body, `None` at its end; waits at most until `deadline` (a
    /// timeout is `TryAgainLater`).
    pub fn read_some(&mut self, deadline: Instant) -> Result<Option<Bytes>> {
        let left = deadline.saturating_duration_since(Instant::now());
        let got = self
            .runtime
            .block_on(async { tokio::time::timeout(left, self.body.chunk()).await });
        got.unwrap_or_else(|_| Err(timed_out(left)))
    }

    /// The rest of the body, refusing more than `max` bytes; waits at most until `deadline`.
    pub fn read_all(&mut self, deadline: Instant, max: usize) -> Result<Vec<u8>> {
        let left = deadline.saturating_duration_since(Instant::now());
        let got = self
            .runtime
            .block_on(async { tokio::time::timeout(left, self.body.read_all(max)).await });
        got.unwrap_or_else(|_| Err(timed_out(left)))
    }
}

fn timed_out(waited: Duration) -> Error {
    Error::new(
        ErrorKind::TryAgainLater,
        format!("read body: timed out after {waited:?}"),
    )
}
