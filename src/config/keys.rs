//! The keys we know, section by section, and a warning with its
//! file:line:col for every other (go2rtc has many sections we ignore).

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_saphyr::Spanned;

/// The second pass: every key of the document with its location, to warn
/// about the ones we do not know (go2rtc has many sections we ignore).
#[derive(Debug, Default)]
pub(super) struct TopKeys(pub(super) Vec<(Spanned<String>, SubKeys)>);

#[derive(Debug, Default)]
pub(super) struct SubKeys(Vec<Spanned<String>>);

const KNOWN: &[(&str, &[&str])] = &[
    (
        "api",
        &[
            "listen",
            "username",
            "password",
            "local_auth",
            "allow_exec",
            "allow_files",
            "unix_listen",
            "max_connections",
            "origin",
            "hosts",
        ],
    ),
    (
        "rtsp",
        &[
            "listen",
            "username",
            "password",
            "local_auth",
            "max_connections",
            "default_query",
        ],
    ),
    // Checked key by key where the section is read (`ffmpeg_section`).
    ("ffmpeg", &[]),
    (
        "log",
        &[
            "level",
            "format",
            "api",
            "streams",
            "exec",
            "ffmpeg",
            "rtsp",
            "rtmp",
            "webrtc",
            "hls",
            "mp4",
            "mjpeg",
            "hub",
            "supervisor",
            "source",
            "store",
            "preload",
            "snapshot",
            "metrics",
        ],
    ),
    (
        "supervisor",
        &["linger", "kill_timeout", "start_timeout", "stall_timeout"],
    ),
    ("hls", &["target_duration", "window", "keepalive"]),
    ("rtmp", &["listen", "max_connections"]),
    ("webrtc", &["listen", "candidates", "ice_servers"]),
    (
        "publish",
        &[
            "auto_create",
            "takeover",
            "timeout",
            "publish_timeout",
            "replace_sources",
        ],
    ),
    ("streams", &[]),
    ("preload", &[]),
];

impl TopKeys {
    pub(super) fn unknown(&self, file: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (k, sub) in &self.0 {
            let here = |s: &Spanned<String>| {
                format!("{file}:{}:{}", s.referenced.line(), s.referenced.column())
            };
            match KNOWN.iter().find(|(name, _)| *name == k.value) {
                None => out.push(format!("{}: unknown key `{}` (ignored)", here(k), k.value)),
                Some(("streams" | "preload" | "ffmpeg", _)) => {}
                Some((section, keys)) => {
                    for s in &sub.0 {
                        if !keys.contains(&s.value.as_str()) {
                            out.push(format!(
                                "{}: unknown key `{section}.{}` (ignored)",
                                here(s),
                                s.value
                            ));
                        }
                    }
                }
            }
        }
        out
    }
}

impl<'de> Deserialize<'de> for TopKeys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TopKeys;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of config sections")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<TopKeys, A::Error> {
                let mut v = Vec::new();
                while let Some(k) = m.next_key::<Spanned<String>>()? {
                    v.push((k, m.next_value()?));
                }
                Ok(TopKeys(v))
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> Deserialize<'de> for SubKeys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        macro_rules! ignore {
            ($($f:ident: $t:ty),*) => {$(
                fn $f<E: de::Error>(self, _: $t) -> Result<SubKeys, E> { Ok(SubKeys::default()) }
            )*};
        }
        impl<'de> Visitor<'de> for V {
            type Value = SubKeys;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any value")
            }
            ignore!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str);
            fn visit_unit<E: de::Error>(self) -> Result<SubKeys, E> {
                Ok(SubKeys::default())
            }
            fn visit_none<E: de::Error>(self) -> Result<SubKeys, E> {
                Ok(SubKeys::default())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<SubKeys, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(SubKeys::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<SubKeys, A::Error> {
                let mut v = Vec::new();
                while let Some(k) = m.next_key::<Spanned<String>>()? {
                    m.next_value::<IgnoredAny>()?;
                    v.push(k);
                }
                Ok(SubKeys(v))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::parse;

    #[test]
    fn unknown_keys_warn() {
        let c = parse("homekit: { cam: {} }\napi:\n  listen: \":1\"\n  tls_listen: \":443\"\n")
            .unwrap();
        assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
        assert!(
            c.warnings[0].starts_with("s.yaml:1:1: unknown key `homekit`"),
            "{:?}",
            c.warnings
        );
        assert!(
            c.warnings[1].starts_with("s.yaml:4:3: unknown key `api.tls_listen`"),
            "{:?}",
            c.warnings
        );
    }
}
