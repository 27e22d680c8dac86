//! What to run for a source: the command line of its producer.
//!
//! ffmpeg is the universal adapter (DESIGN.md): every URL becomes
//! `ffmpeg <input flags> -i URL -c copy -f flv pipe:1`, so every producer
//! speaks the same FLV on stdout whatever the camera speaks.

use crate::config::{AudioCodec, FfmpegInput, SourceConfig, SourceKind, UrlScheme, VideoCodec};
use crate::supervisor::CommandSpec;

/// How a producer reaches its own server, for `ffmpeg:STREAM` sources.
#[derive(Debug, Clone)]
pub struct Env<'a> {
    pub ffmpeg_bin: &'a str,
    /// e.g. `http://127.0.0.1:1984`; `None` if the HTTP server is disabled.
    pub internal_base: Option<&'a str>,
    /// e.g. `rtsp://127.0.0.1:8554`; `None` if the RTSP server is disabled.
    /// `ffmpeg:STREAM` reads over RTSP where it can: it carries every codec
    /// a camera sends (H.265, Opus), which ffmpeg 5.1 cannot read from FLV.
    pub internal_rtsp: Option<&'a str>,
    /// This run's token for reading another stream back (`ffmpeg:STREAM`;
    /// see `hub::InternalTokens`): never the API password, which a command
    /// line would show to every local user.
    pub internal_token: Option<&'a str>,
    /// The stream this source belongs to.
    pub stream: &'a str,
    /// This source's index within the stream.
    pub index: usize,
    /// Where an `exec:` command with `{output}` publishes: our own RTSP
    /// server, with this run's token. `None` if RTSP is disabled.
    pub publish_url: Option<&'a str>,
    /// This run publishes its media back over RTSP instead of writing FLV
    /// to stdout: the hub learnt (from an earlier run) that the source
    /// sends a codec FLV cannot hold, such as H.265 or Opus from a camera.
    pub over_rtsp: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stream {stream}: source {index} ({url}): {reason}")]
pub struct SourceError {
    pub stream: String,
    pub index: usize,
    pub url: String,
    pub reason: String,
}

/// Microseconds: ffmpeg gives up on a silent camera after this, instead of
/// hanging (our stall_timeout is the second line of defence).
const IO_TIMEOUT_US: &str = "5000000";

fn input_flags(scheme: UrlScheme) -> &'static [&'static str] {
    match scheme {
        // RTSP over TCP: UDP loses packets on busy Wi-Fi and NAT.
        UrlScheme::Rtsp => &["-rtsp_transport", "tcp", "-timeout", IO_TIMEOUT_US],
        UrlScheme::Rtmp | UrlScheme::Http => &["-rw_timeout", IO_TIMEOUT_US],
        // A file plays at its own pace, forever, like a camera would.
        UrlScheme::File => &["-re", "-stream_loop", "-1"],
    }
}

const HEAD: &[&str] = &["-hide_banner", "-nostdin", "-loglevel", "error"];
/// `-flush_packets 1`: every packet reaches the pipe at once (latency);
/// `no_duration_filesize`: a pipe cannot be seeked back to patch the header.
const TAIL: &[&str] = &[
    "-flush_packets",
    "1",
    "-f",
    "flv",
    "-flvflags",
    "no_duration_filesize",
    "pipe:1",
];

/// go2rtc's default libx264 template, minus what FLV cannot carry.
const X264: &[&str] = &[
    "-c:v",
    "libx264",
    "-g",
    "50",
    "-profile:v",
    "high",
    "-level:v",
    "4.1",
    "-preset:v",
    "superfast",
    "-tune:v",
    "zerolatency",
    "-pix_fmt:v",
    "yuv420p",
];

pub fn internal_url(
    base: &str,
    stream: &str,
    exclude: Option<usize>,
    token: Option<&str>,
) -> String {
    // Query component: all but RFC 3986 unreserved characters are escaped.
    const QUERY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    let name = percent_encoding::utf8_percent_encode(stream, QUERY);
    let mut u = format!("{base}/api/stream.flv?src={name}&internal=1");
    if let Some(i) = exclude {
        u.push_str(&format!("&exclude={i}"));
    }
    if let Some(t) = token {
        let t = percent_encoding::utf8_percent_encode(t, QUERY);
        u.push_str(&format!("&token={t}"));
    }
    u
}

/// Where `ffmpeg:STREAM` reads STREAM over our RTSP server: its run's
/// token instead of a password, `exclude` when a stream reads itself back,
/// and only the tracks the transcode uses (go2rtc's `?video`/`?audio`), so
/// an audio transcode does not start a stream's video-only producers.
pub fn internal_rtsp_url(
    base: &str,
    stream: &str,
    exclude: Option<usize>,
    token: Option<&str>,
    video: bool,
    audio: bool,
) -> String {
    let name = percent_encoding::utf8_percent_encode(stream, percent_encoding::NON_ALPHANUMERIC);
    let mut q = Vec::new();
    if video {
        q.push("video=all".to_string());
    }
    if audio {
        q.push("audio=all".to_string());
    }
    if let Some(i) = exclude {
        q.push(format!("exclude={i}"));
    }
    if let Some(t) = token {
        let t = percent_encoding::utf8_percent_encode(t, percent_encoding::NON_ALPHANUMERIC);
        q.push(format!("token={t}"));
    }
    format!("{base}/{name}?{}", q.join("&"))
}

