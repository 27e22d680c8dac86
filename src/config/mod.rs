//! `streams.yaml`: go2rtc's config syntax, plus our own `supervisor:` knobs.
//!
//! Parsing happens in two steps. serde-saphyr turns the text into raw
//! structs whose interesting values are
//! [`Spanned`](serde_saphyr::Spanned), so that every later check (a bad
//! duration, an unknown source scheme) can still name the file:line:col it
//! came from. Then [`Config::from_raw`] validates and builds the typed
//! config the rest of the program uses.
//!
//! `${VAR}` and `${VAR:default}` expand from the environment before parsing,
//! as in go2rtc. Expansion never adds lines, so line numbers in errors stay
//! true; a column after an expansion on the same line is off by the length
//! difference.
//!
//! The parts: `raw.rs` is the file as written and its conversion into
//! [`Config`]; a section that needs more than a field or two has its own
//! file (`log.rs`, `webrtc.rs`, `ffmpeg.rs`); a `streams:` entry's source
//! string is parsed in `sources.rs`, its scheme checked in `schemes.rs`;
//! `keys.rs` warns about the keys we do not know; `env.rs` expands `${VAR}`.
//! What other modules use is re-exported here, as `crate::config::…`.

mod env;
mod ffmpeg;
mod keys;
mod log;
mod raw;
mod schemes;
mod sources;
mod webrtc;

pub use env::env_secret;
pub(crate) use env::expand_env;
pub use ffmpeg::{AudioCodec, FfmpegTemplates, Hardware, HwEngine, VideoCodec, FFMPEG_DEFAULTS};
pub use log::{LogConfig, LogFormat};
pub use schemes::{GO2RTC_ONLY_SCHEMES, SCHEMES};
pub use sources::{
    check_api_source, transcode_source, FfmpegInput, SourceConfig, SourceKind, UrlScheme, OUTPUT,
};
pub use webrtc::{IceServer, WebRtcConfig};

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use keys::TopKeys;
use raw::RawRoot;

/// A config problem, located in the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{col}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub line: u64,
    pub col: u64,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("{0}")]
    Invalid(#[from] ConfigError),
}

/// The config file could not be read (see [`read_config`]): its path, and
/// why.
#[derive(Debug, thiserror::Error)]
#[error("cannot read config {}: {reason}", path.display())]
pub struct ReadError {
    pub path: PathBuf,
    #[source]
    pub reason: Unreadable,
}

/// Why a config file is not read: the I/O error, or what about the file
/// we refuse.
#[derive(Debug, thiserror::Error)]
pub enum Unreadable {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("not a regular file (a FIFO, device or directory is not read)")]
    NotAFile,
    #[error("{len} bytes is more than a config file may be ({MAX_CONFIG})")]
    TooBig { len: u64 },
    /// It grew past [`MAX_CONFIG`] between the size check and the read.
    #[error("more than {MAX_CONFIG} bytes")]
    Grew,
    #[error("not UTF-8")]
    NotUtf8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// How long a stream stays up after its last viewer leaves.
    pub linger: Duration,
    /// How long a producer gets between SIGTERM and SIGKILL.
    pub kill_timeout: Duration,
    /// How long producers get to deliver a first keyframe.
    pub start_timeout: Duration,
    /// How long a running producer may go without a frame before it is restarted.
    pub stall_timeout: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            linger: Duration::ZERO,
            kill_timeout: Duration::from_secs(2),
            start_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub path: PathBuf,
    /// `None`: the HTTP server is disabled (`api: {listen: ""}`).
    pub api_listen: Option<SocketAddr>,
    pub rtsp_listen: Option<SocketAddr>,
    /// `rtmp.listen` (default `:1935`; `""` disables RTMP).
    pub rtmp_listen: Option<SocketAddr>,
    /// `rtsp.username`/`rtsp.password`: Basic and Digest auth for RTSP.
    pub rtsp_auth: Option<Credentials>,
    /// `api.username`/`api.password`: Basic auth for the HTTP API.
    pub api_auth: Option<Credentials>,
    /// `api.unix_listen`: the HTTP API on a unix socket too (Home
    /// Assistant's managed go2rtc talks to it that way).
    pub api_unix_listen: Option<PathBuf>,
    /// `api.allow_exec`: sources added through the API may run commands
    /// (`exec:`, `echo:`, `expr:`). Off: only the config file may.
    pub allow_exec: bool,
    /// `api.max_connections`, `rtsp.max_connections`,
    /// `rtmp.max_connections`: connections each listener serves at once
    /// (the unix socket has the API's figure, on its own); one more gets a
    /// 503 (HTTP, RTSP) or is closed (RTMP). Defaults in [`crate::net`].
    pub api_max_connections: usize,
    pub rtsp_max_connections: usize,
    pub rtmp_max_connections: usize,
    /// `api.origin` (go2rtc's key): the web origins allowed to use the
    /// API from a page of theirs (CORS), `*` for any. Empty: no CORS
    /// header is sent, and a foreign `Origin` may change nothing.
    pub api_origin: Vec<String>,
    /// `api.hosts` (ours): names of this server that DNS outside the LAN
    /// hands out (a reverse proxy's, a DDNS name). With no credentials
    /// set, only LAN names and addresses, and these, are served (DNS
    /// rebinding).
    pub api_hosts: Vec<String>,
    /// `api.allow_files` (ours; go2rtc has none): sources added through the
    /// API may read local files (`file:`, paths, `ffmpeg:` of either). Off:
    /// only the config file may.
    pub allow_files: bool,
    /// `preload:`: streams kept running with no viewer, with go2rtc's query
    /// (`""` for everything, `video`, `video&audio=opus` …).
    pub preload: BTreeMap<String, String>,
    /// Where things are in the file, for editing it (see [`crate::store`]).
    pub layout: Layout,
    pub ffmpeg_bin: String,
    /// The `ffmpeg:` section's templates, for the hub's hidden H.264
    /// transcodes (`hub::Registry::transcoded`), which no source names.
    pub ffmpeg_templates: FfmpegTemplates,
    /// `log:`: format and levels.
    pub log: LogConfig,
    pub supervisor: Timeouts,
    pub hls: HlsConfig,
    pub publish: PublishConfig,
    pub webrtc: WebRtcConfig,
    pub streams: Vec<StreamConfig>,
    /// Things we ignored but the user should know about (unknown keys).
    pub warnings: Vec<String>,
}

