//! Issue 15, who may come in: one credential model for RTMP as for HTTP and
//! RTSP, no publisher over a configured camera, and no help for another
//! site's page (DNS rebinding, cross-site POSTs, WebSocket hijacking,
//! CORS). Real binary, real ffmpeg and rtmpdump, loopback only.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// One request with the given extra header lines over a fresh connection:
/// (status, head, body).
fn raw(port: u16, method: &str, path: &str, headers: &str, body: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut buf = Vec::new();
    // A WebSocket upgrade keeps the connection: read the head only.
    let mut b = [0u8; 4096];
    loop {
        match s.read(&mut b) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&b[..n]),
        }
        let text = String::from_utf8_lossy(&buf);
        if text.starts_with("HTTP/1.1 101") && text.contains("\r\n\r\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_string())
}

const BASIC: &str = "Authorization: Basic YWRtaW46czNjcmV0\r\n"; // admin:s3cret

/// ffprobe of `url`: the codec names it found, empty if it got nothing.
fn probe(url: &str) -> Vec<String> {
    let (out, _) = run_with_timeout(
        Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-rw_timeout",
                "8000000",
                "-show_entries",
                "stream=codec_name",
                "-of",
                "csv=p=0",
            ])
            .arg(url),
        Duration::from_secs(20),
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// The url of whoever publishes into `stream` now, per the API.
fn publisher_of(srv: &Server, stream: &str) -> Option<String> {
    // Credentials where they are asked (ignored where they are not).
    let (_, _, body) = raw(
        srv.port,
        "GET",
        &format!("/api/streams?src={stream}"),
        &format!("Host: 127.0.0.1\r\n{BASIC}"),
        "",
    );
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    v["producers"].as_array()?.iter().find_map(|p| {
        let u = p["url"].as_str()?;
        u.contains("(publisher)").then(|| u.to_string())
    })
}

/// Waits up to `secs` for a process to exit by itself; kills it otherwise.
/// Whether it exited by itself.
fn exits_within(c: &mut std::process::Child, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if c.try_wait().unwrap().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    signal(c.id(), 9);
    let _ = c.wait();
    false
}

#[test]
fn rtmp_play_and_publish_need_the_credentials_once_they_are_set() {
    let _p = heavy();
    let rtmp = free_port();
    // local_auth: loopback is the LAN here.
    let srv = Server::start(
        &format!("  demo: \"{}\"\n  obs:\n", demo_source(25)),
        &format!(
            "api: {{ username: admin, password: s3cret, local_auth: true }}\n\
             rtmp: {{ listen: \"127.0.0.1:{rtmp}\" }}\n"
        ),
    );
    let base = format!("rtmp://127.0.0.1:{rtmp}/live");

    // Play: ffmpeg's client, without, with wrong and with right credentials.
    assert!(
        probe(&format!("{base}/demo")).is_empty(),
        "played without credentials"
    );
    assert!(
        probe(&format!("{base}/demo?user=admin&pass=nope")).is_empty(),
        "played with a wrong password"
    );
    let got = probe(&format!("{base}/demo?user=admin&pass=s3cret"));
    assert!(
        got.contains(&"h264".to_string()),
        "with credentials: {got:?}\n{}",
        srv.log()
    );

    // Play: librtmp (rtmpdump), the key in -y as OBS-style players send it.
    for (key, want) in [("demo", false), ("demo?user=admin&pass=s3cret", true)] {
        let out = srv.dir.path().join("dump.flv");
        let _ = std::fs::remove_file(&out);
        let mut dump = Command::new("rtmpdump")
            .args(["-q", "--live", "-r", &base, "-a", "live", "-y", key, "-o"])
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_secs(3));
        signal(dump.id(), 2);
        let _ = dump.wait();
        let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
        assert_eq!(size > 20_000, want, "rtmpdump -y {key}: {size} bytes");
    }

    // Publish into the publish-only stream: refused, then let in.
    let clip = clip(srv.dir.path());
    let mut p = push_to(&clip, &format!("{base}/obs"));
    assert!(
        exits_within(&mut p, 15),
        "a publisher without credentials was kept"
    );
    assert_eq!(publisher_of(&srv, "obs"), None);
    assert!(srv
        .log()
        .contains("rtmp publish refused: bad or no credentials"));
    let mut p = push_to(&clip, &format!("{base}/obs?user=admin&pass=s3cret"));
    srv.wait_for("the publisher", Duration::from_secs(10), || {
        publisher_of(&srv, "obs").is_some()
    });
    signal(p.id(), 9);
    let _ = p.wait();
    // The password never reaches the log (the key's query is not a name).
    assert!(!srv.log().contains("s3cret"), "{}", srv.log());
}

