//! What a source string runs: the argv of each kind of source (RTSP,
//! files, `exec:`, `ffmpeg:`, references to other streams), go2rtc's
//! templates and hardware engines, and the errors that name them.

use super::*;
use crate::config::Timeouts;

fn src(url: &str, kind: SourceKind) -> SourceConfig {
    SourceConfig {
        url: url.into(),
        kind,
        timeouts: Timeouts::default(),
    }
}

fn env(index: usize) -> Env<'static> {
    Env {
        ffmpeg_bin: "ffmpeg",
        internal_base: Some("http://127.0.0.1:1984"),
        internal_rtsp: None,
        internal_token: Some("abc"),
        publish_url: Some("rtsp://127.0.0.1:8554/cam%202?publish_token=7"),
        stream: "cam 2",
        index,
        over_rtsp: false,
    }
}

#[test]
fn rtsp_is_copied_over_tcp() {
    let c = command(
        &src(
            "rtsp://u:p@h/s",
            SourceKind::Url {
                url: "rtsp://u:p@h/s".into(),
                scheme: UrlScheme::Rtsp,
            },
        ),
        &env(0),
    )
    .unwrap();
    let line = c.to_string();
    assert!(line.starts_with("ffmpeg -hide_banner"), "{line}");
    assert!(
        line.contains("-rtsp_transport tcp -timeout 5000000 -i rtsp://u:p@h/s -c copy"),
        "{line}"
    );
    assert!(
        line.ends_with("-f flv -flvflags no_duration_filesize pipe:1"),
        "{line}"
    );
}

/// A missing PTS is filled from the DTS for a camera, never for a
/// looped file: ffmpeg flushes the filter when the file loops and drops
/// all video after it.
#[test]
fn a_lost_pts_is_filled_for_cameras_but_a_looped_file_keeps_its_video() {
    let line = |url: &str, scheme| {
        let kind = SourceKind::Url {
            url: url.into(),
            scheme,
        };
        command(&src(url, kind), &env(0)).unwrap().args.join(" ")
    };
    assert!(line("rtsp://h/s", UrlScheme::Rtsp).contains("-bsf:v setts="));
    let file = line("/media/demo.mp4", UrlScheme::File);
    assert!(file.contains("-stream_loop -1"), "{file}");
    assert!(!file.contains("-bsf"), "{file}");
    let ffmpeg_file = command(
        &src(
            "ffmpeg:/media/demo.mp4#video=copy",
            SourceKind::Ffmpeg {
                input: FfmpegInput::Url {
                    url: "/media/demo.mp4".into(),
                    scheme: UrlScheme::File,
                },
                video: Some(VideoCodec::Copy),
                audio: None,
                hardware: None,
                templates: FfmpegTemplates::default(),
            },
        ),
        &env(0),
    )
    .unwrap()
    .args
    .join(" ");
    assert!(!ffmpeg_file.contains("-bsf"), "{ffmpeg_file}");
}

#[test]
fn self_reference_reads_back_without_itself() {
    let c = command(
        &src(
            "ffmpeg:cam 2#audio=aac",
            SourceKind::Ffmpeg {
                input: FfmpegInput::Stream("cam 2".into()),
                video: None,
                audio: Some(AudioCodec::Aac),
                hardware: None,
                templates: FfmpegTemplates::default(),
            },
        ),
        &env(1),
    )
    .unwrap();
    let line = c.args.join(" ");
    assert!(
        line.contains(
            "-i http://127.0.0.1:1984/api/stream.flv?src=cam%202&internal=1&exclude=1&token=abc"
        ),
        "{line}"
    );
    assert!(line.contains("-vn -c:a aac"), "{line}");
}

