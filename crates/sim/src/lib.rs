//! A deterministic simulator for the `pbft` replica (test-only; production code never uses it).
//!
//! n replicas run in one thread over a simulated network driven by a seeded ChaCha8 generator,
//! with logical time: every run is reproducible from `(profile, n, seed)`. Signatures are a
//! keyed hash per replica, checked at the harness's edge like the node checks Ed25519, so a
//! forged or missing signature never reaches a replica. Requests are real
//! `ledger::SignedTx`s and digests are the ledger's block hash
//! (`ledger::proposal_digest`); the edge checks the transactions of pre-prepares, forwards and
//! fetched blocks as the node does. State transfer goes over the simulated network.
//!
//! Each run has a chaos phase (the profile's faults: see [`Profile`]; Byzantine behaviours in
//! [`adversary`]) and a healing phase (faults removed except Byzantine replicas, at most f) in
//! which every submitted request must be executed by every honest replica within a bounded
//! number of ticks, while clients keep sending. Safety invariants (`invariants/`) are checked
//! after every step.
pub mod adversary;
pub mod client;
pub mod crypto;
pub mod faults;
pub mod invariants;
pub mod network;
pub mod profile;
pub mod trace;
pub mod transfer;
pub mod world;

pub use adversary::Behavior;
pub use profile::Profile;
pub use world::{Outcome, RunConfig, World};

/// Cluster sizes the default run covers: f = 1 (n = 4, 5, 6), f = 2 (n = 7), f = 3 (n = 10).
pub const SIZES: [u32; 5] = [4, 5, 6, 7, 10];

/// The bugs `--planted-bug` plants (pbft's `planted-bugs` feature), by name.
pub const PLANTED_BUGS: [(&str, pbft::PlantedBug); 5] = [
    ("commit-2f", pbft::PlantedBug::CommitWithTwoF),
    (
        "forget-prepared",
        pbft::PlantedBug::ForgetPreparedOnViewChange,
    ),
    ("ignore-block-time", pbft::PlantedBug::IgnoreBlockTime),
    ("owed-wait-too-long", pbft::PlantedBug::OwedWaitTooLong),
    (
        "inherit-logged-proposals",
        pbft::PlantedBug::InheritLoggedProposals,
    ),
];

/// Runs one simulation.
pub fn run(cfg: RunConfig) -> Outcome {
    World::new(cfg).run()
}
