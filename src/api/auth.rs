//! The gate every HTTP request passes before any work is done: CORS,
//! `Origin`, `Host` and credentials (see [`crate::auth`] for the one
//! credential model), and our own readers' tokens.

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{one_of, ApiError, AppState, Shared};
use crate::net::PeerAddr;

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
pub(super) async fn gate(
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

pub(super) fn internal_token_ok(st: &AppState, src: Option<&str>, token: Option<&str>) -> bool {
    match (src, token) {
        (Some(src), Some(token)) => st.registry.deps().internal_tokens.allows(token, src),
        _ => false,
    }
}
