//! The protocol's messages (§4), as the caller authenticates them.
use std::collections::HashMap;
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

impl PrePrepare {
    /// `(view, seq, digest)`: all a signature over a pre-prepare covers, alone or inside a
    /// view-change or new-view. The replica checks a batch against its digest wherever it
    /// takes one, so a signature binds the batch all the same without hashing its megabytes.
    pub fn vote(&self) -> Vote {
        Vote {
            view: self.view,
            seq: self.proposal.seq,
            digest: self.digest,
        }
    }
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

/// On the wire and on disk each distinct batch it holds is written once (a table of batches
/// that its pre-prepares name).
#[derive(Clone, Debug, PartialEq, Eq)]
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
    /// or new-view is cloned whole (its batches are shared, not copied).
    pub fn of(message: &Message) -> Option<ViewMessage> {
        Some(match message {
            Message::PrePrepare(pp) => ViewMessage::PrePrepare(pp.vote()),
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
            ViewMessage::ViewChange(vc) => vc.signing_bytes(),
            ViewMessage::NewView(nv) => nv.signing_bytes(),
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
                    out.push((vc.from, vc.message.signing_bytes(), vc.signature));
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
    /// digest, not its batch, because the replica checks the batch against the digest; so do
    /// the pre-prepares inside a view-change or new-view ([`ViewChange::signing_bytes`]).
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
            Message::PrePrepare(pp) => vote_bytes(TAG_PRE_PREPARE, &pp.vote()),
            Message::Prepare(vote) => vote_bytes(TAG_PREPARE, vote),
            Message::Commit(vote) => commit_signing_bytes(vote),
            Message::Checkpoint(c) => {
                let mut bytes = vec![TAG_CHECKPOINT];
                bytes.extend_from_slice(&c.seq.to_le_bytes());
                bytes.extend_from_slice(&c.digest);
                bytes
            }
            Message::ViewChange(vc) => vc.signing_bytes(),
            Message::NewView(nv) => nv.signing_bytes(),
            Message::RecoveryQuery(q) => q.signing_bytes(),
            Message::RecoveryAnswer(a) => tagged_borsh(TAG_RECOVERY_ANSWER, a),
            Message::Lives(lives) => tagged_borsh(TAG_LIVES, lives),
        }
    }
}

impl ViewChange {
    /// The bytes its sender signs ([`Message::signing_bytes`]): every field, each prepared
    /// certificate's pre-prepare as [`PrePrepare::vote`]. `validate_view_change` checks each
    /// batch against its digest, so the batches are bound all the same; a new-view's 2f+1
    /// view-changes are checked by hashing kilobytes, not their batches 2f+1 times over.
    pub fn signing_bytes(&self) -> Vec<u8> {
        tagged_borsh(TAG_VIEW_CHANGE, &ViewChangeSigned::of(self))
    }
}

impl NewView {
    /// The bytes its sender signs ([`Message::signing_bytes`]): its view-changes as they were
    /// signed, with their signatures, and its O set as [`PrePrepare::vote`]s (the backup
    /// computes the O set from the view-changes and takes only that one, batches included).
    pub fn signing_bytes(&self) -> Vec<u8> {
        let signed = NewViewSigned {
            view: self.view,
            incarnation: self.incarnation,
            view_changes: self
                .view_changes
                .iter()
                .map(|vc| (vc.from, ViewChangeSigned::of(&vc.message), &vc.signature))
                .collect(),
            pre_prepares: self.pre_prepares.iter().map(PrePrepare::vote).collect(),
        };
        tagged_borsh(TAG_NEW_VIEW, &signed)
    }
}

/// What a view-change's signature covers ([`ViewChange::signing_bytes`]).
#[derive(BorshSerialize)]
struct ViewChangeSigned<'a> {
    new_view: View,
    incarnation: u64,
    checkpoint: &'a Checkpoint,
    checkpoint_proof: &'a [Signed<Checkpoint>],
    prepared: Vec<(Vote, &'a [Signed<Vote>])>,
}

impl<'a> ViewChangeSigned<'a> {
    fn of(vc: &'a ViewChange) -> Self {
        ViewChangeSigned {
            new_view: vc.new_view,
            incarnation: vc.incarnation,
            checkpoint: &vc.checkpoint,
            checkpoint_proof: &vc.checkpoint_proof,
            prepared: vc
                .prepared
                .iter()
                .map(|cert| (cert.pre_prepare.vote(), &cert.prepares[..]))
                .collect(),
        }
    }
}

/// What a new-view's signature covers ([`NewView::signing_bytes`]).
#[derive(BorshSerialize)]
struct NewViewSigned<'a> {
    view: View,
    incarnation: u64,
    view_changes: Vec<(ReplicaId, ViewChangeSigned<'a>, &'a Signature)>,
    pre_prepares: Vec<Vote>,
}

