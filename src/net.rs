//! What every listener shares: accepting under a connection cap, backing
//! off when the process is out of file descriptors, the socket options of
//! an accepted connection, the write-stall deadline, and the HTTP server
//! loop with its time bounds.
//!
//! A connection holds a permit of its listener's cap for as long as it
//! lives; one over the cap is answered in the protocol's words (HTTP and
//! RTSP 503) or just closed (RTMP has no way to say it before the
//! handshake), so the connections already served keep their file
//! descriptors, memory and CPU.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

pub mod handoff;

/// A client that accepts no bytes for this long is disconnected. Without it
/// a stalled HTTP-FLV viewer would hold its socket (and its lease on the
/// stream, keeping the cameras running) forever.
pub const WRITE_STALL: Duration = Duration::from_secs(15);

/// Writes every slice to a viewer's socket, or fails once the viewer has
/// accepted no data for [`WRITE_STALL`] (an error of kind `TimedOut`).
///
/// A viewer keeping up has room in its socket for the whole batch: one
/// non-blocking write does it, with no stall timer to arm (a clock read and
/// a timer entry per write, 500 times a frame at 500 viewers). Only a
/// write the socket did not take whole waits, under the deadline.
pub async fn write_all_within(
    sock: &TcpStream,
    mut slices: &mut [io::IoSlice<'_>],
) -> io::Result<()> {
    match sock.try_write_vectored(slices) {
        Ok(n) => io::IoSlice::advance_slices(&mut slices, n),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    if slices.is_empty() {
        return Ok(());
    }
    let all = async {
        while !slices.is_empty() {
            sock.writable().await?;
            let n = match sock.try_write_vectored(slices) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            };
            io::IoSlice::advance_slices(&mut slices, n);
        }
        Ok(())
    };
    match tokio::time::timeout(WRITE_STALL, all).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("client accepted no data for {} s", WRITE_STALL.as_secs()),
        )),
    }
}

/// At shutdown, what an HTTP request in flight gets to finish before its
/// connection is dropped (see [`serve_http`]). Short: the producers stop
/// only after the viewers are gone, and a stop must stay within its
/// kill_timeout and a second.
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(100);

/// Per-connection socket send buffer (the kernel doubles it): about 4 s of
/// a 2 Mbit/s stream, and 10 MB/s over a 100 ms path.
pub const SEND_BUFFER: usize = 512 * 1024;

/// An HTTP client must send a whole request head within this of
/// connecting, and of the end of the previous response (hyper 1.x starts
/// its header-read timer whenever it waits for a head: at connect and when
/// a keep-alive connection goes idle, `proto/h1/conn.rs`). So it is the
/// keep-alive idle timeout too. A response being written (an HTTP-FLV
/// viewer's, for hours) is not a wait for a head and is never cut by it.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// `api.max_connections` by default: well above the 500 HTTP-FLV viewers
/// the fan-out benchmark opens at once.
pub const DEFAULT_API_MAX_CONNECTIONS: usize = 2048;
/// `rtsp.max_connections` by default: as the API's (500 RTSP viewers in
/// the benchmark).
pub const DEFAULT_RTSP_MAX_CONNECTIONS: usize = 2048;
/// `rtmp.max_connections` by default: RTMP is mostly publishers (a camera
/// or OBS each), and some players.
pub const DEFAULT_RTMP_MAX_CONNECTIONS: usize = 512;

/// How long a refused connection may take to be told: the write of the
/// 503, then the wait for the client's close.
const REFUSAL_BOUND: Duration = Duration::from_secs(2);
/// Refused connections being answered at once; past this a refused
/// connection is closed without a word (a flood must not turn the refusals
/// themselves into the unbounded resource).
const REFUSALS_AT_ONCE: usize = 64;

