//! `/api/preload`: go2rtc's `preload:` streams, kept running without a
//! viewer, edited through the config file.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::reload::apply;
use super::{src_of, ApiError, Shared};

/// `GET /api/preload`: `{name: {"query": "..."}}`.
pub(super) async fn list_preloads(State(st): State<Shared>) -> Json<Value> {
    let map: serde_json::Map<String, Value> = st
        .store
        .config()
        .await
        .preload
        .into_iter()
        .map(|(k, q)| (k, json!({ "query": q })))
        .collect();
    Json(Value::Object(map))
}

/// `PUT /api/preload?src=N[&video=…][&audio=…][&microphone=…]`, or with
/// go2rtc-client's `video_codec_filter=h264,h265` spelling. Nothing named
/// means video and audio.
pub(super) async fn put_preload(
    State(st): State<Shared>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let name = src_of(&q)?;
    let mut parts = Vec::new();
    for kind in ["video", "audio", "microphone"] {
        let filter = format!("{kind}_codec_filter");
        for (k, v) in &q {
            if k == kind || *k == filter {
                parts.push(if v.is_empty() {
                    kind.to_string()
                } else {
                    format!("{kind}={v}")
                });
            }
        }
    }
    let query = if parts.is_empty() {
        "video&audio".to_string()
    } else {
        parts.join("&")
    };
    let c = st.store.set_preload(name, Some(&query)).await?;
    apply(&st, c).await;
    Ok(StatusCode::OK.into_response())
}

/// `DELETE /api/preload?src=N`: the stream may stop again.
pub(super) async fn delete_preload(
    State(st): State<Shared>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let name = src_of(&q)?;
    if !st.store.config().await.preload.contains_key(name) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("stream {name} is not preloaded"),
        )
        .with("stream", name));
    }
    let c = st.store.set_preload(name, None).await?;
    apply(&st, c).await;
    Ok(StatusCode::OK.into_response())
}
