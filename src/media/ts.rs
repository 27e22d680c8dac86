//! MPEG-TS muxing (ISO/IEC 13818-1) of H.264, H.265 and AAC, for HLS segments
//! (RFC 8216 §3.2).
//!
//! Our own small muxer: a PAT and PMT start every segment, H.264 and H.265
//! go in Annex B with an AUD and the parameter sets before every IDR (IRAP
//! picture for H.265), AAC in ADTS.
//! Continuity counters live in the muxer and run on across segments, and
//! timestamps are the stream clock (90 kHz already), so PTS/DTS are
//! continuous from one segment to the next.

use bytes::{BufMut, Bytes, BytesMut};

use super::h264::{self, AvcConfig};
use super::h265::{self, HevcConfig};
use super::{Codec, Frame, TrackInfo};

pub const PACKET: usize = 188;
const PID_PAT: u16 = 0;
const PID_PMT: u16 = 0x1000;
pub const PID_VIDEO: u16 = 0x100;
pub const PID_AUDIO: u16 = 0x101;
/// Table 2-34 stream_type.
const STREAM_H264: u8 = 0x1b;
/// H.265 video (ISO 13818-1:2015, Table 2-34; HLS since RFC 8216).
const STREAM_H265: u8 = 0x24;
const STREAM_AAC: u8 = 0x0f;

/// CRC-32/MPEG-2 (Annex A): polynomial 0x04C11DB7, no reflection.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= (b as u32) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04c1_1db7
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// ADTS fixed and variable header fields (ISO 14496-3 §1.A.2.2) for one
/// frame, from the AudioSpecificConfig.
fn adts_header(asc: &[u8], frame_len: usize) -> [u8; 7] {
    let object = (asc[0] >> 3).max(1); // AAC LC is 2; profile = object - 1
    let freq = ((asc[0] & 0x07) << 1) | (asc[1] >> 7);
    let channels = (asc[1] >> 3) & 0x0f;
    let len = frame_len + 7;
    [
        0xff,
        0xf1, // MPEG-4, layer 0, no CRC
        ((object - 1) << 6) | (freq << 2) | (channels >> 2),
        ((channels & 3) << 6) | ((len >> 11) as u8 & 0x03),
        (len >> 3) as u8,
        ((len as u8 & 0x07) << 5) | 0x1f,
        0xfc,
    ]
}

/// The muxer for one segmenter: tracks, continuity counters.
pub struct Muxer {
    video: Option<Video>,
    audio: Option<TrackInfo>,
    cc: [u8; 4],
}

/// The video track's parameters, as the muxer needs them.
enum Video {
    H264(AvcConfig),
    H265(HevcConfig),
}

impl Video {
    fn stream_type(&self) -> u8 {
        match self {
            Video::H264(_) => STREAM_H264,
            Video::H265(_) => STREAM_H265,
        }
    }
}

impl Muxer {
    pub fn new() -> Muxer {
        Muxer {
            video: None,
            audio: None,
            cc: [0; 4],
        }
    }

    /// New track parameters; an unusable H.264 or H.265 record drops the
    /// video.
    pub fn set_tracks(&mut self, video: Option<&TrackInfo>, audio: Option<&TrackInfo>) {
        self.video = video.and_then(|v| match v.codec {
            Codec::H264 => AvcConfig::parse(&v.config).ok().map(Video::H264),
            Codec::H265 => HevcConfig::parse(&v.config).ok().map(Video::H265),
            _ => None,
        });
        self.audio = audio
            .filter(|a| a.codec == Codec::Aac && a.config.len() >= 2)
            .cloned();
    }

    pub fn has_video(&self) -> bool {
        self.video.is_some()
    }

    fn cc(&mut self, pid: u16) -> u8 {
        let i = match pid {
            PID_PAT => 0,
            PID_PMT => 1,
            PID_VIDEO => 2,
            _ => 3,
        };
        let c = self.cc[i];
        self.cc[i] = (c + 1) & 0x0f;
        c
    }

