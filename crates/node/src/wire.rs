//! What validators say to each other, and how large each kind of frame may legitimately be.
//!
//! Who sent a frame is never a field of the frame: it is the validator at the other end of the
//! authenticated channel it arrived on (see `transport::channel`), or, in the embedded cluster,
//! the in-process sender the memory transport knows. Consensus messages are also signed by their
//! sender; blocks carry their own commit certificates.

use std::sync::Arc;

use borsh::{BorshDeserialize, BorshSerialize};
use pbft::{Message, Signed};

use crate::config::Timing;
use crate::error::NodeError;

#[derive(Clone, Debug, BorshSerialize, BorshDeserialize)]
pub enum Wire {
    Consensus(Signed<Message>),
    /// Asks for committed blocks from `from_height` on, at most `limit` of them.
    FetchBlocks {
        from_height: u64,
        limit: u32,
    },
    /// Committed blocks, consecutive, each with its certificate (answer to `FetchBlocks`; empty
    /// when the answering validator has nothing from that height on).
    Blocks(Vec<ledger::Block>),
    /// Heartbeat with the sender's head, so that a validator that was away notices it is behind.
    Status {
        height: u64,
        hash: [u8; 32],
    },
    /// Asks the primary to propose what is pending now (the seed's `/api/validate`).
    Cut,
    /// The key service's pull of data keys (docs/SECURITY.md, "Confidential records", §5.3).
    Keys(KeyFrame),
}

/// Ids asked in one key request, at most (a full request is 32 KiB).
pub const MAX_KEY_REQUEST_IDS: usize = 1024;
/// The bound of a [`FrameKind::Keys`] frame: a full request is 32 KiB, a full answer 34 KiB.
pub const MAX_KEY_FRAME_BYTES: usize = 64 * 1024;

/// A key request or its answer, between two validators' key services.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum KeyFrame {
    /// Asks for the data keys of `txs` (1 to [`MAX_KEY_REQUEST_IDS`] ids).
    Request {
        request: u64,
        txs: Vec<ledger::TxId>,
    },
    /// One reply per asked id, in the same order; `height` is the answerer's processed height.
    Answer {
        request: u64,
        height: u64,
        replies: Vec<KeyReply>,
    },
    /// Keys the sender now holds, after it answered this node `Fetching` for them (at most
    /// [`MAX_KEY_REQUEST_IDS`] ids): ask again. Empty: the sender (re)started, and forgot
    /// whom it answered `Fetching`.
    Offer { txs: Vec<ledger::TxId> },
}

/// The answer for one asked id.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum KeyReply {
    /// The data key.
    Key(WireKey),
    NotHeld,
    /// The asker is not entitled to it at the answerer's state (or the answerer is not the
    /// patient's home, the one distributor to grantees).
    NotEntitled,
    Erased,
    /// Not applied on the answerer's chain (not yet, or rejected).
    NotOnChain,
    /// Above the asker's rate, or the answerer is catching up: ask again later.
    Busy,
    /// Not held by the answerer, which wants it too (it fetches it itself): a refusal, but the
    /// answerer offers it once it holds it ([`KeyFrame::Offer`]).
    Fetching,
}

/// A data key on the wire: 32 bytes, never printed, zeroed when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct WireKey(pub ledger::seal::DataKey);

impl std::fmt::Debug for WireKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WireKey(..)")
    }
}

impl BorshSerialize for WireKey {
    fn serialize<W: std::io::Write>(&self, writer: &mut W) -> std::io::Result<()> {
        writer.write_all(self.0.as_bytes())
    }
}

impl BorshDeserialize for WireKey {
    fn deserialize_reader<R: std::io::Read>(reader: &mut R) -> std::io::Result<Self> {
        let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
        reader.read_exact(bytes.as_mut())?;
        Ok(WireKey(ledger::seal::DataKey::from_bytes(*bytes)))
    }
}

/// A frame between validators, shared by every peer it is sent to.
pub type Frame = Arc<Wire>;

