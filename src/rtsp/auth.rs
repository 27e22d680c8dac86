//! RTSP authentication (RFC 2326 §D.2 defers to HTTP): Basic (RFC 7617)
//! and Digest (RFC 2617 §3.2.2, without qop, which is what ffmpeg, VLC and
//! GStreamer all answer).

use base64::Engine;
use md5::{Digest, Md5};

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
/// of `method`, given the nonce this connection handed out.
pub fn check(creds: &Credentials, authorization: &str, method: &str, nonce: &str) -> bool {
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
    let ha1 = md5_hex(&format!("{}:{REALM}:{}", creds.username, creds.password));
    let ha2 = md5_hex(&format!("{method}:{}", get("uri")));
    let expected = md5_hex(&format!("{ha1}:{nonce}:{ha2}"));
    constant_time_eq(
        get("response").to_ascii_lowercase().as_bytes(),
        expected.as_bytes(),
    )
}

/// Compares without an early exit, so timing does not leak how much of a
/// guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
        assert!(check(&creds(), &good, "DESCRIBE", "n"));
        let bad = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("admin:nope")
        );
        assert!(!check(&creds(), &bad, "DESCRIBE", "n"));
        assert!(!check(&creds(), "Basic !!!", "DESCRIBE", "n"));
    }

    #[test]
    fn digest() {
        let nonce = "abc123";
        let ha1 = md5_hex("admin:streamvisor:s3cret");
        let ha2 = md5_hex("DESCRIBE:rtsp://h/cam");
        let response = md5_hex(&format!("{ha1}:{nonce}:{ha2}"));
        let header = format!("Digest username=\"admin\", realm=\"streamvisor\", nonce=\"{nonce}\", uri=\"rtsp://h/cam\", response=\"{response}\"");
        assert!(check(&creds(), &header, "DESCRIBE", nonce));
        assert!(
            !check(&creds(), &header, "SETUP", nonce),
            "bound to the method"
        );
        assert!(
            !check(&creds(), &header, "DESCRIBE", "other-nonce"),
            "bound to our nonce"
        );
        assert!(!check(&creds(), "Digest garbage", "DESCRIBE", nonce));
        assert!(!check(&creds(), "Bearer x", "DESCRIBE", nonce));
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
