//! The stream actor: one task per stream owns all of that stream's state.
//!
//! Everything else talks to it through [`Msg`]s: a viewer joins or leaves, a
//! producer ended, the fan-out saw its first keyframe, the API wants a
//! snapshot. The actor never awaits a child, a socket or a peer, so it always
//! answers, and every state it can be in has a deadline:
//!
//! ```text
//! Idle ──join──> Starting ──first keyframe──> Running ──last viewer + linger──> Stopping ──all reaped──> Idle
//!                   │ start_timeout: waiters get the stderr tail, stop          │ stop deadline: abandon, Idle
//! ```
//!
//! A viewer who joins while Stopping waits for the stop to finish and then
//! starts everything afresh (SRS marked a stream publishable before teardown
//! finished; we never do). Producers carry a [`Generation`], so a late
//! "ended" from an old run can never tear down its replacement.

pub mod fanout;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rand::Rng;
use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{SourceConfig, StreamConfig};
use crate::media::flv;
use crate::metrics::StreamMetrics;
use crate::redact::{clean, redact};
use crate::supervisor::{self, BoxRead, CommandSpec, EndedBy, Labels, Report, Spawner, StderrTail};
use fanout::{Delivery, Ended, Fanout, Generation, ReadyNotify, Selector, SourceId, ViewerStats};

/// Why a viewer could not be served. Carries the stream name, and for a
/// failed start each source's last error and stderr tail.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StreamError {
    #[error("stream {stream}: no sources configured and no publisher connected")]
    NoSource { stream: String },
    #[error("stream {stream}: not running")]
    NotRunning { stream: String },
    #[error("stream {stream}: producers did not deliver a keyframe within {timeout_ms} ms")]
    StartFailed {
        stream: String,
        timeout_ms: u64,
        sources: Vec<SourceFailure>,
    },
    #[error("stream {stream}: no answer within {timeout_ms} ms")]
    Timeout { stream: String, timeout_ms: u64 },
    #[error("stream {stream}: server is shutting down")]
    ShuttingDown { stream: String },
    #[error("stream {stream}: already has a publisher ({by})")]
    Busy { stream: String, by: String },
    #[error("stream {stream}: not found (publish only to streams in the config, or set publish.auto_create)")]
    NotFound { stream: String },
    #[error("stream {stream}: {reason}")]
    BadName { stream: String, reason: String },
    /// Not allowed by the config (a publisher into a stream with sources).
    #[error("stream {stream}: {reason}")]
    Forbidden { stream: String, reason: String },
    /// Asked of a stream in a way it cannot serve (a transcode we do not
    /// offer).
    #[error("stream {stream}: {reason}")]
    Unsupported { stream: String, reason: String },
    /// Every source is of a kind we cannot run (a go2rtc scheme we lack,
    /// such as `tapo:`): the reason, at once, rather than a start timeout.
    #[error("stream {stream}: {reason}")]
    UnsupportedSource { stream: String, reason: String },
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SourceFailure {
    pub url: String,
    pub last_error: Option<String>,
    pub stderr_tail: Vec<String>,
}

/// What the API shows of a producer. `url` is echoed exactly as configured;
/// the rest are streamvisor's extra fields.
#[derive(Debug, Clone, Serialize)]
pub struct ProducerInfo {
    pub url: String,
    pub state: &'static str,
    pub pid: Option<u32>,
    pub started_at: Option<String>,
    pub restarts: u32,
    pub last_error: Option<String>,
    pub stderr_tail: Vec<String>,
    pub bytes: u64,
    /// The codecs it delivers now (`h264`, `aac` …).
    pub codecs: Vec<crate::media::Codec>,
    /// When a producer in backoff will be started again.
    pub next_retry_at: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConsumerInfo {
    pub protocol: &'static str,
    pub remote_addr: Option<String>,
    pub bytes: u64,
    pub drops: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub internal: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct StreamInfo {
    pub producers: Vec<ProducerInfo>,
    pub consumers: Vec<ConsumerInfo>,
    /// The stream's own state: `idle`, `starting`, `running`, `stopping`
    /// (streamvisor's; go2rtc has none), or `unsupported` when no source
    /// can run (see [`StreamError::UnsupportedSource`]).
    pub state: &'static str,
    /// Why the stream is `unsupported`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Who is asking to watch.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub protocol: &'static str,
    pub remote_addr: Option<SocketAddr>,
    /// A producer reading a stream back: it never starts a stream, and when
    /// it reads its own stream it does not keep it alive.
    pub internal: bool,
    pub exclude: Option<SourceId>,
    /// Audio codecs the viewer's output carries, most wanted first
    /// (`fanout::ANY_AUDIO` unless it says otherwise); empty: no audio.
    pub audio: &'static [crate::media::Codec],
    /// Video codecs it takes, most wanted first (`fanout::H264_VIDEO`
    /// unless it says otherwise); empty: no video (RTSP `?audio` alone).
    pub video: &'static [crate::media::Codec],
}

/// What every stream needs from the rest of the program.
pub struct Deps {
    pub spawner: Arc<dyn Spawner>,
    pub ffmpeg_bin: String,
    /// Our own HTTP base URL, for `ffmpeg:STREAM` sources.
    pub internal_base: Option<String>,
    /// Our own RTSP base URL (`rtsp://127.0.0.1:8554`), for `exec:` sources
    /// with `{output}`.
    pub rtsp_base: Option<String>,
    /// `publish:`: takeover, the publisher timeout, auto-creation.
    pub publish: crate::config::PublishConfig,
    /// The live tokens of `ffmpeg:STREAM` readers (see [`InternalTokens`]).
    pub internal_tokens: InternalTokens,
    /// The `ffmpeg:` templates the hidden H.264 transcodes are made with
    /// (as the config was at start-up).
    pub ffmpeg_templates: crate::config::FfmpegTemplates,
}

/// Per-run tokens of our own `ffmpeg:STREAM` readers. A reader's URL
/// carries `token=…` instead of the API password, which would show in
/// `ps` to every local user (issue 15); HTTP-FLV and RTSP let a reader
/// through only with a live token for the stream it names. A token lives
/// as long as its [`TokenGuard`]: one producer run.
///
/// The token also says who reads: a stream reading **itself** back
/// (`cam: [rtsp://…, "ffmpeg:cam#audio=aac"]`) is an internal viewer that
/// never keeps `cam` up, while a stream reading **another**
/// (`cam_aac: ffmpeg:cam#audio=aac`) is an ordinary viewer of it that
/// starts it, cold or warm, as in go2rtc (issue 16).
#[derive(Clone, Default)]
pub struct InternalTokens(Arc<std::sync::Mutex<HashMap<String, TokenFor>>>);

#[derive(Clone, Debug, PartialEq, Eq)]
struct TokenFor {
    reader: String,
    target: String,
}

impl InternalTokens {
    /// A fresh random token good for `reader` reading `target` until the
    /// guard drops.
    pub fn issue(&self, reader: &str, target: &str) -> TokenGuard {
        let token = format!("{:032x}", rand::random::<u128>());
        self.lock().insert(
            token.clone(),
            TokenFor {
                reader: reader.to_string(),
                target: target.to_string(),
            },
        );
        TokenGuard {
            tokens: self.clone(),
            token,
        }
    }

    /// Whether `token` is live and was issued for reading `stream`.
    pub fn allows(&self, token: &str, stream: &str) -> bool {
        self.lock().get(token).is_some_and(|t| t.target == stream)
    }

    /// Whether `token` is live, for reading `stream`, by `stream` itself:
    /// such a reader is internal and never keeps its stream up.
    pub fn reads_itself(&self, token: &str, stream: &str) -> bool {
        self.lock()
            .get(token)
            .is_some_and(|t| t.target == stream && t.reader == stream)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, TokenFor>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One run's internal-reader token; dropping it revokes the token.
pub struct TokenGuard {
    tokens: InternalTokens,
    token: String,
}

impl TokenGuard {
    pub fn token(&self) -> &str {
        &self.token
    }
}

impl Drop for TokenGuard {
    fn drop(&mut self) {
        self.tokens.lock().remove(&self.token);
    }
}

// Every stream's mailbox allocates its first block of 32 messages when it is
// created (tokio's mpsc), so the largest variant, times 32, is memory each
// idle stream holds: the big payloads are boxed to keep `Msg` at 32 bytes
// (was 96: 3 KB a stream, a third of what an idle stream costs; issue 17).
// Only control messages go through here, never frames.
enum Msg {
    Join {
        req: Box<JoinRequest>,
        reply: oneshot::Sender<Result<Viewer, StreamError>>,
    },
    Leave {
        id: u64,
    },
    Ready {
        run: u64,
    },
    Settled {
        run: u64,
    },
    ProducerEnded {
        index: usize,
        generation: Generation,
        outcome: Box<Outcome>,
    },
    Info {
        reply: oneshot::Sender<StreamInfo>,
    },
    Publish(Box<PendingPublish>),
    Unpublish {
        generation: Generation,
    },
    PublishInto {
        token: u64,
        reply: oneshot::Sender<Result<Publisher, StreamError>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

#[derive(Debug)]
enum Outcome {
    SpawnFailed(String),
    Ended(Report),
}

/// A handle to one stream's actor. Cheap to clone.
#[derive(Clone)]
pub struct Stream {
    name: Arc<str>,
    tx: mpsc::UnboundedSender<Msg>,
    join_timeout: Duration,
    metrics: Arc<StreamMetrics>,
}

/// All streams, in config order, then those created at run time (by a
/// publisher, with `publish.auto_create`). The lock is only ever held to
/// look up or insert a handle, never across an `.await`.
pub struct Registry {
    inner: std::sync::RwLock<Streams>,
    deps: Arc<Deps>,
}

#[derive(Default)]
struct Streams {
    list: Vec<Stream>,
    index: HashMap<String, usize>,
    /// Hidden, on-demand transcodes of a stream for viewers who cannot
    /// take its video (see [`Registry::transcoded`]), by base stream.
    derived: HashMap<String, Vec<Stream>>,
}

/// The longest stream name we take (go2rtc's API has the same bound).
pub const MAX_NAME: usize = 128;

/// Whether `name` may name a stream made at run time (by the API or a
/// publisher): 1 to 128 of `[A-Za-z0-9_.-]`, and `%XX` hex escapes (Home
/// Assistant escapes everything else in its camera ids that way). Config
/// streams may be named anything YAML allows.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(format!(
            "a stream name is 1 to {MAX_NAME} characters, not {}",
            name.len()
        ));
    }
    let b = name.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            if b.len() < i + 3 || !b[i + 1].is_ascii_hexdigit() || !b[i + 2].is_ascii_hexdigit() {
                return Err(format!(
                    "`%` in a stream name starts a hex escape (%XX), at byte {i}"
                ));
            }
            i += 3;
            continue;
        }
        if !(c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-')) {
            let ch = name[i..].chars().next().unwrap_or('?');
            return Err(format!(
                "a stream name is made of A-Z a-z 0-9 _ . - and %XX escapes (found {ch:?})"
            ));
        }
        i += 1;
    }
    Ok(())
}

