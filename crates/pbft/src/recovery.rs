//! Recovering from lost durable state (issue 8, finding 2; compare TOCS'02 §4.3.2, proactive
//! recovery). The argument is in the crate docs, "Recovering from lost state".

use std::collections::{BTreeMap, BTreeSet};

use crate::config::ProtocolError;
use crate::durable::Durable;
use crate::io::Action;
use crate::message::{Life, Message, RecoveryAnswer, RecoveryQuery, Signed, ViewMessage};
use crate::replica::{Replica, Status};
use crate::types::{ReplicaId, SeqNo, Signature, View};

/// A recovery in progress: the replica is passive (it sends no pre-prepare, prepare, commit,
/// view-change or new-view) until it is in a view of at least `bound.0` with a stable
/// checkpoint of at least `bound.1`.
#[derive(Clone, Debug)]
pub(crate) struct Recovery {
    /// This start's query, while fewer than 2f+1 other replicas answered it.
    pub(crate) query: Option<Query>,
    /// The bound known so far (from earlier records; raised when the query completes).
    pub(crate) bound: (View, SeqNo),
    /// `Durable::Recovery { bound: None }` is still to be persisted (first thing).
    pub(crate) record_due: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct Query {
    pub(crate) nonce: u64,
    /// What each checked answer proves: the highest view (of the querier's message or the
    /// certificate) and the certified executed sequence number. Only that is kept.
    pub(crate) answers: BTreeMap<ReplicaId, (View, SeqNo)>,
    pub(crate) sent_at: Option<u64>,
}

impl Recovery {
    pub(crate) fn querying(nonce: u64, bound: (View, SeqNo), record_due: bool) -> Self {
        Recovery {
            query: Some(Query {
                nonce,
                answers: BTreeMap::new(),
                sent_at: None,
            }),
            bound,
            record_due,
        }
    }
}

/// The messages by which a replica could contradict one it sent before losing its state.
fn may_contradict(message: &Message) -> bool {
    matches!(
        message,
        Message::PrePrepare(_)
            | Message::Prepare(_)
            | Message::Commit(_)
            | Message::ViewChange(_)
            | Message::NewView(_)
    )
}

impl Replica {
    /// Whether the replica is recovering from lost state (passive, see the crate docs).
    pub fn is_recovering(&self) -> bool {
        self.recovery.is_some()
    }

    /// A recovery needs 2f+1 answers from *other* replicas, which n <= 2 does not have (and
    /// with f = 0 no fault, amnesia included, is tolerated anyway).
    pub(crate) fn can_recover(&self) -> bool {
        self.cfg.quorum() < self.cfg.n as usize
    }

    /// Sends this start's query, and again every `retransmit_ticks` until answered.
    pub(crate) fn maybe_query(&mut self, actions: &mut Vec<Action>) {
        let (now, interval, incarnation) = (self.now, self.cfg.retransmit_ticks, self.incarnation);
        let Some(query) = self.recovery.as_mut().and_then(|r| r.query.as_mut()) else {
            return;
        };
        if query
            .sent_at
            .is_none_or(|at| now >= at.saturating_add(interval))
        {
            query.sent_at = Some(now);
            actions.push(Action::Broadcast(Message::RecoveryQuery(RecoveryQuery {
                nonce: query.nonce,
                incarnation,
            })));
        }
    }

