//! Bounded connections (issue 15, finding 3): idle and trickling HTTP
//! clients are closed, idle RTSP connections are closed, a flood past a
//! listener's cap is refused while a viewer already connected keeps
//! receiving, and running out of file descriptors is waited out quietly.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Reads until the server closes the connection (or `limit` passes):
/// how long that took from `since`, and whether it was closed.
fn wait_closed(s: &mut TcpStream, since: Instant, limit: Duration) -> (Duration, bool) {
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.saturating_sub(since.elapsed());
        if left.is_zero() {
            return (since.elapsed(), false);
        }
        s.set_read_timeout(Some(left.min(Duration::from_millis(500))))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => return (since.elapsed(), true),
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            // A reset is a close too.
            Err(_) => return (since.elapsed(), true),
        }
    }
}

/// A keep-alive `GET /api` on `s`: the status of the answer.
fn ask(s: &mut TcpStream) -> Option<u16> {
    s.write_all(b"GET /api HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .ok()?;
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).ok()?;
    status_of(&buf[..n])
}

/// The status of the HTTP response head at the start of `bytes`, if any.
fn status_of(bytes: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(bytes);
    let line = text.lines().next()?;
    line.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

#[test]
fn an_http_connection_that_sends_nothing_is_closed_within_10_s() {
    let srv = Server::start("", "");
    let t = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    let (took, closed) = wait_closed(&mut s, t, Duration::from_secs(20));
    assert!(
        closed && took <= Duration::from_secs(12),
        "closed: {closed} after {took:?}\n{}",
        srv.log()
    );
    // The bound, not an instant close.
    assert!(took >= Duration::from_secs(8), "closed after {took:?}");
}

/// Slowloris: a byte every 2 s keeps a socket-level idle timer from ever
/// firing; the whole head has a deadline.
#[test]
fn an_http_connection_trickling_its_head_is_closed_within_10_s() {
    let srv = Server::start("", "");
    let t = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    let mut w = s.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        for b in b"GET /api HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: yes\r\n" {
            if w.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    });
    let (took, closed) = wait_closed(&mut s, t, Duration::from_secs(20));
    assert!(
        closed && took <= Duration::from_secs(12),
        "closed: {closed} after {took:?}\n{}",
        srv.log()
    );
    drop(s);
    trickle.join().unwrap();
}

/// After a response, a keep-alive connection has the same 10 s for its next
/// request head.
#[test]
fn an_idle_keep_alive_connection_is_closed_within_10_s() {
    let srv = Server::start("", "");
    let mut s = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /api HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    // The response (JSON with a Content-Length), then silence.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed before the response");
        got.extend_from_slice(&buf[..n]);
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
    assert_eq!(status_of(&got), Some(200), "{head}");
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .expect("a Content-Length")
        .trim()
        .parse()
        .unwrap();
    while got.len() < head_end + len {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    let t = Instant::now();
    let (took, closed) = wait_closed(&mut s, t, Duration::from_secs(20));
    assert!(
        closed && took <= Duration::from_secs(12),
        "closed: {closed} after {took:?}\n{}",
        srv.log()
    );
}

/// RTSP has no header timeout of its own: a connection that sends no
/// request is closed after 60 s (a fixed figure: this test takes a minute).
/// A player receiving media over TCP that sends no request all that time
/// is not cut.
///
/// The source copies the demo clip in real time instead of encoding: a
/// minute of libx264 would hold one of CI's two ffmpeg slots
/// (.config/nextest.toml) while the test only waits.
#[test]
fn an_rtsp_connection_that_sends_nothing_is_closed_after_60_s() {
    let rtsp = free_port();
    let srv = Server::start(
        &format!(
            "  demo: \"exec:ffmpeg -hide_banner -loglevel error -nostdin -re -stream_loop -1 -i {}/testdata/demo.flv -c copy -f flv pipe:1\"\n",
            env!("CARGO_MANIFEST_DIR")
        ),
        &format!("rtsp: {{ listen: \"127.0.0.1:{rtsp}\" }}\n"),
    );
    let player = RtspClient::play_tcp(rtsp, "demo");
    let t = Instant::now();
    let mut idle = TcpStream::connect(("127.0.0.1", rtsp)).unwrap();
    let media = Drain::new(player.sock.try_clone().unwrap());
    let (took, closed) = wait_closed(&mut idle, t, Duration::from_secs(75));
    assert!(
        closed && took <= Duration::from_secs(62) && took >= Duration::from_secs(55),
        "closed: {closed} after {took:?}\n{}",
        srv.log()
    );
    // The player, silent as long, still gets media.
    let before = media.bytes();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        media.bytes() > before,
        "the TCP player stopped receiving\n{}",
        srv.log()
    );
    media.close();
    drop(player);
}

