//! The web UI: the stream list (`/`) and the player (`/stream.html`),
//! static files embedded in the binary. Nothing is fetched at run time
//! from anywhere but this server.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const INDEX: &str = include_str!("web/index.html");
const PLAYER: &str = include_str!("web/stream.html");
const LIST_JS: &str = include_str!("web/list.js");
const PLAYER_JS: &str = include_str!("web/player.js");
const CSS: &str = include_str!("web/app.css");

fn file(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // A new binary may bring new files: revalidate each time.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// The UI's routes, for [`crate::api::router`] (which puts auth in front).
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { file("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/stream.html",
            get(|| async { file("text/html; charset=utf-8", PLAYER) }),
        )
        .route(
            "/static/list.js",
            get(|| async { file("text/javascript; charset=utf-8", LIST_JS) }),
        )
        .route(
            "/static/player.js",
            get(|| async { file("text/javascript; charset=utf-8", PLAYER_JS) }),
        )
        .route(
            "/static/app.css",
            get(|| async { file("text/css; charset=utf-8", CSS) }),
        )
}
