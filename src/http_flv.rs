//! HTTP-FLV: a viewer's FLV byte stream (play), and go2rtc's HTTP publish
//! (an FLV request body fed to a stream).
//!
//! An output like the others: it reads the hub and speaks FLV with
//! [`crate::media::flv`], and the FLV session (which sequence headers a
//! viewer has had) is the one RTMP play uses too. The API's router mounts
//! it (`api/flv.rs`: the query, the internal readers' token, the HTTP
//! answers, and the body that drives [`Play`]: over TCP, a
//! `pump::sink::Sink` written from the producer's side).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;

use crate::hub::fanout::{Delivery, SourceId};
use crate::hub::{JoinRequest, Publisher};
use crate::media::{flv, ticks_to_ms, Frame};
use crate::pump::sink::{Encoder, Part};
use tokio::time::Instant;

/// What an HTTP-FLV viewer joins with. `internal`: one of our own
/// `ffmpeg:STREAM` readers reading its stream back (it does not keep the
/// stream alive); `exclude`: the source it must not see (itself).
pub fn join_request(peer: SocketAddr, internal: bool, exclude: Option<SourceId>) -> JoinRequest {
    JoinRequest {
        protocol: "http-flv",
        remote_addr: Some(peer),
        internal,
        exclude,
        // FLV carries AAC and G.711.
        audio: crate::hub::fanout::ANY_AUDIO,
        // H.265 as enhanced FLV (FourCC `hvc1`): mpegts.js, ffmpeg 6.1+,
        // OBS and go2rtc read it. Not for our own `ffmpeg:` readers:
        // Debian's ffmpeg 5.1 takes an ExVideoTagHeader for FLV codec
        // id 3 (Screen video), finds no audio stream either, and an
        // `ffmpeg:cam#audio=aac` of an H.265 camera would then fail.
        video: if internal {
            crate::hub::fanout::H264_VIDEO
        } else {
            crate::media::h265::H264_OR_H265
        },
    }
}

/// One viewer's FLV encoder: its deliveries in, one chunk per tag out.
/// Frame tags are the shared ones ([`flv::shared_tag`]): built once per
/// frame for all viewers, stamped with the stream clock, so a viewer
/// joining late starts at a non-zero time, as players expect of live FLV.
#[derive(Default)]
pub struct Play {
    session: flv::Session,
}

impl Play {
    /// Queues what `d` means for this viewer: the file header before its
    /// first frame, the sequence headers it has not had, then the frame.
    pub fn encode(&mut self, d: Delivery, out: &mut VecDeque<Bytes>) {
        match d {
            Delivery::Tracks { video, audio } => self.session.set_tracks(video, audio),
            Delivery::Frame(f) => {
                out.extend(self.before(&f));
                out.push_back(flv::shared_tag(&f));
            }
        }
    }

    /// What this viewer needs before `f`: the file header before its
    /// first frame, then the sequence headers it has not had.
    fn before(&mut self, f: &Frame) -> impl Iterator<Item = Bytes> {
        let before = self
            .session
            .before_frame(f.kind(), ticks_to_ms(f.dts).max(0));
        let header = before.first.then(|| self.session.file_header());
        header
            .into_iter()
            .chain(before.headers.into_iter().flatten().flatten())
    }
}

/// The same for a sink that writes from the producer's side (an HTTP-FLV
/// viewer on a TCP connection: `api/body.rs`): the frame's tag is
/// borrowed, not counted.
impl Encoder for Play {
    fn encode<'b>(
        &mut self,
        batch: &'b [Delivery],
        _now: Instant,
        _own: &mut Vec<u8>,
        parts: &mut Vec<Part<'b>>,
    ) -> usize {
        for d in batch {
            match d {
                Delivery::Tracks { video, audio } => {
                    self.session.set_tracks(video.clone(), audio.clone())
                }
                Delivery::Frame(f) => {
                    parts.extend(self.before(f).map(Part::Bytes));
                    parts.push(Part::Shared(flv::shared_tag_ref(f)));
                }
            }
        }
        0
    }
}

