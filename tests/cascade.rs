//! Past one box: an *edge* streamvisor whose source is an *origin*
//! streamvisor's RTSP URL. Two real binaries on loopback, a real ffmpeg
//! camera at the origin, the edge's stock `rtsp://` producer (ffmpeg) in
//! between. No cluster protocol: the edge is the origin's RTSP viewer.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Edge readers: HTTP-FLV and RTSP/TCP, twenty in all.
const FLV_READERS: usize = 17;
const RTSP_READERS: usize = 3;

struct Cascade {
    origin: Server,
    edge: Server,
    edge_rtsp: u16,
}

/// An origin with the camera (an ffmpeg test pattern, 1 s GOP) and an RTSP
/// listener; an edge whose `cam` is the origin's `rtsp://…/cam`.
fn cascade() -> Cascade {
    let origin_rtsp = free_port();
    let origin = Server::start(
        &format!("  cam: \"{}\"\n", demo_source(25)),
        &format!("rtsp: {{ listen: \"127.0.0.1:{origin_rtsp}\" }}\n"),
    );
    let edge_rtsp = free_port();
    let edge = Server::start(
        &format!("  cam: rtsp://127.0.0.1:{origin_rtsp}/cam\n"),
        &format!("rtsp: {{ listen: \"127.0.0.1:{edge_rtsp}\" }}\n"),
    );
    Cascade {
        origin,
        edge,
        edge_rtsp,
    }
}

impl Cascade {
    fn logs(&self) -> String {
        format!(
            "--- origin log ---\n{}\n--- edge log ---\n{}",
            self.origin.log(),
            self.edge.log()
        )
    }

