//! RTP in (RFC 3550): depacketizing what an RTSP publisher sends into
//! Frames. H.264 per RFC 6184 (single NAL, STAP-A, FU-A), H.265 per RFC
//! 7798 (single NAL, AP, FU), AAC per RFC 3640 (AAC-hbr), G.711 per RFC
//! 3551, MJPEG per RFC 2435 (in [`super::jpeg::rfc2435`]).
//!
//! Every parser checks lengths before it reads; a bad packet is an error
//! for the caller to log and count, never a panic. A lost H.264 packet
//! (a gap in sequence numbers) throws away the access unit it was part of
//! and everything up to the next keyframe: a decoder fed a picture with a
//! hole shows garbage until then anyway.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::flv::Event;
use super::h264::{self, NAL_AUD, NAL_IDR, NAL_PPS, NAL_SPS};
use super::h265::{self, HevcConfig};
use super::{Codec, Frame, TrackInfo, TIMESCALE};

/// RFC 3550 §5.1, the fields we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub marker: bool,
    pub payload_type: u8,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub payload: Bytes,
}

impl Packet {
    pub fn parse(mut b: Bytes) -> Result<Packet, String> {
        if b.len() < 12 {
            return Err(format!(
                "RTP packet of {} bytes is shorter than its header",
                b.len()
            ));
        }
        if b[0] >> 6 != 2 {
            return Err(format!("RTP version {} (expected 2)", b[0] >> 6));
        }
        let padding = b[0] & 0x20 != 0;
        let extension = b[0] & 0x10 != 0;
        let csrc = (b[0] & 0x0f) as usize;
        let marker = b[1] & 0x80 != 0;
        let payload_type = b[1] & 0x7f;
        let seq = u16::from_be_bytes([b[2], b[3]]);
        let timestamp = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
        let ssrc = u32::from_be_bytes([b[8], b[9], b[10], b[11]]);
        let mut start = 12 + 4 * csrc;
        if extension {
            // §5.3.1: 16-bit profile field, 16-bit length in words.
            let ext = b
                .get(start..start + 4)
                .ok_or("RTP header extension is truncated")?;
            start += 4 + 4 * u16::from_be_bytes([ext[2], ext[3]]) as usize;
        }
        let mut end = b.len();
        if padding {
            // §5.1: the last octet counts the padding, itself included.
            let pad = *b.last().unwrap_or(&0) as usize;
            end = end
                .checked_sub(pad)
                .ok_or("RTP padding longer than the packet")?;
        }
        if start > end {
            return Err("RTP header runs past the packet".into());
        }
        b.truncate(end);
        b.advance(start);
        Ok(Packet {
            marker,
            payload_type,
            seq,
            timestamp,
            ssrc,
            payload: b,
        })
    }
}

/// Extends 32-bit RTP timestamps to a 64-bit count that does not wrap.
#[derive(Debug, Default)]
pub struct Unwrap {
    last: Option<u32>,
    value: i64,
}

impl Unwrap {
    fn next(&mut self, ts: u32) -> i64 {
        if let Some(last) = self.last {
            self.value += ts.wrapping_sub(last) as i32 as i64;
        }
        self.last = Some(ts);
        self.value
    }
}

fn to_ticks(ts: i64, clock: u32) -> i64 {
    (ts as i128 * TIMESCALE as i128 / clock.max(1) as i128) as i64
}

/// The largest access unit a video depacketizer assembles: a 4K IDR
/// picture at a high bit rate is 1-2 MB, so this is generous, and it keeps
/// a publisher that never sets the marker or an FU end bit from growing
/// our memory without bound.
pub const MAX_AU: usize = 8 << 20;

/// One publisher track.
pub enum Depacketizer {
    H264(H264),
    H265(H265),
    Aac(Aac),
    /// RFC 2435: every frame a whole JPEG, every one a keyframe.
    Jpeg {
        d: super::jpeg::rfc2435::Depacketizer,
        announced: bool,
        clock: Unwrap,
    },
    /// One RTP payload is one frame: G.711 (RFC 3551 §4.5.14) and Opus
    /// (RFC 7587 §4.2). Neither has parameters to announce beyond the codec.
    Whole {
        codec: Codec,
        rate: u32,
        announced: bool,
        clock: Unwrap,
    },
}

