//! Builds what weave-net builds for one container, without the router: a bridge in the
//! current namespace and a veth whose peer is created straight inside another namespace,
//! with an address and a default route via the bridge.
//!
//! ```text
//! sudo ip netns add demo
//! sudo cargo run --example create_bridge_veth -- /var/run/netns/demo
//! sudo ip netns exec demo ping -c1 10.99.0.1
//! sudo ip link del vethdemo0; sudo ip link del wvdemo; sudo ip netns del demo
//! ```

use weave::netlink::{format_mac, Netlink};
use weave::netns::NetNs;
use weave::plugin::{attach, AttachRequest, LinkRequest, Sides};

const USAGE: &str = "usage: create_bridge_veth NETNS_PATH [BRIDGE [HOST_VETH [IFNAME [CIDR [GATEWAY_CIDR]]]]]
  defaults: BRIDGE=wvdemo HOST_VETH=vethdemo0 IFNAME=eth0 CIDR=10.99.0.2/24 GATEWAY_CIDR=10.99.0.1/24
  needs root (CAP_NET_ADMIN); the namespace must exist (e.g. `ip netns add demo`).";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || args.iter().any(|a| a == "-h" || a == "--help") {
        eprintln!("{USAGE}");
        std::process::exit(2);
    }
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_string());
    let (netns, bridge, veth, ifname) = (
        arg(0, ""),
        arg(1, "wvdemo"),
        arg(2, "vethdemo0"),
        arg(3, "eth0"),
    );
    let (cidr, gw) = (arg(4, "10.99.0.2/24"), arg(5, "10.99.0.1/24"));
    let (Ok(cidr), Ok(gw)) = (cidr.parse(), gw.parse::<ipnet::Ipv4Net>()) else {
        eprintln!("bad CIDR\n{USAGE}");
        std::process::exit(2);
    };

    // setns is per thread: netlink work runs on a current-thread runtime.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let result: weave::Result<()> = rt.block_on(async {
        let container_ns = NetNs::open(&netns)?;
        let host_ns = NetNs::current()?;
        let host = Netlink::open()?;
        let container = Netlink::open_in(&container_ns)?;
        let br = host.ensure_bridge(&bridge, weave::DEFAULT_MTU).await?;
        host.add_address(br.index, gw).await?;
        let sides = Sides {
            host_ns: &host_ns,
            host: &host,
            container_ns: &container_ns,
            container: &container,
        };
        let req = AttachRequest {
            link: LinkRequest {
                host_veth: &veth,
                ifname: &ifname,
                mtu: br.mtu,
                bridge_index: br.index,
                hairpin: true,
            },
            address: cidr,
            gateway: Some(gw.addr()),
            routes: None,
        };
        let a = attach(&sides, &req).await?;
        println!(
            "bridge {} (index {}, mtu {}) has {gw}",
            br.name, br.index, br.mtu
        );
        if let Some(h) = &a.host {
            println!("host veth {} {} on the bridge", h.name, format_mac(&h.mac));
        }
        println!(
            "{} {} in {netns} has {cidr}",
            a.container.name,
            format_mac(&a.container.mac)
        );
        for r in &a.routes {
            println!("route {} via {:?}", r.dst, r.gw);
        }
        Ok(())
    });
    if let Err(e) = result {
        eprintln!("create_bridge_veth: {e}");
        std::process::exit(1);
    }
}
