//! go2rtc configs from the field run (issue 16, point 5): `ffmpeg:`
//! templates, `#hardware`, `rtsp.default_query`, go2rtc's output codecs,
//! and schemes go2rtc has and we do not (`tapo:`, `onvif:`), which must not
//! stop the server: those streams say why they cannot play, the others
//! play.

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::*;

/// Line and column (1-based) where `needle` starts in the server's config.
fn place(srv: &Server, needle: &str) -> (usize, usize) {
    let text = std::fs::read_to_string(&srv.config).unwrap();
    for (i, l) in text.lines().enumerate() {
        if let Some(c) = l.find(needle) {
            return (i + 1, c + 1);
        }
    }
    panic!("{needle} not in the config:\n{text}");
}

fn codecs(url: &str) -> Vec<(String, String, String, String)> {
    let v = ffprobe(
        url,
        "codec_type,codec_name,sample_rate,channels",
        &["-rtsp_transport", "tcp"],
    );
    let mut s: Vec<_> = v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let f = |k: &str| match &s[k] {
                serde_json::Value::String(x) => x.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                _ => String::new(),
            };
            (
                f("codec_type"),
                f("codec_name"),
                f("sample_rate"),
                f("channels"),
            )
        })
        .collect();
    s.sort();
    s
}

/// Reads HTTP-FLV of `stream` until `bytes` have come (or 20 s).
fn flv_bytes(srv: &Server, stream: &str, bytes: usize) -> Vec<u8> {
    let (status, mut s) = open_flv(srv.port, stream);
    assert_eq!(status, 200, "{}", srv.log());
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < bytes && Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got
}

