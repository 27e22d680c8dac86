//! go2rtc's API as Home Assistant uses it: stream CRUD persisted to the
//! config, source validation, schemes, preload, JPEG snapshots, Basic auth
//! and the unix socket. Against the real binary, with GStreamer's RTSP
//! server as the camera and HA's own client library (`go2rtc-client`).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// A request over a fresh connection: (status, headers, body).
fn request(port: u16, method: &str, path: &str, auth: Option<&str>) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = auth
        .map(|a| {
            use base64::Engine;
            format!(
                "Authorization: Basic {}\r\n",
                base64::engine::general_purpose::STANDARD.encode(a)
            )
        })
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

/// A GET whose body is bytes (a JPEG).
fn get_bytes(port: u16, path: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let at = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&buf[..at]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    (status, buf[at + 4..].to_vec())
}

fn put(srv: &Server, path: &str) -> (u16, String) {
    let (st, _, body) = request(srv.port, "PUT", path, None);
    (st, body)
}

/// Query-escapes a source for a URL (RFC 3986 unreserved kept).
fn q(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn urls(srv: &Server, stream: &str) -> Vec<String> {
    let (_, v) = srv.get_json(&format!("/api/streams?src={stream}"));
    v["producers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["url"].as_str().unwrap().to_string())
        .collect()
}

fn jpeg_width(path: &std::path::Path) -> u64 {
    let v = ffprobe(path.to_str().unwrap(), "codec_name,width,height", &[]);
    let s = &v["streams"][0];
    assert_eq!(s["codec_name"], "mjpeg", "{v}");
    s["width"].as_u64().unwrap()
}

#[test]
fn home_assistants_call_sequence() {
    let _p = heavy();
    let cam = Camera::start();
    let srv = Server::start("  other: rtsp://127.0.0.1:1/unused\n", "");
    let name = "camera.garden";

    // 1. The watchdog's version check.
    let (st, v) = srv.get_json("/api");
    assert_eq!(st, 200);
    let version = v["version"].as_str().unwrap();
    let parts: Vec<u32> = version.split('.').map(|p| p.parse().unwrap()).collect();
    assert!(
        parts >= vec![1, 9, 13] && parts < vec![2, 0, 0],
        "HA takes 1.9.13 <= version < 2.0.0, not {version}"
    );

    // 2. The list, then registration as HA does it.
    let (_, list) = srv.get_json("/api/streams");
    assert!(list.get(name).is_none());
    let sources = [
        cam.url.clone(),
        format!("ffmpeg:{name}#audio=opus#query=log_level=debug"),
        format!("ffmpeg:{name}#video=mjpeg"),
    ];
    let register = format!(
        "/api/streams?name={}&{}",
        q(name),
        sources
            .iter()
            .map(|s| format!("src={}", q(s)))
            .collect::<Vec<_>>()
            .join("&")
    );
    let (st, body) = put(&srv, &register);
    assert_eq!(st, 200, "{body}");
    assert_eq!(urls(&srv, name), sources, "urls echoed exactly");

    // A viewer; then the same PUT again (HA re-registers when in doubt):
    // nothing restarts, nobody is dropped.
    let (st, sock) = open_flv(srv.port, name);
    assert_eq!(st, 200);
    let viewer = Drain::new(sock);
    srv.wait_for("the camera producer", Duration::from_secs(15), || {
        !srv.producer_pids(name).is_empty() && viewer.bytes() > 10_000
    });
    let pids = srv.producer_pids(name);
    let (st, body) = put(&srv, &register);
    assert_eq!(st, 200, "{body}");
    let bytes = viewer.bytes();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        srv.producer_pids(name),
        pids,
        "an identical PUT restarted the producer"
    );
    assert!(
        viewer.bytes() > bytes,
        "an identical PUT dropped the viewer"
    );
    // An HTTP-FLV viewer takes neither Opus nor MJPEG: those transcoders
    // are not started.
    let (_, v) = srv.get_json(&format!("/api/streams?src={}", q(name)));
    let p = v["producers"].as_array().unwrap();
    assert_eq!(p[1]["state"], "idle", "{v}");
    assert_eq!(p[2]["state"], "idle", "{v}");

    // An MJPEG viewer starts the `#video=mjpeg` source and gets JPEGs.
    let mut m = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    m.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    write!(
        m,
        "GET /api/stream.mjpeg?src={} HTTP/1.1\r\nHost: x\r\n\r\n",
        q(name)
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    while !got.windows(4).any(|w| w == b"\r\n\xFF\xD8") && got.len() < 1 << 20 {
        let n = m.read(&mut buf).unwrap();
        assert!(n > 0, "mjpeg ended: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.contains("multipart/x-mixed-replace; boundary=frame"),
        "{text}"
    );
    assert!(
        text.contains("--frame\r\nContent-Type: image/jpeg"),
        "{text}"
    );
    let (_, v) = srv.get_json(&format!("/api/streams?src={}", q(name)));
    assert_eq!(v["producers"][2]["state"], "running", "{v}");
    drop(m);

    // 3. A snapshot at the width asked, within HA's 10 s.
    let out = srv.dir.path().join("snap.jpg");
    let t = Instant::now();
    // The camera is 320x240: ask for less, and get it.
    let (st, jpeg) = get_bytes(
        srv.port,
        &format!("/api/frame.jpeg?src={}&width=160", q(name)),
    );
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&jpeg));
    assert!(t.elapsed() < Duration::from_secs(10));
    std::fs::write(&out, jpeg).unwrap();
    assert_eq!(jpeg_width(&out), 160);
    // `cache=`: the same image again, without a new decode.
    let path = format!("/api/frame.jpeg?src={}&width=160&cache=10s", q(name));
    let (_, first) = get_bytes(srv.port, &path);
    let (_, again) = get_bytes(srv.port, &path);
    assert_eq!(first, again, "cache=10s served a new image");
    viewer.close();

    // 4. Schemes.
    let (_, v) = srv.get_json("/api/schemes");
    let schemes: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    for s in ["rtsp", "rtsps", "rtmp", "http", "https", "ffmpeg", "exec"] {
        assert!(schemes.contains(&s), "{s} missing from {v}");
    }

    // 5. Preload keeps the producer up with no viewer; deleting it lets go.
    srv.wait_for("the stream to stop", Duration::from_secs(10), || {
        srv.producer_pids(name).is_empty()
    });
    let (st, body) = put(
        &srv,
        &format!("/api/preload?src={}&video_codec_filter=h264,h265", q(name)),
    );
    assert_eq!(st, 200, "{body}");
    let (_, v) = srv.get_json("/api/preload");
    assert!(v[name]["query"].as_str().unwrap().contains("video"), "{v}");
    srv.wait_for("the preloaded producer", Duration::from_secs(15), || {
        !srv.producer_pids(name).is_empty()
    });
    let pid = srv.producer_pids(name);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        srv.producer_pids(name),
        pid,
        "the preload did not hold the producer"
    );
    let (_, v) = srv.get_json(&format!("/api/streams?src={}", q(name)));
    assert!(
        v["consumers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["protocol"] == "preload"),
        "{v}"
    );
    let (st, _, _) = request(
        srv.port,
        "DELETE",
        &format!("/api/preload?src={}", q(name)),
        None,
    );
    assert_eq!(st, 200);
    srv.wait_for("the producer to stop", Duration::from_secs(10), || {
        srv.producer_pids(name).is_empty()
    });
    let (st, _, _) = request(
        srv.port,
        "DELETE",
        &format!("/api/preload?src={}", q(name)),
        None,
    );
    assert_eq!(st, 404, "deleting a preload twice");

    // DELETE removes the stream and ends its viewers.
    let (st, sock) = open_flv(srv.port, name);
    assert_eq!(st, 200);
    let viewer = Drain::new(sock);
    srv.wait_for("frames", Duration::from_secs(15), || {
        viewer.bytes() > 10_000
    });
    let (st, _, _) = request(
        srv.port,
        "DELETE",
        &format!("/api/streams?src={}", q(name)),
        None,
    );
    assert_eq!(st, 200);
    let (st, _) = srv.get_json(&format!("/api/streams?src={}", q(name)));
    assert_eq!(st, 404);
    assert!(srv.producer_pids("other").is_empty());
    let b = viewer.bytes();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        viewer.bytes(),
        b,
        "a viewer of a deleted stream still gets data"
    );
}

