//! The protocol's messages (§4), as the caller authenticates them.
use std::sync::Arc;

use borsh::{BorshDeserialize, BorshSerialize};

use crate::types::{Committed, Digest, Proposal, ReplicaId, Request, SeqNo, Signature, View};

/// A message with its sender and the sender's signature over [`Message::signing_bytes`].
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Signed<M> {
    pub from: ReplicaId,
    pub message: M,
    pub signature: Signature,
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct PrePrepare {
    pub view: View,
    pub digest: Digest,
    pub proposal: Arc<Proposal>,
}

/// Prepare and commit carry the same fields (§4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Vote {
    pub view: View,
    pub seq: SeqNo,
    pub digest: Digest,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Checkpoint {
    pub seq: SeqNo,
    pub digest: Digest,
}

/// A pre-prepare and 2f matching prepares from distinct backups (§4.4's P set entry).
///
/// The pre-prepare is carried unsigned: 2f prepares from distinct backups of its view (at least
/// f of them honest, each of which only prepared after accepting the primary's pre-prepare)
/// already prove that the primary of `pre_prepare.view` issued it, and two such certificates
/// for one view and sequence number cannot disagree (their 2f-backup sets share an honest
/// backup). This lets a new primary's O set, which it cannot sign inside the pure core, be
/// carried by the signed [`NewView`] alone.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct PreparedCertificate {
    pub pre_prepare: PrePrepare,
    pub prepares: Vec<Signed<Vote>>,
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct ViewChange {
    pub new_view: View,
    /// The sender's incarnation ([`crate::Restored::incarnation`]): replicas refuse a
    /// view-change of an older incarnation of its sender than the newest they know (crate
    /// docs, "Recovering from lost state"; TOCS'02 §4.3.2's key refresh).
    pub incarnation: u64,
    /// The sender's last stable checkpoint and the 2f+1 checkpoint messages that prove it
    /// (empty for the genesis checkpoint at sequence 0).
    pub checkpoint: Checkpoint,
    pub checkpoint_proof: Vec<Signed<Checkpoint>>,
    pub prepared: Vec<PreparedCertificate>,
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct NewView {
    pub view: View,
    /// The primary's incarnation, as in [`ViewChange::incarnation`].
    pub incarnation: u64,
    pub view_changes: Vec<Signed<ViewChange>>,
    /// The O set: one pre-prepare per sequence number from just above the chosen checkpoint,
    /// re-issued in `view`, covered by the new-view's own signature. It stops at the first gap
    /// or broken `prev` link (see `docs/ARCHITECTURE.md` and the crate docs).
    pub pre_prepares: Vec<PrePrepare>,
}

/// A replica that lost its durable state asks the others where the cluster is (see the crate
/// docs, "Recovering from lost state"). `nonce` is drawn by its caller at this start, so that
/// answers to an earlier query cannot be replayed; `incarnation` announces this life, so that
/// every answerer refuses view-changes and new-views of its earlier lives from then on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct RecoveryQuery {
    pub nonce: u64,
    pub incarnation: u64,
}

impl RecoveryQuery {
    /// The bytes its sender signed, as [`Message::RecoveryQuery`]: a signed query is its
    /// sender's own word for its life, which any replica may relay ([`Message::Lives`]).
    pub fn signing_bytes(&self) -> Vec<u8> {
        tagged_borsh(TAG_RECOVERY_QUERY, self)
    }
}

/// A replica's life as its own signed recovery query proves it: the newest one known of each
/// replica is kept, persisted ([`crate::Durable::Incarnation`]) and relayed (crate docs,
/// "Recovering from lost state").
pub type Life = Signed<RecoveryQuery>;

/// One replica's answer to a [`RecoveryQuery`], sent to the querier only. Each claim it makes
/// is proven by signatures that the caller verifies at the edge
/// ([`Message::embedded_signatures`]), so a faulty answerer can understate the querier's bound
/// but never inflate it (see the crate docs, "Recovering from lost state").
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct RecoveryAnswer {
    /// The query's nonce.
    pub nonce: u64,
    /// Who asked: an answer is only valid for that replica.
    pub querier: ReplicaId,
    /// The highest sequence number the answerer executed, with `executed_proof`. The replica
    /// puts its own last executed sequence number here and no proof; the caller replaces both
    /// with its chain's head and that block's commit certificate before signing (caller's
    /// contract in the crate docs). 0 with no proof claims nothing.
    pub last_executed: SeqNo,
    /// The commit certificate of `last_executed`: commits of one view and digest at
    /// `last_executed` from at least a quorum of distinct replicas (see [`commit_votes`]).
    pub executed_proof: Vec<Signed<Vote>>,
    /// The message of the highest view the answerer accepted from the querier, signed by the
    /// querier: the querier's own word for a view it was in (or asked to move to).
    pub querier_message: Option<Box<Signed<ViewMessage>>>,
    /// The newest life the answerer knows of each replica (its own included): a querier that
    /// lost its state learns them again before it takes part (crate docs).
    pub lives: Vec<Life>,
}

impl RecoveryAnswer {
    /// The caller's duty (crate docs, contract item 10) for a caller that keeps the
    /// [`Committed`] blocks it executed: claim the last one, `head`, with its certificate, or
    /// nothing (0, no proof) if there is none.
    pub fn prove_executed(&mut self, head: Option<&Committed>) {
        self.last_executed = head.map_or(0, |c| c.proposal.seq);
        self.executed_proof = head.map(Committed::commit_votes).unwrap_or_default();
    }
}

/// A message that belongs to a view, as a [`RecoveryAnswer`] carries the querier's. Its own
/// type rather than [`Message`], so that an answer cannot nest answers (decoding depth is
/// bounded by the type), and a pre-prepare travels as the vote its signature covers, without
/// its batch.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum ViewMessage {
    /// A pre-prepare's `(view, seq, digest)`: all its signature covers.
    PrePrepare(Vote),
    Prepare(Vote),
    Commit(Vote),
    ViewChange(ViewChange),
    NewView(NewView),
}