impl Registry {
    pub fn new(streams: Vec<Stream>, deps: Arc<Deps>) -> Registry {
        let mut s = Streams::default();
        for st in streams {
            s.index.insert(st.name().to_string(), s.list.len());
            s.list.push(st);
        }
        Registry {
            inner: std::sync::RwLock::new(s),
            deps,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Streams> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, name: &str) -> Option<Stream> {
        let s = self.read();
        s.index.get(name).map(|&i| s.list[i].clone())
    }

    pub fn all(&self) -> Vec<Stream> {
        self.read().list.clone()
    }

    /// Joins `stream` for a viewer whose output takes the video codecs
    /// `req.video`: the stream itself when its video is one of them (or it
    /// has none), else its shared H.264 transcode ([`Registry::transcoded`]):
    /// an H.265 camera for a browser without an HEVC decoder or an FLV
    /// client, an MJPEG camera for HLS. The stream's codec is learnt from
    /// its first deliveries, cold or warm. Outputs that take no H.264, or
    /// no video, join as they ask.
    pub async fn join_fitting(
        &self,
        stream: &Stream,
        req: JoinRequest,
    ) -> Result<Viewer, StreamError> {
        use crate::media::Codec;
        // Outputs that take MJPEG take every video we carry (RTSP, our own
        // transcoders' reads); those without H.264 cannot use a transcode.
        if !req.video.contains(&Codec::H264) || req.video.contains(&Codec::Jpeg) || req.internal {
            return stream.join(req).await;
        }
        // Joined with what it takes and H.265, never MJPEG: a viewer's
        // codecs decide which producers start, and an FLV viewer must not
        // start a stream's `#video=mjpeg` transcoder.
        let mut viewer = stream
            .join(JoinRequest {
                video: fanout::H264_OR_H265,
                ..req.clone()
            })
            .await?;
        // A running stream's first deliveries are its tracks; video may
        // come a moment after audio (two FLV sequence headers). A video
        // the selector could not pick (an MJPEG camera) shows in what the
        // producers deliver. Bounded, so a stream that says nothing cannot
        // hold the viewer.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        let mut seen = std::collections::VecDeque::new();
        let unpicked = |info: Option<StreamInfo>| -> Option<Codec> {
            info?
                .producers
                .iter()
                .flat_map(|p| p.codecs.iter().copied())
                .find(|c| c.kind() == crate::media::TrackKind::Video && !req.video.contains(c))
        };
        let unfit = loop {
            match tokio::time::timeout_at(deadline, viewer.next()).await {
                Ok(Ok(d)) => {
                    let video = match &d {
                        Delivery::Tracks { video, .. } => video.as_ref().map(|v| v.codec),
                        Delivery::Frame(f) if f.kind() == crate::media::TrackKind::Video => {
                            Some(f.codec)
                        }
                        Delivery::Frame(_) => None,
                    };
                    let tracks_without_video = matches!(&d, Delivery::Tracks { video: None, .. });
                    seen.push_back(d);
                    if let Some(c) = video {
                        break (!req.video.contains(&c)).then_some(c);
                    }
                    if tracks_without_video {
                        if let Some(c) = unpicked(stream.info().await) {
                            break Some(c);
                        }
                    }
                    if seen.len() > 256 {
                        break None; // audio only, it seems
                    }
                }
                Ok(Err(_)) => {
                    return Err(StreamError::NotRunning {
                        stream: stream.name().to_string(),
                    })
                }
                Err(_) => break unpicked(stream.info().await),
            }
        };
        let Some(codec) = unfit else {
            viewer.pending = seen;
            return Ok(viewer);
        };
        tracing::info!(stream = %stream.name(), protocol = req.protocol, codec = ?codec, "viewer cannot take the stream's video: joining the H.264 transcode");
        // The transcode's reader keeps `stream` up from here, so dropping
        // this viewer afterwards does not stop it in between.
        self.transcoded(stream.name(), Codec::H264)?.join(req).await
    }

    /// Every stream, the hidden transcodes too: for shutting down.
    pub fn everything(&self) -> Vec<Stream> {
        let s = self.read();
        let mut v = s.list.clone();
        v.extend(s.derived.values().flatten().cloned());
        v
    }

    /// `name` as a viewer that cannot take its video sees it: a hidden
    /// stream, made on first use and shared by every such viewer, whose one
    /// source is `ffmpeg:NAME#video=h264#audio=copy`. It is an ordinary
    /// stream in every other way: its first viewer starts it, its
    /// transcoder is a viewer of NAME (so NAME runs while it does), and
    /// when its last viewer leaves, both stop (issue 16: a browser without
    /// an H.265 decoder plays an H.265 camera). Its audio is NAME's, as
    /// is, for the output to fit (G.711 becomes FLAC in MP4).
    pub fn transcoded(&self, name: &str, to: crate::media::Codec) -> Result<Stream, StreamError> {
        if self.get(name).is_none() {
            return Err(StreamError::NotFound {
                stream: name.to_string(),
            });
        }
        let label = match to {
            crate::media::Codec::H264 => "h264",
            other => {
                return Err(StreamError::Unsupported {
                    stream: name.to_string(),
                    reason: format!("no transcode to {other:?} is offered"),
                })
            }
        };
        let derived_name = format!("{name}#video={label}");
        let mut s = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = s
            .derived
            .get(name)
            .and_then(|v| v.iter().find(|d| d.name() == derived_name))
        {
            return Ok(d.clone());
        }
        let source = crate::config::transcode_source(name, label, &self.deps.ffmpeg_templates)
            .map_err(|reason| StreamError::Unsupported {
                stream: name.to_string(),
                reason,
            })?;
        let stream = Stream::spawn(
            StreamConfig {
                name: derived_name.clone(),
                sources: vec![source],
            },
            self.deps.clone(),
        );
        tracing::info!(stream = %name, transcode = %derived_name, "on-demand transcode created");
        s.derived
            .entry(name.to_string())
            .or_default()
            .push(stream.clone());
        Ok(stream)
    }

    /// Makes the running streams match `new` (the config after an API
    /// change), given `old` (before it): a stream whose config is the same
    /// keeps its actor, viewers and producers; a changed one gets a fresh
    /// actor; a removed one goes. Streams created by publishers and not in
    /// either stay. Returns the actors replaced or removed: the caller
    /// shuts them down (stopping their producers, ending their viewers).
    pub fn reconcile(&self, old: &[StreamConfig], new: &[StreamConfig]) -> Vec<Stream> {
        let mut s = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let mut gone = Vec::new();
        let mut list = Vec::with_capacity(new.len());
        let mut taken = std::collections::HashSet::new();
        for cfg in new {
            let before = old.iter().find(|o| o.name == cfg.name);
            let running = s.index.get(&cfg.name).map(|&i| s.list[i].clone());
            taken.insert(cfg.name.clone());
            match running {
                Some(r) if before == Some(cfg) => list.push(r),
                r => {
                    if let Some(r) = r {
                        tracing::info!(stream = %cfg.name, "stream replaced");
                        gone.push(r);
                    } else {
                        tracing::info!(stream = %cfg.name, "stream added");
                    }
                    list.push(Stream::spawn(cfg.clone(), self.deps.clone()));
                }
            }
        }
        for st in std::mem::take(&mut s.list) {
            if taken.contains(st.name()) {
                continue;
            }
            if old.iter().any(|o| o.name == st.name()) {
                tracing::info!(stream = %st.name(), "stream removed");
                gone.push(st);
            } else {
                list.push(st); // created by a publisher
            }
        }
        // A transcode of a stream that was replaced or removed goes with
        // it (it would read the new one, but with the old one's settings).
        let transcodes: Vec<Stream> = gone
            .iter()
            .filter_map(|g| s.derived.remove(g.name()))
            .flatten()
            .collect();
        gone.extend(transcodes);
        s.index = list
            .iter()
            .enumerate()
            .map(|(i, st)| (st.name().to_string(), i))
            .collect();
        s.list = list;
        gone
    }

    /// What streams are built with (the spawner and ffmpeg, for
    /// snapshots).
    pub fn deps(&self) -> &Arc<Deps> {
        &self.deps
    }

    pub fn publish_config(&self) -> &crate::config::PublishConfig {
        &self.deps.publish
    }

    /// The stream a publisher asked for: one that exists, or (with
    /// `publish.auto_create`) a new, publish-only one. Auto-created streams
    /// stay, as in go2rtc, so viewers can wait for the next publisher.
    pub fn for_publish(&self, name: &str) -> Result<Stream, StreamError> {
        if let Some(s) = self.get(name) {
            return Ok(s);
        }
        if !self.deps.publish.auto_create {
            return Err(StreamError::NotFound {
                stream: name.to_string(),
            });
        }
        check_name(name).map_err(|reason| StreamError::BadName {
            stream: name.to_string(),
            reason,
        })?;
        let mut s = self.inner.write().unwrap_or_else(|e| e.into_inner());
        // Another publisher may have created it since we looked.
        if let Some(&i) = s.index.get(name) {
            return Ok(s.list[i].clone());
        }
        let stream = Stream::spawn(
            StreamConfig {
                name: name.to_string(),
                sources: Vec::new(),
            },
            self.deps.clone(),
        );
        tracing::info!(
            stream = name,
            "stream created by a publisher (publish.auto_create)"
        );
        let at = s.list.len();
        s.index.insert(name.to_string(), at);
        s.list.push(stream.clone());
        Ok(stream)
    }
}

/// One viewer: its place in the fan-out, and its lease on the stream (the
/// stream stops when the last real lease is gone).
pub struct Viewer {
    selector: Selector,
    /// Deliveries looked at before the viewer's output got them (see
    /// [`Registry::join_fitting`]): they come first.
    pending: std::collections::VecDeque<Delivery>,
    _lease: Lease,
}

impl Viewer {
    pub async fn next(&mut self) -> Result<Delivery, Ended> {
        if let Some(d) = self.pending.pop_front() {
            return Ok(d);
        }
        self.selector.next().await
    }

