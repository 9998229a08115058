//! Private files: every folder of a validator 0700 and every file in it 0600, whatever the
//! umask (docs/SECURITY.md, "Confidential records", §8).
//!
//! A mode given at creation is masked by the process's umask; `set_permissions` is not, so
//! every helper sets the exact mode after creating. SQLite creates a database's `-wal` and
//! `-shm` with the database file's own mode, so [`prepare_sqlite_file`] creates the file 0600
//! before SQLite opens it, and every store's `open` calls it. [`tighten`] repairs a folder
//! left looser by an older medchain or by hand, and says what it changed.
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The mode of every folder of a validator.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// The mode of every file of a validator.
pub const PRIVATE_FILE_MODE: u32 = 0o600;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates `path` (and missing parents) as a private folder, and sets its mode to exactly 0700
/// if it existed or the umask masked the creation mode.
pub fn private_dir(path: &Path) -> Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(PRIVATE_DIR_MODE);
    }
    builder.create(path).map_err(io(path))?;
    set_mode(path, PRIVATE_DIR_MODE)
}

/// Sets `path`'s permission bits to exactly `mode` (unix; elsewhere nothing).
pub fn set_mode(path: &Path, mode: u32) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io(path))
    }
    #[cfg(not(unix))]
    {
        let _ = (path, mode);
        Ok(())
    }
}

fn private_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(PRIVATE_FILE_MODE);
    }
    options
}

/// Creates `path` as a new private file (0600), refusing to replace an existing one.
pub fn create_private_file(path: &Path) -> Result<File> {
    let file = private_options()
        .create_new(true)
        .open(path)
        .map_err(io(path))?;
    set_mode(path, PRIVATE_FILE_MODE)?;
    Ok(file)
}

/// Opens `path` for writing from its start as a private file (0600), creating or truncating
/// it: a log file.
pub fn private_log_file(path: &Path) -> Result<File> {
    let file = private_options()
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(io(path))?;
    set_mode(path, PRIVATE_FILE_MODE)?;
    Ok(file)
}

/// Writes `bytes` to the new private file `path` (refusing to replace one), durably: the file
/// and its folder are synced on return. For secrets that must never be overwritten by mistake.
pub fn write_new_private_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = create_private_file(path)?;
    file.write_all(bytes).map_err(io(path))?;
    file.sync_all().map_err(io(path))?;
    sync_parent(path)
}

/// Replaces `path` with a private file holding `bytes`, atomically and durably: a private
/// temporary file beside it, synced, renamed over it, and the folder synced. The temporary
/// file is made anew: whatever had its name (a file left by a crash, or a link planted to make
/// this write elsewhere: red team s46) is removed first, and a new one is never opened through
/// a link.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    match std::fs::remove_file(&tmp) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            return Err(io(&tmp)(error));
        }
        _ => {}
    }
    let mut file = private_options()
        .create_new(true)
        .open(&tmp)
        .map_err(io(&tmp))?;
    set_mode(&tmp, PRIVATE_FILE_MODE)?;
    file.write_all(bytes).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io(path))?;
    sync_parent(path)
}

/// Opens `path` for reading if it is a regular file, never through a link and never waiting
/// on it: a FIFO, a device, a folder or a link planted in a file's place is refused
/// (`InvalidData`, or the kernel's `ELOOP` for a link) instead of stalling or misleading the
/// reader (red team s46, s48). The file's length is returned with it.
pub fn open_regular(path: &Path) -> std::io::Result<(File, u64)> {
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    let file = options.open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a regular file",
        ));
    }
    Ok((file, metadata.len()))
}

/// Syncs the folder holding `path`, so that a file created or renamed there survives a crash.
pub fn sync_parent(path: &Path) -> Result<()> {
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io(dir))?;
    }
    Ok(())
}

/// The SQLite side files of the database `path`.
fn sqlite_side_files(path: &Path) -> [PathBuf; 3] {
    ["-wal", "-shm", "-journal"].map(|suffix| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    })
}

