//! What each applied block changes in the key store (docs/SECURITY.md, "Confidential records",
//! §5.4), in one `keys.db` transaction with the processed height, so that a restart resumes
//! exactly (§5.6). Blocks come from the runtime in height order; those the service missed
//! (its queue was full, or it starts) are read from `chain.db` through the same function.
//! Wanted keys are kept in memory only: at start, the blocks from the lowest height wanted
//! when the processed height was written are read again (§12.1, [`Service::want_again`]).
//!
//! | event in the block | what this node does |
//! |---|---|
//! | a sealed transaction it sealed | no longer pending; what the chain says of it written in its row (at start a key is pending iff its row says nothing and its transaction is not applied) |
//! | a sealed transaction it is a party to and does not hold | wanted |
//! | a read grant to one of its doctors | a `read_grants` row; the patient's applied records it is not a party to wanted (none at the patient's home) |
//! | a read grant of a patient whose home it is | kept in the in-memory index, until revoked or ended, to answer the grantee (§5.3) |
//! | a record of a patient with a live read grant here | wanted, from the patient's home |
//! | a revocation, or the grant's end by the block's time or the clock | if no other grant of the patient here is live: delete every key of the patient it is not a party to, and want none |
//! | an accepted erasure of a transaction | delete its key and want it no more; then empty the WAL |
//! | a rejected transaction whose pending key it holds (not as a duplicate); a pending key whose `not_after_ms` has passed | delete the row |

use std::collections::BTreeSet;
use std::time::Instant;

use ledger::entitled::{self, AppliedBlock, EntryVerdict, Parties};
use ledger::seal::is_sealed_kind;
use ledger::tx::{AnswerErasure, Decision, Grant, Scope};
use ledger::{Meta, PersonId, Queries, TxHeader, TxId};
use pbft::ReplicaId;

use super::store::{Durability, ReadGrantRow};
use super::{HeldTx, Service, Wanted};
use crate::error::NodeError;

/// Blocks read from `chain.db` per keys.db transaction while catching up.
const CATCH_UP_BLOCKS: u64 = 256;

/// The validator a node entitled to a key asks first (§5.2): a grantee asks the patient's
/// home; a party asks the sealer, or (it lost its store) the patient's home, or the doctor's,
/// or, when all of them are itself, itself: then it asks every other validator in turn
/// (`holder_for`), since any holder, a grantee too, answers a party.
pub(super) fn first_source(parties: &Parties, as_grantee: bool, me: ReplicaId) -> u32 {
    if as_grantee {
        return parties.patient_home;
    }
    [parties.sealer, parties.patient_home, parties.doctor_home]
        .into_iter()
        .find(|validator| *validator != me)
        .unwrap_or(me)
}

impl Service {
    /// Processes every block applied since the processed height, from `chain.db`.
    pub(super) fn catch_up(&mut self) -> Result<(), NodeError> {
        loop {
            let (head, _) = self.chain.head()?;
            if head <= self.processed {
                return Ok(());
            }
            let last = head.min(self.processed + CATCH_UP_BLOCKS);
            let mut blocks = Vec::new();
            for height in self.processed + 1..=last {
                match entitled::applied_block(&self.chain, height)? {
                    Some(block) => blocks.push(block),
                    None => break,
                }
            }
            if blocks.is_empty() {
                return Ok(());
            }
            self.process_blocks(blocks)?;
        }
    }

    /// Processes `blocks` (in height order; those at or below the processed height skipped,
    /// those missing in between read from `chain.db`) in one `keys.db` transaction.
    pub(super) fn process_blocks(&mut self, blocks: Vec<AppliedBlock>) -> Result<(), NodeError> {
        let mut todo = Vec::with_capacity(blocks.len());
        let mut next = self.processed + 1;
        for block in blocks {
            while next < block.height {
                match entitled::applied_block(&self.chain, next)? {
                    Some(missed) => todo.push(missed),
                    None => break,
                }
                next += 1;
            }
            if block.height == next {
                todo.push(block);
                next += 1;
            }
        }
        let Some(last) = todo.last().map(|block| block.height) else {
            return Ok(());
        };
        // Blocks that change nothing here are not worth a commit of their own: their height is
        // written with the next change, or by the timer. Processed again after a crash, they
        // change nothing again (what they read is what the last write left). Not synced: a
        // crash that loses this commit loses the processed height with it, and the blocks are
        // processed again from `chain.db` at start (§12); an erasure's deletion is synced by
        // the checkpoint below.
        self.store.begin(Durability::Deferred)?;
        let before = self.store.total_changes();
        let applied = todo
            .iter()
            .try_fold(false, |erased, block| Ok(self.apply(block)? || erased));
        let erased = match applied {
            Ok(erased) => erased,
            Err(error) => {
                self.store.rollback();
                return Err(error);
            }
        };
        if self.store.total_changes() == before {
            self.store.rollback();
        } else {
            let written = self.write_processed(last);
            if let Err(error) = written.and_then(|()| self.store.commit()) {
                self.store.rollback();
                self.saved_heights = None;
                return Err(error);
            }
            self.processed_saved = last;
        }
        self.processed = last;
        if erased {
            self.store.truncate_wal()?;
        }
        Ok(())
    }

