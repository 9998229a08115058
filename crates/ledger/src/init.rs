//! Creating a new network on disk: from its validators' public keys (a consortium, each
//! hospital making its own keys with `medchain keygen`), or every key in one place (a
//! development network).
use std::path::Path;

use rand::RngCore;

use crate::genesis::{ChainParams, Genesis, ValidatorInfo};
use crate::store::{OpenOptions, Store};
use crate::{Error, Result, crypto, files, master};

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

/// The files of a validator's folder that `init --force` keeps: its configuration, and a
/// sealed `node.key` whose public key is the validator's entry in the new genesis (made by
/// `medchain keygen` for this network) with its passphrase's `master.salt`. Everything else
/// (chain, consensus log, accounts, custody, key store, with their side files) belongs to the
/// old chain and is removed (docs/SECURITY.md, "Confidential records", §16.7).
const KEPT_BY_FORCE: &[&str] = &["node.toml"];

/// Creates a network in `dir` from its validators' public keys only (docs/SECURITY.md,
/// "Confidential records", §3.3): `DIR/<name>/chain.db` holding the genesis block for each,
/// and `DIR/genesis.toml`, written last so that its presence means the rest is complete; every
/// folder 0700 and file 0600. It writes no secret. Refuses to replace an existing genesis
/// unless `force`, which first empties each validator's folder of everything of the old chain
/// but its `node.toml` and a sealed `node.key` of its new entry. `params` are the chain's
/// (`[params]` of the genesis file).
pub fn init_from_public_keys(
    dir: &Path,
    validators: Vec<ValidatorInfo>,
    force: bool,
    params: ChainParams,
) -> Result<Genesis> {
    let genesis_path = dir.join("genesis.toml");
    if genesis_path.exists() && !force {
        return Err(Error::Genesis {
            path: genesis_path,
            reason: "already exists; replacing it discards the chain (use force)".into(),
        });
    }
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
    files::private_dir(dir)?;
    for validator in genesis.validators() {
        let vdir = dir.join(&validator.name);
        files::private_dir(&vdir)?;
        if force {
            clear_old_chain(&vdir, &validator.public_key)?;
        }
        Store::open(&vdir.join("chain.db"), &genesis, OpenOptions::default())?;
    }
    genesis.save(&genesis_path)?;
    Ok(genesis)
}

/// Removes from the validator folder `vdir` everything but what [`KEPT_BY_FORCE`] names and a
/// sealed `node.key` of `public_key` (with its `master.salt`).
fn clear_old_chain(vdir: &Path, public_key: &[u8; 32]) -> Result<()> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    let node_key = vdir.join(master::NODE_KEY_FILE);
    let keep_key = master::node_key_public(&node_key).is_ok_and(|key| &key == public_key);
    for entry in std::fs::read_dir(vdir).map_err(io(vdir))? {
        let entry = entry.map_err(io(vdir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let keep = KEPT_BY_FORCE.contains(&name.as_ref())
            || (keep_key && (name == master::NODE_KEY_FILE || name == master::SALT_FILE));
        if keep {
            continue;
        }
        let path = entry.path();
        let removed = if entry.file_type().map_err(io(&path))?.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(io(&path))?;
    }
    Ok(())
}

/// Creates a development network of validators `names` in `dir`, every key in one place
/// (`medchain serve`, `testnet`, the embedded cluster; docs/SECURITY.md, "Confidential
/// records", §3.3): each validator's operator key `KEY_DIR/<name>.key` (made if missing), its
/// Ed25519 key sealed under it in `DIR/<name>/node.key` (one already there that opens is kept),
/// then the network as [`init_from_public_keys`] makes it. Returns the genesis and the
/// operator keys, in the order of `names`.
pub fn init_dev_network(
    dir: &Path,
    key_dir: &Path,
    names: &[&str],
    params: ChainParams,
) -> Result<(Genesis, Vec<master::DevKey>)> {
    files::private_dir(dir)?;
    let mut validators = Vec::with_capacity(names.len());
    let mut keys = Vec::with_capacity(names.len());
    for name in names {
        crate::genesis::check_validator_name(name).map_err(Error::OperatorKey)?;
        let operator = master::dev_key(key_dir, name, dir)?;
        let vdir = dir.join(name);
        files::private_dir(&vdir)?;
        let path = vdir.join(master::NODE_KEY_FILE);
        let key = if path.exists() {
            master::read_node_key(&path, &operator.key, name)?
        } else {
            let key = crypto::generate_key();
            master::write_node_key(&path, &operator.key, name, &key)?;
            key
        };
        validators.push(ValidatorInfo {
            name: (*name).to_string(),
            public_key: key.verifying_key().to_bytes(),
        });
        keys.push(operator);
    }
    let genesis = init_from_public_keys(dir, validators, false, params)?;
    Ok((genesis, keys))
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
    fn init_writes_sealed_keys_stores_and_genesis_and_refuses_to_overwrite() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("net");
        let key_dir = root.path().join("net.keys");
        let names = ["a", "b", "c", "d"];
        let (genesis, operators) =
            init_dev_network(&dir, &key_dir, &names, ChainParams::default()).expect("init");
        let loaded = Genesis::load(&dir.join("genesis.toml")).expect("load");
        assert_eq!(loaded, genesis);
        for (i, name) in names.iter().enumerate() {
            assert!(key_dir.join(format!("{name}.key")).exists());
            let key = master::read_node_key(
                &dir.join(name).join(master::NODE_KEY_FILE),
                &operators[i].key,
                name,
            )
            .expect("key");
            assert_eq!(key.verifying_key(), genesis.keys()[i]);
            let summary = crate::verify::verify_store(
                &dir.join(name).join("chain.db"),
                &genesis,
                &mut |_| {},
            )
            .expect("verifies");
            assert_eq!(summary.blocks, 1);
        }
        let infos = genesis.validators().to_vec();
        assert!(init_from_public_keys(&dir, infos.clone(), false, ChainParams::default()).is_err());
        // Forced: the old chain goes, a sealed key of the validator's entry stays.
        std::fs::write(dir.join("a/app.db"), b"old accounts").expect("write");
        std::fs::write(dir.join("a/node.toml"), b"config").expect("write");
        let again =
            init_from_public_keys(&dir, infos, true, ChainParams::default()).expect("forced");
        assert_ne!(again.hash(), genesis.hash());
        assert!(!dir.join("a/app.db").exists());
        assert!(dir.join("a/node.toml").exists() && dir.join("a/node.key").exists());
        // A key that is not the entry's is removed with the rest.
        let mut swapped = again.validators().to_vec();
        swapped[1].public_key = crypto::generate_key().verifying_key().to_bytes();
        init_from_public_keys(&dir, swapped, true, ChainParams::default()).expect("forced");
        assert!(!dir.join("b/node.key").exists());
        assert!(dir.join("c/node.key").exists());
    }
}
