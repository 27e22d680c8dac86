//! Publishing in, with real ffmpeg as the publisher: RTMP, HTTP POST and
//! RTSP RECORD; takeover, half-open publishers, kill -9 and re-publish,
//! and garbage. Readers are plain sockets parsing FLV with a tag walker of
//! their own (not the server's demuxer), so what they see is the oracle.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;

/// A server with a publish-only stream `pushed` and RTSP and RTMP on free
/// ports; `extra` is more top-level YAML.
fn server(extra: &str) -> (Server, u16, u16) {
    let (rtsp, rtmp) = (free_port(), free_port());
    let srv = Server::start(
        "  pushed:\n",
        &format!(
            "rtsp: {{ listen: \"127.0.0.1:{rtsp}\" }}\nrtmp: {{ listen: \"127.0.0.1:{rtmp}\" }}\n{extra}"
        ),
    );
    (srv, rtsp, rtmp)
}

/// Who publishes `stream` now, per the API: the producer url of the
/// publisher ("rtmp://127.0.0.1:PORT (publisher)"), if any.
fn publisher_of(srv: &Server, stream: &str) -> Option<String> {
    let (_, v) = srv.get_json(&format!("/api/streams?src={stream}"));
    v["producers"].as_array()?.iter().find_map(|p| {
        let u = p["url"].as_str()?;
        u.contains("(publisher)").then(|| u.to_string())
    })
}

/// `POST /api/stream.flv?dst=NAME` with `body`: the whole response.
fn post_flv(port: u16, dst: &str, body: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    write!(
        s,
        "POST /api/stream.flv?dst={dst} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    // The server may answer (and close) before taking the whole body.
    let _ = s.write_all(body);
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp
}

fn kill9(c: &mut Child) {
    signal(c.id(), 9);
    let _ = c.wait();
}

/// The stderr of a publisher expected to be refused: it must exit by
/// itself (within 15 s; then it is killed and the test says so).
fn stderr_of(mut c: Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    while c.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            kill9(&mut c);
            panic!("the publisher was not refused: still running after 15 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut s = String::new();
    let _ = c.stderr.take().unwrap().read_to_string(&mut s);
    s
}

/// One FLV tag as a reader saw it.
#[derive(Debug, Clone)]
struct Tag {
    video: bool,
    ts: u32,
    /// An AVC sequence header: its AVCDecoderConfigurationRecord.
    avc_config: Option<Vec<u8>>,
    keyframe: bool,
}

/// An HTTP-FLV reader that walks the tags it receives (FLV spec E.4.1).
struct FlvReader {
    tags: Arc<Mutex<Vec<Tag>>>,
    ended: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl FlvReader {
    fn open(port: u16, stream: &str) -> FlvReader {
        let (status, mut s) = open_flv(port, stream);
        assert_eq!(status, 200, "reader of {stream}");
        let tags = Arc::new(Mutex::new(Vec::new()));
        let ended = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (t, e, st) = (tags.clone(), ended.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            // The body is chunked (RFC 9112 §7.1): undo that first.
            let mut raw = Vec::new();
            let mut body = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            let mut header_done = false;
            while !st.load(Ordering::Relaxed) {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => raw.extend_from_slice(&buf[..n]),
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::TimedOut =>
                    {
                        continue
                    }
                    Err(_) => break,
                }
                let complete = dechunk(&mut raw, &mut body);
                if complete {
                    break; // the server ended the response
                }
                if !header_done {
                    if body.len() < 13 {
                        continue;
                    }
                    assert_eq!(&body[..3], b"FLV");
                    body.drain(..13);
                    header_done = true;
                }
                while body.len() >= 11 {
                    let size = u32::from_be_bytes([0, body[1], body[2], body[3]]) as usize;
                    if body.len() < 11 + size + 4 {
                        break;
                    }
                    let ts = u32::from_be_bytes([body[7], body[4], body[5], body[6]]);
                    let data = &body[11..11 + size];
                    if body[0] == 9 && data.len() >= 5 {
                        t.lock().unwrap().push(Tag {
                            video: true,
                            ts,
                            avc_config: (data[1] == 0).then(|| data[5..].to_vec()),
                            keyframe: data[0] >> 4 == 1 && data[1] == 1,
                        });
                    } else if body[0] == 8 {
                        t.lock().unwrap().push(Tag {
                            video: false,
                            ts,
                            avc_config: None,
                            keyframe: false,
                        });
                    }
                    body.drain(..11 + size + 4);
                }
            }
            e.store(true, Ordering::Relaxed);
        });
        FlvReader {
            tags,
            ended,
            stop,
            handle: Some(handle),
        }
    }

    fn tags(&self) -> Vec<Tag> {
        self.tags.lock().unwrap().clone()
    }

    /// How many AVC sequence headers came.
    fn sequence_headers(&self) -> usize {
        self.tags()
            .iter()
            .filter(|t| t.avc_config.is_some())
            .count()
    }

    /// The distinct AVC configurations seen, in order.
    fn configs(&self) -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = Vec::new();
        for t in self.tags() {
            if let Some(c) = t.avc_config {
                if v.last() != Some(&c) {
                    v.push(c);
                }
            }
        }
        v
    }

    /// Video frames after the last sequence header; and whether the first
    /// of them is a keyframe.
    fn frames_since_last_config(&self) -> (usize, bool) {
        let tags = self.tags();
        let Some(i) = tags.iter().rposition(|t| t.avc_config.is_some()) else {
            return (0, false);
        };
        let frames: Vec<&Tag> = tags[i + 1..]
            .iter()
            .filter(|t| t.video && t.avc_config.is_none())
            .collect();
        (frames.len(), frames.first().is_some_and(|t| t.keyframe))
    }

    fn assert_monotonic(&self, who: &str) {
        let mut last = [0u32; 2];
        for t in self.tags() {
            let k = usize::from(t.video);
            assert!(
                t.ts >= last[k],
                "{who}: time went back: {} after {}",
                t.ts,
                last[k]
            );
            last[k] = t.ts;
        }
    }

    fn ended(&self) -> bool {
        self.ended.load(Ordering::Relaxed)
    }
}

