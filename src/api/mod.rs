//! HTTP: go2rtc's `/api` shape (Home Assistant's go2rtc client speaks it)
//! and HTTP-FLV out.
//!
//! Every error is JSON with a 4xx/5xx status and names the stream or the
//! parameter at fault. Our extra state rides in extra fields; go2rtc's
//! fields keep their meaning.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::hls::{HlsError, Variant};
use crate::hub::fanout::Delivery;
use crate::hub::{JoinRequest, Registry, Stream, StreamError, Viewer};
use crate::media::flv;
use crate::media::{ticks_to_ms, TrackKind};
/// Re-exported from [`crate::net`], where the listener machinery lives.
use crate::net::PeerAddr;
use crate::net::{CappedListener, Refusal};

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

/// The largest request body any route but the FLV publish takes (the API
/// takes its parameters in the query; an SDP offer is a few KiB).
const MAX_BODY: u64 = 256 * 1024;

/// The gate every HTTP request passes before any work is done (see
/// [`crate::auth`]), in this order:
/// 1. CORS (Fetch standard §3.2): only with `api.origin`, and only for an
///    origin it names; a preflight is answered here, before credentials,
///    since browsers send none with it.
/// 2. `Origin`: a browser names the page behind every request but a plain
///    GET. A state-changing request (or a WebSocket handshake, which CORS
///    does not cover) from another site's page is refused, whatever its
///    credentials: a cross-site `text/plain` POST needs no preflight, so
///    without this any page could reload the config or publish.
/// 3. Credentials: HTTP Basic (RFC 7617) with any configured pair. The
///    loopback exemption (off with `local_auth`) needs a loopback peer and
///    a loopback `Host`: a DNS-rebinding page reaches 127.0.0.1 under its
///    own name, which it sends as `Host`.
async fn gate(
    State(st): State<Shared>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    // Our own `ffmpeg:STREAM` readers carry their run's token, not the API
    // password (issue 15); the token opens stream reads and nothing else.
    if is_internal_read(&st, &req) {
        return next.run(req).await;
    }
    let headers = req.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let cors = origin
        .filter(|o| origin_listed(&st.origins, o))
        .map(str::to_string);
    if req.method() == axum::http::Method::OPTIONS {
        if let Some(o) = &cors {
            if headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) {
                let mut r = StatusCode::NO_CONTENT.into_response();
                allow_origin(&mut r, o, &st.origins);
                let h = r.headers_mut();
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_METHODS,
                    header::HeaderValue::from_static("GET, POST, PUT, PATCH, DELETE, OPTIONS"),
                );
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_HEADERS,
                    header::HeaderValue::from_static("Authorization, Content-Type"),
                );
                h.insert(
                    header::ACCESS_CONTROL_MAX_AGE,
                    header::HeaderValue::from_static("600"),
                );
                return r;
            }
        }
    }
    // No route but the FLV publish (a live stream, bounded per tag and in
    // time) takes a body of any size: a declared one over the bound is
    // refused unread. (Handlers that take no body never read one; the
    // WebRTC offer has a tighter bound of its own.)
    if req.uri().path() != "/api/stream.flv" {
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if let Some(n) = declared.filter(|&n| n > MAX_BODY) {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("a request body of {n} bytes is over the limit of {MAX_BODY}"),
            )
            .with("limit", MAX_BODY)
            .into_response();
        }
    }
    let changes = !matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    ) || headers.contains_key(header::UPGRADE);
    if let Some(o) = origin {
        if changes && cors.is_none() && !same_origin(o, host) {
            tracing::warn!(origin = %crate::redact::escape_controls(o), path = %req.uri().path(), "request from another site's page refused");
            return ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "requests from pages of {} are not allowed (list the origin in api.origin)",
                    crate::redact::escape_controls(o)
                ),
            )
            .with("origin", crate::redact::escape_controls(o).to_string())
            .into_response();
        }
    }
    let peer = req
        .extensions()
        .get::<ConnectInfo<PeerAddr>>()
        .map(|c| c.0 .0);
    // A unix-socket peer shows as 127.0.0.1:0 (see `net::PeerAddr`): it is
    // local whatever `Host` it sends.
    let unix = peer.is_some_and(|p| p.port() == 0 && p.ip().is_loopback());
    let local = unix
        || (peer.is_some_and(crate::auth::Gate::is_loopback) && crate::auth::host_is_local(host));
    // With no credentials set, `Host` is what stops a DNS-rebinding page
    // (its own name, resolving to us) from using everything a LAN host
    // may: only names no stranger's DNS can hand out, and the configured
    // `api.hosts`, are served. (With credentials, the page would need
    // them.) A client with no `Host` at all is no browser.
    if !st.gate.enabled() && !unix && !host.is_empty() && !crate::auth::host_is_lan_name(host) {
        let name = crate::auth::host_name(host);
        if !st.hosts.iter().any(|h| h.eq_ignore_ascii_case(name)) {
            let name = crate::redact::escape_controls(name).into_owned();
            tracing::warn!(host = %name, path = %req.uri().path(), "request under a name that is not ours refused (DNS rebinding?)");
            return ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "`{name}` is not a name of this server: list it in api.hosts, \
                     or set credentials (api.username/api.password)"
                ),
            )
            .with("host", name)
            .into_response();
        }
    }
    let mut req = req;
    // Who may see the config's secrets (a source url with its password):
    // someone who gave the credentials, or this machine. With none set,
    // a LAN host sees every url with its password masked.
    let mut trusted = local;
    if !st.gate.exempt(local) {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .ok()
            })
            .and_then(|b| String::from_utf8(b).ok());
        let ok = given
            .as_deref()
            .and_then(|g| g.split_once(':'))
            .is_some_and(|(u, p)| st.gate.check(u, p));
        trusted = ok;
        if !ok {
            let mut r =
                ApiError::new(StatusCode::UNAUTHORIZED, "authentication required").into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"streamvisor\""),
            );
            if let Some(o) = &cors {
                allow_origin(&mut r, o, &st.origins);
            }
            return r;
        }
    }
    req.extensions_mut().insert(Caller { trusted });
    let mut r = next.run(req).await;
    if let Some(o) = &cors {
        allow_origin(&mut r, o, &st.origins);
    }
    r
}

