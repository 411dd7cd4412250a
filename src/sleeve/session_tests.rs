use super::*;
use crate::sleeve::datagram::MAX_SEALED;

const CHAIN: [u8; 32] = [0x42; 32];
const SESSION: u32 = 0x00c0_ffee;

fn pair(limits: Limits, t0: Instant) -> (Sealer, Opener) {
    (
        Sealer::new(&CHAIN, SESSION, limits, t0),
        Opener::new(&CHAIN, SESSION),
    )
}

fn frame(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i * 31 + j * 7) as u8).collect()
}

/// Opens a copy of `d`; the frame on success.
fn open(o: &mut Opener, now: Instant, d: &[u8]) -> Result<Vec<u8>, Reject> {
    let mut d = d.to_vec();
    let n = o.open(now, &mut d)?;
    Ok(d[HEADER_LEN..HEADER_LEN + n].to_vec())
}

#[test]
fn frames_of_every_size_round_trip() {
    let t = Instant::now();
    let (mut s, mut o) = pair(Limits::default(), t);
    let sizes = (0..=200).chain([1376, 1500, 9000, 65_000, MAX_FRAME]);
    for (i, len) in sizes.enumerate() {
        let f = frame(i, len);
        let d = seal_vec(&mut s, t, &f).unwrap();
        assert_eq!(d.len(), len + SEAL_OVERHEAD);
        assert!(d.len() <= HEADER_LEN + MAX_SEALED);
        if len >= 16 {
            assert_ne!(
                &d[HEADER_LEN..HEADER_LEN + 16],
                &f[..16],
                "looks unencrypted"
            );
        }
        assert_eq!(open(&mut o, t, &d).unwrap(), f);
    }
    assert_eq!((s.rekeys(), o.rekeys()), (0, 0));
}

#[test]
fn seal_refuses_what_does_not_fit() {
    let t = Instant::now();
    let (mut s, _) = pair(Limits::default(), t);
    let mut buf = vec![0u8; 100];
    assert_eq!(s.seal(t, &mut buf, 69), Err(SealError::TooLarge));
    assert_eq!(s.seal(t, &mut buf, 68), Ok(100));
    let mut big = vec![0u8; HEADER_LEN + MAX_SEALED + 100];
    assert_eq!(s.seal(t, &mut big, MAX_FRAME + 1), Err(SealError::TooLarge));
}

#[test]
fn every_single_bit_flip_is_dropped_and_moves_nothing() {
    let t = Instant::now();
    let (mut s, mut o) = pair(Limits::default(), t);
    let d = seal_vec(&mut s, t, b"a frame worth protecting, 40 bytes long").unwrap();
    for byte in 0..d.len() {
        for bit in 0..8 {
            let mut bad = d.clone();
            bad[byte] ^= 1 << bit;
            let r = open(&mut o, t, &bad);
            assert!(r.is_err(), "flip of byte {byte} bit {bit} accepted");
            let want = match byte {
                0 => Reject::UnknownType,
                1..=3 => Reject::StaleSession,
                4..=7 => Reject::UnknownEpoch,
                _ => Reject::Forged,
            };
            // A flipped low epoch bit may name a near-future epoch: still not authentic.
            let got = r.unwrap_err();
            assert!(
                got == want || (want == Reject::UnknownEpoch && got == Reject::Forged),
                "byte {byte} bit {bit}: {got:?}"
            );
        }
    }
    assert_eq!(o.epoch(), 0);
    assert_eq!(
        open(&mut o, t, &d).unwrap(),
        b"a frame worth protecting, 40 bytes long"
    );
}

#[test]
fn truncated_or_extended_datagrams_are_dropped() {
    let t = Instant::now();
    let (mut s, mut o) = pair(Limits::default(), t);
    let d = seal_vec(&mut s, t, &frame(1, 100)).unwrap();
    for n in 0..d.len() {
        let r = open(&mut o, t, &d[..n]);
        let want = if n < SEAL_OVERHEAD {
            Reject::Truncated
        } else {
            Reject::Forged
        };
        assert_eq!(r, Err(want), "prefix of {n} bytes");
    }
    let mut longer = d.clone();
    longer.push(0);
    assert_eq!(open(&mut o, t, &longer), Err(Reject::Forged));
    assert!(open(&mut o, t, &d).is_ok());
}

