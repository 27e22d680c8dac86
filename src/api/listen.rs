//! The API's listeners: TCP and the unix socket, each with its own
//! connection cap (see [`crate::net`] for the server loop and its time
//! bounds).

use std::future::Future;
use std::io;

use axum::Router;
use tokio::net::TcpListener;

use crate::net::{CappedListener, Refusal};

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

/// Binds the unix socket of `api.unix_listen` for [`serve_unix`]. A stale
/// socket file (left by a run that did not exit cleanly) is replaced.
pub fn bind_unix(path: &std::path::Path) -> io::Result<tokio::net::UnixListener> {
    let _ = std::fs::remove_file(path);
    tokio::net::UnixListener::bind(path)
}

/// Serves the API on a unix socket too (`api.unix_listen`, bound by
/// [`bind_unix`]), as Home Assistant's managed go2rtc is reached. As
/// [`serve`], with a cap of its own of `max_connections`. A unix-socket
/// peer counts as local (go2rtc: the `@` peer), for auth and for internal
/// readers; it shows as `127.0.0.1:0`.
pub async fn serve_unix(
    l: tokio::net::UnixListener,
    router: Router,
    max_connections: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let listener = CappedListener::new(l, "api.unix", max_connections, Refusal::Http);
    crate::net::serve_http(listener, router, shutdown).await
}