impl ViewMessage {
    /// The view-carrying part of `message` (`None` for messages without a view); a view-change
    /// or new-view is cloned whole, since its signature covers every byte.
    pub fn of(message: &Message) -> Option<ViewMessage> {
        Some(match message {
            Message::PrePrepare(pp) => ViewMessage::PrePrepare(Vote {
                view: pp.view,
                seq: pp.proposal.seq,
                digest: pp.digest,
            }),
            Message::Prepare(vote) => ViewMessage::Prepare(*vote),
            Message::Commit(vote) => ViewMessage::Commit(*vote),
            Message::ViewChange(vc) => ViewMessage::ViewChange(vc.clone()),
            Message::NewView(nv) => ViewMessage::NewView(nv.clone()),
            Message::Forward(_)
            | Message::Checkpoint(_)
            | Message::RecoveryQuery(_)
            | Message::RecoveryAnswer(_)
            | Message::Lives(_) => return None,
        })
    }

    /// The view, as [`Message::view`] gives it for the message this came from.
    pub fn view(&self) -> View {
        match self {
            ViewMessage::PrePrepare(v) | ViewMessage::Prepare(v) | ViewMessage::Commit(v) => v.view,
            ViewMessage::ViewChange(vc) => vc.new_view,
            ViewMessage::NewView(nv) => nv.view,
        }
    }

    /// Whether it is a single vote (small), not a view-change or new-view.
    pub fn is_vote(&self) -> bool {
        matches!(
            self,
            ViewMessage::PrePrepare(_) | ViewMessage::Prepare(_) | ViewMessage::Commit(_)
        )
    }

    /// The bytes its sender signed: those of the message it came from.
    pub fn signing_bytes(&self) -> Vec<u8> {
        match self {
            ViewMessage::PrePrepare(vote) => vote_bytes(TAG_PRE_PREPARE, vote),
            ViewMessage::Prepare(vote) => vote_bytes(TAG_PREPARE, vote),
            ViewMessage::Commit(vote) => commit_signing_bytes(vote),
            ViewMessage::ViewChange(vc) => tagged_borsh(TAG_VIEW_CHANGE, vc),
            ViewMessage::NewView(nv) => tagged_borsh(TAG_NEW_VIEW, nv),
        }
    }
}