#[test]
fn replays_are_dropped_and_reordering_is_not() {
    let t = Instant::now();
    let (mut s, mut o) = pair(Limits::default(), t);
    let ds: Vec<Vec<u8>> = (0..100)
        .map(|i| seal_vec(&mut s, t, &frame(i, 60)).unwrap())
        .collect();
    // Delivered backwards: all inside the window.
    for (i, d) in ds.iter().enumerate().rev() {
        assert_eq!(open(&mut o, t, d).unwrap(), frame(i, 60));
    }
    for d in &ds {
        assert_eq!(open(&mut o, t, d), Err(Reject::Replayed));
    }
}

#[test]
fn other_keys_and_sessions_are_refused() {
    let t = Instant::now();
    let mut s = Sealer::new(&[1; 32], SESSION, Limits::default(), t);
    let mut o = Opener::new(&[2; 32], SESSION);
    let d = seal_vec(&mut s, t, b"hello").unwrap();
    assert_eq!(open(&mut o, t, &d), Err(Reject::Forged));
    // The same key under another session id (a restarted peer's old datagrams).
    let mut o = Opener::new(&[1; 32], SESSION ^ 1);
    assert_eq!(open(&mut o, t, &d), Err(Reject::StaleSession));
    // The opposite direction's datagram does not open (reflection).
    let mut back = Sealer::new(&[2; 32], SESSION, Limits::default(), t);
    let mut o = Opener::new(&[1; 32], SESSION);
    let r = seal_vec(&mut back, t, b"hello").unwrap();
    assert_eq!(open(&mut o, t, &r), Err(Reject::Forged));
}

#[test]
fn rekey_by_count_is_followed_with_fresh_keys() {
    let t = Instant::now();
    let limits = Limits {
        packets: 3,
        age: Duration::from_secs(3600),
    };
    let (mut s, mut o) = pair(limits, t);
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..30 {
        let d = seal_vec(&mut s, t, &[0u8; 32]).unwrap();
        let h = Header::decode(&d).unwrap();
        assert_eq!((h.epoch, h.counter), ((i / 3) as u32, (i % 3) as u64));
        // The same frame at the same counter in another epoch encrypts differently.
        assert!(seen.insert(d[HEADER_LEN..].to_vec()));
        assert_eq!(open(&mut o, t, &d).unwrap(), vec![0u8; 32]);
    }
    assert_eq!((s.rekeys(), o.rekeys()), (9, 9));
    assert_eq!((s.epoch(), o.epoch()), (9, 9));
}

#[test]
fn rekey_by_age() {
    let t = Instant::now();
    let age = Duration::from_secs(120);
    let (mut s, mut o) = pair(
        Limits {
            packets: 1 << 40,
            age,
        },
        t,
    );
    let at = |secs: u64| t + Duration::from_secs(secs);
    for (when, epoch) in [(0, 0), (119, 0), (120, 1), (200, 1), (240, 2), (1000, 3)] {
        let d = seal_vec(&mut s, at(when), b"tick").unwrap();
        assert_eq!(Header::decode(&d).unwrap().epoch, epoch, "at {when}s");
        assert!(open(&mut o, at(when), &d).is_ok());
    }
}

#[test]
fn lost_rekeys_are_skipped_up_to_the_limit() {
    let t = Instant::now();
    let limits = Limits {
        packets: 1,
        age: Duration::from_secs(3600),
    };
    let (mut s, mut o) = pair(limits, t);
    assert!(open(&mut o, t, &seal_vec(&mut s, t, b"e0").unwrap()).is_ok());
    // Epochs 1..=MAX_EPOCH_SKIP-1 lost; epoch MAX_EPOCH_SKIP arrives.
    for _ in 1..MAX_EPOCH_SKIP {
        seal_vec(&mut s, t, b"lost").unwrap();
    }
    let d = seal_vec(&mut s, t, b"arrives").unwrap();
    assert_eq!(open(&mut o, t, &d).unwrap(), b"arrives");
    assert_eq!(o.epoch(), MAX_EPOCH_SKIP);
    assert_eq!(o.rekeys(), u64::from(MAX_EPOCH_SKIP));
    // Too many lost: unknown, and the opener stays where it was.
    for _ in 0..MAX_EPOCH_SKIP {
        seal_vec(&mut s, t, b"lost").unwrap();
    }
    let d = seal_vec(&mut s, t, b"too far").unwrap();
    assert_eq!(open(&mut o, t, &d), Err(Reject::UnknownEpoch));
    assert_eq!(o.epoch(), MAX_EPOCH_SKIP);
}

