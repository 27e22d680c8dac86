//! An MJPEG camera (RFC 2435 over RTSP, what older and cheap cameras
//! send) reaches the hub through the RTSP publish-back and plays (issue
//! 16, point 1): its JPEGs pass through `/api/stream.mjpeg` and
//! `/api/frame.jpeg` untouched, RTSP viewers get them as RFC 2435, and
//! `ffmpeg:cam#video=h264` transcodes them.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

fn mjpeg_camera_server(cam: &Camera, more: &str) -> (Server, u16) {
    let rtsp = free_port();
    let srv = Server::start(
        &format!("  cam: \"{}\"\n{more}", cam.url),
        &format!("rtsp: {{ listen: \"127.0.0.1:{rtsp}\" }}\n"),
    );
    (srv, rtsp)
}

/// ffprobe's (codec_name, width, height) of the first video stream.
fn video_of(url: &str, extra: &[&str]) -> (String, u64, u64) {
    let v = ffprobe(url, "codec_type,codec_name,width,height", extra);
    let s = v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["codec_type"] == "video")
        .unwrap_or_else(|| panic!("{url}: no video: {v}"))
        .clone();
    (
        s["codec_name"].as_str().unwrap_or("").to_string(),
        s["width"].as_u64().unwrap_or(0),
        s["height"].as_u64().unwrap_or(0),
    )
}

