//! One RTMP connection: the handshake, the command exchange (§7.2),
//! publishing, and the error that ends it.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use tokio::net::TcpStream;

use super::amf0::AmfError;
use super::amf0::{obj, s, Value};
use super::chunk::{ChunkError, ChunkReader, ChunkWriter, Message};
use super::{amf0, chunk};
use crate::auth::{self, Gate};
use crate::hub::fanout::{Ended, ANY_AUDIO};
use crate::hub::{JoinRequest, Publisher, Registry, StreamError, Viewer};
use crate::media::flv::TagParser;

use super::{
    stream_name, strip_query, CSID_COMMAND, CSID_CONTROL, HANDSHAKE_TIMEOUT, IDLE_TIMEOUT,
    MEDIA_STREAM, OUT_CHUNK, WINDOW,
};

/// Why a connection ended (issue 18): the error of its loop, logged once
/// with the peer (and a publisher's stream) when its task ends. An I/O
/// failure keeps its `io::Error`, so the log tells a reset peer from a
/// stalled one (`TimedOut`, [`crate::net::write_all_within`]).
#[derive(Debug, thiserror::Error)]
pub(super) enum ConnError {
    #[error("handshake timed out")]
    HandshakeTimeout,
    #[error("handshake: {0}")]
    Handshake(#[source] io::Error),
    #[error("handshake: version {0} (RTMP is 3; 6 is RTMPE, which we do not speak)")]
    Version(u8),
    #[error("no data for {} ms", .0.as_millis())]
    Silent(Duration),
    #[error("read: {0}")]
    Read(#[source] io::Error),
    #[error("write: {0}")]
    Write(#[source] io::Error),
    /// Bad chunking (§5.3), or a chunk size out of bounds.
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    #[error("short Set Chunk Size")]
    ShortSetChunkSize,
    #[error("command: {0}")]
    Command(#[source] AmfError),
    #[error("stream {stream}: bad {track} message at byte {at}: {reason}")]
    BadMedia {
        stream: String,
        track: &'static str,
        at: u64,
        reason: String,
    },
    /// `deleteStream` or `closeStream`: the peer is done.
    #[error("{0}")]
    PeerClosed(String),
    #[error("second {0} on one connection")]
    SecondRole(&'static str),
    #[error("{0}: not authorized")]
    NotAuthorized(&'static str),
    #[error("{what} refused: {source}")]
    Refused {
        what: &'static str,
        source: StreamError,
    },
    #[error("play: stream {0} not found")]
    NotFound(String),
    #[error("stream {stream} no longer takes this publisher (taken over or timed out)")]
    PublisherGone { stream: String },
    /// A player's stream ended (stopped, or the player fell behind).
    #[error("stream {stream}: {source}")]
    StreamEnded { stream: String, source: Ended },
}

impl ConnError {
    /// The kind of the I/O error that ended the connection, if one did.
    pub(super) fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            ConnError::Handshake(e) | ConnError::Read(e) | ConnError::Write(e) => Some(e.kind()),
            _ => None,
        }
    }
}

pub(super) enum Role {
    Idle,
    Playing,
    Publishing {
        stream: String,
        publisher: Publisher,
        tags: TagParser,
        /// Per message type (audio, video): the peer's 32-bit clock
        /// unwrapped, so a publisher running past 49 days (or sending a
        /// little out of order between tracks) stays monotonic.
        clock: [Option<(u32, i64)>; 2],
    },
}

pub(super) struct Conn {
    pub(super) sock: TcpStream,
    pub(super) peer: SocketAddr,
    pub(super) registry: Arc<Registry>,
    pub(super) gate: Arc<Gate>,
    /// Credentials `connect` carried (the app's query or `tcUrl`), for a
    /// publish or play whose key has none.
    pub(super) connect_creds: Option<(String, String)>,
    pub(super) reader: ChunkReader,
    pub(super) writer: ChunkWriter,
    pub(super) buf: BytesMut,
    pub(super) out: Vec<Bytes>,
    /// `connect`'s `app`, without a query.
    pub(super) app: String,
    pub(super) role: Role,
    /// §5.4.3/§5.4.4: bytes received, and when we last acknowledged them.
    pub(super) received: u64,
    pub(super) acked: u64,
    pub(super) peer_window: u64,
}

/// What a command asks of the connection loop.
pub(super) enum Next {
    Continue,
    Close(ConnError),
    Play(Box<Viewer>, String),
}

impl Conn {
    pub(super) fn new(
        sock: TcpStream,
        peer: SocketAddr,
        registry: Arc<Registry>,
        gate: Arc<Gate>,
    ) -> Conn {
        Conn {
            sock,
            peer,
            registry,
            gate,
            connect_creds: None,
            reader: ChunkReader::new(),
            writer: ChunkWriter::new(128),
            buf: BytesMut::with_capacity(64 * 1024),
            out: Vec::new(),
            app: String::new(),
            role: Role::Idle,
            received: 0,
            acked: 0,
            peer_window: 0,
        }
    }

    pub(super) async fn run(&mut self) -> Result<(), ConnError> {
        tokio::time::timeout(HANDSHAKE_TIMEOUT, self.handshake())
            .await
            .map_err(|_| ConnError::HandshakeTimeout)??;
        let publish_timeout = self.registry.publish_config().timeout;
        loop {
            self.send().await?;
            let silence = match &self.role {
                Role::Publishing { .. } => publish_timeout,
                Role::Idle | Role::Playing => IDLE_TIMEOUT,
            };
            match tokio::time::timeout(silence, self.sock.read_buf(&mut self.buf)).await {
                Err(_) => return Err(ConnError::Silent(silence)),
                Ok(Err(e)) => return Err(ConnError::Read(e)),
                Ok(Ok(0)) => return Ok(()),
                Ok(Ok(n)) => self.received += n as u64,
            }
            self.maybe_ack();
            let read = self.read_messages().await;
            // What one read brought goes to the viewers as one batch.
            if let Role::Publishing { publisher, .. } = &self.role {
                publisher.flush();
            }
            match read? {
                Next::Continue => {}
                Next::Close(why) => {
                    self.send().await?;
                    return Err(why);
                }
                Next::Play(viewer, stream) => {
                    self.send().await?;
                    return self.play(*viewer, &stream).await;
                }
            }
        }
    }

    /// Handles every whole message in the buffer; stops at the first that
    /// ends the loop (a close, a play).
    async fn read_messages(&mut self) -> Result<Next, ConnError> {
        while let Some(m) = self.reader.read(&mut self.buf)? {
            match self.on_message(m).await? {
                Next::Continue => {}
                stop => return Ok(stop),
            }
        }
        Ok(Next::Continue)
    }

    /// §5.2 simple handshake: C0+C1 in, S0+S1+S2 out, C2 in. S1's version
    /// field is zero, which tells ffmpeg and librtmp (OBS) not to expect
    /// the digest ("complex") handshake; S2 echoes C1, as they check.
    async fn handshake(&mut self) -> Result<(), ConnError> {
        let mut c0c1 = vec![0u8; 1 + chunk::HANDSHAKE_SIZE];
        self.sock
            .read_exact(&mut c0c1)
            .await
            .map_err(ConnError::Handshake)?;
        if c0c1[0] != chunk::VERSION {
            return Err(ConnError::Version(c0c1[0]));
        }
        let mut s = BytesMut::with_capacity(1 + 2 * chunk::HANDSHAKE_SIZE);
        s.put_u8(chunk::VERSION);
        s.put_u32(0); // time
        s.put_u32(0); // zero: simple handshake
        let random: Vec<u8> = (0..chunk::HANDSHAKE_SIZE - 8)
            .map(|_| rand::random::<u8>())
            .collect();
        s.put_slice(&random);
        s.put_slice(&c0c1[1..]);
        self.sock
            .write_all(&s)
            .await
            .map_err(ConnError::Handshake)?;
        let mut c2 = vec![0u8; chunk::HANDSHAKE_SIZE];
        self.sock
            .read_exact(&mut c2)
            .await
            .map_err(ConnError::Handshake)?;
        Ok(())
    }

    /// Writes what is queued, bounded by the write-stall deadline.
    pub(super) async fn send(&mut self) -> Result<(), ConnError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        let mut slices: Vec<IoSlice> = out.iter().map(|b| IoSlice::new(b)).collect();
        crate::net::write_all_within(&self.sock, &mut slices)
            .await
            .map_err(ConnError::Write)
    }

    /// §5.4.3: acknowledge once the peer's window is used up.
    pub(super) fn maybe_ack(&mut self) {
        if self.peer_window > 0 && self.received - self.acked >= self.peer_window {
            self.acked = self.received;
            let seq = (self.received as u32).to_be_bytes();
            self.writer
                .write_small(&mut self.out, CSID_CONTROL, chunk::ACK, 0, &seq);
        }
    }

    fn control(&mut self, type_id: u8, payload: &[u8]) {
        self.writer
            .write_small(&mut self.out, CSID_CONTROL, type_id, 0, payload);
    }

    fn command(&mut self, stream_id: u32, values: &[Value]) {
        let mut b = BytesMut::new();
        for v in values {
            amf0::encode(&mut b, v);
        }
        let b = b.freeze();
        self.writer.write(
            &mut self.out,
            CSID_COMMAND,
            0,
            chunk::COMMAND_AMF0,
            stream_id,
            &b,
        );
    }

    fn result(&mut self, tid: f64, value: Value) {
        self.command(0, &[s("_result"), Value::Number(tid), Value::Null, value]);
    }

    pub(super) fn on_status(&mut self, level: &str, code: &str, description: &str) {
        self.command(
            MEDIA_STREAM,
            &[
                s("onStatus"),
                Value::Number(0.0),
                Value::Null,
                obj(&[
                    ("level", s(level)),
                    ("code", s(code)),
                    ("description", s(description)),
                ]),
            ],
        );
    }

    /// §7.1.7 User Control: Stream Begin for our one message stream.
    fn stream_begin(&mut self) {
        let mut p = [0u8; 6];
        p[2..].copy_from_slice(&MEDIA_STREAM.to_be_bytes());
        self.control(chunk::USER_CONTROL, &p);
    }

    pub(super) async fn on_message(&mut self, m: Message) -> Result<Next, ConnError> {
        match m.type_id {
            chunk::SET_CHUNK_SIZE => {
                let size = be_u32(&m.payload).ok_or(ConnError::ShortSetChunkSize)?;
                self.reader.set_chunk_size(size)?;
            }
            chunk::ABORT => {
                if let Some(csid) = be_u32(&m.payload) {
                    self.reader.abort(csid);
                }
            }
            chunk::WINDOW_ACK_SIZE => {
                self.peer_window = be_u32(&m.payload).unwrap_or(0) as u64;
            }
            // §7.1.7 event 6, Ping Request: answer with Ping Response.
            chunk::USER_CONTROL if m.payload.len() >= 6 && m.payload[..2] == [0, 6] => {
                let mut p = [0u8; 6];
                p[1] = 7;
                p[2..].copy_from_slice(&m.payload[2..6]);
                self.control(chunk::USER_CONTROL, &p);
            }
            chunk::COMMAND_AMF0 | chunk::COMMAND_AMF3 => {
                // An AMF3 command starts with a format byte, then AMF0.
                let body = if m.type_id == chunk::COMMAND_AMF3 {
                    m.payload.get(1..).unwrap_or_default()
                } else {
                    &m.payload[..]
                };
                let v = amf0::decode_all(body).map_err(ConnError::Command)?;
                return self.on_command(v).await;
            }
            chunk::AUDIO | chunk::VIDEO => return self.on_media(m),
            // Acks, bandwidth, @setDataFrame/onMetaData and the rest tell
            // us nothing we need.
            _ => {}
        }
        Ok(Next::Continue)
    }

    async fn on_command(&mut self, v: Vec<Value>) -> Result<Next, ConnError> {
        let name = v.first().and_then(Value::as_str).unwrap_or("").to_string();
        let tid = v.get(1).and_then(Value::as_number).unwrap_or(0.0);
        // Arguments after the command object.
        let arg = |i: usize| v.get(3 + i).and_then(Value::as_str).unwrap_or("");
        tracing::debug!(peer = %self.peer, command = %crate::redact::escape_controls(&name), "rtmp command");
        match name.as_str() {
            "connect" => {
                let app = v
                    .get(2)
                    .and_then(|o| o.get("app"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                self.app = strip_query(app).trim_matches('/').to_string();
                let tc_url = v
                    .get(2)
                    .and_then(|o| o.get("tcUrl"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                self.connect_creds = app
                    .split_once('?')
                    .and_then(|(_, q)| auth::from_query(q))
                    .or_else(|| {
                        tc_url
                            .split_once('?')
                            .and_then(|(_, q)| auth::from_query(q))
                    })
                    .or_else(|| auth::from_userinfo(tc_url));
                self.control(chunk::WINDOW_ACK_SIZE, &WINDOW.to_be_bytes());
                let mut bw = WINDOW.to_be_bytes().to_vec();
                bw.push(2); // dynamic
                self.control(chunk::SET_PEER_BANDWIDTH, &bw);
                self.control(chunk::SET_CHUNK_SIZE, &(OUT_CHUNK as u32).to_be_bytes());
                self.writer = ChunkWriter::new(OUT_CHUNK);
                self.command(
                    0,
                    &[
                        s("_result"),
                        Value::Number(tid),
                        obj(&[
                            ("fmsVer", s("FMS/3,0,1,123")),
                            ("capabilities", Value::Number(31.0)),
                        ]),
                        obj(&[
                            ("level", s("status")),
                            ("code", s("NetConnection.Connect.Success")),
                            ("description", s("Connection succeeded.")),
                            ("objectEncoding", Value::Number(0.0)),
                        ]),
                    ],
                );
            }
            "createStream" => self.result(tid, Value::Number(MEDIA_STREAM as f64)),
            "publish" => return Ok(self.on_publish(arg(0)).await),
            "play" => return Ok(self.on_play(arg(0)).await),
            "FCUnpublish" | "deleteStream" | "closeStream" => {
                if let Role::Publishing { stream, .. } = &self.role {
                    tracing::info!(stream = %stream, peer = %self.peer, "rtmp publisher unpublished");
                    // Dropping the Publisher frees the stream at once.
                    self.role = Role::Idle;
                }
                if name != "FCUnpublish" {
                    return Ok(Next::Close(ConnError::PeerClosed(name)));
                }
            }
            // releaseStream, FCPublish, getStreamLength, _checkbw …: an
            // empty answer keeps every client we know moving.
            _ if tid != 0.0 => self.result(tid, Value::Undefined),
            _ => {}
        }
        Ok(Next::Continue)
    }

    /// Whether a publish or play with stream key `key` may go ahead: no
    /// credentials are asked of this peer, or the key's query (else
    /// `connect`'s) carries a configured pair.
    fn authorized(&self, key: &str) -> bool {
        if self.gate.exempt(Gate::is_loopback(self.peer)) {
            return true;
        }
        key.split_once('?')
            .and_then(|(_, q)| auth::from_query(q))
            .or_else(|| self.connect_creds.clone())
            .is_some_and(|(u, p)| self.gate.check(&u, &p))
    }

    /// The stream a publish or play names: the stream key, or with none,
    /// the app (`rtmp://host/NAME`).
    fn stream_name(&self, key: &str) -> String {
        stream_name(&self.app, key)
    }

    async fn on_publish(&mut self, key: &str) -> Next {
        let name = self.stream_name(key);
        if !matches!(self.role, Role::Idle) {
            self.on_status(
                "error",
                "NetStream.Publish.BadName",
                "this connection already publishes",
            );
            return Next::Close(ConnError::SecondRole("publish"));
        }
        // Before the stream is looked up (or, with publish.auto_create,
        // made): a stranger learns nothing of which names exist.
        if !self.authorized(key) {
            tracing::warn!(stream = %name, peer = %self.peer, "rtmp publish refused: bad or no credentials");
            self.on_status(
                "error",
                "NetStream.Publish.BadName",
                "authentication failed: put ?user=USER&pass=PASSWORD after the stream key",
            );
            return Next::Close(ConnError::NotAuthorized("publish"));
        }
        let held = match self.registry.for_publish(&name) {
            Ok(stream) => stream.publish("rtmp", Some(self.peer)).await,
            Err(e) => Err(e),
        };
        match held {
            Ok(publisher) => {
                tracing::info!(stream = %name, peer = %self.peer, "rtmp publisher connected");
                self.stream_begin();
                self.on_status(
                    "status",
                    "NetStream.Publish.Start",
                    &format!("{name} is now published"),
                );
                self.role = Role::Publishing {
                    stream: name,
                    publisher,
                    tags: TagParser::default(),
                    clock: [None, None],
                };
                Next::Continue
            }
            Err(e) => {
                let code = match e {
                    StreamError::Busy { .. }
                    | StreamError::NotFound { .. }
                    | StreamError::Forbidden { .. }
                    | StreamError::BadName { .. } => "NetStream.Publish.BadName",
                    _ => "NetStream.Publish.Failed",
                };
                tracing::warn!(stream = %crate::redact::escape_controls(&name), peer = %self.peer, error = %crate::redact::escape_controls(&e.to_string()), "rtmp publish refused");
                self.on_status("error", code, &e.to_string());
                Next::Close(ConnError::Refused {
                    what: "publish",
                    source: e,
                })
            }
        }
    }

    async fn on_play(&mut self, key: &str) -> Next {
        let name = self.stream_name(key);
        if !matches!(self.role, Role::Idle) {
            self.on_status(
                "error",
                "NetStream.Play.Failed",
                "this connection already publishes or plays",
            );
            return Next::Close(ConnError::SecondRole("play"));
        }
        if !self.authorized(key) {
            tracing::warn!(stream = %name, peer = %self.peer, "rtmp play refused: bad or no credentials");
            self.on_status(
                "error",
                "NetStream.Play.Failed",
                "authentication failed: add ?user=USER&pass=PASSWORD to the stream name",
            );
            return Next::Close(ConnError::NotAuthorized("play"));
        }
        let Some(stream) = self.registry.get(&name) else {
            self.on_status(
                "error",
                "NetStream.Play.StreamNotFound",
                &format!("stream {name}: not found"),
            );
            return Next::Close(ConnError::NotFound(name));
        };
        let req = JoinRequest {
            protocol: "rtmp",
            remote_addr: Some(self.peer),
            internal: false,
            exclude: None,
            // FLV's audio: AAC first, G.711 if that is all there is.
            audio: ANY_AUDIO,
            // H.265 as Enhanced RTMP v2 (FourCC `hvc1`, onMetaData's
            // videocodecid the FourCC as a number).
            video: crate::media::h265::H264_OR_H265,
        };
        // An MJPEG camera (no FLV form) gets the stream's H.264 transcode.
        match self.registry.join_fitting(&stream, req).await {
            Ok(viewer) => {
                self.role = Role::Playing;
                self.stream_begin();
                self.on_status("status", "NetStream.Play.Reset", &format!("playing {name}"));
                self.on_status("status", "NetStream.Play.Start", &format!("playing {name}"));
                Next::Play(Box::new(viewer), name)
            }
            Err(e) => {
                let code = match e {
                    StreamError::NoSource { .. } | StreamError::NotRunning { .. } => {
                        "NetStream.Play.StreamNotFound"
                    }
                    _ => "NetStream.Play.Failed",
                };
                self.on_status("error", code, &e.to_string());
                Next::Close(ConnError::Refused {
                    what: "play",
                    source: e,
                })
            }
        }
    }

    /// An audio or video message from a publisher: an FLV tag body.
    fn on_media(&mut self, m: Message) -> Result<Next, ConnError> {
        let Role::Publishing {
            stream,
            publisher,
            tags,
            clock,
        } = &mut self.role
        else {
            return Ok(Next::Continue); // media before publish: ignore
        };
        let k = usize::from(m.type_id == chunk::VIDEO);
        let ts = match clock[k] {
            None => m.timestamp as i64,
            Some((raw, ext)) => ext + m.timestamp.wrapping_sub(raw) as i32 as i64,
        };
        clock[k] = Some((m.timestamp, ts));
        let events = tags
            .parse(m.type_id, m.payload, ts)
            .map_err(|(at, reason)| ConnError::BadMedia {
                stream: stream.clone(),
                track: if k == 1 { "video" } else { "audio" },
                at,
                reason,
            })?;
        for ev in events.into_iter().flatten() {
            if !publisher.queue(ev) {
                return Ok(Next::Close(ConnError::PublisherGone {
                    stream: stream.clone(),
                }));
            }
        }
        Ok(Next::Continue)
    }
}

fn be_u32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_the_io_kind_and_their_text() {
        let e = ConnError::Write(std::io::ErrorKind::TimedOut.into());
        assert_eq!(e.io_kind(), Some(std::io::ErrorKind::TimedOut));
        assert!(e.to_string().starts_with("write: "), "{e}");
        let e = ConnError::Handshake(std::io::ErrorKind::UnexpectedEof.into());
        assert_eq!(e.io_kind(), Some(std::io::ErrorKind::UnexpectedEof));
        assert!(e.to_string().starts_with("handshake: "), "{e}");
        let e = ConnError::BadMedia {
            stream: "cam".into(),
            track: "video",
            at: 5,
            reason: "short".into(),
        };
        assert_eq!(e.io_kind(), None);
        assert_eq!(
            e.to_string(),
            "stream cam: bad video message at byte 5: short"
        );
        assert_eq!(
            ConnError::Silent(Duration::from_secs(30)).to_string(),
            "no data for 30000 ms"
        );
    }
}
