//! `medchain backup` and `medchain restore`: a consistent copy of a validator's stores taken
//! while it runs, in one file, and putting it back so that the validator recovers (issue 12).
//!
//! The file is a tar archive (0600): `medchain-backup.toml` (what it holds), `genesis.toml`,
//! and per validator `<name>/` with its stores `chain.db`, `node.db`, `keys.db`, `app.db`
//! (each copied by SQLite's online backup API, whatever is present; node.db's copy also holds
//! the validator's journal of acknowledged transactions, `node::copy_into_backup`) and the
//! files a restore on a new disk needs (`node.key`, sealed; `master.salt`; `node.toml`).
//! Nothing in it is a secret in clear: `node.key`, `keys.db` and the custody rows of `app.db`
//! stay sealed under the operator key, which is never in a backup. Never the incarnation marker either: a validator
//! restored from a backup must start recovering (issue 8, docs/ARCHITECTURE.md "Files of one
//! validator"), and the copy of node.db is marked so that it does whatever marker it finds
//! ([`node::mark_backup_copy`]). A restore keeps a keys.db in place that is newer than the
//! backup's ([`keys_choice`]): it holds the keys of the records sealed since (red team of
//! issue 10, round 3, break 3). An app.db in place that holds every login, custodial key and
//! queued transaction of the backup's is kept too ([`app_choice`]): the people enrolled and the
//! transactions acknowledged since are in it alone.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail, ensure};
use clap::Args;
use ledger::Genesis;
use ledger::master::{NODE_KEY_FILE, SALT_FILE};
use node::NodeConfig;
use rusqlite::backup::StepResult;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde::{Deserialize, Serialize};

/// The archive's table of contents, its first entry.
const MANIFEST: &str = "medchain-backup.toml";
/// The version of the archive's layout.
const FORMAT: u32 = 1;
const GENESIS_FILE: &str = "genesis.toml";
const CONFIG_FILE: &str = "node.toml";
const KEYS_DB: &str = "keys.db";
const APP_DB: &str = "app.db";
/// A validator's stores, in the order they are copied. A transaction's steps reach app.db,
/// then keys.db (its data key, sealed before it leaves), then node.db (accepted), then
/// chain.db (committed): each store is copied before the ones whose writes come first, so
/// that every step a copy holds has the steps it came from in the copies taken after it, as
/// after a crash (a keys.db ahead of chain.db is the state §5.6 of docs/SECURITY.md resumes).
/// Except node.db, copied first: its protocol records name proposals staged in chain.db
/// before them (docs/STORAGE.md §3), which a later copy of chain.db holds (or the blocks
/// they became, or, dropped by a compaction, they were about decided sequence numbers and are
/// left out on restore). A transaction accepted after node.db's copy is in neither unless
/// chain.db's copy holds its block, as one accepted after the last copy always was.
const STORES: [&str; 4] = ["node.db", CHAIN_DB, KEYS_DB, APP_DB];
/// The store whose presence makes a folder a validator's.
const CHAIN_DB: &str = "chain.db";
/// The other files of a validator that a restore on a new disk needs; none is a secret in
/// clear (`node.key` is sealed under the operator key).
const FILES: [&str; 3] = [NODE_KEY_FILE, SALT_FILE, CONFIG_FILE];

/// Copies a validator's stores into one file while it runs (SQLite's online backup API: each
/// store is one consistent snapshot), with its sealed node.key and its settings, never the
/// incarnation marker; nothing in it opens without the operator key, which is not in it
/// (keep that apart). A validator restored from it (`medchain restore`) catches up from its
/// peers and votes only once they are past every vote it may have cast.
#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  medchain backup --config /srv/medchain/hospital/node.toml --to /backup/hospital-$(date +%F).tar\n  medchain backup --data-dir medchain-data --to serve.tar     # every validator of `medchain serve`"
)]
pub struct BackupArgs {
    #[command(flatten)]
    place: Which,
    /// The backup file to write: a tar archive, readable by its owner only. An existing file
    /// is never replaced.
    #[arg(long, value_name = "FILE")]
    to: PathBuf,
    /// Only keys.db: the data keys, small (about 130 bytes a record), the one store whose loss
    /// loses content for good; take it often (docs/SECURITY.md, §5.6).
    #[arg(long)]
    keys_only: bool,
}

