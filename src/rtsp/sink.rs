//! A playing session's media path: the viewer, its tracks' RTP senders,
//! and the writes. The fan-out hands each batch to it in the producer's
//! task ([`Direct`]): it takes what the viewer has ready, makes the RTP
//! and interleave headers, and writes them with the shared payloads in one
//! non-blocking write. With 500 viewers, a frame is 500 such writes from
//! one task instead of 500 task wake-ups, each with its own poll of the
//! connection, registration in the ring's waiter list and scheduling
//! (issue 17: that was most of the user time per write).
//!
//! The connection's task writes only what the socket did not take: the
//! rest of a write (copied), then what piled up in the ring meanwhile,
//! within [`crate::net::WRITE_STALL`]. While it does, offers leave the
//! viewer's batches in the ring, so the order on the wire is the ring's.
//! Replies to requests during play go the same way, after what is
//! pending, so they never cut an interleaved packet.
//!
//! One `std::sync::Mutex` per session guards it; it is held for the
//! non-blocking work only (taking from the ring, making headers, one
//! `writev`), never across an `.await`.

use std::io::{self, IoSlice};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use bytes::BufMut;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::conn::ConnError;
use super::transport::{send_udp, Transport};
use super::SR_INTERVAL;
use crate::hub::fanout::{Delivery, Direct, Ended};
use crate::media::rtp::{self, Chunk, Sender, TrackParams};
use crate::media::{Codec, Frame, TrackInfo, TrackKind};
use crate::pump::{Pump, MAX_BATCH};

/// Payload bytes taken into one write: about 190 RTP packets, so a write's
/// slices (two per packet) stay under `writev`'s 1024 (IOV_MAX); a bigger
/// write would be cut there, and the rest copied for the task.
const MAX_WRITE: usize = 256 << 10;

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

/// Why the media path stopped: the connection ends with it.
enum End {
    Viewer(Ended),
    Write(io::Error),
}

impl From<End> for ConnError {
    fn from(e: End) -> ConnError {
        match e {
            End::Viewer(e) => ConnError::ViewerEnded(e),
            End::Write(e) => ConnError::Write(e),
        }
    }
}

pub(super) struct Media {
    /// For log lines.
    stream: String,
    session: String,
    /// The viewer; the deliveries DESCRIBE took to learn the tracks are
    /// set aside in it, to be sent after PLAY.
    pub(super) pump: Pump,
    pub(super) tracks: Vec<Out>,
    /// Between PLAY and PAUSE (or the session's end): media goes out.
    pub(super) playing: bool,
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
    /// Bytes the socket did not take, in order: the connection's task
    /// writes them before anything else.
    pending: Vec<u8>,
    /// The connection's task is writing: offers leave the viewer's
    /// batches in the ring for it to take in order.
    writing: bool,
    end: Option<End>,
}

/// A session's media, shared by its connection's task and the fan-out's
/// offers.
pub(super) struct Sink {
    media: Mutex<Media>,
    /// Tells the connection's task that there is something to write (the
    /// rest of a write, or the viewer's end).
    pub(super) wake: Notify,
    sock: Arc<TcpStream>,
}

