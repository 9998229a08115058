//! Byzantine replicas. A Byzantine replica runs the honest code; what it sends is rewritten,
//! what it receives is filtered, and it may send more of its own (signed with its own key; its
//! colluders share a plan). One file per behaviour, as commonware's consensus mocks.
//!
//! Every Byzantine replica counts toward f, together with crashed and amnesiac ones: a run never
//! has more than f faulty replicas at once (see [`cast`] and `faults.rs`).
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use pbft::{Digest, Message, PreparedCertificate, ReplicaId, Request, SeqNo, Signed, View};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::crypto;
use crate::profile::Profile;
use crate::world::World;

pub mod announce_lives;
pub mod bad_transfer_source;
pub mod censor;
pub mod choose_view_changes;
pub mod doctor_certificates;
pub mod double_vote;
pub mod equivocate;
pub mod forge_proposal_view;
pub mod forge_signature;
pub mod forge_status;
pub mod hide_prepared;
pub mod keep_lost_life;
pub mod lie_in_recovery;
pub mod oversized_batch;
pub mod replay;
pub mod silent;
pub mod skewed_clock;
pub mod stale_view;
pub mod substitute_payload;
pub mod withhold_commits;
pub mod wrong_digest;

/// How a Byzantine replica misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Behavior {
    Equivocate,
    Silent,
    WrongDigest,
    ForgeSignature,
    StaleView,
    Replay,
    HidePrepared,
    DoubleVote,
    ChooseViewChanges,
    DoctorCertificates,
    SubstitutePayload,
    WithholdCommits,
    BadTransferSource,
    ForgeStatus,
    OversizedBatch,
    Censor,
    LieInRecovery,
    SkewedClock,
    KeepLostLife,
    AnnounceLives,
    ForgeProposalView,
}

impl Behavior {
    pub const ALL: [Behavior; 21] = [
        Behavior::Equivocate,
        Behavior::Silent,
        Behavior::WrongDigest,
        Behavior::ForgeSignature,
        Behavior::StaleView,
        Behavior::Replay,
        Behavior::HidePrepared,
        Behavior::DoubleVote,
        Behavior::ChooseViewChanges,
        Behavior::DoctorCertificates,
        Behavior::SubstitutePayload,
        Behavior::WithholdCommits,
        Behavior::BadTransferSource,
        Behavior::ForgeStatus,
        Behavior::OversizedBatch,
        Behavior::Censor,
        Behavior::LieInRecovery,
        Behavior::SkewedClock,
        Behavior::KeepLostLife,
        Behavior::AnnounceLives,
        Behavior::ForgeProposalView,
    ];

    /// The behaviours the `byzantine` profile draws from: the first seven (`mixed` draws from
    /// all).
    pub const CLASSIC: &'static [Behavior] = Behavior::ALL.split_at(7).0;

