//! Paxos to agree, once, on the peers the ring is first split among.
//!
//! Every node's claims (its promise and what it accepted) merge like a CRDT; each node only
//! writes its own. Proposers' claims are gossiped to everyone; an acceptor sends its own
//! claims only to the proposer it promised (a unicast), so an election among n peers costs
//! about n claim merges at the proposer instead of n^2 across the peers. A proposer that sees
//! a quorum of promises for its proposal accepts a value (the one with the highest earlier
//! acceptance, or the electors it knows); acceptors adopt it; a quorum of equal acceptances
//! is consensus, which the proposer sees first and announces by gossiping the ring.

use crate::peer::PeerName;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
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
///
/// With thousands of electors every node's map holds thousands of claims, and every step
/// used to walk it (highest promise, promises for a proposal, acceptances per proposal):
/// the [`Tally`] keeps those counts as claims change, so a merge costs what it received,
/// and [`Paxos::take_changed`] gives the claims that changed since the last gossip, so
/// gossip carries deltas rather than the whole map.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Paxos {
    me: PeerName,
    quorum: usize,
    observer: bool,
    knows: PaxosState,
    #[serde(skip)]
    tally: Tally,
    /// Peers whose claims changed since the last [`Paxos::take_changed`].
    #[serde(skip)]
    changed: BTreeSet<PeerName>,
    /// Our own claims changed since they last went to the proposer we promised.
    #[serde(skip)]
    own_unsent: bool,
}

impl PartialEq for Paxos {
    /// The tally follows from `knows`; what was gossiped already is no part of the state.
    fn eq(&self, other: &Paxos) -> bool {
        (self.me, self.quorum, self.observer, &self.knows)
            == (other.me, other.quorum, other.observer, &other.knows)
    }
}

impl Eq for Paxos {}

/// Counts over all known claims, kept as they change.
#[derive(Clone, Debug, Default)]
struct Tally {
    highest: ProposalId,
    promises: BTreeMap<ProposalId, usize>,
    /// Acceptances per proposal, with the value (one per proposal).
    accepts: BTreeMap<ProposalId, (usize, Arc<Vec<PeerName>>)>,
    /// Claims that gossip carries: a proposer's own (see [`Paxos::take_changed`]).
    gossiped: usize,
}

impl Tally {
    /// `c`, the claims of `peer`.
    fn add(&mut self, peer: PeerName, c: &NodeClaims) {
        self.gossiped += usize::from(c.promise.proposer == peer);
        self.highest = self.highest.max(c.promise);
        *self.promises.entry(c.promise).or_default() += 1;
        if let Some(a) = &c.accepted {
            self.accepts
                .entry(a.proposal)
                .or_insert_with(|| (0, a.value.clone()))
                .0 += 1;
        }
    }

    fn remove(&mut self, peer: PeerName, c: &NodeClaims) {
        self.gossiped -= usize::from(c.promise.proposer == peer);
        if let Some(n) = self.promises.get_mut(&c.promise) {
            *n -= 1;
            if *n == 0 {
                self.promises.remove(&c.promise);
            }
        }
        if let Some(a) = &c.accepted {
            if let Some(e) = self.accepts.get_mut(&a.proposal) {
                e.0 -= 1;
                if e.0 == 0 {
                    self.accepts.remove(&a.proposal);
                }
            }
        }
        // `highest` stays: claims only grow, so it never has to go down.
    }
}

impl Paxos {
    pub fn elector(me: PeerName, quorum: usize) -> Self {
        Paxos {
            me,
            quorum: quorum.max(1),
            observer: false,
            knows: PaxosState::new(),
            tally: Tally::default(),
            changed: BTreeSet::new(),
            own_unsent: false,
        }
    }

