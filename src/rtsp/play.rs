//! Playing (RFC 2326 §10.2 DESCRIBE, §10.4 SETUP, §10.5 PLAY): a
//! connection's viewer, its tracks, and the media path that sends them as
//! RTP with RTCP sender reports.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::BufMut;
use rtsp_types::headers::{Transport as RtspTransport, TransportMode, Transports};
use rtsp_types::Request;
use tokio::time::Instant;

use super::conn::{Conn, ConnError, Reply};
use super::target::{audio_wanted, target, video_wanted, wanted, with_default_query, Target};
use super::transport::{negotiate, send_udp, watch_rtcp, AbortOnDrop, Lower, Transport};
use super::{sdp, AUDIO_WAIT, SESSION_TIMEOUT, SR_INTERVAL, TRACKS_WAIT};
use crate::hub::fanout::{Delivery, Ended};
use crate::hub::JoinRequest;
use crate::media::rtp::{self, Chunk, Sender, TrackParams};
use crate::media::{Codec, Frame, TrackInfo, TrackKind};
use crate::pump::Pump;

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

pub(super) struct Session {
    pub(super) id: String,
    pub(super) stream: String,
    /// The viewer; the deliveries DESCRIBE took to learn the tracks are
    /// set aside in it, to be sent after PLAY.
    pub(super) pump: Pump,
    /// The batch being sent (kept for its allocation).
    pub(super) batch: Vec<Delivery>,
    pub(super) tracks: Vec<Out>,
    pub(super) playing: bool,
    /// The pts that maps to rtptime in RTP-Info: the first frame sent.
    pub(super) first_pts: Option<i64>,
    /// Wall time at PLAY, paired with `first_pts`: every track's sender
    /// reports map the stream clock to NTP through this one pair, so the
    /// player aligns the tracks exactly as the stream clock does (RFC 3550
    /// §6.4.1), however bursty each track's packets were.
    pub(super) wall_ref: Option<(SystemTime, i64)>,
    /// Last sign of life of a UDP client (ms since the connection opened).
    pub(super) last_seen: Arc<AtomicU64>,
    /// When the next RTCP sender reports are due (RFC 3550 §6.2: an
    /// active sender reports periodically; with no media there is nothing
    /// to map, so they go with the media, checked once per batch).
    pub(super) next_report: Instant,
}

