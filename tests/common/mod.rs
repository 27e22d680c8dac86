//! Black-box test support: the real `streamvisor` binary, real ffmpeg and
//! ffprobe, plain sockets. Nothing on the media path is mocked.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// ffmpeg-heavy tests run a few at a time: CI has two cores. nextest runs
/// each test in its own process and limits them with a test group
/// (.config/nextest.toml); under plain `cargo test` this semaphore does it.
pub const HEAVY_AT_ONCE: usize = 2;
static HEAVY: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());

pub struct HeavyPermit;

pub fn heavy() -> HeavyPermit {
    let (m, cv) = &HEAVY;
    let mut n = m.lock().unwrap_or_else(|e| e.into_inner());
    while *n >= HEAVY_AT_ONCE {
        n = cv.wait(n).unwrap_or_else(|e| e.into_inner());
    }
    *n += 1;
    HeavyPermit
}

impl Drop for HeavyPermit {
    fn drop(&mut self) {
        let (m, cv) = &HEAVY;
        *m.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        cv.notify_one();
    }
}

/// A port nothing listens on, TCP or UDP, on any address. Picked at random
/// below the kernel's ephemeral range (32768-60999): a port from there (what
/// binding port 0 gives) can be handed to anyone's next port-0 bind or
/// outgoing connection before our server binds it, and tests run side by
/// side.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    for _ in 0..1000 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        h.write_u32(std::process::id());
        let port = 20_000 + (h.finish() % 12_000) as u16;
        if TcpListener::bind(("0.0.0.0", port)).is_ok()
            && std::net::UdpSocket::bind(("0.0.0.0", port)).is_ok()
        {
            return port;
        }
    }
    panic!("no free port in 20000-31999");
}

/// An `exec:` source making H.264 + AAC with ffmpeg's test sources, paced in
/// real time. `gop` is the keyframe interval in frames (25 fps).
pub fn demo_source(gop: u32) -> String {
    demo_source_sized(gop, "320x240")
}

/// As [`demo_source`]; 640x360 is about 2 Mbit/s.
pub fn demo_source_sized(gop: u32, size: &str) -> String {
    format!(
        "exec:ffmpeg -hide_banner -loglevel error -nostdin -re -f lavfi -i testsrc2=size={size}:rate=25 \
         -f lavfi -i sine=frequency=440:sample_rate=44100 -c:v libx264 -preset ultrafast -tune zerolatency \
         -g {gop} -pix_fmt yuv420p -c:a aac -b:a 64k -f flv -flvflags no_duration_filesize pipe:1"
    )
}

pub struct Server {
    child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    log: PathBuf,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_streamvisor")
}

impl Server {
    /// Starts the server with `streams` (the YAML body of `streams:`,
    /// already indented) and optional extra top-level YAML.
    pub fn start(streams: &str, extra: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("streams.yaml");
        // Tests run side by side: no listener on a fixed port unless a test
        // asks for one (then on a free port of its own).
        let mut rtsp = String::new();
        for proto in ["rtsp", "rtmp", "webrtc"] {
            if !extra.contains(&format!("{proto}:")) {
                rtsp.push_str(&format!("{proto}: {{ listen: \"\" }}\n"));
            }
        }
        // An `api: { … }` of the test's own gets our listen added to it.
        let (api, extra) = match extra.find("api: {") {
            Some(i) => (
                String::new(),
                format!(
                    "{}api: {{ listen: \"127.0.0.1:{port}\", {}",
                    &extra[..i],
                    &extra[i + 6..]
                ),
            ),
            None => (
                format!("api: {{ listen: \"127.0.0.1:{port}\" }}\n"),
                extra.to_string(),
            ),
        };
        // Debug logs unless the test sets its own `log:`.
        let log = if extra.starts_with("log:") || extra.contains("\nlog:") {
            ""
        } else {
            "log: { level: debug }\n"
        };
        std::fs::write(
            &config,
            format!("{api}{log}{rtsp}{extra}\nstreams:\n{streams}"),
        )
        .unwrap();
        let log = dir.path().join("server.log");
        let mut s = Server {
            child: None,
            port,
            dir,
            config,
            log,
        };
        s.spawn();
        s
    }

