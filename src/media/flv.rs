//! FLV (Adobe "Video File Format Specification v10.1", Annex E) demuxing and
//! muxing of H.264 + AAC, and of H.265 as Enhanced RTMP v2 writes it
//! (veovera's "Enhanced RTMP" spec: the ExVideoTagHeader with FourCC
//! `hvc1`; OBS 30+ publishes HEVC so). The enhanced `avc1` form is read too.
//!
//! The demuxer is incremental and checks before it parses: [`Demuxer::next_event`]
//! says "incomplete" (`Ok(None)`) until a whole tag is buffered, and only then
//! commits to it. Tag payloads are cut out of the read buffer without a copy.
//!
//! We frame tags ourselves rather than use scuffle-flv (DESIGN.md names it):
//! scuffle-flv parses a complete in-memory buffer, while a producer's stdout
//! arrives in arbitrary pieces and must be parsed as it comes. The tag bodies
//! we need (AVC and AAC packets) are a handful of bytes of header.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::h265::HevcConfig;
use super::{ms_to_ticks, ticks_to_ms, Codec, Frame, TrackInfo, TrackKind};

/// Annex E.2: "FLV", version 1, flags, header length 9.
const SIGNATURE: &[u8; 3] = b"FLV";
const HEADER_LEN: usize = 9;
/// Annex E.4.1: TagType(1) DataSize(3) Timestamp(3) TimestampExtended(1) StreamID(3).
const TAG_HEADER_LEN: usize = 11;
/// No sane audio or video tag comes near this; a bigger size means we are not
/// looking at FLV (or lost framing), and buffering it would only eat memory.
pub const MAX_TAG_SIZE: usize = 8 << 20;

const TAG_AUDIO: u8 = 8;
const TAG_VIDEO: u8 = 9;
const TAG_SCRIPT: u8 = 18;

/// Annex E.4.3.1 CodecID 7 = AVC; E.4.2.1 SoundFormat 10 = AAC.
const VIDEO_CODEC_AVC: u8 = 7;
const SOUND_FORMAT_AAC: u8 = 10;
/// Enhanced RTMP v2 VideoPacketType (the low 4 bits after IsExHeader).
const EX_SEQUENCE_START: u8 = 0;
const EX_CODED_FRAMES: u8 = 1;
const EX_SEQUENCE_END: u8 = 2;
/// CodedFrames whose composition time offset is zero, left out.
const EX_CODED_FRAMES_X: u8 = 3;
const EX_METADATA: u8 = 4;
/// E.4.3.1 FrameType 5: video info/command frame.
const FRAME_COMMAND: u8 = 5;
/// E.4.2.1 SoundFormat 7 = G.711 A-law, 8 = G.711 mu-law.
const SOUND_FORMAT_ALAW: u8 = 7;
const SOUND_FORMAT_MULAW: u8 = 8;
/// G.711 has no sequence header; its one-byte audio header is fixed:
/// 8 kHz ("special" rate 0), 16-bit flag, mono (as ffmpeg's flvenc writes it).
const G711_FLAGS: u8 = 0b0000_0010;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("FLV at byte offset {offset}: {reason}")]
pub struct FlvError {
    /// Offset from the start of the FLV byte stream: enough to find the
    /// offending tag in a capture of the producer's stdout.
    pub offset: u64,
    pub reason: String,
}

/// What the demuxer found in one tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A sequence header: the track's parameters, new or changed.
    Track(TrackInfo),
    Frame(Frame),
    /// A tag of a codec we do not relay yet. The caller reports it once.
    Unsupported {
        kind: TrackKind,
        codec: String,
    },
}

#[derive(Debug)]
pub struct Demuxer {
    buf: BytesMut,
    /// Stream offset of `buf[0]`.
    offset: u64,
    header_done: bool,
    /// The PreviousTagSize that trails the last tag (E.3). It is skipped
    /// when the next tag is read, not awaited after each tag: a tag is
    /// complete without it, and waiting would hold every frame back until
    /// the next one arrives.
    skip: usize,
    tags: TagParser,
    /// The second event of a tag (see [`TagParser::parse`]), for the next
    /// call.
    pending: Option<Event>,
}

impl Default for Demuxer {
    fn default() -> Self {
        Self::new()
    }
}

impl Demuxer {
    pub fn new() -> Self {
        Demuxer {
            buf: BytesMut::with_capacity(64 * 1024),
            offset: 0,
            header_done: false,
            skip: 0,
            tags: TagParser::default(),
            pending: None,
        }
    }

    /// The read buffer, for `AsyncReadExt::read_buf`: data read straight into
    /// it becomes frame payloads without another copy.
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes consumed so far (the stream offset of the next unparsed byte).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn err(&self, at: usize, reason: impl Into<String>) -> FlvError {
        FlvError {
            offset: self.offset + at as u64,
            reason: reason.into(),
        }
    }

    fn consume(&mut self, n: usize) -> Bytes {
        self.offset += n as u64;
        self.buf.split_to(n).freeze()
    }

