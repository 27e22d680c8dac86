//! Issue 15, "no secret leaves where it belongs": internal readers log in
//! with a per-run token, `api.listen: ""` opens no API over TCP, `${VAR}`
//! comes only from the file and stays a reference in it, the API cannot
//! add local files, and a FIFO at the config path cannot hang a reload.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{demo_source, heavy, Server};

const AUTH: &str = "api: { username: admin, password: s3cret, local_auth: true }\n";

/// `admin:s3cret`, base64.
fn basic() -> String {
    // RFC 4648 base64 of "admin:s3cret".
    "YWRtaW46czNjcmV0".to_string()
}

/// Sends one request with `extra` headers over `s` and returns the status
/// and the head (the body is left unread: it may be endless).
fn request_head<S: Read + Write>(
    s: &mut S,
    method: &str,
    path: &str,
    extra: &str,
) -> (u16, String) {
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => break,
        }
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head)
}

fn tcp(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// A whole (bounded) answer: status and body.
fn request<S: Read + Write>(mut s: S, method: &str, path: &str, extra: &str) -> (u16, String) {
    let (status, _) = request_head(&mut s, method, path, extra);
    let mut body = Vec::new();
    let _ = s.read_to_end(&mut body);
    (status, String::from_utf8_lossy(&body).to_string())
}

/// Reads until `n` bytes came, or panics after `timeout`.
fn read_bytes<S: Read>(s: &mut S, n: usize, what: &str) {
    let mut got = 0;
    let mut buf = [0u8; 8192];
    while got < n {
        match s.read(&mut buf) {
            Ok(0) => panic!("{what}: EOF after {got} bytes"),
            Ok(k) => got += k,
            Err(e) => panic!("{what}: {e} after {got} bytes"),
        }
    }
}

/// Every live descendant of `pid`, with its command line (NULs as spaces).
fn descendants(pid: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        for c in common::children_of(p) {
            let cmd = std::fs::read(format!("/proc/{c}/cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default();
            out.push((c, cmd));
            todo.push(c);
        }
    }
    out
}

#[test]
fn internal_readers_log_in_with_a_run_token_not_the_password() {
    let _p = heavy();
    let srv = Server::start(
        &format!("  a: \"{}\"\n  b: \"ffmpeg:a\"\n", demo_source(25)),
        AUTH,
    );
    let auth = format!("Authorization: Basic {}\r\n", basic());
    // `a` runs for a viewer; `b` reads it back through our HTTP-FLV (RTSP
    // is off in this test).
    let mut va = tcp(srv.port);
    let (st, head) = request_head(&mut va, "GET", "/api/stream.flv?src=a", &auth);
    assert_eq!(st, 200, "{head}\n{}", srv.log());
    read_bytes(&mut va, 20_000, "viewer of a");
    let mut vb = tcp(srv.port);
    let (st, head) = request_head(&mut vb, "GET", "/api/stream.flv?src=b", &auth);
    assert_eq!(st, 200, "{head}\n{}", srv.log());
    // b plays: its only source is the internal read of a.
    read_bytes(&mut vb, 20_000, "viewer of b");

    let procs = descendants(srv.pid());
    let reader = procs
        .iter()
        .find(|(_, c)| c.contains("token="))
        .unwrap_or_else(|| panic!("no internal reader among {procs:?}"));
    for (pid, cmd) in &procs {
        assert!(
            !cmd.contains("s3cret"),
            "pid {pid} shows the password: {cmd}"
        );
    }
    let token = reader
        .1
        .split("token=")
        .nth(1)
        .map(|t| t.split(|c: char| !c.is_ascii_hexdigit()).next().unwrap())
        .unwrap_or_else(|| panic!("internal reader without a token: {}", reader.1))
        .to_string();
    assert!(token.len() >= 32, "{token}");

    // The token reads the stream it was made for, and nothing else.
    let (st, body) = request(
        tcp(srv.port),
        "GET",
        &format!("/api/streams?token={token}"),
        "",
    );
    assert_eq!(st, 401, "{body}");
    // A token for reading a does not read b: without the password the
    // auth layer refuses, with it the handler does.
    let other = format!("/api/stream.flv?src=b&internal=1&token={token}");
    let (st, body) = request(tcp(srv.port), "GET", &other, "");
    assert_eq!(st, 401, "{body}");
    let (st, body) = request(tcp(srv.port), "GET", &other, &auth);
    assert_eq!(st, 403, "{body}");
    assert!(body.contains("token"), "{body}");

    let (st, list) = request(tcp(srv.port), "GET", "/api/streams", &auth);
    assert_eq!(st, 200, "{list}");
    assert!(!list.contains("s3cret"), "{list}");
    // `b` reading `a` is an ordinary viewer of it (issue 16: it starts `a`
    // and keeps it up), though it logged in with a token.
    assert!(!list.contains("\"internal\":true"), "{list}");
    let log = srv.log();
    assert!(!log.contains("s3cret"), "{log}");
    assert!(!log.contains(&token), "the log shows the token:\n{log}");
}

#[test]
fn internal_without_a_valid_token_is_refused() {
    let _p = heavy();
    let srv = Server::start(&format!("  a: \"{}\"\n", demo_source(25)), "");
    let mut va = tcp(srv.port);
    let (st, _) = request_head(&mut va, "GET", "/api/stream.flv?src=a", "");
    assert_eq!(st, 200, "{}", srv.log());
    read_bytes(&mut va, 10_000, "viewer of a");
    for q in [
        "src=a&internal=1",
        "src=a&internal=1&token=",
        "src=a&internal=true&token=0123456789abcdef0123456789abcdef",
    ] {
        let mut s = tcp(srv.port);
        let (st, head) = request_head(&mut s, "GET", &format!("/api/stream.flv?{q}"), "");
        assert_eq!(st, 403, "{q}: {head}");
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        let v: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{q}: {e}: {body}"));
        assert!(v["error"].as_str().is_some(), "{body}");
    }
}

/// The server binary on a config of our own, with extra environment.
struct Own {
    child: Child,
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Own {
    fn start(config: &str, env: &[(&str, &str)], ready: impl Fn(&Path) -> bool) -> Own {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("streams.yaml");
        std::fs::write(
            &path,
            config.replace("DIR", &dir.path().display().to_string()),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let child = Command::new(common::bin())
            .arg("-c")
            .arg(&path)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut own = Own {
            child,
            dir,
            config: path,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ready(own.dir.path()) {
            if let Some(st) = own.child.try_wait().unwrap() {
                panic!("server exited with {st}:\n{}", own.log());
            }
            assert!(
                Instant::now() < deadline,
                "server not ready:\n{}",
                own.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        own
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for Own {
    fn drop(&mut self) {
        common::signal(self.child.id(), 15);
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn api_input_is_never_expanded_and_a_put_keeps_references() {
    let port = common::free_port();
    let config = format!(
        "api: {{ listen: \"127.0.0.1:{port}\" }}\nrtsp: {{ listen: \"\" }}\nrtmp: {{ listen: \"\" }}\n\
         webrtc: {{ listen: \"\" }}\nstreams:\n  garden: rtsp://admin:${{CAM_PASS}}@127.0.0.1:9/s\n\
         \x20 door:\n    - rtsp://127.0.0.1:9/door\n    - \"ffmpeg:door#audio=aac\"\n"
    );
    let srv = Own::start(&config, &[("CAM_PASS", "hunter22")], |_| {
        common::http(port, "GET", "/api").is_ok_and(|r| r.0 == 200)
    });
    let file = || std::fs::read_to_string(&srv.config).unwrap();
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());

    // `${HOME}` from the API: refused, naming the parameter.
    for (q, param) in [
        ("name=x&src=rtsp://host/%24%7BHOME%7D", "src"),
        ("name=%24%7BHOME%7D&src=rtsp://host/s", "name"),
    ] {
        let (st, body) = common::http(port, "PUT", &format!("/api/streams?{q}")).unwrap();
        assert_eq!(st, 400, "{q}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["parameter"], param, "{body}");
    }
    assert!(!file().contains(&home), "{}", file());
    let (_, list) = common::http(port, "GET", "/api/streams").unwrap();
    assert!(!list.contains(&home), "{list}");
    assert!(!list.contains("\"x\""), "{list}");

    // A PUT of another stream and a PATCH of the stream with the reference
    // (as a client that echoes /api/streams' url sends it): every
    // `${CAM_PASS}` stays as written.
    let (st, body) = common::http(
        port,
        "PUT",
        "/api/streams?name=other&src=rtsp://127.0.0.1:9/o",
    )
    .unwrap();
    assert_eq!(st, 200, "{body}");
    let (st, body) = common::http(
        port,
        "PATCH",
        "/api/streams?name=garden&src=rtsp://admin:hunter22@127.0.0.1:9/s&src=rtsp://127.0.0.1:9/g2",
    )
    .unwrap();
    assert_eq!(st, 200, "{body}");
    let text = file();
    assert!(!text.contains("hunter22"), "{text}");
    assert_eq!(text.matches("${CAM_PASS}").count(), 1, "{text}");
    assert!(text.contains("other"), "{text}");
    assert!(text.contains("rtsp://127.0.0.1:9/g2"), "{text}");
    // The file still means what the API was told.
    let (_, list) = common::http(port, "GET", "/api/streams?src=garden").unwrap();
    assert!(
        list.contains("rtsp://admin:hunter22@127.0.0.1:9/s"),
        "{list}"
    );
}

#[test]
fn the_api_cannot_add_local_files_unless_allowed() {
    let srv = Server::start("  cam: rtsp://127.0.0.1:9/s\n", "");
    for src in [
        "file:/etc/passwd",
        "/etc/passwd",
        "./clip.mp4",
        "ffmpeg:/etc/passwd%23video=h264",
    ] {
        for method in ["PUT", "PATCH"] {
            let (st, body) = common::http(
                srv.port,
                method,
                &format!("/api/streams?name=cam&src={src}"),
            )
            .unwrap();
            assert_eq!(st, 400, "{method} {src}: {body}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["parameter"], "src", "{body}");
            assert!(body.contains("allow_files"), "{body}");
        }
    }
    let text = std::fs::read_to_string(&srv.config).unwrap();
    assert!(!text.contains("passwd"), "{text}");

    let srv = Server::start("", "api: { allow_files: true }\n");
    let (st, body) =
        common::http(srv.port, "PUT", "/api/streams?name=f&src=file:/etc/passwd").unwrap();
    assert_eq!(st, 200, "{body}");
    // Sources in the file were never the API's to refuse.
    let srv = Server::start("  f: /etc/passwd\n", "");
    let (st, body) = common::http(srv.port, "GET", "/api/streams?src=f").unwrap();
    assert_eq!(st, 200, "{body}");
}

/// The ports the process listens on over TCP: LISTEN entries of
/// /proc/PID/net/tcp{,6} whose socket inode is one of its fds.
fn tcp_listeners(pid: u32) -> Vec<u16> {
    let mut inodes = std::collections::HashSet::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        if let Ok(t) = std::fs::read_link(e.path()) {
            let t = t.to_string_lossy().to_string();
            if let Some(i) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                inodes.insert(i.to_string());
            }
        }
    }
    let mut ports = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address rem_address st … inode (proc(5)); 0A is LISTEN.
            if f.len() > 9 && f[3] == "0A" && inodes.contains(f[9]) {
                let port = f[1].rsplit(':').next().unwrap();
                ports.push(u16::from_str_radix(port, 16).unwrap());
            }
        }
    }
    ports
}

#[test]
fn api_listen_empty_leaves_only_the_internal_reads_port() {
    let _p = heavy();
    let config = format!(
        "api: {{ listen: \"\", unix_listen: \"DIR/api.sock\" }}\nrtsp: {{ listen: \"\" }}\n\
         rtmp: {{ listen: \"\" }}\nwebrtc: {{ listen: \"\" }}\nlog: {{ level: debug }}\n\
         streams:\n  a: \"{}\"\n  b: \"ffmpeg:a\"\n",
        demo_source(25)
    );
    let srv = Own::start(&config, &[], |d| {
        UnixStream::connect(d.join("api.sock")).is_ok()
    });
    let sock = srv.dir.path().join("api.sock");
    let unix = || {
        let s = UnixStream::connect(&sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    };
    // Internal reads still work: b (ffmpeg:a) plays over the unix socket.
    let mut va = unix();
    let (st, head) = request_head(&mut va, "GET", "/api/stream.flv?src=a", "");
    assert_eq!(st, 200, "{head}\n{}", srv.log());
    read_bytes(&mut va, 20_000, "viewer of a");
    let mut vb = unix();
    let (st, head) = request_head(&mut vb, "GET", "/api/stream.flv?src=b", "");
    assert_eq!(st, 200, "{head}\n{}", srv.log());
    read_bytes(&mut vb, 20_000, "viewer of b");

    // One TCP listener: the internal-reads port, on loopback.
    let ports = tcp_listeners(srv.child.id());
    assert_eq!(ports.len(), 1, "TCP listeners: {ports:?}");
    let port = ports[0];
    for (method, path) in [
        ("GET", "/api/streams"),
        ("GET", "/api"),
        ("PUT", "/api/streams?name=x&src=rtsp://h/s"),
        ("POST", "/api/restart"),
        ("PUT", "/api/stream.flv?src=a"),
        ("GET", "/api/stream.flv?src=a"),
        ("GET", "/api/frame.jpeg?src=a"),
    ] {
        let (st, body) = request(tcp(port), method, path, "");
        assert_eq!(st, 404, "{method} {path} on the internal port: {body}");
    }
    // And not without a token either.
    let (st, body) = request(tcp(port), "GET", "/api/stream.flv?src=a&internal=1", "");
    assert_eq!(st, 403, "{body}");
    let text = std::fs::read_to_string(&srv.config).unwrap();
    assert!(!text.contains("rtsp://h/s"), "{text}");
}

#[test]
fn a_fifo_at_the_config_path_does_not_hang_a_reload() {
    let srv = Server::start("  cam: rtsp://127.0.0.1:9/s\n", "");
    std::fs::remove_file(&srv.config).unwrap();
    let st = Command::new("mkfifo").arg(&srv.config).status().unwrap();
    assert!(st.success());
    let t = Instant::now();
    let s = tcp(srv.port);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (st, body) = request(s, "POST", "/api/restart", "");
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(st, 500, "{body}\n{}", srv.log());
    let v: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert!(
        v["error"].as_str().unwrap().contains("not a regular file"),
        "{body}"
    );
    // SIGHUP takes the same path; the server keeps serving either way.
    common::signal(srv.pid(), 1);
    srv.wait_for("the refused reload", Duration::from_secs(8), || {
        srv.log().contains("config reload refused")
    });
    let (st, body) = srv.try_get("/api/streams").unwrap();
    assert_eq!(st, 200, "{body}");
    assert!(body.contains("cam"), "{body}");
}

#[test]
fn control_characters_from_a_request_reach_the_log_escaped() {
    let rtsp = common::free_port();
    let srv = Server::start(
        "  cam: rtsp://127.0.0.1:9/s\n",
        &format!("rtsp: {{ listen: \"127.0.0.1:{rtsp}\" }}\n"),
    );
    // An ANNOUNCE whose path decodes to CR LF and an ANSI escape, with a
    // track we skip (and log).
    let sdp = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nt=0 0\r\nm=application 0 RTP/AVP 96\r\n";
    let mut c = common::RtspClient::connect(rtsp);
    c.send_raw(
        format!(
            "ANNOUNCE rtsp://127.0.0.1:{rtsp}/a%0D%0AFORGED%20line%1B%5B31m RTSP/1.0\r\nCSeq: 1\r\n\
             Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        )
        .as_bytes(),
    );
    let (st, head, _) = c.read_response().expect("an answer");
    assert!(st >= 400, "{head}");
    srv.wait_for(
        "the skipped track's log line",
        Duration::from_secs(5),
        || srv.log().contains("publisher track ignored"),
    );
    let log = srv.log();
    assert!(
        !log.lines().any(|l| l.starts_with("FORGED")),
        "a forged log line:\n{log}"
    );
    assert!(!log.contains('\x1b'), "a raw escape in the log:\n{log}");
    assert!(log.contains(r"a\r\nFORGED line\x1b[31m"), "{log}");
}

#[test]
fn secrets_stay_out_of_errors_stderr_tails_and_the_log() {
    let port = common::free_port();
    let config = format!(
        "api: {{ listen: \"127.0.0.1:{port}\" }}\nrtsp: {{ listen: \"\" }}\nrtmp: {{ listen: \"\" }}\n\
         webrtc: {{ listen: \"\" }}\nlog: {{ level: debug }}\nstreams:\n\
         \x20 garden: \"rtsp://admin:${{CAM_PASS}}@127.0.0.1:9/s?key=${{CAM_KEY}}#start_timeout=2s\"\n"
    );
    let srv = Own::start(
        &config,
        &[("CAM_PASS", "hunter22"), ("CAM_KEY", "k3y-material")],
        |_| common::http(port, "GET", "/api").is_ok_and(|r| r.0 == 200),
    );
    // Nothing listens on port 9: ffmpeg fails, printing its input URL.
    let (st, err) = common::http(port, "GET", "/api/stream.flv?src=garden").unwrap();
    assert!(st >= 500, "{st}: {err}");
    assert!(err.contains("stderr_tail"), "{err}");
    let (_, v) = {
        let (st, body) = common::http(port, "GET", "/api/streams?src=garden").unwrap();
        (
            st,
            serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        )
    };
    let p = &v["producers"][0];
    let shown = format!("{} {} {err}", p["last_error"], p["stderr_tail"]);
    assert!(shown.contains("Connection refused"), "{shown}");
    for secret in ["hunter22", "k3y-material"] {
        assert!(!shown.contains(secret), "{secret} shows: {shown}");
        assert!(
            !srv.log().contains(secret),
            "{secret} in the log:\n{}",
            srv.log()
        );
    }
    // go2rtc echoes the url as configured; that stays.
    assert_eq!(
        p["url"],
        "rtsp://admin:hunter22@127.0.0.1:9/s?key=k3y-material#start_timeout=2s"
    );
}
