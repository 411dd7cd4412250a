//! Containers that went away while the router was down (issue 6, Mesos faults): Mesos does
//! not retry a DEL that failed, and a netns destroyed while the router was dead takes its
//! veth pair with it. The router's sweep releases those containers' addresses and records
//! once their host veth has been missing on two sweeps; live containers keep theirs.
//! Real `weaver` (sweep every 300 ms), real `weave-net`, real namespaces.

mod common;
use common::*;
use std::time::{Duration, Instant};

const SWEEP: (&str, &str) = ("WEAVE_SWEEP_INTERVAL_MS", "300");

/// The container owners in the router's `GET /ip` (not the bridge's) and the attachments' container IDs.
fn state(router: &Router) -> (Vec<String>, Vec<String>) {
    (container_owners(router), attachment_ids(router))
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn sweep_releases_containers_that_vanished_while_the_router_was_down_1() {
    let host = Netns::new("sw");
    let mut router = Router::start_with_env(&host, &[], &[SWEEP]);
    let keep = Netns::new("swk");
    let gone = Netns::new("swg");
    let failed_del = Netns::new("swd");
    for (id, ns) in [("keep", &keep), ("gone", &gone), ("faildel", &failed_del)] {
        let r = weave_net("ADD", &host, id, ns);
        assert_eq!(r.code, 0, "ADD {id}: {r:?}");
    }
    let (owners, atts) = state(&router);
    assert_eq!(owners.len(), 3, "{owners:?}");
    assert_eq!(atts.len(), 3, "{atts:?}");

    // The router dies; meanwhile one container is destroyed without any DEL, and one gets a
    // DEL that fails (as Mesos sends it: no retry follows) before its netns goes too.
    router.kill9();
    drop(gone);
    let r = weave_net("DEL", &host, "faildel", &failed_del);
    assert_eq!(r.code, 1, "DEL with the router down must fail: {r:?}");
    assert_eq!(r.json()["code"], 11, "{r:?}");
    drop(failed_del);

    router.spawn();
    let deadline = Instant::now() + Duration::from_secs(15);
    let (owners, atts) = loop {
        let s = state(&router);
        if s.0 == ["keep"] && s.1 == ["keep"] {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "sweep did not release the vanished containers in 15 s: {s:?}\n{}",
            router.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    println!("after the sweep: owners {owners:?}, attachments {atts:?}");
    let log = router.log();
    for id in ["gone", "faildel"] {
        assert!(
            log.contains(&format!("container \"{id}\" interface \"eth0\" is gone")),
            "the release of {id} is logged:\n{log}"
        );
    }
    // The live container keeps its interface and address through further sweeps.
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(state(&router).0, ["keep"]);
    assert_eq!(keep.addrs("eth0").len(), 1, "{:?}", keep.links());
    // Its freed addresses are handed out again, the kept one is not.
    let again = Netns::new("swa");
    let r = weave_net("ADD", &host, "again", &again);
    assert_eq!(r.code, 0, "{r:?}");
    let new_addr = r.json()["ips"][0]["address"].as_str().unwrap().to_string();
    assert_ne!(vec![new_addr], keep.addrs("eth0"));
}
