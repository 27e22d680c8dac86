//! Offers and answers: bounds before parsing, H.265 offers, errors that
//! name the line and no address, str0m's panics, frame payloads made once;
//! the fuzz corpus replayed.

use super::*;

/// Every peer of a frame gets the same payload buffers, made once,
/// prefix and body together, each within a tunnel's MTU.
#[test]
fn a_frames_payloads_are_made_once_shared_and_fit_a_tunnel() {
    let track = TrackInfo {
        codec: Codec::H264,
        config: bytes::Bytes::from_static(&[
            1, 66, 0xe0, 30, 0xff, 0xe1, 0, 4, 0x67, 66, 0xe0, 30, 1, 0, 2, 0x68, 0xce,
        ]),
    };
    let mut nal = vec![0x41u8];
    nal.extend((0..5000u32).map(|i| i as u8));
    let f = Frame::new(
        Codec::H264,
        0,
        0,
        false,
        crate::media::h264::to_avcc(&[&nal]),
    );
    let first = joined(&f, &track);
    assert!(first.chunks.len() >= 5);
    assert_eq!(first.chunks.len(), first.payloads.len());
    for (c, p) in first.chunks.iter().zip(first.payloads.iter()) {
        assert!(p.len() <= rtp::SAFE_PAYLOAD, "{} bytes", p.len());
        assert_eq!(&p[..c.prefix.len()], &c.prefix[..]);
        assert_eq!(&p[c.prefix.len()..], &c.body[..]);
    }
    // The second peer of the frame (a clone shares its Wire): the same
    // buffers, not made again.
    let second = joined(&f.clone(), &track);
    assert!(Arc::ptr_eq(&first.payloads, &second.payloads));
}

#[test]
fn h265_in_an_offer_is_seen_whatever_its_case() {
    assert!(offer_has_h265("v=0\r\na=rtpmap:49 H265/90000\r\n"));
    assert!(offer_has_h265("a=rtpmap:49 h265/90000"));
    assert!(!offer_has_h265(
        "a=rtpmap:96 H264/90000\r\na=fmtp:96 x=H265/"
    ));
}

fn corpus(name: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus/sdp_offer")
        .join(name);
    String::from_utf8(std::fs::read(p).unwrap()).unwrap()
}

#[test]
fn replay_fuzz_corpus() {
    crate::replay_fuzz_corpus("sdp_offer", fuzz);
}

#[test]
fn real_offers_are_within_the_bounds_and_answered() {
    for name in [
        "real_chromium156_video_audio_data.sdp",
        "real_aiortc116_recvonly_video_audio.sdp",
    ] {
        let sdp = corpus(name);
        check_offer(&sdp).unwrap();
        let offer = parse_offer(&sdp).unwrap();
        let mut rtc = rtc_config().build(std::time::Instant::now());
        let answer = rtc.sdp_api().accept_offer(offer).unwrap().to_sdp_string();
        assert!(answer.contains("m=video"), "{name}: {answer}");
    }
}

/// Chromium offers transport-wide-cc, abs-send-time and more on every
/// m-line; the answer takes only the mid (and the stream ids), so no
/// receiver sends us TWCC feedback 20 times a second per peer.
#[test]
fn the_answer_agrees_the_mid_extension_and_not_twcc_or_abs_send_time() {
    let sdp = corpus("real_chromium156_video_audio_data.sdp");
    assert!(sdp.contains("transport-wide-cc-extensions-01") && sdp.contains("abs-send-time"));
    let mut rtc = rtc_config().build(std::time::Instant::now());
    let answer = rtc
        .sdp_api()
        .accept_offer(parse_offer(&sdp).unwrap())
        .unwrap()
        .to_sdp_string();
    let extmaps: Vec<&str> = answer
        .lines()
        .filter(|l| l.starts_with("a=extmap:"))
        .collect();
    assert!(
        extmaps
            .iter()
            .any(|l| l.ends_with("urn:ietf:params:rtp-hdrext:sdes:mid")),
        "{answer}"
    );
    for unwanted in [
        "transport-wide-cc",
        "abs-send-time",
        "ssrc-audio-level",
        "urn:3gpp:video-orientation",
    ] {
        assert!(
            !extmaps.iter().any(|l| l.contains(unwanted)),
            "{unwanted} agreed: {answer}"
        );
    }
    // str0m still lists `a=rtcp-fb:PT transport-cc` per payload type: a
    // receiver cannot send that feedback without the sequence numbers of
    // the extension, which no packet of ours carries.
}

