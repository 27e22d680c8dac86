//! One credential model for every way in (HTTP, RTSP, RTMP, WebRTC
//! signalling, every publish path).
//!
//! go2rtc configures credentials per section (`api.username`,
//! `rtsp.username`), and each protects only its own listener; a LAN host
//! could then watch a camera over whichever protocol was left open. Here
//! the pairs configured in either section are accepted everywhere, and
//! once any pair is set, every listener asks for one. `local_auth`, as in
//! go2rtc, decides whether loopback clients must log in too: each
//! protocol follows its own section's setting, or the other section's
//! when its own has no credentials; RTMP, which has no section of its own
//! for them, asks loopback clients when either section says so.

use std::net::SocketAddr;

use crate::config::Credentials;

/// Who must log in on one listener, and with what.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gate {
    /// Every configured pair; empty: no credentials are asked anywhere.
    pairs: Vec<Credentials>,
    /// Loopback clients must log in too.
    local_auth: bool,
}

impl Gate {
    /// The gate of a protocol whose own section holds `own`, with `other`
    /// the other section's pair.
    pub fn new(own: Option<&Credentials>, other: Option<&Credentials>) -> Gate {
        let pairs: Vec<Credentials> = own.into_iter().chain(other).cloned().collect();
        let local_auth = match (own, other) {
            (Some(c), _) => c.local_auth,
            (None, Some(c)) => c.local_auth,
            (None, None) => false,
        };
        Gate { pairs, local_auth }
    }

    /// RTMP's gate: no section of its own, so loopback clients log in
    /// when either section asks it.
    pub fn either(a: Option<&Credentials>, b: Option<&Credentials>) -> Gate {
        let mut g = Gate::new(a, b);
        g.local_auth = a.is_some_and(|c| c.local_auth) || b.is_some_and(|c| c.local_auth);
        g
    }

    /// Whether any credentials are configured.
    pub fn enabled(&self) -> bool {
        !self.pairs.is_empty()
    }

    /// The configured pairs (RTSP Digest needs each password).
    pub fn pairs(&self) -> &[Credentials] {
        &self.pairs
    }

    /// Whether a client may go without credentials: none are configured,
    /// or it is local (`loopback`: a loopback peer, and for HTTP a
    /// loopback `Host`, see [`host_is_local`]) and `local_auth` is off.
    pub fn exempt(&self, local: bool) -> bool {
        !self.enabled() || (local && !self.local_auth)
    }

    /// Whether `user`/`pass` match a configured pair. Every pair is
    /// compared in full, so timing tells nothing of which, or how much,
    /// matched.
    pub fn check(&self, user: &str, pass: &str) -> bool {
        self.pairs.iter().fold(false, |ok, c| {
            let u = constant_time_eq(user.as_bytes(), c.username.as_bytes());
            let p = constant_time_eq(pass.as_bytes(), c.password.as_bytes());
            ok | (u & p)
        })
    }

    /// Whether a client at `peer` is loopback, for protocols with no
    /// `Host` header (RTSP, RTMP).
    pub fn is_loopback(peer: SocketAddr) -> bool {
        peer.ip().is_loopback()
            || matches!(peer.ip(), std::net::IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()))
    }
}