impl Drop for FlvReader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Moves the payload of every complete chunk from `raw` to `out`; true
/// once the last (empty) chunk came: the response is complete.
fn dechunk(raw: &mut Vec<u8>, out: &mut Vec<u8>) -> bool {
    loop {
        let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") else {
            return false;
        };
        let size_text = String::from_utf8_lossy(&raw[..eol]).to_string();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size line {size_text:?}"));
        if size == 0 {
            return true;
        }
        if raw.len() < eol + 2 + size + 2 {
            return false;
        }
        out.extend_from_slice(&raw[eol + 2..eol + 2 + size]);
        raw.drain(..eol + 2 + size + 2);
    }
}

fn wait_until(what: &str, srv: &Server, timeout: Duration, f: impl FnMut() -> bool) {
    srv.wait_for(what, timeout, f);
}

/// Waits (up to `secs`) until `stream` has a publisher.
fn wait_publisher(srv: &Server, stream: &str, what: &str, secs: u64) {
    srv.wait_for(what, Duration::from_secs(secs), || {
        publisher_of(srv, stream).is_some()
    });
}

/// Waits (up to `secs`) until `stream` has no publisher.
fn wait_no_publisher(srv: &Server, stream: &str, what: &str, secs: u64) {
    srv.wait_for(what, Duration::from_secs(secs), || {
        publisher_of(srv, stream).is_none()
    });
}