    /// The next event, `Ok(None)` if more input is needed. Tags that carry
    /// nothing we relay (script data, AVC end-of-sequence) are skipped.
    pub fn next_event(&mut self) -> Result<Option<Event>, FlvError> {
        if let Some(ev) = self.pending.take() {
            return Ok(Some(ev));
        }
        loop {
            if !self.header_done {
                if self.buf.len() < HEADER_LEN {
                    return Ok(None);
                }
                if &self.buf[..3] != SIGNATURE {
                    return Err(self.err(0, "missing \"FLV\" signature"));
                }
                let data_offset =
                    u32::from_be_bytes([self.buf[5], self.buf[6], self.buf[7], self.buf[8]])
                        as usize;
                if !(HEADER_LEN..=1024).contains(&data_offset) {
                    return Err(self.err(5, format!("header length {data_offset} out of range")));
                }
                if self.buf.len() < data_offset {
                    return Ok(None);
                }
                self.consume(data_offset);
                self.header_done = true;
                // E.3: the body starts with PreviousTagSize0.
                self.skip = 4;
            }

            if self.buf.len() < self.skip + TAG_HEADER_LEN {
                return Ok(None);
            }
            if self.skip > 0 {
                let n = self.skip;
                self.consume(n);
                self.skip = 0;
            }
            let h = &self.buf[..TAG_HEADER_LEN];
            let tag_type = h[0];
            let data_size = u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize;
            // E.4.1: the extended byte holds the upper 8 bits of a SI32 in ms.
            let ts = i32::from_be_bytes([h[7], h[4], h[5], h[6]]) as i64;
            if tag_type & 0x20 != 0 {
                return Err(self.err(0, "encrypted (filtered) tags are not supported"));
            }
            let tag_type = tag_type & 0x1f;
            if !matches!(tag_type, TAG_AUDIO | TAG_VIDEO | TAG_SCRIPT) {
                return Err(self.err(0, format!("unknown tag type {tag_type}")));
            }
            if data_size > MAX_TAG_SIZE {
                return Err(self.err(1, format!("tag size {data_size} exceeds {MAX_TAG_SIZE}")));
            }
            let total = TAG_HEADER_LEN + data_size;
            if self.buf.len() < total {
                // Reserve once for the whole tag rather than growing in steps.
                self.buf.reserve(total - self.buf.len());
                return Ok(None);
            }
            let tag_offset = self.offset;
            let mut body = self.consume(total);
            body.advance(TAG_HEADER_LEN);
            self.skip = 4;
            let at = |rel: u64, reason: String| FlvError {
                offset: tag_offset + TAG_HEADER_LEN as u64 + rel,
                reason,
            };
            let [first, second] = self
                .tags
                .parse(tag_type, body, ts)
                .map_err(|(r, m)| at(r, m))?;
            if first.is_some() {
                self.pending = second;
                return Ok(first);
            }
        }
    }
}

/// Turns FLV tag bodies into events: the part of FLV that RTMP shares
/// (an RTMP audio or video message is exactly an FLV tag body).
#[derive(Debug, Default)]
pub struct TagParser {
    /// G.711 carries no sequence header, so the parser announces the track
    /// itself when the first G.711 tag (or a change of law) arrives.
    g711: Option<Codec>,
}

impl TagParser {
    /// Parses one tag body of `tag_type` (8 audio, 9 video, 18 script) at
    /// `ts_ms`. Up to two events come out (a G.711 track, then its first
    /// frame). Errors give the offset within `body`.
    pub fn parse(
        &mut self,
        tag_type: u8,
        body: Bytes,
        ts_ms: i64,
    ) -> Result<[Option<Event>; 2], (u64, String)> {
        match tag_type {
            TAG_VIDEO => Ok([parse_video(body, ts_ms)?, None]),
            TAG_AUDIO => {
                let Some(ev) = parse_audio(body, ts_ms)? else {
                    return Ok([None, None]);
                };
                let g711 = match &ev {
                    Event::Frame(f) if matches!(f.codec, Codec::Pcma | Codec::Pcmu) => {
                        Some(f.codec)
                    }
                    _ => None,
                };
                if let Some(codec) = g711.filter(|c| self.g711 != Some(*c)) {
                    self.g711 = Some(codec);
                    let track = Event::Track(TrackInfo {
                        codec,
                        config: Bytes::new(),
                    });
                    return Ok([Some(track), Some(ev)]);
                }
                Ok([Some(ev), None])
            }
            // E.4.4 script data (onMetaData): nothing we relay.
            _ => Ok([None, None]),
        }
    }
}

type BodyResult = Result<Option<Event>, (u64, String)>;

fn parse_video(body: Bytes, ts_ms: i64) -> BodyResult {
    let Some(&b0) = body.first() else {
        return Ok(None); // Empty tags appear at stream ends; harmless.
    };
    if b0 & 0x80 != 0 {
        return parse_ex_video(body, ts_ms);
    }
    let frame_type = b0 >> 4;
    let codec_id = b0 & 0x0f;
    if frame_type == 5 {
        return Ok(None); // E.4.3.1 video info/command frame.
    }
    if codec_id != VIDEO_CODEC_AVC {
        let name = match codec_id {
            2 => "Sorenson H.263",
            3 | 6 => "Screen video",
            4 | 5 => "VP6",
            12 => "HEVC (non-standard id 12)",
            _ => "unknown",
        };
        return Ok(Some(Event::Unsupported {
            kind: TrackKind::Video,
            codec: format!("FLV video codec {codec_id} ({name})"),
        }));
    }
    if body.len() < 5 {
        return Err((
            0,
            format!(
                "AVC tag of {} bytes is shorter than its 5-byte header",
                body.len()
            ),
        ));
    }
    // E.4.3.1 AVCVIDEOPACKET: AVCPacketType(1) CompositionTime(SI24).
    let packet_type = body[1];
    let cts = (i32::from_be_bytes([body[2], body[3], body[4], 0]) >> 8) as i64;
    let data = body.slice(5..);
    match packet_type {
        0 => {
            check_avc_config(&data).map_err(|m| (5, m))?;
            Ok(Some(Event::Track(TrackInfo {
                codec: Codec::H264,
                config: data,
            })))
        }
        1 => {
            if data.is_empty() {
                return Ok(None);
            }
            let dts = ms_to_ticks(ts_ms);
            Ok(Some(Event::Frame(Frame::new(
                Codec::H264,
                dts,
                dts + ms_to_ticks(cts),
                frame_type == 1,
                data,
            ))))
        }
        2 => Ok(None), // end of sequence
        other => Err((1, format!("unknown AVCPacketType {other}"))),
    }
}