/// Largest encoded transaction (`borsh(SignedTx)`) a validator accepts, from a client or a
/// peer: a body of at most `ledger::tx::MAX_BODY_BYTES` (64 KiB) and 1 KiB of header and
/// signature (`ledger::tx::MAX_TX_BYTES`; a larger payload is invalid at every edge). Every
/// frame bound below follows from it.
pub const MAX_TRANSACTION_BYTES: usize = ledger::tx::MAX_TX_BYTES;
/// A request around a transaction: its id, timestamp and the payload's length prefix.
const REQUEST_OVERHEAD_BYTES: usize = 64;
/// A proposal's fixed fields, a pre-prepare's view and digest, an outer signature: well under.
const MESSAGE_OVERHEAD_BYTES: usize = 4 * 1024;
/// One signed vote or checkpoint: sender (4), tag (1), view and sequence (16), digest (32),
/// signature (64), with room to spare.
const SIGNED_VOTE_BYTES: usize = 160;
/// Bytes of blocks one `Blocks` answer aims at (it always holds at least one block).
pub const FETCH_REPLY_BYTES: usize = 16 * 1024 * 1024;
/// View-changes and new-views carry whole prepared batches (a deviation from the paper, whose
/// certificates carry digests only), a new-view each distinct batch once (`pbft::NewView`'s
/// encoding); their computed bound is cut to this, which holds a full log window of full
/// batches of typical (1 KiB) transactions twice over.
pub const MAX_VIEW_CHANGE_FRAME_BYTES: usize = 256 * 1024 * 1024;

/// The kinds of frame with different size bounds. The sender names the kind in the frame's
/// header, the receiver refuses a frame longer than its kind allows before buffering it, and
/// after decoding checks the kind named was the kind sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// Prepare, commit, checkpoint, status, fetch request, cut.
    Small = 0,
    /// A pre-prepare or a forward: at most one batch of requests.
    Batch = 1,
    /// A view-change, a new-view, or a recovery answer (which may carry one).
    ViewChange = 2,
    /// An answer to `FetchBlocks`.
    Blocks = 3,
    /// A key request or answer ([`KeyFrame`]).
    Keys = 4,
}

impl FrameKind {
    pub fn of(wire: &Wire) -> Self {
        match wire {
            Wire::Consensus(signed) => match &signed.message {
                Message::Forward(_) | Message::PrePrepare(_) => FrameKind::Batch,
                // An answer carries a certificate (n signed commits), up to n lives, and may carry
                // the querier's own view-change or new-view; one per answerer and query. Relayed
                // lives (up to n signed queries) go with view-changes.
                Message::ViewChange(_)
                | Message::NewView(_)
                | Message::RecoveryAnswer(_)
                | Message::Lives(_) => FrameKind::ViewChange,
                Message::Prepare(_)
                | Message::Commit(_)
                | Message::Checkpoint(_)
                | Message::RecoveryQuery(_) => FrameKind::Small,
            },
            Wire::Blocks(_) => FrameKind::Blocks,
            Wire::Keys(_) => FrameKind::Keys,
            Wire::FetchBlocks { .. } | Wire::Status { .. } | Wire::Cut => FrameKind::Small,
        }
    }

    pub fn from_byte(byte: u8) -> Option<Self> {
        [
            FrameKind::Small,
            FrameKind::Batch,
            FrameKind::ViewChange,
            FrameKind::Blocks,
            FrameKind::Keys,
        ]
        .into_iter()
        .find(|kind| *kind as u8 == byte)
    }
}

/// A received frame: `bytes` must be the borsh of a [`Wire`] of the `kind` its header named
/// (what the receiver bounded its size by). Anything else is the peer's fault, and the
/// connection is dropped.
pub fn decode(kind: FrameKind, bytes: &[u8]) -> Result<Wire, NodeError> {
    let wire: Wire = borsh::from_slice(bytes)
        .map_err(|error| NodeError::Channel(format!("an undecodable frame: {error}")))?;
    if FrameKind::of(&wire) != kind {
        return Err(NodeError::Channel(format!(
            "a frame named {kind:?} that is {:?}",
            FrameKind::of(&wire)
        )));
    }
    Ok(wire)
}

