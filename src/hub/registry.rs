//! The registry of streams: config order, the ones publishers create, the
//! hidden transcodes; joining the one that fits a viewer, and matching the
//! running streams to a changed config.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::fanout::{self, Delivery};
use super::{InternalTokens, JoinRequest, Stream, StreamError, StreamInfo, Viewer};
use crate::config::StreamConfig;
use crate::supervisor::Spawner;

/// What every stream needs from the rest of the program.
pub struct Deps {
    pub spawner: Arc<dyn Spawner>,
    pub ffmpeg_bin: String,
    /// Our own HTTP base URL, for `ffmpeg:STREAM` sources.
    pub internal_base: Option<String>,
    /// Our own RTSP base URL (`rtsp://127.0.0.1:8554`), for `exec:` sources
    /// with `{output}`.
    pub rtsp_base: Option<String>,
    /// `publish:`: takeover, the publisher timeout, auto-creation.
    pub publish: crate::config::PublishConfig,
    /// The live tokens of `ffmpeg:STREAM` readers (see [`InternalTokens`]).
    pub internal_tokens: InternalTokens,
    /// The `ffmpeg:` templates the hidden H.264 transcodes are made with
    /// (as the config was at start-up).
    pub ffmpeg_templates: crate::config::FfmpegTemplates,
}

/// All streams, in config order, then those created at run time (by a
/// publisher, with `publish.auto_create`). The lock is only ever held to
/// look up or insert a handle, never across an `.await`.
pub struct Registry {
    inner: std::sync::RwLock<Streams>,
    deps: Arc<Deps>,
}

#[derive(Default)]
struct Streams {
    list: Vec<Stream>,
    index: HashMap<String, usize>,
    /// Hidden, on-demand transcodes of a stream for viewers who cannot
    /// take its video (see [`Registry::transcoded`]), by base stream.
    derived: HashMap<String, Vec<Stream>>,
}

/// The longest stream name we take (go2rtc's API has the same bound).
pub const MAX_NAME: usize = 128;

/// Whether `name` may name a stream made at run time (by the API or a
/// publisher): 1 to 128 of `[A-Za-z0-9_.-]`, and `%XX` hex escapes (Home
/// Assistant escapes everything else in its camera ids that way). Config
/// streams may be named anything YAML allows.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(format!(
            "a stream name is 1 to {MAX_NAME} characters, not {}",
            name.len()
        ));
    }
    let b = name.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            if b.len() < i + 3 || !b[i + 1].is_ascii_hexdigit() || !b[i + 2].is_ascii_hexdigit() {
                return Err(format!(
                    "`%` in a stream name starts a hex escape (%XX), at byte {i}"
                ));
            }
            i += 3;
            continue;
        }
        if !(c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-')) {
            let ch = name[i..].chars().next().unwrap_or('?');
            return Err(format!(
                "a stream name is made of A-Z a-z 0-9 _ . - and %XX escapes (found {ch:?})"
            ));
        }
        i += 1;
    }
    Ok(())
}

