//! The edge where signatures are made and checked: nothing reaches the replica unauthenticated,
//! and no block is applied from a peer without its certificate.
//!
//! A transaction is checked here from its bytes alone (`ledger::crypto::check_entries`: it
//! decodes, its id and timestamp are the request's, its body is the one its hash names, its
//! signature verifies under the key written in its envelope or the genesis key of its validator
//! signer, and every new key's proof of possession verifies; ZIP-215, batched). That is the
//! whole of consensus validity: the rules of the state machine are for admission
//! ([`crate::admission`]) and for the chain.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use ledger::crypto::{self, SigningKey, VerifyingKey};
use ledger::tx::{MAX_BODY_BYTES, MAX_TX_BYTES};
use ledger::{Block, Built, Checked, Genesis, Hash, SignedTx};
use pbft::{Message, ReplicaId, Request, Signed};

use crate::budget::PeerBudgets;
use crate::error::NodeError;

/// Transaction signatures remembered as checked. A transaction reaches a validator several
/// times (forwarded, retransmitted, then in a pre-prepare), within a few seconds; it is
/// verified once. About 6 MB with their order, full (the table grows to 131,072 slots of 32
/// bytes: the slots of removed entries count until it is rebuilt; 19 MB when each held the id
/// and the signature, 76 MB with 1 << 18 of those, issue 11).
const REMEMBERED_SIGNATURES: usize = 56_000;
/// Decoded transactions kept until their block commits: under what a table of 16,384 slots
/// holds (its slots about 220 bytes each, besides what each transaction holds; 1 << 16 took
/// 33 MB in its table, issue 11). Several seconds of the highest rate; one forgotten costs a
/// decode when its block commits.
const REMEMBERED_DECODED: usize = 14_000;
/// Signatures carried inside messages remembered as checked (about 200 bytes each, with the
/// order they are forgotten in). A new-view carries the view-changes again, with their votes,
/// and a replayed view-change all of its votes: each is verified once. About ten full
/// new-views' worth (one carries up to about 1,500).
const REMEMBERED_EMBEDDED: usize = 1 << 14;
/// How long the contents of a sender's messages are refused unread after one of its messages
/// carried a signature that does not verify. A correct replica relays only signatures it
/// verified, so such a message proves its sender dishonest; refused, its replays and variants
/// cost one verification each (their own signature), not a batch of hundreds (red team s17).
const CONTENTS_REFUSED_FOR: Duration = Duration::from_secs(60);
/// How long a sender's budget of carried signatures ([`Authenticator::limit_carried`]) takes to
/// fill again from empty.
const CARRIED_REFILL: Duration = Duration::from_secs(1);

/// What the signatures a message carries came to ([`Authenticator::authenticate_contents`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Contents {
    /// Each verified here (or remembered), and its requests checked.
    Authentic,
    /// More to verify than its sender's budget holds now: to be read again once the budget is
    /// full ([`Authenticator::budget_full`]), which covers any message.
    OverBudget,
}

/// The most carried signatures a sender's valid messages need at once, twice over: a
/// new-view carries up to `n` view-changes, each a checkpoint proof and up to `window`
/// prepared certificates of up to `n` votes.
pub fn carried_burst(n: usize, window: u64) -> u64 {
    let n = n as u64;
    2 * n * n * (window + 1)
}

/// A transaction decoded at the edge, with the payload it was decoded from.
struct Decoded {
    payload: Arc<[u8]>,
    transaction: SignedTx,
}

/// What one transaction's verdict is remembered by: the SHA-256 of its id and its signature's
/// bytes ([`verdict_key`]). The id does not cover the signature (docs/SECURITY.md §1), and
/// ZIP-215 accepts several encodings of one signature, some valid and some not: remembered by
/// id alone, a copy of a checked transaction with another signature encoding, or a broken
/// signature, would pass unchecked. The digest, not the 96 bytes: another pair under the same
/// key is a SHA-256 collision, and the table with its order takes a third of the memory
/// (BENCHMARKS.md "fortieth": 19 MB of a validator's heap).
type VerdictKey = Hash;

fn verdict_key(id: &Hash, signature: &[u8; 64]) -> VerdictKey {
    let mut pair = [0u8; 96];
    pair[..32].copy_from_slice(id);
    pair[32..].copy_from_slice(signature);
    ledger::sha256(&pair)
}

/// What an embedded signature's verdict is remembered by: its signer, its bytes and the hash
/// of the bytes it signs.
type EmbeddedKey = (ReplicaId, [u8; 64], Hash);

pub(crate) struct Authenticator {
    genesis_hash: Hash,
    keys: Vec<VerifyingKey>,
    verified: HashSet<VerdictKey>,
    verified_order: VecDeque<VerdictKey>,
    /// Each payload was decoded (and its id checked) when it arrived or was accepted here;
    /// the block that commits it takes it from here instead of decoding it a second time.
    /// Bounded: an evicted entry only costs a decode.
    decoded: HashMap<Hash, Decoded>,
    decoded_order: VecDeque<Hash>,
    embedded: HashSet<EmbeddedKey>,
    embedded_order: VecDeque<EmbeddedKey>,
    /// For each validator, until when its messages' contents are refused unread
    /// ([`CONTENTS_REFUSED_FOR`]).
    contents_refused_until: Vec<Option<Instant>>,
    /// For each validator, the carried signatures it may still have verified here, and when
    /// that was counted ([`Authenticator::limit_carried`]); none while unlimited.
    carried_budget: Option<PeerBudgets>,
    /// Message signatures verified here (outer and embedded), for tests of what a message
    /// costs.
    message_signatures_checked: u64,
}

/// Checks a transaction a client submits, as every validator's edge would check it, and
/// bounds its size: the request that orders it, and the transaction as decoded from that
/// request's bytes. Run by the submitter's task; the signatures by `edge`, in a batch with
/// whatever else was submitted meanwhile.
pub(crate) async fn check_submission(
    edge: &EdgeChecks,
    genesis: &Genesis,
    tx: &SignedTx,
) -> Result<(Request, SignedTx), NodeError> {
    if tx.body.len() > MAX_BODY_BYTES {
        return Err(NodeError::TooLarge {
            bytes: tx.body.len(),
            limit: MAX_BODY_BYTES,
        });
    }
    let request = tx.to_request(&genesis.hash());
    if request.payload.len() > MAX_TX_BYTES {
        return Err(NodeError::TooLarge {
            bytes: request.payload.len(),
            limit: MAX_TX_BYTES,
        });
    }
    let (request, verdict) = edge.check(request).await?;
    match verdict {
        Ok(decoded) => Ok((request, decoded)),
        Err(invalid) => Err(NodeError::Invalid(invalid)),
    }
}

/// The most submissions whose signatures one batch checks.
const EDGE_BATCH: usize = 256;

type EdgeCheck = (Request, tokio::sync::oneshot::Sender<(Request, Checked)>);

/// A validator's edge checks of submitted transactions ([`crypto::check_entries`]), on a thread
/// of their own that takes every submission waiting when it is free: a batch of one costs about
/// five times a signature in a batch of hundreds, and submissions come from many clients at
/// once. Nothing waits to fill a batch, so an idle validator answers as soon as it has checked
/// the one. A verdict depends on the entry's bytes alone, never on the others in its batch.
pub(crate) struct EdgeChecks {
    queue: std::sync::mpsc::Sender<EdgeCheck>,
}

