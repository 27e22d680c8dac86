//! The connection task: it owns the socket, the parse buffer and the
//! session, waits on the socket, the viewer and its timers at once, and
//! answers each request (RFC 2326 §10) in order.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rtsp_types::{Method, Request};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::play::Session;
use super::target::target;
use super::transport::Transport;
use super::{auth, publish, wire, PUBLIC, REQUEST_TIMEOUT, SESSION_TIMEOUT};
use crate::auth::Gate;
use crate::hub::fanout::Ended;
use crate::hub::{Registry, StreamError};

/// The next datagram of a UDP publisher, or never.
async fn recv_udp(p: &mut Option<publish::PublishSession>) -> Option<(usize, bytes::Bytes)> {
    match p {
        Some(p) => p.udp_rx.recv().await,
        None => std::future::pending().await,
    }
}

/// A read into `buf`. The socket is shared with the session's media path
/// ([`super::sink`]), which writes from the fan-out's side.
async fn read_buf(sock: &TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    loop {
        sock.readable().await?;
        match sock.try_read_buf(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            r => return r,
        }
    }
}

/// The session's word that its media path has something for this task to
/// write (the rest of a write the socket did not take), or never.
async fn media_wake(session: &Option<Session>) {
    match session {
        Some(s) => std::future::poll_fn(|cx| s.sink.poll_wake(cx)).await,
        None => std::future::pending().await,
    }
}

/// `sleep_until`, made only when first polled. `select!` builds every
/// branch's future on each turn of the connection loop, disabled ones too:
/// a playing connection turns once per frame, and a timer made and dropped
/// unused each time is measurable with hundreds of viewers.
async fn sleep_until_lazy(at: Instant) {
    tokio::time::sleep_until(at).await
}

pub(super) struct Conn {
    /// Shared with the playing session's media path (its writes).
    pub(super) sock: Arc<TcpStream>,
    pub(super) peer: SocketAddr,
    pub(super) local: SocketAddr,
    pub(super) registry: Arc<Registry>,
    pub(super) buf: BytesMut,
    pub(super) session: Option<Session>,
    pub(super) publishing: Option<publish::PublishSession>,
    pub(super) opened: Instant,
    /// When the last request came (or the connection opened): see
    /// [`REQUEST_TIMEOUT`].
    pub(super) last_request: Instant,
    /// Who must log in (see [`crate::auth`]).
    pub(super) gate: Arc<Gate>,
    /// This connection has proved itself (or needs not).
    pub(super) authed: bool,
    /// Our Digest nonce for this connection.
    pub(super) nonce: String,
}

