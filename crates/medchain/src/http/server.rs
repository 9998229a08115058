//! The HTTP server around the router: slow and numerous clients cannot hold its connections
//! (issue 12), and what hyper refuses by itself is answered as JSON like the rest of the API.
//!
//! `axum::serve` sets no timeouts, and hyper's `header_read_timeout` is one timer that runs
//! from the end of a response to the end of the next request's headers, so an idle keep-alive
//! connection and a partial head get the same bound. Each connection here is one hyper HTTP/1.1
//! connection over a [`Guarded`] socket that, as Envoy does, tells them apart:
//!
//! - headers: from a connection's start, or a request's first byte, to the end of its head,
//!   at most `header_timeout`; then the connection closes (with a 408 if part of a head came);
//! - body: from the end of the head to the end of the body, at most `body_timeout`
//!   ([`read_body_in_time`], which answers 408, or 413 past [`MAX_BODY_BYTES`]);
//! - idle: from the end of a response (or the last byte a stalled reader took) to the next
//!   request's first byte, at most `idle_timeout`;
//! - at most `max_connections` at once. At the cap, the connection that has waited on its
//!   client longest (idle, never sent a request, or, its socket full, took less than 16 KiB
//!   of its answer in 3 s) is closed to admit a newcomer, as its idle timeout would have closed it later: a
//!   client that keeps connections alive with cheap requests cannot hold every slot, and an
//!   answer its client is taking is never cut. With none waiting (all mid-request, or
//!   answering), the newcomer waits for one to end, and the clients after it wait in the
//!   kernel's backlog. Out of file descriptors (EMFILE, ENFILE) below the cap counts as the
//!   cap; and the cap is held below the descriptors the process may open
//!   ([`fit_to_descriptors`]);
//! - at most `max_connections_per_client` at once from one client address (an IPv6 client by
//!   its /64; by default an eighth of the cap): beyond, that client's own longest-waiting
//!   connection makes room, or if all of them are mid-request the new one is refused (429,
//!   JSON). A `--trusted-proxy` carries every client's connections, so it is held only to the
//!   global cap (per-client limits are then the proxy's job).
//!
//! A stop finishes the requests in flight, closes idle connections, and waits for every
//! connection to end; then the login throttle's last counts are written.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use node::ConnectionLimits;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use super::client::{ServedAt, network_of};
use super::extract::{MAX_BODY_BYTES, body_too_large};
use super::{ApiError, AppState};

/// Largest request head (request line and headers), in bytes; beyond it, 431.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Serves the router on `listener` until `shutdown` resolves, then finishes the requests in
/// flight. `main` binds the listener (127.0.0.1:5000 by default).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let limits = state
        .settings
        .limits
        .checked()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let limits = fit_to_descriptors(limits, descriptors_left());
    let per_client = limits.per_client();
    let app = super::router(state.clone());
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let served = Arc::new(Served::default());
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let (stop, stopped) = watch::channel(false);
    let mut http = http1::Builder::new();
    http.header_read_timeout(None) // ours, apart from the idle timeout: see `Guarded`
        .max_header_size(MAX_HEADER_BYTES)
        // One contiguous write per flush, so that hyper's own refusals are recognised whole.
        .writev(false);
    tokio::pin!(shutdown);
    let mut out_of_descriptors_logged: Option<Instant> = None;
    'accept: loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) if is_out_of_descriptors(&e) => {
                // Below the cap, yet out of file descriptors: as at the cap, the connection
                // idle longest makes room, and the newcomer waits in the backlog meanwhile.
                if !served.closing_lately()
                    && !served.close_idlest(None)
                    && out_of_descriptors_logged.is_none_or(|at| at.elapsed() > LOG_EVERY)
                {
                    out_of_descriptors_logged = Some(Instant::now());
                    tracing::warn!(target: "medchain::http", error = %e, "out of file descriptors, none idle to close: newcomers wait");
                }
                tokio::select! {
                    () = tokio::time::sleep(ROOM_RETRY) => {}
                    () = &mut shutdown => break,
                }
                continue;
            }
            Err(e) => {
                // Out of file descriptors, say: wait rather than spin.
                tracing::error!(target: "medchain::http", error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let client = network_of(peer.ip());
        let proxy = state
            .settings
            .trusted_proxies
            .contains(&peer.ip().to_canonical());
        if !proxy && served.serving(client) >= per_client && !served.close_idlest(Some(client)) {
            refuse_over_share(stream, peer, per_client, &refusing);
            continue;
        }
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            // At the cap: the connection idle longest makes room. None idle: the newcomer
            // waits for one to end (and the clients after it in the kernel's backlog).
            Err(_) => loop {
                if !served.closing_lately() {
                    served.close_idlest(None);
                }
                tokio::select! {
                    slot = slots.clone().acquire_owned() => {
                        break slot.map_err(io::Error::other)?;
                    }
                    () = tokio::time::sleep(ROOM_RETRY) => {}
                    () = &mut shutdown => break 'accept,
                }
            },
        };
        let admitted = served.admit(client, slot);
        tokio::spawn(connection(
            stream,
            peer,
            http.clone(),
            app.clone(),
            limits,
            stopped.clone(),
            admitted,
        ));
    }
    drop(listener);
    let _ = stop.send(true);
    // Each connection holds a slot until it ends.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ended = slots.acquire_many(all).await;
    if let Err(e) = state.write_pending().await {
        tracing::error!(error = ?e, "cannot write the login throttle's counts");
    }
    Ok(())
}

