//! JPEG snapshots (`GET /api/frame.jpeg`): the stream's latest keyframe,
//! decoded by a short-lived ffmpeg.
//!
//! The snapshot joins the stream like a viewer (protocol `snapshot`, video
//! only), so a running stream answers from its GOP cache at once and a
//! cold one is started and stopped again like for any viewer. The keyframe
//! goes to ffmpeg as an Annex B elementary stream (H.264 and H.265 §B: the
//! parameter sets from the track's avcC or hvcC, then the frame's NAL
//! units) on its stdin; an MJPEG camera's keyframe is a JPEG already, and
//! goes out as it is unless a size is asked for. The
//! child runs under the supervisor, so a decoder that hangs gets the same
//! TERM, deadline, KILL as a producer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::hub::fanout::Delivery;
use crate::hub::{JoinRequest, Stream, StreamError};
use crate::media::h264::{nal_units, AvcConfig};
use crate::media::h265::HevcConfig;
use crate::media::{Codec, TrackInfo};
use crate::supervisor::{self, CommandSpec, Labels, Spawner, StderrTail};

/// The decoder's deadline (then TERM, then KILL after [`KILL_TIMEOUT`]).
pub const DECODE_TIMEOUT: Duration = Duration::from_secs(5);
const KILL_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest JPEG we take from the decoder.
const MAX_JPEG: usize = 16 << 20;
/// The largest picture we scale to.
const MAX_SIDE: u32 = 8192;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error("stream {stream}: no picture within {waited_ms} ms")]
    NoPicture { stream: String, waited_ms: u64 },
    #[error("stream {stream}: video is {codec:?}; snapshots decode H.264, H.265 and MJPEG")]
    Codec { stream: String, codec: Codec },
    #[error("stream {stream}: decoding the keyframe failed: {reason}")]
    Decode {
        stream: String,
        reason: String,
        stderr_tail: Vec<String>,
    },
    /// The keyframe could not be put in Annex B form for the decoder.
    #[error("stream {stream}: decoding the keyframe failed: {source}")]
    AnnexB {
        stream: String,
        #[source]
        source: AnnexBError,
    },
}

/// Why a keyframe could not be put in Annex B form: the track's codec,
/// and which part was bad.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnexBError {
    /// The track's decoder configuration (avcC, hvcC) does not parse, so
    /// there are no parameter sets to put first.
    #[error("{codec:?} parameter sets: {reason}")]
    ParameterSets { codec: Codec, reason: String },
    /// A NAL unit's length runs past the frame.
    #[error("{codec:?} keyframe: {reason}")]
    Frame { codec: Codec, reason: String },
}

/// Size asked for: either side alone keeps the aspect ratio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Size {
    pub width: Option<u32>,
    pub height: Option<u32>,
}

impl Size {
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        for (name, v) in [("width", self.width), ("height", self.height)] {
            if let Some(v) = v {
                if v == 0 || v > MAX_SIDE {
                    return Err((name, format!("{name} must be 1 to {MAX_SIDE}, not {v}")));
                }
            }
        }
        Ok(())
    }

    /// ffmpeg's scale filter; -2 keeps the aspect ratio with an even side.
    fn filter(&self) -> Option<String> {
        match (self.width, self.height) {
            (None, None) => None,
            (Some(w), None) => Some(format!("scale={w}:-2")),
            (None, Some(h)) => Some(format!("scale=-2:{h}")),
            (Some(w), Some(h)) => Some(format!("scale={w}:{h}")),
        }
    }
}

/// Recent snapshots per (stream, size), for `cache=`.
#[derive(Default)]
pub struct Cache(Mutex<HashMap<(String, Size), (Instant, Bytes)>>);

impl Cache {
    pub fn get(&self, stream: &str, size: Size, max_age: Duration) -> Option<Bytes> {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.get(&(stream.to_string(), size))
            .filter(|(at, _)| at.elapsed() <= max_age)
            .map(|(_, b)| b.clone())
    }

    pub fn put(&self, stream: &str, size: Size, jpeg: Bytes) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // Old entries go when a new one comes: the map stays as small as
        // the set of streams and sizes asked for lately.
        m.retain(|_, (at, _)| at.elapsed() < Duration::from_secs(60));
        m.insert((stream.to_string(), size), (Instant::now(), jpeg));
    }
}