impl Registry {
    pub fn new(streams: Vec<Stream>, deps: Arc<Deps>) -> Registry {
        let mut s = Streams::default();
        for st in streams {
            s.index.insert(st.name().to_string(), s.list.len());
            s.list.push(st);
        }
        Registry {
            inner: std::sync::RwLock::new(s),
            deps,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Streams> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, name: &str) -> Option<Stream> {
        let s = self.read();
        s.index.get(name).map(|&i| s.list[i].clone())
    }

    pub fn all(&self) -> Vec<Stream> {
        self.read().list.clone()
    }

    /// Joins `stream` for a viewer whose output takes the video codecs
    /// `req.video`: the stream itself when its video is one of them (or it
    /// has none), else its shared H.264 transcode ([`Registry::transcoded`]):
    /// an H.265 camera for a browser without an HEVC decoder or an FLV
    /// client, an MJPEG camera for HLS. The stream's codec is learnt from
    /// its first deliveries, cold or warm. Outputs that take no H.264, or
    /// no video, join as they ask.
    pub async fn join_fitting(
        &self,
        stream: &Stream,
        req: JoinRequest,
    ) -> Result<Viewer, StreamError> {
        use crate::media::Codec;
        // Outputs that take MJPEG take every video we carry (RTSP, our own
        // transcoders' reads); those without H.264 cannot use a transcode.
        if !req.video.contains(&Codec::H264) || req.video.contains(&Codec::Jpeg) || req.internal {
            return stream.join(req).await;
        }
        // Joined with what it takes and H.265, never MJPEG: a viewer's
        // codecs decide which producers start, and an FLV viewer must not
        // start a stream's `#video=mjpeg` transcoder.
        let mut viewer = stream
            .join(JoinRequest {
                video: fanout::H264_OR_H265,
                ..req.clone()
            })
            .await?;
        // A running stream's first deliveries are its tracks; video may
        // come a moment after audio (two FLV sequence headers). A video
        // the selector could not pick (an MJPEG camera) shows in what the
        // producers deliver. Bounded, so a stream that says nothing cannot
        // hold the viewer.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        let mut seen = std::collections::VecDeque::new();
        let unpicked = |info: Option<StreamInfo>| -> Option<Codec> {
            info?
                .producers
                .iter()
                .flat_map(|p| p.codecs.iter().copied())
                .find(|c| c.kind() == crate::media::TrackKind::Video && !req.video.contains(c))
        };
        let unfit = loop {
            match tokio::time::timeout_at(deadline, viewer.next()).await {
                Ok(Ok(d)) => {
                    let video = match &d {
                        Delivery::Tracks { video, .. } => video.as_ref().map(|v| v.codec),
                        Delivery::Frame(f) if f.kind() == crate::media::TrackKind::Video => {
                            Some(f.codec)
                        }
                        Delivery::Frame(_) => None,
                    };
                    let tracks_without_video = matches!(&d, Delivery::Tracks { video: None, .. });
                    seen.push_back(d);
                    if let Some(c) = video {
                        break (!req.video.contains(&c)).then_some(c);
                    }
                    if tracks_without_video {
                        if let Some(c) = unpicked(stream.info().await) {
                            break Some(c);
                        }
                    }
                    if seen.len() > 256 {
                        break None; // audio only, it seems
                    }
                }
                Ok(Err(_)) => {
                    return Err(StreamError::NotRunning {
                        stream: stream.name().to_string(),
                    })
                }
                Err(_) => break unpicked(stream.info().await),
            }
        };
        let Some(codec) = unfit else {
            viewer.pending = seen;
            return Ok(viewer);
        };
        tracing::info!(stream = %stream.name(), protocol = req.protocol, codec = ?codec, "viewer cannot take the stream's video: joining the H.264 transcode");
        // The transcode's reader keeps `stream` up from here, so dropping
        // this viewer afterwards does not stop it in between.
        self.transcoded(stream.name(), Codec::H264)?.join(req).await
    }

    /// Every stream, the hidden transcodes too: for shutting down.
    pub fn everything(&self) -> Vec<Stream> {
        let s = self.read();
        let mut v = s.list.clone();
        v.extend(s.derived.values().flatten().cloned());
        v
    }

    /// `name` as a viewer that cannot take its video sees it: a hidden
    /// stream, made on first use and shared by every such viewer, whose one
    /// source is `ffmpeg:NAME#video=h264#audio=copy`. It is an ordinary
    /// stream in every other way: its first viewer starts it, its
    /// transcoder is a viewer of NAME (so NAME runs while it does), and
    /// when its last viewer leaves, both stop (issue 16: a browser without
    /// an H.265 decoder plays an H.265 camera). Its audio is NAME's, as
    /// is, for the output to fit (G.711 becomes FLAC in MP4).
    pub fn transcoded(&self, name: &str, to: crate::media::Codec) -> Result<Stream, StreamError> {
        if self.get(name).is_none() {
            return Err(StreamError::NotFound {
                stream: name.to_string(),
            });
        }
        let label = match to {
            crate::media::Codec::H264 => "h264",
            other => {
                return Err(StreamError::Unsupported {
                    stream: name.to_string(),
                    reason: format!("no transcode to {other:?} is offered"),
                })
            }
        };
        let derived_name = format!("{name}#video={label}");
        let mut s = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = s
            .derived
            .get(name)
            .and_then(|v| v.iter().find(|d| d.name() == derived_name))
        {
            return Ok(d.clone());
        }
        let source = crate::config::transcode_source(name, label, &self.deps.ffmpeg_templates)
            .map_err(|reason| StreamError::Unsupported {
                stream: name.to_string(),
                reason,
            })?;
        let stream = Stream::spawn(
            StreamConfig {
                name: derived_name.clone(),
                sources: vec![source],
            },
            self.deps.clone(),
        );
        tracing::info!(stream = %name, transcode = %derived_name, "on-demand transcode created");
        s.derived
            .entry(name.to_string())
            .or_default()
            .push(stream.clone());
        Ok(stream)
    }

    /// Makes the running streams match `new` (the config after an API
    /// change), given `old` (before it): a stream whose config is the same
    /// keeps its actor, viewers and producers; a changed one gets a fresh
    /// actor; a removed one goes. Streams created by publishers and not in
    /// either stay. Returns the actors replaced or removed: the caller
    /// shuts them down (stopping their producers, ending their viewers).
    pub fn reconcile(&self, old: &[StreamConfig], new: &[StreamConfig]) -> Vec<Stream> {
        let mut s = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let mut gone = Vec::new();
        let mut list = Vec::with_capacity(new.len());
        let mut taken = std::collections::HashSet::new();
        for cfg in new {
            let before = old.iter().find(|o| o.name == cfg.name);
            let running = s.index.get(&cfg.name).map(|&i| s.list[i].clone());
            taken.insert(cfg.name.clone());
            match running {
                Some(r) if before == Some(cfg) => list.push(r),
                r => {
                    if let Some(r) = r {
                        tracing::info!(stream = %cfg.name, "stream replaced");
                        gone.push(r);
                    } else {
                        tracing::info!(stream = %cfg.name, "stream added");
                    }
                    list.push(Stream::spawn(cfg.clone(), self.deps.clone()));
                }
            }
        }
        for st in std::mem::take(&mut s.list) {
            if taken.contains(st.name()) {
                continue;
            }
            if old.iter().any(|o| o.name == st.name()) {
                tracing::info!(stream = %st.name(), "stream removed");
                gone.push(st);
            } else {
                list.push(st); // created by a publisher
            }
        }
        // A transcode of a stream that was replaced or removed goes with
        // it (it would read the new one, but with the old one's settings).
        let transcodes: Vec<Stream> = gone
            .iter()
            .filter_map(|g| s.derived.remove(g.name()))
            .flatten()
            .collect();
        gone.extend(transcodes);
        s.index = list
            .iter()
            .enumerate()
            .map(|(i, st)| (st.name().to_string(), i))
            .collect();
        s.list = list;
        gone
    }

    /// What streams are built with (the spawner and ffmpeg, for
    /// snapshots).
    pub fn deps(&self) -> &Arc<Deps> {
        &self.deps
    }

    pub fn publish_config(&self) -> &crate::config::PublishConfig {
        &self.deps.publish
    }

    /// The stream a publisher asked for: one that exists, or (with
    /// `publish.auto_create`) a new, publish-only one. Auto-created streams
    /// stay, as in go2rtc, so viewers can wait for the next publisher.
    pub fn for_publish(&self, name: &str) -> Result<Stream, StreamError> {
        if let Some(s) = self.get(name) {
            return Ok(s);
        }
        if !self.deps.publish.auto_create {
            return Err(StreamError::NotFound {
                stream: name.to_string(),
            });
        }
        check_name(name).map_err(|reason| StreamError::BadName {
            stream: name.to_string(),
            reason,
        })?;
        let mut s = self.inner.write().unwrap_or_else(|e| e.into_inner());
        // Another publisher may have created it since we looked.
        if let Some(&i) = s.index.get(name) {
            return Ok(s.list[i].clone());
        }
        let stream = Stream::spawn(
            StreamConfig {
                name: name.to_string(),
                sources: Vec::new(),
            },
            self.deps.clone(),
        );
        tracing::info!(
            stream = name,
            "stream created by a publisher (publish.auto_create)"
        );
        let at = s.list.len();
        s.index.insert(name.to_string(), at);
        s.list.push(stream.clone());
        Ok(stream)
    }
}