#[test]
fn publishes_over_rtmp_http_and_rtsp_and_each_plays_over_http_flv_rtsp_and_rtmp() {
    let _p = heavy();
    let (srv, rtsp, rtmp) = server("");
    let clip = clip(srv.dir.path());
    let want = vec![
        ("audio".to_string(), "aac".to_string()),
        ("video".to_string(), "h264".to_string()),
    ];
    for (how, url) in [
        ("RTMP app=stream", format!("rtmp://127.0.0.1:{rtmp}/pushed")),
        (
            "RTMP live/key",
            format!("rtmp://127.0.0.1:{rtmp}/live/pushed"),
        ),
        ("HTTP POST", srv.url("/api/stream.flv?dst=pushed")),
        ("RTSP", format!("rtsp://127.0.0.1:{rtsp}/pushed")),
    ] {
        let mut p = push_to(&clip, &url);
        wait_publisher(&srv, "pushed", how, 10);
        assert_eq!(
            probe_streams(&srv.url("/api/stream.flv?src=pushed")),
            want,
            "{how}: HTTP-FLV"
        );
        assert_eq!(
            probe_streams(&format!("rtsp://127.0.0.1:{rtsp}/pushed")),
            want,
            "{how}: RTSP"
        );
        assert_eq!(
            probe_streams(&format!("rtmp://127.0.0.1:{rtmp}/live/pushed")),
            want,
            "{how}: RTMP play"
        );
        kill9(&mut p);
        // Nobody watches: the stream is free at once.
        wait_no_publisher(&srv, "pushed", "the publisher to leave", 3);
    }
    // What RTMP play gives decodes cleanly.
    let mut p = push_to(&clip, &format!("rtmp://127.0.0.1:{rtmp}/pushed"));
    wait_publisher(&srv, "pushed", "publisher", 10);
    let out = srv.dir.path().join("rtmp-play.mp4");
    let (o, _) = run_with_timeout(
        std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-i"])
            .arg(format!("rtmp://127.0.0.1:{rtmp}/pushed"))
            .args(["-t", "3", "-c", "copy"])
            .arg(&out),
        Duration::from_secs(20),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_decodes_cleanly(&out, "RTMP play");
    kill9(&mut p);
}

#[test]
fn kill_9_and_republish_within_100ms_carries_three_readers_over() {
    let _p = heavy();
    let (srv, _rtsp, rtmp) = server("");
    let small = clip(srv.dir.path());
    let big = clip_sized(srv.dir.path(), "640x360");
    let url = format!("rtmp://127.0.0.1:{rtmp}/live/pushed");
    let mut a = push_to(&small, &url);
    wait_publisher(&srv, "pushed", "publisher A", 10);
    let readers: Vec<FlvReader> = (0..3)
        .map(|_| FlvReader::open(srv.port, "pushed"))
        .collect();
    wait_until(
        "readers to get A's frames",
        &srv,
        Duration::from_secs(10),
        || readers.iter().all(|r| r.frames_since_last_config().0 >= 10),
    );
    let a_pub = publisher_of(&srv, "pushed").unwrap();

    kill9(&mut a);
    let killed = Instant::now();
    let mut b = push_to(&big, &url);
    assert!(killed.elapsed() < Duration::from_millis(100));
    wait_until("publisher B", &srv, Duration::from_secs(5), || {
        publisher_of(&srv, "pushed").is_some_and(|p| p != a_pub)
    });
    wait_until(
        "every reader to get B's frames",
        &srv,
        Duration::from_secs(10),
        || {
            readers
                .iter()
                .all(|r| r.configs().len() == 2 && r.frames_since_last_config().0 >= 25)
        },
    );
    for (i, r) in readers.iter().enumerate() {
        assert!(!r.ended(), "reader {i} was disconnected");
        let (_, starts_on_key) = r.frames_since_last_config();
        assert!(
            starts_on_key,
            "reader {i}: B's frames must start at a keyframe"
        );
        r.assert_monotonic(&format!("reader {i}"));
    }
    // B goes too, and nobody comes back: a clean end after publish.timeout.
    kill9(&mut b);
    let t = Instant::now();
    wait_until(
        "the readers to be ended",
        &srv,
        Duration::from_secs(10),
        || readers.iter().all(FlvReader::ended),
    );
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_secs(4),
        "readers were cut before publish.timeout: {waited:?}"
    );
}

