//! The faults a run's chaos phase injects besides Byzantine replicas: network faults, partitions,
//! crashes (torn steps, all replicas at once), amnesia and clock skew; and the healing that ends
//! them. A crashed or amnesiac replica counts toward f with the Byzantine ones.
use pbft::{Input, Message, Replica, ReplicaId, Restored};
use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::adversary::Behavior;
use crate::network::{Envelope, Link, Packet, with};
use crate::profile::Profile;
use crate::world::{App, World, replica_config};

/// Where a crash tears a step of the replica's.
#[derive(Clone, Copy, Debug)]
pub enum Torn {
    /// After this many actions of its next step.
    After(usize),
    /// In the next step that commits blocks, once its messages went out and before the blocks
    /// are applied (the node applies them last: red team s27).
    BeforeApplies,
    /// In the next step that enters a view, once the first of its two records of the entry
    /// (what the view inherited, then the view) and `more` actions are done (red team s37 F1:
    /// a crash between the two must not lose what the view owes its primary); it restarts
    /// `down_ticks` later, in the view the others are likely still in.
    AtViewEntry { more: usize, down_ticks: u64 },
}

#[derive(Clone, Debug)]
pub enum Event {
    /// Crash now, or in the middle of a later step (`torn`).
    Crash {
        id: ReplicaId,
        torn: Option<Torn>,
    },
    Restart(ReplicaId),
    /// Crash if the replica is still recovering from lost state.
    CrashIfRecovering(ReplicaId),
    /// Every replica crashes at once.
    CrashAll,
    /// A replica crashes and loses its durable records and its ledger; it restarts `down_ticks`
    /// later from genesis, recovering, and is restored from its peers. The replica is `id`, or
    /// (`primary`) the primary of the view the cluster is in, when it is honest and may be
    /// faulty within the budget. `crash_again`: `(after, down)` ticks, it crashes again `after`
    /// ticks after its restart (mid-recovery) and restarts `down` ticks later.
    /// `after_view_change`: wait up to that many ticks for the replica to have a view-change in
    /// flight, and strike then: it reaches only `keep-lost-life` replicas (the rest were still
    /// in its send queue), the red team's scenario for finding 2.
    Amnesia {
        id: ReplicaId,
        primary: bool,
        down_ticks: u64,
        crash_again: Option<(u64, u64)>,
        after_view_change: Option<u64>,
    },
    SetLinks(Vec<(ReplicaId, ReplicaId, Link)>),
    /// Every message takes this many ticks (inclusive range) from now on, into healing.
    SlowNetwork((u64, u64)),
    /// The slow network is fast again; every honest replica must have committed while slow.
    SlowNetworkEnds,
}

/// A replica's clock: `rate.0` ticks every `rate.1` ticks of the world (its timers run fast or
/// slow), and a wall clock ([`Clock::offset_ms`]) off real time by an amount that goes with the
/// rate. The wall clock is real time plus a constant offset, not the count of its ticks: NTP
/// keeps a validator's wall clock within ε of real time however fast its timers run, and a
/// drifting clock would leave the block-time tolerance in a long run.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    pub rate: (u32, u32),
    carry: u32,
}

/// The wall clock's offset (ms) per unit of rate away from 1: rates 1/2, 1, 3/2 and 2 give
/// -200, 0, +200 and +400 ms, a 600 ms spread, well within τ/2 (1 s) with the network delay.
pub const SKEW_MS_PER_RATE: i64 = 400;

/// The largest offset of an honest replica's wall clock from real time (rate 2).
pub const MAX_HONEST_SKEW_MS: u64 = SKEW_MS_PER_RATE as u64;

impl Default for Clock {
    fn default() -> Self {
        Clock {
            rate: (1, 1),
            carry: 0,
        }
    }
}

impl Clock {
    /// How far this replica's wall clock is off real time (ms).
    pub fn offset_ms(&self) -> i64 {
        SKEW_MS_PER_RATE * i64::from(self.rate.0) / i64::from(self.rate.1) - SKEW_MS_PER_RATE
    }

