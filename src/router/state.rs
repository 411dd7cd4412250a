//! The IPAM actor: one task owns the [`Ipam`] state, the CNI attachments and their file.
//! Requests that arrive while a write is in flight are applied together and persisted with one
//! write (group commit), so concurrent container starts share an fsync, and an allocation and
//! the attachment it is for are written together. A change is acknowledged only after its
//! write succeeded; if the write fails, the batch's changes are undone in memory and reported.

use crate::api::Attachment;
use crate::ipam::store::DataDir;
use crate::ipam::Ipam;
use crate::netlink::{format_mac, mac_for_ip};
use crate::{Error, ErrorKind, Result, NO_CONTAINER_ID};
use ipnet::Ipv4Net;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use tokio::sync::{mpsc, oneshot};

/// Most requests applied before one write.
const MAX_BATCH: usize = 256;

/// Counters for status, report and metrics (no per-id data, so cheap to copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpamSummary {
    pub universe: Ipv4Net,
    pub default_subnet: Ipv4Net,
    pub owned_ranges: Vec<Ipv4Net>,
    pub owned_size: u64,
    pub active: usize,
    pub free: u64,
    pub ids: usize,
}

enum Op {
    /// Allocate, and record the attachment the address is for (ips, mac, ipam_id filled in).
    Allocate(String, Option<Ipv4Net>, Option<Attachment>),
    Claim(String, Ipv4Net),
    /// Free every address of an id, and drop the attachments recorded with it.
    Free(String),
    FreeOne(String, Ipv4Addr),
    Lookup(String, Option<Ipv4Net>),
    Owned,
    Summary,
    PutAttachment(Attachment),
    RemoveAttachment(String, String),
    Attachments,
}

enum Reply {
    Cidr(Ipv4Net),
    Changed(bool),
    Freed(usize),
    Cidrs(Vec<Ipv4Net>),
    Owned(BTreeMap<String, Vec<Ipv4Net>>),
    Summary(IpamSummary),
    Attachments(Vec<Attachment>),
}

/// (container id, ifname): one attachment per interface.
type AttachmentKey = (String, String);

/// The actor's state: addresses and the interfaces they were handed to.
struct State {
    ipam: Ipam,
    attachments: BTreeMap<AttachmentKey, Attachment>,
}

/// How to take back a change whose write failed.
enum Undo {
    Remove(String, Ipv4Addr),
    Restore(String, Vec<Ipv4Net>),
    /// Put back what an attachment key held before (None: it was absent).
    Attachment(AttachmentKey, Option<Attachment>),
}

fn key_of(a: &Attachment) -> AttachmentKey {
    (a.container_id.clone(), a.ifname.clone())
}

struct Request {
    op: Op,
    reply: oneshot::Sender<Result<Reply>>,
}

/// Cheap, cloneable handle to the IPAM actor.
#[derive(Clone)]
pub struct IpamHandle {
    tx: mpsc::Sender<Request>,
}

impl IpamHandle {
    /// Spawns the actor on the current runtime.
    pub fn spawn(
        ipam: Ipam,
        attachments: Vec<Attachment>,
        datadir: DataDir,
        peer_name: String,
    ) -> IpamHandle {
        let (tx, rx) = mpsc::channel(1024);
        let attachments = attachments.into_iter().map(|a| (key_of(&a), a)).collect();
        let state = State { ipam, attachments };
        tokio::spawn(actor(state, datadir, peer_name, rx));
        IpamHandle { tx }
    }

