//! The medchain binary: one subcommand per job (see `medchain --help`). Each subcommand lives in
//! its own module under `cli/`; adding one is one line in `cli::commands!`.
mod cli;

/// jemalloc rather than glibc's malloc for Rust's allocations (SQLite keeps its own): in the
/// HTTP flow, with its many threads, 15 % less CPU per transaction and 19 % more records a
/// second; 2 % in ledger mode (BENCHMARKS.md, "jemalloc"). To see the heap with heaptrack,
/// build with `--no-default-features`.
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its first allocation (the symbol is prefixed: tikv-jemallocator
/// builds jemalloc with `_rjem_`). Pages freed are returned to the system after about a second
/// by a background thread, not kept ten seconds and handed back only when some thread next
/// allocates: 35 MB less resident memory per validator (BENCHMARKS.md, "allocators' options").
/// `_RJEM_MALLOC_CONF` in the environment still overrides it.
#[cfg(all(feature = "jemalloc", target_os = "linux"))]
#[allow(unsafe_code)]
#[used]
#[unsafe(export_name = "_rjem_malloc_conf")]
static JEMALLOC_OPTIONS: &[u8; 60] =
    b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

fn main() -> std::process::ExitCode {
    one_malloc_arena();
    if let Err(error) = harden_process() {
        eprintln!("error: cannot protect this process's secrets: {error}");
        return std::process::ExitCode::FAILURE;
    }
    raise_descriptor_limit();
    cli::main()
}

/// One glibc malloc arena for the process (what SQLite allocates: its page caches, statements
/// and rows). By default glibc gives each thread that allocates its own arena, up to eight per
/// core, and the pages freed in one are not reused by another: SQLite's threads (consensus,
/// readers, the key service, the HTTP handlers) left about 40 MB of free pages resident per
/// validator (BENCHMARKS.md, "allocators' options"). Set before medchain starts a thread, unless
/// `MALLOC_ARENA_MAX` in the environment says otherwise.
fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt takes no pointer and only sets a tuning parameter (under the arena
        // lock: jemalloc's background thread may already run).
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

/// Raises the soft limit of open files to the hard one (as Go's runtime and nginx do): the
/// soft limit is often 1024 (systemd's default, most shells), below what the HTTP server's
/// connections and the stores need together; `http::server` holds its cap of connections
/// below what is left. Best effort: the server lowers its cap if this fails.
fn raise_descriptor_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// Before any secret is read (docs/SECURITY.md, "Confidential records", §8 and §16.9): files no
/// code names (SQLite's temporary files) are private (umask 0o077), and no core dump or
/// debugger of another user may copy the operator key, data keys or plaintext out of memory
/// (`RLIMIT_CORE` 0, not dumpable).
fn harden_process() -> nix::Result<()> {
    use nix::sys::resource::{Resource, setrlimit};
    use nix::sys::stat::{Mode, umask};
    umask(Mode::from_bits_truncate(0o077));
    setrlimit(Resource::RLIMIT_CORE, 0, 0)?;
    #[cfg(target_os = "linux")]
    nix::sys::prctl::set_dumpable(false)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    /// §16.9: after hardening, no core dump can be written and the process is not dumpable.
    #[test]
    fn the_process_writes_no_core_dump() {
        super::harden_process().expect("hardening");
        let (soft, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_CORE)
            .expect("getrlimit");
        assert_eq!((soft, hard), (0, 0));
        #[cfg(target_os = "linux")]
        assert!(!nix::sys::prctl::get_dumpable().expect("get_dumpable"));
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
        assert_eq!(old.bits() & 0o777, 0o077);
    }

    /// Issue 12's second red team: a soft limit of open files below the hard one is raised.
    #[test]
    fn the_soft_limit_of_open_files_is_raised_to_the_hard_one() {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
        let lower = hard.min(4096) / 2;
        setrlimit(Resource::RLIMIT_NOFILE, lower, hard).expect("setrlimit");
        super::raise_descriptor_limit();
        assert_eq!(
            getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit"),
            (hard, hard)
        );
    }
}
