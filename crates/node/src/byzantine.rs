//! A validator gone bad, for process-level tests of issue 8 only: compiled with the `byzantine`
//! cargo feature, which nothing in a default or release build enables.
//!
//! It signs everything it sends with its own genesis key (it is a validator, not an outsider)
//! and keeps its own replica honest: every lie is made on the way out, by a [`Transport`] that
//! rewrites outgoing frames, so the rest of the node is untouched. The one exception is the
//! censor, which must act before the replica batches ([`censor`], called where the runtime
//! steps the replica).
//!
//! Behaviours, chosen at run time (`medchain node --byzantine a,b,..`):
//! - `substitute-payloads`: in every view-change it sends, each request of its prepared
//!   certificates keeps its id, timestamp and the certificate's digest but carries other bytes:
//!   garbage, or a transaction whose signature is broken (finding 1). To have such a
//!   certificate, as primary it sends one pre-prepare per view (the first after
//!   [`HONEST_PROPOSALS`]) to only 2f backups and withholds its commit, so that the sequence
//!   number is prepared but not committed, and the view changes over it.
//! - `flood-pre-prepares`: as primary, after [`HONEST_PROPOSALS`], each pre-prepare carries a
//!   batch far larger than the maximum, full of copies of its requests, sent several times
//!   (finding 5).
//! - `forge-status`: status frames claim a huge height, sent often, and it never answers a
//!   state-transfer request (finding 4).
//! - `censor-patient=ID`: it never proposes (or even keeps) a transaction about patient `ID`
//!   (finding 3).
//! - `equivocate`: as primary, the upper half of its backups (all but the highest one, the
//!   "swing" backup) get an empty proposal instead of the real one for every sequence number,
//!   with a matching commit, resent every second to them and to the swing backup: a swing
//!   backup that lost its stores and votes again forks the chain (finding 2).

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ledger::SignedTransaction;
use ledger::crypto::SigningKey;
use pbft::{
    Digest, Input, Message, PrePrepare, Proposal, ReplicaId, Request, SeqNo, Signed, View, Vote,
};

use crate::transport::Transport;
use crate::wire::{Frame, Wire};

/// Pre-prepares sent honestly at the start of each view it leads, so that the network has
/// committed something (and the censor has something to hide behind) before the attacks.
pub const HONEST_PROPOSALS: usize = 3;
/// The height a forged status claims.
pub const FORGED_HEIGHT: u64 = 1 << 40;
/// How often a peer gets a forged status and group B's proposals again, at least, so that a
/// validator that restarts hears them first.
const REPEAT_EVERY: Duration = Duration::from_millis(100);
/// Group B's proposals repeated: the latest ones.
const REPEATED_PROPOSALS: usize = 32;
/// A flooded batch holds this many times the maximum batch ...
const FLOOD_FACTOR: usize = 50;
/// ... but no more requests than this, and is sent this many times.
const FLOOD_MAX_REQUESTS: usize = 2000;
const FLOOD_COPIES: usize = 3;
/// Sequence numbers whose treatment is remembered.
const REMEMBERED_SLOTS: usize = 256;

/// What a Byzantine validator does; see the module documentation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Behaviours {
    pub substitute_payloads: bool,
    pub flood_pre_prepares: bool,
    pub forge_status: bool,
    pub equivocate: bool,
    pub censor_patient: Option<String>,
}

impl FromStr for Behaviours {
    type Err = String;

    /// A comma-separated list: `substitute-payloads,flood-pre-prepares,forge-status,equivocate,
    /// censor-patient=p001`.
    fn from_str(text: &str) -> Result<Self, String> {
        let mut behaviours = Behaviours::default();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match item.split_once('=') {
                Some(("censor-patient", patient)) if !patient.is_empty() => {
                    behaviours.censor_patient = Some(patient.to_string());
                }
                None if item == "substitute-payloads" => behaviours.substitute_payloads = true,
                None if item == "flood-pre-prepares" => behaviours.flood_pre_prepares = true,
                None if item == "forge-status" => behaviours.forge_status = true,
                None if item == "equivocate" => behaviours.equivocate = true,
                _ => {
                    return Err(format!(
                        "unknown Byzantine behaviour '{item}' (known: substitute-payloads, \
                         flood-pre-prepares, forge-status, equivocate, censor-patient=ID)"
                    ));
                }
            }
        }
        Ok(behaviours)
    }
}

