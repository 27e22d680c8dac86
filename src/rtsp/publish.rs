//! RTSP publishing (RFC 2326 §10.3 ANNOUNCE, §10.11 RECORD): a client
//! pushes RTP into a stream's publisher slot.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use rtsp_types::headers::Transports;
use rtsp_types::Request;

use super::conn::{Conn, ConnError, Reply};
use super::target::target;
use super::transport::{negotiate, watch_rtcp, AbortOnDrop, Lower};
use super::SESSION_TIMEOUT;
use crate::hub::Publisher;
use crate::media::depack::{Depacketizer, Packet};

/// Datagrams queued from a UDP publisher's sockets to its connection task;
/// past this the newest are dropped (UDP would drop them anyway).
const UDP_QUEUE: usize = 1024;

pub struct InTrack {
    /// `a=control` from the ANNOUNCEd SDP.
    pub control: String,
    pub depack: Depacketizer,
    /// TCP: the interleaved channel RTP arrives on.
    pub channel: Option<u8>,
    /// UDP: the tasks reading its RTP and RTCP sockets.
    pub udp: Option<(AbortOnDrop, AbortOnDrop)>,
    pub errors: u64,
}

pub struct PublishSession {
    pub id: String,
    pub stream: String,
    pub publisher: Publisher,
    pub tracks: Vec<InTrack>,
    pub recording: bool,
    /// Datagrams from UDP tracks: (track index, packet).
    pub udp_tx: mpsc::Sender<(usize, Bytes)>,
    pub udp_rx: mpsc::Receiver<(usize, Bytes)>,
    /// Last packet (ms since the connection opened), for the silence timeout.
    pub last_seen: Arc<AtomicU64>,
}

/// One media section of an ANNOUNCE: (control, encoding, clock, fmtp).
type Section = (String, String, u32, Vec<(String, String)>);

/// What an ANNOUNCE offers: (control, depacketizer) per track we can take,
/// and a note for each we cannot.
pub type Offer = (Vec<(String, Depacketizer)>, Vec<String>);

/// The most media sections an ANNOUNCE may have: a publisher sends one
/// video and one audio (ffmpeg, OBS, GStreamer); the same bound as a
/// WebRTC offer's ([`crate::media::MAX_SDP_MEDIA`]). Each section
/// costs a depacketizer and, over UDP, two sockets.
pub const MAX_TRACKS: usize = crate::media::MAX_SDP_MEDIA;

/// The media sections of an ANNOUNCE's SDP (its size is bounded by the
/// framer's `MAX_BODY`; the section count is checked before parsing).
pub fn parse_sdp(body: &[u8]) -> Result<Offer, String> {
    let sections = body
        .split(|&b| b == b'\n')
        .filter(|l| l.trim_ascii_start().starts_with(b"m="))
        .count();
    if sections > MAX_TRACKS {
        return Err(format!(
            "SDP has {sections} media sections (m-lines); the limit is {MAX_TRACKS}"
        ));
    }
    let sdp = sdp_types::Session::parse(body).map_err(|e| format!("SDP: {e}"))?;
    let mut tracks = Vec::new();
    let mut skipped = Vec::new();
    for (i, m) in sdp.medias.iter().enumerate() {
        match section(m) {
            Ok((control, encoding, clock, fmtp)) => {
                match Depacketizer::new(&encoding, clock, &fmtp) {
                    Ok(d) => tracks.push((
                        if control.is_empty() {
                            format!("trackID={i}")
                        } else {
                            control
                        },
                        d,
                    )),
                    Err(e) => skipped.push(format!("media {i} ({}): {e}", m.media)),
                }
            }
            Err(e) => skipped.push(format!("media {i} ({}): {e}", m.media)),
        }
    }
    Ok((tracks, skipped))
}

fn section(m: &sdp_types::Media) -> Result<Section, String> {
    let pt = m.fmt.split_whitespace().next().ok_or("no payload type")?;
    let attr = |name: &str| {
        m.attributes
            .iter()
            .filter(|a| a.attribute == name)
            .filter_map(|a| a.value.as_deref())
            .find_map(|v| {
                v.strip_prefix(pt)
                    .and_then(|r| r.strip_prefix(' '))
                    .map(str::trim)
            })
    };
    // RFC 4566 §6: a=rtpmap:<pt> <encoding>/<clock>[/<channels>]; the
    // static types need none (RFC 3551 §6).
    let (encoding, clock) = match attr("rtpmap") {
        Some(map) => {
            let mut p = map.split('/');
            let enc = p.next().unwrap_or("").to_string();
            let clock = p
                .next()
                .and_then(|c| c.parse().ok())
                .ok_or(format!("rtpmap `{map}` has no clock rate"))?;
            (enc, clock)
        }
        None => match pt {
            "0" => ("PCMU".to_string(), 8000),
            "8" => ("PCMA".to_string(), 8000),
            // ffmpeg's RTSP muxer writes no rtpmap for MJPEG.
            "26" => ("JPEG".to_string(), 90000),
            _ => return Err(format!("payload type {pt} has no rtpmap")),
        },
    };
    let fmtp = attr("fmtp")
        .map(|f| {
            f.split(';')
                .filter_map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                })
                .collect()
        })
        .unwrap_or_default();
    let control = m
        .get_first_attribute_value("control")
        .flatten()
        .unwrap_or("")
        .to_string();
    Ok((control, encoding, clock, fmtp))
}

