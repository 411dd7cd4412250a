//! `weave-mesos dns-sync`: weaveDNS names for Mesos tasks, with no change to Mesos.
//!
//! It subscribes to the master's operator API (SUBSCRIBE, a RecordIO stream of events that
//! starts with the whole state), keeps a [`book::Book`] of running tasks, and registers
//! `<task>.<framework>.<domain>` (Mesos-DNS' naming, see [`names`]; or the task's
//! `weave.dns.name` label) for every TASK_RUNNING task that has an address on a weave
//! network, through the local router's `PUT /name/<container-id>/<ip>?fqdn=...`; it removes
//! the name (`DELETE /name/...`) when the task ends, is killed, lost or unreachable.
//!
//! **It runs on every agent, for that agent's tasks.** The records a router registers are
//! owned by its peer: with one instance per agent, a task's name is owned by the router
//! that allocated the task's address on the same host, so `weave rmpeer`/`reset` of a host
//! removes exactly that host's names along with its addresses, a dead host takes no other
//! host's names with it, and there is no single instance whose failure leaves the whole
//! cluster's names stale. Each instance knows its tasks without configuration: a task is
//! ours when the local router owns its address under its Mesos ContainerID (`GET /ip`),
//! which the agent's CNI ADD made before TASK_RUNNING. The cost is one SUBSCRIBE stream
//! per agent on the master, which Mesos serves to many subscribers routinely.
//!
//! Robustness: a dropped stream, a silent master (no heartbeat within twice its interval
//! plus 5 s) or a leader change (the old leader closes the stream; redirects lead to the
//! new one) means reconnect, with backoff, to each configured master in turn, and a full
//! resync from the new SUBSCRIBED state. What we registered is kept in a state file, so a
//! restarted dns-sync removes the names of tasks that ended while it was down. Every
//! `reassert` interval all names are PUT again (idempotent), which repairs a router that
//! lost its records.

pub mod book;
pub mod names;

use crate::operator::OperatorClient;
use crate::proto::v1::master::event;
use crate::{Error, ErrorKind, Result};
use book::{Book, Want};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use weave::api::Client;

/// Settings of one dns-sync instance.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// Masters tried in turn on every (re)connect; leader redirects are followed.
    pub masters: Vec<OperatorClient>,
    /// The local router's API.
    pub router: Client,
    /// Normalised (`weave.local.`).
    pub domain: String,
    /// CNI networks whose addresses get names.
    pub networks: Vec<String>,
    /// Where the registered names are kept across restarts; `None`: memory only.
    pub state_file: Option<PathBuf>,
    /// All names are PUT again this often.
    pub reassert: Duration,
    /// Longest wait between reconnect attempts.
    pub max_backoff: Duration,
}

/// The running synchroniser's memory.
pub struct Syncer {
    cfg: SyncConfig,
    book: Book,
    /// Names we registered and have not removed.
    registered: BTreeSet<Want>,
    /// Container ID → the addresses the local router holds for it (empty: not ours).
    owned: HashMap<String, HashSet<Ipv4Addr>>,
    /// A reconcile failed (router down): try again at the next event.
    dirty: bool,
    last_reassert: Instant,
}

impl Syncer {
    /// Loads the state file (a missing one is an empty start).
    pub fn new(cfg: SyncConfig) -> Result<Syncer> {
        let registered = match &cfg.state_file {
            Some(p) => weave::ipam::store::read_json::<Vec<Want>>(p)?
                .unwrap_or_default()
                .into_iter()
                .collect(),
            None => BTreeSet::new(),
        };
        Ok(Syncer {
            cfg,
            book: Book::default(),
            registered,
            owned: HashMap::new(),
            dirty: true,
            last_reassert: Instant::now(),
        })
    }

    /// The names registered now.
    pub fn registered(&self) -> &BTreeSet<Want> {
        &self.registered
    }