/// What the gate found out about the client, for handlers.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    /// It gave the credentials, or it is local: it may see the config's
    /// secrets (a producer's `url` exactly as configured, which go2rtc's
    /// clients compare with their own, password included).
    pub trusted: bool,
}

/// Whether `api.origin` lets pages of `origin` use the API.
fn origin_listed(origins: &[String], origin: &str) -> bool {
    origins
        .iter()
        .any(|o| o == "*" || o.eq_ignore_ascii_case(origin.trim_end_matches('/')))
}

/// Whether `origin` (`scheme://host[:port]`) is the page's own server:
/// its host and port are those the request was sent to.
fn same_origin(origin: &str, host: &str) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false; // `null` (a sandboxed or file: page) is nobody's
    };
    let default_port = match scheme {
        "http" => "80",
        "https" => "443",
        _ => return false,
    };
    let with_port = |h: &str| {
        let name = crate::auth::host_name(h);
        let port = h[name.len()..].strip_prefix(':').unwrap_or(default_port);
        format!("{}:{port}", name.to_ascii_lowercase())
    };
    !host.is_empty() && with_port(rest) == with_port(host)
}

fn allow_origin(r: &mut Response, origin: &str, origins: &[String]) {
    let h = r.headers_mut();
    let v = if origins.iter().any(|o| o == "*") {
        "*"
    } else {
        origin
    };
    if let Ok(v) = header::HeaderValue::from_str(v) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    h.append(header::VARY, header::HeaderValue::from_static("Origin"));
}

/// `GET /api/stream.flv?src=S&internal=1&token=T` over loopback, with a
/// live token issued for reading S.
fn is_internal_read(st: &AppState, req: &axum::extract::Request) -> bool {
    if req.method() != axum::http::Method::GET || req.uri().path() != "/api/stream.flv" {
        return false;
    }
    let local = req
        .extensions()
        .get::<ConnectInfo<PeerAddr>>()
        .is_some_and(|c| c.0 .0.ip().is_loopback());
    let Ok(Query(q)) = Query::<Vec<(String, String)>>::try_from_uri(req.uri()) else {
        return false;
    };
    local
        && matches!(one_of(&q, "internal"), Some("1" | "true"))
        && internal_token_ok(st, one_of(&q, "src"), one_of(&q, "token"))
}

fn internal_token_ok(st: &AppState, src: Option<&str>, token: Option<&str>) -> bool {
    match (src, token) {
        (Some(src), Some(token)) => st.registry.deps().internal_tokens.allows(token, src),
        _ => false,
    }
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

async fn internal_stream_flv(
    st: State<Shared>,
    peer: ConnectInfo<PeerAddr>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    if !matches!(q.get("internal").map(String::as_str), Some("1" | "true")) {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no such endpoint"));
    }
    stream_flv(st, peer, Query(q)).await
}

/// A JSON error body: `{"error": "...", ...context}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: Value,
}

