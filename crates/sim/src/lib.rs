//! A deterministic simulator for the `pbft` replica (test-only; production code never uses it).
//!
//! n replicas run in one thread over a simulated network driven by a seeded ChaCha8 generator,
//! with logical time: every run is reproducible from `(profile, n, seed)`. Signatures are a
//! keyed hash per replica, checked at the harness's edge like the node checks Ed25519, so a
//! forged or missing signature never reaches a replica. Digests are SHA-256 of the borsh
//! proposal (the ledger is not involved).
//!
//! Each run has a chaos phase (the profile's faults: see [`Profile`]) and a healing phase
//! (faults removed except Byzantine replicas, at most f) in which every submitted request must
//! be executed by every honest replica within a bounded number of ticks. Safety invariants
//! (`invariants/`) are checked after every step.
pub mod crypto;
pub mod invariants;
pub mod profile;
pub mod world;

pub use profile::{Behavior, Profile};
pub use world::{Outcome, RunConfig, World};

/// Runs one simulation.
pub fn run(cfg: RunConfig) -> Outcome {
    World::new(cfg).run()
}
