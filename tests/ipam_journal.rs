//! The real `weaver` writes `ipam.json` as a snapshot plus appended records: killed with
//! `kill -9` in the middle of an append (a torn last record), it restarts with every
//! acknowledged allocation and hands none of them out again.

mod common;

use common::{Netns, Router, RouterApi};

fn post(r: &Router, path: &str) -> String {
    let p = path.to_string();
    let (code, body) = r.call(move |c| c.request("POST", &p, None).unwrap());
    assert_eq!(code, 200, "POST {path}: {body}");
    body
}

fn all(r: &Router) -> String {
    r.call(|c| c.request("GET", "/ip", None).unwrap()).1
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn torn_record_after_kill9_is_dropped_and_nothing_is_handed_out_twice() {
    let ns = Netns::new("jr");
    let mut r = Router::start(&ns, &[]);
    let file = r.datadir.join("ipam.json");
    let mut acked = Vec::new();
    for i in 0..30 {
        acked.push(post(&r, &format!("/ip/c{i}")));
    }
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    println!(
        "after 30 allocations: {} lines, {} bytes",
        lines.len(),
        text.len()
    );
    assert!(lines.len() > 1, "records are appended, not whole rewrites");
    for a in &acked {
        assert!(text.contains(a.as_str()), "acknowledged {a} is not on disk");
    }
    let before = all(&r);

    // Die in the middle of appending a record: half a line at the end of the file.
    r.kill9();
    let last = lines.last().unwrap();
    let torn = format!(
        "{{\"crc\":1,\"rec\":{{\"owned\":{{\"ghost\":[\"10.32.0.{}/12\"]}}",
        acked.len() + 1
    );
    assert!(!torn.ends_with('\n') && last.starts_with("{\"crc\":"));
    std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .and_then(|mut f| std::io::Write::write_all(&mut f, torn.as_bytes()))
        .unwrap();
    r.spawn();
    assert_eq!(all(&r), before, "every acknowledged allocation is back");
    assert!(
        r.log().contains("dropped a torn last record"),
        "log:\n{}",
        r.log()
    );
    let fresh = post(&r, "/ip/after");
    assert!(!acked.contains(&fresh), "{fresh} handed out twice");
    assert_eq!(fresh, "10.32.0.31/12");
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        text.lines().count(),
        1,
        "the first write after a start is a snapshot, which drops the torn tail"
    );
    assert!(!text.contains("ghost"));
    post(&r, "/ip/after2");

    r.kill9();
    r.spawn();
    let now = all(&r);
    for a in acked.iter().chain([&fresh]) {
        assert!(now.contains(a.as_str()), "{a} lost: {now}");
    }
    assert!(now.contains("after2"));
}