/// Whether `accept` failed for want of a file descriptor (the process's, or the system's).
fn is_out_of_descriptors(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if code == nix::errno::Errno::EMFILE as i32
            || code == nix::errno::Errno::ENFILE as i32
    )
}

/// File descriptors kept for the process's own files beyond those open when serving starts:
/// its stores' SQLite readers and journals, backups, the validators' links as peers connect.
const RESERVED_DESCRIPTORS: usize = 64;

/// The file descriptors this process may still open: its soft `RLIMIT_NOFILE` less those
/// open now (`None` where that cannot be read).
fn descriptors_left() -> Option<usize> {
    use nix::sys::resource::{Resource, getrlimit};
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    let open = std::fs::read_dir("/proc/self/fd")
        .or_else(|_| std::fs::read_dir("/dev/fd"))
        .ok()?
        .count();
    Some(
        usize::try_from(soft)
            .unwrap_or(usize::MAX)
            .saturating_sub(open),
    )
}

/// `limits` with `max_connections` (and a per-client share set above it) held below `left`
/// file descriptors, less [`RESERVED_DESCRIPTORS`]: past them `accept` would fail, and a
/// connection idle longest makes room only at the cap. Logs when it lowers them.
fn fit_to_descriptors(limits: ConnectionLimits, left: Option<usize>) -> ConnectionLimits {
    let Some(left) = left else {
        return limits;
    };
    let room = left.saturating_sub(RESERVED_DESCRIPTORS).max(1);
    if limits.max_connections <= room {
        return limits;
    }
    tracing::warn!(
        target: "medchain::http",
        configured = limits.max_connections,
        max_connections = room,
        descriptors_left = left,
        "max_connections lowered to fit the open files this process may have (RLIMIT_NOFILE); \
         raise its hard limit (systemd: LimitNOFILE=) to serve more"
    );
    ConnectionLimits {
        max_connections: room,
        max_connections_per_client: limits.max_connections_per_client.map(|p| p.min(room)),
        ..limits
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Serves one connection until it ends, or until a stop and its request in flight ends, or
/// until it is asked to make room for another (then at once if it is idle).
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    http: http1::Builder,
    app: Router,
    limits: ConnectionLimits,
    mut stopped: watch::Receiver<bool>,
    admitted: Admitted,
) {
    let exchange = admitted.exchange.clone();
    let _ = stream.set_nodelay(true);
    let served_at = stream.local_addr().ok();
    let io = TokioIo::new(Guarded::new(stream, exchange.clone(), limits));
    let service = hyper::service::service_fn({
        let exchange = exchange.clone();
        move |mut req: hyper::Request<_>| {
            exchange.request_started();
            req.extensions_mut().insert(ConnectInfo(peer));
            if let Some(served_at) = served_at {
                req.extensions_mut().insert(ServedAt(served_at));
            }
            let app = app.clone();
            let exchange = exchange.clone();
            async move {
                let Ok(response) = app.oneshot(req).await;
                exchange.active(Instant::now());
                Ok::<_, Infallible>(response.map(|body| Tracked { body, exchange }))
            }
        }
    });
    let conn = http.serve_connection(io, service);
    tokio::pin!(conn);
    let stop = async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let ended = tokio::select! {
        ended = conn.as_mut() => ended,
        () = stop => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
        () = admitted.close.notified() => {
            tracing::debug!(target: "medchain::http", %peer, "connection closed to make room");
            conn.as_mut().graceful_shutdown();
            match exchange.activity() {
                // Closed now: a client that never sent a request would otherwise hold it
                // until the header timeout.
                Activity::Idle => return,
                // The rest of an answer, for a client that takes it.
                Activity::Answering => match tokio::time::timeout(ANSWER_GRACE, conn).await {
                    Ok(ended) => ended,
                    Err(_) => return,
                },
                Activity::Serving => conn.await,
            }
        }
    };
    if let Err(e) = ended {
        tracing::debug!(target: "medchain::http", %peer, error = %e, "connection ended");
    }
}

/// How long a connection asked to make room may take to write the rest of an answer (a
/// stalled one: [`Exchange::idle_since`]).
const ANSWER_GRACE: Duration = Duration::from_secs(1);
/// An answer whose client takes less than [`ANSWER_PROGRESS_BYTES`] of it in this long is
/// stalled: its connection may make room at the cap, as an idle one does. At least 5 KiB/s
/// keeps it busy (a slow mobile link takes 20 KiB/s and more).
const ANSWER_STALLED_AFTER: Duration = Duration::from_secs(3);
const ANSWER_PROGRESS_BYTES: usize = 16 * 1024;
/// How often a newcomer waiting at the cap looks again for an idle connection to close.
const ROOM_RETRY: Duration = Duration::from_millis(100);
/// How often being out of file descriptors with none idle is logged at most.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// Refusals of clients over their share being written at once; beyond, such a connection is
/// closed without an answer.
const MAX_REFUSING: usize = 64;
/// How long a refused connection is read from (and what it sent dropped) after its answer,
/// so that closing it does not reset the connection before the client reads the answer.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// The connections being served, by client network: whom a client's share counts, and which
/// connection may be closed to make room.
#[derive(Default)]
struct Served(Mutex<ServedState>);

#[derive(Default)]
struct ServedState {
    next_id: u64,
    open: HashMap<u64, Open>,
    /// Connections per client that are not closing.
    serving: HashMap<IpAddr, usize>,
}

struct Open {
    client: IpAddr,
    exchange: Arc<Exchange>,
    close: Arc<Notify>,
    /// When it was asked to make room: it ends once what it is doing is done.
    closing: Option<Instant>,
}

/// A connection's place among those served, and its slot of the cap: given back when it
/// ends.
struct Admitted {
    served: Arc<Served>,
    id: u64,
    exchange: Arc<Exchange>,
    close: Arc<Notify>,
    _slot: OwnedSemaphorePermit,
}

impl Served {
    fn state(&self) -> MutexGuard<'_, ServedState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn admit(self: &Arc<Self>, client: IpAddr, slot: OwnedSemaphorePermit) -> Admitted {
        let exchange = Arc::new(Exchange::new(Instant::now()));
        let mut s = self.state();
        let id = s.next_id;
        s.next_id += 1;
        let close = Arc::new(Notify::new());
        s.open.insert(
            id,
            Open {
                client,
                exchange: exchange.clone(),
                close: close.clone(),
                closing: None,
            },
        );
        *s.serving.entry(client).or_default() += 1;
        Admitted {
            served: self.clone(),
            id,
            exchange,
            close,
            _slot: slot,
        }
    }

    /// Connections of `client` served and not closing.
    fn serving(&self, client: IpAddr) -> usize {
        self.state().serving.get(&client).copied().unwrap_or(0)
    }

    /// Whether a connection was asked to make room within [`ANSWER_GRACE`]: room is coming
    /// (one that takes longer, finishing a request, does not stop another being asked).
    fn closing_lately(&self) -> bool {
        let now = Instant::now();
        self.state()
            .open
            .values()
            .any(|open| open.closing.is_some_and(|since| now < since + ANSWER_GRACE))
    }

    /// Asks the connection idle longest (of `client`, if given) to close; false if none is
    /// idle.
    fn close_idlest(&self, client: Option<IpAddr>) -> bool {
        let now = Instant::now();
        let mut s = self.state();
        let idlest = s
            .open
            .iter()
            .filter(|(_, open)| open.closing.is_none() && client.is_none_or(|c| c == open.client))
            .filter_map(|(id, open)| Some((open.exchange.idle_since(now)?, *id)))
            .min();
        let Some((_, id)) = idlest else {
            return false;
        };
        let ServedState { open, serving, .. } = &mut *s;
        let Some(open) = open.get_mut(&id) else {
            return false;
        };
        open.closing = Some(Instant::now());
        open.close.notify_one();
        if let Some(count) = serving.get_mut(&open.client) {
            *count = count.saturating_sub(1);
        }
        true
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut s = self.served.state();
        let Some(open) = s.open.remove(&self.id) else {
            return;
        };
        if open.closing.is_none()
            && let Some(count) = s.serving.get_mut(&open.client)
        {
            *count = count.saturating_sub(1);
        }
        if s.serving.get(&open.client) == Some(&0) {
            s.serving.remove(&open.client);
        }
    }
}

