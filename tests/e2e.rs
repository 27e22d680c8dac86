//! The real binary, real ffmpeg producers, real ffprobe/ffmpeg clients.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn wait_bytes(srv: &Server, d: &Drain, n: u64) {
    srv.wait_for(
        &format!("{n} bytes of FLV"),
        Duration::from_secs(20),
        || d.bytes() >= n,
    );
}

/// A producer whose shell ignores SIGTERM and runs ffmpeg as a grandchild:
/// only the process-group SIGKILL ends it.
fn stubborn_source() -> String {
    let ffmpeg = "ffmpeg -hide_banner -loglevel error -nostdin -re -f lavfi -i testsrc2=size=160x120:rate=25 \
                  -c:v libx264 -preset ultrafast -tune zerolatency -g 25 -f flv -flvflags no_duration_filesize pipe:1";
    format!("'exec:sh -c \"trap \\\"echo ignoring TERM >&2\\\" TERM; {ffmpeg} & while :; do sleep 0.2; done\"#kill_timeout=1s'")
}

#[test]
fn demo_is_h264_and_aac_and_a_late_joiner_gets_a_picture_at_once() {
    let _p = heavy();
    // A 20 s GOP: a late joiner that waited for the next keyframe would wait
    // many seconds; one served from the GOP cache starts at once.
    let srv = Server::start(&format!("  demo: \"{}\"\n", demo_source(500)), "");
    let (_, v) = srv.get_json("/api/streams");
    assert_eq!(v["demo"]["producers"][0]["state"], "idle", "{v}");

    let (status, s) = open_flv(srv.port, "demo");
    assert_eq!(status, 200);
    let started = Instant::now();
    let first = Drain::new(s);
    wait_bytes(&srv, &first, 10_000);
    let (_, v) = srv.get_json("/api/streams");
    assert_eq!(v["demo"]["producers"][0]["state"], "running", "{v}");
    assert!(v["demo"]["producers"][0]["pid"].as_u64().is_some(), "{v}");
    assert_eq!(v["demo"]["consumers"][0]["protocol"], "http-flv", "{v}");

    // The late joiner: one decoded picture, well before the next keyframe.
    std::thread::sleep(Duration::from_secs(1));
    let png = srv.dir.path().join("late.png");
    let (out, took) = run_with_timeout(
        Command::new("ffmpeg")
            .args([
                "-v",
                "error",
                "-i",
                &srv.url("/api/stream.flv?src=demo"),
                "-frames:v",
                "1",
                "-y",
            ])
            .arg(&png),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::metadata(&png).unwrap().len() > 1000);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "late joiner took {took:?}: it waited for the next keyframe instead of starting at the cached one"
    );

    assert_eq!(
        probe_streams(&srv.url("/api/stream.flv?src=demo")),
        vec![
            ("audio".to_string(), "aac".to_string()),
            ("video".to_string(), "h264".to_string())
        ]
    );
    first.close();
}

#[test]
fn rtsp_camera_is_relayed() {
    let _p = heavy();
    let cam = Camera::start();
    let srv = Server::start(&format!("  cam: {}\n", cam.url), "");
    assert_eq!(
        probe_streams(&srv.url("/api/stream.flv?src=cam")),
        vec![
            ("audio".to_string(), "aac".to_string()),
            ("video".to_string(), "h264".to_string())
        ]
    );
    let (_, v) = srv.get_json("/api/streams?src=cam");
    assert_eq!(
        v["producers"][0]["url"],
        cam.url.as_str(),
        "url is echoed exactly as configured"
    );
}

#[test]
fn last_viewer_leaving_kills_the_whole_group_and_next_viewer_restarts() {
    let _p = heavy();
    let srv = Server::start(&format!("  x: {}\n", stubborn_source()), "");
    let (status, s) = open_flv(srv.port, "x");
    assert_eq!(status, 200, "{}", srv.log());
    let reader = Drain::new(s);
    wait_bytes(&srv, &reader, 5_000);
    let pid = srv.producer_pids("x")[0];
    // The group is sh, its ffmpeg and its sleep: more than the leader alone.
    srv.wait_for("sh and its children", Duration::from_secs(5), || {
        group_members(pid).len() >= 2
    });

    reader.close();
    let left = Instant::now();
    srv.wait_for("the group to be gone", Duration::from_secs(10), || {
        group_members(pid).is_empty()
    });
    let took = left.elapsed();
    // linger 0 + kill_timeout 1 s + 0.5 s.
    assert!(
        took <= Duration::from_millis(1500),
        "group lived {took:?} after the last viewer left\n{}",
        srv.log()
    );
    srv.wait_for("stop logged", Duration::from_secs(5), || {
        srv.log().contains("SIGKILL")
    });
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "leader {pid} not reaped"
    );

    // The next viewer starts it all again.
    let (status, s) = open_flv(srv.port, "x");
    assert_eq!(status, 200);
    let again = Drain::new(s);
    wait_bytes(&srv, &again, 5_000);
    let pid2 = srv.producer_pids("x")[0];
    assert_ne!(pid, pid2);
    again.close();
}

