//! The edge where signatures are made and checked: nothing reaches the replica unauthenticated,
//! and no block is applied from a peer without its certificate.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use ledger::crypto::{self, SigningKey, VerifyingKey};
use ledger::{Block, Hash, SignedTransaction};
use pbft::{Message, ReplicaId, Request, Signed};

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
    /// transactions of a batch, the votes inside a view change), those too.
    pub fn authenticate(&mut self, signed: &Signed<Message>) -> Result<(), NodeError> {
        crypto::verify_signed(&self.keys, &self.genesis_hash, signed)?;
        for (from, bytes, signature) in signed.message.embedded_signatures() {
            crypto::verify_embedded(&self.keys, &self.genesis_hash, from, &bytes, &signature)?;
        }
        match &signed.message {
            Message::PrePrepare(pre_prepare) => self.check_requests(&pre_prepare.proposal.requests),
            Message::Forward(requests) => self.check_requests(requests),
            _ => Ok(()),
        }
    }

    /// Every request must be a transaction signed by the validator that accepted it, with the
    /// id and timestamp the request claims; those not seen before are batch-verified.
    /// A request whose exact bytes were decoded and checked here before (a forward, then the
    /// pre-prepare carrying it) is not decoded again.
    fn check_requests(&mut self, requests: &[Request]) -> Result<(), NodeError> {
        let mut unchecked = Vec::new();
        let mut unchecked_requests = Vec::new();
        let mut checked = Vec::new();
        for request in requests {
            if self.known(request) {
                continue;
            }
            let transaction = SignedTransaction::from_request(request)?;
            if self.verified.get(&request.id) == Some(&transaction.signature) {
                checked.push((request, transaction));
            } else {
                unchecked.push(transaction);
                unchecked_requests.push(request);
            }
        }
        if !unchecked.is_empty() {
            crypto::verify_transactions(&self.keys, &unchecked)?;
        }
        for (request, transaction) in unchecked_requests.into_iter().zip(unchecked) {
            self.remember(request.id, transaction.signature);
            self.keep_decoded(request, transaction);
        }
        for (request, transaction) in checked {
            self.keep_decoded(request, transaction);
        }
        Ok(())
    }

    /// A block from a peer: its certificate, Merkle root and transaction signatures.
    pub fn check_block(&self, block: &Block) -> Result<(), NodeError> {
        ledger::verify::check_block(&self.keys, &self.genesis_hash, block)?;
        Ok(())
    }
}