#[test]
fn a_peer_offering_h265_is_answered_h265_and_takes_the_camera_as_it_is() {
    // Chrome 136+ with a hardware HEVC decoder adds these lines.
    let sdp = corpus("chromium156_with_h265.sdp");
    assert!(offer_has_h265(&sdp));
    let offer = parse_offer(&sdp).unwrap();
    let mut rtc = rtc_config().build(std::time::Instant::now());
    let answer = rtc.sdp_api().accept_offer(offer).unwrap().to_sdp_string();
    assert!(answer.contains("H265/90000"), "{answer}");
    // The same browser without the decoder: no H.265 in the answer,
    // and the viewer is routed to the H.264 transcode.
    let plain = corpus("real_chromium156_video_audio_data.sdp");
    assert!(!offer_has_h265(&plain));
    let mut rtc = rtc_config().build(std::time::Instant::now());
    let answer = rtc
        .sdp_api()
        .accept_offer(parse_offer(&plain).unwrap())
        .unwrap()
        .to_sdp_string();
    assert!(!answer.contains("H265"), "{answer}");
}

#[test]
fn offer_size_is_bounded_before_parsing() {
    let mut sdp = corpus("real_aiortc116_recvonly_video_audio.sdp");
    sdp.push_str(&"a=x\r\n".repeat((MAX_OFFER_BYTES - sdp.len()) / 5));
    assert!(sdp.len() <= MAX_OFFER_BYTES);
    check_offer(&sdp).unwrap();
    sdp.push_str(&"a=x\r\n".repeat(2));
    let size = sdp.len();
    assert_eq!(
        check_offer(&sdp),
        Err(OfferLimit::TooLarge {
            size: Some(size),
            limit: MAX_OFFER_BYTES
        })
    );
    let e = parse_offer(&sdp).unwrap_err().to_string();
    assert!(e.contains("65536 bytes"), "{e}");
}

#[test]
fn media_sections_are_bounded() {
    let line = "m=audio 9 UDP/TLS/RTP/SAVPF 0\r\n";
    let session = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n";
    let at = format!("{session}{}", line.repeat(MAX_OFFER_MEDIA));
    check_offer(&at).unwrap();
    let over = format!("{session}{}", line.repeat(MAX_OFFER_MEDIA + 1));
    assert_eq!(
        check_offer(&over),
        Err(OfferLimit::TooManyMedia {
            count: 9,
            limit: MAX_OFFER_MEDIA
        })
    );
    // LF-only line ends count the same.
    assert!(check_offer(&over.replace("\r\n", "\n")).is_err());
    // The bomb: 5000 m-lines in 1.7 MB, refused by size first;
    // 5000 short ones in under 64 KiB, by count.
    let bomb = format!(
        "{session}{}",
        "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n".repeat(5000)
    );
    assert!(matches!(
        check_offer(&bomb),
        Err(OfferLimit::TooLarge { .. })
    ));
    let dense = format!("{session}{}", "m=a\n".repeat(5000));
    assert!(matches!(
        check_offer(&dense),
        Err(OfferLimit::TooManyMedia { count: 5000, .. })
    ));
}

/// str0m's parse error named a heap address (`PointerOffset(0x7f…)`);
/// ours names the line.
#[test]
fn parse_errors_name_the_line_not_an_address() {
    // Cut in the middle of Chromium's video section: str0m misses an
    // rtpmap of the m-line.
    let sdp = corpus("chromium_cut_mid_line.sdp");
    let line = sdp.lines().position(|l| l.starts_with("m=video")).unwrap() + 1;
    let e = parse_offer(&sdp).unwrap_err().to_string();
    assert!(!e.contains("0x") && !e.contains("PointerOffset"), "{e}");
    assert!(
        e.starts_with(&format!("bad SDP offer: line {line}: ")),
        "{e}"
    );
    assert!(e.len() < 400 && !e.contains('\n'), "{e}");
    // str0m itself said where as an address.
    let raw = SdpOffer::from_sdp_string(&sdp).unwrap_err().to_string();
    assert!(raw.contains("PointerOffset(0x"), "{raw}");
}

/// Found by the fuzzer: str0m 0.25 asserts on this offer (an H.264 PT
/// with a broken profile-level-id, named again on the audio m-line);
/// the peer gets an error, the signalling connection lives on.
#[test]
fn a_str0m_panic_is_an_error_for_that_offer() {
    let sdp = corpus("str0m_pt_locked_twice.sdp");
    let offer = parse_offer(&sdp).unwrap();
    let mut rtc = rtc_config().build(std::time::Instant::now());
    match accept(&mut rtc, offer) {
        Err(WebRtcError::Unanswerable(why)) => assert!(why.contains(STR0M_PT_ASSERT), "{why}"),
        other => panic!("{:?}", other.map(|a| a.to_sdp_string())),
    }
}

#[test]
fn clean_error_drops_addresses_it_cannot_place() {
    let e = clean_error(
        "Parse error at PointerOffset(0x7f00deadbeef)\nUnexpected `x`",
        "v=0",
    );
    assert_eq!(e, "Parse error at an unknown place; Unexpected `x`");
    assert!(!clean_error("at 0x7ffc1234 bad", "").contains("0x"));
}