/// The runtime's hook before the replica sees an input: a censor drops the censored patient's
/// transactions from what it receives (forwards) or accepts, so it never batches them.
/// The forward's signature was checked already; the replica does not check it again.
pub(crate) fn censor(behaviours: Option<&Behaviours>, input: Input) -> Option<Input> {
    let Some(patient) = behaviours.and_then(|b| b.censor_patient.as_deref()) else {
        return Some(input);
    };
    let censored = |request: &Request| {
        SignedTransaction::from_request(request).is_ok_and(|tx| tx.body.patient_id() == patient)
    };
    match input {
        Input::Request(request) if censored(&request) => None,
        Input::Message(mut signed) => {
            if let Message::Forward(requests) = &mut signed.message {
                requests.retain(|request| !censored(request));
                if requests.is_empty() {
                    return None;
                }
            }
            Some(Input::Message(signed))
        }
        input => Some(input),
    }
}

/// How this validator, as primary, treats one of its sequence numbers.
enum Treatment {
    Honest,
    /// The pre-prepare goes to these backups only, and its commit to nobody.
    Split(BTreeSet<ReplicaId>),
    /// This oversized pre-prepare goes instead.
    Flood(Frame),
    /// Group B gets this empty proposal and its commit instead.
    Equivocate {
        pre_prepare: Frame,
        commit: Frame,
    },
}

#[derive(Default)]
struct State {
    treatments: BTreeMap<(View, SeqNo), Treatment>,
    /// The digest of group B's proposal at each sequence number, to chain the next one.
    equivocated: BTreeMap<SeqNo, Digest>,
    /// When each peer last got what is repeated to it.
    last_repeated: BTreeMap<ReplicaId, Instant>,
}

/// Wraps a validator's transport so that what it sends lies as `behaviours` says.
pub(crate) struct ByzantineTransport {
    inner: Box<dyn Transport>,
    behaviours: Behaviours,
    key: SigningKey,
    genesis_hash: [u8; 32],
    id: ReplicaId,
    n: usize,
    max_batch: usize,
    state: Mutex<State>,
}

impl ByzantineTransport {
    pub fn wrap(
        inner: Box<dyn Transport>,
        behaviours: Behaviours,
        key: SigningKey,
        genesis_hash: [u8; 32],
        id: ReplicaId,
        n: usize,
        max_batch: usize,
    ) -> Box<dyn Transport> {
        tracing::warn!(?behaviours, "this validator is BYZANTINE (test build)");
        Box::new(Self {
            inner,
            behaviours,
            key,
            genesis_hash,
            id,
            n,
            max_batch,
            state: Mutex::new(State::default()),
        })
    }

    fn frame(&self, wire: Wire) -> Frame {
        Frame::new(wire)
    }

    fn signed(&self, message: Message) -> Frame {
        let signature = ledger::crypto::sign_message(&self.key, &self.genesis_hash, &message);
        self.frame(Wire::Consensus(Signed {
            from: self.id,
            message,
            signature,
        }))
    }

    fn forged_status(&self) -> Frame {
        self.frame(Wire::Status {
            height: FORGED_HEIGHT,
            hash: [0xff; 32],
        })
    }

    /// The 2f backups with the lowest ids: enough to prepare, not enough to commit without us.
    fn split_group(&self) -> BTreeSet<ReplicaId> {
        let f = (self.n - 1) / 3;
        (0..self.n as ReplicaId)
            .filter(|&peer| peer != self.id)
            .take(2 * f)
            .collect()
    }

    /// Equivocation's group B: the upper half of the backups other than the swing backup.
    fn equivocation_group(&self) -> BTreeSet<ReplicaId> {
        let others: Vec<ReplicaId> = (0..self.n as ReplicaId)
            .filter(|&peer| peer != self.id && peer != self.swing())
            .collect();
        others[others.len().div_ceil(2)..].iter().copied().collect()
    }

    /// The backup that first votes with the honest side and, restored from nothing, may vote
    /// again with group B.
    fn swing(&self) -> ReplicaId {
        (0..self.n as ReplicaId)
            .rev()
            .find(|&peer| peer != self.id)
            .unwrap_or(self.id)
    }

    /// What `to` gets every [`REPEAT_EVERY`]: a forged status, and for group B and the swing
    /// backup group B's latest proposals with their commits.
    fn repeated(&self, state: &State, to: ReplicaId) -> Vec<Frame> {
        let mut out = Vec::new();
        if self.behaviours.forge_status {
            out.push(self.forged_status());
        }
        if self.behaviours.equivocate
            && (to == self.swing() || self.equivocation_group().contains(&to))
        {
            for treatment in state.treatments.values().rev().take(REPEATED_PROPOSALS) {
                if let Treatment::Equivocate {
                    pre_prepare,
                    commit,
                } = treatment
                {
                    out.extend([pre_prepare.clone(), commit.clone()]);
                }
            }
        }
        out
    }

