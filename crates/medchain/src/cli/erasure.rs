//! `medchain erasure`: the erasure requests this hospital has to answer, and its answers
//! (docs/SECURITY.md, "Confidential records", §7.2). The list shows metadata only (§16.20):
//! deciding on a retention period needs no content, and opening a record would be a read
//! without an access entry.

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use ledger::TxHeader;
use ledger::tx::{Decision, Refusal};
use medchain::app::OutboxState;
use medchain::app::flows::erasure::{queue_answer, to_answer};
use medchain::app::flows::{date_of, parse_tx_id};

use super::user::{WhereArgs, open, wait_applied};

/// Answer the patients' erasure requests of what this hospital's doctors wrote.
#[derive(Args, Debug)]
pub struct ErasureArgs {
    #[command(subcommand)]
    command: ErasureCommand,
}

#[derive(Subcommand, Debug)]
enum ErasureCommand {
    /// List the pending requests this hospital answers, oldest first: what each names
    /// (department, doctor, date), never its content.
    List(WhereArgs),
    /// Answer a request: erase (every correct validator deletes the key that opens it), or
    /// refuse with a reason the patient sees. Signed by this validator's key, submitted by the
    /// running validator; waits until it is applied.
    Answer(AnswerArgs),
}

/// A refusal's reason (GDPR Art. 17(3)).
#[derive(Clone, Copy, Debug, ValueEnum)]
enum ReasonArg {
    /// A legal obligation to keep medical records for a period.
    RetentionPeriod,
    /// Needed for the patient's ongoing care.
    OngoingCare,
    /// Needed to establish, exercise or defend legal claims.
    LegalClaims,
    /// Public health.
    PublicHealth,
}

impl From<ReasonArg> for Refusal {
    fn from(reason: ReasonArg) -> Self {
        match reason {
            ReasonArg::RetentionPeriod => Refusal::RetentionPeriod,
            ReasonArg::OngoingCare => Refusal::OngoingCare,
            ReasonArg::LegalClaims => Refusal::LegalClaims,
            ReasonArg::PublicHealth => Refusal::PublicHealth,
        }
    }
}

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  medchain erasure answer --request <id> --erase --config node.toml\n  \
                  medchain erasure answer --request <id> --refuse retention-period --until 2035-01-01"
)]
struct AnswerArgs {
    /// The erasure request's id (64 hex digits, from `medchain erasure list`).
    #[arg(long)]
    request: String,
    /// Erase it.
    #[arg(long, conflicts_with = "refuse", required_unless_present = "refuse")]
    erase: bool,
    /// Refuse it, for this reason.
    #[arg(long, value_enum, value_name = "REASON")]
    refuse: Option<ReasonArg>,
    /// With --refuse: until when it is kept (YYYY-MM-DD), shown to the patient.
    #[arg(long, value_name = "DATE", requires = "refuse")]
    until: Option<String>,
    #[command(flatten)]
    place: WhereArgs,
}

impl super::Run for ErasureArgs {
    fn run(self) -> anyhow::Result<ExitCode> {
        match self.command {
            ErasureCommand::List(place) => list(place),
            ErasureCommand::Answer(args) => answer(args),
        }
    }
}

/// Milliseconds since the epoch of the start of `date` (YYYY-MM-DD, UTC).
fn date_ms(date: &str) -> anyhow::Result<u64> {
    let time = humantime::parse_rfc3339(&format!("{}T00:00:00Z", date.trim()))
        .with_context(|| format!("--until {date}: expected a date as YYYY-MM-DD"))?;
    Ok(time
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0))
}

fn list(place: WhereArgs) -> anyhow::Result<ExitCode> {
    let validator = place.validator()?;
    let index = validator
        .genesis
        .index_of(&validator.name)
        .with_context(|| format!("{} is not a validator of this chain", validator.name))?;
    let chain = ledger::Reader::open(&validator.dir.join("chain.db"))
        .context("cannot read this validator's chain (start it once)")?;
    let pending = to_answer(&chain, index)?;
    if pending.is_empty() {
        println!("no erasure request waits for {}", validator.name);
    } else {
        println!(
            "{:<64} {:<10} {:<13} {:<16} {:<20} written",
            "request", "requested", "what", "department", "doctor"
        );
    }
    for e in &pending {
        println!(
            "{:<64} {:<10} {:<13} {:<16} {:<20} {}",
            hex::encode(e.row.id),
            date_of(e.row.requested_ms),
            e.target.kind,
            e.target.department.as_deref().unwrap_or("-"),
            e.target.doctor_name.as_deref().unwrap_or("-"),
            date_of(e.target.time_ms),
        );
    }
    // Answers queued here and not applied yet (the validator submits them when it runs).
    let (app, _) = open(&validator)?;
    for row in app.outbox()? {
        if row.kind == "answer_erasure" && row.state != OutboxState::Done {
            println!(
                "answer {} {}{}",
                hex::encode(row.tx_id),
                row.state.as_str(),
                row.reason.map(|r| format!(": {r}")).unwrap_or_default()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn answer(args: AnswerArgs) -> anyhow::Result<ExitCode> {
    let request =
        parse_tx_id(&args.request).context("--request must be 64 hex digits (the request's id)")?;
    let decision = match (args.erase, args.refuse) {
        (true, None) => Decision::Erase,
        (false, Some(reason)) => Decision::Refuse {
            reason: reason.into(),
            until_ms: args.until.as_deref().map(date_ms).transpose()?,
        },
        _ => bail!("give --erase or --refuse <reason>"),
    };
    let validator = args.place.validator()?;
    let signer = validator.signer()?;
    let (app, _) = open(&validator)?;
    let chain = ledger::Reader::open(&validator.dir.join("chain.db"))
        .context("cannot read this validator's chain (start it once)")?;
    let sign = |header: TxHeader, body: Vec<u8>| signer.sign(header, body);
    let id = queue_answer(
        &app,
        &chain,
        &signer.here,
        &sign,
        request,
        decision,
        medchain::app::now_ms(),
    )
    .map_err(|e| anyhow::anyhow!("cannot answer {}: {e}", args.request))?;
    println!(
        "answer {} queued at {}; submitting through the running validator...",
        hex::encode(id),
        validator.name
    );
    if let Some(height) = wait_applied(&app, &id, "answer")? {
        match decision {
            Decision::Erase => println!(
                "erased in block {height}: every correct validator deletes the key that opens it"
            ),
            Decision::Refuse { .. } => println!("refused in block {height}: the patient sees why"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_date_reads_as_the_start_of_its_day_in_utc() {
        assert_eq!(date_ms("2035-01-01").unwrap(), 2_051_222_400_000);
        assert_eq!(date_of(date_ms("2035-01-01").unwrap()), "2035-01-01");
        assert!(date_ms("01/01/2035").is_err());
    }
}