    /// Every replica answers a query, with the nonce, to the querier only: its last executed
    /// sequence number (the caller replaces it with its chain's head and adds that block's
    /// commit certificate, see the crate docs) and the querier's own message of the highest
    /// view it accepted. At most once per half `retransmit_ticks` per querier (a correct one
    /// resends its query at that interval; `AnswerPace`): an answer may carry a view-change of
    /// up to a whole log window, which a faulty replica must not make this one build, sign and
    /// send for every few bytes of queries.
    pub(crate) fn on_recovery_query(
        &mut self,
        from: ReplicaId,
        query: RecoveryQuery,
        signature: Signature,
        actions: &mut Vec<Action>,
    ) -> Result<(), ProtocolError> {
        let life = Signed {
            from,
            message: query,
            signature,
        };
        if from == self.cfg.id {
            // Our own query, looped back signed: kept, to show in our answers.
            if self.remember_life(life.clone(), self.low) {
                actions.push(Action::Persist(Durable::Incarnation { life, at: self.low }));
            }
            return Ok(());
        }
        let interval = self.cfg.retransmit_ticks;
        if self.recovery_answered.too_soon(from, self.now, interval) {
            return Err(ProtocolError::RecoveryQueryTooSoon);
        }
        // From now on this replica refuses the querier's view-changes and new-views of its
        // earlier lives, also after a restart: persisted (and relayed) before the answer goes
        // out.
        self.learn_life(life, actions)?;
        self.recovery_answered.answered(from, self.now, interval);
        actions.push(Action::Send {
            to: from,
            message: Message::RecoveryAnswer(RecoveryAnswer {
                nonce: query.nonce,
                querier: from,
                last_executed: self.last_executed.0,
                executed_proof: Vec::new(),
                querier_message: self.highest_view_shown.get(&from).cloned(),
                lives: self.known_lives(),
            }),
        });
        Ok(())
    }

    /// The newest life known of every replica (this one's own included, if it recovered).
    pub(crate) fn known_lives(&self) -> Vec<Life> {
        self.lives.values().map(|(life, _)| life.clone()).collect()
    }

    /// Keeps `life` as its sender's newest, learned at stable checkpoint `at`, if it is newer
    /// than the one known, and forgets that sender's view-changes of older lives; returns
    /// whether it was newer. Unconditional: for lives replayed from [`Durable::Incarnation`]
    /// and this replica's own; [`Replica::learn_life`] decides for the others'.
    pub(crate) fn remember_life(&mut self, life: Life, at: SeqNo) -> bool {
        let (replica, incarnation) = (life.from, life.message.incarnation);
        if self
            .lives
            .get(&replica)
            .is_some_and(|(known, _)| known.message.incarnation >= incarnation)
        {
            return false;
        }
        self.lives.insert(replica, (life, at));
        if replica != self.cfg.id
            && let Some(table) = self.view_changes.get_mut(&replica)
        {
            table.retain(|_, vc| vc.message.incarnation >= incarnation);
        }
        true
    }

    /// Learns another replica's life, from its own query or relayed (in [`Message::Lives`] or
    /// a recovery answer), persisting it first, and relays a new one to every replica so that
    /// they learn it together (each relays it once: once learned, it is no longer new). At
    /// most one new life per replica per advance of this replica's stable checkpoint
    /// ([`ProtocolError::IncarnationRaisedTooSoon`]), so that a faulty replica announcing lives
    /// cannot veto view change after view change (crate docs, "Why announcing new lives cannot
    /// halt the cluster"); but none while recovering: a replica rebuilding what it knew (from
    /// nothing, or from an older backup) takes the newest life it is shown, whatever arrived
    /// first, and takes no part meanwhile (it persists and relays them as it leaves recovery).
    /// Returns whether it was new.
    pub(crate) fn learn_life(
        &mut self,
        life: Life,
        actions: &mut Vec<Action>,
    ) -> Result<bool, ProtocolError> {
        let replica = life.from;
        if replica == self.cfg.id || life.message.incarnation <= self.known_incarnation(replica) {
            return Ok(false);
        }
        let limited = self.recovery.is_none()
            && self
                .lives
                .get(&replica)
                .is_some_and(|(_, at)| *at >= self.low);
        if limited {
            return Err(ProtocolError::IncarnationRaisedTooSoon { replica });
        }
        let at = self.low;
        self.remember_life(life.clone(), at);
        if self.recovery.is_some() {
            // Kept in memory only, newest per sender, and persisted and relayed when the
            // recovery ends (`recovery_after_step`): a faulty replica signing life after life
            // must not make a recovering replica write and send one record per life. A
            // restart meanwhile starts the recovery again, which learns them again.
            return Ok(true);
        }
        actions.push(Action::Persist(Durable::Incarnation {
            life: life.clone(),
            at,
        }));
        actions.push(Action::Broadcast(Message::Lives(vec![life])));
        Ok(true)
    }