    /// PAT and PMT (§2.4.4.3, §2.4.4.8): the start of every segment, so
    /// each can be decoded on its own.
    pub fn tables(&mut self, out: &mut BytesMut) {
        let mut pat = vec![0x00, 0xb0, 0x0d, 0x00, 0x01, 0xc1, 0x00, 0x00, 0x00, 0x01];
        pat.extend_from_slice(&[0xe0 | (PID_PMT >> 8) as u8, PID_PMT as u8]);
        self.section(out, PID_PAT, pat);

        let pcr = if self.video.is_some() {
            PID_VIDEO
        } else {
            PID_AUDIO
        };
        let mut streams = Vec::new();
        if let Some(v) = &self.video {
            streams.extend_from_slice(&[
                v.stream_type(),
                0xe0 | (PID_VIDEO >> 8) as u8,
                PID_VIDEO as u8,
                0xf0,
                0x00,
            ]);
        }
        if self.audio.is_some() {
            streams.extend_from_slice(&[
                STREAM_AAC,
                0xe0 | (PID_AUDIO >> 8) as u8,
                PID_AUDIO as u8,
                0xf0,
                0x00,
            ]);
        }
        let len = 9 + streams.len() + 4;
        let mut pmt = vec![
            0x02,
            0xb0 | (len >> 8) as u8,
            len as u8,
            0x00,
            0x01,
            0xc1,
            0x00,
            0x00,
        ];
        pmt.extend_from_slice(&[0xe0 | (pcr >> 8) as u8, pcr as u8, 0xf0, 0x00]);
        pmt.extend_from_slice(&streams);
        self.section(out, PID_PMT, pmt);
    }

    fn section(&mut self, out: &mut BytesMut, pid: u16, mut body: Vec<u8>) {
        let crc = crc32(&body);
        body.extend_from_slice(&crc.to_be_bytes());
        let cc = self.cc(pid);
        out.put_u8(0x47);
        out.put_u8(0x40 | (pid >> 8) as u8); // payload_unit_start
        out.put_u8(pid as u8);
        out.put_u8(0x10 | cc);
        out.put_u8(0); // pointer_field
        out.put_slice(&body);
        out.put_bytes(0xff, PACKET - 5 - body.len());
    }

    /// One frame as a PES packet. Frames of a track we have no parameters
    /// for are skipped.
    pub fn frame(&mut self, f: &Frame, out: &mut BytesMut) {
        match f.codec {
            Codec::H264 => {
                let Some(Video::H264(cfg)) = &self.video else {
                    return;
                };
                // Annex B: an AUD first (the HLS spec asks for it), then
                // SPS/PPS before an IDR, then every NAL with a start code.
                let mut es = BytesMut::with_capacity(f.payload.len() + 64);
                es.put_slice(&[0, 0, 0, 1, 0x09, 0xf0]);
                let mut has_sps = false;
                let nals: Vec<Bytes> = h264::nal_units(&f.payload, cfg.length_size)
                    .filter_map(Result::ok)
                    .collect();
                for n in &nals {
                    has_sps |= h264::nal_type(n) == h264::NAL_SPS;
                }
                if f.keyframe && !has_sps {
                    for ps in cfg.sps.iter().chain(&cfg.pps) {
                        es.put_slice(&[0, 0, 0, 1]);
                        es.put_slice(ps);
                    }
                }
                for n in nals.iter().filter(|n| h264::nal_type(n) != h264::NAL_AUD) {
                    es.put_slice(&[0, 0, 0, 1]);
                    es.put_slice(n);
                }
                self.pes(out, PID_VIDEO, 0xe0, f, &es, true);
            }
            Codec::H265 => {
                let Some(Video::H265(cfg)) = &self.video else {
                    return;
                };
                // As for H.264: an AUD (H.265 §7.3.2.5; pic_type 2, any
                // slice type) first, the parameter sets before an IRAP
                // picture that lacks them, then every NAL unit.
                let mut es = BytesMut::with_capacity(f.payload.len() + 128);
                es.put_slice(&[0, 0, 0, 1, h265::NAL_AUD << 1, 1, 0x50]);
                let nals: Vec<Bytes> = h264::nal_units(&f.payload, cfg.length_size)
                    .filter_map(Result::ok)
                    .collect();
                let has_vps = nals.iter().any(|n| h265::nal_type(n) == h265::NAL_VPS);
                let irap = nals.iter().any(|n| h265::is_irap(h265::nal_type(n)));
                if (f.keyframe || irap) && !has_vps {
                    for ps in cfg.vps.iter().chain(&cfg.sps).chain(&cfg.pps) {
                        es.put_slice(&[0, 0, 0, 1]);
                        es.put_slice(ps);
                    }
                }
                for n in nals.iter().filter(|n| h265::nal_type(n) != h265::NAL_AUD) {
                    es.put_slice(&[0, 0, 0, 1]);
                    es.put_slice(n);
                }
                self.pes(out, PID_VIDEO, 0xe0, f, &es, true);
            }
            Codec::Aac => {
                let Some(a) = &self.audio else { return };
                let mut es = BytesMut::with_capacity(f.payload.len() + 7);
                es.put_slice(&adts_header(&a.config, f.payload.len()));
                es.put_slice(&f.payload);
                let pcr = self.video.is_none();
                self.pes(out, PID_AUDIO, 0xc0, f, &es, pcr);
            }
            // HLS players take neither G.711 nor anything else in TS.
            _ => {}
        }
    }