#[test]
fn a_go2rtc_config_with_tapo_and_onvif_starts_and_says_why_those_cannot_play() {
    let _p = heavy();
    let rtsp = free_port();
    let extra = format!(
        r#"rtsp:
  listen: "127.0.0.1:{rtsp}"
  default_query: "video"
ffmpeg:
  bin: ffmpeg
  h264: "-c:v libx264 -g 37 -preset:v ultrafast -tune:v zerolatency -pix_fmt:v yuv420p"
  output: "-f rtsp {{output}}"
"#
    );
    let demo = demo_source(25);
    let srv = Server::start(
        &format!(
            "  demo: \"{demo}\"\n  \
               tapo_cam: tapo://admin:secret@10.0.0.5\n  \
               door: onvif://admin:pw@10.0.0.6\n  \
               mixed:\n    - onvif://admin:pw@10.0.0.7\n    - \"{demo}\"\n  \
               hd: \"ffmpeg:demo#video=h264#hardware\"\n"
        ),
        &extra,
    );
    let cfg = srv.config.display().to_string();

    // The server started: each unsupported source is one warning, at its
    // place in the file; so is the `ffmpeg.output` we do not use.
    let (status, _) = srv.get_json("/api/streams");
    assert_eq!(status, 200);
    let log = srv.log();
    for (needle, scheme) in [
        ("tapo://", "tapo"),
        ("onvif://admin:pw@10.0.0.6", "onvif"),
        ("onvif://admin:pw@10.0.0.7", "onvif"),
    ] {
        let (line, col) = place(&srv, needle);
        let w = format!("{cfg}:{line}:{col}: ");
        let at = log
            .lines()
            .find(|l| l.contains(&w))
            .unwrap_or_else(|| panic!("no warning at {w}\n{log}"));
        assert!(at.contains("WARN"), "{at}");
        assert!(
            at.contains(&format!(
                "go2rtc's `{scheme}:` source is not supported by streamvisor"
            )),
            "{at}"
        );
    }
    let (line, col) = place(&srv, "output:");
    assert!(
        log.contains(&format!("{cfg}:{line}:{col}: ffmpeg.output: ")),
        "{log}"
    );

    // The unsupported streams say why, in /api/streams.
    for (stream, scheme) in [("tapo_cam", "tapo"), ("door", "onvif")] {
        let (_, v) = srv.get_json(&format!("/api/streams?src={stream}"));
        assert_eq!(v["state"], "unsupported", "{v}");
        assert_eq!(
            v["reason"],
            format!("go2rtc's `{scheme}:` source is not supported by streamvisor"),
            "{v}"
        );
        let p = &v["producers"][0];
        assert_eq!(p["state"], "unsupported", "{v}");
        assert_eq!(
            p["last_error"],
            format!("go2rtc's `{scheme}:` source is not supported by streamvisor"),
            "{v}"
        );
    }
    // The whole list says it too, and only of them.
    let (_, all) = srv.get_json("/api/streams");
    assert_eq!(all["tapo_cam"]["state"], "unsupported", "{all}");
    assert_eq!(all["door"]["state"], "unsupported", "{all}");
    for other in ["demo", "mixed", "hd"] {
        assert_eq!(all[other]["state"], "idle", "{other}: {all}");
    }
    // And a viewer gets that reason at once, never a wait for a start
    // that cannot come: HTTP 501 with JSON, RTSP 501.
    for path in [
        "/api/stream.flv?src=tapo_cam",
        "/api/stream.mp4?src=door",
        "/api/frame.jpeg?src=tapo_cam",
    ] {
        let t0 = Instant::now();
        let (status, body) = srv.try_get(path).unwrap();
        assert_eq!(status, 501, "{path}: {body}");
        assert!(t0.elapsed() < Duration::from_secs(2), "{path}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains("source is not supported by streamvisor"),
            "{path}: {v}"
        );
    }
    let mut c = RtspClient::connect(rtsp);
    let (status, head, _) = c.request(
        "DESCRIBE",
        &format!("rtsp://127.0.0.1:{rtsp}/tapo_cam"),
        &[],
    );
    assert_eq!(status, 501, "{head}");
    assert!(
        head.contains("go2rtc's `tapo:` source is not supported"),
        "{head}"
    );
    // No producer was ever started for them.
    let log = srv.log();
    assert!(
        !log.lines()
            .any(|l| l.contains("producer started") && l.contains("stream=tapo_cam")),
        "{log}"
    );

    // The demo stream plays. `rtsp.default_query: video` gives a viewer
    // whose URL asks nothing only the video (go2rtc's default gives both).
    let url = format!("rtsp://127.0.0.1:{rtsp}/demo");
    let got: Vec<_> = codecs(&url).into_iter().map(|c| c.1).collect();
    assert_eq!(got, ["h264"], "{}", srv.log());
    let got: Vec<_> = codecs(&format!("{url}?video&audio"))
        .into_iter()
        .map(|c| c.1)
        .collect();
    assert_eq!(got, ["aac", "h264"], "{}", srv.log());

    // A stream mixing both: the supported source runs, the other is listed
    // with its reason.
    let got: Vec<_> = codecs(&format!("rtsp://127.0.0.1:{rtsp}/mixed?video"))
        .into_iter()
        .map(|c| c.1)
        .collect();
    assert_eq!(got, ["h264"], "{}", srv.log());
    let (_, v) = srv.get_json("/api/streams?src=mixed");
    assert_eq!(v["producers"][0]["state"], "unsupported", "{v}");
    assert_ne!(v["producers"][1]["state"], "unsupported", "{v}");
    assert!(v["producers"][1]["bytes"].as_u64().unwrap() > 0, "{v}");
    assert_ne!(v["state"], "unsupported", "{v}");
    assert!(v.get("reason").is_none(), "{v}");

    // `ffmpeg.h264` is what the transcode runs: x264 writes its settings
    // into the stream (an SEI), and `-g 37` shows as keyint=37. No GPU
    // here: `#hardware` found no device and encoded in software.
    let flv = flv_bytes(&srv, "hd", 100_000);
    let sei = String::from_utf8_lossy(&flv);
    assert!(sei.contains("x264 - core"), "libx264 made it");
    assert!(sei.contains("keyint=37"), "the file's h264 template");
}

