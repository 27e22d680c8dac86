//! One stream's fan-out: a broadcast ring of batches of [`Item`]s, the
//! current track table and a GOP cache.
//!
//! Producers call [`Fanout::publish`]; it never waits on a viewer (a full
//! ring overwrites its oldest entry and the laggard finds out on its next
//! read). Viewers hold a [`Cursor`]: the ring receiver plus the snapshot they
//! joined with. Memory is bounded by the ring and the GOP cache, not by the
//! number of viewers, and a payload is one `Bytes` shared by all of them.
//!
//! No added latency (DESIGN.md "The hub"): an item goes into the ring as
//! soon as it is published, and every viewer can take it at once. Batching
//! comes only from load, never from a timer: the items a producer's one
//! read brought are one batch ([`Fanout::queue`], then [`Fanout::flush`]),
//! and a viewer that wakes late drains everything waiting in one write
//! (the outputs take what is ready before they write). Until issue 17 a
//! 100 ms window batched frames to save wake-ups and writes; it added
//! 48 ms (p99 102 ms) to every frame.
//!
//! Outputs that own their socket can also take each batch as it is sent,
//! in the producer's task ([`Direct`]): a frame then reaches 500 viewers
//! as 500 non-blocking writes from one task, not 500 task wake-ups (issue
//! 17). A viewer whose socket is full goes back to its own task until it
//! has caught up.
//!
//! The short `std::sync::Mutex` here guards only in-memory bookkeeping and is
//! never held across an `.await`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::media::flv::Event;
use crate::media::{Codec, Frame, TrackInfo, TrackKind, TIMESCALE};
use crate::metrics::{Counter, Histogram, OutputMetrics, StreamMetrics};

mod selector;
pub use selector::{
    Delivery, Ended, Selector, ANY_AUDIO, ANY_VIDEO, H264_OR_H265, H264_VIDEO, JPEG_VIDEO,
    MAX_BEHIND, MAX_LAGS_IN_A_ROW,
};

/// Ring capacity in batches: a batch is mostly one frame, so about 14 s of
/// a 25 fps stream with its audio: room for a viewer's hiccup, with memory
/// bounded by the ring.
pub const RING: usize = 1024;
/// The GOP cache gives up (until the next keyframe) past these bounds, so a
/// camera with a one-minute keyframe interval cannot eat memory.
pub const GOP_MAX_ITEMS: usize = 2000;
pub const GOP_MAX_BYTES: usize = 32 << 20;
/// The least step between two frames of a track on the stream clock: 1 ms,
/// the resolution of FLV and RTMP timestamps (E.4.1). A smaller one would
/// round to the same millisecond there, and ffmpeg refuses a dts that does
/// not increase ("non monotonically increasing dts").
const MIN_STEP: i64 = TIMESCALE / 1000;

pub type SourceId = u16;

#[derive(Clone, Debug)]
pub enum Item {
    /// A source's parameters for one kind of track, new or changed.
    Track {
        source: SourceId,
        info: TrackInfo,
    },
    /// A source stopped: its tracks are gone.
    SourceGone {
        source: SourceId,
    },
    Frame {
        source: SourceId,
        frame: Frame,
    },
    /// The stream stopped; every cursor ends.
    Eos,
}

/// What the ring carries: items in order, shared by every viewer.
pub type Batch = Arc<[Item]>;

/// A batch and when the hub sent it ([`crate::metrics::now_us`]): what
/// each output's delivery delay (`/api/metrics`) is measured from. Taken
/// once per batch, not per frame: a batch is what one producer read
/// brought, so its frames arrived together.
type Sent = (u64, Batch);

/// What a producer's ownership token proves: that its frames are still
/// wanted. A restarted source gets a new generation, so a slow, stale task
/// can never publish into (or tear down) its replacement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Generation(pub u64);

#[derive(Default)]
struct SourceState {
    /// `Some` while a producer of this generation is attached.
    generation: Option<Generation>,
    video: Option<TrackInfo>,
    audio: Option<TrackInfo>,
    /// Maps this producer run's clock onto the stream clock.
    offset: Option<i64>,
    /// Last stream-clock dts per kind, so that a restart continues forward.
    last_dts: [Option<i64>; 2],
}

