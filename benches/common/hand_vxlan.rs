//! The reference of `benches/dataplane.rs`: a plain kernel VXLAN between hosts, set up by
//! hand with `ip` and `bridge` commands, as an operator would without us.

use super::common::Netns;
use super::hosts::{underlay_ip, Cluster};
use super::Path;

/// `n` hosts with a hand-made kernel VXLAN: `br0` + `vx0` (VNI 42, port 4789, learning,
/// a flood entry to every other host) + one container each at 10.99.0.k/24, MTU as ours.
pub struct HandVxlan {
    containers: Vec<Netns>,
    _cluster: Cluster,
}

impl HandVxlan {
    pub fn new(mtu: u32, n: usize) -> HandVxlan {
        let cluster = Cluster::new(n);
        let mut containers = Vec::new();
        for k in 1..=n {
            let host = &cluster.host(k).ns;
            let c = Netns::new(&format!("mh{k}hand{n}"));
            let floods: Vec<String> = (1..=n)
                .filter(|&o| o != k)
                .map(|o| {
                    format!(
                        "bridge fdb append 00:00:00:00:00:00 dev vx0 dst {} self permanent",
                        underlay_ip(o)
                    )
                })
                .collect();
            host.sh(&format!(
                "ip link add br0 mtu {mtu} type bridge && ip link set br0 up && \
                 ip link add vx0 mtu {mtu} type vxlan id 42 dstport 4789 local {local} learning && \
                 ip link set vx0 master br0 up && {floods} && \
                 ip link add veth0 mtu {mtu} master br0 type veth peer name eth0 netns {c} && \
                 ip link set veth0 up",
                local = underlay_ip(k),
                floods = floods.join(" && "),
                c = c.name
            ));
            c.sh(&format!(
                "ip addr add 10.99.0.{k}/24 dev eth0 && ip link set eth0 up"
            ));
            containers.push(c);
        }
        HandVxlan {
            containers,
            _cluster: cluster,
        }
    }

    /// From the first host's container to the second's.
    pub fn path(&self) -> Path<'_> {
        Path {
            client: &self.containers[0].name,
            server: &self.containers[1].name,
            addr: "10.99.0.2".parse().unwrap(),
            routers: vec![],
        }
    }
}