impl EdgeChecks {
    /// Starts the checking thread; it ends when the last handle is dropped.
    pub(crate) fn start(genesis: &Genesis, name: &str) -> std::io::Result<Self> {
        let (queue, waiting) = std::sync::mpsc::channel::<EdgeCheck>();
        let keys = genesis.keys().to_vec();
        let genesis_hash = genesis.hash();
        std::thread::Builder::new()
            .name(format!("{name}-edge"))
            .spawn(move || {
                while let Ok(first) = waiting.recv() {
                    let mut batch = vec![first];
                    while batch.len() < EDGE_BATCH
                        && let Ok(next) = waiting.try_recv()
                    {
                        batch.push(next);
                    }
                    let check = |requests: Vec<&Request>| {
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            crypto::check_entries(&keys, &genesis_hash, requests)
                        }))
                    };
                    let verdicts = match check(batch.iter().map(|(request, _)| request).collect()) {
                        Ok(verdicts) => verdicts,
                        // A bug, which must not stop every later submission: each is checked
                        // alone, and one that panics again is refused.
                        Err(_) => batch
                            .iter()
                            .map(|(request, _)| {
                                check(vec![request])
                                    .ok()
                                    .and_then(|mut verdict| verdict.pop())
                                    .unwrap_or(Err(ledger::Invalid::Undecodable))
                            })
                            .collect(),
                    };
                    for ((request, reply), verdict) in batch.into_iter().zip(verdicts) {
                        // A submitter that gave up waiting drops its receiver.
                        let _ = reply.send((request, verdict));
                    }
                }
            })?;
        Ok(Self { queue })
    }

    async fn check(&self, request: Request) -> Result<(Request, Checked), NodeError> {
        let (reply, verdict) = tokio::sync::oneshot::channel();
        self.queue
            .send((request, reply))
            .map_err(|_| NodeError::Stopped)?;
        verdict.await.map_err(|_| NodeError::Stopped)
    }
}

impl Authenticator {
    pub fn new(genesis: &ledger::Genesis) -> Self {
        Self {
            genesis_hash: genesis.hash(),
            keys: genesis.keys().to_vec(),
            verified: HashSet::new(),
            verified_order: VecDeque::new(),
            decoded: HashMap::new(),
            decoded_order: VecDeque::new(),
            embedded: HashSet::new(),
            embedded_order: VecDeque::new(),
            contents_refused_until: vec![None; genesis.keys().len()],
            carried_budget: None,
            message_signatures_checked: 0,
        }
    }

    /// Limits the carried signatures each sender may have verified here (those not remembered)
    /// to `burst`, filled again over [`CARRIED_REFILL`]; a message over its sender's budget is
    /// [`Contents::OverBudget`], to be read again once it is full. Valid votes can be replayed in
    /// view-changes for views ahead of ours faster than the memo remembers them (red team s17
    /// F1); an honest validator sends a view-change per view-change timeout and a new-view per
    /// view it leads, within a burst of `burst` (see [`carried_burst`]).
    pub fn limit_carried(&mut self, burst: u64) {
        self.carried_budget = Some(PeerBudgets::new(
            self.keys.len(),
            burst,
            CARRIED_REFILL,
            Instant::now(),
        ));
    }

    /// Whether `from`'s budget of carried signatures is full: a message deferred for its
    /// budget ([`Contents::OverBudget`]) is read again only then, so that waiting costs no
    /// hashing of what it carries, and it is read at most twice (a full budget covers any
    /// message; the count it needed when it came may have grown since, as the memo forgets:
    /// red team s20).
    pub fn budget_full(&self, from: ReplicaId) -> bool {
        self.budget_full_at(from, Instant::now())
    }

    fn budget_full_at(&self, from: ReplicaId, now: Instant) -> bool {
        self.carried_budget
            .as_ref()
            .is_none_or(|budgets| budgets.full(from, now))
    }

    /// Takes `count` from `from`'s budget of carried signatures: whether it had them.
    fn spend_carried(&mut self, from: ReplicaId, count: usize, now: Instant) -> bool {
        self.carried_budget
            .as_mut()
            .is_none_or(|budgets| budgets.spend(from, count as u64, now))
    }

    pub fn genesis_hash(&self) -> &Hash {
        &self.genesis_hash
    }

    /// Keeps `transaction`, decoded from `request` (whose id and timestamp it matches), for
    /// [`Authenticator::take_decoded`].
    pub fn keep_decoded(&mut self, request: &Request, transaction: SignedTx) {
        self.decoded_order.push_back(request.id);
        if self.decoded_order.len() > REMEMBERED_DECODED
            && let Some(oldest) = self.decoded_order.pop_front()
        {
            self.decoded.remove(&oldest);
        }
        self.decoded.insert(
            request.id,
            Decoded {
                payload: request.payload.clone(),
                transaction,
            },
        );
    }

    /// The transaction `request` carries if it was decoded here before from the same bytes.
    pub fn take_decoded(&mut self, request: &Request) -> Option<SignedTx> {
        match self.decoded.remove(&request.id) {
            Some(known) if known.payload[..] == request.payload[..] => Some(known.transaction),
            _ => None,
        }
    }

    /// The transaction `request` carries, if it was decoded and checked here from the same
    /// bytes (and not yet taken by its block).
    pub fn decoded(&self, request: &Request) -> Option<&SignedTx> {
        self.decoded
            .get(&request.id)
            .filter(|known| known.payload[..] == request.payload[..])
            .map(|known| &known.transaction)
    }

    /// Records a transaction whose signatures are known good (checked here or at the
    /// submitter's edge), by its id and signature bytes.
    pub fn remember(&mut self, id: Hash, signature: [u8; 64]) {
        self.remember_key(verdict_key(&id, &signature));
    }

    fn remember_key(&mut self, key: VerdictKey) {
        if self.verified.insert(key) {
            self.verified_order.push_back(key);
            if self.verified_order.len() > REMEMBERED_SIGNATURES
                && let Some(oldest) = self.verified_order.pop_front()
            {
                self.verified.remove(&oldest);
            }
        }
    }

    fn is_verified(&self, key: &VerdictKey) -> bool {
        self.verified.contains(key)
    }

    pub fn sign(&self, key: &SigningKey, from: ReplicaId, message: Message) -> Signed<Message> {
        let signature = crypto::sign_message(key, &self.genesis_hash, &message);
        Signed {
            from,
            message,
            signature,
        }
    }

    /// Checks a message's signature and, for messages that carry other signed things (the
    /// transactions of a batch, the votes inside a view change), those too. Every request a
    /// replica could come to execute is checked here, wherever it arrives: in a forward, a
    /// pre-prepare, the prepared certificates of a view-change, and the pre-prepares and
    /// view-changes of a new-view (issue 8, finding 1: a certificate could otherwise carry
    /// garbage under an agreed id). A message with any bad request is refused whole.
    pub fn authenticate(&mut self, signed: &Signed<Message>) -> Result<(), NodeError> {
        self.authenticate_signature(signed)?;
        match self.authenticate_contents(signed)? {
            Contents::Authentic => Ok(()),
            Contents::OverBudget => Err(NodeError::Busy),
        }
    }

    /// A message's own signature by its sender, and nothing it carries.
    pub fn authenticate_signature(&mut self, signed: &Signed<Message>) -> Result<(), NodeError> {
        self.message_signatures_checked += 1;
        Ok(crypto::verify_signed(
            &self.keys,
            &self.genesis_hash,
            signed,
        )?)
    }

    /// How many message signatures (a message's own, and those it carries) were verified here.
    #[cfg(test)]
    pub fn message_signatures_checked(&self) -> u64 {
        self.message_signatures_checked
    }

    /// The signatures of `messages` by their senders, checked in one batch (several messages
    /// from one sender share its key's work): for each, whether it verifies. The same verdicts
    /// as [`crypto::verify_signed`] one by one (ZIP-215 both ways).
    pub fn verify_batch(&mut self, messages: &[&Signed<Message>]) -> Vec<bool> {
        let mut batch = crypto::SignatureBatch::default();
        let mut queued = Vec::new();
        for (position, signed) in messages.iter().enumerate() {
            if let Some(key) = self.keys.get(signed.from as usize) {
                let bytes = crypto::message_signing_bytes(&self.genesis_hash, &signed.message);
                batch.push(key, &bytes, &signed.signature.0);
                queued.push(position);
            }
        }
        self.message_signatures_checked += queued.len() as u64;
        let mut verdicts = vec![false; messages.len()];
        for &position in &queued {
            verdicts[position] = true;
        }
        for failed in batch.failures() {
            verdicts[queued[failed]] = false;
        }
        verdicts
    }

    /// [`Self::authenticate`] of a message whose own signature verified ([`Self::verify_batch`]):
    /// the signatures it carries, and its requests.
    pub fn authenticate_contents(
        &mut self,
        signed: &Signed<Message>,
    ) -> Result<Contents, NodeError> {
        self.authenticate_contents_at(signed, Instant::now())
    }