    /// Stops the server (SIGTERM) and starts it again on the same config
    /// file, as an operator's restart would.
    pub fn restart(&mut self) {
        let (st, _) = self.terminate(Duration::from_secs(10));
        assert!(st.is_some(), "server did not stop");
        self.child = None;
        self.spawn();
    }

    fn spawn(&mut self) {
        let child = Command::new(bin())
            .arg("-c")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(self.dir.path().join("stdout.log")).unwrap())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.log)
                    .unwrap(),
            )
            .spawn()
            .unwrap();
        self.child = Some(child);
        let s = self;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // 401: up, with api auth on for loopback too.
            if let Ok((200 | 401, _)) = s.try_get("/api") {
                return;
            }
            if let Some(st) = s.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("server exited with {st} before listening:\n{}", s.log());
            }
            assert!(
                Instant::now() < deadline,
                "server did not listen:\n{}",
                s.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn try_get(&self, path: &str) -> std::io::Result<(u16, String)> {
        http_get(self.port, path)
    }

    pub fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let (status, body) = self.try_get(path).unwrap();
        let v = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}"));
        (status, v)
    }

    /// The pids of `stream`'s running producers, per the API.
    pub fn producer_pids(&self, stream: &str) -> Vec<u32> {
        let (_, v) = self.get_json(&format!("/api/streams?src={stream}"));
        v["producers"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["pid"].as_u64())
            .map(|p| p as u32)
            .collect()
    }

    /// Waits until `f` holds, or panics with the server log.
    pub fn wait_for(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !f() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\n--- server log ---\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits for exit; returns the status and how long it took.
    pub fn terminate(&mut self, timeout: Duration) -> (Option<std::process::ExitStatus>, Duration) {
        let child = self.child.as_mut().unwrap();
        let t = Instant::now();
        signal(child.id(), libc_sigterm());
        let deadline = t + timeout;
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return (Some(st), t.elapsed());
            }
            if Instant::now() >= deadline {
                return (None, t.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if c.try_wait().ok().flatten().is_none() {
                signal(c.id(), libc_sigterm());
                let deadline = Instant::now() + Duration::from_secs(5);
                while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn libc_sigterm() -> i32 {
    15
}

pub fn signal(pid: u32, sig: i32) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// A one-shot GET over a fresh connection.
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    http(port, "GET", path)
}

/// A one-shot request with no body over a fresh connection: the status and
/// the body.
pub fn http(port: u16, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}

/// An HTTP-FLV reader on a raw socket: returns the socket after the
/// response head, with the status code.
pub fn open_flv(port: u16, stream: &str) -> (u16, TcpStream) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET /api/stream.flv?src={stream} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).unwrap() == 0 {
            break;
        }
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, s)
}

/// An HTTP-FLV request from a client that never reads: a 4 KiB receive
/// buffer, so the server's writes stall within a second or two.
pub fn open_stalled_flv(port: u16, stream: &str) -> socket2::Socket {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())
        .unwrap();
    let mut t: TcpStream = s.try_clone().unwrap().into();
    write!(
        t,
        "GET /api/stream.flv?src={stream} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    )
    .unwrap();
    s
}

/// Runs a command with a deadline; kills it at the deadline.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> (Output, Duration) {
    let t = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    // Read pipes on threads so a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let to = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let te = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t.elapsed() > timeout {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = t.elapsed();
    (
        Output {
            status,
            stdout: to.join().unwrap(),
            stderr: te.join().unwrap(),
        },
        elapsed,
    )
}

