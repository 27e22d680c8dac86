//! What to run for a source: the command line of its producer.
//!
//! ffmpeg is the universal adapter (DESIGN.md): every URL becomes
//! `ffmpeg <input flags> -i URL -c copy -f flv pipe:1`, so every producer
//! speaks the same FLV on stdout whatever the camera speaks.

use crate::config::{
    AudioCodec, FfmpegInput, FfmpegTemplates, Hardware, HwEngine, SourceConfig, SourceKind,
    UrlScheme, VideoCodec,
};
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

/// Why a source gets no command line: the source boundary's error, with
/// the stream, the source's index and its URL. The actor reports it like
/// a failed spawn.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stream {stream}: source {index} ({url}): {reason}")]
pub struct SourceError {
    pub stream: String,
    pub index: usize,
    pub url: String,
    #[source]
    pub reason: Unrunnable,
}

/// What about a source makes it unrunnable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unrunnable {
    /// A kind we do not run (a go2rtc scheme we lack): the config says why.
    #[error("{0}")]
    Unsupported(String),
    /// A server the command must reach is disabled; the text names it and
    /// its setting.
    #[error("{0}")]
    ServerDisabled(&'static str),
    #[error(transparent)]
    Template(#[from] TemplateError),
}

/// An `ffmpeg:` template (`ffmpeg.<name>` in the config, or go2rtc's
/// default) that cannot be used: which one, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("no ffmpeg template `{name}`")]
    Missing { name: String },
    /// Its words do not split as a shell would split them.
    #[error("ffmpeg.{name}: {source}")]
    Words {
        name: String,
        source: shell_words::ParseError,
    },
}

/// Why `#hardware` leaves a transcode in software (a warning: the source
/// still runs, on the CPU). Names the engine where one was asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HardwareError {
    #[error("#hardware picks no engine for H.265 (as go2rtc); name one, e.g. #hardware=vaapi")]
    AutoH265,
    #[error("no hardware encoder found (NVidia, VAAPI, V4L2 M2M, Rockchip)")]
    NoneFound,
    #[error("#hardware={}: {source}", .source.engine.name())]
    Absent {
        #[source]
        source: NoDevice,
    },
    #[error("go2rtc has no {codec} encoder for {}", engine.name())]
    NoEncoder { codec: String, engine: HwEngine },
}

/// A hardware engine whose device this machine lacks, and what was looked
/// for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{missing}")]
pub struct NoDevice {
    pub engine: HwEngine,
    pub missing: String,
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
/// For children that copy video: a packet whose PTS the input lost gets its
/// DTS as PTS. ffmpeg's RTSP reader (its H.264 parser) gives the first
/// frame of a session no timestamp; `-c copy` then fills in only the DTS,
/// and with B-frames (reordered, so PTS cannot be taken for DTS) the FLV
/// and RTSP muxers refuse the packet: "Packet is missing PTS", exit 1, every
/// time a viewer joins an RTSP source with B-frames (a camera relayed by
/// another server, an encoder's default). `-fflags +genpts` does not help:
/// it derives PTS from later packets' DTS, and this packet has neither.
/// Packets that have a PTS pass unchanged. (setts: ffmpeg 4.4+; commas are
/// escaped for `-bsf`'s list syntax.)
///
/// Never on a looped file (`-stream_loop -1`): ffmpeg 5.1 flushes the
/// output's bitstream filters at the end of each pass ("A non-NULL packet
/// sent after an EOF") and drops every video packet after it, so the
/// picture stopped when the file first looped. A file's packets have their
/// PTS anyway.
const FILL_PTS: &[&str] = &["-bsf:v", r"setts=pts=if(eq(PTS\,NOPTS)\,DTS\,PTS)"];

/// [`FILL_PTS`] for an input of `scheme`, or nothing for a looped file.
fn fill_pts(scheme: Option<UrlScheme>) -> &'static [&'static str] {
    match scheme {
        Some(UrlScheme::File) => &[],
        _ => FILL_PTS,
    }
}
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

/// Where a hardware engine's device would be. Behind a trait so a test can
/// say what is there: this machine, like most CI, has no GPU.
pub trait Devices {
    /// `Err(what is missing)` if `engine` cannot run here.
    fn present(&self, engine: HwEngine) -> Result<(), NoDevice>;
}

