//! Consensus timing flags shared by the commands that run validators.

use std::time::Duration;

use clap::Args;

#[derive(Args, Debug, Clone)]
pub struct TimingArgs {
    /// Longest a record waits before the primary proposes a block (e.g. 6s, 500ms, 10ms).
    #[arg(long, value_name = "DURATION", default_value = "6s", value_parser = node::parse_duration)]
    pub batch_window: Duration,
    /// Most records in one block; a full batch is proposed at once. Every validator must
    /// agree on it, so it is written into the genesis of a network this command creates; an
    /// existing network keeps its genesis's value.
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_batch: u32,
    /// How long backups wait on a stalled primary (after the batch window) before replacing it.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = node::parse_duration)]
    pub view_change_timeout: Duration,
}

impl TimingArgs {
    pub fn timing(&self) -> node::Timing {
        node::Timing {
            batch_window: self.batch_window,
            max_batch: self.max_batch as usize,
            view_change_timeout: self.view_change_timeout,
            ..node::Timing::default()
        }
    }
}