    /// Writes the processed height if blocks that changed nothing moved it since the last
    /// write, so that a restart does not process them again.
    pub(super) fn save_processed(&mut self) -> Result<(), NodeError> {
        if self.processed_saved < self.processed {
            let height = self.processed;
            let written = self.in_write(Durability::Deferred, |service| {
                service.write_processed(height)
            });
            if written.is_err() {
                self.saved_heights = None;
            }
            written?;
            self.processed_saved = height;
        }
        Ok(())
    }

    /// Writes the processed `height` with what a restart reads again to want what is still
    /// missing (§12.1): the lowest wanted height, and the wanted heights (their changes since
    /// the last write), in the caller's transaction.
    pub(super) fn write_processed(&mut self, height: u64) -> Result<(), NodeError> {
        let rows = self.store.rows();
        rows.set_processed(height, self.wanted_from(height))?;
        let unchanged = self.saved_heights.as_ref().is_some_and(|saved| {
            saved.len() == self.wanted.height_count()
                && saved.iter().copied().eq(self.wanted.heights())
        });
        if unchanged {
            return rows.set_wanted_heights(&[], &[], false, height);
        }
        let now: BTreeSet<u64> = self.wanted.heights().collect();
        match self.saved_heights.take() {
            Some(saved) => {
                let added: Vec<u64> = now.difference(&saved).copied().collect();
                let removed: Vec<u64> = saved.difference(&now).copied().collect();
                rows.set_wanted_heights(&added, &removed, false, height)?;
            }
            None => {
                let all: Vec<u64> = now.iter().copied().collect();
                rows.set_wanted_heights(&all, &[], true, height)?;
            }
        }
        self.saved_heights = Some(now);
        Ok(())
    }

    /// One block's effects (inside the caller's transaction). Whether a key was dropped (an
    /// erasure, or a grant's end): the WAL is then emptied after the commit, so that no frame
    /// keeps the deleted row.
    fn apply(&mut self, block: &AppliedBlock) -> Result<bool, NodeError> {
        self.block_time_ms = block.time_ms;
        // A grant is live while T < expires_ms: those that end by this block's time end first.
        let ended: Vec<TxId> = self
            .read_grants
            .values()
            .filter(|grant| block.time_ms >= grant.expires_ms)
            .map(|grant| grant.grant)
            .collect();
        let mut erased = false;
        for grant in &ended {
            erased |= self.end_grant(grant)?;
        }
        self.index.expire_home_grants(block.time_ms);
        for entry in &block.entries {
            let Some(header) = &entry.header else {
                continue;
            };
            let sealed = is_sealed_kind(&header.meta);
            match entry.verdict {
                // A duplicate says nothing of the first copy: it never deletes a key (§16.18).
                EntryVerdict::Duplicate => continue,
                EntryVerdict::Rejected => {
                    // Every row the index finds (rejections are few): the body stays on chain.
                    if sealed && self.pending.remove(&entry.id) {
                        self.delete_key(&entry.id)?;
                    }
                    continue;
                }
                EntryVerdict::Applied => {}
            }
            match &header.meta {
                Meta::Grant(grant) if matches!(grant.scope, Scope::Read { .. }) => {
                    self.on_read_grant(block, &entry.id, grant)?
                }
                Meta::Revoke(revoke) => {
                    self.index
                        .revoke_home_grant(&revoke.patient, &revoke.target);
                    if self.read_grants.contains_key(&revoke.target) {
                        erased |= self.end_grant(&revoke.target)?
                    }
                }
                Meta::AnswerErasure(AnswerErasure {
                    request,
                    decision: Decision::Erase,
                }) => erased |= self.erase(request)?,
                _ => {}
            }
            if sealed {
                self.on_sealed(block.height, &entry.id, header)?;
            }
        }
        // A key for nothing: its transaction can no longer be applied.
        for (tx, row) in self.pending.take_expired(block.time_ms) {
            self.store.rows().delete_pending_key(&tx, row)?;
        }
        Ok(erased)
    }

