//! Relaying an RTSP stream with B-frames (issue 17, found benching 16
//! cameras): our `-c copy` child used to exit with "Packet is missing PTS"
//! every time a viewer joined, so the viewer never got a picture.
//!
//! The camera: ffmpeg encoding x264 with B-frames (`-bf 2`, as encoders do by
//! default, and as a camera relayed by another server arrives), publishing
//! into our own stream `a` over RTSP. Stream `b` reads `a` back over RTSP,
//! as it would read any camera, with the `-c copy` child every RTSP source
//! gets.

mod common;

use common::*;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// ffmpeg encoding a live test picture with two B-frames between
/// references, published to `url` over RTSP/TCP.
fn bframe_camera(url: &str) -> std::process::Child {
    Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-re", "-f", "lavfi", "-i"])
        .arg("testsrc2=size=320x240:rate=25")
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-bf", "2"])
        .args(["-g", "50", "-pix_fmt", "yuv420p"])
        .args(["-f", "rtsp", "-rtsp_transport", "tcp", url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn an_rtsp_source_with_b_frames_is_relayed() {
    let _permit = heavy();
    let rtsp = free_port();
    let srv = Server::start(
        &format!("  a:\n  b: rtsp://127.0.0.1:{rtsp}/a\n"),
        &format!("rtsp: {{ listen: \"127.0.0.1:{rtsp}\" }}\n"),
    );
    let _camera = Kill(bframe_camera(&format!("rtsp://127.0.0.1:{rtsp}/a")));
    srv.wait_for("the camera publishing a", Duration::from_secs(20), || {
        srv.log()
            .lines()
            .any(|l| l.contains("publisher attached") && l.contains("stream=a"))
    });
    // Join mid-GOP, after the camera has run a while.
    std::thread::sleep(Duration::from_secs(3));

    let (status, mut flv) = open_flv(srv.port, "b");
    assert_eq!(status, 200, "{}", srv.log());
    // Six seconds of the relay: the old child died about 2 s after it
    // started (once ffmpeg had probed the input and wrote its first
    // packet), and again after every restart.
    flv.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut bytes = 0usize;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(6) {
        match flv.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => bytes += n,
            Err(e) => panic!(
                "reading b: {e} after {bytes} bytes\n--- server log ---\n{}",
                srv.log()
            ),
        }
    }
    let log = srv.log();
    assert!(
        !log.contains("Packet is missing PTS"),
        "b's copying child refused a packet:\n{log}"
    );
    let b_failed = log
        .lines()
        .any(|l| l.contains("producer failed") && l.contains("stream=\"b\""));
    assert!(!b_failed, "b's producer failed:\n{log}");
    // 320x240 at 25 fps is about 100 KB/s from x264 ultrafast.
    assert!(bytes > 100_000, "only {bytes} bytes of b in 6 s:\n{log}");
}