/// A [`NewView`] as it is written (on the wire, and in `node.db`): each batch once, in a table
/// in the order the batches first appear, every pre-prepare naming its entry. Its 2f+1
/// view-changes mostly carry the same prepared batches and its O set re-issues them: written
/// whole, a new-view was 2f+2 times its O set (185 MB for 72 full batches, and over the frame
/// bound at about 109: a halt with every validator honest, red team s60 F2).
#[derive(BorshSerialize, BorshDeserialize)]
struct NewViewWire {
    view: View,
    incarnation: u64,
    batches: Vec<Arc<Proposal>>,
    view_changes: Vec<Signed<ViewChangeWire>>,
    pre_prepares: Vec<PrePrepareWire>,
}

#[derive(BorshSerialize, BorshDeserialize)]
struct ViewChangeWire {
    new_view: View,
    incarnation: u64,
    checkpoint: Checkpoint,
    checkpoint_proof: Vec<Signed<Checkpoint>>,
    prepared: Vec<(PrePrepareWire, Vec<Signed<Vote>>)>,
}

/// A pre-prepare whose batch is entry `batch` of [`NewViewWire::batches`].
#[derive(BorshSerialize, BorshDeserialize)]
struct PrePrepareWire {
    view: View,
    digest: Digest,
    batch: u32,
}

/// The batches of a new-view being written: equal batches (the same digest and the same
/// contents; view-changes decoded apart hold equal batches in distinct allocations) share an
/// entry. Two batches under one digest (no valid new-view has them) get an entry each, which
/// every reader refuses ([`BatchNames`]).
#[derive(Default)]
struct BatchTable {
    batches: Vec<Arc<Proposal>>,
    by_digest: HashMap<Digest, Vec<u32>>,
}

impl BatchTable {
    fn entry(&mut self, pp: &PrePrepare) -> PrePrepareWire {
        let entries = self.by_digest.entry(pp.digest).or_default();
        let found = entries.iter().copied().find(|i| {
            let held = &self.batches[*i as usize];
            Arc::ptr_eq(held, &pp.proposal) || **held == *pp.proposal
        });
        let batch = found.unwrap_or_else(|| {
            // At most n view-changes of L certificates and L pre-prepares: far below u32.
            let i = self.batches.len() as u32;
            self.batches.push(pp.proposal.clone());
            entries.push(i);
            i
        });
        PrePrepareWire {
            view: pp.view,
            digest: pp.digest,
            batch,
        }
    }
}

/// Reads the pre-prepares of a [`NewViewWire`] back: each must name an entry already named
/// or the next one, so that every entry is named (a table padded with batches nothing uses
/// is refused) and in the order the writer gives them; and entries and digests must match one
/// to one. No valid new-view holds two batches under one digest (each batch is checked against
/// its digest), so the writer of a valid one writes each digest's batch once; refusing every
/// other table keeps reading canonical (one encoding per new-view: red team s62 F2) in constant
/// time per name, with no batch compared with another.
struct BatchNames<'a> {
    batches: &'a [Arc<Proposal>],
    /// The digest of each entry named so far, in order.
    digests: Vec<Digest>,
    entries: HashMap<Digest, usize>,
}

impl BatchNames<'_> {
    fn pre_prepare(&mut self, pp: PrePrepareWire) -> std::io::Result<PrePrepare> {
        let refused = |what| Err(std::io::Error::new(std::io::ErrorKind::InvalidData, what));
        let i = pp.batch as usize;
        let named = self.digests.len();
        if i > named || i >= self.batches.len() {
            return refused("a new-view names a batch out of its table's order");
        }
        if i == named {
            if self.entries.insert(pp.digest, i).is_some() {
                return refused("a new-view writes two batches under one digest");
            }
            self.digests.push(pp.digest);
        } else if self.digests[i] != pp.digest {
            return refused("a new-view names one batch under two digests");
        }
        Ok(PrePrepare {
            view: pp.view,
            digest: pp.digest,
            proposal: self.batches[i].clone(),
        })
    }
}

