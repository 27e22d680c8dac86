//! Arbitrary bytes into the incremental FLV demuxer: every input must end in
//! `Ok(None)` (needs more) or `Err`, never a panic or a hang.
//!
//! Keep the body in step with `fuzz_one` in src/media/flv.rs, which replays
//! fuzz/corpus/flv_demux/ under `cargo test`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamvisor::media::flv::Demuxer;

/// Takes events until the demuxer wants more input (`Ok(None)`) or fails.
fn drain(d: &mut Demuxer) {
    while let Ok(Some(_)) = d.next_event() {}
}

fuzz_target!(|data: &[u8]| {
    let mut d = Demuxer::new();
    // Two uneven pieces, so a tag split across pushes takes the
    // "incomplete, wait for more" path before it is parsed whole.
    let cut = data.len() / 3;
    d.push(&data[..cut]);
    drain(&mut d);
    d.push(&data[cut..]);
    drain(&mut d);
});
