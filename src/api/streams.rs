//! `/api/streams`: the list (go2rtc's JSON, with the secrets a caller may
//! not see masked), and the edits that go through the config file.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::reload::apply;
use super::{all_of, one_of, src_of, ApiError, AppState, Caller, Shared};
use crate::hub::Stream;

/// Masks the passwords in a stream's producer urls, for a client that may
/// not see them (see [`Caller`]).
fn mask_urls(v: &mut Value) {
    if let Some(ps) = v.get_mut("producers").and_then(Value::as_array_mut) {
        for p in ps {
            if let Some(u) = p.get("url").and_then(Value::as_str) {
                p["url"] = crate::redact::redact(u).into();
            }
        }
    }
}

async fn stream_json(s: &Stream) -> Value {
    match s.info().await {
        Some(i) => serde_json::to_value(i).unwrap_or_default(),
        // The actor did not answer in time: say so rather than hang the list.
        None => json!({ "producers": [], "consumers": [], "error": "stream did not answer" }),
    }
}

pub(super) async fn list_streams(
    State(st): State<Shared>,
    caller: Option<axum::Extension<Caller>>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let trusted = caller.is_some_and(|c| c.trusted);
    let json = |s: Stream| async move {
        let mut v = stream_json(&s).await;
        if !trusted {
            mask_urls(&mut v);
        }
        v
    };
    if let Some(name) = q.get("src") {
        let s = st
            .registry
            .get(name)
            .ok_or_else(|| ApiError::unknown_stream(name))?;
        return Ok(Json(json(s).await));
    }
    // Ask every actor at once: one slow stream must not slow the list.
    let infos = futures_util::future::join_all(st.registry.all().into_iter().map(json)).await;
    let map: serde_json::Map<String, Value> = st
        .registry
        .all()
        .iter()
        .map(|s| s.name().to_string())
        .zip(infos)
        .collect();
    Ok(Json(Value::Object(map)))
}

/// `PUT /api/streams?name=N&src=S[&src=S2…]`: creates or replaces stream N
/// (go2rtc: `name` defaults to the first `src`). The same sources again
/// change nothing: producers and viewers carry on.
pub(super) async fn put_stream(
    State(st): State<Shared>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    edit_stream(&st, &q, false).await
}

/// `PATCH /api/streams?name=N&src=S…`: new sources for an existing stream.
pub(super) async fn patch_stream(
    State(st): State<Shared>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    edit_stream(&st, &q, true).await
}

async fn edit_stream(
    st: &AppState,
    q: &[(String, String)],
    patch: bool,
) -> Result<Response, ApiError> {
    let sources: Vec<String> = all_of(q, "src").into_iter().map(str::to_string).collect();
    let name = one_of(q, "name")
        .filter(|n| !n.is_empty())
        .or(sources.first().map(String::as_str))
        .ok_or_else(|| ApiError::bad_param("name", "missing parameter: name"))?
        .to_string();
    crate::hub::check_name(&name).map_err(|m| ApiError::bad_param("name", m))?;
    let c = st
        .store
        .put_stream(&name, &sources, st.allow_exec, patch)
        .await?;
    apply(st, c).await;
    Ok(StatusCode::OK.into_response())
}

/// `DELETE /api/streams?src=N`: removes the stream, stops its producers
/// and ends its viewers (go2rtc leaves them running; we do not).
pub(super) async fn delete_stream(
    State(st): State<Shared>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let name = src_of(&q)?;
    let c = st.store.delete_stream(name).await?;
    apply(&st, c).await;
    Ok(StatusCode::OK.into_response())
}
