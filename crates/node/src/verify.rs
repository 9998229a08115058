//! The edge where signatures are made and checked: nothing reaches the replica unauthenticated,
//! and no block is applied from a peer without its certificate.

use std::collections::{HashMap, VecDeque};
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
        for (from, bytes, signature) in signed.message.embedded_signatures() {
            crypto::verify_embedded(&self.keys, &self.genesis_hash, from, &bytes, &signature)?;
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
        let contents = contents
            .into_iter()
            .map(|c| c.unwrap_or(Err(ledger::Invalid::Undecodable)))
            .collect();
        Ok((block, contents))
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
        Message::Prepare(_) | Message::Commit(_) | Message::Checkpoint(_) => {}
    }
}
