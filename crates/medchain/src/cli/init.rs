//! `medchain init`: a new network in a directory.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

/// Writes DIR/genesis.toml (chain id, creation time, validators' names and public keys) and, for
/// each validator, DIR/<name>/node.key (its Ed25519 secret key, readable only by you) and
/// DIR/<name>/chain.db (its chain, holding the genesis block) and DIR/<name>/node.incarnation
/// (how often it started: a validator whose node.db is later missing or older than this marker
/// starts recovering, so that it cannot vote twice). The first four validators are
/// named hospital, clinic, pharmacy and insurance, then validator-5, validator-6, ...
#[derive(Args, Debug)]
#[command(
    after_help = "Example: medchain init --validators 4 --dir ./data && medchain verify --data-dir ./data"
)]
pub struct InitArgs {
    /// Number of validators; n validators tolerate (n - 1) / 3 faulty ones (4 tolerate 1).
    #[arg(long, value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    validators: u16,
    /// Directory to create the network in (created if missing).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Replace an existing genesis.toml. This deletes the validators' keys, chains and
    /// consensus logs (node.key, chain.db, node.db) in DIR and writes new incarnation markers:
    /// the old chain is gone.
    #[arg(long)]
    force: bool,
}

impl super::Run for InitArgs {
    fn run(self) -> anyhow::Result<ExitCode> {
        let names = ledger::validator_names(self.validators as usize);
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let genesis = node::init_network(&self.dir, &refs, self.force, Default::default())
            .with_context(|| format!("cannot initialise {}", self.dir.display()))?;
        println!(
            "created chain {} with {} validators in {}",
            genesis.chain_id(),
            genesis.len(),
            self.dir.display()
        );
        println!("  genesis hash {}", hex::encode(genesis.hash()));
        println!(
            "  quorum {} of {} (tolerates {} faulty)",
            genesis.quorum(),
            genesis.len(),
            ledger::crypto::max_faulty(genesis.len())
        );
        for v in genesis.validators() {
            println!("  {:<12} {}", v.name, hex::encode(v.public_key));
        }
        if genesis.len() < 4 {
            println!("note: fewer than 4 validators tolerate no faulty validator");
        }
        Ok(ExitCode::SUCCESS)
    }
}
