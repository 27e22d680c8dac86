//! The stream actor: one task per stream owns all of that stream's state
//! (the phases and their deadlines are drawn in the hub's module doc).
//! Everything else sends it a [`Msg`]; it never awaits a child, a socket
//! or a peer.
//!
//! Here: the message loop, the phases and every deadline (start, settle,
//! linger, carry-over, stop), the viewers who join, wait and leave. The
//! rest of the actor's `impl`, by concern:
//! - `slots.rs`: the configured sources' slots, starting and restarting
//!   their producers, stalls, and publishing back into a slot;
//! - `publish.rs`: the publisher slot (its lease, takeover, silence);
//! - `info.rs`: the snapshot the API lists ([`StreamInfo`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::fanout::{Fanout, Generation, ReadyNotify, Selector, SourceId, ViewerStats};
use super::handle::Lease;
use super::producer::Outcome;
use super::{Deps, JoinRequest, Publisher, SourceFailure, Stream, StreamError, StreamInfo, Viewer};
use crate::config::{SourceConfig, StreamConfig};
use crate::metrics::StreamMetrics;
use crate::redact::redact;
use crate::supervisor;

mod info;
mod publish;
mod slots;
pub(super) use publish::PendingPublish;
use publish::PublisherState;
use slots::{Slot, SlotState, STALL_CHECK};

// Every stream's mailbox allocates its first block of 32 messages when it is
// created (tokio's mpsc), so the largest variant, times 32, is memory each
// idle stream holds: the big payloads are boxed to keep `Msg` at 32 bytes
// (was 96: 3 KB a stream, a third of what an idle stream costs; issue 17).
// Only control messages go through here, never frames.
pub(super) enum Msg {
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

struct Notify(mpsc::UnboundedSender<Msg>);

impl ReadyNotify for Notify {
    fn ready(&self, run: u64) {
        let _ = self.0.send(Msg::Ready { run });
    }
    fn settled(&self, run: u64) {
        let _ = self.0.send(Msg::Settled { run });
    }
}

/// Starts a stream's actor task; [`Stream::spawn`].
pub(super) fn spawn(cfg: StreamConfig, deps: Arc<Deps>) -> Stream {
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

/// How long real viewers wait for every source to announce its tracks
/// after the first keyframe. `[camera with PCMA, "ffmpeg:cam#audio=aac"]`
/// would otherwise hand its first viewer G.711 and switch it to AAC a
/// moment later, which players handle badly.
pub const SETTLE_GRACE: Duration = Duration::from_secs(3);

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
                let _ = reply.send(self.publish_into(token));
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
        self.tick_slots(now);
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
}
