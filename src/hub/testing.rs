//! What other modules' unit tests need from the hub: a publish-only
//! stream with a publisher and a viewer, and frames to publish, without a
//! child process or a socket. (The hub's own tests, with fake children,
//! are in `tests.rs`.)

use std::sync::Arc;

use bytes::Bytes;

use super::{fanout, Deps, JoinRequest, Publisher, Stream, Viewer};
use crate::config::{PublishConfig, StreamConfig};
use crate::media::{flv::Event, ms_to_ticks, Codec, Frame, TrackInfo};
use crate::supervisor::{OsSpawner, Spawner};

/// A stream's dependencies for a test: `spawner`'s children, `publish`'s
/// rules, and no listener of ours to read back from.
pub fn deps(spawner: Arc<dyn Spawner>, publish: PublishConfig) -> Arc<Deps> {
    Arc::new(Deps {
        spawner,
        ffmpeg_bin: "ffmpeg".into(),
        internal_base: None,
        rtsp_base: None,
        publish,
        internal_tokens: Default::default(),
        ffmpeg_templates: Default::default(),
    })
}

/// A publish-only stream `name` (it never spawns a child), its publisher,
/// and a viewer who has joined and been given the tracks and the first
/// keyframe (at 0 ms), as any output's viewer is before it plays.
pub async fn published(name: &str) -> (Stream, Publisher, Viewer) {
    let s = Stream::spawn(
        StreamConfig {
            name: name.into(),
            sources: vec![],
        },
        deps(Arc::new(OsSpawner::default()), PublishConfig::default()),
    );
    let p = s.publish("test", None).await.expect("a publisher");
    let join = tokio::spawn({
        let s = s.clone();
        async move {
            s.join(JoinRequest {
                protocol: "test",
                remote_addr: None,
                internal: false,
                exclude: None,
                audio: fanout::ANY_AUDIO,
                video: fanout::H264_VIDEO,
            })
            .await
        }
    });
    assert!(p.publish(Event::Track(TrackInfo {
        codec: Codec::H264,
        config: Bytes::from_static(&[1, 66, 0, 30, 0xff, 0xe1, 0]),
    })));
    assert!(p.publish(Event::Frame(video(0, true))));
    let v = join
        .await
        .unwrap()
        .expect("a viewer of the published stream");
    (s, p, v)
}

/// `f` as a publisher publishes it.
pub fn event(f: Frame) -> Event {
    Event::Frame(f)
}

/// An H.264 frame at `ms` whose payload is 100 bytes of `ms as u8`.
pub fn video(ms: i64, keyframe: bool) -> Frame {
    let mut f = video_of(ms, 100);
    f.keyframe = keyframe;
    f
}

/// A non-key H.264 frame at `ms` whose payload is `len` bytes of `ms as u8`.
pub fn video_of(ms: i64, len: usize) -> Frame {
    let t = ms_to_ticks(ms);
    Frame::new(Codec::H264, t, t, false, Bytes::from(vec![ms as u8; len]))
}