    pub fn name(self) -> &'static str {
        match self {
            Behavior::Equivocate => "equivocate",
            Behavior::Silent => "silent",
            Behavior::WrongDigest => "wrong-digest",
            Behavior::ForgeSignature => "forge-signature",
            Behavior::StaleView => "stale-view",
            Behavior::Replay => "replay",
            Behavior::HidePrepared => "hide-prepared",
            Behavior::DoubleVote => "double-vote",
            Behavior::ChooseViewChanges => "choose-view-changes",
            Behavior::DoctorCertificates => "doctor-certificates",
            Behavior::SubstitutePayload => "substitute-payload",
            Behavior::WithholdCommits => "withhold-commits",
            Behavior::BadTransferSource => "bad-transfer-source",
            Behavior::ForgeStatus => "forge-status",
            Behavior::OversizedBatch => "oversized-batch",
            Behavior::Censor => "censor",
            Behavior::LieInRecovery => "lie-in-recovery",
            Behavior::SkewedClock => "skewed-clock",
            Behavior::KeepLostLife => "keep-lost-life",
            Behavior::AnnounceLives => "announce-lives",
            Behavior::ForgeProposalView => "forge-proposal-view",
        }
    }

    /// One line for `sim --help`.
    pub fn describe(self) -> &'static str {
        match self {
            Behavior::Equivocate => {
                "as primary, a second valid proposal for one sequence number to some backups"
            }
            Behavior::Silent => "sends nothing (a silent primary or backup)",
            Behavior::WrongDigest => "votes and checkpoints with random digests",
            Behavior::ForgeSignature => "bad, missing or another replica's signature",
            Behavior::StaleView => "re-labels its votes and view-changes with an older view",
            Behavior::Replay => "re-sends others' old messages (valid signatures)",
            Behavior::HidePrepared => "view-changes without its prepared certificates",
            Behavior::DoubleVote => {
                "prepares and commits every digest it sees; colluders target f honest replicas"
            }
            Behavior::ChooseViewChanges => {
                "as new primary, admits only the view-changes that lose prepared certificates"
            }
            Behavior::DoctorCertificates => {
                "view-changes replay stale certificates, or broken ones"
            }
            Behavior::SubstitutePayload => {
                "same ids and timestamps, other bytes, in view-changes and pre-prepares (finding 1)"
            }
            Behavior::WithholdCommits => "never sends its commits",
            Behavior::BadTransferSource => {
                "answers state transfer with substituted, uncertified or unchained blocks"
            }
            Behavior::ForgeStatus => {
                "status claims and checkpoints far beyond the head, made-up digests"
            }
            Behavior::OversizedBatch => {
                "as primary, batches of many copies of one request (finding 5)"
            }
            Behavior::Censor => {
                "drops one patient's transactions wherever they reach it (finding 3)"
            }
            Behavior::LieInRecovery => {
                "answers recovery queries with inflated executions or views, forged or short certificates (finding 2)"
            }
            Behavior::SkewedClock => {
                "block times an hour or about τ ahead of real time (its clock), or as far behind (rewritten)"
            }
            Behavior::KeepLostLife => {
                "ignores recovered replicas' new incarnations; its new-views reuse their lost lives' view-changes (finding 2)"
            }
            Behavior::AnnounceLives => {
                "view-changes to the new primary only, new incarnations announced to the backups (finding 2's veto)"
            }
            Behavior::ForgeProposalView => {
                "as primary, its fresh proposals claim view 0, as if an O set had inherited them (red team s35 F1)"
            }
        }
    }
}

/// What a Byzantine replica remembers to misbehave with.
#[derive(Debug, Default)]
pub struct Memory {
    /// Messages received from others, for replay (bounded).
    pub seen: VecDeque<Signed<Message>>,
    /// Votes already sent by the double-voter: (commit, view, seq, digest).
    pub voted: BTreeSet<(bool, View, SeqNo, Digest)>,
    /// Prepared certificates seen (its own and others'), per sequence number and view.
    pub certificates: BTreeMap<SeqNo, BTreeMap<View, PreparedCertificate>>,
    /// The first incarnation seen of each replica (`keep_lost_life`).
    pub incarnations: BTreeMap<ReplicaId, u64>,
}

/// What colluding Byzantine replicas agree on before the run.
#[derive(Clone, Debug, Default)]
pub struct Plot {
    /// The honest replicas an equivocating primary gives its first proposal (the others get
    /// the second); `None`: by the parity of the recipient's id plus its amnesia and state
    /// transfer counts (so a replica that forgot, or cleared its log, is offered the other).
    pub first_group: Option<BTreeSet<ReplicaId>>,
    /// The honest replicas double-voters send their prepares to; `None`: everyone.
    pub prepare_targets: Option<BTreeSet<ReplicaId>>,
    /// The honest backup a substituting primary leaves out of its pre-prepares.
    pub left_out: Option<ReplicaId>,
    /// The patient whose transactions censors drop, and the ids of those transactions.
    pub censored_patient: Option<String>,
    pub censored: BTreeSet<Digest>,
    /// Replicas an adversary of the plot isolates for a while (network, not a fault).
    pub isolate: Option<ReplicaId>,
    /// How many more new primaries crash right after sending their new-view (finding 7).
    pub new_view_crashes: u32,
    /// How many more honest replicas crash between a stable-checkpoint record and the apply of
    /// its block, leaving the ledger behind their own stable checkpoint (red teams s27, s28).
    pub checkpoint_crashes: u32,
    /// How far skewed-clock replicas are off (ms): positive, their clocks run that far ahead;
    /// negative, their pre-prepares claim times that far behind their clocks.
    pub clock_skew_ms: i64,
}

