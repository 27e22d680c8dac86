//! `log:`: go2rtc's format, level and per-module levels, as a `tracing`
//! filter.

use super::raw::RawLog;
use super::ConfigError;

/// `log:` (go2rtc's section): the format, the level, and a level per
/// module, e.g. `log: {level: info, rtsp: debug, format: json}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter: the level, then `target=level` per module.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Auto,
            filter: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Colour on a terminal, plain text otherwise (the default).
    Auto,
    /// go2rtc's `color`: always colour.
    Color,
    Text,
    /// One JSON object per line.
    Json,
}

/// go2rtc's module names (and ours) to the `tracing` targets they cover.
const LOG_MODULES: &[(&str, &[&str])] = &[
    ("api", &["streamvisor::api", "streamvisor::web"]),
    ("streams", &["streamvisor::hub", "streamvisor::preload"]),
    ("exec", &["streamvisor::supervisor", "streamvisor::source"]),
    (
        "ffmpeg",
        &["streamvisor::supervisor", "streamvisor::source"],
    ),
    ("rtsp", &["streamvisor::rtsp"]),
    ("rtmp", &["streamvisor::rtmp"]),
    ("webrtc", &["streamvisor::webrtc", "str0m", "dimpl", "is"]),
    ("hls", &["streamvisor::hls"]),
    ("mp4", &["streamvisor::mp4"]),
    ("mjpeg", &["streamvisor::snapshot"]),
    ("hub", &["streamvisor::hub"]),
    ("supervisor", &["streamvisor::supervisor"]),
    ("source", &["streamvisor::source"]),
    ("store", &["streamvisor::store"]),
    ("preload", &["streamvisor::preload"]),
    ("snapshot", &["streamvisor::snapshot"]),
    ("metrics", &["streamvisor::metrics"]),
];

/// go2rtc's levels (zerolog's) as `tracing` levels.
fn log_level(v: &str) -> Result<&'static str, String> {
    Ok(match v.trim().to_ascii_lowercase().as_str() {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warn" | "warning" => "warn",
        "error" | "fatal" | "panic" => "error",
        "disabled" | "off" => "off",
        other => {
            return Err(format!(
                "`{other}` is not a level (trace, debug, info, warn, error, fatal, panic, disabled)"
            ))
        }
    })
}

pub(super) fn log_config(
    raw: RawLog,
    at: &dyn Fn(&serde_saphyr::Location, String) -> ConfigError,
) -> Result<LogConfig, ConfigError> {
    let mut c = LogConfig::default();
    let mut modules = Vec::new();
    for (k, v) in raw.0 {
        match k.value.as_str() {
            "format" => {
                c.format = match v.value.trim() {
                    "" => LogFormat::Auto,
                    "color" => LogFormat::Color,
                    "text" => LogFormat::Text,
                    "json" => LogFormat::Json,
                    other => {
                        return Err(at(
                            &v.referenced,
                            format!("log.format: `{other}` is not one of color, text, json"),
                        ))
                    }
                }
            }
            "level" => {
                c.filter = log_level(&v.value)
                    .map_err(|m| at(&v.referenced, format!("log.level: {m}")))?
                    .to_string()
            }
            name => {
                // Unknown module names are warned about with the other
                // unknown keys.
                let Some((_, targets)) = LOG_MODULES.iter().find(|(n, _)| *n == name) else {
                    continue;
                };
                let level = log_level(&v.value)
                    .map_err(|m| at(&v.referenced, format!("log.{name}: {m}")))?;
                modules.extend(targets.iter().map(|t| format!("{t}={level}")));
            }
        }
    }
    for m in modules {
        c.filter.push(',');
        c.filter.push_str(&m);
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::parse;

    #[test]
    fn log_settings() {
        let c = parse("streams: {}\n").unwrap();
        assert_eq!(c.log, LogConfig::default());
        let c = parse("log:\n  format: json\n  level: WARN\n  rtsp: debug\n  webrtc: fatal\n  homekit: trace\n")
            .unwrap();
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(
            c.log.filter,
            "warn,streamvisor::rtsp=debug,streamvisor::webrtc=error,str0m=error,dimpl=error,is=error"
        );
        // go2rtc's modules we do not have are warned about, by line.
        assert!(
            c.warnings
                .iter()
                .any(|w| w.starts_with("s.yaml:6:3: unknown key `log.homekit`")),
            "{:?}",
            c.warnings
        );
        // The filter is one tracing accepts.
        tracing_subscriber::EnvFilter::try_new(&c.log.filter).unwrap();
        let e = parse("log:\n  rtsp: loud\n").unwrap_err();
        assert_eq!((e.line, e.col), (2, 9), "{e}");
        assert!(e.message.contains("log.rtsp: `loud` is not a level"), "{e}");
        let e = parse("log:\n  format: xml\n").unwrap_err();
        assert!(e.message.contains("log.format"), "{e}");
    }
}
