//! The handles others hold on a stream: [`Stream`] (the actor's mailbox),
//! a [`Viewer`] and a [`Publisher`] (each a lease that ends when it is
//! dropped), and what they ask and are told ([`JoinRequest`],
//! [`StreamInfo`]).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::actor::{Msg, PendingPublish};
use super::fanout::{Delivery, Ended, Fanout, Generation, Selector, SourceId, ViewerStats};
use super::producer::ProducerStats;
use super::{Deps, StreamError};
use crate::config::StreamConfig;
use crate::media::flv;
use crate::metrics::StreamMetrics;

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

/// A handle to one stream's actor. Cheap to clone.
#[derive(Clone)]
pub struct Stream {
    pub(super) name: Arc<str>,
    pub(super) tx: mpsc::UnboundedSender<Msg>,
    pub(super) join_timeout: Duration,
    pub(super) metrics: Arc<StreamMetrics>,
}

impl Stream {
    /// Starts the stream's actor task (see `actor::spawn`) and returns its
    /// handle.
    pub fn spawn(cfg: StreamConfig, deps: Arc<Deps>) -> Stream {
        super::actor::spawn(cfg, deps)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The stream's numbers for `/api/metrics`: read without asking the
    /// actor, and kept across the stream's runs.
    pub fn metrics(&self) -> &Arc<StreamMetrics> {
        &self.metrics
    }

    /// The actor's answer to a join or a publish, within the join timeout:
    /// an actor that is gone, or does not answer in time, is an error.
    async fn answer<T>(
        &self,
        rx: oneshot::Receiver<Result<T, StreamError>>,
    ) -> Result<T, StreamError> {
        match tokio::time::timeout(self.join_timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(StreamError::ShuttingDown {
                stream: self.name.to_string(),
            }),
            Err(_) => Err(StreamError::Timeout {
                stream: self.name.to_string(),
                timeout_ms: self.join_timeout.as_millis() as u64,
            }),
        }
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
        self.answer(rx).await
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
        self.answer(rx).await
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

/// One viewer: its place in the fan-out, and its lease on the stream (the
/// stream stops when the last real lease is gone).
pub struct Viewer {
    pub(super) selector: Selector,
    /// Deliveries looked at before the viewer's output got them (see
    /// [`Registry::join_fitting`](super::Registry::join_fitting)): they
    /// come first.
    pub(super) pending: std::collections::VecDeque<Delivery>,
    pub(super) _lease: Lease,
}

impl Viewer {
    pub async fn next(&mut self) -> Result<Delivery, Ended> {
        if let Some(d) = self.pending.pop_front() {
            return Ok(d);
        }
        self.selector.next().await
    }

    /// [`Viewer::next`] if a delivery is ready now, without waiting (and
    /// without registering for a wake-up): `None` when nothing is.
    pub fn try_next(&mut self) -> Option<Result<Delivery, Ended>> {
        if let Some(d) = self.pending.pop_front() {
            return Some(Ok(d));
        }
        self.selector.try_next()
    }

    pub fn stats(&self) -> &Arc<ViewerStats> {
        self.selector.stats()
    }

    /// From now on, `sink` takes this viewer's deliveries in the
    /// producer's task ([`Direct`](super::fanout::Direct)), until the guard
    /// is dropped. Its own task then waits for `sink`'s word, not the ring.
    pub fn go_direct(&self, sink: Arc<dyn super::fanout::Direct>) -> super::fanout::DirectGuard {
        self.selector.go_direct(sink)
    }

    /// Keeps `d` to be delivered again, after what is already kept and
    /// before anything new: what an output looked at to describe the
    /// stream before it plays it (RTSP's DESCRIBE learns the tracks from
    /// the first deliveries; PLAY sends them).
    pub fn set_aside(&mut self, d: Delivery) {
        self.pending.push_back(d);
    }

    /// What is kept and not yet delivered again, in order.
    pub fn set_aside_items(&self) -> impl Iterator<Item = &Delivery> {
        self.pending.iter()
    }
}

/// A publisher's hold on a stream: media it publishes goes to the
/// stream's publisher slot, under its own generation. Dropping it (the
/// publisher disconnected) frees the stream at once.
pub struct Publisher {
    pub(super) fanout: Arc<Fanout>,
    pub(super) source: SourceId,
    pub(super) generation: Generation,
    pub(super) tx: mpsc::UnboundedSender<Msg>,
    /// The slot's counters (for an `exec:… {output}` child, its source
    /// slot's), so that stall and half-open detection and the API see its
    /// media; and the actor's origin they count from.
    pub(super) stats: Arc<ProducerStats>,
    pub(super) origin: Instant,
}

impl Publisher {
    /// Publishes one event; false once this publisher no longer owns the
    /// stream (it was stopped, or shut down): the caller should hang up.
    pub fn publish(&self, ev: flv::Event) -> bool {
        self.count(&ev);
        self.fanout.publish(self.source, self.generation, ev)
    }

    /// Queues one of the events a single read brought;
    /// [`Publisher::flush`] then sends them as one batch (see
    /// [`Fanout::queue`](super::fanout::Fanout::queue)): frames that arrived
    /// together cost every viewer one write, not one each.
    pub fn queue(&self, ev: flv::Event) -> bool {
        self.count(&ev);
        self.fanout.queue(self.source, self.generation, ev)
    }

    /// Sends what [`Publisher::queue`] queued.
    pub fn flush(&self) {
        self.fanout.flush();
    }

    fn count(&self, ev: &flv::Event) {
        if let flv::Event::Frame(f) = ev {
            self.stats
                .last_frame_ms
                .store(self.origin.elapsed().as_millis() as u64, Ordering::Relaxed);
            self.stats
                .bytes
                .fetch_add(f.payload.len() as u64, Ordering::Relaxed);
        }
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

pub(super) struct Lease {
    pub(super) id: u64,
    /// Counts the viewer in `/api/metrics` until it goes.
    pub(super) _watching: crate::metrics::Watching,
    pub(super) tx: mpsc::UnboundedSender<Msg>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Leave { id: self.id });
    }
}