/// go2rtc's `#audio=` outputs: G.711 as go2rtc makes it (8 kHz mono), on
/// the FLV pipe; Opus over the RTSP publish-back; AAC.
#[test]
fn audio_outputs_pcma_pcmu_opus_aac() {
    let _p = heavy();
    let rtsp = free_port();
    let srv = Server::start(
        &format!(
            "  demo: \"{}\"\n  \
               pcma: \"ffmpeg:demo#video=copy#audio=pcma\"\n  \
               pcmu: \"ffmpeg:demo#audio=pcmu\"\n  \
               opus: \"ffmpeg:demo#audio=opus\"\n  \
               aac: \"ffmpeg:demo#audio=aac\"\n",
            demo_source(25)
        ),
        &format!("rtsp: {{ listen: \"127.0.0.1:{rtsp}\" }}\n"),
    );
    let s = |a: &str, b: &str, c: &str, d: &str| {
        (a.to_string(), b.to_string(), c.to_string(), d.to_string())
    };
    let base = format!("rtsp://127.0.0.1:{rtsp}");
    assert_eq!(
        codecs(&format!("{base}/pcma?video&audio=pcma")),
        [
            s("audio", "pcm_alaw", "8000", "1"),
            s("video", "h264", "", "")
        ],
        "{}",
        srv.log()
    );
    assert_eq!(
        codecs(&format!("{base}/pcmu")),
        [s("audio", "pcm_mulaw", "8000", "1")],
        "{}",
        srv.log()
    );
    let got = codecs(&format!("{base}/opus?audio=opus"));
    assert_eq!(got.len(), 1, "{got:?}\n{}", srv.log());
    assert_eq!((got[0].0.as_str(), got[0].1.as_str()), ("audio", "opus"));
    let got = codecs(&format!("{base}/aac"));
    assert_eq!(got.len(), 1, "{got:?}\n{}", srv.log());
    assert_eq!((got[0].0.as_str(), got[0].1.as_str()), ("audio", "aac"));
    // G.711 stayed on the FLV pipe: no move to the publish-back.
    assert!(
        !srv.log().contains("publishes back over RTSP from now on"),
        "{}",
        srv.log()
    );
}

/// `#video=h265`: libx265 with go2rtc's template, published back over RTSP
/// (ffmpeg 5.1 cannot write H.265 into FLV). Needs H.265 over RTP, in and
/// out (issue 16, point 2).
#[test]
fn video_output_h265() {
    let _p = heavy();
    let rtsp = free_port();
    let srv = Server::start(
        &format!(
            "  demo: \"{}\"\n  hevc: \"ffmpeg:demo#video=h265\"\n",
            demo_source(25)
        ),
        &format!("rtsp: {{ listen: \"127.0.0.1:{rtsp}\" }}\n"),
    );
    let got = codecs(&format!("rtsp://127.0.0.1:{rtsp}/hevc?video=h265"));
    assert_eq!(got.len(), 1, "{got:?}\n{}", srv.log());
    assert_eq!(
        (got[0].0.as_str(), got[0].1.as_str()),
        ("video", "hevc"),
        "{}",
        srv.log()
    );
}

/// `#hardware=vaapi` on a machine without the device (this one, CI):
/// one warning, at the first start, and the stream plays in software,
/// again and again.
#[test]
fn hardware_without_its_device_warns_once_and_plays_in_software() {
    let _p = heavy();
    let srv = Server::start(
        &format!(
            "  demo: \"{}\"\n  hw: \"ffmpeg:demo#video=h264#hardware=vaapi\"\n",
            demo_source(25)
        ),
        "",
    );
    if std::path::Path::new("/dev/dri").exists() {
        eprintln!("this machine has /dev/dri: the fallback is not what runs here");
        return;
    }
    for round in 0..2 {
        let got = probe_streams(&srv.url("/api/stream.flv?src=hw"));
        assert_eq!(
            got,
            [("video".to_string(), "h264".to_string())],
            "round {round}: {}",
            srv.log()
        );
        srv.wait_for("hw to stop", Duration::from_secs(20), || {
            srv.producer_pids("hw").is_empty()
        });
    }
    let log = srv.log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("hardware encoding unavailable"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(warnings[0].contains("WARN"), "{}", warnings[0]);
    assert!(warnings[0].contains("stream=hw"), "{}", warnings[0]);
    assert!(warnings[0].contains("source=0"), "{}", warnings[0]);
    assert!(
        warnings[0].contains("#hardware=vaapi: no VAAPI render node"),
        "{}",
        warnings[0]
    );
    assert!(log.matches("producer started").count() >= 2, "{log}");
}
