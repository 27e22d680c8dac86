//! WebRTC out, with a real peer: aiortc (PyPI, installed by scripts/test)
//! offers recvonly video and audio over loopback, decodes what we send.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn aiortc_receives_h264_and_opus_and_closing_it_stops_the_stream() {
    let _p = heavy();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let (pyrtc, pydeps) = (root.join("target/pyrtc"), root.join("target/pydeps"));
    assert!(
        pyrtc.join("aiortc").exists() && pydeps.join("aiohttp").exists(),
        "aiortc or aiohttp is not installed under target/ (scripts/test installs them)"
    );
    let pythonpath = format!("{}:{}", pyrtc.display(), pydeps.display());
    let rtsp = free_port();
    let srv = Server::start(
        &format!(
            "  demo-opus:\n    - \"{}\"\n    - \"ffmpeg:demo-opus#audio=opus\"\n",
            demo_source(25)
        ),
        &format!("rtsp: {{ listen: \"127.0.0.1:{rtsp}\" }}\n"),
    );
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/webrtc_client.py");
    let (o, _) = run_with_timeout(
        Command::new("python3")
            .env("PYTHONPATH", &pythonpath)
            .arg(&script)
            .arg(srv.url("/api/webrtc?src=demo-opus"))
            .arg("6"),
        Duration::from_secs(60),
    );
    assert!(
        o.status.success(),
        "aiortc failed:\n{}\n--- server log ---\n{}",
        String::from_utf8_lossy(&o.stderr),
        srv.log()
    );
    check(&srv, &o.stdout);
    // And over go2rtc's WebSocket signalling, as Home Assistant does it:
    // the answer comes first (the client checks), then media.
    let ws = format!("ws://127.0.0.1:{}/api/ws?src=demo-opus", srv.port);
    let (o, _) = run_with_timeout(
        Command::new("python3")
            .env("PYTHONPATH", &pythonpath)
            .arg(&script)
            .arg(&ws)
            .arg("6"),
        Duration::from_secs(60),
    );
    assert!(
        o.status.success(),
        "aiortc over /api/ws failed:\n{}\n--- server log ---\n{}",
        String::from_utf8_lossy(&o.stderr),
        srv.log()
    );
    check(&srv, &o.stdout);
}

/// What the peer decoded, and that closing it stopped the stream.
fn check(srv: &Server, stdout: &[u8]) {
    let got: serde_json::Value = serde_json::from_slice(stdout).unwrap();
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
