//! Fixtures for tests that build real hosts and containers out of network namespaces: the
//! shared kit (`weave-testkit`: namespaces `wvt-*` deleted on drop, routers and processes
//! killed on drop, plugin calls), plus what needs the `weave` library (the typed router
//! client) and the single-host `weave-net` calls these tests share.
#![allow(dead_code, unused_imports)]

pub use weave_testkit::ns::{in_ns, require_root, run_ok, Netns};
pub use weave_testkit::plugin::{cni_env, run_plugin, PluginRun};
pub use weave_testkit::router::Router;

use std::path::Path;
use std::time::Duration;

/// Polls `f` every 100 ms until it is true (`true`) or `limit` passes (`false`).
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How long the router's reaper may take to delete the veths a DEL retired (a round every
/// 100 ms to 1 s, one grace period each).
pub const REAP_LIMIT: Duration = Duration::from_secs(10);

/// The links of `ns` that a DEL retired and nobody deleted yet: host ends (`vethwepd*`) and
/// container ends (`wvdel*`).
pub fn retired(ns: &Netns) -> Vec<String> {
    ns.links()
        .into_iter()
        .filter(|l| weave::plugin::retire::is_retired(l) || l.starts_with(weave::RETIRED_IF_PREFIX))
        .collect()
}

/// Waits until the reaper has deleted every retired link in `namespaces`.
pub fn assert_reaped(namespaces: &[&Netns]) {
    assert!(
        eventually(REAP_LIMIT, || namespaces
            .iter()
            .all(|ns| retired(ns).is_empty())),
        "retired links left: {:?}",
        namespaces.iter().map(|ns| retired(ns)).collect::<Vec<_>>()
    );
}

/// The router's typed client, from a thread inside the router's host namespace.
pub trait RouterApi {
    fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(weave::api::Client) -> T + Send + 'static,
    ) -> T;
}

impl RouterApi for Router {
    fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(weave::api::Client) -> T + Send + 'static,
    ) -> T {
        let a = self.http_addr.clone();
        in_ns(&self.host, move || f(weave::api::Client::new(&a)))
    }
}

/// Path of a built plugin binary.
pub fn plugin_bin(name: &str) -> &'static str {
    match name {
        "weave-net" => env!("CARGO_BIN_EXE_weave-net"),
        "weave-ipam" => env!("CARGO_BIN_EXE_weave-ipam"),
        other => panic!("unknown plugin {other}"),
    }
}

/// Directory holding the reference plugins from Debian's containernetworking-plugins.
pub fn reference_plugin_dir() -> &'static Path {
    Path::new("/usr/lib/cni")
}

// Calls and router queries the single-host `weave-net` tests share.

/// The smallest `weave-net` network config (CNI 1.0.0, network "weave").
pub fn conf() -> String {
    serde_json::json!({"cniVersion": "1.0.0", "name": "weave", "type": "weave-net"}).to_string()
}

/// One `weave-net` call (`cmd`: ADD, DEL, CHECK) for container `id` with `eth0` in `ns`.
pub fn weave_net(cmd: &str, host: &Netns, id: &str, ns: &Netns) -> PluginRun {
    let path = ns.path();
    let env = cni_env(cmd, id, path.to_str().unwrap(), "eth0");
    run_plugin(host, plugin_bin("weave-net"), &env, &conf())
}

/// Owner id → addresses, from the router's `GET /ip`; the bridge's own address shows as
/// owner `weave:expose`.
pub fn owned(router: &Router) -> std::collections::BTreeMap<String, Vec<String>> {
    let body = router.call(|c| {
        let (code, body) = c.request("GET", "/ip", None).unwrap();
        assert_eq!(code, 200, "{body}");
        body
    });
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["owned"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| {
            let addrs = o["addrs"].as_array().unwrap().iter();
            let addrs = addrs.map(|a| a.as_str().unwrap().to_string());
            (
                o["containerid"].as_str().unwrap().to_string(),
                addrs.collect(),
            )
        })
        .collect()
}

/// The owners in [`owned`] that are containers (without `weave:expose`), sorted.
pub fn container_owners(router: &Router) -> Vec<String> {
    owned(router)
        .into_keys()
        .filter(|id| id != "weave:expose")
        .collect()
}

/// The router's `GET /cni/attachments`, as JSON objects.
pub fn attachments(router: &Router) -> Vec<serde_json::Value> {
    let body = router.call(|c| c.request("GET", "/cni/attachments", None).unwrap().1);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v.as_array().unwrap_or_else(|| panic!("{body}")).clone()
}

/// The container ids of [`attachments`], in the router's order.
pub fn attachment_ids(router: &Router) -> Vec<String> {
    attachments(router)
        .iter()
        .map(|a| a["container_id"].as_str().unwrap().to_string())
        .collect()
}

/// The host ends of the container veths `weave-net` made on `host`.
pub fn host_veths(host: &Netns) -> Vec<String> {
    host.links()
        .into_iter()
        .filter(|l| l.starts_with("vethwepl"))
        .collect()
}