/// Answers 429 to a client over its share of connections, all of them busy, and closes:
/// nothing of its request is served.
fn refuse_over_share(
    stream: TcpStream,
    peer: SocketAddr,
    per_client: usize,
    refusing: &Arc<Semaphore>,
) {
    tracing::debug!(target: "medchain::http", %peer, per_client, "connection refused: over its client's share");
    let Ok(permit) = refusing.clone().try_acquire_owned() else {
        return; // dropped: closed without an answer
    };
    let answer = refusal_bytes(
        StatusCode::TOO_MANY_REQUESTS,
        format!("Too many connections from your address: at most {per_client} at once"),
    );
    tokio::spawn(async move {
        let _permit = permit;
        let mut stream = stream;
        let _ = tokio::time::timeout(REFUSAL_LINGER, async {
            stream.write_all(&answer).await?;
            stream.shutdown().await?;
            let mut sink = [0u8; 4096];
            while stream.read(&mut sink).await? > 0 {}
            Ok::<_, io::Error>(())
        })
        .await;
    });
}

/// What one connection is doing, as its socket and its service see it.
struct Exchange(Mutex<ExchangeState>);

struct ExchangeState {
    /// Requests handed to the router, and responses whose body hyper has dropped (written
    /// into its buffer, or abandoned).
    requests: u64,
    responses: u64,
    /// Every response is out (flushed since the last one ended): bytes hyper writes now
    /// answer no request of ours, so they are hyper's own refusal of one it could not parse.
    between_messages: bool,
    /// When the head being waited for began: the connection's start, or the first byte of a
    /// request after the last response. `None` while idle.
    head_started: Option<Instant>,
    /// Whether any byte of that head came.
    head_bytes: bool,
    /// The last byte read or written.
    last_active: Instant,
    /// When the client last took [`ANSWER_PROGRESS_BYTES`] of an answer (or the answer was
    /// ready), and what it took since.
    progress_at: Instant,
    progress_bytes: usize,
    /// The socket took no more of the answer being written at some write: it is larger than
    /// the socket's buffer, and goes out at the pace its client takes it.
    write_blocked: bool,
}

