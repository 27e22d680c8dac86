//! WebRTC signalling: WHEP and go2rtc's JSON offer (`POST /api/webrtc`),
//! and go2rtc's `/api/ws` as Home Assistant speaks it (see
//! [`crate::webrtc`] for the sessions).

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{one_of, stream_of, ApiError, Shared};
use crate::net::PeerAddr;

/// `POST /api/webrtc?src=NAME`: go2rtc's `{"type":"offer","sdp":…}` JSON
/// (answered with `{"type":"answer","sdp":…}`), or WHEP's raw
/// `application/sdp` (answered 201 with the SDP). The body is read up to
/// [`crate::webrtc::MAX_SIGNAL_BYTES`] only, and the offer bounded before
/// it is parsed (413 too large, 400 too many m-lines).
pub(super) async fn webrtc_offer(
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
pub(super) async fn ws_upgrade(
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
