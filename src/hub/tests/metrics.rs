//! `/api/metrics`' numbers as the hub keeps them: across runs, internal
//! readers apart, publishers' uptime, a slow viewer's drops.

use super::*;

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
