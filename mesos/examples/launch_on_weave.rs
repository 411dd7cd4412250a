//! Launches one command task on the `weave` CNI network and prints its IP as Mesos reports
//! it (TaskStatus.container_status.network_infos[].ip_addresses).
//! `cargo run -p weave-mesos --example launch_on_weave -- 192.0.2.1:5050 'ip addr show eth0'`
use std::time::{Duration, Instant};
use weave_mesos::driver::{parse_resources, AgentChoice, Driver, TaskSpec};
use weave_mesos::operator::task_state_name;
use weave_mesos::scheduler::{framework_info, SchedulerClient};

fn main() -> weave_mesos::Result<()> {
    let mut args = std::env::args().skip(1);
    let master = args.next().unwrap_or_else(|| "127.0.0.1:5050".into());
    let command = args.next().unwrap_or_else(|| "ip addr show eth0".into());
    let deadline = Instant::now() + Duration::from_secs(60);
    let session =
        SchedulerClient::new(&master)?.subscribe(framework_info("weave example"), deadline)?;
    let mut driver = Driver::new(session);
    driver.launch(TaskSpec {
        name: format!("weave-example-{}", std::process::id()),
        command,
        shell: true,
        networks: vec!["weave".into()],
        resources: parse_resources("cpus:0.1;mem:32")?,
        agent: AgentChoice::Any,
        ..Default::default()
    })?;
    let name = format!("weave-example-{}", std::process::id());
    let task = driver.wait_terminal(&name, deadline);
    driver.teardown()?;
    let task = task?;
    for (_, s) in &task.updates {
        let ips: Vec<String> = s
            .container_status
            .iter()
            .flat_map(|c| &c.network_infos)
            .flat_map(|n| &n.ip_addresses)
            .filter_map(|a| a.ip_address.clone())
            .collect();
        println!(
            "{} ips={ips:?} {}",
            task_state_name(s.state),
            s.message.clone().unwrap_or_default()
        );
    }
    Ok(())
}
