//! The edge where signatures are made and checked: nothing reaches the replica unauthenticated,
//! and no block is applied from a peer without its certificate.

use std::collections::{HashMap, VecDeque};

use ledger::crypto::{self, SigningKey, VerifyingKey};
use ledger::{Block, Hash, SignedTransaction};
use pbft::{Message, ReplicaId, Request, Signed};

use crate::error::NodeError;

/// Transaction signatures remembered as checked. A transaction reaches a validator several
/// times (forwarded, retransmitted, then in a pre-prepare); it is verified once.
const REMEMBERED_SIGNATURES: usize = 1 << 18;

pub(crate) struct Authenticator {
    genesis_hash: Hash,
    keys: Vec<VerifyingKey>,
    verified: HashMap<Hash, [u8; 64]>,
    verified_order: VecDeque<Hash>,
}

impl Authenticator {
    pub fn new(genesis: &ledger::Genesis) -> Self {
        Self {
            genesis_hash: genesis.hash(),
            keys: genesis.keys().to_vec(),
            verified: HashMap::new(),
            verified_order: VecDeque::new(),
        }
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
    fn check_requests(&mut self, requests: &[Request]) -> Result<(), NodeError> {
        let mut unchecked = Vec::new();
        for request in requests {
            let transaction = SignedTransaction::from_request(request)?;
            if self.verified.get(&request.id) != Some(&transaction.signature) {
                unchecked.push(transaction);
            }
        }
        crypto::verify_transactions(&self.keys, &unchecked)?;
        for transaction in &unchecked {
            self.remember(transaction.id(), transaction.signature);
        }
        Ok(())
    }

    /// A block from a peer: its certificate, Merkle root and transaction signatures.
    pub fn check_block(&self, block: &Block) -> Result<(), NodeError> {
        ledger::verify::check_block(&self.keys, &self.genesis_hash, block)?;
        Ok(())
    }
}
