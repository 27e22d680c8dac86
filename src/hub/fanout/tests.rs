//! The fan-out with its selectors, on fake sources: late joiners, source
//! switches and restarts, laggards, and the ring's life (issue 17).

use super::*;
use crate::media::ms_to_ticks;
use bytes::Bytes;
use std::sync::atomic::AtomicUsize;

struct Count(Arc<AtomicUsize>);
impl ReadyNotify for Count {
    fn ready(&self, _run: u64) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    fn settled(&self, _run: u64) {}
}

/// Each test item is its own batch.
fn publish(f: &Fanout, source: SourceId, g: Generation, ev: Event) -> bool {
    f.publish(source, g, ev)
}

fn fanout(n: usize) -> (Fanout, Arc<AtomicUsize>) {
    let c = Arc::new(AtomicUsize::new(0));
    (Fanout::new("t", n, None, Box::new(Count(c.clone()))), c)
}

fn vtrack() -> Event {
    Event::Track(TrackInfo {
        codec: Codec::H264,
        config: Bytes::from_static(&[1, 66, 0, 30, 0xff, 0xe1, 0]),
    })
}
fn atrack() -> Event {
    Event::Track(TrackInfo {
        codec: Codec::Aac,
        config: Bytes::from_static(&[0x12, 0x10]),
    })
}
fn vframe(ms: i64, key: bool) -> Event {
    Event::Frame(Frame {
        codec: Codec::H264,
        dts: ms_to_ticks(ms),
        pts: ms_to_ticks(ms),
        keyframe: key,
        payload: Bytes::from(vec![0u8; 100]),
        wire: Default::default(),
    })
}
fn aframe(ms: i64) -> Event {
    Event::Frame(Frame {
        codec: Codec::Aac,
        dts: ms_to_ticks(ms),
        pts: ms_to_ticks(ms),
        keyframe: true,
        payload: Bytes::from_static(&[1, 2, 3]),
        wire: Default::default(),
    })
}

async fn frames(sel: &mut Selector, n: usize) -> Vec<Delivery> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(
            tokio::time::timeout(std::time::Duration::from_secs(1), sel.next())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    v
}

#[tokio::test]
async fn late_joiner_starts_at_the_cached_keyframe() {
    let (f, ready) = fanout(1);
    let g = Generation(1);
    f.attach(0, g);
    publish(&f, 0, g, vtrack());
    publish(&f, 0, g, atrack());
    publish(&f, 0, g, vframe(0, false)); // before any keyframe: not cached
    assert_eq!(ready.load(Ordering::SeqCst), 0);
    publish(&f, 0, g, vframe(40, true));
    assert_eq!(ready.load(Ordering::SeqCst), 1);
    publish(&f, 0, g, aframe(41));
    publish(&f, 0, g, vframe(80, false));

    let mut sel = Selector::new(f.subscribe(), None, ANY_AUDIO, Default::default());
    let got = frames(&mut sel, 5).await;
    assert!(matches!(
        &got[0],
        Delivery::Tracks {
            video: Some(_),
            audio: None
        }
    ));
    assert!(matches!(
        &got[1],
        Delivery::Tracks {
            video: Some(_),
            audio: Some(_)
        }
    ));
    let Delivery::Frame(k) = &got[2] else {
        panic!("{got:?}")
    };
    assert!(k.keyframe);
    assert!(matches!(&got[3], Delivery::Frame(a) if a.codec == Codec::Aac));
    assert!(matches!(&got[4], Delivery::Frame(v) if !v.keyframe));
    // Payloads are shared with the cache, not copied.
    let cached = f.subscribe().backlog.into_iter().find_map(|i| match i {
        Item::Frame { frame, .. } if frame.keyframe => Some(frame),
        _ => None,
    });
    assert_eq!(cached.unwrap().payload.as_ptr(), k.payload.as_ptr());
}

#[tokio::test]
async fn stale_generation_cannot_publish_or_detach() {
    let (f, _) = fanout(1);
    f.attach(0, Generation(1));
    f.attach(0, Generation(2));
    assert!(!publish(&f, 0, Generation(1), vtrack()));
    assert!(publish(&f, 0, Generation(2), vtrack()));
    f.detach(0, Generation(1));
    let mut sel = Selector::new(f.subscribe(), None, ANY_AUDIO, Default::default());
    assert!(matches!(
        frames(&mut sel, 1).await[0],
        Delivery::Tracks { video: Some(_), .. }
    ));
}

