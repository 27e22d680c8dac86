//! `streams.yaml`: go2rtc's config syntax, plus our own `supervisor:` knobs.
//!
//! Parsing happens in two steps. serde-saphyr turns the text into raw
//! structs whose interesting values are [`Spanned`], so that every later
//! check (a bad duration, an unknown source scheme) can still name the
//! file:line:col it came from. Then [`Config::from_raw`] validates and builds
//! the typed config the rest of the program uses.
//!
//! `${VAR}` and `${VAR:default}` expand from the environment before parsing,
//! as in go2rtc. Expansion never adds lines, so line numbers in errors stay
//! true; a column after an expansion on the same line is off by the length
//! difference.

mod env;
mod ffmpeg;
mod keys;
mod log;
mod schemes;
mod sources;
mod webrtc;

pub use env::env_secret;
pub(crate) use env::expand_env;
use ffmpeg::ffmpeg_section;
pub use ffmpeg::{AudioCodec, FfmpegTemplates, Hardware, HwEngine, VideoCodec, FFMPEG_DEFAULTS};
use keys::TopKeys;
use log::log_config;
pub use log::{LogConfig, LogFormat};
pub use schemes::{GO2RTC_ONLY_SCHEMES, SCHEMES};
pub use sources::{
    check_api_source, transcode_source, FfmpegInput, SourceConfig, SourceKind, UrlScheme, OUTPUT,
};
use sources::{check_reference_cycles, parse_source};
use webrtc::webrtc_config;
pub use webrtc::{IceServer, WebRtcConfig};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_saphyr::Spanned;

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
    #[error("cannot read config {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{0}")]
    Invalid(#[from] ConfigError),
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
pub fn read_config(path: &Path) -> Result<String, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)
        .map_err(|e| e.to_string())?;
    let meta = f.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file (a FIFO, device or directory is not read)".into());
    }
    if meta.len() > MAX_CONFIG {
        return Err(format!(
            "{} bytes is more than a config file may be ({MAX_CONFIG})",
            meta.len()
        ));
    }
    let mut buf = Vec::new();
    // The file may grow between fstat and read: the cap holds regardless.
    f.take(MAX_CONFIG + 1)
        .read_to_end(&mut buf)
        .map_err(|e| e.to_string())?;
    if buf.len() as u64 > MAX_CONFIG {
        return Err(format!("more than {MAX_CONFIG} bytes"));
    }
    String::from_utf8(buf).map_err(|_| "not UTF-8".into())
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, LoadError> {
        Config::load_with_text(path).map(|(c, _)| c)
    }

    /// As [`Config::load`], with the text read (for [`crate::store`]).
    pub fn load_with_text(path: &Path) -> Result<(Config, String), LoadError> {
        let text = read_config(path).map_err(|reason| LoadError::Read {
            path: path.display().to_string(),
            reason,
        })?;
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

    fn from_raw(file: &str, raw: RawRoot) -> Result<Config, ConfigError> {
        let at = |loc: &serde_saphyr::Location, message: String| ConfigError {
            file: file.to_string(),
            line: loc.line(),
            col: loc.column(),
            message,
        };

        let listen = |v: Option<Spanned<String>>,
                      key: &str,
                      default: &str|
         -> Result<Option<SocketAddr>, ConfigError> {
            match v {
                None => parse_listen(default).map_err(|m| ConfigError {
                    file: file.to_string(),
                    line: 0,
                    col: 0,
                    message: m,
                }),
                Some(s) => {
                    parse_listen(&s.value).map_err(|m| at(&s.referenced, format!("{key}: {m}")))
                }
            }
        };
        let api = raw.api.unwrap_or_default();
        let rtsp = raw.rtsp.unwrap_or_default();
        let rtsp_auth = match (
            rtsp.username.clone().unwrap_or_default(),
            rtsp.password.clone().unwrap_or_default(),
        ) {
            (u, p) if u.is_empty() && p.is_empty() => None,
            (username, password) => Some(Credentials {
                username,
                password,
                // go2rtc: loopback clients need no password unless asked.
                local_auth: rtsp.local_auth.unwrap_or(false),
            }),
        };
        let api_listen = listen(api.listen, "api.listen", ":1984")?;
        let api_auth = match (
            api.username.clone().unwrap_or_default(),
            api.password.clone().unwrap_or_default(),
        ) {
            (u, p) if u.is_empty() && p.is_empty() => None,
            (username, password) => Some(Credentials {
                username,
                password,
                local_auth: api.local_auth.unwrap_or(false),
            }),
        };
        let api_unix_listen = api.unix_listen.filter(|p| !p.is_empty()).map(PathBuf::from);
        let allow_exec = api.allow_exec.unwrap_or(false);
        let mut api_origin = Vec::new();
        for (o, whole) in api
            .origin
            .into_iter()
            .flat_map(|o| o.value.0.into_iter().map(move |x| (x, o.referenced)))
        {
            let v = o.value.trim().trim_end_matches('/').to_string();
            if v != "*" && !(v.starts_with("http://") || v.starts_with("https://")) {
                // A lone string carries no location of its own (see `Sources`).
                let loc = if o.referenced.line() == 0 {
                    whole
                } else {
                    o.referenced
                };
                return Err(at(
                    &loc,
                    format!(
                        "api.origin: `{v}` is not `*` or an origin like `https://ha.example:8123`"
                    ),
                ));
            }
            api_origin.push(v);
        }
        let allow_files = api.allow_files.unwrap_or(false);
        let api_hosts: Vec<String> = api
            .hosts
            .map(|h| {
                h.value
                    .0
                    .into_iter()
                    .map(|x| x.value.trim().to_string())
                    .collect()
            })
            .unwrap_or_default();
        let rtsp_listen = listen(rtsp.listen, "rtsp.listen", ":8554")?;
        let rtmp = raw.rtmp.unwrap_or_default();
        let rtmp_listen = listen(rtmp.listen, "rtmp.listen", ":1935")?;
        let max_connections =
            |v: Option<Spanned<u64>>, key: &str, default: usize| -> Result<usize, ConfigError> {
                match v {
                    None => Ok(default),
                    Some(v) if (1..=1_000_000).contains(&v.value) => Ok(v.value as usize),
                    Some(v) => Err(at(
                        &v.referenced,
                        format!("{key}: {} (1 to 1000000)", v.value),
                    )),
                }
            };
        let api_max_connections = max_connections(
            api.max_connections,
            "api.max_connections",
            crate::net::DEFAULT_API_MAX_CONNECTIONS,
        )?;
        let rtsp_max_connections = max_connections(
            rtsp.max_connections,
            "rtsp.max_connections",
            crate::net::DEFAULT_RTSP_MAX_CONNECTIONS,
        )?;
        let rtmp_max_connections = max_connections(
            rtmp.max_connections,
            "rtmp.max_connections",
            crate::net::DEFAULT_RTMP_MAX_CONNECTIONS,
        )?;
        let mut publish = PublishConfig::default();
        if let Some(p) = raw.publish {
            publish.auto_create = p.auto_create.unwrap_or(publish.auto_create);
            publish.takeover = p.takeover.unwrap_or(publish.takeover);
            publish.replace_sources = match p.replace_sources.map(|r| r.0) {
                None | Some(RawReplace::Bool(false)) => ReplaceSources::None,
                Some(RawReplace::Bool(true)) => ReplaceSources::All,
                Some(RawReplace::Names(n)) => ReplaceSources::Streams(n.into_iter().collect()),
            };
            if let Some(v) = p.timeout {
                let d = v
                    .value
                    .to_duration()
                    .map_err(|m| at(&v.referenced, format!("publish.timeout: {m}")))?;
                if d < Duration::from_millis(100) {
                    return Err(at(&v.referenced, "publish.timeout: at least 100ms".into()));
                }
                publish.timeout = d;
            }
        }

        let mut supervisor = Timeouts::default();
        if let Some(s) = raw.supervisor {
            for (key, v) in [
                ("linger", s.linger),
                ("kill_timeout", s.kill_timeout),
                ("start_timeout", s.start_timeout),
                ("stall_timeout", s.stall_timeout),
            ] {
                if let Some(v) = v {
                    let d = v
                        .value
                        .to_duration()
                        .map_err(|m| at(&v.referenced, format!("supervisor.{key}: {m}")))?;
                    set_timeout(&mut supervisor, key, d);
                }
            }
        }

        let mut hls = HlsConfig::default();
        if let Some(h) = raw.hls {
            if let Some(v) = h.target_duration {
                hls.target_duration = v
                    .value
                    .to_duration()
                    .map_err(|m| at(&v.referenced, format!("hls.target_duration: {m}")))?;
                if hls.target_duration < Duration::from_millis(200) {
                    return Err(at(
                        &v.referenced,
                        "hls.target_duration: at least 200ms".into(),
                    ));
                }
            }
            if let Some(v) = h.keepalive {
                hls.keepalive = v
                    .value
                    .to_duration()
                    .map_err(|m| at(&v.referenced, format!("hls.keepalive: {m}")))?;
            }
            if let Some(v) = h.window {
                if !(2..=100).contains(&v.value) {
                    return Err(at(
                        &v.referenced,
                        format!("hls.window: {} segments (2 to 100)", v.value),
                    ));
                }
                hls.window = v.value as usize;
            }
        }
        let mut warnings = Vec::new();
        let (ffmpeg_bin, templates) =
            ffmpeg_section(raw.ffmpeg.unwrap_or_default(), &at, &mut warnings, file)?;
        if let Some(q) = &rtsp.default_query {
            publish.rtsp_default_query = Some(
                default_query(&q.value)
                    .map_err(|m| at(&q.referenced, format!("rtsp.default_query: {m}")))?,
            );
        }
        let streams_raw = raw.streams.map(|m| m.0).unwrap_or_default();
        let names: BTreeSet<String> = streams_raw.iter().map(|(k, _)| k.value.clone()).collect();
        let mut streams = Vec::new();
        // Where each source was written, for errors found after parsing.
        let mut locations: HashMap<(String, usize), serde_saphyr::Location> = HashMap::new();
        let mut stream_lines = Vec::new();
        for (name, sources) in streams_raw {
            stream_lines.push(name.referenced.line());
            if name.value.is_empty() {
                return Err(at(
                    &name.referenced,
                    "streams: a stream name must not be empty".into(),
                ));
            }
            // A name given twice is rejected by the YAML parser itself.
            let mut out = Vec::new();
            let whole = sources.referenced;
            for src in sources.value.0 {
                // A lone string carries no location of its own (see `Sources`).
                let loc = if src.referenced.line() == 0 {
                    whole
                } else {
                    src.referenced
                };
                let mut notes = Vec::new();
                let (kind, timeouts) =
                    parse_source(&src.value, &names, supervisor, &templates, &mut notes)
                        .map_err(|m| at(&loc, format!("streams.{}: {m}", name.value)))?;
                warnings.extend(
                    notes
                        .into_iter()
                        .map(|m| at(&loc, format!("streams.{}: {m}", name.value)).to_string()),
                );
                locations.insert((name.value.clone(), out.len()), loc);
                out.push(SourceConfig {
                    url: src.value,
                    kind,
                    timeouts,
                });
            }
            streams.push(StreamConfig {
                name: name.value,
                sources: out,
            });
        }
        check_reference_cycles(&streams).map_err(|(stream, source, m)| {
            match locations.get(&(stream, source)) {
                Some(loc) => at(loc, m),
                None => ConfigError {
                    file: file.to_string(),
                    line: 0,
                    col: 0,
                    message: m,
                },
            }
        })?;

        let webrtc = webrtc_config(raw.webrtc.unwrap_or_default(), &at, &mut warnings, file)?;
        let log = log_config(raw.log.unwrap_or_default(), &at)?;

        let mut preload = BTreeMap::new();
        for (name, query) in raw.preload.unwrap_or_default() {
            if !streams.iter().any(|s| s.name == name) {
                warnings.push(format!("{file}: preload.{name}: no such stream (ignored)"));
                continue;
            }
            preload.insert(name, query.unwrap_or_default());
        }

        Ok(Config {
            path: PathBuf::new(),
            api_listen,
            rtsp_listen,
            rtmp_listen,
            rtsp_auth,
            api_auth,
            api_unix_listen,
            allow_exec,
            api_max_connections,
            rtsp_max_connections,
            rtmp_max_connections,
            api_origin,
            api_hosts,
            allow_files,
            preload,
            layout: Layout {
                sections: Vec::new(),
                stream_lines,
            },
            ffmpeg_bin,
            ffmpeg_templates: templates.clone(),
            log,
            supervisor,
            hls,
            webrtc,
            publish,
            streams,
            warnings,
        })
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

fn set_timeout(t: &mut Timeouts, key: &str, d: Duration) {
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

// ---- raw, span-carrying structs -------------------------------------------

#[derive(Debug, Default, Deserialize)]
struct RawRoot {
    api: Option<RawListen>,
    rtsp: Option<RawListen>,
    rtmp: Option<RawListen>,
    webrtc: Option<RawWebRtc>,
    publish: Option<RawPublish>,
    preload: Option<BTreeMap<String, Option<String>>>,
    ffmpeg: Option<RawFfmpeg>,
    log: Option<RawLog>,
    supervisor: Option<RawSupervisor>,
    hls: Option<RawHls>,
    streams: Option<OrderedMap>,
}

#[derive(Debug, Default, Deserialize)]
struct RawHls {
    target_duration: Option<Spanned<RawDuration>>,
    window: Option<Spanned<u64>>,
    keepalive: Option<Spanned<RawDuration>>,
}

#[derive(Debug, Default, Deserialize)]
struct RawListen {
    listen: Option<Spanned<String>>,
    origin: Option<Spanned<Sources>>,
    hosts: Option<Spanned<Sources>>,
    username: Option<String>,
    password: Option<String>,
    local_auth: Option<bool>,
    allow_exec: Option<bool>,
    allow_files: Option<bool>,
    unix_listen: Option<String>,
    max_connections: Option<Spanned<u64>>,
    default_query: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
struct RawWebRtc {
    listen: Option<Spanned<String>>,
    candidates: Option<Vec<Spanned<String>>>,
    ice_servers: Option<Vec<Spanned<RawIceServer>>>,
}

#[derive(Debug, Default, Deserialize)]
struct RawIceServer {
    #[serde(default)]
    urls: Sources,
    username: Option<String>,
    credential: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawPublish {
    auto_create: Option<bool>,
    takeover: Option<bool>,
    replace_sources: Option<ReplaceRaw>,
    #[serde(alias = "publish_timeout")]
    timeout: Option<Spanned<RawDuration>>,
}

/// `ffmpeg:` as written: go2rtc's templates by name, each with its
/// location (a number like `timeout: 10` is taken as its text).
type RawFfmpeg = OrderedMap<Spanned<Scalar>>;

/// A YAML scalar as text.
#[derive(Debug, Default)]
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
                Ok(Scalar(String::new()))
            }
        }
        d.deserialize_any(V)
    }
}

/// `log:` as written: `level`, `format`, and a level per module, in
/// order, each with its location.
type RawLog = OrderedMap<Spanned<String>>;

#[derive(Debug, Default, Deserialize)]
struct RawSupervisor {
    linger: Option<Spanned<RawDuration>>,
    kill_timeout: Option<Spanned<RawDuration>>,
    start_timeout: Option<Spanned<RawDuration>>,
    stall_timeout: Option<Spanned<RawDuration>>,
}

/// A duration as written: a string with a unit, or a number of seconds.
#[derive(Debug)]
enum RawDuration {
    Text(String),
    Secs(f64),
}

impl RawDuration {
    fn to_duration(&self) -> Result<Duration, String> {
        match self {
            RawDuration::Text(s) => parse_duration(s),
            RawDuration::Secs(n) => parse_duration(&n.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as 2s or 500ms")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawDuration, E> {
                Ok(RawDuration::Text(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawDuration, E> {
                Ok(RawDuration::Secs(v as f64))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawDuration, E> {
                Ok(RawDuration::Secs(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawDuration, E> {
                Ok(RawDuration::Secs(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// A map in file order, each key with its location: `streams:` (whose
/// order is the web UI's and the API's) and `log:`.
#[derive(Debug)]
struct OrderedMap<V = Spanned<Sources>>(Vec<(Spanned<String>, V)>);

impl<V> Default for OrderedMap<V> {
    fn default() -> Self {
        OrderedMap(Vec::new())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for OrderedMap<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for Visit<V> {
            type Value = OrderedMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<OrderedMap<V>, A::Error> {
                let mut v = Vec::new();
                while let Some(k) = m.next_key::<Spanned<String>>()? {
                    v.push((k, m.next_value()?));
                }
                Ok(OrderedMap(v))
            }
            fn visit_unit<E: de::Error>(self) -> Result<OrderedMap<V>, E> {
                Ok(OrderedMap::default())
            }
        }
        d.deserialize_map(Visit(std::marker::PhantomData))
    }
}

/// A stream's value: nothing, one source, or a list of sources.
#[derive(Debug, Default)]
struct Sources(Vec<Spanned<String>>);

/// `publish.replace_sources`: a bool, or the streams it holds for.
#[derive(Debug)]
enum RawReplace {
    Bool(bool),
    Names(Vec<String>),
}

#[derive(Debug)]
struct ReplaceRaw(RawReplace);

impl<'de> Deserialize<'de> for ReplaceRaw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ReplaceRaw;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("true, false, or a list of stream names")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<ReplaceRaw, E> {
                Ok(ReplaceRaw(RawReplace::Bool(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ReplaceRaw, E> {
                Ok(ReplaceRaw(RawReplace::Names(vec![v.to_string()])))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut a: A) -> Result<ReplaceRaw, A::Error> {
                let mut names = Vec::new();
                while let Some(n) = a.next_element::<String>()? {
                    names.push(n);
                }
                Ok(ReplaceRaw(RawReplace::Names(names)))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Sources {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A single string is wrapped by the caller's Spanned; it is stored
        // with a placeholder location that `Spanned<Sources>` replaces below.
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Sources;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a source URL or a list of source URLs")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Sources, E> {
                Ok(Sources::default())
            }
            fn visit_none<E: de::Error>(self) -> Result<Sources, E> {
                Ok(Sources::default())
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Sources, E> {
                Ok(Sources(vec![Spanned::new(
                    v.to_string(),
                    serde_saphyr::Location::UNKNOWN,
                    serde_saphyr::Location::UNKNOWN,
                )]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Sources, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = s.next_element::<Spanned<String>>()? {
                    v.push(x);
                }
                Ok(Sources(v))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("s.yaml"), text, &|k| {
            (k == "CAM_IP").then(|| "10.0.0.9".to_string())
        })
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

        let e = parse("streams:\n  cam:\n    - rtsp://a/b\n    - \"ffmpeg:x#video=vp9\"\n")
            .unwrap_err();
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
        let c = parse(
            "rtmp: {listen: \"\"}\npublish: {auto_create: true, takeover: false, timeout: 2s}\n",
        )
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

    pub(super) fn ffmpeg_kind(c: &Config, stream: usize) -> &SourceKind {
        &c.streams[stream].sources[0].kind
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
}