/// `ffprobe -show_entries stream=ENTRIES -of json` on `url`, with `extra`
/// input options (e.g. `-rtsp_transport tcp`).
pub fn ffprobe(url: &str, entries: &str, extra: &[&str]) -> serde_json::Value {
    let (out, _) = run_with_timeout(
        Command::new("ffprobe")
            .args(["-v", "error"])
            .args(extra)
            .args([
                "-show_entries",
                &format!("stream={entries}"),
                "-of",
                "json",
                url,
            ]),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "ffprobe {url} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `ffprobe`'s stream list for `url`: (codec_type, codec_name) pairs.
pub fn probe_streams(url: &str) -> Vec<(String, String)> {
    let v = ffprobe(url, "codec_type,codec_name", &[]);
    let mut s: Vec<(String, String)> = v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["codec_type"].as_str().unwrap_or("").to_string(),
                s["codec_name"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    s.sort();
    s
}

/// Every live (non-zombie) process as (pid, ppid, pgrp), from /proc. A
/// zombie is dead and only waits for its reaper (init, for orphaned
/// grandchildren). Deliberately independent of the server's own /proc code:
/// this is the tests' oracle.
fn live_processes() -> Vec<(u32, u32, u32)> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // proc(5): "pid (comm) state ppid pgrp …"; comm may hold anything.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|x| x.parse::<u32>().ok());
        if let (Some(state), Some(ppid), Some(pgrp)) = (f.first(), num(1), num(2)) {
            if *state != "Z" {
                v.push((pid, ppid, pgrp));
            }
        }
    }
    v
}

/// Live members of process group `pgid`.
pub fn group_members(pgid: u32) -> Vec<u32> {
    live_processes()
        .into_iter()
        .filter(|p| p.2 == pgid)
        .map(|p| p.0)
        .collect()
}

/// Live children of `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    live_processes()
        .into_iter()
        .filter(|p| p.1 == pid)
        .map(|p| p.0)
        .collect()
}

/// The GStreamer RTSP server standing in for a camera.
pub struct Camera {
    child: Child,
    pub url: String,
}

impl Camera {
    pub fn start() -> Camera {
        Camera::start_on(0)
    }

    /// On a given port (0: any), so a test can bring "the same camera" back.
    pub fn start_on(port: u16) -> Camera {
        Camera::start_with(port, "h264", "aac")
    }

