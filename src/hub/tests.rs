//! The stream actor under tokio's paused clock, with fake children: every
//! deadline is exercised without waiting for it.

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
        Arc::new(Deps {
            spawner: Arc::new(spawner),
            ffmpeg_bin: "ffmpeg".into(),
            internal_base: None,
            rtsp_base: None,
            publish,
            internal_tokens: Default::default(),
            ffmpeg_templates: Default::default(),
        }),
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
        Arc::new(Deps {
            spawner: Arc::new(NoSuchProgram(Default::default())),
            ffmpeg_bin: "ffmpeg".into(),
            internal_base: None,
            rtsp_base: None,
            publish: PublishConfig::default(),
            internal_tokens: Default::default(),
            ffmpeg_templates: Default::default(),
        }),
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

#[tokio::test(start_paused = true)]
async fn a_publish_only_stream_needs_a_publisher_and_a_lone_publisher_keeps_it_up() {
    let s = stream(vec![], Arc::new(FakeSpawner::default()));
    assert!(matches!(
        s.join(viewer()).await,
        Err(StreamError::NoSource { .. })
    ));
    let p = s.publish("rtsp", None).await.unwrap();
    let info = s.info().await.unwrap();
    assert!(info.producers[0].url.contains("publisher"), "{info:?}");
    // No viewers: the publisher alone keeps it up, as long as it sends.
    for ms in 0..30 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(publish_flv(&p, &flv_frame(ms * 1000, true)[..]) || ms > 0);
    }
    assert!(p.is_current(), "a publisher that sends is never released");
}

#[tokio::test(start_paused = true)]
async fn a_new_publisher_takes_over_and_the_old_ones_late_detach_is_a_no_op() {
    let (s, old, mut v) = published(PublishConfig::default()).await;
    let new = s
        .publish("rtmp", None)
        .await
        .expect("takeover is the default");
    assert!(!old.is_current(), "the old attachment was released");
    assert!(
        !old.publish(flv::Event::Frame(Frame::new(
            Codec::H264,
            0,
            0,
            true,
            Bytes::from_static(&[0, 0, 0, 1, 0x65])
        ))),
        "the old publisher is told to hang up"
    );
    // Its connection's cleanup runs only now, after the new one attached.
    drop(old);
    settle().await;
    assert!(new.is_current(), "a late detach removed its replacement");
    assert!(publish_flv(&new, &flv_start()));
    let f = next_frame(&mut v).await;
    assert!(
        f.keyframe,
        "the viewer resumes at the new publisher's keyframe"
    );
    let info = s.info().await.unwrap();
    assert_eq!(info.producers.len(), 1, "{info:?}");
}

