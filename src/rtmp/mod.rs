//! RTMP server (Adobe "RTMP Specification 1.0"): publishers push FLV-style
//! audio and video messages into a stream, and players pull a stream out.
//!
//! `rtmp://HOST:1935/NAME` (the app is the stream) and
//! `rtmp://HOST:1935/live/NAME` (the stream key is the stream) both name
//! stream NAME. An RTMP audio or video message is exactly an FLV tag body,
//! so media goes through the same [`flv::TagParser`] as a producer's FLV,
//! and players get the same shared tag bytes as HTTP-FLV viewers.
//!
//! Every wait is bounded: the handshake, a silent peer (publisher:
//! `publish.timeout`; before publish or play: [`IDLE_TIMEOUT`]) and a
//! player's stalled socket ([`crate::net::WRITE_STALL`]).
//!
//! The parts: `chunk` (chunk streams, §5.3), `amf0` (commands' values),
//! `conn` (one connection: handshake, commands, publishing, its error) and
//! `play` (a player's loop and its FLV session).

pub mod amf0;
pub mod chunk;
mod conn;
mod play;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::auth::Gate;
use crate::hub::Registry;

use conn::{Conn, ConnError, Role};

/// The handshake must finish within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection that neither publishes nor plays is closed after this much
/// silence.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Our outgoing chunk size: big enough that most frames go in one or a few
/// chunks.
const OUT_CHUNK: usize = 64 * 1024;
/// §5.4.4/§5.4.5: what we ask peers to acknowledge, and tell them we will.
const WINDOW: u32 = 5_000_000;

/// Chunk streams we send on (any of 2-63 would do; these are ffmpeg's).
const CSID_CONTROL: u8 = 2;
const CSID_COMMAND: u8 = 3;
const CSID_AUDIO: u8 = 4;
const CSID_DATA: u8 = 5;
const CSID_VIDEO: u8 = 6;
/// The one message stream we hand out in `createStream`.
const MEDIA_STREAM: u32 = 1;

/// Accepts RTMP connections, at most `max_connections` at once
/// (`rtmp.max_connections`; one more is closed: RTMP has no way to refuse
/// before the handshake). `gate` says who must log in (see
/// [`crate::auth`]): RTMP has no auth of its own, so credentials ride in
/// the stream key's query (`obs?user=U&pass=P`, MediaMTX's convention), the
/// app's, or `tcUrl`'s userinfo.
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
        "rtmp",
        max_connections,
        crate::net::Refusal::Close,
    );
    // Nodelay and the send buffer are set by the listener.
    crate::net::serve_conns(listener, shutdown, |sock, peer| {
        let registry = registry.clone();
        let gate = gate.clone();
        async move {
            let mut c = Conn::new(sock, peer, registry, gate);
            let end = c.run().await;
            let io = end
                .as_ref()
                .err()
                .and_then(ConnError::io_kind)
                .map(tracing::field::debug);
            let why = match &end {
                Ok(()) => "closed".to_string(),
                Err(e) => e.to_string(),
            };
            let why = crate::redact::escape_controls(&why);
            match &c.role {
                Role::Publishing { stream, .. } => {
                    tracing::info!(stream = %stream, peer = %peer, io, reason = %why, "rtmp publisher disconnected")
                }
                _ => {
                    tracing::debug!(peer = %peer, io, reason = %why, "rtmp connection closed")
                }
            }
        }
    })
    .await;
}

/// `rtmp://host/live/NAME` (app `live`, key `NAME`) and `rtmp://host/NAME`
/// (app `NAME`, no key) both name stream NAME; queries are not names.
fn stream_name(app: &str, key: &str) -> String {
    let key = strip_query(key).trim_matches('/');
    if key.is_empty() {
        strip_query(app).trim_matches('/').to_string()
    } else {
        key.to_string()
    }
}

fn strip_query(s: &str) -> &str {
    s.split('?').next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_key_or_else_the_app() {
        assert_eq!(stream_name("live", "cam"), "cam");
        assert_eq!(stream_name("cam", ""), "cam");
        assert_eq!(stream_name("cam/", "?token=1"), "cam");
        assert_eq!(stream_name("live", "cam?token=1"), "cam");
    }
}
