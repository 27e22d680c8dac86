//! Playing (RFC 2326 §10.2 DESCRIBE, §10.4 SETUP, §10.5 PLAY): a
//! connection's viewer and its tracks, up to the media path ([`super::sink`]).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::SystemTime;

use rtsp_types::headers::{Transport as RtspTransport, TransportMode, Transports};
use rtsp_types::Request;
use tokio::time::Instant;

use super::conn::{Conn, Reply};
use super::sink::{Media, Out, Sink};
use super::target::{audio_wanted, target, video_wanted, wanted, with_default_query, Target};
use super::transport::{negotiate, watch_rtcp, AbortOnDrop, Lower, Transport};
use super::{sdp, AUDIO_WAIT, SESSION_TIMEOUT, TRACKS_WAIT};
use crate::hub::fanout::{Delivery, DirectGuard};
use crate::hub::JoinRequest;
use crate::media::rtp::{Sender, TrackParams};
use crate::media::TrackInfo;
use crate::pump::sink::Framing;
use crate::pump::Pump;

/// A session of a connection: DESCRIBE (or the first SETUP) made it, and
/// TEARDOWN, a new DESCRIBE or the connection's end drops it.
pub(super) struct Session {
    pub(super) id: String,
    pub(super) stream: String,
    /// The media path, shared with the fan-out while playing.
    pub(super) sink: Arc<Sink>,
    /// PLAY answered, and no PAUSE since.
    pub(super) playing: bool,
    /// The sink's registration with the fan-out, while playing.
    pub(super) direct: Option<DirectGuard>,
    /// Last sign of life of a UDP client (ms since the connection opened).
    pub(super) last_seen: Arc<AtomicU64>,
}

impl Drop for Session {
    fn drop(&mut self) {
        // Before the registration goes (with the fields): an offer under
        // way when the session ends writes nothing more.
        self.sink.lock().playing = false;
    }
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
        let id = format!("{:016X}", rand::random::<u64>());
        self.session = Some(Session {
            sink: Arc::new(Sink::new(
                Media::new(&t.stream, &id, out),
                Pump::new(viewer),
                self.sock.clone(),
                Framing::Raw,
            )),
            id,
            stream: t.stream.clone(),
            playing: false,
            direct: None,
            last_seen: Arc::new(AtomicU64::new(self.now_ms())),
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
        self.end_session().await;
        if let Err(r) = self.open_session(&t).await {
            return r;
        }
        let Some(s) = &self.session else {
            return Reply::error(500, "Internal Server Error", "no session");
        };
        let params: Vec<TrackParams> = s
            .sink
            .lock()
            .enc
            .tracks
            .iter()
            .map(|t| t.params.clone())
            .collect();
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
        let Some(s) = &self.session else {
            return Reply::error(500, "Internal Server Error", "no session");
        };
        let index = t.track.unwrap_or(0);
        let n = s.sink.lock().enc.tracks.len();
        if index >= n {
            return Reply::error(
                404,
                "Not Found",
                format!(
                    "stream {} has {n} tracks; there is no trackID={index}",
                    t.stream
                ),
            );
        }
        // Not under the sink's lock: a UDP port pair is bound here.
        let lower = match negotiate(&transports, index, local_ip).await {
            Ok(l) => l,
            Err(r) => return r,
        };
        let mut m = s.sink.lock();
        let track = &mut m.enc.tracks[index];
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
        let mut m = s.sink.lock();
        if !m.enc.tracks.iter().any(|t| t.transport.is_some()) {
            return Reply::error(455, "Method Not Valid in This State", "PLAY before SETUP");
        }
        // RTP-Info (§12.33): the first packet of each track will carry
        // this seq and rtptime; both derive from the first pending frame.
        let first = m.enc.first_pts.or_else(|| {
            m.pump.viewer().set_aside_items().find_map(|d| match d {
                Delivery::Frame(f) => Some(f.pts),
                _ => None,
            })
        });
        let base = req.request_uri().map(|u| u.to_string()).unwrap_or_default();
        let base = base.trim_end_matches('/');
        let info: Vec<String> = m
            .enc
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
        m.enc.first_pts = first;
        if let Some(p) = first {
            m.enc.wall_ref.get_or_insert((SystemTime::now(), p));
        }
        // Media goes out after this reply (`Sink::reply`), and from the
        // fan-out's offers once the connection registers the sink.
        m.playing = true;
        drop(m);
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
}
