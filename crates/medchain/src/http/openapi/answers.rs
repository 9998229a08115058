//! Schemas of what the API writes without a type of its own: refusals (`http/error.rs`), the
//! ledger's enums as serde writes them, and the answers handlers build with `json!`. They
//! describe; nothing constructs them (the schemathesis run in `scripts/test.sh` checks every
//! answer against them).
#![allow(dead_code)]

use serde::Serialize;
use utoipa::ToSchema;

/// Every refusal of the API (`http/error.rs`): `{success: false, message}`, with `error_type`,
/// `field` and `home` where a refusal names them.
#[derive(ToSchema)]
pub struct ErrorBody {
    /// Always `false`.
    #[schema(example = false)]
    success: bool,
    /// What went wrong, for a person: never internals, never a value the request sent.
    message: String,
    #[schema(nullable = false)]
    error_type: Option<ErrorType>,
    /// The request field the refusal names (`medical_data.diagnosis`, `patientId`, ...).
    #[schema(nullable = false)]
    field: Option<String>,
    /// The home hospital the refusal names (where to go instead).
    #[schema(nullable = false)]
    home: Option<String>,
}

/// The machine-readable kind of a refusal: 400 `missing_field`, `validation` (with `field`),
/// `blockchain_validation` (the seed's consent refusals); 403 `wrong_hospital`,
/// `consent_elsewhere`, `approve_on_device`, `approve_at_home`, `not_linked` (with `home`),
/// `not_allowed` (with `field`).
#[derive(ToSchema, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    MissingField,
    Validation,
    BlockchainValidation,
    WrongHospital,
    ConsentElsewhere,
    ApproveOnDevice,
    ApproveAtHome,
    NotLinked,
    NotAllowed,
}

// The ledger's enums as the API writes them (serde `snake_case`). The ledger knows nothing of
// HTTP, so they are described here; `tests::the_ledgers_enums_are_written_as_described` holds
// each to its ledger type.

/// A person's role.
#[derive(ToSchema, Serialize, Clone, Copy, Debug, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum RoleName {
    Patient,
    Doctor,
}

/// Who holds a key: the person's browser (`device`) or their home hospital (`custodial`).
#[derive(ToSchema, Serialize, Clone, Copy, Debug, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum KeyKindName {
    Device,
    Custodial,
}

/// Which kind of key signed a transaction.
#[derive(ToSchema, Serialize, Clone, Copy, Debug, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum SignerKindName {
    Device,
    Custodial,
    Validator,
}

/// How a grant was given: on the patient's device, or in person at their home.
#[derive(ToSchema, Serialize, Clone, Copy, Debug, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum AttestedName {
    Device,
    InPerson,
}

/// Why a hospital refused an erasure (GDPR Art. 17(3)).
#[derive(ToSchema, Serialize, Clone, Copy, Debug, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum RefusalName {
    RetentionPeriod,
    OngoingCare,
    LegalClaims,
    PublicHealth,
}

/// What a grant allows: `write` (one record) or `read`.
#[derive(ToSchema, Serialize, Clone, Copy, Debug, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum ScopeName {
    Write,
    Read,
}

/// A grant's or request's scope as the chain holds it: `"write"`, or
/// `{"read": {"duration_ms": N}}`.
#[derive(ToSchema, Serialize, Clone, Copy, Debug, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum ScopeSchema {
    Write,
    Read { duration_ms: u64 },
}

/// A transaction's kind and its metadata as the ledger writes them in JSON (ids in hex).
#[derive(ToSchema)]
pub struct TxMeta {
    /// One of `ledger::Meta::KINDS`.
    #[schema(value_type = TxKind)]
    kind: String,
    /// The kind's metadata (its fields as `ledger::tx` names them).
    #[schema(value_type = Object)]
    meta: serde_json::Value,
}

/// A transaction's kind (`ledger::Meta::KINDS`).
#[derive(ToSchema, Serialize, Clone, Copy, Debug, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum TxKind {
    Enroll,
    Ask,
    Link,
    AddKey,
    RevokeKey,
    Recover,
    RequestGrant,
    Grant,
    Revoke,
    AddRecord,
    Access,
    RequestErasure,
    AnswerErasure,
}

/// `GET /healthz`.
#[derive(ToSchema)]
pub struct Health {
    success: bool,
    /// `ok`.
    status: String,
}

/// `POST /api/logout`, with or without a session.
#[derive(ToSchema)]
pub struct Logout {
    success: bool,
    /// `Logged out`, or `No session`.
    message: String,
}

/// `POST /api/validate`: the block cut now and committed.
#[derive(ToSchema)]
pub struct Validated {
    success: bool,
    /// `Block <8 hex> committed | <votes>/<n> validators approved | <k> transactions`.
    message: String,
    height: u64,
    /// The block's hash (64 hex digits).
    hash: String,
    votes: u64,
    validators: u64,
    tx_count: u64,
}

/// `GET /api/validate_chain`: the ledger's full verification, every rule replayed.
#[derive(ToSchema)]
pub struct ChainVerdict {
    success: bool,
    valid: bool,
    message: String,
    block_count: u64,
}

/// `GET /api/metrics`: the last 100 committed blocks' measurements (none yet: `metrics` empty,
/// no `latest`, and `message: "No metrics collected yet"`).
#[derive(ToSchema)]
pub struct Metrics {
    success: bool,
    count: u64,
    #[schema(nullable = false)]
    latest: Option<BlockMetric>,
    metrics: Vec<BlockMetric>,
    #[schema(nullable = false)]
    message: Option<String>,
    /// This hospital's key service, to its own doctors; null to anyone else.
    #[schema(required = true)]
    keys: Option<KeyMetrics>,
}