    /// What goes to `to` instead of `frame`.
    fn rewrite(&self, to: ReplicaId, frame: Frame) -> Vec<Frame> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut out = Vec::new();
        if state
            .last_repeated
            .get(&to)
            .is_none_or(|at| at.elapsed() >= REPEAT_EVERY)
        {
            state.last_repeated.insert(to, Instant::now());
            out.extend(self.repeated(&state, to));
        }
        match &*frame {
            Wire::Status { .. } if self.behaviours.forge_status => {}
            Wire::Blocks(_) if self.behaviours.forge_status => {}
            Wire::Consensus(signed) if signed.from == self.id => {
                out.extend(self.rewrite_consensus(&mut state, to, &frame, &signed.message));
            }
            _ => out.push(frame.clone()),
        }
        out
    }

    fn rewrite_consensus(
        &self,
        state: &mut State,
        to: ReplicaId,
        frame: &Frame,
        message: &Message,
    ) -> Vec<Frame> {
        match message {
            Message::ViewChange(view_change) if self.behaviours.substitute_payloads => {
                let mut view_change = view_change.clone();
                for certificate in &mut view_change.prepared {
                    substitute_payloads(&mut certificate.pre_prepare);
                }
                tracing::info!(
                    new_view = view_change.new_view,
                    certificates = view_change.prepared.len(),
                    "byzantine view-change: payloads substituted"
                );
                vec![self.signed(Message::ViewChange(view_change))]
            }
            Message::PrePrepare(pre_prepare) if pre_prepare.proposal.proposer == self.id => {
                match self.treatment(state, pre_prepare) {
                    Treatment::Honest => vec![frame.clone()],
                    Treatment::Split(group) if group.contains(&to) => vec![frame.clone()],
                    Treatment::Split(_) => Vec::new(),
                    Treatment::Flood(flood) => vec![flood.clone(); FLOOD_COPIES],
                    Treatment::Equivocate { pre_prepare, .. }
                        if self.equivocation_group().contains(&to) =>
                    {
                        vec![pre_prepare.clone()]
                    }
                    Treatment::Equivocate { .. } => vec![frame.clone()],
                }
            }
            Message::Commit(vote) => match state.treatments.get(&(vote.view, vote.seq)) {
                Some(Treatment::Split(_)) => Vec::new(),
                Some(Treatment::Equivocate { commit, .. })
                    if self.equivocation_group().contains(&to) =>
                {
                    vec![commit.clone()]
                }
                _ => vec![frame.clone()],
            },
            _ => vec![frame.clone()],
        }
    }

    /// Decides (once) how this primary treats the sequence number of `pre_prepare`.
    fn treatment<'a>(&self, state: &'a mut State, pre_prepare: &PrePrepare) -> &'a Treatment {
        let slot = (pre_prepare.view, pre_prepare.proposal.seq);
        if !state.treatments.contains_key(&slot) {
            let earlier = state
                .treatments
                .keys()
                .filter(|(view, _)| *view == pre_prepare.view)
                .count();
            let behaviours = &self.behaviours;
            let treatment = if behaviours.equivocate {
                self.equivocation(state, pre_prepare)
            } else if earlier < HONEST_PROPOSALS || pre_prepare.proposal.requests.is_empty() {
                Treatment::Honest
            } else if behaviours.substitute_payloads && earlier == HONEST_PROPOSALS {
                Treatment::Split(self.split_group())
            } else if behaviours.flood_pre_prepares {
                Treatment::Flood(self.flood(pre_prepare))
            } else {
                Treatment::Honest
            };
            let name = match &treatment {
                Treatment::Honest => "honest",
                Treatment::Split(_) => "split (prepared, not committed)",
                Treatment::Flood(_) => "flooded",
                Treatment::Equivocate { .. } => "equivocated",
            };
            tracing::info!(
                view = slot.0,
                seq = slot.1,
                requests = pre_prepare.proposal.requests.len(),
                "byzantine pre-prepare: {name}"
            );
            state.treatments.insert(slot, treatment);
            while state.treatments.len() > REMEMBERED_SLOTS {
                state.treatments.pop_first();
            }
            while state.equivocated.len() > REMEMBERED_SLOTS {
                state.equivocated.pop_first();
            }
        }
        &state.treatments[&slot]
    }

    fn flood(&self, pre_prepare: &PrePrepare) -> Frame {
        let honest = &pre_prepare.proposal;
        let size = (self.max_batch * FLOOD_FACTOR).min(FLOOD_MAX_REQUESTS);
        let proposal = Proposal {
            requests: honest.requests.iter().cycle().take(size).cloned().collect(),
            ..(**honest).clone()
        };
        self.pre_prepare(pre_prepare.view, proposal).0
    }

    /// Group B's proposal for this sequence number: empty (so that it starts no timer at group
    /// B), chained to group B's previous one.
    fn equivocation(&self, state: &mut State, pre_prepare: &PrePrepare) -> Treatment {
        let honest = &pre_prepare.proposal;
        let prev = state
            .equivocated
            .get(&(honest.seq - 1))
            .copied()
            .unwrap_or(honest.prev);
        let proposal = Proposal {
            requests: Vec::new(),
            prev,
            ..(**honest).clone()
        };
        let (view, seq) = (pre_prepare.view, proposal.seq);
        let (pre_prepare, digest) = self.pre_prepare(view, proposal);
        state.equivocated.insert(seq, digest);
        let commit = self.signed(Message::Commit(Vote { view, seq, digest }));
        Treatment::Equivocate {
            pre_prepare,
            commit,
        }
    }

    fn pre_prepare(&self, view: View, proposal: Proposal) -> (Frame, Digest) {
        let digest = ledger::proposal_digest(&proposal);
        let frame = self.signed(Message::PrePrepare(PrePrepare {
            view,
            digest,
            proposal: Arc::new(proposal),
        }));
        (frame, digest)
    }
}

