//! The check of the `pbft_messages` fuzz target (`fuzz/`), which `cargo test` also runs on
//! every file of its committed corpus, and the small configuration it shares with the crate's
//! tests. Not part of the API.
//!
//! A peer's bytes reach the replica as the node hands them over: decoded as a
//! [`Signed`]`<`[`Message`]`>`, dropped unless the sender is another replica, shape-checked
//! ([`Replica::check_shape`]), then stepped. Signatures are the caller's (crate docs, contract
//! item 1) and a Byzantine sender signs whatever it likes, so they are not modelled: the fuzzer
//! plays every other replica, beyond the fault model, and the replica must still answer with
//! error values and actions, never a panic.
use std::collections::VecDeque;

use borsh::BorshDeserialize;
use sha2::{Digest as _, Sha256};

use crate::{
    Action, Config, Digest, Durable, Input, Message, Proposal, Replica, ReplicaId, Restored, SeqNo,
    Signed,
};

/// The genesis digest of the test and fuzzing configuration.
pub const GENESIS: Digest = [7; 32];

/// The replica the fuzzer talks to (the primary of view 3); the others are the fuzzer.
pub const FUZZED: ReplicaId = 3;

/// Messages handled per input at most, looped-back broadcasts included: bounds one run.
const MAX_STEPS: usize = 4096;

/// SHA-256 of the proposal's borsh bytes: the digest of the test configuration.
pub fn digest(p: &Proposal) -> Digest {
    Sha256::digest(borsh::to_vec(p).unwrap_or_default()).into()
}

/// Replica `id` of `n` with small K (4), L (8) and batches (2), so that checkpoints,
/// watermarks and view changes are a few messages away.
pub fn config(id: ReplicaId, n: u32) -> Config {
    Config {
        checkpoint_interval: 4,
        watermark_window: 8,
        max_batch: 2,
        batch_window_ticks: 2,
        max_in_flight: 3,
        view_change_timeout_ticks: 20,
        retransmit_ticks: 1_000,
        max_pending: 16,
        executed_window: 64,
        future_buffer_per_sender: 8,
        ..Config::new(id, n, digest, GENESIS)
    }
}

/// Feeds `bytes`, a sequence of borsh-encoded `Signed<Message>`s from peers, to replica 3 of 4,
/// with a tick after each, as the node would. Asserts that each decoded message re-encodes to
/// its own bytes (borsh is canonical: a signature covers one encoding), that executions come in
/// sequence, and that the records it persisted decode again and restart a replica. Returns
/// whether any message was accepted.
pub fn check_messages(bytes: &[u8]) -> bool {
    let mut replica = Replica::new(config(FUZZED, 4), Restored::genesis(GENESIS, 0, 0));
    let mut persisted: Vec<Durable> = Vec::new();
    // The executed head: sequence number, digest, block time.
    let mut head: (SeqNo, Digest, u64) = (0, GENESIS, 0);
    let mut accepted = false;
    let mut rest = bytes;
    let mut steps = 0;
    while !rest.is_empty() && steps < MAX_STEPS {
        let before = rest;
        let Ok(signed) = Signed::<Message>::deserialize(&mut rest) else {
            break;
        };
        let consumed = &before[..before.len() - rest.len()];
        assert_eq!(
            borsh::to_vec(&signed).ok().as_deref(),
            Some(consumed),
            "a message that does not re-encode to its bytes"
        );
        // The node drops frames that claim another sender than the channel's peer, or this
        // replica; it shape-checks before it verifies signatures.
        if signed.from == FUZZED || replica.check_shape(&signed.message).is_err() {
            continue;
        }
        let mut inputs = VecDeque::from([Input::Message(signed), Input::Tick { now_ms: 0 }]);
        while let Some(input) = inputs.pop_front() {
            steps += 1;
            if steps > MAX_STEPS {
                break;
            }
            let is_message = matches!(input, Input::Message(_));
            let mut actions = Vec::new();
            if replica.step(input, &mut actions).is_ok() && is_message {
                accepted = true;
            }
            for action in actions {
                match action {
                    // The caller loops its own broadcasts back, signed (contract item 3).
                    Action::Broadcast(message) => inputs.push_back(Input::Message(Signed {
                        from: FUZZED,
                        message,
                        signature: crate::Signature([0; 64]),
                    })),
                    Action::Persist(record) => persisted.push(record),
                    Action::Execute(committed) => {
                        let seq = committed.proposal.seq;
                        assert_eq!(seq, head.0 + 1, "executed out of order");
                        head = (seq, committed.digest, committed.proposal.time_ms);
                    }
                    Action::Send { .. }
                    | Action::FetchState { .. }
                    | Action::ReadExecuted { .. }
                    | Action::Alarm(_) => {}
                }
            }
        }
    }
    for record in &persisted {
        let bytes = borsh::to_vec(record).unwrap_or_default();
        assert_eq!(
            Durable::try_from_slice(&bytes).ok().as_ref(),
            Some(record),
            "a durable record that does not decode to itself"
        );
    }
    let restored = Restored {
        last_executed: (head.0, head.1),
        head_time_ms: head.2,
        durable: persisted,
        ..Restored::genesis(GENESIS, 0, 0)
    };
    let _restarted = Replica::new(config(FUZZED, 4), restored);
    accepted
}
