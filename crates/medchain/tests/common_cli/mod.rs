//! `medchain` run as a person runs it, and a network made as a consortium makes one: each
//! hospital's `medchain keygen`, then `medchain init --validators` from the public keys.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use ledger::Genesis;
use ledger::master::{MasterKey, dev_key_path, read_node_key};

/// Runs `medchain args`, writing `stdin` to it if given.
pub fn medchain(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_medchain"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run medchain");
    if let Some(text) = stdin {
        // A command refused before it reads its password closes stdin: not an error here.
        let _ = child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes());
    }
    child.wait_with_output().expect("wait")
}

/// What a command printed, stdout then stderr.
pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The seed's four validators.
pub const NAMES: [&str; 4] = ["hospital", "clinic", "pharmacy", "insurance"];

/// A network made from public keys: `ROOT/net`, its operator key files in `ROOT/net.keys`
/// (where `medchain user --data-dir ROOT/net` finds hospital's by default), and
/// `ROOT/validators.toml`.
pub struct Consortium {
    pub dir: PathBuf,
    pub key_dir: PathBuf,
    pub validators: PathBuf,
    pub genesis: Genesis,
}

impl Consortium {
    /// Each validator's `keygen --key-file`, then `init --validators`.
    pub fn create(root: &Path) -> Consortium {
        let dir = root.join("net");
        let key_dir = root.join("net.keys");
        std::fs::create_dir_all(&key_dir).expect("key dir");
        let mut validators = String::new();
        for name in NAMES {
            let key_file = dev_key_path(&key_dir, name);
            let out = medchain(
                &[
                    "keygen",
                    "--name",
                    name,
                    "--dir",
                    &dir.display().to_string(),
                    "--key-file",
                    &key_file.display().to_string(),
                ],
                None,
            );
            assert!(out.status.success(), "keygen {name}: {}", text(&out));
            let printed = String::from_utf8_lossy(&out.stdout);
            let entry = &printed[printed.find("[[validators]]").expect("an entry")..];
            validators.push_str(entry);
            validators.push('\n');
        }
        let validators_path = root.join("validators.toml");
        std::fs::write(&validators_path, validators).expect("validators.toml");
        let out = medchain(
            &[
                "init",
                "--validators",
                &validators_path.display().to_string(),
                "--dir",
                &dir.display().to_string(),
            ],
            None,
        );
        assert!(out.status.success(), "init: {}", text(&out));
        let genesis = Genesis::load(&dir.join("genesis.toml")).expect("genesis written");
        Consortium {
            dir,
            key_dir,
            validators: validators_path,
            genesis,
        }
    }

    /// Validator `name`'s operator key.
    pub fn operator_key(&self, name: &str) -> MasterKey {
        MasterKey::from_key_file(&dev_key_path(&self.key_dir, name), &self.dir, false)
            .expect("operator key")
            .0
    }

    /// Validator `name`'s Ed25519 key, opened with its operator key.
    pub fn node_key(&self, name: &str) -> ed25519_dalek::SigningKey {
        read_node_key(
            &self.dir.join(name).join("node.key"),
            &self.operator_key(name),
            name,
        )
        .expect("node.key")
    }
}
