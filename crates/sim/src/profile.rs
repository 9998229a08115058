//! Fault profiles: what the network and the replicas do to the protocol during a run's chaos
//! phase. Each run draws its concrete faults from its seed; at most f replicas are faulty at
//! once (Byzantine, crashed or amnesiac), unless a profile says otherwise (`crash` also crashes
//! every replica at once, which costs liveness only while they are down).
use std::fmt;
use std::str::FromStr;

/// A family of faults. Every run ends with a healing phase in which all of them stop except
/// Byzantine replicas (at most f), which keep misbehaving, and clock skew.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Profile {
    Calm,
    Lossy,
    Partition,
    Crash,
    Byzantine,
    Mixed,
    DoubleVote,
    NewPrimary,
    Substitution,
    Transfer,
    Flood,
    Censor,
    Amnesia,
    Skew,
    Slow,
    NewViewCrash,
    BlockTime,
}

impl Profile {
    pub const ALL: [Profile; 17] = [
        Profile::Calm,
        Profile::Lossy,
        Profile::Partition,
        Profile::Crash,
        Profile::Byzantine,
        Profile::Mixed,
        Profile::DoubleVote,
        Profile::NewPrimary,
        Profile::Substitution,
        Profile::Transfer,
        Profile::Flood,
        Profile::Censor,
        Profile::Amnesia,
        Profile::Skew,
        Profile::Slow,
        Profile::NewViewCrash,
        Profile::BlockTime,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Profile::Calm => "calm",
            Profile::Lossy => "lossy",
            Profile::Partition => "partition",
            Profile::Crash => "crash",
            Profile::Byzantine => "byzantine",
            Profile::Mixed => "mixed",
            Profile::DoubleVote => "double-vote",
            Profile::NewPrimary => "new-primary",
            Profile::Substitution => "substitution",
            Profile::Transfer => "transfer",
            Profile::Flood => "flood",
            Profile::Censor => "censor",
            Profile::Amnesia => "amnesia",
            Profile::Skew => "skew",
            Profile::Slow => "slow",
            Profile::NewViewCrash => "new-view-crash",
            Profile::BlockTime => "block-time",
        }
    }

    /// One line for `sim --help`: who is faulty and how (behaviour names as in the list of
    /// behaviours).
    pub fn describe(self) -> &'static str {
        match self {
            Profile::Calm => "no faults: the baseline",
            Profile::Lossy => "message loss, delay, duplication and reordering",
            Profile::Partition => {
                "one replica isolated, the network split in two, links clogged and restored in random order"
            }
            Profile::Crash => {
                "up to f replicas crash (some mid-step) and restart from their durable records; sometimes all crash at once"
            }
            Profile::Byzantine => {
                "f replicas with 1-3 of equivocate, silent, wrong-digest, forge-signature, stale-view, replay, hide-prepared"
            }
            Profile::Mixed => {
                "lossy + partition + crash + amnesia + skew, and 0..f replicas with 1-3 of every behaviour below; at most f faulty"
            }
            Profile::DoubleVote => {
                "double-vote alone (f = 1), or f colluders: an equivocating primary, double-voters targeting f honest replicas, a new primary that chooses view-changes"
            }
            Profile::NewPrimary => {
                "the primary of view 1 chooses view-changes, doctors certificates and announces new lives to veto later new-views; view 0's primary equivocates or is silent and withholds commits (or is cut off, f = 1)"
            }
            Profile::Substitution => {
                "the primary of view 0 substitutes payloads (view-changes, pre-prepares) and withholds commits; with f >= 2 the next primary colludes"
            }
            Profile::Transfer => {
                "f bad state-transfer sources forging status claims, an honest replica cut off long enough to need state transfer"
            }
            Profile::Flood => "the first f primaries send oversized batches of duplicate requests",
            Profile::Censor => {
                "the first f primaries censor one patient's transactions while clients keep sending others; half the runs their clocks are skewed too (as in block-time)"
            }
            Profile::Amnesia => {
                "f replicas lose their durable state and ledger (sometimes the primary, after views moved, or crashing again mid-recovery) and are restored from peers; with f >= 2 view 0's primary equivocates, or view 1's keeps lost lives' view-changes (and amnesia often strikes right after a view-change that reached only it); either lies in recovery answers"
            }
            Profile::Skew => {
                "replicas' timers tick at 1/2, 1, 2 or 3/2 the rate and their wall clocks are off by -200, 0, +400 or +200 ms, light network faults"
            }
            Profile::Slow => {
                "every message takes 33-36 T (T: the view-change timeout; the old cap was 32 T) from early in the chaos phase through healing: views change until the doubled timeout covers the delay (finding 8)"
            }
            Profile::NewViewCrash => {
                "view 0's primary cut off; each new primary (up to f) crashes right after sending its new-view, which some replicas miss, and restarts later (finding 7)"
            }
            Profile::BlockTime => {
                "the first f primaries have a skewed-clock (an hour or about τ ahead, or proposing as far behind), half the runs with forge-proposal-view; clocks skewed as in skew 30% of the time; the whole consortium crashes and restarts in 30% of the runs; an honest replica crashes as it enters a view, between its two records of the entry, in half"
            }
        }
    }

    pub fn network_faults(self) -> bool {
        matches!(self, Profile::Lossy | Profile::Mixed)
    }
    pub fn partitions(self) -> bool {
        matches!(self, Profile::Partition | Profile::Mixed)
    }
    pub fn crashes(self) -> bool {
        matches!(self, Profile::Crash | Profile::Mixed)
    }
    /// The slow network's delay in ticks for view-change timeout `t` (above the old cap of
    /// 32 t), or `None`.
    pub fn slow_delay(self, t: u64) -> Option<(u64, u64)> {
        (self == Profile::Slow).then_some((33 * t, 36 * t))
    }
    pub fn clock_skew(self) -> bool {
        matches!(self, Profile::Skew | Profile::Mixed | Profile::BlockTime)
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Profile::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("unknown profile {s:?}"))
    }
}
