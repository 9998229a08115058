//! `medchain user`: this hospital's logins, and the people they are on chain.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use ledger::{Genesis, SignedTx, Signer, TxHeader};
use medchain::app::custody::CUSTODY_KEY_FILE;
use medchain::app::{
    AppDb, Custody, Enroller, Here, NewAccount, OutboxState, Role, read_password,
    validate_account_id,
};
use node::NodeConfig;

/// Manage this hospital's logins and the people they are on chain.
#[derive(Args, Debug)]
pub struct UserArgs {
    #[command(subcommand)]
    command: UserCommand,
}

#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Enroll a person on chain with this hospital as their home, and create their login. The
    /// password is read from a prompt (not echoed) or, when stdin is not a terminal, from its
    /// first line. The enrollment goes through the running validator, or waits until it starts.
    Add(AddArgs),
    /// List the logins, their person ids and where their chain steps stand.
    List(WhereArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum RoleArg {
    Patient,
    Doctor,
}

/// Which validator's store: the embedded deployment's hospital, or a validator's config.
#[derive(Args, Debug)]
struct WhereArgs {
    /// The data directory of `medchain serve` (its logins live in DIR/hospital/app.db).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "medchain-data",
        conflicts_with = "config"
    )]
    data_dir: PathBuf,
    /// A distributed validator's config instead: its logins live in its data_dir.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Example: medchain user add --role doctor --id d003 --department Neurology --name \"Ada Byron\""
)]
struct AddArgs {
    #[arg(long, value_enum)]
    role: RoleArg,
    /// The login people sign in with, e.g. p003 or d003.
    #[arg(long)]
    id: String,
    /// A doctor's department (required for doctors).
    #[arg(long)]
    department: Option<String>,
    /// A doctor's public professional name, shown to patients at every hospital (required for
    /// doctors; a patient's name is never on chain).
    #[arg(long)]
    name: Option<String>,
    /// Queue the enrollment and return, without waiting for the running validator.
    #[arg(long)]
    no_wait: bool,
    #[command(flatten)]
    place: WhereArgs,
}

/// One validator's folder, genesis and name, as a command finds them.
struct Validator {
    dir: PathBuf,
    genesis: Genesis,
    name: String,
}

impl WhereArgs {
    fn validator(&self) -> anyhow::Result<Validator> {
        let (dir, genesis, name) = match &self.config {
            Some(config) => {
                let config = NodeConfig::load(config)?;
                (config.data_dir, config.genesis, config.name)
            }
            None => {
                let name = node::EMBEDDED_VALIDATORS[0].to_string();
                (
                    node::validator_dir(&self.data_dir, &name),
                    self.data_dir.join("genesis.toml"),
                    name,
                )
            }
        };
        let genesis = Genesis::load(&genesis).with_context(|| {
            format!(
                "cannot read the chain's genesis {} (run `medchain init` or start the service once)",
                genesis.display()
            )
        })?;
        Ok(Validator { dir, genesis, name })
    }
}

fn open(dir: &Path) -> anyhow::Result<(AppDb, Custody)> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("app.db");
    let app = AppDb::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
    let custody = Custody::open(&dir.join(CUSTODY_KEY_FILE), &app)?;
    Ok((app, custody))
}

impl super::Run for UserArgs {
    fn run(self) -> anyhow::Result<ExitCode> {
        match self.command {
            UserCommand::Add(args) => add(args),
            UserCommand::List(args) => list(args),
        }
    }
}

