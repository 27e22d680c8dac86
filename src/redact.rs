//! What a log line or the API may show: credentials hidden ([`redact`])
//! and control characters escaped ([`escape_controls`]). The guide's rule:
//! no secret reaches a command line, a log or the API. Every part of the
//! program cleans what it logs through here, so this module imports
//! nothing of ours.

/// Values that `${VAR}`s in the config expanded to, hidden wherever
/// [`redact`] runs: the file author put them in the environment to keep
/// them out of the file, so they are treated as secrets.
static SECRETS: std::sync::RwLock<Vec<String>> = std::sync::RwLock::new(Vec::new());

/// Shorter values are not hidden: masking every `554` or `on` in a log
/// would hide more than it protects.
const MIN_SECRET: usize = 4;

/// Registers a value to hide in everything [`redact`] cleans (the values
/// `${VAR}`s expanded to). Bounded: the environment is finite and fixed.
pub fn add_secret(v: &str) {
    if v.chars().count() < MIN_SECRET {
        return;
    }
    let mut s = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    if !s.iter().any(|x| x == v) {
        s.push(v.to_string());
        // Longest first, so a secret that contains another goes whole.
        s.sort_by_key(|x| std::cmp::Reverse(x.len()));
    }
}

/// Query parameters whose values are credentials: ours (`token`,
/// `publish_token`), MediaMTX's RTMP `pass`, and the usual camera ones.
const SECRET_PARAMS: &[&str] = &[
    "pass",
    "password",
    "passwd",
    "pwd",
    "token",
    "publish_token",
    "secret",
];

/// Hides credentials in text bound for a log line or the API
/// (`last_error`, `stderr_tail`): the password of `user:password@` in
/// URLs, the values of credential query parameters (`?pass=`, `&token=`),
/// and the values `${VAR}`s expanded to (see [`add_secret`]).
pub fn redact(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("://") {
        out.push_str(&rest[..i + 3]);
        rest = &rest[i + 3..];
        let end = rest
            .find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace())
            .unwrap_or(rest.len());
        if let Some(at) = rest[..end].rfind('@') {
            if let Some(colon) = rest[..at].find(':') {
                out.push_str(&rest[..colon]);
                out.push_str(":***");
                rest = &rest[at..];
            }
        }
    }
    out.push_str(rest);
    let mut out = redact_params(&out);
    let secrets = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    for v in secrets.iter() {
        if out.contains(v.as_str()) {
            out = out.replace(v.as_str(), "***");
        }
    }
    out
}

/// `…?user=u&pass=p&token=t` → `…?user=u&pass=***&token=***`.
fn redact_params(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(['?', '&', ';']) {
        out.push_str(&rest[..=i]);
        rest = &rest[i + 1..];
        let Some(eq) = rest.find('=') else { continue };
        let key = &rest[..eq];
        if SECRET_PARAMS.iter().any(|p| key.eq_ignore_ascii_case(p)) {
            let end = rest[eq + 1..]
                .find(|c: char| c == '&' || c == '#' || c == ';' || c.is_whitespace())
                .map_or(rest.len(), |e| eq + 1 + e);
            out.push_str(key);
            out.push_str("=***");
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

/// Makes text from the network or a URL safe for one log line: control
/// characters (C0, DEL, C1, and the Unicode line and paragraph
/// separators) are written as escapes (`\r`, `\n`, `\x1b`, `\u{85}`).
/// tracing's text format prints `%` fields raw, so a CR/LF or an ANSI
/// escape in a stream key would forge log lines or drive the terminal.
pub fn escape_controls(s: &str) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| c.is_control() || c == '\u{2028}' || c == '\u{2029}';
    if !s.chars().any(bad) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x100 && bad(c) => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if bad(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// What a log line or the API may show of a child's words or an error:
/// [`redact`]ed and [`escape_controls`]d.
pub fn clean(s: &str) -> String {
    escape_controls(&redact(s)).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_passwords_are_hidden() {
        for (given, shown) in [
            (
                "ffmpeg -i rtsp://admin:hunter2@10.0.0.9/s -c copy",
                "ffmpeg -i rtsp://admin:***@10.0.0.9/s -c copy",
            ),
            // An `@` in the password: the last one ends the userinfo.
            ("rtsp://u:p@ss@h/s", "rtsp://u:***@h/s"),
            // Two URLs on one line.
            (
                "rtsp://a:b1@h/x -> http://c:d2@k:80",
                "rtsp://a:***@h/x -> http://c:***@k:80",
            ),
            // A user and no password; an `@` after the path or in a query.
            ("rtsp://u@h/s", "rtsp://u@h/s"),
            ("http://host/a@b", "http://host/a@b"),
            ("http://host?x=u:p@b", "http://host?x=u:p@b"),
            ("no url here: a:b@c", "no url here: a:b@c"),
        ] {
            assert_eq!(redact(given), shown, "{given}");
        }
    }

    #[test]
    fn credential_parameters_are_hidden() {
        for (given, shown) in [
            (
                "rtmp://h/live/key?user=u&pass=p",
                "rtmp://h/live/key?user=u&pass=***",
            ),
            (
                "http://127.0.0.1:1/api/stream.flv?src=a&internal=1&token=00ff&exclude=1",
                "http://127.0.0.1:1/api/stream.flv?src=a&internal=1&token=***&exclude=1",
            ),
            (
                "rtsp://h/x?publish_token=0123 next",
                "rtsp://h/x?publish_token=*** next",
            ),
            ("http://h/?PASSWORD=x#frag", "http://h/?PASSWORD=***#frag"),
            // Only whole keys: `passthrough` is no password.
            ("http://h/?passthrough=1", "http://h/?passthrough=1"),
            ("http://h/?token", "http://h/?token"),
        ] {
            assert_eq!(redact(given), shown, "{given}");
        }
    }

    #[test]
    fn expanded_variables_are_hidden_wherever_they_appear() {
        add_secret("zq-Secret-7731");
        add_secret("zq-Secret-7731-longer");
        // Too short to hide without hiding everything else too.
        add_secret("zq");
        assert_eq!(
            redact("rtsp://h/s?key=zq-Secret-7731 and zq-Secret-7731-longer, zq"),
            "rtsp://h/s?key=*** and ***, zq"
        );
    }

    #[test]
    fn control_characters_are_escaped() {
        assert!(matches!(
            escape_controls("plain name-1 ü"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(
            escape_controls("a\r\nINFO forged\x1b[31m\t\0\x7f"),
            "a\\r\\nINFO forged\\x1b[31m\\t\\x00\\x7f"
        );
        assert_eq!(
            escape_controls("c1\u{85}\u{9b}ls\u{2028}ps\u{2029}"),
            "c1\\x85\\x9bls\\u{2028}ps\\u{2029}"
        );
        assert_eq!(clean("rtsp://u:pw@h/\r\nx"), "rtsp://u:***@h/\\r\\nx");
    }
}