struct State {
    sources: Vec<SourceState>,
    gop: VecDeque<Item>,
    gop_bytes: usize,
    /// The video source whose keyframes start the GOP cache.
    gop_owner: Option<SourceId>,
    ready: bool,
    /// Items queued by a producer's read and not yet sent.
    pending: Vec<Item>,
    /// The stream clock's zero, set by the first frame of a run. It stays
    /// until the stream stops, so timestamps keep increasing across
    /// producer restarts.
    origin: Option<Instant>,
    /// How many times the stream was reset.
    run: u64,
    settled: bool,
    /// The ring, made by the first viewer of a run and dropped when the run
    /// ends ([`Fanout::reset`]): 1024 slots cost about 48 KiB, and an idle
    /// stream (most of a camera config, most of the time) has no viewer to
    /// fill it. With nobody subscribed there is nobody to send to: items
    /// only feed the GOP cache, which a first viewer then joins with.
    tx: Option<broadcast::Sender<Sent>>,
}

/// Told once per run, when the stream has something a viewer can decode
/// (`ready`), and when every running source has also said which tracks it
/// has (`settled`). `run` counts [`Fanout::reset`]s, so a notice that
/// arrives after its run ended can be told from one for the run that
/// replaced it.
pub trait ReadyNotify: Send + Sync {
    fn ready(&self, run: u64);
    fn settled(&self, run: u64);
}

/// A viewer whose output writes its frames itself, from the producer's
/// side: after each batch goes into the ring, the fan-out calls
/// [`Direct::offer`] on every registered one ([`Cursor::go_direct`]), in
/// the task that published it. `offer` takes what its viewer's cursor has
/// ready and writes it without waiting (a full socket is handed to the
/// viewer's own task). Nothing in it may wait: it runs once per viewer per
/// batch, on the producer's time.
pub trait Direct: Send + Sync {
    /// A batch was sent; `now` is when (read once for every viewer).
    fn offer(&self, now: Instant);
}

/// The viewers that take batches from the producer's side. The list is
/// copied on change (a join or a leave), so each batch costs one clone
/// of it, not a lock held while the writes go out.
#[derive(Default)]
pub struct Directs {
    list: Mutex<Arc<[Arc<dyn Direct>]>>,
}

impl Directs {
    fn lock(&self) -> std::sync::MutexGuard<'_, Arc<[Arc<dyn Direct>]>> {
        self.list.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn offer(&self) {
        let list = self.lock().clone();
        if list.is_empty() {
            return;
        }
        let now = Instant::now();
        for d in list.iter() {
            d.offer(now);
        }
    }
}

/// A [`Direct`]'s registration: dropping it stops the offers (one already
/// under way may still come).
pub struct DirectGuard {
    directs: Arc<Directs>,
    sink: Arc<dyn Direct>,
}

impl Drop for DirectGuard {
    fn drop(&mut self) {
        let mut list = self.directs.lock();
        let me = Arc::as_ptr(&self.sink) as *const ();
        *list = list
            .iter()
            .filter(|d| Arc::as_ptr(d) as *const () != me)
            .cloned()
            .collect();
    }
}

pub struct Fanout {
    state: Mutex<State>,
    /// Viewers that take each batch in the producer's task.
    directs: Arc<Directs>,
    /// For log lines.
    stream: Box<str>,
    /// The newest frame's dts: how far behind a viewer is.
    latest: Arc<AtomicI64>,
    /// Batches sent into the ring, over every run: a cursor that has taken
    /// as many has nothing to read (see [`Cursor::try_next`]).
    sent: Arc<AtomicU64>,
    notify: Box<dyn ReadyNotify>,
    unsupported_logged: AtomicBool,
    /// The source whose tracks win over every other's while it has them:
    /// the publisher's slot (a live publisher comes before the sources).
    preferred: Option<SourceId>,
    /// The stream's numbers for `/api/metrics`; they outlive every run.
    metrics: Arc<StreamMetrics>,
}

fn kind_idx(k: TrackKind) -> usize {
    match k {
        TrackKind::Video => 0,
        TrackKind::Audio => 1,
    }
}