/// Compares without an early exit, so timing does not tell how much of a
/// guess was right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether an HTTP `Host` header names this machine's loopback:
/// `localhost`, `*.localhost` (RFC 6761 §6.3), `127.0.0.0/8` or `[::1]`,
/// with or without a port. A browser sends the name it resolved, so a
/// DNS-rebinding page (`attacker.example` resolving to 127.0.0.1) sends
/// its own name and is not local. Configured names do not count: a
/// reverse proxy on this machine would make everyone behind it local.
pub fn host_is_local(host: &str) -> bool {
    let name = host_name(host).to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// Whether `Host` is a name no stranger's DNS can hand out: an address,
/// a single label (resolved through the LAN's search domain), or a name
/// under a suffix kept for local networks (mDNS's `.local`, RFC 6762;
/// `.home.arpa`, RFC 8375; `.internal`; and the common router domains).
/// DNS rebinding needs a public name the attacker controls, which this is
/// not.
pub fn host_is_lan_name(host: &str) -> bool {
    const LAN: &[&str] = &[
        ".local",
        ".lan",
        ".home",
        ".home.arpa",
        ".internal",
        ".localdomain",
        ".localhost",
        ".intranet",
        ".fritz.box",
    ];
    let name = host_name(host).to_ascii_lowercase();
    let name = name.trim_end_matches('.');
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<std::net::IpAddr>().is_ok()
        || (!name.is_empty() && !name.contains('.'))
        || LAN.iter().any(|s| name.ends_with(s))
}

/// `Host`'s name without its port: `[::1]:1984` → `[::1]`, `a:1` → `a`.
pub fn host_name(host: &str) -> &str {
    let host = host.trim();
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// RTMP credentials in a query (`?user=U&pass=P`, MediaMTX's convention,
/// which OBS users put in the stream key: `obs?user=U&pass=P`).
pub fn from_query(q: &str) -> Option<(String, String)> {
    let mut user = None;
    let mut pass = None;
    for kv in q.split('&') {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        // application/x-www-form-urlencoded: `+` is a space.
        let v = percent_encoding::percent_decode_str(&v.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned();
        match k {
            "user" | "username" => user = Some(v),
            "pass" | "password" => pass = Some(v),
            _ => {}
        }
    }
    Some((user?, pass.unwrap_or_default()))
}

/// Credentials in a URL's userinfo (`rtmp://u:p@host/app`), percent
/// decoded; for clients that send their URL as `tcUrl` with them.
pub fn from_userinfo(url: &str) -> Option<(String, String)> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let (info, _) = authority.rsplit_once('@')?;
    let (u, p) = info.split_once(':').unwrap_or((info, ""));
    let dec = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    Some((dec(u), dec(p)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(u: &str, p: &str, local_auth: bool) -> Credentials {
        Credentials {
            username: u.into(),
            password: p.into(),
            local_auth,
        }
    }

    #[test]
    fn either_sections_pair_is_accepted_everywhere() {
        let api = pair("admin", "a", false);
        let rtsp = pair("cam", "r", true);
        let g = Gate::new(Some(&rtsp), Some(&api));
        assert!(g.check("admin", "a") && g.check("cam", "r"));
        assert!(!g.check("admin", "r") && !g.check("cam", "a") && !g.check("", ""));
        // local_auth is the own section's when it has credentials…
        assert!(!g.exempt(true));
        assert!(Gate::new(Some(&api), Some(&rtsp)).exempt(true));
        // …else the other's.
        assert!(!Gate::new(None, Some(&rtsp)).exempt(true));
        assert!(Gate::new(None, Some(&api)).exempt(true));
        // RTMP: either one asking is enough.
        assert!(!Gate::either(Some(&api), Some(&rtsp)).exempt(true));
        assert!(Gate::either(Some(&api), None).exempt(true));
        // Nobody is exempt from the LAN; everybody with no credentials set.
        assert!(!g.exempt(false));
        assert!(Gate::default().exempt(false));
    }

    #[test]
    fn local_hosts() {
        for h in [
            "localhost",
            "localhost:1984",
            "LOCALHOST",
            "a.localhost:1",
            "127.0.0.1",
            "127.1.2.3:80",
            "[::1]",
            "[::1]:1984",
        ] {
            assert!(host_is_local(h), "{h}");
        }
        for h in [
            "attacker.example",
            "attacker.example:1984",
            "localhost.attacker.example",
            "10.0.0.2:1984",
            "[::2]:1984",
            "",
            "127.0.0.1.nip.io",
        ] {
            assert!(!host_is_local(h), "{h}");
        }
        for h in [
            "192.168.1.5:1984",
            "[fd00::5]:1984",
            "nvr",
            "nvr:1984",
            "nvr.local",
            "NVR.Home.Arpa.",
            "nas.fritz.box:1984",
            "localhost",
        ] {
            assert!(host_is_lan_name(h), "{h}");
        }
        for h in [
            "attacker.example",
            "cams.example.com:443",
            "192.168.1.5.nip.io",
            "local.attacker.example",
            "",
        ] {
            assert!(!host_is_lan_name(h), "{h}");
        }
    }

    #[test]
    fn rtmp_credentials() {
        assert_eq!(
            from_query("user=u&pass=p%40ss"),
            Some(("u".into(), "p@ss".into()))
        );
        assert_eq!(from_query("pass=p"), None);
        assert_eq!(from_query(""), None);
        assert_eq!(
            from_userinfo("rtmp://u:p%3A1@host:1935/live?x=1"),
            Some(("u".into(), "p:1".into()))
        );
        assert_eq!(from_userinfo("rtmp://host/live"), None);
        assert_eq!(from_userinfo("rtmp://host/live?a=b@c"), None);
    }
}
