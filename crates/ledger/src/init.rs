//! Creating a new network on disk: keys, genesis file and each validator's store.
use std::path::Path;

use rand::RngCore;

use crate::genesis::{ChainParams, Genesis, ValidatorInfo};
use crate::store::{OpenOptions, Store};
use crate::{Error, Result, crypto};

/// The seed's four validators first, then `validator-5`, `validator-6`, ...
pub fn validator_names(n: usize) -> Vec<String> {
    const FIRST: [&str; 4] = ["hospital", "clinic", "pharmacy", "insurance"];
    (0..n)
        .map(|i| match FIRST.get(i) {
            Some(name) => (*name).to_string(),
            None => format!("validator-{}", i + 1),
        })
        .collect()
}

/// The files of a validator's chain that a new genesis makes meaningless: its key, its chain and
/// its consensus log (with their SQLite side files). `app.db` (accounts) is left alone.
const CHAIN_FILES: &[&str] = &[
    "node.key",
    "chain.db",
    "chain.db-wal",
    "chain.db-shm",
    "node.db",
    "node.db-wal",
    "node.db-shm",
];

/// Creates a network of validators `names` in `dir`: `DIR/<name>/node.key` (fresh Ed25519 key,
/// mode 0600), `DIR/<name>/chain.db` holding the genesis block, and `DIR/genesis.toml`, written
/// last so that its presence means the rest is complete. Refuses to replace an existing
/// genesis unless `force`, which first deletes those validators' keys, chains and logs.
/// `params` are the chain's (`[params]` of the genesis file).
pub fn init_network(
    dir: &Path,
    names: &[&str],
    force: bool,
    params: ChainParams,
) -> Result<Genesis> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    let genesis_path = dir.join("genesis.toml");
    if genesis_path.exists() && !force {
        return Err(Error::Genesis {
            path: genesis_path,
            reason: "already exists; replacing it discards the chain (use force)".into(),
        });
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut keys = Vec::with_capacity(names.len());
    for name in names {
        let vdir = dir.join(name);
        std::fs::create_dir_all(&vdir).map_err(io(&vdir))?;
        if force {
            for file in CHAIN_FILES {
                let path = vdir.join(file);
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io(&path)(e)),
                }
            }
        }
        keys.push(crypto::generate_key());
    }
    let validators = names
        .iter()
        .zip(&keys)
        .map(|(name, key)| ValidatorInfo {
            name: (*name).to_string(),
            public_key: key.verifying_key().to_bytes(),
        })
        .collect();
    let mut id = [0u8; 4];
    rand::rngs::OsRng.fill_bytes(&mut id);
    let created_at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let genesis = Genesis::with_params(
        format!("medchain-{}", hex::encode(id)),
        created_at_ms,
        params,
        validators,
    )
    .map_err(|reason| Error::Genesis {
        path: genesis_path.clone(),
        reason,
    })?;
    for (name, key) in names.iter().zip(&keys) {
        let vdir = dir.join(name);
        crypto::write_key_file(&vdir.join("node.key"), key)?;
        Store::open(&vdir.join("chain.db"), &genesis, OpenOptions::default())?;
    }
    genesis.save(&genesis_path)?;
    Ok(genesis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_seed_then_number() {
        assert_eq!(
            validator_names(6),
            [
                "hospital",
                "clinic",
                "pharmacy",
                "insurance",
                "validator-5",
                "validator-6"
            ]
        );
    }

    #[test]
    fn init_writes_keys_stores_and_genesis_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let names = ["a", "b", "c", "d"];
        let genesis =
            init_network(dir.path(), &names, false, ChainParams::default()).expect("init");
        let loaded = Genesis::load(&dir.path().join("genesis.toml")).expect("load");
        assert_eq!(loaded, genesis);
        for (i, name) in names.iter().enumerate() {
            let key = crypto::read_key_file(&dir.path().join(name).join("node.key")).expect("key");
            assert_eq!(key.verifying_key(), genesis.keys()[i]);
            let summary = crate::verify::verify_store(
                &dir.path().join(name).join("chain.db"),
                &genesis,
                &mut |_| {},
            )
            .expect("verifies");
            assert_eq!(summary.blocks, 1);
        }
        assert!(init_network(dir.path(), &names, false, ChainParams::default()).is_err());
        let again = init_network(dir.path(), &names, true, ChainParams::default()).expect("forced");
        assert_ne!(again.hash(), genesis.hash());
    }
}