#[tokio::test(start_paused = true)]
async fn without_takeover_a_newcomer_waits_until_the_silent_one_times_out() {
    let cfg = PublishConfig {
        takeover: false,
        ..Default::default()
    };
    let (s, old, _v) = published(cfg.clone()).await;
    match s.publish("rtmp", None).await {
        Err(StreamError::Busy { by, .. }) => assert!(by.contains("takeover"), "{by}"),
        other => panic!("expected Busy, got {:?}", other.map(|_| ())),
    }
    // The old one goes half-open: nothing for publish.timeout.
    tokio::time::sleep(cfg.timeout - Duration::from_millis(500)).await;
    assert!(matches!(
        s.publish("rtmp", None).await,
        Err(StreamError::Busy { .. })
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!old.is_current(), "a silent publisher is released");
    let new = s.publish("rtmp", None).await.expect("free once released");
    // The old one wakes up (SIGCONT): it is refused and disturbs nothing.
    assert!(!publish_flv(&old, &flv_frame(40, false)));
    drop(old);
    settle().await;
    assert!(new.is_current());
}

#[tokio::test(start_paused = true)]
async fn viewers_carry_over_to_the_next_publisher_with_monotonic_time() {
    let (s, p, mut v) = published(PublishConfig::default()).await;
    assert!(publish_flv(&p, &flv_frame(40, false)));
    let last = next_frame(&mut v).await.dts;
    drop(p); // kill -9: the connection's Publisher is dropped
             // The viewer hears the tracks are gone, but stays attached.
    match v.next().await {
        Ok(Delivery::Tracks {
            video: None,
            audio: None,
        }) => {}
        other => panic!("expected the tracks to go, got {other:?}"),
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let p2 = s.publish("rtmp", None).await.expect("re-publish at once");
    // The new publisher's clock starts at 0 again.
    assert!(publish_flv(&p2, &flv_start()));
    match v.next().await {
        Ok(Delivery::Tracks { video: Some(_), .. }) => {}
        other => panic!("expected the new sequence header first, got {other:?}"),
    }
    let f = next_frame(&mut v).await;
    assert!(f.keyframe);
    assert!(f.dts > last, "time went back: {} after {last}", f.dts);
}

#[tokio::test(start_paused = true)]
async fn viewers_get_a_clean_end_when_nobody_republishes_in_time() {
    let cfg = PublishConfig::default();
    let (s, p, mut v) = published(cfg.clone()).await;
    drop(p);
    let t0 = Instant::now();
    let ended = loop {
        match v.next().await {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert_eq!(ended, Ended::Stopped);
    let waited = t0.elapsed();
    assert!(
        waited >= cfg.timeout && waited < cfg.timeout + Duration::from_secs(1),
        "viewers waited {waited:?} for a new publisher"
    );
    s.publish("rtmp", None).await.expect("publishable again");
}

#[tokio::test(start_paused = true)]
async fn a_publisher_leaving_an_unwatched_stream_frees_it_at_once() {
    let s = stream(vec![], Arc::new(FakeSpawner::default()));
    let p = s.publish("http", None).await.unwrap();
    assert!(publish_flv(&p, &flv_start()));
    drop(p);
    settle().await;
    let info = s.info().await.unwrap();
    assert!(info.producers.is_empty(), "{info:?}");
    // At once, not after a timeout.
    let t0 = Instant::now();
    let p2 = s.publish("http", None).await.unwrap();
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert!(publish_flv(&p2, &flv_start()));
}

#[tokio::test(start_paused = true)]
async fn a_publisher_arriving_mid_teardown_waits_for_it_then_attaches() {
    let spawner = Arc::new(FakeSpawner {
        ignore_term: true,
        ..Default::default()
    });
    let s = stream_with(
        vec![source(2000)],
        spawner.clone(),
        PublishConfig {
            replace_sources: crate::config::ReplaceSources::All,
            ..Default::default()
        },
    );
    drop(first_viewer(&s, &spawner, 1).await);
    tokio::time::sleep(Duration::from_millis(100)).await; // stop under way
    assert!(!exited(&spawner, 0));
    let t0 = Instant::now();
    let p = s
        .publish("rtmp", None)
        .await
        .expect("attached after the stop");
    assert!(
        exited(&spawner, 0),
        "attached before the old run was reaped"
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        t0.elapsed()
    );
    assert!(p.is_current());
    assert_eq!(
        spawner.spawns.lock().unwrap().len(),
        1,
        "no viewer: no source"
    );
}

#[tokio::test(start_paused = true)]
async fn a_publisher_is_refused_into_a_stream_with_sources_unless_allowed() {
    let spawner = Arc::new(FakeSpawner::default());
    let s = stream(vec![source(100)], spawner.clone());
    let _v = first_viewer(&s, &spawner, 1).await;
    match s.publish("rtmp", None).await {
        Err(StreamError::Forbidden { reason, .. }) => {
            assert!(reason.contains("replace_sources"), "{reason}")
        }
        other => panic!("expected Forbidden, got {:?}", other.map(|_| ())),
    }
    let info = s.info().await.unwrap();
    assert_eq!(info.producers.len(), 1, "no publisher slot: {info:?}");
    // Named in the list: let in.
    let s = stream_with(
        vec![source(100)],
        spawner.clone(),
        PublishConfig {
            replace_sources: crate::config::ReplaceSources::Streams(["cam".to_string()].into()),
            ..Default::default()
        },
    );
    assert!(s.publish("rtmp", None).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_live_publisher_comes_before_the_sources() {
    let spawner = Arc::new(FakeSpawner::default());
    let s = stream_with(
        vec![source(100)],
        spawner.clone(),
        PublishConfig {
            replace_sources: crate::config::ReplaceSources::All,
            ..Default::default()
        },
    );
    let mut v = first_viewer(&s, &spawner, 1).await;
    assert!(next_frame(&mut v).await.keyframe);
    let p = s.publish("rtmp", None).await.unwrap();
    let mut d = flv::Demuxer::new();
    d.push(&flv_start());
    let mut evs = Vec::new();
    while let Some(ev) = d.next_event().unwrap() {
        evs.push(ev);
    }
    for ev in evs {
        assert!(p.publish(ev));
    }
    // The source keeps sending too; the viewer follows the publisher
    // (were it still on the source, this non-key frame would come next).
    feed(&spawner, 0, &flv_frame(40, false)).await;
    let got = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            match v.next().await.unwrap() {
                Delivery::Frame(f) => return f,
                Delivery::Tracks { .. } => {}
            }
        }
    })
    .await
    .expect("a frame");
    assert!(
        got.keyframe,
        "switching to the publisher starts at its keyframe"
    );
    let info = s.info().await.unwrap();
    assert_eq!(info.producers.len(), 2, "{info:?}");
}

#[tokio::test(start_paused = true)]
async fn a_publisher_task_that_panics_releases_the_stream() {
    let cfg = PublishConfig {
        takeover: false,
        ..Default::default()
    };
    let s = stream_with(vec![], Arc::new(FakeSpawner::default()), cfg);
    let task = tokio::spawn({
        let s = s.clone();
        async move {
            let p = s.publish("rtmp", None).await.unwrap();
            assert!(publish_flv(&p, &flv_start()));
            panic!("a bug in a protocol task");
        }
    });
    assert!(task.await.unwrap_err().is_panic());
    settle().await;
    // Released by the unwinding, not by a timeout (no time has passed).
    let t0 = Instant::now();
    s.publish("rtmp", None)
        .await
        .expect("free after the panic, without takeover");
    assert_eq!(t0.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_viewer_waiting_for_a_first_keyframe_is_carried_over_too() {
    let s = stream(vec![], Arc::new(FakeSpawner::default()));
    let p = s.publish("rtmp", None).await.unwrap();
    let join = tokio::spawn({
        let s = s.clone();
        async move { s.join(viewer()).await }
    });
    settle().await;
    drop(p); // gone before sending a keyframe
    tokio::time::sleep(Duration::from_secs(1)).await;
    let p2 = s.publish("rtmp", None).await.expect("re-publish");
    assert!(publish_flv(&p2, &flv_start()));
    let mut v = join
        .await
        .unwrap()
        .expect("admitted on the new publisher's keyframe");
    assert!(next_frame(&mut v).await.keyframe);
}

#[tokio::test(start_paused = true)]
async fn a_waiting_viewer_gets_an_error_when_no_publisher_comes_back() {
    let s = stream(vec![], Arc::new(FakeSpawner::default()));
    let p = s.publish("rtmp", None).await.unwrap();
    let join = tokio::spawn({
        let s = s.clone();
        async move { s.join(viewer()).await }
    });
    settle().await;
    drop(p);
    let t0 = Instant::now();
    let r = join.await.unwrap();
    assert!(
        matches!(r, Err(StreamError::NoSource { .. })),
        "{:?}",
        r.map(|_| ())
    );
    assert!(t0.elapsed() <= PublishConfig::default().timeout + Duration::from_millis(100));
}

#[test]
fn redacts_credentials() {
    assert_eq!(
        redact("ffmpeg -i rtsp://admin:hunter2@10.0.0.9/s -c copy"),
        "ffmpeg -i rtsp://admin:***@10.0.0.9/s -c copy"
    );
    assert_eq!(redact("http://host/a@b"), "http://host/a@b");
}

/// `/api/metrics`' numbers follow a stream through a run, a crash and
/// restart, the last viewer leaving and a second run, without asking the
/// actor: they are read from the handle's atomics.
#[tokio::test(start_paused = true)]
async fn metrics_follow_the_stream_across_runs() {
    let spawner = Arc::new(FakeSpawner::default());
    let s = stream(vec![source(500)], spawner.clone());
    let m = s.metrics().clone();
    assert_eq!(m.state(), "idle");
    assert_eq!((m.frames_in(), m.bytes_in(), m.uptime(0)), (0, 0, 0.0));

    let v = first_viewer(&s, &spawner, 1).await;
    settle().await;
    assert_eq!(m.state(), "running");
    assert_eq!(m.frames_in(), 1);
    assert_eq!(m.bytes_in(), 5, "the keyframe's payload");
    let out = m.output("test");
    assert_eq!(out.viewers(), 1);
    // An output counts what it writes once; the stream's total sees it.
    v.stats().bytes.fetch_add(1234, Ordering::Relaxed);
    assert_eq!(out.bytes_out(), 1234);
    assert_eq!(v.stats().bytes.load(Ordering::Relaxed), 1234);

    tokio::time::sleep(Duration::from_millis(1500)).await;
    feed(&spawner, 0, &flv_frame(40, false)).await;
    settle().await;
    assert_eq!(m.frames_in(), 2);
    let up = m.uptime(0);
    assert!((1.5..2.0).contains(&up), "uptime {up}");
    assert_eq!(m.uptime(1), 0.0, "no publisher");

    // A crash: the restart is counted and the uptime starts again.
    let _ = spawner.spawns.lock().unwrap()[0]
        .ctl
        .exit
        .send(Some(ExitKind::Code(1)));
    tokio::time::sleep(supervisor::DRAIN + Duration::from_millis(50)).await;
    assert_eq!(m.restarts(0), 1);
    assert_eq!(m.uptime(0), 0.0, "in backoff, nothing runs");
    wait_spawns(&spawner, 2).await;
    settle().await;
    assert!(m.uptime(0) < 0.1, "a fresh producer: {}", m.uptime(0));

    // The last viewer leaves: the stream stops; counters stay.
    drop(v);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(m.state(), "idle");
    assert_eq!(out.viewers(), 0);
    assert_eq!(m.uptime(0), 0.0);
    let frames = m.frames_in();

    // A second run of the same actor counts on from there.
    let join = tokio::spawn({
        let s = s.clone();
        async move { s.join(viewer()).await }
    });
    wait_spawns(&spawner, 3).await;
    feed(&spawner, 2, &flv_start()).await;
    let _v = join.await.unwrap().expect("joined again");
    settle().await;
    assert_eq!(m.state(), "running");
    assert_eq!(m.frames_in(), frames + 1);
    assert_eq!(m.restarts(0), 1, "a stop and start is no restart");
    assert_eq!(out.viewers(), 1);
    assert_eq!(out.bytes_out(), 1234);
}

#[tokio::test(start_paused = true)]
async fn metrics_count_internal_readers_apart_and_publishers_uptime() {
    let spawner = Arc::new(FakeSpawner::default());
    let s = stream(vec![source(500)], spawner.clone());
    let m = s.metrics().clone();
    let _real = first_viewer(&s, &spawner, 1).await;
    let reader = s
        .join(JoinRequest {
            internal: true,
            protocol: "http-flv",
            ..viewer()
        })
        .await
        .unwrap();
    assert_eq!(m.output(crate::metrics::INTERNAL).viewers(), 1);
    assert_eq!(m.output("http-flv").viewers(), 0);
    drop(reader);
    assert_eq!(m.output(crate::metrics::INTERNAL).viewers(), 0);

    let (s, p, _v) = published(PublishConfig::default()).await;
    let m = s.metrics().clone();
    // A publish-only stream: its only slot is the publisher's.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(publish_flv(&p, &flv_frame(1000, true)));
    assert!(m.uptime(0) >= 1.0, "publisher uptime {}", m.uptime(0));
    assert!(m.frames_in() >= 2 && m.bytes_in() >= 10);
    drop(p);
    settle().await;
    assert_eq!(m.uptime(0), 0.0);
}

/// A slow viewer's drops add up in its stream's total.
#[tokio::test(start_paused = true)]
async fn metrics_count_a_slow_viewers_drops() {
    let spawner = Arc::new(FakeSpawner::default());
    let s = stream(vec![source(500)], spawner.clone());
    let m = s.metrics().clone();
    let mut v = first_viewer(&s, &spawner, 1).await;
    // The viewer reads nothing while far more batches than the ring holds
    // go by (each keyframe is a batch of its own).
    for i in 1..=(fanout::RING as i64 + 20) {
        feed(&spawner, 0, &flv_frame(i * 40, true)).await;
        settle().await;
    }
    for _ in 0..4 {
        let _ = v.next().await;
    }
    let own = v.stats().drops.load(Ordering::Relaxed);
    assert!(own > 0, "the viewer lagged");
    assert_eq!(m.drops(), own);
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