/// What a connection is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Activity {
    /// Waiting for a request: none yet, or every answer out.
    Idle,
    /// Every request answered; the last answer may still be being written.
    Answering,
    /// A request in flight, or arriving.
    Serving,
}

/// Why a connection is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expired {
    Head { partial: bool },
    Idle,
}

impl Exchange {
    fn new(now: Instant) -> Self {
        Self(Mutex::new(ExchangeState {
            requests: 0,
            responses: 0,
            between_messages: true,
            head_started: Some(now),
            head_bytes: false,
            last_active: now,
            progress_at: now,
            progress_bytes: 0,
            write_blocked: false,
        }))
    }

    fn state(&self) -> MutexGuard<'_, ExchangeState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn request_started(&self) {
        let mut s = self.state();
        s.requests += 1;
        s.between_messages = false;
        s.head_started = None;
        s.head_bytes = false;
    }

    fn response_ended(&self) {
        let mut s = self.state();
        let now = Instant::now();
        s.responses += 1;
        s.last_active = now;
        s.progress_at = now;
        s.progress_bytes = 0;
    }

    fn read_some(&self, now: Instant) {
        let mut s = self.state();
        s.last_active = now;
        if s.requests == s.responses {
            s.head_started.get_or_insert(now);
            s.head_bytes = true;
        }
    }

    /// A response ready (a handler may have waited long on the chain: the client's silence
    /// meanwhile is not idleness).
    fn active(&self, now: Instant) {
        self.state().last_active = now;
    }

    /// `bytes` of an answer taken by the socket (so, as its buffer is full, by the client).
    fn wrote(&self, bytes: usize, now: Instant) {
        let mut s = self.state();
        s.last_active = now;
        s.progress_bytes = s.progress_bytes.saturating_add(bytes);
        if s.progress_bytes >= ANSWER_PROGRESS_BYTES {
            s.progress_at = now;
            s.progress_bytes = 0;
        }
    }

    /// The socket takes no more for now.
    fn write_blocked(&self) {
        self.state().write_blocked = true;
    }

    /// Every byte written is out. Returns whether that ends the last response: the
    /// connection is now idle.
    fn flushed(&self) -> bool {
        let mut s = self.state();
        let ended = s.requests == s.responses && !s.between_messages;
        if ended {
            s.between_messages = true;
            s.write_blocked = false;
        }
        ended
    }

    fn between_messages(&self) -> bool {
        self.state().between_messages
    }

    /// Since when the connection has waited on its client at `now`: every request answered
    /// and written out (or taken whole by the socket, about to be), no byte of a next one (a
    /// new connection: none yet); or its answer, larger than the socket takes at once,
    /// stalled, its client having taken less than [`ANSWER_PROGRESS_BYTES`] of it in
    /// [`ANSWER_STALLED_AFTER`]. `None` while a request is in flight or arriving, or while its
    /// client takes its answer.
    fn idle_since(&self, now: Instant) -> Option<Instant> {
        let s = self.state();
        if s.requests != s.responses || s.head_bytes {
            return None;
        }
        if s.between_messages || !s.write_blocked {
            return Some(s.last_active);
        }
        (now >= s.progress_at + ANSWER_STALLED_AFTER).then_some(s.progress_at)
    }

    fn activity(&self) -> Activity {
        let s = self.state();
        if s.requests > s.responses || s.head_bytes {
            Activity::Serving
        } else if s.between_messages {
            Activity::Idle
        } else {
            Activity::Answering
        }
    }

    /// When a connection waiting to read expires: none while a request is being served (its
    /// body has the body timeout, its handler no limit).
    fn read_deadline(&self, limits: &ConnectionLimits) -> Option<(Instant, Expired)> {
        let s = self.state();
        if s.requests > s.responses {
            return None;
        }
        Some(match s.head_started {
            Some(start) => (
                start + limits.header_timeout,
                Expired::Head {
                    partial: s.head_bytes,
                },
            ),
            None => (s.last_active + limits.idle_timeout, Expired::Idle),
        })
    }

    /// When a connection whose client takes nothing of its response expires.
    fn write_deadline(&self, limits: &ConnectionLimits) -> Instant {
        self.state().last_active + limits.idle_timeout
    }
}