/// A commit certificate (`signatures` by their signers over
/// [`commit_signing_bytes`]`(vote)`) as the signed commit votes it is made of.
pub fn commit_votes(
    vote: Vote,
    signatures: impl IntoIterator<Item = (ReplicaId, Signature)>,
) -> Vec<Signed<Vote>> {
    signatures
        .into_iter()
        .map(|(from, signature)| Signed {
            from,
            message: vote,
            signature,
        })
        .collect()
}

impl Committed {
    /// Its commit certificate as the signed commits it is made of (what a [`RecoveryAnswer`]
    /// carries as `executed_proof`).
    pub fn commit_votes(&self) -> Vec<Signed<Vote>> {
        let vote = Vote {
            view: self.commit_view,
            seq: self.proposal.seq,
            digest: self.digest,
        };
        commit_votes(vote, self.signatures.iter().copied())
    }
}

/// The messages of §4. A [`Checkpoint`] at a sequence number that is not a multiple of the
/// checkpoint interval is a status claim ("I have executed up to here"): it never becomes stable
/// but lets a lagging replica learn that f+1 replicas are ahead of it and fetch state.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum Message {
    /// Requests a backup received and forwards to the primary (§4.1).
    Forward(Vec<Request>),
    PrePrepare(PrePrepare),
    Prepare(Vote),
    Commit(Vote),
    Checkpoint(Checkpoint),
    ViewChange(ViewChange),
    NewView(NewView),
    /// Not in the paper's normal protocol: recovery from lost state (crate docs).
    RecoveryQuery(RecoveryQuery),
    RecoveryAnswer(RecoveryAnswer),
    /// Lives a replica relays (at most one per replica): the one a query just announced to
    /// it, and all it knows while it changes views, so that every replica learns a new life
    /// together and one that heard it alone cannot be made to refuse the others' new-views.
    Lives(Vec<Life>),
}

/// Domain tags keep a signature on one kind of message from being replayed as another.
const TAG_FORWARD: u8 = 0;
const TAG_PRE_PREPARE: u8 = 1;
const TAG_PREPARE: u8 = 2;
const TAG_COMMIT: u8 = 3;
const TAG_CHECKPOINT: u8 = 4;
const TAG_VIEW_CHANGE: u8 = 5;
const TAG_NEW_VIEW: u8 = 6;
const TAG_RECOVERY_QUERY: u8 = 7;
const TAG_RECOVERY_ANSWER: u8 = 8;
const TAG_LIVES: u8 = 9;

impl Message {
    /// The view a message belongs to (for a view-change, the view it asks to move to).
    pub fn view(&self) -> Option<View> {
        match self {
            Message::PrePrepare(pp) => Some(pp.view),
            Message::Prepare(v) | Message::Commit(v) => Some(v.view),
            Message::ViewChange(vc) => Some(vc.new_view),
            Message::NewView(nv) => Some(nv.view),
            Message::Forward(_)
            | Message::Checkpoint(_)
            | Message::RecoveryQuery(_)
            | Message::RecoveryAnswer(_)
            | Message::Lives(_) => None,
        }
    }

    /// Whether this kind of message may carry signed messages (the kinds
    /// [`Message::embedded_signatures`] looks into; both matches list every kind): cheap, before
    /// what they carry is serialised. A kind missing here would still be checked in full; it
    /// would only escape the penalty on such messages.
    pub fn may_carry_signatures(&self) -> bool {
        match self {
            Message::ViewChange(_)
            | Message::NewView(_)
            | Message::RecoveryAnswer(_)
            | Message::Lives(_) => true,
            Message::Forward(_)
            | Message::PrePrepare(_)
            | Message::Prepare(_)
            | Message::Commit(_)
            | Message::Checkpoint(_)
            | Message::RecoveryQuery(_) => false,
        }
    }

