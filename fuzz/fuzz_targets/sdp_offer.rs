//! A WebRTC offer as `POST /api/webrtc` and `/api/ws` take it: raw SDP
//! or go2rtc's `{"type":"offer","sdp":…}`, bounded, parsed and answered
//! by str0m (`webrtc::fuzz`). No panic, no unbounded memory, no address
//! in an error. The corpus in fuzz/corpus/sdp_offer/ is replayed by
//! `cargo test`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // libfuzzer-sys's panic hook aborts at once, before the server's
    // catch_unwind around str0m (webrtc::accept) can turn a known str0m
    // assertion into an error; webrtc::fuzz panics again for any other
    // one, and that still reaches libFuzzer as a crash (without its
    // message: replay the artifact with `cargo test` to see it).
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let outcome = std::panic::catch_unwind(|| streamvisor::webrtc::fuzz(data));
    std::panic::set_hook(hook);
    if let Err(p) = outcome {
        std::panic::resume_unwind(p);
    }
});
