//! Whole files through [`Config::parse`]: the sections without a file of
//! their own, errors and their locations, and configs from the field. The
//! helpers here are shared by the section files' tests.

use super::*;

pub(super) fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("s.yaml"), text, &|k| {
        (k == "CAM_IP").then(|| "10.0.0.9".to_string())
    })
}

pub(super) fn ffmpeg_kind(c: &Config, stream: usize) -> &SourceKind {
    &c.streams[stream].sources[0].kind
}

#[test]
fn go2rtc_syntax() {
    let c = parse(
        r#"
api:    { listen: ":1984" }
rtsp:   { listen: ":8554" }
ffmpeg: { bin: ffmpeg }
log:    { level: info }
streams:
  cam1: rtsp://10.0.0.2/stream1
  cam2: [rtsp://10.0.0.3/main, "ffmpeg:cam2#audio=aac"]
  pushed:
"#,
    )
    .unwrap();
    assert_eq!(c.api_listen, Some("0.0.0.0:1984".parse().unwrap()));
    assert_eq!(c.streams.len(), 3);
    assert_eq!(c.streams[0].name, "cam1");
    assert_eq!(
        c.streams[0].sources[0].kind,
        SourceKind::Url {
            url: "rtsp://10.0.0.2/stream1".into(),
            scheme: UrlScheme::Rtsp
        }
    );
    assert_eq!(c.streams[1].sources[1].url, "ffmpeg:cam2#audio=aac");
    assert_eq!(
        c.streams[1].sources[1].kind,
        SourceKind::Ffmpeg {
            input: FfmpegInput::Stream("cam2".into()),
            video: None,
            audio: Some(AudioCodec::Aac),
            hardware: None,
            templates: FfmpegTemplates::default(),
        }
    );
    assert!(c.streams[2].sources.is_empty());
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn defaults_and_overrides() {
    let c = parse(
            "supervisor: { linger: 5s, kill_timeout: 500ms }\nstreams:\n  a: rtsp://x/y#kill_timeout=3s#start_timeout=1.5s\n",
        )
        .unwrap();
    assert_eq!(c.supervisor.linger, Duration::from_secs(5));
    let t = c.streams[0].sources[0].timeouts;
    assert_eq!(t.kill_timeout, Duration::from_secs(3));
    assert_eq!(t.start_timeout, Duration::from_millis(1500));
    assert_eq!(t.linger, Duration::from_secs(5));
    assert_eq!(t.stall_timeout, Duration::from_secs(10));
    // The fragment is ours, never the camera's.
    assert_eq!(
        c.streams[0].sources[0].kind,
        SourceKind::Url {
            url: "rtsp://x/y".into(),
            scheme: UrlScheme::Rtsp
        }
    );
}

#[test]
fn errors_name_line_and_col() {
    let e = parse("supervisor:\n  kill_timeout: soon\n").unwrap_err();
    assert_eq!((e.line, e.col), (2, 17), "{e}");
    assert!(e.message.contains("kill_timeout"), "{e}");

    let e = parse("streams:\n  cam: foo://bar\n").unwrap_err();
    assert_eq!((e.line, e.col), (2, 8), "{e}");
    assert!(e.message.contains("unknown source scheme `foo`"), "{e}");

    let e =
        parse("streams:\n  cam:\n    - rtsp://a/b\n    - \"ffmpeg:x#video=vp9\"\n").unwrap_err();
    assert_eq!((e.line, e.col), (4, 7), "{e}");

    let e = parse("api: { listen: [1, 2] }\n").unwrap_err();
    assert_eq!(e.line, 1, "{e}");
    assert!(e.col > 0, "{e}");
    assert!(!e.message.contains("line 1"), "location said once: {e}");

    let e = parse("streams:\n  a: x\n  a: y\n").unwrap_err();
    assert_eq!(
        (e.line, e.message.as_str()),
        (3, "duplicate mapping key: a"),
        "{e}"
    );

    let e = parse("streams:\n  a: rtsp://x\n b: [\n").unwrap_err();
    assert!(e.line >= 3, "{e}");

    let e = parse("api: { listen: \"nonsense\" }\n").unwrap_err();
    assert!(e.message.contains("api.listen"), "{e}");
}

#[test]
fn rtmp_and_publish_settings() {
    let c = parse("streams:\n  cam:\n").unwrap();
    assert_eq!(c.rtmp_listen, Some("0.0.0.0:1935".parse().unwrap()));
    assert_eq!(c.publish, PublishConfig::default());
    assert!(c.publish.takeover && !c.publish.auto_create);
    let c =
        parse("rtmp: {listen: \"\"}\npublish: {auto_create: true, takeover: false, timeout: 2s}\n")
            .unwrap();
    assert_eq!(c.rtmp_listen, None);
    assert_eq!(
        c.publish,
        PublishConfig {
            auto_create: true,
            takeover: false,
            timeout: Duration::from_secs(2),
            replace_sources: ReplaceSources::None,
            rtsp_default_query: None,
        }
    );
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    // Which configured cameras a publisher may replace: none by default.
    let c = parse("streams:\n  cam: rtsp://h/s\n").unwrap();
    assert!(!c.publish.may_replace("cam"));
    let c = parse("publish: {replace_sources: true}\n").unwrap();
    assert!(c.publish.may_replace("cam"));
    let c = parse("publish: {replace_sources: [cam, door]}\n").unwrap();
    assert!(c.publish.may_replace("door") && !c.publish.may_replace("other"));
    let e = parse("publish: {replace_sources: {a: 1}}\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains(":1:"), "{e}");
    // api.origin: a string or a list of origins.
    let c = parse("api: {origin: \"*\"}\n").unwrap();
    assert_eq!(c.api_origin, ["*"]);
    let c = parse("api:\n  origin: [\"https://ha.example:8123/\"]\n").unwrap();
    assert_eq!(c.api_origin, ["https://ha.example:8123"]);
    let c = parse("api:\n  hosts: cams.example.com\n").unwrap();
    assert_eq!(c.api_hosts, ["cams.example.com"]);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let e = parse("api:\n  origin: ha.example\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains(":2:") && e.contains("api.origin"), "{e}");
    let c = parse("publish: {publish_timeout: 1500ms}\n").unwrap();
    assert_eq!(c.publish.timeout, Duration::from_millis(1500));
    let e = parse("publish:\n  timeout: 10ms\n").unwrap_err();
    assert_eq!((e.line, e.col), (2, 12), "{e}");
    assert!(e.message.contains("publish.timeout"), "{e}");
    let e = parse("rtmp: {listen: \"nope\"}\n").unwrap_err();
    assert!(e.message.contains("rtmp.listen"), "{e}");
}

#[test]
fn durations() {
    assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
    assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
    assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
    assert!(parse_duration("-1s").is_err());
    assert!(parse_duration("5 parsecs").is_err());
    assert!(parse_duration("").is_err());
}

#[test]
fn replay_fuzz_corpus() {
    // Inputs of fuzz/fuzz_targets/config_parse.rs: each parses or fails
    // with a located error, never panics.
    crate::replay_fuzz_corpus("config_parse", |bytes| {
        if let Ok(text) = std::str::from_utf8(bytes) {
            if let Err(e) = Config::parse(Path::new("fuzz.yaml"), text, &|_| None) {
                assert!(e.to_string().starts_with("fuzz.yaml:"), "{e}");
            }
        }
    });
}

#[test]
fn empty_file_is_empty_config() {
    let c = parse("").unwrap();
    assert!(c.streams.is_empty());
    assert_eq!(c.api_listen, Some("0.0.0.0:1984".parse().unwrap()));
}

#[test]
fn max_connections_per_listener() {
    let c = parse("").unwrap();
    assert_eq!(
        (
            c.api_max_connections,
            c.rtsp_max_connections,
            c.rtmp_max_connections
        ),
        (2048, 2048, 512)
    );
    let c = parse(
            "api: { max_connections: 20 }\nrtsp: { max_connections: 30 }\nrtmp: { max_connections: 40 }\n",
        )
        .unwrap();
    assert_eq!(
        (
            c.api_max_connections,
            c.rtsp_max_connections,
            c.rtmp_max_connections
        ),
        (20, 30, 40)
    );
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let e = parse("rtsp:\n  max_connections: 0\n").unwrap_err();
    assert_eq!((e.line, e.col), (2, 20), "{e}");
    assert!(e.message.contains("rtsp.max_connections"), "{e}");
    let e = parse("api:\n  max_connections: many\n").unwrap_err();
    assert_eq!(e.line, 2, "{e}");
    assert!(e.col > 0, "{e}");
}

#[test]
fn rtsp_default_query() {
    let c = parse("rtsp:\n  default_query: \"video=h264&audio=pcma\"\n").unwrap();
    assert_eq!(
        c.publish.rtsp_default_query.as_deref(),
        Some("video=h264&audio=pcma")
    );
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let c = parse("rtsp: {default_query: video}\n").unwrap();
    assert_eq!(c.publish.rtsp_default_query.as_deref(), Some("video"));
    assert_eq!(parse("").unwrap().publish.rtsp_default_query, None);
    let e = parse("rtsp:\n  default_query: mp4\n").unwrap_err();
    assert_eq!((e.line, e.col), (2, 18), "{e}");
    assert!(e.message.starts_with("rtsp.default_query: `mp4=`"), "{e}");
    assert!(parse("rtsp: {default_query: \"video=vp9\"}\n").is_err());
}

#[test]
fn a_go2rtc_config_from_the_field_loads() {
    let text = include_str!("../../testdata/go2rtc_field.yaml");
    let c = Config::parse(Path::new("go2rtc.yaml"), text, &|_| None).unwrap();
    assert_eq!(c.streams.len(), 12);
    let unsupported: Vec<&str> = c
        .streams
        .iter()
        .flat_map(|s| &s.sources)
        .filter_map(|s| match &s.kind {
            SourceKind::Unsupported { scheme, .. } => Some(scheme.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        unsupported,
        ["tapo", "onvif", "homekit", "dvrip", "hass", "echo"]
    );
    // One warning each, one for `ffmpeg.output`, one for the STUN
    // candidate; nothing else.
    assert_eq!(c.warnings.len(), 8, "{:#?}", c.warnings);
    assert!(
        c.warnings[1].starts_with("go2rtc.yaml:32:7: streams.tapo_c200: go2rtc's `tapo:`"),
        "{:#?}",
        c.warnings
    );
    assert!(
        c.warnings[0].starts_with("go2rtc.yaml:19:3: ffmpeg.output: "),
        "{:#?}",
        c.warnings
    );
    assert_eq!(c.publish.rtsp_default_query.as_deref(), Some("video&audio"));
    let garage = c.stream("garage_hevc").unwrap();
    let SourceKind::Ffmpeg {
        video,
        hardware,
        templates,
        ..
    } = &garage.sources[0].kind
    else {
        panic!("{garage:?}")
    };
    assert_eq!(*video, Some(VideoCodec::H265));
    assert_eq!(*hardware, Some(Hardware::Engine(HwEngine::Vaapi)));
    assert_eq!(templates.get("timeout"), Some("10"));
    assert!(garage.sources[0].kind.publishes_back());
    assert_eq!(
        c.stream("intercom").unwrap().sources[0].kind.audio_codec(),
        Some(crate::media::Codec::Pcmu)
    );
    assert_eq!(
        c.stream("unifi").unwrap().sources[0].kind,
        SourceKind::Url {
            url: "rtsps://192.168.1.1:7441/AbCdEf".into(),
            scheme: UrlScheme::Rtsp
        }
    );
}
