//! Fault profiles: what the network and the replicas do to the protocol during a run's chaos
//! phase. Each run draws its concrete faults from its seed.
use std::fmt;
use std::str::FromStr;

/// A family of faults. Every run ends with a healing phase in which all of them stop except
/// Byzantine replicas (at most f), which keep misbehaving.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Profile {
    /// No faults: the baseline.
    Calm,
    /// Message loss, delay, duplication and reordering.
    Lossy,
    /// One replica isolated, the network split in two, links clogged and restored in random
    /// order.
    Partition,
    /// Up to f replicas crash (some in the middle of executing a step's actions) and restart
    /// from their durable records and executed chain.
    Crash,
    /// Up to f Byzantine replicas: equivocating or silent primary, wrong digests, forged or
    /// missing signatures, stale views, replayed messages, hidden prepared certificates.
    Byzantine,
    /// All of the above at once, with at most f replicas crashed or Byzantine in total.
    Mixed,
}

impl Profile {
    pub const ALL: [Profile; 6] = [
        Profile::Calm,
        Profile::Lossy,
        Profile::Partition,
        Profile::Crash,
        Profile::Byzantine,
        Profile::Mixed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Profile::Calm => "calm",
            Profile::Lossy => "lossy",
            Profile::Partition => "partition",
            Profile::Crash => "crash",
            Profile::Byzantine => "byzantine",
            Profile::Mixed => "mixed",
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
    pub fn byzantine(self) -> bool {
        matches!(self, Profile::Byzantine | Profile::Mixed)
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

/// How a Byzantine replica misbehaves (it runs the honest code; the harness rewrites what it
/// sends).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Behavior {
    /// As primary, sends a different (validly signed) pre-prepare for the same sequence number
    /// to half of the backups.
    Equivocate,
    /// Sends nothing at all (as a primary: a silent primary).
    Silent,
    /// Votes and checkpoints carry a random digest.
    WrongDigest,
    /// Signs with a wrong key, claims to be another replica, or sends no signature.
    ForgeSignature,
    /// Re-labels its messages with an older view.
    StaleView,
    /// Re-sends old messages it received from others (valid signatures).
    Replay,
    /// Sends view-changes without its prepared certificates.
    HidePrepared,
}

impl Behavior {
    pub const ALL: [Behavior; 7] = [
        Behavior::Equivocate,
        Behavior::Silent,
        Behavior::WrongDigest,
        Behavior::ForgeSignature,
        Behavior::StaleView,
        Behavior::Replay,
        Behavior::HidePrepared,
    ];
}
