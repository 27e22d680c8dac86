//! The publisher slot: the stream's last source, which a client that
//! pushes (RTSP RECORD, RTMP or HTTP-FLV publish) holds on a lease. The
//! lease is a [`Generation`]: only the current attachment can release it,
//! so a late detach from one that was taken over or timed out changes
//! nothing. Here: who may take the slot (`publish.replace_sources`,
//! `publish.takeover`), its release (hang-up, takeover, silence for
//! `publish.timeout`), and what a publish-only stream does once its
//! publisher has left (its viewers wait for the next one).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{Actor, Phase};
use crate::hub::fanout::{Generation, SourceId};
use crate::hub::producer::ProducerStats;
use crate::hub::{Publisher, StreamError};

/// Who holds the lease, and since when (for the stream's listing).
pub(super) struct PublisherState {
    pub(super) generation: Generation,
    pub(super) protocol: &'static str,
    pub(super) remote_addr: Option<SocketAddr>,
    pub(super) since: SystemTime,
    pub(super) stats: Arc<ProducerStats>,
}

impl PublisherState {
    pub(super) fn describe(&self) -> String {
        match self.remote_addr {
            Some(a) => format!("{} from {a}", self.protocol),
            None => self.protocol.to_string(),
        }
    }
}

/// A publisher that asked while the last run was still being torn down.
pub(in crate::hub) struct PendingPublish {
    pub(in crate::hub) protocol: &'static str,
    pub(in crate::hub) remote_addr: Option<SocketAddr>,
    pub(in crate::hub) reply: oneshot::Sender<Result<Publisher, StreamError>>,
}

impl Actor {
    pub(super) fn on_publish(
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
    pub(super) fn on_unpublish(&mut self, generation: Generation) {
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
    pub(super) fn publisher_silent_at(&self, p: &PublisherState) -> Instant {
        self.origin
            + Duration::from_millis(p.stats.last_frame_ms.load(Ordering::Relaxed))
            + self.deps.publish.timeout
    }

    /// Frees the publisher slot: the attachment's generation is detached,
    /// so its connection's next publish fails and it hangs up.
    pub(super) fn release_publisher(&mut self, why: &str) {
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
    pub(super) fn after_publisher_left(&mut self) {
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
}