/// Who is Byzantine in a run of `profile`, how, and their plan: at most f replicas.
pub fn cast(
    profile: Profile,
    n: u32,
    f: usize,
    rng: &mut ChaCha8Rng,
) -> (Vec<Vec<Behavior>>, Plot) {
    let mut behaviors = vec![Vec::new(); n as usize];
    let mut plot = Plot::default();
    let mut set = |id: u32, bs: &[Behavior]| behaviors[id as usize] = bs.to_vec();
    match profile {
        Profile::Byzantine | Profile::Mixed => {
            let count = if profile == Profile::Byzantine {
                f
            } else {
                rng.gen_range(0..=f)
            };
            let mut ids: Vec<ReplicaId> = (0..n).collect();
            ids.shuffle(rng);
            // Make the first primary Byzantine often: that is where equivocation bites.
            if count > 0 && rng.gen_bool(0.5) {
                let pos = ids.iter().position(|i| *i == 0).unwrap_or(0);
                ids.swap(0, pos);
            }
            for id in &ids[..count] {
                let mut bs = Vec::new();
                // `mixed` draws from every behaviour, `byzantine` from the classic ones.
                let pool = if profile == Profile::Mixed {
                    &Behavior::ALL[..]
                } else {
                    Behavior::CLASSIC
                };
                for _ in 0..rng.gen_range(1..=3) {
                    let b = *pool.choose(rng).unwrap_or(&Behavior::Silent);
                    if !bs.contains(&b) {
                        bs.push(b);
                    }
                }
                bs.sort();
                set(*id, &bs);
            }
            if profile == Profile::Mixed {
                plot.censored_patient = Some(format!("p{:03}", rng.gen_range(1..=10)));
            }
        }
        Profile::DoubleVote if f >= 2 => {
            // Colluders 0..f: the primary of view 0 equivocates, the primary of view 1 picks
            // the view-changes of its new-view; all prepare and commit both proposals, sending
            // their prepares only to f honest replicas of the first group (f + 1 strong), so
            // that exactly f honest replicas become prepared.
            set(
                0,
                &[
                    Behavior::Equivocate,
                    Behavior::HidePrepared,
                    Behavior::DoubleVote,
                ],
            );
            set(
                1,
                &[
                    Behavior::HidePrepared,
                    Behavior::DoubleVote,
                    Behavior::ChooseViewChanges,
                ],
            );
            for id in 2..f as u32 {
                set(id, &[Behavior::HidePrepared, Behavior::DoubleVote]);
            }
            let first: BTreeSet<ReplicaId> = (f as u32..n).take(f + 1).collect();
            plot.prepare_targets = Some(first.iter().copied().take(f).collect());
            plot.first_group = Some(first);
        }
        Profile::DoubleVote => {
            if rng.gen_bool(0.5) {
                set(0, &[Behavior::Equivocate, Behavior::DoubleVote]);
            } else {
                set(rng.gen_range(1..n), &[Behavior::DoubleVote]);
            }
        }
        Profile::NewPrimary => {
            set(
                1,
                &[
                    Behavior::ChooseViewChanges,
                    Behavior::DoctorCertificates,
                    Behavior::AnnounceLives,
                ],
            );
            if f >= 2 {
                let first = if rng.gen_bool(0.5) {
                    Behavior::Equivocate
                } else {
                    Behavior::Silent
                };
                set(
                    0,
                    &[
                        first,
                        Behavior::DoctorCertificates,
                        Behavior::WithholdCommits,
                    ],
                );
            } else {
                // No second Byzantine replica to stall view 0: cut its primary off for a while.
                plot.isolate = Some(0);
            }
            for id in 2..f as u32 {
                set(id, &[Behavior::DoctorCertificates, Behavior::HidePrepared]);
            }
        }
        Profile::Substitution => {
            set(0, &[Behavior::SubstitutePayload, Behavior::WithholdCommits]);
            if f >= 2 {
                set(
                    1,
                    &[Behavior::ChooseViewChanges, Behavior::SubstitutePayload],
                );
            }
            plot.left_out = Some(n - 1);
        }
        Profile::Transfer => {
            let mut ids: Vec<ReplicaId> = (0..n).collect();
            ids.shuffle(rng);
            if rng.gen_bool(0.5) {
                let pos = ids.iter().position(|i| *i == 0).unwrap_or(0);
                ids.swap(0, pos);
            }
            for id in &ids[..f] {
                set(*id, &[Behavior::BadTransferSource, Behavior::ForgeStatus]);
            }
            // An equivocating primary re-offers the other proposal after a state transfer
            // (finding 6: a slot cleared by state transfer accepts a second pre-prepare).
            if ids[..f].contains(&0) {
                set(
                    0,
                    &[
                        Behavior::Equivocate,
                        Behavior::BadTransferSource,
                        Behavior::ForgeStatus,
                    ],
                );
            }
            // An honest replica cut off long enough to need a state transfer.
            plot.isolate = ids[f..].first().copied();
        }
        Profile::Flood => {
            for id in 0..f as u32 {
                set(id, &[Behavior::OversizedBatch]);
            }
        }
        Profile::Censor => {
            // Half the time the censors' clocks run ahead too (red team s31 F1: a censor that
            // pushes block times to the edge must still be replaced).
            let skewed = rng.gen_bool(0.5);
            for id in 0..f as u32 {
                if skewed {
                    set(id, &[Behavior::Censor, Behavior::SkewedClock]);
                } else {
                    set(id, &[Behavior::Censor]);
                }
            }
            plot.censored_patient = Some(format!("p{:03}", rng.gen_range(1..=10)));
        }
        // View 0's primary equivocates, or view 1's keeps lost lives' view-changes for its
        // new-view (the red team's fork); both lie in recovery answers.
        Profile::Amnesia if f >= 2 => {
            if rng.gen_bool(0.5) {
                set(0, &[Behavior::Equivocate, Behavior::LieInRecovery]);
            } else {
                set(1, &[Behavior::LieInRecovery, Behavior::KeepLostLife]);
            }
        }
        Profile::BlockTime => {
            // Half the time their fresh proposals claim view 0 too (red team s35 F1: withheld
            // far-future ones, logged, must not hold a restarted backup's timer).
            let forged = rng.gen_bool(0.5);
            for id in 0..f as u32 {
                if forged {
                    set(id, &[Behavior::SkewedClock, Behavior::ForgeProposalView]);
                } else {
                    set(id, &[Behavior::SkewedClock]);
                }
            }
        }
        Profile::Amnesia
        | Profile::Calm
        | Profile::Lossy
        | Profile::Partition
        | Profile::Crash
        | Profile::Skew
        | Profile::Slow => {}
        Profile::NewViewCrash => {
            // View 0's primary is cut off so that views change; the crashes are faults
            // (`faults.rs`), not Byzantine behaviour.
            plot.isolate = Some(0);
            plot.new_view_crashes = f as u32;
        }
    }
    if behaviors
        .iter()
        .flatten()
        .any(|b| *b == Behavior::SkewedClock)
    {
        let tolerance = crate::world::replica_config(0, n, None).block_time_tolerance_ms;
        plot.clock_skew_ms = skewed_clock::draw_skew_ms(tolerance, rng);
    }
    if matches!(profile, Profile::Crash | Profile::Mixed | Profile::Amnesia) {
        plot.checkpoint_crashes = f as u32;
    }
    (behaviors, plot)
}