    /// [`Self::authenticate_contents`] at `now`.
    fn authenticate_contents_at(
        &mut self,
        signed: &Signed<Message>,
        now: Instant,
    ) -> Result<Contents, NodeError> {
        // Verified in one batch, each signature once: one repeated inside the message, or
        // checked before in another, is not verified again (the replica's shape check bounds
        // how many distinct ones a message may carry). A dishonest validator that replays the
        // honest votes it received in view-changes costs its peers hashing, not verifying.
        let refused = || ledger::Error::BadMessageSignature { from: signed.from }.into();
        let refused_until = self.contents_refused_until.get(signed.from as usize);
        // Only kinds that carry signatures, refused before what they carry is serialised: the
        // sender's own votes are still heard.
        if signed.message.may_carry_signatures()
            && refused_until.is_some_and(|until| until.is_some_and(|until| now < until))
        {
            return Err(refused());
        }
        let carried = signed.message.embedded_signatures();
        let mut batch = crypto::SignatureBatch::default();
        let mut queued = Vec::new();
        let mut in_message = HashSet::new();
        for (from, bytes, signature) in carried {
            let remembered = (from, signature.0, ledger::sha256(&bytes));
            if self.embedded.contains(&remembered) || !in_message.insert(remembered) {
                continue;
            }
            let key = self
                .keys
                .get(from as usize)
                .ok_or(ledger::Error::BadMessageSignature { from })?;
            let signing_bytes = crypto::embedded_signing_bytes(&self.genesis_hash, &bytes);
            batch.push(key, &signing_bytes, &signature.0);
            queued.push(remembered);
        }
        if !queued.is_empty() && !self.spend_carried(signed.from, queued.len(), now) {
            return Ok(Contents::OverBudget);
        }
        self.message_signatures_checked += queued.len() as u64;
        if !batch.verifies() {
            // Its sender signed what it carries: which signature is bad does not matter, and
            // finding out would cost single checks under keys the sender chose.
            if let Some(until) = self.contents_refused_until.get_mut(signed.from as usize) {
                *until = Some(now + CONTENTS_REFUSED_FOR);
            }
            return Err(refused());
        }
        for remembered in queued {
            if self.embedded.insert(remembered) {
                self.embedded_order.push_back(remembered);
                if self.embedded_order.len() > REMEMBERED_EMBEDDED
                    && let Some(oldest) = self.embedded_order.pop_front()
                {
                    self.embedded.remove(&oldest);
                }
            }
        }
        let mut requests = Vec::new();
        embedded_requests(&signed.message, &mut requests);
        self.check_requests(requests)?;
        Ok(Contents::Authentic)
    }

    /// Every request must carry a transaction that passes the edge check with the id and
    /// timestamp the request claims; those whose (id, signature) was not checked before are
    /// batch-verified. A request whose exact bytes were decoded and checked here before (a
    /// forward, then the pre-prepare carrying it) is not decoded again, nor is one repeated
    /// within the message.
    fn check_requests(&mut self, requests: Vec<&Request>) -> Result<(), NodeError> {
        let mut in_message: HashMap<Hash, &[u8]> = HashMap::new();
        let mut unchecked = Vec::new();
        let mut decoded = Vec::new();
        let mut checked = Vec::new();
        for request in requests {
            if self.decoded(request).is_some() {
                continue;
            }
            match in_message.insert(request.id, &request.payload) {
                Some(earlier) if earlier == &request.payload[..] => continue,
                _ => {}
            }
            let transaction = SignedTx::from_request(request, &self.genesis_hash)
                .map_err(|invalid| invalid_request(request, invalid))?;
            // Hashed once: remembered by the same key if its batch verifies.
            let key = verdict_key(&request.id, &transaction.signature);
            if self.is_verified(&key) {
                checked.push((request, transaction));
            } else {
                unchecked.push((request, key));
                decoded.push(Ok(transaction));
            }
        }
        crypto::check_signatures(&self.keys, &self.genesis_hash, &mut decoded);
        if let Some(((request, _), Err(invalid))) = unchecked
            .iter()
            .zip(&decoded)
            .find(|(_, verdict)| verdict.is_err())
        {
            return Err(invalid_request(request, *invalid));
        }
        for ((request, key), verdict) in unchecked.into_iter().zip(decoded) {
            if let Ok(transaction) = verdict {
                self.remember_key(key);
                self.keep_decoded(request, transaction);
            }
        }
        for (request, transaction) in checked {
            self.keep_decoded(request, transaction);
        }
        Ok(())
    }

    /// The block a committed proposal becomes, with what each entry carries: a request
    /// checked here when it arrived is taken as it was decoded then; any other (after a
    /// restart, or evicted from memory) is decoded and its signatures checked now. An invalid
    /// entry is the state machine's to reject ([`ledger::Store::append_block`]), never a
    /// reason to stop.
    pub fn block_of(
        &mut self,
        committed: pbft::Committed,
    ) -> Result<(Built, Vec<Checked>), NodeError> {
        let built = Built::from_committed(committed)?;
        let block = built.block();
        let mut contents: Vec<Option<Checked>> = block
            .entries
            .iter()
            .map(|entry| self.take_decoded(entry).map(Ok))
            .collect();
        let unknown: Vec<usize> = (0..contents.len())
            .filter(|&i| contents[i].is_none())
            .collect();
        let verdicts = crypto::check_entries(
            &self.keys,
            &self.genesis_hash,
            unknown.iter().map(|&i| &block.entries[i]),
        );
        for (i, verdict) in unknown.into_iter().zip(verdicts) {
            contents[i] = Some(verdict);
        }
        // Every slot is filled by now (were one not, the store would refuse the count). Sized
        // first: `flatten` tells `collect` nothing of its length, and a block's worth was
        // grown by doubling, copied each time.
        let mut checked = Vec::with_capacity(contents.len());
        checked.extend(contents.into_iter().flatten());
        Ok((built, checked))
    }

    /// A block from a peer: its certificate and Merkle root; what each entry carries.
    pub fn check_block(&self, block: &Block) -> Result<Vec<Checked>, NodeError> {
        Ok(ledger::verify::check_block(
            &self.keys,
            &self.genesis_hash,
            block,
        )?)
    }
}

fn invalid_request(request: &Request, invalid: ledger::Invalid) -> NodeError {
    ledger::Error::InvalidRequest {
        id: hex::encode(request.id),
        invalid,
    }
    .into()
}

