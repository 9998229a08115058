//! Keys between validators (docs/SECURITY.md, "Confidential records", §5.2-5.3, §5.6): pull
//! by the node that needs a key, answered by a holder that checks entitlement on its own state.
//!
//! - A party (sealer, patient's home, doctor's home) asks the sealer; after 3 unanswered tries
//!   the patient's home too; when both are itself (it lost its store), every other validator in
//!   turn. A grantee asks the patient's home only: the one distributor to other hospitals.
//! - A holder answers a request for `t` by `R` with the key iff it holds it, `t` is applied and
//!   not erased at its state, and `R` is a party, or the holder is the patient's home and `R`
//!   a live grantee. Otherwise it says why not. Its state is its index and its held keys'
//!   rows, as of its processed height: one consistent state (§16.19), read without
//!   `chain.db` (§12.1).
//! - The requester checks the key against the body's commitment on its own chain and its own
//!   entitlement before it stores it; a wrong key is dropped and counted.
//! - Bounds: at most 4 open requests per holder and 4 queued per asker; a token bucket per
//!   asker (4,096 ids per second, burst 8,192), ids beyond answered `Busy` without a lookup;
//!   a node that is catching up answers `Busy` to everything. The asker keeps the same bucket
//!   per holder and asks within it, and asks a holder nothing for a second after an answer
//!   that was all `Busy`. A request unanswered for 5 s is forgotten (its slot freed, its ids
//!   asked again after their backoff), and its answer still taken for a minute. An id is
//!   answered from the erasures in memory, then from its row (`super::index`, W4, §16.26):
//!   one filter probe per run of `keys.db`'s epoch index for an id held nowhere, a row read
//!   for a held one; only a key that leaves is opened.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ledger::seal::{DataKey, check_key};
use ledger::{Meta, Queries, Reader, TxId};
use pbft::ReplicaId;
use tracing::debug;

use super::index::{HeldTx, OnChain};
use super::store::Durability;
use super::wanted::{self, LAGGING_AFTER, Refusal};
use super::{Directory, Kept, Service, Wanted};
use crate::error::NodeError;
use crate::transport::Transport;
use crate::wire::{Frame, KeyFrame, KeyReply, MAX_KEY_REQUEST_IDS, Wire, WireKey};

/// Requests a node keeps open per holder, at most.
const OPEN_PER_HOLDER: usize = 4;
/// An unanswered request is forgotten after this (its ids are asked again after their backoff).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the answer to a request forgotten for [`REQUEST_TIMEOUT`] is still taken: a holder
/// answering from disk may be slower, and its keys are as good. Dropped, they were two thirds
/// of the keys served on a chain of 10 M, asked again each time (BENCHMARKS.md, "thirty-sixth").
const LATE_ANSWER_TAKEN: Duration = Duration::from_secs(60);
/// Asked ids answered per second per peer, and the burst.
const RATE_IDS_PER_S: f64 = 4096.0;
const BURST_IDS: f64 = 8192.0;
/// How long a node asks a holder nothing after an answer that was `Busy` for every id (the
/// holder is catching up, §5.6, or its allowance for this node is spent).
const BUSY_PAUSE: Duration = Duration::from_secs(1);

/// An allowance of asked ids: a holder's per asker, and an asker's own mirror of it per holder,
/// so that it asks no more than the holder answers (each id beyond is a `Busy` both pay for).
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(now: Instant) -> Self {
        Bucket {
            tokens: BURST_IDS,
            at: now,
        }
    }

    /// The tokens now, refilled since the last look.
    fn refill(&mut self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * RATE_IDS_PER_S).min(BURST_IDS);
        self.at = now;
        self.tokens
    }

    /// Takes up to `want` tokens; how many were taken.
    fn take(&mut self, want: usize, now: Instant) -> usize {
        let taken = (want as f64).min(self.refill(now).floor().max(0.0));
        self.tokens -= taken;
        taken as usize
    }

    /// Full requests of [`MAX_KEY_REQUEST_IDS`] ids the allowance covers now.
    fn requests(&mut self, now: Instant) -> usize {
        (self.refill(now) / MAX_KEY_REQUEST_IDS as f64).max(0.0) as usize
    }

    /// Spends `ids` tokens; a short request may overdraw (the debt refills first).
    fn spend(&mut self, ids: usize, now: Instant) {
        self.refill(now);
        self.tokens -= ids as f64;
    }

    /// Empties the allowance for `pause` beyond what it owes already.
    fn pause(&mut self, pause: Duration, now: Instant) {
        self.refill(now);
        self.tokens = self.tokens.min(0.0) - pause.as_secs_f64() * RATE_IDS_PER_S;
    }
}

/// A request this node sent and waits an answer for.
struct OpenPull {
    holder: ReplicaId,
    txs: Vec<TxId>,
    sent: Instant,
}

