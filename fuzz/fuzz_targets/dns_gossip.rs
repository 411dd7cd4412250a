//! weaveDNS gossip from a mesh peer: a message decoded and merged into a store that holds
//! records of its own. Input: the gossip payload.
//! Asserts: merging is idempotent (the same message again changes nothing), our own live
//! records survive whatever others say about us (we restate them), and every record kept is
//! valid.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weave::dns::{wire, RecordKey, Store};
use weave::mesh::PeerName;

fuzz_target!(|data: &[u8]| {
    let Ok(updates) = wire::decode(data) else {
        return;
    };
    let me = PeerName::from_u64(0x0200_0000_0001).unwrap();
    let mut s = Store::new(me);
    let key = RecordKey::new("web.weave.local", "c1", "10.32.0.2".parse().unwrap()).unwrap();
    s.add(key, 1_000).unwrap();
    for u in &updates {
        s.merge(u, 2_000);
    }
    let before = s.records();
    for u in &updates {
        let m = s.merge(u, 3_000);
        assert!(
            !m.changed,
            "merging the same facts twice changed the records"
        );
    }
    let after = s.records();
    let strip = |v: &[weave::dns::Record]| {
        v.iter()
            .map(|r| (r.name.clone(), r.ip, r.container_id.clone(), r.owner))
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&before), strip(&after));
    assert!(s
        .lookup("web.weave.local")
        .contains(&"10.32.0.2".parse().unwrap()));
    for r in &after {
        assert!(RecordKey::new(&r.name, &r.container_id, r.ip).is_ok());
        assert!(r.name.ends_with('.'));
    }
    // Re-encoding what we hold decodes again.
    for o in s.other_owners() {
        let u = s.relay(o).unwrap();
        for m in wire::encode(&[u], 1 << 16) {
            wire::decode(&m).expect("our own encoding decodes");
        }
    }
});