impl World {
    fn behaves(&self, id: ReplicaId, b: Behavior) -> bool {
        self.nodes[id as usize].byzantine.contains(&b)
    }

    /// How far replica `id`'s clock runs ahead because it has a skewed clock (0 otherwise, and
    /// for a skew behind, which its pre-prepares carry instead).
    pub(crate) fn clock_skew_ms(&self, id: ReplicaId) -> i64 {
        if self.behaves(id, Behavior::SkewedClock) {
            self.plot.clock_skew_ms.max(0)
        } else {
            0
        }
    }

    fn colluders(&self) -> BTreeSet<ReplicaId> {
        self.nodes
            .iter()
            .filter(|x| !x.is_honest())
            .map(|x| x.id)
            .collect()
    }

    /// What Byzantine `from` sends to `to` instead of `message` (`None`: nothing).
    pub(crate) fn rewrite(
        &mut self,
        from: ReplicaId,
        to: ReplicaId,
        message: Message,
    ) -> Option<Message> {
        let behaviors = self.nodes[from as usize].byzantine.clone();
        let mut message = message;
        for b in behaviors {
            let m = message;
            message = match b {
                Behavior::Silent => return None,
                Behavior::WithholdCommits if withhold_commits::drops(&m) => return None,
                Behavior::Equivocate => match m {
                    Message::PrePrepare(pp) => {
                        let second = match &self.plot.first_group {
                            Some(g) => !g.contains(&to) && self.nodes[to as usize].is_honest(),
                            None => {
                                let x = &self.nodes[to as usize];
                                (to + x.amnesia + x.transfers) % 2 == 1
                            }
                        };
                        Message::PrePrepare(if second { equivocate::second(&pp) } else { pp })
                    }
                    m => m,
                },
                Behavior::DoubleVote => {
                    let targeted =
                        self.plot.prepare_targets.as_ref().is_some_and(|t| {
                            !t.contains(&to) && self.nodes[to as usize].is_honest()
                        });
                    if targeted && matches!(m, Message::Prepare(_)) {
                        return None;
                    }
                    m
                }
                Behavior::WrongDigest => wrong_digest::rewrite(m, &mut self.rng),
                Behavior::StaleView => stale_view::rewrite(m),
                Behavior::HidePrepared => hide_prepared::rewrite(m),
                Behavior::DoctorCertificates => match m {
                    Message::ViewChange(vc) => {
                        let window =
                            crate::world::replica_config(from, self.n, None).watermark_window;
                        let memory = &mut self.nodes[from as usize].adversary;
                        doctor_certificates::remember(memory, &vc);
                        Message::ViewChange(doctor_certificates::rewrite(
                            memory,
                            vc,
                            window,
                            &mut self.rng,
                        ))
                    }
                    m => m,
                },
                Behavior::SubstitutePayload => match m {
                    Message::PrePrepare(_) if self.plot.left_out == Some(to) => return None,
                    Message::PrePrepare(mut pp) if self.rng.gen_bool(0.2) => {
                        pp.proposal = std::sync::Arc::new(substitute_payload::proposal(
                            &pp.proposal,
                            &mut self.rng,
                        ));
                        Message::PrePrepare(pp)
                    }
                    Message::ViewChange(vc) => {
                        Message::ViewChange(substitute_payload::view_change(vc, &mut self.rng))
                    }
                    m => m,
                },
                Behavior::OversizedBatch => match m {
                    Message::PrePrepare(pp) => {
                        let max_batch = crate::world::replica_config(from, self.n, None).max_batch;
                        Message::PrePrepare(oversized_batch::pad(&pp, max_batch))
                    }
                    m => m,
                },
                Behavior::Censor => censor::message(m, &self.plot.censored)?,
                Behavior::LieInRecovery => match m {
                    Message::RecoveryAnswer(answer) => {
                        self.stats.recovery_lies += 1;
                        Message::RecoveryAnswer(lie_in_recovery::rewrite(
                            answer,
                            from,
                            self.n,
                            &mut self.rng,
                        ))
                    }
                    m => m,
                },
                Behavior::SkewedClock => match m {
                    Message::PrePrepare(pp) if self.plot.clock_skew_ms < 0 => Message::PrePrepare(
                        skewed_clock::behind(&pp, self.plot.clock_skew_ms.unsigned_abs()),
                    ),
                    m => m,
                },
                Behavior::ForgeProposalView => match m {
                    Message::PrePrepare(pp) => {
                        Message::PrePrepare(forge_proposal_view::rewrite(pp))
                    }
                    m => m,
                },
                Behavior::KeepLostLife => match m {
                    Message::NewView(nv) => {
                        let first_recipient = u32::from(from == 0);
                        if to == first_recipient
                            && keep_lost_life::reuses_lost_life(&nv, |id| {
                                u64::from(self.nodes[id as usize].amnesia)
                            })
                        {
                            self.stats.lost_life_new_views += 1;
                        }
                        Message::NewView(nv)
                    }
                    m => m,
                },
                Behavior::AnnounceLives => {
                    let config = crate::world::replica_config(from, self.n, None);
                    announce_lives::rewrite(m, to, |view| config.primary(view))
                }
                Behavior::ForgeSignature
                | Behavior::Replay
                | Behavior::ChooseViewChanges
                | Behavior::BadTransferSource
                | Behavior::ForgeStatus
                | Behavior::WithholdCommits => m,
            };
        }
        Some(message)
    }