/// Every request inside `message` that a replica could come to execute.
fn embedded_requests<'m>(message: &'m Message, out: &mut Vec<&'m Request>) {
    match message {
        Message::Forward(requests) => out.extend(requests),
        Message::PrePrepare(pre_prepare) => out.extend(&pre_prepare.proposal.requests),
        Message::ViewChange(vc) => {
            for cert in &vc.prepared {
                out.extend(&cert.pre_prepare.proposal.requests);
            }
        }
        Message::NewView(nv) => {
            // Read off the wire, equal batches are one allocation (`pbft::NewView`'s encoding):
            // each is listed once, not 2f+2 times.
            let mut listed = HashSet::new();
            let batches = nv.view_changes.iter().flat_map(|vc| {
                vc.message
                    .prepared
                    .iter()
                    .map(|cert| &cert.pre_prepare.proposal)
            });
            for batch in batches.chain(nv.pre_prepares.iter().map(|pp| &pp.proposal)) {
                if listed.insert(Arc::as_ptr(batch)) {
                    out.extend(&batch.requests);
                }
            }
        }
        // A recovery answer's querier message is read for its view only: nothing in it is
        // executed (its signature, the querier's, is among the embedded ones checked).
        Message::Prepare(_)
        | Message::Commit(_)
        | Message::Checkpoint(_)
        | Message::RecoveryQuery(_)
        | Message::RecoveryAnswer(_)
        | Message::Lives(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ledger::testkit::TestNet;
    use pbft::{Checkpoint, NewView, PrePrepare, PreparedCertificate, Proposal, ViewChange, Vote};

    use super::*;

    /// Signs `message` as validator `from` of `net`.
    pub(super) fn signed<M: Clone>(
        net: &TestNet,
        from: ReplicaId,
        message: M,
        wrap: impl Fn(M) -> Message,
    ) -> Signed<M> {
        let signature = crypto::sign_message(
            &net.keys[from as usize],
            &net.genesis.hash(),
            &wrap(message.clone()),
        );
        Signed {
            from,
            message,
            signature,
        }
    }

    /// A turn's messages checked in one batch get the verdicts they get one by one: a forged
    /// signature, another validator's signature, and an unknown sender fail, the rest pass.
    #[test]
    fn a_batch_of_messages_gets_the_verdicts_of_single_checks() {
        let net = TestNet::new(4);
        let mut auth = Authenticator::new(&net.genesis);
        let vote = |seq| Vote {
            view: 0,
            seq,
            digest: [seq as u8; 32],
        };
        let prepare = |from, seq| signed(&net, from, vote(seq), Message::Prepare);
        let as_message = |s: Signed<Vote>| Signed {
            from: s.from,
            message: Message::Prepare(s.message),
            signature: s.signature,
        };
        let mut forged = as_message(prepare(1, 2));
        forged.signature.0[7] ^= 1;
        let mut someone_elses = as_message(prepare(2, 3));
        someone_elses.from = 3;
        let mut unknown = as_message(prepare(1, 4));
        unknown.from = 9;
        let messages = [
            as_message(prepare(1, 1)),
            forged,
            as_message(prepare(3, 1)),
            someone_elses,
            unknown,
            as_message(prepare(1, 5)),
        ];
        let refs: Vec<&Signed<Message>> = messages.iter().collect();
        let single: Vec<bool> = messages
            .iter()
            .map(|m| crypto::verify_signed(&auth.keys, &net.genesis.hash(), m).is_ok())
            .collect();
        assert_eq!(single, [true, false, true, false, false, true]);
        assert_eq!(auth.verify_batch(&refs), single);
        assert_eq!(auth.verify_batch(&[refs[0], refs[2], refs[5]]), [true; 3]);
    }

    /// The verdicts of hostile encodings, each among good messages, are the single checks':
    /// `s + l`, an `R` that is no curve point, an all-zero signature, two bad signatures whose
    /// errors cancel in an unweighted sum, and a good message twice.
    #[test]
    fn hostile_encodings_get_the_verdicts_of_single_checks_in_a_batch() {
        let net = TestNet::new(4);
        let mut auth = Authenticator::new(&net.genesis);
        let prepare = |from: ReplicaId, seq| {
            let message = Message::Prepare(Vote {
                view: 0,
                seq,
                digest: [seq as u8; 32],
            });
            signed(&net, from, message, |m| m)
        };
        let with_s = |mut m: Signed<Message>, s: fn(&mut [u8])| {
            s(&mut m.signature.0[32..]);
            m
        };
        // `s + l`, `s + 1` and `s - 1` (little-endian, with carries), never reduced.
        fn add(s: &mut [u8], addend: &[u8]) {
            let mut carry = 0u16;
            for (i, byte) in s.iter_mut().enumerate() {
                let sum = u16::from(*byte) + u16::from(*addend.get(i).unwrap_or(&0)) + carry;
                *byte = sum as u8;
                carry = sum >> 8;
            }
        }
        const L: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let s_plus_l = with_s(prepare(1, 1), |s| add(s, &L));
        let s_plus_one = with_s(prepare(2, 2), |s| add(s, &[1]));
        let s_minus_one = with_s(prepare(2, 3), |s| add(s, &[0xff; 32]));
        let mut not_a_point = prepare(3, 4);
        let r = (2u8..)
            .map(|y| {
                let mut r = [0u8; 32];
                r[0] = y;
                r
            })
            .find(|r| crypto::verifying_key(r).is_err())
            .expect("some y is on no point");
        not_a_point.signature.0[..32].copy_from_slice(&r);
        let mut zero = prepare(1, 5);
        zero.signature.0 = [0; 64];
        let good = prepare(3, 6);
        let messages = [
            prepare(1, 7),
            s_plus_l,
            good.clone(),
            not_a_point,
            s_plus_one,
            s_minus_one,
            zero,
            good,
            prepare(2, 8),
        ];
        let single: Vec<bool> = messages
            .iter()
            .map(|m| crypto::verify_signed(&auth.keys, &net.genesis.hash(), m).is_ok())
            .collect();
        let valid = [true, false, true, false, false, false, false, true, true];
        assert_eq!(single, valid);
        let refs: Vec<&Signed<Message>> = messages.iter().collect();
        assert_eq!(auth.verify_batch(&refs), valid);
        // The two whose errors cancel, alone together.
        assert_eq!(auth.verify_batch(&refs[4..6]), [false, false]);
    }

    /// A view-change with `certificates` prepared certificates (sequence numbers 1, 2, ...,
    /// each with the prepares of backups 1, 2 and 3) and a checkpoint proof, from `from`.
    fn long_view_change(net: &TestNet, from: ReplicaId, certificates: u64) -> Signed<Message> {
        view_change_above(net, from, 1, 0, certificates)
    }

    /// A view-change to `new_view` from `from`: the checkpoint at `base` (the genesis at 0, else
    /// a digest made of `base`) with the checkpoint messages of validators 0, 1 and 2, and the
    /// `certificates` prepared certificates above it (view 0, empty batches, each with the
    /// prepares of backups 1, 2 and 3). Each `base` gives other votes.
    pub(super) fn view_change_above(
        net: &TestNet,
        from: ReplicaId,
        new_view: u64,
        base: u64,
        certificates: u64,
    ) -> Signed<Message> {
        let prepared = (base + 1..=base + certificates)
            .map(|seq| {
                let mut pre_prepare = pre_prepare(net, vec![]);
                Arc::make_mut(&mut pre_prepare.proposal).seq = seq;
                pre_prepare.digest = ledger::proposal_digest(&pre_prepare.proposal);
                let vote = Vote {
                    view: 0,
                    seq,
                    digest: pre_prepare.digest,
                };
                PreparedCertificate {
                    pre_prepare,
                    prepares: [1, 2, 3]
                        .into_iter()
                        .map(|backup| signed(net, backup, vote, Message::Prepare))
                        .collect(),
                }
            })
            .collect();
        let checkpoint = Checkpoint {
            seq: base,
            digest: if base == 0 {
                net.genesis.hash()
            } else {
                ledger::sha256(&base.to_le_bytes())
            },
        };
        let vc = ViewChange {
            new_view,
            incarnation: 1,
            checkpoint,
            checkpoint_proof: [0, 1, 2]
                .into_iter()
                .map(|id| signed(net, id, checkpoint, Message::Checkpoint))
                .collect(),
            prepared,
        };
        as_message(signed(net, from, vc, Message::ViewChange))
    }

    /// F3 of red team s15b: the signatures a message carries are verified once, whatever
    /// message carries them again; a forged one among them is still found, and named.
    #[test]
    fn signatures_a_message_carries_are_verified_once() {
        let net = TestNet::new(4);
        let mut auth = Authenticator::new(&net.genesis);
        let vc = long_view_change(&net, 3, 128);
        auth.authenticate(&vc).expect("a valid view-change");
        let carried = 3 + 128 * 3;
        assert_eq!(auth.message_signatures_checked(), 1 + carried);
        // Replayed: its own signature only.
        auth.authenticate(&vc).expect("still valid");
        assert_eq!(auth.message_signatures_checked(), 2 + carried);
        // Another message carrying the same votes, one of them forged.
        let Message::ViewChange(mut forged) = vc.message.clone() else {
            unreachable!("a view-change")
        };
        forged.prepared[77].prepares[1].signature.0[3] ^= 1;
        let forged = as_message(signed(&net, 2, forged, Message::ViewChange));
        let error = auth
            .authenticate(&forged)
            .expect_err("a forged prepare inside");
        assert!(
            matches!(
                error,
                NodeError::Ledger(ledger::Error::BadMessageSignature { from: 2 })
            ),
            "{error:?}"
        );
        assert_eq!(auth.message_signatures_checked(), 2 + carried + 2);
        // A fresh edge checks everything, and finds the forgery as well.
        let mut fresh = Authenticator::new(&net.genesis);
        assert!(fresh.authenticate(&forged).is_err());
        assert_eq!(fresh.message_signatures_checked(), 1 + carried);
    }

    /// The pre-prepare of view 0, sequence 1 for `requests`, with its digest.
    pub(super) fn pre_prepare(net: &TestNet, requests: Vec<Request>) -> PrePrepare {
        let proposal = Proposal {
            seq: 1,
            view: 0,
            proposer: 0,
            prev: net.genesis.hash(),
            time_ms: net.genesis.created_at_ms() + 1,
            requests,
        };
        PrePrepare {
            view: 0,
            digest: ledger::proposal_digest(&proposal),
            proposal: Arc::new(proposal),
        }
    }

    /// A view-change to view 1 from `from`, whose prepared certificate (with the prepares of
    /// backups 1 and 2, properly signed) carries `requests`.
    fn view_change(net: &TestNet, from: ReplicaId, requests: Vec<Request>) -> Signed<ViewChange> {
        certified_view_change(net, from, pre_prepare(net, requests))
    }

    /// A view-change to view 1 from `from`, whose prepared certificate (with the prepares of
    /// backups 1 and 2, properly signed) carries `pre_prepare`.
    pub(super) fn certified_view_change(
        net: &TestNet,
        from: ReplicaId,
        pre_prepare: PrePrepare,
    ) -> Signed<ViewChange> {
        let vote = Vote {
            view: 0,
            seq: 1,
            digest: pre_prepare.digest,
        };
        let prepares = [1, 2]
            .into_iter()
            .map(|backup| signed(net, backup, vote, Message::Prepare))
            .collect();
        let vc = ViewChange {
            new_view: 1,
            incarnation: 1,
            checkpoint: Checkpoint {
                seq: 0,
                digest: net.genesis.hash(),
            },
            checkpoint_proof: vec![],
            prepared: vec![PreparedCertificate {
                pre_prepare,
                prepares,
            }],
        };
        signed(net, from, vc, Message::ViewChange)
    }

    fn new_view(
        net: &TestNet,
        view_changes: Vec<Signed<ViewChange>>,
        pre_prepares: Vec<PrePrepare>,
    ) -> Signed<Message> {
        let nv = NewView {
            view: 1,
            incarnation: 1,
            view_changes,
            pre_prepares,
        };
        signed(net, 1, Message::NewView(nv), |m| m)
    }

    fn as_message(vc: Signed<ViewChange>) -> Signed<Message> {
        Signed {
            from: vc.from,
            message: Message::ViewChange(vc.message),
            signature: vc.signature,
        }
    }

    /// The request of a valid transaction, and the same id and timestamp over other bytes: one
    /// that does not decode, and one that decodes with a signature that does not verify.
    fn substitutes(net: &TestNet) -> (Request, Vec<Request>) {
        let good = net.request(&net.sample_tx(3));
        let mut garbage = good.clone();
        garbage.payload = Arc::from(&b"garbage"[..]);
        let mut bad_signature = good.clone();
        let mut bytes = good.payload.to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        bad_signature.payload = Arc::from(bytes);
        (good, vec![garbage, bad_signature])
    }

    #[test]
    fn finding_1_view_change_with_bad_request_is_dropped_at_edge() {
        let net = TestNet::new(4);
        let (good, bad) = substitutes(&net);
        let mut auth = Authenticator::new(&net.genesis);
        auth.authenticate(&as_message(view_change(&net, 3, vec![good.clone()])))
            .expect("a view-change with a valid request passes");
        for substitute in bad {
            // A fresh edge, and one that already checked the good request under the same id.
            for mut auth in [Authenticator::new(&net.genesis), {
                let mut seen = Authenticator::new(&net.genesis);
                seen.authenticate(&as_message(view_change(&net, 3, vec![good.clone()])))
                    .expect("valid");
                seen
            }] {
                let vc = view_change(&net, 3, vec![good.clone(), substitute.clone()]);
                assert!(
                    auth.authenticate(&as_message(vc)).is_err(),
                    "a view-change carrying {:?} passed the edge",
                    &substitute.payload[..8.min(substitute.payload.len())]
                );
            }
        }
    }

    #[test]
    fn finding_1_new_view_with_bad_request_is_dropped_at_edge() {
        let net = TestNet::new(4);
        let (good, bad) = substitutes(&net);
        let honest: Vec<Signed<ViewChange>> = [0, 2]
            .into_iter()
            .map(|from| view_change(&net, from, vec![good.clone()]))
            .collect();
        let mut auth = Authenticator::new(&net.genesis);
        auth.authenticate(&new_view(
            &net,
            honest.clone(),
            vec![pre_prepare(&net, vec![good.clone()])],
        ))
        .expect("a new-view with valid requests passes");
        for substitute in bad {
            // In a view-change the new-view carries.
            let mut view_changes = honest.clone();
            view_changes.push(view_change(&net, 3, vec![substitute.clone()]));
            let nv = new_view(&net, view_changes, vec![]);
            assert!(Authenticator::new(&net.genesis).authenticate(&nv).is_err());
            // In the new-view's own pre-prepares (its O set).
            let nv = new_view(
                &net,
                honest.clone(),
                vec![pre_prepare(&net, vec![substitute.clone()])],
            );
            assert!(Authenticator::new(&net.genesis).authenticate(&nv).is_err());
        }
    }

    /// Issue 8, finding 1, as it stood once the rest was fixed: the verdict on a committed
    /// entry must be one function of its bytes, whichever path checks it. A signature whose `R`
    /// carries a point of order 8 meets the cofactored equation and not the cofactorless one.
    /// ed25519-dalek's `verify_strict` refused it; its batch check (cofactorless, coefficients
    /// drawn from the batch's contents) let it through one time in eight, depending on the other
    /// signatures in the batch, and which check ran depended on what a node had seen before.
    #[test]
    fn finding_1_batch_and_single_signature_checks_agree() {
        let net = TestNet::new(4);
        let keys = net.genesis.keys();
        let g = net.genesis.hash();
        let torsions: Vec<SignedTx> = (0..16).map(|i| net.torsion_tx(i)).collect();
        let requests: Vec<Request> = torsions.iter().map(|t| net.request(t)).collect();
        let (good, substitutes) = substitutes(&net);
        let bad_signature = substitutes[1].clone();

        // The rule: each signature checked on its own.
        let rule: Vec<bool> = torsions
            .iter()
            .map(|t| {
                crypto::tx_signatures(keys, &g, t)
                    .expect("a known signer")
                    .iter()
                    .all(|(key, message, signature)| {
                        crypto::verify_signature_bytes(key, message, signature)
                    })
            })
            .collect();
        let verdicts =
            |checked: &[Checked]| -> Vec<bool> { checked.iter().map(Result::is_ok).collect() };

        // Batches: each alone, each beside a valid request, all together beside a failure.
        let alone: Vec<bool> = requests
            .iter()
            .map(|r| crypto::check_entries(keys, &g, [r])[0].is_ok())
            .collect();
        let beside_good: Vec<bool> = requests
            .iter()
            .map(|r| crypto::check_entries(keys, &g, [&good, r])[1].is_ok())
            .collect();
        let mut entries = vec![bad_signature.clone()];
        entries.extend(requests.iter().cloned());
        entries.push(good.clone());
        let together = verdicts(&crypto::check_entries(keys, &g, &entries)[1..=requests.len()]);
        assert_eq!(alone, rule, "single and batch checks disagree");
        assert_eq!(beside_good, rule, "single and batch checks disagree");
        assert_eq!(together, rule, "single and batch checks disagree");

        // The edge: a forward carrying one of them.
        let forward = |r: &Request| signed(&net, 2, Message::Forward(vec![r.clone()]), |m| m);
        let mut seen = Authenticator::new(&net.genesis);
        let edge: Vec<bool> = requests
            .iter()
            .map(|r| seen.authenticate(&forward(r)).is_ok())
            .collect();
        assert_eq!(edge, rule, "the edge and the rule disagree");

        // The commit path: on the node that checked them at the edge, on one that decodes them
        // only now (after a restart), and in a block from a peer.
        let committed = {
            let pre_prepare = pre_prepare(&net, entries);
            pbft::Committed {
                digest: pre_prepare.digest,
                proposal: pre_prepare.proposal,
                commit_view: 0,
                signatures: vec![],
            }
        };
        let (built, after_edge) = seen.block_of(committed.clone()).expect("a block");
        let mut block = built.into_block();
        let (_, after_restart) = Authenticator::new(&net.genesis)
            .block_of(committed)
            .expect("a block");
        block.certificate = net.certify(&block.header, 0);
        let from_peer = Authenticator::new(&net.genesis)
            .check_block(&block)
            .expect("certified");
        let range = 1..=requests.len();
        assert_eq!(
            verdicts(&after_edge[range.clone()]),
            rule,
            "commit after the edge"
        );
        assert_eq!(
            verdicts(&after_restart[range.clone()]),
            rule,
            "commit after a restart"
        );
        assert_eq!(verdicts(&from_peer[range]), rule, "block from a peer");

        // Verification: the store holding these verdicts verifies; one that holds another
        // verdict for any of them does not.
        let dir = tempfile::tempdir().expect("tempdir");
        let verifies = |name: &str, contents: &[Checked]| {
            let path = dir.path().join(name);
            let options = ledger::OpenOptions::default();
            let mut store = ledger::Store::open(&path, &net.genesis, options).expect("open");
            store.append_block(&block, contents).expect("stored");
            drop(store);
            ledger::verify::verify_store(&path, &net.genesis, &mut |_| {}).is_ok()
        };
        assert!(
            verifies("rule.db", &after_restart),
            "medchain verify refuses"
        );
        let mut other = after_restart.clone();
        other[1] = match &other[1] {
            Ok(_) => Err(ledger::Invalid::BadSignature),
            Err(_) => Ok(torsions[0].clone()),
        };
        assert!(
            !verifies("other.db", &other),
            "the other verdict verifies too"
        );
    }

    #[test]
    fn finding_1_committed_garbage_payload_is_rejected_not_fatal() {
        let net = TestNet::new(4);
        let (good, bad) = substitutes(&net);
        let mut auth = Authenticator::new(&net.genesis);
        // `good` was checked when it arrived; `unknown` arrives only in the committed block.
        auth.authenticate(&signed(
            &net,
            2,
            Message::Forward(vec![good.clone()]),
            |m| m,
        ))
        .expect("forward");
        let unknown = net.request(&net.sample_tx(4));
        let requests = vec![good, bad[0].clone(), unknown, bad[1].clone()];
        let pre_prepare = pre_prepare(&net, requests);
        let committed = pbft::Committed {
            digest: pre_prepare.digest,
            proposal: pre_prepare.proposal,
            commit_view: 0,
            signatures: vec![],
        };
        let (built, contents) = auth.block_of(committed).expect("a block, never a stop");
        let mut block = built.into_block();
        assert!(contents[0].is_ok() && contents[2].is_ok(), "{contents:?}");
        assert_eq!(contents[1], Err(ledger::Invalid::Undecodable));
        assert_eq!(contents[3], Err(ledger::Invalid::BadSignature));
        assert_eq!(
            contents,
            net.check(&block),
            "the verdicts verification derives"
        );

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("chain.db");
        let mut store =
            ledger::Store::open(&path, &net.genesis, ledger::OpenOptions::default()).expect("open");
        block.certificate = net.certify(&block.header, 0);
        let applied = store.append_block(&block, &contents).expect("stored");
        assert_eq!(applied.rejected.len(), 2);
        drop(store);
        ledger::Store::open(&path, &net.genesis, ledger::OpenOptions::default())
            .expect("the store verifies on the next start");
    }

    /// `signature` with `l`, the order of the prime subgroup, added to its `s`: a second
    /// encoding of the same signature (same `R`, same `s` modulo `l`), which ZIP-215 refuses
    /// (`s` must be canonical).
    fn with_s_plus_l(mut signature: [u8; 64]) -> [u8; 64] {
        const L: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut carry = 0u16;
        for (byte, l) in signature[32..].iter_mut().zip(L) {
            let sum = u16::from(*byte) + u16::from(l) + carry;
            *byte = sum as u8;
            carry = sum >> 8;
        }
        signature
    }

    /// A verdict is remembered by the digest of the id and the signature together: the same
    /// signature under another id, or another signature under the same id, is not remembered,
    /// whichever byte differs.
    #[test]
    fn a_verdict_is_remembered_by_its_id_and_signature_together() {
        let net = TestNet::new(4);
        let mut auth = Authenticator::new(&net.genesis);
        let (id, signature) = ([7u8; 32], [9u8; 64]);
        auth.remember(id, signature);
        assert!(auth.is_verified(&verdict_key(&id, &signature)));
        // Every byte of id ‖ signature, one flipped (each of its bits) at a time.
        for byte in 0..96 {
            let (mut other_id, mut other_signature) = (id, signature);
            match byte {
                0..32 => other_id[byte] ^= 0xff,
                _ => other_signature[byte - 32] ^= 0xff,
            }
            assert!(
                !auth.is_verified(&verdict_key(&other_id, &other_signature)),
                "byte {byte} of id and signature"
            );
        }
        // Forgotten oldest first once the window is full.
        for n in 0..REMEMBERED_SIGNATURES as u64 {
            let mut later = [0u8; 32];
            later[..8].copy_from_slice(&n.to_le_bytes());
            auth.remember(later, signature);
        }
        assert!(!auth.is_verified(&verdict_key(&id, &signature)));
        assert_eq!(auth.verified.len(), REMEMBERED_SIGNATURES);
    }

    /// The id of a transaction does not cover its signature, so a copy of a checked
    /// transaction with its signature encoded again has the same id and other bytes. Were
    /// verdicts remembered by id alone, the copy would pass unchecked, and a block holding it
    /// would be applied here while every validator that checks it rejects it.
    #[test]
    fn a_second_encoding_of_a_remembered_signature_is_checked_again() {
        let net = TestNet::new(4);
        let tx = net.sample_tx(20);
        let good = net.request(&tx);
        let mut copy = tx.clone();
        copy.signature = with_s_plus_l(tx.signature);
        let reencoded = net.request(&copy);
        assert_eq!(reencoded.id, good.id, "the id does not cover the signature");
        assert_ne!(reencoded.payload, good.payload);
        let forward = |r: &Request| signed(&net, 2, Message::Forward(vec![r.clone()]), |m| m);
        let pre_prepared = |r: &Request| {
            signed(
                &net,
                0,
                Message::PrePrepare(pre_prepare(&net, vec![r.clone()])),
                |m| m,
            )
        };

        // Checked at this edge (a forward), then seen again in a forward and a pre-prepare.
        let mut auth = Authenticator::new(&net.genesis);
        auth.authenticate(&forward(&good))
            .expect("the original passes");
        assert!(
            auth.is_verified(&verdict_key(&good.id, &tx.signature)),
            "remembered under its own id and signature"
        );
        assert!(
            auth.authenticate(&forward(&reencoded)).is_err(),
            "a second encoding passed under a remembered id"
        );
        assert!(auth.authenticate(&pre_prepared(&reencoded)).is_err());
        // Remembered as a client's submission checked at the handle, not decoded here.
        let mut auth = Authenticator::new(&net.genesis);
        auth.remember(good.id, tx.signature);
        assert!(auth.authenticate(&pre_prepared(&reencoded)).is_err());
        auth.authenticate(&pre_prepared(&good))
            .expect("the remembered signature still passes");
        // And a committed block holding the copy carries no transaction for it.
        let committed = {
            let pre_prepare = pre_prepare(&net, vec![reencoded]);
            pbft::Committed {
                digest: pre_prepare.digest,
                proposal: pre_prepare.proposal,
                commit_view: 0,
                signatures: vec![],
            }
        };
        let (_, contents) = auth.block_of(committed).expect("a block");
        assert_eq!(contents, [Err(ledger::Invalid::BadSignature)]);
    }

    #[tokio::test]
    async fn submissions_are_checked_and_bounded_as_every_edge_checks_them() {
        let net = TestNet::new(4);
        let edge = EdgeChecks::start(&net.genesis, "test").expect("a thread");
        let tx = net.sample_tx(14);
        let (request, decoded) = check_submission(&edge, &net.genesis, &tx)
            .await
            .expect("valid");
        assert_eq!(request, net.request(&tx));
        assert_eq!(decoded, tx);

        let mut bad = tx.clone();
        bad.signature[9] ^= 1;
        assert!(matches!(
            check_submission(&edge, &net.genesis, &bad).await,
            Err(NodeError::Invalid(ledger::Invalid::BadSignature))
        ));
        // An enrollment whose key proof is broken, well signed by its validator.
        let enrollment = net.sample_tx(0);
        let mut header = enrollment.header.clone();
        if let ledger::Meta::Enroll(e) = &mut header.meta {
            e.keys[0].pop[0] ^= 1;
        }
        let broken = net.sign_header(header, Vec::new(), &net.keys[0]);
        assert!(matches!(
            check_submission(&edge, &net.genesis, &broken).await,
            Err(NodeError::Invalid(ledger::Invalid::BadKeyProof))
        ));
        // Another body under a well-signed header.
        let mut swapped = tx.clone();
        swapped.body.push(0);
        assert!(matches!(
            check_submission(&edge, &net.genesis, &swapped).await,
            Err(NodeError::Invalid(ledger::Invalid::BodyMismatch))
        ));
        // Bodies up to 64 KiB pass the size check (an enrollment's must then be empty: its
        // framing is refused), no larger.
        let sized =
            |bytes: usize| net.sign_header(enrollment.header.clone(), vec![7; bytes], &net.keys[0]);
        let largest = sized(MAX_BODY_BYTES);
        assert!(matches!(
            check_submission(&edge, &net.genesis, &largest).await,
            Err(NodeError::Invalid(ledger::Invalid::BodyFormat))
        ));
        assert!(largest.to_request(&net.genesis.hash()).payload.len() <= MAX_TX_BYTES);
        assert!(matches!(
            check_submission(&edge, &net.genesis, &sized(MAX_BODY_BYTES + 1)).await,
            Err(NodeError::TooLarge {
                limit: MAX_BODY_BYTES,
                ..
            })
        ));
    }

    /// Submissions checked together keep their own verdicts: a bad signature among good ones
    /// refuses that one alone, and every caller gets the answer for its own transaction.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn submissions_checked_in_one_batch_keep_their_own_verdicts() {
        let net = TestNet::new(4);
        let edge = Arc::new(EdgeChecks::start(&net.genesis, "test").expect("a thread"));
        let genesis = Arc::new(net.genesis.clone());
        let mut checks = Vec::new();
        for i in 0..64u64 {
            let mut tx = net.sample_tx(i);
            let bad = i % 7 == 3;
            if bad {
                tx.signature[5] ^= 1;
            }
            let (edge, genesis) = (edge.clone(), genesis.clone());
            checks.push((
                bad,
                tx.clone(),
                tokio::spawn(async move { check_submission(&edge, &genesis, &tx).await }),
            ));
        }
        for (bad, tx, check) in checks {
            match check.await.expect("the task") {
                Ok((request, decoded)) => {
                    assert!(!bad, "a bad signature passed");
                    assert_eq!(decoded, tx);
                    assert_eq!(request, net.request(&tx));
                }
                Err(error) => {
                    assert!(bad, "a good signature was refused: {error}");
                    assert!(matches!(
                        error,
                        NodeError::Invalid(ledger::Invalid::BadSignature)
                    ));
                }
            }
        }
    }

    /// Red team s13, held: submitters that give up (their futures dropped before or after the
    /// check is queued) and a flood of bad signatures leave the edge working: the next
    /// submission gets its own verdict.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropped_submissions_and_bad_signatures_do_not_stall_the_edge() {
        let net = TestNet::new(4);
        let edge = Arc::new(EdgeChecks::start(&net.genesis, "test").expect("a thread"));
        let genesis = Arc::new(net.genesis.clone());
        let mut given_up = Vec::new();
        for i in 0..300u64 {
            let mut tx = net.sample_tx(i);
            tx.signature[0] ^= 1;
            let (edge, genesis) = (edge.clone(), genesis.clone());
            given_up.push(tokio::spawn(async move {
                check_submission(&edge, &genesis, &tx).await
            }));
        }
        for task in &given_up {
            task.abort();
        }
        drop(given_up);
        let good = net.sample_tx(1000);
        let (_, decoded) = check_submission(&edge, &genesis, &good)
            .await
            .expect("the edge still answers");
        assert_eq!(decoded, good);
        let mut bad = net.sample_tx(1001);
        bad.signature[3] ^= 1;
        assert!(matches!(
            check_submission(&edge, &genesis, &bad).await,
            Err(NodeError::Invalid(ledger::Invalid::BadSignature))
        ));
    }
}