pub fn command(src: &SourceConfig, env: &Env<'_>) -> Result<CommandSpec, SourceError> {
    let err = |reason: &str| SourceError {
        stream: env.stream.to_string(),
        index: env.index,
        url: src.url.clone(),
        reason: reason.to_string(),
    };
    let mut args: Vec<String> = HEAD.iter().map(|s| s.to_string()).collect();
    let push = |args: &mut Vec<String>, xs: &[&str]| args.extend(xs.iter().map(|s| s.to_string()));
    match &src.kind {
        SourceKind::Exec { argv } => {
            let mut argv = argv.clone();
            if src.kind.publishes_back() {
                let url = env
                    .publish_url
                    .ok_or_else(|| err("exec with {output} publishes to our RTSP server, but it is disabled (rtsp.listen)"))?;
                for a in &mut argv {
                    *a = a.replace(crate::config::OUTPUT, url);
                }
            }
            return Ok(CommandSpec {
                program: argv[0].clone(),
                args: argv[1..].to_vec(),
                stdin: None,
            });
        }
        SourceKind::Url { url, scheme } => {
            push(&mut args, input_flags(*scheme));
            push(&mut args, &["-i", url, "-c", "copy"]);
        }
        SourceKind::Ffmpeg {
            input,
            video,
            audio,
        } => {
            match input {
                FfmpegInput::Url { url, scheme } => {
                    push(&mut args, input_flags(*scheme));
                    push(&mut args, &["-i", url]);
                }
                FfmpegInput::Stream(name) => {
                    let exclude = (name == env.stream).then_some(env.index);
                    if let Some(base) = env.internal_rtsp {
                        let url = internal_rtsp_url(
                            base,
                            name,
                            exclude,
                            env.internal_token,
                            video.is_some(),
                            !matches!(audio, None | Some(AudioCodec::None)),
                        );
                        push(&mut args, input_flags(UrlScheme::Rtsp));
                        push(&mut args, &["-i", &url]);
                    } else {
                        let base = env
                            .internal_base
                            .ok_or_else(|| err("ffmpeg:STREAM reads our own RTSP or HTTP-FLV output, but both servers are disabled (rtsp.listen, api.listen)"))?;
                        let url = internal_url(base, name, exclude, env.internal_token);
                        push(
                            &mut args,
                            &["-rw_timeout", IO_TIMEOUT_US, "-f", "flv", "-i", &url],
                        );
                    }
                }
            }
            match video {
                None => push(&mut args, &["-vn"]),
                Some(VideoCodec::Copy) => push(&mut args, &["-c:v", "copy"]),
                Some(VideoCodec::H264) => push(&mut args, X264),
                // Full-range 4:2:0, what every MJPEG viewer decodes.
                Some(VideoCodec::Mjpeg) => push(
                    &mut args,
                    &["-c:v", "mjpeg", "-q:v", "5", "-pix_fmt", "yuvj420p"],
                ),
            }
            match audio {
                None | Some(AudioCodec::None) => push(&mut args, &["-an"]),
                Some(AudioCodec::Copy) => push(&mut args, &["-c:a", "copy"]),
                Some(AudioCodec::Aac) => push(&mut args, &["-c:a", "aac", "-b:a", "128k"]),
                // RFC 7587 §4.1: 48 kHz on the wire; libopus takes it as is.
                Some(AudioCodec::Opus) => {
                    push(
                        &mut args,
                        &["-c:a", "libopus", "-b:a", "64k", "-ar", "48000"],
                    );
                }
            }
        }
    }
    if src.kind.publishes_back() || env.over_rtsp {
        // Opus, H.265 (ffmpeg 5.1) cannot go in FLV: publish RTSP back
        // into this source's slot, which carries every codec we take.
        let url = env.publish_url.ok_or_else(|| {
            err("this source publishes to our RTSP server, but it is disabled (rtsp.listen)")
        })?;
        push(&mut args, &["-f", "rtsp", "-rtsp_transport", "tcp", url]);
        return Ok(CommandSpec {
            program: env.ffmpeg_bin.to_string(),
            args,
            stdin: None,
        });
    }
    if src.kind.outputs_mjpeg() {
        // A run of JPEG images on stdout (see media::jpeg).
        push(&mut args, &["-flush_packets", "1", "-f", "mjpeg", "pipe:1"]);
    } else {
        push(&mut args, TAIL);
    }
    Ok(CommandSpec {
        program: env.ffmpeg_bin.to_string(),
        args,
        stdin: None,
    })
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn self_reference_reads_back_without_itself() {
        let c = command(
            &src(
                "ffmpeg:cam 2#audio=aac",
                SourceKind::Ffmpeg {
                    input: FfmpegInput::Stream("cam 2".into()),
                    video: None,
                    audio: Some(AudioCodec::Aac),
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
}