/// Enhanced RTMP v2 ExVideoTagHeader: IsExHeader(1 bit), FrameType(3),
/// PacketType(4), FourCC, then per packet type: SequenceStart the
/// configuration record, CodedFrames an SI24 composition time and the
/// frame, CodedFramesX the frame alone.
fn parse_ex_video(body: Bytes, ts_ms: i64) -> BodyResult {
    let frame_type = (body[0] >> 4) & 0x07;
    let packet_type = body[0] & 0x0f;
    if frame_type == FRAME_COMMAND && packet_type != EX_METADATA {
        return Ok(None); // a command frame (seek marker); nothing to show
    }
    let Some(fourcc) = body.get(1..5) else {
        return Err((
            0,
            format!("ExVideoTagHeader of {} bytes has no FourCC", body.len()),
        ));
    };
    let codec = match fourcc {
        b"hvc1" => Codec::H265,
        b"avc1" => Codec::H264,
        _ => {
            // Multitrack (6) and ModEx (7) put other things where the
            // FourCC would be; AV1 and VP9 we do not relay.
            return Ok(Some(Event::Unsupported {
                kind: TrackKind::Video,
                codec: format!(
                    "enhanced-RTMP video `{}` (packet type {packet_type})",
                    String::from_utf8_lossy(fourcc).escape_debug()
                ),
            }));
        }
    };
    match packet_type {
        EX_SEQUENCE_START => {
            let data = body.slice(5..);
            match codec {
                Codec::H265 => {
                    HevcConfig::parse(&data).map_err(|m| (5, m))?;
                }
                _ => check_avc_config(&data).map_err(|m| (5, m))?,
            }
            Ok(Some(Event::Track(TrackInfo {
                codec,
                config: data,
            })))
        }
        EX_CODED_FRAMES | EX_CODED_FRAMES_X => {
            let (cts, at) = if packet_type == EX_CODED_FRAMES {
                let c = body.get(5..8).ok_or((
                    5,
                    "CodedFrames tag shorter than its composition time".to_string(),
                ))?;
                ((i32::from_be_bytes([c[0], c[1], c[2], 0]) >> 8) as i64, 8)
            } else {
                (0, 5)
            };
            let data = body.slice(at..);
            if data.is_empty() {
                return Ok(None);
            }
            let dts = ms_to_ticks(ts_ms);
            Ok(Some(Event::Frame(Frame::new(
                codec,
                dts,
                dts + ms_to_ticks(cts),
                frame_type == 1,
                data,
            ))))
        }
        // Metadata (HDR colour info) and the end of a sequence: nothing a
        // viewer needs.
        EX_SEQUENCE_END | EX_METADATA => Ok(None),
        other => Ok(Some(Event::Unsupported {
            kind: TrackKind::Video,
            codec: format!("enhanced-RTMP video packet type {other}"),
        })),
    }
}

/// ISO 14496-15 §5.2.4.1: configurationVersion must be 1, and the record must
/// hold at least its fixed 6-byte prefix. Anything else would poison every
/// viewer's decoder, so it is rejected here rather than passed on.
fn check_avc_config(data: &[u8]) -> Result<(), String> {
    if data.len() < 7 {
        return Err(format!(
            "AVCDecoderConfigurationRecord of {} bytes is too short",
            data.len()
        ));
    }
    if data[0] != 1 {
        return Err(format!(
            "AVCDecoderConfigurationRecord version {} (expected 1)",
            data[0]
        ));
    }
    Ok(())
}

fn parse_audio(body: Bytes, ts_ms: i64) -> BodyResult {
    let Some(&b0) = body.first() else {
        return Ok(None);
    };
    let format = b0 >> 4;
    if format == SOUND_FORMAT_ALAW || format == SOUND_FORMAT_MULAW {
        let data = body.slice(1..);
        if data.is_empty() {
            return Ok(None);
        }
        let ts = ms_to_ticks(ts_ms);
        return Ok(Some(Event::Frame(Frame::new(
            if format == SOUND_FORMAT_ALAW {
                Codec::Pcma
            } else {
                Codec::Pcmu
            },
            ts,
            ts,
            true,
            data,
        ))));
    }
    if format != SOUND_FORMAT_AAC {
        let name = match format {
            0 | 3 => "linear PCM",
            1 => "ADPCM",
            2 | 14 => "MP3",
            4..=6 => "Nellymoser",
            9 => "enhanced-RTMP audio",
            11 => "Speex",
            _ => "unknown",
        };
        return Ok(Some(Event::Unsupported {
            kind: TrackKind::Audio,
            codec: format!("FLV sound format {format} ({name})"),
        }));
    }
    if body.len() < 2 {
        return Err((0, "AAC tag shorter than its 2-byte header".into()));
    }
    let data = body.slice(2..);
    match body[1] {
        0 => {
            if data.len() < 2 {
                return Err((
                    2,
                    format!("AudioSpecificConfig of {} bytes is too short", data.len()),
                ));
            }
            Ok(Some(Event::Track(TrackInfo {
                codec: Codec::Aac,
                config: data,
            })))
        }
        1 => {
            if data.is_empty() {
                return Ok(None);
            }
            let ts = ms_to_ticks(ts_ms);
            Ok(Some(Event::Frame(Frame::new(
                Codec::Aac,
                ts,
                ts,
                true,
                data,
            ))))
        }
        other => Err((1, format!("unknown AACPacketType {other}"))),
    }
}

/// The per-viewer part of an FLV byte stream: the file header and the
/// sequence headers, which depend on what the viewer has been sent. Frame
/// tags are the same for every viewer and come from [`shared_tag`].
/// Headers are carved out of one scratch buffer.
#[derive(Debug)]
pub struct Muxer {
    scratch: BytesMut,
}

impl Default for Muxer {
    fn default() -> Self {
        Self::new()
    }
}

