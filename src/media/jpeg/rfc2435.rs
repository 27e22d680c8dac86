//! RFC 2435: JPEG over RTP (payload type 26), both ways.
//!
//! RTP carries only the entropy-coded scan of a baseline JPEG plus an
//! 8-byte header (type, Q, width and height in 8-pixel blocks); the JFIF
//! markers are left out and rebuilt by the receiver (Appendix B). What the
//! header cannot say (Huffman tables) is fixed: the standard tables of ITU
//! T.81 Annex K.3. The quantization tables are either computed from Q
//! (1..=99, Appendix A) or, for Q >= 128, sent in band in the first packet
//! of a frame (§3.1.8), possibly only once for a given Q.
//!
//! Only types 0 (4:2:2) and 1 (4:2:0), with or without restart markers
//! (64, 65), progressive frames: every camera we know sends those, and
//! they are what the RFC defines.
//!
//! Every input is checked before it is read: a depacketizer fed garbage
//! says so with an error, never panics, and never assembles more than
//! [`MAX_IMAGE`] bytes.

use bytes::{BufMut, Bytes, BytesMut};

/// RFC 3551 §6, Table 5: JPEG's static payload type.
pub const PT: u8 = 26;

/// §3.1.5/§3.1.6: width and height are counted in 8-pixel blocks in one
/// byte, so 2040 is the largest side RTP can say (0 means "more").
pub const MAX_SIDE: u32 = 2040;

/// The largest image we assemble: an MJPEG camera's 1080p frame at high
/// quality is a few hundred KiB; this keeps a publisher that never sets
/// the marker from growing our memory without bound.
pub const MAX_IMAGE: usize = 4 << 20;

/// §3.1.2: the fragment offset has 24 bits.
const MAX_OFFSET: usize = 1 << 24;

/// The zigzag scan (ITU T.81 Figure A.6): entry `i` is the natural
/// (row-major) index of the `i`-th coefficient in a DQT segment.
const ZIGZAG: [usize; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
    13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59,
    52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
];

/// ITU T.81 Table K.1 (luminance), natural order, as RFC 2435 Appendix A
/// prints it.
const LUMA_QUANTIZER: [u8; 64] = [
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113,
    92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
];

/// ITU T.81 Table K.2 (chrominance), natural order.
const CHROMA_QUANTIZER: [u8; 64] = [
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
];

/// The quantization tables for `q` in 1..=127 (RFC 2435 Appendix A,
/// `MakeTables`): luma then chroma, 64 bytes each, in zigzag order as a
/// DQT segment holds them. The RFC's sample code indexes its natural-order
/// tables straight, which is a known erratum: every implementation
/// (ffmpeg, GStreamer, live555) and every camera uses the zigzag order.
pub fn tables_for_q(q: u8) -> [u8; 128] {
    // Appendix A: Q 1..=99 scale like the IJG quality setting; 100..=127
    // are reserved and clamped, as the sample code does.
    let factor = (q as u32).clamp(1, 99);
    let scale = if factor < 50 {
        5000 / factor
    } else {
        200 - factor * 2
    };
    let mut out = [0u8; 128];
    for i in 0..64 {
        let n = ZIGZAG[i];
        let l = (LUMA_QUANTIZER[n] as u32 * scale + 50) / 100;
        let c = (CHROMA_QUANTIZER[n] as u32 * scale + 50) / 100;
        // "Limit the quantizers to 1 <= q <= 255".
        out[i] = l.clamp(1, 255) as u8;
        out[64 + i] = c.clamp(1, 255) as u8;
    }
    out
}