/// The exchange's own state: requests out, buckets of askers, and the way to peers.
pub(super) struct Exchange {
    transport: Arc<dyn Transport>,
    next_request: u64,
    open: HashMap<u64, OpenPull>,
    /// Requests forgotten for [`REQUEST_TIMEOUT`], whose answers are still taken for
    /// [`LATE_ANSWER_TAKEN`] after they were sent.
    late: HashMap<u64, OpenPull>,
    /// Per asker: the ids this node answers it.
    buckets: Vec<Bucket>,
    /// Per holder: the ids this node may ask it (the mirror of the holder's bucket for it).
    allowances: Vec<Bucket>,
    /// Per holder: when the oldest request it has not answered was sent (open, or timed out
    /// since its last answer).
    unanswered_since: Vec<Option<Instant>>,
    /// Keys to offer, per asker told `Fetching` ([`Exchange::send_offers`]).
    offers: HashMap<ReplicaId, Vec<TxId>>,
}

impl Exchange {
    /// The exchange of a key service that starts: it greets every peer with an empty offer,
    /// which tells it this node (re)started and forgot whom it told `Fetching` (red team
    /// s11b: a holder's restart left its askers waiting out grown waits, up to 5 minutes). At
    /// start, not with the first frame to a peer: a peer it has nothing to send would never be
    /// told (red team s12). The transport queues it for a peer not connected yet.
    pub fn new(me: ReplicaId, n: usize, transport: Arc<dyn Transport>) -> Self {
        let now = Instant::now();
        let peers: Vec<ReplicaId> = (0..n as ReplicaId).filter(|peer| *peer != me).collect();
        let hello = KeyFrame::Offer { txs: Vec::new() };
        transport.broadcast(&peers, Frame::new(Wire::Keys(hello)));
        Exchange {
            transport,
            next_request: rand::random(),
            open: HashMap::new(),
            late: HashMap::new(),
            buckets: (0..n).map(|_| Bucket::full(now)).collect(),
            allowances: (0..n).map(|_| Bucket::full(now)).collect(),
            unanswered_since: vec![None; n],
            offers: HashMap::new(),
        }
    }

    fn send(&mut self, to: ReplicaId, frame: KeyFrame) {
        self.transport.send(to, Frame::new(Wire::Keys(frame)));
    }

    /// Offers `tx` to `asker` with the next [`Exchange::send_offers`].
    pub(super) fn offer(&mut self, asker: ReplicaId, tx: TxId) {
        self.offers.entry(asker).or_default().push(tx);
    }

    /// Sends the offers gathered, at most [`MAX_KEY_REQUEST_IDS`] ids a frame.
    pub(super) fn send_offers(&mut self) {
        for (asker, txs) in std::mem::take(&mut self.offers) {
            for chunk in txs.chunks(MAX_KEY_REQUEST_IDS) {
                let offer = KeyFrame::Offer {
                    txs: chunk.to_vec(),
                };
                self.send(asker, offer);
            }
        }
    }

    /// Whether `holder` has left a request unanswered for [`LAGGING_AFTER`] (§12.1 item 7).
    pub(super) fn lagging(&self, holder: ReplicaId, now: Instant) -> bool {
        self.unanswered_since
            .get(holder as usize)
            .copied()
            .flatten()
            .is_some_and(|since| now.saturating_duration_since(since) >= LAGGING_AFTER)
    }

    fn open_to(&self, holder: ReplicaId) -> usize {
        self.open
            .values()
            .filter(|pull| pull.holder == holder)
            .count()
    }

    /// How many more requests `holder` may be sent now: at most [`OPEN_PER_HOLDER`] open, and
    /// no more ids than its allowance for this node covers.
    fn room(&mut self, holder: ReplicaId, now: Instant) -> usize {
        let open = OPEN_PER_HOLDER.saturating_sub(self.open_to(holder));
        let allowed = self
            .allowances
            .get_mut(holder as usize)
            .map_or(0, |allowance| allowance.requests(now));
        open.min(allowed)
    }

    pub(super) fn ask(&mut self, holder: ReplicaId, txs: Vec<TxId>, now: Instant) {
        let request = self.next_request;
        self.next_request = self.next_request.wrapping_add(1);
        let txs_len = txs.len();
        self.send(
            holder,
            KeyFrame::Request {
                request,
                txs: txs.clone(),
            },
        );
        self.open.insert(
            request,
            OpenPull {
                holder,
                txs,
                sent: now,
            },
        );
        if let Some(since) = self.unanswered_since.get_mut(holder as usize) {
            since.get_or_insert(now);
        }
        if let Some(allowance) = self.allowances.get_mut(holder as usize) {
            allowance.spend(txs_len, now);
        }
    }

