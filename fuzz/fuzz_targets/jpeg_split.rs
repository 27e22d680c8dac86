//! A producer's MJPEG stdout split into images (ffmpeg `-f mjpeg`): byte 0
//! picks how the input is split into reads. The corpus in
//! fuzz/corpus/jpeg_split/ is replayed by `cargo test`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| streamvisor::media::jpeg::fuzz(data));