/// Red team s17 against dfcf59b1 (+ dce54719, 622ce3c8): the memo of carried signatures, and
/// what forged ones cost.
#[cfg(test)]
mod red_team_s17 {
    use ledger::testkit::TestNet;
    use pbft::Vote;

    use super::tests::{signed, view_change_above};
    use super::*;

    /// Signs `message` as validator `from` of `net`.
    fn sign(net: &TestNet, from: ReplicaId, message: Message) -> Signed<Message> {
        signed(net, from, message, |m| m)
    }

    /// A view-change to `new_view` from `from` built from the chain's history as a dishonest
    /// validator received it: the stable checkpoint `128 * window` and the 128 prepared
    /// certificates above it, honest votes all. It passes `Replica::check_shape` for a node's
    /// L = 128, and a view above the victim's is never stale (`uses_contents`).
    fn historical_view_change(
        net: &TestNet,
        from: ReplicaId,
        new_view: u64,
        window: u64,
    ) -> Signed<Message> {
        view_change_above(net, from, new_view, 128 * window, 128)
    }

    const CARRIED: u64 = 3 + 128 * 3;

    /// F1: a dishonest validator holding more honest votes than the memo remembers (the
    /// prepares and checkpoint proofs of about 5,600 blocks at n = 4) cycles them through
    /// view-changes for views above the victim's, never stale: without a limit, 387
    /// verifications per message for ever. With its budget of carried signatures, it has at
    /// most the budget verified per refill; the rest wait (`Contents::OverBudget`, deferred by the
    /// runtime), other senders keep budgets of their own, and remembered votes cost none.
    #[test]
    fn a_senders_carried_signatures_past_its_budget_wait_for_it() {
        let net = TestNet::new(4);
        let mut auth = Authenticator::new(&net.genesis);
        auth.limit_carried(2 * CARRIED);
        let now = Instant::now();
        let pool: Vec<Signed<Message>> = (0..6)
            .map(|window| historical_view_change(&net, 3, 1 + window, window))
            .collect();
        let verdicts: Vec<bool> = pool
            .iter()
            .map(|vc| match auth.authenticate_contents_at(vc, now) {
                Ok(Contents::Authentic) => true,
                Ok(Contents::OverBudget) => false,
                Err(error) => panic!("valid votes: {error}"),
            })
            .collect();
        assert_eq!(verdicts, [true, true, false, false, false, false]);
        assert_eq!(auth.message_signatures_checked(), 2 * CARRIED);
        // What the runtime asks before trying a deferred one again (no hashing): not yet.
        assert!(!auth.budget_full_at(3, now));
        assert!(auth.budget_full_at(2, now), "budgets are per sender");
        assert!(!auth.budget_full_at(3, now + CARRIED_REFILL / 2));
        assert!(auth.budget_full_at(3, now + CARRIED_REFILL));
        // Another sender has a budget of its own.
        assert_eq!(
            auth.authenticate_contents_at(&historical_view_change(&net, 2, 1, 7), now)
                .expect("valid"),
            Contents::Authentic,
            "another sender is not held back"
        );
        // The budget fills again over CARRIED_REFILL.
        let later = now + CARRIED_REFILL / 2;
        assert_eq!(
            auth.authenticate_contents_at(&pool[2], later)
                .expect("valid"),
            Contents::Authentic,
            "half a refill: one more"
        );
        assert_eq!(
            auth.authenticate_contents_at(&pool[3], later)
                .expect("valid"),
            Contents::OverBudget
        );
        // Remembered votes need no budget.
        assert_eq!(
            auth.authenticate_contents_at(&pool[0], later)
                .expect("valid"),
            Contents::Authentic,
            "its votes remembered"
        );
        // A message larger than the whole budget passes once it is full, and empties it.
        let mut small = Authenticator::new(&net.genesis);
        small.limit_carried(10);
        assert_eq!(
            small
                .authenticate_contents_at(&pool[4], now)
                .expect("valid"),
            Contents::Authentic,
            "a full budget lets one large message through"
        );
        assert!(matches!(
            small.authenticate_contents_at(&pool[5], now),
            Ok(Contents::OverBudget)
        ));
    }

