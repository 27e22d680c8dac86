//! RTP packets from a publisher into the depacketizers (H.264, AAC, G.711,
//! H.265, MJPEG):
//! byte 0 picks the codec (0xF8..=0xFF: MJPEG), then records of a 2-byte
//! length and a packet.
//! The corpus in fuzz/corpus/rtp_depack/ is replayed by `cargo test`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| streamvisor::media::depack::fuzz(data));
