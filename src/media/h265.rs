//! H.265 (HEVC) parameter sets and NAL units as MP4 and enhanced FLV carry
//! them (`hvcC` records, length-prefixed NAL units).
//!
//! Every reader here checks lengths before it reads: parameter sets come
//! from cameras and publishers, so a short or lying one is an error (or
//! `None`), never a panic.

use bytes::{BufMut, Bytes, BytesMut};

use super::Codec;

/// NAL unit types (H.265 §7.4.2.2, Table 7-1) we treat specially.
pub const NAL_VPS: u8 = 32;
pub const NAL_SPS: u8 = 33;
pub const NAL_PPS: u8 = 34;
pub const NAL_AUD: u8 = 35;

/// The video of an output that carries H.264 and H.265 alike (RTSP, HLS,
/// MP4, enhanced FLV), H.264 first: a stream that has both is rare, and
/// H.264 is what every client decodes.
pub const H264_OR_H265: &[Codec] = &[Codec::H264, Codec::H265];

/// H.265 §7.3.1.2: the type is bits 1..=6 of the two-byte NAL header.
pub fn nal_type(nal: &[u8]) -> u8 {
    nal.first().map_or(0, |b| (b >> 1) & 0x3f)
}

/// An IRAP picture (BLA, IDR, CRA: types 16..=23, H.265 §3.73): where a
/// decoder can start.
pub fn is_irap(nal_type: u8) -> bool {
    (16..=23).contains(&nal_type)
}

/// ISO 14496-15 §8.3.3.1 HEVCDecoderConfigurationRecord, the parts we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HevcConfig {
    pub general_profile_space: u8,
    pub general_tier_flag: bool,
    pub general_profile_idc: u8,
    pub general_profile_compatibility_flags: u32,
    /// The 48 bits of general constraint indicator flags.
    pub general_constraint_indicator_flags: u64,
    pub general_level_idc: u8,
    /// Bytes in each NAL unit's length prefix (1, 2 or 4).
    pub length_size: usize,
    pub vps: Vec<Bytes>,
    pub sps: Vec<Bytes>,
    pub pps: Vec<Bytes>,
}

/// The fixed part of an `hvcC` record, up to `numOfArrays` included.
const HEADER: usize = 23;

impl HevcConfig {
    /// Parses an `hvcC` record, checking every length before it reads.
    pub fn parse(rec: &Bytes) -> Result<HevcConfig, String> {
        let short = || {
            format!(
                "HEVCDecoderConfigurationRecord of {} bytes is truncated",
                rec.len()
            )
        };
        if rec.len() < HEADER {
            return Err(short());
        }
        if rec[0] != 1 {
            return Err(format!(
                "HEVCDecoderConfigurationRecord version {} (expected 1)",
                rec[0]
            ));
        }
        let length_size = (rec[21] & 0x03) as usize + 1;
        if length_size == 3 {
            return Err("HEVCDecoderConfigurationRecord: NAL length size 3 is not allowed".into());
        }
        let mut cfg = HevcConfig {
            general_profile_space: rec[1] >> 6,
            general_tier_flag: rec[1] & 0x20 != 0,
            general_profile_idc: rec[1] & 0x1f,
            general_profile_compatibility_flags: u32::from_be_bytes([
                rec[2], rec[3], rec[4], rec[5],
            ]),
            general_constraint_indicator_flags: rec[6..12]
                .iter()
                .fold(0u64, |n, b| n << 8 | *b as u64),
            general_level_idc: rec[12],
            length_size,
            vps: Vec::new(),
            sps: Vec::new(),
            pps: Vec::new(),
        };
        let arrays = rec[22];
        let mut pos = HEADER;
        for _ in 0..arrays {
            let head = rec.get(pos..pos + 3).ok_or_else(short)?;
            let kind = head[0] & 0x3f;
            let count = u16::from_be_bytes([head[1], head[2]]);
            pos += 3;
            for _ in 0..count {
                let len = rec.get(pos..pos + 2).ok_or_else(short)?;
                let len = u16::from_be_bytes([len[0], len[1]]) as usize;
                pos += 2;
                if pos + len > rec.len() {
                    return Err(short());
                }
                let nal = rec.slice(pos..pos + len);
                pos += len;
                match kind {
                    NAL_VPS => cfg.vps.push(nal),
                    NAL_SPS => cfg.sps.push(nal),
                    NAL_PPS => cfg.pps.push(nal),
                    // SEI arrays (prefix/suffix) are allowed; we have no use.
                    _ => {}
                }
            }
        }
        Ok(cfg)
    }