impl ApiError {
    fn new(status: StatusCode, msg: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: json!({ "error": msg.into() }),
        }
    }

    fn with(mut self, key: &str, v: impl Into<Value>) -> ApiError {
        self.body[key] = v.into();
        self
    }

    fn unknown_stream(name: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, format!("stream not found: {name}"))
            .with("stream", name)
    }

    fn bad_param(param: &str, msg: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, msg).with("parameter", param)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

impl From<StreamError> for ApiError {
    fn from(e: StreamError) -> ApiError {
        let msg = e.to_string();
        match e {
            StreamError::NoSource { stream }
            | StreamError::NotRunning { stream }
            | StreamError::ShuttingDown { stream } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, msg).with("stream", stream)
            }
            StreamError::Busy { stream, .. } => {
                ApiError::new(StatusCode::CONFLICT, msg).with("stream", stream)
            }
            StreamError::NotFound { stream } => {
                ApiError::new(StatusCode::NOT_FOUND, msg).with("stream", stream)
            }
            StreamError::BadName { stream, .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, msg).with("stream", stream)
            }
            StreamError::Forbidden { stream, .. } => {
                ApiError::new(StatusCode::FORBIDDEN, msg).with("stream", stream)
            }
            StreamError::Unsupported { stream, .. } => {
                ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, msg).with("stream", stream)
            }
            StreamError::UnsupportedSource { stream, reason } => {
                ApiError::new(StatusCode::NOT_IMPLEMENTED, msg)
                    .with("stream", stream)
                    .with("reason", reason)
            }
            StreamError::Timeout { stream, .. } => {
                ApiError::new(StatusCode::GATEWAY_TIMEOUT, msg).with("stream", stream)
            }
            StreamError::StartFailed {
                stream, sources, ..
            } => ApiError::new(StatusCode::BAD_GATEWAY, msg)
                .with("stream", stream)
                .with("sources", serde_json::to_value(sources).unwrap_or_default()),
        }
    }
}

async fn api_info(State(st): State<Shared>) -> Json<Value> {
    Json(json!({
        "version": GO2RTC_API_VERSION,
        "streamvisor": env!("CARGO_PKG_VERSION"),
        "config_path": st.config_path,
        "rtsp": { "listen": st.rtsp_listen.map(|a| format!(":{}", a.port())).unwrap_or_default() },
        "webrtc": { "ice_servers": st.ice_servers },
    }))
}

/// `GET /api/metrics`: Prometheus's text format.
async fn metrics(State(st): State<Shared>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render_metrics(&st.registry),
    )
        .into_response()
}

/// The exposition text for every stream and the process.
fn render_metrics(registry: &Registry) -> String {
    let streams = registry.all();
    let list: Vec<(&str, &crate::metrics::StreamMetrics)> =
        streams.iter().map(|s| (s.name(), &**s.metrics())).collect();
    let children = registry.deps().spawner.counts();
    let process = crate::metrics::Process {
        children_running: children.running(),
        children_spawned: children.spawned(),
        children_sigkill: children.sigkilled(),
    };
    crate::metrics::render_text(&list, process)
}

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

async fn list_streams(
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

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> ApiError {
        use crate::store::StoreError as E;
        let msg = e.to_string();
        match e {
            E::Invalid { param, .. } => ApiError::bad_param(param, msg),
            E::NotFound { stream } => ApiError::unknown_stream(&stream),
            E::Write { path, .. } | E::Read { path, .. } => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, msg).with("config", path)
            }
            // The file an operator edited is wrong: say where.
            E::Config(c) => ApiError::new(StatusCode::BAD_REQUEST, msg)
                .with("config", c.file)
                .with("line", c.line)
                .with("col", c.col),
        }
    }
}

/// Applies a committed config change to the running streams and preloads,
/// then (with the store released) waits for the replaced and removed
/// streams to stop, so that a caller who looks next sees them gone.
async fn apply(st: &AppState, c: crate::store::Committed<'_>) {
    let gone = st.registry.reconcile(&c.old.streams, &c.new.streams);
    st.preloads.sync(&c.new.preload);
    drop(c.guard);
    futures_util::future::join_all(gone.iter().map(|s| s.shutdown())).await;
}

