//! TCP between validator processes, over the authenticated and encrypted channel of
//! [`super::channel`]. Each node dials every peer for what it sends and accepts connections for
//! what it receives; dialling retries with exponential backoff, so peers may start in any order,
//! and a peer that connects to us is dialled back at once (it is back: what we send it, a
//! new-view it needs to rejoin, must not wait out a backoff grown while it was down).
//!
//! Bounded everywhere a peer could make us hold memory: frames by kind ([`FrameLimits`]), one
//! inbound connection per validator (a newer one replaces it), a few handshakes at a time, each
//! within [`HANDSHAKE_TIMEOUT`], and per peer a byte budget for frames waiting in the inbox (the
//! connection pauses when it is spent) and for frames waiting to be sent (new ones are dropped).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use pbft::ReplicaId;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::AbortHandle;
use tracing::{debug, info, warn};

use super::channel::{Channel, HANDSHAKE_TIMEOUT};
use super::{InboundCredit, Transport, ValidatorIdentity, Wiring, deliver};
use crate::error::NodeError;
use crate::keys::KeyInbox;
use crate::runtime::Event;
use crate::wire::{self, Frame, FrameKind, FrameLimits, Wire};

/// Frames queued for one peer before new ones are dropped.
const PEER_QUEUE_FRAMES: usize = 8192;
/// Bytes queued for one peer (to send, or received and waiting for the validator's thread)
/// before new frames wait or are dropped. A frame larger than this still passes alone.
pub const PEER_QUEUE_BYTES: usize = 64 * 1024 * 1024;
/// Each frame waiting in the inbox is charged this much on top of its bytes, so that a peer's
/// budget also bounds how many of its frames wait (at most 16,384).
const FRAME_CHARGE_BYTES: usize = 4096;
/// The most a connection's reader keeps of a frame's memory for the next, one per peer, held
/// while it waits too (a full batch's pre-prepare is under a megabyte; a larger frame's is
/// given back).
const KEPT_FRAME_BYTES: usize = 1 << 20;
/// Connections accepted but not yet authenticated, at most; more are closed at once.
const MAX_HANDSHAKES: usize = 16;
/// A dialler's wait between attempts: doubling from `min` to `max`.
#[derive(Clone, Copy, Debug)]
struct Backoff {
    min: Duration,
    max: Duration,
}

const BACKOFF: Backoff = Backoff {
    min: Duration::from_millis(50),
    max: Duration::from_secs(5),
};

struct Encoded {
    kind: FrameKind,
    bytes: Bytes,
}

struct PeerQueue {
    frames: mpsc::Sender<Encoded>,
    queued_bytes: Arc<AtomicUsize>,
}

pub struct TcpTransport {
    queues: BTreeMap<ReplicaId, PeerQueue>,
    inbound: Arc<Inbound>,
    accepting: AbortHandle,
}

/// A stopped validator stops listening and reading at once (its diallers end with their
/// queues), so that its address is free for a restart.
impl Drop for TcpTransport {
    fn drop(&mut self) {
        self.accepting.abort();
        if let Ok(mut readers) = self.inbound.readers.lock() {
            for reader in std::mem::take(&mut *readers).into_values() {
                reader.abort();
            }
        }
    }
}

impl TcpTransport {
    /// Listens on `listener` for peers and starts one dialler per peer. Must be called inside a
    /// tokio runtime.
    pub fn start(
        listener: TcpListener,
        peers: BTreeMap<ReplicaId, SocketAddr>,
        wiring: Wiring,
    ) -> Self {
        let n = wiring.identity.validators.len();
        let inbound = Arc::new(Inbound {
            inbox: wiring.inbox,
            keys: wiring.keys,
            identity: wiring.identity.clone(),
            limits: wiring.limits,
            credits: (0..n)
                .map(|_| Arc::new(Semaphore::new(PEER_QUEUE_BYTES)))
                .collect(),
            handshakes: Arc::new(Semaphore::new(MAX_HANDSHAKES)),
            readers: Mutex::new(BTreeMap::new()),
            redial: (0..n).map(|_| Arc::new(Notify::new())).collect(),
        });
        let accepting = tokio::spawn(accept_loop(listener, inbound.clone())).abort_handle();
        let mut queues = BTreeMap::new();
        for (id, addr) in peers {
            let (sender, receiver) = mpsc::channel(PEER_QUEUE_FRAMES);
            let queued_bytes = Arc::new(AtomicUsize::new(0));
            let redial = inbound.redial.get(id as usize).cloned().unwrap_or_default();
            tokio::spawn(dial_loop(
                id,
                addr,
                wiring.identity.clone(),
                receiver,
                queued_bytes.clone(),
                redial,
                BACKOFF,
            ));
            queues.insert(
                id,
                PeerQueue {
                    frames: sender,
                    queued_bytes,
                },
            );
        }
        Self {
            queues,
            inbound,
            accepting,
        }
    }