impl Conn {
    /// Joins `t.stream` and learns its tracks: the deliveries up to the
    /// first frame are kept to be sent after PLAY.
    async fn open_session(&mut self, t: &Target) -> Result<(), Reply> {
        let defaulted;
        let t = match &self.registry.publish_config().rtsp_default_query {
            Some(q) if t.video.is_none() && t.audio.is_none() => {
                defaulted = with_default_query(t, q);
                &defaulted
            }
            _ => t,
        };
        let stream = self
            .registry
            .get(&t.stream)
            .ok_or_else(|| {
                Reply::error(404, "Not Found", format!("stream not found: {}", t.stream))
            })?
            .clone();
        // Only a stream reading itself back is internal (it never keeps
        // itself up); another stream's transcoder is an ordinary viewer.
        let internal = self.peer.ip().is_loopback()
            && t.read_token.as_deref().is_some_and(|tok| {
                self.registry
                    .deps()
                    .internal_tokens
                    .reads_itself(tok, &t.stream)
            });
        // `?video=h264` of an H.265 camera: the stream's shared H.264
        // transcode, as go2rtc's ffmpeg source would make it.
        let mut viewer = self
            .registry
            .join_fitting(
                &stream,
                JoinRequest {
                    protocol: "rtsp",
                    remote_addr: Some(self.peer),
                    internal,
                    exclude: if internal { t.exclude } else { None },
                    audio: audio_wanted(t),
                    video: if t.video.is_some() || t.audio.is_none() {
                        video_wanted(t)
                    } else {
                        &[]
                    },
                },
            )
            .await?;
        let mut pending = VecDeque::new();
        let mut tracks: [Option<TrackInfo>; 2] = [None, None];
        let deadline = Instant::now() + TRACKS_WAIT;
        // A camera's G.711 has no sequence header: its track is known only
        // with its first sample, which may come after the first picture.
        // A viewer that wants audio waits a little for it (the frames are
        // kept for after PLAY), so the SDP has it.
        let wants_audio = !audio_wanted(t).is_empty();
        let mut audio_until: Option<Instant> = None;
        loop {
            let until = audio_until.map_or(deadline, |a| a.min(deadline));
            match tokio::time::timeout_at(until, viewer.next()).await {
                Ok(Ok(Delivery::Tracks { video, audio })) => {
                    tracks = [video.clone(), audio.clone()];
                    if audio_until.is_some() {
                        pending.push_back(Delivery::Tracks { video, audio });
                        if tracks[1].is_some() {
                            break;
                        }
                    }
                }
                Ok(Ok(d)) => {
                    pending.push_back(d);
                    if !wants_audio || tracks[1].is_some() {
                        break;
                    }
                    audio_until.get_or_insert(Instant::now() + AUDIO_WAIT);
                }
                Ok(Err(e)) => {
                    return Err(Reply::error(
                        503,
                        "Service Unavailable",
                        format!("stream {}: {e}", t.stream),
                    ))
                }
                Err(_) => break,
            }
        }
        let mut out = Vec::new();
        for info in tracks.into_iter().flatten() {
            if !wanted(t, info.codec) {
                continue;
            }
            let params = TrackParams::new(&info).map_err(|e| {
                Reply::error(
                    503,
                    "Service Unavailable",
                    format!("stream {}: {e}", t.stream),
                )
            })?;
            out.push(Out {
                kind: info.kind(),
                codec: info.codec,
                sender: Sender::new(params.payload_type()),
                params,
                transport: None,
                reported: false,
            });
        }
        if out.is_empty() {
            return Err(Reply::error(
                404,
                "Not Found",
                format!("stream {} has no track matching the request", t.stream),
            ));
        }
        for d in pending {
            viewer.set_aside(d);
        }
        self.session = Some(Session {
            id: format!("{:016X}", rand::random::<u64>()),
            stream: t.stream.clone(),
            pump: Pump::new(viewer),
            batch: Vec::new(),
            tracks: out,
            playing: false,
            first_pts: None,
            wall_ref: None,
            last_seen: Arc::new(AtomicU64::new(self.now_ms())),
            next_report: Instant::now() + SR_INTERVAL,
        });
        Ok(())
    }

    pub(super) async fn describe(&mut self, req: &Request<Vec<u8>>) -> Reply {
        let Some(url) = req.request_uri() else {
            return Reply::error(400, "Bad Request", "DESCRIBE needs a URL");
        };
        let Some(t) = target(url) else {
            return Reply::error(404, "Not Found", "no stream in the URL");
        };
        // A new DESCRIBE starts over (and leaves any earlier stream).
        self.session = None;
        if let Err(r) = self.open_session(&t).await {
            return r;
        }
        let Some(s) = &self.session else {
            return Reply::error(500, "Internal Server Error", "no session");
        };
        let params: Vec<TrackParams> = s.tracks.iter().map(|t| t.params.clone()).collect();
        let body = sdp::describe(&params, rand::random::<u32>() as u64).into_bytes();
        let mut base = url.clone();
        base.set_query(None);
        let mut base = base.to_string();
        if !base.ends_with('/') {
            base.push('/');
        }
        let mut r = Reply::ok()
            .header("Content-Base", base)
            .header("Content-Type", "application/sdp");
        r.body = body;
        r
    }