    async fn call(&self, op: Op) -> Result<Reply> {
        let (reply, rx) = oneshot::channel();
        let gone = || Error::new(ErrorKind::Internal, "ipam actor has stopped");
        self.tx
            .send(Request { op, reply })
            .await
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// An address for `id` in `subnet` (default subnet if `None`), idempotent per id.
    pub async fn allocate(&self, id: &str, subnet: Option<Ipv4Net>) -> Result<Ipv4Net> {
        self.allocate_attached(id, subnet, None).await
    }

    /// Allocates and records `attachment` (its ips, mac and ipam_id are filled in) in the
    /// same write.
    pub async fn allocate_attached(
        &self,
        id: &str,
        subnet: Option<Ipv4Net>,
        attachment: Option<Attachment>,
    ) -> Result<Ipv4Net> {
        match self
            .call(Op::Allocate(id.into(), subnet, attachment))
            .await?
        {
            Reply::Cidr(c) => Ok(c),
            _ => unreachable!("allocate answers a cidr"),
        }
    }

    /// Inserts or replaces the attachment with the same (container id, ifname).
    pub async fn put_attachment(&self, a: Attachment) -> Result<()> {
        self.call(Op::PutAttachment(a)).await.map(drop)
    }

    /// Removes an attachment; absent is fine.
    pub async fn remove_attachment(&self, container_id: &str, ifname: &str) -> Result<()> {
        self.call(Op::RemoveAttachment(container_id.into(), ifname.into()))
            .await
            .map(drop)
    }

    pub async fn attachments(&self) -> Result<Vec<Attachment>> {
        match self.call(Op::Attachments).await? {
            Reply::Attachments(v) => Ok(v),
            _ => unreachable!("attachments answers a list"),
        }
    }

    /// Claims the address of `cidr` for `id`; true if something changed.
    pub async fn claim(&self, id: &str, cidr: Ipv4Net) -> Result<bool> {
        match self.call(Op::Claim(id.into(), cidr)).await? {
            Reply::Changed(b) => Ok(b),
            _ => unreachable!("claim answers changed"),
        }
    }

    /// Frees all addresses of `id`; the number freed.
    pub async fn free(&self, id: &str) -> Result<usize> {
        match self.call(Op::Free(id.into())).await? {
            Reply::Freed(n) => Ok(n),
            _ => unreachable!("free answers a count"),
        }
    }

    pub async fn free_one(&self, id: &str, ip: Ipv4Addr) -> Result<()> {
        self.call(Op::FreeOne(id.into(), ip)).await.map(drop)
    }

    /// CIDRs `id` owns in `subnet` (default subnet if `None`).
    pub async fn lookup(&self, id: &str, subnet: Option<Ipv4Net>) -> Result<Vec<Ipv4Net>> {
        match self.call(Op::Lookup(id.into(), subnet)).await? {
            Reply::Cidrs(v) => Ok(v),
            _ => unreachable!("lookup answers cidrs"),
        }
    }

    /// A copy of every owner's CIDRs.
    pub async fn owned(&self) -> Result<BTreeMap<String, Vec<Ipv4Net>>> {
        match self.call(Op::Owned).await? {
            Reply::Owned(m) => Ok(m),
            _ => unreachable!("owned answers a map"),
        }
    }

    pub async fn summary(&self) -> Result<IpamSummary> {
        match self.call(Op::Summary).await? {
            Reply::Summary(s) => Ok(s),
            _ => unreachable!("summary answers a summary"),
        }
    }
}

async fn actor(
    mut state: State,
    datadir: DataDir,
    peer_name: String,
    mut rx: mpsc::Receiver<Request>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let mut undos = Vec::new();
        let mut answers = Vec::with_capacity(batch.len());
        for req in batch {
            let (result, undo) = apply(&mut state, req.op);
            let changed = !undo.is_empty();
            undos.extend(undo);
            answers.push((req.reply, result, changed));
        }
        if !undos.is_empty() {
            // The state moves into the blocking task for the write and comes back: no copy,
            // and no file I/O on a runtime worker.
            let (dd, name) = (datadir.clone(), peer_name.clone());
            let joined = tokio::task::spawn_blocking(move || {
                let r = dd.save_ipam(&name, &state.ipam, state.attachments.values());
                (state, r)
            })
            .await;
            let (back, written) = match joined {
                Ok(v) => v,
                Err(e) => {
                    tracing::error!("ipam store task failed: {e}; stopping the ipam actor");
                    return;
                }
            };
            state = back;
            if let Err(e) = written {
                tracing::error!("{e}; rolling back {} change(s)", undos.len());
                for u in undos.into_iter().rev() {
                    undo(&mut state, u);
                }
                for a in answers.iter_mut().filter(|a| a.2) {
                    a.1 = Err(e.clone());
                }
            }
        }
        for (reply, result, _) in answers {
            let _ = reply.send(result);
        }
    }
}

