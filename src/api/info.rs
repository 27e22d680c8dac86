//! What the server says about itself: `GET /api` (go2rtc's shape), the
//! source schemes, and the metrics.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{Shared, GO2RTC_API_VERSION};
use crate::hub::Registry;

pub(super) async fn api_info(State(st): State<Shared>) -> Json<Value> {
    Json(json!({
        "version": GO2RTC_API_VERSION,
        "streamvisor": env!("CARGO_PKG_VERSION"),
        "config_path": st.config_path,
        "rtsp": { "listen": st.rtsp_listen.map(|a| format!(":{}", a.port())).unwrap_or_default() },
        "webrtc": { "ice_servers": st.ice_servers },
    }))
}

/// `GET /api/metrics`: Prometheus's text format.
pub(super) async fn metrics(State(st): State<Shared>) -> Response {
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

/// `GET /api/schemes`: the source schemes we take.
pub(super) async fn schemes() -> Json<Value> {
    Json(json!(crate::config::SCHEMES))
}
