//! Red team s39 F3's backup behind by its own restored slot (kept by red team s45).
use pbft::*;

use super::*;

/// How the fresh requests of [`backup_behind`] reach backup 2.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Fresh {
    /// From a client.
    Submitted,
    /// As Byzantine replica 3's forwards (a validator holding clients' transactions).
    ForwardedBy3,
}

/// What [`backup_behind`] ends with.
pub struct BackupBehind {
    pub cluster: Cluster,
    /// Whether backup 2 sent a view-change before its transfer landed.
    pub left_early: bool,
    /// Whether it sent one by the end, 5 ticks after the transfer.
    pub left: bool,
}

/// Red team s39 F3's cluster (n = 4, T = 200, retransmit 50): request 5, which backup 2
/// acknowledged, commits at every replica at seq 5; backup 2 crashes before applying block 5
/// (ledger head 4 = its stable checkpoint, slot 5 restored) and its node resubmits request 5.
/// Its state transfer of block 5 is slow (300 ticks, < 2 T). At each tick of `fresh_at` (after
/// the restart) a fresh request reaches backup 2 as `fresh` says; backup 2 forwards it to the
/// (correct) primary 0, which proposes it; it commits at 0, 1, 3 (backup 2 cannot execute it
/// before block 5). If `faulty_joins`, replica 3 (Byzantine) sends a view-change to view 1 as
/// soon as backup 2 sent one.
pub fn backup_behind(fresh_at: &[u64], fresh: Fresh, faulty_joins: bool) -> BackupBehind {
    let mut c = Cluster::configured(4, |cfg| {
        cfg.view_change_timeout_ticks = 200;
        cfg.retransmit_ticks = 50;
    });
    for i in 1..=4 {
        commit_block(&mut c, i);
    }
    c.input(2, Input::Request(request(5)));
    c.run();
    c.input(0, Input::Cut);
    c.run();
    for id in 0..4u32 {
        assert!(c.executed_ids(id).contains(&request(5).id), "replica {id}");
    }
    let durable = c.durable[2].clone();
    restart_behind(&mut c, 2, 4, durable);
    assert_eq!(c.replicas[2].stable_checkpoint().0, 4);
    // The node resubmits what it acknowledged and its chain does not hold.
    resume(&mut c, 2, &[request(5)]);
    c.run();
    let sent_before = c.sent[2].len();
    let left_since_restart = |c: &Cluster| {
        c.sent[2][sent_before..]
            .iter()
            .any(|m| matches!(m, Message::ViewChange(_)))
    };
    let mut left_early = false;
    let mut joined = false;
    let mut next = 100u8;
    for t in 0..300u64 {
        if fresh_at.contains(&t) {
            match fresh {
                Fresh::ForwardedBy3 => c.input(2, msg(3, Message::Forward(vec![request(next)]))),
                Fresh::Submitted => c.input(2, Input::Request(request(next))),
            }
            next += 1;
            c.run();
        }
        c.tick_all(1);
        // The transfer is slow: the fetches wait.
        c.fetches[2].clear();
        let left = left_since_restart(&c);
        left_early |= left;
        if left && faulty_joins && !joined {
            joined = true;
            for to in 0..3 {
                c.input(to, msg(3, Message::ViewChange(view_change(1, vec![]))));
            }
            c.run();
        }
    }
    transfer(&mut c, 2, 0, 5);
    c.tick_all(5);
    BackupBehind {
        left: left_since_restart(&c),
        cluster: c,
        left_early,
    }
}