// ITU T.81 Annex K.3, Tables K.3 to K.6: the Huffman tables RFC 2435
// Appendix B writes into every image (RTP cannot carry others).
const DC_LUMA_BITS: [u8; 16] = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0];
const DC_LUMA_VALS: [u8; 12] = [
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b,
];
const AC_LUMA_BITS: [u8; 16] = [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 125];
const AC_LUMA_VALS: [u8; 162] = [
    0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07,
    0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15, 0x52, 0xd1, 0xf0,
    0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25, 0x26, 0x27, 0x28,
    0x29, 0x2a, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49,
    0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69,
    0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
    0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,
    0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5,
    0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2,
    0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8,
    0xf9, 0xfa,
];
const DC_CHROMA_BITS: [u8; 16] = [0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0];
const DC_CHROMA_VALS: [u8; 12] = DC_LUMA_VALS;
const AC_CHROMA_BITS: [u8; 16] = [0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 119];
const AC_CHROMA_VALS: [u8; 162] = [
    0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61, 0x71,
    0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xa1, 0xb1, 0xc1, 0x09, 0x23, 0x33, 0x52, 0xf0,
    0x15, 0x62, 0x72, 0xd1, 0x0a, 0x16, 0x24, 0x34, 0xe1, 0x25, 0xf1, 0x17, 0x18, 0x19, 0x1a, 0x26,
    0x27, 0x28, 0x29, 0x2a, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48,
    0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
    0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87,
    0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5,
    0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3,
    0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda,
    0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8,
    0xf9, 0xfa,
];

/// The four standard tables as (Tc<<4 | Th, BITS, HUFFVAL).
const HUFFMAN: [(u8, &[u8; 16], &[u8]); 4] = [
    (0x00, &DC_LUMA_BITS, &DC_LUMA_VALS),
    (0x10, &AC_LUMA_BITS, &AC_LUMA_VALS),
    (0x01, &DC_CHROMA_BITS, &DC_CHROMA_VALS),
    (0x11, &AC_CHROMA_BITS, &AC_CHROMA_VALS),
];

/// Quantization tables as the Quantization Table header carries them
/// (§3.1.8): luma then chroma; bit 0 / bit 1 of `precision` make that
/// table 16-bit (128 bytes) instead of 8-bit (64).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QTables {
    pub precision: u8,
    pub data: Bytes,
}

impl QTables {
    fn len_for(precision: u8) -> usize {
        64 * (1 + (precision & 1) as usize) + 64 * (1 + ((precision >> 1) & 1) as usize)
    }

    /// The luma and chroma tables' bytes.
    fn split(&self) -> (&[u8], &[u8]) {
        let l = 64 * (1 + (self.precision & 1) as usize);
        self.data.split_at(l)
    }
}

/// The JFIF headers for an RFC 2435 frame (Appendix B, `MakeHeaders`):
/// SOI, DQT, DRI if there are restart markers, SOF0, DHT, SOS. `kind` is
/// the RTP type (0 or 1, +64 with restart markers); `width` and `height`
/// are in pixels.
pub fn make_headers(
    out: &mut BytesMut,
    kind: u8,
    width: u16,
    height: u16,
    tables: &QTables,
    dri: u16,
) {
    out.put_slice(&[0xFF, 0xD8]);
    let (luma, chroma) = tables.split();
    for (id, (t, pq)) in [
        (luma, tables.precision & 1),
        (chroma, (tables.precision >> 1) & 1),
    ]
    .into_iter()
    .enumerate()
    {
        out.put_slice(&[0xFF, 0xDB]);
        out.put_u16(3 + t.len() as u16);
        out.put_u8((pq << 4) | id as u8);
        out.put_slice(t);
    }
    if dri != 0 {
        out.put_slice(&[0xFF, 0xDD, 0, 4]);
        out.put_u16(dri);
    }
    // SOF0: 8-bit, three components; Y is 2x1 (4:2:2) or 2x2 (4:2:0)
    // with table 0, Cb and Cr 1x1 with table 1.
    out.put_slice(&[0xFF, 0xC0, 0, 17, 8]);
    out.put_u16(height);
    out.put_u16(width);
    let y = if kind & 0x3F == 0 { 0x21 } else { 0x22 };
    out.put_slice(&[3, 0, y, 0, 1, 0x11, 1, 2, 0x11, 1]);
    for (class, bits, vals) in HUFFMAN {
        out.put_slice(&[0xFF, 0xC4]);
        out.put_u16(3 + 16 + vals.len() as u16);
        out.put_u8(class);
        out.put_slice(bits);
        out.put_slice(vals);
    }
    // SOS: the three components, Y with DC/AC tables 0, Cb and Cr with 1;
    // the whole spectral range (Ss 0, Se 63, Ah/Al 0): baseline.
    out.put_slice(&[0xFF, 0xDA, 0, 12, 3, 0, 0x00, 1, 0x11, 2, 0x11, 0, 63, 0]);
}