#[test]
fn previous_epoch_is_accepted_during_its_grace_only() {
    let t = Instant::now();
    let limits = Limits {
        packets: 2,
        age: Duration::from_secs(3600),
    };
    let (mut s, mut o) = pair(limits, t);
    let e0: Vec<_> = (0..2)
        .map(|_| seal_vec(&mut s, t, b"old").unwrap())
        .collect();
    let e1 = seal_vec(&mut s, t, b"new").unwrap();
    assert!(open(&mut o, t, &e0[0]).is_ok());
    assert!(open(&mut o, t, &e1).is_ok());
    assert_eq!(o.epoch(), 1);
    // Late datagram of epoch 0: accepted once, within the grace.
    assert_eq!(open(&mut o, t, &e0[1]).unwrap(), b"old");
    assert_eq!(open(&mut o, t, &e0[1]), Err(Reject::Replayed));
    assert_eq!(open(&mut o, t, &e0[0]), Err(Reject::Replayed));
    // After the grace, epoch 0 is gone.
    let (mut s2, mut o2) = pair(limits, t);
    let e0: Vec<_> = (0..2)
        .map(|_| seal_vec(&mut s2, t, b"old").unwrap())
        .collect();
    let e1 = seal_vec(&mut s2, t, b"new").unwrap();
    assert!(open(&mut o2, t, &e1).is_ok());
    let late = t + PREVIOUS_EPOCH_GRACE;
    assert_eq!(open(&mut o2, late, &e0[0]), Err(Reject::UnknownEpoch));
}

#[test]
fn a_forged_future_epoch_does_not_move_the_opener() {
    let t = Instant::now();
    let (mut s, mut o) = pair(Limits::default(), t);
    let d = seal_vec(&mut s, t, b"genuine").unwrap();
    let mut forged = d.clone();
    forged[4..8].copy_from_slice(&1u32.to_be_bytes());
    assert_eq!(open(&mut o, t, &forged), Err(Reject::Forged));
    assert_eq!((o.epoch(), o.rekeys()), (0, 0));
    assert!(open(&mut o, t, &d).is_ok());
}

#[test]
fn the_last_epoch_exhausts_the_session() {
    let t = Instant::now();
    let (mut s, _) = pair(
        Limits {
            packets: 1,
            age: Duration::from_secs(3600),
        },
        t,
    );
    s.epoch = u32::MAX;
    let mut buf = vec![0u8; 64];
    assert_eq!(s.seal(t, &mut buf, 10), Ok(10 + SEAL_OVERHEAD));
    assert_eq!(s.seal(t, &mut buf, 10), Err(SealError::Exhausted));
}

#[test]
fn random_loss_reorder_and_duplication_deliver_each_frame_at_most_once() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5ee7e);
    let t = Instant::now();
    let limits = Limits {
        packets: 50,
        age: Duration::from_secs(3600),
    };
    let (mut s, mut o) = pair(limits, t);
    let mut in_flight: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut delivered = std::collections::BTreeSet::new();
    for i in 0..5_000usize {
        let f = (i as u64).to_be_bytes();
        in_flight.push((i, seal_vec(&mut s, t, &f).unwrap()));
        while in_flight.len() > 8 || (rng.random_bool(0.5) && !in_flight.is_empty()) {
            let k = rng.random_range(0..in_flight.len());
            let (j, d) = if rng.random_bool(0.1) {
                in_flight[k].clone() // duplicated on the wire
            } else {
                in_flight.swap_remove(k)
            };
            if rng.random_bool(0.05) {
                continue; // lost
            }
            match open(&mut o, t, &d) {
                Ok(got) => {
                    assert_eq!(got, (j as u64).to_be_bytes());
                    assert!(delivered.insert(j), "frame {j} delivered twice");
                }
                Err(e) => assert!(
                    matches!(e, Reject::Replayed | Reject::UnknownEpoch),
                    "frame {j}: {e:?}"
                ),
            }
        }
    }
    assert!(
        delivered.len() > 4_000,
        "only {} delivered",
        delivered.len()
    );
    assert_eq!(o.epoch(), s.epoch());
}