    /// A camera sending `video` (h264, h265) and `audio` (aac, pcma, pcmu,
    /// opus, none), as `tests/support/rtsp_camera.py` takes them.
    pub fn start_with(port: u16, video: &str, audio: &str) -> Camera {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/rtsp_camera.py");
        // Debian's python3 has the gi bindings; a pyenv one may not.
        let py = if Path::new("/usr/bin/python3").exists() {
            "/usr/bin/python3"
        } else {
            "python3"
        };
        let mut child = Command::new(py)
            .arg(script)
            .args([
                "--port",
                &port.to_string(),
                "--video",
                video,
                "--audio",
                audio,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        while !line.ends_with(b"\n") {
            if out.read(&mut b).unwrap_or(0) == 0 {
                let _ = child.kill();
                panic!("rtsp_camera.py exited before READY");
            }
            line.push(b[0]);
        }
        let line = String::from_utf8_lossy(&line);
        let url = line
            .trim()
            .strip_prefix("READY ")
            .unwrap_or_else(|| panic!("unexpected: {line}"))
            .to_string();
        Camera { child, url }
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        signal(self.child.id(), 15);
        let _ = self.child.wait();
    }
}

/// A minimal RTSP client over a raw socket, for tests that need to do what
/// ffmpeg or GStreamer would not (stall, send garbage, count bytes).
pub struct RtspClient {
    pub sock: TcpStream,
    cseq: u32,
    pub session: Option<String>,
    pending: Vec<u8>,
}

impl RtspClient {
    pub fn connect(port: u16) -> RtspClient {
        let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        RtspClient {
            sock,
            cseq: 0,
            session: None,
            pending: Vec::new(),
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.sock.write_all(bytes).unwrap();
    }

    /// Sends a request and returns (status, head, body). Interleaved data
    /// that arrives before the response is skipped.
    pub fn request(
        &mut self,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
    ) -> (u16, String, String) {
        self.cseq += 1;
        let mut req = format!("{method} {url} RTSP/1.0\r\nCSeq: {}\r\n", self.cseq);
        if let Some(s) = &self.session {
            req += &format!("Session: {s}\r\n");
        }
        for (k, v) in headers {
            req += &format!("{k}: {v}\r\n");
        }
        req += "\r\n";
        self.sock.write_all(req.as_bytes()).unwrap();
        let r = self.read_response().expect("no response");
        if let Some(line) =
            r.1.lines()
                .find(|l| l.to_ascii_lowercase().starts_with("session:"))
        {
            let v = line.split_once(':').unwrap().1.trim();
            self.session = Some(v.split(';').next().unwrap().to_string());
        }
        r
    }

    fn fill(&mut self) -> bool {
        let mut b = [0u8; 65536];
        match self.sock.read(&mut b) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.pending.extend_from_slice(&b[..n]);
                true
            }
        }
    }

    /// The next response, skipping interleaved frames; None if the server
    /// closed the connection first.
    pub fn read_response(&mut self) -> Option<(u16, String, String)> {
        loop {
            if self.pending.first() == Some(&b'$') {
                if self.pending.len() >= 4 {
                    let len = u16::from_be_bytes([self.pending[2], self.pending[3]]) as usize;
                    if self.pending.len() >= 4 + len {
                        self.pending.drain(..4 + len);
                        continue;
                    }
                }
            } else if let Some(end) = self.pending.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.pending[..end]).to_string();
                let len = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if self.pending.len() >= end + 4 + len {
                    let body =
                        String::from_utf8_lossy(&self.pending[end + 4..end + 4 + len]).to_string();
                    self.pending.drain(..end + 4 + len);
                    let status = head
                        .split_whitespace()
                        .nth(1)
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    return Some((status, head, body));
                }
            }
            if !self.fill() {
                return None;
            }
        }
    }

    /// DESCRIBE, SETUP every track over TCP, PLAY.
    pub fn play_tcp(port: u16, stream: &str) -> RtspClient {
        let mut c = RtspClient::connect(port);
        let url = format!("rtsp://127.0.0.1:{port}/{stream}");
        let (status, head, sdp) =
            c.request("DESCRIBE", &url, &[("Accept", "application/sdp".into())]);
        assert_eq!(status, 200, "{head}");
        let tracks = sdp.matches("a=control:trackID=").count();
        for i in 0..tracks {
            let (status, head, _) = c.request(
                "SETUP",
                &format!("{url}/trackID={i}"),
                &[(
                    "Transport",
                    format!("RTP/AVP/TCP;unicast;interleaved={}-{}", 2 * i, 2 * i + 1),
                )],
            );
            assert_eq!(status, 200, "{head}");
        }
        let (status, head, _) = c.request("PLAY", &url, &[]);
        assert_eq!(status, 200, "{head}");
        c
    }
}

/// Keeps reading an HTTP-FLV response until `stop`; counts bytes.
pub struct Drain {
    stop: Arc<AtomicBool>,
    bytes: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

impl Drain {
    pub fn new(mut s: TcpStream) -> Drain {
        let stop = Arc::new(AtomicBool::new(false));
        let bytes = Arc::new(AtomicU64::new(0));
        let (st, by) = (stop.clone(), bytes.clone());
        let handle = std::thread::spawn(move || {
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let mut buf = vec![0u8; 64 * 1024];
            while !st.load(Ordering::Relaxed) {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        by.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(_) => break,
                }
            }
            // Dropping the socket here is the viewer leaving.
        });
        Drain {
            stop,
            bytes,
            handle: Some(handle),
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn close(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join().unwrap();
        }
    }
}

impl Drop for Drain {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Children of `pid` with their state letter, zombies included.
pub fn children_of_any_state(pid: u32) -> Vec<(u32, String)> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.get(1).and_then(|x| x.parse::<u32>().ok()) == Some(pid) {
            v.push((p, f[0].to_string()));
        }
    }
    v
}

