//! The runtime around one PBFT replica: it owns the validator's stores, talks to the other
//! validators, keeps acknowledged transactions until they commit, and cuts blocks. The same code
//! serves the embedded cluster (all validators in one process, in-memory transport) and
//! distributed validators (one per process, TCP).

mod acknowledged;
mod admission;
mod budget;
#[cfg(feature = "byzantine")]
pub mod byzantine;
mod clock;
mod cluster;
mod config;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod handle;
mod incarnation;
pub mod keys;
pub mod load;
mod local_store;
mod metrics;
mod node;
pub mod offline;
mod runtime;
mod state_transfer;
mod status;
mod telemetry;
pub mod transport;
mod verify;
mod wire;

pub use acknowledged::{ACKNOWLEDGED_DIR, PendingRow, copy_into_backup, read_pending};
pub use clock::Clock;
pub use cluster::{Cluster, ClusterOptions, EMBEDDED_VALIDATORS};
pub use config::{ConnectionLimits, HttpConfig, NodeConfig, PeerConfig, Timing, parse_duration};
pub use error::NodeError;
pub use handle::{MAX_CHAIN_READERS, NodeHandle, TxStatus, Verdict};
pub use incarnation::{MARKER_FILE, init_dev_network, init_from_public_keys, mark_backup_copy};
pub use keys::{
    KeyCounters, KeyStatus, KeyStoreFacts, KeystoreKey, OpenState, Opened, PatientKeys,
};
pub use metrics::BlockMetric;
pub use node::{DEFAULT_WATTS_PER_CORE, Node, NodeOptions, validator_dir};
pub use runtime::{CutOutcome, Event};
pub use status::{NodeStatus, PeerClaim, Shared};
pub use telemetry::{KEPT_SAMPLES, Sample, Telemetry};
pub use verify::carried_burst;
pub use wire::{
    FETCH_REPLY_BYTES, Frame, FrameKind, FrameLimits, KeyFrame, KeyReply, MAX_KEY_FRAME_BYTES,
    MAX_KEY_REQUEST_IDS, MAX_TRANSACTION_BYTES, MAX_VIEW_CHANGE_FRAME_BYTES, Wire, WireKey,
};
