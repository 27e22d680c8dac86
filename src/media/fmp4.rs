//! Fragmented MP4 (ISO/IEC 14496-12, CMAF-style) for HLS (RFC 8216
//! §3.3): an init segment (`ftyp` + `moov` with `avcC`/`hvcC`/`esds`) and media
//! segments (`moof` + `mdat`), one `traf` per track.
//!
//! Track 1 is video at 90 kHz, track 2 audio at its sample rate. Samples
//! are the frames as the hub has them: H.264 and H.265 stay length-prefixed
//! (as `avcC`/`hvcC` say), AAC stays raw.
//!
//! Audio is AAC (`mp4a`) or FLAC (`fLaC`, xiph's isoflac.txt): camera
//! G.711 arrives here as FLAC ([`super::flac::Converter`]), since MSE and
//! HLS players have no G.711. Either way the audio timescale is the sample
//! rate and each sample lasts its frame's sample count.

use bytes::{BufMut, Bytes, BytesMut};

use super::flac;
use super::h264::AvcConfig;
use super::h265::HevcConfig;
use super::{Codec, Frame, TrackInfo, TIMESCALE};

/// The video fMP4 for MSE carries (`stream.mp4`, HLS fMP4): H.264 (what
/// every MSE takes) or H.265 (`hvc1`: Safari, and Chrome with a hardware
/// decoder).
pub const MSE_VIDEO: &[Codec] = super::h265::H264_OR_H265;
/// AAC first, then G.711, which goes out as FLAC ([`flac`]): MSE has no
/// G.711, and Chromium, Firefox and Safari take FLAC in MP4.
pub const MSE_AUDIO: &[Codec] = &[Codec::Aac, Codec::Pcma, Codec::Pcmu];

const VIDEO: u32 = 1;
const AUDIO: u32 = 2;

/// Writes a box: 32-bit size, type, then what `body` writes.
fn bx(out: &mut BytesMut, kind: &[u8; 4], body: impl FnOnce(&mut BytesMut)) {
    let start = out.len();
    out.put_u32(0);
    out.put_slice(kind);
    body(out);
    let size = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
}

/// A full box (§4.2): version and 24-bit flags first.
fn fbx(
    out: &mut BytesMut,
    kind: &[u8; 4],
    version: u8,
    flags: u32,
    body: impl FnOnce(&mut BytesMut),
) {
    bx(out, kind, |o| {
        o.put_u32((version as u32) << 24 | flags);
        body(o);
    });
}

/// The tracks of one init segment.
#[derive(Debug, Clone)]
pub struct Tracks {
    /// Codec (H.264 or H.265), its configuration record, width, height.
    video: Option<(Codec, Bytes, u32, u32)>,
    audio: Option<(TrackInfo, u32, u8)>,
    /// Where the last fragment's audio ended, in the audio timescale.
    audio_next: Option<u64>,
}

/// ISO 14496-3 §4.5.2.1: an AAC-LC frame is 1024 samples.
const AAC_FRAME: u64 = 1024;