impl Depacketizer {
    /// From an SDP `rtpmap` encoding name and clock rate, and the `fmtp`
    /// parameters.
    pub fn new(
        encoding: &str,
        clock_rate: u32,
        fmtp: &[(String, String)],
    ) -> Result<Depacketizer, String> {
        let get = |k: &str| {
            fmtp.iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.as_str())
        };
        match encoding.to_ascii_uppercase().as_str() {
            "H264" => {
                let mut d = H264::default();
                if let Some(sets) = get("sprop-parameter-sets") {
                    use base64::Engine;
                    for s in sets.split(',') {
                        if let Ok(nal) = base64::engine::general_purpose::STANDARD.decode(s.trim())
                        {
                            d.parameter_set(Bytes::from(nal));
                        }
                    }
                }
                Ok(Depacketizer::H264(d))
            }
            "H265" => {
                // RFC 7798 §7.1: with sprop-max-don-diff > 0 every packet
                // carries a DONL field and NAL units may arrive out of
                // decoding order; cameras and ffmpeg never do that.
                if let Some(d) = get("sprop-max-don-diff") {
                    if d.trim() != "0" {
                        return Err(format!(
                            "H.265 with sprop-max-don-diff={d} (decoding order numbers, RFC 7798 §6.1) is not supported"
                        ));
                    }
                }
                let mut d = H265::default();
                for key in ["sprop-vps", "sprop-sps", "sprop-pps"] {
                    use base64::Engine;
                    for s in get(key).unwrap_or("").split(',') {
                        if let Ok(nal) = base64::engine::general_purpose::STANDARD.decode(s.trim())
                        {
                            d.parameter_set(Bytes::from(nal));
                        }
                    }
                }
                Ok(Depacketizer::H265(d))
            }
            "MPEG4-GENERIC" => {
                if get("mode").is_some_and(|m| !m.eq_ignore_ascii_case("AAC-hbr")) {
                    return Err(format!(
                        "MPEG4-GENERIC mode {} (only AAC-hbr is supported)",
                        get("mode").unwrap_or("")
                    ));
                }
                let hex = get("config").ok_or("MPEG4-GENERIC without config=")?;
                let config = (0..hex.len() / 2)
                    .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2).unwrap_or("zz"), 16))
                    .collect::<Result<Vec<u8>, _>>()
                    .map_err(|_| format!("config={hex} is not hex"))?;
                if config.len() < 2 {
                    return Err(format!(
                        "config={hex} is too short for an AudioSpecificConfig"
                    ));
                }
                let size = get("sizelength").unwrap_or("13");
                let index = get("indexlength").unwrap_or("3");
                if size != "13" || index != "3" {
                    return Err(format!(
                        "AAC with sizelength={size} indexlength={index} (only 13/3 is supported)"
                    ));
                }
                Ok(Depacketizer::Aac(Aac {
                    info: TrackInfo {
                        codec: Codec::Aac,
                        config: Bytes::from(config),
                    },
                    clock_rate,
                    announced: false,
                    clock: Unwrap::default(),
                    partial: None,
                }))
            }
            // RFC 2435 §3: always 90 kHz, nothing in fmtp we need.
            "JPEG" => Ok(Depacketizer::Jpeg {
                d: Default::default(),
                announced: false,
                clock: Unwrap::default(),
            }),
            "PCMA" | "PCMU" | "OPUS" => Ok(Depacketizer::Whole {
                codec: match encoding.to_ascii_uppercase().as_str() {
                    "PCMA" => Codec::Pcma,
                    "PCMU" => Codec::Pcmu,
                    _ => Codec::Opus,
                },
                // RFC 7587 §4.1: Opus is always 48000 on the wire.
                rate: if encoding.eq_ignore_ascii_case("opus") {
                    48_000
                } else {
                    8_000
                },
                announced: false,
                clock: Unwrap::default(),
            }),
            other => Err(format!("codec {other} is not supported")),
        }
    }

    /// Takes one packet; appends what it completes to `out`.
    pub fn push(&mut self, p: Packet, out: &mut Vec<Event>) -> Result<(), String> {
        match self {
            Depacketizer::H264(d) => d.push(p, out),
            Depacketizer::H265(d) => d.push(p, out),
            Depacketizer::Aac(d) => d.push(p, out),
            Depacketizer::Jpeg {
                d,
                announced,
                clock,
            } => {
                let Some((ts, img)) = d.push(p.seq, p.timestamp, p.marker, &p.payload)? else {
                    return Ok(());
                };
                if !*announced {
                    // A JPEG track has no parameters: each image says all.
                    *announced = true;
                    out.push(Event::Track(TrackInfo {
                        codec: Codec::Jpeg,
                        config: Bytes::new(),
                    }));
                }
                let ts = to_ticks(clock.next(ts), TIMESCALE as u32);
                out.push(Event::Frame(Frame::new(Codec::Jpeg, ts, ts, true, img)));
                Ok(())
            }
            Depacketizer::Whole {
                codec,
                rate,
                announced,
                clock,
            } => {
                if !*announced {
                    *announced = true;
                    out.push(Event::Track(TrackInfo {
                        codec: *codec,
                        config: Bytes::new(),
                    }));
                }
                let ts = to_ticks(clock.next(p.timestamp), *rate);
                if !p.payload.is_empty() {
                    out.push(Event::Frame(Frame::new(*codec, ts, ts, true, p.payload)));
                }
                Ok(())
            }
        }
    }
}

/// RFC 6184 depacketizer.
#[derive(Default)]
pub struct H264 {
    sps: Option<Bytes>,
    pps: Option<Bytes>,
    /// The configuration record last announced.
    announced: Option<Bytes>,
    nals: Vec<Bytes>,
    /// Bytes in `nals` and `fu`, against [`MAX_AU`].
    au_bytes: usize,
    au_ts: Option<u32>,
    fu: Option<BytesMut>,
    last_seq: Option<u16>,
    /// After a loss: nothing until an IDR.
    wait_key: bool,
    clock: Unwrap,
    last_dts: Option<i64>,
}

impl H264 {
    fn parameter_set(&mut self, nal: Bytes) {
        match h264::nal_type(&nal) {
            NAL_SPS => self.sps = Some(nal),
            NAL_PPS => self.pps = Some(nal),
            _ => {}
        }
    }

    fn nal(&mut self, nal: Bytes) {
        match h264::nal_type(&nal) {
            NAL_AUD => {}
            NAL_SPS | NAL_PPS => {
                self.parameter_set(nal.clone());
                self.nals.push(nal);
            }
            _ => self.nals.push(nal),
        }
    }

