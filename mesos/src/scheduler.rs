//! Client for the Mesos v1 scheduler API (`POST /api/v1/scheduler`), protobuf by default:
//! SUBSCRIBE keeps one connection open for the RecordIO event stream and names the session
//! in `Mesos-Stream-Id`; every other call (ACCEPT, DECLINE, ACKNOWLEDGE, KILL, TEARDOWN) goes
//! on its own connection with that header and is answered 202. Every wait has a deadline.
//!
//! [`Session`] is the raw protocol; [`crate::driver::Driver`] runs tasks on top of it.

use crate::client::MasterClient;
use crate::http::blocking::BodyReader;
use crate::operator::{answer_encoding, post_following_leader};
use crate::proto::v1::scheduler::{call, event, Call, Event};
use crate::proto::v1::{
    offer, AgentId, FrameworkId, FrameworkInfo, OfferId, TaskId, TaskInfo, TaskStatus,
};
use crate::proto::{self, Encoding};
use crate::recordio;
use crate::{Context, Error, ErrorKind, Result};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Path of the scheduler API on the master.
pub const SCHEDULER_PATH: &str = "/api/v1/scheduler";
pub use crate::client::DEFAULT_TIMEOUT;
/// How long a session waits between SUBSCRIBE attempts while the master is not ready
/// (mesos-execute retries every second too).
const SUBSCRIBE_RETRY: Duration = Duration::from_secs(1);

/// Marks a [`MasterClient`] of the scheduler endpoint.
#[derive(Debug, Clone, Copy)]
pub struct Scheduler;

/// Where and how to reach the master's scheduler endpoint.
pub type SchedulerClient = MasterClient<Scheduler>;

impl SchedulerClient {
    /// `master` as `http://host:port`, `host:port` or `host` (port 5050).
    pub fn new(master: &str) -> Result<SchedulerClient> {
        Self::at(master, SCHEDULER_PATH)
    }

    /// Subscribes `framework`, retrying while the master is unreachable or not ready
    /// (503) until `deadline`, and waits for SUBSCRIBED.
    pub fn subscribe(&self, framework: FrameworkInfo, deadline: Instant) -> Result<Session> {
        let call = Call {
            r#type: Some(call::Type::Subscribe as i32),
            subscribe: Some(call::Subscribe {
                framework_info: framework,
                suppressed_roles: Vec::new(),
            }),
            ..Default::default()
        };
        let body = proto::encode(&call, self.encoding)?;
        let (head, reader, leader) = loop {
            let attempt_deadline = deadline.min(Instant::now() + self.timeout);
            match post_following_leader(self, &[], body.clone(), attempt_deadline) {
                Ok(ok) => break ok,
                Err(e)
                    if e.kind() == ErrorKind::TryAgainLater
                        && Instant::now() + SUBSCRIBE_RETRY < deadline =>
                {
                    std::thread::sleep(SUBSCRIBE_RETRY);
                }
                Err(e) => return Err(e.context("SUBSCRIBE")),
            }
        };
        let stream_id = head
            .header("mesos-stream-id")
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Decode,
                    "SUBSCRIBE: answer has no Mesos-Stream-Id header",
                )
            })?
            .to_string();
        let mut session = Session {
            client: {
                let mut c = self.clone();
                c.url = leader;
                c
            },
            stream_id,
            framework_id: FrameworkId::default(),
            body: reader,
            decoder: recordio::Decoder::default(),
            queue: VecDeque::new(),
            events_encoding: answer_encoding(&head, self.encoding),
            heartbeat: None,
        };
        loop {
            let ev = session
                .read_event(deadline)
                .context("SUBSCRIBE: wait for SUBSCRIBED")?
                .ok_or_else(|| Error::new(ErrorKind::Io, "SUBSCRIBE: master closed the stream"))?;
            match event_type(&ev) {
                Some(event::Type::Subscribed) => {
                    let s = ev.subscribed.expect("SUBSCRIBED carries subscribed");
                    session.framework_id = s.framework_id;
                    session.heartbeat = s.heartbeat_interval_seconds;
                    return Ok(session);
                }
                Some(event::Type::Error) => {
                    let msg = ev.error.map(|e| e.message).unwrap_or_default();
                    return Err(Error::new(
                        ErrorKind::Router,
                        format!("SUBSCRIBE: master sent ERROR: {msg}"),
                    ));
                }
                _ => continue,
            }
        }
    }
}

/// One subscribed framework: its event stream plus calls on side connections.
#[derive(Debug)]
pub struct Session {
    client: SchedulerClient,
    stream_id: String,
    framework_id: FrameworkId,
    body: BodyReader,
    decoder: recordio::Decoder,
    queue: VecDeque<Vec<u8>>,
    events_encoding: Encoding,
    heartbeat: Option<f64>,
}

impl Session {
    pub fn framework_id(&self) -> &str {
        &self.framework_id.value
    }

    pub fn stream_id(&self) -> &str {
        &self.stream_id
    }

    /// Seconds between the master's heartbeats, as it announced them.
    pub fn heartbeat_interval(&self) -> Option<f64> {
        self.heartbeat
    }

