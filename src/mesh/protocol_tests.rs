use super::*;
use rand::{Rng, SeedableRng};
use std::net::{IpAddr, Ipv6Addr};

fn name(n: u64) -> PeerName {
    PeerName::from_u64(n).unwrap()
}

fn hello() -> Hello {
    Hello {
        name: name(0x0a0b0c0d0e0f),
        nickname: "host-1".into(),
        uid: 1234567890123,
        conn_id: 42,
        listen_port: 6783,
        encrypted: true,
    }
}

fn sample_messages() -> Vec<Message> {
    vec![
        Message::Heartbeat,
        Message::Goodbye,
        Message::Topology(Entries::default()),
        Message::Topology(Entries::from(vec![
            PeerInfo {
                name: name(1),
                nickname: "a".into(),
                uid: 7,
                version: 9,
                connections: vec![
                    ConnectionInfo {
                        peer: name(2),
                        addr: "192.0.2.2:6783".parse().unwrap(),
                        outbound: true,
                        established: false,
                    },
                    ConnectionInfo {
                        peer: name(3),
                        addr: "[2001:db8::3]:7000".parse().unwrap(),
                        outbound: false,
                        established: true,
                    },
                ],
            },
            PeerInfo {
                name: name(2),
                nickname: "".into(),
                uid: u64::MAX,
                version: 0,
                connections: vec![],
            },
        ])),
        Message::Broadcast {
            origin: name(5),
            origin_uid: 3,
            seq: 99,
            channel: "ipam".into(),
            payload: vec![1, 2, 3],
        },
        Message::Unicast {
            origin: name(5),
            dest: name(6),
            ttl: 3,
            channel: "data-plane.v1".into(),
            payload: vec![],
        },
    ]
}

#[test]
fn header_negotiates_the_highest_common_version() {
    assert_eq!(decode_header(&encode_header()), Ok(PROTOCOL_MAX_VERSION));
    assert_eq!(decode_header(b"weave\x01\x01"), Ok(1));
    assert_eq!(decode_header(b"weave\x01\x09"), Ok(2));
    assert_eq!(decode_header(b"GET / H"), Err(ProtocolError::BadMagic));
    assert_eq!(
        decode_header(b"weave\x03\x04"),
        Err(ProtocolError::VersionMismatch { theirs: (3, 4) })
    );
    assert!(decode_header(b"weave\x02\x01").is_err());
    assert!(decode_header(b"weave\x00\x00").is_err());
    assert_eq!(
        decode_header(b"weav"),
        Err(ProtocolError::Truncated("header"))
    );
}

#[test]
fn hello_round_trips_and_validates_every_field() {
    let h = hello();
    assert_eq!(Hello::decode(&h.encode()), Ok(h.clone()));
    let plain = Hello {
        encrypted: false,
        nickname: String::new(),
        ..h.clone()
    };
    assert_eq!(Hello::decode(&plain.encode()), Ok(plain));

    // Builds a hello with one field replaced (or removed with None).
    let with = |key: &str, value: Option<&str>| {
        let mut out = Vec::new();
        for (k, v) in [
            ("Name", "0a:0b:0c:0d:0e:0f"),
            ("NickName", "n"),
            ("UID", "1"),
            ("ConnID", "2"),
            ("ListenPort", "6783"),
            ("Encryption", "none"),
        ] {
            let v = if k == key { value } else { Some(v) };
            if let Some(v) = v {
                out.push(k.len() as u8);
                out.extend_from_slice(k.as_bytes());
                out.extend_from_slice(&(v.len() as u16).to_be_bytes());
                out.extend_from_slice(v.as_bytes());
            }
        }
        Hello::decode(&out)
    };
    assert!(with("X", None).is_ok());
    for (k, v) in [
        ("Name", Some("zz:0b:0c:0d:0e:0f")),
        ("Name", Some("0a:0b:0c:0d:0e")),
        ("Name", None),
        ("NickName", Some("a\nb")),
        ("UID", Some("-1")),
        ("UID", Some("18446744073709551616")),
        ("ConnID", Some("")),
        ("ListenPort", Some("0")),
        ("ListenPort", Some("65536")),
        ("Encryption", Some("rot13")),
        ("Encryption", None),
    ] {
        assert!(with(k, v).is_err(), "{k}={v:?} accepted");
    }
    let long = "x".repeat(300);
    assert!(with("NickName", Some(&long)).is_err());

    let mut dup = h.encode();
    dup.extend_from_slice(&h.encode()[..]);
    assert!(Hello::decode(&dup)
        .unwrap_err()
        .to_string()
        .contains("duplicate"));
    let mut bad_utf8 = vec![1, b'Z', 0, 2, 0xff, 0xfe];
    bad_utf8.extend_from_slice(&h.encode());
    assert!(Hello::decode(&bad_utf8).is_err());
}

