//! HLS against real clients (ffmpeg) and a real playlist parser (m3u8-rs).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn server(extra: &str) -> Server {
    // GOP 1 s, target 2 s: segments of two GOPs.
    Server::start(&format!("  demo: \"{}\"\n", demo_source(25)), extra)
}

fn playlist(srv: &Server) -> m3u8_rs::MediaPlaylist {
    let (status, body) = srv.try_get("/api/stream.m3u8?src=demo").unwrap();
    assert_eq!(status, 200, "{body}");
    m3u8_rs::parse_media_playlist_res(body.as_bytes()).unwrap_or_else(|e| panic!("{e:?}\n{body}"))
}

#[test]
fn ffmpeg_reads_twelve_clean_seconds_of_ts_and_of_fmp4() {
    let _p = heavy();
    let srv = server("");
    for (query, file) in [("", "out.ts"), ("&mp4", "out.mp4")] {
        let out_file = srv.dir.path().join(file);
        let (out, _) = run_with_timeout(
            Command::new("ffmpeg")
                .args([
                    "-v",
                    "error",
                    "-i",
                    &srv.url(&format!("/api/stream.m3u8?src=demo{query}")),
                    "-t",
                    "12",
                    "-c",
                    "copy",
                ])
                .arg(&out_file),
            Duration::from_secs(60),
        );
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v = ffprobe(
            out_file.to_str().unwrap(),
            "codec_name",
            &["-show_entries", "format=duration"],
        );
        let d: f64 = v["format"]["duration"].as_str().unwrap().parse().unwrap();
        assert!((11.0..13.0).contains(&d), "{file}: duration {d}: {v}");
        let codecs: Vec<&str> = v["streams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["codec_name"].as_str().unwrap())
            .collect();
        assert!(
            codecs.contains(&"h264") && codecs.contains(&"aac"),
            "{file}: {v}"
        );
        assert_decodes_cleanly(&out_file, file);
    }
    // The fMP4 playlist names its init segment, and serves it.
    let (_, body) = srv.try_get("/api/stream.m3u8?src=demo&mp4").unwrap();
    let p = m3u8_rs::parse_media_playlist_res(body.as_bytes()).unwrap();
    let map = p.segments[0].map.as_ref().expect("EXT-X-MAP");
    let (status, init) = srv.try_get(&format!("/api/{}", map.uri)).unwrap();
    assert_eq!(status, 200);
    assert!(
        init.contains("ftyp") && init.contains("moov"),
        "not an init segment"
    );
}

#[test]
fn playlist_is_valid_and_its_sequence_only_moves_forward() {
    let _p = heavy();
    // A window of 2 segments of 2 s: it moves within the test.
    let srv = server("hls: { window: 2 }\n");
    let mut last_seq = 0;
    let mut seen_segments = 0;
    let t = Instant::now();
    // Until segment 0 has left the playlist and its grace (2 more).
    while last_seq < 3 && t.elapsed() < Duration::from_secs(25) {
        let p = playlist(&srv);
        assert!(
            p.media_sequence >= last_seq,
            "media sequence went back: {} < {last_seq}",
            p.media_sequence
        );
        last_seq = p.media_sequence;
        for s in &p.segments {
            assert!(
                s.duration as f64 <= p.target_duration as f64,
                "EXTINF {} > TARGETDURATION {}",
                s.duration,
                p.target_duration
            );
            assert!(s.program_date_time.is_some(), "no PROGRAM-DATE-TIME");
            // GOP 1 s < target 2 s: segments close to the target.
            assert!(
                (1.9..2.2).contains(&s.duration),
                "segment of {} s",
                s.duration
            );
        }
        seen_segments = seen_segments.max(p.media_sequence as usize + p.segments.len());
        std::thread::sleep(Duration::from_millis(700));
    }
    assert!(last_seq >= 3, "the window never moved: sequence {last_seq}");

    assert!(seen_segments >= 4);
    // A segment that left the window is gone; one in it is there.
    let p = playlist(&srv);
    let (status, _) = srv.try_get(&format!("/api/{}", p.segments[0].uri)).unwrap();
    assert_eq!(status, 200);
    // What HLS served shows on its (single) consumer.
    let (_, v) = srv.get_json("/api/streams?src=demo");
    assert!(v["consumers"][0]["bytes"].as_u64().unwrap_or(0) > 0, "{v}");
    let (status, body) = srv.try_get("/api/hls/ts/demo/0.ts").unwrap();
    assert_eq!(status, 404, "{body}");
    let (status, _) = srv.try_get("/api/stream.m3u8?src=nope").unwrap();
    assert_eq!(status, 404);
}

#[test]
fn twenty_viewers_share_one_segmenter_which_leaves_after_the_keepalive() {
    let _p = heavy();
    let srv = server("hls: { keepalive: 3s }\n");
    let pollers: Vec<_> = (0..20)
        .map(|_| {
            let port = srv.port;
            std::thread::spawn(move || {
                for _ in 0..8 {
                    let (status, _) = http_get(port, "/api/stream.m3u8?src=demo").unwrap();
                    assert_eq!(status, 200);
                    std::thread::sleep(Duration::from_millis(500));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    let (_, v) = srv.get_json("/api/streams?src=demo");
    let hls: Vec<_> = v["consumers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["protocol"] == "hls")
        .collect();
    assert_eq!(hls.len(), 1, "one segmenter for all: {v}");
    assert_eq!(v["producers"][0]["restarts"], 0, "{v}");
    let pid = srv.producer_pids("demo")[0];
    for p in pollers {
        p.join().unwrap();
    }
    // Nobody asks any more: after the keep-alive the segmenter leaves and
    // the producer stops.
    srv.wait_for("the producer to stop", Duration::from_secs(15), || {
        group_members(pid).is_empty()
    });
    let (_, v) = srv.get_json("/api/streams?src=demo");
    assert!(v["consumers"].as_array().unwrap().is_empty(), "{v}");
}

#[test]
fn a_producer_restart_is_a_discontinuity_and_segments_keep_coming() {
    let _p = heavy();
    let srv = server("");
    let p = playlist(&srv);
    assert!(!p.segments.iter().any(|s| s.discontinuity));
    // A player that is watching when it happens.
    let out_ts = srv.dir.path().join("through.ts");
    let player = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-i",
            &srv.url("/api/stream.m3u8?src=demo"),
            "-t",
            "14",
            "-c",
            "copy",
        ])
        .arg(&out_ts)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let pid = srv.producer_pids("demo")[0];
    signal(pid, 9);
    let t = Instant::now();
    let mut found = None;
    while t.elapsed() < Duration::from_secs(20) {
        let p = playlist(&srv);
        if let Some(i) = p.segments.iter().position(|s| s.discontinuity) {
            found = Some((p.media_sequence + i as u64, p));
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let (disc_seq, _) = found.expect("no EXT-X-DISCONTINUITY after the producer was killed");
    srv.wait_for(
        "segments after the discontinuity",
        Duration::from_secs(15),
        || {
            let p = playlist(&srv);
            p.media_sequence + p.segments.len() as u64 > disc_seq + 1
        },
    );
    assert_ne!(srv.producer_pids("demo")[0], pid, "restarted");
    // The player kept going through the discontinuity.
    let out = player.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = ffprobe(
        out_ts.to_str().unwrap(),
        "codec_name",
        &["-show_entries", "format=duration"],
    );
    let d: f64 = v["format"]["duration"].as_str().unwrap().parse().unwrap();
    assert!(d > 12.0, "the player stopped at {d} s");
}

#[test]
fn a_republish_is_a_discontinuity_not_a_new_sequence() {
    let _p = heavy();
    let rtsp = free_port();
    let srv = Server::start(
        "  pushed:\n",
        &format!("rtsp: {{ listen: \"127.0.0.1:{rtsp}\" }}\n"),
    );
    let clip = clip(srv.dir.path());
    let push = || push(&clip, rtsp, "tcp");
    let get = || {
        let (status, body) = srv.try_get("/api/stream.m3u8?src=pushed").unwrap();
        (
            status,
            m3u8_rs::parse_media_playlist_res(body.as_bytes()).ok(),
        )
    };
    let mut first = push();
    let mut last = 0;
    srv.wait_for("two segments", Duration::from_secs(20), || match get() {
        (200, Some(p)) => {
            last = p.media_sequence + p.segments.len() as u64;
            last >= 2
        }
        _ => false,
    });
    first.kill().unwrap();
    first.wait().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let mut second = push();
    let mut found = false;
    let t = Instant::now();
    while !found && t.elapsed() < Duration::from_secs(25) {
        if let (200, Some(p)) = get() {
            let end = p.media_sequence + p.segments.len() as u64;
            assert!(end >= last, "the playlist went back: {end} < {last}");
            last = end;
            found = p.segments.iter().any(|s| s.discontinuity);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    second.kill().unwrap();
    second.wait().unwrap();
    assert!(found, "no EXT-X-DISCONTINUITY after the re-publish");
}
