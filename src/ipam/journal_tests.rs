use super::*;
use crate::ipam::store::DataDir;

const ME: &str = "02:00:00:00:00:01";

fn range() -> Ipv4Net {
    "10.32.0.0/12".parse().unwrap()
}

fn cidr(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn att(c: &str, ip: &str) -> Attachment {
    Attachment {
        container_id: c.into(),
        ifname: "eth0".into(),
        host_veth: format!("vethwepl{c}"),
        mac: "0e:57:0a:20:00:01".into(),
        ips: vec![ip.into()],
        netns: format!("/var/run/netns/{c}"),
        ipam_id: c.into(),
    }
}

/// A ring state as the allocator writes it (its addresses left out, as in records).
const RING: &[u8] = br#"{"version":1,"ring":{"entries":[]},"owned":{}}"#;

fn state(ids: &[(&str, &str)], ring: &[u8]) -> Saved {
    Saved {
        ring: ring.to_vec(),
        owned: ids
            .iter()
            .map(|(id, c)| (id.to_string(), vec![cidr(c)]))
            .collect(),
        attachments: ids
            .iter()
            .map(|(id, c)| ((id.to_string(), "eth0".to_string()), att(id, c)))
            .collect(),
    }
}

fn snapshot(s: &Saved) -> Vec<u8> {
    let atts: Vec<&Attachment> = s.attachments.values().collect();
    DataDir::encode_ipam(ME, range(), &s.owned, &s.ring, &atts).unwrap()
}

/// Writes `steps` through a [`Journal`] the way the actor does; the file's bytes.
fn journal_of(steps: &[Saved]) -> (Vec<u8>, Vec<usize>) {
    let mut j = Journal::new(Vec::new());
    let mut bytes = snapshot(&steps[0]);
    j.snapshotted(steps[0].ring.clone(), bytes.len());
    let mut ends = vec![bytes.len()];
    for w in steps.windows(2) {
        let d = diff(&w[0], &w[1]);
        let line = j.record(&d).unwrap().expect("append allowed");
        bytes.extend_from_slice(&line);
        j.appended(d, line.len());
        assert_eq!(
            j.ring(),
            w[1].ring.as_slice(),
            "bookkeeping follows the ring"
        );
        ends.push(bytes.len());
    }
    (bytes, ends)
}

fn replayed_state(bytes: &[u8]) -> (Saved, Replayed) {
    let r = replay(bytes, "ipam.json").unwrap();
    let mut alloc = r.file.allocator.clone().unwrap();
    let owned_in_alloc = alloc.as_object_mut().unwrap().remove("owned");
    let s = Saved {
        ring: serde_json::to_vec(&alloc).unwrap(),
        owned: r.file.owned.clone(),
        attachments: r
            .file
            .attachments
            .iter()
            .map(|a| ((a.container_id.clone(), a.ifname.clone()), a.clone()))
            .collect(),
    };
    if r.records > 0 {
        // The allocator's own address lists are rebuilt from the ids' addresses.
        let want: BTreeMap<String, Vec<u32>> = s
            .owned
            .iter()
            .map(|(id, c)| (id.clone(), c.iter().map(|c| u32::from(c.addr())).collect()))
            .collect();
        assert_eq!(owned_in_alloc.unwrap(), serde_json::to_value(want).unwrap());
    }
    (s, r)
}

fn ring_without_owned(ring: &[u8]) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(ring).unwrap();
    v.as_object_mut().unwrap().remove("owned");
    serde_json::to_vec(&v).unwrap()
}

fn steps() -> Vec<Saved> {
    let ring2 = br#"{"version":1,"ring":{"entries":[1]},"owned":{}}"#;
    vec![
        state(&[("a", "10.32.0.1/12")], RING),
        state(&[("a", "10.32.0.1/12"), ("b", "10.32.0.2/12")], ring2),
        state(&[("b", "10.32.0.2/12")], ring2),
        state(&[("b", "10.32.0.2/12"), ("c", "10.32.0.3/12")], RING),
    ]
}

#[test]
fn crc32_matches_the_standard_check_value() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    assert_eq!(crc32(b""), 0);
}

