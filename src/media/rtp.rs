//! RTP packetization (RFC 3550) of Frames: H.264 per RFC 6184, AAC per
//! RFC 3640 (AAC-hbr), G.711 per RFC 3551, MJPEG per RFC 2435 (in
//! [`super::jpeg::rfc2435`]); and RTCP sender reports.
//!
//! Packetizing splits a frame into [`Chunk`]s: everything of an RTP packet
//! but its 12-byte header. The chunks are the same for every viewer, so a
//! frame is packetized once and the chunks are shared (see
//! [`crate::media::Wire`]); each viewer adds only its own header (sequence
//! number, timestamp, SSRC).

use bytes::{BufMut, Bytes, BytesMut};

use super::h264::{self, AvcConfig};
use super::h265::{self, HevcConfig};
use super::{Codec, Frame, TrackInfo, TIMESCALE};

/// The largest RTP payload we send over RTSP: fits a 1500-byte Ethernet
/// MTU with IP, UDP, RTP and a little slack for tunnels.
pub const MAX_PAYLOAD: usize = 1400;

/// The largest RTP payload we send over WebRTC, whose peers are often
/// reached through a tunnel (Tailscale and WireGuard at their least carry
/// 1280-byte IPv6 packets, RFC 8200 §5's minimum): 1100 bytes leave room
/// for IPv6 (40), UDP (8), RTP (12), str0m's header extensions (up to
/// about 24) and the SRTP tag (16), as browsers keep RTP under ~1200.
pub const SAFE_PAYLOAD: usize = 1100;

/// Dynamic payload types (RFC 3551 §6) for what has no static one.
pub const PT_H264: u8 = 96;
/// A stream has one video track, so H.265 takes the same number.
pub const PT_H265: u8 = 96;
pub const PT_AAC: u8 = 97;
/// RFC 3551 §6, Table 4: static payload types.
pub const PT_PCMU: u8 = 0;
pub const PT_PCMA: u8 = 8;

/// One RTP packet's payload: a prefix this module writes (an FU-A
/// indicator and header, an AU-header section) and a slice of the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub prefix: Bytes,
    pub body: Bytes,
    /// RTP marker: the last packet of a video access unit.
    pub marker: bool,
    /// Added to the frame's RTP timestamp (G.711 split across packets).
    pub ts_offset: u32,
}

