//! Progressive fragmented MP4 (`GET /api/stream.mp4?src=NAME`): one init
//! segment (`ftyp` + `moov`), then a `moof` + `mdat` fragment per video
//! frame, from a keyframe on. Browsers feed it to Media Source Extensions;
//! ffplay and VLC play it as a file. It shares the fMP4 muxer with HLS
//! ([`crate::media::fmp4`]); the frames' payloads go out as they are, one
//! small `moof` per viewer and fragment, never copied.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::hub::fanout::Delivery;
use crate::media::flac::Converter;
use crate::media::fmp4::Tracks;
use crate::media::{Codec, Frame, TrackInfo, TrackKind};

/// What `stream.mp4` carries: H.264 and AAC (what every MSE takes).
pub const VIDEO: &[Codec] = &[Codec::H264];
/// AAC first, then G.711, which goes out as FLAC (`media::flac`): MSE
/// has no G.711, and Chromium, Firefox and Safari take FLAC in MP4.
pub const AUDIO: &[Codec] = &[Codec::Aac, Codec::Pcma, Codec::Pcmu];

/// One viewer's fragmenter.
#[derive(Default)]
pub struct Writer {
    chosen: [Option<TrackInfo>; 2],
    /// The tracks of the init segment sent, once sent.
    tracks: Option<(Tracks, [Option<TrackInfo>; 2])>,
    /// Frames waiting for the next video frame, whose dts ends the last
    /// video sample of this fragment.
    pending: Vec<Frame>,
    sequence: u32,
    /// G.711 to FLAC; every other track passes.
    flac: Converter,
}

/// Why a writer stops: the tracks changed in a way an MP4 cannot follow
/// (a new init segment mid-file confuses every player but MSE).
#[derive(Debug, PartialEq, Eq)]
pub struct TracksChanged;

impl Writer {
    /// Takes one delivery; appends what is ready to `out`.
    pub fn deliver(&mut self, d: Delivery, out: &mut VecDeque<Bytes>) -> Result<(), TracksChanged> {
        match d {
            Delivery::Tracks { video, audio } => {
                let audio = self.flac.track(audio);
                // Tracks going away (a publisher left, a producer restarts)
                // and coming back the same are fine; different ones end
                // the file.
                if let Some((_, sent)) = &self.tracks {
                    for (k, new) in [&video, &audio].into_iter().enumerate() {
                        if let (Some(n), Some(s)) = (new, &sent[k]) {
                            if n != s {
                                return Err(TracksChanged);
                            }
                        }
                    }
                    if sent[0].is_none() && video.is_some() {
                        return Err(TracksChanged);
                    }
                }
                self.chosen = [video, audio];
            }
            Delivery::Frame(f) => {
                // Taken out for the call, so `frame` can borrow the rest.
                let mut flac = std::mem::take(&mut self.flac);
                flac.frame(f, |f| self.frame(f, out));
                self.flac = flac;
            }
        }
        Ok(())
    }

    /// One frame (after the FLAC conversion) into the fragments.
    fn frame(&mut self, f: Frame, out: &mut VecDeque<Bytes>) {
        if self.tracks.is_none() {
            // The file starts at a video keyframe (or any audio
            // frame of an audio-only stream).
            let starts = match f.kind() {
                TrackKind::Video => f.keyframe,
                TrackKind::Audio => self.chosen[0].is_none(),
            };
            if !starts {
                return;
            }
            let t = Tracks::new(self.chosen[0].as_ref(), self.chosen[1].as_ref());
            if t.is_empty() {
                return;
            }
            out.push_back(t.init());
            self.tracks = Some((t, self.chosen.clone()));
        }
        let is_video = f.kind() == TrackKind::Video;
        let has_video = self.tracks.as_ref().is_some_and(|(_, s)| s[0].is_some());
        if is_video || !has_video {
            // This frame's dts ends the previous fragment.
            self.flush(f.dts, out);
        }
        self.pending.push(f);
    }

