//! weaveDNS names for Mesos tasks under a real three-host Mesos 1.11 cluster (the
//! mesos-fixture, set up as `fixture_multihost`): our `weaver` on each host (DNS on its
//! bridge), `weave-mesos dns-sync` next to each agent, a framework `wvt-dns` with tasks
//! `web` (agent 1) and `client` (agent 3). From inside `client`:
//! 1. `/etc/resolv.conf` is what Mesos wrote from our CNI result (nameserver = host 3's
//!    bridge address, search weave.local), for a task without an image, and for a task in
//!    the `alpine` image (agents started with `agent-flags --images`, image built by
//!    `scripts/build-image`), which also resolves `web` by name and connects with `nc`;
//! 2. `web.wvt-dns.weave.local` resolves to the IP Mesos reports for `web`, and `nc`
//!    connects to it by name;
//! 3. a second instance (`web-2` on agent 2, named `web.wvt-dns` by its `weave.dns.name`
//!    label) makes the name answer both addresses;
//! 4. after `web` is killed the name stops answering its address within the TTL plus one
//!    gossip interval (the routers run fast mesh timers: 0.5 s), measured from TASK_KILLED;
//!    after `web-2` is killed too, the name is gone.
//!
//! Commands run inside `client` through files in a shared directory: the task is a loop that
//! runs `cmd-N.sh` and leaves `out-N` and `rc-N`.
//!
//! Needs root, a built fixture and the workspace's binaries: `cargo build --workspace --bins
//! && cargo test -p weave-mesos --features mesos-fixture-tests --test fixture_dns -- --nocapture`.

mod common;
mod image_kit;

use common::hosts::Hosts;
use common::{bin, router_get, secs, task, task_address};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use weave_mesos::driver::{AgentChoice, Driver};
use weave_mesos::proto::v1::TaskState;
use weave_mesos::scheduler::{framework_info, SchedulerClient};

const FRAMEWORK: &str = "wvt-dns";
const NAME: &str = "web.wvt-dns.weave.local";
/// The routers' DNS TTL (default) and gossip interval (`--fast-mesh-timers`).
const TTL: Duration = Duration::from_secs(1);
const GOSSIP_INTERVAL: Duration = Duration::from_millis(500);

/// `weave-mesos dns-sync` on every host, killed on drop.
struct Syncers(Vec<Child>);

impl Drop for Syncers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start_syncers(hs: &Hosts) -> Syncers {
    let mut out = Vec::new();
    for h in &hs.hosts {
        let log = std::fs::File::create(h.datadir.path().join("dns-sync.log")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &h.netns])
            .arg(bin("weave-mesos"))
            .args(["dns-sync", "--master", &hs.master()])
            .arg("--state-file")
            .arg(h.datadir.path().join("dns-sync.json"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        out.push(child);
    }
    Syncers(out)
}

fn sync_log(hs: &Hosts, k: usize) -> String {
    std::fs::read_to_string(hs.host(k).datadir.path().join("dns-sync.log")).unwrap_or_default()
}

/// Runs shell commands inside the `client` task (see the module doc).
struct Client {
    dir: PathBuf,
    next: usize,
}

impl Client {
    /// The task's command: run each `cmd-N.sh` in turn, leave its output and exit code.
    fn command(dir: &Path) -> String {
        format!(
            "d={}; n=0; while :; do if [ -f $d/cmd-$n.sh ]; then sh $d/cmd-$n.sh > $d/out-$n 2>&1; \
             echo $? > $d/rc-$n.tmp; mv $d/rc-$n.tmp $d/rc-$n; n=$((n+1)); else sleep 0.05; fi; done",
            dir.display()
        )
    }

