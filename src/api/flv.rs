//! HTTP-FLV's routes: `GET /api/stream.flv` (play; also on the internal
//! listener for our own `ffmpeg:STREAM` readers) and `POST` (go2rtc's
//! HTTP publish). The protocol is [`crate::http_flv`]'s; here are the
//! query, the gate's token and the HTTP answers.

use std::collections::{HashMap, VecDeque};
use std::ops::ControlFlow;

use axum::body::Body;
use std::sync::Arc;

use std::convert::Infallible;

use axum::extract::{ConnectInfo, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::auth::internal_token_ok;
use super::body::{body, direct};
use super::{no_cache, ApiError, Shared};
use crate::http_flv;
use crate::net::handoff::HttpConn;
use crate::net::PeerAddr;
use crate::pump::sink::{Framing, Sink};
use crate::pump::Pump;

pub(super) async fn internal_stream_flv(
    st: State<Shared>,
    peer: ConnectInfo<PeerAddr>,
    how: How,
    q: Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    if !matches!(q.get("internal").map(String::as_str), Some("1" | "true")) {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no such endpoint"));
    }
    stream_flv(st, peer, how, q).await
}

/// How the answer can be written: the request's method and version, and
/// the TCP connection's socket, which a GET's body can take over.
pub(super) struct How {
    method: Method,
    version: Version,
    conn: Option<HttpConn>,
}

impl<S: Send + Sync> FromRequestParts<S> for How {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<How, Infallible> {
        Ok(How {
            method: parts.method.clone(),
            version: parts.version,
            conn: parts.extensions.get::<HttpConn>().cloned(),
        })
    }
}

pub(super) async fn stream_flv(
    State(st): State<Shared>,
    ConnectInfo(peer): ConnectInfo<PeerAddr>,
    how: How,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let name = q
        .get("src")
        .ok_or_else(|| ApiError::bad_param("src", "missing parameter: src"))?;
    let internal = match q.get("internal").map(String::as_str) {
        None | Some("0") | Some("false") => false,
        Some("1") | Some("true") => true,
        Some(v) => {
            return Err(ApiError::bad_param(
                "internal",
                format!("internal must be 0 or 1, not `{v}`"),
            ))
        }
    };
    if internal && !peer.0.ip().is_loopback() {
        return Err(ApiError::bad_param(
            "internal",
            "internal readers must connect over loopback",
        ));
    }
    // `internal=1` changes how a viewer counts (it does not keep a stream
    // alive): only our own readers, with their run's token, may say so.
    let token = q.get("token").map(String::as_str);
    if internal && !internal_token_ok(&st, Some(name), token) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "internal=1 is for streamvisor's own readers: no valid token",
        )
        .with("parameter", "token"));
    }
    // And only a stream reading itself back is internal: another stream's
    // transcoder (`cam_aac: ffmpeg:cam#audio=aac`) is an ordinary viewer
    // that starts `cam` and keeps it up while it runs, as in go2rtc.
    let internal =
        internal && token.is_some_and(|t| st.registry.deps().internal_tokens.reads_itself(t, name));
    let stream = st
        .registry
        .get(name)
        .ok_or_else(|| ApiError::unknown_stream(name))?;
    let exclude = match q.get("exclude") {
        None => None,
        Some(v) => Some(v.parse::<u16>().map_err(|_| {
            ApiError::bad_param(
                "exclude",
                format!("exclude must be a source index, not `{v}`"),
            )
        })?),
    };
    // An MJPEG camera (no FLV form) gets the stream's H.264 transcode.
    let viewer = st
        .registry
        .join_fitting(&stream, http_flv::join_request(peer.0, internal, exclude))
        .await?;
    // Over TCP, the body writes the socket itself from the producer's
    // side (`body::direct`), in chunks of its own under HTTP/1.1 (said
    // in the head, so that hyper frames the end the same way). A HEAD
    // has no body to write, and a Unix socket's connection is hyper's.
    let framing = match how.version {
        Version::HTTP_11 => Some(Framing::Chunked),
        Version::HTTP_10 => Some(Framing::Raw),
        _ => None,
    };
    if let (&Method::GET, Some(conn), Some(framing)) = (&how.method, how.conn, framing) {
        let sink = Arc::new(Sink::new(
            http_flv::Play::default(),
            Pump::new(viewer),
            conn.sock.clone(),
            framing,
        ));
        let mut r = no_cache("video/x-flv", direct("http-flv", conn, sink));
        if framing == Framing::Chunked {
            r.headers_mut().insert(
                header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
        }
        return Ok(r);
    }
    let mut play = http_flv::Play::default();
    let body = body("http-flv", viewer, VecDeque::new(), move |d, out| {
        play.encode(d, out);
        ControlFlow::Continue(())
    });
    Ok(no_cache("video/x-flv", body))
}

/// go2rtc's HTTP publish: `POST /api/stream.flv?dst=NAME` with an FLV body
/// (`ffmpeg -re -i clip -c copy -f flv http://host:1984/api/stream.flv?dst=NAME`,
/// chunked). The answer comes when the body ends: 200 with what was taken,
/// or the reason the publisher was let go.
pub(super) async fn publish_flv(
    State(st): State<Shared>,
    ConnectInfo(peer): ConnectInfo<PeerAddr>,
    Query(q): Query<HashMap<String, String>>,
    body: Body,
) -> Result<Response, ApiError> {
    let name = q
        .get("dst")
        .ok_or_else(|| ApiError::bad_param("dst", "missing parameter: dst"))?;
    let stream = st.registry.for_publish(name)?;
    let publisher = stream.publish("http", Some(peer.0)).await?;
    let silence = st.registry.publish_config().timeout;
    tracing::info!(stream = %name, peer = %peer.0, "http publisher connected");
    let (ended, offset) =
        http_flv::publish(&publisher, name, silence, body.into_data_stream()).await;
    let ended = ended.map_err(|e| publish_error(name, e));
    drop(publisher); // frees the stream at once
    match ended {
        Ok(()) => {
            tracing::info!(stream = %name, peer = %peer.0, bytes = offset, "http publisher finished");
            Ok(Json(json!({ "stream": name, "bytes": offset })).into_response())
        }
        Err(e) => {
            tracing::warn!(stream = %name, peer = %peer.0, error = %e.body, "http publisher disconnected");
            Err(e)
        }
    }
}

/// The HTTP answer to a publisher let go: what went wrong, with the
/// stream, and for a body that is not FLV, the offset of the bad tag.
fn publish_error(name: &str, e: http_flv::PublishError) -> ApiError {
    use http_flv::PublishError as E;
    let msg = e.to_string();
    match e {
        E::Silence(_) => ApiError::new(StatusCode::REQUEST_TIMEOUT, msg),
        E::Read(_) => ApiError::new(StatusCode::BAD_REQUEST, msg),
        E::Flv { error, .. } => ApiError::bad_param("body", msg)
            .with("stream", name)
            .with("offset", error.offset),
        E::TakenOver { .. } => ApiError::new(StatusCode::CONFLICT, msg).with("stream", name),
    }
}
