//! What a replica must remember across a restart so that it never contradicts itself.
use borsh::{BorshDeserialize, BorshSerialize};

use crate::message::{Checkpoint, Life, NewView, PrePrepare, PreparedCertificate, Signed};
use crate::types::{ReplicaId, SeqNo, View};

/// A record the caller must store durably (fsync) before executing any later action of the
/// same step. On restart the caller hands the records back, in the order they were persisted,
/// to [`crate::Replica::new`] inside [`crate::Restored`].
///
/// Why each exists (a restarted replica must never send a message that contradicts one it sent
/// before the crash):
/// - [`Durable::View`] / [`Durable::ViewChange`]: never go back to a view it left (§4.4: a
///   view-change promises not to take part in lower views).
/// - [`Durable::PrePrepare`]: a primary never assigns a sequence number twice in one view, and
///   a backup never prepares two digests for one (view, sequence number) (§4.2); a backup
///   resends the prepare it sent.
/// - [`Durable::Withheld`]: a backup that accepted a pre-prepare but withheld its prepare (the
///   block time, crate docs) still never accepts another for that (view, sequence number), and
///   after a restart judges the time again rather than resending a prepare it never sent.
/// - [`Durable::Prepared`]: persisted when a sequence number becomes prepared, before the
///   commit that depends on it, so that every later view-change carries the certificate
///   (§4.4's safety argument relies on f+1 honest committers reporting it).
/// - [`Durable::StableCheckpoint`]: the low watermark and its proof, which view-changes carry.
/// - [`Durable::Recovery`]: the replica lost its records and must stay passive until it can
///   no longer contradict a message it may have sent before (crate docs, "Recovering from
///   lost state"); a restart during recovery must not forget that.
/// - [`Durable::NewView`]: the new-view a primary sent, so that after a restart it can still
///   hand it to a replica that missed it (§4.5.2's retransmission; without it such a replica
///   waits a doubled timeout or sits in a higher view).
/// - [`Durable::Incarnation`]: the newest life (signed query) of a replica, persisted before
///   this replica answers or relays it, so that it refuses that replica's earlier lives'
///   view-changes after a restart too, and can tell others (crate docs, "Recovering from lost
///   state").
/// - [`Durable::Inherited`]: what the view it entered inherited, so that after a restart it
///   gives the view's primary the wait it owes and no other (crate docs, "Timers"): its log
///   cannot tell the O set from the primary's own proposals, nor its head whose view made it.
///
/// Pruning: [`Durable::compact`] drops every record that a later one makes useless: all but
/// the last view record, pre-prepares of older views, pre-prepares and prepared certificates at
/// or below the latest stable checkpoint, older checkpoints, prepared certificates
/// superseded by one of a higher view for the same sequence number, new-views and
/// inheritances of views other than the last one, and all but the newest incarnation of each
/// replica. The node may
/// run it (or
/// its own SQL equivalent) whenever it persists a `StableCheckpoint`.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum Durable {
    /// The replica entered this view (normal operation; after a new-view, or view 0).
    View(View),
    /// The replica started changing to this view and sent its view-change.
    ViewChange(View),
    /// A pre-prepare this replica sent (as primary) or accepted (as backup) in `view`.
    PrePrepare(PrePrepare),
    /// A sequence number became prepared at this replica.
    Prepared(PreparedCertificate),
    /// A checkpoint became stable (2f+1 matching checkpoint messages, §4.3).
    StableCheckpoint {
        checkpoint: Checkpoint,
        proof: Vec<Signed<Checkpoint>>,
    },
    /// The new-view this replica sent as the primary of `view` (persisted right after the
    /// `View` record of that view, before it is sent).
    NewView(NewView),
    /// The replica is recovering from lost state: `bound` is `None` until 2f+1 replicas
    /// answered its query, then `(view, seq)`: it takes part again once it is in a view of at
    /// least `view` with a stable checkpoint of at least `seq`. Persisted first thing when a
    /// recovery starts, and again when the bound is known.
    Recovery { bound: Option<(View, SeqNo)> },
    /// `life.from` is in `life.message.incarnation` (or a later one): its view-changes and
    /// new-views of older incarnations are refused. Persisted when this replica learns a newer
    /// life, at stable checkpoint `at` (one new life per replica per checkpoint).
    Incarnation { life: Life, at: SeqNo },
    /// A pre-prepare this backup accepted in `view` without sending its prepare (its block time
    /// was more than τ from the clock). A [`Durable::PrePrepare`] of it, written when the
    /// prepare goes out, supersedes it.
    Withheld(PrePrepare),
    /// What `view` inherited when this replica entered it (persisted right before its `View`
    /// record; restored only for the view restored): the latest block time it held then (its
    /// head's, the O set's) and the last sequence number of the new-view (its O set's, or its
    /// checkpoint's); a block up to `seq` is inherited too when it comes later.
    Inherited {
        view: View,
        time_ms: u64,
        seq: SeqNo,
    },
}