    /// The open request `request` to `holder`, closed.
    /// The holder is then unanswered since its oldest request still open, if any.
    fn answered(&mut self, holder: ReplicaId, request: u64) -> Option<OpenPull> {
        let pull = match self.open.get(&request) {
            Some(pull) if pull.holder == holder => self.open.remove(&request)?,
            _ => return None,
        };
        let oldest = self
            .open
            .values()
            .filter(|open| open.holder == holder)
            .map(|open| open.sent)
            .min();
        if let Some(since) = self.unanswered_since.get_mut(holder as usize) {
            *since = oldest;
        }
        Some(pull)
    }

    /// Forgets the requests unanswered for [`REQUEST_TIMEOUT`] (their holders stay
    /// unanswered since they were sent), and those whose answers are no longer taken.
    pub fn expire_requests(&mut self, now: Instant) {
        let waited = |pull: &OpenPull| now.saturating_duration_since(pull.sent);
        self.late.retain(|_, pull| waited(pull) < LATE_ANSWER_TAKEN);
        let expired: Vec<u64> = self
            .open
            .iter()
            .filter(|(_, pull)| waited(pull) >= REQUEST_TIMEOUT)
            .map(|(request, _)| *request)
            .collect();
        for request in expired {
            if let Some(pull) = self.open.remove(&request) {
                self.late.insert(request, pull);
            }
        }
    }

    /// The request `request` to `holder` that was forgotten and is answered late, closed. The
    /// holder stays unanswered since it was sent: a late answer is no sign that it keeps up.
    fn answered_late(&mut self, holder: ReplicaId, request: u64) -> Option<OpenPull> {
        match self.late.get(&request) {
            Some(pull) if pull.holder == holder => self.late.remove(&request),
            _ => None,
        }
    }

    /// Asks `holder` nothing for [`BUSY_PAUSE`].
    fn pause(&mut self, holder: ReplicaId, now: Instant) {
        if let Some(allowance) = self.allowances.get_mut(holder as usize) {
            allowance.pause(BUSY_PAUSE, now);
        }
    }

    fn answer(&mut self, to: ReplicaId, request: u64, height: u64, replies: Vec<KeyReply>) {
        self.send(
            to,
            KeyFrame::Answer {
                request,
                height,
                replies,
            },
        );
    }
}

