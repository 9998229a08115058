//! Block time in the embedded cluster (pbft's crate docs, "Block time"): the validators go by
//! the cluster's clock, a block's time is the clock its primary read, and a restarted
//! validator continues after the block time of its stored head.

use std::time::{Duration, Instant};

mod common;

use common::{enrollment, fast_timing, runtime};
use ledger::Queries;
use node::{Clock, Cluster, DEFAULT_WATTS_PER_CORE, NodeHandle, Timing};

/// A batch window long enough that only cuts make blocks.
fn cut_timing() -> Timing {
    Timing {
        batch_window: Duration::from_secs(60),
        ..fast_timing()
    }
}

/// Submits one enrollment through the first validator, cuts, and returns the block's time,
/// once every validator of `cluster` has the block.
fn commit_one(cluster: &Cluster) -> u64 {
    let handle = cluster.handle(0).expect("hospital runs");
    let outcome = runtime().block_on(async {
        handle.submit(enrollment(&handle)).await.expect("submit");
        handle.cut().await.expect("cut")
    });
    wait_height(&cluster.handles(), outcome.height);
    let block = handle
        .read(|reader| reader.block(outcome.height))
        .expect("read")
        .expect("the block");
    block.header.timestamp_ms
}

fn wait_height(handles: &[NodeHandle], height: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while handles.iter().any(|h| h.status().height < height) {
        assert!(Instant::now() < deadline, "height {height} not reached");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A manual clock a day ahead of the system's: the block time is that clock's, and moves when
/// it moves (five minutes, as a grant's code).
#[test]
fn blocks_take_the_time_of_the_clusters_clock() {
    let dir = common::data_dir();
    let start = Clock::System.now_ms() + 24 * 3_600_000;
    let clock = Clock::manual(start);
    let cluster = Cluster::open_with_clock(
        dir.path(),
        cut_timing(),
        DEFAULT_WATTS_PER_CORE,
        clock.clone(),
    )
    .unwrap();
    assert_eq!(
        cluster.clock().now_ms(),
        start,
        "the cluster hands out its clock"
    );
    assert_eq!(commit_one(&cluster), start);
    clock.advance_ms(300_000);
    let later = start + 300_000;
    // The replicas read the clock at their next tick (every 50 ms here); a proposal between
    // ticks goes by the last one.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(commit_one(&cluster), later);
}

/// After a restart the replicas know their head's block time: with the clock half a second
/// behind it (a clock stepped back), the next block is one ms after the head, never before.
#[test]
fn a_restarted_cluster_continues_after_its_head_time() {
    let dir = common::data_dir();
    let start = Clock::System.now_ms() + 3_600_000;
    let head_time = {
        let cluster = Cluster::open_with_clock(
            dir.path(),
            cut_timing(),
            DEFAULT_WATTS_PER_CORE,
            Clock::manual(start),
        )
        .unwrap();
        commit_one(&cluster)
    };
    assert_eq!(head_time, start);
    let cluster = Cluster::open_with_clock(
        dir.path(),
        cut_timing(),
        DEFAULT_WATTS_PER_CORE,
        Clock::manual(head_time - 500),
    )
    .unwrap();
    assert_eq!(commit_one(&cluster), head_time + 1);
}