    fn pes(
        &mut self,
        out: &mut BytesMut,
        pid: u16,
        stream_id: u8,
        f: &Frame,
        es: &[u8],
        pcr: bool,
    ) {
        const MASK: i64 = (1 << 33) - 1;
        let (pts, dts) = (f.pts & MASK, f.dts & MASK);
        let with_dts = pts != dts;
        let mut head = BytesMut::with_capacity(19);
        head.put_slice(&[0, 0, 1, stream_id]);
        let header_len = if with_dts { 10 } else { 5 };
        let pes_len = 3 + header_len + es.len();
        // Video may exceed 16 bits: 0 means "unbounded" (§2.4.3.7).
        head.put_u16(if stream_id == 0xe0 || pes_len > 0xffff {
            0
        } else {
            pes_len as u16
        });
        head.put_u8(0x80); // marker bits, no scrambling
        head.put_u8(if with_dts { 0xc0 } else { 0x80 });
        head.put_u8(header_len as u8);
        let ts = |head: &mut BytesMut, prefix: u8, t: i64| {
            head.put_u8(prefix << 4 | ((t >> 29) as u8 & 0x0e) | 1);
            head.put_u16((((t >> 14) & 0xfffe) | 1) as u16);
            head.put_u16((((t << 1) & 0xfffe) | 1) as u16);
        };
        ts(&mut head, if with_dts { 3 } else { 2 }, pts);
        if with_dts {
            ts(&mut head, 1, dts);
        }
        let mut data = Vec::with_capacity(head.len() + es.len());
        data.extend_from_slice(&head);
        data.extend_from_slice(es);

        let mut first = true;
        let mut at = 0;
        while at < data.len() {
            let cc = self.cc(pid);
            let mut af = Vec::new();
            if first {
                // Adaptation field: random access on keyframes, and the PCR
                // (§2.4.3.5) on the clock track, a little before the DTS.
                let mut flags = 0u8;
                if f.keyframe {
                    flags |= 0x40;
                }
                if pcr {
                    flags |= 0x10;
                }
                if flags != 0 {
                    af.push(flags);
                    if pcr {
                        let base = (dts - 9000).max(0) as u64 & MASK as u64;
                        af.extend_from_slice(&[
                            (base >> 25) as u8,
                            (base >> 17) as u8,
                            (base >> 9) as u8,
                            (base >> 1) as u8,
                            ((base & 1) << 7) as u8 | 0x7e,
                            0,
                        ]);
                    }
                }
            }
            let room = PACKET - 4 - if af.is_empty() { 0 } else { 1 + af.len() };
            let take = (data.len() - at).min(room);
            // Stuff the adaptation field so the packet is exactly 188 bytes.
            let stuffing = room - take;
            let has_af = !af.is_empty() || stuffing > 0;
            out.put_u8(0x47);
            out.put_u8(if first { 0x40 } else { 0 } | (pid >> 8) as u8);
            out.put_u8(pid as u8);
            out.put_u8(if has_af { 0x30 } else { 0x10 } | cc);
            if has_af {
                if af.is_empty() {
                    // One byte of stuffing is an adaptation_field_length of 0.
                    let len = stuffing - 1;
                    out.put_u8(len as u8);
                    if len > 0 {
                        out.put_u8(0);
                        out.put_bytes(0xff, len - 1);
                    }
                } else {
                    out.put_u8((af.len() + stuffing) as u8);
                    out.put_slice(&af);
                    out.put_bytes(0xff, stuffing);
                }
            }
            out.put_slice(&data[at..at + take]);
            at += take;
            first = false;
        }
    }
}