impl Muxer {
    pub fn new() -> Self {
        Muxer {
            scratch: BytesMut::with_capacity(4096),
        }
    }

    /// The file header (E.2) and PreviousTagSize0. The flags tell players
    /// which tracks to wait for.
    pub fn header(&mut self, has_video: bool, has_audio: bool) -> Bytes {
        self.reserve(HEADER_LEN + 4);
        self.scratch.put_slice(SIGNATURE);
        self.scratch.put_u8(1);
        self.scratch
            .put_u8(u8::from(has_audio) << 2 | u8::from(has_video));
        self.scratch.put_u32(HEADER_LEN as u32);
        self.scratch.put_u32(0);
        self.scratch.split().freeze()
    }

    /// A sequence header tag for `info`, at `ts_ms`; `None` for codecs that
    /// have none (G.711).
    pub fn track(&mut self, info: &TrackInfo, ts_ms: i64) -> Option<[Bytes; 3]> {
        if matches!(
            info.codec,
            Codec::Pcma | Codec::Pcmu | Codec::Opus | Codec::Jpeg
        ) {
            return None;
        }
        let (head, tail) = self.tag(info.codec, 0, info.config.len(), ts_ms, 0, true);
        Some([head, info.config.clone(), tail])
    }

    fn reserve(&mut self, n: usize) {
        if self.scratch.capacity() < n {
            self.scratch.reserve(4096.max(n));
        }
    }

    fn tag(
        &mut self,
        codec: Codec,
        packet_type: u8,
        payload_len: usize,
        ts_ms: i64,
        cts_ms: i64,
        key: bool,
    ) -> (Bytes, Bytes) {
        self.reserve(TAG_HEADER_LEN + 5 + 4);
        let data_size = put_tag_header(
            &mut self.scratch,
            codec,
            packet_type,
            payload_len,
            ts_ms,
            cts_ms,
            key,
        );
        let head = self.scratch.split().freeze();
        self.scratch.put_u32(TAG_HEADER_LEN as u32 + data_size);
        (head, self.scratch.split().freeze())
    }
}

/// One viewer's FLV session, the same for HTTP-FLV and RTMP play: the
/// tracks it plays and the sequence headers (E.4.3.1's
/// AVCDecoderConfigurationRecord, the AudioSpecificConfig) it has been
/// sent. Every track's header goes before the first frame; afterwards a
/// track's header goes again, before its next frame, whenever it changed.
/// A track that went away (its publisher or producer left) is sent its
/// header again when it comes back, even unchanged: the next publisher
/// starts afresh, and players expect to be told.
#[derive(Debug, Default)]
pub struct Session {
    mux: Muxer,
    tracks: [Option<TrackInfo>; 2],
    sent: [Option<TrackInfo>; 2],
    started: bool,
}

/// What goes out before a frame, in this order.
#[derive(Debug)]
pub struct Before {
    /// The session's first frame: the output's file header (or RTMP's
    /// `onMetaData`) goes first, for [`Session::tracks`].
    pub first: bool,
    /// Sequence header tags ([`Muxer::track`]), video's then audio's.
    pub headers: [Option<[Bytes; 3]>; 2],
}

impl Session {
    /// The chosen tracks changed (the hub's `Delivery::Tracks`).
    pub fn set_tracks(&mut self, video: Option<TrackInfo>, audio: Option<TrackInfo>) {
        self.tracks = [video, audio];
        for k in 0..2 {
            if self.tracks[k].is_none() {
                self.sent[k] = None;
            }
        }
    }

    /// Video's, then audio's.
    pub fn tracks(&self) -> &[Option<TrackInfo>; 2] {
        &self.tracks
    }

    /// The FLV file header (E.2), flagged with the tracks there are now.
    pub fn file_header(&mut self) -> Bytes {
        self.mux
            .header(self.tracks[0].is_some(), self.tracks[1].is_some())
    }

    /// What must precede a frame of `kind` stamped `ts_ms`. A header is
    /// stamped with the time of the frame it precedes, so that each
    /// track's timestamps stay monotonic (audio runs a little ahead of or
    /// behind video).
    pub fn before_frame(&mut self, kind: TrackKind, ts_ms: i64) -> Before {
        let first = !self.started;
        self.started = true;
        let mut headers = [None, None];
        for (k, header) in headers.iter_mut().enumerate() {
            let mine = k == usize::from(kind == TrackKind::Audio);
            if !first && !mine {
                continue;
            }
            let Some(t) = &self.tracks[k] else { continue };
            if self.sent[k].as_ref() != Some(t) {
                *header = self.mux.track(t, ts_ms);
                self.sent[k] = Some(t.clone());
            }
        }
        Before { first, headers }
    }
}

/// The body of a whole tag (what an RTMP audio or video message carries):
/// without its 11-byte header and 4-byte PreviousTagSize. A slice, not a
/// copy.
pub fn tag_body(tag: &Bytes) -> Bytes {
    let start = TAG_HEADER_LEN.min(tag.len());
    tag.slice(start..tag.len().saturating_sub(4).max(start))
}

/// A frame's whole FLV tag (header, payload, PreviousTagSize) at its own
/// stream-clock time: the same bytes for every viewer, so it is built once
/// per frame and shared (see [`crate::media::Wire`]).
pub fn shared_tag(frame: &Frame) -> Bytes {
    shared_tag_ref(frame).clone()
}

/// [`shared_tag`], borrowed from the frame (no count taken on the shared
/// bytes, which every viewer's core would otherwise bounce between them).
pub fn shared_tag_ref(frame: &Frame) -> &Bytes {
    frame.wire.flv(|| {
        let mut s = BytesMut::with_capacity(TAG_HEADER_LEN + 5 + frame.payload.len() + 4);
        let cts = ticks_to_ms(frame.pts - frame.dts);
        let ts = ticks_to_ms(frame.dts).max(0);
        let data_size = put_tag_header(
            &mut s,
            frame.codec,
            1,
            frame.payload.len(),
            ts,
            cts,
            frame.keyframe,
        );
        s.put_slice(&frame.payload);
        s.put_u32(TAG_HEADER_LEN as u32 + data_size);
        s.freeze()
    })
}

