//! The stream actor under tokio's paused clock, with fake children: every
//! deadline is exercised without waiting for it. Publishers' tests are in
//! `tests/publish.rs`, the metrics' in `tests/metrics.rs`.

use super::actor::Msg;
use super::fanout::{Delivery, Ended};
use super::*;
use crate::config::{PublishConfig, SourceConfig, SourceKind, StreamConfig, Timeouts};
use crate::media::{flv, flv::Muxer, ms_to_ticks, Codec, Frame, TrackInfo};
use crate::redact::redact;
use crate::supervisor::{self, BoxFuture, ChildProcess, CommandSpec, ExitKind, Spawned, Spawner};
use bytes::Bytes;
use nix::sys::signal::Signal;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio::sync::watch;
use tokio::time::Instant;

mod metrics;
mod publish;

/// A fake child: records signals, exits on TERM unless told to ignore it,
/// always on KILL.
struct FakeChild {
    exit: watch::Receiver<Option<ExitKind>>,
    ctl: Arc<FakeCtl>,
}

struct FakeCtl {
    exit: watch::Sender<Option<ExitKind>>,
    ignore_term: bool,
    signals: Mutex<Vec<(Signal, Instant)>>,
}

impl ChildProcess for FakeChild {
    fn signal_group(&mut self, sig: Signal) -> io::Result<()> {
        self.ctl.signals.lock().unwrap().push((sig, Instant::now()));
        if sig == Signal::SIGKILL || !self.ctl.ignore_term {
            let _ = self.ctl.exit.send(Some(ExitKind::Signal(sig as i32)));
        }
        Ok(())
    }
    fn group_alive(&self) -> bool {
        self.exit.borrow().is_none()
    }
    fn wait(&mut self) -> BoxFuture<'_, io::Result<ExitKind>> {
        Box::pin(async move {
            let mut rx = self.exit.clone();
            let v = rx
                .wait_for(|e| e.is_some())
                .await
                .map_err(|_| io::Error::other("gone"))?;
            Ok(v.unwrap())
        })
    }
}

struct Spawn {
    ctl: Arc<FakeCtl>,
    /// The test writes the child's stdout here.
    stdout: DuplexStream,
}

#[derive(Default)]
struct FakeSpawner {
    spawns: Mutex<Vec<Spawn>>,
    /// Never moved: fake children are not counted.
    counts: crate::supervisor::ChildCounts,
    ignore_term: bool,
    stderr: &'static [u8],
}

impl Spawner for Arc<FakeSpawner> {
    fn spawn(&self, _cmd: &CommandSpec) -> io::Result<Spawned> {
        let (tx, rx) = watch::channel(None);
        let ctl = Arc::new(FakeCtl {
            exit: tx,
            ignore_term: self.ignore_term,
            signals: Mutex::new(Vec::new()),
        });
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        let mut spawns = self.spawns.lock().unwrap();
        spawns.push(Spawn {
            ctl: ctl.clone(),
            stdout: ours,
        });
        Ok(Spawned {
            pid: 1000 + spawns.len() as u32,
            stdout: Box::new(theirs),
            stderr: Box::new(self.stderr),
            child: Box::new(FakeChild { exit: rx, ctl }),
        })
    }

    fn counts(&self) -> &crate::supervisor::ChildCounts {
        &self.counts
    }
}

fn source(kill_ms: u64) -> SourceConfig {
    SourceConfig {
        url: "exec:fake".into(),
        kind: SourceKind::Exec {
            argv: vec!["fake".into()],
        },
        timeouts: Timeouts {
            linger: Duration::ZERO,
            kill_timeout: Duration::from_millis(kill_ms),
            start_timeout: Duration::from_secs(3),
            stall_timeout: Duration::from_secs(5),
        },
    }
}

fn stream(sources: Vec<SourceConfig>, spawner: Arc<FakeSpawner>) -> Stream {
    stream_with(sources, spawner, PublishConfig::default())
}

fn stream_with(
    sources: Vec<SourceConfig>,
    spawner: Arc<FakeSpawner>,
    publish: PublishConfig,
) -> Stream {
    Stream::spawn(
        StreamConfig {
            name: "cam".into(),
            sources,
        },
        testing::deps(Arc::new(spawner), publish),
    )
}

