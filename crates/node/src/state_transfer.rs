//! Which peer a validator that is behind fetches committed blocks from, and when it gives up on
//! one (PBFT's state transfer, §5.3 of the TOCS paper, with whole certified blocks as the state).
//!
//! Nothing a single peer says can switch state transfer off: a claim ("I have height h") is only
//! a hint that makes its sender a candidate; every request has a deadline; a peer that does not
//! answer in time, answers with nothing new, or sends blocks that fail verification loses its
//! claim (the last also for [`SKIP_INVALID`]) and the next candidate is asked, in rotation. A
//! Byzantine peer claiming a huge height costs one timeout per claim. A peer is asked first
//! again only after a full answer (as many blocks as a reply may carry); after a partial one the
//! next candidate is, so a peer trickling one block per timeout is asked once per round and an
//! honest peer at least every f+1 requests. A heartbeat claim a few blocks ahead is what a
//! validator a step behind its peers sees at every block (the primary commits last, issue 11):
//! consensus brings those blocks within moments, so such a claim is acted on only once it has
//! stayed ahead for a grace period (`StateTransfer::waiting_out`); one further ahead, or f+1
//! stable checkpoints past our head, at once. Blocks are applied only
//! with a valid certificate (`Runtime::on_blocks`), so no peer can make a validator apply what a
//! quorum did not commit.
//!
//! Serving is bounded per asker ([`Served`]): a `FetchBlocks` of a few bytes costs the server a
//! read of up to [`FETCH_REPLY_BYTES`] (and one block more) on its consensus thread, so every
//! byte read for a peer is charged to a budget of [`SERVED_BYTES_BURST`] filled again over
//! [`SERVED_REFILL`], into debt if need be, and a request that comes while its peer is in debt
//! is answered with no blocks, unread. An honest validator catching up applies blocks at a few
//! MB a second (BENCHMARKS.md, the ceiling), well below that, and asks the next peer after a
//! partial or empty answer.

use std::ops::Range;
use std::time::{Duration, Instant};

use pbft::ReplicaId;
use tracing::debug;

use crate::budget::PeerBudgets;
use crate::wire::FETCH_REPLY_BYTES;

/// Bytes of blocks one peer may be served in a burst (two whole replies), filled again over
/// [`SERVED_REFILL`]: 16 MiB a second per peer, sustained.
pub const SERVED_BYTES_BURST: u64 = 2 * FETCH_REPLY_BYTES as u64;
pub const SERVED_REFILL: Duration = Duration::from_secs(2);

/// What each peer may still be served ([`Served::blocks`]).
pub struct Served(PeerBudgets);

impl Served {
    pub fn new(peers: usize, now: Instant) -> Self {
        Served(PeerBudgets::new(
            peers,
            SERVED_BYTES_BURST,
            SERVED_REFILL,
            now,
        ))
    }

    /// The answer to `to`'s `FetchBlocks` for `heights`: blocks read one at a time by `read`
    /// (with their size) until one is missing or [`FETCH_REPLY_BYTES`] would be passed (one
    /// block at least, however large); everything read is charged to `to`, the block that
    /// did not fit too (red team s22: uncharged, a small block followed by a huge one was read
    /// for free at every request). None, and nothing read, while `to` is in debt.
    pub fn blocks<B, E>(
        &mut self,
        to: ReplicaId,
        heights: Range<u64>,
        now: Instant,
        mut read: impl FnMut(u64) -> Result<Option<(B, usize)>, E>,
    ) -> Result<Vec<B>, E> {
        let mut blocks = Vec::new();
        if self.0.left(to, now).is_none_or(|left| left <= 0.0) {
            return Ok(blocks);
        }
        let (mut sent, mut read_bytes) = (0usize, 0usize);
        for height in heights {
            let Some((block, size)) = read(height)? else {
                break;
            };
            read_bytes = read_bytes.saturating_add(size);
            if sent.saturating_add(size) > FETCH_REPLY_BYTES && !blocks.is_empty() {
                break;
            }
            sent = sent.saturating_add(size);
            blocks.push(block);
        }
        self.0.charge(to, read_bytes as u64, now);
        Ok(blocks)
    }
}

