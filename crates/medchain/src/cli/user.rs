//! `medchain user`: this hospital's logins, and the people they are on chain.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use ledger::master::MasterKey;
use ledger::{Genesis, SignedTx, Signer, TxHeader};
use medchain::app::{
    AppDb, Custody, Enroller, Here, NewAccount, OutboxState, Role, ask_code, read_password,
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
    /// Create a login here for a person enrolled at another hospital, and ask the chain to let
    /// this hospital serve them: the person approves the printed code with a key they hold
    /// (on their device, or at their home hospital).
    Link(LinkArgs),
    /// Start the recovery of a person whose home is this hospital and who has lost every key:
    /// a new custodial key, usable after the chain's waiting period (72 h by default) unless
    /// one of their keys cancels it. Verify who they are in person first.
    Recover(RecoverArgs),
    /// List the logins, their person ids and where their chain steps stand.
    List(WhereArgs),
}

#[derive(Args, Debug)]
#[command(
    after_help = "Example: medchain user link --id c-0042 --person 0123456789abcdef0123456789abcdef"
)]
struct LinkArgs {
    /// The login the person signs in with at this hospital.
    #[arg(long)]
    id: String,
    /// The person's id (32 hex digits, shown on their dashboard at their home hospital).
    #[arg(long)]
    person: String,
    #[command(flatten)]
    place: WhereArgs,
}

