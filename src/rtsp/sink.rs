//! A playing session's media path: the RTP encoder of a
//! [`crate::pump::sink::Sink`], which the fan-out offers each batch in the
//! producer's task. Per viewer, only the RTP and interleave headers are
//! made here; the payloads are the frame's, packetized once for every
//! viewer (`Wire`) and borrowed, not cloned (a clone per packet was an
//! atomic increment and decrement of the payload's one shared counter,
//! for every viewer). UDP tracks are sent from here, packet by packet; a
//! full UDP buffer drops the packet, as UDP would.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::BufMut;
use tokio::time::Instant;

use super::conn::ConnError;
use super::transport::{send_udp, Transport};
use super::SR_INTERVAL;
use crate::hub::fanout::Delivery;
use crate::media::rtp::{self, Chunk, Sender, TrackParams};
use crate::media::{Codec, Frame, TrackInfo, TrackKind};
use crate::pump::sink::{Encoder, End, Part};

/// A session's sink.
pub(super) type Sink = crate::pump::sink::Sink<Media>;

/// One track of a session.
pub(super) struct Out {
    pub(super) kind: TrackKind,
    pub(super) codec: Codec,
    pub(super) params: TrackParams,
    pub(super) sender: Sender,
    pub(super) transport: Option<Transport>,
    /// A sender report went out since this track's first packet.
    pub(super) reported: bool,
}

impl From<End> for ConnError {
    fn from(e: End) -> ConnError {
        match e {
            End::Viewer(e) => ConnError::ViewerEnded(e),
            End::Write(e) => ConnError::Write(e),
        }
    }
}

/// A session's RTP encoder: its tracks and their senders.
pub(super) struct Media {
    /// For log lines.
    stream: String,
    session: String,
    pub(super) tracks: Vec<Out>,
    /// The pts that maps to rtptime in RTP-Info: the first frame sent.
    pub(super) first_pts: Option<i64>,
    /// Wall time at PLAY, paired with `first_pts`: every track's sender
    /// reports map the stream clock to NTP through this one pair, so the
    /// player aligns the tracks exactly as the stream clock does (RFC 3550
    /// §6.4.1), however bursty each track's packets were.
    pub(super) wall_ref: Option<(SystemTime, i64)>,
    /// When the next RTCP sender reports are due (RFC 3550 §6.2: an
    /// active sender reports periodically; with no media there is nothing
    /// to map, so they go with the media, checked once per batch).
    next_report: Instant,
}

impl Media {
    pub(super) fn new(stream: &str, session: &str, tracks: Vec<Out>) -> Media {
        Media {
            stream: stream.into(),
            session: session.into(),
            tracks,
            first_pts: None,
            wall_ref: None,
            next_report: Instant::now() + SR_INTERVAL,
        }
    }
}

impl Encoder for Media {
    fn encode<'b>(
        &mut self,
        batch: &'b [Delivery],
        now: Instant,
        own: &mut Vec<u8>,
        parts: &mut Vec<Part<'b>>,
    ) -> usize {
        // Sender reports before the first packets: a player that gets
        // media first can only guess how the tracks line up, and re-bases
        // its timestamps when the reports come. Then every SR_INTERVAL,
        // with the media.
        if now >= self.next_report
            || self
                .tracks
                .iter()
                .any(|t| t.transport.is_some() && !t.reported)
        {
            self.reports(own);
            if now >= self.next_report {
                self.next_report = now + SR_INTERVAL;
            }
            if !own.is_empty() {
                parts.push(Part::Own(0..own.len()));
            }
        }
        let mut udp = 0;
        for d in batch {
            let f = match d {
                Delivery::Tracks { video, audio } => {
                    self.update_tracks([video.clone(), audio.clone()]);
                    continue;
                }
                Delivery::Frame(f) => f,
            };
            let Some(t) = self
                .tracks
                .iter_mut()
                .find(|t| t.codec == f.codec && t.transport.is_some())
            else {
                continue;
            };
            let rtp_time = t.params.rtp_time(f.pts);
            for c in chunks(f, &t.params).iter() {
                let h = t.sender.header(c, rtp_time, f.pts);
                match &t.transport {
                    Some(Transport::Tcp { rtp, .. }) => {
                        // RFC 2326 §10.12: '$', channel, length, then the
                        // packet. With the RTP header and the 0 to 4 byte
                        // prefix, one copy beats iovecs of their own.
                        let len = ((12 + c.len()) as u16).to_be_bytes();
                        let at = own.len();
                        own.extend_from_slice(&[b'$', *rtp, len[0], len[1]]);
                        own.extend_from_slice(&h);
                        own.extend_from_slice(&c.prefix);
                        parts.push(Part::Own(at..own.len()));
                        parts.push(Part::Shared(&c.body));
                    }
                    Some(Transport::Udp { rtp, to_rtp, .. }) => {
                        send_udp(rtp, *to_rtp, &[&h, &c.prefix, &c.body]);
                        udp += h.len() + c.len();
                    }
                    None => {}
                }
            }
        }
        udp
    }
}

