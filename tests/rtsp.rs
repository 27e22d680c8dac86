//! The RTSP server against real clients: ffprobe, ffmpeg, GStreamer, and
//! raw sockets for what real clients will not do.

mod common;

use std::io::Read;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn server() -> (Server, u16) {
    let rtsp = free_port();
    let srv = Server::start(
        &format!("  demo: \"{}\"\n", demo_source(25)),
        &format!("rtsp: {{ listen: \"127.0.0.1:{rtsp}\" }}\n"),
    );
    (srv, rtsp)
}

fn probe(url: &str, transport: &str) -> serde_json::Value {
    ffprobe(
        url,
        "codec_type,codec_name,width,height,sample_rate,channels",
        &["-rtsp_transport", transport],
    )
}

#[test]
fn ffprobe_over_tcp_and_udp_sees_h264_and_aac() {
    let _p = heavy();
    let (srv, rtsp) = server();
    let url = format!("rtsp://127.0.0.1:{rtsp}/demo");
    for transport in ["tcp", "udp"] {
        let v = probe(&url, transport);
        let streams = v["streams"].as_array().unwrap();
        let video = streams
            .iter()
            .find(|s| s["codec_type"] == "video")
            .expect("video");
        let audio = streams
            .iter()
            .find(|s| s["codec_type"] == "audio")
            .expect("audio");
        assert_eq!(
            (
                video["codec_name"].as_str(),
                video["width"].as_u64(),
                video["height"].as_u64()
            ),
            (Some("h264"), Some(320), Some(240)),
            "{transport}: {v}"
        );
        assert_eq!(
            (audio["codec_name"].as_str(), audio["sample_rate"].as_str()),
            (Some("aac"), Some("44100")),
            "{transport}: {v}"
        );
    }
    // Only the video, go2rtc style.
    let v = probe(&format!("{url}?video"), "tcp");
    assert_eq!(v["streams"].as_array().unwrap().len(), 1, "{v}");
    drop(srv);
}

#[test]
fn ffmpeg_records_five_clean_seconds() {
    let _p = heavy();
    let (srv, rtsp) = server();
    let out_mp4 = srv.dir.path().join("out.mp4");
    let (out, _) = run_with_timeout(
        Command::new("ffmpeg")
            .args([
                "-v",
                "error",
                "-rtsp_transport",
                "tcp",
                "-i",
                &format!("rtsp://127.0.0.1:{rtsp}/demo"),
                "-t",
                "5",
                "-c",
                "copy",
            ])
            .arg(&out_mp4),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (out, _) = run_with_timeout(
        Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_entries",
                "format=duration",
                "-of",
                "csv=p=0",
            ])
            .arg(&out_mp4),
        Duration::from_secs(10),
    );
    let duration: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!((4.5..6.0).contains(&duration), "duration {duration}");
    assert_decodes_cleanly(&out_mp4, "the recording");
}

#[test]
fn gstreamer_decodes_over_tcp_and_udp() {
    let _p = heavy();
    let (srv, rtsp) = server();
    for protocols in ["tcp", "udp"] {
        let (out, took) = run_with_timeout(
            Command::new("gst-launch-1.0").args([
                "-q",
                "rtspsrc",
                &format!("location=rtsp://127.0.0.1:{rtsp}/demo"),
                &format!("protocols={protocols}"),
                "!",
                "rtph264depay",
                "!",
                "h264parse",
                "!",
                "avdec_h264",
                "!",
                "fakesink",
                "num-buffers=50",
            ]),
            Duration::from_secs(40),
        );
        assert!(
            out.status.success(),
            "{protocols} after {took:?}: {}\n--- server log ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            srv.log()
        );
    }
}

