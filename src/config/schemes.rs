//! Source schemes: the ones we take, the ones only go2rtc has (listed, never
//! run), a hint for a misspelt one, and the URL ffmpeg is given.

use super::UrlScheme;

/// The source schemes we take (`GET /api/schemes`).
pub const SCHEMES: &[&str] = &[
    "rtsp", "rtsps", "rtspx", "rtmp", "rtmps", "rtmpx", "http", "https", "httpx", "file", "ffmpeg",
    "exec",
];

/// Schemes that run a command: the config file may use them, the API only
/// with `api.allow_exec` (go2rtc 1.9.12 closed the same hole: anyone on the
/// LAN could otherwise run commands). We implement only `exec:`; the other
/// two are refused by name so the reason is clear.
pub(super) const COMMAND_SCHEMES: &[&str] = &["exec", "echo", "expr"];

/// The schemes go2rtc's `streams` module knows (`streams.HandleFunc`,
/// `RedirectFunc` in go2rtc 1.9) that streamvisor has no source for. A
/// config from the field that uses one still starts: the source is listed
/// with the reason, and never run.
pub const GO2RTC_ONLY_SCHEMES: &[&str] = &[
    "alsa",
    "bubble",
    "doorbird",
    "dvrip",
    "echo",
    "eseecloud",
    "expr",
    "flussonic",
    "gopro",
    "hass",
    "homekit",
    "isapi",
    "ivideon",
    "kasa",
    "multitrans",
    "nest",
    "onvif",
    "ring",
    "roborock",
    "tapo",
    "tcp",
    "tuya",
    "v4l2",
    "vigi",
    "webrtc",
    "webtorrent",
    "wyoming",
    "wyze",
    "xiaomi",
    "yandex",
];

/// What comes before the first `:` of a source, lower-cased (go2rtc's
/// notion of a scheme: `hass:cam`, `echo:/bin/x` have no `//`).
pub(super) fn scheme_of(s: &str) -> Option<String> {
    let (scheme, _) = s.split_once(':')?;
    let ok = !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    ok.then(|| scheme.to_ascii_lowercase())
}