/// Makes the database file `path` private before SQLite opens it: created empty with mode
/// 0600 if missing (SQLite then creates its `-wal` and `-shm` with the same mode), and an
/// existing file or side file looser than that tightened, with a warning naming it.
pub fn prepare_sqlite_file(path: &Path) -> Result<()> {
    match private_options().create_new(true).open(path) {
        Ok(_) => set_mode(path, PRIVATE_FILE_MODE)?,
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            tighten_file(path)?;
        }
        Err(error) => return Err(io(path)(error)),
    }
    for side in sqlite_side_files(path) {
        if side.exists() {
            tighten_file(&side)?;
        }
    }
    Ok(())
}

/// Whether the permission bits `mode` give anything to the group or others.
pub fn is_shared(mode: u32) -> bool {
    mode & 0o077 != 0
}

/// Sets the file `path` to 0600 if group or others have any access to it; says whether it did.
fn tighten_file(path: &Path) -> Result<bool> {
    tighten_to(path, PRIVATE_FILE_MODE)
}

#[cfg(unix)]
fn tighten_to(path: &Path, mode: u32) -> Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    let found = std::fs::symlink_metadata(path)
        .map_err(io(path))?
        .permissions()
        .mode()
        & 0o777;
    if !is_shared(found) {
        return Ok(false);
    }
    set_mode(path, mode)?;
    tracing::warn!(
        path = %path.display(),
        was = format!("{found:o}"),
        now = format!("{mode:o}"),
        "tightened a validator file that others could read"
    );
    Ok(true)
}

#[cfg(not(unix))]
fn tighten_to(_path: &Path, _mode: u32) -> Result<bool> {
    Ok(false)
}

/// Tightens `dir` and everything under it: folders to 0700, files to 0600, wherever group or
/// others had any access (symbolic links are left alone). Each change is logged; returns the
/// paths changed.
pub fn tighten(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut changed = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        if tighten_to(&folder, PRIVATE_DIR_MODE)? {
            changed.push(folder.clone());
        }
        for entry in std::fs::read_dir(&folder).map_err(io(&folder))? {
            let entry = entry.map_err(io(&folder))?;
            let kind = entry.file_type().map_err(io(&entry.path()))?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() && tighten_file(&entry.path())? {
                changed.push(entry.path());
            }
        }
    }
    Ok(changed)
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn folders_and_files_are_private_and_existing_ones_tightened() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        private_dir(&dir).unwrap();
        assert_eq!((mode(&root.path().join("a")), mode(&dir)), (0o700, 0o700));
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&dir).unwrap();
        assert_eq!(
            mode(&dir),
            0o700,
            "an existing folder is set to exactly 0700"
        );

        let secret = dir.join("secret");
        write_new_private_file(&secret, b"one").unwrap();
        assert_eq!(mode(&secret), 0o600);
        assert!(
            write_new_private_file(&secret, b"two").is_err(),
            "never replaced"
        );
        let config = dir.join("config");
        write_private_file(&config, b"one").unwrap();
        write_private_file(&config, b"two").unwrap();
        assert_eq!(std::fs::read(&config).unwrap(), b"two");
        assert_eq!(mode(&config), 0o600);
        assert!(!dir.join("config.tmp").exists());

        let db = dir.join("x.db");
        prepare_sqlite_file(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(dir.join("x.db-wal"), b"").unwrap();
        std::fs::set_permissions(dir.join("x.db-wal"), std::fs::Permissions::from_mode(0o640))
            .unwrap();
        prepare_sqlite_file(&db).unwrap();
        assert_eq!((mode(&db), mode(&dir.join("x.db-wal"))), (0o600, 0o600));

        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o604)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).unwrap();
        let changed = tighten(&root.path().join("a")).unwrap();
        assert_eq!(changed, [dir.clone(), secret.clone()]);
        assert_eq!((mode(&dir), mode(&secret)), (0o700, 0o600));
        assert!(tighten(&root.path().join("a")).unwrap().is_empty());
    }

    #[test]
    fn sqlite_side_files_take_the_database_files_mode() {
        let root = tempfile::tempdir().unwrap();
        let db = root.path().join("side.db");
        prepare_sqlite_file(&db).unwrap();
        let conn = rusqlite::Connection::open(&db).unwrap();
        let _: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .unwrap();
        conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
            .unwrap();
        for side in ["side.db-wal", "side.db-shm"] {
            assert_eq!(mode(&root.path().join(side)), 0o600, "{side}");
        }
    }
}
