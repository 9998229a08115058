//! Red team s27 on 06ada8d1, 94112868 and e4d0fd79 (the clock before every input; a
//! pre-prepare judged by the clock of its arrival; a pass's blocks applied after its sends; a
//! stable checkpoint's record not held for them; a checkpoint vote held for them).
//!
//! See /work/helpers/rt-s27.md for the findings and what held.

mod common;

use std::time::Duration;

use common::world::{WAIT, World, wait_until};
use common::{copy_dir, enrollment};
use node::{EMBEDDED_VALIDATORS, validator_dir};
use pbft::ReplicaId;

/// Checkpoint interval of `fast_timing`.
const K: u64 = 8;

fn head(world: &World, id: ReplicaId) -> u64 {
    world.node(id).status().height
}

/// 94112868 (pbft contract item 4): "a stable-checkpoint record may become durable before its
/// block is applied: restarted after a crash in between, the replica finds its ledger behind
/// its own stable checkpoint and fetches up to it". Tested in pbft only; here the node: the
/// crash image is chain.db (and keys.db) of the moment before block `s` was applied, with the
/// node.db (and incarnation marker) of a moment after checkpoint `s` became stable. The
/// validator must come back, fetch `s`, agree with the others and go on committing.
fn ledger_behind_its_own_stable_checkpoint_after_a_crash(victim: ReplicaId) {
    let mut world = World::new();
    let data_dir = world.cluster.data_dir().to_path_buf();
    let dir = validator_dir(&data_dir, EMBEDDED_VALIDATORS[victim as usize]);
    let scratch = tempfile::tempdir().unwrap();
    let submitter: ReplicaId = if victim == 0 { 1 } else { 0 };
    // Up to one block below a checkpoint.
    while head(&world, submitter) % K != K - 1 {
        world.applied(submitter, enrollment(&world.node(submitter)));
    }
    let s = head(&world, submitter) + 1;
    assert!(world.cluster.converge(WAIT));
    world.cluster.stop(victim);
    let before = scratch.path().join("before");
    copy_dir(&dir, &before);

    world.cluster.restart(victim).unwrap();
    let height = world.applied_at(submitter, enrollment(&world.node(submitter)));
    assert_eq!(height, s, "one block, the checkpoint's");
    world.settle();
    wait_until("the victim to hold checkpoint s stable", || {
        world.node(victim).status().reported_checkpoint >= s
    });
    assert!(world.cluster.converge(WAIT));
    world.cluster.stop(victim);
    let after = scratch.path().join("after");
    copy_dir(&dir, &after);

    // The crash image: chain.db and keys.db without block s, node.db with checkpoint s stable.
    std::fs::remove_dir_all(&dir).unwrap();
    copy_dir(&before, &dir);
    for name in ["node.db", "node.db-wal", "node.db-shm", node::MARKER_FILE] {
        let _ = std::fs::remove_file(dir.join(name));
        if after.join(name).exists() {
            std::fs::copy(after.join(name), dir.join(name)).unwrap();
        }
    }
    {
        let reader = ledger::store::Reader::open(&dir.join("chain.db")).unwrap();
        assert_eq!(
            reader.head().unwrap().0,
            s - 1,
            "the image's ledger is one behind"
        );
    }

    let view = world.node(submitter).status().view;
    world.cluster.restart(victim).unwrap();
    // The others go on; the victim must catch up and stay in.
    for _ in 0..(2 * K) {
        world.applied(submitter, enrollment(&world.node(submitter)));
    }
    let target = head(&world, submitter);
    let victim_handle = world.node(victim);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while victim_handle.status().height < target && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = victim_handle.status();
    assert_eq!(status.failed, None, "the victim stopped");
    assert!(
        status.height >= target,
        "the victim restarted behind its own stable checkpoint did not catch up: at {} of {target} \
         (recovering: {})",
        status.height,
        status.recovering
    );
    assert!(world.cluster.converge(WAIT));
    let hashes: Vec<_> = world
        .cluster
        .handles()
        .iter()
        .map(|h| h.read(|chain| chain.head()).unwrap())
        .collect();
    assert!(
        hashes.windows(2).all(|w| w[0] == w[1]),
        "heads differ: {hashes:?}"
    );
    // In the same view: a restarted primary proposes after its stable checkpoint, not at it
    // again (red team s28 F1: every backup refused that until the view changed).
    assert_eq!(
        world.node(submitter).status().view,
        view,
        "the view changed"
    );
    // And it votes again: a block commits with the victim's help while one other is down.
    let other = (0..4).find(|id| *id != victim && *id != submitter).unwrap();
    world.cluster.stop(other);
    let height = world.applied_at(submitter, enrollment(&world.node(submitter)));
    assert!(height > target);
}