/// A request's answer.
pub(super) struct Reply {
    pub(super) status: u16,
    pub(super) reason: &'static str,
    pub(super) headers: Vec<(&'static str, String)>,
    pub(super) body: Vec<u8>,
}

impl Reply {
    pub(super) fn new(status: u16, reason: &'static str) -> Reply {
        Reply {
            status,
            reason,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub(super) fn ok() -> Reply {
        Reply::new(200, "OK")
    }

    pub(super) fn header(mut self, name: &'static str, v: impl Into<String>) -> Reply {
        self.headers.push((name, v.into()));
        self
    }

    /// An error with its reason in a header, for people reading captures.
    pub(super) fn error(status: u16, reason: &'static str, why: impl Into<String>) -> Reply {
        Reply::new(status, reason).header("X-Error", why)
    }
}

impl From<StreamError> for Reply {
    fn from(e: StreamError) -> Reply {
        let msg = e.to_string().replace(['\r', '\n'], " ");
        match e {
            StreamError::NoSource { .. }
            | StreamError::NotRunning { .. }
            | StreamError::NotFound { .. } => Reply::error(404, "Not Found", msg),
            StreamError::BadName { .. } => Reply::error(400, "Bad Request", msg),
            StreamError::Forbidden { .. } => Reply::error(403, "Forbidden", msg),
            StreamError::Unsupported { .. } => Reply::error(415, "Unsupported Media Type", msg),
            StreamError::UnsupportedSource { .. } => Reply::error(501, "Not Implemented", msg),
            StreamError::StartFailed { .. } => Reply::error(502, "Bad Gateway", msg),
            StreamError::Timeout { .. } => Reply::error(504, "Gateway Time-out", msg),
            StreamError::ShuttingDown { .. } => Reply::error(503, "Service Unavailable", msg),
            StreamError::Busy { .. } => Reply::error(453, "Stream Already Has a Publisher", msg),
        }
    }
}

/// Why a connection ended: the error of its loop (`Conn::run`), logged
/// once with the peer when the task ends (issue 18). An I/O failure keeps
/// its `io::Error`, so the log tells a reset peer from a stalled one
/// (`TimedOut`, [`crate::net::write_all_within`]).
#[derive(Debug, thiserror::Error)]
pub(super) enum ConnError {
    #[error("client closed the connection")]
    Closed,
    #[error("read: {0}")]
    Read(#[source] io::Error),
    #[error("write: {0}")]
    Write(#[source] io::Error),
    #[error("viewer ended: {0}")]
    ViewerEnded(#[source] Ended),
    #[error("session silent for {} s", SESSION_TIMEOUT.as_secs())]
    Silent,
    #[error("no request for {} s", REQUEST_TIMEOUT.as_secs())]
    Idle,
    #[error("interleaved data on channel {0} before SETUP")]
    DataBeforeSetup(u8),
    /// A framing error (answered 400 first): after one the stream cannot
    /// be trusted to be in step.
    #[error(transparent)]
    Framing(#[from] wire::WireError),
    #[error("stream {stream} no longer takes this publisher")]
    PublisherGone { stream: String },
}

impl ConnError {
    /// The kind of the I/O error that ended the connection, if one did.
    pub(super) fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            ConnError::Read(e) | ConnError::Write(e) => Some(e.kind()),
            _ => None,
        }
    }
}

enum Event {
    Read(io::Result<usize>),
    Media,
    Silent,
    /// No request for [`REQUEST_TIMEOUT`], and nothing else to keep it.
    Idle,
    /// A datagram from a UDP publisher's track.
    Udp(usize, bytes::Bytes),
}

impl Conn {
    pub(super) fn now_ms(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    pub(super) async fn run(&mut self) -> ConnError {
        loop {
            let playing = self.session.as_ref().is_some_and(|s| s.playing);
            let udp = self.session.as_ref().is_some_and(|s| {
                s.sink
                    .lock()
                    .enc
                    .tracks
                    .iter()
                    .any(|t| matches!(t.transport, Some(Transport::Udp { .. })))
            });
            // A UDP viewer, and any publisher, must show signs of life.
            let last_seen = match (&self.session, &self.publishing) {
                (_, Some(p)) => Some(&p.last_seen),
                (Some(s), None) if udp => Some(&s.last_seen),
                _ => None,
            };
            let watch = last_seen.is_some();
            let silent_at = match last_seen {
                Some(t) => {
                    self.opened + Duration::from_millis(t.load(Ordering::Relaxed)) + SESSION_TIMEOUT
                }
                // Not watched: the branch is off and never polled; no clock
                // read at each of a viewer's wake-ups for it.
                None => self.opened,
            };
            // Playing over TCP, or watched for signs of life above: kept.
            // Anything else must keep sending requests.
            let idle = !playing && !watch;
            let idle_at = self.last_request + REQUEST_TIMEOUT;
            let ev = {
                let Conn {
                    sock,
                    buf,
                    session,
                    publishing,
                    ..
                } = &mut *self;
                tokio::select! {
                    r = read_buf(sock, buf) => Event::Read(r),
                    _ = media_wake(session), if playing => Event::Media,
                    _ = sleep_until_lazy(silent_at), if watch => Event::Silent,
                    _ = sleep_until_lazy(idle_at), if idle => Event::Idle,
                    Some((i, d)) = recv_udp(publishing) => Event::Udp(i, d),
                }
            };
            let step = match ev {
                Event::Read(Ok(0)) => Err(ConnError::Closed),
                Event::Read(Err(e)) => Err(ConnError::Read(e)),
                Event::Read(Ok(_)) => self.on_input().await,
                Event::Media => self.on_media().await,
                Event::Silent => Err(ConnError::Silent),
                Event::Idle => Err(ConnError::Idle),
                Event::Udp(i, d) => {
                    let r = self.on_published_rtp(i, d);
                    self.flush_published();
                    r
                }
            };
            if let Err(why) = step {
                return why;
            }
        }
    }

    async fn on_input(&mut self) -> Result<(), ConnError> {
        loop {
            match wire::next(&mut self.buf) {
                Ok(None) => {
                    self.flush_published();
                    return Ok(());
                }
                Ok(Some(wire::Incoming::Response)) => {}
                Ok(Some(wire::Incoming::Data { channel, payload })) => {
                    if let Some(i) = self
                        .publishing
                        .as_ref()
                        .and_then(|p| p.tracks.iter().position(|t| t.channel == Some(channel)))
                    {
                        self.on_published_rtp(i, payload)?;
                        continue;
                    }
                    // RTCP receiver reports from a TCP client are its sign
                    // of life; data before any SETUP is a protocol error.
                    let set_up = self.session.as_ref().is_some_and(|s| {
                        s.sink
                            .lock()
                            .enc
                            .tracks
                            .iter()
                            .any(|t| t.transport.is_some())
                    }) || self
                        .publishing
                        .as_ref()
                        .is_some_and(|p| p.tracks.iter().any(|t| t.channel.is_some()));
                    if !set_up {
                        return Err(ConnError::DataBeforeSetup(channel));
                    }
                    let now = self.now_ms();
                    if let Some(s) = &self.session {
                        s.last_seen.store(now, Ordering::Relaxed);
                    }
                }
                Ok(Some(wire::Incoming::Request(req))) => {
                    // What came before the request goes now, not after
                    // its answer.
                    self.flush_published();
                    self.last_request = Instant::now();
                    let cseq = req
                        .header(&rtsp_types::headers::CSEQ)
                        .map(|v| v.as_str().trim().to_string());
                    let reply = match &cseq {
                        None => Reply::error(400, "Bad Request", "missing CSeq"),
                        Some(_) => self.handle(&req).await,
                    };
                    self.respond(cseq.as_deref(), reply).await?;
                    self.start_media().await?;
                }
                Err(e) => {
                    // Answer, then close: after a framing error the stream
                    // cannot be trusted to be in step.
                    let _ = self
                        .respond(None, Reply::error(400, "Bad Request", e.to_string()))
                        .await;
                    return Err(e.into());
                }
            }
        }
    }

    /// After PLAY's answer: the fan-out offers the session each batch from
    /// now on, and what is already waiting goes now.
    async fn start_media(&mut self) -> Result<(), ConnError> {
        let Some(s) = &mut self.session else {
            return Ok(());
        };
        if !s.playing || s.direct.is_some() {
            return Ok(());
        }
        s.direct = Some(s.sink.go_direct());
        // A batch sent before the registration was offered to nobody.
        let sink = s.sink.clone();
        Ok(sink.flush().await?)
    }

    /// Drops the session, once the write an offer may have left half done
    /// is finished (the next reply goes straight to the socket and must
    /// not cut a packet). A failed write here fails the reply's too.
    pub(super) async fn end_session(&mut self) {
        let Some(s) = self.session.take() else {
            return;
        };
        s.sink.lock().playing = false;
        let _ = s.sink.flush().await;
    }

    /// The media path needs this task: the rest of a write, or its end.
    async fn on_media(&mut self) -> Result<(), ConnError> {
        match &self.session {
            Some(s) => Ok(s.sink.clone().flush().await?),
            None => Ok(()),
        }
    }

    async fn respond(&mut self, cseq: Option<&str>, r: Reply) -> Result<(), ConnError> {
        let mut s = format!("RTSP/1.0 {} {}\r\n", r.status, r.reason);
        if let Some(c) = cseq {
            s += &format!("CSeq: {c}\r\n");
        }
        s += concat!("Server: streamvisor/", env!("CARGO_PKG_VERSION"), "\r\n");
        for (k, v) in &r.headers {
            // A value echoing client input must not end the header early.
            s += &format!("{k}: {}\r\n", v.replace(['\r', '\n'], " "));
        }
        if !r.body.is_empty() {
            s += &format!("Content-Length: {}\r\n", r.body.len());
        }
        s += "\r\n";
        let mut bytes = s.into_bytes();
        bytes.extend_from_slice(&r.body);
        match &self.session {
            // After what the media path has pending: never inside a packet.
            Some(s) => Ok(s.sink.clone().write_own(&bytes).await?),
            None => crate::net::write_all_within(&self.sock, &mut [IoSlice::new(&bytes)])
                .await
                .map_err(ConnError::Write),
        }
    }

    /// The id of this connection's session, playing or publishing.
    fn session_id(&self) -> Option<&str> {
        match (&self.session, &self.publishing) {
            (_, Some(p)) => Some(&p.id),
            (Some(s), None) => Some(&s.id),
            (None, None) => None,
        }
    }

    /// The stream this connection plays or publishes, for its log lines.
    pub(super) fn stream(&self) -> Option<&str> {
        match (&self.session, &self.publishing) {
            (_, Some(p)) => Some(&p.stream),
            (Some(s), None) => Some(&s.stream),
            (None, None) => None,
        }
    }

    pub(super) fn session_matches(&self, req: &Request<Vec<u8>>) -> Result<(), Reply> {
        let Some(id) = self.session_id() else {
            return Err(Reply::error(
                454,
                "Session Not Found",
                "no session: SETUP first",
            ));
        };
        match req.header(&rtsp_types::headers::SESSION) {
            Some(v) if v.as_str().split(';').next().map(str::trim) != Some(id) => {
                Err(Reply::error(
                    454,
                    "Session Not Found",
                    format!("unknown session `{}`", v.as_str()),
                ))
            }
            _ => Ok(()),
        }
    }

    /// Whether `req` may go ahead; proves the connection on success.
    fn authorize(&mut self, req: &Request<Vec<u8>>) -> bool {
        if self.authed || *req.method() == Method::Options {
            return true;
        }
        // A loopback ANNOUNCE with `?publish_token=` may be one of our own
        // `exec:… {output}` children, which carry a run token instead of a
        // password: `announce` proves the token against the stream (only
        // it can ask the stream, asynchronously) and answers a wrong one
        // exactly as it answers no credentials.
        if self.token_announce(req).is_some() {
            return true;
        }
        // Our own `ffmpeg:STREAM` readers (over loopback) carry their run's
        // token, never the password, which `ps` would show (issue 15).
        if self.peer.ip().is_loopback() {
            if let Some(t) = req.request_uri().and_then(target) {
                if let Some(token) = &t.read_token {
                    let tokens = &self.registry.deps().internal_tokens;
                    if tokens.allows(token, &t.stream) {
                        self.authed = true;
                        return true;
                    }
                }
            }
        }
        if !self.gate.enabled() {
            return true;
        }
        let method: &str = req.method().into();
        let uri = req.request_uri().map(|u| u.as_str()).unwrap_or("");
        // Every configured pair is tried (no early exit: timing tells
        // nothing of which one was close).
        let ok = req
            .header(&rtsp_types::headers::AUTHORIZATION)
            .is_some_and(|h| {
                self.gate.pairs().iter().fold(false, |ok, creds| {
                    ok | auth::check(creds, h.as_str(), method, uri, &self.nonce)
                })
            });
        self.authed = ok;
        ok
    }

    /// The run token of an ANNOUNCE that may come from one of our
    /// `{output}` children: only over loopback, where they run.
    pub(super) fn token_announce(&self, req: &Request<Vec<u8>>) -> Option<u64> {
        if *req.method() != Method::Announce || !self.peer.ip().is_loopback() {
            return None;
        }
        req.request_uri().and_then(target).and_then(|t| t.token)
    }

    /// The 401 with our challenges (RFC 2617 §3.2.1, Digest first).
    pub(super) fn unauthorized(&self) -> Reply {
        let [digest, basic] = auth::challenges(&self.nonce);
        Reply::error(401, "Unauthorized", "credentials required (rtsp.username)")
            .header("WWW-Authenticate", digest)
            .header("WWW-Authenticate", basic)
    }

    async fn handle(&mut self, req: &Request<Vec<u8>>) -> Reply {
        if !self.authorize(req) {
            return self.unauthorized();
        }
        let now = self.now_ms();
        if let Some(s) = &self.session {
            s.last_seen.store(now, Ordering::Relaxed);
        }
        match req.method() {
            Method::Options => Reply::ok().header("Public", PUBLIC),
            Method::Describe => self.describe(req).await,
            Method::Setup => self.setup(req).await,
            Method::Play => self.play(req),
            Method::Pause => match self.session_matches(req) {
                Err(r) => r,
                Ok(()) => {
                    if let Some(s) = &mut self.session {
                        s.playing = false;
                        s.sink.lock().playing = false;
                        s.direct = None;
                    }
                    Reply::ok().header("Session", self.session_header())
                }
            },
            Method::Teardown => match self.session_matches(req) {
                Err(r) => r,
                Ok(()) => {
                    // Dropping a session releases the viewer's lease or
                    // the publisher's hold.
                    self.end_session().await;
                    self.publishing = None;
                    Reply::ok()
                }
            },
            // Keep-alives.
            Method::GetParameter | Method::SetParameter => match self.session_id() {
                Some(id) => Reply::ok().header(
                    "Session",
                    format!("{id};timeout={}", SESSION_TIMEOUT.as_secs()),
                ),
                None => Reply::ok(),
            },
            Method::Announce => self.announce(req).await,
            Method::Record => self.record(req),
            other => Reply::error(
                501,
                "Not Implemented",
                format!("method {other:?} is not supported"),
            ),
        }
    }

    fn session_header(&self) -> String {
        self.session
            .as_ref()
            .map(|s| format!("{};timeout={}", s.id, SESSION_TIMEOUT.as_secs()))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_the_io_kind_and_their_text() {
        let e = ConnError::Write(io::ErrorKind::TimedOut.into());
        assert_eq!(e.io_kind(), Some(io::ErrorKind::TimedOut));
        assert!(e.to_string().starts_with("write: "), "{e}");
        let e = ConnError::Read(io::ErrorKind::ConnectionReset.into());
        assert_eq!(e.io_kind(), Some(io::ErrorKind::ConnectionReset));
        assert_eq!(ConnError::Closed.io_kind(), None);
        assert_eq!(ConnError::Silent.to_string(), "session silent for 60 s");
        assert_eq!(
            ConnError::DataBeforeSetup(3).to_string(),
            "interleaved data on channel 3 before SETUP"
        );
    }
}