#[test]
fn messages_round_trip() {
    for m in sample_messages() {
        assert_eq!(Message::decode(&m.encode()), Ok(m.clone()), "{m:?}");
    }
}

#[test]
fn message_validation() {
    assert_eq!(
        Message::decode(&[]),
        Err(ProtocolError::Truncated("message type"))
    );
    assert_eq!(Message::decode(&[0]), Err(ProtocolError::UnknownMessage(0)));
    assert_eq!(
        Message::decode(&[99]),
        Err(ProtocolError::UnknownMessage(99))
    );
    assert_eq!(
        Message::decode(&[TAG_HEARTBEAT, 0]),
        Err(ProtocolError::TrailingBytes("message"))
    );
    // A count the bytes cannot hold is refused before anything is allocated.
    assert!(Message::decode(&[TAG_TOPOLOGY, 0xff, 0xff]).is_err());
    let bad_channel = Message::Broadcast {
        origin: name(1),
        origin_uid: 1,
        seq: 1,
        channel: "no spaces".into(),
        payload: vec![],
    };
    assert!(Message::decode(&bad_channel.encode()).is_err());
    let empty_channel = Message::Unicast {
        origin: name(1),
        dest: name(2),
        ttl: 1,
        channel: String::new(),
        payload: vec![1],
    };
    assert!(Message::decode(&empty_channel.encode()).is_err());
    // Unknown address family and unknown connection flags.
    let topo = sample_messages()[3].encode();
    let family_at = 1 + 2 + 6 + 2 + 8 + 8 + 2 + 6;
    assert_eq!(topo[family_at], 4);
    let mut t = topo.clone();
    t[family_at] = 5;
    assert!(Message::decode(&t).is_err());
    let flags_at = family_at + 1 + 4 + 2;
    let mut t = topo.clone();
    t[flags_at] = 4;
    assert!(Message::decode(&t).is_err());
}

#[test]
fn topology_entries_are_checked_whole_on_arrival_and_decoded_one_by_one() {
    let Message::Topology(sent) = &sample_messages()[3] else {
        panic!("sample 3 is a topology");
    };
    let peers = sent.to_peers().unwrap();
    let b = sample_messages()[3].encode();
    let Ok(Message::Topology(got)) = Message::decode(&b) else {
        panic!("decode the sample topology");
    };
    assert_eq!(got.len(), 2);
    for (e, p) in got.iter().zip(&peers) {
        assert_eq!((e.name, e.version), (p.name, p.version));
        assert_eq!(e.decode().as_ref(), Ok(p));
        assert_eq!(e.bytes(), &encode_entry(p)[..]);
    }
    // A fault in the last entry refuses the whole message: nothing is left to fail later,
    // when an entry is decoded because it is news.
    // The second entry's nickname (empty) made one byte long, that byte given.
    let with_nickname_byte = |byte: u8| {
        let mut second = encode_entry(&peers[1]);
        second[6] = 1;
        second.insert(7, byte);
        let mut m = b[..3].to_vec();
        m.extend_from_slice(&encode_entry(&peers[0]));
        m.extend_from_slice(&second);
        Message::decode(&m)
    };
    assert!(matches!(with_nickname_byte(b'x'), Ok(Message::Topology(_))));
    assert_eq!(
        with_nickname_byte(0xff),
        Err(ProtocolError::Invalid("nickname is not UTF-8".into()))
    );
    assert_eq!(
        with_nickname_byte(b'\n'),
        Err(ProtocolError::Invalid("invalid nickname \"\\n\"".into()))
    );
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    for m in sample_messages() {
        let b = m.encode();
        for cut in 0..b.len() {
            // Payload-carrying messages can legally end anywhere in the payload.
            if let Ok(d) = Message::decode(&b[..cut]) {
                assert!(matches!(
                    d,
                    Message::Broadcast { .. } | Message::Unicast { .. }
                ));
            }
        }
    }
    let h = hello().encode();
    for cut in 0..h.len() {
        assert!(Hello::decode(&h[..cut]).is_err(), "cut at {cut}");
    }
}