#[test]
fn a_backup_restarted_with_its_ledger_behind_its_own_stable_checkpoint_catches_up() {
    ledger_behind_its_own_stable_checkpoint_after_a_crash(3);
}

#[test]
fn a_primary_restarted_with_its_ledger_behind_its_own_stable_checkpoint_catches_up() {
    ledger_behind_its_own_stable_checkpoint_after_a_crash(0);
}

/// Where the genuine crash test is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    /// Every frame to the victim is held back (recorded, not delivered).
    Hold,
    /// The test asked: at the victim's next send, its held frames go to its inbox at once.
    Release,
    /// Released: the victim's prepare for `s + 1` is the crash point.
    Armed,
    /// Crashed: nothing to or from the victim.
    Crashed,
}

/// F1 at the node, with a genuine crash image. The victim (a backup) gets, in one turn, the
/// commits of block `s` (a checkpoint), the other three's checkpoint votes for `s` and the
/// primary's pre-prepare for `s + 1`: its pass executes `s` (held), makes `s` stable, persists
/// the pre-prepare and sends its prepare for `s + 1` — and the process dies there, before
/// `apply_all` (the image is copied on its own thread at that send, as `kill -9` would leave
/// it). One other validator is down, so `s + 1` needs the victim. Restarted, the victim fetches
/// `s` (pbft contract item 4) but has abandoned its slot `s + 1` (prev = block `s`, checked
/// against its ledger head `s - 1`), so it never prepares or commits it: the cluster commits
/// nothing until the view-change timeout.
#[test]
fn a_crash_between_a_stable_checkpoint_and_its_apply_does_not_stall_the_next_block() {
    crash_between_a_stable_checkpoint_and_its_apply(None, Duration::ZERO);
}

/// The same on the system clock, restarted 3 s after the crash (a process manager's restart):
/// besides F1, the restarted backup marked its restored pre-prepare of `s + 1` withheld (its
/// block time was then more than τ from the restart's clock) and so never prepared or committed
/// it, although it had prepared it before the crash (red team s27 O1). Its log now tells a sent
/// prepare from a withheld one (`pbft::Durable::Withheld`), and it resends what it sent.
#[test]
fn a_crash_between_a_stable_checkpoint_and_its_apply_on_the_system_clock() {
    crash_between_a_stable_checkpoint_and_its_apply(
        Some(node::Clock::System),
        Duration::from_secs(3),
    );
}