impl Default for Muxer {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn avcc(nals: &[&[u8]]) -> Bytes {
        h264::to_avcc(nals)
    }

    #[test]
    fn crc_of_a_known_pat() {
        // The PAT ffmpeg writes for program 1, PMT PID 0x1000.
        let pat = [
            0x00, 0xb0, 0x0d, 0x00, 0x01, 0xc1, 0x00, 0x00, 0x00, 0x01, 0xf0, 0x00,
        ];
        assert_eq!(crc32(&pat), 0x2ab1_04b2);
    }

    #[test]
    fn packets_are_188_bytes_and_counters_continue() {
        let mut m = Muxer::new();
        let v = TrackInfo {
            codec: Codec::H264,
            config: Bytes::from_static(&[
                1, 66, 0xe0, 30, 0xff, 0xe1, 0, 4, 0x67, 66, 0xe0, 30, 1, 0, 2, 0x68, 0xce,
            ]),
        };
        let a = TrackInfo {
            codec: Codec::Aac,
            config: Bytes::from_static(&[0x12, 0x10]),
        };
        m.set_tracks(Some(&v), Some(&a));
        let mut out = BytesMut::new();
        m.tables(&mut out);
        let big = vec![0x65u8; 5000];
        m.frame(
            &Frame::new(Codec::H264, 90000, 93600, true, avcc(&[&big])),
            &mut out,
        );
        m.frame(
            &Frame::new(Codec::Aac, 90000, 90000, true, Bytes::from(vec![1u8; 300])),
            &mut out,
        );
        m.tables(&mut out);
        m.frame(
            &Frame::new(Codec::H264, 93600, 93600, false, avcc(&[&[0x41, 1]])),
            &mut out,
        );
        assert_eq!(out.len() % PACKET, 0);
        let mut last: std::collections::HashMap<u16, u8> = Default::default();
        for p in out.chunks(PACKET) {
            assert_eq!(p[0], 0x47);
            let pid = u16::from_be_bytes([p[1] & 0x1f, p[2]]);
            let cc = p[3] & 0x0f;
            if let Some(prev) = last.insert(pid, cc) {
                assert_eq!(cc, (prev + 1) & 0x0f, "continuity on pid {pid:#x}");
            }
        }
        assert_eq!(last.len(), 4);
    }

    #[test]
    fn h265_is_stream_type_0x24_with_aud_and_parameter_sets_first() {
        let mut m = Muxer::new();
        let info = crate::media::rtp::tests::h265_info();
        m.set_tracks(Some(&info), None);
        let mut out = BytesMut::new();
        m.tables(&mut out);
        // The PMT's one stream: type 0x24 on the video PID.
        let pmt = &out[PACKET..2 * PACKET];
        assert_eq!(&pmt[5 + 12..5 + 15], &[0x24, 0xe1, 0x00]);
        let mut out = BytesMut::new();
        let idr = [19u8 << 1, 1, 0xaa, 0xbb];
        m.frame(
            &Frame::new(Codec::H265, 0, 0, true, h264::to_avcc(&[&idr])),
            &mut out,
        );
        // PES header: 9 bytes + 5 of PTS, after a 4-byte TS header and an
        // adaptation field (random access + PCR: 1 + 1 + 6 bytes, stuffed).
        let af = out[4] as usize;
        let es = &out[4 + 1 + af + 14..];
        let nals = h265::annex_b_nals(es);
        let types: Vec<u8> = nals.iter().map(|n| h265::nal_type(n)).collect();
        assert_eq!(types, vec![35, 32, 33, 34, 19], "AUD, VPS, SPS, PPS, IDR");
        assert_eq!(nals[4], &idr[..]);
    }

    #[test]
    fn adts_for_aac_lc_44100_stereo() {
        let h = adts_header(&[0x12, 0x10], 300);
        assert_eq!(&h[..2], &[0xff, 0xf1]);
        assert_eq!(h[2] >> 6, 1, "profile LC");
        assert_eq!((h[2] >> 2) & 0x0f, 4, "44.1 kHz");
        let len = ((h[3] as usize & 3) << 11) | (h[4] as usize) << 3 | (h[5] as usize) >> 5;
        assert_eq!(len, 307);
    }
}