/// Puts a backup's stores back into a stopped validator's folder (its incarnation marker is
/// left as it is): the SQLite files are replaced, their old -wal and -shm removed; a missing
/// node.key, master.salt or node.toml is written from the backup. A keys.db in place that is
/// at least as new as the backup's is kept (it holds the keys of records sealed since, which
/// may have no other holder). At its next start the validator recovers: it catches up from
/// its peers, and votes only once they are past every vote it may have cast before
/// ("recovering": true in /api/status until then).
#[derive(Args, Debug)]
#[command(
    after_help = "keys.db is kept, not replaced, when the one in place belongs to this chain and has processed the chain at least as far as the backup's: the data keys of records sealed since the backup are in it alone (a record a hospital's doctor wrote for one of its own patients has no other holder). It is replaced when missing, unreadable or damaged, of another chain, older than the backup's, or with --replace-keys.\n\napp.db is kept when the one in place holds every login, custodial key and queued transaction of the backup's (it is newer: people enrolled and transactions acknowledged since are in it alone); replaced when missing, unreadable, of another chain, or a part of the backup's. When each holds rows the other lacks, restore stops before writing anything and says so: choose with --replace-app or --keep-app.\n\nExample: medchain restore --from /backup/hospital-2026-12-01.tar --config /srv/medchain/hospital/node.toml"
)]
pub struct RestoreArgs {
    /// The backup file (`medchain backup --to`).
    #[arg(long, value_name = "FILE")]
    from: PathBuf,
    #[command(flatten)]
    place: Which,
    /// Put the backup's keys.db back even over a newer one: the keys of records sealed since
    /// the backup that no other validator holds are lost (their records stay "waiting").
    #[arg(long)]
    replace_keys: bool,
    /// Put the backup's app.db back even over one holding logins, custodial keys or queued
    /// transactions the backup lacks (they are lost: those people sign in and enrol again).
    #[arg(long, conflicts_with = "keep_app")]
    replace_app: bool,
    /// Keep the app.db in place even when the backup's holds logins, custodial keys or queued
    /// transactions it lacks.
    #[arg(long)]
    keep_app: bool,
}

/// Which validators: every one of a network's directory, one validator's folder, or the one
/// of a node.toml. A restore writes a missing genesis.toml into a network's directory.
#[derive(Args, Debug)]
struct Which {
    /// The data directory of `medchain serve` or of a testnet (every validator under it), or
    /// one validator's folder.
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "config",
        conflicts_with = "config"
    )]
    data_dir: Option<PathBuf>,
    /// A distributed validator's node.toml instead: that validator only.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// What a backup holds.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    format: u32,
    /// When it was taken (RFC 3339).
    created: String,
    /// Hex of the chain's genesis hash.
    genesis: String,
    validators: Vec<Saved>,
}

/// One validator in a backup.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Saved {
    name: String,
    /// The head of the copied chain.db, if it holds one.
    height: Option<u64>,
    /// The files under `<name>/`.
    files: Vec<String>,
}

/// A validator's folder and name, and the chain's genesis file.
struct Place {
    genesis: PathBuf,
    validators: Vec<(String, PathBuf)>,
}

impl Place {
    /// The validators `--config` or `--data-dir` name: a node.toml's one; every validator of
    /// a network directory (`genesis.toml` and a folder per validator); or the validator
    /// whose folder `data_dir` is (it holds a chain.db, its genesis one level up).
    fn find(data_dir: Option<&Path>, config: Option<&Path>) -> anyhow::Result<Place> {
        if let Some(config) = config {
            let config = NodeConfig::load(config)?;
            return Ok(Place {
                genesis: config.genesis,
                validators: vec![(config.name, config.data_dir)],
            });
        }
        let dir = data_dir.context("give --data-dir DIR or --config FILE")?;
        if dir.join(CHAIN_DB).exists() {
            let name = dir
                .canonicalize()?
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .context("a validator's folder is named after it")?;
            let genesis = dir.join("..").join(GENESIS_FILE);
            return Ok(Place {
                genesis,
                validators: vec![(name, dir.to_path_buf())],
            });
        }
        let genesis = dir.join(GENESIS_FILE);
        let chain = Genesis::load(&genesis).with_context(|| {
            format!(
                "{} is neither a network's directory (no readable genesis.toml) nor a validator's \
                 folder (no chain.db)",
                dir.display()
            )
        })?;
        let validators = chain
            .validators()
            .iter()
            .map(|v| (v.name.clone(), node::validator_dir(dir, &v.name)))
            .filter(|(_, folder)| folder.is_dir())
            .collect();
        Ok(Place {
            genesis,
            validators,
        })
    }
}

