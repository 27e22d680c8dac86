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

#[test]
fn an_rtsp_source_with_b_frames_is_relayed() {
    let _permit = heavy();
    let rtsp = free_port();
    let srv = Server::start(
        &format!("  a:\n  b: rtsp://127.0.0.1:{rtsp}/a\n"),
        &format!("rtsp: {{ listen: \"127.0.0.1:{rtsp}\" }}\n"),
    );
    let _camera = KillOnDrop(bframe_camera(&format!("rtsp://127.0.0.1:{rtsp}/a")));
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

/// A file source plays forever (`-stream_loop -1`), and its picture goes on
/// past the first loop. The PTS fill above (a bitstream filter) must not be
/// put on a file: ffmpeg 5.1 flushes the filter when the file loops and
/// drops every video packet after it, so the demo stream's picture stopped
/// after its first pass while its audio went on.
#[test]
fn a_looped_file_keeps_its_picture_after_the_loop() {
    let _permit = heavy();
    let dir = std::env::temp_dir().join(format!("sv-loop-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("two-seconds.mp4");
    let made = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i"])
        .arg("testsrc2=size=320x240:rate=25:duration=2")
        .args(["-f", "lavfi", "-i", "sine=frequency=440:duration=2"])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-g", "25"])
        .args(["-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest"])
        .arg(&file)
        .status()
        .unwrap();
    assert!(made.success(), "ffmpeg could not make the test file");
    let srv = Server::start(&format!("  loop: {}\n", file.display()), "");
    // HTTP/1.0: the body comes as it is, not chunked, so the tags can be
    // walked straight.
    let mut flv = std::net::TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    std::io::Write::write_all(
        &mut flv,
        b"GET /api/stream.flv?src=loop HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n",
    )
    .unwrap();
    flv.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(flv.read(&mut b).unwrap(), 1, "no response head");
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    assert!(head.starts_with("HTTP/1.0 200"), "{head}\n{}", srv.log());
    assert!(!head.to_lowercase().contains("chunked"), "{head}");

    // Read 6 s (three passes of the file); note when each video tag's
    // bytes arrived (E.4.1: 11-byte tag header, type 9 is video).
    flv.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let start = Instant::now();
    let mut data = Vec::new();
    let mut at = 13; // FLV header (9) and the first PreviousTagSize (4)
    let mut video_after_loop = 0;
    let mut buf = vec![0u8; 64 * 1024];
    while start.elapsed() < Duration::from_secs(6) {
        let n = match flv.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => panic!("reading: {e}\n--- server log ---\n{}", srv.log()),
        };
        data.extend_from_slice(&buf[..n]);
        while data.len() >= at + 11 {
            let size = u32::from_be_bytes([0, data[at + 1], data[at + 2], data[at + 3]]) as usize;
            if data.len() < at + 11 + size + 4 {
                break;
            }
            // Past the second pass's start, with some margin.
            if data[at] == 9 && start.elapsed() > Duration::from_secs(4) {
                video_after_loop += 1;
            }
            at += 11 + size + 4;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    // 25 fps: about 50 video tags in the last 2 s; none when the picture
    // stopped at the loop.
    assert!(
        video_after_loop > 25,
        "{video_after_loop} video tags after the loop\n--- server log ---\n{}",
        srv.log()
    );
}
