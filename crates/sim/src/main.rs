//! `cargo run --release -p sim -- --seeds 10000`: runs seeds over every fault profile and every
//! cluster size in `sim::SIZES` (seed i runs combination i mod the number of combinations, so
//! 10,000 seeds give each of the 80 (profile, n) pairs at least 100), shows progress, and prints
//! the command that replays each failing seed with a trace. `--long` runs long chaos phases.
use std::process::ExitCode;
use std::time::Instant;

use clap::{CommandFactory, FromArgMatches, Parser};
use indicatif::{ProgressBar, ProgressStyle};
use sim::{Behavior, Profile, RunConfig};

#[derive(Parser, Debug)]
#[command(about = "Deterministic simulation of the medchain PBFT replica")]
struct Args {
    /// Number of seeds (runs) in total.
    #[arg(long, default_value_t = 1000)]
    seeds: u64,
    /// Only this fault profile (see the list below).
    #[arg(long)]
    profile: Option<Profile>,
    /// Only this cluster size (default: 4, 5, 6, 7 and 10).
    #[arg(long, value_parser = clap::value_parser!(u32).range(4..=16))]
    n: Option<u32>,
    /// Run exactly this seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Long chaos phases (1,500 ticks instead of 300; partitions up to 1,200 ticks).
    #[arg(long)]
    long: bool,
    /// Print every step of the run (use with --seed).
    #[arg(long)]
    trace: bool,
    /// Plant a bug to see the simulator catch it: "commit-2f", "forget-prepared",
    /// "ignore-block-time", "owed-wait-too-long" or "inherit-logged-proposals".
    #[arg(long)]
    planted_bug: Option<String>,
    /// Turn off the application's check of each block's certificate size, so that only the
    /// protocol's agreement stands between a weakened quorum and a fork.
    #[arg(long)]
    no_certificate_check: bool,
}

/// The profiles and behaviours, for `--help`.
fn coverage() -> String {
    let mut text = String::from("Fault profiles (--profile):\n");
    for p in Profile::ALL {
        text.push_str(&format!("  {:<13} {}\n", p.name(), p.describe()));
    }
    text.push_str("\nByzantine behaviours (each in crates/sim/src/adversary/):\n");
    for b in Behavior::ALL {
        text.push_str(&format!("  {:<20} {}\n", b.name(), b.describe()));
    }
    text.push_str(
        "\nAt most f replicas are faulty at once (Byzantine, crashed or amnesiac). Invariants:\n  \
         agreement, total order, validity, exact payload, bounded batches, checkpoint agreement,\n  \
         bounded log, honest votes, no alarms, justified recovery, block time (increasing, and within τ + the\n  \
         largest honest clock skew of when an honest replica accepted it); liveness: every request executed after\n  \
         healing, and within the censorship bound while clients keep sending. A tick is 1 ms of real time.",
    );
    text
}