    pub fn stats(&self) -> &Arc<ViewerStats> {
        self.selector.stats()
    }
}

/// A publisher's hold on a stream: media it publishes goes to the
/// stream's publisher slot, under its own generation. Dropping it (the
/// publisher disconnected) frees the stream at once.
pub struct Publisher {
    fanout: Arc<Fanout>,
    source: SourceId,
    generation: Generation,
    tx: mpsc::UnboundedSender<Msg>,
    /// The slot's counters (for an `exec:… {output}` child, its source
    /// slot's), so that stall and half-open detection and the API see its
    /// media; and the actor's origin they count from.
    stats: Arc<ProducerStats>,
    origin: Instant,
}

impl Publisher {
    /// Publishes one event; false once this publisher no longer owns the
    /// stream (it was stopped, or shut down): the caller should hang up.
    pub fn publish(&self, ev: flv::Event) -> bool {
        if let flv::Event::Frame(f) = &ev {
            self.stats
                .last_frame_ms
                .store(self.origin.elapsed().as_millis() as u64, Ordering::Relaxed);
            self.stats
                .bytes
                .fetch_add(f.payload.len() as u64, Ordering::Relaxed);
        }
        self.fanout.publish(self.source, self.generation, ev)
    }

    /// Whether the stream still takes this publisher: false once it was
    /// taken over, timed out, or the stream stopped.
    pub fn is_current(&self) -> bool {
        self.fanout.owns(self.source, self.generation)
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Unpublish {
            generation: self.generation,
        });
    }
}

struct Lease {
    id: u64,
    /// Counts the viewer in `/api/metrics` until it goes.
    _watching: crate::metrics::Watching,
    tx: mpsc::UnboundedSender<Msg>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Leave { id: self.id });
    }
}

struct Notify(mpsc::UnboundedSender<Msg>);

impl ReadyNotify for Notify {
    fn ready(&self, run: u64) {
        let _ = self.0.send(Msg::Ready { run });
    }
    fn settled(&self, run: u64) {
        let _ = self.0.send(Msg::Settled { run });
    }
}

impl Stream {
    pub fn spawn(cfg: StreamConfig, deps: Arc<Deps>) -> Stream {
        let (tx, rx) = mpsc::unbounded_channel();
        // One slot per configured source, and the last for a publisher.
        let fanout = Arc::new(Fanout::new(
            &cfg.name,
            cfg.sources.len() + 1,
            Some(cfg.sources.len() as SourceId),
            Box::new(Notify(tx.clone())),
        ));
        let max =
            |f: fn(&SourceConfig) -> Duration| cfg.sources.iter().map(f).max().unwrap_or_default();
        // A publish-only stream has no source to take a timeout from.
        let start_timeout = match max(|s| s.timeouts.start_timeout) {
            Duration::ZERO => crate::config::Timeouts::default().start_timeout,
            t => t,
        };
        let stop_bound = max(|s| s.timeouts.kill_timeout)
            + supervisor::REAP_GRACE
            + supervisor::DRAIN
            + Duration::from_secs(1);
        let name: Arc<str> = cfg.name.as_str().into();
        let metrics = fanout.metrics().clone();
        let actor = Actor {
            name: name.clone(),
            metrics: metrics.clone(),
            slots: cfg
                .sources
                .iter()
                .map(|s| Slot {
                    cfg: s.clone(),
                    state: SlotState::Idle,
                    restarts: 0,
                    attempt: 0,
                    last_error: None,
                    tail: Default::default(),
                    stats: Default::default(),
                    started_at: None,
                    token: None,
                    read_token: None,
                    over_rtsp: false,
                })
                .collect(),
            linger: max(|s| s.timeouts.linger),
            start_timeout,
            stop_bound,
            deps,
            fanout,
            tx: tx.clone(),
            phase: Phase::Idle,
            consumers: BTreeMap::new(),
            waiters: Vec::new(),
            next_id: 0,
            next_generation: 0,
            linger_at: None,
            origin: Instant::now(),
            shutdown: Vec::new(),
            run: 0,
            settling: None,
            publisher: None,
            carry_until: None,
            pending_publish: Vec::new(),
            stall_check_at: Instant::now() + STALL_CHECK,
        };
        tokio::spawn(actor.run(rx));
        Stream {
            name,
            tx,
            join_timeout: start_timeout + stop_bound + Duration::from_secs(2),
            metrics,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The stream's numbers for `/api/metrics`: read without asking the
    /// actor, and kept across the stream's runs.
    pub fn metrics(&self) -> &Arc<StreamMetrics> {
        &self.metrics
    }

    /// Joins as a viewer: starts the stream if needed and waits (bounded) for
    /// its first keyframe.
    pub async fn join(&self, req: JoinRequest) -> Result<Viewer, StreamError> {
        let (reply, rx) = oneshot::channel();
        let gone = || StreamError::ShuttingDown {
            stream: self.name.to_string(),
        };
        self.tx
            .send(Msg::Join {
                req: Box::new(req),
                reply,
            })
            .map_err(|_| gone())?;
        match tokio::time::timeout(self.join_timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(gone()),
            Err(_) => Err(StreamError::Timeout {
                stream: self.name.to_string(),
                timeout_ms: self.join_timeout.as_millis() as u64,
            }),
        }
    }

    /// Takes the stream's publisher slot; one publisher at a time. With
    /// `publish.takeover` (the default) a newcomer replaces the current
    /// publisher; without it, the newcomer gets [`StreamError::Busy`] until
    /// the current one leaves or falls silent for `publish.timeout`. While
    /// the last run is being torn down, the newcomer waits for it (bounded).
    pub async fn publish(
        &self,
        protocol: &'static str,
        remote_addr: Option<SocketAddr>,
    ) -> Result<Publisher, StreamError> {
        let (reply, rx) = oneshot::channel();
        let gone = || StreamError::ShuttingDown {
            stream: self.name.to_string(),
        };
        self.tx
            .send(Msg::Publish(Box::new(PendingPublish {
                protocol,
                remote_addr,
                reply,
            })))
            .map_err(|_| gone())?;
        match tokio::time::timeout(self.join_timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(gone()),
            Err(_) => Err(StreamError::Timeout {
                stream: self.name.to_string(),
                timeout_ms: self.join_timeout.as_millis() as u64,
            }),
        }
    }

    /// Lets an `exec:… {output}` child publish into its own source slot;
    /// `token` is the one its command line was given, and is good for that
    /// run only.
    pub async fn publish_into(&self, token: u64) -> Result<Publisher, StreamError> {
        let (reply, rx) = oneshot::channel();
        let gone = || StreamError::ShuttingDown {
            stream: self.name.to_string(),
        };
        self.tx
            .send(Msg::PublishInto { token, reply })
            .map_err(|_| gone())?;
        match tokio::time::timeout(Duration::from_secs(5), rx).await {
            Ok(Ok(r)) => r,
            _ => Err(gone()),
        }
    }

    pub async fn info(&self) -> Option<StreamInfo> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Msg::Info { reply }).ok()?;
        tokio::time::timeout(Duration::from_secs(2), rx)
            .await
            .ok()?
            .ok()
    }