impl Fanout {
    pub fn new(
        stream: &str,
        sources: usize,
        preferred: Option<SourceId>,
        notify: Box<dyn ReadyNotify>,
    ) -> Fanout {
        Fanout {
            state: Mutex::new(State {
                sources: (0..sources).map(|_| SourceState::default()).collect(),
                gop: VecDeque::new(),
                gop_bytes: 0,
                gop_owner: None,
                ready: false,
                pending: Vec::new(),
                origin: None,
                run: 0,
                settled: false,
                tx: None,
            }),
            directs: Arc::default(),
            stream: stream.into(),
            latest: Arc::new(AtomicI64::new(0)),
            sent: Arc::new(AtomicU64::new(0)),
            notify,
            unsupported_logged: AtomicBool::new(false),
            preferred,
            metrics: Arc::new(StreamMetrics::new(sources)),
        }
    }

    /// The stream's numbers (frames and bytes in are counted here).
    pub fn metrics(&self) -> &Arc<StreamMetrics> {
        &self.metrics
    }

    /// Whether `generation` still owns `source`.
    pub fn owns(&self, source: SourceId, generation: Generation) -> bool {
        self.lock()
            .sources
            .get(source as usize)
            .is_some_and(|s| s.generation == Some(generation))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends what is pending, caching it for late joiners as it goes out
    /// (so a join snapshot never holds an item the ring will still bring).
    /// Returns whether anything went into the ring: then, with the lock
    /// released, [`Directs::offer`].
    fn flush_locked(&self, st: &mut State) -> bool {
        if st.pending.is_empty() {
            return false;
        }
        let items = std::mem::take(&mut st.pending);
        for item in &items {
            self.cache(st, item);
        }
        let sent = if let Some(tx) = &st.tx {
            self.send(tx, items.into());
            true
        } else {
            false
        };
        let announced =
            |s: &SourceState| s.generation.is_none() || s.video.is_some() || s.audio.is_some();
        if st.ready && !st.settled && st.sources.iter().all(announced) {
            st.settled = true;
            self.notify.settled(st.run);
        }
        sent
    }

    /// Sends what [`Fanout::queue`] queued, as one batch.
    pub fn flush(&self) {
        let sent = self.flush_locked(&mut self.lock());
        if sent {
            self.directs.offer();
        }
    }

    /// Attaches a new producer run for `source`.
    pub fn attach(&self, source: SourceId, generation: Generation) {
        let mut st = self.lock();
        if let Some(s) = st.sources.get_mut(source as usize) {
            s.generation = Some(generation);
            s.offset = None;
        }
    }

    /// Detaches `source` if `generation` still owns it; a stale detach is a
    /// no-op.
    pub fn detach(&self, source: SourceId, generation: Generation) {
        let mut st = self.lock();
        let Some(s) = st.sources.get_mut(source as usize) else {
            return;
        };
        if s.generation != Some(generation) {
            return;
        }
        s.generation = None;
        s.video = None;
        s.audio = None;
        s.offset = None;
        // Viewers that followed this source switch to another (a publisher
        // leaves, a camera comes back into view). That one's clock may be
        // behind this one's (a publisher that ran ahead of the wall clock):
        // move it forward so no viewer's timestamps go back on the switch.
        // A forward jump is a gap, which every player takes.
        let gone = s.last_dts;
        for (i, other) in st.sources.iter_mut().enumerate() {
            if i == source as usize || other.generation.is_none() {
                continue;
            }
            let Some(offset) = other.offset.as_mut() else {
                continue;
            };
            let behind = (0..2)
                .filter_map(|k| Some(gone[k]? - other.last_dts[k]?))
                .max()
                .unwrap_or(0);
            if behind > 0 {
                *offset += behind;
                for d in other.last_dts.iter_mut().flatten() {
                    *d += behind;
                }
            }
        }
        st.pending.push(Item::SourceGone { source });
        if self.flush_locked(&mut st) {
            drop(st);
            self.directs.offer();
        }
    }

    /// Ends the current run of the stream: cursors end, state resets.
    pub fn reset(&self) {
        let mut st = self.lock();
        for s in &mut st.sources {
            s.generation = None;
            s.video = None;
            s.audio = None;
            s.offset = None;
        }
        st.gop.clear();
        st.gop_bytes = 0;
        st.gop_owner = None;
        st.ready = false;
        st.pending.clear();
        st.origin = None;
        st.run += 1;
        st.settled = false;
        // Cursors still read the Eos from a dropped sender's ring (then
        // Closed); the ring itself goes with the last of them.
        if let Some(tx) = st.tx.take() {
            self.send(&tx, Arc::new([Item::Eos]));
            drop(st);
            self.directs.offer();
        }
    }

    /// Every send into the ring goes through here, so that the count the
    /// cursors read stays their ring position.
    fn send(&self, tx: &broadcast::Sender<Sent>, batch: Batch) {
        let _ = tx.send((crate::metrics::now_us(), batch));
        // After the send: a cursor that sees the count can read the batch.
        self.sent.fetch_add(1, Ordering::Release);
    }

    /// The codecs `source` has announced (video first), for the API.
    pub fn codecs(&self, source: SourceId) -> Vec<Codec> {
        let st = self.lock();
        st.sources
            .get(source as usize)
            .map(|s| {
                [&s.video, &s.audio]
                    .into_iter()
                    .flatten()
                    .map(|t| t.codec)
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn is_ready(&self) -> bool {
        self.lock().ready
    }

    /// Publishes one demuxed event and sends it at once. Returns false if
    /// `generation` no longer owns `source` (the caller should stop).
    pub fn publish(&self, source: SourceId, generation: Generation, ev: Event) -> bool {
        let mut st = self.lock();
        let ok = self.queue_locked(&mut st, source, generation, ev);
        if self.flush_locked(&mut st) {
            drop(st);
            self.directs.offer();
        }
        ok
    }

    /// Queues one event of several that arrived together (one read of a
    /// producer's pipe): [`Fanout::flush`] then sends them as one batch,
    /// which costs every viewer one wake-up and one write instead of one
    /// per event, and delays none of them.
    pub fn queue(&self, source: SourceId, generation: Generation, ev: Event) -> bool {
        let mut st = self.lock();
        self.queue_locked(&mut st, source, generation, ev)
    }

    fn queue_locked(
        &self,
        st: &mut State,
        source: SourceId,
        generation: Generation,
        ev: Event,
    ) -> bool {
        let wall = Instant::now();
        // A second of headroom: audio that a producer stamps a little before
        // its first video frame still lands at or after zero.
        let origin = *st
            .origin
            .get_or_insert_with(|| wall.checked_sub(Duration::from_secs(1)).unwrap_or(wall));
        let now = (wall.duration_since(origin).as_micros() as i64) * TIMESCALE / 1_000_000;
        let Some(s) = st.sources.get_mut(source as usize) else {
            return false;
        };
        if s.generation != Some(generation) {
            return false;
        }
        let item = match ev {
            Event::Unsupported { kind, codec } => {
                if !self.unsupported_logged.swap(true, Ordering::Relaxed) {
                    tracing::warn!(stream = %self.stream, source, ?kind, codec, "dropping a track in a codec we do not relay yet");
                }
                return true;
            }
            Event::Track(info) => {
                let slot = match info.kind() {
                    TrackKind::Video => &mut s.video,
                    TrackKind::Audio => &mut s.audio,
                };
                if slot.as_ref() == Some(&info) {
                    return true; // ffmpeg repeats headers; only changes travel.
                }
                *slot = Some(info.clone());
                Item::Track { source, info }
            }
            Event::Frame(mut frame) => {
                let k = kind_idx(frame.kind());
                // The first frame of a run anchors its clock to "now" on the
                // stream clock, but never before anything the stream already
                // delivered (from any source, in any run): restarts, a new
                // publisher, and a viewer switching to this source all keep
                // timestamps moving forward.
                let floor = self.latest.load(Ordering::Relaxed) + MIN_STEP;
                let offset = *s
                    .offset
                    .get_or_insert((now - frame.dts).max(floor.saturating_sub(frame.dts)));
                frame.dts += offset;
                frame.pts += offset;
                if let Some(last) = s.last_dts[k] {
                    if frame.dts < last + MIN_STEP {
                        // Non-monotonic input (a camera clock jump): clamp so
                        // no muxer ever goes backwards or stands still.
                        let d = last + MIN_STEP - frame.dts;
                        frame.dts += d;
                        frame.pts += d;
                    }
                }
                s.last_dts[k] = Some(frame.dts);
                self.latest.fetch_max(frame.dts, Ordering::Relaxed);
                self.metrics.frame_in(frame.payload.len());
                Item::Frame { source, frame }
            }
        };
        st.pending.push(item);
        true
    }

    fn cache(&self, st: &mut State, item: &Item) {
        let owner = self
            .preferred
            .filter(|p| {
                st.sources
                    .get(*p as usize)
                    .is_some_and(|s| s.video.is_some())
            })
            .or_else(|| {
                st.sources
                    .iter()
                    .position(|s| s.video.is_some())
                    .map(|i| i as SourceId)
            });
        if owner != st.gop_owner {
            st.gop.clear();
            st.gop_bytes = 0;
            st.gop_owner = owner;
        }
        match item {
            Item::Frame { source, frame }
                if frame.kind() == TrackKind::Video && frame.keyframe && Some(*source) == owner =>
            {
                st.gop.clear();
                st.gop_bytes = 0;
                if !st.ready {
                    st.ready = true;
                    self.notify.ready(st.run);
                }
            }
            Item::Frame { source, frame }
                if owner.is_none() && frame.kind() == TrackKind::Audio =>
            {
                // An audio-only stream: any audio frame is a starting point.
                let _ = source;
                if !st.ready {
                    st.ready = true;
                    self.notify.ready(st.run);
                }
                if st.gop.len() > 50 {
                    st.gop.pop_front();
                }
            }
            _ if st.gop.is_empty() => return, // waiting for a keyframe
            _ => {}
        }
        if let Item::Frame { frame, .. } = item {
            st.gop_bytes += frame.payload.len();
        }
        st.gop.push_back(item.clone());
        if st.gop.len() > GOP_MAX_ITEMS || st.gop_bytes > GOP_MAX_BYTES {
            st.gop.clear();
            st.gop_bytes = 0;
        }
    }

    /// A new cursor: the track table and GOP cache as of now, then live items.
    /// Both are taken under one lock, so nothing is missed or seen twice.
    pub fn subscribe(&self) -> Cursor {
        let mut st = self.lock();
        let rx = match &st.tx {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = broadcast::channel(RING);
                st.tx = Some(tx);
                rx
            }
        };
        let mut backlog = VecDeque::new();
        for (i, s) in st.sources.iter().enumerate() {
            for info in [&s.video, &s.audio].into_iter().flatten() {
                backlog.push_back(Item::Track {
                    source: i as SourceId,
                    info: info.clone(),
                });
            }
        }
        backlog.extend(st.gop.iter().cloned());
        Cursor {
            rx,
            backlog,
            batch: None,
            sent_at: 0,
            // Under the lock that flushes: the ring position and the count
            // agree.
            taken: self.sent.load(Ordering::Relaxed),
            sent: self.sent.clone(),
            latest: self.latest.clone(),
            live: false,
            preferred: self.preferred,
            directs: self.directs.clone(),
        }
    }
}

/// A viewer's position in the stream: first the join snapshot, then the ring.
pub struct Cursor {
    rx: broadcast::Receiver<Sent>,
    backlog: VecDeque<Item>,
    batch: Option<(Batch, usize)>,
    /// When the current batch was sent; 0 while in the join snapshot.
    sent_at: u64,
    /// The fan-out's count of batches sent, and how many of them this
    /// cursor has read or skipped (its ring position).
    sent: Arc<AtomicU64>,
    taken: u64,
    /// The newest dts published (the live edge), shared with the fan-out.
    latest: Arc<AtomicI64>,
    /// Whether the last item came from the ring (not the join snapshot,
    /// which is behind the live edge by design).
    live: bool,
    /// See [`Fanout`]'s field of that name.
    preferred: Option<SourceId>,
    directs: Arc<Directs>,
}

pub enum Next {
    Item(Item),
    /// The viewer fell behind and `n` batches were overwritten before it
    /// read them.
    Lagged(u64),
    Closed,
}

impl Cursor {
    /// How far `dts` is behind the live edge, for an item from the ring;
    /// 0 for the join snapshot.
    pub fn behind(&self, dts: i64) -> i64 {
        if self.live {
            self.latest.load(Ordering::Relaxed) - dts
        } else {
            0
        }
    }

    /// From now on, `sink` is offered each batch the fan-out sends, in
    /// the producer's task, until the guard is dropped.
    pub fn go_direct(&self, sink: Arc<dyn Direct>) -> DirectGuard {
        let mut list = self.directs.lock();
        *list = list.iter().cloned().chain([sink.clone()]).collect();
        DirectGuard {
            directs: self.directs.clone(),
            sink,
        }
    }

    pub async fn next(&mut self) -> Next {
        loop {
            if let Some(n) = self.try_next() {
                return n;
            }
            match self.rx.recv().await {
                Ok((at, b)) => {
                    self.taken += 1;
                    self.sent_at = at;
                    self.batch = Some((b, 0));
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    self.taken += n;
                    return Next::Lagged(n);
                }
                Err(broadcast::error::RecvError::Closed) => return Next::Closed,
            }
        }
    }

    /// [`Cursor::next`] if something is ready, without waiting: `None`
    /// when the ring has nothing new. A viewer asks after every batch it
    /// takes, and mostly nothing is there: the count answers that from one
    /// shared atomic. Asking the ring itself takes the lock every viewer of
    /// the stream shares (`try_recv` once, or a `recv` polled once and
    /// dropped twice: to register as a waiter, then to leave).
    pub fn try_next(&mut self) -> Option<Next> {
        if let Some(i) = self.backlog.pop_front() {
            self.live = false;
            self.sent_at = 0;
            return Some(Next::Item(i));
        }
        self.live = true;
        loop {
            if let Some((b, i)) = &mut self.batch {
                if let Some(item) = b.get(*i) {
                    *i += 1;
                    return Some(Next::Item(item.clone()));
                }
                self.batch = None;
            }
            if self.sent.load(Ordering::Acquire) == self.taken {
                return None;
            }
            match self.rx.try_recv() {
                Ok((at, b)) => {
                    self.taken += 1;
                    self.sent_at = at;
                    self.batch = Some((b, 0));
                }
                Err(broadcast::error::TryRecvError::Empty) => return None,
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    self.taken += n;
                    return Some(Next::Lagged(n));
                }
                Err(broadcast::error::TryRecvError::Closed) => return Some(Next::Closed),
            }
        }
    }
}

/// Per-viewer counters the API shows. Each also adds to its stream's
/// total for `/api/metrics` (see [`Counter`]), so an output counts its
/// writes once, with `stats.bytes.fetch_add(n, Ordering::Relaxed)`.
#[derive(Debug, Default)]
pub struct ViewerStats {
    /// Bytes written to the viewer, as its output counts them.
    pub bytes: Counter,
    /// Frames (or, after a lag, ring batches) it skipped: see
    /// [`Selector::next`].
    pub drops: Counter,
    /// When the hub sent the frame [`Selector::next`] last delivered
    /// ([`crate::metrics::now_us`]); 0 for none, or one from the join
    /// snapshot (its delay is the GOP's age, not the relay's).
    arrived: AtomicU64,
    /// The output's delivery-delay histogram.
    delay: Option<Arc<Histogram>>,
}

impl ViewerStats {
    /// Counters adding to `stream`'s totals for viewers of `output`.
    pub fn counted(stream: &StreamMetrics, output: &OutputMetrics) -> ViewerStats {
        let (bytes, drops) = stream.viewer_counters(output);
        ViewerStats {
            bytes,
            drops,
            arrived: AtomicU64::new(0),
            delay: Some(output.delay().clone()),
        }
    }

    /// Called by an output once it has handed the last frame it got to
    /// the viewer's socket: records that frame's delivery delay, once.
    /// Per write, not per byte; an output that writes several frames at
    /// once calls it after the write, for the newest of them.
    pub fn delivered(&self) {
        let at = self.arrived.swap(0, Ordering::Relaxed);
        if let (Some(h), true) = (&self.delay, at != 0) {
            h.observe_since(at);
        }
    }
}

#[cfg(test)]
mod tests;
