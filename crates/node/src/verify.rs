//! The edge where signatures are made and checked: nothing reaches the replica unauthenticated,
//! and no block is applied from a peer without its certificate.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use ledger::crypto::{self, SigningKey, VerifyingKey};
use ledger::{Block, Checked, Hash, SignedTransaction};
use pbft::{Message, ReplicaId, Request, Signed, ViewChange};

use crate::error::NodeError;

/// Transaction signatures remembered as checked. A transaction reaches a validator several
/// times (forwarded, retransmitted, then in a pre-prepare); it is verified once.
const REMEMBERED_SIGNATURES: usize = 1 << 18;
/// Decoded transactions kept until their block commits (about 0.5 KB each).
const REMEMBERED_DECODED: usize = 1 << 16;

/// A transaction decoded at the edge, with the payload it was decoded from.
struct Decoded {
    payload: Arc<[u8]>,
    transaction: SignedTransaction,
}

pub(crate) struct Authenticator {
    genesis_hash: Hash,
    keys: Vec<VerifyingKey>,
    verified: HashMap<Hash, [u8; 64]>,
    verified_order: VecDeque<Hash>,
    /// Each payload was decoded (and its id checked) when it arrived or was accepted here;
    /// the block that commits it takes it from here instead of decoding it a second time.
    /// Bounded: an evicted entry only costs a decode.
    decoded: HashMap<Hash, Decoded>,
    decoded_order: VecDeque<Hash>,
}

impl Authenticator {
    pub fn new(genesis: &ledger::Genesis) -> Self {
        Self {
            genesis_hash: genesis.hash(),
            keys: genesis.keys().to_vec(),
            verified: HashMap::new(),
            verified_order: VecDeque::new(),
            decoded: HashMap::new(),
            decoded_order: VecDeque::new(),
        }
    }