#[tokio::test]
async fn restart_keeps_timestamps_monotonic() {
    let (f, _) = fanout(1);
    f.attach(0, Generation(1));
    publish(&f, 0, Generation(1), vtrack());
    let mut sel = Selector::new(f.subscribe(), None, ANY_AUDIO, Default::default());
    publish(&f, 0, Generation(1), vframe(5000, true));
    publish(&f, 0, Generation(1), vframe(5040, false));
    f.detach(0, Generation(1));
    f.attach(0, Generation(2));
    publish(&f, 0, Generation(2), vtrack());
    // The new run starts its clock at zero again.
    publish(&f, 0, Generation(2), vframe(0, true));
    let mut dts = Vec::new();
    for d in frames(&mut sel, 6).await {
        if let Delivery::Frame(fr) = d {
            dts.push(fr.dts);
        }
    }
    assert_eq!(dts.len(), 3);
    assert!(dts.windows(2).all(|w| w[0] < w[1]), "{dts:?}");
}

#[tokio::test]
async fn switching_sources_never_takes_a_viewer_back_in_time() {
    // Source 1 is the preferred one (a publisher), source 0 a camera.
    let c = Arc::new(AtomicUsize::new(0));
    let f = Fanout::new("t", 2, Some(1), Box::new(Count(c)));
    let (cam, publ) = (Generation(1), Generation(2));
    f.attach(0, cam);
    publish(&f, 0, cam, vtrack());
    publish(&f, 0, cam, vframe(0, true));
    let mut sel = Selector::new(f.subscribe(), None, ANY_AUDIO, Default::default());
    // The publisher arrives and bursts 3 s of media at once: its clock
    // runs ahead of the camera's.
    f.attach(1, publ);
    publish(&f, 1, publ, vtrack());
    for i in 0..75 {
        publish(&f, 1, publ, vframe(i * 40, i % 25 == 0));
    }
    publish(&f, 0, cam, vframe(40, false));
    f.detach(1, publ);
    // Back to the camera, whose next keyframe is on its own clock.
    publish(&f, 0, cam, vframe(80, true));
    publish(&f, 0, cam, vframe(120, false));
    f.flush();
    let mut dts = Vec::new();
    while let Ok(d) = tokio::time::timeout(std::time::Duration::from_millis(200), sel.next()).await
    {
        if let Delivery::Frame(fr) = d.unwrap() {
            dts.push(fr.dts);
        }
    }
    assert_eq!(dts.len(), 1 + 75 + 2, "{dts:?}");
    // Forward in whole milliseconds too, as FLV and RTMP carry them.
    let ms: Vec<i64> = dts.iter().map(|d| d * 1000 / TIMESCALE).collect();
    assert!(ms.windows(2).all(|w| w[0] < w[1]), "{ms:?}");
}

#[tokio::test]
async fn lagging_viewer_skips_to_next_keyframe_then_is_dropped_if_it_never_catches_up() {
    let (f, _) = fanout(1);
    let g = Generation(1);
    f.attach(0, g);
    publish(&f, 0, g, vtrack());
    publish(&f, 0, g, vframe(0, true));
    let stats = Arc::new(ViewerStats::default());
    let mut sel = Selector::new(f.subscribe(), None, ANY_AUDIO, stats.clone());
    frames(&mut sel, 2).await; // tracks + keyframe
    for i in 1..(RING as i64 + 10) {
        publish(&f, 0, g, vframe(i * 40, false));
    }
    publish(&f, 0, g, vframe(99_000, true));
    let got = frames(&mut sel, 1).await;
    assert!(
        matches!(&got[0], Delivery::Frame(fr) if fr.keyframe),
        "skipped to the keyframe"
    );
    assert!(stats.drops.load(Ordering::Relaxed) > 0);

    // Now lag again and again with no keyframe in between.
    let mut ms = 100_000;
    let mut result = None;
    for _ in 0..MAX_LAGS_IN_A_ROW + 1 {
        for _ in 0..RING + 10 {
            ms += 40;
            publish(&f, 0, g, vframe(ms, false));
        }
        match tokio::time::timeout(std::time::Duration::from_millis(50), sel.next()).await {
            Ok(Err(e)) => {
                result = Some(e);
                break;
            }
            Ok(Ok(d)) => panic!("delivered {d:?} without a keyframe"),
            Err(_) => {}
        }
    }
    assert_eq!(result, Some(Ended::TooSlow(MAX_LAGS_IN_A_ROW)));
}

