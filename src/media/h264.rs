//! H.264 parameter sets and NAL units as FLV/MP4 carry them (AVCC).

use bytes::Bytes;

/// ISO 14496-15 §5.2.4.1 AVCDecoderConfigurationRecord, the parts we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcConfig {
    pub profile_idc: u8,
    pub constraint_flags: u8,
    pub level_idc: u8,
    /// Bytes in each NAL unit's length prefix (1, 2 or 4).
    pub length_size: usize,
    pub sps: Vec<Bytes>,
    pub pps: Vec<Bytes>,
}

/// NAL unit types (H.264 §7.4.1, Table 7-1) we treat specially.
pub const NAL_IDR: u8 = 5;
pub const NAL_SPS: u8 = 7;
pub const NAL_PPS: u8 = 8;
pub const NAL_AUD: u8 = 9;

pub fn nal_type(nal: &[u8]) -> u8 {
    nal.first().map_or(0, |b| b & 0x1f)
}

impl AvcConfig {
    /// Parses the record, checking every length before it reads.
    pub fn parse(rec: &Bytes) -> Result<AvcConfig, String> {
        let short = || {
            format!(
                "AVCDecoderConfigurationRecord of {} bytes is truncated",
                rec.len()
            )
        };
        if rec.len() < 7 || rec[0] != 1 {
            return Err(short());
        }
        let length_size = (rec[4] & 0x03) as usize + 1;
        if length_size == 3 {
            return Err("AVCDecoderConfigurationRecord: NAL length size 3 is not allowed".into());
        }
        let mut pos = 5;
        let sets = |count: usize, pos: &mut usize| -> Result<Vec<Bytes>, String> {
            let mut v = Vec::with_capacity(count);
            for _ in 0..count {
                let len = rec.get(*pos..*pos + 2).ok_or_else(short)?;
                let len = u16::from_be_bytes([len[0], len[1]]) as usize;
                *pos += 2;
                if *pos + len > rec.len() {
                    return Err(short());
                }
                v.push(rec.slice(*pos..*pos + len));
                *pos += len;
            }
            Ok(v)
        };
        let n_sps = (rec[5] & 0x1f) as usize;
        pos += 1;
        let sps = sets(n_sps, &mut pos)?;
        let n_pps = *rec.get(pos).ok_or_else(short)? as usize;
        pos += 1;
        let pps = sets(n_pps, &mut pos)?;
        Ok(AvcConfig {
            profile_idc: rec[1],
            constraint_flags: rec[2],
            level_idc: rec[3],
            length_size,
            sps,
            pps,
        })
    }

    /// RFC 6184 §8.1 `profile-level-id`: profile_idc, constraint flags,
    /// level_idc as six hex digits.
    pub fn profile_level_id(&self) -> String {
        format!(
            "{:02x}{:02x}{:02x}",
            self.profile_idc, self.constraint_flags, self.level_idc
        )
    }
}

/// An AVCC access unit (4-byte length prefixes, as our `avcC` records say)
/// from NAL units.
pub fn to_avcc<N: AsRef<[u8]>>(nals: &[N]) -> Bytes {
    use bytes::BufMut;
    let mut au = bytes::BytesMut::with_capacity(nals.iter().map(|n| n.as_ref().len() + 4).sum());
    for n in nals {
        au.put_u32(n.as_ref().len() as u32);
        au.put_slice(n.as_ref());
    }
    au.freeze()
}

/// The NAL units of an AVCC access unit, as slices of it (no copy). A
/// length that runs past the end ends the walk with an error.
pub fn nal_units(
    au: &Bytes,
    length_size: usize,
) -> impl Iterator<Item = Result<Bytes, String>> + '_ {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        if pos >= au.len() {
            return None;
        }
        if pos + length_size > au.len() {
            pos = au.len();
            return Some(Err("truncated NAL length prefix".to_string()));
        }
        let len = au[pos..pos + length_size]
            .iter()
            .fold(0usize, |n, b| n << 8 | *b as usize);
        pos += length_size;
        if pos + len > au.len() {
            let e = format!(
                "NAL unit of {len} bytes runs past the access unit ({} bytes)",
                au.len()
            );
            pos = au.len();
            return Some(Err(e));
        }
        let nal = au.slice(pos..pos + len);
        pos += len;
        Some(Ok(nal))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn record() -> Bytes {
        // avcC: version 1, profile 66 (Baseline), flags 0xe0, level 30,
        // 4-byte lengths, 1 SPS (4 bytes), 1 PPS (2 bytes).
        Bytes::from_static(&[
            1, 66, 0xe0, 30, 0xff, 0xe1, 0, 4, 0x67, 66, 0xe0, 30, 1, 0, 2, 0x68, 0xce,
        ])
    }

    #[test]
    fn parses_the_record() {
        let c = AvcConfig::parse(&record()).unwrap();
        assert_eq!(c.length_size, 4);
        assert_eq!(c.sps, vec![Bytes::from_static(&[0x67, 66, 0xe0, 30])]);
        assert_eq!(c.pps, vec![Bytes::from_static(&[0x68, 0xce])]);
        assert_eq!(c.profile_level_id(), "42e01e");
    }

    #[test]
    fn truncated_records_are_errors() {
        let r = record();
        for n in 0..r.len() {
            assert!(
                AvcConfig::parse(&r.slice(..n)).is_err(),
                "accepted {n} bytes"
            );
        }
    }

    #[test]
    fn walks_nal_units() {
        let au = Bytes::from_static(&[0, 0, 0, 2, 0x65, 1, 0, 0, 0, 1, 0x41, 0, 0, 0, 9, 1]);
        let v: Vec<_> = nal_units(&au, 4).collect();
        assert_eq!(v[0], Ok(Bytes::from_static(&[0x65, 1])));
        assert_eq!(v[1], Ok(Bytes::from_static(&[0x41])));
        assert!(v[2].is_err());
        assert_eq!(v.len(), 3);
    }
}
