//! RFC 6962 Merkle trees over 32-byte leaves (transaction ids).
//!
//! Leaf hashes are `SHA-256(0x00 || leaf)` and interior hashes `SHA-256(0x01 || left || right)`,
//! so an interior node can never be passed off as a leaf (the second-preimage attack that a
//! tree without prefixes allows). For `n > 1` leaves the tree splits at the largest power of two
//! below `n` (RFC 6962 §2.1); building it bottom-up, pairing neighbours and promoting an unpaired
//! last node unchanged to the level above, gives exactly that tree. The root of no leaves is
//! `SHA-256("")`.
//!
//! An inclusion proof is the RFC's audit path; [`verify`] is RFC 9162 §2.1.3.2, so a client that
//! has only a block header (its `merkle_root`) can check that a transaction id is in the block.
use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Hash;

const LEAF_PREFIX: u8 = 0x00;
const NODE_PREFIX: u8 = 0x01;

/// `SHA-256(0x00 || leaf)`.
pub fn leaf_hash(leaf: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([LEAF_PREFIX]);
    h.update(leaf);
    h.finalize().into()
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([NODE_PREFIX]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of `SHA-256` of nothing, the root of an empty tree (RFC 6962 §2.1).
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The Merkle tree hash of `leaves`, computed in place without keeping the levels.
pub fn root(leaves: &[Hash]) -> Hash {
    root_from_iter(leaves.iter().copied())
}

/// The Merkle tree hash of the leaves an iterator yields.
pub fn root_from_iter(leaves: impl IntoIterator<Item = Hash>) -> Hash {
    let mut level: Vec<Hash> = leaves.into_iter().map(|l| leaf_hash(&l)).collect();
    if level.is_empty() {
        return empty_root();
    }
    while level.len() > 1 {
        let next_len = level.len().div_ceil(2);
        for i in 0..next_len {
            let left = level[2 * i];
            level[i] = match level.get(2 * i + 1) {
                Some(right) => node_hash(&left, right),
                None => left,
            };
        }
        level.truncate(next_len);
    }
    level[0]
}

/// An inclusion proof: the leaf's index, the tree size and the audit path (siblings from the
/// leaf up). It is all a client needs, with the root from a block header, to check inclusion.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Proof {
    pub index: u64,
    pub tree_size: u64,
    pub path: Vec<Hash>,
}

/// A Merkle tree with every level kept, for proving inclusion of any leaf.
#[derive(Clone, Debug)]
pub struct MerkleTree {
    /// `levels[0]` are the leaf hashes, the last level is the root alone.
    levels: Vec<Vec<Hash>>,
}

impl MerkleTree {
    pub fn new(leaves: &[Hash]) -> Self {
        let mut levels = vec![leaves.iter().map(leaf_hash).collect::<Vec<_>>()];
        while levels.last().is_some_and(|l| l.len() > 1) {
            let below = levels.last().map(Vec::as_slice).unwrap_or_default();
            let next = below
                .chunks(2)
                .map(|pair| match pair {
                    [l, r] => node_hash(l, r),
                    [l] => *l,
                    _ => unreachable!("chunks(2) yields one or two"),
                })
                .collect();
            levels.push(next);
        }
        MerkleTree { levels }
    }

    pub fn len(&self) -> usize {
        self.levels[0].len()
    }

    pub fn is_empty(&self) -> bool {
        self.levels[0].is_empty()
    }

    pub fn root(&self) -> Hash {
        match self.levels.last().and_then(|l| l.first()) {
            Some(root) if !self.is_empty() => *root,
            _ => empty_root(),
        }
    }

    /// The audit path of leaf `index`, or `None` if there is no such leaf.
    pub fn prove(&self, index: usize) -> Option<Proof> {
        if index >= self.len() {
            return None;
        }
        let mut path = Vec::new();
        let mut i = index;
        for level in &self.levels[..self.levels.len() - 1] {
            let sibling = i ^ 1;
            if sibling < level.len() {
                path.push(level[sibling]);
            }
            // An unpaired last node is promoted: no sibling at this level.
            i /= 2;
        }
        Some(Proof {
            index: index as u64,
            tree_size: self.len() as u64,
            path,
        })
    }
}

/// Checks that `leaf` is at `proof.index` of a tree of `proof.tree_size` leaves whose root is
/// `root` (RFC 9162 §2.1.3.2). Any forged path, index or size gives `false`.
pub fn verify(root: &Hash, leaf: &Hash, proof: &Proof) -> bool {
    if proof.index >= proof.tree_size {
        return false;
    }
    let mut f = proof.index;
    let mut s = proof.tree_size - 1;
    let mut r = leaf_hash(leaf);
    for p in &proof.path {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && r == *root
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6962 §2.1 written as the recursion it states, to check the iterative version against.
    fn reference_root(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaf_hash(&leaves[0]),
            n => {
                let mut k = 1;
                while k * 2 < n {
                    k *= 2;
                }
                node_hash(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
            }
        }
    }

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| crate::sha256(&(i as u64).to_le_bytes()))
            .collect()
    }

    #[test]
    fn split_point_is_largest_power_of_two_below_n() {
        // Sanity of the reference itself for a few sizes.
        for (n, k) in [(2, 1), (3, 2), (4, 2), (5, 4), (8, 4), (9, 8), (17, 16)] {
            let l = leaves(n);
            let expected = node_hash(&reference_root(&l[..k]), &reference_root(&l[k..]));
            assert_eq!(reference_root(&l), expected, "n = {n}");
        }
    }

    #[test]
    fn iterative_root_matches_rfc_recursion() {
        for n in 0..=70 {
            let l = leaves(n);
            assert_eq!(root(&l), reference_root(&l), "n = {n}");
            assert_eq!(
                MerkleTree::new(&l).root(),
                reference_root(&l),
                "tree n = {n}"
            );
        }
    }

    #[test]
    fn known_answers() {
        assert_eq!(
            hex::encode(empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let one = [0u8; 32];
        assert_eq!(
            root(&[one]),
            crate::sha256(&[[0u8].as_slice(), &one].concat())
        );
    }

    #[test]
    fn every_proof_verifies_for_1_to_17_leaves() {
        for n in 1..=17 {
            let l = leaves(n);
            let tree = MerkleTree::new(&l);
            let r = tree.root();
            for (i, leaf) in l.iter().enumerate() {
                let proof = tree.prove(i).expect("index in range");
                assert!(verify(&r, leaf, &proof), "n = {n}, i = {i}");
                // The same proof does not prove a different leaf.
                let other = l[(i + 1) % n];
                if n > 1 {
                    assert!(!verify(&r, &other, &proof), "n = {n}, i = {i} other leaf");
                }
            }
            assert!(tree.prove(n).is_none());
        }
    }

    #[test]
    fn forged_proofs_fail() {
        let l = leaves(11);
        let tree = MerkleTree::new(&l);
        let r = tree.root();
        let good = tree.prove(6).expect("in range");
        assert!(verify(&r, &l[6], &good));

        let mut flipped = good.clone();
        flipped.path[1][0] ^= 1;
        assert!(!verify(&r, &l[6], &flipped));

        let mut moved = good.clone();
        moved.index = 7;
        assert!(!verify(&r, &l[6], &moved));

        // A size that changes the tree's shape around the leaf breaks the proof. (A size that
        // does not, 12 here, proves the same thing: the root, not the size, is authenticated.)
        for size in [3, 6, 7, 8] {
            let mut resized = good.clone();
            resized.tree_size = size;
            assert!(!verify(&r, &l[6], &resized), "size {size}");
        }

        let mut short = good.clone();
        short.path.pop();
        assert!(!verify(&r, &l[6], &short));

        let mut long = good.clone();
        long.path.push([7; 32]);
        assert!(!verify(&r, &l[6], &long));

        let out_of_range = Proof {
            index: 11,
            tree_size: 11,
            path: good.path.clone(),
        };
        assert!(!verify(&r, &l[6], &out_of_range));

        // An interior node presented as a leaf does not verify (domain separation).
        let two = MerkleTree::new(&l[..2]);
        let interior = node_hash(&leaf_hash(&l[0]), &leaf_hash(&l[1]));
        let fake = Proof {
            index: 0,
            tree_size: 1,
            path: vec![],
        };
        assert!(!verify(&two.root(), &interior, &fake));
    }

    #[test]
    fn proof_round_trips_through_borsh() {
        let proof = MerkleTree::new(&leaves(5)).prove(4).expect("in range");
        let bytes = borsh::to_vec(&proof).expect("serialise");
        assert_eq!(Proof::try_from_slice(&bytes).expect("decode"), proof);
    }
}