fn viewer() -> JoinRequest {
    JoinRequest {
        protocol: "test",
        remote_addr: None,
        internal: false,
        exclude: None,
        audio: fanout::ANY_AUDIO,
        video: fanout::H264_VIDEO,
    }
}

/// A tiny FLV stream: header, H.264 sequence header, one keyframe.
fn flv_start() -> Vec<u8> {
    let mut m = Muxer::new();
    let info = TrackInfo {
        codec: Codec::H264,
        config: Bytes::from_static(&[1, 66, 0, 30, 0xff, 0xe1, 0]),
    };
    let mut out = m.header(true, false).to_vec();
    for c in m.track(&info, 0).unwrap() {
        out.extend_from_slice(&c);
    }
    out.extend(flv_frame(0, true));
    out
}

fn flv_frame(ms: i64, key: bool) -> Vec<u8> {
    let f = Frame {
        codec: Codec::H264,
        dts: ms_to_ticks(ms),
        pts: ms_to_ticks(ms),
        keyframe: key,
        payload: Bytes::from_static(&[0, 0, 0, 1, 0x65]),
        wire: Default::default(),
    };
    crate::media::flv::shared_tag(&f).to_vec()
}

async fn feed(spawner: &FakeSpawner, n: usize, data: &[u8]) {
    // Take the writer out so the lock is not held across the await.
    let mut w = {
        let mut s = spawner.spawns.lock().unwrap();
        std::mem::replace(&mut s[n].stdout, tokio::io::duplex(1).0)
    };
    w.write_all(data).await.unwrap();
    spawner.spawns.lock().unwrap()[n].stdout = w;
}

async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

async fn wait_spawns(spawner: &FakeSpawner, n: usize) {
    for _ in 0..200 {
        if spawner.spawns.lock().unwrap().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "expected {n} spawns, have {}",
        spawner.spawns.lock().unwrap().len()
    );
}

/// Joins as the first viewer: the stream starts `producers` fakes, the
/// first of which delivers a keyframe.
async fn first_viewer(s: &Stream, spawner: &FakeSpawner, producers: usize) -> Viewer {
    let join = tokio::spawn({
        let s = s.clone();
        async move { s.join(viewer()).await }
    });
    wait_spawns(spawner, producers).await;
    feed(spawner, 0, &flv_start()).await;
    join.await.unwrap().expect("joined")
}

fn exited(spawner: &FakeSpawner, n: usize) -> bool {
    spawner.spawns.lock().unwrap()[n]
        .ctl
        .exit
        .borrow()
        .is_some()
}