    pub(super) async fn setup(&mut self, req: &Request<Vec<u8>>) -> Reply {
        let Some(t) = req.request_uri().and_then(target) else {
            return Reply::error(400, "Bad Request", "SETUP needs a stream URL");
        };
        let transports = match req.typed_header::<Transports>() {
            Ok(Some(t)) => t,
            Ok(None) => {
                return Reply::error(400, "Bad Request", "SETUP without a Transport header")
            }
            Err(e) => {
                return Reply::error(400, "Bad Request", format!("bad Transport header: {e:?}"))
            }
        };
        let record = transports
            .iter()
            .any(|t| matches!(t, RtspTransport::Rtp(r) if r.params.mode.contains(&TransportMode::Record)));
        if record || self.publishing.is_some() {
            return self.setup_record(req, &transports).await;
        }
        if self.session.as_ref().is_some_and(|s| s.playing) {
            return Reply::error(455, "Method Not Valid in This State", "SETUP while playing");
        }
        if self.session.as_ref().is_none_or(|s| s.stream != t.stream) {
            if let Err(r) = self.open_session(&t).await {
                return r;
            }
        } else if let Err(r) = self.session_matches(req) {
            return r;
        }
        let local_ip = self.local.ip();
        let peer_ip = self.peer.ip();
        let Some(s) = &mut self.session else {
            return Reply::error(500, "Internal Server Error", "no session");
        };
        let index = t.track.unwrap_or(0);
        let n = s.tracks.len();
        let Some(track) = s.tracks.get_mut(index) else {
            return Reply::error(
                404,
                "Not Found",
                format!(
                    "stream {} has {n} tracks; there is no trackID={index}",
                    t.stream
                ),
            );
        };
        let lower = match negotiate(&transports, index, local_ip).await {
            Ok(l) => l,
            Err(r) => return r,
        };
        let answer = format!("{};ssrc={:08X}", lower.answer(), track.sender.ssrc);
        track.transport = Some(match lower {
            Lower::Tcp { rtp, rtcp } => Transport::Tcp { rtp, rtcp },
            Lower::Udp { rtp, rtcp, client } => Transport::Udp {
                _listener: AbortOnDrop(tokio::spawn(watch_rtcp(
                    rtcp.clone(),
                    s.last_seen.clone(),
                    self.opened,
                ))),
                rtp,
                rtcp,
                to_rtp: SocketAddr::new(peer_ip, client.0),
                to_rtcp: SocketAddr::new(peer_ip, client.1),
            },
        });
        Reply::ok().header("Transport", answer).header(
            "Session",
            format!("{};timeout={}", s.id, SESSION_TIMEOUT.as_secs()),
        )
    }

    pub(super) fn play(&mut self, req: &Request<Vec<u8>>) -> Reply {
        if let Err(r) = self.session_matches(req) {
            return r;
        }
        let Some(s) = &mut self.session else {
            return Reply::error(454, "Session Not Found", "no session");
        };
        if !s.tracks.iter().any(|t| t.transport.is_some()) {
            return Reply::error(455, "Method Not Valid in This State", "PLAY before SETUP");
        }
        // RTP-Info (§12.33): the first packet of each track will carry
        // this seq and rtptime; both derive from the first pending frame.
        let first = s.first_pts.or_else(|| {
            s.pump.viewer().set_aside_items().find_map(|d| match d {
                Delivery::Frame(f) => Some(f.pts),
                _ => None,
            })
        });
        let base = req.request_uri().map(|u| u.to_string()).unwrap_or_default();
        let base = base.trim_end_matches('/');
        let info: Vec<String> = s
            .tracks
            .iter()
            .enumerate()
            .filter(|(_, t)| t.transport.is_some())
            .map(|(i, t)| {
                let rtptime = t
                    .sender
                    .ts_base
                    .wrapping_add(first.map_or(0, |p| t.params.rtp_time(p)));
                format!(
                    "url={base}/{};seq={};rtptime={rtptime}",
                    sdp::control(i),
                    t.sender.seq
                )
            })
            .collect();
        s.first_pts = first;
        if let Some(p) = first {
            s.wall_ref.get_or_insert((SystemTime::now(), p));
        }
        s.playing = true;
        tracing::info!(stream = %s.stream, peer = %self.peer, session = %s.id, "rtsp play");
        Reply::ok()
            .header(
                "Session",
                format!("{};timeout={}", s.id, SESSION_TIMEOUT.as_secs()),
            )
            .header("Range", "npt=0.000-")
            .header("RTP-Info", info.join(","))
    }