    /// An accepted erasure (§7.2 step 3): the key of the transaction the request `request`
    /// names is deleted, and no longer wanted. Whether a key was deleted (the WAL is then
    /// emptied after the commit). A broken transaction (§16.13) has no row of its own: its
    /// erasure deletes nothing, never the row of the earlier transaction whose key it copied
    /// (red team round 3, break 1: that let a dishonest sealer erase an honest record).
    fn erase(&mut self, request: &TxId) -> Result<bool, NodeError> {
        #[cfg(feature = "byzantine")]
        if self.keeps_keys("an erasure") {
            return Ok(false);
        }
        let Some(erasure) = self.chain.erasure(request)? else {
            return Ok(false);
        };
        let target = erasure.target;
        self.index.erase(target);
        let deleted = self.delete_key(&target)?;
        self.pending.remove(&target);
        self.wanted.remove(&target);
        Ok(deleted)
    }

    /// Deletes `tx`'s key row; whether there was one.
    fn delete_key(&mut self, tx: &TxId) -> Result<bool, NodeError> {
        self.store.rows().delete_key(tx)
    }

    /// An applied sealed transaction (in the block at `height`): its pending row goes on chain,
    /// or it is wanted if this validator is entitled and does not hold it.
    fn on_sealed(&mut self, height: u64, tx: &TxId, header: &TxHeader) -> Result<(), NodeError> {
        #[cfg(feature = "byzantine")]
        self.covet(tx);
        // A held row the chain has said nothing of is a pending seal of this validator
        // ([`Service::load`]): no lookup for every other transaction.
        if self.pending.contains(tx) {
            match self.on_chain_of(header)? {
                // The chain's facts, not the row's: a pending row whose tag failed at start was
                // kept as it said (§12.1 item 6).
                Some(on_chain) => {
                    if let Some(patient) = header.meta.subject() {
                        let held = HeldTx {
                            patient: *patient,
                            on_chain: Some(on_chain),
                        };
                        let facts = super::row_facts(&held, header.not_after_ms);
                        let row = self.pending.row(tx);
                        self.store.rows().set_facts_at(tx, row, &facts)?;
                    }
                }
                // Unreachable while the chain never drops a person or a key: an applied seal
                // has parties. Its row stays unplaced, so the next start takes it for a pending
                // seal (`Service::load`) and its deadline deletes its key (red team s56).
                None => tracing::error!(
                    tx = %ledger::short_hex(tx),
                    "an applied seal of this validator has no parties on chain: its key goes at \
                     its deadline after the next start"
                ),
            }
        }
        if self.pending.remove(tx) {
            return Ok(());
        }
        let Some((parties, as_grantee)) = self.entitled(header)? else {
            return Ok(());
        };
        let Some(patient) = header.meta.subject().copied() else {
            return Ok(());
        };
        let source = first_source(&parties, as_grantee, self.me);
        let record = matches!(header.meta, Meta::AddRecord(_));
        self.want(tx, &patient, height, source, as_grantee, record)
    }

    /// Wants `tx`'s key (`record`: an `AddRecord`'s; applied at `height`) unless it is held,
    /// wanted already (an existing entry keeps its source) or broken (§16.13). In memory only:
    /// a restart reads the blocks again from the lowest height wanted ([`Service::want_again`]).
    fn want(
        &mut self,
        tx: &TxId,
        patient: &PersonId,
        height: u64,
        source: u32,
        as_grantee: bool,
        record: bool,
    ) -> Result<(), NodeError> {
        if self.wanted.contains(tx)
            || self.store.rows().has_key(tx)?
            || self.store.rows().is_broken(tx)?
        {
            return Ok(());
        }
        let wanted = Wanted::new(
            *patient,
            height,
            source,
            self.clock.now_ms(),
            as_grantee,
            record,
            Instant::now(),
        );
        self.wanted.insert(*tx, wanted);
        Ok(())
    }