/// What a reload did, by stream name.
#[derive(Debug, Default, serde::Serialize)]
pub struct Reloaded {
    pub kept: Vec<String>,
    pub restarted: Vec<String>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Settings that changed but are read only at start-up.
    pub needs_restart: Vec<&'static str>,
}

/// Reads the config file again (SIGHUP, `POST /api/restart`) and applies
/// it: unchanged streams keep running with their viewers, changed ones
/// restart, removed ones stop, new ones are added. An invalid file changes
/// nothing.
pub async fn reload(st: &AppState) -> Result<Reloaded, crate::store::StoreError> {
    let c = st.store.reload().await?;
    let mut r = Reloaded::default();
    for s in &c.new.streams {
        match c.old.stream(&s.name) {
            Some(o) if o == s => r.kept.push(s.name.clone()),
            Some(_) => r.restarted.push(s.name.clone()),
            None => r.added.push(s.name.clone()),
        }
    }
    for s in &c.old.streams {
        if c.new.stream(&s.name).is_none() {
            r.removed.push(s.name.clone());
        }
    }
    r.needs_restart = start_only_changes(&c.old, &c.new);
    for key in &r.needs_restart {
        tracing::warn!(
            key,
            "config reload: `{key}` changed; it takes effect when streamvisor restarts"
        );
    }
    tracing::info!(
        kept = r.kept.len(),
        restarted = ?r.restarted,
        added = ?r.added,
        removed = ?r.removed,
        "config reloaded"
    );
    apply(st, c).await;
    Ok(r)
}

/// The settings that are read once, at start-up (listeners, auth, the
/// ffmpeg path every stream shares, logging).
fn start_only_changes(
    old: &crate::config::Config,
    new: &crate::config::Config,
) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut check = |changed: bool, key: &'static str| {
        if changed {
            out.push(key);
        }
    };
    check(old.api_listen != new.api_listen, "api.listen");
    check(
        old.api_unix_listen != new.api_unix_listen,
        "api.unix_listen",
    );
    check(old.api_auth != new.api_auth, "api.username/password");
    check(old.allow_exec != new.allow_exec, "api.allow_exec");
    check(old.rtsp_listen != new.rtsp_listen, "rtsp.listen");
    check(old.rtsp_auth != new.rtsp_auth, "rtsp.username/password");
    check(old.rtmp_listen != new.rtmp_listen, "rtmp.listen");
    check(old.webrtc != new.webrtc, "webrtc");
    check(old.publish != new.publish, "publish");
    check(old.hls != new.hls, "hls");
    check(old.ffmpeg_bin != new.ffmpeg_bin, "ffmpeg.bin");
    check(old.log != new.log, "log");
    out
}

/// `POST /api/restart` (go2rtc restarts its process; we reload the config
/// file, which is what an operator who edited it wants, without dropping
/// the streams that did not change).
async fn restart(State(st): State<Shared>) -> Result<Json<Reloaded>, ApiError> {
    Ok(Json(reload(&st).await?))
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

/// `PUT /api/streams?name=N&src=S[&src=S2…]`: creates or replaces stream N
/// (go2rtc: `name` defaults to the first `src`). The same sources again
/// change nothing: producers and viewers carry on.
async fn put_stream(
    State(st): State<Shared>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    edit_stream(&st, &q, false).await
}

/// `PATCH /api/streams?name=N&src=S…`: new sources for an existing stream.
async fn patch_stream(
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
async fn delete_stream(
    State(st): State<Shared>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let name = src_of(&q)?;
    let c = st.store.delete_stream(name).await?;
    apply(&st, c).await;
    Ok(StatusCode::OK.into_response())
}

/// How long a snapshot waits for a picture: within Home Assistant's 10 s
/// for the whole request, with the decode's own deadline after it.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(8);

/// `GET /api/frame.jpeg?src=N[&width|w=W][&height|h=H][&cache=5s]`: the
/// stream's latest keyframe as a JPEG (see [`crate::snapshot`]).
async fn frame_jpeg(
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
            let has_mjpeg = st
                .store
                .config()
                .await
                .stream(name)
                .is_some_and(|s| s.sources.iter().any(|x| x.kind.outputs_mjpeg()));
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
            })?;
            st.snapshots.put(name, size, j.clone());
            j
        }
    };
    Ok(no_cache("image/jpeg", jpeg))
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