    /// Stops every producer (TERM → deadline → KILL → reap) and ends the
    /// actor. Returns when done, or when the actor is already gone.
    pub async fn shutdown(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Msg::Shutdown { reply }).is_ok() {
            let _ = rx.await;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Starting { deadline: Instant },
    Running,
    Stopping { deadline: Instant },
}

impl Phase {
    /// Its place in [`crate::metrics::STATES`] (and its name in
    /// [`StreamInfo::state`]).
    fn index(&self) -> usize {
        match self {
            Phase::Idle => 0,
            Phase::Starting { .. } => 1,
            Phase::Running => 2,
            Phase::Stopping { .. } => 3,
        }
    }
}

enum SlotState {
    Idle,
    Running {
        generation: Generation,
        stop: CancellationToken,
        since: Instant,
    },
    /// Stop requested; waiting for the producer task to report.
    Stopping {
        generation: Generation,
    },
    Backoff {
        until: Instant,
    },
}

#[derive(Default)]
struct ProducerStats {
    pid: AtomicU32,
    bytes: AtomicU64,
    /// Milliseconds since the actor's origin at the last frame.
    last_frame_ms: AtomicU64,
}

struct Slot {
    cfg: SourceConfig,
    state: SlotState,
    restarts: u32,
    attempt: u32,
    last_error: Option<String>,
    tail: Arc<StderrTail>,
    stats: Arc<ProducerStats>,
    started_at: Option<SystemTime>,
    /// The `{output}` token of the current run (see `Stream::publish_into`).
    token: Option<u64>,
    /// The current run's internal-reader token, for `ffmpeg:STREAM`.
    read_token: Option<TokenGuard>,
    /// This source sends a codec FLV cannot hold (H.265, Opus, G.711 at
    /// 16 kHz: ffmpeg 5.1 refuses them in FLV), learnt from a run that
    /// failed on it: from then on it publishes back over RTSP. Kept for
    /// the life of the stream, so only a source's first start pays for
    /// the discovery, and FLV stays the path wherever it works.
    over_rtsp: bool,
}

struct Consumer {
    /// What it wants: video, and the audio codecs it takes; for starting
    /// only the producers someone needs.
    wants: (
        &'static [crate::media::Codec],
        &'static [crate::media::Codec],
    ),
    protocol: &'static str,
    remote_addr: Option<SocketAddr>,
    internal: bool,
    stats: Arc<ViewerStats>,
}

struct PublisherState {
    generation: Generation,
    protocol: &'static str,
    remote_addr: Option<SocketAddr>,
    since: SystemTime,
    stats: Arc<ProducerStats>,
}

impl PublisherState {
    fn describe(&self) -> String {
        match self.remote_addr {
            Some(a) => format!("{} from {a}", self.protocol),
            None => self.protocol.to_string(),
        }
    }
}

/// A publisher that asked while the last run was still being torn down.
struct PendingPublish {
    protocol: &'static str,
    remote_addr: Option<SocketAddr>,
    reply: oneshot::Sender<Result<Publisher, StreamError>>,
}

struct Waiter {
    req: JoinRequest,
    reply: oneshot::Sender<Result<Viewer, StreamError>>,
}

struct Actor {
    name: Arc<str>,
    /// The fan-out's, shared with the [`Stream`] handles.
    metrics: Arc<StreamMetrics>,
    slots: Vec<Slot>,
    linger: Duration,
    start_timeout: Duration,
    stop_bound: Duration,
    deps: Arc<Deps>,
    fanout: Arc<Fanout>,
    tx: mpsc::UnboundedSender<Msg>,
    phase: Phase,
    consumers: BTreeMap<u64, Consumer>,
    waiters: Vec<Waiter>,
    next_id: u64,
    next_generation: u64,
    linger_at: Option<Instant>,
    origin: Instant,
    shutdown: Vec<oneshot::Sender<()>>,
    /// Mirrors the fan-out's reset count (see [`ReadyNotify`]).
    run: u64,
    /// Who holds the publisher slot. While someone does, the stream stays
    /// up whatever its viewers do.
    publisher: Option<PublisherState>,
    /// A publish-only stream whose publisher left while viewers watched:
    /// they stay attached until then for the next publisher, and get a
    /// clean end of stream if none comes.
    carry_until: Option<Instant>,
    /// Publishers waiting for the last run's teardown to finish.
    pending_publish: Vec<PendingPublish>,
    /// Running, but real viewers wait until every source has said what it
    /// carries, or until this deadline. Internal readers do not wait: the
    /// source that is slow to say is often one of them (a transcoder).
    settling: Option<Instant>,
    /// When running producers are next checked for a stall.
    stall_check_at: Instant,
}

/// See [`Actor::demand`].
#[derive(Debug, Default)]
struct Demand {
    video: Vec<crate::media::Codec>,
    audio: Vec<crate::media::Codec>,
}

/// How long real viewers wait for every source to announce its tracks
/// after the first keyframe. `[camera with PCMA, "ffmpeg:cam#audio=aac"]`
/// would otherwise hand its first viewer G.711 and switch it to AAC a
/// moment later, which players handle badly.
pub const SETTLE_GRACE: Duration = Duration::from_secs(3);

/// Restart delay: 0.5 s doubling to 30 s, ±20 % jitter so that cameras on
/// one flaky switch do not all reconnect in the same instant.
fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(500)
        .saturating_mul(1 << attempt.min(6))
        .min(BACKOFF_CAP);
    base.mul_f64(rand::rng().random_range(0.8..1.2))
}

const STALL_CHECK: Duration = Duration::from_millis(500);
/// Uptime after which a producer's restart backoff starts again at 0.5 s.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(60);
/// The longest wait between restarts of a failing producer.
const BACKOFF_CAP: Duration = Duration::from_secs(30);

