//! The operator key: the one secret a validator's operator supplies at start, from which every
//! key that seals a secret in the data directory is derived (docs/SECURITY.md, "Confidential
//! records", §3.3 and §16.10, .22). A copied data directory alone opens nothing.
//!
//! It comes from a **key file** (32 random bytes in hex, owner-only, outside the data
//! directory: [`MasterKey::from_key_file`]) or a **passphrase** (Argon2id with the salt and
//! parameters of `DIR/<name>/master.salt`: [`MasterKey::from_passphrase`]). HKDF-SHA256 derives
//! one key per [`Purpose`]; none is ever stored. The validator's Ed25519 key, `node.key`, is
//! sealed under the [`Purpose::NodeKey`] subkey ([`read_node_key`], [`write_node_key`]).
//!
//! Development networks (`medchain serve`, `testnet`, the embedded cluster of the tests) keep
//! one operator key per validator in a key directory beside the data directory
//! ([`dev_key`], [`default_key_dir`]); they warn rather than refuse a key on the data's disk.
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use ed25519_dalek::SigningKey;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::files;
use crate::{Error, Result};

/// The HKDF salt of every subkey.
const HKDF_SALT: &[u8] = b"medchain/master/v1";

/// The file of a validator's sealed Ed25519 key, in its folder.
pub const NODE_KEY_FILE: &str = "node.key";

/// The file of the passphrase's salt and Argon2id parameters, in the validator's folder.
pub const SALT_FILE: &str = "master.salt";

/// The fewest characters a passphrase may have.
pub const MIN_PASSPHRASE_CHARS: usize = 12;

/// The sealed `node.key`'s format, also the first part of its associated data.
const NODE_KEY_FORMAT: &str = "medchain/node-key/v1";

/// Argon2id's memory (KiB), passes and lanes for a new `master.salt` (about 0.3 s).
const ARGON2_MEMORY_KIB: u32 = 65_536;
const ARGON2_ITERATIONS: u32 = 3;
const ARGON2_LANES: u32 = 1;

/// What a subkey seals or keys: the HKDF `info` of each (§3.3's table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Seals `DIR/<name>/node.key`, the validator's Ed25519 secret.
    NodeKey,
    /// Seals the custody rows of `app.db` (the people's custodial keys).
    Custody,
    /// Seals the rows of `keys.db` (the data keys).
    Keystore,
    /// Keys the HMAC-SHA256 of the in-person consent codes.
    CodeMac,
}

impl Purpose {
    /// The HKDF `info` of this purpose.
    pub fn info(self) -> &'static [u8] {
        match self {
            Purpose::NodeKey => b"medchain/node-key/v1",
            Purpose::Custody => b"medchain/custody/v2",
            Purpose::Keystore => b"medchain/keystore/v1",
            Purpose::CodeMac => b"medchain/code-mac/v1",
        }
    }
}

