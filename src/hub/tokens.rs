//! The per-run tokens of our own `ffmpeg:STREAM` readers (issue 15).

use std::collections::HashMap;
use std::sync::Arc;

/// Per-run tokens of our own `ffmpeg:STREAM` readers. A reader's URL
/// carries `token=…` instead of the API password, which would show in
/// `ps` to every local user (issue 15); HTTP-FLV and RTSP let a reader
/// through only with a live token for the stream it names. A token lives
/// as long as its [`TokenGuard`]: one producer run.
///
/// The token also says who reads: a stream reading **itself** back
/// (`cam: [rtsp://…, "ffmpeg:cam#audio=aac"]`) is an internal viewer that
/// never keeps `cam` up, while a stream reading **another**
/// (`cam_aac: ffmpeg:cam#audio=aac`) is an ordinary viewer of it that
/// starts it, cold or warm, as in go2rtc (issue 16).
#[derive(Clone, Default)]
pub struct InternalTokens(Arc<std::sync::Mutex<HashMap<String, TokenFor>>>);

#[derive(Clone, Debug, PartialEq, Eq)]
struct TokenFor {
    reader: String,
    target: String,
}

impl InternalTokens {
    /// A fresh random token good for `reader` reading `target` until the
    /// guard drops.
    pub fn issue(&self, reader: &str, target: &str) -> TokenGuard {
        let token = format!("{:032x}", rand::random::<u128>());
        self.lock().insert(
            token.clone(),
            TokenFor {
                reader: reader.to_string(),
                target: target.to_string(),
            },
        );
        TokenGuard {
            tokens: self.clone(),
            token,
        }
    }

    /// Whether `token` is live and was issued for reading `stream`.
    pub fn allows(&self, token: &str, stream: &str) -> bool {
        self.lock().get(token).is_some_and(|t| t.target == stream)
    }

    /// Whether `token` is live, for reading `stream`, by `stream` itself:
    /// such a reader is internal and never keeps its stream up.
    pub fn reads_itself(&self, token: &str, stream: &str) -> bool {
        self.lock()
            .get(token)
            .is_some_and(|t| t.target == stream && t.reader == stream)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, TokenFor>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One run's internal-reader token; dropping it revokes the token.
pub struct TokenGuard {
    tokens: InternalTokens,
    token: String,
}

impl TokenGuard {
    pub fn token(&self) -> &str {
        &self.token
    }
}

impl Drop for TokenGuard {
    fn drop(&mut self) {
        self.tokens.lock().remove(&self.token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_reads_its_stream_for_the_life_of_its_guard() {
        let tokens = InternalTokens::default();
        let g = tokens.issue("cam", "cam");
        let other = tokens.issue("cam_aac", "cam");
        assert_eq!(g.token().len(), 32);
        assert_ne!(g.token(), other.token());
        assert!(tokens.allows(g.token(), "cam"));
        assert!(!tokens.allows(g.token(), "door"));
        assert!(!tokens.allows("", "cam"));
        // A stream reading itself is internal; another stream's reader is
        // an ordinary viewer (it starts and keeps `cam` up).
        assert!(tokens.reads_itself(g.token(), "cam"));
        assert!(!tokens.reads_itself(other.token(), "cam"));
        assert!(!tokens.reads_itself(g.token(), "door"));
        let t = g.token().to_string();
        drop(g);
        assert!(!tokens.allows(&t, "cam"));
        assert!(tokens.allows(other.token(), "cam"));
    }
}
