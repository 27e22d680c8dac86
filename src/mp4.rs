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
use crate::media::{Frame, TrackInfo, TrackKind, TIMESCALE};

/// What `stream.mp4` carries: what fMP4 for MSE carries.
pub use crate::media::fmp4::{MSE_AUDIO as AUDIO, MSE_VIDEO as VIDEO};

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
    /// Frames from the first keyframe on, held while a video stream's
    /// audio may still be announced (see [`AUDIO_WAIT`]).
    held: Vec<Frame>,
}

/// How long (in stream time) the file's start waits for an audio track
/// when there is video and no audio yet. G.711 has no FLV sequence header,
/// so its track is announced with its first frame, often after the first
/// keyframe: starting without it would leave the whole file silent (an MP4
/// cannot add a track later). A viewer joining a running stream gets the
/// GOP cache at once, so mostly this costs a cold video-only stream up to
/// this much; audio ends it as soon as it appears.
const AUDIO_WAIT: i64 = TIMESCALE;

/// And at most this many frames (in case the timestamps do not move).
const MAX_HELD: usize = 200;

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
                if self.tracks.is_none() && video != self.chosen[0] {
                    // Held frames of another video cannot start this file.
                    self.held.clear();
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
            if self.held.is_empty() {
                // The file starts at a video keyframe (or any audio
                // frame of an audio-only stream).
                let starts = match f.kind() {
                    TrackKind::Video => f.keyframe,
                    TrackKind::Audio => self.chosen[0].is_none(),
                };
                if !starts {
                    return;
                }
            }
            if self.chosen[0].is_some() && self.chosen[1].is_none() {
                let first = self.held.first().map_or(f.dts, |h| h.dts);
                if f.dts - first < AUDIO_WAIT && self.held.len() < MAX_HELD {
                    self.held.push(f);
                    return;
                }
            }
            let t = Tracks::new(self.chosen[0].as_ref(), self.chosen[1].as_ref());
            if t.is_empty() {
                self.held.clear();
                return;
            }
            out.push_back(t.init());
            self.tracks = Some((t, self.chosen.clone()));
            for h in std::mem::take(&mut self.held) {
                self.fragment(h, out);
            }
        }
        self.fragment(f, out);
    }

    /// A frame into the fragment being gathered (the init is out).
    fn fragment(&mut self, f: Frame, out: &mut VecDeque<Bytes>) {
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
    use crate::media::{ms_to_ticks, Codec};

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
                // With audio known, nothing waits for it.
                audio: Some(TrackInfo {
                    codec: Codec::Aac,
                    config: Bytes::from_static(&[0x12, 0x10]),
                }),
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
            audio: Some(TrackInfo {
                codec: Codec::Aac,
                config: Bytes::from_static(&[0x12, 0x10]),
            }),
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

    #[test]
    fn the_start_waits_a_moment_for_g711_announced_after_the_keyframe() {
        let mut w = Writer::default();
        let mut out = VecDeque::new();
        let g711 = TrackInfo {
            codec: Codec::Pcma,
            config: Bytes::new(),
        };
        let tracks = |audio| Delivery::Tracks {
            video: Some(video()),
            audio,
        };
        w.deliver(tracks(None), &mut out).unwrap();
        w.deliver(Delivery::Frame(frame(0, true)), &mut out)
            .unwrap();
        w.deliver(Delivery::Frame(frame(40, false)), &mut out)
            .unwrap();
        assert!(out.is_empty(), "the start waits for audio");
        // As FLV's G.711 comes: the track with its first frame.
        w.deliver(tracks(Some(g711)), &mut out).unwrap();
        let a = Frame::new(
            Codec::Pcma,
            ms_to_ticks(50),
            ms_to_ticks(50),
            true,
            vec![0xd5; 160].into(),
        );
        w.deliver(Delivery::Frame(a), &mut out).unwrap();
        assert!(out[0].windows(4).any(|b| b == b"fLaC"), "no audio track");
        assert_eq!(out.len(), 3, "the held keyframe went out: {out:?}");

        // Without audio, the file starts after a second of stream time.
        let mut w = Writer::default();
        let mut out = VecDeque::new();
        w.deliver(tracks(None), &mut out).unwrap();
        for ms in (0..1000).step_by(40) {
            w.deliver(Delivery::Frame(frame(ms, ms == 0)), &mut out)
                .unwrap();
        }
        assert!(out.is_empty());
        w.deliver(Delivery::Frame(frame(1000, false)), &mut out)
            .unwrap();
        assert_eq!(&out[0][4..8], b"ftyp");
        assert!(!out[0].windows(4).any(|b| b == b"mp4a" || b == b"fLaC"));
        assert_eq!(out.len(), 1 + 2 * 25, "every held frame went out");
    }
}
