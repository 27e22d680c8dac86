//! WebRTC out, with a real peer: aiortc (PyPI, installed by scripts/test)
//! offers recvonly video and audio over loopback, decodes what we send.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::*;

/// Runs tests/support/webrtc_client.py (aiortc) against `url`.
fn aiortc(srv: &Server, url: &str, args: &[&str]) -> serde_json::Value {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let (pyrtc, pydeps) = (root.join("target/pyrtc"), root.join("target/pydeps"));
    assert!(
        pyrtc.join("aiortc").exists() && pydeps.join("aiohttp").exists(),
        "aiortc or aiohttp is not installed under target/ (scripts/test installs them)"
    );
    let (o, _) = run_with_timeout(
        Command::new("python3")
            .env(
                "PYTHONPATH",
                format!("{}:{}", pyrtc.display(), pydeps.display()),
            )
            .arg(root.join("tests/support/webrtc_client.py"))
            .arg(url)
            .args(args),
        Duration::from_secs(60),
    );
    assert!(
        o.status.success(),
        "aiortc ({url}) failed:\n{}\n--- server log ---\n{}",
        String::from_utf8_lossy(&o.stderr),
        srv.log()
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Every peer on go2rtc's shared port (here a free one, on every
/// interface as `:8555` is), with 127.0.0.1 advertised as the issue asks.
fn webrtc_listen() -> String {
    format!(
        "webrtc: {{ listen: \":{}\", candidates: [\"127.0.0.1\"] }}\n",
        free_port()
    )
}

#[test]
fn aiortc_receives_h264_and_opus_and_closing_it_stops_the_stream() {
    let _p = heavy();
    let rtsp = free_port();
    let srv = Server::start(
        &format!(
            "  demo-opus:\n    - \"{}\"\n    - \"ffmpeg:demo-opus#audio=opus\"\n",
            demo_source(25)
        ),
        &format!(
            "rtsp: {{ listen: \"127.0.0.1:{rtsp}\" }}\n{}",
            webrtc_listen()
        ),
    );
    let got = aiortc(&srv, &srv.url("/api/webrtc?src=demo-opus"), &["6"]);
    check(&srv, &got);
    // And over go2rtc's WebSocket signalling, as Home Assistant does it:
    // the answer comes first (the client checks), then media.
    let ws = format!("ws://127.0.0.1:{}/api/ws?src=demo-opus", srv.port);
    let got = aiortc(&srv, &ws, &["6"]);
    check(&srv, &got);
    // Both went through the shared port, not a socket of their own.
    let log = srv.log();
    assert!(log.contains("webrtc ready"), "{log}");
}

/// With `webrtc.listen: ""` every peer gets a UDP socket of its own (go2rtc's
/// random port). A PLI is answered with the last keyframe, and the live
/// deltas go on after it (the source's next keyframe is 4 s away, `-g 100`):
/// aiortc, which hands a frame over when the next one starts, decodes the
/// repeat and then deltas, with time going forward. Today's main held the
/// deltas until the source's keyframe: `KK`.
#[test]
fn a_pli_is_answered_from_the_last_keyframe_and_the_picture_moves_on() {
    let _p = heavy();
    let srv = Server::start(
        &format!("  gop4s: \"{}\"\n", demo_source(100)),
        "webrtc: { listen: \"\" }\n",
    );
    let got = aiortc(&srv, &srv.url("/api/webrtc?src=gop4s"), &["6", "30"]);
    let after = got["after_pli"].as_str().unwrap();
    let repeat = after.trim_start_matches('d');
    assert!(
        repeat.starts_with("Kdddd"),
        "after the PLI: {after} (K key, d delta): {got}\n{}",
        srv.log()
    );
    // Without the answer it would be d…dK: only the source's own.
    assert!(after.len() - repeat.len() <= 3, "{got}");
    assert_eq!(got["pts_forward"], true, "{got}");
    assert!(got["keyframes"].as_u64().unwrap() >= 3, "{got}");
    // The source's audio is AAC: none went out, and the log says why.
    assert_eq!(got["audio_seconds"], 0.0, "{got}");
    let log = srv.log();
    assert!(
        log.contains("AAC, which WebRTC cannot carry"),
        "no word on the AAC audio: {log}"
    );
}

/// Issue 17: loss must not become a freeze. The client throws away 3 % of
/// the video packets as they arrive (retransmissions too) and asks for a
/// keyframe every second, as a browser does when a loss got past its
/// NACKs; the source's keyframes are 4 s apart. Lost packets come back
/// over RTX, each request is answered with the last keyframe, and the
/// frame rate holds: at least 80 % of the source's 25 fps. On today's main
/// (deltas held after each answer until the source's next keyframe) the
/// client decoded 7.7 fps.
#[test]
fn a_lossy_peer_asking_for_keyframes_keeps_its_frame_rate() {
    let _p = heavy();
    let srv = Server::start(
        &format!("  lossy: \"{}\"\n", demo_source(100)),
        "webrtc: { listen: \"\" }\n",
    );
    let got = aiortc(
        &srv,
        &srv.url("/api/webrtc?src=lossy"),
        &["10", "--drop", "0.03", "--pli-every", "25"],
    );
    let n = |k: &str| got[k].as_u64().unwrap_or(0);
    // The test did what it says: packets were lost, and asked for again.
    assert!(n("dropped") >= 10 && n("nacks") >= 5, "{got}");
    assert!(n("plis") >= 5, "{got}");
    let fps = got["fps"].as_f64().unwrap();
    assert!(
        fps >= 0.8 * 25.0,
        "{fps} fps decoded under loss: {got}\n{}",
        srv.log()
    );
    // More keyframes than the source's 3 in 10 s: requests were answered.
    assert!(n("keyframes") > 3, "{got}");
}

/// What the peer decoded and that closing it stopped the stream.
fn check(srv: &Server, got: &serde_json::Value) {
    assert!(got["video_frames"].as_u64().unwrap() >= 50, "{got}");
    assert_eq!(
        (got["width"].as_u64(), got["height"].as_u64()),
        (Some(320), Some(240)),
        "{got}"
    );
    assert!(got["audio_seconds"].as_f64().unwrap() >= 1.0, "{got}");
    // The peer closed: the consumer goes, and with it the producers.
    srv.wait_for("the producers to stop", Duration::from_secs(5), || {
        let (_, v) = srv.get_json("/api/streams?src=demo-opus");
        v["consumers"].as_array().unwrap().is_empty() && srv.producer_pids("demo-opus").is_empty()
    });
}

#[test]
fn an_offer_for_an_unknown_stream_or_a_bad_offer_is_a_json_error() {
    let srv = Server::start("  cam: rtsp://127.0.0.1:1/x\n", "");
    for (path, body, want) in [
        ("/api/webrtc?src=nope", "v=0\r\n", 404),
        ("/api/webrtc?src=cam", "not sdp", 400),
        ("/api/webrtc", "v=0\r\n", 400),
    ] {
        let mut s = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        assert!(
            resp.starts_with(&format!("HTTP/1.1 {want}")),
            "{path}: {resp}"
        );
        assert!(resp.contains("\"error\""), "{path}: {resp}");
    }
    // Over /api/ws, an unknown stream is a {"type":"error"} message.
    let pydeps = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pydeps");
    let script = format!(
        r#"
import asyncio, aiohttp
async def main():
    async with aiohttp.ClientSession() as s:
        ws = await s.ws_connect("ws://127.0.0.1:{}/api/ws?src=nope")
        await ws.send_json({{"type": "webrtc", "value": {{"type": "offer", "sdp": "v=0"}}}})
        print((await ws.receive_json(timeout=10))["type"])
asyncio.run(main())
"#,
        srv.port
    );
    let (o, _) = run_with_timeout(
        Command::new("python3")
            .env("PYTHONPATH", &pydeps)
            .args(["-c", &script]),
        Duration::from_secs(30),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "error");
}