/// The operator key. Never printed, zeroed when dropped.
#[derive(Clone)]
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// An operator key given as bytes: where an HSM or secret manager unwraps it at start, and
    /// in tests.
    pub fn from_bytes(bytes: Zeroizing<[u8; 32]>) -> Self {
        MasterKey(bytes)
    }

    /// Reads the key file `path` (32 bytes in hex) for the data directory `data_dir`.
    ///
    /// Always refused: a file group or others may access (as ssh refuses), anything but a
    /// regular file, and a file inside `data_dir` (both paths canonicalized, so no link
    /// or `..` hides it). With `strict` (`medchain node`) also refused, and otherwise returned as
    /// a warning for the caller to print: a file with more than one hard link (a second name may
    /// sit anywhere, the data directory included) and a file on the same filesystem as
    /// `data_dir` (one stolen disk would hold both the key and what it opens).
    pub fn from_key_file(
        path: &Path,
        data_dir: &Path,
        strict: bool,
    ) -> Result<(MasterKey, Option<String>)> {
        let refuse = |reason: String| Error::OperatorKey(format!("{}: {reason}", path.display()));
        let real = path
            .canonicalize()
            .map_err(|e| refuse(format!("cannot read the operator key file: {e}")))?;
        let data = resolve(data_dir);
        if real.starts_with(&data) {
            return Err(refuse(format!(
                "the operator key file is inside the data directory {}: keep it apart from what \
                 it protects (another volume, or where a secret manager puts it)",
                data.display()
            )));
        }
        let warning = check_key_file(&real, &data, strict).map_err(refuse)?;
        let text = Zeroizing::new(std::fs::read_to_string(&real).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?);
        let mut key = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text.trim(), key.as_mut())
            .map_err(|_| refuse("not an operator key (32 bytes of hex)".into()))?;
        let warning = warning.map(|why| format!("{}: {why}", path.display()));
        Ok((MasterKey(key), warning))
    }

    /// Creates the key file `path`: 32 random bytes in hex, 0600, synced; refuses to replace
    /// an existing file (the data sealed under it would be lost).
    pub fn create_key_file(path: &Path) -> Result<()> {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(key.as_mut());
        let text = Zeroizing::new(format!("{}\n", hex::encode(key.as_ref())));
        files::write_new_private_file(path, text.as_bytes())
    }

    /// The operator key of `passphrase` under the salt and Argon2id parameters of `salt_file`
    /// (made by [`create_salt_file`]). A passphrase has at least [`MIN_PASSPHRASE_CHARS`]
    /// characters.
    pub fn from_passphrase(passphrase: &str, salt_file: &Path) -> Result<MasterKey> {
        if passphrase.chars().count() < MIN_PASSPHRASE_CHARS {
            return Err(Error::OperatorKey(format!(
                "a passphrase needs at least {MIN_PASSPHRASE_CHARS} characters"
            )));
        }
        let bad = |reason: String| Error::OperatorKey(format!("{}: {reason}", salt_file.display()));
        let text = match std::fs::read_to_string(salt_file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(bad(
                    "missing: it is made with the validator's key by `medchain keygen \
                     --passphrase`, and is needed with the passphrase"
                        .into(),
                ));
            }
            Err(source) => {
                return Err(Error::Io {
                    path: salt_file.to_path_buf(),
                    source,
                });
            }
        };
        let salt: SaltFile = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if salt.algorithm != "argon2id" || salt.version != 0x13 {
            return Err(bad(format!(
                "{} version {} is not Argon2id version 19",
                salt.algorithm, salt.version
            )));
        }
        let salt_bytes = hex::decode(&salt.salt)
            .ok()
            .filter(|bytes| bytes.len() >= 16)
            .ok_or_else(|| bad("the salt is not 16 or more bytes of hex".into()))?;
        let params = argon2::Params::new(salt.memory_kib, salt.iterations, salt.lanes, Some(32))
            .map_err(|e| bad(format!("Argon2id parameters: {e}")))?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut key = Zeroizing::new([0u8; 32]);
        argon
            .hash_password_into(passphrase.as_bytes(), &salt_bytes, key.as_mut())
            .map_err(|e| bad(format!("Argon2id: {e}")))?;
        Ok(MasterKey(key))
    }

    /// The subkey for `purpose`: HKDF-SHA256 with salt `medchain/master/v1` and the purpose's
    /// info. Derived on demand, never stored.
    pub fn subkey(&self, purpose: Purpose) -> Zeroizing<[u8; 32]> {
        let hkdf = hkdf::Hkdf::<sha2::Sha256>::new(Some(HKDF_SALT), self.0.as_ref());
        let mut okm = Zeroizing::new([0u8; 32]);
        hkdf.expand(purpose.info(), okm.as_mut())
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        okm
    }
}

/// `path` made absolute with links resolved, as far as it exists (a data directory not made
/// yet is resolved through its nearest existing parent).
fn resolve(path: &Path) -> PathBuf {
    if let Ok(real) = path.canonicalize() {
        return real;
    }
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    match (absolute.parent(), absolute.file_name()) {
        (Some(parent), Some(name)) if parent != absolute => resolve(parent).join(name),
        _ => absolute,
    }
}