    /// Keeps `transaction`, decoded from `request` (whose id and timestamp it matches), for
    /// [`Authenticator::take_decoded`].
    pub fn keep_decoded(&mut self, request: &Request, transaction: SignedTransaction) {
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
    pub fn take_decoded(&mut self, request: &Request) -> Option<SignedTransaction> {
        match self.decoded.remove(&request.id) {
            Some(known) if known.payload[..] == request.payload[..] => Some(known.transaction),
            _ => None,
        }
    }

    /// Whether `request` is a transaction already decoded and checked here, byte for byte.
    fn known(&self, request: &Request) -> bool {
        self.decoded
            .get(&request.id)
            .is_some_and(|known| known.payload[..] == request.payload[..])
    }

    /// Records a transaction whose signature is known good (checked, or made here).
    pub fn remember(&mut self, id: Hash, signature: [u8; 64]) {
        if self.verified.insert(id, signature).is_none() {
            self.verified_order.push_back(id);
            if self.verified_order.len() > REMEMBERED_SIGNATURES
                && let Some(oldest) = self.verified_order.pop_front()
            {
                self.verified.remove(&oldest);
            }
        }
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
        crypto::verify_signed(&self.keys, &self.genesis_hash, signed)?;
        // A signature repeated inside one message is verified once (the replica's shape check
        // bounds how many distinct ones a message may carry).
        let mut seen = HashSet::new();
        for (from, bytes, signature) in signed.message.embedded_signatures() {
            if seen.insert((from, signature.0, ledger::sha256(&bytes))) {
                crypto::verify_embedded(&self.keys, &self.genesis_hash, from, &bytes, &signature)?;
            }
        }
        let mut requests = Vec::new();
        embedded_requests(&signed.message, &mut requests);
        self.check_requests(requests)
    }

    /// Every request must be a transaction signed by the validator that accepted it, with the
    /// id and timestamp the request claims; those not seen before are batch-verified.
    /// A request whose exact bytes were decoded and checked here before (a forward, then the
    /// pre-prepare carrying it) is not decoded again, nor is one repeated within the message.
    fn check_requests(&mut self, requests: Vec<&Request>) -> Result<(), NodeError> {
        let mut in_message: HashMap<Hash, &[u8]> = HashMap::new();
        let mut unchecked = Vec::new();
        let mut decoded = Vec::new();
        let mut checked = Vec::new();
        for request in requests {
            if self.known(request) {
                continue;
            }
            match in_message.insert(request.id, &request.payload) {
                Some(earlier) if earlier == &request.payload[..] => continue,
                _ => {}
            }
            let transaction = SignedTransaction::from_request(request)
                .map_err(|invalid| invalid_request(request, invalid))?;
            if self.verified.get(&request.id) == Some(&transaction.signature) {
                checked.push((request, transaction));
            } else {
                unchecked.push(request);
                decoded.push(Ok(transaction));
            }
        }
        crypto::check_signatures(&self.keys, unchecked.iter().map(|r| &r.id), &mut decoded);
        if let Some((request, Err(invalid))) = unchecked
            .iter()
            .zip(&decoded)
            .find(|(_, verdict)| verdict.is_err())
        {
            return Err(invalid_request(request, *invalid));
        }
        for (request, verdict) in unchecked.into_iter().zip(decoded) {
            if let Ok(transaction) = verdict {
                self.remember(request.id, transaction.signature);
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
    /// restart, or evicted from memory) is decoded and its signature checked now. An invalid
    /// entry is the state machine's to reject ([`ledger::Store::append_block`]), never a
    /// reason to stop.
    pub fn block_of(
        &mut self,
        committed: pbft::Committed,
    ) -> Result<(Block, Vec<Checked>), NodeError> {
        let block = Block::from_committed(committed)?;
        let mut contents: Vec<Option<Checked>> = block
            .entries
            .iter()
            .map(|entry| self.take_decoded(entry).map(Ok))
            .collect();
        let unknown: Vec<usize> = (0..contents.len())
            .filter(|&i| contents[i].is_none())
            .collect();
        let verdicts =
            crypto::check_entries(&self.keys, unknown.iter().map(|&i| &block.entries[i]));
        for (i, verdict) in unknown.into_iter().zip(verdicts) {
            contents[i] = Some(verdict);
        }
        // Every slot is filled by now (were one not, the store would refuse the count).
        Ok((block, contents.into_iter().flatten().collect()))
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
    fn view_change<'m>(vc: &'m ViewChange, out: &mut Vec<&'m Request>) {
        for cert in &vc.prepared {
            out.extend(&cert.pre_prepare.proposal.requests);
        }
    }
    match message {
        Message::Forward(requests) => out.extend(requests),
        Message::PrePrepare(pre_prepare) => out.extend(&pre_prepare.proposal.requests),
        Message::ViewChange(vc) => view_change(vc, out),
        Message::NewView(nv) => {
            for pre_prepare in &nv.pre_prepares {
                out.extend(&pre_prepare.proposal.requests);
            }
            for vc in &nv.view_changes {
                view_change(&vc.message, out);
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
    use pbft::{Checkpoint, NewView, PrePrepare, PreparedCertificate, Proposal, Vote};

    use super::*;

    /// Signs `message` as validator `from` of `net`.
    fn signed<M: Clone>(
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

    /// The pre-prepare of view 0, sequence 1 for `requests`, with its digest.
    fn pre_prepare(net: &TestNet, requests: Vec<Request>) -> PrePrepare {
        let proposal = Proposal {
            seq: 1,
            view: 0,
            proposer: 0,
            prev: net.genesis.hash(),
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
        let pre_prepare = pre_prepare(net, requests);
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
        let good = net.sample_tx(3).to_request();
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
        let torsions: Vec<SignedTransaction> = (0..16).map(|i| net.torsion_tx(i)).collect();
        let requests: Vec<Request> = torsions.iter().map(SignedTransaction::to_request).collect();
        let (good, substitutes) = substitutes(&net);
        let bad_signature = substitutes[1].clone();

        // The rule: each signature checked on its own.
        let rule: Vec<bool> = torsions
            .iter()
            .map(|t| t.verify(&keys[t.validator as usize]).is_ok())
            .collect();
        let verdicts =
            |checked: &[Checked]| -> Vec<bool> { checked.iter().map(Result::is_ok).collect() };

        // Batches: each alone, each beside a valid request, all together beside a failure.
        let alone: Vec<bool> = requests
            .iter()
            .map(|r| crypto::check_entries(keys, [r])[0].is_ok())
            .collect();
        let beside_good: Vec<bool> = requests
            .iter()
            .map(|r| crypto::check_entries(keys, [&good, r])[1].is_ok())
            .collect();
        let mut entries = vec![bad_signature.clone()];
        entries.extend(requests.iter().cloned());
        entries.push(good.clone());
        let together = verdicts(&crypto::check_entries(keys, &entries)[1..=requests.len()]);
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
        let (mut block, after_edge) = seen.block_of(committed.clone()).expect("a block");
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
        let unknown = net.sample_tx(4).to_request();
        let requests = vec![good, bad[0].clone(), unknown, bad[1].clone()];
        let pre_prepare = pre_prepare(&net, requests);
        let committed = pbft::Committed {
            digest: pre_prepare.digest,
            proposal: pre_prepare.proposal,
            commit_view: 0,
            signatures: vec![],
        };
        let (mut block, contents) = auth.block_of(committed).expect("a block, never a stop");
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
}