#[test]
fn a_hundred_publish_kill_republish_cycles() {
    let _p = heavy();
    let (srv, rtsp, rtmp) = server("");
    let clip = clip(srv.dir.path());
    let readers: Vec<FlvReader> = Vec::new();
    let mut readers = readers;
    let urls = [
        format!("rtmp://127.0.0.1:{rtmp}/live/pushed"),
        srv.url("/api/stream.flv?dst=pushed"),
        format!("rtsp://127.0.0.1:{rtsp}/pushed"),
    ];
    let pid = srv.pid();
    let mut baseline = None;
    let mut last: Option<String> = None;
    let mut slowest = Duration::ZERO;
    for i in 0..100 {
        let started = Instant::now();
        let mut p = push_to(&clip, &urls[i % urls.len()]);
        let deadline = started + Duration::from_secs(1);
        let now_live = loop {
            let who = publisher_of(&srv, "pushed");
            if who.is_some() && who != last {
                break who;
            }
            if Instant::now() > deadline {
                panic!(
                    "cycle {i} ({}): not accepted within 1 s\n{}",
                    urls[i % urls.len()],
                    srv.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        slowest = slowest.max(started.elapsed());
        last = now_live;
        if i == 0 {
            readers = (0..2)
                .map(|_| FlvReader::open(srv.port, "pushed"))
                .collect();
        }
        // Let it publish a moment, so every cycle carries media.
        std::thread::sleep(Duration::from_millis(100));
        kill9(&mut p);
        if i == 10 {
            baseline = Some((fd_count(pid), rss_kb(pid)));
        }
    }
    let (fds0, rss0) = baseline.unwrap();
    let (fds, rss) = (fd_count(pid), rss_kb(pid));
    eprintln!("slowest accept {slowest:?}; fds {fds0} -> {fds}; rss {rss0} -> {rss} kB");
    assert!(fds <= fds0 + 4, "fds grew: {fds0} -> {fds}");
    assert!(rss < rss0 + 16 * 1024, "RSS grew: {rss0} -> {rss} kB");
    for (i, r) in readers.iter().enumerate() {
        assert!(!r.ended(), "reader {i} was dropped during the cycles");
        // Every re-publish starts with its sequence headers.
        assert!(
            r.sequence_headers() >= 50,
            "reader {i}: {} sequence headers in 100 re-publishes",
            r.sequence_headers()
        );
        r.assert_monotonic(&format!("reader {i}"));
    }
    assert!(srv.try_get("/api").is_ok(), "server is down");
}

#[test]
fn a_stopped_publisher_is_taken_over_at_once_and_cannot_disturb_its_successor() {
    let _p = heavy();
    let (srv, _rtsp, rtmp) = server("");
    let clip = clip(srv.dir.path());
    let url = format!("rtmp://127.0.0.1:{rtmp}/live/pushed");
    let mut a = push_to(&clip, &url);
    wait_publisher(&srv, "pushed", "publisher A", 10);
    let a_pub = publisher_of(&srv, "pushed").unwrap();
    let reader = FlvReader::open(srv.port, "pushed");
    signal(a.id(), 19); // SIGSTOP: half-open, the socket stays up
    let t = Instant::now();
    let mut b = push_to(&clip, &url);
    wait_until("B to take over", &srv, Duration::from_secs(3), || {
        publisher_of(&srv, "pushed").is_some_and(|p| p != a_pub)
    });
    let b_pub = publisher_of(&srv, "pushed").unwrap();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    signal(a.id(), 18); // SIGCONT: A's buffered media arrives, and is refused
    let a_err = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if a.try_wait().unwrap().is_some() {
                break stderr_of(a);
            }
            assert!(Instant::now() < deadline, "A was never disconnected");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    assert!(!a_err.is_empty(), "A ended without an error");
    let frames = reader.tags().len();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(publisher_of(&srv, "pushed").as_deref(), Some(&b_pub[..]));
    assert!(reader.tags().len() > frames + 10, "B's frames stopped");
    assert!(!reader.ended());
    reader.assert_monotonic("reader");
    kill9(&mut b);
}

#[test]
fn without_takeover_newcomers_get_each_protocols_error_until_the_silent_one_times_out() {
    let _p = heavy();
    let (srv, rtsp, rtmp) = server("publish: { takeover: false, timeout: 2s }\n");
    let clip = clip(srv.dir.path());
    let mut a = push_to(&clip, &format!("rtmp://127.0.0.1:{rtmp}/pushed"));
    wait_publisher(&srv, "pushed", "publisher A", 10);
    let a_pub = publisher_of(&srv, "pushed").unwrap();

    // Each protocol's refusal, with the reason.
    let rtmp_err = stderr_of(push_to(
        &clip,
        &format!("rtmp://127.0.0.1:{rtmp}/live/pushed"),
    ));
    assert!(
        rtmp_err.contains("already has a publisher"),
        "RTMP: {rtmp_err}"
    );
    let rtsp_err = stderr_of(push_to(&clip, &format!("rtsp://127.0.0.1:{rtsp}/pushed")));
    assert!(rtsp_err.contains("453"), "RTSP: {rtsp_err}");
    let resp = post_flv(srv.port, "pushed", b"");
    assert!(resp.starts_with("HTTP/1.1 409"), "HTTP: {resp}");
    assert!(resp.contains("already has a publisher"), "HTTP: {resp}");

    // A goes half-open. A newcomer is refused until publish.timeout (2 s)
    // passes without media, then accepted.
    signal(a.id(), 19);
    let stopped = Instant::now();
    let url = format!("rtmp://127.0.0.1:{rtmp}/live/pushed");
    let b = loop {
        let mut b = push_to(&clip, &url);
        std::thread::sleep(Duration::from_millis(300));
        if b.try_wait().unwrap().is_none()
            && publisher_of(&srv, "pushed").is_some_and(|p| p != a_pub)
        {
            break b;
        }
        kill9(&mut b);
        assert!(
            stopped.elapsed() < Duration::from_secs(6),
            "B never accepted\n{}",
            srv.log()
        );
    };
    let accepted = stopped.elapsed();
    assert!(
        accepted >= Duration::from_millis(1500),
        "B accepted after only {accepted:?}, while A was still within publish.timeout"
    );
    let b_pub = publisher_of(&srv, "pushed").unwrap();
    // A wakes up: refused, and B stays.
    signal(a.id(), 18);
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "A was never disconnected");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(publisher_of(&srv, "pushed").as_deref(), Some(&b_pub[..]));
    let mut b = b;
    kill9(&mut b);
}

/// The RTMP handshake (§5.2) by hand, for a client that then misbehaves.
fn rtmp_handshake(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut c0c1 = vec![3u8];
    c0c1.extend(std::iter::repeat_n(7u8, 1536));
    s.write_all(&c0c1).unwrap();
    let mut s0s1s2 = vec![0u8; 1 + 2 * 1536];
    s.read_exact(&mut s0s1s2).unwrap();
    assert_eq!(s0s1s2[0], 3);
    s.write_all(&s0s1s2[1..1537]).unwrap();
    s
}

/// Reads until the server closes; panics if it does not within 10 s.
fn read_until_closed(s: &mut TcpStream, what: &str) {
    let t = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("{what}: not closed after {:?}: {e}", t.elapsed()),
        }
    }
}

