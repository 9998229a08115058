//! Test helpers (feature `testkit`): validator keys, a genesis, transactions and signed chains
//! of blocks whose certificates verify, for the tests of ledger, node and sim.
//!
//! Everything is deterministic (keys from fixed seeds, fixed times), so a failing test names
//! the same heights and hashes on every run.
use std::path::Path;

use ed25519_dalek::SigningKey;

use crate::block::{Block, BlockHeader, Certificate, Entry};
use crate::genesis::{Genesis, ValidatorInfo};
use crate::store::{Applied, OpenOptions, Store};
use crate::tx::{Checked, SignedTransaction, Transaction};
use crate::{Hash, Result, crypto, sha256};

/// The creation time of every test genesis (2023-11-14).
pub const GENESIS_TIME_MS: u64 = 1_700_000_000_000;

/// `n` validators with their secret keys and the genesis naming them.
pub struct TestNet {
    pub genesis: Genesis,
    pub keys: Vec<SigningKey>,
}

impl TestNet {
    /// `n` validators named like `medchain init` names them, with keys from seed 0.
    pub fn new(n: usize) -> TestNet {
        TestNet::with_seed(n, 0)
    }

    /// Another seed gives other keys and so another chain.
    pub fn with_seed(n: usize, seed: u64) -> TestNet {
        let keys: Vec<SigningKey> = (0..n)
            .map(|i| SigningKey::from_bytes(&sha256(format!("testkit {seed} {i}").as_bytes())))
            .collect();
        let validators = crate::validator_names(n)
            .into_iter()
            .zip(&keys)
            .map(|(name, key)| ValidatorInfo {
                name,
                public_key: key.verifying_key().to_bytes(),
            })
            .collect();
        let genesis = Genesis::new(format!("testkit-{seed}"), GENESIS_TIME_MS, validators)
            .unwrap_or_else(|e| panic!("testkit genesis: {e}"));
        TestNet { genesis, keys }
    }

    /// Signs `body` as accepted by `validator` at `timestamp_ms`.
    pub fn sign_tx(
        &self,
        body: Transaction,
        validator: u32,
        timestamp_ms: u64,
        nonce: [u8; 16],
    ) -> SignedTransaction {
        SignedTransaction::sign(
            body,
            timestamp_ms,
            nonce,
            validator,
            &self.keys[validator as usize],
        )
    }

    /// The `i`-th of a stream of distinct transactions that the state machine all applies:
    /// records, consent grants, consent uses and accesses in turn, over ten patients.
    pub fn sample_tx(&self, i: u64) -> SignedTransaction {
        let patient_id = format!("p{:03}", i % 10 + 1);
        let doctor_id = format!("d{:03}", i % 3 + 1);
        let body = match i % 4 {
            0 => Transaction::AddRecord {
                patient_id,
                doctor_id,
                department: "Cardiology".into(),
                diagnosis: format!("diagnosis {i}"),
                prescription: format!("prescription {i}"),
                notes: "follow up in two weeks".into(),
                consent_hash: sha256(format!("record consent {i}").as_bytes()),
            },
            1 => Transaction::ConsentGranted {
                patient_id,
                doctor_id,
                department: "Oncology".into(),
                purpose: "add_record".into(),
                consent_hash: sha256(format!("consent {i}").as_bytes()),
                expires_at_ms: GENESIS_TIME_MS + i * 1000 + 300_000,
            },
            2 => Transaction::ConsentUsed {
                patient_id,
                doctor_id,
                consent_hash: sha256(format!("consent {}", i - 1).as_bytes()),
            },
            _ => Transaction::Access {
                patient_id,
                reader_id: doctor_id,
                reader_role: "doctor".into(),
                consent_hash: None,
            },
        };
        let mut nonce = [0u8; 16];
        nonce[..8].copy_from_slice(&i.to_le_bytes());
        let validator = (i % self.keys.len() as u64) as u32;
        self.sign_tx(body, validator, GENESIS_TIME_MS + 1 + i, nonce)
    }

