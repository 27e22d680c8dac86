//! RTSP server (RFC 2326): every stream to RTSP players, over TCP
//! (interleaved, §10.12) and UDP.
//!
//! One task per connection owns it: the socket, the parse buffer, the
//! session. Once a session plays, its media path ([`sink`]) is shared with
//! the fan-out, which writes each batch from the producer's task; the
//! connection's task reads requests and RTCP, and writes only what a full
//! socket left over. An RTSP viewer is a consumer like any other: DESCRIBE
//! (or the first SETUP) joins the stream, TEARDOWN or a closed connection
//! leaves it.
//!
//! The parts: [`conn`] (the connection task: its request loop, dispatch
//! and the answers), [`play`] (DESCRIBE/SETUP/PLAY), [`sink`] (the media
//! path),
//! [`publish`] (ANNOUNCE/RECORD and the publish session), [`transport`]
//! (interleaved channels and UDP port pairs), [`target`] (what a request
//! URL names), [`wire`] (framing), [`sdp`], [`auth`].

mod auth;
mod conn;
mod play;
mod publish;
pub mod sdp;
mod sink;
mod target;
mod transport;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::auth::Gate;
use crate::hub::Registry;
use conn::Conn;

/// Advertised in `Session:`; a UDP session silent this long is closed.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(60);
/// A connection that sends no request for this long is closed, unless it
/// is playing over TCP or the session's own liveness rule
/// ([`SESSION_TIMEOUT`]) watches it: a connection that only connects must
/// not hold a socket forever. A player receiving interleaved media may
/// send nothing but RTCP (VLC, ffmpeg with `-rtsp_transport tcp`) and is
/// not cut.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How often each track gets an RTCP sender report.
pub const SR_INTERVAL: Duration = Duration::from_secs(5);
/// How long DESCRIBE waits, once the stream is running, for the first frame
/// that tells it the tracks.
const TRACKS_WAIT: Duration = Duration::from_secs(10);
/// How long DESCRIBE waits, after the first frame, for an audio track
/// that has not shown itself yet.
const AUDIO_WAIT: Duration = Duration::from_secs(2);

const PUBLIC: &str =
    "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER, SET_PARAMETER";

/// Accepts RTSP connections, at most `max_connections` at once
/// (`rtsp.max_connections`; one more is answered 503 and closed). Once
/// credentials are set (`gate`, see [`crate::auth`]), every request but
/// OPTIONS needs Basic or Digest credentials of a configured pair
/// (loopback clients are exempt unless `local_auth`).
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    gate: Gate,
    max_connections: usize,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let gate = Arc::new(gate);
    let listener = crate::net::CappedListener::new(
        listener,
        "rtsp",
        max_connections,
        crate::net::Refusal::Rtsp,
    );
    // Nodelay and the send buffer are set by the listener.
    crate::net::serve_conns(listener, shutdown, |sock, peer| {
        let local = sock.local_addr().unwrap_or(peer);
        let registry = registry.clone();
        let gate = gate.clone();
        async move {
            let now = Instant::now();
            let mut c = Conn {
                sock: Arc::new(sock),
                peer,
                local,
                registry,
                buf: BytesMut::with_capacity(4096),
                session: None,
                publishing: None,
                opened: now,
                last_request: now,
                authed: gate.exempt(Gate::is_loopback(peer)),
                gate,
                nonce: format!("{:032x}", rand::random::<u128>()),
            };
            let why = c.run().await;
            tracing::debug!(
                peer = %peer,
                stream = c.stream(),
                io = why.io_kind().map(tracing::field::debug),
                reason = %crate::redact::escape_controls(&why.to_string()),
                "rtsp connection closed"
            );
        }
    })
    .await;
}
