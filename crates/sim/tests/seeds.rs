//! `cargo test -p sim`: 300 seeds per fault profile (200 with n = 4, 100 with n = 7), and the
//! planted bugs, which the simulator must catch within a few hundred seeds.
use sim::{Profile, RunConfig};

fn run_profile(profile: Profile) {
    let mut failures = Vec::new();
    for seed in 0..300u64 {
        let n = if seed % 3 == 2 { 7 } else { 4 };
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
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn calm() {
    run_profile(Profile::Calm);
}
#[test]
fn lossy() {
    run_profile(Profile::Lossy);
}
#[test]
fn partition() {
    run_profile(Profile::Partition);
}
#[test]
fn crash() {
    run_profile(Profile::Crash);
}
#[test]
fn byzantine() {
    run_profile(Profile::Byzantine);
}
#[test]
fn mixed() {
    run_profile(Profile::Mixed);
}

/// The first seed (over all profiles and both sizes) on which the planted bug is caught.
fn first_caught(bug: pbft::PlantedBug, within: u64) -> Option<(u64, String)> {
    let combos: Vec<(Profile, u32)> = Profile::ALL
        .iter()
        .flat_map(|p| [(*p, 4), (*p, 7)])
        .collect();
    (0..within).find_map(|seed| {
        let (profile, n) = combos[seed as usize % combos.len()];
        let mut cfg = RunConfig::new(n, profile, seed);
        cfg.planted_bug = Some(bug);
        sim::run(cfg).violation.map(|v| (seed, v))
    })
}

/// Committing after 2f commits yields blocks whose certificate has 2f signatures: the
/// application's certificate check (validity) rejects them.
#[test]
fn planted_bug_commit_with_2f_is_caught() {
    let caught = first_caught(pbft::PlantedBug::CommitWithTwoF, 300);
    let (seed, violation) = caught.expect("the simulator must catch the 2f-commit bug");
    assert!(
        violation.contains("certificate"),
        "seed {seed}: {violation}"
    );
}

/// View-changes without prepared certificates let a new primary re-assign committed sequence
/// numbers: two honest replicas execute different blocks at one height (agreement).
#[test]
fn planted_bug_forgotten_prepared_certificates_is_caught() {
    let caught = first_caught(pbft::PlantedBug::ForgetPreparedOnViewChange, 300);
    let (seed, violation) = caught.expect("the simulator must catch the forgotten P set");
    assert!(
        violation.contains("agreement")
            || violation.contains("order")
            || violation.contains("checkpoint"),
        "seed {seed}: {violation}"
    );
}