/// The first wait after a failed accept, doubled on each failure in a row
/// up to [`BACKOFF_MAX`].
const BACKOFF_FIRST: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The peer's address, for handlers (`ConnectInfo<PeerAddr>`). A
/// unix-socket peer counts as local (go2rtc: the `@` peer) and shows as
/// `127.0.0.1:0`.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// A listening socket the [`CappedListener`] accepts from.
pub trait Listen: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Io, SocketAddr)>> + Send;
    /// Socket options for a connection we keep.
    fn tune(_io: &Self::Io) {}
    /// The connection as a TCP socket, if it is one: an HTTP response can
    /// then take its socket over ([`handoff`]).
    fn into_tcp(io: Self::Io) -> Result<TcpStream, Self::Io> {
        Err(io)
    }
}

impl Listen for TcpListener {
    type Io = TcpStream;

    fn into_tcp(io: TcpStream) -> Result<TcpStream, TcpStream> {
        Ok(io)
    }

    async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        TcpListener::accept(self).await
    }

    fn tune(s: &TcpStream) {
        let _ = s.set_nodelay(true);
        // A fixed send buffer turns off the kernel's autotuning, which grows
        // a stalled viewer's buffer to 4 MB: that is kernel memory per
        // viewer, and seconds of media during which a dead client still
        // looks alive. Our ring is the buffer; the kernel needs only enough
        // for the path.
        let _ = socket2::SockRef::from(s).set_send_buffer_size(SEND_BUFFER);
    }
}

impl Listen for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;

    async fn accept(&self) -> io::Result<(tokio::net::UnixStream, SocketAddr)> {
        let (s, _) = tokio::net::UnixListener::accept(self).await?;
        Ok((s, SocketAddr::from(([127, 0, 0, 1], 0))))
    }
}

/// What a connection over the cap is told before it is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Http,
    Rtsp,
    /// Closed at once (RTMP: nothing can be said before the handshake).
    Close,
}

impl Refusal {
    fn answer(self) -> Option<&'static [u8]> {
        match self {
            // RFC 9110 §15.6.4, with the API's JSON error shape;
            // `Connection: close` (RFC 9112 §9.6) as we close right after.
            Refusal::Http => Some(
                concat!(
                    "HTTP/1.1 503 Service Unavailable\r\n",
                    "Content-Type: application/json\r\n",
                    "Content-Length: 50\r\n",
                    "Retry-After: 1\r\n",
                    "Connection: close\r\n\r\n",
                    r#"{"error":"too many connections, try again later"}"#,
                    "\n"
                )
                .as_bytes(),
            ),
            // RFC 2326 §11.3.6 (§7.1.1: the status line as HTTP's). No
            // CSeq: the request is not read.
            Refusal::Rtsp => Some(
                concat!(
                    "RTSP/1.0 503 Service Unavailable\r\n",
                    "Server: streamvisor/",
                    env!("CARGO_PKG_VERSION"),
                    "\r\nContent-Length: 0\r\n\r\n"
                )
                .as_bytes(),
            ),
            Refusal::Close => None,
        }
    }
}

/// Failed accepts in a row: how long to wait before the next, and whether
/// to say so. EMFILE/ENFILE leave the connection in the backlog and the
/// listener readable, so retrying at once spins; one warning per episode,
/// and one line when it ends, instead of a line per try.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: u64,
    next: Duration,
}

impl Backoff {
    /// An accept failed: the wait before the next try, and whether this
    /// is the first failure of an episode (the one to log).
    pub fn failed(&mut self) -> (Duration, bool) {
        self.failures += 1;
        let wait = if self.failures == 1 {
            BACKOFF_FIRST
        } else {
            (self.next * 2).min(BACKOFF_MAX)
        };
        self.next = wait;
        (wait, self.failures == 1)
    }

    /// An accept succeeded: the number of failures of the episode that
    /// just ended, if one did.
    pub fn succeeded(&mut self) -> Option<u64> {
        let n = std::mem::take(&mut self.failures);
        self.next = Duration::ZERO;
        (n > 0).then_some(n)
    }
}

/// Errors that concern one connection (it was reset while in the backlog),
/// not the listener: the next accept goes on at once.
fn per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

/// A listener with its connection cap.
pub struct CappedListener<L: Listen> {
    listener: L,
    proto: &'static str,
    max: usize,
    slots: Arc<Semaphore>,
    refusal: Refusal,
    refusing: Arc<Semaphore>,
    backoff: Backoff,
    /// The cap is reached and this was logged: the next admission ends it.
    full: Option<Instant>,
    refused: u64,
}