    fn read_event(&mut self, deadline: Instant) -> Result<Option<Event>> {
        loop {
            if let Some(record) = self.queue.pop_front() {
                return proto::decode::<Event>(&record, self.events_encoding).map(Some);
            }
            match self.body.read_some(deadline)? {
                Some(piece) => self.queue.extend(self.decoder.feed(&piece)?),
                None if self.decoder.is_idle() => return Ok(None),
                None => {
                    return Err(Error::new(
                        ErrorKind::Decode,
                        "event stream ended inside a record",
                    ))
                }
            }
        }
    }

    /// The next event, waiting at most until `deadline` (a timeout is `TryAgainLater`).
    /// `None` when the master closed the stream.
    pub fn next_event(&mut self, deadline: Instant) -> Result<Option<Event>> {
        self.read_event(deadline).context("read scheduler events")
    }

    /// Sends `call` with this session's framework ID and stream ID; Mesos answers 202.
    pub fn call(&self, mut call: Call) -> Result<()> {
        let name = call
            .r#type
            .and_then(|t| call::Type::try_from(t).ok())
            .map_or("scheduler call", |t| t.as_str_name());
        call.framework_id = Some(self.framework_id.clone());
        let body = proto::encode(&call, self.client.encoding)?;
        let headers = [("Mesos-Stream-Id".to_string(), self.stream_id.clone())];
        let deadline = Instant::now() + self.client.timeout;
        let (_, mut reader, _) =
            post_following_leader(&self.client, &headers, body, deadline).context(name)?;
        // 202 has an empty body; drain it so the connection closes cleanly.
        let _ = reader.read_all(deadline, 64 << 10);
        Ok(())
    }

    /// Launches `tasks` on the agent of `offer_ids` (all from one agent).
    pub fn accept(
        &self,
        offer_ids: Vec<OfferId>,
        tasks: Vec<TaskInfo>,
        refuse_seconds: f64,
    ) -> Result<()> {
        self.call(Call {
            r#type: Some(call::Type::Accept as i32),
            accept: Some(call::Accept {
                offer_ids,
                operations: vec![offer::Operation {
                    r#type: Some(offer::operation::Type::Launch as i32),
                    launch: Some(offer::operation::Launch { task_infos: tasks }),
                }],
                filters: Some(crate::proto::v1::Filters {
                    refuse_seconds: Some(refuse_seconds),
                }),
            }),
            ..Default::default()
        })
    }

    /// Returns offers; the master re-offers them after `refuse_seconds`.
    pub fn decline(&self, offer_ids: Vec<OfferId>, refuse_seconds: f64) -> Result<()> {
        self.call(Call {
            r#type: Some(call::Type::Decline as i32),
            decline: Some(call::Decline {
                offer_ids,
                filters: Some(crate::proto::v1::Filters {
                    refuse_seconds: Some(refuse_seconds),
                }),
            }),
            ..Default::default()
        })
    }

    /// Acknowledges a status update; updates without `uuid` (from the master) need none.
    pub fn acknowledge(&self, status: &TaskStatus) -> Result<bool> {
        let (Some(uuid), Some(agent_id)) = (&status.uuid, &status.agent_id) else {
            return Ok(false);
        };
        self.call(Call {
            r#type: Some(call::Type::Acknowledge as i32),
            acknowledge: Some(call::Acknowledge {
                agent_id: agent_id.clone(),
                task_id: status.task_id.clone(),
                uuid: uuid.clone(),
            }),
            ..Default::default()
        })?;
        Ok(true)
    }

    pub fn kill(&self, task_id: &str, agent_id: Option<&str>) -> Result<()> {
        self.call(Call {
            r#type: Some(call::Type::Kill as i32),
            kill: Some(call::Kill {
                task_id: TaskId {
                    value: task_id.to_string(),
                },
                agent_id: agent_id.map(|a| AgentId {
                    value: a.to_string(),
                }),
            }),
            ..Default::default()
        })
    }

    /// Stops offers until the next REVIVE (or a new subscription).
    pub fn suppress(&self) -> Result<()> {
        self.call(Call {
            r#type: Some(call::Type::Suppress as i32),
            suppress: Some(call::Suppress::default()),
            ..Default::default()
        })
    }

    /// Ends the framework: the master kills its tasks and the agents destroy their
    /// containers (which runs CNI DEL).
    pub fn teardown(&self) -> Result<()> {
        self.call(Call {
            r#type: Some(call::Type::Teardown as i32),
            ..Default::default()
        })
    }
}

/// The event's type, if it is one we know.
pub fn event_type(e: &Event) -> Option<event::Type> {
    e.r#type.and_then(|t| event::Type::try_from(t).ok())
}

/// A framework as mesos-execute registers it: the current user, `name`, role `*`,
/// `failover_timeout` 0 (the master removes it, killing its tasks, when the stream drops),
/// TASK_KILLING_STATE and PARTITION_AWARE.
pub fn framework_info(name: &str) -> FrameworkInfo {
    use crate::proto::v1::framework_info::{capability, Capability};
    let user = nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| "root".to_string());
    FrameworkInfo {
        user,
        name: name.to_string(),
        failover_timeout: Some(0.0),
        capabilities: [
            capability::Type::TaskKillingState,
            capability::Type::PartitionAware,
        ]
        .into_iter()
        .map(|t| Capability {
            r#type: Some(t as i32),
        })
        .collect(),
        ..Default::default()
    }
}
