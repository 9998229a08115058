//! Replay: re-sends old messages it received from others (valid signatures) to anyone.
use pbft::{Message, Signed};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::Memory;

/// Messages kept for replay.
const KEPT: usize = 256;

pub fn remember(memory: &mut Memory, m: &Signed<Message>) {
    memory.seen.push_back(m.clone());
    if memory.seen.len() > KEPT {
        memory.seen.pop_front();
    }
}

pub fn pick(memory: &Memory, rng: &mut ChaCha8Rng) -> Option<Signed<Message>> {
    if memory.seen.is_empty() {
        return None;
    }
    Some(memory.seen[rng.gen_range(0..memory.seen.len())].clone())
}
