//! Checkpoints, garbage collection and watermarks (§4.3), and state transfer (TOCS'02 §5.3,
//! here delegated to the caller through [`Action::FetchState`]).

use std::collections::{BTreeMap, BTreeSet};

use crate::config::ProtocolError;
use crate::durable::Durable;
use crate::io::{Action, Alarm};
use crate::message::{Checkpoint, Message, Signed};
use crate::replica::{FetchTarget, Replica, Status};
use crate::types::{Digest, ReplicaId, SeqNo};

impl Replica {
    /// A checkpoint message (§4.3) or a status claim (a sequence number that is not a multiple
    /// of K). Claims and checkpoints above the watermark tell a lagging replica it is behind.
    pub(crate) fn on_checkpoint(
        &mut self,
        c: Signed<Checkpoint>,
        actions: &mut Vec<Action>,
    ) -> Result<(), ProtocolError> {
        let from = c.from;
        let Checkpoint { seq, digest } = c.message;
        if seq == 0 {
            return Err(ProtocolError::Malformed("checkpoint at 0"));
        }
        let claim = self
            .claims
            .entry(from)
            .or_insert(Checkpoint { seq: 0, digest });
        let newer_claim = seq > claim.seq;
        if newer_claim {
            *claim = c.message;
        }
        if seq % self.cfg.checkpoint_interval == 0 && seq > self.low {
            let per_sender =
                (self.cfg.watermark_window / self.cfg.checkpoint_interval + 2) as usize;
            let table = self.checkpoints.entry(from).or_default();
            if let Some(old) = table.get(&seq) {
                if old.message.digest != digest {
                    return Err(ProtocolError::Conflicting);
                }
                if !newer_claim {
                    return Err(ProtocolError::Duplicate);
                }
            } else {
                table.insert(seq, c);
                while table.len() > per_sender {
                    table.pop_first();
                }
            }
            self.read_executed_if_vouched(seq, digest, actions);
            self.check_stable_at(seq, actions);
            if self.status == Status::Normal && self.is_primary() {
                // The window may have moved.
                self.try_propose(false, actions);
            }
        } else if !newer_claim {
            return Err(ProtocolError::StaleCheckpoint);
        }
        self.check_behind();
        Ok(())
    }

    /// §4.3 after a restart or a state transfer: f+1 replicas (one of them honest) vouch for a
    /// checkpoint at `seq` that this replica executed without keeping its digest, so it cannot
    /// vouch too, and without its vouch the checkpoint may never gather 2f+1 (heads restored
    /// into different checkpoint intervals each vouch for a different one). It asks its caller
    /// for the digest of its own block there, once per sequence number.
    fn read_executed_if_vouched(&mut self, seq: SeqNo, digest: Digest, actions: &mut Vec<Action>) {
        if seq > self.last_executed.0
            || seq <= self.low
            || self.own_digest(seq).is_some()
            || self.asked_executed.contains(&seq)
        {
            return;
        }
        // Others only: its own checkpoint message, looped back, is no vouch for itself.
        let vouching = self
            .checkpoints
            .iter()
            .filter(|(from, table)| {
                **from != self.cfg.id && table.get(&seq).is_some_and(|c| c.message.digest == digest)
            })
            .count();
        if vouching > self.cfg.f() {
            self.asked_executed.insert(seq);
            actions.push(Action::ReadExecuted { seq });
        }
    }

    /// The digest this replica holds of what it executed at `seq`, if any.
    pub(crate) fn own_digest(&self, seq: SeqNo) -> Option<Digest> {
        self.executed_digests
            .get(&seq)
            .or_else(|| self.vouched.get(&seq))
            .copied()
    }

    /// Keeps the digest of checkpoint `seq`, executed here: with the window's digests if it is
    /// in the window, else apart (bounded, the lowest dropped first).
    pub(crate) fn keep_executed_checkpoint(&mut self, seq: SeqNo, digest: Digest) {
        if seq <= self.high() {
            self.executed_digests.insert(seq, digest);
            return;
        }
        self.vouched.insert(seq, digest);
        while self.vouched.len() > crate::replica::VOUCHED_BEYOND_WINDOW {
            self.vouched.pop_first();
        }
    }

    /// [`Input::Executed`]: the caller's digest of its block at `seq`, asked for by
    /// [`Action::ReadExecuted`]. This replica vouches for it like any checkpoint it executed
    /// (its own message, looped back, counts towards stability).
    pub(crate) fn on_executed_digest(
        &mut self,
        seq: SeqNo,
        digest: Digest,
        actions: &mut Vec<Action>,
    ) -> Result<(), ProtocolError> {
        if !self.asked_executed.contains(&seq)
            || seq <= self.low
            || seq > self.last_executed.0
            || self.own_digest(seq).is_some()
        {
            return Err(ProtocolError::StaleCheckpoint);
        }
        self.keep_executed_checkpoint(seq, digest);
        actions.push(Action::Broadcast(Message::Checkpoint(Checkpoint {
            seq,
            digest,
        })));
        Ok(())
    }