    /// Waits until `f` holds, or panics with both logs.
    fn wait_for(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !f() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `stream`'s consumers that are not our own producers reading back.
fn viewers(srv: &Server, stream: &str) -> Vec<serde_json::Value> {
    let (status, v) = srv.get_json(&format!("/api/streams?src={stream}"));
    assert_eq!(status, 200, "{v}");
    v["consumers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["internal"] != true)
        .cloned()
        .collect()
}

fn state(srv: &Server, stream: &str) -> String {
    let (_, v) = srv.get_json(&format!("/api/streams?src={stream}"));
    v["state"].as_str().unwrap_or("").to_string()
}

/// The origin sees the edge as one RTSP viewer, whatever the edge's own
/// viewer count.
fn assert_one_rtsp_session(c: &Cascade, why: &str) {
    let v = viewers(&c.origin, "cam");
    assert_eq!(
        v.len(),
        1,
        "{why}: the origin should have exactly one viewer (the edge), has {v:?}\n{}",
        c.logs()
    );
    assert_eq!(v[0]["protocol"], "rtsp", "{why}: {v:?}");
}

fn open_edge_flv(c: &Cascade) -> Drain {
    let (status, s) = open_flv(c.edge.port, "cam");
    assert_eq!(status, 200, "edge HTTP-FLV\n{}", c.logs());
    Drain::new(s)
}

fn open_edge_rtsp(c: &Cascade) -> Drain {
    // After PLAY the socket carries interleaved RTP: count it like FLV.
    Drain::new(RtspClient::play_tcp(c.edge_rtsp, "cam").sock)
}

#[test]
fn twenty_edge_readers_are_one_rtsp_session_at_the_origin_and_the_chain_stops_and_restarts() {
    let _p = heavy();
    let c = cascade();
    // Nothing runs before the first viewer, at either end.
    assert!(c.edge.producer_pids("cam").is_empty());
    assert!(c.origin.producer_pids("cam").is_empty());
    assert!(viewers(&c.origin, "cam").is_empty());

    // The first edge reader starts the edge's producer, whose RTSP read
    // starts the origin's camera: a cold chain.
    let cold = Instant::now();
    let first = open_edge_flv(&c);
    c.wait_for(
        "the first edge reader's bytes",
        Duration::from_secs(20),
        || first.bytes() >= 10_000,
    );
    eprintln!(
        "cold chain: first 10 kB at the edge after {:?}",
        cold.elapsed()
    );

    let mut readers = vec![first];
    readers.extend((1..FLV_READERS).map(|_| open_edge_flv(&c)));
    readers.extend((0..RTSP_READERS).map(|_| open_edge_rtsp(&c)));
    assert_eq!(readers.len(), 20);

    // Every edge reader receives, and keeps receiving.
    c.wait_for(
        "every edge reader to receive 10 kB",
        Duration::from_secs(20),
        || readers.iter().all(|r| r.bytes() >= 10_000),
    );
    let mark: Vec<u64> = readers.iter().map(Drain::bytes).collect();
    std::thread::sleep(Duration::from_secs(2));
    for (i, r) in readers.iter().enumerate() {
        let got = r.bytes() - mark[i];
        // The demo is about 30 kB/s over either protocol.
        assert!(
            got > 20_000,
            "edge reader {i} got only {got} bytes in 2 s\n{}",
            c.logs()
        );
    }

    // The edge: twenty viewers, one producer.
    let edge_viewers = viewers(&c.edge, "cam");
    assert_eq!(edge_viewers.len(), 20, "{edge_viewers:?}");
    assert_eq!(
        edge_viewers
            .iter()
            .filter(|v| v["protocol"] == "rtsp")
            .count(),
        RTSP_READERS,
        "{edge_viewers:?}"
    );
    let edge_pids = c.edge.producer_pids("cam");
    assert_eq!(edge_pids.len(), 1, "one producer at the edge");
    let edge_pid = edge_pids[0];
    // The origin: one RTSP session (the edge's producer), one camera.
    let origin_pids = c.origin.producer_pids("cam");
    assert_eq!(origin_pids.len(), 1, "one camera process at the origin");
    let origin_pid = origin_pids[0];
    // …and it stays one: no second session, no flapping edge producer.
    for _ in 0..5 {
        assert_one_rtsp_session(&c, "twenty edge readers");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, v) = c.edge.get_json("/api/streams?src=cam");
    assert_eq!(v["producers"][0]["restarts"], 0, "{v}");
    assert_eq!(c.edge.producer_pids("cam"), vec![edge_pid]);
    assert_eq!(c.origin.producer_pids("cam"), vec![origin_pid]);

    // The last edge reader leaves: the edge's producer stops, which ends
    // the origin's only session, which stops the camera.
    drop(readers); // every reader thread stops and closes its socket
    c.wait_for("the edge readers to leave", Duration::from_secs(5), || {
        viewers(&c.edge, "cam").is_empty()
    });
    let left = Instant::now();
    let (mut edge_gone, mut session_gone, mut origin_gone) = (None, None, None);
    c.wait_for("both producers to stop", Duration::from_secs(15), || {
        if edge_gone.is_none() && group_members(edge_pid).is_empty() {
            edge_gone = Some(left.elapsed());
        }
        if session_gone.is_none() && viewers(&c.origin, "cam").is_empty() {
            session_gone = Some(left.elapsed());
        }
        if origin_gone.is_none() && group_members(origin_pid).is_empty() {
            origin_gone = Some(left.elapsed());
        }
        edge_gone.is_some() && session_gone.is_some() && origin_gone.is_some()
    });
    let (edge_gone, session_gone, origin_gone) = (
        edge_gone.unwrap(),
        session_gone.unwrap(),
        origin_gone.unwrap(),
    );
    eprintln!(
        "last edge reader left: edge producer gone after {edge_gone:?}, \
         origin session after {session_gone:?}, origin producer after {origin_gone:?}"
    );
    // linger 0 at both ends; each hop is a SIGTERM that ffmpeg honours at
    // once (kill_timeout 2 s is the bound), plus slack for a loaded box.
    assert!(
        edge_gone <= Duration::from_secs(3) && origin_gone <= Duration::from_secs(5),
        "the chain took {edge_gone:?} (edge) and {origin_gone:?} (origin) to stop\n{}",
        c.logs()
    );
    c.wait_for("both instances idle", Duration::from_secs(5), || {
        state(&c.edge, "cam") == "idle" && state(&c.origin, "cam") == "idle"
    });
    assert!(c.edge.producer_pids("cam").is_empty());
    assert!(c.origin.producer_pids("cam").is_empty());

    // A reader joining afterwards starts the whole chain again, cold.
    let again = open_edge_flv(&c);
    c.wait_for("a late reader's bytes", Duration::from_secs(20), || {
        again.bytes() >= 10_000
    });
    let edge_pids = c.edge.producer_pids("cam");
    let origin_pids = c.origin.producer_pids("cam");
    assert_eq!(edge_pids.len(), 1);
    assert_eq!(origin_pids.len(), 1);
    assert_ne!(edge_pids[0], edge_pid, "a fresh edge producer");
    assert_ne!(origin_pids[0], origin_pid, "a fresh camera process");
    assert_one_rtsp_session(&c, "the chain restarted");
    again.close();
    c.wait_for("the chain to stop again", Duration::from_secs(10), || {
        c.edge.producer_pids("cam").is_empty()
            && viewers(&c.origin, "cam").is_empty()
            && c.origin.producer_pids("cam").is_empty()
    });
}

/// What "Scaling out" promises when the origin restarts: the edge's
/// producer loses its RTSP read and is restarted with backoff, and the
/// edge's viewers stay connected and carry on once the origin is back.
#[test]
fn an_origin_restart_is_a_producer_restart_at_the_edge_and_its_viewers_stay() {
    let _p = heavy();
    let mut c = cascade();
    let readers: Vec<Drain> = (0..3).map(|_| open_edge_flv(&c)).collect();
    c.wait_for("the edge readers' bytes", Duration::from_secs(20), || {
        readers.iter().all(|r| r.bytes() >= 10_000)
    });
    let edge_pid = c.edge.producer_pids("cam")[0];
    assert_one_rtsp_session(&c, "before the origin restart");

    let restarted = Instant::now();
    c.origin.restart();
    let before: Vec<u64> = readers.iter().map(Drain::bytes).collect();
    // The edge's old producer ended with its RTSP session; a new one has
    // read the restarted origin, which has a camera again.
    c.wait_for(
        "the edge readers to receive from the restarted origin",
        Duration::from_secs(30),
        || {
            readers
                .iter()
                .zip(&before)
                .all(|(r, b)| r.bytes() >= b + 30_000)
        },
    );
    eprintln!(
        "origin restart: edge readers flowing again after {:?}",
        restarted.elapsed()
    );
    let (_, v) = c.edge.get_json("/api/streams?src=cam");
    assert!(
        v["producers"][0]["restarts"].as_u64().unwrap() >= 1,
        "the edge producer was restarted: {v}"
    );
    let now = c.edge.producer_pids("cam");
    assert_eq!(now.len(), 1);
    assert_ne!(now[0], edge_pid, "a new edge producer");
    // The readers never left: the edge kept its three viewers throughout.
    assert_eq!(viewers(&c.edge, "cam").len(), 3);
    assert_one_rtsp_session(&c, "after the origin restart");
    for r in readers {
        r.close();
    }
    c.wait_for("the chain to stop", Duration::from_secs(10), || {
        c.edge.producer_pids("cam").is_empty() && c.origin.producer_pids("cam").is_empty()
    });
}
