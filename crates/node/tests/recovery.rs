//! Issue 8, finding 2: a validator that lost its protocol records (node.db deleted, or restored
//! from an older backup) must not vote again where it may have voted before. The embedded
//! cluster end to end: real replicas, SQLite files and signatures; the in-memory network shows
//! every vote a validator sends.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;

use common::{enrollment, fast_timing, runtime};
use ledger::Queries;
use node::{Cluster, NodeHandle, Wire, validator_dir};
use pbft::{Digest, Message, ReplicaId, SeqNo, View};

/// The log window L of `fast_timing`.
const WATERMARK_WINDOW: u64 = 16;
/// A backup in view 0 (the primary is validator 0).
const VICTIM: ReplicaId = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Prepare,
    Commit,
}

/// One vote the victim sent: in which life (0 before it lost its records, 1 after), what.
#[derive(Clone, Copy, Debug)]
struct SentVote {
    life: u8,
    kind: Kind,
    view: View,
    seq: SeqNo,
    digest: Digest,
}

/// Every prepare and commit the victim sends, tagged with its current life.
#[derive(Clone, Default)]
struct Votes {
    life: Arc<AtomicU8>,
    sent: Arc<Mutex<Vec<SentVote>>>,
}

impl Votes {
    fn watch(cluster: &Cluster) -> Self {
        let votes = Votes::default();
        let (life, sent) = (votes.life.clone(), votes.sent.clone());
        cluster.network().observe(move |from, _to, frame| {
            let Wire::Consensus(signed) = &**frame else {
                return;
            };
            let (kind, vote) = match &signed.message {
                Message::Prepare(vote) => (Kind::Prepare, vote),
                Message::Commit(vote) => (Kind::Commit, vote),
                _ => return,
            };
            if from == VICTIM {
                sent.lock().unwrap().push(SentVote {
                    life: life.load(Ordering::SeqCst),
                    kind,
                    view: vote.view,
                    seq: vote.seq,
                    digest: vote.digest,
                });
            }
        });
        votes
    }

    fn next_life(&self) {
        self.life.fetch_add(1, Ordering::SeqCst);
    }

    fn sent(&self) -> Vec<SentVote> {
        self.sent.lock().unwrap().clone()
    }
}

