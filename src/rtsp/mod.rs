//! RTSP server (RFC 2326): every stream to RTSP players, over TCP
//! (interleaved, §10.12) and UDP.
//!
//! One task per connection owns everything of it: the socket, the parse
//! buffer, the session and its viewer. It waits on the socket and on the
//! viewer at once and never holds a lock. An RTSP viewer is a consumer like
//! any other: DESCRIBE (or the first SETUP) joins the stream, TEARDOWN or a
//! closed connection leaves it.

mod auth;
mod publish;
pub mod sdp;
pub mod wire;

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{BufMut, BytesMut};
use futures_util::FutureExt;
use rtsp_types::headers::{
    RtpLowerTransport, Transport as RtspTransport, TransportMode, Transports,
};
use rtsp_types::{Method, Request};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::time::Instant;

use crate::auth::Gate;
use crate::hub::fanout::{Delivery, Ended};
use crate::hub::{JoinRequest, Registry, StreamError, Viewer};
use crate::media::rtp::{self, Chunk, Sender, TrackParams};
use crate::media::{Codec, Frame, TrackInfo, TrackKind};

/// Advertised in `Session:`; a UDP session silent this long is closed.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(60);
/// A connection that sends no request for this long is closed, unless it
/// is playing over TCP or the session's own liveness rule
/// ([`SESSION_TIMEOUT`]) watches it: a connection that only connects must
/// not hold a socket forever. A player receiving interleaved media may
/// send nothing but RTCP (VLC, ffmpeg with `-rtsp_transport tcp`) and is
/// not cut.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How often each track gets an RTCP sender report.
pub const SR_INTERVAL: Duration = Duration::from_secs(5);
/// How long DESCRIBE waits, once the stream is running, for the first frame
/// that tells it the tracks.
const TRACKS_WAIT: Duration = Duration::from_secs(10);
/// How long DESCRIBE waits, after the first frame, for an audio track
/// that has not shown itself yet.
const AUDIO_WAIT: Duration = Duration::from_secs(2);
/// Deliveries taken per wake-up: a batch from the hub is written at once.
const MAX_BATCH: usize = 256;

const PUBLIC: &str =
    "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER, SET_PARAMETER";