#[test]
fn garbage_from_a_publisher_ends_it_and_the_stream_is_free_at_once() {
    let _p = heavy();
    // Without takeover: "free" must mean released, not taken over.
    let rtmp = free_port();
    let srv = Server::start(
        "  pushed:\n  cam:\n",
        &format!("rtmp: {{ listen: \"127.0.0.1:{rtmp}\" }}\npublish: {{ takeover: false }}\n"),
    );
    let clip = clip(srv.dir.path());
    // 1. RTMP: ffmpeg's own publish of `live/cam` (a capture), cut short,
    // then garbage.
    let capture = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/rtmp_publish.bin"),
    )
    .unwrap();
    let mut s = rtmp_handshake(rtmp);
    s.write_all(&capture[..capture.len() / 2]).unwrap();
    wait_publisher(&srv, "cam", "the replayed publisher", 5);
    let junk: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let _ = s.write_all(&junk);
    read_until_closed(&mut s, "RTMP garbage");
    wait_no_publisher(&srv, "cam", "the stream to be free", 2);
    let mut p = push_to(&clip, &format!("rtmp://127.0.0.1:{rtmp}/live/cam"));
    wait_publisher(&srv, "cam", "a new publisher after garbage", 5);
    kill9(&mut p);
    assert!(
        srv.log().contains("rtmp publisher disconnected"),
        "the log names the garbage"
    );

    // 2. Garbage right after the handshake: closed, nothing held.
    let mut s = rtmp_handshake(rtmp);
    let _ = s.write_all(&junk);
    read_until_closed(&mut s, "RTMP garbage after handshake");

    // 3. HTTP: a valid FLV start, then garbage: 400 naming the offset.
    let flv = {
        let out = srv.dir.path().join("start.flv");
        let (o, _) = run_with_timeout(
            std::process::Command::new("ffmpeg")
                .args(["-v", "error", "-y", "-i"])
                .arg(&clip)
                .args(["-t", "1", "-c", "copy", "-f", "flv"])
                .arg(&out),
            Duration::from_secs(20),
        );
        assert!(o.status.success());
        std::fs::read(out).unwrap()
    };
    let post = |body: &[u8]| post_flv(srv.port, "pushed", body);
    // The header and the first ten tags (E.3: header, PreviousTagSize0,
    // then tag + PreviousTagSize), then a tag type that does not exist.
    let mut at = 13;
    for _ in 0..10 {
        at += 11 + u32::from_be_bytes([0, flv[at + 1], flv[at + 2], flv[at + 3]]) as usize + 4;
    }
    let mut bad = flv[..at].to_vec();
    bad.extend_from_slice(&[0xEE; 64]);
    let resp = post(&bad);
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(resp.contains("\"offset\""), "{resp}");
    assert!(publisher_of(&srv, "pushed").is_none());

    // 4. A truncated FLV (the body ends mid-tag): the publisher is done,
    // the stream free.
    let resp = post(&flv[..flv.len() / 2 + 7]);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(publisher_of(&srv, "pushed").is_none());

    // And a real publisher gets in at once.
    let mut p = push_to(&clip, &srv.url("/api/stream.flv?dst=pushed"));
    wait_publisher(&srv, "pushed", "a real publisher", 5);
    kill9(&mut p);
}