    /// Signs what Byzantine `from` sends, forging the signature now and then.
    pub(crate) fn byzantine_sign(&mut self, from: ReplicaId, message: Message) -> Signed<Message> {
        let signed = crypto::sign(from, message);
        if self.behaves(from, Behavior::ForgeSignature) {
            forge_signature::forge(signed, self.n, &mut self.rng)
        } else {
            signed
        }
    }

    /// What Byzantine `to` lets its replica see of `m` (`None`: dropped), after remembering
    /// what it needs.
    pub(crate) fn admit(&mut self, to: ReplicaId, m: Signed<Message>) -> Option<Signed<Message>> {
        let node = &mut self.nodes[to as usize];
        if node.byzantine.contains(&Behavior::Replay) && m.from != to {
            replay::remember(&mut node.adversary, &m);
        }
        if node.byzantine.contains(&Behavior::DoctorCertificates)
            && let Message::ViewChange(vc) = &m.message
        {
            doctor_certificates::remember(&mut node.adversary, vc);
        }
        if self.nodes[to as usize]
            .byzantine
            .contains(&Behavior::ChooseViewChanges)
            && let Message::ViewChange(vc) = &m.message
        {
            let colluders = self.colluders();
            if !choose_view_changes::admits(to, self.n, m.from, vc, &colluders) {
                return None;
            }
        }
        let node = &mut self.nodes[to as usize];
        let m = if node.byzantine.contains(&Behavior::KeepLostLife) {
            keep_lost_life::admit(&mut node.adversary.incarnations, m)?
        } else {
            m
        };
        if self.nodes[to as usize]
            .byzantine
            .contains(&Behavior::Censor)
        {
            let message = censor::message(m.message, &self.plot.censored)?;
            return Some(Signed { message, ..m });
        }
        Some(m)
    }

