//! go2rtc's `ffmpeg:`: the codecs and hardware engines an `ffmpeg:` source
//! names (`#video=`, `#audio=`, `#hardware=`), and the `ffmpeg:` section's
//! argument templates that make them.

use std::collections::BTreeMap;

use super::raw::RawFfmpeg;
use super::ConfigError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    Copy,
    H264,
    /// libx265 (go2rtc's `h265` template). ffmpeg 5.1 cannot write H.265
    /// into FLV: this output publishes back over RTSP.
    H265,
    /// Home Assistant registers `ffmpeg:<id>#video=mjpeg`: JPEG images on
    /// stdout, for `/api/stream.mjpeg` (started only for such a viewer).
    Mjpeg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioCodec {
    Copy,
    Aac,
    None,
    /// Home Assistant registers `ffmpeg:<id>#audio=opus` for WebRTC. Opus
    /// cannot travel in FLV: that ffmpeg publishes RTSP back to us.
    Opus,
    /// G.711 A-law and µ-law, 8 kHz mono as go2rtc makes them (what
    /// two-way audio and old players take). FLV carries both at 8 kHz.
    Pcma,
    Pcmu,
}

impl VideoCodec {
    /// The template that makes it (go2rtc's `ffmpeg:` key), if transcoded.
    pub fn template(self) -> Option<&'static str> {
        match self {
            VideoCodec::Copy => None,
            VideoCodec::H264 => Some("h264"),
            VideoCodec::H265 => Some("h265"),
            VideoCodec::Mjpeg => Some("mjpeg"),
        }
    }
}

impl AudioCodec {
    /// The template that makes it (go2rtc's `ffmpeg:` key), if transcoded.
    pub fn template(self) -> Option<&'static str> {
        match self {
            AudioCodec::Copy | AudioCodec::None => None,
            AudioCodec::Aac => Some("aac"),
            AudioCodec::Opus => Some("opus"),
            AudioCodec::Pcma => Some("pcma"),
            AudioCodec::Pcmu => Some("pcmu"),
        }
    }
}

/// go2rtc's hardware engines (`internal/ffmpeg/hardware`), by their
/// `#hardware=` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HwEngine {
    /// Intel iGPU and AMD GPU on Linux.
    Vaapi,
    /// Raspberry Pi 3 and 4.
    V4l2m2m,
    /// NVidia (NVENC, with CUDA decoding).
    Cuda,
    /// Intel on Windows (QSV encoders).
    Dxva2,
    /// macOS.
    Videotoolbox,
    /// Rockchip (needs a custom ffmpeg build).
    Rkmpp,
}

impl HwEngine {
    pub const ALL: &'static [HwEngine] = &[
        HwEngine::Vaapi,
        HwEngine::V4l2m2m,
        HwEngine::Cuda,
        HwEngine::Dxva2,
        HwEngine::Videotoolbox,
        HwEngine::Rkmpp,
    ];

    pub fn name(self) -> &'static str {
        match self {
            HwEngine::Vaapi => "vaapi",
            HwEngine::V4l2m2m => "v4l2m2m",
            HwEngine::Cuda => "cuda",
            HwEngine::Dxva2 => "dxva2",
            HwEngine::Videotoolbox => "videotoolbox",
            HwEngine::Rkmpp => "rkmpp",
        }
    }

    pub(super) fn parse(s: &str) -> Option<HwEngine> {
        HwEngine::ALL.iter().copied().find(|e| e.name() == s)
    }
}

/// `#hardware` as written on an `ffmpeg:` source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hardware {
    /// `#hardware` alone: the first engine whose device is present.
    Auto,
    Engine(HwEngine),
}

/// go2rtc's `ffmpeg:` section: named argument templates, its defaults
/// overridden by the file's keys (`ffmpeg: {h264: "-c:v libx264 …"}`).
/// Only the overrides are stored; [`FfmpegTemplates::get`] falls back to
/// [`FFMPEG_DEFAULTS`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FfmpegTemplates(std::sync::Arc<BTreeMap<String, String>>);

impl FfmpegTemplates {
    pub fn with(overrides: BTreeMap<String, String>) -> FfmpegTemplates {
        FfmpegTemplates(std::sync::Arc::new(overrides))
    }