/// A frame being assembled.
#[derive(Debug)]
struct Partial {
    ts: u32,
    kind: u8,
    q: u8,
    width: u8,
    height: u8,
    dri: u16,
    /// The in-band tables of this frame's first packet, if any.
    tables: Option<QTables>,
    scan: BytesMut,
}

/// One RFC 2435 receiver.
#[derive(Debug, Default)]
pub struct Depacketizer {
    partial: Option<Partial>,
    /// §3.1.8: in-band tables, kept per Q (128..=255): a sender may send
    /// them once and then a Length of 0.
    kept: Vec<(u8, QTables)>,
    last_seq: Option<u16>,
}

fn be24(b: &[u8]) -> usize {
    ((b[0] as usize) << 16) | ((b[1] as usize) << 8) | b[2] as usize
}

impl Depacketizer {
    /// Takes one packet's payload; returns the JPEG it completes (SOI to
    /// EOI), with its RTP timestamp. A lost packet loses its frame only.
    pub fn push(
        &mut self,
        seq: u16,
        ts: u32,
        marker: bool,
        payload: &[u8],
    ) -> Result<Option<(u32, Bytes)>, String> {
        if self.last_seq.is_some_and(|l| seq != l.wrapping_add(1)) {
            // A gap: the frame in progress has a hole, and a JPEG with a
            // hole decodes to garbage from there on.
            self.partial = None;
        }
        self.last_seq = Some(seq);
        // §3.1: the main JPEG header.
        let h = payload
            .get(..8)
            .ok_or_else(|| format!("RFC 2435 payload of {} bytes", payload.len()))?;
        let (type_specific, offset, kind, q, width, height) =
            (h[0], be24(&h[1..4]), h[4], h[5], h[6], h[7]);
        let mut at = 8;
        if type_specific != 0 {
            self.partial = None;
            return Err(format!(
                "RFC 2435 type-specific {type_specific} (interlaced fields) is not supported"
            ));
        }
        if !matches!(kind, 0 | 1 | 64 | 65) {
            self.partial = None;
            return Err(format!(
                "RFC 2435 type {kind} is not supported (0, 1, 64, 65 are)"
            ));
        }
        if width == 0 || height == 0 {
            self.partial = None;
            return Err(format!(
                "RFC 2435 frame wider or taller than {MAX_SIDE} pixels (§3.1.5: width or height 0)"
            ));
        }
        let mut dri = 0;
        if kind >= 64 {
            // §3.1.7: the Restart Marker header.
            let r = payload
                .get(at..at + 4)
                .ok_or("RFC 2435 restart marker header is truncated")?;
            dri = u16::from_be_bytes([r[0], r[1]]);
            at += 4;
        }
        let mut tables = None;
        if q >= 128 && offset == 0 {
            // §3.1.8: the Quantization Table header, first packet only.
            let t = payload
                .get(at..at + 4)
                .ok_or("RFC 2435 quantization table header is truncated")?;
            let (precision, len) = (t[1], u16::from_be_bytes([t[2], t[3]]) as usize);
            at += 4;
            if len > 0 {
                let need = QTables::len_for(precision);
                if len < need {
                    return Err(format!(
                        "RFC 2435 quantization tables of {len} bytes; types 0 and 1 need {need}"
                    ));
                }
                let data = payload
                    .get(at..at + len)
                    .ok_or("RFC 2435 quantization tables run past the packet")?;
                at += len;
                let qt = QTables {
                    precision: precision & 3,
                    data: Bytes::copy_from_slice(&data[..need]),
                };
                self.kept.retain(|(k, _)| *k != q);
                self.kept.push((q, qt.clone()));
                tables = Some(qt);
            }
        }
        let data = &payload[at..];
        if offset == 0 {
            self.partial = Some(Partial {
                ts,
                kind,
                q,
                width,
                height,
                dri,
                tables,
                scan: BytesMut::with_capacity(data.len() * 8),
            });
        }
        let Some(p) = &mut self.partial else {
            // A middle or end without its start: lost.
            return Ok(None);
        };
        if p.ts != ts || p.scan.len() != offset || p.kind != kind || p.q != q {
            // Not the next piece of this frame: a piece of it was lost or
            // reordered.
            self.partial = None;
            return Ok(None);
        }
        if offset + data.len() > MAX_IMAGE.min(MAX_OFFSET) {
            self.partial = None;
            return Err(format!("RFC 2435 frame over {MAX_IMAGE} bytes; dropped"));
        }
        p.scan.put_slice(data);
        if !marker {
            return Ok(None);
        }
        let Some(p) = self.partial.take() else {
            return Ok(None);
        };
        let tables = match (p.q, p.tables) {
            (q @ 0..=127, _) => QTables {
                precision: 0,
                data: Bytes::copy_from_slice(&tables_for_q(q)),
            },
            (_, Some(t)) => t,
            (q, None) => self
                .kept
                .iter()
                .find(|(k, _)| *k == q)
                .map(|(_, t)| t.clone())
                .ok_or_else(|| {
                    format!("RFC 2435 frame with Q={q} and no quantization tables sent yet")
                })?,
        };
        let mut out = BytesMut::with_capacity(p.scan.len() + 700);
        make_headers(
            &mut out,
            p.kind,
            p.width as u16 * 8,
            p.height as u16 * 8,
            &tables,
            p.dri,
        );
        out.put_slice(&p.scan);
        // Senders do not send the EOI (Appendix B adds it); some do.
        if !p.scan.ends_with(&[0xFF, 0xD9]) {
            out.put_slice(&[0xFF, 0xD9]);
        }
        Ok(Some((p.ts, out.freeze())))
    }
}