    fn flush(&mut self, end_dts: i64, out: &mut VecDeque<Bytes>) {
        if self.pending.is_empty() {
            return;
        }
        let Some((tracks, _)) = &mut self.tracks else {
            return;
        };
        self.sequence += 1;
        let frames = std::mem::take(&mut self.pending);
        out.extend(tracks.fragment_parts(self.sequence, &frames, end_dts));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::ms_to_ticks;

    fn video() -> TrackInfo {
        TrackInfo {
            codec: Codec::H264,
            config: Bytes::from_static(&[
                1, 66, 0xe0, 30, 0xff, 0xe1, 0, 4, 0x67, 66, 0xe0, 30, 1, 0, 2, 0x68, 0xce,
            ]),
        }
    }

    fn frame(ms: i64, key: bool) -> Frame {
        Frame::new(
            Codec::H264,
            ms_to_ticks(ms),
            ms_to_ticks(ms),
            key,
            Bytes::from_static(&[0, 0, 0, 1, 0x65]),
        )
    }

    #[test]
    fn starts_at_a_keyframe_with_an_init_and_shares_payloads() {
        let mut w = Writer::default();
        let mut out = VecDeque::new();
        w.deliver(
            Delivery::Tracks {
                video: Some(video()),
                audio: None,
            },
            &mut out,
        )
        .unwrap();
        w.deliver(Delivery::Frame(frame(0, false)), &mut out)
            .unwrap();
        assert!(out.is_empty(), "nothing before a keyframe");
        let key = frame(40, true);
        let payload = key.payload.clone();
        w.deliver(Delivery::Frame(key), &mut out).unwrap();
        assert_eq!(&out[0][4..8], b"ftyp");
        assert_eq!(out.len(), 1, "the keyframe waits for the next frame's dts");
        w.deliver(Delivery::Frame(frame(80, false)), &mut out)
            .unwrap();
        assert_eq!(&out[1][4..8], b"moof");
        assert_eq!(out[2].as_ptr(), payload.as_ptr(), "the payload was copied");
    }

    #[test]
    fn other_tracks_end_the_file_but_the_same_ones_back_do_not() {
        let mut w = Writer::default();
        let mut out = VecDeque::new();
        let tracks = |v| Delivery::Tracks {
            video: v,
            audio: None,
        };
        w.deliver(tracks(Some(video())), &mut out).unwrap();
        w.deliver(Delivery::Frame(frame(0, true)), &mut out)
            .unwrap();
        w.deliver(tracks(None), &mut out).unwrap();
        w.deliver(tracks(Some(video())), &mut out).unwrap();
        let mut other = video();
        other.config = Bytes::from_static(&[
            1, 77, 0xe0, 31, 0xff, 0xe1, 0, 4, 0x67, 77, 0xe0, 31, 1, 0, 2, 0x68, 0xce,
        ]);
        assert_eq!(w.deliver(tracks(Some(other)), &mut out), Err(TracksChanged));
    }

    #[test]
    fn g711_goes_out_as_flac() {
        let mut w = Writer::default();
        let mut out = VecDeque::new();
        w.deliver(
            Delivery::Tracks {
                video: Some(video()),
                audio: Some(TrackInfo {
                    codec: Codec::Pcmu,
                    config: Bytes::new(),
                }),
            },
            &mut out,
        )
        .unwrap();
        w.deliver(Delivery::Frame(frame(0, true)), &mut out)
            .unwrap();
        let g711 = Frame::new(Codec::Pcmu, 0, 0, true, vec![0xff; 160].into());
        w.deliver(Delivery::Frame(g711), &mut out).unwrap();
        w.deliver(Delivery::Frame(frame(40, false)), &mut out)
            .unwrap();
        let init = &out[0];
        assert!(init.windows(4).any(|b| b == b"fLaC"), "no fLaC entry");
        assert!(init.windows(4).any(|b| b == b"dfLa"), "no dfLa box");
        // moof, the video sample, then the audio sample: a FLAC frame.
        assert_eq!(&out[1][4..8], b"moof");
        assert_eq!(&out[3][..2], &[0xff, 0xf9], "not a FLAC frame");
        assert_eq!(crate::media::flac::block_size(&out[3]), Some(160));
    }
}
