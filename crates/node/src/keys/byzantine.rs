//! The key service of a Byzantine validator (test builds only, `byzantine` feature; the
//! behaviours are declared and documented in `crate::byzantine`): what `ask-keys`,
//! `wrong-keys` and `keep-keys` change in this service. A correct service never enters this
//! file: every hook asks [`Lies`] first, and a validator without `--byzantine` has none.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ledger::TxId;
use ledger::seal::DataKey;
use pbft::ReplicaId;
use tracing::warn;

use super::Service;
use super::store::Inserted;
use crate::byzantine::Behaviours;
use crate::error::NodeError;
use crate::wire::{KeyReply, MAX_KEY_REQUEST_IDS, WireKey};

/// `ask-keys`: how many times each sealed transaction is asked of everyone (a holder behind
/// answers `NotOnChain` the first time), and how far apart.
const ASK_ROUNDS: u32 = 4;
const ASK_EVERY: Duration = Duration::from_secs(1);

/// A Byzantine key service's behaviours, and what `ask-keys` still means to ask.
pub(super) struct Lies {
    behaviours: Behaviours,
    /// `ask-keys`: sealed transactions to ask everyone for: rounds done, next round.
    asking: BTreeMap<TxId, (u32, Instant)>,
}

impl Lies {
    pub fn new(behaviours: Option<Behaviours>) -> Self {
        Lies {
            behaviours: behaviours.unwrap_or_default(),
            asking: BTreeMap::new(),
        }
    }
}

impl Service {
    /// `ask-keys`: an applied sealed transaction, to be asked of everyone.
    pub(super) fn covet(&mut self, tx: &TxId) {
        if self.lies.behaviours.ask_keys {
            self.lies.asking.insert(*tx, (0, Instant::now()));
        }
    }

    /// `ask-keys`: asks every other validator for every coveted key it does not hold, whose
    /// round is due, in requests of at most [`MAX_KEY_REQUEST_IDS`] ids.
    pub(super) fn ask_everyone(&mut self, now: Instant) -> Result<(), NodeError> {
        if self.lies.asking.is_empty() {
            return Ok(());
        }
        let mut due = Vec::new();
        for (tx, (rounds, next)) in &mut self.lies.asking {
            if *next <= now {
                *rounds += 1;
                *next = now + ASK_EVERY;
                due.push(*tx);
            }
        }
        self.lies
            .asking
            .retain(|_, (rounds, _)| *rounds < ASK_ROUNDS);
        let mut asked = Vec::with_capacity(due.len());
        for tx in due {
            if !self.store.rows().has_key(&tx)? {
                asked.push(tx);
            }
        }
        if asked.is_empty() {
            return Ok(());
        }
        warn!(
            keys = asked.len(),
            "byzantine: asking every validator for keys"
        );
        for holder in (0..self.n as ReplicaId).filter(|&holder| holder != self.me) {
            for chunk in asked.chunks(MAX_KEY_REQUEST_IDS) {
                self.exchange.ask(holder, chunk.to_vec(), now);
            }
        }
        Ok(())
    }

    /// `ask-keys`: a key `from` sent for `tx`, which this validator does not want (it is not
    /// entitled): kept if it matches the body's commitment, as a thief would.
    pub(super) fn keep_any_key(
        &mut self,
        from: ReplicaId,
        tx: &TxId,
        key: &DataKey,
    ) -> Result<(), NodeError> {
        if !self.lies.behaviours.ask_keys || self.store.rows().has_key(tx)? {
            return Ok(());
        }
        let Some(committed) = self.checked_key(from, tx, key)? else {
            return Ok(());
        };
        if committed.rejected.is_some() {
            return Ok(());
        }
        let header = committed.tx.header;
        let Some(patient) = header.meta.subject().copied() else {
            return Ok(());
        };
        let held = super::HeldTx {
            patient,
            on_chain: self.on_chain_of(&header)?,
        };
        let facts = super::row_facts(&held, header.not_after_ms);
        if let Inserted::Stored { .. } = self.store.rows().insert_key(tx, &facts, key)? {
            self.counters.keys_received += 1;
            warn!(
                from,
                tx = %ledger::short_hex(tx),
                "byzantine: kept a key this validator is not entitled to"
            );
        }
        Ok(())
    }

    /// `wrong-keys`: every reply becomes a fresh random key.
    pub(super) fn lie_in_answer(&self, replies: &mut [KeyReply]) {
        if !self.lies.behaviours.wrong_keys {
            return;
        }
        for reply in replies.iter_mut() {
            *reply = KeyReply::Key(WireKey(DataKey::generate()));
        }
        warn!(
            keys = replies.len(),
            "byzantine: answered a key request with wrong keys"
        );
    }

    /// `keep-keys`: whether the service keeps its rows where a correct one deletes them
    /// (`why`: a grant's end, an erasure).
    pub(super) fn keeps_keys(&self, why: &str) -> bool {
        if self.lies.behaviours.keep_keys {
            warn!(why, "byzantine: keeping keys a correct validator deletes");
        }
        self.lies.behaviours.keep_keys
    }
}
