//! `webrtc:`: the ICE port, the candidates we advertise and the ICE
//! servers handed to the browser.

use std::net::SocketAddr;

use super::raw::RawWebRtc;
use super::{parse_listen, ConfigError};

/// `webrtc:`: where WebRTC peers reach us (go2rtc's section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebRtcConfig {
    /// `webrtc.listen` (default `:8555`): every peer's ICE on this one
    /// port, UDP and TCP (RFC 6544 passive candidates). `""`: a UDP socket
    /// per peer on a free port.
    pub listen: Option<SocketAddr>,
    /// go2rtc's `:8555/udp` and `:8555/tcp` keep one transport only.
    pub udp: bool,
    pub tcp: bool,
    /// `webrtc.candidates`: more addresses to advertise, as `host:port`
    /// (a router's port forward, a DNS name). The port defaults to the
    /// listen port.
    pub candidates: Vec<(String, u16)>,
    /// `webrtc.ice_servers`: handed to our player (`GET /api`), whose
    /// browser may need STUN/TURN to reach us. We are ICE-lite and gather
    /// nothing ourselves.
    pub ice_servers: Vec<IceServer>,
}

impl Default for WebRtcConfig {
    fn default() -> Self {
        WebRtcConfig {
            listen: parse_listen(":8555").ok().flatten(),
            udp: true,
            tcp: true,
            candidates: Vec::new(),
            ice_servers: Vec::new(),
        }
    }
}