/// The checks of a key file by what it is (§16.10); `Err` refuses, `Ok(Some)` warns.
#[cfg(unix)]
fn check_key_file(real: &Path, data: &Path, strict: bool) -> Result<Option<String>, String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(real).map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        return Err("the operator key must be a regular file".into());
    }
    if files::is_shared(meta.mode() & 0o777) {
        return Err(format!(
            "the operator key file has mode {:o}: group or others may read it (chmod 600 it)",
            meta.mode() & 0o777
        ));
    }
    let mut risks = Vec::new();
    if meta.nlink() > 1 {
        risks.push(format!(
            "it has {} hard links (another name may sit in the data directory)",
            meta.nlink()
        ));
    }
    // The data directory, or its nearest existing parent, names the filesystem it lives on.
    let data_dev = data
        .ancestors()
        .find_map(|dir| std::fs::metadata(dir).ok())
        .map(|meta| meta.dev());
    if data_dev == Some(meta.dev()) {
        risks.push(format!(
            "it is on the same filesystem as the data directory {}",
            data.display()
        ));
    }
    if risks.is_empty() {
        return Ok(None);
    }
    let risks = risks.join(", and ");
    if strict {
        Err(format!(
            "{risks}: keep the operator key on another volume, or where a secret manager or \
             systemd's LoadCredential= puts it"
        ))
    } else {
        Ok(Some(format!(
            "{risks}: this is not protected against a thief of this disk"
        )))
    }
}

#[cfg(not(unix))]
fn check_key_file(_real: &Path, _data: &Path, _strict: bool) -> Result<Option<String>, String> {
    Ok(None)
}

/// `master.salt`: the passphrase's salt and Argon2id parameters (not secret).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SaltFile {
    algorithm: String,
    version: u32,
    memory_kib: u32,
    iterations: u32,
    lanes: u32,
    salt: String,
}

/// Writes a new `master.salt` at `path`: a random 16-byte salt and Argon2id's parameters
/// (65,536 KiB, 3 passes, 1 lane). Refuses to replace one (the passphrase would no longer open
/// what is sealed).
pub fn create_salt_file(path: &Path) -> Result<()> {
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let file = SaltFile {
        algorithm: "argon2id".into(),
        version: 0x13,
        memory_kib: ARGON2_MEMORY_KIB,
        iterations: ARGON2_ITERATIONS,
        lanes: ARGON2_LANES,
        salt: hex::encode(salt),
    };
    let text = format!(
        "# medchain: how the operator's passphrase becomes this validator's operator key\n\
         # (Argon2id). Not secret, but needed with the passphrase: back it up with node.key.\n{}",
        toml::to_string(&file).map_err(|e| Error::OperatorKey(e.to_string()))?
    );
    files::write_new_private_file(path, text.as_bytes())
}

/// The sealed `node.key` as written.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeKeyFile {
    format: String,
    /// The validator's name in the genesis.
    name: String,
    /// Hex of the Ed25519 public key (public: it is in the genesis).
    public_key: String,
    /// Hex of the 24-byte nonce, then XChaCha20-Poly1305 of the 32-byte secret.
    sealed: String,
}

/// The associated data of a sealed `node.key`: it binds the secret to the validator's name and
/// public key (§16.22), so a file renamed to another validator's folder does not open.
fn node_key_ad(name: &str, public_key: &[u8; 32]) -> Vec<u8> {
    let mut ad = Vec::with_capacity(NODE_KEY_FORMAT.len() + 4 + name.len() + 32);
    ad.extend_from_slice(NODE_KEY_FORMAT.as_bytes());
    ad.extend_from_slice(&(name.len() as u32).to_le_bytes());
    ad.extend_from_slice(name.as_bytes());
    ad.extend_from_slice(public_key);
    ad
}

/// Writes validator `name`'s Ed25519 `key` to the new file `path` (0600, synced), sealed with
/// XChaCha20-Poly1305 under `master`'s [`Purpose::NodeKey`] subkey. Refuses to replace a file.
pub fn write_node_key(path: &Path, master: &MasterKey, name: &str, key: &SigningKey) -> Result<()> {
    let public_key = key.verifying_key().to_bytes();
    let subkey = master.subkey(Purpose::NodeKey);
    let mut nonce = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let ciphertext = XChaCha20Poly1305::new(subkey.as_ref().into())
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: key.as_bytes(),
                aad: &node_key_ad(name, &public_key),
            },
        )
        .map_err(|_| Error::OperatorKey(format!("cannot seal {}", path.display())))?;
    let mut sealed = nonce.to_vec();
    sealed.extend_from_slice(&ciphertext);
    let file = NodeKeyFile {
        format: NODE_KEY_FORMAT.into(),
        name: name.into(),
        public_key: hex::encode(public_key),
        sealed: hex::encode(sealed),
    };
    let text = format!(
        "# medchain: validator {name:?}'s Ed25519 key, sealed under its operator key\n\
         # (a key file or a passphrase; docs/SECURITY.md, \"Confidential records\", §3.3).\n{}",
        toml::to_string(&file).map_err(|e| Error::OperatorKey(e.to_string()))?
    );
    files::write_new_private_file(path, text.as_bytes())
}

