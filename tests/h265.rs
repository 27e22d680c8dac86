//! H.265 end to end (issue 16): an H.265 + G.711 camera through every
//! output that carries H.265, and H.265 published in over RTSP. Real
//! GStreamer camera, real ffmpeg, ffprobe and GStreamer clients.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

/// The camera as the hub takes it today: ffmpeg reads it and publishes it
/// back over RTSP (`{output}`), since FLV cannot hold H.265.
fn camera_source(cam: &Camera) -> String {
    format!(
        "exec:ffmpeg -hide_banner -loglevel error -nostdin -rtsp_transport tcp -i {} -c copy -f rtsp -rtsp_transport tcp {{output}}",
        cam.url
    )
}

/// A server with `cam` the H.265 + PCMA camera, and an RTSP listener.
fn h265_camera_server(cam: &Camera, extra: &str) -> (Server, u16) {
    let rtsp = free_port();
    let srv = Server::start(
        &format!("  cam: \"{}\"\n", camera_source(cam)),
        &format!("rtsp: {{ listen: \"127.0.0.1:{rtsp}\" }}\n{extra}"),
    );
    (srv, rtsp)
}

fn run(cmd: &mut Command, secs: u64) -> std::process::Output {
    let (out, _) = run_with_timeout(cmd, Duration::from_secs(secs));
    out
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `ffprobe` of a file: (codec_type, codec_name) pairs, sorted.
fn probe_file(f: &Path) -> Vec<(String, String)> {
    probe_streams(f.to_str().unwrap())
}

#[test]
fn rtsp_out_of_an_h265_camera_records_clean_and_the_sdp_has_the_parameter_sets() {
    let _p = heavy();
    let cam = Camera::start_with(0, "h265", "pcma");
    let (srv, rtsp) = h265_camera_server(&cam, "");
    let url = format!("rtsp://127.0.0.1:{rtsp}/cam");

    let mut c = RtspClient::connect(rtsp);
    let (status, head, sdp) = c.request("DESCRIBE", &url, &[("Accept", "application/sdp".into())]);
    assert_eq!(status, 200, "{head}\n{}", srv.log());
    assert!(sdp.contains("a=rtpmap:96 H265/90000"), "{sdp}");
    for p in ["sprop-vps=", "sprop-sps=", "sprop-pps="] {
        assert!(sdp.contains(p), "{p} missing: {sdp}");
    }
    assert!(sdp.contains("PCMA/8000"), "{sdp}");
    drop(c);

    let out = srv.dir.path().join("out.mkv");
    let o = run(
        Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-rtsp_transport", "tcp", "-i", &url])
            .args(["-t", "5", "-c", "copy"])
            .arg(&out),
        40,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        probe_file(&out),
        vec![
            ("audio".to_string(), "pcm_alaw".to_string()),
            ("video".to_string(), "hevc".to_string())
        ]
    );
    assert_decodes_cleanly(&out, "5 s of RTSP from an H.265 camera");
}

/// GStreamer's own RTP H.265 depayloader and decoder take what we send.
fn gst_decodes(url: &str, protocols: &str) {
    let o = run(
        Command::new("timeout")
            .args(["-s", "INT", "30", "gst-launch-1.0", "-q", "-e"])
            .args([
                "rtspsrc",
                &format!("location={url}"),
                &format!("protocols={protocols}"),
                "latency=0",
            ])
            .args(["!", "rtph265depay", "!", "h265parse", "!", "avdec_h265"])
            .args(["!", "fakesink", "num-buffers=50", "sync=false"]),
        40,
    );
    assert!(
        o.status.success(),
        "gst-launch over {protocols}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
}

#[test]
fn gstreamer_decodes_the_h265_camera_over_tcp_and_udp() {
    let _p = heavy();
    let cam = Camera::start_with(0, "h265", "pcma");
    let (_srv, rtsp) = h265_camera_server(&cam, "");
    let url = format!("rtsp://127.0.0.1:{rtsp}/cam?video=h265");
    gst_decodes(&url, "tcp");
    gst_decodes(&url, "udp");
}

/// A 6 s H.265 + AAC clip made with libx265.
fn h265_clip(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("clip-h265.mp4");
    let o = run(
        Command::new("ffmpeg")
            .args([
                "-v",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=320x240:rate=25",
            ])
            .args(["-f", "lavfi", "-i", "sine=sample_rate=44100", "-t", "6"])
            .args([
                "-c:v",
                "libx265",
                "-preset",
                "ultrafast",
                "-x265-params",
                "log-level=error:keyint=25:bframes=0",
            ])
            .args(["-pix_fmt", "yuv420p", "-tag:v", "hvc1", "-c:a", "aac"])
            .arg(&path),
        60,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    path
}

#[test]
fn h265_published_in_over_rtsp_reads_back() {
    let _p = heavy();
    let rtsp = free_port();
    let srv = Server::start(
        "  pushed:\n",
        &format!("rtsp: {{ listen: \"127.0.0.1:{rtsp}\" }}\n"),
    );
    let clip = h265_clip(srv.dir.path());
    let mut pusher = push(&clip, rtsp, "tcp");
    let url = format!("rtsp://127.0.0.1:{rtsp}/pushed");
    srv.wait_for("the publisher", Duration::from_secs(15), || {
        srv.get_json("/api/streams?src=pushed").1["producers"][0]["bytes"]
            .as_u64()
            .is_some_and(|b| b > 0)
    });
    let out = srv.dir.path().join("back.mkv");
    let o = run(
        Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-rtsp_transport", "tcp", "-i", &url])
            .args(["-t", "3", "-c", "copy"])
            .arg(&out),
        40,
    );
    let _ = pusher.kill();
    let _ = pusher.wait();
    assert!(o.status.success(), "{}\n{}", stderr(&o), srv.log());
    assert_eq!(
        probe_file(&out),
        vec![
            ("audio".to_string(), "aac".to_string()),
            ("video".to_string(), "hevc".to_string())
        ]
    );
    assert_decodes_cleanly(&out, "H.265 published in and read back");
}

/// `ffmpeg -i URL -t SECS -c copy FILE`, which must succeed.
fn record(url: &str, secs: u32, file: &Path) {
    let o = run(
        Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-i", url])
            .args(["-t", &secs.to_string(), "-c", "copy"])
            // The fMP4 of a G.711 camera carries FLAC, which ffmpeg 5.1
            // writes into MP4 only when told it may.
            .args(["-strict", "-2"])
            .arg(file),
        60,
    );
    assert!(o.status.success(), "{url}: {}", stderr(&o));
}

#[test]
fn hls_ts_and_fmp4_stream_mp4_and_frame_jpeg_of_the_h265_camera() {
    let _p = heavy();
    let cam = Camera::start_with(0, "h265", "pcma");
    let (srv, _rtsp) = h265_camera_server(&cam, "");
    let hevc = vec![("video".to_string(), "hevc".to_string())];

    // HLS TS takes AAC only (MPEG-TS has no G.711), so the camera's PCMA
    // stays out there; fMP4 carries it as FLAC.
    let hevc_flac = vec![
        ("audio".to_string(), "flac".to_string()),
        ("video".to_string(), "hevc".to_string()),
    ];
    for (query, file, want) in [("", "hls.ts", &hevc), ("&mp4", "hls.mp4", &hevc_flac)] {
        let out = srv.dir.path().join(file);
        record(
            &srv.url(&format!("/api/stream.m3u8?src=cam{query}")),
            5,
            &out,
        );
        assert_eq!(&probe_file(&out), want, "{file}");
        assert_decodes_cleanly(&out, file);
    }
    let (_, body) = srv.try_get("/api/stream.m3u8?src=cam&mp4").unwrap();
    let map = body
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MAP:URI=\""))
        .expect("EXT-X-MAP")
        .trim_end_matches('"')
        .to_string();
    let init = Command::new("curl")
        .args(["-sf", &srv.url(&format!("/api/{map}"))])
        .output()
        .unwrap()
        .stdout;
    assert!(init.windows(4).any(|w| w == b"hvc1") && init.windows(4).any(|w| w == b"hvcC"));

    // The MP4 carries it all: H.265, and the PCMA as FLAC.
    let out = srv.dir.path().join("stream.mp4");
    record(&srv.url("/api/stream.mp4?src=cam"), 4, &out);
    assert_eq!(probe_file(&out), hevc_flac);
    assert_decodes_cleanly(&out, "stream.mp4");

    let v = ffprobe(
        &srv.url("/api/frame.jpeg?src=cam"),
        "codec_name,width,height",
        &[],
    );
    let s = &v["streams"][0];
    assert_eq!(
        (
            s["codec_name"].as_str(),
            s["width"].as_u64(),
            s["height"].as_u64()
        ),
        (Some("mjpeg"), Some(320), Some(240)),
        "{v}\n{}",
        srv.log()
    );
}

/// Our own FLV demuxer over `flv` (ffmpeg 5.1 cannot read enhanced FLV):
/// the video track it announces and the frames as an Annex B stream (the
/// parameter sets from the hvcC before each keyframe), with the frame and
/// keyframe counts.
fn enhanced_flv_to_annex_b(flv: &[u8]) -> (Vec<u8>, usize, usize) {
    use streamvisor::media::flv::{Demuxer, Event};
    use streamvisor::media::h264::nal_units;
    use streamvisor::media::h265::HevcConfig;
    use streamvisor::media::Codec;
    let mut d = Demuxer::new();
    d.push(flv);
    let (mut es, mut frames, mut keys) = (Vec::new(), 0, 0);
    let mut cfg = None;
    // A capture cut off mid-tag just ends.
    while let Ok(Some(ev)) = d.next_event() {
        match ev {
            Event::Track(t) if t.codec == Codec::H265 => {
                cfg = Some(HevcConfig::parse(&t.config).expect("a valid hvcC"));
            }
            Event::Track(t) => assert_ne!(t.codec, Codec::H264, "H.264 from an H.265 camera"),
            Event::Frame(f) if f.codec == Codec::H265 => {
                let c = cfg.as_ref().expect("the hvcC before the first frame");
                if frames == 0 {
                    assert!(f.keyframe, "the first frame is a keyframe");
                }
                if f.keyframe {
                    keys += 1;
                    for ps in c.vps.iter().chain(&c.sps).chain(&c.pps) {
                        es.extend_from_slice(&[0, 0, 0, 1]);
                        es.extend_from_slice(ps);
                    }
                }
                for nal in nal_units(&f.payload, c.length_size) {
                    es.extend_from_slice(&[0, 0, 0, 1]);
                    es.extend_from_slice(&nal.unwrap());
                }
                frames += 1;
            }
            _ => {}
        }
    }
    (es, frames, keys)
}

/// The enhanced FLV's H.265 decodes cleanly (written out as Annex B).
fn assert_enhanced_flv_decodes(flv: &[u8], dir: &Path, what: &str) {
    // IsExHeader | keyframe | SequenceStart, FourCC `hvc1`.
    assert!(
        flv.windows(5).any(|w| w == [0x90, b'h', b'v', b'c', b'1']),
        "{what}: no enhanced hvc1 sequence start"
    );
    let (es, frames, keys) = enhanced_flv_to_annex_b(flv);
    assert!(
        frames >= 25 && keys >= 1,
        "{what}: {frames} frames, {keys} keyframes"
    );
    let file = dir.join(format!("{what}.hevc"));
    std::fs::write(&file, es).unwrap();
    assert_decodes_cleanly(&file, what);
}

#[test]
fn http_flv_and_rtmp_play_carry_h265_as_enhanced_flv() {
    let _p = heavy();
    let cam = Camera::start_with(0, "h265", "pcma");
    let (rtsp, rtmp) = (free_port(), free_port());
    // `pushed`: where the captured enhanced FLV is published back, as OBS
    // 30+ would publish HEVC.
    let srv = Server::start(
        &format!("  cam: \"{}\"\n  pushed:\n", camera_source(&cam)),
        &format!(
            "rtsp: {{ listen: \"127.0.0.1:{rtsp}\" }}\nrtmp: {{ listen: \"127.0.0.1:{rtmp}\" }}\n"
        ),
    );

    let flv = srv.dir.path().join("http.flv");
    // curl ends with "timed out" (28) after 6 s of a live body: expected.
    let _ = run(
        Command::new("curl")
            .args(["-s", "--max-time", "6", "-o"])
            .arg(&flv)
            .arg(srv.url("/api/stream.flv?src=cam")),
        20,
    );
    let body = std::fs::read(&flv).unwrap();
    assert_enhanced_flv_decodes(&body, srv.dir.path(), "http-flv");
    // The camera's G.711 comes along as FLV carries it.
    let mut d = streamvisor::media::flv::Demuxer::new();
    d.push(&body);
    let mut pcma = false;
    while let Ok(Some(ev)) = d.next_event() {
        if let streamvisor::media::flv::Event::Frame(f) = ev {
            pcma |= f.codec == streamvisor::media::Codec::Pcma;
        }
    }
    assert!(pcma, "no PCMA in the FLV");

    // That enhanced FLV published back (go2rtc's HTTP POST), at about real
    // time, reads back over RTSP as H.265.
    let rate = (body.len() / 5).max(1024).to_string();
    let mut post = Command::new("curl")
        .args(["-s", "-X", "POST", "--limit-rate", &rate, "--data-binary"])
        .arg(format!("@{}", flv.display()))
        .arg(srv.url("/api/stream.flv?dst=pushed"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let back = srv.dir.path().join("back.mkv");
    let o = run(
        Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-rtsp_transport", "tcp", "-i"])
            .arg(format!("rtsp://127.0.0.1:{rtsp}/pushed"))
            .args(["-t", "2", "-an", "-c", "copy"])
            .arg(&back),
        30,
    );
    let _ = post.kill();
    let _ = post.wait();
    assert!(o.status.success(), "{}\n{}", stderr(&o), srv.log());
    assert_eq!(
        probe_file(&back),
        vec![("video".to_string(), "hevc".to_string())]
    );
    assert_decodes_cleanly(&back, "enhanced FLV published in, read over RTSP");

    // RTMP play, with librtmp's rtmpdump as the player.
    let out = srv.dir.path().join("dump.flv");
    let mut dump = Command::new("rtmpdump")
        .args(["-q", "--live", "-r"])
        .arg(format!("rtmp://127.0.0.1:{rtmp}/live/cam"))
        .arg("-o")
        .arg(&out)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    signal(dump.id(), 2);
    let _ = dump.wait();
    let body = std::fs::read(&out).unwrap();
    assert_enhanced_flv_decodes(&body, srv.dir.path(), "rtmp");
    // onMetaData's videocodecid: the FourCC `hvc1` as an AMF0 number.
    let mut id = vec![0u8];
    id.extend_from_slice(&(u32::from_be_bytes(*b"hvc1") as f64).to_be_bytes());
    let at = body
        .windows(12)
        .position(|w| w == b"videocodecid")
        .expect("onMetaData with videocodecid");
    assert_eq!(&body[at + 12..at + 21], &id[..]);
}

/// An H.265 elementary stream of `secs` at `size` (no B-frames, as cameras).
fn hevc_es(dir: &Path, size: &str, secs: u32) -> std::path::PathBuf {
    let path = dir.join(format!("{size}.hevc"));
    let o = run(
        Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
            .arg(format!("testsrc2=size={size}:rate=25"))
            .args([
                "-t",
                &secs.to_string(),
                "-c:v",
                "libx265",
                "-preset",
                "ultrafast",
            ])
            .args([
                "-x265-params",
                "log-level=error:keyint=25:bframes=0",
                "-pix_fmt",
                "yuv420p",
            ])
            .args(["-f", "hevc"])
            .arg(&path),
        60,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    path
}

/// The picture width in an fMP4 init segment's `hvc1` sample entry.
fn hvc1_width(init: &[u8]) -> u16 {
    let at = init.windows(4).position(|w| w == b"hvc1").expect("hvc1") + 4 + 24;
    u16::from_be_bytes([init[at], init[at + 1]])
}

#[test]
fn an_in_band_parameter_set_change_is_a_new_hls_init_segment_after_a_discontinuity() {
    let _p = heavy();
    let rtsp = free_port();
    let srv = Server::start(
        "  pushed:\n",
        &format!("rtsp: {{ listen: \"127.0.0.1:{rtsp}\" }}\n"),
    );
    // One publisher whose pictures change size mid-stream: new VPS, SPS
    // and PPS in band, as a camera whose resolution is changed sends.
    let a = std::fs::read(hevc_es(srv.dir.path(), "320x240", 4)).unwrap();
    let b = std::fs::read(hevc_es(srv.dir.path(), "480x272", 8)).unwrap();
    let both = srv.dir.path().join("both.hevc");
    std::fs::write(&both, [a, b].concat()).unwrap();
    let mut pusher = Command::new("ffmpeg")
        .args(["-v", "error", "-re", "-f", "hevc", "-r", "25", "-i"])
        .arg(&both)
        .args(["-c", "copy", "-f", "rtsp", "-rtsp_transport", "tcp"])
        .arg(format!("rtsp://127.0.0.1:{rtsp}/pushed"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let playlist = || {
        srv.try_get("/api/stream.m3u8?src=pushed&mp4")
            .map(|r| r.1)
            .unwrap_or_default()
    };
    srv.wait_for("the first fMP4 segment", Duration::from_secs(15), || {
        playlist().contains("#EXTINF")
    });
    let mut last = String::new();
    srv.wait_for("a second init segment", Duration::from_secs(20), || {
        last = playlist();
        last.matches("#EXT-X-MAP:").count() >= 2
    });
    let _ = pusher.kill();
    let _ = pusher.wait();
    // The new init segment comes after a discontinuity (RFC 8216 §4.3.2.3).
    let lines: Vec<&str> = last.lines().collect();
    let maps: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with("#EXT-X-MAP:"))
        .collect();
    assert_eq!(lines[maps[1] - 1], "#EXT-X-DISCONTINUITY", "{last}");
    let init = |i: usize| {
        let uri = lines[i]
            .trim_start_matches("#EXT-X-MAP:URI=\"")
            .trim_end_matches('"');
        Command::new("curl")
            .args(["-sf", &srv.url(&format!("/api/{uri}"))])
            .output()
            .unwrap()
            .stdout
    };
    assert_eq!(
        (hvc1_width(&init(maps[0])), hvc1_width(&init(maps[1]))),
        (320, 480),
        "{last}"
    );
}