/// One entry of `webrtc.ice_servers`, in the shape of the W3C
/// `RTCIceServer` dictionary (what the browser is given).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// `webrtc:`, checked: every mistake names its line and column.
pub(super) fn webrtc_config(
    raw: RawWebRtc,
    at: &dyn Fn(&serde_saphyr::Location, String) -> ConfigError,
    warnings: &mut Vec<String>,
    file: &str,
) -> Result<WebRtcConfig, ConfigError> {
    let mut c = WebRtcConfig::default();
    if let Some(l) = raw.listen {
        // go2rtc: ":8555/tcp" or ":8555/udp" keeps one transport.
        let (addr, only) = match l.value.rsplit_once('/') {
            Some((a, t @ ("tcp" | "udp"))) => (a, Some(t)),
            Some(_) => {
                return Err(at(
                    &l.referenced,
                    format!(
                        "webrtc.listen: `{}`: the only suffixes are /udp and /tcp",
                        l.value
                    ),
                ))
            }
            None => (l.value.as_str(), None),
        };
        c.listen =
            parse_listen(addr).map_err(|m| at(&l.referenced, format!("webrtc.listen: {m}")))?;
        c.udp = only != Some("tcp");
        c.tcp = only != Some("udp");
    }
    let port = c.listen.map(|a| a.port()).unwrap_or(8555);
    for cand in raw.candidates.unwrap_or_default() {
        let v = cand.value.trim();
        if v.starts_with("stun:") {
            // go2rtc asks a STUN server for its public address; we have no
            // STUN client (and ask nothing of the outside world).
            warnings.push(format!(
                "{file}:{}:{}: webrtc.candidates: `{v}` needs a STUN lookup, which streamvisor does not do; give the public address as HOST:PORT (ignored)",
                cand.referenced.line(),
                cand.referenced.column()
            ));
            continue;
        }
        let (host, p) = split_host_port(v)
            .map_err(|m| at(&cand.referenced, format!("webrtc.candidates: `{v}`: {m}")))?;
        c.candidates.push((host, p.unwrap_or(port)));
    }
    for s in raw.ice_servers.unwrap_or_default() {
        let urls: Vec<String> = s.value.urls.0.into_iter().map(|u| u.value).collect();
        if urls.is_empty() {
            return Err(at(
                &s.referenced,
                "webrtc.ice_servers: an entry has no `urls`".into(),
            ));
        }
        // RFC 7064 §3.1 (stun:, stuns:), RFC 7065 §3.1 (turn:, turns:).
        if let Some(bad) = urls.iter().find(|u| {
            !["stun:", "stuns:", "turn:", "turns:"]
                .iter()
                .any(|p| u.starts_with(p))
        }) {
            return Err(at(
                &s.referenced,
                format!("webrtc.ice_servers: `{bad}` is not a stun:, stuns:, turn: or turns: URL"),
            ));
        }
        c.ice_servers.push(IceServer {
            urls,
            username: s.value.username,
            credential: s.value.credential,
        });
    }
    Ok(c)
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host_port(v: &str) -> Result<(String, Option<u16>), String> {
    let bad_port = |p: &str| format!("`{p}` is not a port");
    if let Some(rest) = v.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("no closing `]`")?;
        return match after.strip_prefix(':') {
            Some(p) => Ok((host.to_string(), Some(p.parse().map_err(|_| bad_port(p))?))),
            None if after.is_empty() => Ok((host.to_string(), None)),
            None => Err(format!("`{after}` after the address")),
        };
    }
    match v.rsplit_once(':') {
        _ if v.is_empty() => Err("empty".into()),
        Some((h, _)) if h.contains(':') => Ok((v.to_string(), None)), // a bare IPv6
        Some((h, p)) if !h.is_empty() => {
            Ok((h.to_string(), Some(p.parse().map_err(|_| bad_port(p))?)))
        }
        Some(_) => Err("no host".into()),
        None => Ok((v.to_string(), None)),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::parse;

    #[test]
    fn webrtc_settings() {
        let c = parse("streams: {}\n").unwrap();
        assert_eq!(c.webrtc.listen, Some("0.0.0.0:8555".parse().unwrap()));
        assert!(c.webrtc.udp && c.webrtc.tcp);
        let c = parse(concat!(
            "webrtc:\n",
            "  listen: \"127.0.0.1:9555/tcp\"\n",
            "  candidates: [\"example.org\", \"192.0.2.1:18555\", \"[2001:db8::1]:7\", \"stun:8555\"]\n",
            "  ice_servers:\n",
            "    - urls: stun:stun.example.org:3478\n",
            "    - urls: [\"turn:192.0.2.9:3478\"]\n",
            "      username: u\n",
            "      credential: p\n",
        ))
        .unwrap();
        assert_eq!(c.webrtc.listen, Some("127.0.0.1:9555".parse().unwrap()));
        assert!(c.webrtc.tcp && !c.webrtc.udp);
        assert_eq!(
            c.webrtc.candidates,
            vec![
                ("example.org".to_string(), 9555),
                ("192.0.2.1".to_string(), 18555),
                ("2001:db8::1".to_string(), 7)
            ]
        );
        assert!(
            c.warnings
                .iter()
                .any(|w| w.starts_with("s.yaml:3:") && w.contains("stun:8555")),
            "{:?}",
            c.warnings
        );
        assert_eq!(c.webrtc.ice_servers.len(), 2);
        assert_eq!(
            c.webrtc.ice_servers[0].urls,
            vec!["stun:stun.example.org:3478"]
        );
        assert_eq!(c.webrtc.ice_servers[1].credential.as_deref(), Some("p"));
        let c = parse("webrtc: {listen: \"\"}\n").unwrap();
        assert_eq!(c.webrtc.listen, None);

        let e = parse("webrtc:\n  listen: \":8555/sctp\"\n").unwrap_err();
        assert_eq!((e.line, e.col), (2, 11), "{e}");
        assert!(e.message.contains("/udp and /tcp"), "{e}");
        let e = parse("webrtc:\n  candidates: [\"host:port\"]\n").unwrap_err();
        assert!(e.message.contains("`port` is not a port"), "{e}");
        let e = parse("webrtc:\n  ice_servers:\n    - urls: [\"http://x\"]\n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(e.message.contains("`http://x` is not a stun:"), "{e}");
    }
}