/// A 10 s H.264 + AAC clip to publish, made once per test.
pub fn clip(dir: &std::path::Path) -> std::path::PathBuf {
    clip_sized(dir, "320x240")
}

/// As [`clip`], at another picture size (so a test can tell two
/// publishers apart by their SPS).
pub fn clip_sized(dir: &std::path::Path, size: &str) -> std::path::PathBuf {
    let path = dir.join(format!("clip-{size}.mp4"));
    let (out, _) = run_with_timeout(
        Command::new("ffmpeg")
            .args([
                "-v",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                &format!("testsrc2=size={size}:rate=25"),
                "-f",
                "lavfi",
                "-i",
                "sine=sample_rate=44100",
            ])
            .args([
                "-t",
                "10",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-g",
                "25",
                "-pix_fmt",
                "yuv420p",
                "-c:a",
                "aac",
                "-b:a",
                "64k",
            ])
            .arg(&path),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

/// A child process killed and reaped when the test lets go of it, however
/// the test ends (an assertion's panic included).
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// ffmpeg publishing `clip` (looped) over RTSP into stream `pushed`.
pub fn push(clip: &std::path::Path, rtsp: u16, transport: &str) -> std::process::Child {
    Command::new("ffmpeg")
        .args(["-v", "error", "-re", "-stream_loop", "-1", "-i"])
        .arg(clip)
        .args([
            "-c",
            "copy",
            "-f",
            "rtsp",
            "-rtsp_transport",
            transport,
            &format!("rtsp://127.0.0.1:{rtsp}/pushed"),
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// ffmpeg publishing `clip` (looped, in real time) to `url`: FLV for
/// `rtmp://` and `http://` (go2rtc's POST), RTSP over TCP for `rtsp://`.
pub fn push_to(clip: &std::path::Path, url: &str) -> std::process::Child {
    let format: &[&str] = if url.starts_with("rtsp://") {
        &["-f", "rtsp", "-rtsp_transport", "tcp"]
    } else {
        &["-f", "flv"]
    };
    Command::new("ffmpeg")
        .args(["-v", "error", "-re", "-stream_loop", "-1", "-i"])
        .arg(clip)
        .args(["-c", "copy"])
        .args(format)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Open file descriptors of a process.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// The server's resident memory, from /proc.
pub fn rss_kb(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap()
}

/// A camera as many are: H.264 with G.711 A-law audio.
pub const PCMA_CAMERA: &str = "exec:ffmpeg -hide_banner -loglevel error -nostdin -re -f lavfi -i testsrc2=size=160x120:rate=25 \
     -f lavfi -i sine=sample_rate=8000 -c:v libx264 -preset ultrafast -tune zerolatency -g 25 \
     -c:a pcm_alaw -ar 8000 -ac 1 -f flv -flvflags no_duration_filesize pipe:1";

/// ffmpeg decodes `file` to the end with nothing to say: no continuity,
/// PTS or decode errors.
pub fn assert_decodes_cleanly(file: &Path, what: &str) {
    let (out, _) = run_with_timeout(
        Command::new("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(file)
            .args(["-f", "null", "-"]),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{what}: ffmpeg failed");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "",
        "{what}: decode errors"
    );
}

/// Debian's Chromium, for the browser tests, which are `#[ignore]`d (a
/// plain `cargo test` lacks it) and run by scripts/test, which installs it
/// and playwright-core: there a missing one is a failure naming it.
pub fn chromium_or_fail() -> &'static str {
    let driver =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/node_modules/playwright-core");
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    match (chromium, driver.exists()) {
        (Some(c), true) => c,
        _ => panic!(
            "the browser test cannot run: chromium ({chromium:?}) or playwright-core ({}) is missing; \
             scripts/test installs them",
            driver.display()
        ),
    }
}
