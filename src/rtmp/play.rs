//! RTMP play: a player's loop and its FLV session (the same sequence
//! header tracking as HTTP-FLV, [`flv::Session`]).

use std::io::IoSlice;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;

use super::amf0::{obj, s, Value};
use super::chunk::ChunkWriter;
use super::{amf0, chunk};
use crate::hub::fanout::Delivery;
use crate::hub::Viewer;
use crate::media::flv;
use crate::media::{ticks_to_ms, Codec, TrackKind};
use crate::pump::Pump;

use super::conn::{Conn, ConnError, Next};
use super::{CSID_AUDIO, CSID_DATA, CSID_VIDEO, MEDIA_STREAM};

impl Conn {
    /// Sends the stream to a player until it leaves, the stream ends, or
    /// its socket stalls.
    pub(super) async fn play(&mut self, viewer: Viewer, stream: &str) -> Result<(), ConnError> {
        let mut p = Player::default();
        let mut pump = Pump::new(viewer);
        let mut batch = Vec::new();
        loop {
            tokio::select! {
                r = self.sock.read_buf(&mut self.buf) => {
                    match r {
                        Err(e) => return Err(ConnError::Read(e)),
                        Ok(0) => return Ok(()),
                        Ok(n) => self.received += n as u64,
                    }
                    self.maybe_ack();
                    while let Some(m) = self.reader.read(&mut self.buf)? {
                        if let Next::Close(why) = self.on_message(m).await? {
                            return Err(why);
                        }
                    }
                    self.send().await?;
                }
                r = pump.next_batch(&mut batch) => {
                    if let Err(e) = r {
                        self.on_status("status", "NetStream.Play.UnpublishNotify", &format!("stream {stream} ended: {e}"));
                        self.send().await?;
                        return Err(ConnError::StreamEnded { stream: stream.to_string(), source: e });
                    }
                    // What the read branch queued went out with it: the
                    // chunks here are this batch's alone.
                    debug_assert!(self.out.is_empty());
                    for d in batch.drain(..) {
                        p.deliver(d, &mut self.writer, &mut self.out);
                    }
                    let out = std::mem::take(&mut self.out);
                    let mut slices: Vec<IoSlice> = out.iter().map(|b| IoSlice::new(b)).collect();
                    pump.write(&mut self.sock, &mut slices).await.map_err(ConnError::Write)?;
                }
            }
        }
    }
}

/// One player's view of the stream: the FLV session (which sequence
/// headers it has had), shared with HTTP-FLV.
#[derive(Default)]
struct Player {
    session: flv::Session,
}

impl Player {
    fn deliver(&mut self, d: Delivery, w: &mut ChunkWriter, out: &mut Vec<Bytes>) {
        match d {
            Delivery::Tracks { video, audio } => self.session.set_tracks(video, audio),
            Delivery::Frame(f) => {
                let ms = ticks_to_ms(f.dts).max(0);
                let before = self.session.before_frame(f.kind(), ms);
                if before.first {
                    self.metadata(w, out);
                }
                for (k, tag) in before.headers.into_iter().enumerate() {
                    let Some(tag) = tag else { continue };
                    // Small, once per track change: one buffer is fine.
                    let body = flv::tag_body(&tag.concat().into());
                    let (csid, type_id) = if k == 0 {
                        (CSID_VIDEO, chunk::VIDEO)
                    } else {
                        (CSID_AUDIO, chunk::AUDIO)
                    };
                    w.write(out, csid, ms as u32, type_id, MEDIA_STREAM, &body);
                }
                let (csid, type_id) = match f.kind() {
                    TrackKind::Video => (CSID_VIDEO, chunk::VIDEO),
                    TrackKind::Audio => (CSID_AUDIO, chunk::AUDIO),
                };
                // The shared FLV tag, minus its 11-byte header and 4-byte
                // trailer, is the RTMP message: no copy per player.
                let body = flv::tag_body(&flv::shared_tag(&f));
                w.write(out, csid, ms as u32, type_id, MEDIA_STREAM, &body);
            }
        }
    }

    /// `onMetaData`, so players know which tracks to wait for. At time 0:
    /// ffmpeg's FLV demuxer takes script data at any other time for a data
    /// track of its own.
    fn metadata(&self, w: &mut ChunkWriter, out: &mut Vec<Bytes>) {
        let [video, audio] = self.session.tracks();
        let mut props = Vec::new();
        if let Some(v) = video {
            props.push(("videocodecid", Value::Number(codec_id(v.codec))));
        }
        if let Some(a) = audio {
            props.push(("audiocodecid", Value::Number(codec_id(a.codec))));
        }
        let mut b = BytesMut::new();
        amf0::encode(&mut b, &s("onMetaData"));
        amf0::encode(&mut b, &obj(&props));
        w.write(
            out,
            CSID_DATA,
            0,
            chunk::DATA_AMF0,
            MEDIA_STREAM,
            &b.freeze(),
        );
    }
}

/// FLV codec ids for `onMetaData` (E.4.2.1, E.4.3.1).
fn codec_id(c: Codec) -> f64 {
    match c {
        Codec::H264 => 7.0,
        Codec::Aac => 10.0,
        Codec::Pcma => 7.0,
        Codec::Pcmu => 8.0,
        // No legacy id; players are never sent Opus over RTMP.
        Codec::Opus => 0.0,
        Codec::Jpeg => 1.0,
        // Enhanced RTMP v2 §onMetaData: the FourCC as a number.
        Codec::H265 => u32::from_be_bytes(*b"hvc1") as f64,
        Codec::Flac => u32::from_be_bytes(*b"fLaC") as f64,
    }
}
