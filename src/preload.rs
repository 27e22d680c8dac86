//! go2rtc's `preload:`: streams kept running with no viewer, so the first
//! real viewer gets a picture at once.
//!
//! A preload is a consumer like any other (protocol `preload` in
//! `/api/streams`), held by a task that reads and drops what it gets. When
//! its stream ends (a failed start, the stream replaced through the API),
//! the task joins again after a pause, so a preload outlives restarts.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::hub::fanout::{ANY_AUDIO, H264_VIDEO};
use crate::hub::{JoinRequest, Registry};

/// How long a preload waits before joining again after its stream ended.
const RETRY: Duration = Duration::from_secs(1);

pub struct Preloads {
    registry: Arc<Registry>,
    running: Mutex<BTreeMap<String, (String, CancellationToken)>>,
}

/// What a go2rtc preload query asks for: (video, audio). `""` is both;
/// `video`, `audio`, `video=h264`, `video&audio=opus` … name the kinds.
pub fn wants(query: &str) -> (bool, bool) {
    let mut video = false;
    let mut audio = false;
    for part in query.split('&').filter(|p| !p.is_empty()) {
        match part.split('=').next().unwrap_or("") {
            "video" => video = true,
            "audio" | "microphone" => audio = true,
            _ => {}
        }
    }
    if !video && !audio {
        (true, true)
    } else {
        (video, audio)
    }
}

impl Preloads {
    pub fn new(registry: Arc<Registry>) -> Arc<Preloads> {
        Arc::new(Preloads {
            registry,
            running: Mutex::new(BTreeMap::new()),
        })
    }

    /// The preloads now running, with their queries.
    pub fn list(&self) -> BTreeMap<String, String> {
        self.lock()
            .iter()
            .map(|(k, (q, _))| (k.clone(), q.clone()))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (String, CancellationToken)>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the running preloads match `want` (stream → query).
    pub fn sync(self: &Arc<Self>, want: &BTreeMap<String, String>) {
        let mut running = self.lock();
        running.retain(|name, (query, stop)| {
            let keep = want.get(name) == Some(query);
            if !keep {
                tracing::info!(stream = %name, "preload stopped");
                stop.cancel();
            }
            keep
        });
        for (name, query) in want {
            if running.contains_key(name) {
                continue;
            }
            let stop = CancellationToken::new();
            running.insert(name.clone(), (query.clone(), stop.clone()));
            tracing::info!(stream = %name, query = %query, "preload started");
            tokio::spawn(hold(
                self.registry.clone(),
                name.clone(),
                wants(query),
                stop,
            ));
        }
    }
}

/// Holds a viewer of `name` until stopped, joining again whenever the
/// stream ends.
async fn hold(
    registry: Arc<Registry>,
    name: String,
    (video, audio): (bool, bool),
    stop: CancellationToken,
) {
    let req = JoinRequest {
        protocol: "preload",
        remote_addr: None,
        internal: false,
        exclude: None,
        audio: if audio { ANY_AUDIO } else { &[] },
        video: if video { H264_VIDEO } else { &[] },
    };
    while !stop.is_cancelled() {
        let joined = match registry.get(&name) {
            Some(s) => tokio::select! {
                r = s.join(req.clone()) => Some(r),
                _ = stop.cancelled() => return,
            },
            None => None,
        };
        match joined {
            Some(Ok(mut viewer)) => loop {
                tokio::select! {
                    r = viewer.next() => if r.is_err() { break },
                    _ = stop.cancelled() => return,
                }
            },
            Some(Err(e)) => {
                tracing::debug!(stream = %name, error = %e, "preload could not join; retrying")
            }
            None => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY) => {}
            _ = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries() {
        assert_eq!(wants(""), (true, true));
        assert_eq!(wants("video"), (true, false));
        assert_eq!(wants("video=h264&audio=opus"), (true, true));
        assert_eq!(wants("microphone"), (false, true));
    }
}
