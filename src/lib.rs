//! streamvisor: a process supervisor and live-stream relay.
//!
//! The layout follows the data flow (see `../shared/DESIGN.md`):
//! [`config`] → [`source`] (what to run) → [`supervisor`] (running it) →
//! [`media::flv`] (demux) → [`hub`] (the stream actor and fan-out) → [`api`]
//! (HTTP-FLV out and go2rtc's JSON API); [`rtsp`], [`rtmp`] and [`hls`] are
//! the other ways in and out.

pub mod api;
pub mod config;
pub mod hls;
pub mod hub;
pub mod media;
pub mod metrics;
pub mod mp4;
pub mod preload;
pub mod rtmp;
pub mod rtsp;
pub mod snapshot;
pub mod source;
pub mod store;
pub mod supervisor;
pub mod web;
pub mod webrtc;
