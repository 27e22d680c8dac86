//! HTTP: go2rtc's `/api` shape (Home Assistant's go2rtc client speaks it),
//! with the HTTP outputs' routes (HTTP-FLV's protocol is [`crate::http_flv`]).
//!
//! Every error is JSON with a 4xx/5xx status and names the stream or the
//! parameter at fault. Our extra state rides in extra fields; go2rtc's
//! fields keep their meaning.
//!
//! Here: the shared state, the routers and the query helpers. Every
//! request first passes the gate (`auth.rs`: CORS, `Origin`, `Host`,
//! credentials); errors are one type (`error.rs`). The routes, by concern:
//! `streams.rs`, `preload.rs`, `reload.rs` (config changes reaching the
//! running streams), `webrtc.rs` (signalling), the outputs' routes
//! (`flv.rs`, `mp4.rs`, `mjpeg.rs`, `snapshot.rs`, `hls.rs`), `info.rs`
//! (`/api`, schemes, metrics); `body.rs`: the one per-viewer body loop of
//! HTTP-FLV, MP4 and MJPEG; `listen.rs`: the TCP and unix listeners.

mod auth;
mod body;
mod error;
mod flv;
mod hls;
mod info;
mod listen;
mod mjpeg;
mod mp4;
mod preload;
mod reload;
mod snapshot;
mod streams;
mod webrtc;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

pub use auth::Caller;
pub use error::ApiError;
pub use listen::{bind_unix, serve, serve_unix};
pub use reload::{reload, Reloaded};

use crate::hub::{Registry, Stream};
use auth::gate;
use flv::{internal_stream_flv, publish_flv, stream_flv};
use hls::{hls_file, hls_playlist};
use info::{api_info, metrics, schemes};
use mjpeg::stream_mjpeg;
use mp4::stream_mp4;
use preload::{delete_preload, list_preloads, put_preload};
use reload::restart;
use snapshot::frame_jpeg;
use streams::{delete_stream, list_streams, patch_stream, put_stream};
use webrtc::{webrtc_offer, ws_upgrade};

/// The go2rtc API level whose shape we implement.
pub const GO2RTC_API_VERSION: &str = "1.9.14";

pub struct AppState {
    pub registry: Arc<Registry>,
    pub hls: Arc<crate::hls::Hls>,
    pub config_path: String,
    pub rtsp_listen: Option<SocketAddr>,
    /// The config file, for changes through the API.
    pub store: Arc<crate::store::Store>,
    pub preloads: Arc<crate::preload::Preloads>,
    /// Who must log in over HTTP (`api` and `rtsp` credentials, see
    /// [`crate::auth`]).
    pub gate: crate::auth::Gate,
    /// `api.origin`: origins whose pages may use the API (CORS); `*`: any.
    pub origins: Vec<String>,
    /// `api.hosts`: public names of this server (a reverse proxy's, a
    /// DDNS name), served under `Host` with no credentials set.
    pub hosts: Vec<String>,
    /// `api.allow_exec`.
    pub allow_exec: bool,
    /// Recent JPEG snapshots (`frame.jpeg?cache=`).
    pub snapshots: crate::snapshot::Cache,
    /// `webrtc.listen`'s sockets; `None`: a socket per peer.
    pub webrtc: Option<Arc<crate::webrtc::net::Transport>>,
    /// `webrtc.ice_servers`, for our player (`GET /api`).
    pub ice_servers: Vec<crate::config::IceServer>,
}

type Shared = Arc<AppState>;

pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/api", get(api_info))
        .route(
            "/api/streams",
            get(list_streams)
                .put(put_stream)
                .patch(patch_stream)
                .delete(delete_stream),
        )
        .route("/api/schemes", get(schemes))
        .route("/api/frame.jpeg", get(frame_jpeg))
        .route("/api/stream.mjpeg", get(stream_mjpeg))
        .route("/api/stream.mp4", get(stream_mp4))
        .route("/api/webrtc", axum::routing::post(webrtc_offer))
        .route("/api/metrics", get(metrics))
        .route("/api/restart", axum::routing::post(restart))
        .route("/api/ws", get(ws_upgrade))
        .route(
            "/api/preload",
            get(list_preloads).put(put_preload).delete(delete_preload),
        )
        .route("/api/stream.flv", get(stream_flv).post(publish_flv))
        .route("/api/stream.m3u8", get(hls_playlist))
        .route("/api/hls/{variant}/{stream}/{file}", get(hls_file))
        .merge(crate::web::routes())
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(axum::middleware::from_fn_with_state(state.clone(), gate))
        .with_state(state)
}

/// The router of the loopback listener that `api.listen: ""` still needs
/// for our own `ffmpeg:STREAM` readers: internal stream reads with a live
/// token, and nothing else (no API, no `allow_exec` through a side door).
pub fn internal_router(state: Shared) -> Router {
    let not_found = || async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") };
    Router::new()
        .route(
            "/api/stream.flv",
            get(internal_stream_flv).fallback(not_found),
        )
        .fallback(not_found)
        .with_state(state)
}

/// A query's `src`: 400 without one.
fn src_of(q: &[(String, String)]) -> Result<&str, ApiError> {
    one_of(q, "src").ok_or_else(|| ApiError::bad_param("src", "missing parameter: src"))
}

/// The stream a query's `src` names: 400 without one, 404 if unknown.
fn stream_of<'a>(st: &AppState, q: &'a [(String, String)]) -> Result<(&'a str, Stream), ApiError> {
    let name = src_of(q)?;
    let stream = st
        .registry
        .get(name)
        .ok_or_else(|| ApiError::unknown_stream(name))?;
    Ok((name, stream))
}

/// Whether a stream has a source that sends MJPEG (`#video=mjpeg`, a
/// JPEG camera): the MJPEG stream and snapshots read it as it is, instead
/// of a transcode.
async fn has_mjpeg_source(st: &AppState, name: &str) -> bool {
    st.store
        .config()
        .await
        .stream(name)
        .is_some_and(|s| s.sources.iter().any(|x| x.kind.outputs_mjpeg()))
}

/// The values of every `key` in a query, in order (`src` may repeat).
fn all_of<'a>(q: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    q.iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

fn one_of<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    all_of(q, key).into_iter().next()
}

/// A live or changing answer: never cached. (CORS headers, where
/// `api.origin` allows them, come from [`gate`].)
fn no_cache(content_type: &'static str, body: impl IntoResponse) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