impl Service {
    /// A key frame from `from` (the transport's authenticated peer).
    pub(super) fn on_frame(&mut self, from: ReplicaId, frame: &Frame) -> Result<(), NodeError> {
        if from as usize >= self.n || from == self.me {
            return Ok(());
        }
        self.shared.telemetry().received(frame);
        match &**frame {
            Wire::Keys(KeyFrame::Request { request, txs }) => self.on_request(from, *request, txs),
            Wire::Keys(KeyFrame::Answer {
                request,
                height,
                replies,
            }) => self.on_answer(from, *request, *height, replies),
            Wire::Keys(KeyFrame::Offer { txs }) => {
                self.on_offer(from, txs);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Catching up: the processed height may lack committed blocks ([`NodeStatus::behind`]:
    /// the replica recovers, or it is below the highest stable checkpoint f+1 validators
    /// reported, §5.6, or below the head f+1 peers claim, or f+1 peers have not said lately: a
    /// node restored from an old backup must not answer from its old state in the moment
    /// before it learns it is behind), or the chain is behind the processed height (its index
    /// is not whole yet, [`Service::load`]): it gives no key.
    ///
    /// [`NodeStatus::behind`]: crate::NodeStatus::behind
    fn catching_up(&self) -> bool {
        self.waits_for_chain || self.shared.status().behind(self.processed)
    }

    fn on_request(&mut self, from: ReplicaId, request: u64, txs: &[TxId]) -> Result<(), NodeError> {
        if txs.is_empty() || txs.len() > MAX_KEY_REQUEST_IDS {
            self.counters.keys_requests_dropped += 1;
            return Ok(());
        }
        let now = Instant::now();
        let catching_up = self.catching_up();
        let allowed = if catching_up {
            0
        } else {
            self.buckets_take(from, txs.len(), now)
        };
        // From the index and the held key's row, as of the processed height (§5.3, §12.1 item
        // 3): only the key of an id held for an entitled asker is opened.
        let now_ms = self.clock.now_ms();
        let mut replies = Vec::with_capacity(allowed);
        for tx in &txs[..allowed] {
            // That it is erased is on chain for everyone to see (§2): no row read.
            let mut row = None;
            let answer = if self.index.is_erased(tx) {
                Some(KeyReply::Erased)
            } else {
                let held = self.held(tx)?;
                row = held.as_ref().map(|(seq, _)| *seq);
                self.index.answer(
                    self.me,
                    from,
                    held.map(|(_, held)| held),
                    self.block_time_ms,
                    now_ms,
                )
            };
            let reply = match answer {
                Some(reply) => reply,
                None => {
                    self.counters.keys_requests_checked += 1;
                    let key = match row {
                        Some(seq) => self.store.rows().key_at(tx, seq)?,
                        None => None,
                    };
                    match key {
                        Some(key) => KeyReply::Key(WireKey(key)),
                        None => KeyReply::NotHeld,
                    }
                }
            };
            // Not held here yet, but wanted: the asker should not take it for "held nowhere"
            // (§5.3: a grantee asking a home that still fetches the key from its sealer).
            let reply = match reply {
                KeyReply::NotHeld if self.wanted.contains(tx) => {
                    self.wanted.told_fetching(tx, from);
                    KeyReply::Fetching
                }
                reply => reply,
            };
            replies.push(reply);
        }
        for reply in &replies {
            match reply {
                KeyReply::Key(_) => self.counters.keys_served += 1,
                KeyReply::NotEntitled => self.counters.keys_requests_not_entitled += 1,
                KeyReply::NotHeld => self.counters.keys_requests_not_held += 1,
                KeyReply::Fetching => self.counters.keys_requests_fetching += 1,
                _ => {}
            }
        }
        let busy = (txs.len() - replies.len()) as u64;
        self.counters.keys_requests_busy += busy;
        if catching_up {
            self.counters.keys_requests_busy_behind += busy;
        }
        replies.resize(txs.len(), KeyReply::Busy);
        #[cfg(feature = "byzantine")]
        self.lie_in_answer(&mut replies);
        self.exchange.answer(from, request, self.processed, replies);
        Ok(())
    }

    fn buckets_take(&mut self, from: ReplicaId, want: usize, now: Instant) -> usize {
        self.exchange
            .buckets
            .get_mut(from as usize)
            .map_or(0, |bucket| bucket.take(want, now))
    }

    fn on_answer(
        &mut self,
        from: ReplicaId,
        request: u64,
        height: u64,
        replies: &[KeyReply],
    ) -> Result<(), NodeError> {
        let now = Instant::now();
        let was_lagging = self.exchange.lagging(from, now);
        let (pull, late) = match self.exchange.answered(from, request) {
            Some(pull) => (pull, false),
            None => match self.exchange.answered_late(from, request) {
                Some(pull) => (pull, true),
                None => {
                    self.counters.keys_answers_dropped += 1;
                    return Ok(());
                }
            },
        };
        if self.waits_for_chain {
            // An older chain cannot tell what the store erased or ended since (§5.6): no key
            // is stored until it has caught up (red team round 4, break 1).
            self.counters.keys_answers_dropped += 1;
            return Ok(());
        }
        if replies.len() != pull.txs.len() {
            self.counters.keys_answers_dropped += 1;
            return Ok(());
        }
        if late {
            self.counters.keys_answers_late += 1;
        }
        if was_lagging && !late {
            self.wanted.holder_back(from, now);
        }
        if replies.iter().all(|reply| matches!(reply, KeyReply::Busy)) {
            // Asking again at once would be answered the same: its keys park behind it, and
            // move to another holder if it stays busy (§12.1 item 7).
            self.exchange.pause(from, now);
            return Ok(());
        }
        let mut keys = Vec::new();
        let mut refused = Vec::new();
        for (tx, reply) in pull.txs.iter().zip(replies) {
            match reply {
                KeyReply::Key(WireKey(key)) => keys.push((*tx, key.clone())),
                // The holder is at or past this node's state and still gives no key: a
                // refusal (`WantedKeys::refused`). `NotEntitled` or `NotOnChain`: the two
                // disagree only while one is behind; ask at the slowest pace. Not so for a
                // key this node sealed (it lost its store, §5.6): it asks others in turn, and
                // one that is no party says no while the next may hold it (a grantee). Nor
                // for `NotHeld`: the next holder may hold it; nor for `Fetching`: the holder
                // offers it once it holds it.
                KeyReply::NotEntitled
                | KeyReply::NotOnChain
                | KeyReply::NotHeld
                | KeyReply::Fetching
                    if height >= self.processed =>
                {
                    let refusal = match reply {
                        KeyReply::NotEntitled | KeyReply::NotOnChain => Refusal::ToldToWait,
                        KeyReply::Fetching => Refusal::Fetching,
                        _ => Refusal::NotHeld,
                    };
                    refused.push((*tx, refusal));
                }
                _ => {}
            }
        }
        if !keys.is_empty() {
            // Lost in a crash, they are wanted and pulled again after the restart.
            self.in_write(Durability::Deferred, |service| service.receive(from, keys))?;
        }
        for (tx, refusal) in refused {
            let Some(wanted) = self.wanted.get(&tx) else {
                continue;
            };
            let refusal = match refusal {
                Refusal::ToldToWait if wanted.source == self.me => Refusal::NotHeld,
                refusal => refusal,
            };
            let home = home_of(wanted, &mut self.directory, &self.chain)?;
            let round = wanted::holders(wanted, self.me, self.n, home);
            self.wanted.refused(&tx, from, &round, now, refusal);
        }
        Ok(())
    }

    /// `from` offers keys it answered `Fetching` for and holds now: each is asked of it at
    /// once (§5.3, "Keys held nowhere"; an offer of a key it did not say it fetches changes
    /// nothing). An empty offer says it (re)started, having forgotten whom it told
    /// `Fetching`: every grown wait drops back ([`wanted::WantedKeys::holder_restarted`]).
    fn on_offer(&mut self, from: ReplicaId, txs: &[TxId]) {
        let now = Instant::now();
        if txs.is_empty() {
            self.wanted.holder_restarted(from, now);
            return;
        }
        if txs.len() > MAX_KEY_REQUEST_IDS {
            self.counters.keys_requests_dropped += 1;
            return;
        }
        for tx in txs {
            self.wanted.offered(tx, from, now);
        }
    }

    /// Keys from `from`: each stored only if this node wants it, it matches the commitment of
    /// the body on this node's chain, this node is still entitled and the record is not
    /// erased here (§5.2), and it is not held for an earlier transaction (§16.13).
    fn receive(&mut self, from: ReplicaId, keys: Vec<(TxId, DataKey)>) -> Result<(), NodeError> {
        for (tx, key) in keys {
            if !self.wanted.contains(&tx) {
                #[cfg(feature = "byzantine")]
                self.keep_any_key(from, &tx, &key)?;
                continue;
            }
            let Some(committed) = self.checked_key(from, &tx, &key)? else {
                continue;
            };
            let (header, rejected) = (&committed.tx.header, committed.rejected.is_some());
            let Some(patient) = header.meta.subject().copied() else {
                continue;
            };
            let entitled = match self.entitled(header)? {
                Some((parties, _)) if !rejected && !self.chain.is_erased(&tx)? => Some(parties),
                _ => None,
            };
            let Some(parties) = entitled else {
                self.counters.keys_refused_unentitled += 1;
                continue;
            };
            let position = Some((committed.height, committed.index));
            let held = HeldTx {
                patient,
                on_chain: Some(OnChain {
                    parties,
                    record: matches!(header.meta, Meta::AddRecord(_)),
                }),
            };
            let kept = self.keep_key(&tx, held, &key, position, header.not_after_ms)?;
            match kept {
                Kept::Stored { .. } => self.counters.keys_received += 1,
                Kept::Held => {}
                Kept::Broken => self.counters.keys_refused_reused += 1,
            }
            if let Some(wanted) = self.wanted.remove(&tx)
                && !matches!(kept, Kept::Broken)
            {
                for asker in wanted.into_askers() {
                    self.exchange.offer(asker, tx);
                }
            }
        }
        self.exchange.send_offers();
        Ok(())
    }

    /// `tx` as committed on this node's chain, if `key` (sent by `from`) matches its body's
    /// commitment (bound to its header, §1.1); a key that does not is counted.
    pub(super) fn checked_key(
        &mut self,
        from: ReplicaId,
        tx: &TxId,
        key: &DataKey,
    ) -> Result<Option<ledger::CommittedTx>, NodeError> {
        let Some(committed) = self.chain.transaction(tx)? else {
            return Ok(None);
        };
        let header = &committed.tx.header;
        if check_key(&self.genesis_hash, header, &committed.tx.body, key).is_err() {
            debug!(from, tx = %ledger::short_hex(tx), "refused a key that does not match its body");
            self.counters.keys_refused_wrong += 1;
            return Ok(None);
        }
        Ok(Some(committed))
    }

    /// Asks for the wanted keys that are due, batched per holder, at most
    /// [`OPEN_PER_HOLDER`] requests open per holder (the schedule: [`super::wanted`]).
    pub(super) fn pull(&mut self) -> Result<(), NodeError> {
        if self.waits_for_chain {
            // Nothing is wanted, nor stored, until the chain has caught up ([`Service::load`]).
            return Ok(());
        }
        let now = Instant::now();
        #[cfg(feature = "byzantine")]
        self.ask_everyone(now)?;
        let Service {
            me,
            n,
            chain,
            directory,
            exchange,
            wanted,
            ..
        } = self;
        let mut holders = Holders {
            me: *me,
            n: *n,
            chain,
            directory,
            exchange,
            now,
        };
        let requests = wanted.requests(now, &mut holders)?;
        for (holder, txs) in requests {
            self.exchange.ask(holder, txs, now);
        }
        Ok(())
    }
}

/// The holders as this node sees them now, for [`super::wanted::WantedKeys::requests`].
struct Holders<'a> {
    me: ReplicaId,
    n: usize,
    chain: &'a Reader,
    directory: &'a mut Directory,
    exchange: &'a mut Exchange,
    now: Instant,
}

impl wanted::Holders for Holders<'_> {
    type Error = NodeError;

    fn count(&self) -> usize {
        self.n
    }

    fn room(&mut self, holder: ReplicaId) -> usize {
        self.exchange.room(holder, self.now)
    }

    fn lagging(&self, holder: ReplicaId) -> bool {
        self.exchange.lagging(holder, self.now)
    }

    fn holder_for(
        &mut self,
        wanted: &Wanted,
        lagging: &dyn Fn(ReplicaId) -> bool,
    ) -> Result<Option<ReplicaId>, NodeError> {
        holder_for(wanted, self.me, self.n, self.directory, self.chain, lagging)
    }
}

/// The holder to ask for a wanted key now ([`wanted::holder_for`]).
fn holder_for(
    wanted: &Wanted,
    me: ReplicaId,
    n: usize,
    directory: &mut Directory,
    chain: &Reader,
    lagging: &dyn Fn(ReplicaId) -> bool,
) -> Result<Option<ReplicaId>, NodeError> {
    let home = home_of(wanted, directory, chain)?;
    Ok(wanted::holder_for(wanted, me, n, home, lagging))
}

/// The patient's home, if `wanted`'s holders may include it (a grantee's source is the home).
fn home_of(
    wanted: &Wanted,
    directory: &mut Directory,
    chain: &Reader,
) -> Result<Option<ReplicaId>, NodeError> {
    if wanted.as_grantee {
        return Ok(Some(wanted.source));
    }
    directory.home(chain, &wanted.patient)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let start = Instant::now();
        let mut bucket = Bucket {
            tokens: BURST_IDS,
            at: start,
        };
        assert_eq!(bucket.take(8192, start), 8192);
        assert_eq!(bucket.take(1, start), 0);
        assert_eq!(
            bucket.take(10_000, start + Duration::from_millis(500)),
            2048
        );
        assert_eq!(bucket.take(100_000, start + Duration::from_secs(60)), 8192);
    }

    struct Nowhere;

    impl Transport for Nowhere {
        fn send(&self, _: ReplicaId, _: Frame) {}
    }

    /// An asker sends a holder no more ids than the holder's bucket for it answers: its burst,
    /// then a full request each quarter second (4,096 ids a second).
    #[test]
    fn an_asker_asks_within_the_holders_allowance() {
        let t0 = Instant::now();
        let mut exchange = Exchange::new(0, 4, Arc::new(Nowhere));
        let full = vec![[1; 32]; MAX_KEY_REQUEST_IDS];
        assert_eq!(
            exchange.room(1, t0),
            OPEN_PER_HOLDER,
            "open requests bound first"
        );
        let mut asked = 0;
        for _ in 0..OPEN_PER_HOLDER {
            exchange.ask(1, full.clone(), t0);
            asked += full.len();
        }
        assert_eq!(exchange.room(1, t0), 0);
        exchange.open.clear();
        // Half the burst is left: four more full requests, then none.
        assert_eq!(exchange.room(1, t0), OPEN_PER_HOLDER);
        for _ in 0..OPEN_PER_HOLDER {
            exchange.ask(1, full.clone(), t0);
            asked += full.len();
        }
        exchange.open.clear();
        assert_eq!(asked as f64, BURST_IDS);
        assert_eq!(exchange.room(1, t0), 0, "the burst is spent");
        assert_eq!(
            exchange.room(2, t0),
            OPEN_PER_HOLDER,
            "another holder's is not"
        );
        assert_eq!(exchange.room(1, t0 + Duration::from_millis(240)), 0);
        assert_eq!(exchange.room(1, t0 + Duration::from_millis(250)), 1);
        // A short request spends what it asks: room again once that has refilled.
        exchange.ask(1, vec![[1; 32]; 3], t0 + Duration::from_millis(250));
        assert_eq!(exchange.room(1, t0 + Duration::from_millis(250)), 0);
        assert_eq!(exchange.room(1, t0 + Duration::from_millis(251)), 1);
    }

    /// After an answer that was all `Busy` a holder is asked nothing for [`BUSY_PAUSE`], then
    /// as its allowance refills.
    #[test]
    fn a_busy_holder_is_left_alone_for_a_while() {
        let t0 = Instant::now();
        let mut exchange = Exchange::new(0, 4, Arc::new(Nowhere));
        exchange.pause(1, t0);
        let refill_one = Duration::from_millis(250);
        assert_eq!(exchange.room(1, t0 + BUSY_PAUSE), 0);
        assert_eq!(exchange.room(1, t0 + BUSY_PAUSE + refill_one), 1);
        assert_eq!(exchange.room(2, t0), OPEN_PER_HOLDER);
        // A pause on a debt adds to it.
        exchange.ask(3, vec![[1; 32]; 2 * BURST_IDS as usize], t0);
        exchange.open.clear();
        exchange.pause(3, t0);
        let debt_s = BURST_IDS / RATE_IDS_PER_S;
        let after = t0 + BUSY_PAUSE + Duration::from_secs_f64(debt_s) + refill_one;
        assert_eq!(exchange.room(3, after - Duration::from_millis(10)), 0);
        assert_eq!(exchange.room(3, after + Duration::from_millis(10)), 1);
    }
}

/// Red team s12 against the greeting (`Exchange::new`).
#[cfg(test)]
mod red_team_s12 {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(ReplicaId, Frame)>>);

