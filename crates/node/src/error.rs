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
    /// A transaction, or its body, larger than a validator accepts (`limit` bytes).
    #[error("a transaction of {bytes} bytes is over the {limit} a validator accepts")]
    TooLarge { bytes: usize, limit: usize },
    #[error("no pending records to validate")]
    NothingPending,
    /// A submitted transaction that fails the check every validator makes at its edge (bad
    /// signature or key proof, body not matching its hash, unknown validator signer): no
    /// validator would ever take it. The HTTP layer answers 400.
    #[error("invalid transaction: {0}")]
    Invalid(ledger::Invalid),
    /// Mempool admission refused a submitted transaction: a rule of the state machine rejects
    /// it on this validator's committed state at the time of submission, or its id is on
    /// chain already. The rule's reason (a `ledger::rules::reason` constant), before anything
    /// was stored. The HTTP layer answers 409.
    #[error("refused: {0}")]
    Refused(String),
    /// The key service has not yet processed the height a read needs (it is catching up
    /// after a start or a state transfer): the HTTP layer answers 503 `keys catching up`.
    #[error("keys catching up")]
    KeysCatchingUp,
    /// This validator may lack blocks the others committed ([`crate::NodeStatus::behind`]) and
    /// did not catch up in time: an answer from its state might miss an erasure. The HTTP
    /// layer answers 503 `catching up`.
    #[error("catching up with the chain")]
    Behind,
    /// Content that cannot be sealed: larger than a sealed body may carry
    /// (`ledger::seal::MAX_PLAIN_BYTES`), or for a kind that carries none.
    #[error("cannot seal: {0}")]
    Seal(String),
}
