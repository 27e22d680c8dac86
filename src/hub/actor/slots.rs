//! The source slots: one per configured source, each the state of its
//! producer's runs. Here: which sources the viewers need (an RTSP viewer
//! asking `?video` does not start an audio-only transcoder), starting a
//! run (its tokens, its command, its [`ProducerTask`]), the end of a run
//! (restart with backoff, the move to the RTSP publish-back when FLV
//! cannot carry a codec), the stall check, and which child may publish
//! back into its slot (its run's token). The phases they run under are
//! the core's (`actor.rs`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rand::Rng;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Actor, Msg, Phase};
use crate::config::SourceConfig;
use crate::hub::fanout::{Generation, SourceId};
use crate::hub::producer::{describe_end, Outcome, ProducerStats, ProducerTask};
use crate::hub::{Publisher, StreamError, TokenGuard};
use crate::redact::clean;
use crate::supervisor::{EndedBy, StderrTail};

pub(super) enum SlotState {
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

pub(super) struct Slot {
    pub(super) cfg: SourceConfig,
    pub(super) state: SlotState,
    pub(super) restarts: u32,
    pub(super) attempt: u32,
    pub(super) last_error: Option<String>,
    pub(super) tail: Arc<StderrTail>,
    pub(super) stats: Arc<ProducerStats>,
    pub(super) started_at: Option<SystemTime>,
    /// The `{output}` token of the current run (see `Stream::publish_into`).
    pub(super) token: Option<u64>,
    /// The current run's internal-reader token, for `ffmpeg:STREAM`.
    pub(super) read_token: Option<TokenGuard>,
    /// This source sends a codec FLV cannot hold (H.265, Opus, G.711 at
    /// 16 kHz: ffmpeg 5.1 refuses them in FLV), learnt from a run that
    /// failed on it: from then on it publishes back over RTSP. Kept for
    /// the life of the stream, so only a source's first start pays for
    /// the discovery, and FLV stays the path wherever it works.
    pub(super) over_rtsp: bool,
}

/// See [`Actor::demand`].
#[derive(Debug, Default)]
struct Demand {
    video: Vec<crate::media::Codec>,
    audio: Vec<crate::media::Codec>,
}

/// Restart delay: 0.5 s doubling to 30 s, ±20 % jitter so that cameras on
/// one flaky switch do not all reconnect in the same instant.
fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(500)
        .saturating_mul(1 << attempt.min(6))
        .min(BACKOFF_CAP);
    base.mul_f64(rand::rng().random_range(0.8..1.2))
}

/// How often running producers are checked for a stall.
pub(super) const STALL_CHECK: Duration = Duration::from_millis(500);
/// Uptime after which a producer's restart backoff starts again at 0.5 s.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(60);
/// The longest wait between restarts of a failing producer.
const BACKOFF_CAP: Duration = Duration::from_secs(30);

impl Actor {
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

    /// Starts the idle producers that some viewer needs: an RTSP viewer
    /// asking `?video` does not start an audio-only transcoder.
    pub(super) fn start_needed(&mut self) {
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

    pub(super) fn start_slot(&mut self, index: usize) {
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
                    outcome: Box::new(Outcome::SpawnFailed(e.into())),
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

    pub(super) fn on_producer_ended(
        &mut self,
        index: usize,
        generation: Generation,
        outcome: Outcome,
    ) {
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

    /// A run's child publishing back into its own slot (an `exec:…
    /// {output}` command, or ffmpeg over RTSP; see `Stream::publish_into`):
    /// the token is that run's, so only the slot's current run gets a
    /// [`Publisher`].
    pub(super) fn publish_into(&self, token: u64) -> Result<Publisher, StreamError> {
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
        match found {
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
        }
    }

    /// The running phases' slot timers: a backoff that is over starts its
    /// next run; every [`STALL_CHECK`], once running, a producer silent for
    /// its `stall_timeout` is stopped (and restarted when it reports).
    pub(super) fn tick_slots(&mut self, now: Instant) {
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
}