    fn push(&mut self, p: Packet, out: &mut Vec<Event>) -> Result<(), String> {
        if let Some(last) = self.last_seq {
            if p.seq != last.wrapping_add(1) {
                // A gap: the access unit in progress has a hole.
                self.nals.clear();
                self.fu = None;
                self.au_bytes = 0;
                self.wait_key = true;
            }
        }
        self.last_seq = Some(p.seq);
        if self.au_ts.is_some_and(|t| t != p.timestamp) {
            // A new timestamp ends the previous access unit even if its
            // marker packet was lost.
            self.finish(out);
        }
        self.au_ts = Some(p.timestamp);
        let b = p.payload;
        let Some(&head) = b.first() else {
            return Err("empty H.264 RTP payload".into());
        };
        self.au_bytes += b.len();
        if self.au_bytes > MAX_AU {
            self.nals.clear();
            self.fu = None;
            self.au_bytes = 0;
            self.wait_key = true;
            return Err(format!("H.264 access unit over {MAX_AU} bytes; dropped"));
        }
        match head & 0x1f {
            1..=23 => self.nal(b),
            24 => {
                // §5.7.1 STAP-A: 16-bit size, NAL unit, repeated.
                let mut rest = b.slice(1..);
                while !rest.is_empty() {
                    if rest.len() < 2 {
                        return Err("STAP-A size field is truncated".into());
                    }
                    let n = u16::from_be_bytes([rest[0], rest[1]]) as usize;
                    if rest.len() < 2 + n {
                        return Err(format!("STAP-A unit of {n} bytes runs past the packet"));
                    }
                    let nal = rest.slice(2..2 + n);
                    rest.advance(2 + n);
                    if !nal.is_empty() {
                        self.nal(nal);
                    }
                }
            }
            28 => {
                // §5.8 FU-A: indicator, header (S, E, type), fragment.
                if b.len() < 2 {
                    return Err("FU-A without its FU header".into());
                }
                let fu = b[1];
                if fu & 0x80 != 0 {
                    let mut nal = BytesMut::with_capacity(b.len() * 4);
                    nal.put_u8((head & 0xe0) | (fu & 0x1f));
                    nal.put_slice(&b[2..]);
                    self.fu = Some(nal);
                } else if let Some(nal) = &mut self.fu {
                    nal.put_slice(&b[2..]);
                } else {
                    // A middle or end without its start: lost.
                    self.wait_key = true;
                }
                if fu & 0x40 != 0 {
                    if let Some(nal) = self.fu.take() {
                        self.nal(nal.freeze());
                    }
                }
            }
            other => return Err(format!("H.264 RTP packet type {other} is not supported")),
        }
        if p.marker {
            self.finish(out);
        }
        Ok(())
    }

    /// Ends the current access unit and emits it as an AVCC frame.
    fn finish(&mut self, out: &mut Vec<Event>) {
        let Some(rtp_ts) = self.au_ts.take() else {
            return;
        };
        self.fu = None;
        self.au_bytes = 0;
        let nals = std::mem::take(&mut self.nals);
        if nals.is_empty() {
            return;
        }
        if let (Some(sps), Some(pps)) = (&self.sps, &self.pps) {
            if sps.len() >= 4 {
                // ISO 14496-15 §5.2.4.1, with 4-byte NAL lengths.
                let mut rec = BytesMut::with_capacity(11 + sps.len() + pps.len());
                rec.put_slice(&[1, sps[1], sps[2], sps[3], 0xff, 0xe1]);
                rec.put_u16(sps.len() as u16);
                rec.put_slice(sps);
                rec.put_u8(1);
                rec.put_u16(pps.len() as u16);
                rec.put_slice(pps);
                let rec = rec.freeze();
                if self.announced.as_ref() != Some(&rec) {
                    self.announced = Some(rec.clone());
                    out.push(Event::Track(TrackInfo {
                        codec: Codec::H264,
                        config: rec,
                    }));
                }
            }
        }
        let key = nals.iter().any(|n| h264::nal_type(n) == NAL_IDR);
        if self.wait_key && !key {
            return;
        }
        if self.announced.is_none() {
            return; // no SPS/PPS yet: nothing a viewer could decode
        }
        self.wait_key = false;
        let au = h264::to_avcc(&nals);
        let pts = to_ticks(self.clock.next(rtp_ts), 90_000);
        // RTP carries no decode time. Keep dts increasing; with B-frames
        // pts then runs ahead of or behind dts, as composition time allows.
        let dts = match self.last_dts {
            Some(last) if pts <= last => last + 1,
            _ => pts,
        };
        self.last_dts = Some(dts);
        out.push(Event::Frame(Frame::new(Codec::H264, dts, pts, key, au)));
    }
}

/// RFC 7798 depacketizer, without decoding order numbers (see
/// [`Depacketizer::new`]): the same shape as [`H264`].
#[derive(Default)]
pub struct H265 {
    vps: Option<Bytes>,
    sps: Option<Bytes>,
    pps: Option<Bytes>,
    /// The `hvcC` record last announced: a new one is a track change.
    announced: Option<Bytes>,
    nals: Vec<Bytes>,
    /// Bytes in `nals` and `fu`, against [`MAX_AU`].
    au_bytes: usize,
    au_ts: Option<u32>,
    fu: Option<BytesMut>,
    last_seq: Option<u16>,
    /// After a loss: nothing until an IRAP picture.
    wait_key: bool,
    clock: Unwrap,
    last_dts: Option<i64>,
}