    impl Transport for Recorder {
        fn send(&self, to: ReplicaId, frame: Frame) {
            self.0.lock().unwrap().push((to, frame));
        }
    }

    fn is_greeting(frame: &Frame) -> bool {
        matches!(&**frame, Wire::Keys(KeyFrame::Offer { txs }) if txs.is_empty())
    }

    /// Fixed after the break (`wanted::red_team_s12::a_restarted_home_greets_its_grantee_only_when_asked_and_it_waits_5_minutes`):
    /// a started exchange greets every peer once, at start, a peer it sends nothing too, and
    /// never again in that start, whatever it sends (requests, answers, offers).
    #[test]
    fn a_start_greets_every_peer_once_at_start_and_only_then() {
        let t0 = Instant::now();
        let recorder = Arc::new(Recorder::default());
        let mut exchange = Exchange::new(0, 4, recorder.clone());
        {
            let sent = recorder.0.lock().unwrap();
            let greeted: Vec<ReplicaId> = sent
                .iter()
                .filter(|(_, f)| is_greeting(f))
                .map(|(to, _)| *to)
                .collect();
            assert_eq!(greeted, [1, 2, 3], "every peer, not itself, at start");
        }
        exchange.ask(1, vec![[1; 32]], t0);
        exchange.answer(2, 7, 0, vec![KeyReply::NotHeld]);
        exchange.offer(1, [2; 32]);
        exchange.send_offers();
        exchange.ask(1, vec![[3; 32]], t0);
        exchange.answer(2, 8, 0, vec![KeyReply::Fetching]);
        let sent = recorder.0.lock().unwrap();
        for (peer, count) in [(1, 4), (2, 3), (3, 1)] {
            let frames: Vec<&Frame> = sent
                .iter()
                .filter(|(to, _)| *to == peer)
                .map(|(_, f)| f)
                .collect();
            assert!(is_greeting(frames[0]), "first to {peer}");
            assert_eq!(frames.iter().filter(|f| is_greeting(f)).count(), 1);
            assert_eq!(
                frames.len(),
                count,
                "to {peer}: the greeting and what was sent"
            );
        }
    }
}

