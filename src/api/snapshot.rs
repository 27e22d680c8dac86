//! `GET /api/frame.jpeg`: the latest keyframe as a JPEG (see
//! [`crate::snapshot`]).

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use super::{no_cache, one_of, stream_of, ApiError, Shared};

/// How long a snapshot waits for a picture: within Home Assistant's 10 s
/// for the whole request, with the decode's own deadline after it.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(8);

/// `GET /api/frame.jpeg?src=N[&width|w=W][&height|h=H][&cache=5s]`: the
/// stream's latest keyframe as a JPEG (see [`crate::snapshot`]).
pub(super) async fn frame_jpeg(
    State(st): State<Shared>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    use crate::snapshot::{Size, SnapshotError};
    let (name, stream) = stream_of(&st, &q)?;
    let dim = |long: &'static str, short: &str| -> Result<Option<u32>, ApiError> {
        match one_of(&q, long)
            .or(one_of(&q, short))
            .filter(|v| !v.is_empty())
        {
            None => Ok(None),
            Some(v) => v.parse::<u32>().map(Some).map_err(|_| {
                ApiError::bad_param(
                    long,
                    format!("{long} must be a number of pixels, not `{v}`"),
                )
            }),
        }
    };
    let size = Size {
        width: dim("width", "w")?,
        height: dim("height", "h")?,
    };
    size.check().map_err(|(p, m)| ApiError::bad_param(p, m))?;
    let cache = match one_of(&q, "cache").filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => Some(
            crate::config::parse_duration(v)
                .map_err(|m| ApiError::bad_param("cache", format!("cache: {m}")))?,
        ),
    };
    let jpeg = match cache.and_then(|age| st.snapshots.get(name, size, age)) {
        Some(j) => j,
        None => {
            let deps = st.registry.deps();
            // An `ffmpeg:…#video=mjpeg` source is not started for a
            // snapshot (see snapshot::VIDEO).
            let has_mjpeg = super::has_mjpeg_source(&st, name).await;
            let j = crate::snapshot::jpeg(
                &stream,
                size,
                SNAPSHOT_WAIT,
                if has_mjpeg {
                    crate::media::h265::H264_OR_H265
                } else {
                    crate::snapshot::VIDEO
                },
                &deps.ffmpeg_bin,
                &deps.spawner,
            )
            .await
            .map_err(|e| match e {
                SnapshotError::Stream(e) => ApiError::from(e),
                SnapshotError::NoPicture { ref stream, .. } => {
                    ApiError::new(StatusCode::GATEWAY_TIMEOUT, e.to_string())
                        .with("stream", stream.as_str())
                }
                SnapshotError::Codec { ref stream, .. } => {
                    ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, e.to_string())
                        .with("stream", stream.as_str())
                }
                SnapshotError::Decode {
                    ref stream,
                    ref stderr_tail,
                    ..
                } => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
                    .with("stream", stream.as_str())
                    .with("stderr_tail", json!(stderr_tail)),
                // No decoder ran: its stderr tail is empty.
                SnapshotError::AnnexB { ref stream, .. } => {
                    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
                        .with("stream", stream.as_str())
                        .with("stderr_tail", json!([]))
                }
            })?;
            st.snapshots.put(name, size, j.clone());
            j
        }
    };
    Ok(no_cache("image/jpeg", jpeg))
}