impl<L: Listen> CappedListener<L> {
    /// `proto` names the listener in the logs (`api`, `rtsp`, `rtmp`).
    pub fn new(
        listener: L,
        proto: &'static str,
        max: usize,
        refusal: Refusal,
    ) -> CappedListener<L> {
        let max = max.max(1);
        CappedListener {
            listener,
            proto,
            max,
            slots: Arc::new(Semaphore::new(max)),
            refusal,
            refusing: Arc::new(Semaphore::new(REFUSALS_AT_ONCE)),
            backoff: Backoff::default(),
            full: None,
            refused: 0,
        }
    }

    /// The next connection under the cap, with its permit (which the
    /// connection's task holds until it ends). Connections over the cap
    /// are refused here. Waits, never spins, while accept fails; cancel-safe.
    pub async fn accept(&mut self) -> (L::Io, SocketAddr, OwnedSemaphorePermit) {
        loop {
            match self.listener.accept().await {
                Ok((io, peer)) => {
                    if let Some(n) = self.backoff.succeeded() {
                        tracing::info!(
                            proto = self.proto,
                            failures = n,
                            "accepting connections again"
                        );
                    }
                    match self.slots.clone().try_acquire_owned() {
                        Ok(permit) => {
                            if let Some(since) = self.full.take() {
                                tracing::info!(
                                    proto = self.proto,
                                    refused = std::mem::take(&mut self.refused),
                                    secs = since.elapsed().as_secs(),
                                    "below the connection cap again"
                                );
                            }
                            L::tune(&io);
                            return (io, peer, permit);
                        }
                        Err(_) => self.refuse(io, peer),
                    }
                }
                Err(e) if per_connection(&e) => {
                    tracing::debug!(proto = self.proto, error = %e, "accept: connection gone");
                }
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM: the process or the
                    // system is out of something that closing connections
                    // frees. Connections already open are served by their
                    // own tasks meanwhile.
                    let (wait, first) = self.backoff.failed();
                    if first {
                        tracing::warn!(proto = self.proto, error = %e, "accept failed; retrying with back-off until it succeeds");
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    fn refuse(&mut self, io: L::Io, peer: SocketAddr) {
        self.refused += 1;
        if self.full.is_none() {
            self.full = Some(Instant::now());
            tracing::warn!(proto = self.proto, max = self.max, peer = %peer, "connection cap reached: refusing new connections");
        } else {
            tracing::debug!(proto = self.proto, peer = %peer, "over the connection cap: refused");
        }
        let Some(answer) = self.refusal.answer() else {
            return; // dropped: closed
        };
        let Ok(permit) = self.refusing.clone().try_acquire_owned() else {
            return;
        };
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(REFUSAL_BOUND, refuse(io, answer)).await;
        });
    }
}

/// Writes `answer`, then closes our side and reads until the client closes
/// its: closing with its request unread would make the kernel send RST,
/// which can destroy the answer before the client reads it (RFC 9112 §9.6,
/// the "lingering close").
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, answer: &[u8]) {
    if s.write_all(answer).await.is_err() || s.shutdown().await.is_err() {
        return;
    }
    let mut sink = [0u8; 1024];
    while let Ok(n) = s.read(&mut sink).await {
        if n == 0 {
            break;
        }
    }
}

/// One HTTP connection, until it ends or, once `stop` resolves, within
/// [`SHUTDOWN_GRACE`]. `handed`: the socket and its hand-over, given to
/// every request's handlers as an extension.
async fn serve_http_conn<I>(
    io: I,
    router: Router,
    peer: SocketAddr,
    handed: Option<handoff::HttpConn>,
    permit: OwnedSemaphorePermit,
    mut stop: Stop,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use hyper::server::conn::http1;
    use hyper_util::rt::{TokioIo, TokioTimer};

    let tower = hyper_util::service::TowerToHyperService::new(router);
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ConnectInfo(PeerAddr(peer)));
        if let Some(h) = &handed {
            req.extensions_mut().insert(h.clone());
        }
        hyper::service::Service::call(&tower, req)
    });
    let io = DeadlineIo::new(io, WRITE_STALL).holding(permit);
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(io), svc)
        // /api/ws: axum's WebSocketUpgrade takes the connection over.
        .with_upgrades();
    let mut conn = pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(peer = %peer, error = %e, "http connection ended");
                }
                break;
            }
            _ = &mut stop, if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            // An HTTP-FLV or MP4 body never finishes by itself: past
            // the grace, the viewer is ended, not waited for.
            () = tokio::time::sleep(SHUTDOWN_GRACE), if stopping => {
                tracing::debug!(peer = %peer, "connection ended: shutting down");
                break;
            }
        }
    }
}

