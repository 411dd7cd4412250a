//! The reachability scenario from code: against a master if one is given, else on a local
//! cluster of network namespaces (needs root, and `weaver`/`weave-net` next to this binary
//! or passed in WEAVER / WEAVE_NET).
//! `cargo run -p weave-mesos --example scenario -- [MASTER]`
use std::time::{Duration, Instant};
use weave_mesos::local_cluster::{LocalCluster, LocalOptions};
use weave_mesos::mesos_cluster::MesosCluster;
use weave_mesos::operator::OperatorClient;
use weave_mesos::scenario::{run, Listeners};
use weave_mesos::scheduler::SchedulerClient;

fn main() -> weave_mesos::Result<()> {
    let report = match std::env::args().nth(1) {
        Some(master) => {
            let mut c = MesosCluster::connect(
                OperatorClient::new(&master)?,
                SchedulerClient::new(&master)?,
                "weave",
                1,
                Instant::now() + Duration::from_secs(30),
            )?;
            run(&mut c, &Listeners::All)
        }
        None => {
            let mut opts = LocalOptions::next_to_exe(2, "wvt-example")?;
            if let Some(w) = std::env::var_os("WEAVER") {
                opts.weaver = w.into();
            }
            if let Some(p) = std::env::var_os("WEAVE_NET") {
                opts.plugin = p.into();
            }
            run(&mut LocalCluster::build(opts)?, &Listeners::All)
        }
    };
    print!("{}", report.text());
    std::process::exit(if report.ok() { 0 } else { 1 });
}
