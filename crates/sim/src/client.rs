//! Clients and their transactions: every request is a real `ledger::SignedTransaction` (a record,
//! a consent or an access entry, over ten patients), signed by the validator that accepts it, so
//! a payload substituted under the same id and timestamp can show. The node's edge check of the
//! transactions a pre-prepare, a forward or a fetched block carries is here too.
use std::sync::Arc;

use ledger::SignedTransaction;
use ledger::testkit::{GENESIS_TIME_MS, TestNet};
use pbft::{ReplicaId, Request};

/// The run's transactions.
pub struct Transactions {
    net: TestNet,
    seed: u64,
}

impl Transactions {
    pub fn new(n: u32, seed: u64) -> Self {
        Transactions {
            net: TestNet::new(n as usize),
            seed,
        }
    }

    /// The `i`-th request of the run, accepted by validator `to` at tick `now`, and the patient
    /// it is about.
    pub fn request(&self, i: u64, to: ReplicaId, now: u64) -> (Request, String) {
        let body = self.net.sample_tx(i).body;
        let patient = body.patient_id().to_string();
        let mut nonce = [0u8; 16];
        nonce[..8].copy_from_slice(&i.to_le_bytes());
        nonce[8..].copy_from_slice(&self.seed.to_le_bytes());
        let tx = self.net.sign_tx(body, to, GENESIS_TIME_MS + now, nonce);
        (tx.to_request(), patient)
    }

    /// The node's edge check (`node::verify`): the payload decodes to a transaction with the
    /// request's id and timestamp, signed by the validator it names.
    pub fn authentic(&self, request: &Request) -> bool {
        let Ok(tx) = SignedTransaction::from_request(request) else {
            return false;
        };
        self.net
            .keys
            .get(tx.validator as usize)
            .is_some_and(|key| tx.verify(&key.verifying_key()).is_ok())
    }
}

/// Whether two requests are the same byte for byte.
pub fn same(a: &Request, b: &Request) -> bool {
    a.id == b.id && a.timestamp_ms == b.timestamp_ms && Arc::ptr_eq(&a.payload, &b.payload)
        || a == b
}
