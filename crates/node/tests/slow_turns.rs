//! Validators whose turns outlast τ (a loaded machine, a slow disk: every block takes longer to
//! apply than the block-time tolerance) keep committing in their view. A proposal is stamped
//! with the clock of the moment it is made and a pre-prepare judged by the clock of its
//! arrival (`Input::Clock`); stamped and judged by the last tick's clock, every backup withheld
//! its prepare, view after view (BENCHMARKS.md, "a stall under load, explained").
#![cfg(feature = "byzantine")]

use std::time::Duration;

use node::Timing;
use node::byzantine::Behaviours;
use node::load::Person;

mod common;

use common::tcp::{self, NAMES, Net, wait_until};

/// τ in this network: short, so that a slow apply outlasts it.
const TOLERANCE_MS: u64 = 300;
/// Each validator's wait before applying a block: longer than τ.
const APPLY_MS: u64 = 2 * TOLERANCE_MS;
/// Transactions submitted at once: several blocks in flight behind each slow apply.
const SUBMITTED: u64 = 32;

#[test]
fn validators_whose_applies_outlast_the_tolerance_commit_without_a_view_change() {
    let timing = Timing {
        // Far above the time the blocks take: a view change here is the withheld prepares'.
        view_change_timeout: Duration::from_secs(30),
        ..tcp::timing()
    };
    let params = ledger::ChainParams {
        block_time_tolerance_ms: TOLERANCE_MS,
        max_batch: u32::try_from(timing.max_batch).unwrap(),
        ..Default::default()
    };
    let mut net = Net::with_params(timing, params);
    net.behaviours = Some(Behaviours {
        slow_apply_ms: APPLY_MS,
        ..Default::default()
    });
    let processes: Vec<_> = (0..NAMES.len() as u32).map(|id| net.start(id)).collect();
    let handle = processes[0].handle();
    processes[0].runtime.block_on(async {
        for _ in 0..SUBMITTED {
            let patient = Person::patient(handle.id());
            let enrollment =
                handle.sign_as_validator(patient.enrollment(&handle.genesis_hash()), Vec::new());
            handle.submit(enrollment).await.unwrap();
        }
    });
    wait_until(
        Duration::from_secs(120),
        "every enrollment to commit",
        || {
            processes
                .iter()
                .all(|p| p.handle().shared().committed_transactions() >= SUBMITTED)
        },
    );
    for process in &processes {
        let status = process.handle().status();
        assert_eq!(
            status.view, 0,
            "{} changed views: its backups withheld their prepares",
            status.name
        );
    }
}
