use thiserror::Error;

#[derive(Debug, Error)]
pub enum NodeError {
    #[error("storage: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Ledger(#[from] ledger::Error),
    #[error("configuration: {0}")]
    Config(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed consensus message: {0}")]
    Protocol(#[from] pbft::ProtocolError),
    #[error("validator channel: {0}")]
    Channel(String),
    #[error("{0}")]
    Corrupt(String),
    #[error("the validator is overloaded; retry shortly")]
    Busy,
    #[error("the validator has stopped")]
    Stopped,
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("a transaction of {bytes} bytes is over the {limit} a validator accepts")]
    TooLarge { bytes: usize, limit: usize },
    #[error("no pending records to validate")]
    NothingPending,
}
