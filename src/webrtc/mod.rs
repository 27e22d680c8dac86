//! WebRTC out (WHEP `POST /api/webrtc`, go2rtc's `/api/ws`) with str0m,
//! the Sans-IO WebRTC stack, driven from one tokio task per peer.
//!
//! We are ICE-lite (RFC 8445 §2.5): host candidates on `webrtc.listen`
//! (see [`net`]), the peer's address learned from its checks. H.264 and
//! H.265 go out as they are, Opus when the stream has it, else G.711.
//!
//! str0m runs in RTP mode: a frame is packetized once for every viewer
//! (RFC 6184 / RFC 7798, [`crate::media::rtp::packetize`], the chunks RTSP
//! shares too, in the frame's `Wire`), and each peer adds only its own
//! header (sequence number, timestamp, SSRC), RTX and SRTP. str0m's own
//! packetizer, per peer, scanned every frame for start codes again after
//! we had written it out as Annex B: 15 % of our CPU at 50 peers. AAC cannot go over WebRTC: the peer gets
//! video only. The peer is a consumer like any other; when it closes,
//! goes silent, or never connects within [`CONNECT_TIMEOUT`], it leaves.
//!
//! Loss is repaired before it becomes a keyframe request: every video
//! packet stays in a short per-peer history ([`SEND_HISTORY_PACKETS`]) and
//! is sent again on a NACK (RFC 4585 §6.2.1) over RTX (RFC 4588), which
//! str0m negotiates with every H.264/H.265 payload type.
//!
//! No bandwidth estimate: the camera's stream goes out at its own rate, so
//! the answer agrees no header extension that only feeds one (TWCC,
//! abs-send-time; see [`extensions`]) and no receiver sends us the
//! feedback for it.
//!
//! Keyframe requests (RFC 4585 §6.3.1 PLI, RFC 5104 §4.3.1 FIR) are
//! answered from what we have: the last keyframe this peer was sent, again,
//! and then the live deltas go on. A `-c copy` source cannot be asked for
//! a keyframe (ffmpeg relays the camera's GOP as it comes). Holding the
//! deltas until the camera's next keyframe made every request a freeze of
//! up to a GOP (4 s on many cameras), and a lossy peer asks often. The
//! deltas after the repeat refer to pictures before it, so the decoder
//! conceals (a camera's mostly still scene is close to the keyframe) until
//! the next real keyframe cleans it: moving and nearly right beats still.
//! Sending the whole GOP since the keyframe again would decode exactly but
//! puts up to a GOP of data (seconds of it) on a path that just lost
//! packets, all at once, and plays it back as a fast-forward.

pub mod net;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use str0m::change::{SdpAnswer, SdpOffer};
use str0m::format::Codec as RtcCodec;
use str0m::media::{MediaKind, Mid};
use str0m::net::Receive;
use str0m::rtp::{Extension, ExtensionMap, RtpWrite, SeqNo};
use str0m::{Event, IceConnectionState, Input, Output, Rtc, RtcConfig};
use tokio::time::Instant;

use crate::hub::fanout::{Delivery, H264_VIDEO};
use crate::hub::{JoinRequest, Stream, StreamError, Viewer};
use crate::media::rtp::{self, Chunk, TrackParams};
use crate::media::{Codec, Frame, JoinedRtp, TrackInfo, TIMESCALE};
use net::{Registration, Transport};

/// A peer that has not connected (ICE) within this is given up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// A connected peer silent this long is gone (RFC 7675 consent: a
/// controlling peer checks every ~5 s; ICE-lite us only listens).
pub const SILENCE_TIMEOUT: Duration = Duration::from_secs(15);

/// Video packets kept per peer for answering NACKs (str0m's RTX cache,
/// which also drops what is older than 3 s). str0m's default, 1000, is
/// about 1.2 MB per peer at full size; 128 packets is 0.6 s at 2 Mbit/s,
/// dozens of LAN round trips, and as deep as aiortc's jitter buffer: a
/// receiver gives a packet up (and asks for a keyframe) once 128 newer
/// ones came.
pub const SEND_HISTORY_PACKETS: usize = 128;

/// Keyframe requests closer than this to the last one answered are let
/// go: each answer is a keyframe (10-20 deltas' worth of bytes), and a
/// receiver asks again on each decoder error or jitter-buffer overflow
/// (aiortc does) until the answer has arrived.
pub const KEYFRAME_ANSWER_INTERVAL: Duration = Duration::from_millis(500);

