//! What the key service keeps in memory so that a peer's request costs no SQLite read unless
//! the peer may get a key (docs/SECURITY.md, "Confidential records", §5.3; red team of the
//! code, W4): the transactions whose keys this validator holds, each with its patient, whether
//! it is a record and its parties, the live read grants of the patients whose home it is, and
//! the erased transactions.
//! Kept by the service as it stores and deletes keys and processes applied blocks; rebuilt at
//! open from `keys.db` and the chain.
//!
//! The index answers `Erased`, `NotHeld`, `NotOnChain` and `NotEntitled` on its own, and an id
//! it holds for an asker it finds entitled gets its key with no further chain check (§12.1 item
//! 3; before, §16.19): what it is rebuilt from at start is trusted only as far as each
//! `keys.db` row's facts hold their tag (§12.1 item 6). It follows the processed height; the
//! chain may be ahead of it.

use std::collections::{HashMap, HashSet};

use ledger::entitled::Parties;
use ledger::{PersonId, TxId};

use crate::wire::KeyReply;

/// A transaction whose key this validator holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct HeldTx {
    pub patient: PersonId,
    /// `None` while it is sealed here and not yet on chain (as processed).
    pub on_chain: Option<OnChain>,
}

/// What the chain says of a held transaction once it is on chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct OnChain {
    pub parties: Parties,
    /// An `AddRecord` (grantees are entitled to records only, §4.1).
    pub record: bool,
}

impl OnChain {
    /// Its bytes in `keys.db` (`data_keys.on_chain`): the parties' ids, then the record flag.
    pub fn to_bytes(self) -> [u8; 13] {
        let mut bytes = [0; 13];
        let Parties {
            sealer,
            patient_home,
            doctor_home,
        } = self.parties;
        for (i, id) in [sealer, patient_home, doctor_home].into_iter().enumerate() {
            bytes[4 * i..4 * i + 4].copy_from_slice(&id.to_le_bytes());
        }
        bytes[12] = u8::from(self.record);
        bytes
    }

    /// Read from [`OnChain::to_bytes`]; `None` for bytes it did not write.
    pub fn from_bytes(bytes: &[u8]) -> Option<OnChain> {
        let bytes: &[u8; 13] = bytes.try_into().ok()?;
        let id =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let record = match bytes[12] {
            0 => false,
            1 => true,
            _ => return None,
        };
        Some(OnChain {
            parties: Parties {
                sealer: id(0),
                patient_home: id(4),
                doctor_home: id(8),
            },
            record,
        })
    }
}

/// A read grant of a patient of this home, not revoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct HomeGrant {
    grant: TxId,
    /// The home of the grant's doctor: the validator entitled by it.
    grantee: u32,
    expires_ms: u64,
}

#[derive(Default)]
pub(super) struct Index {
    held: HashMap<TxId, HeldTx>,
    /// Records held per patient (on chain), for the per-grant key status (§13).
    records_held: HashMap<PersonId, u64>,
    /// Read grants of the patients whose home this validator is, by patient.
    home_grants: HashMap<PersonId, Vec<HomeGrant>>,
    /// Transactions erased on chain (as processed): nobody is entitled to their keys.
    erased: HashSet<TxId>,
}

impl Index {
    /// Keys held (`data_keys` rows, pending seals included).
    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn get(&self, tx: &TxId) -> Option<&HeldTx> {
        self.held.get(tx)
    }

    /// `tx`'s key is held now.
    pub fn hold(&mut self, tx: TxId, held: HeldTx) {
        if let Some(old) = self.held.insert(tx, held) {
            self.count(&old, false);
        }
        self.count(&held, true);
    }

    /// `tx`'s key is no longer held.
    pub fn release(&mut self, tx: &TxId) {
        if let Some(old) = self.held.remove(tx) {
            self.count(&old, false);
        }
    }