impl Chunk {
    pub fn len(&self) -> usize {
        self.prefix.len() + self.body.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a track needs for packetizing, derived once from its [`TrackInfo`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackParams {
    H264(AvcConfig),
    H265(HevcConfig),
    Aac {
        sample_rate: u32,
        channels: u8,
        /// The AudioSpecificConfig, for the SDP's `config=`.
        config: Bytes,
    },
    Pcma,
    Pcmu,
    Opus,
    /// RFC 2435: each image carries its own tables, so nothing to keep.
    Jpeg,
}

/// RFC 7587 §4.1: Opus has a dynamic payload type and a 48 kHz clock.
pub const PT_OPUS: u8 = 111;

impl TrackParams {
    pub fn new(info: &TrackInfo) -> Result<TrackParams, String> {
        Ok(match info.codec {
            Codec::H264 => TrackParams::H264(AvcConfig::parse(&info.config)?),
            Codec::Aac => {
                let sample_rate = info
                    .aac_sample_rate()
                    .ok_or("AudioSpecificConfig with an unknown sample rate")?;
                // ISO 14496-3 §1.6.2.1: channelConfiguration, 4 bits after
                // the frequency index.
                let channels = (info.config[1] >> 3) & 0x0f;
                TrackParams::Aac {
                    sample_rate,
                    channels: channels.max(1),
                    config: info.config.clone(),
                }
            }
            Codec::Pcma => TrackParams::Pcma,
            Codec::Pcmu => TrackParams::Pcmu,
            Codec::Opus => TrackParams::Opus,
            Codec::Jpeg => TrackParams::Jpeg,
            Codec::H265 => TrackParams::H265(HevcConfig::parse(&info.config)?),
            Codec::Flac => return Err("FLAC is not sent over RTP".into()),
        })
    }

    pub fn clock_rate(&self) -> u32 {
        match self {
            TrackParams::H264(_) | TrackParams::H265(_) | TrackParams::Jpeg => 90_000,
            TrackParams::Aac { sample_rate, .. } => *sample_rate,
            TrackParams::Pcma | TrackParams::Pcmu => 8_000,
            TrackParams::Opus => 48_000,
        }
    }

    pub fn payload_type(&self) -> u8 {
        match self {
            TrackParams::H264(_) => PT_H264,
            TrackParams::H265(_) => PT_H265,
            TrackParams::Aac { .. } => PT_AAC,
            TrackParams::Pcma => PT_PCMA,
            TrackParams::Pcmu => PT_PCMU,
            TrackParams::Opus => PT_OPUS,
            TrackParams::Jpeg => super::jpeg::rfc2435::PT,
        }
    }

    /// A frame's RTP timestamp in this track's clock, from its pts.
    pub fn rtp_time(&self, pts: i64) -> u32 {
        (pts as i128 * self.clock_rate() as i128 / TIMESCALE as i128) as u32
    }
}

/// Splits `frame` into RTP payloads of at most [`MAX_PAYLOAD`] bytes.
pub fn packetize(frame: &Frame, params: &TrackParams) -> Result<Vec<Chunk>, String> {
    packetize_max(frame, params, MAX_PAYLOAD)
}

/// Splits `frame` into RTP payloads of at most `max` bytes (at least 16,
/// so that an FU carries some of its NAL unit).
pub fn packetize_max(
    frame: &Frame,
    params: &TrackParams,
    max: usize,
) -> Result<Vec<Chunk>, String> {
    let max = max.max(16);
    match params {
        TrackParams::H264(cfg) => packetize_h264(frame, cfg, max),
        TrackParams::H265(cfg) => packetize_h265(frame, cfg, max),
        // RFC 2435 §3.1: the marker ends the image.
        TrackParams::Jpeg => {
            let mut out: Vec<Chunk> = super::jpeg::rfc2435::packetize(&frame.payload, max)?
                .into_iter()
                .map(|(prefix, body)| Chunk {
                    prefix,
                    body,
                    marker: false,
                    ts_offset: 0,
                })
                .collect();
            if let Some(last) = out.last_mut() {
                last.marker = true;
            }
            Ok(out)
        }
        TrackParams::Aac { .. } => {
            // RFC 3640 §3.3.6 AAC-hbr: a 16-bit AU-headers-length (in bits),
            // then one AU-header of 13-bit size and 3-bit index.
            let len = frame.payload.len();
            if len >= 1 << 13 {
                return Err(format!(
                    "AAC frame of {len} bytes does not fit a 13-bit AU size"
                ));
            }
            let prefix =
                Bytes::copy_from_slice(&[0x00, 0x10, (len >> 5) as u8, ((len & 0x1f) << 3) as u8]);
            Ok(vec![Chunk {
                prefix,
                body: frame.payload.clone(),
                marker: true,
                ts_offset: 0,
            }])
        }
        // RFC 7587 §4.2: one Opus packet per RTP payload, never split.
        TrackParams::Opus => Ok(vec![Chunk {
            prefix: Bytes::new(),
            body: frame.payload.clone(),
            marker: false,
            ts_offset: 0,
        }]),
        TrackParams::Pcma | TrackParams::Pcmu => {
            // RFC 3551 §4.5.14: one byte per sample, so the offset of a
            // piece in bytes is its offset in 8 kHz ticks.
            Ok((0..frame.payload.len())
                .step_by(max)
                .map(|at| Chunk {
                    prefix: Bytes::new(),
                    body: frame.payload.slice(at..(at + max).min(frame.payload.len())),
                    marker: false,
                    ts_offset: at as u32,
                })
                .collect())
        }
    }
}

fn packetize_h264(frame: &Frame, cfg: &AvcConfig, max: usize) -> Result<Vec<Chunk>, String> {
    let mut nals = Vec::new();
    let mut has_sps = false;
    for nal in h264::nal_units(&frame.payload, cfg.length_size) {
        let nal = nal?;
        match h264::nal_type(&nal) {
            // An access unit delimiter means nothing to an RTP receiver.
            h264::NAL_AUD => continue,
            h264::NAL_SPS => has_sps = true,
            _ => {}
        }
        if !nal.is_empty() {
            nals.push(nal);
        }
    }
    // Many cameras send SPS/PPS only once, out of band: repeat them before
    // every IDR so a player can start at any keyframe.
    let is_idr = nals.iter().any(|n| h264::nal_type(n) == h264::NAL_IDR);
    if is_idr && !has_sps {
        let sets: Vec<Bytes> = cfg.sps.iter().chain(&cfg.pps).cloned().collect();
        nals.splice(0..0, sets);
    }
    let mut out = Vec::new();
    for nal in &nals {
        if nal.len() <= max {
            // RFC 6184 §5.6: single NAL unit packet.
            out.push(Chunk {
                prefix: Bytes::new(),
                body: nal.clone(),
                marker: false,
                ts_offset: 0,
            });
            continue;
        }
        // RFC 6184 §5.8 FU-A: the NAL header becomes the FU indicator (F,
        // NRI, type 28) and FU header (S, E, original type).
        let indicator = (nal[0] & 0xe0) | 28;
        let kind = nal[0] & 0x1f;
        let body = nal.slice(1..);
        let step = max - 2;
        let mut at = 0;
        while at < body.len() {
            let end = (at + step).min(body.len());
            let mut fu = kind;
            if at == 0 {
                fu |= 0x80;
            }
            if end == body.len() {
                fu |= 0x40;
            }
            out.push(Chunk {
                prefix: Bytes::copy_from_slice(&[indicator, fu]),
                body: body.slice(at..end),
                marker: false,
                ts_offset: 0,
            });
            at = end;
        }
    }
    if let Some(last) = out.last_mut() {
        last.marker = true;
    }
    Ok(out)
}

fn packetize_h265(frame: &Frame, cfg: &HevcConfig, max: usize) -> Result<Vec<Chunk>, String> {
    let mut nals = Vec::new();
    let mut has_vps = false;
    for nal in h264::nal_units(&frame.payload, cfg.length_size) {
        let nal = nal?;
        match h265::nal_type(&nal) {
            // RFC 7798 §4.4: an access unit delimiter may be sent, but it
            // tells an RTP receiver nothing the marker bit does not.
            h265::NAL_AUD => continue,
            h265::NAL_VPS => has_vps = true,
            _ => {}
        }
        // A NAL unit is at least its 2-byte header (H.265 §7.3.1.1).
        if nal.len() >= 2 {
            nals.push(nal);
        }
    }
    // As for H.264: repeat the parameter sets before every IRAP picture so
    // that a player can start at any keyframe.
    let irap = nals.iter().any(|n| h265::is_irap(h265::nal_type(n)));
    if irap && !has_vps {
        let sets: Vec<Bytes> = cfg
            .vps
            .iter()
            .chain(&cfg.sps)
            .chain(&cfg.pps)
            .cloned()
            .collect();
        nals.splice(0..0, sets);
    }
    let mut out = Vec::new();
    for nal in &nals {
        if nal.len() <= max {
            // RFC 7798 §4.4.1: single NAL unit packet.
            out.push(Chunk {
                prefix: Bytes::new(),
                body: nal.clone(),
                marker: false,
                ts_offset: 0,
            });
            continue;
        }
        // RFC 7798 §4.4.3 FU: a payload header (the NAL header with type
        // 49: F, LayerId and TID kept), an FU header (S, E, FuType).
        let header = [(nal[0] & 0x81) | (49 << 1), nal[1]];
        let kind = h265::nal_type(nal);
        let body = nal.slice(2..);
        let step = max - 3;
        let mut at = 0;
        while at < body.len() {
            let end = (at + step).min(body.len());
            let mut fu = kind;
            if at == 0 {
                fu |= 0x80;
            }
            if end == body.len() {
                fu |= 0x40;
            }
            out.push(Chunk {
                prefix: Bytes::copy_from_slice(&[header[0], header[1], fu]),
                body: body.slice(at..end),
                marker: false,
                ts_offset: 0,
            });
            at = end;
        }
    }
    // §4.1: the marker is set on the last packet of the access unit.
    if let Some(last) = out.last_mut() {
        last.marker = true;
    }
    Ok(out)
}

/// One viewer's sending state for one track (RFC 3550 §5.1).
#[derive(Debug, Clone)]
pub struct Sender {
    pub ssrc: u32,
    pub payload_type: u8,
    pub seq: u16,
    /// Random per session (RFC 3550 §5.1: "the initial value ... SHOULD be random").
    pub ts_base: u32,
    pub packets: u32,
    pub octets: u32,
    /// RTP time and pts of the last packet, for sender reports.
    pub last: Option<(u32, i64)>,
}

impl Sender {
    pub fn new(payload_type: u8) -> Sender {
        Sender {
            ssrc: rand::random(),
            payload_type,
            seq: rand::random(),
            ts_base: rand::random(),
            packets: 0,
            octets: 0,
            last: None,
        }
    }

    /// The 12-byte RTP header for the next packet of a frame at `rtp_time`.
    pub fn header(&mut self, chunk: &Chunk, rtp_time: u32, pts: i64) -> [u8; 12] {
        let ts = self
            .ts_base
            .wrapping_add(rtp_time)
            .wrapping_add(chunk.ts_offset);
        let mut h = [0u8; 12];
        h[0] = 0x80; // V=2, no padding, no extension, no CSRC
        h[1] = (u8::from(chunk.marker) << 7) | self.payload_type;
        h[2..4].copy_from_slice(&self.seq.to_be_bytes());
        h[4..8].copy_from_slice(&ts.to_be_bytes());
        h[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        self.seq = self.seq.wrapping_add(1);
        self.packets = self.packets.wrapping_add(1);
        self.octets = self.octets.wrapping_add(chunk.len() as u32);
        self.last = Some((ts, pts));
        h
    }

    /// An RTCP sender report (RFC 3550 §6.4.1) tying this track's RTP
    /// clock to wall-clock time, which players use to sync audio to video.
    /// `ntp` is the wall-clock time of the last packet sent.
    pub fn sender_report(&self, ntp: std::time::SystemTime) -> Option<Bytes> {
        let (rtp_ts, _) = self.last?;
        Some(self.sender_report_at(rtp_ts, ntp))
    }

    /// A sender report pairing `rtp_ts` (with the session's base added)
    /// with the wall time `ntp`.
    pub fn sender_report_at(&self, rtp_ts: u32, ntp: std::time::SystemTime) -> Bytes {
        let since = ntp
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        // NTP era 0 began 70 years (and 17 leap days) before the Unix epoch.
        let secs = since.as_secs() + 2_208_988_800;
        let frac = ((since.subsec_nanos() as u64) << 32) / 1_000_000_000;
        let mut b = BytesMut::with_capacity(28);
        b.put_u8(0x80); // V=2, P=0, RC=0
        b.put_u8(200); // SR
        b.put_u16(6); // length in 32-bit words, minus one
        b.put_u32(self.ssrc);
        b.put_u32(secs as u32);
        b.put_u32(frac as u32);
        b.put_u32(rtp_ts);
        b.put_u32(self.packets);
        b.put_u32(self.octets);
        b.freeze()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::media::ms_to_ticks;

    fn h264_info() -> TrackInfo {
        TrackInfo {
            codec: Codec::H264,
            config: Bytes::from_static(&[
                1, 66, 0xe0, 30, 0xff, 0xe1, 0, 4, 0x67, 66, 0xe0, 30, 1, 0, 2, 0x68, 0xce,
            ]),
        }
    }

    fn au(nals: &[&[u8]]) -> Bytes {
        h264::to_avcc(nals)
    }

    fn frame(codec: Codec, payload: Bytes, key: bool) -> Frame {
        Frame::new(codec, ms_to_ticks(40), ms_to_ticks(40), key, payload)
    }

    #[test]
    fn small_idr_gets_parameter_sets_and_one_marker() {
        let p = TrackParams::new(&h264_info()).unwrap();
        let f = frame(Codec::H264, au(&[&[0x09, 0x10], &[0x65, 1, 2, 3]]), true);
        let c = packetize(&f, &p).unwrap();
        let types: Vec<u8> = c.iter().map(|c| c.body[0] & 0x1f).collect();
        assert_eq!(types, vec![7, 8, 5], "SPS, PPS, IDR; the AUD is dropped");
        assert_eq!(c.iter().filter(|c| c.marker).count(), 1);
        assert!(c.last().unwrap().marker);
    }

    #[test]
    fn packetize_max_cuts_at_the_size_asked() {
        let p = TrackParams::new(&h264_info()).unwrap();
        let mut nal = vec![0x41u8];
        nal.extend((0..5000u32).map(|i| i as u8));
        let f = frame(Codec::H264, au(&[&nal]), false);
        let small = packetize_max(&f, &p, SAFE_PAYLOAD).unwrap();
        assert!(small.iter().all(|c| c.len() <= SAFE_PAYLOAD));
        assert!(small.iter().any(|c| c.len() > MAX_PAYLOAD - 400));
        assert!(small.len() > packetize(&f, &p).unwrap().len());
        let g711 = frame(Codec::Pcma, Bytes::from(vec![0xd5; 2000]), true);
        let c = packetize_max(&g711, &TrackParams::Pcma, SAFE_PAYLOAD).unwrap();
        assert_eq!(c.iter().map(|c| c.len()).collect::<Vec<_>>(), [1100, 900]);
        assert_eq!(c[1].ts_offset, 1100);
    }

    #[test]
    fn large_nal_is_fragmented_and_reassembles() {
        let p = TrackParams::new(&h264_info()).unwrap();
        let mut nal = vec![0x41u8];
        nal.extend((0..5000u32).map(|i| i as u8));
        let f = frame(Codec::H264, au(&[&nal]), false);
        let c = packetize(&f, &p).unwrap();
        assert!(c.len() > 3);
        assert!(c.iter().all(|c| c.len() <= MAX_PAYLOAD));
        // FU indicator keeps NRI, type 28; S on the first, E on the last.
        assert_eq!(c[0].prefix[0], 0x40 | 28);
        assert_eq!(c[0].prefix[1], 0x80 | 1);
        assert_eq!(c.last().unwrap().prefix[1], 0x40 | 1);
        assert!(c[1..c.len() - 1].iter().all(|c| c.prefix[1] & 0xc0 == 0));
        let mut back = vec![(c[0].prefix[0] & 0xe0) | (c[0].prefix[1] & 0x1f)];
        for x in &c {
            back.extend_from_slice(&x.body);
        }
        assert_eq!(back, nal);
        // Slices of the frame, not copies.
        let base = f.payload.as_ptr() as usize;
        assert!(c.iter().all(|x| (x.body.as_ptr() as usize) >= base
            && (x.body.as_ptr() as usize) < base + f.payload.len()));
    }

    #[test]
    fn aac_has_an_au_header() {
        let info = TrackInfo {
            codec: Codec::Aac,
            config: Bytes::from_static(&[0x12, 0x10]),
        };
        let p = TrackParams::new(&info).unwrap();
        assert!(
            matches!(
                p,
                TrackParams::Aac {
                    sample_rate: 44100,
                    channels: 2,
                    ..
                }
            ),
            "{p:?}"
        );
        let f = frame(Codec::Aac, Bytes::from(vec![7u8; 300]), true);
        let c = packetize(&f, &p).unwrap();
        // 16 bits of AU headers; size 300 << 3 in 16 bits.
        assert_eq!(
            &c[0].prefix[..],
            &[0x00, 0x10, (300 >> 5) as u8, ((300 & 0x1f) << 3) as u8]
        );
        assert!(c[0].marker);
        assert_eq!(p.rtp_time(ms_to_ticks(1000)), 44100);
    }

    #[test]
    fn header_and_sender_report() {
        let mut s = Sender::new(PT_H264);
        let seq0 = s.seq;
        let chunk = Chunk {
            prefix: Bytes::new(),
            body: Bytes::from_static(&[1, 2, 3]),
            marker: true,
            ts_offset: 0,
        };
        let h = s.header(&chunk, 9000, 0);
        assert_eq!(h[0], 0x80);
        assert_eq!(h[1], 0x80 | PT_H264);
        assert_eq!(u16::from_be_bytes([h[2], h[3]]), seq0);
        assert_eq!(
            u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
            s.ts_base.wrapping_add(9000)
        );
        let sr = s.sender_report(std::time::SystemTime::now()).unwrap();
        assert_eq!(sr.len(), 28);
        assert_eq!((sr[1], u16::from_be_bytes([sr[2], sr[3]])), (200, 6));
        assert_eq!(
            u32::from_be_bytes([sr[20], sr[21], sr[22], sr[23]]),
            1,
            "packet count"
        );
    }

    pub fn h265_info() -> TrackInfo {
        let [v, s, p] = crate::media::h265::tests::ffmpeg_main();
        TrackInfo {
            codec: Codec::H265,
            config: HevcConfig::record(&[v], &[s], &[p]).unwrap(),
        }
    }

    #[test]
    fn h265_irap_gets_parameter_sets_and_large_nals_are_fus() {
        let p = TrackParams::new(&h265_info()).unwrap();
        assert_eq!((p.payload_type(), p.clock_rate()), (96, 90_000));
        // AUD, then an IDR_W_RADL (type 19) of 5000 bytes, TID 1.
        let mut idr = vec![19 << 1, 1];
        idr.extend((0..5000u32).map(|i| i as u8));
        let f = frame(Codec::H265, au(&[&[35 << 1, 1, 0x50], &idr]), true);
        let c = packetize(&f, &p).unwrap();
        let types: Vec<u8> = c
            .iter()
            .map(|c| {
                h265::nal_type(if c.prefix.is_empty() {
                    &c.body
                } else {
                    &c.prefix
                })
            })
            .collect();
        assert_eq!(
            &types[..4],
            &[32, 33, 34, 49],
            "VPS, SPS, PPS, then FUs; the AUD is dropped"
        );
        assert!(c.iter().all(|c| c.len() <= MAX_PAYLOAD));
        assert_eq!(c.iter().filter(|c| c.marker).count(), 1);
        assert!(c.last().unwrap().marker);
        let fus = &c[3..];
        assert_eq!(&fus[0].prefix[..], &[49 << 1, 1, 0x80 | 19]);
        assert_eq!(fus.last().unwrap().prefix[2], 0x40 | 19);
        assert!(fus[1..fus.len() - 1].iter().all(|c| c.prefix[2] == 19));
        let mut back = vec![(fus[0].prefix[0] & 0x81) | (19 << 1), fus[0].prefix[1]];
        for x in fus {
            back.extend_from_slice(&x.body);
        }
        assert_eq!(back, idr);
        // A non-IRAP picture goes alone.
        let f = frame(Codec::H265, au(&[&[1 << 1, 1, 9]]), false);
        let c = packetize(&f, &p).unwrap();
        assert_eq!(c.len(), 1);
        assert!(c[0].marker);
    }

    #[test]
    fn truncated_access_unit_is_an_error_not_a_panic() {
        let p = TrackParams::new(&h264_info()).unwrap();
        let f = frame(Codec::H264, Bytes::from_static(&[0, 0, 0, 9, 0x65]), true);
        assert!(packetize(&f, &p).is_err());
    }
}