    /// Makes the checkpoint at `seq` stable if 2f+1 matching messages vouch for it and this
    /// replica has executed it; if it has not, remembers it as a state-transfer target.
    pub(crate) fn check_stable_at(&mut self, seq: SeqNo, actions: &mut Vec<Action>) {
        if seq <= self.low || !seq.is_multiple_of(self.cfg.checkpoint_interval) {
            return;
        }
        let mut by_digest: BTreeMap<Digest, Vec<Signed<Checkpoint>>> = BTreeMap::new();
        for table in self.checkpoints.values() {
            if let Some(c) = table.get(&seq) {
                by_digest
                    .entry(c.message.digest)
                    .or_default()
                    .push(c.clone());
            }
        }
        let quorum = self.quorum();
        let Some((digest, mut proof)) = by_digest.into_iter().find(|(_, v)| v.len() >= quorum)
        else {
            return;
        };
        proof.truncate(quorum);
        if seq <= self.last_executed.0 {
            if let Some(mine) = self.own_digest(seq)
                && mine != digest
            {
                // 2f+1 replicas (f+1 honest) vouch for a state this replica did not reach:
                // impossible unless more than f are faulty. Do not take it as our own.
                self.checkpoint_mismatch(seq, actions);
                return;
            }
            self.stabilize(Checkpoint { seq, digest }, proof, actions);
        } else if self
            .fetch
            .as_ref()
            .is_none_or(|f| f.seq < seq || f.proof.is_none())
        {
            let peers = proof
                .iter()
                .map(|c| c.from)
                .filter(|p| *p != self.cfg.id)
                .collect();
            let since = self
                .fetch
                .as_ref()
                .filter(|f| f.seq == seq)
                .map_or(self.now, |f| f.since);
            self.fetch = Some(FetchTarget {
                seq,
                digest,
                proof: Some(proof),
                peers,
                since,
                requested_at: None,
            });
        }
    }

    /// §4.3: the checkpoint becomes stable; the log at or below it is discarded and the
    /// watermarks advance.
    pub(crate) fn stabilize(
        &mut self,
        checkpoint: Checkpoint,
        proof: Vec<Signed<Checkpoint>>,
        actions: &mut Vec<Action>,
    ) {
        let seq = checkpoint.seq;
        if seq <= self.low || seq > self.last_executed.0 {
            // Every caller checks this: the watermark never moves back, nor past execution.
            return;
        }
        self.low = seq;
        self.low_digest = checkpoint.digest;
        self.low_proof = proof.clone();
        actions.push(Action::Persist(Durable::StableCheckpoint {
            checkpoint,
            proof,
        }));
        self.slots = self.slots.split_off(&(seq + 1));
        self.waiting = self.waiting.split_off(&(seq + 1));
        self.prepared_certs = self.prepared_certs.split_off(&(seq + 1));
        self.executed_digests = self.executed_digests.split_off(&seq);
        self.executed_digests.insert(seq, checkpoint.digest);
        self.asked_executed = self.asked_executed.split_off(&(seq + 1));
        self.vouched = self.vouched.split_off(&(seq + 1));
        for table in self.checkpoints.values_mut() {
            *table = table.split_off(&(seq + 1));
        }
        self.checkpoints.retain(|_, t| !t.is_empty());
        // Ids of proposals at or below the checkpoint that never executed here (abandoned, or
        // skipped by a state transfer that did not name them) would otherwise stay forever.
        self.in_log.retain(|_, s| *s > seq);
        if self.fetch.as_ref().is_some_and(|f| f.seq <= seq) {
            self.fetch = None;
        }
    }

    /// Raises [`Alarm::CheckpointMismatch`] once per sequence number.
    pub(crate) fn checkpoint_mismatch(&mut self, seq: SeqNo, actions: &mut Vec<Action>) {
        if seq > self.checkpoint_alarmed {
            self.checkpoint_alarmed = seq;
            self.raise(Alarm::CheckpointMismatch { seq }, actions);
        }
    }