impl H265 {
    fn parameter_set(&mut self, nal: Bytes) {
        if nal.len() < 3 {
            return;
        }
        match h265::nal_type(&nal) {
            h265::NAL_VPS => self.vps = Some(nal),
            h265::NAL_SPS => self.sps = Some(nal),
            h265::NAL_PPS => self.pps = Some(nal),
            _ => {}
        }
    }

    fn nal(&mut self, nal: Bytes) {
        match h265::nal_type(&nal) {
            h265::NAL_AUD => {}
            h265::NAL_VPS | h265::NAL_SPS | h265::NAL_PPS => {
                self.parameter_set(nal.clone());
                self.nals.push(nal);
            }
            _ => self.nals.push(nal),
        }
    }

    /// Forgets the access unit in progress; nothing until the next IRAP.
    fn lose(&mut self) {
        self.nals.clear();
        self.fu = None;
        self.au_bytes = 0;
        self.wait_key = true;
    }

    fn push(&mut self, p: Packet, out: &mut Vec<Event>) -> Result<(), String> {
        if let Some(last) = self.last_seq {
            if p.seq != last.wrapping_add(1) {
                self.lose();
            }
        }
        self.last_seq = Some(p.seq);
        if self.au_ts.is_some_and(|t| t != p.timestamp) {
            self.finish(out)?;
        }
        self.au_ts = Some(p.timestamp);
        let b = p.payload;
        if b.len() < 2 {
            return Err(format!(
                "H.265 RTP payload of {} bytes (less than its header)",
                b.len()
            ));
        }
        self.au_bytes += b.len();
        if self.au_bytes > MAX_AU {
            self.lose();
            return Err(format!("H.265 access unit over {MAX_AU} bytes; dropped"));
        }
        // RFC 7798 §4.4: the payload header is a NAL unit header.
        match h265::nal_type(&b) {
            48 => {
                // §4.4.2 AP: after the payload header, 16-bit size and NAL
                // unit, repeated (no DONL/DOND: sprop-max-don-diff is 0).
                let mut rest = b.slice(2..);
                while !rest.is_empty() {
                    if rest.len() < 2 {
                        return Err("H.265 AP size field is truncated".into());
                    }
                    let n = u16::from_be_bytes([rest[0], rest[1]]) as usize;
                    if rest.len() < 2 + n {
                        return Err(format!("H.265 AP unit of {n} bytes runs past the packet"));
                    }
                    let nal = rest.slice(2..2 + n);
                    rest.advance(2 + n);
                    if nal.len() >= 2 {
                        self.nal(nal);
                    }
                }
            }
            49 => {
                // §4.4.3 FU: payload header, FU header (S, E, FuType),
                // fragment. The NAL header is the payload header with the
                // type put back.
                if b.len() < 3 {
                    return Err("H.265 FU without its FU header".into());
                }
                let fu = b[2];
                if fu & 0x80 != 0 {
                    let mut nal = BytesMut::with_capacity(b.len() * 4);
                    nal.put_u8((b[0] & 0x81) | ((fu & 0x3f) << 1));
                    nal.put_u8(b[1]);
                    nal.put_slice(&b[3..]);
                    self.fu = Some(nal);
                } else if let Some(nal) = &mut self.fu {
                    nal.put_slice(&b[3..]);
                } else {
                    // A middle or end without its start: lost.
                    self.wait_key = true;
                }
                if fu & 0x40 != 0 {
                    if let Some(nal) = self.fu.take() {
                        self.nal(nal.freeze());
                    }
                }
            }
            50 => return Err("H.265 PACI packets (RFC 7798 §4.4.4) are not supported".into()),
            // 0..=47: a single NAL unit packet (§4.4.1); 41..=47 are
            // reserved, and a decoder ignores them as it should.
            0..=47 => self.nal(b),
            other => return Err(format!("H.265 RTP packet type {other} is not supported")),
        }
        if p.marker {
            self.finish(out)?;
        }
        Ok(())
    }

    /// Ends the current access unit and emits it as length-prefixed NAL
    /// units, announcing a new `hvcC` first when the parameter sets changed.
    fn finish(&mut self, out: &mut Vec<Event>) -> Result<(), String> {
        let Some(rtp_ts) = self.au_ts.take() else {
            return Ok(());
        };
        self.fu = None;
        self.au_bytes = 0;
        let nals = std::mem::take(&mut self.nals);
        if nals.is_empty() {
            return Ok(());
        }
        let mut bad = None;
        if let (Some(vps), Some(sps), Some(pps)) = (&self.vps, &self.sps, &self.pps) {
            match HevcConfig::record(
                std::slice::from_ref(vps),
                std::slice::from_ref(sps),
                std::slice::from_ref(pps),
            ) {
                Ok(rec) if self.announced.as_ref() != Some(&rec) => {
                    self.announced = Some(rec.clone());
                    out.push(Event::Track(TrackInfo {
                        codec: Codec::H265,
                        config: rec,
                    }));
                }
                Ok(_) => {}
                Err(e) => bad = Some(format!("H.265 parameter sets: {e}")),
            }
        }
        let key = nals.iter().any(|n| h265::is_irap(h265::nal_type(n)));
        if self.wait_key && !key {
            return bad.map_or(Ok(()), Err);
        }
        if self.announced.is_none() {
            // No usable VPS/SPS/PPS yet: nothing a viewer could decode.
            return bad.map_or(Ok(()), Err);
        }
        self.wait_key = false;
        let au = h264::to_avcc(&nals);
        let pts = to_ticks(self.clock.next(rtp_ts), 90_000);
        let dts = match self.last_dts {
            Some(last) if pts <= last => last + 1,
            _ => pts,
        };
        self.last_dts = Some(dts);
        out.push(Event::Frame(Frame::new(Codec::H265, dts, pts, key, au)));
        bad.map_or(Ok(()), Err)
    }
}