#[test]
fn replay_rebuilds_every_step() {
    let steps = steps();
    let (bytes, ends) = journal_of(&steps);
    let text = String::from_utf8(bytes.clone()).unwrap();
    println!(
        "{} lines, {} bytes:\n{text}",
        text.lines().count(),
        bytes.len()
    );
    assert_eq!(
        text.lines().count(),
        steps.len(),
        "one snapshot, one line per change"
    );
    for (i, end) in ends.iter().enumerate() {
        let (got, r) = replayed_state(&bytes[..*end]);
        assert_eq!(r.records, i);
        assert!(!r.torn);
        assert_eq!(got.owned, steps[i].owned, "step {i}");
        assert_eq!(got.attachments, steps[i].attachments, "step {i}");
        assert_eq!(got.ring, ring_without_owned(&steps[i].ring), "step {i}");
    }
}

#[test]
fn a_torn_last_record_is_dropped_at_every_cut() {
    let steps = steps();
    let (bytes, ends) = journal_of(&steps);
    let (last_start, last_end) = (ends[ends.len() - 2], ends[ends.len() - 1]);
    let mut cuts = 0;
    for cut in last_start + 1..last_end {
        let (got, r) = replayed_state(&bytes[..cut]);
        assert!(r.torn, "cut at {cut} not seen as torn");
        assert_eq!(r.records, steps.len() - 2);
        assert_eq!(got.owned, steps[steps.len() - 2].owned, "cut at {cut}");
        cuts += 1;
    }
    // Zeros where the record should be (a size that reached the disk before the data).
    let mut zeroed = bytes[..last_start].to_vec();
    zeroed.extend(std::iter::repeat_n(0u8, last_end - last_start));
    let (got, r) = replayed_state(&zeroed);
    assert!(r.torn);
    assert_eq!(got.owned, steps[steps.len() - 2].owned);
    // A complete last line with a flipped bit fails its checksum: dropped too.
    let mut flipped = bytes.clone();
    flipped[last_end - 5] ^= 0x01;
    let (got, r) = replayed_state(&flipped);
    assert!(r.torn);
    assert_eq!(got.owned, steps[steps.len() - 2].owned);
    println!("{cuts} cuts inside the last record, all dropped cleanly");
}

#[test]
fn a_bad_record_followed_by_more_is_refused() {
    let (mut bytes, ends) = journal_of(&steps());
    // Change an address in the first record: still valid JSON, wrong checksum.
    let at = bytes[ends[0]..]
        .windows(9)
        .position(|w| w == b"10.32.0.2")
        .unwrap();
    bytes[ends[0] + at + 8] = b'7';
    let e = replay(&bytes, "ipam.json").unwrap_err().to_string();
    assert!(
        e.starts_with("load ipam.json: corrupt record on line 2 (checksum"),
        "{e}"
    );
}

#[test]
fn a_file_without_records_loads_as_before() {
    let s = state(&[("a", "10.32.0.1/12")], RING);
    let mut bytes = snapshot(&s);
    // Files written before the journal had no trailing newline.
    assert_eq!(bytes.pop(), Some(b'\n'));
    let (got, r) = replayed_state(&bytes);
    assert_eq!((r.records, r.torn), (0, false));
    assert_eq!(got.owned, s.owned);
    assert_eq!(got.ring, ring_without_owned(RING));
}

#[test]
fn first_write_after_start_and_after_a_failed_append_is_a_snapshot() {
    let s = steps();
    let mut j = Journal::new(s[0].ring.clone());
    let d = diff(&s[0], &s[1]);
    assert!(!d.is_empty());
    assert!(j.record(&d).unwrap().is_none(), "no snapshot of ours yet");
    j.snapshotted(s[1].ring.clone(), 100);
    let d = j.delta(&s[1].ring, [], []);
    assert!(d.is_empty(), "nothing changed");
    let d = diff(&s[1], &s[2]);
    assert_eq!(d.owned.get("a"), Some(&None), "removal recorded");
    assert!(d.ring.is_none(), "unchanged ring left out");
    assert!(j.record(&d).unwrap().is_some());
    j.append_failed();
    assert!(
        j.record(&d).unwrap().is_none(),
        "never append after a failed append"
    );
}