    /// A replayed message that carries one forged vote among 386 good ones: nothing from a
    /// failed batch is remembered, and a bad carried signature brings no penalty (unlike a bad
    /// outer signature's 60 s unbatched), so every replay of the same bytes costs the victim
    /// all 387 verifications again (in a failed batch, again per key, and singly for the key
    /// the forgery claims).
    #[test]
    fn a_replayed_message_with_one_forged_carried_vote_costs_hashing_the_second_time() {
        let net = TestNet::new(4);
        let mut auth = Authenticator::new(&net.genesis);
        let Message::ViewChange(mut vc) = historical_view_change(&net, 3, 1, 0).message else {
            unreachable!("a view-change")
        };
        // The last prepare "by" backup 1 is forged.
        vc.prepared[127].prepares[0].signature.0[40] ^= 1;
        let forged = sign(&net, 3, Message::ViewChange(vc));
        assert!(auth.authenticate(&forged).is_err());
        let first = auth.message_signatures_checked();
        assert_eq!(first, 1 + CARRIED);
        assert!(auth.authenticate(&forged).is_err());
        let second = auth.message_signatures_checked() - first;
        assert!(
            second <= 2,
            "the same forged view-change, replayed, verified {second} signatures again"
        );
    }

    /// A forgery under an honest validator's name, or a message of forgeries only: the
    /// dishonest sender chose the keys they claim, so finding which is bad would cost single
    /// checks it chose (F3, F4). One batch is verified and the message refused, naming its
    /// sender; the sender's next messages carrying signatures cost their own signature only,
    /// while another sender carrying the same good votes is still heard.
    #[test]
    fn forged_carried_signatures_cost_one_batch_and_silence_their_sender_only() {
        let net = TestNet::new(4);
        let mut auth = Authenticator::new(&net.genesis);
        let Message::ViewChange(mut vc) = historical_view_change(&net, 3, 1, 0).message else {
            unreachable!("a view-change")
        };
        vc.prepared[5].prepares[0].signature.0[40] ^= 1; // "by" honest validator 1
        let error = auth
            .authenticate(&sign(&net, 3, Message::ViewChange(vc.clone())))
            .expect_err("a forged prepare inside");
        assert!(
            matches!(
                error,
                NodeError::Ledger(ledger::Error::BadMessageSignature { from: 3 })
            ),
            "the sender, who signed the forgery, is named: {error:?}"
        );
        assert_eq!(auth.message_signatures_checked(), 1 + CARRIED);
        // Every carried signature forged: the same price, one batch, no single checks.
        for certificate in &mut vc.prepared {
            for prepare in &mut certificate.prepares {
                prepare.signature.0[40] ^= 1;
            }
        }
        let all_forged = sign(&net, 3, Message::ViewChange(vc));
        let mut fresh = Authenticator::new(&net.genesis);
        assert!(fresh.authenticate(&all_forged).is_err());
        assert_eq!(fresh.message_signatures_checked(), 1 + CARRIED);
        // The sender's next view-change, valid or not, is refused unread.
        let before = auth.message_signatures_checked();
        let valid_of_the_forger = historical_view_change(&net, 3, 2, 1);
        assert!(auth.authenticate(&valid_of_the_forger).is_err());
        assert!(auth.authenticate(&all_forged).is_err());
        assert_eq!(
            auth.message_signatures_checked() - before,
            2,
            "outer signatures only"
        );
        // Its own votes, which carry nothing, are still heard.
        let vote = Vote {
            view: 0,
            seq: 1,
            digest: [7; 32],
        };
        auth.authenticate(&sign(&net, 3, Message::Prepare(vote)))
            .expect("the forger's own prepare");
        // Another sender with the same kind of message is heard.
        let of_another = historical_view_change(&net, 2, 2, 1);
        auth.authenticate(&of_another)
            .expect("an honest sender is not silenced by another's forgery");
    }
}