    /// Ticks of this replica during one tick of the world.
    pub fn advance(&mut self) -> u32 {
        self.carry += self.rate.0;
        let ticks = self.carry / self.rate.1;
        self.carry %= self.rate.1;
        ticks
    }
}

impl World {
    /// Draws the chaos phase's faults. `budget` replicas may crash or lose their state at once
    /// (f minus the Byzantine ones).
    pub(crate) fn plan_faults(&mut self, rng: &mut ChaCha8Rng, budget: usize) {
        let profile = self.cfg.profile;
        let chaos = self.cfg.chaos_ticks;
        let n = self.n;
        if profile.network_faults() {
            self.net.loss = rng.gen_range(0.0..0.2);
            self.net.duplicate = rng.gen_range(0.0..0.1);
            self.net.delay = (1, rng.gen_range(2..=12));
        } else if profile == Profile::Skew {
            self.net.loss = rng.gen_range(0.0..0.05);
            self.net.delay = (1, rng.gen_range(2..=6));
        } else if profile != Profile::Calm {
            self.net.delay = (1, rng.gen_range(2..=4));
        }
        if let Some(delay) =
            profile.slow_delay(replica_config(0, n, None).view_change_timeout_ticks)
        {
            self.schedule(rng.gen_range(10..60), Event::SlowNetwork(delay));
        }
        if profile.partitions() {
            self.plan_partitions(rng);
        }
        if let Some(r) = self.plot.isolate {
            let (start, length) = if profile == Profile::Transfer {
                (
                    rng.gen_range(10..50),
                    rng.gen_range(150..=chaos.max(200) - 40),
                )
            } else {
                (rng.gen_range(20..100), rng.gen_range(60..=200))
            };
            self.isolate(r, start, (start + length).min(chaos));
        }
        // Amnesiac replicas count toward f for the whole run: the crash budget is what is left.
        let amnesiac = match profile {
            Profile::Amnesia => budget,
            Profile::Mixed if budget > 0 && rng.gen_bool(0.3) => 1,
            _ => 0,
        };
        if amnesiac > 0 {
            self.plan_amnesia(rng, amnesiac);
        }
        if profile.crashes() && budget > amnesiac {
            self.plan_crashes(rng, budget - amnesiac);
        }
        // The whole consortium restarts (an upgrade, a power cut); in block-time, while honest
        // backups hold prepares withheld for a skewed primary's times.
        if matches!(profile, Profile::Crash | Profile::BlockTime) && rng.gen_bool(0.3) {
            let start = rng.gen_range(1..chaos - 20);
            self.schedule(start, Event::CrashAll);
            for id in 0..n {
                self.schedule(start + rng.gen_range(5..=60), Event::Restart(id));
            }
        }
        // An honest backup crashes as it enters a view, between its records of the entry, and
        // restarts: a view after a pushed time must still owe its primary the wait (red team
        // s37 F1). Down for at most 60 ticks of the chaos phase, beside the f skewed primaries.
        if profile == Profile::BlockTime && rng.gen_bool(0.5) {
            let honest: Vec<ReplicaId> = (0..n)
                .filter(|i| self.nodes[*i as usize].is_honest())
                .collect();
            if let Some(&id) = honest.choose(rng) {
                let torn = Some(Torn::AtViewEntry {
                    more: rng.gen_range(0..2),
                    down_ticks: rng.gen_range(5..=60),
                });
                self.schedule(rng.gen_range(1..chaos / 2), Event::Crash { id, torn });
            }
        }
        if profile.clock_skew() && (profile == Profile::Skew || rng.gen_bool(0.3)) {
            for node in &mut self.nodes {
                node.clock.rate = *[(1, 2), (1, 1), (2, 1), (3, 2)]
                    .choose(rng)
                    .unwrap_or(&(1, 1));
            }
        }
    }

