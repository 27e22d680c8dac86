//! One viewer's view of the fan-out: which of the sources' tracks it
//! plays, where it starts (a keyframe), and what it does when it falls
//! behind (skip to the next keyframe, then give up). A child of the
//! fan-out: it reads the cursor's and the counters' private parts.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{kind_idx, Cursor, Item, Next, SourceId, ViewerStats};
use crate::media::{Codec, Frame, TrackInfo, TIMESCALE};

/// Turns a [`Cursor`] into what one viewer should see: one video and one
/// audio track chosen among the sources, starting at a keyframe, skipping
/// ahead to the next keyframe after a lag.
pub struct Selector {
    /// `pub(super)`: the fan-out's tests look at the ring behind it.
    pub(super) cursor: Cursor,
    /// Sources this viewer must not see: a producer reading its own stream
    /// back (`ffmpeg:cam#audio=aac` inside `cam`) must not hear itself.
    exclude: Option<SourceId>,
    /// Video and audio codecs this viewer's output can carry, most wanted
    /// first; empty: none of that kind.
    video: &'static [Codec],
    audio: &'static [Codec],
    tracks: Vec<[Option<TrackInfo>; 2]>,
    chosen: [Option<SourceId>; 2],
    need_keyframe: bool,
    lags_in_a_row: u32,
    stats: Arc<ViewerStats>,
}

/// What a viewer's muxer gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The chosen tracks changed (appeared, switched source, new parameters).
    Tracks {
        video: Option<TrackInfo>,
        audio: Option<TrackInfo>,
    },
    Frame(Frame),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ended {
    #[error("stream stopped")]
    Stopped,
    #[error("viewer too slow: fell behind {0} times in a row")]
    TooSlow(u32),
}

/// What a viewer takes when it does not say: AAC first, then G.711.
pub const ANY_AUDIO: &[Codec] = &[Codec::Aac, Codec::Pcma, Codec::Pcmu];

/// The video every output but MJPEG carries.
pub const H264_VIDEO: &[Codec] = &[Codec::H264];

/// What outputs that carry H.265 take: H.264 first (every client decodes
/// it), then H.265.
pub const H264_OR_H265: &[Codec] = crate::media::h265::H264_OR_H265;

/// Every video codec the hub carries: what a viewer is joined with while
/// we learn which one a stream sends (`Registry::join_fitting`).
pub const ANY_VIDEO: &[Codec] = &[Codec::H264, Codec::H265, Codec::Jpeg];

/// `/api/stream.mjpeg`'s video.
pub const JPEG_VIDEO: &[Codec] = &[Codec::Jpeg];

/// A viewer further than this behind the live edge skips ahead to the
/// next keyframe (5 s, on the 90 kHz stream clock).
pub const MAX_BEHIND: i64 = 5 * TIMESCALE;

/// A viewer that lags this many times without catching up to a keyframe in
/// between is disconnected: it is only costing the ring reads.
pub const MAX_LAGS_IN_A_ROW: u32 = 4;

impl Selector {
    pub fn new(
        cursor: Cursor,
        exclude: Option<SourceId>,
        audio: &'static [Codec],
        stats: Arc<ViewerStats>,
    ) -> Selector {
        Selector {
            cursor,
            exclude,
            video: H264_VIDEO,
            audio,
            tracks: Vec::new(),
            chosen: [None, None],
            need_keyframe: true,
            lags_in_a_row: 0,
            stats,
        }
    }

    /// The video codecs this viewer takes (H.264 unless told).
    pub fn with_video(mut self, video: &'static [Codec]) -> Selector {
        self.video = video;
        self
    }

    pub fn stats(&self) -> &Arc<ViewerStats> {
        &self.stats
    }

    /// See [`Cursor::go_direct`].
    pub fn go_direct(&self, sink: Arc<dyn super::Direct>) -> super::DirectGuard {
        self.cursor.go_direct(sink)
    }

    fn chosen_info(&self, k: usize) -> Option<TrackInfo> {
        self.chosen[k]
            .and_then(|s| self.tracks.get(s as usize))
            .and_then(|t| t[k].clone())
    }