impl super::Run for BackupArgs {
    fn run(self) -> anyhow::Result<ExitCode> {
        let started = Instant::now();
        let place = Place::find(self.place.data_dir.as_deref(), self.place.config.as_deref())?;
        let genesis = Genesis::load(&place.genesis)?;
        ensure!(
            !place.validators.is_empty(),
            "no validator found to back up"
        );
        ensure!(
            !self.to.exists(),
            "{} exists: a backup never replaces a file",
            self.to.display()
        );
        let parent = parent_dir(&self.to);
        // Copies are made in a private folder beside the output, then archived.
        let work = tempfile::Builder::new()
            .prefix(".medchain-backup-")
            .tempdir_in(&parent)
            .with_context(|| format!("cannot write in {}", parent.display()))?;
        let mut manifest = Manifest {
            format: FORMAT,
            created: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            genesis: hex::encode(genesis.hash()),
            validators: Vec::new(),
        };
        for (name, folder) in &place.validators {
            let copies = work.path().join(name);
            ledger::files::private_dir(&copies)?;
            let mut saved = Saved {
                name: name.clone(),
                height: None,
                files: Vec::new(),
            };
            let stores: &[&str] = if self.keys_only { &[KEYS_DB] } else { &STORES };
            for store in stores {
                let source = folder.join(store);
                if !source.exists() {
                    continue;
                }
                let copy = copies.join(store);
                copy_online(&source, &copy)
                    .with_context(|| format!("cannot copy {}", source.display()))?;
                match *store {
                    "chain.db" => {
                        saved.height = Some(ledger::store::Reader::open(&copy)?.head()?.0);
                    }
                    "node.db" => {
                        node::mark_backup_copy(&copy)?;
                        // The acknowledged transactions not yet committed, from the journal
                        // beside it: a restore takes them over at its start.
                        node::copy_into_backup(folder, &copy)?;
                    }
                    // Deleted rows (erased keys, ended sessions) are zeroed in these stores
                    // (secure_delete); VACUUM also leaves their freed pages out of the copy.
                    _ => Connection::open(&copy)?.execute_batch("VACUUM")?,
                }
                saved.files.push(store.to_string());
            }
            if !self.keys_only {
                for file in FILES {
                    let source = folder.join(file);
                    if source.exists() {
                        std::fs::copy(&source, copies.join(file))
                            .with_context(|| format!("cannot read {}", source.display()))?;
                        saved.files.push(file.to_string());
                    }
                }
            }
            ensure!(
                !saved.files.is_empty(),
                "{} holds nothing to back up",
                folder.display()
            );
            manifest.validators.push(saved);
        }
        std::fs::copy(&place.genesis, work.path().join(GENESIS_FILE))?;
        let size = write_archive(&self.to, work.path(), &manifest)?;
        for saved in &manifest.validators {
            println!(
                "{:<12} {}{}",
                saved.name,
                saved.files.join(", "),
                saved
                    .height
                    .map_or(String::new(), |h| format!(" (chain at height {h})"))
            );
        }
        println!(
            "backed up to {} ({:.1} MB) in {:.1} s; without the operator key nothing in it opens: \
             keep that apart. Restore with `medchain restore --from {}`; keep backups no longer \
             than your erasure deadline (they keep the keys of records erased after them)",
            self.to.display(),
            size as f64 / 1e6,
            started.elapsed().as_secs_f64(),
            self.to.display()
        );
        Ok(ExitCode::SUCCESS)
    }
}

/// The folder a file goes in (`.` for a bare name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// How long a copy waits for a store that stays locked.
const BUSY_LIMIT: Duration = Duration::from_secs(30);

/// Copies the SQLite database `source` to the new file `copy` with the online backup API, in
/// one step: one read transaction, so one consistent snapshot of a store the validator goes on
/// writing (readers never block its writes in WAL mode). Busy or locked steps are retried.
fn copy_online(source: &Path, copy: &Path) -> anyhow::Result<()> {
    let from = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    from.busy_timeout(Duration::from_secs(10))?;
    ledger::files::prepare_sqlite_file(copy)?;
    let mut to = Connection::open(copy)?;
    let backup = rusqlite::backup::Backup::new(&from, &mut to)?;
    let deadline = Instant::now() + BUSY_LIMIT;
    loop {
        match backup.step(-1)? {
            StepResult::Done => return Ok(()),
            StepResult::More => {}
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => bail!(
                "{} stayed busy for {}",
                source.display(),
                humantime::format_duration(BUSY_LIMIT)
            ),
        }
    }
}