/// Reads `path` as a sealed node key: its file, or why it is not one.
fn read_node_key_file(path: &Path) -> Result<NodeKeyFile> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let trimmed = text.trim();
    if trimmed.len() == 64 && trimmed.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::OperatorKey(format!(
            "{} was made by an older medchain (a key in the clear): run `medchain init --force` \
             (for `serve` and `testnet`: start with a new data directory)",
            path.display()
        )));
    }
    let file: NodeKeyFile = toml::from_str(&text).map_err(|e| {
        Error::OperatorKey(format!("{} is not a sealed node key: {e}", path.display()))
    })?;
    if file.format != NODE_KEY_FORMAT {
        return Err(Error::OperatorKey(format!(
            "{} has format {:?}, this medchain reads {NODE_KEY_FORMAT:?}",
            path.display(),
            file.format
        )));
    }
    Ok(file)
}

/// The public key of the sealed node key `path`, read without the operator key (it is public).
pub fn node_key_public(path: &Path) -> Result<[u8; 32]> {
    let file = read_node_key_file(path)?;
    decode_public(path, &file.public_key)
}

fn decode_public(path: &Path, text: &str) -> Result<[u8; 32]> {
    let mut public_key = [0u8; 32];
    hex::decode_to_slice(text, &mut public_key).map_err(|_| {
        Error::OperatorKey(format!(
            "{}: public_key is not 32 bytes of hex",
            path.display()
        ))
    })?;
    Ok(public_key)
}

/// Opens validator `name`'s sealed Ed25519 key at `path` with `master`. A key in the clear
/// (made by an older medchain), a key of another validator, and a key that does not open under
/// `master` are refused, each saying so.
pub fn read_node_key(path: &Path, master: &MasterKey, name: &str) -> Result<SigningKey> {
    let file = read_node_key_file(path)?;
    if file.name != name {
        return Err(Error::OperatorKey(format!(
            "{} is validator '{}''s key, not '{name}''s",
            path.display(),
            file.name
        )));
    }
    let public_key = decode_public(path, &file.public_key)?;
    let does_not_open = || Error::OperatorKey(format!("this key does not open {}", path.display()));
    let sealed = hex::decode(&file.sealed).map_err(|_| does_not_open())?;
    if sealed.len() < 24 {
        return Err(does_not_open());
    }
    let (nonce, ciphertext) = sealed.split_at(24);
    let subkey = master.subkey(Purpose::NodeKey);
    let plain = Zeroizing::new(
        XChaCha20Poly1305::new(subkey.as_ref().into())
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &node_key_ad(name, &public_key),
                },
            )
            .map_err(|_| does_not_open())?,
    );
    let secret: &[u8; 32] = plain.as_slice().try_into().map_err(|_| does_not_open())?;
    let key = SigningKey::from_bytes(secret);
    if key.verifying_key().to_bytes() != public_key {
        return Err(does_not_open());
    }
    Ok(key)
}

/// The key directory of a development network in `data_dir`: `DIR.keys`, beside it.
pub fn default_key_dir(data_dir: &Path) -> PathBuf {
    let data = resolve(data_dir);
    let name = data
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "medchain-data".into());
    data.with_file_name(format!("{name}.keys"))
}

/// The operator key of one validator of a development network, from its key directory.
pub struct DevKey {
    pub key: MasterKey,
    /// `KEY_DIR/<name>.key`.
    pub path: PathBuf,
    /// Whether it was made now (the caller says where, and that it is to be backed up apart
    /// from the data).
    pub created: bool,
    /// Why it is weaker than a deployment's key, for the caller to print (§16.10).
    pub warning: Option<String>,
}

/// Validator `name`'s operator key file in the key directory of a development network.
pub fn dev_key_path(key_dir: &Path, name: &str) -> PathBuf {
    key_dir.join(format!("{name}.key"))
}