    /// Sends the batch [`next_batch`] took, in one write.
    pub(super) async fn on_media(&mut self) -> Result<(), ConnError> {
        // Sender reports before the first packets: a player that gets media
        // first can only guess how the tracks line up, and re-bases its
        // timestamps when the reports come. Then every SR_INTERVAL, with
        // the media: a timer polled at each of a viewer's wake-ups (one per
        // frame) cost more than this one clock read per batch.
        let now = Instant::now();
        if self.session.as_ref().is_some_and(|s| {
            now >= s.next_report
                || s.tracks
                    .iter()
                    .any(|t| t.transport.is_some() && !t.reported)
        }) {
            self.send_reports().await?;
            if let Some(s) = &mut self.session {
                if now >= s.next_report {
                    s.next_report = now + SR_INTERVAL;
                }
            }
        }
        let Some(s) = &mut self.session else {
            return Ok(());
        };
        let batch = std::mem::take(&mut s.batch);
        // Per viewer, only the RTP and interleave headers are made here:
        // the payloads are the frame's, packetized once for every viewer
        // (`Wire`) and borrowed, not cloned. A clone per packet was an
        // atomic increment and decrement of the payload's one shared
        // counter, by every viewer on both worker threads: a cache line
        // that 500 viewers bounced between cores for every packet.
        //
        // The headers go into a buffer made per write: the allocator hands
        // back memory that is still in cache, where a buffer kept per
        // connection is cold memory for each of 500 viewers in turn.
        let mut out: Vec<u8> = Vec::with_capacity(1024);
        // Where in `out` each TCP packet's headers are, and its body.
        let mut packets: Vec<(usize, usize, &[u8])> = Vec::new();
        let mut sent = 0;
        for d in &batch {
            let f = match d {
                Delivery::Tracks { video, audio } => {
                    update_tracks(s, [video.clone(), audio.clone()]);
                    continue;
                }
                Delivery::Frame(f) => f,
            };
            let Some(t) = s
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
                        sent += h.len() + c.len();
                    }
                    None => {}
                }
            }
        }
        // The batch's delay (`/api/metrics`) ends when its last packet is
        // sent: UDP above, interleaved TCP below (the pump counts those).
        s.pump.sent(sent);
        let written = if packets.is_empty() {
            s.pump.delivered();
            Ok(())
        } else {
            let mut slices: Vec<IoSlice> = Vec::with_capacity(packets.len() * 2);
            for (at, len, body) in &packets {
                slices.push(IoSlice::new(&out[*at..*at + *len]));
                slices.push(IoSlice::new(body));
            }
            s.pump.write(&mut self.sock, &mut slices).await
        };
        drop(packets);
        // Kept for its allocation; the deliveries go now.
        let mut batch = batch;
        batch.clear();
        s.batch = batch;
        written.map_err(ConnError::Write)
    }

    pub(super) async fn send_reports(&mut self) -> Result<(), ConnError> {
        let Some(s) = &mut self.session else {
            return Ok(());
        };
        let wall_ref = s.wall_ref;
        let mut tcp = Vec::new();
        for t in &mut s.tracks {
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
        if tcp.is_empty() {
            return Ok(());
        }
        crate::net::write_all_within(&mut self.sock, &mut [IoSlice::new(&tcp)])
            .await
            .map_err(ConnError::Write)
    }
}

/// The next batch of a playing session (what DESCRIBE set aside comes
/// first), into the session's `batch` for [`Conn::on_media`].
pub(super) async fn next_batch(session: &mut Option<Session>) -> Result<(), Ended> {
    let Some(s) = session else {
        return std::future::pending().await;
    };
    s.pump.next_batch(&mut s.batch).await
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

/// New parameters (SPS/PPS, AAC config) for tracks the session already
/// has; the SDP cannot change mid-session, so a codec change is dropped.
fn update_tracks(s: &mut Session, infos: [Option<TrackInfo>; 2]) {
    for info in infos.into_iter().flatten() {
        let Some(t) = s.tracks.iter_mut().find(|t| t.kind == info.kind()) else {
            continue;
        };
        if t.codec != info.codec {
            tracing::warn!(stream = %s.stream, session = %s.id, from = ?t.codec, to = ?info.codec, "codec changed mid-session; that track stops");
            continue;
        }
        if let Ok(p) = TrackParams::new(&info) {
            t.params = p;
        }
    }
}