/// Red team (s8b) against `Exchange::lagging` and `unanswered_since` (commit 6ebe613a): can a
/// dishonest validator make an honest holder look lagging, or hide its own silence? The
/// answers here are what `Service::on_answer` hands `answered` (`from` is the transport's
/// authenticated peer). All held, with one caveat the `wanted` red team shows
/// (`red_team_s8b::a_sealer_answering_just_under_lagging_after_gates_the_home`): a holder
/// that answers every request, with anything, within 2 s never lags.
#[cfg(test)]
mod red_team_s8b {
    use super::*;

    struct Nowhere;

    impl Transport for Nowhere {
        fn send(&self, _: ReplicaId, _: Frame) {}
    }

    fn exchange() -> Exchange {
        Exchange::new(0, 4, Arc::new(Nowhere))
    }

    /// The request ids open to `holder`, oldest first.
    fn open_to(exchange: &Exchange, holder: ReplicaId) -> Vec<u64> {
        let mut open: Vec<(Instant, u64)> = exchange
            .open
            .iter()
            .filter(|(_, pull)| pull.holder == holder)
            .map(|(id, pull)| (pull.sent, *id))
            .collect();
        open.sort();
        open.into_iter().map(|(_, id)| id).collect()
    }

    const S: Duration = Duration::from_secs(1);