    /// An `hvcC` record (4-byte NAL lengths) from the parameter sets, with
    /// the profile, tier and level read from the first SPS.
    pub fn record(vps: &[Bytes], sps: &[Bytes], pps: &[Bytes]) -> Result<Bytes, String> {
        let first = sps.first().ok_or("no SPS to build an hvcC record from")?;
        if vps.is_empty() || pps.is_empty() {
            return Err("an hvcC record needs a VPS, an SPS and a PPS".into());
        }
        let s = Sps::parse(first).ok_or("the SPS is truncated or malformed")?;
        let ptl = &s.ptl;
        let mut rec = BytesMut::with_capacity(
            HEADER
                + 9
                + vps
                    .iter()
                    .chain(sps)
                    .chain(pps)
                    .map(|n| n.len() + 2)
                    .sum::<usize>(),
        );
        rec.put_u8(1);
        rec.put_u8(ptl.profile_space << 6 | u8::from(ptl.tier) << 5 | ptl.profile_idc);
        rec.put_u32(ptl.compatibility);
        rec.put_slice(&ptl.constraints.to_be_bytes()[2..]);
        rec.put_u8(ptl.level_idc);
        rec.put_u16(0xf000); // reserved '1111', min_spatial_segmentation_idc 0
        rec.put_u8(0xfc); // reserved, parallelismType 0 (unknown)
        rec.put_u8(0xfc | (s.chroma_format_idc & 3));
        rec.put_u8(0xf8 | (s.bit_depth_luma_minus8 & 7));
        rec.put_u8(0xf8 | (s.bit_depth_chroma_minus8 & 7));
        rec.put_u16(0); // avgFrameRate: unspecified
                        // constantFrameRate 0, numTemporalLayers, temporalIdNested,
                        // lengthSizeMinusOne 3.
        rec.put_u8(
            (((s.max_sub_layers_minus1 + 1) & 7) << 3) | u8::from(s.temporal_id_nesting) << 2 | 3,
        );
        rec.put_u8(3);
        for (kind, nals) in [(NAL_VPS, vps), (NAL_SPS, sps), (NAL_PPS, pps)] {
            // array_completeness 1: `hvc1` keeps all of them in the sample
            // entry (ISO 14496-15 §8.4.1.1.1).
            rec.put_u8(0x80 | kind);
            let n = u16::try_from(nals.len()).map_err(|_| "too many parameter sets")?;
            rec.put_u16(n);
            for nal in nals {
                let len = u16::try_from(nal.len())
                    .map_err(|_| format!("parameter set of {} bytes", nal.len()))?;
                rec.put_u16(len);
                rec.put_slice(nal);
            }
        }
        Ok(rec.freeze())
    }

    /// ISO 14496-15 Annex E.3 codecs parameter, e.g. `hvc1.1.6.L93.B0`
    /// (what MSE's `isTypeSupported` and HLS's CODECS take).
    pub fn codec_string(&self) -> String {
        let space = match self.general_profile_space {
            1 => "A",
            2 => "B",
            3 => "C",
            _ => "",
        };
        // E.3: the compatibility flags in reverse bit order, in hex with no
        // leading zeros.
        let compat = self.general_profile_compatibility_flags.reverse_bits();
        let mut s = format!(
            "hvc1.{space}{}.{compat:X}.{}{}",
            self.general_profile_idc,
            if self.general_tier_flag { 'H' } else { 'L' },
            self.general_level_idc
        );
        // Each of the six constraint bytes, trailing zero bytes dropped.
        let bytes = &self.general_constraint_indicator_flags.to_be_bytes()[2..];
        let keep = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
        for b in &bytes[..keep] {
            s += &format!(".{b:X}");
        }
        s
    }

    /// Picture size from the first SPS.
    pub fn dimensions(&self) -> Option<(u32, u32)> {
        dimensions(self.sps.first()?)
    }
}