    fn enqueue(&self, to: ReplicaId, kind: FrameKind, bytes: &Bytes) {
        let Some(queue) = self.queues.get(&to) else {
            return;
        };
        let queued = queue.queued_bytes.load(Ordering::Relaxed);
        if queued > 0 && queued + bytes.len() > PEER_QUEUE_BYTES {
            // The peer reads slower than we send (far behind, or not reading at all): drop, as a
            // lossy link would, rather than hold its frames in memory.
            return;
        }
        queue.queued_bytes.fetch_add(bytes.len(), Ordering::Relaxed);
        let frame = Encoded {
            kind,
            bytes: bytes.clone(),
        };
        if queue.frames.try_send(frame).is_err() {
            queue.queued_bytes.fetch_sub(bytes.len(), Ordering::Relaxed);
        }
    }
}

fn encode(frame: &Wire) -> Option<(FrameKind, Bytes)> {
    match borsh::to_vec(frame) {
        Ok(bytes) => Some((FrameKind::of(frame), Bytes::from(bytes))),
        Err(error) => {
            warn!(%error, "could not encode a frame");
            None
        }
    }
}

impl Transport for TcpTransport {
    fn send(&self, to: ReplicaId, frame: Frame) {
        if let Some((kind, bytes)) = encode(&frame) {
            self.enqueue(to, kind, &bytes);
        }
    }

    /// Encodes once for every peer.
    fn broadcast(&self, to: &[ReplicaId], frame: Frame) {
        if let Some((kind, bytes)) = encode(&frame) {
            for peer in to {
                self.enqueue(*peer, kind, &bytes);
            }
        }
    }
}

/// The receiving side, shared by the accept loop and every connection's reader.
struct Inbound {
    inbox: std::sync::mpsc::SyncSender<Event>,
    keys: KeyInbox,
    identity: ValidatorIdentity,
    limits: FrameLimits,
    /// Per validator: bytes of its frames that may wait in the inbox.
    credits: Vec<Arc<Semaphore>>,
    handshakes: Arc<Semaphore>,
    /// The reader of each validator's current connection.
    readers: Mutex<BTreeMap<ReplicaId, AbortHandle>>,
    /// Per validator: told when it connects to us, so that our dialler to it stops backing off.
    redial: Vec<Arc<Notify>>,
}

async fn accept_loop(listener: TcpListener, inbound: Arc<Inbound>) {
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(%error, "accepting a peer connection failed");
                tokio::time::sleep(BACKOFF.min).await;
                continue;
            }
        };
        let Ok(permit) = inbound.handshakes.clone().try_acquire_owned() else {
            warn!(%addr, "refused a connection: too many handshakes under way");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let inbound = inbound.clone();
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(
                HANDSHAKE_TIMEOUT,
                Channel::respond(stream, &inbound.identity),
            )
            .await;
            drop(permit);
            let channel = match handshake {
                Ok(Ok(channel)) => channel,
                Ok(Err(error)) => {
                    warn!(%addr, %error, "refused a connection at the handshake");
                    return;
                }
                Err(_) => {
                    warn!(%addr, "refused a connection that did not finish its handshake in time");
                    return;
                }
            };
            let peer = channel.peer();
            debug!(peer, %addr, "validator connected");
            if let Some(redial) = inbound.redial.get(peer as usize) {
                redial.notify_one();
            }
            let reader = tokio::spawn(read_loop(channel, addr, inbound.clone()));
            let replaced = inbound
                .readers
                .lock()
                .ok()
                .and_then(|mut readers| readers.insert(peer, reader.abort_handle()));
            if let Some(old) = replaced {
                old.abort();
            }
        });
    }
}

async fn read_loop(mut channel: Channel<TcpStream>, addr: SocketAddr, inbound: Arc<Inbound>) {
    let peer = channel.peer();
    let Some(credits) = inbound.credits.get(peer as usize).cloned() else {
        return;
    };
    let mut bytes = Vec::new();
    loop {
        let kind = match channel.recv_into(&inbound.limits, &mut bytes).await {
            Ok(Some(kind)) => kind,
            Ok(None) => {
                debug!(peer, %addr, "peer connection closed");
                return;
            }
            Err(error) => {
                warn!(peer, %addr, %error, "dropping a peer connection");
                return;
            }
        };
        let received = std::time::Instant::now();
        let wire = match wire::decode(kind, &bytes) {
            Ok(wire) => wire,
            Err(error) => {
                warn!(peer, %addr, %error, "dropping a connection that sent a bad frame");
                return;
            }
        };
        // A decoded frame holds about its encoded size.
        let charge = (FRAME_CHARGE_BYTES + bytes.len()).min(PEER_QUEUE_BYTES);
        keep_for_the_next_frame(&mut bytes);
        // Waits while this peer's earlier frames fill its share of the inbox: TCP then slows
        // the peer down, and other peers are not affected.
        let Ok(permit) = credits.clone().acquire_many_owned(charge as u32).await else {
            return;
        };
        // A full inbox drops the frame: the replica is saturated and PBFT recovers.
        deliver(
            &inbound.inbox,
            &inbound.keys,
            peer,
            Frame::new(wire),
            InboundCredit::new(permit),
            received,
        );
    }
}