/// `hls:`: how segments are cut and kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HlsConfig {
    /// A segment is cut at the first keyframe after this much media.
    pub target_duration: Duration,
    /// Segments kept in memory (and listed in the playlist).
    pub window: usize,
    /// A segmenter leaves after this long without a request.
    pub keepalive: Duration,
}

impl Default for HlsConfig {
    fn default() -> Self {
        HlsConfig {
            target_duration: Duration::from_secs(2),
            window: 6,
            keepalive: Duration::from_secs(30),
        }
    }
}

/// The lines (1-based) where the file's top-level keys and each stream's
/// key stand. Lines are those of the text after `${VAR}` expansion, which
/// keeps lines as they are unless a variable holds a newline.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    pub sections: Vec<(String, u64)>,
    /// In the order of [`Config::streams`].
    pub stream_lines: Vec<u64>,
}

/// `publish:`: who may publish where, and what a second publisher does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishConfig {
    /// Publishing to a name not in the config creates that stream.
    pub auto_create: bool,
    /// A new publisher replaces the current one (OBS reconnecting after a
    /// network drop must never find its own ghost in the way). `false`:
    /// the newcomer is refused while the current one is alive.
    pub takeover: bool,
    /// A publisher that sends nothing for this long is released; viewers
    /// of a publisher that left wait this long for the next one.
    pub timeout: Duration,
    /// `publish.replace_sources`: which streams with configured sources a
    /// publisher may take over. By default none: a publisher on the LAN
    /// must never replace what a camera shows (publish-only streams, and
    /// `{output}` children with their run token, are not affected).
    pub replace_sources: ReplaceSources,
    /// `rtsp.default_query` (go2rtc's): the `?video&audio` filter of an
    /// RTSP viewer whose URL has none. It rides here because this is the
    /// part of the config the RTSP server reaches (`Registry::deps`).
    pub rtsp_default_query: Option<String>,
}

impl PublishConfig {
    /// Whether a publisher may replace the configured sources of `stream`.
    pub fn may_replace(&self, stream: &str) -> bool {
        match &self.replace_sources {
            ReplaceSources::None => false,
            ReplaceSources::All => true,
            ReplaceSources::Streams(names) => names.contains(stream),
        }
    }
}

/// `publish.replace_sources: true | false | [stream, …]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ReplaceSources {
    #[default]
    None,
    All,
    Streams(BTreeSet<String>),
}

