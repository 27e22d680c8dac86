//! Codec-neutral media units shared by every demuxer and muxer.
//!
//! A [`Frame`] is one access unit. Its payload is a [`Bytes`] cut straight out
//! of the demuxer's read buffer, so fan-out to any number of viewers clones a
//! reference count, never the bytes (DESIGN.md "The hub").

pub mod depack;
pub mod flac;
pub mod flv;
pub mod fmp4;
pub mod h264;
pub mod h265;
pub mod jpeg;
pub mod rtp;
pub mod ts;

use std::sync::{Arc, OnceLock};

use bytes::Bytes;

/// Every timestamp in a [`Frame`] counts ticks of this clock. 90 kHz is the
/// RTP video clock (RFC 6184 §5.1) and the MPEG-TS PTS clock (ISO 13818-1
/// §2.4.3.7), so the two muxers that come next need no rescaling; FLV's
/// milliseconds convert exactly (×90).
pub const TIMESCALE: i64 = 90_000;

/// Converts FLV milliseconds to [`TIMESCALE`] ticks.
pub const fn ms_to_ticks(ms: i64) -> i64 {
    ms * (TIMESCALE / 1000)
}

/// Converts [`TIMESCALE`] ticks to milliseconds, rounding toward negative
/// infinity so that ordering is preserved.
pub const fn ticks_to_ms(ticks: i64) -> i64 {
    ticks.div_euclid(TIMESCALE / 1000)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TrackKind {
    Video,
    Audio,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// Payload: AVCC access unit (4-byte length-prefixed NAL units, ISO
    /// 14496-15 §5.3.4.2), as FLV carries it.
    H264,
    /// Payload: one access unit as 4-byte length-prefixed NAL units (ISO
    /// 14496-15 §8.3.3, the `hvc1` sample format), as H.264's is.
    /// Keyframes are IRAP pictures (H.265 §3.73, NAL types 16..=23).
    H265,
    /// Payload: one baseline JPEG image (ITU T.81), SOI to EOI: MJPEG, as
    /// `ffmpeg:cam#video=mjpeg` makes it for `/api/stream.mjpeg`. Every
    /// frame is a keyframe.
    Jpeg,
    /// Payload: one raw AAC frame (no ADTS header).
    Aac,
    /// Payload: ITU-T G.711 A-law samples, 8 kHz mono (what most IP cameras
    /// send). Carried so that `ffmpeg:cam#audio=aac` can transcode it.
    Pcma,
    /// Payload: ITU-T G.711 µ-law samples, 8 kHz mono.
    Pcmu,
    /// Payload: one Opus packet (RFC 6716), 48 kHz clock. Only outputs that
    /// carry Opus take it (RTSP with `?audio=opus`; WebRTC later): FLV,
    /// MPEG-TS and fMP4 here do not.
    Opus,
    /// Payload: one FLAC frame (RFC 9639 §9). Never from a camera: what
    /// the MP4 outputs make of G.711 in process, since browsers' MSE take
    /// FLAC in MP4 and not G.711. Config: the 34-byte STREAMINFO (§8.2).
    Flac,
}

impl Codec {
    pub fn kind(self) -> TrackKind {
        match self {
            Codec::H264 | Codec::H265 | Codec::Jpeg => TrackKind::Video,
            Codec::Aac | Codec::Pcma | Codec::Pcmu | Codec::Opus | Codec::Flac => TrackKind::Audio,
        }
    }
}

/// A track's parameters: they travel once when the track appears and again
/// whenever they change, never with every frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackInfo {
    pub codec: Codec,
    /// H.264: AVCDecoderConfigurationRecord (ISO 14496-15 §5.2.4.1).
    /// H.265: HEVCDecoderConfigurationRecord (ISO 14496-15 §8.3.3.1).
    /// AAC: AudioSpecificConfig (ISO 14496-3 §1.6.2.1).
    /// G.711: empty (the codec says it all).
    pub config: Bytes,
}

