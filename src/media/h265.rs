//! H.265 (HEVC) parameter sets and NAL units as MP4 and enhanced FLV carry
//! them (`hvcC` records, length-prefixed NAL units).
//!
//! FOUNDATION STUB (issue 16): the signatures are fixed; the bodies are
//! being written. Nothing calls [`HevcConfig::parse`] on live input yet.

use bytes::Bytes;

/// NAL unit types (H.265 §7.4.2.2, Table 7-1) we treat specially.
pub const NAL_VPS: u8 = 32;
pub const NAL_SPS: u8 = 33;
pub const NAL_PPS: u8 = 34;
pub const NAL_AUD: u8 = 35;

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

impl HevcConfig {
    /// Parses an `hvcC` record, checking every length before it reads.
    pub fn parse(_rec: &Bytes) -> Result<HevcConfig, String> {
        Err("hvcC parsing is not written yet".into())
    }

    /// An `hvcC` record (4-byte NAL lengths) from the parameter sets, with
    /// the profile, tier and level read from the first SPS.
    pub fn record(_vps: &[Bytes], _sps: &[Bytes], _pps: &[Bytes]) -> Result<Bytes, String> {
        Err("hvcC building is not written yet".into())
    }

    /// ISO 14496-15 Annex E.3 codecs parameter, e.g. `hvc1.1.6.L93.B0`
    /// (what MSE's `isTypeSupported` and HLS's CODECS take).
    pub fn codec_string(&self) -> String {
        String::new()
    }
}

/// Picture width and height from an SPS NAL unit (with its 2-byte header,
/// emulation prevention bytes still in), after the conformance window.
pub fn dimensions(_sps: &[u8]) -> Option<(u32, u32)> {
    None
}
