//! streamvisor: a process supervisor and live-stream relay.
//!
//! The layout follows the data flow (docs/ARCHITECTURE.md in the
//! repository: the parts, the trip of a frame, who owns what, and the
//! rules between modules that `tests/layout.rs` checks):
//! [`config`] → [`source`] (what to run) → [`supervisor`] (running it) →
//! [`media::flv`] (demux) → [`hub`] (the stream actor and fan-out) → [`api`]
//! (go2rtc's JSON API, the router that mounts the HTTP outputs) and
//! [`http_flv`] (HTTP-FLV out and in); [`rtsp`], [`rtmp`] and [`hls`] are
//! the other ways in and out. Every way in passes [`auth`] (one credential
//! model) and [`net`] (connection caps and deadlines) first. A producer
//! whose codecs FLV cannot hold (H.265, Opus, MJPEG) publishes back over
//! [`rtsp`] instead (RTP in [`media::depack`]), and a viewer whose output
//! cannot take a stream's video gets its H.264 transcode
//! ([`hub::Registry::join_fitting`]).

pub mod api;
pub mod auth;
pub mod config;
pub mod hls;
pub mod http_flv;
pub mod hub;
pub mod media;
pub mod metrics;
pub mod mp4;
pub mod net;
pub mod preload;
pub mod pump;
pub mod redact;
pub mod rtmp;
pub mod rtsp;
pub mod snapshot;
pub mod source;
pub mod store;
pub mod supervisor;
pub mod web;
pub mod webrtc;

/// Every fuzz target's corpus (`fuzz/corpus/<target>/`) is also a unit
/// test: each input goes through `f`, which must not panic.
#[cfg(test)]
pub(crate) fn replay_fuzz_corpus(target: &str, f: impl Fn(&[u8])) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        f(&std::fs::read(e.unwrap().path()).unwrap());
        n += 1;
    }
    assert!(n > 0, "no corpus in {}", dir.display());
}
