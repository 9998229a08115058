//! Withholding commits: prepares as usual but never sends a commit, so a sequence number can be
//! prepared at correct replicas without committing (the ground finding 1 needs).
use pbft::Message;

pub fn drops(m: &Message) -> bool {
    matches!(m, Message::Commit(_))
}