impl Media {
    /// RTCP sender reports of every track (RFC 3550 §6.4.1): interleaved
    /// ones into `tcp`, UDP ones sent at once.
    fn reports(&mut self, tcp: &mut Vec<u8>) {
        let wall_ref = self.wall_ref;
        for t in &mut self.tracks {
            // The NTP time of the track's last packet, by the stream clock.
            let ntp = match (wall_ref, t.sender.last) {
                (Some((wall, ref_pts)), Some((_, pts))) => {
                    let d = pts - ref_pts;
                    let span = Duration::from_micros(
                        (d.unsigned_abs() as u128 * 1_000_000 / crate::media::TIMESCALE as u128)
                            as u64,
                    );
                    if d >= 0 {
                        wall + span
                    } else {
                        wall - span
                    }
                }
                _ => SystemTime::now(),
            };
            let sr = match (t.sender.last, wall_ref) {
                (Some(_), _) => t.sender.sender_report(ntp),
                // Nothing sent yet: report where the first frame will be.
                (None, Some((wall, ref_pts))) => Some(t.sender.sender_report_at(
                    t.sender.ts_base.wrapping_add(t.params.rtp_time(ref_pts)),
                    wall,
                )),
                (None, None) => None,
            };
            let Some(sr) = sr else {
                continue;
            };
            t.reported = true;
            match &t.transport {
                Some(Transport::Tcp { rtcp, .. }) => {
                    tcp.put_u8(b'$');
                    tcp.put_u8(*rtcp);
                    tcp.put_u16(sr.len() as u16);
                    tcp.put_slice(&sr);
                }
                Some(Transport::Udp { rtcp, to_rtcp, .. }) => send_udp(rtcp, *to_rtcp, &[&sr]),
                None => {}
            }
        }
    }

    /// New parameters (SPS/PPS, AAC config) for tracks the session already
    /// has; the SDP cannot change mid-session, so a codec change is dropped.
    fn update_tracks(&mut self, infos: [Option<TrackInfo>; 2]) {
        for info in infos.into_iter().flatten() {
            let Some(t) = self.tracks.iter_mut().find(|t| t.kind == info.kind()) else {
                continue;
            };
            if t.codec != info.codec {
                tracing::warn!(stream = %self.stream, session = %self.session, from = ?t.codec, to = ?info.codec, "codec changed mid-session; that track stops");
                continue;
            }
            if let Ok(p) = TrackParams::new(&info) {
                t.params = p;
            }
        }
    }
}

/// A frame's RTP payloads, made once for all viewers (`Wire`).
fn chunks<'f>(f: &'f Frame, params: &TrackParams) -> &'f [Chunk] {
    f.wire.rtp(|| match rtp::packetize(f, params) {
        Ok(c) => c.into(),
        Err(e) => {
            tracing::warn!(codec = ?f.codec, error = %e, "frame cannot be sent over RTP; dropped");
            Arc::from([])
        }
    })
}

#[cfg(test)]
mod tests;