fn crash_between_a_stable_checkpoint_and_its_apply(
    clock: Option<node::Clock>,
    restart_delay: Duration,
) {
    use std::sync::{Arc, Mutex};

    use node::{Frame, Wire};
    use pbft::Message;

    const VICTIM: ReplicaId = 3;
    const DOWN: ReplicaId = 2;
    let timing = node::Timing {
        // Long: a view change inside the test's wait is F1's, and none comes before it.
        view_change_timeout: Duration::from_secs(30),
        ..common::fast_timing()
    };
    let mut world = match clock {
        None => World::with_timing(timing),
        Some(clock) => {
            let rt = common::runtime();
            let dir = common::data_dir();
            let cluster = node::Cluster::start(node::ClusterOptions {
                clock: clock.clone(),
                ..node::ClusterOptions::new(dir.path(), timing)
            })
            .unwrap();
            World {
                dir,
                cluster,
                rt,
                clock,
                seen: Default::default(),
            }
        }
    };
    let data_dir = world.cluster.data_dir().to_path_buf();
    let dir = validator_dir(&data_dir, EMBEDDED_VALIDATORS[VICTIM as usize]);
    let scratch = tempfile::tempdir().unwrap();
    let image = scratch.path().join("image");
    while head(&world, 0) % K != K - 1 {
        world.applied(0, enrollment(&world.node(0)));
    }
    let s = head(&world, 0) + 1;
    world.settle();

    let phase = Arc::new(Mutex::new(Phase::Hold));
    let held: Arc<Mutex<Vec<(ReplicaId, Frame)>>> = Arc::default();
    {
        let phase = phase.clone();
        let held = held.clone();
        let network = world.network().clone();
        let dir = dir.clone();
        let image = image.clone();
        world.network().filter(move |from, to, frame| {
            let mut phase = phase.lock().unwrap();
            match *phase {
                Phase::Hold => {
                    if to == VICTIM {
                        held.lock().unwrap().push((from, frame.clone()));
                        return false;
                    }
                    true
                }
                Phase::Release => {
                    if to == VICTIM {
                        held.lock().unwrap().push((from, frame.clone()));
                        return false;
                    }
                    if from == VICTIM {
                        // On the victim's thread: all of it is in its inbox before its next turn.
                        for (sender, frame) in held.lock().unwrap().drain(..) {
                            network.inject(sender, VICTIM, frame);
                        }
                        *phase = Phase::Armed;
                    }
                    true
                }
                Phase::Armed => {
                    if from == VICTIM
                        && let Wire::Consensus(signed) = &**frame
                        && let Message::Prepare(vote) = &signed.message
                        && vote.seq == s + 1
                    {
                        copy_dir(&dir, &image);
                        *phase = Phase::Crashed;
                    }
                    true
                }
                Phase::Crashed => from != VICTIM && to != VICTIM,
            }
        });
    }
    // Block s commits without the victim; the other three make it stable.
    let handle = world.node(0);
    world
        .rt
        .block_on(handle.submit_applied(enrollment(&handle), WAIT))
        .unwrap();
    wait_until("checkpoint s stable at the three", || {
        (0..3).all(|id| {
            let status = world.node(id).status();
            status.height >= s && status.reported_checkpoint >= s
        })
    });
    world.cluster.stop(DOWN);
    // The primary proposes s + 1; it needs the victim's votes.
    world
        .rt
        .block_on(handle.submit(enrollment(&handle)))
        .unwrap();
    wait_until("the pre-prepare of s + 1 held for the victim", || {
        held.lock().unwrap().iter().any(|(_, frame)| {
            matches!(&**frame, Wire::Consensus(signed)
                if matches!(&signed.message, Message::PrePrepare(pp) if pp.proposal.seq == s + 1))
        })
    });
    *phase.lock().unwrap() = Phase::Release;
    wait_until("the victim's crash point", || {
        *phase.lock().unwrap() == Phase::Crashed
    });
    world.cluster.stop(VICTIM);
    {
        let reader = ledger::store::Reader::open(&image.join("chain.db")).unwrap();
        assert_eq!(
            reader.head().unwrap().0,
            s - 1,
            "the crash point was not between the pass's records and its apply"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
    copy_dir(&image, &dir);
    world.network().clear_filter();
    std::thread::sleep(restart_delay);
    world.cluster.restart(VICTIM).unwrap();
    let restarted = std::time::Instant::now();
    let deadline = restarted + Duration::from_secs(20);
    while head(&world, 0) < s + 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let victim = world.node(VICTIM).status();
    assert!(
        head(&world, 0) > s,
        "block s + 1 not committed {:?} after the victim's restart (victim at {}, view {}, \
         recovering {}): it never voted for s + 1",
        restarted.elapsed(),
        victim.height,
        victim.view,
        victim.recovering
    );
    assert_eq!(world.node(0).status().view, 0, "it took a view change");
}
