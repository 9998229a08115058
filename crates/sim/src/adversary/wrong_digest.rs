//! Wrong digests: half of its votes and checkpoints carry a random digest.
use pbft::Message;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

pub fn rewrite(m: Message, rng: &mut ChaCha8Rng) -> Message {
    match m {
        Message::Prepare(mut v) if rng.gen_bool(0.5) => {
            v.digest = rng.r#gen();
            Message::Prepare(v)
        }
        Message::Commit(mut v) if rng.gen_bool(0.5) => {
            v.digest = rng.r#gen();
            Message::Commit(v)
        }
        Message::Checkpoint(mut c) if rng.gen_bool(0.5) => {
            c.digest = rng.r#gen();
            Message::Checkpoint(c)
        }
        m => m,
    }
}
