//! TCP between validator processes: length-delimited frames of borsh-encoded envelopes. Each
//! node dials every peer for what it sends and accepts connections for what it receives;
//! dialling retries with exponential backoff, so peers may start in any order.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::mpsc::SyncSender;
use std::time::Duration;

use borsh::BorshDeserialize;
use futures::{SinkExt, StreamExt};
use pbft::ReplicaId;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use tracing::{debug, info, warn};

use super::{Transport, deliver};
use crate::runtime::Event;
use crate::wire::{Envelope, Frame};

/// The largest frame accepted: a full batch of large records fits with room to spare.
const MAX_FRAME_BYTES: usize = 256 * 1024 * 1024;
/// Frames queued for one peer before new ones are dropped.
const PEER_QUEUE_FRAMES: usize = 8192;
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME_BYTES)
        .new_codec()
}

pub struct TcpTransport {
    queues: BTreeMap<ReplicaId, mpsc::Sender<Frame>>,
}

impl TcpTransport {
    /// Listens on `listener` for peers and starts one dialler per peer. Must be called inside a
    /// tokio runtime.
    pub fn start(
        listener: TcpListener,
        peers: BTreeMap<ReplicaId, SocketAddr>,
        inbox: SyncSender<Event>,
    ) -> Self {
        tokio::spawn(accept_loop(listener, inbox));
        let mut queues = BTreeMap::new();
        for (id, addr) in peers {
            let (sender, receiver) = mpsc::channel(PEER_QUEUE_FRAMES);
            tokio::spawn(dial_loop(id, addr, receiver));
            queues.insert(id, sender);
        }
        Self { queues }
    }
}

impl Transport for TcpTransport {
    fn send(&self, to: ReplicaId, frame: Frame) {
        if let Some(queue) = self.queues.get(&to) {
            // A full queue means the peer is far behind or gone: drop, as a lossy link would.
            let _ = queue.try_send(frame);
        }
    }
}

async fn accept_loop(listener: TcpListener, inbox: SyncSender<Event>) {
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => {
                debug!(%addr, "peer connected");
                let _ = stream.set_nodelay(true);
                tokio::spawn(read_loop(stream, addr, inbox.clone()));
            }
            Err(error) => {
                warn!(%error, "accepting a peer connection failed");
                tokio::time::sleep(BACKOFF_MIN).await;
            }
        }
    }
}

async fn read_loop(stream: TcpStream, addr: SocketAddr, inbox: SyncSender<Event>) {
    let mut frames = Framed::new(stream, codec());
    while let Some(frame) = frames.next().await {
        let bytes = match frame {
            Ok(bytes) => bytes,
            Err(error) => {
                debug!(%addr, %error, "peer connection closed");
                return;
            }
        };
        match Envelope::try_from_slice(&bytes) {
            Ok(envelope) => {
                // A full inbox drops the frame: the replica is saturated and PBFT recovers.
                deliver(&inbox, Frame::new(envelope));
            }
            Err(error) => {
                warn!(%addr, %error, "dropping a connection that sent an undecodable frame");
                return;
            }
        }
    }
}

async fn dial_loop(peer: ReplicaId, addr: SocketAddr, mut queue: mpsc::Receiver<Frame>) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let stream = match TcpStream::connect(addr).await {
            Ok(stream) => stream,
            Err(error) => {
                debug!(peer, %addr, %error, ?backoff, "peer unreachable, retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        info!(peer, %addr, "connected to peer");
        backoff = BACKOFF_MIN;
        let _ = stream.set_nodelay(true);
        let mut frames = Framed::new(stream, codec());
        while let Some(frame) = queue.recv().await {
            let bytes = match borsh::to_vec(frame.as_ref()) {
                Ok(bytes) => bytes,
                Err(error) => {
                    warn!(%error, "could not encode a frame");
                    continue;
                }
            };
            if let Err(error) = frames.send(bytes::Bytes::from(bytes)).await {
                warn!(peer, %addr, %error, "lost the connection to a peer; reconnecting");
                break;
            }
        }
        if queue.is_closed() {
            return;
        }
    }
}