fn storage_key(id: &str, addr: Ipv4Addr) -> String {
    if id == NO_CONTAINER_ID {
        addr.to_string()
    } else {
        id.to_string()
    }
}

fn apply(state: &mut State, op: Op) -> (Result<Reply>, Vec<Undo>) {
    let ipam = &mut state.ipam;
    let subnet_or_default = |s: Option<Ipv4Net>, ipam: &Ipam| s.unwrap_or(ipam.default_subnet());
    match op {
        Op::Allocate(id, subnet, attachment) => {
            let s = subnet_or_default(subnet, ipam);
            let (cidr, mut undos) = match ipam.allocate(&id, s) {
                Ok((c, true)) => (c, vec![Undo::Remove(id.clone(), c.addr())]),
                Ok((c, false)) => (c, Vec::new()),
                Err(e) => return (Err(e), Vec::new()),
            };
            if let Some(mut a) = attachment {
                a.ips = vec![cidr.to_string()];
                a.mac = format_mac(&mac_for_ip(cidr.addr()));
                a.ipam_id = id;
                undos.extend(put_attachment(state, a));
            }
            (Ok(Reply::Cidr(cidr)), undos)
        }
        Op::Claim(id, cidr) => match ipam.claim(&id, cidr) {
            Ok(true) => (
                Ok(Reply::Changed(true)),
                vec![Undo::Remove(storage_key(&id, cidr.addr()), cidr.addr())],
            ),
            Ok(false) => (Ok(Reply::Changed(false)), Vec::new()),
            Err(e) => (Err(e), Vec::new()),
        },
        Op::Free(id) => {
            let freed = ipam.free(&id);
            // The attachments go with their addresses, also when those were freed already.
            let gone: Vec<AttachmentKey> = state
                .attachments
                .iter()
                .filter(|(_, a)| a.ipam_id == id)
                .map(|(k, _)| k.clone())
                .collect();
            let mut undos: Vec<Undo> = gone
                .into_iter()
                .map(|k| {
                    let old = state.attachments.remove(&k);
                    Undo::Attachment(k, old)
                })
                .collect();
            match freed {
                Ok(cidrs) => {
                    let n = cidrs.len();
                    undos.push(Undo::Restore(id, cidrs));
                    (Ok(Reply::Freed(n)), undos)
                }
                // Report the IPAM error, but still persist an attachment removal.
                Err(e) => (Err(e), undos),
            }
        }
        Op::FreeOne(id, ip) => match ipam.free_one(&id, ip) {
            Ok(c) => (
                Ok(Reply::Changed(true)),
                vec![Undo::Restore(storage_key(&id, ip), vec![c])],
            ),
            Err(e) => (Err(e), Vec::new()),
        },
        Op::Lookup(id, subnet) => {
            let s = subnet_or_default(subnet, ipam);
            let r = crate::ipam::validate_subnet(s, ipam.universe())
                .map(|_| Reply::Cidrs(ipam.lookup(&id, s)));
            (r, Vec::new())
        }
        Op::Owned => (Ok(Reply::Owned(ipam.owned().clone())), Vec::new()),
        Op::Summary => (
            Ok(Reply::Summary(IpamSummary {
                universe: ipam.universe(),
                default_subnet: ipam.default_subnet(),
                owned_ranges: ipam.owned_ranges(),
                owned_size: ipam.owned_size(),
                active: ipam.active(),
                free: ipam.free_count(),
                ids: ipam.owned().len(),
            })),
            Vec::new(),
        ),
        Op::PutAttachment(a) => (Ok(Reply::Changed(true)), put_attachment(state, a)),
        Op::RemoveAttachment(cid, ifname) => {
            let key = (cid, ifname);
            match state.attachments.remove(&key) {
                Some(old) => (
                    Ok(Reply::Changed(true)),
                    vec![Undo::Attachment(key, Some(old))],
                ),
                None => (Ok(Reply::Changed(false)), Vec::new()),
            }
        }
        Op::Attachments => (
            Ok(Reply::Attachments(
                state.attachments.values().cloned().collect(),
            )),
            Vec::new(),
        ),
    }
}

/// Upserts; no undo (and no write) when nothing changes.
fn put_attachment(state: &mut State, a: Attachment) -> Vec<Undo> {
    let key = key_of(&a);
    if state.attachments.get(&key) == Some(&a) {
        return Vec::new();
    }
    let old = state.attachments.insert(key.clone(), a);
    vec![Undo::Attachment(key, old)]
}

