//! What a request URL names: the stream, the track (`trackID=N`), and
//! the track filter of its query (go2rtc's `?video&audio`).

use crate::media::{Codec, TrackKind};

/// The stream name, the control suffix (`trackID=N`) and the query
/// filter of a request URL: `rtsp://host/NAME[/trackID=N][?video&audio]`.
pub(super) struct Target {
    pub(super) stream: String,
    pub(super) track: Option<usize>,
    pub(super) video: Option<String>,
    pub(super) audio: Option<String>,
    /// `?publish_token=`: an `exec:… {output}` child of ours publishing.
    pub(super) token: Option<u64>,
    /// `?token=`: one of our own `ffmpeg:STREAM` readers, with its run's
    /// token (see `hub::InternalTokens`).
    pub(super) read_token: Option<String>,
    /// `?exclude=N`: a stream reading itself back skips its source N (the
    /// reader's own output), as HTTP-FLV's `exclude` does.
    pub(super) exclude: Option<u16>,
}

pub(super) fn target(url: &rtsp_types::Url) -> Option<Target> {
    let mut segs = url.path_segments()?.filter(|s| !s.is_empty());
    let stream = percent_encoding::percent_decode_str(segs.next()?)
        .decode_utf8_lossy()
        .into_owned();
    let track = segs
        .find_map(|s| s.strip_prefix("trackID="))
        .and_then(|n| n.parse().ok());
    let (mut video, mut audio, mut token) = (None, None, None);
    let (mut read_token, mut exclude) = (None, None);
    for (k, v) in url.query_pairs() {
        match k.as_ref() {
            "publish_token" => token = u64::from_str_radix(&v, 16).ok(),
            "token" => read_token = Some(v.into_owned()),
            "exclude" => exclude = v.parse().ok(),
            // go2rtc: `?video`, `?audio`, `?video=h264` pick tracks.
            "video" => video = Some(v.to_ascii_lowercase()),
            "audio" => audio = Some(v.to_ascii_lowercase()),
            _ => {}
        }
    }
    Some(Target {
        stream,
        track,
        video,
        audio,
        token,
        read_token,
        exclude,
    })
}

/// go2rtc's `rtsp.default_query` (`video&audio`, `video=h264&audio=pcma`):
/// the track filter of a viewer whose URL has no `video` or `audio` of its
/// own (checked at load, see `config::default_query`).
pub(super) fn with_default_query(t: &Target, query: &str) -> Target {
    let (mut video, mut audio) = (None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "video" => video = Some(v.to_ascii_lowercase()),
            "audio" => audio = Some(v.to_ascii_lowercase()),
            _ => {}
        }
    }
    Target {
        stream: t.stream.clone(),
        track: t.track,
        video,
        audio,
        token: t.token,
        read_token: t.read_token.clone(),
        exclude: t.exclude,
    }
}

fn codec_name(c: Codec) -> &'static str {
    match c {
        Codec::H264 => "h264",
        Codec::Aac => "aac",
        Codec::Pcma => "pcma",
        Codec::Pcmu => "pcmu",
        Codec::Opus => "opus",
        Codec::Jpeg => "jpeg",
        Codec::H265 => "h265",
        Codec::Flac => "flac",
    }
}

/// The audio codecs a viewer asking `?audio=…` takes: the one it names
/// (go2rtc: an RTSP client can have the camera's PCMA as it is), or any.
pub(super) fn audio_wanted(t: &Target) -> &'static [Codec] {
    match t.audio.as_deref() {
        // `?video` alone: no audio, and no audio producer started for it.
        None if t.video.is_some() => &[],
        Some("aac") => &[Codec::Aac],
        Some("pcma") => &[Codec::Pcma],
        Some("pcmu") => &[Codec::Pcmu],
        // Opus only when asked for: by default an RTSP viewer gets the AAC
        // or G.711 every player takes, and no Opus transcoder is started.
        Some("opus") => &[Codec::Opus],
        // Our own transcoders (`ffmpeg:cam#audio=aac`) take whatever the
        // camera sends, Opus included.
        Some("all") => &[Codec::Aac, Codec::Pcma, Codec::Pcmu, Codec::Opus],
        _ => crate::hub::fanout::ANY_AUDIO,
    }
}

/// The video codecs a viewer takes: RTP carries H.264 (RFC 6184), H.265
/// (RFC 7798) and MJPEG (RFC 2435) alike; `?video=h264`, `?video=h265`
/// or `?video=mjpeg` asks for one.
pub(super) fn video_wanted(t: &Target) -> &'static [Codec] {
    match t.video.as_deref() {
        Some("h264") => &[Codec::H264],
        Some("h265") => &[Codec::H265],
        Some("mjpeg" | "jpeg") => &[Codec::Jpeg],
        // RFC 2435 carries an MJPEG camera's JPEGs too, as go2rtc passes
        // them: last, so a stream that also has H.264 gives H.264.
        _ => &[Codec::H264, Codec::H265, Codec::Jpeg],
    }
}

/// Whether `?video=…`/`?audio=…` lets a track of `codec` through. With
/// neither given, every track goes.
pub(super) fn wanted(t: &Target, codec: Codec) -> bool {
    if t.video.is_none() && t.audio.is_none() {
        return true;
    }
    let filter = match codec.kind() {
        TrackKind::Video => &t.video,
        TrackKind::Audio => &t.audio,
    };
    match filter {
        None => false,
        Some(v) => {
            v.is_empty()
                || v == "all"
                || v == codec_name(codec)
                || (codec == Codec::Jpeg && v == "mjpeg")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(url: &str) -> Target {
        target(&rtsp_types::Url::parse(url).unwrap()).unwrap()
    }

    #[test]
    fn urls() {
        let x = t("rtsp://h:8554/cam%202/trackID=1?video=h264");
        assert_eq!((x.stream.as_str(), x.track), ("cam 2", Some(1)));
        assert!(wanted(&x, Codec::H264));
        assert!(!wanted(&x, Codec::Aac));
        let x = t("rtsp://h/cam?audio");
        assert!(wanted(&x, Codec::Pcma) && !wanted(&x, Codec::H264));
        let x = t("rtsp://h/cam/");
        assert!(x.track.is_none() && wanted(&x, Codec::H264) && wanted(&x, Codec::Aac));
        assert_eq!(video_wanted(&x), &[Codec::H264, Codec::H265, Codec::Jpeg]);
        let x = t("rtsp://h:8554/cam?video=h265");
        assert!(wanted(&x, Codec::H265) && !wanted(&x, Codec::H264));
        assert_eq!(video_wanted(&x), &[Codec::H265]);
        let x = t("rtsp://h:8554/cam?video=mjpeg");
        assert!(wanted(&x, Codec::Jpeg) && !wanted(&x, Codec::H264));
        assert_eq!(video_wanted(&x), &[Codec::Jpeg]);
    }

    #[test]
    fn default_query_fills_a_bare_url() {
        let x = with_default_query(&t("rtsp://h/cam/trackID=1"), "video=h264&audio=pcma");
        assert_eq!((x.stream.as_str(), x.track), ("cam", Some(1)));
        assert!(wanted(&x, Codec::H264) && wanted(&x, Codec::Pcma));
        assert!(!wanted(&x, Codec::Aac));
        assert_eq!(audio_wanted(&x), &[Codec::Pcma]);
        // `video` alone: no audio, as go2rtc's `?video`.
        let x = with_default_query(&t("rtsp://h/cam"), "video");
        assert!(wanted(&x, Codec::H264) && !wanted(&x, Codec::Aac));
        assert!(audio_wanted(&x).is_empty());
    }
}
