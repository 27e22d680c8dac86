//! `${VAR}` and `${VAR:default}` in the config file, from the environment
//! (go2rtc's syntax), and what a looked-up value means for the logs.

use super::ConfigError;

/// The process environment, as `${VAR}`s see it. Every value looked up
/// is kept out of logs and `last_error` from then on (issue 15: the file
/// author put it in the environment to keep it out of the file).
pub fn env_secret(k: &str) -> Option<String> {
    let v = std::env::var(k).ok()?;
    crate::redact::add_secret(&v);
    Some(v)
}

/// `${VAR}` and `${VAR:default}` in config text, from `env`. Only the file
/// is expanded, never API input (see [`check_api_source`]).
pub(crate) fn expand_env(
    file: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    for (lineno, line) in text.split_inclusive('\n').enumerate() {
        let mut rest = line;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let col = (line.len() - rest.len() + start + 1) as u64;
            let err = |message: String| ConfigError {
                file: file.to_string(),
                line: lineno as u64 + 1,
                col,
                message,
            };
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                return Err(err("unterminated `${`".into()));
            };
            let inner = &after[..end];
            let (name, default) = match inner.split_once(':') {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            let value = match (env(name), default) {
                (Some(v), _) => v,
                (None, Some(d)) => d.to_string(),
                (None, None) => return Err(err(format!("environment variable `{name}` is not set (write ${{{name}:default}} to give a default)"))),
            };
            if value.contains('\n') {
                return Err(err(format!(
                    "environment variable `{name}` contains a newline"
                )));
            }
            out.push_str(&value);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::config::tests::parse;

    #[test]
    fn env_expansion() {
        let c = parse("streams:\n  cam: rtsp://${CAM_IP}/s\n  other: rtsp://${NOPE:1.2.3.4}/s\n")
            .unwrap();
        assert_eq!(c.streams[0].sources[0].url, "rtsp://10.0.0.9/s");
        assert_eq!(c.streams[1].sources[0].url, "rtsp://1.2.3.4/s");
        let e = parse("streams:\n  cam: rtsp://${MISSING}/s\n").unwrap_err();
        assert_eq!((e.line, e.col), (2, 15), "{e}");
        assert!(e.message.contains("MISSING"));
    }
}
