//! The simulated network: per-link state (open, cut, clogged), loss, duplication and delay drawn
//! from the run's generator, delivery in (time, send order). It carries the protocol's signed
//! messages and the state-transfer frames the node exchanges with its peers.
use std::cmp::Reverse;
use std::collections::BinaryHeap;

use pbft::{Committed, Message, ReplicaId, SeqNo, Signed};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// What travels between two replicas' nodes.
#[derive(Clone, Debug)]
pub enum Packet {
    /// A protocol message, signed by its sender.
    Pbft(Signed<Message>),
    /// State transfer (the node's `FetchBlocks`): "send me your committed blocks after `after`".
    FetchBlocks { after: SeqNo },
    /// State transfer: consecutive committed blocks with their certificates.
    Blocks(Vec<Committed>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    Open,
    /// Packets are dropped.
    Cut,
    /// Packets are held until the link is restored.
    Clogged,
}

#[derive(Debug)]
pub struct Envelope {
    pub at: u64,
    order: u64,
    pub from: ReplicaId,
    pub to: ReplicaId,
    pub packet: Packet,
}

impl PartialEq for Envelope {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl Eq for Envelope {}
impl PartialOrd for Envelope {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Envelope {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.order).cmp(&(other.at, other.order))
    }
}

pub struct Network {
    heap: BinaryHeap<Reverse<Envelope>>,
    order: u64,
    links: Vec<Vec<Link>>,
    held: Vec<(ReplicaId, ReplicaId, Packet)>,
    /// Probability that a packet is lost.
    pub loss: f64,
    /// Probability that a packet is delivered twice.
    pub duplicate: f64,
    /// Delivery delay in ticks, uniform in this inclusive range.
    pub delay: (u64, u64),
    /// Packets dropped (cut link or loss).
    pub dropped: u64,
}

impl Network {
    pub fn new(n: u32) -> Self {
        Network {
            heap: BinaryHeap::new(),
            order: 0,
            links: vec![vec![Link::Open; n as usize]; n as usize],
            held: Vec::new(),
            loss: 0.0,
            duplicate: 0.0,
            delay: (1, 3),
            dropped: 0,
        }
    }

    /// Sends `packet` over the link `from -> to`, subject to the link's state and the faults.
    pub fn send(
        &mut self,
        rng: &mut ChaCha8Rng,
        now: u64,
        from: ReplicaId,
        to: ReplicaId,
        packet: Packet,
    ) {
        match self.links[from as usize][to as usize] {
            Link::Cut => {
                self.dropped += 1;
                return;
            }
            Link::Clogged => {
                self.held.push((from, to, packet));
                return;
            }
            Link::Open => {}
        }
        if self.loss > 0.0 && rng.gen_bool(self.loss) {
            self.dropped += 1;
            return;
        }
        let copies = if self.duplicate > 0.0 && rng.gen_bool(self.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let at = now + rng.gen_range(self.delay.0..=self.delay.1);
            self.order += 1;
            self.heap.push(Reverse(Envelope {
                at,
                order: self.order,
                from,
                to,
                packet: packet.clone(),
            }));
        }
    }

    /// Changes link states; packets held on links no longer clogged are sent.
    pub fn set_links(
        &mut self,
        rng: &mut ChaCha8Rng,
        now: u64,
        changes: &[(ReplicaId, ReplicaId, Link)],
    ) {
        for (from, to, link) in changes {
            self.links[*from as usize][*to as usize] = *link;
        }
        for (from, to, packet) in std::mem::take(&mut self.held) {
            if self.links[from as usize][to as usize] == Link::Clogged {
                self.held.push((from, to, packet));
            } else {
                self.send(rng, now, from, to, packet);
            }
        }
    }

    /// Healing: no loss, no duplication, short delays, every link open (held packets sent).
    pub fn heal(&mut self, rng: &mut ChaCha8Rng, now: u64) {
        self.loss = 0.0;
        self.duplicate = 0.0;
        self.delay = (1, 3);
        let n = self.links.len() as ReplicaId;
        let all: Vec<_> = (0..n)
            .flat_map(|a| (0..n).map(move |b| (a, b, Link::Open)))
            .collect();
        self.set_links(rng, now, &all);
    }

    /// Whether a packet in flight (not held on a clogged link) matches `matches`.
    pub fn in_flight(&self, matches: impl Fn(&Envelope) -> bool) -> bool {
        self.heap.iter().any(|Reverse(e)| matches(e))
    }

    /// Drops the packets in flight that match `lost` (what a crashed sender had not sent yet);
    /// returns how many.
    pub fn lose_in_flight(&mut self, lost: impl Fn(&Envelope) -> bool) -> u64 {
        let before = self.heap.len();
        self.heap.retain(|Reverse(e)| !lost(e));
        let dropped = (before - self.heap.len()) as u64;
        self.dropped += dropped;
        dropped
    }

    /// The next packet due at or before `now`.
    pub fn pop_due(&mut self, now: u64) -> Option<Envelope> {
        if self.heap.peek().is_some_and(|Reverse(e)| e.at <= now) {
            self.heap.pop().map(|Reverse(e)| e)
        } else {
            None
        }
    }
}

/// The same state for every link in `links`.
pub fn with(links: &[(ReplicaId, ReplicaId)], state: Link) -> Vec<(ReplicaId, ReplicaId, Link)> {
    links.iter().map(|(a, b)| (*a, *b, state)).collect()
}