/// What a WebRTC peer takes: Opus first, then G.711 (RFC 7874 §3).
pub const AUDIO: &[Codec] = &[Codec::Opus, Codec::Pcmu, Codec::Pcma];

/// The largest SDP offer we look at. A browser's offer (video, audio and
/// data, every codec it has) is 4-8 KiB; str0m's parse and answer grow
/// with the offer (a 1.7 MB one took 250 MB), so the bound comes first.
pub const MAX_OFFER_BYTES: usize = 64 * 1024;
/// The most media sections (m-lines) an offer may have. We send one video
/// and one audio line; a browser offers video, audio and data (3), Home
/// Assistant 2-3. Each line costs str0m a media and its codec tables.
pub const MAX_OFFER_MEDIA: usize = crate::media::MAX_SDP_MEDIA;
/// The largest signalling message: a JSON-wrapped offer (`\r\n` escaped,
/// so up to twice the SDP) on `POST /api/webrtc` or a `/api/ws` message.
pub const MAX_SIGNAL_BYTES: usize = 2 * MAX_OFFER_BYTES;

/// An offer over our bounds, refused before it is parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferLimit {
    /// `size` is `None` when the body was cut off at [`MAX_SIGNAL_BYTES`]
    /// without its length being known.
    #[error("SDP offer {} is over the limit of {limit} bytes", match .size { Some(n) => format!("of {n} bytes"), None => "body".to_string() })]
    TooLarge { size: Option<usize>, limit: usize },
    #[error("SDP offer has {count} media sections (m-lines); the limit is {limit}")]
    TooManyMedia { count: usize, limit: usize },
}