impl TrackInfo {
    pub fn kind(&self) -> TrackKind {
        self.codec.kind()
    }

    /// AAC sample rate from the AudioSpecificConfig, where it can be read.
    pub fn aac_sample_rate(&self) -> Option<u32> {
        const RATES: [u32; 13] = [
            96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
        ];
        if self.codec != Codec::Aac || self.config.len() < 2 {
            return None;
        }
        // ISO 14496-3 §1.6.2.1: 5 bits object type, 4 bits frequency index.
        let idx = ((self.config[0] & 0x07) << 1) | (self.config[1] >> 7);
        RATES.get(idx as usize).copied()
    }
}

/// The most media sections (m-lines) an SDP we are given may have: a
/// WebRTC offer or an RTSP ANNOUNCE. Publishers send one video and one
/// audio, browsers video, audio and data, Home Assistant 2-3; each section
/// costs a depacketizer (or str0m a media and its codec tables), so the
/// bound is small and the same for both.
pub const MAX_SDP_MEDIA: usize = 8;

/// One access unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub codec: Codec,
    /// Decode time, in [`TIMESCALE`] ticks.
    pub dts: i64,
    /// Presentation time, in [`TIMESCALE`] ticks (`pts >= dts` for H.264 with
    /// B-frames; equal otherwise).
    pub pts: i64,
    /// A random access point: an IDR picture for H.264; every audio frame.
    pub keyframe: bool,
    pub payload: Bytes,
    /// This frame as each output format writes it, made by the first viewer
    /// that needs it and shared by all the others.
    pub wire: Wire,
}

/// Serialized forms of one frame that are byte-for-byte the same for every
/// viewer of an output format. An FLV tag is (the hub gives every frame one
/// stream clock), so 500 FLV viewers cost one tag, not 500.
#[derive(Clone, Debug, Default)]
pub struct Wire(Arc<WireForms>);

#[derive(Debug, Default)]
struct WireForms {
    flv: OnceLock<Bytes>,
    rtp: OnceLock<Arc<[rtp::Chunk]>>,
    joined: OnceLock<JoinedRtp>,
}

/// A frame's RTP payloads at most [`rtp::SAFE_PAYLOAD`] bytes long, each
/// also as one buffer (prefix and body joined), as a WebRTC stack takes
/// them: made once per frame and shared by every peer, and by each peer's
/// retransmission history.
#[derive(Debug, Clone, Default)]
pub struct JoinedRtp {
    pub chunks: Arc<[rtp::Chunk]>,
    pub payloads: Arc<[Arc<[u8]>]>,
}

impl Wire {
    /// The FLV tag, made by `make` on first use.
    pub fn flv(&self, make: impl FnOnce() -> Bytes) -> &Bytes {
        self.0.flv.get_or_init(make)
    }

    /// The RTP payloads (everything but the per-viewer RTP header), made
    /// by `make` on first use.
    pub fn rtp(&self, make: impl FnOnce() -> Arc<[rtp::Chunk]>) -> &Arc<[rtp::Chunk]> {
        self.0.rtp.get_or_init(make)
    }

    /// The WebRTC-sized RTP payloads, made by `make` on first use.
    pub fn joined_rtp(&self, make: impl FnOnce() -> JoinedRtp) -> &JoinedRtp {
        self.0.joined.get_or_init(make)
    }
}

/// A cache is not part of what a frame is.
impl PartialEq for Wire {
    fn eq(&self, _: &Wire) -> bool {
        true
    }
}
impl Eq for Wire {}

impl Frame {
    pub fn new(codec: Codec, dts: i64, pts: i64, keyframe: bool, payload: Bytes) -> Frame {
        Frame {
            codec,
            dts,
            pts,
            keyframe,
            payload,
            wire: Wire::default(),
        }
    }

    pub fn kind(&self) -> TrackKind {
        self.codec.kind()
    }
}
