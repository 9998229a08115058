//! Blocks: a header that is hashed, the entries it commits to, and the commit certificate.
//!
//! PBFT sequence number `s` holds the block at height `s`, and the PBFT digest of a proposal is
//! the hash of the block it becomes (docs/ARCHITECTURE.md, "One digest"). [`BlockHeader::build`]
//! is the one function that makes a header, from a proposal ([`proposal_digest`]), from a
//! committed proposal ([`Block::from_committed`]), and to check a block on append and on
//! verification, so none of them can drift apart.
//!
//! A block's entries are the requests exactly as consensus ordered them: id, timestamp and
//! payload bytes. The Merkle root is over [`entry_hash`]es, which cover all three, so the block
//! hash (and so the digest replicas prepare and commit) binds every byte of every payload,
//! signatures included: a certificate for one digest cannot be carried into a view change with
//! other bytes (issue 8, finding 1). Whether an entry's payload is a valid transaction is the
//! state machine's verdict ([`crate::tx::Checked`]), not a property of the block: an invalid
//! entry is kept and rejected, so the hash chain stays intact.
use std::sync::Arc;

use borsh::{BorshDeserialize, BorshSerialize};
use sha2::{Digest, Sha256};

use crate::{Error, Fault, Hash, Result, merkle, short_hex};

/// A block entry: a request as consensus ordered it.
pub type Entry = pbft::Request;

/// Domain tag of an entry hash, so that it can be taken for no other hash (a transaction id is
/// SHA-256 of borsh bytes that never start with it).
const ENTRY_TAG: &[u8] = b"medchain/entry/v1";

/// The Merkle leaf of an entry: `SHA-256(tag || id || timestamp_ms (LE) || payload)`. The id
/// and timestamp have fixed sizes, so the payload is the rest and the encoding is unambiguous.
/// For a valid transaction it is [`crate::SignedTx::entry_hash`].
pub fn entry_hash(entry: &Entry) -> Hash {
    let mut h = Sha256::new();
    h.update(ENTRY_TAG);
    h.update(entry.id);
    h.update(entry.timestamp_ms.to_le_bytes());
    h.update(&entry.payload[..]);
    h.finalize().into()
}

/// Everything a block hash covers. The certificate is outside: it signs this hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct BlockHeader {
    pub height: u64,
    pub prev_hash: Hash,
    /// The block time `T`: proposed by the primary, checked by the backups against their clocks
    /// (docs/SECURITY.md, "Block time"), strictly increasing along the chain. Every rule that
    /// involves time (expiry, pending, recovery) judges by it.
    pub timestamp_ms: u64,
    /// The view in which the block was first proposed.
    pub view: u64,
    /// The PBFT sequence number; always equal to `height`, kept so a header says both.
    pub seq: u64,
    pub proposer: u32,
    /// RFC 6962 root over the [`entry_hash`]es, in block order.
    pub merkle_root: Hash,
}

