//! Gossip-carried Paxos to agree, once, on the peers the ring is first split among.
//!
//! Every node's claims (its promise and what it accepted) travel in one map that is merged
//! like a CRDT; each node only writes its own claims. A proposer that sees a quorum of
//! promises for its proposal accepts a value (the one with the highest earlier acceptance, or
//! the electors it knows); acceptors adopt it; a quorum of equal acceptances is consensus.

use crate::peer::PeerName;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Ordered by round first, then proposer, so every proposal id is unique.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct ProposalId {
    pub round: u32,
    pub proposer: PeerName,
}

/// An accepted value. Shared (`Arc`) because every node's claims carry the same list and
/// the whole map is gossiped: with 1000 peers copying it would be 1000 x 1000 names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    pub proposal: ProposalId,
    #[serde(with = "shared_list")]
    pub value: Arc<Vec<PeerName>>,
}

mod shared_list {
    use super::PeerName;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::sync::Arc;

    pub fn serialize<S: Serializer>(v: &Arc<Vec<PeerName>>, s: S) -> Result<S::Ok, S::Error> {
        v.as_slice().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<Vec<PeerName>>, D::Error> {
        Vec::<PeerName>::deserialize(d).map(Arc::new)
    }
}

/// What one node has promised and accepted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeClaims {
    pub promise: ProposalId,
    pub accepted: Option<Accepted>,
}

impl NodeClaims {
    /// Join: a node's claims only ever grow, so the larger of each part is the newer.
    fn join(&mut self, other: &NodeClaims) -> bool {
        let mut changed = false;
        if other.promise > self.promise {
            self.promise = other.promise;
            changed = true;
        }
        let newer = match (&self.accepted, &other.accepted) {
            (None, Some(_)) => true,
            (Some(a), Some(b)) => b.proposal > a.proposal,
            _ => false,
        };
        if newer {
            self.accepted = other.accepted.clone();
            changed = true;
        }
        changed
    }
}

/// The gossiped form: every known node's claims. Observers send it empty.
pub type PaxosState = BTreeMap<PeerName, NodeClaims>;

/// One node's view. Observers merge and can see consensus but never add claims.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paxos {
    me: PeerName,
    quorum: usize,
    observer: bool,
    knows: PaxosState,
}

impl Paxos {
    pub fn elector(me: PeerName, quorum: usize) -> Self {
        Paxos {
            me,
            quorum: quorum.max(1),
            observer: false,
            knows: PaxosState::new(),
        }
    }

    pub fn observer(me: PeerName) -> Self {
        Paxos {
            me,
            quorum: usize::MAX,
            observer: true,
            knows: PaxosState::new(),
        }
    }

    pub fn is_observer(&self) -> bool {
        self.observer
    }

    pub fn quorum(&self) -> usize {
        self.quorum
    }

    pub fn state(&self) -> &PaxosState {
        &self.knows
    }

    pub fn has_proposed(&self) -> bool {
        self.knows
            .get(&self.me)
            .is_some_and(|c| c.promise.proposer == self.me)
    }

    /// Our current promise, used to notice a stalled election.
    pub fn highest_promise(&self) -> ProposalId {
        self.knows
            .values()
            .map(|c| c.promise)
            .max()
            .unwrap_or_default()
    }

    /// Restores our own claims after a restart (from persisted state).
    pub fn restore(&mut self, state: PaxosState) {
        self.knows = state;
    }

    /// Starts (or restarts, with a higher round) an election led by us.
    pub fn propose(&mut self) {
        if self.observer {
            return;
        }
        let round = self.highest_promise().round + 1;
        let mine = self.knows.entry(self.me).or_default();
        mine.promise = ProposalId {
            round,
            proposer: self.me,
        };
        self.think();
    }

    /// Merges a received state (ignoring claims about us: we are their only author), then
    /// acts on it. Returns whether our state changed.
    pub fn merge(&mut self, received: &PaxosState) -> bool {
        let mut changed = false;
        for (peer, claims) in received {
            if *peer == self.me {
                continue;
            }
            match self.knows.get_mut(peer) {
                Some(ours) => changed |= ours.join(claims),
                None => {
                    self.knows.insert(*peer, claims.clone());
                    changed = true;
                }
            }
        }
        self.think() || changed
    }

    /// One step of the protocol for our own claims. Returns whether they changed.
    pub fn think(&mut self) -> bool {
        if self.observer || self.knows.is_empty() {
            return false;
        }
        let me = self.me;
        let highest = self.highest_promise();
        let mut ours = self.knows.get(&me).cloned().unwrap_or_default();
        let before = ours.clone();
        // Promise the highest proposal seen anywhere.
        if highest > ours.promise {
            ours.promise = highest;
        }
        // Accept what the proposer we promised has itself accepted for that proposal.
        let proposer_accepted = self
            .knows
            .get(&ours.promise.proposer)
            .and_then(|c| c.accepted.clone());
        if let Some(acc) = proposer_accepted {
            if acc.proposal == ours.promise
                && ours
                    .accepted
                    .as_ref()
                    .is_none_or(|a| a.proposal != acc.proposal)
            {
                ours.accepted = Some(acc);
            }
        }
        // As proposer with a quorum of promises: pick the value and accept it ourselves.
        let already_accepted = ours
            .accepted
            .as_ref()
            .is_some_and(|a| a.proposal == ours.promise);
        if ours.promise.proposer == me && ours.promise.round > 0 && !already_accepted {
            let promisers: Vec<&NodeClaims> = self
                .knows
                .iter()
                .filter(|(p, _)| **p != me)
                .map(|(_, c)| c)
                .chain(std::iter::once(&ours))
                .filter(|c| c.promise == ours.promise)
                .collect();
            if promisers.len() >= self.quorum {
                let prior = promisers
                    .iter()
                    .filter_map(|c| c.accepted.as_ref())
                    .max_by_key(|a| a.proposal);
                let value = match prior {
                    Some(a) => a.value.clone(),
                    None => {
                        let mut electors: Vec<PeerName> = self.knows.keys().copied().collect();
                        if !electors.contains(&me) {
                            electors.push(me);
                            electors.sort();
                        }
                        Arc::new(electors)
                    }
                };
                ours.accepted = Some(Accepted {
                    proposal: ours.promise,
                    value,
                });
            }
        }
        let changed = ours != before;
        self.knows.insert(me, ours);
        changed
    }

    /// The agreed peer list once a quorum accepted the same proposal. Observers, which do not
    /// know the quorum, never see it here: they take the ring electors gossip.
    pub fn consensus(&self) -> Option<Vec<PeerName>> {
        let mut counts: BTreeMap<ProposalId, usize> = BTreeMap::new();
        for claims in self.knows.values() {
            if let Some(a) = &claims.accepted {
                let n = counts.entry(a.proposal).or_default();
                *n += 1;
                if *n >= self.quorum {
                    return Some(a.value.to_vec());
                }
            }
        }
        None
    }
}
