//! `medchain keygen`: one hospital's validator key, made on its own machine (docs/SECURITY.md,
//! "Confidential records", §3.3, red team finding 1).
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use ledger::master::{self, MasterKey};

use super::service;

/// Makes the operator key file if it does not exist (never under DIR), or derives the operator
/// key from a passphrase (with a new DIR/NAME/master.salt); makes the validator's Ed25519 key
/// and writes it sealed under the operator key to DIR/NAME/node.key; prints the public key for
/// validators.toml, and nothing secret. The secret key never leaves this machine. Back up the
/// key file (or the passphrase and master.salt) apart from DIR: without it nothing in DIR
/// opens.
#[derive(Args, Debug)]
#[command(
    group(clap::ArgGroup::new("source").required(true).args(["key_file", "passphrase"])),
    after_help = "Example: medchain keygen --name hospital --dir /srv/medchain --key-file /etc/medchain/hospital.key"
)]
pub struct KeygenArgs {
    /// The validator's name in the network (1-64 of A-Z a-z 0-9 _ -).
    #[arg(long)]
    name: String,
    /// The network's directory on this machine; the key goes to DIR/NAME/node.key.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// The operator key file, made if missing: keep it outside DIR, on another volume (or
    /// where a secret manager or systemd's LoadCredential= puts it).
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// Derive the operator key from a passphrase (12 characters or more), prompted twice or
    /// read from MEDCHAIN_PASSPHRASE.
    #[arg(long)]
    passphrase: bool,
}

impl super::Run for KeygenArgs {
    fn run(self) -> anyhow::Result<ExitCode> {
        ledger::genesis::check_validator_name(&self.name).map_err(anyhow::Error::msg)?;
        let vdir = node::validator_dir(&self.dir, &self.name);
        ledger::files::private_dir(&vdir)?;
        let node_key = vdir.join(master::NODE_KEY_FILE);
        anyhow::ensure!(
            !node_key.exists(),
            "{} exists: a validator's key is made once (its public key is in the network's \
             genesis)",
            node_key.display()
        );
        let operator_key = match &self.key_file {
            Some(path) => {
                if !path.exists() {
                    MasterKey::create_key_file(path)?;
                    println!(
                        "made the operator key {}: back it up apart from {} (without it \
                         nothing there opens)",
                        path.display(),
                        self.dir.display()
                    );
                }
                let (key, warning) = MasterKey::from_key_file(path, &self.dir, false)?;
                if let Some(warning) = warning {
                    eprintln!(
                        "warning: {warning}; `medchain node` refuses it: move it to another \
                         volume before starting"
                    );
                }
                key
            }
            None => {
                let salt = vdir.join(master::SALT_FILE);
                if !salt.exists() {
                    master::create_salt_file(&salt)?;
                }
                let passphrase = service::read_passphrase(true)?;
                MasterKey::from_passphrase(&passphrase, &salt)?
            }
        };
        let key = ledger::crypto::generate_key();
        master::write_node_key(&node_key, &operator_key, &self.name, &key)
            .with_context(|| format!("cannot write {}", node_key.display()))?;
        println!(
            "validator {}: key sealed in {}; its entry for validators.toml:",
            self.name,
            node_key.display()
        );
        println!();
        println!("[[validators]]");
        println!("name = {:?}", self.name);
        println!(
            "public_key = \"{}\"",
            hex::encode(key.verifying_key().to_bytes())
        );
        Ok(ExitCode::SUCCESS)
    }
}