/// What RTP needs of a baseline JPEG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// RFC 2435 type: 0 (4:2:2) or 1 (4:2:0), +64 with restart markers.
    pub kind: u8,
    pub width: u16,
    pub height: u16,
    pub dri: u16,
    pub tables: QTables,
    /// The entropy-coded data, without the EOI.
    pub scan: std::ops::Range<usize>,
}

/// Reads what RFC 2435 carries out of a JPEG, refusing what it cannot:
/// anything but baseline 8-bit 3-component 4:2:2 or 4:2:0 with the
/// standard Huffman tables (ffmpeg's own mjpeg encoder writes optimised
/// ones unless told `-huffman default`).
pub fn parse(img: &[u8]) -> Result<Image, String> {
    if !img.starts_with(&[0xFF, 0xD8]) || !img.ends_with(&[0xFF, 0xD9]) || img.len() < 4 {
        return Err("not a whole JPEG (SOI..EOI)".into());
    }
    let mut q: [Option<(u8, &[u8])>; 4] = [None; 4];
    let mut frame: Option<(u8, u16, u16, u8, u8)> = None;
    let mut dri = 0u16;
    let mut i = 2;
    loop {
        let (Some(&ff), Some(&m)) = (img.get(i), img.get(i + 1)) else {
            return Err("JPEG ends before its scan".into());
        };
        if ff != 0xFF {
            return Err(format!("expected a marker at byte {i}, found {ff:02X}"));
        }
        if m == 0xFF {
            i += 1; // fill byte (T.81 §B.1.1.2)
            continue;
        }
        let len = img
            .get(i + 2..i + 4)
            .map(|l| u16::from_be_bytes([l[0], l[1]]) as usize)
            .ok_or("JPEG segment length is truncated")?;
        let seg = img
            .get(i + 4..i + 2 + len.max(2))
            .ok_or_else(|| format!("JPEG segment {m:02X} runs past the image"))?;
        match m {
            0xDB => {
                // T.81 §B.2.4.1: one or more tables, Pq/Tq then 64 or 128.
                let mut s = seg;
                while let Some((&pt, rest)) = s.split_first() {
                    let n = if pt >> 4 == 0 { 64 } else { 128 };
                    let t = rest.get(..n).ok_or("DQT table is truncated")?;
                    *q.get_mut((pt & 0x0F) as usize)
                        .ok_or("DQT table number over 3")? = Some((pt >> 4, t));
                    s = &rest[n..];
                }
            }
            0xC0 | 0xC1 => {
                // §B.2.2: P, Y, X, Nf, then Ci, Hi|Vi, Tqi.
                if seg.len() < 15 || seg[0] != 8 || seg[5] != 3 {
                    return Err("RFC 2435 carries only 8-bit, 3-component (YCbCr) JPEG".to_string());
                }
                let height = u16::from_be_bytes([seg[1], seg[2]]);
                let width = u16::from_be_bytes([seg[3], seg[4]]);
                let kind = match seg[7] {
                    0x21 => 0,
                    0x22 => 1,
                    s => {
                        return Err(format!(
                        "JPEG luma sampling {}x{}: RFC 2435 carries 4:2:2 (2x1) and 4:2:0 (2x2)",
                        s >> 4,
                        s & 15
                    ))
                    }
                };
                if seg[10] != 0x11 || seg[13] != 0x11 || seg[11] != seg[14] {
                    return Err(
                        "JPEG chroma is not 1x1 with one table for Cb and Cr (RFC 2435 types 0, 1)"
                            .to_string(),
                    );
                }
                frame = Some((kind, width, height, seg[8], seg[11]));
            }
            0xC2..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => {
                return Err(format!(
                    "JPEG SOF{} is not baseline; RFC 2435 carries baseline only",
                    m - 0xC0
                ));
            }
            0xC4 => {
                // §B.2.4.2: Tc|Th, 16 counts, the values.
                let mut s = seg;
                while let Some((&class, rest)) = s.split_first() {
                    let bits = rest.get(..16).ok_or("DHT table is truncated")?;
                    let n: usize = bits.iter().map(|&b| b as usize).sum();
                    let vals = rest.get(16..16 + n).ok_or("DHT table is truncated")?;
                    let standard = HUFFMAN
                        .iter()
                        .any(|(c, b, v)| *c == class && &b[..] == bits && *v == vals);
                    if !standard {
                        return Err("JPEG with non-standard Huffman tables: RFC 2435 carries only those of T.81 Annex K.3 (ffmpeg: -huffman default)".into());
                    }
                    s = &rest[16 + n..];
                }
            }
            0xDD => {
                dri = seg
                    .get(..2)
                    .map(|d| u16::from_be_bytes([d[0], d[1]]))
                    .ok_or("DRI is truncated")?;
            }
            0xDA => {
                let (kind, width, height, tq_y, tq_c) =
                    frame.ok_or("JPEG scan before its frame header")?;
                if seg.first() != Some(&3) {
                    return Err("JPEG scan of other than 3 components".into());
                }
                if width as u32 > MAX_SIDE || height as u32 > MAX_SIDE || width == 0 || height == 0
                {
                    return Err(format!(
                        "JPEG of {width}x{height}: RFC 2435 carries at most {MAX_SIDE}x{MAX_SIDE}"
                    ));
                }
                let table = |t: u8| {
                    q.get(t as usize).copied().flatten().ok_or_else(|| {
                        format!("JPEG frame uses quantization table {t}, not defined")
                    })
                };
                let (py, ly) = table(tq_y)?;
                let (pc, lc) = table(tq_c)?;
                let mut data = BytesMut::with_capacity(ly.len() + lc.len());
                data.put_slice(ly);
                data.put_slice(lc);
                let start = i + 2 + len;
                let end = img.len() - 2;
                if start > end || end - start >= MAX_OFFSET {
                    return Err("JPEG scan is empty or over 16 MiB".into());
                }
                return Ok(Image {
                    kind: kind + if dri != 0 { 64 } else { 0 },
                    width,
                    height,
                    dri,
                    tables: QTables {
                        precision: (py & 1) | ((pc & 1) << 1),
                        data: data.freeze(),
                    },
                    scan: start..end,
                });
            }
            _ => {} // APPn, COM, DNL...: nothing RTP carries
        }
        i += 2 + len;
    }
}