impl Default for PublishConfig {
    fn default() -> Self {
        PublishConfig {
            auto_create: false,
            takeover: true,
            timeout: Duration::from_secs(5),
            replace_sources: ReplaceSources::None,
            rtsp_default_query: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// Ask loopback clients too (go2rtc's `local_auth`).
    pub local_auth: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConfig {
    pub name: String,
    /// Empty: a publish-only stream (publishers come with a later issue).
    pub sources: Vec<SourceConfig>,
}

/// The largest config file we read; a config is a few KiB.
pub const MAX_CONFIG: u64 = 1024 * 1024;

/// Reads the config file, at start-up and for a reload: a regular file of at most
/// [`MAX_CONFIG`] bytes. It is opened non-blocking and checked with fstat
/// before any read: a FIFO put at the path would otherwise block the
/// open (and then the read) until a writer came, forever (issue 15).
pub fn read_config(path: &Path) -> Result<String, ReadError> {
    read_file(path).map_err(|reason| ReadError {
        path: path.to_path_buf(),
        reason,
    })
}

fn read_file(path: &Path) -> Result<String, Unreadable> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(Unreadable::NotAFile);
    }
    if meta.len() > MAX_CONFIG {
        return Err(Unreadable::TooBig { len: meta.len() });
    }
    let mut buf = Vec::new();
    // The file may grow between fstat and read: the cap holds regardless.
    f.take(MAX_CONFIG + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > MAX_CONFIG {
        return Err(Unreadable::Grew);
    }
    String::from_utf8(buf).map_err(|_| Unreadable::NotUtf8)
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, LoadError> {
        Config::load_with_text(path).map(|(c, _)| c)
    }

    /// As [`Config::load`], with the text read (for [`crate::store`]).
    pub fn load_with_text(path: &Path) -> Result<(Config, String), LoadError> {
        let text = read_config(path)?;
        let cfg = Config::parse(path, &text, &env_secret)?;
        Ok((cfg, text))
    }

    /// Parses config text; `env` looks up `${VAR}`s.
    pub fn parse(
        path: &Path,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = expand_env(&file, text, env)?;
        let yaml_err = |e: serde_saphyr::Error| {
            let (line, col) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((0, 0));
            // serde-saphyr's Display repeats the location and may add a
            // snippet; the first line alone is the message.
            let msg = e.to_string();
            let msg = tidy_yaml_message(msg.lines().next().unwrap_or("invalid YAML"));
            ConfigError {
                file: file.clone(),
                line,
                col,
                message: msg,
            }
        };
        // An empty file is a valid, empty config.
        let raw: RawRoot = if text.trim().is_empty() {
            RawRoot::default()
        } else {
            serde_saphyr::from_str::<Option<RawRoot>>(&text)
                .map_err(yaml_err)?
                .unwrap_or_default()
        };
        let keys: TopKeys = if text.trim().is_empty() {
            TopKeys::default()
        } else {
            serde_saphyr::from_str::<Option<TopKeys>>(&text)
                .map_err(yaml_err)?
                .unwrap_or_default()
        };
        let mut cfg = Config::from_raw(&file, raw)?;
        cfg.path = path.to_path_buf();
        cfg.layout.sections = keys
            .0
            .iter()
            .map(|(k, _)| (k.value.clone(), k.referenced.line()))
            .collect();
        cfg.warnings.splice(0..0, keys.unknown(&file));
        Ok(cfg)
    }

    pub fn stream(&self, name: &str) -> Option<&StreamConfig> {
        self.streams.iter().find(|s| s.name == name)
    }
}

/// serde-saphyr's message repeats the location we already print, and may
/// give advice about its own API; keep what the user needs.
fn tidy_yaml_message(msg: &str) -> String {
    let mut m = msg.strip_prefix("error: ").unwrap_or(msg);
    if let Some(rest) = m.strip_prefix("line ") {
        if let Some((_, after)) = rest.split_once(": ") {
            m = after;
        }
    }
    let m = m.split(", set DuplicateKeyPolicy").next().unwrap_or(m);
    m.to_string()
}

pub(super) fn set_timeout(t: &mut Timeouts, key: &str, d: Duration) {
    match key {
        "linger" => t.linger = d,
        "kill_timeout" => t.kill_timeout = d,
        "start_timeout" => t.start_timeout = d,
        "stall_timeout" => t.stall_timeout = d,
        _ => unreachable!("caller passes only known keys"),
    }
}

/// `rtsp.default_query` (go2rtc's; its default `video&audio`): the track
/// filter for an RTSP viewer whose URL gives none. We take `video` and
/// `audio`, bare or with a codec (`video=h264&audio=pcma`); anything else
/// go2rtc's filter knows (`mp4`, `video=all`) we cannot honour.
pub fn default_query(q: &str) -> Result<String, String> {
    let q = q.trim().trim_start_matches('?');
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_encoding::percent_decode_str(v).decode_utf8_lossy();
        let ok = match k {
            "video" => ["", "h264", "h265", "all"].contains(&v.as_ref()),
            "audio" => ["", "aac", "pcma", "pcmu", "opus", "all"].contains(&v.as_ref()),
            _ => false,
        };
        if !ok {
            return Err(format!(
                "`{k}={v}`: we take `video` and `audio`, bare or with a codec (video=h264|h265, audio=aac|pcma|pcmu|opus)"
            ));
        }
    }
    Ok(q.to_string())
}

/// go2rtc's listen syntax: `":1984"` is every interface, `""` disables.
pub fn parse_listen(s: &str) -> Result<Option<SocketAddr>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    let full = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_string()
    };
    full.parse::<SocketAddr>()
        .map(Some)
        .map_err(|_| format!("`{s}` is not a listen address (expected \":PORT\" or \"HOST:PORT\")"))
}

/// `"2s"`, `"500ms"`, `"1.5s"`, `"1m"`, `"0"`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let bad = || format!("`{s}` is not a duration (examples: 500ms, 2s, 1.5s, 1m)");
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num.trim().parse().map_err(|_| bad())?;
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(bad()),
    };
    let secs = n * scale;
    if !secs.is_finite() || !(0.0..=86_400.0 * 365.0).contains(&secs) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests;