/// Finding 1's attack: the certificate keeps every request's id and timestamp (and its digest)
/// but the bytes are garbage for even positions, and for odd ones a transaction that decodes
/// but whose signature does not verify.
fn substitute_payloads(pre_prepare: &mut PrePrepare) {
    let mut proposal = (*pre_prepare.proposal).clone();
    for (index, request) in proposal.requests.iter_mut().enumerate() {
        let forged = match SignedTransaction::from_request(request) {
            Ok(mut transaction) if index % 2 == 1 => {
                transaction.signature[0] ^= 0xff;
                transaction.to_bytes()
            }
            _ => {
                let mut garbage = b"byzantine garbage ".to_vec();
                garbage.extend_from_slice(&request.id);
                garbage
            }
        };
        request.payload = Arc::from(forged);
    }
    pre_prepare.proposal = Arc::new(proposal);
}

impl Transport for ByzantineTransport {
    fn send(&self, to: ReplicaId, frame: Frame) {
        for frame in self.rewrite(to, frame) {
            self.inner.send(to, frame);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaviours_parse_and_unknown_ones_are_named() {
        let parsed: Behaviours = "substitute-payloads, flood-pre-prepares,forge-status,\
                                  censor-patient=p002,equivocate"
            .parse()
            .unwrap();
        assert_eq!(
            parsed,
            Behaviours {
                substitute_payloads: true,
                flood_pre_prepares: true,
                forge_status: true,
                equivocate: true,
                censor_patient: Some("p002".into()),
            }
        );
        let error = "forge-status,teleport".parse::<Behaviours>().unwrap_err();
        assert!(error.contains("teleport"), "{error}");
    }

    #[test]
    fn groups_split_the_backups_as_the_attacks_need() {
        let transport = |n| ByzantineTransport {
            inner: Box::new(Sink),
            behaviours: Behaviours::default(),
            key: ledger::crypto::generate_key(),
            genesis_hash: [0; 32],
            id: 0,
            n,
            max_batch: 10,
            state: Mutex::new(State::default()),
        };
        let four = transport(4);
        assert_eq!(four.split_group(), BTreeSet::from([1, 2]));
        assert_eq!(four.swing(), 3);
        assert_eq!(four.equivocation_group(), BTreeSet::from([2]));
        let seven = transport(7);
        assert_eq!(seven.split_group(), BTreeSet::from([1, 2, 3, 4]));
        assert_eq!(seven.swing(), 6);
        assert_eq!(seven.equivocation_group(), BTreeSet::from([4, 5]));
    }

    struct Sink;
    impl Transport for Sink {
        fn send(&self, _: ReplicaId, _: Frame) {}
    }
}