/// A hint for a misspelt scheme: the known one at most two edits away.
fn did_you_mean(scheme: &str) -> String {
    // Optimal string alignment: a swap of two letters (`rstp`) is one edit.
    fn distance(a: &str, b: &str) -> usize {
        let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
        let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
        for (i, row) in d.iter_mut().enumerate() {
            row[0] = i;
        }
        d[0] = (0..=b.len()).collect();
        for i in 1..=a.len() {
            for j in 1..=b.len() {
                let cost = usize::from(a[i - 1] != b[j - 1]);
                d[i][j] = (d[i - 1][j] + 1)
                    .min(d[i][j - 1] + 1)
                    .min(d[i - 1][j - 1] + cost);
                if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                    d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
                }
            }
        }
        d[a.len()][b.len()]
    }
    let known = ["rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "file"]
        .into_iter()
        .chain(GO2RTC_ONLY_SCHEMES.iter().copied());
    known
        .map(|k| (distance(scheme, k), k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| format!("; did you mean `{k}://`?"))
        .unwrap_or_default()
}

/// The URL ffmpeg is given and its scheme. go2rtc's `rtspx://`,
/// `rtmpx://` and `httpx://` are the TLS schemes without certificate
/// checks (UniFi Protect's self-signed `rtspx://…:7441`); ffmpeg does not
/// check certificates unless told (`tls_verify`), so they become
/// `rtsps://`, `rtmps://` and `https://`.
pub(super) fn url_for(s: &str) -> Result<(String, UrlScheme), String> {
    for (x, to) in [
        ("rtspx://", "rtsps://"),
        ("rtmpx://", "rtmps://"),
        ("httpx://", "https://"),
    ] {
        if s.len() > x.len() && s[..x.len()].eq_ignore_ascii_case(x) {
            let url = format!("{to}{}", &s[x.len()..]);
            let scheme = url_scheme(&url)?;
            return Ok((url, scheme));
        }
    }
    Ok((s.to_string(), url_scheme(s)?))
}

fn url_scheme(s: &str) -> Result<UrlScheme, String> {
    if s.starts_with('/') || s.starts_with("./") || s.starts_with("../") || s.starts_with("file:") {
        return Ok(UrlScheme::File);
    }
    let Some((scheme, _)) = s.split_once("://") else {
        return Err(format!("`{s}` has no scheme (expected rtsp://, rtsps://, rtmp://, http://, https://, a file path, ffmpeg: or exec:)"));
    };
    match scheme.to_ascii_lowercase().as_str() {
        "rtsp" | "rtsps" => Ok(UrlScheme::Rtsp),
        "rtmp" | "rtmps" => Ok(UrlScheme::Rtmp),
        "http" | "https" => Ok(UrlScheme::Http),
        other => Err(format!(
            "unknown source scheme `{other}` (supported: rtsp, rtsps, rtmp, rtmps, http, https, file paths, ffmpeg:, exec:){}",
            did_you_mean(other)
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::config::tests::{ffmpeg_kind, parse};
    use crate::config::{check_api_source, FfmpegInput, SourceKind};

    #[test]
    fn go2rtc_schemes_we_lack_are_listed_not_fatal() {
        let c = parse(
            r#"streams:
  tapo_cam: tapo://admin:secret@10.0.0.5
  door:
    - onvif://admin:pw@10.0.0.6
    - rtsp://10.0.0.6/main
  hass_cam: hass:camera.front
  said: "echo:/bin/cat /etc/cam"
  ok: rtsp://10.0.0.7/main
"#,
        )
        .unwrap();
        let reason = |s: usize, i: usize| c.streams[s].sources[i].kind.unsupported();
        assert_eq!(
            reason(0, 0),
            Some("go2rtc's `tapo:` source is not supported by streamvisor")
        );
        assert_eq!(
            reason(1, 0),
            Some("go2rtc's `onvif:` source is not supported by streamvisor")
        );
        assert_eq!(reason(1, 1), None);
        assert!(reason(2, 0).unwrap().contains("`hass:`"));
        assert!(reason(3, 0).unwrap().contains("`echo:`"));
        assert_eq!(reason(4, 0), None);
        // The URL is kept as written (the API echoes it).
        assert_eq!(c.streams[0].sources[0].url, "tapo://admin:secret@10.0.0.5");
        assert_eq!(c.warnings.len(), 4, "{:?}", c.warnings);
        assert!(
            c.warnings[0].starts_with(
                "s.yaml:2:13: streams.tapo_cam: go2rtc's `tapo:` source is not supported by streamvisor"
            ),
            "{:?}",
            c.warnings
        );
        assert!(
            c.warnings[1].starts_with("s.yaml:4:7: streams.door: go2rtc's `onvif:`"),
            "{:?}",
            c.warnings
        );
        // A misspelt scheme stays an error, with a hint.
        let e = parse("streams:\n  cam: rstp://10.0.0.2/s\n").unwrap_err();
        assert_eq!((e.line, e.col), (2, 8), "{e}");
        assert!(e.message.contains("unknown source scheme `rstp`"), "{e}");
        assert!(e.message.ends_with("did you mean `rtsp://`?"), "{e}");
        let e = parse("streams:\n  cam: \"ffmpeg:htps://h/x#video=h264\"\n").unwrap_err();
        assert!(e.message.contains("did you mean `http"), "{e}");
        let e = parse("streams:\n  cam: zzzzzz://h\n").unwrap_err();
        assert!(!e.message.contains("did you mean"), "{e}");
        // Through the API it is refused with the reason: nothing would run.
        let e = check_api_source("tapo://10.0.0.5", &BTreeSet::new(), false, false).unwrap_err();
        assert!(
            e.contains("go2rtc's `tapo:` source is not supported"),
            "{e}"
        );
    }

    #[test]
    fn insecure_tls_schemes_become_ffmpegs() {
        let c = parse("streams:\n  u: rtspx://10.0.0.1:7441/abc\n  h: \"ffmpeg:httpx://h/x.mjpeg#video=h264\"\n")
            .unwrap();
        assert_eq!(
            ffmpeg_kind(&c, 0),
            &SourceKind::Url {
                url: "rtsps://10.0.0.1:7441/abc".into(),
                scheme: UrlScheme::Rtsp
            }
        );
        assert_eq!(c.streams[0].sources[0].url, "rtspx://10.0.0.1:7441/abc");
        let SourceKind::Ffmpeg { input, .. } = ffmpeg_kind(&c, 1) else {
            panic!()
        };
        assert_eq!(
            input,
            &FfmpegInput::Url {
                url: "https://h/x.mjpeg".into(),
                scheme: UrlScheme::Http
            }
        );
    }
}