/// Red team s62: `embedded_requests` lists a new-view's batches once per allocation. Read off
/// the wire (`pbft::NewView`'s encoding), equal batches share one allocation and distinct ones
/// never do: every batch a replica could execute is still checked.
#[cfg(test)]
mod red_team_s62 {
    use ledger::testkit::TestNet;
    use pbft::{NewView, PrePrepare, ViewChange};

    use super::tests::{certified_view_change as view_change, pre_prepare, signed};
    use super::*;

    /// The new-view signed by its primary (1), as a peer reads it off the wire.
    fn off_the_wire(net: &TestNet, nv: NewView) -> Signed<Message> {
        let sent = signed(net, 1, Message::NewView(nv), |m| m);
        borsh::from_slice(&borsh::to_vec(&sent).expect("encodes")).expect("decodes")
    }

    /// The new-view signed by its primary (1), whose bytes a peer refuses unread (two batches
    /// under one digest): as a caller in this process would hand it over.
    fn refused_off_the_wire(net: &TestNet, nv: NewView) -> Signed<Message> {
        let sent = signed(net, 1, Message::NewView(nv), |m| m);
        let bytes = borsh::to_vec(&sent).expect("encodes");
        assert!(borsh::from_slice::<Signed<Message>>(&bytes).is_err());
        sent
    }