fn add(args: AddArgs) -> anyhow::Result<ExitCode> {
    let role = match (args.role, &args.department, &args.name) {
        (RoleArg::Doctor, Some(_), Some(_)) => Role::Doctor,
        (RoleArg::Doctor, None, _) => {
            bail!("a doctor needs --department (e.g. --department Neurology)")
        }
        (RoleArg::Doctor, _, None) => {
            bail!(
                "a doctor needs --name, their public professional name (e.g. --name \"Ada Byron\")"
            )
        }
        (RoleArg::Patient, None, None) => Role::Patient,
        (RoleArg::Patient, _, _) => bail!("--department and --name are for doctors only"),
    };
    validate_account_id(&args.id)?;
    let validator = args.place.validator()?;
    let index = validator
        .genesis
        .index_of(&validator.name)
        .with_context(|| format!("{} is not a validator of this chain", validator.name))?;
    let key_path = validator.dir.join("node.key");
    let key = ledger::crypto::read_key_file(&key_path)
        .with_context(|| format!("cannot read the validator key {}", key_path.display()))?;
    let (app, custody) = open(&validator.dir)?;
    if app.account(&args.id)?.is_some() {
        bail!("login {} already exists", args.id);
    }
    let password = read_password(&format!("Password for {} {}: ", role.as_str(), args.id))?;
    let here = Here {
        genesis_hash: validator.genesis.hash(),
        index,
        validators: validator.genesis.len() as u32,
    };
    let sign = |mut header: TxHeader, body: Vec<u8>| {
        header.signer = Signer::Validator { index };
        SignedTx::sign(header, body, &here.genesis_hash, &key)
    };
    let by = Enroller {
        custody: &custody,
        here: &here,
        sign: &sign,
    };
    let (account, enrollment) = app
        .add_enrolled(
            &by,
            NewAccount {
                id: args.id.clone(),
                role,
                department: args.department,
                name: args.name,
                password,
            },
            None,
            &[],
            medchain::app::now_ms(),
        )
        .with_context(|| format!("cannot create {}", args.id))?;
    let person = account.person.map(hex::encode).unwrap_or_default();
    println!(
        "created {} {} (person {person}) at {}; enrolling on chain...",
        account.role, account.id, validator.name
    );
    if args.no_wait {
        println!("queued: enrolled by the validator's outbox");
        return Ok(ExitCode::SUCCESS);
    }
    // The running validator takes the step from the outbox within half a second.
    let started = Instant::now();
    loop {
        let row = app
            .outbox_row_of(&enrollment)?
            .context("the enrollment vanished from the outbox")?;
        match row.state {
            OutboxState::Done => {
                println!(
                    "enrolled: person {person}, block {}",
                    row.height.unwrap_or_default()
                );
                return Ok(ExitCode::SUCCESS);
            }
            OutboxState::Failed => {
                bail!(
                    "the chain refused the enrollment: {}",
                    row.reason.unwrap_or_default()
                )
            }
            OutboxState::Queued if started.elapsed() > Duration::from_secs(3) => {
                println!("queued: enrolled when the node starts");
                return Ok(ExitCode::SUCCESS);
            }
            _ if started.elapsed() > Duration::from_secs(30) => {
                println!("submitted, not applied yet: `medchain user list` shows when it is");
                return Ok(ExitCode::SUCCESS);
            }
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

fn list(args: WhereArgs) -> anyhow::Result<ExitCode> {
    let validator = args.validator()?;
    let (app, _) = open(&validator.dir)?;
    let outbox = app.outbox()?;
    println!(
        "{:<16} {:<8} {:<34} {:<12} chain steps",
        "login", "role", "person", "home"
    );
    for account in app.accounts()? {
        let home = account
            .home
            .and_then(|h| validator.genesis.validators().get(h as usize))
            .map_or("-".to_string(), |v| v.name.clone());
        let steps: Vec<String> = outbox
            .iter()
            .filter(|r| r.account.as_deref() == Some(account.id.as_str()))
            .map(|r| match (&r.state, &r.reason) {
                (OutboxState::Failed, Some(reason)) => format!("{} failed: {reason}", r.kind),
                (OutboxState::Done, _) => {
                    format!("{} done (block {})", r.kind, r.height.unwrap_or_default())
                }
                (state, _) => format!("{} {}", r.kind, state.as_str()),
            })
            .collect();
        println!(
            "{:<16} {:<8} {:<34} {:<12} {}",
            account.id,
            account.role.as_str(),
            account.person.map(hex::encode).unwrap_or("-".into()),
            home,
            if steps.is_empty() {
                "-".to_string()
            } else {
                steps.join("; ")
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}