#[test]
fn home_assistants_own_client_library_drives_us() {
    let _p = heavy();
    let pydeps = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pydeps");
    assert!(
        pydeps.join("go2rtc_client").exists(),
        "go2rtc-client is not installed in {} (scripts/test installs it)",
        pydeps.display()
    );
    let cam = Camera::start();
    let srv = Server::start("", "");
    let snap = srv.dir.path().join("ha.jpg");
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/ha_client.py");
    let (o, _) = run_with_timeout(
        Command::new("python3")
            .env("PYTHONPATH", &pydeps)
            .arg(script)
            .arg(srv.url("/"))
            .arg("camera_front")
            .arg(&cam.url)
            .arg(&snap),
        Duration::from_secs(60),
    );
    assert!(
        o.status.success(),
        "go2rtc-client failed:\n{}\n--- server log ---\n{}",
        String::from_utf8_lossy(&o.stderr),
        srv.log()
    );
    let out: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(out["urls"][0], cam.url.as_str());
    assert_eq!(jpeg_width(&snap), 160);
}

#[test]
fn api_sources_are_checked_and_errors_are_json() {
    let srv = Server::start("  cam: \"exec:true\"\n", "");
    for (path, want) in [
        ("/api/streams?name=x&src=exec%3Aid", "run commands"),
        ("/api/streams?name=x&src=echo%3Ahi", "run commands"),
        (
            "/api/streams?name=x&src=ffmpeg%3Artsp%3A%2F%2Fx%23raw%3D-ss%201",
            "whitespace",
        ),
        (
            "/api/streams?name=x&src=gopher%3A%2F%2Fx",
            "unknown source scheme",
        ),
        (
            "/api/streams?name=a%2Fb&src=rtsp%3A%2F%2Fx%2Fy",
            "stream name",
        ),
        ("/api/streams?src=", "stream name"),
        ("/api/streams", "name"),
    ] {
        let (st, body) = put(&srv, path);
        assert_eq!(st, 400, "{path}: {body}");
        let v: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|_| panic!("{path}: {body}"));
        assert!(
            v["error"].as_str().unwrap().contains(want),
            "{path}: {body}"
        );
    }
    // The config file may use exec:, and HA's hex-escaped names are fine.
    let (st, body) = put(
        &srv,
        "/api/streams?name=generic_cam%2521&src=rtsp%3A%2F%2F10.0.0.9%2Fs",
    );
    assert_eq!(st, 200, "{body}");
    assert_eq!(urls(&srv, &q("generic_cam%21")), ["rtsp://10.0.0.9/s"]);
    for path in [
        "/api/streams?src=nope",
        "/api/frame.jpeg?src=nope",
        "/api/frame.jpeg?src=cam&width=wide",
        "/api/preload?src=nope",
    ] {
        let (st, _, body) = request(srv.port, "GET", path, None);
        let v: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|_| panic!("{path}: {body}"));
        assert!(
            (400..500).contains(&st) || path.ends_with("preload?src=nope"),
            "{path}: {st}"
        );
        assert!(v.is_object(), "{path}: {body}");
    }
    let (st, _, body) = request(srv.port, "DELETE", "/api/streams?src=nope", None);
    assert_eq!(st, 404, "{body}");
    let (st, _, body) = request(
        srv.port,
        "PATCH",
        "/api/streams?name=nope&src=rtsp%3A%2F%2Fx%2Fy",
        None,
    );
    assert_eq!(st, 404, "{body}");
    // With api.allow_exec the API may add commands.
    let srv = Server::start("", "api: { allow_exec: true }\n");
    let (st, body) = put(&srv, "/api/streams?name=x&src=exec%3Aecho%20hi");
    assert!(st == 200, "{body}");
}

