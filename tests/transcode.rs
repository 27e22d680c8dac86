//! go2rtc's way to fit a camera to a client: a second stream that
//! transcodes the first (`cam_aac: ffmpeg:cam#audio=aac`, what Home
//! Assistant's docs tell users to write). The transcoder is an ordinary
//! viewer of the stream it reads: it starts it cold, keeps it up while it
//! runs, and lets it stop with it (issue 16, point 4).

mod common;

use std::time::Duration;

use common::*;

fn codecs(srv: &Server, stream: &str) -> Vec<(String, String)> {
    probe_streams(&srv.url(&format!("/api/stream.flv?src={stream}")))
}

/// Both ways our transcoders read another stream: over RTSP (when it is
/// on: it carries every codec) and over HTTP-FLV (when it is off).
fn transcodes_of_a_cold_stream_start_it_and_let_it_stop(rtsp: bool) {
    let _p = heavy();
    let cam = Camera::start_with(0, "h264", "pcma");
    let extra = if rtsp {
        format!("rtsp: {{ listen: \"127.0.0.1:{}\" }}\n", free_port())
    } else {
        String::new()
    };
    let srv = Server::start(
        &format!(
            "  cam: \"{}\"\n  cam_aac: \"ffmpeg:cam#audio=aac\"\n  cam_h264: \"ffmpeg:cam#video=h264\"\n",
            cam.url
        ),
        &extra,
    );
    assert!(srv.producer_pids("cam").is_empty(), "cam is cold");

    // Cold: the first viewer of cam_aac starts cam through the transcoder.
    assert_eq!(
        codecs(&srv, "cam_aac"),
        vec![("audio".to_string(), "aac".to_string())],
        "{}",
        srv.log()
    );
    let (st, s) = open_flv(srv.port, "cam_aac");
    assert_eq!(st, 200, "{}", srv.log());
    let viewer = Drain::new(s);
    srv.wait_for("cam_aac's audio", Duration::from_secs(20), || {
        viewer.bytes() > 4_000
    });
    assert!(!srv.producer_pids("cam").is_empty(), "cam runs for cam_aac");
    let (_, v) = srv.get_json("/api/streams?src=cam");
    let readers = v["consumers"].as_array().unwrap();
    assert!(
        !readers.is_empty() && readers.iter().all(|c| c["internal"] != true),
        "the transcoder is an ordinary viewer of cam: {v}"
    );
    let via = if rtsp { "rtsp" } else { "http-flv" };
    assert!(
        readers.iter().all(|c| c["protocol"] == via),
        "the transcoder reads over {via}: {v}"
    );

    // Warm: a second transcode of the running camera plays too.
    assert_eq!(
        codecs(&srv, "cam_h264"),
        vec![("video".to_string(), "h264".to_string())],
        "{}",
        srv.log()
    );

    // The last viewer leaves: the transcoder stops, and with it cam.
    viewer.close();
    srv.wait_for("cam_aac to stop", Duration::from_secs(20), || {
        srv.producer_pids("cam_aac").is_empty()
    });
    srv.wait_for(
        "cam to stop after its transcoders",
        Duration::from_secs(20),
        || srv.producer_pids("cam").is_empty() && srv.producer_pids("cam_h264").is_empty(),
    );

    // Cold again, now the video transcode first.
    assert_eq!(
        codecs(&srv, "cam_h264"),
        vec![("video".to_string(), "h264".to_string())],
        "{}",
        srv.log()
    );
}

#[test]
fn transcodes_of_a_cold_stream_over_rtsp() {
    transcodes_of_a_cold_stream_start_it_and_let_it_stop(true);
}

#[test]
fn transcodes_of_a_cold_stream_over_http_flv() {
    transcodes_of_a_cold_stream_start_it_and_let_it_stop(false);
}