impl BorshSerialize for NewView {
    fn serialize<W: std::io::Write>(&self, writer: &mut W) -> std::io::Result<()> {
        let mut table = BatchTable::default();
        let view_changes = self
            .view_changes
            .iter()
            .map(|vc| Signed {
                from: vc.from,
                message: ViewChangeWire {
                    new_view: vc.message.new_view,
                    incarnation: vc.message.incarnation,
                    checkpoint: vc.message.checkpoint,
                    checkpoint_proof: vc.message.checkpoint_proof.clone(),
                    prepared: vc
                        .message
                        .prepared
                        .iter()
                        .map(|cert| (table.entry(&cert.pre_prepare), cert.prepares.clone()))
                        .collect(),
                },
                signature: vc.signature,
            })
            .collect();
        let pre_prepares = self.pre_prepares.iter().map(|pp| table.entry(pp)).collect();
        NewViewWire {
            view: self.view,
            incarnation: self.incarnation,
            batches: table.batches,
            view_changes,
            pre_prepares,
        }
        .serialize(writer)
    }
}

impl BorshDeserialize for NewView {
    fn deserialize_reader<R: std::io::Read>(reader: &mut R) -> std::io::Result<Self> {
        let wire = NewViewWire::deserialize_reader(reader)?;
        let mut names = BatchNames {
            batches: &wire.batches,
            digests: Vec::new(),
            entries: HashMap::new(),
        };
        let mut view_changes = Vec::with_capacity(wire.view_changes.len());
        for vc in wire.view_changes {
            let mut prepared = Vec::with_capacity(vc.message.prepared.len());
            for (pre_prepare, prepares) in vc.message.prepared {
                prepared.push(PreparedCertificate {
                    pre_prepare: names.pre_prepare(pre_prepare)?,
                    prepares,
                });
            }
            view_changes.push(Signed {
                from: vc.from,
                message: ViewChange {
                    new_view: vc.message.new_view,
                    incarnation: vc.message.incarnation,
                    checkpoint: vc.message.checkpoint,
                    checkpoint_proof: vc.message.checkpoint_proof,
                    prepared,
                },
                signature: vc.signature,
            });
        }
        let mut pre_prepares = Vec::with_capacity(wire.pre_prepares.len());
        for pp in wire.pre_prepares {
            pre_prepares.push(names.pre_prepare(pp)?);
        }
        if names.digests.len() != wire.batches.len() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "a new-view carries a batch nothing in it names",
            ));
        }
        Ok(NewView {
            view: wire.view,
            incarnation: wire.incarnation,
            view_changes,
            pre_prepares,
        })
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

    fn batch(seq: SeqNo, fill: u8) -> Arc<Proposal> {
        Arc::new(Proposal {
            seq,
            view: 0,
            proposer: 0,
            prev: [0; 32],
            time_ms: seq,
            requests: vec![Request {
                id: [fill; 32],
                timestamp_ms: 1,
                payload: vec![fill; 10_000].into(),
            }],
        })
    }

    fn signed_vote(from: ReplicaId, seq: SeqNo) -> Signed<Vote> {
        Signed {
            from,
            message: Vote {
                view: 0,
                seq,
                digest: [seq as u8; 32],
            },
            signature: Signature([from as u8; 64]),
        }
    }

    /// A new-view of three view-changes that each carry batches 1 to 4, decoded apart (equal
    /// batches in distinct allocations), and an O set re-issuing them.
    fn new_view_of_shared_batches() -> NewView {
        let view_changes = (0..3)
            .map(|from| Signed {
                from,
                message: ViewChange {
                    new_view: 1,
                    incarnation: 0,
                    checkpoint: Checkpoint {
                        seq: 0,
                        digest: [0; 32],
                    },
                    checkpoint_proof: Vec::new(),
                    prepared: (1..=4)
                        .map(|seq| PreparedCertificate {
                            pre_prepare: PrePrepare {
                                view: 0,
                                digest: [seq as u8; 32],
                                proposal: batch(seq, seq as u8),
                            },
                            prepares: vec![signed_vote(1, seq), signed_vote(2, seq)],
                        })
                        .collect(),
                },
                signature: Signature([7; 64]),
            })
            .collect();
        NewView {
            view: 1,
            incarnation: 0,
            view_changes,
            pre_prepares: (1..=4)
                .map(|seq| PrePrepare {
                    view: 1,
                    digest: [seq as u8; 32],
                    proposal: batch(seq, seq as u8),
                })
                .collect(),
        }
    }

    /// Written, a new-view holds each batch once (it held them 2f+2 times: red team s60 F2),
    /// and reads back equal, its equal batches shared.
    #[test]
    fn a_new_view_is_written_with_each_batch_once() {
        let nv = new_view_of_shared_batches();
        let whole: usize = nv
            .view_changes
            .iter()
            .map(|vc| borsh::to_vec(&vc.message).expect("encodes").len())
            .sum();
        let bytes = borsh::to_vec(&nv).expect("encodes");
        assert!(whole > 4 * 3 * 10_000, "the view-changes hold 12 batches");
        assert!(bytes.len() > 4 * 10_000, "{}", bytes.len());
        assert!(
            bytes.len() < 5 * 10_000,
            "{} bytes for 4 batches",
            bytes.len()
        );
        let read: NewView = borsh::from_slice(&bytes).expect("decodes");
        assert_eq!(read, nv);
        let first = &read.view_changes[0].message.prepared[0]
            .pre_prepare
            .proposal;
        assert!(Arc::ptr_eq(
            first,
            &read.view_changes[2].message.prepared[0]
                .pre_prepare
                .proposal
        ));
        assert!(Arc::ptr_eq(first, &read.pre_prepares[0].proposal));
        assert_eq!(
            Message::NewView(read).signing_bytes(),
            Message::NewView(nv).signing_bytes()
        );
    }

    /// Two batches under one digest (a certificate that lies about its batch, which the
    /// replica would refuse) are written apart, and refused when read: a new-view that holds
    /// them is not valid, and a reader compares no batch with another.
    #[test]
    fn batches_that_claim_one_digest_but_differ_are_refused_when_read() {
        let mut nv = new_view_of_shared_batches();
        nv.view_changes[1].message.prepared[2].pre_prepare.proposal = batch(3, 99);
        let bytes = borsh::to_vec(&nv).expect("encodes");
        assert!(borsh::from_slice::<NewView>(&bytes).is_err());
    }

    /// A table padded with a batch nothing names, or a name past the next entry, is refused.
    #[test]
    fn a_new_view_naming_its_batches_out_of_order_is_refused() {
        let nv = new_view_of_shared_batches();
        let mut table = BatchTable::default();
        let pre_prepares: Vec<PrePrepareWire> =
            nv.pre_prepares.iter().map(|pp| table.entry(pp)).collect();
        let wire = |batches: Vec<Arc<Proposal>>, pre_prepares: Vec<PrePrepareWire>| {
            borsh::to_vec(&NewViewWire {
                view: 1,
                incarnation: 0,
                batches,
                view_changes: Vec::new(),
                pre_prepares,
            })
            .expect("encodes")
        };
        let again = |pps: &[PrePrepareWire]| {
            pps.iter()
                .map(|pp| PrePrepareWire {
                    view: pp.view,
                    digest: pp.digest,
                    batch: pp.batch,
                })
                .collect::<Vec<_>>()
        };
        let good = wire(table.batches.clone(), again(&pre_prepares));
        assert!(borsh::from_slice::<NewView>(&good).is_ok());
        let mut padded = table.batches.clone();
        padded.push(batch(9, 9));
        assert!(borsh::from_slice::<NewView>(&wire(padded, again(&pre_prepares))).is_err());
        let mut skipping = again(&pre_prepares);
        skipping[0].batch = 1;
        assert!(borsh::from_slice::<NewView>(&wire(table.batches.clone(), skipping)).is_err());
        let mut past = again(&pre_prepares);
        past[3].batch = 4;
        assert!(borsh::from_slice::<NewView>(&wire(table.batches, past)).is_err());
    }

    /// A view-change's and a new-view's signatures cover each batch by its digest: another
    /// batch under the same digest signs the same (the replica refuses it by its digest,
    /// `validate_view_change`); another digest, view or prepare does not.
    #[test]
    fn view_change_signatures_cover_batches_by_digest() {
        let nv = new_view_of_shared_batches();
        let vc = nv.view_changes[0].message.clone();
        let mut swapped = vc.clone();
        swapped.prepared[0].pre_prepare.proposal = batch(1, 42);
        assert_eq!(swapped.signing_bytes(), vc.signing_bytes());
        assert!(
            vc.signing_bytes().len() < 2_000,
            "{}",
            vc.signing_bytes().len()
        );
        let mut other = vc.clone();
        other.prepared[0].pre_prepare.digest = [42; 32];
        assert_ne!(other.signing_bytes(), vc.signing_bytes());
        let mut other = vc.clone();
        other.prepared[0].pre_prepare.view = 5;
        assert_ne!(other.signing_bytes(), vc.signing_bytes());
        let mut other = vc.clone();
        other.prepared[0].prepares.pop();
        assert_ne!(other.signing_bytes(), vc.signing_bytes());
        let mut other = nv.clone();
        other.pre_prepares.pop();
        assert_ne!(other.signing_bytes(), nv.signing_bytes());
        let mut other = nv.clone();
        other.view_changes[1].signature = Signature([8; 64]);
        assert_ne!(other.signing_bytes(), nv.signing_bytes());
        let mut other = nv.clone();
        other.view_changes[1].message.checkpoint.seq = 4;
        assert_ne!(other.signing_bytes(), nv.signing_bytes());
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