impl BlockHeader {
    /// The header of the block at `height` with block time `time_ms` holding `entries`, in
    /// order. The only place a non-genesis header is made.
    pub fn build<'a>(
        height: u64,
        view: u64,
        proposer: u32,
        prev_hash: Hash,
        time_ms: u64,
        entries: impl IntoIterator<Item = &'a Entry>,
    ) -> Self {
        let leaves: Vec<Hash> = entries.into_iter().map(entry_hash).collect();
        let merkle_root = merkle::root_from_iter(leaves);
        BlockHeader {
            height,
            prev_hash,
            timestamp_ms: time_ms,
            view,
            seq: height,
            proposer,
            merkle_root,
        }
    }

    /// The header a proposal becomes: its block time is the proposal's (`pbft::Proposal::time_ms`,
    /// which the backups checked against their clocks), so the digest (the block hash) covers it.
    pub fn from_proposal(p: &pbft::Proposal) -> Self {
        BlockHeader::build(p.seq, p.view, p.proposer, p.prev, p.time_ms, &p.requests)
    }

    /// The header that `entries` give this header's height, view, proposer, previous hash and
    /// time: equal to `self` exactly when its Merkle root is that of `entries`.
    pub fn rebuilt<'a>(&self, entries: impl IntoIterator<Item = &'a Entry>) -> Self {
        BlockHeader::build(
            self.height,
            self.view,
            self.proposer,
            self.prev_hash,
            self.timestamp_ms,
            entries,
        )
    }

    /// The checks of a header against its own entries, shared by append, verification and
    /// state transfer: `seq` is the height, and the Merkle root is that of `entries` (so the
    /// block hash covers every byte of every entry).
    pub fn check_entries<'a>(
        &self,
        entries: impl IntoIterator<Item = &'a Entry>,
    ) -> Result<(), Fault> {
        if self.seq != self.height {
            return Err(Fault::SeqNotHeight {
                seq: self.seq,
                height: self.height,
            });
        }
        let computed = self.rebuilt(entries);
        if computed.merkle_root != self.merkle_root {
            return Err(Fault::MerkleRoot {
                in_header: short_hex(&self.merkle_root),
                computed: short_hex(&computed.merkle_root),
            });
        }
        Ok(())
    }

    /// The checks of a header against the block before it (`prev`, or the genesis block),
    /// shared by append and verification: the next height, its hash, a later time.
    pub fn check_follows(&self, prev: &BlockHeader) -> Result<(), Fault> {
        if self.height != prev.height + 1 {
            return Err(Fault::Height {
                expected: prev.height + 1,
                found: self.height,
            });
        }
        let prev_hash = prev.hash();
        if self.prev_hash != prev_hash {
            return Err(Fault::PrevHash {
                height_before: prev.height,
                expected: short_hex(&prev_hash),
                found: short_hex(&self.prev_hash),
            });
        }
        if self.timestamp_ms <= prev.timestamp_ms {
            return Err(Fault::BlockTime {
                previous: prev.timestamp_ms,
                found: self.timestamp_ms,
            });
        }
        Ok(())
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

/// A block made here from a committed proposal ([`Built::from_committed`]): its header was
/// built from its own entries, so [`crate::Store::append_block`] does not build its Merkle root
/// again (a hash of every entry's bytes: 1.5 % of a validator's replica thread). Only this
/// module makes one, and its block cannot be changed.
#[derive(Debug)]
pub struct Built(Block);

impl Built {
    /// [`Block::from_committed`].
    pub fn from_committed(committed: pbft::Committed) -> Result<Built> {
        Block::from_committed(committed).map(Built)
    }

    pub fn block(&self) -> &Block {
        &self.0
    }

    /// The block, to be changed (it is then appended as any [`Block`], checked).
    pub fn into_block(self) -> Block {
        self.0
    }
}

/// What [`crate::Store::append_block`] appends: a [`Block`], whose header it checks against
/// its entries, or a [`Built`] one. Sealed: only these two.
///
/// Guards (rt-s52): a [`Built`] is read, never made nor changed, outside this module:
/// ```
/// fn read(b: &ledger::Built) -> &ledger::Block { b.block() }
/// ```
/// ```compile_fail,E0423
/// // No constructor from a block.
/// fn forge(b: ledger::Block) -> ledger::Built { ledger::Built(b) }
/// ```
/// ```compile_fail,E0616
/// // No way to its block but a shared reference.
/// fn change(b: &mut ledger::Built) { b.0.entries.clear() }
/// ```
/// ```compile_fail,E0277
/// // The trait is sealed: no other type claims to be built.
/// struct Forged(ledger::Block);
/// impl ledger::ToAppend for Forged {
///     fn block(&self) -> &ledger::Block { &self.0 }
///     fn built(&self) -> bool { true }
/// }
/// ```
pub trait ToAppend: sealed::Sealed {
    fn block(&self) -> &Block;
    /// Whether the header is known to be the one the entries build.
    fn built(&self) -> bool;
}

impl ToAppend for Block {
    fn block(&self) -> &Block {
        self
    }
    fn built(&self) -> bool {
        false
    }
}

impl ToAppend for Built {
    fn block(&self) -> &Block {
        &self.0
    }
    fn built(&self) -> bool {
        true
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Block {}
    impl Sealed for super::Built {}
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

    /// The certificate of the block at `height` with hash `block_hash` as the signed pbft
    /// commits it is made of: each signature covers the commit vote's bytes, exactly what
    /// [`crate::crypto::certificate_signing_bytes`] verifies (what a recovery answer carries).
    pub fn commit_votes(&self, height: u64, block_hash: &Hash) -> Vec<pbft::Signed<pbft::Vote>> {
        let vote = pbft::Vote {
            view: self.view,
            seq: height,
            digest: *block_hash,
        };
        pbft::commit_votes(
            vote,
            self.signatures
                .iter()
                .map(|(signer, signature)| (*signer, pbft::Signature(*signature))),
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Block {
    pub header: BlockHeader,
    /// The requests exactly as consensus ordered them, valid transactions or not.
    pub entries: Vec<Entry>,
    pub certificate: Certificate,
}

impl Block {
    pub fn hash(&self) -> Hash {
        self.header.hash()
    }

    pub fn height(&self) -> u64 {
        self.header.height
    }

    /// The block a committed proposal becomes, refusing a committed digest that is not this
    /// block's hash. Nothing is decoded: what each entry carries is decided by
    /// [`crate::crypto::check_entries`] (or by the node, which checked the requests as they
    /// arrived), and an entry that is no valid transaction is rejected, not refused.
    pub fn from_committed(committed: pbft::Committed) -> Result<Block> {
        let header = BlockHeader::from_proposal(&committed.proposal);
        let hash = header.hash();
        if hash != committed.digest {
            return Err(Error::DigestMismatch {
                expected: hex::encode(committed.digest),
                actual: hex::encode(hash),
            });
        }
        let entries = match Arc::try_unwrap(committed.proposal) {
            Ok(proposal) => proposal.requests,
            Err(shared) => shared.requests.clone(),
        };
        Ok(Block {
            header,
            entries,
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

    /// The block's entry ids (the request ids consensus deduplicates by), in order.
    pub fn ids(&self) -> impl Iterator<Item = Hash> + '_ {
        self.entries.iter().map(|e| e.id)
    }

    /// An inclusion proof of entry `index`, checkable with its [`entry_hash`] against
    /// `header.merkle_root`.
    pub fn prove(&self, index: usize) -> Option<merkle::Proof> {
        let leaves: Vec<Hash> = self.entries.iter().map(entry_hash).collect();
        merkle::MerkleTree::new(&leaves).prove(index)
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

    use super::*;
    use crate::testkit::TestNet;
    use crate::tx::SignedTx;

    fn net() -> TestNet {
        TestNet::new(4)
    }

    fn tx(i: u64) -> SignedTx {
        net().sample_tx(i)
    }

    fn proposal(n: u64) -> pbft::Proposal {
        let g = net().genesis.hash();
        pbft::Proposal {
            seq: 3,
            view: 1,
            proposer: 1,
            prev: [9; 32],
            time_ms: 1_000 + n,
            requests: (0..n).map(|i| tx(i).to_request(&g)).collect(),
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
            assert_eq!(block.header, block.header.rebuilt(&block.entries));
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

    /// A [`Built`] block is made only from a committed proposal whose digest is its hash, so
    /// its header is the one its entries build (the store does not build it again).
    #[test]
    fn a_built_block_is_its_entries() {
        let p = proposal(5);
        let committed = |digest| pbft::Committed {
            proposal: Arc::new(p.clone()),
            digest,
            commit_view: 2,
            signatures: vec![],
        };
        let built = Built::from_committed(committed(proposal_digest(&p))).expect("builds");
        let block = built.block();
        assert_eq!(block.header, block.header.rebuilt(&block.entries));
        assert!(built.built() && !block.built());
        assert!(Built::from_committed(committed([0; 32])).is_err());
    }

    /// Issue 8, finding 1: a view-change certificate could carry the agreed ids and digest with
    /// other payload bytes. The digest must change with any byte of any payload, the signature
    /// bytes included.
    #[test]
    fn finding_1_substituted_payload_changes_digest() {
        let p = proposal(3);
        let digest = proposal_digest(&p);
        let len = p.requests[1].payload.len();
        for offset in [0, len / 2, len - 64, len - 1] {
            let mut substituted = p.clone();
            let mut bytes = substituted.requests[1].payload.to_vec();
            bytes[offset] ^= 1;
            substituted.requests[1].payload = Arc::from(bytes);
            assert_ne!(proposal_digest(&substituted), digest, "byte {offset}");
        }
        let mut garbage = p.clone();
        garbage.requests[2].payload = Arc::from(&b"garbage"[..]);
        assert_ne!(proposal_digest(&garbage), digest);
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
            let leaf = entry_hash(&block.entries[i]);
            assert!(merkle::verify(&block.header.merkle_root, &leaf, &proof));
            assert_eq!(tx(i as u64).entry_hash(&net().genesis.hash()), leaf);
            assert!(!merkle::verify(
                &block.header.merkle_root,
                &block.entries[i].id,
                &proof
            ));
        }
    }
}

/// Red team of session 52 (rt-s52): a [`Built`] block is always the block its entries build,
/// and only it skips the Merkle root's check on append.
#[cfg(test)]
mod rt_s52 {
    use std::sync::Arc;

    use super::*;
    use crate::store::{OpenOptions, Store};
    use crate::testkit::{TestNet, block_time};

    /// The proposal of height 1 after `net`'s genesis, of `n` sample transactions.
    fn first_proposal(net: &TestNet, n: u64) -> pbft::Proposal {
        pbft::Proposal {
            seq: 1,
            view: 0,
            proposer: 0,
            prev: net.genesis.hash(),
            time_ms: block_time(1),
            requests: (0..n).map(|i| net.request(&net.sample_tx(i))).collect(),
        }
    }

    fn committed(proposal: Arc<pbft::Proposal>, digest: Hash) -> pbft::Committed {
        pbft::Committed {
            proposal,
            digest,
            commit_view: 0,
            signatures: vec![],
        }
    }

    /// A dishonest primary's committed proposal whose digest is another proposal's (entries
    /// changed, reordered, dropped, duplicated, a payload byte, an id, a timestamp) is never
    /// made a `Built` block; one whose proposal is shared (another `Arc` holds it) is its
    /// entries all the same.
    #[test]
    fn only_the_digests_own_entries_make_a_built_block() {
        let net = TestNet::new(4);
        let honest = first_proposal(&net, 4);
        let digest = proposal_digest(&honest);
        let mut variants: Vec<pbft::Proposal> = Vec::new();
        let mut v = honest.clone();
        v.requests.swap(0, 1);
        variants.push(v);
        let mut v = honest.clone();
        v.requests.pop();
        variants.push(v);
        let mut v = honest.clone();
        v.requests.push(v.requests[0].clone());
        variants.push(v);
        let mut v = honest.clone();
        let mut bytes = v.requests[2].payload.to_vec();
        *bytes.last_mut().unwrap() ^= 1;
        v.requests[2].payload = bytes.into();
        variants.push(v);
        let mut v = honest.clone();
        v.requests[3].id[0] ^= 1;
        variants.push(v);
        let mut v = honest.clone();
        v.requests[1].timestamp_ms += 1;
        variants.push(v);
        let mut v = honest.clone();
        v.seq = 2;
        variants.push(v);
        for (i, v) in variants.into_iter().enumerate() {
            assert!(
                Built::from_committed(committed(Arc::new(v), digest)).is_err(),
                "variant {i} was built"
            );
        }
        let shared = Arc::new(honest);
        let kept = Arc::clone(&shared);
        let built = Built::from_committed(committed(shared, digest)).expect("builds");
        assert_eq!(built.block().entries, kept.requests);
        assert_eq!(
            built.block().header.rebuilt(&built.block().entries),
            built.block().header
        );
        assert_eq!(built.block().hash(), digest);
    }

    /// A `Built` block taken apart (`into_block`) and changed is appended as any block: its
    /// Merkle root is checked and refuses it. The `Built` itself is appended, and one that does
    /// not follow the head is still refused (only the Merkle root is skipped).
    #[test]
    fn a_changed_built_block_is_checked_and_refused() {
        let net = TestNet::new(4);
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(
            &dir.path().join("chain.db"),
            &net.genesis,
            OpenOptions::default(),
        )
        .unwrap();
        let p = first_proposal(&net, 3);
        let digest = proposal_digest(&p);
        let make = || Built::from_committed(committed(Arc::new(p.clone()), digest)).unwrap();

        let mut changed = make().into_block();
        changed.entries.swap(0, 2);
        let checked = net.check(&changed);
        match store.append_block(&changed, &checked) {
            Err(crate::Error::NotNext { reason, .. }) => {
                assert!(
                    reason.contains("Merkle") || reason.contains("merkle"),
                    "{reason}"
                )
            }
            other => panic!("a changed block appended: {other:?}"),
        }
        let mut dropped = make().into_block();
        dropped.entries.pop();
        let checked = net.check(&dropped);
        assert!(store.append_block(&dropped, &checked).is_err());
        assert_eq!(store.head().0, 0);

        // Not the next block: refused though built.
        let mut later = p.clone();
        later.seq = 2;
        let far =
            Built::from_committed(committed(Arc::new(later.clone()), proposal_digest(&later)))
                .unwrap();
        let checked = net.check(far.block());
        assert!(store.append_block(&far, &checked).is_err());

        let built = make();
        let checked = net.check(built.block());
        store.append_block(&built, &checked).expect("appended");
        assert_eq!(store.head(), (1, digest));
    }
}
