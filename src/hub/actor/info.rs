//! What the API lists about a stream ([`StreamInfo`]): its phase, each
//! producer (the configured sources, then the publisher) with its run's
//! state, and each consumer. A read of the actor's state, never a change.

use std::sync::atomic::Ordering;
use std::time::SystemTime;

use tokio::time::Instant;

use super::slots::SlotState;
use super::{Actor, Phase};
use crate::hub::fanout::SourceId;
use crate::hub::{ConsumerInfo, ProducerInfo, StreamInfo};

impl Actor {
    pub(super) fn info(&self) -> StreamInfo {
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
