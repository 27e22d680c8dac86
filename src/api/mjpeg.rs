//! `GET /api/stream.mjpeg`: MJPEG as `multipart/x-mixed-replace`.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::time::Duration;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;

use super::body::body;
use super::{no_cache, stream_of, ApiError, Shared};
use crate::hub::fanout::Delivery;
use crate::hub::JoinRequest;
use crate::media::TrackKind;
use crate::net::PeerAddr;

/// How long `/api/stream.mjpeg` of a stream without an MJPEG source waits
/// to learn whether its camera sends MJPEG: a cold camera's first frame
/// comes after the FLV attempt and the move to the RTSP publish-back.
const MJPEG_PROBE: Duration = Duration::from_secs(10);

/// `GET /api/stream.mjpeg?src=NAME`: MJPEG as `multipart/x-mixed-replace`
/// (what browsers and HA's MJPEG camera show), from the stream's
/// `ffmpeg:NAME#video=mjpeg` source, which starts for it, or from an MJPEG
/// camera's own JPEGs (RFC 2435), passed through. The JPEGs are the shared
/// frames: one part header per image per viewer, no copy.
pub(super) async fn stream_mjpeg(
    State(st): State<Shared>,
    ConnectInfo(peer): ConnectInfo<PeerAddr>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let (name, stream) = stream_of(&st, &q)?;
    let has_mjpeg = super::has_mjpeg_source(&st, name).await;
    use crate::media::Codec;
    fn part(queue: &mut VecDeque<Bytes>, jpeg: Bytes) {
        queue.push_back(Bytes::from(format!(
            "--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
            jpeg.len()
        )));
        queue.push_back(jpeg);
        queue.push_back(Bytes::from_static(b"\r\n"));
    }
    let mut viewer = stream
        .join(JoinRequest {
            protocol: "mjpeg",
            remote_addr: Some(peer.0),
            internal: false,
            exclude: None,
            audio: &[],
            // Without an MJPEG source, the camera's own video, whatever it
            // is, so that its codec is known.
            video: if has_mjpeg {
                crate::hub::fanout::JPEG_VIDEO
            } else {
                &[Codec::Jpeg, Codec::H264, Codec::H265]
            },
        })
        .await?;
    let mut queue = VecDeque::<Bytes>::new();
    if !has_mjpeg {
        // The stream's first video says: an MJPEG camera's JPEGs go out as
        // they are; anything else needs the transcode.
        let deadline = tokio::time::Instant::now() + MJPEG_PROBE;
        let codec = loop {
            match tokio::time::timeout_at(deadline, viewer.next()).await {
                Ok(Ok(Delivery::Tracks { video: Some(v), .. })) => break Some(v.codec),
                Ok(Ok(Delivery::Frame(f))) if f.kind() == TrackKind::Video => {
                    let c = f.codec;
                    if c == Codec::Jpeg {
                        part(&mut queue, f.payload);
                    }
                    break Some(c);
                }
                Ok(Ok(_)) => {}
                Ok(Err(_)) | Err(_) => break None,
            }
        };
        if codec != Some(Codec::Jpeg) {
            let sends = codec.map_or("no video".to_string(), |c| format!("{c:?}"));
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "stream {name} has no MJPEG source and its camera sends {sends} (add \"ffmpeg:{name}#video=mjpeg\")"
                ),
            )
            .with("stream", name));
        }
    }
    let body = body("mjpeg", viewer, queue, |d, out| {
        match d {
            Delivery::Frame(f) if f.codec == Codec::Jpeg => part(out, f.payload),
            _ => {}
        }
        ControlFlow::Continue(())
    });
    Ok(no_cache("multipart/x-mixed-replace; boundary=frame", body))
}