impl Actor {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        loop {
            let deadline = self.next_deadline();
            let msg = tokio::select! {
                m = rx.recv() => m,
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))) => {
                    self.on_timer();
                    self.metrics.set_state(self.phase.index());
                    continue;
                }
            };
            let Some(msg) = msg else { break };
            self.handle(msg);
            self.metrics.set_state(self.phase.index());
            if !self.shutdown.is_empty() && self.phase == Phase::Idle {
                for r in self.shutdown.drain(..) {
                    let _ = r.send(());
                }
                break;
            }
        }
        tracing::debug!(stream = %self.name, "stream actor ended");
    }

    /// Every configured source is one we cannot run (see
    /// [`crate::config::SourceKind::Unsupported`]).
    fn all_unsupported(&self) -> bool {
        !self.slots.is_empty()
            && self
                .slots
                .iter()
                .all(|s| s.cfg.kind.unsupported().is_some())
    }

    fn real_viewers(&self) -> usize {
        self.consumers.values().filter(|c| !c.internal).count()
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut d: Option<Instant> = None;
        let mut add = |t: Instant| d = Some(d.map_or(t, |x| x.min(t)));
        match self.phase {
            Phase::Starting { deadline } | Phase::Stopping { deadline } => add(deadline),
            _ => {}
        }
        for t in [self.linger_at, self.settling, self.carry_until]
            .into_iter()
            .flatten()
        {
            add(t);
        }
        if let Some(p) = &self.publisher {
            add(self.publisher_silent_at(p));
        }
        if matches!(self.phase, Phase::Starting { .. } | Phase::Running) {
            for s in &self.slots {
                match s.state {
                    SlotState::Backoff { until } => add(until),
                    // Absolute, not "now + interval": a stream busy with
                    // messages (API polls, joins) must not starve it.
                    SlotState::Running { .. } if self.phase == Phase::Running => {
                        add(self.stall_check_at)
                    }
                    _ => {}
                }
            }
        }
        d
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Join { req, reply } => self.on_join(*req, reply),
            Msg::Leave { id } => {
                if let Some(c) = self.consumers.remove(&id) {
                    tracing::info!(
                        stream = %self.name,
                        viewer = id,
                        protocol = c.protocol,
                        bytes = c.stats.bytes.load(Ordering::Relaxed),
                        drops = c.stats.drops.load(Ordering::Relaxed),
                        "viewer left"
                    );
                    self.maybe_linger();
                }
            }
            // A notice from a run that has since been reset is stale.
            Msg::Ready { run } if run == self.run => self.on_ready(),
            Msg::Settled { run } if run == self.run && self.settling.is_some() => self.on_settled(),
            Msg::Ready { .. } | Msg::Settled { .. } => {}
            Msg::ProducerEnded {
                index,
                generation,
                outcome,
            } => self.on_producer_ended(index, generation, *outcome),
            Msg::Info { reply } => {
                let _ = reply.send(self.info());
            }
            Msg::Publish(p) => {
                if matches!(self.phase, Phase::Stopping { .. }) && self.shutdown.is_empty() {
                    // The last run is still being torn down; its slots are
                    // not free yet (the SRS lesson: never publishable
                    // mid-teardown). The publisher waits for the stop,
                    // which has a deadline of its own.
                    self.pending_publish.push(*p);
                } else {
                    let r = self.on_publish(p.protocol, p.remote_addr);
                    let _ = p.reply.send(r);
                }
            }
            Msg::Unpublish { generation } => self.on_unpublish(generation),
            Msg::PublishInto { token, reply } => {
                let found = self
                    .slots
                    .iter()
                    .enumerate()
                    .find_map(|(i, s)| match s.state {
                        SlotState::Running { generation, .. } if s.token == Some(token) => {
                            Some((i, generation, s.stats.clone()))
                        }
                        _ => None,
                    });
                let r = match found {
                    Some((i, generation, stats)) => Ok(Publisher {
                        fanout: self.fanout.clone(),
                        source: i as SourceId,
                        generation,
                        tx: self.tx.clone(),
                        stats,
                        origin: self.origin,
                    }),
                    None => Err(StreamError::NotRunning {
                        stream: self.name.to_string(),
                    }),
                };
                let _ = reply.send(r);
            }
            Msg::Shutdown { reply } => {
                self.shutdown.push(reply);
                for p in self.pending_publish.drain(..) {
                    let _ = p.reply.send(Err(StreamError::ShuttingDown {
                        stream: self.name.to_string(),
                    }));
                }
                for w in self.waiters.drain(..) {
                    let _ = w.reply.send(Err(StreamError::ShuttingDown {
                        stream: self.name.to_string(),
                    }));
                }
                self.linger_at = None;
                if !matches!(self.phase, Phase::Idle | Phase::Stopping { .. }) {
                    self.stop_all("shutdown");
                }
            }
        }
    }

    fn on_join(&mut self, req: JoinRequest, reply: oneshot::Sender<Result<Viewer, StreamError>>) {
        let stream = self.name.to_string();
        if !self.shutdown.is_empty() {
            let _ = reply.send(Err(StreamError::ShuttingDown { stream }));
            return;
        }
        match self.phase {
            Phase::Running if self.settling.is_some() && !req.internal => {
                self.waiters.push(Waiter { req, reply });
            }
            Phase::Running => {
                let v = self.subscribe(&req);
                let _ = reply.send(Ok(v));
            }
            Phase::Idle | Phase::Stopping { .. } if req.internal => {
                // Internal readers follow a stream; they never start one.
                let _ = reply.send(Err(StreamError::NotRunning { stream }));
            }
            Phase::Idle if self.slots.is_empty() => {
                let _ = reply.send(Err(StreamError::NoSource { stream }));
            }
            Phase::Idle if self.all_unsupported() => {
                let reason = self.slots[0].cfg.kind.unsupported().unwrap_or_default();
                let _ = reply.send(Err(StreamError::UnsupportedSource {
                    stream,
                    reason: reason.to_string(),
                }));
            }
            Phase::Idle => {
                self.waiters.push(Waiter { req, reply });
                self.start_all();
            }
            Phase::Starting { .. } | Phase::Stopping { .. } => {
                self.waiters.push(Waiter { req, reply })
            }
        }
        // A running stream may now need a producer it left idle.
        if matches!(self.phase, Phase::Starting { .. } | Phase::Running) {
            self.start_needed();
        }
        if self.real_viewers() > 0 || self.waiters.iter().any(|w| !w.req.internal) {
            self.linger_at = None;
        }
    }

    fn subscribe(&mut self, req: &JoinRequest) -> Viewer {
        let id = self.next_id;
        self.next_id += 1;
        let output = self.metrics.output(if req.internal {
            crate::metrics::INTERNAL
        } else {
            req.protocol
        });
        let stats = Arc::new(ViewerStats::counted(&self.metrics, &output));
        self.consumers.insert(
            id,
            Consumer {
                wants: (req.video, req.audio),
                protocol: req.protocol,
                remote_addr: req.remote_addr,
                internal: req.internal,
                stats: stats.clone(),
            },
        );
        tracing::info!(stream = %self.name, viewer = id, protocol = req.protocol, remote = ?req.remote_addr, internal = req.internal, "viewer joined");
        Viewer {
            pending: Default::default(),
            selector: Selector::new(self.fanout.subscribe(), req.exclude, req.audio, stats)
                .with_video(req.video),
            _lease: Lease {
                id,
                _watching: crate::metrics::Watching::new(output),
                tx: self.tx.clone(),
            },
        }
    }

    fn on_publish(
        &mut self,
        protocol: &'static str,
        remote_addr: Option<SocketAddr>,
    ) -> Result<Publisher, StreamError> {
        let stream = self.name.to_string();
        if !self.shutdown.is_empty() {
            return Err(StreamError::ShuttingDown { stream });
        }
        // A publisher on the LAN must not replace what a camera shows: a
        // stream with configured sources takes one only when the config
        // says so (`publish.replace_sources`).
        if !self.slots.is_empty() && !self.deps.publish.may_replace(&self.name) {
            tracing::warn!(stream = %self.name, protocol, remote = ?remote_addr, "publisher refused: the stream has configured sources");
            return Err(StreamError::Forbidden {
                stream,
                reason: "has configured sources, which a publisher may not replace \
                         (set publish.replace_sources to allow it)"
                    .into(),
            });
        }
        if let Some(p) = &self.publisher {
            if self.deps.publish.takeover {
                tracing::info!(stream = %self.name, old = %p.describe(), protocol, remote = ?remote_addr, "publisher taken over");
                self.release_publisher("taken over by a new publisher");
            } else {
                return Err(StreamError::Busy {
                    stream,
                    by: format!("{}; publish.takeover is off", p.describe()),
                });
            }
        }
        debug_assert!(!matches!(self.phase, Phase::Stopping { .. }));
        self.next_generation += 1;
        let generation = Generation(self.next_generation);
        let source = self.slots.len() as SourceId;
        self.fanout.attach(source, generation);
        let stats = Arc::new(ProducerStats::default());
        // Silence is counted from the attach: a publisher that never sends
        // a frame is released like one that stopped sending.
        stats
            .last_frame_ms
            .store(self.origin.elapsed().as_millis() as u64, Ordering::Relaxed);
        self.publisher = Some(PublisherState {
            generation,
            protocol,
            remote_addr,
            since: SystemTime::now(),
            stats: stats.clone(),
        });
        self.metrics.producer_up(self.slots.len());
        self.linger_at = None;
        self.carry_until = None;
        if self.phase == Phase::Idle {
            self.phase = Phase::Starting {
                deadline: Instant::now() + self.start_timeout,
            };
        }
        tracing::info!(stream = %self.name, protocol, remote = ?remote_addr, generation = generation.0, "publisher attached");
        Ok(Publisher {
            fanout: self.fanout.clone(),
            source,
            generation,
            tx: self.tx.clone(),
            stats,
            origin: self.origin,
        })
    }

    /// A publisher hung up (its [`Publisher`] was dropped). Only the
    /// current attachment can release the slot: a late detach from one
    /// that was taken over or timed out is a no-op.
    fn on_unpublish(&mut self, generation: Generation) {
        if self
            .publisher
            .as_ref()
            .is_none_or(|p| p.generation != generation)
        {
            tracing::debug!(stream = %self.name, generation = generation.0, "stale publisher detach ignored");
            return;
        }
        self.release_publisher("disconnected");
        self.after_publisher_left();
    }

    /// When the current publisher falls silent.
    fn publisher_silent_at(&self, p: &PublisherState) -> Instant {
        self.origin
            + Duration::from_millis(p.stats.last_frame_ms.load(Ordering::Relaxed))
            + self.deps.publish.timeout
    }

    /// Frees the publisher slot: the attachment's generation is detached,
    /// so its connection's next publish fails and it hangs up.
    fn release_publisher(&mut self, why: &str) {
        let Some(p) = self.publisher.take() else {
            return;
        };
        self.metrics.producer_down(self.slots.len());
        self.fanout
            .detach(self.slots.len() as SourceId, p.generation);
        tracing::info!(stream = %self.name, publisher = %p.describe(), generation = p.generation.0, reason = why, "publisher left");
    }

    /// What the stream does without its publisher: sources carry on (if
    /// anyone watches); a publish-only stream keeps its viewers for
    /// `publish.timeout`, waiting for the next publisher.
    fn after_publisher_left(&mut self) {
        if !self.slots.is_empty() {
            self.maybe_linger();
            return;
        }
        if matches!(self.phase, Phase::Idle | Phase::Stopping { .. }) {
            return;
        }
        let watched = self.real_viewers() > 0 || self.waiters.iter().any(|w| !w.req.internal);
        if watched {
            // Viewers (or viewers still waiting for a first keyframe) wait
            // for the next publisher.
            tracing::info!(stream = %self.name, timeout_ms = self.deps.publish.timeout.as_millis() as u64, "viewers wait for a new publisher");
            self.carry_until = Some(Instant::now() + self.deps.publish.timeout);
        } else {
            // Nothing else feeds the stream and nobody watches: free it at
            // once, so the next publisher starts afresh.
            self.stop_all("publisher left");
        }
    }

    fn maybe_linger(&mut self) {
        if self.publisher.is_some() {
            return; // a publisher keeps its stream up
        }
        if self.carry_until.is_some()
            && self.real_viewers() == 0
            && !self.waiters.iter().any(|w| !w.req.internal)
        {
            // Nobody left to carry over to the next publisher.
            self.carry_until = None;
            self.stop_all("publisher left; no viewers");
            return;
        }
        let wanted = self.real_viewers() > 0 || self.waiters.iter().any(|w| !w.req.internal);
        if !wanted
            && matches!(self.phase, Phase::Running | Phase::Starting { .. })
            && self.linger_at.is_none()
        {
            tracing::debug!(stream = %self.name, linger_ms = self.linger.as_millis() as u64, "last viewer left");
            self.linger_at = Some(Instant::now() + self.linger);
        }
    }

    /// What real viewers (and those waiting) want: video, and every audio
    /// codec any of them takes.
    fn demand(&self) -> Demand {
        let wants = self
            .consumers
            .values()
            .filter(|c| !c.internal)
            .map(|c| c.wants)
            .chain(
                self.waiters
                    .iter()
                    .filter(|w| !w.req.internal)
                    .map(|w| (w.req.video, w.req.audio)),
            );
        let mut d = Demand::default();
        for (video, audio) in wants {
            for (k, (have, want)) in [(&mut d.video, video), (&mut d.audio, audio)]
                .into_iter()
                .enumerate()
            {
                for (rank, c) in want.iter().enumerate() {
                    // MJPEG is a last resort of plain RTSP viewers (an MJPEG
                    // camera plays to them): it starts a `#video=mjpeg`
                    // transcoder only for a viewer that wants it first
                    // (`stream.mjpeg`, `?video=mjpeg`). Home Assistant
                    // registers one beside every camera.
                    if k == 0 && *c == crate::media::Codec::Jpeg && rank > 0 {
                        continue;
                    }
                    if !have.contains(c) {
                        have.push(*c);
                    }
                }
            }
        }
        d
    }

    /// Whether slot `i` can deliver something someone wants: video, or
    /// audio in a codec someone takes (an Opus transcoder is not started
    /// for FLV viewers). With nothing wanted yet (only internal readers),
    /// every source is.
    fn needed(&self, i: usize, demand: &Demand) -> bool {
        let kind = &self.slots[i].cfg.kind;
        if demand.video.is_empty() && demand.audio.is_empty() {
            return true;
        }
        let (pv, pa) = kind.provides();
        let takes = |codec: Option<crate::media::Codec>, wanted: &[crate::media::Codec]| match codec
        {
            Some(c) => wanted.contains(&c),
            None => !wanted.is_empty(),
        };
        (pv && takes(kind.video_codec(), &demand.video))
            || (pa && takes(kind.audio_codec(), &demand.audio))
    }

    fn start_all(&mut self) {
        tracing::info!(stream = %self.name, sources = self.slots.len(), "starting stream");
        self.phase = Phase::Starting {
            deadline: Instant::now() + self.start_timeout,
        };
        for s in &mut self.slots {
            s.attempt = 0;
            s.last_error = None;
            s.tail.clear();
        }
        self.start_needed();
    }

    /// Starts the idle producers that some viewer needs: an RTSP viewer
    /// asking `?video` does not start an audio-only transcoder.
    fn start_needed(&mut self) {
        let demand = self.demand();
        // A source we cannot run is listed, never started.
        let runnable = |i: &usize| self.slots[*i].cfg.kind.unsupported().is_none();
        let mut wanted: Vec<usize> = (0..self.slots.len())
            .filter(runnable)
            .filter(|&i| self.needed(i, &demand))
            .collect();
        if wanted.is_empty() {
            // Nothing provides what is asked: start everything we can, and
            // let the start deadline say so if it stays that way.
            wanted = (0..self.slots.len()).filter(runnable).collect();
        }
        for i in wanted {
            if matches!(self.slots[i].state, SlotState::Idle) {
                self.start_slot(i);
            }
        }
    }

    fn start_slot(&mut self, index: usize) {
        self.next_generation += 1;
        let generation = Generation(self.next_generation);
        let name = self.name.to_string();
        let slot = &mut self.slots[index];
        // A fresh token per run: only this run's child may publish into
        // this slot (see `Stream::publish_into`).
        let publishes_back = slot.cfg.kind.publishes_back() || slot.over_rtsp;
        slot.token = publishes_back.then(rand::random::<u64>);
        let publish_url = match (&self.deps.rtsp_base, slot.token) {
            (Some(base), Some(token)) => {
                let path = percent_encoding::utf8_percent_encode(
                    &name,
                    percent_encoding::NON_ALPHANUMERIC,
                );
                Some(format!("{base}/{path}?publish_token={token:016x}"))
            }
            _ => None,
        };
        // Likewise a fresh read token per run for `ffmpeg:STREAM`: the old
        // run's (if any) is revoked as its guard drops here.
        slot.read_token = match &slot.cfg.kind {
            crate::config::SourceKind::Ffmpeg {
                input: crate::config::FfmpegInput::Stream(other),
                ..
            } => Some(self.deps.internal_tokens.issue(&name, other)),
            _ => None,
        };
        let env = crate::source::Env {
            ffmpeg_bin: &self.deps.ffmpeg_bin,
            internal_base: self.deps.internal_base.as_deref(),
            internal_rtsp: self.deps.rtsp_base.as_deref(),
            internal_token: slot.read_token.as_ref().map(TokenGuard::token),
            stream: &name,
            index,
            publish_url: publish_url.as_deref(),
            over_rtsp: slot.over_rtsp,
        };
        let cmd = match crate::source::command(&slot.cfg, &env) {
            Ok(c) => c,
            Err(e) => {
                // A config that cannot run: report it like a failed spawn.
                let _ = self.tx.send(Msg::ProducerEnded {
                    index,
                    generation,
                    outcome: Box::new(Outcome::SpawnFailed(e.to_string())),
                });
                slot.state = SlotState::Running {
                    generation,
                    stop: CancellationToken::new(),
                    since: Instant::now(),
                };
                return;
            }
        };
        let stop = CancellationToken::new();
        slot.state = SlotState::Running {
            generation,
            stop: stop.clone(),
            since: Instant::now(),
        };
        slot.started_at = Some(SystemTime::now());
        slot.stats
            .last_frame_ms
            .store(self.origin.elapsed().as_millis() as u64, Ordering::Relaxed);
        self.fanout.attach(index as SourceId, generation);
        let task = ProducerTask {
            stream: name,
            index,
            generation,
            cmd,
            kill_timeout: slot.cfg.timeouts.kill_timeout,
            spawner: self.deps.spawner.clone(),
            fanout: self.fanout.clone(),
            stats: slot.stats.clone(),
            tail: slot.tail.clone(),
            stop,
            tx: self.tx.clone(),
            origin: self.origin,
            metrics: self.metrics.clone(),
            publishes_back,
            mjpeg: slot.cfg.kind.outputs_mjpeg(),
        };
        tokio::spawn(task.run());
    }

    fn on_ready(&mut self) {
        if !matches!(self.phase, Phase::Starting { .. }) {
            return;
        }
        tracing::info!(stream = %self.name, "stream running");
        self.phase = Phase::Running;
        self.settling = Some(Instant::now() + SETTLE_GRACE);
        // Internal readers now; real viewers once the sources have settled
        // (for a single source that is the very next message).
        let (internal, real) = std::mem::take(&mut self.waiters)
            .into_iter()
            .partition(|w| w.req.internal);
        self.waiters = real;
        self.admit(internal);
    }

    fn on_settled(&mut self) {
        self.settling = None;
        let waiters = std::mem::take(&mut self.waiters);
        self.admit(waiters);
    }

    fn admit(&mut self, waiters: Vec<Waiter>) {
        for w in waiters {
            let v = self.subscribe(&w.req);
            // A waiter that gave up drops its Viewer here, which sends Leave.
            let _ = w.reply.send(Ok(v));
        }
        self.maybe_linger();
    }

    fn on_producer_ended(&mut self, index: usize, generation: Generation, outcome: Outcome) {
        let Some(slot) = self.slots.get_mut(index) else {
            return;
        };
        let current = match slot.state {
            SlotState::Running { generation: g, .. } | SlotState::Stopping { generation: g } => {
                g == generation
            }
            _ => false,
        };
        if !current {
            tracing::debug!(stream = %self.name, source = index, ?generation, "stale producer report ignored");
            return;
        }
        self.fanout.detach(index as SourceId, generation);
        // The run is over: its reader token goes with it.
        slot.read_token = None;
        slot.stats.pid.store(0, Ordering::Relaxed);
        self.metrics.producer_down(index);
        // A stop we asked for is no error (a stall recorded its own reason
        // when it asked), unless the child would not even die.
        let deliberate = matches!(slot.state, SlotState::Stopping { .. });
        match &outcome {
            Outcome::SpawnFailed(e) => slot.last_error = Some(clean(&format!("spawn failed: {e}"))),
            Outcome::Ended(r) if deliberate && r.ended_by != EndedBy::Abandoned => {}
            Outcome::Ended(r) => slot.last_error = Some(describe_end(r, &slot.tail)),
        }
        // A producer that ran a good while before it died starts its
        // backoff afresh: yesterday's crashes say nothing about today's.
        if matches!(&outcome, Outcome::Ended(r) if r.uptime >= BACKOFF_RESET_AFTER) {
            slot.attempt = 0;
        }
        // ffmpeg 5.1 refuses at its header what FLV cannot hold ("Video
        // codec hevc not compatible with flv", "FLV does not support sample
        // rate 48000"): that is no failure of the camera, so the source
        // moves to the RTSP publish-back at once, with no backoff.
        let refused_by_flv =
            !deliberate
                && !slot.over_rtsp
                && !slot.cfg.kind.publishes_back()
                && matches!(&outcome, Outcome::Ended(_))
                && slot.tail.lines().iter().any(|l| {
                    l.contains("compatible with flv") || l.contains("FLV does not support")
                });
        let flv_refused = refused_by_flv && self.deps.rtsp_base.is_some();
        if refused_by_flv && !flv_refused {
            // Say what would fix it, rather than restart forever in silence.
            let why = slot.last_error.take().unwrap_or_default();
            slot.last_error = Some(format!(
                "{why} (this source sends a codec FLV cannot carry; it needs the RTSP \
                 publish-back, and rtsp.listen is off)"
            ));
        }
        if flv_refused {
            slot.over_rtsp = true;
            slot.last_error = None;
            tracing::info!(
                stream = %self.name,
                source = index,
                "source sends a codec FLV cannot carry; it publishes back over RTSP from now on"
            );
        }
        match self.phase {
            Phase::Starting { .. } | Phase::Running if self.shutdown.is_empty() => {
                if flv_refused {
                    slot.state = SlotState::Backoff {
                        until: Instant::now(),
                    };
                    return;
                }
                let delay = backoff(slot.attempt);
                slot.attempt = slot.attempt.saturating_add(1);
                slot.restarts += 1;
                self.metrics.restarted(index);
                tracing::warn!(
                    stream = %self.name,
                    source = index,
                    error = slot.last_error.as_deref().unwrap_or(""),
                    retry_ms = delay.as_millis() as u64,
                    "producer ended while viewers remain; restarting"
                );
                slot.state = SlotState::Backoff {
                    until: Instant::now() + delay,
                };
            }
            _ => {
                slot.state = SlotState::Idle;
                self.maybe_finish_stop();
            }
        }
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        match self.phase {
            Phase::Starting { deadline } if now >= deadline => {
                let err = StreamError::StartFailed {
                    stream: self.name.to_string(),
                    timeout_ms: self.start_timeout.as_millis() as u64,
                    sources: self
                        .slots
                        .iter()
                        .map(|s| SourceFailure {
                            // An error body, not the stream's listing:
                            // no password in it.
                            url: redact(&s.cfg.url),
                            last_error: s.last_error.clone(),
                            stderr_tail: s.tail.lines(),
                        })
                        .collect(),
                };
                tracing::warn!(stream = %self.name, "{err}");
                for w in self.waiters.drain(..) {
                    let _ = w.reply.send(Err(err.clone()));
                }
                if self.publisher.is_some() {
                    // A publisher that has sent nothing decodable yet keeps
                    // its hold; later viewers get the same bounded wait.
                    self.phase = Phase::Starting {
                        deadline: now + self.start_timeout,
                    };
                } else {
                    self.stop_all("start timeout");
                }
                return;
            }
            Phase::Running if self.settling.is_some_and(|t| now >= t) => {
                tracing::debug!(stream = %self.name, "not every source announced its tracks in time; admitting viewers");
                self.on_settled();
            }
            Phase::Running | Phase::Starting { .. }
                if self.carry_until.is_some_and(|t| now >= t) =>
            {
                self.carry_until = None;
                if self.publisher.is_none() && self.slots.is_empty() {
                    tracing::info!(stream = %self.name, "no publisher came back in time; ending the stream for its viewers");
                    self.stop_all("publisher did not come back");
                    return;
                }
            }
            Phase::Stopping { deadline } if now >= deadline => {
                for (i, s) in self.slots.iter_mut().enumerate() {
                    if !matches!(s.state, SlotState::Idle) {
                        tracing::error!(stream = %self.name, source = i, pid = s.stats.pid.load(Ordering::Relaxed), "producer did not report in time; abandoned");
                        s.state = SlotState::Idle;
                        s.read_token = None;
                        self.metrics.producer_down(i);
                    }
                }
                self.maybe_finish_stop();
                return;
            }
            _ => {}
        }
        if let Some(p) = &self.publisher {
            if now >= self.publisher_silent_at(p) {
                let why = format!(
                    "half-open: no media for {} ms",
                    self.deps.publish.timeout.as_millis()
                );
                tracing::warn!(stream = %self.name, publisher = %p.describe(), "{why}; releasing it");
                self.release_publisher(&why);
                self.after_publisher_left();
                if !matches!(self.phase, Phase::Starting { .. } | Phase::Running) {
                    return;
                }
            }
        }
        if let Some(t) = self.linger_at {
            if now >= t {
                self.linger_at = None;
                if self.real_viewers() == 0
                    && !self.waiters.iter().any(|w| !w.req.internal)
                    && self.publisher.is_none()
                {
                    self.stop_all("no viewers");
                    return;
                }
            }
        }
        if !matches!(self.phase, Phase::Starting { .. } | Phase::Running) {
            return;
        }
        let now_ms = self.origin.elapsed().as_millis() as u64;
        let check_stalls = now >= self.stall_check_at;
        if check_stalls {
            self.stall_check_at = now + STALL_CHECK;
        }
        for i in 0..self.slots.len() {
            let s = &self.slots[i];
            match &s.state {
                SlotState::Backoff { until } if now >= *until => self.start_slot(i),
                SlotState::Running {
                    generation,
                    stop,
                    since,
                } if self.phase == Phase::Running && check_stalls => {
                    let stall = s.cfg.timeouts.stall_timeout;
                    let idle_ms =
                        now_ms.saturating_sub(s.stats.last_frame_ms.load(Ordering::Relaxed));
                    if now.duration_since(*since) >= stall && idle_ms >= stall.as_millis() as u64 {
                        let msg = format!("stalled: no frame for {idle_ms} ms");
                        tracing::warn!(stream = %self.name, source = i, pid = s.stats.pid.load(Ordering::Relaxed), "{msg}; restarting");
                        stop.cancel();
                        let generation = *generation;
                        self.slots[i].last_error = Some(msg);
                        self.slots[i].state = SlotState::Stopping { generation };
                    }
                }
                _ => {}
            }
        }
    }

    /// Stops every producer at once, under one shared deadline.
    fn stop_all(&mut self, why: &str) {
        tracing::info!(stream = %self.name, reason = why, "stopping stream");
        self.linger_at = None;
        self.settling = None;
        self.carry_until = None;
        self.phase = Phase::Stopping {
            deadline: Instant::now() + self.stop_bound,
        };
        for s in &mut self.slots {
            s.state = match std::mem::replace(&mut s.state, SlotState::Idle) {
                SlotState::Running {
                    generation, stop, ..
                } => {
                    stop.cancel();
                    SlotState::Stopping { generation }
                }
                SlotState::Stopping { generation } => SlotState::Stopping { generation },
                SlotState::Idle | SlotState::Backoff { .. } => SlotState::Idle,
            };
        }
        self.maybe_finish_stop();
    }

    fn maybe_finish_stop(&mut self) {
        if !matches!(self.phase, Phase::Stopping { .. })
            || !self
                .slots
                .iter()
                .all(|s| matches!(s.state, SlotState::Idle))
        {
            return;
        }
        self.fanout.reset();
        self.run += 1;
        // A reset fan-out no longer knows the publisher's generation.
        self.publisher = None;
        self.metrics.producer_down(self.slots.len());
        self.phase = Phase::Idle;
        tracing::info!(stream = %self.name, "stream stopped");
        // Publishers that came during the stop go first: each is attached
        // in turn (with takeover, the last one wins; without, the first).
        for p in std::mem::take(&mut self.pending_publish) {
            let r = self.on_publish(p.protocol, p.remote_addr);
            if let Err(Ok(publisher)) = p.reply.send(r) {
                // It gave up waiting: let it go at once.
                drop(publisher);
                self.release_publisher("gave up waiting");
            }
        }
        if self.publisher.is_some() {
            if !self.slots.is_empty() && self.waiters.iter().any(|w| !w.req.internal) {
                // Viewers waiting too: start the sources as well.
                self.start_all();
            }
            return;
        }
        if self.shutdown.is_empty()
            && !self.slots.is_empty()
            && self.waiters.iter().any(|w| !w.req.internal)
        {
            // Viewers arrived during the stop: start afresh.
            self.start_all();
        } else if self.slots.is_empty() {
            // Publish-only, and the publisher is gone.
            for w in self.waiters.drain(..) {
                let _ = w.reply.send(Err(StreamError::NoSource {
                    stream: self.name.to_string(),
                }));
            }
        } else {
            for w in self.waiters.drain(..) {
                let _ = w.reply.send(Err(StreamError::NotRunning {
                    stream: self.name.to_string(),
                }));
            }
        }
    }

    fn info(&self) -> StreamInfo {
        let unsupported = self.phase == Phase::Idle && self.all_unsupported();
        StreamInfo {
            state: if unsupported {
                "unsupported"
            } else {
                crate::metrics::STATES[self.phase.index()]
            },
            reason: unsupported
                .then(|| self.slots[0].cfg.kind.unsupported().map(str::to_string))
                .flatten(),
            producers: self
                .slots
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let unsupported = s.cfg.kind.unsupported();
                    let state = match s.state {
                        SlotState::Idle if unsupported.is_some() => "unsupported",
                        SlotState::Idle => "idle",
                        SlotState::Running { .. } if self.phase == Phase::Running => "running",
                        SlotState::Running { .. } => "starting",
                        SlotState::Stopping { .. } => "stopping",
                        SlotState::Backoff { .. } => "backoff",
                    };
                    let pid = s.stats.pid.load(Ordering::Relaxed);
                    let live = !matches!(s.state, SlotState::Idle);
                    ProducerInfo {
                        url: s.cfg.url.clone(),
                        state,
                        pid: (pid != 0).then_some(pid),
                        started_at: s
                            .started_at
                            .filter(|_| live)
                            .map(|t| humantime::format_rfc3339_millis(t).to_string()),
                        restarts: s.restarts,
                        last_error: s
                            .last_error
                            .clone()
                            .or_else(|| unsupported.map(str::to_string)),
                        stderr_tail: s.tail.lines(),
                        bytes: s.stats.bytes.load(Ordering::Relaxed),
                        codecs: self.fanout.codecs(i as SourceId),
                        next_retry_at: match s.state {
                            SlotState::Backoff { until } => {
                                let at = SystemTime::now()
                                    + until.saturating_duration_since(Instant::now());
                                Some(humantime::format_rfc3339_millis(at).to_string())
                            }
                            _ => None,
                        },
                    }
                })
                .chain(self.publisher.as_ref().map(|p| ProducerInfo {
                    url: format!(
                        "{}://{} (publisher)",
                        p.protocol,
                        p.remote_addr.map(|a| a.to_string()).unwrap_or_default()
                    ),
                    state: if self.phase == Phase::Running {
                        "running"
                    } else {
                        "starting"
                    },
                    pid: None,
                    started_at: Some(humantime::format_rfc3339_millis(p.since).to_string()),
                    restarts: 0,
                    last_error: None,
                    stderr_tail: Vec::new(),
                    bytes: p.stats.bytes.load(Ordering::Relaxed),
                    codecs: self.fanout.codecs(self.slots.len() as SourceId),
                    next_retry_at: None,
                }))
                .collect(),
            consumers: self
                .consumers
                .values()
                .map(|c| ConsumerInfo {
                    protocol: c.protocol,
                    remote_addr: c.remote_addr.map(|a| a.to_string()),
                    bytes: c.stats.bytes.load(Ordering::Relaxed),
                    drops: c.stats.drops.load(Ordering::Relaxed),
                    internal: c.internal,
                })
                .collect(),
        }
    }
}

