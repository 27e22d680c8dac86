//! The API's one error type: JSON with a 4xx/5xx status that names the
//! stream or the parameter at fault, and how the errors of the parts below
//! (the hub, the store) become one.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::hub::StreamError;

/// A JSON error body: `{"error": "...", ...context}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    pub(super) body: Value,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, msg: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: json!({ "error": msg.into() }),
        }
    }

    pub(super) fn with(mut self, key: &str, v: impl Into<Value>) -> ApiError {
        self.body[key] = v.into();
        self
    }

    pub(super) fn unknown_stream(name: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, format!("stream not found: {name}"))
            .with("stream", name)
    }

    pub(super) fn bad_param(param: &str, msg: impl Into<String>) -> ApiError {
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

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> ApiError {
        use crate::store::StoreError as E;
        let msg = e.to_string();
        match e {
            E::Invalid { param, .. } => ApiError::bad_param(param, msg),
            E::NotFound { stream } => ApiError::unknown_stream(&stream),
            E::Write { path, .. }
            | E::ReadOnly { path }
            | E::References { path, .. }
            | E::Read { path, .. } => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, msg)
                .with("config", path.display().to_string()),
            // The file an operator edited is wrong: say where.
            E::Config(c) => ApiError::new(StatusCode::BAD_REQUEST, msg)
                .with("config", c.file)
                .with("line", c.line)
                .with("col", c.col),
        }
    }
}