/// Writes a tag header and codec header (E.4.1, E.4.2.1, E.4.3.1); returns
/// the tag's DataSize.
fn put_tag_header(
    s: &mut BytesMut,
    codec: Codec,
    packet_type: u8,
    payload_len: usize,
    ts_ms: i64,
    cts_ms: i64,
    key: bool,
) -> u32 {
    let codec_header_len = match codec {
        Codec::H264 => 5,
        Codec::Jpeg => 1,
        Codec::Aac => 2,
        Codec::Pcma | Codec::Pcmu => 1,
        Codec::Opus | Codec::Flac => 5,
        // Enhanced RTMP v2 ExVideoTagHeader: 1 byte and the FourCC, then
        // an SI24 composition time for CodedFrames with one (see below).
        Codec::H265 => {
            if packet_type == EX_CODED_FRAMES && cts_ms != 0 {
                8
            } else {
                5
            }
        }
    };
    let data_size = (codec_header_len + payload_len) as u32;
    s.put_u8(match codec.kind() {
        TrackKind::Video => TAG_VIDEO,
        TrackKind::Audio => TAG_AUDIO,
    });
    s.put_uint(data_size as u64, 3);
    // E.4.1: lower 24 bits, then the extended upper 8 bits.
    let ts = ts_ms as u32;
    s.put_uint((ts & 0x00ff_ffff) as u64, 3);
    s.put_u8((ts >> 24) as u8);
    s.put_uint(0, 3); // StreamID, always 0
    match codec {
        Codec::H264 => {
            s.put_u8(if key { 0x10 } else { 0x20 } | VIDEO_CODEC_AVC);
            s.put_u8(packet_type);
            s.put_uint((cts_ms as i32 as u32 & 0x00ff_ffff) as u64, 3);
        }
        // E.4.3.1 CodecID 1 (JPEG): never chosen for FLV by our outputs;
        // this keeps the tag well-formed if one ever were.
        Codec::Jpeg => s.put_u8(0x10 | 1),
        Codec::Aac => {
            // E.4.2.1: AAC is always signalled as 44 kHz, 16-bit, stereo;
            // the AudioSpecificConfig carries the real parameters.
            s.put_u8(SOUND_FORMAT_AAC << 4 | 0x0f);
            s.put_u8(packet_type);
        }
        Codec::Pcma => s.put_u8(SOUND_FORMAT_ALAW << 4 | G711_FLAGS),
        Codec::Pcmu => s.put_u8(SOUND_FORMAT_MULAW << 4 | G711_FLAGS),
        // Enhanced RTMP v2: SoundFormat 9 (ExHeader), AudioPacketType 1
        // (CodedFrames), FourCC "Opus". Our own outputs do not choose Opus
        // for FLV; this keeps the tag well-formed if one ever did.
        Codec::Opus => {
            s.put_u8(9 << 4 | 1);
            s.put_slice(b"Opus");
        }
        Codec::Flac => {
            s.put_u8(9 << 4 | 1);
            s.put_slice(b"fLaC");
        }
        // Enhanced RTMP v2: IsExHeader | FrameType | PacketType, FourCC.
        // A frame without a composition offset is CodedFramesX, which
        // leaves the SI24 out; the sequence start (packet type 0) is a
        // keyframe-typed tag holding the hvcC.
        Codec::H265 => {
            let packet_type = match packet_type {
                EX_CODED_FRAMES if cts_ms == 0 => EX_CODED_FRAMES_X,
                EX_CODED_FRAMES => EX_CODED_FRAMES,
                _ => EX_SEQUENCE_START,
            };
            s.put_u8(0x80 | if key { 0x10 } else { 0x20 } | packet_type);
            s.put_slice(b"hvc1");
            if packet_type == EX_CODED_FRAMES {
                s.put_uint((cts_ms as i32 as u32 & 0x00ff_ffff) as u64, 3);
            }
        }
    }
    data_size
}

#[cfg(test)]
mod tests {
    use super::*;

    fn avc_config() -> Bytes {
        // version 1, profile 66, compat 0, level 30, 0xff, 1 SPS of 4 bytes, 1 PPS of 2.
        Bytes::from_static(&[
            1, 66, 0, 30, 0xff, 0xe1, 0, 4, 0x67, 66, 0, 30, 1, 0, 2, 0x68, 0xce,
        ])
    }

    fn info(codec: Codec, config: &'static [u8]) -> TrackInfo {
        TrackInfo {
            codec,
            config: Bytes::from_static(config),
        }
    }

    /// Which kinds' headers a [`Before`] carries: (video, audio).
    fn sent(b: &Before) -> (bool, bool) {
        (b.headers[0].is_some(), b.headers[1].is_some())
    }

    #[test]
    fn a_session_sends_each_header_first_and_again_only_on_a_change() {
        let v = info(Codec::H264, &[1, 66, 0, 30]);
        let a = info(Codec::Aac, &[0x12, 0x10]);
        let mut s = Session::default();
        s.set_tracks(Some(v.clone()), Some(a.clone()));
        // The first frame (audio here) brings both headers, video's too.
        let b = s.before_frame(TrackKind::Audio, 0);
        assert!(b.first);
        assert_eq!(sent(&b), (true, true));
        let b = s.before_frame(TrackKind::Video, 40);
        assert!(!b.first);
        assert_eq!(sent(&b), (false, false));
        // Audio's parameters change: its header goes before its next frame,
        // not before a video frame.
        s.set_tracks(Some(v.clone()), Some(info(Codec::Aac, &[0x11, 0x90])));
        assert_eq!(sent(&s.before_frame(TrackKind::Video, 80)), (false, false));
        let b = s.before_frame(TrackKind::Audio, 81);
        assert_eq!(sent(&b), (false, true));
        // The header is stamped with the frame's time.
        let head = &b.headers[1].as_ref().unwrap()[0];
        assert_eq!(head[4..7], [0, 0, 81]);
        // The same parameters again are no change.
        s.set_tracks(Some(v.clone()), Some(info(Codec::Aac, &[0x11, 0x90])));
        assert_eq!(sent(&s.before_frame(TrackKind::Audio, 90)), (false, false));
    }