    /// (exit code, output) of `cmd` run inside the task; at most 20 s.
    fn exec(&mut self, cmd: &str) -> (i32, String) {
        let n = self.next;
        self.next += 1;
        let tmp = self.dir.join(format!("cmd-{n}.tmp"));
        std::fs::write(&tmp, cmd).unwrap();
        std::fs::rename(&tmp, self.dir.join(format!("cmd-{n}.sh"))).unwrap();
        let rc = self.dir.join(format!("rc-{n}"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while !rc.exists() {
            assert!(Instant::now() < deadline, "client task did not run {cmd:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
        let code = std::fs::read_to_string(&rc)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let out = std::fs::read_to_string(self.dir.join(format!("out-{n}"))).unwrap_or_default();
        (code, out)
    }

    /// The addresses `getent ahostsv4` gives for `name` inside the task (sorted).
    fn resolve(&mut self, name: &str) -> Vec<String> {
        let (_, out) = self.exec(&format!("getent ahostsv4 {name}"));
        let mut v: Vec<String> = out
            .lines()
            .filter(|l| l.contains("STREAM"))
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// The address the DNS server of host k listens on (its bridge address).
fn dns_address(hs: &Hosts, k: usize) -> String {
    let (code, body) = router_get(&hs.host(k).netns, "/dns-address").expect("router answers");
    assert_eq!(code, 200, "{body}");
    body.split_whitespace().next().unwrap_or("").to_string()
}

fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

#[test]
#[cfg_attr(
    not(feature = "mesos-fixture-tests"),
    ignore = "needs root and the Mesos fixture: cargo test -p weave-mesos --features mesos-fixture-tests"
)]
fn task_names_resolve_across_hosts() {
    let t0 = Instant::now();
    let registry = tempfile::tempdir().unwrap();
    let stores = tempfile::tempdir().unwrap();
    image_kit::build_image(registry.path(), &[]);
    let mut hs = Hosts::new(3);
    hs.start_master();
    let mut agents = image_kit::ImageAgents(Vec::new());
    for k in 1..=3 {
        let store = stores.path().join(format!("h{k}"));
        let env = image_kit::image_agent_env(hs.host(k), registry.path(), &store);
        image_kit::start_image_agent(&hs, &mut agents, k, &env);
    }
    let _syncers = start_syncers(&hs);
    let op = hs.operator();
    let shared = tempfile::Builder::new()
        .prefix("wvt-dns-")
        .tempdir()
        .unwrap();
    let mut d = Driver::new(
        SchedulerClient::new(&hs.master())
            .unwrap()
            .with_connector(hs.connector())
            .subscribe(framework_info(FRAMEWORK), secs(30))
            .unwrap(),
    );
    let at = |k: usize| AgentChoice::Named(hs.host(k).ip.clone());
    d.launch(task("web", "nc -k -l 0.0.0.0 8080", at(1)))
        .unwrap();
    d.launch(task("client", &Client::command(shared.path()), at(3)))
        .unwrap();
    for name in ["web", "client"] {
        d.wait_for(name, TaskState::TaskRunning, secs(60)).unwrap();
    }
    let (_, web_ip, web_cid) = task_address(&op, "web");
    let (_, client_ip, _) = task_address(&op, "client");
    println!(
        "cluster and tasks up in {:.1}s: web {web_ip} (agent 1, container {web_cid}), client {client_ip} (agent 3)",
        t0.elapsed().as_secs_f64()
    );
    let mut client = Client {
        dir: shared.path().to_path_buf(),
        next: 0,
    };

    // 1. The task's resolv.conf, as Mesos wrote it from our CNI result.
    let ns3 = dns_address(&hs, 3);
    let (rc, resolv) = client.exec("cat /etc/resolv.conf");
    println!("client /etc/resolv.conf:\n{resolv}");
    assert_eq!(rc, 0);
    assert!(
        resolv
            .lines()
            .any(|l| l.trim() == format!("nameserver {ns3}")),
        "{resolv}"
    );
    assert!(
        resolv.lines().any(|l| l.trim() == "search weave.local"),
        "{resolv}"
    );

    // 2. The name resolves to the IP Mesos reports for web, and nc connects by name.
    let took = wait_until(
        "web's name resolves in client",
        Duration::from_secs(20),
        || client.resolve(NAME) == [web_ip.clone()],
    );
    let (_, getent) = client.exec(&format!("getent hosts {NAME}"));
    println!(
        "client: getent hosts {NAME} -> {} ({:.2}s after TASK_RUNNING was seen)",
        getent.trim(),
        took.as_secs_f64()
    );
    let (rc, out) = client.exec(&format!("nc -z -w 3 {NAME} 8080 && echo connected"));
    println!("client: nc -z -w 3 {NAME} 8080 -> rc {rc} {}", out.trim());
    assert_eq!(rc, 0, "{out}");
    // The short form through the search domain works too.
    let (rc, out) = client.exec("nc -z -w 3 web.wvt-dns 8080");
    assert_eq!(rc, 0, "search domain: {out}");
    println!("dns-sync on host 1:\n{}", sync_log(&hs, 1));

    // 1b. A task in the `alpine` image on agent 3: the same resolv.conf (Mesos also mounts
    // it into the rootfs), and `web` by name from inside the image.
    let img_cmd = format!(
        "echo '--- resolv.conf'; cat /etc/resolv.conf; echo '--- getent'; getent hosts {NAME}; \
         nc -z -w 3 {NAME} 8080 && echo nc-ok"
    );
    d.launch(image_kit::image_task(
        "client-img",
        &img_cmd,
        3,
        Some("alpine"),
    ))
    .unwrap();
    let t = d.wait_terminal("client-img", secs(90)).unwrap();
    let fid = d.session().framework_id().to_string();
    let out = image_kit::sandbox_file(hs.host(3), &fid, "client-img", "stdout", "--- getent");
    println!("image task client-img (alpine) on agent 3, stdout:\n{out}");
    assert_eq!(t.state(), Some(TaskState::TaskFinished), "{out}");
    assert!(out.contains(&format!("nameserver {ns3}")), "{out}");
    assert!(out.contains("search weave.local"), "{out}");
    assert!(out.contains(&format!("{web_ip} ")), "{out}");
    assert!(out.contains("nc-ok"), "{out}");
    // 3. A second instance on agent 2, named by its label: both addresses.
    let mut web2 = task("web-2", "nc -k -l 0.0.0.0 8080", at(2));
    web2.network_labels = vec![("weave.dns.name".into(), "web.wvt-dns".into())];
    d.launch(web2).unwrap();
    d.wait_for("web-2", TaskState::TaskRunning, secs(60))
        .unwrap();
    let (_, web2_ip, _) = task_address(&op, "web-2");
    let mut both = vec![web_ip.clone(), web2_ip.clone()];
    both.sort();
    wait_until("both addresses", Duration::from_secs(20), || {
        client.resolve(NAME) == both
    });
    println!("client: {NAME} -> {both:?} (web on agent 1, web-2 on agent 2)");

    // 4. web killed: its address leaves the name within TTL + one gossip interval.
    d.kill("web").unwrap();
    let t = d.wait_terminal("web", secs(30)).unwrap();
    assert_eq!(t.state(), Some(TaskState::TaskKilled));
    let killed_at = t.reached(TaskState::TaskKilled).unwrap();
    let ns3_ip: std::net::Ipv4Addr = ns3.parse().unwrap();
    let netns3 = hs.host(3).netns.clone();
    wait_until(
        "web's address leaves the name",
        Duration::from_secs(20),
        || dig(&netns3, ns3_ip, NAME) == [web2_ip.clone()],
    );
    let gone_after = killed_at.elapsed();
    println!(
        "web killed: host 3's DNS answers only web-2 {:.2}s after TASK_KILLED arrived (bound: TTL {TTL:?} + gossip interval {GOSSIP_INTERVAL:?})",
        gone_after.as_secs_f64()
    );
    // The bound plus 1 s for this test's own polling on a loaded 2-core machine.
    assert!(
        gone_after <= TTL + GOSSIP_INTERVAL + Duration::from_secs(1),
        "{gone_after:?}"
    );
    assert_eq!(client.resolve(NAME), std::slice::from_ref(&web2_ip));
    d.kill("web-2").unwrap();
    d.wait_terminal("web-2", secs(30)).unwrap();
    wait_until("the name is gone", Duration::from_secs(10), || {
        client.resolve(NAME).is_empty()
    });
    let (rc, _) = client.exec(&format!("getent hosts {NAME}"));
    assert_ne!(rc, 0);
    println!("web-2 killed: {NAME} no longer resolves in client (getent rc {rc})");
    for k in 1..=3 {
        println!("dns-sync on host {k}:\n{}", sync_log(&hs, k));
    }
    d.kill("client").unwrap();
    d.wait_terminal("client", secs(30)).unwrap();
    d.teardown().unwrap();
    drop(agents);
    println!("total {:.1}s", t0.elapsed().as_secs_f64());
}

/// The A answer of the DNS server at `server` for `name`, asked from inside `netns`.
fn dig(netns: &str, server: std::net::Ipv4Addr, name: &str) -> Vec<String> {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RData, RecordType};
    let file = std::fs::File::open(format!("/var/run/netns/{netns}")).unwrap();
    let name = name.to_string();
    std::thread::spawn(move || {
        use std::os::fd::AsFd;
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut q = Message::query();
        q.add_query(Query::query(
            Name::from_ascii(format!("{name}.")).unwrap(),
            RecordType::A,
        ));
        s.send_to(&q.to_vec().unwrap(), (server, 53)).unwrap();
        let mut buf = [0u8; 1500];
        let Ok(n) = s.recv(&mut buf) else {
            return vec![];
        };
        let mut v: Vec<String> = Message::from_vec(&buf[..n])
            .map(|r| {
                r.answers
                    .iter()
                    .filter_map(|a| match &a.data {
                        RData::A(a) => Some(a.0.to_string()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    })
    .join()
    .unwrap()
}
