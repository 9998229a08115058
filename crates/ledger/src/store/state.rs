//! The deterministic state machine: which transactions of a committed block are applied.
//!
//! Every replica decides the same, because the decision depends only on the chain before the
//! transaction. A transaction that is not applied stays in its block (the block is what was
//! agreed; removing it would change the hash) and is marked rejected with the reason:
//!
//! - a transaction whose id appeared earlier in the chain (or earlier in its block) is a replay;
//! - an `AddRecord` whose consent hash authorised an earlier record: one consent, one record;
//! - a `ConsentGranted` for a consent hash already granted;
//! - a `ConsentUsed` for a consent hash already used;
//! - an entry that carries no valid transaction ([`crate::tx::Invalid`]: its payload does not
//!   decode, has another id or timestamp than its request, or its signature does not verify).
//!   It changes no state but the ids seen: pbft executed its request id, so a later entry
//!   under that id is a duplicate, on every replica alike.
//!
//! Business rules that need a clock or secrets (OTP checks, expiry at the time of use) are the
//! application's, before it submits a transaction; the state machine only enforces what must
//! hold on every replica and can be decided from the chain alone.
use crate::tx::{Checked, Transaction};
use crate::{Hash, Result};

pub const DUPLICATE: &str = "duplicate of an earlier transaction";
pub const CONSENT_RECORDED: &str = "consent already used by another record";
pub const CONSENT_GRANTED: &str = "consent already granted";
pub const CONSENT_USED: &str = "consent already used";

/// What the state machine needs to know of the chain so far.
pub trait StateView {
    fn seen(&mut self, id: &Hash) -> Result<bool>;
    fn consent_has_record(&mut self, consent: &Hash) -> Result<bool>;
    /// Whether `consent` was (granted, used).
    fn consent(&mut self, consent: &Hash) -> Result<(bool, bool)>;
}

/// Decides whether `body` (with id `id`) is applied: `None`, or the reason it is rejected.
pub fn decide(
    view: &mut impl StateView,
    id: &Hash,
    body: &Transaction,
) -> Result<Option<&'static str>> {
    if view.seen(id)? {
        return Ok(Some(DUPLICATE));
    }
    Ok(match body {
        Transaction::AddRecord { consent_hash, .. } => view
            .consent_has_record(consent_hash)?
            .then_some(CONSENT_RECORDED),
        Transaction::ConsentGranted { consent_hash, .. } => {
            view.consent(consent_hash)?.0.then_some(CONSENT_GRANTED)
        }
        Transaction::ConsentUsed { consent_hash, .. } => {
            view.consent(consent_hash)?.1.then_some(CONSENT_USED)
        }
        Transaction::Access { .. } => None,
    })
}

/// The state machine over in-memory sets, for verification to replay a chain and compare with
/// what the store derived.
#[derive(Default)]
pub struct Replay {
    pub seen: std::collections::HashSet<Hash>,
    pub record_consents: std::collections::HashSet<Hash>,
    /// Consent hash to the rows of the transactions that granted and used it.
    pub consents: std::collections::BTreeMap<Hash, (Option<i64>, Option<i64>)>,
    /// Applied records (patient id, transaction row, consent) and accesses (patient id, row),
    /// in chain order.
    pub records: Vec<(String, i64, Hash)>,
    pub accesses: Vec<(String, i64)>,
}

impl StateView for Replay {
    fn seen(&mut self, id: &Hash) -> Result<bool> {
        Ok(self.seen.contains(id))
    }
    fn consent_has_record(&mut self, consent: &Hash) -> Result<bool> {
        Ok(self.record_consents.contains(consent))
    }
    fn consent(&mut self, consent: &Hash) -> Result<(bool, bool)> {
        let (granted, used) = self.consents.get(consent).copied().unwrap_or_default();
        Ok((granted.is_some(), used.is_some()))
    }
}

impl Replay {
    /// Decides and applies the entry with id `id` and verdict `content` at row `tx`; returns
    /// the rejection reason if any.
    pub fn apply(&mut self, tx: i64, id: &Hash, content: &Checked) -> Option<&'static str> {
        let body = match content {
            Ok(t) => &t.body,
            Err(invalid) => {
                self.seen.insert(*id);
                return Some(invalid.reason());
            }
        };
        let outcome = decide(self, id, body).unwrap_or_default();
        self.seen.insert(*id);
        if outcome.is_none() {
            match body {
                Transaction::AddRecord {
                    patient_id,
                    consent_hash,
                    ..
                } => {
                    self.record_consents.insert(*consent_hash);
                    self.records.push((patient_id.clone(), tx, *consent_hash));
                }
                Transaction::ConsentGranted { consent_hash, .. } => {
                    self.consents.entry(*consent_hash).or_default().0 = Some(tx);
                }
                Transaction::ConsentUsed { consent_hash, .. } => {
                    self.consents.entry(*consent_hash).or_default().1 = Some(tx);
                }
                Transaction::Access { patient_id, .. } => {
                    self.accesses.push((patient_id.clone(), tx));
                }
            }
        }
        outcome
    }
}