    /// The template `name`: the file's, else go2rtc's default.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.user(name).or_else(|| {
            FFMPEG_DEFAULTS
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| *v)
        })
    }

    /// The template `name` only if the file sets it: input templates
    /// (`rtsp`, `http`, `file`) replace our own input flags only then.
    pub fn user(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// go2rtc's defaults for the `ffmpeg:` keys we honour
/// (`internal/ffmpeg/ffmpeg.go`), with two deviations, both said: `mjpeg`
/// is full-range 4:2:0 at `-q:v 5` (what Home Assistant's MJPEG viewers
/// decode; go2rtc's own is a bare `-c:v mjpeg`), and `global` gets
/// `-nostdin -loglevel error` after it, as go2rtc appends `-v error`.
pub const FFMPEG_DEFAULTS: &[(&str, &str)] = &[
    ("global", "-hide_banner"),
    // Seconds, for `{timeout}` in the input templates.
    ("timeout", "5"),
    (
        "h264",
        "-c:v libx264 -g 50 -profile:v high -level:v 4.1 -preset:v superfast -tune:v zerolatency -pix_fmt:v yuv420p",
    ),
    (
        "h265",
        "-c:v libx265 -g 50 -profile:v main -x265-params level=5.1:high-tier=0 -preset:v superfast -tune:v zerolatency -pix_fmt:v yuv420p",
    ),
    ("mjpeg", "-c:v mjpeg -q:v 5 -pix_fmt yuvj420p -huffman default"),
    ("opus", "-c:a libopus -application:a lowdelay -min_comp 0"),
    ("pcmu", "-c:a pcm_mulaw -ar:a 8000 -ac:a 1"),
    ("pcma", "-c:a pcm_alaw -ar:a 8000 -ac:a 1"),
    // Keeps the sample rate and channels.
    ("aac", "-c:a aac"),
    // `-bf 0`: B-frames are out for live video (go2rtc's note).
    (
        "h264/vaapi",
        "-c:v h264_vaapi -g 50 -bf 0 -profile:v high -level:v 4.1 -sei:v 0",
    ),
    (
        "h265/vaapi",
        "-c:v hevc_vaapi -g 50 -bf 0 -profile:v main -level:v 5.1 -sei:v 0",
    ),
    ("mjpeg/vaapi", "-c:v mjpeg_vaapi"),
    ("h264/v4l2m2m", "-c:v h264_v4l2m2m -g 50 -bf 0"),
    ("h265/v4l2m2m", "-c:v hevc_v4l2m2m -g 50 -bf 0"),
    (
        "h264/rkmpp",
        "-c:v h264_rkmpp -g 50 -bf 0 -profile:v high -level:v 4.1",
    ),
    (
        "h265/rkmpp",
        "-c:v hevc_rkmpp -g 50 -bf 0 -profile:v main -level:v 5.1",
    ),
    ("mjpeg/rkmpp", "-c:v mjpeg_rkmpp"),
    (
        "h264/cuda",
        "-c:v h264_nvenc -g 50 -bf 0 -profile:v high -level:v auto -preset:v p2 -tune:v ll",
    ),
    (
        "h265/cuda",
        "-c:v hevc_nvenc -g 50 -bf 0 -profile:v main -level:v auto",
    ),
    (
        "h264/dxva2",
        "-c:v h264_qsv -g 50 -bf 0 -profile:v high -level:v 4.1 -async_depth:v 1",
    ),
    (
        "h265/dxva2",
        "-c:v hevc_qsv -g 50 -bf 0 -profile:v main -level:v 5.1 -async_depth:v 1",
    ),
    ("mjpeg/dxva2", "-c:v mjpeg_qsv"),
    (
        "h264/videotoolbox",
        "-c:v h264_videotoolbox -g 50 -bf 0 -profile:v high -level:v 4.1",
    ),
    (
        "h265/videotoolbox",
        "-c:v hevc_videotoolbox -g 50 -bf 0 -profile:v main -level:v 5.1",
    ),
];

/// `ffmpeg:` keys we honour besides [`FFMPEG_DEFAULTS`]: `bin`, and the
/// input templates, used for `ffmpeg:URL` sources only when the file sets
/// them (our own input flags otherwise: `file` loops, `rtsp` is TCP).
const FFMPEG_INPUT_KEYS: &[&str] = &["bin", "file", "http", "rtsp"];

/// Why an `ffmpeg:` key of go2rtc's is ignored here (a warning with its
/// line:col), or `None` if we honour it.
fn ffmpeg_key_ignored(key: &str) -> Option<String> {
    if FFMPEG_INPUT_KEYS.contains(&key) || FFMPEG_DEFAULTS.iter().any(|(k, _)| *k == key) {
        return None;
    }
    Some(if key == "output" || key.starts_with("output/") {
        format!("our producers write FLV or publish RTSP to us themselves; go2rtc's `{key}` template is not used")
    } else if key == "rtsp/udp" {
        "go2rtc uses it only through `#input=rtsp/udp`, which streamvisor does not take".into()
    } else if key.contains('/') {
        format!("go2rtc uses it only through `#video={key}`/`#audio={key}`, which streamvisor does not take")
    } else {
        "custom templates are used by go2rtc's `#raw=`/`#input=`, which streamvisor does not take"
            .into()
    })
}

/// `ffmpeg:`: `bin`, and go2rtc's templates. A key we honour must be a
/// valid argument list (it is split as a shell would, without one); a key
/// of go2rtc's we do not use is a warning that says why, with its place.
pub(super) fn ffmpeg_section(
    raw: RawFfmpeg,
    at: &dyn Fn(&serde_saphyr::Location, String) -> ConfigError,
    warnings: &mut Vec<String>,
    file: &str,
) -> Result<(String, FfmpegTemplates), ConfigError> {
    let mut bin = "ffmpeg".to_string();
    let mut overrides = BTreeMap::new();
    for (k, v) in raw.0 {
        let (key, value) = (k.value, v.value.0);
        let here = k.referenced;
        if let Some(why) = ffmpeg_key_ignored(&key) {
            warnings.push(format!(
                "{file}:{}:{}: ffmpeg.{key}: {why} (ignored)",
                here.line(),
                here.column()
            ));
            continue;
        }
        match key.as_str() {
            "bin" => {
                if !value.is_empty() {
                    bin = value;
                }
                continue;
            }
            "timeout" => {
                if !value.parse::<u32>().is_ok_and(|t| (1..=3600).contains(&t)) {
                    return Err(at(
                        &v.referenced,
                        format!("ffmpeg.timeout: `{value}` is not a number of seconds (1 to 3600)"),
                    ));
                }
            }
            _ => {
                let words = shell_words::split(&value)
                    .map_err(|e| at(&v.referenced, format!("ffmpeg.{key}: {e}")))?;
                // An input template without `{input}` would read nothing.
                if FFMPEG_INPUT_KEYS.contains(&key.as_str())
                    && !words.iter().any(|w| w.contains("{input}"))
                {
                    return Err(at(
                        &v.referenced,
                        format!("ffmpeg.{key}: an input template needs `{{input}}` (go2rtc's: `-re -i {{input}}`)"),
                    ));
                }
            }
        }
        overrides.insert(key, value);
    }
    Ok((bin, FfmpegTemplates::with(overrides)))
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{ffmpeg_kind, parse};
    use crate::config::SourceKind;

    #[test]
    fn ffmpeg_templates_override_go2rtc_defaults() {
        let c = parse(
            r#"ffmpeg:
  bin: /opt/ffmpeg
  h264: "-c:v libx264 -preset:v ultrafast"
  opus: -c:a libopus -b:a 32k
  timeout: 10
  rtsp: "-rtsp_transport udp -timeout {timeout} -i {input}"
  output: "-f mpegts {output}"
  pcma/16000: "-c:a pcm_alaw -ar:a 16000"
  mine: "-vf hflip"
streams:
  a: "ffmpeg:rtsp://h/s#video=h264#audio=opus"
"#,
        )
        .unwrap();
        assert_eq!(c.ffmpeg_bin, "/opt/ffmpeg");
        let SourceKind::Ffmpeg { templates, .. } = ffmpeg_kind(&c, 0) else {
            panic!("{:?}", c.streams)
        };
        assert_eq!(
            templates.get("h264"),
            Some("-c:v libx264 -preset:v ultrafast")
        );
        assert_eq!(templates.get("opus"), Some("-c:a libopus -b:a 32k"));
        assert_eq!(templates.get("timeout"), Some("10"));
        assert_eq!(
            templates.user("rtsp"),
            Some("-rtsp_transport udp -timeout {timeout} -i {input}")
        );
        // Not set: go2rtc's defaults.
        assert!(templates
            .get("h265")
            .unwrap()
            .starts_with("-c:v libx265 -g 50"));
        assert_eq!(
            templates.get("pcmu"),
            Some("-c:a pcm_mulaw -ar:a 8000 -ac:a 1")
        );
        assert_eq!(templates.user("http"), None);
        // Keys we do not use are warned about, each at its place, with why.
        assert_eq!(c.warnings.len(), 3, "{:?}", c.warnings);
        assert!(
            c.warnings[0].starts_with("s.yaml:7:3: ffmpeg.output: "),
            "{:?}",
            c.warnings
        );
        assert!(
            c.warnings[1].starts_with("s.yaml:8:3: ffmpeg.pcma/16000: "),
            "{:?}",
            c.warnings
        );
        assert!(
            c.warnings[1].contains("#audio=pcma/16000"),
            "{:?}",
            c.warnings
        );
        assert!(
            c.warnings[2].starts_with("s.yaml:9:3: ffmpeg.mine: "),
            "{:?}",
            c.warnings
        );
        assert!(
            c.warnings.iter().all(|w| w.ends_with("(ignored)")),
            "{:?}",
            c.warnings
        );
        // The templates are part of the source: a reload that changes one
        // restarts the sources that use it.
        let d = parse("streams:\n  a: \"ffmpeg:rtsp://h/s#video=h264#audio=opus\"\n").unwrap();
        assert_ne!(ffmpeg_kind(&c, 0), ffmpeg_kind(&d, 0));
        assert!(d.warnings.is_empty(), "{:?}", d.warnings);
        assert_eq!(d.ffmpeg_bin, "ffmpeg");
    }

    #[test]
    fn bad_ffmpeg_templates_name_line_and_col() {
        let e = parse("ffmpeg:\n  h264: \"-c:v 'libx264\"\n").unwrap_err();
        assert_eq!((e.line, e.col), (2, 9), "{e}");
        assert!(e.message.starts_with("ffmpeg.h264: "), "{e}");
        let e = parse("ffmpeg:\n  timeout: soon\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(e.message.contains("seconds"), "{e}");
        let e = parse("ffmpeg:\n  rtsp: -rtsp_transport tcp\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(e.message.contains("{input}"), "{e}");
    }
}