impl Durable {
    /// The sequence number a record is about, if any.
    pub fn seq(&self) -> Option<SeqNo> {
        match self {
            Durable::View(_)
            | Durable::ViewChange(_)
            | Durable::NewView(_)
            | Durable::Recovery { .. }
            | Durable::Incarnation { .. }
            | Durable::Inherited { .. } => None,
            Durable::PrePrepare(pp) | Durable::Withheld(pp) => Some(pp.proposal.seq),
            Durable::Prepared(c) => Some(c.pre_prepare.proposal.seq),
            Durable::StableCheckpoint { checkpoint, .. } => Some(checkpoint.seq),
        }
    }

    /// Drops the records a restarted replica no longer needs (see the type's docs); keeps the
    /// relative order of the others. Restoring from the compacted list gives the same replica
    /// state as restoring from the full one.
    pub fn compact(records: &mut Vec<Durable>) {
        let keep = Durable::kept(records);
        let mut i = 0;
        records.retain(|_| {
            i += 1;
            keep[i - 1]
        });
    }

    /// Which of `records` [`Durable::compact`] keeps, in their order: a store drops the others
    /// where they lie, without rewriting those it keeps.
    pub fn kept(records: &[Durable]) -> Vec<bool> {
        let stable = records
            .iter()
            .filter_map(|r| match r {
                Durable::StableCheckpoint { checkpoint, .. } => Some(checkpoint.seq),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        let last_view_index = records
            .iter()
            .rposition(|r| matches!(r, Durable::View(_) | Durable::ViewChange(_)));
        let view = match last_view_index.map(|i| &records[i]) {
            Some(Durable::View(v) | Durable::ViewChange(v)) => *v,
            _ => 0,
        };
        let mut best_prepared: std::collections::BTreeMap<SeqNo, (View, usize)> =
            std::collections::BTreeMap::new();
        for (i, r) in records.iter().enumerate() {
            if let Durable::Prepared(c) = r {
                let entry = best_prepared
                    .entry(c.pre_prepare.proposal.seq)
                    .or_insert((c.pre_prepare.view, i));
                if c.pre_prepare.view >= entry.0 {
                    *entry = (c.pre_prepare.view, i);
                }
            }
        }
        let last_new_view_index = records
            .iter()
            .rposition(|r| matches!(r, Durable::NewView(nv) if nv.view == view));
        let last_inherited_index = records
            .iter()
            .rposition(|r| matches!(r, Durable::Inherited { view: v, .. } if *v == view));
        // The last recovery record decides (a bound supersedes the query before it; a new
        // query keeps the replica passive whatever came before); once met, it is useless. A
        // bound of the view being changed to is not met yet: a primary changing to a view up
        // to the bound's stays passive until the next one (it may have led it in its lost
        // life), and a restart must remember that.
        let changing = matches!(
            last_view_index.map(|i| &records[i]),
            Some(Durable::ViewChange(_))
        );
        let last_recovery_index = records
            .iter()
            .rposition(|r| matches!(r, Durable::Recovery { .. }))
            .filter(|i| match &records[*i] {
                Durable::Recovery {
                    bound: Some((v, s)),
                } => *v > view || (*v == view && changing) || *s > stable,
                _ => true,
            });
        // The newest life of each replica (the last record of the highest).
        let mut newest_incarnation: std::collections::BTreeMap<ReplicaId, (u64, usize)> =
            std::collections::BTreeMap::new();
        for (i, r) in records.iter().enumerate() {
            if let Durable::Incarnation { life, .. } = r {
                let incarnation = life.message.incarnation;
                let entry = newest_incarnation
                    .entry(life.from)
                    .or_insert((incarnation, i));
                if incarnation >= entry.0 {
                    *entry = (incarnation, i);
                }
            }
        }
        let mut stable_kept = false;
        let mut index = records.len();
        // Walk backwards so that "the latest" is the first one met.
        let mut keep = vec![false; records.len()];
        while index > 0 {
            index -= 1;
            keep[index] = match &records[index] {
                Durable::View(_) | Durable::ViewChange(_) => Some(index) == last_view_index,
                Durable::PrePrepare(pp) | Durable::Withheld(pp) => {
                    pp.proposal.seq > stable && pp.view == view
                }
                Durable::Prepared(c) => {
                    let seq = c.pre_prepare.proposal.seq;
                    seq > stable && best_prepared.get(&seq).map(|b| b.1) == Some(index)
                }
                Durable::StableCheckpoint { checkpoint, .. } => {
                    let keep = checkpoint.seq == stable && !stable_kept;
                    stable_kept |= keep;
                    keep
                }
                Durable::NewView(_) => Some(index) == last_new_view_index,
                Durable::Inherited { .. } => Some(index) == last_inherited_index,
                Durable::Recovery { .. } => Some(index) == last_recovery_index,
                Durable::Incarnation { life, .. } => {
                    newest_incarnation.get(&life.from).map(|n| n.1) == Some(index)
                }
            };
        }
        keep
    }
}