/// Writes the archive `path` (0600, new) from the copies in `work`: the manifest first, then
/// genesis.toml and each validator's files. Written under a temporary name, synced, then
/// renamed, so that a failed backup leaves no file that looks whole. Its size in bytes.
fn write_archive(path: &Path, work: &Path, manifest: &Manifest) -> anyhow::Result<u64> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let file = ledger::files::create_private_file(&partial)?;
    let written = (|| -> anyhow::Result<File> {
        let mut tar = tar::Builder::new(file);
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let text = format!(
            "# A medchain backup (`medchain restore --from` puts it back). Never holds the\n\
             # incarnation marker or the operator key.\n{}",
            toml::to_string(manifest)?
        );
        append(&mut tar, MANIFEST, text.as_bytes(), 0o600, now)?;
        append_file(&mut tar, GENESIS_FILE, &work.join(GENESIS_FILE), now)?;
        for saved in &manifest.validators {
            append(&mut tar, &format!("{}/", saved.name), &[], 0o700, now)?;
            for file in &saved.files {
                let name = format!("{}/{file}", saved.name);
                append_file(&mut tar, &name, &work.join(&saved.name).join(file), now)?;
            }
        }
        Ok(tar.into_inner()?)
    })();
    let file = match written {
        Ok(file) => file,
        Err(error) => {
            let _ = std::fs::remove_file(&partial);
            return Err(error);
        }
    };
    file.sync_all()?;
    let size = file.metadata()?.len();
    drop(file);
    ensure!(
        !path.exists(),
        "{} appeared while the backup was written: left as it is, the backup is {}",
        path.display(),
        partial.display()
    );
    std::fs::rename(&partial, path)?;
    ledger::files::sync_parent(path)?;
    Ok(size)
}

/// Appends one entry (a folder when `name` ends with `/`) to the archive.
fn append(
    tar: &mut tar::Builder<File>,
    name: &str,
    bytes: &[u8],
    mode: u32,
    mtime: u64,
) -> anyhow::Result<()> {
    let mut header = entry_header(name, bytes.len() as u64, mode, mtime);
    tar.append_data(&mut header, name, bytes)?;
    Ok(())
}

/// Appends the file `path` as the entry `name` (0600), streamed: a store may be large.
fn append_file(
    tar: &mut tar::Builder<File>,
    name: &str,
    path: &Path,
    mtime: u64,
) -> anyhow::Result<()> {
    let file = File::open(path)?;
    let mut header = entry_header(name, file.metadata()?.len(), 0o600, mtime);
    tar.append_data(&mut header, name, file)?;
    Ok(())
}

fn entry_header(name: &str, size: u64, mode: u32, mtime: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(if name.ends_with('/') {
        tar::EntryType::Directory
    } else {
        tar::EntryType::Regular
    });
    header.set_size(size);
    header.set_mode(mode);
    header.set_mtime(mtime);
    header
}

