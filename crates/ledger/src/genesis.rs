//! The genesis file (`genesis.toml`) and the genesis block every node derives from it.
//!
//! ```toml
//! chain_id = "medchain-3f9a1c2e"
//! created_at_ms = 1767225600000
//!
//! [params]                          # optional; these are the defaults
//! block_time_tolerance_ms = 2000
//! recovery_wait_ms = 259200000
//! max_batch = 1000
//!
//! [[validators]]
//! name = "hospital"
//! public_key = "<64 hex digits>"
//! ```
//!
//! The parameters must be equal on every validator (each bounds what every correct validator
//! accepts), so they are in the genesis file and covered by its hash.
//!
//! A validator's index in `validators` is its pbft replica id. The genesis block has height 0,
//! a zero previous hash, no transactions and no certificate; its `merkle_root` is a digest of the
//! whole file's content (chain id, time, validators), so that the genesis hash, which prefixes
//! every signature, names this chain and this validator set and no other.
use std::path::Path;

use borsh::BorshSerialize;
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use crate::block::{Block, BlockHeader, Certificate};
use crate::{Error, Hash, Result, crypto};

const GENESIS_TAG: &[u8] = b"medchain/genesis/v2";

/// The chain's parameters: the genesis file's `[params]` table. Every validator must use the
/// same values, so they are covered by the genesis hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, BorshSerialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChainParams {
    /// How far a proposal's block time may be from a backup's clock for it to prepare
    /// (docs/SECURITY.md, "Block time").
    pub block_time_tolerance_ms: u64,
    /// How long a recovered key waits before it may sign, during which the person's keys can
    /// revoke it (72 hours by default).
    pub recovery_wait_ms: u64,
    /// Transactions per block at most.
    pub max_batch: u32,
}

impl Default for ChainParams {
    fn default() -> Self {
        ChainParams {
            block_time_tolerance_ms: 2_000,
            recovery_wait_ms: 72 * 3_600_000,
            max_batch: 1_000,
        }
    }
}

impl ChainParams {
    fn check(&self) -> std::result::Result<(), String> {
        if self.block_time_tolerance_ms == 0 {
            return Err("params.block_time_tolerance_ms must be positive".into());
        }
        if self.recovery_wait_ms == 0 {
            return Err("params.recovery_wait_ms must be positive".into());
        }
        if self.max_batch == 0 || self.max_batch > MAX_BATCH_LIMIT {
            return Err(format!(
                "params.max_batch must be between 1 and {MAX_BATCH_LIMIT}"
            ));
        }
        Ok(())
    }
}

/// The largest `max_batch` a genesis may set: a block then closes at most one epoch of the
/// store's index (2^16 rows, docs/STORAGE.md §1), which memory drops only after its run is
/// written.
pub const MAX_BATCH_LIMIT: u32 = 1 << 16;

/// A validator's name is also the name of its folder (and of its development key file): 1-64 of
/// `[A-Za-z0-9_-]`.
pub fn check_validator_name(name: &str) -> std::result::Result<(), String> {
    let name_ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if name_ok {
        Ok(())
    } else {
        Err(format!("name {name:?} must be 1-64 of [A-Za-z0-9_-]"))
    }
}

/// One validator as the genesis file lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, BorshSerialize)]
pub struct ValidatorInfo {
    /// Also the name of its directory under the data directory.
    pub name: String,
    #[serde(with = "hex_key")]
    pub public_key: [u8; 32],
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, BorshSerialize)]
#[serde(deny_unknown_fields)]
struct GenesisFile {
    chain_id: String,
    created_at_ms: u64,
    #[serde(default)]
    params: ChainParams,
    validators: Vec<ValidatorInfo>,
}

/// A validated genesis: the file's content with the keys parsed and the genesis hash derived
/// once. Its fields are read-only so the derived values cannot go stale.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Genesis {
    file: GenesisFile,
    keys: Vec<VerifyingKey>,
    block: Block,
    hash: Hash,
}

