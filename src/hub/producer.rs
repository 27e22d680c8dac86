//! A producer run: the task that spawns a source's child, hands it to the
//! supervisor, and reads its stdout into the fan-out (FLV, or MJPEG);
//! then tells the actor how it ended.

use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::actor::Msg;
use super::fanout::{Fanout, Generation, SourceId};
use crate::media::{flv, jpeg};
use crate::metrics::StreamMetrics;
use crate::redact::clean;
use crate::supervisor::{self, BoxRead, CommandSpec, EndedBy, Labels, Report, Spawner, StderrTail};

/// How a producer run ended, as its task reports it to the actor
/// (`Msg::ProducerEnded`).
#[derive(Debug)]
pub(super) enum Outcome {
    SpawnFailed(StartError),
    Ended(Report),
}

/// Why a producer run never started: the producer boundary's error before
/// there is a child. Its text is the slot's `last_error` ("spawn failed:
/// …"), as a child's end is.
#[derive(Debug, thiserror::Error)]
pub(super) enum StartError {
    /// The source's config cannot run (an unsupported kind, a disabled
    /// server, a bad template).
    #[error(transparent)]
    Unrunnable(#[from] crate::source::SourceError),
    /// The program could not be started (not found, not executable, out of
    /// processes).
    #[error("{program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
}

/// Why a producer's stdout stopped being read: the producer boundary's
/// error. Its text becomes the run's stop reason (`StopReason::Output`),
/// and so the slot's `last_error` in the API.
#[derive(Debug, thiserror::Error)]
pub(super) enum OutputError {
    /// EOF: the child closed its stdout (it usually exits next).
    #[error("stdout closed")]
    Closed,
    #[error("reading stdout: {0}")]
    Read(#[source] io::Error),
    /// A newer run of the same source took its place in the fan-out.
    #[error("superseded by a newer run")]
    Superseded,
    /// The child wrote something that is not the FLV or MJPEG we asked
    /// for: `offset` is where the bad input starts, counted from the first
    /// byte of its stdout, so it can be found in a capture of it.
    #[error("garbage on stdout: {cause}")]
    Garbage {
        stream: String,
        /// The source's index in its stream (the log's `source=`).
        index: usize,
        offset: u64,
        #[source]
        cause: DemuxError,
    },
}

/// The demuxer's own error, FLV or JPEG framing: each says where in the
/// stdout it is.
#[derive(Debug, thiserror::Error)]
pub(super) enum DemuxError {
    #[error(transparent)]
    Flv(#[from] flv::FlvError),
    #[error(transparent)]
    Jpeg(#[from] jpeg::JpegError),
}

impl DemuxError {
    /// The byte offset in the child's stdout where the bad input starts.
    fn offset(&self) -> u64 {
        match self {
            DemuxError::Flv(e) => e.offset,
            DemuxError::Jpeg(e) => e.offset,
        }
    }
}

/// A source slot's counters, shared by whoever feeds it (the producer
/// task, or a publisher) and the actor, which reads them for stall and
/// half-open detection and for the API.
#[derive(Default)]
pub(super) struct ProducerStats {
    pub(super) pid: AtomicU32,
    pub(super) bytes: AtomicU64,
    /// Milliseconds since the actor's origin at the last frame.
    pub(super) last_frame_ms: AtomicU64,
}

/// A slot's `last_error` after a run ended: how it ended, why we stopped
/// it, and its last stderr line.
pub(super) fn describe_end(r: &Report, tail: &StderrTail) -> String {
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

/// One run of one source: spawned by the actor (`Actor::start_slot`),
/// it ends by sending `Msg::ProducerEnded` with its generation.
pub(super) struct ProducerTask {
    pub(super) stream: String,
    pub(super) index: usize,
    pub(super) generation: Generation,
    pub(super) cmd: CommandSpec,
    pub(super) kill_timeout: Duration,
    pub(super) spawner: Arc<dyn Spawner>,
    pub(super) fanout: Arc<Fanout>,
    pub(super) stats: Arc<ProducerStats>,
    pub(super) tail: Arc<StderrTail>,
    pub(super) stop: CancellationToken,
    pub(super) tx: mpsc::UnboundedSender<Msg>,
    pub(super) origin: Instant,
    pub(super) metrics: Arc<StreamMetrics>,
    /// The child publishes over RTSP (`{output}`); its stdout is not media.
    pub(super) publishes_back: bool,
    /// Its stdout is MJPEG (`ffmpeg:…#video=mjpeg`), not FLV.
    pub(super) mjpeg: bool,
}

impl ProducerTask {
    pub(super) async fn run(self) {
        let (index, generation) = (self.index, self.generation);
        let outcome = match self.spawner.spawn(&self.cmd) {
            Err(e) => {
                tracing::warn!(stream = %self.stream, source = index, cmd = %clean(&self.cmd.to_string()), error = %e, "producer spawn failed");
                Outcome::SpawnFailed(StartError::Spawn {
                    program: self.cmd.program.clone(),
                    source: e,
                })
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
                        let ended = if self.publishes_back {
                            drain(stdout).await
                        } else {
                            demux(
                                stdout, format, fanout, stats, origin, stream, index, generation,
                            )
                            .await
                        };
                        ended.to_string()
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
async fn drain(mut stdout: BoxRead) -> OutputError {
    let mut buf = vec![0u8; 8192];
    loop {
        match stdout.read(&mut buf).await {
            Ok(0) => return OutputError::Closed,
            Ok(_) => {}
            Err(e) => return OutputError::Read(e),
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

    fn next_event(&mut self) -> Result<Option<flv::Event>, DemuxError> {
        match self {
            StdoutDemux::Flv(d) => Ok(d.next_event()?),
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
                let Some(img) = split.next_image()? else {
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
/// [`StdoutDemux`]). Returns why it ended: it ends only so.
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
) -> OutputError {
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
                        return OutputError::Superseded;
                    }
                }
                Ok(None) => {
                    fanout.flush();
                    break;
                }
                Err(cause) => {
                    fanout.flush();
                    let offset = cause.offset();
                    tracing::error!(stream = %stream, source = index, offset, error = %cause, "producer sent garbage");
                    return OutputError::Garbage {
                        stream,
                        index,
                        offset,
                        cause,
                    };
                }
            }
        }
        let buf = d.buffer_mut();
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(64 * 1024);
        }
        match stdout.read_buf(buf).await {
            Ok(0) => return OutputError::Closed,
            Ok(n) => {
                stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) => return OutputError::Read(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fanout::ReadyNotify;
    use super::*;

    struct Quiet;
    impl ReadyNotify for Quiet {
        fn ready(&self, _run: u64) {}
        fn settled(&self, _run: u64) {}
    }

    #[tokio::test]
    async fn garbage_names_the_stream_the_source_and_the_offset() {
        // A valid FLV header and PreviousTagSize0 (13 bytes), then a tag of
        // no type FLV has (E.4.1: 8, 9 or 18).
        let mut out = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00".to_vec();
        out.extend([0x42; 11]);
        let e = demux(
            Box::new(std::io::Cursor::new(out)),
            StdoutDemux::Flv(flv::Demuxer::new()),
            Arc::new(Fanout::new("cam", 2, None, Box::new(Quiet))),
            Arc::default(),
            Instant::now(),
            "cam".into(),
            1,
            Generation(1),
        )
        .await;
        match &e {
            OutputError::Garbage {
                stream,
                index,
                offset,
                cause: DemuxError::Flv(_),
            } => assert_eq!((stream.as_str(), *index, *offset), ("cam", 1, 13)),
            _ => panic!("{e:?}"),
        }
        // The text the slot's `last_error` has always had; the FLV error
        // stays reachable as the source.
        assert_eq!(
            e.to_string(),
            "garbage on stdout: FLV at byte offset 13: unknown tag type 2"
        );
        let cause = std::error::Error::source(&e).map(ToString::to_string);
        assert_eq!(
            cause.as_deref(),
            Some("FLV at byte offset 13: unknown tag type 2")
        );
    }

    #[tokio::test]
    async fn eof_and_read_errors_keep_their_words() {
        let e = drain(Box::new(std::io::Cursor::new(vec![0u8; 100]))).await;
        assert_eq!(e.to_string(), "stdout closed");
        let e = OutputError::Read(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(e.to_string().starts_with("reading stdout: "), "{e}");
    }
}