impl Tracks {
    /// From the hub's track infos; unusable ones are left out.
    pub fn new(video: Option<&TrackInfo>, audio: Option<&TrackInfo>) -> Tracks {
        let video = video.and_then(|v| {
            let size = match v.codec {
                Codec::H264 => AvcConfig::parse(&v.config)
                    .ok()?
                    .sps
                    .first()
                    .and_then(|s| dimensions(s)),
                Codec::H265 => HevcConfig::parse(&v.config).ok()?.dimensions(),
                _ => return None,
            };
            let (w, h) = size.unwrap_or((0, 0));
            Some((v.codec, v.config.clone(), w, h))
        });
        let audio = audio.and_then(|a| match a.codec {
            Codec::Aac => {
                let rate = a.aac_sample_rate()?;
                let channels = ((a.config[1] >> 3) & 0x0f).max(1);
                Some((a.clone(), rate, channels))
            }
            // What flac::Converter makes of G.711: its STREAMINFO says.
            Codec::Flac => {
                let (rate, channels) = flac::streaminfo_format(&a.config)?;
                Some((a.clone(), rate, channels))
            }
            _ => None,
        });
        Tracks {
            video,
            audio,
            audio_next: None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.video.is_none() && self.audio.is_none()
    }

    fn timescale(&self, track: u32) -> u32 {
        match (track, &self.audio) {
            (AUDIO, Some((_, rate, _))) => *rate,
            _ => TIMESCALE as u32,
        }
    }

    /// `ftyp` + `moov`.
    pub fn init(&self) -> Bytes {
        let mut o = BytesMut::with_capacity(1024);
        bx(&mut o, b"ftyp", |o| {
            o.put_slice(b"iso5");
            o.put_u32(512);
            for brand in [b"iso5", b"iso6", b"mp41", b"cmfc"] {
                o.put_slice(brand);
            }
        });
        bx(&mut o, b"moov", |o| {
            fbx(o, b"mvhd", 0, 0, |o| {
                o.put_u32(0); // creation
                o.put_u32(0); // modification
                o.put_u32(1000);
                o.put_u32(0); // duration: unknown (live)
                o.put_u32(0x0001_0000); // rate 1.0
                o.put_u16(0x0100); // volume 1.0
                o.put_bytes(0, 10);
                matrix(o);
                o.put_bytes(0, 24);
                o.put_u32(3); // next_track_ID
            });
            if let Some((codec, rec, w, h)) = &self.video {
                // ISO 14496-15 §5.4.2.1 `avc1`/`avcC`, §8.4.1.1 `hvc1`/`hvcC`:
                // the same VisualSampleEntry around the record. `hvc1`, not
                // `hev1`: the parameter sets are all in the record (Safari
                // and HLS want `hvc1`).
                let (entry, config) = match codec {
                    Codec::H265 => (b"hvc1", b"hvcC"),
                    _ => (b"avc1", b"avcC"),
                };
                trak(o, VIDEO, TIMESCALE as u32, *w, *h, |o| {
                    bx(o, entry, |o| {
                        o.put_bytes(0, 6);
                        o.put_u16(1); // data_reference_index
                        o.put_bytes(0, 16);
                        o.put_u16(*w as u16);
                        o.put_u16(*h as u16);
                        o.put_u32(0x0048_0000); // 72 dpi
                        o.put_u32(0x0048_0000);
                        o.put_u32(0);
                        o.put_u16(1); // frame_count
                        o.put_bytes(0, 32); // compressorname
                        o.put_u16(0x0018); // depth
                        o.put_i16(-1);
                        bx(o, config, |o| o.put_slice(rec));
                    });
                });
            }
            if let Some((info, rate, channels)) = &self.audio {
                // ISO 14496-12 §12.2.3 AudioSampleEntry fields, then the
                // codec's box: `esds` for AAC, `dfLa` for FLAC.
                let entry = |o: &mut BytesMut| {
                    o.put_bytes(0, 6);
                    o.put_u16(1);
                    o.put_bytes(0, 8);
                    o.put_u16(*channels as u16);
                    o.put_u16(16);
                    o.put_u32(0);
                    o.put_u32(entry_rate(*rate) << 16);
                };
                trak(o, AUDIO, *rate, 0, 0, |o| {
                    if info.codec == Codec::Flac {
                        // xiph isoflac.txt §3.3.1-2: `fLaC` holds `dfLa`,
                        // a version 0 full box of FLAC metadata blocks:
                        // STREAMINFO only, flagged as the last.
                        bx(o, b"fLaC", |o| {
                            entry(o);
                            fbx(o, b"dfLa", 0, 0, |o| {
                                o.put_u8(0x80);
                                o.put_uint(info.config.len() as u64, 3);
                                o.put_slice(&info.config);
                            });
                        });
                    } else {
                        bx(o, b"mp4a", |o| {
                            entry(o);
                            esds(o, &info.config);
                        });
                    }
                });
            }
            bx(o, b"mvex", |o| {
                for (id, present) in [(VIDEO, self.video.is_some()), (AUDIO, self.audio.is_some())]
                {
                    if present {
                        fbx(o, b"trex", 0, 0, |o| {
                            o.put_u32(id);
                            o.put_u32(1); // sample description index
                            o.put_u32(0);
                            o.put_u32(0);
                            o.put_u32(0);
                        });
                    }
                }
            });
        });
        o.freeze()
    }

    /// One media segment of `frames` (in decode order); `end_dts` is where
    /// the next segment starts, for the last video sample's duration.
    ///
    /// Audio is timed by its frame count, not by the cut: every AAC frame
    /// lasts 1024 samples, and each fragment's audio starts where the last
    /// one's ended (unless the source jumped). Ending the last audio frame
    /// at the video cut left gaps a browser reads as a discontinuity, and
    /// with audio and video in one SourceBuffer it then drops the video up
    /// to the next keyframe (seen in hls.js on Chromium).
    pub fn fragment(&mut self, sequence: u32, frames: &[Frame], end_dts: i64) -> Bytes {
        self.fragment_parts(sequence, frames, end_dts)
            .concat()
            .into()
    }

    /// As [`Tracks::fragment`], in pieces: the `moof` and `mdat` header
    /// built here, then the frames' payloads as they are (shared, not
    /// copied), for a writer that sends pieces (progressive MP4).
    pub fn fragment_parts(&mut self, sequence: u32, frames: &[Frame], end_dts: i64) -> Vec<Bytes> {
        let per_track: Vec<(u32, Vec<&Frame>)> = [
            (
                VIDEO,
                self.video.is_some(),
                self.video.as_ref().map_or(Codec::H264, |v| v.0),
            ),
            (
                AUDIO,
                self.audio.is_some(),
                self.audio.as_ref().map_or(Codec::Aac, |a| a.0.codec),
            ),
        ]
        .into_iter()
        .filter(|(_, present, _)| *present)
        .map(|(id, _, codec)| (id, frames.iter().filter(|f| f.codec == codec).collect()))
        .filter(|(_, v): &(u32, Vec<&Frame>)| !v.is_empty())
        .collect();
        let mut o = BytesMut::with_capacity(
            frames.iter().map(|f| f.payload.len() + 16).sum::<usize>() + 1024,
        );
        let moof_start = o.len();
        // Each trun's data_offset is patched once the moof size is known.
        let mut offsets = Vec::new();
        let mut audio_next = self.audio_next;
        bx(&mut o, b"moof", |o| {
            fbx(o, b"mfhd", 0, 0, |o| o.put_u32(sequence));
            for (id, samples) in &per_track {
                let scale = self.timescale(*id);
                let conv = |t: i64| (t as i128 * scale as i128 / TIMESCALE as i128) as i64;
                let mut start = conv(samples[0].dts).max(0) as u64;
                if *id == AUDIO {
                    // Continue the previous fragment's audio unless the
                    // source moved by more than half a frame.
                    let half = audio_duration(samples[0]) / 2;
                    if let Some(n) = audio_next.filter(|n| n.abs_diff(start) <= half) {
                        start = n;
                    }
                    let total: u64 = samples.iter().map(|f| audio_duration(f)).sum();
                    audio_next = Some(start + total);
                }
                bx(o, b"traf", |o| {
                    // default-base-is-moof: offsets count from the moof.
                    fbx(o, b"tfhd", 0, 0x02_0000, |o| o.put_u32(*id));
                    fbx(o, b"tfdt", 1, 0, |o| o.put_u64(start));
                    // data-offset, duration, size, flags, composition offset.
                    fbx(o, b"trun", 1, 0x000f01, |o| {
                        o.put_u32(samples.len() as u32);
                        offsets.push(o.len());
                        o.put_i32(0);
                        for (i, f) in samples.iter().enumerate() {
                            let next = samples.get(i + 1).map_or(end_dts, |n| n.dts);
                            let dur = match *id {
                                AUDIO => audio_duration(f) as i64,
                                _ => (conv(next) - conv(f.dts)).max(1),
                            };
                            o.put_u32(dur as u32);
                            o.put_u32(f.payload.len() as u32);
                            // §8.8.3.1 sample flags: depends_on and the
                            // non-sync bit for everything but keyframes.
                            o.put_u32(if f.keyframe { 0x0200_0000 } else { 0x0101_0000 });
                            o.put_i32((conv(f.pts) - conv(f.dts)) as i32);
                        }
                    });
                });
            }
        });
        self.audio_next = audio_next;
        let moof_len = o.len() - moof_start;
        let mut data_at = moof_len + 8;
        for ((_, samples), at) in per_track.iter().zip(&offsets) {
            o[*at..*at + 4].copy_from_slice(&(data_at as i32).to_be_bytes());
            data_at += samples.iter().map(|f| f.payload.len()).sum::<usize>();
        }
        let payload: usize = per_track
            .iter()
            .flat_map(|(_, v)| v.iter())
            .map(|f| f.payload.len())
            .sum();
        o.put_u32((8 + payload) as u32);
        o.put_slice(b"mdat");
        let mut parts = vec![o.freeze()];
        for (_, samples) in &per_track {
            parts.extend(samples.iter().map(|f| f.payload.clone()));
        }
        parts
    }
}

/// An audio sample's duration in its track's timescale (the sample rate):
/// 1024 for AAC, the block size its header gives for FLAC (isoflac §3.3.4:
/// one FLAC frame is one sample, and their durations may vary).
fn audio_duration(f: &Frame) -> u64 {
    match f.codec {
        Codec::Flac => flac::block_size(&f.payload).map_or(AAC_FRAME, u64::from),
        _ => AAC_FRAME,
    }
}

/// The AudioSampleEntry's 16.16 sample rate field, which stops at 65535:
/// above that, the largest regular (power of two) division of the rate
/// (isoflac §3.3.1: 48000 for 96 and 192 kHz), else 65535. The codec's
/// own header has the real rate.
fn entry_rate(rate: u32) -> u32 {
    (0..8)
        .map(|p| (rate >> p, p))
        .find(|(r, p)| *r <= 65535 && (*r << p) == rate)
        .map_or(65535, |(r, _)| r)
}

/// Picture size from an SPS (H.264 §7.3.2.1.1, with cropping).
fn dimensions(sps: &[u8]) -> Option<(u32, u32)> {
    use h264_reader::nal::sps::SeqParameterSet;
    use h264_reader::rbsp::{decode_nal, BitReader};
    let rbsp = decode_nal(sps).ok()?;
    SeqParameterSet::from_bits(BitReader::new(&*rbsp))
        .ok()?
        .pixel_dimensions()
        .ok()
}

fn matrix(o: &mut BytesMut) {
    for v in [0x0001_0000u32, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000] {
        o.put_u32(v);
    }
}

fn trak(
    o: &mut BytesMut,
    id: u32,
    timescale: u32,
    w: u32,
    h: u32,
    entry: impl FnOnce(&mut BytesMut),
) {
    bx(o, b"trak", |o| {
        // flags: enabled, in movie, in preview.
        fbx(o, b"tkhd", 0, 7, |o| {
            o.put_u32(0);
            o.put_u32(0);
            o.put_u32(id);
            o.put_u32(0);
            o.put_u32(0); // duration
            o.put_bytes(0, 8);
            o.put_u16(0); // layer
            o.put_u16(0); // alternate group
            o.put_u16(if id == AUDIO { 0x0100 } else { 0 });
            o.put_u16(0);
            matrix(o);
            o.put_u32(w << 16);
            o.put_u32(h << 16);
        });
        bx(o, b"mdia", |o| {
            fbx(o, b"mdhd", 0, 0, |o| {
                o.put_u32(0);
                o.put_u32(0);
                o.put_u32(timescale);
                o.put_u32(0);
                o.put_u16(0x55c4); // language "und"
                o.put_u16(0);
            });
            fbx(o, b"hdlr", 0, 0, |o| {
                o.put_u32(0);
                o.put_slice(if id == VIDEO { b"vide" } else { b"soun" });
                o.put_bytes(0, 12);
                o.put_slice(if id == VIDEO {
                    b"VideoHandler\0"
                } else {
                    b"SoundHandler\0"
                });
            });
            bx(o, b"minf", |o| {
                if id == VIDEO {
                    fbx(o, b"vmhd", 0, 1, |o| o.put_bytes(0, 8));
                } else {
                    fbx(o, b"smhd", 0, 0, |o| o.put_u32(0));
                }
                bx(o, b"dinf", |o| {
                    fbx(o, b"dref", 0, 0, |o| {
                        o.put_u32(1);
                        fbx(o, b"url ", 0, 1, |_| {}); // self-contained
                    });
                });
                bx(o, b"stbl", |o| {
                    fbx(o, b"stsd", 0, 0, |o| {
                        o.put_u32(1);
                        entry(o);
                    });
                    for kind in [b"stts", b"stsc", b"stco"] {
                        fbx(o, kind, 0, 0, |o| o.put_u32(0));
                    }
                    fbx(o, b"stsz", 0, 0, |o| {
                        o.put_u32(0);
                        o.put_u32(0);
                    });
                });
            });
        });
    });
}

/// ISO 14496-1 §7.2.6.5 ES_Descriptor with the DecoderSpecificInfo (the
/// AudioSpecificConfig) inside, as `esds` carries it.
fn esds(o: &mut BytesMut, asc: &[u8]) {
    fbx(o, b"esds", 0, 0, |o| {
        let dsi = 2 + asc.len();
        let dcd = 2 + 13 + dsi;
        let es = 2 + 3 + dcd + 3;
        o.put_slice(&[0x03, (es - 2) as u8, 0x00, 0x01, 0x00]); // ES_ID 1
        o.put_slice(&[0x04, (dcd - 2) as u8, 0x40, 0x15]); // MPEG-4 audio, audio stream
        o.put_slice(&[0, 0, 0]); // buffer size
        o.put_u32(0); // max bitrate
        o.put_u32(0); // avg bitrate
        o.put_slice(&[0x05, asc.len() as u8]);
        o.put_slice(asc);
        o.put_slice(&[0x06, 0x01, 0x02]); // SLConfig: predefined MP4
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_and_fragment_are_well_formed_boxes() {
        // A real SPS (320x240 Baseline) so the dimensions come out.
        let sps: &[u8] = &[
            0x67, 0x42, 0xc0, 0x0d, 0xd9, 0x01, 0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00,
            0x10, 0x00, 0x00, 0x03, 0x03, 0x20, 0xf1, 0x42, 0xa4, 0x80,
        ];
        let mut rec = vec![1, 0x42, 0xc0, 0x0d, 0xff, 0xe1, 0, sps.len() as u8];
        rec.extend_from_slice(sps);
        rec.extend_from_slice(&[1, 0, 4, 0x68, 0xcb, 0x83, 0xcb]);
        let v = TrackInfo {
            codec: Codec::H264,
            config: Bytes::from(rec),
        };
        let a = TrackInfo {
            codec: Codec::Aac,
            config: Bytes::from_static(&[0x12, 0x10]),
        };
        let mut t = Tracks::new(Some(&v), Some(&a));
        assert_eq!(t.video.as_ref().map(|v| (v.2, v.3)), Some((320, 240)));
        let init = t.init();
        assert_eq!(&init[4..8], b"ftyp");
        walk(&init);
        let frames = vec![
            Frame::new(
                Codec::H264,
                90_000,
                93_600,
                true,
                Bytes::from_static(&[0, 0, 0, 2, 0x65, 1]),
            ),
            Frame::new(
                Codec::Aac,
                90_000,
                90_000,
                true,
                Bytes::from_static(&[9, 9, 9]),
            ),
            Frame::new(
                Codec::H264,
                93_600,
                93_600,
                false,
                Bytes::from_static(&[0, 0, 0, 2, 0x41, 1]),
            ),
        ];
        let seg = t.fragment(1, &frames, 97_200);
        walk(&seg);
        // The video trun's data offset points at the first sample in mdat.
        let mdat = seg.windows(4).position(|w| w == b"mdat").unwrap() + 4;
        assert_eq!(&seg[mdat..mdat + 6], &[0, 0, 0, 2, 0x65, 1]);
        let trun = seg.windows(4).position(|w| w == b"trun").unwrap();
        let off = i32::from_be_bytes(seg[trun + 12..trun + 16].try_into().unwrap()) as usize;
        assert_eq!(off, mdat);

        // The next fragment's audio starts exactly where this one's ended,
        // although the source stamped it 1 ms late (FLV has ms only).
        let next = vec![
            Frame::new(
                Codec::H264,
                97_200,
                97_200,
                true,
                Bytes::from_static(&[0, 0, 0, 2, 0x65, 1]),
            ),
            Frame::new(
                Codec::Aac,
                90_000 + 2_090,
                90_000 + 2_090,
                true,
                Bytes::from_static(&[9, 9, 9]),
            ),
        ];
        let seg = t.fragment(2, &next, 100_800);
        let tfdts: Vec<u64> = seg
            .windows(4)
            .enumerate()
            .filter(|(_, w)| *w == b"tfdt")
            .map(|(i, _)| u64::from_be_bytes(seg[i + 8..i + 16].try_into().unwrap()))
            .collect();
        assert_eq!(
            tfdts[1],
            44_100 + 1024,
            "audio continues from the previous fragment"
        );
    }

    #[test]
    fn h265_is_hvc1_with_the_record_and_the_size_from_the_sps() {
        let v = crate::media::rtp::tests::h265_info();
        let mut t = Tracks::new(Some(&v), None);
        let init = t.init();
        walk(&init);
        let at = init.windows(4).position(|w| w == b"hvc1").unwrap();
        // VisualSampleEntry: 6 reserved, index, 16 pre-defined, then size.
        assert_eq!(&init[at + 4 + 24..at + 4 + 28], &[1, 64, 0, 240]);
        let c = init.windows(4).position(|w| w == b"hvcC").unwrap();
        let len = u32::from_be_bytes(init[c - 4..c].try_into().unwrap()) as usize;
        assert_eq!(&init[c + 4..c - 4 + len], &v.config[..]);
        assert!(!init.windows(4).any(|w| w == b"avc1"));
        let f = Frame::new(
            Codec::H265,
            0,
            0,
            true,
            Bytes::from_static(&[0, 0, 0, 3, 38, 1, 5]),
        );
        let seg = t.fragment(1, &[f], 3600);
        walk(&seg);
        let mdat = seg.windows(4).position(|w| w == b"mdat").unwrap() + 4;
        assert_eq!(&seg[mdat..], &[0, 0, 0, 3, 38, 1, 5]);
    }

    #[test]
    fn flac_audio_plays_back_bit_exact_in_ffmpeg() {
        use std::process::Command;
        // G.711 A-law in 20 ms packets, then one 40 ms packet, as a camera
        // could send them, through the converter into an audio-only fMP4.
        let mut conv = flac::Converter::default();
        let info = conv
            .track(Some(TrackInfo {
                codec: Codec::Pcma,
                config: Bytes::new(),
            }))
            .unwrap();
        let mut t = Tracks::new(None, Some(&info));
        let init = t.init();
        walk(&init);
        assert!(init.windows(4).any(|w| w == b"dfLa"));
        let mut want = Vec::new();
        let mut file = init.to_vec();
        let mut ts = 0;
        for (seq, n) in [160usize, 160, 160, 320, 160].into_iter().enumerate() {
            let g711: Vec<u8> = (0..n).map(|i| (i * 7 + seq * 13) as u8).collect();
            flac::decode_g711(Codec::Pcma, &g711, &mut want);
            let mut frames = Vec::new();
            conv.frame(Frame::new(Codec::Pcma, ts, ts, true, g711.into()), |f| {
                frames.push(f)
            });
            ts += n as i64 * 90_000 / 8000;
            let seg = t.fragment(seq as u32 + 1, &frames, ts);
            walk(&seg);
            file.extend_from_slice(&seg);
        }
        // The 40 ms packet's sample lasts 320 ticks of the 8 kHz track.
        assert_eq!(t.audio_next, Some(960));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.mp4");
        std::fs::write(&path, &file).unwrap();
        let out = Command::new("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(&path)
            .args(["-f", "s16le", "-"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stderr), "");
        let got: Vec<i16> = out
            .stdout
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        assert!(
            got == want,
            "{} samples decoded, {} sent",
            got.len(),
            want.len()
        );
    }

    #[test]
    fn sample_entry_rates_stay_in_16_bits() {
        assert_eq!(entry_rate(8000), 8000);
        assert_eq!(entry_rate(44100), 44100);
        assert_eq!(entry_rate(96000), 48000);
        assert_eq!(entry_rate(192000), 48000);
        assert_eq!(entry_rate(88200), 44100);
        assert_eq!(entry_rate(70001), 65535);
    }

    /// Every box's size must add up to exactly its parent's.
    fn walk(b: &[u8]) {
        let mut at = 0;
        while at < b.len() {
            let size = u32::from_be_bytes(b[at..at + 4].try_into().unwrap()) as usize;
            assert!(
                size >= 8 && at + size <= b.len(),
                "box at {at} of size {size} in {}",
                b.len()
            );
            let kind = &b[at + 4..at + 8];
            if [
                &b"moov"[..],
                b"trak",
                b"mdia",
                b"minf",
                b"dinf",
                b"stbl",
                b"mvex",
                b"moof",
                b"traf",
            ]
            .contains(&kind)
            {
                walk(&b[at + 8..at + size]);
            }
            at += size;
        }
        assert_eq!(at, b.len());
    }
}