#[test]
fn records_are_compacted_into_a_snapshot() {
    let s = steps();
    let mut j = Journal::new(Vec::new());
    j.snapshotted(s[0].ring.clone(), 1000);
    let mut appended = 0;
    let mut flip = false;
    let mut now = &s[0];
    loop {
        let next = &s[if flip { 1 } else { 0 }];
        flip = !flip;
        let d = diff(now, next);
        now = next;
        match j.record(&d).unwrap() {
            Some(line) => {
                appended += line.len() as u64;
                j.appended(d, line.len());
            }
            None => break,
        }
        assert!(appended <= COMPACT_MIN_BYTES, "limit overrun");
    }
    println!("snapshot due after {appended} bytes of records");
    assert!(appended > COMPACT_MIN_BYTES - 1000);
    j.snapshotted(s[0].ring.clone(), 1000);
    let d = diff(&s[0], &s[1]);
    assert!(j.record(&d).unwrap().is_some(), "appending again after it");
}

#[test]
fn appends_go_to_the_file_and_load_replays_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dd = DataDir::open(tmp.path()).unwrap();
    let steps = steps();
    let (bytes, ends) = journal_of(&steps);
    dd.write_ipam(&bytes[..ends[0]]).unwrap();
    for w in ends.windows(2) {
        append(&dd.ipam_path(), &bytes[w[0]..w[1]]).unwrap();
    }
    assert_eq!(std::fs::read(dd.ipam_path()).unwrap(), bytes);
    let (p, why) = dd.load_ipam(ME, range()).unwrap();
    assert!(why.is_none());
    assert_eq!(p.owned, steps[steps.len() - 1].owned);
    // Appending needs the file: a missing one is an error naming it.
    let e = append(&tmp.path().join("ipam.json.gone"), b"x\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("append to ") && e.contains("ipam.json.gone"),
        "{e}"
    );
}

/// The router's IPAM actor over a real file: thousands of allocations compact the records
/// into snapshots, and a reload finds every one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_actor_appends_compacts_and_reloads() {
    use crate::ipam::core::{universe_of, Core};
    use crate::ipam::ring::{Allocator, InitMode, PeerName};
    use crate::ipam::{IpamHandle, IpamOptions};
    let tmp = tempfile::tempdir().unwrap();
    let dd = DataDir::open(tmp.path()).unwrap();
    let me: PeerName = ME.parse().unwrap();
    let mode = InitMode::consensus(1);
    let alloc = Allocator::new(me, universe_of(range()).unwrap(), mode.clone());
    let core = Core::new(alloc, range(), range(), &BTreeMap::new(), Vec::new());
    let opts = IpamOptions {
        mode,
        ..IpamOptions::default()
    };
    let h = IpamHandle::spawn(core, dd.clone(), ME.into(), None, opts);
    let first = h.allocate("c0", None).await.unwrap();
    let lines = || {
        std::fs::read_to_string(dd.ipam_path())
            .unwrap()
            .lines()
            .count()
    };
    assert_eq!(lines(), 1, "the first write after start is a snapshot");
    h.allocate("c1", None).await.unwrap();
    assert_eq!(lines(), 2, "then records are appended");
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..500 {
                h.allocate(&format!("t{t}-{i}"), None).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let took = started.elapsed();
    h.free("c1").await.unwrap();
    let bytes = std::fs::metadata(dd.ipam_path()).unwrap().len();
    println!(
        "4000 allocations in {took:?}; ipam.json now {} lines, {bytes} bytes",
        lines()
    );
    assert!(lines() < 4000, "records were compacted into a snapshot");
    let (p, _) = dd.load_ipam(ME, range()).unwrap();
    assert_eq!(p.owned.len(), 4001);
    assert_eq!(p.owned["c0"], vec![first]);
    assert!(!p.owned.contains_key("c1"));
    assert_eq!(p.owned, h.owned().await.unwrap());
    let mut seen = std::collections::HashSet::new();
    for cidrs in p.owned.values() {
        assert!(cidrs.iter().all(|c| seen.insert(c.addr())), "duplicate");
    }
}
