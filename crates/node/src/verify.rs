//! The edge where signatures are made and checked: nothing reaches the replica unauthenticated,
//! and no block is applied from a peer without its certificate.

use ledger::crypto::{self, SigningKey, VerifyingKey};
use ledger::{Block, Hash, SignedTransaction};
use pbft::{Message, ReplicaId, Request, Signed};

use crate::error::NodeError;

pub(crate) struct Authenticator {
    genesis_hash: Hash,
    keys: Vec<VerifyingKey>,
}

impl Authenticator {
    pub fn new(genesis: &ledger::Genesis) -> Self {
        Self {
            genesis_hash: genesis.hash(),
            keys: genesis.keys().to_vec(),
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
    pub fn authenticate(&self, signed: &Signed<Message>) -> Result<(), NodeError> {
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
    /// id and timestamp the request claims (batch verification).
    fn check_requests(&self, requests: &[Request]) -> Result<(), NodeError> {
        let transactions = requests
            .iter()
            .map(SignedTransaction::from_request)
            .collect::<Result<Vec<_>, _>>()?;
        crypto::verify_transactions(&self.keys, &transactions)?;
        Ok(())
    }

    /// A block from a peer: its certificate, Merkle root and transaction signatures.
    pub fn check_block(&self, block: &Block) -> Result<(), NodeError> {
        ledger::verify::check_block(&self.keys, &self.genesis_hash, block)?;
        Ok(())
    }
}