    /// Every signed message embedded in this one, as `(signer, signing bytes, signature)`:
    /// checkpoint proofs and prepares inside a view-change, the view-changes inside a
    /// new-view (recursively), a recovery answer's commit certificate, querier's message and
    /// lives, and relayed lives. The caller must verify all of them, as it verifies the outer
    /// signature, before handing the message to the replica: the core never checks signatures.
    pub fn embedded_signatures(&self) -> Vec<(ReplicaId, Vec<u8>, Signature)> {
        let mut out = Vec::new();
        match self {
            Message::ViewChange(vc) => view_change_signatures(vc, &mut out),
            Message::NewView(nv) => {
                for vc in &nv.view_changes {
                    out.push((
                        vc.from,
                        Message::ViewChange(vc.message.clone()).signing_bytes(),
                        vc.signature,
                    ));
                    view_change_signatures(&vc.message, &mut out);
                }
            }
            Message::RecoveryAnswer(answer) => {
                for commit in &answer.executed_proof {
                    out.push((
                        commit.from,
                        commit_signing_bytes(&commit.message),
                        commit.signature,
                    ));
                }
                // Only the querier's signature: the querier takes the view it signed, nothing
                // else from inside (what a view-change carries was checked when it arrived).
                if let Some(m) = &answer.querier_message {
                    out.push((m.from, m.message.signing_bytes(), m.signature));
                }
                life_signatures(&answer.lives, &mut out);
            }
            Message::Lives(lives) => life_signatures(lives, &mut out),
            // Listed, not `_`: a new kind must be placed here and in `may_carry_signatures`.
            Message::Forward(_)
            | Message::PrePrepare(_)
            | Message::Prepare(_)
            | Message::Commit(_)
            | Message::Checkpoint(_)
            | Message::RecoveryQuery(_) => {}
        }
        out
    }

    /// The bytes a sender signs. Small and fixed-size where it can be: a pre-prepare signs its
    /// digest, not its batch, because the replica checks the batch against the digest.
    /// A commit signs `commit_signing_bytes`, so commit signatures form the block certificate.
    pub fn signing_bytes(&self) -> Vec<u8> {
        match self {
            Message::Forward(requests) => {
                let mut bytes = vec![TAG_FORWARD];
                for request in requests {
                    bytes.extend_from_slice(&request.id);
                }
                bytes
            }
            Message::PrePrepare(pp) => vote_bytes(
                TAG_PRE_PREPARE,
                &Vote {
                    view: pp.view,
                    seq: pp.proposal.seq,
                    digest: pp.digest,
                },
            ),
            Message::Prepare(vote) => vote_bytes(TAG_PREPARE, vote),
            Message::Commit(vote) => commit_signing_bytes(vote),
            Message::Checkpoint(c) => {
                let mut bytes = vec![TAG_CHECKPOINT];
                bytes.extend_from_slice(&c.seq.to_le_bytes());
                bytes.extend_from_slice(&c.digest);
                bytes
            }
            Message::ViewChange(vc) => tagged_borsh(TAG_VIEW_CHANGE, vc),
            Message::NewView(nv) => tagged_borsh(TAG_NEW_VIEW, nv),
            Message::RecoveryQuery(q) => q.signing_bytes(),
            Message::RecoveryAnswer(a) => tagged_borsh(TAG_RECOVERY_ANSWER, a),
            Message::Lives(lives) => tagged_borsh(TAG_LIVES, lives),
        }
    }
}

fn life_signatures(lives: &[Life], out: &mut Vec<(ReplicaId, Vec<u8>, Signature)>) {
    for life in lives {
        out.push((life.from, life.message.signing_bytes(), life.signature));
    }
}

fn view_change_signatures(vc: &ViewChange, out: &mut Vec<(ReplicaId, Vec<u8>, Signature)>) {
    for c in &vc.checkpoint_proof {
        out.push((
            c.from,
            Message::Checkpoint(c.message).signing_bytes(),
            c.signature,
        ));
    }
    for cert in &vc.prepared {
        for p in &cert.prepares {
            out.push((
                p.from,
                Message::Prepare(p.message).signing_bytes(),
                p.signature,
            ));
        }
    }
}

