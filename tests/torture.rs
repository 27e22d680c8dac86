//! The torture suite (issue 5): what goes wrong in the field, with real
//! processes, checked in /proc. Each scenario is one named test.

mod common;

use std::io::Read;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// Video alone from one exec source.
fn video_source() -> String {
    "exec:ffmpeg -hide_banner -loglevel error -nostdin -re -f lavfi -i testsrc2=size=160x120:rate=25 \
     -c:v libx264 -preset ultrafast -tune zerolatency -g 25 -pix_fmt yuv420p -f flv -flvflags no_duration_filesize pipe:1"
        .to_string()
}

/// Audio alone, from a shell that ignores TERM and runs ffmpeg as a
/// grandchild: only the group SIGKILL ends it.
fn stubborn_audio_source() -> String {
    let ffmpeg =
        "ffmpeg -hide_banner -loglevel error -nostdin -re -f lavfi -i sine=sample_rate=44100 \
                  -c:a aac -b:a 64k -f flv -flvflags no_duration_filesize pipe:1";
    format!("'exec:sh -c \"trap \\\"echo ignoring TERM >&2\\\" TERM; {ffmpeg} & while :; do sleep 0.2; done\"#kill_timeout=1s'")
}

fn read_for(srv: &Server, stream: &str, secs: u32) -> std::process::Child {
    Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-i",
            &srv.url(&format!("/api/stream.flv?src={stream}")),
            "-t",
            &secs.to_string(),
            "-c",
            "copy",
            "-f",
            "null",
            "-",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn av_sources_close_together_and_reopen_20_times() {
    let _p = heavy();
    let srv = Server::start(
        &format!(
            "  av:\n    - \"{}#kill_timeout=1s\"\n    - {}\n",
            video_source(),
            stubborn_audio_source()
        ),
        "",
    );
    for round in 0..20 {
        // Two seconds are plenty: ffmpeg names both tracks when it opens
        // the stream, and by then both producers run (a real viewer is let
        // in only when every source has said which tracks it has).
        let reader = read_for(&srv, "av", 2);
        let mut pids = Vec::new();
        srv.wait_for("both producers", Duration::from_secs(15), || {
            pids = srv.producer_pids("av");
            pids.len() == 2
        });
        let out = reader.wait_with_output().unwrap();
        let left = Instant::now();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("Video: h264") && err.contains("Audio: aac"),
            "round {round}: both must flow:\n{err}"
        );
        srv.wait_for("both groups gone", Duration::from_secs(10), || {
            pids.iter().all(|p| group_members(*p).is_empty())
        });
        let took = left.elapsed();
        // linger 0 + kill_timeout 1 s + 0.5 s.
        assert!(
            took <= Duration::from_millis(1500),
            "round {round}: groups lived {took:?}\n{}",
            srv.log()
        );
    }
}

#[test]
fn camera_restart_readers_resume() {
    let _p = heavy();
    let port = free_port();
    let camera = Camera::start_on(port);
    let srv = Server::start(&format!("  cam: {}\n", camera.url), "");
    let readers: Vec<_> = (0..3)
        .map(|_| Drain::new(open_flv(srv.port, "cam").1))
        .collect();
    // A fourth viewer records, to check the timestamps across the restart.
    let recording = srv.dir.path().join("through.flv");
    let recorder = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-i",
            &srv.url("/api/stream.flv?src=cam"),
            "-t",
            "14",
            "-c",
            "copy",
        ])
        .arg(&recording)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    srv.wait_for("frames", Duration::from_secs(15), || {
        readers.iter().all(|r| r.bytes() > 10_000)
    });
    drop(camera);
    std::thread::sleep(Duration::from_secs(3));
    let before: Vec<u64> = readers.iter().map(Drain::bytes).collect();
    let _camera = Camera::start_on(port);
    srv.wait_for("frames again", Duration::from_secs(30), || {
        readers
            .iter()
            .zip(&before)
            .all(|(r, b)| r.bytes() > b + 20_000)
    });
    let (_, v) = srv.get_json("/api/streams?src=cam");
    assert!(v["producers"][0]["restarts"].as_u64().unwrap() >= 1, "{v}");
    assert!(
        v["consumers"].as_array().unwrap().len() >= 3,
        "the readers stayed: {v}"
    );
    let out = recorder.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every track's dts only goes forward, through the gap.
    let v = ffprobe(
        recording.to_str().unwrap(),
        "codec_type",
        &["-show_entries", "packet=stream_index,dts"],
    );
    let mut last: std::collections::HashMap<u64, i64> = Default::default();
    let packets = v["packets"].as_array().unwrap();
    assert!(packets.len() > 100, "{} packets", packets.len());
    for p in packets {
        let (i, dts) = (
            p["stream_index"].as_u64().unwrap(),
            p["dts"].as_i64().unwrap(),
        );
        if let Some(prev) = last.insert(i, dts) {
            assert!(
                dts >= prev,
                "stream {i}: dts went back from {prev} to {dts}"
            );
        }
    }
    for r in readers {
        r.close();
    }
}

#[test]
fn camera_down_at_start() {
    let _p = heavy();
    let port = free_port();
    let srv = Server::start(
        &format!("  cam: rtsp://127.0.0.1:{port}/cam#start_timeout=15s\n"),
        "",
    );
    let reader = read_for(&srv, "cam", 2);
    std::thread::sleep(Duration::from_secs(4));
    let _camera = Camera::start_on(port);
    let out = reader.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.contains("Video: h264"),
        "the viewer never got video:\n{err}\n{}",
        srv.log()
    );
}

