//! Merging a gossiped ring into ours: a join on per-token versions, refusing anything that
//! would take a range we own away from us.

use super::addr::{ip, AddrRange};
use super::entries::{Entry, Ring};
use crate::peer::PeerName;
use std::fmt;

/// Why a received ring was refused. Weave drops the gossip connection on these.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MergeError {
    RangeMismatch {
        received: AddrRange,
        ours: AddrRange,
    },
    SeedMismatch {
        received: Vec<PeerName>,
        ours: Vec<PeerName>,
    },
    /// Another peer inserted a token inside a range we own.
    EntryInMyRange { peer: PeerName, token: u32 },
    /// A newer version of one of our own entries names another owner.
    UpdateForMyRange {
        token: u32,
        version: u32,
        incoming_peer: PeerName,
        incoming_version: u32,
    },
    /// Two entries with the same token and version but different owners.
    InconsistentEntries { ours: Entry, theirs: Entry },
    /// The received ring breaks the structural invariants.
    Malformed(String),
}

impl fmt::Display for MergeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn names(peers: &[PeerName]) -> String {
            peers
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
        match self {
            MergeError::RangeMismatch { received, ours } => {
                write!(f, "Incompatible IP allocation ranges (received: {received}, ours: {ours})")
            }
            MergeError::SeedMismatch { received, ours } => write!(
                f,
                "IP allocation was seeded by different peers (received: [{}], ours: [{}])",
                names(received),
                names(ours)
            ),
            MergeError::EntryInMyRange { peer, token } => {
                write!(f, "Peer {peer} says it owns the IP range from {}, which I think I own", ip(*token))
            }
            MergeError::UpdateForMyRange { token, version, incoming_peer, incoming_version } => write!(
                f,
                "Received update for IP range I own at {} v{version}: incoming message says owner {incoming_peer} v{incoming_version}",
                ip(*token)
            ),
            MergeError::InconsistentEntries { ours, theirs } => write!(
                f,
                "Inconsistent entries for {}: owned by {} but incoming message says {}",
                ip(ours.token),
                ours.peer,
                theirs.peer
            ),
            MergeError::Malformed(why) => write!(f, "Received inconsistent ring: {why}"),
        }
    }
}

impl std::error::Error for MergeError {}

impl Ring {
    /// Merges `other` (a peer's gossiped ring) into ours. Returns whether ours changed. On
    /// error ours is untouched.
    pub fn merge(&mut self, other: &Ring) -> Result<bool, MergeError> {
        if (other.start, other.end) != (self.start, self.end) {
            other.check_invariants().map_err(MergeError::Malformed)?;
            return Err(MergeError::RangeMismatch {
                received: other.universe(),
                ours: self.universe(),
            });
        }
        // Most gossip repeats what we have: settle that before any O(n) validation (O(1)
        // when the lists are shared, as a ring that spread by gossip is).
        if other.entries == self.entries && (other.seeds == self.seeds || other.seeds.is_empty()) {
            return Ok(false);
        }
        other.check_invariants().map_err(MergeError::Malformed)?;
        if !self.seeds.is_empty() && !other.seeds.is_empty() && self.seeds != other.seeds {
            return Err(MergeError::SeedMismatch {
                received: other.seeds.to_vec(),
                ours: self.seeds.to_vec(),
            });
        }
        let adopt_seeds = self.seeds.is_empty() && !other.seeds.is_empty();
        if adopt_seeds {
            self.seeds = other.seeds.clone();
        }
        if self.entries.is_empty() {
            // A first ring: theirs, shared, already checked.
            if !other.entries.is_empty() {
                self.entries = other.entries.clone();
                self.touched.set_all();
            }
            return Ok(adopt_seeds || !other.entries.is_empty());
        }
        let merged = merge_entries(&self.entries, &other.entries, self.me);
        let (merged, taken) = match merged {
            Ok(m) => m,
            Err(e) => {
                if adopt_seeds {
                    self.seeds = Default::default();
                }
                return Err(e);
            }
        };
        if taken.is_empty() {
            return Ok(adopt_seeds);
        }
        // Keep sharing their list when the join is theirs (we were only behind).
        let merged = if merged == **other.entries {
            other.entries.clone()
        } else {
            merged.into()
        };
        let before = std::mem::replace(&mut self.entries, merged);
        if let Err(why) = self.check_invariants() {
            self.entries = before;
            if adopt_seeds {
                self.seeds = Default::default();
            }
            return Err(MergeError::Malformed(format!("merge would give {why}")));
        }
        if taken.len() == self.entries.len() {
            self.touched.set_all();
        } else {
            self.touched.extend(taken);
        }
        Ok(true)
    }
}

/// The join of two sorted entry lists, as seen by peer `me`, and the tokens taken from theirs.
fn merge_entries(
    mine: &[Entry],
    theirs: &[Entry],
    me: PeerName,
) -> Result<(Vec<Entry>, Vec<u32>), MergeError> {
    let mut out = Vec::with_capacity(mine.len().max(theirs.len()));
    let mut taken = Vec::new();
    // Owner of the last entry taken from our side: only then can we tell that an incoming
    // new token lands inside a range we own.
    let mut previous_mine: Option<PeerName> = None;
    let (mut i, mut j) = (0, 0);
    let insert_theirs = |t: &Entry, previous: Option<PeerName>| -> Result<(), MergeError> {
        if previous == Some(me) && t.peer != me {
            return Err(MergeError::EntryInMyRange {
                peer: t.peer,
                token: t.token,
            });
        }
        Ok(())
    };
    while i < mine.len() || j < theirs.len() {
        let m = mine.get(i);
        let t = theirs.get(j);
        match (m, t) {
            (Some(m), Some(t)) if m.token == t.token => {
                if take_theirs(m, t, me)? {
                    out.push(*t);
                    previous_mine = None;
                    taken.push(t.token);
                } else {
                    out.push(*m);
                    previous_mine = Some(m.peer);
                }
                i += 1;
                j += 1;
            }
            (Some(m), t) if t.is_none_or(|t| m.token < t.token) => {
                out.push(*m);
                previous_mine = Some(m.peer);
                i += 1;
            }
            (_, Some(t)) => {
                insert_theirs(t, previous_mine)?;
                out.push(*t);
                previous_mine = None;
                taken.push(t.token);
                j += 1;
            }
            (m, t) => unreachable!("merge cursor stuck at {m:?} / {t:?}"),
        }
    }
    Ok((out, taken))
}

/// Whether their entry replaces ours for the same token: the higher version wins, then the
/// higher free count; never when it would take an entry of ours (`me`) away.
pub(super) fn take_theirs(m: &Entry, t: &Entry, me: PeerName) -> Result<bool, MergeError> {
    let take = if m.version != t.version {
        t.version > m.version
    } else if m == t {
        false
    } else if m.peer == t.peer {
        t.free > m.free
    } else {
        return Err(MergeError::InconsistentEntries {
            ours: *m,
            theirs: *t,
        });
    };
    if take && m.peer == me && t.peer != me {
        return Err(MergeError::UpdateForMyRange {
            token: m.token,
            version: m.version,
            incoming_peer: t.peer,
            incoming_version: t.version,
        });
    }
    Ok(take)
}