#[tokio::test]
async fn lowest_source_wins_and_excluded_source_is_invisible() {
    // cam: [camera (video only here), "ffmpeg:cam#audio=aac"]
    let (f, _) = fanout(2);
    f.attach(0, Generation(1));
    f.attach(1, Generation(2));
    publish(&f, 0, Generation(1), vtrack());
    publish(&f, 0, Generation(1), vframe(0, true));
    publish(&f, 1, Generation(2), atrack());
    publish(&f, 1, Generation(2), aframe(10));

    let mut viewer = Selector::new(f.subscribe(), None, ANY_AUDIO, Default::default());
    let got = frames(&mut viewer, 3).await;
    assert!(
        matches!(
            &got[1],
            Delivery::Tracks {
                video: Some(_),
                audio: Some(_)
            }
        ),
        "{got:?}"
    );

    // The transcoder reading the stream back sees only source 0.
    let mut reader = Selector::new(f.subscribe(), Some(1), ANY_AUDIO, Default::default());
    let got = frames(&mut reader, 2).await;
    assert!(
        matches!(
            &got[0],
            Delivery::Tracks {
                video: Some(_),
                audio: None
            }
        ),
        "{got:?}"
    );
    publish(&f, 1, Generation(2), aframe(30));
    publish(&f, 0, Generation(1), vframe(40, false));
    let got = frames(&mut reader, 1).await;
    assert!(
        matches!(&got[0], Delivery::Frame(fr) if fr.codec == Codec::H264),
        "{got:?}"
    );
}

/// `[camera with PCMA, "ffmpeg:cam#audio=aac"]`: source 0 has PCMA,
/// source 1 AAC.
fn camera_pcma_and_transcoder_aac() -> (Fanout, TrackInfo) {
    let (f, _) = fanout(2);
    f.attach(0, Generation(1));
    f.attach(1, Generation(2));
    let pcma = TrackInfo {
        codec: Codec::Pcma,
        config: Bytes::new(),
    };
    publish(&f, 0, Generation(1), Event::Track(pcma.clone()));
    publish(&f, 1, Generation(2), atrack());
    (f, pcma)
}

#[tokio::test]
async fn aac_is_preferred_over_g711_from_a_lower_source() {
    // cam2: [camera with PCMA, "ffmpeg:cam2#audio=aac"]
    let (f, pcma) = camera_pcma_and_transcoder_aac();
    let mut viewer = Selector::new(f.subscribe(), None, ANY_AUDIO, Default::default());
    let got = frames(&mut viewer, 2).await;
    assert!(
        matches!(&got[1], Delivery::Tracks { audio: Some(a), .. } if a.codec == Codec::Aac),
        "{got:?}"
    );
    // The transcoder itself reads the camera's PCMA.
    let mut reader = Selector::new(f.subscribe(), Some(1), ANY_AUDIO, Default::default());
    let got = frames(&mut reader, 1).await;
    assert_eq!(
        got[0],
        Delivery::Tracks {
            video: None,
            audio: Some(pcma)
        }
    );
}

#[tokio::test(start_paused = true)]
async fn every_frame_goes_out_at_once_and_a_read_is_one_batch() {
    use futures_util::FutureExt;
    let (f, ready) = fanout(1);
    let g = Generation(1);
    f.attach(0, g);
    f.publish(0, g, vtrack());
    f.publish(0, g, atrack());
    f.publish(0, g, vframe(0, true));
    assert_eq!(ready.load(Ordering::SeqCst), 1);
    let mut sel = Selector::new(f.subscribe(), None, ANY_AUDIO, Default::default());
    frames(&mut sel, 3).await;
    // Was: these two waited up to 100 ms for company.
    for ev in [aframe(10), vframe(40, false)] {
        f.publish(0, g, ev);
        let d = sel.next().now_or_never();
        assert!(matches!(d, Some(Ok(Delivery::Frame(_)))), "{d:?}");
    }
    // What one read brought goes as one batch, when the read is done.
    f.queue(0, g, aframe(31));
    f.queue(0, g, vframe(80, false));
    assert!(sel.next().now_or_never().is_none(), "sent before the flush");
    f.flush();
    assert_eq!(sel.cursor.rx.len(), 1, "one batch for the read");
    let got = frames(&mut sel, 2).await;
    assert!(matches!(&got[0], Delivery::Frame(a) if a.codec == Codec::Aac));
    assert!(matches!(&got[1], Delivery::Frame(v) if v.codec == Codec::H264));
}