/// Opens validator `name`'s operator key `KEY_DIR/<name>.key` of a development network whose
/// data directory is `data_dir`, making the folder (0700) and the key on first use. Checked as
/// [`MasterKey::from_key_file`] does, not strictly: a key on the data's disk is a warning.
/// (An existing network's keys are opened with `from_key_file`, never made anew: a new key
/// would open nothing.)
pub fn dev_key(key_dir: &Path, name: &str, data_dir: &Path) -> Result<DevKey> {
    files::private_dir(key_dir)?;
    let path = dev_key_path(key_dir, name);
    let created = !path.exists();
    if created {
        MasterKey::create_key_file(&path)?;
    }
    let (key, warning) = MasterKey::from_key_file(&path, data_dir, false)?;
    Ok(DevKey {
        key,
        path,
        created,
        warning,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new key file in `dir` (made if missing), opened for the data directory `dir/data`.
    fn key_file(dir: &Path) -> (PathBuf, MasterKey) {
        files::private_dir(dir).unwrap();
        let path = dir.join("operator.key");
        MasterKey::create_key_file(&path).unwrap();
        let data = dir.join("data");
        files::private_dir(&data).unwrap();
        let (key, _) = MasterKey::from_key_file(&path, &data, false).unwrap();
        (path, key)
    }

    #[test]
    fn subkeys_are_distinct_per_purpose_and_stable_per_key() {
        let root = tempfile::tempdir().unwrap();
        let (path, key) = key_file(root.path());
        let (again, _) = MasterKey::from_key_file(&path, &root.path().join("data"), false).unwrap();
        let purposes = [
            Purpose::NodeKey,
            Purpose::Custody,
            Purpose::Keystore,
            Purpose::CodeMac,
        ];
        for (i, a) in purposes.iter().enumerate() {
            assert_eq!(*key.subkey(*a), *again.subkey(*a));
            for b in &purposes[i + 1..] {
                assert_ne!(*key.subkey(*a), *key.subkey(*b));
            }
        }
        let other = key_file(&root.path().join("x")).1;
        assert_ne!(
            *key.subkey(Purpose::NodeKey),
            *other.subkey(Purpose::NodeKey)
        );
        assert_eq!(format!("{key:?}"), "MasterKey(..)");
    }

    /// HKDF-SHA256 of RFC 5869's construction, checked against a vector computed apart (Python
    /// `hmac`): a change of salt, info or algorithm would silently make every store unreadable.
    #[test]
    fn subkey_derivation_is_hkdf_sha256_with_the_documented_salt_and_info() {
        let key = MasterKey(Zeroizing::new([7u8; 32]));
        assert_eq!(
            hex::encode(key.subkey(Purpose::NodeKey).as_ref()),
            EXPECTED_NODE_KEY_SUBKEY
        );
    }
    const EXPECTED_NODE_KEY_SUBKEY: &str =
        "05fb470382f8a1f69cbfab59e5d12abc6e5a9d33c006a53dd50e84905ffa2485";

    #[cfg(unix)]
    #[test]
    fn a_key_file_is_refused_by_what_it_is() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        files::private_dir(&data).unwrap();
        // Inside the data directory, even through a `..` or a link: refused, strict or not.
        let inside = data.join("operator.key");
        MasterKey::create_key_file(&inside).unwrap();
        for path in [inside.clone(), data.join("../data/operator.key")] {
            let error = MasterKey::from_key_file(&path, &data, false).unwrap_err();
            assert!(
                error.to_string().contains("inside the data directory"),
                "{error}"
            );
        }
        let link = root.path().join("link.key");
        std::os::unix::fs::symlink(&inside, &link).unwrap();
        assert!(MasterKey::from_key_file(&link, &data, false).is_err());

        // Readable by others: refused.
        let outside = root.path().join("operator.key");
        MasterKey::create_key_file(&outside).unwrap();
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o640)).unwrap();
        let error = MasterKey::from_key_file(&outside, &data, false).unwrap_err();
        assert!(error.to_string().contains("group or others"), "{error}");
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o600)).unwrap();

        // On the data's filesystem: a warning, refused when strict.
        let (_, warning) = MasterKey::from_key_file(&outside, &data, false).unwrap();
        assert!(
            warning
                .unwrap()
                .contains("not protected against a thief of this disk"),
        );
        let error = MasterKey::from_key_file(&outside, &data, true).unwrap_err();
        assert!(error.to_string().contains("same filesystem"), "{error}");

        // A second hard link: named in the warning.
        std::fs::hard_link(&outside, root.path().join("second.key")).unwrap();
        let (_, warning) = MasterKey::from_key_file(&outside, &data, false).unwrap();
        assert!(warning.unwrap().contains("2 hard links"));

        // Not hex: refused.
        let junk = root.path().join("junk.key");
        files::write_new_private_file(&junk, b"not a key").unwrap();
        assert!(MasterKey::from_key_file(&junk, &data, false).is_err());
    }

    #[test]
    fn a_node_key_opens_only_with_its_operator_key_and_name() {
        let root = tempfile::tempdir().unwrap();
        let (_, master) = key_file(root.path());
        let (_, other) = key_file(&root.path().join("other"));
        let path = root.path().join("node.key");
        let key = crate::crypto::generate_key();
        write_node_key(&path, &master, "clinic", &key).unwrap();
        assert_eq!(
            read_node_key(&path, &master, "clinic").unwrap().to_bytes(),
            key.to_bytes()
        );
        assert_eq!(
            node_key_public(&path).unwrap(),
            key.verifying_key().to_bytes()
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains(&hex::encode(key.to_bytes())),
            "sealed, not in clear"
        );
        let error = read_node_key(&path, &other, "clinic").unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("this key does not open {}", path.display())
        );
        assert!(read_node_key(&path, &master, "hospital").is_err());
        // The name in the file edited to another validator's: the associated data refuses it.
        let renamed = root.path().join("renamed.key");
        std::fs::write(&renamed, text.replace("\"clinic\"", "\"hospital\"")).unwrap();
        let error = read_node_key(&renamed, &master, "hospital").unwrap_err();
        assert!(error.to_string().contains("does not open"), "{error}");
        assert!(
            write_node_key(&path, &master, "clinic", &key).is_err(),
            "never replaced"
        );

        let plain = root.path().join("plain.key");
        std::fs::write(&plain, format!("{}\n", hex::encode(key.to_bytes()))).unwrap();
        let error = read_node_key(&plain, &master, "clinic").unwrap_err();
        assert!(
            error.to_string().contains("made by an older medchain")
                && error.to_string().contains("run `medchain init --force`"),
            "{error}"
        );
    }

    #[test]
    fn a_passphrase_derives_the_same_key_under_its_salt_only() {
        let root = tempfile::tempdir().unwrap();
        let salt = root.path().join(SALT_FILE);
        let error = MasterKey::from_passphrase("correct horse battery", &salt).unwrap_err();
        assert!(error.to_string().contains("missing"), "{error}");
        create_salt_file(&salt).unwrap();
        assert!(create_salt_file(&salt).is_err(), "never replaced");
        let short = MasterKey::from_passphrase("eleven char", &salt).unwrap_err();
        assert!(short.to_string().contains("at least 12"), "{short}");
        let a = MasterKey::from_passphrase("correct horse battery", &salt).unwrap();
        let b = MasterKey::from_passphrase("correct horse battery", &salt).unwrap();
        let c = MasterKey::from_passphrase("correct horse batterz", &salt).unwrap();
        assert_eq!(*a.subkey(Purpose::Custody), *b.subkey(Purpose::Custody));
        assert_ne!(*a.subkey(Purpose::Custody), *c.subkey(Purpose::Custody));
        let text = std::fs::read_to_string(&salt).unwrap();
        assert!(text.contains("memory_kib = 65536") && text.contains("iterations = 3"));
        let other_salt = root.path().join("other.salt");
        create_salt_file(&other_salt).unwrap();
        let d = MasterKey::from_passphrase("correct horse battery", &other_salt).unwrap();
        assert_ne!(*a.subkey(Purpose::Custody), *d.subkey(Purpose::Custody));
    }

    #[test]
    fn a_development_key_is_made_once_beside_the_data() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("net");
        files::private_dir(&data).unwrap();
        let key_dir = default_key_dir(&data);
        assert_eq!(key_dir, resolve(&root.path().join("net.keys")));
        let first = dev_key(&key_dir, "hospital", &data).unwrap();
        assert!(first.created);
        assert!(first.warning.is_some(), "a key on the data's disk is named");
        let again = dev_key(&key_dir, "hospital", &data).unwrap();
        assert!(!again.created);
        assert_eq!(
            *first.key.subkey(Purpose::CodeMac),
            *again.key.subkey(Purpose::CodeMac)
        );
    }
}