#[test]
fn changes_persist_across_a_restart_and_a_read_only_file_changes_nothing() {
    let mut srv = Server::start("  # the first camera\n  cam: rtsp://10.0.0.2/s\n", "");
    let (st, body) = put(
        &srv,
        "/api/streams?name=door&src=rtsp%3A%2F%2F10.0.0.3%2Fs&src=ffmpeg%3Adoor%23audio%3Daac",
    );
    assert_eq!(st, 200, "{body}");
    let (st, body) = put(&srv, "/api/preload?src=door&video=h264");
    assert_eq!(st, 200, "{body}");
    let text = std::fs::read_to_string(&srv.config).unwrap();
    assert!(
        text.contains("  # the first camera\n  cam: rtsp://10.0.0.2/s\n"),
        "{text}"
    );
    // Restarted on the same file, it has what the API added.
    srv.restart();
    assert_eq!(
        urls(&srv, "door"),
        ["rtsp://10.0.0.3/s", "ffmpeg:door#audio=aac"]
    );
    let (_, v) = srv.get_json("/api/preload");
    assert_eq!(v["door"]["query"], "video=h264", "{v}");

    // Read-only: 5xx with the reason, and nothing changes.
    let mut perm = std::fs::metadata(&srv.config).unwrap().permissions();
    perm.set_readonly(true);
    std::fs::set_permissions(&srv.config, perm).unwrap();
    let before = std::fs::read_to_string(&srv.config).unwrap();
    let (_, list_before) = srv.get_json("/api/streams");
    let (st, body) = put(&srv, "/api/streams?name=new&src=rtsp%3A%2F%2F10.0.0.4%2Fs");
    assert_eq!(st, 500, "{body}");
    assert!(body.contains("read-only"), "{body}");
    let (st, _, body) = request(srv.port, "DELETE", "/api/streams?src=door", None);
    assert_eq!(st, 500, "{body}");
    let (_, list_after) = srv.get_json("/api/streams");
    assert_eq!(
        list_before.as_object().unwrap().keys().collect::<Vec<_>>(),
        list_after.as_object().unwrap().keys().collect::<Vec<_>>()
    );
    assert_eq!(std::fs::read_to_string(&srv.config).unwrap(), before);
}