/// The devices of this machine, looked for in /dev and /sys. go2rtc runs a
/// one-second test encode instead; a look at the device is instant, and a
/// driver that is there but broken shows as ffmpeg's error in the
/// source's `stderr_tail`.
pub struct SystemDevices;

impl Devices for SystemDevices {
    fn present(&self, engine: HwEngine) -> Result<(), NoDevice> {
        let exists = |p: &str| std::path::Path::new(p).exists();
        let any_in = |dir: &str, f: &dyn Fn(&std::fs::DirEntry) -> bool| {
            std::fs::read_dir(dir)
                .map(|d| d.flatten().any(|e| f(&e)))
                .unwrap_or(false)
        };
        let (ok, missing) = match engine {
            HwEngine::Vaapi => (
                any_in("/dev/dri", &|e| {
                    e.file_name().to_string_lossy().starts_with("renderD")
                }),
                "no VAAPI render node (/dev/dri/renderD*)",
            ),
            HwEngine::Cuda => (
                exists("/dev/nvidiactl") || exists("/dev/nvidia0"),
                "no NVidia device (/dev/nvidiactl)",
            ),
            // A memory-to-memory codec names itself so: the Raspberry Pi's
            // is `bcm2835-codec-encode`, others say `m2m` or `enc`.
            HwEngine::V4l2m2m => (
                any_in("/sys/class/video4linux", &|e| {
                    std::fs::read_to_string(e.path().join("name")).is_ok_and(|n| {
                        let n = n.to_ascii_lowercase();
                        n.contains("codec") || n.contains("m2m") || n.contains("enc")
                    })
                }),
                "no V4L2 memory-to-memory encoder (/sys/class/video4linux/*/name)",
            ),
            HwEngine::Rkmpp => (
                exists("/dev/mpp_service"),
                "no Rockchip MPP device (/dev/mpp_service)",
            ),
            HwEngine::Dxva2 => (false, "DXVA2 is Windows only"),
            HwEngine::Videotoolbox => (false, "VideoToolbox is macOS only"),
        };
        if ok {
            Ok(())
        } else {
            Err(NoDevice {
                engine,
                missing: missing.to_string(),
            })
        }
    }
}

/// The engine `#hardware` gets for the video template `codec` (`h264`,
/// `h265`, `mjpeg`), or why it stays in software.
pub fn choose_engine(
    hw: Hardware,
    codec: &str,
    devices: &dyn Devices,
) -> Result<HwEngine, HardwareError> {
    let engine = match hw {
        // go2rtc: "temporary disable probe for H265" (a GPU may decode
        // HEVC and not encode it): auto stays in software for H.265.
        Hardware::Auto if codec == "h265" => return Err(HardwareError::AutoH265),
        // go2rtc's probe order on x86 (CUDA, then VAAPI), then ARM's.
        Hardware::Auto => [
            HwEngine::Cuda,
            HwEngine::Vaapi,
            HwEngine::V4l2m2m,
            HwEngine::Rkmpp,
        ]
        .into_iter()
        .find(|e| devices.present(*e).is_ok())
        .ok_or(HardwareError::NoneFound)?,
        Hardware::Engine(e) => {
            devices
                .present(e)
                .map_err(|source| HardwareError::Absent { source })?;
            e
        }
    };
    if FfmpegTemplates::default()
        .get(&format!("{codec}/{}", engine.name()))
        .is_none()
    {
        return Err(HardwareError::NoEncoder {
            codec: codec.to_string(),
            engine,
        });
    }
    Ok(engine)
}

