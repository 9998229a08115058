//! Lying to a recovering replica (issue 8, finding 2): the answer to its recovery query claims
//! an execution or a view far beyond the cluster's, which would keep it passive for good if
//! believed. The claims come with what this replica can make: its real certificate of a lower
//! block, a certificate in the others' names signed with its own key (or of its own commit
//! alone), its own message of a high view offered as the querier's, or one forged in the
//! querier's name. Or it understates (no certificate, no message), which an answer may.
use pbft::{Message, RecoveryAnswer, ReplicaId, Signed, ViewMessage, Vote};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::crypto;

/// Far beyond anything a run reaches (a few hundred sequence numbers, a few dozen views).
const FAR: u64 = 1 << 40;

pub fn rewrite(
    mut answer: RecoveryAnswer,
    from: ReplicaId,
    n: u32,
    rng: &mut ChaCha8Rng,
) -> RecoveryAnswer {
    let far = Vote {
        view: FAR,
        seq: FAR,
        digest: crypto::sha256(b"lie"),
    };
    let commit_bytes = pbft::commit_signing_bytes(&far);
    match rng.gen_range(0..6) {
        // Inflated, with its real certificate of its real (lower) head.
        0 => answer.last_executed = FAR,
        // A certificate in everyone's name, every signature its own: bad at the edge.
        1 => {
            answer.last_executed = FAR;
            answer.executed_proof = pbft::commit_votes(
                far,
                (0..n).map(|signer| (signer, crypto::sign_bytes(from, &commit_bytes))),
            );
        }
        // Its own commit alone, validly signed: short of a quorum.
        2 => {
            answer.last_executed = FAR;
            answer.executed_proof =
                pbft::commit_votes(far, [(from, crypto::sign_bytes(from, &commit_bytes))]);
        }
        // Its own message of a far view, validly signed, as the querier's.
        3 => {
            let signed = crypto::sign(from, Message::Commit(far));
            answer.querier_message = Some(Box::new(Signed {
                from,
                message: ViewMessage::Commit(far),
                signature: signed.signature,
            }));
        }
        // A message of a far view in the querier's name, signed with its own key.
        4 => {
            answer.querier_message = Some(Box::new(Signed {
                from: answer.querier,
                message: ViewMessage::Commit(far),
                signature: crypto::sign_bytes(from, &commit_bytes),
            }));
        }
        // Understated: claims nothing, shows no life. Allowed; the correct answers cover what
        // it leaves out.
        _ => {
            answer.last_executed = 0;
            answer.executed_proof.clear();
            answer.querier_message = None;
            answer.lives.clear();
        }
    }
    answer
}