fn undo(state: &mut State, u: Undo) {
    match u {
        Undo::Remove(id, addr) => {
            state.ipam.remove(&id, addr);
        }
        Undo::Restore(id, cidrs) => {
            if let Err(e) = state.ipam.restore(&id, &cidrs) {
                tracing::error!("roll back free of {id}: {e}");
            }
        }
        Undo::Attachment(key, Some(old)) => {
            state.attachments.insert(key, old);
        }
        Undo::Attachment(key, None) => {
            state.attachments.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(dir: &std::path::Path) -> IpamHandle {
        let range: Ipv4Net = "10.32.0.0/12".parse().unwrap();
        let dd = DataDir::open(dir).unwrap();
        IpamHandle::spawn(
            Ipam::new(range, range).unwrap(),
            Vec::new(),
            dd,
            "02:00:00:00:00:01".into(),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_allocations_are_unique_and_persisted() {
        let tmp = tempfile::tempdir().unwrap();
        let h = setup(tmp.path());
        let mut tasks = Vec::new();
        for i in 0..200 {
            let h = h.clone();
            tasks.push(tokio::spawn(async move {
                h.allocate(&format!("c{i}"), None).await.unwrap()
            }));
        }
        let mut addrs = std::collections::HashSet::new();
        for t in tasks {
            assert!(addrs.insert(t.await.unwrap()));
        }
        let (persisted, _) = DataDir::open(tmp.path())
            .unwrap()
            .load_ipam("02:00:00:00:00:01", "10.32.0.0/12".parse().unwrap())
            .unwrap();
        assert_eq!(persisted.owned.len(), 200);
        assert_eq!(persisted.owned, h.owned().await.unwrap());
    }

    #[tokio::test]
    async fn failed_write_rolls_back_and_is_not_acknowledged() {
        let tmp = tempfile::tempdir().unwrap();
        let h = setup(tmp.path());
        let first = h.allocate("keep", None).await.unwrap();
        let blocker = tmp.path().join("ipam.json");
        std::fs::remove_file(&blocker).unwrap();
        std::fs::create_dir_all(blocker.join("x")).unwrap();
        let e = h.allocate("lost", None).await.unwrap_err();
        assert!(e.to_string().contains("save ipam state"), "{e}");
        assert!(h.lookup("lost", None).await.unwrap().is_empty());
        assert!(h.free("keep").await.is_err());
        assert_eq!(h.lookup("keep", None).await.unwrap(), vec![first]);
        // Reads still work, and after the disk recovers the same address is handed out again.
        std::fs::remove_dir_all(&blocker).unwrap();
        let again = h.allocate("lost", None).await.unwrap();
        assert_eq!(again.to_string(), "10.32.0.2/12");
        assert_eq!(h.summary().await.unwrap().active, 2);
    }

    #[tokio::test]
    async fn an_allocation_and_its_attachment_are_written_and_freed_together() {
        let tmp = tempfile::tempdir().unwrap();
        let h = setup(tmp.path());
        let att = Attachment {
            container_id: "c1".into(),
            ifname: "eth0".into(),
            host_veth: "vethwepl0000001".into(),
            mac: String::new(),
            ips: Vec::new(),
            netns: "/var/run/netns/x".into(),
            ipam_id: String::new(),
        };
        let cidr = h.allocate_attached("c1", None, Some(att)).await.unwrap();
        let list = h.attachments().await.unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].ips, vec![cidr.to_string()]);
        assert_eq!(list[0].mac, "0e:57:0a:20:00:01");
        assert_eq!(list[0].ipam_id, "c1");
        let load = || {
            DataDir::open(tmp.path())
                .unwrap()
                .load_ipam("02:00:00:00:00:01", "10.32.0.0/12".parse().unwrap())
                .unwrap()
                .0
        };
        assert_eq!(load().attachments, list, "persisted in the same file");
        assert_eq!(h.free("c1").await.unwrap(), 1);
        assert!(h.attachments().await.unwrap().is_empty());
        assert!(load().attachments.is_empty() && load().owned.is_empty());
    }
}