#[derive(Debug, thiserror::Error)]
pub enum WebRtcError {
    #[error("bad SDP offer: {0}")]
    Offer(String),
    #[error(transparent)]
    Limit(#[from] OfferLimit),
    /// An offer str0m choked on (it panicked; see [`accept`]).
    #[error("bad SDP offer: our WebRTC stack cannot answer it ({0})")]
    Unanswerable(String),
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error(transparent)]
    Socket(#[from] net::BindError),
    #[error("no address of ours for a peer at {0} (see webrtc.listen and webrtc.candidates)")]
    NoAddress(IpAddr),
}

/// Answers `offer` for `stream` and starts the peer's task. `transport`
/// is the shared `webrtc.listen`; without one the peer gets a UDP socket
/// of its own on our address towards `remote`.
pub async fn answer(
    registry: &crate::hub::Registry,
    stream: &Stream,
    offer: &str,
    transport: Option<Arc<Transport>>,
    remote: SocketAddr,
    gone: tokio_util::sync::CancellationToken,
) -> Result<String, WebRtcError> {
    let offer_text = offer;
    let offer = parse_offer(offer)?;
    let transport = match transport {
        Some(t) => t,
        None => Transport::ephemeral(local_ip_towards(remote.ip())).await?,
    };
    let mut rtc = rtc_config().build(std::time::Instant::now());
    let candidates = transport.candidates(remote.ip()).await;
    if candidates.is_empty() {
        return Err(WebRtcError::NoAddress(remote.ip()));
    }
    for c in candidates {
        rtc.add_local_candidate(c);
    }
    let answer = accept(&mut rtc, offer).inspect_err(|e| {
        if let WebRtcError::Unanswerable(why) = e {
            tracing::warn!(stream = %stream.name(), peer = %remote, "webrtc offer refused: str0m panicked: {why}");
        }
    })?;
    // A peer that offered H.265 takes the camera's as it is; any other
    // (Chromium on Debian, Firefox) gets the stream's shared H.264
    // transcode when the camera sends H.265.
    let takes_h265 = offer_has_h265(offer_text);
    let viewer = registry
        .join_fitting(
            stream,
            JoinRequest {
                protocol: "webrtc",
                remote_addr: Some(remote),
                internal: false,
                exclude: None,
                audio: AUDIO,
                video: if takes_h265 {
                    crate::hub::fanout::H264_OR_H265
                } else {
                    H264_VIDEO
                },
            },
        )
        .await?;
    let name = stream.name().to_string();
    let reg = transport.register(&rtc.direct_api().local_ice_credentials().ufrag);
    tracing::info!(stream = %name, peer = %remote, "webrtc peer answered");
    let st = stream.clone();
    tokio::spawn(async move {
        let why = run(rtc, reg, viewer, gone, st).await;
        tracing::info!(stream = %name, peer = %remote, reason = %why, "webrtc peer ended");
    });
    Ok(answer.to_sdp_string())
}

/// Whether an offer's video takes H.265 (`a=rtpmap:PT H265/90000`,
/// RFC 7798 §7.1; encoding names are case-insensitive, RFC 4566 §6).
fn offer_has_h265(sdp: &str) -> bool {
    sdp.lines().any(|l| {
        l.strip_prefix("a=rtpmap:")
            .and_then(|r| r.split_whitespace().nth(1))
            .is_some_and(|enc| enc.to_ascii_uppercase().starts_with("H265/"))
    })
}

/// Refuses an offer over [`MAX_OFFER_BYTES`] or [`MAX_OFFER_MEDIA`]
/// without parsing it: a cheap scan of lines, nothing allocated.
pub fn check_offer(sdp: &str) -> Result<(), OfferLimit> {
    if sdp.len() > MAX_OFFER_BYTES {
        return Err(OfferLimit::TooLarge {
            size: Some(sdp.len()),
            limit: MAX_OFFER_BYTES,
        });
    }
    // RFC 8866 §5: every line is `<type>=<value>`, ended by CRLF (LF alone
    // is accepted by str0m and sent by some tools, so count either).
    let count = sdp
        .split('\n')
        .filter(|l| l.trim_start().starts_with("m="))
        .count();
    if count > MAX_OFFER_MEDIA {
        return Err(OfferLimit::TooManyMedia {
            count,
            limit: MAX_OFFER_MEDIA,
        });
    }
    Ok(())
}

/// The one way in for an offer, whichever signalling it came by: bounds
/// first ([`check_offer`]), then str0m's parser, whose error is cleaned
/// of parser internals ([`clean_error`]).
pub fn parse_offer(sdp: &str) -> Result<SdpOffer, WebRtcError> {
    check_offer(sdp)?;
    SdpOffer::from_sdp_string(sdp).map_err(|e| WebRtcError::Offer(clean_error(&e.to_string(), sdp)))
}

/// The SDP out of a `POST /api/webrtc` body: go2rtc's
/// `{"type":"offer","sdp":…}` when `json`, else WHEP's raw
/// `application/sdp`. The caller has bounded `body` to
/// [`MAX_SIGNAL_BYTES`]; the SDP itself is bounded by [`parse_offer`].
pub fn offer_from_body(body: &[u8], json: bool) -> Result<String, WebRtcError> {
    if json {
        let v: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| WebRtcError::Offer(format!("offer JSON: {e}")))?;
        v["sdp"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| WebRtcError::Offer("offer JSON has no \"sdp\"".into()))
    } else {
        String::from_utf8(body.to_vec())
            .map_err(|_| WebRtcError::Offer("the SDP offer is not UTF-8".into()))
    }
}

