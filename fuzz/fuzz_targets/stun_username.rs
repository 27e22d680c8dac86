//! The USERNAME peek that routes WebRTC packets arriving on the shared
//! port to their peer (`webrtc::net`). The corpus in
//! fuzz/corpus/stun_username/ is replayed by `cargo test`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| streamvisor::webrtc::net::fuzz(data));