#[test]
fn never_outputs_gives_an_error_within_start_timeout() {
    let srv = Server::start(
        "  mute: \"exec:sleep 1000#start_timeout=2s#kill_timeout=500ms\"\n",
        "",
    );
    let t = Instant::now();
    let (status, v) = srv.get_json("/api/stream.flv?src=mute");
    assert_eq!(status, 502, "{v}");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "answered after {:?}",
        t.elapsed()
    );
    srv.wait_for("no child left", Duration::from_secs(5), || {
        children_of(srv.pid()).is_empty()
    });
}

#[test]
fn stalled_source_is_restarted() {
    let _p = heavy();
    let srv = Server::start(
        &format!(
            "  demo: \"{}#stall_timeout=3s#kill_timeout=1s\"\n",
            demo_source(25)
        ),
        "",
    );
    let reader = Drain::new(open_flv(srv.port, "demo").1);
    srv.wait_for("frames", Duration::from_secs(15), || {
        reader.bytes() > 10_000
    });
    let pid = srv.producer_pids("demo")[0];
    signal(pid, 19); // SIGSTOP: alive, silent, deaf to SIGTERM
    let stopped = Instant::now();
    let mut new_pid = pid;
    srv.wait_for("a new producer", Duration::from_secs(15), || {
        new_pid = srv.producer_pids("demo").first().copied().unwrap_or(pid);
        new_pid != pid
    });
    // stall_timeout 3 s + kill_timeout 1 s, and the first backoff.
    assert!(
        stopped.elapsed() < Duration::from_secs(6),
        "restarted after {:?}",
        stopped.elapsed()
    );
    let (_, v) = srv.get_json("/api/streams?src=demo");
    assert!(
        v["producers"][0]["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("stalled"),
        "{v}"
    );
    assert!(group_members(pid).is_empty(), "the stopped one was killed");
    let at = reader.bytes();
    srv.wait_for("the viewer resumes", Duration::from_secs(10), || {
        reader.bytes() > at + 10_000
    });
    reader.close();
}

#[test]
fn churn_leaves_no_zombie_no_fd_and_no_memory_behind() {
    let _p = heavy();
    let srv = Server::start(&format!("  demo: \"{}\"\n", demo_source(25)), "");
    // One steady viewer keeps the producer up: the churn is viewers only.
    let steady = Drain::new(open_flv(srv.port, "demo").1);
    srv.wait_for("frames", Duration::from_secs(15), || {
        steady.bytes() > 10_000
    });
    let fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", srv.pid()))
            .unwrap()
            .count()
    };
    let rss_kb = || rss_kb(srv.pid());
    let (fd0, rss0) = (fds(), rss_kb());
    for i in 0..500 {
        let (status, mut s) = open_flv(srv.port, "demo");
        assert_eq!(status, 200, "cycle {i}");
        if i % 2 == 0 {
            let mut b = [0u8; 4096];
            let _ = s.read(&mut b);
        }
    }
    srv.wait_for(
        "the churned viewers to leave",
        Duration::from_secs(20),
        || {
            srv.get_json("/api/streams?src=demo").1["consumers"]
                .as_array()
                .unwrap()
                .len()
                == 1
        },
    );
    assert!(fds() <= fd0 + 8, "fds {fd0} -> {}", fds());
    assert!(
        rss_kb() <= rss0 + 32 * 1024,
        "rss {rss0} kB -> {} kB",
        rss_kb()
    );
    let zombies: Vec<u32> = children_of_any_state(srv.pid())
        .into_iter()
        .filter(|(_, st)| st == "Z")
        .map(|(p, _)| p)
        .collect();
    assert!(zombies.is_empty(), "zombies: {zombies:?}");
    steady.close();
}

#[test]
fn sigterm_with_five_streams_leaves_no_child() {
    let _p = heavy();
    let mut streams = String::new();
    for i in 0..5 {
        streams += &format!("  s{i}: \"{}#kill_timeout=1s\"\n", video_source());
    }
    let mut srv = Server::start(&streams, "");
    let readers: Vec<_> = (0..5)
        .map(|i| Drain::new(open_flv(srv.port, &format!("s{i}")).1))
        .collect();
    srv.wait_for("frames on all five", Duration::from_secs(20), || {
        readers.iter().all(|r| r.bytes() > 5_000)
    });
    let pids: Vec<u32> = (0..5)
        .map(|i| srv.producer_pids(&format!("s{i}"))[0])
        .collect();
    let (status, took) = srv.terminate(Duration::from_secs(10));
    assert!(status.expect("server did not exit").success());
    assert!(took <= Duration::from_secs(2), "exit took {took:?}");
    for pid in pids {
        assert!(
            group_members(pid).is_empty(),
            "group {pid} outlived the server"
        );
    }
}

#[test]
fn a_video_only_viewer_does_not_start_the_audio_transcoder() {
    let _p = heavy();
    let rtsp = free_port();
    let cam = PCMA_CAMERA;
    let srv = Server::start(
        &format!("  cam2: [\"{cam}\", \"ffmpeg:cam2#audio=aac\"]\n"),
        &format!("rtsp: {{ listen: \"127.0.0.1:{rtsp}\" }}\n"),
    );
    let states = || {
        let (_, v) = srv.get_json("/api/streams?src=cam2");
        v["producers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["state"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let video_only = RtspClient::play_tcp(rtsp, "cam2?video");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        states(),
        vec!["running", "idle"],
        "the transcoder started for a viewer without audio"
    );
    // A viewer that wants audio brings it up.
    let both = Drain::new(open_flv(srv.port, "cam2").1);
    srv.wait_for("the transcoder", Duration::from_secs(15), || {
        states() == vec!["running", "running"]
    });
    drop(video_only);
    both.close();
}