impl super::Run for RestoreArgs {
    fn run(self) -> anyhow::Result<ExitCode> {
        let root = match (&self.place.config, &self.place.data_dir) {
            (Some(config), _) => NodeConfig::load(config)?.data_dir,
            (None, Some(dir)) => dir.clone(),
            (None, None) => bail!("give --data-dir DIR or --config FILE"),
        };
        ledger::files::private_dir(&root)?;
        // Unpacked first into a private folder on the validators' disk, from which each store
        // is renamed into place (a store may be large: never held in memory).
        let unpacked = tempfile::Builder::new()
            .prefix(".medchain-restore-")
            .tempdir_in(&root)
            .with_context(|| format!("cannot write in {}", root.display()))?;
        let manifest = unpack(&self.from, unpacked.path())?;
        let file_of = |name: &str, file: &str| unpacked.path().join(name).join(file);
        // Where each validator goes, and the genesis it must belong to.
        let (genesis_path, targets): (PathBuf, Vec<(String, PathBuf)>) = match &self.place.config {
            Some(config) => {
                let config = NodeConfig::load(config)?;
                ensure!(
                    manifest.validators.iter().any(|v| v.name == config.name),
                    "the backup holds no validator {} (it holds {})",
                    config.name,
                    names(&manifest)
                );
                (config.genesis, vec![(config.name, config.data_dir)])
            }
            None => match manifest.validators.as_slice() {
                // One validator's folder, as `backup --data-dir` took it.
                [only] if root.file_name().is_some_and(|n| *n == *only.name) => (
                    root.join("..").join(GENESIS_FILE),
                    vec![(only.name.clone(), root.clone())],
                ),
                _ => {
                    let targets = manifest
                        .validators
                        .iter()
                        .map(|v| (v.name.clone(), node::validator_dir(&root, &v.name)))
                        .collect();
                    (root.join(GENESIS_FILE), targets)
                }
            },
        };
        let genesis_text = std::fs::read(unpacked.path().join(GENESIS_FILE))
            .context("the backup holds no genesis.toml")?;
        if genesis_path.exists() {
            let here = hex::encode(Genesis::load(&genesis_path)?.hash());
            ensure!(
                here == manifest.genesis,
                "the backup is of chain {}, {} is of chain {here}: not restored",
                manifest.genesis,
                genesis_path.display()
            );
        } else {
            ledger::files::write_new_private_file(&genesis_path, &genesis_text)?;
            ensure!(
                hex::encode(Genesis::load(&genesis_path)?.hash()) == manifest.genesis,
                "the backup's genesis.toml is not the chain its manifest names"
            );
            println!("wrote {}", genesis_path.display());
        }
        // Nothing is replaced while a process holds a store open, nor a key by another, nor an
        // app.db whose rows the backup's lacks unless the operator chose.
        let mut app_choices = Vec::new();
        for (name, folder) in &targets {
            let stores: Vec<PathBuf> = STORES.iter().map(|s| folder.join(s)).collect();
            let users = holders(&stores);
            ensure!(
                users.is_empty(),
                "{name}'s stores in {} are open in process {}: stop the validator first",
                folder.display(),
                users
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let saved_key = file_of(name, NODE_KEY_FILE);
            let key = folder.join(NODE_KEY_FILE);
            if saved_key.exists() && key.exists() {
                ensure!(
                    std::fs::read(&key)? == std::fs::read(&saved_key)?,
                    "{} is not the node.key in the backup: a backup restores the validator it \
                     was taken of",
                    key.display()
                );
            }
            let saved_app = file_of(name, APP_DB);
            let choice = if saved_app.exists() {
                app_choice(
                    &folder.join(APP_DB),
                    &saved_app,
                    &manifest.genesis,
                    self.replace_app,
                    self.keep_app,
                )?
            } else {
                Choice::Keep("the backup holds none".into())
            };
            app_choices.push(choice);
        }
        for ((name, folder), app) in targets.iter().zip(app_choices) {
            ledger::files::private_dir(folder)?;
            let saved = manifest
                .validators
                .iter()
                .find(|v| &v.name == name)
                .context("a validator of the backup")?;
            let mut restored = Vec::new();
            for file in &saved.files {
                let source = file_of(name, file);
                let target = folder.join(file);
                let choice = match file.as_str() {
                    KEYS_DB => Some(keys_choice(
                        &target,
                        &source,
                        &manifest.genesis,
                        self.replace_keys,
                    )),
                    APP_DB => Some(app.clone()),
                    _ => None,
                };
                if let Some(choice) = choice {
                    println!("{name}: {}", choice.of(file));
                    if let Choice::Keep(_) = choice {
                        continue;
                    }
                }
                if STORES.contains(&file.as_str()) {
                    put_store(&target, &source)?;
                    restored.push(file.clone());
                } else if !target.exists() {
                    ledger::files::write_new_private_file(&target, &std::fs::read(&source)?)?;
                    restored.push(file.clone());
                } else if std::fs::read(&target)? != std::fs::read(&source)? {
                    println!(
                        "{name}: kept {} (it differs from the backup's)",
                        target.display()
                    );
                }
            }
            let marker = folder.join(node::MARKER_FILE);
            println!(
                "{name}: restored {} (chain at height {}) from the backup of {}; {}",
                if restored.is_empty() {
                    "nothing".to_string()
                } else {
                    restored.join(", ")
                },
                saved
                    .height
                    .map_or_else(|| "?".to_string(), |h| h.to_string()),
                manifest.created,
                if marker.exists() {
                    "its incarnation marker is kept"
                } else {
                    "it has no incarnation marker (a new disk): the count starts again from the clock"
                }
            );
        }
        println!(
            "at its next start each restored validator recovers: it catches up from its peers \
             and votes only once they are past every vote it may have cast (\"recovering\": true \
             in /api/status until then)"
        );
        Ok(ExitCode::SUCCESS)
    }
}

/// What a restore does with a store it may keep (keys.db, app.db), and why.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Choice {
    /// The one in place stays, its -wal and -shm untouched.
    Keep(String),
    /// The backup's goes in its place.
    Replace(String),
}

impl Choice {
    /// The choice said of `store`.
    fn of(&self, store: &str) -> String {
        match self {
            Choice::Keep(why) => format!("kept the {store} in place: {why}"),
            Choice::Replace(why) => format!("restoring the backup's {store}: {why}"),
        }
    }
}

