//! Arbitrary bytes on an RTSP connection: the framer must say "incomplete",
//! hand out a message, or fail with a WireError, never panic or loop.
//! The corpus in fuzz/corpus/rtsp_wire/ is replayed by `cargo test`.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use streamvisor::rtsp::wire;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(_)) = wire::next(&mut buf) {}
});