    /// Applies a track-table change and chooses again (README "Several
    /// sources"): a live publisher's tracks first; then video from the
    /// lowest source index that has it; audio in
    /// the viewer's order of codecs (by default AAC, which every player and
    /// muxer takes, before G.711), then the lowest index. So
    /// `[camera with PCMA, "ffmpeg:cam#audio=aac"]` plays the camera's
    /// video with the transcoded AAC, while an RTSP viewer asking for PCMA
    /// gets the camera's. Returns what the muxer must be told.
    fn update_tracks(
        &mut self,
        change: impl FnOnce(&mut Vec<[Option<TrackInfo>; 2]>),
    ) -> Option<Delivery> {
        let before = [self.chosen_info(0), self.chosen_info(1)];
        change(&mut self.tracks);
        let old_video = self.chosen[0];
        let preferred = self.cursor.preferred;
        for k in 0..2 {
            self.chosen[k] = self
                .tracks
                .iter()
                .enumerate()
                .filter(|(i, _)| Some(*i as SourceId) != self.exclude)
                .filter_map(|(i, t)| {
                    let info = t[k].as_ref()?;
                    let wanted = if k == 0 { self.video } else { self.audio };
                    let rank = wanted.iter().position(|c| *c == info.codec)?;
                    Some((Some(i as SourceId) != preferred, rank, i))
                })
                .min()
                .map(|(_, _, i)| i as SourceId);
        }
        if self.chosen[0] != old_video {
            self.need_keyframe = true;
        }
        let after = [self.chosen_info(0), self.chosen_info(1)];
        (after != before).then(|| {
            let [video, audio] = after;
            Delivery::Tracks { video, audio }
        })
    }

    /// The viewer's next delivery, waiting for the fan-out when nothing
    /// is ready.
    pub async fn next(&mut self) -> Result<Delivery, Ended> {
        loop {
            let n = self.cursor.next().await;
            if let Some(r) = self.take(n) {
                return r;
            }
        }
    }

    /// What is ready now, or `None`. Unlike polling [`Selector::next`]
    /// once, it never registers for a wake-up: a viewer draining what is
    /// ready would otherwise take and give back its place in the ring's
    /// waiter list (one lock that every viewer of the stream shares) each
    /// time it finds the ring empty.
    pub fn try_next(&mut self) -> Option<Result<Delivery, Ended>> {
        loop {
            let n = self.cursor.try_next()?;
            if let Some(r) = self.take(n) {
                return Some(r);
            }
        }
    }

    /// One item from the cursor: what it gives the viewer, or `None` for
    /// nothing (an item of another source, a frame skipped while waiting
    /// for a keyframe).
    fn take(&mut self, n: Next) -> Option<Result<Delivery, Ended>> {
        let item = match n {
            Next::Item(i) => i,
            Next::Closed => return Some(Err(Ended::Stopped)),
            Next::Lagged(n) => {
                self.stats.drops.fetch_add(n, Ordering::Relaxed);
                self.lags_in_a_row += 1;
                if self.lags_in_a_row >= MAX_LAGS_IN_A_ROW {
                    return Some(Err(Ended::TooSlow(self.lags_in_a_row)));
                }
                // Skip ahead: nothing until the next keyframe.
                self.need_keyframe = true;
                return None;
            }
        };
        match item {
            Item::Eos => Some(Err(Ended::Stopped)),
            Item::Track { source, info } => {
                let change = |t: &mut Vec<[Option<TrackInfo>; 2]>| {
                    let i = source as usize;
                    if t.len() <= i {
                        t.resize(i + 1, [None, None]);
                    }
                    let k = kind_idx(info.kind());
                    t[i][k] = Some(info);
                };
                self.update_tracks(change).map(Ok)
            }
            Item::SourceGone { source } => {
                let change = |t: &mut Vec<[Option<TrackInfo>; 2]>| {
                    if let Some(t) = t.get_mut(source as usize) {
                        *t = [None, None];
                    }
                };
                self.update_tracks(change).map(Ok)
            }
            Item::Frame { source, frame } => {
                let k = kind_idx(frame.kind());
                if self.chosen[k] != Some(source) {
                    return None;
                }
                let behind = self.cursor.behind(frame.dts);
                if behind > MAX_BEHIND && !self.need_keyframe {
                    // Too far behind the live edge (a slow socket): skip
                    // ahead as after a lag, and count it.
                    self.stats.drops.fetch_add(1, Ordering::Relaxed);
                    self.lags_in_a_row += 1;
                    if self.lags_in_a_row >= MAX_LAGS_IN_A_ROW {
                        return Some(Err(Ended::TooSlow(self.lags_in_a_row)));
                    }
                    self.need_keyframe = true;
                    return None;
                }
                if self.need_keyframe {
                    // With video, a viewer starts (and restarts after a lag)
                    // on a video keyframe; audio alone starts anywhere.
                    let starts = self.chosen[0].is_none() || (k == 0 && frame.keyframe);
                    if !starts {
                        // Waiting for the first picture is not a drop;
                        // skipping ahead after a lag is.
                        if self.lags_in_a_row > 0 {
                            self.stats.drops.fetch_add(1, Ordering::Relaxed);
                        }
                        return None;
                    }
                    self.need_keyframe = false;
                    // Caught up only if this keyframe is near the edge.
                    if behind <= MAX_BEHIND {
                        self.lags_in_a_row = 0;
                    }
                }
                self.stats
                    .arrived
                    .store(self.cursor.sent_at, Ordering::Relaxed);
                Some(Ok(Delivery::Frame(frame)))
            }
        }
    }
}