#[test]
fn unknown_names_are_refused_unless_auto_create() {
    let _p = heavy();
    let (srv, _rtsp, rtmp) = server("");
    let dir = tempfile::tempdir().unwrap(); // outlives the first server
    let clip = clip(dir.path());
    let err = stderr_of(push_to(
        &clip,
        &format!("rtmp://127.0.0.1:{rtmp}/live/nosuch"),
    ));
    assert!(err.contains("nosuch: not found"), "RTMP: {err}");
    let resp = post_flv(srv.port, "nosuch", b"");
    assert!(resp.starts_with("HTTP/1.1 404"), "HTTP: {resp}");
    let (st, _) = srv.get_json("/api/streams?src=nosuch");
    assert_eq!(st, 404);
    // Playing an unknown name over RTMP is refused cleanly too.
    let (o, _) = run_with_timeout(
        std::process::Command::new("ffprobe")
            .args(["-v", "error"])
            .arg(format!("rtmp://127.0.0.1:{rtmp}/live/nosuch")),
        Duration::from_secs(10),
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("nosuch: not found"), "RTMP play: {err}");
    drop(srv);

    let (srv, _rtsp, rtmp) = server("publish: { auto_create: true }\n");
    let mut p = push_to(&clip, &format!("rtmp://127.0.0.1:{rtmp}/live/fresh"));
    wait_publisher(&srv, "fresh", "the created stream", 10);
    assert_eq!(
        probe_streams(&srv.url("/api/stream.flv?src=fresh")).len(),
        2,
        "the created stream plays"
    );
    kill9(&mut p);
    // A name we would not create is refused with the reason.
    let err = stderr_of(push_to(
        &clip,
        &format!("rtmp://127.0.0.1:{rtmp}/live/bad!name"),
    ));
    assert!(err.contains("stream name"), "{err}");
}