/// The largest encoded frame of each kind that a correct validator sends, computed from the
/// cluster's settings. A frame above its bound is refused unread and the connection dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameLimits {
    pub small_bytes: usize,
    pub batch_bytes: usize,
    pub view_change_bytes: usize,
    pub blocks_bytes: usize,
    pub keys_bytes: usize,
}

impl FrameLimits {
    /// For `n` validators batching `max_batch` transactions with a log window of
    /// `watermark_window` sequence numbers (the paper's L):
    /// - a batch: `max_batch` requests of at most [`MAX_TRANSACTION_BYTES`];
    /// - a block: a batch and a certificate of `n` signatures; an answer to `FetchBlocks`
    ///   holds [`FETCH_REPLY_BYTES`] of blocks, or one block if that is larger;
    /// - a view-change: a prepared certificate (a batch and 2f prepares) for each of L sequence
    ///   numbers, and a checkpoint proof; a new-view: n view-changes and L pre-prepares (each
    ///   distinct batch is written once, but n view-changes may each name L distinct ones);
    ///   both cut to [`MAX_VIEW_CHANGE_FRAME_BYTES`].
    pub fn new(n: usize, max_batch: usize, watermark_window: u64) -> Self {
        let window = usize::try_from(watermark_window).unwrap_or(usize::MAX);
        let votes = n.saturating_mul(SIGNED_VOTE_BYTES);
        let batch = max_batch
            .saturating_mul(MAX_TRANSACTION_BYTES + REQUEST_OVERHEAD_BYTES)
            .saturating_add(MESSAGE_OVERHEAD_BYTES);
        let view_change = window
            .saturating_mul(batch.saturating_add(votes))
            .saturating_add(votes)
            .saturating_add(MESSAGE_OVERHEAD_BYTES);
        let new_view = n
            .saturating_mul(view_change)
            .saturating_add(window.saturating_mul(batch));
        Self {
            small_bytes: 1024,
            batch_bytes: batch,
            view_change_bytes: new_view.min(MAX_VIEW_CHANGE_FRAME_BYTES),
            blocks_bytes: FETCH_REPLY_BYTES.max(batch.saturating_add(votes))
                + MESSAGE_OVERHEAD_BYTES,
            keys_bytes: MAX_KEY_FRAME_BYTES,
        }
    }

    /// The bounds for a cluster of `n` validators with `timing`'s settings (the log window is
    /// twice the checkpoint interval, as `node::replica_config` sets it).
    pub fn for_timing(n: usize, timing: &Timing) -> Self {
        Self::new(
            n,
            timing.max_batch,
            timing.checkpoint_interval.saturating_mul(2),
        )
    }

    pub fn max_bytes(&self, kind: FrameKind) -> usize {
        match kind {
            FrameKind::Small => self.small_bytes,
            FrameKind::Batch => self.batch_bytes,
            FrameKind::ViewChange => self.view_change_bytes,
            FrameKind::Blocks => self.blocks_bytes,
            FrameKind::Keys => self.keys_bytes,
        }
    }

