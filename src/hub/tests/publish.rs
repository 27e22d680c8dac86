//! Publishers under the paused clock: a publish-only stream, takeover,
//! the publisher's timeout, viewers carried over to the next publisher,
//! a publisher arriving mid-teardown, and a live publisher before the
//! sources.

use super::*;

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
