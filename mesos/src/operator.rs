//! Client for the Mesos master operator API v1 (`POST /api/v1`), in protobuf (default) or
//! JSON, with the leader redirect, HTTP basic auth, an error message per status code that
//! says what to do, a deadline on every call, and the SUBSCRIBE event stream.

use crate::client::MasterClient;
use crate::client::MAX_REDIRECTS;
use crate::http::blocking::BodyReader;
use crate::http::{Head, Request, Url};
use crate::proto::v1::master::{call, event, response, Call, Event, Response};
use crate::proto::v1::{Flag, VersionInfo};
use crate::proto::{self, Encoding};
use crate::recordio;
use crate::{Context, Error, ErrorKind, Result};
use std::collections::VecDeque;
use std::time::Instant;

/// Path of the operator API on the master.
pub const API_PATH: &str = "/api/v1";
pub use crate::client::DEFAULT_TIMEOUT;
/// Largest unary answer we accept (GET_STATE of a big cluster is large).
const MAX_ANSWER: usize = 64 << 20;

/// Marks a [`MasterClient`] of the operator endpoint.
#[derive(Debug, Clone, Copy)]
pub struct Operator;

/// One master (or whichever master leads, after redirects).
pub type OperatorClient = MasterClient<Operator>;

impl OperatorClient {
    /// `master` as `http://host:port`, `host:port` or `host` (port 5050).
    pub fn new(master: &str) -> Result<OperatorClient> {
        Self::at(master, API_PATH)
    }

    /// Sends `call` and returns the decoded answer.
    pub fn call(&self, call: &Call) -> Result<Response> {
        let name = call_name(call);
        let deadline = Instant::now() + self.timeout;
        let (head, mut body) = self.post(call, deadline).context(&name)?;
        let data = body
            .read_all(deadline, MAX_ANSWER)
            .with_context(|| format!("{name}: read answer"))?;
        let enc = answer_encoding(&head, self.encoding);
        proto::decode::<Response>(&data, enc).context(&name)
    }

    pub fn get_health(&self) -> Result<bool> {
        let r = self.call(&simple(call::Type::GetHealth))?;
        Ok(need(r.get_health, "GET_HEALTH", "get_health")?.healthy)
    }

    pub fn get_version(&self) -> Result<VersionInfo> {
        let r = self.call(&simple(call::Type::GetVersion))?;
        Ok(need(r.get_version, "GET_VERSION", "get_version")?.version_info)
    }

    pub fn get_flags(&self) -> Result<Vec<Flag>> {
        let r = self.call(&simple(call::Type::GetFlags))?;
        Ok(need(r.get_flags, "GET_FLAGS", "get_flags")?.flags)
    }

    pub fn get_agents(&self) -> Result<response::GetAgents> {
        let r = self.call(&simple(call::Type::GetAgents))?;
        need(r.get_agents, "GET_AGENTS", "get_agents")
    }

    /// Seen on the Mesos 1.11.0 fixture: in protobuf the master leaves completed tasks out
    /// of GET_TASKS and GET_STATE (running tasks are there); JSON answers include them.
    pub fn get_tasks(&self) -> Result<response::GetTasks> {
        let r = self.call(&simple(call::Type::GetTasks))?;
        need(r.get_tasks, "GET_TASKS", "get_tasks")
    }

    pub fn get_frameworks(&self) -> Result<response::GetFrameworks> {
        let r = self.call(&simple(call::Type::GetFrameworks))?;
        need(r.get_frameworks, "GET_FRAMEWORKS", "get_frameworks")
    }

    pub fn get_state(&self) -> Result<response::GetState> {
        let r = self.call(&simple(call::Type::GetState))?;
        need(r.get_state, "GET_STATE", "get_state")
    }

    /// Opens the SUBSCRIBE stream. Its events are read until `stream_deadline`.
    pub fn subscribe(&self, stream_deadline: Instant) -> Result<EventStream> {
        let call = simple(call::Type::Subscribe);
        let (head, body) = self
            .post(&call, Instant::now() + self.timeout)
            .context("SUBSCRIBE")?;
        Ok(EventStream {
            body,
            decoder: recordio::Decoder::default(),
            queue: VecDeque::new(),
            encoding: answer_encoding(&head, self.encoding),
            deadline: stream_deadline,
            finished: false,
        })
    }

    /// POSTs `call`, following leader redirects; only a 200 or 202 head is returned.
    fn post(&self, call: &Call, deadline: Instant) -> Result<(Head, BodyReader)> {
        let body = proto::encode(call, self.encoding)?;
        let (head, reader, _) = post_following_leader(self, &[], body, deadline)?;
        Ok((head, reader))
    }
}

/// POSTs `body` to the client's endpoint; the HTTP client follows the master's 307 leader
/// redirects. Returns the 200/202 head, its body and the URL that answered (later calls of
/// a session go there too); any other status is an error that says what to do.
pub(crate) fn post_following_leader<K>(
    client: &MasterClient<K>,
    extra_headers: &[(String, String)],
    body: Vec<u8>,
    deadline: Instant,
) -> Result<(Head, BodyReader, Url)> {
    let media = client.encoding.media_type();
    let mut req = Request::post(client.url.clone(), body)
        .header("Content-Type", media)
        .header("Accept", media);
    for (k, v) in extra_headers {
        req = req.header(k, v);
    }
    let (head, mut reader) = client.http.send_until(&req, deadline)?;
    match head.status {
        200 | 202 => {
            let url = head.url.clone();
            Ok((head, reader, url))
        }
        307 if head.header("location").is_none() => Err(Error::new(
            ErrorKind::Decode,
            format!("master {} answered 307 without Location", head.url),
        )),
        307 => Err(Error::new(
            ErrorKind::TryAgainLater,
            format!(
                "more than {MAX_REDIRECTS} leader redirects, last to {}",
                head.url
            ),
        )),
        status => {
            let text = reader.read_all(deadline, 64 << 10).unwrap_or_default();
            Err(status_error(&head, status, &String::from_utf8_lossy(&text)))
        }
    }
}

