//! Splitting a run of JPEG images (ffmpeg's `-f mjpeg` output) into
//! images, by walking the markers (ITU T.81 §B.1.1.2), not by searching
//! for `FF D9`: an end-of-image inside an APPn segment (an EXIF thumbnail)
//! must not end the image.
//!
//! Checks before it parses: [`Splitter::next_image`] says "incomplete"
//! (`Ok(None)`) until a whole image is buffered, then cuts it out of the
//! read buffer without a copy.

use bytes::{Bytes, BytesMut};

pub mod rfc2435;

/// No sane MJPEG frame comes near this.
pub const MAX_IMAGE: usize = 16 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("JPEG at byte offset {offset}: {reason}")]
pub struct JpegError {
    pub offset: u64,
    pub reason: String,
}

#[derive(Debug, Default)]
pub struct Splitter {
    buf: BytesMut,
    /// Stream offset of `buf[0]`.
    offset: u64,
    /// How far the current image has been walked, so a long one is not
    /// walked again from its start on every read.
    scanned: usize,
    /// Inside entropy-coded data (after SOS) at `scanned`.
    in_scan: bool,
}

impl Splitter {
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    fn err(&self, at: usize, reason: impl Into<String>) -> JpegError {
        JpegError {
            offset: self.offset + at as u64,
            reason: reason.into(),
        }
    }

    /// The next whole image (SOI to EOI), or `Ok(None)` if more input is
    /// needed.
    pub fn next_image(&mut self) -> Result<Option<Bytes>, JpegError> {
        let b = &self.buf;
        if b.len() < 2 {
            return Ok(None);
        }
        if b[0] != 0xFF || b[1] != 0xD8 {
            return Err(self.err(
                0,
                format!("expected SOI (FF D8), found {:02X} {:02X}", b[0], b[1]),
            ));
        }
        let mut i = self.scanned.max(2);
        let mut in_scan = self.in_scan;
        loop {
            if i >= MAX_IMAGE {
                return Err(self.err(0, format!("image larger than {MAX_IMAGE} bytes")));
            }
            if in_scan {
                // §B.1.1.5: in entropy-coded data an FF is followed by 00
                // (a stuffed byte) or a restart marker D0-D7; anything else
                // is the next marker.
                match b[i..].iter().position(|&x| x == 0xFF) {
                    None => {
                        i = b.len();
                        break;
                    }
                    Some(p) => i += p,
                }
                let Some(&m) = b.get(i + 1) else { break };
                if m == 0x00 || (0xD0..=0xD7).contains(&m) || m == 0xFF {
                    i += if m == 0xFF { 1 } else { 2 };
                    continue;
                }
                in_scan = false;
                continue;
            }
            // A marker: FF, then its code (fill bytes FF may repeat).
            let (Some(&ff), Some(&m)) = (b.get(i), b.get(i + 1)) else {
                break;
            };
            if ff != 0xFF {
                return Err(self.err(i, format!("expected a marker, found {ff:02X}")));
            }
            match m {
                0xFF => {
                    i += 1;
                    continue;
                }
                0xD9 => {
                    // EOI: the image is complete.
                    let image = self.buf.split_to(i + 2).freeze();
                    self.offset += image.len() as u64;
                    self.scanned = 0;
                    self.in_scan = false;
                    return Ok(Some(image));
                }
                0xD0..=0xD7 | 0x01 => {
                    i += 2; // standalone markers
                    continue;
                }
                _ => {}
            }
            let Some(len) = b.get(i + 2..i + 4) else {
                break;
            };
            let len = u16::from_be_bytes([len[0], len[1]]) as usize;
            if len < 2 {
                return Err(self.err(i + 2, format!("segment length {len} is below 2")));
            }
            if b.len() < i + 2 + len {
                break;
            }
            i += 2 + len;
            if m == 0xDA {
                in_scan = true; // SOS: entropy-coded data follows
            }
        }
        self.scanned = i;
        self.in_scan = in_scan;
        Ok(None)
    }
}

/// The fuzz target's body (`fuzz/fuzz_targets/jpeg_split.rs`).
pub fn fuzz(data: &[u8]) {
    let step = data.first().map_or(1, |b| *b as usize % 64 + 1);
    let mut s = Splitter::default();
    for piece in data.chunks(step) {
        s.push(piece);
        loop {
            match s.next_image() {
                Ok(Some(img)) => {
                    assert!(img.starts_with(&[0xFF, 0xD8]) && img.ends_with(&[0xFF, 0xD9]));
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SOI, APP0 holding a fake EOI, SOS with stuffed FF 00 and a restart
    /// marker, EOI.
    fn image(tag: u8) -> Vec<u8> {
        let mut v = vec![0xFF, 0xD8];
        v.extend([0xFF, 0xE0, 0x00, 0x06, 0xFF, 0xD9, tag, 0]);
        v.extend([0xFF, 0xDA, 0x00, 0x03, 0x01]);
        v.extend([0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD3, 0x56]);
        v.extend([0xFF, 0xD9]);
        v
    }

    #[test]
    fn splits_images_in_any_split_and_ignores_markers_inside_segments() {
        let mut data = image(1);
        data.extend(image(2));
        data.extend(image(3));
        for step in [1, 2, 3, 7, 100] {
            let mut s = Splitter::default();
            let mut got = Vec::new();
            for piece in data.chunks(step) {
                s.push(piece);
                while let Some(img) = s.next_image().unwrap() {
                    got.push(img);
                }
            }
            assert_eq!(got.len(), 3, "step {step}");
            assert_eq!(&got[1][..], &image(2)[..]);
        }
    }

    #[test]
    fn garbage_is_an_error_with_an_offset() {
        let mut s = Splitter::default();
        s.push(&image(1));
        s.push(b"junk");
        assert!(s.next_image().unwrap().is_some());
        let e = s.next_image().unwrap_err();
        assert_eq!(e.offset, image(1).len() as u64);
    }

    #[test]
    fn a_real_ffmpeg_jpeg_splits_whole() {
        // testdata/snapshot.jpg: ffmpeg's mjpeg encoder output.
        let img = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/snapshot.jpg"),
        )
        .unwrap();
        let mut s = Splitter::default();
        s.push(&img);
        s.push(&img);
        assert_eq!(s.next_image().unwrap().unwrap().len(), img.len());
        assert_eq!(s.next_image().unwrap().unwrap().len(), img.len());
        assert!(s.next_image().unwrap().is_none());
    }

    #[test]
    fn replay_fuzz_corpus() {
        crate::replay_fuzz_corpus("jpeg_split", fuzz);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            fuzz(&data);
        }
    }
}
