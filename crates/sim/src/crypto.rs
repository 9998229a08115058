//! The harness's stand-ins for the ledger's cryptography: a keyed hash per replica as the
//! signature (checked at the harness's edge, like the node checks Ed25519). The digest is the
//! ledger's own ([`ledger::proposal_digest`], the hash of the block a proposal becomes), so what
//! the replicas agree on is exactly what the node's replicas agree on.
use hmac::{Hmac, Mac};
use pbft::{Digest, Message, Proposal, ReplicaId, Signature, Signed};
use sha2::{Digest as _, Sha256};

type HmacSha256 = Hmac<Sha256>;

pub const GENESIS: Digest = [0x6e; 32];

/// The simulator's `DigestFn`: the ledger's block hash.
pub fn digest(p: &Proposal) -> Digest {
    ledger::proposal_digest(p)
}

pub fn sha256(bytes: &[u8]) -> Digest {
    Sha256::digest(bytes).into()
}

fn key(id: ReplicaId) -> [u8; 32] {
    let mut input = b"medchain-sim-replica-key".to_vec();
    input.extend_from_slice(&id.to_le_bytes());
    sha256(&input)
}

/// HMAC-SHA256 with the replica's key, padded to 64 bytes.
pub fn sign_bytes(id: ReplicaId, bytes: &[u8]) -> Signature {
    let mut mac = HmacSha256::new_from_slice(&key(id)).expect("any key length");
    mac.update(bytes);
    let tag = mac.finalize().into_bytes();
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(&tag);
    Signature(out)
}

pub fn verify_bytes(id: ReplicaId, bytes: &[u8], signature: &Signature) -> bool {
    // Constant time does not matter inside a simulation.
    sign_bytes(id, bytes) == *signature
}

pub fn sign(id: ReplicaId, message: Message) -> Signed<Message> {
    let signature = sign_bytes(id, &message.signing_bytes());
    Signed {
        from: id,
        message,
        signature,
    }
}

/// The edge check: the outer signature and every embedded one.
pub fn verify(m: &Signed<Message>, n: u32) -> bool {
    if m.from >= n || !verify_bytes(m.from, &m.message.signing_bytes(), &m.signature) {
        return false;
    }
    m.message
        .embedded_signatures()
        .iter()
        .all(|(from, bytes, sig)| *from < n && verify_bytes(*from, bytes, sig))
}

/// Checks a commit certificate as the ledger would: at least `quorum` distinct replicas' valid
/// signatures over the commit vote (`quorum` 0 turns the size check off, see
/// [`crate::RunConfig::certificate_check`]).
pub fn verify_certificate(c: &pbft::Committed, n: u32, quorum: usize) -> bool {
    let vote = pbft::Vote {
        view: c.commit_view,
        seq: c.proposal.seq,
        digest: c.digest,
    };
    let bytes = pbft::commit_signing_bytes(&vote);
    let mut signers = std::collections::BTreeSet::new();
    for (from, sig) in &c.signatures {
        if *from >= n || !verify_bytes(*from, &bytes, sig) || !signers.insert(*from) {
            return false;
        }
    }
    signers.len() >= quorum && digest(&c.proposal) == c.digest
}