#[test]
fn random_garbage_never_panics() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let samples: Vec<Vec<u8>> = sample_messages().iter().map(Message::encode).collect();
    for i in 0..20_000 {
        let bytes: Vec<u8> = if i % 2 == 0 {
            let n = rng.random_range(0..200);
            (0..n).map(|_| rng.random()).collect()
        } else {
            // Mutate a valid encoding: flipped bytes are the likeliest real-world garbage.
            let mut b = samples[i % samples.len()].clone();
            for _ in 0..rng.random_range(1..4) {
                if !b.is_empty() {
                    let at = rng.random_range(0..b.len());
                    b[at] = rng.random();
                }
            }
            b
        };
        // Topology entries are checked on arrival: any the message carries decodes later.
        if let Ok(Message::Topology(entries)) = Message::decode(&bytes) {
            let peers = entries
                .to_peers()
                .expect("entries checked on arrival decode");
            let named: Vec<(PeerName, u64)> = entries.iter().map(|e| (e.name, e.version)).collect();
            let want: Vec<(PeerName, u64)> = peers.iter().map(|p| (p.name, p.version)).collect();
            assert_eq!(named, want);
        }
        let _ = Hello::decode(&bytes);
        let _ = decode_header(&bytes);
        let mut d = FrameDecoder::new(MAX_HANDSHAKE_FRAME);
        d.push(&bytes);
        while let Ok(Some(f)) = d.next_frame() {
            let _ = Message::decode(&f);
        }
        assert!(d.buffered() <= bytes.len());
    }
}

#[test]
fn frames_split_and_join_at_any_boundary() {
    let bodies: Vec<Vec<u8>> = vec![vec![], vec![1], vec![7; 5000], b"hello".to_vec()];
    let mut stream = Vec::new();
    for b in &bodies {
        encode_frame(b, &mut stream).unwrap();
    }
    for step in [1, 2, 3, 7, 4096, stream.len()] {
        let mut d = FrameDecoder::new(MAX_FRAME);
        let mut got = Vec::new();
        for (i, chunk) in stream.chunks(step).enumerate() {
            // Pushed, or read straight into the decoder's buffer (as a connection does).
            if i % 2 == 0 {
                d.push(chunk);
            } else {
                d.read_buffer().extend_from_slice(chunk);
            }
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, bodies, "step {step}");
        assert_eq!(d.buffered(), 0);
    }
}

#[test]
fn oversized_frames_are_refused_before_buffering() {
    let mut d = FrameDecoder::new(MAX_FRAME);
    d.push(&((MAX_FRAME + 1) as u32).to_be_bytes());
    assert_eq!(
        d.next_frame(),
        Err(ProtocolError::FrameTooLarge {
            len: MAX_FRAME + 1,
            max: MAX_FRAME
        })
    );
    let mut d = FrameDecoder::new(MAX_HANDSHAKE_FRAME);
    d.push(&[0xff, 0xff, 0xff, 0xff]);
    assert!(matches!(
        d.next_frame(),
        Err(ProtocolError::FrameTooLarge { .. })
    ));
    let mut out = Vec::new();
    assert!(encode_frame(&vec![0; MAX_FRAME + 1], &mut out).is_err());
    assert!(out.is_empty());
    assert!(encode_frame(&vec![0; MAX_FRAME], &mut out).is_ok());
}

#[test]
fn big_topologies_split_into_frames_that_fit() {
    let conns: Vec<ConnectionInfo> = (0..200)
        .map(|i| ConnectionInfo {
            peer: name(i + 1000),
            addr: SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 6783),
            outbound: i % 2 == 0,
            established: true,
        })
        .collect();
    let peers: Vec<PeerInfo> = (0..400)
        .map(|i| PeerInfo {
            name: name(i),
            nickname: "n".repeat(255),
            uid: i,
            version: i,
            connections: conns.clone(),
        })
        .collect();
    let msgs = topology_messages(&peers);
    assert!(msgs.len() > 1);
    let mut back = Vec::new();
    for m in msgs {
        let b = m.encode();
        assert!(b.len() <= MAX_FRAME);
        match Message::decode(&b).unwrap() {
            Message::Topology(p) => back.extend(p.to_peers().unwrap()),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(back, peers);
}
