//! Forged status claims: status claims and checkpoints far beyond its head with made-up digests
//! (the same among colluders), so that a replica believing them would chase a state nobody has.
use pbft::{Checkpoint, Message, SeqNo};

use crate::crypto;

pub fn claims(head: SeqNo, checkpoint_interval: u64) -> Vec<Message> {
    let claim = head + 1_000 + 1;
    let checkpoint = (head / checkpoint_interval + 4) * checkpoint_interval;
    [claim, checkpoint]
        .into_iter()
        .map(|seq| {
            Message::Checkpoint(Checkpoint {
                seq,
                digest: crypto::sha256(&[b"forged".as_slice(), &seq.to_le_bytes()].concat()),
            })
        })
        .collect()
}
