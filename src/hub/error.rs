//! Why a viewer or publisher could not be served: the hub's one error type
//! at its boundary, with the stream's name and, for a failed start, each
//! source's last error and stderr tail.

use serde::Serialize;

/// Why a viewer could not be served. Carries the stream name, and for a
/// failed start each source's last error and stderr tail.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StreamError {
    #[error("stream {stream}: no sources configured and no publisher connected")]
    NoSource { stream: String },
    #[error("stream {stream}: not running")]
    NotRunning { stream: String },
    #[error("stream {stream}: producers did not deliver a keyframe within {timeout_ms} ms")]
    StartFailed {
        stream: String,
        timeout_ms: u64,
        sources: Vec<SourceFailure>,
    },
    #[error("stream {stream}: no answer within {timeout_ms} ms")]
    Timeout { stream: String, timeout_ms: u64 },
    #[error("stream {stream}: server is shutting down")]
    ShuttingDown { stream: String },
    #[error("stream {stream}: already has a publisher ({by})")]
    Busy { stream: String, by: String },
    #[error("stream {stream}: not found (publish only to streams in the config, or set publish.auto_create)")]
    NotFound { stream: String },
    #[error("stream {stream}: {reason}")]
    BadName { stream: String, reason: String },
    /// Not allowed by the config (a publisher into a stream with sources).
    #[error("stream {stream}: {reason}")]
    Forbidden { stream: String, reason: String },
    /// Asked of a stream in a way it cannot serve (a transcode we do not
    /// offer).
    #[error("stream {stream}: {reason}")]
    Unsupported { stream: String, reason: String },
    /// Every source is of a kind we cannot run (a go2rtc scheme we lack,
    /// such as `tapo:`): the reason, at once, rather than a start timeout.
    #[error("stream {stream}: {reason}")]
    UnsupportedSource { stream: String, reason: String },
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SourceFailure {
    pub url: String,
    pub last_error: Option<String>,
    pub stderr_tail: Vec<String>,
}