/// `POST /api/webrtc?src=NAME`: go2rtc's `{"type":"offer","sdp":…}` JSON
/// (answered with `{"type":"answer","sdp":…}`), or WHEP's raw
/// `application/sdp` (answered 201 with the SDP). The body is read up to
/// [`crate::webrtc::MAX_SIGNAL_BYTES`] only, and the offer bounded before
/// it is parsed (413 too large, 400 too many m-lines).
async fn webrtc_offer(
    State(st): State<Shared>,
    ConnectInfo(peer): ConnectInfo<PeerAddr>,
    Query(q): Query<Vec<(String, String)>>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    use crate::webrtc::{OfferLimit, MAX_OFFER_BYTES, MAX_SIGNAL_BYTES};
    let (_, stream) = stream_of(&st, &q)?;
    let too_large = |size| {
        webrtc_error(
            OfferLimit::TooLarge {
                size,
                limit: MAX_OFFER_BYTES,
            }
            .into(),
        )
    };
    // A declared length over the bound is refused unread.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(n) = declared.filter(|&n| n > MAX_SIGNAL_BYTES) {
        return Err(too_large(Some(n)));
    }
    // A body trickled in is given up on: the offer is one small write.
    const READ_TIMEOUT: Duration = Duration::from_secs(10);
    let body = match tokio::time::timeout(
        READ_TIMEOUT,
        axum::body::to_bytes(body, MAX_SIGNAL_BYTES),
    )
    .await
    {
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the offer did not arrive within {} s",
                    READ_TIMEOUT.as_secs()
                ),
            ))
        }
        // http-body-util's LengthLimitError: over MAX_SIGNAL_BYTES.
        Ok(Err(e)) if e.to_string().contains("length limit") => return Err(too_large(declared)),
        Ok(Err(e)) => return Err(ApiError::bad_param("body", format!("offer body: {e}"))),
        Ok(Ok(b)) => b,
    };
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"))
        || body.first() == Some(&b'{');
    let offer = crate::webrtc::offer_from_body(&body, is_json).map_err(webrtc_error)?;
    let answer = crate::webrtc::answer(
        &st.registry,
        &stream,
        &offer,
        st.webrtc.clone(),
        peer.0,
        Default::default(),
    )
    .await
    .map_err(webrtc_error)?;
    if is_json {
        Ok(Json(json!({ "type": "answer", "sdp": answer })).into_response())
    } else {
        Ok((
            StatusCode::CREATED,
            [(header::CONTENT_TYPE, "application/sdp")],
            answer,
        )
            .into_response())
    }
}

