//! Clients and their transactions: every request is a real `ledger::SignedTx`, the testkit's
//! sample stream (the enrollment of ten patients and three doctors, then in-person write
//! grants, the records that use them and patients' own reads; signed by the patients' and
//! doctors' custodial keys and by their home validators), so a payload substituted under the
//! same id and timestamp can show. The node's edge check of the transactions a pre-prepare, a
//! forward or a fetched block carries is here too.
use std::collections::HashMap;
use std::sync::Arc;

use ledger::testkit::{SAMPLE_DOCTORS, SAMPLE_PATIENTS, TestNet};
use ledger::{Hash, PersonId, crypto};
use pbft::Request;

/// The run's transactions.
pub struct Transactions {
    net: TestNet,
    genesis_hash: Hash,
    /// The sample people's names by id: patients `p001` to `p010`, doctors `d001` to `d003`.
    names: HashMap<PersonId, String>,
}

impl Transactions {
    pub fn new(n: u32) -> Self {
        let net = TestNet::new(n as usize);
        let patients =
            (0..SAMPLE_PATIENTS).map(|k| (net.sample_patient(k).id, format!("p{:03}", k + 1)));
        let doctors =
            (0..SAMPLE_DOCTORS).map(|k| (net.sample_doctor(k).id, format!("d{:03}", k + 1)));
        let names = patients.chain(doctors).collect();
        Transactions {
            genesis_hash: net.genesis.hash(),
            net,
            names,
        }
    }

    /// The `i`-th request of the run, and the person it is about (the patient, or a doctor
    /// being enrolled). Transactions are signed by people, not by the validator that accepts
    /// them, so which validator a client sends a request to does not change its bytes.
    pub fn request(&self, i: u64) -> (Request, String) {
        let tx = self.net.sample_tx(i);
        let subject = tx
            .meta()
            .subject()
            .and_then(|s| self.names.get(s))
            .cloned()
            .unwrap_or_default();
        (tx.to_request(&self.genesis_hash), subject)
    }

    /// The node's edge check (`node::verify`, `ledger::crypto::check_entries`): the payload
    /// decodes to a transaction with the request's id and timestamp and the body its hash
    /// names, and its signatures verify.
    pub fn authentic(&self, request: &Request) -> bool {
        crypto::check_entries(self.net.genesis.keys(), &self.genesis_hash, [request])
            .pop()
            .is_some_and(|verdict| verdict.is_ok())
    }
}

/// Whether two requests are the same byte for byte.
pub fn same(a: &Request, b: &Request) -> bool {
    a.id == b.id && a.timestamp_ms == b.timestamp_ms && Arc::ptr_eq(&a.payload, &b.payload)
        || a == b
}
