//! The records' gossip encoding: versioned JSON, `{"v":1,"owners":[...]}`, each owner's
//! facts as `{"peer", "floor", "entries":[{"n","c","i","v","d"}]}`. [`encode`] packs updates
//! into messages that fit one mesh frame; an owner too large for one is sent as deltas
//! (floor 0), which is always safe: a floor is only ever an optimisation of what the
//! entries say.

use super::store::{OwnerUpdate, RecordKey, Stamp};
use crate::mesh::PeerName;
use crate::{Context, Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// Layout version; messages of another version are refused.
pub const WIRE_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct WireMessage {
    v: u32,
    owners: Vec<WireOwner>,
}

#[derive(Serialize, Deserialize)]
struct WireOwner {
    peer: String,
    #[serde(default)]
    floor: u64,
    #[serde(default)]
    entries: Vec<WireEntry>,
}

#[derive(Serialize, Deserialize)]
struct WireEntry {
    n: String,
    c: String,
    i: Ipv4Addr,
    v: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    d: bool,
}

const HEAD: &str = "{\"v\":1,\"owners\":[";
const TAIL: &str = "]}";

fn owner_json(u: &OwnerUpdate) -> String {
    let w = WireOwner {
        peer: u.owner.to_string(),
        floor: u.floor,
        entries: u
            .entries
            .iter()
            .map(|(k, s)| WireEntry {
                n: k.name.clone(),
                c: k.container_id.clone(),
                i: k.ip,
                v: s.version,
                d: s.deleted,
            })
            .collect(),
    };
    serde_json::to_string(&w).unwrap_or_default()
}

/// One owner's update as JSON pieces of at most `max` bytes each: whole when it fits,
/// else halves of its entries as deltas (the floor dropped), recursively.
fn pieces(u: &OwnerUpdate, max: usize, out: &mut Vec<String>) {
    let j = owner_json(u);
    if j.len() <= max {
        out.push(j);
        return;
    }
    if u.entries.len() <= 1 {
        tracing::warn!(
            "dns gossip: an entry of {} bytes does not fit a message",
            j.len()
        );
        return;
    }
    let (a, b) = u.entries.split_at(u.entries.len() / 2);
    for half in [a, b] {
        let d = OwnerUpdate {
            owner: u.owner,
            floor: 0,
            entries: half.to_vec(),
        };
        pieces(&d, max, out);
    }
}

/// Messages of at most `max` bytes carrying `updates`.
pub fn encode(updates: &[OwnerUpdate], max: usize) -> Vec<Vec<u8>> {
    let room = max.saturating_sub(HEAD.len() + TAIL.len());
    let mut parts = Vec::new();
    for u in updates {
        pieces(u, room, &mut parts);
    }
    let mut out = Vec::new();
    let mut cur = String::from(HEAD);
    let mut n = 0;
    for p in parts {
        if n > 0 && cur.len() + 1 + p.len() + TAIL.len() > max {
            cur.push_str(TAIL);
            out.push(std::mem::replace(&mut cur, String::from(HEAD)).into_bytes());
            n = 0;
        }
        if n > 0 {
            cur.push(',');
        }
        cur.push_str(&p);
        n += 1;
    }
    if n > 0 {
        cur.push_str(TAIL);
        out.push(cur.into_bytes());
    }
    out
}

/// Decodes a message. Entries are not checked here ([`super::Store::merge`] refuses bad
/// ones and counts them); the layout and the peer names are.
pub fn decode(bytes: &[u8]) -> Result<Vec<OwnerUpdate>> {
    let m: WireMessage = serde_json::from_slice(bytes).context("decode dns gossip")?;
    if m.v != WIRE_VERSION {
        return Err(Error::new(
            ErrorKind::Decode,
            format!(
                "decode dns gossip: layout {} (we speak {WIRE_VERSION})",
                m.v
            ),
        ));
    }
    m.owners
        .into_iter()
        .map(|o| {
            let owner: PeerName = o.peer.parse().context("decode dns gossip")?;
            Ok(OwnerUpdate {
                owner,
                floor: o.floor,
                entries: o
                    .entries
                    .into_iter()
                    .map(|e| {
                        (
                            RecordKey {
                                name: e.n,
                                container_id: e.c,
                                ip: e.i,
                            },
                            Stamp {
                                version: e.v,
                                deleted: e.d,
                            },
                        )
                    })
                    .collect(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(owner: u64, floor: u64, n: usize) -> OwnerUpdate {
        OwnerUpdate {
            owner: PeerName::from_u64(owner).unwrap(),
            floor,
            entries: (0..n)
                .map(|i| {
                    (
                        RecordKey::new(
                            &format!("task-{i}.framework.weave.local"),
                            &format!("container-{i:04}"),
                            Ipv4Addr::from(0x0a20_0000 + i as u32),
                        )
                        .unwrap(),
                        Stamp {
                            version: 1_000 + i as u64,
                            deleted: i % 3 == 0,
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn round_trips() {
        let us = vec![update(1, 77, 5), update(2, 0, 0), update(3, 0, 2)];
        let msgs = encode(&us, 1 << 20);
        assert_eq!(msgs.len(), 1);
        assert_eq!(decode(&msgs[0]).unwrap(), us);
        assert!(encode(&[], 100).is_empty());
    }

    #[test]
    fn large_updates_are_split_to_fit_and_lose_only_the_floor() {
        let u = update(1, 5_000, 300);
        let msgs = encode(std::slice::from_ref(&u), 4096);
        assert!(msgs.len() > 5);
        let mut entries = Vec::new();
        for m in &msgs {
            assert!(m.len() <= 4096, "{}", m.len());
            for d in decode(m).unwrap() {
                assert_eq!(d.owner, u.owner);
                assert_eq!(d.floor, 0, "a split snapshot must not carry its floor");
                entries.extend(d.entries);
            }
        }
        assert_eq!(entries, u.entries);
        // Several small owners share a message.
        let small: Vec<OwnerUpdate> = (1..=20).map(|o| update(o, o, 1)).collect();
        let msgs = encode(&small, 4096);
        assert_eq!(msgs.len(), 1);
        assert_eq!(decode(&msgs[0]).unwrap(), small);
    }

    #[test]
    fn bad_messages_are_errors() {
        for (input, want) in [
            (&b"{"[..], "decode dns gossip: "),
            (br#"{"v":2,"owners":[]}"#, "layout 2"),
            (br#"{"v":1,"owners":[{"peer":"x"}]}"#, "invalid peer name"),
            (
                br#"{"v":1,"owners":[{"peer":"02:00:00:00:00:01","entries":[{"n":"a.","c":"c","i":"300.0.0.1","v":1}]}]}"#,
                "decode dns gossip",
            ),
        ] {
            let e = decode(input).unwrap_err();
            assert!(e.to_string().contains(want), "{e}");
        }
    }
}
