//! Rolling upgrade from Weave Net: our plugin meets a router without our `/cni/attachments`
//! endpoint (Weave Net 2.8.1's router answers 404 there). The router here is a STAND-IN for
//! Weave Net's: our real router behind a proxy that answers `/cni/attachments` with Go's
//! `404 page not found` and forwards everything else. ADD with a delegated `ipam.type`, GC and
//! DEL must work, with a warning on stderr. One simulated host: `_1`.

mod common;
use common::*;
use serde_json::json;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;

const STAND_IN_ADDR: &str = "127.0.0.1:6790";

/// Serves the stand-in on `STAND_IN_ADDR` inside namespace `host`, forwarding to `router`.
fn spawn_stand_in(host: &str, router: String) {
    let file = std::fs::File::open(format!("/var/run/netns/{host}")).expect("open netns");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let listener = TcpListener::bind(STAND_IN_ADDR).expect("bind the stand-in");
        ready_tx.send(()).unwrap();
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let _ = serve(conn, &router);
        }
    });
    ready_rx.recv().expect("stand-in started");
}

/// One request per connection: 404 for `/cni/attachments*`, else the real router's answer.
fn serve(mut conn: TcpStream, router: &str) -> std::io::Result<()> {
    conn.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut head = Vec::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("connection:") {
            continue;
        }
        if line == "\r\n" {
            break;
        }
        head.push(line);
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let path = head[0].split_whitespace().nth(1).unwrap_or("").to_string();
    if path.starts_with("/cni/attachments") {
        let text = "404 page not found\n";
        write!(
            conn,
            "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\n\
             X-Content-Type-Options: nosniff\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
            text.len()
        )?;
        return Ok(());
    }
    let mut upstream = TcpStream::connect(router)?;
    for line in &head {
        upstream.write_all(line.as_bytes())?;
    }
    upstream.write_all(b"Connection: close\r\n\r\n")?;
    upstream.write_all(&body)?;
    let mut answer = Vec::new();
    upstream.read_to_end(&mut answer)?;
    conn.write_all(&answer)?;
    Ok(())
}

fn conf(dir: &std::path::Path, version: &str) -> serde_json::Value {
    json!({"cniVersion": version, "name": "weave", "type": "weave-net",
        "ipam": {"type": "host-local", "subnet": "10.44.0.0/24",
                 "dataDir": dir.to_str().unwrap()}})
}

fn call(host: &Netns, cmd: &str, id: &str, ns: Option<&Netns>, stdin: &str) -> PluginRun {
    let path = ns
        .map(|n| n.path().to_str().unwrap().to_string())
        .unwrap_or_default();
    let mut env = cni_env(cmd, id, &path, "eth0");
    env.push(("WEAVE_HTTP_ADDR", STAND_IN_ADDR));
    run_plugin(host, plugin_bin("weave-net"), &env, stdin)
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn delegated_ipam_add_gc_del_against_a_router_without_attachments_1() {
    require_root();
    let host = Netns::new("wnf");
    let router = Router::start(&host, &[]);
    spawn_stand_in(&host.name, router.http_addr.clone());
    let dir = tempfile::tempdir().unwrap();
    let c1 = Netns::new("wnf-c1");

    // The stand-in really lacks the endpoint (what Weave Net's router answers).
    let direct = in_ns(&host.name, || {
        weave::api::Client::new(STAND_IN_ADDR).request("GET", "/cni/attachments", None)
    })
    .unwrap();
    assert_eq!(direct.0, 404, "{direct:?}");

    let add = call(
        &host,
        "ADD",
        "wnf-1",
        Some(&c1),
        &conf(dir.path(), "1.0.0").to_string(),
    );
    assert_eq!(add.code, 0, "ADD failed: {} {}", add.stdout, add.stderr);
    let ip = add.address().unwrap();
    assert!(
        ip.to_string().starts_with("10.44.0."),
        "host-local address expected, got {ip}"
    );
    assert!(
        add.stderr.contains("router has no /cni/attachments")
            && add.stderr.contains("wnf-1/eth0 not recorded"),
        "ADD must warn on stderr: {:?}",
        add.stderr
    );
    let have = c1.sh("ip -o -4 addr show dev eth0");
    assert!(have.contains(&ip.to_string()), "{have}");

    // GC (CNI 1.1) without the router's list: succeeds, says so, keeps the valid attachment.
    let mut gc = conf(dir.path(), "1.1.0");
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "wnf-1", "ifname": "eth0"}]);
    let r = call(&host, "GC", "", None, &gc.to_string());
    assert_eq!(r.code, 0, "GC failed: {} {}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("GC without the router's attachment list"),
        "GC must warn on stderr: {:?}",
        r.stderr
    );
    assert!(c1
        .sh("ip -o -4 addr show dev eth0")
        .contains(&ip.to_string()));

    let del = call(
        &host,
        "DEL",
        "wnf-1",
        Some(&c1),
        &conf(dir.path(), "1.0.0").to_string(),
    );
    assert_eq!(del.code, 0, "DEL failed: {} {}", del.stdout, del.stderr);
    assert_eq!(
        c1.sh("ip -o link show dev eth0 2>/dev/null | wc -l").trim(),
        "0"
    );
}