#[test]
fn rtmp_without_credentials_configured_stays_open() {
    let _p = heavy();
    let rtmp = free_port();
    let srv = Server::start(
        &format!("  demo: \"{}\"\n", demo_source(25)),
        &format!("rtmp: {{ listen: \"127.0.0.1:{rtmp}\" }}\n"),
    );
    let got = probe(&format!("rtmp://127.0.0.1:{rtmp}/live/demo"));
    assert!(got.contains(&"h264".to_string()), "{got:?}\n{}", srv.log());
}

#[test]
fn a_publisher_never_replaces_a_configured_camera_unless_the_config_says_so() {
    let _p = heavy();
    let (rtsp, rtmp) = (free_port(), free_port());
    let srv = Server::start(
        &format!("  cam: \"{}\"\n", demo_source(25)),
        &format!(
            "rtsp: {{ listen: \"127.0.0.1:{rtsp}\" }}\nrtmp: {{ listen: \"127.0.0.1:{rtmp}\" }}\n"
        ),
    );
    // The camera is up and watched.
    let reader = Drain::new(open_flv(srv.port, "cam").1);
    srv.wait_for("the camera", Duration::from_secs(10), || {
        reader.bytes() > 10_000
    });
    let pids = srv.producer_pids("cam");
    assert_eq!(pids.len(), 1);

    let clip = clip(srv.dir.path());
    // RTMP and RTSP publishers are refused…
    for url in [
        format!("rtmp://127.0.0.1:{rtmp}/live/cam"),
        format!("rtsp://127.0.0.1:{rtsp}/cam"),
    ] {
        let mut p = push_to(&clip, &url);
        assert!(exits_within(&mut p, 15), "{url}: the publisher was kept");
        assert_eq!(publisher_of(&srv, "cam"), None, "{url}");
    }
    // …and so is go2rtc's HTTP publish, with a 403 naming the stream.
    let flv = std::fs::read(&clip).unwrap_or_default();
    let mut s = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /api/stream.flv?dst=cam HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        flv.len()
    )
    .unwrap();
    let _ = s.write_all(&flv);
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    assert!(resp.contains("replace_sources"), "{resp}");

    // The camera never stopped.
    assert_eq!(srv.producer_pids("cam"), pids);
    let before = reader.bytes();
    srv.wait_for("more of the camera", Duration::from_secs(5), || {
        reader.bytes() > before + 10_000
    });
}

