//! View changes (§4.4) and their liveness rules (§4.5.2 of TOCS'02).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use crate::config::ProtocolError;
use crate::durable::Durable;
use crate::io::{Action, Alarm};
use crate::message::{Checkpoint, Message, NewView, PrePrepare, Signed, ViewChange, Vote};
use crate::replica::{FetchTarget, Replica, Status};
use crate::types::{Digest, Proposal, ReplicaId, SeqNo, View};

/// What a new-view establishes: the checkpoint it starts from (min-s, with its proof) and the
/// O set.
pub(crate) struct NewViewPlan {
    pub(crate) checkpoint: Checkpoint,
    pub(crate) proof: Vec<Signed<Checkpoint>>,
    pub(crate) pre_prepares: Vec<PrePrepare>,
}

impl Replica {
    /// The newest incarnation known of `replica` (this one's own, for itself).
    pub(crate) fn known_incarnation(&self, replica: ReplicaId) -> u64 {
        if replica == self.cfg.id {
            return self.incarnation;
        }
        self.lives
            .get(&replica)
            .map_or(0, |(life, _)| life.message.incarnation)
    }

    /// Refuses a view-change or new-view of an older incarnation of its sender than the newest
    /// known: a message of a life that sender forgot (crate docs, "Recovering from lost
    /// state").
    pub(crate) fn check_incarnation(
        &self,
        replica: ReplicaId,
        incarnation: u64,
    ) -> Result<(), ProtocolError> {
        let known = self.known_incarnation(replica);
        if incarnation < known {
            return Err(ProtocolError::OlderIncarnation {
                replica,
                got: incarnation,
                known,
            });
        }
        Ok(())
    }

    /// §4.5.2: if f+1 replicas show views above ours, at least one honest replica is there;
    /// join the smallest such view (the (f+1)-th highest view seen).
    pub(crate) fn join_higher_view(&mut self, actions: &mut Vec<Action>) {
        let f = self.cfg.f();
        if self.highest_view_shown.len() <= f {
            return;
        }
        let mut views: Vec<View> = self
            .highest_view_shown
            .values()
            .map(|shown| shown.message.view())
            .collect();
        views.sort_unstable_by(|a, b| b.cmp(a));
        let target = views[f];
        if target > self.view {
            self.start_view_change(target, actions);
        }
    }

    /// §4.4: stop accepting normal-case messages, persist, and multicast a view-change with the
    /// stable checkpoint's proof and the prepared certificates above it.
    pub(crate) fn start_view_change(&mut self, view: View, actions: &mut Vec<Action>) {
        assert!(view > self.view, "view changes only go forward");
        self.view = view;
        self.status = Status::ViewChange;
        self.backoff = self.backoff.saturating_add(1);
        self.stop_timer();
        self.slots.clear();
        self.waiting.clear();
        self.in_log.clear();
        self.last_new_view = None;
        // The next view's new-view is another message: its laggards are answered at once.
        self.new_view_resent = self.new_view_pace();
        self.last_retransmit = self.now;
        actions.push(Action::Persist(Durable::ViewChange(view)));
        let vc = self.build_view_change();
        actions.push(Action::Broadcast(Message::ViewChange(vc)));
        self.relay_lives(actions);
        self.try_new_view(actions);
    }

    pub(crate) fn build_view_change(&self) -> ViewChange {
        #[cfg(feature = "planted-bugs")]
        if self.cfg.planted_bug == Some(crate::config::PlantedBug::ForgetPreparedOnViewChange) {
            return ViewChange {
                new_view: self.view,
                incarnation: self.incarnation,
                checkpoint: Checkpoint {
                    seq: self.low,
                    digest: self.low_digest,
                },
                checkpoint_proof: self.low_proof.clone(),
                prepared: Vec::new(),
            };
        }
        ViewChange {
            new_view: self.view,
            incarnation: self.incarnation,
            checkpoint: Checkpoint {
                seq: self.low,
                digest: self.low_digest,
            },
            checkpoint_proof: self.low_proof.clone(),
            prepared: self
                .prepared_certs
                .range(self.low + 1..)
                .map(|(_, c)| c.clone())
                .collect(),
        }
    }

    /// Checks a view-change's structure: its checkpoint proof (2f+1 matching checkpoint
    /// messages, or the genesis checkpoint) and each prepared certificate (a pre-prepare of an
    /// earlier view inside the watermarks, whose digest matches, and 2f matching prepares from
    /// distinct backups of that view). Signatures were checked by the caller.
    pub(crate) fn validate_view_change(&self, vc: &ViewChange) -> Result<(), ProtocolError> {
        self.validate_view_change_with(vc, &mut HashMap::new())
    }