impl PublishSession {
    pub fn new(
        stream: String,
        publisher: Publisher,
        tracks: Vec<(String, Depacketizer)>,
        now_ms: u64,
    ) -> PublishSession {
        let (udp_tx, udp_rx) = mpsc::channel(UDP_QUEUE);
        PublishSession {
            id: format!("{:016X}", rand::random::<u64>()),
            stream,
            publisher,
            tracks: tracks
                .into_iter()
                .map(|(control, depack)| InTrack {
                    control,
                    depack,
                    channel: None,
                    udp: None,
                    errors: 0,
                })
                .collect(),
            recording: false,
            udp_tx,
            udp_rx,
            last_seen: Arc::new(AtomicU64::new(now_ms)),
        }
    }

    /// The track a SETUP URL names: its control is the URL's tail (or the
    /// whole URL, if the SDP gave absolute ones).
    pub fn track_for(&self, url: &str) -> Option<usize> {
        let url = url.trim_end_matches('/');
        self.tracks.iter().position(|t| {
            let c = t.control.trim_end_matches('/');
            !c.is_empty() && (url == c || url.ends_with(&format!("/{c}")))
        })
    }

    /// Listens for a UDP track's RTP; datagrams go to this connection.
    pub fn listen_udp(
        &mut self,
        track: usize,
        rtp: Arc<UdpSocket>,
        rtcp: AbortOnDrop,
        from: SocketAddr,
    ) {
        let tx = self.udp_tx.clone();
        let reader = AbortOnDrop(tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            loop {
                let Ok((n, peer)) = rtp.recv_from(&mut buf).await else {
                    return;
                };
                // Only the client that set the session up may feed it.
                if peer.ip() != from.ip() {
                    continue;
                }
                if tx
                    .try_send((track, Bytes::copy_from_slice(&buf[..n])))
                    .is_err()
                    && tx.is_closed()
                {
                    return;
                }
            }
        }));
        self.tracks[track].udp = Some((reader, rtcp));
    }

    /// One RTP packet of track `i`. Returns false once the stream no longer
    /// takes this publisher (it was stopped or shut down).
    pub fn on_rtp(&mut self, i: usize, data: Bytes, now_ms: u64) -> bool {
        self.last_seen.store(now_ms, Ordering::Relaxed);
        if !self.recording {
            return true;
        }
        let Some(t) = self.tracks.get_mut(i) else {
            return true;
        };
        let mut events = Vec::new();
        let r = Packet::parse(data).and_then(|p| t.depack.push(p, &mut events));
        if let Err(e) = r {
            t.errors += 1;
            // The first, then every 100th: a broken publisher must not
            // flood the log.
            if t.errors % 100 == 1 {
                tracing::warn!(stream = %self.stream, track = i, errors = t.errors, "bad RTP from publisher: {e}");
            }
        }
        // Queued: the connection sends what one read brought as one batch
        // (`Conn::flush_published`).
        events.into_iter().all(|ev| self.publisher.queue(ev))
    }
}

impl Conn {
    /// Sends what the packets of one read (or one datagram) queued.
    pub(super) fn flush_published(&self) {
        if let Some(p) = &self.publishing {
            p.publisher.flush();
        }
    }

    pub(super) fn on_published_rtp(
        &mut self,
        track: usize,
        data: bytes::Bytes,
    ) -> Result<(), ConnError> {
        let now = self.now_ms();
        match &mut self.publishing {
            Some(p) => match p.on_rtp(track, data, now) {
                true => Ok(()),
                false => Err(ConnError::PublisherGone {
                    stream: p.stream.clone(),
                }),
            },
            None => Ok(()),
        }
    }