    /// Wants again what the blocks at `heights` (ascending) made wanted and is still missing: every applied
    /// sealed transaction this validator is entitled to now, holds no key for, and that is not
    /// erased or broken (as [`Service::on_sealed`] and [`Service::on_read_grant`] wanted them,
    /// less what was received or dropped since). Run at start: `wanted` is kept in memory only,
    /// and `heights` are those wanted when the processed height was written, or every one from
    /// the lowest of them (§12.1).
    pub(super) fn want_again(
        &mut self,
        heights: impl IntoIterator<Item = u64>,
    ) -> Result<(), NodeError> {
        for height in heights.into_iter().filter(|height| *height >= 1) {
            let Some(block) = entitled::applied_block(&self.chain, height)? else {
                break;
            };
            for entry in &block.entries {
                let Some(header) = &entry.header else {
                    continue;
                };
                if !matches!(entry.verdict, EntryVerdict::Applied)
                    || !is_sealed_kind(&header.meta)
                    || self.index.is_erased(&entry.id)
                    || self.store.rows().has_key(&entry.id)?
                {
                    continue;
                }
                let Some((parties, as_grantee)) = self.entitled(header)? else {
                    continue;
                };
                let Some(patient) = header.meta.subject().copied() else {
                    continue;
                };
                let source = first_source(&parties, as_grantee, self.me);
                let record = matches!(header.meta, Meta::AddRecord(_));
                self.want(&entry.id, &patient, height, source, as_grantee, record)?;
            }
        }
        Ok(())
    }

    /// A read grant applied in `block`: if its doctor is one of this validator's and it is
    /// live now, it is kept, and the patient's history (records applied up to this block that
    /// this validator is not a party to) is wanted from the patient's home: the history
    /// arrives when the grant commits.
    fn on_read_grant(
        &mut self,
        block: &AppliedBlock,
        id: &TxId,
        grant: &Grant,
    ) -> Result<(), NodeError> {
        let Scope::Read { duration_ms } = grant.scope else {
            return Ok(());
        };
        let expires_ms = block.time_ms.saturating_add(duration_ms);
        // At the patient's home: whom it answers for the patient's records (§5.3).
        self.home_grant(&grant.patient, *id, &grant.doctor, expires_ms)?;
        if self.directory.home(&self.chain, &grant.doctor)? != Some(self.me) {
            return Ok(());
        }
        if self.clock.now_ms() >= expires_ms {
            // Ended by the clock already (a block processed late, or at a late start).
            return Ok(());
        }
        let row = ReadGrantRow {
            grant: *id,
            patient: grant.patient,
            expires_ms,
        };
        self.store.rows().add_read_grant(&row)?;
        self.read_grants.insert(*id, row);
        let Some(patient_home) = self.directory.home(&self.chain, &grant.patient)? else {
            return Ok(());
        };
        if patient_home == self.me {
            // The home is a party to every record of its patients.
            return Ok(());
        }
        for record in self.chain.records_of(&grant.patient)? {
            if record.height > block.height
                || record.erased.is_some()
                || self.wanted.contains(&record.tx_id)
            {
                continue;
            }
            let parties = self.parties(&record.header)?;
            if parties.is_some_and(|parties| parties.includes(self.me)) {
                // Wanted, if need be, as a party at its own block.
                continue;
            }
            self.want(
                &record.tx_id,
                &grant.patient,
                record.height,
                patient_home,
                true,
                true,
            )?;
        }
        Ok(())
    }

    /// A read grant to a doctor here ends (revoked, or expired by the block time or the
    /// clock). If no other grant of the patient to a doctor here is live, every key and
    /// wanted row of the patient this validator is not a party to goes: a correct grantee
    /// drops what it received, and a party never loses a key it is entitled to for itself
    /// (whether it is a party is computed per row from its header, §3.2). Whether a key was
    /// deleted. While the chain is behind the store (§5.6), a held key whose transaction it
    /// lacks may be a seal of this validator or a key received for a later block: the grant's
    /// `read_grants` row then stays, and the grant ends again, whole, once the chain has caught
    /// up ([`Service::rejoin_chain`], or by the clock after a restart) (red team round 4, break 2).
    pub(super) fn end_grant(&mut self, grant: &TxId) -> Result<bool, NodeError> {
        let Some(row) = self.read_grants.remove(grant) else {
            return Ok(false);
        };
        if !self.waits_for_chain {
            self.store.rows().remove_read_grant(grant)?;
        }
        if self.grantee_of(&row.patient) {
            return Ok(false);
        }
        #[cfg(feature = "byzantine")]
        if self.keeps_keys("a read grant's end") {
            return Ok(false);
        }
        // A row whose patient was changed on disk is not found by the right one here: the
        // sweep reads it from the chain later and deletes its key then (§12.1 item 8,
        // `Service::write_relearned`).
        let deleted = self.drop_keys_of(&row.patient)?;
        let dropped: Vec<TxId> = self
            .wanted
            .iter()
            .filter(|(_, wanted)| wanted.patient == row.patient && wanted.as_grantee)
            .map(|(tx, _)| *tx)
            .collect();
        for tx in dropped {
            self.wanted.remove(&tx);
        }
        Ok(deleted)
    }

