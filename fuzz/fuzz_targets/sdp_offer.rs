//! A WebRTC offer as `POST /api/webrtc` and `/api/ws` take it: raw SDP
//! or go2rtc's `{"type":"offer","sdp":…}`, bounded, parsed and answered
//! by str0m (`webrtc::fuzz`). No panic, no unbounded memory, no address
//! in an error. The corpus in fuzz/corpus/sdp_offer/ is replayed by
//! `cargo test`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| streamvisor::webrtc::fuzz(data));
