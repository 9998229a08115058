//! Blocks: a header that is hashed, the transactions it commits to, and the commit certificate.
//!
//! PBFT sequence number `s` holds the block at height `s`, and the PBFT digest of a proposal is
//! the hash of the block it becomes (docs/ARCHITECTURE.md, "One digest"). [`BlockHeader::build`]
//! is the one function that makes a header, from a proposal ([`proposal_digest`]) and from a
//! committed proposal ([`Block::from_committed`]) alike, so the two cannot drift apart.
use borsh::{BorshDeserialize, BorshSerialize};

use crate::tx::SignedTransaction;
use crate::{Error, Hash, Result, merkle};

/// Everything a block hash covers. The certificate is outside: it signs this hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct BlockHeader {
    pub height: u64,
    pub prev_hash: Hash,
    /// The latest timestamp of the block's transactions (0 for an empty block): a pure function
    /// of the proposal, so every replica computes the same digest without reading a clock.
    pub timestamp_ms: u64,
    /// The view in which the block was first proposed.
    pub view: u64,
    /// The PBFT sequence number; always equal to `height`, kept so a header says both.
    pub seq: u64,
    pub proposer: u32,
    /// RFC 6962 root over the transaction ids, in block order.
    pub merkle_root: Hash,
}

impl BlockHeader {
    /// The header of the block at `height` holding transactions with these `(id, timestamp_ms)`,
    /// in order. The only place a non-genesis header is made.
    pub fn build(
        height: u64,
        view: u64,
        proposer: u32,
        prev_hash: Hash,
        transactions: impl IntoIterator<Item = (Hash, u64)>,
    ) -> Self {
        let mut timestamp_ms = 0;
        let ids = transactions.into_iter().map(|(id, ts)| {
            timestamp_ms = timestamp_ms.max(ts);
            id
        });
        let merkle_root = merkle::root_from_iter(ids.collect::<Vec<_>>());
        BlockHeader {
            height,
            prev_hash,
            timestamp_ms,
            view,
            seq: height,
            proposer,
            merkle_root,
        }
    }

    /// The header a proposal becomes.
    pub fn from_proposal(p: &pbft::Proposal) -> Self {
        BlockHeader::build(
            p.seq,
            p.view,
            p.proposer,
            p.prev,
            p.requests.iter().map(|r| (r.id, r.timestamp_ms)),
        )
    }

    /// SHA-256 of the borsh bytes of the header: the block hash.
    pub fn hash(&self) -> Hash {
        crate::sha256(&self.to_bytes())
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        borsh::to_vec(self).unwrap_or_default()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        BlockHeader::try_from_slice(bytes).map_err(|source| Error::Decode {
            what: "block header",
            source,
        })
    }
}

/// The PBFT digest of a proposal: the hash of the block it becomes. This is the `pbft::DigestFn`
/// the node hands to its replica.
pub fn proposal_digest(p: &pbft::Proposal) -> Hash {
    BlockHeader::from_proposal(p).hash()
}

/// The quorum (2f+1 when n = 3f+1) of commit signatures of one view over `commit_signing_bytes(Vote { view, seq: height,
/// digest: block hash })`, prefixed by the genesis hash ([`crate::crypto::verify_certificate`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Certificate {
    pub view: u64,
    pub signatures: Vec<(u32, [u8; 64])>,
}

