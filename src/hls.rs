//! HLS (RFC 8216) from memory: one segmenter per stream, shared by every
//! HLS viewer, cutting real segments on keyframes.
//!
//! Nothing touches a disk and nothing watches a folder (PeerTube #6965: an
//! EIO from network storage killed a healthy stream). A segmenter is one
//! consumer of its stream; it stays while playlist or segment requests keep
//! coming, and leaves `hls.keepalive` after the last, which lets the
//! producers stop. URLs carry the stream and the segment number only, so no
//! request needs per-viewer state:
//!
//! ```text
//! /api/stream.m3u8?src=NAME[&mp4]    media playlist (relative segment URIs)
//! /api/hls/ts/NAME/SEQ.ts            one MPEG-TS segment
//! /api/hls/mp4/NAME/init-V.mp4       fMP4 init segment, version V
//! /api/hls/mp4/NAME/SEQ.m4s          one fMP4 media segment
//! ```
//!
//! The entry point answers with the media playlist itself, not a master
//! playlist: there is one rendition per variant, and one request fewer
//! before the first picture.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::HlsConfig;
use crate::hub::fanout::{Delivery, ViewerStats};
use crate::hub::{JoinRequest, Registry, StreamError};
use crate::media::{flac, fmp4, ts, Codec, Frame, TrackInfo, TrackKind, TIMESCALE};

/// The segment format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    /// MPEG-TS (the default; every HLS player).
    Ts,
    /// fMP4/CMAF (`&mp4`): hls.js, Safari.
    Mp4,
}

impl Variant {
    pub fn dir(self) -> &'static str {
        match self {
            Variant::Ts => "ts",
            Variant::Mp4 => "mp4",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Variant::Ts => "ts",
            Variant::Mp4 => "m4s",
        }
    }
}

/// Segments kept (and served) after they leave the playlist.
const GRACE: usize = 2;

/// Init segments kept per fMP4 segmenter (the current one and those of
/// segments still in the window after a track change).
const INITS_KEPT: usize = 4;

/// How long the first playlist request of a cold stream waits for the
/// first segment (the stream's start plus one target duration, bounded).
const FIRST_SEGMENT_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HlsError {
    #[error("stream not found: {0}")]
    UnknownStream(String),
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error("stream {0}: no segment within {1} s")]
    NoSegment(String, u64),
    /// The segmenter could not follow the stream; the reason says why.
    #[error("stream {0}: {1}")]
    Ended(String, String),
}

#[derive(Debug, Clone)]
struct Segment {
    seq: u64,
    /// Seconds.
    duration: f64,
    data: Bytes,
    wallclock: SystemTime,
    discontinuity: bool,
    /// fMP4: the init segment version it needs.
    init: u32,
}

#[derive(Default)]
struct Window {
    segments: VecDeque<Segment>,
    /// Discontinuities that have left the window (RFC 8216 §4.3.3.3).
    discontinuity_seq: u64,
    /// Why the segmenter ended, if it did.
    ended: Option<String>,
    /// fMP4 init segments by version.
    inits: VecDeque<(u32, Bytes)>,
}

/// What a segmenter shares with the HTTP handlers.
struct Shared {
    window: Mutex<Window>,
    /// Number of segments made so far: playlist requests wait on it.
    made: watch::Sender<u64>,
    /// Milliseconds since `origin` of the last request.
    touched: AtomicU64,
    origin: Instant,
    /// The segmenter's consumer counters, so the API shows what HLS served.
    stats: Mutex<Option<Arc<ViewerStats>>>,
}