    /// `count` amnesia events, each on one replica (so at most `count` replicas lose their
    /// state). Sometimes view 0's primary is cut off first so that the cluster has moved views
    /// when a replica forgets (its recovery learns a view above its own); an event may hit the
    /// current primary, and a recovering replica may crash again.
    fn plan_amnesia(&mut self, rng: &mut ChaCha8Rng, count: usize) {
        let chaos = self.cfg.chaos_ticks;
        let mut honest: Vec<ReplicaId> = (0..self.n)
            .filter(|i| self.nodes[*i as usize].is_honest())
            .collect();
        honest.shuffle(rng);
        let views_move = rng.gen_bool(0.4);
        let keeper = self
            .nodes
            .iter()
            .any(|x| x.byzantine.contains(&Behavior::KeepLostLife));
        if views_move {
            let start = rng.gen_range(5..20);
            self.isolate(0, start, start + rng.gen_range(80..=140));
        }
        for id in honest.into_iter().take(count) {
            let start = if views_move {
                rng.gen_range(110..chaos - 40)
            } else {
                rng.gen_range(20..chaos - 40)
            };
            let event = Event::Amnesia {
                id,
                primary: rng.gen_bool(0.4),
                down_ticks: rng.gen_range(5..=60),
                crash_again: rng
                    .gen_bool(0.3)
                    .then(|| (rng.gen_range(1..=20), rng.gen_range(5..=40))),
                after_view_change: (keeper && rng.gen_bool(0.5)).then_some(60),
            };
            self.schedule(start, event);
        }
    }

    /// The replica an amnesia event hits: the current primary if asked and allowed (honest,
    /// and faulty already or with room in the budget), else `id`; and whether it is the
    /// primary.
    fn amnesia_target(&self, id: ReplicaId, primary: bool) -> (ReplicaId, bool) {
        let Some(view) = self
            .nodes
            .iter()
            .filter(|x| x.is_honest())
            .filter_map(|x| x.replica.as_ref().map(|r| r.view()))
            .max()
        else {
            return (id, false);
        };
        let p = (view % u64::from(self.n)) as ReplicaId;
        let node = &self.nodes[p as usize];
        let room = self.nodes.iter().filter(|x| x.is_faulty()).count() < self.f;
        if primary && node.is_honest() && (node.is_faulty() || room) {
            (p, true)
        } else {
            (id, id == p)
        }
    }

    /// Whether honest `id`, about to broadcast its new-view, crashes right after sending it
    /// (finding 7), and if so the replicas that miss it: at least one, at most all but one.
    /// Only within the budget; it restarts 20-100 ticks later (and must resend its new-view).
    pub(crate) fn crash_on_new_view(&mut self, id: ReplicaId) -> Option<Vec<ReplicaId>> {
        let faulty = self.nodes.iter().filter(|x| x.is_faulty()).count();
        if self.healing || self.plot.new_view_crashes == 0 || faulty >= self.f {
            return None;
        }
        self.plot.new_view_crashes -= 1;
        let mut others: Vec<ReplicaId> = (0..self.n).filter(|o| *o != id).collect();
        others.shuffle(&mut self.rng);
        let missed = self.rng.gen_range(1..others.len());
        others.truncate(missed);
        let restart = self.now + self.rng.gen_range(20..=100);
        self.schedule(restart, Event::Restart(id));
        self.stats.new_view_crashes += 1;
        self.trace(|| format!("replica {id} will crash after its new-view; {others:?} miss it"));
        Some(others)
    }

