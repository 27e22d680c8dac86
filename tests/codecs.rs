//! Any codec a camera sends reaches the hub (issue 16, point 1): ffmpeg
//! 5.1 cannot put H.265 or Opus in the FLV pipe that carries H.264 and
//! AAC, so such a source moves to the RTSP publish-back, once, and plays.

mod common;

use std::time::Duration;

use common::*;

/// The codec names ffprobe sees over RTSP (TCP), sorted.
fn rtsp_codecs(url: &str) -> Vec<String> {
    let got = ffprobe(url, "codec_type,codec_name", &["-rtsp_transport", "tcp"]);
    let mut streams: Vec<String> = got["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["codec_name"].as_str().unwrap_or("").to_string())
        .collect();
    streams.sort();
    streams
}

fn rtsp_extra() -> (u16, String) {
    let port = free_port();
    (port, format!("rtsp: {{ listen: \"127.0.0.1:{port}\" }}\n"))
}

#[test]
fn a_camera_with_opus_audio_moves_to_the_rtsp_publish_back_and_plays() {
    let _p = heavy();
    let cam = Camera::start_with(0, "h264", "opus");
    let (rtsp, extra) = rtsp_extra();
    let srv = Server::start(&format!("  cam: \"{}\"\n", cam.url), &extra);
    let url = format!("rtsp://127.0.0.1:{rtsp}/cam?video&audio=opus");
    let streams = rtsp_codecs(&url);
    assert_eq!(streams, ["h264", "opus"], "{}", srv.log());
    let (_, v) = srv.get_json("/api/streams?src=cam");
    let p = &v["producers"][0];
    // The move is no failure: no restart counted, no error shown.
    assert_eq!(p["restarts"], 0, "{v}");
    assert!(p["last_error"].is_null(), "{v}");
    assert!(
        srv.log()
            .contains("it publishes back over RTSP from now on"),
        "{}",
        srv.log()
    );
    // And a second start goes there at once (one spawn, no FLV attempt).
    srv.wait_for("cam to stop", Duration::from_secs(20), || {
        srv.producer_pids("cam").is_empty()
    });
    let spawned = srv.log().matches("producer started").count();
    let got = ffprobe(&url, "codec_type,codec_name", &["-rtsp_transport", "tcp"]);
    assert_eq!(got["streams"].as_array().unwrap().len(), 2, "{got}");
    assert_eq!(
        srv.log().matches("producer started").count(),
        spawned + 1,
        "{}",
        srv.log()
    );
}

// Skipped by a plain `cargo test`; scripts/test installs Chromium and
// playwright-core and runs it, where a missing one is a failure.
#[test]
#[ignore = "needs Chromium and playwright-core: run scripts/test, which installs them"]
fn chromium_plays_an_h265_camera_through_the_h264_transcode_which_stops_with_the_page() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let browser = chromium_or_fail();
    let _p = heavy();
    let cam = Camera::start_with(0, "h265", "pcma");
    let (_, extra) = rtsp_extra();
    let srv = Server::start(
        &format!("  cam: \"{}\"\n", cam.url),
        &format!("{extra}webrtc: {{ listen: \":{}\" }}\n", free_port()),
    );
    let (o, _) = run_with_timeout(
        std::process::Command::new("node")
            .current_dir(root.join("tests/browser"))
            .env("CHROMIUM", browser)
            .arg("h265_fallback.mjs")
            .arg(srv.url(""))
            .arg("cam"),
        Duration::from_secs(150),
    );
    assert!(
        o.status.success(),
        "browser check failed:\n{}\n{}\n--- server log ---\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
        srv.log()
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("H.264 transcode"), "{out}");
    assert!(
        srv.log()
            .contains("viewer cannot take the stream's video: joining the H.264 transcode"),
        "{}",
        srv.log()
    );
    // The pages are closed: the transcode stops, and with it the camera's
    // producer, which ran only for it.
    srv.wait_for("every producer to stop", Duration::from_secs(30), || {
        srv.producer_pids("cam").is_empty() && children_of(srv.pid()).is_empty()
    });
}

#[test]
fn an_h265_and_pcma_camera_plays_from_a_plain_rtsp_source() {
    let _p = heavy();
    let cam = Camera::start_with(0, "h265", "pcma");
    let (rtsp, extra) = rtsp_extra();
    let srv = Server::start(&format!("  cam: \"{}\"\n", cam.url), &extra);
    // Was: ffmpeg refused HEVC in FLV and was restarted once a second,
    // forever, and every viewer got a 5xx.
    let streams = rtsp_codecs(&format!("rtsp://127.0.0.1:{rtsp}/cam?video&audio=pcma"));
    assert_eq!(streams, ["hevc", "pcm_alaw"], "{}", srv.log());
    // The progressive MP4 carries it as it is (hvc1).
    let mp4 = probe_streams(&srv.url("/api/stream.mp4?src=cam"));
    assert!(
        mp4.contains(&("video".to_string(), "hevc".to_string())),
        "{mp4:?}"
    );
    let (_, v) = srv.get_json("/api/streams?src=cam");
    assert_eq!(v["producers"][0]["restarts"], 0, "{v}");
    // An RTSP client that takes only H.264 gets the shared transcode.
    let got = ffprobe(
        &format!("rtsp://127.0.0.1:{rtsp}/cam?video=h264"),
        "codec_type,codec_name",
        &["-rtsp_transport", "tcp"],
    );
    assert_eq!(got["streams"][0]["codec_name"], "h264", "{got}");
}

#[test]
fn with_rtsp_off_an_h265_camera_says_what_it_needs() {
    let _p = heavy();
    let cam = Camera::start_with(0, "h265", "none");
    let srv = Server::start(&format!("  cam: \"{}#start_timeout=4s\"\n", cam.url), "");
    let (st, body) = srv.try_get("/api/stream.flv?src=cam").unwrap();
    assert!(st >= 500, "{st} {body}");
    assert!(body.contains("rtsp.listen is off"), "{body}");
    assert!(body.contains("hevc"), "{body}");
}