/// A response body that tells its connection when hyper is done with it.
struct Tracked {
    body: Body,
    exchange: Arc<Exchange>,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.exchange.response_ended();
    }
}

/// A connection's socket with its header and idle deadlines, which rewrites hyper's own
/// refusals (400, 414, 431: written without a body, before any request reaches the router) as
/// the API's JSON.
struct Guarded {
    stream: TcpStream,
    exchange: Arc<Exchange>,
    limits: ConnectionLimits,
    timer: Pin<Box<Sleep>>,
    /// hyper's refusal as JSON, and how much of it is written.
    refusal: Vec<u8>,
    refusal_written: usize,
    /// After a refusal, hyper's own bytes are dropped.
    refused: bool,
}

impl Guarded {
    fn new(stream: TcpStream, exchange: Arc<Exchange>, limits: ConnectionLimits) -> Self {
        Self {
            stream,
            exchange,
            limits,
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            refusal: Vec::new(),
            refusal_written: 0,
            refused: false,
        }
    }

    /// Whether `deadline` has passed (else the task wakes when it does).
    fn expired(&mut self, deadline: Instant, cx: &mut Context<'_>) -> bool {
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
        self.timer.as_mut().poll(cx).is_ready()
    }

    fn poll_refusal(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.refusal_written < self.refusal.len() {
            let n = ready!(
                Pin::new(&mut self.stream).poll_write(cx, &self.refusal[self.refusal_written..])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.refusal_written += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.exchange.read_some(Instant::now());
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let Some((deadline, why)) = this.exchange.read_deadline(&this.limits) else {
                    return Poll::Pending;
                };
                if !this.expired(deadline, cx) {
                    return Poll::Pending;
                }
                if why == (Expired::Head { partial: true }) && this.exchange.between_messages() {
                    // Best effort (the client is not reading much either), and only with no
                    // response of hyper's left unwritten.
                    let answer = refusal_bytes(
                        StatusCode::REQUEST_TIMEOUT,
                        format!(
                            "The request headers did not arrive within {} s",
                            this.limits.header_timeout.as_secs_f64()
                        ),
                    );
                    let _ = this.stream.try_write(&answer);
                }
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    match why {
                        Expired::Head { .. } => "header timeout",
                        Expired::Idle => "idle timeout",
                    },
                )))
            }
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.refused {
            ready!(this.poll_refusal(cx))?;
            return Poll::Ready(Ok(buf.len()));
        }
        if this.exchange.between_messages() && buf.starts_with(b"HTTP/1.") {
            this.refusal = hyper_refusal(buf);
            this.refused = true;
            if let Poll::Ready(Err(e)) = this.poll_refusal(cx) {
                return Poll::Ready(Err(e));
            }
            // The rest goes out on flush.
            return Poll::Ready(Ok(buf.len()));
        }
        match Pin::new(&mut this.stream).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                this.exchange.wrote(n, Instant::now());
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                this.exchange.write_blocked();
                let deadline = this.exchange.write_deadline(&this.limits);
                if this.expired(deadline, cx) {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client reads nothing of its response",
                    )));
                }
                Poll::Pending
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_refusal(cx))?;
        ready!(Pin::new(&mut this.stream).poll_flush(cx))?;
        // hyper flushes its socket only once its buffer is written out. Its last read was
        // while the request was served, without a deadline: hyper does not read again on its
        // own, so wake it to read, and arm the idle timer.
        if this.exchange.flushed() {
            cx.waker().wake_by_ref();
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_refusal(cx))?;
        Pin::new(&mut this.stream).poll_shutdown(cx)
    }
}

