//! The Mesos operator API's event stream: RecordIO framing fed in arbitrary slices, each
//! record decoded as a `master::Event`, the body as a `master::Response`.
//! Input: one byte for the slice size, then the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use weave_mesos::proto::v1::master::{Event, Response};
use weave_mesos::recordio::{encode, Decoder};

const MAX_RECORD: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&slice, stream)) = data.split_first() else {
        return;
    };
    let slice = usize::from(slice).max(1);
    let _ = Response::decode(stream);
    let mut dec = Decoder::new(MAX_RECORD);
    let mut records = Vec::new();
    for piece in stream.chunks(slice) {
        match dec.feed(piece) {
            Ok(rs) => records.extend(rs),
            Err(_) => {
                assert!(
                    dec.feed(b"1\nx").is_err(),
                    "a failed stream must stay failed"
                );
                break;
            }
        }
    }
    for r in &records {
        assert!(r.len() <= MAX_RECORD);
        if let Ok(ev) = Event::decode(r.as_slice()) {
            // Not compared for equality: doubles may be NaN and maps re-encode in any order.
            Event::decode(ev.encode_to_vec().as_slice()).expect("re-decode our own encoding");
        }
        // Framing round trip.
        let mut d = Decoder::new(MAX_RECORD);
        assert_eq!(d.feed(&encode(r)).unwrap(), vec![r.clone()]);
        assert!(d.is_idle());
    }
});