/// The HTTP answer to a failed offer: the limit it broke is named
/// (`"limit"`), so a client can tell a bound from a bad SDP.
fn webrtc_error(e: crate::webrtc::WebRtcError) -> ApiError {
    use crate::webrtc::{OfferLimit, WebRtcError};
    match e {
        WebRtcError::Stream(e) => ApiError::from(e),
        WebRtcError::Offer(m) => ApiError::bad_param("body", m),
        e @ WebRtcError::Unanswerable(_) => ApiError::bad_param("body", e.to_string()),
        WebRtcError::Limit(l) => {
            let (status, limit) = match l {
                OfferLimit::TooLarge { limit, .. } => (StatusCode::PAYLOAD_TOO_LARGE, limit),
                OfferLimit::TooManyMedia { limit, .. } => (StatusCode::BAD_REQUEST, limit),
            };
            ApiError::new(status, l.to_string())
                .with("parameter", "body")
                .with("limit", limit)
        }
        e @ WebRtcError::NoAddress(_) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
        e => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `GET /api/ws?src=NAME`: go2rtc's WebSocket signalling, as Home
/// Assistant speaks it. `{"type":"webrtc","value":{"type":"offer","sdp":…}}`
/// is answered `{"type":"webrtc","value":{"type":"answer","sdp":…}}`; the
/// older `{"type":"webrtc/offer","value":SDP}` gets `webrtc/answer`. Our
/// candidates are in the answer (ICE-lite host candidates), so no
/// candidate message ever precedes it; the peer's trickled candidates are
/// not needed (its checks tell us where it is). Errors are
/// `{"type":"error","value":…}`.
async fn ws_upgrade(
    State(st): State<Shared>,
    ConnectInfo(peer): ConnectInfo<PeerAddr>,
    Query(q): Query<Vec<(String, String)>>,
    ws: axum::extract::ws::WebSocketUpgrade,
) -> Response {
    let name = one_of(&q, "src").unwrap_or("").to_string();
    // Signalling messages are small (an offer is bounded by
    // MAX_SIGNAL_BYTES): a bigger frame or message ends the socket before
    // it is buffered (tungstenite's defaults are 16 MiB and 64 MiB).
    ws.max_message_size(crate::webrtc::MAX_SIGNAL_BYTES)
        .max_frame_size(crate::webrtc::MAX_SIGNAL_BYTES)
        .on_upgrade(move |sock| ws_session(st, peer.0, name, sock))
}

async fn ws_session(
    st: Shared,
    peer: SocketAddr,
    name: String,
    mut sock: axum::extract::ws::WebSocket,
) {
    use axum::extract::ws::Message;
    // Sessions started here end if the socket closes before they connect.
    let gone = tokio_util::sync::CancellationToken::new();
    let _guard = gone.clone().drop_guard();
    let send = |v: Value| Message::Text(v.to_string().into());
    loop {
        let msg = match tokio::time::timeout(Duration::from_secs(300), sock.recv()).await {
            Ok(Some(Ok(msg))) => msg,
            Ok(Some(Err(e))) => {
                // A frame or message over max_frame_size/max_message_size
                // (refused by tungstenite from its header, unbuffered), or
                // a protocol error: say why in go2rtc's error shape, then
                // close (RFC 6455 §7.4.1: 1009 "message too big").
                let too_big = e.to_string().contains("too long");
                let why = if too_big {
                    format!(
                        "message over the limit of {} bytes",
                        crate::webrtc::MAX_SIGNAL_BYTES
                    )
                } else {
                    format!("websocket: {e}")
                };
                let _ = sock
                    .send(send(json!({"type": "error", "value": why})))
                    .await;
                let close = axum::extract::ws::CloseFrame {
                    code: if too_big { 1009 } else { 1002 },
                    reason: if too_big {
                        "message too big"
                    } else {
                        "protocol error"
                    }
                    .into(),
                };
                let _ = sock.send(Message::Close(Some(close))).await;
                break;
            }
            _ => break,
        };
        let Message::Text(text) = msg else {
            if matches!(msg, Message::Close(_)) {
                break;
            }
            continue;
        };
        let v: Value = match serde_json::from_str(text.as_str()) {
            Ok(v) => v,
            Err(e) => {
                let _ = sock
                    .send(send(
                        json!({"type": "error", "value": format!("not JSON: {e}")}),
                    ))
                    .await;
                continue;
            }
        };
        let (offer, legacy) = match v["type"].as_str() {
            Some("webrtc") if v["value"]["type"] == "offer" => {
                (v["value"]["sdp"].as_str().map(str::to_string), false)
            }
            Some("webrtc/offer") => (v["value"].as_str().map(str::to_string), true),
            // Trickled candidates: not needed by an ICE-lite answerer.
            Some("webrtc/candidate") => continue,
            _ => continue,
        };
        let Some(offer) = offer else {
            let _ = sock
                .send(send(json!({"type": "error", "value": "offer without SDP"})))
                .await;
            continue;
        };
        let reply = match st.registry.get(&name) {
            None => Err(format!("stream not found: {name}")),
            Some(stream) => crate::webrtc::answer(
                &st.registry,
                &stream,
                &offer,
                st.webrtc.clone(),
                peer,
                gone.clone(),
            )
            .await
            .map_err(|e| e.to_string()),
        };
        let out = match (reply, legacy) {
            (Ok(sdp), false) => json!({"type": "webrtc", "value": {"type": "answer", "sdp": sdp}}),
            (Ok(sdp), true) => json!({"type": "webrtc/answer", "value": sdp}),
            (Err(e), _) => json!({"type": "error", "value": e}),
        };
        if sock.send(send(out)).await.is_err() {
            break;
        }
    }
}

/// `GET /api/stream.mp4?src=NAME`: progressive fragmented MP4 (H.264 +
/// AAC) from the next keyframe (see [`crate::mp4`]).
async fn stream_mp4(
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
    let state = (
        viewer,
        crate::mp4::Writer::default(),
        std::collections::VecDeque::<Bytes>::new(),
    );
    let body = futures_util::stream::unfold(state, |(mut viewer, mut w, mut queue)| async move {
        loop {
            if let Some(b) = queue.pop_front() {
                viewer
                    .stats()
                    .bytes
                    .fetch_add(b.len() as u64, Ordering::Relaxed);
                return Some((Ok::<Bytes, io::Error>(b), (viewer, w, queue)));
            }
            match viewer.next().await {
                Err(e) => {
                    tracing::debug!(error = %e, "mp4 viewer ended");
                    return None;
                }
                Ok(d) => {
                    if w.deliver(d, &mut queue).is_err() {
                        tracing::info!("mp4 viewer ended: the stream's tracks changed");
                        return None;
                    }
                }
            }
        }
    });
    Ok(no_cache("video/mp4", Body::from_stream(body)))
}

/// How long `/api/stream.mjpeg` of a stream without an MJPEG source waits
/// to learn whether its camera sends MJPEG: a cold camera's first frame
/// comes after the FLV attempt and the move to the RTSP publish-back.
const MJPEG_PROBE: Duration = Duration::from_secs(10);

/// `GET /api/stream.mjpeg?src=NAME`: MJPEG as `multipart/x-mixed-replace`
/// (what browsers and HA's MJPEG camera show), from the stream's
/// `ffmpeg:NAME#video=mjpeg` source, which starts for it, or from an MJPEG
/// camera's own JPEGs (RFC 2435), passed through. The JPEGs are the shared
/// frames: one part header per image per viewer, no copy.
async fn stream_mjpeg(
    State(st): State<Shared>,
    ConnectInfo(peer): ConnectInfo<PeerAddr>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let (name, stream) = stream_of(&st, &q)?;
    let has_mjpeg = st
        .store
        .config()
        .await
        .stream(name)
        .is_some_and(|s| s.sources.iter().any(|x| x.kind.outputs_mjpeg()));
    use crate::media::Codec;
    fn part(queue: &mut std::collections::VecDeque<Bytes>, jpeg: Bytes) {
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
    let mut queue = std::collections::VecDeque::<Bytes>::new();
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
    let body =
        futures_util::stream::unfold((viewer, queue), |(mut viewer, mut queue)| async move {
            loop {
                if let Some(b) = queue.pop_front() {
                    viewer
                        .stats()
                        .bytes
                        .fetch_add(b.len() as u64, Ordering::Relaxed);
                    return Some((Ok::<_, io::Error>(b), (viewer, queue)));
                }
                match viewer.next().await {
                    Err(e) => {
                        tracing::debug!(error = %e, "mjpeg viewer ended");
                        return None;
                    }
                    Ok(Delivery::Frame(f)) if f.codec == Codec::Jpeg => part(&mut queue, f.payload),
                    Ok(_) => {}
                }
            }
        });
    Ok(no_cache(
        "multipart/x-mixed-replace; boundary=frame",
        Body::from_stream(body),
    ))
}

/// `GET /api/schemes`: the source schemes we take.
async fn schemes() -> Json<Value> {
    Json(json!(crate::config::SCHEMES))
}

/// `GET /api/preload`: `{name: {"query": "..."}}`.
async fn list_preloads(State(st): State<Shared>) -> Json<Value> {
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
async fn put_preload(
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
async fn delete_preload(
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

async fn stream_flv(
    State(st): State<Shared>,
    ConnectInfo(peer): ConnectInfo<PeerAddr>,
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
        .join_fitting(
            &stream,
            JoinRequest {
                protocol: "http-flv",
                remote_addr: Some(peer.0),
                internal,
                exclude,
                // FLV carries AAC and G.711.
                audio: crate::hub::fanout::ANY_AUDIO,
                // H.265 as enhanced FLV (FourCC `hvc1`): mpegts.js, ffmpeg 6.1+,
                // OBS and go2rtc read it. Not for our own `ffmpeg:` readers:
                // Debian's ffmpeg 5.1 takes an ExVideoTagHeader for FLV codec
                // id 3 (Screen video), finds no audio stream either, and an
                // `ffmpeg:cam#audio=aac` of an H.265 camera would then fail.
                video: if internal {
                    crate::hub::fanout::H264_VIDEO
                } else {
                    crate::media::h265::H264_OR_H265
                },
            },
        )
        .await?;
    let body = Body::from_stream(flv_body(viewer));
    Ok(no_cache("video/x-flv", body))
}

/// go2rtc's HTTP publish: `POST /api/stream.flv?dst=NAME` with an FLV body
/// (`ffmpeg -re -i clip -c copy -f flv http://host:1984/api/stream.flv?dst=NAME`,
/// chunked). The answer comes when the body ends: 200 with what was taken,
/// or the reason the publisher was let go.
async fn publish_flv(
    State(st): State<Shared>,
    ConnectInfo(peer): ConnectInfo<PeerAddr>,
    Query(q): Query<HashMap<String, String>>,
    body: Body,
) -> Result<Response, ApiError> {
    use futures_util::StreamExt;
    let name = q
        .get("dst")
        .ok_or_else(|| ApiError::bad_param("dst", "missing parameter: dst"))?;
    let stream = st.registry.for_publish(name)?;
    let publisher = stream.publish("http", Some(peer.0)).await?;
    let silence = st.registry.publish_config().timeout;
    tracing::info!(stream = %name, peer = %peer.0, "http publisher connected");
    let mut data = body.into_data_stream();
    let mut demux = flv::Demuxer::new();
    let ended = loop {
        let next = tokio::time::timeout(silence, data.next()).await;
        let chunk = match next {
            Err(_) => {
                break Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!("no data for {} ms", silence.as_millis()),
                ))
            }
            Ok(None) => break Ok(()),
            Ok(Some(Err(e))) => {
                break Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("reading the body: {e}"),
                ))
            }
            Ok(Some(Ok(c))) => c,
        };
        demux.push(&chunk);
        let mut taken = false;
        let bad = loop {
            match demux.next_event() {
                Ok(None) => break None,
                Ok(Some(ev)) => {
                    if !publisher.publish(ev) {
                        taken = true;
                        break None;
                    }
                }
                Err(e) => break Some(e),
            }
        };
        if let Some(e) = bad {
            break Err(ApiError::bad_param("body", format!("stream {name}: {e}"))
                .with("stream", name.as_str())
                .with("offset", e.offset));
        }
        if taken {
            break Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("stream {name} no longer takes this publisher (taken over or timed out)"),
            )
            .with("stream", name.as_str()));
        }
    };
    let offset = demux.offset();
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

async fn hls_playlist(
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
async fn hls_file(
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

/// One viewer's FLV byte stream, one chunk per tag. Frame tags are the
/// shared ones ([`flv::shared_tag`]): built once per frame for all viewers,
/// stamped with the stream clock, so a viewer joining late starts at a
/// non-zero time, as players expect of live FLV.
fn flv_body(viewer: Viewer) -> impl futures_util::Stream<Item = Result<Bytes, io::Error>> + Send {
    struct St {
        viewer: Viewer,
        session: flv::Session,
        queue: std::collections::VecDeque<Bytes>,
    }
    let st = St {
        viewer,
        session: flv::Session::default(),
        queue: Default::default(),
    };
    futures_util::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(b) = st.queue.pop_front() {
                st.viewer
                    .stats()
                    .bytes
                    .fetch_add(b.len() as u64, Ordering::Relaxed);
                return Some((Ok(b), st));
            }
            // Polled again with the queue empty: hyper took the last
            // frame's tags, so that frame's delay ends here.
            st.viewer.stats().delivered();
            match st.viewer.next().await {
                Err(e) => {
                    tracing::debug!(error = %e, "http-flv viewer ended");
                    return None;
                }
                Ok(Delivery::Tracks { video, audio }) => st.session.set_tracks(video, audio),
                Ok(Delivery::Frame(f)) => {
                    let before = st.session.before_frame(f.kind(), ticks_to_ms(f.dts).max(0));
                    if before.first {
                        st.queue.push_back(st.session.file_header());
                    }
                    st.queue
                        .extend(before.headers.into_iter().flatten().flatten());
                    st.queue.push_back(flv::shared_tag(&f));
                }
            }
        }
    })
}

// ---- the listeners ------------------------------------------------------

/// Serves `router` on `listener` until `shutdown` resolves, at most
/// `max_connections` at once (`api.max_connections`); see
/// [`crate::net::serve_http`] for the time bounds.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    max_connections: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let listener = CappedListener::new(listener, "api", max_connections, Refusal::Http);
    crate::net::serve_http(listener, router, shutdown).await
}

/// Serves the API on a unix socket too (`api.unix_listen`), as Home
/// Assistant's managed go2rtc is reached. A stale socket file is replaced.
/// A unix-socket peer counts as local (go2rtc: the `@` peer), for auth and
/// for internal readers; it shows as `127.0.0.1:0`.
pub fn bind_unix(path: &std::path::Path) -> io::Result<tokio::net::UnixListener> {
    let _ = std::fs::remove_file(path);
    tokio::net::UnixListener::bind(path)
}

/// As [`serve`], on the unix socket; it has a cap of its own of
/// `max_connections`.
pub async fn serve_unix(
    l: tokio::net::UnixListener,
    router: Router,
    max_connections: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let listener = CappedListener::new(l, "api.unix", max_connections, Refusal::Http);
    crate::net::serve_http(listener, router, shutdown).await
}
