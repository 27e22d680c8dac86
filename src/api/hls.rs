//! HLS's routes: the playlist and the segments (see [`crate::hls`]).

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{no_cache, ApiError, Shared};
use crate::hls::{HlsError, Variant};

pub(super) async fn hls_playlist(
    State(st): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let name = q
        .get("src")
        .ok_or_else(|| ApiError::bad_param("src", "missing parameter: src"))?;
    let variant = if q.contains_key("mp4") {
        Variant::Mp4
    } else {
        Variant::Ts
    };
    let playlist = st.hls.playlist(name, variant).await.map_err(|e| match e {
        HlsError::UnknownStream(n) => ApiError::unknown_stream(&n),
        HlsError::Stream(e) => e.into(),
        e @ HlsError::Ended(..) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            .with("stream", name.as_str()),
        e @ HlsError::NoSegment(..) => {
            ApiError::new(StatusCode::GATEWAY_TIMEOUT, e.to_string()).with("stream", name.as_str())
        }
    })?;
    Ok(no_cache("application/vnd.apple.mpegurl", playlist))
}

/// `/api/hls/{ts|mp4}/{stream}/{N.ts | N.m4s | init-V.mp4}`.
pub(super) async fn hls_file(
    State(st): State<Shared>,
    axum::extract::Path((variant, stream, file)): axum::extract::Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let variant = match variant.as_str() {
        "ts" => Variant::Ts,
        "mp4" => Variant::Mp4,
        v => {
            return Err(ApiError::bad_param(
                "variant",
                format!("`{v}` is not an HLS variant (ts, mp4)"),
            ))
        }
    };
    if st.registry.get(&stream).is_none() {
        return Err(ApiError::unknown_stream(&stream));
    }
    let gone = |what: String| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("{what} of stream {stream} is not in the window"),
        )
        .with("stream", stream.as_str())
    };
    let (data, kind) = if let Some(v) = file
        .strip_prefix("init-")
        .and_then(|f| f.strip_suffix(".mp4"))
    {
        let v: u32 = v
            .parse()
            .map_err(|_| ApiError::bad_param("file", format!("`{file}` is not an init segment")))?;
        (
            st.hls
                .init(&stream, v)
                .ok_or_else(|| gone(format!("init segment {v}")))?,
            "video/mp4",
        )
    } else {
        let seq = file
            .strip_suffix(&format!(".{}", variant.extension()))
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| {
                ApiError::bad_param(
                    "file",
                    format!("`{file}` is not a segment name (N.{})", variant.extension()),
                )
            })?;
        let kind = if variant == Variant::Ts {
            "video/mp2t"
        } else {
            "video/mp4"
        };
        (
            st.hls
                .segment(&stream, variant, seq)
                .ok_or_else(|| gone(format!("segment {seq}")))?,
            kind,
        )
    };
    Ok((
        [
            (header::CONTENT_TYPE, kind),
            // A segment never changes once made.
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        data,
    )
        .into_response())
}
