//! Censorship (finding 3): drops one patient's transactions wherever they reach it (from a
//! client, in a forward, in what it forwards), so as primary it never proposes them while it
//! keeps committing everything else.
use std::collections::BTreeSet;

use pbft::{Digest, Message, Request};

pub fn censored(r: &Request, censored: &BTreeSet<Digest>) -> bool {
    censored.contains(&r.id)
}

/// `m` without the censored requests (`None`: a forward of censored requests only).
pub fn message(m: Message, ids: &BTreeSet<Digest>) -> Option<Message> {
    match m {
        Message::Forward(requests) => {
            let kept: Vec<Request> = requests.into_iter().filter(|r| !censored(r, ids)).collect();
            (!kept.is_empty()).then_some(Message::Forward(kept))
        }
        m => Some(m),
    }
}
