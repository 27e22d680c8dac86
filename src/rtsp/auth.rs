//! RTSP authentication (RFC 2326 §D.2 defers to HTTP): Basic (RFC 7617)
//! and Digest (RFC 2617 §3.2.2, without qop, which is what ffmpeg, VLC and
//! GStreamer all answer).

use base64::Engine;
use md5::{Digest, Md5};

use crate::auth::constant_time_eq;
use crate::config::Credentials;

pub const REALM: &str = "streamvisor";

fn md5_hex(s: &str) -> String {
    Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The `WWW-Authenticate` challenges for a 401, Digest first (the
/// stronger one; clients take the first they support).
pub fn challenges(nonce: &str) -> [String; 2] {
    [
        format!("Digest realm=\"{REALM}\", nonce=\"{nonce}\""),
        format!("Basic realm=\"{REALM}\""),
    ]
}

/// Splits `k1="v1", k2=v2` (RFC 7235 §2.1 auth-params).
fn params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((k, after)) = rest.split_once('=') else {
            break;
        };
        let after = after.trim_start();
        let (v, next) = if let Some(q) = after.strip_prefix('"') {
            match q.find('"') {
                Some(end) => (&q[..end], &q[end + 1..]),
                None => (q, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        out.push((k.trim().to_ascii_lowercase(), v.to_string()));
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

/// Whether an `Authorization` header value proves `creds` for a request
/// of `method` to `request_uri`, given the nonce this connection handed
/// out.
pub fn check(
    creds: &Credentials,
    authorization: &str,
    method: &str,
    request_uri: &str,
    nonce: &str,
) -> bool {
    let (scheme, rest) = authorization
        .trim()
        .split_once(' ')
        .unwrap_or((authorization, ""));
    if scheme.eq_ignore_ascii_case("Basic") {
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(rest.trim()) else {
            return false;
        };
        let expected = format!("{}:{}", creds.username, creds.password);
        return constant_time_eq(&raw, expected.as_bytes());
    }
    if !scheme.eq_ignore_ascii_case("Digest") {
        return false;
    }
    let p = params(rest);
    let get = |k: &str| {
        p.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    if get("username") != creds.username || get("nonce") != nonce || get("realm") != REALM {
        return false;
    }
    // RFC 2617 §3.2.2.5: the response covers `uri`, so a response seen for
    // one URI must not open another; the directive must name the
    // Request-URI.
    if !same_uri(get("uri"), request_uri) {
        return false;
    }
    let ha1 = md5_hex(&format!("{}:{REALM}:{}", creds.username, creds.password));
    let ha2 = md5_hex(&format!("{method}:{}", get("uri")));
    let expected = md5_hex(&format!("{ha1}:{nonce}:{ha2}"));
    constant_time_eq(
        get("response").to_ascii_lowercase().as_bytes(),
        expected.as_bytes(),
    )
}

/// Whether a Digest `uri` directive names `request_uri` (an absolute
/// `rtsp://` URL, as RTSP requires, RFC 2326 §6.1). ffmpeg, GStreamer and
/// VLC send the Request-URI exactly; also taken, as RFC 2617 §3.2.2.5
/// allows for proxies and as some clients write it: the same URL spelled
/// differently (host case, the default port 554 written or not, a
/// trailing `/`, the userinfo), or only its absolute path (and query).
fn same_uri(directive: &str, request_uri: &str) -> bool {
    if directive.is_empty() {
        return false;
    }
    if directive == request_uri {
        return true;
    }
    let Ok(req) = rtsp_types::Url::parse(request_uri) else {
        return false;
    };
    let path_query = |u: &rtsp_types::Url| {
        let p = u.path().trim_end_matches('/').to_string();
        match u.query() {
            Some(q) => format!("{p}?{q}"),
            None => p,
        }
    };
    if directive.starts_with('/') {
        let Ok(d) = req.join(directive) else {
            return false;
        };
        return path_query(&d) == path_query(&req);
    }
    let Ok(d) = rtsp_types::Url::parse(directive) else {
        return false;
    };
    let port = |u: &rtsp_types::Url| {
        u.port().unwrap_or(match u.scheme() {
            "rtsps" => 322,
            _ => 554,
        })
    };
    d.scheme().eq_ignore_ascii_case(req.scheme())
        && d.host_str().map(str::to_ascii_lowercase) == req.host_str().map(str::to_ascii_lowercase)
        && port(&d) == port(&req)
        && path_query(&d) == path_query(&req)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> Credentials {
        Credentials {
            username: "admin".into(),
            password: "s3cret".into(),
            local_auth: false,
        }
    }

    #[test]
    fn basic() {
        let good = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("admin:s3cret")
        );
        assert!(check(&creds(), &good, "DESCRIBE", "rtsp://h/cam", "n"));
        let bad = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("admin:nope")
        );
        assert!(!check(&creds(), &bad, "DESCRIBE", "rtsp://h/cam", "n"));
        assert!(!check(
            &creds(),
            "Basic !!!",
            "DESCRIBE",
            "rtsp://h/cam",
            "n"
        ));
    }

    fn digest_header(method: &str, uri: &str, nonce: &str) -> String {
        let ha1 = md5_hex("admin:streamvisor:s3cret");
        let ha2 = md5_hex(&format!("{method}:{uri}"));
        let response = md5_hex(&format!("{ha1}:{nonce}:{ha2}"));
        format!("Digest username=\"admin\", realm=\"streamvisor\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\"")
    }

    #[test]
    fn digest() {
        let nonce = "abc123";
        let header = digest_header("DESCRIBE", "rtsp://h/cam", nonce);
        assert!(check(&creds(), &header, "DESCRIBE", "rtsp://h/cam", nonce));
        assert!(
            !check(&creds(), &header, "SETUP", "rtsp://h/cam", nonce),
            "bound to the method"
        );
        assert!(
            !check(&creds(), &header, "DESCRIBE", "rtsp://h/cam", "other-nonce"),
            "bound to our nonce"
        );
        assert!(!check(
            &creds(),
            "Digest garbage",
            "DESCRIBE",
            "rtsp://h/cam",
            nonce
        ));
        assert!(!check(
            &creds(),
            "Bearer x",
            "DESCRIBE",
            "rtsp://h/cam",
            nonce
        ));
    }

    /// RFC 2617 §3.2.2.5: a valid response for one URI does not open
    /// another (a captured DESCRIBE of `cam` replayed for `other`).
    #[test]
    fn digest_uri_must_name_the_request() {
        let nonce = "n1";
        let header = digest_header("ANNOUNCE", "rtsp://127.0.0.1:8554/cam", nonce);
        let ok = |req: &str| check(&creds(), &header, "ANNOUNCE", req, nonce);
        assert!(ok("rtsp://127.0.0.1:8554/cam"));
        assert!(!ok("rtsp://127.0.0.1:8554/other"), "another stream");
        assert!(
            !ok("rtsp://127.0.0.1:8554/cam?publish_token=1"),
            "another query"
        );
        assert!(!ok("rtsp://127.0.0.1:9554/cam"), "another port");
        assert!(!ok("rtsp://10.0.0.1:8554/cam"), "another host");
        // No `uri` at all is no proof either.
        let ha1 = md5_hex("admin:streamvisor:s3cret");
        let response = md5_hex(&format!("{ha1}:{nonce}:{}", md5_hex("ANNOUNCE:")));
        let no_uri = format!("Digest username=\"admin\", realm=\"streamvisor\", nonce=\"{nonce}\", response=\"{response}\"");
        assert!(!check(&creds(), &no_uri, "ANNOUNCE", "rtsp://h/cam", nonce));
    }

    /// The same URI written another way still matches: what clients and
    /// proxies send (RFC 2617 §3.2.2.5 lets a proxy rewrite the
    /// Request-URI; the response is over the directive as sent).
    #[test]
    fn digest_uri_variations() {
        let nonce = "n2";
        let ok = |directive: &str, req: &str| {
            check(
                &creds(),
                &digest_header("DESCRIBE", directive, nonce),
                "DESCRIBE",
                req,
                nonce,
            )
        };
        assert!(ok("rtsp://CAM.local/live", "rtsp://cam.local/live"));
        assert!(ok("rtsp://h:554/live", "rtsp://h/live"));
        assert!(ok("rtsp://h/live/", "rtsp://h/live"));
        assert!(ok("rtsp://admin@h/live", "rtsp://h/live"));
        assert!(ok("/live?video", "rtsp://h/live?video"));
        assert!(!ok("/other", "rtsp://h/live"));
        assert!(!ok("*", "rtsp://h/live"));
    }

    #[test]
    fn auth_params() {
        let p = params(r#"username="a, b", realm=r, nonce="n""#);
        assert_eq!(
            p,
            vec![
                ("username".into(), "a, b".into()),
                ("realm".into(), "r".into()),
                ("nonce".into(), "n".into())
            ]
        );
    }
}