    /// Every life this replica knows, to every replica (when it changes views: a backup that
    /// knows a life the new primary does not would refuse its new-view).
    pub(crate) fn relay_lives(&self, actions: &mut Vec<Action>) {
        if !self.lives.is_empty() {
            actions.push(Action::Broadcast(Message::Lives(self.known_lives())));
        }
    }

    /// Relayed lives: each is learned as if from its own query (no answer goes out).
    pub(crate) fn on_lives(&mut self, lives: Vec<Life>, actions: &mut Vec<Action>) {
        for life in lives {
            // Refused ones (too soon) are ignored: a correct replica's is relayed again.
            let _ = self.learn_life(life, actions);
        }
    }

    /// At most one life per replica, each of a replica of the cluster.
    pub(crate) fn check_lives(&self, lives: &[Life]) -> Result<(), ProtocolError> {
        let mut senders = BTreeSet::new();
        for life in lives {
            if life.from >= self.cfg.n || !senders.insert(life.from) {
                return Err(ProtocolError::Malformed(
                    "lives of an unknown replica, or two of one",
                ));
            }
        }
        Ok(())
    }

    /// Whether an answer is usable here, and what it proves, before any signature is checked
    /// (signatures are the caller's): it answers this replica's open query (querier and
    /// nonce); the certificate holds commits of one view and digest at `last_executed` from
    /// at least a quorum of distinct replicas (none for 0); the querier's message is the
    /// querier's and, if a view-change or new-view, well formed.
    pub(crate) fn validate_recovery_answer(
        &self,
        answer: &RecoveryAnswer,
    ) -> Result<(), ProtocolError> {
        let open_nonce = self
            .recovery
            .as_ref()
            .and_then(|r| r.query.as_ref())
            .map(|q| q.nonce);
        if answer.querier != self.cfg.id || Some(answer.nonce) != open_nonce {
            return Err(ProtocolError::UnexpectedRecoveryAnswer);
        }
        self.check_lives(&answer.lives)?;
        let invalid = ProtocolError::InvalidRecoveryAnswer;
        if let Some(shown) = &answer.querier_message {
            if shown.from != answer.querier {
                return Err(invalid(
                    "the querier's message is signed by another replica",
                ));
            }
            let well_formed = match &shown.message {
                ViewMessage::ViewChange(vc) => self.validate_view_change(vc),
                ViewMessage::NewView(nv) => self.validate_new_view(nv),
                ViewMessage::PrePrepare(_) | ViewMessage::Prepare(_) | ViewMessage::Commit(_) => {
                    Ok(())
                }
            };
            if well_formed.is_err() {
                return Err(invalid(
                    "the querier's message is not a valid view-change or new-view",
                ));
            }
        }
        let proof = &answer.executed_proof;
        let Some(first) = proof.first() else {
            return match answer.last_executed {
                0 => Ok(()),
                _ => Err(invalid(
                    "an executed sequence number without its certificate",
                )),
            };
        };
        if answer.last_executed == 0 {
            return Err(invalid("a certificate for sequence number 0"));
        }
        if proof.len() < self.cfg.quorum() || proof.len() > self.cfg.n as usize {
            return Err(invalid("a certificate not of a quorum of replicas"));
        }
        let mut signers = BTreeSet::new();
        for commit in proof {
            if commit.from >= self.cfg.n || !signers.insert(commit.from) {
                return Err(invalid("a certificate with an unknown or repeated signer"));
            }
            if commit.message.seq != answer.last_executed
                || commit.message.view != first.message.view
                || commit.message.digest != first.message.digest
            {
                return Err(invalid(
                    "a certificate whose commits are not all of one view and digest at its \
                     sequence number",
                ));
            }
        }
        Ok(())
    }