#[test]
fn basic_auth_with_loopback_exempt_unless_local_auth() {
    let srv = Server::start("", "api: { username: admin, password: s3cret }\n");
    // Loopback is exempt by default (go2rtc's rule).
    let (st, _, _) = request(srv.port, "GET", "/api/streams", None);
    assert_eq!(st, 200);
    drop(srv);
    let srv = Server::start(
        "",
        "api: { username: admin, password: s3cret, local_auth: true }\n",
    );
    for (auth, want) in [
        (None, 401),
        (Some("admin:wrong"), 401),
        (Some("admin:s3cret"), 200),
    ] {
        let (st, head, body) = request(srv.port, "GET", "/api/streams", auth);
        assert_eq!(st, want, "{auth:?}: {head}");
        if want == 401 {
            assert!(
                head.to_ascii_lowercase()
                    .contains("www-authenticate: basic"),
                "{head}"
            );
            assert!(body.contains("\"error\""), "{body}");
        }
    }
    let (st, _, _) = request(
        srv.port,
        "PUT",
        "/api/streams?name=x&src=rtsp%3A%2F%2Fh%2Fp",
        None,
    );
    assert_eq!(st, 401, "writes need auth too");
}

#[test]
fn the_api_answers_on_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let srv = Server::start(
        "",
        &format!("api: {{ unix_listen: \"{}\" }}\n", sock.display()),
    );
    let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /api HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("\"version\""), "{resp}");
    drop(srv);
}