/// A Call with only its type set (all GET_* calls and SUBSCRIBE).
pub fn simple(t: call::Type) -> Call {
    Call {
        r#type: Some(t as i32),
        ..Default::default()
    }
}

fn call_name(call: &Call) -> String {
    match call.r#type.and_then(|t| call::Type::try_from(t).ok()) {
        Some(t) => t.as_str_name().to_string(),
        None => "operator call".to_string(),
    }
}

fn need<T>(field: Option<T>, call: &str, name: &str) -> Result<T> {
    field.ok_or_else(|| Error::new(ErrorKind::Decode, format!("{call}: answer has no {name}")))
}

pub(crate) fn answer_encoding(head: &Head, asked: Encoding) -> Encoding {
    head.header("content-type")
        .and_then(Encoding::from_content_type)
        .unwrap_or(asked)
}

/// `master answered 503: No leader elected`, with a hint where one helps.
fn status_error(head: &Head, status: u16, body: &str) -> Error {
    let body = body.trim();
    let text = if body.is_empty() {
        head.reason.as_str()
    } else {
        body
    };
    let (kind, hint) = match status {
        401 => {
            let realm = head.header("www-authenticate").unwrap_or("");
            (
                ErrorKind::Router,
                format!(" (needs credentials: {realm}; pass --principal and --secret)"),
            )
        }
        403 => (
            ErrorKind::Router,
            " (the principal is not authorized for this call)".to_string(),
        ),
        415 => (
            ErrorKind::Internal,
            " (Content-Type must be exactly application/x-protobuf or application/json)"
                .to_string(),
        ),
        503 => (ErrorKind::TryAgainLater, String::new()),
        _ => (ErrorKind::Router, String::new()),
    };
    Error::new(kind, format!("master answered {status}: {text}{hint}"))
}

/// Events of a SUBSCRIBE stream: SUBSCRIBED (with the full state), then HEARTBEATs and
/// changes. As an iterator it ends at its deadline with a timeout error, and after the
/// first error or the end of the stream.
#[derive(Debug)]
pub struct EventStream {
    body: BodyReader,
    decoder: recordio::Decoder,
    queue: VecDeque<Vec<u8>>,
    encoding: Encoding,
    deadline: Instant,
    finished: bool,
}

impl EventStream {
    /// Moves the deadline the iterator waits until.
    pub fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = deadline;
    }

    /// The next event, or `None` when the master closed the stream cleanly.
    pub fn next_event(&mut self, deadline: Instant) -> Result<Option<Event>> {
        loop {
            if let Some(record) = self.queue.pop_front() {
                return proto::decode::<Event>(&record, self.encoding)
                    .context("decode SUBSCRIBE event")
                    .map(Some);
            }
            match self
                .body
                .read_some(deadline)
                .context("read SUBSCRIBE stream")?
            {
                Some(piece) => self.queue.extend(self.decoder.feed(&piece)?),
                None if self.decoder.is_idle() => return Ok(None),
                None => {
                    return Err(Error::new(
                        ErrorKind::Decode,
                        "SUBSCRIBE stream ended inside a record",
                    ))
                }
            }
        }
    }
}

impl Iterator for EventStream {
    type Item = Result<Event>;

    fn next(&mut self) -> Option<Result<Event>> {
        if self.finished {
            return None;
        }
        let got = self.next_event(self.deadline).transpose();
        if !matches!(got, Some(Ok(_))) {
            self.finished = true;
        }
        got
    }
}

/// Name of an event's type, e.g. `HEARTBEAT`.
pub fn event_type_name(e: &Event) -> &'static str {
    e.r#type
        .and_then(|t| event::Type::try_from(t).ok())
        .map(|t| t.as_str_name())
        .unwrap_or("UNKNOWN")
}

/// The container IPs of `task` as `(network name, ip)`, from the newest status whose
/// `container_status.network_infos` carry addresses (Mesos reports CNI IPs there).
pub fn task_ips(task: &crate::proto::v1::Task) -> Vec<(String, String)> {
    for status in task.statuses.iter().rev() {
        let Some(cs) = &status.container_status else {
            continue;
        };
        let ips: Vec<(String, String)> = cs
            .network_infos
            .iter()
            .flat_map(|n| {
                let name = n.name.clone().unwrap_or_default();
                n.ip_addresses
                    .iter()
                    .filter_map(move |a| a.ip_address.clone().map(|ip| (name.clone(), ip)))
            })
            .collect();
        if !ips.is_empty() {
            return ips;
        }
    }
    Vec::new()
}

/// Name of a task state, e.g. `TASK_RUNNING`.
pub fn task_state_name(state: i32) -> String {
    crate::proto::v1::TaskState::try_from(state)
        .map(|s| s.as_str_name().to_string())
        .unwrap_or_else(|_| format!("TASK_STATE_{state}"))
}

#[cfg(test)]
#[path = "operator_tests.rs"]
mod tests;
