//! Camera G.711 in the MP4 outputs (issue 16): `/api/stream.mp4` and HLS
//! fMP4 carry it as FLAC, which ffmpeg decodes and Debian's Chromium plays
//! through Media Source Extensions. Before, G.711 was left out of both, and
//! the browser decoded no audio at all.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

/// The audio stream's codec as ffprobe sees it at `url` (`-select_streams
/// a`), or "" if there is none.
fn audio_codec(url: &str) -> String {
    let v = ffprobe(
        url,
        "codec_name,sample_rate,channels",
        &["-select_streams", "a"],
    );
    v["streams"][0]["codec_name"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[test]
fn pcma_camera_audio_is_flac_in_stream_mp4_and_hls_fmp4() {
    let cam = Camera::start_with(0, "h264", "pcma");
    let srv = Server::start(&format!("  cam: {}\n", cam.url), "");
    let _p = heavy();

    let mp4 = srv.url("/api/stream.mp4?src=cam");
    assert_eq!(
        probe_streams(&mp4),
        vec![
            ("audio".to_string(), "flac".to_string()),
            ("video".to_string(), "h264".to_string())
        ],
        "{}",
        srv.log()
    );
    let v = ffprobe(&mp4, "sample_rate,channels", &["-select_streams", "a"]);
    assert_eq!(v["streams"][0]["sample_rate"], "8000", "{v}");
    assert_eq!(v["streams"][0]["channels"], 1, "{v}");

    // 3 s of it decode without one error, and the audio is there: the
    // camera's 440 Hz tone at -10 dBFS, not silence.
    let (samples, mean) = decode_audio(&mp4);
    assert!(samples >= 8000 * 5 / 2, "{samples} samples for 3 s");
    assert!(mean > -30.0, "the audio is (nearly) silent: {mean} dB");

    // HLS fMP4 the same (TS stays AAC-only: G.711 has no MPEG-TS type).
    let hls = srv.url("/api/stream.m3u8?src=cam&mp4");
    assert_eq!(audio_codec(&hls), "flac", "{}", srv.log());
    let (samples, mean) = decode_audio(&hls);
    assert!(
        samples >= 8000 * 5 / 2,
        "HLS fMP4: {samples} samples for 3 s"
    );
    assert!(
        mean > -30.0,
        "HLS fMP4: the audio is (nearly) silent: {mean} dB"
    );
}

/// Decodes 3 s of `url`'s audio: (samples, mean volume in dB), asserting
/// that ffmpeg had nothing to complain about.
fn decode_audio(url: &str) -> (u64, f64) {
    let (o, _) = run_with_timeout(
        Command::new("ffmpeg")
            .args(["-loglevel", "info", "-nostats", "-i", url])
            .args(["-t", "3", "-map", "0:a", "-af", "volumedetect"])
            .args(["-f", "null", "-"]),
        Duration::from_secs(40),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "ffmpeg {url} failed: {err}");
    assert_eq!(audio_trouble(&err), Vec::<&str>::new(), "{url}: {err}");
    let field = |name: &str| {
        err.lines()
            .find_map(|l| l.split(name).nth(1))
            .map(|v| v.trim().trim_end_matches(" dB").to_string())
            .unwrap_or_else(|| panic!("no {name} from volumedetect: {err}"))
    };
    (
        field("n_samples:").parse().unwrap(),
        field("mean_volume:").parse().unwrap(),
    )
}

/// ffmpeg's complaints, but for the H.264 decoder's: the test camera's
/// first picture after a cold start is sometimes damaged (concealed), in
/// every output alike, and probing decodes video even with `-map 0:a`.
fn audio_trouble(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| !l.starts_with("[h264 @"))
        .filter(|l| {
            ["rror", "nvalid", "corrupt", "mismatch", "non monoton"]
                .iter()
                .any(|bad| l.contains(bad))
        })
        .collect()
}

#[test]
#[ignore = "needs Chromium and playwright-core: run scripts/test, which installs them"]
fn chromium_plays_a_pcmu_cameras_audio_over_mse() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let browser = chromium_or_fail();
    let cam = Camera::start_with(0, "h264", "pcmu");
    let srv = Server::start(&format!("  cam: {}\n", cam.url), "");
    let _p = heavy();
    let (o, _) = run_with_timeout(
        Command::new("node")
            .current_dir(root.join("tests/browser"))
            .env("CHROMIUM", browser)
            .arg("audio_test.mjs")
            .arg(srv.url(""))
            .arg("cam"),
        Duration::from_secs(90),
    );
    assert!(
        o.status.success(),
        "browser test failed:\n{}\n{}\n--- server log ---\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
        srv.log()
    );
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    eprintln!("the player measured: {r}");
    assert_eq!(r["mode"], "MSE (fMP4)", "{r}");
    assert!(
        r["codecs"].as_str().unwrap_or("").contains("flac"),
        "the player's codecs: {r}"
    );
    assert!(
        r["audio_bytes"].as_u64().unwrap_or(0) > 8_000,
        "Chromium decoded (almost) no audio: {r}"
    );
    assert!(r["video_frames"].as_u64().unwrap_or(0) >= 25, "{r}");
    assert!(r["advanced_s"].as_f64().unwrap_or(0.0) >= 3.0, "{r}");
    assert!(r["loud_bins"].as_u64().unwrap_or(0) > 0, "silence: {r}");
}