    /// Runs forever: sessions with the masters in turn, backing off between failures.
    pub fn run(&mut self) -> ! {
        let mut backoff = Duration::from_millis(500);
        loop {
            for i in 0..self.cfg.masters.len() {
                let started = Instant::now();
                let err = self.session(i);
                eprintln!("dns-sync: {err}");
                if started.elapsed() > Duration::from_secs(60) {
                    backoff = Duration::from_millis(500);
                }
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(self.cfg.max_backoff);
        }
    }

    /// One subscription: full resync from SUBSCRIBED, then events until the stream fails.
    pub fn session(&mut self, master: usize) -> Error {
        let client = self.cfg.masters[master].clone();
        let mut stream = match client.subscribe(Instant::now() + Duration::from_secs(86400)) {
            Ok(s) => s,
            Err(e) => return e.context("subscribe"),
        };
        let first = match stream.next_event(Instant::now() + client_timeout(&client)) {
            Ok(Some(e)) => e,
            Ok(None) => return Error::new(ErrorKind::Io, "master closed the stream at once"),
            Err(e) => return e,
        };
        let Some(sub) = first
            .subscribed
            .as_ref()
            .filter(|_| first.r#type == Some(event::Type::Subscribed as i32))
        else {
            return Error::new(
                ErrorKind::Decode,
                format!(
                    "SUBSCRIBE: first event is {}, not SUBSCRIBED",
                    crate::operator::event_type_name(&first)
                ),
            );
        };
        let interval = sub
            .heartbeat_interval_seconds
            .unwrap_or(15.0)
            .clamp(1.0, 600.0);
        let grace = Duration::from_secs_f64(interval * 2.0 + 5.0);
        self.book.apply(&first);
        eprintln!(
            "dns-sync: subscribed; {} tasks not terminal, heartbeat every {interval}s",
            self.book.len()
        );
        self.owned.clear();
        self.reconcile(true);
        loop {
            let e = match stream.next_event(Instant::now() + grace) {
                Ok(Some(e)) => e,
                Ok(None) => return Error::new(ErrorKind::Io, "master closed the stream"),
                Err(e) => return e.context(format!("no event within {grace:?}")),
            };
            let relevant = !matches!(
                e.r#type.and_then(|t| event::Type::try_from(t).ok()),
                Some(event::Type::Heartbeat | event::Type::AgentAdded | event::Type::AgentRemoved)
            );
            self.book.apply(&e);
            let reassert = self.last_reassert.elapsed() >= self.cfg.reassert;
            if relevant || self.dirty || reassert {
                self.reconcile(reassert);
            }
        }
    }

    /// Makes the router's names match the book: removes what should no longer exist, adds
    /// what is missing (everything with `all`). Failures leave `dirty` set for a retry.
    pub fn reconcile(&mut self, all: bool) {
        let wanted_all = self.book.wanted(&self.cfg.networks, &self.cfg.domain);
        let unknown = wanted_all
            .iter()
            .any(|w| !self.owned.contains_key(&w.container_id));
        if unknown {
            if let Err(e) = self.refresh_owned(&wanted_all) {
                eprintln!("dns-sync: {e}");
                self.dirty = true;
                return;
            }
        }
        let wanted: BTreeSet<Want> = wanted_all
            .iter()
            .filter(|w| {
                self.owned
                    .get(&w.container_id)
                    .is_some_and(|ips| ips.contains(&w.ip))
            })
            .cloned()
            .collect();
        let mut ok = true;
        let mut changed = false;
        let stale: Vec<Want> = self.registered.difference(&wanted).cloned().collect();
        for w in stale {
            match self
                .cfg
                .router
                .dns_remove(&w.container_id, Some(w.ip), Some(&w.fqdn))
            {
                Ok(()) => {
                    eprintln!(
                        "dns-sync: removed {} -> {} (container {})",
                        w.fqdn, w.ip, w.container_id
                    );
                    self.registered.remove(&w);
                    changed = true;
                }
                Err(e) => {
                    eprintln!("dns-sync: {e}");
                    ok = false;
                }
            }
        }
        for w in &wanted {
            if !all && self.registered.contains(w) {
                continue;
            }
            match self.cfg.router.dns_add(&w.container_id, w.ip, &w.fqdn) {
                Ok(()) => {
                    if self.registered.insert(w.clone()) {
                        eprintln!(
                            "dns-sync: registered {} -> {} (container {})",
                            w.fqdn, w.ip, w.container_id
                        );
                        changed = true;
                    }
                }
                Err(e) => {
                    eprintln!("dns-sync: {e}");
                    ok = false;
                }
            }
        }
        if all && ok {
            self.last_reassert = Instant::now();
        }
        // Forget ownership of containers that are gone.
        let live: HashSet<&String> = wanted_all.iter().map(|w| &w.container_id).collect();
        self.owned.retain(|c, _| live.contains(c));
        if changed {
            if let Err(e) = self.save() {
                eprintln!("dns-sync: {e}");
                ok = false;
            }
        }
        self.dirty = !ok;
    }

    /// Asks the router which of `wanted`'s containers hold which addresses here.
    fn refresh_owned(&mut self, wanted: &BTreeSet<Want>) -> Result<()> {
        let (status, body) = self.cfg.router.request("GET", "/ip", None)?;
        if status != 200 {
            return Err(Error::new(
                ErrorKind::Router,
                format!("GET /ip: router answered {status}: {}", body.trim()),
            ));
        }
        let v: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| Error::new(ErrorKind::Decode, format!("GET /ip: {e}")))?;
        let mut held: HashMap<String, HashSet<Ipv4Addr>> = HashMap::new();
        for o in v["owned"].as_array().into_iter().flatten() {
            let Some(id) = o["containerid"].as_str() else {
                continue;
            };
            let ips = o["addrs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str()?.split('/').next()?.parse::<Ipv4Addr>().ok());
            held.entry(id.to_string()).or_default().extend(ips);
        }
        for w in wanted {
            let ips = held.get(&w.container_id).cloned().unwrap_or_default();
            self.owned.insert(w.container_id.clone(), ips);
        }
        Ok(())
    }

    fn save(&self) -> Result<()> {
        match &self.cfg.state_file {
            Some(p) => {
                let v: Vec<&Want> = self.registered.iter().collect();
                weave::ipam::store::write_json(p, &v)
            }
            None => Ok(()),
        }
    }
}

fn client_timeout(c: &OperatorClient) -> Duration {
    c.timeout.max(Duration::from_secs(5))
}