/// Splits a JPEG into RFC 2435 payloads of at most `max_payload` bytes,
/// each as (headers, slice of the image's scan). Q is 255 with the
/// image's own tables in the first packet (§3.1.8), so what the receiver
/// rebuilds decodes exactly as the image did. With restart markers, F and
/// L are set and the count is 0x3FFF (§3.1.7: packets are not aligned to
/// restart intervals; the receiver reassembles the whole frame).
pub fn packetize(img: &Bytes, max_payload: usize) -> Result<Vec<(Bytes, Bytes)>, String> {
    let p = parse(img)?;
    let mut out = Vec::new();
    let mut at = p.scan.start;
    while at < p.scan.end || out.is_empty() {
        let offset = at - p.scan.start;
        let mut h = BytesMut::with_capacity(16 + p.tables.data.len());
        h.put_u8(0);
        h.put_slice(&(offset as u32).to_be_bytes()[1..]);
        h.put_slice(&[
            p.kind,
            255,
            p.width.div_ceil(8) as u8,
            p.height.div_ceil(8) as u8,
        ]);
        if p.dri != 0 {
            h.put_u16(p.dri);
            h.put_u16(0xFFFF);
        }
        if offset == 0 {
            h.put_slice(&[0, p.tables.precision]);
            h.put_u16(p.tables.data.len() as u16);
            h.put_slice(&p.tables.data);
        }
        let room = max_payload
            .checked_sub(h.len())
            .filter(|r| *r > 0)
            .ok_or("RTP payload too small for the RFC 2435 headers")?;
        let end = (at + room).min(p.scan.end);
        out.push((h.freeze(), img.slice(at..end)));
        at = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn testdata(name: &str) -> Vec<u8> {
        std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("testdata/mjpeg")
                .join(name),
        )
        .unwrap()
    }

    /// The RTP packets of an RFC 4571 capture.
    fn records(b: &[u8]) -> Vec<crate::media::depack::Packet> {
        let mut out = Vec::new();
        let mut rest = b;
        while rest.len() >= 2 {
            let n = u16::from_be_bytes([rest[0], rest[1]]) as usize;
            out.push(
                crate::media::depack::Packet::parse(Bytes::copy_from_slice(&rest[2..2 + n]))
                    .unwrap(),
            );
            rest = &rest[2 + n..];
        }
        out
    }

    /// A JPEG's DQT tables and its entropy-coded data, which must survive
    /// RTP whatever else of the headers changes.
    fn essence(img: &[u8]) -> (Bytes, Vec<u8>) {
        let p = parse(img).unwrap();
        (p.tables.data, img[p.scan].to_vec())
    }

    #[test]
    fn q_tables_from_the_rfc_2435_formula() {
        // Q 50 is the T.81 Annex K tables themselves, in zigzag order.
        let t = tables_for_q(50);
        assert_eq!(&t[..8], &[16, 11, 12, 14, 12, 10, 16, 14]);
        assert_eq!(&t[56..64], &[121, 112, 100, 120, 92, 101, 103, 99]);
        assert_eq!(&t[64..72], &[17, 18, 18, 24, 21, 24, 47, 26]);
        assert!(t[80..].iter().all(|&x| x == 99));
        // Q 75: scale 50, so (16*50+50)/100 = 8, (11*50+50)/100 = 6.
        let t = tables_for_q(75);
        assert_eq!(&t[..4], &[8, 6, 6, 7]);
        assert_eq!(t[127], 50);
        // Q 10: scale 500; 99*5 = 495 clamps to 255.
        let t = tables_for_q(10);
        assert_eq!(t[0], 80);
        assert_eq!(t[127], 255);
        // Q 99: scale 2, (16*2+50)/100 = 0 clamps to 1.
        let t = tables_for_q(99);
        assert_eq!(t[0], 1);
        assert_eq!(t[127], 2);
        // Reserved 100..=127 clamp to 99; 0 to 1.
        assert_eq!(tables_for_q(120), tables_for_q(99));
        assert_eq!(tables_for_q(0), tables_for_q(1));
    }

    #[test]
    fn gstreamer_packets_rebuild_gstreamers_jpegs() {
        let mut d = Depacketizer::default();
        let mut got = Vec::new();
        for p in records(&testdata("gst_q255.rtp")) {
            assert_eq!(p.payload_type, PT);
            if let Some((ts, img)) = d.push(p.seq, p.timestamp, p.marker, &p.payload).unwrap() {
                got.push((ts, img));
            }
        }
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].0.wrapping_sub(got[0].0), 3600, "25 fps at 90 kHz");
        for (i, (_, img)) in got.iter().enumerate() {
            let orig = testdata(&format!("gst_{i}.jpg"));
            assert_eq!(essence(img), essence(&orig), "image {i}");
            let p = parse(img).unwrap();
            assert_eq!((p.kind, p.width, p.height, p.dri), (1, 320, 240, 0));
            // And our rebuilt image splits as one whole JPEG.
            let mut s = crate::media::jpeg::Splitter::default();
            s.push(img);
            assert_eq!(s.next_image().unwrap().unwrap(), *img);
        }
    }

    #[test]
    fn a_lost_packet_loses_its_frame_only() {
        let packets = records(&testdata("gst_q255.rtp"));
        let mut d = Depacketizer::default();
        let mut got = 0;
        for (i, p) in packets.iter().enumerate() {
            if i == 1 {
                continue; // the first frame's middle
            }
            if d.push(p.seq, p.timestamp, p.marker, &p.payload)
                .unwrap()
                .is_some()
            {
                got += 1;
            }
        }
        assert_eq!(got, 1);
    }

    #[test]
    fn round_trip_is_byte_identical_for_our_own_images() {
        // GStreamer's JPEG through our packetizer and depacketizer makes
        // our canonical header; that one goes round unchanged.
        let orig = Bytes::from(testdata("gst_0.jpg"));
        let once = through(&orig, 0, 1400);
        assert_eq!(essence(&once), essence(&orig));
        for mtu in [160, 333, 1400] {
            assert_eq!(through(&once, 7, mtu), once, "mtu {mtu}");
        }
    }

    fn through(img: &Bytes, seq0: u16, mtu: usize) -> Bytes {
        let chunks = packetize(img, mtu).unwrap();
        assert!(chunks.iter().all(|(h, b)| h.len() + b.len() <= mtu));
        let mut d = Depacketizer::default();
        let n = chunks.len();
        let mut out = None;
        for (i, (h, b)) in chunks.into_iter().enumerate() {
            let mut p = h.to_vec();
            p.extend_from_slice(&b);
            let r = d
                .push(seq0.wrapping_add(i as u16), 1000, i + 1 == n, &p)
                .unwrap();
            assert_eq!(r.is_some(), i + 1 == n);
            out = r.map(|(_, img)| img);
        }
        out.unwrap()
    }

    #[test]
    fn restart_markers_and_16_bit_tables_survive() {
        // Our header with a DRI and a 16-bit luma table, then scan bytes
        // holding a restart marker and a stuffed FF.
        let mut luma = vec![0u8; 128];
        luma[1] = 3;
        let tables = QTables {
            precision: 1,
            data: Bytes::from([luma, vec![5u8; 64]].concat()),
        };
        let mut img = BytesMut::new();
        make_headers(&mut img, 64, 640, 480, &tables, 40);
        img.put_slice(&[0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56, 0xFF, 0xD9]);
        let img = img.freeze();
        let p = parse(&img).unwrap();
        assert_eq!((p.kind, p.width, p.height, p.dri), (64, 640, 480, 40));
        assert_eq!(p.tables, tables);
        let c = packetize(&img, 1400).unwrap();
        assert_eq!(&c[0].0[8..12], &[0, 40, 0xFF, 0xFF], "F, L, count 0x3FFF");
        assert_eq!(through(&img, 0, 1400), img);
        assert_eq!(through(&img, 65535, 220), img);
    }

    #[test]
    fn tables_sent_once_are_kept_for_later_frames() {
        let img = Bytes::from(testdata("gst_0.jpg"));
        let chunks = packetize(&img, 1400).unwrap();
        assert_eq!(chunks.len(), 2);
        let mut d = Depacketizer::default();
        let frame = |first: &[u8], seq: u16, d: &mut Depacketizer| {
            let mut p0 = first.to_vec();
            p0.extend_from_slice(&chunks[0].1);
            assert!(d.push(seq, 1, false, &p0).unwrap().is_none());
            let mut p1 = chunks[1].0.to_vec();
            p1.extend_from_slice(&chunks[1].1);
            d.push(seq + 1, 1, true, &p1)
        };
        // Tables missing (Length 0) before any were sent: an error.
        let mut bare = chunks[0].0[..12].to_vec();
        bare[10..12].copy_from_slice(&[0, 0]);
        assert!(frame(&bare, 0, &mut d).is_err());
        let full = frame(&chunks[0].0, 2, &mut d).unwrap().unwrap().1;
        let later = frame(&bare, 4, &mut d).unwrap().unwrap().1;
        assert_eq!(full, later);
    }

    #[test]
    fn ffmpeg_jpegs_go_with_default_huffman_tables_only() {
        // `ffmpeg:cam#video=mjpeg` output as it is (testdata/snapshot.jpg,
        // ffmpeg's default `-huffman optimal`): RTP cannot carry it.
        let optimal = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/snapshot.jpg"),
        )
        .unwrap();
        assert!(parse(&optimal).unwrap_err().contains("Huffman"));
        // With `-huffman default` it goes, one table for luma and chroma
        // (ffmpeg writes one DQT when they are the same) and all.
        let img = Bytes::from(testdata("ffmpeg_default_huffman.jpg"));
        let p = parse(&img).unwrap();
        assert_eq!((p.kind, p.width, p.height), (1, 96, 64));
        assert_eq!(p.tables.data[..64], p.tables.data[64..]);
        assert_eq!(essence(&through(&img, 3, 1400)), essence(&img));
    }

    #[test]
    fn refuses_what_rtp_cannot_carry() {
        // A 4:4:4 image.
        let mut img = testdata("gst_0.jpg");
        let sof = img.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        img[sof + 11] = 0x11;
        assert!(parse(&img).unwrap_err().contains("sampling"));
        // Optimised Huffman tables (one count changed).
        let mut img = testdata("gst_0.jpg");
        let dht = img.windows(2).position(|w| w == [0xFF, 0xC4]).unwrap();
        img[dht + 6] ^= 1;
        assert!(parse(&img).unwrap_err().contains("Huffman"));
        // Wider than 2040.
        let mut img = testdata("gst_0.jpg");
        img[sof + 7..sof + 9].copy_from_slice(&4096u16.to_be_bytes());
        assert!(parse(&img).unwrap_err().contains("2040"));
        // And a receiver told "over 2040" says so.
        let mut d = Depacketizer::default();
        assert!(d
            .push(0, 0, true, &[0, 0, 0, 0, 1, 50, 0, 30, 1, 2])
            .unwrap_err()
            .contains("2040"));
    }

    #[test]
    fn garbage_is_an_error_or_nothing_never_a_panic() {
        let mut d = Depacketizer::default();
        assert!(d.push(0, 0, true, &[1, 2, 3]).is_err());
        assert!(d.push(1, 0, true, &[0, 0, 0, 0, 1, 255, 40, 30]).is_err());
        assert!(d
            .push(2, 0, true, &[0, 0, 0, 9, 1, 50, 40, 30, 7])
            .unwrap()
            .is_none());
        for junk in [
            &b""[..],
            b"\xFF\xD8\xFF\xD9",
            b"\xFF\xD8\xFF\xDA\x00\x02\xFF\xD9",
        ] {
            assert!(parse(junk).is_err());
        }
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let mut img = vec![0xFF, 0xD8];
            img.extend(data);
            img.extend([0xFF, 0xD9]);
            let _ = parse(&img);
        }

        #[test]
        fn depacketizer_never_panics(
            packets in proptest::collection::vec(
                (proptest::prelude::any::<bool>(), proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)),
                0..20,
            )
        ) {
            let mut d = Depacketizer::default();
            for (i, (m, p)) in packets.iter().enumerate() {
                let _ = d.push(i as u16, 0, *m, p);
            }
        }
    }
}