/// RFC 3640 AAC-hbr depacketizer.
pub struct Aac {
    info: TrackInfo,
    clock_rate: u32,
    announced: bool,
    clock: Unwrap,
    /// A fragmented AU (§3.2.3): its full size and the bytes so far.
    partial: Option<(usize, BytesMut)>,
}

impl Aac {
    fn push(&mut self, p: Packet, out: &mut Vec<Event>) -> Result<(), String> {
        if !self.announced {
            self.announced = true;
            out.push(Event::Track(self.info.clone()));
        }
        let b = p.payload;
        if b.len() < 2 {
            return Err("AAC RTP payload without AU-headers-length".into());
        }
        let bits = u16::from_be_bytes([b[0], b[1]]) as usize;
        let n = bits / 16; // 13-bit size + 3-bit index per AU-header
        let headers_end = 2 + bits.div_ceil(8);
        if n == 0 || b.len() < headers_end {
            return Err(format!("AU-headers of {bits} bits run past the packet"));
        }
        let base = self.clock.next(p.timestamp);
        let mut at = headers_end;
        for i in 0..n {
            let h = u16::from_be_bytes([b[2 + 2 * i], b[3 + 2 * i]]);
            let size = (h >> 3) as usize;
            let ts = to_ticks(base + 1024 * i as i64, self.clock_rate);
            let available = b.len() - at;
            if let Some((want, mut buf)) = self.partial.take() {
                // A continuation of a fragmented AU.
                buf.put_slice(&b[at..]);
                if buf.len() >= want {
                    out.push(Event::Frame(Frame::new(
                        Codec::Aac,
                        ts,
                        ts,
                        true,
                        buf.freeze().slice(..want),
                    )));
                } else {
                    self.partial = Some((want, buf));
                }
                return Ok(());
            }
            if size > available {
                if n == 1 {
                    let mut buf = BytesMut::with_capacity(size);
                    buf.put_slice(&b[at..]);
                    self.partial = Some((size, buf));
                    return Ok(());
                }
                return Err(format!("AU {i} of {size} bytes runs past the packet"));
            }
            out.push(Event::Frame(Frame::new(
                Codec::Aac,
                ts,
                ts,
                true,
                b.slice(at..at + size),
            )));
            at += size;
        }
        Ok(())
    }
}