/// Whether the backup's keys.db (`saved`) replaces the one at `in_place`, for the chain whose
/// genesis hash is `genesis` (hex). A key store only deletes what the chain tells it to (an
/// erasure, a grant's end), so a copy of the same store that has processed the chain further
/// holds every key the older one should: a newer store is kept unless `replace` (the
/// operator's `--replace-keys`). Read without the operator key (restore has none): a store
/// made anew since the backup cannot be proven to open, and is kept too when newer, saying so.
fn keys_choice(in_place: &Path, saved: &Path, genesis: &str, replace: bool) -> Choice {
    use Choice::{Keep, Replace};
    if replace {
        return Replace("--replace-keys".into());
    }
    if !in_place.exists() {
        return Replace("there is none in place".into());
    }
    let here = match node::KeyStoreFacts::read(in_place) {
        Ok(here) => here,
        Err(error) => return Replace(format!("the one in place does not open ({error})")),
    };
    if hex::encode(here.genesis_hash) != genesis {
        return Replace("the one in place belongs to another chain".into());
    }
    let saved = match node::KeyStoreFacts::read(saved) {
        Ok(saved) => saved,
        Err(error) => {
            return Keep(format!(
                "the backup's does not open ({error}); the one in place has processed the \
                 chain to height {}",
                here.processed_height
            ));
        }
    };
    let heights = format!(
        "it has processed the chain to height {} and stored {} keys, the backup's to {} and {}",
        here.processed_height, here.keys_stored, saved.processed_height, saved.keys_stored
    );
    // Key counts compare only copies of one store.
    let same = here.same_store_as(&saved);
    let behind = here.processed_height < saved.processed_height
        || (same && here.keys_stored < saved.keys_stored);
    let ahead = here.processed_height > saved.processed_height
        || (same && here.keys_stored > saved.keys_stored);
    match (behind, ahead) {
        (true, false) => return Replace(format!("the one in place is older ({heights})")),
        (true, true) => {
            return Keep(format!(
                "{heights}: each went on from a common past (restored once before?), so either \
                 may hold keys the other lacks. --replace-keys puts the backup's back"
            ));
        }
        _ => {}
    }
    if !same {
        return Keep(format!(
            "{heights}. It is not a copy of the backup's store (made anew since?): without the \
             operator key this restore cannot check that it opens, and keys it lost when it \
             was made are in the backup only. If the validator refuses it at start, or to put \
             the backup's back (losing the keys sealed since), run restore again with \
             --replace-keys"
        ));
    }
    Keep(format!(
        "{heights}; it holds every key sealed since the backup, and lacks only keys the chain \
         had it delete since (erasures, ended grants). --replace-keys puts the backup's back"
    ))
}

/// What an app.db holds that a restore must not lose: its chain, and the rows never deleted
/// while it belongs to that chain (logins, custodial keys, the outbox's transactions).
struct AppFacts {
    genesis: Option<String>,
    logins: BTreeSet<String>,
    custodial_keys: BTreeSet<Vec<u8>>,
    transactions: BTreeSet<Vec<u8>>,
}

impl AppFacts {
    /// Read without the operator key (the custody rows' secrets stay sealed, unread).
    fn read(path: &Path) -> rusqlite::Result<AppFacts> {
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let genesis: Option<Vec<u8>> = conn
            .query_row(
                "SELECT value FROM meta WHERE key = ?1",
                [medchain::app::GENESIS_KEY],
                |r| r.get(0),
            )
            .optional()?;
        fn column<T: rusqlite::types::FromSql + Ord>(
            conn: &Connection,
            sql: &str,
        ) -> rusqlite::Result<BTreeSet<T>> {
            conn.prepare(sql)?.query_map([], |r| r.get(0))?.collect()
        }
        Ok(AppFacts {
            genesis: genesis.map(hex::encode),
            logins: column(&conn, "SELECT id FROM accounts")?,
            custodial_keys: column(&conn, "SELECT public_key FROM custody")?,
            transactions: column(&conn, "SELECT tx_id FROM outbox")?,
        })
    }

    /// How many of `other`'s rows this one lacks: logins, custodial keys, transactions.
    fn lacks(&self, other: &AppFacts) -> [usize; 3] {
        [
            other.logins.difference(&self.logins).count(),
            other
                .custodial_keys
                .difference(&self.custodial_keys)
                .count(),
            other.transactions.difference(&self.transactions).count(),
        ]
    }
}

/// "logins: 2, custodial keys: 1, queued transactions: 0".
fn rows_said([logins, keys, transactions]: [usize; 3]) -> String {
    format!("logins: {logins}, custodial keys: {keys}, queued transactions: {transactions}")
}

