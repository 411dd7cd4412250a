//! weaveDNS's query path: any bytes a client sends to port 53, answered from a small zone
//! over UDP and TCP. Input: the packet as received.
//! Asserts what the server relies on: a reply decodes, carries the query's ID, is a
//! response, and fits the UDP limit it claims; a dropped packet was not a readable query.
#![no_main]

use hickory_proto::op::{Message, MessageType};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use weave::dns::answer::{fit_udp, Answerer, Verdict, EDNS_PAYLOAD};
use weave::dns::Zone;

fn fixture() -> &'static (Answerer, Zone) {
    static F: OnceLock<(Answerer, Zone)> = OnceLock::new();
    F.get_or_init(|| {
        let mut pairs = vec![
            ("web.weave.local".to_string(), "10.32.0.2".parse().unwrap()),
            ("web.weave.local".to_string(), "10.40.0.2".parse().unwrap()),
            (
                "db.fw.weave.local".to_string(),
                "10.32.0.9".parse().unwrap(),
            ),
        ];
        for i in 0..100u32 {
            pairs.push(("many.weave.local".to_string(), (0x0a30_0000 + i).into()));
        }
        let zone = Zone::from_pairs(pairs.iter().map(|(n, a)| (n.as_str(), *a))).unwrap();
        (Answerer::new("weave.local", 1).unwrap(), zone)
    })
}

fuzz_target!(|data: &[u8]| {
    let (answerer, zone) = fixture();
    for udp in [true, false] {
        match answerer.answer(data, zone, udp) {
            Verdict::Reply(bytes, _) => {
                let r = Message::from_vec(&bytes).expect("our reply decodes");
                assert_eq!(r.metadata.message_type, MessageType::Response);
                assert_eq!(&bytes[..2], &data[..2], "the reply carries the query's ID");
                if udp {
                    assert!(bytes.len() <= EDNS_PAYLOAD as usize, "{}", bytes.len());
                }
            }
            Verdict::Forward(q) => {
                assert_eq!(q.metadata.message_type, MessageType::Query);
                // What the forwarder sends back on failure, and a huge upstream answer fitted.
                let sf = answerer.servfail(&q);
                Message::from_vec(&sf).expect("servfail decodes");
                let fitted = fit_udp(&q, vec![0u8; 5000]);
                assert!(fitted.len() <= EDNS_PAYLOAD as usize);
            }
            Verdict::Drop => {}
        }
    }
});