#[test]
fn home_assistants_opus_source_is_served_over_rtsp_and_only_when_asked() {
    let _p = heavy();
    let cam = Camera::start();
    let rtsp = free_port();
    let srv = Server::start(
        &format!(
            "  cam:\n    - {}\n    - \"ffmpeg:cam#audio=opus#query=log_level=debug\"\n",
            cam.url
        ),
        &format!("rtsp: {{ listen: \"127.0.0.1:{rtsp}\" }}\n"),
    );
    // HTTP-FLV: the camera alone (FLV carries no Opus).
    let (st, sock) = open_flv(srv.port, "cam");
    assert_eq!(st, 200);
    let viewer = Drain::new(sock);
    srv.wait_for("the camera", Duration::from_secs(15), || {
        viewer.bytes() > 10_000
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        srv.producer_pids("cam").len(),
        1,
        "the Opus transcoder started for FLV"
    );
    viewer.close();
    // RTSP `?audio=opus`: the transcoder publishes Opus back, and the viewer
    // gets the camera's H.264 with it.
    let url = format!("rtsp://127.0.0.1:{rtsp}/cam?video&audio=opus");
    let v = ffprobe(
        &url,
        "codec_name,sample_rate,channels",
        &["-rtsp_transport", "tcp"],
    );
    let streams = v["streams"].as_array().unwrap();
    assert!(streams.iter().any(|s| s["codec_name"] == "h264"), "{v}");
    assert!(
        streams
            .iter()
            .any(|s| s["codec_name"] == "opus" && s["sample_rate"] == "48000"),
        "{v}"
    );
    // The Opus itself, recorded and decoded.
    let out = srv.dir.path().join("opus.ogg");
    let audio_only = format!("rtsp://127.0.0.1:{rtsp}/cam?audio=opus");
    let (o, _) = run_with_timeout(
        Command::new("ffmpeg")
            .args([
                "-v",
                "error",
                "-y",
                "-rtsp_transport",
                "tcp",
                "-i",
                &audio_only,
            ])
            .args(["-t", "4", "-c", "copy"])
            .arg(&out),
        Duration::from_secs(30),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_decodes_cleanly(&out, "RTSP with Opus");
}

#[test]
fn no_query_string_makes_a_handler_fail_to_answer() {
    let srv = Server::start("  cam: \"exec:true\"\n", "");
    let values = [
        "",
        "%",
        "%zz",
        "%00",
        "%FF%FE",
        "..",
        "../../etc/passwd",
        "-1",
        "99999999999999999999",
        "0",
        "cam",
        "nope",
        "a%20b",
        "%E2%80%AE",
        "exec%3Arm",
        "rtsp%3A%2F%2F",
        "1s",
        "-5s",
        "NaN",
        "%0D%0AX:%20y",
    ];
    let keys = [
        "src", "name", "dst", "width", "w", "height", "h", "cache", "video", "audio", "internal",
        "exclude", "mp4",
    ];
    let paths = [
        "/api/streams",
        "/api/frame.jpeg",
        "/api/preload",
        "/api/schemes",
        "/api/stream.m3u8",
        "/api",
    ];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    for _ in 0..150 {
        let path = paths[next(paths.len())];
        let method = ["GET", "PUT", "PATCH", "DELETE"][next(4)];
        let query: Vec<String> = (0..next(4))
            .map(|_| format!("{}={}", keys[next(keys.len())], values[next(values.len())]))
            .collect();
        let url = format!("{path}?{}", query.join("&"));
        let (st, head, body) = request(srv.port, method, &url, None);
        assert!(
            (200..600).contains(&st),
            "{method} {url}: no answer ({head})"
        );
        if st >= 400 && st != 405 {
            assert!(
                serde_json::from_str::<serde_json::Value>(&body).is_ok(),
                "{method} {url}: {st} without a JSON body: {body}"
            );
        }
    }
    assert!(!srv.log().contains("panicked"), "{}", srv.log());
    let (st, _) = srv.get_json("/api");
    assert_eq!(st, 200);
}

#[test]
fn our_own_readers_log_in_when_loopback_needs_auth_too() {
    let _p = heavy();
    let srv = Server::start(
        &format!(
            "  cam:\n    - \"{}\"\n    - \"ffmpeg:cam#audio=aac\"\n",
            demo_source(25)
        ),
        "api: { username: admin, password: \"p@ss word\", local_auth: true }\n",
    );
    let mut s = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    {
        use base64::Engine;
        let auth = base64::engine::general_purpose::STANDARD.encode("admin:p@ss word");
        write!(
            s,
            "GET /api/stream.flv?src=cam HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n\r\n"
        )
        .unwrap();
    }
    let viewer = Drain::new(s);
    let producers = || {
        let (_, _, body) = request(
            srv.port,
            "GET",
            "/api/streams?src=cam",
            Some("admin:p@ss word"),
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["producers"].as_array().unwrap().clone()
    };
    srv.wait_for(
        "the transcoder reading the stream back",
        Duration::from_secs(20),
        || producers()[1]["bytes"].as_u64().unwrap_or(0) > 1000,
    );
    assert!(viewer.bytes() > 10_000);
    assert!(
        !srv.log().contains("p@ss") && !srv.log().contains("p%40ss"),
        "the password is in the log"
    );
}

#[test]
fn a_put_with_other_sources_restarts_the_stream_cleanly() {
    let _p = heavy();
    let srv = Server::start(&format!("  cam: \"{}\"\n", demo_source(25)), "");
    let (st, sock) = open_flv(srv.port, "cam");
    assert_eq!(st, 200);
    let viewer = Drain::new(sock);
    srv.wait_for("frames", Duration::from_secs(15), || {
        viewer.bytes() > 10_000
    });
    let old = srv.producer_pids("cam");
    assert_eq!(old.len(), 1);
    let other = demo_source_sized(25, "160x120");
    let (st, body) = put(&srv, &format!("/api/streams?name=cam&src={}", q(&other)));
    // exec: through the API needs allow_exec: refused, nothing changes.
    assert_eq!(st, 400, "{body}");
    assert_eq!(srv.producer_pids("cam"), old);
    drop(srv);

    let srv = Server::start(
        &format!("  cam: \"{}\"\n", demo_source(25)),
        "api: { allow_exec: true }\n",
    );
    let (st, sock) = open_flv(srv.port, "cam");
    assert_eq!(st, 200);
    let viewer = Drain::new(sock);
    srv.wait_for("frames", Duration::from_secs(15), || {
        viewer.bytes() > 10_000
    });
    let old = srv.producer_pids("cam");
    let (st, body) = put(&srv, &format!("/api/streams?name=cam&src={}", q(&other)));
    assert_eq!(st, 200, "{body}");
    // The old run is gone (its whole group), its viewer ended; the stream
    // serves the new sources to the next viewer.
    assert!(group_members(old[0]).is_empty(), "old producer still alive");
    // What was in flight may still be read (a loaded machine); then
    // nothing more comes.
    srv.wait_for(
        "the old run's viewer to get nothing more",
        Duration::from_secs(5),
        || {
            let b = viewer.bytes();
            std::thread::sleep(Duration::from_millis(500));
            viewer.bytes() == b
        },
    );
    assert_eq!(urls(&srv, "cam"), std::slice::from_ref(&other));
    let v = ffprobe(&srv.url("/api/stream.flv?src=cam"), "codec_name,width", &[]);
    assert!(
        v["streams"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["width"] == 160),
        "{v}"
    );
}
