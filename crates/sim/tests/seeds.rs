//! `cargo test -p sim`: a few seeds of every (profile, n) pair, and the planted bugs, which the
//! simulator must catch. The big run is `cargo run --release -p sim -- --seeds 10000`.
use sim::{Profile, RunConfig};

/// Profiles whose adversary finds a pbft bug that is not fixed yet (see crates/sim/FOUND.md):
/// skipped here so that main stays green; remove an entry when its fix lands (the finding's
/// profile must then pass these seeds and the 10,000-seed run).
pub const KNOWN_OPEN: &[(Profile, &str)] = &[];

/// Seeds per (profile, n) pair.
const SEEDS_PER_PAIR: u64 = 12;

fn run_profile(profile: Profile) {
    if let Some((_, finding)) = KNOWN_OPEN.iter().find(|(p, _)| *p == profile) {
        eprintln!("skipped: {profile} is known open ({finding})");
        return;
    }
    // A slow run is some 50,000 ticks (the network stays slow for 30,000 into healing): one
    // seed per size here, the rest in the 10,000-seed run.
    let seeds = if profile == Profile::Slow {
        1
    } else {
        SEEDS_PER_PAIR
    };
    let mut failures = Vec::new();
    for n in sim::SIZES {
        for seed in 0..seeds {
            let cfg = RunConfig::new(n, profile, seed);
            let outcome = sim::run(cfg.clone());
            if let Some(v) = outcome.violation {
                failures.push(format!(
                    "violation: {v}\n  replay: {}",
                    cfg.replay_command()
                ));
            }
            if let Some(l) = outcome.liveness {
                failures.push(format!("liveness: {l}\n  replay: {}", cfg.replay_command()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

macro_rules! profiles {
    ($($name:ident => $profile:expr),* $(,)?) => {
        $(#[test] fn $name() { run_profile($profile); })*
    };
}

profiles! {
    calm => Profile::Calm,
    lossy => Profile::Lossy,
    partition => Profile::Partition,
    crash => Profile::Crash,
    byzantine => Profile::Byzantine,
    mixed => Profile::Mixed,
    double_vote => Profile::DoubleVote,
    new_primary => Profile::NewPrimary,
    substitution => Profile::Substitution,
    transfer => Profile::Transfer,
    flood => Profile::Flood,
    censor => Profile::Censor,
    amnesia => Profile::Amnesia,
    skew => Profile::Skew,
    slow => Profile::Slow,
    new_view_crash => Profile::NewViewCrash,
    block_time => Profile::BlockTime,
}

/// Every profile is tested above (a new one must be added to the list).
#[test]
fn every_profile_is_tested() {
    assert_eq!(Profile::ALL.len(), 17);
}

/// The first seed (over all profiles and sizes) on which the planted bug is caught.
fn first_caught(
    bug: pbft::PlantedBug,
    profiles: &[Profile],
    certificate_check: bool,
    within: u64,
) -> Option<(u64, String)> {
    first_caught_by(bug, profiles, certificate_check, within, "")
}

/// The first seed on which the planted bug is caught by a violation that names `invariant`.
fn first_caught_by(
    bug: pbft::PlantedBug,
    profiles: &[Profile],
    certificate_check: bool,
    within: u64,
    invariant: &str,
) -> Option<(u64, String)> {
    let combos: Vec<(Profile, u32)> = profiles
        .iter()
        .flat_map(|p| sim::SIZES.map(|n| (*p, n)))
        .collect();
    (0..within).find_map(|seed| {
        let (profile, n) = combos[seed as usize % combos.len()];
        let mut cfg = RunConfig::new(n, profile, seed);
        cfg.planted_bug = Some(bug);
        cfg.certificate_check = certificate_check;
        let violation = sim::run(cfg).violation?;
        violation.contains(invariant).then_some((seed, violation))
    })
}

/// Committing after 2f commits yields blocks whose certificate has 2f signatures: the
/// application's certificate check (validity) rejects them.
#[test]
fn planted_bug_commit_with_2f_is_caught() {
    let caught = first_caught(pbft::PlantedBug::CommitWithTwoF, &Profile::ALL, true, 300);
    let (seed, violation) = caught.expect("the simulator must catch the 2f-commit bug");
    assert!(
        violation.contains("certificate"),
        "seed {seed}: {violation}"
    );
}

/// With the certificate-size check off, double-voting colluders (an equivocating primary,
/// double-voters that send their prepares to f honest replicas only, a new primary that picks
/// the view-changes without certificates) make f honest replicas commit on 2f commits what the
/// others never prepared, and the next view re-assigns it: agreement must catch the fork (on
/// some seeds an honest replica's alarm at the conflicting new-view comes first).
#[test]
fn planted_bug_commit_with_2f_is_caught_by_agreement_without_certificate_check() {
    let caught = first_caught_by(
        pbft::PlantedBug::CommitWithTwoF,
        &[Profile::DoubleVote],
        false,
        400,
        "agreement",
    );
    let (seed, violation) = caught.expect("double-voting colluders must expose the 2f-commit bug");
    assert!(violation.contains("agreement"), "seed {seed}: {violation}");
}

/// View-changes without prepared certificates let a new primary re-assign committed sequence
/// numbers: two honest replicas execute different blocks at one height (agreement).
#[test]
fn planted_bug_forgotten_prepared_certificates_is_caught() {
    let caught = first_caught(
        pbft::PlantedBug::ForgetPreparedOnViewChange,
        &Profile::ALL,
        true,
        300,
    );
    let (seed, violation) = caught.expect("the simulator must catch the forgotten P set");
    assert!(
        violation.contains("agreement")
            || violation.contains("order")
            || violation.contains("checkpoint"),
        "seed {seed}: {violation}"
    );
}

/// Backups that check no block time let a skewed-clock primary's times into the chain: the
/// block-time invariant must catch a time an hour ahead, or one going backwards.
#[test]
fn planted_bug_ignored_block_time_is_caught() {
    let caught = first_caught(
        pbft::PlantedBug::IgnoreBlockTime,
        &[Profile::BlockTime],
        true,
        50,
    );
    let (seed, violation) = caught.expect("the simulator must catch unchecked block times");
    assert!(violation.contains("block time"), "seed {seed}: {violation}");
}

/// Backups that give a view's primary a wait of up to τ after a time pushed to the edge (twice
/// the τ/2 of pbft's crate docs, "Timers") let a censor with a fast clock keep a request
/// waiting past the bound: the no-censorship check must catch it (red team s32 F2).
#[test]
fn planted_bug_owed_wait_too_long_is_caught() {
    assert_censorship_caught(
        pbft::PlantedBug::OwedWaitTooLong,
        Profile::Censor,
        "the simulator must catch a wait of τ given to a censoring primary",
    );
}

/// Finds, within 40 seeds at n = 10, a run of `profile` in which the no-censorship check
/// catches `bug`, and checks that the correct code passes that seed: the bug, not the seed.
fn assert_censorship_caught(bug: pbft::PlantedBug, profile: Profile, expect: &str) {
    let caught = (0..40).find(|seed| {
        let mut cfg = RunConfig::new(10, profile, *seed);
        cfg.planted_bug = Some(bug);
        sim::run(cfg)
            .liveness
            .is_some_and(|l| l.contains("no censorship"))
    });
    let seed = caught.expect(expect);
    let outcome = sim::run(RunConfig::new(10, profile, seed));
    assert_eq!(outcome.liveness, None, "seed {seed} fails without the bug");
    assert_eq!(outcome.violation, None, "seed {seed} fails without the bug");
}

/// Three censors with clocks about τ ahead, replaced in turn at n = 10: each view after the
/// first owes its primary a wait and the first correct primary waits for its clock too, so a
/// request waits well past one owed wait (these seeds of the 10,000-seed run failed a bound of
/// one); the bound of the design's waits, (f − 1) owed waits and the correct primary's, holds.
#[test]
fn censors_with_fast_clocks_in_turn_stay_within_the_design_waits() {
    const ONE_WAIT_BOUND_TICKS: u64 = 3_900;
    for seed in [4224, 4904, 8814] {
        let cfg = RunConfig::new(10, Profile::Censor, seed);
        let outcome = sim::run(cfg.clone());
        assert_eq!(outcome.violation, None, "{}", cfg.replay_command());
        assert_eq!(outcome.liveness, None, "{}", cfg.replay_command());
        assert!(
            outcome.stats.longest_wait_ticks >= ONE_WAIT_BOUND_TICKS,
            "seed {seed}: waited only {} ticks",
            outcome.stats.longest_wait_ticks
        );
    }
}

/// A restart that inherits the block times of logged pre-prepares claiming an older
/// `proposal.view` (red team s35 F1, the first design of the inherited wait) lets a primary
/// with a fast clock that forges that view hold restarted backups' timers for an hour: the
/// no-censorship check must catch it (`block-time`, whose whole consortium restarts in some
/// runs, with `forge-proposal-view` primaries in half).
#[test]
fn planted_bug_inherit_logged_proposals_is_caught() {
    assert_censorship_caught(
        pbft::PlantedBug::InheritLoggedProposals,
        Profile::BlockTime,
        "the simulator must catch a restart inheriting forged proposals",
    );
}
