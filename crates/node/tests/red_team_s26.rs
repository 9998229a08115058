//! Red team s26 on 06ada8d1 (the clock before every input; a pre-prepare judged by the clock
//! of its arrival; a pass's messages sent before its committed blocks are applied).
//!
//! F1: a validator's checkpoint message for sequence number K leaves before block K is in its
//! chain.db. Before 06ada8d1 `Action::Execute` was applied in order, before the checkpoint
//! broadcast that follows it, so a checkpoint vote meant "K is durably in my chain" (PBFT
//! §4.3: a replica multicasts a checkpoint after it has produced the state). Now the vote may
//! be counted by peers (a stable checkpoint, which they compact and garbage-collect by) while
//! the voter, if it crashes before `apply_all`, restarts without K and must fetch it from a
//! correct peer that did apply it. Fixed: a checkpoint vote waits for the pass's applies.

mod common;

use std::sync::{Arc, Mutex};

use common::enrollment;
use common::world::World;
use node::{EMBEDDED_VALIDATORS, Wire, validator_dir};
use pbft::Message;

/// Checkpoint interval of `fast_timing`.
const K: u64 = 8;

#[test]
fn a_checkpoint_vote_leaves_only_once_its_block_is_in_the_chain() {
    let world = World::new();
    let data_dir = world.cluster.data_dir().to_path_buf();
    // (validator, checkpoint seq, its chain.db head when the vote left)
    let early: Arc<Mutex<Vec<(u32, u64, u64)>>> = Arc::default();
    let seen: Arc<Mutex<Vec<(u32, u64, u64)>>> = Arc::default();
    {
        let early = early.clone();
        let seen = seen.clone();
        world.network().observe(move |from, _to, frame| {
            let Wire::Consensus(signed) = &**frame else {
                return;
            };
            let Message::Checkpoint(c) = &signed.message else {
                return;
            };
            if c.seq == 0 || c.seq % K != 0 {
                return;
            }
            // The observer runs on the sender's runtime thread, inside its `execute`: what
            // its chain.db holds at this instant is what a crash right now would leave.
            let path =
                validator_dir(&data_dir, EMBEDDED_VALIDATORS[from as usize]).join("chain.db");
            let Ok(reader) = ledger::store::Reader::open(&path) else {
                return;
            };
            let Ok((head, _)) = reader.head() else {
                return;
            };
            seen.lock().unwrap().push((from, c.seq, head));
            if head < c.seq {
                early.lock().unwrap().push((from, c.seq, head));
            }
        });
    }
    let handle = world.node(0);
    for _ in 0..(2 * K + 2) {
        world.applied(0, enrollment(&handle));
    }
    world.settle();
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.is_empty(), "no checkpoint vote was observed");
    let early = early.lock().unwrap().clone();
    assert!(
        early.is_empty(),
        "checkpoint votes sent before their block was in the sender's chain.db \
         (validator, seq, head): {early:?} of {seen:?}"
    );
}