    fn listed(message: &Message) -> Vec<Request> {
        let mut out = Vec::new();
        embedded_requests(message, &mut out);
        out.into_iter().cloned().collect()
    }

    fn bad_request(net: &TestNet) -> (Request, Request) {
        let good = net.request(&net.sample_tx(3));
        let mut bad = good.clone();
        let mut bytes = good.payload.to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        bad.payload = Arc::from(bytes);
        (good, bad)
    }

    /// Honest: one batch named by three view-changes and the O set is listed once, and passes.
    #[test]
    fn s62_shared_batch_listed_once_and_authentic() {
        let net = TestNet::new(4);
        let (good, _) = bad_request(&net);
        let pp = pre_prepare(&net, vec![good.clone()]);
        let nv = NewView {
            view: 1,
            incarnation: 1,
            view_changes: [0, 2, 3]
                .into_iter()
                .map(|f| view_change(&net, f, pp.clone()))
                .collect(),
            pre_prepares: vec![PrePrepare {
                view: 1,
                ..pp.clone()
            }],
        };
        let read = off_the_wire(&net, nv);
        assert_eq!(listed(&read.message), vec![good]);
        Authenticator::new(&net.genesis)
            .authenticate(&read)
            .expect("authentic");
    }

    /// A relaying primary puts, under the honest digest, a batch with a broken transaction in
    /// the O set, or in one of the view-changes (whose signature still verifies: it covers the
    /// digest only). Off the wire it is refused unread (two batches under one digest); handed
    /// over whole it is its own allocation: listed, and the edge refuses the new-view.
    #[test]
    fn s62_swapped_batch_under_a_signed_digest_is_listed_and_refused() {
        let net = TestNet::new(4);
        let (good, bad) = bad_request(&net);
        let pp = pre_prepare(&net, vec![good.clone()]);
        let mut swapped = pp.clone();
        swapped.proposal = pre_prepare(&net, vec![bad.clone()]).proposal;
        let honest_vcs: Vec<Signed<ViewChange>> = [0, 2, 3]
            .into_iter()
            .map(|f| view_change(&net, f, pp.clone()))
            .collect();
        // In the O set.
        let nv = NewView {
            view: 1,
            incarnation: 1,
            view_changes: honest_vcs.clone(),
            pre_prepares: vec![PrePrepare {
                view: 1,
                ..swapped.clone()
            }],
        };
        let read = refused_off_the_wire(&net, nv);
        assert_eq!(listed(&read.message), vec![good.clone(), bad.clone()]);
        assert!(
            Authenticator::new(&net.genesis)
                .authenticate(&read)
                .is_err()
        );
        // In a relayed view-change (signature kept: it covers the digest only).
        let mut vcs = honest_vcs.clone();
        vcs[2].message.prepared[0].pre_prepare = swapped.clone();
        let nv = NewView {
            view: 1,
            incarnation: 1,
            view_changes: vcs,
            pre_prepares: vec![PrePrepare { view: 1, ..pp }],
        };
        let read = refused_off_the_wire(&net, nv);
        assert_eq!(listed(&read.message), vec![good, bad]);
        let mut auth = Authenticator::new(&net.genesis);
        assert!(auth.authenticate(&read).is_err());
    }
}