#[tokio::test(start_paused = true)]
async fn first_viewer_starts_all_last_viewer_stops_all_together() {
    let spawner = Arc::new(FakeSpawner {
        ignore_term: true, // so we can see the one shared deadline
        ..Default::default()
    });
    let s = stream(vec![source(1000), source(1000)], spawner.clone());
    let mut v = first_viewer(&s, &spawner, 2).await;
    assert!(matches!(
        v.next().await,
        Ok(Delivery::Tracks { video: Some(_), .. })
    ));
    assert!(matches!(v.next().await, Ok(Delivery::Frame(f)) if f.keyframe));

    let info = s.info().await.unwrap();
    assert_eq!(info.consumers.len(), 1);
    assert_eq!(info.producers[0].state, "running");
    assert_eq!(info.producers[0].pid, Some(1001));

    let left = Instant::now();
    drop(v);
    tokio::time::sleep(Duration::from_millis(999)).await;
    assert!(
        !exited(&spawner, 0) && !exited(&spawner, 1),
        "KILL came before kill_timeout"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    settle().await;
    for n in 0..2 {
        let sigs = spawner.spawns.lock().unwrap()[n]
            .ctl
            .signals
            .lock()
            .unwrap()
            .clone();
        let kinds: Vec<Signal> = sigs.iter().map(|x| x.0).collect();
        assert_eq!(
            kinds,
            vec![Signal::SIGTERM, Signal::SIGKILL],
            "producer {n}"
        );
        // Both were told at once: one shared deadline, not one after another.
        assert!(sigs[0].1.duration_since(left) < Duration::from_millis(50));
        assert!(sigs[1].1.duration_since(left) < Duration::from_millis(1100));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let info = s.info().await.unwrap();
    assert!(
        info.producers
            .iter()
            .all(|p| p.state == "idle" && p.pid.is_none()),
        "{info:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn viewer_arriving_during_stop_waits_then_starts_fresh() {
    let spawner = Arc::new(FakeSpawner {
        ignore_term: true,
        ..Default::default()
    });
    let s = stream(vec![source(2000)], spawner.clone());
    drop(first_viewer(&s, &spawner, 1).await);
    tokio::time::sleep(Duration::from_millis(100)).await; // stop is under way
    assert!(!exited(&spawner, 0));

    let join = tokio::spawn({
        let s = s.clone();
        async move { s.join(viewer()).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        spawner.spawns.lock().unwrap().len(),
        1,
        "must not start before the stop finishes"
    );
    wait_spawns(&spawner, 2).await;
    assert!(
        exited(&spawner, 0),
        "old run reaped before the new one started"
    );
    feed(&spawner, 1, &flv_start()).await;
    let mut v = join.await.unwrap().expect("fresh start");
    assert!(v.next().await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn start_timeout_reports_stderr_tail_and_kills() {
    let spawner = Arc::new(FakeSpawner {
        stderr: b"rtsp://cam: Connection refused\n",
        ..Default::default()
    });
    let s = stream(vec![source(500)], spawner.clone());
    let t = Instant::now();
    let err = s.join(viewer()).await.err().expect("must fail");
    assert!(t.elapsed() <= Duration::from_secs(3) + Duration::from_millis(10));
    let StreamError::StartFailed { sources, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(
        sources[0].stderr_tail,
        vec!["rtsp://cam: Connection refused"]
    );
    settle().await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(exited(&spawner, 0));
    assert_eq!(s.info().await.unwrap().producers[0].state, "idle");
}

/// A program that cannot be started (not installed, not executable).
struct NoSuchProgram(crate::supervisor::ChildCounts);

impl Spawner for NoSuchProgram {
    fn spawn(&self, _cmd: &CommandSpec) -> io::Result<Spawned> {
        Err(io::ErrorKind::NotFound.into())
    }
    fn counts(&self) -> &crate::supervisor::ChildCounts {
        &self.0
    }
}

#[tokio::test(start_paused = true)]
async fn a_program_that_cannot_start_is_named_with_the_io_error() {
    let s = Stream::spawn(
        StreamConfig {
            name: "cam".into(),
            sources: vec![source(500)],
        },
        testing::deps(
            Arc::new(NoSuchProgram(Default::default())),
            PublishConfig::default(),
        ),
    );
    let err = s.join(viewer()).await.err().expect("must fail");
    let StreamError::StartFailed { sources, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(
        sources[0].last_error.as_deref(),
        Some("spawn failed: fake: entity not found"),
        "{err:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn crashed_producer_restarts_with_backoff_and_viewer_resumes() {
    let spawner = Arc::new(FakeSpawner::default());
    let s = stream(vec![source(500)], spawner.clone());
    let mut v = first_viewer(&s, &spawner, 1).await;
    v.next().await.unwrap();
    v.next().await.unwrap();

    // The child dies by itself.
    let _ = spawner.spawns.lock().unwrap()[0]
        .ctl
        .exit
        .send(Some(ExitKind::Code(1)));
    let crashed = Instant::now();
    // Past the pipe drain, the producer waits out its backoff, and says when.
    tokio::time::sleep(supervisor::DRAIN + Duration::from_millis(50)).await;
    let info = s.info().await.unwrap();
    assert_eq!(info.producers[0].state, "backoff", "{info:?}");
    assert!(info.producers[0].next_retry_at.is_some(), "{info:?}");
    wait_spawns(&spawner, 2).await;
    let delay = crashed.elapsed();
    // Backoff 0.5 s ±20 %, after the pipe drain (the fake holds stdout open).
    assert!(
        delay >= Duration::from_millis(400)
            && delay <= supervisor::DRAIN + Duration::from_millis(650),
        "{delay:?}"
    );
    feed(&spawner, 1, &flv_start()).await;
    // The viewer stays attached: track gone, track back, then a keyframe.
    let mut got_key = false;
    for _ in 0..4 {
        if let Ok(Delivery::Frame(f)) = v.next().await {
            got_key = f.keyframe;
            break;
        }
    }
    assert!(got_key);
    let info = s.info().await.unwrap();
    assert_eq!(info.producers[0].restarts, 1);
    assert!(
        info.producers[0]
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("exit code 1"),
        "{info:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn backoff_grows_with_quick_crashes_and_resets_after_a_long_run() {
    let spawner = Arc::new(FakeSpawner::default());
    let s = stream(vec![source(500)], spawner.clone());
    let _v = first_viewer(&s, &spawner, 1).await;
    let crash = |n: usize| {
        let _ = spawner.spawns.lock().unwrap()[n]
            .ctl
            .exit
            .send(Some(ExitKind::Code(1)));
    };
    // Two quick crashes: 0.5 s, then 1 s (±20 %), after the pipe drain.
    let mut delays = Vec::new();
    for n in 0..2 {
        crash(n);
        let t = Instant::now();
        wait_spawns(&spawner, n + 2).await;
        delays.push(t.elapsed());
    }
    assert!(
        delays[1] > delays[0] + Duration::from_millis(200),
        "{delays:?}"
    );
    // Run 61 s, with frames so that it is not a stall, then crash.
    feed(&spawner, 2, &flv_start()).await;
    for i in 1..=61 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        feed(&spawner, 2, &flv_frame(i * 1000, false)).await;
    }
    crash(2);
    let t = Instant::now();
    wait_spawns(&spawner, 4).await;
    assert!(
        t.elapsed() < delays[1],
        "backoff did not start afresh: {:?}",
        t.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn stalled_producer_is_restarted() {
    let spawner = Arc::new(FakeSpawner::default());
    let s = stream(vec![source(500)], spawner.clone());
    let _v = first_viewer(&s, &spawner, 1).await;
    // No frame for stall_timeout (5 s): the producer is stopped and restarted.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(exited(&spawner, 0));
    wait_spawns(&spawner, 2).await;
    let info = s.info().await.unwrap();
    assert!(
        info.producers[0]
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("stalled"),
        "{info:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_busy_stream_still_notices_a_stall() {
    let spawner = Arc::new(FakeSpawner::default());
    let s = stream(vec![source(500)], spawner.clone());
    let _v = first_viewer(&s, &spawner, 1).await;
    // The web UI polls every 100 ms: the actor is never idle for long.
    let poller = tokio::spawn({
        let s = s.clone();
        async move {
            loop {
                let _ = s.info().await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(exited(&spawner, 0), "stall_timeout (5 s) passed unnoticed");
    poller.abort();
}

#[tokio::test(start_paused = true)]
async fn internal_reader_neither_starts_nor_keeps_alive() {
    let spawner = Arc::new(FakeSpawner::default());
    let s = stream(vec![source(500)], spawner.clone());
    let internal = JoinRequest {
        internal: true,
        ..viewer()
    };
    assert!(matches!(
        s.join(internal.clone()).await,
        Err(StreamError::NotRunning { .. })
    ));
    assert_eq!(spawner.spawns.lock().unwrap().len(), 0);

    let real = first_viewer(&s, &spawner, 1).await;
    let _reader = s.join(internal).await.unwrap();
    drop(real);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        exited(&spawner, 0),
        "an internal reader must not keep the stream alive"
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_everything() {
    let spawner = Arc::new(FakeSpawner {
        ignore_term: true,
        ..Default::default()
    });
    let s = stream(vec![source(700)], spawner.clone());
    let _v = first_viewer(&s, &spawner, 1).await;
    let t = Instant::now();
    s.shutdown().await;
    assert!(exited(&spawner, 0));
    assert!(
        t.elapsed() < Duration::from_millis(700) + supervisor::DRAIN + Duration::from_millis(100)
    );
    assert!(matches!(
        s.join(viewer()).await,
        Err(StreamError::ShuttingDown { .. })
    ));
}

/// An FLV stream that only says it carries AAC.
fn flv_aac_track() -> Vec<u8> {
    let mut m = Muxer::new();
    let info = TrackInfo {
        codec: Codec::Aac,
        config: Bytes::from_static(&[0x12, 0x10]),
    };
    let mut out = m.header(false, true).to_vec();
    for c in m.track(&info, 0).unwrap() {
        out.extend_from_slice(&c);
    }
    out
}

#[tokio::test(start_paused = true)]
async fn real_viewers_wait_for_every_source_to_announce_its_tracks() {
    // [camera, transcoder]: the camera's keyframe makes the stream ready,
    // but a viewer admitted then would start without the transcoder's AAC.
    let spawner = Arc::new(FakeSpawner::default());
    let s = stream(vec![source(500), source(500)], spawner.clone());
    let join = tokio::spawn({
        let s = s.clone();
        async move { s.join(viewer()).await }
    });
    wait_spawns(&spawner, 2).await;
    feed(&spawner, 0, &flv_start()).await;
    // Internal readers get in at once (the transcoder is one of them).
    let internal = JoinRequest {
        internal: true,
        exclude: Some(1),
        ..viewer()
    };
    let _reader = tokio::time::timeout(Duration::from_millis(100), s.join(internal))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !join.is_finished(),
        "admitted before source 1 announced its tracks"
    );
    feed(&spawner, 1, &flv_aac_track()).await;
    let mut v = tokio::time::timeout(Duration::from_millis(100), join)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // What the muxer knows when it writes its first frame (and its header).
    let mut audio = None;
    while let Delivery::Tracks { audio: a, .. } = v.next().await.unwrap() {
        audio = a;
    }
    assert_eq!(
        audio.map(|a| a.codec),
        Some(Codec::Aac),
        "the first viewer starts with both tracks"
    );
}

#[tokio::test(start_paused = true)]
async fn a_silent_source_delays_viewers_only_for_the_settle_grace() {
    let spawner = Arc::new(FakeSpawner::default());
    let s = stream(vec![source(500), source(500)], spawner.clone());
    let t = Instant::now();
    let _v = first_viewer(&s, &spawner, 2).await;
    let waited = t.elapsed();
    assert!(
        waited >= SETTLE_GRACE && waited < SETTLE_GRACE + Duration::from_millis(500),
        "{waited:?}"
    );
}

#[test]
fn redacts_credentials() {
    assert_eq!(
        redact("ffmpeg -i rtsp://admin:hunter2@10.0.0.9/s -c copy"),
        "ffmpeg -i rtsp://admin:***@10.0.0.9/s -c copy"
    );
    assert_eq!(redact("http://host/a@b"), "http://host/a@b");
}

/// Each stream's mailbox allocates 32 `Msg`s up front (tokio's mpsc block),
/// idle or not: the boxed variants keep that at about 1 KB a stream.
#[test]
fn a_message_is_small() {
    assert!(
        std::mem::size_of::<Msg>() <= 32,
        "{}",
        std::mem::size_of::<Msg>()
    );
}

// Publishers' helpers, for `tests/publish.rs` and `tests/metrics.rs`.

/// Feeds an FLV byte stream through `p`; false once `p` lost the stream.
fn publish_flv(p: &Publisher, data: &[u8]) -> bool {
    let mut d = flv::Demuxer::new();
    if !data.starts_with(b"FLV") {
        d.push(&Muxer::new().header(true, false)); // a lone tag
    }
    d.push(data);
    let mut ok = true;
    while let Some(ev) = d.next_event().unwrap() {
        ok &= p.publish(ev);
    }
    ok
}

/// The next frame a viewer gets, skipping track notices.
async fn next_frame(v: &mut Viewer) -> Frame {
    loop {
        match v.next().await.expect("viewer still attached") {
            Delivery::Frame(f) => return f,
            Delivery::Tracks { .. } => {}
        }
    }
}

/// A publish-only stream with one publisher and one viewer who has seen
/// its first keyframe.
async fn published(publish: PublishConfig) -> (Stream, Publisher, Viewer) {
    let s = stream_with(vec![], Arc::new(FakeSpawner::default()), publish);
    let p = s.publish("rtmp", None).await.unwrap();
    let join = tokio::spawn({
        let s = s.clone();
        async move { s.join(viewer()).await }
    });
    assert!(publish_flv(&p, &flv_start()));
    let mut v = join
        .await
        .unwrap()
        .expect("a viewer of the published stream");
    assert!(next_frame(&mut v).await.keyframe);
    (s, p, v)
}