    pub fn observer(me: PeerName) -> Self {
        Paxos {
            me,
            quorum: usize::MAX,
            observer: true,
            knows: PaxosState::new(),
            tally: Tally::default(),
            changed: BTreeSet::new(),
            own_unsent: false,
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

    /// What must outlive a restart: our own claims, the promise and acceptance Paxos needs
    /// an acceptor to keep. Others' claims are learnt again (they resend theirs on the
    /// periodic full gossip, and we resend ours at once). Saving every known claim made a
    /// proposer write the quorum's list once per claim: (n/2)^2 names per save (1.3 MB
    /// measured at 500 peers), on every batch of the election.
    pub fn durable(&self) -> PaxosState {
        self.knows
            .get(&self.me)
            .map(|c| PaxosState::from([(self.me, c.clone())]))
            .unwrap_or_default()
    }

    /// The proposers' claims that changed since the last call: what gossip carries (only
    /// ours with `own_only`, when the mesh floods every broadcast to everyone anyway). An
    /// acceptor's claims go to its proposer alone ([`Paxos::take_for_proposer`]): gossiping
    /// every claim to every peer made an election of n peers cost n^2 claim merges.
    pub fn take_changed(&mut self, own_only: bool) -> PaxosState {
        let changed = std::mem::take(&mut self.changed);
        changed
            .into_iter()
            .filter(|p| !own_only || *p == self.me)
            .filter_map(|p| {
                self.knows
                    .get(&p)
                    .filter(|c| c.promise.proposer == p)
                    .map(|c| (p, c.clone()))
            })
            .collect()
    }

    /// Our claims, and the proposer they must reach, when they changed since last taken
    /// (Paxos' promise and accept messages). None for a proposer or before any promise.
    pub fn take_for_proposer(&mut self) -> Option<(PeerName, PaxosState)> {
        if !std::mem::take(&mut self.own_unsent) {
            return None;
        }
        let ours = self.knows.get(&self.me)?;
        let to = ours.promise.proposer;
        if to == self.me || ours.promise.round == 0 {
            return None;
        }
        Some((to, PaxosState::from([(self.me, ours.clone())])))
    }

    /// Makes the next [`Paxos::take_changed`] the whole state (periodic anti-entropy: a
    /// peer that lost a message learns it from there).
    pub fn mark_all_changed(&mut self) {
        self.changed.extend(self.knows.keys().copied());
    }

    /// Sends our claims to our proposer again (anti-entropy: the last ones may be lost).
    pub fn resend_own(&mut self) {
        self.own_unsent = true;
    }

    /// Whether `delta`, taken from [`Paxos::take_changed`] with `own_only`, holds every
    /// claim gossip carries: then it did what a whole-state gossip would.
    pub fn is_whole(&self, delta: &PaxosState, own_only: bool) -> bool {
        let all = if own_only {
            usize::from(self.has_proposed())
        } else {
            self.tally.gossiped
        };
        delta.len() == all
    }

    fn set_claims(&mut self, peer: PeerName, claims: NodeClaims) {
        if let Some(old) = self.knows.get(&peer) {
            self.tally.remove(peer, old);
        }
        self.tally.add(peer, &claims);
        self.knows.insert(peer, claims);
        self.changed.insert(peer);
        self.own_unsent |= peer == self.me;
    }

    pub fn has_proposed(&self) -> bool {
        self.knows
            .get(&self.me)
            .is_some_and(|c| c.promise.proposer == self.me)
    }

    /// Our current promise, used to notice a stalled election.
    pub fn highest_promise(&self) -> ProposalId {
        self.tally.highest
    }

    /// Restores our own claims after a restart (from persisted state).
    pub fn restore(&mut self, state: PaxosState) {
        self.tally = Tally::default();
        for (p, c) in &state {
            self.tally.add(*p, c);
        }
        self.knows = state;
        self.own_unsent = true;
    }

    /// Starts (or restarts, with a higher round) an election led by us.
    pub fn propose(&mut self) {
        if self.observer {
            return;
        }
        let round = self.highest_promise().round + 1;
        let mut mine = self.knows.get(&self.me).cloned().unwrap_or_default();
        mine.promise = ProposalId {
            round,
            proposer: self.me,
        };
        self.set_claims(self.me, mine);
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
            let mut joined = match self.knows.get(peer) {
                Some(ours) => ours.clone(),
                None => NodeClaims::default(),
            };
            if joined.join(claims) || !self.knows.contains_key(peer) {
                self.set_claims(*peer, joined);
                changed = true;
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
            // Promises for our proposal: the tally counts our stored claims, so correct it
            // for the ones being decided here.
            let stored_ours = self.knows.get(&me).map(|c| c.promise);
            let mut promised = self.tally.promises.get(&ours.promise).copied().unwrap_or(0);
            if stored_ours != Some(ours.promise) {
                promised += 1;
            }
            if promised >= self.quorum {
                let prior = self
                    .knows
                    .iter()
                    .filter(|(p, _)| **p != me)
                    .map(|(_, c)| c)
                    .chain(std::iter::once(&ours))
                    .filter(|c| c.promise == ours.promise)
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
        if changed || !self.knows.contains_key(&me) {
            self.set_claims(me, ours);
        }
        changed
    }

    /// The agreed peer list once a quorum accepted the same proposal. Observers, which do not
    /// know the quorum, never see it here: they take the ring electors gossip.
    pub fn consensus(&self) -> Option<Vec<PeerName>> {
        self.tally
            .accepts
            .values()
            .find(|(n, _)| *n >= self.quorum)
            .map(|(_, value)| value.to_vec())
    }
}
