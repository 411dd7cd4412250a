//! ADD, DEL, ADD of the same container and interface in quick succession (issue 15), on one
//! simulated host with the real router and plugin, one container at a time and 32 at once:
//! exactly one working veth and one address per container, and nothing left after the last
//! DEL. DEL retires the veth pair (container end down and renamed `wvdel*`, host end
//! `vethwepd<slot>` in the retired group) and the router's reaper deletes the group; a DEL
//! that finds every slot taken deletes the pair itself.

mod common;
use common::*;
use std::collections::BTreeSet;
use std::sync::Arc;

/// ADD, DEL, ADD of `id`/eth0 in `ns`, back to back; returns the second ADD's address.
fn add_del_add(host: &Netns, id: &str, ns: &Netns) -> Result<String, String> {
    let mut address = String::new();
    for cmd in ["ADD", "DEL", "ADD"] {
        let r = weave_net(cmd, host, id, ns);
        if r.code != 0 {
            return Err(format!("{cmd} {id}: {r:?}"));
        }
        if cmd == "ADD" {
            address = r.json()["ips"][0]["address"]
                .as_str()
                .unwrap_or_default()
                .to_string();
        }
    }
    Ok(address)
}

/// Exactly one working veth and one address for `id`: the container has `lo` and `eth0`
/// only, `eth0` holds `address` alone and reaches the bridge, the host has its one host end
/// on the bridge, and the router owns `address` for `id`.
fn assert_one_working_attachment(
    host: &Netns,
    router: &Router,
    id: &str,
    ns: &Netns,
    address: &str,
) {
    let links: BTreeSet<String> = ns.links().into_iter().collect();
    let want: BTreeSet<String> = ["lo".to_string(), "eth0".to_string()].into();
    assert_eq!(links, want, "{id}: container links");
    assert_eq!(
        ns.addrs("eth0"),
        vec![address.to_string()],
        "{id}: eth0 addresses"
    );
    let veth = weave::plugin::host_veth_name(id, "eth0");
    let show = host.sh(&format!("ip -o link show dev {veth}"));
    assert!(show.contains("master weave"), "{id}: {show}");
    let gateway = host.addrs("weave");
    let gw = gateway[0].split('/').next().unwrap();
    ns.check_sh(&format!("ping -c 1 -W 2 {gw}"))
        .unwrap_or_else(|e| panic!("{id}: eth0 does not reach the bridge: {e}"));
    let owned = owned(router);
    assert_eq!(
        owned.get(id),
        Some(&vec![address.to_string()]),
        "{id}: router owns {owned:?}"
    );
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn add_del_add_in_quick_succession_1() {
    let host = Netns::new("dq");
    let router = Router::start(&host, &[]);
    let c = Netns::new("dqc");
    let mut address = String::new();
    for round in 0..5 {
        let first =
            add_del_add(&host, "quick", &c).unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert!(!first.is_empty(), "round {round}: ADD gave no address");
        // A DEL right before an ADD of the same container and interface.
        let r = weave_net("DEL", &host, "quick", &c);
        assert_eq!(r.code, 0, "{r:?}");
        let r = weave_net("ADD", &host, "quick", &c);
        assert_eq!(r.code, 0, "{r:?}");
        address = r.json()["ips"][0]["address"].as_str().unwrap().to_string();
    }
    assert_reaped(&[&host, &c]);
    assert_one_working_attachment(&host, &router, "quick", &c, &address);
    assert_eq!(host_veths(&host).len(), 1, "{:?}", host_veths(&host));
    let r = weave_net("DEL", &host, "quick", &c);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(host_veths(&host).is_empty(), "{:?}", host_veths(&host));
    assert_reaped(&[&host, &c]);
    assert_eq!(c.links(), vec!["lo".to_string()]);
    assert!(container_owners(&router).is_empty(), "{:?}", owned(&router));
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn add_del_add_32_concurrent_1() {
    const N: usize = 32;
    let host = Arc::new(Netns::new("dc"));
    let router = Router::start(&host, &[]);
    let containers: Vec<Arc<Netns>> = (0..N).map(|_| Arc::new(Netns::new("dcc"))).collect();
    let threads: Vec<_> = containers
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let (host, c) = (host.clone(), c.clone());
            std::thread::spawn(move || add_del_add(&host, &format!("conc-{i}"), &c))
        })
        .collect();
    let addresses: Vec<String> = threads
        .into_iter()
        .map(|t| {
            t.join()
                .expect("plugin thread")
                .unwrap_or_else(|e| panic!("{e}"))
        })
        .collect();
    let unique: BTreeSet<&String> = addresses.iter().collect();
    assert_eq!(unique.len(), N, "addresses not unique: {addresses:?}");
    let all: Vec<&Netns> = std::iter::once(&*host)
        .chain(containers.iter().map(|c| &**c))
        .collect();
    assert_reaped(&all);
    for (i, c) in containers.iter().enumerate() {
        assert_one_working_attachment(&host, &router, &format!("conc-{i}"), c, &addresses[i]);
    }
    assert_eq!(host_veths(&host).len(), N, "{:?}", host_veths(&host));
    assert_eq!(attachments(&router).len(), N);

    // And all 32 DELs at once leave nothing behind.
    let threads: Vec<_> = containers
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let (host, c) = (host.clone(), c.clone());
            std::thread::spawn(move || weave_net("DEL", &host, &format!("conc-{i}"), &c))
        })
        .collect();
    for t in threads {
        let r = t.join().expect("plugin thread");
        assert_eq!(r.code, 0, "{r:?}");
    }
    assert!(host_veths(&host).is_empty(), "{:?}", host_veths(&host));
    assert_reaped(&all);
    for c in &containers {
        assert_eq!(c.links(), vec!["lo".to_string()]);
    }
    assert!(container_owners(&router).is_empty(), "{:?}", owned(&router));
    assert!(attachments(&router).is_empty());
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn router_start_reaps_what_a_killed_router_left_1() {
    let host = Netns::new("dr");
    // A pair retired while no router ran: in the group, under a slot name.
    let group = weave::RETIRED_GROUP;
    host.sh(&format!(
        "ip link add vethwepd05 group {group} type veth peer name wvt-dr-peer"
    ));
    let _router = Router::start(&host, &[]);
    assert_reaped(&[&host]);
    assert!(!host.links().contains(&"wvt-dr-peer".to_string()));
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn del_with_every_slot_taken_deletes_the_pair_itself_1() {
    let host = Netns::new("df");
    let router = Router::start(&host, &[]);
    // Every slot name taken by links outside the group (the reaper leaves them alone): the
    // backlog looks full, so DEL must delete before it returns.
    for slot in 0..weave::RETIRED_SLOTS {
        host.sh(&format!("ip link add vethwepd{slot:02} type bridge"));
    }
    let c = Netns::new("dfc");
    for round in 0..3 {
        let r = weave_net("ADD", &host, "full", &c);
        assert_eq!(r.code, 0, "round {round}: {r:?}");
        let r = weave_net("DEL", &host, "full", &c);
        assert_eq!(r.code, 0, "round {round}: {r:?}");
        // Right after DEL, no waiting: the pair is gone from both sides.
        assert!(host_veths(&host).is_empty(), "{:?}", host_veths(&host));
        assert_eq!(c.links(), vec!["lo".to_string()], "round {round}");
        assert_eq!(retired(&host).len(), weave::RETIRED_SLOTS as usize);
    }
    assert!(container_owners(&router).is_empty(), "{:?}", owned(&router));
}