#[test]
fn a_page_on_another_site_gets_nothing_from_the_loopback_exemption() {
    let srv = Server::start("  obs:\n", "api: { username: admin, password: s3cret }\n");
    let port = srv.port;
    let me = format!("Host: 127.0.0.1:{port}\r\n");

    // The loopback exemption needs a loopback Host too (DNS rebinding).
    for (host, want) in [
        (format!("Host: 127.0.0.1:{port}\r\n"), 200),
        (format!("Host: localhost:{port}\r\n"), 200),
        ("Host: [::1]\r\n".to_string(), 200),
        (format!("Host: attacker.example:{port}\r\n"), 401),
        ("".to_string(), 401),
    ] {
        let (status, _, _) = raw(port, "GET", "/api/streams", &host, "");
        assert_eq!(status, want, "{host:?}");
    }
    let (status, _, _) = raw(
        port,
        "GET",
        "/api/streams",
        &format!("Host: attacker.example\r\n{BASIC}"),
        "",
    );
    assert_eq!(status, 200, "credentials work under any name");

    // A cross-site POST (text/plain needs no preflight) changes nothing,
    // with or without credentials: the config is not reloaded, nothing is
    // published.
    let evil = "Origin: https://attacker.example\r\nContent-Type: text/plain\r\n";
    for path in [
        "/api/restart",
        "/api/stream.flv?dst=obs",
        "/api/streams?src=x&name=x",
    ] {
        let method = if path.starts_with("/api/streams") {
            "PUT"
        } else {
            "POST"
        };
        for creds in ["", BASIC] {
            let (status, _, body) = raw(port, method, path, &format!("{me}{evil}{creds}"), "x");
            assert_eq!(status, 403, "{method} {path}: {body}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert!(
                v["error"].as_str().unwrap().contains("api.origin"),
                "{body}"
            );
        }
    }
    assert!(!srv.log().contains("config reloaded"), "{}", srv.log());
    let (_, v) = srv.get_json("/api/streams");
    assert!(v.get("x").is_none(), "{v}");
    // The same POST from our own page, or from a client that is no page
    // at all (curl, Home Assistant), goes ahead.
    let own = format!("Origin: http://127.0.0.1:{port}\r\n");
    let (status, _, body) = raw(port, "POST", "/api/restart", &format!("{me}{own}"), "");
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = raw(port, "POST", "/api/restart", &me, "");
    assert_eq!(status, 200, "{body}");
    assert!(srv.log().contains("config reloaded"), "{}", srv.log());

    // WebSocket: CORS does not cover it, so a foreign Origin is refused.
    let ws = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let (status, _, _) = raw(
        port,
        "GET",
        "/api/ws?src=obs",
        &format!("{me}{ws}Origin: https://attacker.example\r\n"),
        "",
    );
    assert_eq!(status, 403);
    let (status, _, _) = raw(
        port,
        "GET",
        "/api/ws?src=obs",
        &format!("{me}{ws}{own}"),
        "",
    );
    assert_eq!(status, 101);

    // No CORS header without api.origin, not even on media.
    let (_, head, _) = raw(
        port,
        "GET",
        "/api/streams",
        &format!("{me}Origin: https://attacker.example\r\n"),
        "",
    );
    assert!(!head.contains("access-control-allow-origin"), "{head}");
}

#[test]
fn api_origin_opens_cors_to_the_origins_it_names_only() {
    let srv = Server::start("  obs:\n", "api: { origin: \"https://ha.example:8123\" }\n");
    let port = srv.port;
    let me = format!("Host: 127.0.0.1:{port}\r\n");
    let ha = "Origin: https://ha.example:8123\r\n";
    let (status, head, _) = raw(port, "GET", "/api/streams", &format!("{me}{ha}"), "");
    assert_eq!(status, 200);
    assert!(
        head.contains("access-control-allow-origin: https://ha.example:8123"),
        "{head}"
    );
    // A preflight for a PUT from that origin, then the PUT itself.
    let (status, head, _) = raw(
        port,
        "OPTIONS",
        "/api/streams?src=x",
        &format!("{me}{ha}Access-Control-Request-Method: PUT\r\n"),
        "",
    );
    assert_eq!(status, 204, "{head}");
    assert!(head.contains("access-control-allow-methods"), "{head}");
    let (status, _, body) = raw(port, "POST", "/api/restart", &format!("{me}{ha}"), "");
    assert_eq!(status, 200, "{body}");
    // Another origin: no header, and no change.
    let other = "Origin: https://attacker.example\r\n";
    let (_, head, _) = raw(port, "GET", "/api/streams", &format!("{me}{other}"), "");
    assert!(!head.contains("access-control-allow-origin"), "{head}");
    let (status, _, _) = raw(port, "POST", "/api/restart", &format!("{me}{other}"), "");
    assert_eq!(status, 403);
}

#[test]
fn a_client_that_is_not_trusted_sees_no_camera_password() {
    // No credentials set: anyone may watch, but a source's password is
    // for this machine (Home Assistant's managed go2rtc compares urls) and
    // for whoever gives the credentials, not for the LAN. A loopback peer
    // under a name of ours that is not loopback stands in for a LAN host.
    let srv = Server::start(
        "  cam: rtsp://admin:pw0rd@127.0.0.1:9/x\n",
        "api: { hosts: [nvr.example] }\n",
    );
    let (status, _, body) = raw(srv.port, "GET", "/api/streams", "Host: nvr.example\r\n", "");
    assert_eq!(status, 200);
    assert!(!body.contains("pw0rd"), "{body}");
    assert!(body.contains("rtsp://admin:***@127.0.0.1:9/x"), "{body}");
    let (_, _, body) = raw(
        srv.port,
        "GET",
        "/api/streams?src=cam",
        "Host: nvr.example\r\n",
        "",
    );
    assert!(!body.contains("pw0rd") && body.contains("***"), "{body}");
    let (_, _, body) = raw(srv.port, "GET", "/api/streams", "Host: 127.0.0.1\r\n", "");
    assert!(body.contains("rtsp://admin:pw0rd@127.0.0.1:9/x"), "{body}");
}