/// Fuzz entry point (fuzz/fuzz_targets/rtp_depack.rs): byte 0 picks a
/// depacketizer, then records of a 2-byte length and an RTP packet.
/// 0xF8..=0xFF pick MJPEG: it came after the corpus's seeds, whose byte 0
/// (taken modulo 4) keeps picking what it did.
pub fn fuzz(data: &[u8]) {
    let Some((&which, mut rest)) = data.split_first() else {
        return;
    };
    let fmtp = [("config".to_string(), "1210".to_string())];
    let mut d = match which % 4 {
        _ if which >= 0xF8 => Depacketizer::new("JPEG", 90000, &[]),
        0 => Depacketizer::new("H264", 90000, &[]),
        1 => Depacketizer::new("MPEG4-GENERIC", 44100, &fmtp),
        2 => Depacketizer::new("PCMA", 8000, &[]),
        _ => Depacketizer::new("H265", 90000, &[]),
    }
    .expect("known codecs");
    let mut out = Vec::new();
    while rest.len() >= 2 {
        let n = (u16::from_be_bytes([rest[0], rest[1]]) as usize).min(rest.len() - 2);
        if let Ok(p) = Packet::parse(Bytes::copy_from_slice(&rest[2..2 + n])) {
            let _ = d.push(p, &mut out);
        }
        rest = &rest[2 + n..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::rtp::{packetize, Sender, TrackParams};

    fn rtp(seq: u16, ts: u32, marker: bool, payload: &[u8]) -> Packet {
        Packet {
            marker,
            payload_type: 96,
            seq,
            timestamp: ts,
            ssrc: 1,
            payload: Bytes::copy_from_slice(payload),
        }
    }

    fn avcc(nals: &[&[u8]]) -> Bytes {
        h264::to_avcc(nals)
    }

    fn h264_info() -> TrackInfo {
        TrackInfo {
            codec: Codec::H264,
            config: Bytes::from_static(&[
                1, 66, 0xe0, 30, 0xff, 0xe1, 0, 4, 0x67, 66, 0xe0, 30, 1, 0, 2, 0x68, 0xce,
            ]),
        }
    }

    /// Our packetizer's output, through the wire format, back through the
    /// depacketizer.
    fn roundtrip(
        frames: &[Frame],
        info: &TrackInfo,
        mut drop_seq: impl FnMut(u16) -> bool,
    ) -> Vec<Event> {
        let params = TrackParams::new(info).unwrap();
        let mut d = match info.codec {
            Codec::H264 => Depacketizer::new("H264", 90000, &[]).unwrap(),
            Codec::H265 => Depacketizer::new("H265", 90000, &h265_fmtp()).unwrap(),
            Codec::Aac => Depacketizer::new(
                "MPEG4-GENERIC",
                44100,
                &[
                    ("config".into(), "1210".into()),
                    ("mode".into(), "AAC-hbr".into()),
                ],
            )
            .unwrap(),
            Codec::Jpeg => Depacketizer::new("JPEG", 90000, &[]).unwrap(),
            _ => unreachable!(),
        };
        let mut s = Sender::new(params.payload_type());
        let mut out = Vec::new();
        for f in frames {
            for c in packetize(f, &params).unwrap() {
                let h = s.header(&c, params.rtp_time(f.pts), f.pts);
                let mut wire = BytesMut::new();
                wire.put_slice(&h);
                wire.put_slice(&c.prefix);
                wire.put_slice(&c.body);
                let p = Packet::parse(wire.freeze()).unwrap();
                if drop_seq(p.seq.wrapping_sub(s.seq.wrapping_sub(1))) {
                    continue;
                }
                d.push(p, &mut out).unwrap();
            }
        }
        out
    }

    fn frames_of(events: &[Event]) -> Vec<&Frame> {
        events
            .iter()
            .filter_map(|e| {
                if let Event::Frame(f) = e {
                    Some(f)
                } else {
                    None
                }
            })
            .collect()
    }

    #[test]
    fn h264_roundtrip_single_and_fu_a() {
        let mut big = vec![0x65u8];
        big.extend((0..4000u32).map(|i| (i * 7) as u8));
        let f1 = Frame::new(Codec::H264, 0, 0, true, avcc(&[&big]));
        let f2 = Frame::new(Codec::H264, 3600, 3600, false, avcc(&[&[0x41, 9, 9]]));
        let out = roundtrip(&[f1, f2], &h264_info(), |_| false);
        assert!(matches!(&out[0], Event::Track(t) if t.codec == Codec::H264));
        let frames = frames_of(&out);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[1].payload, avcc(&[&[0x41, 9, 9]]));
        // The IDR came back with the SPS and PPS our packetizer put in front.
        let nals: Vec<Bytes> = h264::nal_units(&frames[0].payload, 4)
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            nals.iter().map(|n| h264::nal_type(n)).collect::<Vec<_>>(),
            vec![7, 8, 5]
        );
        assert_eq!(nals[2], Bytes::from(big));
        assert!(frames[0].keyframe);
    }

    #[test]
    fn h264_loss_drops_until_the_next_keyframe() {
        let key = |ms: i64| Frame::new(Codec::H264, ms * 90, ms * 90, true, avcc(&[&[0x65, 1, 2]]));
        let delta = |ms: i64| Frame::new(Codec::H264, ms * 90, ms * 90, false, avcc(&[&[0x41, 3]]));
        let frames = [
            key(0),
            delta(40),
            delta(80),
            delta(120),
            key(160),
            delta(200),
        ];
        // Lose the 5th packet on the wire (delta 80 ms).
        let mut n = 0u16;
        let out = roundtrip(&frames, &h264_info(), |_| {
            n += 1;
            n == 5
        });
        let kept: Vec<(bool, i64)> = frames_of(&out)
            .iter()
            .map(|f| (f.keyframe, f.pts / 90))
            .collect();
        assert_eq!(
            kept,
            vec![(true, 0), (false, 40), (true, 160), (false, 200)]
        );
    }

    #[test]
    fn stap_a() {
        let mut d = Depacketizer::new("H264", 90000, &[]).unwrap();
        let mut out = Vec::new();
        let mut stap = vec![24u8];
        for nal in [&[0x67u8, 66, 0xe0, 30][..], &[0x68, 0xce], &[0x65, 1]] {
            stap.extend_from_slice(&(nal.len() as u16).to_be_bytes());
            stap.extend_from_slice(nal);
        }
        d.push(rtp(1, 1000, true, &stap), &mut out).unwrap();
        assert!(matches!(&out[0], Event::Track(_)));
        assert!(frames_of(&out)[0].keyframe);
        // Truncated STAP-A: an error, no panic.
        assert!(d
            .push(rtp(2, 2000, true, &[24, 0, 9, 1]), &mut out)
            .is_err());
    }

    fn h265_info() -> TrackInfo {
        crate::media::rtp::tests::h265_info()
    }

    /// The SDP's sprop-vps/sps/pps for [`h265_info`].
    fn h265_fmtp() -> Vec<(String, String)> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let [v, s, p] = crate::media::h265::tests::ffmpeg_main();
        vec![
            ("sprop-vps".into(), b64.encode(v)),
            ("sprop-sps".into(), b64.encode(s)),
            ("sprop-pps".into(), b64.encode(p)),
        ]
    }

    fn hevc(nals: &[&[u8]]) -> Bytes {
        h264::to_avcc(nals)
    }

    #[test]
    fn h265_roundtrip_single_and_fu() {
        // An IDR_N_LP (type 20) too big for one packet, then a TRAIL_R.
        let mut big = vec![20 << 1, 1];
        big.extend((0..4000u32).map(|i| (i * 7) as u8));
        let f1 = Frame::new(Codec::H265, 0, 0, true, hevc(&[&big]));
        let f2 = Frame::new(Codec::H265, 3600, 3600, false, hevc(&[&[1 << 1, 1, 9]]));
        let out = roundtrip(&[f1, f2], &h265_info(), |_| false);
        assert!(
            matches!(&out[0], Event::Track(t) if *t == h265_info()),
            "{out:?}"
        );
        let frames = frames_of(&out);
        assert_eq!(frames.len(), 2);
        assert!(frames[0].keyframe && !frames[1].keyframe);
        assert_eq!(frames[1].payload, hevc(&[&[1 << 1, 1, 9]]));
        let nals: Vec<Bytes> = h264::nal_units(&frames[0].payload, 4)
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            nals.iter().map(|n| h265::nal_type(n)).collect::<Vec<_>>(),
            vec![32, 33, 34, 20]
        );
        assert_eq!(nals[3], Bytes::from(big));
    }

    #[test]
    fn h265_loss_drops_until_the_next_irap() {
        // CRA (21) is an IRAP picture too.
        let key = |ms: i64| {
            Frame::new(
                Codec::H265,
                ms * 90,
                ms * 90,
                true,
                hevc(&[&[21 << 1, 1, 2]]),
            )
        };
        let delta = |ms: i64| Frame::new(Codec::H265, ms * 90, ms * 90, false, hevc(&[&[0, 1, 3]]));
        let frames = [
            key(0),
            delta(40),
            delta(80),
            delta(120),
            key(160),
            delta(200),
        ];
        // The key frame is 4 packets (VPS, SPS, PPS, CRA): lose delta 80.
        let mut n = 0u16;
        let out = roundtrip(&frames, &h265_info(), |_| {
            n += 1;
            n == 6
        });
        let kept: Vec<(bool, i64)> = frames_of(&out)
            .iter()
            .map(|f| (f.keyframe, f.pts / 90))
            .collect();
        assert_eq!(
            kept,
            vec![(true, 0), (false, 40), (true, 160), (false, 200)]
        );
    }

    #[test]
    fn h265_aggregation_packet_and_in_band_parameter_set_change() {
        // No sprop-*: the parameter sets come in band, in an AP (type 48).
        let mut d = Depacketizer::new("H265", 90000, &[]).unwrap();
        let mut out = Vec::new();
        let ap = |sets: &[&[u8]]| {
            let mut ap = vec![48 << 1, 1];
            for nal in sets {
                ap.extend_from_slice(&(nal.len() as u16).to_be_bytes());
                ap.extend_from_slice(nal);
            }
            ap
        };
        let [v, s, p] = crate::media::h265::tests::ffmpeg_main();
        d.push(rtp(1, 1000, false, &ap(&[&v, &s, &p])), &mut out)
            .unwrap();
        d.push(rtp(2, 1000, true, &[19 << 1, 1, 5]), &mut out)
            .unwrap();
        let first = match &out[0] {
            Event::Track(t) => t.clone(),
            e => panic!("{e:?}"),
        };
        assert_eq!(first, h265_info());
        assert!(frames_of(&out)[0].keyframe);
        // A new SPS (another picture size) is a new track.
        let s2 = crate::media::h265::tests::gst_x265enc()[1].clone();
        d.push(rtp(3, 4600, false, &ap(&[&v, &s2, &p])), &mut out)
            .unwrap();
        d.push(rtp(4, 4600, true, &[19 << 1, 1, 6]), &mut out)
            .unwrap();
        let tracks: Vec<&TrackInfo> = out
            .iter()
            .filter_map(|e| {
                if let Event::Track(t) = e {
                    Some(t)
                } else {
                    None
                }
            })
            .collect();
        assert_eq!(tracks.len(), 2);
        let c = HevcConfig::parse(&tracks[1].config).unwrap();
        assert_eq!(c.dimensions(), Some((322, 242)));
        // Truncated AP, PACI, a bare byte: errors, no panic.
        assert!(d
            .push(rtp(5, 8200, true, &[48 << 1, 1, 0, 9, 1]), &mut out)
            .is_err());
        assert!(d
            .push(rtp(6, 8200, true, &[50 << 1, 1, 0, 0]), &mut out)
            .is_err());
        assert!(d.push(rtp(7, 8200, true, &[2]), &mut out).is_err());
    }

    #[test]
    fn h264_access_units_are_bounded_too() {
        let mut d = Depacketizer::new("H264", 90000, &[]).unwrap();
        let mut out = Vec::new();
        let mut fu = vec![28, 0x80 | 5];
        fu.extend(vec![0u8; 1400]);
        let mut errors = 0;
        for seq in 0..(MAX_AU / 1400 + 2) as u16 {
            if d.push(rtp(seq, 0, false, &fu), &mut out).is_err() {
                errors += 1;
            }
            fu[1] = 5;
        }
        assert_eq!(errors, 1);
        assert!(frames_of(&out).is_empty());
    }

    proptest::proptest! {
        /// Any access unit of non-IRAP NAL units (single NAL packets and
        /// FUs of any size) comes back through our packetizer and
        /// depacketizer byte for byte.
        #[test]
        fn h265_packetize_depacketize_roundtrip(
            nals in proptest::collection::vec((0u8..10, 0u8..8, proptest::collection::vec(proptest::num::u8::ANY, 0..4000)), 1..5)
        ) {
            let nals: Vec<Vec<u8>> = nals
                .into_iter()
                .map(|(t, tid, body)| {
                    let mut n = vec![t << 1, tid.max(1)];
                    n.extend(body);
                    n
                })
                .collect();
            let refs: Vec<&[u8]> = nals.iter().map(|n| &n[..]).collect();
            let key = Frame::new(Codec::H265, 0, 0, true, hevc(&[&[19 << 1, 1, 1]]));
            let f = Frame::new(Codec::H265, 3600, 3600, false, hevc(&refs));
            let out = roundtrip(&[key, f.clone()], &h265_info(), |_| false);
            let frames = frames_of(&out);
            proptest::prop_assert_eq!(frames.len(), 2);
            proptest::prop_assert_eq!(&frames[1].payload, &f.payload);
            proptest::prop_assert!(!frames[1].keyframe);
        }
    }

    #[test]
    fn h265_refuses_decoding_order_numbers() {
        let e = Depacketizer::new("H265", 90000, &[("sprop-max-don-diff".into(), "2".into())])
            .err()
            .unwrap();
        assert!(e.contains("sprop-max-don-diff=2"), "{e}");
        assert!(
            Depacketizer::new("H265", 90000, &[("sprop-max-don-diff".into(), "0".into())]).is_ok()
        );
    }

    #[test]
    fn h265_access_units_are_bounded() {
        let mut d = Depacketizer::new("H265", 90000, &h265_fmtp()).unwrap();
        let mut out = Vec::new();
        let mut fu = vec![49 << 1, 1, 0x80 | 19];
        fu.extend(vec![0u8; 1400]);
        let mut errors = 0;
        for seq in 0..(MAX_AU / 1400 + 2) as u16 {
            if d.push(rtp(seq, 0, false, &fu), &mut out).is_err() {
                errors += 1;
            }
            fu[2] = 19; // middles from now on
        }
        assert_eq!(errors, 1, "one error when the bound is passed");
        assert!(frames_of(&out).is_empty());
    }

    #[test]
    fn jpeg_roundtrip_keeps_the_picture_and_the_clock() {
        let img = |name: &str| {
            Bytes::from(
                std::fs::read(
                    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                        .join("testdata/mjpeg")
                        .join(name),
                )
                .unwrap(),
            )
        };
        let info = TrackInfo {
            codec: Codec::Jpeg,
            config: Bytes::new(),
        };
        let frames = [
            Frame::new(Codec::Jpeg, 0, 0, true, img("gst_0.jpg")),
            Frame::new(Codec::Jpeg, 3600, 3600, true, img("gst_1.jpg")),
        ];
        let out = roundtrip(&frames, &info, |_| false);
        assert!(matches!(&out[0], Event::Track(t) if *t == info), "{out:?}");
        let got = frames_of(&out);
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].pts - got[0].pts, 3600);
        let essence = |b: &Bytes| {
            let p = crate::media::jpeg::rfc2435::parse(b).unwrap();
            (p.tables, b[p.scan].to_vec())
        };
        for (g, f) in got.iter().zip(&frames) {
            assert!(g.keyframe);
            assert_eq!(essence(&g.payload), essence(&f.payload));
        }
        // A lost packet (the first picture's second) costs that picture
        // only.
        let mut n = 0;
        let out = roundtrip(&frames, &info, |_| {
            n += 1;
            n == 2
        });
        assert_eq!(frames_of(&out).len(), 1);
    }

    #[test]
    fn aac_roundtrip() {
        let info = TrackInfo {
            codec: Codec::Aac,
            config: Bytes::from_static(&[0x12, 0x10]),
        };
        let frames: Vec<Frame> = (0..3)
            .map(|i| {
                Frame::new(
                    Codec::Aac,
                    i * 2090,
                    i * 2090,
                    true,
                    Bytes::from(vec![i as u8; 200]),
                )
            })
            .collect();
        let out = roundtrip(&frames, &info, |_| false);
        let got = frames_of(&out);
        assert_eq!(got.len(), 3);
        assert_eq!(got[1].payload, frames[1].payload);
    }

    #[test]
    fn rtp_header_parsing() {
        // Padding, one CSRC and an extension of one word.
        let mut b = vec![
            0xb1, 0xe0, 0, 5, 0, 0, 0, 9, 0, 0, 0, 1, 0, 0, 0, 2, 0xbe, 0xde, 0, 1, 1, 2, 3, 4,
        ];
        b.extend_from_slice(&[0xaa, 0xbb, 0, 0, 3]);
        let p = Packet::parse(Bytes::from(b)).unwrap();
        assert_eq!(
            (p.marker, p.payload_type, p.seq, p.timestamp),
            (true, 96, 5, 9)
        );
        assert_eq!(&p.payload[..], &[0xaa, 0xbb]);
        assert!(Packet::parse(Bytes::from_static(&[0x80, 0, 0])).is_err());
        assert!(Packet::parse(Bytes::from_static(&[
            0xa0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 200
        ]))
        .is_err());
    }

    #[test]
    fn replay_fuzz_corpus() {
        // Inputs of fuzz/fuzz_targets/rtp_depack.rs: byte 0 picks the
        // codec, the rest is one RTP packet per 2-byte-length record.
        crate::replay_fuzz_corpus("rtp_depack", fuzz_one);
    }

    /// The body of the fuzz target.
    pub fn fuzz_one(data: &[u8]) {
        crate::media::depack::fuzz(data);
    }
}
