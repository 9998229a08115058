//! Payload substitution (finding 1): the same request ids and timestamps, other bytes, which the
//! digest must catch. As primary it leaves one honest backup out of its pre-prepares and (with
//! `withhold-commits`) sends no commit, so a sequence number is prepared but not committed; its
//! view-changes then carry that certificate with substituted payloads under the same digest, and
//! as certificates of one view tie, a new primary that takes the first in sender order
//! re-proposes the substituted bytes. One pre-prepare in five carries substituted bytes too (the
//! node's edge check of a pre-prepare's transactions rejects those).
use std::sync::Arc;

use ledger::SignedTx;
use pbft::{Proposal, Request, ViewChange};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Other bytes under `r`'s id and timestamp: garbage, or the same transaction (header and body,
/// so the same id) with another signature, which the id does not cover.
pub fn substitute(r: &Request, rng: &mut ChaCha8Rng) -> Request {
    let payload: Vec<u8> = match SignedTx::from_bytes(&r.payload) {
        Ok(mut tx) if rng.gen_bool(0.5) => {
            tx.signature[0] ^= 0xff;
            tx.to_bytes()
        }
        _ => (0..r.payload.len().max(1)).map(|_| rng.r#gen()).collect(),
    };
    Request {
        id: r.id,
        timestamp_ms: r.timestamp_ms,
        payload: Arc::from(payload),
    }
}

pub fn proposal(p: &Proposal, rng: &mut ChaCha8Rng) -> Proposal {
    let mut p = p.clone();
    for r in &mut p.requests {
        *r = substitute(r, rng);
    }
    p
}

pub fn view_change(mut vc: ViewChange, rng: &mut ChaCha8Rng) -> ViewChange {
    for cert in &mut vc.prepared {
        cert.pre_prepare.proposal = Arc::new(proposal(&cert.pre_prepare.proposal, rng));
    }
    vc
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;
    use crate::client::{self, Transactions};

    #[test]
    fn a_substituted_payload_keeps_the_id_and_fails_the_edge_check() {
        let txs = Transactions::new(4);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut resigned = 0;
        for i in 0..40 {
            let (request, _) = txs.request(i);
            assert!(txs.authentic(&request), "request {i} as submitted");
            let other = substitute(&request, &mut rng);
            assert_eq!(
                (other.id, other.timestamp_ms),
                (request.id, request.timestamp_ms)
            );
            assert!(!client::same(&other, &request), "request {i}: other bytes");
            assert!(!txs.authentic(&other), "request {i}: substitute rejected");
            if let Ok(tx) = SignedTx::from_bytes(&other.payload) {
                resigned += 1;
                assert_eq!(
                    tx.header,
                    SignedTx::from_bytes(&request.payload)
                        .expect("decodes")
                        .header
                );
            }
        }
        assert!(
            resigned > 0,
            "some substitutes decode, with the same header"
        );
    }
}