fn describe_end(r: &Report, tail: &StderrTail) -> String {
    let how = match (r.exit, r.ended_by) {
        (_, EndedBy::Abandoned) => "could not be reaped (abandoned)".to_string(),
        (Some(e), _) => e.to_string(),
        (None, _) => "ended".to_string(),
    };
    let mut s = format!("producer pid {} ended: {how}", r.pid);
    if let Some(supervisor::StopReason::Output(why)) = &r.stop_reason {
        s.push_str(&format!(" ({why})"));
    }
    if let Some(last) = tail.lines().last() {
        s.push_str(&format!("; stderr: {last}"));
    }
    s
}

#[cfg(test)]
mod token_tests {
    use super::*;

    #[test]
    fn a_token_reads_its_stream_for_the_life_of_its_guard() {
        let tokens = InternalTokens::default();
        let g = tokens.issue("cam", "cam");
        let other = tokens.issue("cam_aac", "cam");
        assert_eq!(g.token().len(), 32);
        assert_ne!(g.token(), other.token());
        assert!(tokens.allows(g.token(), "cam"));
        assert!(!tokens.allows(g.token(), "door"));
        assert!(!tokens.allows("", "cam"));
        // A stream reading itself is internal; another stream's reader is
        // an ordinary viewer (it starts and keeps `cam` up).
        assert!(tokens.reads_itself(g.token(), "cam"));
        assert!(!tokens.reads_itself(other.token(), "cam"));
        assert!(!tokens.reads_itself(g.token(), "door"));
        let t = g.token().to_string();
        drop(g);
        assert!(!tokens.allows(&t, "cam"));
        assert!(tokens.allows(other.token(), "cam"));
    }
}