#[derive(Args, Debug)]
#[command(after_help = "Example: medchain user recover --id p001")]
struct RecoverArgs {
    /// The person's login at this hospital (their home).
    #[arg(long)]
    id: String,
    #[command(flatten)]
    place: WhereArgs,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum RoleArg {
    Patient,
    Doctor,
}

/// Which validator's store: the embedded deployment's hospital, or a validator's config.
#[derive(Args, Debug)]
pub(super) struct WhereArgs {
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
    /// The validator's operator key (with --data-dir, by default DIR.keys/hospital.key).
    #[command(flatten)]
    keys: super::service::KeyArgs,
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

/// One validator's folder, genesis, name and operator key, as a command finds them.
pub(super) struct Validator {
    pub(super) dir: PathBuf,
    pub(super) genesis: Genesis,
    pub(super) name: String,
    operator_key: MasterKey,
}

/// This validator's key and place on its chain, for the steps it signs itself.
pub(super) struct ValidatorSigner {
    key: ed25519_dalek::SigningKey,
    pub(super) here: Here,
}

impl ValidatorSigner {
    pub(super) fn sign(&self, mut header: TxHeader, body: Vec<u8>) -> SignedTx {
        header.signer = Signer::Validator {
            index: self.here.index,
        };
        SignedTx::sign(header, body, &self.here.genesis_hash, &self.key)
    }
}

impl Validator {
    pub(super) fn signer(&self) -> anyhow::Result<ValidatorSigner> {
        let index = self
            .genesis
            .index_of(&self.name)
            .with_context(|| format!("{} is not a validator of this chain", self.name))?;
        let key_path = self.dir.join(ledger::master::NODE_KEY_FILE);
        let key = ledger::master::read_node_key(&key_path, &self.operator_key, &self.name)
            .with_context(|| format!("cannot open the validator key {}", key_path.display()))?;
        Ok(ValidatorSigner {
            key,
            here: Here {
                genesis_hash: self.genesis.hash(),
                index,
                validators: self.genesis.len() as u32,
            },
        })
    }
}

impl WhereArgs {
    pub(super) fn validator(&self) -> anyhow::Result<Validator> {
        let (dir, genesis, name, configured_key, default_key_dir) = match &self.config {
            Some(config) => {
                let config = NodeConfig::load(config)?;
                (
                    config.data_dir,
                    config.genesis,
                    config.name,
                    config.key_file,
                    None,
                )
            }
            None => {
                let name = node::EMBEDDED_VALIDATORS[0].to_string();
                (
                    node::validator_dir(&self.data_dir, &name),
                    self.data_dir.join("genesis.toml"),
                    name,
                    None,
                    Some(ledger::master::default_key_dir(&self.data_dir)),
                )
            }
        };
        let genesis = Genesis::load(&genesis).with_context(|| {
            format!(
                "cannot read the chain's genesis {} (run `medchain init` or start the service once)",
                genesis.display()
            )
        })?;
        let operator_key = self.keys.operator_key(
            configured_key.as_deref(),
            default_key_dir.as_deref(),
            &name,
            &dir,
        )?;
        Ok(Validator {
            dir,
            genesis,
            name,
            operator_key,
        })
    }
}

/// The validator's application store, bound to its chain (as the node binds it at start: what
/// belonged to an older chain is forgotten), and its custody, opened with its operator key.
pub(super) fn open(validator: &Validator) -> anyhow::Result<(AppDb, Custody)> {
    let dir = &validator.dir;
    ledger::files::private_dir(dir)?;
    let path = dir.join("app.db");
    let app = AppDb::open(&path, &validator.operator_key)
        .with_context(|| format!("cannot open {}", path.display()))?;
    if app.bind_chain(&validator.genesis.hash())? {
        println!("app.db belonged to another chain: its logins are enrolled again on this one");
    }
    let custody = Custody::open(&validator.operator_key, &app)?;
    Ok((app, custody))
}

impl super::Run for UserArgs {
    fn run(self) -> anyhow::Result<ExitCode> {
        match self.command {
            UserCommand::Add(args) => add(args),
            UserCommand::Link(args) => link(args),
            UserCommand::Recover(args) => recover(args),
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
    let signer = validator.signer()?;
    let (app, custody) = open(&validator)?;
    if app.account(&args.id)?.is_some() {
        bail!("login {} already exists", args.id);
    }
    let password = read_password(&format!("Password for {} {}: ", role.as_str(), args.id))?;
    let sign = |header: TxHeader, body: Vec<u8>| signer.sign(header, body);
    let by = Enroller {
        custody: &custody,
        here: &signer.here,
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
    if let Some(height) = wait_applied(&app, &enrollment, "enrollment")? {
        println!("enrolled: person {person}, block {height}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Waits for the outbox step `id` to apply through the running validator (which takes it
/// within half a second): its block's height; `None` (said) if the validator is not running
/// or it is not applied after 30 s; an error with the chain's reason if refused.
pub(super) fn wait_applied(
    app: &AppDb,
    id: &ledger::TxId,
    what: &str,
) -> anyhow::Result<Option<u64>> {
    let started = Instant::now();
    loop {
        let row = app
            .outbox_row_of(id)?
            .with_context(|| format!("the {what} vanished from the outbox"))?;
        match row.state {
            OutboxState::Done => return Ok(Some(row.height.unwrap_or_default())),
            OutboxState::Failed => {
                bail!(
                    "the chain refused the {what}: {}",
                    row.reason.unwrap_or_default()
                )
            }
            OutboxState::Queued if started.elapsed() > Duration::from_secs(3) => {
                println!("queued: done when the validator starts (`medchain user list` shows it)");
                return Ok(None);
            }
            _ if started.elapsed() > Duration::from_secs(30) => {
                println!("submitted, not applied yet: `medchain user list` shows when it is");
                return Ok(None);
            }
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

fn link(args: LinkArgs) -> anyhow::Result<ExitCode> {
    validate_account_id(&args.id)?;
    let person = medchain::app::flows::parse_person(&args.person)
        .context("--person must be 32 hex digits")?;
    let validator = args.place.validator()?;
    let signer = validator.signer()?;
    let chain = ledger::Reader::open(&validator.dir.join("chain.db"))
        .context("cannot read this validator's chain (start it once)")?;
    let row = ledger::Queries::person(&chain, &person)?.with_context(|| {
        format!(
            "person {} is not on this validator's chain (yet): check the id, or let the \
             validator catch up",
            args.person
        )
    })?;
    if row.home == signer.here.index {
        bail!(
            "{} is enrolled here: this hospital is their home",
            args.person
        );
    }
    let (app, custody) = open(&validator)?;
    if app.account(&args.id)?.is_some() {
        bail!("login {} already exists", args.id);
    }
    let role = match row.role {
        ledger::tx::Role::Patient => Role::Patient,
        ledger::tx::Role::Doctor => Role::Doctor,
    };
    let password = read_password(&format!("Password for {} {}: ", role.as_str(), args.id))?;
    let sign = |header: TxHeader, body: Vec<u8>| signer.sign(header, body);
    let by = Enroller {
        custody: &custody,
        here: &signer.here,
        sign: &sign,
    };
    let new = NewAccount {
        id: args.id.clone(),
        role,
        department: row.department.clone(),
        name: row.name.clone(),
        password,
    };
    let (_, ask) = app.add_linked(&by, new, person, row.home, medchain::app::now_ms())?;
    let home = validator
        .genesis
        .validators()
        .get(row.home as usize)
        .map_or("their home".to_string(), |v| v.name.clone());
    println!(
        "created {} at {}, linked once the person approves",
        args.id, validator.name
    );
    if wait_applied(&app, &ask, "ask")?.is_some() {
        println!(
            "code {}: the person approves it on a device that holds their key, or at {home}",
            ask_code(&ask)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn recover(args: RecoverArgs) -> anyhow::Result<ExitCode> {
    let validator = args.place.validator()?;
    let signer = validator.signer()?;
    let (app, custody) = open(&validator)?;
    let sign = |header: TxHeader, body: Vec<u8>| signer.sign(header, body);
    let by = Enroller {
        custody: &custody,
        here: &signer.here,
        sign: &sign,
    };
    let recovery = app
        .start_recovery(&by, &args.id, medchain::app::now_ms())
        .with_context(|| format!("cannot recover {}", args.id))?;
    println!(
        "recovery of {} queued: its new custodial key signs after the waiting period ({} h) \
         unless one of the person's keys cancels it; the person is told on every dashboard",
        args.id,
        validator.genesis.recovery_wait_ms() / 3_600_000
    );
    if let Some(height) = wait_applied(&app, &recovery, "recovery")? {
        println!("started in block {height}");
    }
    Ok(ExitCode::SUCCESS)
}

fn list(args: WhereArgs) -> anyhow::Result<ExitCode> {
    let validator = args.validator()?;
    let (app, _) = open(&validator)?;
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
                (OutboxState::Done, _) if r.kind == "ask" => format!(
                    "ask done (block {}): approve code {}",
                    r.height.unwrap_or_default(),
                    ask_code(&r.tx_id)
                ),
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