#[test]
fn ready_is_told_once_per_run_with_the_run_number() {
    struct Runs(Arc<Mutex<Vec<String>>>);
    impl ReadyNotify for Runs {
        fn ready(&self, run: u64) {
            self.0.lock().unwrap().push(format!("ready {run}"));
        }
        fn settled(&self, run: u64) {
            self.0.lock().unwrap().push(format!("settled {run}"));
        }
    }
    let runs = Arc::new(Mutex::new(Vec::new()));
    let f = Fanout::new("t", 2, None, Box::new(Runs(runs.clone())));
    for g in [Generation(1), Generation(2)] {
        f.attach(0, g);
        f.attach(1, Generation(g.0 + 10));
        publish(&f, 0, g, vtrack());
        publish(&f, 0, g, vframe(0, true));
        publish(&f, 0, g, vframe(40, true));
        // Source 1 has not said what it carries: not settled yet.
        publish(&f, 1, Generation(g.0 + 10), atrack());
        f.reset();
    }
    assert_eq!(
        *runs.lock().unwrap(),
        vec!["ready 0", "settled 0", "ready 1", "settled 1"]
    );
}

#[tokio::test]
async fn each_viewer_gets_the_audio_its_output_takes() {
    let (f, pcma) = camera_pcma_and_transcoder_aac();
    // RTSP asking for PCMA gets the camera's, as it is.
    let mut rtsp = Selector::new(f.subscribe(), None, &[Codec::Pcma], Default::default());
    let got = frames(&mut rtsp, 1).await;
    assert_eq!(
        got[0],
        Delivery::Tracks {
            video: None,
            audio: Some(pcma)
        }
    );
    // HLS takes AAC only: without a transcoder it would get no audio.
    let (g, _) = fanout(1);
    g.attach(0, Generation(1));
    publish(
        &g,
        0,
        Generation(1),
        Event::Track(TrackInfo {
            codec: Codec::Pcma,
            config: Bytes::new(),
        }),
    );
    publish(&g, 0, Generation(1), vtrack());
    let mut hls = Selector::new(g.subscribe(), None, &[Codec::Aac], Default::default());
    let got = frames(&mut hls, 1).await;
    assert!(
        matches!(
            &got[0],
            Delivery::Tracks {
                video: Some(_),
                audio: None
            }
        ),
        "{got:?}"
    );
}

#[tokio::test]
async fn a_viewer_far_behind_the_live_edge_skips_then_is_dropped() {
    let (f, _) = fanout(1);
    let g = Generation(1);
    f.attach(0, g);
    publish(&f, 0, g, vtrack());
    // A long GOP in the cache: a late joiner starts 8 s behind the edge
    // without being taken for a slow viewer.
    for i in 0..200 {
        publish(&f, 0, g, vframe(i * 40, i == 0));
    }
    let mut late = Selector::new(f.subscribe(), None, ANY_AUDIO, Default::default());
    let got = frames(&mut late, 2).await;
    assert!(
        matches!(&got[1], Delivery::Frame(fr) if fr.keyframe && fr.dts < f.latest.load(Ordering::Relaxed) - MAX_BEHIND)
    );

    // A live viewer whose reads fall 10 s behind (GOP 1 s).
    publish(&f, 0, g, vframe(200 * 40, true));
    let stats = Arc::new(ViewerStats::default());
    let mut slow = Selector::new(f.subscribe(), None, ANY_AUDIO, stats.clone());
    frames(&mut slow, 2).await;
    for i in 201..450 {
        f.queue(0, g, vframe(i * 40, i % 25 == 0)); // one batch, in the ring
    }
    f.flush();
    let mut ended = None;
    for _ in 0..500 {
        match tokio::time::timeout(std::time::Duration::from_millis(100), slow.next()).await {
            Ok(Ok(Delivery::Frame(fr))) => {
                assert!(
                    fr.keyframe || f.latest.load(Ordering::Relaxed) - fr.dts <= MAX_BEHIND,
                    "sent a frame far behind"
                );
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                ended = Some(e);
                break;
            }
            Err(_) => break,
        }
    }
    assert_eq!(ended, Some(Ended::TooSlow(MAX_LAGS_IN_A_ROW)));
    assert!(stats.drops.load(Ordering::Relaxed) > 0);
}

