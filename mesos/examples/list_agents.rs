//! Lists the agents of a master over the protobuf operator API.
//! `cargo run -p weave-mesos --example list_agents -- 192.0.2.1:5050`
use weave_mesos::operator::OperatorClient;

fn main() -> weave_mesos::Result<()> {
    let master = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:5050".into());
    let agents = OperatorClient::new(&master)?.get_agents()?;
    for a in agents.agents {
        let id = a.agent_info.id.map(|i| i.value).unwrap_or_default();
        println!(
            "{id} {} {} active={}",
            a.agent_info.hostname, a.version, a.active
        );
    }
    Ok(())
}