    /// [`Self::validate_view_change`], each batch hashed once per allocation in `digests`
    /// (a new-view read off the wire shares one allocation per distinct batch; the map lives
    /// no longer than the borrow of the batches it names).
    fn validate_view_change_with(
        &self,
        vc: &ViewChange,
        digests: &mut HashMap<*const Proposal, Digest>,
    ) -> Result<(), ProtocolError> {
        use ProtocolError::InvalidViewChange as Bad;
        if vc.new_view == 0 {
            return Err(Bad("view-change to view 0"));
        }
        let ck = vc.checkpoint;
        let k = self.cfg.checkpoint_interval;
        if ck.seq == 0 {
            if ck.digest != self.cfg.genesis {
                return Err(Bad("genesis checkpoint digest"));
            }
        } else {
            if !ck.seq.is_multiple_of(k) {
                return Err(Bad("checkpoint not at a multiple of K"));
            }
            if vc.checkpoint_proof.len() > self.cfg.n as usize {
                return Err(Bad("checkpoint proof"));
            }
            let mut signers = BTreeSet::new();
            for c in &vc.checkpoint_proof {
                if c.from >= self.cfg.n || c.message != ck || !signers.insert(c.from) {
                    return Err(Bad("checkpoint proof"));
                }
            }
            if signers.len() < self.quorum() {
                return Err(Bad("checkpoint proof too small"));
            }
        }
        let high = ck.seq + self.cfg.watermark_window;
        if vc.prepared.len() as u64 > self.cfg.watermark_window {
            return Err(Bad("too many prepared certificates"));
        }
        let mut last = ck.seq;
        for cert in &vc.prepared {
            let pp = &cert.pre_prepare;
            let seq = pp.proposal.seq;
            if seq <= last || seq > high {
                return Err(Bad("prepared certificate sequence number"));
            }
            last = seq;
            if pp.view >= vc.new_view || pp.proposal.view > pp.view {
                return Err(Bad("prepared certificate view"));
            }
            if self.check_batch(&pp.proposal.requests).is_err() {
                return Err(Bad("prepared certificate batch"));
            }
            let digest = *digests
                .entry(Arc::as_ptr(&pp.proposal))
                .or_insert_with(|| (self.cfg.digest)(&pp.proposal));
            if digest != pp.digest {
                return Err(Bad("prepared certificate digest"));
            }
            let primary = self.cfg.primary(pp.view);
            let expected = Vote {
                view: pp.view,
                seq,
                digest: pp.digest,
            };
            if cert.prepares.len() > self.cfg.n as usize {
                return Err(Bad("prepared certificate prepares"));
            }
            let mut signers = BTreeSet::new();
            for p in &cert.prepares {
                if p.from >= self.cfg.n
                    || p.from == primary
                    || p.message != expected
                    || !signers.insert(p.from)
                {
                    return Err(Bad("prepared certificate prepares"));
                }
            }
            if signers.len() < self.quorum() - 1 {
                return Err(Bad("prepared certificate too small"));
            }
        }
        Ok(())
    }

    /// Checks a new-view's structure without any state: at most n view-changes from distinct
    /// senders, 2f+1 of them, each for this view and valid, and an O set within L.
    pub(crate) fn validate_new_view(&self, nv: &NewView) -> Result<(), ProtocolError> {
        use ProtocolError::InvalidNewView as Bad;
        // Bounded before anything is checked one by one (n senders, an O set within L).
        if nv.view_changes.len() > self.cfg.n as usize
            || nv.pre_prepares.len() as u64 > self.cfg.watermark_window
        {
            return Err(Bad("more view-changes or pre-prepares than can be valid"));
        }
        let mut senders = BTreeSet::new();
        let mut digests = HashMap::new();
        for vc in &nv.view_changes {
            if vc.from >= self.cfg.n || !senders.insert(vc.from) {
                return Err(Bad("view-change senders"));
            }
            if vc.message.new_view != nv.view {
                return Err(Bad("view-change for another view"));
            }
            self.validate_view_change_with(&vc.message, &mut digests)
                .map_err(|_| Bad("invalid view-change inside"))?;
        }
        if senders.len() < self.quorum() {
            return Err(Bad("fewer than 2f+1 view-changes"));
        }
        Ok(())
    }

