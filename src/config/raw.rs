//! The file as written: serde-saphyr's structs, whose values carry their
//! [`Spanned`] location, and [`Config::from_raw`], which checks them and
//! builds the typed [`Config`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::ffmpeg::ffmpeg_section;
use super::log::log_config;
use super::sources::{check_reference_cycles, parse_source};
use super::webrtc::webrtc_config;
use super::{
    default_query, parse_duration, parse_listen, set_timeout, Config, ConfigError, Credentials,
    HlsConfig, Layout, PublishConfig, ReplaceSources, SourceConfig, StreamConfig, Timeouts,
};

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawRoot {
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
pub(super) struct RawWebRtc {
    pub(super) listen: Option<Spanned<String>>,
    pub(super) candidates: Option<Vec<Spanned<String>>>,
    pub(super) ice_servers: Option<Vec<Spanned<RawIceServer>>>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawIceServer {
    #[serde(default)]
    pub(super) urls: Sources,
    pub(super) username: Option<String>,
    pub(super) credential: Option<String>,
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
pub(super) type RawFfmpeg = OrderedMap<Spanned<Scalar>>;

/// A YAML scalar as text.
#[derive(Debug, Default)]
pub(super) struct Scalar(pub(super) String);

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
pub(super) type RawLog = OrderedMap<Spanned<String>>;

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
pub(super) struct OrderedMap<V = Spanned<Sources>>(pub(super) Vec<(Spanned<String>, V)>);

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
pub(super) struct Sources(pub(super) Vec<Spanned<String>>);

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

impl Config {
    pub(super) fn from_raw(file: &str, raw: RawRoot) -> Result<Config, ConfigError> {
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
}