/// How long a peer whose blocks failed verification is not asked again.
pub const SKIP_INVALID: Duration = Duration::from_secs(60);

/// A request to send: `FetchBlocks` from `from_height` to `peer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchRequest {
    pub peer: ReplicaId,
    pub from_height: u64,
}

/// What an awaited answer did for us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Some blocks extended our chain; `full`: as many as a reply may carry (the caller's
    /// reply budget), so the peer is worth asking first for the rest.
    Applied { full: bool },
    /// Nothing that extends our chain (empty, or blocks we have).
    Nothing,
    /// A block failed verification.
    Invalid,
}

struct InFlight {
    peer: ReplicaId,
    deadline: Instant,
}

pub struct StateTransfer {
    me: ReplicaId,
    timeout: Duration,
    /// The height each peer last claimed; a hint, never trusted beyond choosing whom to ask.
    claims: Vec<u64>,
    skipped_until: Vec<Option<Instant>>,
    in_flight: Option<InFlight>,
    /// The peer tried first next time, so that retries rotate through the candidates.
    cursor: usize,
    /// Per peer: since when its claim may be fetched (`None`: it claims nothing past our
    /// head).
    fetchable_at: Vec<Option<Instant>>,
    /// A heartbeat claim at most this far ahead of our head waits `grace`.
    near: u64,
    grace: Duration,
}

impl StateTransfer {
    pub fn new(me: ReplicaId, n: usize, timeout: Duration) -> Self {
        Self {
            me,
            timeout,
            claims: vec![0; n],
            skipped_until: vec![None; n],
            in_flight: None,
            cursor: (me as usize + 1) % n.max(1),
            fetchable_at: vec![None; n],
            near: 0,
            grace: Duration::ZERO,
        }
    }

    /// A heartbeat claim at most `near` blocks ahead is fetched only once it has stayed ahead
    /// for `grace` (consensus brings such blocks first when this validator keeps up: a block
    /// fetched so is checked in full again, every signature in it).
    pub fn waiting_out(mut self, near: u64, grace: Duration) -> Self {
        self.near = near;
        self.grace = grace;
        self
    }

    /// Whether a request is out.
    #[cfg(test)]
    pub fn is_fetching(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Whether `peer`'s blocks are the answer we wait for (others' are ignored unread).
    pub fn awaits(&self, peer: ReplicaId) -> bool {
        self.in_flight
            .as_ref()
            .is_some_and(|request| request.peer == peer)
    }

    /// `peer` says it has `height` (its status heartbeat).
    pub fn on_claim(
        &mut self,
        peer: ReplicaId,
        height: u64,
        head: u64,
        now: Instant,
    ) -> Option<FetchRequest> {
        if let Some(claim) = self.claims.get_mut(peer as usize) {
            *claim = height;
        }
        if let Some(at) = self.fetchable_at.get_mut(peer as usize) {
            let wait = if height > head.saturating_add(self.near) {
                Duration::ZERO
            } else {
                self.grace
            };
            let at = at.get_or_insert(now + wait);
            *at = (*at).min(now + wait);
        }
        self.next(head, now)
    }

    /// The replica learned that `peers` are at `seq` or beyond (f+1 checkpoint claims).
    pub fn on_claims(
        &mut self,
        peers: &[ReplicaId],
        seq: u64,
        head: u64,
        now: Instant,
    ) -> Option<FetchRequest> {
        for peer in peers {
            if let Some(claim) = self.claims.get_mut(*peer as usize) {
                *claim = (*claim).max(seq);
            }
            if let Some(at) = self.fetchable_at.get_mut(*peer as usize) {
                *at = Some(now);
            }
        }
        self.next(head, now)
    }