    fn count(&mut self, held: &HeldTx, added: bool) {
        if !held.on_chain.is_some_and(|c| c.record) {
            return;
        }
        let count = self.records_held.entry(held.patient).or_default();
        if added {
            *count += 1;
        } else {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.records_held.remove(&held.patient);
            }
        }
    }

    /// `tx` was erased on chain.
    pub fn erase(&mut self, tx: TxId) {
        self.erased.insert(tx);
    }

    /// The transactions of `patient`'s held keys (a scan: a read grant's end only).
    pub fn held_of(&self, patient: &PersonId) -> Vec<TxId> {
        self.held
            .iter()
            .filter(|(_, held)| held.patient == *patient)
            .map(|(tx, _)| *tx)
            .collect()
    }

    /// Whether `tx` was erased on chain (as processed, or read at start).
    pub fn is_erased(&self, tx: &TxId) -> bool {
        self.erased.contains(tx)
    }

    /// Records of `patient` on chain whose keys are held.
    pub fn records_held(&self, patient: &PersonId) -> u64 {
        self.records_held.get(patient).copied().unwrap_or(0)
    }

    /// A read grant of `patient`, whose home this validator is, to a doctor of `grantee`,
    /// until `expires_ms`.
    pub fn add_home_grant(
        &mut self,
        patient: PersonId,
        grant: TxId,
        grantee: u32,
        expires_ms: u64,
    ) {
        self.home_grants
            .entry(patient)
            .or_default()
            .push(HomeGrant {
                grant,
                grantee,
                expires_ms,
            });
    }

    /// `grant` of `patient` was revoked.
    pub fn revoke_home_grant(&mut self, patient: &PersonId, grant: &TxId) {
        if let Some(grants) = self.home_grants.get_mut(patient) {
            grants.retain(|g| g.grant != *grant);
            if grants.is_empty() {
                self.home_grants.remove(patient);
            }
        }
    }

    /// Forgets the grants ended by `block_time_ms` (they never come back).
    pub fn expire_home_grants(&mut self, block_time_ms: u64) {
        self.home_grants.retain(|_, grants| {
            grants.retain(|g| block_time_ms < g.expires_ms);
            !grants.is_empty()
        });
    }

    /// Whether a read grant of `patient` to a doctor of `validator` is live now (§4.1).
    fn grantee(&self, patient: &PersonId, validator: u32, block_time_ms: u64, now_ms: u64) -> bool {
        self.home_grants.get(patient).is_some_and(|grants| {
            grants.iter().any(|g| {
                g.grantee == validator && block_time_ms < g.expires_ms && now_ms < g.expires_ms
            })
        })
    }

    /// What validator `me` answers `asker` for `tx` from memory (§5.2), or `None` when the
    /// index finds the key held and the asker entitled: then the chain decides.
    pub fn answer(
        &self,
        me: u32,
        asker: u32,
        tx: &TxId,
        block_time_ms: u64,
        now_ms: u64,
    ) -> Option<KeyReply> {
        if self.erased.contains(tx) {
            // That it is erased is on chain for everyone to see (§2).
            return Some(KeyReply::Erased);
        }
        let Some(held) = self.held.get(tx) else {
            return Some(KeyReply::NotHeld);
        };
        let Some(on_chain) = held.on_chain else {
            return Some(KeyReply::NotOnChain);
        };
        let parties = on_chain.parties;
        let entitled = parties.includes(asker)
            || (on_chain.record
                && parties.patient_home == me
                && self.grantee(&held.patient, asker, block_time_ms, now_ms));
        (!entitled).then_some(KeyReply::NotEntitled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATIENT: PersonId = [1; 16];

    fn record(patient_home: u32, author: u32) -> HeldTx {
        HeldTx {
            patient: PATIENT,
            on_chain: Some(OnChain {
                parties: Parties {
                    sealer: author,
                    patient_home,
                    doctor_home: author,
                },
                record: true,
            }),
        }
    }

    #[test]
    fn what_the_chain_says_reads_back_from_its_bytes() {
        let on_chain = OnChain {
            parties: Parties {
                sealer: 3,
                patient_home: 70_000,
                doctor_home: 0,
            },
            record: true,
        };
        assert_eq!(OnChain::from_bytes(&on_chain.to_bytes()), Some(on_chain));
        let grant = OnChain {
            record: false,
            ..on_chain
        };
        assert_eq!(OnChain::from_bytes(&grant.to_bytes()), Some(grant));
        let mut bad = on_chain.to_bytes();
        bad[12] = 2;
        assert_eq!(OnChain::from_bytes(&bad), None);
        assert_eq!(OnChain::from_bytes(&bad[..12]), None);
    }

    #[test]
    fn answers_from_memory_what_it_can() {
        let mut index = Index::default();
        let (held, pending) = ([1; 32], [2; 32]);
        index.hold(held, record(0, 1));
        index.hold(
            pending,
            HeldTx {
                patient: PATIENT,
                on_chain: None,
            },
        );
        assert_eq!(index.answer(0, 3, &[9; 32], 0, 0), Some(KeyReply::NotHeld));
        assert_eq!(
            index.answer(0, 1, &pending, 0, 0),
            Some(KeyReply::NotOnChain)
        );
        assert_eq!(
            index.answer(0, 1, &held, 0, 0),
            None,
            "the author is a party"
        );
        assert_eq!(index.answer(0, 2, &held, 0, 0), Some(KeyReply::NotEntitled));
        // A grantee of the home, while its grant lives by the chain and by the clock.
        index.add_home_grant(PATIENT, [7; 32], 2, 100);
        assert_eq!(index.answer(0, 2, &held, 99, 99), None);
        assert_eq!(
            index.answer(0, 2, &held, 100, 0),
            Some(KeyReply::NotEntitled)
        );
        assert_eq!(
            index.answer(0, 2, &held, 0, 100),
            Some(KeyReply::NotEntitled)
        );
        // Not at another holder than the home.
        assert_eq!(index.answer(1, 2, &held, 0, 0), Some(KeyReply::NotEntitled));
        index.revoke_home_grant(&PATIENT, &[7; 32]);
        assert_eq!(index.answer(0, 2, &held, 0, 0), Some(KeyReply::NotEntitled));
        index.release(&held);
        index.erase(held);
        assert_eq!(index.answer(0, 1, &held, 0, 0), Some(KeyReply::Erased));
    }

    #[test]
    fn counts_the_records_held_per_patient() {
        let mut index = Index::default();
        let pending = HeldTx {
            patient: PATIENT,
            on_chain: None,
        };
        index.hold([1; 32], pending);
        assert_eq!(index.records_held(&PATIENT), 0, "not on chain yet");
        index.hold([1; 32], record(0, 1));
        index.hold([2; 32], record(0, 1));
        index.hold([2; 32], record(0, 1));
        assert_eq!(index.records_held(&PATIENT), 2);
        index.release(&[1; 32]);
        index.release(&[1; 32]);
        assert_eq!(index.records_held(&PATIENT), 1);
        assert_eq!(index.len(), 1);
    }
}