/// `api.max_connections: 20`: a flood of idle connections fills the cap,
/// the rest get a 503; the HTTP-FLV viewer that came first keeps getting
/// media all along (past the 10 s header-read timeout too: a response
/// being written is not a wait for a head), and the API answers again once
/// the flood leaves.
#[test]
fn a_flood_past_the_cap_is_refused_and_a_viewer_keeps_receiving() {
    let _heavy = heavy();
    let srv = Server::start(
        &format!("  demo: \"{}\"\n", demo_source(25)),
        "api: { max_connections: 20 }\n",
    );
    let opened = Instant::now();
    let (status, s) = open_flv(srv.port, "demo");
    assert_eq!(status, 200, "{}", srv.log());
    let viewer = Drain::new(s);
    srv.wait_for("the viewer's first bytes", Duration::from_secs(20), || {
        viewer.bytes() > 0
    });

    let mut flood: Vec<TcpStream> = (0..60)
        .map(|_| TcpStream::connect(("127.0.0.1", srv.port)).unwrap())
        .collect();
    // Admitted ones stay silent (they send no request); refused ones are
    // told 503 and closed.
    let mut refused = 0;
    let mut silent = 0;
    for s in &mut flood {
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) => break,
            }
        }
        match status_of(&got) {
            Some(503) => {
                let body = String::from_utf8_lossy(&got);
                assert!(
                    body.contains("\"error\"") && body.contains("Connection: close"),
                    "{body}"
                );
                refused += 1;
            }
            Some(other) => panic!("flood connection got {other}"),
            None if got.is_empty() => silent += 1,
            None => panic!("flood connection got {:?}", String::from_utf8_lossy(&got)),
        }
    }
    // 19 slots besides the viewer's; the rest refused.
    assert_eq!(silent, 19, "refused {refused}\n{}", srv.log());
    assert_eq!(refused, 41, "{}", srv.log());
    // A real request while full: 503 too.
    let (status, body) = srv.try_get("/api").unwrap();
    assert_eq!(status, 503, "{body}");

    // The viewer keeps receiving, past the header-read timeout.
    while opened.elapsed() < Duration::from_secs(14) {
        let before = viewer.bytes();
        std::thread::sleep(Duration::from_secs(2));
        assert!(
            viewer.bytes() > before,
            "the viewer stopped receiving during the flood\n{}",
            srv.log()
        );
    }
    // One warning for the episode, not one per refusal.
    let log = srv.log();
    assert_eq!(log.matches("connection cap reached").count(), 1, "{log}");

    drop(flood);
    srv.wait_for("the API to answer again", Duration::from_secs(10), || {
        matches!(srv.try_get("/api"), Ok((200, _)))
    });
    let before = viewer.bytes();
    std::thread::sleep(Duration::from_secs(1));
    assert!(viewer.bytes() > before, "{}", srv.log());
    viewer.close();
}