    /// With 2f+1 proven answers from other replicas, the bound is V = the highest view proven
    /// (by the querier's own messages and the certificates' views) and H = the highest
    /// certified execution plus L. An answer that proves less than it claims is refused and
    /// does not count.
    pub(crate) fn on_recovery_answer(
        &mut self,
        from: ReplicaId,
        answer: RecoveryAnswer,
        actions: &mut Vec<Action>,
    ) -> Result<(), ProtocolError> {
        let (quorum, window) = (self.cfg.quorum(), self.cfg.watermark_window);
        if from == self.cfg.id {
            return Err(ProtocolError::UnexpectedRecoveryAnswer);
        }
        self.validate_recovery_answer(&answer)?;
        let counted = self
            .recovery
            .as_ref()
            .and_then(|r| r.query.as_ref())
            .is_some_and(|q| q.answers.contains_key(&from));
        if counted {
            return Err(ProtocolError::Duplicate);
        }
        // What the answerer knows of every replica's life, learned (again) before this replica
        // takes part: what it knew before it lost its state, among the rest (crate docs).
        self.on_lives(answer.lives.clone(), actions);
        let querier = answer.querier_message.as_ref().map(|m| m.message.view());
        let certificate = answer.executed_proof.first().map(|c| c.message.view);
        let proven = (querier.max(certificate).unwrap_or(0), answer.last_executed);
        let Some(recovery) = self.recovery.as_mut() else {
            return Err(ProtocolError::UnexpectedRecoveryAnswer);
        };
        let Some(query) = recovery.query.as_mut() else {
            return Err(ProtocolError::UnexpectedRecoveryAnswer);
        };
        query.answers.insert(from, proven);
        if query.answers.len() < quorum {
            return Ok(());
        }
        let view = query.answers.values().map(|a| a.0).max().unwrap_or(0);
        let executed = query.answers.values().map(|a| a.1).max().unwrap_or(0);
        let bound = (
            recovery.bound.0.max(view),
            recovery.bound.1.max(executed.saturating_add(window)),
        );
        recovery.bound = bound;
        recovery.query = None;
        // The replica does not jump to V: it reaches the cluster's view by the f+1 rule
        // (§4.5.2); V is the view of a message it signed itself or of a certificate, so the
        // cluster has been there or it had asked to go there.
        actions.push(Action::Persist(Durable::Recovery { bound: Some(bound) }));
        Ok(())
    }

    /// After each accepted input: while recovering, persist the recovery record first thing,
    /// drop every message that could contradict one sent before the state was lost, and end
    /// the recovery once the bound is met (retransmitting at the next tick what it held back).
    pub(crate) fn recovery_after_step(&mut self, mark: usize, actions: &mut Vec<Action>) {
        let leads_view_change = self.status == Status::ViewChange && self.is_primary();
        let Some(recovery) = self.recovery.as_mut() else {
            return;
        };
        let tail = actions.split_off(mark);
        if recovery.record_due {
            recovery.record_due = false;
            actions.push(Action::Persist(Durable::Recovery { bound: None }));
        }
        actions.extend(tail.into_iter().filter(|a| match a {
            Action::Send { message, .. } | Action::Broadcast(message) => !may_contradict(message),
            _ => true,
        }));
        // A primary changing to a view up to V may have sent that view's new-view before: it
        // must not build another one, so it waits for the next view.
        let may_have_led = leads_view_change && self.view <= recovery.bound.0;
        if recovery.query.is_none()
            && self.view >= recovery.bound.0
            && self.low >= recovery.bound.1
            && !may_have_led
        {
            self.recovery = None;
            self.restarted = true;
            // What it learned of every replica's life while recovering, before it takes part.
            for (life, at) in self.lives.values() {
                actions.push(Action::Persist(Durable::Incarnation {
                    life: life.clone(),
                    at: *at,
                }));
            }
            self.relay_lives(actions);
            // Requests it accepted while passive were waited on by no timer (`arm_timer`
            // refuses while recovering): a faulty primary could drop them for good (red team
            // s39 O1).
            self.arm_timer();
        }
    }
}