    pub(crate) fn on_view_change(
        &mut self,
        vc: Signed<ViewChange>,
        actions: &mut Vec<Action>,
    ) -> Result<(), ProtocolError> {
        self.validate_view_change(&vc.message)?;
        let from = vc.from;
        self.check_incarnation(from, vc.message.incarnation)?;
        let view = vc.message.new_view;
        if self.is_stale_view(view) {
            // A replica behind us. If we lead our view, hand it our new-view (§4.5.2's
            // retransmission); a valid new-view for a higher view brings it straight here. Paced
            // (`AnswerPace`): the new-view may carry a whole log window, the stale view-change a
            // few hundred bytes.
            if self.status == Status::Normal
                && self.is_primary()
                && from != self.cfg.id
                && let Some(nv) = &self.last_new_view
            {
                if self
                    .new_view_resent
                    .too_soon(from, self.now, self.cfg.retransmit_ticks)
                {
                    return Err(ProtocolError::NewViewResentTooSoon);
                }
                self.new_view_resent
                    .answered(from, self.now, self.cfg.retransmit_ticks);
                actions.push(Action::Send {
                    to: from,
                    message: Message::NewView(nv.clone()),
                });
                return Ok(());
            }
            return Err(ProtocolError::StaleView {
                got: view,
                current: self.view,
            });
        }
        let current = self.view;
        let table = self.view_changes.entry(from).or_default();
        if table
            .get(&view)
            .is_some_and(|old| old.message == vc.message)
        {
            return Err(ProtocolError::Duplicate);
        }
        if table.len() >= crate::replica::VIEW_CHANGES_PER_SENDER
            && table.keys().next().is_some_and(|lowest| *lowest > view)
        {
            return Err(ProtocolError::StaleView {
                got: view,
                current: *table.keys().next().unwrap_or(&view),
            });
        }
        table.insert(view, vc);
        *table = table.split_off(&current);
        while table.len() > crate::replica::VIEW_CHANGES_PER_SENDER {
            table.pop_first();
        }
        self.try_new_view(actions);
        Ok(())
    }

    /// With 2f+1 view-changes for the view being changed to, start the timer (§4.5.2) and, if
    /// this replica is its primary, send the new-view.
    pub(crate) fn try_new_view(&mut self, actions: &mut Vec<Action>) {
        if self.status != Status::ViewChange {
            return;
        }
        let view = self.view;
        let chosen: Vec<Signed<ViewChange>> = self
            .view_changes
            .values()
            .filter_map(|table| table.get(&view))
            .take(self.quorum())
            .cloned()
            .collect();
        // §4.5.2 starts the timer once 2f+1 replicas are changing to this view; a replica that
        // already asks for a higher view has given up on this one too, so it counts (else a
        // replica that timed out alone into v+1 could leave the others waiting forever).
        let changing = self
            .view_changes
            .values()
            .filter(|table| table.keys().next_back().is_some_and(|v| *v >= view))
            .count();
        if changing >= self.quorum() && self.timer.is_none() {
            self.timer = Some(self.now.saturating_add(self.timeout()));
        }
        if chosen.len() < self.quorum() {
            return;
        }
        if self.cfg.primary(view) != self.cfg.id || self.recovery.is_some() {
            return;
        }
        let plan = self.plan_new_view(view, chosen.iter().map(|vc| &vc.message));
        if let Some(seq) = self.conflicts_with_executed(&plan.pre_prepares) {
            // Impossible with at most f faults; never propose against our own execution. Say
            // so, and hand the view to the next primary rather than stall in this one.
            self.raise(Alarm::NewViewConflictsWithExecuted { view, seq }, actions);
            self.start_view_change(view + 1, actions);
            return;
        }
        let nv = NewView {
            view,
            incarnation: self.incarnation,
            view_changes: chosen,
            pre_prepares: plan.pre_prepares.clone(),
        };
        self.last_new_view = Some(nv.clone());
        self.enter_view(view, plan, Some(nv), actions);
    }