    /// Deletes the held keys of `patient`'s transactions this validator is no party of (the
    /// chain decides): whether any was. Inside the caller's `keys.db` transaction.
    fn drop_keys_of(&mut self, patient: &PersonId) -> Result<bool, NodeError> {
        let mut deleted = false;
        let held = self.store.rows().held_of(patient)?;
        for tx in held.iter().map(|row| row.tx) {
            let Some(committed) = self.chain.transaction(&tx)? else {
                // Sealed here and not on chain yet (this validator is its sealer), or, while
                // the chain is behind, received for a later block: decided after it catches up.
                continue;
            };
            let party = self
                .parties(&committed.tx.header)?
                .is_some_and(|parties| parties.includes(self.me));
            if !party {
                self.delete_key(&tx)?;
                deleted = true;
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::Arc;

    use ledger::entitled::AppliedEntry;
    use ledger::tx::AddRecord;
    use ledger::{OpenOptions, Reader, Signer, Store};
    use tokio::sync::oneshot;

    use super::*;
    use crate::clock::Clock;
    use crate::keys::store::KeyStore;
    use crate::keys::{KeyInbox, KeyServiceConfig, KeystoreKey, SealRequest};
    use crate::status::Shared;
    use crate::transport::Transport;
    use crate::wire::Frame;

    struct Nowhere;

    impl Transport for Nowhere {
        fn send(&self, _: ReplicaId, _: Frame) {}
    }

    /// A key service of validator 0 of a new chain, not started (the test drives it); its
    /// folder is `dir/a`.
    pub(in crate::keys) fn service(dir: &std::path::Path) -> Service {
        let keys = tempfile::tempdir().unwrap();
        let (genesis, _) = crate::incarnation::init_dev_network(
            dir,
            keys.path(),
            &["a", "b", "c", "d"],
            Default::default(),
        )
        .unwrap();
        let genesis = Arc::new(genesis);
        let folder = dir.join("a");
        Store::open(&folder.join("chain.db"), &genesis, OpenOptions::default()).unwrap();
        let key = KeystoreKey::generate();
        let store = KeyStore::open(&folder.join("keys.db"), genesis.hash(), key.clone()).unwrap();
        let chain = Reader::open(&folder.join("chain.db")).unwrap();
        let config = KeyServiceConfig {
            id: 0,
            n: 4,
            dir: folder,
            genesis,
            key,
            clock: Clock::manual(1_000),
            shared: Arc::new(Shared::new(0, "a".into(), 4, 100)),
            #[cfg(feature = "byzantine")]
            byzantine: None,
        };
        Service::new(config, store, chain, KeyInbox::new(), Arc::new(Nowhere)).unwrap()
    }

    fn record(nonce: u8) -> (TxId, TxHeader) {
        let header = TxHeader {
            meta: Meta::AddRecord(AddRecord {
                patient: [1; 16],
                doctor: [2; 16],
                department: "Oncology".into(),
                grant: [3; 32],
            }),
            signer: Signer::Validator { index: 0 },
            created_ms: 1,
            not_after_ms: u64::MAX,
            nonce: [nonce; 16],
            body_hash: [0; 32],
        };
        (header.id(&[0; 32]), header)
    }

    fn block(height: u64, entries: &[(&(TxId, TxHeader), EntryVerdict)]) -> AppliedBlock {
        AppliedBlock {
            height,
            time_ms: 1_000 + height,
            entries: entries
                .iter()
                .map(|((id, header), verdict)| AppliedEntry {
                    id: *id,
                    header: Some(header.clone()),
                    verdict: *verdict,
                })
                .collect(),
        }
    }

    /// §16.18: only a pending key whose transaction was rejected (not as a duplicate) goes; a
    /// replay of an applied transaction, rejected as a duplicate in a later block, deletes
    /// nothing, whatever the key's state.
    #[test]
    fn a_duplicate_never_deletes_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut service = service(dir.path());
        let (applied, replayed, rejected) = (record(1), record(2), record(3));
        let mut replies = Vec::new();
        let seals = [&applied, &replayed, &rejected]
            .into_iter()
            .map(|(tx, _)| {
                let (reply, answer) = oneshot::channel();
                replies.push(answer);
                SealRequest {
                    tx: *tx,
                    patient: [1; 16],
                    not_after_ms: u64::MAX,
                    key: ledger::seal::DataKey::generate(),
                    reply,
                }
            })
            .collect();
        service.store_seals(seals).unwrap();
        for mut reply in replies {
            assert!(matches!(reply.try_recv(), Ok(Ok(()))));
        }
        use EntryVerdict::{Applied, Duplicate, Rejected};
        service
            .process_blocks(vec![
                block(1, &[(&applied, Applied)]),
                block(2, &[(&applied, Duplicate), (&replayed, Duplicate)]),
                block(3, &[(&rejected, Rejected), (&applied, Rejected)]),
            ])
            .unwrap();
        assert_eq!(service.processed, 3);
        let rows = service.store.rows();
        assert!(rows.key(&applied.0).unwrap().is_some(), "an applied key");
        assert!(
            rows.key(&replayed.0).unwrap().is_some(),
            "a duplicate deleted a key"
        );
        assert!(
            rows.key(&rejected.0).unwrap().is_none(),
            "a rejected seal's key stayed"
        );
        assert_eq!(service.pending.txs(), [replayed.0]);
        assert_eq!(service.store.rows().held_count().unwrap(), 2);
    }

    /// Seals `records`, the first with deadline 100, the next 101, and so on, then forgets
    /// what is pending, as a stop does.
    fn sealed_then_stopped(service: &mut Service, records: &[(TxId, TxHeader)]) {
        let seals = records
            .iter()
            .zip(100u64..)
            .map(|((tx, _), not_after_ms)| SealRequest {
                tx: *tx,
                patient: [1; 16],
                not_after_ms,
                key: ledger::seal::DataKey::generate(),
                reply: oneshot::channel().0,
            })
            .collect();
        service.store_seals(seals).unwrap();
        for (tx, _) in records {
            let seq = service.store.rows().seq_of(tx).unwrap();
            assert!(seq.is_some());
            assert_eq!(service.pending.row(tx), seq, "the row it was stored in");
        }
        service.pending = crate::keys::pending::Pending::default();
    }

    /// A start looks up its untrusted unplaced rows (here without a tag, as schema 3 wrote
    /// them) a chunk at a time (two in unit tests): five seals not on chain are each pending
    /// again, with its own deadline (red team s55's test).
    #[test]
    fn a_start_looks_up_every_untrusted_unplaced_row_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let mut service = service(dir.path());
        let records: Vec<(TxId, TxHeader)> = (1..=5).map(record).collect();
        sealed_then_stopped(&mut service, &records);
        crate::keys::s46_asides::keys_db(dir.path())
            .execute("UPDATE data_keys SET facts_tag = NULL", [])
            .unwrap();
        service.load().unwrap();
        let mut pending = service.pending.txs();
        pending.sort();
        let mut want: Vec<TxId> = records.iter().map(|(tx, _)| *tx).collect();
        want.sort();
        assert_eq!(pending, want);
        for (tx, _) in &records {
            let seq = service.store.rows().seq_of(tx).unwrap();
            assert!(seq.is_some());
            assert_eq!(service.pending.row(tx), seq, "its row kept for its block");
        }
        // Each with its own deadline: the earliest two expire first.
        let mut expired: Vec<TxId> = service
            .pending
            .take_expired(102)
            .into_iter()
            .map(|(tx, _)| tx)
            .collect();
        expired.sort();
        let mut first = vec![records[0].0, records[1].0];
        first.sort();
        assert_eq!(expired, first);
    }

    /// The block that applies a seal of this validator writes the chain's facts in the row a
    /// start read the seal from, without the epoch index: with the index blind to it (its
    /// group's filter zeroed on disk before the start), the row holds them after the block.
    #[test]
    fn a_block_writes_its_seals_facts_in_the_row_a_start_read() {
        use crate::keys::runs::{EPOCH_ROWS, GROUP_EPOCHS};
        let dir = tempfile::tempdir().unwrap();
        let mut service = service(dir.path());
        let records: Vec<(TxId, TxHeader)> = (0..=(GROUP_EPOCHS * EPOCH_ROWS) as u8)
            .map(record)
            .collect();
        sealed_then_stopped(&mut service, &records);
        crate::keys::s46_asides::keys_db(dir.path())
            .execute_batch("UPDATE key_groups SET bits = zeroblob(length(bits))")
            .unwrap();
        service.store = service.store.reopened();
        service.load().unwrap();
        // The record's parties, as the chain would name them (this test's chain has none).
        for person in [[1; 16], [2; 16]] {
            service.directory.homes.insert(person, 0);
        }
        let first = &records[0];
        let rows = service.store.rows();
        assert_eq!(rows.seq_of(&first.0).unwrap(), None, "the index is blind");
        service
            .process_blocks(vec![block(1, &[(first, EntryVerdict::Applied)])])
            .unwrap();
        let rows = service.store.rows();
        let row = rows
            .all_held()
            .unwrap()
            .into_iter()
            .find(|row| row.tx == first.0);
        let row = row.unwrap();
        assert!(row.facts.on_chain.is_some(), "the chain's facts: {row:?}");
        assert_eq!(row.tag, crate::keys::store::Tag::Valid);
    }

    /// Red team s86: a pending seal's row copied byte for byte to a higher `seq` (its tag
    /// holds: it covers the transaction and the facts, not the `seq`). The start keeps no row
    /// for the seal, so its block writes the chain's facts in the row that lookups read, and
    /// the key is served, as before rows were kept in memory.
    #[test]
    fn a_seals_row_copied_in_the_file_leaves_its_block_to_the_row_lookups_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut service = service(dir.path());
        let sealed = record(1);
        sealed_then_stopped(&mut service, std::slice::from_ref(&sealed));
        crate::keys::s46_asides::keys_db(dir.path())
            .execute(
                "INSERT INTO data_keys
                    (seq, tx, patient, key_id, not_after_ms, sealed_key, on_chain, facts_tag)
                 SELECT seq + 1000, tx, patient, key_id, not_after_ms, sealed_key, on_chain,
                    facts_tag
                 FROM data_keys",
                [],
            )
            .unwrap();
        service.load().unwrap();
        assert_eq!(service.pending.txs(), [sealed.0]);
        assert_eq!(
            service.pending.row(&sealed.0),
            None,
            "met twice: no row kept"
        );
        for person in [[1; 16], [2; 16]] {
            service.directory.homes.insert(person, 0);
        }
        service
            .process_blocks(vec![block(1, &[(&sealed, EntryVerdict::Applied)])])
            .unwrap();
        let (_, held) = service.held(&sealed.0).unwrap().unwrap();
        assert!(held.on_chain.is_some(), "the row lookups read is on chain");
    }