/// What a snapshot takes: an MJPEG camera's JPEG as well as H.264 and
/// H.265 keyframes. Not for a stream with an `ffmpeg:…#video=mjpeg`
/// source: a viewer taking JPEG would start that transcoder just for the
/// snapshot (the hub starts every source whose codec a viewer takes); such
/// a stream is asked for [`crate::media::h265::H264_OR_H265`] only.
pub const VIDEO: &[Codec] = &[Codec::H264, Codec::H265, Codec::Jpeg];

/// The first video keyframe a new viewer of `stream` taking `video` gets,
/// with its track, within `wait`.
async fn keyframe(
    stream: &Stream,
    wait: Duration,
    video: &'static [Codec],
) -> Result<(TrackInfo, Bytes), SnapshotError> {
    let started = Instant::now();
    let no_picture = || SnapshotError::NoPicture {
        stream: stream.name().to_string(),
        waited_ms: started.elapsed().as_millis() as u64,
    };
    let req = JoinRequest {
        protocol: "snapshot",
        remote_addr: None,
        internal: false,
        exclude: None,
        audio: &[],
        video,
    };
    let mut viewer = tokio::time::timeout(wait, stream.join(req))
        .await
        .map_err(|_| no_picture())??;
    let mut track = None;
    let deadline = started + wait;
    loop {
        let d = tokio::time::timeout_at(deadline, viewer.next())
            .await
            .map_err(|_| no_picture())?
            .map_err(|_| no_picture())?;
        match d {
            Delivery::Tracks { video, .. } => track = video,
            Delivery::Frame(f)
                if f.keyframe && f.codec.kind() == crate::media::TrackKind::Video =>
            {
                let t = track.clone().ok_or_else(no_picture)?;
                return Ok((t, f.payload));
            }
            Delivery::Frame(_) => {}
        }
    }
}

/// Annex B: the parameter sets (H.264: SPS, PPS; H.265: VPS, SPS, PPS),
/// then the frame's NAL units, each after a start code.
pub fn annex_b(track: &TrackInfo, frame: &Bytes) -> Result<Bytes, AnnexBError> {
    let codec = track.codec;
    let sets_err = |reason| AnnexBError::ParameterSets { codec, reason };
    let (sets, length_size) = match codec {
        Codec::H265 => {
            let c = HevcConfig::parse(&track.config).map_err(sets_err)?;
            (
                c.vps
                    .iter()
                    .chain(&c.sps)
                    .chain(&c.pps)
                    .cloned()
                    .collect::<Vec<_>>(),
                c.length_size,
            )
        }
        _ => {
            let c = AvcConfig::parse(&track.config).map_err(sets_err)?;
            (c.sps.iter().chain(&c.pps).cloned().collect(), c.length_size)
        }
    };
    let mut out = BytesMut::with_capacity(frame.len() + 256);
    for ps in &sets {
        out.put_slice(&[0, 0, 0, 1]);
        out.put_slice(ps);
    }
    for nal in nal_units(frame, length_size) {
        out.put_slice(&[0, 0, 0, 1]);
        out.put_slice(&nal.map_err(|reason| AnnexBError::Frame { codec, reason })?);
    }
    Ok(out.freeze())
}