    /// The new primary's computation (§4.4), repeated by every backup to check a new-view:
    /// min-s is the highest stable checkpoint in V; above it, per sequence number, the
    /// prepared certificate of the highest view, re-issued in `view`. The O set stops at the
    /// first sequence number without a certificate or whose `prev` does not match the digest
    /// before it: because a replica commits `s` only when everything below it is prepared,
    /// nothing past that point can have committed, so no null request is needed to fill a gap
    /// (a null request there would be followed by a broken link and end the set anyway); the
    /// new primary simply reuses those sequence numbers.
    pub(crate) fn plan_new_view<'a>(
        &self,
        view: View,
        vcs: impl Iterator<Item = &'a ViewChange> + Clone,
    ) -> NewViewPlan {
        let mut best: Option<&ViewChange> = None;
        for vc in vcs.clone() {
            if best.is_none_or(|b| vc.checkpoint.seq > b.checkpoint.seq) {
                best = Some(vc);
            }
        }
        let (checkpoint, proof) = best.map_or(
            (
                Checkpoint {
                    seq: 0,
                    digest: self.cfg.genesis,
                },
                Vec::new(),
            ),
            |b| (b.checkpoint, b.checkpoint_proof.clone()),
        );
        let mut by_seq: BTreeMap<SeqNo, &PrePrepare> = BTreeMap::new();
        for vc in vcs {
            for cert in &vc.prepared {
                let pp = &cert.pre_prepare;
                let seq = pp.proposal.seq;
                if seq <= checkpoint.seq {
                    continue;
                }
                if by_seq.get(&seq).is_none_or(|b| pp.view > b.view) {
                    by_seq.insert(seq, pp);
                }
            }
        }
        let mut pre_prepares = Vec::new();
        let mut prev = checkpoint.digest;
        let mut seq = checkpoint.seq + 1;
        while let Some(pp) = by_seq.get(&seq) {
            if pp.proposal.prev != prev || seq > checkpoint.seq + self.cfg.watermark_window {
                break;
            }
            prev = pp.digest;
            pre_prepares.push(PrePrepare {
                view,
                digest: pp.digest,
                proposal: pp.proposal.clone(),
            });
            seq += 1;
        }
        NewViewPlan {
            checkpoint,
            proof,
            pre_prepares,
        }
    }

    /// The first sequence number where the O set contradicts what this replica executed.
    fn conflicts_with_executed(&self, o: &[PrePrepare]) -> Option<SeqNo> {
        o.iter()
            .find(|pp| {
                self.executed_digests
                    .get(&pp.proposal.seq)
                    .is_some_and(|d| *d != pp.digest)
            })
            .map(|pp| pp.proposal.seq)
    }

    /// §4.4: a backup accepts a new-view for a higher view (or the one it is changing to) from
    /// that view's primary if its view-changes are valid and its O set is the one it computes.
    pub(crate) fn on_new_view(
        &mut self,
        from: ReplicaId,
        nv: NewView,
        actions: &mut Vec<Action>,
    ) -> Result<(), ProtocolError> {
        use ProtocolError::InvalidNewView as Bad;
        if from != self.cfg.primary(nv.view) {
            return Err(ProtocolError::NotPrimary {
                from,
                view: nv.view,
            });
        }
        if self.is_stale_view(nv.view) {
            if nv.view == self.view && from == self.cfg.id {
                return Ok(()); // our own new-view, looped back: already entered.
            }
            return Err(if nv.view == self.view {
                ProtocolError::Duplicate
            } else {
                ProtocolError::StaleView {
                    got: nv.view,
                    current: self.view,
                }
            });
        }
        if nv.view == 0 {
            return Err(Bad("new-view for view 0"));
        }
        self.validate_new_view(&nv)?;
        // A new-view that uses a view-change of a life its sender forgot is refused: with it, a
        // faulty primary could hold a recovered replica to a promise (§4.4: no part in lower
        // views) that its new life, not knowing it, did not keep (crate docs).
        self.check_incarnation(from, nv.incarnation)?;
        for vc in &nv.view_changes {
            self.check_incarnation(vc.from, vc.message.incarnation)?;
        }
        let plan = self.plan_new_view(nv.view, nv.view_changes.iter().map(|vc| &vc.message));
        if plan.pre_prepares != nv.pre_prepares {
            return Err(Bad("O set does not match the view-changes"));
        }
        if self.conflicts_with_executed(&plan.pre_prepares).is_some() {
            // A valid new-view against our own execution: beyond the fault model (an error
            // carries no action, so it is only counted; the view-change timer moves us on).
            self.alarms += 1;
            return Err(Bad("O set conflicts with executed proposals"));
        }
        for vc in &nv.view_changes {
            self.show_view_change(vc);
        }
        self.enter_view(nv.view, plan, None, actions);
        Ok(())
    }

    /// Enters `view` in normal status with the O set as its log (§4.4): persist, (as primary)
    /// multicast the new-view, (as backup) prepare every re-issued pre-prepare.
    pub(crate) fn enter_view(
        &mut self,
        view: View,
        plan: NewViewPlan,
        new_view: Option<NewView>,
        actions: &mut Vec<Action>,
    ) {
        self.view = view;
        self.status = Status::Normal;
        self.stop_timer();
        self.slots.clear();
        self.waiting.clear();
        self.in_log.clear();
        if new_view.is_none() {
            self.last_new_view = None;
        }
        // What a correct primary of this view may have to wait out (`primary_owed_wait`),
        // recorded before the view is: a crash between the two must not restore the view
        // without it (red team s37 F1); an inheritance of a view not entered is ignored.
        self.inherited_time_ms = plan
            .pre_prepares
            .iter()
            .map(|pp| pp.proposal.time_ms)
            .fold(self.head_time_ms, u64::max);
        self.view_start_seq = plan
            .pre_prepares
            .last()
            .map_or(plan.checkpoint.seq, |pp| pp.proposal.seq);
        actions.push(Action::Persist(Durable::Inherited {
            view,
            time_ms: self.inherited_time_ms,
            seq: self.view_start_seq,
        }));
        actions.push(Action::Persist(Durable::View(view)));
        if let Some(nv) = &new_view {
            actions.push(Action::Persist(Durable::NewView(nv.clone())));
        }
        let ck = plan.checkpoint;
        if ck.seq > self.low {
            if ck.seq <= self.last_executed.0 {
                if self
                    .executed_digests
                    .get(&ck.seq)
                    .is_none_or(|d| *d == ck.digest)
                {
                    self.stabilize(ck, plan.proof, actions);
                } else {
                    self.checkpoint_mismatch(ck.seq, actions);
                }
            } else if self.fetch.as_ref().is_none_or(|f| f.seq < ck.seq) {
                let peers = plan.proof.iter().map(|c| c.from).collect();
                self.fetch = Some(FetchTarget {
                    seq: ck.seq,
                    digest: ck.digest,
                    proof: Some(plan.proof),
                    peers,
                    since: self.now,
                    requested_at: None,
                });
            }
        }
        let mut accepted = Vec::new();
        let high = self.high();
        for pp in plan.pre_prepares.iter() {
            let seq = pp.proposal.seq;
            if seq <= self.low || seq > high {
                continue;
            }
            if seq > self.last_executed.0 {
                for r in &pp.proposal.requests {
                    self.in_log.insert(r.id, seq);
                }
            }
            self.slots.entry(seq).or_default().pre_prepare = Some(pp.clone());
            actions.push(Action::Persist(Durable::PrePrepare(pp.clone())));
            accepted.push((seq, pp.digest));
        }
        if let Some(nv) = new_view {
            actions.push(Action::Broadcast(Message::NewView(nv)));
            self.new_view_sent = true;
        }
        // The primary chains its next proposal after the O set (or min-s).
        let (mut seq, mut digest) = plan
            .pre_prepares
            .last()
            .map_or((ck.seq, ck.digest), |pp| (pp.proposal.seq, pp.digest));
        if seq < self.last_executed.0 {
            (seq, digest) = self.last_executed;
        }
        self.next_seq = seq + 1;
        self.last_proposed = digest;
        if !self.is_primary() {
            for (seq, digest) in &accepted {
                actions.push(Action::Broadcast(Message::Prepare(Vote {
                    view,
                    seq: *seq,
                    digest: *digest,
                })));
            }
        }
        // Requests not in the O set become proposable again, oldest first.
        let mut order: Vec<(u64, Digest)> = self
            .pending
            .iter()
            .filter(|(id, _)| !self.in_log.contains_key(*id))
            .map(|(id, p)| (p.since, *id))
            .collect();
        order.sort_unstable();
        self.queue = order.iter().map(|(_, id)| *id).collect::<VecDeque<_>>();
        if !self.is_primary() {
            let requests = order
                .iter()
                .filter_map(|(_, id)| self.pending.get(id).map(|p| p.request.clone()))
                .collect();
            self.forward(requests, actions);
        }
        self.last_progress = self.now;
        self.arm_timer();
        for (seq, _) in &accepted {
            self.check_prepared(*seq, actions);
        }
        self.replay_future(actions);
        // The primary that sends the new-view proposes nothing in this step (`new_view_sent`,
        // in `try_propose`): a batch stamped now leaves only after its caller has persisted and
        // sent the new-view, seconds later for an O set of full batches (tens of MB for 45 of
        // them), and every backup withheld its prepare as more than τ old, view after view
        // (BENCHMARKS.md, "twenty-ninth"). Its next input (a tick at the latest) proposes.
        if self.status == Status::Normal && self.is_primary() {
            self.try_propose(false, actions);
        }
    }
}