/// Why an HTTP publisher was let go before its body ended.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Nothing arrived for `publish.timeout`.
    #[error("no data for {} ms", .0.as_millis())]
    Silence(Duration),
    /// The request body broke off (the client's connection).
    #[error("reading the body: {0}")]
    Read(String),
    /// The body is not FLV (the error has its offset).
    #[error("stream {stream}: {error}")]
    Flv {
        stream: String,
        error: flv::FlvError,
    },
    /// Another publisher took the stream over, or this one timed out.
    #[error("stream {stream} no longer takes this publisher (taken over or timed out)")]
    TakenOver { stream: String },
}

/// Feeds an FLV body, chunk by chunk, to `publisher` of `stream` until the
/// body ends (`Ok`) or the publisher is let go: nothing for `silence`, the
/// body broken off, not FLV, or the stream taken over. Also returns how
/// many bytes of FLV were taken.
pub async fn publish<E: std::fmt::Display>(
    publisher: &Publisher,
    stream: &str,
    silence: Duration,
    mut data: impl futures_util::Stream<Item = Result<Bytes, E>> + Unpin,
) -> (Result<(), PublishError>, u64) {
    use futures_util::StreamExt;
    let mut demux = flv::Demuxer::new();
    let ended = loop {
        let next = tokio::time::timeout(silence, data.next()).await;
        let chunk = match next {
            Err(_) => break Err(PublishError::Silence(silence)),
            Ok(None) => break Ok(()),
            Ok(Some(Err(e))) => break Err(PublishError::Read(e.to_string())),
            Ok(Some(Ok(c))) => c,
        };
        demux.push(&chunk);
        let mut taken = false;
        let bad = loop {
            match demux.next_event() {
                Ok(None) => break None,
                Ok(Some(ev)) => {
                    if !publisher.queue(ev) {
                        taken = true;
                        break None;
                    }
                }
                Err(e) => break Some(e),
            }
        };
        // What one chunk of the body brought goes as one batch.
        publisher.flush();
        if let Some(error) = bad {
            break Err(PublishError::Flv {
                stream: stream.to_string(),
                error,
            });
        }
        if taken {
            break Err(PublishError::TakenOver {
                stream: stream.to_string(),
            });
        }
    };
    (ended, demux.offset())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{ms_to_ticks, Codec, Frame, TrackInfo};

    fn frame(codec: Codec, ms: i64) -> Frame {
        Frame {
            codec,
            dts: ms_to_ticks(ms),
            pts: ms_to_ticks(ms),
            keyframe: true,
            payload: Bytes::from_static(&[0, 0, 0, 2, 0x65, 0x88]),
            wire: Default::default(),
        }
    }

    #[test]
    fn a_viewer_gets_the_file_header_and_sequence_headers_once_then_the_shared_tags() {
        let mut play = Play::default();
        let mut out = VecDeque::new();
        play.encode(
            Delivery::Tracks {
                video: Some(TrackInfo {
                    codec: Codec::H264,
                    // version 1, profile 66, level 30, 1 SPS of 4 bytes, 1 PPS of 2.
                    config: Bytes::from_static(&[
                        1, 66, 0, 30, 0xff, 0xe1, 0, 4, 0x67, 66, 0, 30, 1, 0, 2, 0x68, 0xce,
                    ]),
                }),
                audio: None,
            },
            &mut out,
        );
        assert!(out.is_empty(), "tracks alone write nothing");
        let f = frame(Codec::H264, 1000);
        play.encode(Delivery::Frame(f.clone()), &mut out);
        // The file header, the AVC sequence header, then the frame.
        assert!(out.len() >= 3, "{out:?}");
        assert_eq!(&out[0][..3], b"FLV");
        // The frame's tag is the one every viewer shares, not a copy.
        let tag = flv::shared_tag(&f);
        assert_eq!(out.back().unwrap().as_ptr(), tag.as_ptr());
        out.clear();
        let g = frame(Codec::H264, 1040);
        play.encode(Delivery::Frame(g.clone()), &mut out);
        assert_eq!(out.len(), 1, "no header again");
        assert_eq!(out[0], flv::shared_tag(&g));
    }
}