/// Under a low fd limit, accept fails with EMFILE while idle connections
/// hold every descriptor: the server says so once, keeps serving the
/// connections it has, and serves new ones once descriptors are free.
/// Spawns the binary itself, with the limit set before exec.
#[test]
fn out_of_file_descriptors_is_waited_out_quietly() {
    use std::os::unix::process::CommandExt;

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("streams.yaml");
    std::fs::write(
        &config,
        format!(
            "api: {{ listen: \"127.0.0.1:{port}\" }}\nlog: {{ level: debug }}\n\
             rtsp: {{ listen: \"\" }}\nrtmp: {{ listen: \"\" }}\nwebrtc: {{ listen: \"\" }}\nstreams:\n"
        ),
    )
    .unwrap();
    let log_path = dir.path().join("server.log");
    let mut cmd = Command::new(bin());
    cmd.arg("-c")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap());
    // Soft and hard: the server raises its soft limit to the hard one.
    const LIMIT: u64 = 48;
    // SAFETY: setrlimit is async-signal-safe, and the closure allocates
    // nothing.
    unsafe {
        cmd.pre_exec(|| {
            use nix::sys::resource::{setrlimit, Resource};
            setrlimit(Resource::RLIMIT_NOFILE, LIMIT, LIMIT).map_err(std::io::Error::from)
        });
    }
    let child = KillOnDrop(cmd.spawn().unwrap());
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let t = Instant::now();
    while !matches!(http_get(port, "/api"), Ok((200, _))) {
        assert!(t.elapsed() < Duration::from_secs(10), "no API\n{}", log());
        std::thread::sleep(Duration::from_millis(50));
    }

    // A client with a keep-alive connection before the exhaustion.
    let mut kept = TcpStream::connect(("127.0.0.1", port)).unwrap();
    kept.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(ask(&mut kept), Some(200));

    // More idle connections than descriptors: the rest wait in the backlog.
    let idle: Vec<TcpStream> = (0..LIMIT + 20)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let t = Instant::now();
    while !log().contains("accept failed") {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "accept never failed\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // While out of descriptors: the connection we have is served…
    let t = Instant::now();
    assert_eq!(ask(&mut kept), Some(200), "{}", log());
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    // …and a few seconds of failing accepts are one line, not a loop.
    std::thread::sleep(Duration::from_secs(4));
    let failed = log().matches("accept failed").count();
    assert!(
        (1..=2).contains(&failed),
        "{failed} accept-failed lines\n{}",
        log()
    );

    // The idle ones leave: new clients are served again.
    drop(idle);
    drop(kept);
    let t = Instant::now();
    loop {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        if ask(&mut s) == Some(200) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "not served after the idle connections closed\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(log().contains("accepting connections again"), "{}", log());
    drop(child);
}

/// `rtsp.max_connections: 2` and `rtmp.max_connections: 2`: a third RTSP
/// connection is told 503 and closed, a third RTMP one is closed; once one
/// leaves, a new one is served.
#[test]
fn rtsp_and_rtmp_connections_past_the_cap_are_refused() {
    let (rtsp, rtmp) = (free_port(), free_port());
    let srv = Server::start(
        "",
        &format!(
            "rtsp: {{ listen: \"127.0.0.1:{rtsp}\", max_connections: 2 }}\n\
             rtmp: {{ listen: \"127.0.0.1:{rtmp}\", max_connections: 2 }}\n"
        ),
    );
    let options = |port: u16| -> (TcpStream, Vec<u8>) {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(
            format!("OPTIONS rtsp://127.0.0.1:{port}/x RTSP/1.0\r\nCSeq: 1\r\n\r\n").as_bytes(),
        )
        .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).unwrap_or(0);
        (s, buf[..n].to_vec())
    };
    let (a, got) = options(rtsp);
    assert!(got.starts_with(b"RTSP/1.0 200 OK"), "{got:?}");
    let (_b, got) = options(rtsp);
    assert!(got.starts_with(b"RTSP/1.0 200 OK"), "{got:?}");
    let (mut c, got) = options(rtsp);
    assert!(
        got.starts_with(b"RTSP/1.0 503 Service Unavailable\r\n"),
        "{:?}\n{}",
        String::from_utf8_lossy(&got),
        srv.log()
    );
    let (_, closed) = wait_closed(&mut c, Instant::now(), Duration::from_secs(5));
    assert!(closed);
    drop(a);
    srv.wait_for("an RTSP slot", Duration::from_secs(5), || {
        options(rtsp).1.starts_with(b"RTSP/1.0 200 OK")
    });

    // RTMP: C0+C1 of the handshake; an admitted connection answers S0.
    let handshake = |port: u16| -> (TcpStream, bool) {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut c01 = vec![3u8];
        c01.extend_from_slice(&[0u8; 1536]);
        let _ = s.write_all(&c01);
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 1];
        let answered = matches!(s.read(&mut b), Ok(1) if b[0] == 3);
        (s, answered)
    };
    let (a, ok) = handshake(rtmp);
    assert!(ok);
    let (_b, ok) = handshake(rtmp);
    assert!(ok);
    let (_c, ok) = handshake(rtmp);
    assert!(!ok, "a third RTMP connection was served\n{}", srv.log());
    drop(a);
    srv.wait_for("an RTMP slot", Duration::from_secs(5), || handshake(rtmp).1);
}

/// A WebSocket (`/api/ws`) is a connection like any other: it keeps its
/// slot under `api.max_connections` after the upgrade, for as long as it
/// is open.
#[test]
fn a_websocket_keeps_its_slot_under_the_cap() {
    let srv = Server::start("", "api: { max_connections: 2 }\n");
    let mut ws = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    ws.write_all(
        b"GET /api/ws?src=x HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
          Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
          Sec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    ws.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 1024];
    let n = ws.read(&mut buf).unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 101 "),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    // The upgrade is done: one slot left, then none.
    let mut other = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    assert_eq!(ask(&mut other), Some(200), "{}", srv.log());
    let (status, body) = srv.try_get("/api").unwrap();
    assert_eq!(status, 503, "{body}\n{}", srv.log());
    // The WebSocket closes: its slot is free.
    drop(ws);
    srv.wait_for("the WebSocket's slot", Duration::from_secs(5), || {
        matches!(srv.try_get("/api"), Ok((200, _)))
    });
}