    #[test]
    fn a_track_that_leaves_and_comes_back_is_sent_its_header_again() {
        let v = info(Codec::H264, &[1, 66, 0, 30]);
        let mut s = Session::default();
        s.set_tracks(Some(v.clone()), None);
        assert_eq!(sent(&s.before_frame(TrackKind::Video, 0)), (true, false));
        s.set_tracks(None, None);
        s.set_tracks(Some(v), None);
        assert_eq!(sent(&s.before_frame(TrackKind::Video, 40)), (true, false));
    }

    #[test]
    fn g711_has_no_header_and_the_file_header_flags_the_tracks() {
        let mut s = Session::default();
        s.set_tracks(None, Some(info(Codec::Pcma, &[])));
        let h = s.file_header();
        assert_eq!(h[4], 0b100, "audio only");
        let b = s.before_frame(TrackKind::Audio, 0);
        assert!(b.first);
        assert_eq!(sent(&b), (false, false));
    }

    fn sample_stream() -> (Vec<Bytes>, Vec<Event>) {
        let mut m = Muxer::new();
        let v = TrackInfo {
            codec: Codec::H264,
            config: avc_config(),
        };
        let a = TrackInfo {
            codec: Codec::Aac,
            config: Bytes::from_static(&[0x12, 0x10]),
        };
        let f1 = Frame {
            codec: Codec::H264,
            dts: ms_to_ticks(0),
            pts: ms_to_ticks(80),
            keyframe: true,
            payload: Bytes::from_static(&[0, 0, 0, 2, 0x65, 0x88]),
            wire: Default::default(),
        };
        let f2 = Frame {
            codec: Codec::Aac,
            dts: ms_to_ticks(23),
            pts: ms_to_ticks(23),
            keyframe: true,
            payload: Bytes::from_static(&[0x21, 0x10, 0x04]),
            wire: Default::default(),
        };
        // Past 2^24 ms, so the extended timestamp byte is exercised.
        let f3 = Frame {
            codec: Codec::H264,
            dts: ms_to_ticks(0x0123_4567),
            pts: ms_to_ticks(0x0123_4567),
            keyframe: false,
            payload: Bytes::from_static(&[0, 0, 0, 1, 0x41]),
            wire: Default::default(),
        };
        let mut out = vec![m.header(true, true)];
        out.extend(m.track(&v, 0).unwrap());
        out.extend(m.track(&a, 0).unwrap());
        out.push(shared_tag(&f1));
        out.push(shared_tag(&f2));
        out.push(shared_tag(&f3));
        let events = vec![
            Event::Track(v),
            Event::Track(a),
            Event::Frame(f1),
            Event::Frame(f2),
            Event::Frame(f3),
        ];
        (out, events)
    }

    fn concat(chunks: &[Bytes]) -> Vec<u8> {
        chunks.iter().flat_map(|c| c.iter().copied()).collect()
    }

    fn demux_all(d: &mut Demuxer) -> Result<Vec<Event>, FlvError> {
        let mut v = Vec::new();
        while let Some(e) = d.next_event()? {
            v.push(e);
        }
        Ok(v)
    }

    #[test]
    fn roundtrip() {
        let (chunks, expected) = sample_stream();
        let bytes = concat(&chunks);
        let mut d = Demuxer::new();
        d.push(&bytes);
        assert_eq!(demux_all(&mut d).unwrap(), expected);
        // All but the last trailing PreviousTagSize, which is skipped lazily.
        assert_eq!(d.offset() + 4, bytes.len() as u64);
    }

    #[test]
    fn byte_at_a_time_is_incomplete_until_whole() {
        let (chunks, expected) = sample_stream();
        let bytes = concat(&chunks);
        let mut d = Demuxer::new();
        let mut got = Vec::new();
        for b in bytes {
            d.push(&[b]);
            got.extend(demux_all(&mut d).unwrap());
        }
        assert_eq!(got, expected);
    }

    #[test]
    fn demuxed_payloads_are_views_of_the_read_buffer() {
        let (chunks, _) = sample_stream();
        let bytes = concat(&chunks);
        let mut d = Demuxer::new();
        d.push(&bytes);
        let evs = demux_all(&mut d).unwrap();
        let (Event::Frame(a), Event::Frame(b)) = (&evs[2], &evs[3]) else {
            panic!()
        };
        // Two payloads lie as far apart in memory as they did in the input:
        // both point into the one buffer that was read, nothing was copied.
        let at = |p: &[u8]| bytes.windows(p.len()).position(|w| w == p).unwrap();
        let in_input = at(&b.payload) - at(&a.payload);
        let in_memory = b.payload.as_ptr() as usize - a.payload.as_ptr() as usize;
        assert_eq!(in_memory, in_input);
    }

