//! What the key service decides a peer's request by, besides the held key's row (docs/SECURITY.md,
//! "Confidential records", §5.3, §16.26): the live read grants of the patients whose home
//! this validator is, and the erased transactions, in memory; and what a held key's row says
//! of its transaction ([`HeldTx`], read from `keys.db` through its epoch index).
//! Kept by the service as it processes applied blocks; rebuilt at open from the chain.
//!
//! [`Index::answer`] says `Erased`, `NotHeld`, `NotOnChain` and `NotEntitled` on its own, and
//! an id held for an asker it finds entitled gets its key with no further chain check (§12.1
//! item 3; before, §16.19): a row's facts are trusted only as far as they hold their tag
//! (§12.1 item 6; the service reads the others from the chain). It follows the processed
//! height; the chain may be ahead of it.

use std::collections::{HashMap, HashSet};

use ledger::entitled::Parties;
use ledger::{PersonId, TxId};

use super::store::Facts;
use crate::wire::KeyReply;

/// A transaction whose key this validator holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct HeldTx {
    pub patient: PersonId,
    /// `None` while it is sealed here and not yet on chain (as processed).
    pub on_chain: Option<OnChain>,
}

impl From<&Facts> for HeldTx {
    fn from(facts: &Facts) -> Self {
        HeldTx {
            patient: facts.patient,
            on_chain: facts.on_chain.as_deref().and_then(OnChain::from_bytes),
        }
    }
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
    /// Read grants of the patients whose home this validator is, by patient.
    home_grants: HashMap<PersonId, Vec<HomeGrant>>,
    /// Transactions erased on chain (as processed): nobody is entitled to their keys.
    erased: HashSet<TxId>,
}

impl Index {
    /// `tx` was erased on chain.
    pub fn erase(&mut self, tx: TxId) {
        self.erased.insert(tx);
    }

    /// Whether `tx` was erased on chain (as processed, or read at start).
    pub fn is_erased(&self, tx: &TxId) -> bool {
        self.erased.contains(tx)
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

    /// What validator `me` answers `asker` for a transaction not erased whose key's row says
    /// `held` (§5.2), or `None` when the key is held and the asker entitled: then the chain
    /// decides. The caller says `Erased` first, without reading the row.
    pub fn answer(
        &self,
        me: u32,
        asker: u32,
        held: Option<HeldTx>,
        block_time_ms: u64,
        now_ms: u64,
    ) -> Option<KeyReply> {
        let Some(held) = held else {
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
    fn answers_what_it_can_without_the_chain() {
        let mut index = Index::default();
        let (held, pending) = ([1; 32], [2; 32]);
        let rows: HashMap<TxId, HeldTx> = [
            (held, record(0, 1)),
            (
                pending,
                HeldTx {
                    patient: PATIENT,
                    on_chain: None,
                },
            ),
        ]
        .into();
        let answer = |index: &Index, me, asker, tx: &TxId, block_ms, now_ms| {
            index.answer(me, asker, rows.get(tx).copied(), block_ms, now_ms)
        };
        assert_eq!(
            answer(&index, 0, 3, &[9; 32], 0, 0),
            Some(KeyReply::NotHeld)
        );
        assert_eq!(
            answer(&index, 0, 1, &pending, 0, 0),
            Some(KeyReply::NotOnChain)
        );
        assert_eq!(
            answer(&index, 0, 1, &held, 0, 0),
            None,
            "the author is a party"
        );
        assert_eq!(
            answer(&index, 0, 2, &held, 0, 0),
            Some(KeyReply::NotEntitled)
        );
        // A grantee of the home, while its grant lives by the chain and by the clock.
        index.add_home_grant(PATIENT, [7; 32], 2, 100);
        assert_eq!(answer(&index, 0, 2, &held, 99, 99), None);
        assert_eq!(
            answer(&index, 0, 2, &held, 100, 0),
            Some(KeyReply::NotEntitled)
        );
        assert_eq!(
            answer(&index, 0, 2, &held, 0, 100),
            Some(KeyReply::NotEntitled)
        );
        // Not at another holder than the home.
        assert_eq!(
            answer(&index, 1, 2, &held, 0, 0),
            Some(KeyReply::NotEntitled)
        );
        index.revoke_home_grant(&PATIENT, &[7; 32]);
        assert_eq!(
            answer(&index, 0, 2, &held, 0, 0),
            Some(KeyReply::NotEntitled)
        );
        index.erase(held);
        assert!(index.is_erased(&held));
    }
}