    /// Called every turn: a request past its deadline is given up and the next peer asked.
    pub fn poll(&mut self, head: u64, now: Instant) -> Option<FetchRequest> {
        if let Some(request) = &self.in_flight
            && request.deadline <= now
        {
            let peer = request.peer;
            debug!(
                peer,
                "state transfer request timed out; asking another peer"
            );
            self.in_flight = None;
            self.forget_claim(peer, head);
        }
        self.next(head, now)
    }

    /// The awaited answer from `peer` arrived; `head` is our height after applying it.
    pub fn on_answer(
        &mut self,
        peer: ReplicaId,
        answer: Answer,
        head: u64,
        now: Instant,
    ) -> Option<FetchRequest> {
        if !self.awaits(peer) {
            return None;
        }
        self.in_flight = None;
        match answer {
            // A peer that delivers a full answer (the reply budget, or up to its claim) is
            // asked first for the rest; after a partial one the next candidate is.
            // (One that delivered all it claimed is no candidate until it claims more.)
            Answer::Applied { full } => {
                self.cursor = (peer as usize + usize::from(!full)) % self.claims.len().max(1);
            }
            Answer::Nothing => self.forget_claim(peer, head),
            Answer::Invalid => {
                self.forget_claim(peer, 0);
                if let Some(until) = self.skipped_until.get_mut(peer as usize) {
                    *until = Some(now + SKIP_INVALID);
                }
            }
        }
        self.next(head, now)
    }

    /// A peer that did not deliver is not asked again until it claims a height anew.
    fn forget_claim(&mut self, peer: ReplicaId, head: u64) {
        if let Some(claim) = self.claims.get_mut(peer as usize) {
            *claim = (*claim).min(head);
        }
    }

