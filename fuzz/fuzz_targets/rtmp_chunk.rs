//! Bytes from an RTMP peer after the handshake: chunk framing, then AMF0
//! commands. Byte 0 picks how the input is split into reads. The corpus in
//! fuzz/corpus/rtmp_chunk/ (seeded from a capture of ffmpeg publishing) is
//! replayed by `cargo test`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| streamvisor::rtmp::chunk::fuzz(data));
