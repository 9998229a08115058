//! The medchain binary: one subcommand per job (see `medchain --help`). Each subcommand lives in
//! its own module under `cli/`; adding one is one line in `cli::commands!`.
mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