#[test]
fn stream_reference_needs_the_http_server() {
    let e = command(
        &src(
            "ffmpeg:x",
            SourceKind::Ffmpeg {
                input: FfmpegInput::Stream("x".into()),
                video: Some(VideoCodec::Copy),
                audio: None,
                hardware: None,
                templates: FfmpegTemplates::default(),
            },
        ),
        &Env {
            internal_base: None,
            ..env(0)
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("api.listen"), "{e}");
}

#[test]
fn exec_output_gets_our_rtsp_url() {
    let c = command(
        &src(
            "exec:ffmpeg -i x -f rtsp {output}",
            SourceKind::Exec {
                argv: vec![
                    "ffmpeg".into(),
                    "-i".into(),
                    "x".into(),
                    "-f".into(),
                    "rtsp".into(),
                    "{output}".into(),
                ],
            },
        ),
        &env(0),
    )
    .unwrap();
    assert_eq!(
        c.args.last().unwrap(),
        "rtsp://127.0.0.1:8554/cam%202?publish_token=7"
    );
}

#[test]
fn exec_runs_without_a_shell() {
    let c = command(
        &src(
            "exec:my-tool --flv",
            SourceKind::Exec {
                argv: vec!["my-tool".into(), "--flv".into()],
            },
        ),
        &env(0),
    )
    .unwrap();
    assert_eq!(c.program, "my-tool");
    assert_eq!(c.args, vec!["--flv"]);
}

fn ffmpeg(
    url: &str,
    input: FfmpegInput,
    video: Option<VideoCodec>,
    audio: Option<AudioCodec>,
    hardware: Option<Hardware>,
    templates: FfmpegTemplates,
) -> SourceConfig {
    src(
        url,
        SourceKind::Ffmpeg {
            input,
            video,
            audio,
            hardware,
            templates,
        },
    )
}

fn camera() -> FfmpegInput {
    FfmpegInput::Url {
        url: "rtsp://cam/s".into(),
        scheme: UrlScheme::Rtsp,
    }
}

/// A machine with these engines' devices.
struct Have(&'static [HwEngine]);

impl Devices for Have {
    fn present(&self, e: HwEngine) -> Result<(), NoDevice> {
        if self.0.contains(&e) {
            Ok(())
        } else {
            Err(NoDevice {
                engine: e,
                missing: format!("no {} device", e.name()),
            })
        }
    }
}

fn line(s: &SourceConfig, have: &'static [HwEngine]) -> String {
    command_with(s, &env(0), &Have(have))
        .unwrap()
        .args
        .join(" ")
}

#[test]
fn output_codecs_use_go2rtcs_templates() {
    let t = FfmpegTemplates::default();
    let h265 = ffmpeg("x", camera(), Some(VideoCodec::H265), None, None, t.clone());
    let l = line(&h265, &[]);
    assert!(
        l.contains("-i rtsp://cam/s -c:v libx265 -g 50 -profile:v main -x265-params level=5.1:high-tier=0 -preset:v superfast -tune:v zerolatency -pix_fmt:v yuv420p -an"),
        "{l}"
    );
    // ffmpeg 5.1 cannot write H.265 into FLV: it publishes back.
    assert!(
        l.ends_with("-f rtsp -rtsp_transport tcp rtsp://127.0.0.1:8554/cam%202?publish_token=7"),
        "{l}"
    );
    let h264 = ffmpeg("x", camera(), Some(VideoCodec::H264), None, None, t.clone());
    let l = line(&h264, &[]);
    assert!(
        l.contains("-c:v libx264 -g 50 -profile:v high -level:v 4.1 -preset:v superfast -tune:v zerolatency -pix_fmt:v yuv420p -an"),
        "{l}"
    );
    assert!(
        l.ends_with("-f flv -flvflags no_duration_filesize pipe:1"),
        "{l}"
    );
    for (codec, args) in [
        (AudioCodec::Pcma, "-vn -c:a pcm_alaw -ar:a 8000 -ac:a 1"),
        (AudioCodec::Pcmu, "-vn -c:a pcm_mulaw -ar:a 8000 -ac:a 1"),
        (AudioCodec::Aac, "-vn -c:a aac"),
    ] {
        let s = ffmpeg("x", camera(), None, Some(codec), None, t.clone());
        let l = line(&s, &[]);
        assert!(l.contains(args), "{codec:?}: {l}");
        // G.711 at 8 kHz and AAC fit the FLV pipe.
        assert!(l.ends_with("pipe:1"), "{codec:?}: {l}");
    }
    let opus = ffmpeg("x", camera(), None, Some(AudioCodec::Opus), None, t);
    let l = line(&opus, &[]);
    assert!(
        l.contains("-vn -c:a libopus -application:a lowdelay -min_comp 0 -f rtsp"),
        "{l}"
    );
}

#[test]
fn the_files_templates_replace_the_defaults() {
    let t = FfmpegTemplates::with(
        [
            ("global", "-hide_banner -threads 2"),
            ("h264", "-c:v libx264 -preset:v ultrafast -crf 30"),
            ("pcmu", "-c:a pcm_mulaw -ar:a 8000 -ac:a 1 -af 'volume=2'"),
            ("timeout", "9"),
            ("rtsp", "-rtsp_transport udp -timeout {timeout} -i {input}"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    );
    let s = ffmpeg(
        "x",
        camera(),
        Some(VideoCodec::H264),
        Some(AudioCodec::Pcmu),
        None,
        t.clone(),
    );
    let l = line(&s, &[]);
    assert_eq!(
        l,
        "-hide_banner -threads 2 -nostdin -loglevel error \
         -rtsp_transport udp -timeout 9000000 -i rtsp://cam/s \
         -c:v libx264 -preset:v ultrafast -crf 30 \
         -c:a pcm_mulaw -ar:a 8000 -ac:a 1 -af volume=2 \
         -flush_packets 1 -f flv -flvflags no_duration_filesize pipe:1"
    );
    // With no input template for http, our own flags, with the
    // file's timeout.
    let s = ffmpeg(
        "x",
        FfmpegInput::Url {
            url: "http://cam/x.mjpeg".into(),
            scheme: UrlScheme::Http,
        },
        Some(VideoCodec::H264),
        None,
        None,
        t,
    );
    let l = line(&s, &[]);
    assert!(
        l.contains("-rw_timeout 9000000 -i http://cam/x.mjpeg -c:v libx264"),
        "{l}"
    );
}

#[test]
fn hardware_engines_get_go2rtcs_arguments() {
    let t = FfmpegTemplates::default();
    let hw = |v: VideoCodec, h: Hardware| ffmpeg("x", camera(), Some(v), None, Some(h), t.clone());
    let vaapi = Hardware::Engine(HwEngine::Vaapi);
    let l = line(&hw(VideoCodec::H264, vaapi), &[HwEngine::Vaapi]);
    assert!(
        l.contains(
            "-hwaccel vaapi -hwaccel_output_format vaapi -hwaccel_flags allow_profile_mismatch \
             -rtsp_transport tcp -timeout 5000000 -i rtsp://cam/s \
             -c:v h264_vaapi -g 50 -bf 0 -profile:v high -level:v 4.1 -sei:v 0 \
             -vf format=vaapi|nv12,hwupload,scale_vaapi=out_color_matrix=bt709:out_range=tv:format=nv12 -an"
        ),
        "{l}"
    );
    let l = line(&hw(VideoCodec::H265, vaapi), &[HwEngine::Vaapi]);
    assert!(
        l.contains("-c:v hevc_vaapi -g 50 -bf 0 -profile:v main -level:v 5.1 -sei:v 0 -vf format=vaapi|nv12,hwupload -an"),
        "{l}"
    );
    let l = line(
        &hw(VideoCodec::H264, Hardware::Engine(HwEngine::Cuda)),
        &[HwEngine::Cuda],
    );
    assert!(
        l.contains("-hwaccel cuda -hwaccel_output_format cuda -rtsp_transport"),
        "{l}"
    );
    assert!(
        l.contains(
            "-c:v h264_nvenc -g 50 -bf 0 -profile:v high -level:v auto -preset:v p2 -tune:v ll -an"
        ),
        "{l}"
    );
    let l = line(
        &hw(VideoCodec::H264, Hardware::Engine(HwEngine::V4l2m2m)),
        &[HwEngine::V4l2m2m],
    );
    assert!(
        l.contains("-timeout 5000000 -i rtsp://cam/s -c:v h264_v4l2m2m -g 50 -bf 0 -an"),
        "{l}"
    );
    let l = line(
        &hw(VideoCodec::Mjpeg, Hardware::Engine(HwEngine::Rkmpp)),
        &[HwEngine::Rkmpp],
    );
    assert!(l.starts_with("-hide_banner -nostdin -loglevel error -hwaccel rkmpp -hwaccel_output_format drm_prime -afbc rga"), "{l}");
    assert!(l.contains("-c:v mjpeg_rkmpp -an"), "{l}");
    // Auto: CUDA before VAAPI, as go2rtc probes.
    let l = line(
        &hw(VideoCodec::H264, Hardware::Auto),
        &[HwEngine::Vaapi, HwEngine::Cuda],
    );
    assert!(l.contains("h264_nvenc"), "{l}");
    let l = line(&hw(VideoCodec::H264, Hardware::Auto), &[HwEngine::Vaapi]);
    assert!(l.contains("h264_vaapi"), "{l}");
}

#[test]
fn hardware_falls_back_to_software() {
    let t = FfmpegTemplates::default();
    let s = ffmpeg(
        "x",
        camera(),
        Some(VideoCodec::H264),
        None,
        Some(Hardware::Engine(HwEngine::Vaapi)),
        t.clone(),
    );
    // No device: libx264, no hwaccel.
    let l = line(&s, &[HwEngine::Cuda]);
    assert!(!l.contains("hwaccel") && !l.contains("vaapi"), "{l}");
    assert!(l.contains("-c:v libx264 -g 50"), "{l}");
    assert_eq!(
        choose_engine(Hardware::Engine(HwEngine::Vaapi), "h264", &Have(&[]))
            .map_err(|e| e.to_string()),
        Err("#hardware=vaapi: no vaapi device".into())
    );
    assert!(choose_engine(Hardware::Auto, "h264", &Have(&[])).is_err());
    // go2rtc does not auto-pick for H.265, and has no MJPEG for NVENC.
    assert!(choose_engine(Hardware::Auto, "h265", &Have(HwEngine::ALL)).is_err());
    let e = choose_engine(
        Hardware::Engine(HwEngine::Cuda),
        "mjpeg",
        &Have(HwEngine::ALL),
    )
    .map_err(|e| e.to_string());
    assert_eq!(e, Err("go2rtc has no mjpeg encoder for cuda".into()));
    // This machine's own look (no GPU here, nor on CI): never Windows'
    // or macOS' engines on Linux.
    assert!(SystemDevices.present(HwEngine::Dxva2).is_err());
    assert!(SystemDevices.present(HwEngine::Videotoolbox).is_err());
    // Audio and copies are untouched by #hardware.
    let s = ffmpeg(
        "x",
        camera(),
        Some(VideoCodec::Copy),
        Some(AudioCodec::Aac),
        Some(Hardware::Auto),
        t,
    );
    let l = line(&s, HwEngine::ALL);
    assert!(
        !l.contains("hwaccel") && l.contains("-c:v copy -c:a aac"),
        "{l}"
    );
}

#[test]
fn unsupported_sources_never_run() {
    let s = src(
        "tapo://cam",
        SourceKind::Unsupported {
            scheme: "tapo".into(),
            reason: "go2rtc's `tapo:` source is not supported by streamvisor".into(),
        },
    );
    let e = command(&s, &env(0)).unwrap_err();
    assert!(
        e.to_string().contains("`tapo:` source is not supported"),
        "{e}"
    );
}

#[test]
fn errors_name_the_source_the_template_and_the_engine() {
    // A template whose quotes do not close: the source's error names
    // the stream, the source and the template.
    let t = FfmpegTemplates::with([("h264".to_string(), "-c:v 'libx264".to_string())].into());
    let s = ffmpeg("ffmpeg:x", camera(), Some(VideoCodec::H264), None, None, t);
    let e = command_with(&s, &env(1), &Have(&[])).unwrap_err();
    assert_eq!((e.stream.as_str(), e.index), ("cam 2", 1));
    assert!(
        matches!(&e.reason, Unrunnable::Template(TemplateError::Words { name, .. }) if name == "h264"),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .ends_with("ffmpeg.h264: missing closing quote"),
        "{e}"
    );
    // The engine asked for, and what was not there.
    let e = choose_engine(Hardware::Engine(HwEngine::Cuda), "h264", &Have(&[])).unwrap_err();
    assert!(
        matches!(&e, HardwareError::Absent { source } if source.engine == HwEngine::Cuda),
        "{e:?}"
    );
}