/// hyper's refusal `head` (`HTTP/1.1 431 ...`, no body) as the API answers it.
fn hyper_refusal(head: &[u8]) -> Vec<u8> {
    let status = head
        .get(9..12)
        .and_then(|code| std::str::from_utf8(code).ok())
        .and_then(|code| code.parse::<u16>().ok())
        .and_then(|code| StatusCode::from_u16(code).ok())
        .unwrap_or(StatusCode::BAD_REQUEST);
    let message = match status {
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
            format!("Request headers too large: at most {MAX_HEADER_BYTES} bytes")
        }
        StatusCode::URI_TOO_LONG => "Request target too long".to_string(),
        _ => "Malformed HTTP request".to_string(),
    };
    refusal_bytes(status, message)
}

/// A whole HTTP/1.1 answer that closes the connection: `status` with the API's JSON body.
fn refusal_bytes(status: StatusCode, message: String) -> Vec<u8> {
    let (status, body) = ApiError::Refused { status, message }.into_json();
    let body = body.to_string();
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\ncache-control: no-store\r\nx-content-type-options: nosniff\r\n\r\n\
         {body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len(),
    )
    .into_bytes()
}

/// Reads a request's whole body within the body timeout before the router sees it: 408 if
/// it is too slow, 413 past [`MAX_BODY_BYTES`] (refused on its `Content-Length` before a byte
/// is read), 400 if it breaks off. Each closes the connection, whose rest is unread.
pub(crate) async fn read_body_in_time(
    State(limits): State<ConnectionLimits>,
    req: Request,
    next: Next,
) -> Response {
    let (parts, body) = req.into_parts();
    let refused = match tokio::time::timeout(limits.body_timeout, collect(body)).await {
        Ok(Ok(bytes)) => {
            return next
                .run(Request::from_parts(parts, Body::from(bytes)))
                .await;
        }
        Ok(Err(refused)) => refused,
        Err(_elapsed) => ApiError::Refused {
            status: StatusCode::REQUEST_TIMEOUT,
            message: format!(
                "The request body did not arrive within {} s",
                limits.body_timeout.as_secs_f64()
            ),
        },
    };
    let mut response = refused.into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

async fn collect(mut body: Body) -> Result<Bytes, ApiError> {
    let limit = MAX_BODY_BYTES as u64;
    if body.size_hint().lower() > limit {
        return Err(body_too_large());
    }
    let mut bytes = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame =
            frame.map_err(|_| ApiError::BadRequest("The request body could not be read".into()))?;
        if let Ok(data) = frame.into_data() {
            if (bytes.len() + data.len()) as u64 > limit {
                return Err(body_too_large());
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyper_refusals_become_the_api_json() {
        let answer = hyper_refusal(b"HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n");
        let text = String::from_utf8(answer).unwrap();
        assert!(text.starts_with("HTTP/1.1 431 "), "{text}");
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["success"], false);
        assert!(
            body["message"].as_str().unwrap().contains("16384"),
            "{body}"
        );
        let text = String::from_utf8(hyper_refusal(b"HTTP/1.1 400 Bad Request\r\n")).unwrap();
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
    }

    #[test]
    fn the_connection_waiting_longest_of_a_client_makes_room_never_a_busy_one() {
        let served = Arc::new(Served::default());
        let slots = Arc::new(Semaphore::new(4));
        let slot = || slots.clone().try_acquire_owned().unwrap();
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        // Admitted in this order: the older waits longer (a tie goes to the older, too).
        let busy = served.admit(a, slot());
        busy.exchange.read_some(Instant::now());
        let older = served.admit(a, slot());
        let newer = served.admit(a, slot());
        let _other = served.admit(b, slot());
        assert_eq!(served.serving(a), 3);
        assert!(served.close_idlest(Some(a)));
        assert!(served.state().open[&older.id].closing.is_some());
        assert_eq!(
            served.serving(a),
            2,
            "a closing connection is no longer the client's"
        );
        assert!(served.closing_lately());
        assert!(served.close_idlest(Some(a)));
        assert!(served.state().open[&newer.id].closing.is_some());
        assert!(!served.close_idlest(Some(a)), "only a busy one is left");
        drop(older);
        drop(newer);
        assert_eq!(slots.available_permits(), 2, "their slots are back");
        assert_eq!(served.serving(a), 1);
        assert!(!served.closing_lately());
        // Another client's is left for the cap.
        assert!(served.close_idlest(None));
        assert_eq!(served.serving(b), 0);
    }

    /// Issue 12's second red team: at the cap, an answer being read was cut after a second.
    #[test]
    fn an_answer_being_taken_is_busy_and_a_stalled_one_waits_on_its_client() {
        let t0 = Instant::now();
        let exchange = Exchange::new(t0);
        exchange.read_some(t0);
        exchange.request_started();
        exchange.response_ended();
        let ready = exchange.state().progress_at;
        let at = |ms: u64| ready + Duration::from_millis(ms);
        // Taken whole by the socket (about to be flushed): it waits on its client.
        exchange.wrote(1_000, at(1));
        assert_eq!(exchange.idle_since(at(2)), Some(at(1)));
        // The socket is full: its client takes 16 KiB every 2 s, busy however long it lasts.
        exchange.write_blocked();
        assert_eq!(exchange.idle_since(at(2_000)), None, "being taken");
        for step in 1..=5 {
            exchange.wrote(ANSWER_PROGRESS_BYTES, at(step * 2_000));
            assert_eq!(exchange.idle_since(at(step * 2_000 + 2_999)), None);
        }
        // Then hardly anything: stalled, since its last progress.
        exchange.wrote(100, at(11_000));
        assert_eq!(exchange.idle_since(at(12_999)), None);
        assert_eq!(exchange.idle_since(at(13_000)), Some(at(10_000)));
        // Written out: idle since its last byte.
        exchange.wrote(ANSWER_PROGRESS_BYTES, at(14_000));
        assert!(exchange.flushed());
        assert_eq!(exchange.idle_since(at(14_001)), Some(at(14_000)));
    }

    #[test]
    fn the_cap_is_held_below_the_file_descriptors_left() {
        let limits = ConnectionLimits {
            max_connections: 1024,
            max_connections_per_client: Some(300),
            ..ConnectionLimits::default()
        };
        assert_eq!(fit_to_descriptors(limits, None), limits);
        assert_eq!(fit_to_descriptors(limits, Some(100_000)), limits);
        let fitted = fit_to_descriptors(limits, Some(237));
        assert_eq!(fitted.max_connections, 237 - RESERVED_DESCRIPTORS);
        assert_eq!(
            fitted.max_connections_per_client,
            Some(237 - RESERVED_DESCRIPTORS)
        );
        assert_eq!(fitted.header_timeout, limits.header_timeout);
        assert_eq!(fit_to_descriptors(limits, Some(3)).max_connections, 1);
        assert!(descriptors_left().is_some_and(|left| left > 0));
    }

    #[test]
    fn the_header_timer_runs_from_the_first_byte_and_idle_from_the_last_response() {
        let limits = ConnectionLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            ..ConnectionLimits::default()
        };
        let t0 = Instant::now();
        let exchange = Exchange::new(t0);
        // A new connection must send its first head within the header timeout.
        assert_eq!(
            exchange.read_deadline(&limits),
            Some((t0 + limits.header_timeout, Expired::Head { partial: false }))
        );
        exchange.read_some(t0 + Duration::from_secs(1));
        exchange.request_started();
        assert_eq!(exchange.read_deadline(&limits), None, "a request in flight");
        exchange.response_ended();
        let ended = exchange.state().last_active;
        assert_eq!(
            exchange.read_deadline(&limits),
            Some((ended + limits.idle_timeout, Expired::Idle))
        );
        let first_byte = ended + Duration::from_secs(30);
        exchange.read_some(first_byte);
        exchange.read_some(first_byte + Duration::from_secs(5));
        assert_eq!(
            exchange.read_deadline(&limits),
            Some((
                first_byte + limits.header_timeout,
                Expired::Head { partial: true }
            ))
        );
        // Only once flushed after its last response does a connection take writes as
        // hyper's own.
        assert!(!exchange.between_messages());
        assert!(exchange.flushed());
        assert!(exchange.between_messages());
        assert!(
            !exchange.flushed(),
            "only the first flush after a response ends it"
        );
    }
}
