//! A bounded run of the real-peer scale scenario (issue 15; the full 500 peers is in
//! `benches/scale.rs`): 60 mesh routers with their IPAM services in this process on
//! loopback, a sparse topology, every peer learns every other and all agree on one ring.
//! No root needed.

#[path = "mesh_sim/mod.rs"]
mod mesh_sim;

use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_real_peers_learn_each_other_and_agree_on_one_ring() {
    mesh_sim::raise_fd_limit(4096);
    let a = mesh_sim::agree(60, 2, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    println!("mesh scale: {a:?}");
    assert!(a.owners > 30, "ring split among a quorum at least: {a:?}");
    assert!(a.ring_messages > 0 && a.mesh_messages > 0, "{a:?}");
    // Every peer takes in at least one entry of every other peer, and none is taken twice
    // at one version; received counts every copy. A peer's entry goes out once its new
    // connections are established, so each peer takes in about one version of every other
    // (1.0 seen; 2.4 when every connection went out pending, then established).
    let t = a.topology;
    assert!(
        t.taken >= 60 * 59 && t.received >= t.taken + t.same,
        "{t:?}"
    );
    assert!(t.taken <= 60 * 59 * 3 / 2, "versions per peer: {t:?}");
    assert!(t.flushes > 0, "{t:?}");
}