fn main() -> ExitCode {
    let command = Args::command().after_help(coverage());
    let args = match Args::from_arg_matches(&command.get_matches()) {
        Ok(args) => args,
        Err(e) => e.exit(),
    };
    let profiles: Vec<Profile> = args.profile.map_or(Profile::ALL.to_vec(), |p| vec![p]);
    let sizes: Vec<u32> = args.n.map_or(sim::SIZES.to_vec(), |n| vec![n]);
    let combos: Vec<(Profile, u32)> = profiles
        .iter()
        .flat_map(|p| sizes.iter().map(move |n| (*p, *n)))
        .collect();
    let planted_bug = match args.planted_bug.as_deref() {
        None => None,
        Some(name) => match sim::PLANTED_BUGS.iter().find(|(n, _)| *n == name) {
            Some((_, bug)) => Some(*bug),
            None => {
                eprintln!("unknown planted bug {name:?}");
                return ExitCode::FAILURE;
            }
        },
    };
    let seeds: Vec<u64> = match args.seed {
        Some(s) => vec![s],
        None => (0..args.seeds).collect(),
    };
    let bar = ProgressBar::new(seeds.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} seeds, {msg} [{elapsed} / eta {eta}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    if args.trace {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let start = Instant::now();
    let (mut violations, mut liveness) = (0u64, 0u64);
    let mut totals = sim::world::Stats::default();
    let mut runs_with_view_change = 0u64;
    let mut runs_with_transfer = 0u64;
    let mut failures = Vec::new();
    // The run that came closest to the censorship bound: (headroom, waited, bound, replay).
    let mut closest: Option<(i64, u64, u64, String)> = None;
    for (i, seed) in seeds.iter().enumerate() {
        let (profile, n) = combos[i % combos.len()];
        let mut cfg = RunConfig::new(n, profile, *seed);
        if args.long {
            cfg = cfg.long();
        }
        cfg.trace = args.trace;
        cfg.planted_bug = planted_bug;
        cfg.certificate_check = !args.no_certificate_check;
        let outcome = sim::run(cfg.clone());
        let s = &outcome.stats;
        totals.executed_blocks += s.executed_blocks;
        totals.state_transfers += s.state_transfers;
        totals.bad_signatures += s.bad_signatures;
        totals.bad_requests += s.bad_requests;
        totals.bad_blocks += s.bad_blocks;
        totals.protocol_errors += s.protocol_errors;
        totals.delivered += s.delivered;
        totals.dropped += s.dropped;
        totals.ticks += s.ticks;
        totals.amnesia_restarts += s.amnesia_restarts;
        totals.amnesia_behind_view += s.amnesia_behind_view;
        totals.amnesia_of_primary += s.amnesia_of_primary;
        totals.crashes_mid_recovery += s.crashes_mid_recovery;
        totals.new_view_crashes += s.new_view_crashes;
        totals.recovery_lies += s.recovery_lies;
        totals.new_views_read_back += s.new_views_read_back;
        totals.answers_paced += s.answers_paced;
        totals.new_views_unreadable += s.new_views_unreadable;
        totals.withheld_prepares += s.withheld_prepares;
        totals.block_time_refusals += s.block_time_refusals;
        totals.lost_life_view_changes += s.lost_life_view_changes;
        totals.lost_life_new_views += s.lost_life_new_views;
        totals.crashes_before_applies += s.crashes_before_applies;
        totals.crashes_behind_own_checkpoint += s.crashes_behind_own_checkpoint;
        totals.crashes_at_view_entry += s.crashes_at_view_entry;
        let headroom = s.censorship_bound_ticks as i64 - s.longest_wait_ticks as i64;
        if closest.as_ref().is_none_or(|c| headroom < c.0) {
            closest = Some((
                headroom,
                s.longest_wait_ticks,
                s.censorship_bound_ticks,
                format!("{profile} n={n} seed={seed}"),
            ));
        }
        runs_with_view_change += u64::from(s.max_view > 0);
        runs_with_transfer += u64::from(s.state_transfers > 0);
        if let Some(v) = &outcome.violation {
            violations += 1;
            failures.push(format!(
                "VIOLATION {profile} n={n} seed={seed}: {v}\n  replay: {}",
                cfg.replay_command()
            ));
        }
        if let Some(l) = &outcome.liveness {
            liveness += 1;
            failures.push(format!(
                "LIVENESS {profile} n={n} seed={seed}: {l}\n  replay: {}",
                cfg.replay_command()
            ));
        }
        if args.trace || args.seed.is_some() {
            eprintln!("{outcome:?}");
        }
        bar.set_message(format!(
            "{violations} violations, {liveness} liveness failures"
        ));
        bar.inc(1);
    }
    bar.finish_and_clear();
    for f in &failures {
        println!("{f}");
    }
    println!(
        "runs with a view change: {runs_with_view_change}, with a state transfer: \
         {runs_with_transfer}; blocks executed: {}, messages delivered: {}, dropped: {}, \
         bad signatures rejected at the edge: {}, bad transactions rejected at the edge: {}, \
         fetched blocks refused: {}, protocol errors: {}, ticks: {}",
        totals.executed_blocks,
        totals.delivered,
        totals.dropped,
        totals.bad_signatures,
        totals.bad_requests,
        totals.bad_blocks,
        totals.protocol_errors,
        totals.ticks
    );
    println!(
        "new-views read back from their bytes: {}; unreadable (a Byzantine sender's), dropped: {}; stale view-changes and recovery queries left unanswered as too soon after the last answer: {}",
        totals.new_views_read_back, totals.new_views_unreadable, totals.answers_paced
    );
    println!(
        "amnesiac restarts: {} ({} behind the others' view; amnesia of the primary: {}; crashes mid-recovery: {}; lying recovery answers: {}; right after a view-change only a keep-lost-life replica got: {}; new-views reusing a lost life's view-change: {}); new primaries crashed after their new-view: {}",
        totals.amnesia_restarts,
        totals.amnesia_behind_view,
        totals.amnesia_of_primary,
        totals.crashes_mid_recovery,
        totals.recovery_lies,
        totals.lost_life_view_changes,
        totals.lost_life_new_views,
        totals.new_view_crashes
    );
    println!(
        "block time: prepares withheld by honest replicas for a time more than τ from their \
         clocks: {}; pre-prepares refused for a time not later than the one before: {}",
        totals.withheld_prepares, totals.block_time_refusals
    );
    println!(
        "crashes mid-step before the step's committed blocks were applied: {} ({} left the \
         ledger behind the replica's own stable checkpoint); as a view was entered, between or \
         after its records: {}",
        totals.crashes_before_applies,
        totals.crashes_behind_own_checkpoint,
        totals.crashes_at_view_entry
    );
    if let Some((_, waited, bound, run)) = &closest {
        println!(
            "censorship: the longest wait after healing came closest to its bound in {run}: \
             {waited} of {bound} ticks"
        );
    }
    println!("elapsed: {:.1}s", start.elapsed().as_secs_f64());
    println!(
        "{} seeds, {violations} violations, {liveness} liveness failures",
        seeds.len()
    );
    if violations + liveness > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