/// The next datagram of a UDP publisher, or never.
async fn recv_udp(p: &mut Option<publish::PublishSession>) -> Option<(usize, bytes::Bytes)> {
    match p {
        Some(p) => p.udp_rx.recv().await,
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

/// Accepts RTSP connections, at most `max_connections` at once
/// (`rtsp.max_connections`; one more is answered 503 and closed). Once
/// credentials are set (`gate`, see [`crate::auth`]), every request but
/// OPTIONS needs Basic or Digest credentials of a configured pair
/// (loopback clients are exempt unless `local_auth`).
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    gate: Gate,
    max_connections: usize,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let gate = Arc::new(gate);
    let listener = crate::net::CappedListener::new(
        listener,
        "rtsp",
        max_connections,
        crate::net::Refusal::Rtsp,
    );
    // Nodelay and the send buffer are set by the listener.
    crate::net::serve_conns(listener, shutdown, |sock, peer| {
        let local = sock.local_addr().unwrap_or(peer);
        let registry = registry.clone();
        let gate = gate.clone();
        async move {
            let now = Instant::now();
            let mut c = Conn {
                sock,
                peer,
                local,
                registry,
                buf: BytesMut::with_capacity(4096),
                session: None,
                publishing: None,
                opened: now,
                last_request: now,
                authed: gate.exempt(Gate::is_loopback(peer)),
                gate,
                nonce: format!("{:032x}", rand::random::<u128>()),
            };
            let why = c.run().await;
            tracing::debug!(peer = %peer, reason = %crate::redact::escape_controls(&why), "rtsp connection closed");
        }
    })
    .await;
}

enum Transport {
    /// §10.12: RTP and RTCP on these channels of the RTSP connection.
    Tcp { rtp: u8, rtcp: u8 },
    Udp {
        rtp: Arc<UdpSocket>,
        rtcp: Arc<UdpSocket>,
        to_rtp: SocketAddr,
        to_rtcp: SocketAddr,
        /// Reads the client's RTCP (receiver reports) to see it is alive.
        _listener: AbortOnDrop,
    },
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One track of a session.
struct Out {
    kind: TrackKind,
    codec: Codec,
    params: TrackParams,
    sender: Sender,
    transport: Option<Transport>,
    /// A sender report went out since this track's first packet.
    reported: bool,
}

struct Session {
    id: String,
    stream: String,
    viewer: Viewer,
    /// Deliveries taken to learn the tracks, still to be sent.
    pending: VecDeque<Delivery>,
    tracks: Vec<Out>,
    playing: bool,
    /// The pts that maps to rtptime in RTP-Info: the first frame sent.
    first_pts: Option<i64>,
    /// Wall time at PLAY, paired with `first_pts`: every track's sender
    /// reports map the stream clock to NTP through this one pair, so the
    /// player aligns the tracks exactly as the stream clock does (RFC 3550
    /// §6.4.1), however bursty each track's packets were.
    wall_ref: Option<(SystemTime, i64)>,
    /// Last sign of life of a UDP client (ms since the connection opened).
    last_seen: Arc<AtomicU64>,
}

struct Conn {
    sock: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    registry: Arc<Registry>,
    buf: BytesMut,
    session: Option<Session>,
    publishing: Option<publish::PublishSession>,
    opened: Instant,
    /// When the last request came (or the connection opened): see
    /// [`REQUEST_TIMEOUT`].
    last_request: Instant,
    /// Who must log in (see [`crate::auth`]).
    gate: Arc<Gate>,
    /// This connection has proved itself (or needs not).
    authed: bool,
    /// Our Digest nonce for this connection.
    nonce: String,
}

/// A request's answer.
struct Reply {
    status: u16,
    reason: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn new(status: u16, reason: &'static str) -> Reply {
        Reply {
            status,
            reason,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    fn ok() -> Reply {
        Reply::new(200, "OK")
    }

    fn header(mut self, name: &'static str, v: impl Into<String>) -> Reply {
        self.headers.push((name, v.into()));
        self
    }

    /// An error with its reason in a header, for people reading captures.
    fn error(status: u16, reason: &'static str, why: impl Into<String>) -> Reply {
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

enum Event {
    Read(io::Result<usize>),
    Media(Result<Delivery, Ended>),
    Report,
    Silent,
    /// No request for [`REQUEST_TIMEOUT`], and nothing else to keep it.
    Idle,
    /// A datagram from a UDP publisher's track.
    Udp(usize, bytes::Bytes),
}

/// The stream name, the control suffix (`trackID=N`) and the query
/// filter of a request URL: `rtsp://host/NAME[/trackID=N][?video&audio]`.
struct Target {
    stream: String,
    track: Option<usize>,
    video: Option<String>,
    audio: Option<String>,
    /// `?publish_token=`: an `exec:… {output}` child of ours publishing.
    token: Option<u64>,
    /// `?token=`: one of our own `ffmpeg:STREAM` readers, with its run's
    /// token (see `hub::InternalTokens`).
    read_token: Option<String>,
    /// `?exclude=N`: a stream reading itself back skips its source N (the
    /// reader's own output), as HTTP-FLV's `exclude` does.
    exclude: Option<u16>,
}

fn target(url: &rtsp_types::Url) -> Option<Target> {
    let mut segs = url.path_segments()?.filter(|s| !s.is_empty());
    let stream = percent_encoding::percent_decode_str(segs.next()?)
        .decode_utf8_lossy()
        .into_owned();
    let track = segs
        .find_map(|s| s.strip_prefix("trackID="))
        .and_then(|n| n.parse().ok());
    let (mut video, mut audio, mut token) = (None, None, None);
    let (mut read_token, mut exclude) = (None, None);
    for (k, v) in url.query_pairs() {
        match k.as_ref() {
            "publish_token" => token = u64::from_str_radix(&v, 16).ok(),
            "token" => read_token = Some(v.into_owned()),
            "exclude" => exclude = v.parse().ok(),
            // go2rtc: `?video`, `?audio`, `?video=h264` pick tracks.
            "video" => video = Some(v.to_ascii_lowercase()),
            "audio" => audio = Some(v.to_ascii_lowercase()),
            _ => {}
        }
    }
    Some(Target {
        stream,
        track,
        video,
        audio,
        token,
        read_token,
        exclude,
    })
}

/// go2rtc's `rtsp.default_query` (`video&audio`, `video=h264&audio=pcma`):
/// the track filter of a viewer whose URL has no `video` or `audio` of its
/// own (checked at load, see `config::default_query`).
fn with_default_query(t: &Target, query: &str) -> Target {
    let (mut video, mut audio) = (None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "video" => video = Some(v.to_ascii_lowercase()),
            "audio" => audio = Some(v.to_ascii_lowercase()),
            _ => {}
        }
    }
    Target {
        stream: t.stream.clone(),
        track: t.track,
        video,
        audio,
        token: t.token,
        read_token: t.read_token.clone(),
        exclude: t.exclude,
    }
}

fn codec_name(c: Codec) -> &'static str {
    match c {
        Codec::H264 => "h264",
        Codec::Aac => "aac",
        Codec::Pcma => "pcma",
        Codec::Pcmu => "pcmu",
        Codec::Opus => "opus",
        Codec::Jpeg => "jpeg",
        Codec::H265 => "h265",
        Codec::Flac => "flac",
    }
}

/// The audio codecs a viewer asking `?audio=…` takes: the one it names
/// (go2rtc: an RTSP client can have the camera's PCMA as it is), or any.
fn audio_wanted(t: &Target) -> &'static [Codec] {
    match t.audio.as_deref() {
        // `?video` alone: no audio, and no audio producer started for it.
        None if t.video.is_some() => &[],
        Some("aac") => &[Codec::Aac],
        Some("pcma") => &[Codec::Pcma],
        Some("pcmu") => &[Codec::Pcmu],
        // Opus only when asked for: by default an RTSP viewer gets the AAC
        // or G.711 every player takes, and no Opus transcoder is started.
        Some("opus") => &[Codec::Opus],
        // Our own transcoders (`ffmpeg:cam#audio=aac`) take whatever the
        // camera sends, Opus included.
        Some("all") => &[Codec::Aac, Codec::Pcma, Codec::Pcmu, Codec::Opus],
        _ => crate::hub::fanout::ANY_AUDIO,
    }
}

/// The video codecs a viewer takes: RTP carries H.264 (RFC 6184), H.265
/// (RFC 7798) and MJPEG (RFC 2435) alike; `?video=h264`, `?video=h265`
/// or `?video=mjpeg` asks for one.
fn video_wanted(t: &Target) -> &'static [Codec] {
    match t.video.as_deref() {
        Some("h264") => &[Codec::H264],
        Some("h265") => &[Codec::H265],
        Some("mjpeg" | "jpeg") => &[Codec::Jpeg],
        // RFC 2435 carries an MJPEG camera's JPEGs too, as go2rtc passes
        // them: last, so a stream that also has H.264 gives H.264.
        _ => &[Codec::H264, Codec::H265, Codec::Jpeg],
    }
}

/// Whether `?video=…`/`?audio=…` lets a track of `codec` through. With
/// neither given, every track goes.
fn wanted(t: &Target, codec: Codec) -> bool {
    if t.video.is_none() && t.audio.is_none() {
        return true;
    }
    let filter = match codec.kind() {
        TrackKind::Video => &t.video,
        TrackKind::Audio => &t.audio,
    };
    match filter {
        None => false,
        Some(v) => {
            v.is_empty()
                || v == "all"
                || v == codec_name(codec)
                || (codec == Codec::Jpeg && v == "mjpeg")
        }
    }
}

impl Conn {
    fn now_ms(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    async fn run(&mut self) -> String {
        let mut reports = tokio::time::interval(SR_INTERVAL);
        reports.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let playing = self.session.as_ref().is_some_and(|s| s.playing);
            let udp = self.session.as_ref().is_some_and(|s| {
                s.tracks
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
                None => Instant::now() + SESSION_TIMEOUT,
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
                    r = sock.read_buf(buf) => Event::Read(r),
                    d = next_delivery(session), if playing => Event::Media(d),
                    _ = reports.tick(), if playing => Event::Report,
                    _ = sleep_until_lazy(silent_at), if watch => Event::Silent,
                    _ = sleep_until_lazy(idle_at), if idle => Event::Idle,
                    Some((i, d)) = recv_udp(publishing) => Event::Udp(i, d),
                }
            };
            let step = match ev {
                Event::Read(Ok(0)) => Err("client closed the connection".to_string()),
                Event::Read(Err(e)) => Err(format!("read: {e}")),
                Event::Read(Ok(_)) => self.on_input().await,
                Event::Media(Ok(d)) => self.on_media(d).await,
                Event::Media(Err(e)) => Err(format!("viewer ended: {e}")),
                Event::Report => self.send_reports().await,
                Event::Silent => Err(format!(
                    "session silent for {} s",
                    SESSION_TIMEOUT.as_secs()
                )),
                Event::Idle => Err(format!("no request for {} s", REQUEST_TIMEOUT.as_secs())),
                Event::Udp(i, d) => self.on_published_rtp(i, d),
            };
            if let Err(why) = step {
                return why;
            }
        }
    }

    async fn on_input(&mut self) -> Result<(), String> {
        loop {
            match wire::next(&mut self.buf) {
                Ok(None) => return Ok(()),
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
                    let set_up = self
                        .session
                        .as_ref()
                        .is_some_and(|s| s.tracks.iter().any(|t| t.transport.is_some()))
                        || self
                            .publishing
                            .as_ref()
                            .is_some_and(|p| p.tracks.iter().any(|t| t.channel.is_some()));
                    if !set_up {
                        return Err(format!(
                            "interleaved data on channel {channel} before SETUP"
                        ));
                    }
                    let now = self.now_ms();
                    if let Some(s) = &self.session {
                        s.last_seen.store(now, Ordering::Relaxed);
                    }
                }
                Ok(Some(wire::Incoming::Request(req))) => {
                    self.last_request = Instant::now();
                    let cseq = req
                        .header(&rtsp_types::headers::CSEQ)
                        .map(|v| v.as_str().trim().to_string());
                    let reply = match &cseq {
                        None => Reply::error(400, "Bad Request", "missing CSeq"),
                        Some(_) => self.handle(&req).await,
                    };
                    self.respond(cseq.as_deref(), reply)
                        .await
                        .map_err(|e| format!("write: {e}"))?;
                }
                Err(e) => {
                    // Answer, then close: after a framing error the stream
                    // cannot be trusted to be in step.
                    let _ = self
                        .respond(None, Reply::error(400, "Bad Request", e.to_string()))
                        .await;
                    return Err(e.to_string());
                }
            }
        }
    }

    async fn respond(&mut self, cseq: Option<&str>, r: Reply) -> io::Result<()> {
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
        crate::net::write_all_within(&mut self.sock, &mut [IoSlice::new(&bytes)]).await
    }

    fn on_published_rtp(&mut self, track: usize, data: bytes::Bytes) -> Result<(), String> {
        let now = self.now_ms();
        match &mut self.publishing {
            Some(p) => match p.on_rtp(track, data, now) {
                true => Ok(()),
                false => Err(format!(
                    "stream {} no longer takes this publisher",
                    p.stream
                )),
            },
            None => Ok(()),
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

    fn session_matches(&self, req: &Request<Vec<u8>>) -> Result<(), Reply> {
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
    fn token_announce(&self, req: &Request<Vec<u8>>) -> Option<u64> {
        if *req.method() != Method::Announce || !self.peer.ip().is_loopback() {
            return None;
        }
        req.request_uri().and_then(target).and_then(|t| t.token)
    }

    /// The 401 with our challenges (RFC 2617 §3.2.1, Digest first).
    fn unauthorized(&self) -> Reply {
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
                    }
                    Reply::ok().header("Session", self.session_header())
                }
            },
            Method::Teardown => match self.session_matches(req) {
                Err(r) => r,
                Ok(()) => {
                    // Dropping a session releases the viewer's lease or
                    // the publisher's hold.
                    self.session = None;
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
            Method::Record => match self.session_matches(req) {
                Err(r) => r,
                Ok(()) => match &mut self.publishing {
                    Some(p)
                        if p.tracks
                            .iter()
                            .any(|t| t.channel.is_some() || t.udp.is_some()) =>
                    {
                        p.recording = true;
                        tracing::info!(stream = %p.stream, peer = %self.peer, session = %p.id, "rtsp record");
                        Reply::ok().header(
                            "Session",
                            format!("{};timeout={}", p.id, SESSION_TIMEOUT.as_secs()),
                        )
                    }
                    _ => Reply::error(
                        455,
                        "Method Not Valid in This State",
                        "RECORD before ANNOUNCE and SETUP",
                    ),
                },
            },
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

    /// Joins `t.stream` and learns its tracks: the deliveries up to the
    /// first frame are kept to be sent after PLAY.
    async fn open_session(&mut self, t: &Target) -> Result<(), Reply> {
        let defaulted;
        let t = match &self.registry.publish_config().rtsp_default_query {
            Some(q) if t.video.is_none() && t.audio.is_none() => {
                defaulted = with_default_query(t, q);
                &defaulted
            }
            _ => t,
        };
        let stream = self
            .registry
            .get(&t.stream)
            .ok_or_else(|| {
                Reply::error(404, "Not Found", format!("stream not found: {}", t.stream))
            })?
            .clone();
        // Only a stream reading itself back is internal (it never keeps
        // itself up); another stream's transcoder is an ordinary viewer.
        let internal = self.peer.ip().is_loopback()
            && t.read_token.as_deref().is_some_and(|tok| {
                self.registry
                    .deps()
                    .internal_tokens
                    .reads_itself(tok, &t.stream)
            });
        // `?video=h264` of an H.265 camera: the stream's shared H.264
        // transcode, as go2rtc's ffmpeg source would make it.
        let mut viewer = self
            .registry
            .join_fitting(
                &stream,
                JoinRequest {
                    protocol: "rtsp",
                    remote_addr: Some(self.peer),
                    internal,
                    exclude: if internal { t.exclude } else { None },
                    audio: audio_wanted(t),
                    video: if t.video.is_some() || t.audio.is_none() {
                        video_wanted(t)
                    } else {
                        &[]
                    },
                },
            )
            .await?;
        let mut pending = VecDeque::new();
        let mut tracks: [Option<TrackInfo>; 2] = [None, None];
        let deadline = Instant::now() + TRACKS_WAIT;
        // A camera's G.711 has no sequence header: its track is known only
        // with its first sample, which may come after the first picture.
        // A viewer that wants audio waits a little for it (the frames are
        // kept for after PLAY), so the SDP has it.
        let wants_audio = !audio_wanted(t).is_empty();
        let mut audio_until: Option<Instant> = None;
        loop {
            let until = audio_until.map_or(deadline, |a| a.min(deadline));
            match tokio::time::timeout_at(until, viewer.next()).await {
                Ok(Ok(Delivery::Tracks { video, audio })) => {
                    tracks = [video.clone(), audio.clone()];
                    if audio_until.is_some() {
                        pending.push_back(Delivery::Tracks { video, audio });
                        if tracks[1].is_some() {
                            break;
                        }
                    }
                }
                Ok(Ok(d)) => {
                    pending.push_back(d);
                    if !wants_audio || tracks[1].is_some() {
                        break;
                    }
                    audio_until.get_or_insert(Instant::now() + AUDIO_WAIT);
                }
                Ok(Err(e)) => {
                    return Err(Reply::error(
                        503,
                        "Service Unavailable",
                        format!("stream {}: {e}", t.stream),
                    ))
                }
                Err(_) => break,
            }
        }
        let mut out = Vec::new();
        for info in tracks.into_iter().flatten() {
            if !wanted(t, info.codec) {
                continue;
            }
            let params = TrackParams::new(&info).map_err(|e| {
                Reply::error(
                    503,
                    "Service Unavailable",
                    format!("stream {}: {e}", t.stream),
                )
            })?;
            out.push(Out {
                kind: info.kind(),
                codec: info.codec,
                sender: Sender::new(params.payload_type()),
                params,
                transport: None,
                reported: false,
            });
        }
        if out.is_empty() {
            return Err(Reply::error(
                404,
                "Not Found",
                format!("stream {} has no track matching the request", t.stream),
            ));
        }
        self.session = Some(Session {
            id: format!("{:016X}", rand::random::<u64>()),
            stream: t.stream.clone(),
            viewer,
            pending,
            tracks: out,
            playing: false,
            first_pts: None,
            wall_ref: None,
            last_seen: Arc::new(AtomicU64::new(self.now_ms())),
        });
        Ok(())
    }

    async fn describe(&mut self, req: &Request<Vec<u8>>) -> Reply {
        let Some(url) = req.request_uri() else {
            return Reply::error(400, "Bad Request", "DESCRIBE needs a URL");
        };
        let Some(t) = target(url) else {
            return Reply::error(404, "Not Found", "no stream in the URL");
        };
        // A new DESCRIBE starts over (and leaves any earlier stream).
        self.session = None;
        if let Err(r) = self.open_session(&t).await {
            return r;
        }
        let Some(s) = &self.session else {
            return Reply::error(500, "Internal Server Error", "no session");
        };
        let params: Vec<TrackParams> = s.tracks.iter().map(|t| t.params.clone()).collect();
        let body = sdp::describe(&params, rand::random::<u32>() as u64).into_bytes();
        let mut base = url.clone();
        base.set_query(None);
        let mut base = base.to_string();
        if !base.ends_with('/') {
            base.push('/');
        }
        let mut r = Reply::ok()
            .header("Content-Base", base)
            .header("Content-Type", "application/sdp");
        r.body = body;
        r
    }

    async fn announce(&mut self, req: &Request<Vec<u8>>) -> Reply {
        let Some(t) = req.request_uri().and_then(target) else {
            return Reply::error(400, "Bad Request", "ANNOUNCE needs a stream URL");
        };
        // A run token is proved before anything else is looked at (the
        // SDP included): until then this may be anyone on the host.
        let by_token = match self.token_announce(req) {
            None => None,
            Some(token) => {
                // Never `for_publish`: a child's stream exists while it
                // runs, so a token never creates one (publish.auto_create).
                let held = match self.registry.get(&t.stream) {
                    Some(s) => s.publish_into(token).await.ok(),
                    None => None,
                };
                match held {
                    Some(p) => Some(p),
                    // Not the current run token of a running `{output}`
                    // child of this stream: the same answer whether the
                    // stream exists or not, and with credentials on, the
                    // same 401 as no credentials at all.
                    None if !self.authed && self.gate.enabled() => return self.unauthorized(),
                    None => {
                        return Reply::error(
                            404,
                            "Not Found",
                            format!(
                                "stream {}: no running source of it has this publish_token",
                                t.stream
                            ),
                        )
                    }
                }
            }
        };
        let (tracks, skipped) = match publish::parse_sdp(req.body()) {
            Ok(x) => x,
            Err(e) => return Reply::error(400, "Bad Request", e),
        };
        for note in &skipped {
            // The stream name is the request's percent-decoded path, not yet
            // checked: `%0D%0A` in it must not forge a log line.
            tracing::warn!(stream = %crate::redact::escape_controls(&t.stream), peer = %self.peer, "publisher track ignored: {}", crate::redact::escape_controls(note));
        }
        if tracks.is_empty() {
            return Reply::error(
                415,
                "Unsupported Media Type",
                format!("no track we can take: {}", skipped.join("; ")),
            );
        }
        // One role per connection: a new ANNOUNCE ends whatever was here
        // (its publisher first, so a re-ANNOUNCE is not Busy with itself).
        self.session = None;
        self.publishing = None;
        let publisher = match by_token {
            Some(p) => {
                self.authed = true; // the run token was the credential
                p
            }
            None => {
                // Only now, authorized and with an offer we can take: with
                // publish.auto_create a bad ANNOUNCE must not leave a
                // stream behind.
                let stream = match self.registry.for_publish(&t.stream) {
                    Ok(s) => s,
                    Err(e) => return e.into(),
                };
                match stream.publish("rtsp", Some(self.peer)).await {
                    Ok(p) => p,
                    Err(e) => return e.into(),
                }
            }
        };
        let now = self.now_ms();
        self.publishing = Some(publish::PublishSession::new(
            t.stream, publisher, tracks, now,
        ));
        Reply::ok()
    }

    async fn setup_record(&mut self, req: &Request<Vec<u8>>, transports: &Transports) -> Reply {
        let local_ip = self.local.ip();
        let peer = self.peer;
        let opened = self.opened;
        let url = req.request_uri().map(|u| u.to_string()).unwrap_or_default();
        let Some(p) = &mut self.publishing else {
            return Reply::error(
                455,
                "Method Not Valid in This State",
                "SETUP for record before ANNOUNCE",
            );
        };
        let Some(i) = p.track_for(&url) else {
            return Reply::error(
                404,
                "Not Found",
                format!("no ANNOUNCEd track matches {url}"),
            );
        };
        let lower = match negotiate(transports, i, local_ip).await {
            Ok(l) => l,
            Err(r) => return r,
        };
        let answer = format!("{};mode=record", lower.answer());
        match lower {
            Lower::Tcp { rtp, .. } => p.tracks[i].channel = Some(rtp),
            Lower::Udp { rtp, rtcp, .. } => {
                // The client's RTCP sender reports keep the session alive too.
                let rtcp = AbortOnDrop(tokio::spawn(watch_rtcp(rtcp, p.last_seen.clone(), opened)));
                p.listen_udp(i, rtp, rtcp, peer);
            }
        }
        Reply::ok().header("Transport", answer).header(
            "Session",
            format!("{};timeout={}", p.id, SESSION_TIMEOUT.as_secs()),
        )
    }

    async fn setup(&mut self, req: &Request<Vec<u8>>) -> Reply {
        let Some(t) = req.request_uri().and_then(target) else {
            return Reply::error(400, "Bad Request", "SETUP needs a stream URL");
        };
        let transports = match req.typed_header::<Transports>() {
            Ok(Some(t)) => t,
            Ok(None) => {
                return Reply::error(400, "Bad Request", "SETUP without a Transport header")
            }
            Err(e) => {
                return Reply::error(400, "Bad Request", format!("bad Transport header: {e:?}"))
            }
        };
        let record = transports
            .iter()
            .any(|t| matches!(t, RtspTransport::Rtp(r) if r.params.mode.contains(&TransportMode::Record)));
        if record || self.publishing.is_some() {
            return self.setup_record(req, &transports).await;
        }
        if self.session.as_ref().is_some_and(|s| s.playing) {
            return Reply::error(455, "Method Not Valid in This State", "SETUP while playing");
        }
        if self.session.as_ref().is_none_or(|s| s.stream != t.stream) {
            if let Err(r) = self.open_session(&t).await {
                return r;
            }
        } else if let Err(r) = self.session_matches(req) {
            return r;
        }
        let local_ip = self.local.ip();
        let peer_ip = self.peer.ip();
        let Some(s) = &mut self.session else {
            return Reply::error(500, "Internal Server Error", "no session");
        };
        let index = t.track.unwrap_or(0);
        let n = s.tracks.len();
        let Some(track) = s.tracks.get_mut(index) else {
            return Reply::error(
                404,
                "Not Found",
                format!(
                    "stream {} has {n} tracks; there is no trackID={index}",
                    t.stream
                ),
            );
        };
        let lower = match negotiate(&transports, index, local_ip).await {
            Ok(l) => l,
            Err(r) => return r,
        };
        let answer = format!("{};ssrc={:08X}", lower.answer(), track.sender.ssrc);
        track.transport = Some(match lower {
            Lower::Tcp { rtp, rtcp } => Transport::Tcp { rtp, rtcp },
            Lower::Udp { rtp, rtcp, client } => Transport::Udp {
                _listener: AbortOnDrop(tokio::spawn(watch_rtcp(
                    rtcp.clone(),
                    s.last_seen.clone(),
                    self.opened,
                ))),
                rtp,
                rtcp,
                to_rtp: SocketAddr::new(peer_ip, client.0),
                to_rtcp: SocketAddr::new(peer_ip, client.1),
            },
        });
        Reply::ok().header("Transport", answer).header(
            "Session",
            format!("{};timeout={}", s.id, SESSION_TIMEOUT.as_secs()),
        )
    }

    fn play(&mut self, req: &Request<Vec<u8>>) -> Reply {
        if let Err(r) = self.session_matches(req) {
            return r;
        }
        let Some(s) = &mut self.session else {
            return Reply::error(454, "Session Not Found", "no session");
        };
        if !s.tracks.iter().any(|t| t.transport.is_some()) {
            return Reply::error(455, "Method Not Valid in This State", "PLAY before SETUP");
        }
        // RTP-Info (§12.33): the first packet of each track will carry
        // this seq and rtptime; both derive from the first pending frame.
        let first = s.first_pts.or_else(|| {
            s.pending.iter().find_map(|d| match d {
                Delivery::Frame(f) => Some(f.pts),
                _ => None,
            })
        });
        let base = req.request_uri().map(|u| u.to_string()).unwrap_or_default();
        let base = base.trim_end_matches('/');
        let info: Vec<String> = s
            .tracks
            .iter()
            .enumerate()
            .filter(|(_, t)| t.transport.is_some())
            .map(|(i, t)| {
                let rtptime = t
                    .sender
                    .ts_base
                    .wrapping_add(first.map_or(0, |p| t.params.rtp_time(p)));
                format!(
                    "url={base}/{};seq={};rtptime={rtptime}",
                    sdp::control(i),
                    t.sender.seq
                )
            })
            .collect();
        s.first_pts = first;
        if let Some(p) = first {
            s.wall_ref.get_or_insert((SystemTime::now(), p));
        }
        s.playing = true;
        tracing::info!(stream = %s.stream, peer = %self.peer, session = %s.id, "rtsp play");
        Reply::ok()
            .header(
                "Session",
                format!("{};timeout={}", s.id, SESSION_TIMEOUT.as_secs()),
            )
            .header("Range", "npt=0.000-")
            .header("RTP-Info", info.join(","))
    }

    /// Sends one delivery and every other one that is ready, in one write.
    async fn on_media(&mut self, first: Delivery) -> Result<(), String> {
        // Sender reports before the first packets: a player that gets media
        // first can only guess how the tracks line up, and re-bases its
        // timestamps when the reports come.
        if self.session.as_ref().is_some_and(|s| {
            s.tracks
                .iter()
                .any(|t| t.transport.is_some() && !t.reported)
        }) {
            self.send_reports().await?;
        }
        let Some(s) = &mut self.session else {
            return Ok(());
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match s.pending.pop_front() {
                Some(d) => batch.push(d),
                None => match s.viewer.next().now_or_never() {
                    Some(Ok(d)) => batch.push(d),
                    Some(Err(e)) => return Err(format!("viewer ended: {e}")),
                    None => break,
                },
            }
        }
        // Per viewer, only the RTP and interleave headers are made here:
        // the payloads are the frame's, packetized once for every viewer
        // (`Wire`) and borrowed, not cloned. A clone per packet was an
        // atomic increment and decrement of the payload's one shared
        // counter, by every viewer on both worker threads: a cache line
        // that 500 viewers bounced between cores for every packet.
        // The interleave and RTP headers of the batch, in a buffer made per
        // write: the allocator hands back memory that is still in cache,
        // where a buffer kept per connection is cold memory for each of
        // 500 viewers in turn.
        let mut out: Vec<u8> = Vec::with_capacity(1024);
        // Where in `out` each TCP packet's headers are, and its body.
        let mut packets: Vec<(usize, usize, &[u8])> = Vec::new();
        let mut sent = 0;
        for d in &batch {
            let f = match d {
                Delivery::Tracks { video, audio } => {
                    update_tracks(s, [video.clone(), audio.clone()]);
                    continue;
                }
                Delivery::Frame(f) => f,
            };
            let Some(t) = s
                .tracks
                .iter_mut()
                .find(|t| t.codec == f.codec && t.transport.is_some())
            else {
                continue;
            };
            let rtp_time = t.params.rtp_time(f.pts);
            for c in chunks(f, &t.params).iter() {
                let h = t.sender.header(c, rtp_time, f.pts);
                match &t.transport {
                    Some(Transport::Tcp { rtp, .. }) => {
                        // RFC 2326 §10.12: '$', channel, length, then the
                        // packet. With the RTP header and the 0 to 4 byte
                        // prefix, one copy beats iovecs of their own.
                        let len = ((12 + c.len()) as u16).to_be_bytes();
                        let mut head = [0u8; 16];
                        head[..4].copy_from_slice(&[b'$', *rtp, len[0], len[1]]);
                        head[4..].copy_from_slice(&h);
                        let at = out.len();
                        out.extend_from_slice(&head);
                        out.extend_from_slice(&c.prefix);
                        packets.push((at, 16 + c.prefix.len(), &c.body));
                    }
                    Some(Transport::Udp { rtp, to_rtp, .. }) => {
                        send_udp(rtp, *to_rtp, &[&h, &c.prefix, &c.body]);
                        sent += h.len() + c.len();
                    }
                    None => {}
                }
            }
        }
        // What the viewer was sent, for `/api/streams` and `/api/metrics`.
        sent += out.len() + packets.iter().map(|p| p.2.len()).sum::<usize>();
        let stats = s.viewer.stats();
        stats
            .bytes
            .fetch_add(sent as u64, std::sync::atomic::Ordering::Relaxed);
        // The batch's delay (`/api/metrics`) ends when its last packet is
        // sent: UDP above, interleaved TCP below.
        if packets.is_empty() {
            stats.delivered();
            return Ok(());
        }
        let mut slices: Vec<IoSlice> = Vec::with_capacity(packets.len() * 2);
        for (at, len, body) in &packets {
            slices.push(IoSlice::new(&out[*at..*at + *len]));
            slices.push(IoSlice::new(body));
        }
        match crate::net::write_all_within(&mut self.sock, &mut slices).await {
            Ok(()) => {
                stats.delivered();
                Ok(())
            }
            Err(e) => Err(format!("write: {e}")),
        }
    }

    async fn send_reports(&mut self) -> Result<(), String> {
        let Some(s) = &mut self.session else {
            return Ok(());
        };
        let wall_ref = s.wall_ref;
        let mut tcp = Vec::new();
        for t in &mut s.tracks {
            // The NTP time of the track's last packet, by the stream clock.
            let ntp = match (wall_ref, t.sender.last) {
                (Some((wall, ref_pts)), Some((_, pts))) => {
                    let d = pts - ref_pts;
                    let span = Duration::from_micros(
                        (d.unsigned_abs() as u128 * 1_000_000 / crate::media::TIMESCALE as u128)
                            as u64,
                    );
                    if d >= 0 {
                        wall + span
                    } else {
                        wall - span
                    }
                }
                _ => SystemTime::now(),
            };
            let sr = match (t.sender.last, wall_ref) {
                (Some(_), _) => t.sender.sender_report(ntp),
                // Nothing sent yet: report where the first frame will be.
                (None, Some((wall, ref_pts))) => Some(t.sender.sender_report_at(
                    t.sender.ts_base.wrapping_add(t.params.rtp_time(ref_pts)),
                    wall,
                )),
                (None, None) => None,
            };
            let Some(sr) = sr else {
                continue;
            };
            t.reported = true;
            match &t.transport {
                Some(Transport::Tcp { rtcp, .. }) => {
                    tcp.put_u8(b'$');
                    tcp.put_u8(*rtcp);
                    tcp.put_u16(sr.len() as u16);
                    tcp.put_slice(&sr);
                }
                Some(Transport::Udp { rtcp, to_rtcp, .. }) => send_udp(rtcp, *to_rtcp, &[&sr]),
                None => {}
            }
        }
        if tcp.is_empty() {
            return Ok(());
        }
        crate::net::write_all_within(&mut self.sock, &mut [IoSlice::new(&tcp)])
            .await
            .map_err(|e| format!("write: {e}"))
    }
}

/// The next delivery of a playing session: what DESCRIBE set aside first.
async fn next_delivery(session: &mut Option<Session>) -> Result<Delivery, Ended> {
    let Some(s) = session else {
        return std::future::pending().await;
    };
    if let Some(d) = s.pending.pop_front() {
        return Ok(d);
    }
    s.viewer.next().await
}

/// A frame's RTP payloads, made once for all viewers (`Wire`).
fn chunks<'f>(f: &'f Frame, params: &TrackParams) -> &'f [Chunk] {
    f.wire.rtp(|| match rtp::packetize(f, params) {
        Ok(c) => c.into(),
        Err(e) => {
            tracing::warn!(codec = ?f.codec, error = %e, "frame cannot be sent over RTP; dropped");
            Arc::from([])
        }
    })
}

/// New parameters (SPS/PPS, AAC config) for tracks the session already
/// has; the SDP cannot change mid-session, so a codec change is dropped.
fn update_tracks(s: &mut Session, infos: [Option<TrackInfo>; 2]) {
    for info in infos.into_iter().flatten() {
        let Some(t) = s.tracks.iter_mut().find(|t| t.kind == info.kind()) else {
            continue;
        };
        if t.codec != info.codec {
            tracing::warn!(stream = %s.stream, session = %s.id, from = ?t.codec, to = ?info.codec, "codec changed mid-session; that track stops");
            continue;
        }
        if let Ok(p) = TrackParams::new(&info) {
            t.params = p;
        }
    }
}

/// One datagram from pieces, without copying them together; a full socket
/// buffer drops the packet, as UDP would anyway, rather than wait.
fn send_udp(sock: &UdpSocket, to: SocketAddr, parts: &[&[u8]]) {
    let bufs: Vec<IoSlice> = parts
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| IoSlice::new(p))
        .collect();
    let to = socket2::SockAddr::from(to);
    let _ = sock.try_io(tokio::io::Interest::WRITABLE, || {
        socket2::SockRef::from(sock).send_to_vectored(&bufs, &to)
    });
}

/// The lower transport a SETUP settled on (§12.39).
enum Lower {
    /// Interleaved channels on the RTSP connection.
    Tcp { rtp: u8, rtcp: u8 },
    /// A fresh server port pair; `client` is the client's (RTP, RTCP).
    Udp {
        rtp: Arc<UdpSocket>,
        rtcp: Arc<UdpSocket>,
        client: (u16, u16),
    },
}

impl Lower {
    /// The Transport header of the answer, without mode or ssrc.
    fn answer(&self) -> String {
        match self {
            Lower::Tcp { rtp, rtcp } => format!("RTP/AVP/TCP;unicast;interleaved={rtp}-{rtcp}"),
            Lower::Udp { rtp, rtcp, client } => {
                let port = |s: &UdpSocket| s.local_addr().map(|a| a.port()).unwrap_or(0);
                format!(
                    "RTP/AVP;unicast;client_port={}-{};server_port={}-{}",
                    client.0,
                    client.1,
                    port(rtp),
                    port(rtcp)
                )
            }
        }
    }
}

/// Picks the first RTP transport the client offers, for track `index`.
async fn negotiate(
    transports: &Transports,
    index: usize,
    local_ip: std::net::IpAddr,
) -> Result<Lower, Reply> {
    let Some(t) = transports.iter().find_map(|t| match t {
        RtspTransport::Rtp(r) => Some(r),
        RtspTransport::Other(_) => None,
    }) else {
        return Err(Reply::error(
            461,
            "Unsupported Transport",
            "only RTP/AVP transports are supported",
        ));
    };
    if t.lower_transport == Some(RtpLowerTransport::Tcp) {
        let (rtp, rtcp) = match t.params.interleaved {
            Some((a, b)) => (a, b.unwrap_or(a.wrapping_add(1))),
            None => (index as u8 * 2, index as u8 * 2 + 1),
        };
        return Ok(Lower::Tcp { rtp, rtcp });
    }
    let Some((crtp, crtcp)) = t.params.client_port else {
        return Err(Reply::error(
            461,
            "Unsupported Transport",
            "UDP needs client_port",
        ));
    };
    let (rtp, rtcp) = udp_pair(local_ip)
        .await
        .map_err(|e| Reply::error(500, "Internal Server Error", format!("no UDP ports: {e}")))?;
    Ok(Lower::Udp {
        rtp,
        rtcp,
        client: (crtp, crtcp.unwrap_or(crtp.wrapping_add(1))),
    })
}

/// A server RTP/RTCP socket pair on the connection's local address.
async fn udp_pair(ip: std::net::IpAddr) -> io::Result<(Arc<UdpSocket>, Arc<UdpSocket>)> {
    let rtp = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
    let rtcp = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
    Ok((Arc::new(rtp), Arc::new(rtcp)))
}

/// Drains the client's RTCP on a UDP session; each packet is a sign of life.
async fn watch_rtcp(sock: Arc<UdpSocket>, last_seen: Arc<AtomicU64>, opened: Instant) {
    let mut buf = [0u8; 1500];
    while sock.recv_from(&mut buf).await.is_ok() {
        last_seen.store(opened.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(url: &str) -> Target {
        target(&rtsp_types::Url::parse(url).unwrap()).unwrap()
    }

    #[test]
    fn urls() {
        let x = t("rtsp://h:8554/cam%202/trackID=1?video=h264");
        assert_eq!((x.stream.as_str(), x.track), ("cam 2", Some(1)));
        assert!(wanted(&x, Codec::H264));
        assert!(!wanted(&x, Codec::Aac));
        let x = t("rtsp://h/cam?audio");
        assert!(wanted(&x, Codec::Pcma) && !wanted(&x, Codec::H264));
        let x = t("rtsp://h/cam/");
        assert!(x.track.is_none() && wanted(&x, Codec::H264) && wanted(&x, Codec::Aac));
        assert_eq!(video_wanted(&x), &[Codec::H264, Codec::H265, Codec::Jpeg]);
        let x = t("rtsp://h:8554/cam?video=h265");
        assert!(wanted(&x, Codec::H265) && !wanted(&x, Codec::H264));
        assert_eq!(video_wanted(&x), &[Codec::H265]);
        let x = t("rtsp://h:8554/cam?video=mjpeg");
        assert!(wanted(&x, Codec::Jpeg) && !wanted(&x, Codec::H264));
        assert_eq!(video_wanted(&x), &[Codec::Jpeg]);
    }

    #[test]
    fn default_query_fills_a_bare_url() {
        let x = with_default_query(&t("rtsp://h/cam/trackID=1"), "video=h264&audio=pcma");
        assert_eq!((x.stream.as_str(), x.track), ("cam", Some(1)));
        assert!(wanted(&x, Codec::H264) && wanted(&x, Codec::Pcma));
        assert!(!wanted(&x, Codec::Aac));
        assert_eq!(audio_wanted(&x), &[Codec::Pcma]);
        // `video` alone: no audio, as go2rtc's `?video`.
        let x = with_default_query(&t("rtsp://h/cam"), "video");
        assert!(wanted(&x, Codec::H264) && !wanted(&x, Codec::Aac));
        assert!(audio_wanted(&x).is_empty());
    }
}