#[test]
fn either_sections_credentials_bind_http_and_rtsp_alike() {
    // Only api's pair is set, with local_auth: RTSP asks for it too (it
    // used to be open), and takes it.
    let rtsp = free_port();
    let srv = Server::start(
        "  obs:\n",
        &format!(
            "api: {{ username: admin, password: s3cret, local_auth: true }}\n\
             rtsp: {{ listen: \"127.0.0.1:{rtsp}\" }}\n"
        ),
    );
    let url = format!("rtsp://127.0.0.1:{rtsp}/obs");
    let mut c = RtspClient::connect(rtsp);
    let (status, _, _) = c.request("DESCRIBE", &url, &[]);
    assert_eq!(status, 401);
    let (status, _, _) = c.request(
        "DESCRIBE",
        &url,
        &[("Authorization", "Basic YWRtaW46bm9wZQ==".into())], // admin:nope
    );
    assert_eq!(status, 401);
    let (status, _, body) = c.request(
        "DESCRIBE",
        &url,
        &[("Authorization", "Basic YWRtaW46czNjcmV0".into())], // admin:s3cret
    );
    assert_ne!(status, 401, "{body}");
    drop(c);

    // Only rtsp's pair is set: HTTP asks for it, and takes it.
    let srv2 = Server::start(
        "  obs:\n",
        "rtsp: { listen: \"\", username: cam, password: r0, local_auth: true }\n",
    );
    let me = "Host: 127.0.0.1\r\n";
    let (status, _, _) = raw(srv2.port, "GET", "/api/streams", me, "");
    assert_eq!(status, 401);
    let (status, _, _) = raw(
        srv2.port,
        "GET",
        "/api/streams",
        &format!("{me}Authorization: Basic Y2FtOnIw\r\n"), // cam:r0
        "",
    );
    assert_eq!(status, 200);
    drop(srv);
}

#[test]
fn with_no_credentials_a_dns_rebinding_name_is_refused() {
    // No credentials: a page that made its own name resolve to us would
    // otherwise have everything a LAN host has. Names strangers' DNS
    // cannot hand out are served, and so are the configured api.hosts.
    let srv = Server::start("  obs:\n", "api: { hosts: [cams.example.com] }\n");
    for (host, want) in [
        ("attacker.example", 403),
        ("attacker.example:1984", 403),
        ("192.168.1.5.nip.io", 403),
        ("127.0.0.1", 200),
        ("localhost:1984", 200),
        ("192.168.1.5:1984", 200),
        ("[fd00::5]", 200),
        ("nvr", 200),
        ("nvr.local:1984", 200),
        ("nvr.home.arpa", 200),
        ("cams.example.com", 200),
    ] {
        let (status, _, body) = raw(
            srv.port,
            "GET",
            "/api/streams",
            &format!("Host: {host}\r\n"),
            "",
        );
        assert_eq!(status, want, "{host}: {body}");
        if want == 403 {
            assert!(body.contains("api.hosts"), "{body}");
        }
    }
    // Media and the WebSocket alike.
    let (status, _, _) = raw(
        srv.port,
        "GET",
        "/api/stream.flv?src=obs",
        "Host: attacker.example\r\n",
        "",
    );
    assert_eq!(status, 403);
}

#[test]
fn a_body_over_the_bound_is_refused_unread() {
    let srv = Server::start("  obs:\n", "");
    let mut s = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // 100 MB announced, none sent: the answer comes at once.
    write!(
        s,
        "POST /api/restart HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000000\r\n\r\n"
    )
    .unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(head.contains("\"limit\""), "{head}");
    assert!(!srv.log().contains("config reloaded"), "{}", srv.log());
}
