//! Command-line parsing and dispatch. `anyhow` is used here only: the libraries return typed
//! errors, and this is where they become messages for a person.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod backup;
mod bench;
mod erasure;
mod init;
mod keygen;
mod node;
mod serve;
mod service;
mod serving;
mod soak;
mod testnet;
mod timing;
mod user;
mod verify;

/// What every subcommand does when run: its exit code, or an error to print (exit 1).
pub trait Run {
    fn run(self) -> anyhow::Result<ExitCode>;
}

/// Declares the subcommands: `Variant(module::Args)` with its doc comment as its help. Adding a
/// subcommand is one line here (and its module).
macro_rules! commands {
    ($($(#[$meta:meta])* $variant:ident($args:ty),)*) => {
        #[derive(Subcommand, Debug)]
        enum Command {
            $($(#[$meta])* $variant($args),)*
        }

        impl Run for Command {
            fn run(self) -> anyhow::Result<ExitCode> {
                match self {
                    $(Command::$variant(args) => args.run(),)*
                }
            }
        }
    };
}

commands! {
    /// Run the four embedded validators with the web UI and the API (the seed's server).
    Serve(serve::ServeArgs),
    /// Run one validator of a distributed network, configured by node.toml.
    Node(node::NodeArgs),
    /// Start a local network of validator processes, node i on 127.0.0.(i+1).
    Testnet(testnet::TestnetArgs),
    /// Manage this hospital's accounts.
    User(user::UserArgs),
    /// Answer patients' requests to erase what this hospital's doctors wrote.
    Erasure(erasure::ErasureArgs),
    /// Make this hospital's validator key, sealed under its operator key (prints the public key).
    Keygen(keygen::KeygenArgs),
    /// Create a new network from its validators' public keys: genesis.toml and each chain.
    Init(init::InitArgs),
    /// Verify every replica's chain in a data directory, and that the replicas agree.
    Verify(verify::VerifyArgs),
    /// Measure committed transactions per second and commit latency under load.
    Bench(bench::BenchArgs),
    /// Copy a validator's stores into one file while it runs (never its incarnation marker).
    Backup(backup::BackupArgs),
    /// Put a backup back into a stopped validator's folder; it then recovers from its peers.
    Restore(backup::RestoreArgs),
    /// Run four validator processes under load, SIGKILL up to f of them at random moments and
    /// restart them; then check that nothing acknowledged was lost or committed twice.
    Soak(soak::SoakArgs),
}

/// medchain: a permissioned blockchain for medical records, ordered by PBFT among a fixed set
/// of validators (hospital, clinic, pharmacy, insurance, ...).
#[derive(Parser, Debug)]
#[command(name = "medchain", version, propagate_version = true)]
struct Cli {
    /// How `node` and `serve` log to stderr: `text` for people, `json` for machines (one
    /// object a line; a line per committed block and per view change). Validators that
    /// `testnet`, `bench` and `soak` start log the same way.
    #[arg(
        long,
        global = true,
        value_enum,
        env = service::LOG_FORMAT_ENV,
        default_value_t = service::LogFormat::Text
    )]
    log_format: service::LogFormat,
    #[command(subcommand)]
    command: Command,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    service::set_log_format(cli.log_format);
    match cli.command.run() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