    /// A start takes a trusted unplaced row for a seal not applied by the processed height,
    /// with no lookup: pending with its deadline. One applied after that height leaves the
    /// pending seals as the feed reads its block again, so its key outlives its deadline; one
    /// never applied goes at its deadline (block 1's time, 1,001, is past both).
    #[test]
    fn a_start_keeps_a_seal_applied_after_the_processed_height() {
        let dir = tempfile::tempdir().unwrap();
        let mut service = service(dir.path());
        let (applied, unsent) = (record(1), record(2));
        sealed_then_stopped(&mut service, &[applied.clone(), unsent.clone()]);
        service.load().unwrap();
        let mut pending = service.pending.txs();
        pending.sort();
        let mut want = vec![applied.0, unsent.0];
        want.sort();
        assert_eq!(pending, want, "a trusted unplaced row is a pending seal");
        for (tx, _) in [&applied, &unsent] {
            let seq = service.store.rows().seq_of(tx).unwrap();
            assert!(seq.is_some());
            assert_eq!(service.pending.row(tx), seq, "its row kept for its block");
        }
        service
            .process_blocks(vec![block(1, &[(&applied, EntryVerdict::Applied)])])
            .unwrap();
        assert!(service.pending.txs().is_empty());
        let rows = service.store.rows();
        assert!(
            rows.key(&applied.0).unwrap().is_some(),
            "an applied seal's key went at its deadline"
        );
        assert!(
            rows.key(&unsent.0).unwrap().is_none(),
            "a seal never applied kept its key past its deadline"
        );
    }
}