/// A reader's frame buffer, kept for the next frame unless a rare large one (a new-view) grew
/// it past [`KEPT_FRAME_BYTES`].
fn keep_for_the_next_frame(buffer: &mut Vec<u8>) {
    if buffer.capacity() > KEPT_FRAME_BYTES {
        *buffer = Vec::new();
    }
}

async fn dial_loop(
    peer: ReplicaId,
    addr: SocketAddr,
    identity: ValidatorIdentity,
    mut queue: mpsc::Receiver<Encoded>,
    queued_bytes: Arc<AtomicUsize>,
    redial: Arc<Notify>,
    limits: Backoff,
) {
    let mut backoff = limits.min;
    loop {
        let channel = match connect(peer, addr, &identity).await {
            Ok(channel) => channel,
            Err(_) if queue.is_closed() => return,
            Err(error) => {
                debug!(peer, %addr, %error, ?backoff, "peer unreachable, retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => backoff = (backoff * 2).min(limits.max),
                    // It connected to us: it is up again.
                    _ = redial.notified() => backoff = limits.min,
                }
                continue;
            }
        };
        info!(peer, %addr, "connected to peer");
        backoff = limits.min;
        if let Err(error) = send_queued(channel, &mut queue, &queued_bytes).await {
            warn!(peer, %addr, %error, "lost the connection to a peer; reconnecting");
        }
        if queue.is_closed() {
            return;
        }
    }
}

async fn connect(
    peer: ReplicaId,
    addr: SocketAddr,
    identity: &ValidatorIdentity,
) -> Result<Channel<TcpStream>, NodeError> {
    let stream = TcpStream::connect(addr).await?;
    let _ = stream.set_nodelay(true);
    tokio::time::timeout(HANDSHAKE_TIMEOUT, Channel::initiate(stream, identity, peer))
        .await
        .map_err(|_| NodeError::Timeout("the peer's handshake"))?
}

/// Sends queued frames until the queue closes (Ok) or the connection fails.
async fn send_queued(
    mut channel: Channel<TcpStream>,
    queue: &mut mpsc::Receiver<Encoded>,
    queued_bytes: &AtomicUsize,
) -> Result<(), NodeError> {
    while let Some(mut frame) = queue.recv().await {
        // Whatever else is queued goes out in the same write.
        loop {
            queued_bytes.fetch_sub(frame.bytes.len(), Ordering::Relaxed);
            channel.feed(frame.kind, &frame.bytes).await?;
            match queue.try_recv() {
                Ok(next) => frame = next,
                Err(_) => break,
            }
        }
        channel.flush().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_keeps_a_frame_buffer_up_to_a_megabyte() {
        let mut usual = Vec::with_capacity(KEPT_FRAME_BYTES);
        keep_for_the_next_frame(&mut usual);
        assert_eq!(usual.capacity(), KEPT_FRAME_BYTES);
        let mut grown = Vec::with_capacity(KEPT_FRAME_BYTES + 1);
        keep_for_the_next_frame(&mut grown);
        assert_eq!(grown.capacity(), 0, "given back");
    }

    /// A dialler backing off from a peer that was down retries at once when the peer connects
    /// to us, not when its (here: hour-long) backoff ends.
    #[tokio::test]
    async fn a_peer_that_connects_is_dialled_again_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let identity = ValidatorIdentity::for_tests(2).remove(0);
        let (frames, queue) = mpsc::channel(1);
        let redial = Arc::new(Notify::new());
        let hour = Duration::from_secs(3600);
        tokio::spawn(dial_loop(
            1,
            addr,
            identity,
            queue,
            Arc::new(AtomicUsize::new(0)),
            redial.clone(),
            Backoff {
                min: hour,
                max: hour,
            },
        ));
        // The first attempt fails at the handshake (closed at once): the dialler waits an hour.
        let (first, _) = listener.accept().await.expect("first attempt");
        drop(first);
        redial.notify_one();
        let again = tokio::time::timeout(Duration::from_secs(60), listener.accept()).await;
        assert!(again.is_ok(), "the dialler waited out its backoff");
        drop(frames);
    }
}