impl Genesis {
    /// [`Genesis::with_params`] with the default parameters.
    pub fn new(
        chain_id: impl Into<String>,
        created_at_ms: u64,
        validators: Vec<ValidatorInfo>,
    ) -> std::result::Result<Genesis, String> {
        Genesis::with_params(chain_id, created_at_ms, ChainParams::default(), validators)
    }

    /// Checks and derives: at least one validator, names usable as directory names and distinct,
    /// keys valid and distinct, parameters positive.
    pub fn with_params(
        chain_id: impl Into<String>,
        created_at_ms: u64,
        params: ChainParams,
        validators: Vec<ValidatorInfo>,
    ) -> std::result::Result<Genesis, String> {
        let file = GenesisFile {
            chain_id: chain_id.into(),
            created_at_ms,
            params,
            validators,
        };
        file.params.check()?;
        if file.chain_id.trim().is_empty() {
            return Err("chain_id is empty".into());
        }
        if file.validators.is_empty() {
            return Err("no validators".into());
        }
        if file.validators.len() > u32::MAX as usize {
            return Err("too many validators".into());
        }
        let mut keys = Vec::with_capacity(file.validators.len());
        for (i, v) in file.validators.iter().enumerate() {
            check_validator_name(&v.name).map_err(|e| format!("validator {i}: {e}"))?;
            if file.validators[..i].iter().any(|w| w.name == v.name) {
                return Err(format!("validator name {:?} appears twice", v.name));
            }
            if file.validators[..i]
                .iter()
                .any(|w| w.public_key == v.public_key)
            {
                return Err(format!("validator {:?}: public key appears twice", v.name));
            }
            let key = crypto::validator_key(&v.public_key)
                .map_err(|e| format!("validator {:?}: {e}", v.name))?;
            keys.push(key);
        }
        let mut content = GENESIS_TAG.to_vec();
        BorshSerialize::serialize(&file, &mut content).map_err(|e| format!("encoding: {e}"))?;
        let header = BlockHeader {
            height: 0,
            prev_hash: [0; 32],
            timestamp_ms: file.created_at_ms,
            view: 0,
            seq: 0,
            proposer: 0,
            merkle_root: crate::sha256(&content),
        };
        let block = Block {
            header,
            entries: Vec::new(),
            certificate: Certificate::default(),
        };
        let hash = header.hash();
        Ok(Genesis {
            file,
            keys,
            block,
            hash,
        })
    }

    /// Parses the text of a genesis file; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Genesis> {
        let err = |reason: String| Error::Genesis {
            path: path.to_path_buf(),
            reason,
        };
        let file: GenesisFile = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        Genesis::with_params(
            file.chain_id,
            file.created_at_ms,
            file.params,
            file.validators,
        )
        .map_err(err)
    }

    pub fn load(path: &Path) -> Result<Genesis> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Genesis::parse(&text, path)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(&self.file).unwrap_or_default()
    }

    /// Writes the file durably and privately (0600: a temporary file, synced, renamed).
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::files::write_private_file(path, self.to_toml().as_bytes())
    }

    pub fn chain_id(&self) -> &str {
        &self.file.chain_id
    }

    pub fn created_at_ms(&self) -> u64 {
        self.file.created_at_ms
    }

    /// The chain's parameters (`[params]`).
    pub fn params(&self) -> &ChainParams {
        &self.file.params
    }

    /// How far a block's time may be from a backup's clock ([`ChainParams`]).
    pub fn block_time_tolerance_ms(&self) -> u64 {
        self.file.params.block_time_tolerance_ms
    }

    /// How long a recovered key waits before it may sign ([`ChainParams`]).
    pub fn recovery_wait_ms(&self) -> u64 {
        self.file.params.recovery_wait_ms
    }

    /// Transactions per block at most ([`ChainParams`]).
    pub fn max_batch(&self) -> usize {
        self.file.params.max_batch as usize
    }

    pub fn validators(&self) -> &[ValidatorInfo] {
        &self.file.validators
    }

    /// The validators' public keys, indexed by replica id.
    pub fn keys(&self) -> &[VerifyingKey] {
        &self.keys
    }

    /// The number of validators, `n`.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Never true for a validated genesis; here because `len` is.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Signers a certificate needs ([`crypto::quorum`]; `2f + 1` when `n = 3f + 1`).
    pub fn quorum(&self) -> usize {
        crypto::quorum(self.len())
    }

    /// The replica id of the validator called `name`.
    pub fn index_of(&self, name: &str) -> Option<u32> {
        self.file
            .validators
            .iter()
            .position(|v| v.name == name)
            .map(|i| i as u32)
    }

    /// The genesis block (height 0).
    pub fn block(&self) -> &Block {
        &self.block
    }

    /// The genesis block hash: prev of block 1, and the prefix of every signature on this chain.
    pub fn hash(&self) -> Hash {
        self.hash
    }
}