    /// f+1 matching checkpoints or claims beyond the executed head mean at least one honest
    /// replica is there: this replica is behind and may need a state transfer.
    pub(crate) fn check_behind(&mut self) {
        let last = self.last_executed.0;
        let mut votes: BTreeMap<(SeqNo, Digest), Vec<ReplicaId>> = BTreeMap::new();
        for (from, table) in &self.checkpoints {
            if *from == self.cfg.id {
                continue;
            }
            for c in table.range(last + 1..).map(|(_, c)| c.message) {
                votes.entry((c.seq, c.digest)).or_default().push(*from);
            }
        }
        for (from, c) in &self.claims {
            if *from != self.cfg.id && c.seq > last {
                let voters = votes.entry((c.seq, c.digest)).or_default();
                if !voters.contains(from) {
                    voters.push(*from);
                }
            }
        }
        let need = self.cfg.f() + 1;
        let Some(((seq, digest), peers)) = votes.into_iter().rev().find(|(_, v)| v.len() >= need)
        else {
            return;
        };
        if self.fetch.as_ref().is_none_or(|f| f.seq < seq) {
            self.fetch = Some(FetchTarget {
                seq,
                digest,
                proof: None,
                peers,
                since: self.now,
                requested_at: None,
            });
        }
    }

    /// Asks the caller for a state transfer once the target has stayed out of reach for a
    /// retransmit interval (the log may still get there on its own), and again every timeout.
    pub(crate) fn maybe_fetch(&mut self, actions: &mut Vec<Action>) {
        let last = self.last_executed.0;
        let now = self.now;
        let wait = self.cfg.retransmit_ticks;
        let retry = self.cfg.view_change_timeout_ticks;
        let Some(f) = &mut self.fetch else { return };
        if f.seq <= last {
            self.fetch = None;
            return;
        }
        let due = match f.requested_at {
            None => now >= f.since.saturating_add(wait),
            Some(at) => now >= at.saturating_add(retry),
        };
        if due {
            f.requested_at = Some(now);
            actions.push(Action::FetchState {
                seq: f.seq,
                digest: f.digest,
                peers: f.peers.clone(),
            });
        }
    }

    /// The caller applied the committed blocks up to `seq` (§5.3's state transfer).
    pub(crate) fn on_state_transferred(
        &mut self,
        seq: SeqNo,
        digest: Digest,
        time_ms: u64,
        request_ids: Vec<Digest>,
        actions: &mut Vec<Action>,
    ) -> Result<(), ProtocolError> {
        if seq <= self.last_executed.0 {
            return Err(ProtocolError::StaleStateTransfer { seq });
        }
        self.last_executed = (seq, digest);
        self.head_time_ms = time_ms;
        if seq <= self.view_start_seq {
            // Brought after the view was entered, but inherited all the same (red team s32 F1).
            self.inherited_time_ms = self.inherited_time_ms.max(time_ms);
        }
        if seq <= self.high() {
            self.executed_digests.insert(seq, digest);
        }
        for id in request_ids {
            self.remember_executed(id);
        }
        // Requests of slots now at or below the head that the transfer did not execute (a
        // faulty primary's other proposal there) are no longer in the log: forwarded and
        // proposable again, not only after the next stable checkpoint (red team s39).
        self.in_log.retain(|_, s| *s > seq);
        self.abandon_unchained_slots();
        self.backoff = 0;
        self.progress();
        if seq.is_multiple_of(self.cfg.checkpoint_interval) {
            actions.push(Action::Broadcast(Message::Checkpoint(Checkpoint {
                seq,
                digest,
            })));
        }
        if let Some(f) = self.fetch.take() {
            if f.seq <= seq {
                let mismatch = self
                    .executed_digests
                    .get(&f.seq)
                    .is_some_and(|d| *d != f.digest);
                if mismatch && f.proof.is_some() {
                    // The caller applied blocks that end elsewhere than the proven checkpoint.
                    self.checkpoint_mismatch(f.seq, actions);
                } else if let Some(proof) = f.proof
                    && f.seq > self.low
                    && !mismatch
                {
                    self.stabilize(
                        Checkpoint {
                            seq: f.seq,
                            digest: f.digest,
                        },
                        proof,
                        actions,
                    );
                }
            } else {
                self.fetch = Some(f);
            }
        }
        // Vouches that came while this replica was below them: it may now read its own digest
        // there (the transfer kept none below `seq`) and vouch too, or find them stable.
        let candidates: BTreeSet<(SeqNo, Digest)> = self
            .checkpoints
            .values()
            .flat_map(|t| t.values().map(|c| (c.message.seq, c.message.digest)))
            .filter(|(s, _)| *s <= seq)
            .collect();
        for (s, d) in candidates {
            self.read_executed_if_vouched(s, d, actions);
            self.check_stable_at(s, actions);
        }
        if self.status == Status::Normal {
            if self.is_primary() && self.next_seq <= seq {
                self.next_seq = seq + 1;
                self.last_proposed = digest;
            }
            self.send_commits(actions);
            if self.is_primary() {
                self.try_propose(false, actions);
            }
        }
        Ok(())
    }
}