#[test]
fn fifty_readers_all_get_frames_and_a_stalled_one_does_not_hold_them_up() {
    let _p = heavy();
    // About 2 Mbit/s, so that the stalled reader's buffers fill quickly.
    let srv = Server::start(
        &format!("  demo: \"{}\"\n", demo_source_sized(25, "640x360")),
        "",
    );
    // A reader that never reads at all.
    let stalled = open_stalled_flv(srv.port, "demo");
    let readers: Vec<Drain> = (0..50)
        .map(|_| {
            let (status, s) = open_flv(srv.port, "demo");
            assert_eq!(status, 200);
            Drain::new(s)
        })
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    let mid: Vec<u64> = readers.iter().map(Drain::bytes).collect();
    std::thread::sleep(Duration::from_secs(3));
    for (i, r) in readers.iter().enumerate() {
        let got = r.bytes() - mid[i];
        // The demo stream is ~30 KB/s; every reader keeps receiving.
        assert!(
            got > 20_000,
            "reader {i} got only {got} bytes in 3 s\n{}",
            srv.log()
        );
    }
    let (_, v) = srv.get_json("/api/streams?src=demo");
    assert_eq!(v["consumers"].as_array().unwrap().len(), 51, "{v}");
    assert_eq!(
        srv.producer_pids("demo").len(),
        1,
        "one producer for all viewers"
    );
    let rss_kb = || rss_kb(srv.pid());
    let rss_before = rss_kb();
    // The stalled reader is cut off after WRITE_STALL (15 s) without
    // progress; the others keep going meanwhile.
    let before: Vec<u64> = readers.iter().map(Drain::bytes).collect();
    srv.wait_for(
        "the stalled reader to be disconnected",
        Duration::from_secs(30),
        || {
            let (_, v) = srv.get_json("/api/streams?src=demo");
            v["consumers"].as_array().unwrap().len() == 50
        },
    );
    for (i, r) in readers.iter().enumerate() {
        assert!(r.bytes() > before[i], "reader {i} stopped receiving");
    }
    // Memory is bounded by the ring, not by what the stalled one missed.
    assert!(
        rss_kb() < rss_before + 64 * 1024,
        "rss {rss_before} kB -> {} kB",
        rss_kb()
    );
    drop(stalled);
    for r in readers {
        r.close();
    }
}

#[test]
fn malformed_config_is_rejected_with_file_line_col() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    for (text, at, what) in [
        (
            "streams:\n  cam: foo://bar\n",
            ":2:8:",
            "unknown source scheme",
        ),
        (
            "supervisor:\n  kill_timeout: soon\n",
            ":2:17:",
            "kill_timeout",
        ),
        ("streams:\n  a: [rtsp://x\n", ":", ""),
    ] {
        std::fs::write(&bad, text).unwrap();
        for args in [vec!["check", "-c"], vec!["-c"]] {
            let (out, _) = run_with_timeout(
                Command::new(bin()).args(&args).arg(&bad),
                Duration::from_secs(10),
            );
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{args:?} on {text:?}: {err}");
            assert!(
                err.contains(&format!("bad.yaml{at}")),
                "{args:?} on {text:?}: {err}"
            );
            assert!(err.contains(what), "{err}");
        }
    }
    std::fs::write(&bad, "streams:\n  cam: rtsp://10.0.0.9/s\n").unwrap();
    let (out, _) = run_with_timeout(
        Command::new(bin()).args(["check", "-c"]).arg(&bad),
        Duration::from_secs(10),
    );
    assert!(out.status.success());
    let (out, _) = run_with_timeout(
        Command::new(bin()).arg("--version"),
        Duration::from_secs(10),
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("streamvisor "));
}