impl Shared {
    fn touch(&self) {
        self.touched
            .store(self.origin.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn window(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct Hls {
    cfg: HlsConfig,
    registry: Arc<Registry>,
    segmenters: Mutex<HashMap<(String, Variant), Arc<Shared>>>,
}

impl Hls {
    pub fn new(cfg: HlsConfig, registry: Arc<Registry>) -> Arc<Hls> {
        Arc::new(Hls {
            cfg,
            registry,
            segmenters: Mutex::new(HashMap::new()),
        })
    }

    /// The stream's segmenter, started if there is none (or it ended).
    fn segmenter(self: &Arc<Self>, name: &str, variant: Variant) -> Result<Arc<Shared>, HlsError> {
        let stream = self
            .registry
            .get(name)
            .ok_or_else(|| HlsError::UnknownStream(name.to_string()))?
            .clone();
        let key = (name.to_string(), variant);
        let mut map = self.segmenters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = map.get(&key) {
            if s.window().ended.is_none() {
                s.touch();
                return Ok(s.clone());
            }
        }
        let shared = Arc::new(Shared {
            window: Mutex::new(Window::default()),
            made: watch::channel(0).0,
            touched: AtomicU64::new(0),
            origin: Instant::now(),
            stats: Mutex::new(None),
        });
        shared.touch();
        map.insert(key.clone(), shared.clone());
        drop(map);
        let me = self.clone();
        let s = shared.clone();
        tokio::spawn(async move {
            let why = run(&me.cfg, &me.registry, stream, variant, &s).await;
            tracing::info!(stream = %key.0, variant = variant.dir(), reason = %why, "hls segmenter left");
            s.window().ended = Some(why);
            s.made.send_modify(|_| {}); // wake waiting playlist requests
            let mut map = me.segmenters.lock().unwrap_or_else(|e| e.into_inner());
            if map.get(&key).is_some_and(|x| Arc::ptr_eq(x, &s)) {
                map.remove(&key);
            }
        });
        Ok(shared)
    }

    /// The media playlist; the first request of a cold stream waits (bounded)
    /// for the first segment.
    pub async fn playlist(
        self: &Arc<Self>,
        name: &str,
        variant: Variant,
    ) -> Result<String, HlsError> {
        let s = self.segmenter(name, variant)?;
        // Subscribed before the first look, so no change is missed.
        let mut made = s.made.subscribe();
        let first = async {
            loop {
                {
                    let w = s.window();
                    if !w.segments.is_empty() || w.ended.is_some() {
                        return;
                    }
                }
                if made.changed().await.is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(FIRST_SEGMENT_WAIT, first).await;
        let w = s.window();
        if w.segments.is_empty() {
            return Err(match &w.ended {
                Some(why) => {
                    // Stream errors name the stream already.
                    let why = why.strip_prefix(&format!("stream {name}: ")).unwrap_or(why);
                    HlsError::Ended(name.to_string(), why.to_string())
                }
                None => HlsError::NoSegment(name.to_string(), FIRST_SEGMENT_WAIT.as_secs()),
            });
        }
        Ok(render(name, variant, &w, self.cfg.window))
    }

    fn shared(&self, name: &str, variant: Variant) -> Option<Arc<Shared>> {
        let map = self.segmenters.lock().unwrap_or_else(|e| e.into_inner());
        let s = map.get(&(name.to_string(), variant))?.clone();
        s.touch();
        Some(s)
    }

    fn served(s: &Shared, data: Option<Bytes>) -> Option<Bytes> {
        if let (Some(d), Some(st)) = (&data, &*s.stats.lock().unwrap_or_else(|e| e.into_inner())) {
            st.bytes.fetch_add(d.len() as u64, Ordering::Relaxed);
        }
        data
    }

    /// A segment still in the window.
    pub fn segment(&self, name: &str, variant: Variant, seq: u64) -> Option<Bytes> {
        let s = self.shared(name, variant)?;
        let data = s
            .window()
            .segments
            .iter()
            .find(|x| x.seq == seq)
            .map(|x| x.data.clone());
        Self::served(&s, data)
    }

    /// An fMP4 init segment still kept.
    pub fn init(&self, name: &str, version: u32) -> Option<Bytes> {
        let s = self.shared(name, Variant::Mp4)?;
        let data = s
            .window()
            .inits
            .iter()
            .find(|(v, _)| *v == version)
            .map(|(_, b)| b.clone());
        Self::served(&s, data)
    }
}

/// The playlist: the newest `listed` segments of the window.
fn render(name: &str, variant: Variant, w: &Window, listed: usize) -> String {
    let hidden = w.segments.len().saturating_sub(listed);
    let listed: Vec<&Segment> = w.segments.iter().skip(hidden).collect();
    let discontinuity_seq = w.discontinuity_seq
        + w.segments
            .iter()
            .take(hidden)
            .filter(|s| s.discontinuity)
            .count() as u64;
    let path = percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
    // fMP4 needs EXT-X-MAP, which needs version 6; 7 is what hls.js and
    // Apple's validator expect for fMP4.
    let version = if variant == Variant::Mp4 { 7 } else { 3 };
    // §4.3.3.1: the ceiling of the longest segment, as an integer.
    let target = listed
        .iter()
        .map(|s| s.duration.ceil() as u64)
        .max()
        .unwrap_or(1)
        .max(1);
    let first = listed.first().map_or(0, |s| s.seq);
    let mut p = format!(
        "#EXTM3U\n#EXT-X-VERSION:{version}\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:{first}\n#EXT-X-DISCONTINUITY-SEQUENCE:{}\n",
        discontinuity_seq
    );
    let mut init = None;
    for s in listed {
        if s.discontinuity {
            p += "#EXT-X-DISCONTINUITY\n";
        }
        if variant == Variant::Mp4 && init != Some(s.init) {
            p += &format!("#EXT-X-MAP:URI=\"hls/mp4/{path}/init-{}.mp4\"\n", s.init);
            init = Some(s.init);
        }
        p += &format!(
            "#EXT-X-PROGRAM-DATE-TIME:{}\n#EXTINF:{:.3},\nhls/{}/{path}/{}.{}\n",
            humantime::format_rfc3339_millis(s.wallclock),
            s.duration,
            variant.dir(),
            s.seq,
            variant.extension()
        );
    }
    p
}

/// The segment format's muxing state.
enum Format {
    Ts(ts::Muxer),
    Mp4 {
        tracks: fmp4::Tracks,
        init: u32,
        /// G.711 to FLAC (what fMP4 players take); the rest passes.
        flac: flac::Converter,
    },
}

/// A segment being written.
struct Building {
    /// MPEG-TS: muxed as frames come.
    data: BytesMut,
    /// fMP4: the frames, muxed when the segment ends (`trun` needs them all).
    frames: Vec<Frame>,
    first_dts: i64,
    last_dts: i64,
    wallclock: SystemTime,
    discontinuity: bool,
}

/// The segmenter: one viewer of the stream, cutting segments until its
/// viewers stop asking (or the stream ends). Returns why it left.
/// An MJPEG camera (no HLS form) gets the stream's H.264 transcode.
async fn join(
    registry: &Registry,
    stream: &crate::hub::Stream,
    variant: Variant,
    s: &Shared,
) -> Result<crate::hub::Viewer, StreamError> {
    let viewer = registry
        .join_fitting(
            stream,
            JoinRequest {
                protocol: "hls",
                remote_addr: None,
                internal: false,
                exclude: None,
                // HLS players take AAC only, in MPEG-TS: G.711 has no stream
                // type there (ISO 13818-1, stream_type). fMP4 takes G.711 too,
                // as FLAC, the way `stream.mp4` does.
                audio: match variant {
                    Variant::Ts => &[Codec::Aac],
                    Variant::Mp4 => fmp4::MSE_AUDIO,
                },
                // H.265 in TS (stream type 0x24) and fMP4 (`hvc1`): Safari and
                // ffmpeg play both (RFC 8216bis §3.2, §3.3).
                video: crate::media::h265::H264_OR_H265,
            },
        )
        .await?;
    *s.stats.lock().unwrap_or_else(|e| e.into_inner()) = Some(viewer.stats().clone());
    Ok(viewer)
}

fn idle(s: &Shared) -> Duration {
    s.origin
        .elapsed()
        .saturating_sub(Duration::from_millis(s.touched.load(Ordering::Relaxed)))
}

async fn run(
    cfg: &HlsConfig,
    registry: &Registry,
    stream: crate::hub::Stream,
    variant: Variant,
    s: &Shared,
) -> String {
    let mut viewer = match join(registry, &stream, variant, s).await {
        Ok(v) => v,
        Err(e) => return e.to_string(),
    };
    let target = (cfg.target_duration.as_secs_f64() * TIMESCALE as f64) as i64;
    let mut format = match variant {
        Variant::Ts => Format::Ts(ts::Muxer::new()),
        Variant::Mp4 => Format::Mp4 {
            tracks: fmp4::Tracks::new(None, None),
            init: 0,
            flac: flac::Converter::default(),
        },
    };
    let mut building: Option<Building> = None;
    let mut next_seq = 0u64;
    let mut tracks: [Option<TrackInfo>; 2] = [None, None];
    let mut gap = false;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let d = tokio::select! {
            d = viewer.next() => d,
            _ = tick.tick() => {
                if idle(s) > cfg.keepalive {
                    return format!("no request for {} s", idle(s).as_secs());
                }
                continue;
            }
        };
        match d {
            Err(e) => {
                // The stream's run ended (its publisher left, say). Keep the
                // window and the sequence, and follow the next run after a
                // discontinuity, for as long as someone keeps asking: a
                // re-publish must not send players back to segment 0.
                tracing::debug!(reason = %e, "hls segmenter waits for the stream's next run");
                if let Some(b) = building.take() {
                    let end = b.last_dts.max(b.first_dts + 1);
                    finish(s, cfg, &mut format, b, end, &mut next_seq);
                }
                gap = true;
                viewer = loop {
                    if idle(s) > cfg.keepalive {
                        return format!(
                            "stream ended ({e}) and no request for {} s",
                            idle(s).as_secs()
                        );
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if let Ok(v) = join(registry, &stream, variant, s).await {
                        break v;
                    }
                };
            }
            Ok(Delivery::Tracks { video, audio }) => {
                if video.is_none() && audio.is_none() {
                    // The producer went away (a restart): what comes next is
                    // a new timeline for the player.
                    gap = true;
                }
                // New parameters (an H.264 or H.265 SPS change, a new AAC
                // config) for a track we have: the segment so far ends with
                // the old ones, and the next starts after a discontinuity
                // (with a new EXT-X-MAP for fMP4), never mixing the two.
                let changed = |old: &Option<TrackInfo>, new: &Option<TrackInfo>| {
                    old.is_some() && new.is_some() && old != new
                };
                if changed(&tracks[0], &video) || changed(&tracks[1], &audio) {
                    if let Some(b) = building.take() {
                        let end = b.last_dts.max(b.first_dts + 1);
                        finish(s, cfg, &mut format, b, end, &mut next_seq);
                    }
                    gap = true;
                }
                match &mut format {
                    Format::Ts(m) => m.set_tracks(video.as_ref(), audio.as_ref()),
                    Format::Mp4 { tracks, init, flac } => {
                        let audio = flac.track(audio.clone());
                        let t = fmp4::Tracks::new(video.as_ref(), audio.as_ref());
                        if !t.is_empty() {
                            *init += 1;
                            let mut w = s.window();
                            w.inits.push_back((*init, t.init()));
                            while w.inits.len() > INITS_KEPT {
                                w.inits.pop_front();
                            }
                        }
                        *tracks = t;
                    }
                }
                tracks = [video, audio];
            }
            Ok(Delivery::Frame(f)) => {
                let video = tracks[0].is_some();
                let cut_here = if video {
                    f.kind() == TrackKind::Video && f.keyframe
                } else {
                    true
                };
                let due = building
                    .as_ref()
                    .is_none_or(|b| f.dts - b.first_dts >= target || gap);
                if cut_here && due {
                    if let Some(b) = building.take() {
                        // A segment ends where the next begins; before a
                        // gap, at its own last frame.
                        let end = if gap {
                            b.last_dts.max(b.first_dts + 1)
                        } else {
                            f.dts
                        };
                        finish(s, cfg, &mut format, b, end, &mut next_seq);
                    }
                    let mut data = BytesMut::new();
                    if let Format::Ts(m) = &mut format {
                        data.reserve(512 * 1024);
                        m.tables(&mut data);
                    }
                    building = Some(Building {
                        data,
                        frames: Vec::new(),
                        first_dts: f.dts,
                        last_dts: f.dts,
                        wallclock: SystemTime::now(),
                        discontinuity: std::mem::take(&mut gap) && next_seq > 0,
                    });
                }
                if let Some(b) = &mut building {
                    b.last_dts = b.last_dts.max(f.dts);
                    match &mut format {
                        Format::Ts(m) => m.frame(&f, &mut b.data),
                        Format::Mp4 { flac, .. } => flac.frame(f, |f| b.frames.push(f)),
                    }
                }
            }
        }
    }
}

fn finish(
    s: &Shared,
    cfg: &HlsConfig,
    format: &mut Format,
    b: Building,
    end: i64,
    next_seq: &mut u64,
) {
    let (data, init) = match format {
        Format::Ts(_) => (b.data.freeze(), 0),
        // mfhd sequence numbers start at 1.
        Format::Mp4 { tracks, init, .. } => {
            (tracks.fragment(*next_seq as u32 + 1, &b.frames, end), *init)
        }
    };
    let seg = Segment {
        seq: *next_seq,
        duration: (end - b.first_dts) as f64 / TIMESCALE as f64,
        data,
        wallclock: b.wallclock,
        discontinuity: b.discontinuity,
        init,
    };
    *next_seq += 1;
    let mut w = s.window();
    w.segments.push_back(seg);
    // RFC 8216 §6.2.2: a segment stays available for a while after it
    // leaves the playlist, for a client that read the playlist just before.
    while w.segments.len() > cfg.window + GRACE {
        if let Some(old) = w.segments.pop_front() {
            if old.discontinuity {
                w.discontinuity_seq += 1;
            }
        }
    }
    drop(w);
    s.made.send_modify(|n| *n += 1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn playlist_shape() {
        let mut w = Window::default();
        for (seq, d, disc) in [(7, 2.0, false), (8, 2.48, true), (9, 1.96, false)] {
            w.segments.push_back(Segment {
                seq,
                duration: d,
                data: Bytes::new(),
                wallclock: SystemTime::UNIX_EPOCH,
                discontinuity: disc,
                init: if seq < 8 { 1 } else { 2 },
            });
        }
        let p = render("cam 1", Variant::Ts, &w, 6);
        assert!(
            p.starts_with(
                "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:3\n#EXT-X-MEDIA-SEQUENCE:7\n"
            ),
            "{p}"
        );
        assert!(p.contains("#EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME:1970-01-01T00:00:00.000Z\n#EXTINF:2.480,\nhls/ts/cam%201/8.ts\n"), "{p}");
        let p = render("cam 1", Variant::Mp4, &w, 6);
        assert!(p.starts_with("#EXTM3U\n#EXT-X-VERSION:7\n"), "{p}");
        assert_eq!(
            p.matches("#EXT-X-MAP:").count(),
            2,
            "a map at the start and after the track change: {p}"
        );
        assert!(
            p.contains("#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"hls/mp4/cam%201/init-2.mp4\"\n"),
            "{p}"
        );
        assert!(p.contains("hls/mp4/cam%201/9.m4s\n"), "{p}");
        // Only the newest two listed: 7 (and its discontinuity count) hidden.
        let p = render("cam 1", Variant::Ts, &w, 2);
        assert!(
            p.contains("#EXT-X-MEDIA-SEQUENCE:8\n#EXT-X-DISCONTINUITY-SEQUENCE:0\n"),
            "{p}"
        );
        assert!(!p.contains("7.ts"), "{p}");
        let p = render("cam 1", Variant::Ts, &w, 1);
        assert!(
            p.contains("#EXT-X-MEDIA-SEQUENCE:9\n#EXT-X-DISCONTINUITY-SEQUENCE:1\n"),
            "{p}"
        );
    }
}