/// Whether the backup's app.db (`saved`) replaces the one at `in_place`, for the chain whose
/// genesis hash is `genesis` (hex). Logins, custodial keys and the outbox's transactions are
/// never deleted while a store belongs to its chain, so one that holds all of the other's is
/// the same store further on: a newer store in place is kept (it alone holds the people
/// enrolled and the transactions acknowledged since), an older one replaced. Stores that each
/// hold rows the other lacks are refused unless the operator chose (`replace`, `keep`).
fn app_choice(
    in_place: &Path,
    saved: &Path,
    genesis: &str,
    replace: bool,
    keep: bool,
) -> anyhow::Result<Choice> {
    use Choice::{Keep, Replace};
    if replace {
        return Ok(Replace("--replace-app".into()));
    }
    if !in_place.exists() {
        return Ok(Replace("there is none in place".into()));
    }
    let here = match AppFacts::read(in_place) {
        Ok(here) => here,
        Err(error) => return Ok(Replace(format!("the one in place does not open ({error})"))),
    };
    if here.genesis.as_deref().is_some_and(|g| g != genesis) {
        return Ok(Replace("the one in place belongs to another chain".into()));
    }
    if keep {
        return Ok(Keep("--keep-app".into()));
    }
    let backup = AppFacts::read(saved).context("the backup's app.db does not open")?;
    let (here_lacks, backup_lacks) = (here.lacks(&backup), backup.lacks(&here));
    if here_lacks == [0; 3] {
        return Ok(Keep(format!(
            "it holds every login, custodial key and queued transaction of the backup's, and {}              more (enrolled or acknowledged since)",
            rows_said(backup_lacks)
        )));
    }
    if backup_lacks == [0; 3] {
        return Ok(Replace(format!(
            "the one in place is older (of the backup's rows it lacks {})",
            rows_said(here_lacks)
        )));
    }
    bail!(
        "{}: the app.db in place lacks rows of the backup's ({}) and holds rows it lacks ({}); \
         nothing was restored. Run restore again with --replace-app (the rows only the one in \
         place holds are lost) or --keep-app (those only the backup holds are)",
        in_place.display(),
        rows_said(here_lacks),
        rows_said(backup_lacks)
    )
}

fn names(manifest: &Manifest) -> String {
    manifest
        .validators
        .iter()
        .map(|v| v.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Unpacks a backup into the private folder `into` (each file 0600, synced) and returns its
/// manifest. Refuses an archive that is not one: an entry outside the layout (such as an
/// incarnation marker added by hand), or files that do not match the manifest.
fn unpack(path: &Path, into: &Path) -> anyhow::Result<Manifest> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut archive = tar::Archive::new(file);
    let mut folders = BTreeSet::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let name = entry.path()?.into_owned();
        let parts: Vec<String> = name
            .components()
            .map(|c| match c {
                Component::Normal(part) => part.to_str().map(str::to_string),
                _ => None,
            })
            .collect::<Option<_>>()
            .with_context(|| format!("{}: an entry outside the backup's layout", name.display()))?;
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        match (entry.header().entry_type(), parts.as_slice()) {
            (tar::EntryType::Directory, [folder]) => {
                ledger::files::private_dir(&into.join(folder))?;
                folders.insert(folder.to_string());
            }
            (tar::EntryType::Regular, [MANIFEST | GENESIS_FILE])
            | (tar::EntryType::Regular, [_, _]) => {
                let file = parts[parts.len() - 1];
                ensure!(
                    parts.len() == 1 || STORES.contains(&file) || FILES.contains(&file),
                    "{}: not a file a backup holds{}",
                    name.display(),
                    if file == node::MARKER_FILE {
                        " (the incarnation marker is never restored)"
                    } else {
                        ""
                    }
                );
                let target = into.join(&name);
                if let Some(folder) = target.parent() {
                    ledger::files::private_dir(folder)?;
                }
                let mut out = ledger::files::create_private_file(&target)?;
                std::io::copy(&mut entry, &mut out)?;
                out.sync_all()?;
            }
            _ => bail!("{}: an entry outside the backup's layout", name.display()),
        }
    }
    let text = std::fs::read_to_string(into.join(MANIFEST)).with_context(|| {
        format!(
            "{} is not a medchain backup (no {MANIFEST})",
            path.display()
        )
    })?;
    let manifest: Manifest =
        toml::from_str(&text).with_context(|| format!("{MANIFEST} is unreadable"))?;
    ensure!(
        manifest.format == FORMAT,
        "backup format {} (this medchain reads {FORMAT})",
        manifest.format
    );
    for saved in &manifest.validators {
        ensure!(
            folders.contains(&saved.name)
                && Path::new(&saved.name).components().count() == 1
                && saved
                    .files
                    .iter()
                    .all(|f| into.join(&saved.name).join(f).is_file()),
            "the backup's files do not match its manifest ({})",
            saved.name
        );
    }
    Ok(manifest)
}

