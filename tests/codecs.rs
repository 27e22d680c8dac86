//! Any codec a camera sends reaches the hub (issue 16, point 1): ffmpeg
//! 5.1 cannot put H.265 or Opus in the FLV pipe that carries H.264 and
//! AAC, so such a source moves to the RTSP publish-back, once, and plays.

mod common;

use std::time::Duration;

use common::*;

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
    let got = ffprobe(&url, "codec_type,codec_name", &["-rtsp_transport", "tcp"]);
    let mut streams: Vec<String> = got["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["codec_name"].as_str().unwrap_or("").to_string())
        .collect();
    streams.sort();
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