/// One committed block's measurements.
#[derive(ToSchema)]
pub struct BlockMetric {
    /// Seconds since the epoch.
    timestamp: f64,
    height: u64,
    /// Seconds from proposal to commit.
    latency: f64,
    /// Transactions per second over the recent window.
    tps: f64,
    /// Joules of CPU time, estimated.
    energy: f64,
    /// Percent of attempted blocks committed.
    success_rate: f64,
    attempted_blocks: u64,
    success_blocks: u64,
    tx_count: u64,
    consensus: Consensus,
}

#[derive(ToSchema)]
pub struct Consensus {
    votes: u64,
    required_votes: u64,
    validator_count: u64,
}

/// The key service's state and counters since start.
#[derive(ToSchema)]
pub struct KeyMetrics {
    processed_height: u64,
    waiting: u64,
    held: u64,
    received: u64,
    served: u64,
    refused_wrong: u64,
    refused_reused: u64,
    refused_unentitled: u64,
    requests_dropped: u64,
    requests_busy: u64,
    /// Of `requests_busy`, those answered while this validator was catching up.
    requests_busy_behind: u64,
    requests_not_entitled: u64,
    requests_not_held: u64,
    requests_fetching: u64,
    requests_checked: u64,
    answers_dropped: u64,
    /// Answers taken after their requests timed out (a holder slower than 5 s).
    answers_late: u64,
    /// `keys.db` rows whose facts failed their tag at start: changed without the operator key
    /// (docs/SECURITY.md §12.1 item 6).
    rows_refused: u64,
    /// `keys.db` rows checked against their tag since the start: none after a clean stop that
    /// had checked every row (docs/SECURITY.md §12.1 item 8).
    rows_checked: u64,
}

/// `GET /api/status`.
#[derive(ToSchema)]
pub struct Status {
    success: bool,
    chain_id: String,
    /// This validator's name.
    node: String,
    height: u64,
    head_hash: String,
    view: u64,
    /// The primary's name.
    #[schema(required = true)]
    primary: Option<String>,
    /// Transactions waiting here for a block.
    pending: u64,
    /// Lost its durable state: it votes again once it cannot contradict an earlier vote.
    recovering: bool,
    batch_window_ms: u64,
    /// Until the next block is cut; null with nothing pending.
    #[schema(required = true)]
    next_cut_in_ms: Option<u64>,
    validators: Vec<ValidatorStatus>,
    metrics: StatusMetrics,
}

/// One validator: in this process, with its state; elsewhere, judged by when it was last heard.
#[derive(ToSchema)]
pub struct ValidatorStatus {
    id: u32,
    name: String,
    state: ValidatorState,
    #[schema(nullable = false)]
    recovering: Option<bool>,
    #[schema(nullable = false)]
    alarms: Option<u64>,
    #[schema(required = true)]
    height: Option<u64>,
    #[schema(required = true)]
    view: Option<u64>,
    primary: bool,
    #[schema(nullable = false)]
    pending: Option<u64>,
    /// Milliseconds since this validator last heard from it; null for itself, or never.
    #[schema(required = true)]
    last_contact_ms: Option<u64>,
}

#[derive(ToSchema, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ValidatorState {
    Up,
    Down,
    Failed,
    Recovering,
    ViewChange,
}

#[derive(ToSchema)]
pub struct StatusMetrics {
    tps: f64,
    /// The median commit latency; null before the first block.
    #[schema(required = true)]
    latency_ms: Option<f64>,
    #[schema(required = true)]
    success_rate: Option<f64>,
    tx_count: u64,
    committed_since_start: u64,
    /// Consensus alarms since start: the fault model exceeded, or a damaged store.
    alarms: u64,
}

/// `GET /api/status/series`.
#[derive(ToSchema)]
pub struct Series {
    success: bool,
    /// Milliseconds between samples.
    interval_ms: u64,
    /// Oldest first, at most ten minutes.
    samples: Vec<Sample>,
}

/// One second of the local validator.
#[derive(ToSchema)]
pub struct Sample {
    /// The end of the second, ms since the epoch.
    t_ms: u64,
    committed_tx_per_s: f64,
    /// Mean proposal-to-commit latency of the blocks committed that second; null with none.
    #[schema(required = true)]
    latency_mean_ms: Option<f64>,
    #[schema(required = true)]
    latency_max_ms: Option<f64>,
    height: u64,
    view: u64,
}

/// `GET /api/blocks`: a page, newest first.
#[derive(ToSchema)]
pub struct Blocks {
    success: bool,
    blocks: Vec<BlockSummary>,
    /// The `before` of the next page; null on the last.
    #[schema(required = true)]
    next_before: Option<u64>,
}

#[derive(ToSchema)]
pub struct BlockSummary {
    height: u64,
    hash: String,
    timestamp_ms: u64,
    /// The proposer's name (`genesis` for block 0).
    proposer: String,
    view: u64,
    tx_count: u64,
    /// The names of the validators whose commit signatures certify it.
    signers: Vec<String>,
}

/// `GET /api/tx/{id}`: `height`, `index` and `reason` once in a block.
#[derive(ToSchema)]
pub struct TxStatus {
    success: bool,
    id: String,
    status: TxState,
    #[schema(nullable = false)]
    height: Option<u64>,
    #[schema(nullable = false)]
    index: Option<u64>,
    /// The rule that rejected it (null if committed).
    reason: Option<String>,
}

#[derive(ToSchema, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TxState {
    Pending,
    Committed,
    Rejected,
    Unknown,
}