#[test]
fn fifty_rtsp_readers_teardown_and_the_last_one_stops_the_stream() {
    let _p = heavy();
    let (srv, rtsp) = server();
    let mut clients: Vec<RtspClient> = (0..50)
        .map(|_| RtspClient::play_tcp(rtsp, "demo"))
        .collect();
    // Every reader receives interleaved RTP.
    for (i, c) in clients.iter_mut().enumerate() {
        let mut got = 0;
        let t = Instant::now();
        let mut buf = [0u8; 65536];
        while got < 20_000 {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "reader {i} got only {got} bytes"
            );
            got += c.sock.read(&mut buf).unwrap();
        }
    }
    let consumers = || {
        srv.get_json("/api/streams?src=demo").1["consumers"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(consumers(), 50);
    // TEARDOWN releases the consumer.
    let mut first = clients.remove(0);
    let url = format!("rtsp://127.0.0.1:{rtsp}/demo");
    let (status, head, _) = first.request("TEARDOWN", &url, &[]);
    assert_eq!(status, 200, "{head}");
    srv.wait_for("49 consumers", Duration::from_secs(5), || consumers() == 49);
    // A dropped socket does too, and the last one stops the producer.
    let pid = srv.producer_pids("demo")[0];
    drop(clients);
    srv.wait_for("no consumers", Duration::from_secs(10), || consumers() == 0);
    srv.wait_for("producer group gone", Duration::from_secs(10), || {
        group_members(pid).is_empty()
    });
}

#[test]
fn malformed_requests_get_an_error_or_a_close_and_others_are_unaffected() {
    let (srv, rtsp) = server();
    // Garbage: 400, then the connection is closed.
    let mut c = RtspClient::connect(rtsp);
    c.send_raw(b"\x16\x03\x01\x02\x00 hello\r\n\r\n");
    let (status, _, _) = c.read_response().expect("an answer");
    assert_eq!(status, 400);
    assert!(c.read_response().is_none(), "connection closed");
    // No CSeq: 400, connection stays usable.
    let mut c = RtspClient::connect(rtsp);
    c.send_raw(b"OPTIONS rtsp://127.0.0.1/demo RTSP/1.0\r\n\r\n");
    assert_eq!(c.read_response().unwrap().0, 400);
    assert_eq!(c.request("OPTIONS", "rtsp://127.0.0.1/demo", &[]).0, 200);
    // A huge Content-Length: 400 at once, no waiting for the body.
    let mut c = RtspClient::connect(rtsp);
    c.send_raw(
        b"ANNOUNCE rtsp://127.0.0.1/demo RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 999999999\r\n\r\n",
    );
    assert_eq!(c.read_response().unwrap().0, 400);
    // Interleaved data before SETUP: closed.
    let mut c = RtspClient::connect(rtsp);
    c.send_raw(b"$\x00\x00\x04abcd");
    assert!(c.read_response().is_none());
    // Unknown stream, unknown method.
    let mut c = RtspClient::connect(rtsp);
    assert_eq!(
        c.request("DESCRIBE", &format!("rtsp://127.0.0.1:{rtsp}/nope"), &[])
            .0,
        404
    );
    assert_eq!(
        c.request("FLY", &format!("rtsp://127.0.0.1:{rtsp}/demo"), &[])
            .0,
        501
    );
    // And the server still serves.
    let _p = heavy();
    let v = probe(&format!("rtsp://127.0.0.1:{rtsp}/demo"), "tcp");
    assert_eq!(v["streams"].as_array().unwrap().len(), 2);
    drop(srv);
}

#[test]
fn ffmpeg_publishes_over_tcp_and_udp_and_viewers_see_it() {
    let _p = heavy();
    let rtsp = free_port();
    // Without takeover, so that a second publisher is refused (453);
    // tests/publish.rs covers takeover, the default.
    let srv = Server::start(
        "  pushed:\n",
        &format!("rtsp: {{ listen: \"127.0.0.1:{rtsp}\" }}\npublish: {{ takeover: false }}\n"),
    );
    let clip = clip(srv.dir.path());
    let publisher = || {
        let (_, v) = srv.get_json("/api/streams?src=pushed");
        v["producers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["url"].as_str().unwrap_or("").contains("publisher"))
    };
    for transport in ["tcp", "udp"] {
        let mut first = push(&clip, rtsp, transport);
        srv.wait_for("the publisher", Duration::from_secs(10), publisher);
        let want = vec![
            ("audio".to_string(), "aac".to_string()),
            ("video".to_string(), "h264".to_string()),
        ];
        assert_eq!(
            probe_streams(&srv.url("/api/stream.flv?src=pushed")),
            want,
            "{transport}: HTTP-FLV"
        );
        let v = probe(&format!("rtsp://127.0.0.1:{rtsp}/pushed"), "tcp");
        assert_eq!(
            v["streams"].as_array().unwrap().len(),
            2,
            "{transport}: RTSP {v}"
        );

        // A second publisher is refused, with the reason.
        let mut second = push(&clip, rtsp, transport);
        let status = second.wait().unwrap();
        let mut err = String::new();
        second
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(!status.success());
        assert!(err.contains("453"), "second publisher: {err}");

        // The first hangs up: the stream is free at once.
        first.kill().unwrap();
        first.wait().unwrap();
        let t = Instant::now();
        srv.wait_for("the stream to be free", Duration::from_secs(5), || {
            !publisher()
        });
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "{transport}: freed after {:?}",
            t.elapsed()
        );
    }
}

#[test]
fn exec_with_output_publishes_back_like_go2rtc() {
    let _p = heavy();
    let rtsp = free_port();
    let cmd = "exec:ffmpeg -hide_banner -loglevel error -re -f lavfi -i testsrc2=size=320x240:rate=25 \
               -f lavfi -i sine=sample_rate=44100 -c:v libx264 -preset ultrafast -tune zerolatency -g 25 \
               -pix_fmt yuv420p -c:a aac -f rtsp {output}";
    let srv = Server::start(
        &format!("  gen: \"{cmd}\"\n"),
        &format!("rtsp: {{ listen: \"127.0.0.1:{rtsp}\" }}\n"),
    );
    let reader = RtspClient::play_tcp(rtsp, "gen");
    let (_, v) = srv.get_json("/api/streams?src=gen");
    assert!(v["producers"][0]["bytes"].as_u64().unwrap() > 0, "{v}");
    let pid = srv.producer_pids("gen")[0];
    assert_eq!(
        probe_streams(&srv.url("/api/stream.flv?src=gen")),
        vec![
            ("audio".to_string(), "aac".to_string()),
            ("video".to_string(), "h264".to_string())
        ]
    );
    // Its lifecycle is a producer's: the last viewer leaving stops it.
    drop(reader);
    srv.wait_for("the exec child to go", Duration::from_secs(10), || {
        group_members(pid).is_empty()
    });
}

#[test]
fn digest_auth_wrong_password_is_refused_right_one_plays() {
    let _p = heavy();
    let rtsp = free_port();
    // local_auth: ask loopback clients too, or this test could not tell.
    let srv = Server::start(
        &format!("  demo: \"{}\"\n", demo_source(25)),
        &format!("rtsp: {{ listen: \"127.0.0.1:{rtsp}\", username: admin, password: \"s3cr:et\", local_auth: true }}\n"),
    );
    let (out, _) = run_with_timeout(
        Command::new("ffprobe").args([
            "-v",
            "error",
            "-rtsp_transport",
            "tcp",
            &format!("rtsp://admin:wrong@127.0.0.1:{rtsp}/demo"),
        ]),
        Duration::from_secs(30),
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // ffmpeg answers the Digest challenge (the first one offered).
    let v = probe(
        &format!("rtsp://admin:s3cr%3Aet@127.0.0.1:{rtsp}/demo"),
        "tcp",
    );
    assert_eq!(v["streams"].as_array().unwrap().len(), 2, "{v}");
    // No credentials at all: 401 with both challenges.
    let mut c = RtspClient::connect(rtsp);
    let (status, head, _) = c.request("DESCRIBE", &format!("rtsp://127.0.0.1:{rtsp}/demo"), &[]);
    assert_eq!(status, 401);
    assert!(
        head.contains("WWW-Authenticate: Digest realm=")
            && head.contains("WWW-Authenticate: Basic realm="),
        "{head}"
    );
    drop(srv);
}

#[test]
fn rtsp_viewers_choose_between_the_cameras_pcma_and_the_transcoded_aac() {
    let _p = heavy();
    let rtsp = free_port();
    let cam = PCMA_CAMERA;
    let srv = Server::start(
        &format!("  cam2: [\"{cam}\", \"ffmpeg:cam2#audio=aac\"]\n"),
        &format!("rtsp: {{ listen: \"127.0.0.1:{rtsp}\" }}\n"),
    );
    let audio = |query: &str| {
        let v = probe(&format!("rtsp://127.0.0.1:{rtsp}/cam2{query}"), "tcp");
        v["streams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["codec_type"] == "audio")
            .map(|s| s["codec_name"].as_str().unwrap().to_string())
    };
    assert_eq!(
        audio("").as_deref(),
        Some("aac"),
        "by default, the AAC every player takes"
    );
    assert_eq!(
        audio("?video&audio=pcma").as_deref(),
        Some("pcm_alaw"),
        "the camera's own PCMA"
    );
    drop(srv);
}

/// RFC 3550 §6.4.1: a sender reports while it sends. Each track's RTCP
/// channel gets sender reports again after the first ones (every
/// `SR_INTERVAL`, 5 s), with the media, over interleaved TCP.
#[test]
fn sender_reports_keep_coming_on_every_track_while_media_flows() {
    let (srv, rtsp) = server();
    let _p = heavy();
    let mut c = RtspClient::play_tcp(rtsp, "demo");
    let played = Instant::now();
    c.sock
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    // channel -> when its sender reports came (s since PLAY); RTP packets
    // seen per channel.
    let mut reports: [Vec<f64>; 4] = Default::default();
    let mut packets = [0usize; 4];
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 65536];
    while played.elapsed() < Duration::from_millis(6500) {
        let n = c.sock.read(&mut chunk).expect("media keeps coming");
        assert!(n > 0, "the server closed the connection");
        buf.extend_from_slice(&chunk[..n]);
        // RFC 2326 §10.12: '$', channel, 16-bit length, then the packet.
        while buf.len() >= 4 {
            assert_eq!(buf[0], b'$', "interleaved data only after PLAY");
            let ch = buf[1] as usize;
            let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
            if buf.len() < 4 + len {
                break;
            }
            let p = &buf[4..4 + len];
            assert!(ch < 4, "channel {ch}");
            if ch % 2 == 1 {
                // RTCP: a compound packet that starts with the SR (PT 200).
                assert!(p.len() >= 28 && p[0] >> 6 == 2, "{p:?}");
                if p[1] == 200 {
                    reports[ch].push(played.elapsed().as_secs_f64());
                }
            } else {
                packets[ch] += 1;
            }
            buf.drain(..4 + len);
        }
    }
    assert!(packets[0] > 100 && packets[2] > 100, "{packets:?}");
    for ch in [1, 3] {
        assert!(
            reports[ch].iter().any(|t| *t >= 4.0),
            "channel {ch}: sender reports at {:?} s after PLAY, none after the first ones",
            reports[ch]
        );
    }
    drop(srv);
}