    /// Whether Byzantine `to` lets a client's request reach its replica.
    pub(crate) fn admit_request(&self, to: ReplicaId, request: &Request) -> bool {
        !self.behaves(to, Behavior::Censor) || !censor::censored(request, &self.plot.censored)
    }

    /// What Byzantine `id` sends of its own on seeing `m` (a double-voter's extra votes). It
    /// votes on every pre-prepare, and on the votes of honest replicas, not on its colluders'
    /// votes (two double-voters that also make up digests would echo each other without end).
    pub(crate) fn react(&mut self, id: ReplicaId, m: &Signed<Message>) {
        let from_colluder = self
            .nodes
            .get(m.from as usize)
            .is_none_or(|x| !x.is_honest());
        if !self.behaves(id, Behavior::DoubleVote)
            || m.from == id
            || (from_colluder && !matches!(m.message, Message::PrePrepare(_)))
        {
            return;
        }
        let n = self.n;
        let votes = double_vote::votes(id, n, &mut self.nodes[id as usize].adversary, &m.message);
        for vote in votes {
            for to in (0..n).filter(|to| *to != id) {
                if let Some(message) = self.rewrite(id, to, vote.clone()) {
                    let signed = self.byzantine_sign(id, message);
                    self.transmit(id, to, signed);
                }
            }
        }
    }

    /// Byzantine replicas' own initiative each tick: replays and forged status claims.
    pub(crate) fn byzantine_tick(&mut self) {
        for id in 0..self.n {
            if self.nodes[id as usize].is_honest() || !self.nodes[id as usize].is_up() {
                continue;
            }
            if self.behaves(id, Behavior::Replay)
                && self.rng.gen_bool(0.3)
                && let Some(m) = replay::pick(&self.nodes[id as usize].adversary, &mut self.rng)
            {
                let to = self.rng.gen_range(0..self.n);
                if to != id {
                    self.transmit(id, to, m);
                }
            }
            if self.behaves(id, Behavior::ForgeStatus) && self.now.is_multiple_of(20) {
                let head = self.nodes[id as usize].app.head().0;
                let k = crate::world::replica_config(id, self.n, None).checkpoint_interval;
                for claim in forge_status::claims(head, k) {
                    for to in (0..self.n).filter(|to| *to != id) {
                        let signed = crypto::sign(id, claim.clone());
                        self.transmit(id, to, signed);
                    }
                }
            }
        }
    }

    /// A Byzantine state-transfer source's answer to `after`, if it has one.
    pub(crate) fn byzantine_blocks(
        &mut self,
        server: ReplicaId,
        after: SeqNo,
    ) -> Option<Vec<pbft::Committed>> {
        if !self.behaves(server, Behavior::BadTransferSource) {
            return None;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.rng.r#gen());
        Some(bad_transfer_source::answer(
            &self.nodes[server as usize].app,
            after,
            server,
            &mut rng,
        ))
    }
}