#[test]
fn api_errors_are_json_and_name_what_is_wrong() {
    let srv = Server::start("  pushed:\n", "");
    let (status, v) = srv.get_json("/api/stream.flv?src=nope");
    assert_eq!(status, 404);
    assert_eq!(v["stream"], "nope", "{v}");
    let (status, v) = srv.get_json("/api/streams?src=nope");
    assert_eq!(status, 404, "{v}");
    let (status, v) = srv.get_json("/api/stream.flv");
    assert_eq!(status, 400);
    assert_eq!(v["parameter"], "src", "{v}");
    let (status, v) = srv.get_json("/api/stream.flv?src=pushed&exclude=x");
    assert_eq!(status, 400);
    assert_eq!(v["parameter"], "exclude", "{v}");
    let (status, v) = srv.get_json("/api/stream.flv?src=pushed");
    assert_eq!(status, 503, "a publish-only stream with no publisher: {v}");
    let (status, _) = srv.get_json("/api/nothing-here");
    assert_eq!(status, 404);
    let (status, v) = srv.get_json("/api");
    assert_eq!(status, 200);
    assert!(v["version"].as_str().unwrap().starts_with("1."), "{v}");
    assert!(v["streamvisor"].is_string(), "{v}");
}

#[test]
fn a_source_that_fails_to_start_gives_5xx_with_the_stderr_tail() {
    let _p = heavy();
    let closed = free_port();
    let srv = Server::start(
        &format!("  bad: rtsp://127.0.0.1:{closed}/nothing#start_timeout=3s\n"),
        "",
    );
    let t = Instant::now();
    let (status, v) = srv.get_json("/api/stream.flv?src=bad");
    let took = t.elapsed();
    assert_eq!(status, 502, "{v}");
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_secs(5),
        "answered after {took:?}"
    );
    let tail = v["sources"][0]["stderr_tail"].to_string();
    assert!(tail.contains("Connection refused"), "{v}");
    assert_eq!(v["stream"], "bad");
    srv.wait_for("producers idle", Duration::from_secs(5), || {
        let (_, v) = srv.get_json("/api/streams?src=bad");
        v["producers"][0]["state"] == "idle"
    });
    assert!(
        children_of(srv.pid()).is_empty(),
        "a child outlived the failed start"
    );
}

#[test]
fn sigterm_leaves_no_children() {
    let _p = heavy();
    let mut srv = Server::start(
        &format!(
            "  x: {}\n  demo: \"{}\"\n",
            stubborn_source(),
            demo_source(25)
        ),
        "",
    );
    let a = Drain::new(open_flv(srv.port, "x").1);
    let b = Drain::new(open_flv(srv.port, "demo").1);
    wait_bytes(&srv, &a, 5_000);
    wait_bytes(&srv, &b, 5_000);
    let pids = [srv.producer_pids("x")[0], srv.producer_pids("demo")[0]];
    let (status, took) = srv.terminate(Duration::from_secs(10));
    let status = status.expect("server did not exit");
    assert!(status.success(), "{status}");
    // kill_timeout (1 s for the stubborn source) + 1 s.
    assert!(
        took <= Duration::from_secs(2),
        "exit took {took:?}\n{}",
        srv.log()
    );
    for pid in pids {
        assert!(
            group_members(pid).is_empty(),
            "group {pid} outlived the server: {:?}",
            group_members(pid)
        );
    }
    drop((a, b));
}

/// Reads a connection to its end, and says when that was.
struct Closes {
    at: std::sync::Arc<std::sync::Mutex<Option<Instant>>>,
    bytes: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Closes {
    fn new(mut s: std::net::TcpStream) -> Closes {
        use std::io::Read;
        let at = std::sync::Arc::new(std::sync::Mutex::new(None));
        let bytes = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (a, b) = (at.clone(), bytes.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            // Bounded: a server that never closes leaves this thread to
            // the test's end, not forever.
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            while let Ok(n @ 1..) = s.read(&mut buf) {
                b.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
            }
            *a.lock().unwrap() = Some(Instant::now());
        });
        Closes { at, bytes }
    }

    fn closed_at(&self) -> Option<Instant> {
        *self.at.lock().unwrap()
    }