    /// A dishonest validator answering with the id of a request open to an honest holder
    /// (ids are sequential from a random start: it can guess them) closes nothing: the honest
    /// holder's answer still counts, and the dishonest one is not taken as answering.
    #[test]
    fn an_answer_under_another_holders_request_id_closes_nothing() {
        let t0 = Instant::now();
        let mut exchange = exchange();
        exchange.ask(1, vec![[1; 32]], t0);
        exchange.ask(2, vec![[2; 32]], t0);
        let to_honest = open_to(&exchange, 1)[0];
        assert!(exchange.answered(2, to_honest).is_none());
        assert!(
            exchange.lagging(2, t0 + 2 * S),
            "the dishonest one still lags"
        );
        assert_eq!(open_to(&exchange, 1), vec![to_honest]);
        assert!(exchange.answered(1, to_honest).is_some());
        assert!(!exchange.lagging(1, t0 + 2 * S), "the honest one answered");
    }

    /// Ids never sent, and old requests answered after they timed out, clear nothing: the
    /// holder lags on.
    #[test]
    fn answers_to_nothing_open_do_not_hide_silence() {
        let t0 = Instant::now();
        let mut exchange = exchange();
        exchange.ask(1, vec![[1; 32]], t0);
        let sent = open_to(&exchange, 1)[0];
        for guess in [sent.wrapping_add(1), sent.wrapping_sub(1), 0, u64::MAX] {
            assert!(exchange.answered(1, guess).is_none());
        }
        assert!(exchange.lagging(1, t0 + 2 * S));
        exchange.expire_requests(t0 + 5 * S);
        assert!(exchange.open.is_empty());
        assert!(exchange.answered(1, sent).is_none(), "a late answer");
        assert!(exchange.lagging(1, t0 + 5 * S), "still unanswered since t0");
        // A new request to it: lagging at once (unanswered since the one that timed out).
        exchange.ask(1, vec![[1; 32]], t0 + 5 * S);
        assert!(exchange.lagging(1, t0 + 5 * S));
        // Its answer clears it.
        let again = open_to(&exchange, 1)[0];
        assert!(exchange.answered(1, again).is_some());
        assert!(!exchange.lagging(1, t0 + 6 * S));
    }