    /// Whether honest `id`, having just recorded a stable checkpoint whose block it has not
    /// applied yet, crashes there (the ledger left behind its own stable checkpoint, pbft's
    /// contract item 4). Only within the budget; it restarts 5-60 ticks later.
    pub(crate) fn crash_behind_checkpoint(&mut self, id: ReplicaId) -> bool {
        let faulty = self.nodes.iter().filter(|x| x.is_faulty()).count();
        if self.healing || self.plot.checkpoint_crashes == 0 || faulty >= self.f {
            return false;
        }
        // Unplanned: it must not overlap a fault planned for while it is down, nor a torn
        // crash waiting for its step (red team s30 F1: more than f faulty at once).
        let restart = self.now + self.rng.gen_range(5..=60);
        let planned = self
            .events
            .range(self.now..=restart)
            .flat_map(|(_, e)| e)
            .any(|e| {
                matches!(
                    e,
                    Event::Crash { .. } | Event::CrashAll | Event::Amnesia { .. }
                )
            });
        if planned || self.nodes.iter().any(|x| x.crash_after.is_some()) {
            return false;
        }
        self.plot.checkpoint_crashes -= 1;
        self.schedule(restart, Event::Restart(id));
        self.trace(|| format!("replica {id} crashes before applying its stable checkpoint"));
        true
    }

    fn isolate(&mut self, r: ReplicaId, start: u64, end: u64) {
        let cut: Vec<_> = (0..self.n)
            .filter(|o| *o != r)
            .flat_map(|o| [(r, o), (o, r)])
            .collect();
        self.schedule(start, Event::SetLinks(with(&cut, Link::Cut)));
        self.schedule(end, Event::SetLinks(with(&cut, Link::Open)));
    }

    fn plan_partitions(&mut self, rng: &mut ChaCha8Rng) {
        let chaos = self.cfg.chaos_ticks;
        let n = self.n;
        // Long runs have partitions far longer than the capped view-change timeout.
        let longest = 150.max(chaos * 4 / 5);
        for _ in 0..rng.gen_range(1..=3) {
            let start = rng.gen_range(1..chaos);
            let end = (start + rng.gen_range(20..=longest)).min(chaos);
            match rng.gen_range(0..3) {
                0 => self.isolate(rng.gen_range(0..n), start, end),
                1 => {
                    // Split in two.
                    let mut ids: Vec<ReplicaId> = (0..n).collect();
                    ids.shuffle(rng);
                    let k = rng.gen_range(1..n);
                    let (a, b) = ids.split_at(k as usize);
                    let cut: Vec<_> = a
                        .iter()
                        .flat_map(|x| b.iter().flat_map(move |y| [(*x, *y), (*y, *x)]))
                        .collect();
                    self.schedule(start, Event::SetLinks(with(&cut, Link::Cut)));
                    self.schedule(end, Event::SetLinks(with(&cut, Link::Open)));
                }
                _ => {
                    // Clog random links, restore them one by one in random order.
                    let mut links: Vec<(ReplicaId, ReplicaId)> = (0..n)
                        .flat_map(|x| (0..n).filter(move |y| *y != x).map(move |y| (x, y)))
                        .filter(|_| rng.gen_bool(0.4))
                        .collect();
                    self.schedule(start, Event::SetLinks(with(&links, Link::Clogged)));
                    links.shuffle(rng);
                    for (i, l) in links.iter().enumerate() {
                        let at = (end + i as u64 * rng.gen_range(0..=5)).min(chaos);
                        self.schedule(at, Event::SetLinks(vec![(l.0, l.1, Link::Open)]));
                    }
                }
            }
        }
    }

    /// Up to `budget` honest replicas down at once.
    fn plan_crashes(&mut self, rng: &mut ChaCha8Rng, budget: usize) {
        let chaos = self.cfg.chaos_ticks;
        let honest: Vec<ReplicaId> = (0..self.n)
            .filter(|i| self.nodes[*i as usize].is_honest())
            .collect();
        let mut down_until: Vec<(ReplicaId, u64)> = Vec::new();
        for _ in 0..rng.gen_range(1..=4) {
            let start = rng.gen_range(1..chaos);
            down_until.retain(|(_, end)| *end > start);
            if down_until.len() >= budget {
                continue;
            }
            let candidates: Vec<ReplicaId> = honest
                .iter()
                .copied()
                .filter(|i| !down_until.iter().any(|(d, _)| d == i))
                .collect();
            let Some(&id) = candidates.choose(rng) else {
                continue;
            };
            let end = (start + rng.gen_range(5..=120)).min(chaos).max(start + 1);
            let torn = match rng.gen_range(0..5) {
                0 | 1 => None,
                2 => Some(Torn::After(rng.gen_range(0..4))),
                3 => Some(Torn::BeforeApplies),
                _ => Some(Torn::AtViewEntry {
                    more: rng.gen_range(0..2),
                    down_ticks: end - start,
                }),
            };
            self.schedule(start, Event::Crash { id, torn });
            self.schedule(end, Event::Restart(id));
            down_until.push((id, end));
        }
    }