    fn bytes(&self) -> u64 {
        self.bytes.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Shutdown in order (issue 18): on SIGTERM every listener (HTTP, RTSP,
/// RTMP) stops accepting and ends its connections, and only then do the
/// producers stop, so that no viewer is left to start one again. The
/// stubborn producer needs its whole kill_timeout (1 s) to go; the viewers
/// and the ports are gone long before, and the exit keeps its bound.
#[test]
fn sigterm_ends_every_viewer_and_closes_every_port_before_the_producers_stop() {
    let _p = heavy();
    let (rtsp, rtmp) = (free_port(), free_port());
    let mut srv = Server::start(
        &format!("  x: {}\n", stubborn_source()),
        &format!(
            "rtsp: {{ listen: \"127.0.0.1:{rtsp}\" }}\nrtmp: {{ listen: \"127.0.0.1:{rtmp}\" }}\n"
        ),
    );
    let flv = Closes::new(open_flv(srv.port, "x").1);
    let player = RtspClient::play_tcp(rtsp, "x");
    let rtsp_viewer = Closes::new(player.sock.try_clone().unwrap());
    // A connection that has not even begun its handshake is ended too.
    let rtmp_conn = Closes::new(std::net::TcpStream::connect(("127.0.0.1", rtmp)).unwrap());
    srv.wait_for("both viewers' media", Duration::from_secs(20), || {
        flv.bytes() > 5_000 && rtsp_viewer.bytes() > 5_000
    });
    let group = srv.producer_pids("x")[0];
    let ports = [srv.port, rtsp, rtmp];
    let watcher = std::thread::spawn(move || {
        // Once all three connections are gone: is the producer still up,
        // and does any port still take a connection?
        let deadline = Instant::now() + Duration::from_secs(3);
        let all = [&flv, &rtsp_viewer, &rtmp_conn];
        while all.iter().any(|c| c.closed_at().is_none()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let ended: Vec<Option<Instant>> = all.iter().map(|c| c.closed_at()).collect();
        let producer_alive = !group_members(group).is_empty();
        let open: Vec<u16> = ports
            .into_iter()
            .filter(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok())
            .collect();
        (ended, producer_alive, open)
    });
    let sent = Instant::now();
    let (status, took) = srv.terminate(Duration::from_secs(10));
    let (ended, producer_alive, open) = watcher.join().unwrap();
    assert!(status.expect("server did not exit").success());
    let ended: Vec<Duration> = ended
        .iter()
        .map(|t| {
            t.expect("a connection outlived the server")
                .duration_since(sent)
        })
        .collect();
    assert!(
        ended.iter().all(|d| *d < Duration::from_millis(800)),
        "HTTP-FLV, RTSP and RTMP connections ended {ended:?} after SIGTERM\n{}",
        srv.log()
    );
    assert!(
        producer_alive,
        "the producer was gone before the viewers were ended ({ended:?})"
    );
    assert!(open.is_empty(), "ports {open:?} still accepted connections");
    // kill_timeout (1 s) + 1 s, as before.
    assert!(took <= Duration::from_secs(2), "exit took {took:?}");
    assert!(group_members(group).is_empty(), "the producer outlived us");
    drop(player);
}

#[test]
fn camera_pcma_is_transcoded_by_reading_the_stream_back() {
    let _p = heavy();
    // go2rtc's idiom: the camera's G.711, made AAC by a second source that
    // reads the stream itself back.
    let cam = PCMA_CAMERA;
    let srv = Server::start(
        &format!("  cam2: [\"{cam}\", \"ffmpeg:cam2#audio=aac\"]\n"),
        "",
    );
    // The very first viewer already gets AAC: viewers wait (briefly) until
    // the transcoder has said what it carries, instead of starting on the
    // camera's G.711 and being switched.
    assert_eq!(
        probe_streams(&srv.url("/api/stream.flv?src=cam2")),
        vec![
            ("audio".to_string(), "aac".to_string()),
            ("video".to_string(), "h264".to_string())
        ]
    );
    let warm = Drain::new(open_flv(srv.port, "cam2").1);
    srv.wait_for(
        "both producers and the internal reader",
        Duration::from_secs(20),
        || {
            let (_, v) = srv.get_json("/api/streams?src=cam2");
            let internal = v["consumers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["internal"] == true);
            internal && v["producers"][1]["bytes"].as_u64().unwrap_or(0) > 2000
        },
    );
    warm.close();
    // The internal reader must not keep the stream alive.
    srv.wait_for(
        "cam2 to stop after its last real viewer",
        Duration::from_secs(10),
        || {
            let (_, v) = srv.get_json("/api/streams?src=cam2");
            v["producers"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["state"] == "idle")
        },
    );
}

#[test]
fn progressive_mp4_is_h264_and_aac_and_records_cleanly() {
    let _p = heavy();
    let srv = Server::start(&format!("  demo: \"{}\"\n", demo_source(25)), "");
    let url = srv.url("/api/stream.mp4?src=demo");
    assert_eq!(
        probe_streams(&url),
        vec![
            ("audio".to_string(), "aac".to_string()),
            ("video".to_string(), "h264".to_string())
        ]
    );
    let out = srv.dir.path().join("five.mp4");
    let (o, _) = run_with_timeout(
        Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-i", &url, "-t", "5", "-c", "copy"])
            .arg(&out),
        Duration::from_secs(30),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_decodes_cleanly(&out, "stream.mp4");
    let v = ffprobe(
        out.to_str().unwrap(),
        "codec_name",
        &["-show_entries", "format=duration"],
    );
    let secs: f64 = v["format"]["duration"].as_str().unwrap().parse().unwrap();
    assert!((4.5..=5.5).contains(&secs), "{secs} s recorded");
}

/// An FLV body as far as its tags are whole (E.2, E.4.1): checks the file
/// header, each tag's PreviousTagSize and that each track's timestamps
/// never go back; returns how many tags it walked.
fn walk_flv(body: &[u8]) -> usize {
    assert!(body.len() >= 13, "{} bytes", body.len());
    assert_eq!(&body[..4], b"FLV\x01", "the file header");
    let mut at = 13;
    let mut tags = 0;
    let mut last = [0u32; 2];
    while at + 11 <= body.len() {
        let kind = body[at];
        let size = u32::from_be_bytes([0, body[at + 1], body[at + 2], body[at + 3]]) as usize;
        if at + 11 + size + 4 > body.len() {
            break;
        }
        assert!(kind == 8 || kind == 9, "tag type {kind} at byte {at}");
        let ts = u32::from_be_bytes([body[at + 7], body[at + 4], body[at + 5], body[at + 6]]);
        let k = usize::from(kind == 9);
        assert!(
            ts >= last[k],
            "timestamps of type {kind} go back at byte {at}"
        );
        last[k] = ts;
        let prev = &body[at + 11 + size..at + 15 + size];
        assert_eq!(
            u32::from_be_bytes(prev.try_into().unwrap()) as usize,
            11 + size,
            "PreviousTagSize at byte {at}"
        );
        at += 15 + size;
        tags += 1;
    }
    tags
}

/// Reads a response to `request` for `secs`: its head and its body bytes.
fn read_response(port: u16, request: &str, secs: u64) -> (String, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let until = Instant::now() + Duration::from_secs(secs);
    let mut all = Vec::new();
    let mut buf = [0u8; 65536];
    while Instant::now() < until {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&all[..end]).to_ascii_lowercase();
    (head, all[end + 4..].to_vec())
}

/// HTTP-FLV over TCP is written by the producer's side once hyper has
/// sent the head (issue 17): over HTTP/1.1 in chunks of its own, over
/// HTTP/1.0 as it is until the close. Either way a client reads whole,
/// ordered FLV; and a HEAD gets the head alone.
#[test]
fn http_flv_is_whole_in_http_1_1_chunks_and_over_http_1_0_and_head_has_no_body() {
    let _p = heavy();
    let srv = Server::start(&format!("  demo: \"{}\"\n", demo_source(25)), "");
    let path = "/api/stream.flv?src=demo";

    let (head, raw) = read_response(
        srv.port,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"),
        3,
    );
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    // RFC 9112 §7.1: size line, data, CRLF; no empty chunk while it plays.
    let mut body = Vec::new();
    let mut at = 0;
    while let Some(eol) = raw[at..].windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&raw[at..at + eol]).expect("a chunk size line");
        let size = usize::from_str_radix(size, 16).expect("a hex chunk size");
        assert!(size > 0, "an empty chunk ended the body at byte {at}");
        let data = at + eol + 2;
        if data + size + 2 > raw.len() {
            break;
        }
        assert_eq!(
            &raw[data + size..data + size + 2],
            b"\r\n",
            "chunk end at byte {at}"
        );
        body.extend_from_slice(&raw[data..data + size]);
        at = data + size + 2;
    }
    let tags = walk_flv(&body);
    assert!(tags > 100, "{tags} tags in 3 s over HTTP/1.1");

    let (head, body) = read_response(srv.port, &format!("GET {path} HTTP/1.0\r\n\r\n"), 3);
    assert!(head.starts_with("http/1.0 200"), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
    let tags = walk_flv(&body);
    assert!(tags > 100, "{tags} tags in 3 s over HTTP/1.0");

    let (head, body) = read_response(
        srv.port,
        &format!("HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n"),
        2,
    );
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(body.is_empty(), "a HEAD got {} body bytes", body.len());
}