    /// The largest frame of any kind.
    pub fn largest_bytes(&self) -> usize {
        self.small_bytes
            .max(self.batch_bytes)
            .max(self.view_change_bytes)
            .max(self.blocks_bytes)
            .max(self.keys_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_settings_fit_a_full_batch_of_the_largest_transactions() {
        let limits = FrameLimits::for_timing(4, &Timing::default());
        // 1,000 transactions of 64 KiB: about 64 MiB, far under the 256 MiB of old.
        assert!(limits.batch_bytes >= 1000 * MAX_TRANSACTION_BYTES);
        assert!(limits.batch_bytes < 80 * 1024 * 1024);
        assert_eq!(limits.view_change_bytes, MAX_VIEW_CHANGE_FRAME_BYTES);
        assert!(limits.blocks_bytes > limits.batch_bytes);
        assert_eq!(limits.max_bytes(FrameKind::Small), 1024);
    }

    #[test]
    fn every_kind_round_trips_through_its_byte() {
        for kind in [
            FrameKind::Small,
            FrameKind::Batch,
            FrameKind::ViewChange,
            FrameKind::Blocks,
            FrameKind::Keys,
        ] {
            assert_eq!(FrameKind::from_byte(kind as u8), Some(kind));
        }
        assert_eq!(FrameKind::from_byte(9), None);
    }

    #[test]
    fn recovery_answer_with_a_full_certificate_fits_its_bound() {
        let n = 10;
        let commit = pbft::Vote {
            view: u64::MAX,
            seq: u64::MAX,
            digest: [7; 32],
        };
        let answer = pbft::RecoveryAnswer {
            nonce: u64::MAX,
            querier: 0,
            last_executed: u64::MAX,
            executed_proof: pbft::commit_votes(
                commit,
                (0..n).map(|i| (i, pbft::Signature([1; 64]))),
            ),
            querier_message: Some(Box::new(Signed {
                from: 0,
                message: pbft::ViewMessage::Commit(commit),
                signature: pbft::Signature([2; 64]),
            })),
            lives: (0..n)
                .map(|from| Signed {
                    from,
                    message: pbft::RecoveryQuery {
                        nonce: u64::MAX,
                        incarnation: u64::MAX,
                    },
                    signature: pbft::Signature([4; 64]),
                })
                .collect(),
        };
        let wire = Wire::Consensus(Signed {
            from: 1,
            message: Message::RecoveryAnswer(answer),
            signature: pbft::Signature([3; 64]),
        });
        let kind = FrameKind::of(&wire);
        let bytes = borsh::to_vec(&wire).unwrap();
        assert!(bytes.len() <= FrameLimits::new(n as usize, 1, 2).max_bytes(kind));
    }

    #[test]
    fn small_frames_fit_the_small_bound() {
        let status = Wire::Status {
            height: u64::MAX,
            hash: [7; 32],
        };
        assert_eq!(FrameKind::of(&status), FrameKind::Small);
        let bytes = borsh::to_vec(&status).unwrap();
        assert!(bytes.len() <= FrameLimits::new(4, 1, 2).small_bytes);
    }
}

#[cfg(test)]
mod key_frames {
    use super::*;

    #[test]
    fn a_full_key_request_and_a_full_answer_fit_their_bound() {
        let request = Wire::Keys(KeyFrame::Request {
            request: u64::MAX,
            txs: vec![[7; 32]; MAX_KEY_REQUEST_IDS],
        });
        let answer = Wire::Keys(KeyFrame::Answer {
            request: u64::MAX,
            height: u64::MAX,
            replies: vec![
                KeyReply::Key(WireKey(ledger::seal::DataKey::from_bytes([1; 32])));
                MAX_KEY_REQUEST_IDS
            ],
        });
        let limits = FrameLimits::new(4, 1, 2);
        for wire in [request, answer] {
            assert_eq!(FrameKind::of(&wire), FrameKind::Keys);
            let bytes = borsh::to_vec(&wire).unwrap();
            assert!(
                bytes.len() <= limits.max_bytes(FrameKind::Keys),
                "{}",
                bytes.len()
            );
            let Wire::Keys(decoded) = borsh::from_slice::<Wire>(&bytes).unwrap() else {
                panic!("not a key frame");
            };
            let Wire::Keys(sent) = &wire else {
                unreachable!()
            };
            assert_eq!(&decoded, sent);
        }
    }

    #[test]
    fn a_key_on_the_wire_prints_nothing() {
        let reply = KeyReply::Key(WireKey(ledger::seal::DataKey::from_bytes([0xab; 32])));
        assert_eq!(format!("{reply:?}"), "Key(WireKey(..))");
    }
}
