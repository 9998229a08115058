//! Red team s31 of 30eb950d, whose backups pushed their view-change timers while the latest
//! block time they accepted (the current view's too) was more than τ/2 ahead of their clocks:
//! a faulty primary could renew that wait for ever. Only the time a view inherited counts now
//! (`primary_owed_wait`); these fail on 30eb950d.
use crate::common;

use common::*;
use pbft::*;

const TOLERANCE_MS: u64 = DEFAULT_BLOCK_TIME_TOLERANCE_MS;

fn forwards_censored(m: &Message) -> bool {
    matches!(m, Message::Forward(rs) if rs.iter().any(|r| r.id == censored().id))
}

/// F1. A faulty primary (replica 0) censors request R: it never proposes it (here: the
/// forwards of R to it are dropped, and it never gets R from a client), but keeps proposing
/// other requests, each stamped with its clock, which runs τ - 50 ms ahead of the others'.
/// Every such time is within τ of every backup's clock, so they prepare, commit and execute
/// it; and every head they execute is more than τ/2 ahead of their clocks, so
/// `primary_owed_wait` holds at every tick and pushes the timer that follows R to
/// now + timeout, forever. §4.4: the timer on R must run out (a timeout, 2 s here) and the
/// view change away from the censoring primary; view 1's primary inherits a time τ - 50 ms
/// ahead and may wait τ/2 before it proposes R.
#[test]
fn f1_a_censoring_primary_with_a_fast_clock_is_replaced() {
    let mut c = Cluster::new(4);
    let start = 100_000;
    c.clocks_ms = vec![start; 4];
    c.clocks_ms[0] += TOLERANCE_MS - 50;
    c.ms_per_tick = 100;
    c.filter = Box::new(|_, to, m| (to != 0 || !forwards_censored(&m)).then_some(m));
    c.tick_all(1);
    for id in 1..4 {
        c.input(id, Input::Request(censored()));
    }
    c.run();
    // 60 s of real time: 30 timeouts (20 ticks of 100 ms). Other clients' requests keep
    // coming to the primary, which proposes them at once.
    let mut next = 1u8;
    let mut done_at = None;
    for tick in 0..600u64 {
        if tick % 5 == 0 && next < 150 {
            c.input(0, Input::Request(request(next)));
            c.input(0, Input::Cut);
            c.run();
            next += 1;
        }
        c.tick_all(1);
        if done_at.is_none() && (1..4).all(|id| c.executed_ids(id).contains(&censored().id)) {
            done_at = Some(tick);
        }
    }
    for id in 1..4 {
        let r = &c.replicas[id];
        eprintln!(
            "replica {id}: view {}, executed {} blocks, head time - clock = {} ms",
            r.view(),
            c.executed[id].len(),
            c.head_time_ms(id as ReplicaId) as i64 - c.clocks_ms[id] as i64
        );
    }
    assert!(c.executed[1].len() > 50, "the primary kept making progress");
    // A timeout (20 ticks), view 1's wait (τ/2: 10 ticks), the view change and the commit.
    let done_at = done_at.unwrap_or_else(|| panic!("request R censored for 60 s (30 timeouts)"));
    assert!(done_at <= 45, "request R executed only at tick {done_at}");
}

/// F2. No progress at all, and still no view change for L·τ/2: the faulty primary (replica
/// 0, silent otherwise) sends, every τ/2 of real time, the next pre-prepare of a chain, each
/// stamped τ - 50 ms ahead of the real time, to replicas 1 and 2 only (f+1 correct ones), and
/// sends no commit. 1 and 2 prepare each one (within τ of their clocks), so it is prepared
/// there, but with 2 commits of 3 needed nothing commits; meanwhile `primary_owed_wait` holds
/// at 1 and 2 at every tick, so their timers on R never run out. Replica 3 times out alone
/// (one view-change, fewer than f+1: nobody joins). The stall lasts until the chain reaches
/// the high watermark: L·τ/2 (256 s with the default L = 256 and τ = 2 s), against the
/// τ/2 + timeout the commit promises. 1 and 2 must time out after the timeout: view 0
/// inherited no time ahead of their clocks.
#[test]
fn f2_a_silent_primary_drip_feeding_pre_prepares_is_replaced() {
    let mut c = Cluster::configured(4, |cfg| cfg.watermark_window = 64);
    let start = 100_000;
    c.clocks_ms = vec![start; 4];
    c.ms_per_tick = 100;
    c.up[0] = false;
    c.tick_all(1);
    for id in 1..4 {
        c.input(id, Input::Request(censored()));
    }
    c.run();
    let mut prev = GENESIS;
    let mut seq = 1;
    // 60 s: 30 timeouts (20 ticks), 60 times τ/2 (10 ticks).
    for tick in 0..600u64 {
        if tick % 10 == 0 {
            let time_ms = c.clocks_ms[1] + TOLERANCE_MS - 50;
            let pp = timed(seq, prev, time_ms, vec![request(seq as u8)]);
            prev = pp.digest;
            seq += 1;
            for to in [1, 2] {
                c.input(to, msg(0, Message::PrePrepare(pp.clone())));
            }
            c.run();
        }
        c.tick_all(1);
        if tick == 30 {
            for id in 1..3 {
                assert!(
                    c.replicas[id].view() >= 1 || c.replicas[id].in_view_change(),
                    "replica {id}: no view change 30 ticks (1.5 timeouts) after R came"
                );
            }
        }
    }
    for id in 1..4 {
        eprintln!(
            "replica {id}: view {}, in view change {}, executed {}",
            c.replicas[id].view(),
            c.replicas[id].in_view_change(),
            c.executed[id].len()
        );
    }
    for id in 1..3 {
        assert!(
            c.replicas[id].view() >= 1,
            "replica {id}: still in view 0 after 60 s (30 timeouts) without any execution"
        );
    }
}