/// A connection whose writes fail when they make no progress for `stall`;
/// hyper then drops the connection and with it the viewer.
pub struct DeadlineIo<S = TcpStream> {
    inner: S,
    stall: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    /// The connection's slot under its listener's cap, held by the socket
    /// itself: a connection hyper hands over (a WebSocket after the
    /// upgrade) keeps its slot until the socket closes.
    _permit: Option<OwnedSemaphorePermit>,
}

impl<S> DeadlineIo<S> {
    pub fn new(inner: S, stall: Duration) -> DeadlineIo<S> {
        DeadlineIo {
            inner,
            stall,
            timer: None,
            _permit: None,
        }
    }

    /// Holds `permit` until this connection is dropped.
    pub fn holding(mut self, permit: OwnedSemaphorePermit) -> DeadlineIo<S> {
        self._permit = Some(permit);
        self
    }

    fn guard<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(r) => {
                self.timer = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let stall = self.stall;
                let t = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
                match t.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        self.timer = None;
                        Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "client accepted no data for too long",
                        )))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for DeadlineIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for DeadlineIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.guard(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.guard(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.guard(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// How [`accept_loop`] ends its connections at shutdown.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Each connection's `stop` resolves, and the connection ends itself
    /// (HTTP: hyper's graceful shutdown, within [`SHUTDOWN_GRACE`]).
    Signal,
    /// Each connection's task is aborted: its future is dropped where it
    /// waits, and its `stop` is never looked at. A viewer's connection task
    /// wakes for every frame, and a stop signal in its `select!` is polled
    /// each time (a cache miss on the signal's own allocation, 500 times a
    /// frame); an abort costs nothing until it is used.
    Abort,
}

/// The one accept loop under [`serve_conns`] and [`serve_http`]: each
/// connection runs `start(io, peer, permit, stop)` on a task of its own.
/// Once `shutdown` resolves, the port is closed, every connection is ended
/// as `ending` says, and this returns when all their tasks have ended.
async fn accept_loop<L, F, Fut>(
    mut listener: CappedListener<L>,
    shutdown: impl Future<Output = ()>,
    ending: Ending,
    mut start: F,
) where
    L: Listen,
    F: FnMut(L::Io, SocketAddr, OwnedSemaphorePermit, Stop) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut stops = Stops::default();
    let mut tasks: Vec<tokio::task::AbortHandle> = Vec::new();
    // Each task holds a receiver of `done`, so that we can wait for them.
    let (done_tx, done_rx) = tokio::sync::watch::channel(());
    let mut shutdown = pin!(shutdown);
    loop {
        let (io, peer, permit) = tokio::select! {
            c = listener.accept() => c,
            () = &mut shutdown => break,
        };
        let stop = match ending {
            Ending::Signal => stops.add(),
            // Never looked at: the task is aborted instead.
            Ending::Abort => Stop::unused(),
        };
        let conn = start(io, peer, permit, stop);
        let done = done_rx.clone();
        let task = tokio::spawn(async move {
            let _done = done;
            conn.await;
        });
        if ending == Ending::Abort {
            tasks.retain(|t| !t.is_finished());
            tasks.push(task.abort_handle());
        }
    }
    drop(listener);
    drop(stops);
    tasks.retain(|t| !t.is_finished());
    if !tasks.is_empty() {
        tracing::debug!(
            connections = tasks.len(),
            "shutting down: connections ended"
        );
    }
    for t in &tasks {
        t.abort();
    }
    drop(done_rx);
    done_tx.closed().await;
}

/// A listener's accept loop, for protocols whose connections are ours to
/// run (RTSP, RTMP): each connection is `serve(io, peer)` on a task of its
/// own, holding its slot of the cap. Once `shutdown` resolves, the loop
/// stops accepting (the port is closed), every connection still open is
/// ended (its future dropped: a viewer's lease on its stream goes with it),
/// and this returns when all of them are gone. Ending them is what lets the
/// producers stop next with no viewer left to restart them.
pub async fn serve_conns<L, F, Fut>(
    listener: CappedListener<L>,
    shutdown: impl Future<Output = ()>,
    serve: F,
) where
    L: Listen,
    F: Fn(L::Io, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    accept_loop(listener, shutdown, Ending::Abort, |io, peer, permit, _| {
        let conn = serve(io, peer);
        async move {
            let _permit = permit;
            conn.await;
        }
    })
    .await;
}

/// A connection's stop signal: resolves when the listener shuts down.
///
/// An HTTP connection's task polls it at every wake-up, once per frame for
/// a viewer. Its first poll registers the task with its own oneshot; after
/// that it looks only at the listener's one shared flag, which stays in
/// every core's cache until shutdown, instead of loading the oneshot's own
/// state (a cache miss per viewer per frame). [`Stops`] sets the flag
/// before it drops the senders, and the drop wakes each task.
struct Stop {
    rx: tokio::sync::oneshot::Receiver<()>,
    stopping: Arc<AtomicBool>,
    registered: bool,
}

impl Stop {
    /// For a connection that is aborted instead (see [`Ending::Abort`]).
    fn unused() -> Stop {
        Stop {
            rx: tokio::sync::oneshot::channel().1,
            stopping: Arc::new(AtomicBool::new(true)),
            registered: false,
        }
    }
}

impl Future for Stop {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // Registered, and no shutdown yet: the oneshot still holds this
        // task's waker (a task's waker wakes the task, whichever thread
        // polls it), so there is nothing to ask it.
        if self.registered && !self.stopping.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        self.registered = true;
        Pin::new(&mut self.rx).poll(cx).map(|_| ())
    }
}

