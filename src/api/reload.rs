//! Config changes reaching the running streams: a committed edit applied,
//! and the whole file read again (SIGHUP, `POST /api/restart`).

use axum::extract::State;
use axum::Json;

use super::{ApiError, AppState, Shared};

/// Applies a committed config change to the running streams and preloads,
/// then (with the store released) waits for the replaced and removed
/// streams to stop, so that a caller who looks next sees them gone.
pub(super) async fn apply(st: &AppState, c: crate::store::Committed<'_>) {
    let gone = st.registry.reconcile(&c.old.streams, &c.new.streams);
    st.preloads.sync(&c.new.preload);
    drop(c.guard);
    futures_util::future::join_all(gone.iter().map(|s| s.shutdown())).await;
}

/// What a reload did, by stream name.
#[derive(Debug, Default, serde::Serialize)]
pub struct Reloaded {
    pub kept: Vec<String>,
    pub restarted: Vec<String>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Settings that changed but are read only at start-up.
    pub needs_restart: Vec<&'static str>,
}

/// Reads the config file again (SIGHUP, `POST /api/restart`) and applies
/// it: unchanged streams keep running with their viewers, changed ones
/// restart, removed ones stop, new ones are added. An invalid file changes
/// nothing.
pub async fn reload(st: &AppState) -> Result<Reloaded, crate::store::StoreError> {
    let c = st.store.reload().await?;
    let mut r = Reloaded::default();
    for s in &c.new.streams {
        match c.old.stream(&s.name) {
            Some(o) if o == s => r.kept.push(s.name.clone()),
            Some(_) => r.restarted.push(s.name.clone()),
            None => r.added.push(s.name.clone()),
        }
    }
    for s in &c.old.streams {
        if c.new.stream(&s.name).is_none() {
            r.removed.push(s.name.clone());
        }
    }
    r.needs_restart = start_only_changes(&c.old, &c.new);
    for key in &r.needs_restart {
        tracing::warn!(
            key,
            "config reload: `{key}` changed; it takes effect when streamvisor restarts"
        );
    }
    tracing::info!(
        kept = r.kept.len(),
        restarted = ?r.restarted,
        added = ?r.added,
        removed = ?r.removed,
        "config reloaded"
    );
    apply(st, c).await;
    Ok(r)
}

/// The settings that are read once, at start-up (listeners, auth, the
/// ffmpeg path every stream shares, logging).
fn start_only_changes(
    old: &crate::config::Config,
    new: &crate::config::Config,
) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut check = |changed: bool, key: &'static str| {
        if changed {
            out.push(key);
        }
    };
    check(old.api_listen != new.api_listen, "api.listen");
    check(
        old.api_unix_listen != new.api_unix_listen,
        "api.unix_listen",
    );
    check(old.api_auth != new.api_auth, "api.username/password");
    check(old.allow_exec != new.allow_exec, "api.allow_exec");
    check(old.rtsp_listen != new.rtsp_listen, "rtsp.listen");
    check(old.rtsp_auth != new.rtsp_auth, "rtsp.username/password");
    check(old.rtmp_listen != new.rtmp_listen, "rtmp.listen");
    check(old.webrtc != new.webrtc, "webrtc");
    check(old.publish != new.publish, "publish");
    check(old.hls != new.hls, "hls");
    check(old.ffmpeg_bin != new.ffmpeg_bin, "ffmpeg.bin");
    check(old.log != new.log, "log");
    out
}

/// `POST /api/restart` (go2rtc restarts its process; we reload the config
/// file, which is what an operator who edited it wants, without dropping
/// the streams that did not change).
pub(super) async fn restart(State(st): State<Shared>) -> Result<Json<Reloaded>, ApiError> {
    Ok(Json(reload(&st).await?))
}