    /// A request forgotten for `REQUEST_TIMEOUT` is answered late: taken once, from its holder
    /// only, for `LATE_ANSWER_TAKEN`; the holder still lags (a late answer is no sign it keeps
    /// up), and its slot is free for another request meanwhile.
    #[test]
    fn a_late_answer_is_taken_once_from_its_holder() {
        let t0 = Instant::now();
        let mut exchange = exchange();
        exchange.ask(1, vec![[1; 32]], t0);
        exchange.ask(1, vec![[2; 32]], t0);
        let (first, second) = (open_to(&exchange, 1)[0], open_to(&exchange, 1)[1]);
        exchange.expire_requests(t0 + 5 * S);
        assert!(exchange.open.is_empty(), "their slots are free");
        assert!(exchange.answered(1, first).is_none(), "not open any more");
        assert!(exchange.answered_late(2, first).is_none(), "another holder");
        let pull = exchange.answered_late(1, first).expect("taken late");
        assert_eq!(pull.txs, vec![[1; 32]]);
        assert!(exchange.answered_late(1, first).is_none(), "taken once");
        assert!(exchange.lagging(1, t0 + 5 * S), "still unanswered since t0");
        exchange.expire_requests(t0 + LATE_ANSWER_TAKEN - Duration::from_millis(1));
        assert!(exchange.late.contains_key(&second), "still taken");
        exchange.expire_requests(t0 + LATE_ANSWER_TAKEN);
        assert!(exchange.answered_late(1, second).is_none(), "too late");
    }

    /// A holder that answers its newest requests at once and leaves its oldest open lags from
    /// 2 s after the oldest was sent: answering around it hides nothing.
    #[test]
    fn answering_around_the_oldest_request_still_lags() {
        let t0 = Instant::now();
        let mut exchange = exchange();
        exchange.ask(1, vec![[1; 32]], t0);
        let oldest = open_to(&exchange, 1)[0];
        for i in 1..=8u32 {
            let at = t0 + S * i / 4;
            exchange.ask(1, vec![[2; 32]], at);
            let newest = *open_to(&exchange, 1).last().unwrap();
            assert_ne!(newest, oldest);
            assert!(exchange.answered(1, newest).is_some());
        }
        assert!(exchange.lagging(1, t0 + 2 * S));
        assert!(!exchange.lagging(1, t0 + 2 * S - Duration::from_millis(1)));
        // Once it has timed out, an answer to a later request clears it (the timed-out one
        // counted as a try; `unanswered_since` says "since its last answer").
        exchange.expire_requests(t0 + 5 * S);
        exchange.ask(1, vec![[3; 32]], t0 + 5 * S);
        let later = open_to(&exchange, 1)[0];
        assert!(exchange.answered(1, later).is_some());
        assert!(!exchange.lagging(1, t0 + 5 * S));
    }

    /// An answer closes its request whatever its replies (`on_answer` checks their number only
    /// after `answered`): a holder answering every request with no reply at all looks as
    /// responsive as one answering `Busy`, and no more (each id asked counted a try, so its
    /// keys reach the patient's home after SEALER_TRIES, as for `Busy`).
    #[test]
    fn an_answer_of_the_wrong_size_counts_as_an_answer() {
        let t0 = Instant::now();
        let mut exchange = exchange();
        exchange.ask(1, vec![[1; 32]; 3], t0);
        let id = open_to(&exchange, 1)[0];
        let pull = exchange.answered(1, id).expect("closed");
        assert_eq!(
            pull.txs.len(),
            3,
            "on_answer then drops a reply count other than 3"
        );
        assert!(!exchange.lagging(1, t0 + 3 * S));
    }

    /// Requests to a peer that is not a validator, or to itself, change no holder's state.
    #[test]
    fn out_of_range_holders_are_ignored() {
        let t0 = Instant::now();
        let mut exchange = exchange();
        exchange.ask(7, vec![[1; 32]], t0);
        for holder in 0..4 {
            assert!(!exchange.lagging(holder, t0 + 3 * S));
        }
        assert!(!exchange.lagging(7, t0 + 3 * S));
    }
}
