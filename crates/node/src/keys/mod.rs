//! The key service (docs/SECURITY.md, "Confidential records", §3.2 and §5): each validator keeps
//! the data keys of the sealed transactions it is entitled to in its own key store
//! (`keys.db`), outside the chain, and pulls the ones it lacks from the validators that hold
//! them, over the validators' authenticated, encrypted channel.
//!
//! The service runs on its own thread and owns the only connection to `keys.db`. Its inputs:
//! applied blocks from the runtime (in height order, through a bounded queue; missed ones are
//! read from `chain.db`), key frames from peers (routed here by the transport), seals and opens
//! from the application (through [`crate::NodeHandle`], served before any peer), and a timer.

use zeroize::Zeroizing;

use ledger::TxId;

/// The 32-byte key that seals the rows of `keys.db` at rest, derived from the operator key
/// (§3.3). Never printed, zeroed when dropped.
#[derive(Clone)]
pub struct KeystoreKey(Zeroizing<[u8; 32]>);

impl KeystoreKey {
    pub fn new(bytes: Zeroizing<[u8; 32]>) -> Self {
        KeystoreKey(bytes)
    }

    /// A fresh random key (tests, and embedded clusters that do not outlive their process).
    pub fn generate() -> Self {
        use rand::RngCore;
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(bytes.as_mut());
        KeystoreKey(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl From<Zeroizing<[u8; 32]>> for KeystoreKey {
    fn from(bytes: Zeroizing<[u8; 32]>) -> Self {
        KeystoreKey(bytes)
    }
}

impl std::fmt::Debug for KeystoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeystoreKey(..)")
    }
}

/// How one sealed transaction stands at this validator (§6.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenState {
    /// This validator holds the key and the body opened: [`Opened::plain`] holds the content.
    Open,
    /// An accepted erasure removed its key.
    Erased,
    /// This validator is entitled to the key and waits for it from validator `from`, since
    /// `since_ms` (0: not asked yet).
    Waiting { from: u32, since_ms: u64 },
    /// This validator is not entitled: the patient's home, `home`, can open it.
    Elsewhere { home: u32 },
    /// The key does not match the body's commitment, the body does not open under its key, or
    /// its commitment is another transaction's: its sealer, `sealer`, sealed it wrongly.
    Broken { sealer: u32 },
}

/// One sealed transaction as [`crate::NodeHandle::open`] answers it.
pub struct Opened {
    pub tx: TxId,
    pub state: OpenState,
    /// The content (borsh of a record or purpose) when [`OpenState::Open`].
    pub plain: Option<Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("tx", &ledger::short_hex(&self.tx))
            .field("state", &self.state)
            .field("plain_bytes", &self.plain.as_ref().map(|p| p.len()))
            .finish()
    }
}

/// What the key service counts, since start (shown on `/api/metrics`, never `/api/status`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyCounters {
    /// Keys received from peers and stored.
    pub keys_received: u64,
    /// Keys sent to peers.
    pub keys_served: u64,
    /// Keys from peers that did not match their body's commitment: dropped.
    pub keys_refused_wrong: u64,
    /// Keys from peers whose commitment is another transaction's (§16.13): never stored.
    pub keys_refused_reused: u64,
    /// Keys from peers this validator is not (or no longer) entitled to: dropped.
    pub keys_refused_unentitled: u64,
    /// Peer requests dropped: more than 4 queued from one peer, or malformed (no id, or more
    /// than 1,024).
    pub keys_requests_dropped: u64,
    /// Asked ids answered `Busy` (above the peer's rate, or while catching up).
    pub keys_requests_busy: u64,
    /// Asked ids answered `NotEntitled`.
    pub keys_requests_not_entitled: u64,
    /// Answers to no open request of this validator: dropped unread.
    pub keys_answers_dropped: u64,
}

/// The key service's state, for the application and the metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyStatus {
    /// Every applied block up to here has been processed (§5.4).
    pub processed_height: u64,
    /// Keys this validator is entitled to and waits for (`wanted` rows).
    pub waiting: u64,
    /// Keys held (`data_keys` rows, pending seals included).
    pub held: u64,
    pub counters: KeyCounters,
}