struct ProducerTask {
    stream: String,
    index: usize,
    generation: Generation,
    cmd: CommandSpec,
    kill_timeout: Duration,
    spawner: Arc<dyn Spawner>,
    fanout: Arc<Fanout>,
    stats: Arc<ProducerStats>,
    tail: Arc<StderrTail>,
    stop: CancellationToken,
    tx: mpsc::UnboundedSender<Msg>,
    origin: Instant,
    metrics: Arc<StreamMetrics>,
    /// The child publishes over RTSP (`{output}`); its stdout is not media.
    publishes_back: bool,
    /// Its stdout is MJPEG (`ffmpeg:…#video=mjpeg`), not FLV.
    mjpeg: bool,
}

impl ProducerTask {
    async fn run(self) {
        let (index, generation) = (self.index, self.generation);
        let outcome = match self.spawner.spawn(&self.cmd) {
            Err(e) => {
                tracing::warn!(stream = %self.stream, source = index, cmd = %clean(&self.cmd.to_string()), error = %e, "producer spawn failed");
                Outcome::SpawnFailed(format!("{}: {e}", self.cmd.program))
            }
            Ok(spawned) => {
                self.stats.pid.store(spawned.pid, Ordering::Relaxed);
                self.metrics.producer_up(index);
                tracing::info!(stream = %self.stream, source = index, pid = spawned.pid, cmd = %clean(&self.cmd.to_string()), "producer started");
                let (fanout, stats, origin, stream) = (
                    self.fanout.clone(),
                    self.stats.clone(),
                    self.origin,
                    self.stream.clone(),
                );
                let format = if self.mjpeg {
                    StdoutDemux::Mjpeg {
                        split: Default::default(),
                        announced: false,
                        start: Instant::now(),
                    }
                } else {
                    StdoutDemux::Flv(flv::Demuxer::new())
                };
                let report = supervisor::supervise(
                    spawned,
                    Labels {
                        stream: &self.stream,
                        source: index,
                    },
                    self.kill_timeout,
                    self.stop,
                    self.tail,
                    move |stdout| async move {
                        if self.publishes_back {
                            drain(stdout).await
                        } else {
                            demux(
                                stdout, format, fanout, stats, origin, stream, index, generation,
                            )
                            .await
                        }
                    },
                )
                .await;
                Outcome::Ended(report)
            }
        };
        let _ = self.tx.send(Msg::ProducerEnded {
            index,
            generation,
            outcome: Box::new(outcome),
        });
    }
}