    /// The next request, if none is out and some peer claims more than `head`: the first such
    /// peer from the cursor on, skipping those that sent invalid blocks lately.
    fn next(&mut self, head: u64, now: Instant) -> Option<FetchRequest> {
        // A claim our head has reached waits its grace again when it is renewed.
        for (claim, at) in self.claims.iter().zip(&mut self.fetchable_at) {
            if *claim <= head {
                *at = None;
            }
        }
        if self.in_flight.is_some() {
            return None;
        }
        let n = self.claims.len();
        let peer = (0..n)
            .map(|offset| ((self.cursor + offset) % n) as ReplicaId)
            .find(|&peer| {
                peer != self.me
                    && self.claims[peer as usize] > head
                    && self.fetchable_at[peer as usize].is_some_and(|at| at <= now)
                    && self.skipped_until[peer as usize].is_none_or(|until| until <= now)
            })?;
        self.cursor = (peer as usize + 1) % n;
        self.in_flight = Some(InFlight {
            peer,
            deadline: now + self.timeout,
        });
        Some(FetchRequest {
            peer,
            from_height: head + 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(1);

    /// A dishonest peer's `FetchBlocks` (a few bytes each) buys at most two whole replies in a
    /// burst and one per second after (red team of eb409e1c, F3: it was a read of up to 16 MiB
    /// on the consensus thread for every request); other peers are served from budgets of their
    /// own, and a request over budget reads nothing.
    #[test]
    fn blocks_served_to_a_peer_are_bounded_per_second_and_read_nothing_past_the_budget() {
        let now = Instant::now();
        let mut served = Served::new(4, now);
        // Blocks of 1 MiB: a reply holds 16.
        let block = 1 << 20;
        let reads = std::cell::Cell::new(0);
        let ask = |served: &mut Served, peer: ReplicaId, at: Instant| -> Vec<u64> {
            served
                .blocks(peer, 0..256, at, |height| {
                    reads.set(reads.get() + 1);
                    Ok::<_, ()>(Some((height, block)))
                })
                .unwrap()
        };
        assert_eq!(ask(&mut served, 3, now).len(), 16);
        assert_eq!(ask(&mut served, 3, now).len(), 16);
        let before = reads.get();
        for _ in 0..1_000 {
            assert!(ask(&mut served, 3, now).is_empty());
        }
        assert_eq!(reads.get(), before, "nothing read past the budget");
        assert_eq!(ask(&mut served, 1, now).len(), 16, "another peer's budget");
        // Each reply read 17 blocks (the 17th did not fit) and was charged 17 MiB: 2 MiB of
        // debt, paid after an eighth of the refill time.
        assert!(ask(&mut served, 3, now + SERVED_REFILL / 16).is_empty());
        assert_eq!(ask(&mut served, 3, now + SERVED_REFILL / 8).len(), 16);
        // A block larger than a reply is served alone, once a whole reply is left.
        let mut huge = Served::new(4, now);
        let blocks = huge
            .blocks(2, 0..256, now, |height| {
                Ok::<_, ()>(Some((height, 3 * FETCH_REPLY_BYTES)))
            })
            .unwrap();
        assert_eq!(blocks, vec![0]);
        // Short of blocks: what there is, charged by its size only.
        let mut short = Served::new(4, now);
        for _ in 0..100 {
            let blocks = short
                .blocks(2, 5..256, now, |height| {
                    Ok::<_, ()>((height < 7).then_some((height, 1_000)))
                })
                .unwrap();
            assert_eq!(blocks, vec![5, 6]);
        }
    }

    #[test]
    fn a_forged_claim_costs_one_timeout_then_an_honest_peer_is_asked() {
        let now = Instant::now();
        let mut transfer = StateTransfer::new(0, 4, TIMEOUT);
        let first = transfer.on_claim(1, u64::MAX, 5, now).unwrap();
        assert_eq!(first.peer, 1);
        assert_eq!(first.from_height, 6);
        // An honest claim while the forged one is out waits for it.
        assert_eq!(transfer.on_claim(2, 9, 5, now), None);
        assert_eq!(transfer.poll(5, now + TIMEOUT / 2), None);
        let retry = transfer.poll(5, now + TIMEOUT).unwrap();
        assert_eq!(retry.peer, 2);
    }

    #[test]
    fn an_empty_answer_moves_on_at_once_and_a_new_claim_revives_the_peer() {
        let now = Instant::now();
        let mut transfer = StateTransfer::new(3, 4, TIMEOUT);
        assert_eq!(transfer.on_claim(0, 7, 2, now).unwrap().peer, 0);
        transfer.on_claims(&[1], 7, 2, now);
        let next = transfer.on_answer(0, Answer::Nothing, 2, now).unwrap();
        assert_eq!(next.peer, 1);
        assert_eq!(transfer.on_answer(1, Answer::Nothing, 2, now), None);
        assert!(!transfer.is_fetching());
        assert_eq!(transfer.on_claim(0, 7, 2, now).unwrap().peer, 0);
    }

    #[test]
    fn a_peer_that_delivers_in_full_is_asked_again_and_one_that_lies_is_skipped() {
        let now = Instant::now();
        let mut transfer = StateTransfer::new(0, 4, TIMEOUT);
        transfer.on_claims(&[1, 2, 3], 100, 0, now);
        assert!(transfer.awaits(1));
        let again = transfer
            .on_answer(1, Answer::Applied { full: true }, 50, now)
            .unwrap();
        assert_eq!(
            again,
            FetchRequest {
                peer: 1,
                from_height: 51
            }
        );
        // A partial answer moves on to the next candidate; the peer keeps its claim.
        let next = transfer
            .on_answer(1, Answer::Applied { full: false }, 60, now)
            .unwrap();
        assert_eq!(
            next,
            FetchRequest {
                peer: 2,
                from_height: 61
            }
        );
        assert_eq!(
            transfer
                .on_answer(2, Answer::Nothing, 60, now)
                .unwrap()
                .peer,
            3
        );
        let next = transfer
            .on_answer(3, Answer::Applied { full: false }, 70, now)
            .unwrap();
        assert_eq!(next.peer, 1, "its turn again, after 2 and 3");
        let next = transfer.on_answer(1, Answer::Invalid, 70, now).unwrap();
        assert_eq!(next.peer, 3);
        // Its fresh claim does not bring it back while it is skipped.
        transfer.on_claim(1, 100, 70, now);
        transfer.on_answer(3, Answer::Nothing, 70, now);
        assert!(!transfer.is_fetching());
        assert!(
            transfer
                .poll(70, now + SKIP_INVALID)
                .is_some_and(|r| r.peer == 1)
        );
    }

    /// A validator a block behind its peers (the primary commits last) fetches nothing its
    /// consensus brings within the grace; a claim that stays ahead that long, one further
    /// ahead, or f+1 checkpoints past its head are fetched at once.
    #[test]
    fn a_claim_a_step_ahead_waits_out_its_grace() {
        let grace = Duration::from_secs(2);
        let start = Instant::now();
        let mut transfer = StateTransfer::new(0, 4, TIMEOUT).waiting_out(8, grace);
        // At every block for a minute, a peer claims the block this validator commits next.
        let mut now = start;
        for head in 10..70 {
            assert_eq!(transfer.on_claim(1, head + 1, head, now), None);
            now += Duration::from_millis(500);
            assert_eq!(transfer.poll(head + 1, now), None, "fetched at {head}");
        }
        // A claim that stays ahead past the grace is fetched.
        assert_eq!(transfer.on_claim(2, 72, 70, now), None);
        assert_eq!(transfer.poll(70, now + grace / 2), None);
        let request = transfer.poll(70, now + grace).unwrap();
        assert_eq!((request.peer, request.from_height), (2, 71));
        // Further ahead than `near`: at once.
        let mut transfer = StateTransfer::new(0, 4, TIMEOUT).waiting_out(8, grace);
        assert_eq!(transfer.on_claim(3, 79, 70, now).unwrap().peer, 3);
        // f+1 stable checkpoints past the head: at once.
        let mut transfer = StateTransfer::new(0, 4, TIMEOUT).waiting_out(8, grace);
        assert_eq!(transfer.on_claims(&[1, 2], 72, 70, now).unwrap().peer, 1);
    }

    #[test]
    fn answers_from_peers_not_asked_are_ignored() {
        let now = Instant::now();
        let mut transfer = StateTransfer::new(0, 4, TIMEOUT);
        transfer.on_claim(2, 10, 0, now);
        assert_eq!(
            transfer.on_answer(3, Answer::Applied { full: true }, 10, now),
            None
        );
        assert!(transfer.awaits(2));
    }

    /// Finding 4 (red team): "time out, retry and rotate peers in state transfer". A Byzantine
    /// peer answers every `FetchBlocks` with exactly one valid block (it has the real chain),
    /// just before the deadline. When any delivery made it the first one asked again, the
    /// validator that is behind was pinned to it and caught up by one block per fetch timeout
    /// (2 s at the default settings) while two honest peers, each able to serve 256 blocks at
    /// once, were never asked; with n = 4, that peer then withholding its own votes halts the
    /// cluster. Now only a full answer keeps a peer first: after a partial one the next
    /// candidate is asked.
    #[test]
    fn finding_4_a_peer_trickling_one_block_per_timeout_is_not_asked_forever() {
        let start = Instant::now();
        let mut transfer = StateTransfer::new(0, 4, TIMEOUT);
        let mut request = transfer.on_claims(&[1, 2, 3], 10_000, 0, start);
        let (mut head, mut now, mut asked) = (0, start, Vec::new());
        for _ in 0..30 {
            let Some(FetchRequest { peer, from_height }) = request else {
                break;
            };
            assert_eq!(from_height, head + 1);
            asked.push(peer);
            now += TIMEOUT - Duration::from_millis(1);
            // Honest peers send a full reply; the Byzantine peer 1 sends one block, late.
            let full = peer != 1;
            head += if full { 256 } else { 1 };
            assert_eq!(
                transfer.poll(head, now),
                None,
                "answered before the deadline"
            );
            request = transfer.on_answer(peer, Answer::Applied { full }, head, now);
        }
        assert!(
            asked.iter().filter(|peer| **peer == 1).count() <= 1,
            "30 fetch timeouts later the validator is at {head} of 10,000: the peer that sends \
             one block each was asked again and again ({asked:?})"
        );
    }

    // Red team s22 (of f5f27d49). S22-1 and S22-2 failed on f5f27d49 and pass since every byte
    // read is charged, into debt; the others are defences that held.

    /// Serves `to` once at `at` from a chain whose block sizes `size(height)` gives (heights
    /// below `tip`), counting every byte read, sent or not.
    fn serve_counting(
        served: &mut Served,
        to: ReplicaId,
        heights: Range<u64>,
        at: Instant,
        tip: u64,
        size: impl Fn(u64) -> usize,
        read_bytes: &mut u64,
    ) -> Vec<u64> {
        served
            .blocks(to, heights, at, |height| {
                if height >= tip {
                    return Ok::<_, ()>(None);
                }
                *read_bytes += size(height) as u64;
                Ok(Some((height, size(height))))
            })
            .unwrap()
    }

    /// S22-1: the block that would pass a reply is read (and decoded, and measured by borsh)
    /// but neither sent nor charged. A dishonest peer asks from a small block that a block of a
    /// whole reply follows (a batch of 256 records of 64 KiB; `max_batch` allows 1,000): each
    /// request reads 16 MiB and is charged 1 KB, so the budget never runs out and each `FetchBlocks`
    /// of a few bytes buys a 16 MiB read on the consensus thread again (F3 of eb409e1c).
    #[test]
    fn red_team_s22_a_block_read_past_a_reply_is_charged() {
        let now = Instant::now();
        let mut served = Served::new(4, now);
        let size = |height: u64| {
            if height == 1 {
                FETCH_REPLY_BYTES
            } else {
                1_000
            }
        };
        let mut read = 0;
        for _ in 0..1_000 {
            let blocks = serve_counting(&mut served, 3, 0..256, now, 10, size, &mut read);
            assert!(
                blocks.len() <= 1,
                "block 0 at most: block 1 does not fit after it"
            );
        }
        assert!(
            read <= SERVED_BYTES_BURST + FETCH_REPLY_BYTES as u64,
            "1,000 requests at one instant read {} MiB for a budget of {} MiB",
            read >> 20,
            SERVED_BYTES_BURST >> 20
        );
    }

    /// S22-2: blocks larger than a reply (up to `max_batch` × 65 KiB, 66 MB with the default
    /// 1,000) are served whenever a whole reply is left, and `charge` forgives what they cost
    /// past the empty budget: a peer asking for one every 100 ms is read 64 MiB a second, four
    /// times the 16 MiB a second promised.
    #[test]
    fn red_team_s22_blocks_larger_than_a_reply_keep_to_the_rate() {
        let start = Instant::now();
        let mut served = Served::new(4, start);
        let huge = 4 * FETCH_REPLY_BYTES;
        let mut read = 0;
        let seconds = 10;
        for step in 0..seconds * 10 {
            let at = start + Duration::from_millis(100 * step);
            let from = step;
            serve_counting(
                &mut served,
                3,
                from..from + 1,
                at,
                u64::MAX,
                |_| huge,
                &mut read,
            );
        }
        let promised = SERVED_BYTES_BURST
            + seconds * (SERVED_BYTES_BURST / SERVED_REFILL.as_secs())
            + huge as u64;
        assert!(
            read <= promised,
            "{seconds} s read {} MiB, promised at most {} MiB",
            read >> 20,
            promised >> 20
        );
    }

    /// An honest laggard that applies blocks as fast as they come (no apply time at all) for
    /// `seconds`, from three peers that claim 100,000 blocks of 1 MiB each second (staggered);
    /// `silent` never answers. `budget`: each server's burst (`None`: `Served`'s). Returns the
    /// MiB applied and the empty answers.
    fn fast_laggard(
        seconds: u64,
        silent: Option<ReplicaId>,
        budget: Option<u64>,
        timeout: Duration,
    ) -> (u64, u32) {
        let start = Instant::now();
        let n = 4;
        let me = 0;
        let block = 1 << 20;
        let tip = 100_000;
        let mut servers: Vec<Served> = (0..n)
            .map(|_| match budget {
                None => Served::new(n, start),
                Some(burst) => Served(PeerBudgets::new(n, burst, SERVED_REFILL, start)),
            })
            .collect();
        let mut transfer = StateTransfer::new(me, n, timeout);
        let mut head = 0u64;
        let mut pending: Option<(FetchRequest, Instant)> = None;
        let rtt = Duration::from_millis(20);
        let mut empties = 0;
        for ms in (0..seconds * 1_000).step_by(5) {
            let now = start + Duration::from_millis(ms);
            for peer in 1..n as ReplicaId {
                if ms % 1_000 == 250 * u64::from(peer)
                    && let Some(request) = transfer.on_claim(peer, tip, head, now)
                {
                    pending = Some((request, now + rtt));
                }
            }
            if let Some((request, due)) = pending
                && due <= now
                && Some(request.peer) != silent
            {
                pending = None;
                let mut read = 0;
                let blocks = serve_counting(
                    &mut servers[request.peer as usize],
                    me,
                    request.from_height..request.from_height + 256,
                    now - rtt / 2,
                    tip,
                    |_| block,
                    &mut read,
                );
                let answer = if blocks.is_empty() {
                    empties += 1;
                    Answer::Nothing
                } else {
                    head = *blocks.last().unwrap();
                    Answer::Applied {
                        full: blocks.len() as u64 * (block as u64 + 1) > FETCH_REPLY_BYTES as u64,
                    }
                };
                if let Some(request) = transfer.on_answer(request.peer, answer, head, now) {
                    pending = Some((request, now + rtt));
                }
            }
            if let Some(request) = transfer.poll(head, now) {
                pending = Some((request, now + rtt));
            }
        }
        (head, empties)
    }

    /// Held: with every serving peer's budget running out in turn, a laggard that applies
    /// blocks instantly is not starved: an empty answer forgets the peer's claim, the next
    /// heartbeat (every second) renews it, and it gets about what three budgets allow.
    #[test]
    fn red_team_s22_a_fast_laggard_is_served_what_the_budgets_allow() {
        let seconds = 10;
        let (mib, empties) = fast_laggard(seconds, None, None, Duration::from_secs(4));
        let (unbounded, _) = fast_laggard(seconds, None, Some(1 << 50), Duration::from_secs(4));
        eprintln!(
            "fast laggard: {mib} MiB in {seconds} s ({empties} empty answers); \
             {unbounded} MiB unbounded"
        );
        assert!(mib / seconds >= 16, "starved by the serving budgets");
    }

    /// S22-3 (measure): one silent peer that claims the tip. Unbounded servers answer every
    /// request in full, so the laggard stays with one honest peer and never asks the silent one
    /// after its first timeout; with budgets every honest peer's empty answer moves the cursor
    /// on, and the silent peer is asked again, a fetch timeout (4 s by default) each time.
    #[test]
    fn red_team_s22_a_silent_peer_with_budgets() {
        let seconds = 30;
        let timeout = Duration::from_secs(4);
        let (mib, empties) = fast_laggard(seconds, Some(1), None, timeout);
        let (unbounded, _) = fast_laggard(seconds, Some(1), Some(1 << 50), timeout);
        let (honest, _) = fast_laggard(seconds, None, None, timeout);
        eprintln!(
            "silent peer 1: {mib} MiB in {seconds} s ({empties} empty answers); {unbounded} MiB \
             unbounded; {honest} MiB with no silent peer"
        );
        assert!(
            mib / seconds >= 8,
            "starved by the serving budgets and a silent peer"
        );
    }
}