    pub(super) async fn announce(&mut self, req: &Request<Vec<u8>>) -> Reply {
        let Some(t) = req.request_uri().and_then(target) else {
            return Reply::error(400, "Bad Request", "ANNOUNCE needs a stream URL");
        };
        // A run token is proved before anything else is looked at (the
        // SDP included): until then this may be anyone on the host.
        let by_token = match self.token_announce(req) {
            None => None,
            Some(token) => {
                // Never `for_publish`: a child's stream exists while it
                // runs, so a token never creates one (publish.auto_create).
                let held = match self.registry.get(&t.stream) {
                    Some(s) => s.publish_into(token).await.ok(),
                    None => None,
                };
                match held {
                    Some(p) => Some(p),
                    // Not the current run token of a running `{output}`
                    // child of this stream: the same answer whether the
                    // stream exists or not, and with credentials on, the
                    // same 401 as no credentials at all.
                    None if !self.authed && self.gate.enabled() => return self.unauthorized(),
                    None => {
                        return Reply::error(
                            404,
                            "Not Found",
                            format!(
                                "stream {}: no running source of it has this publish_token",
                                t.stream
                            ),
                        )
                    }
                }
            }
        };
        let (tracks, skipped) = match parse_sdp(req.body()) {
            Ok(x) => x,
            Err(e) => return Reply::error(400, "Bad Request", e),
        };
        for note in &skipped {
            // The stream name is the request's percent-decoded path, not yet
            // checked: `%0D%0A` in it must not forge a log line.
            tracing::warn!(stream = %crate::redact::escape_controls(&t.stream), peer = %self.peer, "publisher track ignored: {}", crate::redact::escape_controls(note));
        }
        if tracks.is_empty() {
            return Reply::error(
                415,
                "Unsupported Media Type",
                format!("no track we can take: {}", skipped.join("; ")),
            );
        }
        // One role per connection: a new ANNOUNCE ends whatever was here
        // (its publisher first, so a re-ANNOUNCE is not Busy with itself).
        self.end_session().await;
        self.publishing = None;
        let publisher = match by_token {
            Some(p) => {
                self.authed = true; // the run token was the credential
                p
            }
            None => {
                // Only now, authorized and with an offer we can take: with
                // publish.auto_create a bad ANNOUNCE must not leave a
                // stream behind.
                let stream = match self.registry.for_publish(&t.stream) {
                    Ok(s) => s,
                    Err(e) => return e.into(),
                };
                match stream.publish("rtsp", Some(self.peer)).await {
                    Ok(p) => p,
                    Err(e) => return e.into(),
                }
            }
        };
        let now = self.now_ms();
        self.publishing = Some(PublishSession::new(t.stream, publisher, tracks, now));
        Reply::ok()
    }

    pub(super) async fn setup_record(
        &mut self,
        req: &Request<Vec<u8>>,
        transports: &Transports,
    ) -> Reply {
        let local_ip = self.local.ip();
        let peer = self.peer;
        let opened = self.opened;
        let url = req.request_uri().map(|u| u.to_string()).unwrap_or_default();
        let Some(p) = &mut self.publishing else {
            return Reply::error(
                455,
                "Method Not Valid in This State",
                "SETUP for record before ANNOUNCE",
            );
        };
        let Some(i) = p.track_for(&url) else {
            return Reply::error(
                404,
                "Not Found",
                format!("no ANNOUNCEd track matches {url}"),
            );
        };
        let lower = match negotiate(transports, i, local_ip).await {
            Ok(l) => l,
            Err(r) => return r,
        };
        let answer = format!("{};mode=record", lower.answer());
        match lower {
            Lower::Tcp { rtp, .. } => p.tracks[i].channel = Some(rtp),
            Lower::Udp { rtp, rtcp, .. } => {
                // The client's RTCP sender reports keep the session alive too.
                let rtcp = AbortOnDrop(tokio::spawn(watch_rtcp(rtcp, p.last_seen.clone(), opened)));
                p.listen_udp(i, rtp, rtcp, peer);
            }
        }
        Reply::ok().header("Transport", answer).header(
            "Session",
            format!("{};timeout={}", p.id, SESSION_TIMEOUT.as_secs()),
        )
    }

    /// RECORD (§10.11): the ANNOUNCEd and SET UP tracks start to publish.
    pub(super) fn record(&mut self, req: &Request<Vec<u8>>) -> Reply {
        match self.session_matches(req) {
            Err(r) => r,
            Ok(()) => match &mut self.publishing {
                Some(p)
                    if p.tracks
                        .iter()
                        .any(|t| t.channel.is_some() || t.udp.is_some()) =>
                {
                    p.recording = true;
                    tracing::info!(stream = %p.stream, peer = %self.peer, session = %p.id, "rtsp record");
                    Reply::ok().header(
                        "Session",
                        format!("{};timeout={}", p.id, SESSION_TIMEOUT.as_secs()),
                    )
                }
                _ => Reply::error(
                    455,
                    "Method Not Valid in This State",
                    "RECORD before ANNOUNCE and SETUP",
                ),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: &str = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";
    const H264: &str =
        "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\n";

    #[test]
    fn media_sections_are_bounded_before_parsing() {
        let at = format!("{SESSION}{}", H264.repeat(MAX_TRACKS));
        let (tracks, skipped) = parse_sdp(at.as_bytes()).unwrap();
        assert_eq!((tracks.len(), skipped.len()), (MAX_TRACKS, 0));
        let over = format!("{SESSION}{}", H264.repeat(MAX_TRACKS + 1));
        let e = parse_sdp(over.as_bytes()).err().unwrap();
        assert!(
            e.contains("9 media sections") && e.contains("limit is 8"),
            "{e}"
        );
    }

    /// sdp-types says where, by line number; nothing of the parser's
    /// internals (str0m's said `PointerOffset(0x7f…)`).
    #[test]
    fn errors_name_the_line() {
        let bad = format!("{SESSION}m=video\r\n");
        let e = parse_sdp(bad.as_bytes()).err().unwrap();
        assert!(!e.contains("0x"), "{e}");
        assert!(e.contains("line"), "{e}");
    }
}
