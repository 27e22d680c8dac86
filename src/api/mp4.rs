//! `GET /api/stream.mp4`: progressive fragmented MP4 (see [`crate::mp4`]).

use std::collections::VecDeque;
use std::ops::ControlFlow;

use axum::extract::{ConnectInfo, Query, State};
use axum::response::Response;

use super::body::body;
use super::{no_cache, one_of, stream_of, ApiError, Shared};
use crate::hub::JoinRequest;
use crate::net::PeerAddr;

/// `GET /api/stream.mp4?src=NAME`: progressive fragmented MP4 (H.264 +
/// AAC) from the next keyframe (see [`crate::mp4`]).
pub(super) async fn stream_mp4(
    State(st): State<Shared>,
    ConnectInfo(peer): ConnectInfo<PeerAddr>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let (_, stream) = stream_of(&st, &q)?;
    let req = JoinRequest {
        protocol: "mp4",
        remote_addr: Some(peer.0),
        internal: false,
        exclude: None,
        audio: crate::mp4::AUDIO,
        video: crate::mp4::VIDEO,
    };
    // `video=h264`: the player's browser cannot decode the stream's own
    // video (MSE's isTypeSupported said no to its `hvc1`): it gets H.264,
    // from the stream's shared transcode when the camera sends H.265.
    let viewer = match one_of(&q, "video") {
        // An MJPEG camera (no MP4 form here) gets the H.264 transcode too.
        None => st.registry.join_fitting(&stream, req).await?,
        Some(v) if v.eq_ignore_ascii_case("h264") => {
            let req = JoinRequest {
                video: crate::hub::fanout::H264_VIDEO,
                ..req
            };
            st.registry.join_fitting(&stream, req).await?
        }
        Some(v) => {
            return Err(ApiError::bad_param(
                "video",
                format!("video must be h264 (for players that cannot decode the stream's own video), not `{v}`"),
            ))
        }
    };
    let mut w = crate::mp4::Writer::default();
    let body = body("mp4", viewer, VecDeque::new(), move |d, out| {
        if w.deliver(d, out).is_err() {
            tracing::info!("mp4 viewer ended: the stream's tracks changed");
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    Ok(no_cache("video/mp4", body))
}
