//! Opening what is sealed (docs/SECURITY.md, issue 10, §6): records and purposes are read from
//! one snapshot of this validator's chain and opened by its key service at that snapshot's
//! height (so every erasure committed before it is applied here first, §16.19); each comes back
//! open, or in the state that says why not, with the notice a reader is shown.

use std::collections::HashMap;

use ledger::{Reader, TxHeader, TxId};
use node::OpenState;

use super::{FlowResult, Flows};

/// How long a read of purposes waits for this validator to catch up with the chain before it
/// answers 503 (§16.25): a few blocks' time, and less than a client's patience.
pub const CAUGHT_UP_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// How one sealed transaction stands at this hospital (§6.2): its content `T` when it opens
/// here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readable<T> {
    Open(T),
    /// Erased at the patient's request, at the answer's block time (when the chain says).
    Erased {
        on_ms: Option<u64>,
    },
    /// This hospital is entitled to its key and waits for it from validator `from`, since
    /// `since_ms` (0: not asked yet).
    Waiting {
        from: u32,
        since_ms: u64,
    },
    /// This hospital is not entitled: the patient's home, `home`, can open it.
    Elsewhere {
        home: u32,
    },
    /// Its sealer, `sealer`, sealed it wrongly: its key or content does not open.
    Broken {
        sealer: u32,
    },
}

/// Who reads, for the wording of a notice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReaderRole {
    Patient,
    Doctor,
}

impl<T> Readable<T> {
    /// `open`, `erased`, `waiting`, `elsewhere` or `broken` (the JSON's `state`).
    pub fn state(&self) -> &'static str {
        match self {
            Readable::Open(_) => "open",
            Readable::Erased { .. } => "erased",
            Readable::Waiting { .. } => "waiting",
            Readable::Elsewhere { .. } => "elsewhere",
            Readable::Broken { .. } => "broken",
        }
    }

    /// The same state without its content.
    pub fn without_content(&self) -> Readable<()> {
        match *self {
            Readable::Open(_) => Readable::Open(()),
            Readable::Erased { on_ms } => Readable::Erased { on_ms },
            Readable::Waiting { from, since_ms } => Readable::Waiting { from, since_ms },
            Readable::Elsewhere { home } => Readable::Elsewhere { home },
            Readable::Broken { sealer } => Readable::Broken { sealer },
        }
    }

    /// What a reader is shown instead of the content (§6.2); none when it is open. `noun`
    /// names the thing (`record`, `purpose`).
    pub fn notice(&self, flows: &Flows, reader: ReaderRole, noun: &str) -> Option<String> {
        Some(match self {
            Readable::Open(_) => return None,
            Readable::Erased { on_ms: Some(ms) } => {
                format!("erased at the patient's request on {}", date_of(*ms))
            }
            Readable::Erased { on_ms: None } => "erased at the patient's request".to_string(),
            Readable::Waiting { from, .. } => {
                format!("waiting for its key from {}", flows.hospital(*from))
            }
            Readable::Elsewhere { home } => match reader {
                ReaderRole::Patient => {
                    format!("readable at your home hospital, {}", flows.hospital(*home))
                }
                ReaderRole::Doctor => "not shared with this hospital".to_string(),
            },
            Readable::Broken { sealer } => format!(
                "this {noun}'s sealed body does not open: its author, {}, sealed it wrongly",
                flows.hospital(*sealer)
            ),
        })
    }
}

/// `YYYY-MM-DD` (UTC) of a time in ms since the Unix epoch.
pub fn date_of(ms: u64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    let mut text = humantime::format_rfc3339_seconds(time).to_string();
    text.truncate(10);
    text
}

/// One sealed transaction to open: its header and stored body, and the validator to name as
/// its sealer if its content opens but does not decode.
pub(super) struct ToOpen {
    pub header: TxHeader,
    pub body: Vec<u8>,
    pub sealer: u32,
}

impl Flows {
    /// Runs `query` on one snapshot of this validator's chain: its answer and the snapshot's
    /// height, the height to open what it read at.
    pub(super) async fn snapshot<T: Send + 'static>(
        &self,
        query: impl FnOnce(&Reader) -> ledger::Result<T> + Send + 'static,
    ) -> FlowResult<(u64, T)> {
        // `chain` reads in one snapshot (`NodeHandle::read`).
        self.chain(move |reader| {
            let (height, _) = reader.head()?;
            Ok((height, query(reader)?))
        })
        .await
    }

    /// [`Flows::snapshot`] once this validator is not behind the chain (at most
    /// [`CAUGHT_UP_WAIT`], else 503 `catching up`): what is opened from it without an `Access`
    /// of its own (a purpose) is then read after every erasure committed a few seconds before
    /// the request, at this validator as at the others (docs/SECURITY.md, issue 10, §16.25).
    pub(super) async fn current_snapshot<T: Send + 'static>(
        &self,
        query: impl FnOnce(&Reader) -> ledger::Result<T> + Send + 'static,
    ) -> FlowResult<(u64, T)> {
        self.node.caught_up(CAUGHT_UP_WAIT).await?;
        self.snapshot(query).await
    }

    /// Opens `sealed`, read from the snapshot at `height`, each decoded by `decode` when it
    /// opens (content that does not decode is shown `broken`, naming its sealer). The key
    /// service first processes `height` (at most 10 s, else 503 `keys catching up`).
    pub(super) async fn open_sealed<T>(
        &self,
        height: u64,
        sealed: Vec<ToOpen>,
        decode: impl Fn(&[u8]) -> Option<T>,
    ) -> FlowResult<Vec<Readable<T>>> {
        if sealed.is_empty() {
            return Ok(Vec::new());
        }
        let genesis = self.here.genesis_hash;
        let ids: Vec<(TxId, u32)> = sealed
            .iter()
            .map(|s| (s.header.id(&genesis), s.sealer))
            .collect();
        let pairs: Vec<(TxHeader, Vec<u8>)> =
            sealed.into_iter().map(|s| (s.header, s.body)).collect();
        let mut opened: HashMap<TxId, node::Opened> = self
            .node
            .open(height, &pairs)
            .await?
            .into_iter()
            .map(|o| (o.tx, o))
            .collect();
        Ok(ids
            .into_iter()
            .map(|(id, sealer)| match opened.remove(&id) {
                Some(o) => match o.state {
                    OpenState::Open => match o.plain.as_ref().and_then(|p| decode(p)) {
                        Some(content) => Readable::Open(content),
                        None => Readable::Broken { sealer },
                    },
                    OpenState::Erased => Readable::Erased { on_ms: None },
                    OpenState::Waiting { from, since_ms } => Readable::Waiting { from, since_ms },
                    OpenState::Elsewhere { home } => Readable::Elsewhere { home },
                    OpenState::Broken { sealer } => Readable::Broken { sealer },
                },
                // Not answered: shown as waiting at its sealer, never guessed at.
                None => Readable::Waiting {
                    from: sealer,
                    since_ms: 0,
                },
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_date_is_the_utc_day() {
        assert_eq!(date_of(0), "1970-01-01");
        // 2025-06-01T23:59:59.999Z and a millisecond later.
        assert_eq!(date_of(1_748_822_399_999), "2025-06-01");
        assert_eq!(date_of(1_748_822_400_000), "2025-06-02");
    }
}