/// Picture width and height from an SPS NAL unit (with its 2-byte header,
/// emulation prevention bytes still in), after the conformance window.
pub fn dimensions(sps: &[u8]) -> Option<(u32, u32)> {
    let s = Sps::parse(sps)?;
    Some((s.width, s.height))
}

/// H.265 §7.3.2.2 seq_parameter_set_rbsp, up to the bit depths.
struct Sps {
    max_sub_layers_minus1: u8,
    temporal_id_nesting: bool,
    ptl: Ptl,
    chroma_format_idc: u8,
    width: u32,
    height: u32,
    bit_depth_luma_minus8: u8,
    bit_depth_chroma_minus8: u8,
}

/// H.265 §7.3.3 profile_tier_level, the general part.
struct Ptl {
    profile_space: u8,
    tier: bool,
    profile_idc: u8,
    compatibility: u32,
    constraints: u64,
    level_idc: u8,
}

impl Sps {
    fn parse(nal: &[u8]) -> Option<Sps> {
        if nal.len() < 3 || nal_type(nal) != NAL_SPS {
            return None;
        }
        let rbsp = unescape(&nal[2..]);
        let mut r = Bits::new(&rbsp);
        r.bits(4)?; // sps_video_parameter_set_id
        let max_sub_layers_minus1 = r.bits(3)? as u8;
        let temporal_id_nesting = r.bit()?;
        let ptl = profile_tier_level(&mut r, max_sub_layers_minus1)?;
        r.ue()?; // sps_seq_parameter_set_id
        let chroma_format_idc = r.ue()?;
        if chroma_format_idc > 3 {
            return None;
        }
        let separate_planes = chroma_format_idc == 3 && r.bit()?;
        let mut width = r.ue()?;
        let mut height = r.ue()?;
        if r.bit()? {
            // §7.4.3.2.1, Table 6-1: the window counts chroma samples.
            let (sub_w, sub_h) = match (chroma_format_idc, separate_planes) {
                (1, _) => (2, 2),
                (2, _) => (2, 1),
                _ => (1, 1),
            };
            let (l, rt, t, b) = (r.ue()?, r.ue()?, r.ue()?, r.ue()?);
            width = width.checked_sub(sub_w * l.checked_add(rt)?)?;
            height = height.checked_sub(sub_h * t.checked_add(b)?)?;
        }
        let bit_depth_luma_minus8 = r.ue()?;
        let bit_depth_chroma_minus8 = r.ue()?;
        if width == 0 || height == 0 || bit_depth_luma_minus8 > 8 || bit_depth_chroma_minus8 > 8 {
            return None;
        }
        Some(Sps {
            max_sub_layers_minus1,
            temporal_id_nesting,
            ptl,
            chroma_format_idc: chroma_format_idc as u8,
            width,
            height,
            bit_depth_luma_minus8: bit_depth_luma_minus8 as u8,
            bit_depth_chroma_minus8: bit_depth_chroma_minus8 as u8,
        })
    }
}

/// H.265 §7.3.3 with profilePresentFlag 1: the general part, then the
/// sub-layers' flags and whatever of their own they carry, skipped.
fn profile_tier_level(r: &mut Bits, max_sub_layers_minus1: u8) -> Option<Ptl> {
    let profile_space = r.bits(2)? as u8;
    let tier = r.bit()?;
    let profile_idc = r.bits(5)? as u8;
    let compatibility = r.bits(32)?;
    let constraints = (r.bits(16)? as u64) << 32 | r.bits(32)? as u64;
    let level_idc = r.bits(8)? as u8;
    let n = max_sub_layers_minus1 as usize;
    let mut present = [(false, false); 8];
    for p in present.iter_mut().take(n) {
        *p = (r.bit()?, r.bit()?);
    }
    if n > 0 {
        for _ in n..8 {
            r.bits(2)?; // reserved_zero_2bits
        }
    }
    for &(profile, level) in present.iter().take(n) {
        if profile {
            // space, tier, idc, 32 compatibility flags, 48 constraint bits.
            r.skip(2 + 1 + 5 + 32 + 48)?;
        }
        if level {
            r.skip(8)?;
        }
    }
    Some(Ptl {
        profile_space,
        tier,
        profile_idc,
        compatibility,
        constraints,
        level_idc,
    })
}