/// GStreamer publishing `live/pushed` through `sink`: `rtmpsink` is
/// librtmp, the library OBS's RTMP output grew from; `rtmp2sink` is
/// GStreamer's own client.
fn gst_publish(sink: &str, url: &str) -> Child {
    let pipeline = format!(
        "videotestsrc is-live=true ! video/x-raw,width=320,height=240,framerate=25/1 \
         ! x264enc tune=zerolatency key-int-max=25 speed-preset=ultrafast ! h264parse \
         ! flvmux name=m streamable=true ! {sink} location={url} \
         audiotestsrc is-live=true ! audioconvert ! avenc_aac ! aacparse ! m."
    );
    std::process::Command::new("gst-launch-1.0")
        .arg("-q")
        .args(pipeline.split_whitespace())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn librtmp_and_gstreamer_publish_and_rtmpdump_plays() {
    let _p = heavy();
    let (srv, _rtsp, rtmp) = server("");
    let want = vec![
        ("audio".to_string(), "aac".to_string()),
        ("video".to_string(), "h264".to_string()),
    ];
    for sink in ["rtmpsink", "rtmp2sink"] {
        let mut p = gst_publish(sink, &format!("rtmp://127.0.0.1:{rtmp}/live/pushed"));
        wait_publisher(&srv, "pushed", sink, 10);
        assert_eq!(
            probe_streams(&srv.url("/api/stream.flv?src=pushed")),
            want,
            "{sink}"
        );
        if sink == "rtmpsink" {
            // librtmp as the player too.
            let out = srv.dir.path().join("dump.flv");
            let mut dump = std::process::Command::new("rtmpdump")
                .args(["-q", "--live", "-r"])
                .arg(format!("rtmp://127.0.0.1:{rtmp}/live/pushed"))
                .arg("-o")
                .arg(&out)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_secs(3));
            // SIGINT: rtmpdump finishes the tag it is writing, then exits.
            signal(dump.id(), 2);
            let _ = dump.wait();
            assert_eq!(probe_streams(out.to_str().unwrap()), want, "rtmpdump");
            assert_decodes_cleanly(&out, "rtmpdump");
        }
        kill9(&mut p);
        wait_no_publisher(&srv, "pushed", "the publisher to leave", 3);
    }
}

#[test]
fn a_publisher_comes_before_the_sources_and_viewers_go_back_to_them_when_it_leaves() {
    let _p = heavy();
    let rtmp = free_port();
    let srv = Server::start(
        &format!("  mixed: \"{}\"\n", demo_source(25)),
        // A camera stream takes a publisher only when the config says so.
        &format!(
            "rtmp: {{ listen: \"127.0.0.1:{rtmp}\" }}\npublish: {{ replace_sources: [mixed] }}\n"
        ),
    );
    let big = clip_sized(srv.dir.path(), "640x360");
    let reader = FlvReader::open(srv.port, "mixed");
    wait_until("the source's frames", &srv, Duration::from_secs(10), || {
        reader.frames_since_last_config().0 >= 10
    });
    let mut p = push_to(&big, &format!("rtmp://127.0.0.1:{rtmp}/live/mixed"));
    wait_until(
        "the publisher's frames",
        &srv,
        Duration::from_secs(10),
        || reader.configs().len() == 2 && reader.frames_since_last_config().0 >= 10,
    );
    let configs = reader.configs();
    assert_ne!(
        configs[0], configs[1],
        "the publisher's SPS replaced the source's"
    );
    kill9(&mut p);
    wait_until("back to the source", &srv, Duration::from_secs(10), || {
        reader.configs().len() == 3 && reader.frames_since_last_config().0 >= 10
    });
    assert_eq!(reader.configs()[2], configs[0]);
    assert!(!reader.ended());
    reader.assert_monotonic("reader");
    let (_, starts_on_key) = reader.frames_since_last_config();
    assert!(starts_on_key);
}
