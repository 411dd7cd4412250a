//! Topology messages put together from entries encoded once: a flush sends its changes to
//! every neighbour, each less the entries that neighbour sent us, and encoding every entry
//! again for each neighbour was a tenth of the mesh's CPU while hundreds of peers joined.

use super::entries::encode_peer;
use super::{PeerInfo, MAX_FRAME, TAG_TOPOLOGY};

/// One topology entry as it goes on the wire.
pub fn encode_entry(p: &PeerInfo) -> Vec<u8> {
    let mut out = Vec::new();
    encode_peer(p, &mut out);
    out
}

/// Encoded topology messages carrying `entries` (each from [`encode_entry`]), split where
/// [`super::topology_messages`] splits: the bytes those messages encode to. None for none.
pub fn topology_frames<'a>(entries: impl IntoIterator<Item = &'a [u8]>) -> Vec<Vec<u8>> {
    fn finish(frame: &mut Vec<u8>, count: u16, out: &mut Vec<Vec<u8>>) {
        frame[1..3].copy_from_slice(&count.to_be_bytes());
        out.push(std::mem::take(frame));
    }
    let mut out = Vec::new();
    let mut frame = Vec::new();
    let mut count: u16 = 0;
    for e in entries {
        if count > 0 && (frame.len() + e.len() > MAX_FRAME || count == u16::MAX) {
            finish(&mut frame, count, &mut out);
            count = 0;
        }
        if count == 0 {
            frame.extend_from_slice(&[TAG_TOPOLOGY, 0, 0]);
        }
        frame.extend_from_slice(e);
        count += 1;
    }
    if count > 0 {
        finish(&mut frame, count, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::{topology_messages, ConnectionInfo, Message};
    use super::*;
    use crate::peer::PeerName;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    #[test]
    fn frames_from_entries_are_the_bytes_of_the_messages() {
        let mut rng = StdRng::seed_from_u64(15);
        for n in [0usize, 1, 2, 7, 300, 9000] {
            let peers: Vec<PeerInfo> = (0..n)
                .map(|i| PeerInfo {
                    name: PeerName::from_u64(i as u64 + 1).unwrap(),
                    nickname: "x".repeat(rng.random_range(0..40)),
                    uid: rng.random(),
                    version: rng.random(),
                    connections: (0..rng.random_range(0..30))
                        .map(|j| ConnectionInfo {
                            peer: PeerName::from_u64(j + 1).unwrap(),
                            addr: format!("10.0.0.{j}:{}", 6000 + j).parse().unwrap(),
                            outbound: rng.random_bool(0.5),
                            established: rng.random_bool(0.5),
                        })
                        .collect(),
                })
                .collect();
            let entries: Vec<Vec<u8>> = peers.iter().map(encode_entry).collect();
            let frames = topology_frames(entries.iter().map(|e| &e[..]));
            let messages: Vec<Vec<u8>> = topology_messages(&peers)
                .iter()
                .map(Message::encode)
                .collect();
            assert_eq!(frames, messages, "{n} entries");
        }
    }
}