/// How a listener tells each of its connections to stop: a oneshot per
/// connection, resolved (by its sender's drop) when the `Stops` is dropped,
/// and one flag they all read (see [`Stop`]). Not one shared `watch`: a
/// `watch` receiver's wait takes the channel's one waiter lock on each
/// poll, and 500 viewers on two threads contended for it on every frame.
#[derive(Default)]
struct Stops {
    senders: Vec<tokio::sync::oneshot::Sender<()>>,
    stopping: Arc<AtomicBool>,
}

impl Stops {
    /// A new connection's stop signal; forgets those of connections gone.
    fn add(&mut self) -> Stop {
        self.senders.retain(|s| !s.is_closed());
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.senders.push(tx);
        Stop {
            rx,
            stopping: self.stopping.clone(),
            registered: false,
        }
    }
}

impl Drop for Stops {
    fn drop(&mut self) {
        // Before the senders go (after this function): a task woken by
        // their drop must see the flag.
        self.stopping.store(true, Ordering::Release);
    }
}

/// Serves `router` over HTTP/1.1 on `listener`'s connections until `shutdown`
/// resolves, then lets each connection finish its response (hyper's
/// graceful shutdown, for at most [`SHUTDOWN_GRACE`]) and returns when all
/// have.
///
/// Not `axum::serve`: it cannot set hyper's header-read timeout, so a
/// client that never finishes a request head (or a keep-alive connection
/// left idle) would hold its socket forever. Every connection has
/// [`HEADER_READ_TIMEOUT`] for each head and [`WRITE_STALL`] for each write.
pub async fn serve_http<L: Listen>(
    listener: CappedListener<L>,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    accept_loop(
        listener,
        shutdown,
        Ending::Signal,
        |io, peer, permit, stop| {
            tracing::trace!(peer = %peer, "accepted");
            let router = router.clone();
            // A TCP connection's socket is shared, so that a response can
            // take it over (`handoff`: HTTP-FLV writes from the producer's
            // side); a Unix socket's is hyper's alone.
            let conn: Pin<Box<dyn Future<Output = ()> + Send>> = match L::into_tcp(io) {
                Ok(tcp) => {
                    let io = handoff::SharedTcp::new(tcp);
                    let handed = io.conn().clone();
                    Box::pin(serve_http_conn(
                        io,
                        router,
                        peer,
                        Some(handed),
                        permit,
                        stop,
                    ))
                }
                Err(io) => Box::pin(serve_http_conn(io, router, peer, None, permit, stop)),
            };
            conn
        },
    )
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dropping_the_stops_tells_every_connection_and_gone_ones_are_forgotten() {
        let mut stops = Stops::default();
        let mut a = stops.add();
        let gone = stops.add();
        drop(gone);
        let b = stops.add();
        assert_eq!(
            stops.senders.len(),
            2,
            "the gone connection's sender was kept"
        );
        // `a` waits as a connection's task does: polled (and registered)
        // before the shutdown, then only woken by it.
        let waiting = tokio::spawn(async move {
            assert!(futures_util::poll!(&mut a).is_pending());
            assert!(futures_util::poll!(&mut a).is_pending(), "no shutdown yet");
            (&mut a).await;
        });
        tokio::task::yield_now().await;
        drop(stops);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("a registered connection was not woken to stop")
            .unwrap();
        tokio::time::timeout(Duration::from_secs(1), b)
            .await
            .expect("a connection was not told to stop");
    }

    #[test]
    fn backoff_doubles_to_a_second_and_speaks_once_per_episode() {
        let mut b = Backoff::default();
        let mut waits = Vec::new();
        let mut spoken = 0;
        for _ in 0..12 {
            let (w, first) = b.failed();
            waits.push(w.as_millis());
            spoken += usize::from(first);
        }
        assert_eq!(
            waits,
            [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000, 1000, 1000]
        );
        assert_eq!(spoken, 1);
        assert_eq!(b.succeeded(), Some(12));
        assert_eq!(b.succeeded(), None);
        // A new episode starts from the bottom, and is logged again.
        assert_eq!(b.failed(), (BACKOFF_FIRST, true));
    }

    #[test]
    fn the_http_refusal_is_well_formed() {
        let a = std::str::from_utf8(Refusal::Http.answer().unwrap()).unwrap();
        let (head, body) = a.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "));
        assert!(head.contains("\r\nConnection: close"));
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(len, body.len());
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(v["error"].is_string());
        assert!(Refusal::Rtsp
            .answer()
            .unwrap()
            .starts_with(b"RTSP/1.0 503 Service Unavailable\r\n"));
        assert_eq!(Refusal::Close.answer(), None);
    }

    /// Connections over the cap are refused, and a slot is free again as
    /// soon as its connection's permit is dropped.
    #[tokio::test]
    async fn the_cap_refuses_then_admits_again() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let mut gate = CappedListener::new(l, "test", 2, Refusal::Http);
        let _a = TcpStream::connect(addr).await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        let (_, _, p1) = gate.accept().await;
        let (_, _, _p2) = gate.accept().await;
        let mut c = TcpStream::connect(addr).await.unwrap();
        let accept = tokio::spawn(async move {
            let (_, peer, p) = gate.accept().await;
            (peer, p)
        });
        // The third is answered 503 while the listener keeps waiting.
        let mut got = Vec::new();
        c.read_to_end(&mut got).await.unwrap();
        assert!(got.starts_with(b"HTTP/1.1 503 "), "{got:?}");
        assert!(!accept.is_finished());
        drop(p1);
        let mut e = TcpStream::connect(addr).await.unwrap();
        let (peer, _p) = tokio::time::timeout(Duration::from_secs(5), accept)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(peer, e.local_addr().unwrap());
        let _ = e.write_all(b"x").await;
    }
}