/// The first `n` JPEGs of `/api/stream.mjpeg?src=stream`, cut by their
/// parts' Content-Length.
fn mjpeg_parts(port: u16, stream: &str, n: usize) -> Vec<Vec<u8>> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        // HTTP/1.0: the body comes unchunked, to the close.
        "GET /api/stream.mjpeg?src={stream} HTTP/1.0\r\nHost: x\r\n\r\n"
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 16384];
    let mut parts = Vec::new();
    let mut at = 0;
    while parts.len() < n {
        let r = s.read(&mut buf).unwrap();
        assert!(r > 0, "mjpeg ended: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..r]);
        assert!(got.len() < 64 << 20, "no parts in 64 MiB");
        // Each part: "--frame\r\n" headers "\r\n\r\n", Content-Length bytes.
        while let Some(h) = find(&got[at..], b"--frame\r\n") {
            let head_start = at + h;
            let Some(e) = find(&got[head_start..], b"\r\n\r\n") else {
                break;
            };
            let head = String::from_utf8_lossy(&got[head_start..head_start + e]).to_string();
            assert!(head.contains("Content-Type: image/jpeg"), "{head}");
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .expect("Content-Length")
                .trim()
                .parse()
                .unwrap();
            let body = head_start + e + 4;
            if got.len() < body + len {
                break;
            }
            parts.push(got[body..body + len].to_vec());
            at = body + len;
        }
    }
    let head = String::from_utf8_lossy(&got[..200.min(got.len())]).to_string();
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    assert!(
        head.contains("multipart/x-mixed-replace; boundary=frame"),
        "{head}"
    );
    parts
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

fn save(dir: &Path, name: &str, b: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, b).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn an_mjpeg_camera_passes_through_stream_mjpeg_and_frame_jpeg() {
    let _p = heavy();
    let cam = Camera::start_with(0, "mjpeg", "pcmu");
    let (srv, _) = mjpeg_camera_server(&cam, "");

    let parts = mjpeg_parts(srv.port, "cam", 5);
    for (i, jpeg) in parts.iter().enumerate() {
        // What our RFC 2435 depacketizer rebuilt (RFC 2435 Appendix B:
        // SOI then DQT, no JFIF APP0): the camera's picture, not a
        // transcode's (ffmpeg's mjpeg encoder writes APP0 first).
        assert!(
            jpeg.starts_with(&[0xFF, 0xD8, 0xFF, 0xDB]) && jpeg.ends_with(&[0xFF, 0xD9]),
            "part {i}: {:02X?}",
            &jpeg[..8.min(jpeg.len())]
        );
        let f = save(srv.dir.path(), &format!("part{i}.jpg"), jpeg);
        assert_eq!(video_of(&f, &[]), ("mjpeg".into(), 320, 240), "part {i}");
        assert_decodes_cleanly(Path::new(&f), &format!("part {i}"));
    }
    // No transcoder was started for it: the camera's one producer runs.
    let (_, v) = srv.get_json("/api/streams?src=cam");
    assert_eq!(v["producers"].as_array().unwrap().len(), 1, "{v}");

    // frame.jpeg: the latest picture as it is, no decoder run.
    let frame = Command::new("curl")
        .args(["-sf", &srv.url("/api/frame.jpeg?src=cam")])
        .output()
        .unwrap();
    assert!(frame.status.success(), "{}", srv.log());
    assert!(
        frame.stdout.starts_with(&[0xFF, 0xD8, 0xFF, 0xDB]),
        "{:02X?}\n{}",
        &frame.stdout[..8.min(frame.stdout.len())],
        srv.log()
    );
    let f = save(srv.dir.path(), "frame.jpg", &frame.stdout);
    assert_eq!(video_of(&f, &[]), ("mjpeg".into(), 320, 240));
    // And resized, through ffmpeg.
    assert_eq!(
        video_of(&srv.url("/api/frame.jpeg?src=cam&width=160"), &[]),
        ("mjpeg".into(), 160, 120),
        "{}",
        srv.log()
    );
}

#[test]
fn rtsp_out_of_an_mjpeg_camera_records_clean() {
    let _p = heavy();
    let cam = Camera::start_with(0, "mjpeg", "pcmu");
    let (srv, rtsp) = mjpeg_camera_server(&cam, "");
    let url = format!("rtsp://127.0.0.1:{rtsp}/cam");

    let mut c = RtspClient::connect(rtsp);
    let (status, head, sdp) = c.request("DESCRIBE", &url, &[("Accept", "application/sdp".into())]);
    assert_eq!(status, 200, "{head}\n{}", srv.log());
    assert!(
        sdp.contains("m=video 0 RTP/AVP 26\r\na=rtpmap:26 JPEG/90000\r\n"),
        "{sdp}"
    );
    assert!(sdp.contains("PCMU/8000"), "{sdp}");
    drop(c);

    // A plain viewer gets the MJPEG (as from go2rtc), and so does one
    // asking for it.
    for (query, file) in [("", "plain.mkv"), ("?video=mjpeg", "asked.mkv")] {
        let out = srv.dir.path().join(file);
        let o = run_with_timeout(
            Command::new("ffmpeg")
                .args(["-v", "error", "-y", "-rtsp_transport", "tcp", "-i"])
                .arg(format!("{url}{query}"))
                .args(["-t", "3", "-c", "copy"])
                .arg(&out),
            Duration::from_secs(60),
        )
        .0;
        assert!(
            o.status.success(),
            "{file}: {}\n{}",
            String::from_utf8_lossy(&o.stderr),
            srv.log()
        );
        assert_eq!(
            video_of(out.to_str().unwrap(), &[]),
            ("mjpeg".into(), 320, 240),
            "{file}"
        );
        assert_decodes_cleanly(&out, file);
    }
    // Another RFC 2435 implementation than ffmpeg's takes our packets:
    // GStreamer's depayloader and decoder, over TCP and UDP.
    for protocols in ["tcp", "udp"] {
        let (o, took) = run_with_timeout(
            Command::new("timeout")
                .args(["-s", "INT", "30", "gst-launch-1.0", "-q", "-e"])
                .args([
                    "rtspsrc",
                    &format!("location={url}?video=mjpeg"),
                    &format!("protocols={protocols}"),
                    "latency=0",
                ])
                .args(["!", "rtpjpegdepay", "!", "jpegdec"])
                .args(["!", "fakesink", "num-buffers=50", "sync=false"]),
            Duration::from_secs(40),
        );
        assert!(
            o.status.success(),
            "gst-launch over {protocols}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        // 50 pictures, not the timeout's INT (which -e turns into a clean
        // end too).
        assert!(
            took < Duration::from_secs(25),
            "gst-launch over {protocols}: no pictures"
        );
    }
}

#[test]
fn an_h264_transcode_of_an_mjpeg_camera_plays() {
    let _p = heavy();
    let cam = Camera::start_with(0, "mjpeg", "pcmu");
    let (srv, _) = mjpeg_camera_server(&cam, "  cam_h264: \"ffmpeg:cam#video=h264\"\n");
    assert_eq!(
        video_of(&srv.url("/api/stream.flv?src=cam_h264"), &[]),
        ("h264".into(), 320, 240),
        "{}",
        srv.log()
    );
}

/// Clients whose output has no MJPEG form (HTTP-FLV, MP4/MSE, HLS) get the
/// camera's shared H.264 transcode instead of a stream with no picture.
#[test]
fn flv_mp4_and_hls_viewers_of_an_mjpeg_camera_get_the_h264_transcode() {
    let _p = heavy();
    let cam = Camera::start_with(0, "mjpeg", "pcmu");
    let (srv, _rtsp) = mjpeg_camera_server(&cam, "");
    for path in [
        "/api/stream.flv?src=cam",
        "/api/stream.mp4?src=cam",
        "/api/stream.m3u8?src=cam",
    ] {
        let (codec, w, h) = video_of(&srv.url(path), &[]);
        assert_eq!((codec.as_str(), w, h), ("h264", 320, 240), "{path}");
    }
    assert!(
        srv.log()
            .contains("viewer cannot take the stream's video: joining the H.264 transcode"),
        "{}",
        srv.log()
    );
}

/// Home Assistant registers `ffmpeg:NAME#video=mjpeg` beside every camera:
/// a plain RTSP viewer (which takes MJPEG, after H.264 and H.265) must not
/// start that transcoder; `stream.mjpeg` does.
#[test]
fn a_plain_rtsp_viewer_does_not_start_an_mjpeg_transcoder() {
    let _p = heavy();
    let cam = Camera::start();
    let rtsp = free_port();
    let srv = Server::start(
        &format!(
            "  cam:\n    - {}\n    - \"ffmpeg:cam#video=mjpeg\"\n",
            cam.url
        ),
        &format!("rtsp: {{ listen: \"127.0.0.1:{rtsp}\" }}\n"),
    );
    let mut c = RtspClient::play_tcp(rtsp, "cam");
    let _ = &mut c;
    srv.wait_for("the camera", Duration::from_secs(15), || {
        !srv.producer_pids("cam").is_empty()
    });
    std::thread::sleep(Duration::from_secs(2));
    let (_, v) = srv.get_json("/api/streams?src=cam");
    assert_eq!(v["producers"][0]["state"], "running", "{v}");
    assert_eq!(v["producers"][1]["state"], "idle", "{v}");
    drop(c);
    let parts = mjpeg_parts(srv.port, "cam", 2);
    assert!(parts.iter().all(|p| p.starts_with(&[0xff, 0xd8])));
}
