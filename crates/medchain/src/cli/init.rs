//! `medchain init --validators`: a new network from its validators' public keys.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use ledger::ValidatorInfo;
use serde::Deserialize;

/// Writes DIR/genesis.toml (chain id, creation time, the validators' names and public keys) and,
/// for each validator, DIR/<name>/chain.db (its chain, holding the genesis block) and
/// DIR/<name>/node.incarnation (how often it started: a validator whose node.db is later missing
/// or older than this marker starts recovering, so that it cannot vote twice). It writes no
/// secret: each hospital made its own key with `medchain keygen` on its own machine, and
/// copies genesis.toml and its folder's chain.db and node.incarnation into its own DIR.
#[derive(Args, Debug)]
#[command(
    after_help = "validators.toml lists each validator, in order, as `medchain keygen` \
                        prints it:\n\n  [[validators]]\n  name = \"hospital\"\n  public_key = \
                        \"<64 hex digits>\"\n\nAny other field is refused (it may be a secret \
                        pasted by mistake).\n\nExample: medchain init --validators \
                        validators.toml --dir ./data && medchain verify --data-dir ./data"
)]
pub struct InitArgs {
    /// The validators' names and public keys (nothing secret: exchange it openly and compare
    /// the printed genesis hash out of band).
    #[arg(long, value_name = "FILE")]
    validators: PathBuf,
    /// Directory to create the network in (created 0700 if missing).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Replace an existing genesis.toml. This empties each validator's folder in DIR of the
    /// old chain (chain.db, node.db, app.db, keys.db, custody and their side files), keeping
    /// node.toml and a node.key made by `keygen` for the new genesis's key: the old chain and
    /// its accounts are gone.
    #[arg(long)]
    force: bool,
}

/// `validators.toml`: public keys only.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ValidatorsFile {
    validators: Vec<ValidatorEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ValidatorEntry {
    name: String,
    public_key: String,
}

/// Reads `validators.toml`, refusing any field it does not know.
fn read_validators(path: &Path) -> anyhow::Result<Vec<ValidatorInfo>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file: ValidatorsFile = toml::from_str(&text)
        .with_context(|| format!("{} is not a validators file", path.display()))?;
    file.validators
        .into_iter()
        .map(|entry| {
            let mut public_key = [0u8; 32];
            hex::decode_to_slice(entry.public_key.trim(), &mut public_key).with_context(|| {
                format!(
                    "{}: validator {:?}: public_key is not 64 hex digits",
                    path.display(),
                    entry.name
                )
            })?;
            Ok(ValidatorInfo {
                name: entry.name,
                public_key,
            })
        })
        .collect()
}

impl super::Run for InitArgs {
    fn run(self) -> anyhow::Result<ExitCode> {
        let validators = read_validators(&self.validators)?;
        let genesis =
            node::init_from_public_keys(&self.dir, validators, self.force, Default::default())
                .with_context(|| format!("cannot initialise {}", self.dir.display()))?;
        println!(
            "created chain {} with {} validators in {}",
            genesis.chain_id(),
            genesis.len(),
            self.dir.display()
        );
        println!(
            "  genesis hash {} (every hospital compares it out of band)",
            hex::encode(genesis.hash())
        );
        println!(
            "  quorum {} of {} (tolerates {} faulty)",
            genesis.quorum(),
            genesis.len(),
            ledger::crypto::max_faulty(genesis.len())
        );
        for v in genesis.validators() {
            let node_key = self.dir.join(&v.name).join(ledger::master::NODE_KEY_FILE);
            let here = match ledger::master::node_key_public(&node_key) {
                Ok(key) if key == v.public_key => "  (its node.key is here)",
                _ => "",
            };
            println!("  {:<12} {}{here}", v.name, hex::encode(v.public_key));
        }
        if genesis.len() < 4 {
            println!("note: fewer than 4 validators tolerate no faulty validator");
        }
        Ok(ExitCode::SUCCESS)
    }
}