    /// If `id` has a view-change in flight, loses it on the way to every replica but the
    /// `keep-lost-life` ones (it was still in `id`'s send queue) and returns true.
    fn lose_view_change(&mut self, id: ReplicaId) -> bool {
        let from_id = |e: &Envelope| {
            e.from == id
                && matches!(&e.packet, Packet::Pbft(m) if matches!(m.message, Message::ViewChange(_)))
        };
        if !self.net.in_flight(from_id) {
            return false;
        }
        let keepers: Vec<ReplicaId> = (0..self.n)
            .filter(|x| {
                self.nodes[*x as usize]
                    .byzantine
                    .contains(&Behavior::KeepLostLife)
            })
            .collect();
        self.net
            .lose_in_flight(|e| from_id(e) && !keepers.contains(&e.to));
        self.stats.lost_life_view_changes += 1;
        self.trace(|| format!("replica {id}'s last view-change reaches only {keepers:?}"));
        true
    }

    pub(crate) fn schedule(&mut self, at: u64, event: Event) {
        self.events.entry(at).or_default().push(event);
    }

    pub(crate) fn apply_event(&mut self, e: Event) {
        match e {
            Event::Crash { id, torn } => {
                if !self.nodes[id as usize].is_up() {
                    return;
                }
                match torn {
                    Some(torn) => {
                        self.trace(|| format!("replica {id} will crash mid-step ({torn:?})"));
                        self.nodes[id as usize].crash_after = Some(torn);
                    }
                    None => self.crash(id),
                }
            }
            Event::Restart(id) => {
                if !self.nodes[id as usize].is_up() {
                    self.restart(id);
                } else {
                    self.nodes[id as usize].crash_after = None;
                }
            }
            Event::CrashAll => {
                for id in 0..self.n {
                    if self.nodes[id as usize].is_up() {
                        self.crash(id);
                    }
                }
            }
            Event::Amnesia {
                id,
                primary,
                down_ticks,
                crash_again,
                after_view_change,
            } => {
                let (target, _) = self.amnesia_target(id, primary);
                if let Some(patience) = after_view_change
                    && !self.lose_view_change(target)
                {
                    let after_view_change = patience.checked_sub(1);
                    let event = Event::Amnesia {
                        id,
                        primary,
                        down_ticks,
                        crash_again,
                        after_view_change: after_view_change.filter(|p| *p > 0),
                    };
                    if !self.healing && after_view_change.is_some_and(|p| p > 0) {
                        self.schedule(self.now + 1, event);
                        return;
                    }
                }
                let (id, is_primary) = self.amnesia_target(id, primary);
                self.stats.amnesia_of_primary += u64::from(is_primary);
                if self.nodes[id as usize].is_up() {
                    self.crash(id);
                }
                self.trace(|| format!("replica {id} loses its durable state and its ledger"));
                let node = &mut self.nodes[id as usize];
                node.durable.clear();
                node.app = App::default();
                node.amnesia += 1;
                let restart = self.now + down_ticks;
                self.schedule(restart, Event::Restart(id));
                if let Some((after, down)) = crash_again {
                    self.schedule(restart + after, Event::CrashIfRecovering(id));
                    self.schedule(restart + after + down, Event::Restart(id));
                }
            }
            Event::CrashIfRecovering(id) => {
                let recovering = self.nodes[id as usize]
                    .replica
                    .as_ref()
                    .is_some_and(|r| r.is_recovering());
                if recovering {
                    self.stats.crashes_mid_recovery += 1;
                    self.crash(id);
                }
            }
            Event::SlowNetwork(delay) => {
                self.trace(|| format!("the network slows down to {delay:?} ticks per message"));
                self.net.delay = delay;
                self.slow = Some(delay);
            }
            Event::SlowNetworkEnds => {
                self.trace(|| "the network is fast again".into());
                self.net.delay = (1, 3);
                self.slow_ended = true;
            }
            Event::SetLinks(changes) => {
                let now = self.now;
                self.net.set_links(&mut self.rng, now, &changes);
            }
        }
    }

