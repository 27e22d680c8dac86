//! A `streams:` entry's source string (go2rtc's grammar: a URL, `ffmpeg:`,
//! `exec:`, with `#key=value` parameters): what it is, how it is parsed,
//! what the API may add, and the loops `ffmpeg:NAME` may make.

use std::collections::{BTreeSet, HashMap};

use super::ffmpeg::{AudioCodec, FfmpegTemplates, Hardware, HwEngine, VideoCodec};
use super::schemes::{scheme_of, url_for, COMMAND_SCHEMES, GO2RTC_ONLY_SCHEMES};
use super::{parse_duration, set_timeout, StreamConfig, Timeouts};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceConfig {
    /// Exactly as written in the config; the API echoes it.
    pub url: String,
    pub kind: SourceKind,
    /// `supervisor:` defaults with this source's `#key=value` overrides.
    pub timeouts: Timeouts,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    /// Pulled through `ffmpeg -i URL -c copy`.
    Url { url: String, scheme: UrlScheme },
    /// go2rtc's `ffmpeg:` shorthand.
    Ffmpeg {
        input: FfmpegInput,
        video: Option<VideoCodec>,
        audio: Option<AudioCodec>,
        /// `#hardware` (auto) or `#hardware=ENGINE`: go2rtc's hardware
        /// encoders and decoders, for the video it transcodes.
        hardware: Option<Hardware>,
        /// The `ffmpeg:` section's templates (go2rtc's defaults with the
        /// file's overrides): the arguments each output codec gets. Part of
        /// the source, so a reload that changes one restarts its sources.
        templates: FfmpegTemplates,
    },
    /// `exec:CMD`: CMD's stdout is FLV; or, if an argument holds go2rtc's
    /// `{output}`, CMD publishes RTSP to the URL put there.
    Exec { argv: Vec<String> },
    /// A scheme go2rtc has and we do not (`tapo:`, `onvif:` …): the
    /// server starts, and the stream lists this source with `reason`
    /// instead of running it (a field config must not stop the server).
    Unsupported { scheme: String, reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlScheme {
    Rtsp,
    Rtmp,
    Http,
    File,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FfmpegInput {
    Url {
        url: String,
        scheme: UrlScheme,
    },
    /// Another stream (or this one), read back from our own HTTP-FLV output.
    Stream(String),
}

impl SourceKind {
    /// Which kinds of track it can deliver, as far as the config says:
    /// `ffmpeg:…#audio=aac` is audio only; a camera URL may carry both.
    pub fn provides(&self) -> (bool, bool) {
        match self {
            SourceKind::Ffmpeg { video, audio, .. } => (
                video.is_some(),
                audio.is_some_and(|a| a != AudioCodec::None),
            ),
            SourceKind::Unsupported { .. } => (false, false),
            _ => (true, true),
        }
    }

    /// Why this source never runs (a go2rtc scheme we lack), if so.
    pub fn unsupported(&self) -> Option<&str> {
        match self {
            SourceKind::Unsupported { reason, .. } => Some(reason),
            _ => None,
        }
    }

    /// The video codec this source is made to deliver, if the config says
    /// (`ffmpeg:…#video=h264`); `None` for a camera or a copy.
    pub fn video_codec(&self) -> Option<crate::media::Codec> {
        match self {
            SourceKind::Ffmpeg {
                video: Some(VideoCodec::H264),
                ..
            } => Some(crate::media::Codec::H264),
            SourceKind::Ffmpeg {
                video: Some(VideoCodec::H265),
                ..
            } => Some(crate::media::Codec::H265),
            SourceKind::Ffmpeg {
                video: Some(VideoCodec::Mjpeg),
                ..
            } => Some(crate::media::Codec::Jpeg),
            _ => None,
        }
    }

    /// Whether its stdout is MJPEG (a run of JPEG images) rather than FLV.
    pub fn outputs_mjpeg(&self) -> bool {
        self.video_codec() == Some(crate::media::Codec::Jpeg)
    }

    /// The audio codec this source is made to deliver, if the config says
    /// (`ffmpeg:…#audio=aac`); `None` for a camera, whose codec we learn.
    pub fn audio_codec(&self) -> Option<crate::media::Codec> {
        match self {
            SourceKind::Ffmpeg {
                audio: Some(AudioCodec::Aac),
                ..
            } => Some(crate::media::Codec::Aac),
            SourceKind::Ffmpeg {
                audio: Some(AudioCodec::Opus),
                ..
            } => Some(crate::media::Codec::Opus),
            SourceKind::Ffmpeg {
                audio: Some(AudioCodec::Pcma),
                ..
            } => Some(crate::media::Codec::Pcma),
            SourceKind::Ffmpeg {
                audio: Some(AudioCodec::Pcmu),
                ..
            } => Some(crate::media::Codec::Pcmu),
            _ => None,
        }
    }

    /// go2rtc's `exec:… {output}`: the command publishes RTSP back to us
    /// instead of writing FLV to stdout.
    ///
    /// `ffmpeg:…#audio=opus` and `#video=h265` do the same: ffmpeg 5.1
    /// cannot write Opus or H.265 into FLV, so that ffmpeg publishes RTSP
    /// (RFC 7587, RFC 7798) back into its slot. G.711 (`#audio=pcma`,
    /// `pcmu`) at 8 kHz fits FLV and stays on the pipe. This is the one
    /// place that says which outputs need RTSP.
    pub fn publishes_back(&self) -> bool {
        match self {
            SourceKind::Exec { argv } => argv.iter().any(|a| a.contains(OUTPUT)),
            SourceKind::Ffmpeg { audio, video, .. } => {
                *audio == Some(AudioCodec::Opus) || *video == Some(VideoCodec::H265)
            }
            _ => false,
        }
    }
}

/// The placeholder in `exec:` commands that go2rtc replaces with a URL to
/// publish to.
pub const OUTPUT: &str = "{output}";

/// Checks one source given through the API: no `${VAR}` (expanded only
/// from the file), no command schemes and no whitespace (it would reach
/// ffmpeg's command line: `#raw=-ss 1`) unless `allow_exec`, no local file
/// unless `allow_files`, then everything the config file checks. `streams`
/// are the stream names the source may refer to. Returns the warnings
/// (unknown `#params`).
pub fn check_api_source(
    src: &str,
    streams: &BTreeSet<String>,
    allow_exec: bool,
    allow_files: bool,
) -> Result<Vec<String>, String> {
    // The API writes what it is given into the file, which expands `${VAR}`
    // when next loaded: `rtsp://host/${HOME}` would read the server's
    // environment (issue 15).
    if src.contains("${") {
        return Err(format!(
            "source `{src}` contains `${{`: environment variables are expanded only \
             from the config file, not from the API"
        ));
    }
    if !allow_exec {
        let scheme = src.split(':').next().unwrap_or("").to_ascii_lowercase();
        if COMMAND_SCHEMES.contains(&scheme.as_str()) {
            return Err(format!(
                "`{scheme}:` sources run commands and cannot be added through the API \
                 (put them in the config file, or set api.allow_exec: true)"
            ));
        }
        if src.chars().any(char::is_whitespace) {
            return Err(format!(
                "source `{src}` contains whitespace, which is not allowed through the API \
                 (set api.allow_exec: true to allow it)"
            ));
        }
    }
    let mut warnings = Vec::new();
    // Templates are the file's: a source added here is written into it and
    // read back with them.
    let (kind, _) = parse_source(
        src,
        streams,
        Timeouts::default(),
        &FfmpegTemplates::default(),
        &mut warnings,
    )?;
    if let Some(reason) = kind.unsupported() {
        return Err(format!("source `{src}`: {reason}"));
    }
    // A file source lets whoever reaches the API read any file the server
    // can (`/etc/shadow`, `/proc/self/environ`) through a snapshot, and
    // `last_error` tells whether a path exists.
    let reads_file = matches!(
        kind,
        SourceKind::Url {
            scheme: UrlScheme::File,
            ..
        } | SourceKind::Ffmpeg {
            input: FfmpegInput::Url {
                scheme: UrlScheme::File,
                ..
            },
            ..
        }
    );
    if reads_file && !allow_files {
        return Err(format!(
            "source `{src}` reads a local file, which is not allowed through the API \
             (put it in the config file, or set api.allow_files: true)"
        ));
    }
    Ok(warnings)
}

/// The source of a hidden on-demand transcode of `stream` (see
/// `hub::Registry::transcoded`): `ffmpeg:STREAM#video=LABEL#audio=copy`,
/// parsed as a config source would be.
pub fn transcode_source(
    stream: &str,
    label: &str,
    templates: &FfmpegTemplates,
) -> Result<SourceConfig, String> {
    if stream.contains('#') {
        return Err(format!(
            "`{stream}` has a `#` in its name, which an ffmpeg: source cannot name"
        ));
    }
    let url = format!("ffmpeg:{stream}#video={label}#audio=copy");
    let names: BTreeSet<String> = [stream.to_string()].into();
    // The file's `ffmpeg.h264` (a hardware encoder, say) makes them too.
    let (kind, timeouts) = parse_source(
        &url,
        &names,
        Timeouts::default(),
        templates,
        &mut Vec::new(),
    )?;
    Ok(SourceConfig {
        url,
        kind,
        timeouts,
    })
}

/// A stream that (through `ffmpeg:NAME` sources) reads itself only through
/// other streams would keep all of them alive forever: every one would count
/// as a viewer of the next. Reading one's own stream is fine (it is internal,
/// see `hub`), a longer loop is not. The error names the stream and source
/// index where the loop is first entered.
pub(super) fn check_reference_cycles(
    streams: &[StreamConfig],
) -> Result<(), (String, usize, String)> {
    let edges: HashMap<&str, Vec<&str>> = streams
        .iter()
        .map(|s| {
            let refs = s
                .sources
                .iter()
                .filter_map(|src| match &src.kind {
                    SourceKind::Ffmpeg {
                        input: FfmpegInput::Stream(t),
                        ..
                    } if t != &s.name => Some(t.as_str()),
                    _ => None,
                })
                .collect();
            (s.name.as_str(), refs)
        })
        .collect();
    fn visit<'a>(
        n: &'a str,
        edges: &HashMap<&'a str, Vec<&'a str>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Result<(), (String, String, String)> {
        if let Some(i) = path.iter().position(|p| *p == n) {
            let mut cycle = path[i..].to_vec();
            cycle.push(n);
            let msg = format!(
                "streams: sources read each other in a loop: {}",
                cycle.join(" -> ")
            );
            return Err((cycle[0].to_string(), cycle[1].to_string(), msg));
        }
        if done.contains(n) {
            return Ok(());
        }
        path.push(n);
        for next in edges.get(n).into_iter().flatten() {
            visit(next, edges, path, done)?;
        }
        path.pop();
        done.insert(n);
        Ok(())
    }
    let mut done = BTreeSet::new();
    for s in streams {
        if let Err((first, second, msg)) = visit(&s.name, &edges, &mut Vec::new(), &mut done) {
            let index = streams
                .iter()
                .find(|s| s.name == first)
                .and_then(|s| {
                    s.sources.iter().position(|src| {
                        matches!(&src.kind, SourceKind::Ffmpeg { input: FfmpegInput::Stream(t), .. } if t == &second)
                    })
                })
                .unwrap_or(0);
            return Err((first, index, msg));
        }
    }
    Ok(())
}

/// Splits go2rtc's `#key=value` parameters off a source string. go2rtc uses
/// the URL fragment for its own options, so a `#` never reaches the camera.
fn split_params(s: &str) -> (&str, Vec<(&str, &str)>) {
    let mut parts = s.split('#');
    let head = parts.next().unwrap_or("");
    let params = parts
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect();
    (head, params)
}

/// Parses one source string. Parameters we do not know (go2rtc has many:
/// `#backchannel=0`, `#media=video` …) are reported in `warnings` and
/// ignored, like unknown keys; ones we know with a value we cannot honour
/// are errors.
pub(super) fn parse_source(
    s: &str,
    streams: &BTreeSet<String>,
    defaults: Timeouts,
    templates: &FfmpegTemplates,
    warnings: &mut Vec<String>,
) -> Result<(SourceKind, Timeouts), String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty source".into());
    }
    let mut timeouts = defaults;
    let (head, params) = split_params(s);
    if let Some(scheme) = scheme_of(head).filter(|x| GO2RTC_ONLY_SCHEMES.contains(&x.as_str())) {
        let reason = format!("go2rtc's `{scheme}:` source is not supported by streamvisor");
        warnings.push(format!("{reason}; the stream lists it and never runs it"));
        return Ok((SourceKind::Unsupported { scheme, reason }, timeouts));
    }
    let mut video = None;
    let mut audio = None;
    let mut hardware = None;
    let is_ffmpeg = head.starts_with("ffmpeg:");
    for (k, v) in params {
        match k {
            "linger" | "kill_timeout" | "start_timeout" | "stall_timeout" => {
                let d = parse_duration(v).map_err(|m| format!("#{k}: {m}"))?;
                set_timeout(&mut timeouts, k, d);
            }
            "video" if is_ffmpeg => {
                video = Some(match v {
                    "copy" => VideoCodec::Copy,
                    "h264" => VideoCodec::H264,
                    "h265" => VideoCodec::H265,
                    "mjpeg" => VideoCodec::Mjpeg,
                    _ => {
                        return Err(format!(
                            "#video={v}: supported values are copy, h264, h265 and mjpeg"
                        ))
                    }
                })
            }
            // go2rtc: `#hardware` alone picks an engine, `#hardware=NAME`
            // names one; `software` (or a name go2rtc does not know)
            // leaves the software encoders.
            "hardware" if is_ffmpeg => {
                hardware = match v {
                    "" => Some(Hardware::Auto),
                    "software" => None,
                    _ => match HwEngine::parse(v) {
                        Some(e) => Some(Hardware::Engine(e)),
                        None => {
                            let names: Vec<&str> = HwEngine::ALL.iter().map(|e| e.name()).collect();
                            warnings.push(format!(
                                "#hardware={v}: not a hardware engine ({}); encoding in software",
                                names.join(", ")
                            ));
                            None
                        }
                    },
                }
            }
            "audio" if is_ffmpeg => {
                audio = Some(match v {
                    "copy" => AudioCodec::Copy,
                    "aac" => AudioCodec::Aac,
                    "none" => AudioCodec::None,
                    "opus" => AudioCodec::Opus,
                    "pcma" => AudioCodec::Pcma,
                    "pcmu" => AudioCodec::Pcmu,
                    _ => {
                        return Err(format!(
                            "#audio={v}: supported values are copy, aac, opus, pcma, pcmu and none"
                        ))
                    }
                })
            }
            // go2rtc passes `#query=log_level=debug` on to ffmpeg's input
            // URL; our ffmpeg logs at error level and keeps its stderr.
            "query" if is_ffmpeg => {}
            _ => warnings.push(format!("unknown source parameter `#{k}` (ignored)")),
        }
    }
    let kind = if let Some(rest) = head.strip_prefix("ffmpeg:") {
        if rest.is_empty() {
            return Err("ffmpeg: needs a URL or a stream name".into());
        }
        let input = if streams.contains(rest) {
            FfmpegInput::Stream(rest.to_string())
        } else if rest.contains("://") || rest.starts_with('/') || rest.starts_with('.') {
            let (url, scheme) = url_for(rest)?;
            FfmpegInput::Url { url, scheme }
        } else {
            return Err(format!(
                "ffmpeg:{rest}: `{rest}` is neither a stream name nor a URL"
            ));
        };
        // go2rtc: with no codec named, everything is copied; naming only one
        // kind leaves the other out.
        if video.is_none() && audio.is_none() {
            video = Some(VideoCodec::Copy);
            audio = Some(AudioCodec::Copy);
        }
        if audio == Some(AudioCodec::None) {
            audio = None;
        }
        // go2rtc's MakeHardware only rewrites libx264, libx265 and mjpeg.
        if hardware.is_some() && video.and_then(VideoCodec::template).is_none() {
            warnings.push(
                "#hardware does nothing without a video transcode (#video=h264, h265 or mjpeg)"
                    .into(),
            );
        }
        SourceKind::Ffmpeg {
            input,
            video,
            audio,
            hardware,
            templates: templates.clone(),
        }
    } else if let Some(cmd) = head.strip_prefix("exec:") {
        let argv = shell_words::split(cmd).map_err(|e| format!("exec: {e}"))?;
        if argv.is_empty() {
            return Err("exec: needs a command".into());
        }
        SourceKind::Exec { argv }
    } else {
        let (url, scheme) = url_for(head)?;
        SourceKind::Url { url, scheme }
    };
    Ok((kind, timeouts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::parse;

    #[test]
    fn unknown_source_parameters_warn_with_location() {
        let c = parse("streams:\n  cam: rtsp://a/b#backchannel=0\n").unwrap();
        assert_eq!(
            c.warnings,
            vec!["s.yaml:2:8: streams.cam: unknown source parameter `#backchannel` (ignored)"]
        );
    }

    #[test]
    fn sources() {
        let names: BTreeSet<String> = ["cam".to_string()].into();
        let d = Timeouts::default();
        let (k, _) = parse_source(
            "exec:sh -c 'echo \"a b\"'",
            &names,
            d,
            &FfmpegTemplates::default(),
            &mut Vec::new(),
        )
        .unwrap();
        assert_eq!(
            k,
            SourceKind::Exec {
                argv: vec!["sh".into(), "-c".into(), "echo \"a b\"".into()]
            }
        );
        let (k, _) = parse_source(
            "ffmpeg:rtsp://h/p#video=h264",
            &names,
            d,
            &FfmpegTemplates::default(),
            &mut Vec::new(),
        )
        .unwrap();
        assert_eq!(
            k,
            SourceKind::Ffmpeg {
                input: FfmpegInput::Url {
                    url: "rtsp://h/p".into(),
                    scheme: UrlScheme::Rtsp
                },
                video: Some(VideoCodec::H264),
                audio: None,
                hardware: None,
                templates: FfmpegTemplates::default(),
            }
        );
        let (k, _) = parse_source(
            "ffmpeg:cam",
            &names,
            d,
            &FfmpegTemplates::default(),
            &mut Vec::new(),
        )
        .unwrap();
        assert_eq!(
            k,
            SourceKind::Ffmpeg {
                input: FfmpegInput::Stream("cam".into()),
                video: Some(VideoCodec::Copy),
                audio: Some(AudioCodec::Copy),
                hardware: None,
                templates: FfmpegTemplates::default(),
            }
        );
        assert!(parse_source(
            "ffmpeg:nosuch",
            &names,
            d,
            &FfmpegTemplates::default(),
            &mut Vec::new()
        )
        .is_err());
        assert!(parse_source(
            "exec:",
            &names,
            d,
            &FfmpegTemplates::default(),
            &mut Vec::new()
        )
        .is_err());
        let mut warnings = Vec::new();
        parse_source(
            "rtsp://a/b#backchannel=0",
            &names,
            d,
            &FfmpegTemplates::default(),
            &mut warnings,
        )
        .unwrap();
        assert_eq!(
            warnings,
            vec!["unknown source parameter `#backchannel` (ignored)"]
        );
        parse_source(
            "exec:ffmpeg -i x -f rtsp {output}",
            &names,
            d,
            &FfmpegTemplates::default(),
            &mut warnings,
        )
        .unwrap();
        assert_eq!(
            parse_source(
                "/tmp/a.mp4",
                &names,
                d,
                &FfmpegTemplates::default(),
                &mut Vec::new()
            )
            .unwrap()
            .0,
            SourceKind::Url {
                url: "/tmp/a.mp4".into(),
                scheme: UrlScheme::File
            }
        );
    }

    #[test]
    fn reference_loops_are_rejected() {
        let e = parse("streams:\n  a: ffmpeg:b\n  b: [rtsp://x/y, ffmpeg:a]\n").unwrap_err();
        assert!(e.message.contains("a -> b -> a"), "{e}");
        assert_eq!((e.line, e.col), (2, 6), "{e}");
        // Reading oneself is allowed (go2rtc's `ffmpeg:cam#audio=aac` idiom).
        parse("streams:\n  a: [rtsp://x/y, \"ffmpeg:a#audio=aac\"]\n").unwrap();
    }

    #[test]
    fn hidden_transcodes_use_the_files_h264_template() {
        let c = parse(
            r#"ffmpeg:
  h264: "-c:v h264_vaapi -g 50"
streams:
  cam: rtsp://h/s
"#,
        )
        .unwrap();
        let src = transcode_source("cam", "h264", &c.ffmpeg_templates).unwrap();
        assert_eq!(src.url, "ffmpeg:cam#video=h264#audio=copy");
        let SourceKind::Ffmpeg { templates, .. } = &src.kind else {
            panic!("{src:?}")
        };
        assert_eq!(templates.get("h264"), Some("-c:v h264_vaapi -g 50"));
        assert!(transcode_source("a#b", "h264", &c.ffmpeg_templates).is_err());
    }

    #[test]
    fn go2rtc_output_codecs_and_who_publishes_back() {
        let names: BTreeSet<String> = ["cam".to_string()].into();
        let d = Timeouts::default();
        let t = FfmpegTemplates::default();
        let kind = |src: &str| parse_source(src, &names, d, &t, &mut Vec::new()).unwrap().0;
        let k = kind("ffmpeg:cam#video=h265");
        assert_eq!(k.video_codec(), Some(crate::media::Codec::H265));
        assert!(k.publishes_back(), "ffmpeg 5.1 cannot write H.265 into FLV");
        let k = kind("ffmpeg:cam#audio=pcma");
        assert_eq!(k.audio_codec(), Some(crate::media::Codec::Pcma));
        assert!(!k.publishes_back(), "G.711 at 8 kHz fits FLV");
        let k = kind("ffmpeg:cam#audio=pcmu");
        assert_eq!(k.audio_codec(), Some(crate::media::Codec::Pcmu));
        assert!(!k.publishes_back());
        assert!(kind("ffmpeg:cam#audio=opus").publishes_back());
        assert!(!kind("ffmpeg:cam#video=h264#audio=aac").publishes_back());
        let e = parse_source("ffmpeg:cam#audio=g726", &names, d, &t, &mut Vec::new()).unwrap_err();
        assert!(e.contains("pcma, pcmu"), "{e}");
    }

    #[test]
    fn hardware_parameter() {
        let names: BTreeSet<String> = ["cam".to_string()].into();
        let d = Timeouts::default();
        let t = FfmpegTemplates::default();
        let hw = |src: &str| {
            let mut w = Vec::new();
            let k = parse_source(src, &names, d, &t, &mut w).unwrap().0;
            let SourceKind::Ffmpeg { hardware, .. } = k else {
                panic!("{k:?}")
            };
            (hardware, w)
        };
        assert_eq!(
            hw("ffmpeg:cam#video=h264#hardware"),
            (Some(Hardware::Auto), vec![])
        );
        assert_eq!(
            hw("ffmpeg:cam#video=h264#hardware=vaapi"),
            (Some(Hardware::Engine(HwEngine::Vaapi)), vec![])
        );
        for e in HwEngine::ALL {
            let src = format!("ffmpeg:cam#video=h265#hardware={}", e.name());
            assert_eq!(hw(&src), (Some(Hardware::Engine(*e)), vec![]));
        }
        assert_eq!(
            hw("ffmpeg:cam#video=h264#hardware=software"),
            (None, vec![])
        );
        let (h, w) = hw("ffmpeg:cam#video=h264#hardware=qsv");
        assert_eq!(h, None);
        assert!(
            w[0].starts_with("#hardware=qsv: not a hardware engine (vaapi, v4l2m2m"),
            "{w:?}"
        );
        // go2rtc rewrites only transcodes: nothing to do on a copy.
        let (_, w) = hw("ffmpeg:cam#video=copy#hardware");
        assert!(w[0].contains("without a video transcode"), "{w:?}");
        // Elsewhere it is one of go2rtc's parameters we do not take.
        let mut w = Vec::new();
        parse_source("rtsp://h/s#hardware", &names, d, &t, &mut w).unwrap();
        assert_eq!(w, vec!["unknown source parameter `#hardware` (ignored)"]);
    }
}