    /// [`TestNet::sample_tx`] `i` signed again by its validator with a point of order 8 added
    /// to the signature's `R` (and `s` computed for that `R`). `[s]B = R + [k]A` fails by that
    /// point, `[8][s]B = [8]R + [8][k]A` holds: the case on which Ed25519 rules disagree
    /// ("Taming the many EdDSAs", Chalkias et al., 2020). Under ZIP-215 it is valid; under
    /// ed25519-dalek's `verify_strict` it is not, and its batch check (cofactorless, with
    /// coefficients drawn from the batch) accepts it one time in eight.
    pub fn torsion_tx(&self, i: u64) -> SignedTransaction {
        use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
        use curve25519_dalek::scalar::{Scalar, clamp_integer};
        use sha2::{Digest, Sha512};

        let mut tx = self.sample_tx(i);
        let key = &self.keys[tx.validator as usize];
        // RFC 8032 §5.1.5: the secret scalar is the clamped first half of SHA-512(seed).
        let expanded = Sha512::digest(key.to_bytes());
        let mut lower = [0u8; 32];
        lower.copy_from_slice(&expanded[..32]);
        let secret = Scalar::from_bytes_mod_order(clamp_integer(lower));
        let message = crate::tx::signing_bytes(&tx.id());
        let nonce = Scalar::from_hash(
            Sha512::new()
                .chain_update(&expanded[32..])
                .chain_update(&message),
        );
        let r = (ED25519_BASEPOINT_POINT * nonce + EIGHT_TORSION[1]).compress();
        let k = Scalar::from_hash(
            Sha512::new()
                .chain_update(r.as_bytes())
                .chain_update(key.verifying_key().as_bytes())
                .chain_update(&message),
        );
        tx.signature[..32].copy_from_slice(r.as_bytes());
        tx.signature[32..].copy_from_slice((nonce + k * secret).as_bytes());
        tx
    }

    /// The certificate the first quorum of validators give a header in `view`.
    pub fn certify(&self, header: &BlockHeader, view: u64) -> Certificate {
        let signers: Vec<u32> = (0..self.genesis.quorum() as u32).collect();
        self.certify_by(header, view, &signers)
    }

    /// The certificate `signers` give a header in `view`.
    pub fn certify_by(&self, header: &BlockHeader, view: u64, signers: &[u32]) -> Certificate {
        let hash = header.hash();
        Certificate {
            view,
            signatures: signers
                .iter()
                .map(|&s| {
                    let sig = crypto::sign_commit(
                        &self.keys[s as usize],
                        &self.genesis.hash(),
                        view,
                        header.height,
                        &hash,
                    );
                    (s, sig)
                })
                .collect(),
        }
    }

    /// The block after `(height, hash)` holding `transactions`, proposed in view 0 by the
    /// primary of view 0 and certified by a quorum.
    pub fn next_block(&self, prev: (u64, Hash), transactions: Vec<SignedTransaction>) -> Block {
        self.block_of_entries(
            prev,
            transactions
                .iter()
                .map(SignedTransaction::to_request)
                .collect(),
        )
    }

    /// The block after `(height, hash)` holding `entries` as they are (valid transactions or
    /// not), proposed in view 0 by the primary of view 0 and certified by a quorum.
    pub fn block_of_entries(&self, prev: (u64, Hash), entries: Vec<Entry>) -> Block {
        let header = BlockHeader::build(prev.0 + 1, 0, 0, prev.1, &entries);
        let certificate = self.certify(&header, 0);
        Block {
            header,
            entries,
            certificate,
        }
    }

    /// What each entry of `block` carries, as a node decides it before appending.
    pub fn check(&self, block: &Block) -> Vec<Checked> {
        crypto::check_entries(self.genesis.keys(), &block.entries)
    }

    /// Appends `block` to `store` with the verdicts [`TestNet::check`] gives.
    pub fn append(&self, store: &mut Store, block: &Block) -> Result<Applied> {
        store.append_block(block, &self.check(block))
    }

    /// `blocks` blocks after genesis (heights 1..=blocks) of `txs_per_block` sample transactions.
    pub fn chain(&self, blocks: u64, txs_per_block: u64) -> Vec<Block> {
        let mut prev = (0, self.genesis.hash());
        let mut out = Vec::with_capacity(blocks as usize);
        for b in 0..blocks {
            let txs = (0..txs_per_block)
                .map(|i| self.sample_tx(b * txs_per_block + i))
                .collect();
            let block = self.next_block(prev, txs);
            prev = (block.header.height, block.hash());
            out.push(block);
        }
        out
    }

    /// A store at `path` holding genesis and `blocks` sample blocks.
    pub fn write_chain(&self, path: &Path, blocks: u64, txs_per_block: u64) -> Result<Store> {
        let mut store = Store::open(path, &self.genesis, OpenOptions::default())?;
        let (head, _) = store.head();
        for block in self
            .chain(blocks, txs_per_block)
            .into_iter()
            .skip(head as usize)
        {
            self.append(&mut store, &block)?;
        }
        Ok(store)
    }
}