/// H.265 §7.4.2: drops the emulation prevention byte of every 00 00 03.
pub fn unescape(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut zeros = 0;
    for &x in b {
        if zeros >= 2 && x == 3 {
            zeros = 0;
            continue;
        }
        zeros = if x == 0 { zeros + 1 } else { 0 };
        out.push(x);
    }
    out
}

/// An MSB-first bit reader that answers `None` past the end.
struct Bits<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Bits<'a> {
    fn new(b: &'a [u8]) -> Bits<'a> {
        Bits { b, pos: 0 }
    }

    fn bit(&mut self) -> Option<bool> {
        let byte = *self.b.get(self.pos / 8)?;
        let v = byte >> (7 - self.pos % 8) & 1;
        self.pos += 1;
        Some(v == 1)
    }

    /// Up to 32 bits.
    fn bits(&mut self, n: u32) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            v = v << 1 | u32::from(self.bit()?);
        }
        Some(v)
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        if self.pos + n > self.b.len() * 8 {
            return None;
        }
        self.pos += n;
        Some(())
    }

    /// §9.2 Exp-Golomb ue(v), up to 31 leading zeros.
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while !self.bit()? {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let rest = self.bits(zeros)?;
        Some(((1u64 << zeros) - 1 + rest as u64).min(u32::MAX as u64) as u32)
    }
}

