//! Forged signatures: half of what it sends has no signature, a random one, or claims to come
//! from another replica (signed with its own key). The edge must drop all of them.
use pbft::{Message, ReplicaId, Signature, Signed};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

pub fn forge(mut signed: Signed<Message>, n: u32, rng: &mut ChaCha8Rng) -> Signed<Message> {
    if rng.gen_bool(0.5) {
        match rng.gen_range(0..3) {
            0 => signed.signature = Signature([0; 64]),
            1 => signed.signature = Signature([rng.r#gen(); 64]),
            _ => signed.from = (signed.from + 1) % n as ReplicaId,
        }
    }
    signed
}