/// go2rtc's `MakeHardware` for one video transcode: the decoder flags put
/// before the input, and the filters that move frames to the device.
fn hardware_input(engine: HwEngine) -> &'static [&'static str] {
    match engine {
        HwEngine::Vaapi => &[
            "-hwaccel",
            "vaapi",
            "-hwaccel_output_format",
            "vaapi",
            "-hwaccel_flags",
            "allow_profile_mismatch",
        ],
        HwEngine::Cuda => &["-hwaccel", "cuda", "-hwaccel_output_format", "cuda"],
        HwEngine::Dxva2 => &["-hwaccel", "dxva2", "-hwaccel_output_format", "dxva2_vld"],
        HwEngine::Videotoolbox => &[
            "-hwaccel",
            "videotoolbox",
            "-hwaccel_output_format",
            "videotoolbox_vld",
        ],
        HwEngine::Rkmpp => &[
            "-hwaccel",
            "rkmpp",
            "-hwaccel_output_format",
            "drm_prime",
            "-afbc",
            "rga",
        ],
        HwEngine::V4l2m2m => &[],
    }
}

fn hardware_filter(engine: HwEngine, codec: &str) -> Option<String> {
    match engine {
        // `format=vaapi|nv12,hwupload` also takes frames a software decoder
        // made; H.264 is put in limited-range BT.709 (go2rtc's
        // fixPixelFormat: a full-range yuvj420p camera would fail).
        HwEngine::Vaapi if codec == "h264" => Some(
            "format=vaapi|nv12,hwupload,scale_vaapi=out_color_matrix=bt709:out_range=tv:format=nv12"
                .into(),
        ),
        HwEngine::Vaapi => Some("format=vaapi|nv12,hwupload".into()),
        HwEngine::Dxva2 => Some("hwmap=derive_device=qsv,format=qsv".into()),
        _ => None,
    }
}

/// The (stream, source) pairs already warned about a hardware fallback:
/// a producer restarts, the warning comes once.
fn warn_fallback_once(stream: &str, index: usize, why: &HardwareError) {
    static WARNED: std::sync::Mutex<Vec<(String, usize)>> = std::sync::Mutex::new(Vec::new());
    let mut w = WARNED.lock().unwrap_or_else(|e| e.into_inner());
    let key = (stream.to_string(), index);
    if !w.contains(&key) {
        w.push(key);
        tracing::warn!(stream = %stream, source = index, reason = %why, "hardware encoding unavailable, encoding in software");
    }
}

/// A template's words (it is split as a shell would, without one).
fn template_words(templates: &FfmpegTemplates, name: &str) -> Result<Vec<String>, TemplateError> {
    let t = templates.get(name).ok_or_else(|| TemplateError::Missing {
        name: name.to_string(),
    })?;
    shell_words::split(t).map_err(|source| TemplateError::Words {
        name: name.to_string(),
        source,
    })
}

/// The input of an `ffmpeg:URL` source: the file's input template for its
/// scheme if it sets one (go2rtc's `{input}`, `{timeout}`), our own flags
/// otherwise. `ffmpeg.timeout` (seconds) is the I/O timeout either way.
fn ffmpeg_url_input(
    templates: &FfmpegTemplates,
    url: &str,
    scheme: UrlScheme,
) -> Result<Vec<String>, TemplateError> {
    let secs: u64 = templates
        .get("timeout")
        .and_then(|t| t.parse().ok())
        .unwrap_or(5);
    let timeout_us = (secs * 1_000_000).to_string();
    // go2rtc's keys: rtmp is read with the `http` template.
    let key = match scheme {
        UrlScheme::Rtsp => "rtsp",
        UrlScheme::Rtmp | UrlScheme::Http => "http",
        UrlScheme::File => "file",
    };
    if templates.user(key).is_some() {
        return Ok(template_words(templates, key)?
            .into_iter()
            .map(|w| w.replace("{timeout}", &timeout_us).replace("{input}", url))
            .collect());
    }
    let mut v: Vec<String> = input_flags(scheme)
        .iter()
        .map(|s| {
            if *s == IO_TIMEOUT_US {
                timeout_us.clone()
            } else {
                s.to_string()
            }
        })
        .collect();
    v.extend(["-i".to_string(), url.to_string()]);
    Ok(v)
}

pub fn command(src: &SourceConfig, env: &Env<'_>) -> Result<CommandSpec, SourceError> {
    command_with(src, env, &SystemDevices)
}