    #[test]
    fn shared_tag_is_built_once_and_matches_the_muxer() {
        let f = Frame {
            codec: Codec::H264,
            dts: ms_to_ticks(1234),
            pts: ms_to_ticks(1274),
            keyframe: true,
            payload: Bytes::from_static(&[0, 0, 0, 1, 0x65]),
            wire: Default::default(),
        };
        let a = shared_tag(&f);
        let b = shared_tag(&f.clone());
        assert_eq!(a.as_ptr(), b.as_ptr(), "every viewer shares one tag");
        let mut d = Demuxer::new();
        d.push(b"FLV\x01\x01\0\0\0\x09\0\0\0\0");
        d.push(&a);
        assert_eq!(d.next_event().unwrap(), Some(Event::Frame(f)));
    }

    #[test]
    fn garbage_names_the_offset() {
        let mut d = Demuxer::new();
        d.push(b"RIFF\0\0\0\0\0\0\0\0\0");
        let e = d.next_event().unwrap_err();
        assert_eq!(e.offset, 0);
        assert!(e.to_string().contains("signature"), "{e}");

        let (chunks, _) = sample_stream();
        let mut bytes = concat(&chunks[..4]); // header + one whole tag
        let bad_at = bytes.len();
        bytes.extend_from_slice(&[0x42, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        let mut d = Demuxer::new();
        d.push(&bytes);
        assert!(matches!(d.next_event(), Ok(Some(Event::Track(_)))));
        let e = d.next_event().unwrap_err();
        assert_eq!(e.offset, bad_at as u64, "{e}");
        assert!(e.reason.contains("unknown tag type"), "{e}");
    }

    #[test]
    fn oversized_tag_is_rejected_before_buffering() {
        let mut d = Demuxer::new();
        d.push(b"FLV\x01\x05\0\0\0\x09\0\0\0\0");
        d.push(&[9, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0]);
        let e = d.next_event().unwrap_err();
        assert!(e.reason.contains("exceeds"), "{e}");
    }

    #[test]
    fn unsupported_codecs_are_reported_not_fatal() {
        let mut d = Demuxer::new();
        d.push(b"FLV\x01\x05\0\0\0\x09\0\0\0\0");
        // Sound format 2 (MP3), one byte of data.
        d.push(&[8, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0x2f, 0xd5, 0, 0, 0, 13]);
        assert_eq!(
            d.next_event().unwrap(),
            Some(Event::Unsupported {
                kind: TrackKind::Audio,
                codec: "FLV sound format 2 (MP3)".into()
            })
        );
    }

    #[test]
    fn h265_is_enhanced_flv_both_ways() {
        let v = crate::media::rtp::tests::h265_info();
        let key = Frame::new(
            Codec::H265,
            0,
            ms_to_ticks(40),
            true,
            Bytes::from_static(&[0, 0, 0, 3, 38, 1, 7]),
        );
        let delta = Frame::new(
            Codec::H265,
            ms_to_ticks(40),
            ms_to_ticks(40),
            false,
            Bytes::from_static(&[0, 0, 0, 3, 2, 1, 8]),
        );
        let mut m = Muxer::new();
        let mut chunks = vec![m.header(true, false)];
        let seq = m.track(&v, 0).unwrap();
        // IsExHeader | keyframe | SequenceStart, FourCC, then the hvcC.
        assert_eq!(&seq[0][TAG_HEADER_LEN..], &[0x90, b'h', b'v', b'c', b'1']);
        chunks.extend(seq);
        let k = shared_tag(&key);
        // CodedFrames with a 40 ms SI24 composition time.
        assert_eq!(
            &k[TAG_HEADER_LEN..TAG_HEADER_LEN + 8],
            &[0x91, b'h', b'v', b'c', b'1', 0, 0, 40]
        );
        let d = shared_tag(&delta);
        // CodedFramesX: no composition time.
        assert_eq!(
            &d[TAG_HEADER_LEN..TAG_HEADER_LEN + 6],
            &[0xa3, b'h', b'v', b'c', b'1', 0]
        );
        chunks.extend([k, d]);
        let mut dm = Demuxer::new();
        dm.push(&concat(&chunks));
        assert_eq!(
            demux_all(&mut dm).unwrap(),
            vec![Event::Track(v), Event::Frame(key), Event::Frame(delta)]
        );
    }

    /// An enhanced tag body as OBS writes it, wrapped in a tag.
    fn ex_tag(body: &[u8]) -> Vec<u8> {
        let mut t = vec![
            TAG_VIDEO,
            0,
            (body.len() >> 8) as u8,
            body.len() as u8,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
        ];
        t.extend_from_slice(body);
        t.extend_from_slice(&((TAG_HEADER_LEN + body.len()) as u32).to_be_bytes());
        t
    }

    #[test]
    fn enhanced_avc1_other_fourccs_and_bad_records() {
        let mut d = Demuxer::new();
        d.push(b"FLV\x01\x01\0\0\0\x09\0\0\0\0");
        let mut seq = vec![0x90, b'a', b'v', b'c', b'1'];
        seq.extend_from_slice(&avc_config());
        d.push(&ex_tag(&seq));
        d.push(&ex_tag(&[
            0x93, b'a', b'v', b'c', b'1', 0, 0, 0, 2, 0x65, 1,
        ]));
        // A command frame, then metadata: skipped.
        d.push(&ex_tag(&[0xd0, b'h', b'v', b'c', b'1']));
        d.push(&ex_tag(&[0x94, b'h', b'v', b'c', b'1', 2, 0, 0]));
        d.push(&ex_tag(&[0x90, b'a', b'v', b'0', b'1', 1, 2]));
        let ev = demux_all(&mut d).unwrap();
        assert_eq!(
            ev[0],
            Event::Track(TrackInfo {
                codec: Codec::H264,
                config: avc_config()
            })
        );
        assert!(
            matches!(&ev[1], Event::Frame(f) if f.codec == Codec::H264 && f.keyframe && f.payload[..] == [0, 0, 0, 2, 0x65, 1])
        );
        assert!(
            matches!(&ev[2], Event::Unsupported { codec, .. } if codec.contains("av01")),
            "{ev:?}"
        );
        assert_eq!(ev.len(), 3);
        // A broken hvcC is an error (it would poison every decoder), and a
        // header cut before its FourCC too.
        for body in [
            &[0x90, b'h', b'v', b'c', b'1', 1, 2, 3][..],
            &[0x91, b'h', b'v'],
        ] {
            let mut d = Demuxer::new();
            d.push(b"FLV\x01\x01\0\0\0\x09\0\0\0\0");
            d.push(&ex_tag(body));
            assert!(d.next_event().is_err(), "{body:?}");
        }
    }

    #[test]
    fn g711_announces_its_track_once() {
        let mut m = Muxer::new();
        let frame = |ms| Frame {
            codec: Codec::Pcma,
            dts: ms_to_ticks(ms),
            pts: ms_to_ticks(ms),
            keyframe: true,
            payload: Bytes::from_static(&[0xd5; 160]),
            wire: Default::default(),
        };
        let info = TrackInfo {
            codec: Codec::Pcma,
            config: Bytes::new(),
        };
        assert!(m.track(&info, 0).is_none());
        let mut chunks = vec![m.header(false, true)];
        chunks.push(shared_tag(&frame(0)));
        chunks.push(shared_tag(&frame(20)));
        let mut d = Demuxer::new();
        d.push(&concat(&chunks));
        assert_eq!(
            demux_all(&mut d).unwrap(),
            vec![
                Event::Track(info),
                Event::Frame(frame(0)),
                Event::Frame(frame(20))
            ]
        );
    }

    #[test]
    fn real_ffmpeg_capture() {
        // testdata/README.md says how this was made: 2 s of H.264 (with
        // B-frames) and AAC from Debian's ffmpeg.
        let data =
            std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/demo.flv")).unwrap();
        let mut d = Demuxer::new();
        d.push(&data);
        let evs = demux_all(&mut d).unwrap();
        let tracks: Vec<Codec> = evs
            .iter()
            .filter_map(|e| {
                if let Event::Track(t) = e {
                    Some(t.codec)
                } else {
                    None
                }
            })
            .collect();
        assert_eq!(tracks, vec![Codec::H264, Codec::Aac]);
        let frames: Vec<&Frame> = evs
            .iter()
            .filter_map(|e| {
                if let Event::Frame(f) = e {
                    Some(f)
                } else {
                    None
                }
            })
            .collect();
        let video: Vec<&&Frame> = frames.iter().filter(|f| f.codec == Codec::H264).collect();
        assert_eq!(video.len(), 50);
        assert_eq!(video.iter().filter(|f| f.keyframe).count(), 2);
        assert!(
            video.iter().any(|f| f.pts > f.dts),
            "B-frames carry a composition time"
        );
        assert_eq!(frames.iter().filter(|f| f.codec == Codec::Aac).count(), 88);
        // Our muxer writes back what it read.
        let mut m = Muxer::new();
        let mut out = vec![m.header(true, true)];
        for e in &evs {
            match e {
                Event::Track(t) => out.extend(m.track(t, 0).unwrap()),
                Event::Frame(f) => out.push(shared_tag(f)),
                Event::Unsupported { .. } => unreachable!(),
            }
        }
        let mut again = Demuxer::new();
        again.push(&concat(&out));
        assert_eq!(demux_all(&mut again).unwrap(), evs);
    }

    #[test]
    fn replay_fuzz_corpus() {
        // Inputs the fuzz target (fuzz/fuzz_targets/flv_demux.rs) found or was
        // seeded with: each must end in Ok or Err, never a panic.
        crate::replay_fuzz_corpus("flv_demux", fuzz_one);
    }

    /// The body of the fuzz target, shared so the corpus replays here.
    pub fn fuzz_one(data: &[u8]) {
        let mut d = Demuxer::new();
        // Feed in two uneven pieces so both "incomplete" paths run.
        let cut = data.len() / 3;
        d.push(&data[..cut]);
        let _ = demux_all(&mut d);
        d.push(&data[cut..]);
        let _ = demux_all(&mut d);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn frame_strategy() -> impl Strategy<Value = Frame> {
            (
                any::<bool>(),
                0i64..0x7fff_ffff,
                0i64..1000,
                any::<bool>(),
                proptest::collection::vec(any::<u8>(), 1..300),
            )
                .prop_map(|(video, dts_ms, cts_ms, key, payload)| {
                    let codec = if video { Codec::H264 } else { Codec::Aac };
                    let dts = ms_to_ticks(dts_ms);
                    Frame {
                        codec,
                        dts,
                        pts: if video {
                            dts + ms_to_ticks(cts_ms)
                        } else {
                            dts
                        },
                        keyframe: key || !video,
                        payload: Bytes::from(payload),
                        wire: Default::default(),
                    }
                })
        }

        proptest! {
            #[test]
            fn mux_then_demux_is_identity(frames in proptest::collection::vec(frame_strategy(), 0..20), split in any::<proptest::sample::Index>()) {
                let mut m = Muxer::new();
                let mut chunks = vec![m.header(true, true)];
                for f in &frames {
                    chunks.push(shared_tag(f));
                }
                let bytes = concat(&chunks);
                let cut = split.index(bytes.len() + 1);
                let mut d = Demuxer::new();
                d.push(&bytes[..cut]);
                let mut got = demux_all(&mut d).unwrap();
                d.push(&bytes[cut..]);
                got.extend(demux_all(&mut d).unwrap());
                let expected: Vec<Event> = frames.into_iter().map(Event::Frame).collect();
                prop_assert_eq!(got, expected);
            }

            #[test]
            fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
                fuzz_one(&data);
                let mut with_header = b"FLV\x01\x05\0\0\0\x09\0\0\0\0".to_vec();
                with_header.extend_from_slice(&data);
                fuzz_one(&with_header);
            }
        }
    }
}