    pub(crate) fn crash(&mut self, id: ReplicaId) {
        self.trace(|| format!("replica {id} crashes"));
        let node = &mut self.nodes[id as usize];
        node.replica = None;
        node.crash_after = None;
        self.loopback.retain(|(to, _)| *to != id);
    }

    /// Restarts from the ledger head and the durable records, as the node does.
    pub(crate) fn restart(&mut self, id: ReplicaId) {
        // A replica that lost its durable state may have voted before: it restarts recovering
        // (the node knows this from the marker `init` writes beside its key).
        let nonce = self.rng.r#gen::<u64>();
        let now_ms = self.clock_ms(id);
        let others_view = (0..self.n)
            .filter(|o| *o != id)
            .filter_map(|o| self.nodes[o as usize].replica.as_ref().map(|r| r.view()))
            .max()
            .unwrap_or(0);
        let node = &mut self.nodes[id as usize];
        if node.amnesia > 0 && node.durable.is_empty() {
            self.stats.amnesia_restarts += 1;
            if others_view > 0 {
                self.stats.amnesia_behind_view += 1;
            }
        }
        let restored = Restored {
            last_executed: node.app.head(),
            executed_checkpoint: node
                .app
                .last_checkpoint(replica_config(id, self.n, None).checkpoint_interval),
            head_time_ms: node.app.head_time_ms(),
            now_ms,
            durable: node.durable.clone(),
            recovering: node.amnesia > 0 && node.durable.is_empty(),
            nonce,
            // A life after amnesia is a new incarnation (the node counts every start; a plain
            // restart that keeps its records may keep its incarnation).
            incarnation: u64::from(node.amnesia),
        };
        let replica = Replica::new(replica_config(id, self.n, self.cfg.planted_bug), restored);
        // As the node's `resume_pending`: the restored slots' requests its ledger does not hold
        // are handed back, so that every restarted replica waits on them (red team s39 F1).
        let resumed: Vec<_> = replica
            .restored_requests()
            .into_iter()
            .filter(|r| !node.app.applied_set.contains(&r.id))
            .collect();
        node.replica = Some(replica);
        self.trace(|| format!("replica {id} restarts, resubmits {}", resumed.len()));
        for request in resumed {
            self.step_node(id, Input::Request(request));
        }
        self.drain_loopback();
    }

    /// Healing: every fault stops except Byzantine replicas and clock skew.
    pub(crate) fn heal(&mut self) {
        self.trace(|| "healing: faults removed".into());
        self.healing = true;
        self.healed_at = self.now;
        self.events.clear();
        let now = self.now;
        self.net.heal(&mut self.rng, now);
        // A slow network stays slow into healing: only a timeout that grows without a cap
        // outlasts it.
        self.executed_at_healing = self.nodes.iter().map(|x| x.app.blocks.len()).collect();
        if let Some(delay) = self.slow {
            self.net.delay = delay;
            self.schedule(
                now + crate::world::SLOW_HEALING_TICKS,
                Event::SlowNetworkEnds,
            );
        }
        for id in 0..self.n {
            // A torn crash still waiting for its step is a fault too.
            self.nodes[id as usize].crash_after = None;
            if !self.nodes[id as usize].is_up() {
                self.restart(id);
            }
        }
    }
}