/// The bytes of a commit vote, which a block's commit certificate verifies against.
pub fn commit_signing_bytes(vote: &Vote) -> Vec<u8> {
    vote_bytes(TAG_COMMIT, vote)
}

fn vote_bytes(tag: u8, vote: &Vote) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(1 + 8 + 8 + 32);
    bytes.push(tag);
    bytes.extend_from_slice(&vote.view.to_le_bytes());
    bytes.extend_from_slice(&vote.seq.to_le_bytes());
    bytes.extend_from_slice(&vote.digest);
    bytes
}

fn tagged_borsh<T: BorshSerialize>(tag: u8, value: &T) -> Vec<u8> {
    let mut bytes = vec![tag];
    // Serialising into a Vec cannot fail.
    value.serialize(&mut bytes).unwrap_or_default();
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vote(view: View) -> Vote {
        Vote {
            view,
            seq: 3,
            digest: [4; 32],
        }
    }

    /// The querier checks its own signature over a `ViewMessage`'s bytes: they must be the
    /// bytes it signed when it sent the message, for every kind.
    #[test]
    fn view_message_signs_as_the_message_it_came_from() {
        let pre_prepare = PrePrepare {
            view: 2,
            digest: [4; 32],
            proposal: Arc::new(Proposal {
                seq: 3,
                view: 2,
                proposer: 2,
                prev: [0; 32],
                time_ms: 1,
                requests: Vec::new(),
            }),
        };
        let view_change = ViewChange {
            new_view: 5,
            incarnation: 0,
            checkpoint: Checkpoint {
                seq: 0,
                digest: [0; 32],
            },
            checkpoint_proof: Vec::new(),
            prepared: Vec::new(),
        };
        let new_view = NewView {
            view: 6,
            incarnation: 0,
            view_changes: Vec::new(),
            pre_prepares: vec![pre_prepare.clone()],
        };
        let messages = [
            Message::PrePrepare(pre_prepare),
            Message::Prepare(vote(3)),
            Message::Commit(vote(4)),
            Message::ViewChange(view_change),
            Message::NewView(new_view),
        ];
        for message in messages {
            let shown = ViewMessage::of(&message).expect("has a view");
            assert_eq!(
                shown.signing_bytes(),
                message.signing_bytes(),
                "{message:?}"
            );
            assert_eq!(Some(shown.view()), message.view());
        }
        assert_eq!(ViewMessage::of(&Message::Forward(Vec::new())), None);
    }

    /// The edge verifies every commit of the certificate, the querier's signature and every
    /// life, in an answer or relayed.
    #[test]
    fn recovery_answer_lists_its_embedded_signatures() {
        let commit = vote(1);
        let query = RecoveryQuery {
            nonce: 9,
            incarnation: 2,
        };
        let life = Signed {
            from: 1,
            message: query,
            signature: Signature([9; 64]),
        };
        let answer = RecoveryAnswer {
            nonce: 1,
            querier: 3,
            last_executed: 3,
            executed_proof: commit_votes(commit, [0, 1, 2].map(|i| (i, Signature([i as u8; 64])))),
            querier_message: Some(Box::new(Signed {
                from: 3,
                message: ViewMessage::Prepare(vote(0)),
                signature: Signature([3; 64]),
            })),
            lives: vec![life.clone()],
        };
        let listed = Message::RecoveryAnswer(answer).embedded_signatures();
        let mut expected: Vec<_> = (0..3)
            .map(|i| {
                (
                    i,
                    Message::Commit(commit).signing_bytes(),
                    Signature([i as u8; 64]),
                )
            })
            .collect();
        expected.push((
            3,
            Message::Prepare(vote(0)).signing_bytes(),
            Signature([3; 64]),
        ));
        let life_signature = (
            1,
            Message::RecoveryQuery(query).signing_bytes(),
            Signature([9; 64]),
        );
        expected.push(life_signature.clone());
        assert_eq!(listed, expected);
        let relayed = Message::Lives(vec![life]).embedded_signatures();
        assert_eq!(relayed, vec![life_signature]);
    }
}
