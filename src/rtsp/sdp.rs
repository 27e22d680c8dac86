//! The SDP (RFC 4566) a DESCRIBE answers with.

use base64::Engine;

use crate::media::rtp::TrackParams;

/// `a=control` of track `i`, relative to the Content-Base.
pub fn control(i: usize) -> String {
    format!("trackID={i}")
}

/// One media section per track, in order; track `i` is `trackID=i`.
pub fn describe(tracks: &[TrackParams], session_id: u64) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut s = format!(
        "v=0\r\no=- {session_id} 1 IN IP4 127.0.0.1\r\ns=streamvisor\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\na=tool:streamvisor\r\na=control:*\r\n"
    );
    for (i, t) in tracks.iter().enumerate() {
        let pt = t.payload_type();
        match t {
            TrackParams::H264(cfg) => {
                // RFC 6184 §8.1: packetization-mode 1 (FU-A), the profile,
                // and the parameter sets so a player can start decoding
                // before the first in-band SPS.
                let sets: Vec<String> = cfg
                    .sps
                    .iter()
                    .chain(&cfg.pps)
                    .map(|p| b64.encode(p))
                    .collect();
                s += &format!(
                    "m=video 0 RTP/AVP {pt}\r\na=rtpmap:{pt} H264/90000\r\na=fmtp:{pt} packetization-mode=1;profile-level-id={};sprop-parameter-sets={}\r\n",
                    cfg.profile_level_id(),
                    sets.join(",")
                );
            }
            TrackParams::H265(cfg) => {
                // RFC 7798 §7.1: the parameter sets, so a player can start
                // before the first in-band VPS; profile, tier and level
                // are optional and read from them anyway.
                let sets = |v: &[bytes::Bytes]| {
                    v.iter().map(|p| b64.encode(p)).collect::<Vec<_>>().join(",")
                };
                s += &format!(
                    "m=video 0 RTP/AVP {pt}\r\na=rtpmap:{pt} H265/90000\r\na=fmtp:{pt} sprop-vps={};sprop-sps={};sprop-pps={}\r\n",
                    sets(&cfg.vps),
                    sets(&cfg.sps),
                    sets(&cfg.pps)
                );
            }
            TrackParams::Aac {
                sample_rate,
                channels,
                config,
            } => {
                // RFC 3640 §3.3.6 AAC-hbr.
                let hex: String = config.iter().map(|b| format!("{b:02x}")).collect();
                s += &format!(
                    "m=audio 0 RTP/AVP {pt}\r\na=rtpmap:{pt} MPEG4-GENERIC/{sample_rate}/{channels}\r\na=fmtp:{pt} streamtype=5;profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3;config={hex}\r\n"
                );
            }
            // RFC 3551 §6: static payload types; rtpmap for clarity.
            TrackParams::Pcma => {
                s += &format!("m=audio 0 RTP/AVP {pt}\r\na=rtpmap:{pt} PCMA/8000\r\n")
            }
            TrackParams::Pcmu => {
                s += &format!("m=audio 0 RTP/AVP {pt}\r\na=rtpmap:{pt} PCMU/8000\r\n")
            }
            // RFC 2435 §3, RFC 3551 §6: static type 26; the rtpmap is
            // optional but some players (and our own publish side) like it.
            TrackParams::Jpeg => {
                s += &format!("m=video 0 RTP/AVP {pt}\r\na=rtpmap:{pt} JPEG/90000\r\n")
            }
            // RFC 7587 §7: always opus/48000/2, whatever is inside.
            TrackParams::Opus => {
                s += &format!("m=audio 0 RTP/AVP {pt}\r\na=rtpmap:{pt} opus/48000/2\r\na=fmtp:{pt} sprop-stereo=1\r\n")
            }
        }
        s += &format!("a=control:{}\r\n", control(i));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{Codec, TrackInfo};
    use bytes::Bytes;

    #[test]
    fn h264_and_aac() {
        let v = TrackParams::new(&TrackInfo {
            codec: Codec::H264,
            config: Bytes::from_static(&[
                1, 66, 0xe0, 30, 0xff, 0xe1, 0, 4, 0x67, 66, 0xe0, 30, 1, 0, 2, 0x68, 0xce,
            ]),
        })
        .unwrap();
        let a = TrackParams::new(&TrackInfo {
            codec: Codec::Aac,
            config: Bytes::from_static(&[0x12, 0x10]),
        })
        .unwrap();
        let sdp = describe(&[v, a, TrackParams::Pcma], 7);
        assert!(sdp.contains("a=fmtp:96 packetization-mode=1;profile-level-id=42e01e;sprop-parameter-sets=Z0LgHg==,aM4=\r\n"), "{sdp}");
        assert!(
            sdp.contains("a=rtpmap:97 MPEG4-GENERIC/44100/2\r\n"),
            "{sdp}"
        );
        assert!(sdp.contains("config=1210\r\n"), "{sdp}");
        assert!(
            sdp.contains("m=audio 0 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na=control:trackID=2\r\n"),
            "{sdp}"
        );
        assert_eq!(sdp.matches("a=control:trackID=").count(), 3);
    }

    #[test]
    fn mjpeg_is_payload_type_26_and_ffmpegs_sdp_without_rtpmap_is_taken() {
        let v = TrackParams::new(&TrackInfo {
            codec: Codec::Jpeg,
            config: Bytes::new(),
        })
        .unwrap();
        let sdp = describe(&[v, TrackParams::Pcmu], 7);
        assert!(
            sdp.contains(
                "m=video 0 RTP/AVP 26\r\na=rtpmap:26 JPEG/90000\r\na=control:trackID=0\r\n"
            ),
            "{sdp}"
        );
        // What ffmpeg's RTSP muxer announces for MJPEG: the static type
        // alone (RFC 3551 §6).
        let ffmpeg = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=No Name\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\na=tool:libavformat 59.27.100\r\nm=video 0 RTP/AVP 26\r\na=control:streamid=0\r\nm=audio 0 RTP/AVP 0\r\na=control:streamid=1\r\n";
        let (tracks, skipped) = crate::rtsp::publish::parse_sdp(ffmpeg.as_bytes()).unwrap();
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(tracks.len(), 2);
        assert!(matches!(
            tracks[0].1,
            crate::media::depack::Depacketizer::Jpeg { .. }
        ));
    }

    #[test]
    fn h265_has_the_parameter_sets() {
        let v = TrackParams::new(&crate::media::rtp::tests::h265_info()).unwrap();
        let sdp = describe(&[v], 7);
        assert!(sdp.contains("m=video 0 RTP/AVP 96\r\na=rtpmap:96 H265/90000\r\na=fmtp:96 sprop-vps=QAEMAf//AWAAAAMAkAAAAwAAAwA8lZgJ;sprop-sps=QgEBAWAAAAMAkAAAAwAAAwA8oAoIDxZZWaSTK8BaAgAAAwACAAADADIQ;sprop-pps=RAHBcrRiQA==\r\n"), "{sdp}");
        // What the publish side makes of it: the same track.
        let (tracks, skipped) = crate::rtsp::publish::parse_sdp(sdp.as_bytes()).unwrap();
        assert!(skipped.is_empty(), "{skipped:?}");
        let mut d = tracks.into_iter().next().unwrap().1;
        let mut out = Vec::new();
        d.push(
            crate::media::depack::Packet {
                marker: true,
                payload_type: 96,
                seq: 1,
                timestamp: 0,
                ssrc: 1,
                payload: bytes::Bytes::from_static(&[19 << 1, 1, 7]),
            },
            &mut out,
        )
        .unwrap();
        assert!(
            matches!(&out[0], crate::media::flv::Event::Track(t) if *t == crate::media::rtp::tests::h265_info()),
            "{out:?}"
        );
    }
}