impl Certificate {
    pub fn to_bytes(&self) -> Vec<u8> {
        borsh::to_vec(self).unwrap_or_default()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        Certificate::try_from_slice(bytes).map_err(|source| Error::Decode {
            what: "certificate",
            source,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Block {
    pub header: BlockHeader,
    pub transactions: Vec<SignedTransaction>,
    pub certificate: Certificate,
}

impl Block {
    pub fn hash(&self) -> Hash {
        self.header.hash()
    }

    pub fn height(&self) -> u64 {
        self.header.height
    }

    /// The block a committed proposal becomes. Decodes every request (refusing a payload whose
    /// id is not its request's) and refuses a committed digest that is not this block's hash.
    /// Signatures are not checked here: the node checked transactions before pre-preparing and
    /// commit signatures on receipt; [`crate::verify`] checks both again from the store.
    pub fn from_committed(committed: pbft::Committed) -> Result<Block> {
        let header = BlockHeader::from_proposal(&committed.proposal);
        let hash = header.hash();
        if hash != committed.digest {
            return Err(Error::DigestMismatch {
                expected: hex::encode(committed.digest),
                actual: hex::encode(hash),
            });
        }
        let transactions = committed
            .proposal
            .requests
            .iter()
            .map(SignedTransaction::from_request)
            .collect::<Result<Vec<_>>>()?;
        Ok(Block {
            header,
            transactions,
            certificate: Certificate {
                view: committed.commit_view,
                signatures: committed
                    .signatures
                    .into_iter()
                    .map(|(id, sig)| (id, sig.0))
                    .collect(),
            },
        })
    }

    /// The Merkle root over this block's transactions, as its header should state it.
    pub fn computed_merkle_root(&self) -> Hash {
        merkle::root_from_iter(
            self.transactions
                .iter()
                .map(SignedTransaction::id)
                .collect::<Vec<_>>(),
        )
    }

    /// An inclusion proof of transaction `index`, checkable against `header.merkle_root`.
    pub fn prove(&self, index: usize) -> Option<merkle::Proof> {
        let ids: Vec<Hash> = self
            .transactions
            .iter()
            .map(SignedTransaction::id)
            .collect();
        merkle::MerkleTree::new(&ids).prove(index)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        borsh::to_vec(self).unwrap_or_default()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        Block::try_from_slice(bytes).map_err(|source| Error::Decode {
            what: "block",
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ed25519_dalek::SigningKey;

    use super::*;
    use crate::tx::Transaction;

    fn tx(i: u64) -> SignedTransaction {
        SignedTransaction::sign(
            Transaction::Access {
                patient_id: format!("p{i}"),
                reader_id: "d001".into(),
                reader_role: "doctor".into(),
                consent_hash: None,
            },
            100 + (i * 7) % 5,
            [i as u8; 16],
            0,
            &SigningKey::from_bytes(&[1; 32]),
        )
    }

    fn proposal(n: u64) -> pbft::Proposal {
        pbft::Proposal {
            seq: 3,
            view: 1,
            proposer: 1,
            prev: [9; 32],
            requests: (0..n).map(|i| tx(i).to_request()).collect(),
        }
    }

    #[test]
    fn proposal_digest_is_block_hash() {
        for n in [0, 1, 5] {
            let p = proposal(n);
            let digest = proposal_digest(&p);
            let committed = pbft::Committed {
                proposal: Arc::new(p),
                digest,
                commit_view: 2,
                signatures: vec![(0, pbft::Signature([5; 64]))],
            };
            let block = Block::from_committed(committed).expect("builds");
            assert_eq!(block.hash(), digest);
            assert_eq!(block.header.height, 3);
            assert_eq!(block.header.seq, 3);
            assert_eq!(block.header.view, 1);
            assert_eq!(block.header.prev_hash, [9; 32]);
            assert_eq!(block.header.merkle_root, block.computed_merkle_root());
            let expected_ts = (0..n).map(|i| tx(i).timestamp_ms).max().unwrap_or(0);
            assert_eq!(block.header.timestamp_ms, expected_ts);
            assert_eq!(block.certificate.view, 2);
            assert_eq!(
                Block::from_bytes(&block.to_bytes()).expect("decodes"),
                block
            );
            assert_eq!(
                BlockHeader::from_bytes(&block.header.to_bytes()).expect("decodes"),
                block.header
            );
            assert_eq!(
                Certificate::from_bytes(&block.certificate.to_bytes()).expect("decodes"),
                block.certificate
            );
        }
    }

    #[test]
    fn committed_with_wrong_digest_is_refused() {
        let p = proposal(2);
        let mut digest = proposal_digest(&p);
        digest[0] ^= 1;
        let committed = pbft::Committed {
            proposal: Arc::new(p),
            digest,
            commit_view: 0,
            signatures: vec![],
        };
        assert!(matches!(
            Block::from_committed(committed),
            Err(Error::DigestMismatch { .. })
        ));
    }

    #[test]
    fn every_header_field_changes_the_hash() {
        let h = BlockHeader::from_proposal(&proposal(2));
        let base = h.hash();
        let variants = [
            BlockHeader { height: 4, ..h },
            BlockHeader {
                prev_hash: [8; 32],
                ..h
            },
            BlockHeader {
                timestamp_ms: 1,
                ..h
            },
            BlockHeader { view: 9, ..h },
            BlockHeader { seq: 9, ..h },
            BlockHeader { proposer: 3, ..h },
            BlockHeader {
                merkle_root: [0; 32],
                ..h
            },
        ];
        for v in variants {
            assert_ne!(v.hash(), base, "{v:?}");
        }
    }

    #[test]
    fn inclusion_proof_checks_against_header_alone() {
        let p = proposal(7);
        let digest = proposal_digest(&p);
        let block = Block::from_committed(pbft::Committed {
            proposal: Arc::new(p),
            digest,
            commit_view: 1,
            signatures: vec![],
        })
        .expect("builds");
        for i in 0..7 {
            let proof = block.prove(i).expect("in range");
            let id = block.transactions[i].id();
            assert!(merkle::verify(&block.header.merkle_root, &id, &proof));
        }
    }
}