/// [`command`], with the hardware devices given.
pub fn command_with(
    src: &SourceConfig,
    env: &Env<'_>,
    devices: &dyn Devices,
) -> Result<CommandSpec, SourceError> {
    let err = |reason: Unrunnable| SourceError {
        stream: env.stream.to_string(),
        index: env.index,
        url: src.url.clone(),
        reason,
    };
    let disabled = |what: &'static str| err(Unrunnable::ServerDisabled(what));
    let template = |e: TemplateError| err(e.into());
    let mut args: Vec<String> = HEAD.iter().map(|s| s.to_string()).collect();
    let push = |args: &mut Vec<String>, xs: &[&str]| args.extend(xs.iter().map(|s| s.to_string()));
    match &src.kind {
        SourceKind::Unsupported { reason, .. } => {
            return Err(err(Unrunnable::Unsupported(reason.clone())))
        }
        SourceKind::Exec { argv } => {
            let mut argv = argv.clone();
            if src.kind.publishes_back() {
                let url = env
                    .publish_url
                    .ok_or_else(|| disabled("exec with {output} publishes to our RTSP server, but it is disabled (rtsp.listen)"))?;
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
            push(&mut args, fill_pts(Some(*scheme)));
        }
        SourceKind::Ffmpeg {
            input,
            video,
            audio,
            hardware,
            templates,
        } => {
            // `ffmpeg.global` replaces go2rtc's `-hide_banner`; our log
            // level follows, as go2rtc appends its `-v`.
            args = template_words(templates, "global").map_err(template)?;
            push(&mut args, &HEAD[1..]);
            let vcodec = video.and_then(VideoCodec::template);
            let engine = match (hardware, vcodec) {
                (Some(hw), Some(name)) => match choose_engine(*hw, name, devices) {
                    Ok(e) => Some(e),
                    Err(why) => {
                        warn_fallback_once(env.stream, env.index, &why);
                        None
                    }
                },
                _ => None,
            };
            if let Some(e) = engine {
                push(&mut args, hardware_input(e));
            }
            match input {
                FfmpegInput::Url { url, scheme } => {
                    args.extend(ffmpeg_url_input(templates, url, *scheme).map_err(template)?);
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
                            .ok_or_else(|| disabled("ffmpeg:STREAM reads our own RTSP or HTTP-FLV output, but both servers are disabled (rtsp.listen, api.listen)"))?;
                        let url = internal_url(base, name, exclude, env.internal_token);
                        push(
                            &mut args,
                            &["-rw_timeout", IO_TIMEOUT_US, "-f", "flv", "-i", &url],
                        );
                    }
                }
            }
            // The codecs' arguments are the `ffmpeg:` templates (go2rtc's
            // `h264`, `h265`, `mjpeg`, `opus`, `aac`, `pcma`, `pcmu`), the
            // engine's (`h264/vaapi` …) with `#hardware`.
            match (video, vcodec) {
                (None, _) => push(&mut args, &["-vn"]),
                (Some(_), None) => {
                    let scheme = match input {
                        FfmpegInput::Url { scheme, .. } => Some(*scheme),
                        FfmpegInput::Stream(_) => None,
                    };
                    push(&mut args, fill_pts(scheme));
                    push(&mut args, &["-c:v", "copy"]);
                }
                (Some(_), Some(name)) => {
                    let key = match engine {
                        Some(e) => format!("{name}/{}", e.name()),
                        None => name.to_string(),
                    };
                    args.extend(template_words(templates, &key).map_err(template)?);
                    if let Some(f) = engine.and_then(|e| hardware_filter(e, name)) {
                        push(&mut args, &["-vf", &f]);
                    }
                }
            }
            match audio.and_then(AudioCodec::template) {
                None if matches!(audio, Some(AudioCodec::Copy)) => {
                    push(&mut args, &["-c:a", "copy"])
                }
                None => push(&mut args, &["-an"]),
                Some(name) => {
                    args.extend(template_words(templates, name).map_err(template)?);
                }
            }
        }
    }
    if src.kind.publishes_back() || env.over_rtsp {
        // Opus, H.265 (ffmpeg 5.1) cannot go in FLV: publish RTSP back
        // into this source's slot, which carries every codec we take.
        let url = env.publish_url.ok_or_else(|| {
            disabled("this source publishes to our RTSP server, but it is disabled (rtsp.listen)")
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
mod tests;