/// Replaces the SQLite store `target` with the synced file `source`: its old side files (-wal,
/// -shm, -journal) removed first (a stale WAL would be replayed into the restored store), then
/// `source` renamed over it (copied if it lies on another disk) and the folder synced.
fn put_store(target: &Path, source: &Path) -> anyhow::Result<()> {
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut side = target.as_os_str().to_owned();
        side.push(suffix);
        match std::fs::remove_file(PathBuf::from(side)) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error.into()),
            _ => {}
        }
    }
    if std::fs::rename(source, target).is_err() {
        let mut incoming = target.as_os_str().to_owned();
        incoming.push(".restoring");
        let incoming = PathBuf::from(incoming);
        let _ = std::fs::remove_file(&incoming);
        let mut out = ledger::files::create_private_file(&incoming)?;
        std::io::copy(&mut File::open(source)?, &mut out)?;
        out.sync_all()?;
        std::fs::rename(&incoming, target)?;
    }
    ledger::files::sync_parent(target)?;
    Ok(())
}

/// The processes other than this one that hold any of `paths` open (Linux's /proc; elsewhere
/// none is found).
fn holders(paths: &[PathBuf]) -> Vec<u32> {
    let wanted: BTreeSet<PathBuf> = paths.iter().filter_map(|p| p.canonicalize().ok()).collect();
    let me = std::process::id();
    let mut found = BTreeSet::new();
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    for process in processes.flatten() {
        let Some(pid) = process
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me || wanted.is_empty() {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(process.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|target| wanted.contains(&target)) {
                found.insert(pid);
                break;
            }
        }
    }
    found.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use medchain::app::{AppConfig, AppDb, NewAccount, Role};

    const CHAIN: [u8; 32] = [9; 32];

    /// An app.db of `CHAIN` with the logins `ids` (custody and outbox rows are compared the
    /// same way).
    fn app_db(path: &Path, ids: &[&str]) {
        let operator_key = ledger::master::MasterKey::from_bytes(zeroize::Zeroizing::new([1; 32]));
        let db =
            AppDb::open_with(path, AppConfig::fast_hashing_for_tests(), &operator_key).unwrap();
        db.bind_chain(&CHAIN).unwrap();
        for id in ids {
            db.create_account(
                NewAccount {
                    id: (*id).into(),
                    role: Role::Patient,
                    department: None,
                    name: None,
                    password: zeroize::Zeroizing::new("correct horse battery".into()),
                },
                1,
            )
            .unwrap();
        }
    }

    fn choose(here: &[&str], backup: &[&str], replace: bool, keep: bool) -> anyhow::Result<Choice> {
        let dir = tempfile::tempdir().unwrap();
        let (in_place, saved) = (dir.path().join("in-place.db"), dir.path().join("saved.db"));
        app_db(&in_place, here);
        app_db(&saved, backup);
        app_choice(&in_place, &saved, &hex::encode(CHAIN), replace, keep)
    }

    /// The people enrolled since the backup are in the app.db in place alone: it is kept.
    #[test]
    fn a_newer_app_db_in_place_is_kept() {
        let choice = choose(&["pt1", "pt2"], &["pt1"], false, false).unwrap();
        assert!(
            matches!(&choice, Choice::Keep(why) if why.contains("logins: 1,")),
            "{choice:?}"
        );
    }

    #[test]
    fn an_older_app_db_in_place_is_replaced() {
        let choice = choose(&["pt1"], &["pt1", "pt2"], false, false).unwrap();
        assert!(matches!(choice, Choice::Replace(_)), "{choice:?}");
    }

    /// Each holds a login the other lacks: nothing is chosen for the operator.
    #[test]
    fn app_dbs_that_diverged_need_the_operators_choice() {
        let error = choose(&["pt1", "pt2"], &["pt1", "pt3"], false, false).unwrap_err();
        assert!(error.to_string().contains("--replace-app"), "{error}");
        assert!(matches!(
            choose(&["pt1", "pt2"], &["pt1", "pt3"], true, false).unwrap(),
            Choice::Replace(_)
        ));
        assert!(matches!(
            choose(&["pt1", "pt2"], &["pt1", "pt3"], false, true).unwrap(),
            Choice::Keep(_)
        ));
    }

    #[test]
    fn an_app_db_of_another_chain_or_unreadable_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let (in_place, saved) = (dir.path().join("in-place.db"), dir.path().join("saved.db"));
        app_db(&in_place, &["pt1", "pt2"]);
        app_db(&saved, &["pt1"]);
        let other_chain = hex::encode([8; 32]);
        assert!(matches!(
            app_choice(&in_place, &saved, &other_chain, false, false).unwrap(),
            Choice::Replace(_)
        ));
        std::fs::write(&in_place, b"not a database, a torn file").unwrap();
        let _ = std::fs::remove_file(dir.path().join("in-place.db-wal"));
        assert!(matches!(
            app_choice(&in_place, &saved, &hex::encode(CHAIN), false, false).unwrap(),
            Choice::Replace(_)
        ));
    }
}