/// str0m's SDP parser (combine's `easy` errors) says where it stopped as
/// `PointerOffset(0x7f…)`, a heap address: that tells an attacker about
/// our memory layout and the user nothing. It is turned back into a line
/// number of `input` (the address points into it), and the message is
/// made one line, cut to a length fit for a JSON error.
pub fn clean_error(msg: &str, input: &str) -> String {
    const MAX: usize = 300;
    let mut out = String::new();
    let mut rest = msg;
    while let Some(at) = rest.find("PointerOffset(") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "PointerOffset(".len()..];
        let end = after.find(')').unwrap_or(after.len());
        let addr = after[..end].trim_start_matches("0x");
        let base = input.as_ptr() as usize;
        match usize::from_str_radix(addr, 16) {
            Ok(a) if a >= base && a <= base + input.len() => {
                let line = input[..a - base].matches('\n').count() + 1;
                out.push_str(&format!("line {line}"));
            }
            _ => out.push_str("an unknown place"),
        }
        rest = after.get(end + 1..).unwrap_or("");
    }
    out.push_str(rest);
    // Anything else that looks like an address goes too.
    let mut s: String = out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
        .split(' ')
        .map(|w| {
            if w.trim_start_matches(['(', '`', '"']).starts_with("0x") {
                "…"
            } else {
                w
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    // "SDP parse: Parse error at line 3; Unexpected …" → "line 3: Unexpected …"
    if let Some(rest) = s.strip_prefix("SDP parse: Parse error at ") {
        s = rest.replacen("; ", ": ", 1);
    }
    if s.len() > MAX {
        let mut cut = MAX;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// The fuzz target's body (`fuzz/fuzz_targets/sdp_offer.rs`): a
/// signalling body, JSON-wrapped when it looks like JSON, through the
/// bounds and the parser as `POST /api/webrtc` takes it, then answered by
/// a str0m configured as [`answer`] configures it. No panic; an error
/// never shows an address.
pub fn fuzz(data: &[u8]) {
    let data = &data[..data.len().min(MAX_SIGNAL_BYTES)];
    let json = data.first() == Some(&b'{');
    let result = offer_from_body(data, json).and_then(|sdp| {
        let offer = parse_offer(&sdp)?;
        let mut rtc = rtc_config().build(std::time::Instant::now());
        accept(&mut rtc, offer).map(|a| a.to_sdp_string())
    });
    match result {
        Err(WebRtcError::Offer(m)) => {
            assert!(!m.contains("PointerOffset"), "{m}");
            // str0m quotes the offer (a mid, an attribute): a `0x` from
            // there is the peer's own text, not an address.
            let echoed = data.windows(2).any(|w| w.eq_ignore_ascii_case(b"0x"));
            assert!(echoed || !m.contains("0x"), "{m}");
        }
        // Only the str0m assertion we know of is caught and let go; any
        // other panic in str0m is a finding.
        Err(WebRtcError::Unanswerable(why)) => {
            assert!(why.contains(STR0M_PT_ASSERT), "str0m panicked: {why}");
        }
        _ => {}
    }
}

/// str0m 0.25's `CodecConfig::update_params` asserts that no two of our
/// payload types lock onto one of the peer's: an H.264 PT with a broken
/// `profile-level-id` matches several of our H.264 profiles, and named
/// again on a second m-line it trips "Pt locked multiple times" (found by
/// the sdp_offer fuzz target; corpus/sdp_offer/str0m_pt_locked_twice.sdp).
const STR0M_PT_ASSERT: &str = "Pt locked multiple times";

/// str0m's `accept_offer`, whose panics (assertions on offers it did not
/// expect, see [`STR0M_PT_ASSERT`]) become an error for this one offer
/// instead of taking the signalling connection down. `rtc` is not to be
/// used after an error.
fn accept(rtc: &mut Rtc, offer: SdpOffer) -> Result<SdpAnswer, WebRtcError> {
    let run = std::panic::AssertUnwindSafe(|| rtc.sdp_api().accept_offer(offer));
    match std::panic::catch_unwind(run) {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => Err(WebRtcError::Offer(clean_error(&e.to_string(), ""))),
        Err(panic) => {
            let why = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            Err(WebRtcError::Unanswerable(clean_error(why, "")))
        }
    }
}

/// What every peer is built from: ICE-lite, H.264 out, and the audio we
/// can send ([`AUDIO`]).
fn rtc_config() -> RtcConfig {
    RtcConfig::new()
        .set_ice_lite(true)
        // We packetize, once for all peers (see the module's notes).
        .set_rtp_mode(true)
        .set_send_buffer_video(SEND_HISTORY_PACKETS)
        .clear_codecs()
        .enable_h264(true)
        // RFC 7798 over WebRTC: Safari, and Chrome with a hardware HEVC
        // decoder, offer it; they get an H.265 camera untouched.
        .enable_h265(true)
        .enable_opus(true, false)
        .enable_pcmu(true, false)
        .enable_pcma(true, false)
        .set_extension_map(extensions())
}

/// The RTP header extensions we offer to write: the m-line's id (RFC 8843
/// §15 BUNDLE, so a receiver can tell the lines apart before it learns
/// our SSRCs) and the simulcast/RTX stream ids str0m knows (unused but
/// harmless). Not transport-wide sequence numbers (TWCC,
/// draft-holmer-rmcat-transport-wide-cc-extensions-01) nor abs-send-time:
/// both feed a sender's bandwidth estimate, and we send the camera's
/// stream as it is, with no estimate to feed. With TWCC agreed, a receiver
/// sends a feedback packet every 50-100 ms (str0m every 50 ms, Chrome
/// about as often), each one decrypted, parsed and kept by str0m: per
/// peer, 20 packets a second in and a register entry for every packet out.
/// Without it, what comes back is receiver reports, NACKs and keyframe
/// requests. Audio level and video orientation: nothing we would fill in.
fn extensions() -> ExtensionMap {
    let mut exts = ExtensionMap::empty();
    exts.set(4, Extension::RtpMid);
    exts.set(10, Extension::RtpStreamId);
    exts.set(11, Extension::RepairedRtpStreamId);
    exts
}

/// The address of ours that routes to `peer`: what we advertise as our
/// host candidate (a loopback peer gets loopback). No packet is sent: a
/// UDP `connect` only picks the route.
pub fn local_ip_towards(peer: IpAddr) -> IpAddr {
    let any: IpAddr = if peer.is_ipv4() {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    };
    std::net::UdpSocket::bind((any, 0))
        .and_then(|s| s.connect((peer, 9)).map(|_| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip())
        .unwrap_or(peer)
}

/// The m-line we send each kind on.
#[derive(Default)]
struct Lines {
    video: Option<Mid>,
    audio: Option<Mid>,
}

/// What a peer's video has been sent, for answering keyframe requests.
#[derive(Default)]
struct VideoState {
    /// The last keyframe sent: the GOP cache's head for a live peer.
    last_key: Option<Frame>,
    /// The newest video time sent (90 kHz).
    last_pts: i64,
    /// When a keyframe request was last answered.
    last_answer: Option<Instant>,
}

/// The next RTP sequence number of each of a peer's send streams (video,
/// audio): random to begin with (RFC 3550 §5.1), below 2^16 so that
/// the SRTP rollover counter starts at 0 as the receiver assumes
/// (RFC 3711 §3.3.1).
struct SeqNos([SeqNo; 2]);

impl Default for SeqNos {
    fn default() -> SeqNos {
        SeqNos([0, 1].map(|_| SeqNo::from(u64::from(rand::random::<u16>()))))
    }
}

/// `gone` fires when the signalling went away first (a WebSocket closed
/// before ICE connected): the peer cannot be reached any more.
async fn run(
    mut rtc: Rtc,
    mut reg: Registration,
    mut viewer: Viewer,
    gone: tokio_util::sync::CancellationToken,
    stream: Stream,
) -> String {
    let mut told_no_audio = false;
    let started = Instant::now();
    let mut lines = Lines::default();
    let mut connected = false;
    let mut tracks: [Option<TrackInfo>; 2] = [None, None];
    let mut video = VideoState::default();
    let mut seq = SeqNos::default();
    let mut last_rx = Instant::now();
    // str0m's next timeout, armed once and moved only when it changes: a
    // timer made and dropped at every frame (every turn of this loop) is
    // a timer-wheel entry per frame per peer.
    let mut timer = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
    let mut armed: Option<tokio::time::Instant> = None;
    loop {
        // Drain what str0m has to say, up to its next timeout.
        let mut keyframe_wanted = false;
        let timeout = loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(t)) => break t,
                // Sent together at the end of the poll (net's GSO).
                Ok(Output::Transmit(t)) => {
                    reg.queue(t.proto, t.source, t.destination, t.contents.into());
                }
                Ok(Output::Event(e)) => match e {
                    Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                        return "ICE disconnected".into();
                    }
                    // DTLS close_notify: the peer closed.
                    Event::Closed => return "peer closed".into(),
                    Event::Connected => connected = true,
                    Event::MediaAdded(m) => match m.kind {
                        MediaKind::Video => lines.video = Some(m.mid),
                        MediaKind::Audio => lines.audio = Some(m.mid),
                    },
                    Event::KeyframeRequest(r) if Some(r.mid) == lines.video => {
                        keyframe_wanted = true;
                    }
                    _ => {}
                },
                Err(e) => return format!("webrtc: {e}"),
            }
        };
        reg.flush();
        if keyframe_wanted {
            repeat_keyframe(&mut rtc, &lines, &tracks, &mut seq, &mut video);
            if let Err(e) = rtc.handle_input(Input::Timeout(std::time::Instant::now())) {
                return format!("webrtc: {e}");
            }
            continue; // poll it out now, as a frame is
        }
        if !connected && started.elapsed() > CONNECT_TIMEOUT {
            return format!("not connected within {} s", CONNECT_TIMEOUT.as_secs());
        }
        if connected && last_rx.elapsed() > SILENCE_TIMEOUT {
            return format!("peer silent for {} s", SILENCE_TIMEOUT.as_secs());
        }
        let wait = timeout
            .saturating_duration_since(std::time::Instant::now())
            .min(Duration::from_secs(1));
        // To the millisecond: str0m's deadlines move by microseconds
        // between turns, and tokio's timer resolution is 1 ms anyway.
        let at = tokio::time::Instant::now() + wait;
        if armed.is_none_or(|a| a > at || at - a > Duration::from_millis(1)) {
            timer.as_mut().reset(at);
            armed = Some(at);
        }
        tokio::select! {
            p = reg.rx.recv() => {
                let Some(p) = p else { return "transport closed".into() };
                last_rx = Instant::now();
                reg.saw(&p);
                let Ok(contents) = p.contents.as_slice().try_into() else { continue };
                let input = Input::Receive(
                    std::time::Instant::now(),
                    Receive { proto: p.proto, source: p.source, destination: p.destination, contents },
                );
                if rtc.accepts(&input) {
                    if let Err(e) = rtc.handle_input(input) {
                        return format!("webrtc: {e}");
                    }
                }
            }
            d = viewer.next(), if connected => {
                match d {
                    Err(e) => return format!("stream ended: {e}"),
                    Ok(Delivery::Tracks { video: v, audio }) => {
                        if audio.is_none() && lines.audio.is_some() && !told_no_audio {
                            told_no_audio = true;
                            tokio::spawn(say_why_no_audio(stream.clone()));
                        }
                        tracks = [v, audio];
                    }
                    Ok(Delivery::Frame(f)) => {
                        if matches!(f.codec, Codec::H264 | Codec::H265) {
                            video.last_pts = video.last_pts.max(f.pts);
                            if f.keyframe {
                                video.last_key = Some(f.clone());
                            }
                        }
                        send(&mut rtc, &lines, &tracks, &mut seq, &f);
                        // str0m (RTP mode) sends what was written on its
                        // next timeout, which it sets to "now": handled
                        // here, the frame leaves on this turn's poll, not
                        // after a trip through the timer wheel (≥ 1 ms, and
                        // frames bunched up behind a late timer).
                        if let Err(e) = rtc.handle_input(Input::Timeout(std::time::Instant::now())) {
                            return format!("webrtc: {e}");
                        }
                        // Payload bytes handed to the peer (str0m adds the
                        // RTP/SRTP overhead), for the API and metrics.
                        viewer
                            .stats()
                            .bytes
                            .fetch_add(f.payload.len() as u64, std::sync::atomic::Ordering::Relaxed);
                        // Handed to str0m, which sends it on its next poll
                        // without waiting: the frame's delay ends here.
                        viewer.stats().delivered();
                    }
                }
            }
            _ = gone.cancelled(), if !connected => {
                return "signalling closed before the peer connected".into();
            }
            _ = timer.as_mut() => {
                armed = None;
                if let Err(e) = rtc.handle_input(Input::Timeout(std::time::Instant::now())) {
                    return format!("webrtc: {e}");
                }
            }
        }
    }
}

/// A peer that asked for audio gets none: if the stream's audio is AAC,
/// which WebRTC cannot carry (RFC 7874 has Opus and G.711), say so.
async fn say_why_no_audio(stream: Stream) {
    let Some(info) = stream.info().await else {
        return;
    };
    let codecs: Vec<Codec> = info
        .producers
        .iter()
        .flat_map(|p| p.codecs.clone())
        .collect();
    if codecs.contains(&Codec::Aac) && !codecs.iter().any(|c| AUDIO.contains(c)) {
        tracing::info!(
            stream = %stream.name(),
            "webrtc: the stream's audio is AAC, which WebRTC cannot carry; sending video only (add ffmpeg:{}#audio=opus)",
            stream.name()
        );
    }
}

/// A PLI/FIR: the last keyframe again, stamped just after the newest
/// video sent (a receiver drops what looks older than what it showed);
/// the live deltas go on after it (see the module's notes). Requests
/// within [`KEYFRAME_ANSWER_INTERVAL`] of the last answer are let go.
fn repeat_keyframe(
    rtc: &mut Rtc,
    lines: &Lines,
    tracks: &[Option<TrackInfo>; 2],
    seq: &mut SeqNos,
    video: &mut VideoState,
) {
    if video
        .last_answer
        .is_some_and(|t| t.elapsed() < KEYFRAME_ANSWER_INTERVAL)
    {
        return;
    }
    let Some(key) = &video.last_key else {
        return; // nothing sent yet: the first frame is a keyframe
    };
    let mut again = key.clone();
    // One 90 kHz tick later.
    again.pts = video.last_pts + 1;
    again.dts = again.pts;
    video.last_pts = again.pts;
    again.wire = Default::default(); // its FLV/RTP forms carry the old time
    video.last_answer = Some(Instant::now());
    tracing::debug!("webrtc: keyframe request answered with the last keyframe");
    send(rtc, lines, tracks, seq, &again);
}

/// Writes one frame on its m-line, in the payload type the peer agreed:
/// the frame's shared RTP payloads, each under this peer's own header.
fn send(
    rtc: &mut Rtc,
    lines: &Lines,
    tracks: &[Option<TrackInfo>; 2],
    seq: &mut SeqNos,
    f: &Frame,
) {
    let (kind, codec, rate) = match f.codec {
        Codec::H264 => (0, RtcCodec::H264, 90_000u32),
        Codec::H265 => (0, RtcCodec::H265, 90_000),
        Codec::Opus => (1, RtcCodec::Opus, 48_000),
        Codec::Pcmu => (1, RtcCodec::PCMU, 8_000),
        Codec::Pcma => (1, RtcCodec::PCMA, 8_000),
        _ => return,
    };
    let (Some(track), Some(mid)) = (&tracks[kind], [lines.video, lines.audio][kind]) else {
        return;
    };
    let Some(pt) = payload_type(rtc, mid, codec) else {
        return; // the peer did not take this codec
    };
    let JoinedRtp { chunks, payloads } = joined(f, track);
    let mut api = rtc.direct_api();
    let Some(tx) = api.stream_tx_by_mid(mid, None) else {
        return;
    };
    let time = (f.pts.max(0) as u128 * rate as u128 / TIMESCALE as u128) as u32;
    let now = std::time::Instant::now();
    for (c, payload) in chunks.iter().zip(payloads.iter()) {
        tx.write_rtp(
            RtpWrite::new(
                pt,
                seq.0[kind].inc(),
                time.wrapping_add(c.ts_offset),
                now,
                payload.clone(),
            )
            .marker(c.marker)
            // Video is kept for NACKs (RTX); audio is not worth resending.
            .nackable(kind == 0),
        );
    }
}

/// The payload type the peer agreed for `codec` on `mid` (str0m's
/// `Writer::payload_params`, which RTP mode has no writer for).
fn payload_type(rtc: &Rtc, mid: Mid, codec: RtcCodec) -> Option<str0m::media::Pt> {
    let theirs = rtc.media(mid)?.remote_pts();
    rtc.codec_config()
        .params()
        .iter()
        .find(|p| p.spec().codec == codec && theirs.contains(&p.pt()))
        .map(|p| p.pt())
}

/// A frame's RTP payloads, made once for every peer of it (the frame's
/// `Wire`): SPS/PPS (and VPS) before every keyframe, RFC 6184 FU-A or RFC
/// 7798 FU cuts at `rtp::SAFE_PAYLOAD` (not RTSP's 1400: a peer behind a
/// tunnel would get IP fragments), each also joined into one buffer as
/// str0m takes it. Made per peer, the copy and allocation of every packet
/// were 10 % of our CPU at 200 peers. A frame that cannot be cut is dropped
/// for all of them, as RTSP drops it.
fn joined(f: &Frame, track: &TrackInfo) -> JoinedRtp {
    f.wire
        .joined_rtp(|| {
            match TrackParams::new(track)
                .and_then(|p| rtp::packetize_max(f, &p, rtp::SAFE_PAYLOAD))
            {
                Ok(c) => JoinedRtp {
                    payloads: c.iter().map(payload).collect(),
                    chunks: c.into(),
                },
                Err(e) => {
                    tracing::warn!(codec = ?f.codec, error = %e, "frame cannot be sent over RTP; dropped");
                    JoinedRtp::default()
                }
            }
        })
        .clone()
}

/// One RTP payload as str0m takes it: its prefix (an FU indicator and
/// header) and the frame's slice, in one buffer.
fn payload(c: &Chunk) -> Arc<[u8]> {
    if c.prefix.is_empty() {
        return Arc::from(&c.body[..]);
    }
    // Two memcpys: collecting the bytes from an iterator copied them one
    // at a time (6 % of our CPU at 50 peers).
    let mut v = Vec::with_capacity(c.len());
    v.extend_from_slice(&c.prefix);
    v.extend_from_slice(&c.body);
    v.into()
}

#[cfg(test)]
mod tests;