impl Sink {
    pub(super) fn new(
        stream: &str,
        session: &str,
        pump: Pump,
        tracks: Vec<Out>,
        sock: Arc<TcpStream>,
    ) -> Sink {
        Sink {
            media: Mutex::new(Media {
                stream: stream.into(),
                session: session.into(),
                pump,
                tracks,
                playing: false,
                first_pts: None,
                wall_ref: None,
                next_report: Instant::now() + SR_INTERVAL,
                pending: Vec::new(),
                writing: false,
                end: None,
            }),
            wake: Notify::new(),
            sock,
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Media> {
        self.media.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connection task's side: writes what is pending (within the
    /// stall bound), then takes what the ring holds for the viewer until
    /// nothing is ready, when the offers take over again. An end of the
    /// viewer or a failed write comes back as the connection's error,
    /// after what was taken before it is written.
    pub(super) async fn flush(&self) -> Result<(), ConnError> {
        loop {
            let out = {
                let mut m = self.lock();
                if m.pending.is_empty() {
                    if m.playing {
                        m.drain(&self.sock, Instant::now());
                    }
                    if m.pending.is_empty() {
                        if let Some(e) = m.end.take() {
                            return Err(e.into());
                        }
                        // A batch sent from here on is offered, and the
                        // offer waits for this lock: none is missed.
                        m.writing = false;
                        return Ok(());
                    }
                }
                m.writing = true;
                std::mem::take(&mut m.pending)
            };
            crate::net::write_all_within(&self.sock, &mut [IoSlice::new(&out)])
                .await
                .map_err(ConnError::Write)?;
            self.lock().pump.delivered();
        }
    }

    /// Writes `bytes` (a reply) after whatever is pending, then catches up.
    pub(super) async fn reply(&self, bytes: &[u8]) -> Result<(), ConnError> {
        {
            let mut m = self.lock();
            m.pending.extend_from_slice(bytes);
            m.writing = true;
        }
        self.flush().await
    }
}

impl Direct for Sink {
    fn offer(&self, now: Instant) {
        let mut m = self.lock();
        if !m.playing || m.writing || m.end.is_some() {
            return;
        }
        m.drain(&self.sock, now);
        if !m.pending.is_empty() || m.end.is_some() {
            m.writing = true;
            drop(m);
            self.wake.notify_one();
        }
    }
}

impl Media {
    /// Sends what the viewer has ready, write by write, until nothing is
    /// ready, the socket is full (the rest is kept in `pending`), or the
    /// viewer ends. Never waits.
    fn drain(&mut self, sock: &TcpStream, now: Instant) {
        let mut batch: Vec<Delivery> = Vec::new();
        while self.end.is_none() && self.pending.is_empty() {
            let mut bytes = 0;
            while batch.len() < MAX_BATCH && bytes < MAX_WRITE {
                match self.pump.viewer_mut().try_next() {
                    Some(Ok(d)) => {
                        if let Delivery::Frame(f) = &d {
                            bytes += f.payload.len();
                        }
                        batch.push(d);
                    }
                    // What was taken before the end still goes out.
                    Some(Err(e)) => {
                        self.end = Some(End::Viewer(e));
                        break;
                    }
                    None => break,
                }
            }
            if batch.is_empty() {
                return;
            }
            self.send(sock, &batch, now);
            batch.clear();
        }
    }

    /// One batch as one write (its UDP packets go one by one).
    fn send(&mut self, sock: &TcpStream, batch: &[Delivery], now: Instant) {
        // Per viewer, only the RTP and interleave headers are made here:
        // the payloads are the frame's, packetized once for every viewer
        // (`Wire`) and borrowed, not cloned. A clone per packet was an
        // atomic increment and decrement of the payload's one shared
        // counter, for every viewer.
        let mut out: Vec<u8> = Vec::with_capacity(1024);
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
            self.reports(&mut out);
            if now >= self.next_report {
                self.next_report = now + SR_INTERVAL;
            }
        }
        let reports = out.len();
        // Where in `out` each TCP packet's headers are, and its body.
        let mut packets: Vec<(usize, usize, &[u8])> = Vec::new();
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
                        let mut head = [0u8; 16];
                        head[..4].copy_from_slice(&[b'$', *rtp, len[0], len[1]]);
                        head[4..].copy_from_slice(&h);
                        let at = out.len();
                        out.extend_from_slice(&head);
                        out.extend_from_slice(&c.prefix);
                        packets.push((at, 16 + c.prefix.len(), &c.body));
                    }
                    Some(Transport::Udp { rtp, to_rtp, .. }) => {
                        send_udp(rtp, *to_rtp, &[&h, &c.prefix, &c.body]);
                        udp += h.len() + c.len();
                    }
                    None => {}
                }
            }
        }
        let mut slices: Vec<IoSlice> = Vec::with_capacity(1 + packets.len() * 2);
        if reports > 0 {
            slices.push(IoSlice::new(&out[..reports]));
        }
        for (at, len, body) in &packets {
            slices.push(IoSlice::new(&out[*at..*at + *len]));
            slices.push(IoSlice::new(body));
        }
        let tcp: usize = slices.iter().map(|s| s.len()).sum();
        self.pump.sent(udp + tcp);
        let mut rest = &mut slices[..];
        if !rest.is_empty() {
            match sock.try_write_vectored(rest) {
                Ok(n) => IoSlice::advance_slices(&mut rest, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    self.end = Some(End::Write(e));
                    return;
                }
            }
        }
        if rest.is_empty() {
            // The batch's delay (`/api/metrics`) ends with its last packet.
            self.pump.delivered();
        } else {
            // The socket is full: the rest is the task's, copied (the
            // slow path; the borrowed payloads cannot outlive the batch).
            for s in rest.iter() {
                self.pending.extend_from_slice(s);
            }
        }
    }

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