/// Submits one transaction (an enrollment, named `i` in messages) through `via` and waits
/// until every handle in `handles` has it on chain: one block per call (the batch window is
/// 10 ms).
fn commit_one(
    rt: &tokio::runtime::Runtime,
    via: &NodeHandle,
    handles: &[NodeHandle],
    i: usize,
) -> u64 {
    let id = rt.block_on(via.submit(enrollment(via))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let done = handles.iter().all(|h| {
            h.read(|r| r.transaction_height(&id))
                .ok()
                .flatten()
                .is_some()
        });
        if done {
            return via.status().height;
        }
        assert!(
            Instant::now() < deadline,
            "transaction {i} did not commit: {:?}",
            handles.iter().map(NodeHandle::status).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The handles of the validators other than the victim.
fn others(cluster: &Cluster) -> Vec<NodeHandle> {
    cluster
        .handles()
        .into_iter()
        .filter(|h| h.id() != VICTIM)
        .collect()
}

/// Removes a SQLite database and its side files.
fn remove_db(dir: &Path, name: &str) {
    for suffix in ["", "-wal", "-shm"] {
        let path = dir.join(format!("{name}{suffix}"));
        if path.exists() {
            std::fs::remove_file(&path).unwrap();
        }
    }
}

/// Copies a (closed) SQLite database and its side files from `from` to `to`.
fn copy_db(from: &Path, to: &Path, name: &str) {
    for suffix in ["", "-wal", "-shm"] {
        let path = from.join(format!("{name}{suffix}"));
        if path.exists() {
            std::fs::copy(&path, to.join(format!("{name}{suffix}"))).unwrap();
        }
    }
}

/// The victim was just restarted after losing records while the cluster's head was `head`:
/// it must start recovering, vote nowhere at or below `head + L` (where it may have voted in
/// its first life), never vote two digests for one (view, seq), then end its recovery, catch
/// up and commit again.
fn assert_recovers_without_contradicting(
    rt: &tokio::runtime::Runtime,
    cluster: &Cluster,
    votes: &Votes,
    head: u64,
) {
    let victim = cluster.handle(VICTIM).unwrap();
    assert!(
        victim.status().recovering,
        "the validator restarted without its records must start recovering: {:?}",
        victim.status()
    );
    let others = others(cluster);
    let mut i = 1_000;
    // The others advance; the victim votes again once the cluster is L past its possible votes.
    while victim.status().recovering {
        assert!(
            i < 1_000 + 10 * WATERMARK_WINDOW as usize,
            "the victim is still recovering after {} more blocks: {:?}",
            i - 1_000,
            victim.status()
        );
        commit_one(rt, &others[i % others.len()], &others, i);
        i += 1;
    }
    // It catches up and commits again: records submitted through it reach every chain, and it
    // sends commits of its own.
    let mut all = others.clone();
    all.push(victim.clone());
    for _ in 0..4 {
        commit_one(rt, &victim, &all, i);
        i += 1;
    }
    let sent = votes.sent();
    assert!(
        sent.iter().any(|v| v.life == 1 && v.kind == Kind::Commit),
        "the recovered validator never committed again"
    );
    let too_early: Vec<_> = sent
        .iter()
        .filter(|v| v.life == 1 && v.seq <= head + WATERMARK_WINDOW)
        .map(|v| (v.kind, v.view, v.seq))
        .collect();
    assert!(
        too_early.is_empty(),
        "after losing its records the validator voted {} times at or below seq {}, where it \
         may have voted before, first (kind, view, seq): {:?}",
        too_early.len(),
        head + WATERMARK_WINDOW,
        &too_early[..too_early.len().min(4)]
    );
    let mut digests: BTreeMap<(Kind, View, SeqNo), Digest> = BTreeMap::new();
    for vote in &sent {
        let earlier = digests
            .entry((vote.kind, vote.view, vote.seq))
            .or_insert(vote.digest);
        assert_eq!(
            *earlier, vote.digest,
            "the validator sent two {:?}s for view {} seq {}",
            vote.kind, vote.view, vote.seq
        );
    }
    let head = victim.status().height;
    let hash = victim.status().head_hash;
    for handle in &others {
        let status = handle.status();
        if status.height == head {
            assert_eq!(status.head_hash, hash, "{} forked", handle.name());
        }
    }
}

#[test]
fn finding_2_node_with_deleted_store_starts_recovering() {
    let dir = common::data_dir();
    let mut cluster = Cluster::open(dir.path(), fast_timing()).unwrap();
    let votes = Votes::watch(&cluster);
    let rt = runtime();
    let handles = cluster.handles();
    let mut head = 0;
    for i in 0..5 {
        head = commit_one(&rt, &handles[i % 4], &handles, i);
    }
    assert!(
        votes.sent().iter().any(|v| v.kind == Kind::Commit),
        "the victim voted in its first life"
    );

    cluster.stop(VICTIM);
    let name = &cluster.genesis().validators()[VICTIM as usize].name;
    let victim_dir = validator_dir(cluster.data_dir(), name);
    remove_db(&victim_dir, "node.db");
    remove_db(&victim_dir, "chain.db");
    votes.next_life();
    cluster.restart(VICTIM).unwrap();
    assert_recovers_without_contradicting(&rt, &cluster, &votes, head);
}

#[test]
fn finding_2_restored_backup_of_node_db_is_recovering() {
    let dir = common::data_dir();
    let mut cluster = Cluster::open(dir.path(), fast_timing()).unwrap();
    let votes = Votes::watch(&cluster);
    let rt = runtime();
    let handles = cluster.handles();
    for i in 0..2 {
        commit_one(&rt, &handles[i % 4], &handles, i);
    }
    let name = cluster.genesis().validators()[VICTIM as usize].name.clone();
    let victim_dir = validator_dir(cluster.data_dir(), &name);
    let backup = tempfile::tempdir().unwrap();

    // A backup of node.db, taken while the validator is stopped.
    cluster.stop(VICTIM);
    copy_db(&victim_dir, backup.path(), "node.db");
    cluster.restart(VICTIM).unwrap();
    let handles = cluster.handles();
    let mut head = 0;
    for i in 2..6 {
        head = commit_one(&rt, &handles[i % 4], &handles, i);
    }

    // The backup comes back: it misses the votes of the blocks since.
    cluster.stop(VICTIM);
    remove_db(&victim_dir, "node.db");
    copy_db(backup.path(), &victim_dir, "node.db");
    votes.next_life();
    cluster.restart(VICTIM).unwrap();
    assert_recovers_without_contradicting(&rt, &cluster, &votes, head);
}

#[test]
fn first_start_after_init_is_not_recovering() {
    let dir = common::data_dir();
    let mut cluster = Cluster::open(dir.path(), fast_timing()).unwrap();
    assert!(
        cluster
            .handles()
            .iter()
            .all(|h| !h.status().recovering && h.status().alarms == 0),
        "a first start is not a recovery"
    );
    let name = cluster.genesis().validators()[VICTIM as usize].name.clone();
    let marker = validator_dir(cluster.data_dir(), &name).join(node::MARKER_FILE);
    assert!(marker.exists(), "init writes the incarnation marker");
    let votes = Votes::watch(&cluster);
    let rt = runtime();
    let handles = cluster.handles();
    commit_one(&rt, &handles[0], &handles, 0);

    // An ordinary restart keeps its records: it votes again at once, not L blocks later.
    cluster.stop(VICTIM);
    votes.next_life();
    cluster.restart(VICTIM).unwrap();
    let victim = cluster.handle(VICTIM).unwrap();
    assert!(!victim.status().recovering, "{:?}", victim.status());
    let handles = cluster.handles();
    let mut head = 0;
    for i in 1..4 {
        head = commit_one(&rt, &handles[i % 4], &handles, i);
    }
    assert!(
        votes
            .sent()
            .iter()
            .any(|v| v.life == 1 && v.kind == Kind::Commit && v.seq <= head),
        "the restarted validator votes again at once"
    );
    assert!(
        std::fs::read_to_string(&marker)
            .unwrap()
            .contains("incarnation = 2")
    );
}

/// Copies a stopped validator's stores (chain.db, node.db and keys.db: everything but the
/// incarnation marker, as the operations guide says to back up) into a new folder.
fn back_up(dir: &Path) -> tempfile::TempDir {
    let backup = tempfile::tempdir().unwrap();
    for name in ["chain.db", "node.db", "keys.db"] {
        copy_db(dir, backup.path(), name);
    }
    backup
}

/// Puts `backup` back in place of a stopped validator's stores.
fn put_back(backup: &Path, dir: &Path) {
    for name in ["chain.db", "node.db", "keys.db"] {
        remove_db(dir, name);
        copy_db(backup, dir, name);
    }
}

/// Two validators put back from backups a checkpoint interval behind a third that alone holds
/// the blocks between, with the fourth down (docs/SECURITY.md, "Stall a consortium put back from
/// backups at different heights"): the third's status heartbeats alone are the claim the two
/// fetch those certified blocks by (crates/node/src/state_transfer.rs), where pbft's own
/// trigger needs f+1 claims (crates/pbft/tests/protocol/red_team_checkpoint.rs, ignored). What follows
/// is not asserted here: two validators that lost votes are more than the f = 1 faults four
/// tolerate, so they stay recovering and nothing commits, even with the fourth back (tried by
/// hand: all four in view 1, changing views, for 40 s; docs/SECURITY.md and README "Backups").
#[test]
fn validators_put_back_behind_fetch_the_blocks_only_one_peer_holds() {
    let dir = common::data_dir();
    let mut cluster = Cluster::open(dir.path(), fast_timing()).unwrap();
    let rt = runtime();
    let mut i = 0;
    let commit_to = |cluster: &Cluster, height: u64, i: &mut usize| {
        let handles = cluster.handles();
        while handles[0].status().height < height {
            commit_one(&rt, &handles[*i % 4], &handles, *i);
            *i += 1;
        }
    };
    let dirs: Vec<_> = cluster
        .genesis()
        .validators()
        .iter()
        .map(|v| validator_dir(cluster.data_dir(), &v.name))
        .collect();
    let checkpoint_interval = fast_timing().checkpoint_interval;
    commit_to(&cluster, 2 * checkpoint_interval + 2, &mut i);
    let (mut backups, mut heights) = (Vec::new(), Vec::new());
    for id in [0, 1] {
        heights.push(cluster.handle(id).unwrap().status().height);
        cluster.stop(id);
        backups.push(back_up(&dirs[id as usize]));
        cluster.restart(id).unwrap();
    }
    commit_to(&cluster, heights[0] + checkpoint_interval + 1, &mut i);
    heights.push(cluster.handle(2).unwrap().status().height);
    cluster.stop(2);
    backups.push(back_up(&dirs[2]));
    assert!(
        heights[0] == heights[1]
            && heights[2] / checkpoint_interval > heights[0] / checkpoint_interval,
        "heads backed up: {heights:?}"
    );
    for id in [0, 1, 3] {
        cluster.stop(id);
    }
    for (id, backup) in backups.iter().enumerate() {
        put_back(backup.path(), &dirs[id]);
    }
    for id in [0, 1, 2] {
        cluster.restart(id).unwrap();
    }
    let up: Vec<NodeHandle> = cluster
        .handles()
        .into_iter()
        .filter(|h| h.id() != 3)
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while up.iter().any(|h| h.status().height == 0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5)); // the first status is published
    }
    // 2's backup was taken at its last stop: it holds every vote 2 sent, so 2 is not.
    assert!(
        up[..2].iter().all(|h| h.status().recovering),
        "restored from older backups: {:?}",
        up.iter().map(NodeHandle::status).collect::<Vec<_>>()
    );
    // The two behind fetch the blocks only 2 holds.
    let deadline = Instant::now() + Duration::from_secs(30);
    while up[..2].iter().any(|h| h.status().height < heights[2]) {
        assert!(
            Instant::now() < deadline,
            "the validators put back behind did not fetch 2's blocks: {:?}",
            up.iter().map(|h| h.status().height).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let head = up[2].status().head_hash;
    assert!(up.iter().all(|h| h.status().head_hash == head), "one chain");
}