#[tokio::test]
async fn reset_ends_every_cursor() {
    let (f, _) = fanout(1);
    let mut sel = Selector::new(f.subscribe(), None, ANY_AUDIO, Default::default());
    f.reset();
    assert_eq!(sel.next().await, Err(Ended::Stopped));
    assert!(!f.is_ready());
}

/// Issue 17: an idle stream holds no ring (1024 slots, about 48 KiB,
/// was most of what 100 idle streams cost); a viewer makes it, the end
/// of the run frees it, and a viewer of the next run gets a new one.
#[tokio::test]
async fn the_ring_lives_only_while_a_run_has_viewers() {
    let (f, _) = fanout(1);
    let g = Generation(1);
    f.attach(0, g);
    publish(&f, 0, g, vtrack());
    publish(&f, 0, g, vframe(0, true));
    assert!(f.lock().tx.is_none(), "no viewer yet, no ring");
    let mut sel = Selector::new(f.subscribe(), None, ANY_AUDIO, Default::default());
    assert!(f.lock().tx.is_some());
    // The viewer joined with the GOP cache: the keyframe sent before it
    // came, into no ring, still reaches it.
    let got = frames(&mut sel, 2).await;
    assert!(matches!(&got[0], Delivery::Tracks { video: Some(_), .. }));
    assert!(matches!(&got[1], Delivery::Frame(v) if v.keyframe));
    publish(&f, 0, g, vframe(40, false));
    assert_eq!(frames(&mut sel, 1).await.len(), 1);
    f.reset();
    assert!(f.lock().tx.is_none(), "the run ended, the ring goes");
    assert_eq!(sel.next().await, Err(Ended::Stopped));
    let g = Generation(2);
    f.attach(0, g);
    let mut sel = Selector::new(f.subscribe(), None, ANY_AUDIO, Default::default());
    assert!(f.lock().tx.is_some());
    publish(&f, 0, g, vtrack());
    publish(&f, 0, g, vframe(0, true));
    let got = frames(&mut sel, 2).await;
    assert!(matches!(&got[1], Delivery::Frame(v) if v.keyframe));
}

#[tokio::test]
async fn try_next_takes_what_is_ready_and_never_loses_or_invents_a_batch() {
    let (f, _) = fanout(1);
    let g = Generation(1);
    f.attach(0, g);
    publish(&f, 0, g, vtrack());
    publish(&f, 0, g, vframe(0, true));
    let stats = Arc::new(ViewerStats::default());
    let mut sel = Selector::new(f.subscribe(), None, ANY_AUDIO, stats.clone());
    // The join snapshot is ready at once; then nothing is.
    assert!(matches!(sel.try_next(), Some(Ok(Delivery::Tracks { .. }))));
    assert!(matches!(sel.try_next(), Some(Ok(Delivery::Frame(_)))));
    assert!(sel.try_next().is_none());
    // Every published frame, in order, whether taken by waiting or not.
    for ms in [40, 80] {
        publish(&f, 0, g, vframe(ms, false));
    }
    let dts = |d: Option<Result<Delivery, Ended>>| match d {
        Some(Ok(Delivery::Frame(fr))) => fr.dts,
        other => panic!("{other:?}"),
    };
    let a = dts(sel.try_next());
    let b = dts(Some(sel.next().await));
    assert!(b > a);
    assert!(sel.try_next().is_none(), "nothing more was sent");
    publish(&f, 0, g, vframe(120, false));
    assert!(dts(sel.try_next()) > b);
    // A lag is told, counted, and the viewer waits for a keyframe.
    for i in 0..(RING as i64 + 10) {
        publish(&f, 0, g, vframe(200 + i, false));
    }
    assert!(sel.try_next().is_none(), "skipping to the next keyframe");
    assert!(stats.drops.load(Ordering::Relaxed) > 0);
    publish(&f, 0, g, vframe(5_000, true));
    assert!(matches!(sel.try_next(), Some(Ok(Delivery::Frame(fr))) if fr.keyframe));
    // The stream's end reaches a viewer that never waits, too.
    f.reset();
    assert_eq!(sel.try_next().map(|r| r.err()), Some(Some(Ended::Stopped)));
}