mod hex_key {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(key: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(key))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        hex::decode(text.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| D::Error::custom("public_key must be 64 hex digits"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validators(n: usize) -> Vec<ValidatorInfo> {
        (0..n)
            .map(|i| ValidatorInfo {
                name: format!("v{i}"),
                public_key: ed25519_dalek::SigningKey::from_bytes(&[i as u8 + 1; 32])
                    .verifying_key()
                    .to_bytes(),
            })
            .collect()
    }

    #[test]
    fn a_validator_key_of_small_order_or_in_a_second_encoding_is_refused() {
        // The all-zero bytes are a point of order 4; `1, 0, ...` is the identity.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        // The identity again, with the sign bit set: the same point, another encoding.
        let mut identity_signed = identity;
        identity_signed[31] |= 0x80;
        for weak in [[0u8; 32], identity, identity_signed] {
            let mut vs = validators(4);
            vs[2].public_key = weak;
            let err = Genesis::new("a", 1, vs).expect_err("a weak key is refused");
            assert!(err.contains("\"v2\""), "{err}");
        }
        // A point of large order whose y is below 19 also has the encoding y + p (the field
        // element is reduced on reading): that second encoding is refused, the first accepted.
        let (canonical, second) = (2..19u8)
            .flat_map(|y| [(y, 0u8), (y, 0x80)])
            .find_map(|(y, sign)| {
                let mut canonical = [0u8; 32];
                canonical[0] = y;
                canonical[31] = sign;
                let mut second = [0xffu8; 32];
                second[0] = 0xed + y;
                second[31] = 0x7f | sign;
                crypto::verifying_key(&canonical)
                    .is_ok_and(|k| !k.is_weak())
                    .then_some((canonical, second))
            })
            .expect("some y below 19 is on the curve with a point of large order");
        let mut vs = validators(4);
        vs[1].public_key = second;
        let err = Genesis::new("a", 1, vs.clone()).expect_err("a second encoding is refused");
        assert!(err.contains("canonical"), "{err}");
        // No such point is in the prime-order subgroup: its canonical encoding is refused too,
        // for its torsion (one secret key signs for `A` and every `A + T`, red team s17).
        vs[1].public_key = canonical;
        let err = Genesis::new("a", 1, vs).expect_err("a point with a torsion component");
        assert!(err.contains("prime-order subgroup"), "{err}");
        let strong = validators(4);
        Genesis::new("a", 1, strong).expect("canonical strong keys are accepted");
    }

    #[test]
    fn round_trips_through_toml_with_the_same_hash() {
        let g = Genesis::new("medchain-test", 1_700_000_000_000, validators(4)).expect("valid");
        let again = Genesis::parse(&g.to_toml(), Path::new("genesis.toml")).expect("parses");
        assert_eq!(again, g);
        assert_eq!(again.hash(), g.hash());
        assert_eq!(g.block().hash(), g.hash());
        assert_eq!(g.block().header.height, 0);
        assert!(g.block().entries.is_empty());
        assert!(g.block().certificate.signatures.is_empty());
        assert_eq!(g.quorum(), 3);
        assert_eq!(g.index_of("v2"), Some(2));
        assert!(g.to_toml().contains("chain_id = \"medchain-test\""));
    }

    #[test]
    fn the_hash_names_chain_time_and_validators() {
        let base = Genesis::new("a", 1, validators(4)).expect("valid").hash();
        assert_ne!(
            Genesis::new("b", 1, validators(4)).expect("valid").hash(),
            base
        );
        assert_ne!(
            Genesis::new("a", 2, validators(4)).expect("valid").hash(),
            base
        );
        assert_ne!(
            Genesis::new("a", 1, validators(5)).expect("valid").hash(),
            base
        );
        let mut swapped = validators(4);
        swapped.swap(0, 1);
        assert_ne!(Genesis::new("a", 1, swapped).expect("valid").hash(), base);
        let params = ChainParams {
            recovery_wait_ms: 1,
            ..ChainParams::default()
        };
        let other = Genesis::with_params("a", 1, params, validators(4)).expect("valid");
        assert_ne!(other.hash(), base);
        assert_eq!(other.recovery_wait_ms(), 1);
    }

    #[test]
    fn params_default_when_absent_and_round_trip_when_set() {
        let path = Path::new("g.toml");
        let g = Genesis::new("a", 1, validators(1)).expect("valid");
        assert_eq!(g.block_time_tolerance_ms(), 2_000);
        assert_eq!(g.recovery_wait_ms(), 259_200_000);
        assert_eq!(g.max_batch(), 1_000);
        let without = g.to_toml().replace("[params]", "[ignored]");
        assert!(
            Genesis::parse(&without, path).is_err(),
            "unknown tables are refused"
        );
        let text = format!(
            "chain_id = \"a\"\ncreated_at_ms = 1\n[[validators]]\nname = \"v0\"\npublic_key = \"{}\"\n",
            hex::encode(validators(1)[0].public_key)
        );
        assert_eq!(
            Genesis::parse(&text, path).expect("defaults").hash(),
            g.hash()
        );
        let tuned = Genesis::with_params(
            "a",
            1,
            ChainParams {
                block_time_tolerance_ms: 500,
                recovery_wait_ms: 60_000,
                max_batch: 10,
            },
            validators(1),
        )
        .expect("valid");
        let again = Genesis::parse(&tuned.to_toml(), path).expect("parses");
        assert_eq!(again, tuned);
        assert_eq!(again.max_batch(), 10);
        let zero = ChainParams {
            max_batch: 0,
            ..ChainParams::default()
        };
        assert!(Genesis::with_params("a", 1, zero, validators(1)).is_err());
        let huge = ChainParams {
            max_batch: MAX_BATCH_LIMIT + 1,
            ..ChainParams::default()
        };
        assert!(Genesis::with_params("a", 1, huge, validators(1)).is_err());
    }

    #[test]
    fn inconsistent_files_are_refused() {
        assert!(Genesis::new("a", 1, vec![]).is_err());
        assert!(Genesis::new(" ", 1, validators(1)).is_err());
        let mut dup_name = validators(2);
        dup_name[1].name = "v0".into();
        assert!(Genesis::new("a", 1, dup_name).is_err());
        let mut dup_key = validators(2);
        dup_key[1].public_key = dup_key[0].public_key;
        assert!(Genesis::new("a", 1, dup_key).is_err());
        let mut bad_name = validators(1);
        bad_name[0].name = "../etc".into();
        assert!(Genesis::new("a", 1, bad_name).is_err());
        let path = Path::new("g.toml");
        assert!(Genesis::parse("chain_id = 3", path).is_err());
        let bad_hex = "chain_id = \"a\"\ncreated_at_ms = 1\n[[validators]]\nname = \"x\"\npublic_key = \"abc\"\n";
        let err = Genesis::parse(bad_hex, path).expect_err("bad key");
        assert!(err.to_string().contains("g.toml"), "{err}");
    }
}