/// Reads and discards the stdout of a child that publishes its media by
/// other means, so it cannot block on a full pipe. Returns at EOF.
async fn drain(mut stdout: BoxRead) -> String {
    let mut buf = vec![0u8; 8192];
    loop {
        match stdout.read(&mut buf).await {
            Ok(0) => return "stdout closed".into(),
            Ok(_) => {}
            Err(e) => return format!("reading stdout: {e}"),
        }
    }
}

/// What a producer's stdout carries: FLV (everything ffmpeg makes for us),
/// or MJPEG, a run of JPEG images with no timestamps (stamped on arrival).
enum StdoutDemux {
    Flv(flv::Demuxer),
    Mjpeg {
        split: crate::media::jpeg::Splitter,
        announced: bool,
        start: Instant,
    },
}

impl StdoutDemux {
    fn buffer_mut(&mut self) -> &mut bytes::BytesMut {
        match self {
            StdoutDemux::Flv(d) => d.buffer_mut(),
            StdoutDemux::Mjpeg { split, .. } => split.buffer_mut(),
        }
    }

    fn next_event(&mut self) -> Result<Option<flv::Event>, String> {
        match self {
            StdoutDemux::Flv(d) => d.next_event().map_err(|e| e.to_string()),
            StdoutDemux::Mjpeg {
                split,
                announced,
                start,
            } => {
                use crate::media::{Codec, Frame, TrackInfo};
                if !*announced && !split.buffer_mut().is_empty() {
                    *announced = true;
                    return Ok(Some(flv::Event::Track(TrackInfo {
                        codec: Codec::Jpeg,
                        config: bytes::Bytes::new(),
                    })));
                }
                let Some(img) = split.next_image().map_err(|e| e.to_string())? else {
                    return Ok(None);
                };
                let ts = crate::media::ms_to_ticks(start.elapsed().as_millis() as i64);
                Ok(Some(flv::Event::Frame(Frame::new(
                    Codec::Jpeg,
                    ts,
                    ts,
                    true,
                    img,
                ))))
            }
        }
    }
}

/// Reads a producer's stdout into the fan-out, as FLV or MJPEG (see
/// [`StdoutDemux`]). Returns why it ended.
#[allow(clippy::too_many_arguments)]
async fn demux(
    mut stdout: BoxRead,
    mut d: StdoutDemux,
    fanout: Arc<Fanout>,
    stats: Arc<ProducerStats>,
    origin: Instant,
    stream: String,
    index: usize,
    generation: Generation,
) -> String {
    loop {
        loop {
            match d.next_event() {
                Ok(Some(ev)) => {
                    if matches!(ev, flv::Event::Frame(_)) {
                        stats
                            .last_frame_ms
                            .store(origin.elapsed().as_millis() as u64, Ordering::Relaxed);
                    }
                    // Queued: what this read brought goes as one batch.
                    if !fanout.queue(index as SourceId, generation, ev) {
                        fanout.flush();
                        return "superseded by a newer run".into();
                    }
                }
                Ok(None) => {
                    fanout.flush();
                    break;
                }
                Err(e) => {
                    fanout.flush();
                    tracing::error!(stream = %stream, source = index, "producer sent garbage: {e}");
                    return format!("garbage on stdout: {e}");
                }
            }
        }
        let buf = d.buffer_mut();
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(64 * 1024);
        }
        match stdout.read_buf(buf).await {
            Ok(0) => return "stdout closed".into(),
            Ok(n) => {
                stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) => return format!("reading stdout: {e}"),
        }
    }
}

#[cfg(test)]
mod tests;