/// A JPEG of `stream`'s latest keyframe (of a track in `video`, see
/// [`VIDEO`]) at `size`. The whole call is bounded by `wait` (for the
/// picture) plus [`DECODE_TIMEOUT`] and the kill escalation.
pub async fn jpeg(
    stream: &Stream,
    size: Size,
    wait: Duration,
    video: &'static [Codec],
    ffmpeg_bin: &str,
    spawner: &Arc<dyn Spawner>,
) -> Result<Bytes, SnapshotError> {
    let name = stream.name().to_string();
    let (track, frame) = keyframe(stream, wait, video).await?;
    let demuxer = match track.codec {
        // An MJPEG camera's picture is the JPEG asked for: no decoder.
        Codec::Jpeg if size.filter().is_none() => return Ok(frame),
        Codec::Jpeg => "mjpeg",
        Codec::H264 => "h264",
        Codec::H265 => "hevc",
        _ => "",
    };
    if demuxer.is_empty() {
        return Err(SnapshotError::Codec {
            stream: name,
            codec: track.codec,
        });
    }
    let es = if track.codec == Codec::Jpeg {
        frame
    } else {
        annex_b(&track, &frame).map_err(|source| SnapshotError::AnnexB {
            stream: name.clone(),
            source,
        })?
    };
    let mut args: Vec<String> = [
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostdin",
        "-f",
        demuxer,
        "-i",
        "pipe:0",
        "-frames:v",
        "1",
    ]
    .map(String::from)
    .to_vec();
    if let Some(f) = size.filter() {
        args.extend(["-vf".to_string(), f]);
    }
    args.extend(["-f", "image2", "-c:v", "mjpeg", "-q:v", "3", "pipe:1"].map(String::from));
    let cmd = CommandSpec {
        program: ffmpeg_bin.to_string(),
        args,
        stdin: Some(es),
    };
    let decode_err = |reason: String, tail: &StderrTail| SnapshotError::Decode {
        stream: name.clone(),
        reason,
        stderr_tail: tail.lines(),
    };
    let tail = Arc::new(StderrTail::default());
    let spawned = spawner
        .spawn(&cmd)
        .map_err(|e| decode_err(format!("cannot run {ffmpeg_bin}: {e}"), &tail))?;
    let pid = spawned.pid;
    let stop = CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let deadline = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(DECODE_TIMEOUT).await;
            stop.cancel();
        })
    };
    // Logged as the stream's "snapshot" pseudo-source.
    let label = format!("{name}/snapshot");
    let report = supervisor::supervise(
        spawned,
        Labels {
            stream: &label,
            source: 0,
        },
        KILL_TIMEOUT,
        stop.clone(),
        tail.clone(),
        move |mut out| async move {
            let mut buf = Vec::new();
            let r = (&mut out).take(MAX_JPEG as u64).read_to_end(&mut buf).await;
            let _ = tx.send(buf);
            match r {
                Ok(_) => "stdout closed".to_string(),
                Err(e) => format!("stdout: {e}"),
            }
        },
    )
    .await;
    deadline.abort();
    let jpeg = rx.await.unwrap_or_default();
    tracing::debug!(stream = %name, pid, bytes = jpeg.len(), "snapshot decoded");
    if stop.is_cancelled() {
        return Err(decode_err(
            format!("no picture within {} ms", DECODE_TIMEOUT.as_millis()),
            &tail,
        ));
    }
    // A JPEG starts with SOI (ITU T.81 §B.2.1: FF D8).
    if !jpeg.starts_with(&[0xFF, 0xD8]) {
        let how = match report.exit {
            Some(e) => e.to_string(),
            None => "ended".to_string(),
        };
        return Err(decode_err(format!("ffmpeg {how} without a JPEG"), &tail));
    }
    Ok(Bytes::from(jpeg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let s = |w, h| {
            Size {
                width: w,
                height: h,
            }
            .filter()
        };
        assert_eq!(s(None, None), None);
        assert_eq!(s(Some(320), None).unwrap(), "scale=320:-2");
        assert_eq!(s(None, Some(90)).unwrap(), "scale=-2:90");
        assert!(Size {
            width: Some(0),
            height: None
        }
        .check()
        .is_err());
        assert!(Size {
            width: Some(9000),
            height: None
        }
        .check()
        .is_err());
    }

    #[test]
    fn annex_b_puts_parameter_sets_first() {
        let track = TrackInfo {
            codec: Codec::H264,
            config: Bytes::from_static(&[
                1, 66, 0, 30, 0xff, 0xe1, 0, 2, 0x67, 1, 1, 0, 2, 0x68, 2,
            ]),
        };
        let frame = Bytes::from_static(&[0, 0, 0, 2, 0x65, 9]);
        let es = annex_b(&track, &frame).unwrap();
        assert_eq!(
            &es[..],
            &[0, 0, 0, 1, 0x67, 1, 0, 0, 0, 1, 0x68, 2, 0, 0, 0, 1, 0x65, 9]
        );
        assert_eq!(
            annex_b(&track, &Bytes::from_static(&[0, 0, 0, 9, 0x65])),
            Err(AnnexBError::Frame {
                codec: Codec::H264,
                reason: "NAL unit of 9 bytes runs past the access unit (5 bytes)".into()
            })
        );
        let bad = TrackInfo {
            codec: Codec::H265,
            config: Bytes::from_static(&[1, 2]),
        };
        assert!(matches!(
            annex_b(&bad, &frame),
            Err(AnnexBError::ParameterSets {
                codec: Codec::H265,
                ..
            })
        ));
    }

    #[test]
    fn h265_annex_b_has_vps_sps_pps_first() {
        let track = crate::media::rtp::tests::h265_info();
        let frame = Bytes::from_static(&[0, 0, 0, 3, 19 << 1, 1, 9]);
        let es = annex_b(&track, &frame).unwrap();
        let nals = crate::media::h265::annex_b_nals(&es);
        let types: Vec<u8> = nals
            .iter()
            .map(|n| crate::media::h265::nal_type(n))
            .collect();
        assert_eq!(types, vec![32, 33, 34, 19]);
    }
}
