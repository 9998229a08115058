//! `medchain user`: this hospital's accounts (kept in app.db, never on chain).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use medchain::app::{AppDb, Role};
use node::NodeConfig;

/// Manage this hospital's accounts.
#[derive(Args, Debug)]
pub struct UserArgs {
    #[command(subcommand)]
    command: UserCommand,
}

#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Create an account. The password is read from a prompt (not echoed) or, when stdin is not
    /// a terminal, from its first line.
    Add(AddArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum RoleArg {
    Patient,
    Doctor,
}

#[derive(Args, Debug)]
#[command(after_help = "Example: medchain user add --role doctor --id d003 --department Neurology")]
struct AddArgs {
    #[arg(long, value_enum)]
    role: RoleArg,
    /// The account id people log in with, e.g. p003 or d003.
    #[arg(long)]
    id: String,
    /// A doctor's department (required for doctors).
    #[arg(long)]
    department: Option<String>,
    /// The data directory of `medchain serve` (its accounts live in DIR/hospital/app.db).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "medchain-data",
        conflicts_with = "config"
    )]
    data_dir: PathBuf,
    /// A distributed validator's config instead: its accounts live in its data_dir.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

impl super::Run for UserArgs {
    fn run(self) -> anyhow::Result<ExitCode> {
        let UserCommand::Add(args) = self.command;
        let (role, department) = match (args.role, args.department) {
            (RoleArg::Doctor, Some(department)) => (Role::Doctor, Some(department)),
            (RoleArg::Doctor, None) => {
                bail!("a doctor needs --department (e.g. --department Neurology)")
            }
            (RoleArg::Patient, None) => (Role::Patient, None),
            (RoleArg::Patient, Some(_)) => bail!("--department is for doctors only"),
        };
        let path = match &args.config {
            Some(config) => NodeConfig::load(config)?.data_dir.join("app.db"),
            None => {
                node::validator_dir(&args.data_dir, node::EMBEDDED_VALIDATORS[0]).join("app.db")
            }
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let app = AppDb::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        let account = app
            .add_user_interactive(
                role,
                &args.id,
                department.as_deref(),
                medchain::app::now_ms(),
            )
            .with_context(|| format!("cannot create {}", args.id))?;
        println!(
            "created {} {} in {}",
            account.role,
            account.id,
            path.display()
        );
        Ok(ExitCode::SUCCESS)
    }
}