/// The NAL units of an Annex B byte stream (start codes 00 00 01 and
/// 00 00 00 01), without their start codes.
pub fn annex_b_nals(b: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= b.len() {
        if b[i] == 0 && b[i + 1] == 0 && b[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut out = Vec::with_capacity(starts.len());
    for (k, &s) in starts.iter().enumerate() {
        let mut end = starts.get(k + 1).map_or(b.len(), |n| n - 3);
        // A 4-byte start code's leading zero (and trailing_zero_8bits).
        while end > s && b[end - 1] == 0 {
            end -= 1;
        }
        out.push(&b[s..end]);
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn hex(s: &str) -> Bytes {
        Bytes::from(
            (0..s.len() / 2)
                .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
                .collect::<Vec<u8>>(),
        )
    }

    /// `ffmpeg -f lavfi -i testsrc=size=320x240:rate=25 -pix_fmt yuv420p
    /// -c:v libx265` (testdata/h265/ffmpeg_main_320x240.hevc): Main, L2.
    pub fn ffmpeg_main() -> [Bytes; 3] {
        [
            hex("40010c01ffff01600000030090000003000003003c959809"),
            hex("42010101600000030090000003000003003ca00a080f165959a4932bc05a020000030002000003003210"),
            hex("4401c172b46240"),
        ]
    }

    /// GStreamer's x265enc at 322x242 (testdata/h265/gst_x265enc_322x242.hevc):
    /// coded as 328x248 with a conformance window.
    pub fn gst_x265enc() -> [Bytes; 3] {
        [
            hex("40010c01ffff01600000030090000003000003003f959809"),
            hex("42010101600000030090000003000003003fa00a480f9c9265959a4932bffc00040005a830303020000003002000000303c1"),
            hex("4401c172b46240"),
        ]
    }

    /// ffmpeg's libx265 from an RGB source: Main 4:4:4 (RExt, profile 4).
    fn ffmpeg_rext() -> [Bytes; 3] {
        [
            hex("40010c01ffff0408000003009e0800000300003c959809"),
            hex("4201010408000003009e0800000300003c90014101e2cb2b349265780b7020200040000003004000000642"),
            hex("4401c172860c4624"),
        ]
    }

    fn record_of(p: &[Bytes; 3]) -> Bytes {
        HevcConfig::record(&p[..1], &p[1..2], &p[2..]).unwrap()
    }

    #[test]
    fn record_matches_ffmpeg_mp4_muxer() {
        // The hvcC ffmpeg's mp4 muxer writes for the same stream, up to
        // the arrays (`-c copy -tag:v hvc1 m.mp4`).
        let rec = record_of(&ffmpeg_main());
        assert_eq!(
            &rec[..HEADER],
            &hex("0101600000009000000000003cf000fcfdf8f800000f03")[..]
        );
        let c = HevcConfig::parse(&rec).unwrap();
        assert_eq!(c.length_size, 4);
        assert_eq!(c.vps, vec![ffmpeg_main()[0].clone()]);
        assert_eq!(c.sps, vec![ffmpeg_main()[1].clone()]);
        assert_eq!(c.pps, vec![ffmpeg_main()[2].clone()]);
        assert_eq!(c.codec_string(), "hvc1.1.6.L60.90");
        assert_eq!(c.dimensions(), Some((320, 240)));
    }

    #[test]
    fn codec_strings() {
        assert_eq!(
            HevcConfig::parse(&record_of(&gst_x265enc()))
                .unwrap()
                .codec_string(),
            "hvc1.1.6.L63.90"
        );
        // RExt: compatibility flag 4 reversed is 0x10; constraint bytes
        // 9e 08 then zeros.
        assert_eq!(
            HevcConfig::parse(&record_of(&ffmpeg_rext()))
                .unwrap()
                .codec_string(),
            "hvc1.4.10.L60.9E.8"
        );
        // ISO 14496-15 E.3's own example: Main, level 3.1, high tier flag
        // off, constraint byte B0.
        let mut c = HevcConfig::parse(&record_of(&ffmpeg_main())).unwrap();
        c.general_level_idc = 93;
        c.general_constraint_indicator_flags = 0xb0 << 40;
        assert_eq!(c.codec_string(), "hvc1.1.6.L93.B0");
        c.general_tier_flag = true;
        c.general_profile_space = 1;
        assert_eq!(c.codec_string(), "hvc1.A1.6.H93.B0");
    }

    #[test]
    fn dimensions_after_the_conformance_window() {
        assert_eq!(dimensions(&ffmpeg_main()[1]), Some((320, 240)));
        assert_eq!(dimensions(&gst_x265enc()[1]), Some((322, 242)));
        assert_eq!(dimensions(&ffmpeg_rext()[1]), Some((320, 240)));
        // Not an SPS, or cut anywhere: no answer, no panic.
        assert_eq!(dimensions(&ffmpeg_main()[0]), None);
        let sps = &ffmpeg_main()[1];
        for n in 0..20 {
            assert_eq!(dimensions(&sps[..n]), None, "{n} bytes");
        }
    }

    #[test]
    fn sub_layers_are_skipped() {
        // A hand-made SPS with max_sub_layers_minus1 = 1 and a sub-layer
        // profile and level: 88 + 8 bits more before the SPS id.
        let mut w = BitWriter::default();
        w.put(0, 4); // vps id
        w.put(1, 3); // max_sub_layers_minus1
        w.put(1, 1); // temporal_id_nesting
        w.put(0, 2);
        w.put(0, 1);
        w.put(1, 5); // Main
        w.put(0x6000_0000, 32);
        w.put(0x9000, 16);
        w.put(0, 32);
        w.put(123, 8); // level 4.1
        w.put(1, 1); // sub_layer_profile_present
        w.put(1, 1); // sub_layer_level_present
        for _ in 1..8 {
            w.put(0, 2);
        }
        for _ in 0..11 {
            w.put(0xff, 8); // the sub-layer's profile: must not be read as ours
        }
        w.put(0xff, 8); // its level
        w.ue(0); // sps id
        w.ue(1); // 4:2:0
        w.ue(1920);
        w.ue(1088);
        w.put(1, 1);
        w.ue(0);
        w.ue(0);
        w.ue(0);
        w.ue(4); // 8 rows off the bottom
        w.ue(0);
        w.ue(0);
        w.put(1, 8);
        let mut sps = vec![0x42, 0x01];
        sps.extend(w.bytes());
        let sps = Bytes::from(sps);
        assert_eq!(dimensions(&sps), Some((1920, 1080)));
        let p = ffmpeg_main();
        let rec = HevcConfig::record(&p[..1], &[sps], &p[2..]).unwrap();
        let c = HevcConfig::parse(&rec).unwrap();
        assert_eq!(c.codec_string(), "hvc1.1.6.L123.90");
        // numTemporalLayers 2, temporalIdNested 1, lengthSizeMinusOne 3.
        assert_eq!(rec[21], 2 << 3 | 1 << 2 | 3);
    }

    #[test]
    fn truncated_records_are_errors() {
        let r = record_of(&ffmpeg_main());
        for n in 0..r.len() {
            assert!(
                HevcConfig::parse(&r.slice(..n)).is_err(),
                "accepted {n} bytes"
            );
        }
        assert!(HevcConfig::record(&[], &ffmpeg_main()[1..2], &ffmpeg_main()[2..]).is_err());
        assert!(HevcConfig::record(
            &ffmpeg_main()[..1],
            &ffmpeg_main()[..1],
            &ffmpeg_main()[2..]
        )
        .is_err());
    }

    #[test]
    fn emulation_prevention_is_removed() {
        assert_eq!(
            unescape(&[0, 0, 3, 1, 0, 0, 3, 0, 3]),
            vec![0, 0, 1, 0, 0, 0, 3]
        );
    }

    #[test]
    fn annex_b_splits_on_both_start_codes() {
        let b = [
            0, 0, 0, 1, 0x40, 1, 0, 0, 1, 0x42, 1, 2, 0, 0, 0, 1, 0x26, 1,
        ];
        assert_eq!(
            annex_b_nals(&b),
            vec![&[0x40, 1][..], &[0x42, 1, 2][..], &[0x26, 1][..]]
        );
    }

    #[test]
    fn captured_streams_parse() {
        // Every parameter set of the captured files.
        for (file, size) in [
            ("ffmpeg_main_320x240.hevc", (320, 240)),
            ("gst_x265enc_322x242.hevc", (322, 242)),
            ("ffmpeg_rext444_320x240.hevc", (320, 240)),
        ] {
            let b = std::fs::read(format!(
                "{}/testdata/h265/{file}",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap();
            let nals = annex_b_nals(&b);
            let of = |t| Bytes::copy_from_slice(nals.iter().find(|n| nal_type(n) == t).unwrap());
            let rec = HevcConfig::record(&[of(NAL_VPS)], &[of(NAL_SPS)], &[of(NAL_PPS)]).unwrap();
            assert_eq!(
                HevcConfig::parse(&rec).unwrap().dimensions(),
                Some(size),
                "{file}"
            );
            assert!(nals.iter().any(|n| is_irap(nal_type(n))), "{file}");
        }
    }

    #[derive(Default)]
    struct BitWriter {
        bits: Vec<bool>,
    }

    impl BitWriter {
        fn put(&mut self, v: u64, n: u32) {
            for i in (0..n).rev() {
                self.bits.push(v >> i & 1 == 1);
            }
        }
        fn ue(&mut self, v: u32) {
            let x = v as u64 + 1;
            let n = 64 - x.leading_zeros();
            self.put(0, n - 1);
            self.put(x, n);
        }
        fn bytes(&self) -> Vec<u8> {
            self.bits
                .chunks(8)
                .map(|c| {
                    c.iter()
                        .enumerate()
                        .fold(0u8, |b, (i, x)| b | (u8::from(*x) << (7 - i)))
                })
                .collect()
        }
    }

    proptest::proptest! {
        /// record → parse gives back the sets and the SPS's profile, and
        /// arbitrary bytes never panic the parsers.
        #[test]
        fn record_parse_roundtrip(
            vps in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 1..40), 1..3),
            pps in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 1..40), 1..3),
            junk in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
        ) {
            let vps: Vec<Bytes> = vps.into_iter().map(Bytes::from).collect();
            let pps: Vec<Bytes> = pps.into_iter().map(Bytes::from).collect();
            let sps = vec![gst_x265enc()[1].clone()];
            let rec = HevcConfig::record(&vps, &sps, &pps).unwrap();
            let c = HevcConfig::parse(&rec).unwrap();
            proptest::prop_assert_eq!(&c.vps, &vps);
            proptest::prop_assert_eq!(&c.sps, &sps);
            proptest::prop_assert_eq!(&c.pps, &pps);
            proptest::prop_assert_eq!(c.general_level_idc, 63);
            let _ = HevcConfig::parse(&Bytes::from(junk.clone()));
            let mut s = vec![0x42, 1];
            s.extend(&junk);
            let _ = dimensions(&s);
        }
    }
}
